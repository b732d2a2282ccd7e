//! How a step changes the embedding rows, by where they live and how they learn.

use crate::adam::Adam;
use crate::error::DeepError;
use crate::host::{HostTable, Unique, ADAGRAD_EPSILON};
use crate::model::DeepModel;
use crate::spec::DeepSpec;
use millrace_learners::embeddings::{Placement, SparseOptimizer};
use tch::nn;
use tch::{Kind, Tensor};

/// The embedding rows' optimizer (and, for the host placement, the rows themselves).
#[derive(Debug)]
pub(crate) enum Rows {
    /// The model's device table, by Adam.
    DeviceAdam(Adam),
    /// The model's device table, by row-wise AdaGrad.
    DeviceAdagrad(DeviceAdagrad),
    /// The host-resident table.
    Host(Box<HostTable>),
}

impl Rows {
    /// The rows' optimizer for `model`, made by `spec`.
    pub(crate) fn new(spec: &DeepSpec, model: &DeepModel) -> Result<Self, DeepError> {
        let settings = &spec.embeddings;
        Ok(match (model.table(), settings.optimizer) {
            (Some(table), SparseOptimizer::Adam) => {
                Rows::DeviceAdam(Adam::new(table, spec.learning_rate)?)
            }
            (Some(table), SparseOptimizer::RowwiseAdagrad) => {
                Rows::DeviceAdagrad(DeviceAdagrad::new(table, settings.learning_rate))
            }
            (None, _) => {
                debug_assert_eq!(settings.placement, Placement::Host);
                Rows::Host(Box::new(HostTable::new(spec)?))
            }
        })
    }
}

/// Row-wise AdaGrad over tables on the device: the same arithmetic as the host table's, on the
/// rows a step touched.
#[derive(Debug)]
pub(crate) struct DeviceAdagrad {
    /// Each table's weights and per-row accumulators.
    tables: Vec<(Tensor, Tensor)>,
    rate: f64,
}

impl DeviceAdagrad {
    fn new(table: &nn::VarStore, rate: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = table.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let tables = vars
            .into_iter()
            .map(|(_, w)| {
                let accum = Tensor::zeros([w.size()[0]], (Kind::Float, w.device()));
                (w, accum)
            })
            .collect();
        DeviceAdagrad { tables, rate }
    }

    /// Steps the rows of `unique` by their gradients, and clears the gradients.
    pub(crate) fn step(&mut self, unique: &Unique) {
        self.step_rows(|weights| Tensor::from_slice(&unique.slots).to(weights.device()));
    }

    /// Steps every row with a gradient that is not zero (the rows any rank's step touched,
    /// once the gradients are summed: a touched row with a zero gradient would not move), and
    /// clears the gradients.
    pub(crate) fn step_touched(&mut self) {
        self.step_rows(|weights| {
            weights
                .grad()
                .abs()
                .sum_dim_intlist(Some(&[1i64][..]), false, Kind::Float)
                .nonzero()
                .squeeze_dim(1)
        });
    }

    fn step_rows(&mut self, rows_of: impl Fn(&Tensor) -> Tensor) {
        tch::no_grad(|| {
            for (weights, accum) in &mut self.tables {
                let mut grad = weights.grad();
                if !grad.defined() {
                    continue;
                }
                let rows = rows_of(weights);
                let g = grad.index_select(0, &rows);
                let mean = g.square().mean_dim(Some(&[1i64][..]), false, Kind::Float);
                let acc = accum.index_select(0, &rows) + mean;
                let _ = accum.index_copy_(0, &rows, &acc);
                let scale = (acc.sqrt() + f64::from(ADAGRAD_EPSILON)).reciprocal() * self.rate;
                let _ = weights.index_add_(0, &rows, &(-(g * scale.unsqueeze(1))));
                let _ = grad.zero_();
            }
        });
    }
}
