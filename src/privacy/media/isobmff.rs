//! ISOBMFF (HEIC, HEIF, AVIF, MP4, MOV, 3GP, M4A), scrubbed **in place**: the file keeps
//! its length and every byte offset, so `stco`/`co64`/`iloc` need no fix-ups and a 90 MB
//! video is patched with only its `moov` (or HEIF `meta`) in memory.
//!
//! What is neutralised (renamed to `free` and zeroed, or zeroed where it lies):
//! - every `udta`, `meta` and `uuid` box under `moov` or a `trak` (`©xyz`, `loci`,
//!   Apple `keys`/`ilst` ISO6709, GoPro `GPMF`, XMP), and unknown boxes at those levels;
//! - top-level `uuid` (XMP), a non-image top-level `meta`, and unknown top-level boxes;
//! - timed-metadata and other non-audio/video tracks (GoPro `gpmd`, Apple `mebx`
//!   location, `camm`, subtitles, timecode): their samples are zeroed where `stsz`,
//!   `stsc` and `stco`/`co64` say they are, then the `trak` is freed. Freeing only the
//!   `trak` would leave the GPS samples orphaned but present in `mdat`;
//! - HEIF/AVIF items that are not images (`Exif`, `mime` XMP, `uri `): their `iloc`
//!   extents are zeroed and their `infe` type renamed, so no reader looks for them;
//! - boxes kept but never read by a player: the payload of every `free`, `skip` and
//!   `wide` (where an editor leaves the bytes of what it removed: a `©xyz` in a `free`
//!   box is still a location), and the top-level `prft` (a wall-clock capture time),
//!   `emsg` and `pdin`, which are freed;
//! - when and with what it was made: the creation and modification times of `mvhd`,
//!   `tkhd` and `mdhd` (both the 32-bit and 64-bit versions), like EXIF
//!   `DateTimeOriginal` (who was at the protest at 14:02); the name and manufacturer in
//!   every `hdlr` (`GoPro AVC`, `Core Media Video`); the compressor name of every video
//!   sample description.
//!
//! Walked box by box, each level with the list of boxes it may keep: `moov`, `trak`,
//! `mdia`, `minf`, `stbl`, `mvex`, `moof` and `traf`. A box not on its level's list is
//! freed. Kept as they are: `ftyp`/`styp` (brands, read by [`sniff`]), the sample tables
//! and descriptions a decoder needs, edit lists, HEIF item properties (`iprp`; an
//! essential property renamed would make the image unreadable) and the index boxes
//! (`sidx`, `ssix`, `mfra`: offsets and sizes). Bytes inside `mdat` that no track
//! points at are not examined.
//!
//! A truncated top-level box (`moov`, `meta`, even `mdat`) is refused, not guessed at.
//! Planning only reads; the same plan run on the output must find nothing to change,
//! which is how [`audit`] proves the result clean.

use super::{
    Format, MediaError, Report, be16, be32, be64, fourcc,
    inplace::{Store, is_zero, zero},
};

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
}

/// Neutralises every metadata carrier; see the module docs.
pub fn scrub(store: &mut impl Store, format: Format, report: &mut Report) -> Result<(), MediaError> {
    let plan = plan(store, format)?;
    for action in plan {
        apply(store, action, report)?;
    }
    Ok(())
}

