//! ISOBMFF (HEIC, HEIF, AVIF, MP4, MOV, 3GP, M4A), scrubbed **in place**: the file keeps
//! its length and every byte offset, so `stco`/`co64`/`iloc` need no fix-ups and a 90 MB
//! video is patched with only its `moov` (or HEIF `meta`) in memory.
//!
//! **Every box pavise keeps, it has read.** A metadata reader does not look for metadata
//! only where the specification puts it: ffmpeg parses the children of `edts`, `tref`,
//! `sinf`, a sample description's extensions, a QuickTime `wave` and a HEIF item property
//! with one table, so a `udta` holding `©xyz` inside an `avc1` sample entry or an `edts`
//! is read as the file's location, and an `ilst` or `meta` anywhere as tags. So every
//! container is walked with the list of children it may keep (below), and every sample
//! description past its fixed fields; anything not on a list is freed (renamed `free`,
//! zeroed), and what cannot be walked with certainty is refused.
//!
//! What is neutralised (renamed to `free` and zeroed, or zeroed where it lies):
//! - every `udta`, `meta` and `uuid` box (`©xyz`, `loci`, Apple `keys`/`ilst` ISO6709,
//!   GoPro `GPMF`, XMP), wherever it is, and every box not on its container's list;
//! - top-level `uuid` (XMP), a non-image top-level `meta`, and unknown top-level boxes;
//! - timed-metadata and other non-audio/video tracks (GoPro `gpmd`, Apple `mebx`
//!   location, `camm`, subtitles, timecode): their samples are zeroed where `stsz`,
//!   `stsc` and `stco`/`co64` say they are, then the `trak` is freed. Freeing only the
//!   `trak` would leave the GPS samples orphaned but present in `mdat`;
//! - bytes inside `mdat` that no sample (and no HEIF item) points at, where every
//!   track's sample tables could be read ([`unreferenced`]), a fragmented file's runs
//!   included ([`fragments`]);
//! - inside the coded video of H.264, HEVC and AV1 tracks, every SEI NAL unit and AV1
//!   metadata OBU (dashcam `freeGPS`, drone KLV, timing SEI), in every sample and in the
//!   codec configuration, rewritten as padding of its length ([`coded`],
//!   [`super::bitstream`]): Mastodon's passthrough copies the stream as it is;
//! - HEIF/AVIF items that are not images (`Exif`, `mime` XMP, `uri `): their `iloc`
//!   extents are zeroed and their `infe` type renamed, so no reader looks for them; every
//!   item's name; item properties pavise does not know (a refusal if one is essential);
//! - boxes kept but never read by a player: the payload of every `free`, `skip` and
//!   `wide` (where an editor leaves the bytes of what it removed: a `©xyz` in a `free`
//!   box is still a location), and the top-level `prft` (a wall-clock capture time),
//!   `emsg` and `pdin`, which are freed; bytes after the fields of a table or header box;
//! - when and with what it was made: the creation and modification times of `mvhd`,
//!   `tkhd` and `mdhd` (both the 32-bit and 64-bit versions), like EXIF
//!   `DateTimeOriginal` (who was at the protest at 14:02); the name and manufacturer in
//!   every `hdlr` (`GoPro AVC`, `Core Media Video`); the vendor of every sample
//!   description and the compressor name of every video one; brands no specification
//!   defines (a camera maker's own), replaced by one that is.
//!
//! Walked box by box, each level with the list of boxes it may keep: `moov`, `trak`,
//! `edts` (`elst`), `tref` (references to kept tracks), `tapt`, `mdia`, `minf`, `dinf`,
//! `stbl`, `stsd` and each sample description ([`sample_entry`]: the codec
//! configurations a decoder needs, a QuickTime `wave` in turn), `mvex`, `moof`, `traf`,
//! and in a HEIF `meta`: `iinf`, `iref`, `iprp`/`ipco`, `grpl`. Kept as they are:
//! `ftyp`/`styp` (brands, read by [`sniff`]), the sample tables and codec configurations,
//! and the fields of the index boxes (`sidx`, `ssix`; `mfra` walked: `tfra`, `mfro`),
//! whose trailing bytes are zeroed.
//!
//! Then the result is searched as a reader would ([`hidden`]): a `udta`, `meta`, `ilst`,
//! `keys`, `uuid`, `cmov` or `©…` box header anywhere in the boxes pavise keeps means
//! something was missed, and the file is refused rather than forwarded; so does a GPS
//! record (`freeGPS`, MISB KLV) left anywhere in `mdat` (in an audio frame, say), which
//! exiftool finds by scanning the media data.
//!
//! A truncated top-level box (`moov`, `meta`, even `mdat`) is refused, not guessed at, and
//! so is a second copy of a box a reader takes once ([`READ_ONCE`]: a track's tables, a
//! HEIF `meta`'s `iinf`, `iloc`, `iprp`…, a top-level `moov` or image `meta`), or an id
//! listed twice where a reader keeps one entry (two tracks of one id, an item twice in
//! `infe`, `iloc` or `ipma`): pavise must walk the copy the decoder reads.
//! Planning only reads; the same plan run on the output must find nothing to change,
//! which is how [`audit`] proves the result clean.

mod coded;
mod fragments;
mod hidden;
mod sample_entry;
mod unreferenced;

use super::bitstream::{self, Filler};
use super::icc::CodePoint;
use super::{
    Format, MediaError, Report, be16, be32, be64, fourcc,
    inplace::{Store, is_zero, zero},
};
use coded::{Coded, Sample, codec_of};
use std::collections::{HashMap, HashSet};
use unreferenced::DataMap;

/// Largest `moov` or `meta` read into memory; real ones are kilobytes to a few MB.
const MAX_HEADER_BOX: u64 = 64 << 20;

const HEIF_BRANDS: &[&[u8; 4]] = &[
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif", b"avis", b"mif2",
];
const AUDIO_BRANDS: &[&[u8; 4]] = &[b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "];
const VIDEO_BRANDS: &[&[u8; 4]] = &[
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9", b"mp41", b"mp42", b"mp71",
    b"avc1", b"qt  ", b"M4V ", b"M4VH", b"M4VP", b"MSNV", b"XAVC", b"dash", b"f4v ", b"mmp4", b"kddi", b"3gp4",
    b"3gp5", b"3gp6", b"3gp7", b"3gp8", b"3gp9", b"3g2a", b"3g2b", b"3g2c", b"3ge6", b"3ge7", b"3gg6",
];
/// Brands of the MPEG, MIAF, CMAF and DASH specifications a file may also list. Any
/// other brand (`niko`, `CAEP`: the camera's maker) is overwritten by a known one.
const OTHER_BRANDS: &[&[u8; 4]] = &[
    b"miaf", b"MiHE", b"MiHA", b"MiHB", b"MiPr", b"MiAn", b"MiCm", b"MiTi", b"MiAC", b"ma1a", b"ma1b", b"MA1A",
    b"MA1B", b"avio", b"avcs", b"jpeg", b"jpgs", b"vvic", b"vvis", b"unif", b"cmfc", b"cmfs", b"cmf2", b"cmfl",
    b"dby1", b"msix", b"msdh", b"isml", b"piff", b"avc3", b"hvc1", b"hev1", b"opus", b"iso1", b"mp21", b"M4A ",
];

/// Recognises ISOBMFF by its first box. `None`: not ISOBMFF at all.
pub fn sniff(b: &[u8]) -> Option<Result<Format, MediaError>> {
    let kind = b.get(4..8)?;
    // A first box's size starts with a zero byte (under 128 MiB, or the 64-bit form):
    // text that happens to spell `free` or `ftyp` at byte 4 never does.
    let plausible = |max: u32| be32(b, 0).is_some_and(|s| s == 1 || (8..=max).contains(&s));
    if kind != b"ftyp" {
        // Old QuickTime files may start without ftyp.
        let qt = matches!(kind, b"moov" | b"mdat" | b"wide" | b"free" | b"skip" | b"pnot");
        return (qt && plausible(0x0800_0000)).then_some(Ok(Format::Video));
    }
    if !plausible(0xFFFF) {
        return None;
    }
    let size = (be32(b, 0)? as usize).clamp(8, b.len());
    let major = b.get(8..12)?;
    let compatible: Vec<&[u8]> = b.get(16..size).unwrap_or_default().chunks_exact(4).collect();
    let brands = || std::iter::once(major).chain(compatible.iter().copied());
    let has = |set: &[&[u8; 4]]| brands().any(|br| set.iter().any(|s| s.as_slice() == br));
    if brands().any(|br| br == b"crx ") {
        return Some(Err(MediaError::Unsupported("Canon CR3 raw")));
    }
    if brands().any(|br| br == b"jxl ") {
        return Some(Err(MediaError::Unsupported("JPEG XL")));
    }
    let is = |set: &[&[u8; 4]]| set.iter().any(|s| s.as_slice() == major);
    Some(if is(HEIF_BRANDS) {
        Ok(Format::Heif)
    } else if is(AUDIO_BRANDS) {
        Ok(Format::M4a)
    } else if is(VIDEO_BRANDS) || major.starts_with(b"3g") || has(VIDEO_BRANDS) {
        Ok(Format::Video)
    } else if has(HEIF_BRANDS) {
        Ok(Format::Heif)
    } else {
        Err(MediaError::Unsupported("this ISOBMFF brand"))
    })
}

fn known_brand(b: &[u8]) -> bool {
    b.starts_with(b"3g")
        || [HEIF_BRANDS, AUDIO_BRANDS, VIDEO_BRANDS, OTHER_BRANDS]
            .iter()
            .any(|set| set.iter().any(|s| s.as_slice() == b))
}

/// One change the plan asks for.
#[derive(Debug)]
enum Action {
    /// Rename the box at `at` to `free` and zero everything after its size field(s).
    Free { at: u64, zero_from: u64, end: u64, what: String },
    /// Rename an `infe` item type (at this file offset) so no reader looks for the item.
    ItemType { at: u64, what: String },
    /// Zero bytes where they lie (item extents, metadata samples).
    Zero { off: u64, len: u64, what: String },
    /// Zero bytes of a box pavise read and keeps (times, names, `free` payloads).
    Blank { off: u64, len: u64, what: String },
    /// Write these bytes where they lie (an ICC profile with its device blanked).
    Patch { off: u64, bytes: Vec<u8>, what: String },
    /// Overwrite a NAL unit or OBU at `off` with padding of its length (an SEI in a
    /// sample or a codec configuration).
    Fill { off: u64, filler: Filler },
    /// Nothing to change; a note for `pavise scrub -v` (what was not examined, and why).
    Note(String),
}

/// Neutralises every metadata carrier; see the module docs.
pub fn scrub(store: &mut impl Store, format: Format, report: &mut Report) -> Result<(), MediaError> {
    let Plan { actions, mdats } = plan(store, format)?;
    for action in actions {
        apply(store, action, report)?;
    }
    // The bytes as they will be forwarded, now that they are.
    hidden::scan_media(store, &mdats, format)
}

/// The same plan, applied to nothing: what would still change. Empty means clean.
pub fn audit(store: &mut impl Store, format: Format, report: &mut Report) -> Result<(), MediaError> {
    // The media data is not searched again: the scrub pass this audit follows searched
    // exactly these bytes, as forwarded ([`hidden::scan_media`]).
    let Plan { actions, .. } = plan(store, format)?;
    for action in actions {
        match action {
            Action::Free { what, at, end, .. } => report.remove(what, end - at),
            Action::ItemType { what, .. } => report.remove(what, 0),
            Action::Zero { off, len, what } | Action::Blank { off, len, what } => {
                if !is_zero(store, off, len)? {
                    report.remove(what, len);
                }
            }
            Action::Patch { off, bytes, what } => {
                if differs(store, off, &bytes)? {
                    report.remove(what, bytes.len() as u64);
                }
            }
            Action::Fill { off, filler } => {
                if differs(store, off, &filler.bytes())? {
                    report.remove(filler.what, filler.len as u64);
                }
            }
            Action::Note(_) => {}
        }
    }
    Ok(())
}

fn differs(store: &mut impl Store, off: u64, bytes: &[u8]) -> Result<bool, MediaError> {
    let mut now = vec![0u8; bytes.len()];
    store.read_at(off, &mut now)?;
    Ok(now != bytes)
}

const ITEM_GONE: &[u8; 4] = b"free";

fn apply(store: &mut impl Store, action: Action, report: &mut Report) -> Result<(), MediaError> {
    match action {
        Action::Free { at, zero_from, end, what } => {
            store.write_at(at + 4, b"free")?;
            zero(store, zero_from, end - zero_from)?;
            report.remove(what, end - at);
        }
        Action::ItemType { at, what } => {
            store.write_at(at, ITEM_GONE)?;
            report.kept.push(what);
        }
        Action::Zero { off, len, what } | Action::Blank { off, len, what } => {
            if !is_zero(store, off, len)? {
                zero(store, off, len)?;
                report.remove(what, len);
            }
        }
        Action::Patch { off, bytes, what } => {
            if differs(store, off, &bytes)? {
                store.write_at(off, &bytes)?;
                report.remove(what, bytes.len() as u64);
            }
        }
        Action::Fill { off, filler } => {
            let bytes = filler.bytes();
            if differs(store, off, &bytes)? {
                store.write_at(off, &bytes)?;
                report.remove(filler.what, bytes.len() as u64);
            }
        }
        Action::Note(note) => report.kept.push(note),
    }
    Ok(())
}

/// A box header: where it starts, where its payload starts, where it ends.
#[derive(Debug, Clone, Copy)]
struct BoxAt {
    kind: [u8; 4],
    start: u64,
    /// After size, type, largesize and (for `uuid`) the user type.
    payload: u64,
    /// After size, type and largesize: where a renamed `free` box's zeroing starts.
    body: u64,
    end: u64,
}

/// Parses the header at `start` given up to 32 bytes `h` read there; `limit` bounds the box.
fn parse_header(h: &[u8], start: u64, limit: u64, format: Format) -> Result<BoxAt, MediaError> {
    let short = || MediaError::truncated(format, format!("a box header at byte {start} is incomplete"));
    let size32 = be32(h, 0).ok_or_else(short)?;
    let mut kind = [0u8; 4];
    kind.copy_from_slice(h.get(4..8).ok_or_else(short)?);
    let (size, mut hdr) = match size32 {
        0 => (limit - start, 8),
        1 => (be64(h, 8).ok_or_else(short)?, 16),
        s => (u64::from(s), 8),
    };
    let body = start + hdr;
    if &kind == b"uuid" {
        hdr += 16;
    }
    if size < hdr {
        return Err(MediaError::malformed(format, format!("box {} at byte {start} has size {size}", fourcc(&kind))));
    }
    let end = start.checked_add(size).ok_or_else(|| MediaError::malformed(format, "box size overflows"))?;
    if end > limit {
        return Err(MediaError::truncated(format, format!("box {} runs past the end of its container", fourcc(&kind))));
    }
    Ok(BoxAt { kind, start, payload: start + hdr, body, end })
}

/// The children of `buf[from..to]`, where `buf` starts at file offset `base`.
fn children(buf: &[u8], base: u64, from: usize, to: usize, format: Format) -> Result<Vec<BoxAt>, MediaError> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        // A QuickTime container may end with a 4-byte zero terminator.
        if to - pos < 8 && buf.get(pos..to).is_some_and(|t| t.iter().all(|&b| b == 0)) {
            break;
        }
        let h = buf.get(pos..to.min(pos + 32)).unwrap_or_default();
        let b = parse_header(h, base + pos as u64, base + to as u64, format)?;
        pos = (b.end - base) as usize;
        out.push(b);
    }
    Ok(out)
}

/// What planning carries from box to box: the format and how sound descriptions are laid
/// out (QuickTime or ISO, as ffmpeg decides it from the brands).
#[derive(Clone, Copy)]
struct Ctx {
    format: Format,
    /// No `ftyp`, or `qt  ` among its brands.
    quicktime: bool,
}

/// What a file needs done, and where its media data lies (for the GPS backstop, which
/// runs once the plan is applied: [`hidden::scan_media`]).
struct Plan {
    actions: Vec<Action>,
    mdats: Vec<(u64, u64)>,
}

fn plan(store: &mut impl Store, format: Format) -> Result<Plan, MediaError> {
    let len = store.len();
    let mut actions = Vec::new();
    let mut pos = 0u64;
    let mut saw_moov = false;
    let mut saw_ftyp = false;
    let mut saw_meta = false;
    let mut saw_image_meta = false;
    let mut ctx = Ctx { format, quicktime: true };
    // Where media payloads may lie: `mdat` boxes, and a HEIF `idat`.
    let mut media_data: Vec<(u64, u64)> = Vec::new();
    let mut mdats: Vec<(u64, u64)> = Vec::new();
    // Where samples and items lie, to find the bytes of `mdat` nothing points at.
    let mut map = DataMap::default();
    // The samples of H.264, HEVC and AV1 tracks, walked once every box is planned.
    let mut coded = Coded::default();
    // The movie's tracks, for its fragments.
    let mut tracks = fragments::Tracks::new();
    let mut grids = Vec::new();
    while pos < len {
        let mut h = [0u8; 32];
        let n = (len - pos).min(32) as usize;
        store.read_at(pos, &mut h[..n])?;
        let b = parse_header(&h[..n], pos, len, format)?;
        match &b.kind {
            b"mdat" => {
                media_data.push((b.payload, b.end));
                mdats.push((b.payload, b.end));
            }
            b"ftyp" | b"styp" => {
                // ffmpeg reads the brands of every `ftyp` (and keeps "ISO" once one says
                // so), pavise those of the last: one, or readers lay out sound
                // descriptions differently (red team pass 28, F4).
                if &b.kind == b"ftyp" && std::mem::replace(&mut saw_ftyp, true) {
                    return Err(MediaError::malformed(format, "a second file type box (ftyp)".to_owned()));
                }
                let buf = read_box(store, &b, format)?;
                let quicktime = plan_brands(&buf, &b, format, &mut actions)?;
                if &b.kind == b"ftyp" {
                    ctx.quicktime = quicktime;
                }
            }
            b"sidx" | b"ssix" => {
                let buf = read_box(store, &b, format)?;
                Walk { buf: &buf, base: b.start, format }.slack(&b, &mut actions);
            }
            b"mfra" => {
                let buf = read_box(store, &b, format)?;
                let walk = Walk { buf: &buf, base: b.start, format };
                walk.level(&b, &[b"tfra", b"mfro"], "mfra", &mut actions, |k, actions| {
                    walk.slack(k, actions);
                    Ok(())
                })?;
                hidden::check(&buf, &b, &actions, format)?;
            }
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(&b, "top-level")),
            b"prft" => actions.push(free(&b, "top-level prft (the wall-clock time it was produced)")),
            b"emsg" | b"pdin" => actions.push(free(&b, &format!("top-level {}", fourcc(&b.kind)))),
            b"moof" => {
                let buf = read_box(store, &b, format)?;
                plan_moof(&buf, &b, format, &mut actions)?;
                fragments::map_moof(&buf, &b, format, &tracks, len, &mut map, &mut coded)?;
                hidden::check(&buf, &b, &actions, format)?;
            }
            b"moov" => {
                // ffmpeg reads the first movie box and skips another; pavise must read the
                // one it does, so there is one.
                if saw_moov {
                    return Err(MediaError::malformed(
                        format,
                        "a second movie box (moov): readers take different ones".to_owned(),
                    ));
                }
                saw_moov = true;
                let buf = read_box(store, &b, format)?;
                let mut data = Data { map: &mut map, coded: &mut coded, tracks: &mut tracks, grids: &mut grids };
                plan_moov(&buf, &b, ctx, &mut actions, &mut data)?;
                hidden::check(&buf, &b, &actions, format)?;
            }
            b"meta" => {
                let buf = read_box(store, &b, format)?;
                let mut data = Data { map: &mut map, coded: &mut coded, tracks: &mut tracks, grids: &mut grids };
                let image = plan_heif_meta(&buf, &b, len, format, &mut actions, &mut media_data, &mut data)?;
                // libheif and ffmpeg read the first top-level meta; the one pavise reads
                // as the image's must be the only one.
                if saw_meta && (image || saw_image_meta) {
                    return Err(MediaError::malformed(
                        format,
                        "a second top-level 'meta' box: readers take different ones".to_owned(),
                    ));
                }
                saw_meta = true;
                if image {
                    saw_image_meta = true;
                    hidden::check(&buf, &b, &actions, format)?;
                } else {
                    actions.push(free(&b, "top-level meta"));
                }
            }
            b"uuid" => actions.push(free(&b, "top-level uuid box (XMP or vendor data)")),
            other => actions.push(free(&b, &format!("unknown top-level box '{}'", fourcc(other)))),
        }
        pos = b.end;
    }
    // Zeroing is for media payloads only. An item extent or sample offset that points at
    // the file's own structure (ftyp, moov, meta) would wreck the file, not clean it.
    for action in &actions {
        if let Action::Zero { off, len, what } = action
            && !media_data.iter().any(|&(from, to)| *off >= from && off.saturating_add(*len) <= to)
        {
            return Err(MediaError::malformed(format, format!("{what} at byte {off} lies outside the media data")));
        }
    }
    for grid in &grids {
        grid.check(store, format)?;
    }
    if let Some(at) = map.overlap() {
        return Err(MediaError::malformed(
            format,
            format!("two chunks cover the bytes at {at} (readers would read them as two tracks' data)"),
        ));
    }
    coded.plan(store, format, &media_data, &mut actions)?;
    match map.gaps(&mdats) {
        Ok(gaps) => actions.extend(gaps.into_iter().map(|(off, len)| Action::Zero {
            off,
            len,
            what: "bytes in mdat that no sample or item points at".into(),
        })),
        Err(why) if !mdats.is_empty() => actions.push(Action::Note(format!("bytes in mdat not checked: {why}"))),
        Err(_) => {}
    }
    match format {
        Format::Heif if !saw_image_meta => Err(MediaError::malformed(format, "no image item information (meta)")),
        Format::Video | Format::M4a if !saw_moov => Err(MediaError::malformed(format, "no movie header (moov)")),
        _ => Ok(Plan { actions, mdats }),
    }
}

fn read_box(store: &mut impl Store, b: &BoxAt, format: Format) -> Result<Vec<u8>, MediaError> {
    let size = b.end - b.start;
    if size > MAX_HEADER_BOX {
        return Err(MediaError::malformed(
            format,
            format!("{} box of {size} bytes is implausibly large", fourcc(&b.kind)),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    store.read_at(b.start, &mut buf)?;
    Ok(buf)
}

fn free(b: &BoxAt, what: &str) -> Action {
    Action::Free { at: b.start, zero_from: b.body, end: b.end, what: what.to_owned() }
}

/// Zeroes what a `free`, `skip` or `wide` box holds: a player never reads it.
fn blank_payload(b: &BoxAt, level: &str) -> Action {
    Action::Blank {
        off: b.payload,
        len: b.end - b.payload,
        what: format!("old bytes in a {level} {}", fourcc(&b.kind)),
    }
}

/// `ftyp`/`styp`: a brand no specification defines (a camera maker's own) is overwritten
/// by a known one of the same file, and bytes after the last whole brand are zeroed.
/// Returns whether the brands make it a QuickTime file (how ffmpeg lays out its sound
/// descriptions).
fn plan_brands(buf: &[u8], b: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<bool, MediaError> {
    let p = payload(buf, b.start, b);
    if p.len() < 8 {
        return Err(MediaError::malformed(format, format!("a short {}", fourcc(&b.kind))));
    }
    let slots: Vec<usize> = std::iter::once(0).chain((8..p.len() - (p.len() - 8) % 4).step_by(4)).collect();
    let quicktime = slots.iter().any(|&at| &p[at..at + 4] == b"qt  ");
    let Some(known) = slots.iter().map(|&at| &p[at..at + 4]).find(|br| known_brand(br)) else {
        return Ok(quicktime);
    };
    // The major brand, when known, stands in for unknown compatible ones.
    let stand_in = if known_brand(&p[..4]) { &p[..4] } else { known }.to_vec();
    let mut patched = p[..p.len() - (p.len() - 8) % 4].to_vec();
    for &at in &slots {
        if !known_brand(&patched[at..at + 4]) {
            patched[at..at + 4].copy_from_slice(&stand_in);
        }
    }
    if patched != p[..patched.len()] {
        actions.push(Action::Patch {
            off: b.payload,
            bytes: patched.clone(),
            what: "brands of no specification".into(),
        });
    }
    if patched.len() < p.len() {
        let off = b.payload + patched.len() as u64;
        actions.push(Action::Blank {
            off,
            len: b.end - off,
            what: format!("bytes after the brands of {}", fourcc(&b.kind)),
        });
    }
    Ok(quicktime)
}

/// A moov/meta buffer being planned: its bytes, their file offset, the format.
#[derive(Clone, Copy)]
struct Walk<'a> {
    buf: &'a [u8],
    base: u64,
    format: Format,
}

impl<'a> Walk<'a> {
    /// The children of a box, from `skip` bytes into its payload (a FullBox's version
    /// and flags, an entry count).
    fn kids(self, parent: &BoxAt, skip: u64) -> Result<Vec<BoxAt>, MediaError> {
        let from = parent.payload + skip;
        if from > parent.end {
            return Err(MediaError::malformed(self.format, format!("a short {} box", fourcc(&parent.kind))));
        }
        children(self.buf, self.base, (from - self.base) as usize, (parent.end - self.base) as usize, self.format)
    }

    fn payload(self, b: &BoxAt) -> &'a [u8] {
        payload(self.buf, self.base, b)
    }

    /// What each box of one level is: kept (on the level's list, then `on_kept`), blanked
    /// (free space) or freed (user data, metadata, anything else).
    fn level(
        self,
        parent: &BoxAt,
        keep: &[&[u8; 4]],
        level: &str,
        actions: &mut Vec<Action>,
        on_kept: impl FnMut(&BoxAt, &mut Vec<Action>) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        self.level_from(parent, 0, keep, level, actions, on_kept)
    }

    /// [`Walk::level`] for a box whose children start `skip` bytes into its payload.
    fn level_from(
        self,
        parent: &BoxAt,
        skip: u64,
        keep: &[&[u8; 4]],
        level: &str,
        actions: &mut Vec<Action>,
        mut on_kept: impl FnMut(&BoxAt, &mut Vec<Action>) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        for k in &self.kids(parent, skip)? {
            match &k.kind {
                b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, level)),
                kind if keep.contains(&kind) => on_kept(k, actions)?,
                b"udta" => actions.push(free(k, &format!("{level}/udta (user data)"))),
                b"meta" => actions.push(free(k, &format!("{level}/meta"))),
                other => actions.push(free(k, &format!("{level}/{} box (not needed to play the file)", fourcc(other)))),
            }
        }
        Ok(())
    }

    /// Zeroes what follows the fields of a table or header box pavise knows the layout of:
    /// no reader looks there, so it can only be something left or hidden.
    fn slack(self, b: &BoxAt, actions: &mut Vec<Action>) {
        let p = self.payload(b);
        if let Some(len) = fields_len(&b.kind, p)
            && len < p.len()
        {
            let off = b.payload + len as u64;
            actions.push(Action::Blank {
                off,
                len: b.end - off,
                what: format!("bytes after the fields of {}", fourcc(&b.kind)),
            });
        }
    }
}

