//! The job's outputs besides the registry: dead letters, predictions and metrics, each to its
//! topic through an [`OutputSink`].

use super::JobReport;
use crate::metrics::JobStats;
use crate::spec::JobSpec;
use millrace_connectors::kafka::{Output, OutputSink};
use millrace_models::DeadLetter;
use millrace_operators::{now_ms, Prediction, RecordSink};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `[sinks]` of a job as its workers open them.
#[derive(Clone, Debug)]
pub(super) struct OutputTopics {
    /// The dead letters' topic.
    dead_letters: String,
    /// The predictions' topic, if any.
    predictions: Option<String>,
    /// The metrics' topic and how often it gets a report, if any.
    metrics: Option<(String, Duration)>,
}

impl OutputTopics {
    /// The output topics of `spec`, with `dead_letters` (the source's dead-letter topic).
    pub(super) fn of(spec: &JobSpec, dead_letters: &str) -> Self {
        let sinks = spec.sinks.as_ref();
        OutputTopics {
            dead_letters: dead_letters.to_owned(),
            predictions: sinks.and_then(|s| s.predictions_topic.clone()),
            metrics: sinks.and_then(|s| {
                let every = Duration::from_millis(s.metrics_interval_ms);
                s.metrics_topic.clone().map(|topic| (topic, every))
            }),
        }
    }
}

/// One worker's outputs: its producers to the output topics.
pub(super) struct Outputs {
    /// The dead letters.
    pub(super) dead_letters: DeadLetterDelivery,
    /// Each event's prediction, when the job has a predictions topic.
    pub(super) predictions: Option<PredictionDelivery>,
    /// The job's figures at epoch ends: process 0's first worker's, when the job has a
    /// metrics topic.
    pub(super) metrics: Option<MetricsSink>,
}

impl Outputs {
    /// Opens worker `index`'s producers on `bootstrap`.
    ///
    /// # Errors
    ///
    /// When a producer cannot be made.
    pub(super) fn open(
        topics: &OutputTopics,
        bootstrap: &str,
        index: usize,
        stats: &Arc<JobStats>,
        epoch_ms: u64,
    ) -> Result<Self, millrace_connectors::Error> {
        let dead_letters = DeadLetterDelivery {
            sink: OutputSink::new(
                bootstrap,
                &topics.dead_letters,
                "dead letters",
                stats.dead_letters_dropped.clone(),
            )?,
        };
        let predictions = match &topics.predictions {
            Some(topic) => Some(PredictionDelivery {
                sink: OutputSink::new(
                    bootstrap,
                    topic,
                    "predictions",
                    stats.predictions_dropped.clone(),
                )?,
            }),
            None => None,
        };
        let metrics = match (&topics.metrics, index) {
            (Some((topic, every)), 0) => Some(MetricsSink {
                sink: OutputSink::new(bootstrap, topic, "metrics", stats.metrics_dropped.clone())?,
                every: *every,
                last: None,
                stats: stats.clone(),
                epoch_ms,
            }),
            _ => None,
        };
        Ok(Outputs {
            dead_letters,
            predictions,
            metrics,
        })
    }
}

/// The dead letters to their topic. The sinks here count and log what they lose themselves.
pub(super) struct DeadLetterDelivery {
    sink: OutputSink,
}

impl RecordSink<DeadLetter> for DeadLetterDelivery {
    fn send(&mut self, epoch: u64, letter: DeadLetter) {
        let _ = self.sink.send_dead_letter(epoch, &letter);
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, "dead letters not acknowledged");
        }
    }

    fn unsettled_from(&self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// Each event's prediction to the predictions topic.
pub(super) struct PredictionDelivery {
    sink: OutputSink,
}

/// One message of the predictions topic.
#[derive(Serialize)]
struct PredictionMessage {
    partition: Option<i32>,
    offset: Option<i64>,
    prediction: f32,
    label: u8,
}

impl RecordSink<Prediction> for PredictionDelivery {
    fn send(&mut self, epoch: u64, prediction: Prediction) {
        let (partition, offset) = prediction
            .source
            .map_or((None, None), |p| (Some(p.partition), Some(p.offset)));
        let message = PredictionMessage {
            partition,
            offset,
            prediction: prediction.prediction,
            label: u8::from(prediction.label),
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let key = prediction
            .source
            .map(|p| format!("{}:{}", p.partition, p.offset))
            .unwrap_or_default();
        let _ = self.sink.send(Output {
            epoch,
            key: Some(key.as_bytes()),
            payload: &payload,
            headers: &[],
        });
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, "predictions not acknowledged");
        }
    }

    fn unsettled_from(&self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// The `[sinks]` topics of a job.
pub(super) fn output_topics(spec: &JobSpec) -> Vec<&str> {
    spec.sinks
        .iter()
        .flat_map(|s| [&s.predictions_topic, &s.metrics_topic])
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Process 0's reports of the job's figures to the metrics topic.
pub(super) struct MetricsSink {
    sink: OutputSink,
    every: Duration,
    last: Option<Instant>,
    stats: Arc<JobStats>,
    epoch_ms: u64,
}

/// One message of the metrics topic.
#[derive(Serialize)]
struct MetricsMessage<'a> {
    job: &'a str,
    /// The epoch just finished (with its synchronization round), or `None` for the final
    /// report.
    epoch: Option<u64>,
    /// The event time the epoch ends at, in milliseconds since the Unix epoch.
    event_time_ms: Option<u64>,
    /// When the message was made, in milliseconds since the Unix epoch.
    time_ms: u64,
    #[serde(flatten)]
    report: JobReport,
}

impl MetricsSink {
    /// Called after each epoch and once more at the end (`None`).
    pub(super) fn epoch_end(&mut self, epoch: Option<u64>) {
        if epoch.is_some() && self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        let message = MetricsMessage {
            job: &self.stats.model,
            epoch,
            event_time_ms: epoch.map(|e| (e + 1).saturating_mul(self.epoch_ms)),
            time_ms: now_ms(),
            report: JobReport::now(&self.stats, None),
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let _ = self.sink.send(Output {
            epoch: epoch.unwrap_or(u64::MAX),
            key: Some(self.stats.model.as_bytes()),
            payload: &payload,
            headers: &[],
        });
        if epoch.is_none() {
            if let Err(error) = self.sink.flush() {
                tracing::error!(%error, "metrics not acknowledged");
            }
        }
    }
}
