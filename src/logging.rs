//! Log output: human-readable text for a terminal, or one JSON object per line for collectors.
//! Logs go to stderr so stdout stays free for command output (`check`).
//!
//! Lines are written by a thread of their own, in batches. An access line per request written in
//! place cost a fifth of the CPU of a small pass-through request; handing each line to a writer
//! thread that wakes for it still cost a thread wake-up and a write per request. So a request
//! only appends its line to a shared buffer. The writer is woken by the first line after a
//! write, then lingers briefly so that the lines of concurrent requests leave in one write: under
//! load that is a few writes a second, and an idle gateway's log lags by at most the linger. No
//! line is dropped: a buffer that outruns the output makes requests wait for the write.

use crate::config::{LogConfig, LogFormat};
use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How long the writer waits after the first pending line for more to join it.
const LINGER: Duration = Duration::from_millis(25);
/// Pending bytes that end the linger early.
const WRITE_AT: usize = 64 * 1024;
/// Pending bytes at which requests wait for the write instead of buffering more.
const MAX_PENDING: usize = 1024 * 1024;

/// Writes the pending lines and stops the writer when dropped: keep it until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    writer: Option<(Arc<Shared>, JoinHandle<()>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((shared, thread)) = self.writer.take() {
            shared.lock().closing = true;
            shared.line_pending.notify_one();
            let _ = thread.join();
            // Whatever is logged from now on (the runtime's last words) is written in place,
            // and so is anything that arrived after the writer's last batch.
            let late = {
                let mut state = shared.lock();
                state.unbatched = true;
                std::mem::take(&mut state.pending)
            };
            let _ = std::io::stderr().write_all(&late);
        }
    }
}

pub fn init(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let shared = Arc::new(Shared::default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BatchedStderr(shared.clone()))
        .with_timer(UtcMicros)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests, embedding) keeps the first subscriber; that is not an error worth
    // failing the start for.
    let installed = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        return LogGuard { writer: None };
    }
    if config.format == LogFormat::Json {
        // Only the subscriber installed here writes to `shared`; a second init keeps the first.
        let _ = JSON_ACCESS_LINES.set(shared.clone());
    }
    let for_thread = shared.clone();
    match std::thread::Builder::new()
        .name("scimgate-log".into())
        .spawn(move || write_batches(&for_thread, &mut std::io::stderr()))
    {
        Ok(thread) => LogGuard {
            writer: Some((shared, thread)),
        },
        // Without a writer thread, lines are written in place rather than piling up unseen.
        Err(_) => {
            shared.lock().unbatched = true;
            LogGuard { writer: None }
        }
    }
}

/// The log's clock, in tracing-subscriber's own format (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), with
/// the calendar part computed once a second instead of for every line: with an access line per
/// request, formatting the date was a measurable share of a small request's CPU.
struct UtcMicros;

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write_utc_micros(w)
    }
}

fn write_utc_micros(w: &mut impl std::fmt::Write) -> std::fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let calendar = crate::rfc3339::rfc3339_seconds(i64::try_from(secs).unwrap_or(i64::MAX));
            *cached = (secs, calendar);
        }
        w.write_str(&cached.1)?;
        let suffix = micros_suffix(now.subsec_micros());
        w.write_str(std::str::from_utf8(&suffix).map_err(|_| std::fmt::Error)?)
    })
}

/// `.ffffffZ` for the microseconds within a second.
fn micros_suffix(micros: u32) -> [u8; 8] {
    let mut text = *b".000000Z";
    let mut rest = micros % 1_000_000;
    for digit in text[1..7].iter_mut().rev() {
        // A decimal digit: always below 10.
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits on this for a first pending line, a full batch, or the close.
    line_pending: Condvar,
    /// Requests wait on this while the buffer is over `MAX_PENDING`.
    written: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    closing: bool,
    unbatched: bool,
}

impl Shared {
    // A panic while holding the lock cannot leave the buffer worse than a torn line; logging
    // carries on rather than taking the process down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.unbatched {
            drop(state);
            return std::io::stderr().write_all(line);
        }
        while state.pending.len() >= MAX_PENDING && !state.closing {
            state = self
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let before = state.pending.len();
        state.pending.extend_from_slice(line);
        let after = state.pending.len();
        drop(state);
        // Only the transitions wake the writer: a wake-up per line is the cost this avoids.
        if before == 0 || (before < WRITE_AT && after >= WRITE_AT) {
            self.line_pending.notify_one();
        }
        Ok(())
    }
}

