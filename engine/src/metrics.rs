//! The job's metrics: names and help in one place, their collection at each scrape, and the
//! progress line.

use millrace_models::fmap::BadKind;
use millrace_operators::checkpoint::Collector;
use millrace_operators::{
    FeaturizeStats, LabelJoinStats, QualitySummary, SampleStats, SourceStats, TrainerStats,
};
use millrace_serving::exposition::family;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType::{self, Counter, Gauge, Histogram};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};

/// Records read from the source.
pub const SOURCE_RECORDS: Family = Family::new(
    "millrace_source_records_total",
    "Records read from the source.",
);
/// Records in the source topic not yet read (sum over partitions).
pub const SOURCE_LAG: Family = Family::new(
    "millrace_source_lag_records",
    "Records in the source topic not yet read (sum over partitions).",
);
/// Records that came behind the event-time frontier and joined a later epoch.
pub const SOURCE_LATE: Family = Family::new(
    "millrace_source_late_records_total",
    "Records that came behind the event-time frontier and joined a later epoch.",
);
/// Records whose time was more than an hour ahead of the wall clock (a producer's clock gone
/// wrong): they took their partition's current time.
pub const SOURCE_FUTURE: Family = Family::new(
    "millrace_source_future_timestamps_total",
    "Records whose time was more than an hour ahead of the wall clock (a producer's clock gone wrong): they took their partition's current time.",
);
/// The source's event-time frontier, in epochs.
pub const SOURCE_FRONTIER: Family = Family::new(
    "millrace_source_frontier_epoch",
    "The source's event-time frontier, in epochs.",
);
/// Per partition (label `partition`): records read.
pub const SOURCE_PARTITION_RECORDS: Family = Family::new(
    "millrace_source_partition_records_total",
    "Per partition (label partition): records read.",
);
/// Per partition: the event-time watermark, in seconds since the Unix epoch.
pub const SOURCE_PARTITION_WATERMARK: Family = Family::new(
    "millrace_source_partition_watermark_seconds",
    "Per partition: the event-time watermark, in seconds since the Unix epoch.",
);
/// Per partition: records in the partition not yet read.
pub const SOURCE_PARTITION_LAG: Family = Family::new(
    "millrace_source_partition_lag_records",
    "Per partition: records in the partition not yet read.",
);
/// Per partition: 1 when it has been read to its end, else 0 (then, silent, it holds the
/// event-time frontier).
pub const SOURCE_PARTITION_AT_END: Family = Family::new(
    "millrace_source_partition_at_end",
    "Per partition: 1 when it has been read to its end, else 0 (then, silent, it holds the event-time frontier).",
);
/// Per partition: 1 while it is paused for running too far past the frontier, else 0.
pub const SOURCE_PARTITION_PAUSED: Family = Family::new(
    "millrace_source_partition_paused",
    "Per partition: 1 while it is paused for running too far past the frontier, else 0.",
);
/// Checkpoints written.
pub const CHECKPOINTS_WRITTEN: Family =
    Family::new("millrace_checkpoints_written_total", "Checkpoints written.");
