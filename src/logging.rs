//! Log output: human-readable text for a terminal, or one JSON object per line for collectors.
//! Logs go to stderr so stdout stays free for command output (`check`).
//!
//! Lines are written by a thread of their own: a request never waits for the write, and lines
//! that queue up under load leave in one write instead of one each (an access line per request
//! written in place cost a fifth of the CPU of a small pass-through request). The queue is
//! flushed whenever it empties, so an idle gateway's log is as current as an unbuffered one, and
//! a full queue makes requests wait rather than lose lines.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Flushes the queued lines when dropped: keep it until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

pub fn init(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The queue's slots are allocated up front: the default 128 000 would cost megabytes
        // of resident memory at rest for no gain, as the writer drains in batches.
        .buffered_lines_limit(1024)
        .thread_name("scimgate-log")
        .finish(std::io::BufWriter::with_capacity(
            16 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}
