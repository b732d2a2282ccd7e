//! A model version as one artifact: its metadata (the architecture descriptor and the feature
//! spec it was trained with among it), its named tensors, and for a `map` spec the fitted
//! FeatureMap version the tensors belong to. Serving evaluates an artifact with the same
//! transform the trainer used, so a model is never served with features it was not trained on.

use crate::deep::deep_logit;
use crate::table::{Table, TableMemory};
use millrace_events::features::FeatureSpec;
use millrace_events::fmap::{FeatureMap, Schema};
use millrace_events::logistic::sigmoid;
use millrace_learners::architecture::{
    element_count, row_width, Architecture, TensorSpec, FACTORS, WEIGHTS,
};
use millrace_learners::fm::{pairwise_margin, FactorRows};
use millrace_learners::learner::Learner;
use millrace_learners::row_values::RowValues;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The artifact format this code writes, `MAJOR.MINOR`. A reader refuses an artifact of a
/// newer major version with a message that says so. A newer minor version may change only what
/// an older reader reads alike (metadata keys are checked strictly, so a new key is a new major
/// version); readers are upgraded before writers.
///
/// - 1.x: artifacts written before format versions (their `meta.json` has no key for it);
///   their FeatureMap's schema names the fields of a Criteo line.
/// - 2.0: a FeatureMap's schema declares its fields' types and how records hold them.
/// - 3.0: an `architecture` descriptor (the model's type and hyper-parameters, which declare
///   its named tensors) in place of the `kind` of 1.x and 2.x.
/// - 3.1: a registry version also lists the SHA-256 of each chunk of its tensors
///   (`chunks.json`), so that serving reads only the chunks that changed.
pub const FORMAT_VERSION: &str = "3.1";

/// The format version of an artifact whose `meta.json` names none.
fn format_version_before() -> String {
    "1.0".to_owned()
}

/// Checks the `format_version` of an artifact's metadata (a `meta.json`, or a registry
/// manifest's `meta`) before the rest is read, so that an artifact of a newer major version is
/// refused with a clear message rather than whatever its new keys would make of it.
///
/// # Errors
///
/// [`FormatVersionError`] when the version is not `MAJOR.MINOR`, or its major version is newer
/// than [`FORMAT_VERSION`]'s.
///
/// # Examples
///
/// ```
/// use millrace_artifacts::artifact::check_format_version;
///
/// assert!(check_format_version(&serde_json::json!({"name": "ctr"})).is_ok());
/// assert!(check_format_version(&serde_json::json!({"format_version": "3.7"})).is_ok());
/// let newer = check_format_version(&serde_json::json!({"format_version": "4.0"}));
/// assert!(newer.unwrap_err().to_string().contains("newer"));
/// ```
pub fn check_format_version(
    meta: &serde_json::Value,
) -> std::result::Result<(), FormatVersionError> {
    let Some(version) = meta.get("format_version") else {
        return Ok(());
    };
    let ours = major(FORMAT_VERSION).unwrap_or(0);
    match version.as_str().and_then(major) {
        Some(theirs) if theirs <= ours => Ok(()),
        Some(_) => Err(FormatVersionError::Newer(version.to_string())),
        None => Err(FormatVersionError::Malformed(version.to_string())),
    }
}

/// An artifact's `format_version` that this reader cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatVersionError {
    /// A newer major version (as its JSON text).
    #[error("the artifact's format version {0} is newer than this reader's {FORMAT_VERSION}: upgrade millrace to read it")]
    Newer(String),
    /// Not `MAJOR.MINOR` (as its JSON text).
    #[error("`format_version` must be MAJOR.MINOR, such as \"{FORMAT_VERSION}\" (got {0})")]
    Malformed(String),
}

/// The major version of `MAJOR.MINOR`.
fn major(version: &str) -> Option<u64> {
    let (major, minor) = version.split_once('.')?;
    minor.parse::<u64>().ok()?;
    major.parse().ok()
}

