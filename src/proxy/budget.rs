//! What requests may hold of the relay at once, in total and per connection: request-body
//! bytes kept in memory before the instance has them, long-lived streams, and requests
//! to the instance.
//!
//! Several stages must read a body whole before they can decide (Rack's `_method` in a
//! form, a signed delivery's digest, a status creation's `expires_in`, the `data:` URIs
//! of a JSON or form body). Each is small on its own; together, on a few HTTP/2
//! connections of many streams, they were a gigabyte (issue 16, red-team finding F1). So
//! every stage that keeps body bytes in memory charges them first, through
//! [`RequestCtx::hold_body`](super::RequestCtx::hold_body), against two budgets:
//! `public.body_memory` for the whole relay and `public.body_memory_per_connection` for
//! the requests of one connection. A charge lasts until the request is answered (the
//! bytes are handed to the instance then). Past a budget the request gets `503` with
//! `Retry-After`; a request that alone is larger than a budget gets `413`, since waiting
//! would not help it.
//!
//! Per connection, [`ConnShare`] also counts the long-lived streams (SSE, WebSocket) and
//! the requests to the instance that are still running, so that neither a connection
//! that opens many streams nor one that resets them (the instance still does the work
//! of each) takes more than its share; the caps themselves are applied in
//! [`super::upstream`].
//!
//! Only atomics: nothing here locks, and a request that holds no body bytes allocates
//! nothing.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::{Body, BoxError, ProxyError};
use crate::{config::Config, metrics::MetricsSource};

/// The relay-wide budgets, shared by every connection of one listener.
#[derive(Debug)]
pub struct Budgets {
    body_limit: u64,
    body_used: AtomicU64,
    body_per_connection: u64,
    streams_per_connection: u32,
    upstream_per_connection: u32,
    refused_body: AtomicU64,
}

impl Budgets {
    /// The public listener's, from `[public]`.
    pub fn public(config: &Config) -> Arc<Budgets> {
        let p = &config.file.public;
        Arc::new(Budgets {
            body_limit: p.body_memory.0,
            body_used: AtomicU64::new(0),
            body_per_connection: p.body_memory_per_connection.0,
            streams_per_connection: u32::try_from(p.max_streams_per_connection).unwrap_or(u32::MAX),
            // A connection never has more requests running than streams; the rest are
            // ones its client reset while the instance was still working on them.
            upstream_per_connection: p.h2_max_streams.max(1),
            refused_body: AtomicU64::new(0),
        })
    }

    /// No limits: for pavise's own requests and unit tests.
    pub fn unlimited() -> Arc<Budgets> {
        Arc::new(Budgets {
            body_limit: u64::MAX,
            body_used: AtomicU64::new(0),
            body_per_connection: u64::MAX,
            streams_per_connection: u32::MAX,
            upstream_per_connection: u32::MAX,
            refused_body: AtomicU64::new(0),
        })
    }

    /// Body bytes held in memory now, by every request.
    pub fn body_held(&self) -> u64 {
        self.body_used.load(Relaxed)
    }
}

/// One client connection's share of the [`Budgets`]; made once per connection.
#[derive(Debug)]
pub struct ConnShare {
    budgets: Arc<Budgets>,
    body_used: AtomicU64,
    streams: AtomicU32,
    upstream: AtomicU32,
}

impl ConnShare {
    pub fn new(budgets: Arc<Budgets>) -> Arc<ConnShare> {
        Arc::new(ConnShare {
            budgets,
            body_used: AtomicU64::new(0),
            streams: AtomicU32::new(0),
            upstream: AtomicU32::new(0),
        })
    }

    /// A share with no limits (pavise's own requests, tests).
    pub fn detached() -> Arc<ConnShare> {
        ConnShare::new(Budgets::unlimited())
    }

    /// Counts one more long-lived stream on this connection, unless it has its
    /// `max_streams_per_connection` already.
    pub(crate) fn open_stream(self: &Arc<Self>) -> Option<ConnStream> {
        counted(&self.streams, self.budgets.streams_per_connection).then(|| ConnStream(self.clone()))
    }

    /// Counts one more request to the instance on this connection (see the module docs).
    pub(crate) fn start_upstream(self: &Arc<Self>) -> Option<ConnUpstream> {
        counted(&self.upstream, self.budgets.upstream_per_connection).then(|| ConnUpstream(self.clone()))
    }
}

fn counted(counter: &AtomicU32, max: u32) -> bool {
    if counter.fetch_add(1, Relaxed) >= max {
        counter.fetch_sub(1, Relaxed);
        return false;
    }
    true
}

/// A long-lived stream's place on its connection, given back on drop.
#[derive(Debug)]
pub(crate) struct ConnStream(Arc<ConnShare>);

