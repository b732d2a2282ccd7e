//! Streaming feature engineering: parse events, fit a versioned FeatureMap, transform.
//!
//! Three operators, in the order of the data:
//!
//! - [`ParseEvents::parse_events`] parses raw records into [`EventBatch`]es by the layout's
//!   parse modes; records that cannot be events at all go to the dead letters, malformed
//!   values inside a good record are kept as [`Value::Bad`](millrace_models::fmap::Value) and
//!   counted.
//! - [`FitFeatureMap::fit_feature_map`]: every worker keeps partial statistics of each epoch
//!   (counts, KLL sketches, moments); when the frontier passes the epoch they are exchanged by
//!   feature to its owner worker, which merges them in worker order into the feature's
//!   [`FeatureUpdate`]; the updates are broadcast, so every worker sees every update of every
//!   epoch.
//! - [`TransformRows::transform_rows`] keeps a replica of the FeatureMap on every worker. The
//!   events of epoch `t` are transformed with the version made from all epochs before `t`; the
//!   updates of epoch `t` are applied once both the events and the updates of `t` are complete.
//!   Every worker therefore applies the same updates in the same order and holds the same
//!   version N for the same epochs: the FeatureMap is one consistent thing across the cluster.
//!
//! [`Featurize::featurize`] is the last two over one stream: the observer hands each batch on to
//! the transform instead of both reading a copy.
//!
//! Version numbers count epochs that had events: an epoch in which no worker saw an event makes
//! no updates and no version.

use crate::checkpoint;
use crate::part_spec::{Checkpoints, PartSpec};
use crate::source::now_ms;
use crate::tally::Tally;
use millrace_models::fmap::{
    BadKind, EventBatch, FeatureFitter, FeaturePartial, FeatureUpdate, Layout, Parser, Partials,
    TransformCounts, Transition,
};
use millrace_models::{CsrBatch, DeadLetter, FeatureMap, RawRecord};
use std::collections::{btree_map, hash_map, BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;
use timely::progress::frontier::AntichainRef;

/// The parser's checkpoint part: its counters (parsed, dead letters, bad values by kind).
pub(crate) const PARSE: PartSpec<Vec<u64>> = PartSpec::new("parse");
/// The fit's checkpoint part: the statistics of the features a worker owns.
pub(crate) const FIT: PartSpec<Vec<(u32, FeatureFitter)>> = PartSpec::new("fit");
/// The transform's checkpoint part: its replica of the FeatureMap and its counters of rows,
/// lookups and values out of vocabulary.
pub(crate) const TRANSFORM: PartSpec<(FeatureMap, [u64; 3])> = PartSpec::new("transform");

/// Counters and gauges of the featurize operators, shared by all workers of a process.
///
/// Gauges about the FeatureMap (version, vocabulary sizes, boundary shifts) are written by
/// worker 0 only, since every worker holds the same versions.
#[derive(Debug, Default)]
pub struct FeaturizeStats {
    /// Records parsed into events.
    pub parsed: AtomicU64,
    /// Records that could not be events and went to the dead letters.
    pub dead_letters: AtomicU64,
    /// Malformed values inside parsed events, per kind in the order of [`BadKind::ALL`].
    pub bad_values: [AtomicU64; 4],
    /// Rows transformed.
    pub rows: AtomicU64,
    /// Values looked up in a vocabulary.
    pub lookups: AtomicU64,
    /// Of those, values that had no id (out of vocabulary or hashed fallback).
    pub oov: AtomicU64,
    /// The newest FeatureMap version.
    pub version: AtomicU64,
    /// Values holding a vocabulary id, summed over the vocabulary features.
    pub vocab_size: AtomicU64,
    /// Values counted but without an id yet (below `min_count`, or no capacity left).
    pub vocab_pending: AtomicU64,
    /// Vocabulary values evicted since start.
    pub evicted: AtomicU64,
    /// Bucket boundaries that moved in the newest version.
    pub boundary_shifts: AtomicU64,
    /// Bucket boundaries that moved since start.
    pub boundary_shifts_total: AtomicU64,
}

impl FeaturizeStats {
    /// The malformed values of one kind.
    pub fn bad(&self, kind: BadKind) -> u64 {
        let column = BadKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.bad_values[column].load(Ordering::Relaxed)
    }

    /// The share of vocabulary lookups that found no id (0 before any lookup).
    pub fn oov_rate(&self) -> f64 {
        let lookups = self.lookups.load(Ordering::Relaxed);
        if lookups == 0 {
            0.0
        } else {
            self.oov.load(Ordering::Relaxed) as f64 / lookups as f64
        }
    }

    fn record_version(&self, map: &FeatureMap, updates: &[FeatureUpdate]) {
        self.version.store(map.version, Ordering::Relaxed);
        let (mut vocab, mut pending, mut evicted, mut shifts) = (0, 0, 0, 0);
        for update in updates {
            vocab += update.figures.vocab_size;
            pending += update.figures.pending;
            evicted += update.figures.evicted;
            shifts += update.figures.boundary_shifts;
        }
        self.vocab_size.store(vocab, Ordering::Relaxed);
        self.vocab_pending.store(pending, Ordering::Relaxed);
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
        self.boundary_shifts.store(shifts, Ordering::Relaxed);
        self.boundary_shifts_total
            .fetch_add(shifts, Ordering::Relaxed);
    }
}

/// The stash of the time of `cap`, holding a capability for that time on output 0; made by
/// `fresh` on first use. `None` for a message sent without a time.
pub(crate) fn stash_for<'a, V>(
    stash: &'a mut BTreeMap<u64, (Capability<u64>, V)>,
    cap: &InputCapability<u64>,
    fresh: impl FnOnce(u64) -> V,
) -> Option<&'a mut V> {
    let time = *cap.least()?;
    match stash.entry(time) {
        btree_map::Entry::Occupied(entry) => Some(&mut entry.into_mut().1),
        btree_map::Entry::Vacant(entry) => {
            let held = cap.retain_least(0)?;
            Some(&mut entry.insert((held, fresh(time))).1)
        }
    }
}

