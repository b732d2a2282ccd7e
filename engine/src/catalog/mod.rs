//! The catalog: source types, decoders and sink types by name, as Spark's `DataSourceRegister`
//! and Arroyo's connector table have them. A job file names its source's `type`; the catalog
//! gives the factory that checks the rest of `[source]` and opens it. A schema may name a
//! `decoder`; the catalog gives the [`Decoder`] that turns each record into the JSON object its
//! fields are read from. Each output in `[sinks]` (`dead_letters`, `predictions`, `metrics`)
//! may name a sink `type`, whose factory opens a writer on every worker.
//!
//! Built in: the sources `kafka` ([`KafkaFactory`]), `file` ([`FileFactory`]) and `generator`
//! ([`GeneratorFactory`]); the sinks `kafka` ([`KafkaSinkFactory`]) and `file`
//! ([`FileSinkFactory`]); the record formats `csv`, `tsv`, `json` and `libfm` are the schema's
//! own and need no decoder. A program adds its own with [`Catalog::source`],
//! [`Catalog::decoder`] and [`Catalog::sink`], reads its job file with
//! [`JobSpec::from_file_in`](crate::JobSpec::from_file_in) and runs it with that
//! catalog in [`RunOptions`](crate::RunOptions); `examples/custom_source.rs` does.
//!
//! ```
//! use millrace_engine::catalog::Catalog;
//!
//! let catalog = Catalog::builtin();
//! assert_eq!(catalog.source_names(), ["kafka", "file", "generator"]);
//! assert_eq!(catalog.sink_names(), ["kafka", "file"]);
//! ```

mod config;
mod cursor;
pub mod file;
pub mod file_sink;
pub mod generator;
pub mod kafka;
pub mod kafka_sink;
pub mod sink;
pub mod source;
mod spec;

pub use file::{FileFactory, FileSourceSpec};
pub use file_sink::{FileSinkFactory, FileSinkSpec};
pub use generator::{GeneratorFactory, GeneratorSourceSpec};
pub use kafka::KafkaFactory;
pub use kafka_sink::{KafkaSinkFactory, KafkaSinkSpec};
pub use sink::{OutputWriter, SinkContext, SinkFactory};
pub use source::{
    event_time_reader, EventTimeReader, ReaderContext, Source, SourceContext, SourceFactory,
};
pub(crate) use spec::{sink_schema, source_schema, SINK_DEFINITION, SOURCE_DEFINITION};
pub use spec::{ConnectorSpec, SinkSpec, SourceSpec};

/// What a source of one's own is written with.
pub use millrace_connectors::kafka::Output;
pub use millrace_models::RawRecord;
pub use millrace_operators::{BoxError, PartitionReader, Polled};

pub use millrace_models::Decoder;
use millrace_models::SchemaSpec;
use std::fmt;
use std::sync::Arc;

/// Source types, decoders and sink types by name.
#[derive(Clone)]
pub struct Catalog {
    sources: Named<dyn SourceFactory>,
    decoders: Named<dyn Decoder>,
    sinks: Named<dyn SinkFactory>,
}

/// Entries by name, in the order they were added; a name added again replaces its entry.
struct Named<T: ?Sized>(Vec<(String, Arc<T>)>);

impl<T: ?Sized> Clone for Named<T> {
    fn clone(&self) -> Self {
        Named(self.0.clone())
    }
}

impl<T: ?Sized> Named<T> {
    fn insert(&mut self, name: &str, entry: Arc<T>) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = entry,
            None => self.0.push((name.to_owned(), entry)),
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<T>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The entry `name`, or the problem of a name there is none of: `what` the entries are.
    fn lookup(&self, name: &str, what: &str) -> Result<&Arc<T>, String> {
        self.get(name).ok_or_else(|| {
            format!(
                "`type`: unknown variant `{name}`, expected one of {} (the {what} in the job's catalog)",
                quoted(&self.names())
            )
        })
    }
}

impl Catalog {
    /// The built-in types: the sources `kafka`, `file` and `generator`, the sinks `kafka` and
    /// `file`.
    pub fn builtin() -> Self {
        Catalog {
            sources: Named(Vec::new()),
            decoders: Named(Vec::new()),
            sinks: Named(Vec::new()),
        }
        .source("kafka", KafkaFactory)
        .source("file", FileFactory)
        .source("generator", GeneratorFactory)
        .sink("kafka", KafkaSinkFactory)
        .sink("file", FileSinkFactory)
    }

