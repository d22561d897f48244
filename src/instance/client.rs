//! The one hyper client for pavise's own requests to the instance's web process.
//!
//! The shield's reads (follows, account ids, domain blocks), the quarantine's replays and
//! the admin's readiness check share it, and with it one pool of loopback connections.
//! The pipeline's upstream keeps a pool of its own, on the same [`connector`]: its
//! connections hold permits of the relay's caps (`upstream.max_connections`), which
//! pavise's own bounded, self-paced requests must neither take nor wait for. (Expiry's
//! clients, `expiry::instance` and the CLI's, move onto this one later.)
//!
//! Requests go out as they are built: the `Host` the caller set (the instance's own
//! domain, for routing and signatures; the client writes none of its own), no hop-by-hop
//! header ([`strip_hop_by_hop`]), forwarding headers as [`OnBehalfOf`] says.
//!
//! [`OnBehalfOf`]: super::OnBehalfOf

use std::time::Duration;

use http::{HeaderValue, Uri, uri::Authority};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::proxy::contract::{Body, hop::strip_hop_by_hop};

/// How long a connection to the instance may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TCP connector every client to the instance uses: no Nagle delay (requests are
/// small and answered at once), and a bounded connect.
pub(crate) fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

/// See the module docs. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct InstanceClient {
    client: Client<HttpConnector, Body>,
    web: Authority,
}

impl InstanceClient {
    /// `web`: the instance's web process (`upstream.url`).
    pub fn new(web: Authority) -> InstanceClient {
        let client = Client::builder(TokioExecutor::new()).set_host(false).build(connector(CONNECT_TIMEOUT));
        InstanceClient { client, web }
    }

    /// `path_and_query` on the instance's web process.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder().scheme("http").authority(self.web.clone()).path_and_query(path_and_query).build()
    }

    /// The instance's address as a `Host` value, as hyper writes it from a URI (the port
    /// only when it is not 80): for requests that name no domain of the instance's.
    pub fn address_host(&self) -> HeaderValue {
        let host = match self.web.port_u16() {
            Some(80) => self.web.host(),
            _ => self.web.as_str(),
        };
        HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
    }

    /// Sends `req` (its URI made by [`InstanceClient::uri`]) and returns the response head.
    pub async fn send(&self, mut req: http::Request<Body>) -> Result<http::Response<Incoming>, SendError> {
        strip_hop_by_hop(req.headers_mut(), false);
        self.client.request(req).await
    }
}

/// Why a request got no answer.
pub type SendError = hyper_util::client::legacy::Error;