/// The length of a header or table box's fields, for the boxes whose layout is fixed by
/// their version and entry counts. `None`: unknown, or the box is shorter (left as it is).
fn fields_len(kind: &[u8; 4], p: &[u8]) -> Option<usize> {
    claimed_fields_len(kind, p).filter(|&len| len <= p.len())
}

/// The length [`fields_len`] reads from the box's own counts, whether or not the box is
/// that long (a box that claims more than it holds is malformed).
fn claimed_fields_len(kind: &[u8; 4], p: &[u8]) -> Option<usize> {
    let v = *p.first()?;
    let count = |at: usize| be32(p, at).map(|n| n as usize);
    let table = |head: usize, entry: usize| count(4)?.checked_mul(entry)?.checked_add(head);
    let len = match kind {
        b"mvhd" => [100, 112][usize::from(v == 1)],
        b"tkhd" => [84, 96][usize::from(v == 1)],
        b"mdhd" => [24, 36][usize::from(v == 1)],
        b"mehd" | b"tfdt" => [8, 12][usize::from(v == 1)],
        b"vmhd" => 12,
        b"smhd" => 8,
        b"hmhd" => 20,
        b"nmhd" | b"sthd" => 4,
        b"trex" => 24,
        b"mfhd" => 8,
        b"pitm" => [6, 8][usize::from(v == 1)],
        b"ispe" => 12,
        b"irot" | b"imir" | b"a1op" => 1,
        b"pixi" => usize::from(*p.get(4)?) + 5,
        // HEIF item properties (ISO 23008-12, AV1-ISOBMFF, ISO 23001-17), their fields
        // after the version and flags for those that are FullBoxes.
        b"lsel" => 2,
        b"clli" => 4,
        b"cloc" => 5,
        b"tols" => 6,
        b"pasp" | b"amve" => 8,
        b"rloc" | b"iscl" => 12,
        b"mdcv" => 24,
        b"clap" => 32,
        // Sample-description children of a fixed layout (ISO 14496-12 and -14, QuickTime,
        // VP9's `SmDm`/`CoLL`, the spatial-audio `SA3D`), the FullBoxes with their
        // version and flags.
        b"frma" | b"gama" => 4,
        b"fiel" | b"enda" => 2,
        b"btrt" => 12,
        b"SmDm" => 28,
        b"CoLL" | b"ccst" | b"srat" => 8,
        // Channel descriptions only under the tag that says to use them, as ffmpeg reads
        // them, and for at most 64 channels (red team pass 28, F1: a mono layout with 200
        // descriptions kept 4,000 bytes).
        b"chan" => match (count(4), count(12)) {
            (Some(0), Some(n)) if n <= 64 => 16 + 20 * n,
            (Some(0), _) | (None, _) => usize::MAX,
            _ => 16,
        },
        // An ambisonic order's (order + 1)² channels, or ffmpeg refuses the box.
        b"SA3D" => match (count(2), count(8)) {
            (Some(order), Some(n)) if order < 8 && n == (order + 1) * (order + 1) => 12 + 4 * n,
            _ => usize::MAX,
        },
        // Codec configurations of a fixed or self-stated length (AC-3, AMR, Opus, PCM,
        // VP9 version 1, Dolby Vision, H.263); red team pass 28, F2: bytes after them were
        // kept. A `wave`'s `mp4a` holds four zero bytes and its terminator none.
        // FLAC's STREAMINFO block alone, which ffmpeg reads; a VORBIS_COMMENT (text tags)
        // or a picture after it is zeroed (pass 28, F2).
        b"dfLa" => match p.get(4..8) {
            Some(&[kind, 0, 0, 34]) if kind & 0x7F == 0 => 42,
            _ => usize::MAX,
        },
        b"dac3" => 3,
        b"damr" => 9,
        b"dOps" => 11 + [0, 2 + usize::from(*p.get(1)?)][usize::from(*p.get(10)? != 0)],
        b"pcmC" => 6,
        // Version 1 without initialization data, which VP8 and VP9 never have (ffmpeg
        // refuses a file with it); version 0, a draft's layout, is read by no one (pass 29).
        b"vpcC" if v == 1 && be16(p, 10)? == 0 => 12,
        b"vpcC" => usize::MAX,
        b"dvcC" | b"dvvC" | b"dvwC" => 24,
        b"d263" => 7,
        b"mp4a" => 4,
        b"\0\0\0\0" => 0,
        // A size-width flag, then three layer sizes of 2 or 4 bytes.
        b"a1lx" => [7, 13][usize::from(v & 1)],
        // FullBoxes of version 0 only (as libheif reads them): a luminance; a compression
        // of the three libheif decodes and a unit type up to "pixel" (4); a code byte for
        // the widths of each unit's offset (0, 16, 24, 32 or 64 bits) and size (8 to 64
        // bits), a count, then the units.
        b"ndwt" if v == 0 => 8,
        b"cmpC" if v == 0 && matches!(p.get(4..8)?, b"defl" | b"zlib" | b"brot") && *p.get(8)? <= 4 => 9,
        b"icef" if v == 0 => {
            let codes = *p.get(4)?;
            let offset_bits = [0, 16, 24, 32, 64].get(usize::from(codes >> 5))?;
            let size_bits = [8, 16, 24, 32, 64].get(usize::from((codes >> 2) & 7))?;
            count(5)?.checked_mul((offset_bits + size_bits) / 8)?.checked_add(9)?
        }
        // Flags saying which of the primaries (24 bytes) and three luminances follow.
        b"cclv" => {
            1 + [0, 24][usize::from(v & 0x20 != 0)] + [0x10, 0x08, 0x04].iter().filter(|&&f| v & f != 0).count() * 4
        }
        b"cmpd" => count(0)?.checked_mul(2)?.checked_add(4)?,
        // Version 1 is a profile alone; version 0 lists its components (5 bytes each).
        b"uncC" if v == 1 => 8,
        b"uncC" => count(8)?.checked_mul(5)?.checked_add(36)?,
        b"mfro" => 8,
        // reference_ID, timescale, two times (32- or 64-bit), a count, 12 bytes each.
        b"sidx" => {
            let head = [24, 32][usize::from(v == 1)];
            usize::from(be16(p, head - 2)?).checked_mul(12)?.checked_add(head)?
        }
        b"ssix" => {
            let mut at = 8;
            for _ in 0..count(4)? {
                at = count(at)?.checked_mul(4)?.checked_add(at + 4)?;
            }
            at
        }
        // track_ID, the three field sizes, a count; each entry two times or offsets and
        // three numbers of those sizes.
        b"tfra" => {
            let sizes = be32(p, 8)?;
            let entry = [8, 16][usize::from(v == 1)]
                + (sizes as usize & 3)
                + ((sizes as usize >> 2) & 3)
                + ((sizes as usize >> 4) & 3)
                + 3;
            count(12)?.checked_mul(entry)?.checked_add(16)?
        }
        b"elst" => table(8, [12, 20][usize::from(v == 1)])?,
        b"stts" | b"ctts" | b"co64" => table(8, 8)?,
        b"stss" | b"stps" | b"stco" => table(8, 4)?,
        b"stsc" => table(8, 12)?,
        b"stsz" if be32(p, 4)? == 0 => count(8)?.checked_mul(4)?.checked_add(12)?,
        b"stsz" => 12,
        b"stz2" => count(8)?.checked_mul(usize::from(*p.get(7)?))?.div_ceil(8).checked_add(12)?,
        _ => return None,
    };
    Some(len)
}

/// Zeroes the creation and modification times of an `mvhd`, `tkhd` or `mdhd`.
fn blank_times(buf: &[u8], base: u64, b: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    let p = payload(buf, base, b);
    let len = match p.first() {
        Some(0) => 8,
        Some(1) => 16,
        Some(v) => return Err(MediaError::malformed(format, format!("{} version {v}", fourcc(&b.kind)))),
        None => return Err(MediaError::malformed(format, format!("empty {}", fourcc(&b.kind)))),
    };
    if p.len() < 4 + len {
        return Err(MediaError::malformed(format, format!("short {}", fourcc(&b.kind))));
    }
    let what = format!("{} creation and modification times", fourcc(&b.kind));
    actions.push(Action::Blank { off: b.payload + 4, len: len as u64, what });
    Ok(())
}

/// Zeroes a handler's manufacturer (QuickTime) and name, after its type.
fn blank_handler_name(buf: &[u8], base: u64, b: &BoxAt, actions: &mut Vec<Action>) {
    let p = payload(buf, base, b);
    if p.len() > 12 {
        let what = format!("hdlr name '{}'", String::from_utf8_lossy(&p[p.len().min(24)..]).trim_matches('\0'));
        actions.push(Action::Blank { off: b.payload + 12, len: p.len() as u64 - 12, what });
    }
}

fn plan_moof(buf: &[u8], moof: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    let walk = Walk { buf, base: moof.start, format };
    walk.level(moof, &[b"mfhd", b"traf"], "moof", actions, |k, actions| {
        if &k.kind == b"traf" {
            const TRAF: &[&[u8; 4]] =
                &[b"tfhd", b"tfdt", b"trun", b"sbgp", b"sgpd", b"subs", b"saiz", b"saio", b"senc", b"sdtp"];
            walk.level(k, TRAF, "traf", actions, |k, actions| {
                walk.slack(k, actions);
                Ok(())
            })?;
        } else {
            walk.slack(k, actions);
        }
        Ok(())
    })
}

/// Slice of `buf` (which starts at file offset `base`) for a child box's payload.
fn payload<'a>(buf: &'a [u8], base: u64, b: &BoxAt) -> &'a [u8] {
    buf.get((b.payload - base) as usize..(b.end - base) as usize).unwrap_or_default()
}

/// Handlers of the tracks Mastodon plays (video, sound) and of the images and auxiliary
/// pictures (alpha, depth) of a HEIF image sequence.
fn plays(handler: &[u8]) -> bool {
    matches!(handler, b"vide" | b"soun" | b"auxv" | b"pict")
}

/// Boxes of a track that ffmpeg reads once (the first, or each one over the last), and
/// boxes of a HEIF `meta` that libheif and ffmpeg read once (the first: libheif's
/// `get_child_box`, ffmpeg's "duplicate iloc" guard), at each level pavise reads them,
/// and the pairs that are two spellings of one table. A second copy is refused: pavise
/// would walk one and a reader the other (two chunk offset tables 5 bytes apart shift
/// every sample; a second `iinf` that names the Exif item an image hides it from pavise
/// while libheif exports it). Sample groups, sub-sample and auxiliary-information boxes
/// repeat by design (one per grouping or aux type), and so may `ipma` (libheif merges
/// them; [`associations`] refuses an item in two).
const READ_ONCE: &[(&[u8; 4], &[&[u8; 4]])] = &[
    (b"meta", &[b"hdlr", b"pitm", b"iloc", b"iinf", b"iprp", b"iref", b"idat", b"dinf", b"grpl"]),
    (b"iprp", &[b"ipco"]),
    (b"trak", &[b"tkhd", b"mdia", b"edts", b"tref", b"tapt"]),
    (b"mdia", &[b"mdhd", b"hdlr", b"minf"]),
    (b"minf", &[b"vmhd", b"smhd", b"hmhd", b"nmhd", b"sthd", b"dinf", b"stbl", b"hdlr"]),
    (
        b"stbl",
        &[
            b"stsd", b"stts", b"ctts", b"cslg", b"stss", b"stps", b"stsc", b"stsz", b"stz2", b"stco", b"co64", b"sdtp",
            b"stsh", b"padb", b"stdp",
        ],
    ),
];
const SPELLINGS: &[[&[u8; 4]; 2]] = &[[b"stco", b"co64"], [b"stsz", b"stz2"]];

/// Refuses a second copy of a [`READ_ONCE`] box among `kids` of a `level` box.
fn refuse_repeats(kids: &[BoxAt], level: &[u8; 4], format: Format) -> Result<(), MediaError> {
    let Some((_, once)) = READ_ONCE.iter().find(|(l, _)| *l == level) else { return Ok(()) };
    let count = |t: &[u8; 4]| kids.iter().filter(|k| &k.kind == t).count();
    for t in once.iter().copied() {
        if count(t) > 1 {
            return Err(MediaError::malformed(
                format,
                format!("two '{}' boxes in one '{}' (readers take different ones)", fourcc(t), fourcc(level)),
            ));
        }
    }
    for [a, b] in SPELLINGS {
        if count(a) > 0 && count(b) > 0 {
            return Err(MediaError::malformed(
                format,
                format!(
                    "both '{}' and '{}' in one '{}' (readers take different ones)",
                    fourcc(*a),
                    fourcc(*b),
                    fourcc(level)
                ),
            ));
        }
    }
    Ok(())
}

/// The handler type of an `hdlr` payload.
fn handler_type(walk: Walk<'_>, h: &BoxAt) -> Option<[u8; 4]> {
    walk.payload(h).get(8..12).and_then(|h| h.try_into().ok())
}

/// A track's handler type and its `tkhd` track ID (`None` when it has no readable one).
/// Each box ffmpeg reads once is there once ([`READ_ONCE`]), and a `minf/hdlr` is a
/// QuickTime data handler (`alis`, `url `, `rsrc`) or says what `mdia/hdlr` says:
/// exiftool takes the track's kind from every `hdlr` and ffmpeg from each one it meets,
/// so a `vide` track with a `meta` handler below it is GPS telemetry to them.
fn track_identity(walk: Walk<'_>, trak: &BoxAt) -> Result<([u8; 4], Option<u32>), MediaError> {
    let bad = |what: &str| MediaError::malformed(walk.format, what.to_owned());
    let kids = walk.kids(trak, 0)?;
    refuse_repeats(&kids, b"trak", walk.format)?;
    let mdia = kids.iter().find(|k| &k.kind == b"mdia").ok_or_else(|| bad("a track has no media box (mdia)"))?;
    let mdia_kids = walk.kids(mdia, 0)?;
    refuse_repeats(&mdia_kids, b"mdia", walk.format)?;
    // exiftool takes a track's kind from the last `hdlr` it has met when it reads the
    // `minf`: one after the `minf` leaves it the previous track's (an audio description
    // read as video, its samples walked as H.264). Muxers write `hdlr` first.
    let at = |kind: &[u8; 4]| mdia_kids.iter().position(|k| &k.kind == kind);
    if let (Some(hdlr), Some(minf)) = (at(b"hdlr"), at(b"minf"))
        && minf < hdlr
    {
        return Err(bad("a track whose handler (hdlr) comes after its media information (minf)"));
    }
    let handler: [u8; 4] = mdia_kids
        .iter()
        .find(|k| &k.kind == b"hdlr")
        .and_then(|h| handler_type(walk, h))
        .ok_or_else(|| bad("a track has no handler (hdlr)"))?;
    if let Some(minf) = mdia_kids.iter().find(|k| &k.kind == b"minf") {
        let minf_kids = walk.kids(minf, 0)?;
        refuse_repeats(&minf_kids, b"minf", walk.format)?;
        for h in minf_kids.iter().filter(|k| &k.kind == b"hdlr") {
            let inner = handler_type(walk, h).unwrap_or_default();
            if !matches!(&inner, b"alis" | b"url " | b"rsrc" | b"\0\0\0\0") && inner != handler {
                return Err(bad(&format!(
                    "a '{}' track whose minf handler says '{}' (readers take different ones)",
                    fourcc(&handler),
                    fourcc(&inner)
                )));
            }
        }
        if let Some(stbl) = minf_kids.iter().find(|k| &k.kind == b"stbl") {
            refuse_repeats(&walk.kids(stbl, 0)?, b"stbl", walk.format)?;
        }
    }
    let id = kids.iter().find(|k| &k.kind == b"tkhd").and_then(|t| {
        let p = walk.payload(t);
        be32(p, if p.first() == Some(&1) { 20 } else { 12 })
    });
    Ok((handler, id))
}

/// Where planning records what the sample tables say: the data map, the samples to
/// walk, and each track's codecs and fragment defaults.
struct Data<'a> {
    map: &'a mut DataMap,
    coded: &'a mut Coded,
    tracks: &'a mut fragments::Tracks,
    /// The shown grid images, checked against their tile counts once the file is read.
    grids: &'a mut Vec<Grid>,
}

fn plan_moov(
    buf: &[u8],
    moov: &BoxAt,
    ctx: Ctx,
    actions: &mut Vec<Action>,
    data: &mut Data<'_>,
) -> Result<(), MediaError> {
    let base = moov.start;
    let format = ctx.format;
    let walk = Walk { buf, base, format };
    let kids = children(buf, base, (moov.payload - base) as usize, buf.len(), format)?;
    let fragmented = kids.iter().any(|k| &k.kind == b"mvex");
    // Track references may name only the tracks that stay.
    let mut kept_tracks = Vec::new();
    let mut ids = Vec::new();
    for k in kids.iter().filter(|k| &k.kind == b"trak") {
        let (handler, id) = track_identity(walk, k)?;
        let Some(id) = id else { continue };
        // Fragments name their track by id: two tracks of one id are read as different
        // tracks by different readers (ffmpeg takes the first).
        if ids.contains(&id) {
            return Err(MediaError::malformed(format, format!("two tracks with id {id}: readers take different ones")));
        }
        ids.push(id);
        if plays(&handler) {
            kept_tracks.push(id);
        }
    }
    let tracks = Tracks { fragmented, kept: &kept_tracks };
    for k in &kids {
        match &k.kind {
            b"iods" => actions.push(free(k, "moov/iods (an MPEG-4 object descriptor no player needs)")),
            b"pssh" => actions.push(free(k, "moov/pssh (DRM system data)")),
            b"clip" | b"ctab" => {
                actions.push(free(k, &format!("moov/{} (not needed to play the file)", fourcc(&k.kind))))
            }
            // A reference movie: data references (URLs, Mac aliases) to media elsewhere.
            b"rmra" => actions.push(free(k, "moov/rmra (reference movie: URLs and aliases)")),
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, "moov")),
            b"mvhd" => {
                blank_times(buf, base, k, format, actions)?;
                walk.slack(k, actions);
            }
            b"mvex" => walk.level(k, &[b"mehd", b"trex", b"leva"], "mvex", actions, |k, actions| {
                if &k.kind == b"trex" && !fragments::read_trex(walk.payload(k), data.tracks) {
                    return Err(MediaError::malformed(
                        format,
                        "two 'trex' boxes for one track (readers take different ones)",
                    ));
                }
                walk.slack(k, actions);
                Ok(())
            })?,
            b"trak" => plan_trak(walk, k, ctx, tracks, actions, data)?,
            b"udta" => actions.push(free(k, "moov/udta (user data: ©xyz, loci, GPMF, ...)")),
            b"meta" => actions.push(free(k, "moov/meta (keys/ilst, e.g. ISO6709 location)")),
            b"uuid" => actions.push(free(k, "moov/uuid")),
            b"cmov" => return Err(MediaError::Unsupported("compressed QuickTime movie headers (cmov)")),
            other => actions.push(free(k, &format!("unknown moov/{} box", fourcc(other)))),
        }
    }
    Ok(())
}

/// What a track's plan needs to know of the others.
#[derive(Clone, Copy)]
struct Tracks<'a> {
    fragmented: bool,
    /// IDs of the tracks that stay (video, sound, image).
    kept: &'a [u32],
}

/// Track reference types (ISO 14496-12 and -15, QuickTime); each is a list of track IDs.
const TRACK_REFERENCES: &[&[u8; 4]] = &[
    b"hint", b"cdsc", b"font", b"hind", b"vdep", b"vplx", b"subt", b"thmb", b"auxl", b"sbas", b"scal", b"tbas",
    b"sabt", b"oref", b"dpnd", b"ipir", b"mpod", b"sync", b"chap", b"tmcd", b"fall", b"folw", b"forc", b"avcp",
    b"swre", b"adda", b"adrc", b"ilay", b"mixn", b"cdtg", b"shsc", b"aest", b"lyra", b"clcp", b"cdep", b"scpt",
    b"ssrc",
];

fn plan_trak(
    walk: Walk<'_>,
    trak: &BoxAt,
    ctx: Ctx,
    tracks: Tracks<'_>,
    actions: &mut Vec<Action>,
    data: &mut Data<'_>,
) -> Result<(), MediaError> {
    let (buf, base, format) = (walk.buf, walk.base, walk.format);
    let map = &mut *data.map;
    let (handler, id) = track_identity(walk, trak)?;
    let stbl = || -> Result<Option<BoxAt>, MediaError> {
        let Some(mdia) = walk.kids(trak, 0)?.into_iter().find(|k| &k.kind == b"mdia") else { return Ok(None) };
        let Some(minf) = walk.kids(&mdia, 0)?.into_iter().find(|k| &k.kind == b"minf") else { return Ok(None) };
        Ok(walk.kids(&minf, 0)?.into_iter().find(|k| &k.kind == b"stbl"))
    };
    // Mastodon plays one video and one audio stream; everything else is data about the
    // recording (GPS telemetry, ISO6709 samples, camera motion, timecode, subtitles).
    if !plays(&handler) {
        let what = format!("'{}' track (timed metadata)", fourcc(&handler));
        if tracks.fragmented {
            return Err(MediaError::Unsupported("fragmented videos with a timed-metadata track"));
        }
        if let Some(stbl) = stbl()? {
            let table = sample_table(buf, base, &stbl, None, false, format)?;
            for &(off, len) in &table.chunks {
                map.chunk(off, len);
            }
            for (off, len) in merged(&table.chunks) {
                actions.push(Action::Zero { off, len, what: format!("samples of the {what}") });
            }
        }
        actions.push(free(trak, &what));
        return Ok(());
    }
    const TRAK: &[&[u8; 4]] = &[b"tkhd", b"tref", b"edts", b"mdia", b"tapt"];
    const MDIA: &[&[u8; 4]] = &[b"mdhd", b"hdlr", b"minf"];
    const MINF: &[&[u8; 4]] = &[b"vmhd", b"smhd", b"hmhd", b"nmhd", b"sthd", b"dinf", b"stbl", b"hdlr"];
    const STBL: &[&[u8; 4]] = &[
        b"stsd", b"stts", b"ctts", b"cslg", b"stss", b"stps", b"stsc", b"stsz", b"stz2", b"stco", b"co64", b"sdtp",
        b"sbgp", b"sgpd", b"subs", b"saiz", b"saio", b"stsh", b"padb", b"stdp", b"csgp",
    ];
    let entries = if &handler == b"soun" { sample_entry::Entries::Audio } else { sample_entry::Entries::Visual };
    let mut external = false;
    let mut codecs = Vec::new();
    walk.level(trak, TRAK, "trak", actions, |k, actions| match &k.kind {
        b"tkhd" => {
            walk.slack(k, actions);
            blank_times(buf, base, k, format, actions)
        }
        b"tref" => plan_tref(walk, k, tracks.kept, actions),
        b"edts" => walk.level(k, &[b"elst"], "edts", actions, |k, actions| {
            walk.slack(k, actions);
            Ok(())
        }),
        // Aperture sizes (QuickTime): each a FullBox of two 16.16 numbers.
        b"tapt" => walk.level(k, &[b"clef", b"prof", b"enof"], "tapt", actions, |k, actions| {
            if k.end - k.payload != 12 {
                actions.push(free(k, &format!("tapt/{} of the wrong size", fourcc(&k.kind))));
            }
            Ok(())
        }),
        b"mdia" => walk.level(k, MDIA, "mdia", actions, |k, actions| match &k.kind {
            b"mdhd" => {
                walk.slack(k, actions);
                blank_times(buf, base, k, format, actions)
            }
            b"hdlr" => {
                blank_handler_name(buf, base, k, actions);
                Ok(())
            }
            b"minf" => walk.level(k, MINF, "minf", actions, |k, actions| match &k.kind {
                b"hdlr" => {
                    blank_handler_name(buf, base, k, actions);
                    Ok(())
                }
                b"dinf" => {
                    external |= plan_dinf(buf, base, k, format, actions)?;
                    Ok(())
                }
                b"stbl" => walk.level(k, STBL, "stbl", actions, |k, actions| {
                    if &k.kind == b"stsd" {
                        codecs = sample_entry::plan_stsd(walk, k, entries, ctx, actions)?;
                        Ok(())
                    } else {
                        walk.slack(k, actions);
                        Ok(())
                    }
                }),
                _ => {
                    walk.slack(k, actions);
                    Ok(())
                }
            }),
            _ => Ok(()),
        }),
        _ => Ok(()),
    })?;
    let walked = codecs.iter().any(Option::is_some);
    // One codec per walked track. exiftool walks every sample of a video track with an
    // `avcC` as H.264 whatever its description index, ffmpeg decodes only the first
    // fourcc ("multiple fourcc not supported"): samples of a second, unwalked (or
    // differently walked) description would reach the instance with their SEI.
    if walked && codecs.iter().any(|c| *c != codecs[0]) {
        return Err(MediaError::malformed(
            format,
            "a track whose sample descriptions are of different codecs (readers decode its samples as different ones)",
        ));
    }
    if external {
        if walked {
            return Err(MediaError::Unsupported("videos whose frames lie in another file"));
        }
        map.distrust("a track's data lies in another file");
    }
    if let Some(id) = id {
        let track = data.tracks.entry(id).or_default();
        track.codecs = codecs.clone();
        track.declared = true;
    }
    let table = stbl()?.map(|stbl| {
        // Sound of one uniform sample size counts frames: its chunks' lengths are read
        // from its descriptions.
        let framings = match walk.kids(&stbl, 0)?.iter().find(|k| &k.kind == b"stsd") {
            Some(stsd) if &handler == b"soun" => sample_entry::sound_framings(walk, stsd, ctx.quicktime)?,
            _ => Vec::new(),
        };
        sample_table(buf, base, &stbl, (&handler == b"soun").then_some(&framings[..]), walked, format)
    });
    match table {
        Some(Ok(table)) => {
            for &(off, len) in &table.chunks {
                map.chunk(off, len);
            }
            for &(off, len, sdi) in &table.samples {
                if let Some(codec) = codec_of(&codecs, sdi, format)? {
                    data.coded.push(Sample { off, len, codec }, format)?;
                }
            }
        }
        // The samples of a walked track must be found, or they would pass unchecked; and
        // a table pavise cannot read (an `stsc` readers repair, a PCM chunk of unknown
        // length) would leave every `mdat` unzeroed, whatever it hides.
        Some(Err(e)) => return Err(e),
        // No table, no samples: no reader reads anything of it, so it covers nothing
        // (distrusting the map would leave every other track's gaps as they are).
        None => {}
    }
    Ok(())
}

