//! Online training: predict, learn (FTRL logistic regression or a factorization machine),
//! validate progressively, keep the workers' replicas one model, publish model versions.
//!
//! Every worker learns from its own rows (those it decoded), epoch by epoch, each row after
//! predicting it (progressive validation, per worker and merged in [`TrainerStats`]). With more
//! than one worker, the replicas are kept one model by an all-reduce at the end of every epoch
//! (see [`millrace_models::allreduce`]): each worker sends the sparse changes of the epoch to
//! the owners of the coordinates (`SumDeltas`, a reduce-scatter), the owners' sums come back to
//! every worker (an all-gather) through a feedback edge one epoch later, and each worker applies
//! them before it learns the next epoch's rows. So the epoch is the synchronization period `K`:
//! the job's `epoch_ms`, or the benchmark's `--sync-rows`. The result depends only on which
//! worker learns which rows in which epoch, not on thread timing; with one worker it is the
//! single learner's result, bit for bit.
//!
//! Worker 0 publishes the model to the registry every `every_events` events or `every` of time,
//! and once more when its input is complete, always between rounds, when its replica is the
//! model every worker holds.
//!
//! [`TrainRows`] learns from the weighted rows of a FeatureMap (of any feature spec, hashed
//! ones included), carrying the weights across its versions.

use crate::checkpoint::{self, Part};
use crate::durations::Durations;
use crate::featurize::{stash_for, Replica, Step};
use crate::part_spec::{Checkpoints, PartSpec};
use millrace_models::allreduce::{sum_deltas, DeltaChunk, Replicated};
use millrace_models::fmap::FeatureUpdate;
use millrace_models::{
    AucAccumulator, CsrBatch, FeatureMap, FeatureSpec, Learner, LearnerParams, LogLoss,
    ModelArtifact, Position, Registry, WindowedAuc,
};
use serde::{Deserialize, Serialize};
use std::collections::{btree_map, BTreeMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, ConnectLoop, Feedback};
use timely::dataflow::StreamVec;
use timely::progress::frontier::AntichainRef;

/// When the trainer publishes a model version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishPolicy {
    /// Publish after this many newly learned events.
    pub every_events: u64,
    /// Publish when this much time has passed since the last version and something was learned.
    pub every: Duration,
}

/// Sends a published version somewhere besides the registry directory; an error is counted in
/// [`TrainerStats::publish_errors`] and logged, and the next version is sent as usual.
#[derive(Clone)]
pub struct Mirror(pub Arc<MirrorFn>);

/// What a [`Mirror`] calls with each published version.
pub type MirrorFn = dyn Fn(&ModelArtifact) -> Result<(), crate::BoxError> + Send + Sync;

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

/// Everything the trainer needs.
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// The model's name in the registry and in serving.
    pub model: String,
    /// How events become rows.
    pub features: FeatureSpec,
    /// The learner and its hyper-parameters.
    pub learner: LearnerParams,
    /// When to publish.
    pub publish: PublishPolicy,
    /// Where to publish.
    pub registry: Registry,
    /// Where else each version goes once the registry has it (a registry topic).
    pub mirror: Option<Mirror>,
    /// Emit every event's prediction (see [`Prediction`]); without, the predictions stream
    /// stays empty.
    pub predictions: bool,
}

/// The prediction the model made for an event just before it learned from it (progressive
/// validation): what the job would have served for it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Where the event was read, when it came from a source.
    pub source: Option<Position>,
    /// The predicted probability of a click.
    pub prediction: f32,
    /// The event's label.
    pub label: bool,
}

/// Live figures of the trainer, read by the progress line, the metrics endpoint and tests.
#[derive(Debug, Default)]
pub struct TrainerStats {
    /// Events learned from, by all workers.
    pub learned: AtomicU64,
    /// The newest published model version (0 before the first).
    pub model_version: AtomicU64,
    /// Publications that failed (each is logged; the next try comes after the publish interval).
    pub publish_errors: AtomicU64,
    /// Events the newest published version had learned from.
    pub published_events: AtomicU64,
    /// Rows not learned because they were made with another FeatureMap version than the
    /// trainer's (see [`TrainRows::train_rows`]); 0 unless something upstream is wrong.
    pub skipped_rows: AtomicU64,
    /// Synchronization rounds applied, counted on worker 0.
    pub rounds: AtomicU64,
    /// Coordinates whose changes were summed in those rounds, counted on worker 0.
    pub synced_coordinates: AtomicU64,
    /// How long each publication took (the registry, and the registry topic when mirrored).
    pub publish_seconds: Durations,
    /// Each worker's progressive validation, as of its last report.
    quality: Mutex<BTreeMap<usize, Quality>>,
}

