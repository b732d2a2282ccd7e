//! The job's outputs besides the registry: dead letters, predictions and metrics, each to its
//! sink's [`OutputWriter`] on every worker.

use super::JobReport;
use crate::catalog::{Catalog, Output, OutputWriter, SinkContext};
use crate::metrics::JobStats;
use crate::spec::{JobSpec, SinkSpec, SinksSpec};
use millrace_connectors::kafka::{Brokers, Undelivered};
use millrace_models::DeadLetter;
use millrace_operators::{now_ms, BoxError, Prediction, RecordSink};
use serde::Serialize;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `[sinks]` of a job as its workers open them: a sink for every output.
#[derive(Clone, Debug)]
pub(super) struct OutputSinks {
    /// The dead letters' sink.
    dead_letters: SinkSpec,
    /// The predictions' sink, if any.
    predictions: Option<SinkSpec>,
    /// The metrics' sink and how often it gets a report, if any.
    metrics: Option<(SinkSpec, Duration)>,
    /// What the sinks do with a message their broker does not take.
    undelivered: Undelivered,
}

impl OutputSinks {
    /// The outputs' sinks of `spec`, the dead letters to the `dead_letters` topic unless
    /// `[sinks]` names their sink.
    pub(super) fn of(spec: &JobSpec, dead_letters: &str) -> Self {
        let sinks = spec.sinks.as_ref();
        let topic = SinkSpec::kafka_topic(dead_letters);
        OutputSinks {
            dead_letters: sinks
                .and_then(|s| s.dead_letters_sink.clone())
                .unwrap_or(topic),
            predictions: sinks.and_then(SinksSpec::predictions),
            metrics: sinks.and_then(|s| {
                let every = Duration::from_millis(s.metrics_interval_ms);
                s.metrics().map(|sink| (sink, every))
            }),
            undelivered: sinks.map(|s| s.on_undelivered).unwrap_or_default(),
        }
    }

    /// The Kafka topics the outputs' sinks write, for the job to create.
    pub(super) fn kafka_topics(&self, catalog: &Catalog) -> Vec<String> {
        let sinks = std::iter::once(&self.dead_letters)
            .chain(&self.predictions)
            .chain(self.metrics.as_ref().map(|(sink, _)| sink));
        sinks
            .filter_map(|sink| catalog.sink_factory(&sink.kind)?.kafka_topic(&sink.config))
            .collect()
    }
}

/// One worker's outputs: its writers of the outputs' sinks.
pub(super) struct Outputs {
    /// The dead letters.
    pub(super) dead_letters: DeadLetterDelivery,
    /// Each event's prediction, when the job has a predictions' sink.
    pub(super) predictions: Option<PredictionDelivery>,
    /// The job's figures at epoch ends: process 0's first worker's, when the job has a
    /// metrics' sink.
    pub(super) metrics: Option<MetricsSink>,
}

/// Where a worker opens its outputs' writers.
pub(super) struct OutputPlace<'a> {
    /// The sink types.
    pub(super) catalog: &'a Catalog,
    /// The job's brokers.
    pub(super) bootstrap: &'a Brokers,
    /// The worker's index in the job.
    pub(super) worker: usize,
}

impl Outputs {
    /// Opens the worker's writers of `sinks`.
    ///
    /// # Errors
    ///
    /// When a writer cannot be made.
    pub(super) fn open(
        sinks: &OutputSinks,
        place: &OutputPlace<'_>,
        stats: &Arc<JobStats>,
        epoch_ms: u64,
    ) -> Result<Self, BoxError> {
        let open = |sink: &SinkSpec, output: &'static str, lost: &Arc<AtomicU64>| {
            let factory = place.catalog.sink_factory_of(sink)?;
            factory.open(
                &sink.config,
                &SinkContext {
                    job: &stats.model,
                    output,
                    worker: place.worker,
                    bootstrap: place.bootstrap,
                    lost: lost.clone(),
                    undelivered: sinks.undelivered,
                },
            )
        };
        let dead_letters = DeadLetterDelivery {
            sink: open(
                &sinks.dead_letters,
                "dead_letters",
                &stats.dead_letters_dropped,
            )?,
        };
        let predictions = match &sinks.predictions {
            Some(sink) => Some(PredictionDelivery {
                sink: open(sink, "predictions", &stats.predictions_dropped)?,
            }),
            None => None,
        };
        let metrics = match (&sinks.metrics, place.worker) {
            (Some((sink, every)), 0) => Some(MetricsSink {
                sink: open(sink, "metrics", &stats.metrics_dropped)?,
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

/// The dead letters to their sink: each the record's bytes, with the error, its kind and the
/// record's source position in headers. The writers count and log what they lose themselves.
pub(super) struct DeadLetterDelivery {
    sink: Box<dyn OutputWriter>,
}

impl RecordSink<DeadLetter> for DeadLetterDelivery {
    fn send(&mut self, epoch: u64, letter: DeadLetter) {
        let partition = letter.record.partition.to_string();
        let offset = letter.record.offset.to_string();
        self.sink.send(Output {
            epoch,
            key: None,
            payload: &letter.record.payload,
            headers: &[
                ("error", letter.error.as_bytes()),
                ("error_type", letter.error_kind.as_bytes()),
                ("source_partition", partition.as_bytes()),
                ("source_offset", offset.as_bytes()),
            ],
        });
    }

    fn flush(&mut self) {
        self.sink.flush();
    }

    fn unsettled_from(&mut self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// Each event's prediction to its sink.
pub(super) struct PredictionDelivery {
    sink: Box<dyn OutputWriter>,
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
        self.sink.send(Output {
            epoch,
            key: Some(key.as_bytes()),
            payload: &payload,
            headers: &[],
        });
    }

    fn flush(&mut self) {
        self.sink.flush();
    }

    fn unsettled_from(&mut self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// Process 0's reports of the job's figures to the metrics' sink.
pub(super) struct MetricsSink {
    sink: Box<dyn OutputWriter>,
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
        self.sink.send(Output {
            epoch: epoch.unwrap_or(u64::MAX),
            key: Some(self.stats.model.as_bytes()),
            payload: &payload,
            headers: &[],
        });
        if epoch.is_none() {
            self.sink.flush();
        }
    }
}
