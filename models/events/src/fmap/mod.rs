//! Streaming feature engineering: FeatureMaps.
//!
//! A [`FeatureMapSpec`] names a transform per field: vocabularies (`one_hot`, `multi_hot`) with
//! a minimum count, a capacity, expiry over event time and an out-of-vocabulary slot or hashed
//! fallback; quantile buckets (`bucketize`) from a mergeable [`kll::Kll`] sketch; scalers
//! (`standardize`); hashing (`hash`), hashed crosses (`cross`) and pass-through numbers. Fitting
//! is incremental: each worker keeps [`fit::Partials`] of the current epoch, the owner of each
//! feature merges every worker's partials at the epoch's end ([`fit::FeatureFitter`]), and the
//! resulting [`update::FeatureUpdate`]s make [`FeatureMap`] version N+1 on every worker. The
//! transform ([`FeatureMap::transform`]) is the one function the dataflow and serving both call;
//! its [`CsrBatch`]es also go to Arrow `RecordBatch`es (module `arrow`, feature `arrow`).
//!
//! Categorical values are identified by a 64-bit fingerprint of their bytes (XXH3): two distinct
//! values collide with probability about `n²/2^65` (one in 10^5 at 10 million values per field).

#[cfg(feature = "arrow")]
pub mod arrow;
pub mod fit;
pub mod kll;
pub mod map;
pub mod spec;
pub mod update;
pub mod value;

pub use fit::{BatchFitter, FeatureFitter, FeaturePartial, Partials, DEFAULT_MAX_PENDING};
pub use map::{CsrBatch, FeatureMap, TransformCounts, Transition};
pub use spec::{FeatureMapSpec, InvalidPolicy, Layout, Schema, TransformSpec};
pub use update::{Change, FeatureUpdate, FitFigures};
pub use value::{BadCounts, BadKind, EventBatch, Parser, Value};

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

/// The key this process's fingerprint maps mix their keys with, drawn once from the
/// operating system's randomness (through std's `RandomState`). A client who chooses a field's
/// values can choose their fingerprints' bits, but not where they land in a map: values that
/// share the low bits of their fingerprints (hash flooding) spread like any others. Nothing
/// depends on a map's order (what is written of one is sorted first), so processes with
/// different keys compute the same.
static MAP_KEY: LazyLock<u64> = LazyLock::new(|| {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6d69_6c6c_7261_6365_u64)
});

/// A hasher of fingerprints: a `u64` key mixed with the process's key by the splitmix64
/// finalizer (a bijection, so distinct fingerprints stay distinct).
#[derive(Clone, Copy, Debug)]
pub struct KeyedHasher(u64);

impl Default for KeyedHasher {
    fn default() -> Self {
        KeyedHasher(*MAP_KEY)
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = crate::hash::finalize(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = crate::hash::finalize(self.0 ^ x);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`KeyedHasher`]s.
pub type BuildKeyed = BuildHasherDefault<KeyedHasher>;

/// The token of a number used as a categorical value.
#[inline]
pub(crate) fn num_token(x: f64) -> u64 {
    // `+ 0.0` makes -0.0 the token of 0.0: they are the same number to every other transform.
    crate::hash::finalize((x + 0.0).to_bits() ^ 0x6e75_6d62_6572_0000)
}

/// The non-negative integers below this are "small": counted exactly instead of sketched (in
/// [`kll::Kll`] and in a standardized feature's moments), and their `log1p` looked up. Counts
/// such as Criteo's integer fields are mostly small integers (87% of the generated values, 93%
/// of the sample's).
pub const SMALL_INTEGERS: usize = 1024;

/// `x` as an index below [`SMALL_INTEGERS`] when it is such an integer (-0.0 is 0).
#[inline]
pub(crate) fn small_integer(x: f64) -> Option<usize> {
    // The cast saturates, and sends negatives and NaN to 0; only an integer survives the trip
    // back.
    let k = x as usize;
    (k < SMALL_INTEGERS && k as f64 == x).then_some(k)
}

/// `ln(1 + k)` for the small integers `k`, looked up instead of computed: `log1p` was 6% of the
/// featurize bench.
pub(crate) static SMALL_LN_1P: LazyLock<[f64; SMALL_INTEGERS]> =
    LazyLock::new(|| std::array::from_fn(|k| (k as f64).ln_1p()));

/// `sign(x)·ln(1 + |x|)`; bit for bit the same whether looked up or computed.
#[inline]
pub fn signed_log1p(x: f64) -> f64 {
    let a = x.abs();
    match small_integer(a) {
        Some(k) => x.signum() * SMALL_LN_1P[k],
        None => x.signum() * a.ln_1p(),
    }
}

#[cfg(test)]
mod tests {
    use super::BuildKeyed;
    use std::hash::BuildHasher;

    /// 100,000 fingerprints that share their low 20 bits (a hash-flooding attack on a map that
    /// indexes by the low bits) spread over a map's buckets like any others: no bucket of
    /// 2^17 holds more than a few.
    #[test]
    fn fingerprints_that_share_their_low_bits_spread() {
        let build = BuildKeyed::default();
        let mask = (1u64 << 17) - 1;
        let mut load = vec![0u32; 1 << 17];
        for i in 0..100_000u64 {
            let fingerprint = (i << 20) | 0x5_a5a5;
            load[(build.hash_one(fingerprint) & mask) as usize] += 1;
        }
        let most = load.iter().copied().max().unwrap_or(0);
        assert!(most <= 12, "a bucket holds {most} of them");
    }
}