fn write_batches(shared: &Shared, out: &mut dyn Write) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closing {
            state = shared
                .line_pending
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !state.closing && state.pending.len() < WRITE_AT {
            state = shared
                .line_pending
                .wait_timeout(state, LINGER)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut state.pending, &mut batch);
        let closing = state.closing;
        drop(state);
        shared.written.notify_all();
        // A failed write (closed stderr) has nowhere to be reported; the lines are dropped
        // rather than kept, so memory stays bounded.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        // A burst leaves a large buffer behind; an idle gateway should not keep it resident.
        if batch.capacity() > 4 * WRITE_AT {
            batch = Vec::new();
        }
        if closing && shared.lock().pending.is_empty() {
            return;
        }
    }
}

struct BatchedStderr(Arc<Shared>);

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

/// The formatter hands over each event whole in one `write`.
struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access log's target, as filters (`RUST_LOG`, `log.level`) name it.
pub const ACCESS_TARGET: &str = "scimgate::access";

/// Set when the installed subscriber writes JSON: access lines then skip tracing's machinery.
static JSON_ACCESS_LINES: OnceLock<Arc<Shared>> = OnceLock::new();

/// One request's access-log line.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub version: &'static str,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub client: &'a str,
    pub route: &'static str,
    pub complete: bool,
}

/// Logs one access line, if the filter lets `scimgate::access` INFO through.
///
/// In the JSON format the line is written here, byte for byte as tracing-subscriber's JSON
/// formatter writes the same event: going through tracing (field visitors, a serde map, the
/// formatter's own buffers) was about a seventh of a small pass-through request's user-space
/// CPU. The text format, for terminals, still goes through tracing.
pub fn access(record: &AccessRecord<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let Some(shared) = JSON_ACCESS_LINES.get() else {
        access_via_tracing(record);
        return;
    };
    thread_local! {
        static LINE: RefCell<(String, Vec<u8>)> = const { RefCell::new((String::new(), Vec::new())) };
    }
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        let (timestamp, bytes) = &mut *line;
        timestamp.clear();
        bytes.clear();
        if write_utc_micros(timestamp).is_ok() {
            write_access_json(bytes, timestamp, record);
            let _ = shared.append(bytes);
        }
        // One very long path should not leave its buffer resident in every worker thread.
        if bytes.capacity() > 16 * 1024 {
            *bytes = Vec::new();
        }
    });
}

fn access_via_tracing(record: &AccessRecord<'_>) {
    // Text values rather than `%`/`?` ones: each of those runs the formatting machinery once
    // per request.
    tracing::info!(
        target: ACCESS_TARGET,
        method = record.method,
        path = record.path,
        version = record.version,
        status = record.status,
        bytes = record.bytes,
        duration_ms = record.duration_ms,
        upstream_ms = record.upstream_ms,
        client = record.client,
        route = record.route,
        complete = record.complete,
        "access"
    );
}

