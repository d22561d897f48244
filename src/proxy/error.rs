//! The proxy's error boundary and its one mapping to HTTP responses.
//!
//! Every failure a client can cause or see ends here: one status code, one short
//! Mastodon-style JSON body (`{"error": "..."}`, what Mastodon's own clients display),
//! never a panic and never the raw client address.

use http::{HeaderValue, StatusCode, header};

use super::{Response, full};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the instance is not reachable right now")]
    UpstreamUnavailable(#[source] hyper_util::client::legacy::Error),
    #[error("the instance did not answer in time")]
    UpstreamTimeout,
    #[error("request body larger than {limit} bytes for this endpoint")]
    BodyTooLarge { limit: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{reason}")]
    Unprocessable { reason: String },
    #[error("{0}")]
    Refused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::Refused(_) => StatusCode::FORBIDDEN,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response {
        json_error(self.status(), &self.to_string())
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

#[cfg(test)]
mod tests {
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
}
