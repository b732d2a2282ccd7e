//! What a source type is to the catalog: a factory that checks its `[source]` table and opens
//! a [`Source`], whose readers the dataflow's workers poll.
//!
//! A source is partitioned, and a record's position is its partition and offset: the job
//! checkpoints each partition's next offset with the state built from the records before it, and
//! a restored job seeks its readers there ([`PartitionReader::seek`]). A source that can go back
//! to an offset is exactly-once; one that cannot is at-least-once from its own retention.

use millrace_connectors::kafka::Brokers;
use millrace_models::record::partition_share;
use millrace_models::{Decoder, RawRecord, Schema};
use millrace_operators::{BoxError, PartitionReader};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reads a record's event time (milliseconds since the Unix epoch) from its bytes: `None` when
/// the record has no readable time.
pub use millrace_connectors::kafka::EventTimeReader;

/// What a source is opened with: the job it serves.
#[derive(Clone)]
pub struct SourceContext<'a> {
    /// The job's name.
    pub job: &'a str,
    /// The job's schema: the records' format, and their time field if any.
    pub schema: &'a Arc<Schema>,
    /// The reader of the schema's time field (through the schema's decoder when it names
    /// one), when the schema has a time field.
    pub event_time: Option<EventTimeReader>,
    /// The job's Kafka brokers (an embedded broker's address when the job runs one; empty
    /// when it has none): where its Kafka outputs go, and a `kafka` source's topic is.
    pub bootstrap: &'a Brokers,
}

/// The reader of `schema`'s time field, through `decoder` when the schema names one; `None`
/// when the schema has no time field.
pub fn event_time_reader(
    schema: &Arc<Schema>,
    decoder: Option<Arc<dyn Decoder>>,
) -> Option<EventTimeReader> {
    if !schema.has_time_field() {
        return None;
    }
    let schema = schema.clone();
    Some(match decoder {
        Some(decoder) => Arc::new(move |payload: &[u8]| {
            let object = decoder.decode(payload).ok()?;
            schema.event_time_of_object(&object)
        }),
        None => Arc::new(move |payload: &[u8]| schema.event_time(payload)),
    })
}

/// How long a partition whose records come at `rate` a second may be silent before it goes
/// idle: longer than three records' interval, so that it never goes idle (and the frontier
/// past the event times still to come) between two of its records; at least Kafka's default.
pub fn paced_idle(rate: Option<f64>) -> Duration {
    let paced = rate.map_or(0, |rate| (3000.0 / rate).ceil() as u64);
    Duration::from_millis(
        paced.max(millrace_connectors::kafka::KafkaSourceConfig::default_idle_ms()),
    )
}

/// What a worker's reader is made with.
#[derive(Clone, Debug)]
pub struct ReaderContext {
    /// The worker's index in the job.
    pub index: usize,
    /// How many workers the job has.
    pub peers: usize,
    /// Counts the records whose time field could not be read (they take the time the source
    /// gives them instead), for the whole job.
    pub event_time_missing: Arc<AtomicU64>,
    /// Counts the records skipped because the source no longer had them where a restored
    /// checkpoint resumes, for the whole job.
    pub skipped: Arc<AtomicU64>,
}

impl ReaderContext {
    /// The worker's share of `partitions`: every partition whose number is its index modulo
    /// the workers, as Kafka topics are shared.
    pub fn share(&self, partitions: i32) -> Vec<i32> {
        partition_share(partitions, self.index, self.peers)
    }

    /// A record at `offset` of `partition`, its event time read by `event_time` when given. A
    /// record whose time cannot be read is counted, and keeps the partition's current time once
    /// the partition has shown a readable one (`timed`: the source's epochs do not jump to the
    /// wall clock and back), the wall clock `wall_ms` before; every record has the wall clock
    /// without `event_time`. (Kafka's reader gives such a record its log timestamp instead of
    /// the wall clock.)
    pub fn stamped(
        &self,
        (partition, offset): (i32, i64),
        payload: &[u8],
        (event_time, timed): (Option<&EventTimeReader>, &mut bool),
        wall_ms: u64,
    ) -> RawRecord {
        let timestamp_ms = match event_time.map(|read| read(payload)) {
            None => Some(wall_ms),
            Some(Some(event_ms)) => {
                *timed = true;
                Some(event_ms)
            }
            Some(None) => {
                self.event_time_missing.fetch_add(1, Ordering::Relaxed);
                (!*timed).then_some(wall_ms)
            }
        };
        RawRecord {
            partition,
            offset,
            payload: payload.to_vec(),
            timestamp_ms,
        }
    }
}

/// A type of source, registered in the [`Catalog`](super::Catalog) under its name.
pub trait SourceFactory: Send + Sync {
    /// Every problem of the source's table (its keys other than `type`), each naming its key;
    /// empty when the source can be opened.
    fn problems(&self, config: &toml::Table) -> Vec<String>;

