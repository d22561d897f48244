//! Media scrubbing: no location leaves a member's device through pavise.
//!
//! A phone photo carries where it was taken (EXIF GPS, XMP, IPTC place names); a phone
//! video carries it in `©xyz`, Apple's ISO6709 keys or a GPS telemetry track. Mastodon
//! re-encodes images, but the original bytes still reach the instance (logs, temp files,
//! other server software) and its audio path copies video location into ID3 tags. So
//! pavise removes every metadata carrier *before* the instance sees the file.
//!
//! How, and why this way (see ../shared/METADATA.md §1.7 and §5.1):
//! - **Sniff by magic bytes** ([`sniff`]), never by name or Content-Type: a JPEG named
//!   `.png` is still a JPEG; a format pavise knows and does not scrub ([`unsupported`]:
//!   ASF/WMA, AIFF, AU, MPEG-TS/PS, FLV, AVI, TIFF, BMP, PSD, JPEG XL, JPEG 2000, ...)
//!   is refused; and a part or `data:` URI that is neither media pavise scrubs nor text
//!   ([`text`]: UTF-8 without control bytes and no text form of media such as SVG or PDF)
//!   is refused too. Text (a caption, a CSV import) passes as it came.
//! - **Structural removal only**: one hand-written walker per format drops or zeroes the
//!   metadata containers and copies everything else byte for byte. No decode, no
//!   re-encode, so pixels and samples are untouched and a 90 MB video costs milliseconds.
//!   Orientation (JPEG: a minimal EXIF of one tag) and ICC profiles survive, because
//!   Mastodon keeps them and a sideways photo is a bug.
//! - **Fail closed**: a walker that meets anything it cannot parse with certainty
//!   (truncation, a length past the end, an unknown critical structure) refuses the file
//!   with a [`MediaError`] that says why. The output is then parsed again by the same
//!   walker, which must find nothing left to remove ([`scrub`] checks this); a stripper
//!   that cannot prove its output clean refuses.
//!
//! Formats: [`jpeg`], [`png`], [`webp`], [`gif`], [`isobmff`] (HEIC/HEIF/AVIF/MP4/MOV/3GP/
//! M4A) and [`matroska`] (WebM/MKV), both patched in place so no offset moves, and audio: [`mp3`] (ID3v1/v2, APE,
//! Lyrics3), [`ogg`] (Vorbis/Opus comments), [`flac`], [`wav`] (RIFF `LIST`, `id3 `).
//!
//! Where files come from ([`stage`], the pipeline stage, decides with [`body`] how the
//! instance will read a body): every `multipart/*` part ([`multipart`]), a raw body, and
//! `data:` URIs ([`datauri`]) in JSON ([`json`]), form bodies and query strings ([`form`]).
//! A part's head is read as every Rack reads it and written again from pavise's parse
//! ([`part_head`]).
//! Bodies and parts wait in memory or in counted temp files ([`spill`]).

pub mod bitstream;
pub mod body;
pub mod datauri;
pub mod flac;
pub mod form;
pub mod gif;
pub mod icc;
pub mod inplace;
pub mod isobmff;
pub mod jpeg;
pub mod json;
pub mod matroska;
pub mod metrics;
pub mod mp3;
pub mod multipart;
pub mod ogg;
pub mod part_head;
pub mod png;
pub mod scrubber;
pub mod spill;
pub mod stage;
pub mod text;
pub mod unsupported;
pub mod wav;
pub mod webp;

use std::{fmt, path::Path};

use serde::Deserialize;

pub use metrics::MediaMetrics;
pub use stage::MediaStage;

use crate::units::Size;

/// A format pavise can scrub, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
    /// HEIC, HEIF, AVIF: still images in the ISO base media file format.
    Heif,
    /// MP4, MOV, 3GP, M4V: video (and anything else ISOBMFF that is not audio-only).
    Video,
    /// M4A and other audio-only ISOBMFF.
    M4a,
    /// WebM and Matroska (video or audio).
    Matroska,
    Mp3,
    Ogg,
    Flac,
    Wav,
}

impl Format {
    pub const ALL: [Format; 12] = [
        Format::Jpeg,
        Format::Png,
        Format::Webp,
        Format::Gif,
        Format::Heif,
        Format::Video,
        Format::M4a,
        Format::Matroska,
        Format::Mp3,
        Format::Ogg,
        Format::Flac,
        Format::Wav,
    ];

