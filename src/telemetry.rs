//! Logging. Nothing that identifies a member is ever a field: client addresses exist only
//! inside `ClientAddr` (which prints `[scrubbed]`), tokens only inside sealed records.
//! The access log (`target: pavise::access`) carries the pseudonym, never the address.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    // Already installed (tests start several relays in one process): keep the first.
    let _ = result;
}