/// The same plan, applied to nothing: what would still change. Empty means clean.
pub fn audit(store: &mut impl Store, format: Format, report: &mut Report) -> Result<(), MediaError> {
    for action in plan(store, format)? {
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

fn plan(store: &mut impl Store, format: Format) -> Result<Vec<Action>, MediaError> {
    let len = store.len();
    let mut actions = Vec::new();
    let mut pos = 0u64;
    let mut saw_moov = false;
    let mut saw_image_meta = false;
    // Where media payloads may lie: `mdat` boxes, and a HEIF `idat`.
    let mut media_data: Vec<(u64, u64)> = Vec::new();
    while pos < len {
        let mut h = [0u8; 32];
        let n = (len - pos).min(32) as usize;
        store.read_at(pos, &mut h[..n])?;
        let b = parse_header(&h[..n], pos, len, format)?;
        match &b.kind {
            b"mdat" => media_data.push((b.payload, b.end)),
            b"ftyp" | b"styp" | b"mfra" | b"sidx" | b"ssix" => {}
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(&b, "top-level")),
            b"prft" => actions.push(free(&b, "top-level prft (the wall-clock time it was produced)")),
            b"emsg" | b"pdin" => actions.push(free(&b, &format!("top-level {}", fourcc(&b.kind)))),
            b"moof" => {
                let buf = read_box(store, &b, format)?;
                plan_moof(&buf, &b, format, &mut actions)?;
            }
            b"moov" => {
                saw_moov = true;
                let buf = read_box(store, &b, format)?;
                plan_moov(&buf, &b, format, &mut actions)?;
            }
            b"meta" => {
                let buf = read_box(store, &b, format)?;
                if plan_heif_meta(&buf, &b, len, format, &mut actions, &mut media_data)? {
                    saw_image_meta = true;
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
    match format {
        Format::Heif if !saw_image_meta => Err(MediaError::malformed(format, "no image item information (meta)")),
        Format::Video | Format::M4a if !saw_moov => Err(MediaError::malformed(format, "no movie header (moov)")),
        _ => Ok(actions),
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

/// A moov/meta buffer being planned: its bytes, their file offset, the format.
#[derive(Clone, Copy)]
struct Walk<'a> {
    buf: &'a [u8],
    base: u64,
    format: Format,
}

impl Walk<'_> {
    /// What each box of one level is: kept (on the level's list, then `on_kept`), blanked
    /// (free space) or freed (user data, metadata, anything unknown).
    fn level(
        self,
        parent: &BoxAt,
        keep: &[&[u8; 4]],
        level: &str,
        actions: &mut Vec<Action>,
        mut on_kept: impl FnMut(&BoxAt, &mut Vec<Action>) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let (from, to) = ((parent.payload - self.base) as usize, (parent.end - self.base) as usize);
        for k in &children(self.buf, self.base, from, to, self.format)? {
            match &k.kind {
                b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, level)),
                kind if keep.contains(&kind) => on_kept(k, actions)?,
                b"udta" => actions.push(free(k, &format!("{level}/udta (user data)"))),
                b"meta" => actions.push(free(k, &format!("{level}/meta"))),
                other => actions.push(free(k, &format!("unknown {level}/{} box", fourcc(other)))),
            }
        }
        Ok(())
    }
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

/// Zeroes the 32-byte compressor name of every video sample description in `stsd`.
fn blank_compressor_names(
    buf: &[u8],
    base: u64,
    stsd: &BoxAt,
    format: Format,
    actions: &mut Vec<Action>,
) -> Result<(), MediaError> {
    // A FullBox with an entry count, then the sample entries (boxes).
    for entry in children(buf, base, (stsd.payload - base) as usize + 8, (stsd.end - base) as usize, format)? {
        if entry.end - entry.start >= 86 && entry.payload == entry.start + 8 {
            actions.push(Action::Blank { off: entry.start + 50, len: 32, what: "video compressor name".into() });
        }
    }
    Ok(())
}

fn plan_moof(buf: &[u8], moof: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    let walk = Walk { buf, base: moof.start, format };
    walk.level(moof, &[b"mfhd", b"pssh", b"traf"], "moof", actions, |k, actions| {
        if &k.kind == b"traf" {
            const TRAF: &[&[u8; 4]] =
                &[b"tfhd", b"tfdt", b"trun", b"sbgp", b"sgpd", b"subs", b"saiz", b"saio", b"senc", b"sdtp"];
            walk.level(k, TRAF, "traf", actions, |_, _| Ok(()))?;
        }
        Ok(())
    })
}

/// Slice of `buf` (which starts at file offset `base`) for a child box's payload.
fn payload<'a>(buf: &'a [u8], base: u64, b: &BoxAt) -> &'a [u8] {
    buf.get((b.payload - base) as usize..(b.end - base) as usize).unwrap_or_default()
}

fn plan_moov(buf: &[u8], moov: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    let base = moov.start;
    let kids = children(buf, base, (moov.payload - base) as usize, buf.len(), format)?;
    let fragmented = kids.iter().any(|k| &k.kind == b"mvex");
    for k in &kids {
        match &k.kind {
            b"iods" | b"pssh" | b"clip" | b"ctab" => {}
            // A reference movie: data references (URLs, Mac aliases) to media elsewhere.
            b"rmra" => actions.push(free(k, "moov/rmra (reference movie: URLs and aliases)")),
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, "moov")),
            b"mvhd" => blank_times(buf, base, k, format, actions)?,
            b"mvex" => {
                Walk { buf, base, format }.level(k, &[b"mehd", b"trex", b"leva"], "mvex", actions, |_, _| Ok(()))?
            }
            b"trak" => plan_trak(buf, base, k, fragmented, format, actions)?,
            b"udta" => actions.push(free(k, "moov/udta (user data: ©xyz, loci, GPMF, ...)")),
            b"meta" => actions.push(free(k, "moov/meta (keys/ilst, e.g. ISO6709 location)")),
            b"uuid" => actions.push(free(k, "moov/uuid")),
            b"cmov" => return Err(MediaError::Unsupported("compressed QuickTime movie headers (cmov)")),
            other => actions.push(free(k, &format!("unknown moov/{} box", fourcc(other)))),
        }
    }
    Ok(())
}

