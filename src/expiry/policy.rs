//! The `[[expire]]` rules of `policies/*.toml` (format in DESIGN.md), compiled once.
//!
//! Files are read in name order and rules in file order; the first rule whose `match`
//! holds decides. A file is parsed strictly: an unknown key (`visiblity`, `aftr`) or a
//! bad unit (`after = "7days"`) is an error naming the file, the rule and the key, never a
//! silent "does not expire". The same files carry the shield's `[[limit]]` and `[wave]`
//! sections; this module only lets them through (the shield parses them) and rejects any
//! other top-level section.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{store::UnixMs, units::Span};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("cannot read policies {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: rule {rule:?} (expire #{index}): {message}")]
    Rule { path: PathBuf, rule: String, index: usize, message: String },
}

/// Top-level sections a policy file may have. `limit` and `wave` belong to the shield.
const SECTIONS: [&str; 3] = ["expire", "limit", "wave"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
    Direct,
}

impl Visibility {
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "unlisted" => Some(Visibility::Unlisted),
            "private" => Some(Visibility::Private),
            "direct" => Some(Visibility::Direct),
            _ => None,
        }
    }
}

/// `match = { ... }`: every key given must hold; an empty match holds for every post.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub visibility: Option<Vec<Visibility>>,
    /// Local usernames (`alice`, case-insensitive).
    pub accounts: Option<Vec<String>>,
    /// Any of these hashtags (without `#`, case-insensitive).
    pub hashtags: Option<Vec<String>>,
    pub has_media: Option<bool>,
    pub is_reply: Option<bool>,
}

/// `keep = { ... }`: any condition that holds at the deadline keeps the post.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub self_favourited: bool,
    #[serde(default)]
    pub self_bookmarked: bool,
    pub min_favourites: Option<u64>,
    pub min_boosts: Option<u64>,
    #[serde(default)]
    pub hashtags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(rename = "match", default)]
    matcher: Match,
    after: Span,
    #[serde(default)]
    keep: Keep,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub matcher: Match,
    pub after: Span,
    pub keep: Keep,
    /// The file it came from, for `pavise check`.
    pub file: PathBuf,
}

/// What a rule looks at: read from the instance's Status JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostFacts {
    pub id: String,
    /// Local username of the author.
    pub account: String,
    pub visibility: Option<Visibility>,
    /// Lower-case, without `#`.
    pub tags: Vec<String>,
    pub has_media: bool,
    pub is_reply: bool,
    pub created_at: Option<UnixMs>,
    pub pinned: bool,
    pub favourited: bool,
    pub bookmarked: bool,
    pub favourites_count: u64,
    pub reblogs_count: u64,
    /// Its poll and media (hidden with it; no rule matches on them).
    pub attachments: crate::store::Attachments,
}

impl PostFacts {
    /// A post described in JSON: a Mastodon Status, or the short form `pavise check
    /// --sample-post` documents (`visibility`, `account`, `tags`, `has_media`, `is_reply`,
    /// `pinned`, `favourited`, `bookmarked`, `favourites_count`, `reblogs_count`).
    pub fn from_sample(v: &serde_json::Value) -> Result<PostFacts, String> {
        if v.get("account").is_some_and(|a| a.is_object()) {
            return super::observe::facts_from_status(v).ok_or_else(|| "a Status needs id and account.username".into());
        }
        let obj = v.as_object().ok_or("expected a JSON object")?;
        const KNOWN: [&str; 11] = [
            "visibility",
            "account",
            "tags",
            "has_media",
            "is_reply",
            "pinned",
            "favourited",
            "bookmarked",
            "favourites_count",
            "reblogs_count",
            "id",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("unknown key {k:?}; known: {}", KNOWN.join(", ")));
        }
        let visibility = match obj.get("visibility").and_then(|x| x.as_str()) {
            Some(s) => Some(Visibility::parse(s).ok_or_else(|| format!("unknown visibility {s:?}"))?),
            None => None,
        };
        let flag = |k: &str| obj.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        let count = |k: &str| obj.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        Ok(PostFacts {
            id: obj.get("id").and_then(|x| x.as_str()).unwrap_or("sample").to_owned(),
            account: obj.get("account").and_then(|x| x.as_str()).unwrap_or("").to_owned(),
            visibility,
            tags: obj
                .get("tags")
                .and_then(|t| t.as_array())
                .map(|t| t.iter().filter_map(|x| x.as_str()).map(norm_tag).collect())
                .unwrap_or_default(),
            has_media: flag("has_media"),
            is_reply: flag("is_reply"),
            created_at: None,
            pinned: flag("pinned"),
            favourited: flag("favourited"),
            bookmarked: flag("bookmarked"),
            favourites_count: count("favourites_count"),
            reblogs_count: count("reblogs_count"),
            attachments: Default::default(),
        })
    }
}

