//! The values of a sparse row's entries, as the learners and the scoring of artifacts read them.

/// The values of a sparse row's entries, by position: all ones for a binary row, else one per
/// index. Generic so that binary rows pay nothing for values they do not have.
pub trait RowValues: Copy {
    /// The value of entry `k`.
    fn at(self, k: usize) -> f32;
}

/// The values of a binary row: every entry is 1.
#[derive(Clone, Copy, Debug)]
pub struct Ones;

impl RowValues for Ones {
    #[inline]
    fn at(self, _k: usize) -> f32 {
        1.0
    }
}

impl RowValues for &[f32] {
    #[inline]
    fn at(self, k: usize) -> f32 {
        self[k]
    }
}
