//! The `subsonic-response` envelope, in XML and JSON from one tree.
//!
//! A payload is a tree of [`El`]s: scalars are attributes (XML) or members
//! (JSON); children are lists of elements of one name, which XML repeats
//! and JSON always makes an array (even of one, as clients expect), or
//! single objects ([`El::child`]), which JSON makes an object. A genre's
//! name is its element's text in XML and its `value` member in JSON.
//! Members keep their order, so `status` and `version` come first.

use std::fmt::Write;

/// The Subsonic API version Rondo speaks.
pub const API_VERSION: &str = "1.16.1";
/// The server's name in the envelope.
pub const SERVER_TYPE: &str = "rondo";
/// Rondo's version.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_value!(i32, i64, u32, u64, usize);

#[derive(Clone, Debug, PartialEq)]
enum Part {
    /// A list of elements of one name (a JSON array).
    List(String, Vec<El>),
    /// One element (a JSON object).
    One(El),
    /// A list of scalars (XML: repeated elements with text; JSON: an
    /// array of values).
    Values(String, Vec<Value>),
}

/// One element of a payload.
#[derive(Clone, Debug, PartialEq)]
pub struct El {
    name: String,
    attrs: Vec<(String, Value)>,
    parts: Vec<Part>,
    text: Option<String>,
}

impl El {
    pub fn new(name: &str) -> El {
        El {
            name: name.to_string(),
            attrs: Vec::new(),
            parts: Vec::new(),
            text: None,
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: &str, value: impl Into<Value>) -> El {
        self.attrs.push((key.to_string(), value.into()));
        self
    }

    /// Adds an attribute if there is a value.
    pub fn opt(self, key: &str, value: Option<impl Into<Value>>) -> El {
        match value {
            Some(v) => self.attr(key, v),
            None => self,
        }
    }

    /// Adds a list of elements named `name` (always an array in JSON).
    pub fn list(mut self, name: &str, items: impl IntoIterator<Item = El>) -> El {
        let items: Vec<El> = items
            .into_iter()
            .map(|mut e| {
                e.name = name.to_string();
                e
            })
            .collect();
        self.parts.push(Part::List(name.to_string(), items));
        self
    }

    /// Adds one child element (an object in JSON).
    pub fn child(mut self, el: El) -> El {
        self.parts.push(Part::One(el));
        self
    }

    /// Adds a list of scalars named `name`.
    pub fn values(mut self, name: &str, values: impl IntoIterator<Item = Value>) -> El {
        self.parts
            .push(Part::Values(name.to_string(), values.into_iter().collect()));
        self
    }

    /// Sets the element's text (XML text; JSON member `value`).
    pub fn text(mut self, text: impl Into<String>) -> El {
        self.text = Some(text.into());
        self
    }

    /// The attribute `key`, for tests.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// The Subsonic error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Generic = 0,
    MissingParameter = 10,
    ClientMustUpgrade = 20,
    ServerMustUpgrade = 30,
    WrongCredentials = 40,
    TokenAuthUnsupported = 41,
    AuthMechanismUnsupported = 42,
    ConflictingAuth = 43,
    InvalidApiKey = 44,
    NotAuthorized = 50,
    NotFound = 70,
}

/// A failed request: a code and a message for the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn missing(param: &str) -> Failure {
        Failure::new(
            Code::MissingParameter,
            format!("Required parameter is missing: {param}"),
        )
    }

    pub fn not_found(what: &str) -> Failure {
        Failure::new(Code::NotFound, format!("{what} not found"))
    }

    pub fn bad(message: impl Into<String>) -> Failure {
        Failure::new(Code::Generic, message)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Failure {
        use crate::Error;
        let code = match &e {
            Error::NotFound { .. } => Code::NotFound,
            Error::Forbidden(_) => Code::NotAuthorized,
            Error::Unauthenticated(_) => Code::WrongCredentials,
            _ => Code::Generic,
        };
        Failure::new(code, e.to_string())
    }
}

/// The answer format a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// Renders a whole answer: `payload` (none for an empty one) or `failure`.
pub fn render(format: Format, outcome: &Result<Option<El>, Failure>) -> String {
    let mut root = El::new("subsonic-response")
        .attr("status", if outcome.is_ok() { "ok" } else { "failed" })
        .attr("version", API_VERSION)
        .attr("type", SERVER_TYPE)
        .attr("serverVersion", SERVER_VERSION)
        .attr("openSubsonic", true);
    match outcome {
        Ok(Some(payload)) => {
            // The payload's own parts sit directly under the root when it
            // is named "" (getOpenSubsonicExtensions' bare array).
            if payload.name.is_empty() {
                root.parts.extend(payload.parts.iter().cloned());
            } else {
                root = root.child(payload.clone());
            }
        }
        Ok(None) => {}
        Err(f) => {
            root = root.child(
                El::new("error")
                    .attr("code", f.code as i64)
                    .attr("message", f.message.as_str()),
            );
        }
    }
    let mut out = String::new();
    match format {
        Format::Xml => {
            out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
            xml(&root, &mut out, true);
        }
        Format::Json => {
            out.push_str("{\"subsonic-response\":");
            json(&root, &mut out);
            out.push('}');
        }
    }
    out
}

