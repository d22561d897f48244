//! What the shield does with one inbox delivery, decided apart from doing it (mini-redis's
//! `Command::from_frame` / `apply`):
//!
//! 1. the inbox path ([`super::inbox`]) gathers what the shields say about a delivery
//!    into its [`Standing`]: whom it addresses, as the instance would tell; whether the
//!    sender is familiar or followed; the wave, observed; how long this very activity has
//!    been deferred;
//! 2. [`decide`] turns the delivery and its standing into a [`Decision`], and touches
//!    nothing: no store, no counter, no clock;
//! 3. the inbox path applies the decision (the quarantine, the counters) and learns
//!    what became of it, an [`Answer`];
//! 4. [`answer`] is the one mapping from that to what the sender is told.
//!
//! A shield's answer to a remote server is a deliberate one: it goes out as
//! [`Flow::Respond`]; only a failure (the quarantine cannot be written) is a
//! [`crate::proxy::contract::ProxyError`].

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use super::{
    Outcome,
    inbox::Delivery,
    policy::{WaveAction, WavePolicy},
    signature::{Rejection, Verdict},
};
use crate::proxy::contract::{Flow, Request, Response, empty, error::json_error, full};

/// What the shields say about one delivery, gathered before anything is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Standing {
    /// Nothing to weigh: the wave shield is off, or the instance refuses the delivery
    /// anyway (it is forwarded as it is, and counts toward nothing).
    Unweighed,
    /// A replay of a signature seen before: what became of its first copy.
    Replay(Outcome),
    /// Not verifiable now, but the instance may accept it: the members it addresses
    /// (`ANY_SHIELDED` when that cannot be told). Its answer never depends on a shield.
    /// `deferred_for`: since its first attempt, when its key was not fetched for the
    /// budget (else zero).
    Unverifiable { targets: Vec<String>, now_ms: u64, deferred_for: Duration },
    /// Verified, from a sender the instance accepted mail from before.
    Familiar,
    /// Verified, from a stranger.
    Stranger(Weighed),
}

/// A verified stranger's delivery, weighed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Weighed {
    pub(super) actor: String,
    pub(super) domain: String,
    /// A member it addresses follows the sender (as the instance lists).
    pub(super) followed: bool,
    /// It carried something to a member (named an existing member in what reaches her, or
    /// came from an account a member it addresses follows): only such a delivery, accepted
    /// by the instance, teaches familiarity ([`super::familiar`]). A `Delete` of nothing,
    /// a ghost, a post to nobody teach nothing.
    pub(super) earns_familiarity: bool,
    /// What holds it back, if anything does.
    pub(super) cover: Option<Cover>,
}

/// What holds a verified delivery back: a shield over a member it addresses, or a
/// hellthread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cover {
    /// The members it is held back for: the shielded ones it addresses that do not follow
    /// the sender, or (a hellthread alone) every member it addresses that does not.
    pub(super) targets: Vec<String>,
    /// No shield covers it; it is a hellthread.
    pub(super) hellthread_only: bool,
    /// Since this very activity was first deferred (every retry carries it again).
    pub(super) deferred_for: Duration,
    /// The sender is one of the wave's own actors for a target.
    pub(super) wave_actor: bool,
    pub(super) now_ms: u64,
}

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Forward it as it came.
    Forward(Pass),
    /// 429 with the wave's `Retry-After`: the sender keeps it and retries. `counted`: the
    /// members it was deferred for, when a verified stranger sent it (tallied per member
    /// and per domain in `/admin/shield`).
    Defer { counted: Option<Vec<String>> },
    /// 429, `Retry-After: 60`: its key could not be fetched within the budgets now.
    FetchLater,
    /// 403 (`action = "reject"`).
    Reject { targets: Vec<String> },
    /// Into the quarantine (202), released when no shield covers it any more.
    Hold(Hold),
    /// A replay of a delivery held already: 202 again.
    HeldAlready,
}

/// Why a delivery is forwarded, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// Nothing holds it back.
    Clear,
    /// A member it addresses follows its sender.
    Followed,
    /// Deferred for `shield_for` already: a delay, never a drop.
    DeferredEnough,
}

/// A delivery to hold, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hold {
    pub(super) targets: Vec<String>,
    /// The verified sender (actor, domain); `None` for an unverifiable delivery, which
    /// uses its connecting client's share of the quarantine.
    pub(super) signer: Option<(String, String)>,
    /// A hellthread is held no earlier than its deferral would have ended.
    pub(super) not_before: Option<u64>,
}

