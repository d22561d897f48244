//! Durable state: everything that must survive a restart or a `kill -9` goes through the
//! [`Store`] trait — the expiry schedule and the sealed credentials it needs today, the
//! shield's first-seen senders and quarantine later.
//!
//! Why a trait: one pavise node keeps its state in an embedded redb file in the data dir
//! ([`embedded`], nothing to install); several nodes behind one load balancer will share
//! a PostgreSQL database instead. So the trait speaks in pavise's own terms (status ids,
//! deadlines, claims with leases), never in a backend's types, and its semantics are the
//! ones PostgreSQL can give honestly:
//! - every write is durable (fsync'd, or committed in PostgreSQL) when its future resolves:
//!   the relay answers the client only after that;
//! - work is *claimed* with a lease ([`ScheduleStore::claim_due`]): a node that dies while
//!   holding a claim loses it when the lease runs out, and another node (or the same one,
//!   restarted) claims the item again (`FOR UPDATE SKIP LOCKED` in PostgreSQL);
//! - the methods are async (boxed futures, so the trait stays object-safe): the embedded
//!   backend runs its blocking file I/O off the async workers.
//!
//! The trait is split by concern, one sub-trait per feature, and [`Store`] is their sum.
//! A feature adds its own sub-trait here (and its tables in each backend) without touching
//! the others' methods.

pub mod embedded;
pub mod perms;
pub mod postgres;
pub mod seal;

use std::{future::Future, pin::Pin};

use serde::{Deserialize, Serialize};

pub use embedded::{EmbeddedStore, Rotation, StoreOptions};
pub use seal::{RecordSeal, StoreKey};

/// Milliseconds since the Unix epoch: the one time unit stored (portable across nodes,
/// unlike `Instant`).
pub type UnixMs = u64;

/// The current wall-clock time in [`UnixMs`].
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the store could not do. Cloneable: one failed batch commit answers every waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {message}")]
    Open { path: String, message: String },
    #[error("store backend: {0}")]
    Backend(String),
    #[error("store record {key:?} is unreadable: {message}")]
    Corrupt { key: String, message: String },
    #[error("the store is shut down")]
    Closed,
}

/// A boxed future of a store result, for the object-safe traits below.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The whole durable state. Sections: [`ScheduleStore`] + [`CredentialStore`] (expiry),
/// [`ShieldStore`] (the shield's first-seen senders and quarantine).
pub trait Store: ScheduleStore + CredentialStore + ShieldStore + Send + Sync + 'static {}

impl<T: ScheduleStore + CredentialStore + ShieldStore + Send + Sync + 'static> Store for T {}

// ---------------------------------------------------------------------------------------
// Expiry: the deletion schedule.
// ---------------------------------------------------------------------------------------

/// Where one scheduled deletion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryState {
    /// Waiting for its deadline (or for its next attempt after a retryable failure).
    Pending,
    /// A scheduler holds it until `lease_until`; then it is due again.
    Claimed,
    /// The instance answered the `DELETE`; still hidden, until a later look confirms the
    /// instance no longer serves it (Mastodon removes a post's traces in a background job).
    /// Then the item is purged: no row outlives what the edge needs.
    Deleted,
    /// A keep rule held at the deadline (pinned, favourited, ...). Re-checked when the
    /// author undoes what kept it.
    Kept,
    /// Cannot go on without a person: e.g. the author's token was revoked. Retried when a
    /// new token for the account appears.
    Failed,
    /// No longer scheduled: the author deleted the post, or an edit matched no rule. Purged
    /// as soon as it is recorded (only a count remains).
    Cancelled,
}

impl ExpiryState {
    pub const ALL: [ExpiryState; 6] = [
        ExpiryState::Pending,
        ExpiryState::Claimed,
        ExpiryState::Deleted,
        ExpiryState::Kept,
        ExpiryState::Failed,
        ExpiryState::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExpiryState::Pending => "pending",
            ExpiryState::Claimed => "claimed",
            ExpiryState::Deleted => "deleted",
            ExpiryState::Kept => "kept",
            ExpiryState::Failed => "failed",
            ExpiryState::Cancelled => "cancelled",
        }
    }

    pub fn from_name(name: &str) -> Option<ExpiryState> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the item still needs the author's credential: only while a deletion is on
    /// its way (pending, claimed; a deleted item, to confirm it). A kept or failed item does
    /// not hold the author's token: a kept post that becomes due again (its author unpins it
    /// through pavise) takes the token of that request, a failed one the next new token.
    pub fn needs_credential(self) -> bool {
        matches!(self, ExpiryState::Pending | ExpiryState::Claimed | ExpiryState::Deleted)
    }

    /// Whether a post in this state must not be served once its deadline has passed.
    pub fn hides(self) -> bool {
        matches!(self, ExpiryState::Pending | ExpiryState::Claimed | ExpiryState::Deleted | ExpiryState::Failed)
    }
}

