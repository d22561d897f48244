//! Metadata inside the coded video itself. A container's tags are not the only place a
//! recording says where and when it was made: H.264 and HEVC carry SEI messages
//! (supplemental enhancement information) in the samples and in the codec
//! configuration, and AV1 carries metadata OBUs. A drone writes its position there (MISB
//! ST 0604 KLV in a user-data SEI), a dashcam its `freeGPS` block, an encoder its version
//! string, and `pic_timing` / HEVC `time_code` SEI a wall-clock capture time. Mastodon's
//! passthrough (`-c:v copy -map_metadata -1`) removes container tags only, so such data
//! reaches the stored, publicly served file, and exiftool `-ee` decodes it.
//!
//! Both containers ([`super::isobmff`], [`super::matroska`]) hand each sample of an
//! H.264, HEVC or AV1 track, and its codec configuration (`avcC`, `hvcC`/`lhvC`,
//! `av1C`; Matroska's `CodecPrivate`), to [`scrub_sample`] and [`scrub_config`]. These
//! walk the units (length-prefixed NAL units, or OBUs) and return, for every unit a
//! decoder does not need, a [`Filler`] of exactly its length: the padding unit of the
//! codec (H.264 filler data, type 12; HEVC `FD_NUT`, 38; AV1 `OBU_PADDING`, 15). No byte
//! moves, so sample tables, `stco` and Matroska block sizes stay valid.
//!
//! Why every SEI and not only user data: SEI is by definition not needed to reconstruct
//! a picture (H.264 Annex D, H.265 Annex D), and the "structured" messages carry times
//! too (`pic_timing` clock timestamps, HEVC `time_code`, both a time of day). Parsing the
//! messages to keep some would mean reading RBSP with emulation prevention bytes, more
//! code for less safety. What is lost: HDR mastering SEI (usually repeated in the
//! sample description's `mdcv`/`clli`), interlaced `pic_timing`, and the recovery point
//! of intra-refresh streams (phones write IDR frames). Unspecified and reserved unit
//! types (Dolby Vision RPU, NAL 62/63, among them) go the same way: decoders ignore
//! them, so they can hold anything. An existing padding unit is rewritten to its canonical
//! content (0xFF…0x80, or zeros for AV1), since it too could carry anything.
//!
//! A sample that cannot be walked with certainty (a length running past the sample,
//! bytes left over that are not zero, a configuration ffmpeg would read as Annex B) is
//! an error: the file is refused, never forwarded half-scrubbed.
//!
//! Not covered: data hidden inside the slice data of a picture (steganography), and
//! the bitstreams of other codecs (MPEG-4 Part 2 user data, VP8/VP9, Motion JPEG).

pub mod av1;
pub mod h264;
pub mod hevc;

/// How a track's samples are coded, for the codecs walked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264/AVC: NAL units, each after a big-endian length of `length_size` bytes.
    H264 { length_size: u8 },
    /// HEVC (and its layered forms): the same, with two-byte NAL headers.
    Hevc { length_size: u8 },
    /// AV1: OBUs in the low-overhead format.
    Av1,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 { .. } => "H.264",
            Codec::Hevc { .. } => "HEVC",
            Codec::Av1 => "AV1",
        }
    }
}

/// Why a sample or configuration cannot be walked with certainty.
#[derive(Debug, thiserror::Error)]
#[error("{codec} {what}")]
pub struct Unwalkable {
    codec: &'static str,
    what: String,
}

impl Unwalkable {
    fn new(codec: &'static str, what: impl Into<String>) -> Unwalkable {
        Unwalkable { codec, what: what.into() }
    }
}

/// A unit to overwrite with padding of the same length: `head` (the new unit header,
/// and for AV1 the size field as it was), then `fill` bytes, then `last` as the final
/// byte (the RBSP trailing bits of a NAL unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filler {
    /// Offset of the unit in the sample or configuration (after any length prefix).
    pub at: usize,
    pub len: usize,
    head: Vec<u8>,
    fill: u8,
    last: Option<u8>,
    /// What the unit was, for the report.
    pub what: String,
}

