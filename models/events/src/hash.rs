//! The one 64-bit mixer the model crates use for hashing features, seeding the generator and
//! initializing factors: stable across platforms and releases, so models stay reproducible.

/// The splitmix64 finalizer: every input bit affects every output bit.
pub(crate) fn finalize(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The golden-ratio increment of splitmix64.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// One step of splitmix64 from state `x`.
pub fn splitmix64(x: u64) -> u64 {
    finalize(x.wrapping_add(GOLDEN))
}
