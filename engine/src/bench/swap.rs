//! `millrace bench swap`: what serving's load of a new version costs, by how much of the
//! model it changes. It publishes a logistic regression of 2^`hash_bits` weights into a fresh
//! registry directory, then one version for each fraction of the chunks to change (each
//! changed chunk gets new values in 2% of its rows, about what an epoch of online training
//! changes), and loads them in turn as serving does ([`Registry::load_served`], at full speed,
//! sharing with the version before): the seconds and the bytes read of each load.
//!
//! The versions stay in the directory, so that `perf/swap.sh` can have servers of two builds
//! swap them in.

use crate::error::{Error, Result};
use millrace_models::table::CHUNK_ROWS;
use millrace_models::{FeatureSpec, LoadPace, ModelArtifact, Registry, ServedModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The model the versions are published as.
pub const MODEL: &str = "ctr";

/// The figures `millrace bench swap` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwapBench {
    /// The model's weights.
    pub weights: usize,
    /// Its chunks ([`CHUNK_ROWS`] weights each).
    pub chunks: usize,
    /// The first version's load, with nothing to share.
    pub first: SwapLoad,
    /// Each later version's load, sharing with the one before.
    pub loads: Vec<SwapLoad>,
}

/// One version's load.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwapLoad {
    /// The version.
    pub version: u64,
    /// The chunks it changed from the version before.
    pub changed_chunks: usize,
    /// Seconds to load and check it.
    pub seconds: f64,
    /// Bytes the loading thread read meanwhile (`rchar` of `/proc/thread-self/io`; `None`
    /// where there is no such file).
    pub bytes_read: Option<u64>,
}

/// Publishes the versions into `registry` (which must hold no model yet) and loads them.
///
/// # Errors
///
/// When `changed` has a fraction outside [0, 1], the registry is not empty, or a version
/// cannot be published or loaded.
pub fn swap(registry: &Path, hash_bits: u32, changed: &[f64], seed: u64) -> Result<SwapBench> {
    let problems: Vec<String> = changed
        .iter()
        .filter(|f| !(0.0..=1.0).contains(*f))
        .map(|f| format!("a changed fraction of {f}, outside [0, 1]"))
        .collect();
    if !problems.is_empty() {
        return Err(Error::Config { problems });
    }
    let registry = Registry::open(registry)?;
    if !registry.models()?.is_empty() {
        return Err(Error::Config {
            problems: vec![format!(
                "`bench swap` publishes into an empty registry; {} has models",
                registry.root().display()
            )],
        });
    }
    let weights = 1usize << hash_bits;
    let chunks = weights.div_ceil(CHUNK_ROWS);
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let mut values: Vec<f32> = (0..weights)
        .map(|_| random.random_range(-1.0..1.0))
        .collect();
    let mut counts = vec![0];
    publish(&registry, hash_bits, &values)?;
    for &fraction in changed {
        let count = (fraction * chunks as f64).round() as usize;
        for chunk in spread(count, chunks) {
            let rows = chunk * CHUNK_ROWS..((chunk + 1) * CHUNK_ROWS).min(weights);
            for _ in 0..rows.len().div_ceil(50) {
                values[random.random_range(rows.clone())] = random.random_range(-1.0..1.0);
            }
        }
        publish(&registry, hash_bits, &values)?;
        counts.push(count);
    }
    let new_blocks = chunks.div_ceil(8);
    let mut base: Option<ServedModel> = None;
    let mut loads = Vec::new();
    for (version, changed_chunks) in (1..).zip(counts) {
        let read_before = bytes_read();
        let started = Instant::now();
        let model = registry.load_served(
            MODEL,
            version,
            base.as_ref(),
            LoadPace {
                new_blocks: if base.is_some() { new_blocks } else { 0 },
                cpu_share: 1.0,
            },
        )?;
        let seconds = started.elapsed().as_secs_f64();
        loads.push(SwapLoad {
            version,
            changed_chunks,
            seconds,
            bytes_read: bytes_read()
                .zip(read_before)
                .map(|(after, before)| after - before),
        });
        base = Some(model);
    }
    let first = loads.remove(0);
    Ok(SwapBench {
        weights,
        chunks,
        first,
        loads,
    })
}

/// Publishes `values` as the next version.
fn publish(registry: &Registry, hash_bits: u32, values: &[f32]) -> Result<()> {
    let mut artifact = ModelArtifact::logistic_regression(
        MODEL,
        FeatureSpec::Hashed { hash_bits },
        values.to_vec(),
    );
    registry.publish(&mut artifact)?;
    Ok(())
}

/// `count` of the chunks `0..chunks`, spread evenly.
fn spread(count: usize, chunks: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |k| k * chunks / count.max(1))
}

/// The bytes this thread has read (`rchar`), where the kernel says.
fn bytes_read() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_changing_few_chunks_reads_few_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let figures = swap(dir.path(), 18, &[0.25, 1.0], 7).unwrap();
        assert_eq!((figures.weights, figures.chunks), (1 << 18, 16));
        let changed: Vec<usize> = figures.loads.iter().map(|l| l.changed_chunks).collect();
        assert_eq!(changed, [4, 16]);
        let chunk_bytes = (CHUNK_ROWS * 4) as u64;
        let read: Vec<u64> = figures
            .loads
            .iter()
            .map(|l| l.bytes_read.unwrap())
            .collect();
        let first = figures.first.bytes_read.unwrap();
        assert!(first >= 16 * chunk_bytes, "{first}");
        // The changed chunks and the metadata, not the whole file.
        assert!(
            read[0] >= 4 * chunk_bytes && read[0] < 5 * chunk_bytes,
            "{read:?}"
        );
        assert!(read[1] >= 16 * chunk_bytes, "{read:?}");
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.versions(MODEL).unwrap(), [1, 2, 3]);
        assert!(swap(dir.path(), 18, &[0.5], 7).is_err(), "not empty");
        let err = swap(dir.path(), 18, &[1.5, -1.0], 7)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1.5") && err.contains("-1"), "{err}");
    }

    #[test]
    fn spread_chunks_are_distinct() {
        for chunks in [1, 7, 1024] {
            for count in 0..=chunks.min(64) {
                let picked: std::collections::BTreeSet<usize> = spread(count, chunks).collect();
                assert_eq!(picked.len(), count);
                assert!(picked.iter().all(|&c| c < chunks));
            }
        }
    }
}
