//! A second-order factorization machine (Rendle, ICDM 2010) over sparse rows.
//!
//! `margin = Σ w_i·x_i + ½ Σ_f [(Σ_i v_if·x_i)² − Σ_i v_if²·x_i²]`, computed in O(n·k) per
//! row (`x_i` is 1 in a binary row). The linear part learns with FTRL-Proximal (so L1 keeps it
//! sparse), the factors with AdaGrad and L2. Factors
//! start at small pseudo-random values derived from their coordinate, so training is
//! deterministic for a given order of rows. Like [`crate::Ftrl::learn`], [`Fm::learn`] predicts
//! before it learns.

use crate::architecture::MAX_FACTORS;
use crate::ftrl::{Ftrl, FtrlParams};
use crate::row_values::{Ones, RowValues};
use millrace_events::fmap::Transition;
use millrace_events::logistic::sigmoid;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the factorization machine.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FmParams {
    /// Latent factors per feature (`k`).
    pub factors: usize,
    /// FTRL-Proximal learning-rate scale of the linear part.
    pub alpha: f32,
    /// FTRL-Proximal smoothing of the linear part.
    pub beta: f32,
    /// L1 regularization of the linear part.
    pub l1: f32,
    /// L2 regularization of the linear part.
    pub l2: f32,
    /// AdaGrad learning rate of the factors.
    pub factor_learning_rate: f32,
    /// L2 regularization of the factors.
    pub factor_l2: f32,
    /// Standard deviation (roughly) of the initial factors.
    pub init_std: f32,
}

impl Default for FmParams {
    fn default() -> Self {
        let linear = FtrlParams::default();
        FmParams {
            factors: 8,
            alpha: linear.alpha,
            beta: linear.beta,
            l1: linear.l1,
            l2: linear.l2,
            factor_learning_rate: 0.01,
            factor_l2: 1e-4,
            init_std: 0.01,
        }
    }
}

impl FmParams {
    fn linear(&self) -> FtrlParams {
        FtrlParams {
            alpha: self.alpha,
            beta: self.beta,
            l1: self.l1,
            l2: self.l2,
        }
    }

    /// Problems with the parameters, empty when they are valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.linear().problems();
        if !(1..=MAX_FACTORS).contains(&self.factors) {
            problems.push(format!(
                "`factors` must be in 1..={MAX_FACTORS} (got {})",
                self.factors
            ));
        }
        for (name, value) in [
            ("factor_learning_rate", self.factor_learning_rate),
            ("init_std", self.init_std),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                problems.push(format!("`{name}` must be finite and > 0 (got {value})"));
            }
        }
        if !(self.factor_l2 >= 0.0 && self.factor_l2.is_finite()) {
            problems.push(format!(
                "`factor_l2` must be finite and >= 0 (got {})",
                self.factor_l2
            ));
        }
        problems
    }
}

/// The value a factor starts at: small, fixed by its coordinate.
pub(crate) fn initial_factor(index: usize, init_std: f32) -> f32 {
    let x = millrace_events::hash::splitmix64(index as u64);
    // Uniform in [-√3, √3)·std has standard deviation std.
    let unit = (x >> 40) as f32 / (1u64 << 24) as f32;
    (unit * 2.0 - 1.0) * 3f32.sqrt() * init_std
}

/// Rows of `k` latent factors per slot: the trainer's flat table, or a served model's table
/// (`millrace_artifacts::table::Table`).
pub trait FactorRows {
    /// Calls `f` with the `k` factors of `slot`.
    fn with_row<R>(&self, slot: usize, k: usize, f: impl FnOnce(&[f32]) -> R) -> R;
}

impl FactorRows for [f32] {
    #[inline]
    fn with_row<R>(&self, slot: usize, k: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        f(&self[slot * k..(slot + 1) * k])
    }
}

/// The pairwise FM margin of a row, given the factor table and scratch space for the
/// per-factor sums (left holding `Σ_i v_if·x_i`). Shared by the learner and the scoring of
/// served models, so that both compute the same margin.
pub fn pairwise_margin(
    row: &[u32],
    values: impl RowValues,
    factors: &(impl FactorRows + ?Sized),
    k: usize,
    sums: &mut Vec<f32>,
) -> f32 {
    sums.clear();
    sums.resize(k, 0.0);
    let mut squares = 0.0;
    for (j, &i) in row.iter().enumerate() {
        let x = values.at(j);
        factors.with_row(i as usize, k, |v| {
            for (s, &f) in sums.iter_mut().zip(v) {
                let fx = f * x;
                *s += fx;
                squares += fx * fx;
            }
        });
    }
    0.5 * (sums.iter().map(|s| s * s).sum::<f32>() - squares)
}

