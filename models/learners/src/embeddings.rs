//! Where a deep model's embedding rows live, how they learn, and (held in host memory) when a
//! row is made and dropped: the `[retrain]` section's settings of them, which the job checks
//! without linking libtorch.

use serde::{Deserialize, Serialize};

/// The largest learning rate a deep model takes (libtorch's Adam refuses a step size past what
/// an f32 holds).
pub const MAX_LEARNING_RATE: f64 = 1e6;

/// Where a model's embedding rows (and DeepFM's first-order weights) live.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// In the model's tensors on its device, every slot of the layout (`nn::Embedding`).
    #[default]
    Device,
    /// In host memory, a row per id seen (the deep models' host table); each step gathers its batch's
    /// rows onto the device and applies their gradients back on the host.
    Host,
}

/// How the embedding rows learn.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SparseOptimizer {
    /// Adam over the whole table, as the dense weights (what PyTorch's eager peer does).
    #[default]
    Adam,
    /// Row-wise AdaGrad (TorchRec's and FBGEMM's `ROWWISE_ADAGRAD`): one accumulator per row,
    /// the mean of its squared gradients, and only the rows of a step are touched.
    RowwiseAdagrad,
}

/// The embedding rows' placement, optimizer and (host table only) admission and eviction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSpec {
    /// Where the rows live.
    pub placement: Placement,
    /// How they learn (the host table takes row-wise AdaGrad only).
    pub optimizer: SparseOptimizer,
    /// Row-wise AdaGrad's step size.
    pub learning_rate: f64,
    /// Host table: an id gets a row once it has been seen in this many rows (a frequency
    /// filter, counted in a fixed-size sketch); until then its embedding is zero.
    pub min_count: u32,
    /// Host table: a row unseen for this many steps is dropped (0: never).
    pub evict_after_steps: u64,
    /// Host table: at most this many rows; an id past it stays zero until rows are evicted.
    pub max_rows: usize,
}

impl Default for EmbeddingSpec {
    fn default() -> Self {
        EmbeddingSpec {
            placement: Placement::Device,
            optimizer: SparseOptimizer::Adam,
            learning_rate: 0.05,
            min_count: 1,
            evict_after_steps: 0,
            max_rows: 1 << 22,
        }
    }
}

impl EmbeddingSpec {
    /// Problems of the values, each naming its key (as `[retrain.embeddings]` spells it).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let host = self.placement == Placement::Host;
        if host && self.optimizer == SparseOptimizer::Adam {
            problems.push(
                "host-resident embeddings learn by row-wise AdaGrad: `optimizer` must be \
                 \"rowwise_adagrad\""
                    .to_owned(),
            );
        }
        if !host && (self.min_count > 1 || self.evict_after_steps > 0) {
            problems
                .push("`min_count` and `evict_after_steps` need `placement = \"host\"`".to_owned());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= MAX_LEARNING_RATE) {
            problems.push(format!(
                "`learning_rate` must be in (0, {MAX_LEARNING_RATE}] (got {})",
                self.learning_rate
            ));
        }
        if self.min_count == 0 {
            problems.push("`min_count` must be >= 1".to_owned());
        }
        if self.max_rows == 0 || self.max_rows > u32::MAX as usize {
            problems.push(format!(
                "`max_rows` must be 1 to {} (got {})",
                u32::MAX,
                self.max_rows
            ));
        }
        problems
    }
}
