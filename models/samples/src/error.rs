//! What can go wrong with the sample buffer.

use std::path::PathBuf;

/// An error of the sample buffer or its files.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The layout cannot be written as samples.
    #[error("the layout cannot be sampled: {0}")]
    Layout(String),
    /// A batch of rows is inconsistent.
    #[error("rows cannot be sampled: {0}")]
    Rows(String),
    /// A file is not a sample file of the expected shape.
    #[error("not a sample file: {0}")]
    Format(String),
    /// Arrow refused a batch or a file.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A file or directory of the buffer could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl SampleError {
    /// An I/O error at `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SampleError {
        let path = path.into();
        move |source| SampleError::Io { path, source }
    }
}
