//! A small JSON reader that keeps byte spans, so an answer can be filtered without being
//! re-serialized.
//!
//! Hiding an expired post from a timeline means cutting one element out of an array. Going
//! through `serde_json::Value` would re-order every object's keys and re-escape every
//! string of the other forty posts; instead the answer is read into a tree of spans
//! ([`Node`]) and written back byte for byte, except for the containers that actually lost
//! an element ([`Node::write_without`]). Only answers that mention a hidden id get here at
//! all (see [`super::index::HiddenIndex::mentions_any`]).
//!
//! Strict enough for what an instance emits (RFC 8259; a nesting limit, so a hostile body
//! cannot exhaust the stack); anything it cannot read is an error, and the caller fails
//! closed.

use std::{borrow::Cow, ops::Range};

/// How deep arrays and objects may nest.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid JSON at byte {0}")]
pub struct JsonError(pub usize);

/// One value, with where it is in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Object {
        span: Range<usize>,
        fields: Vec<(Str, Node)>,
    },
    Array {
        span: Range<usize>,
        items: Vec<Node>,
    },
    String(Str),
    /// A number, `true`, `false` or `null`.
    Scalar {
        span: Range<usize>,
    },
}

/// A string's span (quotes included) and whether it has escapes to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str {
    pub span: Range<usize>,
    escaped: bool,
}

impl Str {
    /// The decoded text.
    pub fn text<'a>(&self, src: &'a [u8]) -> Cow<'a, str> {
        let inner = &src[self.span.start + 1..self.span.end - 1];
        if !self.escaped {
            return String::from_utf8_lossy(inner);
        }
        Cow::Owned(unescape(inner))
    }

    /// Whether the decoded text equals `s` (no allocation when there is nothing to decode).
    pub fn is(&self, src: &[u8], s: &str) -> bool {
        if self.escaped {
            return self.text(src) == s;
        }
        &src[self.span.start + 1..self.span.end - 1] == s.as_bytes()
    }
}

impl Node {
    pub fn span(&self) -> Range<usize> {
        match self {
            Node::Object { span, .. } | Node::Array { span, .. } | Node::Scalar { span } => span.clone(),
            Node::String(s) => s.span.clone(),
        }
    }

    /// The value of field `key`, for an object.
    pub fn get(&self, src: &[u8], key: &str) -> Option<&Node> {
        match self {
            Node::Object { fields, .. } => fields.iter().rev().find(|(k, _)| k.is(src, key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The decoded text, for a string.
    pub fn as_str<'a>(&self, src: &'a [u8]) -> Option<Cow<'a, str>> {
        match self {
            Node::String(s) => Some(s.text(src)),
            _ => None,
        }
    }

    /// Writes this value to `out` as it was in `src`, except that every array element for
    /// which `drop` says true is left out (at any depth). Returns whether anything was.
    pub fn write_without(&self, src: &[u8], drop: &mut dyn FnMut(&Node) -> bool, out: &mut Vec<u8>) -> bool {
        if !self.loses_any(drop) {
            out.extend_from_slice(&src[self.span()]);
            return false;
        }
        match self {
            Node::Array { items, .. } => {
                out.push(b'[');
                let mut first = true;
                for item in items {
                    if drop(item) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    item.write_without(src, drop, out);
                }
                out.push(b']');
            }
            Node::Object { fields, .. } => {
                out.push(b'{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&src[key.span.clone()]);
                    out.push(b':');
                    value.write_without(src, drop, out);
                }
                out.push(b'}');
            }
            Node::String(_) | Node::Scalar { .. } => out.extend_from_slice(&src[self.span()]),
        }
        true
    }

    /// Whether [`Node::write_without`] would leave anything out.
    fn loses_any(&self, drop: &mut dyn FnMut(&Node) -> bool) -> bool {
        match self {
            Node::Array { items, .. } => items.iter().any(|i| drop(i) || i.loses_any(drop)),
            Node::Object { fields, .. } => fields.iter().any(|(_, v)| v.loses_any(drop)),
            _ => false,
        }
    }
}

/// Reads one JSON document (surrounding whitespace allowed).
pub fn parse(src: &[u8]) -> Result<Node, JsonError> {
    let mut p = Parser { src, pos: 0 };
    p.ws();
    let node = p.value(0)?;
    p.ws();
    if p.pos != src.len() {
        return Err(JsonError(p.pos));
    }
    Ok(node)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn err<T>(&self) -> Result<T, JsonError> {
        Err(JsonError(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Node, JsonError> {
        if depth > MAX_DEPTH {
            return self.err();
        }
        match self.src.get(self.pos) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Node::String(self.string()?)),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<Node, JsonError> {
        let start = self.pos;
        if self.src.get(start..start + word.len()) != Some(word) {
            return self.err();
        }
        self.pos += word.len();
        Ok(Node::Scalar { span: start..self.pos })
    }

    fn number(&mut self) -> Result<Node, JsonError> {
        let start = self.pos;
        if self.src.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.pos;
            while p.src.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos > s
        };
        if !digits(self) {
            return self.err();
        }
        if self.src.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !digits(self) {
                return self.err();
            }
        }
        if let Some(b'e' | b'E') = self.src.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.src.get(self.pos) {
                self.pos += 1;
            }
            if !digits(self) {
                return self.err();
            }
        }
        Ok(Node::Scalar { span: start..self.pos })
    }

    fn string(&mut self) -> Result<Str, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        loop {
            // Jump to the next quote or backslash; everything between is text.
            let rest = &self.src[self.pos.min(self.src.len())..];
            let Some(at) = memchr::memchr2(b'"', b'\\', rest) else { return self.err() };
            if rest[..at].iter().any(|b| *b < 0x20) {
                return Err(JsonError(self.pos));
            }
            self.pos += at;
            match self.src[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(Str { span: start..self.pos, escaped });
                }
                _ => {
                    escaped = true;
                    match self.src.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
                        Some(b'u')
                            if self
                                .src
                                .get(self.pos + 2..self.pos + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            self.pos += 6
                        }
                        _ => return self.err(),
                    }
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.src.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Node::Array { span: start..self.pos, items });
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.src.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array { span: start..self.pos, items });
                }
                _ => return self.err(),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let mut fields = Vec::new();
        self.ws();
        if self.src.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Node::Object { span: start..self.pos, fields });
        }
        loop {
            self.ws();
            if self.src.get(self.pos) != Some(&b'"') {
                return self.err();
            }
            let key = self.string()?;
            self.ws();
            if self.src.get(self.pos) != Some(&b':') {
                return self.err();
            }
            self.pos += 1;
            self.ws();
            let value = self.value(depth + 1)?;
            fields.push((key, value));
            self.ws();
            match self.src.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node::Object { span: start..self.pos, fields });
                }
                _ => return self.err(),
            }
        }
    }
}