/// Progressive-validation figures of one worker, or of the model (all workers merged).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QualitySummary {
    /// Predictions scored.
    pub events: u64,
    /// AUC over all of them.
    pub auc: Option<f64>,
    /// AUC over the last [`PROGRESSIVE_WINDOW`] of them (per worker; merged, the workers'
    /// windows together).
    pub window_auc: Option<f64>,
    /// Mean log-loss over all of them.
    pub logloss: Option<f64>,
}

impl TrainerStats {
    /// Fresh statistics: nothing learned, no quality figures yet.
    pub fn new() -> Self {
        TrainerStats::default()
    }

    /// Progressive validation of the model: every worker's predictions together.
    pub fn summary(&self) -> QualitySummary {
        let workers = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        let mut merged = workers.values();
        let Some(first) = merged.next() else {
            return QualitySummary::default();
        };
        let (mut auc, mut window, mut logloss) = (
            first.auc.clone(),
            first.window.counts().clone(),
            first.logloss,
        );
        for q in merged {
            auc.merge(&q.auc);
            window.merge(q.window.counts());
            logloss.merge(&q.logloss);
        }
        QualitySummary {
            events: logloss.count(),
            auc: auc.auc(),
            window_auc: window.auc(),
            logloss: logloss.mean(),
        }
    }

    /// Progressive validation of each worker's own predictions, by worker index.
    pub fn workers(&self) -> Vec<(usize, QualitySummary)> {
        let workers = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .iter()
            .map(|(&index, q)| (index, q.summary()))
            .collect()
    }

    /// Progressive-validation AUC over everything learned so far.
    pub fn auc(&self) -> Option<f64> {
        self.summary().auc
    }

    /// Progressive-validation AUC over the last [`PROGRESSIVE_WINDOW`] events of each worker:
    /// follows a drifting stream where the cumulative AUC lags.
    pub fn window_auc(&self) -> Option<f64> {
        self.summary().window_auc
    }

    /// Progressive-validation log-loss over everything learned so far.
    pub fn logloss(&self) -> Option<f64> {
        self.summary().logloss
    }

    fn record(&self, worker: usize, quality: &Quality) {
        let mut workers = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        workers.insert(worker, quality.clone());
    }
}

/// Events the windowed progressive AUC covers, per worker.
pub const PROGRESSIVE_WINDOW: usize = 100_000;

/// Progressive validation: every prediction made before learning, scored cumulatively and over
/// the last [`PROGRESSIVE_WINDOW`] events.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Quality {
    auc: AucAccumulator,
    window: WindowedAuc,
    logloss: LogLoss,
}

impl Quality {
    fn new() -> Self {
        Quality {
            auc: AucAccumulator::default(),
            window: WindowedAuc::new(PROGRESSIVE_WINDOW),
            logloss: LogLoss::default(),
        }
    }

    fn add(&mut self, prediction: f32, label: bool) {
        self.auc.add(prediction, label);
        self.window.add(prediction, label);
        self.logloss.add(prediction, label);
    }

    fn summary(&self) -> QualitySummary {
        QualitySummary {
            events: self.logloss.count(),
            auc: self.auc.auc(),
            window_auc: self.window.auc(),
            logloss: self.logloss.mean(),
        }
    }
}

/// The longest a trainer sleeps before it looks at the publish interval again.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// How often a worker reports its progressive validation to [`TrainerStats`].
const QUALITY_REFRESH: Duration = Duration::from_millis(250);

