//! The `file` source (`[source] type = "file"`): a file of records read as one partition, for
//! backfills, demos and tests on real data. A record's offset is its number in the file
//! (counting on through the passes of a repeated one), so a restored job reads on from the
//! record after its checkpoint's.
//!
//! The file is bounded (the job ends once every record has been handed on) unless `repeat` is
//! set; it goes at `rows_per_sec` or as fast as the job takes it. A record's event time is its
//! schema's time field when there is one (a repeated file takes the wall clock instead: a
//! second pass cannot go back in event time), else the wall clock when it is read.

use super::config::{read_config, resolve_path_key};
use super::cursor::Cursor;
use super::source::{
    paced_idle, EventTimeReader, ReaderContext, Source, SourceContext, SourceFactory,
};
use millrace_models::{RawRecord, Schema};
use millrace_operators::{now_ms, BoxError, PartitionReader, Polled};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `file` source's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    /// The file, one record per line (relative to the job file's folder when read from one).
    pub path: PathBuf,
    /// Records per second; as fast as the job takes them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_sec: Option<f64>,
    /// Start again at the first record after the last, until the job is stopped.
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
}

/// The `file` source type.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileFactory;

impl SourceFactory for FileFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match read_config::<FileSourceSpec>(config) {
            Ok(file) => file.problems(),
            Err(problems) => problems,
        }
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <FileSourceSpec as schemars::JsonSchema>::json_schema(generator)
    }

    fn resolve_paths(&self, config: &mut toml::Table, folder: &Path) {
        resolve_path_key(config, folder);
    }

    fn open(
        &self,
        config: &toml::Table,
        context: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, BoxError> {
        let spec = read_config::<FileSourceSpec>(config).map_err(|p| p.join("; "))?;
        let data = FileData::read(spec, context.schema, context.event_time.clone())?;
        Ok(Arc::new(FileSource(Arc::new(data))))
    }
}

/// A file's records, read whole, shared by the workers' readers.
struct FileSource(Arc<FileData>);

/// A file's records.
struct FileData {
    spec: FileSourceSpec,
    text: Vec<u8>,
    /// Each record's place in `text`.
    records: Vec<Range<usize>>,
    /// The reader of the records' event times, when the schema's time field gives them.
    event_time: Option<EventTimeReader>,
}

/// Why a file cannot be a source.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Header {
        path: PathBuf,
        #[source]
        source: millrace_models::schema::HeaderMismatch,
    },
}

impl FileData {
    /// Reads the spec's file and its records by `schema` (the header line checked and left
    /// out), their event times by `event_time` unless the file repeats.
    fn read(
        spec: FileSourceSpec,
        schema: &Schema,
        event_time: Option<EventTimeReader>,
    ) -> Result<FileData, FileError> {
        let text = std::fs::read(&spec.path).map_err(|source| FileError::Read {
            path: spec.path.clone(),
            source,
        })?;
        let records = schema
            .record_spans(&text)
            .map_err(|source| FileError::Header {
                path: spec.path.clone(),
                source,
            })?;
        let event_time = event_time.filter(|_| !spec.repeat);
        Ok(FileData {
            spec,
            text,
            records,
            event_time,
        })
    }
}

impl Source for FileSource {
    fn partitions(&self) -> i32 {
        1
    }

    fn idle(&self) -> Duration {
        paced_idle(self.0.spec.rows_per_sec)
    }

    fn stop_after_records(&self) -> Option<u64> {
        (!self.0.spec.repeat).then_some(self.0.records.len() as u64)
    }

    fn reader(&self, worker: &ReaderContext) -> Result<Box<dyn PartitionReader>, BoxError> {
        let end = (!self.0.spec.repeat).then_some(self.0.records.len() as u64);
        let cursor = worker
            .share(1)
            .first()
            .map(|&p| Cursor::new(p, end, self.0.spec.rows_per_sec));
        Ok(Box::new(FileReader {
            file: self.0.clone(),
            cursor,
            worker: worker.clone(),
        }))
    }

    fn ends(&self) -> Option<Vec<i64>> {
        (!self.0.spec.repeat).then(|| vec![self.0.records.len() as i64])
    }
}

/// One worker's reader of the file: the worker that owns its one partition reads it, the
/// others have nothing to read.
struct FileReader {
    file: Arc<FileData>,
    /// The owner's place in the file; `None` for the other workers.
    cursor: Option<Cursor>,
    worker: ReaderContext,
}

