//! Accepting connections under a cap and a shutdown signal, for every listener; and the
//! file descriptors all of them draw on.
//!
//! Every listener (public, admin, egress, SOCKS) wants the same loop: hold a permit per
//! open connection (beyond the cap, clients wait in the kernel backlog instead of costing
//! memory or descriptors), stop the moment shutdown fires, and back off when accepting
//! fails. The one failure that repeats is running out of descriptors (`EMFILE` for the
//! process, `ENFILE` for the system): the pending connection stays in the backlog and
//! the listener stays readable, so retrying at once is a busy loop (issue 16: the admin
//! listener spun at 110% of a core). The back-off doubles from 10 ms to 1 s while the
//! errors last, and the log says so once per episode, not once per try.
//!
//! The listeners share one descriptor limit: [`raise_nofile_limit`] lifts the soft limit
//! to the hard one at start, and [`descriptor_need`] says how many the configured caps
//! may use at once, so `pavise check` and the start-up log can say when they do not fit.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EgressMode};

pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// Which listener, for the log line on accept errors.
    what: &'static str,
}

/// The back-off between failed accepts.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

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
        let mut backoff = Backoff::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if backoff.failures > 0 {
                            tracing::info!(listener = self.what, failed = backoff.failures, "accepting again");
                        }
                        let _ = stream.set_nodelay(true);
                        return Some((stream, peer, permit));
                    }
                    Err(e) => {
                        let pause = backoff.failed();
                        if backoff.failures == 1 {
                            tracing::warn!(
                                listener = self.what,
                                error = %e,
                                out_of_descriptors = is_out_of_descriptors(&e),
                                "accept failed; backing off until it works again"
                            );
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                },
            }
        }
    }
}

/// Doubling pauses between failed accepts.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Counts a failure and returns how long to wait before the next try.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        BACKOFF_MIN.saturating_mul(1 << (self.failures - 1).min(7)).min(BACKOFF_MAX)
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The process's descriptor limit: soft (in force) and hard (the most it may be raised to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The current `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<NofileLimit> {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Ok(NofileLimit { soft: l.current.unwrap_or(u64::MAX), hard: l.maximum.unwrap_or(u64::MAX) })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the usual 1,024 soft limit is far
/// below what the default caps may use). Returns the limit before and after.
pub fn raise_nofile_limit() -> io::Result<(NofileLimit, NofileLimit)> {
    let before = nofile_limit()?;
    if before.soft < before.hard {
        let raised = rustix::process::Rlimit { current: Some(before.hard), maximum: Some(before.hard) };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).map_err(io::Error::from)?;
    }
    Ok((before, nofile_limit()?))
}

/// Connections the egress HTTP and SOCKS listeners each accept at most.
pub const EGRESS_MAX_CONNECTIONS: usize = 4096;

/// Descriptors beyond the connection caps: the store, logs, arti's state and channels,
/// spooled uploads, the listeners themselves.
const DESCRIPTOR_RESERVE: u64 = 256;

/// How many descriptors the configured caps may hold at once: every client connection
/// on every listener, every connection to the instance (web and streaming), and, in
/// direct egress mode, one outbound socket per egress connection.
pub fn descriptor_need(config: &Config) -> u64 {
    let f = &config.file;
    let egress_listeners = if f.egress.socks_listen.is_some() { 2 } else { 1 };
    let egress_per_connection = if f.egress.mode == EgressMode::Direct { 2 } else { 1 };
    let egress = (EGRESS_MAX_CONNECTIONS * egress_listeners * egress_per_connection) as u64;
    f.public.max_connections as u64
        + f.admin.max_connections as u64
        + 2 * f.upstream.max_connections as u64
        + egress
        + DESCRIPTOR_RESERVE
}

/// One line for `pavise check` and the start-up log: the limit, and whether the caps fit.
pub fn describe_descriptors(limit: NofileLimit, need: u64) -> String {
    let verdict = if limit.hard >= need {
        format!("the caps need up to {need}: OK")
    } else {
        format!(
            "WARNING: the caps need up to {need}; lower public.max_connections or upstream.max_connections, or raise the hard limit (LimitNOFILE=, ulimit -Hn); past it, accepts back off until descriptors free up"
        )
    };
    format!(
        "descriptors: limit {} (soft {}; pavise raises it to the hard limit at start); {verdict}",
        limit.hard, limit.soft
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..10).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }

    #[test]
    fn descriptors_are_described_against_the_caps() {
        let config = Config::load(None, &Default::default()).unwrap();
        let need = descriptor_need(&config);
        assert!(need > config.file.public.max_connections as u64);
        let fits = describe_descriptors(NofileLimit { soft: 1024, hard: 1 << 20 }, need);
        assert!(fits.contains("OK") && fits.contains("soft 1024"), "{fits}");
        let short = describe_descriptors(NofileLimit { soft: 256, hard: 256 }, need);
        assert!(short.contains("WARNING") && short.contains("limit 256"), "{short}");
    }
}
