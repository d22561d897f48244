//! Streaming (Server-Sent Events): an `update` (or `status.update`, `notification`,
//! `conversation`) event that carries a hidden post is dropped from the stream.
//!
//! The stream is long-lived and a post may become hidden in the middle of it, so every
//! streaming answer is wrapped ([`SseFilter`]); while nothing is hidden, a chunk that ends
//! on an event boundary passes as it came, without a copy. Otherwise chunks are split into
//! events (a blank line ends one: `\n\n`, `\r\n\r\n` or `\r\r`), and an event is looked at
//! closely only when it mentions an indexed id at all.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::{filter, index::HiddenIndex, json};
use crate::{
    proxy::contract::{Body, BoxError},
    store::now_ms,
};

/// An event larger than this is not held back: it is passed on as it is (a stream that
/// never ends an event would otherwise grow without bound).
const MAX_EVENT: usize = 4 << 20;

pin_project_lite::pin_project! {
    /// A streaming body with hidden posts' events taken out.
    pub struct SseFilter {
        #[pin]
        inner: Body,
        index: Arc<HiddenIndex>,
        buf: BytesMut,
        out: VecDeque<Bytes>,
        done: bool,
    }
}

impl SseFilter {
    pub fn new(inner: Body, index: Arc<HiddenIndex>) -> SseFilter {
        SseFilter { inner, index, buf: BytesMut::new(), out: VecDeque::new(), done: false }
    }
}

/// Where the first event in `buf` ends (after its blank line), if it is complete.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' if buf.get(i + 1) == Some(&b'\n') => return Some(i + 2),
            b'\r' if buf.get(i + 1..i + 4) == Some(b"\n\r\n") => return Some(i + 4),
            b'\r' if buf.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            _ => i += 1,
        }
    }
    None
}

fn ends_on_boundary(chunk: &[u8]) -> bool {
    chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\r")
}

/// Whether one event (its raw text) carries a hidden post.
pub fn event_is_hidden(event: &[u8], index: &HiddenIndex) -> bool {
    if !index.mentions_any(event) {
        return false;
    }
    let text = String::from_utf8_lossy(event);
    let mut data = String::new();
    for line in text.split(['\n', '\r']) {
        if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    let hidden = index.hidden_at(now_ms());
    match json::parse(data.as_bytes()) {
        Ok(node) => filter::mastodon_hidden(data.as_bytes(), &node, &hidden),
        // Not JSON (a `delete` event's bare id, a comment): nothing is carried.
        Err(_) => false,
    }
}

impl http_body::Body for SseFilter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(chunk) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if *this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                // An unfinished last event: judge it as it is.
                let rest = this.buf.split().freeze();
                if !event_is_hidden(&rest, this.index) {
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                continue;
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    if this.buf.is_empty() && this.index.is_empty() && ends_on_boundary(&frame) {
                        return Poll::Ready(Some(Ok(Frame::data(frame))));
                    }
                    this.buf.extend_from_slice(&frame);
                    while let Some(end) = event_end(this.buf) {
                        let event = this.buf.split_to(end).freeze();
                        if !event_is_hidden(&event, this.index) {
                            this.out.push_back(event);
                        }
                    }
                    if this.buf.len() > MAX_EVENT {
                        this.out.push_back(this.buf.split().freeze());
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.buf.is_empty() && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    fn status(id: &str) -> String {
        format!(
            r#"{{"id":"{id}","uri":"https://i.example/users/a/statuses/{id}","visibility":"public","reblog":null}}"#
        )
    }

    #[tokio::test]
    async fn hidden_updates_leave_the_stream_in_any_chunking() {
        let h = "110000000000000001";
        let stream = format!(
            ":)\n\nevent: update\ndata: {}\n\nevent: update\r\ndata: {}\r\n\r\nevent: notification\ndata: {{\"id\":\"9\",\"type\":\"mention\",\"status\":{}}}\n\nevent: delete\ndata: {h}\n\nevent: update\ndata: {}\n\n",
            status("5"),
            status(h),
            status(h),
            status("6")
        );
        for chunk in [1usize, 7, 64, stream.len()] {
            let index = Arc::new(HiddenIndex::default());
            index.insert(h, 0);
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
                stream.as_bytes().chunks(chunk).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            let body =
                crate::proxy::contract::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(chunks)));
            let out = SseFilter::new(body, index).collect().await.unwrap().to_bytes();
            let out = String::from_utf8(out.to_vec()).unwrap();
            assert!(out.contains(&status("5")) && out.contains(&status("6")), "{chunk}: {out}");
            assert!(!out.contains(&status(h)), "{chunk}: {out}");
            assert!(out.contains(&format!("event: delete\ndata: {h}")), "the deletion notice itself stays");
            assert!(out.starts_with(":)\n\n"));
        }
    }

    #[tokio::test]
    async fn nothing_hidden_means_chunks_pass_as_they_came() {
        let index = Arc::new(HiddenIndex::default());
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"event: update\ndata: {}\n\n")))];
        let body = crate::proxy::contract::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(chunks)));
        let out = SseFilter::new(body, index).collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"event: update\ndata: {}\n\n");
    }
}