/// What the registry records about a model version besides its tensors (`meta.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredMeta")]
pub struct ModelMeta {
    /// The artifact format it was read in (`1.0` for artifacts written before format
    /// versions). Written out, metadata is always this reader's [`FORMAT_VERSION`]: it names
    /// an `architecture`, which older readers do not know.
    #[serde(serialize_with = "this_format")]
    pub format_version: String,
    /// The model's name, as served under `/v1/models/{name}`.
    pub name: String,
    /// The version number, assigned by the registry at publication (1, 2, …).
    pub version: u64,
    /// What the model is: its type and hyper-parameters, which declare its tensors.
    pub architecture: Architecture,
    /// The transform from events to rows that the tensors belong to.
    pub features: FeatureSpec,
    /// Number of events the model had learned from when it was published.
    pub trained_events: u64,
    /// Progressive-validation AUC over those events, when both classes were seen.
    pub progressive_auc: Option<f64>,
    /// Progressive-validation log-loss over those events.
    pub progressive_logloss: Option<f64>,
    /// Publication time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// SHA-256 of `weights.safetensors` (every tensor), hex; checked by a whole load, and by
    /// serving's load of a version without chunk digests (`chunks.json`).
    pub weights_sha256: String,
    /// For a `map` spec: the FeatureMap version stored beside the tensors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_map: Option<FeatureMapMeta>,
}

impl ModelMeta {
    /// The tensors the architecture declares over the feature spec's dimension, read against
    /// the schema of `feature_map`, the model's FeatureMap (Criteo's in artifacts written
    /// before declared schemas, which have none).
    pub fn tensors(&self, feature_map: Option<&FeatureMap>) -> Vec<TensorSpec> {
        let criteo = Schema::criteo();
        let schema = feature_map.map_or(&criteo, |map| &map.layout.schema);
        self.architecture.tensors(self.features.dimension(schema))
    }
}

/// Writes [`FORMAT_VERSION`], the format metadata is written in, whatever it was read in.
fn this_format<S: serde::Serializer>(_: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(FORMAT_VERSION)
}

/// A `meta.json` as any format version wrote it: format 3 names an `architecture`, formats 1
/// and 2 a `kind` (or an `architecture`, where a reader of format 3 wrote their metadata
/// before it stamped its own format on what it writes).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMeta {
    #[serde(default = "format_version_before")]
    format_version: String,
    name: String,
    version: u64,
    #[serde(default)]
    architecture: Option<Architecture>,
    #[serde(default)]
    kind: Option<KindBefore3>,
    features: FeatureSpec,
    trained_events: u64,
    progressive_auc: Option<f64>,
    progressive_logloss: Option<f64>,
    created_unix_ms: u64,
    weights_sha256: String,
    #[serde(default)]
    feature_map: Option<FeatureMapMeta>,
}

/// The `kind` of formats 1 and 2: `"logistic_regression"` or `{"factorization_machine":
/// {"factors": K}}`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum KindBefore3 {
    LogisticRegression,
    FactorizationMachine { factors: usize },
}

impl TryFrom<StoredMeta> for ModelMeta {
    type Error = String;

    fn try_from(stored: StoredMeta) -> std::result::Result<Self, String> {
        // Format 3 names an `architecture`; formats 1 and 2 a `kind`, or an `architecture`
        // when a reader of format 3 wrote the metadata of an older artifact back out.
        let before_3 = major(&stored.format_version).is_some_and(|m| m < 3);
        let architecture = match (stored.architecture, stored.kind) {
            (Some(architecture), None) => architecture,
            (None, Some(kind)) if before_3 => match kind {
                KindBefore3::LogisticRegression => Architecture::LogisticRegression {},
                KindBefore3::FactorizationMachine { factors } => {
                    Architecture::FactorizationMachine { factors }
                }
            },
            (None, Some(_)) => {
                return Err(format!(
                    "format {} names the model's `architecture`, not a `kind`",
                    stored.format_version
                ))
            }
            _ => return Err("the metadata names the model's `architecture` (or, before format 3, its `kind`), once".to_owned()),
        };
        Ok(ModelMeta {
            format_version: stored.format_version,
            name: stored.name,
            version: stored.version,
            architecture,
            features: stored.features,
            trained_events: stored.trained_events,
            progressive_auc: stored.progressive_auc,
            progressive_logloss: stored.progressive_logloss,
            created_unix_ms: stored.created_unix_ms,
            weights_sha256: stored.weights_sha256,
            feature_map: stored.feature_map,
        })
    }
}

