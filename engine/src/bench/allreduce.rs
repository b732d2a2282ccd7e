//! `millrace bench allreduce`: the CPU all-reduce (a ring over TCP) between processes on
//! loopback, per message size, beside the links' bare limit measured in the same run.
//!
//! Rank 0 is this process; it starts the other ranks as child processes of the same binary
//! (`--rank R`). For each size it times, after a warm-up, `iters` sums of that many bytes of
//! `f32`, and two bare passes over the same sockets: one-way (rank 0 sends the bytes to rank 1,
//! nothing else moves) and duplex (every rank sends the bytes to the next while receiving as
//! many, which is the traffic of a two-rank all-reduce without its framing and additions).
//! Bus bandwidth is NCCL's: `bytes / seconds × 2 (n − 1) / n`.

use crate::error::{Error, Result};
use millrace_deep::collective::{AllReduce, Ring, RingLimits};
use serde::Serialize;
use std::time::Instant;

/// One size's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeFigures {
    /// Bytes summed per rank.
    pub bytes: u64,
    /// Seconds per all-reduce.
    pub seconds: f64,
    /// Bus bandwidth of the all-reduce, GB/s (10⁹ bytes).
    pub busbw_gbps: f64,
    /// The same bytes sent one way over loopback TCP, GB/s.
    pub raw_gbps: f64,
    /// The same bytes sent both ways at once (each direction's rate), GB/s.
    pub raw_duplex_gbps: f64,
    /// `busbw_gbps / raw_gbps`.
    pub ratio_to_raw: f64,
    /// `busbw_gbps / raw_duplex_gbps`.
    pub ratio_to_duplex: f64,
}

/// The figures `millrace bench allreduce` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllReduceBench {
    /// `tcp-ring`.
    pub backend: &'static str,
    /// Ranks (processes).
    pub ranks: usize,
    /// Per size, smallest first.
    pub sizes: Vec<SizeFigures>,
}

/// The sizes `spec` names: `LO..HI` (each `N`, `NK`, `NM` or `NG`, powers of 1024), every
/// fourfold size from `LO` up to `HI`; or one size.
///
/// # Errors
///
/// [`Error::Config`] for a size that is not a number with one of those suffixes, or a range
/// whose low end is above its high end.
pub fn sizes(spec: &str) -> Result<Vec<u64>> {
    let one = |s: &str| -> Result<u64> {
        let s = s.trim();
        let (digits, unit) = match s.char_indices().last() {
            Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
            Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
            Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
            _ => (s, 1),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .filter(|&n| n >= 4)
            .ok_or_else(|| Error::Config {
                problems: vec![format!(
                    "`--bytes`: {s:?} is not a size of at least 4 bytes (N, NK, NM or NG)"
                )],
            })
    };
    let (lo, hi) = match spec.split_once("..") {
        Some((lo, hi)) => (one(lo)?, one(hi)?),
        None => (one(spec)?, one(spec)?),
    };
    if lo > hi {
        return Err(Error::Config {
            problems: vec![format!("`--bytes`: {spec:?} runs downwards")],
        });
    }
    let mut out = Vec::new();
    let mut size = lo;
    while size <= hi {
        out.push(size);
        size = size.saturating_mul(4);
    }
    Ok(out)
}

/// Timed repetitions of one size: enough to take a while at small sizes.
pub(crate) fn iterations(bytes: u64) -> usize {
    ((1u64 << 30) / bytes).clamp(5, 200) as usize
}

/// Seconds per call of `op`, after one warm-up, every rank starting together.
fn timed(
    comm: &mut Ring,
    iters: usize,
    mut op: impl FnMut(&mut Ring) -> Result<()>,
) -> Result<f64> {
    op(comm)?;
    comm.sum(&mut [0.0])?;
    let started = Instant::now();
    for _ in 0..iters {
        op(comm)?;
    }
    comm.sum(&mut [0.0])?;
    Ok(started.elapsed().as_secs_f64() / iters as f64)
}

/// Runs every size as rank `rank` of `ranks` on loopback ports from `port`; rank 0 returns the
/// figures, the others `None`.
///
/// # Errors
///
/// [`Error::Retrain`] when the ranks cannot connect or a peer goes away.
pub fn run_rank(
    rank: usize,
    ranks: usize,
    port: u16,
    sizes: &[u64],
) -> Result<Option<AllReduceBench>> {
    let failed = |e: millrace_deep::DeepError| Error::Retrain(e.to_string());
    let mut comm = Ring::loopback(rank, ranks, port, RingLimits::default()).map_err(failed)?;
    let mut figures = Vec::new();
    for &bytes in sizes {
        let n = (bytes / 4) as usize;
        let iters = iterations(bytes);
        let mut data: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
        let seconds = timed(&mut comm, iters, |c| c.sum(&mut data).map_err(failed))?;
        let out = vec![1u8; bytes as usize];
        let mut into = vec![0u8; bytes as usize];
        let one_way = (rank == 0, rank == 1);
        let raw = timed(&mut comm, iters, |c| {
            c.pass(&out, &mut into, one_way).map_err(failed)
        })?;
        let duplex = timed(&mut comm, iters, |c| {
            c.pass(&out, &mut into, (true, true)).map_err(failed)
        })?;
        let gbps = |s: f64| bytes as f64 / s.max(1e-12) / 1e9;
        let busbw = gbps(seconds) * 2.0 * (ranks - 1) as f64 / ranks as f64;
        figures.push(SizeFigures {
            bytes,
            seconds,
            busbw_gbps: busbw,
            raw_gbps: gbps(raw),
            raw_duplex_gbps: gbps(duplex),
            ratio_to_raw: busbw / gbps(raw),
            ratio_to_duplex: busbw / gbps(duplex),
        });
    }
    Ok((rank == 0).then_some(AllReduceBench {
        backend: "tcp-ring",
        ranks,
        sizes: figures,
    }))
}

#[cfg(test)]
mod tests {
    use super::sizes;

    #[test]
    fn sizes_run_fourfold_from_the_low_end_to_the_high_one() {
        assert_eq!(sizes("1K..16K").unwrap(), vec![1024, 4096, 16384]);
        assert_eq!(sizes("64M").unwrap(), vec![64 << 20]);
        assert_eq!(sizes("1K..3K").unwrap(), vec![1024]);
        for bad in ["", "1X", "2", "16K..1K", "K..1M"] {
            assert!(sizes(bad).is_err(), "{bad}");
        }
    }
}