/// How long a delivery from one of a wave's own actors (the actors that raised the shield)
/// is deferred at most while that shield is up: well inside the day or more every sender
/// retries for (Mastodon: 16 retries over about two days), so even a real correspondent
/// who happened to be counted loses nothing.
pub(super) const WAVE_ACTOR_DEFERRAL: Duration = Duration::from_secs(24 * 3600);

/// The longest one activity is deferred: `shield_for` — except the wave's own: those are
/// deferred while the shield that counted them is up (the admin lifts it, or suspends
/// them on the instance, which then refuses them), a day at most, within every sender's
/// retries. Deferred, never dropped.
fn deferral_cap(c: &Cover, wave: &WavePolicy) -> Duration {
    if c.wave_actor && !c.hellthread_only { wave.shield_for.max(WAVE_ACTOR_DEFERRAL) } else { wave.shield_for }
}

/// The shields' policy over one delivery: pure, so it is tested on its own.
pub(super) fn decide(d: &Delivery, wave: &WavePolicy) -> Decision {
    let shield_for_ms = wave.shield_for.as_millis() as u64;
    match &d.standing {
        Standing::Unweighed | Standing::Familiar => Decision::Forward(Pass::Clear),
        Standing::Replay(Outcome::Forwarded) => Decision::Forward(Pass::Clear),
        Standing::Replay(Outcome::Held) => Decision::HeldAlready,
        Standing::Replay(Outcome::Deferred | Outcome::Pending) => Decision::Defer { counted: None },
        Standing::Unverifiable { targets, .. } if targets.is_empty() => Decision::Forward(Pass::Clear),
        // Not fetched now (the client's or the host's budget, or a busy fetcher): come
        // back later — an answer that depends on the budget, never on a shield. Not for
        // longer than `shield_for`: whoever spends a host's budget (forged key ids on that
        // host, from many addresses) would else keep its real senders' mail out until
        // their retries end. Past it, the delivery is held like any other unverifiable one.
        Standing::Unverifiable { deferred_for, .. }
            if d.verdict == Verdict::Unverified(Rejection::FetchRefused) && *deferred_for < wave.shield_for =>
        {
            Decision::FetchLater
        }
        Standing::Unverifiable { targets, now_ms, .. } => {
            // A hellthread is deferred like a verified one's: its deferral ends first (or
            // its signature window closes).
            let hellthread = wave.hellthread > 0 && d.addressed.total > wave.hellthread;
            let not_before = hellthread.then(|| now_ms + shield_for_ms);
            Decision::Hold(Hold { targets: targets.clone(), signer: None, not_before })
        }
        Standing::Stranger(w) => match &w.cover {
            None => Decision::Forward(if w.followed { Pass::Followed } else { Pass::Clear }),
            // No delivery is deferred longer than its cap from its first attempt, whatever
            // the shields do.
            Some(c) if c.deferred_for >= deferral_cap(c, wave) => Decision::Forward(Pass::DeferredEnough),
            Some(c) => match wave.action {
                WaveAction::Reject => Decision::Reject { targets: c.targets.clone() },
                // A User-Agent claim alone earns no place: the sender is verified, not
                // one of the wave's own actors, and (the quarantine checks) within its
                // domain's and its own share.
                WaveAction::Defer if short_retry(d, wave) && !c.wave_actor => Decision::Hold(Hold {
                    targets: c.targets.clone(),
                    signer: Some((w.actor.clone(), w.domain.clone())),
                    not_before: c
                        .hellthread_only
                        .then(|| c.now_ms + wave.shield_for.saturating_sub(c.deferred_for).as_millis() as u64),
                }),
                WaveAction::Defer => Decision::Defer { counted: Some(c.targets.clone()) },
            },
        },
    }
}

/// Whether the sender's User-Agent says it gives up within minutes (GoToSocial).
fn short_retry(d: &Delivery, wave: &WavePolicy) -> bool {
    d.parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).is_some_and(|ua| wave.is_short_retry(ua))
}

/// What became of a delivery once its decision was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Forward,
    Defer,
    FetchLater,
    Reject,
    Accepted,
}

impl Answer {
    /// What a replay of this delivery's signature is answered.
    pub(super) fn outcome(self) -> Outcome {
        match self {
            Answer::Forward => Outcome::Forwarded,
            Answer::Accepted => Outcome::Held,
            Answer::Defer | Answer::FetchLater | Answer::Reject => Outcome::Deferred,
        }
    }
}

