//! Whom a delivery reaches, read the way Mastodon reads it — every spelling of a member
//! that the instance would resolve to that member is that member here, and only what
//! the instance turns into something a member sees counts at all.
//!
//! # What reaches a member
//! Mastodon processes an inbox body (`ActivityPub::ProcessCollectionService`, since 4.6
//! `ProcessActivityService`) only when its `@context` is, or includes, the ActivityStreams
//! context (`JsonLdHelper#supported_context?`), then dispatches on the activity's `type`
//! compared as an exact string (`ActivityPub::Activity.klass_for`: `["Create"]` is
//! nothing). A `Collection`/`OrderedCollection` (or page) at the top level has its items
//! dispatched one by one (until mid-2026: "Remove processing of collections of
//! activities", #39932); nested collections never were. Of the activities
//! it dispatches, these reach a member:
//! - `Create`/`Update` of a post: an embedded object of a supported type (`Note`,
//!   `Question`; converted: `Image`, `Audio`, `Video`, `Article`, `Page`, `Event`) whose
//!   `id` is on the sender's host (`unsupported_object_type?`, `non_matching_uri_hosts?`
//!   in `create.rb`/`update.rb`: anything else is rejected), or an object given by
//!   reference (fetched). The post mentions its `Mention` tags (`tag` one object or an
//!   array, `type` a string or an array containing `Mention`, `href` any URL the instance
//!   resolves to a local account) and, silently, the local accounts of its audience —
//!   the object's `to`/`cc`, or the activity's when the object has none
//!   (`StatusParser#audience_to`/`#audience_cc`; `bto`, `bcc` and `audience` are never
//!   read) — and, delivered to a member's own inbox (`/users/NAME/inbox`), that member
//!   (`delivered_to_account_id`);
//! - a quote of a member's post (`quote`, `_misskey_quote`, `quoteUrl`, `quoteUri` on the
//!   post: `StatusParser#quote_uri`; a `QuoteRequest` of it: `quote_request.rb` sends her
//!   a `quote` notification), a `Follow` of a member (`follow`/`follow_request`), a
//!   `Like` of her post (`favourite`; `EmojiReact` too, which Mastodon's forks notify), an
//!   `Announce` of it (`reblog`), a `FeatureRequest` naming her (`added_to_collection`);
//! - an `Announce` or `Add` embedding the sender's own post: Mastodon handles it like a
//!   `Create` of that post (`Activity#status_from_object`).
//!
//! Of a post, only some of that is shown to her ([`Reach`]): a tag that is also in the
//! audience (`to`/`cc`, or her own inbox) is notified; a tag alone is notified when the
//! instance takes the post at all (`Create#related_to_local_activity?`: it replies to a
//! local post or to a followed author's, addresses a member, came to a personal inbox,
//! came through a relay, or *any* local account follows the sender; current Mastodon
//! then files it as a "silenced" notification); the audience alone is a silent mention
//! (`FanOutOnWriteService#notify_mentioned_accounts!` notifies `active_mentions` only),
//! shown to no stranger's target. An `Update` of a post the instance has is an edit,
//! which notifies every mention it adds; of one it lacks, a `Create`. The wave detector
//! counts what she may be shown; a shield holds back all of it.
//!
//! # Where pavise cannot see, it counts
//! Whether the instance takes a tag-only post (its follows, its relays, the posts it
//! has) and whether an `Update` is an edit (the instance may have the post by a route
//! pavise never sees: fetched by reference or for a reply, released from the
//! quarantine, taken before a restart or through another node) depend on the
//! instance's state, not on the delivery. Pavise cannot read that state, and every
//! guess at it (earlier versions kept a memory of the posts it saw taken) left a route
//! a real wave came through uncounted. So a tag alone counts, and a tag in an `Update`
//! counts as an edit's. A wave raised where the instance shows nothing (a *ghost*)
//! still costs the attacker one verified actor per count, exactly what a real wave of
//! the same size costs; sending the real one instead is no harder.
//!
//! Nothing else reaches a member, whoever it addresses: `Delete`, `Block`, `Undo`,
//! `Accept`, `Reject`, `Flag` (it notifies moderators, not the reported member), `Remove`,
//! `Move`, an unknown type, a post of an unsupported type or from another host, a body
//! without the ActivityStreams context. Such *ghosts* count toward nothing (a wave of them
//! would shield a member though the instance shows nothing) and are never held back.
//!
//! # Spellings
//! A local URL is one whose host, as Addressable normalizes it (case-folded,
//! percent-decoded, IDNA-mapped, one trailing dot dropped, userinfo ignored), is the
//! instance's; its path is read by Rails' router (repeated and trailing slashes ignored, a
//! `.format` suffix split off, parameters percent-decoded): `/users/:username`,
//! `/@:username` (and its `/with_replies`, `/media`, `/featured`, `/collections`,
//! `/tagged/:tag` views),
//! `/ap/users/:id` (Mastodon ≥ 4.5, no constraint on the id before #39523; the id cast as
//! ActiveRecord casts it, one reading with the route's:
//! [`crate::proxy::contract::route::record_id_of`], so `1-alice`, `1abc`, `%2B1` and `%201` are
//! account 1), and the old OStatus `tag:DOMAIN,...:objectId=ID:objectType=Account`.
//! Usernames are case-insensitive.
//! Pavise reads a little more generously than Mastodon where holding back more is the safe
//! side: a port on the local host, several trailing dots, a `tag:` domain in other case, and
//! the `acct:`, `@user@host` and `user@host` forms name the local account too — but
//! Mastodon resolves those to nobody, so they only hold a delivery back under a shield and
//! never count toward one ([`exact`], [`Reach::Unresolved`]): over-counting would let
//! ghosts raise a shield. Numeric ids are
//! turned into names by asking the instance ([`super::accounts`]). A document with a
//! Linked Data signature is compacted by the instance, which turns one-element arrays into
//! their element: so there, `"type": ["Create"]` is a `Create`.
//!
//! # What the instance fetches
//! What an object the instance *fetches* mentions, pavise cannot see: a delivery that makes
//! the instance fetch a post is marked [`Addressed::opaque`], and the stage holds it back
//! from every member under a shield. Mastodon fetches, while processing one delivery:
//! - the object of a `Create`/`Update` given by reference (`Activity#dereference_object!`);
//! - the parent of a post that replies to a post not on this instance (`inReplyTo`:
//!   `Create#resolve_thread` → `ThreadResolveWorker` → `FetchRemoteStatusService`);
//! - a post's `replies`, unless it is an embedded collection whose (embedded) first page
//!   lists nothing (`Create#fetch_replies` → `FetchRepliesService` / `FetchRepliesWorker`
//!   → `FetchReplyWorker`; `JsonLdHelper#collection_items`) — Mastodon's own posts carry
//!   an empty first page, which fetches nothing;
//! - the quoted post of a quote not of a local post (`Create#fetch_and_verify_quote`,
//!   `ProcessStatusUpdateService#fetch_and_verify_quote!` → `VerifyQuoteService
//!   #fetch_quoted_post_if_needed!`, and through `quoteAuthorization` its
//!   `interactionTarget`, which must be the same post);
//! - a `QuoteRequest`'s `instrument` not on this instance: fetched, unless (in newer
//!   versions) embedded from the sender's host and imported as it is
//!   (`QuoteRequest#accept_quote_request!`, `#import_instrument`) — so it is opaque, and
//!   an embedded one is read as the post it is as well;
//! - the object of an `Announce` or `Add` that is not a local post nor the sender's own
//!   embedded post (`Activity#status_from_object` → `#fetch_remote_original_status`);
//! - an `Update` of the sender's actor naming a `featured` collection: its pinned posts
//!   (`ProcessAccountService#check_featured_collection!` →
//!   `FetchFeaturedCollectionService#process_note_items` → `FetchRemoteStatusService`).
//!
//! A fetched post within Mastodon's real-time window notifies whom it mentions
//! (`Create#distribute` → `FanOutOnWriteService#notify_mentioned_accounts!`). What pavise
//! does *not* see: the pinned posts of an account the instance fetches for other reasons —
//! the sender at first contact or on a refresh, an unknown account a `Mention` tag names
//! (`Create#process_mention` → `FetchRemoteAccountService`), a `Move`'s target — and the
//! replies Mastodon fetches when a member opens a thread. README ("What the shield cannot
//! do") says so.

use std::collections::{HashMap, HashSet};

use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::proxy::contract::{Route, RouteClass, route::record_id_of};

/// A local account as the instance would find it: by username or by numeric id — or the
/// owner of a local post, found by the post's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LocalRef {
    /// A username, lower-cased.
    Name(String),
    /// A numeric account id (`/ap/users/ID`, OStatus tags).
    Id(u64),
    /// Whoever owns the local status with this id (a `Like`, `Announce` or quote of it
    /// notifies them). Rails finds a status by its id alone: the username in its URL
    /// proves nothing.
    StatusOwner(u64),
}

/// The host names that are the instance's own, normalized as [`canonical_host`] does.
#[derive(Debug, Clone, Default)]
pub struct LocalHosts(Vec<String>);

impl LocalHosts {
    /// The instance's configured domains; ports are ignored.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> LocalHosts {
        let mut hosts: Vec<String> = names.into_iter().filter_map(canonical_host).collect();
        hosts.sort();
        hosts.dedup();
        LocalHosts(hosts)
    }

    /// Whether `host` (any port) is the instance's.
    pub fn contains(&self, host: &str) -> bool {
        canonical_host(host).is_some_and(|h| self.0.contains(&h))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

/// A host (or `host:port`, or `[v6]:port`) as Addressable's `normalized_host` reads it:
/// lower-cased, percent-decoded, IDNA-mapped to ASCII; trailing dots and port dropped.
pub fn canonical_host(authority: &str) -> Option<String> {
    let authority = authority.trim();
    // The URL parser does the IDNA mapping, the case folding and the percent-decoding.
    let url = url::Url::parse(&format!("https://{authority}/")).ok()?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return None;
    }
    let host = url.host_str()?.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_owned())
}