/// Parses raw records into event batches.
pub trait ParseEvents<'scope> {
    /// Parses each record with `parser` (a layout's, with its schema's decoder when the schema
    /// names one), as the schema declares: a delimited line, a JSON object, a libFM line, or
    /// bytes the decoder turns into a JSON object. Good records become one [`EventBatch`] per input batch on the first
    /// stream, each event with the position it was read at; records without a valid label,
    /// with the wrong number of columns, that are not JSON objects, hold a malformed libFM
    /// pair or are refused by the decoder become dead letters on the second, their reason naming the field. Each kind of
    /// error is logged once per worker; everything is counted in `stats`.
    ///
    /// An event's time is its record's timestamp (Kafka's create or log-append time), or the
    /// wall clock when it is parsed for a record without one. Vocabulary expiry runs on it.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Schema};
    /// use millrace_models::RawRecord;
    /// use millrace_operators::{Checkpoints, FeaturizeStats, ParseEvents};
    /// use std::sync::{atomic::Ordering, Arc};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let layout = FeatureMapSpec::criteo_default().compile(&Schema::criteo()).unwrap();
    /// let stats = Arc::new(FeaturizeStats::default());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let line = format!("1\t5{}", "\t".repeat(38));
    ///     let records = vec![
    ///         RawRecord { partition: 0, offset: 0, payload: line.into_bytes(), timestamp_ms: None },
    ///         RawRecord { partition: 0, offset: 1, payload: b"not an event".to_vec(), timestamp_ms: None },
    ///     ];
    ///     let none = Checkpoints::none();
    ///     let (_events, _dead) = records.to_stream(scope).parse_events(layout, shared, &none);
    /// });
    /// assert_eq!(stats.parsed.load(Ordering::Relaxed), 1);
    /// assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    /// ```
    fn parse_events(
        self,
        parser: impl Into<Parser>,
        stats: Arc<FeaturizeStats>,
        checkpoints: &Checkpoints,
    ) -> (
        StreamVec<'scope, u64, EventBatch>,
        StreamVec<'scope, u64, DeadLetter>,
    );
}