fn xml(el: &El, out: &mut String, root: bool) {
    out.push('<');
    out.push_str(&el.name);
    if root {
        out.push_str(" xmlns=\"http://subsonic.org/restapi\"");
    }
    for (k, v) in &el.attrs {
        let _ = write!(out, " {k}=\"");
        xml_escape(&scalar(v), out);
        out.push('"');
    }
    if el.parts.is_empty() && el.text.is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    if let Some(t) = &el.text {
        xml_escape(t, out);
    }
    for part in &el.parts {
        match part {
            Part::List(_, items) => items.iter().for_each(|e| xml(e, out, false)),
            Part::One(e) => xml(e, out, false),
            Part::Values(name, values) => {
                for v in values {
                    let _ = write!(out, "<{name}>");
                    xml_escape(&scalar(v), out);
                    let _ = write!(out, "</{name}>");
                }
            }
        }
    }
    let _ = write!(out, "</{}>", el.name);
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => f.to_string(),
    }
}

/// Escapes text for an attribute or element; characters XML 1.0 cannot
/// carry (most control characters) are left out.
fn xml_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

fn json_value(v: &Value, out: &mut String) {
    match v {
        Value::Str(s) => json_str(s, out),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::Float(_) => out.push('0'),
    }
}

fn json_str(s: &str, out: &mut String) {
    // serde_json escapes exactly what JSON needs.
    out.push_str(&serde_json::Value::from(s).to_string());
}

fn json(el: &El, out: &mut String) {
    out.push('{');
    let mut first = true;
    let mut key = |out: &mut String, k: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        json_str(k, out);
        out.push(':');
    };
    for (k, v) in &el.attrs {
        key(out, k);
        json_value(v, out);
    }
    if let Some(t) = &el.text {
        key(out, "value");
        json_str(t, out);
    }
    for part in &el.parts {
        match part {
            Part::List(name, items) => {
                key(out, name);
                out.push('[');
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json(e, out);
                }
                out.push(']');
            }
            Part::One(e) => {
                key(out, &e.name);
                json(e, out);
            }
            Part::Values(name, values) => {
                key(out, name);
                out.push('[');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_value(v, out);
                }
                out.push(']');
            }
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn album() -> El {
        El::new("album")
            .attr("id", "a1")
            .attr("name", "Tom & \"Jerry\" <live>")
            .attr("songCount", 1)
            .attr("isCompilation", false)
            .list("song", [El::new("x").attr("id", "s1")])
            .list("genres", Vec::new())
    }

    #[test]
    fn json_keeps_order_types_and_makes_lists_arrays() {
        let out = render(Format::Json, &Ok(Some(album())));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let r = &v["subsonic-response"];
        assert_eq!(r["status"], "ok");
        assert_eq!(r["openSubsonic"], true);
        assert_eq!(r["album"]["songCount"], 1);
        assert_eq!(r["album"]["isCompilation"], false);
        assert_eq!(r["album"]["name"], "Tom & \"Jerry\" <live>");
        assert_eq!(r["album"]["song"][0]["id"], "s1", "one song is an array");
        assert_eq!(r["album"]["genres"], serde_json::json!([]));
        // status and version first (clients read them first).
        assert!(out.starts_with(r#"{"subsonic-response":{"status":"ok","version":"1.16.1","#));
    }

    #[test]
    fn xml_escapes_and_repeats_list_items() {
        let out = render(Format::Xml, &Ok(Some(album())));
        assert!(out.contains(r#"<subsonic-response xmlns="http://subsonic.org/restapi" status="ok" version="1.16.1" type="rondo""#), "{out}");
        assert!(
            out.contains(r#"name="Tom &amp; &quot;Jerry&quot; &lt;live&gt;""#),
            "{out}"
        );
        assert!(out.contains(r#"<song id="s1"/>"#), "{out}");
        let g = El::new("genres").list(
            "genre",
            [El::new("g").attr("songCount", 2).text("Rock\u{1}")],
        );
        let out = render(Format::Xml, &Ok(Some(g)));
        assert!(
            out.contains(r#"<genre songCount="2">Rock</genre>"#),
            "{out}"
        );
    }

    #[test]
    fn failures_carry_code_and_message() {
        let f = Failure::new(Code::WrongCredentials, "Wrong username or password");
        let out = render(Format::Json, &Err(f.clone()));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["subsonic-response"]["status"], "failed");
        assert_eq!(v["subsonic-response"]["error"]["code"], 40);
        let out = render(Format::Xml, &Err(f));
        assert!(
            out.contains(r#"<error code="40" message="Wrong username or password"/>"#),
            "{out}"
        );
    }
}