/// Whom one delivery reaches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// Local accounts (and owners of local posts), each once: a post's `Mention` tags and
    /// audience, the object of a `Follow`, `Like`, `Announce`, the post a quote quotes.
    pub local: Vec<LocalRef>,
    /// Distinct addressed actors, local and remote (public and collections excluded):
    /// the hellthread count.
    pub total: usize,
    /// Whom it mentions is unknown: the instance will fetch a post from elsewhere, or the
    /// body is one pavise cannot read exactly ([`super::document`]).
    pub opaque: bool,
    /// More addressees than pavise reads ([`MAX_ADDRESSEES`]): a hellthread, and opaque.
    pub truncated: bool,
    /// A `Create`/`Update` whose post is given by reference: the instance fetches it from
    /// the sender, who may show pavise's fetch another post. Rare in real mail (every
    /// server embeds the post), so a wave of them counts on its own.
    pub by_reference: bool,
    /// It creates or edits a post (a `Create`/`Update` the instance does not reject): sent
    /// to a member's own inbox, it reaches her (`delivered_to_account_id`). A `Follow`,
    /// `Like` or `Accept` sent there mentions nobody.
    pub post: bool,
    /// How each of `local` is reached (same order): what the instance shows her of it.
    pub reach: Vec<Reach>,
}

/// How a delivery reaches one local account, by what Mastodon shows her of it
/// (`Create#process_audience`, `FanOutOnWriteService#notify_mentioned_accounts!`). The
/// wave detector counts only what she is shown; a shield holds back all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Named in a spelling pavise reads generously but Mastodon resolves to nobody
    /// ([`exact`]: `acct:`, an explicit port, ...): held back under a shield, never counted.
    Unresolved,
    /// In a post's `to`/`cc` without a `Mention` tag: a silent mention, which notifies
    /// nobody and shows a stranger's post in no timeline of hers.
    Silent,
    /// Shown to her or not depending on what pavise cannot see: tagged, but not in the
    /// post's `to`/`cc` (notified only when the instance takes the post at all — it
    /// replies to a local post, addresses another member, came to a personal inbox or a
    /// relay, or any local account follows its sender — and then, in current Mastodon, as
    /// a "silenced" notification her notification policy filters); or tagged in an
    /// `Update` (an edit if the instance has the post, which notifies every mention it
    /// adds) or in the sender's own post inside an `Announce` or `Add` (taken if a local
    /// account follows the sender, or the target is its featured collection). Counted
    /// toward a wave; never teaches familiarity, which needs what she was surely shown.
    Possible,
    /// Notified: tagged and in the audience (or her own inbox) of a post the instance
    /// takes; or followed, liked, boosted, quoted.
    Notified,
}

impl Addressed {
    /// This reading, and every account `other` found that it did not (a reading that
    /// stopped at [`MAX_ADDRESSEES`] joined with [`read_opaque`]'s of the same body).
    pub fn joined(mut self, other: Addressed) -> Addressed {
        let mut index: HashMap<LocalRef, usize> = self.local.iter().cloned().enumerate().map(|(i, l)| (l, i)).collect();
        for (local, reach) in other.local.into_iter().zip(other.reach) {
            match index.get(&local) {
                Some(&i) => self.reach[i] = self.reach[i].with(reach),
                None => {
                    index.insert(local.clone(), self.local.len());
                    self.local.push(local);
                    self.reach.push(reach);
                }
            }
        }
        self.opaque |= other.opaque;
        self.total = self.total.max(other.total);
        self
    }
}

impl Reach {
    /// Two readings of one account, e.g. two spellings of her in one post: the stronger.
    /// (Tagged under one spelling and in the audience under another would be notified if
    /// the instance takes the post, which is what `Possible` cannot tell: possible.)
    pub fn with(self, other: Reach) -> Reach {
        self.max(other)
    }
}

const PUBLIC: [&str; 3] = ["https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"];
/// `ActivityPub::TagManager::CONTEXT`, which `supported_context?` looks for.
const AS_CONTEXT: &str = "https://www.w3.org/ns/activitystreams";
/// `Activity::SUPPORTED_TYPES` and `CONVERTED_TYPES`.
const POST_TYPES: [&str; 8] = ["Note", "Question", "Image", "Audio", "Video", "Article", "Page", "Event"];
/// The object types `Update#perform` treats as an account.
const ACTOR_TYPES: [&str; 5] = ["Application", "Group", "Organization", "Person", "Service"];
/// `StatusParser#quote?` / `#quote_uri`.
const QUOTE_KEYS: [&str; 4] = ["quote", "_misskey_quote", "quoteUrl", "quoteUri"];
/// `Status::REAL_TIME_WINDOW`: a post created (`published`) longer ago than this is stored
/// but never distributed, so it notifies nobody.
const REAL_TIME_WINDOW: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Distinct addressees read at most; past it the delivery is a hellthread by any measure.
pub const MAX_ADDRESSEES: usize = 1000;
/// Addressing entries looked at at most (duplicates included): the work one delivery can
/// cost is bounded whatever its shape.
pub const MAX_ENTRIES: usize = 5000;

/// Reads whom a delivery reaches, as Mastodon processes it (see the module docs).
pub fn read(doc: &Value, locals: &LocalHosts) -> Addressed {
    read_at(doc, locals, std::time::SystemTime::now())
}

/// [`read`], with the time a post's `published` is compared with.
pub fn read_at(doc: &Value, locals: &LocalHosts, now: std::time::SystemTime) -> Addressed {
    // Mastodon compacts a document with a Linked Data signature before reading it.
    let compacted = doc.get("signature").is_some_and(Value::is_object);
    let sender = doc.get("actor").and_then(|a| first_id(a, compacted));
    let mut r = Reader {
        locals,
        compacted,
        sender,
        seen_local: HashMap::new(),
        remote: HashSet::new(),
        entries: 0,
        now,
        quiet: false,
        unsure: false,
        out: Addressed::default(),
    };
    // Without the ActivityStreams context Mastodon reads nothing of it. (A compacted
    // document gets the instance's own context, so there the test is compaction's.)
    if doc.is_object() && (compacted || includes(doc.get("@context"), AS_CONTEXT)) {
        r.delivery(doc);
    }
    let mut out = r.out;
    out.total = out.local.len() + r.remote.len();
    if out.truncated {
        out.total = out.total.max(MAX_ADDRESSEES + 1);
        out.opaque = true;
    }
    out
}

/// Whom a body pavise cannot read exactly may reach ([`super::document::Reading::Opaque`]:
/// not strict JSON, a key twice, a JSON-LD signature or IRI key that makes a JSON-LD
/// reading differ from a raw one), or one too long to read in full. The instance reads it
/// anyway, its own way (it keeps the last of two keys, reads `1e400` as infinity, skips
/// comments, compacts what has a signature), so every local account, and the owner of
/// every local post, that the body names anywhere — in a value, a key, a comment, as the
/// instance would resolve it — may be reached: [`Reach::Possible`], counted toward a wave
/// like a tag pavise cannot see the fate of. The body is read without its JSON structure,
/// so no comment, stray quote or nesting changes what is found: every JSON escape is
/// undone (`\u0061`, `\/`), then every run of characters between quotes, white space
/// and control characters is a candidate. A spelling Mastodon resolves to nobody stays [`Reach::Unresolved`]. The
/// body is also [`Addressed::opaque`]: it may reach anyone else (a name JSON-LD compaction
/// builds from parts, say), so a shield holds it back from every shielded member.
pub fn read_opaque(body: &[u8], locals: &LocalHosts) -> Addressed {
    let mut r = Reader {
        locals,
        compacted: false,
        sender: None,
        seen_local: HashMap::new(),
        remote: HashSet::new(),
        entries: 0,
        now: std::time::SystemTime::now(),
        quiet: false,
        unsure: true,
        out: Addressed::default(),
    };
    let text = unescape_json(&String::from_utf8_lossy(body));
    // Only a run that names a local host in some spelling can resolve to a local account:
    // the host itself (any case), or percent-encoded, or in other Unicode (IDNA).
    let hosts: Vec<String> = locals
        .names()
        .iter()
        .map(|h| h.split_once(':').filter(|_| !h.starts_with('[')).map_or(h.as_str(), |(h, _)| h).to_owned())
        .collect();
    // Only what no reference Mastodon resolves can hold ends a run: a quote (JSON's own
    // delimiter), white space, a control character. A comma, an apostrophe or a bracket
    // may stand in one (an OStatus `tag:host,2016:...` id, a userinfo `x'y@`).
    let delimiter = |c: char| c == '"' || c.is_whitespace() || c.is_control();
    for run in text.split(delimiter).filter(|run| run.len() > 3) {
        let names_host = |h: &String| run.as_bytes().windows(h.len()).any(|w| w.eq_ignore_ascii_case(h.as_bytes()));
        if !(hosts.iter().any(names_host) || run.contains('%') || !run.is_ascii()) {
            continue;
        }
        if let Some(local) = local_ref(run, locals).or_else(|| status_ref(run, locals)) {
            let reach = exactly(run, locals, Reach::Possible);
            r.local(local, reach);
        }
    }
    let mut out = r.out;
    out.opaque = true;
    out.total = out.local.len();
    if out.truncated {
        out.total = out.total.max(MAX_ADDRESSEES + 1);
    }
    out
}

