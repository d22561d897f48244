//! The pipeline stage: hiding on the way in and out, learning posts from the instance.
//!
//! Request phase, in order:
//! 1. a member's token seen for the first time starts their archive sweep
//!    ([`super::sweep::Sweeper::sight`]; one hash lookup otherwise);
//! 2. requests whose answers can embed posts ask for an uncompressed answer (and, while
//!    anything is hidden, never a `304` for an old cached copy) — [`super::hide`];
//! 3. a request that names a hidden post — any spelling of its URL (the route carries the
//!    id as ActiveRecord reads it), any sub-resource, any method but its deletion — is
//!    answered as for a deleted post, before the instance is asked; so is one for its poll
//!    or its media ([`super::resource`]); a batch lookup (`GET /api/v1/statuses?id[]=`,
//!    read the way Rack reads a query, `;` included) loses the hidden ids, oEmbed by URL
//!    (`/api/oembed?url=`) is refused for any spelling of a hidden post's URL, and the
//!    writes that name statuses by id (a report, a filter, a moderator's batch action)
//!    lose the hidden ones, or are refused when none is left ([`WRITES_NAMING_STATUSES`]);
//! 4. a status creation is read (`expires_in`, references to hidden posts, the author's
//!    token wherever Doorkeeper would find it) and then sent by a task of its own: whether
//!    or not the client is still there when the instance answers, and whether or not it
//!    answers at all, the post is scheduled (a lost answer is looked for among the
//!    author's statuses: [`super::publish`]).
//!
//! Response phase: actions on a post (pin, favourite, bookmark, delete) and edits update
//! the schedule; then every answer that can carry a post is filtered ([`super::hide`]),
//! creation and edit answers included.
//!
//! Request bodies are read in one place ([`read_body`]), and only for the requests above
//! that need them: a request that concerns no hidden post costs no store lookup and no
//! body read.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::{
    EXPIRES_IN_RULE, Expiry, ExpiryError, edge,
    hide::{self, FilterOutcome, Follow, RequestHead, Surface},
    instance::{Instance, InstanceError},
    observe::{self, StatusAction},
    params::{self, BodyKind},
    policy::PostFacts,
    publish::{self, LostCreation},
    resource, sse,
    sweep::Sweeper,
    ws,
};
use crate::{
    auth,
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
    /// `instance` sends status creations (see the module docs) and fetches the next page
    /// of a listing that filtered to nothing; `sweeper`, when archive sweeps are on, is
    /// told about every token seen.
    pub fn new(core: Arc<Expiry>, instance: Instance, sweeper: Option<Arc<Sweeper>>) -> ExpiryStage {
        ExpiryStage { core, instance, sweeper }
    }
}

/// A 404 in the instance's style, for what pavise hides (an expired post).
fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "Record not found")
}

fn unprocessable(message: &str) -> Flow {
    Flow::Respond(json_error(StatusCode::UNPROCESSABLE_ENTITY, message))
}

/// Reads a request body whole: the one place this stage buffers a client's body. Held
/// whole, so charged to the relay's body budget (`proxy::budget`); the route's body cap
/// already bounds it.
pub async fn read_body(ctx: &RequestCtx, body: crate::proxy::contract::Body) -> Result<Bytes, ProxyError> {
    crate::proxy::contract::budget::read_whole(ctx.hold_body(body, u64::MAX), u64::MAX).await
}

/// The writes that name statuses by id (Mastodon's `config/routes/api.rb` and
/// `config/routes/admin.rb`), the parameter that does, and whether the write means
/// nothing without every one of them. A hidden id is dropped; a write left naming none it
/// named is refused as for a deleted post. (`in_reply_to_id`/`quoted_status_id` of a
/// status creation are checked with the creation; the status routes themselves by the
/// route's own id.)
const WRITES_NAMING_STATUSES: [(&[&str], &str, bool); 3] = [
    // A report keeps a reported post's row and media in Mastodon's database for good.
    (&["api", "v1", "reports"], "status_ids", false),
    (&["api", "v2", "filters", "*", "statuses"], "status_id", true),
    // A moderator's batch action ("report" included) on an account's statuses.
    (&["admin", "accounts", "*", "statuses", "batch"], "status_ids", false),
];