    /// Short lowercase name, for metrics labels and messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Heif => "heif",
            Format::Video => "mp4",
            Format::M4a => "m4a",
            Format::Matroska => "matroska",
            Format::Mp3 => "mp3",
            Format::Ogg => "ogg",
            Format::Flac => "flac",
            Format::Wav => "wav",
        }
    }

    /// Formats walked in place ([`inplace`]): no byte moves, so a spooled upload is patched
    /// where it lies, with only its headers in memory.
    pub fn in_place(self) -> bool {
        matches!(self, Format::Heif | Format::Video | Format::M4a | Format::Matroska)
    }

    /// Still images have the (smaller) image size limit; the rest the video one.
    pub fn is_image(self) -> bool {
        matches!(self, Format::Jpeg | Format::Png | Format::Webp | Format::Gif | Format::Heif)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upper = match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
            Format::Gif => "GIF",
            Format::Heif => "HEIF",
            Format::Video => "MP4/MOV",
            Format::M4a => "M4A",
            Format::Matroska => "WebM/Matroska",
            Format::Mp3 => "MP3",
            Format::Ogg => "Ogg",
            Format::Flac => "FLAC",
            Format::Wav => "WAV",
        };
        f.write_str(upper)
    }
}

/// Why a file is refused. Every message is shown to the member (422), so it says what
/// was wrong in words they can act on.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("not a supported image, video or audio file (its first bytes match no known format)")]
    UnknownFormat,
    #[error("{0} files are not accepted")]
    Unsupported(&'static str),
    #[error("truncated {format} file: {what}")]
    Truncated { format: Format, what: String },
    #[error("malformed {format} file: {what}")]
    Malformed { format: Format, what: String },
    #[error("{kind} is larger than the {limit} limit")]
    TooLarge { kind: &'static str, limit: Size },
    #[error("the scrubbed {format} file could not be proven free of metadata: {what}")]
    NotClean { format: Format, what: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    pub(crate) fn truncated(format: Format, what: impl Into<String>) -> MediaError {
        MediaError::Truncated { format, what: what.into() }
    }

    pub(crate) fn malformed(format: Format, what: impl Into<String>) -> MediaError {
        MediaError::Malformed { format, what: what.into() }
    }

    /// The metrics label for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            MediaError::UnknownFormat => "unknown_format",
            MediaError::Unsupported(_) => "unsupported",
            MediaError::Truncated { .. } => "truncated",
            MediaError::Malformed { .. } => "malformed",
            MediaError::TooLarge { .. } => "too_large",
            MediaError::NotClean { .. } => "not_clean",
            MediaError::Io(_) => "io",
        }
    }

    pub const REASONS: [&'static str; 7] =
        ["unknown_format", "unsupported", "truncated", "malformed", "too_large", "not_clean", "io"];
}

/// One metadata carrier a walker removed (or zeroed in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// What it was, in the format's own words: `APP1 Exif`, `iTXt`, `moov/udta`.
    pub what: String,
    /// Bytes dropped or zeroed.
    pub bytes: u64,
}

/// What a walker did, collected for `-v` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub removed: Vec<Removal>,
    /// Notes that are not removals: `kept Orientation 6 as a minimal EXIF`.
    pub kept: Vec<String>,
}

impl Report {
    pub(crate) fn remove(&mut self, what: impl Into<String>, bytes: u64) {
        self.removed.push(Removal { what: what.into(), bytes });
    }

    pub fn bytes_removed(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }
}

/// A scrubbed file.
#[derive(Debug)]
pub struct Scrubbed {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub report: Report,
}

