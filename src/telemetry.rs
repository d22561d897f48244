//! Logging. Nothing that identifies a member is ever a field: client addresses exist only
//! inside `ClientAddr` (which prints `[scrubbed]`), tokens only inside sealed records.
//! The access log (`target: pavise::access`) carries the pseudonym, never the address.
//!
//! Lines go to stderr in batches, written by a thread of their own ([`BatchWriter`]):
//! a request only appends its formatted line to a buffer in memory, and a slow terminal
//! or journald never stalls the runtime threads that serve requests. One `write` and one
//! wake-up per line (the writer this replaced: a channel send, a futex wake and an
//! unbuffered `write(2)` for every access-log line) cost the relay 40% of its throughput
//! (issue 15). A line waits at most [`FLUSH_EVERY`] (or until [`FLUSH_AT`] bytes are
//! waiting), so a crash loses at most that tail; a clean exit writes everything (the
//! guard). Under overload, past [`MAX_PENDING`] bytes waiting, lines are dropped and the
//! next batch says how many, rather than blocking a request.
//!
//! The access log skips `tracing`'s formatter ([`access`]): its line per request went
//! through the subscriber's filter, a field visitor and the `fmt` machinery, about 0.5 µs
//! of the 2.6 µs of CPU the log cost each request, against nginx's 0.7 µs for its own
//! (issue 15). The line is written straight into the batch, byte for byte the line
//! `tracing` wrote (a test holds the two side by side), and still only when `RUST_LOG`
//! lets `pavise::access` through.

use std::{
    cell::RefCell,
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, prelude::*};

use crate::config::LogFormat;

