//! The composition root: the one place that knows every part of pavise and wires them.
//!
//! [`start`] binds the listeners ([`server::Listeners::bind`]), builds the [`App`] and
//! hands what it serves to [`server::run`]. [`App::build`] opens the store, builds each
//! feature from its own config section, writes the stage order (with the reason for
//! each place), and plugs each feature's admin endpoint, readiness check, reload hook
//! and metrics into the admin listener. Nothing else in the crate reads the whole
//! [`Config`] to build something: a feature gets its section and the few facts it needs.
//!
//! Dependencies point one way: `app` → `server` → `proxy` (the pipeline) → the stage
//! modules (`shield`, `privacy`, `expiry`) → the stage contract (`proxy::contract`),
//! `store`, their own config sections.

use std::{io, sync::Arc};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin::{Admin, UpstreamCheck},
    config::{ClientIpMode, Config},
    expiry::{
        Expiry, ExpiryAdmin, ExpiryError, ExpiryStage, PolicyReload, instance::Instance, scheduler::Scheduler,
        seal::Sealer, sweep::Sweeper,
    },
    instance::InstanceClient,
    metrics::Metrics,
    privacy::{ClientIpStage, Pseudonymizer, hygiene::ResponseHygiene, media::MediaStage},
    proxy::{
        contract::{
            RequestCtx, Stage,
            budget::{BudgetLimits, Budgets},
        },
        pipeline::{BodyLimits, Pipeline, PipelineConfig},
        upstream::{TunnelFilter, TunnelIo, Upstream},
    },
    server::{self, Bound, Listeners, ServerError, Services},
    shield::{Shield, ShieldAdmin, ShieldReadiness, ShieldStage},
    store::EmbeddedStore,
};

/// Why pavise could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Server(#[from] ServerError),
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

/// Starts every listener and background task, returns once they are accepting.
/// The returned handle resolves when shutdown has finished draining.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<(Bound, tokio::task::JoinHandle<()>), AppError> {
    let data_dir = &config.file.data_dir;
    // The data dir is pavise's alone (0700); see `store::perms`.
    crate::store::perms::create_private_dir(data_dir)
        .map_err(|source| AppError::DataDir { path: data_dir.display().to_string(), source })?;
    // Bind first: a port already in use fails the start before anything else runs.
    let listeners = Listeners::bind(&config).await?;
    let bound = listeners.bound()?;
    let app = App::build(&config, &shutdown).await?;

    tracing::info!(
        public = %bound.public,
        tls = listeners.tls(),
        admin = %bound.admin,
        egress = %bound.egress,
        egress_mode = ?config.file.egress.mode,
        web = %config.upstream.authority,
        streaming = %config.streaming_upstream.authority,
        client_ip = ?config.file.client_ip.mode,
        stages = ?app.services.pipeline.stage_names(),
        "pavise is listening"
    );

    let grace = config.file.public.shutdown_grace.get();
    let handle = tokio::spawn(async move {
        let App { services, tasks, store } = app;
        server::run(listeners, services, shutdown).await;
        // Background tasks stop between items; an unfinished claim lapses and is retried.
        tasks.close();
        let _ = tokio::time::timeout(grace, tasks.wait()).await;
        // The last store handle joins its writer thread: do that off the async workers.
        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    });
    Ok((bound, handle))
}

/// The relay, wired: what the listeners serve, and what must stop before the store closes.
pub struct App {
    pub(crate) services: Services,
    /// Background work (housekeeping, the scheduler, sweeps) that stops, between items,
    /// before the store closes.
    tasks: TaskTracker,
    /// One durable store for every feature.
    store: Arc<EmbeddedStore>,
}

