//! Listeners, TLS, the accept loop and graceful shutdown; and [`run`], which wires the
//! relay together from a [`Config`].
//!
//! The connection limits (at most `max_connections` at once, the first request and every
//! head within `header_read_timeout`, a minimum body rate, HTTP/2 streams and buffers,
//! no connection without progress for longer than `idle_timeout`) are in [`crate::conn`],
//! shared with the admin listener; the caps on what reaches the instance are in
//! [`crate::proxy::upstream`].

use std::{io, net::SocketAddr, path::Path, sync::Arc};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    accept::Acceptor,
    admin::Admin,
    config::Config,
    expiry::{
        Expiry, ExpiryAdmin, ExpiryError, ExpiryStage, PolicyReload, instance::Instance, scheduler::Scheduler,
        seal::Sealer, sweep::Sweeper,
    },
    metrics::Metrics,
    privacy::{ClientIpStage, Pseudonymizer, hygiene::ResponseHygiene, media::MediaStage},
    proxy::{Stage, pipeline::Pipeline, upstream::Upstream},
    store::EmbeddedStore,
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("TLS: cannot read {path}")]
    TlsRead { path: String, source: io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("admin token file {path}")]
    Token { path: String, source: io::Error },
    #[error("data dir {path}")]
    DataDir { path: String, source: io::Error },
    #[error("egress: {0}")]
    Egress(#[from] crate::egress::EgressError),
    #[error("expiry: {0}")]
    Expiry(#[from] crate::expiry::ExpiryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Shield(#[from] crate::shield::ShieldError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::node::JoinError),
}

/// Addresses actually bound (port 0 in config → the port the OS chose).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub egress: SocketAddr,
}

