//! FTRL-Proximal logistic regression over binary sparse rows (McMahan et al., "Ad Click
//! Prediction: a View from the Trenches", KDD 2013, Algorithm 1).
//!
//! The learner keeps two numbers per coordinate, `z` and `n`; the weight is computed lazily from
//! them, so L1 yields exact zeros. [`Ftrl::learn`] predicts before it learns, which is what
//! progressive validation needs.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of FTRL-Proximal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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
            alpha: 0.05,
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
    z: Vec<f32>,
    n: Vec<f32>,
    scratch: Vec<f32>,
}

/// Predictions are clamped to `[EPS, 1 - EPS]` so that log-loss stays finite.
pub const EPS: f64 = 1e-7;

/// The logistic function, with the margin clamped to keep `exp` finite.
pub fn sigmoid(margin: f32) -> f32 {
    1.0 / (1.0 + (-margin.clamp(-35.0, 35.0)).exp())
}

impl Ftrl {
    /// A learner with all weights zero.
    pub fn new(params: FtrlParams, dimension: usize) -> Self {
        Ftrl {
            params,
            z: vec![0.0; dimension],
            n: vec![0.0; dimension],
            scratch: Vec::new(),
        }
    }

    /// The learner's hyper-parameters.
    pub fn params(&self) -> &FtrlParams {
        &self.params
    }

    /// Number of coordinates.
    pub fn dimension(&self) -> usize {
        self.z.len()
    }

    #[inline]
    fn weight(&self, i: usize) -> f32 {
        let z = self.z[i];
        let FtrlParams {
            alpha,
            beta,
            l1,
            l2,
        } = self.params;
        if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((beta + self.n[i].sqrt()) / alpha + l2)
        }
    }

    /// The click probability of a row of binary features.
    ///
    /// # Panics
    ///
    /// If an index is not below [`Ftrl::dimension`].
    pub fn predict(&self, row: &[u32]) -> f32 {
        sigmoid(self.predict_margin(row))
    }

    /// The linear margin of a row (the log-odds before the sigmoid).
    pub(crate) fn predict_margin(&self, row: &[u32]) -> f32 {
        row.iter().map(|&i| self.weight(i as usize)).sum()
    }

    /// Predicts the row, then learns from its label; returns the prediction made before learning.
    ///
    /// # Panics
    ///
    /// If an index is not below [`Ftrl::dimension`].
    pub fn learn(&mut self, row: &[u32], label: bool) -> f32 {
        let p = sigmoid(self.margin(row));
        self.apply(row, p - if label { 1.0 } else { 0.0 });
        p
    }

    /// The linear margin of a row, remembering each coordinate's weight for the next
    /// [`Ftrl::apply`] on the same row.
    pub(crate) fn margin(&mut self, row: &[u32]) -> f32 {
        self.scratch.clear();
        let mut margin = 0.0;
        for &i in row {
            let w = self.weight(i as usize);
            self.scratch.push(w);
            margin += w;
        }
        margin
    }

    /// One FTRL step with loss gradient `g` (w.r.t. the margin) on the row last given to
    /// [`Ftrl::margin`].
    pub(crate) fn apply(&mut self, row: &[u32], g: f32) {
        let g2 = g * g;
        let alpha = self.params.alpha;
        for (&i, &w) in row.iter().zip(&self.scratch) {
            let i = i as usize;
            let n = self.n[i];
            let sigma = ((n + g2).sqrt() - n.sqrt()) / alpha;
            self.z[i] += g - sigma * w;
            self.n[i] = n + g2;
        }
    }

    /// The current weights of all coordinates (zero where L1 keeps them at zero).
    pub fn weights(&self) -> Vec<f32> {
        (0..self.dimension()).map(|i| self.weight(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct transcription of the paper's Algorithm 1 in f64, one coordinate at a time.
    fn reference(
        params: FtrlParams,
        dim: usize,
        rows: &[(Vec<u32>, bool)],
    ) -> (Vec<f64>, Vec<f64>) {
        let (a, b, l1, l2) = (
            f64::from(params.alpha),
            f64::from(params.beta),
            f64::from(params.l1),
            f64::from(params.l2),
        );
        let (mut z, mut n) = (vec![0f64; dim], vec![0f64; dim]);
        let mut preds = Vec::new();
        for (row, y) in rows {
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
            let p = 1.0 / (1.0 + (-w.iter().sum::<f64>()).exp());
            preds.push(p);
            let g = p - if *y { 1.0 } else { 0.0 };
            for (&i, wi) in row.iter().zip(w) {
                let i = i as usize;
                let sigma = ((n[i] + g * g).sqrt() - n[i].sqrt()) / a;
                z[i] += g - sigma * wi;
                n[i] += g * g;
            }
        }
        (z, preds)
    }

    #[test]
    fn matches_the_papers_algorithm() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let dim = 64;
        let rows: Vec<(Vec<u32>, bool)> = (0..2000)
            .map(|_| {
                let row: Vec<u32> = (0..5).map(|_| rng.random_range(0..dim as u32)).collect();
                let y = (row[0] % 3 == 0) ^ rng.random_bool(0.1);
                (row, y)
            })
            .collect();
        let params = FtrlParams::default();
        let mut ftrl = Ftrl::new(params, dim);
        let preds: Vec<f32> = rows.iter().map(|(r, y)| ftrl.learn(r, *y)).collect();
        let (z, ref_preds) = reference(params, dim, &rows);
        for (p, q) in preds.iter().zip(&ref_preds) {
            assert!((f64::from(*p) - q).abs() < 1e-4, "{p} vs {q}");
        }
        for (a, b) in ftrl.z.iter().zip(&z) {
            assert!(
                (f64::from(*a) - b).abs() < 1e-2 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
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