/// What `meta.json` records about the FeatureMap stored with a model (`featuremap.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureMapMeta {
    /// The FeatureMap version the tensors belong to.
    pub version: u64,
    /// SHA-256 of `featuremap.json`, hex; checked on load.
    pub sha256: String,
}

/// One named tensor of a model: its values, row-major, as a `Vec` in an artifact or a
/// copy-on-write [`Table`] in a served model.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<V = Vec<f32>> {
    /// The name its architecture gives it.
    pub name: String,
    /// Its shape, rows first.
    pub shape: Vec<usize>,
    /// The values.
    pub values: V,
}

impl<V> Tensor<V> {
    /// The tensor `spec` declares, holding `values`.
    pub fn new(spec: TensorSpec, values: V) -> Self {
        Tensor {
            name: spec.name,
            shape: spec.shape,
            values,
        }
    }

    /// The same tensor with its values mapped by `f`.
    fn map<W>(&self, f: impl FnOnce(&V) -> W) -> Tensor<W> {
        Tensor {
            name: self.name.clone(),
            shape: self.shape.clone(),
            values: f(&self.values),
        }
    }
}

/// A complete model version: metadata and tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelArtifact {
    /// The metadata.
    pub meta: ModelMeta,
    /// The tensors, as `meta.architecture` declares them ([`Architecture::tensors`]).
    pub tensors: Vec<Tensor>,
    /// The FeatureMap the model's rows come from: the fitted version of a `map` spec, or a
    /// hashed spec's [`FeatureSpec::unfitted_map`]; only a fitted one is stored.
    pub feature_map: Option<Arc<FeatureMap>>,
}

impl ModelArtifact {
    /// A not-yet-published artifact: version and checksum are filled in by the registry.
    pub fn new(
        name: &str,
        features: FeatureSpec,
        architecture: Architecture,
        tensors: Vec<Tensor>,
    ) -> Self {
        let features_map = features.unfitted_map();
        ModelArtifact {
            meta: ModelMeta {
                format_version: FORMAT_VERSION.to_owned(),
                name: name.to_owned(),
                version: 0,
                architecture,
                features,
                trained_events: 0,
                progressive_auc: None,
                progressive_logloss: None,
                created_unix_ms: 0,
                weights_sha256: String::new(),
                feature_map: None,
            },
            tensors,
            feature_map: features_map,
        }
    }

    /// The artifact of a logistic regression over `weights.len()` slots.
    pub fn logistic_regression(name: &str, features: FeatureSpec, weights: Vec<f32>) -> Self {
        let architecture = Architecture::LogisticRegression {};
        let tensors = with_values(&architecture, weights.len(), [weights]);
        ModelArtifact::new(name, features, architecture, tensors)
    }

    /// The artifact of a factorization machine over `weights.len()` slots, with `k` latent
    /// factors per slot (`factors`, slot-major).
    pub fn factorization_machine(
        name: &str,
        features: FeatureSpec,
        weights: Vec<f32>,
        k: usize,
        factors: Vec<f32>,
    ) -> Self {
        let architecture = Architecture::FactorizationMachine { factors: k };
        let tensors = with_values(&architecture, weights.len(), [weights, factors]);
        ModelArtifact::new(name, features, architecture, tensors)
    }

    /// The model `learner` has learned as an artifact (not yet published) named `name`, for
    /// rows made by `features`.
    pub fn of_learner(learner: &Learner, name: &str, features: FeatureSpec) -> Self {
        match learner {
            Learner::Ftrl(m) => ModelArtifact::logistic_regression(name, features, m.weights()),
            Learner::Fm(m) => ModelArtifact::factorization_machine(
                name,
                features,
                m.weights(),
                m.params().factors,
                m.factors().to_vec(),
            ),
        }
    }

    /// The values of the tensor named `name`; empty when there is none.
    pub fn values(&self, name: &str) -> &[f32] {
        values_of(&self.tensors, name).map_or(&[], Vec::as_slice)
    }

