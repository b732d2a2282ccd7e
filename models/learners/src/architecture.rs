//! What a model is made of: an architecture descriptor (the model's type and hyper-parameters)
//! and the named tensors it declares. An artifact holds the descriptor and the tensors, so a
//! new kind of model is a new descriptor with its tensors and its scoring, and the registries,
//! quantization and validation carry it without knowing what it is.

use serde::{Deserialize, Serialize};

/// The type of a model and the hyper-parameters that decide its tensors' shapes, as an
/// artifact's metadata records it (`"architecture": {"type": "factorization_machine",
/// "factors": 8}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// Logistic regression (trained with FTRL-Proximal): one weight per feature slot. (A
    /// variant with braces, so that a key it does not have is refused.)
    LogisticRegression {},
    /// A second-order factorization machine: one weight and `factors` latent factors per slot.
    FactorizationMachine {
        /// Latent factors per slot.
        factors: usize,
    },
    /// DeepFM over a FeatureMap's fields (`millrace-deep`): an embedding and a linear weight
    /// per slot; an entry adds its slot's embedding times its value to its field's; a
    /// factorization machine over the fields' embeddings and an MLP over their concatenation.
    /// Its tensors bear the names PyTorch's `state_dict` of the same model gives them.
    DeepFm {
        /// The FeatureMap's features (the model's fields).
        fields: usize,
        /// Each field's embedding width.
        embedding_dim: usize,
        /// The MLP's hidden widths (each followed by a ReLU).
        mlp: Vec<usize>,
    },
    /// DCN-v2, stacked, over a FeatureMap's fields (`millrace-deep`): an embedding per slot,
    /// summed per field as DeepFM's; `cross_layers` full-rank cross layers over the fields'
    /// concatenated embeddings, then an MLP, then one logit.
    DcnV2 {
        /// The FeatureMap's features (the model's fields).
        fields: usize,
        /// Each field's embedding width.
        embedding_dim: usize,
        /// Cross layers.
        cross_layers: usize,
        /// The MLP's hidden widths (each followed by a ReLU).
        mlp: Vec<usize>,
    },
}

/// What the forward pass of a deep architecture needs: its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeepShape<'a> {
    /// DeepFM (a linear part and an FM) rather than DCN-v2.
    pub deepfm: bool,
    /// Fields.
    pub fields: usize,
    /// Each field's embedding width.
    pub embedding_dim: usize,
    /// DCN-v2's cross layers (0 for DeepFM).
    pub cross_layers: usize,
    /// The MLP's hidden widths.
    pub mlp: &'a [usize],
}

/// The most fields a deep architecture has.
pub const MAX_FIELDS: usize = 1024;
/// The widest embedding of a deep architecture.
pub const MAX_EMBEDDING_DIM: usize = 256;
/// The widest concatenation of embeddings (fields × width), which DCN-v2's cross layers square.
pub const MAX_DEEP_WIDTH: usize = 4096;
/// The widest MLP layer.
pub const MAX_MLP_WIDTH: usize = 4096;
/// The most MLP layers, and the most cross layers.
pub const MAX_LAYERS: usize = 8;

/// The name and shape of one tensor an architecture declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name, unique in its model (`weights`, `factors`, …).
    pub name: String,
    /// Its shape: rows first, then the shape of one row (empty for a vector).
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// The number of rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The numbers per row (the product of the other dimensions; 1 for a vector). `None` when
    /// the product overflows.
    pub fn width(&self) -> Option<usize> {
        row_width(&self.shape)
    }
}

/// The numbers per row of a tensor of `shape`: the product of all but the first dimension (1
/// for a vector), `None` when it overflows.
pub fn row_width(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .skip(1)
        .try_fold(1usize, |product, &d| product.checked_mul(d))
}

/// The numbers in a tensor of `shape`, `None` when the product overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |product, &d| product.checked_mul(d))
}

/// The most latent factors per slot a factorization machine has (as its learner allows).
pub const MAX_FACTORS: usize = 256;

/// The name of the per-slot weight vector of logistic regression and factorization machines.
pub const WEIGHTS: &str = "weights";

/// The name of a factorization machine's latent factors, a row per slot.
pub const FACTORS: &str = "factors";

impl Architecture {
    /// The tensors a model of this architecture over `dimension` feature slots is made of, in
    /// the order an artifact holds them.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_learners::architecture::Architecture;
    ///
    /// let fm = Architecture::FactorizationMachine { factors: 8 }.tensors(1024);
    /// let shapes: Vec<_> = fm.iter().map(|t| (t.name.as_str(), t.shape.clone())).collect();
    /// assert_eq!(shapes, [("weights", vec![1024]), ("factors", vec![1024, 8])]);
    /// ```
    pub fn tensors(&self, dimension: usize) -> Vec<TensorSpec> {
        let weights = TensorSpec {
            name: WEIGHTS.to_owned(),
            shape: vec![dimension],
        };
        match (self, self.deep()) {
            (_, Some(deep)) => deep.tensors(dimension),
            (Architecture::FactorizationMachine { factors }, None) => vec![
                weights,
                TensorSpec {
                    name: FACTORS.to_owned(),
                    shape: vec![dimension, *factors],
                },
            ],
            _ => vec![weights],
        }
    }

