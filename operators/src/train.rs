//! Online training: featurize, predict, learn (FTRL logistic regression or a factorization
//! machine), validate progressively, publish model versions.
//!
//! Events are featurized on the worker that decoded them; the sparse rows are then exchanged to
//! one trainer (worker 0), which predicts each row before it learns from it (progressive
//! validation) and publishes the model to the registry every `every_events` events or `every`
//! of time, and once more when its input is complete. Synchronizing several trainers by
//! all-reduce is the next step; one trainer keeps this first version exact and simple.
//!
//! [`TrainOnline`] learns from hashed features of decoded events; [`TrainRows`] learns from the
//! weighted rows of a fitted FeatureMap, carrying the weights across its versions.

use crate::featurize::{Replica, Step};
use millrace_models::fmap::FeatureUpdate;
use millrace_models::{
    AucAccumulator, CriteoEvent, CsrBatch, FeatureMap, FeatureSpec, Learner, LearnerParams,
    LogLoss, Registry, SparseRow, WindowedAuc,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

/// When the trainer publishes a model version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishPolicy {
    /// Publish after this many newly learned events.
    pub every_events: u64,
    /// Publish when this much time has passed since the last version and something was learned.
    pub every: Duration,
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
}

/// Live figures of the trainer, read by the progress line, the metrics endpoint and tests.
#[derive(Debug, Default)]
pub struct TrainerStats {
    /// Events learned from.
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
    auc_bits: AtomicU64,
    window_auc_bits: AtomicU64,
    logloss_bits: AtomicU64,
}

