//! The feature spec: which transform each field gets, with its parameters (`[features]` with
//! `type = "map"` in a job file), and its compiled layout: every feature's place in the row.

use crate::schema::FieldType;
pub use crate::schema::Schema;
use serde::{Deserialize, Serialize};

/// What a categorical transform does with a value that is not well-formed (overlong, invalid
/// UTF-8, or not a number where a number was asked for): it is counted either way.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum InvalidPolicy {
    /// The value takes the out-of-vocabulary slot.
    #[default]
    Oov,
    /// The value is treated as missing.
    Missing,
}

/// One transform over one or more fields, as written in a job file (`[[features.transform]]`).
///
/// `fields` names the schema's fields; a name ending in `*` stands for every field whose name
/// starts with what comes before it (`"I*"` is `I1`…`I13`). Unary kinds make one feature per
/// field; `cross` makes one feature of all its fields together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformSpec {
    /// A vocabulary of the field's values, one slot per value (Spark's StringIndexer +
    /// OneHotEncoder).
    OneHot {
        /// The fields.
        fields: Vec<String>,
        /// Occurrences a value needs before it gets an id.
        #[serde(default = "one")]
        min_count: u64,
        /// The most ids the vocabulary holds at once.
        #[serde(default = "default_capacity")]
        capacity: u32,
        /// Evict values unseen for this span of event time, in seconds (never when absent).
        #[serde(default)]
        expire_after_secs: Option<f64>,
        /// Hash values without an id into this many extra slots instead of the one
        /// out-of-vocabulary slot (0: no hashing fallback).
        #[serde(default)]
        hash_fallback: u32,
        /// What a malformed value becomes.
        #[serde(default)]
        invalid: InvalidPolicy,
        /// A freed id is given to another value only this many FeatureMap versions later.
        #[serde(default = "one_u32")]
        reuse_after_versions: u32,
        /// The most values without an id (short of `min_count`, or waiting for capacity) the
        /// vocabulary keeps after each epoch; past it, those seen longest ago are forgotten
        /// until at most three quarters of it (rounded up) are held (absent: 1,048,576,
        /// [`DEFAULT_MAX_PENDING`](super::fit::DEFAULT_MAX_PENDING)).
        #[serde(default)]
        max_pending: Option<u64>,
    },
    /// Like `one_hot`, for fields holding several values separated by `separator`.
    MultiHot {
        /// The fields.
        fields: Vec<String>,
        /// The separator between values, one byte.
        separator: String,
        /// Occurrences a value needs before it gets an id.
        #[serde(default = "one")]
        min_count: u64,
        /// The most ids the vocabulary holds at once.
        #[serde(default = "default_capacity")]
        capacity: u32,
        /// Evict values unseen for this span of event time, in seconds (never when absent).
        #[serde(default)]
        expire_after_secs: Option<f64>,
        /// Extra hashed slots for values without an id (0: one out-of-vocabulary slot).
        #[serde(default)]
        hash_fallback: u32,
        /// What a malformed value becomes.
        #[serde(default)]
        invalid: InvalidPolicy,
        /// A freed id is given to another value only this many FeatureMap versions later.
        #[serde(default = "one_u32")]
        reuse_after_versions: u32,
        /// The most values without an id (short of `min_count`, or waiting for capacity) the
        /// vocabulary keeps after each epoch; past it, those seen longest ago are forgotten
        /// until at most three quarters of it (rounded up) are held (absent: 1,048,576,
        /// [`DEFAULT_MAX_PENDING`](super::fit::DEFAULT_MAX_PENDING)).
        #[serde(default)]
        max_pending: Option<u64>,
    },
    /// Quantile buckets (Spark's QuantileDiscretizer), boundaries from a mergeable sketch.
    Bucketize {
        /// The fields.
        fields: Vec<String>,
        /// The number of buckets (2..=4096).
        buckets: u32,
        /// The sketch's normalized rank error (0.0005..=0.1).
        #[serde(default = "default_relative_error")]
        relative_error: f64,
    },
    /// `(x − mean) / std` (Spark's StandardScaler), with a missing indicator.
    Standardize {
        /// The fields.
        fields: Vec<String>,
        /// Apply `sign(x)·ln(1 + |x|)` before scaling.
        #[serde(default)]
        log1p: bool,
        /// Clip the scaled value to `[-clip, clip]`.
        #[serde(default)]
        clip: Option<f64>,
    },
    /// The value hashed into `buckets` slots.
    Hash {
        /// The fields.
        fields: Vec<String>,
        /// The number of slots.
        buckets: u32,
    },
    /// All the fields' values together hashed into `buckets` slots.
    Cross {
        /// The fields (two or more).
        fields: Vec<String>,
        /// The number of slots.
        buckets: u32,
    },
    /// The number itself, with a missing indicator.
    Numeric {
        /// The fields.
        fields: Vec<String>,
    },
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_capacity() -> u32 {
    100_000
}
fn default_relative_error() -> f64 {
    0.01
}
fn yes() -> bool {
    true
}
fn default_max_value_len() -> usize {
    256
}

