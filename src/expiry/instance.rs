//! The scheduler's own small client to the instance's API: re-fetch a status, delete it,
//! page an account's statuses (sweep), look for a scheduled post's publication. It does
//! not go through the pipeline (no stage has any business with pavise's own requests) and
//! it reads Mastodon's rate-limit headers.
//!
//! It also carries one kind of client request: a status creation, which the expiry stage
//! hands over whole ([`Instance::forward`]) so that the exchange belongs to a task of its
//! own and a client hanging up cannot cancel what pavise learns from the answer.
//!
//! # Whose requests these are ([`OnBehalfOf`])
//! Mastodon's Rack::Attack safelists loopback requests without `X-Forwarded-For` from
//! every throttle and IP block, so each request says whom it is for:
//! - **the client's** (its pseudonym in `X-Forwarded-For`, via [`Instance::for_client`]):
//!   the detached status creation itself ([`Instance::forward`]), and what that exchange
//!   asks besides — deleting a post whose expiry could not be recorded, the account of a
//!   scheduled post. A client decides how many of these there are.
//! - **pavise's own housekeeping** (no `X-Forwarded-For`, the default): the scheduler's
//!   re-fetches and deletions, confirmations that deleted posts are gone, archive sweeps
//!   (started by a member's request, but one per member and rule set, paged and paced on
//!   `X-RateLimit-*` by pavise), publication look-ups of scheduled posts, the admin's
//!   `pavise expiry` commands. Their number is pavise's, bounded and paced by it.
//!
//! Requests carry the `Host` the post was created through (Mastodon answers only to its
//! own domain) and `X-Forwarded-Proto: https` (so a production instance does not redirect
//! the plain loopback request to https).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{observe::facts_from_status, policy::PostFacts, seal::Token};
use crate::{instance::OnBehalfOf, store::UnixMs};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("the instance has no such status (404)")]
    NotFound,
    #[error("the instance refused the token ({0}): revoked or expired")]
    Unauthorized(u16),
    #[error("the instance refused: {0}")]
    Forbidden(String),
    #[error("rate limited by the instance (429)")]
    RateLimited(RateInfo),
    #[error("the instance answered {0}")]
    Server(u16),
    #[error("the instance is unreachable: {0}")]
    Unreachable(String),
    #[error("the instance did not answer within the timeout")]
    Timeout,
    #[error("the instance's answer was not a status: {0}")]
    BadBody(String),
}

impl InstanceError {
    /// Whether trying again later can help without anyone doing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, InstanceError::Server(_) | InstanceError::Unreachable(_) | InstanceError::Timeout)
    }
}

/// What `X-RateLimit-*` said: the budget of the throttle closest to its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset: Option<UnixMs>,
}

impl RateInfo {
    pub fn from_headers(headers: &HeaderMap) -> RateInfo {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        RateInfo {
            limit: get("x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: get("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset: get("x-ratelimit-reset").and_then(parse_reset),
        }
    }
}

/// Mastodon sends ISO 8601 with microseconds (`2026-11-26T14:30:00.000000Z`); some
/// servers send epoch seconds. Both are accepted.
pub fn parse_reset(v: &str) -> Option<UnixMs> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return Some((secs * 1000.0) as u64);
    }
    let t = humantime::parse_rfc3339_weak(v.trim_end_matches('Z')).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

/// The client, one per scheduler.
#[derive(Clone)]
pub struct Instance {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: http::uri::Authority,
    timeout: Duration,
    /// Whom its requests are for (see the module docs).
    behalf: OnBehalfOf,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("authority", &self.authority).finish_non_exhaustive()
    }
}

/// One response: status, rate-limit headers, body.
pub struct Answer {
    status: StatusCode,
    rate: RateInfo,
    body: Bytes,
}

/// How many ids one batch lookup carries (Mastodon's cap for `GET /api/v1/statuses`).
pub const BATCH_IDS: usize = 20;

/// The scheduled statuses the instance still holds for the token's account: (id, when).
pub type ScheduledList = Vec<(String, Option<UnixMs>)>;

