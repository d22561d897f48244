//! The inbox path, phase by phase, cheapest first:
//!
//! 1. the client-keyed `[[limit]]` rules, before the body is read or any key fetched;
//! 2. the body, exactly as received (≤ 1 MiB);
//! 3. what the instance will refuse anyway — another `Host`, no signature, a signature
//!    outside its window or over another body — is forwarded as it is, costing nothing
//!    more: no parse, no key fetch, no lookup;
//! 4. a replayed signature gets the first copy's answer;
//! 5. the body read as the instance reads it ([`super::document`], [`super::mention`]; on
//!    the blocking pool when large), the key fetched within its budgets and the
//!    signature verified, the signer's domain checked against the instance's blocks;
//! 6. the signer-keyed `[[limit]]` rules;
//! 7. what the shields say is gathered ([`Shield::assess`]: unverifiable-now deliveries,
//!    whom they reach; verified ones, familiarity, follows, the wave detector, the
//!    hellthread rule and the per-delivery deferral cap, in that order), decided by
//!    [`super::decision::decide`], applied (the quarantine, the counters) and answered
//!    through [`super::decision::answer`].
//!
//! "Reach" is [`super::mention`]'s reading: what the instance drops (a ghost) reaches
//! nobody — it is forwarded, counted toward nothing, and teaches no familiarity; what
//! makes the instance fetch a post may reach anyone, so during a shield it is held back
//! from every shielded member who does not follow its sender.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Instant, SystemTime},
};

use bytes::Bytes;

use super::{
    Active, MAX_DELIVERY, MAX_ID_LOOKUPS, Outcome, Rules, Shield, ShieldError, Tally,
    accounts::{self, Key},
    decision::{self, Answer, Cover, Decision, Pass, Standing, Weighed},
    document::{self, Reading},
    mention::{self, Addressed, InboxPath, LocalHosts, LocalRef, Reach},
    ns,
    quarantine::{ANY_SHIELDED, Hold, HoldRequest, UNREADABLE},
    signature::{self, Rejection, SignedBy, Verdict},
    stage::{AcceptedFrom, too_many},
    wave,
};
use crate::{
    instance::OnBehalfOf,
    proxy::contract::{Flow, ProxyError, Request, RequestCtx, RouteClass},
    store::now_ms,
};

/// One inbox delivery as the shield sees it, once examined.
pub(super) struct Delivery {
    pub(super) parts: http::request::Parts,
    pub(super) body: Bytes,
    /// The body as the instance reads it (None: never read, the instance refuses it).
    pub(super) reading: Option<Reading>,
    /// Whom it addresses (read with the body).
    pub(super) addressed: Addressed,
    pub(super) verdict: Verdict,
    /// A replayed signature: what became of its first copy.
    pub(super) replay: Option<Outcome>,
    /// The signature's replay key, to record this delivery's outcome under.
    pub(super) signature_key: Option<u64>,
    /// For the tallies: the verified domain, or what an unverified one claimed.
    pub(super) domain_label: String,
    /// The connecting client (keyed hash): whose share of the quarantine an unverified
    /// delivery uses.
    pub(super) client: u64,
    /// Whom the instance reads pavise does because of this delivery are for: the sending
    /// server's pseudonym, so the instance's own throttles count them (issue 16, F4).
    pub(super) behalf: OnBehalfOf,
    /// What the shields say about it (gathered in phase 7).
    pub(super) standing: Standing,
}

/// Reads the body whole (its digest covers every byte), capped at Mastodon's own limit
/// and charged to the relay's body budget like every body a stage holds.
async fn read_body(ctx: &RequestCtx, req: Request) -> Result<(http::request::Parts, Bytes), ProxyError> {
    let (parts, body) = req.into_parts();
    let cap = MAX_DELIVERY as u64;
    let body = crate::proxy::contract::budget::read_whole(ctx.hold_body(body, cap), cap).await?;
    Ok((parts, body))
}