impl PartitionReader for FileReader {
    fn partitions(&self) -> Vec<i32> {
        self.cursor.iter().map(Cursor::partition).collect()
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        let total = self.file.records.len() as u64;
        let Some(cursor) = self.cursor.as_mut().filter(|_| total > 0) else {
            return Polled::Idle;
        };
        let (before, wall_ms) = (out.len(), now_ms());
        while out.len() - before < max && cursor.ready() {
            let span = self.file.records[(cursor.next() % total) as usize].clone();
            let event_time = self.file.event_time.as_ref();
            out.push(cursor.take(&self.worker, &self.file.text[span], event_time, wall_ms));
        }
        if out.len() > before {
            Polled::Records
        } else {
            Polled::Idle
        }
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> Result<(), BoxError> {
        let timed = self.file.event_time.is_some();
        for &(partition, offset) in positions {
            match (self.cursor.as_mut(), u64::try_from(offset)) {
                (Some(cursor), Ok(offset)) if partition == 0 => cursor.seek(offset, timed),
                _ => {
                    return Err(format!(
                        "this worker does not read offset {offset} of partition {partition} (a file has one partition, 0, read by one worker)"
                    )
                    .into())
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self, _positions: &[(i32, i64)]) {}

    fn at_end(&self, _partition: i32) -> bool {
        self.cursor.as_ref().is_none_or(Cursor::at_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: usize) -> ReaderContext {
        ReaderContext {
            index,
            peers: 2,
            event_time_missing: Arc::default(),
            skipped: Arc::default(),
        }
    }

    fn file(lines: &str, repeat: bool) -> (tempfile::TempDir, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        std::fs::write(&path, lines).unwrap();
        let spec = FileSourceSpec {
            path,
            rows_per_sec: None,
            repeat,
        };
        let data = FileData::read(spec, &Schema::criteo(), None).unwrap();
        (dir, FileSource(Arc::new(data)))
    }

    fn offsets(reader: &mut dyn PartitionReader, max: usize) -> (Vec<i64>, Polled) {
        let mut out = Vec::new();
        let polled = reader.poll(&mut out, max);
        (out.iter().map(|r| r.offset).collect(), polled)
    }

    #[test]
    fn values_are_checked_and_paths_resolved() {
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
        let mut table: toml::Table = toml::from_str("path = \"data.csv\"").unwrap();
        FileFactory.resolve_paths(&mut table, Path::new("/jobs"));
        assert_eq!(table["path"].as_str(), Some("/jobs/data.csv"));
        let missing = FileSourceSpec {
            path: PathBuf::from("/no/such/file"),
            ..spec
        };
        assert!(matches!(
            FileData::read(missing, &Schema::criteo(), None),
            Err(FileError::Read { .. })
        ));
    }

    #[test]
    fn the_owner_reads_every_record_once_and_resumes_after_a_seek() {
        let (_dir, source) = file("1\ta\n0\tb\n\n1\tc\n", false);
        assert_eq!(source.stop_after_records(), Some(3));
        assert_eq!(source.ends(), Some(vec![3]));
        let mut other = source.reader(&worker(1)).unwrap();
        assert!(other.partitions().is_empty());
        assert_eq!(offsets(&mut *other, 10), (vec![], Polled::Idle));
        let mut owner = source.reader(&worker(0)).unwrap();
        assert!(!owner.at_end(0));
        assert_eq!(offsets(&mut *owner, 2), (vec![0, 1], Polled::Records));
        assert_eq!(offsets(&mut *owner, 2), (vec![2], Polled::Records));
        assert!(owner.at_end(0));
        assert_eq!(offsets(&mut *owner, 2), (vec![], Polled::Idle));
        let mut resumed = source.reader(&worker(0)).unwrap();
        resumed.seek(&[(0, 1)]).unwrap();
        assert_eq!(offsets(&mut *resumed, 10), (vec![1, 2], Polled::Records));
        assert!(resumed.seek(&[(1, 0)]).is_err());
    }

    #[test]
    fn a_repeated_file_goes_round_with_the_wall_clock() {
        let (_dir, source) = file("1\ta\n0\tb\n", true);
        assert_eq!((source.stop_after_records(), source.ends()), (None, None));
        let mut owner = source.reader(&worker(0)).unwrap();
        let mut out = Vec::new();
        assert_eq!(owner.poll(&mut out, 5), Polled::Records);
        let payloads: Vec<&[u8]> = out.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(payloads, [&b"1\ta"[..], b"0\tb", b"1\ta", b"0\tb", b"1\ta"]);
        assert_eq!(out[4].offset, 4);
        assert!(out.iter().all(|r| r.timestamp_ms.is_some()));
    }
}