/// Checkpoints that could not be written.
pub const CHECKPOINTS_FAILED: Family = Family::new(
    "millrace_checkpoints_failed_total",
    "Checkpoints that could not be written.",
);
/// Checkpoint writes that failed since the last one written; at `[checkpoint] max_failures`
/// the sources stop reading until one is written.
pub const CHECKPOINT_FAILURES_IN_A_ROW: Family = Family::new(
    "millrace_checkpoint_failures_in_a_row",
    "Checkpoint writes that failed since the last one written; at [checkpoint] max_failures the sources stop reading until one is written.",
);
/// Checkpoints skipped on restore because they did not read back whole.
pub const CHECKPOINTS_SKIPPED: Family = Family::new(
    "millrace_checkpoints_skipped_on_restore_total",
    "Checkpoints skipped on restore because they did not read back whole.",
);
/// The epoch of the newest checkpoint written.
pub const CHECKPOINT_EPOCH: Family = Family::new(
    "millrace_checkpoint_epoch",
    "The epoch of the newest checkpoint written.",
);
/// The epoch of the oldest checkpoint the store keeps.
pub const CHECKPOINT_OLDEST_KEPT: Family = Family::new(
    "millrace_checkpoint_oldest_kept_epoch",
    "The epoch of the oldest checkpoint the store keeps: [checkpoint] keep back from the newest, or further in a cluster while another process lags.",
);
/// The size of the newest checkpoint, in bytes.
pub const CHECKPOINT_BYTES: Family = Family::new(
    "millrace_checkpoint_bytes",
    "The size of the newest checkpoint, in bytes.",
);
/// Seconds the newest checkpoint took to write.
pub const CHECKPOINT_SECONDS: Family = Family::new(
    "millrace_checkpoint_write_seconds",
    "Seconds the newest checkpoint took to write.",
);
/// Records parsed into events.
pub const DECODE_EVENTS: Family = Family::new(
    "millrace_decode_events_total",
    "Records parsed into events.",
);
/// Records sent to the dead letters.
pub const DECODE_DEAD_LETTERS: Family = Family::new(
    "millrace_decode_dead_letters_total",
    "Records sent to the dead letters.",
);
/// Dead letters the dead-letter topic did not take (lost; each kind is logged).
pub const DEAD_LETTERS_DROPPED: Family = Family::new(
    "millrace_dead_letters_dropped_total",
    "Dead letters the dead-letter topic did not take (lost; each kind is logged).",
);
/// Records whose event time field (`event_time_field`, or the schema's `time` field) was
/// missing or unusable: they took their Kafka timestamp, or with a schema's field, once their
/// partition had shown a readable time, the partition's current time.
pub const SOURCE_EVENT_TIME_MISSING: Family = Family::new(
    "millrace_source_event_time_missing_total",
    "Records whose event time field (event_time_field, or the schema's time field) was missing or unusable: they took their Kafka timestamp, or with a schema's field, once their partition had shown a readable time, the partition's current time.",
);
/// Records that moved their partition into the next epoch because the epoch held the
/// partition's share of the hold budget (event time that stopped advancing).
pub const SOURCE_OVERFLOWS: Family = Family::new(
    "millrace_source_epoch_overflows_total",
    "Records that moved their partition into the next epoch because the epoch held the partition's share of the hold budget (event time that stopped advancing).",
);
/// Bytes of records the sources hold until the frontier passes their epochs.
pub const SOURCE_HELD_BYTES: Family = Family::new(
    "millrace_source_held_bytes",
    "Bytes of records the sources hold until the frontier passes their epochs.",
);
/// Records a restored source skipped because the broker no longer had them (retention
/// deleted them first; `[source] on_missing_offsets = "skip"`).
pub const SOURCE_SKIPPED: Family = Family::new(
    "millrace_source_records_skipped_total",
    "Records a restored source skipped because the broker no longer had them (retention deleted them first; [source] on_missing_offsets = skip).",
);
/// Old model versions the registry keeper removed (`[publish] keep_versions`).
pub const VERSIONS_REMOVED: Family = Family::new(
    "millrace_registry_versions_removed_total",
    "Old model versions the registry keeper removed ([publish] keep_versions).",
);
/// Times the registry keeper could not prune a model's versions (each logged).
pub const PRUNE_ERRORS: Family = Family::new(
    "millrace_registry_prune_errors_total",
    "Times the registry keeper could not prune a model's versions (each logged).",
);
/// Predictions the predictions topic did not take (lost; the first is logged).
pub const PREDICTIONS_DROPPED: Family = Family::new(
    "millrace_predictions_dropped_total",
    "Predictions the predictions topic did not take (lost; the first is logged).",
);
/// Messages the metrics topic did not take (lost; the first is logged).
pub const METRICS_DROPPED: Family = Family::new(
    "millrace_metrics_messages_dropped_total",
    "Messages the metrics topic did not take (lost; the first is logged).",
);
/// Events learned from.
pub const LEARNER_EVENTS: Family =
    Family::new("millrace_learner_events_total", "Events learned from.");