/// Trains a learner on FeatureMap rows, following the FeatureMap's versions.
pub trait TrainRows<'scope> {
    /// Learns every row on the worker that made it, each after predicting it (progressive
    /// validation, in `stats`), keeping the workers' replicas one model as the module
    /// describes. Every worker keeps its own replica of the FeatureMap, starting from `map`
    /// and applying `updates` (as [`crate::Featurize::featurize`] returns them) in epoch
    /// order, and carries the learner across each new version ([`Learner::carry`]) after the
    /// epoch's round, so that every row meets the weights of the version it was made with.
    ///
    /// The model is published by `config.publish` (see the module); each version carries the
    /// FeatureMap version its weights belong to. `config.features` must be the spec `map` was
    /// compiled from. `on_epoch` is called on worker 0 after each epoch's rows and
    /// round with the epoch, the learner and that version, and once more at the end with
    /// `None`. Returns every row's [`Prediction`] in its epoch when `config.predictions` is
    /// set.
    ///
    /// A batch whose version is not the replica's cannot be learned consistently; it is
    /// skipped, counted in `stats.skipped_rows` and logged (it would mean a bug upstream).
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Parser, Schema};
    /// use millrace_models::{EventBatch, FeatureMap, FeatureSpec, FtrlParams, LearnerParams, Registry};
    /// use millrace_operators::{
    ///     Checkpoints, Featurize, FeaturizeStats, PublishPolicy, TrainRows, TrainerConfig, TrainerStats,
    /// };
    /// use std::{sync::{atomic::Ordering, Arc}, time::Duration};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let spec = FeatureMapSpec::criteo_default();
    /// let layout = spec.compile(&Schema::criteo()).unwrap();
    /// let mut parser = Parser::new(&layout);
    /// let mut batch = EventBatch::new(39);
    /// for i in 0..100 {
    ///     let line = format!("{}\t{i}{}", i % 2, "\t".repeat(38));
    ///     parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
    /// }
    /// let dir = std::env::temp_dir().join(format!("millrace-doc-rows-{}", std::process::id()));
    /// let registry = Registry::open(&dir).unwrap();
    /// let config = TrainerConfig {
    ///     model: "ctr".into(),
    ///     features: FeatureSpec::Map(spec),
    ///     learner: LearnerParams::Ftrl(FtrlParams::default()),
    ///     publish: PublishPolicy { every_events: 1_000_000, every: Duration::from_secs(3600) },
    ///     registry: registry.clone(),
    ///     mirror: None,
    ///     predictions: false,
    /// };
    /// let stats = Arc::new(TrainerStats::new());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let map = FeatureMap::new(layout);
    ///     let none = Checkpoints::none();
    ///     let (rows, updates) = vec![batch].to_stream(scope).featurize(
    ///         map.clone(),
    ///         Arc::new(FeaturizeStats::default()),
    ///         &none,
    ///         |_, _| {},
    ///     );
    ///     rows.train_rows(updates, map, config, shared, &none, |_, _, _| {});
    /// });
    /// assert_eq!(stats.learned.load(Ordering::Relaxed), 100);
    /// // The final version: the learner carried to the FeatureMap fitted on all the input.
    /// let model = registry.load_latest("ctr").unwrap();
    /// assert_eq!(model.meta.trained_events, 100);
    /// assert_eq!(model.feature_map.unwrap().version, 1);
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    fn train_rows<F>(
        self,
        updates: StreamVec<'scope, u64, FeatureUpdate>,
        map: FeatureMap,
        config: TrainerConfig,
        stats: Arc<TrainerStats>,
        checkpoints: &Checkpoints,
        on_epoch: F,
    ) -> StreamVec<'scope, u64, Prediction>
    where
        F: FnMut(Option<u64>, &Learner, &Arc<FeatureMap>) + 'static;
}

impl<'scope> TrainRows<'scope> for StreamVec<'scope, u64, CsrBatch> {
    fn train_rows<F>(
        self,
        updates: StreamVec<'scope, u64, FeatureUpdate>,
        map: FeatureMap,
        config: TrainerConfig,
        stats: Arc<TrainerStats>,
        checkpoints: &Checkpoints,
        mut on_epoch: F,
    ) -> StreamVec<'scope, u64, Prediction>
    where
        F: FnMut(Option<u64>, &Learner, &Arc<FeatureMap>) + 'static,
    {
        train(
            self,
            (updates, map),
            config,
            (stats, checkpoints),
            move |epoch, learner, map| {
                if let Some(map) = map {
                    on_epoch(epoch, learner, map);
                }
            },
        )
    }
}

/// Learns the batch's rows in order, telling `seen` each row's indices, prediction, label and
/// source position.
fn learn_batch(
    batch: &CsrBatch,
    learner: &mut Learner,
    mut seen: impl FnMut(&[u32], f32, bool, Option<Position>),
) {
    for i in 0..batch.len() {
        let (indices, values) = batch.row(i);
        let label = batch.labels[i];
        let p = learner.learn_weighted(indices, values, label);
        seen(indices, p, label, batch.sources.get(i).copied());
    }
}

/// What a worker sends a coordinate owner after an epoch: the owner, the sender, the deltas.
type Deltas = (usize, usize, DeltaChunk);

/// One worker's deltas as their owner keeps them: the sender, the deltas.
type Contribution = (usize, DeltaChunk);

