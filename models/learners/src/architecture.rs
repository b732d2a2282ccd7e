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
}

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
        match *self {
            Architecture::LogisticRegression {} => vec![weights],
            Architecture::FactorizationMachine { factors } => vec![
                weights,
                TensorSpec {
                    name: FACTORS.to_owned(),
                    shape: vec![dimension, factors],
                },
            ],
        }
    }

    /// Problems with the hyper-parameters, empty when they are valid: what a learner could
    /// have trained (so that an artifact read from outside cannot ask for tensors of any size).
    pub fn problems(&self) -> Vec<String> {
        match *self {
            Architecture::FactorizationMachine { factors }
                if !(1..=MAX_FACTORS).contains(&factors) =>
            {
                vec![format!(
                    "a factorization machine has 1 to {MAX_FACTORS} factors per slot (got {factors})"
                )]
            }
            _ => Vec::new(),
        }
    }
}
