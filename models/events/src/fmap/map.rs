//! A FeatureMap version: the fitted state of every feature, and the transform from an event to
//! a sparse row that the dataflow and serving share.

use super::spec::{InvalidPolicy, Kind, Layout, VocabSpec};
use super::update::{Change, FeatureUpdate};
use super::value::{EventBatch, Value};
use super::{num_token, BuildKeyed};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The token of a missing value in hashes and crosses.
const MISSING_TOKEN: u64 = 0x6d69_7373_696e_6721;
/// The token of a malformed value in hashes and crosses.
const BAD_TOKEN: u64 = 0x6261_6476_616c_7565;

/// One feature's fitted state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FeatureState {
    /// Ids by fingerprint (written in fingerprint order, so that the same vocabulary is the
    /// same bytes however it was built: a restored job publishes what an uninterrupted one
    /// does).
    Vocab(#[serde(serialize_with = "in_key_order")] HashMap<u64, u32, BuildKeyed>),
    /// Bucket boundaries, strictly increasing.
    Buckets(Vec<f64>),
    /// A scaler.
    Scale {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Nothing fitted (hash, cross, numeric).
    Stateless,
}

/// Sparse rows in compressed-sparse-row form, with labels: the transform's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CsrBatch {
    /// The FeatureMap version that made the rows.
    pub version: u64,
    /// Slots per row.
    pub dimension: usize,
    /// Row `i` is `indices[indptr[i]..indptr[i + 1]]`; starts with 0.
    pub indptr: Vec<u32>,
    /// Slot indices.
    pub indices: Vec<u32>,
    /// Values, one per index.
    pub values: Vec<f32>,
    /// One label per row.
    pub labels: Vec<bool>,
    /// Where each row's event was read: one per row, or empty when unknown.
    #[serde(default)]
    pub sources: Vec<crate::Position>,
    /// Each row's event time, milliseconds since the Unix epoch: one per row, or empty when
    /// unknown.
    #[serde(default)]
    pub times: Vec<u64>,
}

