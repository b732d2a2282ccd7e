//! The HTTP API.

use crate::batch::{BatchOptions, Batcher, Unscored};
use crate::score::{count_lookups, score, score_guarded, ScoreError};
use crate::stats::{ServingStats, VersionStats};
use crate::store::{AdminError, ModelStore};
use crate::traffic::{Arm, Route, ServedEntry, Traffic, TrafficChange, VersionRef};
use crate::version::LoadedVersion;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use millrace_models::fmap::TransformCounts;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use warp::http::Method;
use warp::http::StatusCode;
use warp::path::FullPath;
use warp::reply::{json, with_header, with_status, Json, Response, WithHeader, WithStatus};
use warp::{Filter, Rejection, Reply};
use xxhash_rust::xxh3::xxh3_64;

/// Options of the HTTP server.
#[derive(Clone)]
pub struct ServeOptions {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: u64,
    /// Most instances in one predict request.
    pub max_batch: usize,
    /// Longest a client may take to send a request body; past it the answer is a 408.
    pub request_timeout: Duration,
    /// How often the registry is checked for new versions.
    pub poll_interval: Duration,
    /// The bearer token of the admin endpoints; without one they answer 403.
    pub admin_token: Option<String>,
    /// Extra Prometheus text appended to `/metrics` (the job's own metrics when serving in-process).
    pub extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Batch predict requests that arrive together (the dynamic batcher); `None` scores each
    /// request on its own, as it arrives.
    pub batching: Option<BatchOptions>,
    /// Shadow scorings that may run at once; past it a request's shadow scoring is skipped
    /// (and counted), so that a shadow never slows the answers.
    pub max_shadow_in_flight: usize,
    /// Connections open at once; one more is closed at once (and counted).
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, and to start the next request
    /// on a kept-alive connection; past it the connection is closed.
    pub header_timeout: Duration,
    /// Predict requests in flight at once (receiving, queued or scoring): one more is answered
    /// 503 at once. With the body limit, this bounds the memory requests hold.
    pub max_in_flight: usize,
    /// Serve HTTPS with this configuration ([`crate::tls_config`]); `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch", &self.max_batch)
            .field("request_timeout", &self.request_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("batching", &self.batching)
            .field("max_shadow_in_flight", &self.max_shadow_in_flight)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_body_bytes: 4 << 20,
            max_batch: 1024,
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(200),
            admin_token: None,
            extra_metrics: None,
            batching: None,
            max_shadow_in_flight: DEFAULT_MAX_SHADOW_IN_FLIGHT,
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            max_in_flight: 256,
            tls: None,
        }
    }
}

/// The most instances an unbatched request may have to be scored on the async thread that
/// took it (a few microseconds); a larger one goes to the blocking pool, so that it does not
/// hold a thread the server's other connections need.
const INLINE_INSTANCES: usize = 16;

/// Shadow scorings that run at once unless told otherwise.
pub const DEFAULT_MAX_SHADOW_IN_FLIGHT: usize = 16;

/// The header whose value routes a request to an arm of a traffic split: the same key always
/// goes to the same arm (sticky per user).
pub const KEY_HEADER: &str = "x-millrace-key";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    /// Each instance as its JSON text, the row cache's key.
    instances: Vec<Box<RawValue>>,
}

#[derive(Serialize)]
struct PredictResponse {
    predictions: Vec<f32>,
    /// The model that answered, when a traffic split sent the request to another model's
    /// version.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    model_version: u64,
}

#[derive(Serialize)]
struct VersionStatus {
    /// The model of a version that another model's traffic names; absent for its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    version: u64,
    state: &'static str,
    share_percent: f64,
    shadow: bool,
    trained_events: u64,
    progressive_auc: Option<f64>,
    created_unix_ms: u64,
    loaded_unix_ms: u64,
}

#[derive(Serialize)]
struct ModelStatus {
    name: String,
    /// The primary version.
    version: u64,
    state: &'static str,
    trained_events: u64,
    progressive_auc: Option<f64>,
    created_unix_ms: u64,
    traffic: Traffic,
    versions: Vec<VersionStatus>,
}

