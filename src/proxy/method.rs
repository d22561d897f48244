//! The method Rails dispatches: Rack::MethodOverride, read the way Rack reads it.
//!
//! Every Rails app runs Rack::MethodOverride: a POST whose form body carries
//! `_method=get` (or whose `X-HTTP-Method-Override` header says so) is dispatched as a
//! GET. A relay that classified by the wire method alone would see a harmless POST where
//! Rails sees a read: `POST /api/v1/statuses/123` with `_method=get` would serve an
//! expired post, `_method=put` an edit pavise never learnt of.
//!
//! What pavise does, so the method it acts on is the one Rails dispatches:
//! - the header is removed on entry ([`super::hop::clean_request_head`]), together with
//!   every `_`-named header Rack would fold into the same CGI name;
//! - on routes where the method changes what pavise does ([`Route::method_sensitive`]:
//!   they name a status or the status collection), a POST whose body Rack parses as a form
//!   is read here, at most [`MAX_READ`] bytes of it, charged to the relay's body budget
//!   (red-team F1: reading it whole, up to the route's 16 MiB cap, let two HTTP/2
//!   connections hold a gigabyte before any stage ran):
//!   - `application/x-www-form-urlencoded`, or no `Content-Type` at all (Rack parses a
//!     type-less POST body as a form too): `_method` is decoded as Rack decodes it (the
//!     last one wins, `+` and `%XX`, Ruby's Unicode `upcase`, so `poſt` is POST), and
//!     the request is classified and handed to the stages with that method. The wire
//!     method and the body reach the instance unchanged;
//!   - `multipart/form-data`, `multipart/mixed`, `multipart/related`: a `_method` field
//!     is refused with a 400 (such bodies are never sent to these routes by real
//!     clients, and reading one the way Rack's multipart parser does is a parser of its
//!     own);
//!   - a body Rack 2 and Rack 3 would read differently (a trailing NUL, bracketed
//!     `[_method]` keys) is refused with a 400 rather than guessed at;
//!   - a body longer than [`MAX_READ`] (a long post from a form-posting client) is not
//!     held: the stages see the wire method, and the body streams on through a [`Scan`]
//!     that reads it the same way, byte by byte (urlencoded: [`FormScan`]; multipart:
//!     any `_method` however quoted or escaped, and the urlencoded fallback reading),
//!     and holds back its last chunk until the end: if the whole body turns out to carry
//!     a `_method` override, the body fails (400) before its last byte reaches the
//!     instance, so Rails never dispatches it (Puma waits for the whole body).
//! - everywhere else the route class is the same whatever the method (or pavise's reading
//!   is the stricter one: an inbox POST overridden into a GET is still checked as an
//!   inbox delivery), and the body streams through unread.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{Body, BoxError, ProxyError, Request, RequestCtx, boxed, full, pipeline::body_error};

/// The most of a form body read (and held) before the stages run: a real `_method` form
/// is a few bytes, a status form a few KiB.
pub const MAX_READ: usize = 64 * 1024;

/// Rack::MethodOverride::HTTP_METHODS: what `_method` may turn a POST into.
const OVERRIDABLE: [&str; 9] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "LINK", "UNLINK"];

/// How Rack would parse a POST body, by its media type (Rack's `form_data?` and
/// `parseable_data?`: the type before any `;` or `,`, trimmed, lower-cased).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormKind {
    UrlEncoded,
    Multipart,
    NotAForm,
}

fn form_kind(content_type: Option<&[u8]>) -> FormKind {
    let Some(raw) = content_type else { return FormKind::UrlEncoded };
    let end = raw.iter().position(|b| *b == b';' || *b == b',').unwrap_or(raw.len());
    let media = raw[..end].trim_ascii();
    if media.is_empty() {
        return FormKind::UrlEncoded;
    }
    if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
        FormKind::UrlEncoded
    } else if [b"multipart/form-data".as_slice(), b"multipart/mixed", b"multipart/related"]
        .iter()
        .any(|t| media.eq_ignore_ascii_case(t))
    {
        FormKind::Multipart
    } else {
        FormKind::NotAForm
    }
}

/// What a form body says about the method.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// Rack keeps the wire method.
    Keep,
    /// Rack dispatches this method instead.
    Override(Method),
    /// Rack versions (or Rack and pavise) could disagree: refuse.
    Ambiguous(&'static str),
}