fn plan_trak(
    buf: &[u8],
    base: u64,
    trak: &BoxAt,
    fragmented: bool,
    format: Format,
    actions: &mut Vec<Action>,
) -> Result<(), MediaError> {
    let kids = children(buf, base, (trak.payload - base) as usize, (trak.end - base) as usize, format)?;
    let mdia = kids
        .iter()
        .find(|k| &k.kind == b"mdia")
        .ok_or_else(|| MediaError::malformed(format, "a track has no media box (mdia)"))?;
    let mdia_kids = children(buf, base, (mdia.payload - base) as usize, (mdia.end - base) as usize, format)?;
    let handler = mdia_kids
        .iter()
        .find(|k| &k.kind == b"hdlr")
        .and_then(|h| payload(buf, base, h).get(8..12))
        .ok_or_else(|| MediaError::malformed(format, "a track has no handler (hdlr)"))?;
    // Mastodon plays one video and one audio stream; everything else is data about the
    // recording (GPS telemetry, ISO6709 samples, camera motion, timecode, subtitles).
    if !matches!(handler, b"vide" | b"soun" | b"auxv" | b"pict") {
        let what = format!("'{}' track (timed metadata)", fourcc(handler));
        if fragmented {
            return Err(MediaError::Unsupported("fragmented videos with a timed-metadata track"));
        }
        if let Some(minf) = mdia_kids.iter().find(|k| &k.kind == b"minf") {
            let minf_kids = children(buf, base, (minf.payload - base) as usize, (minf.end - base) as usize, format)?;
            if let Some(stbl) = minf_kids.iter().find(|k| &k.kind == b"stbl") {
                for (off, len) in sample_ranges(buf, base, stbl, format)? {
                    actions.push(Action::Zero { off, len, what: format!("samples of the {what}") });
                }
            }
        }
        actions.push(free(trak, &what));
        return Ok(());
    }
    const TRAK: &[&[u8; 4]] =
        &[b"tkhd", b"tref", b"edts", b"mdia", b"tapt", b"load", b"imap", b"matt", b"clip", b"txas", b"kmat", b"ssrc"];
    const MDIA: &[&[u8; 4]] = &[b"mdhd", b"hdlr", b"minf", b"elng"];
    const MINF: &[&[u8; 4]] = &[b"vmhd", b"smhd", b"hmhd", b"nmhd", b"sthd", b"gmhd", b"dinf", b"stbl", b"hdlr"];
    const STBL: &[&[u8; 4]] = &[
        b"stsd", b"stts", b"ctts", b"cslg", b"stss", b"stps", b"stsc", b"stsz", b"stz2", b"stco", b"co64", b"sdtp",
        b"sbgp", b"sgpd", b"subs", b"saiz", b"saio", b"stsh", b"padb", b"stdp", b"csgp",
    ];
    let video = handler == b"vide";
    let walk = Walk { buf, base, format };
    walk.level(trak, TRAK, "trak", actions, |k, actions| match &k.kind {
        b"tkhd" => blank_times(buf, base, k, format, actions),
        b"mdia" => walk.level(k, MDIA, "mdia", actions, |k, actions| match &k.kind {
            b"mdhd" => blank_times(buf, base, k, format, actions),
            b"hdlr" => {
                blank_handler_name(buf, base, k, actions);
                Ok(())
            }
            b"minf" => walk.level(k, MINF, "minf", actions, |k, actions| match &k.kind {
                b"hdlr" => {
                    blank_handler_name(buf, base, k, actions);
                    Ok(())
                }
                b"dinf" => plan_dinf(buf, base, k, format, actions),
                b"stbl" => walk.level(k, STBL, "stbl", actions, |k, actions| {
                    if video && &k.kind == b"stsd" {
                        blank_compressor_names(buf, base, k, format, actions)?;
                    }
                    Ok(())
                }),
                _ => Ok(()),
            }),
            _ => Ok(()),
        }),
        _ => Ok(()),
    })
}