/// The trainer dataflow of [`TrainRows`]: `Train` on every worker, `SumDeltas` on the
/// coordinate owners, and the loop that brings the sums back.
fn train<'scope, F>(
    rows: StreamVec<'scope, u64, CsrBatch>,
    (updates, map): (StreamVec<'scope, u64, FeatureUpdate>, FeatureMap),
    config: TrainerConfig,
    (stats, checkpoints): (Arc<TrainerStats>, &Checkpoints),
    on_epoch: F,
) -> StreamVec<'scope, u64, Prediction>
where
    F: FnMut(Option<u64>, &Learner, Option<&Arc<FeatureMap>>) + 'static,
{
    let scope = rows.scope();
    // The sums of epoch t's round come back at t + 1.
    let (rounds_handle, rounds) = scope.feedback::<Vec<DeltaChunk>>(1);
    let mut builder = OperatorBuilder::new("Train".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut rows_in = builder.new_input(rows, Pipeline);
    let mut updates_in = builder.new_input(updates, Pipeline);
    let mut rounds_in = builder.new_input(rounds, Pipeline);
    let (deltas_out, deltas) = builder.new_output::<Vec<Deltas>>();
    let mut deltas_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(deltas_out);
    let (predictions_out, predictions) = builder.new_output::<Vec<Prediction>>();
    let mut predictions_out =
        OutputBuilder::<_, CapacityContainerBuilder<_>>::from(predictions_out);
    let part = checkpoints.part(scope.index(), &TRAIN);
    let mut worker = Worker::new(
        (scope.index(), scope.peers()),
        map,
        config,
        (stats, part),
        on_epoch,
    );
    // Per epoch with rows, a capability for its predictions (when they are wanted).
    let mut prediction_caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
    builder.build(move |_capabilities| {
        move |frontiers| {
            let mut deltas_out = deltas_out.activate();
            let mut predictions_out = predictions_out.activate();
            rows_in.for_each(|cap, data| {
                if worker.predicted.is_some() {
                    if let (Some(&time), false) = (cap.least(), data.is_empty()) {
                        if let (btree_map::Entry::Vacant(entry), Some(held)) =
                            (prediction_caps.entry(time), cap.retain_least(1))
                        {
                            entry.insert(held);
                        }
                    }
                }
                if let Some(stash) = stash_for(&mut worker.rows, &cap, |_| Vec::new()) {
                    stash.append(data);
                }
            });
            updates_in.for_each(|cap, data| {
                if let Some(replica) = worker.replica.as_mut() {
                    replica.stash(&cap, data);
                }
            });
            rounds_in.for_each(|cap, data| {
                if let Some(&time) = cap.least() {
                    worker.rounds.entry(time).or_default().append(data);
                }
            });
            let frontiers = Frontiers {
                rows: frontiers[0].frontier(),
                updates: frontiers[1].frontier(),
                rounds: frontiers[2].frontier(),
            };
            let mut send = |cap: &Capability<u64>, deltas: Vec<Deltas>| {
                deltas_out.session(cap).give_iterator(deltas.into_iter());
            };
            let wait = worker.advance(&frontiers, &mut send);
            if let Some(predicted) = worker.predicted.as_mut() {
                for (time, predictions) in std::mem::take(predicted) {
                    if let Some(cap) = prediction_caps.get(&time) {
                        predictions_out
                            .session(cap)
                            .give_iterator(predictions.into_iter());
                    }
                }
                prediction_caps.retain(|time, _| worker.rows.contains_key(time));
            }
            if let Some(wait) = wait {
                // Wake up again when a time-based publication falls due without new input.
                activator.activate_after(wait);
            }
        }
    });
    deltas
        .unary_frontier::<CapacityContainerBuilder<Vec<DeltaChunk>>, _, _, _>(
            Exchange::new(|(owner, _, _): &Deltas| *owner as u64),
            "SumDeltas",
            |_capability, _info| {
                let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Contribution>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        if let Some(stash) = stash_for(&mut pending, &cap, |_| Vec::new()) {
                            stash.extend(data.drain(..).map(|(_, from, chunk)| (from, chunk)));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (cap, parts) = entry.remove();
                        output.session(&cap).give(sum_deltas(parts));
                    }
                }
            },
        )
        .broadcast()
        .connect_loop(rounds_handle);
    predictions
}

/// The frontiers of `Train`'s three inputs.
struct Frontiers<'a> {
    rows: AntichainRef<'a, u64>,
    updates: AntichainRef<'a, u64>,
    rounds: AntichainRef<'a, u64>,
}

