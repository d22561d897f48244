//! The pipeline stage: every file in every request is scrubbed before the instance sees
//! it, on any route but the inbox, whatever shape it arrives in.
//!
//! Sniff, don't trust: the shape is decided the way Rails and Rack decide it ([`body`]),
//! and then every byte the instance could store as a file is judged by its content:
//! - the query string (Rails merges it into `params`): `data:` URIs;
//! - any `multipart/*` body: every part, whatever its name, filename (`filename*=`
//!   included) or declared type, and `data:` URIs in text parts ([`multipart`]);
//! - JSON (every type Rails parses as JSON) and form bodies: `data:` URIs at any depth,
//!   re-encoded under the same header so the request still works ([`json`], [`form`]);
//! - any other body whose first bytes are media, and every `image/*`, `video/*`,
//!   `audio/*` body (which must be media pavise can scrub).
//!
//! Federation deliveries (`RouteClass::Inbox`) are signed JSON and are never touched:
//! changing one byte would break their signature. A multipart body there is refused
//! (415): no server delivers one, and Rack would still write its file parts, unread by
//! pavise, to the instance's temp dir when Rails reads the params. A request with no body and no query
//! string costs two checks.
//!
//! A refused file ends the request with 422 and a Mastodon-style `{"error": ...}` that
//! says why; a body pavise cannot read (an unparseable `multipart/*` type, a compressed
//! body) gets 400 or 415; past a part or temp-space cap, 413. In every case nothing of
//! that request reaches the instance.
//!
//! [`body`]: super::body
//! [`multipart`]: super::multipart
//! [`json`]: super::json
//! [`form`]: super::form

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body::{Body as _, Frame, SizeHint};

use super::{
    MediaMetrics,
    body::{BodyKind, encoding_refusal},
    datauri::{self, Content},
    multipart::{MultipartError, Scrubber, Segment, TextBody, held_in_memory, segments_body},
    spill::{HEAD, RequestMem, Spooled},
    text::Charset,
};
use crate::{
    config::Config,
    proxy::{
        Body, BoxError, Flow, ProxyError, Request, RequestCtx, Route, RouteClass, Stage, StageFuture,
        error::json_error, full,
    },
};

pub struct MediaStage {
    scrubber: Scrubber,
    /// Whether pseudonyms tell clients apart (not in `drop` mode), so that each gets its
    /// share of the spooling budgets.
    per_client: bool,
}

type Parts = http::request::Parts;

impl MediaStage {
    /// Prepares `<data_dir>/media-tmp` (emptied of anything a crash left behind).
    pub fn new(config: &Config) -> std::io::Result<MediaStage> {
        Ok(MediaStage {
            scrubber: Scrubber::new(config.file.media.clone(), &config.file.data_dir)?,
            per_client: config.file.client_ip.mode != crate::config::ClientIpMode::Drop,
        })
    }

    pub fn metrics(&self) -> Arc<MediaMetrics> {
        self.scrubber.metrics.clone()
    }

