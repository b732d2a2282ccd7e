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
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_128;

/// Versions a reader keeps per model (older ones only for rollbacks; they share most blocks).
pub const KEPT_VERSIONS: usize = 3;

/// Tensors a manifest may list (the architectures declare at most a few dozen).
const MAX_TENSORS: usize = 256;

/// A chunk or piece as it arrived: its digests and its contents.
#[derive(Debug)]
pub(super) struct Held<T: ?Sized> {
    /// SHA-256, hex: what manifests name.
    sha256: String,
    /// XXH3-128, hex: what manifests written before signing name.
    xxh3: String,
    contents: Arc<T>,
}

impl<T: ?Sized> Held<T> {
    fn new(sha256: String, bytes: &[u8], contents: Arc<T>) -> Self {
        Held {
            sha256,
            xxh3: format!("{:032x}", xxh3_128(bytes)),
            contents,
        }
    }

    /// Whether `want` is its digest; only a SHA-256 one when `signed`.
    fn is(&self, want: &str, signed: bool) -> bool {
        want == self.sha256 || (!signed && want == self.xxh3)
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
}

impl TopicReader {
    /// A reader that takes manifests signed with `key`, or, without one, any manifest.
    pub fn new(key: Option<RegistryKey>) -> Self {
        TopicReader {
            key,
            ..TopicReader::default()
        }
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
        let model = |rest: &str| rest.split('/').next().map(str::to_owned);
        if let Some(rest) = key.strip_prefix("chunk/") {
            check_name(model(rest).as_deref())?;
            if payload.len() % 4 != 0 {
                return Err(format!("chunk `{key}` is not f32 values"));
            }
            let sha256 = digest(payload);
            if self
                .chunks
                .get(key)
                .is_some_and(|held| held.sha256 == sha256)
            {
                // The same bytes again (a publisher that started over sends every chunk):
                // the versions keep sharing the block they have.
                return Ok(Taken::Part);
            }
            let values: Arc<[f32]> = payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            self.chunks
                .insert(key.to_owned(), Held::new(sha256, payload, values));
            Ok(Taken::Part)
        } else if let Some(rest) = key.strip_prefix("fmap/") {
            check_name(model(rest).as_deref())?;
            self.pieces.insert(
                key.to_owned(),
                Held::new(digest(payload), payload, payload.into()),
            );
            Ok(Taken::Part)
        } else {
            Err(format!("an unknown key `{key}`"))
        }
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
            let mut blocks = Vec::with_capacity(tensor.chunks.len());
            for (i, want) in tensor.chunks.iter().enumerate() {
                let key = format!("chunk/{name}/{}/{i}", tensor.name);
                match self.chunks.get(&key) {
                    Some(held) if held.is(want, signed) => blocks.push(held.contents.clone()),
                    _ => return Err(key),
                }
            }
            tensors.push(Blocks {
                name: tensor.name.clone(),
                rows: tensor.rows,
                width: tensor.width,
                blocks,
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

    /// Drops the model's chunks and pieces that its newest version does not list: no later
    /// version can name them without sending them again, as a publisher sends every part of a
    /// new shape.
    fn forget_unlisted(&mut self, name: &str, manifest: &Manifest) {
        let chunks = format!("chunk/{name}/");
        let listed = |key: &str| -> bool {
            let Some(rest) = key.strip_prefix(&chunks) else {
                return true;
            };
            let Some((tensor, i)) = rest.rsplit_once('/') else {
                return false;
            };
            let i = i.parse::<usize>().unwrap_or(usize::MAX);
            manifest
                .tensors
                .iter()
                .any(|t| t.name == tensor && i < t.chunks.len())
        };
        self.chunks.retain(|key, _| listed(key));
        let prefix = format!("fmap/{name}/");
        self.pieces
            .retain(|key, _| match key.strip_prefix(&prefix) {
                Some(i) => i
                    .parse::<usize>()
                    .is_ok_and(|i| i < manifest.feature_map.len()),
                None => true,
            });
    }
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
        } else if tensor.chunks.len() != tensor.rows.div_ceil(CHUNK_ROWS) {
            problems.push(format!(
                "`{}` has {} rows in {} chunks (want {})",
                tensor.name,
                tensor.rows,
                tensor.chunks.len(),
                tensor.rows.div_ceil(CHUNK_ROWS)
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
        };
        let problems = model.value_problems();
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(model)
    }
}
