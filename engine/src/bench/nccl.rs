//! `millrace bench allreduce --backend nccl`: the deep trainer's NCCL all-reduce of a tensor on
//! the GPU, per size, beside a copy of the same bytes within the GPU's memory timed in the same
//! run (the bare limit of one device's memory). Rank `r` uses `cuda:r`; the ranks meet over the
//! TCP ring first, or in-process when there is one.

use super::allreduce::iterations;
use crate::error::{Error, Result};
use millrace_deep::collective::{AllReduce, Local, Nccl, Ring, RingLimits};
use millrace_deep::Device;
use serde::Serialize;
use std::time::Instant;
use tch::{Kind, Tensor};

/// One size's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NcclSize {
    /// Bytes summed per rank.
    pub bytes: u64,
    /// Seconds per all-reduce.
    pub seconds: f64,
    /// `bytes / seconds`, GB/s (10⁹ bytes).
    pub algbw_gbps: f64,
    /// Bus bandwidth, NCCL's: `algbw × 2 (n − 1) / n` (0 with one rank).
    pub busbw_gbps: f64,
    /// The same bytes copied within the device's memory, GB/s.
    pub copy_gbps: f64,
}

/// The figures `millrace bench allreduce --backend nccl` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NcclBench {
    /// `nccl`.
    pub backend: &'static str,
    /// Ranks (processes, one GPU each).
    pub ranks: usize,
    /// NCCL's version, as `ncclGetVersion` gives it (22805 for 2.28.5).
    pub nccl_version: i32,
    /// Per size, smallest first.
    pub sizes: Vec<NcclSize>,
}

fn failed(error: millrace_deep::DeepError) -> Error {
    Error::Retrain(error.to_string())
}

/// Seconds per call of `op` on the device `ordinal`, after a warm-up, every rank starting
/// together and the device's queue drained before the clock stops.
fn timed(
    comm: &mut Nccl,
    ordinal: usize,
    iters: usize,
    mut op: impl FnMut(&mut Nccl) -> Result<()>,
) -> Result<f64> {
    op(comm)?;
    tch::Cuda::synchronize(ordinal as i64);
    comm.sum(&mut [0.0]).map_err(failed)?;
    let started = Instant::now();
    for _ in 0..iters {
        op(comm)?;
    }
    tch::Cuda::synchronize(ordinal as i64);
    comm.sum(&mut [0.0]).map_err(failed)?;
    Ok(started.elapsed().as_secs_f64() / iters as f64)
}

/// Runs every size as rank `rank` of `ranks` (meeting on loopback ports from `port` when there
/// are several); rank 0 returns the figures, the others `None`.
///
/// # Errors
///
/// [`Error::Retrain`] when NCCL cannot run here (no CUDA, no NCCL library, no such device;
/// the message says which), or the ranks cannot meet.
pub fn run_rank(rank: usize, ranks: usize, port: u16, sizes: &[u64]) -> Result<Option<NcclBench>> {
    Nccl::available().map_err(failed)?;
    let host: Box<dyn AllReduce> = if ranks == 1 {
        Box::new(Local::group(1).remove(0))
    } else {
        Box::new(Ring::loopback(rank, ranks, port, RingLimits::default()).map_err(failed)?)
    };
    let mut comm = Nccl::over(host, Device::Cuda(rank)).map_err(failed)?;
    let device = Device::Cuda(rank);
    let mut figures = Vec::new();
    for &bytes in sizes {
        let n = (bytes / 4) as i64;
        let iters = iterations(bytes);
        let mut data = Tensor::ones([n], (Kind::Float, device));
        let seconds = timed(&mut comm, rank, iters, |c| {
            c.sum_tensor(&mut data).map_err(failed)
        })?;
        let from = Tensor::ones([n], (Kind::Float, device));
        let mut into = Tensor::zeros([n], (Kind::Float, device));
        let copy = timed(&mut comm, rank, iters, |_| {
            into.copy_(&from);
            Ok(())
        })?;
        let gbps = |s: f64| bytes as f64 / s.max(1e-12) / 1e9;
        figures.push(NcclSize {
            bytes,
            seconds,
            algbw_gbps: gbps(seconds),
            busbw_gbps: gbps(seconds) * 2.0 * (ranks - 1) as f64 / ranks as f64,
            copy_gbps: gbps(copy),
        });
    }
    Ok((rank == 0).then_some(NcclBench {
        backend: "nccl",
        ranks,
        nccl_version: Nccl::version().map_err(failed)?,
        sizes: figures,
    }))
}
