//! `/metrics` of the serving side: its counters and gauges, each version's counters, shares
//! and request-latency histogram, collected from the live figures at every scrape.

use crate::exposition::{family, one};
use crate::stats::{ServingStats, VersionStats};
use crate::store::ModelStore;
use crate::traffic::ServedEntry;
use crate::version::LoadedVersion;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType::{Counter, Gauge, Histogram};
use std::collections::BTreeSet;
use std::fmt::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The serving side's metrics, read from the store at each scrape.
#[derive(Debug)]
pub(crate) struct ServingMetrics {
    /// The models served.
    pub(crate) store: Arc<ModelStore>,
}

/// One counter of the serving side.
type Count = fn(&ServingStats) -> &AtomicU64;

/// The serving counters: name, help, value.
const COUNTERS: [(&str, &str, Count); 23] = [
    (
        "millrace_serving_predict_requests_total",
        "Predict and infer requests answered with 200.",
        |s| &s.predict_requests,
    ),
    (
        "millrace_serving_predictions_total",
        "Instances scored for those requests.",
        |s| &s.predictions,
    ),
    (
        "millrace_serving_client_errors_total",
        "Requests answered with a 4xx.",
        |s| &s.client_errors,
    ),
    (
        "millrace_serving_swaps_total",
        "Versions swapped in.",
        |s| &s.swaps,
    ),
    (
        "millrace_serving_rejected_versions_total",
        "Versions that failed validation and were not served.",
        |s| &s.rejected_versions,
    ),
    (
        "millrace_serving_load_retries_total",
        "Loads that failed for a passing reason and were tried again.",
        |s| &s.load_retries,
    ),
    (
        "millrace_serving_vocab_lookups_total",
        "Instance values looked up in a vocabulary.",
        |s| &s.vocab_lookups,
    ),
    (
        "millrace_serving_vocab_oov_total",
        "Of those, values without an id.",
        |s| &s.vocab_oov,
    ),
    (
        "millrace_serving_admin_changes_total",
        "Admin requests that changed a model's traffic.",
        |s| &s.admin_changes,
    ),
    (
        "millrace_serving_unauthorized_total",
        "Admin requests refused for a missing or wrong token.",
        |s| &s.unauthorized,
    ),
    (
        "millrace_serving_row_cache_hits_total",
        "Instances whose row came from a version's cache.",
        |s| &s.row_cache_hits,
    ),
    (
        "millrace_serving_row_cache_misses_total",
        "Instances transformed (not in the cache, or no cache).",
        |s| &s.row_cache_misses,
    ),
    (
        "millrace_serving_batches_total",
        "Batches the dynamic batcher scored.",
        |s| &s.batching.batches,
    ),
    (
        "millrace_serving_batch_requests_total",
        "Requests in those batches.",
        |s| &s.batching.requests,
    ),
    (
        "millrace_serving_batch_instances_total",
        "Instances in those batches.",
        |s| &s.batching.instances,
    ),
    (
        "millrace_serving_batch_splits_total",
        "Batches scored again request by request because an instance failed.",
        |s| &s.batching.split_batches,
    ),
    (
        "millrace_serving_batch_queue_full_total",
        "Requests refused at once because the batch queue was full.",
        |s| &s.batching.queue_full,
    ),
    (
        "millrace_serving_batch_abandoned_total",
        "Requests not scored because their client had gone.",
        |s| &s.batching.abandoned,
    ),
    (
        "millrace_serving_scoring_panics_total",
        "Requests whose scoring panicked (answered with a 500).",
        |s| &s.scoring_panics,
    ),
    (
        "millrace_serving_shadow_dropped_total",
        "Shadow scorings skipped because as many as allowed ran.",
        |s| &s.shadow_dropped,
    ),
    (
        "millrace_serving_connections_refused_total",
        "Connections closed at once because as many as allowed were open.",
        |s| &s.connections_refused,
    ),
    (
        "millrace_serving_tls_handshakes_failed_total",
        "TLS handshakes that failed or took too long.",
        |s| &s.tls_handshakes_failed,
    ),
    (
        "millrace_serving_in_flight_refused_total",
        "Predict requests answered 503 because as many as allowed were in flight.",
        |s| &s.in_flight_refused,
    ),
];

/// The serving gauges: name, help, value.
const GAUGES: [(&str, &str, Count); 3] = [
    (
        "millrace_serving_shadow_in_flight",
        "Shadow scorings running now.",
        |s| &s.shadow_in_flight,
    ),
    (
        "millrace_serving_connections_open",
        "Connections open now.",
        |s| &s.connections_open,
    ),
    (
        "millrace_serving_predicts_in_flight",
        "Predict requests receiving, queued or scoring now.",
        |s| &s.predicts_in_flight,
    ),
];

/// One counter of a loaded version, in millionths.
type VersionMicros = fn(&VersionStats) -> &AtomicU64;

impl Collector for ServingMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), Error> {
        let stats = self.store.stats();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for (name, help, counter) in COUNTERS {
            one(
                &mut encoder,
                name,
                help,
                Counter,
                ConstCounter::new(load(counter(stats))),
            )?;
        }
        let wait = load(&stats.batching.wait_micros) as f64 / 1e6;
        let help =
            "Seconds batched requests waited in the queue and for their batch to fill, summed.";
        one(
            &mut encoder,
            "millrace_serving_batch_wait_seconds_total",
            help,
            Counter,
            ConstCounter::new(wait),
        )?;
        for (name, help, gauge) in GAUGES {
            one(
                &mut encoder,
                name,
                help,
                Gauge,
                ConstGauge::new(load(gauge(stats)) as i64),
            )?;
        }
        let entries = self.store.entries();
        encode_models(&mut encoder, &entries)?;
        encode_versions(&mut encoder, &entries)
    }
}

