//! Serving millrace models over HTTP (warp).
//!
//! A [`ModelStore`] follows a registry directory: it loads and validates each new version in the
//! background and swaps it in atomically (`arc-swap`), so a request is answered entirely by one
//! version, in-flight requests finish on the version they started with, and a version that fails
//! validation is rejected while the previous one keeps serving. [`routes`] is the HTTP API:
//!
//! - `POST /v1/models/{name}:predict` with `{"instances": [{"I1": 3, "C1": "68fd1e64", …}]}`
//!   answers `{"predictions": [0.031, …], "model_version": 7}`; TF Serving's columnar
//!   `{"inputs": {"I1": [3, …], …}}` answers `{"outputs": […]}`; `/versions/{v}:predict` and
//!   `/labels/{stable|canary}:predict` pick the version;
//! - the Open Inference Protocol (v2): `POST /v2/models/{name}[/versions/{v}]/infer` with an
//!   input tensor per schema field, its health, metadata and readiness routes;
//! - `GET /v1/models`, `GET /v1/models/{name}[/metadata]`, `GET /healthz`, `GET /readyz`,
//!   `GET /metrics`.
//!
//! A model of a `map` feature spec scores the rows that [`instance_rows`] makes under the
//! FeatureMap stored with it, with the dataflow's own transform; its vocabulary lookups and
//! misses are counted on `/metrics`.
//!
//! Bad requests get a 4xx with a JSON `{"error": …}` that says why; nothing panics on input.
#![warn(missing_docs)]

mod admin;
mod api;
mod batch;
mod body;
mod columns;
pub mod exposition;
mod holds;
mod metrics;
mod model_api;
mod oip;
mod openapi;
mod options;
mod predict;
mod probes;
mod reply;
mod row_cache;
mod rows;
mod score;
mod server;
mod stats;
mod status;
mod store;
mod tfs;
mod tls;
mod traffic;
mod version;

pub use api::{routes, OPENAPI};
pub use batch::{BatchOptions, DEFAULT_MAX_QUEUE};
pub use oip::{infer_instances, Fields};
pub use options::{ServeOptions, DEFAULT_MAX_SHADOW_IN_FLIGHT, KEY_HEADER};
pub use probes::serve_probes;
pub use rows::{instance_rows, InstanceError};
pub use server::serve;
pub use stats::{BatchStats, ServingStats, VersionStats};
pub use store::{
    AdminError, ModelStore, Precision, RefreshOutcome, DEFAULT_LOAD_CPU_SHARE,
    DEFAULT_ROW_CACHE_ENTRIES,
};
pub use tls::tls_config;
pub use traffic::{Arm, Route, ServedEntry, Traffic, TrafficChange, VersionRef};
pub use version::LoadedVersion;