impl Instance {
    /// Sends a client's request (its head already through the request stages, its body
    /// read whole) to the instance and reads the whole answer (capped at 4 MiB: a status
    /// creation's answer is one Status), waiting at most `timeout` for it. Hop-by-hop
    /// headers go both ways, as in the pipeline's own upstream.
    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(http::response::Parts, Bytes), InstanceError> {
        let path_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        parts.uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_query)
            .build()
            .map_err(|e| InstanceError::Unreachable(e.to_string()))?;
        parts.version = http::Version::HTTP_11;
        crate::proxy::contract::hop::strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.remove(header::EXPECT);
        self.behalf.apply(&mut parts.headers);
        parts.headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        let req = http::Request::from_parts(parts, Full::new(body));
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| InstanceError::Unreachable(e.to_string()))?;
            let (mut parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, 4 << 20)
                .collect()
                .await
                .map_err(|e| InstanceError::Unreachable(e.to_string()))?
                .to_bytes();
            crate::proxy::contract::hop::strip_hop_by_hop(&mut parts.headers, false);
            Ok::<_, InstanceError>((parts, body))
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| InstanceError::Timeout)?
    }

    /// The timeout for pavise's own requests (`expiry.request_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn new(authority: http::uri::Authority, timeout: Duration) -> Instance {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Instance { client, authority, timeout, behalf: OnBehalfOf::Housekeeping }
    }

    /// The same client, for requests one client's request caused: they carry its
    /// pseudonym, so the instance's throttles count them (see the module docs).
    pub fn for_client(&self, pseudonym: std::net::IpAddr) -> Instance {
        Instance { behalf: OnBehalfOf::Client(pseudonym), ..self.clone() }
    }

    async fn call(
        &self,
        method: Method,
        path_query: &str,
        host: Option<&str>,
        token: &Token,
    ) -> Result<Answer, InstanceError> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_query)
            .build()
            .map_err(|e| InstanceError::Unreachable(e.to_string()))?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host.unwrap_or(self.authority.as_str()))
            .header(header::ACCEPT, "application/json")
            .header("x-forwarded-proto", "https")
            .header(header::USER_AGENT, "pavise-expiry");
        let auth = http::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| InstanceError::Unauthorized(0))?;
        if let Some(headers) = req.headers_mut() {
            let mut auth = auth;
            auth.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, auth);
            self.behalf.apply(headers);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| InstanceError::Unreachable(e.to_string()))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| InstanceError::Unreachable(e.to_string()))?;
            let status = resp.status();
            let rate = RateInfo::from_headers(resp.headers());
            let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
                .collect()
                .await
                .map_err(|e| InstanceError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, InstanceError>(Answer { status, rate, body })
        };
        let answer = tokio::time::timeout(self.timeout, fut).await.map_err(|_| InstanceError::Timeout)??;
        match answer.status.as_u16() {
            200..=299 => Ok(answer),
            404 | 410 => Err(InstanceError::NotFound),
            401 => Err(InstanceError::Unauthorized(401)),
            403 => Err(InstanceError::Forbidden(error_text(&answer.body))),
            429 => Err(InstanceError::RateLimited(answer.rate)),
            code => Err(InstanceError::Server(code)),
        }
    }

    /// The status as its author sees it now (pinned, favourited, counts, tags).
    pub async fn status(&self, id: &str, host: Option<&str>, token: &Token) -> Result<PostFacts, InstanceError> {
        let a = self.call(Method::GET, &format!("/api/v1/statuses/{}", enc(id)), host, token).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| InstanceError::BadBody(e.to_string()))?;
        facts_from_status(&v).ok_or_else(|| InstanceError::BadBody("no id or account".into()))
    }

    /// The status's source (`text`, `spoiler_text`), to recognise a published post.
    pub async fn source(&self, id: &str, host: Option<&str>, token: &Token) -> Result<(String, String), InstanceError> {
        let a = self.call(Method::GET, &format!("/api/v1/statuses/{}/source", enc(id)), host, token).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| InstanceError::BadBody(e.to_string()))?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        Ok((text("text"), text("spoiler_text")))
    }

    /// The token's scheduled statuses (the instance publishes due ones as it lists them, or
    /// has already).
    pub async fn scheduled_statuses(&self, host: Option<&str>, token: &Token) -> Result<ScheduledList, InstanceError> {
        let a = self.call(Method::GET, "/api/v1/scheduled_statuses?limit=40", host, token).await?;
        let v: Vec<serde_json::Value> =
            serde_json::from_slice(&a.body).map_err(|e| InstanceError::BadBody(e.to_string()))?;
        Ok(v.iter()
            .filter_map(|s| {
                let id = s.get("id")?.as_str()?.to_owned();
                let at = s.get("scheduled_at").and_then(|t| t.as_str()).and_then(super::observe::parse_time);
                Some((id, at))
            })
            .collect())
    }

    /// One scheduled status: when it is due, or `None` once the instance no longer holds it
    /// (published, or cancelled).
    pub async fn scheduled_status(
        &self,
        id: &str,
        host: Option<&str>,
        token: &Token,
    ) -> Result<Option<Option<UnixMs>>, InstanceError> {
        match self.call(Method::GET, &format!("/api/v1/scheduled_statuses/{}", enc(id)), host, token).await {
            Ok(a) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&a.body).map_err(|e| InstanceError::BadBody(e.to_string()))?;
                Ok(Some(v.get("scheduled_at").and_then(|t| t.as_str()).and_then(super::observe::parse_time)))
            }
            Err(InstanceError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Which of `ids` (at most [`BATCH_IDS`]) the instance still serves, in one request
    /// (`GET /api/v1/statuses?id[]=...`, Mastodon 4.3+); `None` when it has no batch lookup.
    pub async fn present(
        &self,
        ids: &[String],
        host: Option<&str>,
        token: &Token,
    ) -> Result<Option<std::collections::HashSet<String>>, InstanceError> {
        let query: Vec<String> = ids.iter().take(BATCH_IDS).map(|id| format!("id[]={}", enc(id))).collect();
        let a = match self.call(Method::GET, &format!("/api/v1/statuses?{}", query.join("&")), host, token).await {
            Ok(a) => a,
            Err(InstanceError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(serde_json::Value::Array(found)) = serde_json::from_slice::<serde_json::Value>(&a.body) else {
            return Ok(None);
        };
        Ok(Some(found.iter().filter_map(|s| s.get("id")?.as_str().map(str::to_owned)).collect()))
    }

    /// Cancels a scheduled status (one pavise could not record, so it must not be published).
    pub async fn delete_scheduled(&self, id: &str, host: Option<&str>, token: &Token) -> Result<(), InstanceError> {
        self.call(Method::DELETE, &format!("/api/v1/scheduled_statuses/{}", enc(id)), host, token).await.map(|_| ())
    }

    /// Deletes the status; the instance federates the `Delete`.
    pub async fn delete(&self, id: &str, host: Option<&str>, token: &Token) -> Result<RateInfo, InstanceError> {
        Ok(self.call(Method::DELETE, &format!("/api/v1/statuses/{}", enc(id)), host, token).await?.rate)
    }

    /// The token's own account: (id, username).
    pub async fn verify_credentials(
        &self,
        host: Option<&str>,
        token: &Token,
    ) -> Result<(String, String), InstanceError> {
        let a = self.call(Method::GET, "/api/v1/accounts/verify_credentials", host, token).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| InstanceError::BadBody(e.to_string()))?;
        let id = v.get("id").and_then(|x| x.as_str()).ok_or_else(|| InstanceError::BadBody("no id".into()))?;
        let name =
            v.get("username").and_then(|x| x.as_str()).ok_or_else(|| InstanceError::BadBody("no username".into()))?;
        Ok((id.to_owned(), name.to_owned()))
    }

    /// One page (at most 40, Mastodon's cap) of an account's statuses older than `max_id`.
    pub async fn account_statuses(
        &self,
        account_id: &str,
        max_id: Option<&str>,
        host: Option<&str>,
        token: &Token,
    ) -> Result<(Vec<serde_json::Value>, RateInfo), InstanceError> {
        let mut path = format!("/api/v1/accounts/{}/statuses?limit=40", enc(account_id));
        if let Some(max) = max_id {
            path.push_str(&format!("&max_id={}", enc(max)));
        }
        let a = self.call(Method::GET, &path, host, token).await?;
        let page: Vec<serde_json::Value> =
            serde_json::from_slice(&a.body).map_err(|e| InstanceError::BadBody(e.to_string()))?;
        Ok((page, a.rate))
    }
}

/// RFC 3986 unreserved characters stay; everything else in an id is escaped.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "403".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reset_formats() {
        assert_eq!(parse_reset("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_reset("2023-11-14T22:13:20.000000Z"), Some(1_700_000_000_000));
        assert_eq!(parse_reset("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_reset("soon"), None);
    }
}