/// `tref`: each reference type a list of track IDs. A type pavise does not know, or a
/// reference to a track that does not stay (a chapter or timecode track freed above), is
/// freed; ffmpeg reads a `tref`'s children with its one table, so nothing else may stay.
fn plan_tref(walk: Walk<'_>, tref: &BoxAt, kept: &[u32], actions: &mut Vec<Action>) -> Result<(), MediaError> {
    walk.level(tref, TRACK_REFERENCES, "tref", actions, |k, actions| {
        let p = walk.payload(k);
        let ids = p.chunks_exact(4).map(|id| u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
        if p.is_empty() || !p.len().is_multiple_of(4) || ids.clone().any(|id| !kept.contains(&id)) {
            actions.push(free(k, &format!("tref/{} (a reference to a track that does not stay)", fourcc(&k.kind))));
        }
        Ok(())
    })
}

/// Where a track's samples lie: each chunk's offset and length.
struct SampleTable {
    chunks: Vec<(u64, u64)>,
    /// Each sample's offset, length and sample description index, when asked for.
    samples: Vec<(u64, u64, u32)>,
}

/// Adjacent chunks as one range.
fn merged(chunks: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in chunks {
        match out.last_mut() {
            Some(last) if last.0.checked_add(last.1) == Some(off) => last.1 = last.1.saturating_add(len),
            _ => out.push((off, len)),
        }
    }
    out
}

/// Byte ranges of every chunk of a track (none without a sample size table), and of
/// every sample when `each` is set. A sound track's `framings` (one per description)
/// give the length of its chunks when its sample size is uniform and its `stts` one
/// duration of 1: QuickTime then counts audio frames, not bytes ([`sample_entry::Framing`]).
fn sample_table(
    buf: &[u8],
    base: u64,
    stbl: &BoxAt,
    framings: Option<&[sample_entry::Framing]>,
    each: bool,
    format: Format,
) -> Result<SampleTable, MediaError> {
    let bad = |what: &str| MediaError::malformed(format, format!("sample table: {what}"));
    let kids = children(buf, base, (stbl.payload - base) as usize, (stbl.end - base) as usize, format)?;
    let find = |t: &[u8; 4]| kids.iter().find(|k| &k.kind == t).map(|k| payload(buf, base, k));
    // Sample sizes: uniform, a u32 table (stsz) or a compact table (stz2).
    let (uniform, count, table, field_bits): (u32, u32, &[u8], u32) = if let Some(p) = find(b"stsz") {
        (
            be32(p, 4).ok_or_else(|| bad("stsz"))?,
            be32(p, 8).ok_or_else(|| bad("stsz"))?,
            p.get(12..).unwrap_or_default(),
            32,
        )
    } else if let Some(p) = find(b"stz2") {
        let bits = u32::from(*p.get(7).ok_or_else(|| bad("stz2"))?);
        // 4-bit entries: exiftool reads an odd entry as its whole byte (up to 255
        // where ffmpeg and pavise read 15), so its samples run into bytes pavise keeps
        // unwalked. No muxer writes them for video or sound.
        if bits == 4 {
            return Err(bad("stz2 with 4-bit sizes (readers read them differently)"));
        }
        if !matches!(bits, 8 | 16) {
            return Err(bad("stz2 field size"));
        }
        (0, be32(p, 8).ok_or_else(|| bad("stz2"))?, p.get(12..).unwrap_or_default(), bits)
    } else {
        return Ok(SampleTable { chunks: Vec::new(), samples: Vec::new() });
    };
    let size_of = |i: u32| -> Option<u64> {
        if uniform != 0 {
            return Some(u64::from(uniform));
        }
        let i = i as usize;
        match field_bits {
            32 => be32(table, i * 4).map(u64::from),
            16 => be16(table, i * 2).map(u64::from),
            8 => table.get(i).map(|&v| u64::from(v)),
            _ => table.get(i / 2).map(|&v| u64::from(if i.is_multiple_of(2) { v >> 4 } else { v & 0x0F })),
        }
    };
    let stsc = find(b"stsc").ok_or_else(|| bad("no stsc"))?;
    let stsc_n = be32(stsc, 4).ok_or_else(|| bad("stsc"))? as usize;
    let stsc_entries: Vec<(u32, u32, u32)> = (0..stsc_n)
        .map(|i| Some((be32(stsc, 8 + i * 12)?, be32(stsc, 12 + i * 12)?, be32(stsc, 16 + i * 12)?)))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("stsc runs past its box"))?;
    let descriptions = find(b"stsd").and_then(|p| be32(p, 4)).unwrap_or(0);
    // ffmpeg reads a sound chunk by its description only when `stts` is one entry of
    // duration 1 (`mov_build_index`'s "old uncompressed audio chunk demuxing"); else each
    // sample is `stsz`'s size, as in any track.
    // `stts` as (sample count, duration) runs; `None` when absent or past its box.
    let stts: Option<Vec<(u32, u32)>> = find(b"stts")
        .and_then(|p| (0..be32(p, 4)? as usize).map(|i| Some((be32(p, 8 + i * 8)?, be32(p, 12 + i * 8)?))).collect());
    let framings = framings.filter(|_| matches!(stts.as_deref(), Some([(_, 1)])));
    refuse_repaired_stsc(&stsc_entries, descriptions).map_err(|what| bad(&what))?;
    // exiftool stops reading a track where `stts` runs out, and maps the rest of its
    // chunks from there, shifted; ffmpeg only warns. Muxers write the two counts equal.
    let timed = stts.as_ref().map(|runs| runs.iter().map(|&(n, _)| u64::from(n)).sum::<u64>());
    if timed != Some(u64::from(count)) {
        return Err(bad("stts times another number of samples than the size table holds"));
    }
    let offsets: Vec<u64> = if let Some(p) = find(b"stco") {
        let n = be32(p, 4).ok_or_else(|| bad("stco"))? as usize;
        (0..n).map(|i| be32(p, 8 + i * 4).map(u64::from)).collect::<Option<_>>().ok_or_else(|| bad("stco"))?
    } else if let Some(p) = find(b"co64") {
        let n = be32(p, 4).ok_or_else(|| bad("co64"))? as usize;
        (0..n).map(|i| be64(p, 8 + i * 8)).collect::<Option<_>>().ok_or_else(|| bad("co64"))?
    } else {
        return Err(bad("no chunk offsets"));
    };
    let mut chunks: Vec<(u64, u64)> = Vec::new();
    let mut samples = Vec::new();
    let mut sample = 0u32;
    let mut entry = 0usize;
    for (ci, &chunk_off) in offsets.iter().enumerate() {
        let chunk_no = ci as u64 + 1;
        while entry + 1 < stsc_entries.len() && u64::from(stsc_entries[entry + 1].0) <= chunk_no {
            entry += 1;
        }
        let (per_chunk, sdi) = stsc_entries.get(entry).map_or((0, 1), |e| (e.1, e.2));
        let n = per_chunk.min(count - sample);
        if each {
            let mut off = chunk_off;
            for i in sample..sample + n {
                if samples.len() >= 16 << 20 {
                    return Err(bad("more samples than any real recording has"));
                }
                let len = size_of(i).ok_or_else(|| bad("sample size table too short"))?;
                samples.push((off, len, sdi));
                off = off.checked_add(len).ok_or_else(|| bad("a chunk larger than a file"))?;
            }
        }
        let bytes = if let Some(framings) = framings.filter(|_| uniform != 0 && n > 0) {
            let framing = framings
                .get(sdi as usize - 1)
                .ok_or_else(|| bad("samples of a sound description that is not there"))?;
            framing.chunk_bytes(u64::from(n), u64::from(uniform)).map_err(|why| bad(&why))?
        } else if uniform != 0 {
            u64::from(uniform) * u64::from(n)
        } else {
            (sample..sample + n).map(size_of).sum::<Option<u64>>().ok_or_else(|| bad("sample size table too short"))?
        };
        sample += n;
        if bytes > 0 {
            chunks.push((chunk_off, bytes));
        }
        if sample >= count {
            // exiftool, its `stts` run out first, reads a chunk past the last sample
            // as one more; no muxer writes offsets no sample is in.
            if ci + 1 < offsets.len() {
                return Err(bad("chunk offsets left after the last sample"));
            }
            break;
        }
    }
    Ok(SampleTable { chunks, samples })
}

/// Refuses a sample-to-chunk table that readers repair, each its own way: an entry of 0
/// samples per chunk (ffmpeg's `mov_read_stsc` makes it 1 or the next entry's count,
/// exiftool reads one sample, pavise would read none and leave the chunk unwalked), a
/// sample description index of 0 or past the `stsd` entry count, a first entry that is
/// not chunk 1, or a `first_chunk` that does not strictly increase (ffmpeg rewrites it,
/// a `<=` walk takes the later entry). No muxer writes any of them, so none is guessed.
fn refuse_repaired_stsc(entries: &[(u32, u32, u32)], descriptions: u32) -> Result<(), String> {
    let mut previous = 0u32;
    for (i, &(first, per_chunk, sdi)) in entries.iter().enumerate() {
        if per_chunk == 0 {
            return Err(format!("stsc entry {i} has 0 samples per chunk (readers repair it differently)"));
        }
        if sdi == 0 || sdi > descriptions {
            return Err(format!("stsc entry {i} names sample description {sdi} of {descriptions}"));
        }
        if (i == 0 && first != 1) || first <= previous {
            return Err(format!("stsc entry {i} starts at chunk {first}, after {previous} (readers reorder it)"));
        }
        previous = first;
    }
    Ok(())
}

/// Plans a top-level `meta`. Returns false when it is not an image `meta` (`pict`).
fn plan_heif_meta(
    buf: &[u8],
    meta: &BoxAt,
    file_len: u64,
    format: Format,
    actions: &mut Vec<Action>,
    media_data: &mut Vec<(u64, u64)>,
    data: &mut Data<'_>,
) -> Result<bool, MediaError> {
    let map = &mut *data.map;
    let base = meta.start;
    let walk = Walk { buf, base, format };
    let bad = |what: &str| MediaError::malformed(format, format!("image metadata: {what}"));
    // The ISO `meta` is a FullBox: 4 bytes of version and flags before its children.
    let from = (meta.payload - base) as usize + 4;
    if from > buf.len() {
        return Err(bad("meta box too short"));
    }
    let kids = children(buf, base, from, buf.len(), format)?;
    let handler = kids.iter().find(|k| &k.kind == b"hdlr").and_then(|h| payload(buf, base, h).get(8..12));
    if handler != Some(b"pict") {
        return Ok(false);
    }
    refuse_repeats(&kids, b"meta", format)?;
    let mut items: Vec<(u32, u64, [u8; 4])> = Vec::new(); // id, file offset of type, type
    let mut locations: Option<Vec<Location>> = None;
    let mut idat: Option<(u64, u64)> = None;
    // Planned once the items are known: a property counts only for an image pavise keeps.
    let mut iprp = None;
    let mut primary = None;
    let mut references = Vec::new();
    for k in &kids {
        match &k.kind {
            b"pitm" => {
                defined_version(walk, k, 1)?;
                let p = walk.payload(k);
                primary = if p.first() == Some(&0) { be16(p, 4).map(u32::from) } else { be32(p, 4) };
                walk.slack(k, actions);
            }
            b"iref" => {
                defined_version(walk, k, 1)?;
                plan_iref(walk, k, actions)?;
                references = parse_references(walk, k)?;
            }
            b"grpl" => walk.level(k, ENTITY_GROUPS, "grpl", actions, |_, _| Ok(()))?,
            b"iprp" => iprp = Some(k),
            b"dinf" => {
                if plan_dinf(buf, base, k, format, actions)? {
                    map.distrust("an item's data lies in another file");
                }
            }
            b"hdlr" => blank_handler_name(buf, base, k, actions),
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, "meta")),
            b"iinf" => items = parse_iinf(walk, k, actions)?,
            b"iloc" => {
                defined_version(walk, k, 2)?;
                let parsed = parse_iloc(payload(buf, base, k)).ok_or_else(|| bad("unreadable iloc"))?;
                refuse_repeated_items(parsed.iter().map(|l| l.id), "iloc", format)?;
                locations = Some(parsed);
            }
            b"idat" => {
                idat = Some((k.payload, k.end - k.payload));
                media_data.push((k.payload, k.end));
            }
            b"ipro" => actions.push(free(k, "meta/ipro (item protection: DRM)")),
            other => actions.push(free(k, &format!("meta/{} box (XML/XMP or vendor data)", fourcc(other)))),
        }
    }
    let primary = primary.ok_or_else(|| bad("no primary item (pitm)"))?;
    if !items.iter().any(|&(id, _, kind)| id == primary && IMAGE_ITEMS.contains(&&kind)) {
        return Err(bad(&format!("the primary item {primary} is not an image item")));
    }
    let shown = shown_images(primary, &items, &references);
    refuse_unreadable_references(&items, &references, &shown, format)?;
    if let Some(iprp) = iprp {
        plan_iprp(walk, iprp, &shown, &references, actions)?;
    }
    let Some(locations) = locations else {
        map.distrust("no item locations (iloc)");
        return Ok(true);
    };
    // Every extent in the file is data some item needs (or an Exif item zeroed below).
    for loc in &locations {
        if loc.data_reference != 0 {
            map.distrust("an item's data lies in another file");
        }
        match loc.method {
            0 => {
                for &(off, len) in &loc.extents {
                    let off = loc.base.saturating_add(off);
                    map.exact(off, if len == 0 { file_len.saturating_sub(off) } else { len });
                }
            }
            1 => {}
            _ => map.distrust("an item built from other items' data (iloc construction method 2)"),
        }
    }
    // Image items coded in a format pavise does not walk in place: a JPEG item (the
    // preview or `thmb` thumbnail of a Fujifilm HIF, exiftool's PreviewImage) keeps its
    // own Exif APP1 with GPS, make and date; JPEG 2000 keeps its comments, VVC its SEI.
    if let Some(&(_, _, kind)) = items.iter().find(|(id, _, k)| shown.contains(id) && UNWALKED_ITEMS.contains(&k)) {
        return Err(MediaError::Unsupported(match &kind {
            b"jpeg" => "HEIF images with a JPEG preview or thumbnail inside (its own Exif would stay)",
            _ => "HEIF images coded as JPEG 2000 or VVC (their metadata cannot be checked)",
        }));
    }
    // The coded data of each H.264, HEVC or AV1 image item is walked like a video sample.
    let codecs = match kids.iter().find(|k| &k.kind == b"iprp") {
        Some(iprp) => coded::item_codecs(walk, iprp)?,
        None => Default::default(),
    };
    for &(id, _, kind) in items.iter().filter(|(id, _, _)| shown.contains(id)) {
        let Some(codec) = codecs.get(&id).copied().or((&kind == b"av01").then_some(bitstream::Codec::Av1)) else {
            continue;
        };
        for loc in locations.iter().filter(|l| l.id == id) {
            let [(off, len)] = loc.extents[..] else {
                return Err(bad("a coded image item in several extents, which pavise cannot check"));
            };
            let (start, limit) = match loc.method {
                0 => (0, file_len),
                1 => idat.map(|(o, l)| (o, o + l)).ok_or_else(|| bad("an item in idat without an idat box"))?,
                _ => return Err(bad("a coded image item built from other items' data")),
            };
            let off = start.saturating_add(loc.base).saturating_add(off);
            let len = if len == 0 { limit.saturating_sub(off) } else { len };
            data.coded.push(Sample { off, len, codec }, format)?;
        }
    }
    const UNWALKED_ITEMS: &[&[u8; 4]] = &[b"jpeg", b"j2k1", b"vvc1", b"vvi1"];
    for &(id, _, _) in items.iter().filter(|(id, _, kind)| shown.contains(id) && kind == b"grid") {
        let tiles = inputs(&references, id).len();
        let Some((loc, &(off, len))) =
            locations.iter().find(|l| l.id == id).and_then(|l| Some((l, l.extents.first()?)))
        else {
            return Err(bad(&format!("grid image {id} has no data")));
        };
        let (off, len) = item_extent(loc, off, len, idat, file_len)
            .ok_or_else(|| bad(&format!("grid image {id} built from other items' data")))?;
        data.grids.push(Grid { id, off, len, tiles });
    }
    // An image item no reader reaches is zeroed like Exif, unless its bytes are also
    // those of an image a reader shows: zeroing them would blank that image.
    let mut shown_data = Vec::new();
    for loc in locations.iter().filter(|l| shown.contains(&l.id)) {
        for &(off, len) in &loc.extents {
            if let Some(range) = item_extent(loc, off, len, idat, file_len) {
                shown_data.push(range);
            }
        }
    }
    for (id, type_at, kind) in items {
        if shown.contains(&id) {
            continue;
        }
        let image = IMAGE_ITEMS.contains(&&kind);
        let what = if &kind == ITEM_GONE {
            "an item pavise already neutralised".to_owned()
        } else if image {
            format!("'{}' image item {id} that no reader shows", fourcc(&kind))
        } else {
            format!("'{}' item {id} (Exif/XMP)", fourcc(&kind))
        };
        for loc in locations.iter().filter(|l| l.id == id) {
            for &(off, len) in &loc.extents {
                let (start, limit) = match loc.method {
                    0 => (0, file_len),
                    1 => idat.ok_or_else(|| bad("an item in idat without an idat box"))?,
                    _ => continue,
                };
                let off = start
                    .checked_add(loc.base)
                    .and_then(|o| o.checked_add(off))
                    .filter(|&o| o <= start + limit)
                    .ok_or_else(|| bad("an item extent lies outside the file"))?;
                let len = if len == 0 { start + limit - off } else { len };
                if off.checked_add(len).is_none_or(|end| end > start + limit) {
                    return Err(MediaError::truncated(format, format!("{what} extends past the end of the file")));
                }
                if image && shown_data.iter().any(|&(o, l)| off < o.saturating_add(l) && o < off + len) {
                    return Err(bad(&format!("{what} shares its data with an image that is shown")));
                }
                actions.push(Action::Zero { off, len, what: what.clone() });
            }
        }
        if type_at != 0 && &kind != ITEM_GONE {
            actions.push(Action::ItemType { at: type_at, what: format!("{what}: type renamed to 'free'") });
        }
    }
    Ok(true)
}

/// The absolute (offset, length) of one extent of an item, for construction methods 0
/// (the file) and 1 (`idat`); `None` for one pavise cannot place.
fn item_extent(loc: &Location, off: u64, len: u64, idat: Option<(u64, u64)>, file_len: u64) -> Option<(u64, u64)> {
    let (start, limit) = match loc.method {
        0 => (0, file_len),
        1 => idat?,
        _ => return None,
    };
    let off = start.checked_add(loc.base)?.checked_add(off)?;
    Some((off, if len == 0 { (start + limit).saturating_sub(off) } else { len }))
}

/// The image items a reader can reach (red team pass 8, H2b): the primary item, the
/// inputs (`dimg`) of a reached grid, overlay or identity image, and the thumbnails and
/// auxiliary images (`thmb`, `auxl`: alpha, depth, gain map) of a reached image, as a
/// closure. Any other item is one libheif never decodes: its properties (a `pixi` of
/// 255 sender-chosen bytes, an `rloc`) would be kept only for exiftool to print, and its
/// data only for someone to read by hand. A reached item whose type is not an image
/// (a `dimg` to the Exif item) is not an image either.
fn shown_images(primary: u32, items: &[(u32, u64, [u8; 4])], references: &[Reference]) -> HashSet<u32> {
    let kind_of = |id: u32| items.iter().find(|(i, _, _)| *i == id).map(|(_, _, k)| k);
    // libheif makes no image of the other image types (mski, tmap, unci, avc1, ...), so it
    // never shows one as a thumbnail, an auxiliary image or a derived image's input.
    let is_image = |id: u32| kind_of(id).is_some_and(|k| DECODED.contains(&k));
    let mut shown = HashSet::from([primary]);
    loop {
        let before = shown.len();
        for r in references {
            let reached = match &r.kind {
                b"dimg" if shown.contains(&r.from) && kind_of(r.from).is_some_and(|k| DERIVED.contains(&k)) => {
                    r.to.clone()
                }
                b"thmb" | b"auxl" if r.to.iter().any(|t| shown.contains(t)) => vec![r.from],
                _ => continue,
            };
            shown.extend(reached.into_iter().filter(|&id| is_image(id)));
        }
        if shown.len() == before {
            return shown;
        }
    }
}

/// At most this many thumbnails (`thmb`) are kept of the images a reader reaches: phones
/// and cameras write one (exiftool's ThumbnailImage), and each kept thumbnail keeps its
/// properties (`rloc`, `pasp`, `clap`: a few dozen bytes a sender chooses).
const MAX_THUMBNAILS: usize = 4;

/// At most this many auxiliary images (`auxl`). Apple's portrait photos carry a depth
/// map, a portrait matte, up to five semantic mattes and an HDR gain map: ten leaves room.
const MAX_AUXILIARY: usize = 10;

/// Reference shapes libheif refuses (it then shows no image, and every item's properties
/// would be forwarded only for exiftool to print), refused here too: a `thmb` or `auxl`
/// that names other than one master, a thumbnail of itself or of a thumbnail, a reference
/// from an image to itself (a derived image made of itself), a shown `iden` of other than one input, and more thumbnails or
/// auxiliary images than [`MAX_THUMBNAILS`] and [`MAX_AUXILIARY`] (a file of a hundred
/// thumbnails is a channel, not a photo). Red team pass 9, H2e and H2f.
fn refuse_unreadable_references(
    items: &[(u32, u64, [u8; 4])],
    references: &[Reference],
    shown: &HashSet<u32>,
    format: Format,
) -> Result<(), MediaError> {
    let bad = |what: String| Err(MediaError::malformed(format, format!("image metadata: {what}")));
    let thumbnails: HashSet<u32> = references.iter().filter(|r| &r.kind == b"thmb").map(|r| r.from).collect();
    let derived: HashSet<u32> = items.iter().filter(|(_, _, k)| DERIVED.contains(&k)).map(|(id, _, _)| *id).collect();
    for r in references {
        let kind = fourcc(&r.kind);
        if r.to.contains(&r.from) && (derived.contains(&r.from) || &r.kind != b"dimg") {
            return bad(format!("a '{kind}' reference from item {} to itself", r.from));
        }
        if matches!(&r.kind, b"thmb" | b"auxl") && r.to.len() != 1 {
            return bad(format!("a '{kind}' reference from item {} names {} images, not one", r.from, r.to.len()));
        }
        if &r.kind == b"thmb" && r.to.iter().any(|t| thumbnails.contains(t)) {
            return bad(format!("item {} is a thumbnail of a thumbnail", r.from));
        }
    }
    for &(id, _, _) in items.iter().filter(|(id, _, kind)| shown.contains(id) && kind == b"iden") {
        let inputs = inputs(references, id).len();
        if inputs != 1 {
            return bad(format!("identity image {id} has {inputs} inputs, not one"));
        }
    }
    for (kind, cap) in [(b"thmb", MAX_THUMBNAILS), (b"auxl", MAX_AUXILIARY)] {
        let kept: HashSet<u32> = references
            .iter()
            .filter(|r| &r.kind == kind && shown.contains(&r.from) && r.to.iter().any(|t| shown.contains(t)))
            .map(|r| r.from)
            .collect();
        if kept.len() > cap {
            let what = if kind == b"thmb" { "thumbnails" } else { "auxiliary images" };
            return bad(format!("{} {what}; pavise keeps at most {cap}", kept.len()));
        }
    }
    Ok(())
}

/// A shown grid image: where its data (the rows and columns) lies and how many tiles its
/// `dimg` lists. libheif draws nothing when the two disagree.
struct Grid {
    id: u32,
    off: u64,
    len: u64,
    tiles: usize,
}

impl Grid {
    fn check(&self, store: &mut impl Store, format: Format) -> Result<(), MediaError> {
        let mut head = [0u8; 4];
        if self.len < 4 || self.off.checked_add(4).is_none_or(|end| end > store.len()) {
            return Err(MediaError::truncated(format, format!("grid image {} has no rows and columns", self.id)));
        }
        store.read_at(self.off, &mut head)?;
        let cells = (usize::from(head[2]) + 1) * (usize::from(head[3]) + 1);
        if cells != self.tiles {
            return Err(MediaError::malformed(
                format,
                format!("image metadata: grid image {} has {cells} cells and {} tiles", self.id, self.tiles),
            ));
        }
        Ok(())
    }
}

/// Derived images whose `dimg` inputs libheif decodes to draw them.
const DERIVED: &[&[u8; 4]] = &[b"grid", b"iovl", b"iden"];

/// The item types a reader decodes when a reference leads to them: the coded images
/// pavise walks, and the derived images, which pass on to their inputs.
const DECODED: &[&[u8; 4]] = &[b"hvc1", b"hev1", b"av01", b"grid", b"iovl", b"iden"];

/// One `iref` entry a reader follows from an item to others.
struct Reference {
    kind: [u8; 4],
    from: u32,
    to: Vec<u32>,
}

/// The inputs of a derived image (its `dimg` entry; a second one is refused on reading).
fn inputs(references: &[Reference], id: u32) -> &[u32] {
    references.iter().find(|r| &r.kind == b"dimg" && r.from == id).map_or(&[], |r| &r.to)
}

/// The `dimg`, `thmb` and `auxl` entries of an `iref` (the ones [`plan_iref`] keeps).
/// libheif follows only the first box of a type from an item, exiftool prints every item:
/// two boxes of one type from one item are refused.
fn parse_references(walk: Walk<'_>, iref: &BoxAt) -> Result<Vec<Reference>, MediaError> {
    let wide = walk.payload(iref).first() != Some(&0);
    let id = |p: &[u8], at: usize| if wide { be32(p, at) } else { be16(p, at).map(u32::from) };
    let id_len = if wide { 4 } else { 2 };
    let mut out = Vec::new();
    for k in walk.kids(iref, 4)? {
        if !matches!(&k.kind, b"dimg" | b"thmb" | b"auxl") {
            continue;
        }
        let p = walk.payload(&k);
        let (Some(from), Some(count)) = (id(p, 0), be16(p, id_len).map(usize::from)) else { continue };
        let to: Option<Vec<u32>> = (0..count).map(|i| id(p, id_len + 2 + i * id_len)).collect();
        if let Some(to) = to.filter(|_| p.len() == id_len + 2 + count * id_len) {
            if out.iter().any(|r: &Reference| r.kind == k.kind && r.from == from) {
                return Err(MediaError::malformed(
                    walk.format,
                    format!("two '{}' references from item {from} (readers follow different ones)", fourcc(&k.kind)),
                ));
            }
            out.push(Reference { kind: k.kind, from, to });
        }
    }
    Ok(out)
}

