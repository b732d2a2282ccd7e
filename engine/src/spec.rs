//! The job spec: what `millrace run job.toml` reads, and what the builder API builds.
//!
//! Layers: built-in defaults, then the job file, then `MILLRACE__SECTION__KEY=value` environment
//! overrides (the value is read as TOML, or as a string when it is not TOML). Loading checks
//! every section and every key and reports every problem at once: unknown keys, wrong types,
//! missing sections and values out of range.

use crate::error::{Error, Result};
pub use crate::file_source::FileSourceSpec;
use millrace_connectors::kafka::{KafkaSourceConfig, EMBEDDED};
use millrace_models::{FeatureSpec, Schema, SchemaSpec};
use millrace_operators::LatePolicy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole job: source → parse → features → learner → publish → serve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name; also the name its model is published and served under.
    pub name: String,
    /// Where events come from.
    pub source: SourceSpec,
    /// An optional built-in producer of synthetic events into the source topic (the demo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
    /// The events' schema (`[schema]`): the records' format and fields; the Criteo preset when
    /// absent.
    #[serde(default = "SchemaSpec::preset_criteo")]
    pub schema: SchemaSpec,
    /// Optional join of impressions and delayed clicks into labeled events (`[labels]`): the
    /// source then carries `imp` and `clk` records (see `millrace_models::labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelsSpec>,
    /// How events become features.
    pub features: FeatureSpec,
    /// The online learner.
    pub learner: LearnerSpec,
    /// When and where model versions are published.
    pub publish: PublishSpec,
    /// Optional in-process HTTP serving of the published versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeSpec>,
    /// Epochs and the progress line.
    #[serde(default)]
    pub progress: ProgressSpec,
    /// Optional checkpoints of the job's state in RocksDB (`[checkpoint]`): a restarted job
    /// resumes where its newest checkpoint left off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Optional output topics besides the dead letters (`[sinks]`), on the source's brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<SinksSpec>,
}

/// Output topics on the source's brokers, written with the idempotent producer; every message
/// names its epoch in the header `millrace-epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksSpec {
    /// A topic that receives every event's prediction as JSON, `{"partition": …, "offset": …,
    /// "prediction": …, "label": …}`: the model's probability of a click for the event just
    /// before it learned from it, keyed `partition:offset` by the record it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions_topic: Option<String>,
    /// A topic that receives the job's figures as JSON (the fields of the final report, with
    /// the epoch and its event time), from process 0 at epoch ends, at most every
    /// `metrics_interval_ms`, and once more at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_topic: Option<String>,
    /// The least processing time between two metrics messages, in milliseconds.
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval_ms: u64,
}

fn default_metrics_interval() -> u64 {
    1000
}

/// Where and how often the job checkpoints its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// The directory of the job's RocksDB state (one per process).
    pub state_dir: PathBuf,
    /// The least processing time between checkpoints, in milliseconds; 0 checkpoints every
    /// epoch.
    #[serde(default = "default_checkpoint_interval")]
    pub interval_ms: u64,
    /// How many complete checkpoints to keep (the newest that reads back whole is restored).
    #[serde(default = "default_checkpoint_keep")]
    pub keep: usize,
}

fn default_checkpoint_interval() -> u64 {
    5000
}

fn default_checkpoint_keep() -> usize {
    3
}

/// The source of a job, chosen by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceSpec {
    /// A Kafka topic.
    Kafka(KafkaSourceConfig),
    /// A file replayed through the embedded broker (see [`crate::file_source`]).
    File(FileSourceSpec),
}

/// The label join: how long a click may follow its impression, and what a later one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    /// The attribution window in milliseconds, rounded up to whole epochs of
    /// `[progress] epoch_ms` (the join's clock is the job's epochs).
    pub window_ms: u64,
    /// `"drop"` (the negative stands) or `"correct"` (the impression is emitted again as a
    /// positive) for a click after the window.
    #[serde(default)]
    pub late: LatePolicy,
}

impl JobSpec {
    /// The job's compiled schema.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with the schema's problems (none for a spec that was validated).
    pub fn event_schema(&self) -> Result<Schema> {
        self.schema.compile().map_err(|problems| Error::Config {
            problems: problems
                .into_iter()
                .map(|p| format!("[schema] {p}"))
                .collect(),
        })
    }
}

impl LabelsSpec {
    /// The window in epochs of `epoch_ms`.
    pub fn window_epochs(&self, epoch_ms: u64) -> u64 {
        self.window_ms.div_ceil(epoch_ms.max(1))
    }
}

/// The demo's generator of synthetic Criteo events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorSpec {
    /// Events per second to produce; 0 for as fast as possible.
    pub rows_per_sec: f64,
    /// Events to produce in all; 0 for no end (until the job stops).
    pub rows: u64,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        GeneratorSpec {
            rows_per_sec: 20_000.0,
            rows: 0,
            seed: 7,
        }
    }
}

/// The online learner, chosen by `type` (`"ftrl"` or `"fm"`).
pub use millrace_models::LearnerParams as LearnerSpec;

/// When and where model versions are published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSpec {
    /// The registry directory.
    pub registry: PathBuf,
    /// Publish after this many newly learned events.
    pub every_events: u64,
    /// Publish after this many seconds (when something new was learned).
    pub every_seconds: u64,
    /// Also send every version to this compacted topic on the source's brokers, for serving
    /// pods that follow it (`millrace serve --registry kafka://BROKERS/TOPIC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_topic: Option<String>,
}

