//! HTTP byte ranges (RFC 9110 §14).
//!
//! Rondo serves a single range per request. A `Range` header that does not
//! parse, names another unit, or asks for several ranges is ignored, and the
//! whole representation is served, as §14.2 allows.

/// What to serve for a request, given the representation's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The whole representation, status 200.
    Full,
    /// Bytes `start..=end`, status 206.
    Partial { start: u64, end: u64 },
    /// No byte of the range exists, status 416.
    Unsatisfiable,
}

impl Served {
    /// Number of body bytes this answer carries for a representation of
    /// `len` bytes.
    pub fn body_len(&self, len: u64) -> u64 {
        match *self {
            Served::Full => len,
            Served::Partial { start, end } => end - start + 1,
            Served::Unsatisfiable => 0,
        }
    }
}

/// One syntactically valid byte-range spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    /// `first-last` or `first-`.
    FromTo { first: u64, last: Option<u64> },
    /// `-suffix`: the last `suffix` bytes.
    Suffix(u64),
}

/// Decides what to serve for an optional `Range` header value and a
/// representation of `len` bytes.
pub fn resolve(header: Option<&str>, len: u64) -> Served {
    let Some(spec) = header.and_then(parse) else {
        return Served::Full;
    };
    match spec {
        Spec::FromTo { first, last } => {
            if first >= len {
                return Served::Unsatisfiable;
            }
            let end = last.map_or(len - 1, |last| last.min(len - 1));
            Served::Partial { start: first, end }
        }
        Spec::Suffix(0) => Served::Unsatisfiable,
        Spec::Suffix(n) => {
            if len == 0 {
                return Served::Unsatisfiable;
            }
            Served::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            }
        }
    }
}

fn parse(header: &str) -> Option<Spec> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let one = specs.next()?;
    if specs.next().is_some() {
        // Several ranges: we choose to ignore the header (§14.2).
        return None;
    }
    let (first, last) = one.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return digits(last).map(Spec::Suffix);
    }
    let first = digits(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(digits(last)?)
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(Spec::FromTo { first, last })
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The `Content-Range` value for a 206 answer.
pub fn content_range(start: u64, end: u64, len: u64) -> String {
    format!("bytes {start}-{end}/{len}")
}

/// The `Content-Range` value for a 416 answer.
pub fn unsatisfied_range(len: u64) -> String {
    format!("bytes */{len}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>, len: u64, expect: Served) {
        assert_eq!(resolve(header, len), expect, "header {header:?} len {len}");
    }

    #[test]
    fn ranges() {
        use Served::*;
        check(None, 100, Full);
        check(Some("bytes=0-9"), 100, Partial { start: 0, end: 9 });
        check(Some("bytes=90-"), 100, Partial { start: 90, end: 99 });
        check(Some("bytes=90-1000"), 100, Partial { start: 90, end: 99 });
        check(Some("bytes=-10"), 100, Partial { start: 90, end: 99 });
        check(Some("bytes=-1000"), 100, Partial { start: 0, end: 99 });
        check(Some("BYTES = 5-5"), 100, Partial { start: 5, end: 5 });
        check(Some("bytes=100-"), 100, Unsatisfiable);
        check(Some("bytes=100-200"), 100, Unsatisfiable);
        check(Some("bytes=-0"), 100, Unsatisfiable);
        check(Some("bytes=0-"), 0, Unsatisfiable);
        check(Some("bytes=-5"), 0, Unsatisfiable);
        // Malformed or unsupported: ignored, the whole file is served.
        check(Some("bytes=9-1"), 100, Full);
        check(Some("bytes=a-b"), 100, Full);
        check(Some("bytes=-"), 100, Full);
        check(Some("bytes="), 100, Full);
        check(Some("items=0-1"), 100, Full);
        check(Some("bytes=0-1,5-6"), 100, Full);
        check(Some("bytes=+1-2"), 100, Full);
        check(Some("bytes=99999999999999999999999-"), 100, Full);
        check(Some("garbage"), 100, Full);
    }

    #[test]
    fn header_values() {
        assert_eq!(content_range(0, 9, 100), "bytes 0-9/100");
        assert_eq!(unsatisfied_range(100), "bytes */100");
        assert_eq!(Served::Partial { start: 2, end: 4 }.body_len(10), 3);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(header in "\\PC{0,40}", len in 0u64..1_000_000) {
            if let Served::Partial { start, end } = resolve(Some(&header), len) {
                proptest::prop_assert!(start <= end && end < len);
            }
        }
    }
}
