//! The delivery's body as the instance will read it — exactly, or not at all.
//!
//! Mastodon reads an inbox body with the `json` gem (`JSON.parse`, in
//! `ActivityPub::ProcessActivityService`; Oj's `Oj.load(body, mode: :strict)` in older
//! versions), which is more lenient than strict JSON: it keeps the last of two keys, takes
//! numbers out of any float's range (`1e400`, infinity), and (Oj) comments.
//! Whatever pavise reads must be what the instance reads, or a second spelling of a
//! mention slips past a shield. So pavise reads strict JSON only, and when it cannot be
//! *sure* its reading is the instance's, it says so ([`Reading::Opaque`]): the stage then
//! treats the delivery like one whose object the instance will fetch — it may mention any
//! member, so it is held back from every shielded member. Opaque, for this module:
//!
//! - anything that is not strict JSON (comments, a BOM, `NaN`, numbers out of range,
//!   invalid UTF-8 or lone surrogates, trailing bytes, nesting past serde's limit);
//! - an object with a key twice (which one the instance keeps is a parser's choice);
//! - a document the instance would *compact* as JSON-LD in a way that changes whom it
//!   addresses. Mastodon compacts whenever the top-level `signature` is an object (a
//!   Linked Data signature — Mastodon signs every public post so), and compaction can
//!   turn a context's own term (`"mention": "as:tag"`), a prefixed value (`"loc:alice"`
//!   with `"loc": "https://local.example/users/"`), `"type": "as:Mention"` or a keyword
//!   alias into what Mastodon reads, and turns `@type`/`@id` keys into `type`/`id`. So
//!   such a document is read as it is only when its context is the one Mastodon writes:
//!   the standard remote contexts, and inline terms each exactly as Mastodon defines it
//!   ([`mastodon_terms`]), no keyword in the body, no IRI-valued field spelled with a
//!   prefix — anything else in it is opaque;
//! - any key that is a compact or full IRI (`as:tag`, `https://www.w3.org/ns/activitystreams#tag`)
//!   outside `@context`: meaningless to Mastodon's raw reading, but a reading of the same
//!   document by a JSON-LD processor differs, and no real server needs one.
//!
//! Opaque means "do not pretend to know whom this addresses": such a body is read for
//! every local name any of its strings holds instead ([`super::mention::read_opaque`]),
//! each counted toward a wave, and held back from every shielded member.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How the body reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Strict JSON, read exactly as the instance reads it.
    Exact(Value),
    /// The instance may read something else than pavise would: why.
    Opaque(Unreadable),
}

/// Why a body is opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    NotStrictJson,
    DuplicateKey,
    LinkedDataSignature,
    IriKey,
}

impl Unreadable {
    pub fn name(self) -> &'static str {
        match self {
            Unreadable::NotStrictJson => "not strict JSON",
            Unreadable::DuplicateKey => "a key given twice",
            Unreadable::LinkedDataSignature => "a JSON-LD signature (the instance compacts the document)",
            Unreadable::IriKey => "a JSON-LD IRI as a key",
        }
    }
}

/// Bodies above this are read on the blocking pool, not on an async worker.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// Reads a delivery body.
pub fn read(body: &[u8]) -> Reading {
    if body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        // Nothing for the instance to process either.
        return Reading::Exact(Value::Null);
    }
    let doc = match serde_json::from_slice::<Strict>(body) {
        Ok(Strict(doc)) => doc,
        Err(e) if e.to_string().starts_with(DUPLICATE) => return Reading::Opaque(Unreadable::DuplicateKey),
        Err(_) => return Reading::Opaque(Unreadable::NotStrictJson),
    };
    if doc.get("signature").is_some_and(Value::is_object) && !compaction_keeps_addressing(&doc) {
        return Reading::Opaque(Unreadable::LinkedDataSignature);
    }
    if has_iri_key(&doc) {
        return Reading::Opaque(Unreadable::IriKey);
    }
    Reading::Exact(doc)
}

