//! The posts the instance has from each sender, as far as pavise saw it take them: a
//! verified `Create` (or `Update`) of a post that pavise reads as one the instance takes
//! (`Create#related_to_local_activity?`: never the 202 alone, which Mastodon answers to any
//! signed delivery), forwarded and answered 2xx; forgotten on its `Delete`.
//!
//! Why: Mastodon treats an `Update` of a post it has as an edit, and notifies every
//! mention the edit adds whoever the post addresses; an `Update` of a post it never had
//! it reads as a `Create`, under the `Create` rules (a tag-only mention from a stranger is
//! rejected; a post published long ago is never distributed). Telling the two apart needs
//! a memory of what the instance took. Keys are hashed (sender, post id) under the
//! shield's keyed hasher: the table names no actor and no post. It is per node and in
//! memory: after a restart an edit of an older post reads as a `Create` (README says so).

use std::time::Duration;

use super::{limiter::KeyHasher, ns};

/// How many posts are remembered, and for how long.
const CAPACITY: u64 = 100_000;
const KEPT_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone)]
pub(super) struct SeenPosts {
    taken: moka::sync::Cache<u64, ()>,
    hasher: KeyHasher,
}

impl SeenPosts {
    pub(super) fn new(hasher: KeyHasher) -> SeenPosts {
        SeenPosts { taken: moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(KEPT_FOR).build(), hasher }
    }

    pub(super) fn key(&self, sender: &str, id: &str) -> u64 {
        // Exactly as Mastodon matches a status's `uri`.
        self.hasher.hash(ns::POST, (sender, id))
    }

    /// The instance took this post from `sender`.
    pub(super) fn taken(&self, key: u64) {
        self.taken.insert(key, ());
    }

    /// The instance no longer has it (deleted: a tombstone stays, and an `Update` of it is
    /// refused).
    pub(super) fn forget(&self, key: u64) {
        self.taken.invalidate(&key);
    }

    /// Whether the instance has this post from `sender` (as far as pavise saw).
    pub(super) fn has(&self, sender: &str, id: &str) -> bool {
        self.taken.contains_key(&self.key(sender, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_known_by_its_sender_and_id_only() {
        let posts = SeenPosts::new(KeyHasher::default());
        posts.taken(posts.key("https://r.example/users/a", "https://r.example/notes/1"));
        assert!(posts.has("https://r.example/users/a", "https://r.example/notes/1"));
        assert!(!posts.has("https://r.example/users/b", "https://r.example/notes/1"));
        assert!(!posts.has("https://r.example/users/a", "https://r.example/notes/2"));
    }
}
