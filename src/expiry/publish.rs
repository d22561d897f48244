//! Posts created with `scheduled_at`: the instance answers with a `ScheduledStatus` and
//! publishes the post later, on its own. Their expiry counts from publication.
//!
//! Pavise records the scheduled post as a *publication* ([`Publication`]: the
//! `ScheduledStatus` id, when it is due, the author's `expires_in`, and a keyed digest of
//! its text — never the text). From its due time the scheduler looks ([`look`]): while the
//! instance still lists it as scheduled, it waits (a rescheduled post is followed); once
//! the instance no longer holds it, the author's newest statuses are searched for the one
//! published from it (created after its due time, with the same text and content warning,
//! compared through the digest of its `/source`). That status is then scheduled like any
//! other, its deadline counted from its `created_at`. A post that never turns up (the author
//! cancelled it on the instance) is given up after [`MAX_SEARCHES`] looks.

use super::{EXPIRES_IN_RULE, Expiry, ExpiryError, instance::Instance, observe::ScheduledFacts, seal::Token};
use crate::store::{ExpiryState, Outcome, Publication, Scheduled, UnixMs, now_ms};

/// How many times the author's statuses are searched before the publication is given up.
pub const MAX_SEARCHES: u32 = 10;
/// Between looks while the post is not found yet, or the instance is late publishing it.
const LOOK_AGAIN_MS: u64 = 15_000;
/// How much earlier than its due time a published status may be dated (clock skew).
const SKEW_MS: u64 = 60_000;

/// The store id of a publication: never a status id.
pub fn item_id(scheduled_id: &str) -> String {
    format!("scheduled/{scheduled_id}")
}

/// Records a scheduled post, durably, with the author's token (needed to find it later).
pub async fn record(
    core: &Expiry,
    facts: &ScheduledFacts,
    account: &str,
    token: &Token,
    expires_in: Option<u64>,
    host: Option<String>,
) -> Result<(), ExpiryError> {
    let now = now_ms();
    let rule = if expires_in.is_some() { EXPIRES_IN_RULE } else { "policies, at publication" };
    let mut item = Scheduled::pending(item_id(&facts.id), account, rule, now, facts.scheduled_at);
    item.host = host;
    item.publication = Some(Publication {
        scheduled_id: facts.id.clone(),
        scheduled_at: facts.scheduled_at,
        expires_in,
        digest: core.sealer.digest(&[&facts.text, &facts.spoiler_text]),
        searches: 0,
    });
    core.schedule(item, account, Some(token)).await
}

/// Re-times a publication the author rescheduled (`PUT /api/v1/scheduled_statuses/:id`).
pub async fn retime(core: &Expiry, facts: &ScheduledFacts) -> Result<(), ExpiryError> {
    let Some(mut item) = core.store.lookup(&item_id(&facts.id)).await? else { return Ok(()) };
    let Some(p) = item.publication.as_mut() else { return Ok(()) };
    p.scheduled_at = facts.scheduled_at;
    p.digest = core.sealer.digest(&[&facts.text, &facts.spoiler_text]);
    item.deadline = facts.scheduled_at;
    item.next_attempt = facts.scheduled_at;
    core.schedule_items(vec![(item, None)]).await?;
    Ok(())
}

/// One look at a due publication (see the module docs).
pub async fn look(core: &Expiry, instance: &Instance, item: &Scheduled, token: &Token) -> Outcome {
    let Some(p) = &item.publication else { return Outcome::Cancelled("not a publication".into()) };
    let host = item.host.as_deref();
    let now = now_ms();
    let retry = |e: &dyn std::fmt::Display| Outcome::Retry { at: now + LOOK_AGAIN_MS, reason: e.to_string() };

    // Listing first: the instance publishes due posts as it lists them (the mock does it
    // only then), and a post past the first page is asked about on its own.
    let still_scheduled = match instance.scheduled_statuses(host, token).await {
        Ok(list) => match list.iter().find(|(id, _)| *id == p.scheduled_id) {
            Some((_, at)) => Some(*at),
            None => match instance.scheduled_status(&p.scheduled_id, host, token).await {
                Ok(found) => found,
                Err(e) => return retry(&e),
            },
        },
        Err(e) => return retry(&e),
    };
    if let Some(at) = still_scheduled {
        let due = at.unwrap_or(p.scheduled_at);
        if due != p.scheduled_at {
            let mut moved = item.clone();
            if let Some(mp) = moved.publication.as_mut() {
                mp.scheduled_at = due;
            }
            moved.deadline = due;
            moved.next_attempt = due;
            moved.state = ExpiryState::Pending;
            if core.schedule_items(vec![(moved, None)]).await.is_err() {
                return retry(&"could not record the new publication time");
            }
        }
        return Outcome::Defer { at: due.max(now + LOOK_AGAIN_MS) };
    }

    match find_published(instance, host, token, p, core).await {
        Ok(Some(status)) => {
            let Some(post) = super::observe::facts_from_status(&status) else {
                return Outcome::Cancelled("its published status could not be read".into());
            };
            let published = post.created_at.unwrap_or(now);
            let Some(mut planned) = core.plan_published(&post, p.expires_in, published) else {
                return Outcome::Cancelled("published; no expiry rule matches it".into());
            };
            planned.host = item.host.clone();
            planned.credential = item.credential.clone();
            match core.schedule_items(vec![(planned, None)]).await {
                Ok(_) => {
                    core.stats.published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Outcome::Cancelled("published, and scheduled under its own id".into())
                }
                Err(e) => retry(&e),
            }
        }
        Ok(None) if p.searches + 1 < MAX_SEARCHES => {
            let mut again = item.clone();
            if let Some(ap) = again.publication.as_mut() {
                ap.searches += 1;
            }
            again.next_attempt = now + LOOK_AGAIN_MS;
            again.state = ExpiryState::Pending;
            match core.schedule_items(vec![(again, None)]).await {
                Ok(_) => Outcome::Defer { at: now + LOOK_AGAIN_MS },
                Err(e) => retry(&e),
            }
        }
        Ok(None) => Outcome::Cancelled("its publication was never found (cancelled on the instance?)".into()),
        Err(e) => retry(&e),
    }
}

/// The author's status published from `p`, if it is among the newest.
async fn find_published(
    instance: &Instance,
    host: Option<&str>,
    token: &Token,
    p: &Publication,
    core: &Expiry,
) -> Result<Option<serde_json::Value>, super::instance::InstanceError> {
    let (account_id, _) = instance.verify_credentials(host, token).await?;
    let (page, _) = instance.account_statuses(&account_id, None, host, token).await?;
    let earliest: UnixMs = p.scheduled_at.saturating_sub(SKEW_MS);
    for status in page {
        if status.get("reblog").is_some_and(|r| !r.is_null()) {
            continue;
        }
        let created = status.get("created_at").and_then(|c| c.as_str()).and_then(super::observe::parse_time);
        if created.is_some_and(|c| c < earliest) {
            continue;
        }
        let Some(id) = status.get("id").and_then(|i| i.as_str()) else { continue };
        let (text, spoiler) = match instance.source(id, host, token).await {
            Ok(s) => s,
            Err(super::instance::InstanceError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        if core.sealer.digest(&[&text, &spoiler]) == p.digest {
            return Ok(Some(status));
        }
    }
    Ok(None)
}