/// Starts every listener and background task, returns once they are accepting.
/// The returned handle resolves when shutdown has finished draining.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<(Bound, tokio::task::JoinHandle<()>), ServerError> {
    let data_dir = &config.file.data_dir;
    // The data dir is pavise's alone (0700); see `store::perms`.
    crate::store::perms::create_private_dir(data_dir)
        .map_err(|source| ServerError::DataDir { path: data_dir.display().to_string(), source })?;

    // Bind first: a port already in use fails the start before anything else runs.
    let listeners = Listeners::bind(&config).await?;
    let bound = listeners.bound()?;
    let tls = match (&config.file.public.tls_cert, &config.file.public.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };

    let metrics = Arc::new(Metrics::default());
    let token = crate::admin::load_or_create_token(&config.admin_token_file())
        .map_err(|source| ServerError::Token { path: config.admin_token_file().display().to_string(), source })?;
    let admin = Arc::new(Admin::new(token, metrics.clone(), &config));
    // Background work that must stop (between items) before the store closes.
    let tasks = TaskTracker::new();

    // The key that seals authors' tokens also unlocks the store's epoch keys: it must not
    // sit beside the data it opens (refused, but in development).
    let development = config.file.egress.mode == crate::config::EgressMode::Direct;
    match config.file.expiry.check_key_placement(data_dir, development) {
        Ok(None) => {}
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Err(why) => return Err(ExpiryError::Invalid(why).into()),
    }
    let sealer = Sealer::load_or_create(&config.file.expiry.key_file(data_dir)).map_err(ExpiryError::from)?;

    // One durable store for every feature: the expiry schedule, sealed credentials, the
    // shield's first-seen senders and quarantine. redb allows one open per file.
    let store: Arc<EmbeddedStore> = {
        let opts = crate::store::StoreOptions {
            cache_bytes: config.file.expiry.store_cache.0 as usize,
            forget_within: config.file.expiry.forget_within.get(),
        };
        let (dir, key) = (data_dir.clone(), sealer.store_key());
        Arc::new(
            tokio::task::spawn_blocking(move || EmbeddedStore::open_with(&dir, opts, Some(key)))
                .await
                .map_err(|e| crate::store::StoreError::Backend(e.to_string()))??,
        )
    };

    // `[cluster]`: PostgreSQL is the store (this node's redb file becomes its journal) and
    // Redis the shared counters; see `cluster`.
    let cluster = if config.file.cluster.enabled() {
        let node = crate::cluster::Node::join(&config.file.cluster, &sealer.store_key(), (*store).clone()).await?;
        admin.add_check(node.readiness());
        metrics.register(node.metrics());
        tasks.spawn(crate::cluster::journal::replay(node.store.clone(), shutdown.clone()));
        Some(node)
    } else {
        None
    };
    let durable: Arc<dyn crate::store::Store> = match &cluster {
        Some(node) => node.store.clone(),
        None => store.clone(),
    };

    let shield = if config.file.shield.enabled {
        let shield = crate::shield::Shield::new(&config, durable.clone(), None)?;
        if let Some(node) = &cluster {
            shield.share_through(node.shared.clone());
        }
        admin.add_handler(Arc::new(crate::shield::ShieldAdmin(shield.clone())));
        admin.add_check(Arc::new(crate::shield::ShieldReadiness(shield.clone())));
        admin.add_reload(shield.clone());
        metrics.register(shield.clone());
        tasks.spawn(shield.clone().run_housekeeping(shutdown.clone()));
        Some(shield)
    } else {
        None
    };

    let media =
        Arc::new(MediaStage::new(&config).map_err(|source| ServerError::DataDir {
            path: data_dir.join("media-tmp").display().to_string(),
            source,
        })?);
    metrics.register(media.metrics());

    let expiry = if config.file.expiry.enabled {
        let expiry =
            Arc::new(Expiry::new(durable.clone(), config.file.policies.clone(), sealer, config.file.expiry.clone())?);
        // Before the first request: every post hidden now is known to the index.
        let hidden = crate::expiry::index::rebuild(&expiry).await?;
        tracing::info!(hidden, "expiry: index of hidden posts built");
        let instance = Instance::new(config.upstream.authority.clone(), config.file.expiry.request_timeout.get());
        admin.add_handler(Arc::new(ExpiryAdmin::new(
            expiry.clone(),
            Some((instance.clone(), config.file.local_domain.clone())),
        )));
        admin.add_reload(Arc::new(PolicyReload(expiry.clone())));
        metrics.register(expiry.clone());
        tasks.spawn(Scheduler::new(expiry.clone(), instance.clone()).run(shutdown.clone()));
        tasks.spawn(crate::expiry::index::run_promoter(expiry.clone(), shutdown.clone()));
        let sweeper = config.file.expiry.sweep_archives.then(|| {
            let sweeper = Sweeper::new(expiry.clone(), instance.clone(), config.file.local_domain.clone());
            tasks.spawn(sweeper.clone().run(shutdown.clone()));
            sweeper
        });
        Some((expiry, instance, sweeper))
    } else {
        None
    };

    // The stage order, and why:
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    // First, so its response phase runs last and sees every response, synthetic ones too.
    stages.push(Arc::new(ResponseHygiene::new(&config.file.response_headers)));
    // Before any stage spends work on a body: limits and the wave shield decide first.
    if let Some(shield) = &shield {
        stages.push(Arc::new(crate::shield::ShieldStage(shield.clone())));
    }
    // Before anything could forward a header: the instance must never see a client address.
    stages.push(Arc::new(ClientIpStage::new(&config.file.client_ip)));
    // After the headers are clean and before anything is forwarded: every uploaded file is
    // scrubbed (or refused) before the instance sees a byte of the body.
    stages.push(media);
    // Last before the upstream: a hidden post is answered before the instance is asked,
    // `expires_in` is stripped just before the request leaves, and on the way back this
    // stage reads the instance's own Status JSON first.
    if let Some((expiry, instance, sweeper)) = &expiry {
        stages.push(Arc::new(ExpiryStage::new(expiry.clone(), instance.clone(), sweeper.clone())));
    }
    // Everything that creates files in the data dir has opened them: make them pavise's alone.
    let tightened = crate::store::perms::harden(data_dir)
        .map_err(|source| ServerError::DataDir { path: data_dir.display().to_string(), source })?;
    if tightened > 0 {
        tracing::info!(tightened, "data dir: permissions tightened to 0700 (dirs) and 0600 (files)");
    }

    let tunnels = TaskTracker::new();
    let tunnel_cut = CancellationToken::new();
    let upstream = Upstream::new(&config, metrics.clone(), tunnels.clone(), tunnel_cut.clone());
    let pseudonymizer = Arc::new(Pseudonymizer::new(&config.file.client_ip));
    if let Some(node) = &cluster {
        // The cluster's pseudonym key before the first request, then at every period.
        let rotate = config.file.client_ip.rotate.get();
        if let Ok((key, left)) = node.shared.pseudonym_key(rotate).await {
            pseudonymizer.install_shared_key(&key, left + std::time::Duration::from_millis(100));
        }
        tasks.spawn(crate::cluster::redis::sync_pseudonym_key(
            node.shared.clone(),
            pseudonymizer.clone(),
            rotate,
            shutdown.clone(),
        ));
    }
    let pipeline = Arc::new(Pipeline::new(&config, stages, upstream, pseudonymizer, metrics.clone()));
    // One budget of body memory (and of streams) for every public connection; the stages
    // charge it through the request context (`proxy::budget`).
    let budgets = crate::proxy::budget::Budgets::public(&config);
    metrics.register(Arc::new(crate::proxy::budget::BudgetsView(budgets.clone())));

    // Egress: the instance's own outbound federation, over Tor (bootstraps in the background).
    let egress = crate::egress::Egress::start(&config, shutdown.clone())?;
    admin.add_check(egress.readiness());
    metrics.register(egress.metrics_source());
    let egress_task = tokio::spawn(crate::egress::serve(
        egress,
        listeners.egress,
        listeners.socks,
        config.file.public.shutdown_grace.get(),
        shutdown.clone(),
    ));

    tracing::info!(
        public = %bound.public,
        tls = tls.is_some(),
        admin = %bound.admin,
        egress = %bound.egress,
        egress_mode = ?config.file.egress.mode,
        web = %config.upstream.authority,
        streaming = %config.streaming_upstream.authority,
        client_ip = ?config.file.client_ip.mode,
        stages = ?pipeline.stage_names(),
        "pavise is listening"
    );

    let limits = crate::conn::Limits::public(&config);
    let grace = limits.grace;
    let admin_listener = crate::conn::Listener {
        acceptor: Acceptor::new(listeners.admin, config.file.admin.max_connections, "admin"),
        tls: None,
        limits: crate::conn::Limits::admin(&config),
        metrics: None,
        upgrades: false,
        // Admin bodies are read by the admin API itself (1 MiB each, 64 connections).
        budgets: crate::proxy::budget::Budgets::unlimited(),
    };
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, admin, shutdown.clone()));
    let public = crate::conn::Listener {
        acceptor: Acceptor::new(listeners.public, config.file.public.max_connections, "public"),
        tls,
        limits,
        metrics: Some(metrics),
        upgrades: true,
        budgets,
    };
    let handle = tokio::spawn(async move {
        crate::conn::serve(public, shutdown, move |conn, req| {
            let pipeline = pipeline.clone();
            async move { pipeline.handle(conn, req).await }
        })
        .await;
        // Listener closed and every plain connection drained (or cut); now the tunnels.
        tunnels.close();
        if tokio::time::timeout(grace, tunnels.wait()).await.is_err() {
            tracing::warn!("websocket tunnels still open after the grace period; closing them");
            tunnel_cut.cancel();
            tunnels.wait().await;
        }
        let _ = admin_task.await;
        let _ = egress_task.await;
        // Background tasks stop between items; an unfinished claim lapses and is retried.
        tasks.close();
        let _ = tokio::time::timeout(grace, tasks.wait()).await;
        // The last store handle joins its writer thread: do that off the async workers.
        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    });
    Ok((bound, handle))
}

/// Every socket pavise listens on.
struct Listeners {
    public: TcpListener,
    admin: TcpListener,
    egress: TcpListener,
    socks: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
        }
        let f = &config.file;
        Ok(Listeners {
            public: bind(f.public.listen).await?,
            admin: bind(f.admin.listen).await?,
            egress: bind(f.egress.listen).await?,
            socks: match f.egress.socks_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }

    fn bound(&self) -> Result<Bound, ServerError> {
        let addr = |l: &TcpListener| {
            l.local_addr().map_err(|source| ServerError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
        };
        Ok(Bound { public: addr(&self.public)?, admin: addr(&self.admin)?, egress: addr(&self.egress)? })
    }
}

/// A rustls acceptor from PEM files, offering h2 and http/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerError> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|source| ServerError::TlsRead { path: p.display().to_string(), source });
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!("{}: no certificate in the file", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key in the file", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