/// Remote contexts whose terms are known: they alias nothing Mastodon reads for addressing.
const KNOWN_CONTEXTS: [&str; 8] = [
    "https://www.w3.org/ns/activitystreams",
    "http://www.w3.org/ns/activitystreams",
    "https://w3id.org/security/v1",
    "https://w3id.org/security/data-integrity/v1",
    "https://w3id.org/security/multikey/v1",
    "https://w3id.org/identity/v1",
    // Mastodon's own `webfinger:` context (`ContextHelper`), in every actor document.
    "https://purl.archive.org/socialweb/webfinger",
    "https://www.w3.org/ns/cid/v1",
];
/// The terms whose values say whom a post addresses or what it names: IRI-valued, so a
/// prefix in their values would be expanded ([`iri_valued`]).
const ADDRESSING_TERMS: [&str; 17] = [
    "id",
    "type",
    "actor",
    "object",
    "target",
    "to",
    "cc",
    "bto",
    "bcc",
    "audience",
    "tag",
    "href",
    "inReplyTo",
    "attributedTo",
    "instrument",
    "items",
    "orderedItems",
];
/// The quote terms pavise reads (IRI-valued too).
const QUOTE_FRAGMENTS: [&str; 4] = ["quote", "quoteUri", "quoteUrl", "_misskey_quote"];

/// JSON-LD keywords a document may use without changing what compaction makes of it.
const PLAIN_KEYWORDS: [&str; 1] = ["@context"];

/// `ContextHelper::CONTEXT_EXTENSION_MAP`'s terms, merged (each has one definition there).
const MASTODON_TERMS: &str = r#"{
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "sensitive": "as:sensitive",
    "Hashtag": "as:Hashtag",
    "movedTo": {"@id": "as:movedTo", "@type": "@id"},
    "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
    "toot": "http://joinmastodon.org/ns#",
    "Emoji": "toot:Emoji",
    "featured": {"@id": "toot:featured", "@type": "@id"},
    "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
    "schema": "http://schema.org#",
    "PropertyValue": "schema:PropertyValue",
    "value": "schema:value",
    "ostatus": "http://ostatus.org#",
    "atomUri": "ostatus:atomUri",
    "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
    "conversation": "ostatus:conversation",
    "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
    "blurhash": "toot:blurhash",
    "discoverable": "toot:discoverable",
    "indexable": "toot:indexable",
    "memorial": "toot:memorial",
    "votersCount": "toot:votersCount",
    "suspended": "toot:suspended",
    "attributionDomains": {"@id": "toot:attributionDomains", "@container": "@set"},
    "showFeatured": "toot:showFeatured",
    "showMedia": "toot:showMedia",
    "showRepliesInMedia": "toot:showRepliesInMedia",
    "QuoteRequest": "https://w3id.org/fep/044f#QuoteRequest",
    "quote": {"@id": "https://w3id.org/fep/044f#quote", "@type": "@id"},
    "quoteUri": "http://fedibird.com/ns#quoteUri",
    "_misskey_quote": "https://misskey-hub.net/ns#_misskey_quote",
    "quoteAuthorization": {"@id": "https://w3id.org/fep/044f#quoteAuthorization", "@type": "@id"},
    "gts": "https://gotosocial.org/ns#",
    "interactionPolicy": {"@id": "gts:interactionPolicy", "@type": "@id"},
    "canFeature": {"@id": "https://w3id.org/fep/7aa9#canFeature", "@type": "@id"},
    "canQuote": {"@id": "gts:canQuote", "@type": "@id"},
    "automaticApproval": {"@id": "gts:automaticApproval", "@type": "@id"},
    "manualApproval": {"@id": "gts:manualApproval", "@type": "@id"},
    "QuoteAuthorization": "https://w3id.org/fep/044f#QuoteAuthorization",
    "interactingObject": {"@id": "gts:interactingObject", "@type": "@id"},
    "interactionTarget": {"@id": "gts:interactionTarget", "@type": "@id"},
    "FeatureRequest": "https://w3id.org/fep/7aa9#FeatureRequest",
    "FeaturedCollection": "https://w3id.org/fep/7aa9#FeaturedCollection",
    "FeaturedItem": "https://w3id.org/fep/7aa9#FeaturedItem",
    "FeatureAuthorization": "https://w3id.org/fep/7aa9#FeatureAuthorization",
    "topic": {"@id": "https://w3id.org/fep/7aa9#topic", "@type": "@id"},
    "featuredObject": {"@id": "https://w3id.org/fep/7aa9#featuredObject", "@type": "@id"},
    "featureAuthorization": {"@id": "https://w3id.org/fep/7aa9#featureAuthorization", "@type": "@id"}
}"#;