    /// The sizes of a deep architecture; `None` for the others.
    pub fn deep(&self) -> Option<DeepShape<'_>> {
        match self {
            Architecture::DeepFm {
                fields,
                embedding_dim,
                mlp,
            } => Some(DeepShape {
                deepfm: true,
                fields: *fields,
                embedding_dim: *embedding_dim,
                cross_layers: 0,
                mlp,
            }),
            Architecture::DcnV2 {
                fields,
                embedding_dim,
                cross_layers,
                mlp,
            } => Some(DeepShape {
                deepfm: false,
                fields: *fields,
                embedding_dim: *embedding_dim,
                cross_layers: *cross_layers,
                mlp,
            }),
            _ => None,
        }
    }

    /// Problems with the hyper-parameters, empty when they are valid: what a learner could
    /// have trained (so that an artifact read from outside cannot ask for tensors of any size).
    pub fn problems(&self) -> Vec<String> {
        match (self, self.deep()) {
            (_, Some(deep)) => deep.problems(),
            (Architecture::FactorizationMachine { factors }, None)
                if !(1..=MAX_FACTORS).contains(factors) =>
            {
                vec![format!(
                    "a factorization machine has 1 to {MAX_FACTORS} factors per slot (got {factors})"
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// The name of a deep model's embedding table, a row per slot.
pub const EMBEDDING: &str = "embedding.weight";
/// The name of DeepFM's linear weights, a row of one per slot.
pub const LINEAR: &str = "linear.weight";

impl DeepShape<'_> {
    /// The width of the fields' concatenated embeddings.
    pub fn width(&self) -> usize {
        self.fields.saturating_mul(self.embedding_dim)
    }

    /// The input width of each MLP layer, then of the output layer.
    pub fn layer_inputs(&self) -> Vec<usize> {
        std::iter::once(self.width())
            .chain(self.mlp.iter().copied())
            .collect()
    }

    fn tensors(&self, dimension: usize) -> Vec<TensorSpec> {
        let spec = |name: String, shape: Vec<usize>| TensorSpec { name, shape };
        let width = self.width();
        let mut tensors = vec![spec(
            EMBEDDING.to_owned(),
            vec![dimension, self.embedding_dim],
        )];
        if self.deepfm {
            tensors.push(spec(LINEAR.to_owned(), vec![dimension, 1]));
        }
        for l in 0..self.cross_layers {
            tensors.push(spec(format!("cross.{l}.weight"), vec![width, width]));
            tensors.push(spec(format!("cross.{l}.bias"), vec![width]));
        }
        let inputs = self.layer_inputs();
        for (l, &out) in self.mlp.iter().enumerate() {
            tensors.push(spec(format!("mlp.{}.weight", 2 * l), vec![out, inputs[l]]));
            tensors.push(spec(format!("mlp.{}.bias", 2 * l), vec![out]));
        }
        let last = inputs.last().copied().unwrap_or(width);
        tensors.push(spec("out.weight".to_owned(), vec![1, last]));
        tensors.push(spec("out.bias".to_owned(), vec![1]));
        tensors
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_FIELDS).contains(&self.fields) {
            problems.push(format!(
                "a deep model has 1 to {MAX_FIELDS} fields (got {})",
                self.fields
            ));
        }
        if !(1..=MAX_EMBEDDING_DIM).contains(&self.embedding_dim) {
            problems.push(format!(
                "a deep model's embeddings are 1 to {MAX_EMBEDDING_DIM} wide (got {})",
                self.embedding_dim
            ));
        }
        if self.width() > MAX_DEEP_WIDTH {
            problems.push(format!(
                "a deep model's fields × embedding width is at most {MAX_DEEP_WIDTH} (got {})",
                self.width()
            ));
        }
        if self.mlp.len() > MAX_LAYERS || self.cross_layers > MAX_LAYERS {
            problems.push(format!(
                "a deep model has at most {MAX_LAYERS} MLP and {MAX_LAYERS} cross layers"
            ));
        }
        if self.mlp.iter().any(|&w| !(1..=MAX_MLP_WIDTH).contains(&w)) {
            problems.push(format!(
                "a deep model's MLP layers are 1 to {MAX_MLP_WIDTH} wide (got {:?})",
                self.mlp
            ));
        }
        problems
    }
}
