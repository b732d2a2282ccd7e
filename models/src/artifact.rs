//! A model version as one artifact: the feature spec it was trained with, its weights and its
//! metadata, and for a `map` spec the fitted FeatureMap version the weights belong to. Serving
//! evaluates an artifact with the same transform the trainer used, so a model is never served
//! with features it was not trained on.

use crate::features::FeatureSpec;
use crate::fm::{pairwise_margin, FactorRows};
use crate::fmap::{FeatureMap, Schema};
use crate::ftrl::sigmoid;
use crate::learner::RowValues;
use crate::table::{Table, TableMemory};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kind of model an artifact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Logistic regression (trained with FTRL-Proximal): one weight per feature slot.
    LogisticRegression,
    /// A second-order factorization machine: one weight and `factors` latent factors per slot.
    FactorizationMachine {
        /// Latent factors per slot.
        factors: usize,
    },
}

/// The artifact format this code writes, `MAJOR.MINOR`. A reader refuses an artifact of a
/// newer major version with a message that says so. A newer minor version may change only what
/// an older reader reads alike (metadata keys are checked strictly, so a new key is a new major
/// version); readers are upgraded before writers.
///
/// - 1.x: artifacts written before format versions (their `meta.json` has no key for it);
///   their FeatureMap's schema names the fields of a Criteo line.
/// - 2.0: a FeatureMap's schema declares its fields' types and how records hold them.
pub const FORMAT_VERSION: &str = "2.0";

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
/// A message when the version is not `MAJOR.MINOR`, or its major version is newer than
/// [`FORMAT_VERSION`]'s.
///
/// # Examples
///
/// ```
/// use millrace_models::artifact::check_format_version;
///
/// assert!(check_format_version(&serde_json::json!({"name": "ctr"})).is_ok());
/// assert!(check_format_version(&serde_json::json!({"format_version": "2.7"})).is_ok());
/// let newer = check_format_version(&serde_json::json!({"format_version": "3.0"}));
/// assert!(newer.unwrap_err().contains("newer"));
/// ```
pub fn check_format_version(meta: &serde_json::Value) -> std::result::Result<(), String> {
    let Some(version) = meta.get("format_version") else {
        return Ok(());
    };
    let ours = major(FORMAT_VERSION).unwrap_or(0);
    match version.as_str().and_then(major) {
        Some(theirs) if theirs <= ours => Ok(()),
        Some(_) => Err(format!(
            "the artifact's format version {version} is newer than this reader's {FORMAT_VERSION}: upgrade millrace to read it"
        )),
        None => Err(format!(
            "`format_version` must be MAJOR.MINOR, such as \"{FORMAT_VERSION}\" (got {version})"
        )),
    }
}

/// The major version of `MAJOR.MINOR`.
fn major(version: &str) -> Option<u64> {
    let (major, minor) = version.split_once('.')?;
    minor.parse::<u64>().ok()?;
    major.parse().ok()
}

/// What the registry records about a model version besides its weights (`meta.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// The artifact format it was written in ([`FORMAT_VERSION`]; `1.0` for artifacts written
    /// before format versions).
    #[serde(default = "format_version_before")]
    pub format_version: String,
    /// The model's name, as served under `/v1/models/{name}`.
    pub name: String,
    /// The version number, assigned by the registry at publication (1, 2, …).
    pub version: u64,
    /// The kind of model.
    pub kind: ModelKind,
    /// The transform from events to rows that the weights belong to.
    pub features: FeatureSpec,
    /// Number of events the model had learned from when it was published.
    pub trained_events: u64,
    /// Progressive-validation AUC over those events, when both classes were seen.
    pub progressive_auc: Option<f64>,
    /// Progressive-validation log-loss over those events.
    pub progressive_logloss: Option<f64>,
    /// Publication time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// SHA-256 of `weights.safetensors`, hex; checked on load.
    pub weights_sha256: String,
    /// For a `map` spec: the FeatureMap version stored beside the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_map: Option<FeatureMapMeta>,
}

/// What `meta.json` records about the FeatureMap stored with a model (`featuremap.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureMapMeta {
    /// The FeatureMap version the weights belong to.
    pub version: u64,
    /// SHA-256 of `featuremap.json`, hex; checked on load.
    pub sha256: String,
}