/// Keep conditions the author set through pavise (pin, favourite, bookmark of their own
/// post). The scheduler re-reads the real values from the instance before deleting; these
/// let the edge and the admin view know without asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepFlags {
    pub pinned: bool,
    pub favourited: bool,
    pub bookmarked: bool,
}

/// One scheduled deletion, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    /// The instance's status id (a string: snowflakes in Mastodon, ULIDs elsewhere).
    pub status_id: String,
    /// The author's local username.
    pub account: String,
    /// The policy rule that scheduled it, or `expires_in` for a per-post expiry.
    pub rule: String,
    pub created_at: UnixMs,
    /// When the post stops being served and becomes due for deletion.
    pub deadline: UnixMs,
    pub state: ExpiryState,
    /// When it is next due (pending), or when the current claim runs out (claimed).
    pub next_attempt: UnixMs,
    /// Failed attempts so far (rate-limit waits do not count).
    pub attempts: u32,
    /// The sealed credential that can delete it.
    pub credential: Option<String>,
    /// Why it is failed, kept, cancelled, or why the last attempt did not work.
    pub reason: Option<String>,
    pub flags: KeepFlags,
    /// When the state last changed.
    pub updated_at: UnixMs,
    /// The `Host` the post was created through: the instance answers only to its own name.
    #[serde(default)]
    pub host: Option<String>,
    /// When pavise last read the post's keep conditions from the instance itself (a sweep
    /// just did): the scheduler need not fetch it again right away.
    #[serde(default)]
    pub checked_at: Option<UnixMs>,
    /// Set while the post's own id is not known yet: a `scheduled_at` post the instance
    /// publishes later, or a creation whose answer was lost. `status_id` is then
    /// `scheduled/<ScheduledStatus id>` (or `creation/<random>`), and the item is never
    /// hidden; once the status is found, it is scheduled under its own id.
    #[serde(default)]
    pub publication: Option<Publication>,
    /// The post's hashtags as pavise last read them: the keep rules are judged on these
    /// (and the keep flags) when the instance will not let pavise read the post again (a
    /// token without a read scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The post's poll and media, hidden with it.
    #[serde(default, skip_serializing_if = "Attachments::is_empty")]
    pub attachments: Attachments,
}

/// What a post carries that has URLs of its own: its poll and media attachments (Mastodon
/// serves them at `/api/v1/polls/:id`, `/api/v1/media/:id`, `/media/:shortcode`,
/// `/media_proxy/:id/...` and `/system/.../<id partition>/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachments {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<String>,
    /// Media attachment ids (canonical decimal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// Media shortcodes (`/media/:shortcode`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortcodes: Vec<String>,
}

impl Attachments {
    pub fn is_empty(&self) -> bool {
        self.poll.is_none() && self.media.is_empty() && self.shortcodes.is_empty()
    }
}

/// A post whose own status id pavise does not know yet: one the instance will publish later
/// (`scheduled_at`, its expiry counted from publication), or one whose creation answer was
/// lost (timeout, reset, 5xx after the instance may have created it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The instance's `ScheduledStatus` id (empty for a lost creation).
    pub scheduled_id: String,
    /// Which of the two it is.
    #[serde(default)]
    pub kind: PublicationKind,
    /// When the instance said it will publish it.
    pub scheduled_at: UnixMs,
    /// The author's `expires_in`, if any (otherwise the policies decide at publication).
    pub expires_in: Option<u64>,
    /// A keyed digest of the text and content warning, to recognise the published status
    /// (never the text itself).
    pub digest: String,
    /// Looks at the author's statuses so far that did not find it.
    #[serde(default)]
    pub searches: u32,
}

/// What a [`Publication`] waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicationKind {
    /// A `ScheduledStatus` the instance publishes at `scheduled_at`.
    #[default]
    Scheduled,
    /// A creation the instance may have carried out though its answer never came: looked
    /// for among the author's newest statuses, created after `scheduled_at` (when it was
    /// sent).
    LostAnswer,
}

