//! Scoring a predict request whatever its dialect (`:predict` rows or columns, the Open
//! Inference Protocol's tensors): the version that answers, the batcher or the async thread or
//! the blocking pool, the shadow, and the counters.

use crate::batch::{Batcher, Unscored};
use crate::options::ServeOptions;
use crate::reply::{bad_request, not_served, Refusal};
use crate::score::{count_lookups, score, score_guarded, ScoreError};
use crate::stats::ServingStats;
use crate::store::ModelStore;
use crate::traffic::{Route, ServedEntry, VersionRef};
use crate::version::LoadedVersion;
use millrace_models::fmap::TransformCounts;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use warp::http::StatusCode;
use xxhash_rust::xxh3::xxh3_64;

/// The most instances an unbatched request may have to be scored on the async thread that
/// took it (a few microseconds); a larger one goes to the blocking pool, so that it does not
/// hold a thread the server's other connections need.
const INLINE_INSTANCES: usize = 16;

/// Which version of a model answers a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The model's traffic: the arm of the split that the request's key (the sticky-key
    /// header) falls in, else the primary version; the shadow scores the instances too.
    Traffic,
    /// One of the model's own versions in memory.
    Version(u64),
    /// A TF Serving version label: `stable` is the primary version (the pinned or the newest),
    /// `canary` the arm of the split, other than the primary, with the largest weight.
    Label(String),
}

/// The predictions of a request and the version that made them.
#[derive(Clone, Debug)]
pub(crate) struct Scored {
    /// One per instance, in order.
    pub(crate) predictions: Vec<f32>,
    /// The model whose version answered.
    pub(crate) model: String,
    /// That version.
    pub(crate) version: u64,
    /// Whether it is a version of another model than the one asked (a guest arm of a split).
    pub(crate) guest: bool,
}

/// The versions that answer a request for `name` picked by `pick`; `key` is the request's
/// sticky key, for the traffic's split.
///
/// # Errors
///
/// A 404 when the model, the version or the label has nothing to answer with.
pub(crate) fn route(
    store: &ModelStore,
    name: &str,
    pick: &Pick,
    key: Option<&str>,
) -> Result<Route, Refusal> {
    let entry = store.entry(name).ok_or_else(|| not_served(name))?;
    let only = |answer: &Arc<LoadedVersion>, guest| Route {
        answer: answer.clone(),
        guest,
        shadow: None,
    };
    match pick {
        Pick::Traffic => {
            let key = match key {
                Some(key) => xxh3_64(key.as_bytes()),
                None => xxh3_64(
                    &store
                        .stats()
                        .predict_requests
                        .load(Ordering::Relaxed)
                        .to_le_bytes(),
                ),
            };
            entry.route(key).ok_or_else(|| not_served(name))
        }
        Pick::Version(version) => entry
            .versions
            .get(version)
            .map(|answer| only(answer, false))
            .ok_or_else(|| not_loaded(&entry, *version)),
        Pick::Label(label) if label == "stable" => entry
            .primary()
            .map(|answer| only(answer, false))
            .ok_or_else(|| not_served(name)),
        Pick::Label(label) if label == "canary" => canary(&entry)
            .and_then(|target| Some(only(entry.get(&target)?, target.model().is_some())))
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("model `{name}` has no canary: no arm of its traffic split answers with another version than the primary"),
                )
            }),
        Pick::Label(label) => Err((
            StatusCode::NOT_FOUND,
            format!("model `{name}` has no label `{label}` (its labels: stable, canary)"),
        )),
    }
}

/// The arm of `entry`'s split, other than the primary version, with the largest weight.
fn canary(entry: &ServedEntry) -> Option<VersionRef> {
    let primary = entry
        .primary()
        .map(|p| VersionRef::Own(p.model.meta.version));
    entry
        .traffic
        .split
        .iter()
        .filter(|arm| arm.weight > 0)
        .map(|arm| (arm.weight, arm.target(&entry.name)))
        .filter(|(_, target)| Some(target) != primary.as_ref())
        .max_by_key(|(weight, _)| *weight)
        .map(|(_, target)| target)
}

/// A 404 for a version of `entry` not in memory, naming those that are.
fn not_loaded(entry: &ServedEntry, version: u64) -> Refusal {
    let loaded: Vec<String> = entry.versions.keys().map(u64::to_string).collect();
    (
        StatusCode::NOT_FOUND,
        format!(
            "version {version} of model `{}` is not loaded (loaded: {})",
            entry.name,
            loaded.join(", ")
        ),
    )
}

/// Refuses a request of `n` instances: none, or more than a request may hold.
pub(crate) fn check_count(n: usize, options: &ServeOptions) -> Result<(), Refusal> {
    if n == 0 {
        return Err(bad_request("a request needs at least one instance"));
    }
    if n > options.max_batch {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {} instances per request (got {n})",
                options.max_batch
            ),
        ));
    }
    Ok(())
}

/// A scoring request: the store, the in-flight slot it holds, the options and the batcher.
pub(crate) struct Request<'a> {
    /// The models.
    pub(crate) store: &'a Arc<ModelStore>,
    /// The request's place among the predicts in flight.
    pub(crate) slot: Slot,
    /// The server's options.
    pub(crate) options: &'a ServeOptions,
    /// The dynamic batcher, when batching.
    pub(crate) batcher: Option<&'a Batcher>,
}