/// Progressive-validation AUC.
pub const LEARNER_AUC: Family = Family::new(
    "millrace_learner_progressive_auc",
    "Progressive-validation AUC.",
);
/// Progressive-validation AUC over the last `PROGRESSIVE_WINDOW` events.
pub const LEARNER_WINDOW_AUC: Family = Family::new(
    "millrace_learner_progressive_auc_window",
    "Progressive-validation AUC over the last 100,000 events (PROGRESSIVE_WINDOW).",
);
/// Progressive-validation log-loss.
pub const LEARNER_LOGLOSS: Family = Family::new(
    "millrace_learner_progressive_logloss",
    "Progressive-validation log-loss.",
);
/// Per worker (label `worker`): events the worker learned and scored before learning.
pub const LEARNER_WORKER_EVENTS: Family = Family::new(
    "millrace_learner_worker_events_total",
    "Per worker (label worker): events the worker learned and scored before learning.",
);
/// Per worker: progressive-validation AUC of the worker's own predictions.
pub const LEARNER_WORKER_AUC: Family = Family::new(
    "millrace_learner_worker_progressive_auc",
    "Per worker: progressive-validation AUC of the worker's own predictions.",
);
/// Per worker: that AUC over the worker's last `PROGRESSIVE_WINDOW` events.
pub const LEARNER_WORKER_WINDOW_AUC: Family = Family::new(
    "millrace_learner_worker_progressive_auc_window",
    "Per worker: that AUC over the worker's last 100,000 events (PROGRESSIVE_WINDOW).",
);
/// Per worker: progressive-validation log-loss of the worker's own predictions.
pub const LEARNER_WORKER_LOGLOSS: Family = Family::new(
    "millrace_learner_worker_progressive_logloss",
    "Per worker: progressive-validation log-loss of the worker's own predictions.",
);
/// Label join counters (suffix `_total`): impressions, clicks, positives, negatives, late,
/// corrected, duplicate and unmatched clicks.
pub const LABELS_PREFIX: &str = "millrace_labels_";
/// Impressions waiting for their attribution window to close.
pub const LABELS_PENDING: Family = Family::new(
    "millrace_labels_pending_impressions",
    "Impressions waiting for their attribution window to close.",
);
/// Synchronization rounds (all-reduce of the workers' weight changes) applied.
pub const LEARNER_SYNC_ROUNDS: Family = Family::new(
    "millrace_learner_sync_rounds_total",
    "Synchronization rounds (all-reduce of the workers' weight changes) applied.",
);
/// Coordinates whose changes those rounds summed.
pub const LEARNER_SYNC_COORDINATES: Family = Family::new(
    "millrace_learner_sync_coordinates_total",
    "Coordinates whose changes those rounds summed.",
);
/// The newest published model version.
pub const MODEL_VERSION: Family = Family::new(
    "millrace_model_version",
    "The newest published model version.",
);
/// Failed publications.
pub const PUBLISH_ERRORS: Family = Family::new(
    "millrace_model_publish_errors_total",
    "Failed publications.",
);
/// Records produced by the built-in generator.
pub const GENERATOR_RECORDS: Family = Family::new(
    "millrace_generator_records_total",
    "Records produced by the built-in generator.",
);
/// Malformed values in parsed events, handled by the feature spec's policy (label `kind`).
pub const FEATURIZE_BAD_VALUES: Family = Family::new(
    "millrace_featurize_bad_values_total",
    "Malformed values in parsed events, handled by the feature spec's policy (label kind).",
);
/// Rows made by the FeatureMap transform.
pub const FEATURIZE_ROWS: Family = Family::new(
    "millrace_featurize_rows_total",
    "Rows made by the FeatureMap transform.",
);
/// Values looked up in a vocabulary.
pub const FEATURIZE_VOCAB_LOOKUPS: Family = Family::new(
    "millrace_featurize_vocab_lookups_total",
    "Values looked up in a vocabulary.",
);
/// Of those, values without an id (out of vocabulary or hashed fallback).
pub const FEATURIZE_VOCAB_OOV: Family = Family::new(
    "millrace_featurize_vocab_oov_total",
    "Of those, values without an id (out of vocabulary or hashed fallback).",
);
/// The newest FeatureMap version.
pub const FEATUREMAP_VERSION: Family = Family::new(
    "millrace_featuremap_version",
    "The newest FeatureMap version.",
);
/// Values holding a vocabulary id, over all vocabulary features.
pub const FEATUREMAP_VOCAB_SIZE: Family = Family::new(
    "millrace_featuremap_vocab_size",
    "Values holding a vocabulary id, over all vocabulary features.",
);
/// Values counted but without an id yet.
pub const FEATUREMAP_VOCAB_PENDING: Family = Family::new(
    "millrace_featuremap_vocab_pending",
    "Values counted but without an id yet.",
);
/// Vocabulary values evicted (expired or displaced).
pub const FEATUREMAP_EVICTIONS: Family = Family::new(
    "millrace_featuremap_evictions_total",
    "Vocabulary values evicted (expired or displaced).",
);
/// Bucket boundaries that moved in the newest version.
pub const FEATUREMAP_BOUNDARY_SHIFTS: Family = Family::new(
    "millrace_featuremap_boundary_shifts_newest",
    "Bucket boundaries that moved in the newest version.",
);
/// Bucket boundaries that moved over all versions.
pub const FEATUREMAP_BOUNDARY_SHIFTS_TOTAL: Family = Family::new(
    "millrace_featuremap_boundary_shifts_total",
    "Bucket boundaries that moved over all versions.",
);

/// Rows appended to the sample buffer.
pub const SAMPLES_APPENDED: Family = Family::new(
    "millrace_samples_appended_rows_total",
    "Rows appended to the sample buffer.",
);
/// Rows the sample buffer holds (whole segments and the open one).
pub const SAMPLES_ROWS: Family = Family::new(
    "millrace_samples_rows",
    "Rows the sample buffer holds (whole segments and the open one).",
);
/// Bytes the sample buffer holds.
pub const SAMPLES_BYTES: Family =
    Family::new("millrace_samples_bytes", "Bytes the sample buffer holds.");