impl<'scope> ParseEvents<'scope> for StreamVec<'scope, u64, RawRecord> {
    fn parse_events(
        self,
        parser: impl Into<Parser>,
        stats: Arc<FeaturizeStats>,
        checkpoints: &Checkpoints,
    ) -> (
        StreamVec<'scope, u64, EventBatch>,
        StreamVec<'scope, u64, DeadLetter>,
    ) {
        let parser = parser.into();
        let worker = self.scope().index();
        let part = checkpoints.part(worker, &PARSE);
        let mut builder = OperatorBuilder::new("ParseEvents".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (events_out, events) = builder.new_output::<Vec<EventBatch>>();
        let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
        let mut events_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(events_out);
        let mut dead_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(dead_out);
        builder.build(move |_capabilities| {
            let mut parser = parser;
            let fields = parser.fields();
            let mut logged = HashSet::new();
            let mut bad_seen = [0u64; 4];
            // Checkpointed counts: parsed, dead letters, then the bad values by kind.
            let (mut tally, restored) = Tally::<6>::new(part, &PARSE);
            stats.parsed.fetch_add(restored[0], Ordering::Relaxed);
            stats.dead_letters.fetch_add(restored[1], Ordering::Relaxed);
            for (counter, n) in stats.bad_values.iter().zip(&restored[2..]) {
                counter.fetch_add(*n, Ordering::Relaxed);
            }
            move |frontiers| {
                let mut events_out = events_out.activate();
                let mut dead_out = dead_out.activate();
                input.for_each(|cap, data| {
                    let (Some(events_cap), Some(dead_cap)) =
                        (cap.retain_least(0), cap.retain_least(1))
                    else {
                        return;
                    };
                    let now = now_ms();
                    let mut batch = EventBatch::with_capacity(fields, data.len());
                    let mut letters = Vec::new();
                    for record in data.drain(..) {
                        let time_ms = record.timestamp_ms.unwrap_or(now);
                        match parser.parse_record(&record.payload, time_ms, &mut batch) {
                            Ok(()) => batch.sources.push(record.position()),
                            Err(error) => {
                                if logged.insert(error.kind()) {
                                    tracing::warn!(
                                        error_type = error.kind(),
                                        %error,
                                        partition = record.partition,
                                        offset = record.offset,
                                        "malformed record sent to the dead letters (logged once per kind)"
                                    );
                                }
                                letters.push(DeadLetter::new(&error, record));
                            }
                        }
                    }
                    let mut counts = [batch.len() as u64, letters.len() as u64, 0, 0, 0, 0];
                    stats.parsed.fetch_add(counts[0], Ordering::Relaxed);
                    stats.dead_letters.fetch_add(counts[1], Ordering::Relaxed);
                    let totals = parser.bad.column_totals();
                    for (column, (total, seen)) in totals.iter().zip(&mut bad_seen).enumerate() {
                        if *total > *seen {
                            if *seen == 0 {
                                tracing::warn!(
                                    error_type = BadKind::ALL[column].label(),
                                    "malformed value handled by the feature spec's policy (logged once per kind)"
                                );
                            }
                            stats.bad_values[column].fetch_add(*total - *seen, Ordering::Relaxed);
                            counts[2 + column] = *total - *seen;
                            *seen = *total;
                        }
                    }
                    tally.add(*events_cap.time(), counts);
                    if !batch.is_empty() {
                        events_out.session(&events_cap).give(batch);
                    }
                    if !letters.is_empty() {
                        dead_out.session(&dead_cap).give_iterator(letters.into_iter());
                    }
                });
                tally.settle(frontiers[0].frontier());
            }
        });
        (events, dead)
    }
}

