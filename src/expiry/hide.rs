//! The response phase of hiding: which answers may embed a post, and how one is filtered.
//!
//! Every answer that can carry a post — the client API (timelines, threads, search,
//! notifications, ...), ActivityPub documents, feeds, the server-rendered pages that list
//! statuses, streaming — is looked at on its way out, but only while the index of hidden
//! posts has anything in it: with nothing hidden (the normal case) an answer passes without
//! a copy or a look. When something is hidden:
//!
//! - the body is read whole (capped: an answer too large to read is refused, `502`, never
//!   passed unread), decoded when the instance compressed it anyway (`gzip`, `deflate`;
//!   the request asked for none), and searched for any indexed id at all; only an answer
//!   that mentions one is parsed and filtered ([`super::filter`]);
//! - a filtered answer keeps its status and headers, with a corrected `Content-Length` and
//!   no `ETag` (the instance's tag names the unfiltered body);
//! - its `Link` pagination keeps working without naming a hidden post: a cursor
//!   (`max_id`, `min_id`, `since_id`) that names one is moved to the nearest post the page
//!   still shows, which pages exactly as before (everything between was hidden); a page
//!   that filters to nothing at all is followed to the instance's next page (a few hops),
//!   so a client does not take an empty page for the end ([`rewrite_links`]);
//! - an answer that *is* a hidden post becomes the deleted-post answer (`404` for the
//!   client API, `410 Gone` for federation and web pages); a server-rendered page that
//!   names one (a filter's statuses, a moderator's view of an account) is refused.
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
    instance::Instance,
};
use crate::{
    privacy::media::body::media_type,
    proxy::contract::{
        ProxyError, Request, Response, RouteClass,
        error::json_error,
        full,
        route::{CanonicalPath, Route, status_id_of},
    },
    store::{UnixMs, now_ms},
};

/// Server-rendered pages that list statuses by content (the first path segment): a
/// filter's statuses (`/filters/:id/statuses`), moderators' pages, the remote-interaction
/// and appeal pages.
const STATUS_PAGES: [&str; 5] = ["filters", "admin", "authorize_interaction", "interact", "disputes"];
/// How many further pages are fetched for a page that filters to nothing.
const MAX_FOLLOW: usize = 4;

/// Which answers a request may get that can carry a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Nothing that embeds posts (uploads, sign-in, inbox deliveries, assets).
    None,
    /// JSON, feeds or a page, read whole.
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
                    Some(first) => {
                        first.starts_with('@') || first == "users" || first == "tags" || STATUS_PAGES.contains(&first)
                    }
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
    /// A server-rendered page listing statuses.
    Page,
}

fn kind(resp: &Response, route: &Route) -> Option<Kind> {
    let ct = media_type(resp.headers().get(header::CONTENT_TYPE)?.as_bytes());
    match ct.as_str() {
        "application/activity+json" | "application/ld+json" => Some(Kind::ActivityPub),
        "application/json" | "text/json" | "text/x-json" => {
            // Mastodon serves ActivityPub as activity+json, but a path outside the client
            // API answering plain JSON is read as ActivityPub too (its shapes are URLs).
            if route.path.as_str().starts_with("/api/") { Some(Kind::MastodonJson) } else { Some(Kind::ActivityPub) }
        }
        "application/rss+xml" | "application/atom+xml" | "application/xml" | "text/xml" => Some(Kind::Feed),
        "text/html" if route.path.segments().next().is_some_and(|s| STATUS_PAGES.contains(&s)) => Some(Kind::Page),
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

/// The request's head, kept while anything is hidden, so a page that filters to nothing
/// can be followed to the next one with the client's own credentials.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub headers: http::HeaderMap,
    pub path: CanonicalPath,
    pub query: Option<String>,
}

/// How to fetch a next page.
pub struct Follow<'a> {
    pub instance: &'a Instance,
    pub head: &'a RequestHead,
}

