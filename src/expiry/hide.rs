//! The response phase of hiding: which answers may embed a post, and how one is filtered.
//!
//! Every answer that can carry a post — the client API (timelines, threads, search,
//! notifications, ...), ActivityPub documents, feeds, streaming — is looked at on its way
//! out, but only while the index of hidden posts has anything in it: with nothing hidden
//! (the normal case) an answer passes without a copy or a look. When something is hidden:
//!
//! - the body is read whole (capped: an answer too large to read is refused, `502`, never
//!   passed unread), decoded when the instance compressed it anyway (`gzip`, `deflate`;
//!   the request asked for none), and searched for any indexed id at all; only an answer
//!   that mentions one is parsed and filtered ([`super::filter`]);
//! - a filtered answer keeps its status and headers (`Link` pagination included, since it
//!   only names the page's edges), with a corrected `Content-Length` and no `ETag` (the
//!   instance's tag names the unfiltered body);
//! - an answer that *is* a hidden post becomes the deleted-post answer (`404` for the
//!   client API, `410 Gone` for federation and web pages).
//!
//! On the way in ([`prepare_request`]) such requests lose `Accept-Encoding` (puma does not
//! compress anyway, so nothing is lost), and, while anything is hidden, their conditional
//! headers: a client's cached copy from before a deadline must not be confirmed by a `304`.

use std::io::Read as _;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use super::{
    filter::{self, Filtered},
    index::HiddenIndex,
};
use crate::{
    proxy::contract::{ProxyError, Request, Response, RouteClass, error::json_error, full, route::Route},
    store::now_ms,
};

/// Which answers a request may get that can carry a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Nothing that embeds posts (uploads, sign-in, inbox deliveries, assets).
    None,
    /// JSON or feeds, read whole.
    Document,
    /// A long-lived stream (SSE), filtered event by event; WebSocket frames are filtered in
    /// the tunnel ([`super::ws`]).
    Streaming,
}

impl Surface {
    pub fn of(route: &Route) -> Surface {
        match route.class {
            RouteClass::Streaming => Surface::Streaming,
            RouteClass::Api | RouteClass::StatusRead | RouteClass::ActivityPubObject => Surface::Document,
            RouteClass::Web => {
                let feed = matches!(route.path.format(), Some("rss" | "atom" | "json" | "xml"));
                let mut segments = route.path.segments();
                let page = match segments.next() {
                    Some(first) => first.starts_with('@') || first == "users" || first == "tags",
                    None => false,
                };
                if feed || page { Surface::Document } else { Surface::None }
            }
            RouteClass::Inbox | RouteClass::StatusCreate | RouteClass::MediaUpload | RouteClass::Auth => Surface::None,
        }
    }
}

/// The request side: ask for an uncompressed answer; while anything is hidden, never a
/// `304` for a copy the client cached before.
pub fn prepare_request(req: &mut Request, index: &HiddenIndex) {
    let headers = req.headers_mut();
    headers.remove(header::ACCEPT_ENCODING);
    if !index.is_empty() {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        headers.remove(header::IF_MATCH);
        headers.remove(header::IF_RANGE);
        headers.remove(header::RANGE);
    }
}

/// What kind of document an answer is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MastodonJson,
    ActivityPub,
    Feed,
}

fn kind(resp: &Response, route: &Route) -> Option<Kind> {
    let ct = resp.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match ct.as_str() {
        "application/activity+json" | "application/ld+json" => Some(Kind::ActivityPub),
        "application/json" | "text/json" | "text/x-json" => {
            // Mastodon serves ActivityPub as activity+json, but a path outside the client
            // API answering plain JSON is read as ActivityPub too (its shapes are URLs).
            if route.path.as_str().starts_with("/api/") { Some(Kind::MastodonJson) } else { Some(Kind::ActivityPub) }
        }
        "application/rss+xml" | "application/atom+xml" | "application/xml" | "text/xml" => Some(Kind::Feed),
        _ if ct.ends_with("+json") => Some(Kind::ActivityPub),
        _ => None,
    }
}

/// The answer for a post that is hidden: what the instance answers for a deleted one.
pub fn hidden_answer(route: &Route) -> Response {
    if route.path.as_str().starts_with("/api/") {
        json_error(StatusCode::NOT_FOUND, "Record not found")
    } else {
        json_error(StatusCode::GONE, "Gone")
    }
}

