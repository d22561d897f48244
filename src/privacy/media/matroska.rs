//! Matroska and WebM (browser and screen recordings, Android and desktop clips),
//! scrubbed **in place** like ISOBMFF: each metadata element is overwritten by an EBML
//! `Void` element of exactly its length, so no offset moves (`SeekHead` and `Cues` stay
//! valid) and a 90 MB upload is patched from its headers alone.
//!
//! What is neutralised (turned into a zeroed `Void`):
//! - `Tags`: where ffmpeg writes `-metadata location=...`, and editors write place names,
//!   people and comments;
//! - `Attachments`: cover images carry their own EXIF;
//! - `Chapters`: free text;
//! - in `Info`, everything but the timestamp scale, the duration and the application
//!   names: `Title`, `SegmentFilename` (the name on the recording device), `DateUTC`
//!   (when it was recorded, like EXIF `DateTimeOriginal`), the previous/next file names
//!   and UUIDs, `SegmentUUID`, `SegmentFamily`, chapter translations and anything
//!   unknown; `MuxingApp` and `WritingApp` (which name the recording software, often
//!   with its version) are required elements, so their text is zeroed in place (an empty
//!   string) rather than removed. `Info`'s CRC-32, when it has one, is recomputed;
//! - unknown elements at the Segment's top level, and the contents of existing `Void`s
//!   there, in `Info`, `Tracks` and Clusters (a tag editor that shrank `Tags` leaves the
//!   old bytes in a Void);
//! - **every track that is neither video nor audio** (subtitles: SRT, WebVTT, ASS with
//!   its script header; the telemetry subtitles drones and dashcams write, `GPS(48.85,
//!   2.29)` in every cue; buttons, metadata and control tracks), the same rule as MP4: its
//!   `TrackEntry` and **every one of its blocks** (`SimpleBlock`, `BlockGroup`, laced or
//!   not) become Voids where they lie; so do blocks of a track no `TrackEntry` declares;
//! - in each kept track, the free text: `Name`, `CodecName`, `CodecSettings`,
//!   `CodecInfoURL`, `CodecDownloadURL`, an `AttachmentLink`, and any element a track
//!   entry does not define;
//! - unknown elements in `Tracks` and in Clusters. The CRC-32s of `Info`, `Tracks`, its
//!   entries and of each Cluster changed are recomputed.
//!
//! - inside the kept masters (the EBML header, `SeekHead`/`Seek`, `Cues`/`CuePoint`, a
//!   track's `Video`, `Colour`, `Projection`, `Audio`, `ContentEncodings`,
//!   `TrackOperation`, a Cluster's `SilentTracks` and `BlockGroup`), every child its
//!   specification does not define there ([`masters`]), since exiftool reads a `Title`
//!   or `DateUTC` anywhere; a block's `BlockAdditions`, a track's `BlockAdditionMapping`
//!   and `TrackTranslate`;
//! - in the frames and `CodecPrivate` of H.264, HEVC and AV1 tracks, every SEI NAL unit
//!   and AV1 metadata OBU, rewritten as padding of the same length
//!   ([`super::bitstream`]); bytes after `CodecPrivate`'s fields are zeroed;
//! - the comment header (and FLAC's picture, application and cue sheet blocks) in the
//!   `CodecPrivate` of Vorbis, Theora and FLAC tracks ([`codec_private`]).
//!
//! Kept byte for byte: `TimestampScale` and `Duration`, the defined fields of the video
//! and audio tracks (codec, codec private data of other codecs, sizes, colour), their
//! blocks (every frame) and the defined fields of `SeekHead` and `Cues` (seek points:
//! times and positions).
//!
//! Refused: a DocType other than `webm` or `matroska`; an element running past its parent
//! or the end of the file; IDs and sizes that are not valid EBML variable-length
//! integers; an unknown size anywhere but on the Segment and its Clusters (which live
//! recordings, Chrome's MediaRecorder among them, leave unknown); Clusters without a
//! `Tracks` element to say whose blocks they hold; H.264, HEVC or AV1 frames that cannot
//! be walked (laced, compressed or encrypted, a NAL unit length past the frame, no
//! `CodecPrivate` for H.264 or HEVC).

mod codec_private;
mod masters;

use std::io;

use super::{
    Format, MediaError, Report,
    bitstream::{self, Codec, ConfigKind, Filler},
    inplace::{Store, is_zero, zero},
};

const EBML: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const INFO: u32 = 0x1549_A966;
const TRACKS: u32 = 0x1654_AE6B;
const CLUSTER: u32 = 0x1F43_B675;
const CUES: u32 = 0x1C53_BB6B;
const ATTACHMENTS: u32 = 0x1941_A469;
const CHAPTERS: u32 = 0x1043_A770;
const TAGS: u32 = 0x1254_C367;
const TITLE: u32 = 0x7BA9;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const VOID: u32 = 0xEC;
const CRC32: u32 = 0xBF;

/// The Segment's children: in an unknown-size Cluster, one of these ends the Cluster.
const SEGMENT_CHILDREN: [u32; 8] = [SEEK_HEAD, INFO, TRACKS, CLUSTER, CUES, ATTACHMENTS, CHAPTERS, TAGS];

/// Largest EBML header or `Info` read into memory; real ones are under a kilobyte.
const MAX_HEADER: u64 = 1 << 20;

/// Recognises Matroska/WebM by the EBML magic.
pub fn sniff(b: &[u8]) -> bool {
    b.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
}

/// Neutralises every metadata carrier; see the module docs.
pub fn scrub(store: &mut impl Store, report: &mut Report) -> Result<(), MediaError> {
    let plan = plan(store)?;
    // Voids first: a recomputed CRC covers them.
    for action in &plan {
        match *action {
            Action::Void { at, len, ref what } => {
                write_void(store, at, len)?;
                report.remove(what.clone(), len);
            }
            Action::ZeroVoid { data, end, ref what } => {
                zero(store, data, end - data)?;
                report.remove(what.clone(), end - data);
            }
            Action::Fill { at, ref filler } => {
                store.write_at(at, &filler.bytes())?;
                report.remove(filler.what.clone(), filler.len as u64);
            }
            Action::Patch { at, ref bytes, ref what } => {
                store.write_at(at, bytes)?;
                report.remove(what.clone(), bytes.len() as u64);
            }
            Action::Crc { .. } => {}
        }
    }
    // In plan order: an inner element's CRC before the CRC of the element around it.
    for action in &plan {
        if let Action::Crc { at, from, to } = *action {
            let crc = crc32_of(store, from, to)?;
            store.write_at(at, &crc.to_le_bytes())?;
        }
    }
    Ok(())
}

/// The CRC-32 of `from..to` in the store, read a megabyte at a time (a Cluster can be
/// tens of megabytes).
fn crc32_of(store: &mut impl Store, mut from: u64, to: u64) -> io::Result<u32> {
    let mut crc = !0u32;
    let mut buf = vec![0u8; usize::try_from((to - from).min(1 << 20)).unwrap_or(1 << 20)];
    while from < to {
        let n = usize::try_from((to - from).min(buf.len() as u64)).unwrap_or(buf.len());
        store.read_at(from, &mut buf[..n])?;
        crc = crc32_update(crc, &buf[..n]);
        from += n as u64;
    }
    Ok(!crc)
}

/// The same plan, applied to nothing: what would still change. Empty means clean.
pub fn audit(store: &mut impl Store, report: &mut Report) -> Result<(), MediaError> {
    for action in plan(store)? {
        match action {
            Action::Void { len, what, .. } => report.remove(what, len),
            Action::ZeroVoid { data, end, what } => report.remove(what, end - data),
            Action::Fill { filler, .. } => report.remove(filler.what, filler.len as u64),
            Action::Patch { bytes, what, .. } => report.remove(what, bytes.len() as u64),
            // Only planned alongside another change inside the same element.
            Action::Crc { .. } => report.remove("CRC-32", 4),
        }
    }
    Ok(())
}

