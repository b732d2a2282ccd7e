//! Evaluation: streaming AUC and log-loss for progressive validation, and exact AUC for holdouts.

use crate::ftrl::EPS;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Number of probability bins of [`AucAccumulator`]; its AUC is exact up to ties within a bin
/// (a bin is 1/65536 wide).
pub const AUC_BINS: usize = 1 << 16;

/// A mergeable streaming AUC: positive and negative counts per probability bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AucAccumulator {
    positives: Vec<u64>,
    negatives: Vec<u64>,
}

impl Default for AucAccumulator {
    fn default() -> Self {
        AucAccumulator {
            positives: vec![0; AUC_BINS],
            negatives: vec![0; AUC_BINS],
        }
    }
}

impl AucAccumulator {
    /// Records one prediction and its label.
    pub fn add(&mut self, prediction: f32, label: bool) {
        self.add_bin(bin(prediction), label);
    }

    fn add_bin(&mut self, bin: usize, label: bool) {
        if label {
            self.positives[bin] += 1;
        } else {
            self.negatives[bin] += 1;
        }
    }

    fn remove_bin(&mut self, bin: usize, label: bool) {
        let counts = if label {
            &mut self.positives
        } else {
            &mut self.negatives
        };
        counts[bin] = counts[bin].saturating_sub(1);
    }

    /// Adds another accumulator's counts to this one.
    pub fn merge(&mut self, other: &AucAccumulator) {
        for (a, b) in self.positives.iter_mut().zip(&other.positives) {
            *a += b;
        }
        for (a, b) in self.negatives.iter_mut().zip(&other.negatives) {
            *a += b;
        }
    }

    /// Number of predictions recorded.
    pub fn count(&self) -> u64 {
        self.positives.iter().sum::<u64>() + self.negatives.iter().sum::<u64>()
    }

    /// The area under the ROC curve, or `None` before both classes have been seen.
    pub fn auc(&self) -> Option<f64> {
        let mut negatives_below = 0u64;
        let mut area = 0f64;
        for (&p, &n) in self.positives.iter().zip(&self.negatives) {
            area += p as f64 * (negatives_below as f64 + 0.5 * n as f64);
            negatives_below += n;
        }
        let positives: u64 = self.positives.iter().sum();
        if positives == 0 || negatives_below == 0 {
            return None;
        }
        Some(area / (positives as f64 * negatives_below as f64))
    }
}

/// The probability bin of a prediction.
fn bin(prediction: f32) -> usize {
    ((prediction.clamp(0.0, 1.0) * (AUC_BINS - 1) as f32).round() as usize).min(AUC_BINS - 1)
}

/// The AUC of the most recent `window` predictions, for progressive validation of a drifting
/// stream: an [`AucAccumulator`] from which the oldest prediction leaves as each new one comes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowedAuc {
    counts: AucAccumulator,
    recent: VecDeque<(u32, bool)>,
    window: usize,
}

impl WindowedAuc {
    /// An empty window of `window` predictions (at least 1).
    pub fn new(window: usize) -> Self {
        WindowedAuc {
            counts: AucAccumulator::default(),
            recent: VecDeque::with_capacity(window.max(1)),
            window: window.max(1),
        }
    }

    /// Records one prediction and its label, forgetting the oldest when the window is full.
    pub fn add(&mut self, prediction: f32, label: bool) {
        if self.recent.len() == self.window {
            if let Some((old, old_label)) = self.recent.pop_front() {
                self.counts.remove_bin(old as usize, old_label);
            }
        }
        let b = bin(prediction);
        self.counts.add_bin(b, label);
        self.recent.push_back((b as u32, label));
    }

    /// The AUC over the window, or `None` before both classes are in it.
    pub fn auc(&self) -> Option<f64> {
        self.counts.auc()
    }

    /// The window's predictions as an accumulator, to merge with other windows.
    pub fn counts(&self) -> &AucAccumulator {
        &self.counts
    }
}

/// A running mean of the logistic loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogLoss {
    sum: f64,
    count: u64,
}

impl LogLoss {
    /// Records one prediction and its label.
    pub fn add(&mut self, prediction: f32, label: bool) {
        let p = f64::from(prediction).clamp(EPS, 1.0 - EPS);
        self.sum -= if label { p.ln() } else { (1.0 - p).ln() };
        self.count += 1;
    }

