//! Media figures for `/metrics`: files scrubbed by format, bytes removed, refusals by
//! reason, and what waiting bodies hold now (memory, temp files, temp bytes). Atomics
//! only; labels are formats and reasons, never anything about a member.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use super::{Format, MediaError, spill::Budgets};

#[derive(Debug, Default)]
pub struct MediaMetrics {
    scrubbed: [AtomicU64; Format::ALL.len()],
    bytes_removed: AtomicU64,
    refused: [AtomicU64; MediaError::REASONS.len()],
    budgets: Option<std::sync::Arc<Budgets>>,
}

impl MediaMetrics {
    /// Figures that also show what the spooling budgets hold.
    pub fn with_budgets(budgets: std::sync::Arc<Budgets>) -> MediaMetrics {
        MediaMetrics { budgets: Some(budgets), ..MediaMetrics::default() }
    }

    pub fn scrubbed(&self, format: Format, bytes_removed: u64) {
        self.scrubbed[format.index()].fetch_add(1, Relaxed);
        self.bytes_removed.fetch_add(bytes_removed, Relaxed);
    }

    pub fn refused(&self, e: &MediaError) {
        if let Some(i) = MediaError::REASONS.iter().position(|r| *r == e.reason()) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }
}

impl crate::metrics::MetricsSource for MediaMetrics {
    fn render(&self, out: &mut String) {
        out.push_str("# HELP pavise_media_scrubbed_total Files scrubbed and forwarded, by format.\n");
        out.push_str("# TYPE pavise_media_scrubbed_total counter\n");
        for f in Format::ALL {
            let _ = writeln!(
                out,
                "pavise_media_scrubbed_total{{format=\"{}\"}} {}",
                f.name(),
                self.scrubbed[f.index()].load(Relaxed)
            );
        }
        out.push_str("# HELP pavise_media_bytes_removed_total Metadata bytes removed or zeroed.\n");
        out.push_str("# TYPE pavise_media_bytes_removed_total counter\n");
        let _ = writeln!(out, "pavise_media_bytes_removed_total {}", self.bytes_removed.load(Relaxed));
        out.push_str("# HELP pavise_media_refused_total Files refused (422), by reason.\n");
        out.push_str("# TYPE pavise_media_refused_total counter\n");
        for (i, r) in MediaError::REASONS.iter().enumerate() {
            let _ = writeln!(out, "pavise_media_refused_total{{reason=\"{r}\"}} {}", self.refused[i].load(Relaxed));
        }
        if let Some(b) = &self.budgets {
            let (files, disk) = b.in_use();
            for (name, help, v) in [
                (
                    "pavise_media_spool_memory_bytes",
                    "Memory held by request bodies waiting to be judged.",
                    b.mem_in_use(),
                ),
                ("pavise_media_tmp_files", "Temp files in media-tmp.", files),
                ("pavise_media_tmp_bytes", "Bytes in media-tmp.", disk),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            }
        }
    }
}