#[derive(Debug)]
enum Action {
    /// Overwrite the element at `at`, `len` bytes long, with a zeroed Void.
    Void { at: u64, len: u64, what: String },
    /// Zero the payload of an element that stays (an old Void, an application name).
    ZeroVoid { data: u64, end: u64, what: String },
    /// Overwrite a NAL unit or OBU inside a frame or `CodecPrivate` with padding of its
    /// length ([`bitstream`]: an SEI, an AV1 metadata OBU). Planned only when it differs.
    Fill { at: u64, filler: Filler },
    /// Write these bytes where they lie (a `CodecPrivate` with its tags emptied).
    Patch { at: u64, bytes: Vec<u8>, what: String },
    /// Recompute the CRC-32 stored at `at` over `from..to`.
    Crc { at: u64, from: u64, to: u64 },
}

/// An element header: where it starts, where its data starts, where it ends.
#[derive(Debug, Clone, Copy)]
struct Element {
    id: u32,
    data: u64,
    /// `None`: unknown size (runs until its parent's end, or a sibling's ID).
    end: Option<u64>,
}

fn malformed(what: impl Into<String>) -> MediaError {
    MediaError::malformed(Format::Matroska, what)
}

fn truncated(what: impl Into<String>) -> MediaError {
    MediaError::truncated(Format::Matroska, what)
}

fn name(id: u32) -> String {
    match id {
        TITLE => "Info/Title".into(),
        0x7384 => "Info/SegmentFilename".into(),
        0x4461 => "Info/DateUTC".into(),
        0x73A4 => "Info/SegmentUUID".into(),
        0x3CB923 => "Info/PrevUUID".into(),
        0x3C83AB => "Info/PrevFilename".into(),
        0x3EB923 => "Info/NextUUID".into(),
        0x3E83BB => "Info/NextFilename".into(),
        0x4444 => "Info/SegmentFamily".into(),
        0x6924 => "Info/ChapterTranslate".into(),
        MUXING_APP => "Info/MuxingApp".into(),
        WRITING_APP => "Info/WritingApp".into(),
        TAGS => "Tags".into(),
        0x7373 => "Tag".into(),
        0x67C8 => "SimpleTag".into(),
        ATTACHMENTS => "Attachments".into(),
        CHAPTERS => "Chapters".into(),
        INFO => "Info".into(),
        CLUSTER => "Cluster".into(),
        SEGMENT => "Segment".into(),
        other => format!("element {other:#X}"),
    }
}

fn plan(store: &mut impl Store) -> Result<Vec<Action>, MediaError> {
    let len = store.len();
    let mut plan = Vec::new();
    let head = header(store, 0, len)?;
    if head.id != EBML {
        return Err(malformed("no EBML header"));
    }
    let head_end = head.end.ok_or_else(|| malformed("an EBML header of unknown size"))?;
    check_doc_type(store, &head, head_end)?;
    masters::walk(store, &head, head_end, &masters::EBML_HEADER, &mut plan)?;
    let mut at = head_end;
    let mut segments = 0;
    while at < len {
        let el = header(store, at, len)?;
        let end = el.end.unwrap_or(len);
        match el.id {
            SEGMENT => {
                segment(store, &el, end, &mut plan)?;
                segments += 1;
            }
            VOID => void_contents(store, &el, end, "a Void before the Segment", &mut plan)?,
            other => return Err(malformed(format!("{} outside the Segment", name(other)))),
        }
        at = end;
    }
    if segments == 0 {
        return Err(truncated("no Segment"));
    }
    Ok(plan)
}

fn check_doc_type(store: &mut impl Store, head: &Element, end: u64) -> Result<(), MediaError> {
    let bytes = read(store, head.data, end)?;
    let mut at = 0usize;
    // Absent, the DocType is "matroska" (RFC 9559).
    let mut doc_type = b"matroska".to_vec();
    while at < bytes.len() {
        let (id, id_len) = vint_id(&bytes[at..])?;
        let (size, size_len) = vint_size(&bytes[at + id_len..])?;
        let data = at + id_len + size_len;
        let size = size.ok_or_else(|| malformed("an EBML header field of unknown size"))?;
        let field_end = usize::try_from(size)
            .ok()
            .and_then(|s| data.checked_add(s))
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| truncated("an EBML header field"))?;
        if id == DOC_TYPE {
            doc_type = bytes[data..field_end].iter().copied().take_while(|&b| b != 0).collect();
        }
        at = field_end;
    }
    match doc_type.as_slice() {
        b"webm" | b"matroska" => Ok(()),
        _ => Err(MediaError::Unsupported("this EBML document type (not WebM or Matroska)")),
    }
}

fn segment(store: &mut impl Store, seg: &Element, end: u64, plan: &mut Vec<Action>) -> Result<(), MediaError> {
    // Tracks first, wherever they are: a Cluster's blocks are kept or voided by track.
    let mut kids = Vec::new();
    let mut at = seg.data;
    while at < end {
        let el = header(store, at, end)?;
        let next = match el.end {
            Some(e) => e,
            None if el.id == CLUSTER => cluster_end(store, &el, end)?,
            None => return Err(malformed(format!("{} of unknown size", name(el.id)))),
        };
        kids.push((at, el, next));
        at = next;
    }
    let mut kept: Option<Vec<Kept>> = None;
    for &(_, el, next) in kids.iter().filter(|k| k.1.id == TRACKS) {
        kept.get_or_insert_with(Vec::new).extend(tracks(store, &el, next, plan)?);
    }
    for (at, el, next) in kids {
        match el.id {
            TAGS | ATTACHMENTS | CHAPTERS => plan.push(Action::Void { at, len: next - at, what: name(el.id) }),
            INFO => info(store, &el, next, plan)?,
            TRACKS => {}
            CLUSTER => {
                let kept = kept.as_deref().ok_or_else(|| malformed("Clusters but no Tracks element"))?;
                cluster(store, &el, next, kept, plan)?;
            }
            VOID => void_contents(store, &el, next, "a Void in the Segment", plan)?,
            SEEK_HEAD => masters::walk(store, &el, next, &masters::SEEK_HEAD, plan)?,
            CUES => masters::walk(store, &el, next, &masters::CUES, plan)?,
            CRC32 => {}
            other => plan.push(Action::Void { at, len: next - at, what: format!("unknown Segment {}", name(other)) }),
        }
    }
    Ok(())
}

const TIMESTAMP: u32 = 0xE7;
const SILENT_TRACKS: u32 = 0x5854;
const POSITION: u32 = 0xA7;
const PREV_SIZE: u32 = 0xAB;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const ENCRYPTED_BLOCK: u32 = 0xAF;

