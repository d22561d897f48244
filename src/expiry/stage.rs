//! The pipeline stage: hiding on the way in and out, learning posts from the instance.
//!
//! Request phase, in order:
//! 1. a member's token seen for the first time starts their archive sweep
//!    ([`super::sweep::Sweeper::sight`]; one hash lookup otherwise);
//! 2. requests whose answers can embed posts ask for an uncompressed answer (and, while
//!    anything is hidden, never a `304` for an old cached copy) — [`super::hide`];
//! 3. a request that names a hidden post — any spelling of its URL (the route carries the
//!    id as ActiveRecord reads it), any sub-resource, any method but its deletion — is
//!    answered as for a deleted post, before the instance is asked; a batch lookup
//!    (`GET /api/v1/statuses?id[]=`, read the way Rack reads a query) loses the hidden ids,
//!    and oEmbed by URL (`/api/oembed?url=`) is refused for any spelling of a hidden
//!    post's URL;
//! 4. a status creation is read (`expires_in`, references to hidden posts) and then sent
//!    by a task of its own ([`Instance::forward`]): whether or not the client is still
//!    there when the instance answers, the answer is learned and the post scheduled.
//!
//! Response phase: actions on a post (pin, favourite, bookmark, delete) and edits update
//! the schedule; then every answer that can carry a post is filtered ([`super::hide`]).

use std::sync::{Arc, atomic::Ordering::Relaxed};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::{
    EXPIRES_IN_RULE, Expiry, ExpiryError, edge,
    hide::{self, FilterOutcome, Surface},
    instance::{Instance, InstanceError},
    observe::{self, StatusAction},
    policy::PostFacts,
    publish, sse,
    sweep::Sweeper,
    ws,
};
use crate::{
    proxy::contract::{
        Flow, ProxyError, Request, RequestCtx, Response, RouteClass, Stage, StageFuture, error::json_error, full,
        route::status_id_of,
    },
    store::{Outcome, now_ms},
};

use super::seal::Token;

/// What the request phase hands to the response phase.
#[derive(Clone)]
enum Pending {
    Edit {
        token: Option<Token>,
        status_id: String,
    },
    Action {
        token: Option<Token>,
        status_id: String,
        action: StatusAction,
    },
    /// `PUT` (re-timed) or `DELETE` of a `ScheduledStatus`.
    Scheduled {
        scheduled_id: String,
        deleted: bool,
    },
}

/// The pipeline stage.
pub struct ExpiryStage {
    core: Arc<Expiry>,
    instance: Instance,
    sweeper: Option<Arc<Sweeper>>,
}

impl ExpiryStage {
    /// `instance` sends status creations (see the module docs); `sweeper`, when archive
    /// sweeps are on, is told about every token seen.
    pub fn new(core: Arc<Expiry>, instance: Instance, sweeper: Option<Arc<Sweeper>>) -> ExpiryStage {
        ExpiryStage { core, instance, sweeper }
    }
}

fn bearer(req: &Request) -> Option<Token> {
    req.headers().get(header::AUTHORIZATION).and_then(Token::from_authorization)
}

fn unprocessable(message: &str) -> Flow {
    Flow::Respond(json_error(StatusCode::UNPROCESSABLE_ENTITY, message))
}

/// Whether a query parameter name is, to Rack, the top-level key `name` (`id`, `id[]`).
fn rack_key_is(key: &str, name: &str) -> bool {
    let base = key.get(1..).and_then(|r| r.find('[')).map_or(key, |i| &key[..i + 1]);
    let trimmed = key.trim_start_matches(['[', ']']);
    let rack2 = &trimmed[..trimmed.find(['[', ']']).unwrap_or(trimmed.len())];
    base == name || rack2 == name
}

/// `GET /api/v1/statuses?id[]=...`: the query without the hidden ids, or `None` when none
/// of its ids is hidden. Rack decodes keys and values (`id%5B%5D`, `+`), and every
/// spelling of an id ActiveRecord would find counts.
fn batch_without_hidden(query: &str, hidden: &dyn Fn(&str) -> bool) -> Option<(String, usize)> {
    let mut dropped = false;
    let mut kept_ids = 0;
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if rack_key_is(&k, "id") {
            if status_id_of(&v).is_some_and(|id| hidden(&id)) {
                dropped = true;
                continue;
            }
            kept_ids += 1;
        }
        out.append_pair(&k, &v);
    }
    dropped.then(|| (out.finish(), kept_ids))
}