impl TrainerStats {
    /// Progressive-validation AUC over everything learned so far.
    pub fn auc(&self) -> Option<f64> {
        Some(f64::from_bits(self.auc_bits.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }

    /// Progressive-validation AUC over the last [`PROGRESSIVE_WINDOW`] events: follows a
    /// drifting stream where the cumulative AUC lags.
    pub fn window_auc(&self) -> Option<f64> {
        Some(f64::from_bits(self.window_auc_bits.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }

    /// Progressive-validation log-loss over everything learned so far.
    pub fn logloss(&self) -> Option<f64> {
        Some(f64::from_bits(self.logloss_bits.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }

    fn set_quality(&self, quality: Option<&Quality>) {
        let bits = |v: Option<f64>| v.unwrap_or(f64::NAN).to_bits();
        let (auc, window, logloss) = quality.map_or((None, None, None), |q| {
            (q.auc.auc(), q.window.auc(), q.logloss.mean())
        });
        self.auc_bits.store(bits(auc), Ordering::Relaxed);
        self.window_auc_bits.store(bits(window), Ordering::Relaxed);
        self.logloss_bits.store(bits(logloss), Ordering::Relaxed);
    }

    /// Fresh statistics: nothing learned, no quality figures yet.
    pub fn new() -> Self {
        let stats = TrainerStats::default();
        stats.set_quality(None);
        stats
    }
}

/// Events the windowed progressive AUC covers.
pub const PROGRESSIVE_WINDOW: usize = 100_000;

/// Progressive validation: every prediction made before learning, scored cumulatively and over
/// the last [`PROGRESSIVE_WINDOW`] events.
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
}

/// How often the trainer refreshes the AUC and log-loss in [`TrainerStats`].
const QUALITY_REFRESH: Duration = Duration::from_millis(250);

/// Trains a model online from a stream of events.
pub trait TrainOnline {
    /// Featurizes, learns and publishes as the module describes; `stats` follows progress.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::{synth::CriteoGenerator, FeatureSpec, FtrlParams, LearnerParams, Registry};
    /// use millrace_operators::{PublishPolicy, TrainOnline, TrainerConfig, TrainerStats};
    /// use std::{sync::{atomic::Ordering, Arc}, time::Duration};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let dir = std::env::temp_dir().join(format!("millrace-doc-{}", std::process::id()));
    /// let config = TrainerConfig {
    ///     model: "ctr".into(),
    ///     features: FeatureSpec::Hashed { hash_bits: 16 },
    ///     learner: LearnerParams::Ftrl(FtrlParams::default()),
    ///     publish: PublishPolicy { every_events: 1_000_000, every: Duration::from_secs(3600) },
    ///     registry: Registry::open(&dir).unwrap(),
    /// };
    /// let stats = Arc::new(TrainerStats::new());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     CriteoGenerator::new(1).take(500).to_stream(scope).train_online(config, shared);
    /// });
    /// assert_eq!(stats.learned.load(Ordering::Relaxed), 500);
    /// assert_eq!(stats.model_version.load(Ordering::Relaxed), 1); // the final version
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    fn train_online(self, config: TrainerConfig, stats: Arc<TrainerStats>);
}

impl TrainOnline for StreamVec<'_, u64, CriteoEvent> {
    fn train_online(self, config: TrainerConfig, stats: Arc<TrainerStats>) {
        let scope = self.scope();
        let owner = scope.index() == 0;
        let spec = config.features.clone();
        let rows = self.map(move |event: CriteoEvent| {
            let mut indices = Vec::with_capacity(millrace_models::features::FEATURES_PER_EVENT);
            spec.transform(&event.features, &mut indices);
            SparseRow {
                indices,
                label: event.label,
            }
        });
        let mut trainer = Trainer::new(config, stats);
        let exchange = Exchange::new(|_: &SparseRow| 0);
        rows.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            exchange,
            "TrainOnline",
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                move |(input, frontier), _output| {
                    input.for_each(|_time, data| {
                        for row in data.drain(..) {
                            trainer.learn(&row);
                            if trainer.due_by_count() {
                                trainer.publish();
                            }
                        }
                    });
                    if owner {
                        // Wake up again when a time-based publication falls due without new input.
                        if let Some(wait) = trainer.maybe_publish(frontier.is_empty()) {
                            activator.activate_after(wait);
                        }
                    }
                }
            },
        );
    }
}

/// Trains a learner on FeatureMap rows, following the FeatureMap's versions.
pub trait TrainRows<'scope> {
    /// Learns every row on one trainer (worker 0), each after predicting it (progressive
    /// validation, in `stats`). The trainer keeps its own replica of the FeatureMap, starting
    /// from `map` and applying `updates` (as [`crate::Featurize::featurize`] returns them) in
    /// epoch order, and carries the learner across each new version ([`Learner::carry`]), so
    /// that every row meets the weights of the version it was made with.
    ///
    /// The model is published by `config.publish`: after a batch that completes
    /// `every_events`, when `every` has passed with something unpublished (the trainer wakes
    /// itself for that), and at the end of the input; each version carries the FeatureMap
    /// version its weights belong to. `config.features` must be the `map` spec `map` was
    /// compiled from. `on_epoch` is called after each epoch's rows with the epoch, the learner
    /// and that version, and once more at the end with `None`.
    ///
    /// A batch whose version is not the replica's cannot be learned consistently; it is
    /// skipped, counted in `stats.skipped_rows` and logged (it would mean a bug upstream).
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Parser, Schema};
    /// use millrace_models::{EventBatch, FeatureMap, FeatureSpec, FtrlParams, LearnerParams, Registry};
    /// use millrace_operators::{Featurize, FeaturizeStats, PublishPolicy, TrainRows, TrainerConfig, TrainerStats};
    /// use std::{sync::{atomic::Ordering, Arc}, time::Duration};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let spec = FeatureMapSpec::criteo_default();
    /// let layout = spec.compile(&Schema::criteo()).unwrap();
    /// let mut parser = Parser::new(&layout);
    /// let mut batch = EventBatch::new(39);
    /// for i in 0..100 {
    ///     let line = format!("{}\t{i}{}", i % 2, "\t".repeat(38));
    ///     parser.parse_tsv(line.as_bytes(), 0, &mut batch).unwrap();
    /// }
    /// let dir = std::env::temp_dir().join(format!("millrace-doc-rows-{}", std::process::id()));
    /// let registry = Registry::open(&dir).unwrap();
    /// let config = TrainerConfig {
    ///     model: "ctr".into(),
    ///     features: FeatureSpec::Map(spec),
    ///     learner: LearnerParams::Ftrl(FtrlParams::default()),
    ///     publish: PublishPolicy { every_events: 1_000_000, every: Duration::from_secs(3600) },
    ///     registry: registry.clone(),
    /// };
    /// let stats = Arc::new(TrainerStats::new());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let map = FeatureMap::new(layout);
    ///     let (rows, updates) = vec![batch].to_stream(scope).featurize(
    ///         map.clone(),
    ///         Arc::new(FeaturizeStats::default()),
    ///         |_, _| {},
    ///     );
    ///     rows.train_rows(updates, map, config, shared, |_, _, _| {});
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
        on_epoch: F,
    ) where
        F: FnMut(Option<u64>, &Learner, &Arc<FeatureMap>) + 'static;
}