/// Whole segments of the sample buffer.
pub const SAMPLES_SEGMENTS: Family = Family::new(
    "millrace_samples_segments",
    "Whole segments of the sample buffer.",
);
/// Segments retired by the sample buffer's retention.
pub const SAMPLES_RETIRED: Family = Family::new(
    "millrace_samples_retired_segments_total",
    "Segments retired by the sample buffer's retention.",
);
/// Sample buffer writes and deletions that failed (rows lost from the buffer only).
pub const SAMPLES_ERRORS: Family = Family::new(
    "millrace_samples_errors_total",
    "Sample buffer writes and deletions that failed (rows lost from the buffer only).",
);

/// Retraining runs started.
pub const RETRAIN_RUNS: Family =
    Family::new("millrace_retrain_runs_total", "Retraining runs started.");
/// Deep versions the gate let through and the stage published.
pub const RETRAIN_PUBLISHED: Family = Family::new(
    "millrace_retrain_published_total",
    "Deep versions the gate let through and the stage published.",
);
/// Candidates the gate refused (each run's reasons are logged).
pub const RETRAIN_REFUSED: Family = Family::new(
    "millrace_retrain_refused_total",
    "Candidates the gate refused (each run's reasons are logged).",
);
/// Runs skipped (too few rows, no FeatureMap published yet).
pub const RETRAIN_SKIPPED: Family = Family::new(
    "millrace_retrain_skipped_total",
    "Runs skipped (too few rows, no FeatureMap published yet).",
);
/// Runs that failed (unreadable buffer, libtorch, the registry).
pub const RETRAIN_ERRORS: Family = Family::new(
    "millrace_retrain_errors_total",
    "Runs that failed (unreadable buffer, libtorch, the registry).",
);
/// 1 while a retraining run is training, else 0.
pub const RETRAIN_TRAINING: Family = Family::new(
    "millrace_retrain_training",
    "1 while a retraining run is training, else 0.",
);
/// The newest deep version published.
pub const RETRAIN_VERSION: Family = Family::new(
    "millrace_retrain_model_version",
    "The newest deep version published.",
);
/// The newest candidate's AUC on its held-out rows.
pub const RETRAIN_CANDIDATE_AUC: Family = Family::new(
    "millrace_retrain_candidate_auc",
    "The newest candidate's AUC on its held-out rows.",
);
/// Embedding rows gathered from the host-resident table onto the device, in all.
pub const RETRAIN_ROWS_GATHERED: Family = Family::new(
    "millrace_retrain_rows_gathered_total",
    "Embedding rows gathered from the host-resident table onto the device, in all.",
);
/// The last run's host-table rows gathered per second of training.
pub const RETRAIN_GATHERED_RATE: Family = Family::new(
    "millrace_retrain_gathered_rows_per_second",
    "The last run's host-table rows gathered per second of training.",
);
/// Bytes a gathered row moves to the device.
pub const RETRAIN_ROW_BYTES: Family = Family::new(
    "millrace_retrain_bytes_per_row",
    "Bytes a gathered row moves to the device.",
);
/// Rows the host-resident table held at the end of the last run.
pub const RETRAIN_TABLE_ROWS: Family = Family::new(
    "millrace_retrain_table_rows",
    "Rows the host-resident table held at the end of the last run.",
);

/// Durations of checkpoint writes (the figures of [`Collector`] time each write).
pub const CHECKPOINT_DURATION: Family = Family::new(
    "millrace_checkpoint_duration_seconds",
    "Seconds each checkpoint took to write.",
);
/// Durations of model publications.
pub const PUBLISH_DURATION: Family = Family::new(
    "millrace_model_publish_duration_seconds",
    "Seconds each model version took to publish (write to the registry, and to its topic).",
);

/// A metric family: its name, as scrapers see it, and its help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The name (a counter's ends in `_total`).
    pub name: &'static str,
    /// What it counts or measures.
    pub help: &'static str,
}

impl Family {
    const fn new(name: &'static str, help: &'static str) -> Family {
        Family { name, help }
    }
}