/// Fits a FeatureMap over a stream of event batches.
pub trait FitFeatureMap<'scope> {
    /// The updates that make each next FeatureMap version of `layout`, as the module describes:
    /// per-worker partials of each epoch, merged by each feature's owner when the frontier
    /// passes the epoch, broadcast so that every worker receives every update, at the epoch's
    /// time.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Parser, Schema};
    /// use millrace_models::{EventBatch, FeatureMap};
    /// use millrace_operators::{Checkpoints, FitFeatureMap};
    /// use std::sync::{Arc, Mutex};
    /// use timely::dataflow::operators::{Inspect, ToStream};
    ///
    /// let layout = FeatureMapSpec::criteo_default().compile(&Schema::criteo()).unwrap();
    /// let mut parser = Parser::new(&layout);
    /// let mut batch = EventBatch::new(39);
    /// for i in 0..10 {
    ///     let line = format!("0\t{i}{}\tcafe{}", "\t".repeat(12), "\t".repeat(25));
    ///     parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
    /// }
    /// let updates = Arc::new(Mutex::new(Vec::new()));
    /// let seen = updates.clone();
    /// timely::example(move |scope| {
    ///     vec![batch]
    ///         .to_stream(scope)
    ///         .fit_feature_map(layout.clone(), &Checkpoints::none())
    ///         .inspect(move |u| seen.lock().unwrap().push(u.clone()));
    /// });
    /// let mut map = FeatureMap::new(
    ///     FeatureMapSpec::criteo_default().compile(&Schema::criteo()).unwrap(),
    /// );
    /// let mut updates = updates.lock().unwrap().clone();
    /// updates.sort_by_key(|u| u.feature);
    /// map.apply(&updates);
    /// assert_eq!(map.version, 1);
    /// // `cafe` was seen 10 times, over the minimum count of 5: C1 has it in its vocabulary.
    /// assert_eq!(map.vocab_sizes().into_iter().flatten().sum::<usize>(), 1);
    /// ```
    fn fit_feature_map(
        self,
        layout: Layout,
        checkpoints: &Checkpoints,
    ) -> StreamVec<'scope, u64, FeatureUpdate>;
}

impl<'scope> FitFeatureMap<'scope> for StreamVec<'scope, u64, EventBatch> {
    fn fit_feature_map(
        self,
        layout: Layout,
        checkpoints: &Checkpoints,
    ) -> StreamVec<'scope, u64, FeatureUpdate> {
        let (partials, _events) = observe_features(self, layout.clone());
        merge_features(partials, layout, checkpoints)
    }
}

/// Observes each epoch's events into this worker's partial statistics, handed on when the
/// frontier passes the epoch; the events themselves leave on the second stream unchanged (moved,
/// not copied), for an operator downstream that needs them too.
fn observe_features<'scope>(
    events: StreamVec<'scope, u64, EventBatch>,
    layout: Layout,
) -> (
    StreamVec<'scope, u64, FeaturePartial>,
    StreamVec<'scope, u64, EventBatch>,
) {
    let worker = events.scope().index() as u32;
    let mut builder = OperatorBuilder::new("ObserveFeatures".to_owned(), events.scope());
    let mut input = builder.new_input(events, Pipeline);
    let (partials_out, partials) = builder.new_output::<Vec<FeaturePartial>>();
    let (events_out, events) = builder.new_output::<Vec<EventBatch>>();
    let mut partials_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(partials_out);
    let mut events_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(events_out);
    builder.build(move |_capabilities| {
        let mut open: BTreeMap<u64, (Capability<u64>, Partials)> = BTreeMap::new();
        // The distinct values of the last finished epoch: the next one's tables start that big.
        let mut distinct = Vec::new();
        move |frontiers| {
            let mut partials_out = partials_out.activate();
            let mut events_out = events_out.activate();
            input.for_each(|cap, data| {
                // Empty batches open no partials: an epoch of them makes no version, as in
                // `FeatureMap::fit`.
                let partials = if data.iter().any(|batch| !batch.is_empty()) {
                    stash_for(&mut open, &cap, |time| {
                        let mut partials = Partials::new(&layout, u64::from(worker) << 32 | time);
                        partials.reserve(&distinct);
                        partials
                    })
                } else {
                    None
                };
                if let Some(partials) = partials {
                    for batch in data.iter() {
                        partials.observe(batch);
                    }
                }
                if let Some(events_cap) = cap.retain_least(1) {
                    events_out.session(&events_cap).give_container(data);
                }
            });
            while let Some(entry) = open.first_entry() {
                if frontiers[0].frontier().less_equal(entry.key()) {
                    break;
                }
                let (cap, partials) = entry.remove();
                distinct = partials.distinct();
                partials_out
                    .session(&cap)
                    .give_iterator(partials.finish(worker).into_iter());
            }
        }
    });
    (partials, events)
}

