//! The public listener's connections run on one single-threaded runtime per core, the
//! way nginx runs one event loop per worker (issue 15).
//!
//! Under tokio's work-stealing scheduler a proxied request is handed between tasks
//! (the client's connection, the pooled connection to the instance) that can sit on
//! different worker threads, and every hand-off to a parked worker is a futex wake and
//! a context switch: on a busy 2-core machine that cost more CPU per request than
//! everything pavise does to the request. Here a connection is accepted once, on the
//! main runtime, and handed whole to one core's runtime (round robin); it never leaves
//! it, and the connection to the instance it opens runs there too. The pool of those
//! stays one for all cores (`proxy::upstream`): a pool per core kept idle connections,
//! and their permits of `upstream.max_connections`, that the other cores could not use,
//! and opened more connections to the instance than one pool. Nothing else changes: the
//! caps are the same atomics and semaphores, shared by every core; background work, the
//! admin and egress listeners stay on the main runtime.
//!
//! Connections are handed over rather than accepted on per-core `SO_REUSEPORT` sockets:
//! accepting is once per connection and cheap, round robin spreads a few keep-alive
//! connections evenly where the kernel's hash may not, and no second process of the
//! same user can bind the public port beside pavise.

use std::{
    cell::Cell,
    future::Future,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// Which core runtime this thread drives, if any.
    static CORE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The core runtime the calling thread drives (`None` off them: the main runtime, tests).
pub fn current() -> Option<usize> {
    CORE.with(Cell::get)
}

/// How many core runtimes the public listener gets: one per CPU the process may use.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 64)
}

/// The running core runtimes.
pub struct Cores {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Cores {
    /// Starts [`count`] core runtimes, each on a thread of its own. Once [`Cores::stop`]
    /// is called, each lets the tasks still on it finish for up to `grace`.
    pub fn start(grace: Duration) -> io::Result<Arc<Cores>> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for core in 0..count() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new().name(format!("pavise-core-{core}")).spawn(move || {
                CORE.with(|c| c.set(Some(core)));
                runtime.block_on(async move {
                    stop.cancelled().await;
                    // What the connections left behind (a detached status creation that
                    // must learn its post's deadline) finishes, within the grace.
                    let deadline = tokio::time::Instant::now() + grace;
                    while Handle::current().metrics().num_alive_tasks() > 0 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            })?;
            threads.push(thread);
        }
        Ok(Arc::new(Cores { handles, next: AtomicUsize::new(0), stop, threads: Mutex::new(threads) }))
    }

    /// Runs `task` on the next core, round robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }

    /// Stops the core runtimes once their tasks are done (or the grace is up) and waits
    /// for their threads; call it after the listener has drained.
    pub async fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        // Never stopped (a test's server dropped mid-run): let the threads end on their own.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_every_core_and_know_which() {
        let cores = Cores::start(Duration::from_secs(1)).unwrap();
        assert_eq!(current(), None, "the test's own runtime is not a core");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 * count() {
            let tx = tx.clone();
            cores.spawn(async move {
                let _ = tx.send(current());
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(core) = rx.recv().await {
            seen.push(core.unwrap());
        }
        seen.sort_unstable();
        let expected: Vec<usize> = (0..count()).flat_map(|c| [c, c]).collect();
        assert_eq!(seen, expected, "round robin, two each");
        cores.stop().await;
    }
}
