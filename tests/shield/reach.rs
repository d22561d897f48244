//! The shield's second red-team pass (issue 12): what reaches a member is read as Mastodon
//! reads it — every route to her inbox, every spelling of her id, quotes of her posts —
//! what makes the instance fetch a post is held back, what the instance drops counts for
//! nothing, and a wave's own actors stay deferred while their shield is up.

use std::time::{Duration, Instant};

use super::{
    ActorServer, LOCAL, MASTODON_UA, admin_get, at_instance, deliver, ip, note, note_to, policies, raise_wave, rsa_key,
    signed, start,
};
use crate::support::{Pavise, RecordingUpstream, send_from, text};

const CTX: &str = "https://www.w3.org/ns/activitystreams";
/// alice's post (the instance says so); carol's; dave's.
const ALICE_POST: &str = "https://local.example/users/alice/statuses/77";
const CAROL_POST: &str = "https://local.example/users/carol/statuses/88";
const DAVE_POST: &str = "https://local.example/users/dave/statuses/99";

/// The instance: accounts 1 and 2 are alice and bob; posts 77, 88, 99 are alice's,
/// carol's, dave's; every delivery is taken (202).
async fn instance() -> RecordingUpstream {
    RecordingUpstream::with_handler(|r| {
        let account = |id: &str, name: &str| format!(r#"{{"id":"{id}","username":"{name}","acct":"{name}"}}"#);
        let post = |id: &str, owner: &str| format!(r#"{{"id":"{id}","account":{}}}"#, account("9", owner));
        match r.uri.path() {
            "/api/v1/accounts/lookup" if r.uri.query() == Some("acct=nobody") => {
                text(404, r#"{"error":"Record not found"}"#)
            }
            "/api/v1/accounts/1" => text(200, &account("1", "alice")),
            "/api/v1/accounts/2" => text(200, &account("2", "bob")),
            "/api/v1/statuses/77" => text(200, &post("77", "alice")),
            "/api/v1/statuses/88" => text(200, &post("88", "carol")),
            "/api/v1/statuses/99" => text(200, &post("99", "dave")),
            _ => text(202, ""),
        }
    })
    .await
}

/// A Create of a Note by `actor`, with `fields` merged into the Note.
fn post_with(actor: &str, marker: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_slice(&note_to(actor, &[], marker)).unwrap();
    doc["object"].as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    doc
}

/// An activity of `kind` by `actor`, with `fields` merged in.
fn activity(actor: &str, kind: &str, marker: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut doc = serde_json::json!({"@context": CTX, "id": format!("{actor}/activities/{marker}"), "type": kind, "actor": actor});
    doc.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    doc
}

/// Builds one delivery: (actor, marker, the member's URL).
type Shape = fn(&str, &str, &str) -> serde_json::Value;

/// A post's fields tagging `href` (alone: not in its audience).
fn tagging_json(href: &str) -> serde_json::Value {
    serde_json::json!({"tag": [{"type": "Mention", "href": href}]})
}

/// Delivers `body` as `actor` (of the server at `from`) to `path`.
async fn deliver_to(p: &Pavise, from: &str, actor: &str, path: &str, body: &[u8]) -> u16 {
    let req = signed(rsa_key(0), &format!("{actor}#main-key"), path, body, MASTODON_UA);
    send_from(ip(from), p.addr, req).await.0.status.as_u16()
}

fn shielded(report: &serde_json::Value) -> Vec<String> {
    report["shields"].as_array().unwrap().iter().map(|s| s["account"].as_str().unwrap().to_owned()).collect()
}

/// N1–N5: ghosts raise nothing; then, with alice shielded, every second route, spelling,
/// quote and fetch that reaches her is held back, while plain mail to others passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_reaches_a_member_is_counted_and_what_the_instance_fetches_is_held_back() {
    let upstream = instance().await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(policy_dir.path(), super::WAVE3);
    let pavise = start(&upstream, policy_dir.path()).await;
    let (ghosts, trolls, probes) = ("127.0.0.120", "127.0.0.121", "127.0.0.122");
    let ghost_server = ActorServer::start(ghosts, rsa_key(0)).await;
    let troll_server = ActorServer::start(trolls, rsa_key(0)).await;
    let probe_server = ActorServer::start(probes, rsa_key(0)).await;

    // N5: four fresh actors each send carol every kind of delivery Mastodon answers 202 and
    // drops: nothing reaches her, so nothing may shield her.
    let carol = format!("https://{LOCAL}/users/carol");
    for i in 0..4 {
        let a = ghost_server.actor(&format!("ghost{i}"));
        let to_carol = serde_json::json!({"to": [carol], "object": carol});
        let mention = serde_json::json!({"tag": [{"type": "Mention", "href": carol}], "to": [carol]});
        let mut no_context = post_with(&a, &format!("noctx{i}"), mention.clone());
        no_context.as_object_mut().unwrap().remove("@context");
        let mut array_type = post_with(&a, &format!("array{i}"), mention.clone());
        array_type["type"] = serde_json::json!(["Create"]);
        let mut foreign_id = post_with(&a, &format!("foreign{i}"), mention.clone());
        foreign_id["object"]["id"] = format!("https://elsewhere.example/notes/{i}").into();
        let mut foo = post_with(&a, &format!("foo{i}"), mention.clone());
        foo["object"]["type"] = "Foo".into();
        let ghosts_of_carol = [
            activity(
                &a,
                "Delete",
                &format!("del{i}"),
                serde_json::json!({"object": format!("{a}/none"), "to": [carol]}),
            ),
            activity(&a, "Block", &format!("block{i}"), to_carol.clone()),
            activity(&a, "Flag", &format!("flag{i}"), to_carol),
            no_context,
            array_type,
            foreign_id,
            foo,
        ];
        for doc in ghosts_of_carol {
            let body = doc.to_string().into_bytes();
            assert_eq!(deliver(&pavise, ghosts, rsa_key(0), &a, &body, MASTODON_UA).await.0.status, 202, "{doc}");
            assert!(at_instance(&upstream, &body), "forwarded as it is: {doc}");
        }
    }
    // Third pass, M3: what the instance takes but shows carol nothing of, from four
    // fresh verified actors. In the audience only, or a post to her own inbox that does not
    // tag her: a silent mention, which notifies nobody. Fourth pass: a spelling Mastodon
    // resolves to nobody (an explicit port), and a post published long ago (stored, never
    // distributed). (A tag alone counts: whether the instance takes it is not in the
    // delivery; see the end of this test.)
    let silent_to_carol = |a: &str, i: usize| {
        [
            ("/inbox", post_with(a, &format!("cconly{i}"), serde_json::json!({"cc": [carol]}))),
            ("/inbox", post_with(a, &format!("dm{i}"), serde_json::json!({"to": [carol], "cc": []}))),
            ("/users/carol/inbox", post_with(a, &format!("inbox{i}"), serde_json::json!({}))),
            (
                "/inbox",
                post_with(
                    a,
                    &format!("port{i}"),
                    serde_json::json!({
                        "tag": [{"type": "Mention", "href": "https://local.example:443/users/carol"}],
                        "cc": ["https://local.example:443/users/carol"],
                    }),
                ),
            ),
            (
                "/inbox",
                post_with(
                    a,
                    &format!("old{i}"),
                    serde_json::json!({
                        "tag": [{"type": "Mention", "href": carol}], "cc": [carol], "published": "2020-01-01T00:00:00Z",
                    }),
                ),
            ),
        ]
    };
    for i in 0..4 {
        let a = ghost_server.actor(&format!("unseen{i}"));
        for (path, doc) in silent_to_carol(&a, i) {
            let body = doc.to_string().into_bytes();
            assert_eq!(deliver_to(&pavise, ghosts, &a, path, &body).await, 202, "{doc}");
            assert!(at_instance(&upstream, &body), "forwarded as it is: {doc}");
        }
    }
    let report = admin_get(&pavise, "/admin/shield").await;
    assert!(shielded(&report).is_empty(), "ghosts raised a shield: {report}");
    let a = probe_server.actor("carols-stranger");
    assert_eq!(
        deliver(&pavise, probes, rsa_key(0), &a, &note(&a, &["carol"], "real"), MASTODON_UA).await.0.status,
        202
    );

    // Bodies pavise cannot read exactly (a key twice, a number no float holds, an IRI as a
    // key) the instance reads its own way: whoever any string in them names may be reached,
    // so they count (and, being opaque, are held from every shielded member during a shield).
    let olga = format!("https://{LOCAL}/users/olga");
    let odd = "127.0.0.123";
    let odd_server = ActorServer::start(odd, rsa_key(0)).await;
    let mut opaque = Vec::new();
    for i in 0..4 {
        let a = odd_server.actor(&format!("opaque{i}"));
        let body = post_with(&a, &format!("opaque{i}"), tagging_json(&olga)).to_string();
        let body = match i {
            0 => body.replacen(r#""object":{"#, r#""object":{"tag":[],"#, 1),
            1 => body.replacen('{', r#"{"n":1e400,"#, 1),
            _ => body.replacen('{', r#"{"ext:flag":true,"#, 1),
        };
        opaque.push(deliver_to(&pavise, odd, &a, "/inbox", body.as_bytes()).await);
    }
    assert_eq!(opaque, [202, 202, 202, 429], "bodies read their own way count toward a wave");
    // Three actors sending bodies pavise cannot read are a wave of their own: now every
    // such body is held, even one that names nobody pavise can see (a name JSON-LD would
    // build from parts), while readable mail to others still passes.
    let a = odd_server.actor("opaque-nobody");
    let body = post_with(&a, "opaque-nobody", serde_json::json!({})).to_string().replacen('{', r#"{"n":1e400,"#, 1);
    assert_eq!(deliver_to(&pavise, odd, &a, "/inbox", body.as_bytes()).await, 429, "a wave of unreadable bodies");
    let a = odd_server.actor("readable");
    let body = post_with(&a, "readable", tagging_json(&format!("https://{LOCAL}/users/quinn"))).to_string();
    assert_eq!(deliver_to(&pavise, odd, &a, "/inbox", body.as_bytes()).await, 202);
    // N2: a quote pile-on counts like mentions: dave's post quoted by fresh actors.
    let mut quotes = Vec::new();
    for (i, key) in ["quote", "_misskey_quote", "quoteUrl", "quoteUri"].iter().enumerate() {
        let a = troll_server.actor(&format!("quoter{i}"));
        let body = post_with(&a, &format!("quote{i}"), serde_json::json!({*key: DAVE_POST})).to_string();
        quotes.push(deliver(&pavise, trolls, rsa_key(0), &a, body.as_bytes(), MASTODON_UA).await.0.status.as_u16());
    }
    assert_eq!(quotes, [202, 202, 202, 429], "a quote pile-on raises a shield");

    // A real wave over alice.
    assert_eq!(raise_wave(&pavise, &troll_server, trolls, "troll", 4, "alice").await, [202, 202, 202, 429]);
    let alice = format!("https://{LOCAL}/users/alice");
    let evil_post = format!("http://{}/notes/mentions-alice", probe_server.addr);
    let p: Vec<String> = (0..16).map(|i| probe_server.actor(&format!("probe{i}"))).collect();
    let id = |spelling: &str| format!("https://{LOCAL}/ap/users/{spelling}");
    let cases = [
        // N1: Rails routes `/ap/users/:id/inbox` whatever the id (and casts it).
        (
            "a mention of alice to /ap/users/1abc/inbox",
            "/ap/users/1abc/inbox",
            &p[0],
            post_with(&p[0], "n1a", tagging_json(&alice)),
        ),
        (
            "a mention of alice to /ap/users/2-x/inbox",
            "/ap/users/2-x/inbox",
            &p[1],
            post_with(&p[1], "n1b", tagging_json(&alice)),
        ),
        (
            "a post to nobody, to account 1's inbox",
            "/ap/users/1abc/inbox",
            &p[2],
            post_with(&p[2], "n1c", serde_json::json!({})),
        ),
        // N4: the id cast as ActiveRecord casts it.
        ("/ap/users/1-alice", "/inbox", &p[3], post_with(&p[3], "n4a", tagging_json(&id("1-alice")))),
        ("/ap/users/1abc", "/inbox", &p[4], post_with(&p[4], "n4b", tagging_json(&id("1abc")))),
        ("/ap/users/%2B1", "/inbox", &p[5], post_with(&p[5], "n4c", tagging_json(&id("%2B1")))),
        ("/ap/users/%201 in cc", "/inbox", &p[6], post_with(&p[6], "n4d", serde_json::json!({"cc": [id("%201")]}))),
        // N2: quotes of her post.
        ("a quote of her post", "/inbox", &p[7], post_with(&p[7], "n2a", serde_json::json!({"quote": ALICE_POST}))),
        (
            "a _misskey_quote",
            "/inbox",
            &p[8],
            post_with(&p[8], "n2b", serde_json::json!({"_misskey_quote": ALICE_POST})),
        ),
        (
            "a QuoteRequest of her post",
            "/inbox",
            &p[9],
            activity(
                &p[9],
                "QuoteRequest",
                "n2c",
                serde_json::json!({
                    "object": ALICE_POST,
                    "instrument": {"id": format!("{}/statuses/q", p[9]), "type": "Note", "attributedTo": p[9], "quote": ALICE_POST},
                }),
            ),
        ),
        // N3: what the instance fetches, written by anyone, may mention her.
        (
            "a reply to a post elsewhere",
            "/inbox",
            &p[10],
            post_with(
                &p[10],
                "n3a",
                serde_json::json!({
                    "inReplyTo": evil_post, "cc": [format!("https://{LOCAL}/users/carol")],
                }),
            ),
        ),
        (
            "a replies collection listing posts",
            "/inbox",
            &p[11],
            post_with(
                &p[11],
                "n3b",
                serde_json::json!({
                    "replies": {"type": "Collection", "first": {"type": "CollectionPage", "items": [format!("{}/statuses/child", p[11])]}},
                }),
            ),
        ),
        (
            "a quote of a post elsewhere",
            "/inbox",
            &p[12],
            post_with(&p[12], "n3c", serde_json::json!({"quote": evil_post})),
        ),
        (
            "a QuoteRequest's instrument by reference",
            "/inbox",
            &p[13],
            activity(&p[13], "QuoteRequest", "n3d", serde_json::json!({"object": CAROL_POST, "instrument": evil_post})),
        ),
        (
            "an Add to featured by reference",
            "/inbox",
            &p[14],
            activity(
                &p[14],
                "Add",
                "n3e",
                serde_json::json!({
                    "object": format!("{}/statuses/pinned", p[14]), "target": format!("{}/collections/featured", p[14]),
                }),
            ),
        ),
        (
            "an Update of the actor naming pinned posts",
            "/inbox",
            &p[15],
            activity(
                &p[15],
                "Update",
                "n3f",
                serde_json::json!({
                    "object": {"id": p[15], "type": "Person", "featured": format!("{}/collections/featured", p[15])},
                }),
            ),
        ),
    ];
    for (what, path, actor, doc) in cases {
        let body = doc.to_string().into_bytes();
        assert_eq!(deliver_to(&pavise, probes, actor, path, &body).await, 429, "{what}: passed the shield");
        assert!(!at_instance(&upstream, &body), "{what}: reached the instance");
    }
    // Plain mail to another member still passes — also Mastodon's own post shape, which carries an
    // empty first page of replies, and a reply to a local post.
    let mastodon_replies = serde_json::json!({"id": "r", "type": "Collection",
        "first": {"type": "CollectionPage", "next": "https://x/p2", "items": []}});
    let erin = format!("https://{LOCAL}/users/erin");
    for (i, fields) in [
        serde_json::json!({"tag": [{"type": "Mention", "href": erin}]}),
        serde_json::json!({"tag": [{"type": "Mention", "href": erin}], "replies": mastodon_replies}),
        serde_json::json!({"tag": [{"type": "Mention", "href": erin}], "inReplyTo": CAROL_POST}),
    ]
    .into_iter()
    .enumerate()
    {
        let a = probe_server.actor(&format!("control{i}"));
        let body = post_with(&a, &format!("control{i}"), fields).to_string().into_bytes();
        assert_eq!(deliver_to(&pavise, probes, &a, "/inbox", &body).await, 202, "control {i}");
    }
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(shielded(&report), ["(unreadable)", "alice", "dave", "olga"], "{report}");
    // Where whether the instance shows her a post depends on what pavise cannot see, it
    // counts (`mention`'s module docs): a tag alone (any local account may follow the
    // sender, a relay may carry it, a remote post it replies to may be a followed author's
    // (that one also makes the instance fetch the parent, so it is held during any shield,
    // as above); taken at once when it replies to a local post or comes to her own inbox),
    // an `Update` of a post pavise never saw created (the instance may have it by
    // reference, from before a restart, through another node: then it is an edit, which
    // notifies every tag it adds), and an `Add` of the sender's own post (handled as a
    // `Create` of it). Each row is one member, three fresh actors, the fourth held.
    let shapes: [(&str, &str, Shape); 5] = [
        ("a tag alone, on the shared inbox", "/inbox", |a, m, href| post_with(a, m, tagging_json(href))),
        ("a tag alone, replying to a local post", "/inbox", |a, m, href| {
            let mut fields = tagging_json(href);
            fields["inReplyTo"] = CAROL_POST.into();
            post_with(a, m, fields)
        }),
        ("a tag alone, to her own inbox", "/users/{}/inbox", |a, m, href| post_with(a, m, tagging_json(href))),
        ("an Update of a post pavise never saw", "/inbox", |a, m, href| {
            let mut doc = post_with(a, m, tagging_json(href));
            doc["type"] = "Update".into();
            doc
        }),
        ("an Add of its own post to its featured collection", "/inbox", |a, m, href| {
            let mut post = post_with(a, m, tagging_json(href))["object"].clone();
            post["cc"] = serde_json::json!([href]);
            activity(a, "Add", m, serde_json::json!({"object": post, "target": format!("{a}/collections/featured")}))
        }),
    ];
    for (row, (what, path, shape)) in shapes.into_iter().enumerate() {
        let member = format!("unseen-target{row}");
        let href = format!("https://{LOCAL}/users/{member}");
        let path = path.replace("{}", &member);
        let mut statuses = Vec::new();
        for i in 0..4 {
            let a = troll_server.actor(&format!("unseen{row}-{i}"));
            let doc = shape(&a, &format!("unseen{row}-{i}"), &href);
            statuses.push(deliver_to(&pavise, trolls, &a, &path, doc.to_string().as_bytes()).await);
        }
        assert_eq!(statuses, [202, 202, 202, 429], "{what}: counted toward a wave");
    }
    // The admin lifts the unreadable wave's shield like any other; lifting one that is not
    // up says so.
    assert_eq!(admin_post(&pavise, "/admin/shield/lift/(unreadable)").await, 200);
    assert!(!shielded(&admin_get(&pavise, "/admin/shield").await).contains(&"(unreadable)".to_owned()));
    assert_eq!(admin_post(&pavise, "/admin/shield/lift/(unreadable)").await, 404);
    pavise.stop().await;
}

/// The design note: a wave lands in full `shield_for` after its first attempt even while
/// the shield is still up. A wave's own actors stay deferred as long as their shield is
/// (at most a day), so the admin can lift it or suspend them; everyone else's delivery
/// still passes `shield_for` after its first attempt. Nothing is lost either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waves_own_actors_stay_deferred_while_their_shield_is_up() {
    let upstream = instance().await;
    let policy_dir = tempfile::tempdir().unwrap();
    policies(
        policy_dir.path(),
        "[wave]\nwindow = \"10m\"\ndistinct_senders = 3\nper_domain = 10\nfamiliar_after = \"1h\"\nshield_for = \"3s\"\nmax_shield = \"30s\"\nhellthread = 0\nretry_after = \"1s\"\n",
    );
    let pavise = start(&upstream, policy_dir.path()).await;
    let from = "127.0.0.123";
    let server = ActorServer::start(from, rsa_key(0)).await;
    assert_eq!(raise_wave(&pavise, &server, from, "troll", 4, "alice").await, [202, 202, 202, 429]);
    let troll = server.actor("troll3");
    let troll_mail = note(&troll, &["alice"], "troll3");
    // A stranger writes to her just after: deferred by the shield, not one of its actors.
    let stranger = server.actor("stranger");
    let stranger_mail = note(&stranger, &["alice"], "stranger");
    let t0 = Instant::now();
    assert_eq!(deliver(&pavise, from, rsa_key(0), &stranger, &stranger_mail, MASTODON_UA).await.0.status, 429);
    // A new wave while it is up keeps it up past its first `shield_for`.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(t0.elapsed())).await;
    for i in 0..4 {
        let a = server.actor(&format!("second{i}"));
        let body = note(&a, &["alice"], &format!("second{i}"));
        assert_eq!(deliver(&pavise, from, rsa_key(0), &a, &body, MASTODON_UA).await.0.status, 429);
    }
    tokio::time::sleep(Duration::from_millis(3200).saturating_sub(t0.elapsed())).await;
    let report = admin_get(&pavise, "/admin/shield").await;
    assert_eq!(shielded(&report), ["alice"], "extended: {report}");
    // `shield_for` after their first attempts: the stranger's retry passes, the troll's not.
    assert_eq!(deliver(&pavise, from, rsa_key(0), &stranger, &stranger_mail, MASTODON_UA).await.0.status, 202);
    assert!(at_instance(&upstream, &stranger_mail));
    assert_eq!(deliver(&pavise, from, rsa_key(0), &troll, &troll_mail, MASTODON_UA).await.0.status, 429);
    assert!(!at_instance(&upstream, &troll_mail));
    // The admin lifts the shield: the troll's next retry is delivered — deferred, not lost.
    assert_eq!(admin_post(&pavise, "/admin/shield/lift/alice").await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(deliver(&pavise, from, rsa_key(0), &troll, &troll_mail, MASTODON_UA).await.0.status, 202);
    assert!(at_instance(&upstream, &troll_mail));
    pavise.stop().await;
}

async fn admin_post(p: &Pavise, path: &str) -> u16 {
    let resp = reqwest::Client::new().post(p.admin_url(path)).bearer_auth(&p.token).send().await.unwrap();
    resp.status().as_u16()
}
