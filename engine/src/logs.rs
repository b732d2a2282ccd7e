//! The process's logs: human text (colored on a terminal), or one JSON object per line
//! (`--log-format json`, tracing-subscriber's JSON with each event's fields at the top level)
//! for log pipelines. The progress line follows: text in text, fields in JSON.

use std::sync::atomic::{AtomicBool, Ordering};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether logs are structured (JSON), for code that words an event either way.
static STRUCTURED: AtomicBool = AtomicBool::new(false);

/// Installs the process's log subscriber, writing to stderr, filtered by `RUST_LOG` (default
/// `info`). A second call changes nothing.
pub fn init(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if installed.is_ok() {
        STRUCTURED.store(format == LogFormat::Json, Ordering::Relaxed);
    }
}

/// Whether logs are JSON.
pub fn structured() -> bool {
    STRUCTURED.load(Ordering::Relaxed)
}
