//! Dynamic loss scaling for mixed precision, as PyTorch's `GradScaler` does it: the loss is
//! multiplied by a scale before the backward pass, so that small fp16 gradients do not
//! underflow to zero; the gradients are divided by it again before the optimizers see them. A
//! step whose gradients are not all finite (the scale made them overflow) is skipped and the
//! scale halved; after a run of finite steps the scale doubles.

/// The first scale: 2¹⁶, `GradScaler`'s.
const INITIAL: f64 = 65_536.0;
/// Finite steps in a row before the scale doubles, `GradScaler`'s.
const GROWTH_INTERVAL: u32 = 2_000;
/// The smallest scale: a step that overflows there is a model gone wrong, not a scale too
/// large, and it applies, so that the weights it makes not finite reach the gate, which
/// refuses the candidate.
const SMALLEST: f64 = 1.0;

/// The loss scale and its run of finite steps.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LossScale {
    scale: f64,
    finite_steps: u32,
}

impl LossScale {
    /// The starting scale.
    pub(crate) fn new() -> Self {
        LossScale {
            scale: INITIAL,
            finite_steps: 0,
        }
    }

    /// A scale starting at `scale` (a power of two).
    #[cfg(test)]
    pub(crate) fn from(scale: f64) -> Self {
        LossScale {
            scale,
            finite_steps: 0,
        }
    }

    /// What the loss is multiplied by (a power of two: dividing by it again is exact).
    pub(crate) fn factor(&self) -> f64 {
        self.scale
    }

    /// Records a step whose gradients were `finite` (or not) and says whether it applies.
    pub(crate) fn update(&mut self, finite: bool) -> bool {
        if !finite && self.scale <= SMALLEST {
            return true;
        }
        if !finite {
            self.scale = (self.scale / 2.0).max(SMALLEST);
            self.finite_steps = 0;
            return false;
        }
        self.finite_steps += 1;
        if self.finite_steps == GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.finite_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflow_halves_the_scale_and_a_run_of_finite_steps_doubles_it() {
        let mut scale = LossScale::new();
        assert!(!scale.update(false));
        assert_eq!(scale.factor(), INITIAL / 2.0);
        for _ in 1..GROWTH_INTERVAL {
            assert!(scale.update(true));
        }
        assert_eq!(scale.factor(), INITIAL / 2.0);
        assert!(scale.update(true));
        assert_eq!(scale.factor(), INITIAL);
        // An overflow restarts the run.
        for _ in 0..GROWTH_INTERVAL - 1 {
            scale.update(true);
        }
        scale.update(false);
        scale.update(true);
        assert_eq!(scale.factor(), INITIAL / 2.0);
        for _ in 0..40 {
            scale.update(false);
        }
        assert_eq!(scale.factor(), SMALLEST);
        assert!(
            scale.update(false),
            "at the smallest scale an overflow applies"
        );
    }
}
