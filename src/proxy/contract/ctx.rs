//! What pavise knows about one request, and the connection it came on.

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::Instant,
};

use http::HeaderValue;

use super::{
    Body, Route, boxed,
    budget::{self, ConnShare},
};

/// What pavise knows about one request, made once at accept.
///
/// The client's raw address is not here: it stays inside `privacy::ClientAddr`, which
/// only the pseudonymizer can read. Stages key on `pseudonym`.
#[derive(Debug)]
pub struct RequestCtx {
    pub route: Route,
    /// What the instance will see in `X-Forwarded-For`; also the shield's per-client key.
    pub pseudonym: IpAddr,
    /// Whether the client reached pavise over TLS (pavise's own, or a trusted edge's).
    pub https: bool,
    /// The `Host` (or `:authority`) the client addressed.
    pub host: Option<String>,
    pub started: Instant,
    /// Per-request state a stage hands to its own response phase (or to a later stage):
    /// e.g. the bearer token expiry saw on a status creation.
    pub extensions: http::Extensions,
    /// The connection's share of the relay's budgets (body memory, streams).
    pub share: Arc<ConnShare>,
    /// The body bytes this request holds in memory, once a stage holds any.
    held: OnceLock<Arc<budget::Charge>>,
    /// `pseudonym` as text, once something writes or logs it.
    forwarded_for: OnceLock<HeaderValue>,
}

impl RequestCtx {
    /// A context for a request on `share`'s connection, started now.
    pub fn new(
        route: Route,
        pseudonym: IpAddr,
        https: bool,
        host: Option<String>,
        share: Arc<ConnShare>,
    ) -> RequestCtx {
        RequestCtx {
            route,
            pseudonym,
            https,
            host,
            started: Instant::now(),
            extensions: http::Extensions::new(),
            share,
            held: OnceLock::new(),
            forwarded_for: OnceLock::new(),
        }
    }

    /// `pseudonym` as the instance reads it in `X-Forwarded-For`. Printed once: the
    /// client-IP stage, the upstream's last word and the access log all need it, and
    /// IPv6 text costs more than the rest of those steps together.
    pub fn forwarded_for(&self) -> &HeaderValue {
        self.forwarded_for.get_or_init(|| {
            let mut text = IpText::default();
            let _ = write!(text, "{}", self.pseudonym);
            // IP text is always a valid header value.
            HeaderValue::from_bytes(text.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("::"))
        })
    }

    /// Every stage that keeps body bytes in memory (to read a form, verify a digest,
    /// rewrite JSON) reads the body through this: its first `up_to` bytes are charged
    /// to the relay's body budgets as they arrive, until the request is answered. Past
    /// a budget the body fails with an error that every reader answers as `503` with
    /// `Retry-After` (`413` when this request alone is too large). See [`budget`].
    pub fn hold_body(&self, body: Body, up_to: u64) -> Body {
        let charge = self.held.get_or_init(|| budget::Charge::new(self.share.clone())).clone();
        boxed(budget::HeldBody::new(body, charge, up_to))
    }

    /// Body bytes this request holds in memory now.
    pub fn body_held(&self) -> u64 {
        self.held.get().map_or(0, |c| c.held())
    }
}

/// The client connection a request arrived on, as a listener hands it to the pipeline.
pub struct ClientConn {
    /// The connecting peer. Only `privacy::ClientAddr::resolve` reads it: the pipeline
    /// turns it into the pseudonym at once.
    pub peer: IpAddr,
    /// Whether the connection is TLS (pavise's own).
    pub https: bool,
    /// The connection's place under `public.max_connections` and in
    /// `pavise_open_connections`, released when the last holder drops it: a WebSocket
    /// tunnel outlives the HTTP exchange that opened it, and keeps its slot.
    pub slot: Slot,
    /// The connection's share of the relay's budgets (see [`budget`]).
    pub share: Arc<ConnShare>,
}

/// Something kept alive for as long as it is held (see [`ClientConn::slot`]).
pub type Slot = Arc<dyn std::any::Any + Send + Sync>;

/// An IP address printed on the stack (the longest IPv6 text is 45 bytes).
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText { buf: [0; 48], len: 0 }
    }
}

impl IpText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
