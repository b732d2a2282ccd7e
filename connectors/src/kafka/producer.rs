//! Producing lines to a topic: the replay producer behind `millrace produce` and the demo's
//! generator.

use crate::error::{kafka, Result};
use crate::kafka::config::client_config;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

/// An optional cap on records per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    per_second: Option<f64>,
    started: Instant,
}

impl RateLimit {
    /// At most `per_second` records per second; `None` or `0` for no limit.
    pub fn new(per_second: Option<f64>) -> Self {
        RateLimit {
            per_second: per_second.filter(|r| *r > 0.0),
            started: Instant::now(),
        }
    }

    /// Sleeps until record number `sent` (counting from 0) may go.
    pub fn wait(&self, sent: u64) {
        if let Some(rate) = self.per_second {
            let due = self.started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

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
    pub fn new(bootstrap_servers: &str, topic: &str, partitions: i32) -> Result<Self> {
        let producer = client_config(bootstrap_servers)
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
    /// When the producer refuses the record for a reason other than a full queue.
    pub fn send(&mut self, line: &[u8]) -> Result<()> {
        let partition = (self.sent % self.partitions as u64) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(&self.topic)
            .payload(line)
            .partition(partition);
        loop {
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