/// The inline context terms Mastodon writes (`ContextHelper::CONTEXT_EXTENSION_MAP`), each
/// with the one definition it has there. An LD-signed body is read as it is only when
/// every inline term is one of these, defined exactly so: any other term may alias,
/// prefix or redefine what compaction turns into addressing (a term naming another, a
/// prefix defined twice, `as` itself redefined), and following JSON-LD's rules for each
/// is a second reader pavise would have to get exactly right. Another server's own
/// extensions make its LD-signed posts opaque: held back during a shield, never lost.
fn mastodon_terms() -> &'static Map<String, Value> {
    static TERMS: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    TERMS.get_or_init(|| serde_json::from_str(MASTODON_TERMS).unwrap_or_default())
}

/// Whether compacting `doc` against Mastodon's context leaves every key and value that
/// says whom it addresses as pavise reads it (see the module docs and [`mastodon_terms`]).
fn compaction_keeps_addressing(doc: &Value) -> bool {
    let contexts: Vec<&Value> = match doc.get("@context") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
        None => vec![],
    };
    let known = mastodon_terms();
    for ctx in contexts {
        match ctx {
            Value::String(url) if KNOWN_CONTEXTS.contains(&url.as_str()) => {}
            Value::Object(terms) if terms.iter().all(|(term, def)| known.get(term) == Some(def)) => {}
            _ => return false,
        }
    }
    // The prefixes those terms and the remote contexts define: a value of an IRI-valued
    // field spelled with one would be expanded.
    plain(doc, &PREFIXES, true)
}

/// Prefixes the known contexts define (ActivityStreams', the security vocabulary's,
/// Mastodon's extensions).
const PREFIXES: [&str; 8] = ["as", "toot", "schema", "ostatus", "gts", "sec", "ldp", "vcard"];

/// No nested context, no keyword that moves keys (`@nest`, `@graph`, ...), no value of an
/// IRI-valued key that a defined prefix would expand, no `type` that is an IRI. (Text
/// fields are never expanded: a content warning `sensitive: politics` is only text.)
fn plain(v: &Value, prefixes: &[&str], top: bool) -> bool {
    plain_as(v, prefixes, top, false)
}

/// The keys whose string values JSON-LD expands as IRIs (ActivityStreams' `@id`-typed
/// terms and the keywords): only there can a prefix change what a value names.
fn iri_valued(key: &str) -> bool {
    ADDRESSING_TERMS.contains(&key) || QUOTE_FRAGMENTS.contains(&key) || matches!(key, "@id" | "@type" | "url")
}

fn plain_as(v: &Value, prefixes: &[&str], top: bool, iri: bool) -> bool {
    let prefixed = |s: &str| s.split_once(':').is_some_and(|(p, _)| prefixes.contains(&p));
    match v {
        Value::Object(map) => map.iter().all(|(k, v)| {
            if k == "@context" {
                return top;
            }
            if k.starts_with('@') && !PLAIN_KEYWORDS.contains(&k.as_str()) {
                return false;
            }
            let iri_type = match v {
                Value::String(t) => t.contains(':'),
                Value::Array(ts) => ts.iter().any(|t| t.as_str().is_some_and(|t| t.contains(':'))),
                _ => false,
            };
            if (k == "type" || k == "@type") && iri_type {
                return false;
            }
            k == "signature" || plain_as(v, prefixes, false, iri_valued(k))
        }),
        Value::Array(items) => items.iter().all(|i| plain_as(i, prefixes, false, iri)),
        // `as:Public` is what Mastodon itself reads as public.
        Value::String(s) => !iri || s == "as:Public" || !prefixed(s),
        _ => true,
    }
}

/// A key with a `:` anywhere outside `@context` (whose values define terms, not data).
fn has_iri_key(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, v)| k != "@context" && (k.contains(':') || has_iri_key(v))),
        Value::Array(items) => items.iter().any(has_iri_key),
        _ => false,
    }
}

const DUPLICATE: &str = "pavise: duplicate key";

