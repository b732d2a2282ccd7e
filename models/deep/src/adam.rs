//! Adam over the device embedding table. The table is most of a model's numbers (Avazu's: 19M
//! of the 19M), and Adam with dense gradients updates every row each step, so the update is
//! most of a step on the CPU. libtorch's Adam makes seven passes over the table per step (one
//! tensor operation each: two per moment, three for the denominator, one for the weights); on
//! the CPU this one makes a single pass, reading weight, gradient and moments and writing them
//! back element by element, split over as many threads as libtorch uses (what PyTorch's
//! `fused=True` does there). The arithmetic is libtorch's, in the same order, equal to it to
//! rounding (libtorch may fuse a multiply-add where this does not). On CUDA, libtorch's Adam
//! runs.
#![allow(unsafe_code)] // The table's storage as slices: the block below says why it holds.

use crate::error::DeepError;
use tch::nn::{self, OptimizerConfig};
use tch::{COptimizer, Device, Kind, Tensor};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// Adam over a table's variables.
pub(crate) enum Adam {
    /// One pass per step over each CPU tensor.
    Fused(Fused),
    /// libtorch's, for tensors on a GPU.
    Torch(nn::Optimizer),
}

impl std::fmt::Debug for Adam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adam::Fused(fused) => f
                .debug_struct("Fused")
                .field("tensors", &fused.vars.len())
                .field("rate", &fused.rate)
                .finish_non_exhaustive(),
            Adam::Torch(optimizer) => optimizer.fmt(f),
        }
    }
}

/// The fused optimizer's state.
pub(crate) struct Fused {
    /// The tensors it steps, with their steps taken and first and second moments.
    vars: Vec<(Tensor, i32, Vec<f32>, Vec<f32>)>,
    rate: f64,
    /// An optimizer over the same tensors, used only to drop their gradients between steps
    /// (libtorch's `zero_grad` sets them to none, so that the next backward pass writes a
    /// fresh gradient rather than adding into a zeroed one); it never steps.
    clear: COptimizer,
}

impl Adam {
    /// Adam at `rate` over `table`'s variables: fused where they are all on the CPU.
    pub(crate) fn new(table: &nn::VarStore, rate: f64) -> Result<Self, DeepError> {
        if table.device() != Device::Cpu {
            return Ok(Adam::Torch(nn::Adam::default().build(table, rate)?));
        }
        let mut named: Vec<(String, Tensor)> = table.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut clear = COptimizer::sgd(0.0, 0.0, 0.0, 0.0, false)?;
        let mut vars = Vec::with_capacity(named.len());
        for (name, var) in named {
            if var.kind() != Kind::Float || !var.is_contiguous() {
                return Err(DeepError::Rows(format!(
                    "`{name}` is not a contiguous f32 tensor"
                )));
            }
            clear.add_parameters(&var, 0)?;
            let n = var.numel();
            vars.push((var, 0, vec![0.0; n], vec![0.0; n]));
        }
        Ok(Adam::Fused(Fused { vars, rate, clear }))
    }

    /// Drops the tensors' gradients.
    pub(crate) fn zero_grad(&mut self) {
        match self {
            Adam::Fused(fused) => {
                if let Err(error) = fused.clear.zero_grad() {
                    tracing::warn!(%error, "clearing the embedding table's gradients");
                }
            }
            Adam::Torch(optimizer) => optimizer.zero_grad(),
        }
    }

    /// One step of every tensor with a gradient.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when a gradient is not a contiguous f32 tensor of its weight's size.
    pub(crate) fn step(&mut self) -> Result<(), DeepError> {
        match self {
            Adam::Fused(fused) => fused.step(),
            Adam::Torch(optimizer) => {
                optimizer.step();
                Ok(())
            }
        }
    }
}