impl ModelStatus {
    fn of(entry: &ServedEntry) -> Option<Self> {
        let primary = &entry.primary()?.model.meta;
        let versions = entry
            .all()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|(target, loaded)| {
                let meta = &loaded.model.meta;
                let share_percent = entry.share_percent(&target);
                let shadow = entry.traffic.shadow.as_ref() == Some(&target);
                VersionStatus {
                    model: target.model().map(str::to_owned),
                    version: meta.version,
                    state: if share_percent > 0.0 || shadow {
                        "AVAILABLE"
                    } else {
                        "LOADED"
                    },
                    share_percent,
                    shadow,
                    trained_events: meta.trained_events,
                    progressive_auc: meta.progressive_auc,
                    created_unix_ms: meta.created_unix_ms,
                    loaded_unix_ms: loaded.loaded_unix_ms,
                }
            })
            .collect();
        Some(ModelStatus {
            name: entry.name.clone(),
            version: primary.version,
            state: "AVAILABLE",
            trained_events: primary.trained_events,
            progressive_auc: primary.progressive_auc,
            created_unix_ms: primary.created_unix_ms,
            traffic: entry.traffic.clone(),
            versions,
        })
    }
}

type Answer = WithStatus<Json>;

/// A request refused: the status and the reason given.
type Refusal = (StatusCode, String);

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    with_status(
        json(&serde_json::json!({ "error": message.into() })),
        status,
    )
}

fn micros(p: f32) -> u64 {
    (f64::from(p) * 1e6).round() as u64
}

async fn predict(
    (store, slot): (&Arc<ModelStore>, Slot),
    options: &ServeOptions,
    batcher: Option<&Batcher>,
    target: &str,
    key: Option<&str>,
    body: &[u8],
) -> Answer {
    match predict_inner((store, slot), options, batcher, target, key, body).await {
        Ok(response) => {
            let stats = store.stats();
            stats.predict_requests.fetch_add(1, Ordering::Relaxed);
            stats
                .predictions
                .fetch_add(response.predictions.len() as u64, Ordering::Relaxed);
            with_status(json(&response), StatusCode::OK)
        }
        Err((status, message)) => {
            if status.is_client_error() {
                store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
            }
            error(status, message)
        }
    }
}

/// A predict request's instances and the versions that score them.
fn admit(
    store: &ModelStore,
    options: &ServeOptions,
    target: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<(Route, Vec<Box<RawValue>>), Refusal> {
    let Some(name) = target.strip_suffix(":predict") else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no such endpoint: `{target}` (use `{{name}}:predict`)"),
        ));
    };
    let not_served = || {
        (
            StatusCode::NOT_FOUND,
            format!("model `{name}` is not served (yet)"),
        )
    };
    let entry = store.entry(name).ok_or_else(not_served)?;
    let request: PredictRequest = serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })?;
    if request.instances.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "`instances` must not be empty".to_owned(),
        ));
    }
    if request.instances.len() > options.max_batch {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {} instances per request (got {})",
                options.max_batch,
                request.instances.len()
            ),
        ));
    }
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
    let route = entry.route(key).ok_or_else(not_served)?;
    Ok((route, request.instances))
}

/// Scores a request holding `slot`, its place among the predicts in flight: a request scored on
/// the blocking pool keeps it until it is scored, even when its client has gone.
async fn predict_inner(
    (store, slot): (&Arc<ModelStore>, Slot),
    options: &ServeOptions,
    batcher: Option<&Batcher>,
    target: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<PredictResponse, Refusal> {
    let (route, instances) = admit(store, options, target, key, body)?;
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
            let predictions = score_guarded(score, answer, &instances, &mut counts, Some(stats));
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
    Ok(PredictResponse {
        predictions,
        model: Some(meta.name.clone()).filter(|_| route.guest),
        model_version: meta.version,
    })
}

/// A gauge of the serving counters: a count of things running now.
type Gauge = fn(&ServingStats) -> &AtomicU64;

/// A place among those a gauge counts (predicts or shadow scorings in flight), given back
/// when dropped, however its holder ends.
struct Slot {
    store: Arc<ModelStore>,
    gauge: Gauge,
}

impl Slot {
    /// A place, unless `max` are taken.
    fn take(store: &Arc<ModelStore>, gauge: Gauge, max: usize) -> Option<Self> {
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

/// Reads a request body of at most `limit` bytes.
async fn read_body(
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    limit: u64,
) -> Result<Vec<u8>, Refusal> {
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        if (bytes.len() + chunk.remaining()) as u64 > limit {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".to_owned(),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(bytes)
}

/// A request body, or the answer to give instead: 408 past the time limit.
async fn receive(
    store: &ModelStore,
    options: &ServeOptions,
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    limit: u64,
) -> Result<Vec<u8>, Answer> {
    let received = tokio::time::timeout(options.request_timeout, read_body(body, limit))
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    options.request_timeout.as_millis()
                ),
            ))
        });
    received.map_err(|(status, message)| {
        store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
        error(status, message)
    })
}