fn with_query(uri: &http::Uri, query: &str) -> Result<http::Uri, ProxyError> {
    let path = uri.path();
    let pq = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadRequest("bad query".into()))?);
    http::Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("bad query".into()))
}

impl Stage for ExpiryStage {
    fn name(&self) -> &'static str {
        "expiry"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        mut req: Request,
    ) -> StageFuture<'a, Result<Flow, ProxyError>> {
        Box::pin(async move {
            let core = &self.core;
            if let Some(sweeper) = &self.sweeper {
                sweeper.sight(req.headers(), ctx.host.as_deref());
            }
            match Surface::of(&ctx.route) {
                Surface::None => {}
                Surface::Document => hide::prepare_request(&mut req, &core.hidden),
                Surface::Streaming => {
                    hide::prepare_request(&mut req, &core.hidden);
                    // No permessage-deflate: the tunnel must be able to read every message.
                    req.headers_mut().remove(header::SEC_WEBSOCKET_EXTENSIONS);
                    ctx.extensions.insert(ws::WsTap(core.hidden.clone()));
                }
            }
            let method = req.method().clone();

            // A post past its deadline is not served under any spelling of its URL, nor any
            // of its sub-resources, nor acted on; only its deletion goes through.
            if let Some(id) = &ctx.route.status_id
                && method != Method::DELETE
                && core.hidden.is_hidden(id, now_ms())
            {
                core.stats.hidden.fetch_add(1, Relaxed);
                return Ok(Flow::Respond(hide::hidden_answer(&ctx.route)));
            }
            if !core.hidden.is_empty() && ctx.route.class == RouteClass::Api {
                let hidden = core.hidden.hidden_at(now_ms());
                match (ctx.route.path.as_str(), req.uri().query()) {
                    ("/api/v1/statuses", Some(q)) if method == Method::GET || method == Method::HEAD => {
                        if let Some((rest, kept)) = batch_without_hidden(q, &hidden) {
                            core.stats.filtered.fetch_add(1, Relaxed);
                            if kept == 0 {
                                let mut resp = crate::admin::hooks::json(StatusCode::OK, serde_json::json!([]));
                                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                                return Ok(Flow::Respond(resp));
                            }
                            *req.uri_mut() = with_query(req.uri(), &rest)?;
                        }
                    }
                    _ => {}
                }
            }

            let status_id = ctx.route.status_id.clone();
            match (ctx.route.class, &method, &status_id) {
                (RouteClass::StatusCreate, &Method::POST, None) => self.create(ctx, req).await,
                (RouteClass::StatusCreate, &Method::PUT | &Method::PATCH, Some(id)) => {
                    let token = bearer(&req);
                    let (mut parts, body) = req.into_parts();
                    parts.headers.remove(header::ACCEPT_ENCODING);
                    ctx.extensions.insert(Pending::Edit { token, status_id: id.clone() });
                    Ok(Flow::Continue(http::Request::from_parts(parts, body)))
                }
                (RouteClass::Api, m, Some(id)) if ctx.route.path.as_str().starts_with("/api/v1/statuses/") => {
                    let action = match (m, ctx.route.status_action.as_deref()) {
                        (&Method::DELETE, None) => Some(StatusAction::Delete),
                        (&Method::POST, Some(segment)) => StatusAction::from_segment(segment),
                        _ => None,
                    };
                    if let Some(action) = action {
                        ctx.extensions.insert(Pending::Action { token: bearer(&req), status_id: id.clone(), action });
                    }
                    Ok(Flow::Continue(req))
                }
                (RouteClass::Api, &Method::PUT | &Method::DELETE, None) => {
                    let mut segments = ctx.route.path.segments();
                    if let (Some("api"), Some("v1"), Some("scheduled_statuses"), Some(id), None) =
                        (segments.next(), segments.next(), segments.next(), segments.next(), segments.next())
                    {
                        ctx.extensions.insert(Pending::Scheduled {
                            scheduled_id: id.to_owned(),
                            deleted: method == Method::DELETE,
                        });
                        req.headers_mut().remove(header::ACCEPT_ENCODING);
                    }
                    Ok(Flow::Continue(req))
                }
                _ => Ok(Flow::Continue(req)),
            }
        })
    }

    fn on_response<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        Box::pin(async move {
            // Filtered first: what the request itself changes (an unpin that makes a kept
            // post due again) holds from the next request on, not for its own answer.
            let resp = self.filter(ctx, resp).await?;
            let Some(pending) = ctx.extensions.remove::<Pending>() else { return Ok(resp) };
            if !resp.status().is_success() {
                return Ok(resp);
            }
            match pending {
                Pending::Action { token, status_id, action } => {
                    self.observe_action(token.as_ref(), &status_id, action).await;
                    Ok(resp)
                }
                Pending::Edit { token, status_id } => self.observe_edit(resp, token, ctx.host.clone(), status_id).await,
                Pending::Scheduled { scheduled_id, deleted } => {
                    self.observe_scheduled(resp, &scheduled_id, deleted).await
                }
            }
        })
    }
}

