//! Collectives between the ranks of a data-parallel training run: the [`AllReduce`] trait and
//! its backends.
//!
//! - [`Local`]: ranks as threads of one process (tests, and a process's own workers);
//! - [`Ring`]: ranks as processes over TCP, a ring reduce-scatter then all-gather;
//! - `Nccl` (feature `nccl`): ranks on CUDA devices, tensors summed where they are.
//!
//! Every backend leaves every rank with the same sums, bit for bit, so that replicas that take
//! the same optimizer step on them stay equal.

mod local;
#[cfg(feature = "nccl")]
mod nccl;
mod ring;

pub use local::Local;
#[cfg(feature = "nccl")]
pub use nccl::Nccl;
pub use ring::{Ring, RingLimits};

use crate::error::DeepError;
use tch::{Device, Tensor};

/// The collectives a data-parallel step needs. Every rank calls the same operations in the
/// same order; a call returns once every rank has made it.
pub trait AllReduce: Send {
    /// This rank, in `0..ranks()`.
    fn rank(&self) -> usize;

    /// The ranks in all.
    fn ranks(&self) -> usize;

    /// Replaces `data` by its sum over every rank's `data` (of the same length on every rank);
    /// every rank gets the same numbers, bit for bit.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when a peer is gone or sent something else.
    fn sum(&mut self, data: &mut [f32]) -> Result<(), DeepError>;

    /// Sends `parts[r]` to rank `r` (`parts` has one entry per rank, this rank's own
    /// included) and returns what each rank sent this one, by rank: an all-to-all, which
    /// carries sparse rows and their gradients to the ranks that own them.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when `parts` is not one per rank, or a peer is gone.
    fn exchange(&mut self, parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, DeepError>;

    /// Replaces `tensor` (f32, the same shape on every rank) by its sum over the ranks, as
    /// [`AllReduce::sum`] does. By default through the host; a backend that reaches the
    /// tensor's device sums it there.
    ///
    /// # Errors
    ///
    /// As [`AllReduce::sum`]; [`DeepError::Torch`] when the tensor cannot be copied.
    fn sum_tensor(&mut self, tensor: &mut Tensor) -> Result<(), DeepError> {
        sum_on_host(self, tensor)
    }
}

/// Sums `tensor` over the ranks through `comm`'s [`AllReduce::sum`], by way of host memory.
pub(crate) fn sum_on_host<C: AllReduce + ?Sized>(
    comm: &mut C,
    tensor: &mut Tensor,
) -> Result<(), DeepError> {
    let host = tensor.flatten(0, -1).to_device(Device::Cpu);
    let mut numbers = Vec::<f32>::try_from(&host)?;
    comm.sum(&mut numbers)?;
    let summed = Tensor::from_slice(&numbers)
        .view(tensor.size().as_slice())
        .to_device(tensor.device());
    tch::no_grad(|| tensor.copy_(&summed));
    Ok(())
}

/// The rank that owns `slot`'s host-table row among `ranks`.
pub fn owner(slot: i64, ranks: usize) -> usize {
    (slot.rem_euclid(ranks.max(1) as i64)) as usize
}

/// Checks that `parts` has one entry per rank.
fn one_per_rank(parts: &[Vec<u8>], ranks: usize) -> Result<(), DeepError> {
    if parts.len() == ranks {
        Ok(())
    } else {
        Err(DeepError::Collective(format!(
            "an exchange needs one part per rank ({ranks}), got {}",
            parts.len()
        )))
    }
}

/// A peer's part as `count` numbers (native byte order: the ranks are one build on one kind of
/// machine); an error naming `what` when it is not that long.
pub(crate) fn numbers(part: &[u8], count: usize, what: &str) -> Result<Vec<f32>, DeepError> {
    if part.len() != count * 4 {
        return Err(DeepError::Collective(format!(
            "a {what} of {count} numbers met one of {} bytes",
            part.len()
        )));
    }
    Ok(bytemuck::pod_collect_to_vec(part))
}
