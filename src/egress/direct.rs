//! `direct` egress: plain TCP from this host to the destination. Development only — it
//! reveals the server's address to every peer, which is exactly what pavise exists to
//! prevent — so it is logged as a warning at start and shown in `/readyz`.
//!
//! Names are resolved here, so the SSRF guard checks every address they resolve to
//! (a public name pointing at 10.0.0.1 must not get through).

use std::{io, net::SocketAddr, time::Duration};

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

/// Connects to `host:port` for pavise's own direct fetches (the shield's
/// `key_fetch = "direct"`, development only): the name is resolved here and every address
/// it resolves to must be public (the egress guard's IANA special-purpose table), so a
/// keyId naming `evil.example` that resolves to 127.0.0.1 or 10.0.0.1 reaches nothing
/// (a literal check of the host alone would have let it). `allow_private` lifts the
/// guard, for tests on loopback.
pub async fn connect_public(host: &str, port: u16, allow_private: bool) -> io::Result<TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host}: timed out")))??
        .collect();
    if !allow_private
        && let Some((addr, range)) =
            addrs.iter().find_map(|a| super::policy::non_public(a.ip().to_canonical()).map(|r| (a, r)))
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{host} resolves to {} ({range}), not a public address", addr.ip()),
        ));
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolved to no address"));
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr}: timed out")),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unverified suspicion 1 of the red-team pass: a name that resolves to a private
    /// address got past a check of the host literal.
    #[tokio::test]
    async fn direct_fetches_refuse_names_that_resolve_to_private_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for host in ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]", "127.1"] {
            let e = connect_public(host, port, false).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{host}: {e}");
        }
        // For tests on loopback the guard can be lifted.
        connect_public("localhost", port, true).await.unwrap();
    }
}
