//! Listeners, TLS, the accept loop and graceful shutdown, in mini-redis's shape:
//! [`Listeners::bind`] takes every socket (a port already in use fails the start before
//! anything else runs) and loads the TLS pair; [`run`] serves the public, admin and egress
//! listeners until `shutdown`, then drains them in order. What they serve is built by the
//! composition root ([`crate::app`]).
//!
//! Public connections are served on threads of their own, one single-threaded runtime
//! each ([`crate::workers`]); the rest runs on the main runtime.
//!
//! The connection limits (at most `max_connections` at once, the first request and every
//! head within `header_read_timeout`, a minimum body rate, HTTP/2 streams and buffers,
//! no connection without progress for longer than `idle_timeout`) are in [`crate::conn`],
//! shared with the admin listener; the caps on what reaches the instance are in
//! [`crate::proxy::upstream`].

use std::{io, net::SocketAddr, path::Path, sync::Arc};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    accept::Acceptor,
    admin::Admin,
    config::Config,
    conn,
    egress::Egress,
    metrics::Metrics,
    proxy::{contract::budget::Budgets, pipeline::Pipeline},
    workers::Workers,
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("TLS: cannot read {path}")]
    TlsRead { path: String, source: io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot start the serving threads (public.workers)")]
    Workers(#[source] io::Error),
}

/// Addresses actually bound (port 0 in config → the port the OS chose).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub egress: SocketAddr,
}

/// Every socket pavise listens on, and the rules each is served under.
pub(crate) struct Listeners {
    public: TcpListener,
    admin: TcpListener,
    egress: TcpListener,
    socks: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    /// `public.max_connections`, `admin.max_connections`.
    max_public: usize,
    max_admin: usize,
    /// `[public]`'s connection rules, which the admin listener shares.
    limits: conn::Limits,
    /// The threads that serve public connections (`public.workers`).
    workers: Arc<Workers>,
}

impl Listeners {
    /// Binds every listener, then reads the TLS pair (if any).
    pub(crate) async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
        }
        let f = &config.file;
        let public = bind(f.public.listen).await?;
        let admin = bind(f.admin.listen).await?;
        let egress = bind(f.egress.listen).await?;
        let socks = match f.egress.socks_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = match (&f.public.tls_cert, &f.public.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let workers = Arc::new(Workers::start(f.public.workers).map_err(ServerError::Workers)?);
        Ok(Listeners {
            public,
            admin,
            egress,
            socks,
            tls,
            max_public: f.public.max_connections,
            max_admin: f.admin.max_connections,
            limits: conn::Limits::public(&f.public),
            workers,
        })
    }

    pub(crate) fn bound(&self) -> Result<Bound, ServerError> {
        let addr = |l: &TcpListener| {
            l.local_addr().map_err(|source| ServerError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })
        };
        Ok(Bound { public: addr(&self.public)?, admin: addr(&self.admin)?, egress: addr(&self.egress)? })
    }

    /// Whether the public listener speaks TLS itself.
    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// What the listeners serve.
pub(crate) struct Services {
    /// The public listener's requests.
    pub pipeline: Arc<Pipeline>,
    pub admin: Arc<Admin>,
    /// The instance's own outbound federation.
    pub egress: Arc<Egress>,
    /// Counts the public listener's connections.
    pub metrics: Arc<Metrics>,
    /// The body memory (and streams) every public connection shares.
    pub budgets: Arc<Budgets>,
}

/// Serves every listener until `shutdown`; returns once all are closed and drained:
/// plain connections within the grace period (`public.shutdown_grace`), then the
/// WebSocket tunnels within it again (cut after), then the admin and egress listeners.
pub(crate) async fn run(listeners: Listeners, services: Services, shutdown: CancellationToken) {
    let Listeners { public, admin, egress, socks, tls, max_public, max_admin, limits, workers } = listeners;
    let grace = limits.grace;
    let egress_task = tokio::spawn(crate::egress::serve(services.egress, egress, socks, grace, shutdown.clone()));
    let admin_listener = conn::Listener {
        acceptor: Acceptor::new(admin, max_admin, "admin"),
        tls: None,
        limits,
        metrics: None,
        upgrades: false,
        // Admin bodies are read by the admin API itself (1 MiB each, 64 connections).
        budgets: Budgets::unlimited(),
        workers: None,
    };
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, services.admin, shutdown.clone()));
    let public = conn::Listener {
        acceptor: Acceptor::new(public, max_public, "public"),
        tls,
        limits,
        metrics: Some(services.metrics),
        upgrades: true,
        budgets: services.budgets,
        workers: Some(workers.clone()),
    };
    let pipeline = services.pipeline;
    let tunnels = pipeline.tunnels();
    conn::serve(public, shutdown, move |conn, req| {
        let pipeline = pipeline.clone();
        async move { pipeline.handle(conn, req).await }
    })
    .await;
    // Listener closed and every plain connection drained (or cut); now the tunnels.
    tunnels.drain(grace).await;
    let _ = admin_task.await;
    let _ = egress_task.await;
    // Last: the tunnels and the tasks requests started ran on these threads.
    drop(workers);
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
