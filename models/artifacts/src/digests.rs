//! The digest of every chunk of a version's weights (`chunks.json` beside them), so that
//! serving reads and checks only the chunks that changed since the version it serves: a
//! version that changes 1% of a model's chunks costs 1% of its bytes to load, not all of them.
//!
//! A chunk is what a served [`crate::table::Table`] shares between versions: [`CHUNK_ROWS`]
//! rows of one tensor (the last chunk fewer). Its digest is SHA-256 of its bytes as the
//! weights file stores them.
//!
//! The file is the registry's own record, written with the version: corruption makes it fail
//! to parse or makes a digest fail to match its chunk, and cannot turn a digest into that of
//! the served version's chunk, which is what would keep an old chunk.

use crate::table::CHUNK_ROWS;
use millrace_learners::architecture::row_width;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file beside `weights.safetensors` that lists its digests.
pub(crate) const CHUNKS: &str = "chunks.json";

/// The digests of one version's weights file: its header's and each chunk's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChunkDigests {
    /// The rows of a chunk: [`CHUNK_ROWS`] when written.
    pub(crate) chunk_rows: usize,
    /// SHA-256 of the file's header (its 8-byte length and its JSON), hex.
    pub(crate) header: String,
    /// Each tensor's chunks, in the order the file stores the tensors.
    pub(crate) tensors: Vec<TensorDigests>,
}

/// The digests of one tensor's chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TensorDigests {
    /// The tensor's name.
    pub(crate) name: String,
    /// SHA-256 of each chunk's bytes, hex, in row order.
    pub(crate) chunks: Vec<String>,
}

impl ChunkDigests {
    /// The digests of a weights file whose header is `header` and whose tensors, in file
    /// order, are `(name, row width, bytes)`.
    pub(crate) fn of<'a>(
        header: &[u8],
        tensors: impl IntoIterator<Item = (&'a str, usize, &'a [u8])>,
    ) -> Self {
        ChunkDigests {
            chunk_rows: CHUNK_ROWS,
            header: hex_digest(header),
            tensors: tensors
                .into_iter()
                .map(|(name, width, bytes)| TensorDigests {
                    name: name.to_owned(),
                    chunks: bytes.chunks(chunk_bytes(width)).map(hex_digest).collect(),
                })
                .collect(),
        }
    }

    /// The digests of a weights file, `encoded` whole.
    ///
    /// # Errors
    ///
    /// When it is not a safetensors file.
    pub(crate) fn of_file(encoded: &[u8]) -> std::result::Result<Self, String> {
        let (length, header) = SafeTensors::read_metadata(encoded).map_err(|e| e.to_string())?;
        let (header_bytes, data) = encoded.split_at(8 + length);
        let names = header.offset_keys();
        let tensors = names.iter().filter_map(|name| {
            let info = header.info(name)?;
            let (start, end) = info.data_offsets;
            let width = row_width(&info.shape).unwrap_or(1);
            Some((name.as_str(), width, data.get(start..end)?))
        });
        Ok(ChunkDigests::of(header_bytes, tensors))
    }

    /// The digest of chunk `chunk` of the tensor `name`, if it lists one.
    pub(crate) fn chunk(&self, name: &str, chunk: usize) -> Option<&str> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.chunks.get(chunk))
            .map(String::as_str)
    }
}

/// The bytes of a full chunk of a tensor `width` numbers wide.
pub(crate) fn chunk_bytes(width: usize) -> usize {
    CHUNK_ROWS.saturating_mul(width.max(1)).saturating_mul(4)
}

/// SHA-256 of `bytes`, hex.
pub(crate) fn hex_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` in lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_chunk_rows_rows_and_the_last_is_shorter() {
        let bytes = vec![7u8; chunk_bytes(2) * 2 + 8];
        let digests = ChunkDigests::of(b"header", [("factors", 2, &bytes[..])]);
        assert_eq!(digests.chunk_rows, CHUNK_ROWS);
        let chunks = &digests.tensors[0].chunks;
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0], chunks[1]);
        assert_eq!(chunks[2], hex_digest(&[7u8; 8]));
        assert_eq!(digests.chunk("factors", 2), Some(chunks[2].as_str()));
        assert_eq!(digests.chunk("factors", 3), None);
        assert_eq!(digests.chunk("weights", 0), None);
        assert_eq!(digests.header, hex_digest(b"header"));
    }
}