/// A factorization machine over `dimension` coordinates with `params.factors` factors each.
#[derive(Clone, Debug)]
pub struct Fm {
    params: FmParams,
    linear: Ftrl,
    factors: Vec<f32>,
    squared_gradients: Vec<f32>,
    sums: Vec<f32>,
}

impl Fm {
    /// A machine with zero linear weights and small initial factors.
    pub fn new(params: FmParams, dimension: usize) -> Self {
        let k = params.factors;
        Fm {
            params,
            linear: Ftrl::new(params.linear(), dimension),
            factors: (0..dimension * k)
                .map(|i| initial_factor(i, params.init_std))
                .collect(),
            squared_gradients: vec![0.0; dimension * k],
            sums: Vec::with_capacity(k),
        }
    }

    /// The machine's hyper-parameters.
    pub fn params(&self) -> &FmParams {
        &self.params
    }

    /// Number of coordinates.
    pub fn dimension(&self) -> usize {
        self.linear.dimension()
    }

    /// The click probability of a row of binary features.
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension.
    pub fn predict(&self, row: &[u32]) -> f32 {
        self.predict_values(row, Ones)
    }

    /// The click probability of a row with a value per index (a [`millrace_events::CsrBatch`] row).
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension or `values` is shorter than `indices`.
    pub fn predict_weighted(&self, indices: &[u32], values: &[f32]) -> f32 {
        self.predict_values(indices, values)
    }

    fn predict_values(&self, row: &[u32], values: impl RowValues) -> f32 {
        let mut sums = Vec::with_capacity(self.params.factors);
        let linear = self.linear.predict_margin(row, values);
        sigmoid(
            linear
                + pairwise_margin(
                    row,
                    values,
                    self.factors.as_slice(),
                    self.params.factors,
                    &mut sums,
                ),
        )
    }

    /// Predicts the row, then learns from its label; returns the prediction made before learning.
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension.
    pub fn learn(&mut self, row: &[u32], label: bool) -> f32 {
        self.learn_values(row, Ones, label)
    }

    /// [`Fm::learn`] for a row with a value per index.
    ///
    /// # Panics
    ///
    /// If an index is not below the dimension or `values` is shorter than `indices`.
    pub fn learn_weighted(&mut self, indices: &[u32], values: &[f32], label: bool) -> f32 {
        self.learn_values(indices, values, label)
    }

    fn learn_values(&mut self, row: &[u32], values: impl RowValues, label: bool) -> f32 {
        let k = self.params.factors;
        let linear = self.linear.margin(row, values);
        let pairwise = pairwise_margin(row, values, self.factors.as_slice(), k, &mut self.sums);
        let p = sigmoid(linear + pairwise);
        let g = p - if label { 1.0 } else { 0.0 };
        self.linear.apply(row, values, g);
        let (rate, l2) = (self.params.factor_learning_rate, self.params.factor_l2);
        // ∂margin/∂v_if = x_i·Σ_j v_jf·x_j − v_if·x_i²; the sums are those before the step.
        for (j, &i) in row.iter().enumerate() {
            let x = values.at(j);
            let base = i as usize * k;
            for f in 0..k {
                let v = self.factors[base + f];
                let gradient = g * x * (self.sums[f] - v * x) + l2 * v;
                let acc = self.squared_gradients[base + f] + gradient * gradient;
                self.squared_gradients[base + f] = acc;
                self.factors[base + f] = v - rate * gradient / (acc.sqrt() + 1e-8);
            }
        }
        p
    }

    /// Carries the machine to the next FeatureMap version: a moved slot starts from its old
    /// slot's weight and factors, a reset slot from a fresh one's. Slots outside the dimension
    /// are ignored.
    pub fn carry(&mut self, transition: &Transition) {
        self.linear.carry(transition);
        let k = self.params.factors;
        let dim = self.linear.dimension();
        let rows = |slot: u32| slot as usize * k..(slot as usize + 1) * k;
        let old: Vec<(u32, Vec<f32>, Vec<f32>)> = transition
            .moved
            .iter()
            .filter(|(new, old)| (*new as usize) < dim && (*old as usize) < dim)
            .map(|&(new, old)| {
                let (f, g) = (&self.factors[rows(old)], &self.squared_gradients[rows(old)]);
                (new, f.to_vec(), g.to_vec())
            })
            .collect();
        for (slot, f, g) in old {
            self.factors[rows(slot)].copy_from_slice(&f);
            self.squared_gradients[rows(slot)].copy_from_slice(&g);
        }
        for &slot in transition.reset.iter().filter(|s| (**s as usize) < dim) {
            for i in rows(slot) {
                self.factors[i] = initial_factor(i, self.params.init_std);
                self.squared_gradients[i] = 0.0;
            }
        }
    }