/// A complete model version: metadata and weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelArtifact {
    /// The metadata.
    pub meta: ModelMeta,
    /// One weight per feature slot (`meta.features.dimension()` of them).
    pub weights: Vec<f32>,
    /// The latent factors of a factorization machine, slot-major (`dimension × factors`);
    /// empty for logistic regression.
    pub factors: Vec<f32>,
    /// The FeatureMap the model's rows come from: the fitted version of a `map` spec, or a
    /// hashed spec's [`FeatureSpec::unfitted_map`]; only a fitted one is stored.
    pub feature_map: Option<Arc<FeatureMap>>,
}

impl ModelArtifact {
    /// A not-yet-published artifact: version and checksum are filled in by the registry.
    pub fn new(name: &str, features: FeatureSpec, weights: Vec<f32>) -> Self {
        let features_map = features.unfitted_map();
        ModelArtifact {
            meta: ModelMeta {
                format_version: FORMAT_VERSION.to_owned(),
                name: name.to_owned(),
                version: 0,
                kind: ModelKind::LogisticRegression,
                features,
                trained_events: 0,
                progressive_auc: None,
                progressive_logloss: None,
                created_unix_ms: 0,
                weights_sha256: String::new(),
                feature_map: None,
            },
            weights,
            factors: Vec::new(),
            feature_map: features_map,
        }
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
        let mut problems = shape_problems(
            &self.meta,
            self.weights.len(),
            self.factors.len(),
            self.feature_map.as_deref(),
        );
        if let Some(i) = self.weights.iter().position(|w| !w.is_finite()) {
            problems.push(format!("weight {i} is not finite"));
        }
        if let Some(i) = self.factors.iter().position(|v| !v.is_finite()) {
            problems.push(format!("factor {i} is not finite"));
        }
        problems
    }

    /// The model with its weights and factors rounded to q2.13 fixed point ([`crate::fixed`],
    /// randomized rounding seeded by `seed`) and decoded back, as a model stored in 16 bits
    /// per number would predict; with how many numbers were clipped to `[-4, 4)`.
    pub fn to_q213(&self, seed: u64) -> (ModelArtifact, usize) {
        let round = |values: &[f32], seed| {
            let (codes, clipped) = crate::fixed::quantize(values, seed);
            (
                codes.into_iter().map(crate::fixed::decode).collect(),
                clipped,
            )
        };
        let (weights, clipped_weights) = round(&self.weights, seed);
        let (factors, clipped_factors) = round(&self.factors, seed ^ 1);
        let mut model = self.clone();
        model.weights = weights;
        model.factors = factors;
        (model, clipped_weights + clipped_factors)
    }

    /// The model with its weights and factors rounded to 8 bits with a scale per group
    /// ([`crate::int8`]) and decoded back, as a model served with `--weights int8` predicts.
    pub fn to_int8(&self) -> ModelArtifact {
        let mut model = self.clone();
        model.weights = crate::int8::round_trip(&self.weights);
        model.factors = crate::int8::round_trip(&self.factors);
        model
    }

    /// The click probability of a row with a value per index, such as a row of the model's
    /// FeatureMap ([`crate::CsrBatch::row`]). Indices outside the model, which no row of its
    /// FeatureMap has, count as zero; a factorization machine then scores the row linearly.
    ///
    /// # Panics
    ///
    /// If `values` is shorter than `indices`.
    pub fn predict_row(&self, indices: &[u32], values: &[f32]) -> f32 {
        self.predict_values(indices, values)
    }

    fn predict_values(&self, row: &[u32], values: impl RowValues) -> f32 {
        score(
            self.meta.kind,
            row,
            values,
            self.weights.len(),
            |i| self.weights.get(i).copied(),
            self.factors.as_slice(),
        )
    }
}

/// The problems of an artifact's shape: its spec, the number of weights and factors, and its
/// FeatureMap.
pub(crate) fn shape_problems(
    meta: &ModelMeta,
    weights: usize,
    factors: usize,
    feature_map: Option<&FeatureMap>,
) -> Vec<String> {
    // A map spec is read against the schema its FeatureMap was fitted on (Criteo's in
    // artifacts written before declared schemas).
    let criteo = Schema::criteo();
    let schema = feature_map.map_or(&criteo, |map| &map.layout.schema);
    let mut problems = meta.features.problems(schema);
    if problems.is_empty() && weights != meta.features.dimension(schema) {
        problems.push(format!(
            "{weights} weights for a feature spec of dimension {}",
            meta.features.dimension(schema)
        ));
    }
    let expected_factors = match meta.kind {
        ModelKind::LogisticRegression => 0,
        ModelKind::FactorizationMachine { factors } => factors * weights,
    };
    if factors != expected_factors {
        problems.push(format!(
            "{factors} factors where the model kind needs {expected_factors}"
        ));
    }
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
        }
        None => problems.push("the model has no FeatureMap to make its rows".to_owned()),
    }
    problems
}

