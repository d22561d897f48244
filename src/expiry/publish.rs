//! Posts whose own status id pavise does not know yet, found later among the author's
//! statuses:
//! - created with `scheduled_at`: the instance answers with a `ScheduledStatus` and
//!   publishes the post later, on its own; their expiry counts from publication;
//! - created while the instance's answer was lost (it took longer than
//!   `expiry.create_timeout`, the connection broke, or it answered 5xx after it may have
//!   created the post): the post may exist, and must not be left unscheduled.
//!
//! Pavise records either as a *publication* ([`Publication`]: the `ScheduledStatus` id or
//! nothing, when it is due or when the creation was sent, the author's `expires_in`, and a
//! keyed digest of its text — never the text), sealed with the author's token. From its
//! due time the scheduler looks ([`look`]): a scheduled post still listed as scheduled is
//! waited for (a rescheduled one followed); otherwise the author's newest statuses are
//! searched for it (created after its due time, with the same text and content warning,
//! compared through the digest of its `/source`, and not a status pavise already has a
//! record of: two posts with the same text are two). That status is then scheduled like
//! any other (only if it still has no record: two looks side by side cannot both take it), its deadline counted from its `created_at` (a publication) or from when it
//! was sent. A post that never turns up is given up after [`MAX_SEARCHES`] looks.
//!
//! The author's account is asked of the instance (`verify_credentials`), or, when it does
//! not answer, taken from a credential pavise already holds for the token; when neither
//! answers at once, the record is made without it and the scheduler finds it out when it
//! looks: a post is never answered `200` without its record. Scheduled posts are recorded
//! even while no rule is loaded (the rules in force at publication decide).

use super::{EXPIRES_IN_RULE, Expiry, ExpiryError, instance::Instance, observe::ScheduledFacts, seal::Token};
use crate::store::{ExpiryState, Outcome, Publication, PublicationKind, Scheduled, UnixMs, now_ms};

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

/// The account a token belongs to, as far as pavise can tell now: the instance's word, else
/// a credential pavise already holds for the token. Empty when neither answers (then the
/// scheduler asks again when it looks).
pub async fn account_of(core: &Expiry, instance: &Instance, host: Option<&str>, token: &Token) -> String {
    let asked = match instance.verify_credentials(host, token).await {
        Ok((_, account)) => return account,
        Err(e) => e,
    };
    if let Ok(Some(cred)) = core.store.credential(&core.sealer.credential_id(token)).await
        && !cred.account.is_empty()
    {
        return cred.account;
    }
    tracing::info!(error = %asked, "expiry: whose post this is is asked again when it is looked for");
    String::new()
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
        kind: PublicationKind::Scheduled,
        scheduled_at: facts.scheduled_at,
        expires_in,
        digest: core.sealer.digest(&[&facts.text, &facts.spoiler_text]),
        searches: 0,
    });
    core.schedule(item, account, Some(token)).await
}

/// What pavise knows of a creation whose answer it never got.
#[derive(Debug, Clone)]
pub struct LostCreation {
    /// When it was sent to the instance.
    pub sent_at: UnixMs,
    pub text: String,
    pub spoiler_text: String,
    pub expires_in: Option<u64>,
}