/// One worker's trainer: its replica of the learner (and of the FeatureMap), the rows and
/// rounds not yet applied, its progressive validation, and on worker 0 the publisher.
struct Worker<F> {
    index: usize,
    peers: usize,
    learner: Learner,
    /// The all-reduce bookkeeping, with more than one worker.
    sync: Option<Replicated>,
    replica: Option<Replica>,
    rows: BTreeMap<u64, (Capability<u64>, Vec<CsrBatch>)>,
    /// Predictions made and not yet emitted, by epoch, when they are wanted.
    predicted: Option<BTreeMap<u64, Vec<Prediction>>>,
    /// Received round sums by their time (the round's epoch + 1).
    rounds: BTreeMap<u64, Vec<DeltaChunk>>,
    /// The epoch whose deltas were sent and whose round is not applied yet.
    waiting: Option<u64>,
    /// Rows learned here since the last round.
    round_events: u64,
    /// Rows the model has learned: every worker's, up to the last applied round.
    learned: u64,
    quality: Quality,
    reported_at: Instant,
    publisher: Option<Publisher>,
    stats: Arc<TrainerStats>,
    on_epoch: F,
    finished: bool,
    /// The checkpoint part, and the last epoch the state is the result of.
    part: Option<Part>,
    lo: u64,
    /// Rows this worker learned since the job began (its share of `stats.learned`).
    learned_here: u64,
    /// The replica's version while a walk has the replica out (for snapshots taken in it).
    walking: Option<Arc<FeatureMap>>,
}

/// The trainer's checkpoint part: the learner, its metrics and its publishing state.
pub(crate) const TRAIN: PartSpec<TrainState> = PartSpec::new("train");

/// What a trainer checkpoints besides the learner's state (which follows as raw floats).
#[derive(Serialize, Deserialize)]
pub(crate) struct TrainState {
    learned: u64,
    learned_here: u64,
    quality: Quality,
    map: Option<FeatureMap>,
}

