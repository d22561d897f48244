//! The [`Scrubber`]: what every scrub in the relay shares (the limits, the temp dir, the
//! working-memory budget, the spooling budgets, the metrics), and the scrubs of a whole
//! body: a raw media body ([`Scrubber::scrub_body`]), the `data:` URIs of a JSON or
//! form body or a query string ([`Scrubber::rewrite_text`]). A multipart body is
//! rewritten part by part in [`super::multipart`].

use std::{io, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http_body_util::BodyDataStream;
use tokio::sync::Semaphore;

use super::{
    Format, MediaConfig, MediaError, MediaMetrics, Report, datauri, form, json,
    multipart::{MultipartError, Segment},
    spill::{Budgets, Limits, RequestMem, Spool, Spooled},
    text,
};
use crate::proxy::contract::Body;

/// What the relay shares between all scrubs: limits, the temp dir and the memory budget.
#[derive(Debug)]
pub struct Scrubber {
    pub config: MediaConfig,
    pub tmp_dir: PathBuf,
    /// Permits are KiB of scrub working memory.
    budget: Arc<Semaphore>,
    budget_kib: u32,
    /// Temp files, their bytes and the memory of waiting bodies: all requests', and
    /// each client's share.
    pub budgets: Arc<Budgets>,
    pub metrics: Arc<MediaMetrics>,
}

/// A scrubbed file: its format, what was removed, and where its bytes are.
#[derive(Debug)]
pub struct Done {
    pub format: Format,
    pub report: Report,
    pub segment: Segment,
}

/// The JSON and form encodings of [`Scrubber::rewrite_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextBody {
    Json,
    Form,
}

/// Bodies below this are rewritten on the request's own task, larger ones off it.
const INLINE_TEXT: usize = 64 * 1024;

