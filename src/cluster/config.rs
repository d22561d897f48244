//! The `[cluster]` section: where several pavise nodes keep what they share.
//!
//! Absent, nothing changes: the embedded redb store and in-process counters. Present, the
//! durable state goes to PostgreSQL and the shared counters (limits, waves, shields, the
//! pseudonym key) to Redis. The URLs may come from `PAVISE_POSTGRES` / `PAVISE_REDIS`
//! instead, so a password need not sit in the file (the environment wins over the file).

use serde::Deserialize;

/// `[cluster]`, as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `postgres://user[:password]@host[:port]/db` (or `host=/run/postgresql` style): the
    /// durable store shared by every node.
    pub postgres: Option<String>,
    /// `redis://host[:port][/db]`: the shared counters and the pseudonym key.
    pub redis: Option<String>,
    /// This node's name in claims and logs; defaults to the host name.
    pub node: Option<String>,
    /// Run even though Redis persists its data (RDB or AOF) to disk; see the README.
    pub allow_persistent_redis: bool,
    /// How long one decision may wait for Redis before this node decides alone.
    pub redis_budget: crate::units::Span,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            postgres: None,
            redis: None,
            node: None,
            allow_persistent_redis: false,
            redis_budget: crate::units::Span(std::time::Duration::from_millis(5)),
        }
    }
}

/// The environment variables that override the URLs.
pub const POSTGRES_ENV: &str = "PAVISE_POSTGRES";
pub const REDIS_ENV: &str = "PAVISE_REDIS";

impl ClusterConfig {
    /// Takes the URLs from the environment when set there.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(url) = get(POSTGRES_ENV).filter(|u| !u.is_empty()) {
            self.postgres = Some(url);
        }
        if let Some(url) = get(REDIS_ENV).filter(|u| !u.is_empty()) {
            self.redis = Some(url);
        }
    }

    /// A cluster needs both servers: half a cluster (shared schedule, private counters, or
    /// the reverse) would look like one and behave like two relays.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.postgres, &self.redis) {
            (Some(_), None) => {
                return Err((
                    "cluster.redis",
                    "cluster.postgres is set but cluster.redis is not (both are needed)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "cluster.postgres",
                    "cluster.redis is set but cluster.postgres is not (both are needed)".into(),
                ));
            }
            _ => {}
        }
        if let Some(url) = &self.postgres {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| ("cluster.postgres", format!("not a PostgreSQL URL or connection string: {e}")))?;
        }
        if let Some(url) = &self.redis {
            redis::Client::open(url.as_str()).map_err(|e| ("cluster.redis", format!("not a Redis URL: {e}")))?;
        }
        if let Some(node) = &self.node
            && (node.is_empty()
                || node.len() > 64
                || !node.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(("cluster.node", format!("{node:?}: 1 to 64 letters, digits, '-', '_' or '.'")));
        }
        let budget = self.redis_budget.get();
        if budget.is_zero() || budget > std::time::Duration::from_secs(1) {
            return Err(("cluster.redis_budget", "must be between 1ms and 1s".into()));
        }
        Ok(())
    }

    /// Whether the section asks for a cluster at all.
    pub fn enabled(&self) -> bool {
        self.postgres.is_some() && self.redis.is_some()
    }

    /// This node's name: the configured one, or the host name.
    pub fn node_name(&self) -> String {
        if let Some(node) = &self.node {
            return node.clone();
        }
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|n| n.trim().to_owned())
            .unwrap_or_default();
        if name.is_empty() { "pavise".into() } else { name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        let c: ClusterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(c)
    }

    #[test]
    fn both_servers_or_none() {
        assert!(!parse("").unwrap().enabled());
        let c = parse("postgres = \"postgres://pavise@db/pavise\"\nredis = \"redis://redis:6379/3\"").unwrap();
        assert!(c.enabled());
        assert!(parse("postgres = \"postgres://pavise@db/pavise\"").unwrap_err().starts_with("cluster.redis"));
        assert!(parse("redis = \"redis://r\"").unwrap_err().starts_with("cluster.postgres"));
        assert!(
            parse("redis = \"http://r\"\npostgres = \"postgres://db/p\"").unwrap_err().starts_with("cluster.redis")
        );
        assert!(parse("redis = \"redis://r\"\npostgres = \"postgres://db/p\"\nnode = \"a b\"").is_err());
        assert!(parse("redis = \"redis://r\"\npostgres = \"postgres://db/p\"\nredis_budget = \"0s\"").is_err());
        assert!(parse("postgress = \"x\"").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn the_environment_wins() {
        let mut c = parse("postgres = \"postgres://a@db/p\"\nredis = \"redis://r\"").unwrap();
        c.apply_env(|k| (k == POSTGRES_ENV).then(|| "postgres://b:secret@db/p".to_owned()));
        assert_eq!(c.postgres.as_deref(), Some("postgres://b:secret@db/p"));
        assert_eq!(c.redis.as_deref(), Some("redis://r"));
        let mut c = ClusterConfig::default();
        c.apply_env(|k| Some(format!("{}://x/1", if k == REDIS_ENV { "redis" } else { "postgres" })));
        assert!(c.enabled() && c.validate().is_ok());
    }
}
