//! Media formats pavise recognises but does not scrub, so it refuses them wherever they
//! appear (a part, a `data:` URI, a raw body), whatever the request says they are.
//!
//! Why a list at all, when a multipart part or a `data:` URI that is neither scrubbed
//! media nor text is refused anyway ([`super::text`])? Three reasons: a raw body is only
//! judged as media when its first bytes say so; some formats start with text (`#!AMR`,
//! `YUV4MPEG2`) and would otherwise get as far as the text check; and the member is told
//! what the file was ("ASF (WMA/WMV) files are not accepted"), not just "unknown".
//!
//! The list is what the instance's decoders take by content: ffmpeg (Mastodon's audio and
//! video path; it lists `video/x-ms-asf` among its audio types and copies container tags
//! into the stored MP3), ImageMagick and libvips (images). Signatures are checked on the
//! first bytes only; each is specific enough that no text matches it (every one holds a
//! byte below 0x20 or a fixed binary marker), except the few whose text start is
//! followed by more structure checked here.

use super::{be32, le32};

/// A byte no text holds (see [`super::text`]): a control byte but the line breaks, tab,
/// form feed and escape (in any charset). Signatures that start with
/// printable bytes also ask for one of these where their binary header follows, so no
/// caption that happens to start with `FORM`, `MAC ` or `G` is taken for a file.
fn binary_byte(x: u8) -> bool {
    (x < 0x20 && !matches!(x, b'\t' | b'\n' | 0x0C | b'\r' | 0x1B)) || x == 0x7F
}

fn has_binary(b: &[u8], from: usize, to: usize) -> bool {
    b.get(from..to.min(b.len())).is_some_and(|s| s.iter().copied().any(binary_byte))
}

/// The format `b` starts as, when it is one pavise will not take.
pub fn sniff(b: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| b.starts_with(magic);
    // `magic`, then a binary header within `n` bytes after it.
    let then_binary = |magic: &[u8], n: usize| starts(magic) && has_binary(b, magic.len(), magic.len() + n);
    // Images.
    if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        return Some("TIFF (and camera raw)");
    }
    if starts(b"IIU\0") || ["IIRO", "IIRS", "MMOR"].iter().any(|m| then_binary(m.as_bytes(), 4)) {
        return Some("camera raw");
    }
    if then_binary(b"FUJIFILMCCD-RAW", 64) {
        return Some("camera raw");
    }
    if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    if starts(b"\0\0\0\x0cjP  \r\n\x87\n") || starts(&[0xFF, 0x4F, 0xFF, 0x51]) {
        return Some("JPEG 2000");
    }
    if then_binary(b"8BPS", 2) {
        return Some("Photoshop (PSD)");
    }
    if starts(b"BM") && b.get(6..10) == Some(&[0, 0, 0, 0]) {
        return Some("BMP");
    }
    if (starts(&[0, 0, 1, 0]) || starts(&[0, 0, 2, 0])) && b.get(4).is_some_and(|&n| n > 0) && b.get(5) == Some(&0) {
        return Some("ICO/CUR");
    }
    if starts(b"\x8aMNG\r\n\x1a\n") || starts(b"\x8bJNG\r\n\x1a\n") {
        return Some("MNG/JNG");
    }
    if starts(b"BPG\xfb") {
        return Some("BPG");
    }
    if starts(&[0x76, 0x2F, 0x31, 0x01]) {
        return Some("OpenEXR");
    }
    let emf = starts(&[1, 0, 0, 0]) && b.get(40..44) == Some(b" EMF");
    if starts(&[0xC5, 0xD0, 0xD3, 0xC6]) || starts(&[0xD7, 0xCD, 0xC6, 0x9A]) || emf {
        return Some("EPS/WMF/EMF");
    }
    if then_binary(b"AT&TFORM", 4) {
        return Some("DjVu");
    }
    if b.get(128..132) == Some(b"DICM") && has_binary(b, 0, 128) {
        return Some("DICOM");
    }
    if then_binary(b"gimp xcf", 8) {
        return Some("GIMP XCF");
    }
    // Containers and audio.
    if starts(&[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, 0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62, 0xCE, 0x6C]) {
        return Some("ASF (WMA/WMV)");
    }
    if then_binary(b"FORM", 4) && b.get(8..12).is_some_and(is_iff_type) {
        return Some("IFF/AIFF");
    }
    if then_binary(b".snd", 4) {
        return Some("Sun AU");
    }
    let riff = |m: &str| starts(m.as_bytes()) && (has_binary(b, 4, 8) || b.get(4..8) == Some(&[0xFF; 4]));
    if ["RIFF", "RIFX", "RF64", "BW64"].into_iter().any(riff) && b.len() >= 12 {
        // WebP and plain WAV are scrubbed (and sniffed before this); every other RIFF
        // (AVI, RMID, CDXA, ...) is not.
        return match b.get(8..12) {
            Some(b"AVI ") => Some("AVI"),
            Some(b"WAVE") => Some("RF64/BW64 WAV"),
            _ => Some("this RIFF format"),
        };
    }
    if starts(&[0, 0, 1]) && b.get(3).is_some_and(|&s| s >= 0xB0) {
        return Some("MPEG program/elementary stream");
    }
    if starts(&[0, 0, 0, 1]) {
        return Some("raw H.264/HEVC stream");
    }
    let ts = |first: usize| {
        b.get(first) == Some(&0x47) && b.get(first + 188) == Some(&0x47) && has_binary(b, first, first + 188)
    };
    if ts(0) || ts(4) {
        return Some("MPEG transport stream");
    }
    if starts(b"FLV\x01") {
        return Some("FLV");
    }
    if ["FWS", "CWS", "ZWS"].iter().any(|m| then_binary(m.as_bytes(), 5)) {
        return Some("Flash (SWF)");
    }
    if starts(&[0x06, 0x0E, 0x2B, 0x34, 0x02, 0x05, 0x01, 0x01]) {
        return Some("MXF");
    }
    if then_binary(b".RMF", 4) {
        return Some("RealMedia");
    }
    if then_binary(b"caff", 2) {
        return Some("Core Audio (CAF)");
    }
    if starts(b"#!AMR\n") || starts(b"#!AMR-WB\n") || starts(b"#!SILK") {
        return Some("AMR");
    }
    if starts(b"MThd") && be32(b, 4) == Some(6) {
        return Some("MIDI");
    }
    if ["wvpk", "MAC ", "MPCK", "MP+", "TTA1", "OFR "].iter().any(|m| then_binary(m.as_bytes(), 8)) {
        return Some("this lossless audio format");
    }
    if starts(&[0x0B, 0x77]) || starts(&[0x7F, 0xFE, 0x80, 0x01]) {
        return Some("AC-3/DTS");
    }
    // AAC in ADTS frames: sync, layer 0, which an MPEG audio frame never has.
    if b.len() >= 7 && b[0] == 0xFF && b[1] & 0xF6 == 0xF0 {
        return Some("AAC (ADTS)");
    }
    if starts(b"DKIF") && le32(b, 4).is_some_and(|v| v & 0xFFFF == 0) {
        return Some("IVF");
    }
    if starts(b"YUV4MPEG2 ") {
        return Some("YUV4MPEG");
    }
    if starts(b"nut/multimedia container\0") {
        return Some("NUT");
    }
    None
}

