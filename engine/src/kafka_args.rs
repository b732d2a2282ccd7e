//! The command line's librdkafka settings for `serve` and `produce`: what `[source] kafka` and
//! `kafka_file` are to a job file.

use millrace_connectors::kafka::Brokers;
use millrace_engine::brokers::secured_brokers;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// TLS and SASL settings for the Kafka clients, passed to librdkafka as they are.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct KafkaArgs {
    /// A librdkafka setting, `KEY=VALUE` (`security.protocol=SASL_SSL`); repeat for more.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = key_value)]
    properties: Vec<(String, String)>,
    /// A file of such settings, `key=value` per line as Kafka's `client.properties`; where
    /// secrets such as `sasl.password` belong (others on the host must not be able to read it).
    #[arg(long, env = "MILLRACE_KAFKA_PROPERTIES_FILE")]
    kafka_properties_file: Option<PathBuf>,
}

impl KafkaArgs {
    /// The brokers at `servers`, reached with these settings.
    pub(crate) fn brokers(&self, servers: &str) -> anyhow::Result<Brokers> {
        let mut inline = BTreeMap::new();
        let mut problems = Vec::new();
        for (key, value) in &self.properties {
            if inline.insert(key.clone(), value.clone()).is_some() {
                problems.push(format!("`--kafka-property {key}` is given twice"));
            }
        }
        match secured_brokers(
            servers,
            ("`--kafka-property`", &inline),
            self.kafka_properties_file.as_deref(),
        ) {
            Ok(brokers) if problems.is_empty() => Ok(brokers),
            Ok(_) => anyhow::bail!("{}", problems.join("; ")),
            Err(more) => {
                problems.extend(more);
                anyhow::bail!("{}", problems.join("; "))
            }
        }
    }
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got `{text}`"))
}