fn names_statuses(method: &Method, route: &crate::proxy::contract::Route) -> Option<(&'static str, bool)> {
    if method != Method::POST {
        return None;
    }
    let segments: Vec<&str> = route.path.segments().collect();
    WRITES_NAMING_STATUSES.iter().find_map(|(pattern, key, all)| {
        (pattern.len() == segments.len() && pattern.iter().zip(&segments).all(|(p, s)| *p == "*" || p == s))
            .then_some((*key, *all))
    })
}

/// Whether a query parameter name is, to Rack, the top-level key `name` (`id`, `id[]`).
fn rack_key_is(key: &str, name: &str) -> bool {
    params::top_key_is(key, name)
}

/// `GET /api/v1/statuses?id[]=...`: the query without the hidden ids, or `None` when none
/// of its ids is hidden. Rack decodes keys and values (`id%5B%5D`, `+`), Rack 2 splits on
/// `;` as well as `&`, and every spelling of an id ActiveRecord would find counts.
fn batch_without_hidden(query: &str, hidden: &dyn Fn(&str) -> bool) -> Option<(String, usize)> {
    let mut dropped = false;
    let mut kept_ids = 0;
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for part in query.split(';') {
        for (k, v) in url::form_urlencoded::parse(part.as_bytes()) {
            if rack_key_is(&k, "id") {
                if status_id_of(&v).is_some_and(|id| hidden(&id)) {
                    dropped = true;
                    continue;
                }
                kept_ids += 1;
            }
            out.append_pair(&k, &v);
        }
    }
    dropped.then(|| (out.finish(), kept_ids))
}

/// `GET /api/oembed?url=` read the Rack 2 way (`;` separating too): the route reads it the
/// Rack 3 way.
fn oembed_names_hidden(query: &str, hidden: &dyn Fn(&str) -> bool) -> bool {
    query.split([';', '&']).any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        crate::proxy::contract::route::form_decode(k.as_bytes()).as_deref() == Some(b"url".as_slice())
            && crate::proxy::contract::route::form_decode(v.as_bytes())
                .and_then(|url| crate::proxy::contract::route::status_of_url(&String::from_utf8_lossy(&url)))
                .is_some_and(|id| hidden(&id))
    })
}

fn with_query(uri: &http::Uri, query: &str) -> Result<http::Uri, ProxyError> {
    let path = uri.path();
    let pq = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadRequest("bad query".into()))?);
    http::Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("bad query".into()))
}