/// The one mapping from what became of a delivery to what its sender is told.
pub(super) fn answer(a: Answer, d: Delivery, wave: &WavePolicy) -> Flow {
    let too_many = |retry_after: u64| {
        let mut resp = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        Flow::Respond(resp)
    };
    match a {
        Answer::Forward => Flow::Continue(Request::from_parts(d.parts, full(d.body))),
        Answer::Defer => too_many(wave.retry_after.as_secs().max(1)),
        // The budgets refill: try again in a while.
        Answer::FetchLater => too_many(60),
        Answer::Reject => Flow::Respond(json_error(
            StatusCode::FORBIDDEN,
            "this account is not accepting mentions from new senders right now",
        )),
        Answer::Accepted => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::ACCEPTED;
            Flow::Respond(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;
    use crate::{instance::OnBehalfOf, shield::mention::Addressed};

    const MASTODON: &str = "http.rb/5.2.0 (Mastodon/4.3.0; +https://remote.example/)";
    const GOTOSOCIAL: &str = "gotosocial/0.17.0 (+https://gts.example/)";

    fn delivery(standing: Standing, verdict: Verdict, user_agent: &str, addressed: usize) -> Delivery {
        let (parts, ()) = http::Request::post("/inbox").header("user-agent", user_agent).body(()).unwrap().into_parts();
        Delivery {
            parts,
            body: Bytes::from_static(b"{}"),
            reading: None,
            addressed: Addressed { total: addressed, ..Addressed::default() },
            verdict,
            replay: None,
            signature_key: None,
            domain_label: "remote.example".into(),
            client: 7,
            behalf: OnBehalfOf::Housekeeping,
            standing,
        }
    }

    fn verified() -> Verdict {
        Verdict::Verified { actor: "https://remote.example/users/troll".into(), domain: "remote.example".into() }
    }

    fn wave(action: WaveAction) -> WavePolicy {
        WavePolicy {
            enabled: true,
            action,
            shield_for: Duration::from_secs(3600),
            retry_after: Duration::from_secs(600),
            hellthread: 10,
            short_retry_agents: vec!["gotosocial".into()],
            ..WavePolicy::default()
        }
    }

    fn stranger(cover: Option<Cover>) -> Standing {
        Standing::Stranger(Weighed {
            actor: "https://remote.example/users/troll".into(),
            domain: "remote.example".into(),
            followed: false,
            earns_familiarity: true,
            cover,
        })
    }

    fn covering(targets: &[&str], deferred_for: Duration) -> Cover {
        Cover {
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            hellthread_only: false,
            deferred_for,
            wave_actor: false,
            now_ms: 1_000_000,
        }
    }

    #[test]
    fn nothing_to_weigh_is_forwarded() {
        let w = wave(WaveAction::Defer);
        for standing in [Standing::Unweighed, Standing::Familiar, stranger(None)] {
            let d = delivery(standing, verified(), MASTODON, 1);
            assert_eq!(decide(&d, &w), Decision::Forward(Pass::Clear));
        }
        let followed = Standing::Stranger(Weighed {
            actor: "a".into(),
            domain: "d".into(),
            followed: true,
            earns_familiarity: true,
            cover: None,
        });
        assert_eq!(decide(&delivery(followed, verified(), MASTODON, 1), &w), Decision::Forward(Pass::Followed));
    }

    #[test]
    fn a_replay_gets_its_first_copy_s_answer() {
        let w = wave(WaveAction::Defer);
        let replay = |first| {
            decide(&delivery(Standing::Replay(first), Verdict::Unverified(Rejection::Replayed), MASTODON, 1), &w)
        };
        assert_eq!(replay(Outcome::Forwarded), Decision::Forward(Pass::Clear));
        assert_eq!(replay(Outcome::Held), Decision::HeldAlready);
        assert_eq!(replay(Outcome::Deferred), Decision::Defer { counted: None });
        assert_eq!(replay(Outcome::Pending), Decision::Defer { counted: None }, "a concurrent copy is deferred");
    }

    /// An unverifiable delivery's answer depends on whom it addresses and on the fetch
    /// budget, never on a shield: it cannot be used to probe one.
    #[test]
    fn an_unverifiable_delivery_to_a_member_is_held_whatever_the_shields() {
        let w = wave(WaveAction::Reject);
        let unverifiable = |targets: &[&str]| Standing::Unverifiable {
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            now_ms: 5_000,
            deferred_for: Duration::ZERO,
        };
        let no_key = Verdict::Unverified(Rejection::KeyUnavailable);
        assert_eq!(
            decide(&delivery(unverifiable(&[]), no_key.clone(), MASTODON, 1), &w),
            Decision::Forward(Pass::Clear)
        );
        assert_eq!(
            decide(&delivery(unverifiable(&["alice"]), no_key.clone(), MASTODON, 1), &w),
            Decision::Hold(Hold { targets: vec!["alice".into()], signer: None, not_before: None })
        );
        let refused = Verdict::Unverified(Rejection::FetchRefused);
        assert_eq!(decide(&delivery(unverifiable(&["alice"]), refused.clone(), MASTODON, 1), &w), Decision::FetchLater);
        // Turned away for the budget no longer than `shield_for`: then held.
        let mut long = unverifiable(&["alice"]);
        if let Standing::Unverifiable { deferred_for, .. } = &mut long {
            *deferred_for = w.shield_for;
        }
        assert_eq!(
            decide(&delivery(long, refused, MASTODON, 1), &w),
            Decision::Hold(Hold { targets: vec!["alice".into()], signer: None, not_before: None })
        );
        // A hellthread is held until its deferral would have ended.
        assert_eq!(
            decide(&delivery(unverifiable(&["alice"]), no_key, MASTODON, 11), &w),
            Decision::Hold(Hold { targets: vec!["alice".into()], signer: None, not_before: Some(5_000 + 3_600_000) })
        );
    }

    #[test]
    fn a_covered_stranger_is_deferred_rejected_or_held_as_the_policy_says() {
        let covered = || stranger(Some(covering(&["alice"], Duration::from_secs(60))));
        let counted = Decision::Defer { counted: Some(vec!["alice".into()]) };
        assert_eq!(decide(&delivery(covered(), verified(), MASTODON, 1), &wave(WaveAction::Defer)), counted);
        assert_eq!(
            decide(&delivery(covered(), verified(), MASTODON, 1), &wave(WaveAction::Reject)),
            Decision::Reject { targets: vec!["alice".into()] }
        );
        // A sender that gives up within minutes is held instead, on its own share.
        let held = decide(&delivery(covered(), verified(), GOTOSOCIAL, 1), &wave(WaveAction::Defer));
        assert_eq!(
            held,
            Decision::Hold(Hold {
                targets: vec!["alice".into()],
                signer: Some(("https://remote.example/users/troll".into(), "remote.example".into())),
                not_before: None,
            })
        );
        // ...unless it is one of the wave's own actors.
        let mut cover = covering(&["alice"], Duration::from_secs(60));
        cover.wave_actor = true;
        let d = delivery(stranger(Some(cover)), verified(), GOTOSOCIAL, 1);
        assert_eq!(decide(&d, &wave(WaveAction::Defer)), counted);
    }

    #[test]
    fn no_delivery_is_deferred_longer_than_shield_for() {
        let w = wave(WaveAction::Defer);
        let at = |deferred_for| {
            decide(&delivery(stranger(Some(covering(&["alice"], deferred_for))), verified(), MASTODON, 1), &w)
        };
        assert!(matches!(at(Duration::from_secs(3599)), Decision::Defer { .. }));
        assert_eq!(at(Duration::from_secs(3600)), Decision::Forward(Pass::DeferredEnough));
        // A hellthread held by a short-retry sender goes out when its deferral would end.
        let mut cover = covering(&["alice", "bob"], Duration::from_secs(600));
        cover.hellthread_only = true;
        let d = delivery(stranger(Some(cover)), verified(), GOTOSOCIAL, 30);
        let Decision::Hold(hold) = decide(&d, &w) else { panic!("held") };
        assert_eq!(hold.not_before, Some(1_000_000 + 3_000_000));
    }

    #[tokio::test]
    async fn each_answer_is_what_the_sender_is_told() {
        let w = wave(WaveAction::Defer);
        let d = || delivery(Standing::Unweighed, verified(), MASTODON, 1);
        let status = |flow: Flow| match flow {
            Flow::Respond(resp) => (resp.status(), resp.headers().get(header::RETRY_AFTER).cloned()),
            Flow::Continue(_) => (StatusCode::OK, None),
        };
        assert!(matches!(answer(Answer::Forward, d(), &w), Flow::Continue(_)));
        assert_eq!(
            status(answer(Answer::Defer, d(), &w)),
            (StatusCode::TOO_MANY_REQUESTS, Some("600".parse().unwrap()))
        );
        assert_eq!(
            status(answer(Answer::FetchLater, d(), &w)),
            (StatusCode::TOO_MANY_REQUESTS, Some("60".parse().unwrap()))
        );
        assert_eq!(status(answer(Answer::Reject, d(), &w)).0, StatusCode::FORBIDDEN);
        assert_eq!(status(answer(Answer::Accepted, d(), &w)), (StatusCode::ACCEPTED, None));
        assert_eq!(Answer::Accepted.outcome(), Outcome::Held);
        assert_eq!(Answer::Reject.outcome(), Outcome::Deferred);
    }
}
