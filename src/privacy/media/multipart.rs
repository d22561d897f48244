//! Rewriting request bodies with every file scrubbed: any `multipart/*`, raw media
//! bodies, and the `data:` URIs of JSON and form bodies.
//!
//! The whole body is taken in before anything is forwarded, because a refusal must
//! mean that *nothing* reached the instance. Memory stays bounded anyway: each part is
//! spooled ([`Spool`]) in memory up to `spill_threshold` (per request) and to a temp
//! file in `<data_dir>/media-tmp` beyond it, with every temp file counted against the
//! caps all requests share ([`super::spill::Budgets`]); parts per request are capped as
//! Rack caps them (`max_parts`, `max_file_parts`); and every scrub holds permits of one
//! shared memory budget (the [`Scrubber`]'s), so 20 concurrent 90 MB uploads wait for
//! each other instead of costing 20 × 90 MB. Spooled videos are patched in place on disk. The rewritten body is a list
//! of [`Segment`]s with an exact length, streamed to the instance; temp files are deleted
//! when their segment is dropped: after forwarding, on refusal, on a client abort, on any
//! error.
//!
//! A multipart body is re-framed under a fresh random boundary, and every part's head is
//! written again from pavise's own parse with only `Content-Disposition` and
//! `Content-Type` ([`PartHead`]), so the instance reads exactly the parts, names,
//! filenames and types pavise read and judged, whichever Rack it runs. Every part is
//! judged by its bytes, not by its name, filename or declared type: media is scrubbed
//! wherever it is; a text part holding a `data:` URI has its media scrubbed and
//! re-encoded; a part that is neither media pavise scrubs nor text ([`text`]) is
//! refused, with or without a filename. Framing is parsed by `multer`; heads and the
//! serializer are ours.

use std::io;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyDataStream, StreamBody};

use super::{
    Format, MediaError, Report, datauri,
    part_head::PartHead,
    scrubber::{Scrubber, held_in_memory, held_in_memory_segment},
    spill::{Exhausted, MemCharge, RequestMem, SpillFile, Spool, SpoolError, Spooled},
    text::{self, Charset},
};
use crate::proxy::contract::{Body, BoxError, boxed};

/// Why a body could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("malformed request body: {0}")]
    Framing(String),
    #[error("the upload in field \"{field}\" was refused: {source}")]
    Refused { field: String, source: MediaError },
    /// One of the pipeline's body guards fired while reading (the size cap, 413; the
    /// minimum rate, 408), not the client's framing.
    #[error(transparent)]
    Body(crate::proxy::contract::ProxyError),
    /// A per-request part cap (413).
    #[error("{0}")]
    TooMany(String),
    /// A cap on temp space shared by all requests (413).
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// An encoding pavise does not decode (415).
    #[error("{0}")]
    Encoding(String),
    /// The OS gave no randomness for a boundary: a guessable one could be forged into.
    #[error("no random source for a multipart boundary")]
    NoRandomness,
    #[error("temporary file: {0}")]
    Io(#[from] io::Error),
}

impl From<SpoolError> for MultipartError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Exhausted(x) => MultipartError::Exhausted(x),
            SpoolError::Io(e) => MultipartError::Io(e),
        }
    }
}

