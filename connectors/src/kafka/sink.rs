//! The dead-letter sink: records that failed to decode, unchanged, with the reason in headers.

use crate::error::{kafka, Error, Result};
use crate::kafka::config::client_config;
use crate::kafka::producer::SEND_BLOCK_LIMIT;
use millrace_models::DeadLetter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

/// Sends dead letters to a topic with the idempotent producer.
///
/// Each message keeps the original payload and carries the headers `error`, `error_type`,
/// `source_partition` and `source_offset`.
pub struct DeadLetterSink {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl std::fmt::Debug for DeadLetterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterSink")
            .field("topic", &self.topic)
            .finish()
    }
}

/// How long a flush waits for outstanding dead letters.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

impl DeadLetterSink {
    /// A sink to `topic`.
    ///
    /// # Errors
    ///
    /// When the producer cannot be created.
    pub fn new(bootstrap_servers: &str, topic: &str) -> Result<Self> {
        let producer = client_config(bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .map_err(kafka("dead letters"))?;
        Ok(DeadLetterSink {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Queues one dead letter, waiting while the producer's queue is full.
    ///
    /// # Errors
    ///
    /// When the producer refuses it, or its queue stays full for 30 s; the letter is then lost
    /// and the caller counts it.
    pub fn send(&mut self, letter: &DeadLetter) -> Result<()> {
        let partition = letter.record.partition.to_string();
        let offset = letter.record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "error",
                value: Some(&letter.error),
            })
            .insert(Header {
                key: "error_type",
                value: Some(&letter.error_kind),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(&offset),
            });
        let mut record = BaseRecord::<(), [u8]>::to(&self.topic)
            .payload(&letter.record.payload[..])
            .headers(headers);
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((error, returned))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && started.elapsed() < SEND_BLOCK_LIMIT =>
                {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    return Err(Error::QueueFull {
                        connector: "dead letters",
                        seconds: SEND_BLOCK_LIMIT.as_secs(),
                    })
                }
                Err((error, _)) => return Err(kafka("dead letters")(error)),
            }
        }
    }

    /// Waits until every queued dead letter is acknowledged.
    ///
    /// # Errors
    ///
    /// When they are not acknowledged in time.
    pub fn flush(&mut self) -> Result<()> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(kafka("dead letters"))
    }
}
