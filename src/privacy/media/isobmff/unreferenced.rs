//! Bytes of `mdat` that nothing points at. A player reads `mdat` only where a sample
//! table (or a HEIF item location) sends it, so bytes between and after the samples are
//! never seen, and can hold anything: an XMP packet, the old location an editor did not
//! bother to overwrite. Where every track's tables were read, those bytes are zeroed.
//!
//! A fragmented file's samples are mapped from each `moof`'s runs ([`super::fragments`]).
//! Only where the map can be trusted: data in another file (`dref`) or an item built
//! from other items leaves `mdat` as it is (`pavise scrub -v` says so); a track table
//! pavise cannot read is refused. QuickTime sound with one uniform sample size counts
//! audio frames, not bytes; such a chunk's length is read from its sound description as
//! ffmpeg reads it ([`super::sample_entry::Framing`]), or the file is refused: a chunk of
//! unknown length would leave open whatever follows it.

/// Where samples and items lie in the file.
#[derive(Debug, Default)]
pub(super) struct DataMap {
    /// (start, end) of each chunk or extent whose length is known.
    exact: Vec<(u64, u64)>,
    /// (start, end) of every track chunk and fragment run, which may not overlap.
    chunks: Vec<(u64, u64)>,
    /// Why the map cannot be trusted, if it cannot.
    distrust: Option<String>,
}

impl DataMap {
    pub(super) fn exact(&mut self, off: u64, len: u64) {
        self.exact.push((off, off.saturating_add(len)));
    }

    /// A chunk of a track's sample table or a fragment's run: covered like an exact
    /// range, and checked by [`Self::overlap`].
    pub(super) fn chunk(&mut self, off: u64, len: u64) {
        self.exact(off, len);
        if len > 0 {
            self.chunks.push((off, off.saturating_add(len)));
        }
    }

    /// Where two chunks (of one track or of two) cover the same bytes, if any do. No
    /// muxer writes that; a crafted file does it so that bytes one track's table hides
    /// (an SEI pavise does not walk, a GPS sample it would zero) are kept as another
    /// track's data, which a reader still finds where the first table sends it.
    pub(super) fn overlap(&self) -> Option<u64> {
        let mut chunks = self.chunks.clone();
        chunks.sort_unstable();
        let mut end = 0;
        for &(from, to) in &chunks {
            if from < end {
                return Some(from);
            }
            end = end.max(to);
        }
        None
    }

    pub(super) fn distrust(&mut self, why: impl Into<String>) {
        self.distrust.get_or_insert_with(|| why.into());
    }

    /// The (offset, length) of every run of bytes in the `mdat` payloads (start, end)
    /// that no sample or item covers; `Err(why)` when the map cannot be trusted.
    pub(super) fn gaps(&self, mdats: &[(u64, u64)]) -> Result<Vec<(u64, u64)>, String> {
        if let Some(why) = &self.distrust {
            return Err(why.clone());
        }
        let mut covered = self.exact.clone();
        covered.sort_unstable();
        let mut gaps = Vec::new();
        for &(from, to) in mdats {
            let mut at = from;
            for &(a, z) in covered.iter().filter(|&&(a, z)| a < to && z > from) {
                if a > at {
                    gaps.push((at, a - at));
                }
                at = at.max(z);
            }
            if at < to {
                gaps.push((at, to - at));
            }
        }
        Ok(gaps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_what_no_chunk_covers() {
        let mut map = DataMap::default();
        map.exact(110, 10); // 110..120
        map.exact(115, 10); // overlapping item extents: 115..125
        map.exact(160, 5); // 160..165
        map.exact(180, 20); // to the end of the mdat
        assert_eq!(map.gaps(&[(100, 200)]).unwrap(), [(100, 10), (125, 35), (165, 15)]);
        assert_eq!(map.gaps(&[(100, 200), (300, 310)]).unwrap().last(), Some(&(300, 10)), "an mdat nothing points at");
        map.distrust("a fragmented file");
        map.distrust("later reasons do not replace the first");
        assert_eq!(map.gaps(&[(100, 200)]).unwrap_err(), "a fragmented file");
    }

    #[test]
    fn chunks_that_cover_the_same_bytes_are_found() {
        let mut map = DataMap::default();
        map.chunk(100, 10);
        map.chunk(110, 10); // adjacent, as every muxer writes them
        map.chunk(130, 0); // an empty chunk covers nothing
        map.exact(105, 10); // an item extent is not a chunk
        assert_eq!(map.overlap(), None);
        map.chunk(50, 51); // 50..101 runs into the first
        assert_eq!(map.overlap(), Some(100));
        let mut map = DataMap::default();
        map.chunk(100, 50);
        map.chunk(120, 5); // inside another chunk
        assert_eq!(map.overlap(), Some(120));
    }
}