/// The feature spec of a FeatureMap: transforms plus what applies to all of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureMapSpec {
    /// Whether every row starts with a bias feature (index 0).
    #[serde(default = "yes")]
    pub bias: bool,
    /// Fit numeric statistics over the last this many epochs only (all of history when absent),
    /// so that boundaries and scalers follow a shifting stream.
    #[serde(default)]
    pub window_epochs: Option<u32>,
    /// Categorical values longer than this many bytes are malformed.
    #[serde(default = "default_max_value_len")]
    pub max_value_len: usize,
    /// The transforms.
    #[serde(rename = "transform")]
    pub transforms: Vec<TransformSpec>,
}

impl FeatureMapSpec {
    /// The spec `millrace bench featurize` uses: 20 quantile buckets and standardization
    /// (after log1p) on the 13 integers, vocabularies with min count 5 on the 26 categoricals.
    pub fn criteo_default() -> Self {
        FeatureMapSpec {
            bias: true,
            window_epochs: None,
            max_value_len: default_max_value_len(),
            transforms: vec![
                TransformSpec::Bucketize {
                    fields: vec!["I*".into()],
                    buckets: 20,
                    relative_error: default_relative_error(),
                },
                TransformSpec::Standardize {
                    fields: vec!["I*".into()],
                    log1p: true,
                    clip: Some(5.0),
                },
                TransformSpec::one_hot(vec!["C*".into()], 5),
            ],
        }
    }

    /// A spec that reads every feature field of `schema`: a vocabulary (`one_hot`) over each
    /// category and tokens field, standardization after `log1p` over each number. A starting
    /// point for a job file, and what tests and fuzzing of any schema run.
    pub fn default_for(schema: &Schema) -> Self {
        let (mut categories, mut numbers) = (Vec::new(), Vec::new());
        for (i, name) in schema.fields.iter().enumerate() {
            match schema.field_type(i) {
                Some(FieldType::Number) => numbers.push(name.clone()),
                _ => categories.push(name.clone()),
            }
        }
        let mut transforms = Vec::new();
        if !categories.is_empty() {
            transforms.push(TransformSpec::one_hot(categories, 1));
        }
        if !numbers.is_empty() {
            transforms.push(TransformSpec::Standardize {
                fields: numbers,
                log1p: true,
                clip: Some(5.0),
            });
        }
        FeatureMapSpec {
            bias: true,
            window_epochs: None,
            max_value_len: default_max_value_len(),
            transforms,
        }
    }