    /// Adds another running mean's predictions to this one.
    pub fn merge(&mut self, other: &LogLoss) {
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Number of predictions recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean log-loss, or `None` before the first prediction.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// The exact AUC of predictions against labels (ties count one half), or `None` when one class
/// is absent.
pub fn exact_auc(predictions: &[f32], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = predictions
        .iter()
        .copied()
        .zip(labels.iter().copied())
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut area, mut negatives_below, mut positives) = (0f64, 0u64, 0u64);
    let mut start = 0;
    while start < pairs.len() {
        let end = start
            + pairs[start..]
                .iter()
                .take_while(|p| p.0.total_cmp(&pairs[start].0).is_eq())
                .count();
        let pos = pairs[start..end].iter().filter(|p| p.1).count() as u64;
        let neg = (end - start) as u64 - pos;
        area += pos as f64 * (negatives_below as f64 + 0.5 * neg as f64);
        negatives_below += neg;
        positives += pos;
        start = end;
    }
    if positives == 0 || negatives_below == 0 {
        return None;
    }
    Some(area / (positives as f64 * negatives_below as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nan_predictions_are_one_tie_not_an_endless_loop() {
        let auc = exact_auc(&[f32::NAN, 0.2, f32::NAN, 0.9], &[true, false, false, true]);
        assert!(auc.is_some_and(|a| (0.0..=1.0).contains(&a)));
    }

    proptest! {
        /// The window's AUC is the AUC of its last `window` predictions, counted afresh.
        #[test]
        fn windowed_auc_is_the_auc_of_the_last_predictions(
            stream in proptest::collection::vec((0.0f32..=1.0, any::<bool>()), 0..300),
            window in 1usize..50,
        ) {
            let mut windowed = WindowedAuc::new(window);
            for &(p, y) in &stream {
                windowed.add(p, y);
            }
            let mut fresh = AucAccumulator::default();
            for &(p, y) in &stream[stream.len().saturating_sub(window)..] {
                fresh.add(p, y);
            }
            prop_assert_eq!(windowed.auc(), fresh.auc());
        }
    }

    #[test]
    fn the_window_follows_a_model_that_turns_bad() {
        // 1000 well-ranked predictions, then 200 inverted ones: the window of 200 sees only
        // the inverted ones, the cumulative AUC barely moves.
        let (mut windowed, mut cumulative) = (WindowedAuc::new(200), AucAccumulator::default());
        for i in 0..1200 {
            let label = i % 2 == 0;
            let good = if label { 0.9 } else { 0.1 };
            let p = if i < 1000 { good } else { 1.0 - good };
            windowed.add(p, label);
            cumulative.add(p, label);
        }
        assert_eq!(windowed.auc(), Some(0.0));
        assert!(cumulative.auc().unwrap() > 0.8);
    }

    #[test]
    fn perfect_and_inverted() {
        assert_eq!(exact_auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(exact_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(exact_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(exact_auc(&[0.5], &[true]), None);
    }

    #[test]
    fn logloss_of_a_coin() {
        let mut l = LogLoss::default();
        l.add(0.5, true);
        l.add(0.5, false);
        assert!((l.mean().unwrap() - std::f64::consts::LN_2).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn binned_auc_matches_exact_on_distinct_bins(
            pairs in proptest::collection::vec((0u32..AUC_BINS as u32, any::<bool>()), 2..200)
        ) {
            // Predictions at bin centres: the binned AUC is then exact.
            let preds: Vec<f32> = pairs.iter().map(|(b, _)| *b as f32 / (AUC_BINS - 1) as f32).collect();
            let labels: Vec<bool> = pairs.iter().map(|p| p.1).collect();
            let mut acc = AucAccumulator::default();
            let mut half = AucAccumulator::default();
            for (i, (p, y)) in preds.iter().zip(&labels).enumerate() {
                if i % 2 == 0 { acc.add(*p, *y) } else { half.add(*p, *y) }
            }
            acc.merge(&half);
            prop_assert_eq!(acc.count(), pairs.len() as u64);
            match (acc.auc(), exact_auc(&preds, &labels)) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{} vs {}", a, b),
                (a, b) => prop_assert_eq!(a, b),
            }
        }
    }
}