impl Fused {
    fn step(&mut self) -> Result<(), DeepError> {
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
        for (var, steps, m, v) in &mut self.vars {
            let grad = var.grad();
            if !grad.defined() {
                continue;
            }
            let n = var.numel();
            let fits = |t: &Tensor| {
                t.kind() == Kind::Float
                    && t.is_contiguous()
                    && t.device() == Device::Cpu
                    && t.numel() == n
            };
            if !fits(var) || !fits(&grad) {
                return Err(DeepError::Rows(
                    "the embedding table or its gradient is not a contiguous f32 CPU tensor of the table's size"
                        .to_owned(),
                ));
            }
            if n == 0 {
                continue;
            }
            let (w_at, g_at) = (var.data_ptr() as usize, grad.data_ptr() as usize);
            let bytes = n * std::mem::size_of::<f32>();
            if w_at < g_at + bytes && g_at < w_at + bytes {
                return Err(DeepError::Rows(
                    "the embedding table's gradient shares the table's storage".to_owned(),
                ));
            }
            *steps += 1;
            let constants = Constants::at(self.rate, *steps);
            // SAFETY: `var` and `grad` are non-empty contiguous f32 CPU tensors of `n` numbers
            // (checked above, at every step), so their storage holds `n` f32 from their
            // non-null data pointers, and the two ranges do not overlap (checked above).
            // Nothing else reads or writes either while the trainer's step runs (libtorch is
            // idle between its calls, and no autograd graph holds the weights' storage for
            // writing). The slices end with this block.
            let (weights, grads) = unsafe {
                (
                    std::slice::from_raw_parts_mut(var.data_ptr().cast::<f32>(), n),
                    std::slice::from_raw_parts(grad.data_ptr().cast::<f32>().cast_const(), n),
                )
            };
            let per = n.div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let parts = weights
                    .chunks_mut(per)
                    .zip(grads.chunks(per))
                    .zip(m.chunks_mut(per).zip(v.chunks_mut(per)));
                for ((w, g), (m, v)) in parts {
                    scope.spawn(move || constants.apply(w, g, m, v));
                }
            });
        }
        Ok(())
    }
}

/// The step's numbers, as libtorch's Adam computes them.
#[derive(Clone, Copy, Debug)]
struct Constants {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// `√(1 − β₂ᵗ)`.
    correction2: f32,
    /// `rate / (1 − β₁ᵗ)`.
    step_size: f32,
    epsilon: f32,
}

impl Constants {
    fn at(rate: f64, step: i32) -> Self {
        Constants {
            beta1: BETA1 as f32,
            one_minus_beta1: (1.0 - BETA1) as f32,
            beta2: BETA2 as f32,
            one_minus_beta2: (1.0 - BETA2) as f32,
            correction2: (1.0 - BETA2.powi(step)).sqrt() as f32,
            step_size: (rate / (1.0 - BETA1.powi(step))) as f32,
            epsilon: EPSILON as f32,
        }
    }

    /// `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`, `w ← w − step · m / (√v / √(1 − β₂ᵗ) + ε)`,
    /// in AVX2's eight lanes where the processor has them (the same arithmetic, lane by lane:
    /// Rust fuses no multiply-add on its own, so every result is the same bits).
    fn apply(self, weights: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: this processor has AVX2 (checked just above), all the function asks.
            unsafe { self.apply_avx2(weights, grads, m, v) };
            return;
        }
        self.apply_lanes(weights, grads, m, v);
    }

    /// [`Constants::apply`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(self, weights: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_lanes(weights, grads, m, v);
    }

    /// The loop itself, inlined into each of the above so that each compiles it for its
    /// processor.
    #[inline(always)]
    fn apply_lanes(self, weights: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((w, &g), m), v) in weights.iter_mut().zip(grads).zip(m).zip(v) {
            *m = *m * self.beta1 + g * self.one_minus_beta1;
            *v = *v * self.beta2 + self.one_minus_beta2 * g * g;
            let denom = v.sqrt() / self.correction2 + self.epsilon;
            *w += -self.step_size * (*m / denom);
        }
    }
}