impl Default for PublishSpec {
    fn default() -> Self {
        PublishSpec {
            registry: PathBuf::new(),
            every_events: 100_000,
            every_seconds: 10,
            registry_topic: None,
        }
    }
}

/// In-process HTTP serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSpec {
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    pub bind: String,
}

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            bind: "127.0.0.1:8080".to_owned(),
        }
    }
}

/// Epochs and progress reporting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgressSpec {
    /// Length of an epoch of the dataflow, in milliseconds of event time (the source records'
    /// timestamps).
    pub epoch_ms: u64,
    /// Interval of the progress line, in milliseconds; 0 turns it off.
    pub interval_ms: u64,
}

impl Default for ProgressSpec {
    fn default() -> Self {
        ProgressSpec {
            epoch_ms: 200,
            interval_ms: 1000,
        }
    }
}

const SECTIONS: [&str; 12] = [
    "name",
    "source",
    "generator",
    "schema",
    "labels",
    "features",
    "learner",
    "publish",
    "serve",
    "progress",
    "checkpoint",
    "sinks",
];

impl JobSpec {
    /// Reads, overrides from the environment and validates a job file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        // Read without assuming the environment is UTF-8 (`env::vars` panics on a variable
        // that is not): only an override that is not is a problem.
        let mut problems = Vec::new();
        let mut overrides = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with("MILLRACE__")) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => overrides.push((key.to_owned(), value)),
                Err(_) => problems.push(format!("the value of `{key}` is not UTF-8")),
            }
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        match Self::from_toml_with_env_in(&text, overrides, folder) {
            Ok(_) if !problems.is_empty() => Err(Error::Config { problems }),
            Err(Error::Config { problems: more }) => {
                problems.extend(more);
                Err(Error::Config { problems })
            }
            other => other,
        }
    }

    /// Parses and validates a job from TOML text, without environment overrides.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_with_env(text, std::iter::empty())
    }

    /// Parses a job from TOML text, applies `MILLRACE__SECTION__KEY` overrides from `env`, and
    /// validates it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        Self::from_toml_with_env_in(text, env, Path::new("."))
    }

    /// As [`JobSpec::from_toml_with_env`], with a `file` source's relative path read from
    /// `folder` (the job file's).
    fn from_toml_with_env_in(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        folder: &Path,
    ) -> Result<Self> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            problems: vec![format!("not valid TOML: {}", e.message())],
        })?;
        let mut problems = apply_env(&mut table, env);
        for key in table.keys() {
            if key == "decode" {
                problems.push("`[decode]` is replaced by `[schema]`: `format = \"criteo\"` is `preset = \"criteo\"`, `format = \"json\"` is `preset = \"criteo\"` with `format = \"json\"`".to_owned());
            } else if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown key `{key}` (expected one of {})",
                    SECTIONS.join(", ")
                ));
            }
        }
        let name = match table.get("name") {
            Some(toml::Value::String(name)) => Some(name.clone()),
            Some(other) => {
                problems.push(format!(
                    "`name` must be a string (got {})",
                    other.type_str()
                ));
                None
            }
            None => {
                problems.push("missing `name`".to_owned());
                None
            }
        };
        let source = match section::<SourceSpec>(&table, "source", true, &mut problems) {
            Read::Whole(SourceSpec::File(file)) => {
                Read::Whole(SourceSpec::File(file.resolved(folder)))
            }
            Read::Partial(SourceSpec::File(file)) => {
                Read::Partial(SourceSpec::File(file.resolved(folder)))
            }
            other => other,
        };
        let generator = section::<GeneratorSpec>(&table, "generator", false, &mut problems);
        let schema = section::<SchemaSpec>(&table, "schema", false, &mut problems);
        let labels = section::<LabelsSpec>(&table, "labels", false, &mut problems);
        let features = section::<FeatureSpec>(&table, "features", true, &mut problems);
        let learner = section::<LearnerSpec>(&table, "learner", true, &mut problems);
        let publish = section::<PublishSpec>(&table, "publish", true, &mut problems);
        let serve = section::<ServeSpec>(&table, "serve", false, &mut problems);
        let progress = section::<ProgressSpec>(&table, "progress", false, &mut problems);
        let checkpoint = section::<CheckpointSpec>(&table, "checkpoint", false, &mut problems);
        let sinks = section::<SinksSpec>(&table, "sinks", false, &mut problems);
        // The values are checked wherever they could be read, so that a section with a bad key
        // does not hide another's value out of range.
        problems.extend(check(&Sections {
            name: name.as_ref(),
            source: source.known(),
            generator: generator.optional(),
            schema: schema
                .optional()
                .map(|s| s.cloned().unwrap_or_else(SchemaSpec::preset_criteo)),
            labels: labels.optional(),
            features: features.known(),
            learner: learner.known(),
            publish: publish.known(),
            serve: serve.optional(),
            progress: progress.or_default(),
            checkpoint: checkpoint.optional(),
            sinks: sinks.optional(),
        }));
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        match (name, source, features, learner, publish) {
            (
                Some(name),
                Read::Whole(source),
                Read::Whole(features),
                Read::Whole(learner),
                Read::Whole(publish),
            ) => Ok(JobSpec {
                name,
                source,
                generator: generator.whole(),
                schema: schema.whole().unwrap_or_else(SchemaSpec::preset_criteo),
                labels: labels.whole(),
                features,
                learner,
                publish,
                serve: serve.whole(),
                progress: progress.whole().unwrap_or_default(),
                checkpoint: checkpoint.whole(),
                sinks: sinks.whole(),
            }),
            _ => Err(Error::Config {
                problems: vec!["the job file is incomplete".to_owned()],
            }),
        }
    }

    /// Problems of the values (ranges, emptiness, consistency), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        check(&Sections {
            name: Some(&self.name),
            source: Some(&self.source),
            generator: Some(self.generator.as_ref()),
            schema: Some(self.schema.clone()),
            labels: Some(self.labels.as_ref()),
            features: Some(&self.features),
            learner: Some(&self.learner),
            publish: Some(&self.publish),
            serve: Some(self.serve.as_ref()),
            progress: Some(self.progress.clone()),
            checkpoint: Some(self.checkpoint.as_ref()),
            sinks: Some(self.sinks.as_ref()),
        })
    }

    /// The job as TOML text, which [`JobSpec::from_toml`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a job spec serializes to TOML")
    }
}

