//! The `file` source (`[source] type = "file"`): a file of records replayed into a topic of the
//! job's embedded broker, which the dataflow reads as it reads any topic, for backfills, demos
//! and tests on real data.
//!
//! The replay is bounded (the job ends once every line has been read) unless `repeat` is set;
//! it goes at `rows_per_sec` or as fast as it can, and never more than [`MAX_AHEAD`] records
//! ahead of the job's source, so that the embedded broker's bounded window never drops one.
//! A record's event time is its schema's time field when there is one (a repeated replay takes
//! the wall clock instead: a second pass cannot go back in event time), else the wall clock at
//! the replay.

use crate::error::{Error, Result};
use millrace_connectors::kafka::{KafkaSourceConfig, LineProducer, RateLimit, EMBEDDED};
use millrace_models::Schema;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The most records the replay runs ahead of what the job's source has read.
pub const MAX_AHEAD: u64 = 50_000;

/// A file replayed as the job's source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    /// The file, one record per line (relative to the job file's folder when read from one).
    pub path: PathBuf,
    /// Records per second; as fast as the job takes them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_sec: Option<f64>,
    /// Start again at the first line after the last, until the job is stopped.
    #[serde(default)]
    pub repeat: bool,
}

impl FileSourceSpec {
    /// Problems of the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(rate) = self.rows_per_sec {
            if !(rate > 0.0 && rate.is_finite()) {
                problems.push(format!("`rows_per_sec` must be > 0 (got {rate})"));
            }
        }
        if self.path.as_os_str().is_empty() {
            problems.push("`path` must name a file".to_owned());
        }
        problems
    }

    /// The path resolved against `folder` when it is relative.
    pub fn resolved(mut self, folder: &Path) -> Self {
        if self.path.is_relative() {
            self.path = folder.join(&self.path);
        }
        self
    }

    /// The topics on the embedded broker that the job `name` reads the file through.
    pub fn kafka_config(&self, name: &str, lines: Option<u64>) -> KafkaSourceConfig {
        KafkaSourceConfig {
            bootstrap_servers: EMBEDDED.to_owned(),
            topic: name.to_owned(),
            group_id: format!("millrace-{name}"),
            dead_letter_topic: format!("{name}-dead-letters"),
            // One partition: the records reach the job in the file's order.
            partitions: 1,
            // Records come at least this often, so that the partition never goes idle (and the
            // frontier past the event times still to come) in the middle of the file.
            idle_ms: self
                .rows_per_sec
                .map_or(0, |rate| (3000.0 / rate).ceil() as u64)
                .max(KafkaSourceConfig::default_idle_ms()),
            stop_after_records: if self.repeat { None } else { lines },
            event_time_field: None,
        }
    }
}

/// A file's records on their way into the job's topic.
pub struct Replay {
    spec: FileSourceSpec,
    /// The file.
    text: Vec<u8>,
    /// Each record's place in `text`.
    records: Vec<Range<usize>>,
    producer: Option<LineProducer>,
    sent: u64,
}

/// Records sent before the dataflow starts, so that the topic is not empty (and its partition
/// not idle, which would let the frontier follow the wall clock past historical event times)
/// when the job first reads it.
pub const PRIMED: usize = 1000;

impl Replay {
    /// Reads the spec's file and its records by `schema` (the header line checked and left
    /// out).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, [`Error::Config`] when its header does not
    /// name the schema's fields.
    pub fn read(spec: FileSourceSpec, schema: &Schema) -> Result<Self> {
        let text = std::fs::read(&spec.path).map_err(|source| Error::Io {
            path: spec.path.clone(),
            source,
        })?;
        let records = schema.record_spans(&text).map_err(|why| Error::Config {
            problems: vec![format!("[schema] {}: {why}", spec.path.display())],
        })?;
        Ok(Replay {
            spec,
            text,
            records,
            producer: None,
            sent: 0,
        })
    }

    /// How many records the file holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The topics on the embedded broker that the job `name` reads the file through.
    pub fn kafka_config(&self, name: &str) -> KafkaSourceConfig {
        self.spec
            .kafka_config(name, Some(self.records.len() as u64))
    }

    /// Connects the replay to `topic` on `bootstrap` and sends the first [`PRIMED`] records
    /// (all, for a shorter file), waiting until the broker has them.
    ///
    /// # Errors
    ///
    /// When the producer cannot be made, or a record cannot be sent or acknowledged.
    pub fn connect(&mut self, bootstrap: &str, topic: &str) -> Result<()> {
        let mut producer = LineProducer::new(bootstrap, topic, 1)?;
        let first = self.records.len().min(PRIMED);
        for range in &self.records[..first] {
            producer.send(&self.text[range.clone()])?;
        }
        self.sent = first as u64;
        producer.flush(Duration::from_secs(10))?;
        self.producer = Some(producer);
        Ok(())
    }

    /// Produces the rest, paced by the spec's rate (counted from the first record after the
    /// primed ones) and by `read` (the records the job's source has read), until the replay
    /// ends or `stop` is set.
    ///
    /// # Errors
    ///
    /// When a record cannot be sent, or a bounded replay's records are not all acknowledged:
    /// the job would wait for records that cannot come, so `stop` is set too.
    pub fn run(mut self, read: &AtomicU64, stop: &AtomicBool) -> Result<()> {
        let total = self.records.len() as u64;
        let Some(mut producer) = self.producer.take().filter(|_| total > 0) else {
            return Ok(());
        };
        let fail = |error: millrace_connectors::Error| {
            stop.store(true, Ordering::SeqCst);
            Error::Replay(error)
        };
        let (primed, limit) = (self.sent, RateLimit::new(self.spec.rows_per_sec));
        while !stop.load(Ordering::Relaxed) && (self.spec.repeat || self.sent < total) {
            let ahead = self.sent.saturating_sub(read.load(Ordering::Relaxed));
            let delay = limit.delay(self.sent - primed);
            if ahead >= MAX_AHEAD || !delay.is_zero() {
                // Sleep in slices, so that a slow rate does not delay a stop.
                std::thread::sleep(
                    delay.clamp(Duration::from_millis(1), Duration::from_millis(50)),
                );
                continue;
            }
            let range = self.records[(self.sent % total) as usize].clone();
            producer.send(&self.text[range]).map_err(fail)?;
            self.sent += 1;
        }
        match producer.flush(Duration::from_secs(30)) {
            Err(error) if !self.spec.repeat => Err(fail(error)),
            Err(error) => {
                tracing::warn!(%error, "replayed records not all acknowledged at the stop");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        let spec = FileSourceSpec {
            path: PathBuf::new(),
            rows_per_sec: Some(0.0),
            repeat: false,
        };
        assert_eq!(
            spec.problems(),
            [
                "`rows_per_sec` must be > 0 (got 0)",
                "`path` must name a file"
            ]
        );
        let missing = FileSourceSpec {
            path: PathBuf::from("/no/such/file"),
            ..spec
        };
        assert!(matches!(
            Replay::read(missing, &Schema::criteo()),
            Err(Error::Io { .. })
        ));
        let resolved = FileSourceSpec {
            path: PathBuf::from("data.csv"),
            rows_per_sec: None,
            repeat: true,
        }
        .resolved(Path::new("/jobs"));
        assert_eq!(resolved.path, Path::new("/jobs/data.csv"));
        assert_eq!(resolved.kafka_config("j", Some(3)).stop_after_records, None);
    }
}