/// The largest admin request body.
const MAX_ADMIN_BODY: u64 = 64 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    /// Another served model, whose version is promoted into this model's traffic.
    #[serde(default)]
    model: Option<String>,
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficBody {
    #[serde(default)]
    split: Vec<Arm>,
    #[serde(default)]
    shadow: Option<serde_json::Value>,
}

/// The shadow of a traffic change: a version number of the model itself, or
/// `{"model": …, "version": …}` of another served model.
fn shadow_of(value: serde_json::Value) -> Result<VersionRef, Refusal> {
    if let Some(version) = value.as_u64() {
        return Ok(VersionRef::Own(version));
    }
    serde_json::from_value::<VersionBody>(value)
        .map(|body| VersionRef::of(body.model, body.version))
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("invalid `shadow`: a version number, or {{\"model\": …, \"version\": …}} of another model ({e})"),
            )
        })
}

/// Whether `given` (an `Authorization` header) carries `token`, compared in constant time.
fn authorized(token: &str, given: Option<&str>) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some(given) = given.and_then(|g| g.strip_prefix("Bearer ")) else {
        return false;
    };
    // Equal-length digests compared in constant time: the time taken tells nothing of where
    // the tokens differ, nor of the expected token's length.
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

/// The method an admin action takes; `None` for an unknown action.
fn admin_method(action: &str) -> Option<Method> {
    match action {
        "traffic" => Some(Method::PUT),
        "pin" | "unpin" | "promote" | "rollback" => Some(Method::POST),
        _ => None,
    }
}

fn traffic_change(action: &str, body: &[u8]) -> Result<TrafficChange, Refusal> {
    let parse = |body: &[u8]| -> Result<_, Refusal> {
        serde_json::from_slice::<VersionBody>(body)
            .map(|b| VersionRef::of(b.model, b.version))
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: {e}"),
                )
            })
    };
    let empty = |body: &[u8]| -> Result<(), Refusal> {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        if blank
            || serde_json::from_slice::<serde_json::Map<_, _>>(body).is_ok_and(|m| m.is_empty())
        {
            Ok(())
        } else {
            Err((
                StatusCode::BAD_REQUEST,
                format!("`{action}` takes no body (or `{{}}`)"),
            ))
        }
    };
    Ok(match action {
        "pin" => match parse(body)? {
            VersionRef::Own(version) => TrafficChange::Pin(version),
            VersionRef::Of { .. } => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "`pin` takes a version of the model itself; `promote` or a split gives another model's version the traffic".to_owned(),
                ))
            }
        },
        "promote" => TrafficChange::Promote(parse(body)?),
        "unpin" => {
            empty(body)?;
            TrafficChange::Unpin
        }
        "rollback" => {
            empty(body)?;
            TrafficChange::Rollback
        }
        _ => {
            let traffic: TrafficBody = serde_json::from_slice(body).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: {e}"),
                )
            })?;
            TrafficChange::Split {
                split: traffic.split,
                shadow: traffic.shadow.map(shadow_of).transpose()?,
            }
        }
    })
}

