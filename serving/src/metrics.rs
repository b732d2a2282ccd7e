//! `/metrics`: the serving counters, per-version counters and gauges in Prometheus' text format.

use crate::options::ServeOptions;
use crate::stats::VersionStats;
use crate::store::ModelStore;
use crate::traffic::ServedEntry;
use crate::version::LoadedVersion;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One counter of a loaded version.
type VersionCounter = fn(&VersionStats) -> &AtomicU64;

/// The text of `/metrics`.
pub(crate) fn metrics_text(store: &ModelStore, options: &ServeOptions) -> String {
    use std::fmt::Write;
    let stats = store.stats();
    let mut text = String::new();
    let counters = [
        (
            "millrace_serving_predict_requests_total",
            &stats.predict_requests,
        ),
        ("millrace_serving_predictions_total", &stats.predictions),
        ("millrace_serving_client_errors_total", &stats.client_errors),
        ("millrace_serving_swaps_total", &stats.swaps),
        (
            "millrace_serving_rejected_versions_total",
            &stats.rejected_versions,
        ),
        ("millrace_serving_load_retries_total", &stats.load_retries),
        ("millrace_serving_vocab_lookups_total", &stats.vocab_lookups),
        ("millrace_serving_vocab_oov_total", &stats.vocab_oov),
        ("millrace_serving_admin_changes_total", &stats.admin_changes),
        ("millrace_serving_unauthorized_total", &stats.unauthorized),
        (
            "millrace_serving_row_cache_hits_total",
            &stats.row_cache_hits,
        ),
        (
            "millrace_serving_row_cache_misses_total",
            &stats.row_cache_misses,
        ),
        ("millrace_serving_batches_total", &stats.batching.batches),
        (
            "millrace_serving_batch_requests_total",
            &stats.batching.requests,
        ),
        (
            "millrace_serving_batch_instances_total",
            &stats.batching.instances,
        ),
        (
            "millrace_serving_batch_wait_micros_total",
            &stats.batching.wait_micros,
        ),
        (
            "millrace_serving_batch_splits_total",
            &stats.batching.split_batches,
        ),
        (
            "millrace_serving_batch_queue_full_total",
            &stats.batching.queue_full,
        ),
        (
            "millrace_serving_batch_abandoned_total",
            &stats.batching.abandoned,
        ),
        (
            "millrace_serving_scoring_panics_total",
            &stats.scoring_panics,
        ),
        (
            "millrace_serving_shadow_dropped_total",
            &stats.shadow_dropped,
        ),
        (
            "millrace_serving_connections_refused_total",
            &stats.connections_refused,
        ),
        (
            "millrace_serving_tls_handshakes_failed_total",
            &stats.tls_handshakes_failed,
        ),
        (
            "millrace_serving_in_flight_refused_total",
            &stats.in_flight_refused,
        ),
    ];
    for (name, counter) in counters {
        let _ = writeln!(
            text,
            "# TYPE {name} counter\n{name} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    for (name, gauge) in [
        ("millrace_serving_shadow_in_flight", &stats.shadow_in_flight),
        ("millrace_serving_connections_open", &stats.connections_open),
        (
            "millrace_serving_predicts_in_flight",
            &stats.predicts_in_flight,
        ),
    ] {
        let _ = writeln!(
            text,
            "# TYPE {name} gauge\n{name} {}",
            gauge.load(Ordering::Relaxed)
        );
    }
    let entries = store.entries();
    let loaded = in_memory(&entries);
    text.push_str("# TYPE millrace_serving_model_version gauge\n");
    for entry in &entries {
        if let Some(primary) = entry.primary() {
            let _ = writeln!(
                text,
                "millrace_serving_model_version{{model=\"{}\"}} {}",
                entry.name, primary.model.meta.version
            );
        }
    }
    let arms: [(&str, &str, VersionCounter); 5] = [
        ("millrace_serving_arm_requests_total", "counter", |s| {
            &s.requests
        }),
        ("millrace_serving_arm_predictions_total", "counter", |s| {
            &s.predictions
        }),
        (
            "millrace_serving_arm_prediction_sum_micros_total",
            "counter",
            |s| &s.prediction_sum_micros,
        ),
        (
            "millrace_serving_shadow_predictions_total",
            "counter",
            |s| &s.shadow_predictions,
        ),
        (
            "millrace_serving_shadow_abs_diff_micros_total",
            "counter",
            |s| &s.shadow_abs_diff_micros,
        ),
    ];
    for (name, kind, counter) in arms {
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (model, version, loaded) in &loaded {
            let _ = writeln!(
                text,
                "{name}{{model=\"{model}\",version=\"{version}\"}} {}",
                counter(&loaded.stats).load(Ordering::Relaxed)
            );
        }
    }
    text.push_str("# TYPE millrace_serving_traffic_share_percent gauge\n");
    for entry in &entries {
        for (target, _) in entry.all() {
            let _ = writeln!(
                text,
                "millrace_serving_traffic_share_percent{{model=\"{}\",version=\"{}\"}} {}",
                entry.name,
                target.label(),
                entry.share_percent(&target)
            );
        }
    }
    text.push_str("# TYPE millrace_serving_model_bytes gauge\n");
    for (model, version, loaded) in &loaded {
        let memory = loaded.model.memory(None);
        let _ = writeln!(
            text,
            "millrace_serving_model_bytes{{model=\"{model}\",version=\"{version}\"}} {}",
            memory.block_bytes + memory.patch_bytes
        );
    }
    text.push_str("# TYPE millrace_serving_row_cache_entries gauge\n");
    for (model, version, loaded) in &loaded {
        let _ = writeln!(
            text,
            "millrace_serving_row_cache_entries{{model=\"{model}\",version=\"{version}\"}} {}",
            loaded.cached_rows()
        );
    }
    if let Some(extra) = &options.extra_metrics {
        text.push_str(&extra());
    }
    text
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