/// The retraining stage's figures (all zero without `[retrain]`).
#[derive(Debug, Default)]
pub struct RetrainStats {
    /// Whether the job retrains.
    pub enabled: AtomicBool,
    /// Runs started.
    pub runs: AtomicU64,
    /// Versions published.
    pub published: AtomicU64,
    /// Candidates refused by the gate.
    pub refused: AtomicU64,
    /// Runs skipped.
    pub skipped: AtomicU64,
    /// Runs that failed.
    pub errors: AtomicU64,
    /// Whether a run is training now.
    pub training: AtomicBool,
    /// The newest deep version published.
    pub version: AtomicU64,
    /// The newest candidate's held-out AUC, as `f64` bits (NaN before the first).
    pub candidate_auc: AtomicU64,
    /// Host-table rows gathered, in all.
    pub gathered: AtomicU64,
    /// The last run's host-table rows gathered per second of training, as `f64` bits.
    pub gathered_rate: AtomicU64,
    /// Bytes a gathered row moves.
    pub row_bytes: AtomicU64,
    /// Rows the host table held at the end of the last run.
    pub table_rows: AtomicU64,
    /// The last run's outcome, in words.
    last: Mutex<String>,
}

impl RetrainStats {
    /// Records the last run's outcome.
    pub fn say(&self, outcome: String) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
    }

    /// The last run's outcome ("" before the first).
    pub fn last(&self) -> String {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn auc(&self) -> f64 {
        let scored = self.published.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed);
        if scored == 0 {
            f64::NAN
        } else {
            f64::from_bits(self.candidate_auc.load(Ordering::Relaxed))
        }
    }
}

/// Reads one figure of a worker's progressive validation.
type WorkerFigure = fn(&QualitySummary) -> f64;

/// Live figures of a running job, shared by its threads.
#[derive(Debug)]
pub struct JobStats {
    /// The model's name (the `model` label).
    pub model: String,
    /// The source's figures: records, late records, frontier, per-partition positions.
    pub source: Arc<SourceStats>,
    /// Records produced by the generator.
    pub generated: AtomicU64,
    /// Dead letters that could not be delivered.
    pub dead_letters_dropped: Arc<AtomicU64>,
    /// Records without a usable event-time field.
    pub event_time_missing: Arc<AtomicU64>,
    /// Records skipped because the broker no longer had them.
    pub source_skipped: Arc<AtomicU64>,
    /// Old model versions the registry keeper removed.
    pub versions_removed: AtomicU64,
    /// Times the registry keeper could not prune a model.
    pub prune_errors: AtomicU64,
    /// Predictions that could not be delivered.
    pub predictions_dropped: Arc<AtomicU64>,
    /// Metrics messages that could not be delivered.
    pub metrics_dropped: Arc<AtomicU64>,
    /// Consumer lag, refreshed by the progress thread (-1 before the first reading).
    pub lag: AtomicI64,
    /// The parse and featurize operators' counters and FeatureMap gauges.
    pub featurize: Arc<FeaturizeStats>,
    /// The label join's figures (all zero without `[labels]`).
    pub labels: Arc<LabelJoinStats>,
    /// The trainer's figures.
    pub trainer: Arc<TrainerStats>,
    /// The sample buffer's figures (all zero without `[samples]`).
    pub samples: Arc<SampleStats>,
    /// The retraining stage's figures.
    pub retrain: Arc<RetrainStats>,
    /// Per partition: records not yet read, refreshed by the progress thread.
    pub partition_lag: Mutex<Vec<i64>>,
    /// The job's checkpoint collector, once the dataflow has one.
    pub checkpoints: OnceLock<Collector>,
    /// Checkpoints skipped on restore.
    pub checkpoints_skipped: AtomicU64,
}

impl JobStats {
    /// Fresh statistics for a job over `partitions` source partitions.
    pub fn new(model: &str, partitions: i32) -> Self {
        JobStats {
            model: model.to_owned(),
            source: Arc::new(SourceStats::new(partitions.max(0) as usize)),
            generated: AtomicU64::new(0),
            dead_letters_dropped: Arc::default(),
            event_time_missing: Arc::default(),
            source_skipped: Arc::default(),
            versions_removed: AtomicU64::new(0),
            prune_errors: AtomicU64::new(0),
            predictions_dropped: Arc::default(),
            metrics_dropped: Arc::default(),
            lag: AtomicI64::new(-1),
            featurize: Arc::new(FeaturizeStats::default()),
            labels: Arc::new(LabelJoinStats::default()),
            samples: Arc::default(),
            retrain: Arc::default(),
            trainer: Arc::new(TrainerStats::new()),
            partition_lag: Mutex::new(Vec::new()),
            checkpoints: OnceLock::new(),
            checkpoints_skipped: AtomicU64::new(0),
        }
    }

    /// Records parsed into events.
    pub fn decoded(&self) -> u64 {
        self.featurize.parsed.load(Ordering::Relaxed)
    }

