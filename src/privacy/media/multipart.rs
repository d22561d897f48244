//! Rewriting `multipart/form-data` (and raw media bodies) with every file scrubbed.
//!
//! The whole body is taken in before anything is forwarded, because a refusal must
//! mean that *nothing* reached the instance. Memory stays bounded anyway: each part is
//! spooled ([`Spool`]) in memory up to `spill_threshold` (per request) and to a temp
//! file in `<data_dir>/media-tmp` beyond it; file parts are capped at the instance's
//! limits; and every scrub holds permits of one shared [`Scrubber`] memory budget, so 20
//! concurrent 90 MB uploads wait for each other instead of costing 20 × 90 MB. Spooled
//! videos are patched in place on disk. The rewritten body is a list of [`Segment`]s
//! with an exact length, streamed to the instance; temp files are deleted when their
//! segment is dropped: after forwarding, on refusal, on a client abort, on any error.
//!
//! Parsing is `multer`'s; the serializer is ours (boundary, part headers, bytes).

use std::{io, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyDataStream, StreamBody};
use tempfile::NamedTempFile;
use tokio::{io::AsyncWriteExt as _, sync::Semaphore};

use super::{Format, MediaConfig, MediaError, MediaMetrics, Report, sniff};
use crate::proxy::{Body, BoxError, boxed};

/// Why a body could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("malformed multipart body: {0}")]
    Framing(String),
    #[error("the upload in field \"{field}\" was refused: {source}")]
    Refused { field: String, source: MediaError },
    /// The pipeline's body cap fired while reading (413, not the client's framing).
    #[error("request body over the {0}-byte limit")]
    BodyCap(u64),
    #[error("temporary file: {0}")]
    Io(#[from] io::Error),
}

/// A piece of the rewritten body.
#[derive(Debug)]
pub enum Segment {
    Mem(Bytes),
    /// A temp file, deleted when this is dropped.
    File(NamedTempFile, u64),
}

impl Segment {
    pub fn len(&self) -> u64 {
        match self {
            Segment::Mem(b) => b.len() as u64,
            Segment::File(_, n) => *n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the relay shares between all scrubs: limits, the temp dir and the memory budget.
#[derive(Debug)]
pub struct Scrubber {
    pub config: MediaConfig,
    pub tmp_dir: PathBuf,
    /// Permits are KiB of scrub working memory.
    budget: Arc<Semaphore>,
    budget_kib: u32,
    pub metrics: Arc<MediaMetrics>,
}

/// A scrubbed file: its format, what was removed, and where its bytes are.
#[derive(Debug)]
pub struct Done {
    pub format: Format,
    pub report: Report,
    pub segment: Segment,
}

impl Scrubber {
    /// Creates the temp dir and empties it: files left there by a crash are uploads.
    pub fn new(config: MediaConfig, data_dir: &std::path::Path) -> io::Result<Scrubber> {
        let tmp_dir = data_dir.join("media-tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        for entry in std::fs::read_dir(&tmp_dir)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let budget_kib = u32::try_from((config.memory_budget.0 / 1024).max(1)).unwrap_or(u32::MAX);
        Ok(Scrubber {
            config,
            tmp_dir,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            metrics: Arc::new(MediaMetrics::default()),
        })
    }

    /// The largest file of any kind, before its format is known.
    fn max_file(&self) -> u64 {
        self.config.max_image.0.max(self.config.max_video.0)
    }

    fn spool(&self, used: u64) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            threshold: self.config.spill_threshold.0.saturating_sub(used),
            dir: self.tmp_dir.clone(),
        }
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
        let format = sniff(spooled.head())?;
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
        let kib = u32::try_from(need / 1024 + 1).unwrap_or(u32::MAX).min(self.budget_kib);
        let _permit = self.budget.acquire_many(kib).await.map_err(|_| io::Error::other("scrubber closed"))?;
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
                let (file, result) = tokio::task::spawn_blocking(move || {
                    let r = super::scrub_file(file.path());
                    (file, r)
                })
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
                let (format, report) = result?;
                let len = file.as_file().metadata()?.len();
                Ok(Done { format, report, segment: Segment::File(file, len) })
            }
        }
    }

