//! Kafka: source reader, output sinks (dead letters, predictions, metrics), replay producer, topic administration, and the
//! embedded broker.

mod admin;
mod config;
mod embedded;
mod producer;
mod registry;
mod sink;
mod source;
#[cfg(test)]
mod tests;

pub use admin::{create_topics, partition_count, WatermarkProbe};
pub use config::{
    parse_properties, property_problems, Brokers, KafkaSourceConfig, MissingOffsets, EMBEDDED,
    OWN_SETTINGS,
};
pub use embedded::EmbeddedBroker;
pub use producer::{LineProducer, RateLimit, MIN_RATE};
pub use registry::{create_registry_topic, KafkaVersions, Published, RegistryPublisher};
pub use sink::{text_headers, Output, OutputSink, Undelivered, EPOCH_HEADER, MESSAGE_TIMEOUT};
pub use source::{EventTimeReader, KafkaReader};