    /// Numbers of state per coordinate: the linear `z` and `n`, then the factors and their
    /// squared-gradient sums.
    pub(crate) fn state_width(&self) -> usize {
        Ftrl::STATE_WIDTH + 2 * self.params.factors
    }

    /// Coordinate `i`'s state (see [`Fm::state_width`]) into `out`.
    pub(crate) fn read_state(&self, i: usize, out: &mut [f32]) {
        let k = self.params.factors;
        let (linear, rest) = out.split_at_mut(Ftrl::STATE_WIDTH);
        self.linear.read_state(i, linear);
        rest[..k].copy_from_slice(&self.factors[i * k..(i + 1) * k]);
        rest[k..2 * k].copy_from_slice(&self.squared_gradients[i * k..(i + 1) * k]);
    }

    /// Sets coordinate `i`'s state (see [`Fm::state_width`]).
    pub(crate) fn write_state(&mut self, i: usize, state: &[f32]) {
        let k = self.params.factors;
        let (linear, rest) = state.split_at(Ftrl::STATE_WIDTH);
        self.linear.write_state(i, linear);
        self.factors[i * k..(i + 1) * k].copy_from_slice(&rest[..k]);
        self.squared_gradients[i * k..(i + 1) * k].copy_from_slice(&rest[k..2 * k]);
    }

    /// The linear weights of all coordinates.
    pub fn weights(&self) -> Vec<f32> {
        self.linear.weights()
    }