    async fn handle(&self, ctx: &RequestCtx, req: Request) -> Result<Flow, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if let Some(query) = parts.uri.query() {
            match self.scrubber.rewrite_text_now(query.as_bytes(), TextBody::Form) {
                Ok(None) => {}
                Ok(Some(new)) => parts.uri = with_query(&parts.uri, &new)?,
                Err(e) => return refusal(e),
            }
        }
        if body.is_end_stream() {
            return Ok(Flow::Continue(Request::from_parts(parts, body)));
        }
        if let Some(why) = encoding_refusal(&parts.headers) {
            return Ok(Flow::Respond(json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, why)));
        }
        let kind = BodyKind::of(&parts.headers);
        let (boundary, subtype) = match kind {
            BodyKind::Multipart { boundary, subtype } => (boundary, subtype),
            BodyKind::Unreadable(why) => return Err(ProxyError::BadRequest(why.to_owned())),
            kind => {
                // One body is at most one file, whatever the route.
                let mem = self.scrubber.request(self.client(ctx), true);
                return self.single(parts, body, kind, mem).await;
            }
        };
        // Parts go to temp files only where the instance takes uploads; elsewhere a
        // multipart body is judged in memory, and a large one is refused.
        let mut mem = self.scrubber.request(self.client(ctx), takes_uploads(&ctx.route));
        match self.scrubber.rewrite_multipart(body, &boundary, &subtype, &mut mem).await {
            Ok(r) => {
                for (field, format, report) in &r.files {
                    tracing::debug!(
                        field,
                        format = format.name(),
                        removed = report.removed.len(),
                        bytes = report.bytes_removed(),
                        "scrubbed upload"
                    );
                }
                Ok(forward(parts, r.segments, r.len, Some(&r.content_type), mem))
            }
            Err(e) => refusal(e),
        }
    }

    fn client(&self, ctx: &RequestCtx) -> Option<std::net::IpAddr> {
        self.per_client.then_some(ctx.pseudonym)
    }

    /// A body that is one thing: media, JSON, a form, or something else.
    async fn single(&self, parts: Parts, body: Body, kind: BodyKind, mut mem: RequestMem) -> Result<Flow, ProxyError> {
        let (head, body) = match peek(body).await {
            Ok(p) => p,
            Err(e) => return refusal(e),
        };
        let media = matches!(datauri::content_of(&head, Charset::Utf8), Content::Media(_) | Content::Refused(_));
        if media || kind == BodyKind::DeclaredMedia {
            return match self.scrubber.scrub_body(body, &mut mem).await {
                Ok(done) => {
                    tracing::debug!(
                        format = done.format.name(),
                        removed = done.report.removed.len(),
                        "scrubbed raw upload"
                    );
                    let len = done.segment.len();
                    Ok(forward(parts, vec![done.segment], len, None, mem))
                }
                Err(e) => refusal(e),
            };
        }
        let text = match kind {
            BodyKind::Json => TextBody::Json,
            BodyKind::Form => TextBody::Form,
            _ => return Ok(Flow::Continue(Request::from_parts(parts, body))),
        };
        let spooled = match self.scrubber.collect(body, u64::MAX, &mut mem).await {
            Ok(s) => s,
            Err(e) => return refusal(e),
        };
        match self.scrubber.rewrite_text(&spooled, text).await {
            Ok(Some(new)) => {
                let len = new.len() as u64;
                mem.replace(held_in_memory(&spooled), len);
                drop(spooled);
                Ok(forward(parts, vec![Segment::Mem(Bytes::from(new))], len, None, mem))
            }
            Ok(None) => {
                let len = spooled.len();
                let segment = match spooled {
                    Spooled::Mem(v) => Segment::Mem(v.into_bytes()),
                    Spooled::File(f, n, _) => Segment::File(f, n),
                };
                Ok(forward(parts, vec![segment], len, None, mem))
            }
            Err(e) => refusal(e),
        }
    }
}

/// Whether the instance takes file uploads on this route: media, avatar and header,
/// the web UI's profile, imports and admin forms (branding, emoji, domain-block imports).
pub fn takes_uploads(route: &Route) -> bool {
    let path = route.path.as_str();
    route.class == RouteClass::MediaUpload || path.starts_with("/settings/") || path.starts_with("/admin/")
}

/// The request with its new body, framed by an exact `Content-Length`; the memory it
/// holds stays charged until the body has gone.
fn forward(mut parts: Parts, segments: Vec<Segment>, len: u64, content_type: Option<&str>, mem: RequestMem) -> Flow {
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        parts.headers.insert(header::CONTENT_TYPE, ct);
    }
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let body = if len == 0 { full(Bytes::new()) } else { segments_body(segments, Some(mem.into_charge())) };
    Flow::Continue(Request::from_parts(parts, body))
}

