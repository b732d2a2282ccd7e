//! What can go wrong with a deep model.

/// An error of a deep model or its training.
#[derive(Debug, thiserror::Error)]
pub enum DeepError {
    /// The spec cannot be trained.
    #[error("the deep model's settings: {}", .0.join("; "))]
    Spec(Vec<String>),
    /// Rows that do not fit the model's layout.
    #[error("rows do not fit the model: {0}")]
    Rows(String),
    /// Training was asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// A device that cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// A collective between ranks failed (a peer gone, or out of step).
    #[error("collective: {0}")]
    Collective(String),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