/// `text` with every JSON string escape undone, wherever it stands (a lone surrogate
/// becomes U+FFFD, an unknown escape stays as it is).
fn unescape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let hex4 = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<u32> {
        let digits: String = (0..4).map_while(|_| chars.next_if(char::is_ascii_hexdigit)).collect();
        (digits.len() == 4).then(|| u32::from_str_radix(&digits, 16).ok()).flatten()
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => match hex4(&mut chars) {
                Some(high @ 0xD800..=0xDBFF) => {
                    let low = (chars.peek() == Some(&'\\'))
                        .then(|| {
                            let mut ahead = chars.clone();
                            ahead.next();
                            (ahead.next() == Some('u')).then(|| hex4(&mut ahead).map(|l| (l, ahead))).flatten()
                        })
                        .flatten()
                        .filter(|(l, _)| (0xDC00..=0xDFFF).contains(l));
                    match low {
                        Some((low, ahead)) => {
                            chars = ahead;
                            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        None => out.push('\u{fffd}'),
                    }
                }
                Some(code) => out.push(char::from_u32(code).unwrap_or('\u{fffd}')),
                None => out.push_str("\\u"),
            },
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

struct Reader<'v, 'l> {
    locals: &'l LocalHosts,
    /// One-element arrays read as their element (JSON-LD compaction).
    compacted: bool,
    /// The activity's `actor` (for a verified delivery, the signer: the stage checks).
    sender: Option<&'v str>,
    /// Each local account seen, and its index in `out.local`.
    seen_local: HashMap<LocalRef, usize>,
    remote: HashSet<&'v str>,
    entries: usize,
    now: std::time::SystemTime,
    /// Reading a post Mastodon stores but does not distribute (too old): it notifies
    /// nobody, whatever it names.
    quiet: bool,
    /// Reading a post the instance may or may not take, or may already have (an `Update`,
    /// the sender's own post in an `Announce` or `Add`): what it shows her is at most
    /// [`Reach::Possible`].
    unsure: bool,
    out: Addressed,
}

impl<'v> Reader<'v, '_> {
    /// The top level: a collection's items one by one (`process_items`), or the activity.
    fn delivery(&mut self, doc: &'v Value) {
        let items = match self.kind(doc) {
            Some("Collection" | "CollectionPage") => "items",
            Some("OrderedCollection" | "OrderedCollectionPage") => "orderedItems",
            _ => return self.activity(doc),
        };
        for item in as_array(doc.get(items)) {
            self.activity(item);
        }
    }

    /// An activity's `type`, as `klass_for` compares it: an exact string.
    fn kind(&self, v: &'v Value) -> Option<&'v str> {
        match v.get("type") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Array(one)) if self.compacted && one.len() == 1 => one[0].as_str(),
            _ => None,
        }
    }

    fn activity(&mut self, v: &'v Value) {
        // Mastodon processes Hash items only; anything else is ignored.
        if !v.is_object() {
            return;
        }
        let objects = as_array(v.get("object"));
        match self.kind(v) {
            Some(kind @ ("Create" | "Update")) => {
                for object in objects {
                    self.created(v, object, kind == "Update");
                }
            }
            // `Add#perform` does nothing without a `target`.
            Some("Add") if v.get("target").is_none_or(blank) => {}
            Some(kind @ ("Announce" | "Add")) => {
                for object in objects {
                    self.reshared(object, kind == "Announce");
                }
            }
            // `FeatureRequest#perform` ignores a request whose id is on another host.
            Some("FeatureRequest") if self.foreign_id(v.get("id")) => {}
            Some("Follow" | "FeatureRequest") => {
                for id in objects.iter().filter_map(id_of) {
                    if let Some(r) = local_ref(id, self.locals) {
                        self.local(r, exactly(id, self.locals, Reach::Notified));
                    }
                }
            }
            Some("Like" | "EmojiReact") => self.own_posts(objects),
            Some("QuoteRequest") => {
                // `QuoteRequest#perform` ignores a request whose id is on another host.
                if self.foreign_id(v.get("id")) {
                    return;
                }
                self.own_posts(objects);
                self.instrument(v);
            }
            // Block, Undo, Accept, Reject, Flag, Remove, Move, the unknown: they reach no
            // member, whoever they address.
            _ => {}
        }
    }

    /// The owners of the local posts `objects` name (a like, a boost, a quote of them).
    fn own_posts(&mut self, objects: &'v [Value]) {
        for id in objects.iter().filter_map(id_of) {
            if let Some(r) = status_ref(id, self.locals) {
                self.local(r, exactly(id, self.locals, Reach::Notified));
            }
        }
    }

    /// The object of a `Create` or an `Update`.
    fn created(&mut self, activity: &'v Value, object: &'v Value, update: bool) {
        match object {
            // Fetched from the sender, bearcaps too (a local object is not the sender's:
            // rejected).
            Value::String(reference) if self.fetched(reference) => {
                self.out.opaque = true;
                self.out.by_reference = true;
                self.out.post = true;
            }
            Value::Object(fields) => {
                if update && includes_any(object.get("type"), &ACTOR_TYPES) {
                    // An account update: its pinned posts are fetched.
                    if fields.get("featured").is_some_and(|f| !blank(f)) {
                        self.out.opaque = true;
                    }
                    return;
                }
                if !includes_any(object.get("type"), &POST_TYPES) || self.foreign_id(object.get("id")) {
                    return;
                }
                self.out.post = true;
                // Whether the instance has the post (an edit) or not (read as a `Create`,
                // `Update#update_status`) pavise cannot see: an `Update` is read as an edit,
                // which notifies every mention it adds however old the post is. A `Create`
                // of a post created longer ago than the real-time window is stored, never
                // distributed: nobody is notified (`Create#distribute`).
                let quiet = !update && self.published_long_ago(object);
                self.post_reading(Some(activity), object, quiet, update);
            }
            _ => {}
        }
    }

    /// Whether `published` says the post is older than [`REAL_TIME_WINDOW`] (a date
    /// pavise cannot read counts as now, as a status without one is created now).
    fn published_long_ago(&self, object: &Value) -> bool {
        match object.get("published") {
            None | Some(Value::Null) => false,
            Some(Value::String(published)) => published_at(published)
                .is_some_and(|at| self.now.duration_since(at).is_ok_and(|age| age > REAL_TIME_WINDOW)),
            // A number, an array, an object: Mastodon fails to store the post at all.
            Some(_) => true,
        }
    }

    /// The object of an `Announce` (which notifies the owner of a local post) or an `Add`.
    fn reshared(&mut self, object: &'v Value, announce: bool) {
        let Some(id) = id_of(object) else { return };
        // A local post is found by its id, never fetched.
        if self.is_local(id) {
            if announce && let Some(r) = status_ref(id, self.locals) {
                self.local(r, exactly(id, self.locals, Reach::Notified));
            }
            return;
        }
        // A hashtag added to the featured tags fetches nothing.
        if !announce && object.get("type").and_then(Value::as_str) == Some("Hashtag") {
            return;
        }
        // The sender's own embedded post is handled as a `Create` of it; anything else is
        // fetched from its origin (by its id, or its `url`).
        let author = object.get("attributedTo").and_then(|a| first_id(a, true));
        let own_post = object.is_object()
            && includes_any(object.get("type"), &POST_TYPES)
            && author.is_some()
            && author == self.sender;
        if own_post {
            // Handled as a `Create` of it with no activity around it (its own audience
            // only): an `Add` always (whatever its target, as far as pavise can see), an
            // `Announce` when any local account follows the sender, which pavise cannot see.
            if !self.foreign_id(object.get("id")) {
                let quiet = self.published_long_ago(object);
                self.post_reading(None, object, quiet, true);
            }
        } else if object.is_object() || self.fetched(id) {
            self.out.opaque = true;
        }
    }

    /// A `QuoteRequest`'s `instrument`: the quoting post. Not on this instance, it is
    /// fetched (Mastodon ≤ 4.5 always; later ones when it is not embedded from the
    /// sender's host, or its import fails): opaque. Embedded from the sender's host, it
    /// may be imported as it is, so whom it mentions counts too.
    fn instrument(&mut self, request: &'v Value) {
        for instrument in as_array(request.get("instrument")) {
            let Some(id) = id_of(instrument) else { continue };
            if self.is_local(id) {
                continue;
            }
            self.out.opaque = true;
            if instrument.is_object()
                && !self.foreign_id(instrument.get("id"))
                && includes_any(instrument.get("type"), &POST_TYPES)
            {
                self.post(None, instrument);
            }
        }
    }

    /// [`Reader::post`] of a post Mastodon stores but does not distribute (`quiet`), or may
    /// not take or may already have (`unsure`).
    fn post_reading(&mut self, activity: Option<&'v Value>, object: &'v Value, quiet: bool, unsure: bool) {
        (self.quiet, self.unsure) = (quiet, unsure);
        self.post(activity, object);
        (self.quiet, self.unsure) = (false, false);
    }

    /// One post the instance keeps (or edits): whom it mentions (and how,
    /// [`Reach`]), and what it makes the instance fetch.
    fn post(&mut self, activity: Option<&'v Value>, object: &'v Value) {
        let mut audience = Vec::new();
        for field in ["to", "cc"] {
            // `@object['to'] || @json['to']`.
            let own = object.get(field).filter(|v| !matches!(v, Value::Null | Value::Bool(false)));
            for id in as_array(own.or_else(|| activity.and_then(|a| a.get(field)))).iter().filter_map(id_of) {
                if let Some(local) = self.exact_reference(id) {
                    audience.push(local);
                }
            }
        }
        let mut tagged = Vec::new();
        for tag in as_array(object.get("tag")) {
            if includes(tag.get("type"), "Mention")
                && let Some(href) = tag.get("href").and_then(Value::as_str)
                && let Some(local) = self.exact_reference(href)
            {
                tagged.push(local);
            }
        }
        for local in &audience {
            let reach = if tagged.contains(local) { Reach::Notified } else { Reach::Silent };
            self.local(local.clone(), reach);
        }
        for local in tagged {
            if !audience.contains(&local) {
                self.local(local, Reach::Possible);
            }
        }
        for key in QUOTE_KEYS {
            for quoted in as_array(object.get(key)).iter().filter_map(id_of) {
                match status_ref(quoted, self.locals) {
                    Some(owner) => self.local(owner, exactly(quoted, self.locals, Reach::Notified)),
                    None if self.fetched(quoted) => self.out.opaque = true,
                    None => {}
                }
            }
        }
        if as_array(object.get("inReplyTo")).iter().filter_map(id_of).any(|parent| self.fetched(parent)) {
            self.out.opaque = true;
        }
        if replies_fetched(object.get("replies")) {
            self.out.opaque = true;
        }
    }

    /// Whether Mastodon may fetch `id`: a URL (any scheme: a `bear:` capability is fetched
    /// too) not on this instance. Something that is no URL at all is never fetched.
    fn fetched(&self, id: &str) -> bool {
        let id = id.trim();
        url::Url::parse(id).is_ok() && !self.is_local(id)
    }

    fn is_local(&self, url: &str) -> bool {
        is_local_url(url, self.locals)
    }

    /// `non_matching_uri_hosts?(@account.uri, id)`, where pavise can be sure of it: no id, an
    /// id that is not an http(s) URL, or one on a host other than the sender's. (A bearcap,
    /// or a URL pavise cannot parse, may well be the sender's: not foreign.)
    fn foreign_id(&self, id: Option<&'v Value>) -> bool {
        let Some(id) = id.and_then(|v| first_id(v, self.compacted)) else { return true };
        if id.starts_with("bear:") {
            return false;
        }
        if !id.starts_with("http://") && !id.starts_with("https://") {
            return true;
        }
        let host = |u: &str| url::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        match (self.sender.and_then(host), host(id)) {
            (Some(sender), Some(object)) => sender != object,
            _ => false,
        }
    }

    /// An addressee: counted toward the hellthread total; the local account it names, if
    /// any, for the caller to record with its [`Reach`].
    fn reference(&mut self, r: &'v str) -> Option<LocalRef> {
        if self.out.truncated {
            return None;
        }
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            self.out.truncated = true;
            return None;
        }
        let r = r.trim();
        if r.is_empty() || PUBLIC.contains(&r) || r.ends_with("/followers") || r.ends_with("/following") {
            return None;
        }
        match local_ref(r, self.locals) {
            Some(local) => Some(local),
            None => {
                if self.remote.len() + self.out.local.len() >= MAX_ADDRESSEES {
                    self.out.truncated = true;
                } else {
                    self.remote.insert(r);
                }
                None
            }
        }
    }

    /// [`Self::reference`], for a post's audience and tags: the local account, when Mastodon
    /// resolves the spelling too; a generous spelling is recorded as [`Reach::Unresolved`].
    fn exact_reference(&mut self, r: &'v str) -> Option<LocalRef> {
        let local = self.reference(r)?;
        if exact(r, self.locals) {
            return Some(local);
        }
        self.local(local, Reach::Unresolved);
        None
    }

    /// Records a local account reached, with every way it is reached ([`Reach::with`]).
    fn local(&mut self, r: LocalRef, reach: Reach) {
        let reach = match (self.quiet, self.unsure) {
            (true, _) => reach.min(Reach::Silent),
            (false, true) => reach.min(Reach::Possible),
            (false, false) => reach,
        };
        if let Some(&i) = self.seen_local.get(&r) {
            if let Some(known) = self.out.reach.get_mut(i) {
                *known = known.with(reach);
            }
            return;
        }
        if self.remote.len() + self.out.local.len() >= MAX_ADDRESSEES {
            self.out.truncated = true;
            return;
        }
        self.seen_local.insert(r.clone(), self.out.local.len());
        self.out.local.push(r);
        self.out.reach.push(reach);
    }
}

