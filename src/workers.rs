//! The threads that serve the public listener's connections: one single-threaded tokio
//! runtime per thread, as nginx runs one event loop per worker.
//!
//! Every request on a keep-alive connection wakes the connection's task, the request's
//! and the pooled upstream connection's, several times. On tokio's work-stealing
//! scheduler each wake-up goes through shared run queues, atomics and, often, another
//! thread; a single-threaded runtime keeps the whole exchange on one thread's local
//! queue. Measured on the relay (issue 15, `scripts/bench-proxy`): about a fifth less CPU
//! per proxied request.
//!
//! The accept loop stays where it is (one loop, one connection cap, one back-off, one
//! shutdown signal); each accepted socket is handed to the next worker in turn and lives
//! there until it closes. A connection never moves: handing them out in turn spreads
//! them evenly, and the price is that a thread busy with one long computation delays
//! the other connections it serves (heavy work, a media scrub or a signature check,
//! runs on the blocking pool, never on these threads).
//! Everything else (admin, egress, background work) stays on the main runtime.

use std::{
    cell::Cell,
    future::Future,
    io,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// How long a stopping worker waits for its blocking tasks (a media scrub, a store
/// call) before it leaves them to the process's exit.
const STOP_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    /// This thread's place in its set, on a serving thread.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The serving thread this runs on, if it is one (`0..count`).
pub fn current() -> Option<usize> {
    INDEX.get()
}

/// How many threads `public.workers = count` starts.
pub fn count(count: usize) -> usize {
    match count {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// A set of serving threads; they stop when this is dropped.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` threads (`0`: one per core).
    pub fn start(count: usize) -> io::Result<Workers> {
        let count = self::count(count);
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            thread::Builder::new().name(format!("pavise-serve-{i}")).spawn(move || {
                INDEX.set(Some(i));
                runtime.block_on(stop.cancelled());
                // Tasks end here; a blocking task still running gets a bounded wait.
                runtime.shutdown_timeout(STOP_WAIT);
            })?;
        }
        Ok(Workers { handles, next: AtomicUsize::new(0), stop })
    }

    /// Runs `task` on the next worker in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }

    /// How many threads serve.
    pub fn threads(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_workers_in_turn_and_stop_with_them() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.threads(), 2);
        let mut names = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            workers.spawn(async move {
                let _ = tx.send((thread::current().name().map(str::to_owned), current()));
            });
            names.push(rx.await.unwrap());
        }
        let serve = |i: usize| (Some(format!("pavise-serve-{i}")), Some(i));
        assert_eq!(names, [serve(0), serve(1), serve(0), serve(1)]);
        assert_eq!(current(), None, "the test's own thread serves nothing");

        // A task still pending when the set is dropped is ended, not left running.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        workers.spawn(async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(workers);
        assert!(rx.await.is_err(), "the pending task was dropped with its worker");
    }

    #[test]
    fn zero_means_one_per_core() {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Workers::start(0).unwrap().threads(), cores);
    }
}