impl ExpiryStage {
    /// Takes hidden posts out of an answer that can carry them (see [`super::hide`]).
    async fn filter(&self, ctx: &RequestCtx, resp: Response) -> Result<Response, ProxyError> {
        match Surface::of(&ctx.route) {
            Surface::None => Ok(resp),
            Surface::Document => {
                let limit = self.core.config.filter_max_body.0 as usize;
                let (resp, outcome) = hide::filter_document(resp, &ctx.route, &self.core.hidden, limit).await?;
                match outcome {
                    FilterOutcome::Removed => self.core.stats.filtered.fetch_add(1, Relaxed),
                    FilterOutcome::WholeHidden => self.core.stats.hidden.fetch_add(1, Relaxed),
                    FilterOutcome::NotLooked | FilterOutcome::Clean => 0,
                };
                Ok(resp)
            }
            Surface::Streaming => {
                let is_sse = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
                if !is_sse {
                    return Ok(resp);
                }
                let (parts, body) = resp.into_parts();
                let filtered = sse::SseFilter::new(body, self.core.hidden.clone());
                Ok(http::Response::from_parts(parts, crate::proxy::contract::boxed(filtered)))
            }
        }
    }
}

impl ExpiryStage {
    /// `POST /api/v1/statuses`: read, check, then hand the exchange to a task of its own.
    async fn create(&self, ctx: &mut RequestCtx, req: Request) -> Result<Flow, ProxyError> {
        let core = &self.core;
        let token = bearer(&req);
        let (mut parts, body) = req.into_parts();
        // The answer must be readable JSON, not a compressed stream.
        parts.headers.remove(header::ACCEPT_ENCODING);
        let kind =
            edge::BodyKind::from_content_type(parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
        // Held whole, so charged to the relay's body budget (proxy::budget); the route's
        // body cap already bounds it.
        let bytes = crate::proxy::contract::budget::read_whole(ctx.hold_body(body, u64::MAX), u64::MAX).await?;
        let min = core.config.min_expires_in.get().as_secs();
        let taken = match edge::take_create_params(&kind, &bytes, parts.uri.query(), min) {
            Ok(t) => t,
            Err(e) => {
                core.stats.rejected_expires_in.fetch_add(1, Relaxed);
                return Ok(unprocessable(&format!("Validation failed: {e}")));
            }
        };
        let expires_in = taken.params.expires_in;
        if expires_in.is_some() && token.is_none() {
            // Without the author's token pavise could never delete it: do not create it.
            core.stats.rejected_expires_in.fetch_add(1, Relaxed);
            return Ok(unprocessable("Validation failed: expires_in needs the author's bearer token"));
        }
        let now = now_ms();
        if taken.params.references.iter().filter_map(|r| status_id_of(r)).any(|id| core.hidden.is_hidden(&id, now)) {
            return Ok(Flow::Respond(json_error(StatusCode::NOT_FOUND, "Record not found")));
        }
        if let Some(q) = &taken.query {
            parts.uri = with_query(&parts.uri, q)?;
        }
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(taken.body.len()));
        // An HTTP/2 client names the host in `:authority`, not `Host`; the instance answers
        // only to its own name (as the pipeline's upstream does it).
        if !parts.headers.contains_key(header::HOST)
            && let Some(host) = ctx.host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
        {
            parts.headers.insert(header::HOST, host);
        }

        // The instance must see this request as the pipeline would send it: the client's
        // pseudonym, scheme and host, written last (so its throttles apply to it).
        crate::proxy::contract::hop::last_word(&mut parts.headers, ctx);

        // From here the exchange is not the client's to cancel: a phone that loses its
        // network after sending still gets its post scheduled. What the exchange asks of
        // the instance besides (a failed post's deletion, a scheduled post's account) is
        // the client's doing too, and carries its pseudonym.
        let (core, host) = (self.core.clone(), ctx.host.clone());
        let instance = self.instance.for_client(ctx.pseudonym);
        let body = taken.body;
        let task =
            tokio::spawn(async move { exchange_and_learn(core, instance, parts, body, token, expires_in, host).await });
        match task.await {
            Ok(resp) => Ok(Flow::Respond(resp)),
            Err(e) => Err(ProxyError::Internal(format!("status creation: {e}"))),
        }
    }