impl<F> Worker<F>
where
    F: FnMut(Option<u64>, &Learner, Option<&Arc<FeatureMap>>),
{
    fn new(
        (index, peers): (usize, usize),
        map: FeatureMap,
        config: TrainerConfig,
        (stats, mut part): (Arc<TrainerStats>, Option<Part>),
        on_epoch: F,
    ) -> Self {
        let dimension = map.dimension();
        let mut learner = Learner::new(&config.learner, dimension);
        let lo = part
            .as_ref()
            .map_or(0, |p| p.resume_epoch().saturating_sub(1));
        let mut map = Some(map);
        let (mut learned, mut learned_here, mut quality) = (0, 0, Quality::new());
        if let Some((_, _, bytes)) = part.as_mut().and_then(Part::take_restored) {
            match TRAIN.decode_with_floats(&bytes) {
                Ok((state, floats)) if floats.len() == dimension * learner.state_width() => {
                    let width = learner.state_width();
                    for (i, coordinate) in floats.chunks_exact(width).enumerate() {
                        learner.write_state(i as u32, coordinate);
                    }
                    (learned, learned_here, quality) =
                        (state.learned, state.learned_here, state.quality);
                    if state.map.is_some() {
                        map = state.map;
                    }
                    stats.learned.fetch_add(learned_here, Ordering::Relaxed);
                    tracing::debug!(
                        worker = index,
                        learned,
                        version = map.as_ref().map(|m| m.version),
                        "trainer restored"
                    );
                }
                Ok(_) => tracing::error!("the trainer's checkpoint part has another dimension than the learner; starting from scratch"),
                Err(error) => tracing::error!(%error, "the trainer's checkpoint part is unreadable; starting from scratch"),
            }
        }
        let predicted = config.predictions.then(BTreeMap::new);
        let mut publisher = (index == 0).then(|| Publisher::new(config, stats.clone()));
        if let Some(publisher) = publisher.as_mut() {
            publisher.restore(learned);
        }
        Worker {
            index,
            peers,
            sync: (peers > 1).then(|| Replicated::new(&learner)),
            learner,
            replica: map.map(Replica::new),
            rows: BTreeMap::new(),
            predicted,
            rounds: BTreeMap::new(),
            waiting: None,
            round_events: 0,
            learned,
            quality,
            reported_at: Instant::now(),
            publisher,
            stats,
            on_epoch,
            finished: false,
            part,
            lo,
            learned_here,
            walking: None,
        }
    }

    /// The checkpoint state: everything but the learner's floats, which follow.
    fn snapshot(&self) -> Vec<u8> {
        let width = self.learner.state_width();
        let mut floats = vec![0f32; self.learner.dimension() * width];
        for (i, coordinate) in floats.chunks_exact_mut(width).enumerate() {
            self.learner.read_state(i as u32, coordinate);
        }
        let state = TrainState {
            learned: self.learned,
            learned_here: self.learned_here,
            quality: self.quality.clone(),
            map: self
                .replica
                .as_ref()
                .map(Replica::map)
                .or(self.walking.as_ref())
                .map(|m| m.as_ref().clone()),
        };
        TRAIN.encode_with_floats(&state, &floats)
    }

    /// Offers the state after every epoch up to `hi` (from the last one it has learned from).
    fn covers(&mut self, hi: u64) {
        if let Some(mut part) = self.part.take() {
            part.covers(self.lo, hi, || self.snapshot());
            self.part = Some(part);
        }
    }

    /// Offers the state after the walk, when it is between epochs: nothing learned since the
    /// last round, and every input settled up to the epoch before the first waiting one.
    fn settle(&mut self, frontiers: &Frontiers<'_>) {
        if self.part.is_none() || !self.between_rounds() {
            return;
        }
        // A round's sums come at its epoch + 1.
        let rounds_settled = match frontiers.rounds.iter().min() {
            None => Some(checkpoint::FINAL),
            Some(&t) => t.checked_sub(2),
        };
        let settled = checkpoint::settled_through(&[frontiers.rows, frontiers.updates])
            .zip(rounds_settled)
            .map(|(a, b)| a.min(b));
        let waiting = self
            .rows
            .keys()
            .copied()
            .chain(self.rounds.keys().map(|t| t.saturating_sub(1)))
            .chain(self.replica.iter().flat_map(|r| r.pending_times().copied()))
            .min();
        if let Some(hi) = settled.and_then(|s| checkpoint::before_waiting(s, waiting)) {
            self.covers(hi);
        }
    }

    /// Learns, synchronizes and publishes as far as the frontiers allow; returns how long until
    /// a time-based publication falls due, when one waits.
    fn advance(
        &mut self,
        frontiers: &Frontiers<'_>,
        send: &mut impl FnMut(&Capability<u64>, Vec<Deltas>),
    ) -> Option<Duration> {
        let mut times: Vec<u64> = self.rows.keys().copied().collect();
        times.extend(self.waiting);
        match self.replica.take() {
            Some(mut replica) => {
                replica.advance(times, (frontiers.rows, frontiers.updates), |step, map| {
                    self.step(step, Some(map), frontiers, send)
                });
                self.walking = None;
                self.replica = Some(replica);
            }
            None => {
                times.sort_unstable();
                times.dedup();
                for time in times {
                    if time > 0 && frontiers.rows.less_equal(&(time - 1)) {
                        break;
                    }
                    let done = !frontiers.rows.less_equal(&time);
                    let data = Step::Data { time, done };
                    if self.step(data, None, frontiers, send).is_break() || !done {
                        break;
                    }
                }
                // Rounds of epochs this worker had no rows in: applied once complete, before
                // the next epoch it may learn, so that the model (and its publication) does not
                // wait for this worker's next rows.
                if self.between_rounds() {
                    let next = self
                        .rows
                        .keys()
                        .chain(frontiers.rows.iter())
                        .min()
                        .copied()
                        .unwrap_or(u64::MAX);
                    self.apply_rounds(next, frontiers.rounds);
                }
            }
        }
        if self.finished {
            return None;
        }
        let inputs_done = frontiers.rows.is_empty() && frontiers.updates.is_empty();
        if inputs_done && self.waiting.is_none() {
            // Rounds of epochs this worker had nothing in.
            self.apply_rounds(u64::MAX, frontiers.rounds);
        }
        let complete = inputs_done && frontiers.rounds.is_empty() && self.waiting.is_none();
        let map = self.replica.as_ref().map(|r| r.map().clone());
        if self.between_rounds() {
            self.maybe_publish(map.as_ref(), complete);
        }
        self.settle(frontiers);
        if complete {
            self.finished = true;
            self.stats.record(self.index, &self.quality);
            if self.index == 0 {
                (self.on_epoch)(None, &self.learner, map.as_ref());
            }
            return None;
        }
        self.publisher.as_ref()?.wait(self.learned)
    }

    /// One step of the walk over epochs; breaks where a round must come first.
    fn step(
        &mut self,
        step: Step<'_>,
        map: Option<&Arc<FeatureMap>>,
        frontiers: &Frontiers<'_>,
        send: &mut impl FnMut(&Capability<u64>, Vec<Deltas>),
    ) -> ControlFlow<()> {
        self.walking = map.cloned();
        let (time, done) = match step {
            Step::Data { time, done } => (time, done),
            Step::Applied { transition, .. } => {
                match self.sync.as_mut() {
                    Some(sync) => sync.carry(&mut self.learner, transition),
                    None => self.learner.carry(transition),
                }
                return ControlFlow::Continue(());
            }
        };
        if self.waiting == Some(time) {
            return self.finish_epoch(time, map, frontiers.rounds);
        }
        // Every earlier round first: this epoch's rows meet the model of all earlier ones.
        if !self.apply_rounds(time, frontiers.rounds) {
            return ControlFlow::Break(());
        }
        if time > self.lo {
            // The state is the one after every earlier epoch: a checkpoint may want it.
            if time > 0 {
                self.covers(time - 1);
            }
            self.lo = time;
        }
        self.learn(time, map);
        if !done {
            return ControlFlow::Continue(());
        }
        let cap = self.rows.remove(&time).map(|(cap, _)| cap);
        if let Some(sync) = self.sync.as_mut() {
            if let Some(cap) = cap {
                let chunks = sync.take_deltas(&self.learner, self.peers, self.round_events);
                let deltas = chunks
                    .into_iter()
                    .enumerate()
                    .filter(|(owner, chunk)| *owner == 0 || !chunk.is_empty())
                    .map(|(owner, chunk)| (owner, self.index, chunk))
                    .collect();
                send(&cap, deltas);
            }
            self.round_events = 0;
            self.waiting = Some(time);
        }
        self.finish_epoch(time, map, frontiers.rounds)
    }

    /// Learns the rows of `time` received so far.
    fn learn(&mut self, time: u64, map: Option<&Arc<FeatureMap>>) {
        let Some((_, batches)) = self.rows.get_mut(&time) else {
            return;
        };
        // Counted once per call: the counter is shared by all workers.
        let mut learned_here = 0;
        // This call's predictions, when they are wanted; kept with the epoch's afterwards.
        let mut predicted = self.predicted.is_some().then(Vec::new);
        for batch in std::mem::take(batches) {
            if let Some(map) = map.filter(|map| map.version != batch.version) {
                {
                    self.stats
                        .skipped_rows
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::error!(
                        batch_version = batch.version,
                        trainer_version = map.version,
                        rows = batch.len(),
                        "rows of another FeatureMap version than the trainer's; skipped"
                    );
                    continue;
                }
            }
            let (quality, sync) = (&mut self.quality, &mut self.sync);
            learn_batch(&batch, &mut self.learner, |indices, p, label, source| {
                quality.add(p, label);
                if let Some(sync) = sync.as_mut() {
                    sync.touch(indices);
                }
                if let Some(predicted) = predicted.as_mut() {
                    predicted.push(Prediction {
                        source,
                        prediction: p,
                        label,
                    });
                }
            });
            let n = batch.len() as u64;
            learned_here += n;
            if self.sync.is_some() {
                self.round_events += n;
            } else {
                // One worker: its learner is the model after every batch.
                self.learned += n;
                if self
                    .publisher
                    .as_ref()
                    .is_some_and(|p| p.due_by_count(self.learned))
                {
                    self.publish(map);
                }
            }
        }
        self.stats
            .learned
            .fetch_add(learned_here, Ordering::Relaxed);
        self.learned_here += learned_here;
        if let (Some(all), Some(made)) = (self.predicted.as_mut(), predicted) {
            all.entry(time).or_default().extend(made);
        }
    }

    /// Ends epoch `time` once its round (if any) is applied; breaks until then.
    fn finish_epoch(
        &mut self,
        time: u64,
        map: Option<&Arc<FeatureMap>>,
        rounds: AntichainRef<'_, u64>,
    ) -> ControlFlow<()> {
        if self.waiting == Some(time) {
            if !self.apply_rounds(time + 1, rounds) {
                return ControlFlow::Break(());
            }
            self.waiting = None;
            self.maybe_publish(map, false);
        }
        if self.reported_at.elapsed() >= QUALITY_REFRESH {
            self.stats.record(self.index, &self.quality);
            self.reported_at = Instant::now();
        }
        if self.index == 0 {
            (self.on_epoch)(Some(time), &self.learner, map);
        }
        ControlFlow::Continue(())
    }

    /// Applies the complete rounds that arrived by `through`, in order; whether every round by
    /// then is complete (always, with one worker).
    fn apply_rounds(&mut self, through: u64, frontier: AntichainRef<'_, u64>) -> bool {
        if self.sync.is_none() {
            return true;
        }
        while let Some(entry) = self.rounds.first_entry() {
            let time = *entry.key();
            if time > through || frontier.less_equal(&time) {
                break;
            }
            let sums = entry.remove();
            // The round of epoch `time - 1`: between epochs, the state before it is the one
            // after every earlier epoch.
            let epoch = time - 1;
            if epoch > self.lo {
                if self.between_rounds() && epoch > 0 {
                    self.covers(epoch - 1);
                }
                self.lo = epoch;
            }
            let Some(sync) = self.sync.as_mut() else {
                return true;
            };
            let mut coordinates = 0;
            for sum in sums {
                sync.apply(&mut self.learner, &sum);
                self.learned += sum.events;
                coordinates += sum.len() as u64;
            }
            if self.index == 0 {
                self.stats.rounds.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .synced_coordinates
                    .fetch_add(coordinates, Ordering::Relaxed);
            }
        }
        !frontier.less_equal(&through)
    }

    /// Whether this replica is the model every worker holds: nothing learned since the last
    /// round, and no round awaited.
    fn between_rounds(&self) -> bool {
        self.waiting.is_none() && self.sync.as_ref().is_none_or(|s| s.touched() == 0)
    }

    fn maybe_publish(&mut self, map: Option<&Arc<FeatureMap>>, complete: bool) {
        if self
            .publisher
            .as_ref()
            .is_some_and(|p| p.due(self.learned, complete))
        {
            self.publish(map);
        }
    }

    fn publish(&mut self, map: Option<&Arc<FeatureMap>>) {
        self.stats.record(self.index, &self.quality);
        if let Some(publisher) = self.publisher.as_mut() {
            publisher.publish(&self.learner, map, self.learned);
        }
    }
}