/// Merges each epoch's partials, exchanged to each feature's owner, in worker order into the
/// feature's update; broadcasts the updates to every worker.
fn merge_features<'scope>(
    partials: StreamVec<'scope, u64, FeaturePartial>,
    layout: Layout,
    checkpoints: &Checkpoints,
) -> StreamVec<'scope, u64, FeatureUpdate> {
    let by_owner = Exchange::new(|p: &FeaturePartial| u64::from(p.feature));
    let worker = partials.scope().index();
    let mut part = checkpoints.part(worker, &FIT);
    partials
        .unary_frontier::<CapacityContainerBuilder<Vec<FeatureUpdate>>, _, _, _>(
            by_owner,
            "MergeFeatureStats",
            move |_capability, _info| {
                // The fitters of the features this worker owns: its checkpoint part.
                let mut fitters: HashMap<u32, FeatureFitter> = HashMap::new();
                let mut lo = part.as_ref().map_or(0, |p| p.resume_epoch().saturating_sub(1));
                if let Some((_, _, bytes)) = part.as_mut().and_then(checkpoint::Part::take_restored) {
                    match FIT.decode(&bytes) {
                        Ok(restored) => fitters.extend(restored),
                        Err(error) => tracing::error!(%error, "the feature statistics' checkpoint part is unreadable; fitting from scratch"),
                    }
                }
                let snapshot = |fitters: &HashMap<u32, FeatureFitter>| {
                    let mut sorted: Vec<(&u32, &FeatureFitter)> = fitters.iter().collect();
                    sorted.sort_by_key(|(feature, _)| **feature);
                    FIT.encode(&sorted)
                };
                let mut open: BTreeMap<u64, (Capability<u64>, Vec<FeaturePartial>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        if let Some(stash) = stash_for(&mut open, &cap, |_| Vec::new()) {
                            stash.append(data);
                        }
                    });
                    while let Some(entry) = open.first_entry() {
                        if frontier.frontier().less_equal(entry.key()) {
                            break;
                        }
                        let time = *entry.key();
                        if let (Some(part), true) = (part.as_mut(), time > 0) {
                            part.covers(lo, time - 1, || snapshot(&fitters));
                        }
                        lo = time;
                        let (cap, mut partials) = entry.remove();
                        partials.sort_by_key(|p| (p.feature, p.worker));
                        let mut session = output.session(&cap);
                        let mut partials = partials.into_iter().peekable();
                        while let Some(first) = partials.next() {
                            let feature = first.feature;
                            let mut group = vec![first];
                            while let Some(p) = partials.next_if(|p| p.feature == feature) {
                                group.push(p);
                            }
                            let fitter = match fitters.entry(feature) {
                                hash_map::Entry::Occupied(e) => e.into_mut(),
                                hash_map::Entry::Vacant(e) => {
                                    match FeatureFitter::new(&layout, feature) {
                                        Some(fitter) => e.insert(fitter),
                                        None => continue,
                                    }
                                }
                            };
                            session.give(fitter.merge(group));
                        }
                    }
                    if let Some(part) = part.as_mut() {
                        let through = checkpoint::settled_through(&[frontier.frontier()]);
                        if let Some(through) = through.filter(|t| open.keys().next().is_none_or(|o| o > t)) {
                            part.covers(lo, through, || snapshot(&fitters));
                        }
                    }
                }
            },
        )
        .broadcast()
}

/// What [`Featurize::featurize`] makes: the sparse rows, and the updates of every version (on
/// every worker).
pub type Featurized<'scope> = (
    StreamVec<'scope, u64, CsrBatch>,
    StreamVec<'scope, u64, FeatureUpdate>,
);

