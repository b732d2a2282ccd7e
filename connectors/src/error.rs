//! The crate's error type.

/// Errors of connectors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kafka client call failed.
    #[error("kafka connector `{connector}`: {source}")]
    Kafka {
        /// Which connector (source, dead letters, producer, admin, embedded broker).
        connector: &'static str,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// A topic does not exist or has no partitions.
    #[error("kafka topic `{0}` does not exist or has no partitions")]
    NoSuchTopic(String),
    /// Creating a topic failed.
    #[error("creating kafka topic `{topic}` failed: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn kafka(connector: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    move |source| Error::Kafka { connector, source }
}
