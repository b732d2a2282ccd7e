//! The `file` sink (`{ type = "file", path = … }`): each message appended as one JSON line to
//! a file per output and worker, for local runs, backfills and tests.

use super::config::{read_config, resolve_path_key};
use super::sink::{OutputWriter, SinkContext, SinkFactory};
use millrace_connectors::kafka::Output;
use millrace_operators::BoxError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The `file` sink's settings: a directory of JSON lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <FileSinkSpec as schemars::JsonSchema>::json_schema(generator)
    }

    fn resolve_paths(&self, config: &mut toml::Table, folder: &Path) {
        resolve_path_key(config, folder);
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
            buffered: None,
        }))
    }
}

/// One worker's file of an output.
struct FileWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    lost: Arc<AtomicU64>,
    /// The least epoch, and the number, of the lines not written out of the buffer yet.
    buffered: Option<(u64, u64)>,
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
    /// Counts `n` lost messages, logging the first.
    fn lose(&self, n: u64, error: &dyn std::fmt::Display) {
        if self.lost.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::error!(%error, path = %self.path.display(), "messages could not be written (the first lost)");
        }
    }

    /// Writes the buffer out: its lines are settled, written or lost and counted.
    fn write_out(&mut self) {
        let Some((_, n)) = self.buffered.take() else {
            return;
        };
        if let Err(error) = self.file.flush() {
            self.lose(n, &error);
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
        match written {
            Ok(()) => {
                let (from, n) = self.buffered.unwrap_or((output.epoch, 0));
                self.buffered = Some((from.min(output.epoch), n + 1));
            }
            Err(error) => self.lose(1, &error),
        }
    }

    fn flush(&mut self) {
        self.write_out();
    }

    /// A line still in the buffer would be lost with the process: the buffer is written out
    /// before the answer, so that no checkpoint covers an epoch whose lines are not in the
    /// file.
    fn unsettled_from(&mut self) -> Option<u64> {
        self.write_out();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::KafkaSinkFactory;
    use millrace_connectors::kafka::{Brokers, Undelivered};

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
            bootstrap: &Brokers::default(),
            lost: lost.clone(),
            undelivered: Undelivered::Block,
        };
        let mut writer = FileSinkFactory.open(&config, &context).unwrap();
        writer.send(Output {
            epoch: 7,
            key: Some(b"0:12"),
            payload: b"not\tan event",
            headers: &[("error_type", b"label")],
        });
        // Settled once written out: the line is in the file before the answer.
        assert_eq!(writer.unsettled_from(), None);
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