/// The author's token of a request that names one post (an action, an edit): from the
/// head, or from a small body when Doorkeeper would take it from there.
async fn token_of(ctx: &RequestCtx, req: Request) -> Result<(Request, Option<Token>), ProxyError> {
    if let Some(t) = auth::bearer_token_in_head(req.headers(), req.uri().query()) {
        return Ok((req, Some(t)));
    }
    let has_body =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() != "0")
            && !http_body::Body::is_end_stream(req.body());
    let Ok(kind) = BodyKind::of(req.headers()) else { return Ok((req, None)) };
    if !has_body || kind == BodyKind::Other {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(ctx, body).await?;
    let token = auth::bearer_token(&parts.headers, parts.uri.query(), &|name| params::body_param(&kind, &bytes, name));
    Ok((http::Request::from_parts(parts, full(bytes)), token))
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
                sweeper.sight(req.headers(), req.uri().query(), ctx.host.as_deref());
            }
            match Surface::of(&ctx.route) {
                Surface::None => {}
                Surface::Document => {
                    hide::prepare_request(&mut req, &core.hidden);
                    if !core.hidden.is_empty() && req.method() == Method::GET {
                        ctx.extensions.insert(RequestHead {
                            headers: req.headers().clone(),
                            path: ctx.route.path.clone(),
                            query: req.uri().query().map(str::to_owned),
                        });
                    }
                }
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
            if !core.hidden.is_empty() {
                let now = now_ms();
                let hidden = core.hidden.hidden_at(now);
                // Its poll and its media go with it.
                if let Some(r) = resource::resource_of(&method, &ctx.route.path)
                    && core.hidden.is_hidden_resource(&r, now)
                {
                    core.stats.hidden.fetch_add(1, Relaxed);
                    return Ok(Flow::Respond(not_found()));
                }
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
                    ("/api/oembed", Some(q)) if oembed_names_hidden(q, &hidden) => {
                        core.stats.hidden.fetch_add(1, Relaxed);
                        return Ok(Flow::Respond(not_found()));
                    }
                    _ => {}
                }
                if let Some((key, all)) = names_statuses(&method, &ctx.route) {
                    match self.drop_hidden_ids(ctx, req, key, all).await? {
                        Flow::Continue(next) => req = next,
                        answered => return Ok(answered),
                    }
                }
            }

            let status_id = ctx.route.status_id.clone();
            match (ctx.route.class, &method, &status_id) {
                (RouteClass::StatusCreate, &Method::POST, None) => self.create(ctx, req).await,
                (RouteClass::StatusCreate, &Method::PUT | &Method::PATCH, Some(id)) => {
                    let (req, token) = token_of(ctx, req).await?;
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
                    match action {
                        Some(action) => {
                            let (req, token) = token_of(ctx, req).await?;
                            ctx.extensions.insert(Pending::Action { token, status_id: id.clone(), action });
                            Ok(Flow::Continue(req))
                        }
                        None => Ok(Flow::Continue(req)),
                    }
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
    async fn filter(&self, ctx: &mut RequestCtx, resp: Response) -> Result<Response, ProxyError> {
        match Surface::of(&ctx.route) {
            Surface::None => Ok(resp),
            Surface::Document => {
                let limit = self.core.config.filter_max_body.0 as usize;
                let head = ctx.extensions.remove::<RequestHead>();
                let follow = head.as_ref().map(|head| Follow { instance: &self.instance, head });
                let (resp, outcome) = hide::filter_document(resp, &ctx.route, &self.core.hidden, limit, follow).await?;
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
                    .is_some_and(|v| crate::privacy::media::body::media_type(v.as_bytes()) == "text/event-stream");
                if !is_sse {
                    return Ok(resp);
                }
                let (parts, body) = resp.into_parts();
                let filtered = sse::SseFilter::new(body, self.core.hidden.clone());
                Ok(http::Response::from_parts(parts, crate::proxy::contract::boxed(filtered)))
            }
        }
    }

    /// A write that names statuses (see [`WRITES_NAMING_STATUSES`]), without the hidden
    /// ones.
    async fn drop_hidden_ids(&self, ctx: &RequestCtx, req: Request, key: &str, all: bool) -> Result<Flow, ProxyError> {
        let kind = match BodyKind::of(req.headers()) {
            Ok(kind) => kind,
            Err(why) => return Ok(Flow::Respond(json_error(StatusCode::BAD_REQUEST, why))),
        };
        let (mut parts, body) = req.into_parts();
        let bytes = read_body(ctx, body).await?;
        let now = now_ms();
        let hidden = |v: &str| status_id_of(v).is_some_and(|id| self.core.hidden.is_hidden(&id, now));
        let dropped = match params::drop_values(&kind, &bytes, parts.uri.query(), key, &hidden) {
            Ok(d) => d,
            Err(e) => return Ok(unprocessable(&format!("Validation failed: {e}"))),
        };
        if dropped.dropped == 0 {
            return Ok(Flow::Continue(http::Request::from_parts(parts, full(bytes))));
        }
        self.core.stats.filtered.fetch_add(1, Relaxed);
        if all || dropped.kept == 0 {
            // As the instance answers for a post that no longer exists.
            return Ok(Flow::Respond(not_found()));
        }
        if let Some(q) = &dropped.query {
            parts.uri = with_query(&parts.uri, q)?;
        }
        let body = dropped.body.unwrap_or(bytes);
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(Flow::Continue(http::Request::from_parts(parts, full(body))))
    }

    /// `POST /api/v1/statuses`: read, check, then hand the exchange to a task of its own.
    async fn create(&self, ctx: &mut RequestCtx, req: Request) -> Result<Flow, ProxyError> {
        let core = &self.core;
        let kind = match BodyKind::of(req.headers()) {
            Ok(kind) => kind,
            Err(why) => return Ok(Flow::Respond(json_error(StatusCode::BAD_REQUEST, why))),
        };
        let (mut parts, body) = req.into_parts();
        // The answer must be readable JSON, not a compressed stream.
        parts.headers.remove(header::ACCEPT_ENCODING);
        let bytes = read_body(ctx, body).await?;
        let token =
            auth::bearer_token(&parts.headers, parts.uri.query(), &|name| params::body_param(&kind, &bytes, name));
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
        // network after sending still gets its post scheduled, and so does one whose
        // instance is slow to answer (the task waits up to `expiry.create_timeout`). What
        // the exchange asks of the instance besides (a failed post's deletion, a scheduled
        // post's account, a lost answer's look-up) is the client's doing too, and carries
        // its pseudonym.
        let lost =
            LostCreation { sent_at: now, text: taken.params.text, spoiler_text: taken.params.spoiler_text, expires_in };
        let instance = self.instance.for_client(ctx.pseudonym);
        let exchange = Exchange { core: self.core.clone(), instance, token, host: ctx.host.clone(), lost };
        let task = tokio::spawn(exchange.run(parts, taken.body));
        match tokio::time::timeout(core.config.request_timeout.get(), task).await {
            Ok(Ok(resp)) => Ok(Flow::Respond(resp)),
            Ok(Err(e)) => Err(ProxyError::Internal(format!("status creation: {e}"))),
            // The client's answer is late; the task goes on and learns the post.
            Err(_) => Ok(Flow::Respond(ProxyError::UpstreamTimeout.into_response())),
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
        if let Some(json) = read_json(&parts.headers, &bytes)
            && let Some(post) = observe::facts_from_status(&json)
            && post.id == status_id
            && let Err(e) = record_edit(&self.core, &post, token.as_ref(), host).await
        {
            self.core.stats.schedule_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "could not re-plan an edited post's expiry");
        }
        // The edited post may quote a hidden one: its answer is filtered like a read.
        Ok(match hide::filter_status_answer(&bytes, &self.core.hidden) {
            Some(out) => rebuilt(parts, out),
            None => {
                self.core.stats.hidden.fetch_add(1, Relaxed);
                not_found()
            }
        })
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
                self.core.settle(status_id, outcome).await.map(|_| ()).map_err(ExpiryError::from)
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
                self.core.set_flags(status_id, &item.account, flags, Some(token)).await
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

/// The detached half of a status creation.
struct Exchange {
    core: Arc<Expiry>,
    instance: Instance,
    token: Option<Token>,
    host: Option<String>,
    lost: LostCreation,
}

impl Exchange {
    /// Sends the creation, reads the answer, schedules what it says (or, when the answer
    /// is lost, records the post to be looked for), durably, then gives the client its
    /// answer (if it is still there).
    async fn run(self, parts: http::request::Parts, body: Bytes) -> Response {
        let core = &self.core;
        let (rparts, rbody) = match self.instance.forward(parts, body, core.config.create_timeout.get()).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "status creation: the instance's answer was lost; the post is looked for");
                self.record_lost().await;
                return match e {
                    InstanceError::Timeout => ProxyError::UpstreamTimeout.into_response(),
                    _ => ProxyError::UpstreamMisbehaved("the instance is not reachable right now").into_response(),
                };
            }
        };
        if rparts.status.is_server_error() {
            // The instance may have created it before failing.
            self.record_lost().await;
            return rebuilt(rparts, rbody);
        }
        if !rparts.status.is_success() {
            return rebuilt(rparts, rbody);
        }
        let Some(json) = read_json(&rparts.headers, &rbody) else {
            self.record_lost().await;
            return rebuilt(rparts, rbody);
        };
        if let Some(post) = observe::facts_from_status(&json) {
            if core.hidden.is_hidden(&post.id, now_ms()) {
                // A replay (`Idempotency-Key`) of a post past its deadline: deleted, to us.
                core.stats.hidden.fetch_add(1, Relaxed);
                return not_found();
            }
            if let Err(e) =
                record_created(core, &post, self.token.as_ref(), self.lost.expires_in, self.host.clone()).await
            {
                core.stats.schedule_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "could not record a post's expiry");
                return self.undo(&post).await;
            }
            return match hide::filter_status_answer(&rbody, &core.hidden) {
                Some(out) => rebuilt(rparts, out),
                None => not_found(),
            };
        }
        // Recorded even while no rule is loaded: the rules in force at its publication
        // decide, and a reload may come before it.
        if let Some(facts) = observe::scheduled_from(&json) {
            let recorded = match &self.token {
                Some(t) => {
                    let account = publish::account_of(core, &self.instance, self.host.as_deref(), t).await;
                    publish::record(core, &facts, &account, t, self.lost.expires_in, self.host.clone()).await
                }
                None => Err(ExpiryError::Invalid("no token to find its publication with".into())),
            };
            if let Err(e) = recorded {
                core.stats.schedule_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "could not record a scheduled post for expiry");
                // Never a `200` without a record: the scheduled post is cancelled.
                let cancelled = match &self.token {
                    Some(t) => self.instance.delete_scheduled(&facts.id, self.host.as_deref(), t).await.is_ok(),
                    None => false,
                };
                return if cancelled {
                    json_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Validation failed: the scheduled post's expiry could not be recorded, so it was cancelled; try again",
                    )
                } else {
                    json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the post was scheduled, but its expiry could not be recorded; cancel it or try again",
                    )
                };
            }
        }
        rebuilt(rparts, rbody)
    }

    /// The creation's answer never came: the post may exist. Recorded to be looked for
    /// among the author's statuses, when anything could make it expire.
    async fn record_lost(&self) {
        let core = &self.core;
        if self.lost.expires_in.is_none() && !core.has_rules() {
            return;
        }
        let Some(token) = &self.token else {
            tracing::error!("a status creation's answer was lost and it carried no token: it cannot be looked for");
            return;
        };
        let account = publish::account_of(core, &self.instance, self.host.as_deref(), token).await;
        if let Err(e) = publish::record_lost(core, &self.lost, &account, token, self.host.clone()).await {
            core.stats.schedule_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "could not record a status creation whose answer was lost");
        }
    }

    /// A post was created whose expiry could not be recorded (the store refused: a full
    /// disk): it is not kept, and the client is told.
    async fn undo(&self, post: &PostFacts) -> Response {
        let planned = self.core.plan(post, self.lost.expires_in, now_ms()).is_some();
        let deleted = match (&self.token, planned) {
            (Some(t), true) => {
                matches!(
                    self.instance.delete(&post.id, self.host.as_deref(), t).await,
                    Ok(_) | Err(InstanceError::NotFound)
                )
            }
            _ => false,
        };
        if deleted {
            json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation failed: the post's expiry could not be recorded, so it was not kept; try again",
            )
        } else {
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the post was created, but its expiry could not be recorded; delete it or try again",
            )
        }
    }
}

/// Schedules a newly created post, or offers its token to parked deletions. A post pavise
/// already has a record of (the same creation replayed by the instance for an
/// `Idempotency-Key`) keeps its record.
async fn record_created(
    core: &Expiry,
    post: &PostFacts,
    token: Option<&Token>,
    expires_in: Option<u64>,
    host: Option<String>,
) -> Result<(), ExpiryError> {
    if core.store.lookup(&post.id).await?.is_some() {
        return core.offer_token(&post.account, token).await;
    }
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