    async fn observe_edit(
        &self,
        resp: Response,
        token: Option<Token>,
        host: Option<String>,
        status_id: String,
    ) -> Result<Response, ProxyError> {
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return Err(ProxyError::Internal(format!("reading the instance's answer: {e}"))),
        };
        if let Some(post) = read_json(&parts.headers, &bytes).as_ref().and_then(observe::facts_from_status)
            && post.id == status_id
            && let Err(e) = record_edit(&self.core, &post, token.as_ref(), host).await
        {
            self.core.stats.schedule_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "could not re-plan an edited post's expiry");
        }
        Ok(rebuilt(parts, bytes))
    }

    async fn observe_scheduled(
        &self,
        resp: Response,
        scheduled_id: &str,
        deleted: bool,
    ) -> Result<Response, ProxyError> {
        if deleted {
            let id = publish::item_id(scheduled_id);
            if let Err(e) =
                self.core.settle(&id, Outcome::Cancelled("its author cancelled the scheduled post".into())).await
            {
                tracing::warn!(error = %e, "could not drop a cancelled publication");
            }
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return Err(ProxyError::Internal(format!("reading the instance's answer: {e}"))),
        };
        if let Some(facts) = read_json(&parts.headers, &bytes).as_ref().and_then(observe::scheduled_from)
            && let Err(e) = publish::retime(&self.core, &facts).await
        {
            tracing::warn!(error = %e, "could not re-time a scheduled post");
        }
        Ok(rebuilt(parts, bytes))
    }

    async fn observe_action(&self, token: Option<&Token>, status_id: &str, action: StatusAction) {
        let Ok(Some(item)) = self.core.store.lookup(status_id).await else { return };
        let result = match action {
            StatusAction::Delete => {
                let now = now_ms();
                // An expired post its author deletes is hidden until the instance confirms it
                // is gone, like one pavise deleted; a live one simply leaves the schedule.
                let outcome = if item.hidden_at(now) {
                    let after = self.core.config.confirm_after.get().as_millis() as u64;
                    Outcome::Deleted { confirm_at: now + after }
                } else {
                    Outcome::Cancelled("deleted by its author".into())
                };
                self.core.settle(status_id, outcome).await.map(|_| ())
            }
            StatusAction::Pin(on) | StatusAction::Favourite(on) | StatusAction::Bookmark(on) => {
                // Only the author's own pin/favourite/bookmark are keep conditions.
                let Some(token) = token else { return };
                let id = self.core.sealer.credential_id(token);
                let is_author = item.credential.as_deref() == Some(id.as_str())
                    || matches!(self.core.store.credential(&id).await, Ok(Some(c)) if c.account == item.account);
                if !is_author {
                    return;
                }
                let mut flags = item.flags;
                match action {
                    StatusAction::Pin(_) => flags.pinned = on,
                    StatusAction::Favourite(_) => flags.favourited = on,
                    _ => flags.bookmarked = on,
                }
                self.core.set_flags(status_id, flags).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record a status action for expiry");
        }
    }
}