    /// The tensor named `name`, to change, if the model has one.
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors.iter_mut().find(|t| t.name == name)
    }

    /// The FeatureMap a registry stores with the model: a `map` spec's fitted one. A hashed
    /// spec's fits nothing and is made again on load ([`FeatureSpec::unfitted_map`]).
    pub fn fitted_feature_map(&self) -> Option<&Arc<FeatureMap>> {
        match self.meta.features {
            FeatureSpec::Map(_) => self.feature_map.as_ref(),
            FeatureSpec::Hashed { .. } => None,
        }
    }

    /// Problems that make the artifact unservable, empty when it is consistent.
    pub fn problems(&self) -> Vec<String> {
        let shapes = self.tensors.iter().map(|t| StoredTensor {
            name: &t.name,
            rows: t.shape.first().copied().unwrap_or(1),
            width: row_width(&t.shape),
            whole: element_count(&t.shape) == Some(t.values.len()),
            shape: Some(&t.shape),
        });
        let mut problems = shape_problems(&self.meta, shapes, self.feature_map.as_deref());
        problems.extend(self.value_problems());
        problems
    }

    /// The numbers that are not finite, a problem per tensor: what a loader still checks
    /// once the structure passed [`declared_tensors`].
    pub fn value_problems(&self) -> Vec<String> {
        let first = |t: &Tensor| t.values.iter().position(|v| !v.is_finite());
        non_finite(&self.tensors, first)
    }

    /// The model with every tensor rounded to q2.13 fixed point ([`crate::fixed`], randomized
    /// rounding seeded by `seed` and the tensor's position) and decoded back, as a model stored
    /// in 16 bits per number would predict; with how many numbers were clipped to `[-4, 4)`.
    pub fn to_q213(&self, seed: u64) -> (ModelArtifact, usize) {
        let mut clipped = 0;
        let mut model = self.clone();
        for (i, tensor) in model.tensors.iter_mut().enumerate() {
            let (codes, clipped_here) = crate::fixed::quantize(&tensor.values, seed ^ i as u64);
            tensor.values = codes.into_iter().map(crate::fixed::decode).collect();
            clipped += clipped_here;
        }
        (model, clipped)
    }

    /// The model with every tensor rounded to 8 bits with a scale per group ([`crate::int8`])
    /// and decoded back, as a model served with `--weights int8` predicts.
    pub fn to_int8(&self) -> ModelArtifact {
        let mut model = self.clone();
        for tensor in &mut model.tensors {
            tensor.values = crate::int8::round_trip(&tensor.values);
        }
        model
    }

    /// The click probability of a row with a value per index, such as a row of the model's
    /// FeatureMap ([`millrace_events::CsrBatch::row`]). Indices outside the model, which no row of its
    /// FeatureMap has, count as zero; a factorization machine then scores the row linearly.
    ///
    /// # Panics
    ///
    /// If `values` is shorter than `indices`.
    pub fn predict_row(&self, indices: &[u32], values: &[f32]) -> f32 {
        self.predict_values(indices, values)
    }

    fn predict_values(&self, row: &[u32], values: impl RowValues) -> f32 {
        if let Some(shape) = self.meta.architecture.deep() {
            let rows_of = |name: &str| {
                let t = self.tensors.iter().find(|t| t.name == name)?;
                let width = row_width(&t.shape).filter(|&w| w > 0)?;
                Some((t.values.len() / width, width, t.values.as_slice()))
            };
            let logit = self
                .feature_map
                .as_deref()
                .and_then(|map| deep_logit(&shape, map, (row, values), rows_of));
            return sigmoid(logit.unwrap_or(0.0));
        }
        let weights = self.values(WEIGHTS);
        let factors = self.values(FACTORS);
        // Whole rows of factors only: an inconsistent artifact scores linearly.
        let factor_rows = match self.meta.architecture {
            Architecture::FactorizationMachine { factors: k } if k > 0 => factors.len() / k,
            _ => 0,
        };
        score(
            &self.meta.architecture,
            row,
            values,
            weights.len(),
            |i| weights.get(i).copied(),
            Some((factor_rows, factors)),
        )
    }
}

/// The tensors `architecture` declares over `dimension` slots, holding `values` in order.
fn with_values(
    architecture: &Architecture,
    dimension: usize,
    values: impl IntoIterator<Item = Vec<f32>>,
) -> Vec<Tensor> {
    architecture
        .tensors(dimension)
        .into_iter()
        .zip(values)
        .map(|(spec, values)| Tensor::new(spec, values))
        .collect()
}