    /// Compiles the spec against `schema`; every problem is listed.
    ///
    /// # Errors
    ///
    /// All the problems found, each naming the transform (by position) it is in.
    pub fn compile(&self, schema: &Schema) -> Result<Layout, Vec<String>> {
        let mut problems = Vec::new();
        let mut features = Vec::new();
        let mut modes = vec![ParseMode::Skip; schema.fields.len()];
        let mut offset = u32::from(self.bias);
        if self.max_value_len == 0 {
            problems.push("`max_value_len` must be at least 1".to_owned());
        }
        if self.window_epochs == Some(0) {
            problems.push("`window_epochs` must be at least 1".to_owned());
        }
        if self.transforms.is_empty() {
            problems.push("at least one `[[features.transform]]` is needed".to_owned());
        }
        for (t, transform) in self.transforms.iter().enumerate() {
            let at = |msg: String| format!("`transform[{t}]` ({}): {msg}", transform.kind());
            let (fields, unknown) = schema.resolve(transform.fields());
            problems.extend(
                unknown
                    .into_iter()
                    .map(|name| at(format!("no field `{name}`"))),
            );
            if fields.is_empty() {
                problems.push(at("names no field".into()));
                continue;
            }
            let kind = match transform.compile() {
                Ok(kind) => kind,
                Err(msgs) => {
                    problems.extend(msgs.into_iter().map(at));
                    continue;
                }
            };
            for &f in &fields {
                let mode = match field_mode(&kind, schema.field_type(f)) {
                    Ok(mode) => mode,
                    Err(why) => {
                        problems.push(at(format!("`{}` {why}", schema.fields[f])));
                        continue;
                    }
                };
                match merge_modes(modes[f], mode) {
                    Ok(merged) => modes[f] = merged,
                    Err(why) => problems.push(at(format!("`{}` {why}", schema.fields[f]))),
                }
            }
            let groups: Vec<Vec<usize>> = if matches!(kind, Kind::Cross { .. }) {
                if fields.len() < 2 {
                    problems.push(at("a cross needs two or more fields".into()));
                }
                if fields
                    .iter()
                    .any(|&f| matches!(modes[f], ParseMode::Multi(_)))
                {
                    problems.push(at("a cross cannot take a multi-valued field".into()));
                }
                vec![fields]
            } else {
                fields.into_iter().map(|f| vec![f]).collect()
            };
            for group in groups {
                // A vocabulary over a tokens field has a slot per token.
                let kind = match (&kind, schema.field_type(group[0])) {
                    (Kind::OneHot(vocab), Some(FieldType::Tokens { separator })) => {
                        Kind::MultiHot(*vocab, separator)
                    }
                    _ => kind.clone(),
                };
                let width = kind.width();
                let name = group
                    .iter()
                    .map(|&f| schema.fields[f].as_str())
                    .collect::<Vec<_>>()
                    .join("×");
                features.push(FeatureDef {
                    name: format!("{}:{name}", transform.kind()),
                    fields: group,
                    kind,
                    offset,
                    width,
                });
                match offset.checked_add(width) {
                    Some(next) if next < u32::MAX => offset = next,
                    _ => {
                        problems.push(at("the row would have more than 2^32 slots".into()));
                        return Err(problems);
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Layout {
            schema: schema.clone(),
            bias: self.bias,
            window_epochs: self.window_epochs,
            max_value_len: self.max_value_len,
            modes,
            features,
            dimension: offset as usize,
        })
    }
}

/// How a transform of `kind` parses a field of declared type `declared` (any, when the schema
/// declares no types), or why it cannot read it.
fn field_mode(kind: &Kind, declared: Option<FieldType>) -> Result<ParseMode, String> {
    let numeric = matches!(
        kind,
        Kind::Bucketize { .. } | Kind::Standardize { .. } | Kind::Numeric
    );
    match declared {
        Some(FieldType::Category) if numeric => Err("is a category, not a number".to_owned()),
        Some(FieldType::Tokens { .. }) if numeric => Err("holds tokens, not a number".to_owned()),
        Some(FieldType::Tokens { .. }) if matches!(kind, Kind::Cross { .. }) => {
            Err("holds tokens, which a cross cannot take".to_owned())
        }
        Some(FieldType::Tokens { separator }) => match kind {
            Kind::MultiHot(_, s) if *s != separator => Err(format!(
                "holds tokens separated by {:?}, not {:?}",
                separator as char, *s as char
            )),
            _ => Ok(ParseMode::Multi(separator)),
        },
        _ => Ok(kind.parse_mode()),
    }
}

/// How a field is parsed when two transforms read it: a number wins over a categorical (the
/// categorical transform then hashes the number); multi-valued fields cannot be shared with
/// single-valued uses.
fn merge_modes(current: ParseMode, new: ParseMode) -> Result<ParseMode, &'static str> {
    match (current, new) {
        (ParseMode::Skip, m) | (m, ParseMode::Skip) => Ok(m),
        (ParseMode::Multi(a), ParseMode::Multi(b)) if a == b => Ok(current),
        (ParseMode::Multi(_), ParseMode::Multi(_)) => Err("has two different separators"),
        (ParseMode::Multi(_), _) | (_, ParseMode::Multi(_)) => {
            Err("is multi-valued in one transform and single-valued in another")
        }
        (ParseMode::Hex, ParseMode::Hex) => Ok(ParseMode::Hex),
        (ParseMode::Hex, _) | (_, ParseMode::Hex) => {
            Err("is read as hex digits in one transform and as text in another")
        }
        (ParseMode::Num, _) | (_, ParseMode::Num) => Ok(ParseMode::Num),
        (ParseMode::Cat, ParseMode::Cat) => Ok(ParseMode::Cat),
    }
}

impl TransformSpec {
    /// A `one_hot` vocabulary of `fields` with a minimum count and every other parameter at
    /// its default, as a job file that names only those two gets.
    pub fn one_hot(fields: Vec<String>, min_count: u64) -> Self {
        TransformSpec::OneHot {
            fields,
            min_count,
            capacity: default_capacity(),
            expire_after_secs: None,
            hash_fallback: 0,
            invalid: InvalidPolicy::Oov,
            reuse_after_versions: 1,
            max_pending: None,
        }
    }

    /// The transform's kind as written in a job file.
    pub fn kind(&self) -> &'static str {
        match self {
            TransformSpec::OneHot { .. } => "one_hot",
            TransformSpec::MultiHot { .. } => "multi_hot",
            TransformSpec::Bucketize { .. } => "bucketize",
            TransformSpec::Standardize { .. } => "standardize",
            TransformSpec::Hash { .. } => "hash",
            TransformSpec::Cross { .. } => "cross",
            TransformSpec::Numeric { .. } => "numeric",
        }
    }

    fn fields(&self) -> &[String] {
        match self {
            TransformSpec::OneHot { fields, .. }
            | TransformSpec::MultiHot { fields, .. }
            | TransformSpec::Bucketize { fields, .. }
            | TransformSpec::Standardize { fields, .. }
            | TransformSpec::Hash { fields, .. }
            | TransformSpec::Cross { fields, .. }
            | TransformSpec::Numeric { fields } => fields,
        }
    }

    fn compile(&self) -> Result<Kind, Vec<String>> {
        let mut problems = Vec::new();
        let kind = match self {
            TransformSpec::OneHot {
                min_count,
                capacity,
                expire_after_secs,
                hash_fallback,
                invalid,
                reuse_after_versions,
                max_pending,
                ..
            }
            | TransformSpec::MultiHot {
                min_count,
                capacity,
                expire_after_secs,
                hash_fallback,
                invalid,
                reuse_after_versions,
                max_pending,
                ..
            } => {
                if *min_count == 0 {
                    problems.push("`min_count` must be at least 1".to_owned());
                }
                if *capacity == 0 || *capacity > 1 << 28 {
                    problems.push(format!("`capacity` must be in 1..=2^28 (got {capacity})"));
                }
                if *hash_fallback > 1 << 28 {
                    problems.push("`hash_fallback` must be at most 2^28".to_owned());
                }
                let expire_after_ms = match expire_after_secs {
                    None => None,
                    Some(s) if s.is_finite() && *s > 0.0 => Some((s * 1000.0).ceil() as u64),
                    Some(s) => {
                        problems.push(format!("`expire_after_secs` must be positive (got {s})"));
                        None
                    }
                };
                if *max_pending == Some(0) {
                    problems.push("`max_pending` must be at least 1".to_owned());
                }
                let vocab = VocabSpec {
                    min_count: *min_count,
                    capacity: *capacity,
                    expire_after_ms,
                    hash_fallback: *hash_fallback,
                    invalid: *invalid,
                    reuse_after_versions: *reuse_after_versions,
                    max_pending: *max_pending,
                };
                match self {
                    TransformSpec::MultiHot { separator, .. } => match separator.as_bytes() {
                        [b] => Kind::MultiHot(vocab, *b),
                        _ => {
                            problems.push("`separator` must be one byte".to_owned());
                            Kind::OneHot(vocab)
                        }
                    },
                    _ => Kind::OneHot(vocab),
                }
            }
            TransformSpec::Bucketize {
                buckets,
                relative_error,
                ..
            } => {
                if !(2..=4096).contains(buckets) {
                    problems.push(format!("`buckets` must be in 2..=4096 (got {buckets})"));
                }
                if !(0.0005..=0.1).contains(relative_error) {
                    problems.push(format!(
                        "`relative_error` must be in 0.0005..=0.1 (got {relative_error})"
                    ));
                }
                Kind::Bucketize {
                    buckets: *buckets,
                    k: crate::fmap::kll::k_for_error(*relative_error),
                }
            }
            TransformSpec::Standardize { log1p, clip, .. } => {
                if clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                    problems.push("`clip` must be a positive number".to_owned());
                }
                Kind::Standardize {
                    log1p: *log1p,
                    clip: clip.unwrap_or(f64::INFINITY),
                }
            }
            TransformSpec::Hash { buckets, .. } | TransformSpec::Cross { buckets, .. } => {
                if *buckets == 0 || *buckets > 1 << 30 {
                    problems.push(format!("`buckets` must be in 1..=2^30 (got {buckets})"));
                }
                if matches!(self, TransformSpec::Hash { .. }) {
                    Kind::Hash { buckets: *buckets }
                } else {
                    Kind::Cross { buckets: *buckets }
                }
            }
            TransformSpec::Numeric { .. } => Kind::Numeric,
        };
        if problems.is_empty() {
            Ok(kind)
        } else {
            Err(problems)
        }
    }
}