impl<'scope> TrainRows<'scope> for StreamVec<'scope, u64, CsrBatch> {
    fn train_rows<F>(
        self,
        updates: StreamVec<'scope, u64, FeatureUpdate>,
        map: FeatureMap,
        config: TrainerConfig,
        stats: Arc<TrainerStats>,
        mut on_epoch: F,
    ) where
        F: FnMut(Option<u64>, &Learner, &Arc<FeatureMap>) + 'static,
    {
        let scope = self.scope();
        let owner = scope.index() == 0;
        let mut learner = owner.then(|| Learner::new(&config.learner, map.dimension()));
        let mut publisher = Publisher::new(config, stats.clone());
        let mut replica = Replica::new(map);
        let mut quality = Quality::new();
        let mut learned = 0u64;
        let mut finished = false;
        let mut rows: BTreeMap<u64, Vec<CsrBatch>> = BTreeMap::new();
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            updates,
            Exchange::new(|_: &CsrBatch| 0),
            Pipeline,
            "TrainRows",
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                move |(rows_in, rows_frontier), (updates_in, updates_frontier), _output| {
                    rows_in.for_each(|cap, data| {
                        if let Some(&time) = cap.least() {
                            rows.entry(time).or_default().append(data);
                        }
                    });
                    updates_in.for_each(|cap, data| replica.stash(&cap, data));
                    let Some(learner) = learner.as_mut() else {
                        // Only the trainer follows the versions.
                        replica.clear();
                        return;
                    };
                    let times = rows.keys().copied().collect();
                    let frontiers = (rows_frontier.frontier(), updates_frontier.frontier());
                    replica.advance(times, frontiers, |step, map| match step {
                        Step::Data { time, done } => {
                            let Some(batches) = rows.get_mut(&time) else {
                                return;
                            };
                            for batch in batches.drain(..) {
                                if batch.version != map.version {
                                    stats
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
                                for i in 0..batch.len() {
                                    let (indices, values) = batch.row(i);
                                    let label = batch.labels[i];
                                    let p = learner.learn_weighted(indices, values, label);
                                    quality.add(p, label);
                                }
                                learned += batch.len() as u64;
                                stats
                                    .learned
                                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                                if publisher.due_by_count(learned) {
                                    stats.set_quality(Some(&quality));
                                    publisher.publish(learner, Some(map), learned);
                                }
                            }
                            if done {
                                rows.remove(&time);
                                stats.set_quality(Some(&quality));
                                on_epoch(Some(time), learner, map);
                            }
                        }
                        Step::Applied { transition, .. } => learner.carry(transition),
                    });
                    if finished {
                        return;
                    }
                    // Between batches the learner and the replica always agree, so a version
                    // may be published here whatever the epoch.
                    let complete = rows_frontier.is_empty() && updates_frontier.is_empty();
                    if publisher.due(learned, complete) {
                        stats.set_quality(Some(&quality));
                        publisher.publish(learner, Some(replica.map()), learned);
                    }
                    if complete {
                        finished = true;
                        stats.set_quality(Some(&quality));
                        on_epoch(None, learner, replica.map());
                    } else if let Some(wait) = publisher.wait(learned) {
                        // Wake up again when a time-based publication falls due without input.
                        activator.activate_after(wait);
                    }
                }
            },
        );
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

    /// How long until a time-based publication falls due, when something is unpublished.
    fn wait(&self, learned: u64) -> Option<Duration> {
        (learned > self.published_at_events).then(|| {
            self.config
                .publish
                .every
                .saturating_sub(self.published_at.elapsed())
        })
    }

    /// Publishes `learner` (with the FeatureMap version its rows came from, for a `map` spec)
    /// as trained on `learned` events with the progressive figures in `stats`.
    fn publish(&mut self, learner: &Learner, feature_map: Option<&Arc<FeatureMap>>, learned: u64) {
        let mut artifact = learner.to_artifact(&self.config.model, self.config.features.clone());
        artifact.feature_map = feature_map.cloned();
        artifact.meta.trained_events = learned;
        artifact.meta.progressive_auc = self.stats.auc();
        artifact.meta.progressive_logloss = self.stats.logloss();
        match self.config.registry.publish(&mut artifact) {
            Ok(version) => {
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

struct Trainer {
    publisher: Publisher,
    stats: Arc<TrainerStats>,
    learner: Learner,
    quality: Quality,
    learned: u64,
    quality_at: Instant,
}

impl Trainer {
    fn new(config: TrainerConfig, stats: Arc<TrainerStats>) -> Self {
        let learner = Learner::new(&config.learner, config.features.dimension());
        Trainer {
            publisher: Publisher::new(config, stats.clone()),
            stats,
            learner,
            quality: Quality::new(),
            learned: 0,
            quality_at: Instant::now(),
        }
    }

    fn learn(&mut self, row: &SparseRow) {
        let p = self.learner.learn(&row.indices, row.label);
        self.quality.add(p, row.label);
        self.learned += 1;
        self.stats.learned.fetch_add(1, Ordering::Relaxed);
    }

    fn due_by_count(&self) -> bool {
        self.publisher.due_by_count(self.learned)
    }

    /// Publishes when due; returns how long until a time-based publication falls due when
    /// there is something unpublished.
    fn maybe_publish(&mut self, input_complete: bool) -> Option<Duration> {
        if self.quality_at.elapsed() >= QUALITY_REFRESH || input_complete {
            self.stats.set_quality(Some(&self.quality));
            self.quality_at = Instant::now();
        }
        if self.publisher.due(self.learned, input_complete) {
            self.publish();
            return None;
        }
        self.publisher.wait(self.learned)
    }

    fn publish(&mut self) {
        self.stats.set_quality(Some(&self.quality));
        self.publisher.publish(&self.learner, None, self.learned);
    }
}
