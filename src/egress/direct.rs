//! `direct` egress: plain TCP from this host to the destination. Development only — it
//! reveals the server's address to every peer, which is exactly what pavise exists to
//! prevent — so it is logged as a warning at start and shown in `/readyz`.
//!
//! Names are resolved here, so the SSRF guard checks every address they resolve to
//! (a public name pointing at 10.0.0.1 must not get through).

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

use super::{
    EgressError,
    policy::{Destination, Policy},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What `/readyz` and the start-up log say in direct mode.
pub const WARNING: &str =
    "egress mode is DIRECT (development only): outbound connections leave from this server's own address, not over Tor";

#[derive(Debug)]
pub struct DirectConnector {
    policy: Policy,
}

impl DirectConnector {
    pub fn new(policy: Policy) -> DirectConnector {
        tracing::warn!("{WARNING}");
        DirectConnector { policy }
    }

    pub async fn connect(&self, dest: &Destination) -> Result<TcpStream, EgressError> {
        let host = dest.host.connect_str();
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host.as_str(), dest.port)))
                .await
                .map_err(|_| EgressError::Direct(format!("resolving {}: timed out", dest.host)))?
                .map_err(|e| EgressError::Direct(format!("resolving {}: {e}", dest.host)))?
                .collect();
        for addr in &addrs {
            self.policy.check_resolved(dest, addr.ip()).map_err(EgressError::Refused)?;
        }
        let mut last = format!("{} resolved to no address", dest.host);
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = format!("connecting to {dest}: {e}"),
                Err(_) => last = format!("connecting to {dest}: timed out"),
            }
        }
        Err(EgressError::Direct(last))
    }
}
