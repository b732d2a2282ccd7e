//! The HTTP API: the model routes of both dialects ([`crate::model_api`]), the admin routes,
//! the model list, health, metrics and the OpenAPI document.

use crate::admin::{admin, MAX_ADMIN_BODY};
use crate::batch::Batcher;
use crate::body::receive;
use crate::exposition::{metrics_route, register_build_info};
use crate::metrics::ServingMetrics;
use crate::model_api::{ApiPath, ModelApi};
use crate::options::ServeOptions;
use crate::reply::{not_allowed, recover};
use crate::store::ModelStore;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::{json, with_status};
use warp::{Filter, Rejection, Reply};

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
    let api = ModelApi {
        store: store.clone(),
        options: options.clone(),
        batcher,
    };
    // Paths before methods, so that an unknown path is a 404 rather than a 405. A body may
    // come chunked, without a length: `receive` holds it to the limit as it arrives.
    let models = warp::path::full()
        .and_then(|path: FullPath| async move {
            ApiPath::parse(path.as_str()).ok_or_else(warp::reject::not_found)
        })
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |path: ApiPath, method: Method, headers: HeaderMap, body| {
                api.clone().answer(path, method, headers, body)
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
    let registry = Arc::new(registry(&store, &options));
    let metrics = metrics_route(registry);
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
    models
        .or(admin_route)
        .or(list)
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

/// The metrics of `/metrics`: the build, the serving side's, and the options' extra ones.
fn registry(store: &Arc<ModelStore>, options: &ServeOptions) -> Registry {
    let mut registry = Registry::default();
    register_build_info(&mut registry);
    let store = store.clone();
    registry.register_collector(Box::new(ServingMetrics { store }));
    if let Some(extra) = options.extra_metrics.clone() {
        registry.register_collector(Box::new(Extra(extra)));
    }
    registry
}

/// Metrics collected elsewhere, shared.
#[derive(Debug)]
struct Extra(Arc<dyn Collector>);

impl Collector for Extra {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// The method a path of the API takes (admin paths answer every method themselves).
fn allowed_method(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "models"] | ["v1", "ping"] => Some("GET"),
        ["healthz"] | ["readyz"] | ["metrics"] | ["openapi.json"] => Some("GET"),
        _ => None,
    }
}
