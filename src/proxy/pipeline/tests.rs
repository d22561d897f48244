//! The pipeline without sockets: stages that record what they saw, an origin that
//! answers (or fails) as told.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;

use super::*;
use crate::{
    privacy::client_ip::ClientIpConfig,
    proxy::contract::{ConnShare, StageFuture, empty, error::json_error, full},
};

type Log = Arc<Mutex<Vec<String>>>;

/// What a probe does in one phase.
#[derive(Clone, Copy)]
enum Act {
    Pass,
    /// Answer deliberately (request phase) with this status.
    Answer(u16),
    /// Fail with an internal error.
    Fail,
}

/// A stage that writes `name:request` and `name:response <status>` into the log, and
/// adds a `Server` header to every response it sees (a stand-in for a fingerprint).
struct Probe {
    name: &'static str,
    log: Log,
    on_request: Act,
    on_response: Act,
    strip_server: bool,
}

impl Probe {
    fn new(name: &'static str, log: &Log) -> Probe {
        Probe { name, log: log.clone(), on_request: Act::Pass, on_response: Act::Pass, strip_server: false }
    }
}

impl Stage for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn on_request<'a>(&'a self, _ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        self.log.lock().unwrap().push(format!("{}:request", self.name));
        Box::pin(async move {
            match self.on_request {
                Act::Pass => Ok(Flow::Continue(req)),
                Act::Answer(status) => {
                    let mut resp = json_error(StatusCode::from_u16(status).unwrap(), "answered");
                    resp.headers_mut().insert(header::SERVER, HeaderValue::from_static("stage"));
                    Ok(Flow::Respond(resp))
                }
                Act::Fail => Err(ProxyError::Internal("request phase".into())),
            }
        })
    }

    fn on_response<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        mut resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        self.log.lock().unwrap().push(format!("{}:response {}", self.name, resp.status().as_u16()));
        if self.strip_server {
            resp.headers_mut().remove(header::SERVER);
        }
        Box::pin(async move {
            match self.on_response {
                Act::Fail => Err(ProxyError::Internal("response phase".into())),
                _ => Ok(resp),
            }
        })
    }
}

/// The instance, as told: a 200 carrying a `Server` header, or a failure.
struct FakeOrigin {
    log: Log,
    fail: Option<fn() -> ProxyError>,
}

impl Origin for FakeOrigin {
    fn forward<'a>(
        &'a self,
        _ctx: &'a RequestCtx,
        _req: Request,
        _wire_method: Option<http::Method>,
        _conn: &'a ClientConn,
    ) -> impl Future<Output = Result<Response, ProxyError>> + Send + 'a {
        self.log.lock().unwrap().push("origin".into());
        async move {
            if let Some(fail) = self.fail {
                return Err(fail());
            }
            let mut resp = Response::new(full("from the instance"));
            resp.headers_mut().insert(header::SERVER, HeaderValue::from_static("Mastodon"));
            Ok(resp)
        }
    }
}

fn pipeline(stages: Vec<Probe>, log: &Log, fail: Option<fn() -> ProxyError>) -> Pipeline<FakeOrigin> {
    let config = PipelineConfig {
        trusted_proxies: vec![],
        client_ip_header: ClientIpHeader::XForwardedFor,
        body_limits: BodyLimits::new(&BTreeMap::from([("default".to_owned(), Size(1000))])),
        access_log: false,
    };
    let stages = stages.into_iter().map(|s| Arc::new(s) as Arc<dyn Stage>).collect();
    let pseudonymizer = Arc::new(Pseudonymizer::new(&ClientIpConfig::default()));
    Pipeline::new(config, stages, FakeOrigin { log: log.clone(), fail }, pseudonymizer, Arc::new(Metrics::default()))
}

fn conn() -> Arc<ClientConn> {
    Arc::new(ClientConn {
        peer: "127.0.0.1".parse().unwrap(),
        https: false,
        slot: Arc::new(()),
        share: ConnShare::detached(),
    })
}

fn get(path: &str) -> Request {
    http::Request::get(path).header(header::HOST, "social.example").body(empty()).unwrap()
}

