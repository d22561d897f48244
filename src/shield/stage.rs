//! The shield's pipeline stage: the cheap path (a few hash lookups, no body, no
//! allocation beyond the stage's future) decides most requests under the policy's read
//! lock; inbox deliveries go down the [`super::inbox`] path; signed fetches with
//! per-signer rules are verified, then counted. The response phase makes a verified
//! sender familiar when the instance accepted its delivery.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use http::{HeaderValue, StatusCode};

use super::{Rules, Shield, limiter::Denied, mention::InboxPath};
use crate::{
    proxy::contract::{Flow, ProxyError, Request, RequestCtx, Response, Stage, StageFuture, error::json_error},
    store::now_ms,
};

/// 429 with `Retry-After` and Mastodon's `X-RateLimit-Limit/-Remaining/-Reset`.
pub(super) fn too_many(denied: &Denied) -> Response {
    let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    let h = resp.headers_mut();
    let retry = denied.retry_after.as_secs() + u64::from(denied.retry_after.subsec_nanos() > 0);
    let reset = std::time::SystemTime::now() + denied.reset_after;
    for (name, value) in [
        ("retry-after", retry.max(1).to_string()),
        ("x-ratelimit-limit", denied.limit.to_string()),
        ("x-ratelimit-remaining", "0".to_owned()),
        ("x-ratelimit-reset", iso8601(reset)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(http::HeaderName::from_static(name), v);
        }
    }
    resp
}

/// `2026-11-26T13:45:18.000Z`, the form Mastodon's `X-RateLimit-Reset` uses.
fn iso8601(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The pipeline stage.
pub struct ShieldStage(pub Arc<Shield>);

/// Set on a forwarded, verified delivery: if the instance accepts it (2xx), its sender
/// was seen delivering (familiarity).
#[derive(Clone)]
pub(super) struct AcceptedFrom(pub(super) String);

impl Stage for ShieldStage {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn on_request<'a>(&'a self, ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        let shield = &self.0;
        let class = ctx.route.class;
        // The route read the path as Rails routes it: every spelling of an inbox
        // (`/inbox.json`, `//users/alice/inbox/`, `/ap/users/ID/inbox`) is an `Inbox`.
        let inbox = InboxPath::of(&ctx.route);
        let decision = {
            // The cheap path decides under the read lock, without touching the Arc's count.
            let active = shield.active.read().unwrap_or_else(|e| e.into_inner());
            let inbox_work = inbox.is_some() && (active.policy.wave.enabled || active.needs_signer[class.index()]);
            if inbox_work || active.needs_signer[class.index()] {
                None
            } else if active.by_route[class.index()].is_empty() {
                Some(Ok(Vec::new()))
            } else {
                let parts = (req.method(), ctx.route.path.as_str(), req.headers());
                Some(shield.check_limits(&active, class, parts, ctx.pseudonym, None, Rules::All).map(|()| {
                    // `[cluster]`: the rules this request matched, for one shared decision.
                    shield.shared_limits(&active, class, parts, ctx.pseudonym, None, Rules::All)
                }))
            }
        };
        match (decision, inbox) {
            // A few hash lookups, no body, no allocation beyond the stage's future (and,
            // in a cluster, one Redis round trip when a rule matched).
            (Some(decision), _) => Box::pin(async move {
                let decision = match decision {
                    Ok(limits) if !limits.is_empty() => {
                        let active = shield.active();
                        shield.check_shared_limits(&active, limits).await
                    }
                    Ok(_) => Ok(()),
                    Err(denied) => Err(denied),
                };
                match decision {
                    Ok(()) => Ok(Flow::Continue(req)),
                    Err(denied) => {
                        shield.stats.limited.fetch_add(1, Relaxed);
                        Ok(Flow::Respond(too_many(&denied)))
                    }
                }
            }),
            (None, Some(inbox)) => {
                let active = shield.active();
                Box::pin(async move { shield.inbox(ctx, req, active, inbox).await })
            }
            // Signed fetches of objects (authorized fetch) with per-signer rules: verify, then count.
            (None, None) => {
                let active = shield.active();
                Box::pin(async move {
                    let parts = (req.method(), ctx.route.path.as_str(), req.headers());
                    if let Err(denied) = shield.check_limits(&active, class, parts, ctx.pseudonym, None, Rules::Local) {
                        shield.stats.limited.fetch_add(1, Relaxed);
                        return Ok(Flow::Respond(too_many(&denied)));
                    }
                    let (parts, body) = req.into_parts();
                    let verdict = shield.verify_fetch(ctx, &parts).await;
                    let request_parts = (&parts.method, ctx.route.path.as_str(), &parts.headers);
                    let checked = match shield.check_limits(
                        &active,
                        class,
                        request_parts,
                        ctx.pseudonym,
                        Some(&verdict),
                        Rules::Signer,
                    ) {
                        // `[cluster]`: every rule this request matched, decided once across the nodes.
                        Ok(()) => {
                            let limits = shield.shared_limits(
                                &active,
                                class,
                                request_parts,
                                ctx.pseudonym,
                                Some(&verdict),
                                Rules::All,
                            );
                            shield.check_shared_limits(&active, limits).await
                        }
                        Err(denied) => Err(denied),
                    };
                    match checked {
                        Ok(()) => Ok(Flow::Continue(Request::from_parts(parts, body))),
                        Err(denied) => {
                            shield.stats.limited.fetch_add(1, Relaxed);
                            Ok(Flow::Respond(too_many(&denied)))
                        }
                    }
                })
            }
        }
    }

    fn on_response<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        let accepted = ctx.extensions.remove::<AcceptedFrom>();
        Box::pin(async move {
            if let Some(AcceptedFrom(actor)) = accepted
                && resp.status().is_success()
            {
                let after = self.0.active().policy.wave.familiar_after;
                self.0.familiar.accepted(&actor, now_ms(), after).await;
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn iso8601_matches_known_dates() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_795_009_518_123);
        assert_eq!(iso8601(t), "2026-11-18T13:45:18.123Z");
        assert_eq!(iso8601(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
