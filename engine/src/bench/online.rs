//! `millrace bench online`: train on the first part of a file with progressive validation,
//! then evaluate on the held-out rest, and report one JSON line.
//!
//! What is trained is a schema, a feature spec and a learner: a job file's (`--job`), or the
//! Criteo preset with hashed features and a learner from the flags. The file is read into
//! memory first (a header line, when the schema declares one, is checked and skipped); the
//! clock covers parsing, fitting, transforming, learning and scoring the holdout.
//!
//! With one worker it runs on one thread, in file order, with no dataflow around the learner:
//! the training lines are cut into epochs of `epoch_rows`, each parsed and transformed (1,024
//! lines at a time) with the FeatureMap version before it, predicted and learned row by row,
//! then fitted into the next version, across which the learner's weights are carried, as the
//! job's `Featurize` and `TrainRows` do. With `--workers N` the training lines are dealt
//! round-robin to N timely workers running the job's `Featurize` and `TrainRows`, whose
//! replicas are synchronized by all-reduce every `--sync-rows` lines (an epoch). The final
//! model scores the holdout with the final FeatureMap version.

use crate::error::{worker_results, Error, Result};
use crate::spec::JobSpec;
use millrace_models::fmap::{BatchFitter, Layout, Parser, TransformCounts};
use millrace_models::{
    exact_auc, CsrBatch, EventBatch, FeatureMap, FeatureSpec, Learner, LearnerParams, LogLoss,
    ModelArtifact, Registry, Schema,
};
use millrace_operators::{
    Checkpoints, Featurize, FeaturizeStats, PublishPolicy, TrainRows, TrainerConfig, TrainerStats,
};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The figures `millrace bench online` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineBench {
    /// Well-formed rows (training plus holdout).
    pub rows: u64,
    /// Malformed lines skipped.
    pub malformed: u64,
    /// Seconds spent decoding, featurizing, learning and scoring.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// Timely workers that trained (1: one thread, no dataflow).
    pub workers: usize,
    /// Training rows per synchronization round, with several workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_rows: Option<usize>,
    /// Progressive-validation AUC over the training rows.
    pub progressive_auc: Option<f64>,
    /// AUC on the held-out rows.
    pub holdout_auc: Option<f64>,
    /// Log-loss on the held-out rows.
    pub holdout_logloss: Option<f64>,
    /// The registry version the trained model was published as, with `--registry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_version: Option<u64>,
    /// With `--q213`: the model's weights (and factors) in q2.13 fixed point, scored on the
    /// same holdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q213: Option<RoundedFigures>,
    /// With `--int8`: the model's weights (and factors) in 8 bits with a scale per group, as
    /// `millrace serve --weights int8` holds them, scored on the same holdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<RoundedFigures>,
}

/// What holding a model's numbers in fewer bits saves and costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundedFigures {
    /// Bytes of the weights and factors as `f32`.
    pub f32_bytes: u64,
    /// Bytes of the same numbers rounded (with their scales, for int8).
    pub bytes: u64,
    /// Numbers clipped to the encoding's range (q2.13's `[-4, 4)`; int8 clips none).
    pub clipped: u64,
    /// Holdout AUC of the rounded model.
    pub holdout_auc: Option<f64>,
    /// Holdout log-loss of the rounded model.
    pub holdout_logloss: Option<f64>,
}

/// What `bench online` trains: events of a schema, a feature spec over them, a learner.
#[derive(Clone, Debug)]
pub struct OnlineModel {
    /// The events' schema.
    pub schema: Schema,
    /// The features.
    pub features: FeatureSpec,
    /// The learner and its parameters.
    pub learner: LearnerParams,
}

impl OnlineModel {
    /// A job file's schema, features and learner.
    ///
    /// # Errors
    ///
    /// The schema's problems (none for a validated job file).
    pub fn of_job(job: &JobSpec) -> Result<Self> {
        Ok(OnlineModel {
            schema: job.event_schema()?,
            features: job.features.clone(),
            learner: job.learner,
        })
    }

    /// Criteo events with features hashed into `2^hash_bits` slots.
    pub fn hashed_criteo(hash_bits: u32, learner: LearnerParams) -> Self {
        OnlineModel {
            schema: Schema::criteo(),
            features: FeatureSpec::Hashed { hash_bits },
            learner,
        }
    }
}

