//! Response header hygiene: what would tell a watcher which software, version or host
//! serves the instance (`Server`, `X-Powered-By`, `X-Runtime`, `Via`, ...) is removed;
//! `Onion-Location` is added to HTML pages when the instance has an .onion address.

use http::{HeaderName, HeaderValue, header};

use serde::Deserialize;

use crate::proxy::contract::{Flow, ProxyError, Request, RequestCtx, Response, Stage, StageFuture};

/// `[response_headers]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseHeadersConfig {
    /// Response headers that fingerprint the server, removed before the client sees them.
    pub strip: Vec<String>,
    /// Added as `Onion-Location` to HTML responses when set (the instance's .onion address).
    pub onion_location: Option<String>,
}

impl Default for ResponseHeadersConfig {
    fn default() -> Self {
        ResponseHeadersConfig {
            strip: ["Server", "X-Powered-By", "X-Runtime", "Via"].map(String::from).to_vec(),
            onion_location: None,
        }
    }
}

impl ResponseHeadersConfig {
    /// Errors name the key at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for name in &self.strip {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ("response_headers.strip", format!("{name:?} is not a header name")))?;
        }
        if let Some(onion) = &self.onion_location {
            let uri: http::Uri =
                onion.parse().map_err(|_| ("response_headers.onion_location", format!("{onion:?} is not a URL")))?;
            if !uri.host().is_some_and(|h| h.ends_with(".onion")) {
                return Err(("response_headers.onion_location", format!("{onion:?} is not an .onion URL")));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ResponseHygiene {
    strip: Vec<HeaderName>,
    /// The .onion origin; the request path is appended per response.
    onion_origin: Option<String>,
}

impl ResponseHygiene {
    pub fn new(cfg: &ResponseHeadersConfig) -> ResponseHygiene {
        ResponseHygiene {
            strip: cfg.strip.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
            onion_origin: cfg.onion_location.as_ref().map(|o| o.trim_end_matches('/').to_owned()),
        }
    }
}

impl Stage for ResponseHygiene {
    fn name(&self) -> &'static str {
        "hygiene"
    }

    fn on_request<'a>(&'a self, ctx: &'a mut RequestCtx, req: Request) -> StageFuture<'a, Result<Flow, ProxyError>> {
        if self.onion_origin.is_some() {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
            ctx.extensions.insert(RequestPath(path));
        }
        Box::pin(async move { Ok(Flow::Continue(req)) })
    }

    fn on_response<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        mut resp: Response,
    ) -> StageFuture<'a, Result<Response, ProxyError>> {
        let headers = resp.headers_mut();
        for name in &self.strip {
            headers.remove(name);
        }
        let is_html =
            headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
        if is_html
            && let (Some(origin), Some(RequestPath(path))) = (&self.onion_origin, ctx.extensions.get::<RequestPath>())
            && let Ok(v) = HeaderValue::from_str(&format!("{origin}{path}"))
        {
            headers.insert(HeaderName::from_static("onion-location"), v);
        }
        Box::pin(async move { Ok(resp) })
    }
}

#[derive(Clone)]
struct RequestPath(String);
