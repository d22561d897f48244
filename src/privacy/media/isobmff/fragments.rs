//! Fragmented MP4 (`moof`/`traf`/`trun`, ISO 14496-12 §8.8): where each fragment's
//! samples lie, so that `mdat` bytes no run points at can be zeroed as in a plain file
//! ([`super::unreferenced`]) and the samples of H.264, HEVC and AV1 tracks walked
//! ([`super::coded`]).
//!
//! Read as ffmpeg reads it: a run starts at the track fragment's base (`tfhd`'s
//! explicit base, the `moof` with default-base-is-moof, else where the previous run of
//! this `moof` ended, or the `moof` itself) plus the run's data offset; sample sizes come
//! from the run, else `tfhd`, else the movie's `trex`. Where readers disagree (a second
//! run in a track fragment without a data offset: the specification continues after the
//! previous run, ffmpeg starts again at the base) or a fragment cannot be read with
//! certainty (no `tfhd`, a track the movie does not declare, a run past its box, no
//! sample size anywhere), the file is refused: its samples could not be found for sure.

use std::collections::HashMap;

use super::{
    BoxAt, Format, MediaError, be32, be64, children,
    coded::{Coded, Sample, codec_of},
    unreferenced::DataMap,
};
use crate::privacy::media::bitstream::Codec;

/// What a fragment needs to know of a track of the movie.
#[derive(Debug, Default, Clone)]
pub(super) struct Track {
    /// Whether the movie has a `trak` of this ID (a `trex` alone does not declare one).
    pub(super) declared: bool,
    /// The codec of each sample description (`None`: samples not walked).
    pub(super) codecs: Vec<Option<Codec>>,
    /// `trex` defaults: sample description index and sample size.
    pub(super) default_sdi: u32,
    pub(super) default_size: Option<u32>,
}

/// The movie's tracks by track ID.
pub(super) type Tracks = HashMap<u32, Track>;

/// Reads a `trex` (in `mvex`) into the track it names.
/// Returns false for a second `trex` of one track: ffmpeg takes the first, and a
/// different default sample size would cut every run differently.
pub(super) fn read_trex(p: &[u8], tracks: &mut Tracks) -> bool {
    if let (Some(id), Some(sdi), Some(size)) = (be32(p, 4), be32(p, 8), be32(p, 16)) {
        let track = tracks.entry(id).or_default();
        if track.default_size.is_some() {
            return false;
        }
        track.default_sdi = sdi;
        track.default_size = Some(size);
    }
    true
}

/// Maps the samples of one `moof` (whose bytes are `buf`).
pub(super) fn map_moof(
    buf: &[u8],
    moof: &BoxAt,
    format: Format,
    tracks: &Tracks,
    file_len: u64,
    map: &mut DataMap,
    coded: &mut Coded,
) -> Result<(), MediaError> {
    let bad = |what: &str| MediaError::malformed(format, format!("the movie fragment at byte {}: {what}", moof.start));
    let base = moof.start;
    let slice = |b: &BoxAt| buf.get((b.payload - base) as usize..(b.end - base) as usize).unwrap_or_default();
    let kids = children(buf, base, (moof.payload - base) as usize, buf.len(), format)?;
    let mut implicit = moof.start;
    for traf in kids.iter().filter(|k| &k.kind == b"traf") {
        let parts = children(buf, base, (traf.payload - base) as usize, (traf.end - base) as usize, format)?;
        let mut tfhds = parts.iter().filter(|k| &k.kind == b"tfhd");
        let (Some(tfhd), None) = (tfhds.next(), tfhds.next()) else {
            return Err(bad("a track fragment without exactly one header (tfhd)"));
        };
        let p = slice(tfhd);
        let flags = be32(p, 0).ok_or_else(|| bad("a short tfhd"))? & 0x00FF_FFFF;
        let id = be32(p, 4).ok_or_else(|| bad("a short tfhd"))?;
        let track = tracks
            .get(&id)
            .filter(|t| t.declared)
            .ok_or_else(|| bad(&format!("a fragment of track {id}, which the movie does not declare")))?;
        let mut at = 8;
        let mut field = |present: bool, len: usize| -> Result<Option<u64>, MediaError> {
            if !present {
                return Ok(None);
            }
            let v = if len == 8 { be64(p, at) } else { be32(p, at).map(u64::from) };
            at += len;
            v.map(Some).ok_or_else(|| bad("a short tfhd"))
        };
        let explicit = field(flags & 0x1 != 0, 8)?;
        let sdi = field(flags & 0x2 != 0, 4)?.map_or(track.default_sdi, |v| v as u32);
        field(flags & 0x8 != 0, 4)?;
        let default_size = field(flags & 0x10 != 0, 4)?.map(|v| v as u32).or(track.default_size);
        let start = match explicit {
            Some(b) => b,
            None if flags & 0x2_0000 != 0 => moof.start,
            None => implicit,
        };
        let codec = codec_of(&track.codecs, sdi, format)?;
        for (i, trun) in parts.iter().filter(|k| &k.kind == b"trun").enumerate() {
            let q = slice(trun);
            let tf = be32(q, 0).ok_or_else(|| bad("a short trun"))? & 0x00FF_FFFF;
            let count = u64::from(be32(q, 4).ok_or_else(|| bad("a short trun"))?);
            let mut pos = 8usize;
            let data_offset = if tf & 0x1 != 0 {
                pos += 4;
                i64::from(be32(q, 8).ok_or_else(|| bad("a short trun"))? as i32)
            } else if i == 0 {
                0
            } else {
                return Err(bad("a second run without a data offset (readers disagree where its samples are)"));
            };
            if tf & 0x4 != 0 {
                pos += 4;
            }
            let per = 4 * (tf & 0xF00).count_ones() as usize;
            if (q.len().saturating_sub(pos) as u64) < count.saturating_mul(per as u64) {
                return Err(bad("a run longer than its box"));
            }
            let from =
                start.checked_add_signed(data_offset).ok_or_else(|| bad("a run before the start of the file"))?;
            let size_at = pos + if tf & 0x100 != 0 { 4 } else { 0 };
            let size_of = |j: u64| -> Result<u64, MediaError> {
                if tf & 0x200 != 0 {
                    Ok(u64::from(be32(q, size_at + j as usize * per).ok_or_else(|| bad("a short trun"))?))
                } else {
                    default_size.map(u64::from).ok_or_else(|| bad("samples of no stated size"))
                }
            };
            let mut off = from;
            if tf & 0x200 == 0 && (codec.is_none() || size_of(0)? == 0) {
                // One size for every sample and nothing to walk: the run in one step.
                off = count
                    .checked_mul(size_of(0)?)
                    .and_then(|n| from.checked_add(n))
                    .ok_or_else(|| bad("a run larger than the file"))?;
            } else {
                for j in 0..count {
                    let len = size_of(j)?;
                    if let Some(codec) = codec {
                        coded.push(Sample { off, len, codec }, format)?;
                    }
                    off = off.checked_add(len).ok_or_else(|| bad("a run larger than the file"))?;
                    if off > file_len {
                        return Err(bad("a run past the end of the file"));
                    }
                }
            }
            if off > file_len {
                return Err(bad("a run past the end of the file"));
            }
            map.chunk(from, off - from);
            implicit = off;
        }
    }
    Ok(())
}
