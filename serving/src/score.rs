//! Scoring a request's instances with one loaded version, through the version's cache of rows
//! ([`crate::row_cache`]).

use crate::row_cache::Row;
use crate::rows::instance_rows;
use crate::stats::ServingStats;
use crate::version::LoadedVersion;
use millrace_models::fmap::TransformCounts;
use millrace_models::{CsrBatch, ServedModel};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_128;

fn predict(model: &ServedModel, row: &Row) -> f32 {
    model.predict_row(&row.indices, &row.values)
}

/// The rows of `instances` (all misses of the cache) under `version`'s FeatureMap, read by its
/// parser, one per instance.
fn transform(
    version: &LoadedVersion,
    instances: &[&RawValue],
    counts: &mut TransformCounts,
) -> Result<CsrBatch, String> {
    // A loaded model always has its FeatureMap, and so its parser.
    let (Some(map), Some(parser)) = (&version.model.feature_map, &version.parser) else {
        return Err("the model has no FeatureMap to make its rows".to_owned());
    };
    let texts: Vec<&str> = instances.iter().map(|raw| raw.get()).collect();
    instance_rows(map, parser.clone(), &texts, counts).map_err(|e| e.to_string())
}

/// The predictions of `version` for JSON `instances`, through its cache of rows when it has
/// one; the vocabulary lookups of the instances transformed are added to `counts`, and the
/// cache's hits and misses to `stats` when given.
///
/// # Errors
///
/// The first instance that is not an event of the model's schema, as `instance {i}: why`.
pub(crate) fn score(
    version: &LoadedVersion,
    instances: &[Box<RawValue>],
    counts: &mut TransformCounts,
    stats: Option<&ServingStats>,
) -> Result<Vec<f32>, String> {
    let model = &version.model;
    let Some(cache) = version.rows.as_ref() else {
        // No cache: each row is scored where the transform wrote it.
        let all: Vec<&RawValue> = instances.iter().map(|raw| &**raw).collect();
        return transform(version, &all, counts)
            .map(|rows| {
                (0..rows.len())
                    .map(|i| {
                        let (indices, values) = rows.row(i);
                        model.predict_row(indices, values)
                    })
                    .collect()
            })
            .map_err(|e| name_instance(e, &(0..instances.len()).collect::<Vec<_>>()));
    };
    let mut predictions = vec![0.0; instances.len()];
    let (mut missed, mut keys, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    for (i, raw) in instances.iter().enumerate() {
        let key = xxh3_128(raw.get().as_bytes());
        match cache.0.get(&key) {
            Some(row) => predictions[i] = predict(model, &row),
            None => {
                missed.push(&**raw);
                keys.push(key);
                positions.push(i);
            }
        }
    }
    if let Some(stats) = stats {
        let hits = instances.len() - missed.len();
        stats
            .row_cache_hits
            .fetch_add(hits as u64, Ordering::Relaxed);
        stats
            .row_cache_misses
            .fetch_add(missed.len() as u64, Ordering::Relaxed);
    }
    if !missed.is_empty() {
        let rows = transform(version, &missed, counts).map_err(|e| name_instance(e, &positions))?;
        debug_assert_eq!(rows.len(), keys.len(), "a row per instance");
        let rows = (0..rows.len()).map(|k| rows.row(k));
        for (((indices, values), key), i) in rows.zip(keys).zip(positions) {
            let row = Row {
                indices: indices.into(),
                values: values.into(),
            };
            predictions[i] = predict(model, &row);
            cache.0.insert(key, Arc::new(row));
        }
    }
    Ok(predictions)
}

/// Why a request's instances have no predictions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScoreError {
    /// An instance is not an event of the model's schema (`instance {i}: why`): the client's
    /// fault.
    Instance(String),
    /// Scoring panicked: the server's fault, confined to the request whose instances did it.
    Panicked(String),
}

/// The scoring function, [`score`] but for the batcher's tests.
pub(crate) type ScoreFn = fn(
    &LoadedVersion,
    &[Box<RawValue>],
    &mut TransformCounts,
    Option<&ServingStats>,
) -> Result<Vec<f32>, String>;

/// [`score`] (or `score_fn`) with a panic caught and turned into [`ScoreError::Panicked`]: a
/// panic fails the request that caused it, not the thread that serves or batches it.
pub(crate) fn score_guarded(
    score_fn: ScoreFn,
    version: &LoadedVersion,
    instances: &[Box<RawValue>],
    counts: &mut TransformCounts,
    stats: Option<&ServingStats>,
) -> Result<Vec<f32>, ScoreError> {
    // Nothing that scoring touches is left broken by an unwind: the row cache's shards hold
    // no lock across a panic, and the counts are discarded with the failed request.
    let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        score_fn(version, instances, counts, stats)
    }));
    match scored {
        Ok(predictions) => predictions.map_err(ScoreError::Instance),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(
                model = %version.model.meta.name,
                version = version.model.meta.version,
                %why,
                "scoring panicked; the request fails with a 500"
            );
            Err(ScoreError::Panicked(why))
        }
    }
}

/// Adds the vocabulary lookups of a transform to the serving counters.
pub(crate) fn count_lookups(stats: &ServingStats, counts: &TransformCounts) {
    stats
        .vocab_lookups
        .fetch_add(counts.lookups, Ordering::Relaxed);
    stats.vocab_oov.fetch_add(counts.oov, Ordering::Relaxed);
}

/// An error of the `k`-th instance transformed (`instance {k}: why`), renamed after the
/// instance's place in the request.
fn name_instance(error: String, positions: &[usize]) -> String {
    if let Some(rest) = error.strip_prefix("instance ") {
        if let Some((k, why)) = rest.split_once(": ") {
            if let Some(&i) = k.parse::<usize>().ok().and_then(|k| positions.get(k)) {
                return format!("instance {i}: {why}");
            }
        }
    }
    error
}