/// Filters one document answer (see the module docs). `limit` caps what is read.
pub async fn filter_document(
    resp: Response,
    route: &Route,
    index: &HiddenIndex,
    limit: usize,
    follow: Option<Follow<'_>>,
) -> Result<(Response, FilterOutcome), ProxyError> {
    let mut resp = resp;
    let mut hops = 0;
    loop {
        let (mut parts, bytes, outcome) = match read_and_filter(resp, route, index, limit).await? {
            Read::Passed(resp, outcome) => return Ok((resp, outcome)),
            Read::Hidden(resp) => return Ok((resp, FilterOutcome::WholeHidden)),
            Read::Filtered { parts, bytes, outcome } => (parts, bytes, outcome),
        };
        let emptied = outcome == FilterOutcome::Removed && is_empty_array(&bytes);
        if emptied
            && hops < MAX_FOLLOW
            && let Some(f) = &follow
            && let Some(next) = next_link(&parts.headers, &f.head.path)
        {
            match refetch(f, &next).await {
                Ok(r) => {
                    hops += 1;
                    resp = r;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiry: could not fetch the page after one that filtered to nothing")
                }
            }
        }
        let request_query = follow.as_ref().and_then(|f| f.head.query.as_deref());
        rewrite_links(&mut parts.headers, &bytes, index, now_ms(), request_query);
        let outcome = if hops > 0 { FilterOutcome::Removed } else { outcome };
        return Ok((rebuilt(parts, bytes), outcome));
    }
}

enum Read {
    /// Not looked at, or nothing in it hidden and nothing to rewrite: as it came (or
    /// decoded).
    Passed(Response, FilterOutcome),
    /// It was itself a hidden post.
    Hidden(Response),
    /// Read (and perhaps filtered): the bytes to send.
    Filtered { parts: http::response::Parts, bytes: Bytes, outcome: FilterOutcome },
}

async fn read_and_filter(resp: Response, route: &Route, index: &HiddenIndex, limit: usize) -> Result<Read, ProxyError> {
    // Nothing hidden; an error; or no body at all (a `HEAD`): nothing to look at.
    if index.is_empty()
        || !resp.status().is_success()
        || resp.status() == StatusCode::NO_CONTENT
        || http_body::Body::is_end_stream(resp.body())
    {
        return Ok(Read::Passed(resp, FilterOutcome::NotLooked));
    }
    let Some(kind) = kind(&resp, route) else { return Ok(Read::Passed(resp, FilterOutcome::NotLooked)) };
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
    if !index.mentions_any(&bytes) {
        return Ok(Read::Filtered { parts, bytes, outcome: FilterOutcome::Clean });
    }
    let now = now_ms();
    let hidden = index.hidden_at(now);
    let filtered = match kind {
        Kind::MastodonJson => filter::mastodon(&bytes, &hidden),
        Kind::ActivityPub => filter::activitypub(&bytes, &hidden),
        Kind::Feed => Ok(filter::rss(&bytes, &hidden)),
        Kind::Page => Ok(if index.names_hidden(&bytes, now) { Filtered::Hidden } else { Filtered::Untouched }),
    };
    match filtered {
        Ok(Filtered::Untouched) => Ok(Read::Filtered { parts, bytes, outcome: FilterOutcome::Clean }),
        Ok(Filtered::Rewritten(out)) => {
            parts.headers.remove(header::ETAG);
            parts.headers.remove(header::LAST_MODIFIED);
            Ok(Read::Filtered { parts, bytes: Bytes::from(out), outcome: FilterOutcome::Removed })
        }
        Ok(Filtered::Hidden) if kind == Kind::Page => Ok(Read::Hidden(json_error(
            StatusCode::NOT_FOUND,
            "This page shows a post that has expired; it is not available until the post is gone",
        ))),
        Ok(Filtered::Hidden) => Ok(Read::Hidden(hidden_answer(route))),
        // It mentions a hidden id and cannot be read: never pass it unread.
        Err(e) => {
            Err(ProxyError::Internal(format!("the instance's answer could not be checked for expired posts: {e}")))
        }
    }
}

fn rebuilt(mut parts: http::response::Parts, bytes: Bytes) -> Response {
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    http::Response::from_parts(parts, full(bytes))
}

