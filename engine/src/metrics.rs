//! The job's metrics: names in one place, Prometheus text rendering, and the progress line.

use millrace_models::fmap::BadKind;
use millrace_operators::checkpoint::Collector;
use millrace_operators::{
    FeaturizeStats, LabelJoinStats, QualitySummary, SampleStats, SourceStats, TrainerStats,
};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};

/// Records read from the source.
pub const SOURCE_RECORDS: &str = "millrace_source_records_total";
/// Records in the source topic not yet read (sum over partitions).
pub const SOURCE_LAG: &str = "millrace_source_lag_records";
/// Records that came behind the event-time frontier and joined a later epoch.
pub const SOURCE_LATE: &str = "millrace_source_late_records_total";
/// Records whose time was more than an hour ahead of the wall clock (a producer's clock gone
/// wrong): they took their partition's current time.
pub const SOURCE_FUTURE: &str = "millrace_source_future_timestamps_total";
/// The source's event-time frontier, in epochs.
pub const SOURCE_FRONTIER: &str = "millrace_source_frontier_epoch";
/// Per partition (label `partition`): records read.
pub const SOURCE_PARTITION_RECORDS: &str = "millrace_source_partition_records_total";
/// Per partition: the event-time watermark, in milliseconds since the Unix epoch.
pub const SOURCE_PARTITION_WATERMARK: &str = "millrace_source_partition_watermark_ms";
/// Per partition: records in the partition not yet read.
pub const SOURCE_PARTITION_LAG: &str = "millrace_source_partition_lag_records";
/// Per partition: 1 when it has been read to its end, else 0 (then, silent, it holds the
/// event-time frontier).
pub const SOURCE_PARTITION_AT_END: &str = "millrace_source_partition_at_end";
/// Per partition: 1 while it is paused for running too far past the frontier, else 0.
pub const SOURCE_PARTITION_PAUSED: &str = "millrace_source_partition_paused";
/// Checkpoints written.
pub const CHECKPOINTS_WRITTEN: &str = "millrace_checkpoints_written_total";
/// Checkpoints that could not be written.
pub const CHECKPOINTS_FAILED: &str = "millrace_checkpoints_failed_total";
/// Checkpoint writes that failed since the last one written; at `[checkpoint] max_failures`
/// the sources stop reading until one is written.
pub const CHECKPOINT_FAILURES_IN_A_ROW: &str = "millrace_checkpoint_failures_in_a_row";
/// Checkpoints skipped on restore because they did not read back whole.
pub const CHECKPOINTS_SKIPPED: &str = "millrace_checkpoints_skipped_on_restore_total";
/// The epoch of the newest checkpoint written.
pub const CHECKPOINT_EPOCH: &str = "millrace_checkpoint_epoch";
/// The size of the newest checkpoint, in bytes.
pub const CHECKPOINT_BYTES: &str = "millrace_checkpoint_bytes";
/// Seconds the newest checkpoint took to write.
pub const CHECKPOINT_SECONDS: &str = "millrace_checkpoint_write_seconds";
/// Records parsed into events.
pub const DECODE_EVENTS: &str = "millrace_decode_events_total";
/// Records sent to the dead letters.
pub const DECODE_DEAD_LETTERS: &str = "millrace_decode_dead_letters_total";
/// Dead letters the dead-letter topic did not take (lost; each kind is logged).
pub const DEAD_LETTERS_DROPPED: &str = "millrace_dead_letters_dropped_total";
/// Records whose event time field (`event_time_field`, or the schema's `time` field) was
/// missing or unusable: they took their Kafka timestamp, or with a schema's field, once their
/// partition had shown a readable time, the partition's current time.
pub const SOURCE_EVENT_TIME_MISSING: &str = "millrace_source_event_time_missing_total";
/// Records that moved their partition into the next epoch because the epoch held the
/// partition's share of the hold budget (event time that stopped advancing).
pub const SOURCE_OVERFLOWS: &str = "millrace_source_epoch_overflows_total";
/// Bytes of records the sources hold until the frontier passes their epochs.
pub const SOURCE_HELD_BYTES: &str = "millrace_source_held_bytes";
/// Records a restored source skipped because the broker no longer had them (retention
/// deleted them first; `[source] on_missing_offsets = "skip"`).
pub const SOURCE_SKIPPED: &str = "millrace_source_records_skipped_total";
/// Old model versions the registry keeper removed (`[publish] keep_versions`).
pub const VERSIONS_REMOVED: &str = "millrace_registry_versions_removed_total";
/// Times the registry keeper could not prune a model's versions (each logged).
pub const PRUNE_ERRORS: &str = "millrace_registry_prune_errors_total";
/// Predictions the predictions topic did not take (lost; the first is logged).
pub const PREDICTIONS_DROPPED: &str = "millrace_predictions_dropped_total";
/// Messages the metrics topic did not take (lost; the first is logged).
pub const METRICS_DROPPED: &str = "millrace_metrics_messages_dropped_total";
/// Events learned from.
pub const LEARNER_EVENTS: &str = "millrace_learner_events_total";
/// Progressive-validation AUC.
pub const LEARNER_AUC: &str = "millrace_learner_progressive_auc";
/// Progressive-validation AUC over the last `PROGRESSIVE_WINDOW` events.
pub const LEARNER_WINDOW_AUC: &str = "millrace_learner_progressive_auc_window";
/// Progressive-validation log-loss.
pub const LEARNER_LOGLOSS: &str = "millrace_learner_progressive_logloss";
/// Per worker (label `worker`): events the worker learned and scored before learning.
pub const LEARNER_WORKER_EVENTS: &str = "millrace_learner_worker_events_total";
/// Per worker: progressive-validation AUC of the worker's own predictions.
pub const LEARNER_WORKER_AUC: &str = "millrace_learner_worker_progressive_auc";
/// Per worker: that AUC over the worker's last `PROGRESSIVE_WINDOW` events.
pub const LEARNER_WORKER_WINDOW_AUC: &str = "millrace_learner_worker_progressive_auc_window";
/// Per worker: progressive-validation log-loss of the worker's own predictions.
pub const LEARNER_WORKER_LOGLOSS: &str = "millrace_learner_worker_progressive_logloss";
/// Label join counters (suffix `_total`): impressions, clicks, positives, negatives, late,
/// corrected, duplicate and unmatched clicks.
pub const LABELS_PREFIX: &str = "millrace_labels_";
/// Impressions waiting for their attribution window to close.
pub const LABELS_PENDING: &str = "millrace_labels_pending_impressions";
/// Synchronization rounds (all-reduce of the workers' weight changes) applied.
pub const LEARNER_SYNC_ROUNDS: &str = "millrace_learner_sync_rounds_total";
/// Coordinates whose changes those rounds summed.
pub const LEARNER_SYNC_COORDINATES: &str = "millrace_learner_sync_coordinates_total";
/// The newest published model version.
pub const MODEL_VERSION: &str = "millrace_model_version";
/// Failed publications.
pub const PUBLISH_ERRORS: &str = "millrace_model_publish_errors_total";
/// Records produced by the built-in generator.
pub const GENERATOR_RECORDS: &str = "millrace_generator_records_total";
/// Malformed values in parsed events, handled by the feature spec's policy (label `kind`).
pub const FEATURIZE_BAD_VALUES: &str = "millrace_featurize_bad_values_total";
/// Rows made by the FeatureMap transform.
pub const FEATURIZE_ROWS: &str = "millrace_featurize_rows_total";
/// Values looked up in a vocabulary.
pub const FEATURIZE_VOCAB_LOOKUPS: &str = "millrace_featurize_vocab_lookups_total";
/// Of those, values without an id (out of vocabulary or hashed fallback).
pub const FEATURIZE_VOCAB_OOV: &str = "millrace_featurize_vocab_oov_total";
/// The newest FeatureMap version.
pub const FEATUREMAP_VERSION: &str = "millrace_featuremap_version";
/// Values holding a vocabulary id, over all vocabulary features.
pub const FEATUREMAP_VOCAB_SIZE: &str = "millrace_featuremap_vocab_size";
/// Values counted but without an id yet.
pub const FEATUREMAP_VOCAB_PENDING: &str = "millrace_featuremap_vocab_pending";
/// Vocabulary values evicted (expired or displaced).
pub const FEATUREMAP_EVICTIONS: &str = "millrace_featuremap_evictions_total";
/// Bucket boundaries that moved in the newest version.
pub const FEATUREMAP_BOUNDARY_SHIFTS: &str = "millrace_featuremap_boundary_shifts";
/// Bucket boundaries that moved over all versions.
pub const FEATUREMAP_BOUNDARY_SHIFTS_TOTAL: &str = "millrace_featuremap_boundary_shifts_total";