async fn admin(
    store: Arc<ModelStore>,
    options: ServeOptions,
    name: String,
    action: String,
    method: Method,
    authorization: Option<String>,
    body: Vec<u8>,
) -> Response {
    let refuse = |status, message: String| {
        store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
        error(status, message).into_response()
    };
    let Some(expected) = admin_method(&action) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no admin action `{action}` (pin, unpin, traffic, promote, rollback)"),
        );
    };
    if method != expected {
        return not_allowed(expected.as_str(), &format!("`{action}` takes {expected}"))
            .into_response();
    }
    let Some(token) = &options.admin_token else {
        return refuse(
            StatusCode::FORBIDDEN,
            "the admin endpoints are disabled: start the server with an admin token".to_owned(),
        );
    };
    if !authorized(token, authorization.as_deref()) {
        store.stats().unauthorized.fetch_add(1, Ordering::Relaxed);
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the admin endpoints need `Authorization: Bearer <token>`".to_owned(),
        );
    }
    let change = match traffic_change(&action, &body) {
        Ok(change) => change,
        Err((status, message)) => return refuse(status, message),
    };
    let changed = {
        let store = store.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || store.change_traffic(&name, change)).await
    };
    match changed {
        Ok(Ok(_)) => match store.entry(&name).as_deref().and_then(ModelStatus::of) {
            Some(status) => with_status(json(&status), StatusCode::OK).into_response(),
            None => refuse(
                StatusCode::NOT_FOUND,
                format!("model `{name}` is not served"),
            ),
        },
        Ok(Err(refused)) => {
            let status = match refused {
                AdminError::UnknownModel(_) | AdminError::UnknownVersion(..) => {
                    StatusCode::NOT_FOUND
                }
                AdminError::Rejected(..) => StatusCode::UNPROCESSABLE_ENTITY,
                AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
                AdminError::NoOlderVersion(_) => StatusCode::CONFLICT,
            };
            refuse(status, refused.to_string())
        }
        Err(join) => {
            tracing::error!(%join, "admin task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the change failed; nothing changed",
            )
            .into_response()
        }
    }
}

/// One counter of a loaded version.
type VersionCounter = fn(&VersionStats) -> &AtomicU64;