/// Filters a whole Status answer pavise already holds (a creation's, an edit's): the
/// answer with hidden posts taken out, or `None` when it is (or carries) a hidden post
/// itself (answer as deleted).
pub fn filter_status_answer(bytes: &Bytes, index: &HiddenIndex) -> Option<Bytes> {
    if !index.mentions_any(bytes) {
        return Some(bytes.clone());
    }
    match filter::mastodon(bytes, &index.hidden_at(now_ms())) {
        Ok(Filtered::Untouched) => Some(bytes.clone()),
        Ok(Filtered::Rewritten(out)) => Some(Bytes::from(out)),
        Ok(Filtered::Hidden) | Err(_) => None,
    }
}

fn is_empty_array(bytes: &[u8]) -> bool {
    bytes.iter().filter(|b| !b.is_ascii_whitespace()).eq(b"[]".iter())
}

/// The entries of `Link` headers: (the whole entry, its URL, its `rel`).
fn link_entries(value: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        let url = rest[open + 1..open + close].to_owned();
        let after = &rest[open + close + 1..];
        let end = after.find('<').map_or(after.len(), |i| after[..i].rfind(',').unwrap_or(i));
        let params = &after[..end];
        let rel = params
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("rel="))
            .map(|r| r.trim_matches('"').to_ascii_lowercase())
            .next()
            .unwrap_or_default();
        out.push((rest[open..open + close + 1 + end].trim().trim_end_matches(',').trim().to_owned(), url, rel));
        rest = &after[end..];
    }
    out
}

/// The path and query of the instance's `rel="next"` link, when it pages the same path.
fn next_link(headers: &http::HeaderMap, path: &CanonicalPath) -> Option<String> {
    for value in headers.get_all(header::LINK) {
        for (_, url, rel) in link_entries(value.to_str().ok()?) {
            if rel != "next" {
                continue;
            }
            let path_query = match url.find("://") {
                Some(i) => url[i + 3..].find('/').map_or("/".to_owned(), |j| url[i + 3 + j..].to_owned()),
                None => url.clone(),
            };
            let link_path = path_query.split('?').next().unwrap_or("/");
            if CanonicalPath::new(link_path).as_str() == path.as_str() {
                return Some(path_query);
            }
        }
    }
    None
}

/// Fetches `path_query` from the instance with the client's request head.
async fn refetch(f: &Follow<'_>, path_query: &str) -> Result<Response, ProxyError> {
    let mut req = http::Request::builder().method(http::Method::GET).uri(path_query);
    if let Some(headers) = req.headers_mut() {
        *headers = f.head.headers.clone();
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
    }
    let (parts, ()) = req.body(()).map_err(|e| ProxyError::Internal(e.to_string()))?.into_parts();
    let (rparts, rbody) = f
        .instance
        .forward(parts, Bytes::new(), f.instance.timeout())
        .await
        .map_err(|e| ProxyError::Internal(format!("fetching the next page: {e}")))?;
    Ok(http::Response::from_parts(rparts, full(rbody)))
}

/// The cursor parameters of Mastodon's pagination links.
const CURSORS: [&str; 3] = ["max_id", "min_id", "since_id"];