impl Filler {
    /// The byte at position `i` of the padding unit.
    fn byte(&self, i: usize) -> u8 {
        match (self.head.get(i), self.last) {
            (Some(&b), _) => b,
            (None, Some(last)) if i + 1 == self.len => last,
            _ => self.fill,
        }
    }

    /// The padding unit's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.len).map(|i| self.byte(i)).collect()
    }

    /// Whether `unit` already is this padding.
    fn is(&self, unit: &[u8]) -> bool {
        unit.len() == self.len && unit.iter().enumerate().all(|(i, &b)| b == self.byte(i))
    }
}

/// The units of one sample that must become padding (only those that are not already
/// exactly that padding). Offsets are relative to `sample`.
pub fn scrub_sample(codec: Codec, sample: &[u8]) -> Result<Vec<Filler>, Unwalkable> {
    let mut out = Vec::new();
    match codec {
        Codec::H264 { length_size } => {
            for (at, len) in nal_units(sample, length_size, "H.264")? {
                out.extend(h264::padding(at, &sample[at..at + len], h264::in_samples)?);
            }
        }
        Codec::Hevc { length_size } => {
            for (at, len) in nal_units(sample, length_size, "HEVC")? {
                out.extend(hevc::padding(at, &sample[at..at + len], hevc::in_samples, true)?);
            }
        }
        Codec::Av1 => av1::obus(sample, 0, &mut out)?,
    }
    out.retain(|f| !f.is(&sample[f.at..f.at + f.len]));
    Ok(out)
}

/// What walking a codec configuration found.
#[derive(Debug)]
pub struct Config {
    /// The codec the samples are walked with (the NAL length size it declares).
    pub codec: Codec,
    /// Units of the configuration to overwrite (only those not already padding).
    pub fillers: Vec<Filler>,
    /// Where its defined fields end; bytes after this are read by no decoder.
    pub fields_len: usize,
}

/// Which configuration record a track declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// `avcC` (ISO 14496-15 AVCDecoderConfigurationRecord).
    Avc,
    /// `hvcC` (HEVCDecoderConfigurationRecord).
    Hevc,
    /// `lhvC` (LHEVCDecoderConfigurationRecord: MV-HEVC, layered HEVC).
    LayeredHevc,
    /// `av1C` (AV1CodecConfigurationRecord).
    Av1,
}

/// Walks a codec configuration record: NAL units that are not parameter sets, and AV1
/// metadata OBUs, become padding.
pub fn scrub_config(kind: ConfigKind, record: &[u8]) -> Result<Config, Unwalkable> {
    let mut config = match kind {
        ConfigKind::Avc => h264::config(record)?,
        ConfigKind::Hevc => hevc::config(record, false)?,
        ConfigKind::LayeredHevc => hevc::config(record, true)?,
        ConfigKind::Av1 => av1::config(record)?,
    };
    config.fillers.retain(|f| !f.is(&record[f.at..f.at + f.len]));
    Ok(config)
}

static START_CODE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\0\0\x01"));

