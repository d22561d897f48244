//! The admin listener's own readiness check: whether the instance answers at all.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::hooks::{Readiness, ReadinessCheck};
use crate::proxy::contract::StageFuture;

/// `/readyz`: does the instance's web process answer HTTP at all?
pub struct UpstreamCheck {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
}

impl UpstreamCheck {
    /// `instance`: the instance's web process (`upstream.url`).
    pub fn new(instance: &http::uri::Authority) -> UpstreamCheck {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let uri = format!("http://{instance}/health").parse().unwrap_or_default();
        UpstreamCheck { client: Client::builder(TokioExecutor::new()).build(connector), uri }
    }
}

impl ReadinessCheck for UpstreamCheck {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn check(&self) -> StageFuture<'_, Readiness> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(3), self.client.get(self.uri.clone())).await {
                Ok(Ok(resp)) => Readiness::Ready(format!("instance answered {}", resp.status().as_u16())),
                Ok(Err(e)) => Readiness::NotReady(format!("instance not reachable: {e}")),
                Err(_) => Readiness::NotReady("instance did not answer within 3s".into()),
            }
        })
    }
}