/// Decodes the escapes of a string's inside (already checked by the parser).
fn unescape(inner: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut i = 0;
    let hex =
        |s: &[u8]| -> u32 { std::str::from_utf8(s).ok().and_then(|h| u32::from_str_radix(h, 16).ok()).unwrap_or(0) };
    while i < inner.len() {
        if inner[i] != b'\\' {
            out.push(inner[i]);
            i += 1;
            continue;
        }
        let Some(&kind) = inner.get(i + 1) else { break };
        i += 2;
        let ch = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex(inner.get(i..i + 4).unwrap_or_default());
                i += 4;
                if (0xD800..0xDC00).contains(&hi) && inner.get(i..i + 2) == Some(b"\\u") {
                    let lo = hex(inner.get(i + 2..i + 6).unwrap_or_default());
                    if (0xDC00..0xE000).contains(&lo) {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).unwrap_or('\u{fffd}')
                    } else {
                        '\u{fffd}'
                    }
                } else {
                    char::from_u32(hi).unwrap_or('\u{fffd}')
                }
            }
            _ => '\u{fffd}',
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_what_instances_write() {
        let src = br#" {"id":"1","a":[1,-2.5e3,true,null,{"b":"x\"y\u00e9\ud83d\ude00"}],"e":{}, "f":[]} "#;
        let node = parse(src).unwrap();
        assert_eq!(node.get(src, "id").unwrap().as_str(src).unwrap(), "1");
        let Node::Array { items, .. } = node.get(src, "a").unwrap() else { panic!() };
        assert_eq!(items.len(), 5);
        assert_eq!(items[4].get(src, "b").unwrap().as_str(src).unwrap(), "x\"yé😀");
        for bad in [&b"{"[..], b"[1,]", b"{\"a\" 1}", b"\"\x01\"", b"tru", b"1 2", b"[\"\\x\"]", b"01x"] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err(), "nesting is bounded");
    }

    #[test]
    fn writes_back_byte_for_byte_except_what_is_dropped() {
        let src = br#"{"z":1,"statuses":[ {"id":"1"}, {"id":"2","x":"\u003cp\u003e"} ,{"id":"3"}],"a":"keep order"}"#;
        let node = parse(src).unwrap();
        let mut out = Vec::new();
        let is =
            |id: &'static str| move |n: &Node| n.get(src, "id").and_then(|i| i.as_str(src)).is_some_and(|i| i == id);
        let mut none = |_: &Node| false;
        assert!(!node.write_without(src, &mut none, &mut out));
        assert_eq!(out, src, "nothing dropped: the very same bytes");
        out.clear();
        let mut drop_two = is("2");
        assert!(node.write_without(src, &mut drop_two, &mut out));
        assert_eq!(out, br#"{"z":1,"statuses":[{"id":"1"},{"id":"3"}],"a":"keep order"}"#);
        out.clear();
        let mut drop_one = is("1");
        node.write_without(src, &mut drop_one, &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"{"z":1,"statuses":[{"id":"2","x":"\u003cp\u003e"},{"id":"3"}],"a":"keep order"}"#,
            "kept elements keep their own bytes (escapes included)"
        );
        let src = br#"[{"id":"1"}]"#;
        out.clear();
        parse(src).unwrap().write_without(src, &mut |_| true, &mut out);
        assert_eq!(out, b"[]");
    }
}