/// Rows appended to the sample buffer.
pub const SAMPLES_APPENDED: &str = "millrace_samples_appended_rows_total";
/// Rows the sample buffer holds (whole segments and the open one).
pub const SAMPLES_ROWS: &str = "millrace_samples_rows";
/// Bytes the sample buffer holds.
pub const SAMPLES_BYTES: &str = "millrace_samples_bytes";
/// Whole segments of the sample buffer.
pub const SAMPLES_SEGMENTS: &str = "millrace_samples_segments";
/// Segments retired by the sample buffer's retention.
pub const SAMPLES_RETIRED: &str = "millrace_samples_retired_segments_total";
/// Sample buffer writes and deletions that failed (rows lost from the buffer only).
pub const SAMPLES_ERRORS: &str = "millrace_samples_errors_total";

/// Retraining runs started.
pub const RETRAIN_RUNS: &str = "millrace_retrain_runs_total";
/// Deep versions the gate let through and the stage published.
pub const RETRAIN_PUBLISHED: &str = "millrace_retrain_published_total";
/// Candidates the gate refused (each run's reasons are logged).
pub const RETRAIN_REFUSED: &str = "millrace_retrain_refused_total";
/// Runs skipped (too few rows, no FeatureMap published yet).
pub const RETRAIN_SKIPPED: &str = "millrace_retrain_skipped_total";
/// Runs that failed (unreadable buffer, libtorch, the registry).
pub const RETRAIN_ERRORS: &str = "millrace_retrain_errors_total";
/// 1 while a retraining run is training, else 0.
pub const RETRAIN_TRAINING: &str = "millrace_retrain_training";
/// The newest deep version published.
pub const RETRAIN_VERSION: &str = "millrace_retrain_model_version";
/// The newest candidate's AUC on its held-out rows.
pub const RETRAIN_CANDIDATE_AUC: &str = "millrace_retrain_candidate_auc";
/// Embedding rows gathered from the host-resident table onto the device, in all.
pub const RETRAIN_ROWS_GATHERED: &str = "millrace_retrain_rows_gathered_total";
/// The last run's host-table rows gathered per second of training.
pub const RETRAIN_GATHERED_RATE: &str = "millrace_retrain_gathered_rows_per_second";
/// Bytes a gathered row moves to the device.
pub const RETRAIN_ROW_BYTES: &str = "millrace_retrain_bytes_per_row";
/// Rows the host-resident table held at the end of the last run.
pub const RETRAIN_TABLE_ROWS: &str = "millrace_retrain_table_rows";

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

    /// The metrics in Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let model = &self.model;
        let f = &self.featurize;
        let quality = self.trainer.summary();
        let checkpoints = self
            .checkpoints
            .get()
            .map(Collector::figures)
            .unwrap_or_default();
        let rows = [
            (SOURCE_RECORDS, "counter", load(&self.source.records)),
            (SOURCE_LAG, "gauge", self.lag.load(Ordering::Relaxed) as f64),
            (SOURCE_LATE, "counter", load(&self.source.late)),
            (SOURCE_FUTURE, "counter", load(&self.source.future)),
            (
                SOURCE_EVENT_TIME_MISSING,
                "counter",
                load(&self.event_time_missing),
            ),
            (SOURCE_SKIPPED, "counter", load(&self.source_skipped)),
            (SOURCE_OVERFLOWS, "counter", load(&self.source.overflows)),
            (SOURCE_HELD_BYTES, "gauge", load(&self.source.held_bytes)),
            (VERSIONS_REMOVED, "counter", load(&self.versions_removed)),
            (PRUNE_ERRORS, "counter", load(&self.prune_errors)),
            (SOURCE_FRONTIER, "gauge", load(&self.source.frontier)),
            (CHECKPOINTS_WRITTEN, "counter", checkpoints.written as f64),
            (CHECKPOINTS_FAILED, "counter", checkpoints.failed as f64),
            (
                CHECKPOINT_FAILURES_IN_A_ROW,
                "gauge",
                f64::from(checkpoints.failed_in_a_row),
            ),
            (
                CHECKPOINTS_SKIPPED,
                "counter",
                load(&self.checkpoints_skipped),
            ),
            (
                CHECKPOINT_EPOCH,
                "gauge",
                checkpoints.last_epoch.map_or(f64::NAN, |e| e as f64),
            ),
            (CHECKPOINT_BYTES, "gauge", checkpoints.last_bytes as f64),
            (CHECKPOINT_SECONDS, "gauge", checkpoints.last_seconds),
            (DECODE_EVENTS, "counter", self.decoded() as f64),
            (DECODE_DEAD_LETTERS, "counter", self.dead_letters() as f64),
            (
                DEAD_LETTERS_DROPPED,
                "counter",
                load(&self.dead_letters_dropped),
            ),
            (
                PREDICTIONS_DROPPED,
                "counter",
                load(&self.predictions_dropped),
            ),
            (METRICS_DROPPED, "counter", load(&self.metrics_dropped)),
            (LEARNER_EVENTS, "counter", load(&self.trainer.learned)),
            (LEARNER_AUC, "gauge", quality.auc.unwrap_or(f64::NAN)),
            (
                LEARNER_WINDOW_AUC,
                "gauge",
                quality.window_auc.unwrap_or(f64::NAN),
            ),
            (
                LEARNER_LOGLOSS,
                "gauge",
                quality.logloss.unwrap_or(f64::NAN),
            ),
            (LEARNER_SYNC_ROUNDS, "counter", load(&self.trainer.rounds)),
            (
                LEARNER_SYNC_COORDINATES,
                "counter",
                load(&self.trainer.synced_coordinates),
            ),
            (MODEL_VERSION, "gauge", load(&self.trainer.model_version)),
            (
                PUBLISH_ERRORS,
                "counter",
                load(&self.trainer.publish_errors),
            ),
            (GENERATOR_RECORDS, "counter", load(&self.generated)),
            (SAMPLES_APPENDED, "counter", load(&self.samples.appended)),
            (SAMPLES_ROWS, "gauge", self.samples.rows() as f64),
            (SAMPLES_BYTES, "gauge", self.samples.bytes() as f64),
            (SAMPLES_SEGMENTS, "gauge", self.samples.segments() as f64),
            (SAMPLES_RETIRED, "counter", load(&self.samples.retired)),
            (SAMPLES_ERRORS, "counter", load(&self.samples.errors)),
            (RETRAIN_RUNS, "counter", load(&self.retrain.runs)),
            (RETRAIN_PUBLISHED, "counter", load(&self.retrain.published)),
            (RETRAIN_REFUSED, "counter", load(&self.retrain.refused)),
            (RETRAIN_SKIPPED, "counter", load(&self.retrain.skipped)),
            (RETRAIN_ERRORS, "counter", load(&self.retrain.errors)),
            (
                RETRAIN_TRAINING,
                "gauge",
                f64::from(u8::from(self.retrain.training.load(Ordering::Relaxed))),
            ),
            (RETRAIN_VERSION, "gauge", load(&self.retrain.version)),
            (RETRAIN_CANDIDATE_AUC, "gauge", self.retrain.auc()),
            (
                RETRAIN_ROWS_GATHERED,
                "counter",
                load(&self.retrain.gathered),
            ),
            (
                RETRAIN_GATHERED_RATE,
                "gauge",
                f64::from_bits(self.retrain.gathered_rate.load(Ordering::Relaxed)),
            ),
            (RETRAIN_ROW_BYTES, "gauge", load(&self.retrain.row_bytes)),
            (RETRAIN_TABLE_ROWS, "gauge", load(&self.retrain.table_rows)),
            (FEATURIZE_ROWS, "counter", load(&f.rows)),
            (FEATURIZE_VOCAB_LOOKUPS, "counter", load(&f.lookups)),
            (FEATURIZE_VOCAB_OOV, "counter", load(&f.oov)),
            (FEATUREMAP_VERSION, "gauge", load(&f.version)),
            (FEATUREMAP_VOCAB_SIZE, "gauge", load(&f.vocab_size)),
            (FEATUREMAP_VOCAB_PENDING, "gauge", load(&f.vocab_pending)),
            (FEATUREMAP_EVICTIONS, "counter", load(&f.evicted)),
            (
                FEATUREMAP_BOUNDARY_SHIFTS,
                "gauge",
                load(&f.boundary_shifts),
            ),
            (
                FEATUREMAP_BOUNDARY_SHIFTS_TOTAL,
                "counter",
                load(&f.boundary_shifts_total),
            ),
        ];
        let mut text = String::new();
        for (name, kind, value) in rows {
            let _ = write!(
                text,
                "# TYPE {name} {kind}\n{name}{{model=\"{model}\"}} {value}\n"
            );
        }
        let workers = self.trainer.workers();
        let per_worker: [(&str, &str, WorkerFigure); 4] = [
            (LEARNER_WORKER_EVENTS, "counter", |q| q.events as f64),
            (LEARNER_WORKER_AUC, "gauge", |q| q.auc.unwrap_or(f64::NAN)),
            (LEARNER_WORKER_WINDOW_AUC, "gauge", |q| {
                q.window_auc.unwrap_or(f64::NAN)
            }),
            (LEARNER_WORKER_LOGLOSS, "gauge", |q| {
                q.logloss.unwrap_or(f64::NAN)
            }),
        ];
        for (name, kind, value) in per_worker {
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for (worker, q) in &workers {
                let _ = writeln!(
                    text,
                    "{name}{{model=\"{model}\",worker=\"{worker}\"}} {}",
                    value(q)
                );
            }
        }
        let lag = self
            .partition_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let per_partition: [(&str, &str); 5] = [
            (SOURCE_PARTITION_RECORDS, "counter"),
            (SOURCE_PARTITION_WATERMARK, "gauge"),
            (SOURCE_PARTITION_LAG, "gauge"),
            (SOURCE_PARTITION_AT_END, "gauge"),
            (SOURCE_PARTITION_PAUSED, "gauge"),
        ];
        for (i, (name, kind)) in per_partition.into_iter().enumerate() {
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for (partition, p) in self.source.partitions.iter().enumerate() {
                let value = match i {
                    0 => load(&p.records),
                    1 => load(&p.watermark_ms),
                    2 => lag.get(partition).map_or(f64::NAN, |&l| l as f64),
                    3 => load(&p.at_end),
                    _ => load(&p.paused),
                };
                let _ = writeln!(
                    text,
                    "{name}{{model=\"{model}\",partition=\"{partition}\"}} {value}"
                );
            }
        }
        let l = &self.labels;
        let labels = [
            ("impressions", &l.impressions),
            ("clicks", &l.clicks),
            ("positives", &l.positives),
            ("negatives", &l.negatives),
            ("late_clicks", &l.late_clicks),
            ("corrections", &l.corrections),
            ("duplicate_clicks", &l.duplicate_clicks),
            ("unmatched_clicks", &l.unmatched_clicks),
            ("overflowed_impressions", &l.overflowed),
        ];
        for (what, counter) in labels {
            let name = format!("{LABELS_PREFIX}{what}_total");
            let _ = write!(
                text,
                "# TYPE {name} counter\n{name}{{model=\"{model}\"}} {}\n",
                load(counter)
            );
        }
        let _ = write!(
            text,
            "# TYPE {LABELS_PENDING} gauge\n{LABELS_PENDING}{{model=\"{model}\"}} {}\n",
            load(&l.pending)
        );
        let _ = writeln!(text, "# TYPE {FEATURIZE_BAD_VALUES} counter");
        for kind in BadKind::ALL {
            let _ = writeln!(
                text,
                "{FEATURIZE_BAD_VALUES}{{model=\"{model}\",kind=\"{}\"}} {}",
                kind.label(),
                f.bad(kind)
            );
        }
        text
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