/// `[media]` in the config file. Defaults match Mastodon's own limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest still image accepted (Mastodon's `MAX_IMAGE_SIZE`, 16 MiB).
    pub max_image: Size,
    /// Largest video or audio file accepted (Mastodon's `MAX_VIDEO_SIZE`, 99 MiB).
    pub max_video: Size,
    /// Bytes of one request held in memory while it is judged; beyond, parts of at least
    /// `min_spill` go to temp files in the data dir (on routes that take uploads), so many
    /// concurrent uploads do not cost many times their size in RAM.
    pub spill_threshold: Size,
    /// A part shorter than this never gets a temp file of its own: tiny parts stay in
    /// memory (at most `spill_threshold` + `min_spill` per request; past it, 413), so
    /// parts cannot each cost a file.
    pub min_spill: Size,
    /// Memory all requests together may hold for bodies waiting to be judged; when it is
    /// short, parts spill early or the request gets 503 with `Retry-After`.
    pub spool_memory: Size,
    /// One client's share of `spool_memory`.
    pub spool_client_memory: Size,
    /// Memory all concurrent scrubs may use together; beyond it, uploads wait their turn.
    pub memory_budget: Size,
    /// Parts in one multipart body (Rack's own default, 4,096); past it, 413.
    pub max_parts: usize,
    /// File parts in one multipart body: parts with a filename or spooled to disk (Rack's
    /// default for files, 128); past it, 413.
    pub max_file_parts: usize,
    /// Temp files in `<data_dir>/media-tmp` at once, across all requests; past it, 413.
    pub tmp_max_files: u64,
    /// Bytes in `<data_dir>/media-tmp` at once, across all requests (and never more than
    /// half the data dir's free space at start); past it, 413.
    pub tmp_max_bytes: Size,
    /// One client's share of `tmp_max_files`.
    pub tmp_client_files: u64,
    /// One client's share of `tmp_max_bytes` (at least one file of the largest size).
    pub tmp_client_bytes: Size,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            // Mastodon's limits are Rails megabytes (MiB).
            max_image: Size(16 << 20),
            max_video: Size(99 << 20),
            spill_threshold: Size(1 << 20),
            min_spill: Size(64 << 10),
            spool_memory: Size(64 << 20),
            spool_client_memory: Size(8 << 20),
            memory_budget: Size(256 << 20),
            max_parts: 4096,
            max_file_parts: 128,
            tmp_max_files: 256,
            tmp_max_bytes: Size(1 << 30),
            tmp_client_files: 32,
            tmp_client_bytes: Size(256 << 20),
        }
    }
}

impl MediaConfig {
    /// Checks beside the struct; errors name the key (`config.rs` calls this).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, zero) in [
            ("media.max_parts", self.max_parts == 0),
            ("media.max_file_parts", self.max_file_parts == 0),
            ("media.tmp_max_files", self.tmp_max_files == 0),
            ("media.tmp_client_files", self.tmp_client_files == 0),
        ] {
            if zero {
                return Err((key, "must be at least 1".into()));
            }
        }
        let largest = self.max_image.0.max(self.max_video.0);
        if self.tmp_max_bytes.0 < largest {
            return Err(("media.tmp_max_bytes", "must hold at least one file of the largest size allowed".into()));
        }
        if self.tmp_client_bytes.0 < largest {
            return Err(("media.tmp_client_bytes", "must hold at least one file of the largest size allowed".into()));
        }
        if self.tmp_client_bytes.0 > self.tmp_max_bytes.0 {
            return Err(("media.tmp_client_bytes", "cannot be more than media.tmp_max_bytes".into()));
        }
        if self.tmp_client_files > self.tmp_max_files {
            return Err(("media.tmp_client_files", "cannot be more than media.tmp_max_files".into()));
        }
        if self.spool_client_memory.0 > self.spool_memory.0 {
            return Err(("media.spool_client_memory", "cannot be more than media.spool_memory".into()));
        }
        if self.spool_client_memory.0 < 64 << 10 {
            return Err(("media.spool_client_memory", "must be at least 64KiB".into()));
        }
        if self.min_spill.0 > 16 << 20 {
            return Err(("media.min_spill", "must be at most 16MiB".into()));
        }
        Ok(())
    }
}

/// Recognises a format by its first bytes. `None` means pavise will not forward it.
///
/// ISOBMFF files that are not media Mastodon takes (Canon CR3, JPEG XL) are `Err`, so
/// the refusal can say what they are.
pub fn sniff(b: &[u8]) -> Result<Format, MediaError> {
    let starts = |magic: &[u8]| b.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if starts(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        return Ok(Format::Webp);
    }
    if starts(b"RIFF") && b.get(8..12) == Some(b"WAVE") {
        return Ok(Format::Wav);
    }
    if starts(b"OggS") {
        return Ok(Format::Ogg);
    }
    if starts(b"fLaC") {
        return Ok(Format::Flac);
    }
    if let Some(kind) = isobmff::sniff(b) {
        return kind;
    }
    if matroska::sniff(b) {
        return Ok(Format::Matroska);
    }
    if let Some(what) = unsupported::sniff(b) {
        return Err(MediaError::Unsupported(what));
    }
    // ID3v2 names its major version (2 to 4) next: text that starts "ID3" is not a tag.
    let id3 = starts(b"ID3") && b.get(3).is_some_and(|v| (2..=4).contains(v));
    if id3 || mp3::is_frame_start(b) {
        // ID3v2 is also put in front of FLAC by some taggers.
        if id3 && mp3::after_id3(b).is_some_and(|rest| rest.starts_with(b"fLaC")) {
            return Ok(Format::Flac);
        }
        return Ok(Format::Mp3);
    }
    Err(MediaError::UnknownFormat)
}