/// The click probability of a row: the linear margin over `dimension` weights (indices past it
/// count as zero, and a factorization machine then scores the row linearly) plus, for a
/// factorization machine, the pairwise margin.
fn score(
    kind: ModelKind,
    row: &[u32],
    values: impl RowValues,
    dimension: usize,
    weight: impl Fn(usize) -> Option<f32>,
    factors: &(impl FactorRows + ?Sized),
) -> f32 {
    let inside = row.iter().all(|&i| (i as usize) < dimension);
    let linear: f32 = row
        .iter()
        .enumerate()
        .map(|(k, &i)| weight(i as usize).map_or(0.0, |w| w * values.at(k)))
        .sum();
    match kind {
        ModelKind::FactorizationMachine { factors: k } if inside => {
            let mut sums = Vec::with_capacity(k);
            sigmoid(linear + pairwise_margin(row, values, factors, k, &mut sums))
        }
        _ => sigmoid(linear),
    }
}

/// A model version as serving holds it: the artifact's weights and factors in copy-on-write
/// [`Table`]s, which share their unchanged chunks with the versions loaded before it
/// ([`crate::Registry::load_served`]).
#[derive(Clone, Debug)]
pub struct ServedModel {
    /// The metadata.
    pub meta: ModelMeta,
    /// One weight per feature slot.
    pub weights: Table,
    /// The latent factors of a factorization machine, a row per slot; empty for logistic
    /// regression.
    pub factors: Table,
    /// The fitted FeatureMap the rows of a `map` spec come from.
    pub feature_map: Option<Arc<FeatureMap>>,
}

impl ServedModel {
    /// The served form of an artifact, in fresh blocks.
    pub fn from_artifact(artifact: &ModelArtifact) -> Self {
        let width = match artifact.meta.kind {
            ModelKind::LogisticRegression => 1,
            ModelKind::FactorizationMachine { factors } => factors.max(1),
        };
        ServedModel {
            meta: artifact.meta.clone(),
            weights: Table::from_values(&artifact.weights, 1),
            factors: Table::from_values(&artifact.factors, width),
            feature_map: artifact.feature_map.clone(),
        }
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
        score(
            self.meta.kind,
            row,
            values,
            self.weights.rows(),
            |i| self.weights.get(i),
            &self.factors,
        )
    }

    /// The model with its weights and factors in q2.13 fixed point (16 bits a number), rounded
    /// as [`ModelArtifact::to_q213`] rounds them, so it predicts exactly as that model does;
    /// with how many numbers were clipped to `[-4, 4)`.
    pub fn to_q213(&self, seed: u64) -> (ServedModel, usize) {
        let (weights, clipped_weights) = self.weights.to_q213(seed);
        let (factors, clipped_factors) = self.factors.to_q213(seed ^ 1);
        let model = ServedModel {
            meta: self.meta.clone(),
            weights,
            factors,
            feature_map: self.feature_map.clone(),
        };
        (model, clipped_weights + clipped_factors)
    }

    /// The model with its weights and factors in 8-bit codes with a scale per group (about a
    /// quarter of the bytes), rounded as [`ModelArtifact::to_int8`] rounds them, so it
    /// predicts exactly as that model does.
    pub fn to_int8(&self) -> ServedModel {
        ServedModel {
            meta: self.meta.clone(),
            weights: self.weights.to_int8(),
            factors: self.factors.to_int8(),
            feature_map: self.feature_map.clone(),
        }
    }

    /// Problems that make the model unservable, empty when it is consistent (as
    /// [`ModelArtifact::problems`]).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = shape_problems(
            &self.meta,
            self.weights.rows(),
            self.factors.rows() * self.factors.width(),
            self.feature_map.as_deref(),
        );
        if let Some(i) = self.weights.first_non_finite() {
            problems.push(format!("weight {i} is not finite"));
        }
        if let Some(i) = self.factors.first_non_finite() {
            problems.push(format!("factor {i} is not finite"));
        }
        problems
    }

    /// The memory of the weights and factors, and what of it `other` shares.
    pub fn memory(&self, other: Option<&ServedModel>) -> TableMemory {
        let weights = self.weights.memory(other.map(|o| &o.weights));
        let factors = self.factors.memory(other.map(|o| &o.factors));
        TableMemory {
            block_bytes: weights.block_bytes + factors.block_bytes,
            patch_bytes: weights.patch_bytes + factors.patch_bytes,
            shared_bytes: weights.shared_bytes + factors.shared_bytes,
        }
    }
}