/// Per model: the primary version, and each version's share of the traffic.
fn encode_models(
    encoder: &mut DescriptorEncoder<'_>,
    entries: &[Arc<ServedEntry>],
) -> Result<(), Error> {
    let primaries = entries.iter().filter_map(|entry| {
        let version = entry.primary()?.model.meta.version as i64;
        Some(([("model", entry.name.as_str())], ConstGauge::new(version)))
    });
    let help = "The version that answers the requests a split does not send elsewhere.";
    family(
        encoder,
        "millrace_serving_model_version",
        help,
        Gauge,
        primaries,
    )?;
    let shares: Vec<_> = entries
        .iter()
        .flat_map(|entry| {
            entry.all().map(|(target, _)| {
                let share = entry.share_percent(&target) / 100.0;
                let labels = [("model", entry.name.clone()), ("version", target.label())];
                (labels, ConstGauge::new(share))
            })
        })
        .collect();
    let help = "The share of a model's requests that a version answers (0 to 1).";
    family(
        encoder,
        "millrace_serving_traffic_share_ratio",
        help,
        Gauge,
        shares,
    )
}

/// Per version in memory: its counters, its size, its cache and its request latency.
fn encode_versions(
    encoder: &mut DescriptorEncoder<'_>,
    entries: &[Arc<ServedEntry>],
) -> Result<(), Error> {
    let loaded = in_memory(entries);
    let labels = |model: &str, version: u64| {
        [
            ("model", model.to_owned()),
            ("version", version.to_string()),
        ]
    };
    let counts: [(&str, &str, VersionMicros); 3] = [
        (
            "millrace_serving_arm_requests_total",
            "Requests a version answered.",
            |s| &s.requests,
        ),
        (
            "millrace_serving_arm_predictions_total",
            "Instances a version answered.",
            |s| &s.predictions,
        ),
        (
            "millrace_serving_shadow_predictions_total",
            "Instances a version scored as the shadow.",
            |s| &s.shadow_predictions,
        ),
    ];
    for (name, help, counter) in counts {
        let samples = loaded.iter().map(|(model, version, v)| {
            (
                labels(model, *version),
                ConstCounter::new(counter(&v.stats).load(Ordering::Relaxed)),
            )
        });
        family(encoder, name, help, Counter, samples)?;
    }
    let sums: [(&str, &str, VersionMicros); 2] = [
        (
            "millrace_serving_arm_prediction_sum_total",
            "The sum of the probabilities a version answered (over its predictions, their mean).",
            |s| &s.prediction_sum_micros,
        ),
        (
            "millrace_serving_shadow_abs_difference_total",
            "The sum of |shadow - answer| over a shadow version's predictions.",
            |s| &s.shadow_abs_diff_micros,
        ),
    ];
    for (name, help, sum) in sums {
        let samples = loaded.iter().map(|(model, version, v)| {
            let value = sum(&v.stats).load(Ordering::Relaxed) as f64 / 1e6;
            (labels(model, *version), ConstCounter::new(value))
        });
        family(encoder, name, help, Counter, samples)?;
    }
    let bytes = loaded.iter().map(|(model, version, v)| {
        let memory = v.model.memory(None);
        (
            labels(model, *version),
            ConstGauge::new((memory.block_bytes + memory.patch_bytes) as i64),
        )
    });
    family(
        encoder,
        "millrace_serving_model_bytes",
        "Bytes a version's tensors take in memory.",
        Gauge,
        bytes,
    )?;
    let rows = loaded.iter().map(|(model, version, v)| {
        (
            labels(model, *version),
            ConstGauge::new(v.cached_rows() as i64),
        )
    });
    family(
        encoder,
        "millrace_serving_row_cache_entries",
        "Rows in a version's cache.",
        Gauge,
        rows,
    )?;
    let latency = loaded
        .iter()
        .map(|(model, version, v)| (labels(model, *version), v.stats.latency.clone()));
    let help = "Seconds from the arrival of a predict or infer request answered with 200 to its answer, by the version that answered.";
    family(
        encoder,
        "millrace_serving_request_duration_seconds",
        help,
        Histogram,
        latency,
    )
}

/// Every version in memory once, by its own model and version: each model's own, then the
/// guests whose model's entry does not hold them (an older version only a split names).
fn in_memory(entries: &[Arc<ServedEntry>]) -> Vec<(&str, u64, &Arc<LoadedVersion>)> {
    let mut all: Vec<_> = entries
        .iter()
        .flat_map(|e| e.versions.iter().map(|(v, l)| (e.name.as_str(), *v, l)))
        .collect();
    let mut seen: BTreeSet<(&str, u64)> = all.iter().map(|&(m, v, _)| (m, v)).collect();
    for entry in entries {
        for (target, loaded) in &entry.guests {
            if let Some(model) = target.model() {
                if seen.insert((model, target.version())) {
                    all.push((model, target.version(), loaded));
                }
            }
        }
    }
    all
}
