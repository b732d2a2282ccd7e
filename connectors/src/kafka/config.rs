//! Configuration of the Kafka source.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The value of `bootstrap_servers` that asks for the in-process broker.
pub const EMBEDDED: &str = "embedded";

/// A Kafka source: where to read, as which group, and where dead letters go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port,…` of the brokers, or `"embedded"` for a broker inside the process.
    pub bootstrap_servers: String,
    /// The topic to read.
    pub topic: String,
    /// The consumer group the job's clients identify as; each checkpoint's positions are
    /// committed to it (the job resumes from its checkpoints, not from the group).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// The topic that receives records that fail to decode.
    pub dead_letter_topic: String,
    /// Partitions to create the topics with when the job creates them (embedded broker, demo).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Milliseconds a partition read to its end may show no record before it stops holding
    /// back the event-time frontier (one not read to its end holds it back however long).
    #[serde(default = "KafkaSourceConfig::default_idle_ms")]
    pub idle_ms: u64,
    /// End the job once this many records have been read (counted across restarts): a bounded
    /// replay. Unset, the job runs until it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after_records: Option<u64>,
    /// A top-level field of JSON records that holds their event time, in milliseconds since
    /// the Unix epoch. Unset, a record's event time is its Kafka timestamp; set, a record that
    /// lacks the field (or holds no such number there) keeps its Kafka timestamp and is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_field: Option<String>,
}

impl KafkaSourceConfig {
    /// The `idle_ms` a source has when its file does not give one.
    pub fn default_idle_ms() -> u64 {
        1000
    }
}

fn default_group() -> String {
    "millrace".to_owned()
}

fn default_partitions() -> i32 {
    4
}

impl KafkaSourceConfig {
    /// Problems with the configuration, each prefixed with the key it concerns.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("bootstrap_servers", &self.bootstrap_servers),
            ("topic", &self.topic),
            ("group_id", &self.group_id),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("`{key}` must not be empty"));
            }
        }
        if self
            .event_time_field
            .as_ref()
            .is_some_and(|f| f.trim().is_empty())
        {
            problems.push("`event_time_field` must not be empty".to_owned());
        }
        if self.idle_ms == 0 {
            problems.push("`idle_ms` must be > 0 (got 0)".to_owned());
        }
        if self.partitions < 1 {
            problems.push(format!(
                "`partitions` must be >= 1 (got {})",
                self.partitions
            ));
        }
        if !self.topic.is_empty() && self.topic == self.dead_letter_topic {
            problems.push("`dead_letter_topic` must differ from `topic`".to_owned());
        }
        problems
    }
}

/// A client configuration for `bootstrap_servers` with the settings every millrace client shares.
pub fn client_config(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        .set("client.id", "millrace")
        .set("log_level", "3");
    config
}
