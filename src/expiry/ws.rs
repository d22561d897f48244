//! Streaming over WebSocket: a message that carries a hidden post is dropped on its way
//! from the instance to the client.
//!
//! Mastodon's streaming server sends one text message per event, `{"stream": [...],
//! "event": "update", "payload": "<the Status as a JSON string>"}`. The tunnel the upstream
//! splices is byte-level, so [`Filtered`] wraps the instance's side of it: reads are cut
//! into frames (RFC 6455 §5.2), control frames pass at once, a text message (its
//! fragments held until the last one) passes unless its payload carries a hidden post, and
//! writes (client → instance) pass untouched. The expiry stage asks for no compression
//! (it removes `Sec-WebSocket-Extensions` from the upgrade), so payloads are readable; a
//! compressed frame (RSV1) is refused, which ends the tunnel, rather than passed unread.
//!
//! The hook is one call where the upstream splices a tunnel ([`Filter`]); without an index
//! (expiry off) the wrapper reads straight through.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{filter, index::HiddenIndex, json};
use crate::{proxy::contract::RequestCtx, store::now_ms};

/// Frames and messages larger than this end the tunnel (Mastodon's are a few KiB).
const MAX_MESSAGE: usize = 16 << 20;

/// What the expiry stage leaves in the request context for a streaming upgrade.
#[derive(Clone)]
pub struct WsTap(pub Arc<HiddenIndex>);

/// The hook the upstream's tunnel calls: taken from the request context while the
/// request is still there, applied to the instance's side once both sides have switched.
pub struct Filter(Option<Arc<HiddenIndex>>);

impl Filter {
    pub fn of(ctx: &RequestCtx) -> Filter {
        Filter(ctx.extensions.get::<WsTap>().map(|t| t.0.clone()))
    }

    /// The instance's side of the tunnel, filtered when the request asked for it.
    pub fn wrap<IO>(self, upstream: IO) -> Filtered<IO> {
        Filtered::new(upstream, self.0)
    }
}

/// An IO whose reads are filtered frame by frame.
pub struct Filtered<IO> {
    inner: IO,
    index: Option<Arc<HiddenIndex>>,
    /// Bytes read from the instance, not yet cut into frames.
    input: BytesMut,
    /// Frames ready for the client.
    output: BytesMut,
    /// The frames of a fragmented message so far, and its payload.
    held: Option<(BytesMut, Vec<u8>)>,
    eof: bool,
}

impl<IO> Filtered<IO> {
    pub fn new(inner: IO, index: Option<Arc<HiddenIndex>>) -> Filtered<IO> {
        Filtered { inner, index, input: BytesMut::new(), output: BytesMut::new(), held: None, eof: false }
    }
}

/// One frame's head, parsed.
struct Head {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    /// Where the payload starts and how long it is.
    payload: usize,
    len: usize,
    mask: Option<[u8; 4]>,
}

fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else { return Ok(None) };
            (usize::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else { return Ok(None) };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (usize::try_from(u64::from_be_bytes(a)).unwrap_or(usize::MAX), 10)
        }
        n => (usize::from(n), 2),
    };
    if len > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "websocket frame over the filter's limit"));
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else { return Ok(None) };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Head { fin: b0 & 0x80 != 0, rsv1: b0 & 0x40 != 0, opcode: b0 & 0x0f, payload: at, len, mask }))
}

/// Whether one text message (its whole payload) carries a hidden post.
pub fn message_is_hidden(payload: &[u8], index: &HiddenIndex) -> bool {
    if !index.mentions_any(payload) {
        return false;
    }
    let Ok(outer) = json::parse(payload) else { return false };
    let hidden = index.hidden_at(now_ms());
    match outer.get(payload, "payload") {
        // Mastodon: the event's entity, itself JSON, inside a string.
        Some(inner @ json::Node::String(_)) => {
            let text = inner.as_str(payload).unwrap_or_default().into_owned();
            json::parse(text.as_bytes()).is_ok_and(|node| filter::mastodon_hidden(text.as_bytes(), &node, &hidden))
        }
        Some(node @ json::Node::Object { .. }) => filter::mastodon_hidden(payload, node, &hidden),
        _ => filter::mastodon_hidden(payload, &outer, &hidden),
    }
}