    /// Records sent to the dead letters, by the parser and the label join.
    pub fn dead_letters(&self) -> u64 {
        self.featurize.dead_letters.load(Ordering::Relaxed)
            + self.labels.dead_letters.load(Ordering::Relaxed)
    }

    /// One progress line: throughput since the previous line, lag, quality, model version.
    pub fn progress_line(&self, events_per_sec: f64) -> String {
        let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
        let lag = self.lag.load(Ordering::Relaxed);
        let quality = self.trainer.summary();
        let workers = self.trainer.workers();
        let per_worker = if workers.len() > 1 {
            let aucs: Vec<String> = workers.iter().map(|(_, q)| fmt(q.auc)).collect();
            format!(" | per worker {}", aucs.join(" "))
        } else {
            String::new()
        };
        let retrain = &self.retrain;
        let deep = if retrain.enabled.load(Ordering::Relaxed) {
            let state = if retrain.training.load(Ordering::Relaxed) {
                "training".to_owned()
            } else {
                retrain.last()
            };
            format!(
                " | deep v{} ({state})",
                retrain.version.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        };
        format!(
            "events/s {events_per_sec:>9.0} | learned {:>10} | dead letters {:>6} | lag {:>8} | auc {} (last 100k/worker {}){per_worker} | logloss {} | model v{}{deep}",
            self.trainer.learned.load(Ordering::Relaxed),
            self.dead_letters(),
            if lag < 0 { "-".to_owned() } else { lag.to_string() },
            fmt(quality.auc),
            fmt(quality.window_auc),
            fmt(quality.logloss),
            self.trainer.model_version.load(Ordering::Relaxed),
        )
    }
}

/// The job's metrics, read from its live figures at each scrape.
#[derive(Debug)]
pub struct JobMetrics(pub Arc<JobStats>);

/// One figure of the job, with its type.
type Figure = (Family, MetricType, f64);

impl JobMetrics {
    /// The job's figures without labels but the model's.
    fn figures(&self) -> Vec<Figure> {
        let stats = &self.0;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let f = &stats.featurize;
        let quality = stats.trainer.summary();
        let checkpoints = stats
            .checkpoints
            .get()
            .map(Collector::figures)
            .unwrap_or_default();
        let retrain = &stats.retrain;
        let training = u8::from(retrain.training.load(Ordering::Relaxed));
        vec![
            (SOURCE_RECORDS, Counter, load(&stats.source.records)),
            (SOURCE_LAG, Gauge, stats.lag.load(Ordering::Relaxed) as f64),
            (SOURCE_LATE, Counter, load(&stats.source.late)),
            (SOURCE_FUTURE, Counter, load(&stats.source.future)),
            (
                SOURCE_EVENT_TIME_MISSING,
                Counter,
                load(&stats.event_time_missing),
            ),
            (SOURCE_SKIPPED, Counter, load(&stats.source_skipped)),
            (SOURCE_OVERFLOWS, Counter, load(&stats.source.overflows)),
            (SOURCE_HELD_BYTES, Gauge, load(&stats.source.held_bytes)),
            (VERSIONS_REMOVED, Counter, load(&stats.versions_removed)),
            (PRUNE_ERRORS, Counter, load(&stats.prune_errors)),
            (SOURCE_FRONTIER, Gauge, load(&stats.source.frontier)),
            (CHECKPOINTS_WRITTEN, Counter, checkpoints.written as f64),
            (CHECKPOINTS_FAILED, Counter, checkpoints.failed as f64),
            (
                CHECKPOINT_FAILURES_IN_A_ROW,
                Gauge,
                f64::from(checkpoints.failed_in_a_row),
            ),
            (
                CHECKPOINTS_SKIPPED,
                Counter,
                load(&stats.checkpoints_skipped),
            ),
            (
                CHECKPOINT_EPOCH,
                Gauge,
                checkpoints.last_epoch.map_or(f64::NAN, |e| e as f64),
            ),
            (
                CHECKPOINT_OLDEST_KEPT,
                Gauge,
                checkpoints.oldest_kept.map_or(f64::NAN, |e| e as f64),
            ),
            (CHECKPOINT_BYTES, Gauge, checkpoints.last_bytes as f64),
            (CHECKPOINT_SECONDS, Gauge, checkpoints.last_seconds),
            (DECODE_EVENTS, Counter, stats.decoded() as f64),
            (DECODE_DEAD_LETTERS, Counter, stats.dead_letters() as f64),
            (
                DEAD_LETTERS_DROPPED,
                Counter,
                load(&stats.dead_letters_dropped),
            ),
            (
                PREDICTIONS_DROPPED,
                Counter,
                load(&stats.predictions_dropped),
            ),
            (METRICS_DROPPED, Counter, load(&stats.metrics_dropped)),
            (LEARNER_EVENTS, Counter, load(&stats.trainer.learned)),
            (LEARNER_AUC, Gauge, quality.auc.unwrap_or(f64::NAN)),
            (
                LEARNER_WINDOW_AUC,
                Gauge,
                quality.window_auc.unwrap_or(f64::NAN),
            ),
            (LEARNER_LOGLOSS, Gauge, quality.logloss.unwrap_or(f64::NAN)),
            (LEARNER_SYNC_ROUNDS, Counter, load(&stats.trainer.rounds)),
            (
                LEARNER_SYNC_COORDINATES,
                Counter,
                load(&stats.trainer.synced_coordinates),
            ),
            (MODEL_VERSION, Gauge, load(&stats.trainer.model_version)),
            (PUBLISH_ERRORS, Counter, load(&stats.trainer.publish_errors)),
            (GENERATOR_RECORDS, Counter, load(&stats.generated)),
            (SAMPLES_APPENDED, Counter, load(&stats.samples.appended)),
            (SAMPLES_ROWS, Gauge, stats.samples.rows() as f64),
            (SAMPLES_BYTES, Gauge, stats.samples.bytes() as f64),
            (SAMPLES_SEGMENTS, Gauge, stats.samples.segments() as f64),
            (SAMPLES_RETIRED, Counter, load(&stats.samples.retired)),
            (SAMPLES_ERRORS, Counter, load(&stats.samples.errors)),
            (RETRAIN_RUNS, Counter, load(&retrain.runs)),
            (RETRAIN_PUBLISHED, Counter, load(&retrain.published)),
            (RETRAIN_REFUSED, Counter, load(&retrain.refused)),
            (RETRAIN_SKIPPED, Counter, load(&retrain.skipped)),
            (RETRAIN_ERRORS, Counter, load(&retrain.errors)),
            (RETRAIN_TRAINING, Gauge, f64::from(training)),
            (RETRAIN_VERSION, Gauge, load(&retrain.version)),
            (RETRAIN_CANDIDATE_AUC, Gauge, retrain.auc()),
            (RETRAIN_ROWS_GATHERED, Counter, load(&retrain.gathered)),
            (
                RETRAIN_GATHERED_RATE,
                Gauge,
                f64::from_bits(retrain.gathered_rate.load(Ordering::Relaxed)),
            ),
            (RETRAIN_ROW_BYTES, Gauge, load(&retrain.row_bytes)),
            (RETRAIN_TABLE_ROWS, Gauge, load(&retrain.table_rows)),
            (FEATURIZE_ROWS, Counter, load(&f.rows)),
            (FEATURIZE_VOCAB_LOOKUPS, Counter, load(&f.lookups)),
            (FEATURIZE_VOCAB_OOV, Counter, load(&f.oov)),
            (FEATUREMAP_VERSION, Gauge, load(&f.version)),
            (FEATUREMAP_VOCAB_SIZE, Gauge, load(&f.vocab_size)),
            (FEATUREMAP_VOCAB_PENDING, Gauge, load(&f.vocab_pending)),
            (FEATUREMAP_EVICTIONS, Counter, load(&f.evicted)),
            (FEATUREMAP_BOUNDARY_SHIFTS, Gauge, load(&f.boundary_shifts)),
            (
                FEATUREMAP_BOUNDARY_SHIFTS_TOTAL,
                Counter,
                load(&f.boundary_shifts_total),
            ),
            (LABELS_PENDING, Gauge, load(&stats.labels.pending)),
        ]
    }