/// The instance's answer as JSON, decoded if it came compressed anyway.
fn read_json(headers: &http::HeaderMap, bytes: &Bytes) -> Option<serde_json::Value> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    if !encoding.trim().eq_ignore_ascii_case("identity") {
        tracing::warn!(encoding, "an answer about a post came back compressed despite the request; cannot read it");
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn rebuilt(mut parts: http::response::Parts, bytes: Bytes) -> Response {
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    http::Response::from_parts(parts, full(bytes))
}

/// The detached half of a status creation: send it, read the answer, schedule what it
/// says, durably, then give the client its answer (if it is still there).
async fn exchange_and_learn(
    core: Arc<Expiry>,
    instance: Instance,
    parts: http::request::Parts,
    body: Bytes,
    token: Option<Token>,
    expires_in: Option<u64>,
    host: Option<String>,
) -> Response {
    let (rparts, rbody) = match instance.forward(parts, body).await {
        Ok(answer) => answer,
        Err(InstanceError::Timeout) => return ProxyError::UpstreamTimeout.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "status creation: the instance did not answer");
            return json_error(StatusCode::BAD_GATEWAY, "the instance is not reachable right now");
        }
    };
    if !rparts.status.is_success() {
        return rebuilt(rparts, rbody);
    }
    let Some(json) = read_json(&rparts.headers, &rbody) else {
        if expires_in.is_some() {
            tracing::error!("a post with expires_in was created but its answer is unreadable; it cannot expire");
        }
        return rebuilt(rparts, rbody);
    };
    if let Some(post) = observe::facts_from_status(&json) {
        match record_created(&core, &post, token.as_ref(), expires_in, host.clone()).await {
            Ok(()) => return rebuilt(rparts, rbody),
            Err(e) => {
                core.stats.schedule_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "could not record a post's expiry");
                if expires_in.is_some()
                    && let Some(t) = &token
                {
                    // The author asked for it to expire; a post that cannot is not kept.
                    return match instance.delete(&post.id, host.as_deref(), t).await {
                        Ok(_) | Err(InstanceError::NotFound) => json_error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Validation failed: the post's expiry could not be recorded, so it was not kept; try again",
                        ),
                        Err(_) => json_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the post was created, but its expiry could not be recorded; delete it or try again",
                        ),
                    };
                }
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the post was created, but its expiry could not be recorded; delete it or try again",
                );
            }
        }
    }
    if let Some(facts) = observe::scheduled_from(&json) {
        let recorded = match &token {
            Some(t) => match instance.verify_credentials(host.as_deref(), t).await {
                Ok((_, account)) => publish::record(&core, &facts, &account, t, expires_in, host.clone()).await,
                Err(e) => Err(ExpiryError::from(e)),
            },
            None => Err(ExpiryError::Invalid("no token to find its publication with".into())),
        };
        if let Err(e) = recorded {
            core.stats.schedule_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "could not record a scheduled post for expiry");
            if expires_in.is_some() {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the post was scheduled, but its expiry could not be recorded; cancel it or try again",
                );
            }
        }
    }
    rebuilt(rparts, rbody)
}

/// Schedules a newly created post, or offers its token to parked deletions.
async fn record_created(
    core: &Expiry,
    post: &PostFacts,
    token: Option<&Token>,
    expires_in: Option<u64>,
    host: Option<String>,
) -> Result<(), ExpiryError> {
    match core.plan(post, expires_in, now_ms()) {
        Some(mut item) => {
            item.host = host;
            core.schedule(item, &post.account, token).await
        }
        None => core.offer_token(&post.account, token).await,
    }
}

/// Re-plans an edited post (its tags or visibility may have changed); the author's own
/// `expires_in` stands.
async fn record_edit(
    core: &Expiry,
    post: &PostFacts,
    token: Option<&Token>,
    host: Option<String>,
) -> Result<(), ExpiryError> {
    let existing = core.store.lookup(&post.id).await.map_err(ExpiryError::Store)?;
    if existing.as_ref().is_some_and(|e| e.rule == EXPIRES_IN_RULE) {
        return Ok(());
    }
    if let Some(mut item) = core.plan(post, None, now_ms()) {
        if let Some(e) = &existing {
            item.flags = e.flags;
        }
        item.host = host;
        return core.schedule(item, &post.account, token).await;
    }
    if existing.is_some() {
        core.settle(&post.id, Outcome::Cancelled("edited; no rule matches any more".into()))
            .await
            .map_err(ExpiryError::Store)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "110000000000000001";

    #[test]
    fn batch_lookups_read_the_way_rack_reads_them() {
        let hidden = |id: &str| id == H;
        for q in [
            format!("id[]={H}&id[]=5"),
            format!("id%5B%5D={H}&id%5B%5D=5"),
            format!("id[]=0{H}&id[]=5"),
            format!("id[]=%2B{H}&id[]=5"),
            format!("id[]={H}-x&id[]=5"),
            format!("id={H}&id[]=5"),
        ] {
            let (rest, kept) = batch_without_hidden(&q, &hidden).unwrap_or_else(|| panic!("{q}"));
            assert_eq!(kept, 1, "{q}");
            assert!(!rest.contains(&H[1..]), "{q} -> {rest}");
        }
        assert_eq!(batch_without_hidden("id[]=5&id[]=6", &hidden), None, "untouched when nothing is hidden");
        assert_eq!(batch_without_hidden(&format!("id[]={H}"), &hidden).unwrap().1, 0);
    }
}
