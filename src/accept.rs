//! Accepting connections under a cap and a shutdown signal, for every listener.
//!
//! The public, egress and SOCKS listeners all want the same loop: hold a permit per open
//! connection (beyond the cap, clients wait in the kernel backlog instead of costing
//! memory), stop the moment shutdown fires, and back off briefly on accept errors such
//! as EMFILE instead of spinning.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// Which listener, for the log line on accept errors.
    what: &'static str,
}

impl Acceptor {
    pub fn new(listener: TcpListener, max_connections: usize, what: &'static str) -> Acceptor {
        Acceptor { listener, permits: Arc::new(Semaphore::new(max_connections)), what }
    }

    /// The next connection (`TCP_NODELAY` set) and the permit it holds until dropped;
    /// `None` once `shutdown` fires.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return None,
            permit = self.permits.clone().acquire_owned() => permit.ok()?,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        return Some((stream, peer, permit));
                    }
                    Err(e) => {
                        tracing::warn!(listener = self.what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}
