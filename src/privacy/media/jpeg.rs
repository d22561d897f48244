//! JPEG: a segment walk that rebuilds the file from the segments worth keeping.
//!
//! Segment lengths are local, so dropping one moves no offset. Kept: the frame and scan
//! (SOFn, DHT, DQT, DRI, SOS and its entropy-coded data), the first APP0 JFIF (without
//! its thumbnail: a thumbnail can show what a crop removed), APP2 `ICC_PROFILE` with
//! everything in it that is not colour zeroed ([`super::icc`]: the device maker, model,
//! description and copyright; an incomplete or unreadable profile is dropped) and the
//! first APP14 `Adobe` cut to its 12 defined bytes (CMYK/YCCK decoders need it). Every table and
//! header segment must be exactly as long as its structure (as libjpeg requires), so no
//! bytes ride along in a kept segment's tail. Dropped: every APP1 (Exif, XMP, extended XMP,
//! FLIR), APP13 (IPTC), every other APPn, COM, and everything after EOI (MPF images,
//! Samsung/Google trailers, Motion Photo MP4s, UltraHDR gain maps). If the Exif said
//! Orientation ≠ 1, a minimal Exif with only that tag is written back so the photo is
//! not shown sideways. A file that ends before EOI is refused, and so is a JPEG-LS or
//! hierarchical file (libjpeg decodes neither, and pavise does not read their segments).

use super::{Format, MediaError, Report, be16};

const F: Format = Format::Jpeg;

/// The Exif APP1 pavise writes itself: IFD0 with one entry, Orientation.
fn minimal_exif(orientation: u16) -> Vec<u8> {
    let mut seg = Vec::with_capacity(36);
    seg.extend_from_slice(&[0xFF, 0xE1, 0x00, 34]);
    seg.extend_from_slice(b"Exif\0\0");
    // Big-endian TIFF header, IFD0 at offset 8.
    seg.extend_from_slice(b"MM\0\x2a\0\0\0\x08");
    seg.extend_from_slice(&[0, 1]);
    // Tag 0x0112 Orientation, type SHORT, count 1, value left-justified.
    seg.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
    seg.extend_from_slice(&orientation.to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    // No next IFD.
    seg.extend_from_slice(&[0, 0, 0, 0]);
    seg
}

/// Orientation (IFD0 tag 0x0112) from an Exif APP1 payload (after the length).
pub(crate) fn exif_orientation(payload: &[u8]) -> Option<u16> {
    let tiff = payload.strip_prefix(b"Exif\0\0")?;
    tiff_orientation(tiff)
}

/// Orientation from a TIFF-structured Exif block (also HEIF's Exif item body).
pub(crate) fn tiff_orientation(tiff: &[u8]) -> Option<u16> {
    let le = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let r16 = |at: usize| -> Option<u16> {
        let s = tiff.get(at..at.checked_add(2)?)?;
        Some(if le { u16::from_le_bytes([s[0], s[1]]) } else { u16::from_be_bytes([s[0], s[1]]) })
    };
    let r32 = |at: usize| -> Option<u32> {
        let s = tiff.get(at..at.checked_add(4)?)?;
        let a = [s[0], s[1], s[2], s[3]];
        Some(if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) })
    };
    if r16(2)? != 42 {
        return None;
    }
    let ifd = r32(4)? as usize;
    let count = r16(ifd)? as usize;
    for i in 0..count.min(512) {
        let e = ifd.checked_add(2 + 12 * i)?;
        if r16(e)? == 0x0112 && r16(e + 2)? == 3 {
            let v = r16(e + 8)?;
            return (1..=8).contains(&v).then_some(v);
        }
    }
    None
}

