//! Enforcement at the edge, before the instance is asked anything.
//!
//! - Once a post's deadline has passed it is hidden at once, even while its deletion is
//!   still queued (rate limits, a slow instance): `410 Gone` for its ActivityPub object and
//!   HTML page (other servers drop their copy on 410), `404` for the client API (what
//!   Mastodon answers for a deleted status).
//! - A client may ask for a per-post expiry with `expires_in` (seconds), as Akkoma clients
//!   do. Mastodon does not know the parameter, so pavise reads it and strips it before
//!   forwarding — from the query string and from every body Rails reads parameters from
//!   (form, JSON under each type Rails parses as JSON, any `multipart/*`), with Rack's
//!   reading of keys (`expires%5Fin`, `expires_in[]`). Values under the minimum, and shapes
//!   pavise cannot apply, get a Mastodon-style 422: a post is never created without the
//!   expiry its author asked for.

use bytes::Bytes;

pub use super::params::BodyKind;
use super::params::{multipart_parts, top_key_is, without_parts};

/// Why a status creation body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiresInError {
    #[error("expires_in must be a whole number of seconds")]
    NotANumber,
    #[error("expires_in must be at least {min} seconds")]
    TooSoon { min: u64 },
    #[error("the request body is not valid {0}")]
    BadBody(&'static str),
    #[error("expires_in is given twice, with different values")]
    Conflicting,
    #[error("the query string separates expires_in with ';', which servers read differently; use '&'")]
    Ambiguous,
}

fn names_expires_in(name: &str) -> bool {
    top_key_is(name, "expires_in")
}

/// What pavise reads from a status creation besides the post itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateParams {
    /// The author's `expires_in`, checked against the minimum.
    pub expires_in: Option<u64>,
    /// `in_reply_to_id`, `quoted_status_id`, `quote_id` as sent: a post that refers to a
    /// hidden one is refused like a reference to a deleted one.
    pub references: Vec<String>,
    /// The text and content warning (`status`, `spoiler_text`), to recognise the post
    /// among the author's statuses when the instance's answer is lost (only a keyed digest
    /// of them is ever kept).
    pub text: String,
    pub spoiler_text: String,
}

/// The parameters that name another post.
const REFERENCES: [&str; 3] = ["in_reply_to_id", "quoted_status_id", "quote_id"];

/// One status creation, read the way Rails reads it: the query string and the body (form,
/// JSON or multipart). `expires_in` is removed from both before forwarding (Mastodon does
/// not know it); where it is given in a shape pavise cannot apply (an array, a file, two
/// different values) the request is refused rather than created without it.
#[derive(Debug)]
pub struct TakenCreate {
    /// The body to forward (the same bytes when there was nothing to remove).
    pub body: Bytes,
    /// The query to forward, when it changed.
    pub query: Option<String>,
    pub params: CreateParams,
}

pub fn take_create_params(
    kind: &BodyKind,
    body: &Bytes,
    query: Option<&str>,
    min: u64,
) -> Result<TakenCreate, ExpiresInError> {
    let mut params = CreateParams::default();
    let (new_query, from_query) = match query {
        Some(q) => {
            let (rest, found, refs) = take_from_form(q.as_bytes())?;
            params.references.extend(refs);
            // Rack 2 also splits the query on `;`: what only that reading finds is either
            // refused (expires_in) or checked too (a reference).
            for part in q.split(';').skip(1) {
                let (_, also, more) = take_from_form(part.as_bytes())?;
                if also.is_some() {
                    return Err(ExpiresInError::Ambiguous);
                }
                params.references.extend(more);
            }
            (found.is_some().then(|| String::from_utf8_lossy(&rest).into_owned()), found)
        }
        None => (None, None),
    };
    let (body, from_body) = match kind {
        BodyKind::Other => (body.clone(), None),
        BodyKind::Form => {
            let (rest, found, refs) = take_from_form(body)?;
            params.references.extend(refs);
            (if found.is_some() { Bytes::from(rest) } else { body.clone() }, found)
        }
        BodyKind::Json => take_from_json(body, &mut params.references)?,
        BodyKind::Multipart(boundary) => take_from_multipart(body, boundary, &mut params.references)?,
    };
    let text = |name: &str| super::params::body_param(kind, &body, name).unwrap_or_default();
    params.text = text("status");
    params.spoiler_text = text("spoiler_text");
    // Rails lets the query win; two different values are a mistake to refuse, not guess.
    let raw = match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => return Err(ExpiresInError::Conflicting),
        (Some(v), _) | (None, Some(v)) => Some(v),
        (None, None) => None,
    };
    if let Some(secs) = raw.map(|r| parse_secs(r.trim())).transpose()?.flatten() {
        if secs < min {
            return Err(ExpiresInError::TooSoon { min });
        }
        params.expires_in = Some(secs);
    }
    Ok(TakenCreate { body, query: new_query, params })
}