/// Whether a post's `replies` makes Mastodon fetch anything (`Create#fetch_replies`): not
/// when blank, nor when it is an embedded collection whose first page (itself, or an
/// embedded `first`) lists no items. A collection or first page by reference is fetched
/// (`FetchRepliesWorker`), and so are the items listed.
fn replies_fetched(replies: Option<&Value>) -> bool {
    let Some(replies) = replies.filter(|r| !blank(r)) else { return false };
    if !replies.is_object() {
        return true;
    }
    let page = match replies.get("first").filter(|f| !blank(f)) {
        None => replies,
        Some(first) if first.is_object() => first,
        Some(_) => return true,
    };
    ["items", "orderedItems"].iter().any(|k| page.get(*k).is_some_and(|items| !blank(items)))
}

/// Ruby's `blank?` for JSON: null, false, an empty or all-whitespace string, `[]`, `{}`.
fn blank(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn is_local_url(url: &str, locals: &LocalHosts) -> bool {
    url::Url::parse(url.trim()).ok().and_then(|u| u.host_str().map(|h| locals.contains(h))).unwrap_or(false)
}

/// The local account a reference names, if the instance would resolve it to one.
pub fn local_ref(reference: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let r = reference.trim();
    let lower_prefix = |p: &str| r.get(..p.len()).filter(|h| h.eq_ignore_ascii_case(p)).map(|_| &r[p.len()..]);
    if let Some(acct) = lower_prefix("acct:") {
        return acct_ref(acct.strip_prefix('@').unwrap_or(acct), locals);
    }
    if let Some(tag) = lower_prefix("tag:") {
        return ostatus_tag(tag, locals);
    }
    if lower_prefix("https://").is_some() || lower_prefix("http://").is_some() {
        return url_ref(r, locals);
    }
    if !r.contains('/') && r.contains('@') {
        return acct_ref(r.strip_prefix('@').unwrap_or(r), locals);
    }
    None
}

/// Whether Mastodon itself resolves `reference` (one [`local_ref`] or [`status_ref`]
/// reads as local), not only pavise's generous reading of it: not `acct:`, `@user@host` or
/// `user@host` (no host for `local_uri?`); no explicit port (`local_uri?` compares
/// `host:port` with the domain); at most one trailing dot (Addressable drops one); a
/// `tag:` id only with the domain written as configured (`local_id?` is a case-sensitive
/// prefix). The generous readings hold a delivery back under a shield; only exact ones
/// count toward one.
pub fn exact(reference: &str, locals: &LocalHosts) -> bool {
    let r = reference.trim();
    if let Some(after_tag) = r.strip_prefix("tag:") {
        return locals.0.iter().any(|host| after_tag.starts_with(host.as_str()));
    }
    // Rails' router and Addressable take RFC 3986 characters only: whitespace, `\`,
    // anything non-ASCII make the lookup fail (or find nobody).
    if !r.bytes().all(|b| b.is_ascii_graphic() && b != b'\\' && !b"<>\"{}|^`".contains(&b)) {
        return false;
    }
    let Some((scheme, rest)) = r.split_once("://") else { return false };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return false;
    }
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path = path.split(['?', '#']).next().unwrap_or("");
    // A route matches `/users/alice`, not `/users/alice/` or `//users/alice`.
    !host.contains(':') && !host.ends_with("..") && !path.contains("//") && (path.len() <= 1 || !path.ends_with('/'))
}

/// A `published` date, in the forms Rails reads that pavise can read too: RFC 3339 (any
/// case, a space for the `T`), a date alone (midnight UTC), an HTTP/RFC 2822 date. Before
/// 1970 counts as long ago. `None`: pavise cannot tell (the post counts as new).
fn published_at(published: &str) -> Option<std::time::SystemTime> {
    let p = published.trim().to_ascii_uppercase();
    if let Ok(at) = humantime::parse_rfc3339_weak(&p) {
        return Some(at);
    }
    if p.len() == 10
        && p.as_bytes()[4] == b'-'
        && let Ok(at) = humantime::parse_rfc3339_weak(&format!("{p}T00:00:00Z"))
    {
        return Some(at);
    }
    if let Ok(at) = httpdate::parse_http_date(published.trim()) {
        return Some(at);
    }
    // ISO 8601's basic form, `20200101T000000Z`.
    let b = p.as_bytes();
    if b.len() >= 15 && b[8] == b'T' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) {
        let extended =
            format!("{}-{}-{}T{}:{}:{}{}", &p[..4], &p[4..6], &p[6..8], &p[9..11], &p[11..13], &p[13..15], &p[15..]);
        if let Ok(at) = humantime::parse_rfc3339_weak(&extended) {
            return Some(at);
        }
    }
    // A year before 1970 (which the parsers above refuse).
    let year: Option<i32> = p.get(..4).filter(|y| y.bytes().all(|b| b.is_ascii_digit())).and_then(|y| y.parse().ok());
    year.filter(|y| *y < 1970).map(|_| std::time::UNIX_EPOCH)
}

/// [`exact`]'s verdict on how `reference` reaches its account: `reach`, or
/// [`Reach::Unresolved`].
fn exactly(reference: &str, locals: &LocalHosts, reach: Reach) -> Reach {
    if exact(reference, locals) { reach } else { Reach::Unresolved }
}

/// `user@host`.
fn acct_ref(acct: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let (user, host) = acct.rsplit_once('@')?;
    if user.is_empty() || user.contains(['@', '/', ':', '?', '#']) || !locals.contains(host) {
        return None;
    }
    Some(LocalRef::Name(user.to_lowercase()))
}

/// `tag:local.example,2016-10-03:objectId=123:objectType=Account`.
fn ostatus_tag(tag: &str, locals: &LocalHosts) -> Option<LocalRef> {
    ostatus_id(tag, locals, "Account").map(LocalRef::Id)
}

/// An old OStatus id, read as Mastodon's `OStatus::TagManager#unique_tag_to_local_id` reads
/// it (`uri_to_resource` still takes this branch for accounts and statuses): `tag:` and a
/// local domain as a plain prefix (`tag:local.examplex,…` passes), then the *first* match of
/// `objectId=(\d+):objectType=<kind>` anywhere in the string (unanchored, so
/// `objectId=9:objectId=1:objectType=Account` is account 1). `after_tag` follows `tag:`.
fn ostatus_id(after_tag: &str, locals: &LocalHosts, kind: &str) -> Option<u64> {
    if !locals.0.iter().any(|host| after_tag.get(..host.len()).is_some_and(|h| h.eq_ignore_ascii_case(host))) {
        return None;
    }
    let suffix = format!(":objectType={kind}");
    after_tag.match_indices("objectId=").find_map(|(at, key)| {
        let after = &after_tag[at + key.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0 && after[digits..].starts_with(&suffix)).then(|| after[..digits].parse().ok())?
    })
}