/// Reads `_method` from a POST's form body where it matters. Returns the request (with
/// what was read put back in front of the rest of its body) and the method Rails will
/// dispatch, when that differs from the wire method.
pub async fn resolve(ctx: &mut RequestCtx, req: Request) -> Result<(Request, Option<Method>), ProxyError> {
    if req.method() != Method::POST || !ctx.route.method_sensitive() {
        return Ok((req, None));
    }
    let kind = form_kind(req.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()));
    if kind == FormKind::NotAForm || http_body::Body::is_end_stream(req.body()) {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let mut body = ctx.hold_body(body, MAX_READ as u64);
    let mut head: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    while len < MAX_READ {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(body_error(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    head.push_back(data);
                }
            }
        }
    }
    if !body.is_end_stream() && len >= MAX_READ {
        // A long body: it is not held, it is read on its way through.
        let mut scan = Scan::new(kind);
        for chunk in &head {
            scan.feed(chunk);
        }
        let body = boxed(Scanned { head, rest: body, scan, last: None, done: false });
        return Ok((Request::from_parts(parts, body), None));
    }
    let bytes = match head.len() {
        0 => Bytes::new(),
        1 => head.pop_front().unwrap_or_default(),
        _ => {
            let mut whole = Vec::with_capacity(len);
            for chunk in &head {
                whole.extend_from_slice(chunk);
            }
            Bytes::from(whole)
        }
    };
    let reading = match kind {
        FormKind::UrlEncoded => read_urlencoded(&bytes),
        FormKind::Multipart => read_multipart_or_fallback(&bytes),
        FormKind::NotAForm => Reading::Keep,
    };
    let req = Request::from_parts(parts, full(bytes));
    match reading {
        Reading::Keep => Ok((req, None)),
        Reading::Override(m) if m == Method::POST => Ok((req, None)),
        Reading::Override(m) => Ok((req, Some(m))),
        Reading::Ambiguous(why) => Err(ProxyError::BadRequest(format!(
            "{why}; send the request with its real method instead of a `_method` form field"
        ))),
    }
}

/// A long form body on a method-sensitive route turned out to carry a `_method`
/// override (or one Rack versions read differently): the request is refused before
/// the instance has the whole body.
#[derive(Debug, thiserror::Error)]
#[error(
    "a `_method` field in a form body of more than 64 KiB is not accepted on this route; send the request with its real method"
)]
pub struct LongFormOverride;

pin_project_lite::pin_project! {
    /// The chunks read so far, then the rest of the body, through a [`FormScan`]; the
    /// last chunk is held back until the scan has seen the end.
    struct Scanned {
        head: VecDeque<Bytes>,
        #[pin]
        rest: Body,
        scan: Scan,
        last: Option<Bytes>,
        done: bool,
    }
}

