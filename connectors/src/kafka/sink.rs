//! Output topics: dead letters, predictions and metrics, with the idempotent producer.
//!
//! Every message carries the header `millrace-epoch`: the epoch of the job that produced it.
//! The producer is idempotent, so retries add no duplicates; but a job restarted from a
//! checkpoint replays the epochs after it and sends their outputs again (at least once). The
//! replayed outputs are the same messages with the same epoch header (and, for dead letters
//! and predictions, the same source partition and offset), so a consumer can drop repeats.
//!
//! What happens to a message the broker does not acknowledge is the sink's [`Undelivered`]
//! policy. Blocking (the default), the producer retries it however long the broker is away, and
//! once its queue is full a send waits: the job is held back and nothing is lost. Dropping, a
//! message is lost when the broker has not acknowledged it within the message timeout (an
//! outage longer than that) or the queue stays full; each sink counts its losses in a counter
//! its owner reads, and logs the first. Under either policy a message the broker refuses for
//! good (too large, not authorized) is lost and counted. A sink knows which epochs still have messages neither
//! acknowledged nor counted lost ([`OutputSink::unsettled_from`]): a checkpoint must not cover
//! them, or a crash would lose them (the restarted job does not replay their epochs).

use crate::error::{kafka, Error, Result};
use crate::kafka::config::Brokers;
use crate::kafka::producer::SEND_BLOCK_LIMIT;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The header that names the epoch a message belongs to.
pub const EPOCH_HEADER: &str = "millrace-epoch";

/// A message's headers as text (invalid UTF-8 replaced), by key: how a reader of an output
/// topic sees the epoch, a dead letter's reason and its source position.
pub fn text_headers(message: &impl Message) -> BTreeMap<String, String> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Counts the messages a sink lost, logging the first, and the messages of each epoch not
/// settled yet (neither acknowledged nor lost).
struct Losses {
    connector: &'static str,
    lost: Arc<AtomicU64>,
    unsettled: Mutex<BTreeMap<u64, u64>>,
}

impl Losses {
    fn unsettled(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One message of `epoch` is queued.
    fn queued(&self, epoch: u64) {
        *self.unsettled().entry(epoch).or_default() += 1;
    }

    /// One message of `epoch` is acknowledged or lost.
    fn settled(&self, epoch: u64) {
        let mut unsettled = self.unsettled();
        if let Some(n) = unsettled.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                unsettled.remove(&epoch);
            }
        }
    }

    fn count(&self, error: &dyn std::fmt::Display) {
        if self.lost.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::error!(
                connector = self.connector,
                %error,
                "an output message was lost (the first; all are counted)"
            );
        }
    }
}

impl ClientContext for Losses {}

impl ProducerContext for Losses {
    /// The message's epoch.
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            self.count(error);
        }
        self.settled(*epoch);
    }
}

/// How long the broker may take to acknowledge a message before a dropping sink counts it
/// lost: an outage shorter than this loses nothing.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a sink does with a message the broker does not acknowledge (`[sinks] on_undelivered`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Undelivered {
    /// Keep trying however long the broker is away; a full queue holds the sender back (and
    /// with it the job). Nothing is lost to an outage.
    #[default]
    Block,
    /// Give up on it after [`MESSAGE_TIMEOUT`] (or on a new one after the producer's queue has
    /// stayed full for 30 s), count it lost and go on: the job never waits long for its
    /// outputs' broker.
    Drop,
}

/// One output topic, written by one worker.
pub struct OutputSink {
    producer: ThreadedProducer<Losses>,
    topic: String,
    connector: &'static str,
    /// Whether a full queue is waited out however long (the block policy).
    blocks: bool,
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSink")
            .field("topic", &self.topic)
            .finish()
    }
}

