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
    /// The FeatureMap stored with a model is not the one its metadata names.
    #[error("invalid FeatureMap {path}: {source}")]
    FeatureMap {
        /// The FeatureMap's file, or where the registry topic holds it.
        path: PathBuf,
        /// Why it is not the one named.
        source: StoredMapError,
    },
    /// An artifact of a format this reader cannot read.
    #[error("model artifact {path}: {source}")]
    FormatVersion {
        /// The artifact's metadata.
        path: PathBuf,
        /// Why its format cannot be read.
        source: crate::artifact::FormatVersionError,
    },
    /// A tensor's blocks (from the registry topic) that are not those of its table.
    #[error("model artifact {path}: {source}")]
    Blocks {
        /// Where the registry topic holds the version.
        path: PathBuf,
        /// How the blocks are wrong.
        source: crate::table::BlocksError,
    },
    /// A model name that cannot name a registry directory.
    #[error("invalid model name `{0}`: use letters, digits, `-` and `_`")]
    InvalidModelName(String),
    /// The registry holds no version of the model.
    #[error("model `{0}` has no published version")]
    NoVersion(String),
}

/// Bytes that are not the FeatureMap a model's metadata names ([`crate::artifact::FeatureMapMeta::read`]).
#[derive(Debug, thiserror::Error)]
pub enum StoredMapError {
    /// Their checksum is not the one recorded.
    #[error("FeatureMap checksum mismatch")]
    Checksum,
    /// They are not a FeatureMap's JSON.
    #[error("not a FeatureMap: {0}")]
    Json(#[from] serde_json::Error),
    /// They are another version of the FeatureMap.
    #[error("FeatureMap version {stored} where the metadata names {named}")]
    Version {
        /// The version stored.
        stored: u64,
        /// The version the metadata names.
        named: u64,
    },
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

    /// Whether the same load may succeed when tried again: the process or the host ran out of
    /// something (file descriptors, memory), or a call was interrupted or timed out. A version
    /// that failed for such a reason is tried again; one that failed for what it holds is not.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind::{Interrupted, OutOfMemory, TimedOut, WouldBlock};
        /// ENOMEM, ENFILE and EMFILE on Linux.
        const OUT_OF: [i32; 3] = [12, 23, 24];
        match self {
            Error::Io { source, .. } => {
                matches!(
                    source.kind(),
                    Interrupted | OutOfMemory | TimedOut | WouldBlock
                ) || source
                    .raw_os_error()
                    .is_some_and(|code| OUT_OF.contains(&code))
            }
            _ => false,
        }
    }
}
