//! Whom a request pavise itself makes to the instance is for.
//!
//! Mastodon's Rack::Attack safelists every request from `127.0.0.1`/`::1` that carries no
//! `X-Forwarded-For`: no throttle, no IP block applies to it. That is right for pavise's
//! own housekeeping (it paces itself on `X-RateLimit-*`), and wrong for a request a
//! client caused and whose number the client chooses: an attacker would get the
//! instance's work for free, past every limit the instance sets (issue 16, F4). So every
//! instance client says which kind each request is:
//!
//! - [`OnBehalfOf::Client`]: caused by one client's request — the instance sees that
//!   client's pseudonym in `X-Forwarded-For`, exactly as for the request itself, so its
//!   throttles count it;
//! - [`OnBehalfOf::Housekeeping`]: pavise's own work, bounded and paced by pavise (the
//!   expiry scheduler, archive sweeps, confirmations, quarantine replays) — from
//!   loopback with no `X-Forwarded-For`.

use std::{fmt::Write as _, net::IpAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBehalfOf {
    /// The pseudonym of the client whose request caused this one.
    Client(IpAddr),
    Housekeeping,
}

impl OnBehalfOf {
    /// Writes the forwarding headers the instance should see: exactly one
    /// `X-Forwarded-For` (the pseudonym) for a client, none for housekeeping.
    /// `X-Forwarded-Proto` is the caller's to set (instance clients say `https`, so a
    /// production instance does not redirect the plain loopback request).
    pub fn apply(self, headers: &mut HeaderMap) {
        let xff = HeaderName::from_static("x-forwarded-for");
        headers.remove("client-ip");
        match self {
            OnBehalfOf::Client(pseudonym) => {
                let mut text = String::with_capacity(40);
                let _ = write!(text, "{pseudonym}");
                if let Ok(v) = HeaderValue::from_str(&text) {
                    headers.insert(xff, v);
                }
            }
            OnBehalfOf::Housekeeping => {
                headers.remove(xff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_client_request_carries_its_pseudonym_and_housekeeping_none() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "127.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert("client-ip", "127.0.0.1".parse().unwrap());
        OnBehalfOf::Client("2001:db8::7".parse().unwrap()).apply(&mut h);
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["2001:db8::7"]);
        assert!(!h.contains_key("client-ip"));
        OnBehalfOf::Housekeeping.apply(&mut h);
        assert!(!h.contains_key("x-forwarded-for"));
    }
}