/// Scrubs one file held in memory; the output is verified before it is returned.
pub fn scrub(input: &[u8]) -> Result<Scrubbed, MediaError> {
    let format = sniff(input)?;
    let (mut bytes, report) = run(format, input)?;
    verify(format, &mut bytes)?;
    Ok(Scrubbed { bytes, format, report })
}

fn run(format: Format, input: &[u8]) -> Result<(Vec<u8>, Report), MediaError> {
    let mut report = Report::default();
    let out = match format {
        Format::Jpeg => jpeg::scrub(input, &mut report)?,
        Format::Png => png::scrub(input, &mut report)?,
        Format::Webp => webp::scrub(input, &mut report)?,
        Format::Gif => gif::scrub(input, &mut report)?,
        Format::Heif | Format::Video | Format::M4a | Format::Matroska => {
            let mut out = input.to_vec();
            walk_in_place(&mut inplace::MemStore(&mut out), format, Pass::Scrub, &mut report)?;
            out
        }
        Format::Mp3 => mp3::scrub(input, &mut report)?,
        Format::Ogg => ogg::scrub(input, &mut report)?,
        Format::Flac => flac::scrub(input, &mut report)?,
        Format::Wav => wav::scrub(input, &mut report)?,
    };
    Ok((out, report))
}

/// Parses the output again with the same walker: it must find nothing to remove and
/// change nothing. A walker bug that left a carrier behind becomes a refusal, not a leak.
/// An in-place format's walker audits the output where it lies, as for a file on disk
/// ([`scrub_file`]): what it would still change is what a second pass would have changed,
/// without copying a video to find out.
fn verify(format: Format, output: &mut Vec<u8>) -> Result<(), MediaError> {
    let not_clean = |what: String| MediaError::NotClean { format, what };
    match sniff(output) {
        Ok(f) if f == format => {}
        Ok(f) => return Err(not_clean(format!("the output reads as {f}"))),
        Err(e) => return Err(not_clean(format!("the output no longer parses: {e}"))),
    }
    let no_longer_parses = |e: MediaError| not_clean(format!("the output no longer parses: {e}"));
    if format.in_place() {
        let mut check = Report::default();
        walk_in_place(&mut inplace::MemStore(output), format, Pass::Audit, &mut check).map_err(no_longer_parses)?;
        return match check.removed.first() {
            Some(first) => Err(not_clean(format!("{} is still present", first.what))),
            None => Ok(()),
        };
    }
    let (again, report) = run(format, output).map_err(no_longer_parses)?;
    if let Some(first) = report.removed.first() {
        return Err(not_clean(format!("{} is still present", first.what)));
    }
    if again != *output {
        return Err(not_clean("a second pass changed the output".into()));
    }
    Ok(())
}

/// Scrubs a file on disk in place, for uploads spooled to a temp file: ISOBMFF and
/// Matroska (the large videos) are patched in the file itself with only their headers in
/// memory; other formats are read, rewritten and written back.
pub fn scrub_file(path: &Path) -> Result<(Format, Report), MediaError> {
    use std::io::Read as _;
    let mut head = [0u8; 64];
    let n = {
        let mut f = std::fs::File::open(path)?;
        read_up_to(&mut f, &mut head)?
    };
    let format = sniff(head.get(..n).unwrap_or_default())?;
    if format.in_place() {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let mut store = inplace::FileStore::new(file)?;
        let mut report = Report::default();
        walk_in_place(&mut store, format, Pass::Scrub, &mut report)?;
        let mut check = Report::default();
        walk_in_place(&mut store, format, Pass::Audit, &mut check)
            .map_err(|e| MediaError::NotClean { format, what: format!("the output no longer parses: {e}") })?;
        if let Some(first) = check.removed.first() {
            return Err(MediaError::NotClean { format, what: format!("{} is still present", first.what) });
        }
        return Ok((format, report));
    }
    let mut input = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut input)?;
    let scrubbed = scrub(&input)?;
    drop(input);
    std::fs::write(path, &scrubbed.bytes)?;
    Ok((scrubbed.format, scrubbed.report))
}

/// Whether an in-place walker changes the file, or only reports what it would change.
#[derive(Clone, Copy)]
enum Pass {
    Scrub,
    Audit,
}

