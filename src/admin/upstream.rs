//! The admin listener's own readiness check: whether the instance answers at all.

use std::time::Duration;

use super::hooks::{Readiness, ReadinessCheck};
use crate::{
    instance::InstanceClient,
    proxy::contract::{StageFuture, empty},
};

/// `/readyz`: does the instance's web process answer HTTP at all?
pub struct UpstreamCheck {
    instance: InstanceClient,
}

impl UpstreamCheck {
    pub fn new(instance: InstanceClient) -> UpstreamCheck {
        UpstreamCheck { instance }
    }
}

impl ReadinessCheck for UpstreamCheck {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn check(&self) -> StageFuture<'_, Readiness> {
        Box::pin(async move {
            let Ok(uri) = self.instance.uri("/health") else {
                return Readiness::NotReady("instance not reachable: no address".into());
            };
            let mut req = http::Request::new(empty());
            *req.uri_mut() = uri;
            req.headers_mut().insert(http::header::HOST, self.instance.address_host());
            match tokio::time::timeout(Duration::from_secs(3), self.instance.send(req)).await {
                Ok(Ok(resp)) => Readiness::Ready(format!("instance answered {}", resp.status().as_u16())),
                Ok(Err(e)) => Readiness::NotReady(format!("instance not reachable: {e}")),
                Err(_) => Readiness::NotReady("instance did not answer within 3s".into()),
            }
        })
    }
}
