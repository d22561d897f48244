//! Request parameters read the way Rails reads them, for the few requests expiry must
//! understand: status creations (`expires_in`, the posts they refer to, the author's
//! token), and the writes that name a status by id (reports, filters, moderators' batch
//! actions), which must not name a hidden one.
//!
//! Rails takes parameters from the query string and from the body: a form, JSON under
//! every type it maps to JSON, or any `multipart/*` (the body's kind is read once, by
//! [`crate::privacy::media::body::BodyKind`], Rack's `[;,]` split of the `Content-Type`
//! included). Rack decodes keys (`status%5Fids%5B%5D`), reads `name[]` and `name[x]` as
//! nested under `name`, and Rack 2 also splits the query on `;`. Everything here reads all
//! of that, and a rewrite keeps every other parameter exactly.

use std::ops::Range;

use bytes::Bytes;

use crate::privacy::media::body::BodyKind as Wire;

/// How a request body is encoded, as far as Rails reads parameters from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`, or no `Content-Type` at all.
    Form,
    /// Every type Rails' JSON parameter parser takes.
    Json,
    /// Any `multipart/*`, with its boundary.
    Multipart(String),
    /// Anything else: Rails reads no parameters from it.
    Other,
}

impl BodyKind {
    /// From the request's headers; `Err` (with the reason to tell the client) for a
    /// `Content-Type` pavise will not guess at.
    pub fn of(headers: &http::HeaderMap) -> Result<BodyKind, &'static str> {
        Ok(match Wire::of(headers) {
            Wire::Form => BodyKind::Form,
            Wire::Json => BodyKind::Json,
            Wire::Multipart { boundary, .. } => BodyKind::Multipart(boundary),
            Wire::Unreadable(why) => return Err(why),
            Wire::DeclaredMedia | Wire::Other => BodyKind::Other,
        })
    }
}

/// Why a body could not be read (or rewritten) the way Rails would read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the request body is not valid {0}")]
    BadBody(&'static str),
}

/// Whether a parameter name is, to Rack (2 or 3), the top-level key `key`: `key`,
/// `key[]`, `key[x]`, and (Rack 2) `[key]`.
pub fn top_key_is(name: &str, key: &str) -> bool {
    // Rack 3: the part before the first `[` after position 0.
    let rack3 = match name.get(1..).and_then(|r| r.find('[')) {
        Some(i) => &name[..i + 1],
        None => name,
    };
    // Rack 2: leading brackets skipped, then up to the next bracket.
    let trimmed = name.trim_start_matches(['[', ']']);
    let rack2 = &trimmed[..trimmed.find(['[', ']']).unwrap_or(trimmed.len())];
    rack3 == key || rack2 == key
}

/// Whether a parameter name holds `key` at any depth: `key[]`, `report[key][]`,
/// `admin_status_batch_action[key][]`.
pub fn names_key(name: &str, key: &str) -> bool {
    top_key_is(name, key) || name.split(['[', ']']).any(|segment| segment == key)
}

/// The pairs of a query string, split on `&` and (as Rack 2 does) on `;`.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split(';')
        .flat_map(|part| url::form_urlencoded::parse(part.as_bytes()).into_owned().collect::<Vec<_>>())
        .collect()
}

/// A top-level string parameter of the body (the last one, as Rack keeps it); `None` for
/// another kind of value or a body that does not parse.
pub fn body_param(kind: &BodyKind, body: &[u8], name: &str) -> Option<String> {
    match kind {
        BodyKind::Form => {
            url::form_urlencoded::parse(body).filter(|(k, _)| k == name).map(|(_, v)| v.into_owned()).last()
        }
        BodyKind::Json => match serde_json::from_slice::<serde_json::Value>(body).ok()?.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        },
        BodyKind::Multipart(boundary) => {
            let parts = multipart_parts(body, boundary)?;
            parts
                .iter()
                .rev()
                .find(|p| !p.is_file && p.name.as_deref() == Some(name))
                .map(|p| String::from_utf8_lossy(&body[p.value.clone()]).into_owned())
        }
        BodyKind::Other => None,
    }
}

/// What [`drop_values`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The body to forward, when it changed.
    pub body: Option<Bytes>,
    /// The query to forward, when it changed.
    pub query: Option<String>,
    /// Values of the key that were dropped, and that remain.
    pub dropped: usize,
    pub kept: usize,
}