pub fn scrub(input: &[u8], report: &mut Report) -> Result<Vec<u8>, MediaError> {
    if !input.starts_with(&[0xFF, 0xD8]) {
        return Err(MediaError::malformed(F, "no start-of-image marker"));
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    let mut pos = 2;
    let mut orientation: Option<u16> = None;
    let mut saw_exif = false;
    let mut wrote_orientation = false;
    let mut saw_frame = false;
    let mut saw_scan = false;
    let mut saw_jfif = false;
    // The colour transform of the APP14 Adobe kept, once one is.
    let mut adobe_transform: Option<u8> = None;
    // APP2 ICC chunks in `out`: (segment start, data start, segment end, seq, count).
    let mut icc: Vec<(usize, usize, usize, u8, u8)> = Vec::new();

    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if input.get(pos) != Some(&0xFF) {
            return match input.get(pos) {
                None => Err(MediaError::truncated(F, "the file ends before the end-of-image marker")),
                Some(_) => Err(MediaError::malformed(F, format!("expected a marker at byte {pos}"))),
            };
        }
        while input.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = input.get(pos) else {
            return Err(MediaError::truncated(F, "the file ends inside a marker"));
        };
        pos += 1;
        match marker {
            0xD9 => {
                if !saw_frame || !saw_scan {
                    return Err(MediaError::malformed(F, "end-of-image before any image data"));
                }
                out.extend_from_slice(&[0xFF, 0xD9]);
                let trailer = input.len() - pos;
                if trailer > 0 {
                    report.remove("data after the end-of-image marker (trailer)", trailer as u64);
                }
                break;
            }
            0xD8 => return Err(MediaError::malformed(F, "a second start-of-image marker")),
            0x00 => return Err(MediaError::malformed(F, format!("stray 0xFF00 at byte {}", pos - 2))),
            // Standalone markers (TEM, RSTn) carry no length.
            0x01 | 0xD0..=0xD7 => out.extend_from_slice(&[0xFF, marker]),
            _ => {
                let len = be16(input, pos)
                    .ok_or_else(|| MediaError::truncated(F, "the file ends inside a segment header"))?
                    as usize;
                if len < 2 {
                    return Err(MediaError::malformed(F, format!("segment length {len} at byte {pos}")));
                }
                let end = pos + len;
                let Some(payload) = input.get(pos + 2..end) else {
                    return Err(MediaError::truncated(F, format!("segment 0x{marker:02X} runs past the end")));
                };
                let whole = &input[pos - 2..end];
                let is_app = (0xE0..=0xEF).contains(&marker) || marker == 0xFE;
                if !is_app && (0xF0..=0xFD).contains(&marker) && !matches!(marker, 0xF7 | 0xF8) {
                    report.remove(format!("JPG{} extension segment", marker - 0xF0), whole.len() as u64);
                    pos = end;
                    continue;
                }
                // The minimal Exif goes after the APPn block, before the frame tables.
                if !is_app && !wrote_orientation {
                    if let Some(o) = orientation.filter(|&o| o != 1) {
                        out.extend_from_slice(&minimal_exif(o));
                        report.kept.push(format!("Orientation {o}, as a minimal Exif"));
                    }
                    wrote_orientation = true;
                }
                match marker {
                    0xE0 if payload.starts_with(b"JFIF\0") && payload.len() >= 14 && !saw_jfif => {
                        saw_jfif = true;
                        keep_jfif(payload, &mut out, report);
                    }
                    // libjpeg reads every copy and keeps the last one's fields; exiftool
                    // prints them all. The first one stays, alone.
                    0xE0 if payload.starts_with(b"JFIF\0") && saw_jfif => {
                        report.remove("a second APP0 JFIF", whole.len() as u64);
                    }
                    0xE1 if payload.starts_with(b"Exif\0\0") && !saw_exif => {
                        saw_exif = true;
                        orientation = exif_orientation(payload);
                        // Our own minimal Exif reads as kept on the verification pass.
                        if orientation.is_none_or(|o| whole != minimal_exif(o).as_slice()) {
                            report.remove("APP1 Exif", whole.len() as u64);
                        }
                    }
                    0xE2 if payload.starts_with(b"ICC_PROFILE\0") && payload.len() >= 14 => {
                        icc.push((out.len(), out.len() + 18, out.len() + whole.len(), payload[12], payload[13]));
                        out.extend_from_slice(whole);
                    }
                    0xEE if payload.starts_with(b"Adobe") => {
                        keep_adobe(payload, &mut adobe_transform, &mut out, report)?
                    }
                    0xE0..=0xEF | 0xFE => report.remove(app_name(marker, payload), whole.len() as u64),
                    0xC8 => return Err(MediaError::malformed(F, "reserved JPG marker 0xFFC8")),
                    0xDA => {
                        if !saw_frame {
                            return Err(MediaError::malformed(F, "scan before any frame header"));
                        }
                        exact_length(marker, payload)?;
                        saw_scan = true;
                        out.extend_from_slice(whole);
                        let data_end = scan_end(input, end)?;
                        out.extend_from_slice(&input[end..data_end]);
                        pos = data_end;
                        continue;
                    }
                    // Hierarchical frames and their DHP/EXP, JPEG-LS frames (SOF55) and
                    // its parameters (LSE): libjpeg refuses them all, so the instance
                    // could not show the image, and pavise cannot tell what their data holds.
                    0xC5..=0xC7 | 0xCD..=0xCF | 0xDE | 0xDF | 0xF7 | 0xF8 => {
                        return Err(MediaError::Unsupported(
                            "hierarchical and JPEG-LS JPEG files (no decoder the instance uses reads them)",
                        ));
                    }
                    0xC0..=0xCF if !matches!(marker, 0xC4 | 0xCC) => {
                        saw_frame = true;
                        exact_length(marker, payload)?;
                        out.extend_from_slice(whole);
                    }
                    0xC4 | 0xCC | 0xDB..=0xDD => {
                        exact_length(marker, payload)?;
                        out.extend_from_slice(whole);
                    }
                    other => {
                        return Err(MediaError::malformed(F, format!("unknown marker 0xFF{other:02X}")));
                    }
                }
                pos = end;
            }
        }
    }
    scrub_icc(&mut out, &icc, report);
    Ok(out)
}

