//! 8-bit weights for serving: blockwise absmax quantization.
//!
//! Values are cut into groups of [`GROUP`]; each group keeps one `f32` scale, its largest
//! magnitude over 127, and each value the nearest multiple of that scale as an `i8` code. A
//! group's error is at most half its scale, so a group of small weights keeps its precision
//! whatever the rest of the model holds; no value is clipped. At 1 + 4/[`GROUP`] bytes a number
//! it is a quarter of `f32`'s memory (q2.13 is half).
//!
//! Rounding is to the nearest code, not randomized as in [`crate::fixed`]: a served model is
//! rounded once, and nearest rounding has the smaller error. What it costs in AUC is measured
//! by `millrace bench online --int8` (`perf/RESULTS.md`).

/// Values per scale. A table chunk's length is a multiple of it, so quantizing a table chunk by
/// chunk groups the values exactly as quantizing them all at once.
pub const GROUP: usize = 256;

/// The largest code's magnitude (codes are symmetric: −128 is never used).
const LIMIT: f32 = 127.0;

/// The scale of a group: its largest magnitude over 127 (0 for a group of zeros).
///
/// Non-finite values must have been refused before; a NaN is ignored here.
fn scale_of(group: &[f32]) -> f32 {
    group.iter().fold(0.0f32, |m, v| m.max(v.abs())) / LIMIT
}

/// The code of `value` under `scale`: the nearest multiple of the scale, in `-127..=127`.
#[inline]
pub fn encode(value: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    (value / scale).round().clamp(-LIMIT, LIMIT) as i8
}

/// The value of a code under its group's scale.
#[inline]
pub fn decode(code: i8, scale: f32) -> f32 {
    f32::from(code) * scale
}

/// The codes of `values` and the scale of each group of [`GROUP`] (the last one shorter).
pub fn quantize(values: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len().div_ceil(GROUP));
    for group in values.chunks(GROUP) {
        let scale = scale_of(group);
        scales.push(scale);
        codes.extend(group.iter().map(|&v| encode(v, scale)));
    }
    (codes, scales)
}

/// `values` as an 8-bit model holds them: quantized and decoded back.
pub fn round_trip(values: &[f32]) -> Vec<f32> {
    let (codes, scales) = quantize(values);
    codes
        .iter()
        .enumerate()
        .map(|(i, &code)| decode(code, scales[i / GROUP]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_group_of_zeros_and_the_extremes() {
        let (codes, scales) = quantize(&[0.0; 3]);
        assert_eq!((codes, scales), (vec![0; 3], vec![0.0]));
        let (codes, scales) = quantize(&[-2.54, 1.3, 0.0]);
        assert_eq!(codes, vec![-127, 65, 0]);
        assert!((scales[0] - 0.02).abs() < 1e-7);
        assert_eq!(quantize(&vec![1.0; GROUP + 1]).1.len(), 2);
    }

    proptest! {
        /// Every value decodes to within half its group's scale, and the group's largest
        /// magnitude keeps its sign and size.
        #[test]
        fn values_round_to_the_nearest_step(
            values in proptest::collection::vec(-100.0f32..100.0, 1..3 * GROUP),
        ) {
            let (codes, scales) = quantize(&values);
            let decoded = round_trip(&values);
            for (i, (&v, &d)) in values.iter().zip(&decoded).enumerate() {
                let scale = scales[i / GROUP];
                prop_assert!((v - d).abs() <= scale * 0.5 + scale * 1e-5, "{v} → {d} (scale {scale})");
                prop_assert!(codes[i] != i8::MIN);
            }
        }

        /// Quantizing groups one after the other is quantizing the whole.
        #[test]
        fn groups_are_independent(values in proptest::collection::vec(-5.0f32..5.0, 0..4 * GROUP)) {
            let whole = round_trip(&values);
            let parts: Vec<f32> = values.chunks(2 * GROUP).flat_map(round_trip).collect();
            prop_assert_eq!(whole, parts);
        }
    }
}