impl Request<'_> {
    /// Scores `instances` with `route`, holding the slot: a request scored on the blocking pool
    /// keeps it until it is scored, even when its client has gone.
    ///
    /// # Errors
    ///
    /// A 400 naming the instance that is not an event of the schema, a 429 or 503 from the
    /// batcher, a 500 when scoring panicked.
    pub(crate) async fn score(
        self,
        route: Route,
        instances: Vec<Box<RawValue>>,
    ) -> Result<Scored, Refusal> {
        let Request {
            store,
            slot,
            options,
            batcher,
        } = self;
        let answer = &route.answer;
        let stats = store.stats();
        let (instances, predictions) = match batcher {
            Some(batcher) => {
                let scored = batcher
                    .score(answer.clone(), instances)
                    .await
                    .map_err(|unscored| refuse_unscored(stats, unscored))?;
                (scored.instances, scored.predictions)
            }
            None if instances.len() <= INLINE_INSTANCES => {
                let mut counts = TransformCounts::default();
                let predictions =
                    score_guarded(score, answer, &instances, &mut counts, Some(stats));
                count_lookups(stats, &counts);
                (instances, predictions)
            }
            None => {
                let (answer, scorer) = (answer.clone(), store.clone());
                let (instances, predictions, counts) = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    let mut counts = TransformCounts::default();
                    let stats = Some(scorer.stats());
                    let predictions = score_guarded(score, &answer, &instances, &mut counts, stats);
                    (instances, predictions, counts)
                })
                .await
                .map_err(|_| {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server is stopping".to_owned(),
                    )
                })?;
                count_lookups(stats, &counts);
                (instances, predictions)
            }
        };
        let predictions = predictions.map_err(|e| refuse_failed(stats, e))?;
        let arm = &answer.stats;
        arm.requests.fetch_add(1, Ordering::Relaxed);
        arm.predictions
            .fetch_add(predictions.len() as u64, Ordering::Relaxed);
        arm.prediction_sum_micros.fetch_add(
            predictions.iter().map(|&p| micros(p)).sum(),
            Ordering::Relaxed,
        );
        if let Some(shadow) = route.shadow {
            score_shadow(store, options, shadow, instances, predictions.clone());
        }
        let meta = &answer.model.meta;
        Ok(Scored {
            predictions,
            model: meta.name.clone(),
            version: meta.version,
            guest: route.guest,
        })
    }
}

fn micros(p: f32) -> u64 {
    (f64::from(p) * 1e6).round() as u64
}

/// A gauge of the serving counters: a count of things running now.
pub(crate) type Gauge = fn(&ServingStats) -> &AtomicU64;

/// A place among those a gauge counts (predicts or shadow scorings in flight), given back
/// when dropped, however its holder ends.
pub(crate) struct Slot {
    store: Arc<ModelStore>,
    gauge: Gauge,
}

impl Slot {
    /// A place, unless `max` are taken.
    pub(crate) fn take(store: &Arc<ModelStore>, gauge: Gauge, max: usize) -> Option<Self> {
        gauge(store.stats())
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max as u64).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                store: store.clone(),
                gauge,
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        (self.gauge)(self.store.stats()).fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a request the batcher did not take: a 429 when its queue is full (the client
/// may retry), a 503 when it has stopped.
fn refuse_unscored(stats: &ServingStats, unscored: Unscored) -> Refusal {
    match unscored {
        Unscored::Full(limit) => {
            stats.batching.queue_full.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!("the batch queue holds its limit of {limit} requests; retry later"),
            )
        }
        Unscored::Stopped => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the batcher has stopped".to_owned(),
        ),
    }
}

/// The answer to a request whose scoring failed: a 400 naming the instance, or a 500 when
/// scoring panicked.
fn refuse_failed(stats: &ServingStats, error: ScoreError) -> Refusal {
    match error {
        ScoreError::Instance(why) => (StatusCode::BAD_REQUEST, why),
        ScoreError::Panicked(_) => {
            stats.scoring_panics.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "scoring this request failed inside the server (logged)".to_owned(),
            )
        }
    }
}

/// Scores a request's instances with the shadow version, on a blocking thread and off the
/// request's path (the caller has its answer already), unless `max_shadow_in_flight` shadow
/// scorings already run: then it is skipped and counted.
fn score_shadow(
    store: &Arc<ModelStore>,
    options: &ServeOptions,
    shadow: Arc<LoadedVersion>,
    instances: Vec<Box<RawValue>>,
    answered: Vec<f32>,
) {
    let Some(slot) = Slot::take(store, |s| &s.shadow_in_flight, options.max_shadow_in_flight)
    else {
        store.stats().shadow_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tokio::task::spawn_blocking(move || {
        let mut counts = TransformCounts::default();
        let scored = score_guarded(score, &shadow, &instances, &mut counts, None);
        drop(slot);
        let Ok(scores) = scored else {
            return;
        };
        let diff: u64 = scores
            .iter()
            .zip(&answered)
            .map(|(s, a)| micros((s - a).abs()))
            .sum();
        let stats = &shadow.stats;
        stats
            .shadow_predictions
            .fetch_add(scores.len() as u64, Ordering::Relaxed);
        stats
            .shadow_abs_diff_micros
            .fetch_add(diff, Ordering::Relaxed);
    });
}