    /// The catalog with `factory` as the source type `name` (in place of one of that name).
    pub fn source(mut self, name: &str, factory: impl SourceFactory + 'static) -> Self {
        self.sources.insert(name, Arc::new(factory));
        self
    }

    /// The catalog with `decoder` as the decoder `name` (in place of one of that name).
    pub fn decoder(mut self, name: &str, decoder: impl Decoder + 'static) -> Self {
        self.decoders.insert(name, Arc::new(decoder));
        self
    }

    /// The catalog with `factory` as the sink type `name` (in place of one of that name).
    pub fn sink(mut self, name: &str, factory: impl SinkFactory + 'static) -> Self {
        self.sinks.insert(name, Arc::new(factory));
        self
    }

    /// The source types' names, built-in first, then in the order they were added.
    pub fn source_names(&self) -> Vec<&str> {
        self.sources.names()
    }

    /// The decoders' names, in the order they were added.
    pub fn decoder_names(&self) -> Vec<&str> {
        self.decoders.names()
    }

    /// The sink types' names, built-in first, then in the order they were added.
    pub fn sink_names(&self) -> Vec<&str> {
        self.sinks.names()
    }

    /// The factory of source type `name`.
    pub fn source_factory(&self, name: &str) -> Option<&Arc<dyn SourceFactory>> {
        self.sources.get(name)
    }

    /// The factory of sink type `name`.
    pub fn sink_factory(&self, name: &str) -> Option<&Arc<dyn SinkFactory>> {
        self.sinks.get(name)
    }

    /// The factory of `source`'s type, or the problem of a type the catalog does not have.
    pub(crate) fn factory_of(
        &self,
        source: &SourceSpec,
    ) -> Result<&Arc<dyn SourceFactory>, String> {
        self.sources.lookup(&source.kind, "source types")
    }

    /// The factory of `sink`'s type, or the problem of a type the catalog does not have.
    pub(crate) fn sink_factory_of(&self, sink: &SinkSpec) -> Result<&Arc<dyn SinkFactory>, String> {
        self.sinks.lookup(&sink.kind, "sink types")
    }

    /// The decoder `schema` names, if it names one.
    ///
    /// # Errors
    ///
    /// The problem of a name the catalog does not have.
    pub(crate) fn decoder_of(
        &self,
        schema: &SchemaSpec,
    ) -> Result<Option<Arc<dyn Decoder>>, String> {
        let Some(name) = schema.decoder.as_deref() else {
            return Ok(None);
        };
        match self.decoders.get(name) {
            Some(decoder) => Ok(Some(decoder.clone())),
            None => Err(format!(
                "`decoder`: no decoder `{name}` in the job's catalog (it has {})",
                if self.decoders.0.is_empty() {
                    "none".to_owned()
                } else {
                    quoted(&self.decoder_names())
                }
            )),
        }
    }

    /// The source types' names, each in backquotes, comma-separated.
    pub(crate) fn quoted_source_names(&self) -> String {
        quoted(&self.source_names())
    }

    /// The sink types' names, each in backquotes, comma-separated.
    pub(crate) fn quoted_sink_names(&self) -> String {
        quoted(&self.sink_names())
    }

    /// Every problem of `source`: a type the catalog does not have, or its type's problems
    /// with its table.
    pub fn source_problems(&self, source: &SourceSpec) -> Vec<String> {
        match self.factory_of(source) {
            Ok(factory) => factory.problems(&source.config),
            Err(problem) => vec![problem],
        }
    }

    /// Every problem of `sink`: a type the catalog does not have, or its type's problems with
    /// its table.
    pub fn sink_problems(&self, sink: &SinkSpec) -> Vec<String> {
        match self.sink_factory_of(sink) {
            Ok(factory) => factory.problems(&sink.config),
            Err(problem) => vec![problem],
        }
    }
}

/// Each name in backquotes, comma-separated.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::builtin()
    }
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("sources", &self.source_names())
            .field("decoders", &self.decoder_names())
            .field("sinks", &self.sink_names())
            .finish()
    }
}

/// Two catalogs are alike when they name the same types (a factory has no equality).
impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.source_names() == other.source_names()
            && self.decoder_names() == other.decoder_names()
            && self.sink_names() == other.sink_names()
    }
}

impl Eq for Catalog {}