/// Publishes model versions by the job's policy, for both trainers.
struct Publisher {
    config: TrainerConfig,
    stats: Arc<TrainerStats>,
    published_at_events: u64,
    /// When the last publication was tried, successful or not.
    published_at: Instant,
    /// Whether the last try failed: retries then wait for the publish interval.
    failing: bool,
}

impl Publisher {
    fn new(config: TrainerConfig, stats: Arc<TrainerStats>) -> Self {
        Publisher {
            config,
            stats,
            published_at_events: 0,
            published_at: Instant::now(),
            failing: false,
        }
    }

    /// Takes up the registry's newest version after a restart with `learned` events in the
    /// model: the next publication is due by count from that version's events, so a model
    /// ahead of the registry (the process died before publishing it) is published again.
    fn restore(&mut self, learned: u64) {
        match self.config.registry.latest_meta(&self.config.model) {
            Ok(Some(meta)) => {
                self.published_at_events = meta.trained_events.min(learned);
                self.stats
                    .model_version
                    .store(meta.version, Ordering::Relaxed);
                self.stats
                    .published_events
                    .store(self.published_at_events, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "the registry's newest version cannot be read"),
        }
    }

    /// Whether `learned` events make a publication due by count (and no failed try is waiting
    /// out its interval).
    fn due_by_count(&self, learned: u64) -> bool {
        learned - self.published_at_events >= self.config.publish.every_events
            && (!self.failing || self.published_at.elapsed() >= self.config.publish.every)
    }

    /// Whether a publication is due: something new was learned and the count, the interval or
    /// the end of the input says so.
    fn due(&self, learned: u64, input_complete: bool) -> bool {
        learned > self.published_at_events
            && (self.due_by_count(learned)
                || self.published_at.elapsed() >= self.config.publish.every
                || input_complete)
    }

    /// How long until a time-based publication falls due, when something is unpublished (at
    /// most [`LONGEST_SLEEP`]: waking early is harmless, a timer past the clock's range is not).
    fn wait(&self, learned: u64) -> Option<Duration> {
        (learned > self.published_at_events).then(|| {
            self.config
                .publish
                .every
                .saturating_sub(self.published_at.elapsed())
                .min(LONGEST_SLEEP)
        })
    }

    /// Publishes `learner` (with the FeatureMap version its rows came from)
    /// as trained on `learned` events with the progressive figures in `stats`.
    fn publish(&mut self, learner: &Learner, feature_map: Option<&Arc<FeatureMap>>, learned: u64) {
        let mut artifact =
            ModelArtifact::of_learner(learner, &self.config.model, self.config.features.clone());
        artifact.feature_map = feature_map.cloned();
        artifact.meta.trained_events = learned;
        let quality = self.stats.summary();
        artifact.meta.progressive_auc = quality.auc;
        artifact.meta.progressive_logloss = quality.logloss;
        let started = Instant::now();
        match self.config.registry.publish(&mut artifact) {
            Ok(version) => {
                if let Some(Mirror(mirror)) = &self.config.mirror {
                    if let Err(error) = mirror(&artifact) {
                        self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(model = %self.config.model, version, %error, "sending a model version to the registry topic failed");
                    }
                }
                self.stats.publish_seconds.observe(started.elapsed());
                self.stats.model_version.store(version, Ordering::Relaxed);
                self.stats
                    .published_events
                    .store(learned, Ordering::Relaxed);
                self.published_at_events = learned;
                self.failing = false;
                tracing::debug!(model = %self.config.model, version, events = learned, "published");
            }
            Err(error) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                self.failing = true;
                tracing::error!(model = %self.config.model, %error, "publishing a model version failed; retrying after the publish interval");
            }
        }
        self.published_at = Instant::now();
    }
}