impl CsrBatch {
    /// An empty batch.
    pub fn new(version: u64, dimension: usize) -> Self {
        CsrBatch {
            version,
            dimension,
            indptr: vec![0],
            ..CsrBatch::default()
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`: its indices and values.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i] as usize, self.indptr[i + 1] as usize);
        (&self.indices[a..b], &self.values[a..b])
    }
}

/// Counts the transform keeps: how many vocabulary lookups missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformCounts {
    /// Values looked up in a vocabulary.
    pub lookups: u64,
    /// Of those, values without an id (out of vocabulary, or hashed fallback).
    pub oov: u64,
}

/// What changed from one version to the next, for carrying a model's weights across.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// `(new slot, old slot)`: the weight of the new slot starts from that of the old one
    /// (bucket boundaries moved).
    pub moved: Vec<(u32, u32)>,
    /// Slots whose meaning changed without a predecessor (an id given to a value): start at 0.
    pub reset: Vec<u32>,
}

/// A FeatureMap version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureMap {
    /// The compiled spec.
    pub layout: Layout,
    /// The version: 0 before any fit, then one more per epoch that had events.
    pub version: u64,
    /// Per feature, in layout order.
    pub features: Vec<FeatureState>,
}

impl FeatureMap {
    /// Version 0: empty vocabularies, no boundaries, identity scalers.
    pub fn new(layout: Layout) -> Self {
        let features = layout
            .features
            .iter()
            .map(|f| match f.kind {
                Kind::OneHot(_) | Kind::MultiHot(..) => FeatureState::Vocab(HashMap::default()),
                Kind::Bucketize { .. } => FeatureState::Buckets(Vec::new()),
                Kind::Standardize { .. } => FeatureState::Scale {
                    mean: 0.0,
                    std: 1.0,
                },
                _ => FeatureState::Stateless,
            })
            .collect();
        FeatureMap {
            layout,
            version: 0,
            features,
        }
    }

    /// Slots per row.
    pub fn dimension(&self) -> usize {
        self.layout.dimension
    }

    /// Applies one epoch's updates, making the next version; says how to carry a model across.
    pub fn apply(&mut self, updates: &[FeatureUpdate]) -> Transition {
        let mut transition = Transition::default();
        for update in updates {
            let f = update.feature as usize;
            let (Some(def), Some(state)) = (self.layout.features.get(f), self.features.get_mut(f))
            else {
                continue;
            };
            match (&update.change, state) {
                (Change::Vocab { added, removed }, FeatureState::Vocab(ids)) => {
                    for (token, _) in removed {
                        ids.remove(token);
                    }
                    for &(token, id) in added {
                        ids.insert(token, id);
                        transition.reset.push(def.offset + id);
                    }
                }
                (Change::Boundaries(new), FeatureState::Buckets(old)) if new != old => {
                    for (bucket, old_bucket) in bucket_remap(old, new).into_iter().enumerate() {
                        if bucket as u32 != old_bucket {
                            transition
                                .moved
                                .push((def.offset + bucket as u32, def.offset + old_bucket));
                        }
                    }
                    old.clone_from(new);
                }
                (Change::Scale { mean, std }, FeatureState::Scale { mean: m, std: s }) => {
                    (*m, *s) = (*mean, *std);
                }
                _ => {}
            }
        }
        self.version += 1;
        transition
    }

    /// What the transform does for each feature, with the state it reads: made once per batch,
    /// so that the per-row loop reads one small step per feature instead of a feature's
    /// definition and state side by side. A feature whose state is not of its kind's type
    /// (which [`FeatureMap::problems`] reports) makes no step, and so no slot.
    fn steps(&self) -> Vec<Step<'_>> {
        self.layout
            .features
            .iter()
            .zip(&self.features)
            .filter_map(|(def, state)| {
                let (field, offset) = (*def.fields.first()?, def.offset);
                let op = match (&def.kind, state) {
                    (Kind::OneHot(spec), FeatureState::Vocab(ids)) => Op::Vocab { spec, ids },
                    (Kind::MultiHot(spec, _), FeatureState::Vocab(ids)) => {
                        Op::MultiVocab { spec, ids }
                    }
                    (Kind::Bucketize { buckets, .. }, FeatureState::Buckets(boundaries)) => {
                        Op::Buckets {
                            boundaries,
                            missing: *buckets,
                        }
                    }
                    (Kind::Standardize { log1p, clip }, FeatureState::Scale { mean, std }) => {
                        Op::Scale {
                            log1p: *log1p,
                            clip: *clip,
                            mean: *mean,
                            std: *std,
                        }
                    }
                    (Kind::Numeric, _) => Op::Numeric,
                    (Kind::Hash { buckets }, _) => Op::Hash { buckets: *buckets },
                    (Kind::Cross { buckets }, _) => Op::Cross {
                        fields: &def.fields,
                        buckets: *buckets,
                    },
                    (Kind::Hashed { bits }, _) => Op::Hashed {
                        fields: &def.fields,
                        mask: (1 << bits) - 1,
                    },
                    _ => return None,
                };
                Some(Step { field, offset, op })
            })
            .collect()
    }

    /// Appends the sparse row of event `i` of `batch` to `out`, by the map's `steps`.
    fn transform_row(
        &self,
        steps: &[Step<'_>],
        batch: &EventBatch,
        i: usize,
        out: &mut CsrBatch,
        counts: &mut TransformCounts,
    ) {
        let row = batch.row(i);
        let mut slots = Slots::new(out);
        if self.layout.bias {
            slots.put(0, 1.0);
        }
        for step in steps {
            if let Op::Hashed { fields, mask } = step.op {
                hashed_row(fields, mask, row, &mut slots);
                continue;
            }
            let Some(value) = row.get(step.field) else {
                continue;
            };
            let mut put = |slot: u32, x: f32| slots.put(step.offset + slot, x);
            match step.op {
                Op::Vocab { spec, ids } => put(vocab_slot(spec, ids, value, counts), 1.0),
                Op::MultiVocab { spec, ids } => match value {
                    Value::Multi { .. } => {
                        for (&token, weight) in
                            batch.multi(value).iter().zip(batch.multi_weights(value))
                        {
                            put(vocab_slot(spec, ids, &Value::Cat(token), counts), weight);
                        }
                    }
                    other => put(vocab_slot(spec, ids, other, counts), 1.0),
                },
                Op::Buckets {
                    boundaries,
                    missing,
                } => {
                    let slot = match value {
                        Value::Num(x) => boundaries.partition_point(|b| b <= x) as u32,
                        _ => missing,
                    };
                    put(slot, 1.0);
                }
                Op::Scale {
                    log1p,
                    clip,
                    mean,
                    std,
                } => match value {
                    Value::Num(x) => {
                        let y = if log1p { super::signed_log1p(*x) } else { *x };
                        let z = if std > 0.0 { (y - mean) / std } else { 0.0 };
                        // Unclipped, a value far out on a tiny spread can leave `f32`'s range:
                        // it takes the missing slot rather than put an infinity in the row.
                        match z.clamp(-clip, clip) as f32 {
                            z if z.is_finite() => put(0, z),
                            _ => put(1, 1.0),
                        }
                    }
                    _ => put(1, 1.0),
                },
                Op::Numeric => match value {
                    Value::Num(x) if (*x as f32).is_finite() => put(0, *x as f32),
                    _ => put(1, 1.0),
                },
                // A multi-valued field hashes each of its tokens.
                Op::Hash { buckets } => match value {
                    Value::Multi { .. } => {
                        for (&t, weight) in
                            batch.multi(value).iter().zip(batch.multi_weights(value))
                        {
                            let h = crate::hash::finalize(t ^ u64::from(step.offset));
                            put((h % u64::from(buckets)) as u32, weight);
                        }
                    }
                    _ => {
                        let h = crate::hash::finalize(token(value) ^ u64::from(step.offset));
                        put((h % u64::from(buckets)) as u32, 1.0);
                    }
                },
                Op::Cross { fields, buckets } => {
                    let h = fields.iter().fold(u64::from(step.offset), |h, &f| {
                        let t = row.get(f).map_or(MISSING_TOKEN, token);
                        crate::hash::finalize(h.rotate_left(23) ^ t)
                    });
                    put((h % u64::from(buckets)) as u32, 1.0);
                }
                Op::Hashed { .. } => {}
            }
        }
        slots.flush();
        out.labels.push(batch.labels[i]);
        out.indptr.push(out.indices.len() as u32);
    }

    /// The rows of every event of `batch`.
    pub fn transform(&self, batch: &EventBatch, counts: &mut TransformCounts) -> CsrBatch {
        let mut out = CsrBatch::new(self.version, self.dimension());
        self.transform_into(batch, counts, &mut out);
        out
    }

    /// [`FeatureMap::transform`] into `out`, whose rows are replaced and whose room is reused.
    pub fn transform_into(
        &self,
        batch: &EventBatch,
        counts: &mut TransformCounts,
        out: &mut CsrBatch,
    ) {
        out.version = self.version;
        out.dimension = self.dimension();
        out.indptr.clear();
        out.indptr.push(0);
        out.indices.clear();
        out.values.clear();
        out.labels.clear();
        // A slot per feature (per field of a hashed one) and the bias; multi-hot features may
        // take more.
        let per_row = 1 + self
            .layout
            .features
            .iter()
            .map(|f| match f.kind {
                Kind::Hashed { .. } => f.fields.len(),
                _ => 1,
            })
            .sum::<usize>();
        out.indices.reserve(batch.len() * per_row);
        out.values.reserve(batch.len() * per_row);
        out.labels.reserve(batch.len());
        out.indptr.reserve(batch.len());
        let steps = self.steps();
        // Counted in locals, added to `counts` once per batch.
        let mut local = TransformCounts::default();
        for i in 0..batch.len() {
            self.transform_row(&steps, batch, i, out, &mut local);
        }
        counts.lookups += local.lookups;
        counts.oov += local.oov;
        out.sources.clone_from(&batch.sources);
        out.times.clone_from(&batch.times);
    }

    /// Problems that would make the transform emit slots outside a feature's width or values
    /// that are not finite, empty when the map is consistent with its layout: every feature's
    /// state of its kind's type, vocabulary ids below the capacity, at most `buckets - 1`
    /// finite, strictly increasing boundaries, finite scales. A map read from outside (a model
    /// artifact) is checked with this before it serves.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.features.len() != self.layout.features.len() {
            problems.push(format!(
                "{} feature states for {} features",
                self.features.len(),
                self.layout.features.len()
            ));
        }
        for (def, state) in self.layout.features.iter().zip(&self.features) {
            let name = &def.name;
            match (&def.kind, state) {
                (Kind::OneHot(spec) | Kind::MultiHot(spec, _), FeatureState::Vocab(ids)) => {
                    if let Some(id) = ids.values().find(|&&id| id >= spec.capacity) {
                        problems.push(format!(
                            "{name}: id {id} is not below the capacity {}",
                            spec.capacity
                        ));
                    }
                }
                (Kind::Bucketize { buckets, .. }, FeatureState::Buckets(b)) => {
                    if b.len() >= *buckets as usize {
                        problems.push(format!(
                            "{name}: {} boundaries for {buckets} buckets",
                            b.len()
                        ));
                    }
                    if !b.iter().all(|x| x.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
                        problems.push(format!(
                            "{name}: boundaries must be finite and strictly increasing"
                        ));
                    }
                }
                (Kind::Standardize { .. }, FeatureState::Scale { mean, std }) => {
                    if !(mean.is_finite() && std.is_finite() && *std >= 0.0) {
                        problems.push(format!(
                            "{name}: mean {mean} and std {std} must be finite, std >= 0"
                        ));
                    }
                }
                (
                    Kind::Hash { .. } | Kind::Cross { .. } | Kind::Numeric | Kind::Hashed { .. },
                    FeatureState::Stateless,
                ) => {}
                (kind, _) => {
                    problems.push(format!("{name}: a state of another kind than {kind:?}"))
                }
            }
        }
        problems
    }

    /// Number of values holding an id, per vocabulary feature (`None` for other features).
    pub fn vocab_sizes(&self) -> Vec<Option<usize>> {
        self.features
            .iter()
            .map(|f| match f {
                FeatureState::Vocab(ids) => Some(ids.len()),
                _ => None,
            })
            .collect()
    }
}

/// Slots a row buffers before they are appended to the batch's arrays.
const ROW_SLOTS: usize = 64;

/// A row's slots, gathered in fixed arrays and appended to a [`CsrBatch`] at once: cheaper than
/// growing its two vectors slot by slot.
struct Slots<'a> {
    out: &'a mut CsrBatch,
    indices: [u32; ROW_SLOTS],
    values: [f32; ROW_SLOTS],
    len: usize,
}

impl<'a> Slots<'a> {
    fn new(out: &'a mut CsrBatch) -> Self {
        Slots {
            out,
            indices: [0; ROW_SLOTS],
            values: [0.0; ROW_SLOTS],
            len: 0,
        }
    }

    #[inline]
    fn put(&mut self, index: u32, value: f32) {
        if self.len == ROW_SLOTS {
            self.flush();
        }
        self.indices[self.len] = index;
        self.values[self.len] = value;
        self.len += 1;
    }

    fn flush(&mut self) {
        self.out
            .indices
            .extend_from_slice(&self.indices[..self.len]);
        self.out.values.extend_from_slice(&self.values[..self.len]);
        self.len = 0;
    }
}

/// One feature's part of the transform: where its value is, where its slots start, what to do.
struct Step<'a> {
    field: usize,
    offset: u32,
    op: Op<'a>,
}

/// A feature's kind together with the fitted state it reads.
enum Op<'a> {
    Vocab {
        spec: &'a VocabSpec,
        ids: &'a HashMap<u64, u32, BuildKeyed>,
    },
    MultiVocab {
        spec: &'a VocabSpec,
        ids: &'a HashMap<u64, u32, BuildKeyed>,
    },
    Buckets {
        boundaries: &'a [f64],
        missing: u32,
    },
    Scale {
        log1p: bool,
        clip: f64,
        mean: f64,
        std: f64,
    },
    Numeric,
    Hash {
        buckets: u32,
    },
    Cross {
        fields: &'a [usize],
        buckets: u32,
    },
    Hashed {
        fields: &'a [usize],
        mask: u64,
    },
}

/// Serializes a vocabulary's ids in fingerprint order.
fn in_key_order<S: serde::Serializer>(
    ids: &HashMap<u64, u32, BuildKeyed>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut sorted: Vec<(&u64, &u32)> = ids.iter().collect();
    sorted.sort_unstable_by_key(|(fingerprint, _)| **fingerprint);
    serializer.collect_map(sorted)
}

/// The token of a missing value in a [`Kind::Hashed`] feature: no number or hex token is it.
const HASHED_MISSING: u64 = 1 << 41;
/// Added to the `⌊ln(v)²⌋` bucket of a number above 2 (at most about 1,900).
const HASHED_BUCKETED: u64 = 1 << 40;
/// The field id of the hashed bias.
const HASHED_BIAS: u64 = 255;

/// A [`Kind::Hashed`] feature's slots of one row: the bias, then each field's token, in field
/// order, each `mix(field, token)` under the mask (slots may repeat, as two tokens may
/// collide).
fn hashed_row(fields: &[usize], mask: u64, row: &[Value], slots: &mut Slots<'_>) {
    slots.put((hashed_mix(HASHED_BIAS, 0) & mask) as u32, 1.0);
    for (id, &f) in fields.iter().enumerate() {
        let token = row.get(f).map_or(HASHED_MISSING, hashed_token);
        slots.put((hashed_mix(id as u64, token) & mask) as u32, 1.0);
    }
}

/// A value's token in a [`Kind::Hashed`] feature.
fn hashed_token(value: &Value) -> u64 {
    match value {
        Value::Cat(token) => *token,
        Value::Num(x) if *x <= 2.0 => {
            // An integer is itself (a negative one as its two's complement); a fraction its
            // number token.
            if x.fract() == 0.0 && *x >= i64::MIN as f64 {
                *x as i64 as u64
            } else {
                num_token(*x)
            }
        }
        Value::Num(x) => {
            let ln = x.ln();
            HASHED_BUCKETED + (ln * ln) as u64
        }
        Value::Missing | Value::Multi { .. } => HASHED_MISSING,
        Value::Bad(_) => BAD_TOKEN,
    }
}

/// A 64-bit mix of a field id and a token (the splitmix64 finalizer over both): every input
/// bit affects every output bit, and it is stable across platforms and releases.
fn hashed_mix(field: u64, token: u64) -> u64 {
    crate::hash::finalize(token ^ field.wrapping_mul(crate::hash::GOLDEN).rotate_left(32))
}

fn token(value: &Value) -> u64 {
    match value {
        Value::Cat(fp) => *fp,
        Value::Num(x) => num_token(*x),
        Value::Missing | Value::Multi { .. } => MISSING_TOKEN,
        Value::Bad(_) => BAD_TOKEN,
    }
}

/// The slot of a single value in a vocabulary feature: its id, or missing (`capacity`),
/// out-of-vocabulary (`capacity + 1`) or a hashed fallback slot above those.
#[inline]
fn vocab_slot(
    spec: &VocabSpec,
    ids: &HashMap<u64, u32, BuildKeyed>,
    value: &Value,
    counts: &mut TransformCounts,
) -> u32 {
    let missing = spec.capacity;
    let oov = spec.capacity + 1;
    let token = match value {
        Value::Cat(fp) => *fp,
        Value::Num(x) => num_token(*x),
        Value::Missing | Value::Multi { .. } => return missing,
        Value::Bad(_) => {
            return match spec.invalid {
                InvalidPolicy::Oov => oov,
                InvalidPolicy::Missing => missing,
            }
        }
    };
    counts.lookups += 1;
    match ids.get(&token) {
        Some(&id) => id,
        None => {
            counts.oov += 1;
            if spec.hash_fallback == 0 {
                oov
            } else {
                let h = crate::hash::finalize(token);
                spec.capacity + 2 + (h % u64::from(spec.hash_fallback)) as u32
            }
        }
    }
}

/// For each bucket under `new` boundaries, the bucket under `old` boundaries it continues: the
/// old bucket of the new bucket's lower edge (for the first bucket, of the values just below
/// its upper edge).
pub fn bucket_remap(old: &[f64], new: &[f64]) -> Vec<u32> {
    let first = new
        .first()
        .map_or(0, |&upper| old.partition_point(|&b| b < upper));
    std::iter::once(first as u32)
        .chain(
            new.iter()
                .map(|lower| old.partition_point(|b| b <= lower) as u32),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmap::{FeatureFitter, FeatureMapSpec, Parser, Partials, Schema};
    use proptest::prelude::*;

    /// Every transform kind, with small capacities so that fallbacks and evictions happen.
    const SPEC: &str = include_str!("testdata/every_kind.toml");

    proptest! {
        /// Any lines (fields of digits, words, separators, long or non-UTF-8 bytes): parsing
        /// counts every malformed value it keeps, two fitted versions follow, every row's
        /// slots are below the dimension with finite values, and every version is consistent
        /// and round-trips through JSON bit for bit.
        #[test]
        fn any_events_fit_and_transform_in_range(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        Just(Vec::new()),
                        "-?[0-9]{1,20}".prop_map(String::into_bytes),
                        "-?[0-9]\\.[0-9]{0,3}e-?[0-9]{1,3}".prop_map(String::into_bytes),
                        "[a-z|]{1,24}".prop_map(String::into_bytes),
                        proptest::collection::vec(any::<u8>(), 0..20),
                    ],
                    39,
                ),
                1..40,
            ),
        ) {
            let spec: FeatureMapSpec = toml::from_str(SPEC).unwrap();
            let layout = spec.compile(&Schema::criteo()).unwrap();
            let mut parser = Parser::new(&layout);
            let mut map = FeatureMap::new(layout.clone());
            let mut fitters: Vec<FeatureFitter> = (0..layout.features.len() as u32)
                .filter_map(|f| FeatureFitter::new(&layout, f))
                .collect();
            for (epoch, chunk) in lines.chunks(20).enumerate() {
                let mut batch = EventBatch::new(39);
                for fields in chunk {
                    let mut line = b"1".to_vec();
                    for field in fields {
                        line.push(b'\t');
                        line.extend(field.iter().map(|&b| if b == b'\t' || b == b'\n' { b' ' } else { b }));
                    }
                    prop_assert!(parser.parse_record(&line, epoch as u64 * 800, &mut batch).is_ok());
                }
                let bad = batch.values.iter().filter(|v| matches!(v, Value::Bad(_))).count();
                prop_assert!(parser.bad.total() >= bad as u64);
                let rows = map.transform(&batch, &mut TransformCounts::default());
                prop_assert_eq!(rows.len(), batch.len());
                prop_assert!(rows.indices.iter().all(|&i| (i as usize) < map.dimension()));
                prop_assert!(rows.values.iter().all(|v| v.is_finite()));
                let mut partials = Partials::new(&layout, 1);
                partials.observe(&batch);
                let mut by_feature = partials.finish(0);
                let updates: Vec<_> = fitters
                    .iter_mut()
                    .filter_map(|fitter| {
                        let at = by_feature.iter().position(|p| p.feature == fitter.feature)?;
                        Some(fitter.merge(vec![by_feature.swap_remove(at)]))
                    })
                    .collect();
                map.apply(&updates);
                // Every fitted version is consistent, and survives featuremap.json exactly.
                prop_assert!(map.problems().is_empty(), "{:?}", map.problems());
                let json = serde_json::to_vec(&map).unwrap();
                let back: FeatureMap = serde_json::from_slice(&json).unwrap();
                prop_assert_eq!(&back, &map);
                // The same map built another way (its vocabularies grown large and filled
                // backwards, as a restored job's may be) writes the same bytes.
                let mut rebuilt = map.clone();
                for state in &mut rebuilt.features {
                    if let FeatureState::Vocab(ids) = state {
                        let mut entries: Vec<(u64, u32)> = ids.iter().map(|(&k, &v)| (k, v)).collect();
                        entries.sort_unstable();
                        let mut other = HashMap::with_capacity_and_hasher(4 * ids.len() + 64, BuildKeyed::default());
                        other.extend(entries.into_iter().rev());
                        *ids = other;
                    }
                }
                prop_assert_eq!(serde_json::to_vec(&rebuilt).unwrap(), json);
            }
        }
    }

    #[test]
    fn remap_follows_the_values() {
        // Old buckets: (-inf,10) [10,20) [20,inf); new: (-inf,5) [5,15) [15,inf).
        assert_eq!(bucket_remap(&[10.0, 20.0], &[5.0, 15.0]), vec![0, 0, 1]);
        assert_eq!(bucket_remap(&[], &[1.0]), vec![0, 0]);
        assert_eq!(bucket_remap(&[1.0, 2.0], &[]), vec![0]);
        assert_eq!(bucket_remap(&[1.0, 2.0], &[1.0, 2.0]), vec![0, 1, 2]);
    }
}
