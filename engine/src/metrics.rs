//! The job's metrics: names in one place, Prometheus text rendering, and the progress line.

use millrace_connectors::kafka::SourcePositions;
use millrace_operators::{DecodeStats, TrainerStats};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Records read from the source.
pub const SOURCE_RECORDS: &str = "millrace_source_records_total";
/// Records in the source topic not yet read (sum over partitions).
pub const SOURCE_LAG: &str = "millrace_source_lag_records";
/// Records decoded into events.
pub const DECODE_EVENTS: &str = "millrace_decode_events_total";
/// Records sent to the dead letters.
pub const DECODE_DEAD_LETTERS: &str = "millrace_decode_dead_letters_total";
/// Dead letters the dead-letter topic did not take (lost; each kind is logged).
pub const DEAD_LETTERS_DROPPED: &str = "millrace_dead_letters_dropped_total";
/// Events learned from.
pub const LEARNER_EVENTS: &str = "millrace_learner_events_total";
/// Progressive-validation AUC.
pub const LEARNER_AUC: &str = "millrace_learner_progressive_auc";
/// Progressive-validation log-loss.
pub const LEARNER_LOGLOSS: &str = "millrace_learner_progressive_logloss";
/// The newest published model version.
pub const MODEL_VERSION: &str = "millrace_model_version";
/// Failed publications.
pub const PUBLISH_ERRORS: &str = "millrace_model_publish_errors_total";
/// Records produced by the built-in generator.
pub const GENERATOR_RECORDS: &str = "millrace_generator_records_total";

/// Live figures of a running job, shared by its threads.
#[derive(Debug)]
pub struct JobStats {
    /// The model's name (the `model` label).
    pub model: String,
    /// Records read from the source.
    pub source_records: AtomicU64,
    /// Records produced by the generator.
    pub generated: AtomicU64,
    /// Dead letters that could not be delivered.
    pub dead_letters_dropped: AtomicU64,
    /// Consumer lag, refreshed by the progress thread (-1 before the first reading).
    pub lag: AtomicI64,
    /// The decode operator's counters.
    pub decode: Arc<DecodeStats>,
    /// The trainer's figures.
    pub trainer: Arc<TrainerStats>,
    /// The source's per-partition positions.
    pub positions: Arc<SourcePositions>,
}

impl JobStats {
    /// Fresh statistics for a job over `partitions` source partitions.
    pub fn new(model: &str, partitions: i32) -> Self {
        JobStats {
            model: model.to_owned(),
            source_records: AtomicU64::new(0),
            generated: AtomicU64::new(0),
            dead_letters_dropped: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
            decode: Arc::new(DecodeStats::default()),
            trainer: Arc::new(TrainerStats::new()),
            positions: Arc::new(SourcePositions::new(partitions)),
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let model = &self.model;
        let rows = [
            (SOURCE_RECORDS, "counter", load(&self.source_records)),
            (SOURCE_LAG, "gauge", self.lag.load(Ordering::Relaxed) as f64),
            (DECODE_EVENTS, "counter", load(&self.decode.decoded)),
            (
                DECODE_DEAD_LETTERS,
                "counter",
                load(&self.decode.dead_letters),
            ),
            (
                DEAD_LETTERS_DROPPED,
                "counter",
                load(&self.dead_letters_dropped),
            ),
            (LEARNER_EVENTS, "counter", load(&self.trainer.learned)),
            (LEARNER_AUC, "gauge", self.trainer.auc().unwrap_or(f64::NAN)),
            (
                LEARNER_LOGLOSS,
                "gauge",
                self.trainer.logloss().unwrap_or(f64::NAN),
            ),
            (MODEL_VERSION, "gauge", load(&self.trainer.model_version)),
            (
                PUBLISH_ERRORS,
                "counter",
                load(&self.trainer.publish_errors),
            ),
            (GENERATOR_RECORDS, "counter", load(&self.generated)),
        ];
        let mut text = String::new();
        for (name, kind, value) in rows {
            let _ = write!(
                text,
                "# TYPE {name} {kind}\n{name}{{model=\"{model}\"}} {value}\n"
            );
        }
        text
    }

    /// One progress line: throughput since the previous line, lag, quality, model version.
    pub fn progress_line(&self, events_per_sec: f64) -> String {
        let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
        let lag = self.lag.load(Ordering::Relaxed);
        format!(
            "events/s {events_per_sec:>9.0} | learned {:>10} | dead letters {:>6} | lag {:>8} | auc {} | logloss {} | model v{}",
            self.trainer.learned.load(Ordering::Relaxed),
            self.decode.dead_letters.load(Ordering::Relaxed),
            if lag < 0 { "-".to_owned() } else { lag.to_string() },
            fmt(self.trainer.auc()),
            fmt(self.trainer.logloss()),
            self.trainer.model_version.load(Ordering::Relaxed),
        )
    }
}
