//! The shield's admin surface: `GET /admin/shield` (what is shielded, held and counted,
//! and why), the quarantine's release and drop, lifting a shield; its `/readyz` line;
//! its reload hook.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use bytes::Bytes;
use http::{Method, StatusCode};

use super::{Shield, Tally, quarantine::Replay, signature::Rejection};
use crate::{
    admin::hooks::{AdminHandler, Readiness, ReadinessCheck, Reload, json},
    proxy::contract::{Response, StageFuture, error::json_error},
    store::HeldState,
};

impl Shield {
    /// The `/admin/shield` report.
    pub async fn report(&self) -> serde_json::Value {
        let now = super::clock::now();
        let active = self.active();
        let shields: Vec<serde_json::Value> = self
            .waves
            .report(now, active.policy.wave.window)
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "account": r.account,
                    "remaining_secs": r.remaining.as_secs(),
                    "at_most_secs": r.at_most.as_secs(),
                    "raised_secs_ago": r.raised_ago.as_secs(),
                    "why": {
                        "raised_by_actors": r.raised_by,
                        "actors_in_window": r.actors_in_window,
                        "deferred_in_window": r.deferred_in_window,
                        "actors": r.actors_remembered,
                        "domains": r.domains,
                        "top_domains": r.top_domains.iter().map(|(d, n)| serde_json::json!({ "domain": d, "actors": n })).collect::<Vec<_>>(),
                    },
                })
            })
            .collect();
        let tallies = |cache: &moka::sync::Cache<String, Arc<Tally>>| {
            let mut rows: Vec<(String, [u64; 4])> = cache
                .iter()
                .map(|(k, t)| {
                    (
                        (*k).clone(),
                        [
                            t.limited.load(Relaxed),
                            t.deferred.load(Relaxed),
                            t.held.load(Relaxed),
                            t.rejected.load(Relaxed),
                        ],
                    )
                })
                .collect();
            rows.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(&b.0)));
            rows
        };
        let row = |(k, [limited, deferred, held, rejected]): &(String, [u64; 4])| serde_json::json!({ "name": k, "limited": limited, "deferred": deferred, "held": held, "rejected": rejected });
        let domains = tallies(&self.domain_tallies);
        let held: Vec<serde_json::Value> = self
            .quarantine
            .snapshot()
            .iter()
            .map(|h| {
                serde_json::json!({
                    "id": h.id.to_string(), "domain": h.domain, "targets": h.targets, "received": h.received,
                    "date": h.date, "bytes": h.bytes, "verified": h.verified || h.actor.is_some(),
                    "state": if h.state == HeldState::Held { "held" } else { "kept" },
                })
            })
            .collect();
        let (held_count, held_bytes) = self.quarantine.usage();
        let audit: Vec<serde_json::Value> = self
            .quarantine
            .audit_log(100)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| serde_json::json!({ "at": a.at, "id": a.id.to_string(), "domain": a.domain, "action": a.action, "detail": a.detail }))
            .collect();
        let unverified: serde_json::Map<String, serde_json::Value> = Rejection::ALL
            .iter()
            .map(|r| (r.name().to_owned(), self.stats.unverified[r.index()].load(Relaxed).into()))
            .collect();
        serde_json::json!({
            "shields": shields,
            "instance": {
                "domains": self.domains.names(),
                "ready": self.readiness().is_ready(),
                "readiness": self.readiness().detail(),
                "domain_blocks": self.blocks.report(),
            },
            "targets": tallies(&self.targets).iter().map(row).collect::<Vec<_>>(),
            "domains": domains.iter().map(row).collect::<Vec<_>>(),
            "top_offending_domains": domains.iter().take(10).map(row).collect::<Vec<_>>(),
            "held": held,
            "quarantine": {
                "held": held_count, "bytes": held_bytes,
                "max_held": self.cfg.max_held, "max_held_bytes": self.cfg.max_held_bytes.0,
                "max_held_per_domain": self.cfg.max_held_per_domain, "max_held_per_actor": self.cfg.max_held_per_actor,
            },
            "audit": audit,
            "limits": active.limiters.iter().map(|l| serde_json::json!({
                "name": l.rule.name, "route": l.rule.route.config_name(), "key": l.rule.key.name(),
                "rate": l.rule.rate_text(), "burst": l.rule.burst, "keys": l.keys(),
            })).collect::<Vec<_>>(),
            "totals": {
                "passed": self.stats.passed.load(Relaxed),
                "limited": self.stats.limited.load(Relaxed),
                "deferred": self.stats.deferred.load(Relaxed),
                "passed_after_deferral": self.stats.deferred_enough.load(Relaxed),
                "held": self.stats.held.load(Relaxed),
                "held_unverified": self.stats.held_unverified.load(Relaxed),
                "rejected": self.stats.rejected.load(Relaxed),
                "released": self.stats.released.load(Relaxed),
                "released_at_window": self.stats.released_at_window.load(Relaxed),
                "refused_on_release": self.stats.refused_on_release.load(Relaxed),
                "kept_for_admin": self.stats.kept.load(Relaxed),
                "expired_from_quarantine": self.stats.expired.load(Relaxed),
                "shields_raised": self.stats.shields_raised.load(Relaxed),
                "signatures_verified": self.stats.verified.load(Relaxed),
                "signatures_unverified": self.stats.unverified_total(),
                "unverified_by_reason": unverified,
                "passed_as_followed": self.stats.followed_passed.load(Relaxed),
            },
        })
    }
}

