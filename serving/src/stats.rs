//! Counters of the serving side, of each loaded version and of the batcher, on `/metrics`.

use crate::exposition::latency_buckets;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicU64;

/// Counters of the serving side.
#[derive(Debug, Default)]
pub struct ServingStats {
    /// Predict requests answered with 200.
    pub predict_requests: AtomicU64,
    /// Instances scored.
    pub predictions: AtomicU64,
    /// Requests answered with a 4xx.
    pub client_errors: AtomicU64,
    /// Versions swapped in.
    pub swaps: AtomicU64,
    /// Versions rejected by validation.
    pub rejected_versions: AtomicU64,
    /// Loads that failed for a transient reason (out of file descriptors or memory), tried
    /// again at the next poll.
    pub load_retries: AtomicU64,
    /// Instance values looked up in a served FeatureMap's vocabularies.
    pub vocab_lookups: AtomicU64,
    /// Of those, values without an id (out of vocabulary or hashed fallback).
    pub vocab_oov: AtomicU64,
    /// Admin requests that changed a model's traffic.
    pub admin_changes: AtomicU64,
    /// Admin requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// Instances whose row came from a version's cache.
    pub row_cache_hits: AtomicU64,
    /// Instances transformed (not in the cache, or no cache).
    pub row_cache_misses: AtomicU64,
    /// Requests whose scoring panicked (answered with a 500).
    pub scoring_panics: AtomicU64,
    /// Shadow scorings skipped because as many as allowed were already running.
    pub shadow_dropped: AtomicU64,
    /// Shadow scorings running now (a gauge).
    pub shadow_in_flight: AtomicU64,
    /// Connections open now (a gauge).
    pub connections_open: AtomicU64,
    /// Connections closed at once because as many as allowed were open.
    pub connections_refused: AtomicU64,
    /// TLS handshakes that failed or took longer than the header timeout.
    pub tls_handshakes_failed: AtomicU64,
    /// Predict requests answered 503 at once because as many as allowed were in flight.
    pub in_flight_refused: AtomicU64,
    /// Predict requests in flight now: receiving, queued or scoring (a gauge).
    pub predicts_in_flight: AtomicU64,
    /// The dynamic batcher's counters (zero without batching).
    pub batching: BatchStats,
}

/// Counters of one loaded version: its arm of the traffic and its shadow scoring.
#[derive(Debug)]
pub struct VersionStats {
    /// Requests this version answered.
    pub requests: AtomicU64,
    /// Instances it answered.
    pub predictions: AtomicU64,
    /// The sum of its answered predictions, in millionths (their mean compares arms).
    pub prediction_sum_micros: AtomicU64,
    /// Instances it scored as the shadow.
    pub shadow_predictions: AtomicU64,
    /// The sum of `|shadow − answer|` over those, in millionths.
    pub shadow_abs_diff_micros: AtomicU64,
    /// Seconds from the arrival of each request it answered (with 200) to the answer.
    pub latency: Histogram,
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats {
            requests: AtomicU64::new(0),
            predictions: AtomicU64::new(0),
            prediction_sum_micros: AtomicU64::new(0),
            shadow_predictions: AtomicU64::new(0),
            shadow_abs_diff_micros: AtomicU64::new(0),
            latency: Histogram::new(latency_buckets()),
        }
    }
}

/// Counters of the batcher, on `/metrics` (in [`ServingStats::batching`]).
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Batches scored.
    pub batches: AtomicU64,
    /// Requests in those batches.
    pub requests: AtomicU64,
    /// Instances in those batches.
    pub instances: AtomicU64,
    /// Microseconds the requests waited in the queue and for their batch to fill, summed.
    pub wait_micros: AtomicU64,
    /// Batches scored again request by request because an instance failed.
    pub split_batches: AtomicU64,
    /// Requests refused at once because the queue held its limit.
    pub queue_full: AtomicU64,
    /// Requests not scored because their client had gone while they waited.
    pub abandoned: AtomicU64,
}
