//! What a sink type is to the catalog: a factory that checks its table in `[sinks]` and opens
//! a writer of one output (`dead_letters`, `predictions` or `metrics`) on every worker.
//!
//! An output's messages are what a Kafka topic of it would hold ([`Output`]: the epoch, a key,
//! the payload and headers). The job replays the epochs after its newest checkpoint when it
//! restarts, and with them their messages: every sink is at-least-once, and a message's epoch
//! (with, for dead letters and predictions, its source position) lets a reader drop repeats. A
//! writer that delivers after `send` returns says which epochs are still on their way
//! ([`OutputWriter::unsettled_from`]), so that no checkpoint covers them.

use millrace_connectors::kafka::{Brokers, Output, Undelivered};
use millrace_operators::BoxError;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What a sink's writer is opened with.
#[derive(Clone, Debug)]
pub struct SinkContext<'a> {
    /// The job's name.
    pub job: &'a str,
    /// The output: `dead_letters`, `predictions` or `metrics`.
    pub output: &'static str,
    /// The worker the writer is for (its index in the job).
    pub worker: usize,
    /// The job's Kafka brokers; empty when the job has none (it starts them, or an embedded
    /// broker, only when some sink's type names a topic in [`SinkFactory::kafka_topic`]).
    pub bootstrap: &'a Brokers,
    /// Counts the messages the writer loses (the job's figure for the output).
    pub lost: Arc<AtomicU64>,
    /// What the writer does with a message its destination does not take (`[sinks]
    /// on_undelivered`), where that can happen.
    pub undelivered: Undelivered,
}

/// A type of sink, registered in the [`Catalog`](super::Catalog) under its name.
pub trait SinkFactory: Send + Sync {
    /// Every problem of the sink's table (its keys other than `type`), each naming its key.
    fn problems(&self, config: &toml::Table) -> Vec<String>;

    /// The JSON Schema of the sink's table (its keys other than `type`), for the job file's
    /// schema and reference: a table of any keys when the type does not describe it.
    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let _ = generator;
        schemars::json_schema!({ "type": "object" })
    }

    /// Makes the table's paths that are relative to the job file's `folder` absolute, when it
    /// has paths.
    fn resolve_paths(&self, config: &mut toml::Table, folder: &Path) {
        let _ = (config, folder);
    }

    /// The Kafka topic the sink writes on the job's brokers, when it is one: the job creates
    /// it with its other topics, and has brokers at all only when some output or the registry
    /// topic needs them, so a type that writes Kafka must name its topic here.
    fn kafka_topic(&self, config: &toml::Table) -> Option<String> {
        let _ = config;
        None
    }

    /// Opens the writer of one worker.
    ///
    /// # Errors
    ///
    /// Whatever keeps the writer from opening.
    fn open(
        &self,
        config: &toml::Table,
        context: &SinkContext<'_>,
    ) -> Result<Box<dyn OutputWriter>, BoxError>;
}

/// One worker's writer of an output.
pub trait OutputWriter {
    /// Sends one message. A writer retries by itself, and counts (in its context's `lost`) and
    /// logs what it loses.
    fn send(&mut self, output: Output<'_>);

    /// Waits until everything sent so far is delivered (called when the output's input is
    /// complete).
    fn flush(&mut self);

    /// The least epoch with a message sent but neither delivered nor lost yet; `None` when
    /// every message sent is. A writer that buffers may write out what it holds first; one
    /// that delivers before `send` returns keeps the default.
    fn unsettled_from(&mut self) -> Option<u64> {
        None
    }
}