/// The values of the tensor named `name` among `tensors`.
fn values_of<'a, V>(tensors: &'a [Tensor<V>], name: &str) -> Option<&'a V> {
    tensors.iter().find(|t| t.name == name).map(|t| &t.values)
}

/// A problem per tensor that holds a number that is not finite (`first` finds the first).
fn non_finite<V>(
    tensors: &[Tensor<V>],
    first: impl Fn(&Tensor<V>) -> Option<usize>,
) -> Vec<String> {
    let found = tensors.iter().filter_map(|t| Some((first(t)?, &t.name)));
    found
        .map(|(i, name)| format!("value {i} of `{name}` is not finite"))
        .collect()
}

/// Why a stored model's structure is not one to load ([`declared_tensors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StructureProblems {
    /// The metadata with its FeatureMap (`meta_problems`).
    Meta(Vec<String>),
    /// The stored tensors against those declared (`tensor_problems`).
    Tensors(Vec<String>),
}

/// Checks a stored model's metadata with its FeatureMap, then its `stored` tensors against
/// those the architecture declares: what every registry does before it reads a number.
///
/// # Errors
///
/// The problems of the first check that found any.
pub fn declared_tensors<'a>(
    meta: &ModelMeta,
    feature_map: Option<&FeatureMap>,
    stored: impl IntoIterator<Item = StoredTensor<'a>>,
) -> Result<Vec<TensorSpec>, StructureProblems> {
    let problems = meta_problems(meta, feature_map);
    if !problems.is_empty() {
        return Err(StructureProblems::Meta(problems));
    }
    let declared = meta.tensors(feature_map);
    let problems = tensor_problems(&declared, stored);
    if !problems.is_empty() {
        return Err(StructureProblems::Tensors(problems));
    }
    Ok(declared)
}

/// The problems of an artifact's shape, as [`declared_tensors`] finds them.
fn shape_problems<'a>(
    meta: &ModelMeta,
    tensors: impl IntoIterator<Item = StoredTensor<'a>>,
    feature_map: Option<&FeatureMap>,
) -> Vec<String> {
    match declared_tensors(meta, feature_map, tensors) {
        Ok(_) => Vec::new(),
        Err(StructureProblems::Meta(problems) | StructureProblems::Tensors(problems)) => problems,
    }
}

/// The problems of a model's metadata with its FeatureMap: the architecture's
/// hyper-parameters, the feature spec over the FeatureMap's schema (Criteo's in artifacts
/// written before declared schemas), and the FeatureMap itself. Checked before the tensors,
/// whose declared shapes mean nothing while these are wrong.
fn meta_problems(meta: &ModelMeta, feature_map: Option<&FeatureMap>) -> Vec<String> {
    let criteo = Schema::criteo();
    let schema = feature_map.map_or(&criteo, |map| &map.layout.schema);
    let mut problems = meta.architecture.problems();
    problems.extend(meta.features.problems(schema));
    match feature_map {
        Some(map) => {
            if meta.features.compile(&map.layout.schema).ok().as_ref() != Some(&map.layout) {
                problems.push("the FeatureMap was not made from the model's spec".to_owned());
            }
            problems.extend(
                map.problems()
                    .into_iter()
                    .map(|p| format!("FeatureMap: {p}")),
            );
            if let Some(deep) = meta.architecture.deep() {
                if deep.fields != map.layout.features.len() {
                    problems.push(format!(
                        "the deep model has {} fields, its FeatureMap {} features",
                        deep.fields,
                        map.layout.features.len()
                    ));
                }
            }
        }
        None => problems.push("the model has no FeatureMap to make its rows".to_owned()),
    }
    problems
}

/// A tensor as a registry or an artifact holds it, to check against its declaration.
#[derive(Clone, Copy, Debug)]
pub struct StoredTensor<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its rows (the first dimension).
    pub rows: usize,
    /// The numbers per row; `None` when the shape's product overflows.
    pub width: Option<usize>,
    /// Whether it holds `f32` values filling `rows × width`.
    pub whole: bool,
    /// Its whole shape where the store records one (a safetensors header, an artifact), which
    /// must then be the declared shape exactly; `None` where only rows and width are kept (a
    /// registry topic's manifest).
    pub shape: Option<&'a [usize]>,
}

