//! Reading a topic's partitions without blocking.
//!
//! Partitions are spread deterministically over all workers of the job: worker `w` of `n` reads
//! partition `p` when `p % n == w`, so every partition has exactly one reader and no consumer-group
//! rebalance can move it. Until checkpoints exist, a job's learner starts empty, so each reader
//! starts at the beginning of its partitions (everything the topic retains) and commits nothing:
//! resuming from committed offsets with an empty model would silently forget the past.

use crate::error::{kafka, Result};
use crate::kafka::admin::partition_count;
use crate::kafka::config::{client_config, KafkaSourceConfig};
use millrace_models::RawRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The next offset each partition's reader will hand on, shared with progress reporting.
#[derive(Debug)]
pub struct SourcePositions {
    next: Vec<AtomicI64>,
}

impl SourcePositions {
    /// Positions for `partitions` partitions, all unknown.
    pub fn new(partitions: i32) -> Self {
        SourcePositions {
            next: (0..partitions).map(|_| AtomicI64::new(-1)).collect(),
        }
    }

    /// The next offset of each partition; `None` before its first record.
    pub fn snapshot(&self) -> Vec<Option<i64>> {
        self.next
            .iter()
            .map(|n| Some(n.load(Ordering::Relaxed)).filter(|&n| n >= 0))
            .collect()
    }

    /// Consumer lag: records in the partitions beyond what the readers have handed on,
    /// given each partition's high watermark.
    pub fn lag(&self, high_watermarks: &[i64]) -> i64 {
        self.snapshot()
            .iter()
            .zip(high_watermarks)
            .map(|(next, high)| (high - next.unwrap_or(0)).max(0))
            .sum()
    }
}

/// One worker's reader of its share of a topic's partitions.
pub struct KafkaReader {
    consumer: Option<BaseConsumer>,
    positions: Arc<SourcePositions>,
    partitions: Vec<i32>,
}

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
    pub fn topic_partitions(config: &KafkaSourceConfig, bootstrap_servers: &str) -> Result<i32> {
        let consumer: BaseConsumer = client_config(bootstrap_servers)
            .create()
            .map_err(kafka("source"))?;
        partition_count(&consumer, &config.topic)
    }

    /// A reader for worker `worker` of `workers`, over a topic of `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be created or assigned.
    pub fn assign(
        config: &KafkaSourceConfig,
        bootstrap_servers: &str,
        worker: usize,
        workers: usize,
        positions: Arc<SourcePositions>,
    ) -> Result<Self> {
        let partitions: Vec<i32> = (0..positions.next.len() as i32)
            .filter(|p| *p as usize % workers == worker)
            .collect();
        if partitions.is_empty() {
            return Ok(KafkaReader {
                consumer: None,
                positions,
                partitions,
            });
        }
        let consumer: BaseConsumer = client_config(bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            .create()
            .map_err(kafka("source"))?;
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            assignment
                .add_partition_offset(&config.topic, p, Offset::Beginning)
                .map_err(kafka("source"))?;
        }
        consumer.assign(&assignment).map_err(kafka("source"))?;
        Ok(KafkaReader {
            consumer: Some(consumer),
            positions,
            partitions,
        })
    }

    /// The partitions this reader owns.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Appends up to `max` records that are ready now to `out`, without blocking; returns how
    /// many it appended.
    ///
    /// # Errors
    ///
    /// A consumer error (broker unreachable, for example). The reader stays usable: the client
    /// reconnects by itself, so the caller logs and polls again later.
    pub fn poll_into(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Result<usize> {
        let Some(consumer) = &self.consumer else {
            return Ok(0);
        };
        let mut count = 0;
        while count < max {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(error)) => return Err(kafka("source")(error)),
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    let timestamp_ms = message
                        .timestamp()
                        .to_millis()
                        .and_then(|ms| u64::try_from(ms).ok());
                    out.push(RawRecord {
                        partition,
                        offset,
                        payload: message.payload().unwrap_or_default().to_vec(),
                        timestamp_ms,
                    });
                    if let Some(next) = self.positions.next.get(partition as usize) {
                        next.store(offset + 1, Ordering::Relaxed);
                    }
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}
