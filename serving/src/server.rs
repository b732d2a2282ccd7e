//! The HTTP server around the API's routes: its connections bounded in number and in the
//! time a client may take to send a request's headers, so that slow or idle clients
//! (slowloris) cannot hold the server; and the loader thread that follows the registry.
//!
//! warp's own server (hyper's automatic HTTP/1 and HTTP/2 builder without a timer) has neither
//! bound, so connections are served here with hyper's HTTP/1 builder: a header-read timeout
//! (which also closes a connection that stays idle between requests that long), and a cap on
//! open connections past which a new one is closed at once and counted. With TLS, a client
//! has as long for its handshake as for its headers; a failed handshake is counted.

use crate::api::routes;
use crate::options::ServeOptions;
use crate::stats::ServingStats;
use crate::store::ModelStore;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use warp::{Filter, Reply};

/// Serves `store` on `listener` until `shutdown` completes, refreshing the store from its
/// registry every `options.poll_interval` on a loader thread of the lowest priority. On
/// shutdown it stops accepting, lets the requests in progress finish, and returns.
pub async fn serve(
    store: Arc<ModelStore>,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let (store, stop) = (store.clone(), stop.clone());
        let interval = options.poll_interval;
        std::thread::Builder::new()
            .name("millrace-loader".to_owned())
            .spawn(move || {
                lower_priority();
                while !stop.load(Ordering::Relaxed) {
                    // A panic while loading (a bug) fails that poll, not every later one.
                    let refreshed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.refresh();
                    }));
                    if refreshed.is_err() {
                        tracing::error!("loading versions panicked; trying again at the next poll");
                    }
                    std::thread::sleep(interval);
                }
            })
    };
    if let Err(error) = &loader {
        tracing::error!(%error, "cannot start the loader thread: no new versions will be served");
    }
    let routes = routes(store.clone(), options.clone());
    let what = "requests, answers and the admin token";
    accept(routes, (store, what), listener, &options, shutdown).await;
    stop.store(true, Ordering::Relaxed);
    if let Ok(loader) = loader {
        let _ = tokio::task::spawn_blocking(move || loader.join()).await;
    }
}

/// What holds a server's connection counters.
pub(crate) trait Counters: Send + Sync + 'static {
    /// The counters.
    fn counters(&self) -> &ServingStats;
}

impl Counters for ModelStore {
    fn counters(&self) -> &ServingStats {
        self.stats()
    }
}

impl Counters for ServingStats {
    fn counters(&self) -> &ServingStats {
        self
    }
}

/// Accepts and serves connections to `routes` until `shutdown`, then waits for those open to
/// finish; the connections are counted in `store`'s counters. `what` travels on them, for the
/// warning about plain HTTP beyond loopback.
pub(crate) async fn accept<F, R>(
    routes: F,
    (store, what): (Arc<impl Counters>, &str),
    listener: tokio::net::TcpListener,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    if let Ok(addr) = listener.local_addr() {
        if !addr.ip().is_loopback() && options.tls.is_none() {
            tracing::warn!(%addr, "serving plain HTTP beyond loopback: {what} travel unencrypted (put a TLS proxy in front)");
        }
    }
    let service = warp::service(routes);
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(
        options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    refused_accept(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let stats = store.counters();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        let (watcher, service) = (graceful.watcher(), service.clone());
        let (store, acceptor, timeout) = (store.clone(), acceptor.clone(), options.header_timeout);
        // One connection's requests until it closes, the client's headers taking at most
        // `timeout`; a shutdown lets the request in progress finish. (A macro: the plain and
        // the TLS stream are two types, and warp's service type cannot be named.)
        macro_rules! serve_on {
            ($io:expr) => {{
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .serve_connection(TokioIo::new($io), TowerToHyperService::new(service));
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%error, "a connection ended with an error");
                }
            }};
        }
        tokio::spawn(async move {
            match acceptor {
                None => serve_on!(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_on!(tls),
                        Ok(Err(error)) => {
                            store
                                .counters()
                                .tls_handshakes_failed
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%error, "a TLS handshake failed");
                        }
                        Err(_) => {
                            store
                                .counters()
                                .tls_handshakes_failed
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            store
                .counters()
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Waits out a failed accept: connection errors are the client's and pass; anything else
/// (out of file descriptors) is logged, and accepting pauses a second, as hyper's server did.
async fn refused_accept(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Lowers the calling thread's scheduling priority as far as it goes (Linux: `nice` is per
/// thread), so that loading a version yields the cores to the threads answering requests.
fn lower_priority() {
    #[cfg(unix)]
    if let Err(error) = rustix::process::nice(19) {
        tracing::debug!(%error, "cannot lower the loader thread's priority");
    }
}