    /// The label join's counters, each its own family.
    fn label_counters(&self) -> [(&'static str, &AtomicU64); 9] {
        let l = &self.0.labels;
        [
            ("impressions", &l.impressions),
            ("clicks", &l.clicks),
            ("positives", &l.positives),
            ("negatives", &l.negatives),
            ("late_clicks", &l.late_clicks),
            ("corrections", &l.corrections),
            ("duplicate_clicks", &l.duplicate_clicks),
            ("unmatched_clicks", &l.unmatched_clicks),
            ("overflowed_impressions", &l.overflowed),
        ]
    }

    /// The per-worker figures of progressive validation.
    fn encode_workers(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let model = self.0.model.as_str();
        let workers = self.0.trainer.workers();
        let per_worker: [(Family, MetricType, WorkerFigure); 4] = [
            (LEARNER_WORKER_EVENTS, Counter, |q| q.events as f64),
            (LEARNER_WORKER_AUC, Gauge, |q| q.auc.unwrap_or(f64::NAN)),
            (LEARNER_WORKER_WINDOW_AUC, Gauge, |q| {
                q.window_auc.unwrap_or(f64::NAN)
            }),
            (LEARNER_WORKER_LOGLOSS, Gauge, |q| {
                q.logloss.unwrap_or(f64::NAN)
            }),
        ];
        for (metric, kind, figure) in per_worker {
            let samples = workers.iter().map(|(worker, q)| {
                (
                    [("model", model.to_owned()), ("worker", worker.to_string())],
                    figure(q),
                )
            });
            encode_values(encoder, metric, kind, samples)?;
        }
        Ok(())
    }

    /// The per-partition figures of the source.
    fn encode_partitions(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let model = stats.model.as_str();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let lag = stats
            .partition_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let per_partition: [(Family, MetricType); 5] = [
            (SOURCE_PARTITION_RECORDS, Counter),
            (SOURCE_PARTITION_WATERMARK, Gauge),
            (SOURCE_PARTITION_LAG, Gauge),
            (SOURCE_PARTITION_AT_END, Gauge),
            (SOURCE_PARTITION_PAUSED, Gauge),
        ];
        for (i, (metric, kind)) in per_partition.into_iter().enumerate() {
            let samples = stats
                .source
                .partitions
                .iter()
                .enumerate()
                .map(|(partition, p)| {
                    let value = match i {
                        0 => load(&p.records),
                        1 => load(&p.watermark_ms) / 1e3,
                        2 => lag.get(partition).map_or(f64::NAN, |&l| l as f64),
                        3 => load(&p.at_end),
                        _ => load(&p.paused),
                    };
                    (
                        [
                            ("model", model.to_owned()),
                            ("partition", partition.to_string()),
                        ],
                        value,
                    )
                });
            encode_values(encoder, metric, kind, samples)?;
        }
        Ok(())
    }
}

/// Encodes a family of values by label set, as counters or gauges: a whole number as an
/// integer, any other as a float.
fn encode_values<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    metric: Family,
    kind: MetricType,
    samples: impl Iterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let (name, help) = (metric.name, metric.help);
    let whole = |v: f64| (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64);
    match kind {
        Counter => {
            let samples = samples.map(|(l, v)| match whole(v) {
                Some(n) => (l, Number::Whole(ConstCounter::new(n.max(0) as u64))),
                None => (l, Number::Float(ConstCounter::new(v))),
            });
            family(encoder, name, help, kind, samples)
        }
        _ => {
            let samples = samples.map(|(l, v)| match whole(v) {
                Some(n) => (l, Number::Whole(ConstGauge::new(n))),
                None => (l, Number::Float(ConstGauge::new(v))),
            });
            family(encoder, name, help, kind, samples)
        }
    }
}

/// A metric of whole numbers or of floats.
#[derive(Debug)]
enum Number<W, F> {
    Whole(W),
    Float(F),
}

impl<W: EncodeMetric, F: EncodeMetric> EncodeMetric for Number<W, F> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Number::Whole(metric) => metric.encode(encoder),
            Number::Float(metric) => metric.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Number::Whole(metric) => metric.metric_type(),
            Number::Float(metric) => metric.metric_type(),
        }
    }
}

