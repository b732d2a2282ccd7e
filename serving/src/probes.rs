//! The probe port of a process: `/metrics`, `/healthz` and `/readyz`, for a process of a job
//! that serves no predictions (every process of a cluster has one), served by the same bounded
//! connections as the API.

use crate::exposition::metrics_route;
use crate::options::ServeOptions;
use crate::reply::recover;
use crate::server::accept;
use crate::stats::ServingStats;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use warp::http::StatusCode;
use warp::Filter as _;

/// Connections the probe port takes at once: scrapers and orchestrators, not clients.
const MAX_PROBE_CONNECTIONS: usize = 64;

/// Serves `registry` on `/metrics`, `/healthz` (always `ok`) and `/readyz` (200 while `ready`,
/// else 503) on `listener` until `shutdown` completes.
pub async fn serve_probes(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let metrics = metrics_route(registry);
    let healthz = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let readyz = warp::path!("readyz").and(warp::get()).map(move || {
        if ready.load(Ordering::Relaxed) {
            warp::reply::with_status("ready", StatusCode::OK)
        } else {
            warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
        }
    });
    let routes = metrics
        .or(healthz)
        .or(readyz)
        .recover(|rejection| async move { Ok::<_, std::convert::Infallible>(recover(rejection)) });
    let options = ServeOptions {
        max_connections: MAX_PROBE_CONNECTIONS,
        ..ServeOptions::default()
    };
    let counters = Arc::new(ServingStats::default());
    let what = "metrics";
    accept(routes, (counters, what), listener, &options, shutdown).await;
}
