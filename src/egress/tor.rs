//! The Tor connector: one arti [`TorClient`] for the process, bootstrapped in the
//! background, failing closed.
//!
//! Fail closed means: until arti has bootstrapped, every request is answered 503 and
//! no connection is attempted; when arti cannot open a stream, the answer is 502 with
//! arti's reason. There is no fallback to a direct connection anywhere in this file —
//! that is what `direct` mode is for, and it must be chosen explicitly.
//!
//! arti's state and directory cache live in `<data_dir>/arti/{state,cache}` so a restart
//! bootstraps from a warm cache in a fraction of a second. `egress.tor.arti_config` is
//! arti's own TOML (`[tor_network]`, `[path_rules]`, ...) layered over these defaults:
//! that is how tests (scripts/tornet) and private deployments point arti elsewhere.
//!
//! Isolation: in `per-host` mode each destination host gets its own [`IsolationToken`],
//! so streams to different remote instances never share a circuit and an exit cannot
//! link the instance's traffic to different peers.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arti_client::{
    BootstrapBehavior, DataStream, ErrorKind, HasKind, IsolationToken, StreamPrefs, TorClient, TorClientConfig,
    config::{BoolOrAuto, TorClientConfigBuilder},
};
use tokio_util::sync::CancellationToken;
use tor_rtcompat::PreferredRuntime;

use super::{EgressError, TorFailure, policy::Destination};
use crate::config::{Isolation, TorConfig};

/// How long one stream may take to open (circuit + BEGIN), beyond which the client
/// gets a 502 instead of hanging. arti would keep retrying circuits for up to 60 s when
/// every relay is gone; Mastodon's own request timeouts are shorter than either, and
/// it retries deliveries for days, so an early 502 loses nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-host isolation tokens kept for this many hosts; the least recently used go first.
const MAX_ISOLATED_HOSTS: u64 = 100_000;

/// Where arti stands, as `/readyz` and the request path see it.
#[derive(Debug, Clone)]
pub enum BootState {
    Bootstrapping {
        since: Instant,
    },
    /// Bootstrap took longer than `egress.tor.bootstrap_timeout`; still trying.
    Late {
        since: Instant,
        waited: Duration,
    },
    Ready {
        took: Duration,
    },
    Failed {
        reason: String,
    },
}

pub struct TorConnector {
    client: Arc<TorClient<PreferredRuntime>>,
    state: Mutex<BootState>,
    isolation: Isolation,
    per_host: moka::sync::Cache<String, IsolationToken>,
}

impl std::fmt::Debug for TorConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorConnector").field("isolation", &self.isolation).finish_non_exhaustive()
    }
}

/// arti's configuration: pavise's defaults (storage in the data dir), then the admin's
/// `arti_config` TOML merged over them, key by key.
pub fn arti_config(data_dir: &Path, extra: Option<&Path>) -> Result<TorClientConfig, EgressError> {
    let base = std::path::absolute(data_dir.join("arti"))
        .map_err(|e| EgressError::Config(format!("data dir {}: {e}", data_dir.display())))?;
    let mut table = toml::Table::new();
    let mut storage = toml::Table::new();
    storage.insert("state_dir".into(), literal_path(base.join("state")));
    storage.insert("cache_dir".into(), literal_path(base.join("cache")));
    table.insert("storage".into(), toml::Value::Table(storage));
    if let Some(path) = extra {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EgressError::Config(format!("egress.tor.arti_config {}: {e}", path.display())))?;
        let user: toml::Table = toml::from_str(&text)
            .map_err(|e| EgressError::Config(format!("egress.tor.arti_config {}: {e}", path.display())))?;
        // arti's builders ignore unknown keys; a misspelt section would silently do
        // nothing. Sections of the arti CLI's own config ([proxy], [logging], ...) are
        // not errors either, so only warn.
        for key in user.keys().filter(|k| !ARTI_CLIENT_SECTIONS.contains(&k.as_str())) {
            tracing::warn!(file = %path.display(), section = %key, "arti_config: section not used by arti's client library; ignored");
        }
        merge(&mut table, user);
    }
    let builder: TorClientConfigBuilder =
        toml::Value::Table(table).try_into().map_err(|e| EgressError::Config(format!("arti configuration: {e}")))?;
    builder.build().map_err(|e| EgressError::Config(format!("arti configuration: {e}")))
}

