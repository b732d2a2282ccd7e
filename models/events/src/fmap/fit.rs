//! Fitting a FeatureMap: per-worker partial statistics of one epoch ([`Partials`]), and the
//! per-feature state that merges every worker's partials at the epoch's end into the update
//! that makes the next FeatureMap version ([`FeatureFitter`]).

use super::kll::Kll;
use super::map::{FeatureMap, Transition};
use super::spec::{Kind, Layout, VocabSpec};
use super::update::{Change, FeatureUpdate, FitFigures};
use super::value::{EventBatch, Value};
use super::{num_token, signed_log1p, small_integer, BuildKeyed, SMALL_INTEGERS, SMALL_LN_1P};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Occurrences of a categorical value in an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Occurrences.
    pub count: u64,
    /// Latest event time, milliseconds.
    pub last_seen: u64,
}

/// Count, mean and sum of squared deviations, merged with Chan et al.'s formula.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Values seen.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// Adds a value (Welford).
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds everything `other` has seen.
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count as f64 / n;
        self.m2 += other.m2 + delta * delta * self.count as f64 * other.count as f64 / n;
        self.count += other.count;
    }

    /// The population standard deviation (0 with fewer than two values).
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        }
    }
}

/// One feature's statistics of one epoch on one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stats {
    /// Categorical counts by fingerprint.
    Counts(HashMap<u64, Seen, BuildKeyed>),
    /// A quantile sketch.
    Sketch(Kll),
    /// Moments of the (possibly log1p-transformed) values.
    Moments(Moments),
}

/// What one worker sends the owner of a feature at an epoch's end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeaturePartial {
    /// The feature's index in the layout.
    pub feature: u32,
    /// The worker that observed the statistics (the merge takes partials in worker order, so
    /// that a merged sketch does not depend on the order messages arrive in).
    pub worker: u32,
    /// The latest event time the worker saw in the epoch, milliseconds.
    pub max_time: u64,
    /// The statistics.
    pub stats: Stats,
}

/// The partial statistics of all fitted features on one worker in one epoch.
#[derive(Clone, Debug)]
pub struct Partials {
    features: Vec<Observed>,
    max_time: u64,
    rows: u64,
}

/// One fitted feature's statistics in [`Partials`], with where its value is in a row.
#[derive(Clone, Debug)]
struct Observed {
    feature: u32,
    field: usize,
    stats: Stats,
    /// For a standardized feature, its small integers.
    small: Option<SmallIntegers>,
}

/// How often each integer below [`SMALL_INTEGERS`] occurred in a standardized feature. Counting costs one add
/// where Welford's update costs a division; the counts join the moments as groups (each of one
/// value, so without spread) when the partial is finished.
#[derive(Clone, Debug)]
struct SmallIntegers {
    log1p: bool,
    counts: Vec<u64>,
}

impl SmallIntegers {
    /// Adds every counted integer to `moments`, as the value the feature standardizes.
    fn fold_into(&self, moments: &mut Moments) {
        for (k, &count) in self.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
            let mean = if self.log1p { SMALL_LN_1P[k] } else { k as f64 };
            moments.merge(&Moments {
                count,
                mean,
                m2: 0.0,
            });
        }
    }
}