/// `dinf/dref`: a data reference that is not "in this file" names where the media is
/// (a URL, a URN, a Mac alias with volume and folder names): blanked after its flags.
/// Returns whether some reference is not "in this file" (the samples are elsewhere).
fn plan_dinf(
    buf: &[u8],
    base: u64,
    dinf: &BoxAt,
    format: Format,
    actions: &mut Vec<Action>,
) -> Result<bool, MediaError> {
    let mut external = false;
    for k in children(buf, base, (dinf.payload - base) as usize, (dinf.end - base) as usize, format)? {
        if matches!(&k.kind, b"free" | b"skip" | b"wide") {
            actions.push(blank_payload(&k, "dinf"));
            continue;
        }
        if &k.kind != b"dref" {
            actions.push(free(&k, &format!("dinf/{} box (not a data reference)", fourcc(&k.kind))));
            continue;
        }
        // FullBox (4) and an entry count (4), then one box per reference.
        let from = (k.payload - base) as usize + 8;
        if from > (k.end - base) as usize {
            return Err(MediaError::malformed(format, "a short dref box"));
        }
        for entry in children(buf, base, from, (k.end - base) as usize, format)? {
            if !matches!(&entry.kind, b"url " | b"urn " | b"alis" | b"rsrc" | b"free") {
                actions.push(free(&entry, &format!("dref/{} (not a data reference)", fourcc(&entry.kind))));
                continue;
            }
            let flags = payload(buf, base, &entry).get(3).copied().unwrap_or(0);
            external |= &entry.kind != b"free" && flags & 1 == 0;
            if entry.end > entry.payload + 4 {
                actions.push(Action::Blank {
                    off: entry.payload + 4,
                    len: entry.end - entry.payload - 4,
                    what: format!("dref '{}' location", fourcc(&entry.kind)),
                });
            }
        }
    }
    Ok(external)
}

/// Item reference types (ISO 23008-12); each is a from-ID, a count and to-IDs.
/// The item types that are images (the rest, Exif, XMP and any `mime` item, are zeroed).
const IMAGE_ITEMS: &[&[u8; 4]] = &[
    b"hvc1", b"hev1", b"av01", b"grid", b"iovl", b"iden", b"jpeg", b"avc1", b"hvt1", b"lhv1", b"unci", b"j2k1",
    b"tmap", b"vvc1", b"vvi1", b"mski",
];

const ITEM_REFERENCES: &[&[u8; 4]] = &[
    b"dimg", b"thmb", b"auxl", b"cdsc", b"base", b"prem", b"exbl", b"pred", b"tbas", b"mask", b"eroi", b"font",
    b"iloc", b"fdel", b"evir",
];

/// `iref` (ffmpeg reads its children with its one table): known reference types whose
/// contents are exactly their IDs; anything else is freed.
fn plan_iref(walk: Walk<'_>, iref: &BoxAt, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    let id_len = if walk.payload(iref).first() == Some(&0) { 2 } else { 4 };
    walk.level_from(iref, 4, ITEM_REFERENCES, "iref", actions, |k, actions| {
        let p = walk.payload(k);
        let count = be16(p, id_len).map(usize::from);
        if count.and_then(|n| n.checked_mul(id_len)).map(|ids| id_len + 2 + ids) != Some(p.len()) {
            actions.push(free(k, &format!("iref/{} that is not a list of items", fourcc(&k.kind))));
        }
        Ok(())
    })
}

/// Entity groups (ISO 23008-12 `grpl`): alternatives, stereo pairs, bursts, brackets.
const ENTITY_GROUPS: &[&[u8; 4]] = &[
    b"altr", b"ster", b"burs", b"brst", b"pano", b"slid", b"tsyn", b"iaug", b"favc", b"fobr", b"wbbr", b"exbr",
    b"dobr", b"aebr", b"afbr", b"pymd", b"eqiv",
];

/// Item properties a decoder or viewer reads (ISO 23008-12, MIAF, AVIF, HEVC, VVC,
/// uncompressed): codec configurations, sizes, colour, rotation, crops, alpha/depth.
/// The configurations of JPEG, JPEG 2000 and VVC items (`jpgC`, `j2kH`, `vvcC`) are not
/// kept: pavise refuses those items, so no image it lets through needs them, and a `jpgC`
/// is a JPEG header that may hold comment or APP segments. Nor are the properties
/// libheif does not read (`reve`, `oinf`, the palette `cpal`) or reads only for sensor
/// data of uncompressed images (`splz`, `sbpm`, `snuc`: a bad-pixel or non-uniformity
/// map also tells one camera sensor from another): they are freed, or the file refused
/// when an image marks one essential.
const ITEM_PROPERTIES: &[&[u8; 4]] = &[
    b"hvcC", b"av1C", b"avcC", b"lhvC", b"uncC", b"cmpd", b"cmpC", b"icef", b"cloc", b"ispe", b"pixi", b"colr",
    b"irot", b"imir", b"clap", b"pasp", b"rloc", b"lsel", b"iscl", b"auxC", b"clli", b"mdcv", b"cclv", b"amve",
    b"ndwt", b"a1op", b"a1lx", b"tols", b"udes", b"altt", b"crtt", b"mdft",
];

/// Auxiliary image types (`auxC`) the standards define (HEIF's AVC and HEVC alpha and
/// depth, MIAF's CICP alpha and depth) and the ones Apple's cameras write (portrait and
/// semantic mattes, the HDR gain map, the 2023 linear thumbnail and style delta map,
/// as libheif and exiftool list them). Any other type is text a sender chose
/// (exiftool prints it as `AuxiliaryImageType`).
const AUX_TYPES: &[&[u8]] = &[
    b"urn:mpeg:avc:2015:auxid:1",
    b"urn:mpeg:avc:2015:auxid:2",
    b"urn:mpeg:hevc:2015:auxid:1",
    b"urn:mpeg:hevc:2015:auxid:2",
    b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha",
    b"urn:mpeg:mpegB:cicp:systems:auxiliary:depth",
    b"urn:com:apple:photo:2018:aux:portraiteffectsmatte",
    b"urn:com:apple:photo:2019:aux:semanticskinmatte",
    b"urn:com:apple:photo:2019:aux:semantichairmatte",
    b"urn:com:apple:photo:2019:aux:semanticteethmatte",
    b"urn:com:apple:photo:2020:aux:semanticglassesmatte",
    b"urn:com:apple:photo:2020:aux:semanticskymatte",
    b"urn:com:apple:photo:2020:aux:hdrgainmap",
    b"tag:apple.com,2023:photo:aux:linearthumbnail",
    b"tag:apple.com,2023:photo:aux:styledeltamap",
];

/// HEIF item properties: `ipma` refers to them by position, so each stays a box where it
/// is. A property no image pavise keeps uses is freed, whatever it is: no viewer
/// applies it, but exiftool prints every property of `ipco` ([`used_properties`]). A user
/// description or alternative text (`udes`, `altt`), a creation or modification time
/// (`crtt`, `mdft`) has its contents blanked, an ICC colour profile (`colr` of type
/// `prof`/`rICC`) loses what is not colour ([`super::icc`]), an `auxC` keeps its type only
/// when it is one of [`AUX_TYPES`] and never its subtype bytes, and every other kept
/// property loses what follows its fields. A property pavise does not know, or cannot
/// read by the layout libheif reads (a version or value it refuses), is freed
/// (ffmpeg reads a property with its one table, so a `udta` there is a location) — or
/// the file refused, if an item needs it (`essential` in `ipma`): an image without it
/// could not be shown.
fn plan_iprp(
    walk: Walk<'_>,
    iprp: &BoxAt,
    images: &HashSet<u32>,
    references: &[Reference],
    actions: &mut Vec<Action>,
) -> Result<(), MediaError> {
    let kids = walk.kids(iprp, 0)?;
    refuse_repeats(&kids, b"iprp", walk.format)?;
    let props = match kids.iter().find(|k| &k.kind == b"ipco") {
        Some(ipco) => walk.kids(ipco, 0)?,
        None => Vec::new(),
    };
    let associations = associations(walk, &kids)?;
    let (linked, essential) = used_properties(walk, &associations, &props, images)?;
    let pixels = pixel_depths(walk, &associations, &props, images, references)?;
    for k in &kids {
        match &k.kind {
            b"ipma" => {}
            b"ipco" => {
                for (i, prop) in walk.kids(k, 0)?.iter().enumerate() {
                    match &prop.kind {
                        b"free" | b"skip" | b"wide" => actions.push(blank_payload(prop, "ipco")),
                        other if !linked.contains(&(i + 1)) => actions.push(free(
                            prop,
                            &format!("ipco/{} (a property no image uses, or a second copy)", fourcc(other)),
                        )),
                        b"udes" | b"altt" | b"crtt" | b"mdft" if prop.end > prop.payload + 4 => {
                            actions.push(Action::Blank {
                                off: prop.payload + 4,
                                len: prop.end - prop.payload - 4,
                                what: format!("ipco/{} (a description or a time)", fourcc(&prop.kind)),
                            })
                        }
                        b"colr" => plan_colr(walk, prop, actions),
                        b"pixi" if let Some(bytes) = pixels.get(&(i + 1)) => actions.push(Action::Patch {
                            off: prop.payload,
                            bytes: bytes.clone(),
                            what: "ipco/pixi depths that are not the image's codec's".into(),
                        }),
                        // The image's codec configuration: SEI in its arrays goes.
                        b"avcC" | b"hvcC" | b"lhvC" | b"av1C" => {
                            sample_entry::plan_config(walk, prop, sample_entry::config_kind(&prop.kind), actions)?;
                        }
                        b"auxC" => plan_auxc(walk, prop, actions),
                        b"irot" | b"imir" => blank_reserved_bits(walk, prop, actions),
                        b"cmpd" => {
                            refuse_component_uris(walk, prop)?;
                            walk.slack(prop, actions);
                        }
                        b"icef" if fields_len(b"icef", walk.payload(prop)).is_some() => {
                            clear_bits(walk, prop, 4, 0xFC, actions);
                            walk.slack(prop, actions);
                        }
                        // A property with no layout pavise knows (an undefined version, a
                        // value libheif refuses, a box too short for its fields) is not kept.
                        kind if ITEM_PROPERTIES.contains(&kind) && fields_len(kind, walk.payload(prop)).is_some() => {
                            walk.slack(prop, actions)
                        }
                        other if essential.contains(&(i + 1)) => {
                            return Err(MediaError::malformed(
                                walk.format,
                                format!("an image needs item property '{}', which pavise cannot check", fourcc(other)),
                            ));
                        }
                        other => actions
                            .push(free(prop, &format!("ipco/{} (an item property no viewer needs)", fourcc(other)))),
                    }
                }
            }
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, "iprp")),
            other => actions.push(free(k, &format!("iprp/{} box", fourcc(other)))),
        }
    }
    Ok(())
}

/// The properties (1-based `ipco` positions) of the images pavise keeps, and those of
/// them an image marks essential. An `ipma` entry counts only for an item `iinf`
/// declares as an image and a reader reaches ([`shown_images`]): an entry for an item that does not exist, for the Exif item
/// pavise hides or for any other item links nothing a viewer shows (red team pass 7,
/// H2: such an entry kept a `pixi` of 255 sender-chosen bytes). Of two properties of one
/// type an image takes the first, as libheif does (`get_property`), and the others are
/// not counted; two of a type libheif applies one after the other (`irot`, `imir`,
/// `clap`) or of which it takes the last (two `colr` of one kind) are refused, since
/// readers then show different images.
fn used_properties(
    walk: Walk<'_>,
    associations: &[Association],
    props: &[BoxAt],
    images: &HashSet<u32>,
) -> Result<(HashSet<usize>, HashSet<usize>), MediaError> {
    let (mut used, mut essential) = (HashSet::new(), HashSet::new());
    for association in associations.iter().filter(|a| images.contains(&a.item)) {
        let mut first_of_kind: Vec<([u8; 4], Option<bool>, usize)> = Vec::new();
        for p in &association.properties {
            let Some(prop) = p.index.checked_sub(1).and_then(|i| props.get(i)) else { continue };
            // A colour box of an ICC profile and one of code points are two kinds.
            let class = (&prop.kind == b"colr").then(|| walk.payload(prop).get(..4) == Some(b"nclx"));
            match first_of_kind.iter().find(|(kind, c, _)| kind == &prop.kind && *c == class) {
                Some(&(_, _, index)) if index == p.index => {}
                Some(_) if matches!(&prop.kind, b"irot" | b"imir" | b"clap" | b"colr") => {
                    return Err(MediaError::malformed(
                        walk.format,
                        format!(
                            "image item {} has two '{}' properties (readers apply different ones)",
                            association.item,
                            fourcc(&prop.kind)
                        ),
                    ));
                }
                Some(_) => continue,
                None => first_of_kind.push((prop.kind, class, p.index)),
            }
            used.insert(p.index);
            if p.essential {
                essential.insert(p.index);
            }
        }
    }
    Ok((used, essential))
}

/// The `pixi` (bits per channel) each shown image must have, by `ipco` position: the
/// whole payload, rewritten where it differs. libheif and libavif read the depth from
/// the codec configuration and use `pixi` at most to check it, while exiftool prints
/// every byte (red team pass 9, H2e: 255 sender-chosen "channels" on the primary or a
/// thumbnail). So a coded image's `pixi` is what its `hvcC` or `av1C` says (one channel
/// for monochrome, else three, each of the luma or chroma depth), a derived image's that
/// of its first input, and an image with neither must have one a codec could produce
/// (one or three channels of one depth, 8 to 16 bits). A `pixi` too short for the
/// channels, or shared by two images that disagree, is refused.
fn pixel_depths(
    walk: Walk<'_>,
    associations: &[Association],
    props: &[BoxAt],
    images: &HashSet<u32>,
    references: &[Reference],
) -> Result<HashMap<usize, Vec<u8>>, MediaError> {
    let bad = |what: String| MediaError::malformed(walk.format, format!("image metadata: {what}"));
    let by_item: HashMap<u32, &Association> = associations.iter().map(|a| (a.item, a)).collect();
    let first = |item: u32, kinds: &[&[u8; 4]]| {
        let association = by_item.get(&item)?;
        association.properties.iter().find_map(|p| {
            let prop = p.index.checked_sub(1).and_then(|i| props.get(i))?;
            kinds.contains(&&prop.kind).then_some((p.index, prop))
        })
    };
    let implied = |mut item: u32| {
        for _ in 0..8 {
            if let Some((_, config)) = first(item, &[b"hvcC", b"av1C"]) {
                return codec_depths(&config.kind, walk.payload(config));
            }
            item = *inputs(references, item).first()?;
        }
        None
    };
    let mut out: HashMap<usize, Vec<u8>> = HashMap::new();
    for &item in images {
        let Some((index, pixi)) = first(item, &[b"pixi"]) else { continue };
        let p = walk.payload(pixi);
        let have = p.get(4).map(|&n| usize::from(n)).and_then(|n| p.get(5..5 + n));
        let depths = match (implied(item), have) {
            (Some(depths), _) => depths,
            (None, Some(have))
                if matches!(have.len(), 1 | 3) && (8..=16).contains(&have[0]) && have.iter().all(|&d| d == have[0]) =>
            {
                have.to_vec()
            }
            (None, _) => return Err(bad(format!("image item {item} has a 'pixi' no codec configuration explains"))),
        };
        let mut bytes = vec![0u8; p.len()];
        let Some(fields) = bytes.get_mut(4..5 + depths.len()) else {
            return Err(bad(format!("image item {item} has a 'pixi' too short for its {} channels", depths.len())));
        };
        fields[0] = depths.len() as u8;
        fields[1..].copy_from_slice(&depths);
        if out.get(&index).is_some_and(|other| *other != bytes) {
            return Err(bad(format!("a 'pixi' shared by images of different depths (item {item})")));
        }
        out.insert(index, bytes);
    }
    Ok(out)
}

/// The bits per channel an `hvcC` or `av1C` codes: one channel for monochrome (HEVC
/// chroma format 0, AV1's monochrome flag), else luma and two chroma channels.
fn codec_depths(kind: &[u8; 4], config: &[u8]) -> Option<Vec<u8>> {
    match kind {
        b"hvcC" => {
            let (chroma, luma, chroma_depth) =
                (config.get(16)? & 3, (config.get(17)? & 7) + 8, (config.get(18)? & 7) + 8);
            Some(if chroma == 0 { vec![luma] } else { vec![luma, chroma_depth, chroma_depth] })
        }
        b"av1C" => {
            let (profile, flags) = (config.get(1)? >> 5, *config.get(2)?);
            let depth = match (flags & 0x40 != 0, flags & 0x20 != 0) {
                (false, _) => 8,
                (true, true) if profile == 2 => 12,
                (true, _) => 10,
            };
            Some(if flags & 0x10 != 0 { vec![depth] } else { vec![depth; 3] })
        }
        _ => None,
    }
}

/// `auxC`: a version and flags, the auxiliary type (a NUL-terminated URN), then subtype
/// bytes. A type of [`AUX_TYPES`] stays and the bytes after its NUL are zeroed; any other
/// is blanked whole and reads as an empty type. The box stays: libheif refuses the whole
/// file when an auxiliary image (`auxl`) has no `auxC`, and reads an empty type as an
/// auxiliary image of no known kind, so the main image still shows.
fn plan_auxc(walk: Walk<'_>, auxc: &BoxAt, actions: &mut Vec<Action>) {
    let p = walk.payload(auxc);
    let text = p.get(4..).unwrap_or_default();
    let known = text.iter().position(|&c| c == 0).filter(|&nul| AUX_TYPES.contains(&&text[..nul]));
    let (from, what) = match known {
        Some(nul) => (4 + nul + 1, "auxC subtype bytes"),
        None => (4, "auxC type of no standard or camera maker"),
    };
    if from < p.len() {
        let off = auxc.payload + from as u64;
        actions.push(Action::Blank { off, len: auxc.end - off, what: what.to_owned() });
    }
}

/// `irot` (2 bits of angle) and `imir` (1 bit of axis) fill their byte with reserved
/// bits, which a sender may set as it likes; they are cleared.
fn blank_reserved_bits(walk: Walk<'_>, b: &BoxAt, actions: &mut Vec<Action>) {
    clear_bits(walk, b, 0, if &b.kind == b"irot" { 0x03 } else { 0x01 }, actions);
    walk.slack(b, actions);
}

/// Clears the bits outside `mask` of the payload byte at `at` (reserved bits).
fn clear_bits(walk: Walk<'_>, b: &BoxAt, at: usize, mask: u8, actions: &mut Vec<Action>) {
    if let Some(&v) = walk.payload(b).get(at)
        && v & !mask != 0
    {
        let what = format!("reserved bits of {}", fourcc(&b.kind));
        actions.push(Action::Patch { off: b.payload + at as u64, bytes: vec![v & mask], what });
    }
}

/// `cmpd` (uncompressed images): a component type of 0x8000 or more is named by a URI,
/// free text that cannot be blanked without changing what the component is.
fn refuse_component_uris(walk: Walk<'_>, cmpd: &BoxAt) -> Result<(), MediaError> {
    let p = walk.payload(cmpd);
    let count = be32(p, 0).unwrap_or(0) as usize;
    let named = (0..count).any(|i| be16(p, 4 + 2 * i).is_none_or(|t| t >= 0x8000));
    if named {
        return Err(MediaError::malformed(
            walk.format,
            "image metadata: a 'cmpd' component named by a URI (free text), which pavise cannot check",
        ));
    }
    Ok(())
}

/// One `ipma` entry: an item and the properties associated with it.
struct Association {
    item: u32,
    properties: Vec<Property>,
}

/// A property of an item: its 1-based position in `ipco`, and whether the item needs it.
struct Property {
    index: usize,
    essential: bool,
}

/// The entries of every `ipma` among an `iprp`'s `kids`. libheif merges the boxes and
/// takes an item's first entry; an item in two entries is refused, so that the
/// properties pavise checks (the codec configuration its data is walked with) are the
/// ones a reader uses.
fn associations(walk: Walk<'_>, kids: &[BoxAt]) -> Result<Vec<Association>, MediaError> {
    let mut out = Vec::new();
    for ipma in kids.iter().filter(|k| &k.kind == b"ipma") {
        defined_version(walk, ipma, 1)?;
        out.extend(
            parse_ipma(walk.payload(ipma))
                .ok_or_else(|| MediaError::malformed(walk.format, "image metadata: unreadable ipma"))?,
        );
    }
    refuse_repeated_items(out.iter().map(|a| a.item), "ipma", walk.format)?;
    Ok(out)
}

fn parse_ipma(p: &[u8]) -> Option<Vec<Association>> {
    let (version, wide) = (*p.first()?, p.get(3)? & 1 == 1);
    let mut pos = 4;
    let count = be32(p, pos)?;
    pos += 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let item = if version < 1 { be16(p, pos).map(u32::from) } else { be32(p, pos) }?;
        pos += if version < 1 { 2 } else { 4 };
        let n = *p.get(pos)?;
        pos += 1;
        let mut properties = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let (essential, index) = if wide {
                let v = be16(p, pos)?;
                pos += 2;
                (v & 0x8000 != 0, usize::from(v & 0x7FFF))
            } else {
                let v = *p.get(pos)?;
                pos += 1;
                (v & 0x80 != 0, usize::from(v & 0x7F))
            };
            properties.push(Property { index, essential });
        }
        out.push(Association { item, properties });
    }
    Some(out)
}

/// Refuses a HEIF table of a version its specification does not define (`iloc` above 2,
/// `iinf`, `ipma`, `iref` and `pitm` above 1, `infe` above 3): readers guess at such a
/// layout differently (exiftool reads a version-3 `iloc` without the construction
/// method and extent indexes pavise reads), so pavise would zero by one reading while a
/// reader takes another.
fn defined_version(walk: Walk<'_>, b: &BoxAt, max: u8) -> Result<(), MediaError> {
    match walk.payload(b).first() {
        Some(&v) if v > max => Err(undefined_version(walk.format, b, v)),
        _ => Ok(()),
    }
}

fn undefined_version(format: Format, b: &BoxAt, v: u8) -> MediaError {
    MediaError::malformed(
        format,
        format!("image metadata: '{}' version {v}, which no specification defines", fourcc(&b.kind)),
    )
}

/// Refuses an item listed twice in a table keyed by item (`infe`, `iloc`, `ipma`):
/// libheif and ffmpeg read one entry (libheif the first), and pavise must not zero or
/// walk by another.
fn refuse_repeated_items(ids: impl IntoIterator<Item = u32>, table: &str, format: Format) -> Result<(), MediaError> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(MediaError::malformed(
                format,
                format!("two '{table}' entries for item {id} (readers take different ones)"),
            ));
        }
    }
    Ok(())
}

/// What a `colr` box holds: code points (`nclx`, `nclc`) or an ICC profile (`prof`,
/// `rICC`); `None` for a type no reader knows.
fn colr_holds_code_points(payload: &[u8]) -> Option<bool> {
    match payload.get(..4)? {
        b"nclx" | b"nclc" => Some(true),
        b"prof" | b"rICC" => Some(false),
        _ => None,
    }
}

/// A `colr` box (HEIF property or video sample description): an ICC profile in it
/// (`prof`/`rICC`) loses its device, description and text tags.
fn plan_colr(walk: Walk<'_>, colr: &BoxAt, actions: &mut Vec<Action>) {
    let p = walk.payload(colr);
    // nclx: three code points of 2 bytes and a range flag; QuickTime's nclc has no flag.
    // Bytes after them are zeroed. A colour type no reader knows, or code points cut
    // short, is no colour and goes whole (red team pass 26: `colrPLAN` and a 6-byte
    // `nclx` were kept as sent, ten to a sample description).
    let fields = match p.get(..4) {
        Some(b"prof" | b"rICC") => None,
        Some(b"nclx") if p.len() >= 11 => Some(11),
        Some(b"nclc") if p.len() >= 10 => Some(10),
        _ => return actions.push(free(colr, "a colr box of no colour type a reader knows, or cut short")),
    };
    if let Some(fields) = fields
        && fields < p.len()
    {
        let off = colr.payload + fields as u64;
        let what = "bytes after the fields of colr".to_owned();
        actions.push(Action::Blank { off, len: colr.end - off, what });
    }
    // A code point H.273 does not register is two bytes the sender chose (red team pass
    // 25, F7: `Unknown (20556)`); it is written as "unspecified", and the range flag's
    // seven reserved bits as zero.
    if let Some(fields @ (10 | 11)) = fields
        && let Some(sent) = p.get(4..fields)
    {
        let mut bytes = sent.to_vec();
        for (kind, code) in CodePoint::IN_ORDER.iter().zip(bytes.chunks_exact_mut(2)) {
            if !kind.known(u16::from_be_bytes([code[0], code[1]])) {
                code.copy_from_slice(&CodePoint::UNSPECIFIED.to_be_bytes());
            }
        }
        if let Some(range) = bytes.get_mut(6) {
            *range &= 0x80;
        }
        if bytes != sent {
            let what = "colour code points no standard registers".to_owned();
            actions.push(Action::Patch { off: colr.payload + 4, bytes, what });
        }
    }
    if matches!(p.get(..4), Some(b"prof" | b"rICC")) {
        let mut icc = p[4..].to_vec();
        let what = "ICC profile device, description and text tags".to_owned();
        let off = colr.payload + 4;
        match super::icc::blank(&mut icc) {
            Ok(0) => {}
            Ok(_) => actions.push(Action::Patch { off, bytes: icc, what }),
            Err(e) => actions.push(Action::Blank { off, len: icc.len() as u64, what: format!("{e}") }),
        }
    }
}

/// Item id, file offset of its 4CC type (0 when the infe has none), and the type. Each
/// item's name (and a `mime` item's content type) is blanked: no reader needs it, and a
/// name can be anything (`IMG_20240604_Paris`).
fn parse_iinf(walk: Walk<'_>, iinf: &BoxAt, actions: &mut Vec<Action>) -> Result<Vec<(u32, u64, [u8; 4])>, MediaError> {
    let format = walk.format;
    let p = walk.payload(iinf);
    let version = *p.first().ok_or_else(|| MediaError::malformed(format, "empty iinf"))?;
    defined_version(walk, iinf, 1)?;
    let skip = if version == 0 { 6 } else { 8 };
    let mut out = Vec::new();
    for infe in walk.kids(iinf, skip)? {
        match &infe.kind {
            b"infe" => {}
            b"free" | b"skip" | b"wide" => {
                actions.push(blank_payload(&infe, "iinf"));
                continue;
            }
            other => {
                actions.push(free(&infe, &format!("iinf/{} (not an item)", fourcc(other))));
                continue;
            }
        }
        let q = walk.payload(&infe);
        let short = || MediaError::malformed(format, "short infe box");
        let v = *q.first().ok_or_else(short)?;
        let (id, type_off) = match v {
            0 | 1 => (u32::from(be16(q, 4).ok_or_else(short)?), None),
            2 => (u32::from(be16(q, 4).ok_or_else(short)?), Some(8)),
            3 => (be32(q, 4).ok_or_else(short)?, Some(10)),
            _ => return Err(undefined_version(format, &infe, v)),
        };
        let name_at = match type_off {
            Some(t) => {
                let kind: [u8; 4] = q.get(t..t + 4).and_then(|s| s.try_into().ok()).ok_or_else(short)?;
                out.push((id, infe.payload + t as u64, kind));
                t + 4
            }
            // Version 0/1 entries name no type; treat the item as data to zero.
            None => {
                out.push((id, 0, *b"mime"));
                8
            }
        };
        if q.len() > name_at {
            let off = infe.payload + name_at as u64;
            actions.push(Action::Blank { off, len: infe.end - off, what: "item name".into() });
        }
    }
    refuse_repeated_items(out.iter().map(|&(id, _, _)| id), "infe", format)?;
    Ok(out)
}

