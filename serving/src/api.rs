//! The HTTP API.

use crate::rows::instance_rows;
use crate::store::ModelStore;
use millrace_models::fmap::TransformCounts;
use millrace_models::{CriteoFeatures, ModelArtifact};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use warp::http::StatusCode;
use warp::reply::{json, with_status, Json, WithStatus};
use warp::{Filter, Rejection, Reply};

/// Options of the HTTP server.
#[derive(Clone)]
pub struct ServeOptions {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: u64,
    /// Most instances in one predict request.
    pub max_batch: usize,
    /// How often the registry is checked for new versions.
    pub poll_interval: Duration,
    /// Extra Prometheus text appended to `/metrics` (the job's own metrics when serving in-process).
    pub extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch", &self.max_batch)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_body_bytes: 4 << 20,
            max_batch: 1024,
            poll_interval: Duration::from_millis(200),
            extra_metrics: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    instances: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct PredictResponse {
    predictions: Vec<f32>,
    model_version: u64,
}

#[derive(Serialize)]
struct ModelStatus {
    name: String,
    version: u64,
    state: &'static str,
    trained_events: u64,
    progressive_auc: Option<f64>,
    created_unix_ms: u64,
}

impl ModelStatus {
    fn of(model: &ModelArtifact) -> Self {
        ModelStatus {
            name: model.meta.name.clone(),
            version: model.meta.version,
            state: "AVAILABLE",
            trained_events: model.meta.trained_events,
            progressive_auc: model.meta.progressive_auc,
            created_unix_ms: model.meta.created_unix_ms,
        }
    }
}

type Answer = WithStatus<Json>;

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    with_status(
        json(&serde_json::json!({ "error": message.into() })),
        status,
    )
}

fn predict(store: &ModelStore, options: &ServeOptions, target: &str, body: &[u8]) -> Answer {
    match predict_inner(store, options, target, body) {
        Ok(response) => {
            let stats = store.stats();
            stats.predict_requests.fetch_add(1, Ordering::Relaxed);
            stats
                .predictions
                .fetch_add(response.predictions.len() as u64, Ordering::Relaxed);
            with_status(json(&response), StatusCode::OK)
        }
        Err((status, message)) => {
            store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
            error(status, message)
        }
    }
}

fn predict_inner(
    store: &ModelStore,
    options: &ServeOptions,
    target: &str,
    body: &[u8],
) -> Result<PredictResponse, (StatusCode, String)> {
    let Some(name) = target.strip_suffix(":predict") else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no such endpoint: `{target}` (use `{{name}}:predict`)"),
        ));
    };
    let Some(model) = store.get(name) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("model `{name}` is not served (yet)"),
        ));
    };
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
    let predictions = match &model.feature_map {
        // A model of a `map` spec: its own FeatureMap version makes the rows.
        Some(map) => {
            let mut counts = TransformCounts::default();
            let rows = instance_rows(map, &request.instances, &mut counts)
                .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
            let stats = store.stats();
            stats
                .vocab_lookups
                .fetch_add(counts.lookups, Ordering::Relaxed);
            stats.vocab_oov.fetch_add(counts.oov, Ordering::Relaxed);
            (0..rows.len())
                .map(|i| {
                    let (indices, values) = rows.row(i);
                    model.predict_row(indices, values)
                })
                .collect()
        }
        None => {
            let mut row = Vec::new();
            request
                .instances
                .iter()
                .enumerate()
                .map(|(i, instance)| {
                    CriteoFeatures::from_json(instance)
                        .map(|features| model.predict_with(&features, &mut row))
                        .map_err(|e| (StatusCode::BAD_REQUEST, format!("instance {i}: {e}")))
                })
                .collect::<Result<Vec<f32>, _>>()?
        }
    };
    Ok(PredictResponse {
        predictions,
        model_version: model.meta.version,
    })
}

fn metrics_text(store: &ModelStore, options: &ServeOptions) -> String {
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
        ("millrace_serving_vocab_lookups_total", &stats.vocab_lookups),
        ("millrace_serving_vocab_oov_total", &stats.vocab_oov),
    ];
    for (name, counter) in counters {
        text.push_str(&format!(
            "# TYPE {name} counter\n{name} {}\n",
            counter.load(Ordering::Relaxed)
        ));
    }
    text.push_str("# TYPE millrace_serving_model_version gauge\n");
    for model in store.all() {
        text.push_str(&format!(
            "millrace_serving_model_version{{model=\"{}\"}} {}\n",
            model.meta.name, model.meta.version
        ));
    }
    if let Some(extra) = &options.extra_metrics {
        text.push_str(&extra());
    }
    text
}

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
    // Paths before methods, so that an unknown path is a 404 rather than a 405.
    let predict_route = warp::path!("v1" / "models" / String)
        .and(warp::post())
        .and(warp::body::content_length_limit(options.max_body_bytes))
        .and(warp::body::bytes())
        .and(with_store.clone())
        .and(with_options.clone())
        .map(
            |target: String, body: bytes::Bytes, store: Arc<ModelStore>, options: ServeOptions| {
                predict(&store, &options, &target, &body)
            },
        );
    let list = warp::path!("v1" / "models")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Arc<ModelStore>| {
            let models: Vec<_> = store
                .all()
                .iter()
                .map(|m| serde_json::json!({ "name": m.meta.name, "version": m.meta.version }))
                .collect();
            json(&serde_json::json!({ "models": models }))
        });
    let status = warp::path!("v1" / "models" / String)
        .and(warp::get())
        .and(with_store.clone())
        .map(
            |name: String, store: Arc<ModelStore>| match store.get(&name) {
                Some(model) => with_status(json(&ModelStatus::of(&model)), StatusCode::OK),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("model `{name}` is not served (yet)"),
                ),
            },
        );
    let healthz = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Arc<ModelStore>| {
            if store.all().is_empty() {
                with_status("no model loaded yet", StatusCode::SERVICE_UNAVAILABLE)
            } else {
                with_status("ready", StatusCode::OK)
            }
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_store)
        .and(with_options)
        .map(|store: Arc<ModelStore>, options: ServeOptions| metrics_text(&store, &options));
    predict_route
        .or(list)
        .or(status)
        .or(healthz)
        .or(readyz)
        .or(metrics)
        .recover(move |rejection: Rejection| {
            let store = store.clone();
            async move {
                store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(recover(rejection))
            }
        })
}

fn recover(rejection: Rejection) -> Answer {
    if rejection.is_not_found() {
        error(StatusCode::NOT_FOUND, "no such endpoint")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        error(StatusCode::LENGTH_REQUIRED, "a content-length is required")
    } else {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad request: {rejection:?}"),
        )
    }
}

/// Serves `store` on `listener` until `shutdown` completes, refreshing the store from its
/// registry every `options.poll_interval`.
pub async fn serve(
    store: Arc<ModelStore>,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let refresher = {
        let store = store.clone();
        let interval = options.poll_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let store = store.clone();
                if tokio::task::spawn_blocking(move || store.refresh())
                    .await
                    .is_err()
                {
                    tracing::error!("model refresh task failed");
                }
            }
        })
    };
    warp::serve(routes(store, options))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    refresher.abort();
}