/// Blanks what is not colour in the ICC profile the APP2 chunks carry, where it lies; an
/// incomplete or unreadable profile is dropped whole.
fn scrub_icc(out: &mut Vec<u8>, chunks: &[(usize, usize, usize, u8, u8)], report: &mut Report) {
    if chunks.is_empty() {
        return;
    }
    let n = chunks.len();
    let mut order: Vec<&(usize, usize, usize, u8, u8)> = chunks.iter().collect();
    order.sort_by_key(|c| c.3);
    let complete = order.iter().enumerate().all(|(i, c)| usize::from(c.3) == i + 1 && usize::from(c.4) == n);
    let mut profile = Vec::with_capacity(order.iter().map(|c| c.2 - c.1).sum());
    for c in &order {
        profile.extend_from_slice(&out[c.1..c.2]);
    }
    let blanked = if complete { super::icc::blank(&mut profile).map_err(|e| e.0) } else { Err("incomplete chunks") };
    let changed = match blanked {
        Ok(changed) => changed,
        Err(why) => {
            let bytes: usize = chunks.iter().map(|c| c.2 - c.0).sum();
            for c in chunks.iter().rev() {
                out.drain(c.0..c.2);
            }
            report.remove(format!("APP2 ICC_PROFILE ({why})"), bytes as u64);
            return;
        }
    };
    let mut at = 0;
    for c in order {
        let len = c.2 - c.1;
        out[c.1..c.2].copy_from_slice(&profile[at..at + len]);
        at += len;
    }
    if changed > 0 {
        report.remove("ICC profile device, description and text tags", changed);
    }
}

/// The length libjpeg insists on for a frame, scan or table segment: anything more would
/// be bytes no decoder reads, riding along in a kept segment.
fn exact_length(marker: u8, p: &[u8]) -> Result<(), MediaError> {
    let bad = || MediaError::malformed(F, format!("segment 0xFF{marker:02X} is not as long as its fields"));
    let ok = match marker {
        // SOFn: P, Y, X, Nf, then 3 bytes a component; DHP has the same layout.
        0xC0..=0xCF | 0xDE if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
            p.get(5).is_some_and(|&nf| p.len() == 6 + 3 * usize::from(nf))
        }
        // SOS: Ns, 2 bytes a component, Ss, Se, Ah/Al.
        0xDA => p.first().is_some_and(|&ns| p.len() == 1 + 2 * usize::from(ns) + 3),
        // DQT: tables of 1 + 64 (8-bit) or 1 + 128 (16-bit) bytes.
        0xDB => {
            let mut i = 0;
            while i < p.len() {
                i += 1 + if p[i] >> 4 == 0 { 64 } else { 128 };
            }
            i == p.len() && !p.is_empty()
        }
        // DHT: tables of 1 + 16 counts + as many values.
        0xC4 => {
            let mut i = 0;
            while i < p.len() {
                let counts = p.get(i + 1..i + 17).ok_or_else(bad)?;
                i += 17 + counts.iter().map(|&c| usize::from(c)).sum::<usize>();
            }
            i == p.len() && !p.is_empty()
        }
        // DAC: 2 bytes a table.
        0xCC => !p.is_empty() && p.len().is_multiple_of(2),
        // DNL, DRI: 2 bytes; EXP: 1.
        0xDC | 0xDD => p.len() == 2,
        0xDF => p.len() == 1,
        _ => true,
    };
    if ok { Ok(()) } else { Err(bad()) }
}