/// A vocabulary's parameters, compiled.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VocabSpec {
    /// Occurrences a value needs before it gets an id.
    pub min_count: u64,
    /// The most ids held at once.
    pub capacity: u32,
    /// Evict values unseen for this many milliseconds of event time.
    pub expire_after_ms: Option<u64>,
    /// Hashed slots for values without an id.
    pub hash_fallback: u32,
    /// What a malformed value becomes.
    pub invalid: InvalidPolicy,
    /// Versions a freed id waits before it is reused.
    pub reuse_after_versions: u32,
    /// The most values without an id kept after each epoch; past it, those seen longest ago are
    /// forgotten until at most three quarters of it (rounded up) are held.
    #[serde(default)]
    pub max_pending: Option<u64>,
}

/// An `f64` bound whose infinity (no bound) is written as `null`, so that it reads back from
/// JSON (`featuremap.json`, checkpoints), which has no infinity.
mod unbounded {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        x.is_finite().then_some(*x).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// A compiled transform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// A vocabulary over single values.
    OneHot(VocabSpec),
    /// A vocabulary over separated values.
    MultiHot(VocabSpec, u8),
    /// Quantile buckets from a KLL sketch with parameter `k`.
    Bucketize {
        /// Number of buckets.
        buckets: u32,
        /// The KLL sketch's size parameter.
        k: u16,
    },
    /// Standardization.
    Standardize {
        /// `sign(x)·ln(1+|x|)` first.
        log1p: bool,
        /// Clip bound (infinite: none, written `null`: JSON has no infinity).
        #[serde(with = "unbounded")]
        clip: f64,
    },
    /// Hashing.
    Hash {
        /// Slots.
        buckets: u32,
    },
    /// Hashed cross.
    Cross {
        /// Slots.
        buckets: u32,
    },
    /// Pass-through number.
    Numeric,
    /// Every field of the layout hashed into one space of `2^bits` slots, a hashed bias among
    /// them: `[features] type = "hashed"`, slot for slot as the first generation hashed, so
    /// that models trained by it score as they did. Numbers up to 2 are their own token,
    /// larger ones `⌊ln(v)²⌋` (the Criteo winners' bucketing); categories are eight hex digits.
    Hashed {
        /// log2 of the slots.
        bits: u32,
    },
}

