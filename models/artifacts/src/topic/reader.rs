//! A reader of a registry topic: it takes the messages in topic order, keeps the newest bytes
//! of every chunk and piece, and the versions whose manifest passes its checks and whose
//! chunks and pieces are all here.

use crate::artifact::Tensor;
use crate::artifact::{check_format_version, declared_tensors, StoredTensor, StructureProblems};
use crate::registry::valid_model_name;
use crate::table::{Table, CHUNK_ROWS};
use crate::topic::key::RegistryKey;
use crate::topic::manifest::{digest, Manifest};
use crate::topic::MAX_VERSION;
use crate::{Error, ModelMeta, ServedModel};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_128;

/// Versions a reader keeps per model (older ones only for rollbacks; they share most blocks).
pub const KEPT_VERSIONS: usize = 3;

/// Tensors a manifest may list (the architectures declare at most a few dozen).
const MAX_TENSORS: usize = 256;

/// The bytes of chunks and pieces that no model's newest version lists (those of a version on
/// its way, before its manifest) a reader holds unless told otherwise: past it, such parts are
/// refused, so that keys nobody lists cannot fill the memory.
pub const MAX_UNLISTED_BYTES: usize = 2 << 30;

/// A chunk or piece as it arrived: its digests and its contents.
#[derive(Debug)]
pub(super) struct Held<T: ?Sized> {
    /// SHA-256, hex: what manifests name.
    sha256: String,
    /// XXH3-128, hex: what manifests written before signing name; only a reader without a key
    /// takes those, so only it computes this.
    xxh3: Option<String>,
    /// Its size on the wire.
    bytes: usize,
    contents: Arc<T>,
}

impl<T: ?Sized> Held<T> {
    fn new(sha256: String, bytes: &[u8], signed: bool, contents: Arc<T>) -> Self {
        Held {
            sha256,
            xxh3: (!signed).then(|| format!("{:032x}", xxh3_128(bytes))),
            bytes: bytes.len(),
            contents,
        }
    }

    /// Whether `want` is its digest; only a SHA-256 one when `signed`.
    fn is(&self, want: &str, signed: bool) -> bool {
        want == self.sha256 || (!signed && self.xxh3.as_deref() == Some(want))
    }
}

/// A tensor's name, rows, width and blocks.
#[derive(Debug)]
pub(super) struct Blocks {
    pub(super) name: String,
    rows: usize,
    width: usize,
    pub(super) blocks: Vec<Arc<[f32]>>,
}

/// A version complete on the topic, not yet checked as a whole ([`Snapshot::served`] does).
#[derive(Debug)]
pub struct Snapshot {
    meta: ModelMeta,
    /// The tensors, in the manifest's order.
    pub(super) tensors: Vec<Blocks>,
    feature_map: Option<Vec<u8>>,
}

/// What a message did to the reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// A chunk or FeatureMap piece was kept.
    Part,
    /// A manifest made this version of this model complete.
    Version(String, u64),
    /// A manifest names a chunk or piece that is not here (compacted away, or its publisher
    /// failed): the versions before it stay.
    Incomplete {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The key of the first part missing.
        missing: String,
    },
}

/// What a reader holds of a registry topic.
#[derive(Debug, Default)]
pub struct TopicReader {
    /// The key manifests must be signed with, when there is one.
    key: Option<RegistryKey>,
    /// Each chunk key's newest digests and values.
    pub(super) chunks: HashMap<String, Held<[f32]>>,
    /// Each FeatureMap piece key's newest digests and bytes.
    pieces: HashMap<String, Held<[u8]>>,
    /// The complete versions, newest [`KEPT_VERSIONS`] per model.
    ready: BTreeMap<String, BTreeMap<u64, Arc<Snapshot>>>,
    /// The part keys each model's newest version lists.
    listed: HashMap<String, HashSet<String>>,
    /// The bytes of the parts held that no model's newest version lists, and their limit.
    unlisted_bytes: usize,
    max_unlisted_bytes: usize,
}

impl TopicReader {
    /// A reader that takes manifests signed with `key`, or, without one, any manifest.
    pub fn new(key: Option<RegistryKey>) -> Self {
        TopicReader {
            key,
            max_unlisted_bytes: MAX_UNLISTED_BYTES,
            ..TopicReader::default()
        }
    }

