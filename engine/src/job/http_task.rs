//! An HTTP server of the job's, on the job's i/o runtime: a listener bound at start (so that a
//! bad address fails the job before it runs), a task serving it until told to stop.

use crate::error::{Error, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a server is told to stop by.
pub(super) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server running on the job's runtime.
pub(super) struct HttpTask {
    /// The address it listens on.
    pub(super) addr: SocketAddr,
    server: JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

impl HttpTask {
    /// Binds `bind` and runs `serve` on its listener on `runtime`, until the shutdown it is
    /// given completes.
    pub(super) fn start<F, S>(bind: &str, runtime: &Runtime, serve: S) -> Result<Self>
    where
        S: FnOnce(tokio::net::TcpListener, Shutdown) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let bind_error = |source| Error::Bind {
            addr: bind.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(bind).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let stopped: Shutdown = Box::pin(async {
                        let _ = stopped.await;
                    });
                    serve(listener, stopped).await;
                }
                Err(error) => tracing::error!(%error, %addr, "cannot serve"),
            }
        });
        Ok(HttpTask {
            addr,
            server,
            shutdown,
        })
    }

    /// Shuts the server down and waits for it.
    pub(super) fn stop(self, runtime: &Runtime) {
        let _ = self.shutdown.send(());
        let _ = runtime.block_on(self.server);
    }
}