/// APP0 JFIF without its thumbnail (X/Y thumbnail sizes set to 0), of version 1.00 to
/// 1.02 (any other is written as 1.02: libjpeg warns on it, exiftool prints it) and with
/// a density unit of the three defined (any other reads as an aspect ratio of 1:1).
fn keep_jfif(payload: &[u8], out: &mut Vec<u8>, report: &mut Report) {
    let mut fields = payload[..14].to_vec();
    if fields[5] != 1 || fields[6] > 2 {
        fields[5..7].copy_from_slice(&[1, 2]);
    }
    if fields[7] > 2 {
        fields[7..12].copy_from_slice(&[0, 0, 1, 0, 1]);
    }
    fields[12..14].copy_from_slice(&[0, 0]);
    out.extend_from_slice(&[0xFF, 0xE0, 0, 16]);
    out.extend_from_slice(&fields);
    if payload.len() > 14 || payload[12..14] != [0, 0] {
        report.remove("JFIF thumbnail", (payload.len() - 12) as u64);
    }
    if payload[5..12] != fields[5..12] {
        report.remove("JFIF version or density unit of no specification", 7);
    }
}

/// APP14 `Adobe`: the 12 bytes of its fields and nothing more. libjpeg reads only the
/// colour transform (0 to 2), so the version is written as 100 and both flag words as 0
/// (exiftool prints them as DCTEncodeVersion, APP14Flags0/1). libjpeg takes the last of
/// several copies and exiftool prints each: one stays, a repeat with the same transform
/// is dropped and one with another transform is refused, as decoders then disagree.
fn keep_adobe(payload: &[u8], kept: &mut Option<u8>, out: &mut Vec<u8>, report: &mut Report) -> Result<(), MediaError> {
    let transform = *payload.get(11).ok_or_else(|| MediaError::malformed(F, "a short APP14 Adobe segment"))?;
    if transform > 2 {
        return Err(MediaError::malformed(
            F,
            format!("APP14 Adobe colour transform {transform}, which no decoder knows"),
        ));
    }
    match *kept {
        Some(first) if first == transform => {
            report.remove("a second APP14 Adobe", payload.len() as u64 + 4);
            return Ok(());
        }
        Some(_) => {
            return Err(MediaError::malformed(F, "two APP14 Adobe segments with different colour transforms"));
        }
        None => *kept = Some(transform),
    }
    let fields = [&b"Adobe"[..], &[0, 100, 0, 0, 0, 0, transform]].concat();
    out.extend_from_slice(&[0xFF, 0xEE, 0, 14]);
    out.extend_from_slice(&fields);
    if payload.len() > 12 {
        report.remove("bytes after APP14 Adobe's fields", (payload.len() - 12) as u64);
    }
    if payload[5..11] != fields[5..11] {
        report.remove("APP14 Adobe version and flags", 6);
    }
    Ok(())
}

fn app_name(marker: u8, payload: &[u8]) -> String {
    if marker == 0xFE {
        return "COM comment".into();
    }
    let id: String = payload
        .iter()
        .take(16)
        .take_while(|&&c| c != 0)
        .map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' })
        .collect();
    let n = marker - 0xE0;
    if id.is_empty() { format!("APP{n}") } else { format!("APP{n} {id}") }
}