/// The one mapping from a rewrite's failure to what the client is told.
fn refusal(e: MultipartError) -> Result<Flow, ProxyError> {
    let respond = |status, msg: &str| Ok(Flow::Respond(json_error(status, msg)));
    match e {
        MultipartError::Refused { field, source } => {
            // A field name is the client's text (a form key may even be the data: URI).
            let field: String = match field.char_indices().nth(64) {
                Some((cut, _)) => format!("{}…", &field[..cut]),
                None => field,
            };
            tracing::info!(field, reason = source.reason(), "upload refused");
            let msg = format!("The file in \"{field}\" was refused by the privacy relay: {source}");
            respond(StatusCode::UNPROCESSABLE_ENTITY, &msg)
        }
        MultipartError::Body(guard) => Err(guard),
        MultipartError::TooMany(msg) => respond(StatusCode::PAYLOAD_TOO_LARGE, &msg),
        MultipartError::Exhausted(e) if e.is_transient() => {
            tracing::warn!(error = %e, "memory for waiting bodies is short");
            let mut resp = json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            Ok(Flow::Respond(resp))
        }
        MultipartError::Exhausted(e) => {
            tracing::warn!(error = %e, "media spooling cap reached");
            respond(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        MultipartError::Encoding(msg) => respond(StatusCode::UNSUPPORTED_MEDIA_TYPE, &msg),
        MultipartError::Framing(msg) => Err(ProxyError::BadRequest(msg)),
        MultipartError::NoRandomness => Err(ProxyError::Internal("no random source for a multipart boundary".into())),
        MultipartError::Io(e) => Err(ProxyError::Internal(format!("media temp file: {e}"))),
    }
}

/// `uri` with its query replaced.
fn with_query(uri: &http::Uri, query: &[u8]) -> Result<http::Uri, ProxyError> {
    let mut pq = Vec::with_capacity(uri.path().len() + 1 + query.len());
    pq.extend_from_slice(uri.path().as_bytes());
    pq.push(b'?');
    pq.extend_from_slice(query);
    let mut p = uri.clone().into_parts();
    p.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq))
            .map_err(|e| ProxyError::Internal(format!("rewritten query: {e}")))?,
    );
    http::Uri::from_parts(p).map_err(|e| ProxyError::Internal(format!("rewritten query: {e}")))
}

/// Reads the first bytes of a body (enough to sniff) and gives them back in front of the
/// rest, so a body that is not media still streams through.
async fn peek(mut body: Body) -> Result<(Vec<u8>, Body), MultipartError> {
    use http_body_util::BodyExt as _;
    let mut head = Vec::new();
    let mut frames = VecDeque::new();
    while head.len() < HEAD {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    head.extend_from_slice(&data[..data.len().min(HEAD - head.len())]);
                }
                frames.push_back(frame);
            }
            Some(Err(e)) => return Err(body_error(e)),
        }
    }
    Ok((head, crate::proxy::boxed(Prepend { frames, rest: body })))
}

fn body_error(e: BoxError) -> MultipartError {
    super::multipart::body_error(&*e)
}

/// Frames already read, then the rest of the body.
struct Prepend {
    frames: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Prepend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

impl Stage for MediaStage {
    fn name(&self) -> &'static str {
        "media"
    }

    fn on_request<'a>(&'a self, ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        Box::pin(async move {
            // Signed deliveries are never changed; a request with nothing to read passes.
            if ctx.route.class == RouteClass::Inbox {
                let multipart =
                    matches!(BodyKind::of(req.headers()), BodyKind::Multipart { .. } | BodyKind::Unreadable(_));
                if multipart && !req.body().is_end_stream() {
                    let why = "deliveries to an inbox are JSON; a multipart body is not accepted";
                    return Ok(Flow::Respond(json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, why)));
                }
                return Ok(Flow::Continue(req));
            }
            if req.uri().query().is_none() && req.body().is_end_stream() {
                return Ok(Flow::Continue(req));
            }
            // What is spooled in memory (up to the spill threshold) is charged to the
            // relay's body budget too, like every body a stage holds (proxy::budget).
            let req = req.map(|body| ctx.hold_body(body, self.scrubber.config.spill_threshold.0));
            self.handle(ctx, req).await
        })
    }
}
