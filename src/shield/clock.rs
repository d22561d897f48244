//! The shield's clock: tokio's. Limiters, waves, deferrals and the quarantine's "held
//! back now?" read the time here, so a test with a paused clock (`tokio::time::pause`,
//! `advance`, mini-redis's `key_value_timeout`) drives them without sleeping; outside
//! such a test tokio's clock is the system's monotonic one. Wall-clock dates (a
//! signature's window, first-seen records, `X-RateLimit-Reset`) stay `SystemTime`.

use std::time::Instant;

/// Now, on tokio's clock.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// governor's clock over tokio's (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl governor::clock::Clock for TokioClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        now()
    }
}

impl governor::clock::ReasonablyRealtime for TokioClock {}
