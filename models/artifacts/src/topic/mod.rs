//! The wire format of a registry topic: model versions on a compacted Kafka topic, so that
//! serving pods on many machines follow the trainer without a shared filesystem. This module
//! holds what is written and read; the Kafka clients that move it live in the connectors.
//!
//! The topic has one partition; every message has a key, and compaction keeps each key's newest
//! value:
//!
//! - `chunk/{model}/{tensor}/{i}`: chunk `i` of a tensor (by the name its architecture gives
//!   it: `weights`, `factors`, …): [`CHUNK_ROWS`](crate::table::CHUNK_ROWS) rows (the last
//!   chunk fewer), little-endian `f32`; a tensor so wide that such a chunk would pass
//!   [`MAX_CHUNK_BYTES`] (a factorization machine of 13 factors or more) travels in chunks of
//!   a smaller power of two of rows, which its manifest names (`chunk_rows`), so that every
//!   message fits a broker's default limit (1 MB);
//! - `fmap/{model}/{i}`: piece `i` of the FeatureMap's JSON, [`PIECE_BYTES`] each;
//! - `manifest/{model}`: the version's metadata and the digest of every chunk and piece
//!   (SHA-256; XXH3-128 in manifests written before signing, which a reader with a key
//!   refuses), signed with HMAC-SHA256 in the [`SIGNATURE_HEADER`] when the publisher has a
//!   key.
//!
//! A version's chunks and pieces come before its manifest. The publisher sends only the chunks
//! whose bytes changed since the version before (a sparse delta), so a reader that follows the
//! topic receives each version's changes, and a reader that starts on a compacted topic still
//! finds the newest bytes of every chunk. Readers share the blocks of unchanged chunks between
//! versions, like a version loaded from a directory ([`crate::table`]).
//!
//! The topic is a control plane: whoever can write to it decides what serving answers. So a
//! reader checks every manifest before it keeps anything of it (the model's name, a sane
//! version number, shapes whose products fit, a chunk count that matches the rows), checks the
//! whole version before it serves it, and, with a key, refuses a manifest that is not signed
//! with it.

mod key;
mod manifest;
mod reader;

pub use key::{RegistryKey, KEY_MIN_BYTES, SIGNATURE_HEADER};
pub use manifest::{
    chunk_rows, digest, encode, feature_map_json, le_bytes, Manifest, TensorManifest,
};
pub use reader::{Snapshot, Taken, TopicReader, KEPT_VERSIONS, MAX_UNLISTED_BYTES};

/// Bytes per piece of a FeatureMap's JSON.
pub const PIECE_BYTES: usize = 512 << 10;

/// The most bytes of values one chunk message carries: 768 KiB, which with its key and headers
/// stays under the 1 MB that brokers accept by default (`message.max.bytes`).
pub const MAX_CHUNK_BYTES: usize = 768 << 10;

/// The largest version number a manifest may carry: the largest integer a JSON number holds
/// exactly. A larger one (`u64::MAX`) would stay the newest forever and hide every later one.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

#[cfg(test)]
mod tests;
