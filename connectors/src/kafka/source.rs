//! Reading a topic's partitions without blocking.
//!
//! Partitions are spread deterministically over all workers of the job (all processes): worker
//! `w` of `n` reads partition `p` when `p % n == w`, so every partition has exactly one reader
//! and no consumer-group rebalance can move it. A reader starts at the beginning of its
//! partitions (everything the topic retains) unless the job restores a checkpoint, which
//! [`KafkaReader::seek`]s it to the checkpoint's positions. The positions of each written
//! checkpoint are committed to the consumer group ([`KafkaReader::commit`]) so that standard
//! Kafka tooling shows the job's lag; the job itself resumes from its checkpoints, never from
//! the group's offsets, which could be ahead of the state it restores.

use crate::error::{kafka, Error, Result};
use crate::kafka::admin::partition_count;
use crate::kafka::config::{Brokers, KafkaSourceConfig, MissingOffsets};
use millrace_models::record::partition_share;
use millrace_models::{event_time_ms, RawRecord};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads the event time of a record from its payload (milliseconds since the Unix epoch), or
/// `None` when the record has no usable one.
pub type EventTimeReader = Arc<dyn Fn(&[u8]) -> Option<u64> + Send + Sync>;

/// One worker's reader of its share of a topic's partitions.
pub struct KafkaReader {
    consumer: Option<BaseConsumer<ReaderContext>>,
    topic: String,
    partitions: Vec<i32>,
    /// Per partition, the next offset to hand on: records before it (before a sought
    /// position, or delivered again) are dropped.
    skip_below: Vec<(i32, i64)>,
    /// Whether the partitions are assigned yet: on the first poll (from the beginning), or by
    /// a seek before it, so that nothing is fetched from a position a seek then abandons.
    assigned: bool,
    /// Reads a record's event time from its payload, if the records carry one (a JSON field
    /// named by `event_time_field`, or a declared schema's time field).
    event_time: Option<EventTimeReader>,
    /// With a declared time field: the partitions that have shown a readable time in this
    /// run. A record of theirs whose time cannot be read is handed on
    /// without a time, which keeps it at its partition's current time: the Kafka timestamp of
    /// a replayed file is the replay's clock, which would carry the rest of a historical file
    /// into today's epoch. `None` with `event_time_field`, whose records fall back to their
    /// Kafka timestamp.
    timed: Option<Vec<i32>>,
    /// Records without a usable event-time field (they kept their Kafka timestamp).
    missing_event_times: u64,
    /// The partitions read to their end: the client reported that it reached the end and no
    /// record of theirs came since.
    at_end: Vec<i32>,
    /// What a sought position the broker no longer has makes the reader do.
    on_missing: MissingOffsets,
    /// Per partition, the records skipped because their positions were gone
    /// ([`MissingOffsets::Skip`]): set, not added, by each seek, so a seek made twice (before
    /// the dataflow and in it) counts once.
    skipped: BTreeMap<i32, u64>,
}

/// A reader's client context: the partition ends it asks for (`enable.partition.eof`) are
/// bookkeeping, not failures, so they are not logged as librdkafka's global errors (which the
/// client reports every error event as, before the poll hands it on).
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// How far before a sought offset a reader starts fetching. A broker answers a fetch with whole
/// record batches: Kafka with the batch that holds the offset (the client drops the records
/// before it), but tansu 0.6 (the test broker) with the batch after it, losing the rest of that
/// batch. Starting at least one batch earlier (our producers batch at most 10,000 records) and
/// dropping what comes before the offset here is right with both.
const SEEK_SLACK: i64 = 10_000;

