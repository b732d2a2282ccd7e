//! The engine's error type.

use std::path::PathBuf;

/// Errors of the engine: configuration, start-up and the job's components.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job spec has problems; all of them are listed.
    #[error("invalid job spec:\n  - {}", problems.join("\n  - "))]
    Config {
        /// Every problem found, each naming its section and key.
        problems: Vec<String>,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A connector failed.
    #[error(transparent)]
    Connector(#[from] millrace_connectors::Error),
    /// The model registry failed.
    #[error(transparent)]
    Model(#[from] millrace_models::Error),
    /// The serving address could not be bound.
    #[error("binding the serving address {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint store could not be opened or restored from.
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    /// The dataflow could not start or a worker failed.
    #[error("dataflow: {0}")]
    Dataflow(String),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