/// Reads a body and whom it addresses; large bodies on the blocking pool, so that no async
/// worker is tied up by one delivery.
async fn read_document(body: &Bytes, locals: &LocalHosts) -> (Reading, Addressed) {
    let work = |body: &[u8], locals: &LocalHosts| {
        let reading = document::read(body);
        let addressed = match &reading {
            // Too long to read in full (a hellthread, past 1,000 addressees): every name in
            // it is found the way an opaque body's are, so none hides behind the others.
            Reading::Exact(doc) => match mention::read(doc, locals) {
                exact if exact.truncated => exact.joined(mention::read_opaque(body, locals)),
                exact => exact,
            },
            Reading::Opaque(_) => mention::read_opaque(body, locals),
        };
        (reading, addressed)
    };
    if body.len() <= document::INLINE_LIMIT {
        return work(body, locals);
    }
    let (body, locals) = (body.clone(), locals.clone());
    tokio::task::spawn_blocking(move || work(&body, &locals)).await.unwrap_or_else(|_| {
        (Reading::Opaque(document::Unreadable::NotStrictJson), Addressed { opaque: true, ..Addressed::default() })
    })
}

impl Shield {
    pub(super) async fn inbox(
        &self,
        ctx: &mut RequestCtx,
        req: Request,
        active: Arc<Active>,
        inbox: InboxPath,
    ) -> Result<Flow, ProxyError> {
        // 1. Limits that need no signature: before the body, before any fetch.
        let request_parts = (req.method(), ctx.route.path.as_str(), req.headers());
        if let Err(denied) =
            self.check_limits(&active, RouteClass::Inbox, request_parts, ctx.pseudonym, None, Rules::Local)
        {
            self.stats.limited.fetch_add(1, Relaxed);
            return Ok(Flow::Respond(too_many(&denied)));
        }
        // 2–5.
        let (parts, body) = read_body(ctx, req).await?;
        let mut d = self.examine(ctx, parts, body).await;
        // 6.
        let request_parts = (&d.parts.method, ctx.route.path.as_str(), &d.parts.headers);
        let checked = match self.check_limits(
            &active,
            RouteClass::Inbox,
            request_parts,
            ctx.pseudonym,
            Some(&d.verdict),
            Rules::Signer,
        ) {
            // `[cluster]`: every rule the delivery matched, decided once across the nodes.
            Ok(()) => {
                let limits = self.shared_limits(
                    &active,
                    RouteClass::Inbox,
                    request_parts,
                    ctx.pseudonym,
                    Some(&d.verdict),
                    Rules::All,
                );
                self.check_shared_limits(&active, limits).await
            }
            Err(denied) => Err(denied),
        };
        if let Err(denied) = checked {
            self.stats.limited.fetch_add(1, Relaxed);
            Self::tally(&self.domain_tallies, &d.domain_label).limited.fetch_add(1, Relaxed);
            if let Some(key) = d.signature_key {
                self.seen_signatures.insert(key, Outcome::Deferred);
            }
            return Ok(Flow::Respond(too_many(&denied)));
        }
        // 7.
        d.standing = self.assess(&d, &inbox, &active).await;
        let wave = &active.policy.wave;
        let decision = decision::decide(&d, wave);
        let signature_key = d.signature_key;
        let (answer, outcome) = self.apply(ctx, &d, decision).await;
        if let Some(key) = signature_key {
            self.seen_signatures.insert(key, outcome);
        }
        Ok(decision::answer(answer?, d, wave))
    }