/// How far a section of the job file could be read.
enum Read<T> {
    /// Not in the file.
    Absent,
    /// In the file, but not readable as the section at all.
    Unreadable,
    /// Read once its bad keys were left out: its values can be checked, the job not run.
    Partial(T),
    /// Read whole.
    Whole(T),
}

impl<T> Read<T> {
    /// The values to check of a required section.
    fn known(&self) -> Option<&T> {
        match self {
            Read::Partial(t) | Read::Whole(t) => Some(t),
            Read::Absent | Read::Unreadable => None,
        }
    }

    /// The values to check of an optional section: `Some(None)` when it is absent.
    fn optional(&self) -> Option<Option<&T>> {
        match self {
            Read::Absent => Some(None),
            Read::Unreadable => None,
            Read::Partial(t) | Read::Whole(t) => Some(Some(t)),
        }
    }

    /// The section, when it was read whole.
    fn whole(self) -> Option<T> {
        match self {
            Read::Whole(t) => Some(t),
            _ => None,
        }
    }
}

impl<T: Clone + Default> Read<T> {
    /// The values to check of a section with a default.
    fn or_default(&self) -> Option<T> {
        self.optional().map(|t| t.cloned().unwrap_or_default())
    }
}

/// The sections whose values can be checked: `None` where a section could not be read, so
/// that only the checks that need it are skipped.
struct Sections<'a> {
    name: Option<&'a String>,
    source: Option<&'a SourceSpec>,
    generator: Option<Option<&'a GeneratorSpec>>,
    schema: Option<SchemaSpec>,
    labels: Option<Option<&'a LabelsSpec>>,
    features: Option<&'a FeatureSpec>,
    learner: Option<&'a LearnerSpec>,
    publish: Option<&'a PublishSpec>,
    serve: Option<Option<&'a ServeSpec>>,
    progress: Option<ProgressSpec>,
    checkpoint: Option<Option<&'a CheckpointSpec>>,
    sinks: Option<Option<&'a SinksSpec>>,
}