impl Partials {
    /// Empty statistics for every fitted feature of `layout`; `seed` seeds the sketches.
    pub fn new(layout: &Layout, seed: u64) -> Self {
        let features = layout
            .features
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let (stats, small) = match &f.kind {
                    Kind::OneHot(_) | Kind::MultiHot(..) => {
                        (Stats::Counts(HashMap::default()), None)
                    }
                    Kind::Bucketize { k, .. } => {
                        (Stats::Sketch(Kll::new(*k, seed ^ i as u64)), None)
                    }
                    Kind::Standardize { log1p, .. } => (
                        Stats::Moments(Moments::default()),
                        Some(SmallIntegers {
                            log1p: *log1p,
                            counts: vec![0; SMALL_INTEGERS],
                        }),
                    ),
                    _ => return None,
                };
                Some(Observed {
                    feature: i as u32,
                    field: *f.fields.first()?,
                    stats,
                    small,
                })
            })
            .collect();
        Partials {
            features,
            max_time: 0,
            rows: 0,
        }
    }

    /// Rows observed.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The number of distinct values counted, per fitted feature (0 for the others): a hint
    /// for [`Partials::reserve`] in the next epoch.
    pub fn distinct(&self) -> Vec<usize> {
        self.features
            .iter()
            .map(|observed| match &observed.stats {
                Stats::Counts(counts) => counts.len(),
                _ => 0,
            })
            .collect()
    }

    /// Makes room for `distinct` values per fitted feature (as [`Partials::distinct`] gives),
    /// so that counting an epoch like the last one does not grow the tables as it goes.
    pub fn reserve(&mut self, distinct: &[usize]) {
        for (observed, &n) in self.features.iter_mut().zip(distinct) {
            if let Stats::Counts(counts) = &mut observed.stats {
                counts.reserve(n);
            }
        }
    }

    /// Adds every event of `batch`.
    pub fn observe(&mut self, batch: &EventBatch) {
        self.rows += batch.len() as u64;
        self.max_time = batch.times.iter().copied().fold(self.max_time, u64::max);
        // One pass over the row-major values: a column-wise pass would stride through the
        // whole batch once per feature.
        for (i, &time) in batch.times.iter().enumerate() {
            let row = batch.row(i);
            for observed in &mut self.features {
                let Some(value) = row.get(observed.field) else {
                    continue;
                };
                match &mut observed.stats {
                    Stats::Counts(counts) => {
                        let mut count = |token: u64| {
                            let seen = counts.entry(token).or_default();
                            seen.count += 1;
                            seen.last_seen = seen.last_seen.max(time);
                        };
                        match value {
                            Value::Cat(fp) => count(*fp),
                            Value::Num(x) => count(num_token(*x)),
                            Value::Multi { .. } => {
                                batch.multi(value).iter().for_each(|&t| count(t))
                            }
                            Value::Missing | Value::Bad(_) => {}
                        }
                    }
                    Stats::Sketch(sketch) => {
                        if let Value::Num(x) = value {
                            sketch.update(*x);
                        }
                    }
                    Stats::Moments(moments) => {
                        if let (Value::Num(x), Some(small)) = (value, &mut observed.small) {
                            match small_integer(*x) {
                                Some(k) => small.counts[k] += 1,
                                None => {
                                    moments.add(if small.log1p { signed_log1p(*x) } else { *x })
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The partials to send, one per fitted feature, tagged with the sending `worker`.
    pub fn finish(self, worker: u32) -> Vec<FeaturePartial> {
        let max_time = self.max_time;
        self.features
            .into_iter()
            .map(|mut observed| {
                if let (Stats::Moments(moments), Some(small)) =
                    (&mut observed.stats, &observed.small)
                {
                    small.fold_into(moments);
                }
                FeaturePartial {
                    feature: observed.feature,
                    worker,
                    max_time,
                    stats: observed.stats,
                }
            })
            .collect()
    }
}

/// One vocabulary entry on the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Occurrences since the value was first seen (or last evicted).
    pub count: u64,
    /// Latest event time, milliseconds.
    pub last_seen: u64,
    /// Its id, once given.
    pub id: Option<u32>,
}

/// A vocabulary's fit state: counts, ids, freed ids waiting out their quarantine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VocabState {
    spec: VocabSpec,
    /// Entries by fingerprint.
    pub entries: HashMap<u64, Entry, BuildKeyed>,
    next_id: u32,
    free: VecDeque<(u32, u64)>,
    blocked: Vec<u64>,
    live: u64,
}

impl VocabState {
    /// An empty vocabulary.
    pub fn new(spec: VocabSpec) -> Self {
        VocabState {
            spec,
            entries: HashMap::default(),
            next_id: 0,
            free: VecDeque::new(),
            blocked: Vec::new(),
            live: 0,
        }
    }

    /// Merges one epoch's counts; `now` is the latest event time seen anywhere, `version` the
    /// FeatureMap version being made.
    ///
    /// Order: counts are added; values unseen for `expire_after` are evicted (their ids wait
    /// `reuse_after_versions` versions before another value gets them); then every value that
    /// reached `min_count` without an id gets one, most counted first (ties by fingerprint), from
    /// the oldest reusable freed id or a new one below `capacity`; last, once more than
    /// `max_pending` values are still without an id, those seen longest ago are forgotten
    /// (ties: fewest occurrences, then the lowest fingerprint) down to three quarters of that,
    /// so that a long tail of values seen too rarely for an id cannot grow the state without
    /// bound.
    pub fn merge<'a>(
        &mut self,
        partials: impl IntoIterator<Item = &'a HashMap<u64, Seen, BuildKeyed>>,
        now: u64,
        version: u64,
    ) -> (Change, FitFigures) {
        let mut candidates = std::mem::take(&mut self.blocked);
        for counts in partials {
            for (&token, seen) in counts {
                let entry = self.entries.entry(token).or_insert(Entry {
                    count: 0,
                    last_seen: 0,
                    id: None,
                });
                let before = entry.count;
                entry.count += seen.count;
                entry.last_seen = entry.last_seen.max(seen.last_seen);
                if entry.id.is_none()
                    && entry.count >= self.spec.min_count
                    && before < self.spec.min_count
                {
                    candidates.push(token);
                }
            }
        }
        let mut removed = Vec::new();
        let mut evicted = 0;
        if let Some(expire) = self.spec.expire_after_ms {
            let horizon = now.saturating_sub(expire);
            self.entries.retain(|&token, entry| {
                if entry.last_seen >= horizon {
                    return true;
                }
                evicted += 1;
                if let Some(id) = entry.id {
                    removed.push((token, id));
                }
                false
            });
            removed.sort_unstable_by_key(|r| r.1);
            for &(_, id) in &removed {
                self.free.push_back((id, version));
            }
            self.live -= removed.len() as u64;
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut candidates: Vec<(u64, u64)> = candidates
            .into_iter()
            .filter_map(|t| {
                let e = self.entries.get(&t)?;
                (e.id.is_none() && e.count >= self.spec.min_count).then_some((e.count, t))
            })
            .collect();
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut added = Vec::new();
        for (i, &(_, token)) in candidates.iter().enumerate() {
            let reusable = self
                .free
                .front()
                .is_some_and(|&(_, at)| at + u64::from(self.spec.reuse_after_versions) <= version);
            let id = if reusable {
                self.free.pop_front().map(|f| f.0)
            } else if self.next_id < self.spec.capacity {
                self.next_id += 1;
                Some(self.next_id - 1)
            } else {
                None
            };
            let Some(id) = id else {
                self.blocked = candidates[i..].iter().map(|c| c.1).collect();
                break;
            };
            if let Some(entry) = self.entries.get_mut(&token) {
                entry.id = Some(id);
            }
            added.push((token, id));
        }
        self.live += added.len() as u64;
        evicted += self.forget_pending();
        let figures = FitFigures {
            vocab_size: self.live,
            pending: self.entries.len() as u64 - self.live,
            evicted,
            boundary_shifts: 0,
        };
        (Change::Vocab { added, removed }, figures)
    }

    /// Once more than `max_pending` values are without an id, forgets those seen longest ago
    /// until at most three quarters of the bound (rounded up) are held (so that the scan this
    /// takes is not made at every epoch); returns how many. Values that reached `min_count` but
    /// wait for capacity are without an id too: forgotten, they count up again.
    fn forget_pending(&mut self) -> u64 {
        let max = self.spec.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
        let pending = self.entries.len() as u64 - self.live;
        if pending <= max {
            return 0;
        }
        let excess = (pending - (max - max / 4)) as usize;
        let mut order: Vec<(u64, u64, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.id.is_none())
            .map(|(&token, e)| (e.last_seen, e.count, token))
            .collect();
        order.select_nth_unstable(excess - 1);
        for &(_, _, token) in &order[..excess] {
            self.entries.remove(&token);
        }
        let entries = &self.entries;
        self.blocked.retain(|token| entries.contains_key(token));
        excess as u64
    }
}

/// The `max_pending` of a vocabulary whose spec gives none: the statistics of values without
/// an id are bounded by default (about 40 MiB per feature), not by the stream.
pub const DEFAULT_MAX_PENDING: u64 = 1 << 20;

/// Numeric statistics over all of history or over a window of epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumericState {
    window: Option<usize>,
    ring: VecDeque<Stats>,
    total: Option<Stats>,
    boundaries: Vec<f64>,
    /// The newest scale made from values, `(mean, std)`.
    #[serde(default)]
    scale: Option<(f64, f64)>,
}

impl NumericState {
    fn merge(&mut self, kind: &Kind, epoch: Stats) -> (Change, FitFigures) {
        let current = match self.window {
            Some(window) => {
                self.ring.push_back(epoch);
                while self.ring.len() > window {
                    self.ring.pop_front();
                }
                let mut iter = self.ring.iter();
                let mut merged = iter.next().cloned().unwrap_or(epoch_placeholder(kind));
                iter.for_each(|s| merge_stats(&mut merged, s));
                merged
            }
            None => {
                match &mut self.total {
                    Some(total) => merge_stats(total, &epoch),
                    None => self.total = Some(epoch),
                }
                self.total.clone().unwrap_or(epoch_placeholder(kind))
            }
        };
        // A window without a value (a field missing for a while) keeps the boundaries and the
        // scale it had: made from nothing, every value would fall in one bucket and scale to 0,
        // and the weights of the other buckets would be carried away.
        match (current, kind) {
            (Stats::Sketch(sketch), Kind::Bucketize { buckets, .. }) if sketch.count() > 0 => {
                let boundaries = sketch.boundaries(*buckets);
                let shifts = boundaries.len().abs_diff(self.boundaries.len())
                    + boundaries
                        .iter()
                        .zip(&self.boundaries)
                        .filter(|(a, b)| a != b)
                        .count();
                self.boundaries.clone_from(&boundaries);
                let figures = FitFigures {
                    boundary_shifts: shifts as u64,
                    ..FitFigures::default()
                };
                (Change::Boundaries(boundaries), figures)
            }
            (Stats::Moments(m), _) => {
                if m.count > 0 {
                    self.scale = Some((m.mean, m.std()));
                }
                let (mean, std) = self.scale.unwrap_or((0.0, 0.0));
                (Change::Scale { mean, std }, FitFigures::default())
            }
            _ => (
                Change::Boundaries(self.boundaries.clone()),
                FitFigures::default(),
            ),
        }
    }
}

fn epoch_placeholder(kind: &Kind) -> Stats {
    match kind {
        Kind::Bucketize { k, .. } => Stats::Sketch(Kll::new(*k, 0)),
        _ => Stats::Moments(Moments::default()),
    }
}

fn merge_stats(into: &mut Stats, other: &Stats) {
    match (into, other) {
        (Stats::Sketch(a), Stats::Sketch(b)) => a.merge(b),
        (Stats::Moments(a), Stats::Moments(b)) => a.merge(b),
        (Stats::Counts(a), Stats::Counts(b)) => {
            for (&token, seen) in b {
                let mine = a.entry(token).or_default();
                mine.count += seen.count;
                mine.last_seen = mine.last_seen.max(seen.last_seen);
            }
        }
        _ => {}
    }
}

/// The fit state of one feature on its owner worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureFitter {
    /// The feature's index in the layout.
    pub feature: u32,
    kind: Kind,
    state: FitState,
    /// Latest event time seen, milliseconds.
    now: u64,
    /// Epochs merged: the version the next merge makes is `merged + 1`.
    merged: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum FitState {
    Vocab(VocabState),
    Numeric(NumericState),
}

impl FeatureFitter {
    /// The fit state of feature `feature` of `layout`, or `None` when it is not fitted.
    pub fn new(layout: &Layout, feature: u32) -> Option<Self> {
        let def = layout.features.get(feature as usize)?;
        let state = match &def.kind {
            Kind::OneHot(spec) | Kind::MultiHot(spec, _) => FitState::Vocab(VocabState::new(*spec)),
            Kind::Bucketize { .. } | Kind::Standardize { .. } => FitState::Numeric(NumericState {
                window: layout.window_epochs.map(|w| w as usize),
                ring: VecDeque::new(),
                total: None,
                boundaries: Vec::new(),
                scale: None,
            }),
            _ => return None,
        };
        Some(FeatureFitter {
            feature,
            kind: def.kind.clone(),
            state,
            now: 0,
            merged: 0,
        })
    }

    /// The vocabulary state, for a vocabulary feature.
    pub fn vocab(&self) -> Option<&VocabState> {
        match &self.state {
            FitState::Vocab(v) => Some(v),
            FitState::Numeric(_) => None,
        }
    }

    /// Merges every worker's partials of one epoch into the update for the next version.
    pub fn merge(&mut self, mut partials: Vec<FeaturePartial>) -> FeatureUpdate {
        partials.sort_by_key(|p| p.worker);
        self.merged += 1;
        self.now = partials.iter().map(|p| p.max_time).fold(self.now, u64::max);
        let (change, figures) = match &mut self.state {
            FitState::Vocab(vocab) => vocab.merge(
                partials.iter().filter_map(|p| match &p.stats {
                    Stats::Counts(c) => Some(c),
                    _ => None,
                }),
                self.now,
                self.merged,
            ),
            FitState::Numeric(numeric) => {
                let mut iter = partials.into_iter().map(|p| p.stats);
                let mut epoch = iter.next().unwrap_or(epoch_placeholder(&self.kind));
                iter.for_each(|s| merge_stats(&mut epoch, &s));
                numeric.merge(&self.kind, epoch)
            }
        };
        FeatureUpdate {
            feature: self.feature,
            change,
            figures,
        }
    }
}

/// A FeatureMap fitted in one process, epoch by epoch: the batch counterpart of the dataflow's
/// fit (Spark ML's `fit` on a dataset), observing and merging each epoch as the dataflow does
/// on a single worker.
#[derive(Clone, Debug)]
pub struct BatchFitter {
    fitters: Vec<FeatureFitter>,
    map: FeatureMap,
    epochs: u64,
    /// What the current epoch's events observed so far.
    partials: Option<Partials>,
}

impl BatchFitter {
    /// Version 0 of `layout`'s map, with nothing observed.
    pub fn new(layout: Layout) -> Self {
        BatchFitter {
            fitters: (0..layout.features.len() as u32)
                .filter_map(|f| FeatureFitter::new(&layout, f))
                .collect(),
            map: FeatureMap::new(layout),
            epochs: 0,
            partials: None,
        }
    }

    /// The current version.
    pub fn map(&self) -> &FeatureMap {
        &self.map
    }

    /// Fits the next epoch's events into the next version and says how to carry a model
    /// across; an empty batch makes no version (`None`), as an epoch without events makes none
    /// in the dataflow.
    pub fn fit_epoch(&mut self, batch: &EventBatch) -> Option<Transition> {
        self.observe(batch);
        self.finish_epoch()
    }

    /// Observes some of the current epoch's events: an epoch may come in several batches, as
    /// it does to a worker of the dataflow.
    pub fn observe(&mut self, batch: &EventBatch) {
        if batch.is_empty() {
            return;
        }
        let (layout, seed) = (&self.map.layout, self.epochs);
        self.partials
            .get_or_insert_with(|| Partials::new(layout, seed))
            .observe(batch);
    }

    /// Ends the current epoch: what it observed makes the next version, and the answer says
    /// how to carry a model across (`None` when it observed no event, and so made no version).
    pub fn finish_epoch(&mut self) -> Option<Transition> {
        self.epochs += 1;
        let mut by_feature = self.partials.take()?.finish(0);
        let updates: Vec<FeatureUpdate> = self
            .fitters
            .iter_mut()
            .filter_map(|fitter| {
                let at = by_feature
                    .iter()
                    .position(|p| p.feature == fitter.feature)?;
                Some(fitter.merge(vec![by_feature.swap_remove(at)]))
            })
            .collect();
        Some(self.map.apply(&updates))
    }

    /// The fitted version.
    pub fn into_map(self) -> FeatureMap {
        self.map
    }
}

impl FeatureMap {
    /// Fits a FeatureMap in one process ([`BatchFitter`]): each batch is one epoch at times 0,
    /// 1, …. Returns the version after the last epoch.
    pub fn fit(layout: Layout, epochs: &[EventBatch]) -> FeatureMap {
        let mut fitter = BatchFitter::new(layout);
        for batch in epochs {
            fitter.fit_epoch(batch);
        }
        fitter.into_map()
    }
}

#[cfg(test)]
mod small_integer_tests {
    use super::{signed_log1p, small_integer, Moments, SmallIntegers, SMALL_INTEGERS};
    use proptest::prelude::*;

    proptest! {
        /// Counting the small integers and folding them in gives the moments that adding every
        /// value gives, up to rounding.
        #[test]
        fn counted_integers_give_the_moments_of_the_values(
            xs in proptest::collection::vec(
                prop_oneof![(0u32..1100).prop_map(f64::from), -1e6f64..1e6],
                1..500,
            ),
            log1p in any::<bool>(),
        ) {
            let standardized = |x: f64| if log1p { signed_log1p(x) } else { x };
            let mut direct = Moments::default();
            xs.iter().for_each(|&x| direct.add(standardized(x)));
            let mut small = SmallIntegers { log1p, counts: vec![0; SMALL_INTEGERS] };
            let mut counted = Moments::default();
            for &x in &xs {
                match small_integer(x) {
                    Some(k) => small.counts[k] += 1,
                    None => counted.add(standardized(x)),
                }
            }
            small.fold_into(&mut counted);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
            prop_assert_eq!(counted.count, direct.count);
            prop_assert!(close(counted.mean, direct.mean), "{} vs {}", counted.mean, direct.mean);
            prop_assert!(close(counted.std(), direct.std()), "{} vs {}", counted.std(), direct.std());
        }
    }

    fn computed(x: f64) -> f64 {
        x.signum() * x.abs().ln_1p()
    }

    proptest! {
        /// The table gives the very bits the computation gives, for integers in and past its
        /// range, fractions, signed zeros, infinities and NaN.
        #[test]
        fn lookup_equals_computation(
            x in prop_oneof![
                (-1100i64..1100).prop_map(|k| k as f64),
                any::<f64>(),
                Just(-0.0),
                Just(0.0),
                Just(1023.5),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(f64::NAN),
            ],
        ) {
            let (got, want) = (signed_log1p(x), computed(x));
            prop_assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{x}: {got} vs {want}");
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use crate::fmap::{FeatureMapSpec, Parser, Schema};

    /// A field missing for a whole window keeps the boundaries and the scale it had, rather
    /// than make them from nothing (one bucket, a zero scale).
    #[test]
    fn an_empty_window_keeps_boundaries_and_scale() {
        let spec: FeatureMapSpec = toml::from_str(
            "window_epochs = 2\n\
             [[transform]]\nkind = \"bucketize\"\nfields = [\"I1\"]\nbuckets = 4\n\
             [[transform]]\nkind = \"standardize\"\nfields = [\"I1\"]\n",
        )
        .unwrap();
        let layout = spec.compile(&Schema::criteo()).unwrap();
        let mut parser = Parser::new(&layout);
        let mut epoch = |value: &dyn Fn(usize) -> String| {
            let mut batch = EventBatch::new(39);
            for i in 0..100 {
                let line = format!("1\t{}{}", value(i), "\t".repeat(38));
                parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
            }
            batch
        };
        let full = epoch(&|i| (i * 7 % 100).to_string());
        let empty = epoch(&|_| String::new());
        let mut fitters: Vec<FeatureFitter> = (0..layout.features.len() as u32)
            .filter_map(|f| FeatureFitter::new(&layout, f))
            .collect();
        let mut merge = |batch: &EventBatch, time: u64| -> Vec<Change> {
            let mut partials = Partials::new(&layout, time);
            partials.observe(batch);
            let mut by_feature = partials.finish(0);
            fitters
                .iter_mut()
                .map(|fitter| {
                    let at = by_feature
                        .iter()
                        .position(|p| p.feature == fitter.feature)
                        .unwrap();
                    fitter.merge(vec![by_feature.swap_remove(at)]).change
                })
                .collect()
        };
        let fitted = merge(&full, 0);
        assert!(matches!(&fitted[0], Change::Boundaries(b) if b.len() == 3));
        assert!(matches!(fitted[1], Change::Scale { std, .. } if std > 0.0));
        assert_eq!(merge(&empty, 1), fitted, "the window still holds epoch 0");
        assert_eq!(merge(&empty, 2), fitted, "an empty window");
        let back = merge(&full, 3);
        assert_eq!(back, fitted);
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;
    use crate::fmap::{FeatureMapSpec, Schema};

    fn vocab(max_pending: Option<u64>) -> VocabState {
        VocabState::new(VocabSpec {
            min_count: 3,
            capacity: 10,
            expire_after_ms: None,
            hash_fallback: 0,
            invalid: crate::fmap::InvalidPolicy::Oov,
            reuse_after_versions: 1,
            max_pending,
        })
    }

    /// One epoch's counts: `(token, count, last_seen)`.
    fn counts(seen: &[(u64, u64, u64)]) -> HashMap<u64, Seen, BuildKeyed> {
        seen.iter()
            .map(|&(token, count, last_seen)| (token, Seen { count, last_seen }))
            .collect()
    }

    /// Beyond `max_pending`, the values without an id seen longest ago are forgotten (ties by
    /// fewest occurrences): one that comes back starts counting afresh. Values with an id stay.
    #[test]
    fn values_without_an_id_beyond_max_pending_are_forgotten_oldest_first() {
        let mut bounded = vocab(Some(2));
        // d reaches min_count; a, b, c wait, and a (seen longest ago) is one too many.
        let (_, figures) = bounded.merge(
            [&counts(&[(1, 1, 10), (2, 2, 20), (3, 1, 20), (4, 5, 5)])],
            20,
            1,
        );
        assert_eq!(
            (figures.vocab_size, figures.pending, figures.evicted),
            (1, 2, 1)
        );
        let mut kept: Vec<u64> = bounded.entries.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [2, 3, 4]);
        // a comes back twice: 2 occurrences, short of min_count, where the unbounded
        // vocabulary gives it an id (1 + 2); b reaches min_count.
        let next = counts(&[(1, 2, 30), (2, 1, 30)]);
        let (change, _) = bounded.merge([&next], 30, 2);
        assert_eq!(
            change,
            Change::Vocab {
                added: vec![(2, 1)],
                removed: vec![]
            }
        );
        assert_eq!(bounded.entries[&1].count, 2);
        let mut unbounded = vocab(None);
        unbounded.merge(
            [&counts(&[(1, 1, 10), (2, 2, 20), (3, 1, 20), (4, 5, 5)])],
            20,
            1,
        );
        let (change, figures) = unbounded.merge([&next], 30, 2);
        assert_eq!(
            change,
            Change::Vocab {
                added: vec![(1, 1), (2, 2)],
                removed: vec![]
            }
        );
        assert_eq!(figures.evicted, 0);
    }

    /// The order of forgetting: seen longest ago first, whatever the fingerprint or the count;
    /// among values last seen at the same time, the fewest occurrences, then the lowest
    /// fingerprint.
    #[test]
    fn forgetting_goes_by_last_seen_then_count_then_fingerprint() {
        let pending = counts(&[(9, 2, 10), (1, 1, 30), (5, 1, 20), (6, 2, 20), (2, 1, 20)]);
        for (max, kept) in [(3, vec![1, 5, 6]), (2, vec![1, 6])] {
            let mut bounded = vocab(Some(max));
            bounded.merge([&pending], 30, 1);
            let mut got: Vec<u64> = bounded.entries.keys().copied().collect();
            got.sort_unstable();
            assert_eq!(got, kept, "max_pending {max}");
        }
    }

    /// Past the bound, a quarter of it is freed at once, so the next epochs forget nothing.
    #[test]
    fn forgetting_frees_a_quarter_of_the_bound() {
        let mut bounded = vocab(Some(4));
        let five: Vec<(u64, u64, u64)> = (1..=5).map(|t| (t, 1, 10 * t)).collect();
        let (_, figures) = bounded.merge([&counts(&five)], 50, 1);
        assert_eq!((figures.pending, figures.evicted), (3, 2));
        let mut kept: Vec<u64> = bounded.entries.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [3, 4, 5]);
        let (_, figures) = bounded.merge([&counts(&[(6, 1, 60)])], 60, 2);
        assert_eq!((figures.pending, figures.evicted), (4, 0));
    }

    #[test]
    fn a_zero_max_pending_is_a_problem() {
        let spec: FeatureMapSpec = toml::from_str(
            "[[transform]]\nkind = \"one_hot\"\nfields = [\"C1\"]\nmax_pending = 0\n",
        )
        .unwrap();
        let problems = spec.compile(&Schema::criteo()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("max_pending")),
            "{problems:?}"
        );
    }
}