fn metrics_text(store: &ModelStore, options: &ServeOptions) -> String {
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

pub use crate::openapi::OPENAPI;

/// The API's routes over `store`.
pub fn routes(
    store: Arc<ModelStore>,
    options: ServeOptions,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with_store = {
        let store = store.clone();
        warp::any().map(move || store.clone())
    };
    let with_options = {
        let options = options.clone();
        warp::any().map(move || options.clone())
    };
    let batcher = options.batching.and_then(|batching| {
        Batcher::start(batching, &store)
            .map_err(|error| {
                tracing::error!(%error, "cannot start the batching threads: requests are scored one by one");
            })
            .ok()
    });
    let with_batcher = warp::any().map(move || batcher.clone());
    // Paths before methods, so that an unknown path is a 404 rather than a 405. A body may
    // come chunked, without a length: `receive` holds it to the limit as it arrives.
    let predict_route = warp::path!("v1" / "models" / String)
        .and_then(|target: String| async move { predict_target(target, true) })
        .and(warp::post())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::optional::<String>(KEY_HEADER))
        .and(warp::body::stream())
        .and(with_store.clone())
        .and(with_options.clone())
        .and(with_batcher)
        .then(
            |target: String,
             length: Option<u64>,
             key: Option<String>,
             body,
             store: Arc<ModelStore>,
             options: ServeOptions,
             batcher: Option<Batcher>| async move {
                let Some(slot) = Slot::take(&store, |s| &s.predicts_in_flight, options.max_in_flight) else {
                    store.stats().in_flight_refused.fetch_add(1, Ordering::Relaxed);
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "{} predict requests are in flight, the most this server takes; retry later",
                            options.max_in_flight
                        ),
                    );
                };
                if length.is_some_and(|n| n > options.max_body_bytes) {
                    store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                }
                match receive(&store, &options, body, options.max_body_bytes).await {
                    Ok(body) => {
                        let batcher = batcher.as_ref();
                        let request = (&store, slot);
                        predict(request, &options, batcher, &target, key.as_deref(), &body).await
                    }
                    Err(answer) => answer,
                }
            },
        );
    let admin_route = warp::path!("v1" / "admin" / "models" / String / String)
        .and(warp::method())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::stream())
        .and(with_store.clone())
        .and(with_options.clone())
        .then(
            |name: String,
             action: String,
             method: Method,
             authorization: Option<String>,
             body,
             store: Arc<ModelStore>,
             options: ServeOptions| async move {
                match receive(&store, &options, body, MAX_ADMIN_BODY).await {
                    Ok(body) => {
                        admin(store, options, name, action, method, authorization, body).await
                    }
                    Err(answer) => answer.into_response(),
                }
            },
        );
    let list = warp::path!("v1" / "models")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Arc<ModelStore>| {
            let models: Vec<_> = store
                .entries()
                .iter()
                .filter_map(|entry| {
                    let version = entry.primary()?.model.meta.version;
                    Some(serde_json::json!({ "name": entry.name, "version": version }))
                })
                .collect();
            json(&serde_json::json!({ "models": models }))
        });
    let status = warp::path!("v1" / "models" / String)
        .and_then(|target: String| async move { predict_target(target, false) })
        .and(warp::get())
        .and(with_store.clone())
        .map(|name: String, store: Arc<ModelStore>| {
            match store.entry(&name).as_deref().and_then(ModelStatus::of) {
                Some(status) => with_status(json(&status), StatusCode::OK),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("model `{name}` is not served (yet)"),
                ),
            }
        });
    let ping = warp::path!("v1" / "ping").and(warp::get()).map(|| "pong");
    let healthz = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Arc<ModelStore>| {
            if store.entries().is_empty() {
                with_status("no model loaded yet", StatusCode::SERVICE_UNAVAILABLE)
            } else {
                with_status("ready", StatusCode::OK)
            }
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_store.clone())
        .and(with_options)
        .map(|store: Arc<ModelStore>, options: ServeOptions| metrics_text(&store, &options));
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .and(with_store)
        .map(|store: Arc<ModelStore>| {
            warp::reply::with_header(
                crate::openapi::openapi_for(&store),
                "content-type",
                "application/json",
            )
        });
    // A known path asked with a method it does not take: 405 with the methods it takes.
    let wrong_method = warp::path::full().and(warp::method()).and_then(
        |path: FullPath, method: Method| async move {
            match allowed_method(path.as_str()) {
                Some(allow) if allow != method.as_str() => Ok(not_allowed(
                    allow,
                    &format!("{} takes {allow}", path.as_str()),
                )),
                _ => Err(warp::reject::not_found()),
            }
        },
    );
    predict_route
        .or(admin_route)
        .or(list)
        .or(status)
        .or(ping)
        .or(healthz)
        .or(readyz)
        .or(metrics)
        .or(openapi)
        .or(wrong_method)
        .recover(move |rejection: Rejection| {
            let store = store.clone();
            async move {
                store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(recover(rejection))
            }
        })
}

/// `target` when it is (`predict`) or is not a `{name}:predict` target; other paths are not
/// found, so that a wrong method on either is answered by the 405 route.
fn predict_target(target: String, predict: bool) -> Result<String, Rejection> {
    if target.ends_with(":predict") == predict {
        Ok(target)
    } else {
        Err(warp::reject::not_found())
    }
}

/// The method a path of the API takes (admin paths answer every method themselves).
fn allowed_method(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "models", target] if target.ends_with(":predict") => Some("POST"),
        ["v1", "models", _] | ["v1", "models"] | ["v1", "ping"] => Some("GET"),
        ["healthz"] | ["readyz"] | ["metrics"] | ["openapi.json"] => Some("GET"),
        _ => None,
    }
}

/// A 405 that names the method to use in `Allow`.
fn not_allowed(allow: &str, message: &str) -> WithHeader<Answer> {
    with_header(
        error(StatusCode::METHOD_NOT_ALLOWED, message),
        "allow",
        allow,
    )
}

fn recover(rejection: Rejection) -> Answer {
    if rejection.is_not_found() {
        error(StatusCode::NOT_FOUND, "no such endpoint")
    } else if let Some(header) = rejection.find::<warp::reject::InvalidHeader>() {
        // Before the methods: a route that takes the method refused the request for this.
        error(
            StatusCode::BAD_REQUEST,
            format!("the header `{}` is not valid", header.name()),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad request: {rejection:?}"),
        )
    }
}