/// A Cluster: each block of a track that is not kept (a subtitle or metadata track, or
/// one no TrackEntry declares) becomes a Void where it lies, as do unknown elements; the
/// Cluster's CRC-32, if it has one, is recomputed.
fn cluster(
    store: &mut impl Store,
    el: &Element,
    end: u64,
    kept: &[Kept],
    plan: &mut Vec<Action>,
) -> Result<(), MediaError> {
    let before = plan.len();
    let find = |track: Option<u64>| track.and_then(|t| kept.iter().find(|k| k.number == t));
    let (mut at, mut crc) = (el.data, None);
    while at < end {
        let child = header(store, at, end)?;
        let next = child.end.ok_or_else(|| malformed(format!("{} of unknown size in a Cluster", name(child.id))))?;
        match child.id {
            CRC32 if at == el.data => {
                if next - child.data != 4 {
                    return Err(malformed("a CRC-32 that is not 4 bytes"));
                }
                crc = Some((child.data, next));
            }
            TIMESTAMP | POSITION | PREV_SIZE => {}
            SILENT_TRACKS => masters::walk(store, &child, next, &masters::SILENT_TRACKS, plan)?,
            SIMPLE_BLOCK | ENCRYPTED_BLOCK => {
                let track = block_track(store, child.data, next)?;
                match find(track) {
                    None => plan.push(Action::Void { at, len: next - at, what: dropped_block(track) }),
                    Some(Kept { codec: Some(codec), .. }) => {
                        if child.id == ENCRYPTED_BLOCK {
                            return Err(MediaError::Unsupported("encrypted (DRM-protected) video or audio"));
                        }
                        frames(store, child.data, next, *codec, plan)?;
                    }
                    Some(_) => {}
                }
            }
            BLOCK_GROUP => {
                let (mut track, mut block) = (None, None);
                let mut fields = Vec::new();
                let mut inner = child.data;
                while inner < next {
                    let field = header(store, inner, next)?;
                    let field_end = field.end.ok_or_else(|| malformed("a block field of unknown size"))?;
                    if field.id == BLOCK {
                        track = block_track(store, field.data, field_end)?;
                        block = Some((field.data, field_end));
                    }
                    fields.push((inner, field, field_end));
                    inner = field_end;
                }
                match find(track) {
                    None => plan.push(Action::Void { at, len: next - at, what: dropped_block(track) }),
                    Some(k) => {
                        for (at, field, end) in fields {
                            match field.id {
                                BLOCK | BLOCK_DURATION | REFERENCE_PRIORITY | REFERENCE_BLOCK | DISCARD_PADDING => {}
                                VOID => void_contents(store, &field, end, "a Void in a BlockGroup", plan)?,
                                BLOCK_ADDITIONS => plan.push(Action::Void {
                                    at,
                                    len: end - at,
                                    what: "BlockAdditions (data beside a frame no player needs)".into(),
                                }),
                                other => plan.push(Action::Void {
                                    at,
                                    len: end - at,
                                    what: format!("{} in a BlockGroup (not needed to play)", name(other)),
                                }),
                            }
                        }
                        if let (Some(codec), Some((data, end))) = (k.codec, block) {
                            frames(store, data, end, codec, plan)?;
                        }
                    }
                }
            }
            VOID => void_contents(store, &child, next, "a Void in a Cluster", plan)?,
            other => plan.push(Action::Void { at, len: next - at, what: format!("unknown Cluster {}", name(other)) }),
        }
        at = next;
    }
    push_crc(plan, before, crc, end);
    Ok(())
}

const BLOCK_DURATION: u32 = 0x9B;
const REFERENCE_PRIORITY: u32 = 0xFA;
const REFERENCE_BLOCK: u32 = 0xFB;
const DISCARD_PADDING: u32 = 0x75A2;
const BLOCK_ADDITIONS: u32 = 0x75A1;

/// Largest block read to walk its frame; real ones are kilobytes to a few MB.
const MAX_FRAME: u64 = 64 << 20;

/// A track that stays, and the codec its frames are walked with ([`bitstream`]).
#[derive(Debug, Clone, Copy)]
struct Kept {
    number: u64,
    codec: Option<Codec>,
}

/// The frame of a (Simple)Block of an H.264, HEVC or AV1 track: an SEI NAL unit or a
/// metadata OBU becomes padding of its length. Laced blocks (several frames, sizes in
/// the lace header) are refused for these codecs: no muxer laces video.
fn frames(store: &mut impl Store, data: u64, end: u64, codec: Codec, plan: &mut Vec<Action>) -> Result<(), MediaError> {
    if end - data > MAX_FRAME {
        return Err(malformed(format!("a {} block of {} bytes", codec.name(), end - data)));
    }
    let mut buf = vec![0u8; (end - data) as usize];
    store.read_at(data, &mut buf)?;
    let number_len = buf.first().map_or(9, |b| b.leading_zeros() as usize + 1);
    let head = number_len + 3;
    if number_len > 8 || buf.len() < head {
        return Err(malformed(format!("a {} block shorter than its header", codec.name())));
    }
    if buf[head - 1] & 0x06 != 0 {
        return Err(malformed(format!("laced {} frames, which pavise cannot check", codec.name())));
    }
    let fillers = bitstream::scrub_sample(codec, &buf[head..])
        .map_err(|e| malformed(format!("the block at byte {data} cannot be checked: {e}")))?;
    plan.extend(fillers.into_iter().map(|filler| Action::Fill { at: data + (head + filler.at) as u64, filler }));
    Ok(())
}

/// Video `CodecID`s whose frames are kept without being walked, because their bitstream
/// has no place for user data a reader turns into a location, a time or a device (VP8,
/// VP9, ProRes; Theora's comments are in its `CodecPrivate`, scrubbed; MPEG-4 Part 2 user
/// data holds an encoder string, a documented limit). Any other video codec is refused:
/// `V_MS/VFW/FOURCC` and `V_QUICKTIME` carry a fourcc ffmpeg may decode as H.264 (its RIFF
/// and mov tables), `V_MJPEG` frames keep their Exif, MPEG-1/2 their user data.
const PASSED_VIDEO: &[&str] =
    &["V_VP8", "V_VP9", "V_THEORA", "V_PRORES", "V_MPEG4/ISO/SP", "V_MPEG4/ISO/ASP", "V_MPEG4/ISO/AP"];

/// The codec a kept track's frames are walked with, from its `CodecID`; its
/// `CodecPrivate` (the `avcC`, `hvcC` or `av1C` record) is walked too: SEI in it
/// becomes padding, bytes after its fields are zeroed. A Vorbis, Theora or FLAC
/// track's `CodecPrivate` loses its comments and pictures ([`codec_private`]).
fn track_codec(
    store: &mut impl Store,
    codec_id: &str,
    private: Option<(u64, u64)>,
    encoded: bool,
    plan: &mut Vec<Action>,
) -> Result<Option<Codec>, MediaError> {
    let kind = match codec_id {
        "V_MPEG4/ISO/AVC" => ConfigKind::Avc,
        "V_MPEGH/ISO/HEVC" => ConfigKind::Hevc,
        "V_AV1" => ConfigKind::Av1,
        _ => {
            if let Some((data, end)) = private {
                let record = read(store, data, end)?;
                if let Some(clean) = codec_private::scrub(codec_id, &record).map_err(malformed)? {
                    plan.push(Action::Patch {
                        at: data,
                        bytes: clean,
                        what: format!("tags in {codec_id} CodecPrivate"),
                    });
                }
            }
            return Ok(None);
        }
    };
    if encoded {
        return Err(malformed(format!(
            "a {codec_id} track with compressed or encrypted frames, which pavise cannot check"
        )));
    }
    let Some((data, end)) = private else {
        return match kind {
            ConfigKind::Av1 => Ok(Some(Codec::Av1)),
            _ => Err(malformed(format!("a {codec_id} track without CodecPrivate, so its frames cannot be checked"))),
        };
    };
    let record = read(store, data, end)?;
    let config = bitstream::scrub_config(kind, &record).map_err(|e| malformed(e.to_string()))?;
    plan.extend(config.fillers.into_iter().map(|filler| Action::Fill { at: data + filler.at as u64, filler }));
    if record[config.fields_len..].iter().any(|&b| b != 0) {
        plan.push(Action::ZeroVoid {
            data: data + config.fields_len as u64,
            end,
            what: "bytes after the fields of CodecPrivate".into(),
        });
    }
    Ok(Some(config.codec))
}

fn dropped_block(track: Option<u64>) -> String {
    match track {
        Some(t) => format!("blocks of track {t} (not video or audio)"),
        None => "a block with no track number".into(),
    }
}

/// The track number a Block or SimpleBlock starts with (an EBML variable-length integer).
fn block_track(store: &mut impl Store, data: u64, end: u64) -> Result<Option<u64>, MediaError> {
    let mut buf = [0u8; 8];
    let n = usize::try_from((end - data).min(8)).unwrap_or(8);
    store.read_at(data, &mut buf[..n])?;
    Ok(vint_size(&buf[..n]).ok().and_then(|(v, _)| v))
}