/// A value for expires_in as text (`None` for the JSON `null`).
type Raw = Option<String>;

fn take_from_form(bytes: &[u8]) -> Result<(Vec<u8>, Raw, Vec<String>), ExpiresInError> {
    let mut found: Raw = None;
    let mut refs = Vec::new();
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if names_expires_in(&k) {
            if k != "expires_in" {
                return Err(ExpiresInError::NotANumber);
            }
            found = Some(v.into_owned());
        } else {
            if REFERENCES.contains(&k.as_ref()) {
                refs.push(v.to_string());
            }
            kept.append_pair(&k, &v);
        }
    }
    Ok((kept.finish().into_bytes(), found, refs))
}

fn take_from_json(body: &Bytes, refs: &mut Vec<String>) -> Result<(Bytes, Raw), ExpiresInError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((body.clone(), None));
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ExpiresInError::BadBody("JSON"))?;
    // A non-object root is `_json` to Rails: no parameters of ours in it.
    let Some(obj) = v.as_object_mut() else { return Ok((body.clone(), None)) };
    for key in REFERENCES {
        match obj.get(key) {
            Some(serde_json::Value::String(s)) => refs.push(s.clone()),
            Some(serde_json::Value::Number(n)) => refs.push(n.to_string()),
            _ => {}
        }
    }
    let Some(raw) = obj.remove("expires_in") else { return Ok((body.clone(), None)) };
    let text = match &raw {
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(s) => s.to_string(),
            None => return Err(ExpiresInError::NotANumber),
        },
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        _ => return Err(ExpiresInError::NotANumber),
    };
    let out = serde_json::to_vec(&v).map_err(|_| ExpiresInError::BadBody("JSON"))?;
    Ok((Bytes::from(out), Some(text)))
}

fn take_from_multipart(body: &Bytes, boundary: &str, refs: &mut Vec<String>) -> Result<(Bytes, Raw), ExpiresInError> {
    let mentions = memchr::memmem::find(body, b"expires_in").is_some();
    let Some(parts) = multipart_parts(body, boundary) else {
        // Not framed as multipart: Rack would read nothing either, unless it is ours.
        return if mentions { Err(ExpiresInError::BadBody("multipart")) } else { Ok((body.clone(), None)) };
    };
    let mut found: Raw = None;
    let mut cut: Vec<usize> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let value = || String::from_utf8_lossy(&body[part.value.clone()]).into_owned();
        match &part.name {
            Some(name) if names_expires_in(name) => {
                if name != "expires_in" || part.is_file {
                    return Err(ExpiresInError::NotANumber);
                }
                found = Some(value());
                cut.push(i);
            }
            Some(name) if REFERENCES.contains(&name.as_str()) && !part.is_file => refs.push(value()),
            // A name pavise could not read the way Rack does (`name*=...`): never guess.
            _ if part.headers.contains("expires_in") => return Err(ExpiresInError::BadBody("multipart")),
            _ => {}
        }
    }
    if cut.is_empty() {
        return Ok((body.clone(), None));
    }
    Ok((without_parts(body, boundary, &parts, &cut), found))
}

fn parse_secs(s: &str) -> Result<Option<u64>, ExpiresInError> {
    if s.is_empty() {
        return Ok(None);
    }
    let n: u64 = s.parse().map_err(|_| ExpiresInError::NotANumber)?;
    Ok(Some(n).filter(|n| *n > 0))
}

