//! Topic administration and metadata.

use crate::error::{kafka, Error, Result};
use crate::kafka::config::Brokers;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Creates the topics that do not exist yet, each with `partitions` partitions.
///
/// # Errors
///
/// When the broker cannot be reached or refuses a topic for another reason than that it exists.
pub async fn create_topics(brokers: &Brokers, topics: &[&str], partitions: i32) -> Result<()> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    create_new_topics(brokers, &new).await
}

/// Creates `new` topics, skipping those that exist.
///
/// # Errors
///
/// As [`create_topics`].
pub(crate) async fn create_new_topics(brokers: &Brokers, new: &[NewTopic<'_>]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        brokers.client_config().create().map_err(kafka("admin"))?;
    // A broker that does not answer CreateTopics (librdkafka's mock cluster) is given up on
    // after 10 s, not the client's 60 s request timeout: the caller goes on with topics that
    // exist.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new, &options)
        .await
        .map_err(kafka("admin"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::CreateTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// The number of partitions of a topic, as the broker's metadata says.
///
/// # Errors
///
/// [`Error::NoSuchTopic`] when it has none, or the metadata request's error.
pub fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka("source"))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(Error::NoSuchTopic(topic.to_owned()));
    }
    Ok(count as i32)
}

/// Reads the high watermarks of a topic's partitions, for consumer lag.
pub struct WatermarkProbe {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl std::fmt::Debug for WatermarkProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkProbe")
            .field("topic", &self.topic)
            .finish()
    }
}

impl WatermarkProbe {
    /// A probe of `topic`, which has `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the client cannot be created.
    pub fn new(brokers: &Brokers, topic: &str, partitions: i32) -> Result<Self> {
        let consumer = brokers.client_config().create().map_err(kafka("source"))?;
        Ok(WatermarkProbe {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// The high watermark (the offset the next produced record gets) of each partition.
    ///
    /// # Errors
    ///
    /// When the broker does not answer in time.
    pub fn high_watermarks(&self) -> Result<Vec<i64>> {
        (0..self.partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(2))
                    .map(|(_, high)| high)
                    .map_err(kafka("source"))
            })
            .collect()
    }
}
