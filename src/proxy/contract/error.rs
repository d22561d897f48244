//! The proxy's error boundary and its one mapping to HTTP responses.
//!
//! Two kinds of answer leave a stage. A deliberate one (a rate limit's 429, a deferral,
//! a hidden post's 404) is the stage's to write and goes out as [`super::Flow::Respond`].
//! A failure (the request cannot be read, passed on or served) is a [`ProxyError`], and
//! every failure reaches the client through [`ProxyError::into_response`], the one
//! mapping (rpxy's `http_result.rs`, pingora's `fail_to_proxy`): one status code, one
//! short Mastodon-style JSON body (`{"error": "..."}`, what Mastodon's own clients
//! display), never a panic and never the raw client address. The pipeline calls it at
//! its one boundary, so a stage returns the error and never builds the response itself.

use http::{HeaderValue, StatusCode, header};

use super::{BoxError, Response, budget::BodyMemoryFull, full};

/// Seconds a client is asked to wait when a cap is full: caps free up as requests end.
pub const BUSY_RETRY_AFTER: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the instance is not reachable right now")]
    UpstreamUnavailable(#[source] BoxError),
    #[error("the instance did not answer in time")]
    UpstreamTimeout,
    #[error("bad gateway: {0}")]
    UpstreamMisbehaved(&'static str),
    #[error("request body larger than {limit} bytes for this endpoint")]
    BodyTooLarge { limit: u64 },
    /// Past a cap other than the route's body size: parts per request, temp space.
    #[error("{0}")]
    TooLarge(String),
    #[error("the request body arrived too slowly")]
    BodyTooSlow,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request head no proxy may pass on (two `Host`s, an over-long method), refused
    /// on entry.
    #[error("{0}")]
    Malformed(&'static str),
    /// `CONNECT`, `TRACE`: no Rails route serves them and no relay may pass them on.
    #[error("this method is not served here")]
    MethodNotAllowed,
    /// A body pavise cannot read and so cannot vouch for (a compressed upload, a
    /// multipart delivery).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A file pavise refuses to pass on (it cannot scrub it).
    #[error("{reason}")]
    Unprocessable { reason: String },
    /// A cap is full (requests in flight, connections to the instance, WebSockets).
    #[error("too many {0} right now; retry shortly")]
    Busy(&'static str),
    /// Something the relay needs is short or failed for now (memory for waiting bodies,
    /// the store): the client may retry after `retry_after` seconds.
    #[error("{reason}")]
    Unavailable { reason: String, retry_after: u32 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamMisbehaved(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BodyTooLarge { .. } | ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadRequest(_) | ProxyError::Malformed(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::Busy(_) | ProxyError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The one mapping from a failure to what the client is told.
    pub fn into_response(self) -> Response {
        let mut resp = json_error(self.status(), &self.to_string());
        let headers = resp.headers_mut();
        match self {
            ProxyError::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER));
            }
            ProxyError::Unavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ProxyError::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
            }
            _ => {}
        }
        resp
    }
}

/// A Mastodon-style error response: `{"error": message}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The error a capped body yields once the client sends more than its route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body over the {0}-byte limit")]
pub(crate) struct BodyCapExceeded(pub u64);

/// The error a request body yields when the client sends it slower than
/// `public.min_body_rate` (the listener's body guard).
#[derive(Debug, thiserror::Error)]
#[error("request body slower than the minimum rate")]
pub(crate) struct BodyTooSlow;

/// A long form body on a method-sensitive route turned out to carry a `_method`
/// override (or one Rack versions read differently): the request is refused before
/// the instance has the whole body (see `proxy::method`).
#[derive(Debug, thiserror::Error)]
#[error(
    "a `_method` field in a form body of more than 64 KiB is not accepted on this route; send the request with its real method"
)]
pub(crate) struct LongFormOverride;

/// The first error of type `E` in `e`'s source chain, `e` included (linkerd's
/// `cause_ref`). A body guard's error reaches its reader bare, boxed in a body error,
/// wrapped by hyper (the upstream's send) or by multer (a multipart read): every reader
/// looks for it the same way, through the whole chain.
pub(crate) fn cause_ref<'a, E: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// Whether an error (anywhere in its source chain) is one of the request body's own
/// guards: the route's size cap (413), the minimum body rate (408), a full body budget
/// (503, or 413 for a body alone too large), a long form's `_method` (400). Every stage
/// that reads a body, and the upstream client, answer these the same way.
pub(crate) fn body_failure(e: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    if let Some(cap) = cause_ref::<BodyCapExceeded>(e) {
        return Some(ProxyError::BodyTooLarge { limit: cap.0 });
    }
    if cause_ref::<BodyTooSlow>(e).is_some() {
        return Some(ProxyError::BodyTooSlow);
    }
    if let Some(full) = cause_ref::<BodyMemoryFull>(e) {
        return Some(ProxyError::from(*full));
    }
    if let Some(refused) = cause_ref::<LongFormOverride>(e) {
        return Some(ProxyError::BadRequest(refused.to_string()));
    }
    None
}

/// A request body's read error as the relay's error: the client's own (413, 408, ...)
/// when one of the body guards stopped it, else a body that could not be read (400).
pub(crate) fn body_error(e: &BoxError) -> ProxyError {
    body_failure(&**e).unwrap_or_else(|| ProxyError::BadRequest("the request body could not be read".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_become_mastodon_style_json() {
        let resp = ProxyError::BodyTooLarge { limit: 10 }.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "request body larger than 10 bytes for this endpoint");
    }

    /// A guard's error is found wherever it sits in the chain, and answered the same way
    /// by every reader: bare, boxed in a body error, or wrapped (as hyper and multer do).
    #[test]
    fn body_guards_are_found_anywhere_in_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapper(#[source] BoxError);
        let cap: BoxError = Box::new(BodyCapExceeded(7));
        assert_eq!(body_error(&cap).status(), StatusCode::PAYLOAD_TOO_LARGE);
        let deep: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(BodyTooSlow)))));
        assert_eq!(body_error(&deep).status(), StatusCode::REQUEST_TIMEOUT);
        assert!(cause_ref::<BodyTooSlow>(&*deep).is_some());
        let full: BoxError = Box::new(Wrapper(Box::new(BodyMemoryFull::Busy)));
        assert_eq!(body_error(&full).status(), StatusCode::SERVICE_UNAVAILABLE);
        let long: BoxError = Box::new(Wrapper(Box::new(LongFormOverride)));
        assert_eq!(body_error(&long).status(), StatusCode::BAD_REQUEST);
        // Not a guard: the body could not be read.
        let other: BoxError = Box::new(Wrapper("connection reset".into()));
        assert!(body_failure(&*other).is_none());
        assert_eq!(body_error(&other).to_string(), "bad request: the request body could not be read");
    }

    #[test]
    fn the_mapping_adds_what_each_failure_tells_the_client() {
        let resp = ProxyError::MethodNotAllowed.into_response();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(resp.headers()[header::ALLOW].to_str().unwrap().contains("GET"));
        let resp = ProxyError::Unavailable { reason: "try again later".into(), retry_after: 30 }.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "30");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn a_full_cap_is_a_503_with_retry_after() {
        let resp = ProxyError::Busy("requests to the instance").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }
}
