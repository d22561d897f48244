//! The HTTP forward proxy on `egress.listen` (default 127.0.0.1:8118, privoxy's port,
//! so Mastodon's `http_proxy` setting works unchanged).
//!
//! Two request shapes, as Mastodon (and any `http_proxy`-aware client) sends them:
//! - `CONNECT host:443`: the stream through Tor is opened *first*, and only then is
//!   the client told `200`; the two are spliced (hyper's `http_proxy` example). A
//!   failure is therefore a real status (403/502/503) the client can log and retry on.
//! - absolute-form `GET http://host/path` (plain http, e.g. .onion peers): forwarded
//!   over one fresh stream in origin form, hop-by-hop headers removed.
//!
//! HTTP/1.1 only (hyper's HTTP/1 server, not the auto-detecting one: an h2 preface is
//! a bad request here), and a method longer than any real one is refused with a 400
//! before anything reads or logs it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Egress, EgressError, policy::Destination};
use crate::{accept::Acceptor, proxy::contract::hop};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Connections from the instance at once; the rest wait in the kernel backlog.
const MAX_CONNECTIONS: usize = crate::accept::EGRESS_MAX_CONNECTIONS;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts until `shutdown`, then drains requests and tunnels for up to `grace`.
pub async fn serve(egress: Arc<Egress>, listener: TcpListener, grace: Duration, shutdown: CancellationToken) {
    let acceptor = Acceptor::new(listener, MAX_CONNECTIONS, "egress");
    let connections = TaskTracker::new();
    let tunnels = TaskTracker::new();
    let cut = CancellationToken::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    while let Some((stream, _, permit)) = acceptor.next(&shutdown).await {
        let (egress, tunnels, cut, builder) = (egress.clone(), tunnels.clone(), cut.clone(), builder.clone());
        let (shutdown, hard) = (shutdown.clone(), cut.clone());
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let (egress, tunnels, cut) = (egress.clone(), tunnels.clone(), cut.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(egress, req, tunnels, cut).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    // Finish the request in progress, then close; cut at the end of the grace.
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = conn.as_mut() => result,
                        _ = hard.cancelled() => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "egress connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(acceptor);
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!("egress connections still open after the grace period; closing them");
    }
    tunnels.close();
    if tokio::time::timeout(grace, tunnels.wait()).await.is_err() {
        tracing::warn!("egress tunnels still open after the grace period; closing them");
    }
    cut.cancel();
    connections.wait().await;
    tunnels.wait().await;
}

async fn handle(
    egress: Arc<Egress>,
    req: Request<Incoming>,
    tunnels: TaskTracker,
    cut: CancellationToken,
) -> Response<Body> {
    if req.method().as_str().len() > crate::proxy::contract::hop::MAX_METHOD_LEN {
        return error_response(&egress.failed(EgressError::BadRequest("unknown request method".into())));
    }
    if !egress.authorized(req.headers().get(header::PROXY_AUTHORIZATION).map(HeaderValue::as_bytes)) {
        let mut resp = error_response(&egress.failed(EgressError::AuthRequired));
        resp.headers_mut()
            .insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"pavise egress\""));
        return resp;
    }
    let result = if req.method() == Method::CONNECT {
        connect(&egress, req, tunnels, cut).await
    } else {
        forward(&egress, req).await
    };
    result.unwrap_or_else(|e| error_response(&e))
}

async fn connect(
    egress: &Egress,
    req: Request<Incoming>,
    tunnels: TaskTracker,
    cut: CancellationToken,
) -> Result<Response<Body>, EgressError> {
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| egress.failed(EgressError::BadRequest("CONNECT needs host:port".into())))?;
    let dest = parse_authority(egress, authority.as_str(), None)?;
    let mut upstream = egress.open(&dest).await?;
    tunnels.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(e) = r { tracing::debug!(error = %e, "egress tunnel ended with an error") }
                    }
                    _ = cut.cancelled() => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, "egress CONNECT upgrade failed"),
        }
    });
    Ok(Response::new(empty()))
}

async fn forward(egress: &Egress, req: Request<Incoming>) -> Result<Response<Body>, EgressError> {
    let uri = req.uri().clone();
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.clone(),
        (Some(_), Some(_)) => {
            return Err(egress.failed(EgressError::BadRequest(
                "only http:// in absolute form; send CONNECT host:443 for https".into(),
            )));
        }
        _ => {
            return Err(egress.failed(EgressError::BadRequest(
                "this is a forward proxy: send CONNECT host:port or an absolute-form http:// URI".into(),
            )));
        }
    };
    let dest = parse_authority(egress, authority.as_str(), Some(80))?;
    let stream = egress.open(&dest).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| egress.failed(EgressError::Http(format!("{dest}: {e}"))))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "egress forwarded connection ended with an error");
        }
    });

    let (mut parts, body) = req.into_parts();
    let origin = uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = Uri::try_from(origin).map_err(|e| egress.failed(EgressError::BadRequest(e.to_string())))?;
    // The same RFC 9110 rule as the reverse proxy: one implementation.
    hop::strip_hop_by_hop(&mut parts.headers, false);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| egress.failed(EgressError::Http(format!("{dest}: {e}"))))?;
    let (mut parts, body) = resp.into_parts();
    hop::strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed()))
}

/// `host[:port]` → a destination; rejects userinfo and anything unparsable with a 400.
fn parse_authority(egress: &Egress, authority: &str, default_port: Option<u16>) -> Result<Destination, EgressError> {
    let bad = |msg: String| egress.failed(EgressError::BadRequest(msg));
    if authority.contains('@') {
        return Err(bad("credentials in the target are not accepted".into()));
    }
    let has_port =
        authority.rsplit_once(':').is_some_and(|(h, p)| !p.is_empty() && !h.ends_with(':') && !p.contains(']'));
    let full = match (has_port, default_port) {
        (true, _) => authority.to_owned(),
        (false, Some(port)) => format!("{authority}:{port}"),
        (false, None) => return Err(bad(format!("{authority:?}: CONNECT needs host:port"))),
    };
    Destination::parse(&full).map_err(bad)
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A plain-text answer with the reason, and `X-Pavise-Egress: <label>` for machines.
fn error_response(e: &EgressError) -> Response<Body> {
    let mut resp =
        Response::new(Full::new(Bytes::from(format!("pavise egress: {e}\n"))).map_err(|never| match never {}).boxed());
    *resp.status_mut() = e.status();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(HeaderName::from_static("x-pavise-egress"), HeaderValue::from_static(e.label()));
    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    }
    resp
}