/// An http(s) URL on the instance that Rails routes to `accounts#show`.
fn url_ref(url: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || !locals.contains(parsed.host_str()?) {
        return None;
    }
    let segments: Vec<String> = parsed
        .path_segments()?
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    account_path(&segments)
}

/// A local post's URL as Rails routes it to `statuses#show` (`/users/:name/statuses/:id`,
/// `/@:name/:id`, `/ap/users/:id/statuses/:id`): the post's owner, found by the post's id.
pub fn status_ref(url: &str, locals: &LocalHosts) -> Option<LocalRef> {
    let url = url.trim();
    if let Some(tag) = url.get(..4).filter(|p| p.eq_ignore_ascii_case("tag:")).map(|_| &url[4..]) {
        return ostatus_id(tag, locals, "Status").map(LocalRef::StatusOwner);
    }
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || !locals.contains(parsed.host_str()?) {
        return None;
    }
    let segments: Vec<String> = parsed
        .path_segments()?
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let id = match seg.as_slice() {
        ["users", _, "statuses", id] | ["ap", "users", _, "statuses", id] => *id,
        [at, id] if at.starts_with('@') => *id,
        _ => return None,
    };
    // ActiveRecord casts the id ("0123", "123.json", "123-x", "+123" are 123).
    record_id_of(id).map(LocalRef::StatusOwner)
}

/// Rails' reading of a (percent-decoded, slash-squeezed) account path.
fn account_path(segments: &[String]) -> Option<LocalRef> {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let last_without_format = |s: &str| s.split('.').next().unwrap_or(s).to_owned();
    match seg.as_slice() {
        ["users", name] => username(&last_without_format(name)),
        ["ap", "users", id] => record_id_of(id).map(LocalRef::Id),
        [at] if at.starts_with('@') => username(&last_without_format(&at[1..])),
        [at, view] if at.starts_with('@') => {
            matches!(last_without_format(view).as_str(), "with_replies" | "media" | "featured" | "collections")
                .then(|| username(&at[1..]))?
        }
        [at, "tagged", _] if at.starts_with('@') => username(&at[1..]),
        _ => None,
    }
}

fn username(name: &str) -> Option<LocalRef> {
    (!name.is_empty() && !name.contains(['@', '.'])).then(|| LocalRef::Name(name.to_lowercase()))
}

/// Which inbox a delivery reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxPath {
    /// `/inbox`, `/actor/inbox`.
    Shared,
    /// `/users/NAME/inbox`, `/ap/users/ID/inbox`: the owner gets a silent mention.
    Personal(LocalRef),
}

impl InboxPath {
    /// The inbox of an `Inbox` route, read from the route's canonical path (slashes
    /// squeezed, format suffix split, segments decoded once, as Rails routes it). Every
    /// `Inbox` route is an inbox here: one whose owner no account can be (`/ap/users/abc/
    /// inbox`, which Rails routes too) is read as the shared inbox — never as no inbox.
    pub fn of(route: &Route) -> Option<InboxPath> {
        if route.class != RouteClass::Inbox {
            return None;
        }
        let mut segments = route.path.segments();
        let owner = match (segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("users"), Some(_), Some("inbox"), None) => route.account.as_deref().and_then(username),
            // The route's own cast of the id: `1abc`, `%2B1`, `2-x` name accounts 1 and 2.
            (Some("ap"), Some("users"), Some(_), Some("inbox")) => route.account_id.map(LocalRef::Id),
            // `/inbox`, `/actor/inbox`, and any other spelling the route calls an inbox.
            _ => None,
        };
        Some(owner.map_or(InboxPath::Shared, InboxPath::Personal))
    }
}

/// `as_array`: nothing, one value, or the items of an array.
fn as_array(v: Option<&Value>) -> &[Value] {
    match v {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(one) => std::slice::from_ref(one),
    }
}

/// `equals_or_includes?`.
fn includes(v: Option<&Value>, needle: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == needle,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(needle)),
        _ => false,
    }
}

/// `equals_or_includes_any?`.
fn includes_any(v: Option<&Value>, needles: &[&str]) -> bool {
    needles.iter().any(|n| includes(v, n))
}

/// `value_or_id`.
pub fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("id")?.as_str())
}