/// How `stored` tensors differ from those `declared` (an architecture's): each declared name
/// once, with its rows and width, holding whole values, and nothing else; in any order.
fn tensor_problems<'a>(
    declared: &[TensorSpec],
    stored: impl IntoIterator<Item = StoredTensor<'a>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for tensor in stored {
        let name = tensor.name;
        let Some(spec) = declared.iter().find(|spec| spec.name == name) else {
            problems.push(format!(
                "a tensor `{name}` the architecture does not declare"
            ));
            continue;
        };
        let fits = match tensor.shape {
            Some(shape) => shape == spec.shape,
            None => (tensor.rows, tensor.width) == (spec.rows(), spec.width()),
        };
        if seen.contains(&name) {
            problems.push(format!("`{name}` twice"));
        } else if !fits {
            let shape = match (tensor.shape, tensor.width) {
                (Some(shape), _) => format!("shape {shape:?}"),
                (None, Some(width)) => format!("{} rows of {width}", tensor.rows),
                (None, None) => format!("{} rows of too many numbers", tensor.rows),
            };
            problems.push(format!(
                "`{name}` has {shape} where the architecture declares shape {:?}",
                spec.shape
            ));
        } else if !tensor.whole {
            problems.push(format!("`{name}` is not f32 values filling its shape"));
        }
        seen.push(name);
    }
    for spec in declared
        .iter()
        .filter(|spec| !seen.contains(&spec.name.as_str()))
    {
        problems.push(format!(
            "no tensor `{}` (shape {:?}) where the architecture declares one",
            spec.name, spec.shape
        ));
    }
    problems
}

/// The click probability of a row: the linear margin over `dimension` weights (indices past it
/// count as zero, and a factorization machine then scores the row linearly) plus, for a
/// factorization machine, the pairwise margin over `factors` (its row count and rows), when
/// it has them.
fn score<F: FactorRows + ?Sized>(
    architecture: &Architecture,
    row: &[u32],
    values: impl RowValues,
    dimension: usize,
    weight: impl Fn(usize) -> Option<f32>,
    factors: Option<(usize, &F)>,
) -> f32 {
    let linear: f32 = row
        .iter()
        .enumerate()
        .map(|(k, &i)| weight(i as usize).map_or(0.0, |w| w * values.at(k)))
        .sum();
    match (architecture, factors) {
        (&Architecture::FactorizationMachine { factors: k }, Some((rows, factors)))
            if rows == dimension && row.iter().all(|&i| (i as usize) < dimension) =>
        {
            let mut sums = Vec::with_capacity(k);
            sigmoid(linear + pairwise_margin(row, values, factors, k, &mut sums))
        }
        _ => sigmoid(linear),
    }
}

/// A model version as serving holds it: the artifact's tensors in copy-on-write [`Table`]s,
/// which share their unchanged chunks with the versions loaded before it
/// ([`crate::Registry::load_served`]).
#[derive(Clone, Debug)]
pub struct ServedModel {
    /// The metadata.
    pub meta: ModelMeta,
    /// The tensors, as `meta.architecture` declares them, each a table of its rows.
    pub tensors: Vec<Tensor<Table>>,
    /// The fitted FeatureMap the rows of a `map` spec come from.
    pub feature_map: Option<Arc<FeatureMap>>,
    /// The digest of each chunk of its tables as the registry directory stored them: loading
    /// the next version reads only the chunks whose digests differ. `None` for a model from
    /// elsewhere or a registry version written without them. Only a load that checked them
    /// sets them, so that they describe exactly these tables.
    pub(crate) chunk_digests: Option<Arc<crate::digests::ChunkDigests>>,
}

impl ServedModel {
    /// The served form of an artifact, in fresh blocks.
    pub fn from_artifact(artifact: &ModelArtifact) -> Self {
        ServedModel {
            meta: artifact.meta.clone(),
            tensors: artifact
                .tensors
                .iter()
                .map(|t| {
                    // A tensor whose values do not fill whole rows (an inconsistent artifact,
                    // which `problems` reports) is held as a vector rather than refused here.
                    let width = row_width(&t.shape)
                        .filter(|&w| w > 0 && t.values.len() % w == 0)
                        .unwrap_or(1);
                    t.map(|values| Table::from_values(values, width))
                })
                .collect(),
            feature_map: artifact.feature_map.clone(),
            chunk_digests: None,
        }
    }