/// The JSON line tracing-subscriber writes for [`access_via_tracing`]'s event (flattened, no
/// spans): the same keys in the same order, strings escaped and numbers written by serde_json,
/// as tracing-serde has them written; an absent `upstream_ms` is left out, as tracing does.
fn write_access_json(out: &mut Vec<u8>, timestamp: &str, record: &AccessRecord<'_>) {
    fn string(out: &mut Vec<u8>, key: &str, value: &str) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        // Writing into a Vec cannot fail; serde_json escapes exactly as tracing-serde's does.
        let _ = serde_json::to_writer(&mut *out, value);
    }
    fn number(out: &mut Vec<u8>, key: &str, value: impl serde::Serialize) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut *out, &value);
    }
    out.extend_from_slice(b"{\"timestamp\":");
    let _ = serde_json::to_writer(&mut *out, timestamp);
    out.extend_from_slice(b",\"level\":\"INFO\",\"message\":\"access\"");
    string(out, "method", record.method);
    string(out, "path", record.path);
    string(out, "version", record.version);
    number(out, "status", record.status);
    number(out, "bytes", record.bytes);
    number(out, "duration_ms", record.duration_ms);
    if let Some(upstream_ms) = record.upstream_ms {
        number(out, "upstream_ms", upstream_ms);
    }
    string(out, "client", record.client);
    string(out, "route", record.route);
    number(out, "complete", record.complete);
    string(out, "target", ACCESS_TARGET);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_read_as_tracing_subscriber_writes_them() {
        assert_eq!(&micros_suffix(42), b".000042Z");
        assert_eq!(&micros_suffix(999_999), b".999999Z");
        let mut text = String::new();
        UtcMicros.format_time(&mut Writer::new(&mut text)).unwrap();
        assert_eq!(text.len(), "2026-11-30T11:30:00.123456Z".len(), "{text}");
        let millis = crate::rfc3339::millis_from_rfc3339(&text).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - millis).abs() < 5_000, "{text} is not now");
    }

    /// The access line written directly must be the line tracing-subscriber writes for the
    /// same event, so log collectors see no difference between the two paths.
    #[test]
    fn a_direct_access_line_is_byte_for_byte_the_tracing_line() {
        struct FixedTime;
        impl FormatTime for FixedTime {
            fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
                w.write_str("2026-11-30T16:00:00.123456Z")
            }
        }
        let records = [
            AccessRecord {
                method: "GET",
                path: "/hello",
                version: "HTTP/1.1",
                status: 200,
                bytes: 24,
                duration_ms: 1.674,
                upstream_ms: Some(1.671),
                client: "127.0.0.1",
                route: "passthrough",
                complete: true,
            },
            AccessRecord {
                method: "PATCH",
                path: "/Thingworx/SCIMProvider/SCIM/v2/Users/a\"b\\c\u{1}\u{7f}é✓?token=REDACTED",
                version: "HTTP/2.0",
                status: 0,
                bytes: u64::MAX,
                duration_ms: 0.0,
                upstream_ms: None,
                client: "::1",
                route: "scim",
                complete: false,
            },
            AccessRecord {
                method: "M-SEARCH",
                path: "",
                version: "HTTP/1.0",
                status: 504,
                bytes: 0,
                duration_ms: 123_456.789,
                upstream_ms: Some(0.001),
                client: "10.0.0.1",
                route: "ambiguous",
                complete: true,
            },
        ];
        for record in &records {
            let capture = Capture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_timer(FixedTime)
                .with_ansi(false)
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || access_via_tracing(record));
            let through_tracing = capture.0.lock().map(|c| c.0.clone()).unwrap_or_default();

            let mut direct = Vec::new();
            write_access_json(&mut direct, "2026-11-30T16:00:00.123456Z", record);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&through_tracing)
            );
            let parsed: serde_json::Value = serde_json::from_slice(&direct).unwrap();
            assert_eq!(parsed["path"], record.path);
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            c.0.extend_from_slice(bytes);
            c.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn concurrent_lines_leave_whole_in_few_writes_and_all_are_written_on_close() {
        let shared = Arc::new(Shared::default());
        let capture = Capture::default();
        let (s, mut c) = (shared.clone(), capture.clone());
        let writer = std::thread::spawn(move || write_batches(&s, &mut c));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let line = format!("thread {t} line {i} {}\n", "x".repeat(100));
                        LineWriter(&shared).write_all(line.as_bytes()).ok();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().ok();
        }
        shared.lock().closing = true;
        shared.line_pending.notify_one();
        writer.join().ok();

        let (bytes, writes) = capture.0.lock().map(|c| c.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "every line is written");
        assert!(lines
            .iter()
            .all(|l| l.starts_with("thread ") && l.ends_with('x')));
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .filter_map(|l| l.split(' ').nth(3).and_then(|n| n.parse().ok()))
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "a thread's lines keep their order"
            );
        }
        assert!(writes < 2_000, "{writes} writes for 20 000 lines");
    }

    /// A writer that blocks in its first write until released, recording what it was given.
    struct HeldWriter {
        release: std::sync::mpsc::Receiver<()>,
        held: bool,
        out: Capture,
        /// Bytes of the batch the writer is holding, visible while it is held.
        holding: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Write for HeldWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if !self.held {
                self.held = true;
                self.holding
                    .store(bytes.len(), std::sync::atomic::Ordering::SeqCst);
                let _ = self.release.recv();
            }
            self.out.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// "No line is dropped under load; requests wait": with the output stuck, producers fill
    /// the buffer to its bound and then wait inside their write (none returns without its line
    /// being held somewhere); once the output moves, every line arrives, in order per producer.
    #[test]
    fn a_stuck_output_makes_producers_wait_and_loses_no_line() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        const PRODUCERS: usize = 4;
        const LINE_LEN: usize = 200;
        // Before every producer waits, the writer may hold one whole buffer and the buffer fill
        // again: about 2 MiB, which one producer alone may write when the others are starved of
        // CPU. Each producer has more than that to write, so none can finish while stuck.
        const LINES: usize = (2 * MAX_PENDING + 4 * WRITE_AT) / LINE_LEN + 1_000;

        let shared = Arc::new(Shared::default());
        let capture = Capture::default();
        let (release, released) = std::sync::mpsc::channel();
        let holding = Arc::new(AtomicUsize::new(0));
        let mut out = HeldWriter {
            release: released,
            held: false,
            out: capture.clone(),
            holding: holding.clone(),
        };
        let s = shared.clone();
        let writer = std::thread::spawn(move || write_batches(&s, &mut out));

        // Per producer: lines it started to write, and lines whose write returned.
        let entered: Arc<Vec<AtomicUsize>> =
            Arc::new((0..PRODUCERS).map(|_| AtomicUsize::new(0)).collect());
        let returned: Arc<Vec<AtomicUsize>> =
            Arc::new((0..PRODUCERS).map(|_| AtomicUsize::new(0)).collect());
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (shared, entered, returned) =
                    (shared.clone(), entered.clone(), returned.clone());
                std::thread::spawn(move || {
                    for i in 0..LINES {
                        let head = format!("producer {p} line {i:05} ");
                        let line = format!("{head}{}\n", "x".repeat(LINE_LEN - head.len() - 1));
                        entered[p].fetch_add(1, SeqCst);
                        LineWriter(&shared).write_all(line.as_bytes()).ok();
                        returned[p].fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();

        // Wait for the stuck state: the writer holds a batch, the buffer is at its bound, and
        // every producer is inside a write that has not returned.
        let all_waiting = || {
            holding.load(SeqCst) > 0
                && shared.lock().pending.len() >= MAX_PENDING
                && (0..PRODUCERS).all(|p| entered[p].load(SeqCst) == returned[p].load(SeqCst) + 1)
        };
        let mut polls = 0u64;
        while !all_waiting() {
            polls += 1;
            assert!(
                producers.iter().all(|t| !t.is_finished()),
                "a producer finished while the output was stuck: lines were dropped"
            );
            std::thread::yield_now();
            if polls.is_multiple_of(1000) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Nothing was dropped to get here: every returned line is buffered or being written.
        // A producer may have put a line in the buffer and not yet counted it as returned, so
        // up to one line per producer may be buffered beyond the returned ones; never fewer.
        let pending = shared.lock().pending.len();
        let done: usize = (0..PRODUCERS).map(|p| returned[p].load(SeqCst)).sum();
        let accounted = pending + holding.load(SeqCst);
        assert!(
            accounted >= done * LINE_LEN && accounted <= (done + PRODUCERS) * LINE_LEN,
            "lines that returned ({done} of {LINE_LEN} bytes) are not all buffered or held by the writer ({accounted} bytes)"
        );
        assert!(
            pending < MAX_PENDING + LINE_LEN,
            "buffer past its bound: {pending}"
        );
        assert!(done < PRODUCERS * LINES, "the test must outrun the buffer");

        release.send(()).ok();
        for t in producers {
            t.join().ok();
        }
        shared.lock().closing = true;
        shared.line_pending.notify_one();
        writer.join().ok();

        let (bytes, _) = capture.0.lock().map(|c| c.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), PRODUCERS * LINES, "every line is written");
        for p in 0..PRODUCERS {
            let mine: Vec<usize> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("producer {p} ")))
                .filter_map(|l| l.split(' ').nth(3).and_then(|n| n.parse().ok()))
                .collect();
            assert_eq!(
                mine,
                (0..LINES).collect::<Vec<_>>(),
                "producer {p}'s lines, in order"
            );
        }
    }
}