fn norm_tag(t: &str) -> String {
    t.trim().trim_start_matches('#').to_lowercase()
}

impl Match {
    pub fn holds(&self, post: &PostFacts) -> bool {
        self.visibility.as_ref().is_none_or(|v| post.visibility.is_some_and(|pv| v.contains(&pv)))
            && self.accounts.as_ref().is_none_or(|a| a.iter().any(|n| n.eq_ignore_ascii_case(&post.account)))
            && self.hashtags.as_ref().is_none_or(|h| h.iter().any(|t| post.tags.contains(&norm_tag(t))))
            && self.has_media.is_none_or(|m| m == post.has_media)
            && self.is_reply.is_none_or(|r| r == post.is_reply)
    }
}

impl Keep {
    /// Why the post is kept, if a keep condition holds.
    pub fn reason(&self, post: &PostFacts) -> Option<String> {
        if self.pinned && post.pinned {
            return Some("pinned".into());
        }
        if self.self_favourited && post.favourited {
            return Some("favourited by its author".into());
        }
        if self.self_bookmarked && post.bookmarked {
            return Some("bookmarked by its author".into());
        }
        if let Some(min) = self.min_favourites
            && post.favourites_count >= min
        {
            return Some(format!("{} favourites (keep at {min})", post.favourites_count));
        }
        if let Some(min) = self.min_boosts
            && post.reblogs_count >= min
        {
            return Some(format!("{} boosts (keep at {min})", post.reblogs_count));
        }
        self.hashtags.iter().map(|t| norm_tag(t)).find(|t| post.tags.contains(t)).map(|t| format!("tagged #{t}"))
    }
}

/// Every `[[expire]]` rule of the policy directory, in evaluation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    pub rules: Vec<Rule>,
    pub files: Vec<PathBuf>,
}