/// Where an unknown-size Cluster ends: at the next Segment-level element, or `limit`.
fn cluster_end(store: &mut impl Store, cluster: &Element, limit: u64) -> Result<u64, MediaError> {
    let mut at = cluster.data;
    while at < limit {
        let el = header(store, at, limit)?;
        if SEGMENT_CHILDREN.contains(&el.id) {
            return Ok(at);
        }
        at = el.end.ok_or_else(|| malformed(format!("{} of unknown size in a Cluster", name(el.id))))?;
    }
    Ok(limit)
}

fn info(store: &mut impl Store, el: &Element, end: u64, plan: &mut Vec<Action>) -> Result<(), MediaError> {
    if end - el.data > MAX_HEADER {
        return Err(malformed("an Info element over 1 MiB"));
    }
    let mut at = el.data;
    let mut crc = None;
    let before = plan.len();
    while at < end {
        let child = header(store, at, end)?;
        let next = child.end.ok_or_else(|| malformed("an Info field of unknown size"))?;
        match child.id {
            // The CRC-32 element is its parent's first child, over everything after it.
            CRC32 if at == el.data => {
                if next - child.data != 4 {
                    return Err(malformed("a CRC-32 that is not 4 bytes"));
                }
                crc = Some((child.data, next));
            }
            TIMESTAMP_SCALE | DURATION => {}
            // Required, so kept as elements; their text says which software recorded it.
            MUXING_APP | WRITING_APP => {
                if !is_zero(store, child.data, next - child.data)? {
                    plan.push(Action::ZeroVoid { data: child.data, end: next, what: name(child.id) });
                }
            }
            VOID => void_contents(store, &child, next, "a Void in Info", plan)?,
            other => plan.push(Action::Void { at, len: next - at, what: name(other) }),
        }
        at = next;
    }
    if plan.len() > before
        && let Some((at, from)) = crc
    {
        plan.push(Action::Crc { at, from, to: end });
    }
    Ok(())
}

const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const TRACK_NAME: u32 = 0x536E;
const CODEC_NAME: u32 = 0x25_8688;
const CODEC_PRIVATE: u32 = 0x63A2;
const VIDEO: u32 = 0xE0;
const AUDIO: u32 = 0xE1;
const TRACK_OPERATION: u32 = 0xE2;
const CONTENT_ENCODINGS: u32 = 0x6D80;

/// TrackEntry fields that describe how to decode and show a track (RFC 9559 §5.1.4.1):
/// numbers, flags, durations, languages, the codec and its private data, block
/// additions, `Video`, `Audio`, operations and content encodings.
const TRACK_FIELDS: &[u32] = &[
    TRACK_NUMBER,
    0x73C5,
    TRACK_TYPE,
    0xB9,
    0x88,
    0x55AA,
    0x55AB,
    0x55AC,
    0x55AD,
    0x55AE,
    0x55AF,
    0x9C,
    0x6DE7,
    0x6DF8,
    0x23_E383,
    0x23_4E7A,
    0x23_314F,
    0x537F,
    0x55EE,
    0x22_B59C,
    0x22_B59D,
    CODEC_ID,
    0x63A2,
    0xAA,
    0x6FAB,
    0x56AA,
    0x56BB,
    0xC0,
    0xC1,
    0xC6,
    0xC7,
    0xC4,
];

/// What a track's free-text fields are called, for the report.
fn track_field(id: u32) -> String {
    match id {
        TRACK_NAME => "Tracks/Name".into(),
        CODEC_NAME => "Tracks/CodecName".into(),
        0x3A_9697 => "Tracks/CodecSettings".into(),
        0x3B_4040 => "Tracks/CodecInfoURL".into(),
        0x26_B240 => "Tracks/CodecDownloadURL".into(),
        0x7446 => "Tracks/AttachmentLink".into(),
        0x41E4 => "Tracks/BlockAdditionMapping (for BlockAdditions, which go)".into(),
        0x6624 => "Tracks/TrackTranslate (for Chapters, which go)".into(),
        other => format!("unknown track field {other:#X}"),
    }
}

/// `Tracks`. A track that is neither video (1) nor audio (2) is voided whole (its blocks
/// go in [`cluster`]); in the others, every field but those a decoder reads (free text:
/// `Name`, `CodecName`, `CodecSettings`, URLs). A CRC-32 of either level is recomputed.
/// Returns the numbers of the tracks kept.
fn tracks(store: &mut impl Store, el: &Element, end: u64, plan: &mut Vec<Action>) -> Result<Vec<Kept>, MediaError> {
    if end - el.data > MAX_HEADER * 16 {
        return Err(malformed("a Tracks element over 16 MiB"));
    }
    let (crc, kids) = master_children(store, el, end)?;
    let before = plan.len();
    let mut kept = Vec::new();
    for (at, child, next) in kids {
        match child.id {
            TRACK_ENTRY => {
                let (entry_crc, fields) = master_children(store, &child, next)?;
                let (mut number, mut kind, mut codec) = (None, None, String::new());
                let (mut private, mut encoded) = (None, false);
                for &(_, field, field_end) in &fields {
                    match field.id {
                        TRACK_NUMBER => number = Some(uint(store, &field, field_end)?),
                        TRACK_TYPE => kind = Some(uint(store, &field, field_end)?),
                        CODEC_PRIVATE => private = Some((field.data, field_end)),
                        CONTENT_ENCODINGS => encoded = true,
                        CODEC_ID => {
                            codec = String::from_utf8_lossy(&read(store, field.data, field_end)?)
                                .trim_end_matches('\0')
                                .chars()
                                .take(32)
                                .collect();
                        }
                        _ => {}
                    }
                }
                if !matches!(kind, Some(1 | 2)) {
                    let what = match kind {
                        Some(0x11) => format!("a subtitle track ({codec}) and its text"),
                        Some(0x21) => format!("a metadata track ({codec})"),
                        _ => format!("a track that is not video or audio ({codec})"),
                    };
                    plan.push(Action::Void { at, len: next - at, what });
                    continue;
                }
                let number = number.ok_or_else(|| malformed("a track without a TrackNumber"))?;
                let entry_before = plan.len();
                for (at, field, next) in fields {
                    match field.id {
                        VOID => void_contents(store, &field, next, "a Void in a track", plan)?,
                        VIDEO => masters::walk(store, &field, next, &masters::VIDEO, plan)?,
                        AUDIO => masters::walk(store, &field, next, &masters::AUDIO, plan)?,
                        TRACK_OPERATION => masters::walk(store, &field, next, &masters::TRACK_OPERATION, plan)?,
                        CONTENT_ENCODINGS => masters::walk(store, &field, next, &masters::CONTENT_ENCODINGS, plan)?,
                        id if TRACK_FIELDS.contains(&id) => {}
                        other => plan.push(Action::Void { at, len: next - at, what: track_field(other) }),
                    }
                }
                let codec_id = codec;
                let codec = track_codec(store, &codec_id, private, encoded, plan)?;
                if codec.is_none()
                    && (kind == Some(1) || codec_id.starts_with("V_"))
                    && !PASSED_VIDEO.contains(&codec_id.as_str())
                {
                    return Err(MediaError::Unsupported(
                        "videos in a codec pavise cannot check for hidden metadata (use H.264, HEVC, AV1, VP8 or VP9)",
                    ));
                }
                kept.push(Kept { number, codec });
                push_crc(plan, entry_before, entry_crc, next);
            }
            VOID => void_contents(store, &child, next, "a Void in Tracks", plan)?,
            other => plan.push(Action::Void { at, len: next - at, what: format!("unknown Tracks {}", name(other)) }),
        }
    }
    push_crc(plan, before, crc, end);
    Ok(kept)
}