    /// Phases 2–5: what the delivery is, as cheaply as that can be told.
    async fn examine(&self, ctx: &RequestCtx, parts: http::request::Parts, body: Bytes) -> Delivery {
        let client = self.hasher.hash(ns::CLIENT, ctx.pseudonym);
        let mut d = Delivery {
            parts,
            body,
            reading: None,
            addressed: Addressed::default(),
            verdict: Verdict::Unverified(Rejection::Unsigned),
            replay: None,
            signature_key: None,
            domain_label: "(unsigned)".to_owned(),
            client,
            behalf: OnBehalfOf::Client(ctx.pseudonym),
            standing: Standing::Unweighed,
        };
        let host = ctx.host.as_deref().unwrap_or("");
        // Rails refuses any other Host: a delivery signed for another instance (relayed
        // here by it) is not this instance's, whoever signed it.
        if !self.domains.accepts_host(host) {
            d.domain_label = "(another host)".to_owned();
            d.verdict = self.count(Verdict::Unverified(Rejection::ForeignHost));
            return d;
        }
        let by = signature::parse(&d.parts.headers);
        let now = SystemTime::now();
        let early = match &by {
            Err(why) => Some(*why),
            Ok(by) => {
                d.domain_label = format!("{} (unverified)", by.domain);
                let signed = signed_parts(&d.parts, host, &d.body);
                signature::check_request(by, &signed, now).err()
            }
        };
        if let Some(why) = early
            && why.instance_refuses()
        {
            d.verdict = self.count(Verdict::Unverified(why));
            return d;
        }
        // A replay (the very same signature, over the very same body) is not a new delivery.
        if early.is_none()
            && let Ok(by) = &by
        {
            let key = self.hasher.hash(ns::SIGNATURE, (&by.key_id, signature_bytes(by)));
            let mut fresh = false;
            let first = self.seen_signatures.get_with(key, || {
                fresh = true;
                Outcome::Pending
            });
            if !fresh {
                d.replay = Some(first);
                d.verdict = self.count(Verdict::Unverified(Rejection::Replayed));
                return d;
            }
            d.signature_key = Some(key);
        }
        let (reading, addressed) = read_document(&d.body, self.domains.locals()).await;
        d.addressed = addressed;
        let verdict = match (early, &by) {
            (Some(why), _) => Verdict::Unverified(why),
            (None, Err(why)) => Verdict::Unverified(*why),
            (None, Ok(by)) => {
                let signed = signed_parts(&d.parts, host, &d.body);
                match self.verifier.verify(by, &signed, now, Some(client)).await {
                    Verdict::Verified { actor, domain } => {
                        // Mastodon processes an activity as the signer's only when it names
                        // the signer as its actor (or names none); another actor's needs a
                        // Linked Data signature pavise does not check, so it proves nothing.
                        let named = match &reading {
                            Reading::Exact(doc) => doc.get("actor").and_then(mention::id_of),
                            Reading::Opaque(_) => None,
                        };
                        if named.is_some_and(|a| a != actor) {
                            Verdict::Unverified(Rejection::ForeignActor)
                        } else if self.blocks.is_blocked(&domain) {
                            d.domain_label = format!("{domain} (suspended)");
                            Verdict::Unverified(Rejection::DomainBlocked)
                        } else {
                            d.domain_label.clone_from(&domain);
                            Verdict::Verified { actor, domain }
                        }
                    }
                    other => other,
                }
            }
        };
        d.reading = Some(reading);
        d.verdict = self.count(verdict);
        d
    }

    /// Verifies a signed GET (authorized fetch) for the per-signer limits.
    pub(super) async fn verify_fetch(&self, ctx: &RequestCtx, parts: &http::request::Parts) -> Verdict {
        let host = ctx.host.as_deref().unwrap_or("");
        if !self.domains.accepts_host(host) {
            return self.count(Verdict::Unverified(Rejection::ForeignHost));
        }
        let verdict = match signature::parse(&parts.headers) {
            Err(why) => Verdict::Unverified(why),
            Ok(by) => {
                let signed = signed_parts(parts, host, b"");
                let client = self.hasher.hash(ns::CLIENT, ctx.pseudonym);
                match self.verifier.verify(&by, &signed, SystemTime::now(), Some(client)).await {
                    Verdict::Verified { domain, .. } if self.blocks.is_blocked(&domain) => {
                        Verdict::Unverified(Rejection::DomainBlocked)
                    }
                    v => v,
                }
            }
        };
        self.count(verdict)
    }