    /// Takes a raw media body whole (spooling it), scrubs it, returns its new bytes.
    pub async fn scrub_body(&self, body: Body) -> Result<Done, MultipartError> {
        use futures_util::StreamExt as _;
        let mut stream = BodyDataStream::new(body);
        let mut spool = self.spool(0);
        let max = self.max_file();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| body_error(&*e))?;
            spool.write(&chunk).await?;
            if spool.len > max {
                let e = MediaError::TooLarge { kind: "file", limit: crate::units::Size(max) };
                self.metrics.refused(&e);
                return Err(MultipartError::Refused { field: "(body)".into(), source: e });
            }
        }
        let spooled = spool.finish().await?;
        if spooled.is_empty() {
            return Ok(Done { format: Format::Jpeg, report: Report::default(), segment: Segment::Mem(Bytes::new()) });
        }
        self.scrub(spooled).await.map_err(|source| MultipartError::Refused { field: "(body)".into(), source })
    }

    /// Reads a whole multipart body, scrubs each file part, and returns the new body's
    /// segments, its length and its `Content-Type` (with a fresh boundary).
    pub async fn rewrite_multipart(&self, body: Body, boundary: &str) -> Result<Rewritten, MultipartError> {
        let stream = BodyDataStream::new(body);
        let mut parts = multer::Multipart::new(stream, boundary);
        let new_boundary = fresh_boundary();
        let mut out = Writer::default();
        let mut files = Vec::new();
        let max = self.max_file();
        while let Some(mut field) = parts.next_field().await.map_err(multer_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            // Rack (and so Mastodon) makes a file of a part with a filename; a media
            // Content-Type without one is treated as a file too, to be safe.
            let declared_file = field.file_name().is_some()
                || field.content_type().is_some_and(|m| matches!(m.type_().as_str(), "image" | "video" | "audio"));
            out.text(&format!("--{new_boundary}\r\n"));
            for (k, v) in field.headers() {
                // Part lengths change with scrubbing; multipart parts are self-delimiting.
                if k == http::header::CONTENT_LENGTH {
                    continue;
                }
                out.text(&format!("{}: ", header_case(k.as_str())));
                out.bytes(Bytes::copy_from_slice(v.as_bytes()));
                out.text("\r\n");
            }
            out.text("\r\n");
            let mut spool = self.spool(out.mem_total);
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                spool.write(&chunk).await?;
                if declared_file && spool.len > max {
                    let e = MediaError::TooLarge { kind: "file", limit: crate::units::Size(max) };
                    self.metrics.refused(&e);
                    return Err(MultipartError::Refused { field: name, source: e });
                }
            }
            let spooled = spool.finish().await?;
            let is_file = !spooled.is_empty() && (declared_file || looks_binary_media(spooled.head()));
            if is_file {
                let done = self
                    .scrub(spooled)
                    .await
                    .map_err(|source| MultipartError::Refused { field: name.clone(), source })?;
                files.push((name, done.format, done.report));
                out.segment(done.segment);
            } else {
                out.segment(spooled.into_segment());
            }
            out.text("\r\n");
        }
        out.text(&format!("--{new_boundary}--\r\n"));
        let segments = out.finish();
        let len = segments.iter().map(Segment::len).sum();
        Ok(Rewritten { segments, len, content_type: format!("multipart/form-data; boundary={new_boundary}"), files })
    }
}

/// A rewritten multipart body.
#[derive(Debug)]
pub struct Rewritten {
    pub segments: Vec<Segment>,
    pub len: u64,
    pub content_type: String,
    /// Field name, format and report of every file scrubbed.
    pub files: Vec<(String, Format, Report)>,
}

/// Strong, non-text magic numbers: a part that starts like this is media even if the
/// client did not say so (no filename, no Content-Type).
fn looks_binary_media(head: &[u8]) -> bool {
    head.starts_with(&[0xFF, 0xD8, 0xFF]) || head.starts_with(b"\x89PNG") || head.get(4..8) == Some(b"ftyp")
}

fn header_case(name: &str) -> String {
    match name {
        "content-disposition" => "Content-Disposition".into(),
        "content-type" => "Content-Type".into(),
        other => other.into(),
    }
}

fn fresh_boundary() -> String {
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 16];
    // Without OS randomness a fixed-but-long boundary is still unambiguous here: every
    // part is re-framed by us and none of the scrubbed bytes are parsed downstream by it.
    let _ = ring::rand::SystemRandom::new().fill(&mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("pavise-{hex}")
}

fn body_error(e: &(dyn std::error::Error + 'static)) -> MultipartError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(cap) = err.downcast_ref::<crate::proxy::pipeline::BodyCapExceeded>() {
            return MultipartError::BodyCap(cap.0);
        }
        source = err.source();
    }
    MultipartError::Framing(format!("reading the body failed: {e}"))
}

fn multer_error(e: multer::Error) -> MultipartError {
    if let multer::Error::StreamReadFailed(inner) = &e {
        return body_error(&**inner);
    }
    MultipartError::Framing(e.to_string())
}

