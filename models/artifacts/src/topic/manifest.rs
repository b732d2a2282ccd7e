//! A version as the publisher writes it: its chunks and FeatureMap pieces, then its manifest.

use crate::table::CHUNK_ROWS;
use crate::topic::{MAX_CHUNK_BYTES, PIECE_BYTES};
use crate::{ModelArtifact, ModelMeta};
use millrace_learners::architecture::row_width;
use serde::{Deserialize, Serialize};

/// What a manifest says about one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorManifest {
    /// The tensor's name in its architecture.
    pub name: String,
    /// Its rows.
    pub rows: usize,
    /// The numbers per row.
    pub width: usize,
    /// The rows each chunk holds (the last fewer): [`CHUNK_ROWS`], or a smaller power of two
    /// when a chunk of that many rows would pass [`MAX_CHUNK_BYTES`]; written only then.
    #[serde(default = "full_chunk", skip_serializing_if = "is_full_chunk")]
    pub chunk_rows: usize,
    /// The digest of each chunk's bytes, hex.
    pub chunks: Vec<String>,
}

fn full_chunk() -> usize {
    CHUNK_ROWS
}

fn is_full_chunk(rows: &usize) -> bool {
    *rows == CHUNK_ROWS
}

/// The rows per chunk of a tensor `width` numbers wide: [`CHUNK_ROWS`], halved until a chunk
/// fits in [`MAX_CHUNK_BYTES`] (one row at least).
pub fn chunk_rows(width: usize) -> usize {
    let mut rows = CHUNK_ROWS;
    while rows > 1 && rows * width.max(1) * 4 > MAX_CHUNK_BYTES {
        rows /= 2;
    }
    rows
}

/// The last message of a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The version's metadata.
    pub meta: ModelMeta,
    /// Its tensors, in the artifact's order.
    pub tensors: Vec<TensorManifest>,
    /// The digest of each piece of the FeatureMap's JSON, hex.
    pub feature_map: Vec<String>,
}

/// The digest a publisher gives a chunk or piece: SHA-256, hex.
pub fn digest(bytes: &[u8]) -> String {
    crate::digests::hex_digest(bytes)
}

/// Values as a chunk carries them: little-endian `f32`.
pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The JSON of the artifact's FeatureMap when it travels: only a fitted one does (a hashed
/// spec's is made again by the reader).
///
/// # Errors
///
/// When the FeatureMap does not serialize.
pub fn feature_map_json(artifact: &ModelArtifact) -> serde_json::Result<Option<Vec<u8>>> {
    artifact
        .fitted_feature_map()
        .map(|map| serde_json::to_vec(map.as_ref()))
        .transpose()
}

/// Hands every chunk and FeatureMap piece of a version to `send` as `(key, bytes, digest)`, in
/// the order they go on the topic (`send` decides whether it changed since the last version),
/// and returns the manifest's bytes, which go last.
///
/// # Errors
///
/// The first error of `send`.
pub fn encode<E>(
    artifact: &ModelArtifact,
    feature_map_json: Option<&[u8]>,
    mut send: impl FnMut(String, &[u8], &str) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let name = &artifact.meta.name;
    let mut manifest = Manifest {
        meta: artifact.meta.clone(),
        tensors: Vec::new(),
        feature_map: Vec::new(),
    };
    for tensor in &artifact.tensors {
        let rows = tensor.shape.first().copied().unwrap_or(1);
        let width = row_width(&tensor.shape).unwrap_or(1).max(1);
        let chunk_rows = chunk_rows(width);
        let mut chunks = Vec::new();
        for (i, chunk) in tensor.values.chunks(chunk_rows * width).enumerate() {
            let bytes = le_bytes(chunk);
            let hash = digest(&bytes);
            send(format!("chunk/{name}/{}/{i}", tensor.name), &bytes, &hash)?;
            chunks.push(hash);
        }
        manifest.tensors.push(TensorManifest {
            name: tensor.name.clone(),
            rows,
            width,
            chunk_rows,
            chunks,
        });
    }
    for (i, piece) in feature_map_json
        .unwrap_or_default()
        .chunks(PIECE_BYTES)
        .enumerate()
    {
        let hash = digest(piece);
        send(format!("fmap/{name}/{i}"), piece, &hash)?;
        manifest.feature_map.push(hash);
    }
    Ok(serde_json::to_vec(&manifest).expect("a manifest serializes"))
}