    /// The local accounts a delivery reaches, each with how it reaches her (every way
    /// together, [`Reach::with`]), including the owner of a personal inbox it carries a post to;
    /// and whether it may reach others pavise cannot name ([`ANY_SHIELDED`]). Ids are looked
    /// up only when `lookups`.
    async fn targets_of(&self, d: &Delivery, inbox: &InboxPath, lookups: bool) -> (Vec<(String, Reach)>, bool) {
        let mut refs: Vec<(LocalRef, Reach)> =
            d.addressed.local.iter().cloned().zip(d.addressed.reach.iter().copied()).collect();
        // A post delivered to a member's own inbox reaches the member whatever its
        // addressing (Mastodon's `delivered_to_account_id` puts her in its audience: a
        // silent mention, or a notified one when it tags her); an unreadable body there may
        // be anything. Only `/users/NAME/inbox` is hers: Rails routes `/ap/users/ID/inbox`
        // to the shared inbox (`InboxesController#account_required?` reads the username
        // only), so there the owner is held back for, never counted.
        let post = match &d.reading {
            Some(Reading::Exact(_)) => Some(d.addressed.post),
            _ => None,
        };
        match inbox {
            InboxPath::Personal(owner @ LocalRef::Name(_)) => match (refs.iter_mut().find(|(r, _)| r == owner), post) {
                // Tagged and now in the audience stays possible: whether the post is taken
                // (an `Update` of an old unknown one is not) pavise cannot see.
                (None, Some(true)) => refs.push((owner.clone(), Reach::Silent)),
                // What an opaque body brings to her own inbox may be anything.
                (None, None) => refs.push((owner.clone(), Reach::Possible)),
                _ => {}
            },
            InboxPath::Personal(owner) if post != Some(false) && !refs.iter().any(|(r, _)| r == owner) => {
                refs.push((owner.clone(), Reach::Unresolved));
            }
            _ => {}
        }
        let host = self.domains.primary().unwrap_or("");
        let mut names: Vec<(String, Reach)> = Vec::with_capacity(refs.len());
        let mut any = d.addressed.opaque;
        let mut looked_up = 0;
        for (r, reach) in &refs {
            let key = match r {
                LocalRef::Name(name) => Key::Member(name.clone()),
                // Only verified deliveries are worth a question to the instance.
                _ if !lookups => Key::Unknown,
                LocalRef::Id(id) if looked_up >= MAX_ID_LOOKUPS => Key::Member(accounts::unnamed(*id)),
                LocalRef::StatusOwner(_) if looked_up >= MAX_ID_LOOKUPS => Key::Unknown,
                _ => {
                    looked_up += 1;
                    self.accounts.key(r, host, d.behalf).await
                }
            };
            match key {
                Key::Member(name) => match names.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, known)) => *known = known.with(*reach),
                    None => names.push((name, *reach)),
                },
                Key::Nobody => {}
                Key::Unknown => any = true,
            }
        }
        (names, any)
    }

    /// Phase 7's gathering: what the shields say about the delivery, read from the
    /// instance (whom it addresses, who follows whom), the store (familiarity) and the
    /// wave detector, which observes it here.
    async fn assess(&self, d: &Delivery, inbox: &InboxPath, active: &Active) -> Standing {
        let wave = &active.policy.wave;
        match (&d.verdict, d.replay) {
            _ if !wave.enabled => Standing::Unweighed,
            (_, Some(first)) => Standing::Replay(first),
            (Verdict::Unverified(why), None) if why.instance_refuses() => Standing::Unweighed,
            // Never counted toward a wave, never a lookup: whom it names, as it names them.
            (Verdict::Unverified(_), None) => {
                let (targets, any) = self.targets_of(d, inbox, false).await;
                let mut targets: Vec<String> = targets.into_iter().map(|(name, _)| name).collect();
                if any {
                    targets.push(ANY_SHIELDED.to_owned());
                }
                // Its first attempt is remembered, as a deferred verified one's is.
                let deferred_for = match d.verdict {
                    Verdict::Unverified(Rejection::FetchRefused) if !targets.is_empty() => {
                        self.deferred_for(d, super::clock::now())
                    }
                    _ => std::time::Duration::ZERO,
                };
                Standing::Unverifiable { targets, now_ms: now_ms(), deferred_for }
            }
            (Verdict::Verified { actor, domain }, None) => self.weigh(d, inbox, active, actor, domain).await,
        }
    }

    /// How long ago this delivery was first turned away. The same activity comes back with
    /// every retry: its first deferral is remembered (by its body), so none is deferred
    /// longer than its cap.
    fn deferred_for(&self, d: &Delivery, now: std::time::Instant) -> std::time::Duration {
        now.saturating_duration_since(self.deferrals.get_with(self.hasher.hash(ns::BODY, &d.body[..]), || now))
    }

    /// A verified delivery: familiarity, follows, the wave, hellthreads, the deferral cap.
    async fn weigh(&self, d: &Delivery, inbox: &InboxPath, active: &Active, actor: &str, domain: &str) -> Standing {
        let wave = &active.policy.wave;
        if self.familiar.is_familiar(actor, now_ms(), wave.familiar_after).await {
            return Standing::Familiar;
        }
        let (accounts, any) = self.targets_of(d, inbox, true).await;
        let now = super::clock::now();
        let host = self.domains.primary().unwrap_or("").to_owned();
        if let Some(Reading::Exact(doc)) = &d.reading
            && let Some(member) = super::follows::accept_hint(doc, self.domains.locals())
            && self.waves.shield_until(&member, now).is_some()
        {
            // Only a hint: the instance's collection is read again, and only it is believed.
            self.follows.hint(&member, &host);
        }
        // A member's own follows are wanted by that member: never counted, never deferred.
        let mut followed = false;
        let mut strangers_to = Vec::with_capacity(accounts.len());
        let mut reach = Vec::with_capacity(accounts.len());
        for (account, how) in accounts {
            if self.follows.follows(&account, actor) {
                followed = true;
            } else {
                strangers_to.push(account);
                reach.push(how);
            }
        }
        let sender = self.hasher.hash(ns::SENDER, actor);
        let params = active.wave_params();
        // Only members count: a made-up name is asked about once (a few per delivery).
        let mut asked = 0;
        let mut members = Vec::with_capacity(strangers_to.len());
        for (account, how) in strangers_to.iter().zip(&reach) {
            if !self.accounts.knows(account) {
                if asked >= MAX_ID_LOOKUPS {
                    continue;
                }
                asked += 1;
            }
            if self.accounts.exists(account, &host, d.behalf).await {
                members.push((account.as_str(), *how));
            }
        }
        // What a member may be shown counts ([`Reach`]): a tag, alone too (whether the
        // instance takes such a post depends on its follows and relays, which pavise
        // cannot see: [`super::mention`]'s "where pavise cannot see, it counts"); a silent
        // mention never, nor a spelling Mastodon resolves to nobody.
        let counted: Vec<&str> = members
            .iter()
            .filter(|(_, how)| match how {
                Reach::Notified | Reach::Possible => true,
                Reach::Silent | Reach::Unresolved => false,
            })
            .map(|(account, _)| *account)
            .collect();
        // A body pavise cannot read may address anyone, by names no string in it holds
        // whole, and so may a post given by reference: distinct verified actors sending
        // them count toward a wave of their own, whose shield holds back every delivery
        // whom pavise cannot name (and nothing else).
        if (matches!(d.reading, Some(Reading::Opaque(_))) || d.addressed.by_reference) && !followed {
            let raised =
                self.waves.observe(UNREADABLE, sender, domain, now, &params).outcome == wave::Observed::ShieldRaised;
            if raised {
                tracing::warn!("a wave of deliveries pavise cannot read: such deliveries are shielded");
                self.stats.shields_raised.fetch_add(1, Relaxed);
            }
        }
        // Familiarity is earned only by what she was surely shown: counting where pavise
        // cannot see is safe for a wave (a ghost costs the attacker real actors), not for
        // trust (puppets warmed on posts the instance drops would pass a later wave).
        let earns_familiarity = followed || members.iter().any(|(_, how)| *how == Reach::Notified);
        for account in counted {
            let mut raised =
                self.waves.observe(account, sender, domain, now, &params).outcome == wave::Observed::ShieldRaised;
            // Counted across every node too (this node's own count stays the fallback).
            if let Some(shared) = self.shared.get()
                && let Some(crate::cluster::redis::SharedWave::Raised { senders }) =
                    shared.observe_wave(account, actor, &params).await
            {
                tracing::warn!(account, actors = senders, "mention wave (across the cluster): account shielded");
                raised = true;
            }
            if raised {
                self.stats.shields_raised.fetch_add(1, Relaxed);
                if self.cfg.learn_following {
                    self.follows.learn_from_instance(account, &host);
                }
            }
        }
        let shared_shields = match self.shared.get() {
            Some(shared) => shared.shielded(&strangers_to).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let mut shielded: Vec<String> = strangers_to
            .iter()
            .enumerate()
            .filter(|(i, a)| self.waves.shield_until(a, now).is_some() || shared_shields.get(*i) == Some(&true))
            .map(|(_, a)| a.clone())
            .collect();
        if any {
            // The instance will fetch the object (or reads what pavise cannot) and may find
            // any member mentioned in it, besides those pavise found named.
            for account in self.shielded_everywhere(now).await {
                if !shielded.contains(&account) && !self.follows.follows(&account, actor) {
                    shielded.push(account);
                }
            }
        }
        let hellthread = wave.hellthread > 0 && d.addressed.total > wave.hellthread && !followed;
        let cover = (!shielded.is_empty() || hellthread).then(|| {
            let deferred_for = self.deferred_for(d, now);
            let hellthread_only = shielded.is_empty();
            let targets = if hellthread_only { strangers_to } else { shielded };
            // The wave's own actors hold nothing: their deliveries are deferred.
            let wave_actor = targets.iter().any(|t| self.waves.is_wave_actor(t, sender));
            Cover { targets, hellthread_only, deferred_for, wave_actor, now_ms: now_ms() }
        });
        Standing::Stranger(Weighed {
            actor: actor.to_owned(),
            domain: domain.to_owned(),
            followed,
            earns_familiarity,
            cover,
        })
    }

    /// Does what `decision` says: the quarantine, the counters, the familiarity watch.
    /// Returns what became of the delivery (a hold the quarantine has no room for is
    /// deferred) and what a replay of its signature is told; a quarantine that cannot be
    /// written is a failure (503, so the sender keeps the delivery).
    async fn apply(
        &self,
        ctx: &mut RequestCtx,
        d: &Delivery,
        decision: Decision,
    ) -> (Result<Answer, ProxyError>, Outcome) {
        let tally = |targets: &[String], f: fn(&Tally) -> &std::sync::atomic::AtomicU64| {
            f(&Self::tally(&self.domain_tallies, &d.domain_label)).fetch_add(1, Relaxed);
            for t in targets {
                f(&Self::tally(&self.targets, t)).fetch_add(1, Relaxed);
            }
        };
        let answer = match decision {
            Decision::Forward(pass) => {
                match pass {
                    Pass::Clear => {}
                    Pass::Followed => {
                        self.stats.followed_passed.fetch_add(1, Relaxed);
                    }
                    Pass::DeferredEnough => {
                        self.stats.deferred_enough.fetch_add(1, Relaxed);
                    }
                }
                self.stats.passed.fetch_add(1, Relaxed);
                // Watched when it carried something to a member: if the instance accepts
                // it, its sender was seen delivering ([`super::familiar`]).
                if let Standing::Stranger(w) = &d.standing
                    && w.earns_familiarity
                {
                    ctx.extensions.insert(AcceptedFrom(w.actor.clone()));
                }
                Answer::Forward
            }
            Decision::Defer { counted } => {
                self.stats.deferred.fetch_add(1, Relaxed);
                if let Some(targets) = counted {
                    tally(&targets, |t| &t.deferred);
                }
                Answer::Defer
            }
            Decision::FetchLater => {
                self.stats.deferred.fetch_add(1, Relaxed);
                Answer::FetchLater
            }
            Decision::Reject { targets } => {
                self.stats.rejected.fetch_add(1, Relaxed);
                tally(&targets, |t| &t.rejected);
                Answer::Reject
            }
            Decision::HeldAlready => Answer::Accepted,
            Decision::Hold(hold) => {
                let share = match &hold.signer {
                    Some((actor, domain)) => (self.hasher.hash(ns::DOMAIN, domain), self.hasher.hash(ns::ACTOR, actor)),
                    None => (d.client, 0),
                };
                let actor = hold.signer.as_ref().map(|(actor, _)| actor.as_str());
                match self.hold(ctx, d, hold.targets.clone(), actor, share, hold.not_before).await {
                    Ok(Hold::Held(_)) if hold.signer.is_some() => {
                        self.stats.held.fetch_add(1, Relaxed);
                        tally(&hold.targets, |t| &t.held);
                        Answer::Accepted
                    }
                    Ok(Hold::Held(_)) => {
                        self.stats.held_unverified.fetch_add(1, Relaxed);
                        // No shield covers it: it goes out at once.
                        if hold.not_before.is_none() && !self.held_back(&hold.targets, None, super::clock::now()) {
                            self.release_soon.notify_one();
                        }
                        Answer::Accepted
                    }
                    Ok(Hold::Full) => {
                        self.stats.deferred.fetch_add(1, Relaxed);
                        if hold.signer.is_some() {
                            tally(&hold.targets, |t| &t.deferred);
                        }
                        Answer::Defer
                    }
                    Err(e) => return (Err(store_failed(&e)), Outcome::Deferred),
                }
            }
        };
        (Ok(answer), answer.outcome())
    }

    /// Puts one delivery in the quarantine (client-IP headers replaced by the pseudonym).
    async fn hold(
        &self,
        ctx: &RequestCtx,
        d: &Delivery,
        targets: Vec<String>,
        actor: Option<&str>,
        share_keys: (u64, u64),
        not_before: Option<u64>,
    ) -> Result<Hold, ShieldError> {
        let mut headers = d.parts.headers.clone();
        // Over HTTP/2 the Host the sender signed came as `:authority`: keep it as `Host`, or
        // the replay would carry the upstream's address and fail the instance's signature check.
        if !headers.contains_key(http::header::HOST)
            && let Some(host) = ctx.host.as_deref().and_then(|h| http::HeaderValue::from_str(h).ok())
        {
            headers.insert(http::header::HOST, host);
        }
        crate::privacy::headers::strip_client_ip_and_geo(&mut headers);
        crate::privacy::headers::set_forwarded(&mut headers, ctx.forwarded_for(), ctx.https, ctx.host.as_deref());
        let path = d.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        self.quarantine
            .hold(HoldRequest {
                method: &d.parts.method,
                path_and_query: path,
                headers: &headers,
                body: &d.body,
                domain: &d.domain_label,
                targets,
                actor,
                share_keys,
                not_before,
            })
            .await
    }

    /// Whether a delivery addressed to `targets` (and from `actor`, if known) is held back
    /// by a shield now: some target shielded and not following the actor ([`ANY_SHIELDED`]:
    /// any shielded member).
    pub(super) fn held_back(&self, targets: &[String], actor: Option<&str>, now: Instant) -> bool {
        let covers =
            |t: &str| self.waves.shield_until(t, now).is_some() && !actor.is_some_and(|a| self.follows.follows(t, a));
        targets
            .iter()
            .any(|t| if t == ANY_SHIELDED { self.waves.shielded(now).iter().any(|s| covers(s)) } else { covers(t) })
    }
}

/// The request parts a signature covers, as the instance will see them.
pub(super) fn signed_parts<'a>(
    parts: &'a http::request::Parts,
    host: &'a str,
    body: &'a [u8],
) -> signature::Signed<'a> {
    // Federation is https end to end even when a TLS edge talks plain HTTP to us: RFC
    // 9421 senders sign an https `@target-uri`.
    signature::Signed { method: &parts.method, uri: &parts.uri, headers: &parts.headers, host, https: true, body }
}

fn signature_bytes(by: &SignedBy) -> &[u8] {
    match &by.format {
        signature::Format::Cavage { signature, .. } | signature::Format::Rfc9421 { signature, .. } => signature,
    }
}

/// Could not keep it: let the sender keep it (503 is retried by all).
fn store_failed(e: &ShieldError) -> ProxyError {
    tracing::error!(error = %e, "quarantine write failed; answering 503 so the sender keeps the delivery");
    ProxyError::Unavailable { reason: "try again later".into(), retry_after: 30 }
}