fn walk_in_place(
    store: &mut impl inplace::Store,
    format: Format,
    pass: Pass,
    report: &mut Report,
) -> Result<(), MediaError> {
    match (format, pass) {
        (Format::Matroska, Pass::Scrub) => matroska::scrub(store, report),
        (Format::Matroska, Pass::Audit) => matroska::audit(store, report),
        (_, Pass::Scrub) => isobmff::scrub(store, format, report),
        (_, Pass::Audit) => isobmff::audit(store, format, report),
    }
}

fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `pavise scrub IN [-o OUT]`: scrubs `input` into `output` (standard output when
/// `None`). Nothing is written when the file is refused.
pub fn scrub_path(input: &Path, output: Option<&Path>) -> Result<Scrubbed, MediaError> {
    use std::io::{IsTerminal as _, Write as _};
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(MediaError::Io(std::io::Error::other("refusing to write binary data to a terminal; use -o OUT")));
    }
    let bytes = std::fs::read(input)?;
    let scrubbed = scrub(&bytes)?;
    match output {
        Some(path) => std::fs::write(path, &scrubbed.bytes)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&scrubbed.bytes)?;
            out.flush()?;
        }
    }
    Ok(scrubbed)
}

/// A human-readable account of a report, for `pavise scrub -v`.
pub fn describe(format: Format, report: &Report) -> String {
    use fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "format: {format}");
    if report.removed.is_empty() {
        let _ = writeln!(out, "removed: nothing (no metadata found)");
    }
    // Many sample runs of one track read better as one line.
    let mut grouped: Vec<(&str, u64, usize)> = Vec::new();
    for r in &report.removed {
        match grouped.iter_mut().find(|g| g.0 == r.what) {
            Some(g) => {
                g.1 += r.bytes;
                g.2 += 1;
            }
            None => grouped.push((&r.what, r.bytes, 1)),
        }
    }
    for (what, bytes, n) in grouped {
        let times = if n > 1 { format!(" ×{n}") } else { String::new() };
        let _ = writeln!(out, "removed: {what}{times} ({bytes} bytes)");
    }
    for k in &report.kept {
        let _ = writeln!(out, "kept: {k}");
    }
    out
}

// Small big/little-endian readers shared by the walkers; `None` past the end, never a panic.

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

pub(crate) fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Printable form of a four-character code, for messages.
pub(crate) fn fourcc(t: &[u8]) -> String {
    t.iter().map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content_not_name() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nxxxx").unwrap(), Format::Png);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::Webp);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt ").unwrap(), Format::Wav);
        assert_eq!(sniff(b"GIF89a").unwrap(), Format::Gif);
        assert!(matches!(sniff(b"II*\0abcd"), Err(MediaError::Unsupported(_))));
        assert!(matches!(sniff(b"{\"json\": 1}"), Err(MediaError::UnknownFormat)));
        assert!(matches!(sniff(b""), Err(MediaError::UnknownFormat)));
        // Text that happens to spell a magic number is not media.
        assert!(matches!(sniff(b"ID3tag=1&x=2"), Err(MediaError::UnknownFormat)));
        assert!(matches!(sniff(b"{  \"free\": 1}"), Err(MediaError::UnknownFormat)));
        assert!(matches!(sniff(b"\n\n\n\nmdat=1"), Err(MediaError::UnknownFormat)));
        assert_eq!(sniff(b"\0\0\0\x08wide\0\0\0\x10mdat").unwrap(), Format::Video);
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: MediaConfig = toml::from_str("max_image = \"8MiB\"").unwrap();
        assert_eq!(c.max_image, Size(8 << 20));
        assert_eq!(c.max_video, Size(99 << 20));
        assert!(toml::from_str::<MediaConfig>("max_imgae = \"8MiB\"").is_err());
        assert!(MediaConfig::default().validate().is_ok());
        let c: MediaConfig = toml::from_str("max_parts = 0").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "media.max_parts");
        let c: MediaConfig = toml::from_str("tmp_max_bytes = \"1MiB\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "media.tmp_max_bytes");
        let c: MediaConfig = toml::from_str("tmp_client_bytes = \"2GiB\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "media.tmp_client_bytes");
        let c: MediaConfig = toml::from_str("tmp_client_files = 300").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "media.tmp_client_files");
        let c: MediaConfig = toml::from_str("spool_client_memory = \"1GiB\"").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "media.spool_client_memory");
    }
}
