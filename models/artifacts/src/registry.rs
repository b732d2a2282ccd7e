//! The model registry on a directory: `DIR/<model>/v<version>/{meta.json, weights.safetensors,
//! chunks.json}` (every tensor of the model, by name, and the digest of each chunk of it), plus
//! `featuremap.json` (the fitted FeatureMap, JSON) for a model of a `map` feature spec.
//!
//! A version is written into a hidden temporary directory and renamed into place, so a reader
//! sees a version completely or not at all; versions only grow. Loading checks the tensors' and
//! the FeatureMap's checksums, that the tensors are those the architecture declares, that every
//! number is finite and that the FeatureMap was made from the model's spec.

use crate::artifact::{
    declared_tensors, FeatureMapMeta, ModelArtifact, ModelMeta, ServedModel, StoredTensor,
    StructureProblems, Tensor, FORMAT_VERSION,
};
use crate::digests::{self, ChunkDigests};
use crate::error::{Error, Result, StoredMapError};
use crate::header::{header_metadata, sort_header};
use crate::table::{Table, TableBuilder};
use millrace_events::fmap::FeatureMap;
use millrace_learners::architecture::{row_width, TensorSpec};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod retention;
mod weights;

pub use retention::{HOLD_REFRESH, HOLD_TTL};
use weights::WeightsFile;

const META: &str = "meta.json";
const WEIGHTS: &str = "weights.safetensors";
const FEATURE_MAP: &str = "featuremap.json";

/// A registry of model versions in a directory.
#[derive(Clone, Debug)]
pub struct Registry {
    root: PathBuf,
}