/// `GET /admin/shield`; `POST /admin/shield/held/<id>/release|drop`; `POST /admin/shield/lift/<account>`.
pub struct ShieldAdmin(pub Arc<Shield>);

impl AdminHandler for ShieldAdmin {
    fn prefix(&self) -> &'static str {
        "/admin/shield"
    }

    fn handle<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
        _query: Option<&'a str>,
        _body: Bytes,
    ) -> StageFuture<'a, Response> {
        Box::pin(async move {
            let rest = path.trim_start_matches("/admin/shield").trim_matches('/');
            let parts: Vec<&str> = rest.split('/').collect();
            match (method, parts.as_slice()) {
                (&Method::GET, [""]) => json(StatusCode::OK, self.0.report().await),
                (&Method::POST, ["held", id, action]) => {
                    let Ok(id) = id.parse::<u64>() else { return json_error(StatusCode::BAD_REQUEST, "bad id") };
                    if let Err(e) = self.0.quarantine.load().await {
                        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
                    }
                    match *action {
                        "release" => match self.0.quarantine.release(id, "released by the admin").await {
                            Ok(Some(Replay::Delivered(s))) => {
                                json(StatusCode::OK, serde_json::json!({ "released": true, "instance_status": s }))
                            }
                            Ok(Some(Replay::Refused(s))) => json(
                                StatusCode::CONFLICT,
                                serde_json::json!({ "released": false, "instance_status": s }),
                            ),
                            Ok(Some(Replay::Later(why))) => {
                                json(StatusCode::BAD_GATEWAY, serde_json::json!({ "released": false, "error": why }))
                            }
                            Ok(None) => json_error(StatusCode::NOT_FOUND, "no such held delivery"),
                            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                        },
                        "drop" => match self.0.quarantine.purge(id, "dropped", "dropped by the admin; purged").await {
                            Ok(true) => json(StatusCode::OK, serde_json::json!({ "dropped": true })),
                            Ok(false) => json_error(StatusCode::NOT_FOUND, "no such held delivery"),
                            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                        },
                        _ => json_error(StatusCode::NOT_FOUND, "use release or drop"),
                    }
                }
                (&Method::POST, ["lift", account]) => {
                    let account = account.to_ascii_lowercase();
                    let now = super::clock::now();
                    // Told "lifted" only when a shield was up (here, or across the cluster).
                    let shared = self.0.shared.get();
                    if self.0.waves.shield_until(&account, now).is_none() && shared.is_none() {
                        return json_error(StatusCode::NOT_FOUND, "no shield is up for that account");
                    }
                    self.0.waves.lift(&account, now);
                    if let Some(shared) = shared {
                        shared.lift(&account).await;
                    }
                    json(StatusCode::OK, serde_json::json!({ "lifted": account }))
                }
                _ => json_error(StatusCode::NOT_FOUND, "no such shield endpoint"),
            }
        })
    }
}

/// The shield's line in `/readyz`: not ready when the wave shield cannot tell the
/// instance's deliveries (no `local_domain`) or cannot read the instance's domain blocks.
pub struct ShieldReadiness(pub Arc<Shield>);

impl ReadinessCheck for ShieldReadiness {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn check(&self) -> StageFuture<'_, Readiness> {
        Box::pin(async move { self.0.readiness() })
    }
}

impl Reload for Shield {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn reload(&self) -> Result<String, String> {
        self.reload_policies().map_err(|e| e.to_string())
    }
}