/// Drops every value of parameter `key` (at any depth) for which `drop` says true, from
/// the query and the body, keeping everything else as it was.
pub fn drop_values(
    kind: &BodyKind,
    body: &Bytes,
    query: Option<&str>,
    key: &str,
    drop: &dyn Fn(&str) -> bool,
) -> Result<Dropped, ParamError> {
    let mut out = Dropped::default();
    if let Some(q) = query {
        let pairs = query_pairs(q);
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        let mut changed = false;
        for (k, v) in &pairs {
            if names_key(k, key) {
                if drop(v) {
                    out.dropped += 1;
                    changed = true;
                    continue;
                }
                out.kept += 1;
            }
            kept.append_pair(k, v);
        }
        if changed {
            out.query = Some(kept.finish());
        }
    }
    match kind {
        BodyKind::Other => {}
        BodyKind::Form => {
            let mut kept = url::form_urlencoded::Serializer::new(String::new());
            let mut changed = false;
            for (k, v) in url::form_urlencoded::parse(body) {
                if names_key(&k, key) {
                    if drop(&v) {
                        out.dropped += 1;
                        changed = true;
                        continue;
                    }
                    out.kept += 1;
                }
                kept.append_pair(&k, &v);
            }
            if changed {
                out.body = Some(Bytes::from(kept.finish()));
            }
        }
        BodyKind::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(out);
            }
            let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ParamError::BadBody("JSON"))?;
            let before = out.dropped;
            drop_in_json(&mut v, key, drop, &mut out);
            if out.dropped > before {
                out.body = Some(Bytes::from(serde_json::to_vec(&v).map_err(|_| ParamError::BadBody("JSON"))?));
            }
        }
        BodyKind::Multipart(boundary) => {
            let Some(parts) = multipart_parts(body, boundary) else {
                return if memchr::memmem::find(body, key.as_bytes()).is_some() {
                    Err(ParamError::BadBody("multipart"))
                } else {
                    Ok(out)
                };
            };
            let mut cut = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                match &part.name {
                    Some(name) if names_key(name, key) => {
                        if drop(&String::from_utf8_lossy(&body[part.value.clone()])) {
                            out.dropped += 1;
                            cut.push(i);
                        } else {
                            out.kept += 1;
                        }
                    }
                    // A name pavise could not read the way Rack does (`name*=...`): never guess.
                    _ if part.headers.contains(key) => return Err(ParamError::BadBody("multipart")),
                    _ => {}
                }
            }
            if !cut.is_empty() {
                out.body = Some(without_parts(body, boundary, &parts, &cut));
            }
        }
    }
    Ok(out)
}

fn drop_in_json(v: &mut serde_json::Value, key: &str, drop: &dyn Fn(&str) -> bool, out: &mut Dropped) {
    let text = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match v {
        serde_json::Value::Object(map) => {
            let mut remove = false;
            for (k, value) in map.iter_mut() {
                if k == key {
                    match value {
                        serde_json::Value::Array(items) => {
                            let before = items.len();
                            items.retain(|x| !text(x).is_some_and(|t| drop(&t)));
                            out.dropped += before - items.len();
                            out.kept += items.len();
                        }
                        scalar => match text(scalar) {
                            Some(t) if drop(&t) => {
                                out.dropped += 1;
                                remove = true;
                            }
                            Some(_) => out.kept += 1,
                            None => {}
                        },
                    }
                } else {
                    drop_in_json(value, key, drop, out);
                }
            }
            if remove {
                map.remove(key);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|x| drop_in_json(x, key, drop, out)),
        _ => {}
    }
}

/// One part of a multipart body: its whole span (from its delimiter) and what Rack names it.
pub(crate) struct Part {
    pub(crate) span: Range<usize>,
    pub(crate) name: Option<String>,
    pub(crate) is_file: bool,
    pub(crate) headers: String,
    pub(crate) value: Range<usize>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(hay.get(from..)?, needle).map(|i| i + from)
}

/// Splits a multipart body at its delimiters (RFC 2046 §5.1.1, CRLF line ends as Rack
/// wants them). `None` when it does not frame.
pub(crate) fn multipart_parts(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let dash = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    let mut at = if body.starts_with(dash.as_bytes()) { 0 } else { find(body, delim.as_bytes(), 0)? + 2 };
    let mut parts = Vec::new();
    loop {
        let after = at + dash.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        let head_start = find(body, b"\r\n", after)? + 2;
        let head_end = find(body, b"\r\n\r\n", head_start.saturating_sub(2))?;
        let next = find(body, delim.as_bytes(), head_end)?;
        let headers = String::from_utf8_lossy(&body[head_start.min(head_end)..head_end]).into_owned();
        let disposition = headers
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("")
            .to_owned();
        parts.push(Part {
            span: at..next + 2,
            name: disposition_param(&disposition, "name"),
            is_file: disposition_param(&disposition, "filename").is_some(),
            headers,
            value: head_end + 4..next,
        });
        at = next + 2;
    }
}

/// A `;`-separated parameter of a Content-Disposition (`name="x"` or `name=x`), matched the
/// way Rack matches it (the parameter name whole, case-insensitive).
fn disposition_param(disposition: &str, param: &str) -> Option<String> {
    let lower = disposition.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&format!("{param}=")) {
        let at = from + i;
        let before = lower[..at].chars().next_back();
        from = at + param.len() + 1;
        if !matches!(before, Some(';' | ' ' | '\t')) {
            continue;
        }
        let rest = &disposition[from..];
        let value = match rest.strip_prefix('"') {
            Some(q) => &q[..q.find('"').unwrap_or(q.len())],
            None => &rest[..rest.find([';', ' ', '\t']).unwrap_or(rest.len())],
        };
        return Some(value.to_owned());
    }
    None
}