/// A piece of the rewritten body.
#[derive(Debug)]
pub enum Segment {
    Mem(Bytes),
    /// A temp file, deleted when this is dropped.
    File(SpillFile, u64),
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

impl Scrubber {
    /// Reads a whole multipart body, judges and scrubs each part, and returns the new
    /// body's segments, its length and its `Content-Type` (the same subtype, a fresh
    /// boundary).
    pub async fn rewrite_multipart(
        &self,
        body: Body,
        boundary: &str,
        subtype: &str,
        req: &mut RequestMem,
    ) -> Result<Rewritten, MultipartError> {
        let new_boundary = fresh_boundary()?;
        let stream = BodyDataStream::new(body);
        let mut parts = multer::Multipart::new(stream, boundary);
        let mut out = Writer::default();
        let mut files = Vec::new();
        let max = self.max_file();
        let (mut seen, mut file_parts) = (0usize, 0usize);
        while let Some(mut field) = parts.next_field().await.map_err(multer_error)? {
            seen += 1;
            if seen > self.config.max_parts {
                return Err(MultipartError::TooMany(format!(
                    "more than {} parts in one multipart body",
                    self.config.max_parts
                )));
            }
            let mut part = PartHead::read(field.headers()).map_err(|e| MultipartError::Framing(e.to_string()))?;
            let name = part.display_name();
            if let Some(cte) = part.transfer_encoding.as_deref().filter(|c| !matches!(*c, "7bit" | "8bit" | "binary")) {
                return Err(MultipartError::Encoding(format!(
                    "the part \"{name}\" has Content-Transfer-Encoding {cte}; send it as binary"
                )));
            }
            let mut counted_file = part.has_filename;
            if counted_file {
                file_parts += 1;
            }
            let too_many_files = |n: usize| {
                (n > self.config.max_file_parts).then(|| {
                    MultipartError::TooMany(format!(
                        "more than {} file parts in one multipart body",
                        self.config.max_file_parts
                    ))
                })
            };
            if let Some(e) = too_many_files(file_parts) {
                return Err(e);
            }
            let mut spool = Spool::new();
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                spool.write(&chunk, req).await?;
                if spool.spilled() && !counted_file {
                    counted_file = true;
                    file_parts += 1;
                    if let Some(e) = too_many_files(file_parts) {
                        return Err(e);
                    }
                }
                if (part.has_filename || part.declared_media) && spool.len() > max {
                    let e = MediaError::TooLarge { kind: "file", limit: crate::units::Size(max) };
                    self.metrics.refused(&e);
                    return Err(MultipartError::Refused { field: name, source: e });
                }
            }
            let spooled = spool.finish().await?;
            let refused = |source: MediaError| MultipartError::Refused { field: name.clone(), source };
            let media = !matches!(super::sniff(spooled.head()), Err(MediaError::UnknownFormat));
            let held = held_in_memory(&spooled);
            let (segment, plain_text) = if spooled.is_empty() {
                (Segment::Mem(Bytes::new()), false)
            } else if media {
                // Media, or a format pavise refuses (which the scrub names).
                let done = self.scrub(spooled).await.map_err(refused)?;
                files.push((name, done.format, done.report));
                req.replace(held, held_in_memory_segment(&done.segment));
                (done.segment, false)
            } else {
                let segment = self.judge_text_part(spooled, &part).await;
                let (segment, scrubbed) = segment.map_err(|e| match e {
                    PartError::Refused(source) => {
                        self.metrics.refused(&source);
                        refused(source)
                    }
                    PartError::Io(e) => MultipartError::Io(e),
                })?;
                let plain_text = scrubbed.is_none();
                if let Some((format, report)) = scrubbed {
                    files.push((name, format, report));
                }
                req.replace(held, held_in_memory_segment(&segment));
                (segment, plain_text)
            };
            if !plain_text {
                // A camera's file name is its capture time (`PXL_20241007_142045194.jpg`);
                // only text the member chose (a CSV import, whose name Mastodon shows)
                // keeps its name.
                part.neutralize_filename();
            }
            // The head the instance reads is the one pavise parsed, and nothing else.
            let mut head = format!("--{new_boundary}\r\n").into_bytes();
            part.write(&mut head);
            req.hold(head.len() as u64 + 2)?;
            out.bytes(Bytes::from(head));
            out.segment(segment);
            out.text("\r\n");
        }
        let end = format!("--{new_boundary}--\r\n");
        req.hold(end.len() as u64)?;
        out.text(&end);
        let segments = out.finish();
        let len = segments.iter().map(Segment::len).sum();
        let subtype: String =
            subtype.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+')).collect();
        let subtype = if subtype.is_empty() { "form-data".to_owned() } else { subtype };
        Ok(Rewritten { segments, len, content_type: format!("multipart/{subtype}; boundary={new_boundary}"), files })
    }

