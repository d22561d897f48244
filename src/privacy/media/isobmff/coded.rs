//! The coded samples of H.264, HEVC and AV1 tracks, walked unit by unit
//! ([`crate::privacy::media::bitstream`]): an SEI NAL unit or AV1 metadata OBU inside a
//! sample is metadata every copy of the video keeps (Mastodon's passthrough copies the
//! stream), so it becomes padding of its own length where it lies.
//!
//! The samples come from the sample tables of `moov`, from every fragment's `trun`
//! ([`super::fragments`]) and from the extents of HEIF image items ([`item_codecs`]:
//! an HEIC tile is an HEVC sample too). A sample that does not lie inside an `mdat` (or cannot be
//! walked) refuses the file: rewriting it would patch the file's own structure, and
//! leaving it would forward it unchecked.

use std::collections::HashMap;

use super::{Action, BoxAt, Format, MediaError, Walk, sample_entry};
use crate::privacy::media::{
    be16, be32,
    bitstream::{self, Codec},
    inplace::Store,
};

/// Largest sample read to be walked; real video frames are kilobytes to a few MB.
const MAX_SAMPLE: u64 = 64 << 20;

/// Most samples walked in one file (three hours of 60 fps video is 650 000).
const MAX_SAMPLES: usize = 16 << 20;

/// One sample to walk: where it lies and how it is coded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) off: u64,
    pub(super) len: u64,
    pub(super) codec: Codec,
}

/// The samples of every walked track, collected while the boxes are planned.
#[derive(Debug, Default)]
pub(super) struct Coded {
    samples: Vec<Sample>,
}

impl Coded {
    pub(super) fn push(&mut self, sample: Sample, format: Format) -> Result<(), MediaError> {
        if self.samples.len() >= MAX_SAMPLES {
            return Err(MediaError::malformed(format, "more video samples than any real recording has"));
        }
        if sample.len > 0 {
            self.samples.push(sample);
        }
        Ok(())
    }

    /// Reads and walks every sample; each unit that must become padding is an action.
    pub(super) fn plan(
        mut self,
        store: &mut impl Store,
        format: Format,
        media_data: &[(u64, u64)],
        actions: &mut Vec<Action>,
    ) -> Result<(), MediaError> {
        self.samples.sort_unstable_by_key(|s| s.off);
        let mut buf = Vec::new();
        for s in &self.samples {
            let end =
                s.off.checked_add(s.len).ok_or_else(|| MediaError::malformed(format, "a sample size overflows"))?;
            if !media_data.iter().any(|&(from, to)| s.off >= from && end <= to) {
                return Err(MediaError::malformed(
                    format,
                    format!("a {} sample at byte {} lies outside the media data", s.codec.name(), s.off),
                ));
            }
            if s.len > MAX_SAMPLE {
                return Err(MediaError::malformed(format, format!("a video sample of {} bytes", s.len)));
            }
            buf.resize(s.len as usize, 0);
            store.read_at(s.off, &mut buf)?;
            let fillers = bitstream::scrub_sample(s.codec, &buf).map_err(|e| {
                MediaError::malformed(format, format!("the video sample at byte {} cannot be checked: {e}", s.off))
            })?;
            actions.extend(fillers.into_iter().map(|filler| Action::Fill { off: s.off + filler.at as u64, filler }));
        }
        Ok(())
    }
}

/// The codec of a sample whose description index is `sdi` (1-based), given each
/// description's codec. A track whose descriptions all agree needs no index.
pub(super) fn codec_of(codecs: &[Option<Codec>], sdi: u32, format: Format) -> Result<Option<Codec>, MediaError> {
    match codecs.first() {
        None => Ok(None),
        Some(first) if codecs.iter().all(|c| c == first) => Ok(*first),
        Some(_) => codecs.get((sdi as usize).wrapping_sub(1)).copied().ok_or_else(|| {
            MediaError::malformed(format, format!("samples of sample description {sdi}, which is not there"))
        }),
    }
}

/// The codec of each HEIF item with an `avcC`, `hvcC` or `av1C` property (by `ipma`).
pub(super) fn item_codecs(walk: Walk<'_>, iprp: &BoxAt) -> Result<HashMap<u32, Codec>, MediaError> {
    let bad = || MediaError::malformed(walk.format, "image metadata: unreadable ipma");
    let kids = walk.kids(iprp, 0)?;
    let Some(ipco) = kids.iter().find(|k| &k.kind == b"ipco") else { return Ok(HashMap::new()) };
    let props = walk.kids(ipco, 0)?;
    let mut out = HashMap::new();
    for ipma in kids.iter().filter(|k| &k.kind == b"ipma") {
        let p = walk.payload(ipma);
        let (version, wide) = (*p.first().ok_or_else(bad)?, p.get(3).ok_or_else(bad)? & 1 == 1);
        let mut at = 8;
        for _ in 0..be32(p, 4).ok_or_else(bad)? {
            let id = if version < 1 { be16(p, at).map(u32::from) } else { be32(p, at) }.ok_or_else(bad)?;
            at += if version < 1 { 2 } else { 4 };
            let n = *p.get(at).ok_or_else(bad)?;
            at += 1;
            for _ in 0..n {
                let index = if wide {
                    at += 2;
                    usize::from(be16(p, at - 2).ok_or_else(bad)? & 0x7FFF)
                } else {
                    at += 1;
                    usize::from(p.get(at - 1).ok_or_else(bad)? & 0x7F)
                };
                let Some(prop) = index.checked_sub(1).and_then(|i| props.get(i)) else { continue };
                if matches!(&prop.kind, b"avcC" | b"hvcC" | b"av1C") {
                    let kind = sample_entry::config_kind(&prop.kind);
                    let config = bitstream::scrub_config(kind, walk.payload(prop))
                        .map_err(|e| MediaError::malformed(walk.format, e.to_string()))?;
                    out.insert(id, config.codec);
                }
            }
        }
    }
    Ok(out)
}
