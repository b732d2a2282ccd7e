//! What a sink type is to the catalog: a factory that checks its table in `[sinks]` and opens
//! a writer of one output (`dead_letters`, `predictions` or `metrics`) on every worker.
//!
//! An output's messages are what a Kafka topic of it would hold ([`Output`]: the epoch, a key,
//! the payload and headers). The job replays the epochs after its newest checkpoint when it
//! restarts, and with them their messages: every sink is at-least-once, and a message's epoch
//! (with, for dead letters and predictions, its source position) lets a reader drop repeats. A
//! writer that delivers after `send` returns says which epochs are still on their way
//! ([`OutputWriter::unsettled_from`]), so that no checkpoint covers them.

use super::config::read_config;
use millrace_connectors::kafka::{Output, OutputSink};
use millrace_operators::BoxError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The job's Kafka brokers.
    pub bootstrap: &'a str,
    /// Counts the messages the writer loses (the job's figure for the output).
    pub lost: Arc<AtomicU64>,
}

/// A type of sink, registered in the [`Catalog`](super::Catalog) under its name.
pub trait SinkFactory: Send + Sync {
    /// Every problem of the sink's table (its keys other than `type`), each naming its key.
    fn problems(&self, config: &toml::Table) -> Vec<String>;

    /// Makes the table's paths that are relative to the job file's `folder` absolute, when it
    /// has paths.
    fn resolve_paths(&self, config: &mut toml::Table, folder: &Path) {
        let _ = (config, folder);
    }

    /// The Kafka topic the sink writes on the job's brokers, when it is one: the job creates
    /// it with its other topics.
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
    /// every message sent is. A writer that delivers before `send` returns keeps the default.
    fn unsettled_from(&self) -> Option<u64> {
        None
    }
}

/// The `kafka` sink's settings: a topic on the job's brokers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// The topic.
    pub topic: String,
}

/// The `kafka` sink type: the idempotent producer, every message with the header
/// `millrace-epoch`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaSinkFactory;

impl SinkFactory for KafkaSinkFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match read_config::<KafkaSinkSpec>(config) {
            Ok(spec) if spec.topic.trim().is_empty() => {
                vec!["`topic` must not be empty".to_owned()]
            }
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn kafka_topic(&self, config: &toml::Table) -> Option<String> {
        read_config::<KafkaSinkSpec>(config).ok().map(|s| s.topic)
    }

    fn open(
        &self,
        config: &toml::Table,
        context: &SinkContext<'_>,
    ) -> Result<Box<dyn OutputWriter>, BoxError> {
        let spec = read_config::<KafkaSinkSpec>(config).map_err(|p| p.join("; "))?;
        let sink = OutputSink::new(
            context.bootstrap,
            &spec.topic,
            context.output,
            context.lost.clone(),
        )?;
        Ok(Box::new(KafkaWriter {
            sink,
            output: context.output,
        }))
    }
}

/// A topic's producer as an output's writer.
struct KafkaWriter {
    sink: OutputSink,
    output: &'static str,
}

impl OutputWriter for KafkaWriter {
    fn send(&mut self, output: Output<'_>) {
        // The sink counts and logs what it loses.
        let _ = self.sink.send(output);
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, output = self.output, "messages not acknowledged");
        }
    }

    fn unsettled_from(&self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// The `file` sink's settings: a directory of JSON lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    /// The directory (created when missing; relative to the job file's folder when read from
    /// one). Worker `w` appends the output `o` to `o-w.jsonl` in it.
    pub path: PathBuf,
}

/// The `file` sink type: each message appended as one JSON line, `{"epoch": …, "key": …,
/// "headers": {…}, "payload": …}` (key, header values and payload as text, invalid UTF-8
/// replaced), for local runs, backfills and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileSinkFactory;

impl SinkFactory for FileSinkFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match read_config::<FileSinkSpec>(config) {
            Ok(spec) if spec.path.as_os_str().is_empty() => {
                vec!["`path` must name a directory".to_owned()]
            }
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn resolve_paths(&self, config: &mut toml::Table, folder: &Path) {
        if let Some(toml::Value::String(path)) = config.get_mut("path") {
            if !path.is_empty() && Path::new(path.as_str()).is_relative() {
                *path = folder.join(&*path).to_string_lossy().into_owned();
            }
        }
    }

    fn open(
        &self,
        config: &toml::Table,
        context: &SinkContext<'_>,
    ) -> Result<Box<dyn OutputWriter>, BoxError> {
        let spec = read_config::<FileSinkSpec>(config).map_err(|p| p.join("; "))?;
        std::fs::create_dir_all(&spec.path)?;
        let path = spec
            .path
            .join(format!("{}-{}.jsonl", context.output, context.worker));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Box::new(FileWriter {
            file: std::io::BufWriter::new(file),
            path,
            lost: context.lost.clone(),
        }))
    }
}

/// One worker's file of an output.
struct FileWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    lost: Arc<AtomicU64>,
}

/// One line of a `file` sink.
#[derive(Serialize)]
struct Line<'a> {
    epoch: u64,
    key: Option<std::borrow::Cow<'a, str>>,
    headers: BTreeMap<&'a str, std::borrow::Cow<'a, str>>,
    payload: std::borrow::Cow<'a, str>,
}

impl FileWriter {
    fn lose(&self, error: &dyn std::fmt::Display) {
        if self.lost.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::error!(%error, path = %self.path.display(), "a message could not be written (the first lost)");
        }
    }
}

impl OutputWriter for FileWriter {
    fn send(&mut self, output: Output<'_>) {
        let line = Line {
            epoch: output.epoch,
            key: output.key.map(String::from_utf8_lossy),
            headers: output
                .headers
                .iter()
                .map(|(k, v)| (*k, String::from_utf8_lossy(v)))
                .collect(),
            payload: String::from_utf8_lossy(output.payload),
        };
        let written = serde_json::to_writer(&mut self.file, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| self.file.write_all(b"\n"));
        if let Err(error) = written {
            self.lose(&error);
        }
    }

    fn flush(&mut self) {
        if let Err(error) = self.file.flush() {
            self.lose(&error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sink_appends_one_json_line_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut config: toml::Table = toml::from_str("path = \"out\"").unwrap();
        FileSinkFactory.resolve_paths(&mut config, dir.path());
        assert!(FileSinkFactory.problems(&config).is_empty());
        let lost = Arc::new(AtomicU64::new(0));
        let context = SinkContext {
            job: "j",
            output: "dead_letters",
            worker: 3,
            bootstrap: "unused",
            lost: lost.clone(),
        };
        let mut writer = FileSinkFactory.open(&config, &context).unwrap();
        writer.send(Output {
            epoch: 7,
            key: Some(b"0:12"),
            payload: b"not\tan event",
            headers: &[("error_type", b"label")],
        });
        writer.flush();
        let text = std::fs::read_to_string(dir.path().join("out/dead_letters-3.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"epoch": 7, "key": "0:12", "headers": {"error_type": "label"}, "payload": "not\tan event"})
        );
        assert_eq!(lost.load(Ordering::Relaxed), 0);
        assert_eq!(
            FileSinkFactory.problems(&toml::from_str("path = \"\"").unwrap()),
            ["`path` must name a directory"]
        );
        assert_eq!(
            KafkaSinkFactory.kafka_topic(&toml::from_str("topic = \"t\"").unwrap()),
            Some("t".to_owned())
        );
    }
}