/// Fits and transforms in one: the events are observed, then moved on to the transform, so a
/// batch is never copied (two consumers of one stream would each get a copy).
pub trait Featurize<'scope> {
    /// The sparse rows of the events, each epoch's made with the FeatureMap version fitted from
    /// every epoch before it, starting from `map`: [`FitFeatureMap::fit_feature_map`] and
    /// [`TransformRows::transform_rows`] over the same events, without the copy. `on_version`
    /// is as for [`TransformRows::transform_rows`]. The second stream is the updates (on every
    /// worker), for operators downstream that follow the versions themselves, such as
    /// [`crate::TrainRows`].
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Parser, Schema};
    /// use millrace_models::{EventBatch, FeatureMap};
    /// use millrace_operators::{Checkpoints, Featurize, FeaturizeStats};
    /// use std::sync::{atomic::Ordering, Arc};
    /// use timely::dataflow::operators::{Inspect, ToStream};
    ///
    /// let layout = FeatureMapSpec::criteo_default().compile(&Schema::criteo()).unwrap();
    /// let mut parser = Parser::new(&layout);
    /// let mut batch = EventBatch::new(39);
    /// parser.parse_record(format!("1\t3{}", "\t".repeat(38)).as_bytes(), 0, &mut batch).unwrap();
    /// let stats = Arc::new(FeaturizeStats::default());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let none = Checkpoints::none();
    ///     let (rows, _updates) =
    ///         vec![batch].to_stream(scope).featurize(FeatureMap::new(layout), shared, &none, |_, _| {});
    ///     rows.inspect(|rows| assert_eq!(rows.row(0).0.len(), 1 + 13 + 13 + 26));
    /// });
    /// assert_eq!(stats.rows.load(Ordering::Relaxed), 1);
    /// assert_eq!(stats.version.load(Ordering::Relaxed), 1);
    /// ```
    fn featurize<F>(
        self,
        map: FeatureMap,
        stats: Arc<FeaturizeStats>,
        checkpoints: &Checkpoints,
        on_version: F,
    ) -> Featurized<'scope>
    where
        F: FnMut(&Arc<FeatureMap>, &Transition) + 'static;
}

impl<'scope> Featurize<'scope> for StreamVec<'scope, u64, EventBatch> {
    fn featurize<F>(
        self,
        map: FeatureMap,
        stats: Arc<FeaturizeStats>,
        checkpoints: &Checkpoints,
        on_version: F,
    ) -> Featurized<'scope>
    where
        F: FnMut(&Arc<FeatureMap>, &Transition) + 'static,
    {
        let (partials, events) = observe_features(self, map.layout.clone());
        let updates = merge_features(partials, map.layout.clone(), checkpoints);
        let rows = events.transform_rows(updates.clone(), map, stats, checkpoints, on_version);
        (rows, updates)
    }
}

/// Transforms event batches into sparse rows with the FeatureMap version of their epoch.
pub trait TransformRows<'scope> {
    /// One [`CsrBatch`] per event batch, made with the version fitted from every epoch before
    /// the batch's (`map` is the version before any fit). `updates` is what
    /// [`FitFeatureMap::fit_feature_map`] made from the same events. `on_version` is called on
    /// every worker with each new version and what changed, once the version is complete.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Parser, Schema};
    /// use millrace_models::{EventBatch, FeatureMap};
    /// use millrace_operators::{Checkpoints, FeaturizeStats, FitFeatureMap, TransformRows};
    /// use std::sync::{atomic::Ordering, Arc};
    /// use timely::dataflow::operators::{Inspect, ToStream};
    ///
    /// let layout = FeatureMapSpec::criteo_default().compile(&Schema::criteo()).unwrap();
    /// let mut parser = Parser::new(&layout);
    /// let mut batch = EventBatch::new(39);
    /// parser.parse_record(format!("1\t3{}", "\t".repeat(38)).as_bytes(), 0, &mut batch).unwrap();
    /// let stats = Arc::new(FeaturizeStats::default());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let events = vec![batch].to_stream(scope);
    ///     let none = Checkpoints::none();
    ///     let updates = events.clone().fit_feature_map(layout.clone(), &none);
    ///     events
    ///         .transform_rows(updates, FeatureMap::new(layout), shared, &none, |_, _| {})
    ///         // Bias, 13 bucketized and 13 standardized numbers, 26 categoricals.
    ///         .inspect(|rows| assert_eq!(rows.row(0).0.len(), 1 + 13 + 13 + 26));
    /// });
    /// assert_eq!(stats.rows.load(Ordering::Relaxed), 1);
    /// assert_eq!(stats.version.load(Ordering::Relaxed), 1);
    /// ```
    fn transform_rows<F>(
        self,
        updates: StreamVec<'scope, u64, FeatureUpdate>,
        map: FeatureMap,
        stats: Arc<FeaturizeStats>,
        checkpoints: &Checkpoints,
        on_version: F,
    ) -> StreamVec<'scope, u64, CsrBatch>
    where
        F: FnMut(&Arc<FeatureMap>, &Transition) + 'static;
}