/// The top-level sections of arti-client's `TorClientConfig`.
const ARTI_CLIENT_SECTIONS: &[&str] = &[
    "tor_network",
    "storage",
    "download_schedule",
    "directory_tolerance",
    "override_net_params",
    "bridges",
    "channel",
    "system",
    "path_rules",
    "preemptive_circuits",
    "circuit_timing",
    "address_filter",
    "stream_timeouts",
    "vanguards",
];

fn literal_path(p: PathBuf) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("literal".into(), toml::Value::String(p.to_string_lossy().into_owned()));
    toml::Value::Table(t)
}

/// Tables merge recursively; any other value in `over` replaces the one in `base`.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

impl TorConnector {
    /// Creates the (unbootstrapped) client. Must run inside the tokio runtime.
    /// `data_dir` holds arti's state.
    pub fn new(tor: &TorConfig, data_dir: &Path) -> Result<TorConnector, EgressError> {
        let cfg = arti_config(data_dir, tor.arti_config.as_deref())?;
        let client = TorClient::builder()
            .config(cfg)
            // Only our own bootstrap task may bootstrap: a request before it finishes must
            // get a 503, not silently wait on (or trigger) a bootstrap of its own.
            .bootstrap_behavior(BootstrapBehavior::Manual)
            .create_unbootstrapped()
            .map_err(|e| EgressError::Config(format!("arti: {e}")))?;
        Ok(TorConnector {
            client,
            state: Mutex::new(BootState::Bootstrapping { since: Instant::now() }),
            isolation: tor.isolation,
            per_host: moka::sync::Cache::builder()
                .max_capacity(MAX_ISOLATED_HOSTS)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        })
    }