    /// A part that is no media format pavise knows: it must be text ([`super::text`]),
    /// whatever its head says; a `data:` URI in it is scrubbed; text in a part that
    /// declares a media type is refused.
    async fn judge_text_part(
        &self,
        spooled: Spooled,
        part: &PartHead,
    ) -> Result<(Segment, Option<(Format, Report)>), PartError> {
        let head = spooled.head();
        if let Some(what) = text::media_in_text(head) {
            return Err(PartError::Refused(MediaError::Unsupported(what)));
        }
        if !self.is_text(&spooled, part.text_charset()).await? {
            return Err(PartError::Refused(MediaError::UnknownFormat));
        }
        if part.iso_2022_jp {
            // Rack transcodes ISO-2022-JP text to UTF-8, and escape sequences anywhere
            // (even dozens before `data:`) vanish: the whole part is read both ways.
            let _permit = self.permits(spooled.len().saturating_mul(2)).await?;
            let all = spooled.bytes().await?;
            if memchr::memchr(0x1B, &all).is_some()
                && (datauri::starts_like_data_uri(&all) || datauri::starts_like_data_uri(&iso_2022_jp_view(&all)))
            {
                return Err(PartError::Refused(MediaError::Unsupported("data: URIs in ISO-2022-JP text")));
            }
        }
        if datauri::starts_like_data_uri(head) {
            let _permit = self.permits(spooled.len().saturating_mul(3)).await?;
            let text = spooled.bytes().await?;
            let max = self.max_file();
            let rewritten = tokio::task::spawn_blocking(move || datauri::scrub_value(&text, max))
                .await
                .map_err(|e| io::Error::other(e.to_string()))?
                .map_err(PartError::Refused)?;
            if let Some(r) = rewritten {
                self.metrics.scrubbed(r.format, r.report.bytes_removed());
                return Ok((Segment::Mem(Bytes::from(r.text)), Some((r.format, r.report))));
            }
        }
        if part.declared_media {
            return Err(PartError::Refused(MediaError::UnknownFormat));
        }
        Ok((spooled.into_segment(), None))
    }

    /// Whether a whole spooled part is text (only its head was judged so far).
    async fn is_text(&self, spooled: &Spooled, charset: Charset) -> io::Result<bool> {
        match spooled {
            Spooled::Mem(v) => Ok(text::is_text(v, charset)),
            Spooled::File(f, _, _) => {
                let path = f.path().to_owned();
                tokio::task::spawn_blocking(move || {
                    use std::io::Read as _;
                    let mut file = std::fs::File::open(path)?;
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut check = text::TextCheck::new(charset);
                    loop {
                        match file.read(&mut buf)? {
                            0 => return Ok(check.finish()),
                            n => check.feed(&buf[..n]),
                        }
                    }
                })
                .await
                .map_err(|e| io::Error::other(e.to_string()))?
            }
        }
    }
}

#[derive(Debug)]
enum PartError {
    Refused(MediaError),
    Io(io::Error),
}

impl From<io::Error> for PartError {
    fn from(e: io::Error) -> Self {
        PartError::Io(e)
    }
}

/// The ASCII skeleton of ISO-2022-JP text as Ruby transcodes it: escape sequences gone,
/// two-byte JIS characters (and JIS-Roman's yen and overline) as non-ASCII.
fn iso_2022_jp_view(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut two_byte, mut roman) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i..] {
            [0x1B, b'(', b'B', ..] => (two_byte, roman, i) = (false, false, i + 3),
            [0x1B, b'(', b'J', ..] => (two_byte, roman, i) = (false, true, i + 3),
            [0x1B, b'$', b'@' | b'B', ..] => (two_byte, i) = (true, i + 3),
            _ if two_byte && bytes[i] > 0x20 => {
                out.extend_from_slice("\u{FFFD}".as_bytes());
                i += 2;
            }
            _ => {
                let b = bytes[i];
                if roman && (b == b'\\' || b == b'~') {
                    out.extend_from_slice("\u{FFFD}".as_bytes());
                } else {
                    out.push(b);
                }
                i += 1;
            }
        }
    }
    out
}