/// How to run it.
#[derive(Clone, Debug)]
pub struct OnlineBenchConfig {
    /// Fraction of lines, at the end of the file, held out for evaluation.
    pub holdout: f64,
    /// With one worker: training lines per epoch (one FeatureMap version each).
    pub epoch_rows: usize,
    /// Timely workers (1: one thread, in file order).
    pub workers: usize,
    /// Training lines per synchronization round (epoch) with several workers.
    pub sync_rows: usize,
    /// Also score the holdout with the model rounded to q2.13 fixed point.
    pub q213: bool,
    /// Also score the holdout with the model rounded to 8 bits ([`millrace_models::int8`]).
    pub int8: bool,
    /// With a registry and one worker: also publish a version every this many training rows,
    /// as the job does every epoch (for serving benchmarks of hot swaps).
    pub publish_every: Option<usize>,
}

/// A trained model, the FeatureMap version it belongs to, and what training saw.
struct Trained {
    learner: Learner,
    map: Arc<FeatureMap>,
    rows: u64,
    malformed: u64,
    progressive_auc: Option<f64>,
    published_version: Option<u64>,
}

/// Runs the benchmark of `model` on the lines of `input`; publishes the model to `registry`
/// under `name` when given.
///
/// # Errors
///
/// Every problem with the configuration at once (the holdout outside (0, 1), no workers, empty
/// epochs, the learner's or the features' problems); a file that cannot be read or whose
/// header does not match; a failed publication.
pub fn online(
    input: &Path,
    model: &OnlineModel,
    config: &OnlineBenchConfig,
    publish: Option<(&Registry, &str)>,
) -> Result<OnlineBench> {
    let layout = check(model, config, publish.is_some())?;
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    let lines = model.schema.records(&text).map_err(|why| Error::Config {
        problems: vec![format!("[schema] {}: {why}", input.display())],
    })?;
    let split = ((lines.len() as f64) * (1.0 - config.holdout)).round() as usize;
    let (train, test) = lines.split_at(split);

    let started = Instant::now();
    let trained = if config.workers == 1 {
        train_in_order(train, layout, model, config, publish)?
    } else {
        train_dealt(train, layout, model, config, publish)?
    };
    let mut parser = Parser::new(&trained.map.layout);
    let mut chunks = Chunks::new(&trained.map.layout);
    let mut malformed = trained.malformed;
    let (mut preds, mut labels, mut loss) = (Vec::new(), Vec::new(), LogLoss::default());
    let mut kept = (config.q213 || config.int8).then(Vec::new);
    for lines in test.chunks(CHUNK_ROWS) {
        let rows = chunks.rows(
            &mut parser,
            &trained.map,
            lines,
            &model.schema,
            &mut malformed,
        );
        for i in 0..rows.len() {
            let (indices, values) = rows.row(i);
            let p = trained.learner.predict_weighted(indices, values);
            loss.add(p, rows.labels[i]);
            preds.push(p);
            labels.push(rows.labels[i]);
        }
        if let Some(kept) = kept.as_mut() {
            kept.push(rows.clone());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows = trained.rows + preds.len() as u64;
    // Untimed: the same holdout scored by the model rounded to fewer bits.
    let artifact = kept
        .as_ref()
        .map(|_| ModelArtifact::of_learner(&trained.learner, "bench", model.features.clone()));
    let numbers = |m: &ModelArtifact| m.tensors.iter().map(|t| t.values.len() as u64).sum::<u64>();
    let f32_bytes = artifact.as_ref().map_or(0, |m| numbers(m) * 4);
    let rounded = |kept: &[CsrBatch], rounded: &ModelArtifact, bytes: u64, clipped: usize| {
        let (mut loss, mut preds) = (LogLoss::default(), Vec::new());
        for rows in kept {
            for i in 0..rows.len() {
                let (indices, values) = rows.row(i);
                let p = rounded.predict_row(indices, values);
                loss.add(p, rows.labels[i]);
                preds.push(p);
            }
        }
        RoundedFigures {
            f32_bytes,
            bytes,
            clipped: clipped as u64,
            holdout_auc: exact_auc(&preds, &labels),
            holdout_logloss: loss.mean(),
        }
    };
    let q213 = artifact
        .as_ref()
        .zip(kept.as_deref())
        .filter(|_| config.q213)
        .map(|(artifact, kept)| {
            let (fixed, clipped) = artifact.to_q213(1);
            rounded(kept, &fixed, numbers(artifact) * 2, clipped)
        });
    let int8 = artifact
        .as_ref()
        .zip(kept.as_deref())
        .filter(|_| config.int8)
        .map(|(artifact, kept)| {
            let groups: usize = artifact
                .tensors
                .iter()
                .map(|t| t.values.len().div_ceil(millrace_models::int8::GROUP))
                .sum();
            let bytes = numbers(artifact) + groups as u64 * 4;
            rounded(kept, &artifact.to_int8(), bytes, 0)
        });
    Ok(OnlineBench {
        rows,
        malformed,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        workers: config.workers,
        sync_rows: (config.workers > 1).then_some(config.sync_rows),
        progressive_auc: trained.progressive_auc,
        holdout_auc: exact_auc(&preds, &labels),
        holdout_logloss: loss.mean(),
        published_version: trained.published_version,
        q213,
        int8,
    })
}

/// The model's layout, or every problem with the model and the configuration.
fn check(model: &OnlineModel, config: &OnlineBenchConfig, publishing: bool) -> Result<Layout> {
    let mut problems = Vec::new();
    if !(config.holdout > 0.0 && config.holdout < 1.0) {
        problems.push(format!(
            "`--holdout` must be in (0, 1) (got {})",
            config.holdout
        ));
    }
    if config.epoch_rows == 0 {
        problems.push("`--epoch-rows` must be at least 1".to_owned());
    }
    if config.workers == 0 {
        problems.push("`--workers` must be at least 1".to_owned());
    }
    if config.sync_rows == 0 {
        problems.push("`--sync-rows` must be at least 1".to_owned());
    }
    match config.publish_every {
        Some(0) => problems.push("`--publish-every` must be at least 1".to_owned()),
        Some(_) if config.workers != 1 || !publishing => {
            problems.push("`--publish-every` needs `--registry` and one worker".to_owned())
        }
        _ => {}
    }
    problems.extend(model.learner.problems());
    let layout = model.features.compile(&model.schema);
    if let Err(features) = &layout {
        problems.extend(features.iter().map(|p| format!("[features] {p}")));
    }
    match layout {
        Ok(layout) if problems.is_empty() => Ok(layout),
        _ => Err(Error::Config { problems }),
    }
}

/// Lines parsed and transformed at a time: a chunk's events and rows stay in the cache, as a
/// message's do in the dataflow.
const CHUNK_ROWS: usize = 1024;

/// The buffers a chunk of lines is parsed and transformed in, reused chunk after chunk.
struct Chunks {
    events: EventBatch,
    rows: CsrBatch,
    counts: TransformCounts,
}

impl Chunks {
    fn new(layout: &Layout) -> Self {
        Chunks {
            events: EventBatch::with_capacity(layout.schema.fields.len(), CHUNK_ROWS),
            rows: CsrBatch::default(),
            counts: TransformCounts::default(),
        }
    }

    /// Parses `lines` into `self.events` (a malformed one is counted and skipped).
    fn parse(&mut self, parser: &mut Parser, lines: &[&[u8]], schema: &Schema) -> u64 {
        self.events.clear();
        let mut malformed = 0;
        for line in lines {
            let time = schema.event_time(line).unwrap_or(0);
            if parser.parse_record(line, time, &mut self.events).is_err() {
                malformed += 1;
            }
        }
        malformed
    }

    /// Parses `lines` and transforms them with `map`.
    fn rows(
        &mut self,
        parser: &mut Parser,
        map: &FeatureMap,
        lines: &[&[u8]],
        schema: &Schema,
        malformed: &mut u64,
    ) -> &CsrBatch {
        *malformed += self.parse(parser, lines, schema);
        map.transform_into(&self.events, &mut self.counts, &mut self.rows);
        &self.rows
    }
}

/// Publishes the learner's model, with the FeatureMap version it belongs to and its
/// progressive figures so far; returns the version.
fn publish_learner(
    learner: &Learner,
    (map, features): (&FeatureMap, &FeatureSpec),
    (registry, name): (&Registry, &str),
    preds: &[f32],
    labels: &[bool],
) -> Result<u64> {
    let mut artifact = ModelArtifact::of_learner(learner, name, features.clone());
    artifact.feature_map = Some(Arc::new(map.clone()));
    artifact.meta.trained_events = labels.len() as u64;
    artifact.meta.progressive_auc = exact_auc(preds, labels);
    Ok(registry.publish(&mut artifact)?)
}

/// One thread learns the training lines in file order; the model is published when asked.
fn train_in_order(
    lines: &[&[u8]],
    layout: Layout,
    model: &OnlineModel,
    config: &OnlineBenchConfig,
    publish: Option<(&Registry, &str)>,
) -> Result<Trained> {
    let mut parser = Parser::new(&layout);
    let mut chunks = Chunks::new(&layout);
    let mut learner = Learner::new(&model.learner, layout.dimension);
    let mut fitter = BatchFitter::new(layout);
    let mut malformed = 0;
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    for epoch in lines.chunks(config.epoch_rows) {
        for lines in epoch.chunks(CHUNK_ROWS) {
            let rows = chunks.rows(
                &mut parser,
                fitter.map(),
                lines,
                &model.schema,
                &mut malformed,
            );
            for i in 0..rows.len() {
                let (indices, values) = rows.row(i);
                preds.push(learner.learn_weighted(indices, values, rows.labels[i]));
                labels.push(rows.labels[i]);
                let due = config
                    .publish_every
                    .is_some_and(|every| labels.len() % every == 0);
                if let (true, Some(to)) = (due, publish) {
                    let map = (fitter.map(), &model.features);
                    publish_learner(&learner, map, to, &preds, &labels)?;
                }
            }
            fitter.observe(&chunks.events);
        }
        if let Some(transition) = fitter.finish_epoch() {
            learner.carry(&transition);
        }
    }
    let published_version = publish
        .map(|to| {
            publish_learner(
                &learner,
                (fitter.map(), &model.features),
                to,
                &preds,
                &labels,
            )
        })
        .transpose()?;
    Ok(Trained {
        learner,
        map: Arc::new(fitter.into_map()),
        rows: labels.len() as u64,
        malformed,
        progressive_auc: exact_auc(&preds, &labels),
        published_version,
    })
}

/// `config.workers` timely workers learn the training lines dealt round-robin, `sync_rows`
/// lines per epoch, through the job's `Featurize` and `TrainRows`; the trainer publishes the
/// final model (to a scratch registry unless one is given).
fn train_dealt(
    lines: &[&[u8]],
    layout: Layout,
    model: &OnlineModel,
    config: &OnlineBenchConfig,
    publish: Option<(&Registry, &str)>,
) -> Result<Trained> {
    let scratch = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let (registry, name) = match publish {
        Some((registry, name)) => (registry.clone(), name.to_owned()),
        None => (Registry::open(scratch.path())?, "bench".to_owned()),
    };
    let trainer = TrainerConfig {
        model: name,
        features: model.features.clone(),
        learner: model.learner,
        publish: PublishPolicy {
            every_events: u64::MAX,
            every: Duration::MAX,
        },
        registry,
        mirror: None,
        predictions: false,
    };
    let stats = Arc::new(TrainerStats::new());
    let malformed = Arc::new(AtomicU64::new(0));
    let last = Arc::new(Mutex::new(None));
    let owned: Arc<Vec<Vec<u8>>> = Arc::new(lines.iter().map(|l| l.to_vec()).collect());
    let (sync_rows, schema) = (config.sync_rows, model.schema.clone());
    let (st, bad, out) = (stats.clone(), malformed.clone(), last.clone());
    let guards = timely::execute(timely::Config::process(config.workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = timely::dataflow::InputHandle::<
            u64,
            timely::container::CapacityContainerBuilder<Vec<EventBatch>>,
        >::new();
        let (trainer, st, out) = (trainer.clone(), st.clone(), out.clone());
        let map = FeatureMap::new(layout.clone());
        let mut parser = Parser::new(&layout);
        worker.dataflow::<u64, _, _>(|scope| {
            use timely::dataflow::operators::Input;
            let featurize = Arc::new(FeaturizeStats::default());
            let none = Checkpoints::none();
            let (rows, updates) =
                scope
                    .input_from(&mut input)
                    .featurize(map.clone(), featurize, &none, |_, _| {});
            rows.train_rows(
                updates,
                map,
                trainer,
                st,
                &none,
                move |epoch, learner, map| {
                    if epoch.is_none() {
                        *out.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((learner.clone(), map.clone()));
                    }
                },
            );
        });
        // Each epoch's share of the lines, as batches of at most `CHUNK_ROWS` events.
        let mut chunks = Chunks::new(&layout);
        let mine: Vec<(usize, &Vec<u8>)> = owned
            .iter()
            .enumerate()
            .skip(index)
            .step_by(peers)
            .collect();
        for epoch in mine.chunk_by(|(a, _), (b, _)| a / sync_rows == b / sync_rows) {
            input.advance_to((epoch[0].0 / sync_rows) as u64);
            for lines in epoch.chunks(CHUNK_ROWS) {
                let lines: Vec<&[u8]> = lines.iter().map(|(_, l)| l.as_slice()).collect();
                bad.fetch_add(
                    chunks.parse(&mut parser, &lines, &schema),
                    Ordering::Relaxed,
                );
                input.send(chunks.events.clone());
            }
        }
    })
    .map_err(Error::Start)?;
    let joined = guards.join().into_iter().map(|result| result.map(Ok));
    worker_results::<()>(joined.collect(), 0)?;
    let (learner, map) = last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or(Error::EndedEarly("worker 0 reported no final model"))?;
    let published = stats.model_version.load(Ordering::Relaxed);
    Ok(Trained {
        learner,
        map,
        rows: stats.learned.load(Ordering::Relaxed),
        malformed: malformed.load(Ordering::Relaxed),
        progressive_auc: stats.auc(),
        published_version: (publish.is_some() && published > 0).then_some(published),
    })
}
