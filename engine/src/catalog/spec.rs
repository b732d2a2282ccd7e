//! A source's or a sink's table as a job file holds it: a `type` the catalog has, and the rest
//! of the table, which that type reads.

use super::{FileSourceSpec, GeneratorSourceSpec};
use millrace_connectors::kafka::KafkaSourceConfig;
use serde::{Deserialize, Serialize};

/// A source's or a sink's table: its `type`, a name in the
/// [`Catalog`](super::Catalog), and the rest of the table, which that type reads.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorSpec {
    /// The type's name.
    pub kind: String,
    /// The table's other keys.
    pub config: toml::Table,
}

/// The source of a job (`[source]`).
pub type SourceSpec = ConnectorSpec;

/// A sink of one of a job's outputs (a table in `[sinks]`).
pub type SinkSpec = ConnectorSpec;

impl ConnectorSpec {
    /// A source or sink of type `kind` with `settings` as its table.
    ///
    /// # Errors
    ///
    /// When `settings` is not a table in TOML (a number TOML cannot hold, such as a `u64`
    /// above `i64::MAX`).
    pub fn of(kind: &str, settings: &impl Serialize) -> Result<Self, toml::ser::Error> {
        Ok(ConnectorSpec {
            kind: kind.to_owned(),
            config: toml::Table::try_from(settings)?,
        })
    }

    /// A Kafka topic (`type = "kafka"`).
    ///
    /// # Errors
    ///
    /// As [`ConnectorSpec::of`].
    pub fn kafka(config: &KafkaSourceConfig) -> Result<Self, toml::ser::Error> {
        Self::of("kafka", config)
    }

    /// A file (`type = "file"`).
    ///
    /// # Errors
    ///
    /// As [`ConnectorSpec::of`].
    pub fn file(file: &FileSourceSpec) -> Result<Self, toml::ser::Error> {
        Self::of("file", file)
    }

    /// Synthetic events (`type = "generator"`).
    ///
    /// # Errors
    ///
    /// As [`ConnectorSpec::of`].
    pub fn generator(generator: &GeneratorSourceSpec) -> Result<Self, toml::ser::Error> {
        Self::of("generator", generator)
    }

    /// A `kafka` sink of `topic`.
    pub fn kafka_topic(topic: &str) -> Self {
        ConnectorSpec {
            kind: "kafka".to_owned(),
            config: toml::Table::from_iter([(
                "topic".to_owned(),
                toml::Value::String(topic.to_owned()),
            )]),
        }
    }

    /// The settings of a `kafka` source, when it is one and they read.
    pub fn as_kafka(&self) -> Option<KafkaSourceConfig> {
        self.settings("kafka")
    }

    /// The settings of a `file` source, when it is one and they read.
    pub fn as_file(&self) -> Option<FileSourceSpec> {
        self.settings("file")
    }

    /// The table as `T`, when the source is of type `kind` and the table reads as one.
    fn settings<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Option<T> {
        (self.kind == kind)
            .then(|| T::deserialize(toml::Value::Table(self.config.clone())).ok())
            .flatten()
    }
}

impl Serialize for ConnectorSpec {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let mut table = toml::Table::new();
        table.insert("type".to_owned(), toml::Value::String(self.kind.clone()));
        table.extend(self.config.clone());
        table.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ConnectorSpec {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut config = toml::Table::deserialize(deserializer)?;
        match config.remove("type") {
            Some(toml::Value::String(kind)) => Ok(ConnectorSpec { kind, config }),
            Some(other) => Err(D::Error::custom(format!(
                "`type` must be a string (got {})",
                other.type_str()
            ))),
            None => Err(D::Error::missing_field("type")),
        }
    }
}

/// The job file schema's definitions of a source's table and a sink's table.
pub(crate) const SOURCE_DEFINITION: &str = "Source";
/// See [`SOURCE_DEFINITION`].
pub(crate) const SINK_DEFINITION: &str = "Sink";

/// The schema of `[source]`: a reference to [`SOURCE_DEFINITION`].
pub(crate) fn source_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    connector_reference(generator, SOURCE_DEFINITION)
}

/// The schema of a sink's table: a reference to [`SINK_DEFINITION`].
pub(crate) fn sink_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    connector_reference(generator, SINK_DEFINITION)
}

/// A reference to the definition `name`, which the catalog's types fill in
/// ([`JobSpec::job_file_schema_in`](crate::JobSpec::job_file_schema_in)); defined here, unless they
/// were, as a table with a string `type` and any other keys.
fn connector_reference(generator: &mut schemars::SchemaGenerator, name: &str) -> schemars::Schema {
    let path = generator
        .settings()
        .definitions_path
        .trim_matches(['#', '/'])
        .to_owned();
    generator
        .definitions_mut()
        .entry(name.to_owned())
        .or_insert_with(|| {
            serde_json::json!({
                "type": "object",
                "properties": { "type": { "type": "string", "description": "The type's name in the job's catalog." } },
                "required": ["type"],
            })
        });
    schemars::Schema::new_ref(format!("#/{path}/{name}"))
}