impl http_body::Body for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(this.last.take().map(|b| Ok(Frame::data(b))));
            }
            // The head was scanned when it was read; it is only passed on.
            let next = match this.head.pop_front() {
                Some(chunk) => Some(chunk),
                None => match this.rest.as_mut().poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            this.scan.feed(&data);
                            Some(data)
                        }
                        // Trailers: Rack never reads them.
                        Err(_) => continue,
                    },
                    Poll::Ready(None) => None,
                },
            };
            match next {
                Some(chunk) if chunk.is_empty() => continue,
                Some(chunk) => {
                    if let Some(previous) = this.last.replace(chunk) {
                        return Poll::Ready(Some(Ok(Frame::data(previous))));
                    }
                }
                None => {
                    *this.done = true;
                    match this.scan.clone().finish() {
                        Reading::Keep => {}
                        Reading::Override(m) if m == Method::POST => {}
                        Reading::Override(_) | Reading::Ambiguous(_) => {
                            this.last.take();
                            return Poll::Ready(Some(Err(Box::new(LongFormOverride))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.last.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.head.iter().chain(self.last.iter()).map(|c| c.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

/// How a long form body is read on its way through (see the module docs).
#[derive(Debug, Clone)]
pub enum Scan {
    UrlEncoded(FormScan),
    /// Any `_method` in the multipart body (however quoted, escaped or percent-encoded:
    /// a superset of the fields Rack's parser would name so), and the urlencoded reading
    /// Rack falls back to when the boundary is unusable.
    Multipart(NameScan, FormScan),
}

impl Scan {
    fn new(kind: FormKind) -> Scan {
        match kind {
            FormKind::Multipart => Scan::Multipart(NameScan::default(), FormScan::default()),
            _ => Scan::UrlEncoded(FormScan::default()),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        match self {
            Scan::UrlEncoded(form) => form.feed(bytes),
            Scan::Multipart(names, form) => {
                names.feed(bytes);
                form.feed(bytes);
            }
        }
    }

    fn finish(self) -> Reading {
        match self {
            Scan::UrlEncoded(form) => form.finish(),
            Scan::Multipart(names, _) if names.found => {
                Reading::Ambiguous("a multipart `_method` field is not accepted on this route")
            }
            Scan::Multipart(_, form) => match form.finish() {
                Reading::Keep => Reading::Keep,
                _ => Reading::Ambiguous("a `_method` in a multipart body is not accepted on this route"),
            },
        }
    }
}

/// Whether `_method` occurs anywhere in a body read as [`read_multipart`] reads field
/// names (lower-cased, `\` and `"` dropped, `%XX` decoded as in `name*=`), in constant
/// memory. A superset of what that parser matches: text that merely mentions `_method`
/// counts too, which only a body over 64 KiB on a status route can be refused for.
#[derive(Debug, Clone, Default)]
pub struct NameScan {
    pct: u8,
    hi: u8,
    window: [u8; 7],
    found: bool,
}

impl NameScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let b = b.to_ascii_lowercase();
            if b == b'\\' || b == b'"' {
                continue;
            }
            match (self.pct, hex(b)) {
                (1, Some(h)) => {
                    self.hi = h;
                    self.pct = 2;
                }
                (2, Some(lo)) => {
                    self.pct = 0;
                    self.push((self.hi * 16 + lo).to_ascii_lowercase());
                }
                (0, _) if b == b'%' => self.pct = 1,
                (pending, _) => {
                    // Not an escape after all: the `%` (and its digit) stand for themselves.
                    if pending >= 1 {
                        self.push(b'%');
                    }
                    if pending == 2 {
                        let digit = b"0123456789abcdef"[usize::from(self.hi)];
                        self.push(digit);
                    }
                    self.pct = 0;
                    if b == b'%' {
                        self.pct = 1;
                    } else {
                        self.push(b);
                    }
                }
            }
        }
    }

    fn push(&mut self, c: u8) {
        self.window.rotate_left(1);
        self.window[6] = c;
        if &self.window == METHOD_KEY {
            self.found = true;
        }
    }
}

/// [`read_urlencoded`], one byte at a time, in constant memory: what Rack would make of
/// `_method` in a body too long to hold. Its verdict equals [`read_urlencoded`]'s on the
/// same bytes however they are split (a unit test compares the two).
#[derive(Debug, Clone, Default)]
pub struct FormScan {
    /// The byte not yet stepped: the last one matters twice (Rack 2 drops a final NUL).
    pending: Option<u8>,
    pair: PairScan,
    /// The first decisive event in pair order (a bad `%` anywhere: Keep; a key around
    /// `_method`: Ambiguous).
    outcome: Option<Reading>,
    /// The last `_method` pair's value: `None` for a bare key.
    last: Option<Option<MethodValue>>,
}

/// The state inside one `&`-separated pair.
#[derive(Debug, Clone)]
struct PairScan {
    started: bool,
    in_value: bool,
    /// A `%` seen (1), or a `%` and one hex digit (2, with `hi`).
    pct: u8,
    hi: u8,
    bad: bool,
    key_len: usize,
    key_is_method_so_far: bool,
    window: [u8; 7],
    key_contains_method: bool,
    key_is_method: bool,
    value: MethodValue,
}

/// A `_method` value, as long as it could still name a method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MethodValue {
    bytes: Vec<u8>,
    too_long: bool,
}

const METHOD_KEY: &[u8; 7] = b"_method";
/// Longer than any overridable method, even spelled with ligatures.
const MAX_METHOD_VALUE: usize = 32;

impl FormScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(previous) = self.pending.replace(b) {
                self.step(previous);
            }
        }
    }

    /// The verdict on everything fed, as [`read_urlencoded`] would give it.
    fn finish(mut self) -> Reading {
        let Some(last) = self.pending.take() else { return self.end() };
        let mut rack3 = self.clone();
        rack3.step(last);
        let with_nul = rack3.end();
        if last == 0 {
            let stripped = self.end();
            if stripped != with_nul {
                return Reading::Ambiguous("a form body ending in NUL reads differently in Rack 2 and Rack 3");
            }
        }
        with_nul
    }

    fn step(&mut self, b: u8) {
        let p = &mut self.pair;
        if !p.started && b == b' ' {
            return;
        }
        if b == b'&' {
            self.end_pair();
            return;
        }
        p.started = true;
        if !p.in_value && b == b'=' {
            p.end_key();
            p.in_value = true;
            return;
        }
        let decoded = match (p.pct, b) {
            (1, b) => match hex(b) {
                Some(h) => {
                    p.hi = h;
                    p.pct = 2;
                    return;
                }
                None => {
                    p.bad = true;
                    p.pct = 0;
                    return;
                }
            },
            (2, b) => {
                p.pct = 0;
                match hex(b) {
                    Some(lo) => p.hi * 16 + lo,
                    None => {
                        p.bad = true;
                        return;
                    }
                }
            }
            (_, b'%') => {
                p.pct = 1;
                return;
            }
            (_, b'+') => b' ',
            (_, b) => b,
        };
        if p.in_value {
            if p.key_is_method {
                if p.value.bytes.len() < MAX_METHOD_VALUE {
                    p.value.bytes.push(decoded);
                } else {
                    p.value.too_long = true;
                }
            }
        } else {
            p.key_len += 1;
            p.key_is_method_so_far &= p.key_len <= 7 && METHOD_KEY[p.key_len - 1] == decoded;
            p.window.rotate_left(1);
            p.window[6] = decoded;
            if p.key_len >= 7 && &p.window == METHOD_KEY {
                p.key_contains_method = true;
            }
        }
    }

    fn end_pair(&mut self) {
        let mut p = std::mem::take(&mut self.pair);
        if !p.started {
            return;
        }
        if !p.in_value {
            p.end_key();
        }
        if p.pct != 0 {
            p.bad = true;
        }
        if self.outcome.is_some() {
            return;
        }
        if p.bad {
            // One bad escape fails Rack's whole parse: the wire method stands.
            self.outcome = Some(Reading::Keep);
        } else if p.key_is_method {
            self.last = Some(p.in_value.then_some(p.value));
        } else if p.key_contains_method {
            self.outcome =
                Some(Reading::Ambiguous("a form key around `_method` reads differently in Rack 2 and Rack 3"));
        }
    }

    fn end(mut self) -> Reading {
        self.end_pair();
        if let Some(outcome) = self.outcome {
            return outcome;
        }
        match self.last.flatten() {
            Some(v) if !v.too_long => match ruby_upcase(&v.bytes) {
                Some(m) if OVERRIDABLE.contains(&m.as_str()) => {
                    Method::from_bytes(m.as_bytes()).map_or(Reading::Keep, Reading::Override)
                }
                _ => Reading::Keep,
            },
            _ => Reading::Keep,
        }
    }
}

impl PairScan {
    fn end_key(&mut self) {
        if self.pct != 0 {
            self.bad = true;
            self.pct = 0;
        }
        self.key_is_method = self.key_is_method_so_far && self.key_len == 7;
    }
}

impl Default for PairScan {
    fn default() -> Self {
        PairScan {
            started: false,
            in_value: false,
            pct: 0,
            hi: 0,
            bad: false,
            key_len: 0,
            // Every key starts as a prefix of `_method`.
            key_is_method_so_far: true,
            window: [0; 7],
            key_contains_method: false,
            key_is_method: false,
            value: MethodValue::default(),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `application/x-www-form-urlencoded` as Rack reads `req.POST["_method"]`.
fn read_urlencoded(body: &Bytes) -> Reading {
    // Rack 2 drops one trailing NUL before parsing (an old Safari quirk); Rack 3 does not.
    let with_nul = read_pairs(body);
    match body.strip_suffix(b"\0") {
        Some(stripped) if read_pairs(stripped) != with_nul => {
            Reading::Ambiguous("a form body ending in NUL reads differently in Rack 2 and Rack 3")
        }
        _ => with_nul,
    }
}

fn read_pairs(body: &[u8]) -> Reading {
    let mut value: Option<Option<Vec<u8>>> = None;
    // Both Rack 2 and Rack 3 split on `& *`: spaces after an `&` are not part of the key.
    for pair in body.split(|b| *b == b'&').map(|p| &p[p.iter().take_while(|b| **b == b' ').count()..]) {
        if pair.is_empty() {
            continue;
        }
        let (key, val) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], Some(&pair[i + 1..])),
            None => (pair, None),
        };
        // One bad `%` anywhere fails Rack's whole parse: MethodOverride rescues it and
        // keeps the wire method.
        let Some(key) = form_decode_bytes(key) else { return Reading::Keep };
        let val = match val.map(form_decode_bytes) {
            Some(None) => return Reading::Keep,
            Some(Some(v)) => Some(v),
            None => None,
        };
        if key == b"_method" {
            value = Some(val);
        } else if key.windows(7).any(|w| w == b"_method") {
            // Rack 2 reads `[_method]` as `_method`, Rack 3 as a key of its own.
            return Reading::Ambiguous("a form key around `_method` reads differently in Rack 2 and Rack 3");
        }
    }
    match value.flatten() {
        Some(v) => match ruby_upcase(&v) {
            Some(m) if OVERRIDABLE.contains(&m.as_str()) => {
                Method::from_bytes(m.as_bytes()).map_or(Reading::Keep, Reading::Override)
            }
            _ => Reading::Keep,
        },
        None => Reading::Keep,
    }
}

/// A multipart body with a field named `_method` (however its `name=` is quoted or
/// escaped, or given RFC 5987-style) is refused; one without keeps the wire method.
fn read_multipart(body: &Bytes) -> Reading {
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    while let Some(i) = find(&lower[at..], b"name") {
        let start = at + i + 4;
        at = start;
        let rest = &lower[start..];
        let (extended, rest) = match rest.strip_prefix(b"*") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let Some(rest) = rest.trim_ascii_start().strip_prefix(b"=") else { continue };
        let value: Vec<u8> = rest
            .trim_ascii_start()
            .iter()
            .copied()
            .filter(|b| *b != b'\\' && *b != b'"')
            .take_while(|b| !matches!(b, b';' | b'\r' | b'\n' | b' ' | b'\t'))
            .collect();
        let named = if extended {
            form_decode_bytes(&value).is_some_and(|v| v.windows(7).any(|w| w == b"_method"))
        } else {
            value == b"_method"
        };
        if named {
            return Reading::Ambiguous("a multipart `_method` field is not accepted on this route");
        }
    }
    Reading::Keep
}

/// A multipart type without a usable boundary is parsed by Rack as urlencoded instead
/// (`parse_multipart` gives up, `req.POST` reads the body as a query string): a
/// `_method` in either reading is refused.
fn read_multipart_or_fallback(body: &Bytes) -> Reading {
    match read_multipart(body) {
        Reading::Keep => match read_urlencoded(body) {
            Reading::Keep => Reading::Keep,
            _ => Reading::Ambiguous("a `_method` in a multipart body is not accepted on this route"),
        },
        refused => refused,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `URI.decode_www_form_component`, strictly: `+` is a space, `%XX` a byte, and a `%`
/// not followed by two hex digits fails.
fn form_decode_bytes(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let hi = raw.get(i + 1).copied().and_then(hex)?;
                let lo = raw.get(i + 2).copied().and_then(hex)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// [`form_decode_bytes`] of a query component, for the route classifier.
pub(crate) fn form_decode(raw: &str) -> Option<Vec<u8>> {
    form_decode_bytes(raw.as_bytes())
}

/// Ruby's `String#upcase` (full Unicode case mapping), as far as it can produce one of
/// the ASCII method names: ASCII letters, and the few non-ASCII letters whose upper case
/// is ASCII (`ı` → I, `ſ` → S, the Latin ligatures `ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ`). `None` for bytes
/// that are not UTF-8 (`upcase` raises, and MethodOverride keeps the wire method).
fn ruby_upcase(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'ı' => out.push('I'),
            'ſ' => out.push('S'),
            'ﬀ' => out.push_str("FF"),
            'ﬁ' => out.push_str("FI"),
            'ﬂ' => out.push_str("FL"),
            'ﬃ' => out.push_str("FFI"),
            'ﬄ' => out.push_str("FFL"),
            'ﬅ' | 'ﬆ' => out.push_str("ST"),
            c => out.push(c.to_ascii_uppercase()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn url(body: &str) -> Reading {
        read_urlencoded(&Bytes::from(body.to_owned()))
    }

    #[test]
    fn urlencoded_method_as_rack_reads_it() {
        assert_eq!(url("status=hi&_method=get"), Reading::Override(Method::GET));
        assert_eq!(url("_method=delete"), Reading::Override(Method::DELETE));
        assert_eq!(url("%5Fmethod=pUt"), Reading::Override(Method::PUT));
        assert_eq!(url("_method=get&_method=patch"), Reading::Override(Method::PATCH), "the last one wins");
        assert_eq!(url("_method=%67%65%74"), Reading::Override(Method::GET));
        assert_eq!(url("_method=po%C5%BFt"), Reading::Override(Method::POST), "ſ upcases to S");
        assert_eq!(url("_method=opt%C4%B1ons"), Reading::Override(Method::OPTIONS), "ı upcases to I");
        assert_eq!(url("_method=po%EF%AC%86"), Reading::Override(Method::POST), "ﬆ upcases to ST");
        assert_eq!(url("_method=get&_method"), Reading::Keep, "a bare key resets it to nil");
        assert_eq!(url("_method=trace"), Reading::Keep, "not an overridable method");
        assert_eq!(url("_method=+get"), Reading::Keep, "a space is part of the value");
        assert_eq!(url("_method=%ff"), Reading::Keep, "not UTF-8: upcase raises");
        assert_eq!(url("_method=get&x=%zz"), Reading::Keep, "one bad escape fails the whole parse");
        assert!(matches!(url("_methods=get&x_method_y=1"), Reading::Ambiguous(_)), "keys around _method are refused");
        assert!(matches!(url("[_method]=get"), Reading::Ambiguous(_)));
        assert!(matches!(url("_method=get\0"), Reading::Ambiguous(_)), "Rack 2 strips the NUL, Rack 3 does not");
        assert_eq!(url("status=hi\0"), Reading::Keep);
        assert_eq!(url("a=1&  _method=delete"), Reading::Override(Method::DELETE), "`& *` is the separator");
    }

    /// The streaming reading agrees with the whole-body one on every body, however it is
    /// split: bodies drawn from the bytes that matter (`_method` and its escapes, `&`,
    /// `=`, spaces, `%`, `+`, NUL, method letters, a ligature), split at random points.
    #[test]
    fn the_streaming_scan_reads_every_body_as_the_whole_body_reading_does() {
        const PIECES: &[&str] = &[
            "_method",
            "%5Fmethod",
            "%5fmethod",
            "_%6Dethod",
            "_method_",
            "x_method",
            "[_method]",
            "=",
            "=",
            "&",
            "&",
            " ",
            "%",
            "%zz",
            "%4",
            "+",
            "\0",
            "get",
            "GeT",
            "delete",
            "put",
            "po%C5%BFt",
            "%EF%AC%86",
            "x",
            "status=hi",
            "%67%65%74",
            "trace",
            "%ff",
            "%00",
            "&_method=get",
            "_method=delete",
            "&%5Fmethod=PuT",
            "&  _method=patch",
            "&_method=",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut overrides = 0;
        for _ in 0..20_000 {
            let mut body = String::new();
            for _ in 0..next(12) {
                body.push_str(PIECES[next(PIECES.len())]);
            }
            let whole = read_urlencoded(&Bytes::from(body.clone()));
            let mut scan = FormScan::default();
            let bytes = body.as_bytes();
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + 1 + next(6)).min(bytes.len());
                scan.feed(&bytes[at..end]);
                at = end;
            }
            let streamed = scan.finish();
            let same = match (&whole, &streamed) {
                (Reading::Ambiguous(_), Reading::Ambiguous(_)) => true,
                (a, b) => a == b,
            };
            assert!(same, "{body:?}: whole {whole:?}, streamed {streamed:?}");
            overrides += matches!(whole, Reading::Override(_)) as usize;
        }
        assert!(overrides > 100, "the bodies exercised overrides ({overrides})");
    }

    #[tokio::test]
    async fn a_long_form_body_streams_through_and_fails_at_its_end_if_it_overrides() {
        use crate::proxy::{ConnShare, Route};
        let ctx = || {
            let route = Route::classify(&Method::POST, "/api/v1/statuses/109", None);
            RequestCtx::new(route, "2001:db8::1".parse().unwrap(), false, None, ConnShare::detached())
        };
        // As a client sends it: 16 KiB chunks, the end not yet known when the head is read.
        let long = |tail: &str| {
            let mut body = format!("status={}", "x".repeat(MAX_READ + 10));
            body.push_str(tail);
            let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                body.into_bytes().chunks(16 * 1024).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            http::Request::post("/api/v1/statuses/109").body(boxed(stream)).unwrap()
        };
        // No override: the stages see the wire method, the instance gets every byte.
        let mut c = ctx();
        let (req, dispatched) = resolve(&mut c, long("&visibility=direct")).await.unwrap();
        assert_eq!(dispatched, None);
        assert!(c.body_held() <= MAX_READ as u64, "at most the head is held: {}", c.body_held());
        let got = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), "status=".len() + MAX_READ + 10 + "&visibility=direct".len());
        // An override past the head: the body fails at its end, before its last chunk.
        let (req, dispatched) = resolve(&mut ctx(), long("&_method=delete")).await.unwrap();
        assert_eq!(dispatched, None);
        let mut body = req.into_body();
        let mut passed = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => passed += f.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("the override reached the end of the body"),
            }
        };
        assert!(err.downcast_ref::<LongFormOverride>().is_some());
        assert!(passed < MAX_READ + 10, "the last chunk was held back ({passed} bytes passed)");
        // A long multipart body: a `_method` field past the head, however spelled, fails it.
        let multipart = |name: &str| {
            let body = format!(
                "--b\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\n{}\r\n--b\r\nContent-Disposition: form-data; {name}\r\n\r\nget\r\n--b--\r\n",
                "x".repeat(MAX_READ)
            );
            let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                body.into_bytes().chunks(16 * 1024).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            http::Request::post("/api/v1/statuses/109")
                .header("content-type", "multipart/form-data; boundary=b")
                .body(boxed(http_body_util::StreamBody::new(futures_util::stream::iter(chunks))))
                .unwrap()
        };
        for name in ["name=\"_method\"", "NAME=\"_\\method\"", "name*=utf-8''%5F%6Dethod"] {
            let (req, _) = resolve(&mut ctx(), multipart(name)).await.unwrap();
            let err = req.into_body().collect().await.unwrap_err();
            assert!(err.downcast_ref::<LongFormOverride>().is_some(), "{name}");
        }
        let (req, _) = resolve(&mut ctx(), multipart("name=\"visibility\"")).await.unwrap();
        assert!(req.into_body().collect().await.is_ok());
    }

    #[test]
    fn multipart_method_fields_are_refused() {
        let form = |name: &str| {
            Bytes::from(format!(
                "--b\r\nContent-Disposition: form-data; {name}\r\n\r\nget\r\n--b\r\nContent-Disposition: form-data; name=\"status\"\r\n\r\nhello _method\r\n--b--\r\n"
            ))
        };
        for name in
            ["name=\"_method\"", "name=_method", "NAME = \"_method\"", "name=\"_\\method\"", "name*=utf-8''%5Fmethod"]
        {
            assert!(matches!(read_multipart(&form(name)), Reading::Ambiguous(_)), "{name}");
        }
        assert_eq!(read_multipart(&form("name=\"visibility\"")), Reading::Keep);
        // `multipart/form-data` without a boundary: Rack reads the body as urlencoded.
        let fallback = Bytes::from_static(b"status=x&_method=get");
        assert!(matches!(read_multipart_or_fallback(&fallback), Reading::Ambiguous(_)));
        assert_eq!(read_multipart_or_fallback(&form("name=\"visibility\"")), Reading::Keep);
    }

    #[test]
    fn media_types_rack_parses_as_forms() {
        assert_eq!(form_kind(None), FormKind::UrlEncoded);
        assert_eq!(form_kind(Some(b"Application/X-WWW-Form-Urlencoded; charset=utf-8")), FormKind::UrlEncoded);
        assert_eq!(form_kind(Some(b"application/x-www-form-urlencoded, text/plain")), FormKind::UrlEncoded);
        assert_eq!(form_kind(Some(b"multipart/form-data; boundary=x")), FormKind::Multipart);
        assert_eq!(form_kind(Some(b"multipart/related; boundary=x")), FormKind::Multipart);
        assert_eq!(form_kind(Some(b"application/json")), FormKind::NotAForm);
        assert_eq!(form_kind(Some(b"multipart/alternative; boundary=x")), FormKind::NotAForm);
    }
}