/// Problems of the values (ranges, emptiness, consistency), each naming its key: every check
/// whose sections could be read.
fn check(job: &Sections<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut add = |section: &str, list: Vec<String>| {
        problems.extend(list.into_iter().map(|p| format!("[{section}] {p}")));
    };
    if let Some(name) = job.name {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            add(
                "job",
                vec![format!(
                    "`name` must be letters, digits, `-` or `_` (got {name:?})"
                )],
            );
        }
    }
    let kafka = match job.source {
        Some(SourceSpec::Kafka(kafka)) => Some(kafka),
        _ => None,
    };
    if let Some(kafka) = kafka {
        add("source", kafka.problems());
    }
    if let Some(SourceSpec::File(file)) = job.source {
        add("source", file.problems());
        if let Some(Some(_)) = job.checkpoint {
            add(
                "checkpoint",
                vec!["a `file` source replays its file from the start: it cannot resume from a checkpoint".to_owned()],
            );
        }
        if let Some(Some(_)) = job.generator {
            add(
                "generator",
                vec![
                    "a `file` source replays its file: the generator needs a `kafka` source"
                        .to_owned(),
                ],
            );
        }
    }
    let compiled = job.schema.as_ref().map(SchemaSpec::compile);
    if let Some(Err(list)) = &compiled {
        add("schema", list.clone());
    }
    let schema = compiled.and_then(Result::ok);
    let preset = job.schema.as_ref().map(|s| s.preset.is_some());
    let json = job.schema.as_ref().map(|s| s.format() == Some("json"));
    if let (Some(kafka), Some(true), Some(false)) = (kafka, preset, json) {
        if kafka.event_time_field.is_some() {
            add(
                "source",
                vec![
                    "`event_time_field` needs the criteo preset's JSON records (`[schema] preset = \"criteo\"`, `format = \"json\"`); a declared schema names its `time` field"
                        .to_owned(),
                ],
            );
        }
    }
    if let (Some(kafka), Some(false)) = (kafka, preset) {
        if kafka.event_time_field.is_some() {
            add(
                "source",
                vec!["`event_time_field` is for the criteo preset; a declared schema names its `time` field".to_owned()],
            );
        }
    }
    let criteo_lines = preset == Some(true) && json == Some(false);
    if let (Some(Some(_)), Some(_)) = (job.labels, &job.schema) {
        if !criteo_lines {
            add(
                "schema",
                vec!["`[labels]` joins `imp` and `clk` lines of the criteo preset's tab-separated events only".to_owned()],
            );
        }
    }
    if let Some(Some(generator)) = job.generator {
        let mut list = Vec::new();
        if !(generator.rows_per_sec >= 0.0 && generator.rows_per_sec.is_finite()) {
            list.push(format!(
                "`rows_per_sec` must be >= 0 (got {})",
                generator.rows_per_sec
            ));
        } else if generator.rows_per_sec == 0.0
            && kafka.is_some_and(|k| k.bootstrap_servers == EMBEDDED)
        {
            // librdkafka's mock broker keeps a bounded window per partition: a generator that
            // outruns the job would have events deleted before they are read.
            list.push("`rows_per_sec` must be > 0 with the embedded broker, which keeps only a bounded window of records".to_owned());
        }
        // The generator writes Criteo lines, which neither another schema nor the label join
        // reads: every event would be a dead letter.
        if job.schema.is_some() && !criteo_lines {
            list.push(
                "it writes Criteo lines, which only `[schema] preset = \"criteo\"` (tab-separated) reads".to_owned(),
            );
        }
        if let Some(Some(_)) = job.labels {
            list.push(
                "it writes Criteo lines, not the `imp` and `clk` lines `[labels]` joins".to_owned(),
            );
        }
        add("generator", list);
    }
    if let Some(Some(labels)) = job.labels {
        if labels.window_ms == 0 {
            add("labels", vec!["`window_ms` must be > 0 (got 0)".to_owned()]);
        }
    }
    if let Some(features) = job.features {
        match (features, &schema) {
            (FeatureSpec::Hashed { .. }, _) if preset == Some(false) => add(
                "features",
                vec!["`type = \"hashed\"` reads the criteo preset only: hash another schema's fields with `type = \"map\"` and `hash` transforms".to_owned()],
            ),
            (FeatureSpec::Hashed { .. }, _) => {
                add("features", features.problems(&Schema::criteo()))
            }
            (FeatureSpec::Map(_), Some(schema)) => add("features", features.problems(schema)),
            (FeatureSpec::Map(_), None) => {}
        }
    }
    if let Some(learner) = job.learner {
        add("learner", learner.problems());
    }
    if let Some(publish) = job.publish {
        let mut list = Vec::new();
        if publish.registry.as_os_str().is_empty() {
            list.push("`registry` must name a directory".to_owned());
        }
        if publish.every_events == 0 {
            list.push("`every_events` must be > 0 (got 0)".to_owned());
        }
        if publish.every_seconds == 0 {
            list.push("`every_seconds` must be > 0 (got 0)".to_owned());
        }
        match publish.registry_topic.as_deref() {
            Some(topic) if topic.trim().is_empty() => {
                list.push("`registry_topic` must not be empty".to_owned());
            }
            Some(topic) => {
                // Model versions sent into a topic of events (or events into the registry's)
                // would be read as what they are not.
                let sinks = job.sinks.flatten();
                let taken = [
                    kafka.map(|k| k.topic.as_str()),
                    kafka.map(|k| k.dead_letter_topic.as_str()),
                    sinks.and_then(|s| s.predictions_topic.as_deref()),
                    sinks.and_then(|s| s.metrics_topic.as_deref()),
                ];
                if taken.contains(&Some(topic)) {
                    list.push(format!(
                        "`registry_topic` must differ from the source's and the sinks' topics (got {topic:?})"
                    ));
                }
            }
            None => {}
        }
        add("publish", list);
    }
    if let Some(Some(serve)) = job.serve {
        if serve.bind.parse::<std::net::SocketAddr>().is_err() {
            add(
                "serve",
                vec![format!(
                    "`bind` must be an address like 127.0.0.1:8080 (got {:?})",
                    serve.bind
                )],
            );
        }
    }
    if let Some(Some(checkpoint)) = job.checkpoint {
        let mut list = Vec::new();
        if checkpoint.state_dir.as_os_str().is_empty() {
            list.push("`state_dir` must name a directory".to_owned());
        }
        if checkpoint.keep == 0 {
            list.push("`keep` must be >= 1 (got 0)".to_owned());
        }
        add("checkpoint", list);
    }
    if let Some(Some(sinks)) = job.sinks {
        let mut list = Vec::new();
        let outputs = [
            ("predictions_topic", &sinks.predictions_topic),
            ("metrics_topic", &sinks.metrics_topic),
        ];
        for (key, topic) in outputs {
            let Some(topic) = topic else { continue };
            if topic.trim().is_empty() {
                list.push(format!("`{key}` must not be empty"));
            } else if kafka.is_some_and(|k| [&k.topic, &k.dead_letter_topic].contains(&topic)) {
                list.push(format!(
                    "`{key}` must differ from the source's topics (got {topic:?})"
                ));
            }
        }
        if sinks.predictions_topic.is_some() && sinks.predictions_topic == sinks.metrics_topic {
            list.push("`predictions_topic` and `metrics_topic` must differ".to_owned());
        }
        if sinks.metrics_interval_ms == 0 {
            list.push("`metrics_interval_ms` must be > 0 (got 0)".to_owned());
        }
        add("sinks", list);
    }
    if job.progress.as_ref().is_some_and(|p| p.epoch_ms == 0) {
        add(
            "progress",
            vec!["`epoch_ms` must be > 0 (got 0)".to_owned()],
        );
    }
    problems
}

