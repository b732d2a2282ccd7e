//! The logistic function, shared by the learners, the scoring of artifacts and the generators'
//! planted signals.

/// The logistic function, with the margin clamped to keep `exp` finite.
pub fn sigmoid(margin: f32) -> f32 {
    1.0 / (1.0 + (-margin.clamp(-35.0, 35.0)).exp())
}
