//! One shutdown signal for every task, and a deadline for draining.
//!
//! `main` owns a [`CancellationToken`]; listeners stop accepting when it fires, in-flight
//! requests and open streams get `public.shutdown_grace` to finish, then the rest is cut.

use tokio_util::sync::CancellationToken;

/// Resolves on SIGTERM or SIGINT (ctrl-c).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Cancels `token` on the first signal.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutdown signal received: no new connections, draining");
        token.cancel();
    });
}