    /// The factor table, `dimension × factors`, row-major.
    pub fn factors(&self) -> &[f32] {
        &self.factors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The textbook O(n²k) FM in f64: linear FTRL plus pairwise dot products, with the same
    /// AdaGrad step written from the gradient of each pair.
    struct Reference {
        p: FmParams,
        z: Vec<f64>,
        n: Vec<f64>,
        v: Vec<f64>,
        g2: Vec<f64>,
    }

    impl Reference {
        fn new(p: FmParams, dim: usize) -> Self {
            let k = p.factors;
            Reference {
                p,
                z: vec![0.0; dim],
                n: vec![0.0; dim],
                v: (0..dim * k)
                    .map(|i| f64::from(initial_factor(i, p.init_std)))
                    .collect(),
                g2: vec![0.0; dim * k],
            }
        }

        fn w(&self, i: usize) -> f64 {
            let (a, b, l1, l2) = (
                f64::from(self.p.alpha),
                f64::from(self.p.beta),
                f64::from(self.p.l1),
                f64::from(self.p.l2),
            );
            if self.z[i].abs() <= l1 {
                0.0
            } else {
                -(self.z[i] - self.z[i].signum() * l1) / ((b + self.n[i].sqrt()) / a + l2)
            }
        }

        fn learn(&mut self, row: &[u32], x: &[f32], y: bool) -> f64 {
            let k = self.p.factors;
            let idx: Vec<usize> = row.iter().map(|&i| i as usize).collect();
            let x: Vec<f64> = x.iter().map(|&x| f64::from(x)).collect();
            let w: Vec<f64> = idx.iter().map(|&i| self.w(i)).collect();
            let mut margin: f64 = w.iter().zip(&x).map(|(w, x)| w * x).sum();
            for a in 0..idx.len() {
                for b in a + 1..idx.len() {
                    for f in 0..k {
                        margin += self.v[idx[a] * k + f] * x[a] * self.v[idx[b] * k + f] * x[b];
                    }
                }
            }
            let p = 1.0 / (1.0 + (-margin).exp());
            let g = p - if y { 1.0 } else { 0.0 };
            let alpha = f64::from(self.p.alpha);
            for ((&i, wi), xi) in idx.iter().zip(&w).zip(&x) {
                let gi = g * xi;
                let sigma = ((self.n[i] + gi * gi).sqrt() - self.n[i].sqrt()) / alpha;
                self.z[i] += gi - sigma * wi;
                self.n[i] += gi * gi;
            }
            let old = self.v.clone();
            for (a, &i) in idx.iter().enumerate() {
                for f in 0..k {
                    let others: f64 = idx
                        .iter()
                        .enumerate()
                        .filter(|(b, _)| *b != a)
                        .map(|(b, &j)| old[j * k + f] * x[b])
                        .sum();
                    let grad = g * x[a] * others + f64::from(self.p.factor_l2) * old[i * k + f];
                    self.g2[i * k + f] += grad * grad;
                    self.v[i * k + f] -= f64::from(self.p.factor_learning_rate) * grad
                        / (self.g2[i * k + f].sqrt() + 1e-8);
                }
            }
            p
        }
    }

    fn assert_matches_textbook(binary: bool) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let dim = 50;
        let params = FmParams {
            factors: 4,
            init_std: 0.1,
            ..FmParams::default()
        };
        let (mut fm, mut reference) = (Fm::new(params, dim), Reference::new(params, dim));
        for _ in 0..3000 {
            // Distinct indices: the closed form and the pairwise sum agree only without repeats.
            let mut row: Vec<u32> = Vec::new();
            while row.len() < 6 {
                let i = rng.random_range(0..dim as u32);
                if !row.contains(&i) {
                    row.push(i);
                }
            }
            let x: Vec<f32> = (0..6)
                .map(|_| {
                    if binary {
                        1.0
                    } else {
                        rng.random_range(-1.5..1.5)
                    }
                })
                .collect();
            let y = ((row[0] % 5) == (row[1] % 5)) ^ rng.random_bool(0.05);
            let p = if binary {
                fm.learn(&row, y)
            } else {
                fm.learn_weighted(&row, &x, y)
            };
            let q = reference.learn(&row, &x, y);
            assert!((f64::from(p) - q).abs() < 2e-3, "{p} vs {q}");
        }
        for (a, b) in fm.factors().iter().zip(&reference.v) {
            assert!(
                (f64::from(*a) - b).abs() < 2e-2 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_the_textbook_machine() {
        assert_matches_textbook(true);
    }

    #[test]
    fn weighted_rows_match_the_textbook_machine() {
        assert_matches_textbook(false);
    }

    #[test]
    fn predict_weighted_with_unit_values_is_predict() {
        let mut fm = Fm::new(FmParams::default(), 8);
        for _ in 0..50 {
            fm.learn(&[0, 3, 5], true);
        }
        let (row, ones) = ([0u32, 3, 5, 7], [1.0f32; 4]);
        assert_eq!(fm.predict(&row), fm.predict_weighted(&row, &ones));
        let halved = fm.predict_weighted(&row, &[0.5; 4]);
        assert_ne!(halved, fm.predict(&row));
    }

    #[test]
    fn carries_moved_slots_and_resets_new_ones() {
        let params = FmParams {
            factors: 2,
            ..FmParams::default()
        };
        let mut fm = Fm::new(params, 4);
        for _ in 0..100 {
            fm.learn(&[0, 1], true);
            fm.learn(&[1, 2], false);
        }
        let before = fm.factors().to_vec();
        fm.carry(&Transition {
            moved: vec![(3, 1)],
            reset: vec![2],
        });
        let after = fm.factors();
        assert_eq!(after[6..8], before[2..4]);
        assert_eq!(after[0..4], before[0..4]);
        let fresh = [
            initial_factor(4, params.init_std),
            initial_factor(5, params.init_std),
        ];
        assert_eq!(after[4..6], fresh);
        assert_ne!(before[4..6], fresh);
        assert_eq!(fm.weights()[3], fm.weights()[1]);
    }

    #[test]
    fn learns_an_interaction_a_linear_model_cannot() {
        // Click iff the two fields agree: no linear weight separates it, a pairwise term does.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let params = FmParams {
            init_std: 0.1,
            ..FmParams::default()
        };
        let mut fm = Fm::new(params, 16);
        let mut lr = Ftrl::new(FtrlParams::default(), 16);
        let sample = |rng: &mut rand_chacha::ChaCha8Rng| {
            let (a, b) = (rng.random_range(0..4u32), rng.random_range(0..4u32));
            (vec![a, 4 + b], a == b)
        };
        for _ in 0..30_000 {
            let (row, y) = sample(&mut rng);
            fm.learn(&row, y);
            lr.learn(&row, y);
        }
        let (mut fm_preds, mut lr_preds, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..2000 {
            let (row, y) = sample(&mut rng);
            fm_preds.push(fm.predict(&row));
            lr_preds.push(lr.predict(&row));
            labels.push(y);
        }
        let fm_auc = crate::eval::exact_auc(&fm_preds, &labels).unwrap();
        let lr_auc = crate::eval::exact_auc(&lr_preds, &labels).unwrap();
        assert!(fm_auc > 0.95, "fm auc {fm_auc}");
        assert!(lr_auc < 0.7, "lr auc {lr_auc}");
    }

    #[test]
    fn reports_bad_parameters() {
        let params = FmParams {
            factors: 0,
            init_std: 0.0,
            ..FmParams::default()
        };
        assert_eq!(params.problems().len(), 2);
    }
}
