//! Model artifacts and what serves them: an artifact's named tensors, architecture and
//! FeatureMap, the copy-on-write quantized tables a served model scores from, and the directory
//! registry that publishes and streams versions.
#![warn(missing_docs)]

pub mod artifact;
mod deep;
mod digests;
pub mod error;
pub mod fixed;
mod header;
pub mod int8;
pub mod registry;
pub mod table;
pub mod topic;

pub use artifact::{ModelArtifact, ModelMeta, ServedModel};
pub use error::{Error, Result};
pub use registry::{LoadPace, Registry, VersionSource};