/// `value_or_id(first_of_value(v))` when `first` (or the document is compacted), else
/// `value_or_id(v)`.
fn first_id(v: &Value, first: bool) -> Option<&str> {
    match v {
        Value::Array(items) if first => items.first().and_then(id_of),
        other => id_of(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn locals() -> LocalHosts {
        LocalHosts::new(["local.example", "local.example:8443"])
    }

    fn one(r: &str) -> Option<LocalRef> {
        local_ref(r, &locals())
    }

    fn alice() -> Option<LocalRef> {
        Some(LocalRef::Name("alice".into()))
    }

    fn name(n: &str) -> LocalRef {
        LocalRef::Name(n.into())
    }

    const CTX: &str = "https://www.w3.org/ns/activitystreams";
    const SENDER: &str = "https://r.example/users/troll";

    /// A `Create` of a Note by [`SENDER`], with `note` merged into the Note.
    fn create(note: Value) -> Value {
        let mut object = json!({"id": "https://r.example/notes/1", "type": "Note", "content": "hi"});
        object.as_object_mut().unwrap().extend(note.as_object().unwrap().clone());
        json!({"@context": CTX, "type": "Create", "actor": SENDER, "object": object})
    }

    /// An activity of `kind` by [`SENDER`], with `fields` merged in.
    fn activity(kind: &str, fields: Value) -> Value {
        let mut doc = json!({"@context": CTX, "id": "https://r.example/activities/1", "type": kind, "actor": SENDER});
        doc.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        doc
    }

    fn mention(href: &str) -> Value {
        json!({"tag": [{"type": "Mention", "href": href}]})
    }

    /// How each local account `note` names is reached, by name.
    fn reach(note: Value) -> Vec<(LocalRef, Reach)> {
        let a = read(&create(note), &locals());
        a.local.iter().cloned().zip(a.reach.iter().copied()).collect()
    }

    #[test]
    fn only_a_tag_in_the_audience_is_notified() {
        let alice = "https://local.example/users/alice";
        let tag = json!([{"type": "Mention", "href": alice}]);
        assert_eq!(reach(json!({"tag": tag, "cc": [alice]})), [(name("alice"), Reach::Notified)]);
        assert_eq!(reach(json!({"tag": tag, "to": [alice]})), [(name("alice"), Reach::Notified)]);
        assert_eq!(reach(json!({"tag": tag})), [(name("alice"), Reach::Possible)]);
        assert_eq!(reach(json!({"cc": [alice]})), [(name("alice"), Reach::Silent)]);
        assert_eq!(reach(json!({"cc": [{"id": alice}]})), [(name("alice"), Reach::Silent)]);
        // Two spellings of her, one tagged and one in the audience: both.
        let spelled = json!([{"type": "Mention", "href": "https://LOCAL.example./@alice"}]);
        assert_eq!(reach(json!({"tag": spelled, "cc": [alice]})), [(name("alice"), Reach::Notified)]);
        // A quote of her post notifies her whatever the addressing.
        let quoted = reach(json!({"quote": "https://local.example/users/alice/statuses/7", "cc": [alice]}));
        assert_eq!(quoted, [(name("alice"), Reach::Silent), (LocalRef::StatusOwner(7), Reach::Notified)]);
    }

    #[test]
    fn spellings_mastodon_resolves_to_nobody_are_held_not_counted() {
        for generous in [
            "acct:alice@local.example",
            "@alice@local.example",
            "alice@local.example",
            "https://local.example:443/users/alice",
            "https://local.example:8443/users/alice",
            "https://local.example../users/alice",
            "tag:LOCAL.EXAMPLE,2016-10-03:objectId=1:objectType=Account",
        ] {
            assert!(!exact(generous, &locals()), "{generous}");
            let tag = json!([{"type": "Mention", "href": generous}]);
            let reached = reach(json!({"tag": tag, "cc": [generous]}));
            assert_eq!(reached.len(), 1, "{generous}");
            assert_eq!(reached[0].1, Reach::Unresolved, "{generous}");
        }
        for exact_spelling in [
            "https://local.example/users/alice",
            "https://LOCAL.example./users/alice",
            "https://x@local.example/@alice",
            "http://local.example/ap/users/1",
            "tag:local.example,2016-10-03:objectId=1:objectType=Account",
        ] {
            assert!(exact(exact_spelling, &locals()), "{exact_spelling}");
        }
    }

    #[test]
    fn an_edit_notifies_the_tag_it_adds_and_an_old_post_nobody() {
        let alice = "https://local.example/users/alice";
        let tag = json!([{"type": "Mention", "href": alice}]);
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let at = |published: &str| {
            let doc = create(json!({"tag": tag, "cc": [alice], "published": published}));
            read_at(&doc, &locals(), now).reach
        };
        // 2027-01-15T08:00:00Z is `now`: five hours before is live, seven is not.
        assert_eq!(at("2027-01-15T03:00:00Z"), [Reach::Notified]);
        assert_eq!(at("2027-01-15T01:00:00Z"), [Reach::Silent]);
        assert_eq!(at("not a date"), [Reach::Notified]);
        // An `Update` may be an edit (pavise cannot see whether the instance has the post),
        // which notifies what it adds however old the post and whoever it addresses: every
        // tag in it may reach her, none surely.
        for fields in [json!({"tag": tag, "published": "2020-01-01T00:00:00Z"}), json!({"tag": tag, "cc": [alice]})] {
            let mut edit = create(fields);
            edit["type"] = "Update".into();
            assert_eq!(read_at(&edit, &locals(), now).reach, [Reach::Possible]);
        }
        assert_eq!(read(&create(json!({"tag": tag})), &locals()).reach, [Reach::Possible]);
    }

    #[test]
    fn only_what_rails_routes_is_exact() {
        for nobody in [
            "https://local.ex\tample/users/alice",
            "https://local.example\\users\\alice",
            "https://ｌocal.example/users/alice",
            "https://local.example/users/alice?x=é",
            "https://local.example/users/alice#a b",
            "https://local.example/users/alice/",
            "https://local.example//users/alice",
        ] {
            assert!(!exact(nobody, &locals()), "{nobody:?}");
        }
        assert!(exact("https://local.example/", &locals()));
        assert!(exact("https://local.example/users/alice?x=1#top", &locals()));
    }

    #[test]
    fn published_is_read_in_the_forms_rails_reads() {
        let day = |s: &str| {
            published_at(s).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs() / 86_400)
        };
        let jan_2020 = Some(18_262);
        assert_eq!(day("2020-01-01T00:00:00Z"), jan_2020);
        assert_eq!(day("2020-01-01t00:00:00z"), jan_2020);
        assert_eq!(day("2020-01-01 00:00:00Z"), jan_2020);
        assert_eq!(day("2020-01-01"), jan_2020);
        assert_eq!(day("Wed, 01 Jan 2020 00:00:00 GMT"), jan_2020);
        assert_eq!(day("20200101T000000Z"), jan_2020);
        assert_eq!(day("1969-07-20T20:17:00Z"), Some(0));
        assert_eq!(day("soon"), None);
        let note = |published: Value| {
            read(&create(json!({"cc": ["https://local.example/users/alice"], "tag": [{"type": "Mention", "href": "https://local.example/users/alice"}], "published": published})), &locals()).reach
        };
        assert_eq!(note(json!(1_577_836_800)), [Reach::Silent], "a number: never stored");
        assert_eq!(note(json!(["2020-01-01"])), [Reach::Silent]);
    }

    #[test]
    fn a_body_read_its_own_way_reaches_whoever_any_string_names() {
        let opaque = |body: &str| {
            let a = read_opaque(body.as_bytes(), &locals());
            assert!(a.opaque, "{body}");
            a.local.into_iter().zip(a.reach).collect::<Vec<_>>()
        };
        let alice = (name("alice"), Reach::Possible);
        // A key twice, a number no float holds, a comment, an IRI key, an alias a JSON-LD
        // compaction turns into `tag`: the instance reads each its own way.
        for body in [
            r#"{"tag": [], "tag": [{"type": "Mention", "href": "https://local.example/users/alice"}]}"#,
            r#"{"n": 1e400, "cc": ["https://local.example/users/alice"]}"#,
            r#"{/* hi */ "cc": ["https://local.example/@alice"]}"#,
            r#"{"ext:flag": true, "object": {"tag": {"href": "https:\/\/local.example\/users\/\u0061lice"}}}"#,
            r#"{"signature": {}, "@context": [{"mentions": "as:tag"}], "mentions": {"href": "https://local.example/users/alice"}}"#,
            r#"{"https://local.example/users/alice": 1}"#,
            // A quote in a comment flips no reading; nor does a string left open.
            r#"{/* " */ "cc": ["https://local.example/users/alice"]}"#,
            "{// \"\n \"cc\": [\"https://local.example/users/alice\"]}",
            r#"{"cc": ["https://local.example/users/alice"#,
            r#"{"x": "\ud83d\ude00\ud800", "to": "https:\/\/local.example\/users\/ali\u0063e"}"#,
            // Ninth pass: a comma or an apostrophe inside a reference does not end it.
            r#"{"n": 1e400, "cc": ["https://x'y@local.example/users/alice"]}"#,
        ] {
            assert_eq!(opaque(body), std::slice::from_ref(&alice), "{body}");
        }
        // Her post's owner, asked of the instance; a spelling Mastodon resolves to nobody;
        // remote accounts: nobody here.
        assert_eq!(
            opaque(
                r#"{"object": "https://local.example/users/carol/statuses/88", "x": "https://local.example:443/users/bob"}"#
            ),
            [(LocalRef::StatusOwner(88), Reach::Possible), (name("bob"), Reach::Unresolved)]
        );
        assert_eq!(opaque(r#"{"cc": ["https://r.example/users/alice"], "bad": "\ud800"}"#), []);
        assert_eq!(
            opaque(r#"{"n": 1e400, "cc": ["tag:local.example,2016-10-03:objectId=7:objectType=Account"]}"#),
            [(LocalRef::Id(7), Reach::Possible)]
        );
        // A reading that stopped at its cap, joined with this one, keeps both its own
        // findings and every name found past the cap.
        let exact = Addressed {
            local: vec![name("bob")],
            reach: vec![Reach::Notified],
            total: 1001,
            truncated: true,
            ..Addressed::default()
        };
        let joined = exact.joined(read_opaque(
            br#"{"a": "https://local.example/users/bob", "z": "https://local.example/@alice"}"#,
            &locals(),
        ));
        assert_eq!(joined.local, [name("bob"), name("alice")]);
        assert_eq!(joined.reach, [Reach::Notified, Reach::Possible]);
        assert!(joined.opaque && joined.total == 1001);
        // However long the body, a name in it is found (the reading is linear).
        let many = format!("[{}\"https://local.example/users/alice\"]", "\"x\",".repeat(100_000));
        assert_eq!(opaque(&many), std::slice::from_ref(&alice));
    }

    #[test]
    fn a_boost_or_add_of_the_senders_own_post_is_read_as_a_create_of_it() {
        let alice = "https://local.example/users/alice";
        let own = |extra: Value| {
            let mut post = json!({"id": "https://r.example/notes/9", "type": "Note", "attributedTo": SENDER,
                "tag": [{"type": "Mention", "href": alice}]});
            post.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            post
        };
        for kind in ["Announce", "Add"] {
            let a = |post: Value| {
                read(&activity(kind, json!({"object": post, "target": format!("{SENDER}/featured")})), &locals()).reach
            };
            // Whether the instance takes it pavise cannot see: at most possible.
            assert_eq!(a(own(json!({"cc": [alice]}))), [Reach::Possible], "{kind}");
            assert_eq!(a(own(json!({"published": "2020-01-01T00:00:00Z"}))), [Reach::Silent], "{kind}");
            // Its own audience only: the activity's `to`/`cc` are not the post's.
            let mut untagged = own(json!({}));
            untagged.as_object_mut().unwrap().remove("tag");
            let around =
                activity(kind, json!({"object": untagged, "cc": [alice], "target": format!("{SENDER}/featured")}));
            assert_eq!(read(&around, &locals()).reach, [], "{kind}");
        }
    }

    #[test]
    fn reach_of_two_readings() {
        assert_eq!(Reach::Silent.with(Reach::Possible), Reach::Possible);
        assert_eq!(Reach::Possible.with(Reach::Possible), Reach::Possible);
        assert_eq!(Reach::Silent.with(Reach::Silent), Reach::Silent);
        assert_eq!(Reach::Notified.with(Reach::Silent), Reach::Notified);
    }

    #[test]
    fn every_spelling_of_a_member_is_the_member() {
        for r in [
            "https://local.example/users/alice",
            "https://LOCAL.Example/users/Alice",
            "https://local.example./users/alice",
            "https://local.example:443/users/alice",
            "https://local.example:8443/users/alice",
            "http://local.example/users/alice",
            "https://local.example/users/%61lice",
            "https://local.example//users//alice/",
            "https://local.example/users/alice.json",
            "https://local.example/users/alice#main-key",
            "https://someone@local.example/users/alice",
            "https://%6cocal.example/users/alice",
            "https://ｌｏｃａｌ.example/users/alice",
            "https://local.example/@alice",
            "https://local.example/@Alice/with_replies",
            "https://local.example/@alice/collections",
            "https://local.example/@alice/collections.json",
            "https://local.example/@alice/media",
            "https://local.example/@alice/tagged/hello",
            "acct:alice@local.example",
            "acct:@alice@LOCAL.example",
            "@alice@local.example",
            "alice@local.example.",
            " https://local.example/users/alice ",
        ] {
            assert_eq!(one(r), alice(), "{r}");
        }
        assert_eq!(one("https://local.example/ap/users/0123"), Some(LocalRef::Id(123)));
        assert_eq!(one("https://local.example/ap/users/42.json"), Some(LocalRef::Id(42)));
        assert_eq!(one("tag:local.example,2016-10-03:objectId=7:objectType=Account"), Some(LocalRef::Id(7)));
    }

    /// Mastodon reads an OStatus `tag:` id with a prefix check and the first unanchored
    /// regex match: both looser spellings name account 1, and a status's owner is found too.
    #[test]
    fn ostatus_tags_are_read_as_loosely_as_mastodon_reads_them() {
        for tag in [
            "tag:local.example,2016-10-03:objectId=1:objectType=Account",
            "tag:local.example,2016-10-03:objectId=9:objectId=1:objectType=Account",
            "tag:local.examplex,2016-10-03:objectId=1:objectType=Account",
            "tag:local.example:objectId=1:objectType=Accounts",
        ] {
            assert_eq!(one(tag), Some(LocalRef::Id(1)), "{tag}");
        }
        assert_eq!(one("tag:elsewhere.example,2016:objectId=1:objectType=Account"), None);
        assert_eq!(one("tag:local.example,2016:objectId=1:objectType=Status"), None);
        assert_eq!(
            status_ref("tag:local.example,2016-10-03:objectId=111:objectType=Status", &locals()),
            Some(LocalRef::StatusOwner(111))
        );
        assert_eq!(status_ref("tag:local.example,2016:objectId=111:objectType=Account", &locals()), None);
    }

    /// N4: `uris_to_local_accounts` looks `/ap/users/:id` up with `Account.local.where(id:)`,
    /// which casts the id with `String#to_i`: each of these is account 1.
    #[test]
    fn numeric_ids_are_cast_as_active_record_casts_them() {
        for id in ["1", "01", "1-alice", "1abc", "%2B1", "%201", "%091", "1.json", "1%2Fx", "+1"] {
            assert_eq!(one(&format!("https://local.example/ap/users/{id}")), Some(LocalRef::Id(1)), "{id}");
        }
        assert_eq!(one("https://local.example/ap/users/1_0"), Some(LocalRef::Id(10)), "another account");
        for id in ["abc", "-1", "0", "%2D1", "_1"] {
            assert_eq!(one(&format!("https://local.example/ap/users/{id}")), None, "{id}");
        }
        // Statuses are found the same way.
        for id in ["42", "042", "+42", "%2042", "42-x", "4_2"] {
            let url = format!("https://local.example/users/x/statuses/{id}");
            assert_eq!(status_ref(&url, &locals()), Some(LocalRef::StatusOwner(42)), "{url}");
        }
    }

    #[test]
    fn other_urls_are_not_members() {
        for r in [
            "https://remote.example/users/alice",
            "https://local.example.evil.example/users/alice",
            "https://local.example/users/alice/followers",
            "https://local.example/users/alice/statuses/1",
            "https://local.example/@alice/123",
            "https://local.example/ap/users/abc",
            "https://local.example/tags/alice",
            "ftp://local.example/users/alice",
            "acct:alice@remote.example",
            "tag:local.example,2016:objectId=7:objectType=Status",
            "https://local.example/users/",
            "",
        ] {
            assert_eq!(one(r), None, "{r}");
        }
    }

    fn read_json(v: Value) -> Addressed {
        read(&v, &locals())
    }

    #[test]
    fn tags_and_audience_in_every_shape() {
        let a = read_json(json!({
            "@context": CTX, "type": "Create", "actor": SENDER,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "cc": ["https://r.example/users/troll/followers", "https://local.example/users/Alice"],
            "object": {"id": "https://r.example/notes/1", "type": "Note", "content": "hi",
                "to": {"id": "https://local.example/users/carol"},
                "tag": {"type": ["Mention"], "href": "https://local.example/@bob"}}
        }));
        // The object's `to`; without a `cc` of its own, the activity's.
        assert_eq!(a.local, [name("carol"), name("alice"), name("bob")]);
        assert_eq!(a.total, 3);
        assert!(!a.opaque && a.post);
        // Only Mention tags count; hashtags do not.
        let a = read_json(create(json!({"tag": [{"type":"Hashtag","href":"https://local.example/users/nothere"},
            {"type":"Mention","href":"https://local.example/users/dave"}]})));
        assert_eq!(a.local, [name("dave")]);
        assert_eq!(read_json(json!([1, 2])), Addressed::default());
    }

    /// N5: Mastodon reads a post's audience from the object's `to`/`cc` (the activity's
    /// only when the object has none), and never `bto`, `bcc` or `audience`.
    #[test]
    fn only_the_audience_mastodon_reads_counts() {
        let a = read_json(json!({"@context": CTX, "type": "Create", "actor": SENDER,
            "to": ["https://local.example/users/alice"], "cc": ["https://local.example/users/bob"],
            "object": {"id": "https://r.example/notes/1", "type": "Note", "to": [], "cc": ["https://local.example/users/carol"],
                "bto": ["https://local.example/users/dave"], "bcc": ["https://local.example/users/erin"],
                "audience": ["https://local.example/users/frank"]}}));
        assert_eq!(a.local, [name("carol")]);
    }

    /// N5: what Mastodon drops without a trace reaches nobody, whoever it addresses.
    #[test]
    fn ghosts_reach_nobody() {
        let alice = "https://local.example/users/alice";
        let to_alice = json!({"to": [alice], "cc": [alice], "object": alice});
        let mut no_context = create(mention(alice));
        no_context.as_object_mut().unwrap().remove("@context");
        let mut http_context = create(mention(alice));
        http_context["@context"] = json!("http://www.w3.org/ns/activitystreams");
        let mut as_array_type = create(mention(alice));
        as_array_type["type"] = json!(["Create"]);
        let mut foreign_note = create(mention(alice));
        foreign_note["object"]["id"] = json!("https://elsewhere.example/notes/1");
        let mut no_id = create(mention(alice));
        no_id["object"].as_object_mut().unwrap().remove("id");
        let mut untyped = create(mention(alice));
        untyped["object"].as_object_mut().unwrap().remove("type");
        let mut local_id = create(mention(alice));
        local_id["object"]["id"] = json!("https://local.example/users/alice/statuses/1");
        let mut nested = json!({"@context": CTX, "type": "Collection", "items": [
            {"type": "Collection", "items": [create(mention(alice))]}]});
        nested["items"][0]["items"][0].as_object_mut().unwrap().remove("@context");
        let mut note_items = json!({"@context": CTX, "type": "Note", "items": [create(mention(alice))]});
        note_items["items"][0].as_object_mut().unwrap().remove("@context");
        for (what, doc) in [
            ("no @context", no_context),
            ("the http context", http_context),
            ("a type array", as_array_type),
            ("a Note on another host", foreign_note),
            ("a Note without id", no_id),
            ("an object without type", untyped),
            ("a Note with a local id", local_id),
            ("an unsupported type", create(json!({"type": "Foo", "tag": [{"type": "Mention", "href": alice}]}))),
            ("a collection in a collection", nested),
            ("items of a Note", note_items),
            (
                "a Delete of nothing",
                activity("Delete", json!({"object": "https://r.example/notes/none", "to": [alice]})),
            ),
            ("a Block", activity("Block", to_alice.clone())),
            ("an Undo", activity("Undo", to_alice.clone())),
            ("a Flag", activity("Flag", to_alice.clone())),
            ("a Move", activity("Move", to_alice.clone())),
            ("an Accept", activity("Accept", to_alice.clone())),
            ("a Remove", activity("Remove", to_alice.clone())),
            ("an unknown type", activity("Wave", to_alice.clone())),
            ("a QuoteRequest with an id elsewhere", {
                let mut q = activity("QuoteRequest", json!({"object": "https://local.example/users/alice/statuses/7"}));
                q["id"] = json!("https://elsewhere.example/q/1");
                q
            }),
        ] {
            let a = read_json(doc);
            assert_eq!((a.local.as_slice(), a.opaque, a.post, a.total), (&[][..], false, false, 0), "{what}");
        }
        // The same document, compacted because it carries a Linked Data signature, is read.
        let mut signed = create(mention(alice));
        signed["type"] = json!(["Create"]);
        signed["signature"] = json!({"type": "RsaSignature2017", "signatureValue": "AAAA"});
        assert_eq!(read_json(signed).local, [name("alice")]);
        // A bearcap id may be the sender's: counted.
        let mut bearcap = create(mention(alice));
        bearcap["object"]["id"] = json!("bear:?u=https://r.example/notes/1&t=x");
        assert_eq!(read_json(bearcap).local, [name("alice")]);
        // A port or the case of the host does not make it another host.
        let mut same = create(mention(alice));
        same["object"]["id"] = json!("https://R.EXAMPLE:8443/notes/1");
        assert_eq!(read_json(same).local, [name("alice")]);
    }

    /// N3: whatever makes the instance fetch a post may mention anyone.
    #[test]
    fn what_the_instance_fetches_is_opaque() {
        let opaque = |v: Value| read_json(v).opaque;
        let theirs = "https://evil.example/notes/mentions-alice";
        let hers = "https://local.example/users/alice/statuses/111";
        // Objects by reference.
        assert!(opaque(activity("Create", json!({"object": theirs}))));
        assert!(opaque(activity("Update", json!({"object": theirs}))));
        // A post by reference is a wave of its own; a boost by reference (every boost) is not.
        assert!(read_json(activity("Create", json!({"object": theirs}))).by_reference);
        assert!(!read_json(activity("Announce", json!({"object": theirs}))).by_reference);
        assert!(opaque(activity("Announce", json!({"object": theirs}))));
        assert!(opaque(activity("Add", json!({"object": theirs, "target": format!("{SENDER}/collections/featured")}))));
        assert!(!opaque(activity("Announce", json!({"object": hers}))));
        assert!(!opaque(activity("Like", json!({"object": theirs}))));
        assert!(!opaque(activity("Add", json!({"object": theirs}))), "no target: Add does nothing");
        assert!(!opaque(activity(
            "Add",
            json!({"object": {"type": "Hashtag", "name": "#x"}, "target": format!("{SENDER}/collections/tags")})
        )));
        // A reply to a post elsewhere: its parent is fetched. A local parent is not.
        assert!(opaque(create(json!({"inReplyTo": theirs}))));
        assert!(opaque(create(json!({"inReplyTo": {"id": theirs, "type": "Note"}}))));
        assert!(!opaque(create(json!({"inReplyTo": hers}))));
        assert!(!opaque(create(json!({"inReplyTo": "not a url"}))));
        assert!(!opaque(create(json!({"inReplyTo": ""}))));
        // Replies: fetched unless an embedded collection whose first page lists nothing.
        let mastodon_replies = json!({"id": "https://r.example/notes/1/replies", "type": "Collection",
            "first": {"type": "CollectionPage", "next": "https://r.example/notes/1/replies?page=true",
                "partOf": "https://r.example/notes/1/replies", "items": []}});
        assert!(!opaque(create(json!({"replies": mastodon_replies}))), "Mastodon's own posts");
        assert!(!opaque(create(json!({"replies": {"type": "Collection", "totalItems": 0}}))));
        assert!(!opaque(create(json!({"replies": ""}))));
        for replies in [
            json!("https://r.example/notes/1/replies"),
            json!({"id": "https://r.example/notes/1/replies", "type": "Collection", "first": "https://r.example/p1"}),
            json!({"type": "Collection", "first": {"type": "CollectionPage", "items": ["https://r.example/n/2"]}}),
            json!({"type": "OrderedCollection", "orderedItems": [{"id": "https://r.example/n/2"}]}),
        ] {
            assert!(opaque(create(json!({"replies": replies.clone()}))), "{replies}");
        }
        // A quote of a post elsewhere is fetched (and counted for nobody).
        for key in QUOTE_KEYS {
            assert!(opaque(create(json!({key: theirs}))), "{key}");
            assert!(opaque(create(json!({key: {"id": theirs, "type": "Note"}}))), "{key} embedded");
        }
        // A QuoteRequest's instrument: by reference, or embedded from another host, fetched.
        let qr = |instrument: Value| activity("QuoteRequest", json!({"object": hers, "instrument": instrument}));
        assert!(opaque(qr(json!(theirs))));
        assert!(opaque(qr(json!({"id": theirs, "type": "Note", "content": "x"}))));
        // Embedded from the sender's host, it may be imported as it is: whom it mentions
        // counts too (and older versions fetch it anyway).
        let inst = json!({"id": "https://r.example/notes/q", "type": "Note", "quote": hers,
            "tag": [{"type": "Mention", "href": "https://local.example/users/bob"}]});
        let a = read_json(qr(inst));
        assert!(a.opaque);
        assert_eq!(a.local, [LocalRef::StatusOwner(111), name("bob")]);
        assert!(!opaque(qr(json!("https://local.example/users/alice/statuses/5"))), "a local instrument is found");
        // A bearcap is fetched too.
        assert!(opaque(activity("Create", json!({"object": "bear:?u=https://r.example/n/1&t=x"}))));
        // An account update naming its pinned posts: they are fetched.
        let person = |featured: Value| {
            activity("Update", json!({"object": {"id": SENDER, "type": "Person", "featured": featured}}))
        };
        assert!(opaque(person(json!(format!("{SENDER}/collections/featured")))));
        assert!(!opaque(person(Value::Null)));
        // An embedded post the sender did not write is fetched from its origin.
        assert!(opaque(activity(
            "Add",
            json!({"target": "t", "object": {"id": theirs, "type": "Note", "attributedTo": "https://evil.example/u"}})
        )));
    }

    /// N2: a quote of a member's post reaches her like a mention; so does a QuoteRequest.
    #[test]
    fn quotes_reach_the_quoted_member() {
        let hers = "https://local.example/users/alice/statuses/111";
        for key in QUOTE_KEYS {
            let a = read_json(create(json!({key: hers})));
            assert_eq!((a.local.as_slice(), a.opaque), (&[LocalRef::StatusOwner(111)][..], false), "{key}");
            let a = read_json(create(json!({key: [{"id": format!("{hers}.json")}]})));
            assert_eq!(a.local, [LocalRef::StatusOwner(111)], "{key} as an array");
        }
        let a =
            read_json(activity("QuoteRequest", json!({"object": hers, "instrument": "https://local.example/@x/1"})));
        assert_eq!((a.local.as_slice(), a.opaque), (&[LocalRef::StatusOwner(111)][..], false));
        // A FeatureRequest from another host is ignored.
        let mut fr = activity("FeatureRequest", json!({"object": "https://local.example/users/alice"}));
        fr["id"] = json!("https://elsewhere.example/f/1");
        assert!(read_json(fr).local.is_empty());
    }

    #[test]
    fn objects_the_instance_must_fetch_are_opaque() {
        let opaque = |v: Value| read_json(v).opaque;
        assert!(opaque(json!({"@context":CTX,"type":"Create","object":"https://r.example/notes/1"})));
        assert!(opaque(json!({"@context":CTX,"type":"Announce","object":"https://r.example/notes/1"})));
        assert!(opaque(json!({"@context":CTX,"type":"Announce","object":{"id":"https://r.example/notes/1"}})));
        assert!(!opaque(
            json!({"@context":CTX,"type":"Announce","object":"https://local.example/users/alice/statuses/1"})
        ));
        assert!(!opaque(
            json!({"@context":CTX,"type":"Create","object":{"type":"Note","id":"https://r.example/notes/1"}})
        ));
        assert!(!opaque(json!({"@context":CTX,"type":"Like","object":"https://r.example/notes/1"})));
    }

    #[test]
    fn top_level_collections_are_read_item_by_item() {
        let mut item = create(mention("https://local.example/users/alice"));
        item.as_object_mut().unwrap().remove("@context");
        for (kind, key) in [
            ("Collection", "items"),
            ("CollectionPage", "items"),
            ("OrderedCollection", "orderedItems"),
            ("OrderedCollectionPage", "orderedItems"),
        ] {
            let a = read_json(json!({"@context": CTX, "type": kind, key: [item.clone()]}));
            assert_eq!(a.local, [name("alice")], "{kind}");
            assert!(a.post, "a collection sent to a member's own inbox carries its items' posts to her");
        }
        // `process_items` of the other key, or of a non-collection, reads nothing.
        let a = read_json(json!({"@context": CTX, "type": "Collection", "orderedItems": [item.clone()]}));
        assert!(a.local.is_empty());
        let likes = json!({"@context": CTX, "type": "Collection", "items": [{"type": "Like", "object": "https://r.example/n"}]});
        assert!(!read_json(likes).post);
    }

    #[test]
    fn a_boost_of_someone_elses_post_is_opaque() {
        let actor = "https://r.example/users/booster";
        let boost = |author: Option<&str>, id: &str| {
            let mut note = json!({"id": id, "type": "Note", "content": "x"});
            if let Some(a) = author {
                note["attributedTo"] = a.into();
            }
            read_json(json!({"@context": CTX, "type":"Announce","actor":actor,"object":note})).opaque
        };
        assert!(boost(Some("https://evil.example/users/sock"), "https://evil.example/notes/1"));
        assert!(boost(None, "https://evil.example/notes/1"));
        assert!(!boost(Some(actor), "https://r.example/notes/1"), "a self-boost is read as embedded");
        assert!(
            !boost(Some("https://x.example/u"), "https://local.example/users/alice/statuses/1"),
            "a local post is found, not fetched"
        );
        // An unsupported type is fetched from its origin even when it is the sender's.
        let foo = json!({"@context": CTX, "type": "Announce", "actor": actor,
            "object": {"id": "https://r.example/x/1", "type": "Foo", "attributedTo": actor}});
        assert!(read_json(foo).opaque);
        // A self-boost is read like a Create of the post: its mentions count.
        let own = json!({"@context": CTX, "type": "Announce", "actor": actor, "object": {"id": "https://r.example/n/1",
            "type": "Note", "attributedTo": [actor], "tag": {"type": "Mention", "href": "https://local.example/@carol"}}});
        assert_eq!(read_json(own).local, [name("carol")]);
    }

    #[test]
    fn follows_likes_and_boosts_address_the_member() {
        let a = read_json(activity("Follow", json!({"object": "https://local.example/users/alice"})));
        assert_eq!(a.local, [name("alice")]);
        assert!(!a.post);
        let a = read_json(activity("FeatureRequest", json!({"object": "https://local.example/ap/users/1abc"})));
        assert_eq!(a.local, [LocalRef::Id(1)]);
        for kind in ["Like", "Announce", "EmojiReact"] {
            let a = read_json(activity(kind, json!({"object": "https://local.example/users/anyone/statuses/0123"})));
            assert_eq!(a.local, [LocalRef::StatusOwner(123)], "{kind}");
        }
        for url in [
            "https://local.example/@alice/42",
            "https://local.example/ap/users/7/statuses/42.json",
            "https://LOCAL.example./users/bob/statuses/42-x",
        ] {
            assert_eq!(status_ref(url, &locals()), Some(LocalRef::StatusOwner(42)), "{url}");
        }
        for url in [
            "https://local.example/@alice/with_replies",
            "https://remote.example/users/a/statuses/1",
            "https://local.example/users/alice/statuses/1/activity",
        ] {
            assert_eq!(status_ref(url, &locals()), None, "{url}");
        }
        // A Like of a remote post addresses nobody here.
        assert!(read_json(activity("Like", json!({"object": "https://r.example/notes/1"}))).local.is_empty());
    }

    #[test]
    fn reading_is_bounded_whatever_the_shape() {
        let many: Vec<String> = (0..60_000).map(|i| format!("http://r/{i}")).collect();
        let a = read_json(create(json!({"cc": many})));
        assert!(a.truncated && a.opaque && a.total > MAX_ADDRESSEES);
        // Duplicates cost entries, not addressees.
        let same: Vec<&str> = vec!["https://local.example/users/alice"; 10_000];
        let a = read_json(create(json!({"to": same})));
        assert_eq!(a.local, [name("alice")]);
        assert!(a.truncated, "past MAX_ENTRIES");
        let few: Vec<String> = (0..100).map(|i| format!("https://r{i}.example/u")).collect();
        let a = read_json(create(json!({"to": few})));
        assert_eq!((a.total, a.truncated), (100, false));
    }

    #[test]
    fn inbox_paths_as_rails_routes_them() {
        let inbox = |path: &str| InboxPath::of(&Route::classify(&http::Method::POST, path, None));
        let personal = |n: &str| Some(InboxPath::Personal(name(n)));
        assert_eq!(inbox("/inbox"), Some(InboxPath::Shared));
        assert_eq!(inbox("//inbox/"), Some(InboxPath::Shared));
        assert_eq!(inbox("/inbox.json"), Some(InboxPath::Shared));
        assert_eq!(inbox("/actor/inbox"), Some(InboxPath::Shared));
        assert_eq!(inbox("/users/alice/inbox"), personal("alice"));
        assert_eq!(inbox("/users/%41lice//inbox.json"), personal("alice"));
        assert_eq!(inbox("/ap/users/12/inbox"), Some(InboxPath::Personal(LocalRef::Id(12))));
        assert_eq!(inbox("/users/alice/outbox"), None);
        // N1: Rails routes `/ap/users/:id/inbox` whatever the id, and casts it: never "no inbox".
        for (path, id) in [("/ap/users/1abc/inbox", 1), ("/ap/users/2-x/inbox", 2), ("/ap/users/%2B1/inbox", 1)] {
            assert_eq!(inbox(path), Some(InboxPath::Personal(LocalRef::Id(id))), "{path}");
        }
        assert_eq!(inbox("/ap/users/abc/inbox"), Some(InboxPath::Shared));
        assert_eq!(inbox("/users/a.b/inbox"), Some(InboxPath::Shared));
    }

    #[test]
    fn local_hosts_normalize() {
        assert_eq!(canonical_host("Local.Example:8443").as_deref(), Some("local.example"));
        assert_eq!(canonical_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(canonical_host("bücher.example").as_deref(), Some("xn--bcher-kva.example"));
        assert_eq!(canonical_host("a/b"), None);
    }
}