/// How long a flush may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One message for [`OutputSink::send`].
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    /// The epoch that produced it.
    pub epoch: u64,
    /// The message key, if any.
    pub key: Option<&'a [u8]>,
    /// The message value.
    pub payload: &'a [u8],
    /// Headers besides the epoch.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl OutputSink {
    /// A sink to `topic`; `connector` names it in errors ("dead letters", "predictions" …);
    /// every message it loses is counted in `lost`; `undelivered` says whether an outage holds
    /// it back or costs messages after [`MESSAGE_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// When the producer cannot be created.
    pub fn new(
        brokers: &Brokers,
        topic: &str,
        connector: &'static str,
        lost: Arc<AtomicU64>,
        undelivered: Undelivered,
    ) -> Result<Self> {
        let timeout = match undelivered {
            Undelivered::Block => None,
            Undelivered::Drop => Some(MESSAGE_TIMEOUT),
        };
        Self::with_message_timeout(brokers, topic, connector, lost, timeout)
    }

    /// As [`OutputSink::new`], with messages lost after `message_timeout` without an
    /// acknowledgement, or never (`None`: the block policy).
    ///
    /// # Errors
    ///
    /// When the producer cannot be created.
    pub fn with_message_timeout(
        brokers: &Brokers,
        topic: &str,
        connector: &'static str,
        lost: Arc<AtomicU64>,
        message_timeout: Option<Duration>,
    ) -> Result<Self> {
        let producer = brokers
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            // 0: librdkafka retries a message until the broker acknowledges it.
            .set(
                "message.timeout.ms",
                message_timeout
                    .map_or(0, |t| t.as_millis().max(1))
                    .to_string(),
            )
            .create_with_context(Losses {
                connector,
                lost,
                unsettled: Mutex::default(),
            })
            .map_err(kafka(connector))?;
        Ok(OutputSink {
            producer,
            topic: topic.to_owned(),
            connector,
            blocks: message_timeout.is_none(),
        })
    }

    /// Queues one message, waiting while the producer's queue is full.
    ///
    /// # Errors
    ///
    /// When the producer refuses it, or (dropping) its queue stays full for 30 s; the message
    /// is then lost (and counted).
    pub fn send(&mut self, output: Output<'_>) -> Result<()> {
        let sent = self.queue(output);
        if let Err(error) = &sent {
            self.producer.context().count(error);
        }
        sent
    }

    /// The least epoch with a message queued but neither acknowledged by the broker nor
    /// counted lost; `None` when every message sent is settled.
    pub fn unsettled_from(&self) -> Option<u64> {
        self.producer.context().unsettled().keys().next().copied()
    }

    fn queue(&mut self, output: Output<'_>) -> Result<()> {
        let epoch = output.epoch.to_string();
        let mut headers =
            OwnedHeaders::new_with_capacity(output.headers.len() + 1).insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch.as_bytes()),
            });
        for (key, value) in output.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut record =
            BaseRecord::<[u8], [u8], Box<u64>>::with_opaque_to(&self.topic, Box::new(output.epoch))
                .payload(output.payload)
                .headers(headers);
        if let Some(key) = output.key {
            record = record.key(key);
        }
        let started = Instant::now();
        // Counted before the send, whose acknowledgement may come before `send` returns.
        let context = self.producer.context();
        context.queued(output.epoch);
        let sent = loop {
            match self.producer.send(record) {
                Ok(()) => break Ok(()),
                Err((error, returned))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && (self.blocks || started.elapsed() < SEND_BLOCK_LIMIT) =>
                {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    break Err(Error::QueueFull {
                        connector: self.connector,
                        seconds: SEND_BLOCK_LIMIT.as_secs(),
                    })
                }
                Err((error, _)) => break Err(kafka(self.connector)(error)),
            }
        };
        if sent.is_err() {
            context.settled(output.epoch);
        }
        sent
    }

    /// Waits until every queued message is acknowledged.
    ///
    /// # Errors
    ///
    /// When they are not acknowledged in time.
    pub fn flush(&mut self) -> Result<()> {
        self.producer.flush(TIMEOUT).map_err(kafka(self.connector))
    }
}
