//! A version's `weights.safetensors` read chunk by chunk, at any chunk, each checked as it is
//! read: against its digest in `chunks.json` ([`ChunkDigests`]), or, for a version written
//! before chunk digests, as part of the whole file against `meta.json`'s checksum (which then
//! needs every chunk read, in order).

use super::digests::{chunk_bytes, hex_digest, ChunkDigests};
use super::MAX_HEADER_BYTES;
use crate::error::{Error, Result};
use crate::header::hex;
use millrace_learners::architecture::row_width;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// How the chunks read are checked.
enum Check {
    /// Each against its digest.
    Chunks(Arc<ChunkDigests>),
    /// All of them, header first and in file order, against the file's checksum.
    WholeFile { hasher: Sha256, want: String },
}

/// An open weights file whose header has been read and checked.
pub(super) struct WeightsFile<'a> {
    path: &'a Path,
    file: File,
    header: Metadata,
    /// Where the tensors' data starts in the file.
    data_start: u64,
    check: Check,
}

impl<'a> WeightsFile<'a> {
    /// Opens the weights file at `path` and reads its header, checked against `digests` when
    /// the version has them, and otherwise kept for the whole file's check against
    /// `weights_sha256`; checks that the tensors lie end to end and fill the file, and that
    /// `digests` lists each tensor's chunks.
    pub(super) fn open(
        path: &'a Path,
        digests: Option<ChunkDigests>,
        weights_sha256: &str,
    ) -> Result<Self> {
        let invalid = |reason: String| Error::invalid(path, reason);
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut length = [0u8; 8];
        file.read_exact(&mut length)
            .map_err(|e| Error::io(path, e))?;
        let header_len = u64::from_le_bytes(length);
        if header_len > MAX_HEADER_BYTES.min(file_len) {
            return Err(invalid(format!("a header of {header_len} bytes")));
        }
        let mut bytes = length.to_vec();
        bytes.resize(8 + header_len as usize, 0);
        file.read_exact(&mut bytes[8..])
            .map_err(|e| Error::io(path, e))?;
        let check = match digests {
            Some(digests) if hex_digest(&bytes) != digests.header => {
                return Err(invalid("header checksum mismatch".to_owned()))
            }
            Some(digests) => Check::Chunks(Arc::new(digests)),
            None => Check::WholeFile {
                hasher: Sha256::new_with_prefix(&bytes),
                want: weights_sha256.to_owned(),
            },
        };
        let header: Metadata =
            serde_json::from_slice(&bytes[8..]).map_err(|e| invalid(e.to_string()))?;
        let weights = WeightsFile {
            path,
            file,
            header,
            data_start: 8 + header_len,
            check,
        };
        weights.check_layout(file_len)?;
        Ok(weights)
    }

    /// The tensors' names, in file order.
    pub(super) fn names(&self) -> Vec<String> {
        self.header.offset_keys()
    }

    /// What the header says of the tensor `name`.
    pub(super) fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.info(name)
    }

    /// The digest the version lists for chunk `chunk` of `name`, when it lists digests.
    pub(super) fn digest(&self, name: &str, chunk: usize) -> Option<&str> {
        match &self.check {
            Check::Chunks(digests) => digests.chunk(name, chunk),
            Check::WholeFile { .. } => None,
        }
    }

    /// Reads chunk `chunk` of the tensor `name` (`width` numbers a row) into `bytes`, which
    /// holds the chunk's length, and checks it.
    pub(super) fn read_chunk(
        &mut self,
        name: &str,
        width: usize,
        chunk: usize,
        bytes: &mut [u8],
    ) -> Result<()> {
        let invalid = |reason: String| Error::invalid(self.path, reason);
        let start = self
            .header
            .info(name)
            .map(|info| info.data_offsets.0)
            .ok_or_else(|| invalid(format!("no tensor `{name}`")))?;
        let at = self.data_start + (start + chunk * chunk_bytes(width)) as u64;
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(bytes))
            .map_err(|e| Error::io(self.path, e))?;
        match &mut self.check {
            Check::Chunks(digests) => {
                if digests.chunk(name, chunk) != Some(hex_digest(bytes).as_str()) {
                    return Err(invalid(format!(
                        "chunk {chunk} of `{name}`: checksum mismatch"
                    )));
                }
            }
            Check::WholeFile { hasher, .. } => hasher.update(&*bytes),
        }
        Ok(())
    }

    /// The version's chunk digests, once every chunk needed was read; for a version without
    /// them, checks the whole file (every chunk must have been read, in file order).
    pub(super) fn finish(self) -> Result<Option<Arc<ChunkDigests>>> {
        match self.check {
            Check::Chunks(digests) => Ok(Some(digests)),
            Check::WholeFile { hasher, want } => {
                if hex(&hasher.finalize()) == want {
                    Ok(None)
                } else {
                    Err(Error::invalid(self.path, "checksum mismatch"))
                }
            }
        }
    }

    /// That the tensors, in file order, lie end to end from the data's start to the file's
    /// end, each of the bytes its dtype and shape make, and that the digests (if any) list
    /// the same tensors with a digest for each chunk.
    fn check_layout(&self, file_len: u64) -> Result<()> {
        let mut problems = Vec::new();
        let mut end = 0;
        let names = self.names();
        for name in &names {
            let Some(info) = self.header.info(name) else {
                continue;
            };
            let (start, stop) = info.data_offsets;
            let want = info
                .shape
                .iter()
                .try_fold(dtype_bytes(info.dtype), |n, &d| n.checked_mul(d));
            if start != end || Some(stop.wrapping_sub(start)) != want {
                problems.push(format!("tensor `{name}` at bytes {start}..{stop}"));
            }
            end = stop;
            if let Check::Chunks(digests) = &self.check {
                let chunks = stop
                    .saturating_sub(start)
                    .div_ceil(chunk_bytes(row_width(&info.shape).unwrap_or(1)));
                let listed = digests.tensors.iter().find(|t| &t.name == name);
                if listed.map(|t| t.chunks.len()) != Some(chunks) {
                    problems.push(format!(
                        "{CHUNKS_NAME} does not list the {chunks} chunks of `{name}`"
                    ));
                }
            }
        }
        if let Check::Chunks(digests) = &self.check {
            if digests.tensors.len() != names.len() {
                problems.push(format!("{CHUNKS_NAME} lists other tensors"));
            }
        }
        if self.data_start + end as u64 != file_len {
            problems.push(format!(
                "the tensors end at byte {} of {file_len}",
                self.data_start + end as u64
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(self.path, problems.join("; ")))
        }
    }
}

/// What chunk digests are called in errors.
const CHUNKS_NAME: &str = super::digests::CHUNKS;

/// The bytes of one number of `dtype`.
fn dtype_bytes(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
}