impl Scrubber {
    /// Creates the temp dir and empties it: files left there by a crash are uploads.
    pub fn new(config: MediaConfig, data_dir: &std::path::Path) -> io::Result<Scrubber> {
        let tmp_dir = data_dir.join("media-tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        for entry in std::fs::read_dir(&tmp_dir)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let budget_kib = u32::try_from((config.memory_budget.0 / 1024).max(1)).unwrap_or(u32::MAX);
        let largest = config.max_image.0.max(config.max_video.0);
        let mut max_disk = config.tmp_max_bytes.0;
        if let Some(free) = super::spill::free_space(&tmp_dir)
            && free / 2 < max_disk
        {
            // The data dir is shared (with the store, often with Postgres): never plan to
            // fill more than half of what is free.
            max_disk = (free / 2).max(largest).min(max_disk);
            tracing::warn!(
                free_mib = free >> 20,
                tmp_max_mib = config.tmp_max_bytes.0 >> 20,
                capped_mib = max_disk >> 20,
                "media.tmp_max_bytes is more than half the free space in data_dir; temp uploads capped lower"
            );
        }
        let limits = Limits {
            max_files: config.tmp_max_files,
            max_disk,
            client_files: config.tmp_client_files.min(config.tmp_max_files),
            client_disk: config.tmp_client_bytes.0.min(max_disk),
            max_mem: config.spool_memory.0,
            client_mem: config.spool_client_memory.0.min(config.spool_memory.0),
            disk_floor: largest,
        };
        let budgets = Budgets::new(limits, &tmp_dir);
        Ok(Scrubber {
            metrics: Arc::new(MediaMetrics::with_budgets(budgets.clone())),
            budgets,
            config,
            tmp_dir,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        })
    }

    /// The largest file of any kind, before its format is known.
    pub(super) fn max_file(&self) -> u64 {
        self.config.max_image.0.max(self.config.max_video.0)
    }

    /// One request's spooling rules: `client` is its share of the budgets (`None`: only
    /// the relay's caps); `may_spill`, whether its parts may go to temp files.
    pub fn request(&self, client: Option<std::net::IpAddr>, may_spill: bool) -> RequestMem {
        RequestMem::new(
            self.budgets.account(client),
            self.config.spill_threshold.0,
            self.config.min_spill.0,
            may_spill,
            &self.tmp_dir,
        )
    }

    /// Holds budget permits for `bytes` of working memory (capped at the whole budget).
    pub(super) async fn permits(&self, bytes: u64) -> io::Result<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX).min(self.budget_kib);
        self.budget.acquire_many(kib).await.map_err(|_| io::Error::other("scrubber closed"))
    }

    /// Scrubs one spooled file, holding budget permits for its working memory.
    pub async fn scrub(&self, spooled: Spooled) -> Result<Done, MediaError> {
        let result = self.scrub_inner(spooled).await;
        match &result {
            Ok(done) => self.metrics.scrubbed(done.format, done.report.bytes_removed()),
            Err(e) => self.metrics.refused(e),
        }
        result
    }

    async fn scrub_inner(&self, spooled: Spooled) -> Result<Done, MediaError> {
        let format = match super::sniff(spooled.head()) {
            Err(MediaError::UnknownFormat) => match text::media_in_text(spooled.head()) {
                Some(what) => return Err(MediaError::Unsupported(what)),
                None => return Err(MediaError::UnknownFormat),
            },
            other => other?,
        };
        let (limit, kind) = if format.is_image() {
            (self.config.max_image, "image")
        } else {
            (self.config.max_video, "video or audio file")
        };
        if spooled.len() > limit.0 {
            return Err(MediaError::TooLarge { kind, limit });
        }
        // In-memory scrubs hold input and output; in-place ones only the moov/meta.
        let need = match (&spooled, format) {
            (Spooled::File(..), f) if f.in_place() => 16 << 20,
            _ => spooled.len().saturating_mul(2) + 4096,
        };
        let _permit = self.permits(need).await?;
        match spooled {
            Spooled::Mem(bytes) => {
                let scrubbed = tokio::task::spawn_blocking(move || super::scrub(&bytes))
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))??;
                Ok(Done {
                    format: scrubbed.format,
                    report: scrubbed.report,
                    segment: Segment::Mem(Bytes::from(scrubbed.bytes)),
                })
            }
            Spooled::File(file, _, _) => {
                let (mut file, result) = tokio::task::spawn_blocking(move || {
                    let r = super::scrub_file(file.path());
                    (file, r)
                })
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
                let (format, report) = result?;
                let len = std::fs::metadata(file.path())?.len();
                file.resized(len);
                Ok(Done { format, report, segment: Segment::File(file, len) })
            }
        }
    }

    /// Takes a whole body in: memory up to the spill threshold, then a counted temp file.
    pub async fn collect(&self, body: Body, cap: u64, req: &mut RequestMem) -> Result<Spooled, MultipartError> {
        use futures_util::StreamExt as _;
        let mut stream = BodyDataStream::new(body);
        let mut spool = Spool::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| super::multipart::body_error(&*e))?;
            spool.write(&chunk, req).await?;
            if spool.len() > cap {
                let e = MediaError::TooLarge { kind: "file", limit: crate::units::Size(cap) };
                self.metrics.refused(&e);
                return Err(MultipartError::Refused { field: "(body)".into(), source: e });
            }
        }
        Ok(spool.finish().await?)
    }

    /// Takes a raw media body whole (spooling it), scrubs it, returns its new bytes.
    pub async fn scrub_body(&self, body: Body, req: &mut RequestMem) -> Result<Done, MultipartError> {
        let spooled = self.collect(body, self.max_file(), req).await?;
        if spooled.is_empty() {
            return Ok(Done { format: Format::Jpeg, report: Report::default(), segment: Segment::Mem(Bytes::new()) });
        }
        let held = held_in_memory(&spooled);
        let done =
            self.scrub(spooled).await.map_err(|source| MultipartError::Refused { field: "(body)".into(), source })?;
        req.replace(held, held_in_memory_segment(&done.segment));
        Ok(done)
    }

    /// Scrubs the media of every `data:` URI in a JSON or form body (or a query string);
    /// `Ok(None)` when nothing changed. The cheap pre-check runs first, on the request's
    /// own task; only a body that may hold a `data:` URI is decoded.
    pub async fn rewrite_text(&self, spooled: &Spooled, kind: TextBody) -> Result<Option<Vec<u8>>, MultipartError> {
        if let Spooled::Mem(v) = spooled
            && (v.len() <= INLINE_TEXT || !may_hold(kind, v))
        {
            return self.rewrite_text_now(v, kind);
        }
        let _permit = self.permits(spooled.len().saturating_mul(4)).await?;
        let bytes = spooled.bytes().await?;
        if !may_hold(kind, &bytes) {
            return Ok(None);
        }
        self.rewrite_text_blocking(bytes, kind).await
    }

    async fn rewrite_text_blocking(&self, bytes: Vec<u8>, kind: TextBody) -> Result<Option<Vec<u8>>, MultipartError> {
        let (max, metrics) = (self.max_file(), self.metrics.clone());
        tokio::task::spawn_blocking(move || rewrite_text_with(&bytes, kind, max, &metrics))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// The same for small text (a query string, a small body), on the caller's task.
    pub fn rewrite_text_now(&self, bytes: &[u8], kind: TextBody) -> Result<Option<Vec<u8>>, MultipartError> {
        if !may_hold(kind, bytes) {
            return Ok(None);
        }
        rewrite_text_with(bytes, kind, self.max_file(), &self.metrics)
    }
}

/// Bytes of a spooled value that sit in memory (and are charged to the request).
pub(crate) fn held_in_memory(spooled: &Spooled) -> u64 {
    match spooled {
        Spooled::Mem(v) => v.len() as u64,
        Spooled::File(..) => 0,
    }
}

pub(super) fn held_in_memory_segment(segment: &Segment) -> u64 {
    match segment {
        Segment::Mem(b) => b.len() as u64,
        Segment::File(..) => 0,
    }
}

fn may_hold(kind: TextBody, bytes: &[u8]) -> bool {
    match kind {
        TextBody::Json => json::may_hold_data_uri(bytes),
        TextBody::Form => form::may_hold_data_uri(bytes),
    }
}

/// The rewrite itself: each `data:` URI found is scrubbed (and counted) or refused.
fn rewrite_text_with(
    bytes: &[u8],
    kind: TextBody,
    max: u64,
    metrics: &MediaMetrics,
) -> Result<Option<Vec<u8>>, MultipartError> {
    let mut scrub = |text: &[u8]| match datauri::scrub_value(text, max) {
        Ok(Some(r)) => {
            metrics.scrubbed(r.format, r.report.bytes_removed());
            Ok(Some(r.text))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            metrics.refused(&e);
            Err(e)
        }
    };
    match kind {
        TextBody::Json => json::rewrite(bytes, &mut scrub).map_err(|e| match e {
            json::JsonError::Malformed(what) => MultipartError::Framing(format!("malformed JSON: {what}")),
            json::JsonError::Refused { key, source } => MultipartError::Refused { field: key, source },
        }),
        TextBody::Form => {
            form::rewrite(bytes, &mut scrub).map_err(|e| MultipartError::Refused { field: e.key, source: e.source })
        }
    }
}
