//! A seeded generator of synthetic Criteo-format events with a planted signal.
//!
//! Each categorical field draws from its own vocabulary with a heavy-tailed (log-uniform, roughly
//! Zipf) frequency; each integer field is log-distributed and sometimes missing. The click
//! probability is `sigmoid(bias + Σ w(field, value))`, where `w` is a fixed pseudo-random weight
//! of each value of the informative fields, so a learner that finds those weights reaches a
//! clearly better AUC than chance. The same seed gives the same events on every platform.

use crate::criteo::{CriteoEvent, CriteoFeatures, NUM_CATS, NUM_INTS};
use crate::logistic::sigmoid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Vocabulary sizes of `C1`…`C26`: a mix of small, medium and large fields, as in Criteo.
const VOCAB: [u32; NUM_CATS] = [
    1_400, 550, 100_000, 50_000, 300, 20, 12_000, 600, 3, 40_000, 5_000, 90_000, 3_000, 27, 10_000,
    80_000, 10, 4_000, 2_000, 4, 95_000, 15, 15, 40_000, 100, 30_000,
];
/// The categorical fields that carry signal.
const INFORMATIVE_CATS: [usize; 8] = [0, 1, 4, 5, 7, 13, 16, 19];
/// The integer fields that carry signal.
const INFORMATIVE_INTS: [usize; 4] = [0, 2, 5, 10];
/// Base log-odds: about a 22% click rate overall, close to Criteo's.
const BIAS: f32 = -1.6;

/// An endless, seeded stream of synthetic labelled events.
#[derive(Clone, Debug)]
pub struct CriteoGenerator {
    rng: ChaCha8Rng,
    seed: u64,
}

impl CriteoGenerator {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        CriteoGenerator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> CriteoEvent {
        let mut features = CriteoFeatures::default();
        let mut margin = BIAS;
        for (field, slot) in features.ints.iter_mut().enumerate() {
            if self.rng.random_bool(0.15) {
                continue;
            }
            let v = (self.rng.random::<f32>() * 8.0).exp() as i64 - 1;
            *slot = Some(v);
            if INFORMATIVE_INTS.contains(&field) {
                let bucket = (v.max(0) as f32 + 1.0).ln() as u64;
                margin += 0.8 * unit(self.seed, field as u64, bucket);
            }
        }
        for (field, slot) in features.cats.iter_mut().enumerate() {
            if self.rng.random_bool(0.05) {
                continue;
            }
            let vocab = VOCAB[field];
            let rank = ((vocab as f32).powf(self.rng.random::<f32>()) as u32 - 1).min(vocab - 1);
            let key = (NUM_INTS + field) as u64;
            *slot = Some(splitmix(self.seed ^ (key << 40) ^ u64::from(rank)) as u32);
            if INFORMATIVE_CATS.contains(&field) {
                margin += 1.2 * unit(self.seed, key, u64::from(rank));
            }
        }
        let label = self.rng.random::<f32>() < sigmoid(margin);
        CriteoEvent { label, features }
    }
}

impl Iterator for CriteoGenerator {
    type Item = CriteoEvent;

    fn next(&mut self) -> Option<CriteoEvent> {
        Some(self.next_event())
    }
}

/// A fixed pseudo-random number in `[-1, 1)` for a (field, value) pair.
fn unit(seed: u64, field: u64, value: u64) -> f32 {
    let h = splitmix(seed.wrapping_add(0x5151) ^ (field << 48) ^ value);
    (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

use crate::hash::splitmix64 as splitmix;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let a: Vec<_> = CriteoGenerator::new(3).take(50).collect();
        let b: Vec<_> = CriteoGenerator::new(3).take(50).collect();
        let c: Vec<_> = CriteoGenerator::new(4).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
