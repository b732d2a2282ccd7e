//! The probe port of a job's process (`run --metrics-bind`): the job's metrics, liveness and
//! readiness, whether or not the process serves predictions.

use super::http_task::HttpTask;
use crate::error::Result;
use crate::metrics::{JobMetrics, JobStats};
use millrace_serving::exposition::register_build_info;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::runtime::Runtime;

/// Binds `addr` and serves the job's metrics (`stats`), `/healthz`, and `/readyz` (ready while
/// `ready`) on `runtime`.
pub(super) fn start_probes(
    addr: SocketAddr,
    stats: &Arc<JobStats>,
    ready: &Arc<AtomicBool>,
    runtime: &Runtime,
) -> Result<HttpTask> {
    let mut registry = Registry::default();
    register_build_info(&mut registry);
    registry.register_collector(Box::new(JobMetrics(stats.clone())));
    let (registry, ready) = (Arc::new(registry), ready.clone());
    let probes = HttpTask::start(&addr.to_string(), runtime, move |listener, shutdown| {
        millrace_serving::serve_probes(listener, registry, ready, shutdown)
    })?;
    tracing::info!(addr = %probes.addr, "metrics, health and readiness on /metrics, /healthz, /readyz");
    Ok(probes)
}
