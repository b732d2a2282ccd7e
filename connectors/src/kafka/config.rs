//! Configuration of the Kafka source and of every client's connection to the brokers.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The value of `bootstrap_servers` that asks for the in-process broker.
pub const EMBEDDED: &str = "embedded";

/// A Kafka source: where to read, as which group, and where dead letters go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// What a restored position the broker no longer has (retention deleted its records)
    /// makes the job do: `"fail"` (the default) refuses to go on; `"skip"` starts the
    /// partition at its first offset and counts the records skipped.
    #[serde(default, skip_serializing_if = "MissingOffsets::is_default")]
    pub on_missing_offsets: MissingOffsets,
    /// librdkafka settings every client of the job takes as they are (`[source.kafka]`):
    /// `security.protocol`, `ssl.*`, `sasl.*`, for a secured cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kafka: BTreeMap<String, String>,
    /// A file of more such settings, `key=value` per line as Kafka's `client.properties`
    /// (`#` starts a comment): where secrets such as `sasl.password` belong. Others on the
    /// host must not be able to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_file: Option<PathBuf>,
}

/// What a source does when a position it resumes from is gone from the broker.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MissingOffsets {
    /// Refuse to go on: the job fails and says which partition lost what.
    #[default]
    Fail,
    /// Start the partition at its first offset, counting the records skipped.
    Skip,
}

impl MissingOffsets {
    fn is_default(&self) -> bool {
        *self == MissingOffsets::default()
    }
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
        if self.bootstrap_servers == EMBEDDED
            && (!self.kafka.is_empty() || self.kafka_file.is_some())
        {
            problems.push(
                "`kafka` and `kafka_file` configure a cluster's clients; the embedded broker takes none"
                    .to_owned(),
            );
        }
        problems.extend(
            property_problems(&self.kafka)
                .into_iter()
                .map(|p| format!("`kafka`: {p}")),
        );
        problems
    }
}

/// The brokers every client of a job or a server talks to: their addresses and the librdkafka
/// settings (TLS, SASL) that reach them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Brokers {
    servers: String,
    properties: BTreeMap<String, String>,
}

impl Brokers {
    /// The brokers at `servers` (`host:port,…`), reached without settings of their own.
    pub fn new(servers: impl Into<String>) -> Self {
        Brokers {
            servers: servers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// The same brokers, reached with `properties` besides millrace's own settings.
    ///
    /// # Errors
    ///
    /// Every problem of [`property_problems`], together.
    pub fn with_properties(
        mut self,
        properties: BTreeMap<String, String>,
    ) -> Result<Self, Vec<String>> {
        let problems = property_problems(&properties);
        if !problems.is_empty() {
            return Err(problems);
        }
        self.properties = properties;
        Ok(self)
    }

    /// `host:port,…` of the brokers.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// A client configuration with the settings every millrace client shares, the brokers'
    /// properties among them.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.servers)
            .set("client.id", "millrace")
            .set("log_level", "3");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

impl From<&str> for Brokers {
    fn from(servers: &str) -> Self {
        Brokers::new(servers)
    }
}

/// The settings millrace's clients choose themselves, under every name librdkafka takes for
/// them: what they mean (offsets, groups, idempotence, acknowledgements, retries, when a
/// message counts as lost, end-of-partition events) or how millrace measured them to perform.
/// A property may not change them.
pub const OWN_SETTINGS: &[&str] = &[
    "acks",
    "auto.commit.enable",
    "auto.offset.reset",
    "batch.num.messages",
    "bootstrap.servers",
    "client.id",
    "delivery.timeout.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "enable.partition.eof",
    "fetch.message.max.bytes",
    "fetch.wait.max.ms",
    "group.id",
    "isolation.level",
    "linger.ms",
    "log_level",
    "max.partition.fetch.bytes",
    "message.max.bytes",
    "message.send.max.retries",
    "message.timeout.ms",
    "metadata.broker.list",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "request.required.acks",
    "retries",
    "session.timeout.ms",
    "transactional.id",
];

/// What is wrong with librdkafka `properties`: a setting millrace chooses itself
/// ([`OWN_SETTINGS`]), or one librdkafka refuses (an unknown name, a value out of range, a
/// protocol this build lacks), each named.
pub fn property_problems(properties: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in properties {
        if OWN_SETTINGS.contains(&key.as_str()) {
            problems.push(format!("`{key}` is set by millrace itself"));
            continue;
        }
        let mut alone = ClientConfig::new();
        alone.set(key, value).set("log_level", "0");
        if let Err(error) = alone.create_native_config() {
            problems.push(format!("`{key}`: {error}"));
        }
    }
    problems
}

/// The settings of a `client.properties` text: `key=value` (or `key: value`) per line, blank
/// lines and lines starting with `#` or `!` skipped.
///
/// # Errors
///
/// Every line that holds no `=`, or a key given twice, each with its line number.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut properties = BTreeMap::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            problems.push(format!("line {}: expected `key=value`", index + 1));
            continue;
        };
        let key = key.trim().to_owned();
        if properties
            .insert(key.clone(), value.trim().to_owned())
            .is_some()
        {
            problems.push(format!("line {}: `{key}` given twice", index + 1));
        }
    }
    if problems.is_empty() {
        Ok(properties)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn security_settings_pass_and_every_wrong_one_is_named() {
        let secured = properties(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "millrace"),
            ("sasl.password", "secret"),
        ]);
        assert_eq!(property_problems(&secured), Vec::<String>::new());
        let brokers = Brokers::new("b:9092").with_properties(secured).unwrap();
        let config = brokers.client_config();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));

        let wrong = properties(&[
            ("group.id", "other"),
            ("security.protocl", "SSL"),
            ("security.protocol", "carrier-pigeon"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ]);
        let problems = Brokers::new("b:9092").with_properties(wrong).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        for named in ["group.id", "security.protocl", "carrier-pigeon"] {
            assert!(problems.iter().any(|p| p.contains(named)), "{problems:?}");
        }
    }

    #[test]
    fn a_client_properties_text_parses_and_its_faults_are_listed() {
        let text = "# secured\nsecurity.protocol=SASL_SSL\n\n! also a comment\nsasl.username = me\nsasl.password: p=w\n";
        assert_eq!(
            parse_properties(text).unwrap(),
            properties(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.username", "me"),
                ("sasl.password", "p=w"),
            ])
        );
        let problems = parse_properties("a=1\nnonsense\na=2\n").unwrap_err();
        assert_eq!(
            problems,
            ["line 2: expected `key=value`", "line 3: `a` given twice"]
        );
    }
}