/// Whether `name` may name a model: ASCII letters, digits, `-` and `_`, at most 128 of them (a
/// directory's name, a registry topic's key, a URL's path segment alike).
pub fn valid_model_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Registry {
    /// Opens (and creates if needed) the registry at `root`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        Ok(Registry { root })
    }

    /// The registry's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        if !valid_model_name(name) {
            return Err(Error::InvalidModelName(name.to_owned()));
        }
        Ok(self.root.join(name))
    }

    /// The names of the models with at least one version, sorted.
    ///
    /// # Errors
    ///
    /// When the registry directory cannot be read.
    pub fn models(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))? {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if self.model_dir(&name).is_ok() && !self.versions(&name)?.is_empty() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The published versions of a model, ascending (empty if it has none).
    ///
    /// # Errors
    ///
    /// For an invalid model name, or when its directory cannot be read.
    pub fn versions(&self, name: &str) -> Result<Vec<u64>> {
        let dir = self.model_dir(name)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            if let Some(v) = name.to_str().and_then(|n| n.strip_prefix('v')) {
                if let Ok(v) = v.parse::<u64>() {
                    versions.push(v);
                }
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The newest version of a model, if any.
    ///
    /// # Errors
    ///
    /// As [`Registry::versions`].
    pub fn latest(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.versions(name)?.last().copied())
    }

    fn version_dir(&self, name: &str, version: u64) -> Result<PathBuf> {
        Ok(self.model_dir(name)?.join(format!("v{version:010}")))
    }

    /// Publishes the artifact as the model's next version in this format ([`FORMAT_VERSION`]):
    /// fills in its version, checksum and creation time, writes it atomically, and returns the
    /// version.
    ///
    /// # Errors
    ///
    /// When the artifact is inconsistent or cannot be written.
    pub fn publish(&self, artifact: &mut ModelArtifact) -> Result<u64> {
        let dir = self.model_dir(&artifact.meta.name)?;
        let problems = artifact.problems();
        if !problems.is_empty() {
            return Err(Error::invalid(&dir, problems.join("; ")));
        }
        if !dir.exists() {
            // A new model: its directory's entry in the root is made durable too.
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            sync_dir(&self.root)?;
        }
        let bytes: Vec<Vec<u8>> = artifact
            .tensors
            .iter()
            .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views = artifact
            .tensors
            .iter()
            .zip(&bytes)
            .map(|(tensor, bytes)| {
                TensorView::new(Dtype::F32, tensor.shape.clone(), bytes)
                    .map(|view| (tensor.name.as_str(), view))
                    .map_err(|e| Error::invalid(&dir, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let version = self.latest(&artifact.meta.name)?.unwrap_or(0) + 1;
        let metadata = Some(header_metadata(artifact, version));
        let mut encoded = safetensors::serialize(views, metadata)
            .map_err(|e| Error::invalid(&dir, e.to_string()))?;
        sort_header(&mut encoded).map_err(|e| Error::invalid(&dir, e))?;
        let chunks = ChunkDigests::of_file(&encoded)
            .map(|digests| serde_json::to_vec(&digests).expect("digests serialize"))
            .map_err(|e| Error::invalid(&dir, e))?;
        artifact.meta.format_version = FORMAT_VERSION.to_owned();
        artifact.meta.weights_sha256 = digests::hex_digest(&encoded);
        let feature_map = match artifact.fitted_feature_map() {
            Some(map) => {
                let bytes = serde_json::to_vec(map.as_ref())
                    .map_err(|e| Error::invalid(&dir, e.to_string()))?;
                artifact.meta.feature_map = Some(FeatureMapMeta {
                    version: map.version,
                    sha256: digests::hex_digest(&bytes),
                });
                Some(bytes)
            }
            None => {
                artifact.meta.feature_map = None;
                None
            }
        };
        artifact.meta.created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        artifact.meta.version = version;

        let tmp = dir.join(format!(
            ".tmp-v{}-{}",
            artifact.meta.version,
            std::process::id()
        ));
        let target = self.version_dir(&artifact.meta.name, artifact.meta.version)?;
        let meta = serde_json::to_vec_pretty(&artifact.meta).expect("metadata serializes");
        let mut files: Vec<(&str, &[u8])> = vec![
            (WEIGHTS, &encoded),
            (digests::CHUNKS, &chunks),
            (META, &meta),
        ];
        if let Some(bytes) = &feature_map {
            files.push((FEATURE_MAP, bytes));
        }
        let written = write_durably(&tmp, &files)
            .and_then(|()| fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e)))
            .and_then(|()| sync_dir(&dir));
        if written.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        written.map(|()| artifact.meta.version)
    }

    /// Loads and validates one version of a model.
    ///
    /// # Errors
    ///
    /// When the files are missing or unreadable, a checksum does not match, the tensors are
    /// not those the architecture declares over the feature spec, or a number is not finite.
    pub fn load(&self, name: &str, version: u64) -> Result<ModelArtifact> {
        let (dir, meta) = self.read_meta(name, version)?;
        let weights_path = dir.join(WEIGHTS);
        let encoded = fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        if digests::hex_digest(&encoded) != meta.weights_sha256 {
            return Err(Error::invalid(&weights_path, "checksum mismatch"));
        }
        let stored = SafeTensors::deserialize(&encoded)
            .map_err(|e| Error::invalid(&weights_path, e.to_string()))?;
        let feature_map = read_feature_map(&dir, &meta)?;
        let listed = stored.tensors();
        let header = listed
            .iter()
            .map(|(name, view)| (name.as_str(), view.dtype(), view.shape()));
        let declared =
            checked_tensors((&dir, &weights_path), &meta, feature_map.as_deref(), header)?;
        let tensors = declared
            .into_iter()
            .map(|spec| {
                let tensor = stored
                    .tensor(&spec.name)
                    .map_err(|e| Error::invalid(&weights_path, e.to_string()))?;
                let values = tensor
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Tensor::new(spec, values))
            })
            .collect::<Result<Vec<_>>>()?;
        let artifact = ModelArtifact {
            meta,
            tensors,
            feature_map,
        };
        let problems = artifact.value_problems();
        if !problems.is_empty() {
            return Err(Error::invalid(&dir, problems.join("; ")));
        }
        Ok(artifact)
    }

    fn read_meta(&self, name: &str, version: u64) -> Result<(PathBuf, ModelMeta)> {
        let dir = self.version_dir(name, version)?;
        let meta_path = dir.join(META);
        let meta_bytes = fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta = read_meta_json(&meta_path, &meta_bytes)?;
        if meta.name != name || meta.version != version {
            return Err(Error::invalid(
                &dir,
                "metadata names another model or version",
            ));
        }
        Ok((dir, meta))
    }

    /// Loads and validates one version of a model for serving, as [`Registry::load`] does, but
    /// streams the weights from disk chunk by chunk into copy-on-write tables that share every
    /// chunk they can with `base` (an older version of the model, usually the one being served;
    /// see [`crate::table`]), at the pace `pace` sets. A chunk whose digest (`chunks.json`) is
    /// that of `base`'s chunk is shared without being read; the others are read and checked
    /// against their digests. Besides the new version's own chunks and patches, loading holds
    /// one chunk of the file in memory.
    ///
    /// A version written before chunk digests is read whole and checked against `meta.json`'s
    /// checksum.
    ///
    /// # Errors
    ///
    /// As [`Registry::load`]; and when a chunk's digest or the header's does not match.
    pub fn load_served(
        &self,
        name: &str,
        version: u64,
        base: Option<&ServedModel>,
        pace: LoadPace,
    ) -> Result<ServedModel> {
        let (dir, meta) = self.read_meta(name, version)?;
        let feature_map = read_feature_map(&dir, &meta)?;
        let mut weights = WeightsFile::open(&dir, &meta.weights_sha256)?;
        let path = weights.path().to_owned();
        let listed = weights.names();
        let declared = checked_tensors(
            (&dir, &path),
            &meta,
            feature_map.as_deref(),
            listed.iter().filter_map(|name| {
                let info = weights.info(name)?;
                Some((name.as_str(), info.dtype, info.shape.as_slice()))
            }),
        )?;
        let base_digests = base.and_then(|b| b.chunk_digests.as_deref());
        let mut tables: Vec<Option<Table>> = vec![None; declared.len()];
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        // In file order: a version without chunk digests is checked as one stream.
        for name in &listed {
            let i = declared
                .iter()
                .position(|spec| &spec.name == name)
                .ok_or_else(|| {
                    Error::invalid(
                        &path,
                        format!("a tensor `{name}` the architecture does not declare"),
                    )
                })?;
            let spec = &declared[i];
            let width = spec.width().unwrap_or(1).max(1);
            let mut builder = TableBuilder::new(
                spec.rows(),
                width,
                base.and_then(|b| b.table(name)),
                pace.new_blocks,
            );
            for chunk in 0.. {
                let len = builder.next_len();
                if len == 0 {
                    break;
                }
                let base_digest = base_digests.and_then(|d| d.chunk(name, chunk));
                let unchanged = base_digest.is_some() && weights.digest(name, chunk) == base_digest;
                if unchanged && builder.keep() {
                    continue;
                }
                let started = Instant::now();
                bytes.resize(len * 4, 0);
                weights.read_chunk(name, width, chunk, &mut bytes)?;
                values.clear();
                values.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                builder.push(&values).map_err(|e| {
                    Error::invalid(&dir, format!("value {} of `{name}` is not finite", e.index))
                })?;
                pace.rest_after(started.elapsed());
            }
            tables[i] = Some(builder.finish(|worked| pace.rest_after(worked)));
        }
        let chunk_digests = weights.finish()?;
        let tensors = declared
            .into_iter()
            .zip(tables)
            .map(|(spec, table)| match table {
                Some(table) => Ok(Tensor::new(spec, table)),
                None => Err(Error::invalid(&path, format!("no tensor `{}`", spec.name))),
            })
            .collect::<Result<_>>()?;
        Ok(ServedModel {
            meta,
            tensors,
            feature_map,
            chunk_digests,
        })
    }

    /// Loads the newest version of a model.
    ///
    /// # Errors
    ///
    /// [`Error::NoVersion`] when there is none, otherwise as [`Registry::load`].
    pub fn load_latest(&self, name: &str) -> Result<ModelArtifact> {
        let version = self
            .latest(name)?
            .ok_or_else(|| Error::NoVersion(name.to_owned()))?;
        self.load(name, version)
    }

    /// The metadata of the newest version of `name` (without reading its weights), if any.
    ///
    /// # Errors
    ///
    /// When the registry or the version's metadata cannot be read.
    pub fn latest_meta(&self, name: &str) -> Result<Option<ModelMeta>> {
        let Some(version) = self.latest(name)? else {
            return Ok(None);
        };
        let meta_path = self.version_dir(name, version)?.join(META);
        let bytes = fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        read_meta_json(&meta_path, &bytes).map(Some)
    }
}

/// Reads the `meta.json` at `path` (its `bytes`), its format version checked first.
fn read_meta_json(path: &Path, bytes: &[u8]) -> Result<ModelMeta> {
    let invalid = |e: serde_json::Error| Error::invalid(path, e.to_string());
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    crate::artifact::check_format_version(&value).map_err(|source| Error::FormatVersion {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_value(value).map_err(invalid)
}

/// Where serving finds model versions: a registry directory ([`Registry`]), or a compacted
/// Kafka topic that serving pods on many machines follow (`millrace-connectors`).
pub trait VersionSource: Send + Sync + std::fmt::Debug {
    /// The names of the models with at least one version, sorted.
    ///
    /// # Errors
    ///
    /// When the source cannot be read.
    fn models(&self) -> Result<Vec<String>>;

    /// The versions of a model that can be loaded now, ascending.
    ///
    /// # Errors
    ///
    /// When the source cannot be read.
    fn versions(&self, name: &str) -> Result<Vec<u64>>;

    /// Loads and validates a version for serving, sharing memory with `base` where it can.
    ///
    /// # Errors
    ///
    /// When the version is missing, corrupt or inconsistent.
    fn load_served(
        &self,
        name: &str,
        version: u64,
        base: Option<&ServedModel>,
        pace: LoadPace,
    ) -> Result<ServedModel>;

    /// Records that `holder` serves `versions` of `name`, so that whoever prunes the source
    /// keeps them (a directory's hold files); a source nobody prunes ignores it.
    ///
    /// # Errors
    ///
    /// When the hold cannot be recorded.
    fn hold(&self, name: &str, holder: &str, versions: &[u64]) -> Result<()> {
        let _ = (name, holder, versions);
        Ok(())
    }
}

impl VersionSource for Registry {
    fn models(&self) -> Result<Vec<String>> {
        Registry::models(self)
    }

    fn versions(&self, name: &str) -> Result<Vec<u64>> {
        Registry::versions(self, name)
    }

    fn load_served(
        &self,
        name: &str,
        version: u64,
        base: Option<&ServedModel>,
        pace: LoadPace,
    ) -> Result<ServedModel> {
        Registry::load_served(self, name, version, base, pace)
    }

    fn hold(&self, name: &str, holder: &str, versions: &[u64]) -> Result<()> {
        Registry::hold(self, name, holder, versions)
    }
}

/// How [`Registry::load_served`] loads a version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadPace {
    /// At most this many chunks of each table get a new block (see [`TableBuilder::new`]).
    pub new_blocks: usize,
    /// The share of one core the load may take, in (0, 1]: after each chunk it rests long
    /// enough that its work is this fraction of its time, so that serving threads keep the
    /// cores while a version loads. 1 never rests.
    pub cpu_share: f64,
}

impl Default for LoadPace {
    fn default() -> Self {
        LoadPace {
            new_blocks: 0,
            cpu_share: 1.0,
        }
    }
}

impl LoadPace {
    fn rest_after(&self, worked: Duration) {
        if self.cpu_share > 0.0 && self.cpu_share < 1.0 {
            std::thread::sleep(worked.mul_f64(1.0 / self.cpu_share - 1.0));
        }
    }
}

/// [`declared_tensors`] of a version in `dir` whose weights file, at `path`, lists
/// `(name, dtype, shape)`; a problem of the metadata is the version's, one of the tensors the
/// file's.
fn checked_tensors<'a>(
    (dir, path): (&Path, &Path),
    meta: &ModelMeta,
    feature_map: Option<&FeatureMap>,
    listed: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize])>,
) -> Result<Vec<TensorSpec>> {
    let stored = listed.into_iter().map(|(name, dtype, shape)| StoredTensor {
        name,
        rows: shape.first().copied().unwrap_or(1),
        width: row_width(shape),
        whole: dtype == Dtype::F32,
        shape: Some(shape),
    });
    declared_tensors(meta, feature_map, stored).map_err(|problems| match problems {
        StructureProblems::Meta(p) => Error::invalid(dir, p.join("; ")),
        StructureProblems::Tensors(p) => Error::invalid(path, p.join("; ")),
    })
}