/// Filters one document answer (see the module docs). `limit` caps what is read.
pub async fn filter_document(
    resp: Response,
    route: &Route,
    index: &HiddenIndex,
    limit: usize,
) -> Result<(Response, FilterOutcome), ProxyError> {
    // Nothing hidden; an error; or no body at all (a `HEAD`): nothing to look at.
    if index.is_empty()
        || !resp.status().is_success()
        || resp.status() == StatusCode::NO_CONTENT
        || http_body::Body::is_end_stream(resp.body())
    {
        return Ok((resp, FilterOutcome::NotLooked));
    }
    let Some(kind) = kind(&resp, route) else { return Ok((resp, FilterOutcome::NotLooked)) };
    let encoding = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "identity");
    if let Some(enc) = &encoding
        && !matches!(enc.as_str(), "gzip" | "x-gzip" | "deflate")
    {
        tracing::warn!(encoding = %enc, "expiry: an answer came in an encoding pavise cannot read; refused");
        return Err(ProxyError::Internal(
            "the instance's answer could not be checked for expired posts (unknown Content-Encoding)".into(),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    let Some(raw) = collect_capped(body, limit).await else {
        return Err(ProxyError::Internal(
            "the instance's answer was too large (or broke off) to be checked for expired posts".into(),
        ));
    };
    let bytes = match &encoding {
        Some(enc) => {
            let decoded = decode(enc, &raw, limit).map_err(|e| {
                ProxyError::Internal(format!("the instance's answer could not be decoded to check it: {e}"))
            })?;
            parts.headers.remove(header::CONTENT_ENCODING);
            Bytes::from(decoded)
        }
        None => raw,
    };
    let rebuilt = |mut parts: http::response::Parts, bytes: Bytes| {
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        http::Response::from_parts(parts, full(bytes))
    };
    if !index.mentions_any(&bytes) {
        return Ok((rebuilt(parts, bytes), FilterOutcome::Clean));
    }
    let hidden = index.hidden_at(now_ms());
    let filtered = match kind {
        Kind::MastodonJson => filter::mastodon(&bytes, &hidden),
        Kind::ActivityPub => filter::activitypub(&bytes, &hidden),
        Kind::Feed => Ok(filter::rss(&bytes, &hidden)),
    };
    match filtered {
        Ok(Filtered::Untouched) => Ok((rebuilt(parts, bytes), FilterOutcome::Clean)),
        Ok(Filtered::Rewritten(out)) => {
            parts.headers.remove(header::ETAG);
            parts.headers.remove(header::LAST_MODIFIED);
            Ok((rebuilt(parts, Bytes::from(out)), FilterOutcome::Removed))
        }
        Ok(Filtered::Hidden) => Ok((hidden_answer(route), FilterOutcome::WholeHidden)),
        // It mentions a hidden id and cannot be read: never pass it unread.
        Err(e) => {
            Err(ProxyError::Internal(format!("the instance's answer could not be checked for expired posts: {e}")))
        }
    }
}

/// The whole body, or `None` when it is over `limit` or breaks off.
pub async fn collect_capped(mut body: crate::proxy::contract::Body, limit: usize) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out.freeze())
}

/// What filtering one answer did (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Nothing hidden, or not a document that can carry posts.
    NotLooked,
    /// Read, and nothing in it was hidden.
    Clean,
    /// Hidden posts were cut out of it.
    Removed,
    /// It was itself a hidden post.
    WholeHidden,
}