/// Byte ranges of every sample of a track, merged where adjacent.
fn sample_ranges(buf: &[u8], base: u64, stbl: &BoxAt, format: Format) -> Result<Vec<(u64, u64)>, MediaError> {
    let bad = |what: &str| MediaError::malformed(format, format!("metadata track sample table: {what}"));
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
        if !matches!(bits, 4 | 8 | 16) {
            return Err(bad("stz2 field size"));
        }
        (0, be32(p, 8).ok_or_else(|| bad("stz2"))?, p.get(12..).unwrap_or_default(), bits)
    } else {
        return Ok(Vec::new());
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
    let stsc_entries: Vec<(u32, u32)> = (0..stsc_n)
        .map(|i| Some((be32(stsc, 8 + i * 12)?, be32(stsc, 12 + i * 12)?)))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("stsc runs past its box"))?;
    let offsets: Vec<u64> = if let Some(p) = find(b"stco") {
        let n = be32(p, 4).ok_or_else(|| bad("stco"))? as usize;
        (0..n).map(|i| be32(p, 8 + i * 4).map(u64::from)).collect::<Option<_>>().ok_or_else(|| bad("stco"))?
    } else if let Some(p) = find(b"co64") {
        let n = be32(p, 4).ok_or_else(|| bad("co64"))? as usize;
        (0..n).map(|i| be64(p, 8 + i * 8)).collect::<Option<_>>().ok_or_else(|| bad("co64"))?
    } else {
        return Err(bad("no chunk offsets"));
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut sample = 0u32;
    let mut entry = 0usize;
    for (ci, &chunk_off) in offsets.iter().enumerate() {
        let chunk_no = ci as u64 + 1;
        while entry + 1 < stsc_entries.len() && u64::from(stsc_entries[entry + 1].0) <= chunk_no {
            entry += 1;
        }
        let per_chunk = stsc_entries.get(entry).map_or(0, |e| e.1);
        let n = per_chunk.min(count - sample);
        let bytes = if uniform != 0 {
            u64::from(uniform) * u64::from(n)
        } else {
            (sample..sample + n).map(size_of).sum::<Option<u64>>().ok_or_else(|| bad("sample size table too short"))?
        };
        sample += n;
        if bytes > 0 {
            match ranges.last_mut() {
                Some(last) if last.0 + last.1 == chunk_off => last.1 += bytes,
                _ => ranges.push((chunk_off, bytes)),
            }
        }
        if sample >= count {
            break;
        }
    }
    Ok(ranges)
}