/// How long a new reader waits for its topic's metadata before it goes on without.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl KafkaReader {
    /// The number of partitions of the source's topic.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached or the topic does not exist.
    pub fn topic_partitions(config: &KafkaSourceConfig, brokers: &Brokers) -> Result<i32> {
        let consumer: BaseConsumer = brokers.client_config().create().map_err(kafka("source"))?;
        partition_count(&consumer, &config.topic)
    }

    /// A reader for worker `worker` of `workers` (over all processes), over a topic of
    /// `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be created or assigned.
    pub fn assign(
        config: &KafkaSourceConfig,
        brokers: &Brokers,
        worker: usize,
        workers: usize,
        partitions: i32,
    ) -> Result<Self> {
        let topic = config.topic.clone();
        let partitions = partition_share(partitions, worker, workers);
        if partitions.is_empty() {
            return Ok(KafkaReader {
                consumer: None,
                topic,
                partitions,
                skip_below: Vec::new(),
                assigned: true,
                event_time: None,
                timed: None,
                missing_event_times: 0,
                at_end: Vec::new(),
                on_missing: config.on_missing_offsets,
                skipped: BTreeMap::new(),
            });
        }
        let consumer: BaseConsumer<ReaderContext> = brokers
            .client_config()
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // The client tells when it reaches a partition's end: only then is a partition that
            // shows nothing idle rather than slow to start.
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            // 4 MiB per partition per fetch (librdkafka's default is 1 MiB): a backlog comes in
            // a quarter of the fetches (perf/RESULTS.md, issue 4's ingest figures).
            .set("fetch.message.max.bytes", "4194304")
            .create_with_context(ReaderContext)
            .map_err(kafka("source"))?;
        // Learn the partitions' leaders now: a partition assigned before its leader is known
        // waits 500 ms (librdkafka's fixed back-off) before its start offset is looked up. The
        // client finds the leaders by itself when this fails, only later.
        if let Err(error) = consumer.fetch_metadata(Some(&topic), METADATA_TIMEOUT) {
            tracing::debug!(%error, "no metadata before the assignment");
        }
        Ok(KafkaReader {
            consumer: Some(consumer),
            topic,
            partitions,
            skip_below: Vec::new(),
            assigned: false,
            event_time: config.event_time_field.clone().map(|field| {
                let read: EventTimeReader =
                    Arc::new(move |payload: &[u8]| event_time_ms(payload, &field));
                read
            }),
            timed: None,
            missing_event_times: 0,
            at_end: Vec::new(),
            on_missing: config.on_missing_offsets,
            skipped: BTreeMap::new(),
        })
    }

    /// Starts the partitions at the given next offsets (the others at their beginning); call it
    /// before the first poll.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be assigned.
    pub fn seek(&mut self, positions: &[(i32, i64)]) -> Result<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let mut starts = Vec::new();
        let mut skipped = Vec::new();
        for &(partition, offset) in positions {
            if !self.partitions.contains(&partition) {
                continue;
            }
            // Only the first offset is asked: tansu 0.6 can report an end short of what it
            // holds, so a position past the reported end is not taken for a topic made anew.
            let low = first_offset(consumer, &self.topic, partition)?;
            if offset < low && self.on_missing == MissingOffsets::Fail {
                return Err(Error::OffsetGone {
                    topic: self.topic.clone(),
                    partition,
                    offset,
                    low,
                });
            }
            if offset < low {
                tracing::error!(
                    topic = %self.topic,
                    partition,
                    offset,
                    low,
                    "records gone from the broker before the job read them: skipped and counted"
                );
                skipped.push((partition, (low - offset) as u64));
            }
            starts.push((partition, offset.max(low), low));
        }
        self.skipped.extend(skipped);
        self.skip_below = starts.iter().map(|&(p, next, _)| (p, next)).collect();
        let mut assignment = TopicPartitionList::new();
        for &p in &self.partitions {
            let offset = starts
                .iter()
                .find(|(partition, _, _)| *partition == p)
                .map_or(Offset::Beginning, |(_, next, low)| {
                    Offset::Offset((next - SEEK_SLACK).max(*low))
                });
            assignment
                .add_partition_offset(&self.topic, p, offset)
                .map_err(kafka("source"))?;
        }
        consumer.assign(&assignment).map_err(kafka("source"))?;
        self.assigned = true;
        self.at_end.clear();
        Ok(())
    }

    /// Stops (`paused`) or resumes fetching `partition`, which goes on with its next record.
    ///
    /// librdkafka drops what it had fetched of a partition when it pauses it and fetches again
    /// from the next offset on resume, which tansu 0.6 answers with the record batch after the
    /// one holding it; so a resumed partition is sought `SEEK_SLACK` records back instead, and
    /// what comes before its next record is dropped, as after [`KafkaReader::seek`].
    ///
    /// # Errors
    ///
    /// When the client refuses.
    pub fn pause(&mut self, partition: i32, paused: bool) -> Result<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        if paused {
            return consumer.pause(&list).map_err(kafka("source"));
        }
        let offset = self
            .skip_below
            .iter()
            .find(|(p, _)| *p == partition)
            .map_or(Offset::Beginning, |(_, next)| {
                Offset::Offset((next - SEEK_SLACK).max(0))
            });
        consumer
            .seek(&self.topic, partition, offset, Duration::from_secs(1))
            .map_err(kafka("source"))?;
        consumer.resume(&list).map_err(kafka("source"))?;
        // Records may have come while it was paused: its end is to be found again (the client
        // reports it again after the seek).
        self.at_end.retain(|p| *p != partition);
        Ok(())
    }

    /// Commits `positions` (next offsets) to the consumer group, without waiting.
    ///
    /// # Errors
    ///
    /// When the commit cannot be sent.
    pub fn commit(&self, positions: &[(i32, i64)]) -> Result<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let mut offsets = TopicPartitionList::new();
        for &(p, offset) in positions {
            offsets
                .add_partition_offset(&self.topic, p, Offset::Offset(offset))
                .map_err(kafka("source"))?;
        }
        consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(kafka("source"))
    }

    /// Takes each record's event time from its payload with `read` (a declared schema's time
    /// field). A record for which it gives `None` is counted in
    /// [`KafkaReader::missing_event_times`] and handed on without a time once its partition
    /// has shown a readable one (the source keeps it at the partition's current time), with
    /// its Kafka timestamp before that (so that a field no record fills still moves the
    /// epochs).
    pub fn with_event_time(mut self, read: EventTimeReader) -> Self {
        self.event_time = Some(read);
        self.timed = Some(Vec::new());
        self
    }

    /// Records skipped so far because the positions to resume from were gone from the broker
    /// (`[source] on_missing_offsets = "skip"`).
    pub fn skipped_records(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Records read so far without a usable event time in their payload (0 without a reader).
    pub fn missing_event_times(&self) -> u64 {
        self.missing_event_times
    }

    /// The partitions this reader owns.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Whether `partition` has been read to its end: the client reached the end the broker
    /// last reported, and no record of it came since. False until the first fetch answers, and
    /// again after a seek.
    pub fn at_end(&self, partition: i32) -> bool {
        self.at_end.contains(&partition)
    }

    /// Appends up to `max` records that are ready now to `out`, without blocking; returns how
    /// many it appended.
    ///
    /// # Errors
    ///
    /// A consumer error (broker unreachable, for example). The reader stays usable: the client
    /// reconnects by itself, so the caller logs and polls again later.
    pub fn poll_into(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<usize> {
        if !self.assigned {
            // The positions of a seek that failed (a restored checkpoint's), else none: every
            // partition from its beginning.
            let positions = self.skip_below.clone();
            self.seek(&positions)?;
        }
        let Some(consumer) = &self.consumer else {
            return Ok(0);
        };
        let mut count = 0;
        while count < max {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if !self.at_end.contains(&partition) {
                        self.at_end.push(partition);
                    }
                }
                Some(Err(error)) => return Err(kafka("source")(error)),
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    self.at_end.retain(|p| *p != partition);
                    match self.skip_below.iter_mut().find(|(p, _)| *p == partition) {
                        Some((_, next)) if offset < *next => continue,
                        Some((_, next)) => *next = offset + 1,
                        None => self.skip_below.push((partition, offset + 1)),
                    }
                    let payload = message.payload().unwrap_or_default();
                    let kafka_time = || {
                        message
                            .timestamp()
                            .to_millis()
                            .and_then(|ms| u64::try_from(ms).ok())
                    };
                    let timestamp_ms = match &self.event_time {
                        None => kafka_time(),
                        Some(read) => match (read(payload), self.timed.as_mut()) {
                            (Some(t), Some(timed)) => {
                                if !timed.contains(&partition) {
                                    timed.push(partition);
                                }
                                Some(t)
                            }
                            (Some(t), None) => Some(t),
                            // After a readable time in the partition: no time, and the
                            // source keeps the record at its partition's current time.
                            (None, Some(timed)) if timed.contains(&partition) => {
                                self.missing_event_times += 1;
                                None
                            }
                            (None, _) => {
                                self.missing_event_times += 1;
                                kafka_time()
                            }
                        },
                    };
                    out.push(RawRecord {
                        partition,
                        offset,
                        payload: payload.to_vec(),
                        timestamp_ms,
                    });
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

/// How long a reader keeps asking for a partition's first offset while the broker does not
/// answer.
const WATERMARKS_PATIENCE: Duration = Duration::from_secs(30);

/// A partition's first offset (what retention left), asked again while the broker does not
/// answer.
fn first_offset(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
) -> Result<i64> {
    let started = Instant::now();
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok((low, _)) => return Ok(low),
            Err(error) if started.elapsed() >= WATERMARKS_PATIENCE => {
                return Err(kafka("source")(error))
            }
            Err(error) => {
                tracing::debug!(%error, partition, "no offsets yet; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
