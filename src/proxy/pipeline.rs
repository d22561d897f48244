//! The pipeline: one ordered list of stages between the listener and the instance.
//!
//! ```text
//! accept ─► RequestCtx (route, pseudonym) ─► body cap
//!   request:  hygiene ─► shield ─► client_ip ─► media ─► expiry ─► upstream ─► instance
//!   response: hygiene ◄─ shield ◄─ client_ip ◄─ media ◄─ expiry ◄─┘
//! ```
//! The order is written once, in [`Pipeline::new`], with the reason for each position.

use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::{Frame, SizeHint};
use ipnet::IpNet;

use super::{
    Body, BoxError, Flow, ProxyError, RequestCtx, Response, Route, RouteClass, Stage, boxed, error::json_error,
    upstream::Upstream,
};
use crate::{
    config::Config,
    metrics::Metrics,
    privacy::{ClientAddr, Pseudonymizer},
    units::Size,
};

/// The body caps of `[public.body_limits]`, resolved per route class.
#[derive(Debug, Clone)]
pub struct BodyLimits([u64; RouteClass::ALL.len()]);

impl BodyLimits {
    pub fn from_config(config: &Config) -> BodyLimits {
        let limits = &config.file.public.body_limits;
        let default = limits.get("default").copied().unwrap_or(Size(16 << 20));
        BodyLimits(RouteClass::ALL.map(|class| {
            let builtin = match class {
                // Mastodon's own inbox cap.
                RouteClass::Inbox => Size(1 << 20),
                // 99 MB video plus multipart framing and a thumbnail.
                RouteClass::MediaUpload => Size(120 << 20),
                _ => default,
            };
            limits.get(class.config_name()).copied().unwrap_or(builtin).0
        }))
    }

    pub fn for_class(&self, class: RouteClass) -> u64 {
        self.0[class.index()]
    }
}

/// The error a capped body yields once the client sends more than its route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body over the {0}-byte limit")]
pub struct BodyCapExceeded(pub u64);

pin_project_lite::pin_project! {
    /// Passes bytes through unchanged until `remaining` runs out.
    struct CappedBody {
        #[pin]
        inner: Body,
        limit: u64,
        remaining: u64,
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyCapExceeded(*this.limit)))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything a request needs, shared by all connections.
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
    upstream: Upstream,
    pseudonymizer: Arc<Pseudonymizer>,
    trusted_proxies: Vec<IpNet>,
    body_limits: BodyLimits,
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl Pipeline {
    /// `stages` in request order; see the module docs for the standard order.
    pub fn new(
        config: &Config,
        stages: Vec<Arc<dyn Stage>>,
        upstream: Upstream,
        pseudonymizer: Arc<Pseudonymizer>,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            stages,
            upstream,
            pseudonymizer,
            trusted_proxies: config.file.client_ip.trusted_proxies.clone(),
            body_limits: BodyLimits::from_config(config),
            metrics,
            access_log: config.file.log.access_log,
        }
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Serves one request. Never fails: every error becomes a response here.
    pub async fn handle(&self, peer: IpAddr, https: bool, req: http::Request<hyper::body::Incoming>) -> Response {
        let started = Instant::now();
        let client = ClientAddr::resolve(peer, req.headers(), &self.trusted_proxies);
        let https = https || (self.is_trusted(peer) && forwarded_https(req.headers()));
        let mut ctx = RequestCtx {
            route: Route::classify(req.method(), req.uri().path()),
            pseudonym: self.pseudonymizer.pseudonym(&client),
            https,
            host: request_host(&req),
            started,
            extensions: http::Extensions::new(),
        };
        let method = req.method().clone();

        let resp = match self.run(&mut ctx, req.map(boxed)).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
        self.metrics.request_done(ctx.route.class, resp.status());
        if self.access_log {
            tracing::info!(
                target: "pavise::access",
                client = %self.pseudonymizer.log_form(ctx.pseudonym),
                route = ctx.route.class.config_name(),
                method = %method,
                status = resp.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            );
        }
        resp
    }

    async fn run(&self, ctx: &mut RequestCtx, mut req: super::Request) -> Result<Response, ProxyError> {
        let limit = self.body_limits.for_class(ctx.route.class);
        if content_length(req.headers()).is_some_and(|len| len > limit) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        req = req.map(|inner| boxed(CappedBody { inner, limit, remaining: limit }));

        // Stages that passed the request on get to see the response, in reverse order. The
        // stage that answers (or fails) made the answer and is not asked about it again.
        let mut ran = 0;
        let mut resp = 'answer: {
            for stage in &self.stages {
                match stage.on_request(ctx, req).await {
                    Ok(Flow::Continue(next)) => {
                        req = next;
                        ran += 1;
                    }
                    Ok(Flow::Respond(resp)) => break 'answer resp,
                    Err(e) => break 'answer e.into_response(),
                }
            }
            match self.upstream.forward(ctx, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            }
        };
        for stage in self.stages[..ran].iter().rev() {
            resp = stage.on_response(ctx, resp).await?;
        }
        Ok(resp)
    }

    fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn request_host<B>(req: &http::Request<B>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// A 404 in the instance's style, for stages that hide things (expired posts).
pub fn not_found() -> Response {
    json_error(http::StatusCode::NOT_FOUND, "Record not found")
}
