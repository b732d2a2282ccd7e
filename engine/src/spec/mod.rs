//! The job spec: what `millrace run job.toml` reads, and what the builder API builds.
//!
//! Layers: built-in defaults, then the job file, then `MILLRACE__SECTION__KEY=value` environment
//! overrides (the value is read as TOML, or as a string when it is not TOML). Loading checks
//! every section and every key and reports every problem at once: unknown keys, wrong types,
//! missing sections and values out of range.
//!
//! Here, the spec's types; in `load`, reading a job file (each section read with every problem
//! of it by `crate::section`); in `check`, the checks of the values; in `env`, the overrides.

pub use crate::catalog::{
    ConnectorSpec, FileSourceSpec, GeneratorSourceSpec, SinkSpec, SourceSpec,
};
use crate::error::{Error, Result};
use millrace_connectors::kafka::Undelivered;
use millrace_models::embeddings::EmbeddingSpec;
use millrace_models::{FeatureSpec, Schema, SchemaSpec};
use millrace_operators::LatePolicy;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use locate::Located;

/// A whole job: source → parse → features → learner → publish → serve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name; also the name its model is published and served under.
    pub name: String,
    /// Where events come from: a `type` in the job's catalog and the keys that type takes.
    #[schemars(schema_with = "crate::catalog::source_schema")]
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
    /// Optional sample buffer (`[samples]`): every epoch's transformed rows kept on disk as
    /// Arrow IPC segments for retraining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<SamplesSpec>,
    /// Optional periodic retraining of a deep model on the sample buffer (`[retrain]`),
    /// published behind an evaluation gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainSpec>,
}

/// The retraining stage: every `every_seconds` (or `every_rows` new buffered rows, and once
/// more when a bounded input ends), on its own thread, a deep model is trained on the sample
/// buffer's window (warm-started from the newest deep version), scored on the window's newest
/// `holdout` rows, and published as `<publish_as>` (default `<name>-deep`) only when its
/// weights are finite and its AUC and log-loss are within the tolerances of the current
/// version's: the newest deep version's on the same rows, or before the first, the online
/// model's progressive validation on the recent events (what it scored serving them; it has
/// learned the held-out rows). Otherwise the current version keeps serving and the reasons are
/// logged and counted. In a cluster every process is a rank of the training, on its own
/// workers' buffers; process 0 judges and publishes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetrainSpec {
    /// `deepfm` or `dcnv2`.
    #[schemars(extend("enum" = ["deepfm", "dcnv2"]))]
    pub model: String,
    /// Seconds between two retraining runs.
    pub every_seconds: u64,
    /// Also retrain once this many rows were buffered since the last run; 0 for never.
    pub every_rows: u64,
    /// Train on the rows whose event time is within this many seconds of the newest; 0 for the
    /// whole buffer.
    pub window_seconds: u64,
    /// The share of the window, newest rows first, held out to score candidate and current.
    pub holdout: f64,
    /// Fewer rows in the window than this and the run is skipped.
    pub min_rows: usize,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Each field's embedding width.
    pub embedding_dim: usize,
    /// The MLP's hidden widths.
    pub mlp: Vec<usize>,
    /// DCN-v2's cross layers.
    pub cross_layers: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Rows per step.
    pub batch_size: usize,
    /// Passes over the window per run.
    pub passes: usize,
    /// The seed of a fresh model's weights.
    pub seed: u64,
    /// libtorch's threads for training (its CPU kernels), beside the dataflow's workers.
    pub threads: usize,
    /// How far below the current version's AUC a candidate may be.
    pub auc_tolerance: f64,
    /// How far above the current version's log-loss a candidate may be.
    pub logloss_tolerance: f64,
    /// The name deep versions are published and served under; `<name>-deep` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_as: Option<String>,
    /// Where the embedding rows live and how they learn (`[retrain.embeddings]`).
    pub embeddings: EmbeddingSpec,
    /// Mixed precision on CUDA (fp16 autocast with dynamic loss scaling); f32 on the CPU.
    pub mixed_precision: bool,
    /// In a cluster, every process is a rank of the training; the ranks meet on each
    /// process's timely port plus this.
    pub ring_port_offset: u16,
}

impl Default for RetrainSpec {
    fn default() -> Self {
        RetrainSpec {
            model: "deepfm".to_owned(),
            every_seconds: 600,
            every_rows: 0,
            window_seconds: 0,
            holdout: 0.1,
            min_rows: 1000,
            device: "auto".to_owned(),
            embedding_dim: 8,
            mlp: vec![64, 32],
            cross_layers: 2,
            learning_rate: 1e-3,
            batch_size: 1024,
            passes: 1,
            seed: 1,
            threads: 1,
            auc_tolerance: 0.002,
            logloss_tolerance: 0.005,
            publish_as: None,
            embeddings: EmbeddingSpec::default(),
            mixed_precision: false,
            ring_port_offset: 1000,
        }
    }
}