/// Deserializes one section, collecting every problem of it. The whole section is tried first;
/// when it fails, each key is tried on its own (with the section's `type` tag, or with each tag
/// there is when it has none), each element of an array of tables on its own, and every
/// missing required key is found, so that all of them are reported, not only the first. What
/// is left once the bad keys are taken out is read as [`Read::Partial`], for the value checks.
fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Read<T> {
    let Some(value) = table.get(name) else {
        if required {
            problems.push(format!("missing section [{name}]"));
        }
        return Read::Absent;
    };
    let Some(section) = value.as_table() else {
        problems.push(format!(
            "[{name}] must be a table (got {})",
            value.type_str()
        ));
        return Read::Unreadable;
    };
    let read = |table: &toml::Table| T::deserialize(toml::Value::Table(table.clone()));
    if let Ok(parsed) = read(section) {
        return Read::Whole(parsed);
    }
    // The tags to try each key with: the section's own, each one there is when a tagged
    // section has none (after reporting that), or none for an untagged section.
    let tags: Vec<Option<toml::Value>> = match section.get("type") {
        Some(tag) => {
            let only_tag = toml::Table::from_iter([("type".to_owned(), tag.clone())]);
            match read(&only_tag) {
                Err(error) if !error.message().starts_with("missing field") => {
                    problems.push(format!("[{name}] `type`: {}", error.message()));
                    return Read::Unreadable;
                }
                _ => vec![Some(tag.clone())],
            }
        }
        None => match read(&toml::Table::new()) {
            Err(error) if error.message() == "missing field `type`" => {
                let tags = variants(|tag| {
                    read(&toml::Table::from_iter([("type".to_owned(), tag)])).map(|_| ())
                });
                problems.push(format!(
                    "[{name}] missing field `type` (one of {})",
                    tags.iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                tags.into_iter()
                    .map(|t| Some(toml::Value::String(t)))
                    .collect()
            }
            _ => vec![None],
        },
    };
    // A key is bad when it fails with every tag; the first tag's reason is reported.
    let fails = |key: &str, value: &toml::Value| -> Option<String> {
        let mut reason = None;
        for tag in &tags {
            let mut single = toml::Table::new();
            if let Some(tag) = tag {
                single.insert("type".to_owned(), tag.clone());
            }
            single.insert(key.to_owned(), value.clone());
            match read(&single) {
                Err(error) if !error.message().starts_with("missing field") => {
                    reason.get_or_insert_with(|| error.message().to_owned());
                }
                _ => return None,
            }
        }
        reason
    };
    let mut rest = section.clone();
    let before = problems.len();
    for (key, value) in section {
        if key == "type" {
            continue;
        }
        let Some(reason) = fails(key, value) else {
            continue;
        };
        rest.remove(key);
        let elements: Vec<String> = match value.as_array() {
            Some(array) if array.iter().all(toml::Value::is_table) => array
                .iter()
                .enumerate()
                .filter_map(|(i, element)| {
                    let reason = fails(key, &toml::Value::Array(vec![element.clone()]))?;
                    Some(format!("[{name}] `{key}[{i}]`: {reason}"))
                })
                .collect(),
            _ => Vec::new(),
        };
        if elements.is_empty() {
            problems.push(format!("[{name}] `{key}`: {reason}"));
        } else {
            problems.extend(elements);
        }
    }
    if tags.len() > 1 {
        // Without a tag, nothing more can be read of the section.
        return Read::Unreadable;
    }
    // Every required key that is missing: each found is given a value of some type it takes
    // (which is then not checked), until the section reads or fails for another reason.
    let mut missing = Vec::new();
    let mut probe = rest.clone();
    loop {
        match read(&probe) {
            Ok(parsed) if missing.is_empty() => return Read::Partial(parsed),
            Ok(_) => break,
            Err(error) => {
                let message = error.message().to_owned();
                let Some(key) = missing_field(&message) else {
                    if missing.is_empty() && problems.len() == before {
                        problems.push(format!("[{name}] {message}"));
                    }
                    break;
                };
                if missing.contains(&key) || missing.len() > 64 {
                    break;
                }
                let stand_in = STAND_INS.iter().find(|stand_in| {
                    let mut with = probe.clone();
                    with.insert(key.clone(), (*stand_in)());
                    read(&with).map_or_else(
                        |e| missing_field(e.message()).is_some_and(|k| k != key),
                        |_| true,
                    )
                });
                // A key left out as bad was reported already.
                if !section.contains_key(&key) {
                    problems.push(format!("[{name}] missing field `{key}`"));
                }
                missing.push(key.clone());
                match stand_in {
                    Some(stand_in) => {
                        probe.insert(key, stand_in());
                    }
                    None => break,
                }
            }
        }
    }
    Read::Unreadable
}

/// Values of each TOML type, tried in place of a missing key to find the next one missing.
const STAND_INS: [fn() -> toml::Value; 6] = [
    || toml::Value::String(String::new()),
    || toml::Value::Integer(1),
    || toml::Value::Float(1.0),
    || toml::Value::Boolean(false),
    || toml::Value::Array(Vec::new()),
    || toml::Value::Table(toml::Table::new()),
];

/// The key a serde "missing field `key`" message names.
fn missing_field(message: &str) -> Option<String> {
    let key = message.strip_prefix("missing field `")?.strip_suffix('`')?;
    Some(key.to_owned())
}

/// The tags of a tagged enum, from serde's message for an unknown one.
fn variants(read: impl Fn(toml::Value) -> Result<(), toml::de::Error>) -> Vec<String> {
    let Err(error) = read(toml::Value::String("\u{1}".to_owned())) else {
        return Vec::new();
    };
    let Some((_, expected)) = error.message().split_once("expected") else {
        return Vec::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Applies `MILLRACE__SECTION__KEY=value` (or `MILLRACE__KEY=value` for top-level keys).
/// Returns the overrides that cannot apply, as problems.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, raw) in env {
        let Some(path) = key.strip_prefix("MILLRACE__") else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        match parts.as_slice() {
            [name] => {
                table.insert(name.clone(), value);
            }
            [section, name] => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(section) => {
                        section.insert(name.clone(), value);
                    }
                    None => problems.push(format!("`{key}`: `{section}` is not a section")),
                }
            }
            _ => problems.push(format!(
                "`{key}`: an override names a top-level key or a section and a key (`MILLRACE__SECTION__KEY`)"
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "ctr"

[source]
type = "kafka"
bootstrap_servers = "embedded"
topic = "criteo"
dead_letter_topic = "criteo-dead-letters"

[features]
type = "hashed"
hash_bits = 20

[learner]
type = "ftrl"
alpha = 0.05
beta = 1.0
l1 = 0.5
l2 = 1.0

[publish]
registry = "target/registry"
"#;

    fn problems(text: &str) -> Vec<String> {
        match JobSpec::from_toml(text) {
            Err(Error::Config { problems }) => problems,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_good_job_with_defaults() {
        let spec = JobSpec::from_toml(GOOD).unwrap();
        assert_eq!(spec.name, "ctr");
        assert_eq!(spec.publish.every_events, 100_000);
        assert_eq!(spec.progress, ProgressSpec::default());
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn lists_every_problem_at_once() {
        let bad = GOOD
            .replace("topic = \"criteo\"\n", "")
            .replace("hash_bits = 20", "hash_bits = \"twenty\"")
            .replace("alpha = 0.05", "alpha = 0.05\nalpah = 1")
            .replace("[publish]", "[publish]\nevery_events = 0\nflush_ms = 3")
            + "\n[serve]\nbind = 8080\n";
        let found = problems(&bad);
        let text = found.join("\n");
        assert!(text.contains("[features] `hash_bits`"), "{text}");
        assert!(text.contains("[learner] `alpah`: unknown field"), "{text}");
        assert!(
            text.contains("[publish] `flush_ms`: unknown field"),
            "{text}"
        );
        assert!(text.contains("[serve] `bind`"), "{text}");
        assert!(text.contains("[source] missing field `topic`"), "{text}");
        // The values of a section are checked once its bad keys are left out.
        assert!(
            text.contains("[publish] `every_events` must be > 0"),
            "{text}"
        );
        assert_eq!(found.len(), 6, "{text}");

        // With the types fixed, the semantic problems all show together.
        let semantic = GOOD
            .replace("topic = \"criteo\"", "topic = \"\"")
            .replace("[publish]", "[publish]\nevery_events = 0")
            .replace("alpha = 0.05", "alpha = -1.0");
        let text = problems(&semantic).join("\n");
        assert!(
            text.contains("[source] `topic` must not be empty"),
            "{text}"
        );
        assert!(
            text.contains("[publish] `every_events` must be > 0"),
            "{text}"
        );
        assert!(text.contains("[learner] `alpha`"), "{text}");
    }

    #[test]
    fn every_missing_key_and_every_bad_element_is_named() {
        let source = "[source]\ntype = \"kafka\"\nbootstrap_servers = \"embedded\"\ntopic = \"criteo\"\ndead_letter_topic = \"criteo-dead-letters\"\n";
        // Only the tag: each required key is reported, not only the first.
        let text = problems(&GOOD.replace(source, "[source]\ntype = \"kafka\"\n")).join("\n");
        for key in ["bootstrap_servers", "topic", "dead_letter_topic"] {
            assert!(
                text.contains(&format!("[source] missing field `{key}`")),
                "{text}"
            );
        }
        // No tag: it is reported, and the keys are still checked against every tag there is.
        let text = problems(&GOOD.replace(
            source,
            "[source]\nbootstrap_servers = \"embedded\"\ntopc = \"x\"\n",
        ))
        .join("\n");
        assert!(
            text.contains("[source] missing field `type` (one of `kafka`, `file`)"),
            "{text}"
        );
        assert!(text.contains("[source] `topc`: unknown field"), "{text}");
        // Each bad element of an array of tables, by its index.
        let features = "[features]\ntype = \"hashed\"\nhash_bits = 20\n";
        let map = "[features]\ntype = \"map\"\n\
                   [[features.transform]]\nkind = \"bucketize\"\nfields = [\"I1\"]\nbukets = 4\n\
                   [[features.transform]]\nkind = \"hash\"\nfields = [\"C1\"]\nbuckets = 8\n\
                   [[features.transform]]\nkind = \"nope\"\nfields = [\"C2\"]\n";
        let text = problems(&GOOD.replace(features, map)).join("\n");
        assert!(text.contains("[features] `transform[0]`"), "{text}");
        assert!(!text.contains("`transform[1]`"), "{text}");
        assert!(text.contains("[features] `transform[2]`"), "{text}");
    }

    #[test]
    fn topics_and_formats_that_contradict_each_other() {
        let text = problems(&GOOD.replace(
            "registry = \"target/registry\"",
            "registry = \"target/registry\"\nregistry_topic = \"criteo\"",
        ))
        .join("\n");
        assert!(
            text.contains("[publish] `registry_topic` must differ"),
            "{text}"
        );
        let text = problems(&format!(
            "{GOOD}\n[generator]\nrows_per_sec = 10.0\n[schema]\npreset = \"criteo\"\nformat = \"json\"\n"
        ))
        .join("\n");
        assert!(
            text.contains("[generator] it writes Criteo lines"),
            "{text}"
        );
    }

    #[test]
    fn missing_sections_and_unknown_keys() {
        let text = problems("name = 3\nsorce = 1\n").join("\n");
        assert!(text.contains("unknown key `sorce`"), "{text}");
        assert!(text.contains("`name` must be a string"), "{text}");
        for section in ["source", "features", "learner", "publish"] {
            assert!(
                text.contains(&format!("missing section [{section}]")),
                "{text}"
            );
        }
        let text = problems(&GOOD.replace("type = \"kafka\"", "type = \"kafak\"")).join("\n");
        assert!(
            text.contains("[source]") && text.contains("kafak"),
            "{text}"
        );
    }

    #[test]
    fn a_factorization_machine_is_a_learner_type() {
        let text = GOOD.replace(
            "type = \"ftrl\"\nalpha = 0.05\nbeta = 1.0\nl1 = 0.5\nl2 = 1.0",
            "type = \"fm\"\nfactors = 4",
        );
        let spec = JobSpec::from_toml(&text).unwrap();
        assert!(matches!(spec.learner, LearnerSpec::Fm(p) if p.factors == 4));
        let found = problems(&text.replace("factors = 4", "factors = 0\nfactor_lr = 1")).join("\n");
        assert!(
            found.contains("[learner] `factor_lr`: unknown field"),
            "{found}"
        );
    }

    #[test]
    fn a_label_join_is_read_and_checked() {
        let text = format!("{GOOD}\n[labels]\nwindow_ms = 1000\nlate = \"correct\"\n");
        let spec = JobSpec::from_toml(&text).unwrap();
        let labels = spec.labels.unwrap();
        assert_eq!(labels.late, LatePolicy::Correct);
        assert_eq!(labels.window_epochs(spec.progress.epoch_ms), 5);
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);

        let bad = format!("{GOOD}\n[labels]\nwindow_ms = 0\nlate = \"keep\"\nspan = 1\n");
        let text = problems(&bad).join("\n");
        assert!(
            text.contains("[labels] `late`: unknown variant `keep`"),
            "{text}"
        );
        assert!(text.contains("[labels] `span`"), "{text}");
        let zero = format!("{GOOD}\n[labels]\nwindow_ms = 0\n");
        assert_eq!(
            problems(&zero),
            ["[labels] `window_ms` must be > 0 (got 0)"]
        );
    }

    #[test]
    fn output_sinks_are_read_and_checked() {
        let text = format!("{GOOD}\n[sinks]\nmetrics_topic = \"ctr-metrics\"\n");
        let spec = JobSpec::from_toml(&text).unwrap();
        let sinks = spec.sinks.as_ref().unwrap();
        assert_eq!(sinks.metrics_topic.as_deref(), Some("ctr-metrics"));
        assert_eq!(sinks.metrics_interval_ms, 1000);
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);

        let bad = format!("{GOOD}\n[sinks]\nmetrics_topic = \"criteo\"\nmetrics_interval_ms = 0\npredictions_topic = \" \"\n");
        assert_eq!(
            problems(&bad),
            [
                "[sinks] `predictions_topic` must not be empty",
                "[sinks] `metrics_topic` must differ from the source's topics (got \"criteo\")",
                "[sinks] `metrics_interval_ms` must be > 0 (got 0)"
            ]
        );
        let same =
            format!("{GOOD}\n[sinks]\nmetrics_topic = \"out\"\npredictions_topic = \"out\"\n");
        assert_eq!(
            problems(&same),
            ["[sinks] `predictions_topic` and `metrics_topic` must differ"]
        );
        let unknown = format!("{GOOD}\n[sinks]\npredictions = \"p\"\n");
        assert!(problems(&unknown)[0].contains("[sinks] `predictions`: unknown field"));
    }

    #[test]
    fn json_records_and_the_event_time_field_are_checked() {
        let named = GOOD.replace("[features]", "event_time_field = \"ts\"\n\n[features]");
        assert_eq!(
            problems(&named),
            ["[source] `event_time_field` needs the criteo preset's JSON records (`[schema] preset = \"criteo\"`, `format = \"json\"`); a declared schema names its `time` field"]
        );
        let json = format!("{named}\n[schema]\npreset = \"criteo\"\nformat = \"json\"\n");
        let spec = JobSpec::from_toml(&json).unwrap();
        // The schema's JSON reader takes the fields it names and passes over the time field.
        let layout = spec
            .features
            .compile(&spec.event_schema().unwrap())
            .unwrap();
        let mut batch = millrace_models::EventBatch::new(layout.schema.fields.len());
        millrace_models::fmap::Parser::new(&layout)
            .parse_record(
                br#"{"label": 1, "I1": 3, "ts": 1700000000000}"#,
                0,
                &mut batch,
            )
            .unwrap();
        assert_eq!(batch.labels, [true]);
        assert_eq!(batch.values[0], millrace_models::fmap::Value::Num(3.0));
        let joined = format!("{json}\n[labels]\nwindow_ms = 1000\n");
        assert_eq!(problems(&joined).len(), 1);
        assert!(problems(&named.replace("\"ts\"", "\" \""))
            .contains(&"[source] `event_time_field` must not be empty".to_owned()));
    }

    /// A declared schema's problems and the FeatureMap's against it come in one list.
    #[test]
    fn a_declared_schema_lists_every_problem_with_the_features() {
        let declared = GOOD.replace(
            "[features]\ntype = \"hashed\"\nhash_bits = 20",
            r#"[schema]
format = "csv"
fields = [
  { name = "click", type = "label" },
  { name = "site", type = "category" },
  { name = "site", type = "number" },
  { name = "price", type = "float" },
]

[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["site", "country"]
[[features.transform]]
kind = "bucketize"
fields = ["site"]
buckets = 10"#,
        );
        assert_eq!(
            problems(&declared),
            [
                "[schema] field 3 (`site`): the name is given twice",
                "[schema] field 4 (`price`): unknown type \"float\" (expected one of skip, label, time, category, number, tokens)",
            ]
        );
        let fixed = declared
            .replace("{ name = \"site\", type = \"number\" },\n", "")
            .replace("\"float\"", "\"number\"");
        assert_eq!(
            problems(&fixed),
            [
                "[features] transform 1 (one_hot): no field `country`",
                "[features] transform 2 (bucketize): `site` is a category, not a number",
            ]
        );
        let good = fixed
            .replace(", \"country\"", "")
            .replace("[\"site\"]\nbuckets", "[\"price\"]\nbuckets");
        let spec = JobSpec::from_toml(&good).unwrap();
        assert_eq!(spec.event_schema().unwrap().fields, ["site", "price"]);
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
        let features = good.find("[features]").unwrap()..good.find("[learner]").unwrap();
        let mut hashed = good.clone();
        hashed.replace_range(
            features,
            "[features]\ntype = \"hashed\"\nhash_bits = 20\n\n",
        );
        assert_eq!(
            problems(&hashed),
            ["[features] `type = \"hashed\"` reads the criteo preset only: hash another schema's fields with `type = \"map\"` and `hash` transforms"]
        );
    }

    #[test]
    fn the_old_decode_section_says_what_replaces_it() {
        let old = format!("{GOOD}\n[decode]\nformat = \"criteo\"\n");
        assert_eq!(
            problems(&old),
            ["`[decode]` is replaced by `[schema]`: `format = \"criteo\"` is `preset = \"criteo\"`, `format = \"json\"` is `preset = \"criteo\"` with `format = \"json\"`"]
        );
    }

    #[test]
    fn a_file_source_is_checked_and_cannot_be_checkpointed() {
        let source = GOOD.find("[source]").unwrap()..GOOD.find("[features]").unwrap();
        let mut file = GOOD.to_owned();
        file.replace_range(
            source,
            "[source]\ntype = \"file\"\npath = \"events.tsv\"\nrows_per_sec = -1.0\n\n",
        );
        let checkpointed = format!("{file}\n[checkpoint]\nstate_dir = \"state\"\n");
        assert_eq!(
            problems(&checkpointed),
            [
                "[source] `rows_per_sec` must be > 0 (got -1)",
                "[checkpoint] a `file` source replays its file from the start: it cannot resume from a checkpoint",
            ]
        );
        let spec = JobSpec::from_toml_with_env_in(
            &file.replace("rows_per_sec = -1.0", "repeat = true"),
            std::iter::empty(),
            Path::new("/jobs"),
        )
        .unwrap();
        let SourceSpec::File(file) = &spec.source else {
            panic!("a file source: {:?}", spec.source);
        };
        assert_eq!(file.path, Path::new("/jobs/events.tsv"));
        assert!(file.repeat);
    }

    #[test]
    fn the_shipped_demo_job_is_valid() {
        let spec = JobSpec::from_toml(include_str!("../../examples/ctr.toml")).unwrap();
        assert_eq!(spec.name, "ctr");
        assert!(spec.generator.is_some() && spec.serve.is_some());
    }

    #[test]
    fn the_shipped_featuremap_job_is_valid() {
        let text = include_str!("../../examples/ctr-featuremap.toml");
        let spec = JobSpec::from_toml(text).unwrap();
        assert_eq!(
            spec.features,
            FeatureSpec::Map(millrace_models::FeatureMapSpec::criteo_default())
        );
        assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn a_feature_map_spec_lists_every_problem() {
        let bad = GOOD.replace(
            "type = \"hashed\"\nhash_bits = 20\n",
            "type = \"map\"\n[[features.transform]]\nkind = \"bucketize\"\nfields = [\"Z9\"]\nbuckets = 0\n[[features.transform]]\nkind = \"one_hot\"\nfields = [\"C1\"]\nmin_count = 0\n",
        );
        let found = problems(&bad);
        assert!(found.len() >= 3, "{found:?}");
        assert!(
            found.iter().all(|p| p.starts_with("[features]")),
            "{found:?}"
        );
    }

    #[test]
    fn an_unbounded_generator_needs_a_real_broker() {
        let text = format!("{GOOD}\n[generator]\nrows_per_sec = 0.0\n");
        let found = problems(&text).join("\n");
        assert!(
            found.contains("[generator] `rows_per_sec` must be > 0 with the embedded broker"),
            "{found}"
        );
        let real = text.replace("\"embedded\"", "\"127.0.0.1:9092\"");
        assert!(JobSpec::from_toml(&real).is_ok());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("MILLRACE__SOURCE__TOPIC".to_owned(), "other".to_owned()),
            ("MILLRACE__PUBLISH__EVERY_EVENTS".to_owned(), "7".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let spec = JobSpec::from_toml_with_env(GOOD, env).unwrap();
        let SourceSpec::Kafka(kafka) = &spec.source else {
            panic!("a kafka source: {:?}", spec.source);
        };
        assert_eq!(kafka.topic, "other");
        assert_eq!(spec.publish.every_events, 7);
        // One level too many is a problem, not a silent no-op.
        let deep = [("MILLRACE__SOURCE__TLS__CA".to_owned(), "x".to_owned())];
        match JobSpec::from_toml_with_env(GOOD, deep) {
            Err(Error::Config { problems }) => {
                assert!(
                    problems[0].contains("MILLRACE__SOURCE__TLS__CA"),
                    "{problems:?}"
                )
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