/// Plans a top-level `meta`. Returns false when it is not an image `meta` (`pict`).
fn plan_heif_meta(
    buf: &[u8],
    meta: &BoxAt,
    file_len: u64,
    format: Format,
    actions: &mut Vec<Action>,
    media_data: &mut Vec<(u64, u64)>,
) -> Result<bool, MediaError> {
    let base = meta.start;
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
    let mut items: Vec<(u32, u64, [u8; 4])> = Vec::new(); // id, file offset of type, type
    let mut locations: Vec<Location> = Vec::new();
    let mut idat: Option<(u64, u64)> = None;
    for k in &kids {
        match &k.kind {
            b"pitm" | b"iref" | b"grpl" | b"ipro" => {}
            b"iprp" => plan_iprp(buf, base, k, format, actions)?,
            b"dinf" => plan_dinf(buf, base, k, format, actions)?,
            b"hdlr" => blank_handler_name(buf, base, k, actions),
            b"free" | b"skip" | b"wide" => actions.push(blank_payload(k, "meta")),
            b"iinf" => items = parse_iinf(buf, base, k, format)?,
            b"iloc" => locations = parse_iloc(payload(buf, base, k)).ok_or_else(|| bad("unreadable iloc"))?,
            b"idat" => {
                idat = Some((k.payload, k.end - k.payload));
                media_data.push((k.payload, k.end));
            }
            other => actions.push(free(k, &format!("meta/{} box (XML/XMP or vendor data)", fourcc(other)))),
        }
    }
    const IMAGE_ITEMS: &[&[u8; 4]] = &[
        b"hvc1", b"hev1", b"av01", b"grid", b"iovl", b"iden", b"jpeg", b"avc1", b"hvt1", b"lhv1", b"unci", b"j2k1",
        b"tmap", b"vvc1", b"vvi1", b"mski",
    ];
    for (id, type_at, kind) in items {
        if IMAGE_ITEMS.contains(&&kind) {
            continue;
        }
        let what = if &kind == ITEM_GONE {
            "an item pavise already neutralised".to_owned()
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
                actions.push(Action::Zero { off, len, what: what.clone() });
            }
        }
        if type_at != 0 && &kind != ITEM_GONE {
            actions.push(Action::ItemType { at: type_at, what: format!("{what}: type renamed to 'free'") });
        }
    }
    Ok(true)
}

/// `dinf/dref`: a data reference that is not "in this file" names where the media is
/// (a URL, a URN, a Mac alias with volume and folder names): blanked after its flags.
fn plan_dinf(buf: &[u8], base: u64, dinf: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    for k in children(buf, base, (dinf.payload - base) as usize, (dinf.end - base) as usize, format)? {
        if &k.kind != b"dref" {
            actions.push(free(&k, &format!("unknown dinf/{} box", fourcc(&k.kind))));
            continue;
        }
        // FullBox (4) and an entry count (4), then one box per reference.
        let from = (k.payload - base) as usize + 8;
        if from > (k.end - base) as usize {
            return Err(MediaError::malformed(format, "a short dref box"));
        }
        for entry in children(buf, base, from, (k.end - base) as usize, format)? {
            if entry.end > entry.payload + 4 {
                actions.push(Action::Blank {
                    off: entry.payload + 4,
                    len: entry.end - entry.payload - 4,
                    what: format!("dref '{}' location", fourcc(&entry.kind)),
                });
            }
        }
    }
    Ok(())
}

