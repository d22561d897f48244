//! Enforcement at the edge, before the instance is asked anything.
//!
//! - Once a post's deadline has passed it is hidden at once, even while its deletion is
//!   still queued (rate limits, a slow instance): `410 Gone` for its ActivityPub object and
//!   HTML page (other servers drop their copy on 410), `404` for the client API (what
//!   Mastodon answers for a deleted status).
//! - A client may ask for a per-post expiry with `expires_in` (seconds), as Akkoma clients
//!   do. Mastodon does not know the parameter, so pavise reads it and strips it from the
//!   body before forwarding; values under the minimum get a Mastodon-style 422.

use bytes::Bytes;

/// Why a status creation body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiresInError {
    #[error("expires_in must be a whole number of seconds")]
    NotANumber,
    #[error("expires_in must be at least {min} seconds")]
    TooSoon { min: u64 },
    #[error("the request body is not valid {0}")]
    BadBody(&'static str),
}

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
    /// Anything else (multipart, none): left untouched.
    Other,
}

impl BodyKind {
    pub fn from_content_type(ct: Option<&str>) -> BodyKind {
        let ct = ct.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match ct.as_str() {
            "application/x-www-form-urlencoded" => BodyKind::Form,
            "application/json" => BodyKind::Json,
            _ if ct.ends_with("+json") => BodyKind::Json,
            _ => BodyKind::Other,
        }
    }
}

/// Reads and removes `expires_in` from a status-creation body. Returns the body to forward
/// (unchanged when the parameter is absent) and the requested seconds, if any. An empty
/// value or `0` means "no per-post expiry", as in Akkoma.
pub fn take_expires_in(kind: BodyKind, body: &Bytes, min: u64) -> Result<(Bytes, Option<u64>), ExpiresInError> {
    let check = |secs: u64| if secs < min { Err(ExpiresInError::TooSoon { min }) } else { Ok(Some(secs)) };
    match kind {
        BodyKind::Other => Ok((body.clone(), None)),
        BodyKind::Form => {
            let mut found: Option<String> = None;
            let mut kept = url::form_urlencoded::Serializer::new(String::new());
            let mut any = false;
            for (k, v) in url::form_urlencoded::parse(body) {
                if k == "expires_in" {
                    found = Some(v.into_owned());
                } else {
                    kept.append_pair(&k, &v);
                    any = true;
                }
            }
            let Some(raw) = found else { return Ok((body.clone(), None)) };
            let secs = parse_secs(raw.trim())?;
            let rest = if any { kept.finish() } else { String::new() };
            Ok((Bytes::from(rest), secs.map(check).transpose()?.flatten()))
        }
        BodyKind::Json => {
            if body.is_empty() {
                return Ok((body.clone(), None));
            }
            let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ExpiresInError::BadBody("JSON"))?;
            let Some(obj) = v.as_object_mut() else { return Ok((body.clone(), None)) };
            let Some(raw) = obj.remove("expires_in") else { return Ok((body.clone(), None)) };
            let secs = match &raw {
                serde_json::Value::Number(n) => match n.as_u64() {
                    Some(s) => Some(s).filter(|s| *s > 0),
                    None if n.as_i64().is_some() => return Err(ExpiresInError::NotANumber),
                    None => return Err(ExpiresInError::NotANumber),
                },
                serde_json::Value::String(s) => parse_secs(s.trim())?,
                serde_json::Value::Null => None,
                _ => return Err(ExpiresInError::NotANumber),
            };
            let out = serde_json::to_vec(&v).map_err(|_| ExpiresInError::BadBody("JSON"))?;
            Ok((Bytes::from(out), secs.map(check).transpose()?.flatten()))
        }
    }
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

    #[test]
    fn form_bodies() {
        let b = Bytes::from_static(b"status=hi+there&visibility=direct&expires_in=3600&media_ids%5B%5D=1");
        let (rest, secs) = take_expires_in(BodyKind::Form, &b, 60).unwrap();
        assert_eq!(secs, Some(3600));
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&rest).into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("status".into(), "hi there".into()),
                ("visibility".into(), "direct".into()),
                ("media_ids[]".into(), "1".into())
            ]
        );
        let b = Bytes::from_static(b"status=x&expires_in=59");
        assert_eq!(take_expires_in(BodyKind::Form, &b, 60).unwrap_err(), ExpiresInError::TooSoon { min: 60 });
        let b = Bytes::from_static(b"status=x&expires_in=soon");
        assert_eq!(take_expires_in(BodyKind::Form, &b, 60).unwrap_err(), ExpiresInError::NotANumber);
        let b = Bytes::from_static(b"status=x&expires_in=0");
        let (rest, secs) = take_expires_in(BodyKind::Form, &b, 60).unwrap();
        assert_eq!((rest.as_ref(), secs), (&b"status=x"[..], None));
        let b = Bytes::from_static(b"status=untouched%21");
        assert_eq!(take_expires_in(BodyKind::Form, &b, 60).unwrap(), (b.clone(), None));
    }

    #[test]
    fn json_bodies() {
        let b = Bytes::from_static(br#"{"status":"hi","expires_in":120}"#);
        let (rest, secs) = take_expires_in(BodyKind::Json, &b, 60).unwrap();
        assert_eq!(secs, Some(120));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&rest).unwrap(), serde_json::json!({"status": "hi"}));
        let b = Bytes::from_static(br#"{"status":"hi","expires_in":"90"}"#);
        assert_eq!(take_expires_in(BodyKind::Json, &b, 60).unwrap().1, Some(90));
        let b = Bytes::from_static(br#"{"status":"hi","expires_in":30}"#);
        assert!(matches!(take_expires_in(BodyKind::Json, &b, 60), Err(ExpiresInError::TooSoon { .. })));
        let b = Bytes::from_static(br#"{"status":"hi","expires_in":-5}"#);
        assert_eq!(take_expires_in(BodyKind::Json, &b, 60).unwrap_err(), ExpiresInError::NotANumber);
        let b = Bytes::from_static(br#"{"status":"hi","expires_in":1.5}"#);
        assert_eq!(take_expires_in(BodyKind::Json, &b, 60).unwrap_err(), ExpiresInError::NotANumber);
        let b = Bytes::from_static(b"{not json");
        assert!(matches!(take_expires_in(BodyKind::Json, &b, 60), Err(ExpiresInError::BadBody(_))));
        assert_eq!(BodyKind::from_content_type(Some("application/json; charset=utf-8")), BodyKind::Json);
        assert_eq!(BodyKind::from_content_type(Some("multipart/form-data; boundary=x")), BodyKind::Other);
    }

    #[test]
    fn codes() {
        assert_eq!(hidden_status_code("/api/v1/statuses/1"), http::StatusCode::NOT_FOUND);
        assert_eq!(hidden_status_code("/users/a/statuses/1"), http::StatusCode::GONE);
        assert_eq!(hidden_status_code("/@a/1"), http::StatusCode::GONE);
    }
}