/// The body without the parts at `cut` (indexes into `parts`), framing kept.
pub(crate) fn without_parts(body: &[u8], boundary: &str, parts: &[Part], cut: &[usize]) -> Bytes {
    if cut.len() == parts.len() {
        // Nothing else in it: an empty multipart body.
        return Bytes::from(format!("--{boundary}--\r\n"));
    }
    // The first part owns the leading delimiter: take the next one's CRLF with it.
    let ranges: Vec<Range<usize>> = cut
        .iter()
        .map(|&i| {
            let span = parts[i].span.clone();
            if i == 0 { span } else { span.start - 2..span.end - 2 }
        })
        .collect();
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0;
    for range in ranges {
        let start = range.start.max(pos);
        out.extend_from_slice(&body[pos..start]);
        pos = pos.max(range.end);
    }
    out.extend_from_slice(&body[pos..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const H: &str = "110000000000000001";

    fn hidden(v: &str) -> bool {
        crate::proxy::contract::route::status_id_of(v).as_deref() == Some(H)
    }

    #[test]
    fn keys_the_way_rack_reads_them() {
        for yes in ["status_ids", "status_ids[]", "status_ids[0]", "[status_ids]", "report[status_ids][]"] {
            assert!(names_key(yes, "status_ids"), "{yes}");
        }
        for no in ["status_idsx", "xstatus_ids", "status", ""] {
            assert!(!names_key(no, "status_ids"), "{no}");
        }
        assert!(top_key_is("expires_in[]", "expires_in") && !top_key_is("poll[expires_in]", "expires_in"));
    }

    #[test]
    fn hidden_ids_leave_every_body_shape_and_the_rest_stays() {
        let form = Bytes::from(format!("account_id=9&status_ids%5B%5D=0{H}&status_ids[]=5&comment=x"));
        let d = drop_values(&BodyKind::Form, &form, None, "status_ids", &hidden).unwrap();
        assert_eq!((d.dropped, d.kept), (1, 1));
        let body = String::from_utf8(d.body.unwrap().to_vec()).unwrap();
        assert!(!body.contains(&H[2..]) && body.contains("comment=x") && body.contains("account_id=9"), "{body}");

        let json = Bytes::from(format!(r#"{{"account_id":"9","status_ids":["{H}",5],"comment":"x"}}"#));
        let d = drop_values(&BodyKind::Json, &json, None, "status_ids", &hidden).unwrap();
        assert_eq!((d.dropped, d.kept), (1, 1));
        let v: serde_json::Value = serde_json::from_slice(&d.body.unwrap()).unwrap();
        assert_eq!(v["status_ids"], serde_json::json!([5]));
        let scalar = Bytes::from(format!(r#"{{"status_id":"{H}-x"}}"#));
        let d = drop_values(&BodyKind::Json, &scalar, None, "status_id", &hidden).unwrap();
        assert_eq!((d.dropped, d.kept, d.body.as_deref()), (1, 0, Some(&b"{}"[..])));

        let mp = Bytes::from(format!(
            "--B\r\nContent-Disposition: form-data; name=\"status_ids[]\"\r\n\r\n{H}\r\n--B\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nx\r\n--B--\r\n"
        ));
        let d = drop_values(&BodyKind::Multipart("B".into()), &mp, None, "status_ids", &hidden).unwrap();
        assert_eq!(d.dropped, 1);
        assert_eq!(
            &d.body.unwrap()[..],
            b"--B\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nx\r\n--B--\r\n"
        );

        // The query too, split the way Rack 2 splits it; nested names; nothing to drop.
        let d = drop_values(
            &BodyKind::Other,
            &Bytes::new(),
            Some(&format!("a=1;report[status_ids][]={H}")),
            "status_ids",
            &hidden,
        )
        .unwrap();
        assert_eq!((d.dropped, d.query.as_deref()), (1, Some("a=1")));
        let d =
            drop_values(&BodyKind::Form, &Bytes::from_static(b"status_ids[]=5"), Some("x=1"), "status_ids", &hidden)
                .unwrap();
        assert_eq!(d, Dropped { body: None, query: None, dropped: 0, kept: 1 });
    }

    #[test]
    fn body_params() {
        assert_eq!(body_param(&BodyKind::Form, b"access_token=a&access_token=b", "access_token").as_deref(), Some("b"));
        assert_eq!(body_param(&BodyKind::Json, br#"{"access_token":"j"}"#, "access_token").as_deref(), Some("j"));
        assert_eq!(body_param(&BodyKind::Json, br#"{"access_token":["j"]}"#, "access_token"), None);
        let mp = b"--B\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\nm\r\n--B--\r\n";
        assert_eq!(body_param(&BodyKind::Multipart("B".into()), mp, "access_token").as_deref(), Some("m"));
        assert_eq!(body_param(&BodyKind::Other, b"access_token=x", "access_token"), None);
    }
}
