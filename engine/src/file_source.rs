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

use millrace_connectors::kafka::{KafkaSourceConfig, LineProducer, RateLimit, EMBEDDED};
use serde::{Deserialize, Serialize};
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
        if let Err(error) = std::fs::metadata(&self.path) {
            problems.push(format!(
                "`path` {} cannot be read: {error}",
                self.path.display()
            ));
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

/// The file's records: its non-empty lines, without the header line when `header`.
pub fn records(text: &[u8], header: bool) -> Vec<&[u8]> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .skip(usize::from(header))
        .collect()
}

/// A file's records on their way into the job's topic.
pub struct Replay {
    spec: FileSourceSpec,
    records: Vec<Vec<u8>>,
    producer: LineProducer,
    sent: u64,
}

/// Records sent before the dataflow starts, so that the topic is not empty (and its partition
/// not idle, which would let the frontier follow the wall clock past historical event times)
/// when the job first reads it.
pub const PRIMED: usize = 1000;

impl Replay {
    /// A replay of `records` (a file's, see [`records`]) into `topic` on `bootstrap`.
    ///
    /// # Errors
    ///
    /// When the producer cannot be made.
    pub fn new(
        spec: FileSourceSpec,
        records: Vec<Vec<u8>>,
        bootstrap: &str,
        topic: &str,
    ) -> millrace_connectors::Result<Self> {
        Ok(Replay {
            spec,
            records,
            producer: LineProducer::new(bootstrap, topic, 1)?,
            sent: 0,
        })
    }

    /// Sends the first [`PRIMED`] records (all, for a shorter file) and waits until the broker
    /// has them.
    ///
    /// # Errors
    ///
    /// When a record cannot be sent or acknowledged.
    pub fn prime(&mut self) -> millrace_connectors::Result<()> {
        let first = self.records.len().min(PRIMED);
        for line in &self.records[..first] {
            self.producer.send(line)?;
        }
        self.sent = first as u64;
        self.producer.flush(Duration::from_secs(10))
    }

    /// Produces the rest, paced by the spec's rate and by `read` (the records the job's source
    /// has read), until the replay ends or `stop` is set.
    pub fn run(mut self, read: &AtomicU64, stop: &AtomicBool) {
        let total = self.records.len() as u64;
        if total == 0 {
            return;
        }
        let limit = RateLimit::new(self.spec.rows_per_sec);
        while !stop.load(Ordering::Relaxed) && (self.spec.repeat || self.sent < total) {
            let ahead = self.sent.saturating_sub(read.load(Ordering::Relaxed));
            let delay = limit.delay(self.sent);
            if ahead >= MAX_AHEAD || !delay.is_zero() {
                // Sleep in slices, so that a slow rate does not delay a stop.
                std::thread::sleep(
                    delay.clamp(Duration::from_millis(1), Duration::from_millis(50)),
                );
                continue;
            }
            let line = &self.records[(self.sent % total) as usize];
            if let Err(error) = self.producer.send(line) {
                tracing::error!(%error, "the file replay stops");
                break;
            }
            self.sent += 1;
        }
        if let Err(error) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(%error, "replayed records not all acknowledged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_skipped_and_blank_lines_are_not_records() {
        assert_eq!(
            records(b"a,b\n1,2\n\n3,4\r\n \n", true),
            [&b"1,2"[..], b"3,4\r"]
        );
        assert_eq!(records(b"1,2\n3,4", false).len(), 2);
    }

    #[test]
    fn values_are_checked() {
        let spec = FileSourceSpec {
            path: PathBuf::from("/no/such/file"),
            rows_per_sec: Some(0.0),
            repeat: false,
        };
        let problems = spec.problems();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("`rows_per_sec` must be > 0"));
        assert!(problems[1].contains("`path` /no/such/file cannot be read"));
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