/// The (offset, length) of each NAL unit of a length-prefixed sample. A zero length, a
/// length past the end, or bytes left over are refused, unless what is left is zeros
/// (padding some muxers leave, which carries nothing).
fn nal_units(sample: &[u8], length_size: u8, codec: &'static str) -> Result<Vec<(usize, usize)>, Unwalkable> {
    let n = usize::from(length_size);
    if !(1..=4).contains(&n) {
        return Err(Unwalkable::new(codec, format!("NAL length size {n}")));
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < sample.len() {
        if sample[at..].iter().all(|&b| b == 0) {
            break;
        }
        let prefix =
            sample.get(at..at + n).ok_or_else(|| Unwalkable::new(codec, "sample ends inside a NAL unit length"))?;
        let len = prefix.iter().fold(0usize, |v, &b| (v << 8) | usize::from(b));
        let start = at + n;
        if len == 0 {
            return Err(Unwalkable::new(codec, "sample has a NAL unit of length 0"));
        }
        if len > sample.len() - start {
            return Err(Unwalkable::new(
                codec,
                format!("NAL unit of {len} bytes runs past its sample ({} left)", sample.len() - start),
            ));
        }
        // A valid unit never holds `00 00 01` (emulation prevention escapes it), but
        // exiftool cuts each unit again at every start code inside it: an SEI hidden
        // after one in a slice or a delimiter pavise keeps would be read there.
        if START_CODE.find(&sample[start..start + len]).is_some() {
            return Err(Unwalkable::new(codec, "a NAL unit holds a start code (00 00 01) inside it"));
        }
        out.push((start, len));
        at = start + len;
    }
    Ok(out)
}

/// The NAL units of a configuration's parameter-set array: `count` entries of a 16-bit
/// length and the unit, from `at`. Returns each (offset, length) and where the array ends.
fn nal_array(
    record: &[u8],
    mut at: usize,
    count: usize,
    codec: &'static str,
) -> Result<(Vec<(usize, usize)>, usize), Unwalkable> {
    let mut out = Vec::new();
    for _ in 0..count {
        let len = record
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| Unwalkable::new(codec, "configuration ends inside a parameter-set array"))?;
        at += 2;
        if record.len() - at < len {
            return Err(Unwalkable::new(codec, "a NAL unit in the configuration runs past it"));
        }
        // A parameter set with a start code inside is read as two units once the
        // stream is carried as Annex B (an MPEG-TS copy): see [`nal_units`].
        if START_CODE.find(&record[at..at + len]).is_some() {
            return Err(Unwalkable::new(codec, "a NAL unit in the configuration holds a start code (00 00 01)"));
        }
        if len > 0 {
            out.push((at, len));
        }
        at += len;
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_are_walked_by_their_lengths_and_what_cannot_be_walked_is_refused() {
        let sample = [0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x06, 0, 0];
        assert_eq!(nal_units(&sample, 4, "H.264").unwrap(), [(4, 2), (10, 1)], "zeros after the last unit");
        assert!(nal_units(&[0, 0, 0, 9, 0x65], 4, "H.264").unwrap_err().to_string().contains("runs past"));
        assert!(nal_units(&[0, 0, 0, 0, 0x65], 4, "H.264").unwrap_err().to_string().contains("length 0"));
        assert!(nal_units(&[0, 1, 0x65, 0x01], 2, "H.264").unwrap_err().to_string().contains("inside"));
        assert!(nal_units(&sample, 5, "H.264").is_err());
        // Red team 15's N1: an access unit delimiter with a start code and an SEI in it.
        let hidden = [0, 0, 0, 7, 0x09, 0xF0, 0, 0, 1, 0x06, 0x05];
        assert!(nal_units(&hidden, 4, "H.264").unwrap_err().to_string().contains("start code"));
        // An escaped one (00 00 03 01) is how a valid unit carries those bytes.
        let escaped = [0, 0, 0, 6, 0x65, 0, 0, 3, 1, 0x80];
        assert_eq!(nal_units(&escaped, 4, "H.264").unwrap(), [(4, 6)]);
        // Red team 16's N4: the same inside a parameter set of a configuration.
        let record = [0, 6, 0x67, 0x64, 0, 0, 1, 0x06];
        assert!(nal_array(&record, 0, 1, "H.264").unwrap_err().to_string().contains("start code"));
        assert_eq!(nal_array(&[0, 3, 0x67, 0x64, 0x1F], 0, 1, "H.264").unwrap(), (vec![(2, 3)], 5));
    }

    #[test]
    fn a_filler_renders_head_fill_and_last_byte() {
        let f = Filler { at: 0, len: 5, head: vec![0x0C], fill: 0xFF, last: Some(0x80), what: String::new() };
        assert_eq!(f.bytes(), [0x0C, 0xFF, 0xFF, 0xFF, 0x80]);
        assert!(f.is(&[0x0C, 0xFF, 0xFF, 0xFF, 0x80]) && !f.is(&[0x0C, 0xFF, 0xFE, 0xFF, 0x80]));
        let one = Filler { len: 1, ..f };
        assert_eq!(one.bytes(), [0x0C], "a one-byte unit is only its header");
    }
}
