//! The shield's own reads of the instance, on loopback: the members' `following`
//! collections ([`super::follows`]), numeric account and status ids
//! ([`super::accounts`]) and the instance's domain blocks ([`super::domains`]).
//!
//! These go straight to the upstream, not through the pipeline, with the instance's own
//! `Host` and without `X-Forwarded-For` (Mastodon safelists loopback requests from its
//! throttles). Answers are capped and time-limited: a slow instance delays a shield's
//! knowledge, never a delivery.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use super::ShieldError;
use crate::proxy::OnBehalfOf;

/// A document larger than this is not one the shield asked for.
const MAX_BYTES: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a read came back with.
#[derive(Debug)]
pub enum Answer {
    Json(Value),
    /// The instance answered with this status (404: no such thing; 401/403: not public).
    Status(u16),
}

#[derive(Clone)]
pub struct InstanceReader {
    client: Client<HttpConnector, Empty<Bytes>>,
    upstream: http::uri::Authority,
}

impl InstanceReader {
    pub fn new(upstream: http::uri::Authority) -> InstanceReader {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        InstanceReader { client: Client::builder(TokioExecutor::new()).set_host(false).build(connector), upstream }
    }

    /// GETs `path_and_query` as `host` would be asked for it, accepting `accept`.
    pub async fn get(
        &self,
        path_and_query: &str,
        host: &str,
        accept: &'static str,
        behalf: OnBehalfOf,
    ) -> Result<Answer, ShieldError> {
        Ok(self.get_with(path_and_query, host, accept, None, behalf).await?.0)
    }

    /// Like [`InstanceReader::get`], with a bearer token (the admin API), and the answer's
    /// `Link` header (pagination).
    pub async fn get_with(
        &self,
        path_and_query: &str,
        host: &str,
        accept: &'static str,
        bearer: Option<&str>,
        behalf: OnBehalfOf,
    ) -> Result<(Answer, Option<String>), ShieldError> {
        let fail = |e: String| ShieldError::Instance(format!("{path_and_query}: {e}"));
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.upstream.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut req = Request::get(uri)
            .header(header::HOST, host)
            .header(header::ACCEPT, accept)
            // Mastodon in production redirects plain HTTP to https unless told otherwise.
            .header("x-forwarded-proto", "https");
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut req = req.body(Empty::new()).map_err(|e| fail(e.to_string()))?;
        behalf.apply(req.headers_mut());
        let fetch = async {
            let resp = self.client.request(req).await.map_err(|e| fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Ok((Answer::Status(resp.status().as_u16()), None));
            }
            let link = resp.headers().get(header::LINK).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map(|v| (Answer::Json(v), link)).map_err(|e| fail(e.to_string()))
        };
        tokio::time::timeout(TIMEOUT, fetch).await.map_err(|_| fail("timed out".into()))?
    }
}