/// Moves pagination cursors off hidden posts (see the module docs): `max_id` to the last
/// post the page still shows, `min_id`/`since_id` to the first; with none left, a `prev`
/// link keeps the request's own lower bound and a `next` link goes. Returns whether
/// anything changed.
pub fn rewrite_links(
    headers: &mut http::HeaderMap,
    body: &[u8],
    index: &HiddenIndex,
    now: UnixMs,
    request_query: Option<&str>,
) -> bool {
    if index.is_empty() || !headers.contains_key(header::LINK) {
        return false;
    }
    let names_hidden = |v: &str| status_id_of(v).is_some_and(|id| index.is_hidden(&id, now));
    let values: Vec<String> =
        headers.get_all(header::LINK).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let hidden_cursor = values
        .iter()
        .flat_map(|v| link_entries(v))
        .any(|(_, url, _)| cursor_pairs(&url).iter().any(|(k, v)| CURSORS.contains(&k.as_str()) && names_hidden(v)));
    if !hidden_cursor {
        return false;
    }
    let kept = page_ids(body);
    let mut rewritten = Vec::new();
    for value in &values {
        let mut entries = Vec::new();
        for (entry, url, rel) in link_entries(value) {
            let Some((base, query)) = url.split_once('?') else {
                entries.push(entry);
                continue;
            };
            let mut dropped = false;
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let key = crate::proxy::contract::route::form_decode(k.as_bytes())
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    let value = crate::proxy::contract::route::form_decode(v.as_bytes())
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    let (Some(key), Some(value)) = (key, value) else { return pair.to_owned() };
                    if !CURSORS.contains(&key.as_str()) || !names_hidden(&value) {
                        return pair.to_owned();
                    }
                    let replacement = if key == "max_id" {
                        kept.last().cloned()
                    } else {
                        kept.first().cloned().or_else(|| {
                            request_query.and_then(|q| crate::auth::query_param(q, &key)).filter(|v| !names_hidden(v))
                        })
                    };
                    match replacement {
                        Some(id) => format!("{k}={id}"),
                        None => {
                            dropped = true;
                            pair.to_owned()
                        }
                    }
                })
                .collect();
            if dropped {
                tracing::debug!(rel = %rel, "expiry: a pagination link with nothing left to page from was dropped");
                continue;
            }
            let rest = &entry[entry.find('>').map_or(entry.len(), |i| i + 1)..];
            entries.push(format!("<{base}?{}>{rest}", pairs.join("&")));
        }
        rewritten.push(entries.join(", "));
    }
    headers.remove(header::LINK);
    for value in rewritten.into_iter().filter(|v| !v.is_empty()) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(header::LINK, v);
        }
    }
    true
}

fn cursor_pairs(url: &str) -> Vec<(String, String)> {
    url.split_once('?')
        .map(|(_, q)| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The `id`s of the elements of a top-level JSON array, in order.
fn page_ids(body: &[u8]) -> Vec<String> {
    let Ok(super::json::Node::Array { items, .. }) = super::json::parse(body) else { return Vec::new() };
    items.iter().filter_map(|i| i.get(body, "id").and_then(|id| id.as_str(body)).map(|s| s.into_owned())).collect()
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
        let (r, outcome) = filter_document(
            answer("application/json; charset=utf-8", timeline.into(), None),
            &route,
            &index,
            1 << 20,
            None,
        )
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
        let (r, _) = filter_document(
            answer("application/json", gz.finish().unwrap(), Some("gzip")),
            &route,
            &index,
            1 << 20,
            None,
        )
        .await
        .unwrap();
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body(r).await, "[]");
        // Unreadable encodings and bodies over the cap are refused, never passed unread.
        let r =
            filter_document(answer("application/json", b"x".to_vec(), Some("br")), &route, &index, 1 << 20, None).await;
        assert!(r.is_err());
        let r = filter_document(answer("application/json", vec![b' '; 100], None), &route, &index, 10, None).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn a_hidden_post_itself_is_answered_as_deleted_and_nothing_hidden_costs_nothing() {
        let index = HiddenIndex::default();
        let route = Route::classify(&Method::GET, "/users/bob/statuses/77/activity", None);
        let (r, outcome) =
            filter_document(answer("application/activity+json", b"{}".to_vec(), None), &route, &index, 1 << 20, None)
                .await
                .unwrap();
        assert_eq!(outcome, FilterOutcome::NotLooked, "an empty index: not even read");
        assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
        index.insert(H, 0);
        let announce = format!(r#"{{"type":"Announce","object":"https://i.example/users/alice/statuses/{H}"}}"#);
        let (r, outcome) =
            filter_document(answer("application/activity+json", announce.into(), None), &route, &index, 1 << 20, None)
                .await
                .unwrap();
        assert_eq!((outcome, r.status()), (FilterOutcome::WholeHidden, StatusCode::GONE));
        let route = Route::classify(&Method::GET, "/api/v1/statuses/50", None);
        let boost = format!(r#"{{"id":"50","uri":"u","visibility":"public","reblog":{}}}"#, status(H));
        let (r, _) = filter_document(answer("application/json", boost.into(), None), &route, &index, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (r, outcome) =
            filter_document(answer("image/png", H.into(), None), &route, &index, 1 << 20, None).await.unwrap();
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