async fn error_of(resp: Response) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"].as_str().unwrap().to_owned()
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn seen(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn request_phases_run_in_order_and_response_phases_in_reverse() {
    let log = log();
    let p = pipeline(vec![Probe::new("a", &log), Probe::new("b", &log), Probe::new("c", &log)], &log, None);
    let resp = p.handle(conn(), get("/about")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        seen(&log),
        ["a:request", "b:request", "c:request", "origin", "c:response 200", "b:response 200", "a:response 200"]
    );
}

#[tokio::test]
async fn a_stage_that_answers_ends_the_request_pass_and_is_not_asked_about_its_answer() {
    let log = log();
    let answering = Probe { on_request: Act::Answer(429), ..Probe::new("b", &log) };
    let p = pipeline(vec![Probe::new("a", &log), answering, Probe::new("c", &log)], &log, None);
    let resp = p.handle(conn(), get("/about")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(seen(&log), ["a:request", "b:request", "a:response 429"], "c and the origin never saw it");
}

#[tokio::test]
async fn a_failing_request_phase_is_answered_through_the_one_mapping() {
    let log = log();
    let failing = Probe { on_request: Act::Fail, ..Probe::new("b", &log) };
    let p = pipeline(vec![Probe::new("a", &log), failing, Probe::new("c", &log)], &log, None);
    let resp = p.handle(conn(), get("/about")).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json; charset=utf-8");
    assert_eq!(seen(&log), ["a:request", "b:request", "a:response 500"]);
    assert_eq!(error_of(resp).await, "internal error: request phase");
}

/// Hygiene is the outermost stage: a failing response phase inside it must not let the
/// instance's answer (or anything else) past it unscrubbed.
#[tokio::test]
async fn a_failing_response_phase_is_answered_and_the_stages_outside_it_still_see_the_answer() {
    let log = log();
    let hygiene = Probe { strip_server: true, ..Probe::new("hygiene", &log) };
    let failing = Probe { on_response: Act::Fail, ..Probe::new("b", &log) };
    let p = pipeline(vec![hygiene, failing, Probe::new("c", &log)], &log, None);
    let resp = p.handle(conn(), get("/about")).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        seen(&log),
        [
            "hygiene:request",
            "b:request",
            "c:request",
            "origin",
            "c:response 200",
            "b:response 200",
            "hygiene:response 500"
        ]
    );
    assert!(!resp.headers().contains_key(header::SERVER));
}

#[tokio::test]
async fn every_response_passes_the_outermost_stage() {
    // The instance's own answer, a stage's deliberate answer, the origin's failure.
    for (inner, fail, status) in [
        (Act::Pass, None, StatusCode::OK),
        (Act::Answer(404), None, StatusCode::NOT_FOUND),
        (
            Act::Pass,
            Some((|| ProxyError::Busy("requests to the instance")) as fn() -> ProxyError),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let log = log();
        let hygiene = Probe { strip_server: true, ..Probe::new("hygiene", &log) };
        let p = pipeline(vec![hygiene, Probe { on_request: inner, ..Probe::new("b", &log) }], &log, fail);
        let resp = p.handle(conn(), get("/about")).await;
        assert_eq!(resp.status(), status);
        assert!(!resp.headers().contains_key(header::SERVER), "{status}");
        assert_eq!(seen(&log).last().unwrap(), &format!("hygiene:response {}", status.as_u16()));
        if fail.is_some() {
            assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        }
    }
}

#[tokio::test]
async fn what_is_refused_on_entry_reaches_no_stage() {
    let log = log();
    let p = pipeline(vec![Probe::new("a", &log)], &log, None);
    let trace = http::Request::builder().method("TRACE").uri("/").body(empty()).unwrap();
    let resp = p.handle(conn(), trace).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().contains_key(header::ALLOW));
    let two_hosts = http::Request::get("/").header("host", "a.example").header("host", "b.example").body(empty());
    let resp = p.handle(conn(), two_hosts.unwrap()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(resp).await, "more than one Host header");
    // Over the route's body cap, by its declared length: 413 before any stage reads it.
    let large = http::Request::post("/api/v1/statuses")
        .header(header::HOST, "social.example")
        .header(header::CONTENT_LENGTH, "1001")
        .body(full(vec![b'x'; 1001]))
        .unwrap();
    assert_eq!(p.handle(conn(), large).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen(&log).is_empty(), "{:?}", seen(&log));
}