/// The longest a line waits in memory before it is written: the most a crash can lose.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Bytes waiting that are written at once, without waiting out [`FLUSH_EVERY`].
pub const FLUSH_AT: usize = 64 * 1024;
/// Bytes waiting (the output stalled) past which new lines are dropped and counted.
pub const MAX_PENDING: usize = 1 << 20;

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` level.
/// Keep the guard alive for the life of the process: dropping it writes the last lines.
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, guard) = BatchWriter::new(io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // Colour only for a person at a terminal; files and journald get plain text.
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = match format {
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(writer.clone())).try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_ansi(ansi).with_writer(writer.clone())).try_init(),
    };
    // Already installed (an embedding program set its own): keep theirs, and give the
    // access log to it too. A terminal gets tracing's colours.
    if result.is_ok() && !ansi {
        let _ = ACCESS.set(AccessSink { writer, format });
    }
    guard
}

/// One request, as the access log tells it.
pub struct Access<'a> {
    /// The pseudonym (or its log form), never an address.
    pub client: &'a str,
    pub route: &'static str,
    pub method: &'a http::Method,
    pub status: u16,
    pub latency_ms: f64,
}

/// Where [`access`] writes, once [`init`] installed pavise's own subscriber.
struct AccessSink {
    writer: BatchWriter,
    format: LogFormat,
}

static ACCESS: OnceLock<AccessSink> = OnceLock::new();

thread_local! {
    /// A line being formatted; each thread reuses its own.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Logs one request (`target: pavise::access`, level info).
pub fn access(line: &Access<'_>) {
    let Some(sink) = ACCESS.get() else {
        return via_tracing(line);
    };
    if !tracing::enabled!(target: "pavise::access", tracing::Level::INFO) {
        return;
    }
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        format_access(sink.format, line, SystemTime::now(), buf);
        sink.writer.append(buf);
    });
}

/// The event `tracing`'s formatter turns into the same line (another subscriber's).
fn via_tracing(line: &Access<'_>) {
    tracing::info!(
        target: "pavise::access",
        client = %line.client,
        route = line.route,
        method = %line.method,
        status = line.status,
        latency_ms = line.latency_ms,
    );
}

/// `line` as `tracing_subscriber::fmt` writes it without colour: text, or JSON.
fn format_access(format: LogFormat, line: &Access<'_>, now: SystemTime, out: &mut Vec<u8>) {
    let time = humantime::format_rfc3339_micros(now);
    let Access { client, route, method, status, latency_ms } = line;
    // Writing to a Vec cannot fail.
    let _ = match format {
        LogFormat::Text => writeln!(
            out,
            "{time}  INFO pavise::access: client={client} route={route:?} method={method} status={status} \
             latency_ms={latency_ms:?}"
        ),
        LogFormat::Json => {
            let _ = write!(out, r#"{{"timestamp":"{time}","level":"INFO","fields":{{"client":"#);
            let _ = serde_json::to_writer(&mut *out, client);
            out.extend_from_slice(br#","route":"#);
            let _ = serde_json::to_writer(&mut *out, route);
            out.extend_from_slice(br#","method":"#);
            let _ = serde_json::to_writer(&mut *out, method.as_str());
            let _ = write!(out, r#","status":{status},"latency_ms":"#);
            let _ = serde_json::to_writer(&mut *out, latency_ms);
            out.extend_from_slice(b"},\"target\":\"pavise::access\"}\n");
            Ok(())
        }
    };
}

/// What the request path and the writing thread share.
struct Shared {
    state: Mutex<Pending>,
    /// The writing thread waits here for the first line of a batch, a full batch, or
    /// the end.
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Log lines, batched in memory and written by one thread (see the module docs).
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is still waiting and stops the writing thread when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// A writer whose lines reach `out` in batches, and the guard that ends it.
    pub fn new<W: Write + Send + 'static>(out: W) -> (BatchWriter, LogGuard) {
        let shared = Arc::new(Shared { state: Mutex::new(Pending::default()), wake: Condvar::new() });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("pavise-log".into()).spawn(move || write_batches(&shared, out)).ok()
        };
        (BatchWriter { shared: shared.clone() }, LogGuard { shared, thread })
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        let before = pending.bytes.len();
        if before + line.len() > MAX_PENDING {
            pending.dropped += 1;
            return;
        }
        pending.bytes.extend_from_slice(line);
        // Wake the writer for the first line of a batch, and once a batch is full;
        // between the two, it is waiting out `FLUSH_EVERY` anyway.
        let full = before < FLUSH_AT && pending.bytes.len() >= FLUSH_AT;
        drop(pending);
        if before == 0 || full {
            self.shared.wake.notify_one();
        }
    }
}

/// The writing thread: waits for a line, gathers for up to [`FLUSH_EVERY`] (or
/// [`FLUSH_AT`] bytes), writes the batch outside the lock; until the guard drops.
fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::with_capacity(FLUSH_AT);
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && pending.dropped == 0 && !pending.closed {
            pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        if !pending.closed {
            pending = shared
                .wake
                .wait_timeout_while(pending, FLUSH_EVERY, |p| p.bytes.len() < FLUSH_AT && !p.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut batch, &mut pending.bytes);
        let dropped = std::mem::take(&mut pending.dropped);
        let closed = pending.closed;
        drop(pending);
        // A stderr that is gone loses the lines, never the relay.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > 4 * FLUSH_AT {
            batch = Vec::with_capacity(FLUSH_AT);
        }
        if dropped > 0 {
            let _ = writeln!(out, "pavise: {dropped} log lines dropped: the log output did not keep up");
            let _ = out.flush();
        }
        if closed {
            let mut pending = shared.lock();
            let _ = out.write_all(&pending.bytes).and_then(|()| out.flush());
            pending.bytes = Vec::new();
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's line, as `tracing_subscriber::fmt` writes it (one `write_all` per event).
pub struct LineSink<'a>(&'a BatchWriter);

impl Write for LineSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tracing`'s formatter writes for the access event, with pavise's settings.
    fn tracing_line(format: LogFormat, line: &Access<'_>) -> String {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let dispatch = match format {
            LogFormat::Text => tracing::Dispatch::new(
                tracing_subscriber::registry().with(fmt::layer().with_ansi(false).with_writer(writer)),
            ),
            LogFormat::Json => {
                tracing::Dispatch::new(tracing_subscriber::registry().with(fmt::layer().json().with_writer(writer)))
            }
        };
        tracing::dispatcher::with_default(&dispatch, || via_tracing(line));
        out.text()
    }

    #[test]
    fn the_access_line_is_the_one_tracing_writes() {
        let method = http::Method::POST;
        for line in [
            Access {
                client: "2001:db8:9a5d::3d77",
                route: "web",
                method: &http::Method::GET,
                status: 200,
                latency_ms: 4.813522,
            },
            Access {
                client: "k3j\"x",
                route: "media_upload",
                method: &method,
                status: 413,
                latency_ms: 0.7869440000000001,
            },
            Access { client: "a", route: "inbox", method: &method, status: 503, latency_ms: 1234.0 },
        ] {
            for format in [LogFormat::Text, LogFormat::Json] {
                let theirs = tracing_line(format, &line);
                let mut ours = Vec::new();
                format_access(format, &line, SystemTime::now(), &mut ours);
                let ours = String::from_utf8(ours).unwrap_or_default();
                // The timestamps differ by the microseconds between the two calls.
                let stamp = |s: &str| {
                    let at = s.find("Z").unwrap_or_default();
                    (s[..at.saturating_sub(26)].to_owned(), s[at..].to_owned())
                };
                assert_eq!(stamp(&ours), stamp(&theirs), "{format:?}:\n ours  {ours}\n theirs {theirs}");
                assert_eq!(ours.len(), theirs.len(), "{format:?}: the timestamp has the same shape too");
            }
        }
    }

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let out = Captured::default();
        let (writer, guard) = BatchWriter::new(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        // As the fmt layer writes an event: one formatted line at once.
                        let line = format!("thread {t} line {i}\n");
                        let _ = writer.make_writer().write_all(line.as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        drop(guard);
        let text = out.text();
        for t in 0..4 {
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
            let expected: Vec<String> = (0..2_000).map(|i| format!("thread {t} line {i}")).collect();
            assert!(lines == expected, "thread {t}: every line, whole and in order ({} of 2000)", lines.len());
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_past_the_cap_and_says_how_many() {
        // An output that blocks until the test lets it go: lines pile up in memory.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        struct Stalled(Captured, Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (open, cv) = &*self.1;
                let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                while !*open {
                    open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
                }
                self.0.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Captured::default();
        let (writer, guard) = BatchWriter::new(Stalled(out.clone(), gate.clone()));
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        // Enough for the first batch (taken by the stalled writer) and a full buffer more.
        let lines = 3 * MAX_PENDING / 1024;
        for _ in 0..lines {
            let _ = writer.make_writer().write_all(&line);
        }
        *gate.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        gate.1.notify_all();
        drop(guard);
        let text = out.text();
        let written = text.lines().filter(|l| l.starts_with('x')).count();
        assert!(written < lines, "some lines were dropped");
        assert!(written * 1024 <= 2 * MAX_PENDING + FLUSH_AT, "memory stayed bounded: {written} lines held");
        let note = text.lines().find(|l| l.contains("log lines dropped")).unwrap_or_default();
        assert!(note.contains(&(lines - written).to_string()), "the count is told: {note}");
    }
}