impl<'scope> TransformRows<'scope> for StreamVec<'scope, u64, EventBatch> {
    fn transform_rows<F>(
        self,
        updates: StreamVec<'scope, u64, FeatureUpdate>,
        map: FeatureMap,
        stats: Arc<FeaturizeStats>,
        checkpoints: &Checkpoints,
        mut on_version: F,
    ) -> StreamVec<'scope, u64, CsrBatch>
    where
        F: FnMut(&Arc<FeatureMap>, &Transition) + 'static,
    {
        let worker = self.scope().index();
        let reporter = worker == 0;
        let mut part = checkpoints.part(worker, &TRANSFORM);
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<CsrBatch>>, _, _, _, _>(
            updates,
            Pipeline,
            Pipeline,
            "TransformRows",
            move |_capability, _info| {
                // The replica and the counters of rows, lookups and OOV: the checkpoint part.
                let mut lo = part.as_ref().map_or(0, |p| p.resume_epoch().saturating_sub(1));
                let mut map = map;
                let mut counted = [0u64; 3];
                if let Some((_, _, bytes)) = part.as_mut().and_then(checkpoint::Part::take_restored) {
                    match TRANSFORM.decode(&bytes) {
                        Ok((restored, counts)) => {
                            map = restored;
                            counted = counts;
                            stats.rows.fetch_add(counts[0], Ordering::Relaxed);
                            stats.lookups.fetch_add(counts[1], Ordering::Relaxed);
                            stats.oov.fetch_add(counts[2], Ordering::Relaxed);
                            if reporter {
                                stats.version.store(map.version, Ordering::Relaxed);
                            }
                        }
                        Err(error) => tracing::error!(%error, "the transform's checkpoint part is unreadable; starting from version 0"),
                    }
                }
                let mut replica = Replica::new(map);
                let mut events: BTreeMap<u64, (Capability<u64>, Vec<EventBatch>)> = BTreeMap::new();
                move |(events_in, events_frontier), (updates_in, updates_frontier), output| {
                    events_in.for_each(|cap, data| {
                        if let Some(stash) = stash_for(&mut events, &cap, |_| Vec::new()) {
                            stash.append(data);
                        }
                    });
                    updates_in.for_each(|cap, data| replica.stash(&cap, data));
                    let times = events.keys().copied().collect();
                    let frontiers = (events_frontier.frontier(), updates_frontier.frontier());
                    replica.advance(times, frontiers, |step, map| match step {
                        Step::Data { time, done } => {
                            if time > lo {
                                // A new epoch: the state is the one after every earlier epoch.
                                if let (Some(part), true) = (part.as_mut(), time > 0) {
                                    part.covers(lo, time - 1, || {
                                        TRANSFORM.encode(&(map.as_ref(), counted))
                                    });
                                }
                                lo = time;
                            }
                            if let Some((cap, batches)) = events.get_mut(&time) {
                                let mut counts = TransformCounts::default();
                                let mut session = output.session(&*cap);
                                for batch in batches.drain(..) {
                                    stats.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
                                    counted[0] += batch.len() as u64;
                                    session.give(map.transform(&batch, &mut counts));
                                }
                                stats.lookups.fetch_add(counts.lookups, Ordering::Relaxed);
                                stats.oov.fetch_add(counts.oov, Ordering::Relaxed);
                                counted[1] += counts.lookups;
                                counted[2] += counts.oov;
                            }
                            if done {
                                events.remove(&time);
                            }
                            ControlFlow::Continue(())
                        }
                        Step::Applied {
                            updates,
                            transition,
                        } => {
                            if reporter {
                                stats.record_version(map, updates);
                            }
                            on_version(map, transition);
                            ControlFlow::Continue(())
                        }
                    });
                    if let Some(part) = part.as_mut() {
                        let settled = checkpoint::settled_through(&[frontiers.0, frontiers.1]);
                        let waiting = events.keys().chain(replica.pending_times()).min().copied();
                        if let Some(hi) = settled.and_then(|s| checkpoint::before_waiting(s, waiting)) {
                            part.covers(lo, hi, || {
                                TRANSFORM.encode(&(replica.map().as_ref(), counted))
                            });
                        }
                    }
                }
            },
        )
    }
}