impl Drop for ConnStream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Relaxed);
    }
}

/// A running request to the instance, counted on its client's connection until the
/// instance has answered it (even when the client stopped waiting).
#[derive(Debug)]
pub(crate) struct ConnUpstream(Arc<ConnShare>);

impl Drop for ConnUpstream {
    fn drop(&mut self) {
        self.0.upstream.fetch_sub(1, Relaxed);
    }
}

/// Why body bytes could not be held.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum BodyMemoryFull {
    /// Other requests hold the budget now; retrying later helps.
    #[error("the relay is holding too many request bodies right now")]
    Busy,
    /// This request alone is larger than a budget.
    #[error("request body larger than the {0} bytes the relay holds in memory for one request")]
    TooLarge(u64),
}

impl From<BodyMemoryFull> for ProxyError {
    fn from(e: BodyMemoryFull) -> ProxyError {
        match e {
            BodyMemoryFull::Busy => ProxyError::Busy("request bodies held by the relay"),
            BodyMemoryFull::TooLarge(limit) => ProxyError::BodyTooLarge { limit },
        }
    }
}

/// The body bytes one request holds, against its connection's and the relay's budgets;
/// all given back when the last holder (the request context, a held body) drops it.
#[derive(Debug)]
pub struct Charge {
    share: Arc<ConnShare>,
    bytes: AtomicU64,
}

impl Charge {
    pub(crate) fn new(share: Arc<ConnShare>) -> Arc<Charge> {
        Arc::new(Charge { share, bytes: AtomicU64::new(0) })
    }

    /// Takes `n` more bytes from both budgets, or neither.
    pub fn take(&self, n: u64) -> Result<(), BodyMemoryFull> {
        let budgets = &self.share.budgets;
        let own = self.bytes.load(Relaxed).saturating_add(n);
        let conn_before = self.share.body_used.fetch_add(n, Relaxed);
        if conn_before.saturating_add(n) > budgets.body_per_connection {
            self.share.body_used.fetch_sub(n, Relaxed);
            budgets.refused_body.fetch_add(1, Relaxed);
            return Err(if own > budgets.body_per_connection {
                BodyMemoryFull::TooLarge(budgets.body_per_connection)
            } else {
                BodyMemoryFull::Busy
            });
        }
        let before = budgets.body_used.fetch_add(n, Relaxed);
        if before.saturating_add(n) > budgets.body_limit {
            budgets.body_used.fetch_sub(n, Relaxed);
            self.share.body_used.fetch_sub(n, Relaxed);
            budgets.refused_body.fetch_add(1, Relaxed);
            return Err(if own > budgets.body_limit {
                BodyMemoryFull::TooLarge(budgets.body_limit)
            } else {
                BodyMemoryFull::Busy
            });
        }
        self.bytes.fetch_add(n, Relaxed);
        Ok(())
    }

    /// Makes the request's charge at least `extent` bytes. The stages that hold a body
    /// hold the same bytes one after the other (`_method`, then media, then expiry), so
    /// a request is charged for the most any of them held, not for the sum.
    fn extend_to(&self, extent: u64) -> Result<(), BodyMemoryFull> {
        let held = self.bytes.load(Relaxed);
        if extent <= held { Ok(()) } else { self.take(extent - held) }
    }