#[derive(Debug)]
struct Location {
    id: u32,
    method: u8,
    data_reference: u16,
    base: u64,
    /// (offset, length) pairs; length 0 means "to the end".
    extents: Vec<(u64, u64)>,
}

fn parse_iloc(p: &[u8]) -> Option<Vec<Location>> {
    let version = *p.first()?;
    let sizes = be16(p, 4)?;
    let offset_size = usize::from(sizes >> 12);
    let length_size = usize::from((sizes >> 8) & 0xF);
    let base_size = usize::from((sizes >> 4) & 0xF);
    let index_size = if version >= 1 { usize::from(sizes & 0xF) } else { 0 };
    let mut pos = 6;
    let read = |pos: &mut usize, n: usize| -> Option<u64> {
        let v = match n {
            0 => 0,
            4 => u64::from(be32(p, *pos)?),
            8 => be64(p, *pos)?,
            _ => return None,
        };
        *pos += n;
        Some(v)
    };
    let count: u64 = if version < 2 { be16(p, 6)?.into() } else { be32(p, 6)?.into() };
    pos += if version < 2 { 2 } else { 4 };
    let mut out = Vec::new();
    for _ in 0..count {
        let id = if version < 2 {
            let v = be16(p, pos)?;
            pos += 2;
            u32::from(v)
        } else {
            let v = be32(p, pos)?;
            pos += 4;
            v
        };
        let method = if version >= 1 {
            let v = be16(p, pos)?;
            pos += 2;
            (v & 0xF) as u8
        } else {
            0
        };
        let data_reference = be16(p, pos)?;
        pos += 2;
        let base = read(&mut pos, base_size)?;
        let n = be16(p, pos)?;
        pos += 2;
        let mut extents = Vec::new();
        for _ in 0..n {
            read(&mut pos, index_size)?;
            let off = read(&mut pos, offset_size)?;
            let len = read(&mut pos, length_size)?;
            extents.push((off, len));
        }
        out.push(Location { id, method, data_reference, base, extents });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::media::inplace::MemStore;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    /// A FullBox: version, flags, fields.
    fn full(kind: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
        bx(kind, &[&[version, 0, 0, 0][..], body].concat())
    }

    /// The 78 fields of a VisualSampleEntry (vendor and compressor name set), then `children`.
    fn visual_entry(kind: &[u8; 4], children: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 78];
        p[7] = 1; // data reference index
        p[12..16].copy_from_slice(b"appl");
        p[42] = 9;
        p[43..52].copy_from_slice(b"PaviseCam");
        p.extend_from_slice(children);
        bx(kind, &p)
    }

    /// A sound description of `fields` bytes (28, or QuickTime's 44 or 64) and `version`.
    fn audio_entry(kind: &[u8; 4], version: u16, fields: usize, children: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; fields];
        p[7] = 1;
        p[8..10].copy_from_slice(&version.to_be_bytes());
        p[12..16].copy_from_slice(b"appl");
        p[17] = 2;
        p.extend_from_slice(children);
        bx(kind, &p)
    }

    /// A track with one sample description and one chunk of one sample (`off`, `len`).
    fn trak(
        id: u32,
        handler: &[u8; 4],
        entry: &[u8],
        stsd_version: u8,
        (off, len): (u32, u32),
        extra: &[u8],
    ) -> Vec<u8> {
        let table = Table { stsc: &[(1, 1, 1)], uniform: 0, sizes: &[len], chunks: &[off], descriptions: 1 };
        track(id, handler, entry, stsd_version, table, extra)
    }

    /// The sample tables of a [`track`]: `stsc` entries (first chunk, samples per chunk,
    /// description index), `stsz` (a uniform size, else the sizes), `stco`, and how
    /// many descriptions `entry` holds.
    #[derive(Clone, Copy)]
    struct Table<'a> {
        stsc: &'a [(u32, u32, u32)],
        uniform: u32,
        sizes: &'a [u32],
        chunks: &'a [u32],
        descriptions: u32,
    }

    fn track(id: u32, handler: &[u8; 4], entry: &[u8], stsd_version: u8, table: Table<'_>, extra: &[u8]) -> Vec<u8> {
        let mut tkhd = vec![0u8; 80];
        tkhd[8..12].copy_from_slice(&id.to_be_bytes());
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        let hdlr = full(b"hdlr", 0, &[&[0u8; 4][..], handler, &[0; 12], b"Handler\0"].concat());
        let header = if handler == b"soun" { full(b"smhd", 0, &[0; 4]) } else { full(b"vmhd", 0, &[0; 8]) };
        let dinf = bx(b"dinf", &full(b"dref", 0, &[&u32s(&[1])[..], &bx(b"url ", &[0, 0, 0, 1])].concat()));
        let stbl = bx(
            b"stbl",
            &[
                full(b"stsd", stsd_version, &[&u32s(&[table.descriptions])[..], entry].concat()),
                full(b"stts", 0, &u32s(&[1, table.sizes.len() as u32, 1])),
                full(
                    b"stsc",
                    0,
                    &[
                        u32s(&[table.stsc.len() as u32]),
                        table.stsc.iter().flat_map(|&(a, b, c)| u32s(&[a, b, c])).collect(),
                    ]
                    .concat(),
                ),
                full(
                    b"stsz",
                    0,
                    &[
                        u32s(&[table.uniform, table.sizes.len() as u32]),
                        if table.uniform == 0 { u32s(table.sizes) } else { Vec::new() },
                    ]
                    .concat(),
                ),
                full(b"stco", 0, &[u32s(&[table.chunks.len() as u32]), u32s(table.chunks)].concat()),
            ]
            .concat(),
        );
        let minf = bx(b"minf", &[header, dinf, stbl].concat());
        let mdia = bx(b"mdia", &[full(b"mdhd", 0, &[0; 20]), hdlr, minf].concat());
        bx(b"trak", &[&full(b"tkhd", 0, &tkhd)[..], &mdia, extra].concat())
    }

    const FTYP_LEN: u32 = 20;

    /// `ftyp` (20 bytes), `mdat`, then `moov` with `moov_children`: a sample at `mdat`
    /// offset `x` is at file offset `FTYP_LEN + 8 + x`.
    fn movie(brands: &[u8; 8], mdat: &[u8], moov_children: &[u8]) -> Vec<u8> {
        let ftyp = bx(b"ftyp", &[&brands[..4], &[0, 0, 2, 0], &brands[4..]].concat());
        assert_eq!(ftyp.len() as u32, FTYP_LEN);
        let mvhd = full(b"mvhd", 0, &[0; 96]);
        [ftyp, bx(b"mdat", mdat), bx(b"moov", &[&mvhd[..], moov_children].concat())].concat()
    }

    /// An `esds` of one ES_Descriptor: an ES_ID, a DecoderConfigDescriptor (MPEG-4
    /// Part 2 video, which sound descriptions do not check) whose DecSpecificInfo is
    /// `config`, and an SLConfigDescriptor.
    fn es_descriptor(config: &[u8]) -> Vec<u8> {
        assert!(config.len() < 100);
        let info = [&[5, config.len() as u8][..], config].concat();
        let decoder = [&[4, 13 + info.len() as u8, 0x20, 0x11][..], &[0; 11], &info].concat();
        let es = [&[0, 1, 0][..], &decoder, &[6, 1, 2]].concat();
        bx(b"esds", &[&[0, 0, 0, 0, 3, es.len() as u8][..], &es].concat())
    }

    fn udta() -> Vec<u8> {
        let s = |tag: &[u8; 4], v: &[u8]| bx(tag, &[&(v.len() as u16).to_be_bytes()[..], &[0x15, 0xC7], v].concat());
        bx(
            b"udta",
            &[s(b"\xa9xyz", b"+48.8584+002.2945/"), s(b"\xa9mak", b"PaviseCam"), s(b"\xa9day", b"2024-06-04")].concat(),
        )
    }

    fn contains_at(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    /// Inserts `extra` at `at` in a box tree and grows every box of `enclosing` types
    /// (by name, outermost first) that contains that position.
    fn with_box_after(tree: &[u8], at: usize, extra: &[u8], enclosing: &[&[u8; 4]]) -> Vec<u8> {
        let mut out = [&tree[..at], extra, &tree[at..]].concat();
        let mut from = 0;
        for kind in enclosing {
            let start = from + contains_at(&out[from..], &kind[..]).unwrap() - 4;
            let size = u32::from_be_bytes(out[start..start + 4].try_into().unwrap()) + extra.len() as u32;
            out[start..start + 4].copy_from_slice(&size.to_be_bytes());
            from = start + 8;
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn scrubbed(mut file: Vec<u8>, format: Format) -> (Vec<u8>, Report) {
        let before = file.len();
        let mut report = Report::default();
        scrub(&mut MemStore(&mut file), format, &mut report).unwrap();
        assert_eq!(file.len(), before, "no offset moves");
        let mut again = Report::default();
        audit(&mut MemStore(&mut file), format, &mut again).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
        (file, report)
    }

    fn refused(mut file: Vec<u8>, format: Format) -> MediaError {
        scrub(&mut MemStore(&mut file), format, &mut Report::default()).unwrap_err()
    }

    /// The fifth media pass's G1: ffmpeg takes the first movie box, and the first track of
    /// an id; a second of either would let pavise walk one while the instance keeps the other.
    #[test]
    fn a_second_movie_box_or_track_id_is_refused() {
        // Each track its own three bytes of "frames" (two tracks' chunks may not overlap).
        let video = |id: u32| {
            let entry = visual_entry(b"mp4v", &es_descriptor(b"\x01SPS"));
            trak(id, b"vide", &entry, 0, (FTYP_LEN + 8 + 3 * (id - 1) % 6, 3), &[])
        };
        let err = refused(movie(b"isomisom", b"frames", &[video(1), video(1)].concat()), Format::Video);
        assert!(err.to_string().contains("two tracks with id 1"), "{err}");
        let mut two_movies = movie(b"isomisom", b"frames", &video(1));
        two_movies.extend(bx(b"moov", &[full(b"mvhd", 0, &[0; 96]), video(2)].concat()));
        let err = refused(two_movies, Format::Video);
        assert!(err.to_string().contains("a second movie box"), "{err}");
        // Two tracks of two ids pass.
        let (file, _) = scrubbed(movie(b"isomisom", b"frames", &[video(1), video(2)].concat()), Format::Video);
        assert!(contains(&file, b"frames"));
    }

    #[test]
    fn frees_udta_and_meta_in_place() {
        let video = trak(1, b"vide", &visual_entry(b"mp4v", &es_descriptor(b"\x01SPS")), 0, (FTYP_LEN + 8, 6), &[]);
        let moov = [video, udta(), bx(b"meta", b"ISO6709")].concat();
        let (file, report) = scrubbed(movie(b"isomisom", b"frames", &moov), Format::Video);
        assert!(!contains(&file, b"+48.") && !contains(&file, b"ISO6709"), "{report:?}");
        assert!(contains(&file, b"frames") && contains(&file, b"\x01SPS"), "samples and codec configuration stay");
        assert!(!contains(&file, b"PaviseCam") && !contains(&file, b"appl"), "compressor name and vendor");
    }

    /// The red team's F1 and its class: a `udta`/`meta`/`ilst`/`uuid` inside a sample
    /// description (video, ISO sound, QuickTime v1 and v2 sound, an ISO v1 sound entry),
    /// a QuickTime `wave`, an `edts`, a `tref`, a `tapt`: ffmpeg reads each as the file's
    /// location. Every one is freed and the codec configurations stay.
    #[test]
    fn metadata_inside_kept_boxes_and_sample_descriptions_is_freed() {
        let ilst = bx(b"ilst", &bx(b"\xa9xyz", &bx(b"data", b"\0\0\0\x01\0\0\0\0+48.8584+002.2945/")));
        let hidden = [udta(), bx(b"meta", &[&[0u8; 4][..], &ilst].concat()), bx(b"uuid", &[0xBE; 24])].concat();
        let esds = es_descriptor(b"AAC-config");
        let wave = bx(b"wave", &[bx(b"frma", b"mp4a"), esds.clone(), udta(), bx(b"\0\0\0\0", &[])].concat());
        let edts = bx(b"edts", &[full(b"elst", 0, &[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 1, 0, 0]), udta()].concat());
        let tapt = bx(b"tapt", &[full(b"clef", 0, &[0, 64, 0, 0, 0, 48, 0, 0]), udta()].concat());
        let o = FTYP_LEN + 8;
        for (name, brands, audio, stsd_version) in [
            ("ISO sound", b"isomisom", audio_entry(b"mp4a", 0, 28, &[esds.clone(), hidden.clone()].concat()), 0),
            (
                "QuickTime v1 sound",
                b"qt  qt  ",
                audio_entry(b"mp4a", 1, 44, &[wave.clone(), hidden.clone()].concat()),
                0,
            ),
            ("QuickTime v2 sound", b"qt  qt  ", audio_entry(b"lpcm", 2, 64, &hidden), 0),
            (
                "ISO v1 sound in a v1 stsd",
                b"isomisom",
                audio_entry(b"mp4a", 1, 28, &[esds.clone(), hidden.clone()].concat()),
                1,
            ),
        ] {
            let entry = visual_entry(b"mp4v", &[&es_descriptor(b"\x01SPS")[..], &hidden].concat());
            let video = trak(1, b"vide", &entry, 0, (o, 6), &[edts.clone(), tapt.clone()].concat());
            // ... and one in the video track's dinf, beside its dref.
            let dref_end = contains_at(&video, b"url ").unwrap() + 8;
            let video = with_box_after(&video, dref_end, &udta(), &[b"trak", b"mdia", b"minf", b"dinf"]);
            // Track 3 does not exist: a chapter reference to it goes; one to track 1 stays.
            let refs = [bx(b"sync", &1u32.to_be_bytes()), bx(b"chap", &3u32.to_be_bytes()), udta()].concat();
            let sound = trak(2, b"soun", &audio, stsd_version, (o + 6, 4), &bx(b"tref", &refs));
            let (file, report) = scrubbed(movie(brands, b"framesAAAA", &[video, sound].concat()), Format::Video);
            for gone in [&b"+48.8584"[..], b"PaviseCam", b"2024-06-04", &[0xBE; 16]] {
                assert!(!contains(&file, gone), "{name}: {:?} survived: {report:#?}", String::from_utf8_lossy(gone));
            }
            for kept in [&b"\x01SPS"[..], b"framesAAAA", b"elst", b"clef", b"sync"] {
                assert!(contains(&file, kept), "{name}: {:?} is gone: {report:#?}", String::from_utf8_lossy(kept));
            }
            assert!(!contains(&file, b"chap"), "{name}: a reference to a track that is not there is freed");
            if name.starts_with("QuickTime v1") {
                assert!(contains(&file, b"frmamp4a") && contains(&file, b"AAC-config"), "wave keeps what decodes");
            } else {
                assert!(contains(&file, b"AAC-config") || name.contains("v2"), "{name}: esds stays");
            }
        }
    }

    /// What the lists cannot foresee is caught by the search after planning: a `udta`
    /// inside a codec configuration pavise keeps as it is, is a refusal, not a leak.
    #[test]
    fn a_metadata_box_left_anywhere_in_moov_is_a_refusal() {
        let esds = es_descriptor(&[&b"\x01SPS"[..], &udta()].concat());
        let video = trak(1, b"vide", &visual_entry(b"mp4v", &esds), 0, (FTYP_LEN + 8, 6), &[]);
        let err = refused(movie(b"isomisom", b"frames", &video), Format::Video);
        assert_eq!(err.reason(), "not_clean", "{err}");
        assert!(err.to_string().contains("'udta' box at byte"), "{err}");
        // Bytes after a description's fields that are not boxes cannot be walked.
        let video = trak(1, b"vide", &visual_entry(b"avc1", b"not a box at all"), 0, (FTYP_LEN + 8, 6), &[]);
        let err = refused(movie(b"isomisom", b"frames", &video), Format::Video);
        assert!(err.to_string().contains("not boxes"), "{err}");
        let video = trak(1, b"vide", &bx(b"encv", &[0; 78]), 0, (FTYP_LEN + 8, 6), &[]);
        assert!(matches!(refused(movie(b"isomisom", b"frames", &video), Format::Video), MediaError::Unsupported(_)));
    }

    /// Bytes of `mdat` no sample points at (between and after samples) are zeroed; every
    /// sample byte stays.
    #[test]
    fn bytes_in_mdat_no_sample_points_at_are_zeroed() {
        let o = FTYP_LEN + 8;
        let video = trak(1, b"vide", &visual_entry(b"mp4v", &es_descriptor(b"\x01SPS")), 0, (o + 4, 6), &[]);
        let sound = trak(2, b"soun", &audio_entry(b"mp4a", 0, 28, &[]), 0, (o + 19, 4), &[]);
        let mdat = b"XMP:frames<x:Paris>AAAA+48.8584";
        let (file, report) = scrubbed(movie(b"isomisom", mdat, &[video, sound].concat()), Format::Video);
        assert!(contains(&file, b"frames") && contains(&file, b"AAAA"), "{report:#?}");
        assert!(
            !contains(&file, b"XMP:") && !contains(&file, b"Paris") && !contains(&file, b"+48.8584"),
            "{report:#?}"
        );
    }

    /// Red team 13's F1: an `stsc` readers repair (0 samples per chunk, a description
    /// that is not there, chunk numbers out of order) is read by each its own way, and a
    /// chunk another track's chunk covers keeps bytes the first track's table hides: an
    /// SEI with GPS that ffmpeg and exiftool find in the video, kept as "audio". Both are
    /// refused; the tables every muxer writes are read as before.
    #[test]
    fn sample_tables_readers_repair_or_chunks_that_overlap_are_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SEI_GPS, SLICE]);
        let len = sample.len() as u32;
        let mdat = [&sample[..], &sample, b"AAAA"].concat();
        let entry = visual_entry(b"avc1", &avcc(&[]));
        let video = |stsc: &[(u32, u32, u32)]| {
            let table = Table { stsc, uniform: 0, sizes: &[len, len], chunks: &[o, o + len], descriptions: 1 };
            track(1, b"vide", &entry, 0, table, &[])
        };
        let sound = trak(2, b"soun", &audio_entry(b"mp4a", 0, 28, &[]), 0, (o + 2 * len, 4), &[]);
        let file = |stsc: &[(u32, u32, u32)]| movie(b"isomisom", &mdat, &[video(stsc), sound.clone()].concat());
        let (out, report) = scrubbed(file(&[(1, 1, 1)]), Format::Video);
        assert!(!contains(&out, b"freeGPS") && contains(&out, SLICE) && contains(&out, b"AAAA"), "{report:#?}");
        for (stsc, why) in [
            (&[(1, 0, 1)][..], "0 samples per chunk"),
            (&[(1, 1, 0)], "sample description 0"),
            (&[(1, 1, 2)], "sample description 2 of 1"),
            (&[(2, 1, 1)], "starts at chunk 2"),
            (&[(1, 1, 1), (1, 1, 1)], "starts at chunk 1, after 1"),
            (&[(1, 2, 1), (3, 1, 1), (2, 1, 1)], "starts at chunk 2, after 3"),
        ] {
            let err = refused(file(stsc), Format::Video);
            assert!(err.to_string().contains(why), "{stsc:?}: {err}");
        }
        // The audio chunk pointed at the second video frame.
        let sound = trak(2, b"soun", &audio_entry(b"mp4a", 0, 28, &[]), 0, (o + len, 4), &[]);
        let err = refused(movie(b"isomisom", &mdat, &[video(&[(1, 1, 1)]), sound].concat()), Format::Video);
        assert!(err.to_string().contains(&format!("two chunks cover the bytes at {}", o + len)), "{err}");
        // Two chunks of one track over the same frame.
        let table = Table { stsc: &[(1, 1, 1)], uniform: 0, sizes: &[len, len], chunks: &[o, o], descriptions: 1 };
        let err = refused(movie(b"isomisom", &mdat, &track(1, b"vide", &entry, 0, table, &[])), Format::Video);
        assert!(err.to_string().contains("two chunks cover"), "{err}");
    }

    /// Red team 13's F4: samples of a second description (an `mp4v` after the `avc1`)
    /// were kept unwalked, and exiftool read their SEI as H.264 anyway. A walked track of
    /// two codecs is refused; two descriptions of one codec (an edit of two recordings)
    /// have every sample walked, whichever description it names.
    #[test]
    fn a_walked_track_of_two_codecs_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SEI_GPS, SLICE]);
        let len = sample.len() as u32;
        let table = Table { stsc: &[(1, 1, 2)], uniform: 0, sizes: &[len], chunks: &[o], descriptions: 2 };
        let avc1 = visual_entry(b"avc1", &avcc(&[]));
        for second in [
            visual_entry(b"mp4v", &es_descriptor(b"\x01SPS")),
            visual_entry(
                b"hvc1",
                &bx(b"hvcC", &{
                    let mut r = vec![1u8; 23];
                    r[21] = 0x0F;
                    r[22] = 0;
                    r
                }),
            ),
        ] {
            let video = track(1, b"vide", &[&avc1[..], &second].concat(), 0, table, &[]);
            let err = refused(movie(b"isomisom", &sample, &video), Format::Video);
            assert!(err.to_string().contains("of different codecs"), "{err}");
        }
        let video = track(1, b"vide", &[&avc1[..], &avc1].concat(), 0, table, &[]);
        let (file, report) = scrubbed(movie(b"isomisom", &sample, &video), Format::Video);
        assert!(!contains(&file, b"freeGPS") && contains(&file, SLICE), "{report:#?}");
    }

    /// Red team 15's N2: with `stts` run out, exiftool reads one more chunk offset than
    /// there are samples for; pavise mapped none there and kept what it pointed at.
    #[test]
    fn chunk_offsets_no_sample_is_in_are_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SLICE]);
        let len = sample.len() as u32;
        let table = Table { stsc: &[(1, 1, 1)], uniform: 0, sizes: &[len], chunks: &[o, o + len], descriptions: 1 };
        let mdat = [&sample[..], &nals(&[SEI_GPS])].concat();
        let err = refused(
            movie(b"isomisom", &mdat, &track(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, table, &[])),
            Format::Video,
        );
        assert!(err.to_string().contains("chunk offsets left after the last sample"), "{err}");
        // Red team 16's N3: an `stts` that runs out before the sizes do, so that
        // exiftool maps the last chunks' samples from shifted places.
        let table = Table { chunks: &[o], sizes: &[len, len], stsc: &[(1, 2, 1)], ..table };
        let mdat = [&sample[..], &sample].concat();
        let mut video = track(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, table, &[]);
        let fine = movie(b"isomisom", &mdat, &video);
        scrubbed(fine, Format::Video);
        let stts = contains_at(&video, b"stts").unwrap();
        video[stts + 12..stts + 16].copy_from_slice(&1u32.to_be_bytes());
        let err = refused(movie(b"isomisom", &mdat, &video), Format::Video);
        assert!(err.to_string().contains("stts times another number of samples"), "{err}");
    }

    /// Red team 14's M3: a 4-bit `stz2`, whose entries exiftool reads as whole bytes.
    #[test]
    fn a_compact_size_table_of_4_bit_entries_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SLICE]);
        let table = Table { stsc: &[(1, 1, 1)], uniform: 4, sizes: &[], chunks: &[o], descriptions: 1 };
        let mut file =
            movie(b"isomisom", &sample, &track(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, table, &[]));
        // `stsz` with a uniform size of 4 reads as `stz2` with 4-bit fields.
        let at = file.windows(4).position(|w| w == b"stsz").unwrap();
        file[at..at + 4].copy_from_slice(b"stz2");
        let err = refused(file, Format::Video);
        assert!(err.to_string().contains("4-bit sizes"), "{err}");
    }

    /// Red team 14's M2: exiftool reads every sample of a video track with an `avcC` as
    /// H.264, whatever the description's type; pavise passed an `mp4v` or `vp09` holding
    /// one without walking its samples.
    #[test]
    fn a_codec_configuration_in_another_codecs_description_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SEI_GPS, SLICE]);
        let len = sample.len() as u32;
        let table = Table { stsc: &[(1, 1, 1)], uniform: 0, sizes: &[len], chunks: &[o], descriptions: 1 };
        for kind in [b"mp4v", b"vp09"] {
            let entry = visual_entry(kind, &avcc(&[]));
            let err = refused(movie(b"isomisom", &sample, &track(1, b"vide", &entry, 0, table, &[])), Format::Video);
            assert!(err.to_string().contains("H.264 configuration"), "{err}");
        }
    }

    /// A movie of one video track of `entry` and one sample of one slice.
    fn one_slice_movie(entry: Vec<u8>) -> Vec<u8> {
        let sample = nals(&[SLICE]);
        let len = sample.len() as u32;
        let table = Table { stsc: &[(1, 1, 1)], uniform: 0, sizes: &[len], chunks: &[FTYP_LEN + 8], descriptions: 1 };
        movie(b"isomisom", &sample, &track(1, b"vide", &entry, 0, table, &[]))
    }

    /// Red team pass 26: a colour box of no known type, or with its code points cut short,
    /// goes whole; two of one kind in a sample description are refused.
    #[test]
    fn colour_boxes_in_a_sample_description_are_colour_or_gone() {
        let with = |colours: &[u8]| one_slice_movie(visual_entry(b"avc1", &[avcc(&[]), colours.to_vec()].concat()));
        let nclx = bx(b"colr", b"nclx\0\x01\0\x01\0\x01\x80");
        let colours = [nclx.clone(), bx(b"colr", b"PLAN"), bx(b"colr", b"PLA")].concat();
        let (out, report) = scrubbed(with(&colours), Format::Video);
        assert!(contains(&out, &nclx) && !contains(&out, b"PLA"), "{report:#?}");
        let err = refused(with(&[nclx, bx(b"colr", b"nclxPLANT")].concat()), Format::Video);
        assert!(err.to_string().contains("two colour boxes of one kind"), "{err}");
    }

    /// Red team pass 27: a kept child of a sample description loses what follows its
    /// fields, one shorter than them goes, and a paletted QuickTime description (whose
    /// children ffmpeg reads from another offset) is refused.
    #[test]
    fn sample_description_children_keep_only_their_fields() {
        let marker = b"PLANTEDMARKER GPS 48.858370N";
        let with = one_slice_movie;
        let children = [
            avcc(&[]),
            bx(b"btrt", &[&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3][..], marker].concat()),
            bx(b"clli", &[&[0, 1, 0, 2][..], marker].concat()),
            bx(b"pasp", b"PLAN"),
        ]
        .concat();
        let (out, report) = scrubbed(with(visual_entry(b"avc1", &children)), Format::Video);
        assert!(!contains(&out, b"PLANTED"), "{report:#?}");
        assert!(contains(&out, b"btrt\0\0\0\x01\0\0\0\x02\0\0\0\x03"), "the fields stay: {report:#?}");
        assert!(!contains(&out, b"pasp") && !contains(&out, b"PLAN"), "a box short of its fields goes");
        let mut paletted = visual_entry(b"avc1", &avcc(&[]));
        paletted[8 + 74..8 + 78].copy_from_slice(&[0, 8, 0, 0]);
        let err = refused(with(paletted), Format::Video);
        assert!(err.to_string().contains("paletted"), "{err}");
    }

    /// Red team pass 28: codec configurations of a stated length, channel layouts and
    /// `wave` children keep their fields only; a `wave` child repeated, or a second
    /// `ftyp`, is refused; a description's reserved and unused fields are zeroed.
    #[test]
    fn sound_descriptions_keep_their_configurations_fields_only() {
        let o = FTYP_LEN + 8;
        let marker = b"PLANTEDMARKER GPS 48.858370N";
        let table = Table { stsc: &[(1, 1, 1)], uniform: 0, sizes: &[4], chunks: &[o], descriptions: 1 };
        let sound =
            |brands: &[u8; 8], entry: Vec<u8>| movie(brands, b"aac!", &track(1, b"soun", &entry, 0, table, &[]));
        let mono_chan =
            bx(b"chan", &[&[0u8; 4][..], &[0, 0x64, 0, 1], &[0; 4], &[0, 0, 0, 2], &[0; 40], marker].concat());
        let flac = bx(b"dfLa", &[&[0u8; 4][..], &[0x00, 0, 0, 34], &[0x11; 34], &[0x84, 0, 0, 28], marker].concat());
        let mut esds = es_descriptor(b"AAC-config");
        esds.extend_from_slice(marker);
        esds[3] += marker.len() as u8;
        let aac = [esds, mono_chan].concat();
        let mut entry = audio_entry(b"mp4a", 0, 28, &aac);
        entry[8..14].copy_from_slice(b"PLANTE");
        for (entry, kept) in [(entry, &b"AAC-config"[..]), (audio_entry(b"fLaC", 0, 28, &flac), &[0x11; 34])] {
            let (out, report) = scrubbed(sound(b"isomisom", entry), Format::Video);
            assert!(!contains(&out, b"PLANTE"), "{report:#?}");
            assert!(contains(&out, kept), "the fields stay: {report:#?}");
        }

        // Pass 29: of an ES_Descriptor, only what ffmpeg reads (not a URL's text, not an
        // unknown descriptor, not bytes after the SLConfig's one).
        let es = [&[0, 1, 0x40, 4][..], b"PLAN", &[0x42, 4], b"PLAN", &[6, 2, 2], b"P"].concat();
        let esds = bx(b"esds", &[&[0, 0, 0, 0, 3, es.len() as u8][..], &es].concat());
        let (out, report) = scrubbed(sound(b"isomisom", audio_entry(b"mp4a", 0, 28, &esds)), Format::Video);
        assert!(!contains(&out, b"PLAN") && !contains(&out, b"\x02P"), "{report:#?}");
        // Pass 30: a second DecoderConfig, after the SLConfig, is read by no one.
        let mut twice = es_descriptor(b"AAC-config");
        let second = [&[4u8, 13 + 6, 0x40, 0x15][..], &[0; 11], &[5, 4], b"PLAN"].concat();
        twice.extend_from_slice(&second);
        twice[3] += second.len() as u8;
        twice[13] += second.len() as u8;
        let (out, report) = scrubbed(sound(b"isomisom", audio_entry(b"mp4a", 0, 28, &twice)), Format::Video);
        assert!(!contains(&out, b"PLAN") && contains(&out, b"AAC-config"), "{report:#?}");

        let wave = |children: &[Vec<u8>]| {
            let wave = bx(b"wave", &[&[bx(b"frma", b"mp4a")], children].concat().concat());
            sound(b"qt  qt  ", audio_entry(b"mp4a", 1, 44, &wave))
        };
        let (out, report) = scrubbed(wave(&[bx(b"mp4a", &[&[0u8; 4][..], marker].concat())]), Format::Video);
        assert!(!contains(&out, b"PLANTED"), "{report:#?}");
        let err = refused(wave(&[bx(b"frma", b"PLAN")]), Format::Video);
        assert!(err.to_string().contains("two 'frma'"), "{err}");
        let twice = [bx(b"ftyp", b"qt  \0\0\x02\0qt  "), sound(b"isomisom", audio_entry(b"mp4a", 0, 28, &[]))].concat();
        assert!(refused(twice, Format::Video).to_string().contains("second file type box"));
    }

    /// Red team 13's F2: a PCM chunk counted as running to the next chunk or the end of
    /// `mdat`, so an XMP packet or an Insta360 trailer after the last audio chunk reached
    /// the instance. Its length is now read from the description: what follows is zeroed,
    /// every audio byte stays, and a description that does not say is refused.
    #[test]
    fn bytes_after_a_pcm_chunk_are_zeroed() {
        let o = FTYP_LEN + 8;
        let pcm = b"PCM-16-bit-stereo-audio!"; // 6 frames of 4 bytes
        let mdat = [&pcm[..], b"<x:xmpmeta GPSLatitude=48.8584>"].concat();
        let table = Table { stsc: &[(1, 6, 1)], uniform: 4, sizes: &[0; 6], chunks: &[o], descriptions: 1 };
        let sowt = {
            let mut e = audio_entry(b"sowt", 0, 28, &[]);
            e[8 + 16..8 + 20].copy_from_slice(&[0, 2, 0, 16]); // stereo, 16 bits
            e
        };
        let sound = track(1, b"soun", &sowt, 0, table, &[]);
        let (file, report) = scrubbed(movie(b"qt  qt  ", &mdat, &sound), Format::Video);
        assert!(contains(&file, pcm) && !contains(&file, b"xmpmeta"), "{report:#?}");
        // QuickTime's own "1 byte per sample" counts frames too.
        let sound = track(1, b"soun", &sowt, 0, Table { uniform: 1, ..table }, &[]);
        let (file, report) = scrubbed(movie(b"qt  qt  ", &mdat, &sound), Format::Video);
        assert!(contains(&file, pcm) && !contains(&file, b"xmpmeta"), "{report:#?}");
        // IMA ADPCM whose description gives no packet size: ffmpeg supplies its own.
        let ima4 = track(1, b"soun", &audio_entry(b"ima4", 0, 28, &[]), 0, Table { uniform: 1, ..table }, &[]);
        let err = refused(movie(b"qt  qt  ", &mdat, &ima4), Format::Video);
        assert!(err.to_string().contains("'ima4' sound description: no packet size"), "{err}");
        // Samples of other durations are read, by ffmpeg too, as stsz says: 6 × 4 bytes.
        let mut sound = track(1, b"soun", &audio_entry(b"ima4", 0, 28, &[]), 0, Table { uniform: 4, ..table }, &[]);
        let stts = contains_at(&sound, b"stts").unwrap();
        sound[stts + 16..stts + 20].copy_from_slice(&64u32.to_be_bytes());
        let (file, report) = scrubbed(movie(b"qt  qt  ", &mdat, &sound), Format::Video);
        assert!(contains(&file, pcm) && !contains(&file, b"xmpmeta"), "{report:#?}");
    }

    /// Length-prefixed (4-byte) NAL units, as an `avcC`/`hvcC` track's samples hold them.
    fn nals(units: &[&[u8]]) -> Vec<u8> {
        units.iter().flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat()).collect()
    }

    /// An `avcC` with one SPS and one PPS (and `extra` NAL units in the SPS array).
    fn avcc(extra: &[&[u8]]) -> Vec<u8> {
        let mut r = vec![1, 66, 0, 30, 0xFF, 0xE0 | (1 + extra.len() as u8)];
        for n in [&b"\x67\x42\x00\x1ESPS"[..]].iter().chain(extra) {
            r.extend_from_slice(&(n.len() as u16).to_be_bytes());
            r.extend_from_slice(n);
        }
        r.extend_from_slice(&[1, 0, 4, 0x68, 0xCE, 0x3C, 0x80]);
        bx(b"avcC", &r)
    }

    const SEI_GPS: &[u8] = b"\x06\x05\x20\0\x01\x01\0freeGPS 48.8584N 2.2945E 20240604\x80";
    const SLICE: &[u8] = b"\x65\x88\x84\x00\x21slice-data";

    /// The red team's N1 and its class: an SEI inside a referenced H.264 or HEVC sample,
    /// an SEI in the codec configuration's arrays, AV1 metadata OBUs: each becomes
    /// padding of its own length; slices and parameter sets stay byte for byte.
    #[test]
    fn sei_in_samples_and_codec_configurations_becomes_padding() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[b"\x09\xF0", SEI_GPS, SLICE]);
        let entry = visual_entry(b"avc1", &avcc(&[b"\x06\x05\x04x264"]));
        let video = trak(1, b"vide", &entry, 0, (o, sample.len() as u32), &[]);
        let (file, report) = scrubbed(movie(b"isomisom", &sample, &video), Format::Video);
        assert!(!contains(&file, b"freeGPS") && !contains(&file, b"x264"), "{report:#?}");
        assert!(contains(&file, SLICE) && contains(&file, b"\x67\x42\x00\x1ESPS"), "slices and SPS stay");
        let filler = [&[0x0C][..], &vec![0xFF; SEI_GPS.len() - 2], &[0x80]].concat();
        assert!(contains(&file, &[&(SEI_GPS.len() as u32).to_be_bytes()[..], &filler].concat()), "same length");
        assert!(report.removed.iter().any(|r| r.what.contains("H.264 SEI")), "{report:#?}");

        let hvcc = {
            let mut r = vec![1u8; 23];
            r[21] = 0x0F;
            r[22] = 1;
            r.extend_from_slice(&[0x27, 0, 1, 0, 8, 0x4E, 0x01, 0x05, 3, b'G', b'P', b'S', 0x80]);
            bx(b"hvcC", &r)
        };
        let sample = nals(&[b"\x4E\x01\x05\x04LEAK\x80", b"\x26\x01\xAFslice-data"]);
        let video = trak(1, b"vide", &visual_entry(b"hvc1", &hvcc), 0, (o, sample.len() as u32), &[]);
        let (file, report) = scrubbed(movie(b"isomisom", &sample, &video), Format::Video);
        assert!(!contains(&file, b"LEAK") && !contains(&file, b"GPS"), "{report:#?}");
        assert!(contains(&file, b"\x26\x01\xAFslice-data"));

        let av1c = bx(
            b"av1C",
            &[&[0x81, 0, 0x0C, 0][..], &[0x0A, 0x02, 0xAA, 0xBB], &[0x2A, 0x03, 0x04, b'G', b'P']].concat(),
        );
        let sample =
            [&[0x12, 0x00][..], &[0x2A, 0x05, 0x05, b'L', b'E', b'A', b'K'], &[0x32, 0x02, 0xAA, 0xBB]].concat();
        let video = trak(1, b"vide", &visual_entry(b"av01", &av1c), 0, (o, sample.len() as u32), &[]);
        let (file, report) = scrubbed(movie(b"isomisom", &sample, &video), Format::Video);
        assert!(!contains(&file, b"LEAK") && !contains(&file, b"GPS"), "{report:#?}");
    }

    /// A sample that cannot be walked with certainty, or an H.264 track whose samples
    /// cannot be cut into NAL units (no `avcC`), is a refusal, never forwarded unchecked.
    #[test]
    fn video_samples_that_cannot_be_walked_are_refused() {
        let o = FTYP_LEN + 8;
        let overrun = [&[0, 0, 0, 99][..], SEI_GPS].concat();
        let video = trak(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, (o, overrun.len() as u32), &[]);
        let err = refused(movie(b"isomisom", &overrun, &video), Format::Video);
        assert!(err.to_string().contains("runs past its sample"), "{err}");
        let sample = nals(&[SEI_GPS]);
        let video = trak(1, b"vide", &visual_entry(b"avc1", &bx(b"btrt", &[0; 12])), 0, (o, sample.len() as u32), &[]);
        let err = refused(movie(b"isomisom", &sample, &video), Format::Video);
        assert!(err.to_string().contains("without its configuration"), "{err}");
        // A "sample" pointing into moov would have pavise patch the file's structure.
        let video = trak(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, (4, 8), &[]);
        let err = refused(movie(b"isomisom", &sample, &video), Format::Video);
        assert!(err.to_string().contains("outside the media data"), "{err}");
    }

    /// Red team F1: ffmpeg decodes as H.264 more names than the usual ones (its RIFF
    /// table: `Q264`, `GAVC`, ...) and any `mp4v` whose `esds` says object type 0x21.
    /// Such a track is walked, or refused; a video codec pavise does not know is refused.
    #[test]
    fn every_name_ffmpeg_decodes_as_h264_is_walked_and_unknown_video_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SEI_GPS, SLICE]);
        for name in [b"Q264", b"GAVC", b"V264", b"SMV2", b"VSSH", b"UMSV", b"tshd", b"INMC"] {
            let video = trak(1, b"vide", &visual_entry(name, &avcc(&[])), 0, (o, sample.len() as u32), &[]);
            let (file, report) = scrubbed(movie(b"isomisom", &sample, &video), Format::Video);
            assert!(!contains(&file, b"freeGPS") && contains(&file, SLICE), "{}: {report:#?}", fourcc(name));
        }
        // esds: ES_Descriptor (tag 3, ES_ID, flags), DecoderConfigDescriptor (tag 4, OTI).
        let esds = |oti: u8| full(b"esds", 0, &[3, 0x80, 0x80, 0x80, 20, 0, 1, 0, 4, 13, oti, 0x11]);
        for (name, oti) in [(b"mp4v", 0x21), (b"mp4v", 0x23), (b"vp09", 0x21), (b"avc1", 0x20)] {
            let entry = visual_entry(name, &esds(oti));
            let video = trak(1, b"vide", &entry, 0, (o, sample.len() as u32), &[]);
            let err = refused(movie(b"isomisom", &sample, &video), Format::Video);
            assert!(err.to_string().contains("esds names another codec"), "{}/{oti:#x}: {err}", fourcc(name));
        }
        let video = trak(1, b"vide", &visual_entry(b"mp4v", &esds(0x20)), 0, (o, 6), &[]);
        let (file, _) = scrubbed(movie(b"isomisom", b"frames", &video), Format::Video);
        assert!(contains(&file, b"frames"), "MPEG-4 Part 2 passes as it is");
        for name in [b"jpeg", b"mjpa", b"dvc ", b"png ", b"tiff", b"gpmd", b"XVID", b"zzzz"] {
            let video = trak(1, b"vide", &visual_entry(name, &avcc(&[])), 0, (o, sample.len() as u32), &[]);
            let err = refused(movie(b"isomisom", &sample, &video), Format::Video);
            assert_eq!(err.reason(), "unsupported", "{}: {err}", fourcc(name));
        }
        let video = trak(1, b"vide", &visual_entry(b"vp09", &bx(b"vpcC", &[1, 0, 0, 0, 0, 0, 0, 0])), 0, (o, 6), &[]);
        let (file, _) = scrubbed(movie(b"isomisom", b"frames", &video), Format::Video);
        assert!(contains(&file, b"frames"), "VP9 passes as it is");
    }

    /// Red team F2: two `avcC` (NAL length sizes 2 and 4); ffmpeg takes the first. Two
    /// configuration boxes of one description, of one type or two, are refused.
    #[test]
    fn a_description_with_two_codec_configurations_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SLICE]);
        let mut short = avcc(&[]);
        short[12] = 0xFD; // lengthSizeMinusOne = 1
        for children in [[short.clone(), avcc(&[])].concat(), [avcc(&[]), bx(b"glbl", b"extradata")].concat()] {
            let video = trak(1, b"vide", &visual_entry(b"avc1", &children), 0, (o, sample.len() as u32), &[]);
            let err = refused(movie(b"isomisom", &sample, &video), Format::Video);
            assert!(err.to_string().contains("readers take different ones"), "{err}");
        }
        let children = [avcc(&[]), bx(b"btrt", &[0; 12]), bx(b"btrt", &[0; 12])].concat();
        let video = trak(1, b"vide", &visual_entry(b"avc1", &children), 0, (o, sample.len() as u32), &[]);
        assert!(
            refused(movie(b"isomisom", &sample, &video), Format::Video).to_string().contains("'btrt' and a 'btrt'")
        );
    }

    /// The table boxes of `trak`, `mdia`, `minf` and `stbl` that pavise walks with one and
    /// a reader with another (red team F3: `co64` then `stco`, 5 bytes apart).
    fn with_box_in(tree: &[u8], parent: &[u8; 4], extra: &[u8], enclosing: &[&[u8; 4]]) -> Vec<u8> {
        let at = contains_at(tree, parent).expect("parent box") - 4;
        let end = at + be32(tree, at).unwrap() as usize;
        with_box_after(tree, end, extra, enclosing)
    }

    #[test]
    fn a_second_copy_of_a_table_a_reader_takes_once_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SLICE]);
        let video = trak(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, (o, sample.len() as u32), &[]);
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        let cases: Vec<(&[u8; 4], Vec<u8>, &str)> = vec![
            (b"stco", full(b"co64", 0, &[&u32s(&[1, 0])[..], &u32s(&[o - 5])].concat()), "both 'stco' and 'co64'"),
            (b"stco", full(b"stco", 0, &u32s(&[1, o - 5])), "two 'stco'"),
            (b"stsz", full(b"stz2", 0, &[0, 0, 0, 8, 0, 0, 0, 1, 9]), "both 'stsz' and 'stz2'"),
            (b"stsc", full(b"stsc", 0, &u32s(&[1, 1, 1, 1])), "two 'stsc'"),
            (b"stts", full(b"stts", 0, &u32s(&[1, 1, 1])), "two 'stts'"),
            (b"mdhd", full(b"hdlr", 0, &[&[0u8; 4][..], b"soun", &[0; 12], b"\0"].concat()), "two 'hdlr'"),
        ];
        for (after, extra, what) in cases {
            let enclosing: &[&[u8; 4]] = if after == b"mdhd" {
                &[b"moov", b"trak", b"mdia"]
            } else {
                &[b"moov", b"trak", b"mdia", b"minf", b"stbl"]
            };
            let file = with_box_in(&movie(b"isomisom", &sample, &video), after, &extra, enclosing);
            let err = refused(file, Format::Video);
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
    }

    /// Red team F6: `mdia/hdlr vide` with `minf/hdlr meta` on a GoPro GPMF track; exiftool
    /// reads it as telemetry. A `minf/hdlr` is a data handler or agrees.
    #[test]
    fn a_track_whose_handlers_disagree_is_refused() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SLICE]);
        let video = trak(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, (o, sample.len() as u32), &[]);
        let minf_hdlr = |h: &[u8; 4]| full(b"hdlr", 0, &[&b"dhlr"[..], h, &[0; 12], b"\0"].concat());
        let enclosing: &[&[u8; 4]] = &[b"moov", b"trak", b"mdia", b"minf"];
        let file = with_box_in(&movie(b"isomisom", &sample, &video), b"vmhd", &minf_hdlr(b"meta"), enclosing);
        let err = refused(file, Format::Video);
        assert!(err.to_string().contains("minf handler says 'meta'"), "{err}");
        let file = with_box_in(&movie(b"isomisom", &sample, &video), b"vmhd", &minf_hdlr(b"alis"), enclosing);
        let (file, _) = scrubbed(file, Format::Video);
        assert!(contains(&file, SLICE), "QuickTime's data handler is what minf/hdlr should be");
    }

    /// A fragmented movie: ftyp, an mdat of the fragment's sample and `junk`, moov
    /// (track 1 declared, no samples of its own; trex), a moof whose one run points at
    /// the sample (explicit base 0, data offset), and `tail` as one more mdat.
    fn fragmented(sample: &[u8], junk: &[u8], truns: &[Vec<u8>], track: u32, tail: &[u8]) -> Vec<u8> {
        let o = FTYP_LEN + 8;
        let video = trak(1, b"vide", &visual_entry(b"avc1", &avcc(&[])), 0, (o, 0), &[]);
        let trex =
            full(b"trex", 0, &[&1u32.to_be_bytes()[..], &1u32.to_be_bytes(), &[0; 4], &[0; 4], &[0; 4]].concat());
        let mut file = movie(b"isomisom", &[sample, junk].concat(), &[video, bx(b"mvex", &trex)].concat());
        let tfhd = [&[0, 0, 0, 1][..], &track.to_be_bytes(), &0u64.to_be_bytes()].concat();
        let traf = bx(b"traf", &[bx(b"tfhd", &tfhd), truns.concat()].concat());
        file.extend(bx(b"moof", &[full(b"mfhd", 0, &[0, 0, 0, 1]), traf].concat()));
        if !tail.is_empty() {
            file.extend(bx(b"mdat", tail));
        }
        file
    }

    /// ffmpeg takes a track's first `trex`: a second one (another default sample size,
    /// so other sample boundaries) is refused.
    #[test]
    fn a_second_trex_for_one_track_is_refused() {
        let sample = nals(&[SLICE]);
        let file = fragmented(&sample, &[], &[trun(None, sample.len() as u32)], 1, &[]);
        let trex = full(
            b"trex",
            0,
            &[&1u32.to_be_bytes()[..], &1u32.to_be_bytes(), &[0; 4], &5u32.to_be_bytes(), &[0; 4]].concat(),
        );
        let err = refused(with_box_in(&file, b"trex", &trex, &[b"moov", b"mvex"]), Format::Video);
        assert!(err.to_string().contains("two 'trex'"), "{err}");
    }

    /// A run of one sample of `len` bytes at absolute offset `off` (data offset, sizes).
    fn trun(off: Option<u32>, len: u32) -> Vec<u8> {
        match off {
            Some(off) => bx(
                b"trun",
                &[&[0, 0, 0x02, 0x01][..], &1u32.to_be_bytes(), &off.to_be_bytes(), &len.to_be_bytes()].concat(),
            ),
            None => bx(b"trun", &[&[0, 0, 0x02, 0x00][..], &1u32.to_be_bytes(), &len.to_be_bytes()].concat()),
        }
    }

    /// The red team's N2: bytes of a fragmented file's mdat that no run points at are
    /// zeroed as in a plain file, and the fragments' samples are walked for SEI.
    #[test]
    fn fragmented_files_are_mapped_by_their_runs_and_their_samples_walked() {
        let o = FTYP_LEN + 8;
        let sample = nals(&[SEI_GPS, SLICE]);
        let len = sample.len() as u32;
        let file = fragmented(&sample, b"freeGPS between", &[trun(Some(o), len)], 1, b"freeGPS in a tail mdat");
        let (file, report) = scrubbed(file, Format::Video);
        assert!(!contains(&file, b"freeGPS") && !contains(&file, b"48.8584"), "{report:#?}");
        assert!(contains(&file, SLICE), "{report:#?}");
        assert!(!report.kept.iter().any(|k| k.contains("not checked")), "{report:?}");

        // Readers disagree where a second run without a data offset starts.
        let runs = [trun(Some(o), 6), trun(None, len - 6)];
        let err = refused(fragmented(&sample, b"", &runs, 1, b""), Format::Video);
        assert!(err.to_string().contains("second run without a data offset"), "{err}");
        let err = refused(fragmented(&sample, b"", &[trun(Some(o), len)], 7, b""), Format::Video);
        assert!(err.to_string().contains("does not declare"), "{err}");
        // A trex names track 2, but no trak: ffmpeg skips its fragments, so its bytes would stay unread.
        let mut file = fragmented(&sample, b"", &[trun(Some(o), len)], 2, b"");
        let at = contains_at(&file, b"trex").unwrap() + 8;
        file[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
        let err = refused(file, Format::Video);
        assert!(err.to_string().contains("does not declare"), "{err}");
        let err = refused(fragmented(&sample, b"", &[trun(Some(o), len + 4096)], 1, b""), Format::Video);
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    /// The red team's N4: `mfra` keeps only `tfra` and `mfro`; bytes after the fields of
    /// `sidx` (and of each of them) are zeroed.
    #[test]
    fn index_boxes_are_walked() {
        let video = trak(1, b"vide", &visual_entry(b"mp4v", &[]), 0, (FTYP_LEN + 8, 6), &[]);
        let mut file = movie(b"isomisom", b"frames", &video);
        let refs = [&[0, 0, 0, 1][..], &[0, 0, 0x03, 0xE8], &[0; 8], &[0, 0, 0, 1], &[0; 12]].concat();
        file.extend(full(b"sidx", 0, &[refs, udta()].concat()));
        let tfra = full(b"tfra", 0, &[&[0, 0, 0, 1][..], &[0; 4], &[0, 0, 0, 1], &[0; 8], &[1, 1, 1]].concat());
        file.extend(bx(b"mfra", &[tfra, udta(), full(b"mfro", 0, &[0, 0, 0, 16])].concat()));
        let (out, report) = scrubbed(file, Format::Video);
        assert!(!contains(&out, b"+48.8584") && !contains(&out, b"PaviseCam"), "{report:#?}");
        assert!(contains(&out, b"tfra") && contains(&out, b"mfro") && contains(&out, b"sidx"));
    }

    /// A real x264 file (a 0.5 s 64x48 clip made with ffmpeg), plain and fragmented,
    /// with x264's own user-data SEI overwritten by a dashcam `freeGPS` block as the red
    /// team did: the block and the encoder string go, every other byte stays.
    #[test]
    fn a_real_h264_file_loses_its_user_data_sei() {
        for input in
            [&include_bytes!("testdata/h264-x264-sei.mp4")[..], include_bytes!("testdata/h264-x264-sei-fragmented.mp4")]
        {
            let mut file = input.to_vec();
            let at = contains_at(&file, b"x264 - core").unwrap();
            let gps = b"\0\x01\x01\0freeGPS 48.8584N 2.2945E ";
            file[at..at + gps.len()].copy_from_slice(gps);
            let (out, report) = scrubbed(file.clone(), Format::Video);
            assert!(!contains(&out, b"freeGPS") && !contains(&out, b"x264"), "{report:#?}");
            let changed: usize = out.iter().zip(&file).filter(|(a, b)| a != b).count();
            let sei = report.removed.iter().find(|r| r.what.contains("H.264 SEI")).expect("the SEI is reported");
            assert!(changed as u64 <= sei.bytes + 200, "only the SEI and header fields change: {changed}, {report:#?}");
        }
    }

    /// A camera maker's own brand names the maker; it becomes the file's major brand.
    #[test]
    fn brands_of_no_specification_are_replaced() {
        let mut file = movie(b"qt  niko", b"frames", &[]);
        let (out, report) = scrubbed(std::mem::take(&mut file), Format::Video);
        assert!(!contains(&out, b"niko"), "{report:?}");
        assert_eq!(&out[8..20], b"qt  \0\0\x02\0qt  ");
    }

    /// A HEIF image: one `hvc1` item named `name` at `pixels` in `mdat`, with the
    /// properties `props` associated as `assoc` (ipma bytes: essential bit and index).
    fn heif(name: &[u8], iref: &[u8], props: &[u8], assoc: &[u8], pixels: &[u8]) -> Vec<u8> {
        let ftyp = bx(b"ftyp", b"heic\0\0\0\0mif1heic");
        let build = |at: u32| {
            let hdlr = full(b"hdlr", 0, &[&[0u8; 4][..], b"pict", &[0; 12], b"\0"].concat());
            let infe = full(b"infe", 2, &[&[0, 1, 0, 0][..], b"hvc1", name, b"\0"].concat());
            let iinf = full(b"iinf", 0, &[&[0, 1][..], &infe, &udta()].concat());
            let ipma = full(b"ipma", 0, &[&[0, 0, 0, 1, 0, 1, assoc.len() as u8][..], assoc].concat());
            let iprp = bx(b"iprp", &[bx(b"ipco", props), ipma].concat());
            let extent = [at.to_be_bytes(), (pixels.len() as u32).to_be_bytes()].concat();
            let iloc = full(b"iloc", 0, &[&[0x44, 0x00, 0, 1, 0, 1, 0, 0, 0, 1][..], &extent].concat());
            let pitm = full(b"pitm", 0, &[0, 1]);
            full(b"meta", 0, &[hdlr, pitm, iinf, full(b"iref", 0, iref), iprp, iloc].concat())
        };
        let at = (ftyp.len() + build(0).len() + 8) as u32;
        [ftyp, build(at), bx(b"mdat", &[pixels, b"+48.8584 after the image"].concat())].concat()
    }

    /// HEIF boxes ffmpeg reads with its one table (`iref`'s children, every property of
    /// the primary item) keep only what they need; an essential property pavise does not
    /// know is a refusal; item names go; SEI in the image's HEVC data and in its `hvcC`
    /// becomes filler.
    /// Red team F5: a JPEG item (a preview or thumbnail) keeps its own Exif; pavise does
    /// not walk JPEG in place, so such a file is refused, as are JPEG 2000 and VVC items.
    #[test]
    fn heif_items_in_codecs_pavise_does_not_walk_are_refused() {
        let exif_jpeg = b"\xFF\xD8\xFF\xE1\x00\x10Exif\0\0GPS+48.8\xFF\xD9";
        for kind in [b"jpeg", b"j2k1", b"vvc1"] {
            let mut file = heif(b"thumb", &[], &[], &[], exif_jpeg);
            let at = contains_at(&file, b"hvc1").unwrap();
            file[at..at + 4].copy_from_slice(kind);
            let err = refused(file, Format::Heif);
            assert_eq!(err.reason(), "unsupported", "{}: {err}", fourcc(kind));
        }
    }

    #[test]
    fn heif_item_boxes_keep_only_what_a_viewer_needs() {
        // An hvcC with a VPS and a prefix SEI array (the SEI holds a location).
        let mut hvcc = vec![1u8; 23];
        hvcc[21] = 0x0F;
        hvcc[22] = 2;
        hvcc.extend_from_slice(&[0xA0, 0, 1, 0, 13, 0x40, 0x01]);
        hvcc.extend_from_slice(b"HEVC-config");
        hvcc.extend_from_slice(&[0x27, 0, 1, 0, 13, 0x4E, 0x01, 0x05, 9]);
        hvcc.extend_from_slice(b"+48.8584\x80");
        let props = [bx(b"hvcC", &hvcc), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48]), udta()].concat();
        let iref = [bx(b"dimg", &[0, 1, 0, 1, 0, 1]), udta()].concat();
        // The image's own HEVC data carries a prefix SEI with a time: it becomes filler.
        let pixels = nals(&[b"\x4E\x01\x05\x0B2024-06-04Z\x80", b"\x26\x01pixels"]);
        let file = heif(b"IMG_20240604_Paris", &iref, &props, &[0x81, 0x02, 0x03], &pixels);
        let (out, report) = scrubbed(file, Format::Heif);
        for gone in [&b"+48.8584"[..], b"PaviseCam", b"Paris", b"2024-06-04"] {
            assert!(!contains(&out, gone), "{:?} survived: {report:#?}", String::from_utf8_lossy(gone));
        }
        for kept in [&b"HEVC-config"[..], b"ispe", b"dimg", b"pixels", b"hvc1"] {
            assert!(contains(&out, kept), "{:?} is gone: {report:#?}", String::from_utf8_lossy(kept));
        }
        let unknown = [&props[..], &bx(b"xyzw", b"vendor")].concat();
        let err = refused(heif(b"", &[], &unknown, &[0x81, 0x84], &nals(&[b"\x26\x01pixels"])), Format::Heif);
        assert!(err.to_string().contains("needs item property 'xyzw'"), "{err}");
        let (out, _) = scrubbed(heif(b"", &[], &unknown, &[0x81, 0x04], &nals(&[b"\x26\x01pixels"])), Format::Heif);
        assert!(!contains(&out, b"vendor"), "a property no item needs is freed");
    }

    /// The pixels of the one-item HEIF files of [`heif`].
    fn heif_pixels() -> Vec<u8> {
        nals(&[b"\x26\x01pixels"])
    }

    /// Red team pass 6, H1: an `auxC`'s type is exiftool's `AuxiliaryImageType`, kept
    /// whole whether or not an item used it. The class: a property of no item goes,
    /// whatever it is; an `auxC` keeps a type the standards or Apple define and never
    /// its subtype bytes; any other type is blanked and the box stays, because libheif
    /// refuses a file whose auxiliary image has no `auxC`.
    #[test]
    fn an_auxc_keeps_only_a_known_type_and_a_property_of_no_item_goes() {
        let auxc = |text: &[u8]| full(b"auxC", 0, text);
        let base = [bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48])].concat();
        // The red team's craft: an auxC no ipma entry names, and an unlinked clli and hvcC too.
        let unlinked = [
            &base[..],
            &auxc(b"LEAKMARK GPS 48.8584N 2.2945E\0"),
            &bx(b"clli", b"LEAKMARK-clli"),
            &bx(b"hvcC", &[&hvcc(4)[..], b"LEAKMARK-hvcC"].concat()),
        ]
        .concat();
        let (out, report) = scrubbed(heif(b"", &[], &unlinked, &[0x81, 0x02], &heif_pixels()), Format::Heif);
        assert!(!contains(&out, b"LEAKMARK"), "{report:#?}");
        assert!(!contains(&out, b"auxC") && contains(&out, b"ispe") && contains(&out, b"pixels"), "{report:#?}");

        // Associated: an unknown type is blanked whole and the box stays an auxC.
        let marked = [&base[..], &auxc(b"LEAKMARK GPS 48.8584N\0sub")].concat();
        let (out, report) = scrubbed(heif(b"", &[], &marked, &[0x81, 0x02, 0x03], &heif_pixels()), Format::Heif);
        assert!(!contains(&out, b"LEAKMARK") && !contains(&out, b"sub"), "{report:#?}");
        assert!(contains(&out, b"auxC"), "the property stays where ipma points: {report:#?}");
        // A type with no NUL (libheif reads up to the last byte) is blanked too.
        let open_ended = [&base[..], &auxc(b"urn:mpeg:hevc:2015:auxid:1LEAKMARK")].concat();
        let (out, _) = scrubbed(heif(b"", &[], &open_ended, &[0x81, 0x02, 0x03], &heif_pixels()), Format::Heif);
        assert!(!contains(&out, b"LEAKMARK") && !contains(&out, b"urn:mpeg"));

        // iPhone's gain map and the standard alpha keep their type; their subtypes go.
        for urn in [&b"urn:com:apple:photo:2020:aux:hdrgainmap"[..], b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha"] {
            let known = [&base[..], &auxc(&[urn, b"\0LEAKMARK-subtype"].concat())].concat();
            let (out, report) = scrubbed(heif(b"", &[], &known, &[0x81, 0x02, 0x03], &heif_pixels()), Format::Heif);
            assert!(contains(&out, &[urn, b"\0"].concat()), "{report:#?}");
            assert!(!contains(&out, b"LEAKMARK"), "{report:#?}");
        }
    }

    /// The rest of H1's class: every property pavise keeps loses what follows its fields
    /// (a colour box of a type no reader knows goes whole), `irot`/`imir` lose
    /// their reserved bits, and a `cmpd` component named by a URI is refused.
    #[test]
    fn kept_item_properties_keep_only_their_fields() {
        let marker = b"LEAKMARK GPS 48.8584N";
        let with = |fields: &[u8]| [fields, &marker[..]].concat();
        let props = [
            bx(b"hvcC", &hvcc(4)),
            full(b"ispe", 0, &with(&[0, 0, 0, 64, 0, 0, 0, 48])),
            bx(b"clli", &with(&[0, 1, 0, 2])),
            bx(b"mdcv", &with(&[7; 24])),
            bx(b"clap", &with(&[1; 32])),
            full(b"rloc", 0, &with(&[0; 8])),
            bx(b"lsel", &with(&[0, 1])),
            bx(b"a1lx", &with(&[0; 7])),
            bx(b"colr", &with(b"nclx\0\x01\0\x0d\0\x06\x80")),
            bx(b"colr", &with(b"LEAK")),
            bx(b"irot", &[0xFC | 3]),
            bx(b"imir", &[0xFE | 1]),
            full(b"uncC", 1, &with(b"rgb3")),
            bx(b"cmpd", &with(&[0, 0, 0, 1, 0, 4])),
        ]
        .concat();
        let assoc: Vec<u8> = (1..=14).map(|i| if i == 1 { 0x81 } else { i }).collect();
        let (out, report) = scrubbed(heif(b"", &[], &props, &assoc, &heif_pixels()), Format::Heif);
        assert!(!contains(&out, b"LEAKMARK"), "{report:#?}");
        assert!(contains(&out, b"nclx\0\x01\0\x0d\0\x06\x80") && contains(&out, b"rgb3"), "{report:#?}");
        assert!(contains(&out, b"irot\x03") && contains(&out, b"imir\x01"), "the angle and axis stay: {report:#?}");

        // Red team pass 25, F7: code points H.273 does not register, and the reserved bits.
        let props = [bx(b"hvcC", &hvcc(4)), bx(b"colr", b"nclxPLANTE\xd5")].concat();
        let (out, report) = scrubbed(heif(b"", &[], &props, &[0x81, 0x02], &heif_pixels()), Format::Heif);
        assert!(contains(&out, b"nclx\0\x02\0\x02\0\x02\x80"), "written as unspecified: {report:#?}");
        // Pass 26: cut short, the code points go with their box.
        let props = [bx(b"hvcC", &hvcc(4)), bx(b"colr", b"nclxPLANTE")].concat();
        let (out, report) = scrubbed(heif(b"", &[], &props, &[0x81, 0x02], &heif_pixels()), Format::Heif);
        assert!(!contains(&out, b"PLANTE"), "{report:#?}");

        let named =
            [bx(b"hvcC", &hvcc(4)), bx(b"cmpd", &[&[0, 0, 0, 1, 0x80, 0][..], b"urn:x:GPS 48.8584N\0"].concat())];
        let err = refused(heif(b"", &[], &named.concat(), &[0x81, 0x02], &heif_pixels()), Format::Heif);
        assert!(err.to_string().contains("'cmpd' component named by a URI"), "{err}");
    }

    /// Red team pass 7, H3: `ndwt`, `reve`, `oinf`, `cmpC`, `icef`, `cpal`, `splz`, `sbpm`
    /// and `snuc` were on the kept list with no layout, so each was kept whole, any length
    /// (exiftool `-U` printed all nine). No property is kept without being read: those
    /// libheif reads keep their fields (and `icef` loses its reserved bits), the rest are
    /// freed, or refused when an image marks one essential, and so is a kept type of a
    /// version or value libheif refuses.
    #[test]
    fn item_properties_pavise_cannot_read_are_not_kept() {
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro";
        let with = |fields: &[u8]| [fields, &marker[..]].concat();
        let unread = [b"reve", b"oinf", b"cpal", b"splz", b"sbpm", b"snuc"];
        let mut props = vec![
            bx(b"hvcC", &hvcc(4)),
            full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48]),
            full(b"ndwt", 0, &with(&[0, 0, 0, 203])),
            full(b"cmpC", 0, &with(b"zlib\x01")),
            // 16-bit offsets and 8-bit sizes (0x20), two reserved bits set, two units.
            full(b"icef", 0, &with(&[0x23, 0, 0, 0, 2, 0, 0, 9, 0, 9, 9])),
        ];
        props.extend(unread.iter().map(|kind| full(kind, 0, marker)));
        let assoc: Vec<u8> = (1..=props.len() as u8).map(|i| if i == 1 { 0x81 } else { i }).collect();
        let (out, report) = scrubbed(heif(b"", &[], &props.concat(), &assoc, &heif_pixels()), Format::Heif);
        assert!(!contains(&out, b"LEAKMARK"), "{report:#?}");
        assert!(contains(&out, b"ndwt\0\0\0\0\0\0\0\xCB") && contains(&out, b"cmpC\0\0\0\0zlib\x01"), "{report:#?}");
        assert!(contains(&out, b"icef\0\0\0\0\x20\0\0\0\x02\0\0\x09\0\x09\x09"), "{report:#?}");
        for kind in unread {
            assert!(!contains(&out, kind), "{} kept: {report:#?}", fourcc(kind));
        }
        assert!(contains(&out, b"pixels"), "the image stays");

        // A kept type pavise cannot read: of a version libheif refuses, or a compression it does not know.
        let odd =
            [(b"ndwt", full(b"ndwt", 1, &with(&[0, 0, 0, 203]))), (b"cmpC", full(b"cmpC", 0, &with(b"LEAK\x01")))];
        for (kind, odd) in odd {
            let props = [bx(b"hvcC", &hvcc(4)), odd].concat();
            let (out, report) = scrubbed(heif(b"", &[], &props, &[0x81, 0x02], &heif_pixels()), Format::Heif);
            assert!(!contains(&out, b"LEAKMARK") && !contains(&out, kind), "{report:#?}");
            let err = refused(heif(b"", &[], &props, &[0x81, 0x82], &heif_pixels()), Format::Heif);
            assert!(err.to_string().contains(&format!("needs item property '{}'", fourcc(kind))), "{err}");
        }
        let props = [bx(b"hvcC", &hvcc(4)), full(b"sbpm", 0, marker)].concat();
        let err = refused(heif(b"", &[], &props, &[0x81, 0x82], &heif_pixels()), Format::Heif);
        assert!(err.to_string().contains("needs item property 'sbpm'"), "{err}");
    }

    /// Red team pass 7, H2: an `ipma` entry for an item that does not exist (19531) or for
    /// the Exif item pavise hides kept its `pixi`, 255 bytes exiftool prints as numbers,
    /// and so did a second `pixi` of the image. A property counts only for an image item
    /// pavise keeps, and only the first of its type (libheif's); two rotations, mirrors,
    /// crops or colour boxes of one kind, which readers apply differently, are refused.
    #[test]
    fn only_the_first_property_of_each_type_of_a_kept_image_counts() {
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro";
        let pixi = full(b"pixi", 0, &[&[marker.len() as u8][..], marker].concat());
        let with_props = |extra: Vec<Vec<u8>>, entries: Vec<(u16, Vec<u8>)>| {
            heif_with_exif(move |kids, _| {
                let mut props = vec![bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48])];
                props.extend(extra.iter().cloned());
                let entries: Vec<(u16, &[u8])> = entries.iter().map(|(id, a)| (*id, &a[..])).collect();
                kids[3] = bx(b"iprp", &[bx(b"ipco", &props.concat()), heif_ipma(0, &entries)].concat());
            })
        };
        for ghost in [19531, 2] {
            let file = with_props(vec![pixi.clone()], vec![(1, vec![0x81, 0x02]), (ghost, vec![0x83])]);
            let (out, report) = scrubbed(file, Format::Heif);
            assert!(!contains(&out, b"LEAKMARK") && !contains(&out, b"pixi"), "item {ghost}: {report:#?}");
            assert!(contains(&out, b"ispe") && contains(&out, b"pixels"), "{report:#?}");
        }
        let own = full(b"pixi", 0, &[3, 8, 8, 8]);
        let file = with_props(vec![own.clone(), pixi.clone()], vec![(1, vec![0x81, 0x02, 0x03, 0x04])]);
        let (out, report) = scrubbed(file, Format::Heif);
        assert!(!contains(&out, b"LEAKMARK") && contains(&out, &own), "the first pixi stays: {report:#?}");

        for kind in [b"irot", b"imir", b"clap"] {
            let twice = vec![bx(kind, &[0; 32]), bx(kind, &[1; 32])];
            let err = refused(with_props(twice, vec![(1, vec![0x81, 0x02, 0x03, 0x04])]), Format::Heif);
            assert!(err.to_string().contains(&format!("two '{}' properties", fourcc(kind))), "{err}");
        }
        let nclx = bx(b"colr", b"nclx\0\x01\0\x0d\0\x06\x80");
        let twice = vec![nclx.clone(), bx(b"colr", b"nclx\0\x09\0\x10\0\x09\x80")];
        let err = refused(with_props(twice, vec![(1, vec![0x81, 0x02, 0x03, 0x04])]), Format::Heif);
        assert!(err.to_string().contains("two 'colr' properties"), "{err}");
        // Code points and an ICC profile are two kinds; a camera writes both.
        let icc = bx(b"colr", &[&b"prof"[..], &crate::privacy::media::icc::sample_profile()].concat());
        let both = with_props(vec![nclx.clone(), icc], vec![(1, vec![0x81, 0x02, 0x03, 0x04])]);
        let (out, report) = scrubbed(both, Format::Heif);
        assert!(contains(&out, &nclx) && contains(&out, b"acsp"), "{report:#?}");
    }

    /// Red team pass 8, H2b: an extra `mski` item (libheif ignores the type) with no data
    /// kept a marker `pixi` linked to it, one per such item. Only items a reader reaches
    /// from the primary (`dimg` of a grid, `thmb`/`auxl` of a reached image) keep their
    /// properties; any other item is freed like the Exif item, or the file refused when
    /// its data is also the shown image's.
    /// A HEIF file whose item 3, of type `kind`, has a marker `pixi`, the `iref` children
    /// `iref` and, given an offset and length into the media data, an extent.
    fn heif_with_extra_item(kind: &'static [u8; 4], iref: Option<Vec<u8>>, extent: Option<(u32, u32)>) -> Vec<u8> {
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro";
        let pixi = full(b"pixi", 0, &[&[marker.len() as u8][..], marker].concat());
        heif_with_exif(move |kids, at| {
            kids[2] = heif_iinf(&[infe(1, b"hvc1"), infe(2, b"Exif"), infe(3, kind)]);
            let props = [bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48]), pixi.clone()];
            let ipma = heif_ipma(0, &[(1, &[0x81, 0x02]), (3, &[0x81, 0x83])]);
            kids[3] = bx(b"iprp", &[bx(b"ipco", &props.concat()), ipma].concat());
            if let Some((off, len)) = extent {
                let pixels = nals(&[b"\x26\x01pixels"]).len() as u32;
                let exif = HEIF_EXIF.len() as u32;
                kids[4] = heif_iloc(&[(1, at, pixels), (2, at + pixels, exif), (3, at + off, len)]);
            }
            if let Some(iref) = &iref {
                kids.push(full(b"iref", 0, iref));
            }
        })
    }

    #[test]
    fn only_images_a_reader_reaches_keep_their_properties() {
        let extra = heif_with_extra_item;
        for kind in [b"mski", b"tmap", b"hvt1", b"lhv1", b"unci", b"avc1", b"hvc1"] {
            let (out, report) = scrubbed(extra(kind, None, None), Format::Heif);
            assert!(!contains(&out, b"LEAKMARK") && !contains(&out, b"pixi"), "{}: {report:#?}", fourcc(kind));
            assert!(!contains(&out, kind) || kind == b"hvc1", "its type is renamed: {report:#?}");
            assert!(contains(&out, b"ispe") && contains(&out, b"pixels"), "{report:#?}");
        }
        // A thumbnail of the primary is shown (exiftool, Finder); so are its properties,
        // its `pixi` rewritten to what its `hvcC` says (8-bit 4:2:0).
        let thumbnail = extra(b"hvc1", Some(bx(b"thmb", &[0, 3, 0, 1, 0, 1])), None);
        let (out, report) = scrubbed(thumbnail, Format::Heif);
        assert!(contains(&out, b"pixi\0\0\0\0\x03\x08\x08\x08\0") && !contains(&out, b"LEAKMARK"), "{report:#?}");
        // A thumbnail of an unreached item is not.
        let orphan = extra(b"hvc1", Some(bx(b"thmb", &[0, 3, 0, 1, 0, 2])), None);
        let (out, report) = scrubbed(orphan, Format::Heif);
        assert!(!contains(&out, b"pixi"), "{report:#?}");
        // An unreached item's own data is zeroed; one whose data is the shown image's is refused.
        let pixels = nals(&[b"\x26\x01pixels"]).len() as u32;
        let (out, report) = scrubbed(extra(b"mski", None, Some((pixels, HEIF_EXIF.len() as u32))), Format::Heif);
        assert!(!contains(&out, b"LEAKMARK") && contains(&out, b"pixels"), "{report:#?}");
        let err = refused(extra(b"mski", None, Some((0, pixels))), Format::Heif);
        assert!(err.to_string().contains("shares its data with an image that is shown"), "{err}");
        // No primary item: nothing a reader shows.
        let err = refused(heif_with_exif(|kids, _| drop(kids.remove(1))), Format::Heif);
        assert!(err.to_string().contains("no primary item"), "{err}");
    }

    /// Red team pass 9, H2c: a `thmb` or `auxl` of the primary made an item of any image
    /// type reachable, so an `mski` (or `tmap`, `unci`, ...) "thumbnail" with no data kept
    /// its marker `pixi`; libheif makes no image of those types and shows none of them.
    /// Only the types a reader decodes are reached through a reference.
    #[test]
    fn a_reference_reaches_only_images_a_reader_decodes() {
        let pixels = nals(&[b"\x26\x01pixels"]).len() as u32;
        let exif = HEIF_EXIF.len() as u32;
        for reference in [b"thmb", b"auxl"] {
            let to_primary = || Some(bx(reference, &[0, 3, 0, 1, 0, 1]));
            for kind in [b"mski", b"tmap", b"unci", b"hvt1", b"lhv1", b"avc1", b"jpeg", b"vvc1"] {
                let what = format!("{} {}", fourcc(reference), fourcc(kind));
                let (out, report) = scrubbed(heif_with_extra_item(kind, to_primary(), None), Format::Heif);
                assert!(!contains(&out, b"LEAKMARK") && !contains(&out, b"pixi"), "{what}: {report:#?}");
                assert!(contains(&out, b"ispe") && contains(&out, b"pixels"), "{what}: {report:#?}");
                // Its data is unreached: zeroed, or the file refused when it is the shown image's.
                let (out, report) =
                    scrubbed(heif_with_extra_item(kind, to_primary(), Some((pixels, exif))), Format::Heif);
                assert!(!contains(&out, b"LEAKMARK") && contains(&out, b"pixels"), "{what}: {report:#?}");
                let err = refused(heif_with_extra_item(kind, to_primary(), Some((0, pixels))), Format::Heif);
                assert!(err.to_string().contains("shares its data with an image that is shown"), "{what}: {err}");
            }
            for kind in [b"hvc1", b"hev1", b"av01"] {
                let (out, report) = scrubbed(heif_with_extra_item(kind, to_primary(), None), Format::Heif);
                assert!(contains(&out, b"pixi"), "{} {}: {report:#?}", fourcc(reference), fourcc(kind));
            }
        }
    }

    /// Red team pass 9, H2d: libheif follows the first `dimg`/`thmb`/`auxl` box from an
    /// item, pavise followed every one (and exiftool prints every item): a second box of
    /// one type from one item is refused, naming it.
    #[test]
    fn two_references_of_one_type_from_one_item_are_refused() {
        for reference in [b"thmb", b"auxl", b"dimg"] {
            let twice = [bx(reference, &[0, 3, 0, 1, 0, 1]), bx(reference, &[0, 3, 0, 1, 0, 1])].concat();
            let err = refused(heif_with_extra_item(b"hvc1", Some(twice), None), Format::Heif);
            let what = format!("two '{}' references from item 3", fourcc(reference));
            assert!(err.to_string().contains(&what), "{what}: {err}");
        }
        // Two types from one item, or one type from two items, are what phones write.
        let (thmb, auxl) = (bx(b"thmb", &[0, 3, 0, 1, 0, 1]), bx(b"auxl", &[0, 3, 0, 1, 0, 1]));
        let (out, report) = scrubbed(heif_with_extra_item(b"hvc1", Some([thmb, auxl].concat()), None), Format::Heif);
        assert!(contains(&out, b"pixi"), "{report:#?}");
    }

    /// Red team pass 9, H2e: a `pixi` of 255 sender-chosen "channels" on the primary (or on
    /// each thumbnail) was kept whole. A `pixi` now says what the codec configuration
    /// says: rewritten in place, or refused when too short for the image's channels.
    #[test]
    fn a_pixi_says_what_the_codec_configuration_says() {
        let marker = b"LEAKMARK GPS 48.8584N 2.2945E Pixel8Pro";
        let with_pixi = |config: Vec<u8>, pixi: Vec<u8>| {
            heif_with_exif(move |kids, _| {
                let props =
                    [bx(b"hvcC", &config), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48]), full(b"pixi", 0, &pixi)];
                kids[3] =
                    bx(b"iprp", &[bx(b"ipco", &props.concat()), heif_ipma(0, &[(1, &[0x81, 0x02, 0x03])])].concat());
            })
        };
        let long = [&[marker.len() as u8][..], marker].concat();
        for (pixi, want) in [
            (long.clone(), &b"pixi\0\0\0\0\x03\x08\x08\x08\0"[..]),
            (vec![3, 10, 10, 10], b"pixi\0\0\0\0\x03\x08\x08\x08"),
        ] {
            let (out, report) = scrubbed(with_pixi(hvcc(4), pixi), Format::Heif);
            assert!(contains(&out, want) && !contains(&out, b"LEAKMARK"), "{report:#?}");
            assert!(contains(&out, b"pixels"), "the image stays");
        }
        // The same 8 8 8 on a colour image is left as it is.
        let (out, report) = scrubbed(with_pixi(hvcc(4), vec![3, 8, 8, 8]), Format::Heif);
        let untouched = !report.removed.iter().any(|r| r.what.contains("pixi"));
        assert!(contains(&out, b"pixi\0\0\0\0\x03\x08\x08\x08") && untouched, "{report:#?}");
        // A monochrome image has one channel.
        let mut mono = hvcc(4);
        mono[16] = 0xFC;
        let (out, report) = scrubbed(with_pixi(mono, vec![3, 8, 8, 8]), Format::Heif);
        assert!(contains(&out, b"pixi\0\0\0\0\x01\x08\0\0"), "{report:#?}");
        let err = refused(with_pixi(hvcc(4), vec![1, 8]), Format::Heif);
        assert!(err.to_string().contains("a 'pixi' too short for its 3 channels"), "{err}");
        // av1C: the high-bit-depth and twelve-bit flags (12 bits in the professional
        // profile only), and monochrome.
        assert_eq!(codec_depths(b"av1C", &[0x81, 0x00, 0x0C, 0]), Some(vec![8, 8, 8]));
        assert_eq!(codec_depths(b"av1C", &[0x81, 0x00, 0x6C, 0]), Some(vec![10, 10, 10]));
        assert_eq!(codec_depths(b"av1C", &[0x81, 0x40, 0x6C, 0]), Some(vec![12, 12, 12]));
        assert_eq!(codec_depths(b"av1C", &[0x81, 0x00, 0x1C, 0]), Some(vec![8]));
    }

    /// A HEIF file with items 1 (the HEVC image) and 2 (Exif) and `extra` items: each an
    /// HEVC image with item 1's `hvcC`, `ispe` and `pixi` of 8 8 8 (a derived one without
    /// the `hvcC`), the `iref` children `iref`, the primary `primary`, and, given an item
    /// and its data, that item's data in `idat`.
    fn heif_graph(extra: &[(u16, &[u8; 4])], iref: &[u8], primary: u16, idat: Option<(u16, &[u8])>) -> Vec<u8> {
        heif_with_exif(|kids, at| {
            let mut entries = vec![infe(1, b"hvc1"), infe(2, b"Exif")];
            entries.extend(extra.iter().map(|(id, kind)| infe(*id, kind)));
            kids[2] = heif_iinf(&entries);
            kids[1] = full(b"pitm", 0, &primary.to_be_bytes());
            let pixi = full(b"pixi", 0, &[3, 8, 8, 8]);
            let props = [bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48]), pixi].concat();
            let mut assoc: Vec<(u16, &[u8])> = vec![(1, &[0x81, 0x02, 0x03])];
            for (id, kind) in extra {
                assoc.push((*id, if DERIVED.contains(kind) { &[0x02, 0x03] } else { &[0x81, 0x02, 0x03] }));
            }
            kids[3] = bx(b"iprp", &[bx(b"ipco", &props), heif_ipma(0, &assoc)].concat());
            if let Some((id, data)) = idat {
                let pixels = heif_pixels().len() as u32;
                let entry = |id: u16, method: u8, off: u32, len: u32| {
                    [&id.to_be_bytes()[..], &[0, method, 0, 0, 0, 1], &off.to_be_bytes(), &len.to_be_bytes()].concat()
                };
                let entries = [entry(1, 0, at, pixels), entry(id, 1, 0, data.len() as u32)].concat();
                kids[4] = full(b"iloc", 1, &[&[0x44, 0x00, 0, 2][..], &entries].concat());
                kids.push(bx(b"idat", data));
            }
            kids.push(full(b"iref", 0, iref));
        })
    }

    /// Red team pass 9, H2e: thirty thumbnails of the primary kept thirty sets of
    /// properties. Phones write one thumbnail and a few auxiliary images; past
    /// [`MAX_THUMBNAILS`] or [`MAX_AUXILIARY`] the file is refused, naming the cap.
    #[test]
    fn thumbnails_and_auxiliary_images_are_capped() {
        for (reference, cap, what) in
            [(b"thmb", MAX_THUMBNAILS, "thumbnails"), (b"auxl", MAX_AUXILIARY, "auxiliary images")]
        {
            let file = |n: u16| {
                let extra: Vec<(u16, &[u8; 4])> = (3..3 + n).map(|id| (id, b"hvc1")).collect();
                let iref: Vec<u8> =
                    (3..3 + n).flat_map(|id| bx(reference, &[&id.to_be_bytes()[..], &[0, 1, 0, 1]].concat())).collect();
                heif_graph(&extra, &iref, 1, None)
            };
            let (out, report) = scrubbed(file(cap as u16), Format::Heif);
            assert!(contains(&out, b"pixels") && contains(&out, reference), "{report:#?}");
            let err = refused(file(cap as u16 + 1), Format::Heif);
            let want = format!("{} {what}; pavise keeps at most {cap}", cap + 1);
            assert!(err.to_string().contains(&want), "{want}: {err}");
        }
    }

    /// Red team pass 9, H2f: shapes libheif refuses (it then shows nothing) were forwarded
    /// with the properties of every item: a `thmb`/`auxl` naming two masters, a thumbnail
    /// of a thumbnail or of itself, an `iden` of two inputs, a grid whose `dimg` lists
    /// more tiles than its rows and columns hold. Each is refused, naming the shape.
    #[test]
    fn reference_shapes_libheif_refuses_are_refused() {
        let refs = |list: &[(&[u8; 4], &[u16])]| -> Vec<u8> {
            list.iter()
                .flat_map(|(kind, ids)| {
                    let body: Vec<u8> = ids
                        .iter()
                        .enumerate()
                        .flat_map(|(i, id)| {
                            let id = id.to_be_bytes();
                            if i == 0 {
                                [&id[..], &((ids.len() - 1) as u16).to_be_bytes()].concat()
                            } else {
                                id.to_vec()
                            }
                        })
                        .collect();
                    bx(kind, &body)
                })
                .collect()
        };
        let hevc: &[(u16, &[u8; 4])] = &[(3, b"hvc1"), (4, b"hvc1")];
        type References<'a> = &'a [(&'a [u8; 4], &'a [u16])];
        let shapes: [(References<'_>, &str); 5] = [
            (&[(b"thmb", &[3, 1, 4])], "a 'thmb' reference from item 3 names 2 images, not one"),
            (&[(b"auxl", &[3, 1, 4])], "a 'auxl' reference from item 3 names 2 images, not one"),
            (&[(b"thmb", &[3, 1]), (b"thmb", &[4, 3])], "item 4 is a thumbnail of a thumbnail"),
            (&[(b"thmb", &[3, 3])], "a 'thmb' reference from item 3 to itself"),
            (&[(b"auxl", &[3, 1]), (b"thmb", &[4, 1])], ""),
        ];
        for (list, want) in shapes {
            let file = heif_graph(hevc, &refs(list), 1, None);
            if want.is_empty() {
                scrubbed(file, Format::Heif);
            } else {
                let err = refused(file, Format::Heif);
                assert!(err.to_string().contains(want), "{want}: {err}");
            }
        }
        // An identity image (the primary, item 5) of exactly one input.
        let iden: &[(u16, &[u8; 4])] = &[(3, b"hvc1"), (5, b"iden")];
        let (out, report) = scrubbed(heif_graph(iden, &refs(&[(b"dimg", &[5, 1])]), 5, None), Format::Heif);
        assert!(contains(&out, b"pixels") && contains(&out, b"iden"), "{report:#?}");
        for (inputs, want) in [
            (&[5, 1, 3][..], "identity image 5 has 2 inputs, not one"),
            (&[5, 5], "a 'dimg' reference from item 5 to itself"),
        ] {
            let err = refused(heif_graph(iden, &refs(&[(b"dimg", inputs)]), 5, None), Format::Heif);
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        // A grid (item 5, its rows and columns in idat) of rows x columns tiles; its pixi
        // is its first tile's.
        let grid: &[(u16, &[u8; 4])] = &[(3, b"hvc1"), (5, b"grid")];
        let one_by_two = [0, 0, 0, 1, 0, 128, 0, 48];
        let (out, report) =
            scrubbed(heif_graph(grid, &refs(&[(b"dimg", &[5, 1, 3])]), 5, Some((5, &one_by_two))), Format::Heif);
        assert!(contains(&out, b"pixels") && contains(&out, b"grid"), "{report:#?}");
        let err =
            refused(heif_graph(grid, &refs(&[(b"dimg", &[5, 1, 3, 1])]), 5, Some((5, &one_by_two))), Format::Heif);
        assert!(err.to_string().contains("grid image 5 has 2 cells and 3 tiles"), "{err}");
    }

    /// The attacker's rule after pass 6: exiftool reads a version-3 `iloc` without the
    /// construction method pavise reads, and a version-4 `infe` by another layout. A
    /// HEIF table of a version no specification defines is refused.
    #[test]
    fn heif_tables_of_undefined_versions_are_refused() {
        let file = || {
            let props = [bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48])].concat();
            heif(b"", &bx(b"dimg", &[0, 1, 0, 1, 0, 1]), &props, &[0x81, 0x02], &heif_pixels())
        };
        scrubbed(file(), Format::Heif);
        for (kind, version) in [(b"iloc", 3), (b"iinf", 2), (b"infe", 4), (b"ipma", 2), (b"iref", 2), (b"pitm", 2)] {
            let mut bad = file();
            let at = contains_at(&bad, kind).unwrap() + 4;
            bad[at] = version;
            let err = refused(bad, Format::Heif);
            let what = format!("'{}' version {version}, which no specification defines", fourcc(kind));
            assert!(err.to_string().contains(&what), "{what}: {err}");
        }
    }

    /// The payload of an Exif item, with a marker that must not survive.
    const HEIF_EXIF: &[u8] = b"\0\0\0\x06Exif\0\0MM\0*LEAKMARK-GPS+48.8584";

    /// An `hvcC` with no parameter-set arrays and NAL lengths of `length_size` bytes.
    fn hvcc(length_size: u8) -> Vec<u8> {
        let mut h = vec![1u8; 23];
        // 4:2:0, 8-bit luma and chroma (what a `pixi` of 8 8 8 describes).
        h[16..19].copy_from_slice(&[0xFD, 0xF8, 0xF8]);
        h[21] = 0x0C | (length_size - 1);
        h[22] = 0;
        h
    }

    fn infe(id: u16, kind: &[u8; 4]) -> Vec<u8> {
        full(b"infe", 2, &[&id.to_be_bytes()[..], &[0, 0], kind, b"\0"].concat())
    }

    fn heif_iinf(entries: &[Vec<u8>]) -> Vec<u8> {
        full(b"iinf", 0, &[&(entries.len() as u16).to_be_bytes()[..], &entries.concat()].concat())
    }

    /// An `iloc` (version 0, 4-byte offsets and lengths) of one extent per (item, offset, length).
    fn heif_iloc(extents: &[(u16, u32, u32)]) -> Vec<u8> {
        let entries: Vec<u8> = extents
            .iter()
            .flat_map(|(id, off, len)| {
                [&id.to_be_bytes()[..], &[0, 0, 0, 1], &off.to_be_bytes(), &len.to_be_bytes()].concat()
            })
            .collect();
        full(b"iloc", 0, &[&[0x44, 0x00][..], &(extents.len() as u16).to_be_bytes(), &entries].concat())
    }

    /// An `ipma` of `version` (0: 2-byte item ids, 1: 4-byte) with the (item, associations) entries.
    fn heif_ipma(version: u8, entries: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = (entries.len() as u32).to_be_bytes().to_vec();
        for (id, assoc) in entries {
            match version {
                0 => body.extend_from_slice(&id.to_be_bytes()),
                _ => body.extend_from_slice(&u32::from(*id).to_be_bytes()),
            }
            body.push(assoc.len() as u8);
            body.extend_from_slice(assoc);
        }
        full(b"ipma", version, &body)
    }

    /// A HEIF image: an HEVC item 1 (its `hvcC` and `ispe` associated) and an Exif item 2
    /// ([`HEIF_EXIF`]), both in `mdat`. `lead` goes between `ftyp` and `meta`; `edit`
    /// changes the `meta`'s children (hdlr, pitm, iinf, iprp, iloc), given where `mdat`'s
    /// payload starts (the image, then the Exif).
    fn heif_laid_out(lead: &[u8], edit: impl Fn(&mut Vec<Vec<u8>>, u32)) -> Vec<u8> {
        let pixels = nals(&[b"\x26\x01pixels"]);
        let ftyp = bx(b"ftyp", b"heic\0\0\0\0mif1heic");
        let meta = |at: u32| {
            let hdlr = full(b"hdlr", 0, &[&[0u8; 4][..], b"pict", &[0; 12], b"\0"].concat());
            let iinf = heif_iinf(&[infe(1, b"hvc1"), infe(2, b"Exif")]);
            let ipco = bx(b"ipco", &[bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48])].concat());
            let iprp = bx(b"iprp", &[ipco, heif_ipma(0, &[(1, &[0x81, 0x02])])].concat());
            let exif_at = at + pixels.len() as u32;
            let iloc = heif_iloc(&[(1, at, pixels.len() as u32), (2, exif_at, HEIF_EXIF.len() as u32)]);
            let mut kids = vec![hdlr, full(b"pitm", 0, &[0, 1]), iinf, iprp, iloc];
            edit(&mut kids, at);
            full(b"meta", 0, &kids.concat())
        };
        let at = (ftyp.len() + lead.len() + meta(0).len() + 8) as u32;
        [ftyp, lead.to_vec(), meta(at), bx(b"mdat", &[&pixels[..], HEIF_EXIF].concat())].concat()
    }

    fn heif_with_exif(edit: impl Fn(&mut Vec<Vec<u8>>, u32)) -> Vec<u8> {
        heif_laid_out(&[], edit)
    }

    /// The fifth media pass's G2 and its class: libheif (and ffmpeg) take the first of a
    /// `meta`'s `iinf`, `iloc`, `pitm`, `iprp`, `iref`, `idat`, `hdlr`, `dinf`, `grpl` and
    /// an `iprp`'s `ipco`. A second `iinf` that calls the Exif item `unci` hid it from
    /// pavise, which read the last, while libheif exported its GPS. A second copy of any
    /// of them is refused.
    #[test]
    fn a_second_copy_of_a_heif_box_a_reader_takes_once_is_refused() {
        let (file, report) = scrubbed(heif_with_exif(|_, _| {}), Format::Heif);
        assert!(!contains(&file, b"LEAKMARK"), "the Exif item is zeroed: {report:#?}");
        assert!(contains(&file, b"pixels"), "the image stays");

        // G2 as the red team made it: the copy, after the original, renames the Exif item.
        let renamed = |kids: &mut Vec<Vec<u8>>, _| kids.insert(3, heif_iinf(&[infe(1, b"hvc1"), infe(2, b"unci")]));
        let err = refused(heif_with_exif(renamed), Format::Heif);
        assert!(err.to_string().contains("two 'iinf' boxes in one 'meta'"), "{err}");
        assert_eq!(err.reason(), "malformed");
        // A second iloc that points the Exif item at the image's bytes.
        let err = refused(heif_with_exif(|kids, at| kids.push(heif_iloc(&[(1, at, 4), (2, at, 4)]))), Format::Heif);
        assert!(err.to_string().contains("two 'iloc' boxes in one 'meta'"), "{err}");
        let dinf = bx(b"dinf", &full(b"dref", 0, &[&[0, 0, 0, 1][..], &full(b"url ", 0, &[])].concat()));
        let twice: [(&[u8; 4], Vec<u8>); 6] = [
            (b"pitm", full(b"pitm", 0, &[0, 2])),
            (b"iref", full(b"iref", 0, &bx(b"cdsc", &[0, 2, 0, 1, 0, 1]))),
            (b"idat", bx(b"idat", b"item-data")),
            (b"dinf", dinf),
            (b"grpl", bx(b"grpl", &[])),
            (b"hdlr", full(b"hdlr", 0, &[&[0u8; 4][..], b"pict", &[0; 12], b"\0"].concat())),
        ];
        for (kind, copy) in twice {
            let err = refused(heif_with_exif(|kids, _| kids.extend([copy.clone(), copy.clone()])), Format::Heif);
            let what = format!("two '{}' boxes in one 'meta'", fourcc(kind));
            assert!(err.to_string().contains(&what), "{what}: {err}");
        }
        let err = refused(heif_with_exif(|kids, _| kids.push(kids[3].clone())), Format::Heif);
        assert!(err.to_string().contains("two 'iprp' boxes in one 'meta'"), "{err}");
        let second_ipco = |kids: &mut Vec<Vec<u8>>, _| {
            let ipco = bx(b"ipco", &bx(b"hvcC", &hvcc(2)));
            kids[3] = with_box_after(&kids[3], 8, &ipco, &[b"iprp"]);
        };
        let err = refused(heif_with_exif(second_ipco), Format::Heif);
        assert!(err.to_string().contains("two 'ipco' boxes in one 'iprp'"), "{err}");
    }

    /// The tables keyed by item id: libheif takes an item's first `infe`, `iloc` and
    /// `ipma` entry (`ipma` merged over every box) and the first codec configuration of
    /// its type; pavise zeroed or walked by every entry, or the last. An item listed
    /// twice in one of them, or with two codec configurations, is refused.
    #[test]
    fn an_item_listed_twice_in_a_table_is_refused() {
        let unci_too =
            |kids: &mut Vec<Vec<u8>>, _| kids[2] = heif_iinf(&[infe(1, b"hvc1"), infe(2, b"Exif"), infe(2, b"unci")]);
        let err = refused(heif_with_exif(unci_too), Format::Heif);
        assert!(err.to_string().contains("two 'infe' entries for item 2"), "{err}");
        // The standard entries, then item 2 again, at the image's first bytes.
        let pixels = nals(&[b"\x26\x01pixels"]).len() as u32;
        let exif_elsewhere = |kids: &mut Vec<Vec<u8>>, at: u32| {
            kids[4] = heif_iloc(&[(1, at, pixels), (2, at + pixels, HEIF_EXIF.len() as u32), (2, at, 4)]);
        };
        let err = refused(heif_with_exif(exif_elsewhere), Format::Heif);
        assert!(err.to_string().contains("two 'iloc' entries for item 2"), "{err}");

        let ipco = || bx(b"ipco", &[bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48])].concat());
        let one_box = |kids: &mut Vec<Vec<u8>>, _| {
            kids[3] = bx(b"iprp", &[ipco(), heif_ipma(0, &[(1, &[0x81, 0x02]), (1, &[0x02])])].concat());
        };
        let two_boxes = |kids: &mut Vec<Vec<u8>>, _| {
            let ipmas = [heif_ipma(0, &[(1, &[0x81, 0x02])]), heif_ipma(1, &[(1, &[0x02])])].concat();
            kids[3] = bx(b"iprp", &[ipco(), ipmas].concat());
        };
        for shape in [heif_with_exif(one_box), heif_with_exif(two_boxes)] {
            let err = refused(shape, Format::Heif);
            assert!(err.to_string().contains("two 'ipma' entries for item 1"), "{err}");
        }
        // Two ipma boxes that name different items are what libheif merges: they pass.
        let merged = |kids: &mut Vec<Vec<u8>>, _| {
            let ipmas = [heif_ipma(0, &[(1, &[0x81, 0x02])]), heif_ipma(1, &[(2, &[0x02])])].concat();
            kids[3] = bx(b"iprp", &[ipco(), ipmas].concat());
        };
        let (file, report) = scrubbed(heif_with_exif(merged), Format::Heif);
        assert!(!contains(&file, b"LEAKMARK") && contains(&file, b"pixels"), "{report:#?}");

        // A second hvcC whose NAL lengths are 2 bytes: pavise walked the data with the last.
        let two_configs = |kids: &mut Vec<Vec<u8>>, _| {
            let ipco = bx(
                b"ipco",
                &[bx(b"hvcC", &hvcc(4)), full(b"ispe", 0, &[0, 0, 0, 64, 0, 0, 0, 48]), bx(b"hvcC", &hvcc(2))].concat(),
            );
            kids[3] = bx(b"iprp", &[ipco, heif_ipma(0, &[(1, &[0x81, 0x02, 0x83])])].concat());
        };
        let err = refused(heif_with_exif(two_configs), Format::Heif);
        assert!(err.to_string().contains("image item 1 has two codec configurations"), "{err}");
    }

    /// libheif reads the first top-level `meta`; the image's must be the only one, before
    /// or after another (an MP4-style `mdir` tag box, say).
    #[test]
    fn a_second_top_level_meta_is_refused() {
        let tags = full(b"meta", 0, &full(b"hdlr", 0, &[&[0u8; 4][..], b"mdir", &[0; 12], b"\0"].concat()));
        let mut after = heif_with_exif(|_, _| {});
        after.extend_from_slice(&tags);
        for file in [after, heif_laid_out(&tags, |_, _| {})] {
            let err = refused(file, Format::Heif);
            assert!(err.to_string().contains("a second top-level 'meta' box"), "{err}");
        }
        // A video may carry two tag boxes: both are freed, neither is read.
        let video = trak(1, b"vide", &visual_entry(b"mp4v", &es_descriptor(b"\x01SPS")), 0, (FTYP_LEN + 8, 6), &[]);
        let mut file = movie(b"isomisom", b"frames", &video);
        file.extend([tags.clone(), tags].concat());
        scrubbed(file, Format::Video);
    }

    #[test]
    fn refuses_truncated_moov() {
        let mut file = bx(b"ftyp", b"isom\0\0\0\0isom");
        file.extend(bx(b"moov", &bx(b"mvhd", &[0; 20])));
        file.truncate(file.len() - 4);
        let err = scrub(&mut MemStore(&mut file), Format::Video, &mut Report::default()).unwrap_err();
        assert_eq!(err.reason(), "truncated");
    }

    /// Found by `scripts/fuzz`: an Exif item whose extent (offset 0, length 0: "to the end")
    /// covers the whole file, `meta` included. Zeroing it would wreck the file; it is refused.
    #[test]
    fn fuzz_finding_an_item_extent_over_the_file_structure_is_refused() {
        let input = include_bytes!("testdata/fuzz-heif-item-extent-over-the-meta-box.heic");
        for format in [Format::Heif, Format::Video] {
            let mut buf = input.to_vec();
            if scrub(&mut MemStore(&mut buf), format, &mut Report::default()).is_ok() {
                let mut again = Report::default();
                audit(&mut MemStore(&mut buf), format, &mut again).unwrap();
                assert!(again.removed.is_empty(), "{again:?}");
            }
        }
        let err = scrub(&mut MemStore(&mut input.to_vec()), Format::Heif, &mut Report::default()).unwrap_err();
        assert!(err.to_string().contains("outside the media data"), "{err}");
    }

    /// The red team's hiding places: a reference movie (`rmra`), a track's `meco`, a data
    /// reference naming a path, and in a HEIF image a user description, a creation time
    /// and a device ICC profile.
    #[test]
    fn references_descriptions_times_and_icc_devices_are_blanked() {
        let hdlr = |h: &[u8; 4]| bx(b"hdlr", &[&[0u8; 8][..], h, &[0; 12], b"\0"].concat());
        let dref = bx(
            b"dref",
            &[&[0u8; 4][..], &1u32.to_be_bytes(), &bx(b"url ", b"\0\0\0\0/Users/alice/Paris.mov")].concat(),
        );
        let minf =
            bx(b"minf", &[bx(b"vmhd", &[0; 12]), bx(b"dinf", &dref), bx(b"stbl", &bx(b"stsd", &[0; 8]))].concat());
        let mdia = bx(b"mdia", &[bx(b"mdhd", &[0; 24]), hdlr(b"vide"), minf].concat());
        let trak = bx(b"trak", &[bx(b"tkhd", &[0; 84]), mdia, bx(b"meco", &bx(b"meta", b"Paris"))].concat());
        let rmra = bx(b"rmra", &bx(b"rmda", &bx(b"rdrf", b"\0\0\0\0url http://x/Paris")));
        let mut file = bx(b"ftyp", b"isom\0\0\0\0isom");
        file.extend(bx(b"moov", &[bx(b"mvhd", &[0; 100]), trak, rmra].concat()));
        file.extend(bx(b"mdat", b"frames"));
        let mut report = Report::default();
        scrub(&mut MemStore(&mut file), Format::Video, &mut report).unwrap();
        assert!(!file.windows(5).any(|w| w == b"Paris"), "{report:?}");
        assert!(file.windows(4).any(|w| w == b"url "), "the reference box stays, empty");
        let mut again = Report::default();
        audit(&mut MemStore(&mut file), Format::Video, &mut again).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");

        let icc = crate::privacy::media::icc::sample_profile();
        let ipco = bx(
            b"ipco",
            &[
                bx(b"colr", &[&b"prof"[..], &icc].concat()),
                bx(b"udes", b"\0\0\0\0en\0Paris trip\0Marker-X1\0tags\0"),
                bx(b"crtt", &[0, 0, 0, 0, 0, 0, 0, 0, 0xE2, 0x9A, 0x1B, 0x40]),
                bx(b"ispe", &[0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 48]),
            ]
            .concat(),
        );
        let ipma = full(b"ipma", 0, &[0, 0, 0, 1, 0, 1, 4, 1, 2, 3, 4]);
        let iinf = heif_iinf(&[infe(1, b"hvc1")]);
        let pitm = full(b"pitm", 0, &[0, 1]);
        let meta =
            bx(b"meta", &[&[0u8; 4][..], &hdlr(b"pict"), &pitm, &iinf, &bx(b"iprp", &[ipco, ipma].concat())].concat());
        let mut file = bx(b"ftyp", b"heic\0\0\0\0mif1heic");
        file.extend(meta);
        file.extend(bx(b"mdat", b"pixels"));
        let mut report = Report::default();
        scrub(&mut MemStore(&mut file), Format::Heif, &mut report).unwrap();
        for gone in [&b"Paris"[..], b"Marker-X1", b"PaviseCam", b"\xE2\x9A\x1B\x40"] {
            assert!(!file.windows(gone.len()).any(|w| w == gone), "{}: {report:?}", String::from_utf8_lossy(gone));
        }
        assert!(file.windows(4).any(|w| w == b"acsp") && file.windows(4).any(|w| w == b"curv"), "the ICC colour stays");
        let mut again = Report::default();
        audit(&mut MemStore(&mut file), Format::Heif, &mut again).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
    }
}