    /// The artifact this model serves, its tensors as plain values: the inverse of
    /// [`ServedModel::from_artifact`].
    pub fn to_artifact(&self) -> ModelArtifact {
        ModelArtifact {
            meta: self.meta.clone(),
            tensors: self.tensors.iter().map(|t| t.map(Table::to_vec)).collect(),
            feature_map: self.feature_map.clone(),
        }
    }

    /// The table of the tensor named `name`, if the model has one.
    pub fn table(&self, name: &str) -> Option<&Table> {
        values_of(&self.tensors, name)
    }

    /// As [`ModelArtifact::predict_row`]: the same number, to the bit.
    ///
    /// # Panics
    ///
    /// If `values` is shorter than `indices`.
    pub fn predict_row(&self, indices: &[u32], values: &[f32]) -> f32 {
        self.predict_values(indices, values)
    }

    fn predict_values(&self, row: &[u32], values: impl RowValues) -> f32 {
        if let Some(shape) = self.meta.architecture.deep() {
            let rows_of = |name: &str| {
                let t = self.table(name)?;
                Some((t.rows(), t.width(), t))
            };
            let logit = self
                .feature_map
                .as_deref()
                .and_then(|map| deep_logit(&shape, map, (row, values), rows_of));
            return sigmoid(logit.unwrap_or(0.0));
        }
        let weights = self.table(WEIGHTS);
        score(
            &self.meta.architecture,
            row,
            values,
            weights.map_or(0, Table::rows),
            |i| weights.and_then(|w| w.get(i)),
            self.table(FACTORS).map(|f| (f.rows(), f)),
        )
    }

    /// The model with every tensor in q2.13 fixed point (16 bits a number), rounded as
    /// [`ModelArtifact::to_q213`] rounds them, so it predicts exactly as that model does; with
    /// how many numbers were clipped to `[-4, 4)`.
    pub fn to_q213(&self, seed: u64) -> (ServedModel, usize) {
        let mut clipped = 0;
        let tensors = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.map(|table| {
                    let (table, clipped_here) = table.to_q213(seed ^ i as u64);
                    clipped += clipped_here;
                    table
                })
            })
            .collect();
        (self.with_tensors(tensors), clipped)
    }

    /// The model with every tensor in 8-bit codes with a scale per group (about a quarter of
    /// the bytes), rounded as [`ModelArtifact::to_int8`] rounds them, so it predicts exactly as
    /// that model does.
    pub fn to_int8(&self) -> ServedModel {
        let tensors = self.tensors.iter().map(|t| t.map(Table::to_int8)).collect();
        self.with_tensors(tensors)
    }

    fn with_tensors(&self, tensors: Vec<Tensor<Table>>) -> ServedModel {
        ServedModel {
            meta: self.meta.clone(),
            tensors,
            feature_map: self.feature_map.clone(),
            chunk_digests: None,
        }
    }

    /// Problems that make the model unservable, empty when it is consistent (as
    /// [`ModelArtifact::problems`]).
    pub fn problems(&self) -> Vec<String> {
        let shapes = self.tensors.iter().map(|t| StoredTensor {
            name: &t.name,
            rows: t.values.rows(),
            width: Some(t.values.width()),
            whole: t.values.rows() == t.shape.first().copied().unwrap_or(1)
                && Some(t.values.width()) == row_width(&t.shape),
            shape: Some(&t.shape),
        });
        let mut problems = shape_problems(&self.meta, shapes, self.feature_map.as_deref());
        problems.extend(self.value_problems());
        problems
    }

    /// As [`ModelArtifact::value_problems`].
    pub fn value_problems(&self) -> Vec<String> {
        non_finite(&self.tensors, |t| t.values.first_non_finite())
    }

    /// The memory of the tensors, and what of it `other`'s tensors of the same names share.
    pub fn memory(&self, other: Option<&ServedModel>) -> TableMemory {
        let mut total = TableMemory::default();
        for tensor in &self.tensors {
            let theirs = other.and_then(|o| o.table(&tensor.name));
            let memory = tensor.values.memory(theirs);
            total.block_bytes += memory.block_bytes;
            total.patch_bytes += memory.patch_bytes;
            total.shared_bytes += memory.shared_bytes;
        }
        total
    }
}