    pub fn state(&self) -> BootState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_state(&self, s: BootState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// How many destination hosts currently hold their own isolation token.
    pub fn isolation_groups(&self) -> u64 {
        self.per_host.run_pending_tasks();
        self.per_host.entry_count()
    }

    /// arti's report that it is stuck (no channel to any relay, a stale directory), if
    /// it is: after bootstrap this is how a Tor outage shows in `/readyz`.
    pub fn blockage(&self) -> Option<String> {
        self.client.bootstrap_status().blocked().map(|b| b.message().to_string())
    }

    /// arti's own one-line view of its progress (percent, blockage).
    pub fn progress(&self) -> String {
        self.client.bootstrap_status().to_string()
    }

    /// Bootstraps in the background. After `timeout` the state says so (and `/readyz`
    /// fails), but arti keeps trying; a failed attempt is retried with back-off.
    pub fn start_bootstrap(self: &Arc<Self>, timeout: Duration, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut backoff = Duration::from_secs(2);
            loop {
                let attempt = this.client.bootstrap();
                tokio::pin!(attempt);
                let late = tokio::time::sleep_until((started + timeout).into());
                tokio::pin!(late);
                let mut reported_late = started.elapsed() >= timeout;
                let result = loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = &mut attempt => break r,
                        _ = &mut late, if !reported_late => {
                            reported_late = true;
                            tracing::warn!(waited = ?timeout, progress = %this.progress(), "Tor bootstrap is taking longer than egress.tor.bootstrap_timeout; egress answers 503 until it finishes");
                            this.set_state(BootState::Late { since: started, waited: timeout });
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        let took = started.elapsed();
                        tracing::info!(?took, "Tor bootstrapped; egress is open");
                        this.set_state(BootState::Ready { took });
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "Tor bootstrap failed");
                        this.set_state(BootState::Failed { reason: e.to_string() });
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }

    fn prefs(&self, dest: &Destination) -> StreamPrefs {
        let mut prefs = StreamPrefs::new();
        if dest.host.is_onion() {
            prefs.connect_to_onion_services(BoolOrAuto::Explicit(true));
        }
        match self.isolation {
            Isolation::PerHost => {
                let token = self.per_host.get_with(dest.host.connect_str(), IsolationToken::new);
                prefs.set_isolation(token);
            }
            Isolation::PerRequest => {
                prefs.isolate_every_stream();
            }
            Isolation::None => {}
        }
        prefs
    }

    /// Opens a stream through Tor, or says why not. Never touches the destination
    /// itself: the exit (or the onion service) does.
    pub async fn connect(&self, dest: &Destination) -> Result<DataStream, EgressError> {
        match self.state() {
            BootState::Ready { .. } => {}
            BootState::Bootstrapping { .. } | BootState::Late { .. } => {
                return Err(EgressError::NotBootstrapped(format!("Tor is still bootstrapping ({})", self.progress())));
            }
            BootState::Failed { reason } => {
                return Err(EgressError::NotBootstrapped(format!("Tor bootstrap failed: {reason}")));
            }
        }
        let prefs = self.prefs(dest);
        let host = dest.host.connect_str();
        match tokio::time::timeout(CONNECT_TIMEOUT, self.client.connect_with_prefs((host.as_str(), dest.port), &prefs))
            .await
        {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(EgressError::Tor { failure: classify(e.kind()), detail: e.to_string() }),
            Err(_) => Err(EgressError::Tor {
                failure: TorFailure::Timeout,
                detail: format!("no stream within {}s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }
}

fn classify(kind: ErrorKind) -> TorFailure {
    match kind {
        ErrorKind::RemoteConnectionRefused => TorFailure::Refused,
        ErrorKind::RemoteNetworkTimeout | ErrorKind::TorNetworkTimeout => TorFailure::Timeout,
        ErrorKind::RemoteHostNotFound | ErrorKind::RemoteHostResolutionFailed => TorFailure::NotFound,
        ErrorKind::ExitPolicyRejected | ErrorKind::ForbiddenStreamTarget => TorFailure::Rejected,
        ErrorKind::OnionServiceNotFound
        | ErrorKind::OnionServiceNotRunning
        | ErrorKind::OnionServiceConnectionFailed
        | ErrorKind::OnionServiceMissingClientAuth
        | ErrorKind::OnionServiceProtocolViolation
        | ErrorKind::OnionServiceAddressInvalid
        | ErrorKind::OnionServiceWrongClientAuth => TorFailure::Onion,
        _ => TorFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn storage_defaults_into_the_data_dir_and_user_toml_layers_over() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("arti.toml");
        std::fs::write(
            &extra,
            "[path_rules]\nipv4_subnet_family_prefix = 33\n[address_filter]\nallow_local_addrs = true\n",
        )
        .unwrap();
        let cfg = arti_config(dir.path(), Some(&extra)).unwrap();
        let debug = format!("{cfg:?}");
        assert!(debug.contains(&dir.path().join("arti").join("state").display().to_string()), "{debug}");
        assert!(debug.contains("ipv4_subnet_family_prefix: 33"), "{debug}");
    }

    #[test]
    fn bad_arti_toml_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("arti.toml");
        std::fs::write(&extra, "[path_rules\n").unwrap();
        let e = arti_config(dir.path(), Some(&extra)).unwrap_err().to_string();
        assert!(e.contains("arti.toml"), "{e}");
    }

    #[test]
    fn merge_is_recursive() {
        let mut base: toml::Table = toml::from_str("[a]\nx = 1\ny = 2\n").unwrap();
        merge(&mut base, toml::from_str("[a]\ny = 3\n[b]\nz = 4\n").unwrap());
        assert_eq!(
            base.to_string(),
            toml::Table::from_iter(toml::from_str::<toml::Table>("[a]\nx = 1\ny = 3\n[b]\nz = 4\n").unwrap())
                .to_string()
        );
    }
}