/// Whether a hidden status is answered 404 (client API) or 410 (federation, web page).
pub fn hidden_status_code(path: &str) -> http::StatusCode {
    if path.starts_with("/api/") { http::StatusCode::NOT_FOUND } else { http::StatusCode::GONE }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kind(ct: Option<&str>) -> BodyKind {
        let mut h = http::HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        BodyKind::of(&h).unwrap()
    }

    fn take(ct: Option<&str>, body: &'static [u8], query: Option<&str>) -> Result<TakenCreate, ExpiresInError> {
        take_create_params(&kind(ct), &Bytes::from_static(body), query, 60)
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn form_bodies() {
        let t = take(FORM, b"status=hi+there&visibility=direct&expires_in=3600&media_ids%5B%5D=1", None).unwrap();
        assert_eq!(t.params.expires_in, Some(3600));
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&t.body).into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("status".into(), "hi there".into()),
                ("visibility".into(), "direct".into()),
                ("media_ids[]".into(), "1".into())
            ]
        );
        assert_eq!(take(FORM, b"status=x&expires_in=59", None).unwrap_err(), ExpiresInError::TooSoon { min: 60 });
        assert_eq!(take(FORM, b"status=x&expires_in=soon", None).unwrap_err(), ExpiresInError::NotANumber);
        let t = take(FORM, b"status=x&expires_in=0", None).unwrap();
        assert_eq!((t.body.as_ref(), t.params.expires_in), (&b"status=x"[..], None));
        let t = take(FORM, b"status=untouched%21", None).unwrap();
        assert_eq!((t.body.as_ref(), t.params.expires_in), (&b"status=untouched%21"[..], None));
        // Rack decodes keys, and a POST without Content-Type is a form to it.
        assert_eq!(take(FORM, b"status=x&expires%5Fin=120", None).unwrap().params.expires_in, Some(120));
        assert_eq!(take(None, b"status=x&expires_in=120", None).unwrap().params.expires_in, Some(120));
        // Shapes that cannot be applied are refused, not ignored.
        for body in [&b"status=x&expires_in[]=120"[..], b"status=x&expires_in[a]=1", b"status=x&[expires_in]=120"] {
            assert_eq!(
                take_create_params(&BodyKind::Form, &Bytes::from_static(body), None, 60).unwrap_err(),
                ExpiresInError::NotANumber
            );
        }
        let t = take(FORM, b"status=x&in_reply_to_id=0123", None).unwrap();
        assert_eq!(t.params.references, ["0123"]);
    }

    #[test]
    fn the_query_string_counts_too() {
        let t = take(FORM, b"status=x", Some("expires_in=90&a=1")).unwrap();
        assert_eq!((t.params.expires_in, t.query.as_deref()), (Some(90), Some("a=1")));
        assert_eq!(take(FORM, b"status=x", Some("a=1")).unwrap().query, None, "untouched when absent");
        assert_eq!(take(FORM, b"status=x&expires_in=90", Some("expires_in=90")).unwrap().params.expires_in, Some(90));
        assert_eq!(
            take(FORM, b"status=x&expires_in=91", Some("expires_in=90")).unwrap_err(),
            ExpiresInError::Conflicting
        );
        // Rack 2 splits the query on `;` too: never read one way and forwarded to the other.
        assert_eq!(take(FORM, b"status=x", Some("a=1;expires_in=90")).unwrap_err(), ExpiresInError::Ambiguous);
        assert_eq!(take(FORM, b"status=x", Some("a=1;in_reply_to_id=7")).unwrap().params.references, ["7"]);
    }

    #[test]
    fn json_bodies_under_every_json_type() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "text/x-json",
            "application/jsonrequest",
            "application/activity+json",
            "application/ld+json; profile=x",
            "application/jrd+json",
        ] {
            let t = take(Some(ct), br#"{"status":"hi","expires_in":120,"quoted_status_id":"7"}"#, None).unwrap();
            assert_eq!(t.params.expires_in, Some(120), "{ct}");
            assert_eq!(t.params.references, ["7"]);
            let v: serde_json::Value = serde_json::from_slice(&t.body).unwrap();
            assert_eq!(v, serde_json::json!({"status": "hi", "quoted_status_id": "7"}));
        }
        let json = Some("application/json");
        assert_eq!(take(json, br#"{"status":"hi","expires_in":"90"}"#, None).unwrap().params.expires_in, Some(90));
        assert!(matches!(take(json, br#"{"status":"hi","expires_in":30}"#, None), Err(ExpiresInError::TooSoon { .. })));
        for bad in [&br#"{"expires_in":-5}"#[..], br#"{"expires_in":1.5}"#, br#"{"expires_in":[60]}"#] {
            assert_eq!(
                take_create_params(&BodyKind::Json, &Bytes::from_static(bad), None, 60).unwrap_err(),
                ExpiresInError::NotANumber
            );
        }
        assert!(matches!(take(json, b"{not json", None), Err(ExpiresInError::BadBody(_))));
        assert_eq!(take(json, br#"[{"expires_in":60}]"#, None).unwrap().params.expires_in, None, "_json to Rails");
        assert_eq!(kind(Some("text/plain")), BodyKind::Other);
        // Rails reads the media type up to `;` or `,`: one reader for the whole crate.
        for ct in ["application/json, text/plain", "application/json,text/plain; charset=utf-8"] {
            let t = take(Some(ct), br#"{"status":"hi","spoiler_text":"cw","expires_in":120}"#, None).unwrap();
            assert_eq!(
                (t.params.expires_in, t.params.text.as_str(), t.params.spoiler_text.as_str()),
                (Some(120), "hi", "cw")
            );
        }
        assert_eq!(
            take(Some("application/x-www-form-urlencoded, text/plain"), b"status=x&expires_in=90", None)
                .unwrap()
                .params
                .expires_in,
            Some(90)
        );
    }

    #[test]
    fn multipart_bodies() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"expires_in\"\r\n\r\n3600\r\n--XyZ\r\nContent-Disposition: form-data; name=\"visibility\"\r\n\r\ndirect\r\n--XyZ--\r\n";
        for ct in [
            "multipart/form-data; boundary=XyZ",
            "multipart/mixed; boundary=\"XyZ\"",
            "MULTIPART/related; BOUNDARY=XyZ",
        ] {
            let t = take(Some(ct), body, None).unwrap();
            assert_eq!(t.params.expires_in, Some(3600), "{ct}");
            assert_eq!(
                String::from_utf8(t.body.to_vec()).unwrap(),
                "--XyZ\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"visibility\"\r\n\r\ndirect\r\n--XyZ--\r\n"
            );
        }
        // First part, unquoted name.
        let first = b"--B\r\nContent-Disposition: form-data; name=expires_in\r\n\r\n120\r\n--B\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nx\r\n--B--\r\n";
        let t = take(Some("multipart/form-data; boundary=B"), first, None).unwrap();
        assert_eq!(t.params.expires_in, Some(120));
        assert_eq!(&t.body[..], b"--B\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nx\r\n--B--\r\n");
        // Untouched when absent; refused when present in a shape that cannot be applied.
        let plain = b"--B\r\nContent-Disposition: form-data; name=\"status\"; filename=\"a\"\r\n\r\nx\r\n--B--\r\n";
        assert_eq!(&take(Some("multipart/form-data; boundary=B"), plain, None).unwrap().body[..], &plain[..]);
        let as_file =
            b"--B\r\nContent-Disposition: form-data; name=\"expires_in\"; filename=\"e\"\r\n\r\n60\r\n--B--\r\n";
        assert_eq!(
            take(Some("multipart/form-data; boundary=B"), as_file, None).unwrap_err(),
            ExpiresInError::NotANumber
        );
        let starred = b"--B\r\nContent-Disposition: form-data; name*=UTF-8''expires_in\r\n\r\n60\r\n--B--\r\n";
        assert!(matches!(
            take(Some("multipart/form-data; boundary=B"), starred, None),
            Err(ExpiresInError::BadBody(_))
        ));
        let broken = b"expires_in=60";
        assert!(matches!(take(Some("multipart/form-data; boundary=B"), broken, None), Err(ExpiresInError::BadBody(_))));
        let only = b"--B\r\nContent-Disposition: form-data; name=\"expires_in\"\r\n\r\n60\r\n--B--\r\n";
        let t = take(Some("multipart/form-data; boundary=B"), only, None).unwrap();
        assert_eq!((t.params.expires_in, &t.body[..]), (Some(60), &b"--B--\r\n"[..]));
    }

    #[test]
    fn rack_key_names() {
        for yes in ["expires_in", "expires_in[]", "expires_in[x]", "[expires_in]", "expires_in]"] {
            assert!(names_expires_in(yes), "{yes}");
        }
        for no in ["expires_inx", "poll[expires_in]", "xexpires_in", ""] {
            assert!(!names_expires_in(no), "{no}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(hidden_status_code("/api/v1/statuses/1"), http::StatusCode::NOT_FOUND);
        assert_eq!(hidden_status_code("/users/a/statuses/1"), http::StatusCode::GONE);
        assert_eq!(hidden_status_code("/@a/1"), http::StatusCode::GONE);
    }
}
