//! Deep CTR models in libtorch (through `tch`): DeepFM and DCN-v2 over the fields of a
//! FeatureMap layout, trained on the sample buffer's rows, on CUDA when present and on the CPU
//! otherwise. The only crate of millrace that links libtorch; serving never depends on it.
//!
//! - [`DeepSpec`]: the architecture, sizes and training settings;
//! - [`Batch`]: sample rows as tensors (slots, values, rows, cells);
//! - [`DeepModel`]: the weights and the forward pass;
//! - [`Trainer`]: Adam over rows in order, prediction and scoring;
//! - [`HostTable`]: embedding rows in host memory, gathered per step, with row-wise AdaGrad,
//!   a frequency filter and eviction;
//! - [`Gate`]: whether a candidate may replace the served version;
//! - [`parse_device`]: `auto`, `cpu`, `cuda` or `cuda:N`.
#![warn(missing_docs)]

mod adam;
mod batch;
pub mod collective;
mod cuda;
mod device;
mod error;
mod filter;
mod gate;
mod host;
mod model;
mod optim;
mod parallel;
mod scale;
mod spec;
mod train;

pub use batch::Batch;
pub use cuda::init_cuda;
pub use device::{device_name, parse_device, set_threads, Device};
pub use error::DeepError;
pub use gate::{Gate, Verdict};
pub use host::{HostTable, TableStats, Unique};
pub use millrace_learners::embeddings::{EmbeddingSpec, Placement, SparseOptimizer};
pub use model::{slots, DeepModel, EntryRows};
pub use spec::{DeepKind, DeepSpec};
pub use train::{Quality, Trainer};

#[cfg(test)]
mod tests;