    /// The reader, holding at most `bytes` of parts that no model's newest version lists.
    pub fn with_unlisted_limit(mut self, bytes: usize) -> Self {
        self.max_unlisted_bytes = bytes;
        self
    }

    /// Takes a message: its key, its bytes and its [`SIGNATURE_HEADER`](super::SIGNATURE_HEADER).
    ///
    /// # Errors
    ///
    /// Why the message was refused (nothing of it is kept).
    pub fn take(
        &mut self,
        key: &str,
        payload: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Taken, String> {
        if let Some(name) = key.strip_prefix("manifest/") {
            return self.manifest(name, payload, signature);
        }
        let model = part_model(key)?;
        let sha256 = digest(payload);
        let chunk = key.starts_with("chunk/");
        let signed = self.key.is_some();
        let held = if chunk {
            self.chunks.get(key).map(|h| (h.sha256.as_str(), h.bytes))
        } else {
            self.pieces.get(key).map(|h| (h.sha256.as_str(), h.bytes))
        };
        if held.is_some_and(|(have, _)| have == sha256) {
            // The same bytes again (a publisher that started over sends every part): the
            // versions keep sharing the block they have.
            return Ok(Taken::Part);
        }
        if chunk && payload.len() % 4 != 0 {
            return Err(format!("chunk `{key}` is not f32 values"));
        }
        let listed = self
            .listed
            .get(model)
            .is_some_and(|keys| keys.contains(key));
        if !listed {
            let replaced = held.map_or(0, |(_, bytes)| bytes);
            let after = self.unlisted_bytes - replaced + payload.len();
            if after > self.max_unlisted_bytes {
                return Err(format!(
                    "`{key}`: the reader holds its limit of {} bytes of parts no version lists",
                    self.max_unlisted_bytes
                ));
            }
            self.unlisted_bytes = after;
        }
        if chunk {
            let values: Arc<[f32]> = payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            self.chunks
                .insert(key.to_owned(), Held::new(sha256, payload, signed, values));
        } else {
            self.pieces.insert(
                key.to_owned(),
                Held::new(sha256, payload, signed, payload.into()),
            );
        }
        Ok(Taken::Part)
    }

    /// The models with a complete version.
    pub fn models(&self) -> Vec<String> {
        self.ready.keys().cloned().collect()
    }

    /// A model's complete versions, ascending.
    pub fn versions(&self, name: &str) -> Vec<u64> {
        self.ready
            .get(name)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A complete version.
    pub fn snapshot(&self, name: &str, version: u64) -> Option<Arc<Snapshot>> {
        self.ready.get(name)?.get(&version).cloned()
    }

    fn manifest(
        &mut self,
        name: &str,
        payload: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Taken, String> {
        check_name(Some(name))?;
        if let Some(key) = &self.key {
            match signature {
                None => return Err("an unsigned manifest (this reader has a key)".to_owned()),
                Some(signature) if !key.verifies(payload, signature) => {
                    return Err("a manifest not signed with this reader's key".to_owned())
                }
                Some(_) => {}
            }
        }
        let manifest = read_manifest(payload)?;
        let problems = manifest_problems(name, &manifest);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let version = manifest.meta.version;
        if let Some(&newest) = self.ready.get(name).and_then(|v| v.keys().next_back()) {
            if version <= newest {
                // A replayed manifest, signed or not, must not take the place of a newer one.
                return Err(format!(
                    "version {version} is not newer than version {newest}, the newest taken"
                ));
            }
        }
        let snapshot = match self.gather(name, &manifest) {
            Ok(snapshot) => snapshot,
            Err(missing) => {
                return Ok(Taken::Incomplete {
                    model: name.to_owned(),
                    version,
                    missing,
                })
            }
        };
        let versions = self.ready.entry(name.to_owned()).or_default();
        versions.insert(version, Arc::new(snapshot));
        while versions.len() > KEPT_VERSIONS {
            versions.pop_first();
        }
        self.forget_unlisted(name, &manifest);
        Ok(Taken::Version(name.to_owned(), version))
    }

    /// The version a manifest names, if every chunk and piece it lists is here; else the key
    /// of the first one missing.
    fn gather(&self, name: &str, manifest: &Manifest) -> Result<Snapshot, String> {
        let signed = self.key.is_some();
        let mut tensors = Vec::new();
        for tensor in &manifest.tensors {
            let mut chunks = Vec::with_capacity(tensor.chunks.len());
            for (i, want) in tensor.chunks.iter().enumerate() {
                let key = format!("chunk/{name}/{}/{i}", tensor.name);
                match self.chunks.get(&key) {
                    Some(held) if held.is(want, signed) => chunks.push(held.contents.clone()),
                    _ => return Err(key),
                }
            }
            tensors.push(Blocks {
                name: tensor.name.clone(),
                rows: tensor.rows,
                width: tensor.width,
                blocks: whole_blocks(chunks, CHUNK_ROWS / tensor.chunk_rows),
            });
        }
        let feature_map = if manifest.feature_map.is_empty() {
            None
        } else {
            let mut json = Vec::new();
            for (i, want) in manifest.feature_map.iter().enumerate() {
                let key = format!("fmap/{name}/{i}");
                match self.pieces.get(&key) {
                    Some(held) if held.is(want, signed) => json.extend_from_slice(&held.contents),
                    _ => return Err(key),
                }
            }
            Some(json)
        };
        Ok(Snapshot {
            meta: manifest.meta.clone(),
            tensors,
            feature_map,
        })
    }

    /// Notes the parts the model's newest version lists, and drops those of the model it does
    /// not list: no later version can name them without sending them again, as a publisher
    /// sends every part it has not sent since its last version listed it.
    fn forget_unlisted(&mut self, name: &str, manifest: &Manifest) {
        let mut keys = HashSet::new();
        for tensor in &manifest.tensors {
            for i in 0..tensor.chunks.len() {
                keys.insert(format!("chunk/{name}/{}/{i}", tensor.name));
            }
        }
        for i in 0..manifest.feature_map.len() {
            keys.insert(format!("fmap/{name}/{i}"));
        }
        let of_model = |key: &str| part_model(key).is_ok_and(|model| model == name);
        self.chunks
            .retain(|key, _| !of_model(key) || keys.contains(key));
        self.pieces
            .retain(|key, _| !of_model(key) || keys.contains(key));
        self.listed.insert(name.to_owned(), keys);
        let listed = &self.listed;
        let unlisted = |key: &str| {
            part_model(key).map_or(true, |model| {
                !listed.get(model).is_some_and(|keys| keys.contains(key))
            })
        };
        self.unlisted_bytes = self
            .chunks
            .iter()
            .filter(|(key, _)| unlisted(key))
            .map(|(_, held)| held.bytes)
            .chain(
                self.pieces
                    .iter()
                    .filter(|(key, _)| unlisted(key))
                    .map(|(_, held)| held.bytes),
            )
            .sum();
    }
}

/// A table's blocks of [`CHUNK_ROWS`] rows from chunks of `1 / per_block` of that: each run of
/// `per_block` chunks joined (the last run may be shorter); the chunks themselves, shared with
/// other versions, when they are whole blocks already.
fn whole_blocks(chunks: Vec<Arc<[f32]>>, per_block: usize) -> Vec<Arc<[f32]>> {
    if per_block <= 1 {
        return chunks;
    }
    chunks
        .chunks(per_block)
        .map(|run| run.iter().flat_map(|c| c.iter().copied()).collect())
        .collect()
}

/// The model of a part's key, if the key is one a publisher writes: `chunk/{model}/{tensor}/{i}`
/// or `fmap/{model}/{i}`, with a valid model name, a tensor name and an index written as a
/// number is (no sign, no leading zero), so that no two keys name one part.
fn part_model(key: &str) -> Result<&str, String> {
    let bad = || format!("an unknown key `{key}`");
    let (model, index) = if let Some(rest) = key.strip_prefix("chunk/") {
        let (model, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (tensor, index) = rest.split_once('/').ok_or_else(bad)?;
        if tensor.is_empty() {
            return Err(bad());
        }
        (model, index)
    } else if let Some(rest) = key.strip_prefix("fmap/") {
        rest.split_once('/').ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    check_name(Some(model))?;
    let canonical = index.parse::<usize>().is_ok_and(|i| i.to_string() == index);
    if !canonical {
        return Err(bad());
    }
    Ok(model)
}

/// A model name as the directory registry takes it.
fn check_name(name: Option<&str>) -> Result<(), String> {
    match name {
        Some(name) if valid_model_name(name) => Ok(()),
        Some(name) => Err(format!("an invalid model name `{name}`")),
        None => Err("a key without a model name".to_owned()),
    }
}

/// A manifest's JSON, in any format up to this reader's.
fn read_manifest(payload: &[u8]) -> Result<Manifest, String> {
    let value = serde_json::from_slice::<serde_json::Value>(payload).map_err(|e| e.to_string())?;
    let meta = value.get("meta").unwrap_or(&serde_json::Value::Null);
    check_format_version(meta).map_err(|e| e.to_string())?;
    serde_json::from_value::<Manifest>(value).map_err(|e| e.to_string())
}

/// What is wrong with a manifest on its own, before any of its parts is looked up.
fn manifest_problems(name: &str, manifest: &Manifest) -> Vec<String> {
    let meta = &manifest.meta;
    let mut problems = Vec::new();
    if meta.name != name {
        problems.push(format!(
            "the manifest of `{name}` names the model `{}`",
            meta.name
        ));
    }
    if !(1..=MAX_VERSION).contains(&meta.version) {
        problems.push(format!(
            "version {} is not in 1..={MAX_VERSION}",
            meta.version
        ));
    }
    if manifest.tensors.len() > MAX_TENSORS {
        problems.push(format!(
            "{} tensors (at most {MAX_TENSORS})",
            manifest.tensors.len()
        ));
    }
    for tensor in &manifest.tensors {
        let values = tensor.rows.checked_mul(tensor.width);
        if tensor.width == 0 || values.is_none_or(|v| v > isize::MAX as usize / 4) {
            problems.push(format!(
                "`{}` has {} rows of {}",
                tensor.name, tensor.rows, tensor.width
            ));
        } else if !tensor.chunk_rows.is_power_of_two() || tensor.chunk_rows > CHUNK_ROWS {
            problems.push(format!(
                "`{}` has chunks of {} rows (a power of two up to {CHUNK_ROWS})",
                tensor.name, tensor.chunk_rows
            ));
        } else if tensor.chunks.len() != tensor.rows.div_ceil(tensor.chunk_rows) {
            problems.push(format!(
                "`{}` has {} rows in {} chunks of {} (want {})",
                tensor.name,
                tensor.rows,
                tensor.chunks.len(),
                tensor.chunk_rows,
                tensor.rows.div_ceil(tensor.chunk_rows)
            ));
        }
        if tensor.name.contains('/') || tensor.name.is_empty() {
            problems.push(format!("a tensor named `{}`", tensor.name));
        }
    }
    problems
}

impl Snapshot {
    /// The version, checked as a whole (its metadata with its FeatureMap, its tensors as its
    /// architecture declares them, every value finite) and ready to serve; `path` names it in
    /// errors.
    ///
    /// # Errors
    ///
    /// What makes it unfit to serve.
    pub fn served(&self, path: &Path) -> crate::Result<ServedModel> {
        let invalid = |reason: String| Error::InvalidArtifact {
            path: path.to_owned(),
            reason,
        };
        let feature_map = match (&self.feature_map, &self.meta.feature_map) {
            (Some(json), Some(stored)) => Some(Arc::new(stored.read(json).map_err(|source| {
                Error::FeatureMap {
                    path: path.to_owned(),
                    source,
                }
            })?)),
            (None, None) => self.meta.features.unfitted_map(),
            _ => return Err(invalid("FeatureMap missing or unexpected".to_owned())),
        };
        let stored = self.tensors.iter().map(|t| StoredTensor {
            name: &t.name,
            rows: t.rows,
            width: Some(t.width),
            whole: true,
            shape: None,
        });
        let declared = declared_tensors(&self.meta, feature_map.as_deref(), stored).map_err(
            |(StructureProblems::Meta(problems) | StructureProblems::Tensors(problems))| {
                invalid(problems.join("; "))
            },
        )?;
        let mut tensors = Vec::with_capacity(declared.len());
        for spec in declared {
            let stored = self
                .tensors
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| invalid(format!("no tensor `{}`", spec.name)))?;
            let table = Table::from_blocks(stored.rows, stored.width, stored.blocks.clone())
                .map_err(|source| Error::Blocks {
                    path: path.to_owned(),
                    source,
                })?;
            tensors.push(Tensor::new(spec, table));
        }
        let model = ServedModel {
            meta: self.meta.clone(),
            tensors,
            feature_map,
            chunk_digests: None,
        };
        let problems = model.value_problems();
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(model)
    }
}
