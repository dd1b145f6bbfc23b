//! The API's own scalars: 64-bit counts and instants.
//!
//! GraphQL's `Int` is a signed 32-bit integer: byte counts pass it at
//! 2 GiB (a node passes that at about 400 MP3s), so counts that can are
//! `UnsignedInt64`, written as a string of decimal digits (as GitHub's
//! `BigInt` and Shopify's `UnsignedInt64`: JSON numbers past 2^53 lose
//! precision in JavaScript). Instants are `DateTime`, RFC 3339 strings in
//! UTC.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// An unsigned 64-bit integer as a string of decimal digits ("0" to
/// "18446744073709551615"). As input, such a string or a non-negative
/// `Int`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnsignedInt64(pub u64);

#[Scalar(
    name = "UnsignedInt64",
    specified_by_url = "https://shopify.dev/docs/api/admin-graphql/latest/scalars/UnsignedInt64"
)]
impl ScalarType for UnsignedInt64 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse::<u64>()
                .map(UnsignedInt64)
                .map_err(|_| InputValueError::custom("must be at most 18446744073709551615")),
            Value::String(_) => Err(InputValueError::custom(
                "must be a string of decimal digits",
            )),
            Value::Number(n) => n
                .as_u64()
                .map(UnsignedInt64)
                .ok_or_else(|| InputValueError::custom("must be a non-negative integer")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

impl From<u64> for UnsignedInt64 {
    fn from(n: u64) -> Self {
        UnsignedInt64(n)
    }
}

/// An instant, as an RFC 3339 string in UTC, with the fraction of a second
/// when there is one ("2026-12-06T13:07:14.123Z", "2026-12-06T13:07:14Z").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub time::OffsetDateTime);

impl DateTime {
    /// The instant `ms` milliseconds after the Unix epoch.
    pub fn from_unix_ms(ms: u64) -> DateTime {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        DateTime(t)
    }
}

#[Scalar(
    name = "DateTime",
    specified_by_url = "https://scalars.graphql.org/andimarek/date-time"
)]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map(|t| DateTime(t.to_offset(time::UtcOffset::UTC)))
                    .map_err(|e| InputValueError::custom(format!("not an RFC 3339 date-time: {e}")))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        // Formatting fails only for years past 9999; the epoch stands in.
        let text = self
            .0
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string());
        Value::String(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_int64_is_a_string_of_digits_both_ways() {
        let big = 3 * (1u64 << 31);
        assert_eq!(
            UnsignedInt64(big).to_value(),
            Value::String("6442450944".into())
        );
        assert_eq!(
            UnsignedInt64::parse(Value::String("6442450944".into())).ok(),
            Some(UnsignedInt64(big))
        );
        assert_eq!(
            UnsignedInt64::parse(Value::Number(7.into())).ok(),
            Some(UnsignedInt64(7))
        );
        assert_eq!(
            UnsignedInt64::parse(Value::String(u64::MAX.to_string())).ok(),
            Some(UnsignedInt64(u64::MAX))
        );
        for bad in ["", "-1", "+1", " 1", "1.5", "18446744073709551616", "0x10"] {
            assert!(
                UnsignedInt64::parse(Value::String(bad.into())).is_err(),
                "{bad:?}"
            );
        }
        assert!(UnsignedInt64::parse(Value::Number((-1).into())).is_err());
        assert!(UnsignedInt64::parse(Value::Boolean(true)).is_err());
    }

    #[test]
    fn date_time_is_rfc3339_in_utc() {
        let t = DateTime::from_unix_ms(1_796_562_434_123);
        let Value::String(s) = t.to_value() else {
            panic!("a string");
        };
        assert_eq!(s, "2026-12-06T13:07:14.123Z");
        assert_eq!(DateTime::parse(Value::String(s)).ok(), Some(t));
        let offset = DateTime::parse(Value::String("2026-12-06T14:07:14.123+01:00".into()));
        assert_eq!(offset.ok(), Some(t));
        assert!(DateTime::parse(Value::String("yesterday".into())).is_err());
    }
}