/// A `serde_json::Value` that refuses duplicate keys instead of keeping the last.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                return Err(de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opaque(body: &str) -> Option<Unreadable> {
        match read(body.as_bytes()) {
            Reading::Opaque(why) => Some(why),
            Reading::Exact(_) => None,
        }
    }

    #[test]
    fn strict_json_reads_exactly() {
        assert_eq!(
            read(br#"{"type":"Create","object":{"tag":[{"type":"Mention"}]},"n":1.5}"#),
            Reading::Exact(serde_json::json!({"type":"Create","object":{"tag":[{"type":"Mention"}]},"n":1.5}))
        );
        assert_eq!(read(b" \r\n"), Reading::Exact(Value::Null));
        // An IRI as a *value* is ordinary data, and `@context` defines terms freely.
        assert_eq!(
            opaque(r#"{"@context":[{"as":"https://www.w3.org/ns/activitystreams#","toot:x":"y"}],"type":"as:Note"}"#),
            None
        );
    }

    #[test]
    fn what_oj_reads_and_strict_json_does_not_is_opaque() {
        let not_json = Some(Unreadable::NotStrictJson);
        for body in [
            r#"{"type":"Create", /* hi */ "a":1}"#,
            "{\"type\":\"Create\", // hi\n \"a\":1}",
            r#"{"type":"Create","x":1e400}"#,
            r#"{"type":"Create","x":NaN}"#,
            "\u{feff}{\"type\":\"Create\"}",
            "{\"type\":\"Create\"}\u{0}junk",
            r#"{"type":"Create","x":"\ud800"}"#,
            r#"{"type":"Create",}"#,
            "{'type':'Create'}",
            "\u{c}{\"type\":\"Create\"}",
        ] {
            assert_eq!(opaque(body), not_json, "{body:?}");
        }
        assert_eq!(read(b"{\"x\":\"\xff\"}"), Reading::Opaque(Unreadable::NotStrictJson));
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(opaque(&deep), not_json);
    }

    #[test]
    fn second_readings_are_opaque() {
        assert_eq!(opaque(r#"{"type":"Create","type":"Like"}"#), Some(Unreadable::DuplicateKey));
        assert_eq!(opaque(r#"{"object":{"tag":1,"tag":2}}"#), Some(Unreadable::DuplicateKey));
        // A Linked Data signature: Mastodon's own public posts carry one, with the usual
        // context, and read as they are ...
        let mastodon = serde_json::json!({
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1",
                {"ostatus": "http://ostatus.org#", "atomUri": "ostatus:atomUri", "sensitive": "as:sensitive",
                 "toot": "http://joinmastodon.org/ns#", "Hashtag": "as:Hashtag",
                 "featured": {"@id": "toot:featured", "@type": "@id"}, "votersCount": "toot:votersCount"}],
            "type": "Create", "actor": "https://r.example/u", "to": ["as:Public"],
            "object": {"type": "Note", "atomUri": "https://r.example/n/1",
                "tag": [{"type": "Mention", "href": "https://local.example/users/alice"}]},
            "signature": {"type": "RsaSignature2017", "creator": "https://r.example/u#main-key", "signatureValue": "AAAA"},
        });
        assert_eq!(opaque(&mastodon.to_string()), None);
        // ... but whatever compaction would turn into addressing makes it opaque.
        let ld = |context: serde_json::Value, object: serde_json::Value| {
            let mut doc = mastodon.clone();
            doc["@context"] = context;
            doc["object"] = object;
            opaque(&doc.to_string())
        };
        let base = |extra: serde_json::Value| serde_json::json!(["https://www.w3.org/ns/activitystreams", extra]);
        let note = || serde_json::json!({"type": "Note"});
        let lds = Some(Unreadable::LinkedDataSignature);
        assert_eq!(ld(base(serde_json::json!({"mention": "as:tag"})), note()), lds, "a term aliasing tag");
        let full = serde_json::json!({"to2": {"@id": "https://www.w3.org/ns/activitystreams#to"}});
        assert_eq!(ld(base(full), note()), lds);
        assert_eq!(ld(base(serde_json::json!({"kind": "@type"})), note()), lds, "a keyword alias");
        assert_eq!(ld(base(serde_json::json!({"@vocab": "https://www.w3.org/ns/activitystreams#"})), note()), lds);
        let remote = serde_json::json!(["https://www.w3.org/ns/activitystreams", "https://evil.example/ctx"]);
        assert_eq!(ld(remote, note()), lds, "an unknown remote context");
        let prefix = base(serde_json::json!({"loc": "https://local.example/users/"}));
        assert_eq!(ld(prefix, serde_json::json!({"type": "Note", "cc": ["loc:alice"]})), lds, "a prefixed value");
        let iri_type = serde_json::json!({"tag": {"type": "as:Mention", "href": "x"}});
        assert_eq!(ld(base(serde_json::json!({})), iri_type), lds, "an IRI as a type");
        let nested = serde_json::json!({"@context": {"m": "as:tag"}, "m": []});
        assert_eq!(ld(base(serde_json::json!({})), nested), lds, "a nested context");
        assert_eq!(ld(base(serde_json::json!({})), serde_json::json!({"@nest": {"tag": []}})), lds, "@nest");
        // Seventh/eighth red-team passes: any term may prefix (an IRI ending in `@`, or
        // `@prefix`), `@type: @vocab` makes a value a term, an addressing term redefined,
        // another term mapped to a quote's IRI.
        let cc = |v: &str| serde_json::json!({"type": "Note", "cc": [v]});
        assert_eq!(ld(base(serde_json::json!({"l": "https://local.example/@"})), cc("l:bob")), lds, "X1");
        let at_prefix = serde_json::json!({"p": {"@id": "https://local.example/users/b", "@prefix": true}});
        assert_eq!(ld(base(at_prefix), cc("p:ob")), lds, "X2");
        let vocab =
            serde_json::json!({"cc": {"@id": "as:cc", "@type": "@vocab"}, "friend": "https://local.example/users/bob"});
        assert_eq!(ld(base(vocab), cc("friend")), lds, "X3");
        assert_eq!(ld(base(serde_json::json!({"cc": {"@id": "https://evil.example/cc"}})), note()), lds);
        let quote = serde_json::json!({"q": "https://w3id.org/fep/044f#quote"});
        assert_eq!(ld(base(quote), note()), lds, "another term compacted into quote");
        let scoped = serde_json::json!({"x": {"@id": "toot:x", "@context": {"m": "as:tag"}}});
        assert_eq!(ld(base(scoped), note()), lds, "a scoped context");
        // Ninth pass (X4): a term naming another term, or a prefix the same context defines.
        for terms in [
            serde_json::json!({"mention": "tag"}),
            serde_json::json!({"h": {"@id": "href", "@type": "@id"}}),
            serde_json::json!({"t": "type"}),
            serde_json::json!({"M": "Mention"}),
            serde_json::json!({"w": "https://www.w3.org/ns/", "mention": "w:activitystreams#tag"}),
            serde_json::json!({"w": "https://www.w3.org/ns/activitystreams#", "m": "w:tag"}),
        ] {
            assert_eq!(ld(base(terms.clone()), note()), lds, "{terms}");
        }
        // Tenth pass: `as` redefined, a term spelled like an IRI, a prefix defined twice,
        // and keywords in the body itself, which compaction turns into `type`/`id`.
        for terms in [
            serde_json::json!({"as": "https://local.example/users/alice#"}),
            serde_json::json!({"as": "https://www.w3.org/ns/", "activitystreams#tag": "as:activitystreams#tag"}),
            serde_json::json!({"toot": "https://local.example/users/"}),
        ] {
            assert_eq!(ld(base(terms.clone()), note()), lds, "{terms}");
        }
        let twice = serde_json::json!(["https://www.w3.org/ns/activitystreams",
            {"toot": "http://joinmastodon.org/ns#", "Emoji": "toot:Emoji"}, {"toot": "https://example.com/"}]);
        assert_eq!(ld(twice, note()), lds, "a prefix defined again");
        let keywords = serde_json::json!({"type": "Note",
            "tag": [{"@type": "Mention", "href": {"@id": "https://local.example/users/alice"}}]});
        assert_eq!(ld(base(serde_json::json!({})), keywords), lds, "@type/@id in the body");
        // Text is never expanded: a content warning or alt text that starts like a prefix
        // keeps the post exact (M2/M3).
        let mut cw = mastodon.clone();
        cw["object"]["summary"] = "sensitive: politics".into();
        cw["object"]["attachment"] = serde_json::json!([{"type": "Document", "name": "toot: my cat"}]);
        assert_eq!(opaque(&cw.to_string()), None);
        // Without a context the instance reads nothing of it (not a supported context).
        assert_eq!(opaque(r#"{"type":"Create","signature":{"type":"RsaSignature2017"}}"#), None);

        assert_eq!(opaque(r#"{"type":"Create","object":{"as:tag":{"type":"Mention"}}}"#), Some(Unreadable::IriKey));
        assert_eq!(
            opaque(r#"{"type":"Create","object":[{"https://www.w3.org/ns/activitystreams#tag":[]}]}"#),
            Some(Unreadable::IriKey)
        );
        // A signature that is not an object is not compacted.
        assert_eq!(opaque(r#"{"type":"Create","signature":"x"}"#), None);
    }
}
