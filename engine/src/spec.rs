//! The job spec: what `millrace run job.toml` reads, and what the builder API builds.
//!
//! Layers: built-in defaults, then the job file, then `MILLRACE__SECTION__KEY=value` environment
//! overrides (the value is read as TOML, or as a string when it is not TOML). Loading checks
//! every section and every key and reports every problem at once: unknown keys, wrong types,
//! missing sections and values out of range.

use crate::error::{Error, Result};
use millrace_connectors::kafka::{KafkaSourceConfig, EMBEDDED};
use millrace_models::{FeatureSpec, RecordFormat};
use millrace_operators::LatePolicy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole job: source → decode → features → learner → publish → serve.
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
    /// How records are decoded.
    #[serde(default)]
    pub decode: DecodeSpec,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceSpec {
    /// A Kafka topic.
    Kafka(KafkaSourceConfig),
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
    /// How the job's records hold events.
    pub fn record_format(&self) -> RecordFormat {
        let SourceSpec::Kafka(kafka) = &self.source;
        match self.decode.format {
            Format::Criteo => RecordFormat::Tsv,
            Format::Json => RecordFormat::Json {
                ignore: kafka.event_time_field.clone(),
            },
        }
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

/// The wire format of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Criteo tab-separated lines.
    #[default]
    Criteo,
    /// JSON objects of the Criteo fields by name, with `label` (and, when the source names
    /// one, the event-time field).
    Json,
}

/// How records are decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeSpec {
    /// The records' format.
    pub format: Format,
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
    "decode",
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
        Self::from_toml_with_env(&text, std::env::vars())
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
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            problems: vec![format!("not valid TOML: {}", e.message())],
        })?;
        apply_env(&mut table, env);
        let mut problems = Vec::new();
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
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
        let source = section::<SourceSpec>(&table, "source", true, &mut problems);
        let generator = section::<GeneratorSpec>(&table, "generator", false, &mut problems);
        let decode = section::<DecodeSpec>(&table, "decode", false, &mut problems);
        let labels = section::<LabelsSpec>(&table, "labels", false, &mut problems);
        let features = section::<FeatureSpec>(&table, "features", true, &mut problems);
        let learner = section::<LearnerSpec>(&table, "learner", true, &mut problems);
        let publish = section::<PublishSpec>(&table, "publish", true, &mut problems);
        let serve = section::<ServeSpec>(&table, "serve", false, &mut problems);
        let progress = section::<ProgressSpec>(&table, "progress", false, &mut problems);
        let checkpoint = section::<CheckpointSpec>(&table, "checkpoint", false, &mut problems);
        let sinks = section::<SinksSpec>(&table, "sinks", false, &mut problems);
        let spec = match (name, source, features, learner, publish) {
            (Some(name), Some(source), Some(features), Some(learner), Some(publish)) => {
                Some(JobSpec {
                    name,
                    source,
                    generator,
                    decode: decode.unwrap_or_default(),
                    labels,
                    features,
                    learner,
                    publish,
                    serve,
                    progress: progress.unwrap_or_default(),
                    checkpoint,
                    sinks,
                })
            }
            _ => None,
        };
        if let Some(spec) = &spec {
            problems.extend(spec.problems());
        }
        match spec {
            Some(spec) if problems.is_empty() => Ok(spec),
            _ => Err(Error::Config { problems }),
        }
    }

    /// Problems of the values (ranges, emptiness, consistency), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut add = |section: &str, list: Vec<String>| {
            problems.extend(list.into_iter().map(|p| format!("[{section}] {p}")));
        };
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || self.name.is_empty()
        {
            add(
                "job",
                vec![format!(
                    "`name` must be letters, digits, `-` or `_` (got {:?})",
                    self.name
                )],
            );
        }
        match &self.source {
            SourceSpec::Kafka(kafka) => add("source", kafka.problems()),
        }
        let SourceSpec::Kafka(kafka) = &self.source;
        let embedded = kafka.bootstrap_servers == EMBEDDED;
        if kafka.event_time_field.is_some() && self.decode.format != Format::Json {
            add(
                "source",
                vec![
                    "`event_time_field` needs JSON records (`[decode] format = \"json\"`)"
                        .to_owned(),
                ],
            );
        }
        if self.labels.is_some() && self.decode.format == Format::Json {
            add(
                "decode",
                vec!["`format = \"json\"` cannot be joined by `[labels]`, which reads `imp` and `clk` lines".to_owned()],
            );
        }
        if let Some(generator) = &self.generator {
            if !(generator.rows_per_sec >= 0.0 && generator.rows_per_sec.is_finite()) {
                add(
                    "generator",
                    vec![format!(
                        "`rows_per_sec` must be >= 0 (got {})",
                        generator.rows_per_sec
                    )],
                );
            } else if generator.rows_per_sec == 0.0 && embedded {
                // librdkafka's mock broker keeps a bounded window per partition: a generator that
                // outruns the job would have events deleted before they are read.
                add(
                    "generator",
                    vec!["`rows_per_sec` must be > 0 with the embedded broker, which keeps only a bounded window of records".to_owned()],
                );
            }
        }
        if let Some(labels) = &self.labels {
            if labels.window_ms == 0 {
                add("labels", vec!["`window_ms` must be > 0 (got 0)".to_owned()]);
            }
        }
        add("features", self.features.problems());
        add("learner", self.learner.problems());
        let mut publish = Vec::new();
        if self.publish.registry.as_os_str().is_empty() {
            publish.push("`registry` must name a directory".to_owned());
        }
        if self.publish.every_events == 0 {
            publish.push("`every_events` must be > 0 (got 0)".to_owned());
        }
        if self.publish.every_seconds == 0 {
            publish.push("`every_seconds` must be > 0 (got 0)".to_owned());
        }
        if self.publish.registry_topic.as_deref() == Some("") {
            publish.push("`registry_topic` must not be empty".to_owned());
        }
        add("publish", publish);
        if let Some(serve) = &self.serve {
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
        if let Some(checkpoint) = &self.checkpoint {
            let mut list = Vec::new();
            if checkpoint.state_dir.as_os_str().is_empty() {
                list.push("`state_dir` must name a directory".to_owned());
            }
            if checkpoint.keep == 0 {
                list.push("`keep` must be >= 1 (got 0)".to_owned());
            }
            add("checkpoint", list);
        }
        if let Some(sinks) = &self.sinks {
            let mut list = Vec::new();
            let outputs = [
                ("predictions_topic", &sinks.predictions_topic),
                ("metrics_topic", &sinks.metrics_topic),
            ];
            for (key, topic) in outputs {
                let Some(topic) = topic else { continue };
                if topic.trim().is_empty() {
                    list.push(format!("`{key}` must not be empty"));
                } else if [&kafka.topic, &kafka.dead_letter_topic].contains(&topic) {
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
        if self.progress.epoch_ms == 0 {
            add(
                "progress",
                vec!["`epoch_ms` must be > 0 (got 0)".to_owned()],
            );
        }
        problems
    }

    /// The job as TOML text, which [`JobSpec::from_toml`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a job spec serializes to TOML")
    }
}

/// Deserializes one section, collecting every problem of it: the whole section is tried first;
/// when it fails, each key is tried on its own (with the section's `type` tag) so that every
/// unknown key and every ill-typed value is reported, not only the first.
fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<T> {
    let Some(value) = table.get(name) else {
        if required {
            problems.push(format!("missing section [{name}]"));
        }
        return None;
    };
    let Some(section) = value.as_table() else {
        problems.push(format!(
            "[{name}] must be a table (got {})",
            value.type_str()
        ));
        return None;
    };
    if let Ok(parsed) = T::deserialize(value.clone()) {
        return Some(parsed);
    }
    if let Some(tag) = section.get("type") {
        let mut only_tag = toml::Table::new();
        only_tag.insert("type".to_owned(), tag.clone());
        if let Err(error) = T::deserialize(toml::Value::Table(only_tag)) {
            if !error.message().starts_with("missing field") {
                problems.push(format!("[{name}] `type`: {}", error.message()));
                return None;
            }
        }
    }
    let before = problems.len();
    for (key, value) in section {
        if key == "type" {
            continue;
        }
        let mut single = toml::Table::new();
        if let Some(tag) = section.get("type") {
            single.insert("type".to_owned(), tag.clone());
        }
        single.insert(key.clone(), value.clone());
        if let Err(error) = T::deserialize(toml::Value::Table(single)) {
            let message = error.message();
            if !message.starts_with("missing field") {
                problems.push(format!("[{name}] `{key}`: {message}"));
            }
        }
    }
    if problems.len() == before {
        // Each key is fine on its own: what is left is a missing required key or a bad tag.
        if let Err(error) = T::deserialize(value.clone()) {
            problems.push(format!("[{name}] {}", error.message()));
        }
    }
    None
}

/// Applies `MILLRACE__SECTION__KEY=value` (or `MILLRACE__KEY=value` for top-level keys).
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) {
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
            [key] => {
                table.insert(key.clone(), value);
            }
            [section, key] => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(section) = entry.as_table_mut() {
                    section.insert(key.clone(), value);
                }
            }
            _ => tracing::warn!(variable = %key, "ignoring an override with more than two levels"),
        }
    }
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
        assert_eq!(found.len(), 5, "{text}");

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
            ["[source] `event_time_field` needs JSON records (`[decode] format = \"json\"`)"]
        );
        let json = format!("{named}\n[decode]\nformat = \"json\"\n");
        let spec = JobSpec::from_toml(&json).unwrap();
        assert_eq!(
            spec.record_format(),
            RecordFormat::Json {
                ignore: Some("ts".into())
            }
        );
        let joined = format!("{json}\n[labels]\nwindow_ms = 1000\n");
        assert_eq!(problems(&joined).len(), 1);
        assert!(problems(&named.replace("\"ts\"", "\" \""))
            .contains(&"[source] `event_time_field` must not be empty".to_owned()));
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
        let SourceSpec::Kafka(kafka) = &spec.source;
        assert_eq!(kafka.topic, "other");
        assert_eq!(spec.publish.every_events, 7);
    }
}