/// Where the sweep of one member's archive (the posts from before pavise) stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepProgress {
    /// The member's local username.
    pub account: String,
    pub state: SweepState,
    /// The id of the sealed credential the sweep (and its deletions) use.
    pub credential: Option<String>,
    /// That credential itself while the sweep runs (so an interrupted one can resume);
    /// dropped when it ends.
    #[serde(default)]
    pub token: Option<SealedCredential>,
    /// The `Host` to address the instance with.
    pub host: Option<String>,
    /// The oldest status id read so far: where a resumed sweep continues (`max_id`).
    pub cursor: Option<String>,
    pub seen: u64,
    pub scheduled: u64,
    pub already_due: u64,
    pub started_at: UnixMs,
    pub updated_at: UnixMs,
    pub finished_at: Option<UnixMs>,
    /// Why it stopped, when it failed.
    pub reason: Option<String>,
    /// A digest of the rules it swept under: new rules, a new sweep.
    #[serde(default)]
    pub rules: Option<String>,
}

/// The states of a [`SweepProgress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepState {
    Running,
    Done,
    Failed,
}

impl SweepState {
    pub fn name(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Done => "done",
            SweepState::Failed => "failed",
        }
    }
}

impl Scheduled {
    /// A fresh pending item.
    pub fn pending(
        status_id: impl Into<String>,
        account: impl Into<String>,
        rule: impl Into<String>,
        created_at: UnixMs,
        deadline: UnixMs,
    ) -> Scheduled {
        Scheduled {
            status_id: status_id.into(),
            account: account.into(),
            rule: rule.into(),
            created_at,
            deadline,
            state: ExpiryState::Pending,
            next_attempt: deadline,
            attempts: 0,
            credential: None,
            reason: None,
            flags: KeepFlags::default(),
            updated_at: created_at,
            host: None,
            checked_at: None,
            publication: None,
            tags: Vec::new(),
            attachments: Attachments::default(),
        }
    }

    /// Whether the post must not be served at `now`.
    pub fn hidden_at(&self, now: UnixMs) -> bool {
        self.publication.is_none() && self.deadline <= now && self.state.hides()
    }
}

/// An author's bearer token, sealed (see `expiry::seal`): the store never holds it in
/// clear. One copy per token, shared by every item that needs it, dropped with the last.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredential {
    /// A keyed fingerprint of the token (not the token; not reversible).
    pub id: String,
    pub account: String,
    /// Nonce and ciphertext.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential").field("id", &self.id).field("account", &self.account).finish_non_exhaustive()
    }
}

/// How one claimed item ended (or why it goes back to waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instance answered the `DELETE`: look again at `confirm_at` (still hidden).
    Deleted { confirm_at: UnixMs },
    /// The instance no longer serves it: the item is purged (only a count remains).
    Gone,
    /// A keep rule held.
    Kept(String),
    /// A retryable failure (5xx, timeout): try again at `at`; counts as an attempt.
    Retry { at: UnixMs, reason: String },
    /// Not an attempt: wait for the account's rate-limit window (or a pause) until `at`.
    Defer { at: UnixMs },
    /// Needs a person (revoked token, ...): parked until a new credential appears.
    Failed(String),
    /// Not to be deleted any more (the author deleted it; an edit matched no rule): purged.
    Cancelled(String),
}

/// A failed item re-queued with a new credential for its account, or `None` when it failed
/// with that very credential (nothing new to try). Shared by every backend.
pub fn requeued(old: &Scheduled, cred: &SealedCredential, now: UnixMs) -> Option<Scheduled> {
    (old.credential.as_deref() != Some(cred.id.as_str())).then(|| Scheduled {
        state: ExpiryState::Pending,
        next_attempt: now,
        credential: Some(cred.id.clone()),
        reason: Some("re-queued: a new token for the account appeared".into()),
        updated_at: now,
        ..old.clone()
    })
}

impl Outcome {
    /// What `old` becomes when it ends this way at `now`: `None` when it is to be purged.
    /// One transition for every backend, so they cannot drift apart.
    pub fn settle(&self, old: &Scheduled, now: UnixMs) -> Option<Scheduled> {
        let mut new = Scheduled { updated_at: now, ..old.clone() };
        match self {
            Outcome::Deleted { confirm_at } => {
                new.state = ExpiryState::Deleted;
                new.next_attempt = *confirm_at;
                new.reason = None;
            }
            Outcome::Gone | Outcome::Cancelled(_) => return None,
            Outcome::Kept(reason) => {
                new.state = ExpiryState::Kept;
                new.reason = Some(reason.clone());
            }
            Outcome::Retry { at, reason } => {
                // A deleted item whose confirmation failed stays deleted (the instance answered).
                if old.state != ExpiryState::Deleted {
                    new.state = ExpiryState::Pending;
                }
                new.next_attempt = *at;
                new.attempts = old.attempts.saturating_add(1);
                new.reason = Some(reason.clone());
            }
            Outcome::Defer { at } => {
                if old.state != ExpiryState::Deleted {
                    new.state = ExpiryState::Pending;
                }
                new.next_attempt = *at;
            }
            Outcome::Failed(reason) => {
                new.state = ExpiryState::Failed;
                new.attempts = old.attempts.saturating_add(1);
                new.reason = Some(reason.clone());
            }
        }
        Some(new)
    }
}