impl Kind {
    /// Slots the feature takes in a row.
    ///
    /// A vocabulary: its ids, a missing slot, an out-of-vocabulary slot, the hashed fallback.
    /// Buckets: one per bucket and a missing one. Scaled and pass-through numbers: the value
    /// and a missing indicator.
    pub fn width(&self) -> u32 {
        match self {
            Kind::OneHot(v) | Kind::MultiHot(v, _) => v.capacity + 2 + v.hash_fallback,
            Kind::Bucketize { buckets, .. } => buckets + 1,
            Kind::Standardize { .. } | Kind::Numeric => 2,
            Kind::Hash { buckets } | Kind::Cross { buckets } => *buckets,
            Kind::Hashed { bits } => 1 << bits,
        }
    }

    fn parse_mode(&self) -> ParseMode {
        match self {
            Kind::OneHot(_) | Kind::Hash { .. } | Kind::Cross { .. } => ParseMode::Cat,
            Kind::MultiHot(_, sep) => ParseMode::Multi(*sep),
            Kind::Hashed { .. } => ParseMode::Hex,
            Kind::Bucketize { .. } | Kind::Standardize { .. } | Kind::Numeric => ParseMode::Num,
        }
    }

    /// Whether the feature keeps statistics that are fitted.
    pub fn is_fitted(&self) -> bool {
        matches!(
            self,
            Kind::OneHot(_)
                | Kind::MultiHot(..)
                | Kind::Bucketize { .. }
                | Kind::Standardize { .. }
        )
    }
}