/// The largest safetensors header read: ours is a few hundred bytes.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The FeatureMap stored with a version, checked against `meta`.
fn read_feature_map(dir: &Path, meta: &ModelMeta) -> Result<Option<Arc<FeatureMap>>> {
    let Some(stored) = &meta.feature_map else {
        return Ok(meta.features.unfitted_map());
    };
    let path = dir.join(FEATURE_MAP);
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let map = stored
        .read(&bytes)
        .map_err(|source| Error::FeatureMap { path, source })?;
    Ok(Some(Arc::new(map)))
}

impl FeatureMapMeta {
    /// The FeatureMap stored as `bytes` (its JSON), checked against this record of it: the
    /// checksum and the version.
    ///
    /// # Errors
    ///
    /// [`StoredMapError`]: why the bytes are not the FeatureMap this names.
    pub fn read(&self, bytes: &[u8]) -> std::result::Result<FeatureMap, StoredMapError> {
        if digests::hex_digest(bytes) != self.sha256 {
            return Err(StoredMapError::Checksum);
        }
        let map: FeatureMap = serde_json::from_slice(bytes)?;
        if map.version != self.version {
            return Err(StoredMapError::Version {
                stored: map.version,
                named: self.version,
            });
        }
        Ok(map)
    }
}

/// Creates `dir` with the given files, each flushed to disk, and the directory itself flushed,
/// so that a version renamed into place survives a crash complete.
fn write_durably(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, data) in files {
        let path = dir.join(name);
        let mut file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        std::io::Write::write_all(&mut file, data).map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_events::features::FeatureSpec;

    fn artifact(weights: Vec<f32>) -> ModelArtifact {
        ModelArtifact::logistic_regression("ctr", FeatureSpec::Hashed { hash_bits: 3 }, weights)
    }

    #[test]
    fn publishes_increasing_versions_and_loads_them() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.latest("ctr").unwrap(), None);
        let mut a = artifact(vec![0.5; 8]);
        assert_eq!(registry.publish(&mut a).unwrap(), 1);
        let mut b = artifact((0..8).map(|i| i as f32).collect());
        b.meta.trained_events = 42;
        assert_eq!(registry.publish(&mut b).unwrap(), 2);
        assert_eq!(registry.versions("ctr").unwrap(), vec![1, 2]);
        fs::write(dir.path().join("stray-file"), b"not a model").unwrap();
        assert_eq!(registry.models().unwrap(), vec!["ctr".to_owned()]);
        assert_eq!(registry.load_latest("ctr").unwrap(), b);
        assert_eq!(registry.load("ctr", 1).unwrap(), a);
    }

    /// A safetensors reader without `meta.json` learns from the header what the file holds.
    #[test]
    fn the_weights_header_says_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        registry.publish(&mut artifact(vec![0.5; 8])).unwrap();
        let mut fm = ModelArtifact::factorization_machine(
            "ctr",
            FeatureSpec::Hashed { hash_bits: 3 },
            vec![0.25; 8],
            2,
            vec![0.1; 16],
        );
        registry.publish(&mut fm).unwrap();
        let header = |version: u64| {
            let path = registry.version_dir("ctr", version).unwrap().join(WEIGHTS);
            let bytes = fs::read(path).unwrap();
            let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
            metadata.metadata().clone().unwrap()
        };
        let (first, second) = (header(1), header(2));
        assert_eq!(first["format"], "millrace");
        assert_eq!(first["format_version"], FORMAT_VERSION);
        assert_eq!(first["model"], "ctr");
        assert_eq!((&first["version"][..], &second["version"][..]), ("1", "2"));
        assert_eq!(first["model_kind"], "logistic_regression");
        assert_eq!(second["model_kind"], "factorization_machine");
        assert_eq!(first["features"], "hashed");
        assert_eq!(first["dimension"], "8");
        assert_eq!(first["schema_sha256"].len(), 64);
        assert_eq!(
            first["schema_sha256"], second["schema_sha256"],
            "the same fields"
        );
        // The same version is the same bytes, whatever order a map of the metadata is in.
        let checksums: std::collections::BTreeSet<String> = (0..8)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let mut again = fm.clone();
                Registry::open(dir.path())
                    .unwrap()
                    .publish(&mut again)
                    .unwrap();
                again.meta.weights_sha256
            })
            .collect();
        assert_eq!(checksums.len(), 1, "{checksums:?}");
    }

    #[test]
    fn factorization_machines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let spec = FeatureSpec::Hashed { hash_bits: 3 };
        let factors = (0..16).map(|i| i as f32 / 10.0).collect::<Vec<_>>();
        let mut fm =
            ModelArtifact::factorization_machine("ctr", spec.clone(), vec![0.25; 8], 2, Vec::new());
        assert!(
            registry.publish(&mut fm.clone()).is_err(),
            "factors missing"
        );
        fm = ModelArtifact::factorization_machine("ctr", spec, vec![0.25; 8], 2, factors);
        registry.publish(&mut fm).unwrap();
        let loaded = registry.load_latest("ctr").unwrap();
        assert_eq!(loaded, fm);
        let (row, ones) = ([0, 3, 5, 3], [1.0; 4]);
        assert_eq!(loaded.predict_row(&row, &ones), fm.predict_row(&row, &ones));
    }

    #[test]
    fn rejects_corrupt_and_inconsistent_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert!(registry.publish(&mut artifact(vec![0.0; 7])).is_err());
        assert!(registry.publish(&mut artifact(vec![f32::NAN; 8])).is_err());
        assert!(matches!(
            registry.publish(&mut ModelArtifact::logistic_regression(
                "../x",
                FeatureSpec::Hashed { hash_bits: 3 },
                vec![0.0; 8]
            )),
            Err(Error::InvalidModelName(_))
        ));
        let mut a = artifact(vec![1.0; 8]);
        registry.publish(&mut a).unwrap();
        let weights = registry.version_dir("ctr", 1).unwrap().join(WEIGHTS);
        let mut bytes = fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&weights, bytes).unwrap();
        let err = registry.load("ctr", 1).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(matches!(
            registry.load_latest("other"),
            Err(Error::NoVersion(_))
        ));
    }

    #[test]
    fn models_of_a_map_spec_carry_their_feature_map() {
        use millrace_events::fmap::{FeatureMapSpec, Parser, Schema};
        let spec = FeatureMapSpec::criteo_default();
        let layout = spec.compile(&Schema::criteo()).unwrap();
        // A fitted version: one epoch of ten events.
        let mut parser = Parser::new(&layout);
        let mut batch = millrace_events::EventBatch::new(39);
        for i in 0..10 {
            let line = format!("1\t{i}{}\tcafe{}", "\t".repeat(12), "\t".repeat(25));
            parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
        }
        let map = FeatureMap::fit(layout.clone(), std::slice::from_ref(&batch));
        let rows = map.transform(&batch, &mut Default::default());

        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let weights: Vec<f32> = (0..layout.dimension)
            .map(|i| (i % 7) as f32 / 10.0)
            .collect();
        let mut model = ModelArtifact::logistic_regression("ctr", FeatureSpec::Map(spec), weights);
        assert!(
            registry.publish(&mut model.clone()).is_err(),
            "a map spec without its FeatureMap"
        );
        model.feature_map = Some(Arc::new(map.clone()));
        registry.publish(&mut model).unwrap();
        assert_eq!(model.meta.feature_map.as_ref().unwrap().version, 1);
        let loaded = registry.load_latest("ctr").unwrap();
        assert_eq!(loaded, model);
        let (indices, values) = rows.row(0);
        assert_eq!(
            loaded.predict_row(indices, values),
            model.predict_row(indices, values)
        );

        // A FeatureMap whose state does not fit its layout is refused: an id past the
        // capacity would make slots outside the model.
        let mut broken = model.clone();
        let mut map = FeatureMap::clone(broken.feature_map.as_ref().unwrap());
        let vocab = map
            .features
            .iter_mut()
            .find_map(|f| match f {
                millrace_events::fmap::map::FeatureState::Vocab(ids) => Some(ids),
                _ => None,
            })
            .unwrap();
        vocab.insert(42, 100_000);
        map.features[0] = millrace_events::fmap::map::FeatureState::Stateless;
        broken.feature_map = Some(Arc::new(map));
        let problems = broken.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(registry.publish(&mut broken).is_err());

        // A FeatureMap of another spec, and a corrupt featuremap.json, are refused.
        let mut other = model.clone();
        let narrower = FeatureMapSpec {
            transforms: spec_without_last(&FeatureMapSpec::criteo_default()),
            ..FeatureMapSpec::criteo_default()
        };
        other.meta.features = FeatureSpec::Map(narrower);
        assert!(registry.publish(&mut other).is_err());
        let stored = registry.version_dir("ctr", 1).unwrap().join(FEATURE_MAP);
        let mut bytes = fs::read(&stored).unwrap();
        bytes[0] = b' ';
        fs::write(&stored, bytes).unwrap();
        let err = registry.load("ctr", 1).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn served_versions_stream_from_disk_and_share_what_did_not_change() {
        use crate::table::CHUNK_ROWS;
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let spec = FeatureSpec::Hashed { hash_bits: 16 };
        let weights: Vec<f32> = (0..spec.dimension(&millrace_events::Schema::criteo()))
            .map(|i| (i % 13) as f32 / 8.0)
            .collect();
        let factors = (0..3 * spec.dimension(&millrace_events::Schema::criteo()))
            .map(|i| (i % 7) as f32 / 16.0)
            .collect();
        let mut fm = ModelArtifact::factorization_machine("ctr", spec.clone(), weights, 3, factors);
        registry.publish(&mut fm).unwrap();
        let first = registry
            .load_served("ctr", 1, None, LoadPace::default())
            .unwrap();
        assert_eq!(first.to_artifact().tensors, fm.tensors);
        assert_eq!(first.meta, fm.meta);

        // The next version changes a few weights and one slot's factors.
        let mut next = fm.clone();
        let weights = &mut next.tensor_mut("weights").unwrap().values;
        weights[5] = 1.5;
        weights[3 * CHUNK_ROWS + 1] = -0.25;
        next.tensor_mut("factors").unwrap().values[3 * 70..3 * 71]
            .copy_from_slice(&[0.5, -0.5, 0.75]);
        registry.publish(&mut next).unwrap();
        let served = registry
            .load_served("ctr", 2, Some(&first), LoadPace::default())
            .unwrap();
        assert_eq!(served.to_artifact().tensors, next.tensors);
        let memory = served.memory(Some(&first));
        assert_eq!(memory.shared_bytes, memory.block_bytes, "{memory:?}");
        assert_eq!(memory.patch_bytes, 5 * 8, "{memory:?}");
        let (row, ones) = ([0, 5, 70, 3 * CHUNK_ROWS as u32 + 1], [1.0; 4]);
        for model in [&fm, &next] {
            let served = ServedModel::from_artifact(model);
            assert_eq!(
                served.predict_row(&row, &ones).to_bits(),
                model.predict_row(&row, &ones).to_bits()
            );
        }
        let rows: Vec<u32> = vec![5, 70, 3 * CHUNK_ROWS as u32 + 1, 9];
        let values = [1.0, 0.5, 2.0, -1.0];
        assert_eq!(
            served.predict_row(&rows, &values).to_bits(),
            next.predict_row(&rows, &values).to_bits()
        );
        let (fixed, clipped) = served.to_q213(1);
        let (want, want_clipped) = next.to_q213(1);
        assert_eq!(clipped, want_clipped);
        assert_eq!(
            fixed.predict_row(&rows, &values).to_bits(),
            want.predict_row(&rows, &values).to_bits()
        );
        assert_eq!(
            fixed.memory(None).block_bytes * 2,
            ServedModel::from_artifact(&next).memory(None).block_bytes
        );
        let (int8, want) = (served.to_int8(), next.to_int8());
        assert_eq!(
            int8.predict_row(&rows, &values).to_bits(),
            want.predict_row(&rows, &values).to_bits()
        );
        assert_ne!(want.tensors, next.tensors, "the tensors were rounded");

        // A corrupt or non-finite version is refused, and the base is untouched.
        let weights = registry.version_dir("ctr", 2).unwrap().join(WEIGHTS);
        let mut bytes = fs::read(&weights).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x40;
        fs::write(&weights, &bytes).unwrap();
        let err = registry
            .load_served("ctr", 2, Some(&first), LoadPace::default())
            .unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        // A non-finite value whose chunk digest was made to match.
        let nan = f32::NAN.to_le_bytes();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        bytes[header..header + 4].copy_from_slice(&nan);
        fs::write(&weights, &bytes).unwrap();
        let (dir, _) = registry.read_meta("ctr", 2).unwrap();
        let mut digests = weights::read_digests(&dir.join(digests::CHUNKS), u64::MAX)
            .unwrap()
            .unwrap();
        let first_tensor = &mut digests.tensors[0];
        assert_eq!(
            first_tensor.name, "factors",
            "the header lists tensors by name"
        );
        let chunk_len = digests::chunk_bytes(3);
        first_tensor.chunks[0] = digests::hex_digest(&bytes[header..header + chunk_len]);
        fs::write(
            dir.join(digests::CHUNKS),
            serde_json::to_vec(&digests).unwrap(),
        )
        .unwrap();
        let err = registry
            .load_served("ctr", 2, None, LoadPace::default())
            .unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
        bytes.truncate(bytes.len() - 3);
        fs::write(&weights, &bytes).unwrap();
        let err = registry
            .load_served("ctr", 2, None, LoadPace::default())
            .unwrap_err();
        assert!(err.to_string().contains("the tensors end at byte"), "{err}");
        assert_eq!(first.to_artifact().tensors, fm.tensors);
    }

    /// A factorization machine of `rows` slots and 2 factors, its values a function of `seed`.
    fn fm_of(rows: u32, seed: u32) -> ModelArtifact {
        let spec = FeatureSpec::Hashed {
            hash_bits: rows.trailing_zeros(),
        };
        let value = |i: u32| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 1000.0;
        let dimension = spec.dimension(&millrace_events::Schema::criteo()) as u32;
        ModelArtifact::factorization_machine(
            "ctr",
            spec,
            (0..dimension).map(value).collect(),
            2,
            (0..2 * dimension).map(|i| value(i + 7)).collect(),
        )
    }

    /// Why `registry` refuses to serve `version` of `ctr` over `base`.
    fn refusal(registry: &Registry, version: u64, base: Option<&ServedModel>) -> String {
        registry
            .load_served("ctr", version, base, LoadPace::default())
            .unwrap_err()
            .to_string()
    }

    /// Flips a bit of chunk `chunk` of the tensor `name` in a version's weights file, leaving
    /// its digests as they were.
    fn corrupt_chunk(registry: &Registry, version: u64, name: &str, chunk: usize) {
        let path = registry.version_dir("ctr", version).unwrap().join(WEIGHTS);
        let mut bytes = fs::read(&path).unwrap();
        let (length, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let info = header.info(name).unwrap();
        let width = row_width(&info.shape).unwrap();
        let at = 8 + length + info.data_offsets.0 + chunk * digests::chunk_bytes(width) + 5;
        bytes[at] ^= 0x10;
        fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn only_the_chunks_that_changed_are_read() {
        use crate::table::CHUNK_ROWS;
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let mut v1 = fm_of(1 << 16, 1);
        registry.publish(&mut v1).unwrap();
        // v2 changes one weight in chunk 2 and one slot's factors in chunk 1.
        let mut v2 = v1.clone();
        v2.tensor_mut("weights").unwrap().values[2 * CHUNK_ROWS + 3] = 0.125;
        v2.tensor_mut("factors").unwrap().values[2 * (CHUNK_ROWS + 9)] = -0.5;
        registry.publish(&mut v2).unwrap();
        // Bytes of v2's unchanged chunks are corrupted: a load that reads them fails.
        corrupt_chunk(&registry, 2, "weights", 0);
        corrupt_chunk(&registry, 2, "factors", 3);
        let err = refusal(&registry, 2, None);
        assert!(
            err.contains("chunk 0 of `weights`: checksum mismatch")
                || err.contains("chunk 3 of `factors`: checksum mismatch"),
            "{err}"
        );

        let first = registry
            .load_served("ctr", 1, None, LoadPace::default())
            .unwrap();
        assert!(first.chunk_digests.is_some());
        let second = registry
            .load_served("ctr", 2, Some(&first), LoadPace::default())
            .unwrap();
        assert_eq!(
            second.to_artifact().tensors,
            v2.tensors,
            "read what changed, kept the rest"
        );
        let memory = second.memory(Some(&first));
        assert_eq!(memory.shared_bytes, memory.block_bytes, "{memory:?}");
        assert_eq!(memory.patch_bytes, 2 * 8, "{memory:?}");

        // A changed chunk that does not match its digest is refused, unchanged ones or not.
        let mut v3 = v2.clone();
        v3.tensor_mut("weights").unwrap().values[0] = 0.5;
        registry.publish(&mut v3).unwrap();
        corrupt_chunk(&registry, 3, "weights", 0);
        let err = refusal(&registry, 3, Some(&second));
        assert!(
            err.contains("chunk 0 of `weights`: checksum mismatch"),
            "{err}"
        );

        // A base from elsewhere has no digests: every chunk is read.
        let elsewhere = ServedModel::from_artifact(&v1);
        let err = refusal(&registry, 2, Some(&elsewhere));
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn a_version_without_chunk_digests_is_read_whole_and_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let mut v1 = fm_of(1 << 15, 1);
        registry.publish(&mut v1).unwrap();
        let mut v2 = fm_of(1 << 15, 2);
        registry.publish(&mut v2).unwrap();
        for version in [1, 2] {
            let dir = registry.version_dir("ctr", version).unwrap();
            fs::remove_file(dir.join(digests::CHUNKS)).unwrap();
        }
        let first = registry
            .load_served("ctr", 1, None, LoadPace::default())
            .unwrap();
        assert_eq!(first.chunk_digests, None);
        let second = registry
            .load_served("ctr", 2, Some(&first), LoadPace::default())
            .unwrap();
        assert_eq!(second.to_artifact().tensors, v2.tensors);
        corrupt_chunk(&registry, 2, "factors", 1);
        let err = refusal(&registry, 2, Some(&first));
        assert!(
            err.ends_with("weights.safetensors: checksum mismatch"),
            "{err}"
        );

        // Over a base with digests, a version without them is read whole: a chunk the
        // same as the base's, corrupted, is found.
        let mut v3 = fm_of(1 << 15, 1);
        registry.publish(&mut v3).unwrap();
        let third = registry
            .load_served("ctr", 3, None, LoadPace::default())
            .unwrap();
        assert!(third.chunk_digests.is_some());
        let mut v4 = v3.clone();
        v4.tensor_mut("weights").unwrap().values[1] = 0.25;
        registry.publish(&mut v4).unwrap();
        let v4_dir = registry.version_dir("ctr", 4).unwrap();
        let listed = fs::read(v4_dir.join(digests::CHUNKS)).unwrap();
        fs::remove_file(v4_dir.join(digests::CHUNKS)).unwrap();
        corrupt_chunk(&registry, 4, "factors", 0);
        let err = refusal(&registry, 4, Some(&third));
        assert!(
            err.ends_with("weights.safetensors: checksum mismatch"),
            "{err}"
        );
        // Digests of chunks of another size are not used: the version is read whole.
        let mut other = serde_json::from_slice::<ChunkDigests>(&listed).unwrap();
        other.chunk_rows /= 2;
        fs::write(
            v4_dir.join(digests::CHUNKS),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        let err = refusal(&registry, 4, Some(&third));
        assert!(
            err.ends_with("weights.safetensors: checksum mismatch"),
            "{err}"
        );
    }

    #[test]
    fn digests_that_do_not_describe_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        registry.publish(&mut fm_of(1 << 15, 1)).unwrap();
        let version = registry.version_dir("ctr", 1).unwrap();
        let original = weights::read_digests(&version.join(digests::CHUNKS), u64::MAX)
            .unwrap()
            .unwrap();
        let load = |digests: &ChunkDigests| {
            fs::write(
                version.join(digests::CHUNKS),
                serde_json::to_vec(digests).unwrap(),
            )
            .unwrap();
            registry
                .load_served("ctr", 1, None, LoadPace::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(load(&original), Ok(()));
        let mut header = original.clone();
        header.header = digests::hex_digest(b"another header");
        let err = load(&header).unwrap_err();
        assert!(
            err.contains(
                "chunks.json: the header of weights.safetensors does not have the digest listed"
            ),
            "{err}"
        );
        let mut short = original.clone();
        short.tensors[1].chunks.pop();
        let err = load(&short).unwrap_err();
        assert!(
            err.contains("chunks.json: does not list the 2 chunks of `weights`"),
            "{err}"
        );
        let mut fewer = original.clone();
        fewer.tensors.pop();
        let err = load(&fewer).unwrap_err();
        assert!(
            err.contains("lists 1 tensors where weights.safetensors has 2"),
            "{err}"
        );
        let load_bytes = |bytes: &[u8]| {
            fs::write(version.join(digests::CHUNKS), bytes).unwrap();
            refusal(&registry, 1, None)
        };
        let err = load_bytes(b"{");
        assert!(err.contains("chunks.json: EOF while parsing"), "{err}");
        let err = load_bytes(&vec![b' '; 2 << 20]);
        assert!(err.contains("chunks.json: more than the"), "{err}");
    }

    fn spec_without_last(
        spec: &millrace_events::FeatureMapSpec,
    ) -> Vec<millrace_events::fmap::TransformSpec> {
        spec.transforms[..spec.transforms.len() - 1].to_vec()
    }
}
