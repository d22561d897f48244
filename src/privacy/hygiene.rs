//! Response header hygiene: what would tell a watcher which software, version or host
//! serves the instance (`Server`, `X-Powered-By`, `X-Runtime`, `Via`, ...) is removed;
//! `Onion-Location` is added to HTML pages when the instance has an .onion address.

use http::{HeaderName, HeaderValue, header};

use crate::{
    config::ResponseHeadersConfig,
    proxy::contract::{ProxyError, RequestCtx, Response, Stage, StageFuture},
};

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

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: crate::proxy::contract::Request,
    ) -> StageFuture<'a, Result<crate::proxy::contract::Flow, ProxyError>> {
        if self.onion_origin.is_some() {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
            ctx.extensions.insert(RequestPath(path));
        }
        Box::pin(async move { Ok(crate::proxy::contract::Flow::Continue(req)) })
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