/// One step of [`Replica::advance`].
pub(crate) enum Step<'a> {
    /// The data of epoch `time` may be used with the replica's version; `done` when no more of
    /// it can come.
    Data {
        /// The epoch.
        time: u64,
        /// Whether the epoch's data is complete.
        done: bool,
    },
    /// A new version was made from these updates.
    Applied {
        /// The updates, in feature order.
        updates: &'a [FeatureUpdate],
        /// What changed.
        transition: &'a Transition,
    },
}

/// A worker's replica of the FeatureMap, following the broadcast updates. The updates of epoch
/// `t` are applied once both the data and the updates of `t` are complete, epoch by epoch, so
/// every replica passes through the same versions, and the data of `t` always meets the
/// version made from every epoch before it. Shared by the transform and the trainer.
pub(crate) struct Replica {
    map: Arc<FeatureMap>,
    pending: BTreeMap<u64, Vec<FeatureUpdate>>,
}

impl Replica {
    /// A replica starting at `map`.
    pub(crate) fn new(map: FeatureMap) -> Self {
        Replica {
            map: Arc::new(map),
            pending: BTreeMap::new(),
        }
    }

    /// The epochs whose updates wait for their epoch to complete.
    pub(crate) fn pending_times(&self) -> impl Iterator<Item = &u64> {
        self.pending.keys()
    }

    /// The current version.
    pub(crate) fn map(&self) -> &Arc<FeatureMap> {
        &self.map
    }

    /// Keeps received updates until their epoch is complete.
    pub(crate) fn stash(&mut self, cap: &InputCapability<u64>, updates: &mut Vec<FeatureUpdate>) {
        if let Some(&time) = cap.least() {
            self.pending.entry(time).or_default().append(updates);
        }
    }

    /// Walks the epochs that have data (`data_times`) or updates, in order, given the data's
    /// and the updates' frontiers: `step` gets each epoch's data once every earlier epoch is
    /// complete, then each new version once its epoch is; the walk stops at the first epoch
    /// that is not complete, or when `step` breaks (after a break on an epoch's data, the same
    /// step comes again on the next walk).
    pub(crate) fn advance(
        &mut self,
        mut data_times: Vec<u64>,
        (data, updates): (AntichainRef<'_, u64>, AntichainRef<'_, u64>),
        mut step: impl FnMut(Step<'_>, &Arc<FeatureMap>) -> ControlFlow<()>,
    ) {
        data_times.extend(self.pending.keys().copied());
        data_times.sort_unstable();
        data_times.dedup();
        for time in data_times {
            let earlier_complete =
                time == 0 || !(data.less_equal(&(time - 1)) || updates.less_equal(&(time - 1)));
            if !earlier_complete {
                break;
            }
            let done = !data.less_equal(&time);
            if step(Step::Data { time, done }, &self.map).is_break() {
                break;
            }
            if !done || updates.less_equal(&time) {
                break;
            }
            if let Some(mut epoch_updates) = self.pending.remove(&time) {
                epoch_updates.sort_by_key(|u| u.feature);
                let transition = Arc::make_mut(&mut self.map).apply(&epoch_updates);
                let applied = Step::Applied {
                    updates: &epoch_updates,
                    transition: &transition,
                };
                if step(applied, &self.map).is_break() {
                    break;
                }
            }
        }
    }
}