/// How a field's raw bytes are parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParseMode {
    /// Not used by any transform.
    Skip,
    /// A number (a field some numeric transform uses; categorical uses hash the number).
    Num,
    /// One categorical value.
    Cat,
    /// Several categorical values separated by the byte.
    Multi(u8),
    /// A category of exactly eight hex digits (Criteo's hashed ids), whose number is its token.
    Hex,
}

/// One feature of the layout: a transform applied to one field (or, for a cross, several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureDef {
    /// `kind:field` (`cross:C1×C2` for a cross), for metrics and logs.
    pub name: String,
    /// The schema fields it reads.
    pub fields: Vec<usize>,
    /// The compiled transform.
    pub kind: Kind,
    /// Its first slot in the row.
    pub offset: u32,
    /// Its number of slots.
    pub width: u32,
}

/// A compiled spec: how each field is parsed and where each feature lies in a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// The schema.
    pub schema: Schema,
    /// Whether slot 0 is a bias.
    pub bias: bool,
    /// Numeric statistics window in epochs.
    pub window_epochs: Option<u32>,
    /// Longest well-formed categorical value.
    pub max_value_len: usize,
    /// How each schema field is parsed.
    pub modes: Vec<ParseMode>,
    /// The features, in row order.
    pub features: Vec<FeatureDef>,
    /// The number of slots of a row.
    pub dimension: usize,
}

impl Layout {
    /// The layout of `[features] type = "hashed"` over `schema`: one [`Kind::Hashed`] feature
    /// over every field, numbers read as numbers and categories as hex digits, no separate bias
    /// slot (the hashed bias is one of the `2^bits`).
    ///
    /// # Errors
    ///
    /// Every problem: `bits` outside 1..=30, or a field that is neither a number nor a category.
    pub fn hashed(schema: &Schema, bits: u32) -> Result<Layout, Vec<String>> {
        let mut problems = Vec::new();
        if !(1..=30).contains(&bits) {
            problems.push(format!("`hash_bits` must be in 1..=30 (got {bits})"));
        }
        let modes: Vec<ParseMode> = (0..schema.fields.len())
            .map(|f| match schema.field_type(f) {
                Some(FieldType::Number) => ParseMode::Num,
                Some(FieldType::Category) => ParseMode::Hex,
                _ => {
                    problems.push(format!(
                        "`{}` is not a number or a category, which hashed features read",
                        schema.fields[f]
                    ));
                    ParseMode::Skip
                }
            })
            .collect();
        if schema.fields.is_empty() {
            problems.push("hashed features need at least one field".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let kind = Kind::Hashed { bits };
        let width = kind.width();
        Ok(Layout {
            schema: schema.clone(),
            bias: false,
            window_epochs: None,
            max_value_len: default_max_value_len(),
            modes,
            features: vec![FeatureDef {
                name: "hashed".to_owned(),
                fields: (0..schema.fields.len()).collect(),
                kind,
                offset: 0,
                width,
            }],
            dimension: width as usize,
        })
    }
}