impl<IO> Filtered<IO> {
    /// Cuts complete frames off `input` into `output` (or into the held message).
    fn cut_frames(&mut self, index: &HiddenIndex) -> io::Result<()> {
        while let Some(head) = parse_head(&self.input)? {
            let total = head.payload + head.len;
            if self.input.len() < total {
                break;
            }
            let frame = self.input.split_to(total);
            if head.opcode >= 8 {
                // Control frames (close, ping, pong) may come between fragments: at once.
                self.output.extend_from_slice(&frame);
                continue;
            }
            if head.rsv1 && !index.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a compressed websocket frame cannot be filtered",
                ));
            }
            let mut payload = frame[head.payload..].to_vec();
            if let Some(mask) = head.mask {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            let (frames, message, is_text) = match (head.opcode, self.held.take()) {
                (0, Some((mut frames, mut message))) => {
                    frames.extend_from_slice(&frame);
                    message.extend_from_slice(&payload);
                    (frames, message, true)
                }
                (0, None) => (frame, payload, false),
                (op, _) => (frame, payload, op == 1),
            };
            if !head.fin {
                if frames.len() > MAX_MESSAGE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "websocket message over the filter's limit",
                    ));
                }
                // A text message is held to its end only while something is hidden; one
                // begun with nothing hidden passes fragment by fragment, as it came.
                if is_text && (head.opcode == 0 || !index.is_empty()) {
                    self.held = Some((frames, message));
                } else {
                    self.output.extend_from_slice(&frames);
                }
                continue;
            }
            if !(is_text && message_is_hidden(&message, index)) {
                self.output.extend_from_slice(&frames);
            }
        }
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Filtered<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(index) = this.index.clone() else { return Pin::new(&mut this.inner).poll_read(cx, buf) };
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // The instance closed mid-frame: what is left is not a frame to judge.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    this.cut_frames(&index)?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Filtered<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn event(id: &str) -> String {
        let status =
            format!(r#"{{"id":"{id}","uri":"u","visibility":"public","reblog":null,"content":"{}"}}"#, "x".repeat(200));
        serde_json::json!({"stream": ["user"], "event": "update", "payload": status}).to_string()
    }

    async fn through(wire: Vec<u8>, index: Option<Arc<HiddenIndex>>) -> Vec<u8> {
        let (mut instance, relay_side) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(5) {
                instance.write_all(piece).await.unwrap();
            }
            instance.shutdown().await.unwrap();
        });
        let mut filtered = Filtered::new(relay_side, index);
        let mut out = Vec::new();
        filtered.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn hidden_messages_are_dropped_whole_and_the_rest_pass_byte_for_byte() {
        let h = "110000000000000001";
        let keep = frame(true, 1, event("5").as_bytes());
        let hidden = frame(true, 1, event(h).as_bytes());
        let ping = frame(true, 9, b"p");
        // A fragmented hidden message with a ping between its fragments.
        let e = event(h);
        let (a, b) = e.as_bytes().split_at(40);
        let mut wire = Vec::new();
        wire.extend_from_slice(&keep);
        wire.extend_from_slice(&hidden);
        wire.extend_from_slice(&frame(false, 1, a));
        wire.extend_from_slice(&ping);
        wire.extend_from_slice(&frame(true, 0, b));
        wire.extend_from_slice(&frame(
            true,
            1,
            br#"{"stream":["user"],"event":"delete","payload":"110000000000000001"}"#,
        ));
        wire.extend_from_slice(&frame(true, 2, &[0, 1, 2]));
        let index = Arc::new(HiddenIndex::default());
        index.insert(h, 0);
        let out = through(wire.clone(), Some(index)).await;
        let mut expected = keep.clone();
        expected.extend_from_slice(&ping);
        expected.extend_from_slice(&frame(
            true,
            1,
            br#"{"stream":["user"],"event":"delete","payload":"110000000000000001"}"#,
        ));
        expected.extend_from_slice(&frame(true, 2, &[0, 1, 2]));
        assert_eq!(out, expected);

        // Nothing hidden (and no tap at all): everything, unchanged.
        assert_eq!(through(wire.clone(), Some(Arc::new(HiddenIndex::default()))).await, wire);
        assert_eq!(through(wire.clone(), None).await, wire);
    }

    #[tokio::test]
    async fn long_frames_and_limits() {
        let h = "110000000000000001";
        let index = Arc::new(HiddenIndex::default());
        index.insert(h, 0);
        let big = frame(true, 1, event(&"7".repeat(18)).repeat(400).as_bytes());
        assert!(big.len() > 0xffff, "a 64-bit length");
        assert_eq!(through(big.clone(), Some(index.clone())).await, big);
        let mut compressed = frame(true, 1, b"x");
        compressed[0] |= 0x40;
        let (mut instance, relay_side) = tokio::io::duplex(64);
        instance.write_all(&compressed).await.unwrap();
        drop(instance);
        let mut out = Vec::new();
        assert!(
            Filtered::new(relay_side, Some(index)).read_to_end(&mut out).await.is_err(),
            "refused, not passed unread"
        );
    }
}
