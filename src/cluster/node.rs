//! One node joining the cluster: the shared store, the shared counters, and what
//! `/readyz` and `/metrics` say about both.

use std::{fmt::Write as _, sync::Arc, sync::atomic::Ordering};

use super::{
    ClusterConfig,
    journal::JournaledStore,
    redis::{ClusterError, Shared},
};
use crate::{
    admin::hooks::{self, ReadinessCheck},
    metrics::MetricsSource,
    proxy::contract::StageFuture,
    store::{EmbeddedStore, StoreError, StoreKey, postgres::PostgresStore},
};

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cluster: {0}")]
    Postgres(#[from] StoreError),
    #[error("cluster: {0}")]
    Redis(#[from] ClusterError),
}

/// The label of the keyed hashes every node must compute alike (limit keys, senders).
pub const HASH_LABEL: &[u8] = b"pavise cluster keyed hash v1";

/// A node's share of the cluster.
pub struct Node {
    pub name: String,
    pub store: Arc<JournaledStore>,
    pub shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Node {
    /// Connects to both servers (migrating the schema, checking Redis's persistence).
    /// `local`: the node's embedded store, from now on its journal.
    pub async fn join(cfg: &ClusterConfig, key: &StoreKey, local: EmbeddedStore) -> Result<Node, JoinError> {
        let name = cfg.node_name();
        let shared = Shared::connect(cfg, &key.derive_secret(HASH_LABEL)).await?;
        let pg = PostgresStore::connect(cfg.postgres.as_deref().unwrap_or_default(), key, &name).await?;
        let store = JournaledStore::new(pg, local).await;
        tracing::info!(
            node = %name,
            redis = %shared.url(),
            postgres = %crate::store::postgres::redacted(cfg.postgres.as_deref().unwrap_or_default()),
            journaled = store.journaled(),
            "cluster: joined"
        );
        Ok(Node { name, store, shared })
    }

    pub fn readiness(&self) -> Arc<dyn ReadinessCheck> {
        Arc::new(Readiness { store: self.store.clone(), shared: self.shared.clone() })
    }

    pub fn metrics(&self) -> Arc<dyn MetricsSource> {
        Arc::new(Readiness { store: self.store.clone(), shared: self.shared.clone() })
    }
}

/// `/readyz`'s `cluster` line and the `pavise_cluster_*` metrics.
struct Readiness {
    store: Arc<JournaledStore>,
    shared: Arc<Shared>,
}

impl ReadinessCheck for Readiness {
    fn name(&self) -> &'static str {
        "cluster"
    }

    /// Ready but *degraded* while either server is down: the node keeps serving (posts
    /// journaled, limits and waves per node), so a load balancer should keep sending it
    /// requests; the detail says what is degraded, for the operator.
    fn check(&self) -> StageFuture<'_, hooks::Readiness> {
        Box::pin(async move {
            let mut degraded = Vec::new();
            if let Err(e) = self.shared.ping().await {
                degraded.push(format!("redis: {e}; limits and waves are per node"));
            } else if self.shared.health.degraded() {
                degraded.push("redis: recent decisions over budget; limits and waves are per node".into());
            }
            let journaled = self.store.journaled();
            if let Err(e) = self.store.pg.ping().await {
                degraded.push(format!("postgresql: {e}; {journaled} post(s) journaled locally, deletions wait"));
            } else if journaled > 0 {
                degraded.push(format!("postgresql: {journaled} journaled post(s) being replayed"));
            }
            if degraded.is_empty() {
                hooks::Readiness::Ready("postgresql and redis answer".into())
            } else {
                hooks::Readiness::Degraded(degraded.join("; "))
            }
        })
    }
}

impl MetricsSource for Readiness {
    fn render(&self, out: &mut String) {
        let h = &self.shared.health;
        let _ = writeln!(out, "# HELP pavise_cluster_redis_degraded 1 while this node decides limits and waves alone.");
        let _ = writeln!(out, "# TYPE pavise_cluster_redis_degraded gauge");
        let _ = writeln!(out, "pavise_cluster_redis_degraded {}", u8::from(h.degraded()));
        let _ = writeln!(out, "# HELP pavise_cluster_decisions_total Limit and wave decisions, shared or alone.");
        let _ = writeln!(out, "# TYPE pavise_cluster_decisions_total counter");
        let _ = writeln!(out, "pavise_cluster_decisions_total{{via=\"redis\"}} {}", h.shared.load(Ordering::Relaxed));
        let _ =
            writeln!(out, "pavise_cluster_decisions_total{{via=\"local\"}} {}", h.fallbacks.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP pavise_cluster_postgres_down 1 while PostgreSQL fails writes.");
        let _ = writeln!(out, "# TYPE pavise_cluster_postgres_down gauge");
        let _ = writeln!(out, "pavise_cluster_postgres_down {}", u8::from(self.store.postgres_down()));
        let _ = writeln!(out, "# HELP pavise_cluster_journaled Posts journaled locally, waiting for PostgreSQL.");
        let _ = writeln!(out, "# TYPE pavise_cluster_journaled gauge");
        let _ = writeln!(out, "pavise_cluster_journaled {}", self.store.journaled());
        let _ = writeln!(out, "# TYPE pavise_cluster_replayed_total counter");
        let _ = writeln!(out, "pavise_cluster_replayed_total {}", self.store.replayed.load(Ordering::Relaxed));
    }
}
