//! Producing lines to a topic: the replay producer behind `millrace produce` and the demo's
//! generator.

use crate::error::{kafka, Error, Result};
use crate::kafka::config::Brokers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

/// An optional cap on records per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    per_second: Option<f64>,
    started: Instant,
}

/// The slowest rate a [`RateLimit`] honours; slower ones are raised to it.
pub const MIN_RATE: f64 = 1e-3;

impl RateLimit {
    /// At most `per_second` records per second (at least [`MIN_RATE`]); `None`, `0`, negative or
    /// not finite for no limit.
    pub fn new(per_second: Option<f64>) -> Self {
        RateLimit {
            per_second: per_second
                .filter(|r| *r > 0.0 && r.is_finite())
                .map(|r| r.max(MIN_RATE)),
            started: Instant::now(),
        }
    }

    /// How long until record number `sent` (counting from 0) may go; zero when it may go now.
    pub fn delay(&self, sent: u64) -> Duration {
        let Some(rate) = self.per_second else {
            return Duration::ZERO;
        };
        let due = Duration::from_secs_f64(sent as f64 / rate);
        due.saturating_sub(self.started.elapsed())
    }

    /// Sleeps until record number `sent` may go.
    pub fn wait(&self, sent: u64) {
        std::thread::sleep(self.delay(sent));
    }
}

/// How long a send waits for room in a full producer queue before it gives up.
pub(crate) const SEND_BLOCK_LIMIT: Duration = Duration::from_secs(30);

/// Sends lines to the partitions of a topic in turn, with the idempotent producer.
pub struct LineProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    partitions: i32,
    sent: u64,
}

impl std::fmt::Debug for LineProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineProducer")
            .field("topic", &self.topic)
            .field("sent", &self.sent)
            .finish()
    }
}

impl LineProducer {
    /// A producer to `topic`, which has `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the producer cannot be created.
    pub fn new(brokers: &Brokers, topic: &str, partitions: i32) -> Result<Self> {
        let producer = brokers
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(kafka("producer"))?;
        Ok(LineProducer {
            producer,
            topic: topic.to_owned(),
            partitions: partitions.max(1),
            sent: 0,
        })
    }

    /// Queues one line, waiting while the producer's queue is full.
    ///
    /// # Errors
    ///
    /// When the producer refuses the record, or its queue stays full for 30 s.
    pub fn send(&mut self, line: &[u8]) -> Result<()> {
        self.send_at(line, None)
    }

    /// Queues one line with `timestamp_ms` (milliseconds since the Unix epoch) as its create
    /// time, the event time the job reads; `None` lets the client stamp it with the clock.
    ///
    /// # Errors
    ///
    /// As [`LineProducer::send`].
    pub fn send_at(&mut self, line: &[u8], timestamp_ms: Option<i64>) -> Result<()> {
        let partition = (self.sent % self.partitions as u64) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(&self.topic)
            .payload(line)
            .partition(partition);
        if let Some(timestamp) = timestamp_ms {
            record = record.timestamp(timestamp);
        }
        let started = Instant::now();
        loop {
            if started.elapsed() > SEND_BLOCK_LIMIT {
                return Err(Error::QueueFull {
                    connector: "producer",
                    seconds: SEND_BLOCK_LIMIT.as_secs(),
                });
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((error, returned))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(kafka("producer")(error)),
            }
        }
        self.sent += 1;
        Ok(())
    }

    /// Lines queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits until every queued line is acknowledged.
    ///
    /// # Errors
    ///
    /// When they are not acknowledged within `timeout`.
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(kafka("producer"))
    }
}
