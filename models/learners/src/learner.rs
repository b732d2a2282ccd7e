//! The online learners behind one interface: what the trainer and the benchmarks hold.

use crate::fm::{Fm, FmParams};
use crate::ftrl::{Ftrl, FtrlParams};
use millrace_events::fmap::Transition;
use serde::{Deserialize, Serialize};

/// Which learner, with its hyper-parameters (`[learner] type = "ftrl" | "fm"` in a job file).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LearnerParams {
    /// FTRL-Proximal logistic regression.
    Ftrl(FtrlParams),
    /// A second-order factorization machine.
    Fm(FmParams),
}

impl LearnerParams {
    /// Problems with the parameters, empty when they are valid.
    pub fn problems(&self) -> Vec<String> {
        match self {
            LearnerParams::Ftrl(params) => params.problems(),
            LearnerParams::Fm(params) => params.problems(),
        }
    }
}

/// An online learner over sparse rows (binary, or with a value per index).
#[derive(Clone, Debug)]
pub enum Learner {
    /// FTRL-Proximal logistic regression.
    Ftrl(Ftrl),
    /// A factorization machine.
    Fm(Fm),
}

impl Learner {
    /// A fresh learner over `dimension` coordinates.
    pub fn new(params: &LearnerParams, dimension: usize) -> Self {
        match params {
            LearnerParams::Ftrl(p) => Learner::Ftrl(Ftrl::new(*p, dimension)),
            LearnerParams::Fm(p) => Learner::Fm(Fm::new(*p, dimension)),
        }
    }

    /// Predicts the row, then learns from its label; returns the prediction made before learning.
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension.
    pub fn learn(&mut self, row: &[u32], label: bool) -> f32 {
        match self {
            Learner::Ftrl(m) => m.learn(row, label),
            Learner::Fm(m) => m.learn(row, label),
        }
    }

    /// The click probability of a row.
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension.
    pub fn predict(&self, row: &[u32]) -> f32 {
        match self {
            Learner::Ftrl(m) => m.predict(row),
            Learner::Fm(m) => m.predict(row),
        }
    }

    /// [`Learner::learn`] for a row with a value per index (a [`millrace_events::CsrBatch`] row).
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension or `values` is shorter than `indices`.
    pub fn learn_weighted(&mut self, indices: &[u32], values: &[f32], label: bool) -> f32 {
        // A binary row (hashed and one-hot ones are) takes the binary path: the same numbers,
        // with the multiplications by 1 left out.
        if values.iter().all(|&x| x == 1.0) {
            return self.learn(indices, label);
        }
        match self {
            Learner::Ftrl(m) => m.learn_weighted(indices, values, label),
            Learner::Fm(m) => m.learn_weighted(indices, values, label),
        }
    }

    /// [`Learner::predict`] for a row with a value per index.
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension or `values` is shorter than `indices`.
    pub fn predict_weighted(&self, indices: &[u32], values: &[f32]) -> f32 {
        if values.iter().all(|&x| x == 1.0) {
            return self.predict(indices);
        }
        match self {
            Learner::Ftrl(m) => m.predict_weighted(indices, values),
            Learner::Fm(m) => m.predict_weighted(indices, values),
        }
    }

    /// Carries the learner's state to the next FeatureMap version (see [`Transition`]).
    pub fn carry(&mut self, transition: &Transition) {
        match self {
            Learner::Ftrl(m) => m.carry(transition),
            Learner::Fm(m) => m.carry(transition),
        }
    }

    /// Number of coordinates.
    pub fn dimension(&self) -> usize {
        match self {
            Learner::Ftrl(m) => m.dimension(),
            Learner::Fm(m) => m.dimension(),
        }
    }

    /// Numbers of state per coordinate, as [`Learner::read_state`] gives them.
    pub fn state_width(&self) -> usize {
        match self {
            Learner::Ftrl(_) => Ftrl::STATE_WIDTH,
            Learner::Fm(m) => m.state_width(),
        }
    }

    /// Coordinate `i`'s whole learning state (not only its weight) into `out`, which holds
    /// [`Learner::state_width`] numbers: what replicas exchange to stay one model.
    ///
    /// # Panics
    ///
    /// If `i` is not below the dimension or `out` is shorter than the state width.
    pub fn read_state(&self, i: u32, out: &mut [f32]) {
        match self {
            Learner::Ftrl(m) => m.read_state(i as usize, out),
            Learner::Fm(m) => m.read_state(i as usize, out),
        }
    }

    /// Sets coordinate `i`'s state from what [`Learner::read_state`] gave.
    ///
    /// # Panics
    ///
    /// If `i` is not below the dimension or `state` is shorter than the state width.
    pub fn write_state(&mut self, i: u32, state: &[f32]) {
        match self {
            Learner::Ftrl(m) => m.write_state(i as usize, state),
            Learner::Fm(m) => m.write_state(i as usize, state),
        }
    }
}