fn decode(encoding: &str, raw: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let limit = limit as u64 + 1;
    match encoding {
        "deflate" => {
            // "deflate" is zlib-wrapped by the RFC, raw deflate by some servers: try both.
            let mut zlib = Vec::new();
            match flate2::read::ZlibDecoder::new(raw).take(limit).read_to_end(&mut zlib) {
                Ok(_) => out = zlib,
                Err(_) => {
                    flate2::read::DeflateDecoder::new(raw).take(limit).read_to_end(&mut out)?;
                }
            }
        }
        _ => {
            flate2::read::MultiGzDecoder::new(raw).take(limit).read_to_end(&mut out)?;
        }
    }
    if out.len() as u64 >= limit {
        return Err(std::io::Error::other("decoded answer over the limit"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::Method;
    use std::io::Write as _;

    const H: &str = "110000000000000001";

    fn status(id: &str) -> String {
        format!(r#"{{"id":"{id}","uri":"u","visibility":"public","reblog":null}}"#)
    }

    fn answer(ct: &str, body: Vec<u8>, encoding: Option<&str>) -> Response {
        let mut r = http::Response::new(full(body));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        r.headers_mut().insert(header::ETAG, HeaderValue::from_static("W/\"x\""));
        r.headers_mut().insert(
            header::LINK,
            HeaderValue::from_static("<https://i.example/api/v1/timelines/home?max_id=1>; rel=\"next\""),
        );
        if let Some(e) = encoding {
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        r
    }

    async fn body(r: Response) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn timelines_lose_hidden_posts_keep_links_and_get_a_true_length() {
        let index = HiddenIndex::default();
        index.insert(H, 0);
        let route = Route::classify(&Method::GET, "/api/v1/timelines/home", None);
        let timeline = format!("[{},{}]", status("5"), status(H));
        let (r, outcome) =
            filter_document(answer("application/json; charset=utf-8", timeline.into(), None), &route, &index, 1 << 20)
                .await
                .unwrap();
        assert_eq!(outcome, FilterOutcome::Removed);
        assert!(r.headers().get(header::LINK).is_some() && r.headers().get(header::ETAG).is_none());
        let len: usize = r.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
        let text = body(r).await;
        assert_eq!((text.as_str(), len), (format!("[{}]", status("5")).as_str(), text.len()));

        // Compressed anyway: decoded, filtered, sent plain.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(format!("[{}]", status(H)).as_bytes()).unwrap();
        let (r, _) =
            filter_document(answer("application/json", gz.finish().unwrap(), Some("gzip")), &route, &index, 1 << 20)
                .await
                .unwrap();
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body(r).await, "[]");
        // Unreadable encodings and bodies over the cap are refused, never passed unread.
        let r = filter_document(answer("application/json", b"x".to_vec(), Some("br")), &route, &index, 1 << 20).await;
        assert!(r.is_err());
        let r = filter_document(answer("application/json", vec![b' '; 100], None), &route, &index, 10).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn a_hidden_post_itself_is_answered_as_deleted_and_nothing_hidden_costs_nothing() {
        let index = HiddenIndex::default();
        let route = Route::classify(&Method::GET, "/users/bob/statuses/77/activity", None);
        let (r, outcome) =
            filter_document(answer("application/activity+json", b"{}".to_vec(), None), &route, &index, 1 << 20)
                .await
                .unwrap();
        assert_eq!(outcome, FilterOutcome::NotLooked, "an empty index: not even read");
        assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
        index.insert(H, 0);
        let announce = format!(r#"{{"type":"Announce","object":"https://i.example/users/alice/statuses/{H}"}}"#);
        let (r, outcome) =
            filter_document(answer("application/activity+json", announce.into(), None), &route, &index, 1 << 20)
                .await
                .unwrap();
        assert_eq!((outcome, r.status()), (FilterOutcome::WholeHidden, StatusCode::GONE));
        let route = Route::classify(&Method::GET, "/api/v1/statuses/50", None);
        let boost = format!(r#"{{"id":"50","uri":"u","visibility":"public","reblog":{}}}"#, status(H));
        let (r, _) =
            filter_document(answer("application/json", boost.into(), None), &route, &index, 1 << 20).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (r, outcome) = filter_document(answer("image/png", H.into(), None), &route, &index, 1 << 20).await.unwrap();
        assert_eq!((outcome, r.status()), (FilterOutcome::NotLooked, StatusCode::OK));
    }

    #[test]
    fn surfaces() {
        let s = |m: Method, p: &str| Surface::of(&Route::classify(&m, p, None));
        assert_eq!(s(Method::GET, "/api/v1/timelines/home"), Surface::Document);
        assert_eq!(s(Method::GET, "/api/v1/streaming/user"), Surface::Streaming);
        assert_eq!(s(Method::GET, "/@alice.rss"), Surface::Document);
        assert_eq!(s(Method::GET, "/tags/x.rss"), Surface::Document);
        assert_eq!(s(Method::GET, "/users/alice/outbox"), Surface::Document);
        assert_eq!(s(Method::GET, "/packs/app.js"), Surface::None);
        assert_eq!(s(Method::POST, "/api/v2/media"), Surface::None);
        assert_eq!(s(Method::POST, "/inbox"), Surface::None);
    }
}
