//! FTRL-Proximal logistic regression over sparse rows (McMahan et al., "Ad Click
//! Prediction: a View from the Trenches", KDD 2013, Algorithm 1).
//!
//! The learner keeps two numbers per coordinate, `z` and `n`; the weight is computed lazily from
//! them, so L1 yields exact zeros. [`Ftrl::learn`] predicts before it learns, which is what
//! progressive validation needs.

use crate::row_values::{Ones, RowValues};
use millrace_events::fmap::Transition;
use millrace_events::logistic::sigmoid;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of FTRL-Proximal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FtrlParams {
    /// Learning-rate scale `α`.
    pub alpha: f32,
    /// Learning-rate smoothing `β`.
    pub beta: f32,
    /// L1 regularization `λ1`.
    pub l1: f32,
    /// L2 regularization `λ2`.
    pub l2: f32,
}

impl Default for FtrlParams {
    fn default() -> Self {
        FtrlParams {
            alpha: 0.1,
            beta: 1.0,
            l1: 0.5,
            l2: 1.0,
        }
    }
}

impl FtrlParams {
    /// Problems with the parameters, empty when they are valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let checks = [
            ("alpha", self.alpha, self.alpha > 0.0),
            ("beta", self.beta, self.beta >= 0.0),
            ("l1", self.l1, self.l1 >= 0.0),
            ("l2", self.l2, self.l2 >= 0.0),
        ];
        for (name, value, ok) in checks {
            if !ok || !value.is_finite() {
                let bound = if name == "alpha" { "> 0" } else { ">= 0" };
                problems.push(format!("`{name}` must be finite and {bound} (got {value})"));
            }
        }
        problems
    }
}

/// An FTRL-Proximal logistic-regression learner over `dimension` coordinates.
#[derive(Clone, Debug)]
pub struct Ftrl {
    params: FtrlParams,
    /// `[z, n]` per coordinate, side by side: a row's coordinate costs one cache miss, not two.
    zn: Vec<[f32; 2]>,
    scratch: Vec<f32>,
}

/// Predictions are clamped to `[EPS, 1 - EPS]` so that log-loss stays finite.
pub const EPS: f64 = 1e-7;

impl Ftrl {
    /// A learner with all weights zero.
    pub fn new(params: FtrlParams, dimension: usize) -> Self {
        Ftrl {
            params,
            zn: vec![[0.0; 2]; dimension],
            scratch: Vec::new(),
        }
    }

    /// The learner's hyper-parameters.
    pub fn params(&self) -> &FtrlParams {
        &self.params
    }

    /// Number of coordinates.
    pub fn dimension(&self) -> usize {
        self.zn.len()
    }