/// End of the entropy-coded data that starts at `pos`: the next marker that is neither
/// stuffing (FF00) nor a restart (FFD0-D7). Refuses when the data runs off the end.
fn scan_end(input: &[u8], mut pos: usize) -> Result<usize, MediaError> {
    loop {
        let rest = input.get(pos..).unwrap_or_default();
        // SIMD: the entropy-coded data is most of a photo, and this reads all of it.
        let Some(i) = memchr::memchr(0xFF, rest) else {
            return Err(MediaError::truncated(F, "the image data ends before the end-of-image marker"));
        };
        let at = pos + i;
        let mut next = at + 1;
        while input.get(next) == Some(&0xFF) {
            next += 1;
        }
        match input.get(next) {
            None => return Err(MediaError::truncated(F, "the image data ends before the end-of-image marker")),
            Some(0x00) | Some(0xD0..=0xD7) => pos = next + 1,
            Some(_) => return Ok(next - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(segments: &[&[u8]], trailer: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        for s in segments {
            v.extend_from_slice(s);
        }
        // SOF0 (length 11, 1 component), SOS (length 8), 3 bytes of scan data, EOI.
        v.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        v.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0xFF, 0x00, 0x34]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v.extend_from_slice(trailer);
        v
    }

    fn seg(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    #[test]
    fn drops_app1_app13_com_and_trailer_keeps_icc_and_orientation() {
        let exif = {
            let mut p = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
            p.extend_from_slice(&[2, 0]);
            p.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
            p.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 0x40, 0, 0, 0]);
            p.extend_from_slice(&[0, 0, 0, 0]);
            p
        };
        // A device profile over two APP2 chunks (sent out of order, as the spec allows).
        let profile = crate::privacy::media::icc::sample_profile();
        let (a, b) = profile.split_at(200);
        let chunk = |seq: u8, data: &[u8]| seg(0xE2, &[&b"ICC_PROFILE\0"[..], &[seq, 2], data].concat());
        let input = tiny(
            &[
                &seg(0xE1, &exif),
                &seg(0xED, b"Photoshop 3.0\0IPTC City"),
                &seg(0xFE, b"hello"),
                &chunk(2, b),
                &chunk(1, a),
                &seg(0xEE, b"Adobe\0\x64\0\0\0\0\x01PaviseCam"),
            ],
            b"SamsungLocationName",
        );
        let mut r = Report::default();
        let out = scrub(&input, &mut r).unwrap();
        let mut blanked = profile.clone();
        crate::privacy::media::icc::blank(&mut blanked).unwrap();
        assert!(out.windows(blanked.len() - 200).any(|w| w == &blanked[200..]), "the profile is kept, blanked");
        assert!(!out.windows(9).any(|w| w == b"PaviseCam"), "no device name in the ICC or APP14");
        assert!(out.windows(16).any(|w| w == b"\xFF\xEE\0\x0eAdobe\0\x64\0\0\0\0\x01"));
        assert!(out.windows(minimal_exif(6).len()).any(|w| w == minimal_exif(6).as_slice()));
        assert!(!out.windows(4).any(|w| w == b"IPTC"));
        assert!(!out.ends_with(b"SamsungLocationName"));
        assert_eq!(r.removed.len(), 6, "{r:?}");
        let mut again = Report::default();
        assert_eq!(scrub(&out, &mut again).unwrap(), out);
        assert!(again.removed.is_empty(), "{again:?}");
    }

    #[test]
    fn a_broken_profile_is_dropped_and_segments_must_be_as_long_as_their_fields() {
        let input = tiny(&[&seg(0xE2, b"ICC_PROFILE\0\x01\x02only the first of two")], b"");
        let mut r = Report::default();
        let out = scrub(&input, &mut r).unwrap();
        assert!(!out.windows(11).any(|w| w == b"ICC_PROFILE"));
        assert!(r.removed[0].what.contains("incomplete"), "{r:?}");
        // A DQT with a table and then hidden bytes, a DRI of 4 bytes: libjpeg refuses both.
        let mut dqt = vec![0u8; 65];
        dqt.extend_from_slice(b"48.8584");
        for bad in [seg(0xDB, &dqt), seg(0xDD, &[0, 1, 2, 3])] {
            assert!(matches!(scrub(&tiny(&[&bad], b""), &mut Report::default()), Err(MediaError::Malformed { .. })));
        }
        assert!(scrub(&tiny(&[&seg(0xDB, &[0u8; 65]), &seg(0xDD, &[0, 1])], b""), &mut Report::default()).is_ok());
    }

    /// Red team pass 7, J2: an LSE (FFF8) or SOF55 (FFF7) segment was kept unread, any
    /// length, though libjpeg refuses the file. JPEG-LS and hierarchical frames (SOF5-7,
    /// SOF13-15, DHP, EXP) are refused; the frames libjpeg decodes still pass.
    #[test]
    fn jpeg_ls_and_hierarchical_jpeg_are_refused() {
        let with_frame = |sof: u8| {
            let mut file = tiny(&[], b"");
            file[3] = sof;
            file
        };
        for sof in [0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB] {
            assert!(scrub(&with_frame(sof), &mut Report::default()).is_ok(), "SOF 0x{sof:02X}");
        }
        for sof in [0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF, 0xF7] {
            let err = scrub(&with_frame(sof), &mut Report::default()).unwrap_err();
            assert_eq!(err.reason(), "unsupported", "SOF 0x{sof:02X}: {err}");
        }
        for marker in [0xF8, 0xF7, 0xDE, 0xDF] {
            let file = tiny(&[&seg(marker, b"LEAKMARK GPS 48.8584N 2.2945E")], b"");
            let err = scrub(&file, &mut Report::default()).unwrap_err();
            assert_eq!(err.reason(), "unsupported", "0xFF{marker:02X}: {err}");
        }
    }

    /// Red team pass 7, J1: every APP0 JFIF and APP14 Adobe was kept, 7 sender-chosen
    /// bytes each (exiftool `-a` printed five JFIF versions of "LEAKMARK"). One of each
    /// stays, with a defined version, unit and transform; Adobe's version and flags are
    /// fixed; a repeat goes, and an Adobe of another transform is refused.
    #[test]
    fn one_jfif_and_one_adobe_stay_with_only_their_fields() {
        let jfif = seg(0xE0, b"JFIF\0LEAKMAR\0\0");
        let adobe = seg(0xEE, b"AdobeLEAKMA\x01");
        let input = tiny(&[&jfif, &jfif, &seg(0xE0, b"JFIF\0\x01\x01\x01\0\x48\0\x48\0\0"), &adobe, &adobe], b"");
        let mut r = Report::default();
        let out = scrub(&input, &mut r).unwrap();
        let count = |needle: &[u8]| out.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"JFIF\0"), 1, "{r:?}");
        assert_eq!(count(b"Adobe"), 1, "{r:?}");
        assert_eq!(count(b"JFIF\0\x01\x02\0\0\x01\0\x01\0\0"), 1, "{r:?}");
        assert_eq!(count(b"Adobe\0\x64\0\0\0\0\x01"), 1, "{r:?}");
        assert_eq!(count(b"LEAK"), 0, "{r:?}");
        let mut again = Report::default();
        assert_eq!(scrub(&out, &mut again).unwrap(), out);
        assert!(again.removed.is_empty(), "{again:?}");
        // A real camera's JFIF (1.01, dots per inch, 72x72) stays as it is.
        let camera = seg(0xE0, b"JFIF\0\x01\x01\x01\0\x48\0\x48\0\0");
        let out = scrub(&tiny(&[&camera], b""), &mut Report::default()).unwrap();
        assert!(out.windows(camera.len()).any(|w| w == camera));

        for bad in
            [[adobe.clone(), seg(0xEE, b"Adobe\0\x64\0\0\0\0\x02")].concat(), seg(0xEE, b"Adobe\0\x64\0\0\0\0\x07")]
        {
            assert!(matches!(scrub(&tiny(&[&bad], b""), &mut Report::default()), Err(MediaError::Malformed { .. })));
        }
    }

    #[test]
    fn refuses_truncation() {
        let input = tiny(&[], b"");
        for cut in [3, 10, input.len() - 2, input.len() - 6] {
            assert!(scrub(&input[..cut], &mut Report::default()).is_err(), "cut at {cut}");
        }
    }
}
