//! The `kafka` sink (`{ type = "kafka", topic = … }`): a topic on the job's brokers, written
//! with the idempotent producer, every message with the header `millrace-epoch`.

use super::config::read_config;
use super::sink::{OutputWriter, SinkContext, SinkFactory};
use millrace_connectors::kafka::{Output, OutputSink};
use millrace_operators::BoxError;
use serde::{Deserialize, Serialize};

/// The `kafka` sink's settings: a topic on the job's brokers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// The topic.
    pub topic: String,
}

/// The `kafka` sink type: the idempotent producer, every message with the header
/// `millrace-epoch`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaSinkFactory;

impl SinkFactory for KafkaSinkFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match read_config::<KafkaSinkSpec>(config) {
            Ok(spec) if spec.topic.trim().is_empty() => {
                vec!["`topic` must not be empty".to_owned()]
            }
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <KafkaSinkSpec as schemars::JsonSchema>::json_schema(generator)
    }

    fn kafka_topic(&self, config: &toml::Table) -> Option<String> {
        read_config::<KafkaSinkSpec>(config).ok().map(|s| s.topic)
    }

    fn open(
        &self,
        config: &toml::Table,
        context: &SinkContext<'_>,
    ) -> Result<Box<dyn OutputWriter>, BoxError> {
        let spec = read_config::<KafkaSinkSpec>(config).map_err(|p| p.join("; "))?;
        let sink = OutputSink::new(
            context.bootstrap,
            &spec.topic,
            context.output,
            context.lost.clone(),
            context.undelivered,
        )?;
        Ok(Box::new(KafkaWriter {
            sink,
            output: context.output,
        }))
    }
}

/// A topic's producer as an output's writer.
struct KafkaWriter {
    sink: OutputSink,
    output: &'static str,
}

impl OutputWriter for KafkaWriter {
    fn send(&mut self, output: Output<'_>) {
        // The sink counts and logs what it loses.
        let _ = self.sink.send(output);
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, output = self.output, "messages not acknowledged");
        }
    }

    fn unsettled_from(&mut self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}
