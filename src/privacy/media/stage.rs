//! The pipeline stage: every file in every request body is scrubbed before the instance
//! sees it, on any route but the inbox.
//!
//! Covered: each file part of a `multipart/form-data` body (media v1/v2 `file` and
//! `thumbnail`, media update, `update_credentials` avatar/header, the web profile form,
//! admin emoji, and whatever other server software posts), and every raw `image/*`,
//! `video/*`, `audio/*` body. Federation deliveries (`RouteClass::Inbox`) are signed
//! JSON and are never touched: changing one byte would break their signature.
//!
//! A refused file ends the request with 422 and a Mastodon-style `{"error": ...}` that
//! says why; nothing of that request reaches the instance.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};

use super::{
    MediaMetrics,
    multipart::{MultipartError, Scrubber, segments_body},
};
use crate::{
    config::Config,
    proxy::{Flow, ProxyError, Request, RequestCtx, RouteClass, Stage, StageFuture, error::json_error, full},
};

pub struct MediaStage {
    scrubber: Scrubber,
}

impl MediaStage {
    /// Prepares `<data_dir>/media-tmp` (emptied of anything a crash left behind).
    pub fn new(config: &Config) -> std::io::Result<MediaStage> {
        Ok(MediaStage { scrubber: Scrubber::new(config.file.media.clone(), &config.file.data_dir)? })
    }

    pub fn metrics(&self) -> Arc<MediaMetrics> {
        self.scrubber.metrics.clone()
    }

    async fn handle(&self, req: Request) -> Result<Flow, ProxyError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let (mut parts, body) = req.into_parts();
        let result = if content_type.starts_with("multipart/form-data") {
            // Boundaries are case-sensitive: parse the header as sent, not lowercased.
            let original = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let boundary = match multer::parse_boundary(original) {
                Ok(b) => b,
                Err(e) => return Ok(Flow::Respond(ProxyError::BadRequest(format!("multipart: {e}")).into_response())),
            };
            self.scrubber.rewrite_multipart(body, &boundary).await.map(|r| {
                for (field, format, report) in &r.files {
                    tracing::debug!(
                        field,
                        format = format.name(),
                        removed = report.removed.len(),
                        bytes = report.bytes_removed(),
                        "scrubbed upload"
                    );
                }
                (r.segments, r.len, Some(r.content_type))
            })
        } else {
            self.scrubber.scrub_body(body).await.map(|done| {
                tracing::debug!(
                    format = done.format.name(),
                    removed = done.report.removed.len(),
                    "scrubbed raw upload"
                );
                let len = done.segment.len();
                (vec![done.segment], len, None)
            })
        };
        match result {
            Ok((segments, len, content_type)) => {
                if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
                    parts.headers.insert(header::CONTENT_TYPE, ct);
                }
                parts.headers.remove(header::TRANSFER_ENCODING);
                parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                let body = if len == 0 { full(bytes::Bytes::new()) } else { segments_body(segments) };
                Ok(Flow::Continue(Request::from_parts(parts, body)))
            }
            Err(MultipartError::Refused { field, source }) => {
                tracing::info!(field, reason = source.reason(), "upload refused");
                let msg = format!("The file in \"{field}\" was refused by the privacy relay: {source}");
                Ok(Flow::Respond(json_error(StatusCode::UNPROCESSABLE_ENTITY, &msg)))
            }
            Err(MultipartError::BodyCap(limit)) => Err(ProxyError::BodyTooLarge { limit }),
            Err(MultipartError::Framing(msg)) => Err(ProxyError::BadRequest(msg)),
            Err(MultipartError::Io(e)) => Err(ProxyError::Internal(format!("media temp file: {e}"))),
        }
    }
}

/// Whether this request's body is one pavise must scrub.
fn wants_scrub(ctx: &RequestCtx, req: &Request) -> bool {
    if ctx.route.class == RouteClass::Inbox {
        return false;
    }
    let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ct = ct.trim_start().to_ascii_lowercase();
    ["multipart/form-data", "image/", "video/", "audio/"].iter().any(|p| ct.starts_with(p))
}

impl Stage for MediaStage {
    fn name(&self) -> &'static str {
        "media"
    }

    fn on_request<'a>(&'a self, ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        Box::pin(async move {
            if !wants_scrub(ctx, &req) {
                return Ok(Flow::Continue(req));
            }
            self.handle(req).await
        })
    }
}
