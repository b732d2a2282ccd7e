//! The options of the HTTP server: limits, timeouts, batching, TLS, the admin token.

use crate::batch::BatchOptions;
use prometheus_client::collector::Collector;
use std::sync::Arc;
use std::time::Duration;

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
    /// More metrics on `/metrics` (the job's own when serving in-process).
    pub extra_metrics: Option<Arc<dyn Collector>>,
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

/// Shadow scorings that run at once unless told otherwise.
pub const DEFAULT_MAX_SHADOW_IN_FLIGHT: usize = 16;

/// The header whose value routes a request to an arm of a traffic split: the same key always
/// goes to the same arm (sticky per user).
pub const KEY_HEADER: &str = "x-millrace-key";