impl App {
    /// Builds every part from `config`; background tasks run until `shutdown`.
    pub async fn build(config: &Config, shutdown: &CancellationToken) -> Result<App, AppError> {
        let f = &config.file;
        let data_dir = &f.data_dir;
        let metrics = Arc::new(Metrics::default());
        let token = crate::admin::load_or_create_token(&config.admin_token_file())
            .map_err(|source| AppError::Token { path: config.admin_token_file().display().to_string(), source })?;
        let admin = Arc::new(Admin::new(token, metrics.clone()));
        // Pavise's own requests to the instance (the shield's reads and replays, the
        // readiness check) share one client; the pipeline's upstream has its own pool.
        let instance = InstanceClient::new(config.upstream.authority.clone());
        admin.add_check(Arc::new(UpstreamCheck::new(instance.clone())));
        let tasks = TaskTracker::new();

        // The key that seals authors' tokens also unlocks the store's epoch keys: it must not
        // sit beside the data it opens (refused, but in development).
        let development = f.egress.mode == crate::config::EgressMode::Direct;
        match f.expiry.check_key_placement(data_dir, development) {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!("{warning}"),
            Err(why) => return Err(ExpiryError::Invalid(why).into()),
        }
        let key_file = f.expiry.key_file(data_dir);
        let sealer = Sealer::load_or_create(&key_file).map_err(ExpiryError::from)?;

        // One durable store for every feature: the expiry schedule, sealed credentials, the
        // shield's first-seen senders and quarantine. redb allows one open per file.
        let store: Arc<EmbeddedStore> = {
            let opts = crate::store::StoreOptions {
                cache_bytes: f.expiry.store_cache.0 as usize,
                forget_within: f.expiry.forget_within.get(),
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
        let cluster = if f.cluster.enabled() {
            let node = crate::cluster::Node::join(&f.cluster, &sealer.store_key(), (*store).clone()).await?;
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

        let shield = if f.shield.enabled {
            // The quarantine seals what it holds with the same key.
            let sealer =
                Sealer::load_or_create(&key_file).map_err(|e| crate::shield::ShieldError::Seal(e.to_string()))?;
            let shield = Shield::new(config.shield_setup(), durable.clone(), Arc::new(sealer), instance.clone(), None)?;
            if let Some(node) = &cluster {
                shield.share_through(node.shared.clone());
            }
            admin.add_handler(Arc::new(ShieldAdmin(shield.clone())));
            admin.add_check(Arc::new(ShieldReadiness(shield.clone())));
            admin.add_reload(shield.clone());
            metrics.register(shield.clone());
            tasks.spawn(shield.clone().run_housekeeping(shutdown.clone()));
            Some(shield)
        } else {
            None
        };

        let per_client = f.client_ip.mode != ClientIpMode::Drop;
        let media =
            Arc::new(MediaStage::new(f.media.clone(), data_dir, per_client).map_err(|source| AppError::DataDir {
                path: data_dir.join("media-tmp").display().to_string(),
                source,
            })?);
        metrics.register(media.metrics());

        let expiry = if f.expiry.enabled {
            let expiry = Arc::new(Expiry::new(durable.clone(), f.policies.clone(), sealer, f.expiry.clone())?);
            // Before the first request: every post hidden now is known to the index.
            let hidden = crate::expiry::index::rebuild(&expiry).await?;
            tracing::info!(hidden, "expiry: index of hidden posts built");
            let instance = Instance::new(config.upstream.authority.clone(), f.expiry.request_timeout.get());
            admin.add_handler(Arc::new(ExpiryAdmin::new(
                expiry.clone(),
                Some((instance.clone(), f.local_domain.clone())),
            )));
            admin.add_reload(Arc::new(PolicyReload(expiry.clone())));
            metrics.register(expiry.clone());
            tasks.spawn(Scheduler::new(expiry.clone(), instance.clone()).run(shutdown.clone()));
            tasks.spawn(crate::expiry::index::run_promoter(expiry.clone(), shutdown.clone()));
            let sweeper = f.expiry.sweep_archives.then(|| {
                let sweeper = Sweeper::new(expiry.clone(), instance.clone(), f.local_domain.clone());
                tasks.spawn(sweeper.clone().run(shutdown.clone()));
                sweeper
            });
            Some((expiry, instance, sweeper))
        } else {
            None
        };

        // The stage order, and why:
        let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
        // First, so its response phase runs last and sees every response, synthetic ones
        // and the answers of failed stages too.
        stages.push(Arc::new(ResponseHygiene::new(&f.response_headers)));
        // Before any stage spends work on a body: limits and the wave shield decide first.
        if let Some(shield) = &shield {
            stages.push(Arc::new(ShieldStage(shield.clone())));
        }
        // Before anything could forward a header: the instance must never see a client address.
        stages.push(Arc::new(ClientIpStage::new(&f.client_ip)));
        // After the headers are clean and before anything is forwarded: every uploaded file
        // is scrubbed (or refused) before the instance sees a byte of the body.
        stages.push(media);
        // Last before the upstream: a hidden post is answered before the instance is asked,
        // `expires_in` is stripped just before the request leaves, and on the way back this
        // stage reads the instance's own Status JSON first.
        if let Some((expiry, instance, sweeper)) = &expiry {
            stages.push(Arc::new(ExpiryStage::new(expiry.clone(), instance.clone(), sweeper.clone())));
        }

        // Everything that creates files in the data dir has opened them: make them pavise's alone.
        let tightened = crate::store::perms::harden(data_dir)
            .map_err(|source| AppError::DataDir { path: data_dir.display().to_string(), source })?;
        if tightened > 0 {
            tracing::info!(tightened, "data dir: permissions tightened to 0700 (dirs) and 0600 (files)");
        }

        let mut upstream = Upstream::new(
            &f.upstream,
            &f.public,
            config.upstream.authority.clone(),
            config.streaming_upstream.authority.clone(),
            metrics.clone(),
        );
        if expiry.is_some() {
            upstream = upstream.with_tunnel_filter(Arc::new(ExpiryTunnels));
        }
        let pseudonymizer = Arc::new(Pseudonymizer::new(&f.client_ip));
        if let Some(node) = &cluster {
            // The cluster's pseudonym key before the first request, then at every period.
            let rotate = f.client_ip.rotate.get();
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
        let pipeline_config = PipelineConfig {
            trusted_proxies: f.client_ip.trusted_proxies.clone(),
            client_ip_header: f.client_ip.header,
            body_limits: BodyLimits::new(&f.public.body_limits),
            access_log: f.log.access_log,
        };
        let pipeline = Arc::new(Pipeline::new(pipeline_config, stages, upstream, pseudonymizer, metrics.clone()));
        // One budget of body memory (and of streams) for every public connection; the
        // stages charge it through the request context (`proxy::contract::budget`).
        let budgets = Budgets::new(BudgetLimits {
            body_memory: f.public.body_memory.0,
            body_memory_per_connection: f.public.body_memory_per_connection.0,
            streams_per_connection: u32::try_from(f.public.max_streams_per_connection).unwrap_or(u32::MAX),
            upstream_per_connection: f.public.h2_max_streams,
        });
        metrics.register(budgets.clone());

        // Egress: the instance's own outbound federation, over Tor (bootstraps in the background).
        let egress = crate::egress::Egress::start(&f.egress, data_dir, shutdown.clone())?;
        admin.add_check(egress.readiness());
        metrics.register(egress.metrics_source());

        Ok(App { services: Services { pipeline, admin, egress, metrics, budgets }, tasks, store })
    }
}

/// Expiry's say over WebSocket tunnels: messages that carry a hidden post are dropped.
struct ExpiryTunnels;

impl TunnelFilter for ExpiryTunnels {
    fn filter(&self, ctx: &RequestCtx) -> Box<dyn FnOnce(TunnelIo) -> TunnelIo + Send> {
        let filter = crate::expiry::ws::Filter::of(ctx);
        Box::new(move |io| Box::pin(filter.wrap(io)))
    }
}