/// Accumulates the output: small pieces coalesce into one in-memory segment.
#[derive(Default)]
struct Writer {
    segments: Vec<Segment>,
    pending: Vec<u8>,
    mem_total: u64,
}

impl Writer {
    fn text(&mut self, s: &str) {
        self.pending.extend_from_slice(s.as_bytes());
        self.mem_total += s.len() as u64;
    }
    fn bytes(&mut self, b: Bytes) {
        self.mem_total += b.len() as u64;
        self.pending.extend_from_slice(&b);
    }
    fn segment(&mut self, seg: Segment) {
        match seg {
            Segment::Mem(b) => self.bytes(b),
            file => {
                self.flush();
                self.segments.push(file);
            }
        }
    }
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.segments.push(Segment::Mem(Bytes::from(std::mem::take(&mut self.pending))));
        }
    }
    fn finish(mut self) -> Vec<Segment> {
        self.flush();
        self.segments
    }
}

/// How many leading bytes a spilled part keeps in memory for sniffing.
const HEAD: usize = 64;

/// One part's bytes while they arrive: memory up to the threshold, then a temp file.
pub struct Spool {
    mem: Vec<u8>,
    /// Buffered: each unbuffered tokio file write is a trip to the blocking pool.
    file: Option<(NamedTempFile, tokio::io::BufWriter<tokio::fs::File>)>,
    len: u64,
    threshold: u64,
    dir: PathBuf,
}

/// A part, fully received.
#[derive(Debug)]
pub enum Spooled {
    Mem(Vec<u8>),
    /// The temp file, its length, and its first bytes (for sniffing).
    File(NamedTempFile, u64, Vec<u8>),
}

impl Spooled {
    pub fn len(&self) -> u64 {
        match self {
            Spooled::Mem(v) => v.len() as u64,
            Spooled::File(_, n, _) => *n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn head(&self) -> &[u8] {
        match self {
            Spooled::Mem(v) => v.get(..64).unwrap_or(v),
            Spooled::File(_, _, head) => head,
        }
    }
    fn into_segment(self) -> Segment {
        match self {
            Spooled::Mem(v) => Segment::Mem(Bytes::from(v)),
            Spooled::File(f, n, _) => Segment::File(f, n),
        }
    }
}

impl Spool {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.len += chunk.len() as u64;
        if self.file.is_none() && self.len > self.threshold {
            let tmp = tempfile::Builder::new().prefix("upload-").tempfile_in(&self.dir)?;
            let mut f = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(tmp.reopen()?));
            f.write_all(&self.mem).await?;
            self.file = Some((tmp, f));
        }
        match &mut self.file {
            Some((_, f)) => {
                // Once spilled, `mem` keeps only the first bytes, for sniffing.
                let mut buf = std::mem::take(&mut self.mem);
                buf.extend_from_slice(chunk.get(..HEAD.saturating_sub(buf.len())).unwrap_or(chunk));
                buf.truncate(HEAD);
                self.mem = buf;
                f.write_all(chunk).await
            }
            None => {
                self.mem.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    async fn finish(self) -> io::Result<Spooled> {
        match self.file {
            None => Ok(Spooled::Mem(self.mem)),
            Some((tmp, mut f)) => {
                f.flush().await?;
                drop(f);
                Ok(Spooled::File(tmp, self.len, self.mem))
            }
        }
    }
}

/// A body streaming the segments in order; temp files go as soon as they are sent, and
/// all of them if the body is dropped half-way.
pub fn segments_body(segments: Vec<Segment>) -> Body {
    use futures_util::stream;
    struct State {
        rest: std::vec::IntoIter<Segment>,
        current: Option<(NamedTempFile, tokio::fs::File)>,
    }
    let init = State { rest: segments.into_iter(), current: None };
    let s = stream::unfold(init, |mut st| async move {
        loop {
            if let Some((tmp, file)) = &mut st.current {
                use tokio::io::AsyncReadExt as _;
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => {
                        let _ = tmp;
                        st.current = None;
                        continue;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        return Some((Ok::<_, BoxError>(Frame::data(Bytes::from(buf))), st));
                    }
                    Err(e) => {
                        st.current = None;
                        return Some((Err(Box::new(e) as BoxError), st));
                    }
                }
            }
            match st.rest.next()? {
                Segment::Mem(b) if b.is_empty() => continue,
                Segment::Mem(b) => return Some((Ok(Frame::data(b)), st)),
                Segment::File(tmp, _) => match tmp.reopen() {
                    Ok(f) => st.current = Some((tmp, tokio::fs::File::from_std(f))),
                    Err(e) => return Some((Err(Box::new(e) as BoxError), st)),
                },
            }
        }
    });
    boxed(StreamBody::new(s))
}