/// Records a creation whose answer was lost, to be looked for among the author's statuses
/// shortly (its record is durable: a restart looks too).
pub async fn record_lost(
    core: &Expiry,
    lost: &LostCreation,
    account: &str,
    token: &Token,
    host: Option<String>,
) -> Result<(), ExpiryError> {
    let now = now_ms();
    let id = core.sealer.digest(&[&lost.sent_at.to_string(), &lost.text, &core.sealer.credential_id(token)]);
    let rule = if lost.expires_in.is_some() { EXPIRES_IN_RULE } else { "policies, once found" };
    let look_at = now.saturating_add(core.config.confirm_after.get().as_millis() as u64);
    let mut item = Scheduled::pending(format!("creation/{id}"), account, rule, now, look_at);
    item.host = host;
    item.publication = Some(Publication {
        scheduled_id: String::new(),
        kind: PublicationKind::LostAnswer,
        scheduled_at: lost.sent_at,
        expires_in: lost.expires_in,
        digest: core.sealer.digest(&[&lost.text, &lost.spoiler_text]),
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
    let refused = |e: &super::instance::InstanceError| {
        Outcome::Failed(format!(
            "cannot look for the post among its author's statuses with the token it was sent with ({e}); it is looked for again when a new token for the account appears"
        ))
    };

    if p.kind == PublicationKind::Scheduled {
        // Listing first: the instance publishes due posts as it lists them (the mock does
        // it only then), and a post past the first page is asked about on its own.
        let still_scheduled = match instance.scheduled_statuses(host, token).await {
            Ok(list) => match list.iter().find(|(id, _)| *id == p.scheduled_id) {
                Some((_, at)) => Some(*at),
                None => match instance.scheduled_status(&p.scheduled_id, host, token).await {
                    Ok(found) => found,
                    Err(
                        e @ (super::instance::InstanceError::Unauthorized(_)
                        | super::instance::InstanceError::Forbidden(_)),
                    ) => {
                        return refused(&e);
                    }
                    Err(e) => return retry(&e),
                },
            },
            Err(
                e @ (super::instance::InstanceError::Unauthorized(_) | super::instance::InstanceError::Forbidden(_)),
            ) => {
                return refused(&e);
            }
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
    }

    match find_published(instance, host, token, p, core).await {
        Ok((Some(status), username)) => {
            let Some(post) = super::observe::facts_from_status(&status) else {
                return Outcome::Cancelled("its status could not be read".into());
            };
            // A lost creation's `expires_in` counts from when it was sent, as it would have.
            let base = match p.kind {
                PublicationKind::Scheduled => post.created_at.unwrap_or(now),
                PublicationKind::LostAnswer => p.scheduled_at,
            };
            let Some(mut planned) = core.plan_published(&post, p.expires_in, base) else {
                return Outcome::Cancelled("found; no expiry rule matches it".into());
            };
            planned.host = item.host.clone();
            planned.credential = item.credential.clone();
            let cred = if item.account.is_empty() {
                // Now pavise knows whose it is: the token is sealed to that account.
                match core.sealer.seal(&username, token) {
                    Ok(c) => {
                        planned.credential = Some(c.id.clone());
                        Some(c)
                    }
                    Err(e) => return retry(&e),
                }
            } else {
                None
            };
            // Only if no record of it was made meanwhile: two publications with the same
            // text, looked for side by side, may both have picked the same status. The
            // one that loses looks again at once, and that status is no longer a candidate.
            match core.schedule_new_items(vec![(planned, cred)]).await {
                Ok(1) => {
                    core.stats.published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Outcome::Cancelled("found, and scheduled under its own id".into())
                }
                Ok(_) => Outcome::Defer { at: now },
                Err(e) => retry(&e),
            }
        }
        Ok((None, _)) if p.searches + 1 < MAX_SEARCHES => {
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
        Ok((None, _)) => Outcome::Cancelled(match p.kind {
            PublicationKind::Scheduled => "its publication was never found (cancelled on the instance?)".into(),
            PublicationKind::LostAnswer => "the instance never created it".into(),
        }),
        Err(e @ (super::instance::InstanceError::Unauthorized(_) | super::instance::InstanceError::Forbidden(_))) => {
            refused(&e)
        }
        Err(e) => retry(&e),
    }
}

/// The author's status published (or created) from `p`, if it is among the newest and
/// pavise has no record of it yet; and the token's username.
async fn find_published(
    instance: &Instance,
    host: Option<&str>,
    token: &Token,
    p: &Publication,
    core: &Expiry,
) -> Result<(Option<serde_json::Value>, String), super::instance::InstanceError> {
    let (account_id, username) = instance.verify_credentials(host, token).await?;
    let (page, _) = instance.account_statuses(&account_id, None, host, token).await?;
    let earliest: UnixMs = p.scheduled_at.saturating_sub(SKEW_MS);
    // Oldest first: of two posts with the same text, the first publication takes the first.
    for status in page.iter().rev() {
        if status.get("reblog").is_some_and(|r| !r.is_null()) {
            continue;
        }
        let created = status.get("created_at").and_then(|c| c.as_str()).and_then(super::observe::parse_time);
        if created.is_some_and(|c| c < earliest) {
            continue;
        }
        let Some(id) = status.get("id").and_then(|i| i.as_str()) else { continue };
        if matches!(core.store.lookup(id).await, Ok(Some(_))) {
            // Already scheduled: another publication's, or one pavise learned itself.
            continue;
        }
        let (text, spoiler) = match instance.source(id, host, token).await {
            Ok(s) => s,
            Err(super::instance::InstanceError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        if core.sealer.digest(&[&text, &spoiler]) == p.digest {
            return Ok((Some(status.clone()), username));
        }
    }
    Ok((None, username))
}