/// Counts by state plus the earliest pending deadline, for `/admin/expiry` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleCounts {
    pub by_state: std::collections::BTreeMap<String, u64>,
    pub next_due: Option<UnixMs>,
    /// Items purged after their post was confirmed gone (or cancelled): a number only.
    pub gone: u64,
}

/// The expiry schedule. Every write is durable when its future resolves.
pub trait ScheduleStore: Send + Sync {
    /// Inserts (or re-times) items together with the credentials they need, in one durable
    /// commit. An existing item in a final state (deleted, cancelled) is left alone; a live
    /// one takes the new rule, deadline and credential. When a credential is new for its
    /// account, the account's failed items are re-queued with it. Returns how many
    /// failed items were re-queued that way.
    fn schedule(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, u64>;

    /// Inserts the items that have no record yet, with their credentials, in one durable
    /// commit (an archive sweep: a post pavise already knows keeps its record). Says, item by
    /// item, which were inserted.
    fn schedule_new(&self, items: Vec<(Scheduled, Option<SealedCredential>)>) -> StoreFuture<'_, Vec<bool>>;

    /// The item for one status, in any state.
    fn lookup<'a>(&'a self, status_id: &'a str) -> StoreFuture<'a, Option<Scheduled>>;

    /// Claims up to `limit` items due at `now` (pending, or claimed with a lapsed lease)
    /// until `now + lease_ms`, oldest due first.
    fn claim_due(&self, now: UnixMs, limit: usize, lease_ms: u64) -> StoreFuture<'_, Vec<Scheduled>>;

    /// When the next pending or claimed item falls due, if any.
    fn next_due(&self) -> StoreFuture<'_, Option<UnixMs>>;

    /// Records how a claimed (or any live) item ended. Final outcomes drop the item's
    /// credential when nothing else needs it. Returns false when there is no such item.
    fn settle<'a>(&'a self, status_id: &'a str, outcome: Outcome) -> StoreFuture<'a, bool>;

    /// Records keep flags the author changed through pavise. A kept item whose flags
    /// changed goes back to pending (due now) so the scheduler re-checks it, with `cred`
    /// (the author's token on that request) as its credential.
    fn set_flags<'a>(
        &'a self,
        status_id: &'a str,
        flags: KeepFlags,
        cred: Option<SealedCredential>,
    ) -> StoreFuture<'a, bool>;

    /// Counts by state and the next due time.
    fn counts(&self) -> StoreFuture<'_, ScheduleCounts>;

    /// Up to `limit` items, optionally in one state, ordered by status id.
    fn list(&self, state: Option<ExpiryState>, limit: usize) -> StoreFuture<'_, Vec<Scheduled>>;

    /// The items whose post must not be served and whose deadline is in `[from, to]`
    /// (states that hide: pending, claimed, deleted, failed; publications excluded): what
    /// the in-memory index of hidden posts is built and kept from.
    fn hidden_between(&self, from: UnixMs, to: UnixMs) -> StoreFuture<'_, Vec<Scheduled>>;

    /// The earliest deadline after `t` of an item in a state that hides.
    fn next_deadline_after(&self, t: UnixMs) -> StoreFuture<'_, Option<UnixMs>>;

    /// Records (inserts or replaces) the progress of one member's archive sweep.
    fn put_sweep(&self, progress: SweepProgress) -> StoreFuture<'_, ()>;

    /// The sweep of one account, if there was one.
    fn sweep<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SweepProgress>>;

    /// Every sweep, by account.
    fn sweeps(&self) -> StoreFuture<'_, Vec<SweepProgress>>;
}

/// Sealed bearer tokens (expiry's deletion credentials).
pub trait CredentialStore: Send + Sync {
    /// Offers a credential seen for its account without scheduling anything: when it is new
    /// for the account, the account's failed items are re-queued with it (and keep it);
    /// otherwise nothing is stored. Returns how many items were re-queued.
    fn offer_credential(&self, cred: SealedCredential) -> StoreFuture<'_, u64>;
    fn credential<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SealedCredential>>;
    /// The most recent credential seen for an account.
    fn account_credential<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Option<SealedCredential>>;
    /// How many sealed credentials are stored (each is one distinct token).
    fn credential_count(&self) -> StoreFuture<'_, u64>;
}

