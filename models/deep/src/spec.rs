//! What a deep model is: its kind, its sizes and how it is trained.

use millrace_learners::architecture::Architecture;
use millrace_learners::embeddings::{EmbeddingSpec, MAX_LEARNING_RATE};
use serde::{Deserialize, Serialize};

/// The deep model's architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeepKind {
    /// DeepFM (Guo et al., 2017): a linear part, a factorization machine over the fields'
    /// embeddings and an MLP over their concatenation, summed into one logit.
    DeepFm,
    /// DCN-v2 (Wang et al., 2021), stacked: full-rank cross layers over the concatenated
    /// embeddings, then an MLP, then one logit.
    DcnV2,
}

impl DeepKind {
    /// The name in job files and the bench's `--model`: `deepfm` or `dcnv2`.
    pub fn name(self) -> &'static str {
        match self {
            DeepKind::DeepFm => "deepfm",
            DeepKind::DcnV2 => "dcnv2",
        }
    }
}

impl std::str::FromStr for DeepKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deepfm" => Ok(DeepKind::DeepFm),
            "dcnv2" => Ok(DeepKind::DcnV2),
            other => Err(format!("unknown deep model {other:?} (deepfm or dcnv2)")),
        }
    }
}

/// A deep model's sizes and training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepSpec {
    /// The architecture.
    pub model: DeepKind,
    /// Each field's embedding width.
    pub embedding_dim: usize,
    /// The MLP's hidden layer widths.
    pub mlp: Vec<usize>,
    /// DCN-v2's cross layers.
    pub cross_layers: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Rows per step.
    pub batch_size: usize,
    /// Passes over the training rows.
    pub passes: usize,
    /// The seed of the weights' initialization.
    pub seed: u64,
    /// Where the embedding rows live and how they learn.
    pub embeddings: EmbeddingSpec,
    /// Mixed precision on CUDA: the forward pass in fp16 where libtorch's autocast deems it
    /// safe, with dynamic loss scaling; the weights and optimizers stay f32. On the CPU the
    /// model trains in f32 (libtorch's autocast is CUDA's).
    pub mixed_precision: bool,
}

impl Default for DeepSpec {
    fn default() -> Self {
        DeepSpec {
            model: DeepKind::DeepFm,
            embedding_dim: 8,
            mlp: vec![64, 32],
            cross_layers: 2,
            learning_rate: 1e-3,
            batch_size: 1024,
            passes: 1,
            seed: 1,
            embeddings: EmbeddingSpec::default(),
            mixed_precision: false,
        }
    }
}

impl DeepSpec {
    /// The architecture descriptor of this model over `fields` fields, as an artifact records
    /// it.
    pub fn architecture(&self, fields: usize) -> Architecture {
        match self.model {
            DeepKind::DeepFm => Architecture::DeepFm {
                fields,
                embedding_dim: self.embedding_dim,
                mlp: self.mlp.clone(),
            },
            DeepKind::DcnV2 => Architecture::DcnV2 {
                fields,
                embedding_dim: self.embedding_dim,
                cross_layers: self.cross_layers,
                mlp: self.mlp.clone(),
            },
        }
    }

    /// Problems of the values, each naming its key; empty when it can be trained.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.embedding_dim == 0 {
            problems.push("`embedding_dim` must be >= 1".to_owned());
        }
        if self.mlp.contains(&0) {
            problems.push(format!("`mlp` widths must be >= 1 (got {:?})", self.mlp));
        }
        // libtorch's Adam refuses (panics on) a step size past what an f32 holds.
        if !(self.learning_rate > 0.0 && self.learning_rate <= MAX_LEARNING_RATE) {
            problems.push(format!(
                "`learning_rate` must be in (0, {MAX_LEARNING_RATE}] (got {})",
                self.learning_rate
            ));
        }
        if self.batch_size == 0 {
            problems.push("`batch_size` must be >= 1".to_owned());
        }
        if self.passes == 0 {
            problems.push("`passes` must be >= 1".to_owned());
        }
        problems.extend(self.embeddings.problems());
        problems
    }
}
