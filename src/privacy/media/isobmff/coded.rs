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

use super::{Action, BoxAt, Format, MediaError, Walk, associations, sample_entry};
use crate::privacy::media::{
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
            // A buffer is walked where it lies; a file is read sample by sample.
            let walked = match store.view(s.off, s.len) {
                Some(sample) => bitstream::scrub_sample(s.codec, sample),
                None => {
                    buf.resize(s.len as usize, 0);
                    store.read_at(s.off, &mut buf)?;
                    bitstream::scrub_sample(s.codec, &buf)
                }
            };
            let fillers = walked.map_err(|e| {
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
/// An item with two of them is refused: libheif takes the first of its type, and two
/// `hvcC` of different NAL length sizes would have pavise walk the data one way and the
/// decoder read it another.
pub(super) fn item_codecs(walk: Walk<'_>, iprp: &BoxAt) -> Result<HashMap<u32, Codec>, MediaError> {
    let kids = walk.kids(iprp, 0)?;
    let Some(ipco) = kids.iter().find(|k| &k.kind == b"ipco") else { return Ok(HashMap::new()) };
    let props = walk.kids(ipco, 0)?;
    let mut out = HashMap::new();
    for association in associations(walk, &kids)? {
        let mut configured_by = None;
        for index in association.properties.iter().map(|p| p.index) {
            let Some(prop) = index.checked_sub(1).and_then(|i| props.get(i)) else { continue };
            if matches!(&prop.kind, b"avcC" | b"hvcC" | b"av1C") {
                if configured_by.is_some_and(|first| first != index) {
                    return Err(MediaError::malformed(
                        walk.format,
                        format!(
                            "image item {} has two codec configurations (readers take different ones)",
                            association.item
                        ),
                    ));
                }
                configured_by = Some(index);
                let kind = sample_entry::config_kind(&prop.kind);
                let config = bitstream::scrub_config(kind, walk.payload(prop))
                    .map_err(|e| MediaError::malformed(walk.format, e.to_string()))?;
                out.insert(association.item, config.codec);
            }
        }
    }
    Ok(out)
}
