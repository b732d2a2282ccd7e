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
    /// The producer's queue stayed full (the broker is unreachable or too slow).
    #[error("kafka connector `{connector}`: producer queue full for {seconds} s")]
    QueueFull {
        /// Which connector.
        connector: &'static str,
        /// How long it waited.
        seconds: u64,
    },
    /// A model registry topic could not be written or read as it should.
    #[error("model registry topic: {0}")]
    Registry(String),
    /// Creating a topic failed.
    #[error("creating kafka topic `{topic}` failed: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A position to resume from is not in the partition's log any more: retention deleted
    /// what came before `low`.
    #[error("kafka topic `{topic}` partition {partition} starts at offset {low}: offset {offset} is gone (retention deleted its records before the job read them); `[source] on_missing_offsets = \"skip\"` goes on from the first offset, counting what it skips")]
    OffsetGone {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The position to resume from.
        offset: i64,
        /// The partition's first offset.
        low: i64,
    },
}

impl Error {
    /// A short, stable label for the kind of error (the Kafka error code where there is one),
    /// for logging each kind once and for metric labels.
    pub fn kind(&self) -> String {
        match self {
            Error::Kafka { source, .. } => source
                .rdkafka_error_code()
                .map_or_else(|| "kafka".to_owned(), |code| format!("{code:?}")),
            Error::NoSuchTopic(_) => "no_such_topic".to_owned(),
            Error::CreateTopic { .. } => "create_topic".to_owned(),
            Error::QueueFull { .. } => "queue_full".to_owned(),
            Error::Registry(_) => "registry".to_owned(),
            Error::OffsetGone { .. } => "offset_gone".to_owned(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn kafka(connector: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    move |source| Error::Kafka { connector, source }
}