impl RetrainSpec {
    /// The name deep versions of job `job` are published under.
    pub fn published_name(&self, job: &str) -> String {
        self.publish_as
            .clone()
            .unwrap_or_else(|| format!("{job}-deep"))
    }
}

/// The sample buffer: each epoch's transformed rows (per entry its feature, id and value; per
/// row the epoch, event time, FeatureMap version and label) appended to rolling Arrow IPC
/// files, `<dir>/worker-<index>/*.arrow`, which PyArrow reads with `pyarrow.ipc.open_file`. A
/// checkpoint holds the list of whole segments, and a restored job's buffer holds the rows the
/// uninterrupted job's would (cut into segments at other places, so retention may retire them
/// at other times).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SamplesSpec {
    /// The process's buffer directory; `<state_dir>/samples` when absent, which needs a
    /// `[checkpoint]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Segments whose newest event is older than this (event time, behind the newest event the
    /// buffer has seen) are deleted, in seconds.
    pub max_age_seconds: u64,
    /// The most bytes the process's buffer holds, shared evenly by its workers; the oldest
    /// segments go first.
    pub max_bytes: u64,
    /// A segment is closed, and the next started, once it holds this many bytes (and at every
    /// checkpoint); at most a quarter of a worker's share of `max_bytes`.
    pub segment_bytes: u64,
    /// A segment is also closed once it has been open this many seconds, so that the
    /// retraining stage sees a slow stream's rows (a job without checkpoints closes segments
    /// by size and age only); 0 for no limit.
    pub segment_seconds: u64,
}

impl Default for SamplesSpec {
    fn default() -> Self {
        SamplesSpec {
            dir: None,
            max_age_seconds: 24 * 3600,
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            segment_seconds: 60,
        }
    }
}

impl SamplesSpec {
    /// The buffer directory: `dir`, or `samples` in the checkpoints' `state_dir`.
    pub fn directory(&self, checkpoint: Option<&CheckpointSpec>) -> Option<PathBuf> {
        self.dir
            .clone()
            .or_else(|| checkpoint.map(|c| c.state_dir.join("samples")))
    }
}

/// The job's outputs besides the registry: the dead letters, each event's prediction and the
/// job's figures. Each may go to a sink of any type in the job's catalog (a table with a
/// `type`); `predictions_topic` and `metrics_topic` are short for a `kafka` sink's topic. Kafka
/// topics are on the source's brokers (the job's embedded broker for a source other than
/// `kafka`), written with the idempotent producer; every message names its epoch in the header
/// `millrace-epoch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinksSpec {
    /// Where the dead letters go; the source's dead-letter topic when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::catalog::sink_schema")]
    pub dead_letters_sink: Option<SinkSpec>,
    /// Where each event's prediction goes (as `predictions_topic` describes its messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::catalog::sink_schema")]
    pub predictions_sink: Option<SinkSpec>,
    /// Where the job's figures go (as `metrics_topic` describes its messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::catalog::sink_schema")]
    pub metrics_sink: Option<SinkSpec>,
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
    /// What a Kafka sink does with a message the broker does not acknowledge: `"block"` (the
    /// default) retries it however long the broker is away and holds the job back once the
    /// producer's queue is full, so nothing is lost; `"drop"` gives up after five minutes and
    /// counts it (`millrace_*_dropped_total`), so the job never waits for its outputs.
    #[serde(default)]
    pub on_undelivered: Undelivered,
}

fn default_metrics_interval() -> u64 {
    1000
}

impl Default for SinksSpec {
    fn default() -> Self {
        SinksSpec {
            dead_letters_sink: None,
            predictions_sink: None,
            metrics_sink: None,
            predictions_topic: None,
            metrics_topic: None,
            metrics_interval_ms: default_metrics_interval(),
            on_undelivered: Undelivered::default(),
        }
    }
}

impl SinksSpec {
    /// The predictions' sink: the `predictions_sink` table, or a `kafka` sink of
    /// `predictions_topic`.
    pub fn predictions(&self) -> Option<SinkSpec> {
        Self::either(&self.predictions_sink, &self.predictions_topic)
    }

    /// The figures' sink: the `metrics_sink` table, or a `kafka` sink of `metrics_topic`.
    pub fn metrics(&self) -> Option<SinkSpec> {
        Self::either(&self.metrics_sink, &self.metrics_topic)
    }

    fn either(table: &Option<SinkSpec>, topic: &Option<String>) -> Option<SinkSpec> {
        table
            .clone()
            .or_else(|| topic.as_ref().map(|topic| SinkSpec::kafka_topic(topic)))
    }
}

