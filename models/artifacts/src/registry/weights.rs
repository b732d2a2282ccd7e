//! A version's `weights.safetensors` read chunk by chunk, at any chunk, each checked as it is
//! read: against its digest in `chunks.json` ([`ChunkDigests`]), or, for a version written
//! before chunk digests, as part of the whole file against `meta.json`'s checksum (which then
//! needs every chunk read, in order).

use super::{MAX_HEADER_BYTES, WEIGHTS};
use crate::digests::{chunk_bytes, hex, hex_digest, ChunkDigests, CHUNKS};
use crate::error::{Error, Result};
use crate::table::CHUNK_ROWS;
use millrace_learners::architecture::row_width;
use safetensors::tensor::{Metadata, TensorInfo};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the chunks read are checked.
enum Check {
    /// Each against its digest.
    Chunks(Arc<ChunkDigests>),
    /// All of them, header first and in file order, against the file's checksum.
    WholeFile { hasher: Sha256, want: String },
}

/// An open weights file whose header has been read and checked.
pub(super) struct WeightsFile {
    path: PathBuf,
    /// Where the chunk digests are (named in errors).
    digests_path: PathBuf,
    file: File,
    header: Metadata,
    /// Where the tensors' data starts in the file.
    data_start: u64,
    check: Check,
}

impl WeightsFile {
    /// Opens the weights file of the version in `dir` and reads its header, checked against
    /// the version's chunk digests when it has them, and otherwise kept for the whole file's
    /// check against `weights_sha256`; checks that the tensors fill the file, and that the
    /// digests list each tensor's chunks.
    pub(super) fn open(dir: &Path, weights_sha256: &str) -> Result<Self> {
        let path = dir.join(WEIGHTS);
        let digests_path = dir.join(CHUNKS);
        let invalid = |reason: String| Error::invalid(&path, reason);
        let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let digests = read_digests(&digests_path, file_len)?;
        let mut length = [0u8; 8];
        file.read_exact(&mut length)
            .map_err(|e| Error::io(&path, e))?;
        let header_len = u64::from_le_bytes(length);
        if header_len > MAX_HEADER_BYTES.min(file_len.saturating_sub(8)) {
            return Err(invalid(format!(
                "a header of {header_len} bytes, in a file of {file_len} (at most {MAX_HEADER_BYTES})"
            )));
        }
        let mut bytes = length.to_vec();
        bytes.resize(8 + header_len as usize, 0);
        file.read_exact(&mut bytes[8..])
            .map_err(|e| Error::io(&path, e))?;
        let check = match digests {
            Some(digests) if hex_digest(&bytes) != digests.header => {
                return Err(Error::invalid(
                    &digests_path,
                    format!("the header of {WEIGHTS} does not have the digest listed"),
                ))
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
            digests_path,
            file,
            header,
            data_start: 8 + header_len,
            check,
        };
        weights.check_layout(file_len)?;
        Ok(weights)
    }

    /// The weights file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
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
        let invalid = |reason: String| Error::invalid(&self.path, reason);
        let start = self
            .header
            .info(name)
            .map(|info| info.data_offsets.0)
            .ok_or_else(|| invalid(format!("no tensor `{name}`")))?;
        let at = self.data_start + (start + chunk * chunk_bytes(width)) as u64;
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(bytes))
            .map_err(|e| Error::io(&self.path, e))?;
        match &mut self.check {
            Check::Chunks(digests) => {
                if digests.chunk(name, chunk) != Some(hex_digest(bytes).as_str()) {
                    return Err(invalid(format!(
                        "chunk {chunk} of `{name}`: checksum mismatch (against {CHUNKS})"
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
                    Err(Error::invalid(&self.path, "checksum mismatch"))
                }
            }
        }
    }

    /// That the tensors (which the header's parse checked lie end to end) fill the file, and
    /// that the digests (if any) list the same tensors with a digest for each chunk.
    fn check_layout(&self, file_len: u64) -> Result<()> {
        let names = self.names();
        let end = names
            .iter()
            .filter_map(|name| self.header.info(name))
            .map(|info| info.data_offsets.1 as u64)
            .max()
            .unwrap_or(0);
        if self.data_start + end != file_len {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "the tensors end at byte {} of {file_len}",
                    self.data_start + end
                ),
            ));
        }
        let Check::Chunks(digests) = &self.check else {
            return Ok(());
        };
        let mut problems = Vec::new();
        for name in &names {
            let Some(info) = self.header.info(name) else {
                continue;
            };
            let (start, stop) = info.data_offsets;
            let chunks = stop
                .saturating_sub(start)
                .div_ceil(chunk_bytes(row_width(&info.shape).unwrap_or(1)));
            let listed = digests.tensors.iter().find(|t| &t.name == name);
            if listed.map(|t| t.chunks.len()) != Some(chunks) {
                problems.push(format!("does not list the {chunks} chunks of `{name}`"));
            }
        }
        if digests.tensors.len() != names.len() {
            problems.push(format!(
                "lists {} tensors where {WEIGHTS} has {}",
                digests.tensors.len(),
                names.len()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(&self.digests_path, problems.join("; ")))
        }
    }
}

/// The digests at `path` of a weights file of `weights_bytes` bytes: `None` when the
/// version has none (written before them) or has them for chunks of another size, and is
/// to be read whole. The file is read only up to the size such digests can have.
///
/// # Errors
///
/// When the file cannot be read, is larger than that or is not such digests.
pub(super) fn read_digests(path: &Path, weights_bytes: u64) -> Result<Option<ChunkDigests>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    // About 70 bytes a chunk, and each tensor a chunk more at most.
    let limit = (1 << 20) + 128 * (weights_bytes / (CHUNK_ROWS as u64 * 4) + 64);
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            path,
            format!("more than the {limit} bytes that digests of these weights take"),
        ));
    }
    let digests: ChunkDigests =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(path, e.to_string()))?;
    Ok(Some(digests).filter(|d| d.chunk_rows == CHUNK_ROWS))
}
