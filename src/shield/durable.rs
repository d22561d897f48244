//! What the shield must remember across restarts, behind one small interface.
//!
//! Two things: when each remote actor was first seen (familiarity is measured in days,
//! so it must outlive a restart) and the quarantine of held deliveries with its audit
//! trail (a held delivery is mail the sender considers delivered: losing it on a restart
//! would be a silent drop). The project's `Store` implements this; [`MemoryDurable`] is
//! for tests and for `shield.enabled` setups without a data dir.

use std::{collections::BTreeMap, sync::Mutex};

use serde::{Deserialize, Serialize};

use super::ShieldError;

/// A delivery accepted with 202 and kept, exactly as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDelivery {
    pub id: u64,
    /// Unix seconds when pavise accepted it.
    pub received: u64,
    /// Unix seconds of its `Date` header (the signature window starts there).
    pub date: Option<u64>,
    pub method: String,
    pub path_and_query: String,
    /// Header names and raw values, in arrival order, client-IP headers already removed
    /// and `X-Forwarded-For` set to the sender's pseudonym.
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    pub domain: String,
    pub targets: Vec<String>,
    /// `held` (waiting for the wave to pass) or `kept` (past the window: the admin decides).
    pub state: HeldState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldState {
    Held,
    Kept,
}

/// One line of the quarantine's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: u64,
    pub id: u64,
    pub domain: String,
    pub action: String,
    pub detail: String,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// The shield's durable state.
pub trait ShieldDurable: Send + Sync {
    /// First-seen times (unix seconds) of these actors, where known.
    fn first_seen(&self, actors: &[&str]) -> Result<Vec<Option<u64>>, ShieldError>;
    /// Records first-seen times; an existing (older) record wins.
    fn record_first_seen(&self, seen: &[(String, u64)]) -> Result<(), ShieldError>;
    fn put_held(&self, held: &HeldDelivery) -> Result<(), ShieldError>;
    fn remove_held(&self, id: u64) -> Result<Option<HeldDelivery>, ShieldError>;
    fn list_held(&self) -> Result<Vec<HeldDelivery>, ShieldError>;
    fn audit(&self, record: &AuditRecord) -> Result<(), ShieldError>;
    /// The newest `limit` audit records, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, ShieldError>;
}

/// In-memory [`ShieldDurable`]: nothing survives a restart.
#[derive(Default)]
pub struct MemoryDurable {
    first_seen: Mutex<std::collections::HashMap<String, u64>>,
    held: Mutex<BTreeMap<u64, HeldDelivery>>,
    audit: Mutex<Vec<AuditRecord>>,
}

impl ShieldDurable for MemoryDurable {
    fn first_seen(&self, actors: &[&str]) -> Result<Vec<Option<u64>>, ShieldError> {
        let map = self.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        Ok(actors.iter().map(|a| map.get(*a).copied()).collect())
    }

    fn record_first_seen(&self, seen: &[(String, u64)]) -> Result<(), ShieldError> {
        let mut map = self.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (actor, at) in seen {
            let e = map.entry(actor.clone()).or_insert(*at);
            *e = (*e).min(*at);
        }
        Ok(())
    }

    fn put_held(&self, held: &HeldDelivery) -> Result<(), ShieldError> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(held.id, held.clone());
        Ok(())
    }

    fn remove_held(&self, id: u64) -> Result<Option<HeldDelivery>, ShieldError> {
        Ok(self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&id))
    }

    fn list_held(&self) -> Result<Vec<HeldDelivery>, ShieldError> {
        Ok(self.held.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect())
    }

    fn audit(&self, record: &AuditRecord) -> Result<(), ShieldError> {
        self.audit.lock().unwrap_or_else(|e| e.into_inner()).push(record.clone());
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, ShieldError> {
        let log = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        Ok(log.iter().rev().take(limit).cloned().collect())
    }
}