/// IFF form types ffmpeg, ImageMagick or libvips read: AIFF audio, 8SVX, ILBM pictures, ...
fn is_iff_type(t: &[u8]) -> bool {
    matches!(
        t,
        b"AIFF"
            | b"AIFC"
            | b"8SVX"
            | b"16SV"
            | b"ILBM"
            | b"PBM "
            | b"ACBM"
            | b"ANIM"
            | b"DJVU"
            | b"DJVM"
            | b"MAUD"
            | b"DSD "
            | b"RGBN"
            | b"RGB8"
            | b"DEEP"
            | b"YUVN"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signature_is_recognised_and_text_is_not() {
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        let asf = [0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, 0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62, 0xCE, 0x6C, 0];
        for (bytes, name) in [
            (&asf[..], "ASF (WMA/WMV)"),
            (b"FORM\0\0\x10\0AIFFCOMM", "IFF/AIFF"),
            (b".snd\0\0\0\x18\0\0\0\0", "Sun AU"),
            (b"RIFF\0\0\0\0AVI LIST", "AVI"),
            (b"RIFF\0\0\0\0RMIDdata", "this RIFF format"),
            (b"RF64\xff\xff\xff\xffWAVEds64", "RF64/BW64 WAV"),
            (&[0, 0, 1, 0xBA, 0x44], "MPEG program/elementary stream"),
            (&ts[..], "MPEG transport stream"),
            (b"FLV\x01\x05\0\0\0\x09", "FLV"),
            (b"II*\0\x08\0\0\0", "TIFF (and camera raw)"),
            (b"BM\x36\0\0\0\0\0\0\0\x36\0\0\0", "BMP"),
            (&[0, 0, 1, 0, 1, 0, 16, 16], "ICO/CUR"),
            (b"8BPS\0\x01", "Photoshop (PSD)"),
            (b"\0\0\0\x0cJXL \r\n\x87\n", "JPEG XL"),
            (b"\0\0\0\x0cjP  \r\n\x87\n", "JPEG 2000"),
            (&[0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC], "AAC (ADTS)"),
            (b"#!AMR\n\x3c", "AMR"),
            (b"MAC \x96\x0f\0\0", "this lossless audio format"),
            (b"FWS\x0a\x10\x20\0\0", "Flash (SWF)"),
            (b"caff\0\x01\0\0", "Core Audio (CAF)"),
        ] {
            assert_eq!(sniff(bytes), Some(name), "{name}");
        }
        let long_g = format!("G{}G and more", "reat photo, ".repeat(20));
        for text in [
            &b"FORM 1040 was filed"[..],
            b"FORM\n\n\n\nAIFF",
            b"BMW drivers",
            b"RIFFS are great and WAVE",
            b"RIFF\r\n\r\nAVI ",
            b".snd file",
            b"G",
            long_g.as_bytes(),
            b"MAC address 00:11",
            b"FWS 10 ok",
            b"caff\xc3\xa9 au lait",
            b"#!AMR is a codec",
            b"{\"json\": 1}",
        ] {
            assert_eq!(sniff(text), None, "{}", String::from_utf8_lossy(text));
        }
    }
}