impl Spooled {
    fn into_segment(self) -> Segment {
        match self {
            Spooled::Mem(v) => Segment::Mem(v.into_bytes()),
            Spooled::File(f, n, _) => Segment::File(f, n),
        }
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

/// A boundary nobody can predict: a file crafted to contain it could otherwise end its
/// part early and inject one of its own. Without randomness there is no boundary.
pub fn fresh_boundary() -> Result<String, MultipartError> {
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    boundary_from(|buf| rng.fill(buf).is_ok())
}

fn boundary_from(fill: impl FnOnce(&mut [u8]) -> bool) -> Result<String, MultipartError> {
    let mut raw = [0u8; 16];
    if !fill(&mut raw) {
        return Err(MultipartError::NoRandomness);
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("pavise-{hex}"))
}

pub(super) fn body_error(e: &(dyn std::error::Error + 'static)) -> MultipartError {
    match crate::proxy::contract::error::body_failure(e) {
        Some(guard) => MultipartError::Body(guard),
        None => MultipartError::Framing(format!("reading the body failed: {e}")),
    }
}

fn multer_error(e: multer::Error) -> MultipartError {
    if let multer::Error::StreamReadFailed(inner) = &e {
        return body_error(&**inner);
    }
    MultipartError::Framing(format!("multipart: {e}"))
}

/// Accumulates the output: small pieces coalesce into one in-memory segment.
#[derive(Default)]
struct Writer {
    segments: Vec<Segment>,
    pending: Vec<u8>,
}

impl Writer {
    fn text(&mut self, s: &str) {
        self.pending.extend_from_slice(s.as_bytes());
    }
    fn bytes(&mut self, b: Bytes) {
        self.pending.extend_from_slice(&b);
    }
    fn segment(&mut self, seg: Segment) {
        match seg {
            // Small pieces coalesce; a large one is kept where it is (no copy).
            Segment::Mem(b) if b.len() < 4096 => self.bytes(b),
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

/// A body streaming the segments in order; a temp file is opened only while it is sent,
/// deleted as soon as it has been, and all of them go if the body is dropped half-way.
/// The request's memory charge is returned when the body is done.
pub fn segments_body(segments: Vec<Segment>, charge: Option<MemCharge>) -> Body {
    use futures_util::stream;
    struct State {
        rest: std::vec::IntoIter<Segment>,
        current: Option<(SpillFile, tokio::fs::File)>,
        _charge: Option<MemCharge>,
    }
    let init = State { rest: segments.into_iter(), current: None, _charge: charge };
    let s = stream::unfold(init, |mut st| async move {
        loop {
            if let Some((_, file)) = &mut st.current {
                use tokio::io::AsyncReadExt as _;
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => {
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
                Segment::File(spill, _) => match tokio::fs::File::open(spill.path()).await {
                    Ok(f) => st.current = Some((spill, f)),
                    Err(e) => return Some((Err(Box::new(e) as BoxError), st)),
                },
            }
        }
    });
    boxed(StreamBody::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_random_and_refused_without_randomness() {
        let a = fresh_boundary().unwrap();
        assert_ne!(a, fresh_boundary().unwrap());
        assert_eq!(a.len(), "pavise-".len() + 32);
        assert!(matches!(boundary_from(|_| false), Err(MultipartError::NoRandomness)));
    }

    #[test]
    fn iso_2022_jp_is_seen_as_ruby_transcodes_it() {
        assert_eq!(iso_2022_jp_view(b"da\x1b(Bta:"), b"data:");
        let kanji = iso_2022_jp_view(b"\x1b$BF|K\\\x1b(Bok");
        assert_eq!(kanji, "\u{FFFD}\u{FFFD}ok".as_bytes());
        assert_eq!(iso_2022_jp_view(b"\x1b(Ja\\b"), "a\u{FFFD}b".as_bytes());
    }
}
