//! Fixed-point weights: the q2.13 encoding of McMahan et al. (KDD 2013, section 4.1).
//!
//! A value is kept in 16 bits: a sign, 2 integer bits and 13 fractional bits, so it lies in
//! `[-4, 4)` in steps of `2^-13`. Rounding is randomized (up with probability equal to the
//! remainder), so the encoding is unbiased and small updates are not lost on average. The
//! random draws come from a seeded splitmix64 stream, so a model quantizes the same way every
//! time. Values outside the range are clipped and counted.
//!
//! Half the memory of `f32` weights; what it costs in AUC is measured by `millrace bench online
//! --q213` (`perf/RESULTS.md`).

use millrace_events::hash::splitmix64;

/// Fractional bits.
pub const FRACTION_BITS: u32 = 13;
/// The step between neighbouring values, `2^-13`.
pub const STEP: f32 = 1.0 / (1 << FRACTION_BITS) as f32;
/// The smallest value, `-4`.
pub const MIN: f32 = i16::MIN as f32 * STEP;
/// The largest value, `4 - 2^-13`.
pub const MAX: f32 = i16::MAX as f32 * STEP;

/// Encodes `value` with randomized rounding; `uniform` is a draw from `[0, 1)`. Returns the code
/// and whether the value had to be clipped (NaN encodes as 0 and counts as clipped).
pub fn encode(value: f32, uniform: f32) -> (i16, bool) {
    if value.is_nan() {
        return (0, true);
    }
    let clipped = !(MIN..=MAX).contains(&value);
    let scaled = value.clamp(MIN, MAX) / STEP;
    let floor = scaled.floor();
    let up = uniform < scaled - floor;
    let code = (floor as i32 + i32::from(up)).clamp(i16::MIN.into(), i16::MAX.into());
    (code as i16, clipped)
}

/// The value of a code.
pub fn decode(code: i16) -> f32 {
    f32::from(code) * STEP
}

/// Encodes values one after the other with uniform draws from a splitmix64 stream seeded by
/// `seed`, counting the values clipped.
#[derive(Clone, Debug)]
pub struct Quantizer {
    state: u64,
    /// Values clipped so far.
    pub clipped: usize,
}

impl Quantizer {
    /// A quantizer whose stream starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Quantizer {
            state: seed,
            clipped: 0,
        }
    }

    /// The code of the next value.
    pub fn encode(&mut self, value: f32) -> i16 {
        self.state = splitmix64(self.state);
        let uniform = (self.state >> 40) as f32 / (1u64 << 24) as f32;
        let (code, clipped) = encode(value, uniform);
        self.clipped += usize::from(clipped);
        code
    }
}

/// Encodes `values` with uniform draws from a splitmix64 stream seeded by `seed`; returns the
/// codes and how many values were clipped.
pub fn quantize(values: &[f32], seed: u64) -> (Vec<i16>, usize) {
    let mut quantizer = Quantizer::new(seed);
    let codes = values.iter().map(|&v| quantizer.encode(v)).collect();
    (codes, quantizer.clipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_range_and_the_step() {
        assert_eq!((MIN, MAX), (-4.0, 4.0 - STEP));
        assert_eq!(encode(1.5, 0.0), (12288, false));
        assert_eq!(decode(12288), 1.5);
        assert_eq!(encode(9.0, 0.5), (i16::MAX, true));
        assert_eq!(encode(-9.0, 0.5), (i16::MIN, true));
        assert_eq!(encode(f32::NAN, 0.5), (0, true));
    }

    proptest! {
        /// Within the range a value decodes to one of its two neighbouring steps.
        #[test]
        fn codes_are_a_neighbouring_step(value in MIN..MAX, uniform in 0f32..1.0) {
            let (code, clipped) = encode(value, uniform);
            prop_assert!(!clipped);
            prop_assert!((decode(code) - value).abs() <= STEP);
        }
    }

    #[test]
    fn a_fixed_point_model_predicts_like_the_model() {
        use millrace_events::FeatureSpec;
        use millrace_learners::{FtrlParams, Learner, LearnerParams};
        let spec = FeatureSpec::Hashed { hash_bits: 6 };
        let mut learner = Learner::new(&LearnerParams::Ftrl(FtrlParams::default()), 64);
        let rows: Vec<Vec<u32>> = (0..500u32).map(|n| vec![n % 64, (n * 7) % 64]).collect();
        for (n, row) in rows.iter().enumerate() {
            learner.learn(row, n % 3 == 0);
        }
        let model = crate::ModelArtifact::of_learner(&learner, "m", spec);
        let (fixed, clipped) = model.to_q213(3);
        assert_eq!(clipped, 0);
        assert_ne!(fixed.tensors, model.tensors, "the weights were rounded");
        for row in &rows {
            let ones = vec![1.0; row.len()];
            let (a, b) = (model.predict_row(row, &ones), fixed.predict_row(row, &ones));
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    /// Randomized rounding is unbiased: the mean of many encodings is the value.
    #[test]
    fn rounding_is_unbiased() {
        let value = 0.123_456_7_f32;
        let (codes, clipped) = quantize(&vec![value; 100_000], 7);
        assert_eq!(clipped, 0);
        let mean = codes.iter().map(|&c| f64::from(decode(c))).sum::<f64>() / codes.len() as f64;
        assert!((mean - f64::from(value)).abs() < 1e-6, "{mean} vs {value}");
        // Deterministic for a seed.
        assert_eq!(quantize(&[value; 8], 7), quantize(&[value; 8], 7));
    }
}