    #[inline]
    fn weight(&self, i: usize) -> f32 {
        let [z, n] = self.zn[i];
        let FtrlParams {
            alpha,
            beta,
            l1,
            l2,
        } = self.params;
        if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)
        }
    }

    /// The click probability of a row of binary features.
    ///
    /// # Panics
    ///
    /// If an index is not below [`Ftrl::dimension`].
    pub fn predict(&self, row: &[u32]) -> f32 {
        sigmoid(self.predict_margin(row, Ones))
    }

    /// The click probability of a row with a value per index (a [`millrace_events::CsrBatch`] row).
    ///
    /// # Panics
    ///
    /// If an index is not below [`Ftrl::dimension`] or `values` is shorter than `indices`.
    pub fn predict_weighted(&self, indices: &[u32], values: &[f32]) -> f32 {
        sigmoid(self.predict_margin(indices, values))
    }

    /// The linear margin of a row (the log-odds before the sigmoid).
    pub(crate) fn predict_margin(&self, row: &[u32], values: impl RowValues) -> f32 {
        row.iter()
            .enumerate()
            .map(|(k, &i)| self.weight(i as usize) * values.at(k))
            .sum()
    }

    /// Predicts the row, then learns from its label; returns the prediction made before learning.
    ///
    /// # Panics
    ///
    /// If an index is not below [`Ftrl::dimension`].
    pub fn learn(&mut self, row: &[u32], label: bool) -> f32 {
        self.learn_values(row, Ones, label)
    }

    /// [`Ftrl::learn`] for a row with a value per index: coordinate `i` with value `x` sees the
    /// gradient `g·x`.
    ///
    /// # Panics
    ///
    /// If an index is not below [`Ftrl::dimension`] or `values` is shorter than `indices`.
    pub fn learn_weighted(&mut self, indices: &[u32], values: &[f32], label: bool) -> f32 {
        self.learn_values(indices, values, label)
    }

    fn learn_values(&mut self, row: &[u32], values: impl RowValues, label: bool) -> f32 {
        let p = sigmoid(self.margin(row, values));
        self.apply(row, values, p - if label { 1.0 } else { 0.0 });
        p
    }

    /// The linear margin of a row, remembering each coordinate's weight for the next
    /// [`Ftrl::apply`] on the same row.
    pub(crate) fn margin(&mut self, row: &[u32], values: impl RowValues) -> f32 {
        self.scratch.clear();
        let mut margin = 0.0;
        for (k, &i) in row.iter().enumerate() {
            let w = self.weight(i as usize);
            self.scratch.push(w);
            margin += w * values.at(k);
        }
        margin
    }

    /// One FTRL step with loss gradient `g` (w.r.t. the margin) on the row last given to
    /// [`Ftrl::margin`].
    pub(crate) fn apply(&mut self, row: &[u32], values: impl RowValues, g: f32) {
        let alpha = self.params.alpha;
        for (k, (&i, &w)) in row.iter().zip(&self.scratch).enumerate() {
            let i = i as usize;
            let gi = g * values.at(k);
            let g2 = gi * gi;
            let [z, n] = &mut self.zn[i];
            let sigma = ((*n + g2).sqrt() - n.sqrt()) / alpha;
            *z += gi - sigma * w;
            *n += g2;
        }
    }

    /// Carries the learner to the next FeatureMap version: a moved slot starts from its old
    /// slot's state, a reset slot from nothing. Slots outside the dimension are ignored.
    pub fn carry(&mut self, transition: &Transition) {
        let dim = self.dimension();
        let old: Vec<(usize, [f32; 2])> = transition
            .moved
            .iter()
            .filter(|(new, old)| (*new as usize) < dim && (*old as usize) < dim)
            .map(|&(new, old)| (new as usize, self.zn[old as usize]))
            .collect();
        for (slot, zn) in old {
            self.zn[slot] = zn;
        }
        for &slot in &transition.reset {
            if let Some(zn) = self.zn.get_mut(slot as usize) {
                *zn = [0.0; 2];
            }
        }
    }

    /// Numbers of state per coordinate: `z` and `n`.
    pub(crate) const STATE_WIDTH: usize = 2;

    /// Coordinate `i`'s state, `[z, n]`, into `out`.
    pub(crate) fn read_state(&self, i: usize, out: &mut [f32]) {
        out[..2].copy_from_slice(&self.zn[i]);
    }

    /// Sets coordinate `i`'s state from `[z, n]`.
    pub(crate) fn write_state(&mut self, i: usize, state: &[f32]) {
        self.zn[i] = [state[0], state[1]];
    }

    /// The current weights of all coordinates (zero where L1 keeps them at zero).
    pub fn weights(&self) -> Vec<f32> {
        (0..self.dimension()).map(|i| self.weight(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct transcription of the paper's Algorithm 1 in f64, one coordinate at a time, with
    /// a value per index (the gradient of coordinate `i` is `g·x_i`).
    fn reference(params: FtrlParams, dim: usize, rows: &[Example]) -> (Vec<f64>, Vec<f64>) {
        let (a, b, l1, l2) = (
            f64::from(params.alpha),
            f64::from(params.beta),
            f64::from(params.l1),
            f64::from(params.l2),
        );
        let (mut z, mut n) = (vec![0f64; dim], vec![0f64; dim]);
        let mut preds = Vec::new();
        for (row, x, y) in rows {
            let w: Vec<f64> = row
                .iter()
                .map(|&i| {
                    let i = i as usize;
                    if z[i].abs() <= l1 {
                        0.0
                    } else {
                        -(z[i] - z[i].signum() * l1) / ((b + n[i].sqrt()) / a + l2)
                    }
                })
                .collect();
            let margin: f64 = w.iter().zip(x).map(|(w, x)| w * f64::from(*x)).sum();
            let p = 1.0 / (1.0 + (-margin).exp());
            preds.push(p);
            let g = p - if *y { 1.0 } else { 0.0 };
            for ((&i, wi), xi) in row.iter().zip(w).zip(x) {
                let i = i as usize;
                let gi = g * f64::from(*xi);
                let sigma = ((n[i] + gi * gi).sqrt() - n[i].sqrt()) / a;
                z[i] += gi - sigma * wi;
                n[i] += gi * gi;
            }
        }
        (z, preds)
    }

    /// Indices, their values, the label.
    type Example = (Vec<u32>, Vec<f32>, bool);

    /// Seeded rows of 5 indices below `dim`; values 1 when `binary`, else in [-2, 2).
    fn examples(dim: usize, binary: bool) -> Vec<Example> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        (0..2000)
            .map(|_| {
                let row: Vec<u32> = (0..5).map(|_| rng.random_range(0..dim as u32)).collect();
                let x: Vec<f32> = (0..5)
                    .map(|_| {
                        if binary {
                            1.0
                        } else {
                            rng.random_range(-2.0..2.0)
                        }
                    })
                    .collect();
                let y = (row[0] % 3 == 0) ^ rng.random_bool(0.1);
                (row, x, y)
            })
            .collect()
    }

    fn assert_matches_reference(binary: bool) {
        let dim = 64;
        let rows = examples(dim, binary);
        let params = FtrlParams::default();
        let mut ftrl = Ftrl::new(params, dim);
        let preds: Vec<f32> = rows
            .iter()
            .map(|(r, x, y)| {
                if binary {
                    ftrl.learn(r, *y)
                } else {
                    ftrl.learn_weighted(r, x, *y)
                }
            })
            .collect();
        let (z, ref_preds) = reference(params, dim, &rows);
        for (p, q) in preds.iter().zip(&ref_preds) {
            assert!((f64::from(*p) - q).abs() < 1e-4, "{p} vs {q}");
        }
        for ([a, _], b) in ftrl.zn.iter().zip(&z) {
            assert!(
                (f64::from(*a) - b).abs() < 1e-2 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
        let (r, x, _) = &rows[0];
        let weighted = ftrl.predict_weighted(r, x);
        let margin: f32 = r
            .iter()
            .zip(x)
            .map(|(&i, x)| ftrl.weight(i as usize) * x)
            .sum();
        assert!((weighted - sigmoid(margin)).abs() < 1e-6);
    }

    #[test]
    fn matches_the_papers_algorithm() {
        assert_matches_reference(true);
    }

    #[test]
    fn weighted_rows_match_the_papers_algorithm() {
        assert_matches_reference(false);
    }

    #[test]
    fn carries_moved_slots_and_resets_new_ones() {
        let mut ftrl = Ftrl::new(FtrlParams::default(), 6);
        for _ in 0..200 {
            ftrl.learn(&[0, 1, 2], true);
            ftrl.learn(&[0, 3], false);
        }
        let before = ftrl.weights();
        assert!(before[1] != 0.0 && before[3] != 0.0);
        // Bucket 4 continues bucket 1, bucket 1 continues bucket 3; slot 2 got a new value.
        ftrl.carry(&Transition {
            moved: vec![(4, 1), (1, 3), (99, 0)],
            reset: vec![2, 98],
        });
        let after = ftrl.weights();
        assert_eq!(after[4], before[1]);
        assert_eq!(after[1], before[3]);
        assert_eq!((after[0], after[2], after[3]), (before[0], 0.0, before[3]));
        assert_eq!(ftrl.zn[2], [0.0, 0.0]);
    }

    #[test]
    fn learns_a_separable_signal() {
        let mut ftrl = Ftrl::new(FtrlParams::default(), 4);
        for _ in 0..2000 {
            ftrl.learn(&[0, 1], true);
            ftrl.learn(&[0, 2], false);
        }
        assert!(ftrl.predict(&[0, 1]) > 0.9);
        assert!(ftrl.predict(&[0, 2]) < 0.1);
        assert_eq!(ftrl.weights()[3], 0.0);
    }

    #[test]
    fn reports_every_bad_parameter() {
        let params = FtrlParams {
            alpha: 0.0,
            beta: -1.0,
            l1: f32::NAN,
            l2: 1.0,
        };
        assert_eq!(params.problems().len(), 3);
    }
}
