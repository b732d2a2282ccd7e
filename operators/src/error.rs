//! The error type of the operators' extension points: a source's reader, where checkpoints
//! are persisted, where published versions are mirrored. Each implementation returns its own
//! error, boxed, so that its type and its causes reach the log whole.

/// An implementation's error, boxed with its causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