// ---------------------------------------------------------------------------------------
// Shield: first-seen senders and the quarantine of held deliveries.
// ---------------------------------------------------------------------------------------

/// A federation delivery the shield accepted (202) and keeps, exactly as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDelivery {
    /// Unique, increasing.
    pub id: u64,
    /// When pavise accepted it.
    pub received: UnixMs,
    /// Its `Date` header: the sender's signature is good for about 65 minutes after it.
    pub date: Option<UnixMs>,
    pub method: String,
    pub path_and_query: String,
    /// Header names and raw values in arrival order; client-IP headers already removed and
    /// `X-Forwarded-For` set to the sender's pseudonym (never a raw address).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The exact body bytes (base64 in the stored JSON: a third larger, not four times).
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    /// The signing domain (or what it claimed, marked unverified).
    pub domain: String,
    /// The shielded local accounts it mentions.
    pub targets: Vec<String>,
    pub state: HeldState,
}

/// Where a held delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldState {
    /// Waiting for the wave over its targets to pass.
    Held,
    /// Past its signature window (or refused on release): the admin decides.
    Kept,
}

/// One entry of the quarantine's audit trail: nothing is released or dropped unrecorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: UnixMs,
    /// The held delivery's id.
    pub id: u64,
    pub domain: String,
    /// `held`, `released`, `kept`, `dropped`, ...
    pub action: String,
    pub detail: String,
}

/// A local member's follow of a remote actor, begun (`following`) or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowChange {
    pub account: String,
    pub actor: String,
    pub following: bool,
}

/// The shield's durable state. Every write is durable when its future resolves.
pub trait ShieldStore: Send + Sync {
    /// When a remote actor (its URL) was first seen delivering, if ever. A sealed store
    /// keys these by a keyed hash and never stores the URL itself: it can answer for an
    /// actor, not list them.
    fn first_seen<'a>(&'a self, actor: &'a str) -> StoreFuture<'a, Option<UnixMs>>;
    /// Records first-seen times in one commit; an existing, older record wins.
    fn record_first_seen(&self, seen: Vec<(String, UnixMs)>) -> StoreFuture<'_, ()>;
    /// Whether local `account` (a lower-cased name) follows remote `actor` (its URL), as
    /// far as pavise has learned.
    fn follows<'a>(&'a self, account: &'a str, actor: &'a str) -> StoreFuture<'a, bool>;
    /// Records follows learned and unlearned, in one commit, in order.
    fn record_follows(&self, changes: Vec<FollowChange>) -> StoreFuture<'_, ()>;
    /// Inserts or replaces a held delivery, with its audit record, in one commit.
    fn put_held(&self, held: HeldDelivery, audit: AuditRecord) -> StoreFuture<'_, ()>;
    /// Removes a held delivery, with its audit record, in one commit; None if absent.
    fn remove_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, Option<HeldDelivery>>;
    fn held(&self, id: u64) -> StoreFuture<'_, Option<HeldDelivery>>;
    /// Every held delivery, oldest first.
    fn list_held(&self) -> StoreFuture<'_, Vec<HeldDelivery>>;
    /// The newest `limit` audit records, newest first. The trail is bounded (the embedded
    /// store keeps ten thousand records, none older than eight days): it names the domains
    /// of held deliveries and must not outlive them by much.
    fn audit_log(&self, limit: usize) -> StoreFuture<'_, Vec<AuditRecord>>;

    /// Inserts or replaces a *sealed* held delivery (opaque bytes: the quarantine seals
    /// the whole [`HeldDelivery`] before it reaches the store), with its audit record, in
    /// one commit.
    fn put_sealed_held(&self, id: u64, sealed: Vec<u8>, audit: AuditRecord) -> StoreFuture<'_, ()>;
    /// Removes a sealed held delivery, with its audit record, in one commit; false if absent.
    fn remove_sealed_held(&self, id: u64, audit: AuditRecord) -> StoreFuture<'_, bool>;
    fn sealed_held(&self, id: u64) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Every sealed held delivery, oldest (lowest id) first.
    fn list_sealed_held(&self) -> StoreFuture<'_, Vec<(u64, Vec<u8>)>>;
    /// Forgets every follow recorded by [`ShieldStore::record_follows`] (follows are now
    /// read from the instance and kept in memory); returns how many there were.
    fn forget_follows(&self) -> StoreFuture<'_, u64>;
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}
