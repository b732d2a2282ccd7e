//! The probe port of a job's process (`run --metrics-bind`): the job's metrics, liveness and
//! readiness, whether or not the process serves predictions.

use crate::error::{Error, Result};
use crate::metrics::{JobMetrics, JobStats};
use millrace_serving::exposition::register_build_info;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The probe server of a process.
pub(super) struct Probes {
    server: JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

impl Probes {
    /// Binds `addr` and serves the job's metrics (`stats`), `/healthz`, and `/readyz` (ready
    /// while `ready`) on `runtime`.
    pub(super) fn start(
        addr: SocketAddr,
        stats: &Arc<JobStats>,
        ready: &Arc<AtomicBool>,
        runtime: &Runtime,
    ) -> Result<Self> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let mut registry = Registry::default();
        register_build_info(&mut registry);
        registry.register_collector(Box::new(JobMetrics(stats.clone())));
        let (registry, ready) = (Arc::new(registry), ready.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    millrace_serving::serve_probes(listener, registry, ready, shutdown).await;
                }
                Err(error) => tracing::error!(%error, "cannot serve the probe port"),
            }
        });
        tracing::info!(addr = %bound, "metrics, health and readiness on /metrics, /healthz, /readyz");
        Ok(Probes { server, shutdown })
    }

    /// Shuts the probe server down and waits for it.
    pub(super) fn stop(self, runtime: &Runtime) {
        let _ = self.shutdown.send(());
        let _ = runtime.block_on(self.server);
    }
}