    /// The JSON Schema of the source's table (its keys other than `type`), for the job file's
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

    /// Whether the source is a Kafka topic on the job's brokers (whose settings then decide
    /// where the brokers are). Every other source's job runs an embedded broker for its
    /// outputs.
    fn is_kafka(&self) -> bool {
        false
    }

    /// Opens the source for one process of the job (once, before its workers start).
    ///
    /// # Errors
    ///
    /// Whatever keeps the source from opening (a file that cannot be read, a broker that
    /// does not answer).
    fn open(
        &self,
        config: &toml::Table,
        context: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, BoxError>;
}

/// An opened source, shared by the workers of a process.
pub trait Source: Send + Sync {
    /// How many partitions it has.
    fn partitions(&self) -> i32;

    /// How long a partition that is read to its end waits, with no new record, before it
    /// stops holding the epochs back.
    fn idle(&self) -> Duration {
        Duration::from_millis(millrace_connectors::kafka::KafkaSourceConfig::default_idle_ms())
    }

    /// The reader of one worker: its share of the partitions.
    ///
    /// # Errors
    ///
    /// When the reader cannot be made.
    fn reader(&self, worker: &ReaderContext) -> Result<Box<dyn PartitionReader>, BoxError>;

    /// The records after which the job ends (the whole job's count), when the source is
    /// bounded so. A bounded source other than `kafka` runs as one process: the count each
    /// process sees is its own.
    fn stop_after_records(&self) -> Option<u64> {
        None
    }

    /// The end of each partition now (the offset its next record will have), when the source
    /// knows: what the progress line's lag is counted against.
    fn ends(&self) -> Option<Vec<i64>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: usize, peers: usize) -> ReaderContext {
        ReaderContext {
            index,
            peers,
            event_time_missing: Arc::default(),
            skipped: Arc::default(),
        }
    }

    #[test]
    fn partitions_are_shared_round_robin() {
        assert_eq!(worker(1, 2).share(5), [1, 3]);
        assert_eq!(worker(1, 2).share(1), Vec::<i32>::new());
        assert_eq!(worker(0, 0).share(3), [0, 1, 2]);
    }

    #[test]
    fn a_record_without_a_readable_time_is_counted_and_keeps_its_partitions_time() {
        let spec: millrace_models::SchemaSpec = toml::from_str(
            "format = \"csv\"\nevent_time_format = \"s\"\nfields = [{ name = \"label\", type = \"label\" }, { name = \"t\", type = \"time\" }, { name = \"a\", type = \"category\" }]",
        )
        .unwrap();
        let schema = Arc::new(spec.compile().unwrap());
        let read = event_time_reader(&schema, None);
        let read = read.as_ref();
        let reader = worker(0, 1);
        let mut timed = false;
        let first = reader.stamped((0, 6), b"1,never,x", (read, &mut timed), 5);
        assert_eq!(first.timestamp_ms, Some(5));
        let on_time = reader.stamped((0, 7), b"1,100,x", (read, &mut timed), 5);
        assert_eq!((on_time.offset, on_time.timestamp_ms), (7, Some(100_000)));
        let untimed = reader.stamped((0, 8), b"1,never,x", (read, &mut timed), 5);
        assert_eq!(untimed.timestamp_ms, None);
        let wall = reader.stamped((0, 9), b"1,never,x", (None, &mut false), 6);
        assert_eq!(wall.timestamp_ms, Some(6));
        assert_eq!(reader.event_time_missing.load(Ordering::Relaxed), 2);
        assert!(event_time_reader(&Arc::new(Schema::criteo()), None).is_none());
    }

    /// Turns `t=…;x=…` into `{"t": …, "x": …}`.
    struct Pairs;

    impl Decoder for Pairs {
        fn decode(&self, payload: &[u8]) -> Result<serde_json::Value, String> {
            let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
            let pairs = text.split(';').filter_map(|p| p.split_once('='));
            Ok(pairs
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect())
        }
    }

    #[test]
    fn a_decoded_records_time_is_read_from_its_object() {
        let spec: millrace_models::SchemaSpec = toml::from_str(
            "format = \"json\"\ndecoder = \"pairs\"\nevent_time_format = \"s\"\nfields = [{ name = \"y\", type = \"label\" }, { name = \"t\", type = \"time\" }, { name = \"x\", type = \"category\" }]",
        )
        .unwrap();
        let schema = Arc::new(spec.compile().unwrap());
        let read = event_time_reader(&schema, Some(Arc::new(Pairs))).unwrap();
        assert_eq!(read(b"y=1;t=100;x=a"), Some(100_000));
        assert_eq!(read(b"y=1;x=a"), None);
    }
}