impl prometheus_client::collector::Collector for JobMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let model = self.0.model.as_str();
        let labels = || [("model", model)];
        for (metric, kind, value) in self.figures() {
            encode_values(
                &mut encoder,
                metric,
                kind,
                std::iter::once((labels(), value)),
            )?;
        }
        for (what, counter) in self.label_counters() {
            let name = format!("{LABELS_PREFIX}{what}_total");
            let help = format!("Label join: {} in all.", what.replace('_', " "));
            let value = ConstCounter::new(counter.load(Ordering::Relaxed));
            family(&mut encoder, &name, &help, Counter, [(labels(), value)])?;
        }
        let bad = BadKind::ALL.iter().map(|kind| {
            let value = ConstCounter::new(self.0.featurize.bad(*kind));
            ([("model", model), ("kind", kind.label())], value)
        });
        let metric = FEATURIZE_BAD_VALUES;
        family(&mut encoder, metric.name, metric.help, Counter, bad)?;
        self.encode_workers(&mut encoder)?;
        self.encode_partitions(&mut encoder)?;
        // The checkpoints' is empty for a job without checkpoints.
        let checkpoints = self.0.checkpoints.get();
        let durations = [
            (
                CHECKPOINT_DURATION,
                checkpoints.map(Collector::durations).unwrap_or_default(),
            ),
            (PUBLISH_DURATION, self.0.trainer.publish_seconds.clone()),
        ];
        for (metric, durations) in durations {
            let samples = [(labels(), durations.histogram().clone())];
            family(&mut encoder, metric.name, metric.help, Histogram, samples)?;
        }
        Ok(())
    }
}