/// HEIF item properties: kept, because an image needs its essential ones and `ipma` refers
/// to them by position; but a user description (`udes`), a creation or modification
/// time (`crtt`, `mdft`) has its contents blanked, and an ICC colour profile (`colr`
/// of type `prof`/`rICC`) loses what is not colour ([`super::icc`]).
fn plan_iprp(buf: &[u8], base: u64, iprp: &BoxAt, format: Format, actions: &mut Vec<Action>) -> Result<(), MediaError> {
    for k in children(buf, base, (iprp.payload - base) as usize, (iprp.end - base) as usize, format)? {
        if &k.kind != b"ipco" {
            continue;
        }
        for prop in children(buf, base, (k.payload - base) as usize, (k.end - base) as usize, format)? {
            match &prop.kind {
                b"udes" | b"crtt" | b"mdft" if prop.end > prop.payload + 4 => actions.push(Action::Blank {
                    off: prop.payload + 4,
                    len: prop.end - prop.payload - 4,
                    what: format!("ipco/{} (a description or a time)", fourcc(&prop.kind)),
                }),
                b"colr" => {
                    let p = payload(buf, base, &prop);
                    if matches!(p.get(..4), Some(b"prof" | b"rICC")) {
                        let mut icc = p[4..].to_vec();
                        let what = "ICC profile device, description and text tags".to_owned();
                        let off = prop.payload + 4;
                        match super::icc::blank(&mut icc) {
                            Ok(0) => {}
                            Ok(_) => actions.push(Action::Patch { off, bytes: icc, what }),
                            Err(e) => actions.push(Action::Blank { off, len: icc.len() as u64, what: format!("{e}") }),
                        }
                    }
                }
                b"free" | b"skip" => actions.push(blank_payload(&prop, "ipco")),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Item id, file offset of its 4CC type (0 when the infe has none), and the type.
fn parse_iinf(buf: &[u8], base: u64, iinf: &BoxAt, format: Format) -> Result<Vec<(u32, u64, [u8; 4])>, MediaError> {
    let p = payload(buf, base, iinf);
    let version = *p.first().ok_or_else(|| MediaError::malformed(format, "empty iinf"))?;
    let skip = if version == 0 { 6 } else { 8 };
    let from = (iinf.payload - base) as usize + skip;
    let mut out = Vec::new();
    for infe in children(buf, base, from, (iinf.end - base) as usize, format)? {
        if &infe.kind != b"infe" {
            continue;
        }
        let q = payload(buf, base, &infe);
        let short = || MediaError::malformed(format, "short infe box");
        let v = *q.first().ok_or_else(short)?;
        let (id, type_off) = match v {
            0 | 1 => (u32::from(be16(q, 4).ok_or_else(short)?), None),
            2 => (u32::from(be16(q, 4).ok_or_else(short)?), Some(8)),
            _ => (be32(q, 4).ok_or_else(short)?, Some(10)),
        };
        match type_off {
            Some(t) => {
                let kind: [u8; 4] = q.get(t..t + 4).and_then(|s| s.try_into().ok()).ok_or_else(short)?;
                out.push((id, infe.payload + t as u64, kind));
            }
            // Version 0/1 entries name no type; treat the item as data to zero.
            None => out.push((id, 0, *b"mime")),
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct Location {
    id: u32,
    method: u8,
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
        pos += 2; // data_reference_index
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
        out.push(Location { id, method, base, extents });
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

    #[test]
    fn frees_udta_and_meta_in_place() {
        let mut file = bx(b"ftyp", b"isom\0\0\0\0isom");
        let moov =
            [bx(b"mvhd", &[0; 20]), bx(b"udta", &bx(b"\xa9xyz", b"+51.4-000.1/")), bx(b"meta", b"ISO6709")].concat();
        file.extend(bx(b"moov", &moov));
        file.extend(bx(b"mdat", b"frames"));
        let before = file.len();
        let mut report = Report::default();
        scrub(&mut MemStore(&mut file), Format::Video, &mut report).unwrap();
        assert_eq!(file.len(), before);
        assert!(!file.windows(4).any(|w| w == b"+51."));
        assert!(!file.windows(7).any(|w| w == b"ISO6709"));
        assert!(file.windows(6).any(|w| w == b"frames"));
        assert_eq!(report.removed.len(), 2);
        let mut again = Report::default();
        audit(&mut MemStore(&mut file), Format::Video, &mut again).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
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
        let meta = bx(b"meta", &[&[0u8; 4][..], &hdlr(b"pict"), &bx(b"iprp", &ipco)].concat());
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