impl Policies {
    /// Reads `dir/*.toml` in name order. A missing directory means no rules.
    pub fn load_dir(dir: &Path) -> Result<Policies, PolicyError> {
        let read_err = |e: std::io::Error| PolicyError::Read { path: dir.to_owned(), message: e.to_string() };
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policies::default()),
            Err(e) => return Err(read_err(e)),
        };
        files.sort();
        let mut policies = Policies::default();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PolicyError::Read { path: path.clone(), message: e.to_string() })?;
            policies.add_file(&path, &text)?;
        }
        Ok(policies)
    }

    /// Parses one file's text and appends its rules.
    pub fn add_file(&mut self, path: &Path, text: &str) -> Result<(), PolicyError> {
        let parse_err = |message: String| PolicyError::Parse { path: path.to_owned(), message };
        let doc: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string().trim_end().to_owned()))?;
        for key in doc.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(parse_err(format!(
                    "unknown section `{key}`; a policy file has [[expire]], [[limit]] and [wave]"
                )));
            }
        }
        // `limit` and `wave` are the shield's: it parses and validates them itself.
        let Some(expire) = doc.get("expire") else {
            self.files.push(path.to_owned());
            return Ok(());
        };
        let entries = expire.as_array().ok_or_else(|| parse_err("`expire` must be [[expire]] tables".into()))?;
        for (i, entry) in entries.iter().enumerate() {
            let index = i + 1;
            let name = entry.get("name").and_then(|n| n.as_str()).unwrap_or("(unnamed)").to_owned();
            let rule_err =
                |message: String| PolicyError::Rule { path: path.to_owned(), rule: name.clone(), index, message };
            let raw: RawRule = entry.clone().try_into().map_err(|e: toml::de::Error| rule_err(describe(&e)))?;
            if raw.name.trim().is_empty() {
                return Err(rule_err("`name` is empty".into()));
            }
            if raw.after.get().as_secs() == 0 {
                return Err(rule_err("`after` must be at least 1s".into()));
            }
            if self.rules.iter().any(|r| r.name == raw.name) {
                return Err(rule_err("a rule with this name already exists; names must be unique".into()));
            }
            for (key, list) in
                [("match.hashtags", raw.matcher.hashtags.as_deref()), ("keep.hashtags", Some(&raw.keep.hashtags[..]))]
            {
                if list.unwrap_or_default().iter().any(|t| norm_tag(t).is_empty()) {
                    return Err(rule_err(format!("`{key}`: empty hashtag")));
                }
            }
            for (key, min) in
                [("keep.min_favourites", raw.keep.min_favourites), ("keep.min_boosts", raw.keep.min_boosts)]
            {
                if min == Some(0) {
                    return Err(rule_err(format!("`{key}` must be at least 1 (0 would keep everything)")));
                }
            }
            self.rules.push(Rule {
                name: raw.name,
                matcher: raw.matcher,
                after: raw.after,
                keep: raw.keep,
                file: path.to_owned(),
            });
        }
        self.files.push(path.to_owned());
        Ok(())
    }

    /// The first rule that matches, if any.
    pub fn evaluate(&self, post: &PostFacts) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.holds(post))
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// toml's message for a value-level error, without its trailing newline.
fn describe(e: &toml::de::Error) -> String {
    let msg = e.message().trim_end().to_owned();
    if msg.contains("unknown unit") || msg.contains("missing unit") || msg.contains("duration") {
        format!("`after`: {msg}")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<Policies, PolicyError> {
        let mut p = Policies::default();
        p.add_file(Path::new("policies/t.toml"), text)?;
        Ok(p)
    }

    fn post(visibility: Visibility) -> PostFacts {
        PostFacts { id: "1".into(), account: "alice".into(), visibility: Some(visibility), ..Default::default() }
    }

    #[test]
    fn design_example_parses_and_other_sections_pass_through() {
        let p = parse(
            r#"
[[expire]]
name  = "direct-messages"
match = { visibility = ["direct"] }
after = "7d"
keep  = { pinned = true, self_favourited = true, self_bookmarked = true, min_favourites = 10, hashtags = ["keep"] }

[[limit]]
name  = "inbox-per-domain"
route = "inbox"
key   = "remote-domain"
rate  = "300/min"
burst = 100

[wave]
window = "10m"
"#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].after.get().as_secs(), 7 * 86_400);
        assert_eq!(p.rules[0].keep.min_favourites, Some(10));
    }

    #[test]
    fn errors_name_file_rule_and_key() {
        let e =
            parse("[[expire]]\nname = \"dms\"\nmatch = { visiblity = [\"direct\"] }\nafter = \"7d\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("policies/t.toml") && s.contains("\"dms\"") && s.contains("visiblity"), "{s}");

        let s = parse("[[expire]]\nname = \"dms\"\nafter = \"7days\"\n").unwrap_err().to_string();
        assert!(s.contains("\"dms\"") && s.contains("after") && s.contains("unknown unit"), "{s}");

        let s = parse("[[expire]]\nname = \"x\"\nafter = \"7d\"\nkeep = { pined = true }\n").unwrap_err().to_string();
        assert!(s.contains("pined"), "{s}");

        let s = parse("[[expire]]\nname = \"x\"\naftr = \"7d\"\n").unwrap_err().to_string();
        assert!(s.contains("aftr"), "{s}");

        let s = parse("[[expire]]\nname = \"x\"\nafter = \"0s\"\n").unwrap_err().to_string();
        assert!(s.contains("at least 1s"), "{s}");

        let s = parse("[[expire]]\nname = \"x\"\nafter = \"1d\"\nmatch = { visibility = [\"secret\"] }\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("secret"), "{s}");

        let s = parse("[expiry]\nafter = \"1d\"\n").unwrap_err().to_string();
        assert!(s.contains("unknown section `expiry`"), "{s}");

        let s = parse("[[expire]]\nname = \"x\"\nafter = \"1d\"\n[[expire]]\nname = \"x\"\nafter = \"2d\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("unique") && s.contains("expire #2"), "{s}");

        let s = parse("[[expire]]\nname = \"x\"\nafter = \"1d\"\nkeep = { min_boosts = 0 }\n").unwrap_err().to_string();
        assert!(s.contains("keep.min_boosts"), "{s}");
    }

    #[test]
    fn first_match_wins() {
        let p = parse(
            r##"
[[expire]]
name = "dms"
match = { visibility = ["direct"] }
after = "7d"
[[expire]]
name = "tagged"
match = { hashtags = ["#Ephemeral"] }
after = "1h"
[[expire]]
name = "replies-with-media"
match = { is_reply = true, has_media = true, accounts = ["Alice"] }
after = "2d"
[[expire]]
name = "everything"
after = "90d"
"##,
        )
        .unwrap();
        assert_eq!(p.evaluate(&post(Visibility::Direct)).unwrap().name, "dms");
        let mut tagged = post(Visibility::Public);
        tagged.tags = vec!["ephemeral".into()];
        assert_eq!(p.evaluate(&tagged).unwrap().name, "tagged");
        let mut reply = post(Visibility::Unlisted);
        reply.is_reply = true;
        assert_eq!(p.evaluate(&reply).unwrap().name, "everything");
        reply.has_media = true;
        assert_eq!(p.evaluate(&reply).unwrap().name, "replies-with-media");
        reply.account = "bob".into();
        assert_eq!(p.evaluate(&reply).unwrap().name, "everything");
    }

    #[test]
    fn no_match_means_no_expiry() {
        let p = parse("[[expire]]\nname = \"dms\"\nmatch = { visibility = [\"direct\"] }\nafter = \"7d\"\n").unwrap();
        assert!(p.evaluate(&post(Visibility::Public)).is_none());
        assert!(p.evaluate(&PostFacts::default()).is_none(), "unknown visibility never matches a visibility rule");
    }

    #[test]
    fn keep_rules() {
        let keep = Keep {
            pinned: true,
            self_favourited: false,
            self_bookmarked: true,
            min_favourites: Some(3),
            min_boosts: Some(2),
            hashtags: vec!["#Keep".into()],
        };
        let mut p = post(Visibility::Public);
        assert_eq!(keep.reason(&p), None);
        p.favourited = true;
        assert_eq!(keep.reason(&p), None, "self_favourited is off");
        p.pinned = true;
        assert_eq!(keep.reason(&p).as_deref(), Some("pinned"));
        p.pinned = false;
        p.bookmarked = true;
        assert!(keep.reason(&p).unwrap().contains("bookmarked"));
        p.bookmarked = false;
        p.favourites_count = 2;
        assert_eq!(keep.reason(&p), None);
        p.favourites_count = 3;
        assert!(keep.reason(&p).unwrap().contains("favourites"));
        p.favourites_count = 0;
        p.reblogs_count = 2;
        assert!(keep.reason(&p).unwrap().contains("boosts"));
        p.reblogs_count = 0;
        p.tags = vec!["keep".into()];
        assert_eq!(keep.reason(&p).as_deref(), Some("tagged #keep"));
    }

    #[test]
    fn example_policies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let p = Policies::load_dir(&dir).unwrap();
        assert!(p.rules.iter().any(|r| r.name == "direct-messages"));
        let mut pinned = post(Visibility::Public);
        let rule = p.evaluate(&pinned).unwrap();
        assert_eq!(rule.after.get().as_secs(), 90 * 86_400);
        pinned.pinned = true;
        assert!(rule.keep.reason(&pinned).is_some());
        assert_eq!(p.evaluate(&post(Visibility::Direct)).unwrap().after.get().as_secs(), 7 * 86_400);
    }
}
