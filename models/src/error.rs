//! The crate's error type.

use std::path::PathBuf;

/// Errors of the model crate: loading, validating and publishing model artifacts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the registry could not be read or written.
    #[error("registry i/o on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model artifact is malformed or inconsistent; the message says how.
    #[error("invalid model artifact {path}: {reason}")]
    InvalidArtifact {
        /// The artifact's directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model name that cannot name a registry directory.
    #[error("invalid model name `{0}`: use letters, digits, `-` and `_`")]
    InvalidModelName(String),
    /// The registry holds no version of the model.
    #[error("model `{0}` has no published version")]
    NoVersion(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidArtifact {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
