//! The shield's figures in `/metrics` (Prometheus text; no label carries a client,
//! an actor or a pseudonym).

use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed};

use super::{Shield, signature::Rejection};
use crate::metrics::MetricsSource;

impl MetricsSource for Shield {
    fn render(&self, out: &mut String) {
        let s = &self.stats;
        out.push_str("# HELP pavise_shield_decisions_total Shield decisions on requests, by outcome.\n");
        out.push_str("# TYPE pavise_shield_decisions_total counter\n");
        for (outcome, v) in [
            ("passed", &s.passed),
            ("limited", &s.limited),
            ("deferred", &s.deferred),
            ("held", &s.held),
            ("held_unverified", &s.held_unverified),
            ("passed_after_deferral", &s.deferred_enough),
            ("rejected", &s.rejected),
        ] {
            let _ = writeln!(out, "pavise_shield_decisions_total{{outcome=\"{outcome}\"}} {}", v.load(Relaxed));
        }
        out.push_str("# HELP pavise_shield_signatures_total Federation signatures, by verification result (verified, or why not).\n");
        out.push_str("# TYPE pavise_shield_signatures_total counter\n");
        let _ = writeln!(out, "pavise_shield_signatures_total{{result=\"verified\"}} {}", s.verified.load(Relaxed));
        let _ = writeln!(out, "pavise_shield_signatures_total{{result=\"unverified\"}} {}", s.unverified_total());
        for r in Rejection::ALL {
            let _ = writeln!(
                out,
                "pavise_shield_unverified_total{{reason=\"{}\"}} {}",
                r.name(),
                s.unverified[r.index()].load(Relaxed)
            );
        }
        out.push_str("# HELP pavise_shield_shields_raised_total Local accounts shielded by the wave detector.\n");
        out.push_str("# TYPE pavise_shield_shields_raised_total counter\n");
        let _ = writeln!(out, "pavise_shield_shields_raised_total {}", s.shields_raised.load(Relaxed));
        out.push_str("# HELP pavise_shield_followed_passed_total Deliveries from unfamiliar senders passed because a mentioned member follows them (as the instance lists).\n");
        out.push_str("# TYPE pavise_shield_followed_passed_total counter\n");
        let _ = writeln!(out, "pavise_shield_followed_passed_total {}", s.followed_passed.load(Relaxed));
        out.push_str(
            "# HELP pavise_shield_quarantine_total Held deliveries released to the instance (also: before their signature window closed, still shielded), refused by it, kept for the admin, or purged after being kept.\n",
        );
        out.push_str("# TYPE pavise_shield_quarantine_total counter\n");
        for (outcome, v) in [
            ("released", &s.released),
            ("released_at_window", &s.released_at_window),
            ("refused", &s.refused_on_release),
            ("kept", &s.kept),
            ("expired", &s.expired),
        ] {
            let _ = writeln!(out, "pavise_shield_quarantine_total{{outcome=\"{outcome}\"}} {}", v.load(Relaxed));
        }
        let (held, bytes) = self.quarantine.usage();
        out.push_str("# HELP pavise_shield_held Deliveries held in the quarantine now, and their bytes.\n");
        out.push_str("# TYPE pavise_shield_held gauge\n");
        let _ = writeln!(out, "pavise_shield_held {held}");
        let _ = writeln!(out, "pavise_shield_held_bytes {bytes}");
        out.push_str("# HELP pavise_shield_ready Whether the wave shield can tell the instance's deliveries and knows its domain blocks.\n");
        out.push_str("# TYPE pavise_shield_ready gauge\n");
        let _ = writeln!(out, "pavise_shield_ready {}", u8::from(self.readiness().is_ready()));
        out.push_str("# HELP pavise_shield_limiter_keys Keys tracked per limit rule.\n");
        out.push_str("# TYPE pavise_shield_limiter_keys gauge\n");
        for l in &self.active().limiters {
            let _ =
                writeln!(out, "pavise_shield_limiter_keys{{rule=\"{}\"}} {}", l.rule.name.replace('"', "'"), l.keys());
        }
    }
}