    /// Bytes this request holds now.
    pub fn held(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let n = *self.bytes.get_mut();
        self.share.body_used.fetch_sub(n, Relaxed);
        self.share.budgets.body_used.fetch_sub(n, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A body whose first `up_to` bytes are charged as they are read (see
    /// [`RequestCtx::hold_body`](super::RequestCtx::hold_body)). Past a budget it yields
    /// [`BodyMemoryFull`], which every body reader answers as `503` (or `413`).
    pub struct HeldBody {
        #[pin]
        inner: Body,
        charge: Arc<Charge>,
        seen: u64,
        up_to: u64,
        failed: bool,
    }
}

impl HeldBody {
    pub(crate) fn new(inner: Body, charge: Arc<Charge>, up_to: u64) -> HeldBody {
        HeldBody { inner, charge, seen: 0, up_to, failed: false }
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && *this.seen < *this.up_to
        {
            *this.seen = this.seen.saturating_add(data.len() as u64);
            if let Err(e) = this.charge.extend_to((*this.seen).min(*this.up_to)) {
                *this.failed = true;
                return Poll::Ready(Some(Err(Box::new(e))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a held body whole, refusing more than `cap` bytes with `413`. Chunks that
/// arrive whole are kept as they are; only a body of several is copied once.
pub async fn read_whole(mut body: Body, cap: u64) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt as _;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| super::pipeline::body_error(&e))?;
        let Ok(data) = frame.into_data() else { continue };
        len += data.len() as u64;
        if len > cap {
            return Err(ProxyError::BodyTooLarge { limit: cap });
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    rest.reserve(f.len() + data.len());
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// `/metrics`: what the body budget holds and how often it turned a request away.
pub struct BudgetsView(pub Arc<Budgets>);

impl MetricsSource for BudgetsView {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let b = &self.0;
        out.push_str(
            "# HELP pavise_body_memory_bytes Request-body bytes held in memory before the instance has them (public.body_memory).\n",
        );
        out.push_str("# TYPE pavise_body_memory_bytes gauge\n");
        let _ = writeln!(out, "pavise_body_memory_bytes {}", b.body_used.load(Relaxed));
        out.push_str("# HELP pavise_body_memory_refused_total Requests turned away because a body budget was full.\n");
        out.push_str("# TYPE pavise_body_memory_refused_total counter\n");
        let _ = writeln!(out, "pavise_body_memory_refused_total {}", b.refused_body.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proxy::{boxed, full};

    fn budgets(total: u64, per_connection: u64) -> Arc<Budgets> {
        Arc::new(Budgets {
            body_limit: total,
            body_used: AtomicU64::new(0),
            body_per_connection: per_connection,
            streams_per_connection: 2,
            upstream_per_connection: 2,
            refused_body: AtomicU64::new(0),
        })
    }

    #[test]
    fn charges_come_back_when_the_request_is_done() {
        let b = budgets(100, 60);
        let (one, two) = (ConnShare::new(b.clone()), ConnShare::new(b.clone()));
        let a = Charge::new(one.clone());
        a.take(50).unwrap();
        // The same connection: its own budget is the limit, and waiting would help.
        let a2 = Charge::new(one.clone());
        assert!(matches!(a2.take(20), Err(BodyMemoryFull::Busy)));
        // Alone larger than a connection's budget: 413, not 503.
        assert!(matches!(a2.take(61), Err(BodyMemoryFull::TooLarge(60))));
        // Another connection: the relay's budget is the limit.
        let c = Charge::new(two.clone());
        c.take(50).unwrap();
        assert!(matches!(Charge::new(two.clone()).take(1), Err(BodyMemoryFull::Busy)));
        assert_eq!(b.body_held(), 100);
        drop((a, a2));
        assert_eq!(b.body_held(), 50);
        drop(c);
        assert_eq!(b.body_held(), 0);
        assert_eq!(one.body_used.load(Relaxed) + two.body_used.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_held_body_charges_its_first_bytes_and_fails_past_the_budget() {
        let b = budgets(1000, 1000);
        let share = ConnShare::new(b.clone());
        let charge = Charge::new(share.clone());
        let body = boxed(HeldBody::new(full(vec![b'x'; 600]), charge.clone(), 500));
        assert_eq!(read_whole(body, 10_000).await.unwrap().len(), 600);
        assert_eq!(charge.held(), 500, "only what the stage said it would hold");
        // The next stage holds the same bytes again: charged once.
        let body = boxed(HeldBody::new(full(vec![b'x'; 600]), charge.clone(), 600));
        read_whole(body, 10_000).await.unwrap();
        assert_eq!(charge.held(), 600);
        // Another request holds the rest of the budget: this one waits its turn (503).
        let other = Charge::new(share.clone());
        other.take(400).unwrap();
        let body = boxed(HeldBody::new(full(vec![b'x'; 700]), charge.clone(), u64::MAX));
        let err = read_whole(body, 10_000).await.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE, "{err}");
        // Alone larger than the budget: 413, waiting would not help.
        let body = boxed(HeldBody::new(full(vec![b'x'; 1200]), Charge::new(share.clone()), u64::MAX));
        assert_eq!(read_whole(body, 10_000).await.unwrap_err().status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        drop((charge, other));
        assert_eq!(b.body_held(), 0);
        // Over the reader's own cap: 413.
        let body = boxed(HeldBody::new(full(vec![b'x'; 600]), Charge::new(share), u64::MAX));
        assert_eq!(read_whole(body, 100).await.unwrap_err().status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn streams_and_upstream_requests_are_counted_per_connection() {
        let share = ConnShare::new(budgets(1, 1));
        let (a, b) = (share.open_stream().unwrap(), share.open_stream().unwrap());
        assert!(share.open_stream().is_none());
        drop(a);
        let _c = share.open_stream().unwrap();
        drop(b);
        let u = [share.start_upstream().unwrap(), share.start_upstream().unwrap()];
        assert!(share.start_upstream().is_none());
        drop(u);
        assert!(share.start_upstream().is_some());
    }
}