/// An unsigned integer element (at most 8 bytes, big-endian).
fn uint(store: &mut impl Store, el: &Element, end: u64) -> Result<u64, MediaError> {
    if end - el.data > 8 {
        return Err(malformed(format!("{} longer than 8 bytes", name(el.id))));
    }
    Ok(read(store, el.data, end)?.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// A master element's CRC-32 (its first child, if any) and its other children, each with
/// where it starts and ends.
#[allow(clippy::type_complexity)]
fn master_children(
    store: &mut impl Store,
    el: &Element,
    end: u64,
) -> Result<(Option<(u64, u64)>, Vec<(u64, Element, u64)>), MediaError> {
    let (mut at, mut crc, mut kids) = (el.data, None, Vec::new());
    while at < end {
        let child = header(store, at, end)?;
        let next = child.end.ok_or_else(|| malformed("a track field of unknown size"))?;
        if child.id == CRC32 && at == el.data {
            if next - child.data != 4 {
                return Err(malformed("a CRC-32 that is not 4 bytes"));
            }
            crc = Some((child.data, next));
        } else {
            kids.push((at, child, next));
        }
        at = next;
    }
    Ok((crc, kids))
}

/// When actions were planned inside an element with a CRC-32, it is recomputed after them.
fn push_crc(plan: &mut Vec<Action>, before: usize, crc: Option<(u64, u64)>, end: u64) {
    if plan.len() > before
        && let Some((at, from)) = crc
    {
        plan.push(Action::Crc { at, from, to: end });
    }
}

fn void_contents(
    store: &mut impl Store,
    void: &Element,
    end: u64,
    what: &str,
    plan: &mut Vec<Action>,
) -> Result<(), MediaError> {
    if !is_zero(store, void.data, end - void.data)? {
        plan.push(Action::ZeroVoid { data: void.data, end, what: format!("old data in {what}") });
    }
    Ok(())
}

/// Reads the element header at `at`, inside a parent that ends at `limit`.
fn header(store: &mut impl Store, at: u64, limit: u64) -> Result<Element, MediaError> {
    let mut buf = [0u8; 12];
    let avail = usize::try_from((limit - at).min(12)).unwrap_or(12);
    if avail < 2 {
        return Err(truncated("an element header"));
    }
    store.read_at(at, &mut buf[..avail])?;
    let (id, id_len) = vint_id(&buf[..avail])?;
    let (size, size_len) = vint_size(&buf[id_len..avail])?;
    let data = at + (id_len + size_len) as u64;
    if data > limit {
        return Err(truncated(format!("the header of {}", name(id))));
    }
    let end = match size {
        None => None,
        Some(size) => Some(
            data.checked_add(size)
                .filter(|e| *e <= limit)
                .ok_or_else(|| truncated(format!("{} runs past its parent or the file", name(id))))?,
        ),
    };
    Ok(Element { id, data, end })
}

/// An element ID: 1 to 4 bytes, the length marker kept in the value (RFC 8794 §5).
fn vint_id(b: &[u8]) -> Result<(u32, usize), MediaError> {
    let first = *b.first().ok_or_else(|| truncated("an element ID"))?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return Err(malformed("an element ID longer than 4 bytes"));
    }
    let bytes = b.get(..len).ok_or_else(|| truncated("an element ID"))?;
    Ok((bytes.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)), len))
}

/// An element size: 1 to 8 bytes, marker removed; all value bits set means unknown.
fn vint_size(b: &[u8]) -> Result<(Option<u64>, usize), MediaError> {
    let first = *b.first().ok_or_else(|| truncated("an element size"))?;
    if first == 0 {
        return Err(malformed("an element size longer than 8 bytes"));
    }
    let len = first.leading_zeros() as usize + 1;
    let bytes = b.get(..len).ok_or_else(|| truncated("an element size"))?;
    let mask = 0xFFu8.checked_shr(len as u32).unwrap_or(0);
    let value = bytes[1..].iter().fold(u64::from(first & mask), |v, &x| (v << 8) | u64::from(x));
    let unknown = (1u64 << (7 * len)) - 1;
    Ok((if value == unknown { None } else { Some(value) }, len))
}

fn read(store: &mut impl Store, from: u64, to: u64) -> Result<Vec<u8>, MediaError> {
    if to - from > MAX_HEADER {
        return Err(malformed("a header element over 1 MiB"));
    }
    let mut buf = vec![0u8; (to - from) as usize];
    store.read_at(from, &mut buf)?;
    Ok(buf)
}

/// Writes a Void element (ID `0xEC`) of exactly `len` bytes at `at`, payload zeroed.
fn write_void(store: &mut impl Store, at: u64, len: u64) -> io::Result<()> {
    // Every element is at least 2 bytes (a 1-byte ID and a 1-byte size), so a Void fits.
    let width = (len - 1).min(8) as usize;
    let payload = len - 1 - width as u64;
    let mut head = [0u8; 9];
    head[0] = 0xEC;
    head[1..=width].copy_from_slice(&payload.to_be_bytes()[8 - width..]);
    head[1] |= 1 << (8 - width);
    store.write_at(at, &head[..=width])?;
    zero(store, at + 1 + width as u64, payload)
}

/// CRC-32 as Matroska uses it (IEEE 802.3, as zlib).
#[cfg(test)]
fn crc32(bytes: &[u8]) -> u32 {
    !crc32_update(!0, bytes)
}

fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::media::inplace::MemStore;

    /// An element with a known size (an 8-byte size field, as mkvmerge writes them).
    fn el(id: u32, data: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = id.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        v.push(0x01);
        v.extend_from_slice(&(data.len() as u64).to_be_bytes()[1..]);
        v.extend_from_slice(data);
        v
    }

    /// The same with an unknown size (as MediaRecorder writes Segment and Clusters).
    fn open_el(id: u32, data: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = id.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        v.push(0x01);
        v.extend_from_slice(&[0xFF; 7]);
        v.extend_from_slice(data);
        v
    }

    fn ebml_header(doc_type: &str) -> Vec<u8> {
        el(EBML, &[el(0x4286, &[1]), el(DOC_TYPE, doc_type.as_bytes())].concat())
    }

    fn tags() -> Vec<u8> {
        let simple = [el(0x45A3, b"LOCATION"), el(0x4487, b"+48.8584+002.2945/")].concat();
        el(TAGS, &el(0x7373, &el(0x67C8, &simple)))
    }

    fn info_with_crc() -> Vec<u8> {
        let fields =
            [el(0x2AD7B1, &[0x0F, 0x42, 0x40]), el(TITLE, b"Holiday in Paris"), el(0x4D80, b"Lavf61")].concat();
        let mut crc = vec![0xBF, 0x84];
        crc.extend_from_slice(&crc32(&fields).to_le_bytes());
        el(INFO, &[crc, fields].concat())
    }

    /// A Cluster's children: its timestamp and one SimpleBlock of track 1 (a key frame).
    fn cluster(frames: &[u8]) -> Vec<u8> {
        [el(0xE7, &[0]), el(0xA3, &[&[0x81, 0, 0, 0x80][..], frames].concat())].concat()
    }

    /// One video track, number 1.
    fn video_tracks() -> Vec<u8> {
        el(TRACKS, &el(TRACK_ENTRY, &[el(TRACK_NUMBER, &[1]), el(TRACK_TYPE, &[1]), el(CODEC_ID, b"V_VP8")].concat()))
    }

    fn scrubbed(mut file: Vec<u8>) -> (Vec<u8>, Report) {
        let mut report = Report::default();
        scrub(&mut MemStore(&mut file), &mut report).unwrap();
        (file, report)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn assert_clean(file: &mut Vec<u8>) {
        let mut again = Report::default();
        audit(&mut MemStore(file), &mut again).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
    }

    #[test]
    fn tags_title_and_attachments_become_voids_in_place() {
        let frames = b"VP8-frame-bytes";
        let attachment = el(0x61A7, &[el(0x466E, b"cover.jpg"), el(0x465C, b"\xFF\xD8\xFF Exif GPS")].concat());
        let segment = [
            el(SEEK_HEAD, &el(0x4DBB, &[el(0x53AB, &TAGS.to_be_bytes()), el(0x53AC, &[0x40])].concat())),
            info_with_crc(),
            video_tracks(),
            el(CLUSTER, &cluster(frames)),
            el(ATTACHMENTS, &attachment),
            tags(),
        ]
        .concat();
        let file = [ebml_header("webm"), el(SEGMENT, &segment)].concat();
        let (mut out, report) = scrubbed(file.clone());
        assert_eq!(out.len(), file.len(), "no offset moves");
        for gone in [&b"48.8584"[..], b"Paris", b"cover.jpg", b"Exif GPS"] {
            assert!(!contains(&out, gone), "{:?} survived", String::from_utf8_lossy(gone));
        }
        assert!(contains(&out, &cluster(frames)), "the frames are untouched");
        let what: Vec<&str> = report.removed.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(what, ["Info/Title", "Info/MuxingApp", "Attachments", "Tags"]);
        // Info's CRC-32 matches its new contents.
        let info_at = out.windows(4).position(|w| w == INFO.to_be_bytes()).unwrap();
        let info = header(&mut MemStore(&mut out), info_at as u64, file.len() as u64).unwrap();
        let (data, end) = (info.data as usize, info.end.unwrap() as usize);
        assert_eq!(out[data], 0xBF);
        assert_eq!(out[data + 2..data + 6], crc32(&out[data + 6..end]).to_le_bytes());
        assert_clean(&mut out);
    }

    #[test]
    fn live_recordings_with_unknown_sizes_are_walked() {
        // MediaRecorder: Segment and Clusters of unknown size; Tags after the last Cluster.
        let segment = [
            info_with_crc(),
            video_tracks(),
            open_el(CLUSTER, &cluster(b"frame-one")),
            open_el(CLUSTER, &cluster(b"frame-two")),
            tags(),
        ]
        .concat();
        let file = [ebml_header("webm"), open_el(SEGMENT, &segment)].concat();
        let (mut out, report) = scrubbed(file.clone());
        assert_eq!(out.len(), file.len());
        assert!(!contains(&out, b"48.8584") && !contains(&out, b"Paris"));
        assert!(contains(&out, b"frame-one") && contains(&out, b"frame-two"));
        assert_eq!(report.removed.len(), 3, "Title, MuxingApp, Tags: {report:?}");
        assert_clean(&mut out);
    }

    #[test]
    fn recording_names_and_times_leave_info_and_required_fields_stay() {
        let fields = [
            el(TIMESTAMP_SCALE, &[0x0F, 0x42, 0x40]),
            el(0x7384, b"VID_20240604_140200_Paris.webm"),
            el(0x4461, &0x0A2B_3C4D_5E6F_7081u64.to_be_bytes()),
            el(0x73A4, &[0xAB; 16]),
            el(0x3C83AB, b"VID_prev_Paris.webm"),
            el(MUXING_APP, b"Lavf61.1.100"),
            el(WRITING_APP, b"Pixel 7 Camera Paris"),
            el(DURATION, &[0x40, 0x8F, 0x40, 0, 0, 0, 0, 0]),
            el(0x6A6A, b"an unknown Paris field"),
        ]
        .concat();
        let file = [
            ebml_header("webm"),
            el(SEGMENT, &[el(INFO, &fields), video_tracks(), el(CLUSTER, &cluster(b"f"))].concat()),
        ]
        .concat();
        let (mut out, report) = scrubbed(file.clone());
        assert_eq!(out.len(), file.len());
        for gone in [&b"Paris"[..], b"Lavf", b"Pixel", &0x0A2B_3C4D_5E6F_7081u64.to_be_bytes(), &[0xAB; 16]] {
            assert!(!contains(&out, gone), "{:?} survived", String::from_utf8_lossy(gone));
        }
        // TimestampScale and Duration are untouched; the two application names are still
        // elements (all-zero text) where they were.
        assert!(contains(&out, &el(TIMESTAMP_SCALE, &[0x0F, 0x42, 0x40])));
        assert!(contains(&out, &el(DURATION, &[0x40, 0x8F, 0x40, 0, 0, 0, 0, 0])));
        assert!(contains(&out, &el(MUXING_APP, &[0; 12])));
        assert!(contains(&out, &el(WRITING_APP, &[0; 20])));
        let what: Vec<&str> = report.removed.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "Info/SegmentFilename",
                "Info/DateUTC",
                "Info/SegmentUUID",
                "Info/PrevFilename",
                "Info/MuxingApp",
                "Info/WritingApp",
                "element 0x6A6A"
            ]
        );
        assert_clean(&mut out);
    }

    #[test]
    fn old_bytes_left_in_a_void_are_zeroed() {
        let mut void = vec![0xEC, 0x90];
        void.extend_from_slice(b"LOCATION=Paris!!");
        let file = [ebml_header("matroska"), el(SEGMENT, &[info_with_crc(), void].concat())].concat();
        let (mut out, _) = scrubbed(file);
        assert!(!contains(&out, b"LOCATION=Paris"));
        assert_clean(&mut out);
    }

    #[test]
    fn voids_of_every_length_parse_back() {
        for len in 2..40u64 {
            let mut buf = vec![0xAB; len as usize + 3];
            write_void(&mut MemStore(&mut buf), 0, len).unwrap();
            let void = header(&mut MemStore(&mut buf), 0, len).unwrap();
            assert_eq!((void.id, void.end), (VOID, Some(len)), "len {len}");
            assert!(buf[1 + (len - 1).min(8) as usize..len as usize].iter().all(|&b| b == 0));
            assert_eq!(buf[len as usize..], [0xAB; 3], "nothing written past the element");
        }
    }

    #[test]
    fn refuses_what_it_cannot_walk_with_certainty() {
        let good = [ebml_header("webm"), el(SEGMENT, &[info_with_crc(), tags()].concat())].concat();
        let refuse = |mut file: Vec<u8>| scrub(&mut MemStore(&mut file), &mut Report::default()).unwrap_err();
        assert!(matches!(refuse(good[..good.len() - 5].to_vec()), MediaError::Truncated { .. }));
        assert!(matches!(refuse([ebml_header("mka-nope"), el(SEGMENT, &[])].concat()), MediaError::Unsupported(_)));
        assert!(matches!(refuse(ebml_header("webm")), MediaError::Truncated { .. }), "no Segment");
        let unknown_tags = [ebml_header("webm"), el(SEGMENT, &open_el(TAGS, b"x"))].concat();
        assert!(matches!(refuse(unknown_tags), MediaError::Malformed { .. }));
        let junk_after = [good.clone(), el(TAGS, b"x")].concat();
        assert!(matches!(refuse(junk_after), MediaError::Malformed { .. }));
        let zero_size_byte = [ebml_header("webm"), vec![0x18, 0x53, 0x80, 0x67, 0x00]].concat();
        assert!(matches!(refuse(zero_size_byte), MediaError::Malformed { .. }));
    }

    /// Red team F1 in Matroska: a video codec pavise neither walks nor knows to be clean
    /// (`V_MS/VFW/FOURCC` holding an H.264 fourcc, Motion JPEG and its Exif) is refused,
    /// whatever the track type says; VP8/VP9 pass as they are.
    #[test]
    fn video_in_a_codec_pavise_does_not_walk_is_refused() {
        let file = |codec: &[u8], kind: u8| {
            let entry =
                el(TRACK_ENTRY, &[el(TRACK_NUMBER, &[1]), el(TRACK_TYPE, &[kind]), el(CODEC_ID, codec)].concat());
            [ebml_header("matroska"), el(SEGMENT, &[el(TRACKS, &entry), el(CLUSTER, &cluster(b"frames"))].concat())]
                .concat()
        };
        for (codec, kind) in [(&b"V_MS/VFW/FOURCC"[..], 1), (b"V_MJPEG", 1), (b"V_QUICKTIME", 2), (b"X_UNKNOWN", 1)] {
            let mut f = file(codec, kind);
            let err = scrub(&mut MemStore(&mut f), &mut Report::default()).unwrap_err();
            assert!(matches!(err, MediaError::Unsupported(_)), "{}: {err}", String::from_utf8_lossy(codec));
        }
        for codec in [&b"V_VP8"[..], b"V_VP9"] {
            let (out, _) = scrubbed(file(codec, 1));
            assert!(contains(&out, b"frames"));
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn track_names_go_and_the_tracks_crc_is_recomputed() {
        let entry = el(
            TRACK_ENTRY,
            &[
                el(TRACK_NUMBER, &[1]),
                el(TRACK_TYPE, &[1]),
                el(CODEC_ID, b"V_VP8"),
                el(TRACK_NAME, b"Pixel 8 Paris"),
                el(CODEC_NAME, b"PaviseCam"),
                el(0x3A_9697, b"--gps 48.85"),
                el(0x6A6B, b"Marker-X1"),
            ]
            .concat(),
        );
        let mut crc = vec![0xBF, 0x84];
        crc.extend_from_slice(&crc32(&entry).to_le_bytes());
        let tracks = el(TRACKS, &[crc, entry].concat());
        let file = [ebml_header("webm"), el(SEGMENT, &[tracks, el(CLUSTER, &cluster(b"frames"))].concat())].concat();
        let (mut out, report) = scrubbed(file);
        for gone in [&b"Paris"[..], b"PaviseCam", b"48.85", b"Marker-X1"] {
            assert!(!contains(&out, gone), "{:?} survived: {report:?}", String::from_utf8_lossy(gone));
        }
        assert!(contains(&out, b"V_VP8") && contains(&out, b"frames"));
        // The CRC stored in Tracks matches what follows it.
        let at = out.windows(2).position(|w| w == [0xBF, 0x84]).unwrap() + 2;
        let tracks_end = out.windows(4).position(|w| w == CLUSTER.to_be_bytes()).unwrap();
        assert_eq!(out[at..at + 4], crc32(&out[at + 4..tracks_end]).to_le_bytes());
        assert_clean(&mut out);
    }

    /// The red team's F2: a WebVTT (or SRT, ASS) track with GPS text in its cues, as
    /// drones and dashcams write them. Its TrackEntry and every block, simple or in a
    /// group, laced or not, become Voids where they lie; the video blocks stay bit for
    /// bit; the Cluster's CRC-32 matches its new contents. Blocks of a track no entry
    /// declares go too.
    #[test]
    fn subtitle_and_metadata_tracks_and_their_blocks_become_voids() {
        let entry = |n: u8, kind: u8, codec: &[u8], private: &[u8]| {
            el(
                TRACK_ENTRY,
                &[el(TRACK_NUMBER, &[n]), el(TRACK_TYPE, &[kind]), el(CODEC_ID, codec), el(0x63A2, private)].concat(),
            )
        };
        let tracks = el(
            TRACKS,
            &[
                entry(1, 1, b"V_VP8", b""),
                entry(2, 0x11, b"D_WEBVTT/SUBTITLES", b"WEBVTT Paris"),
                entry(3, 0x11, b"S_TEXT/ASS", b"[Script Info]\nTitle: Marker-X1"),
                entry(4, 0x21, b"M_GPS", b""),
                entry(5, 2, b"A_OPUS", b"OpusHead"),
            ]
            .concat(),
        );
        let block = |track: u8, flags: u8, data: &[u8]| [&[0x80 | track, 0, 0, flags][..], data].concat();
        let cue = b"GPS(48.8584,2.2945,30) F/2.8 ISO100 2024-06-04 14:02:00";
        // Xiph lacing: two frames, the first 10 bytes long.
        let laced = block(3, 0x02, &[&[1, 10][..], b"Dialogue:1", b"Paris, 14:02"].concat());
        let fields = [
            el(0xE7, &[0]),
            el(0xA3, &block(1, 0x80, b"video-key-frame")),
            el(0xA3, &block(2, 0x80, cue)),
            el(0xA0, &[el(0xA1, &block(2, 0, cue)), el(0x9B, &[10])].concat()),
            el(0xA3, &laced),
            el(0xA3, &block(4, 0x80, b"+48.8584+002.2945/")),
            el(0xA3, &block(9, 0x80, b"undeclared Marker-X1")),
            el(0xA3, &block(5, 0x80, b"opus-packet")),
            el(0xA0, &[el(0xA1, &block(1, 0, b"video-inter-frame")), el(0xFB, &[0x81])].concat()),
        ]
        .concat();
        let mut crc = vec![0xBF, 0x84];
        crc.extend_from_slice(&crc32(&fields).to_le_bytes());
        let file =
            [ebml_header("webm"), el(SEGMENT, &[tracks, el(CLUSTER, &[crc, fields].concat())].concat())].concat();
        let (mut out, report) = scrubbed(file.clone());
        assert_eq!(out.len(), file.len());
        for gone in [&b"48.8584"[..], b"Paris", b"Marker-X1", b"WEBVTT", b"D_WEBVTT", b"S_TEXT", b"M_GPS", b"14:02"] {
            assert!(!contains(&out, gone), "{:?} survived: {report:#?}", String::from_utf8_lossy(gone));
        }
        for kept in [&b"video-key-frame"[..], b"video-inter-frame", b"opus-packet", b"V_VP8", b"A_OPUS", b"OpusHead"] {
            assert!(contains(&out, kept), "{:?} is gone: {report:#?}", String::from_utf8_lossy(kept));
        }
        let cluster_at = out.windows(4).position(|w| w == CLUSTER.to_be_bytes()).unwrap();
        let c = header(&mut MemStore(&mut out), cluster_at as u64, file.len() as u64).unwrap();
        let (data, end) = (c.data as usize, c.end.unwrap() as usize);
        assert_eq!(out[data..data + 2], [0xBF, 0x84]);
        assert_eq!(out[data + 2..data + 6], crc32(&out[data + 6..end]).to_le_bytes(), "the Cluster CRC is recomputed");
        assert_clean(&mut out);
    }

    /// An `avcC` record with an SPS, a PPS and an x264-style SEI in the SPS array.
    fn avcc() -> Vec<u8> {
        let mut r = vec![1, 66, 0, 30, 0xFF, 0xE2];
        for n in [&b"\x67\x42\x00\x1ESPS"[..], b"\x06\x05\x04x264"] {
            r.extend_from_slice(&(n.len() as u16).to_be_bytes());
            r.extend_from_slice(n);
        }
        r.extend_from_slice(&[1, 0, 4, 0x68, 0xCE, 0x3C, 0x80]);
        r
    }

    /// Length-prefixed (4-byte) NAL units: a frame of an `avcC` track.
    fn nals(units: &[&[u8]]) -> Vec<u8> {
        units.iter().flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat()).collect()
    }

    const SEI_GPS: &[u8] = b"\x06\x05\x20\0\x01\x01\0freeGPS 48.8584N 2.2945E 20240604\x80";
    const SLICE: &[u8] = b"\x65\x88\x84\x00\x21slice-data";

    fn avc_tracks(private: Option<&[u8]>, video: &[u8]) -> Vec<u8> {
        let mut fields = [el(TRACK_NUMBER, &[1]), el(TRACK_TYPE, &[1]), el(CODEC_ID, b"V_MPEG4/ISO/AVC")].concat();
        if let Some(p) = private {
            fields.extend(el(CODEC_PRIVATE, p));
        }
        fields.extend(el(VIDEO, video));
        el(TRACKS, &el(TRACK_ENTRY, &fields))
    }

    /// The red team's N1 class in Matroska: an SEI inside an H.264 frame (simple block or
    /// block group) and inside `CodecPrivate` becomes filler of its length; the frame's
    /// slices and the parameter sets stay. `BlockAdditions` go, and a `Title` or
    /// `DateUTC` inside the track's `Video` (N3) becomes a Void.
    #[test]
    fn sei_in_h264_frames_and_codec_private_becomes_filler() {
        let video = [el(0xB0, &[64]), el(0xBA, &[48]), el(TITLE, b"LEAKMARK title"), el(0x4461, &[1; 8])].concat();
        let tracks = avc_tracks(Some(&avcc()), &video);
        let frame = nals(&[b"\x09\xF0", SEI_GPS, SLICE]);
        let additions = el(0x75A1, &el(0xA6, &[el(0xEE, &[1]), el(0xA5, b"LEAKMARK addition")].concat()));
        let fields = [
            el(0xE7, &[0]),
            el(SIMPLE_BLOCK, &[&[0x81, 0, 0, 0x80][..], &frame].concat()),
            el(BLOCK_GROUP, &[el(BLOCK, &[&[0x81, 0, 1, 0][..], &frame].concat()), additions].concat()),
        ]
        .concat();
        let mut crc = vec![0xBF, 0x84];
        crc.extend_from_slice(&crc32(&fields).to_le_bytes());
        let file =
            [ebml_header("matroska"), el(SEGMENT, &[tracks, el(CLUSTER, &[crc, fields].concat())].concat())].concat();
        let (mut out, report) = scrubbed(file.clone());
        assert_eq!(out.len(), file.len());
        for gone in [&b"freeGPS"[..], b"x264", b"LEAKMARK"] {
            assert!(!contains(&out, gone), "{:?} survived: {report:#?}", String::from_utf8_lossy(gone));
        }
        assert!(contains(&out, SLICE) && contains(&out, b"\x67\x42\x00\x1ESPS") && contains(&out, &el(0xB0, &[64])));
        let cluster_at = out.windows(4).position(|w| w == CLUSTER.to_be_bytes()).unwrap();
        let c = header(&mut MemStore(&mut out), cluster_at as u64, file.len() as u64).unwrap();
        let (data, end) = (c.data as usize, c.end.unwrap() as usize);
        assert_eq!(out[data + 2..data + 6], crc32(&out[data + 6..end]).to_le_bytes(), "the Cluster CRC is recomputed");
        assert_clean(&mut out);
    }

    /// Frames that cannot be walked with certainty are a refusal: laced H.264, a frame
    /// whose NAL length overruns it, an H.264 track without its configuration.
    #[test]
    fn h264_frames_that_cannot_be_walked_are_refused() {
        let refuse = |tracks: Vec<u8>, block: Vec<u8>| {
            let file =
                [ebml_header("webm"), el(SEGMENT, &[tracks, el(CLUSTER, &el(SIMPLE_BLOCK, &block))].concat())].concat();
            scrub(&mut MemStore(&mut file.clone()), &mut Report::default()).unwrap_err().to_string()
        };
        let frame = nals(&[SEI_GPS]);
        let laced = [&[0x81, 0, 0, 0x82, 1, 4][..], &frame].concat();
        assert!(refuse(avc_tracks(Some(&avcc()), &[]), laced).contains("laced"));
        let overrun = [&[0x81, 0, 0, 0x80][..], &[0, 0, 1, 0], SLICE].concat();
        assert!(refuse(avc_tracks(Some(&avcc()), &[]), overrun).contains("runs past"));
        let err = refuse(avc_tracks(None, &[]), [&[0x81, 0, 0, 0x80][..], &frame].concat());
        assert!(err.contains("without CodecPrivate"), "{err}");
    }

    /// The red team's N3: Title, DateUTC and a SimpleTag in the EBML header, a Seek and
    /// a CuePoint become Voids; what each defines stays.
    #[test]
    fn ebml_header_seekhead_and_cues_keep_only_what_they_define() {
        let title = el(TITLE, b"LEAKMARK title");
        let head = el(EBML, &[el(0x4286, &[1]), el(DOC_TYPE, b"webm"), title.clone()].concat());
        let seek = el(0x4DBB, &[el(0x53AB, &TRACKS.to_be_bytes()), el(0x53AC, &[0x40]), title.clone()].concat());
        let simple = el(0x67C8, &[el(0x45A3, b"LOCATION"), el(0x4487, b"+48.8584+002.2945/")].concat());
        let cue = el(0xBB, &[el(0xB3, &[0]), el(0xB7, &[el(0xF7, &[1]), el(0xF1, &[0x20]), simple].concat())].concat());
        let segment = [el(SEEK_HEAD, &seek), video_tracks(), el(CLUSTER, &cluster(b"frames")), el(CUES, &cue)].concat();
        let file = [head, el(SEGMENT, &segment)].concat();
        let (mut out, report) = scrubbed(file.clone());
        for gone in [&b"LEAKMARK"[..], b"48.8584", b"LOCATION"] {
            assert!(!contains(&out, gone), "{:?} survived: {report:#?}", String::from_utf8_lossy(gone));
        }
        for kept in [&el(DOC_TYPE, b"webm")[..], &el(0x53AB, &TRACKS.to_be_bytes()), &el(0xF1, &[0x20]), b"frames"] {
            assert!(contains(&out, kept), "{kept:?} is gone: {report:#?}");
        }
        assert_clean(&mut out);
    }

    /// A Vorbis track's comment header in `CodecPrivate` (ffmpeg's `-metadata:s:a`
    /// spelling) loses its comments in place; the track entry's CRC follows.
    #[test]
    fn vorbis_comments_in_codec_private_are_emptied() {
        let id = [&b"\x01vorbis"[..], &[0; 23]].concat();
        let comment = [
            &b"\x03vorbis"[..],
            &0u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &13u32.to_le_bytes(),
            b"LOCATION=Kyiv",
            &[1],
        ]
        .concat();
        let private = [&[2, id.len() as u8, comment.len() as u8][..], &id, &comment, b"\x05vorbis"].concat();
        let fields =
            [el(TRACK_NUMBER, &[1]), el(TRACK_TYPE, &[2]), el(CODEC_ID, b"A_VORBIS"), el(CODEC_PRIVATE, &private)];
        let mut crc = vec![0xBF, 0x84];
        crc.extend_from_slice(&crc32(&fields.concat()).to_le_bytes());
        let tracks = el(TRACKS, &el(TRACK_ENTRY, &[crc, fields.concat()].concat()));
        let file = [ebml_header("webm"), el(SEGMENT, &[tracks, el(CLUSTER, &cluster(b"audio"))].concat())].concat();
        let (mut out, report) = scrubbed(file);
        assert!(!contains(&out, b"Kyiv") && contains(&out, b"\x05vorbis") && contains(&out, &id), "{report:#?}");
        let at = out.windows(2).position(|w| w == [0xBF, 0x84]).unwrap() + 2;
        let end = out.windows(4).position(|w| w == CLUSTER.to_be_bytes()).unwrap();
        assert_eq!(out[at..at + 4], crc32(&out[at + 4..end]).to_le_bytes(), "the entry's CRC is recomputed");
        assert_clean(&mut out);
    }

    #[test]
    fn clusters_without_tracks_are_refused() {
        let file =
            [ebml_header("webm"), el(SEGMENT, &[info_with_crc(), el(CLUSTER, &cluster(b"f"))].concat())].concat();
        let err = scrub(&mut MemStore(&mut file.clone()), &mut Report::default()).unwrap_err();
        assert!(err.to_string().contains("no Tracks"), "{err}");
    }
}
