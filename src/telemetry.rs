//! Logging. Nothing that identifies a member is ever a field: client addresses exist only
//! inside `ClientAddr` (which prints `[scrubbed]`), tokens only inside sealed records.
//! The access log (`target: pavise::access`) carries the pseudonym, never the address.
//!
//! Lines go to stderr through a non-blocking writer: a slow terminal or journald must
//! not stall the runtime threads that serve requests. Under overload the writer drops
//! lines (and counts them) rather than blocking.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` level.
/// Keep the guard alive for the life of the process: dropping it flushes the last lines.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default().lossy(true).finish(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(writer)).try_init(),
        // Colour only for a person at a terminal; files and journald get plain text.
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            registry.with(fmt::layer().with_ansi(ansi).with_writer(writer)).try_init()
        }
    };
    // Already installed (an embedding program set its own): keep theirs.
    let _ = result;
    guard
}