/// Where and how often the job checkpoints its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// The directory of the job's RocksDB state (one per process).
    pub state_dir: PathBuf,
    /// The least processing time between checkpoints, in milliseconds; 0 checkpoints every
    /// epoch.
    #[serde(default = "default_checkpoint_interval")]
    pub interval_ms: u64,
    /// How many complete checkpoints to keep (the newest that reads back whole is restored);
    /// a process of a cluster also keeps every one from the oldest of the processes' newest
    /// ones on, so that they hold one in common.
    #[serde(default = "default_checkpoint_keep")]
    pub keep: usize,
    /// Checkpoint writes that may fail in a row (a full disk) before the sources stop reading
    /// until one is written; the newest failed one is tried again every second meanwhile.
    #[serde(default = "CheckpointSpec::default_max_failures")]
    pub max_failures: u32,
}

impl CheckpointSpec {
    /// The `max_failures` a job file that gives none has.
    pub fn default_max_failures() -> u32 {
        millrace_operators::checkpoint::DEFAULT_MAX_FAILURES
    }
}

fn default_checkpoint_interval() -> u64 {
    5000
}

fn default_checkpoint_keep() -> usize {
    3
}

/// The label join: how long a click may follow its impression, and what a later one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    /// The attribution window in milliseconds, rounded up to whole epochs of
    /// `[progress] epoch_ms` (the join's clock is the job's epochs).
    pub window_ms: u64,
    /// `"drop"` (the negative stands) or `"correct"` (the impression is emitted again as a
    /// positive) for a click after the window.
    #[serde(default)]
    pub late: LatePolicy,
    /// Impressions each worker remembers at most; one more goes to the dead letters
    /// (`label_join_full`) and is counted.
    #[serde(default = "LabelsSpec::default_max_pending")]
    pub max_pending: usize,
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
    /// The `max_pending` a job file that gives none has: about half a GiB of Criteo
    /// impressions per worker.
    pub fn default_max_pending() -> usize {
        1_000_000
    }

    /// The window in epochs of `epoch_ms`.
    pub fn window_epochs(&self, epoch_ms: u64) -> u64 {
        self.window_ms.div_ceil(epoch_ms.max(1))
    }
}

/// The demo's generator: synthetic events of the job's `[schema]` (as `millrace gen` makes
/// them) produced to the source's topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorSpec {
    /// Events per second to produce; 0 for as fast as possible.
    pub rows_per_sec: f64,
    /// Events to produce in all; 0 for no end (until the job stops).
    pub rows: u64,
    /// Seed of the generator.
    pub seed: u64,
    /// Preferences planted between the first three category fields of at most 5,000 values:
    /// latent vectors of this many numbers per value whose dot products enter the log-odds
    /// (what a deep model learns and a per-value weight cannot); 0 for none.
    pub interactions: usize,
    /// The log-odds scale of those preferences.
    pub interaction_strength: f32,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        GeneratorSpec {
            rows_per_sec: 20_000.0,
            rows: 0,
            seed: 7,
            interactions: 0,
            interaction_strength: 2.0,
        }
    }
}

/// The online learner, chosen by `type` (`"ftrl"` or `"fm"`).
pub use millrace_models::LearnerParams as LearnerSpec;

/// When and where model versions are published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// The registry directory.
    pub registry: PathBuf,
    /// Publish after this many newly learned events.
    #[serde(default = "PublishSpec::default_every_events")]
    pub every_events: u64,
    /// Publish after this many seconds (when something new was learned).
    #[serde(default = "PublishSpec::default_every_seconds")]
    pub every_seconds: u64,
    /// Also send every version to this compacted topic on the source's brokers, for serving
    /// pods that follow it (`millrace serve --registry kafka://BROKERS/TOPIC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_topic: Option<String>,
    /// A file holding the key (at least 32 bytes of text, not open to others) that signs every
    /// manifest sent to `registry_topic`; serving given the same file (`--registry-key-file`)
    /// refuses versions not signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_key_file: Option<PathBuf>,
    /// The versions of each model the registry directory keeps (the newest; versions a server
    /// pins, splits or shadows are kept too); 0 keeps every version.
    #[serde(default = "PublishSpec::default_keep_versions")]
    pub keep_versions: usize,
}

impl PublishSpec {
    /// The `every_events` a job file that gives none has.
    pub fn default_every_events() -> u64 {
        100_000
    }

    /// The `every_seconds` a job file that gives none has.
    pub fn default_every_seconds() -> u64 {
        10
    }

    /// The `keep_versions` a job file that gives none has.
    pub fn default_keep_versions() -> usize {
        20
    }
}

impl Default for PublishSpec {
    fn default() -> Self {
        PublishSpec {
            registry: PathBuf::new(),
            every_events: PublishSpec::default_every_events(),
            every_seconds: PublishSpec::default_every_seconds(),
            registry_topic: None,
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        }
    }
}

/// In-process HTTP serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

mod check;
mod env;
mod json_schema;
mod load;
mod locate;
mod reference;
#[cfg(test)]
mod tests;
