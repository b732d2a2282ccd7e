//! `millrace bench online`: train on the first part of a file with progressive validation,
//! then evaluate on the held-out rest, and report one JSON line.
//!
//! The file is read into memory first; the timed part is decoding, featurizing, predicting and
//! learning (and scoring the holdout). With one worker it runs on one thread, in file order, with
//! no dataflow around the learner. With `--workers N` the training lines are dealt round-robin to
//! N timely workers running the job's trainer ([`TrainOnline`]), whose replicas are synchronized
//! by all-reduce every `--sync-rows` lines (an epoch); the final model scores the holdout.

pub mod bare;
pub mod job_file;

use crate::error::{Error, Result};
use millrace_models::{
    exact_auc, CriteoEvent, FeatureSpec, FtrlParams, Learner, LearnerParams, LogLoss,
    ModelArtifact, Registry,
};
use millrace_operators::{PublishPolicy, TrainOnline, TrainerConfig, TrainerStats};
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

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct OnlineBenchConfig {
    /// Fraction of rows, at the end of the file, held out for evaluation.
    pub holdout: f64,
    /// The features.
    pub features: FeatureSpec,
    /// The learner and its parameters.
    pub learner: LearnerParams,
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

/// A trained model and what training saw.
struct Trained {
    learner: Learner,
    rows: u64,
    malformed: u64,
    progressive_auc: Option<f64>,
    published_version: Option<u64>,
}

/// Runs the benchmark on the Criteo lines of `input`; publishes the model to `registry` under
/// `model` when given.
///
/// # Errors
///
/// When the file cannot be read, the holdout is not in (0, 1), `workers` or `sync_rows` is 0,
/// or publication fails.
pub fn online(
    input: &Path,
    config: &OnlineBenchConfig,
    publish: Option<(&Registry, &str)>,
) -> Result<OnlineBench> {
    let mut problems = Vec::new();
    if !(config.holdout > 0.0 && config.holdout < 1.0) {
        problems.push(format!(
            "`--holdout` must be in (0, 1) (got {})",
            config.holdout
        ));
    }
    if config.workers == 0 {
        problems.push("`--workers` must be at least 1".to_owned());
    }
    if config.sync_rows == 0 {
        problems.push("`--sync-rows` must be at least 1".to_owned());
    }
    match config.publish_every {
        Some(0) => problems.push("`--publish-every` must be at least 1".to_owned()),
        Some(_) if config.workers != 1 || publish.is_none() => {
            problems.push("`--publish-every` needs `--registry` and one worker".to_owned())
        }
        _ => {}
    }
    problems.extend(config.learner.problems());
    if !problems.is_empty() {
        return Err(Error::Config { problems });
    }
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let split = ((lines.len() as f64) * (1.0 - config.holdout)).round() as usize;
    let (train, test) = lines.split_at(split);

    let started = Instant::now();
    let trained = if config.workers == 1 {
        train_in_order(train, config, publish)?
    } else {
        train_dealt(train, config, publish)?
    };
    let learner = trained.learner;
    let (mut rows, mut malformed) = (trained.rows, trained.malformed);
    let mut row = Vec::new();
    let (mut test_preds, mut test_labels) = (Vec::new(), Vec::new());
    let mut test_loss = LogLoss::default();
    let mut test_rows = Vec::new();
    for line in test {
        let Ok(event) = CriteoEvent::decode_tsv(line) else {
            malformed += 1;
            continue;
        };
        rows += 1;
        row.clear();
        config.features.transform(&event.features, &mut row);
        let p = learner.predict(&row);
        test_loss.add(p, event.label);
        test_preds.push(p);
        test_labels.push(event.label);
        if config.q213 || config.int8 {
            test_rows.push(row.clone());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Untimed: the same holdout scored by the model rounded to fewer bits.
    let model =
        (config.q213 || config.int8).then(|| learner.to_artifact("bench", config.features.clone()));
    let numbers = model
        .as_ref()
        .map_or(0, |m| (m.weights.len() + m.factors.len()) as u64);
    let rounded = |rounded: &ModelArtifact, bytes: u64, clipped: usize| {
        let mut loss = LogLoss::default();
        let mut ones = Vec::new();
        let preds: Vec<f32> = test_rows
            .iter()
            .zip(&test_labels)
            .map(|(row, &label)| {
                ones.resize(row.len(), 1.0);
                let p = rounded.predict_row(row, &ones);
                loss.add(p, label);
                p
            })
            .collect();
        RoundedFigures {
            f32_bytes: numbers * 4,
            bytes,
            clipped: clipped as u64,
            holdout_auc: exact_auc(&preds, &test_labels),
            holdout_logloss: loss.mean(),
        }
    };
    let q213 = model.as_ref().filter(|_| config.q213).map(|model| {
        let (fixed, clipped) = model.to_q213(1);
        rounded(&fixed, numbers * 2, clipped)
    });
    let int8 = model.as_ref().filter(|_| config.int8).map(|model| {
        let groups = model.weights.len().div_ceil(millrace_models::int8::GROUP)
            + model.factors.len().div_ceil(millrace_models::int8::GROUP);
        rounded(&model.to_int8(), numbers + groups as u64 * 4, 0)
    });
    Ok(OnlineBench {
        rows,
        malformed,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        workers: config.workers,
        sync_rows: (config.workers > 1).then_some(config.sync_rows),
        progressive_auc: trained.progressive_auc,
        holdout_auc: exact_auc(&test_preds, &test_labels),
        holdout_logloss: test_loss.mean(),
        published_version: trained.published_version,
        q213,
        int8,
    })
}

/// Publishes the learner's model with its progressive figures so far; returns the version.
fn publish_learner(
    learner: &Learner,
    config: &OnlineBenchConfig,
    (registry, model): (&Registry, &str),
    preds: &[f32],
    labels: &[bool],
) -> Result<u64> {
    let mut artifact = learner.to_artifact(model, config.features.clone());
    artifact.meta.trained_events = labels.len() as u64;
    artifact.meta.progressive_auc = exact_auc(preds, labels);
    Ok(registry.publish(&mut artifact)?)
}

/// One thread learns the training lines in file order; the model is published when asked.
fn train_in_order(
    lines: &[&[u8]],
    config: &OnlineBenchConfig,
    publish: Option<(&Registry, &str)>,
) -> Result<Trained> {
    let mut learner = Learner::new(
        &config.learner,
        config
            .features
            .dimension(&millrace_models::Schema::criteo()),
    );
    let mut row = Vec::new();
    let (mut malformed, mut rows) = (0u64, 0u64);
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    for line in lines {
        let Ok(event) = CriteoEvent::decode_tsv(line) else {
            malformed += 1;
            continue;
        };
        rows += 1;
        row.clear();
        config.features.transform(&event.features, &mut row);
        preds.push(learner.learn(&row, event.label));
        labels.push(event.label);
        if let (Some(every), Some(to)) = (config.publish_every, publish) {
            if labels.len() % every == 0 {
                publish_learner(&learner, config, to, &preds, &labels)?;
            }
        }
    }
    let progressive_auc = exact_auc(&preds, &labels);
    let published_version = publish
        .map(|to| publish_learner(&learner, config, to, &preds, &labels))
        .transpose()?;
    Ok(Trained {
        learner,
        rows,
        malformed,
        progressive_auc,
        published_version,
    })
}

/// `config.workers` timely workers learn the training lines dealt round-robin, `sync_rows`
/// lines per epoch; the trainer publishes the final model (to a scratch registry unless one
/// is given).
fn train_dealt(
    lines: &[&[u8]],
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
        features: config.features.clone(),
        learner: config.learner,
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
    let model = Arc::new(Mutex::new(None));
    let owned: Arc<Vec<Vec<u8>>> = Arc::new(lines.iter().map(|l| l.to_vec()).collect());
    let sync_rows = config.sync_rows;
    let (st, bad, out) = (stats.clone(), malformed.clone(), model.clone());
    let guards = timely::execute(timely::Config::process(config.workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = timely::dataflow::InputHandle::<
            u64,
            timely::container::CapacityContainerBuilder<Vec<CriteoEvent>>,
        >::new();
        let (trainer, st, out) = (trainer.clone(), st.clone(), out.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            use timely::dataflow::operators::Input;
            scope
                .input_from(&mut input)
                .train_online(trainer, st, move |epoch, learner| {
                    if epoch.is_none() {
                        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(learner.clone());
                    }
                });
        });
        for (i, line) in owned.iter().enumerate().skip(index).step_by(peers) {
            match CriteoEvent::decode_tsv(line) {
                Ok(event) => {
                    input.advance_to((i / sync_rows) as u64);
                    input.send(event);
                }
                Err(_) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .map_err(Error::Dataflow)?;
    for result in guards.join() {
        result.map_err(Error::Dataflow)?;
    }
    let learner = model
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| Error::Dataflow("worker 0 reported no final model".to_owned()))?;
    let published = stats.model_version.load(Ordering::Relaxed);
    Ok(Trained {
        learner,
        rows: stats.learned.load(Ordering::Relaxed),
        malformed: malformed.load(Ordering::Relaxed),
        progressive_auc: stats.auc(),
        published_version: (publish.is_some() && published > 0).then_some(published),
    })
}

/// The figures `millrace bench job` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobBench {
    /// Events produced and learned.
    pub rows: u64,
    /// `hashed` or `map`.
    pub features: &'static str,
    /// Timely workers.
    pub workers: usize,
    /// Seconds to produce the events to the broker (before the job starts).
    pub produce_seconds: f64,
    /// Seconds from the job's start until every event was learned.
    pub seconds: f64,
    /// `rows / seconds`: broker → source → decode → features → learner.
    pub events_per_sec: f64,
    /// Progressive-validation AUC at the end.
    pub progressive_auc: Option<f64>,
    /// With `--checkpoint-ms`: checkpoints written while the events were learned.
    pub checkpoints: Option<u64>,
    /// With `--checkpoint-ms`: bytes of the last checkpoint.
    pub checkpoint_bytes: Option<u64>,
    /// With `--checkpoint-ms`: seconds the last checkpoint's write took.
    pub checkpoint_seconds: Option<f64>,
}

/// Produces `rows` generated events to a fresh topic on `bootstrap_servers`, then runs the job
/// with `features` on it and stops the clock when every event was learned; with `checkpoint`
/// (interval in ms, state directory) the job checkpoints into RocksDB as it goes.
///
/// # Errors
///
/// When the broker cannot be reached or the job fails.
pub fn job(
    bootstrap_servers: &str,
    rows: u64,
    workers: usize,
    features: FeatureSpec,
    registry: &Path,
    checkpoint: Option<(u64, &Path)>,
) -> Result<JobBench> {
    use crate::spec::{CheckpointSpec, JobSpec, LearnerSpec, ProgressSpec, PublishSpec};
    use millrace_connectors::kafka::{create_topics, KafkaSourceConfig, LineProducer};
    use millrace_models::synth::CriteoGenerator;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let topic = format!("bench-{}-{}", std::process::id(), rows);
    let dead_letter_topic = format!("{topic}-dead-letters");
    let partitions = 4;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Dataflow(e.to_string()))?;
    runtime.block_on(create_topics(
        bootstrap_servers,
        &[&topic, &dead_letter_topic],
        partitions,
    ))?;
    let lines: Vec<String> = CriteoGenerator::new(1)
        .take(rows as usize)
        .map(|e| e.to_tsv())
        .collect();
    let started = Instant::now();
    let mut producer = LineProducer::new(bootstrap_servers, &topic, partitions)?;
    for line in &lines {
        producer.send(line.as_bytes())?;
    }
    producer.flush(Duration::from_secs(120))?;
    let produce_seconds = started.elapsed().as_secs_f64();

    let spec = JobSpec::builder("bench")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic,
            group_id: format!("bench-{}", std::process::id()),
            dead_letter_topic,
            partitions,
            idle_ms: 200,
            stop_after_records: None,
            event_time_field: None,
        })
        .features(features.clone())
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry.to_owned(),
            every_events: 1_000_000,
            every_seconds: 3600,
            registry_topic: None,
        })
        .progress(ProgressSpec {
            epoch_ms: 200,
            interval_ms: 0,
        });
    let spec = match checkpoint {
        Some((interval_ms, state_dir)) => spec.checkpoint(CheckpointSpec {
            state_dir: state_dir.to_owned(),
            interval_ms,
            keep: 3,
        }),
        None => spec,
    }
    .build()?;
    let started = Instant::now();
    let running = crate::Job::start(spec, crate::RunOptions::local(workers))?;
    let learned = &running.stats().trainer.learned;
    while learned.load(Ordering::Relaxed) < rows {
        if running.is_finished() {
            // The job ended early: its error says why.
            running.wait()?;
            return Err(Error::Dataflow(
                "the job ended before it learned every event".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    let figures = running.stats().checkpoints.get().map(|c| c.figures());
    running.stop();
    let report = running.wait()?;
    Ok(JobBench {
        rows,
        features: match features {
            FeatureSpec::Hashed { .. } => "hashed",
            FeatureSpec::Map(_) => "map",
        },
        workers,
        produce_seconds,
        seconds,
        events_per_sec: rows as f64 / seconds,
        progressive_auc: report.progressive_auc,
        checkpoints: figures.map(|f| f.written),
        checkpoint_bytes: figures.map(|f| f.last_bytes),
        checkpoint_seconds: figures.map(|f| f.last_seconds),
    })
}

/// The figures `millrace bench ingest` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestBench {
    /// Events read.
    pub rows: u64,
    /// Bytes of their payloads, on average.
    pub mean_event_bytes: f64,
    /// Timely workers.
    pub workers: usize,
    /// Seconds to produce the events (before the source starts).
    pub produce_seconds: f64,
    /// Seconds from the start until the final checkpoint was written.
    pub seconds: f64,
    /// `rows / seconds`.
    pub events_per_sec: f64,
    /// Epochs of event time the events spanned.
    pub epochs: u64,
    /// Checkpoints written (one per epoch the frontier passed, and the final one).
    pub checkpoints: u64,
    /// Bytes of the last checkpoint.
    pub checkpoint_bytes: u64,
    /// Seconds the last checkpoint's write batch took.
    pub checkpoint_seconds: f64,
}

/// Produces `rows` generated events to a fresh topic, 0.1 ms of event time apart, then reads
/// them with the job's source on `workers` workers into epochs of `epoch_ms`, checkpointing
/// every epoch into a RocksDB store in `state_dir`; the clock stops at the final checkpoint.
///
/// # Errors
///
/// When the broker cannot be reached, the store cannot be opened or a worker fails.
pub fn ingest(
    bootstrap_servers: &str,
    rows: u64,
    workers: usize,
    epoch_ms: u64,
    state_dir: &Path,
) -> Result<IngestBench> {
    use crate::checkpoint::CheckpointStore;
    use millrace_connectors::kafka::{create_topics, KafkaReader, KafkaSourceConfig, LineProducer};
    use millrace_models::synth::CriteoGenerator;
    use millrace_operators::checkpoint::{self, Choice, Collector};
    use millrace_operators::{ingest_partitions, EventTime, SourceStats, Stop};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;
    use timely::dataflow::operators::Inspect;

    let topic = format!("ingest-{}-{}", std::process::id(), rows);
    let partitions = 4;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Dataflow(e.to_string()))?;
    runtime.block_on(create_topics(bootstrap_servers, &[&topic], partitions))?;
    let started = Instant::now();
    let mut producer = LineProducer::new(bootstrap_servers, &topic, partitions)?;
    let mut bytes = 0u64;
    let first_ms = 1_700_000_000_000i64;
    for (i, event) in CriteoGenerator::new(1).take(rows as usize).enumerate() {
        let line = event.to_tsv();
        bytes += line.len() as u64;
        producer.send_at(line.as_bytes(), Some(first_ms + i as i64 / 10))?;
    }
    producer.flush(Duration::from_secs(300))?;
    let produce_seconds = started.elapsed().as_secs_f64();

    let config = KafkaSourceConfig {
        bootstrap_servers: bootstrap_servers.to_owned(),
        topic,
        group_id: format!("ingest-{}", std::process::id()),
        dead_letter_topic: "unused".into(),
        partitions,
        // The last epochs are released once every partition has been idle this long: part of
        // the measured time.
        idle_ms: 100,
        stop_after_records: Some(rows),
        event_time_field: None,
    };
    let store = CheckpointStore::open(state_dir, 3)?;
    let collector = Collector::new(
        (0..workers).collect(),
        &["source"],
        Choice::Interval(Duration::ZERO),
        Box::new(store),
        None,
    );
    let stats = Arc::new(SourceStats::new(partitions as usize));
    let time = EventTime {
        epoch_ms,
        idle: Duration::from_millis(config.idle_ms),
        hold_bytes: millrace_operators::HOLD_BYTES,
    };
    let started = Instant::now();
    let shared = (collector.clone(), stats.clone());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let reader = KafkaReader::assign(&config, &config.bootstrap_servers, index, peers, 4)
            .map_err(|e| e.to_string())?;
        let (collector, stats) = shared.clone();
        let _installed = collector.install();
        let done = stats.clone();
        worker.dataflow::<u64, _, _>(move |scope| {
            let part = checkpoint::part(index, "source");
            let stop = move || (done.records.load(Ordering::Relaxed) >= rows).then_some(Stop::End);
            let source = crate::job::KafkaIngest::new(reader, Arc::default());
            ingest_partitions(scope, "KafkaSource", source, time, part, stats, stop)
                .inspect(|_| {});
        });
        Ok::<_, String>(())
    })
    .map_err(Error::Dataflow)?;
    for result in guards.join() {
        result.map_err(Error::Dataflow)?.map_err(Error::Dataflow)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let figures = collector.figures();
    let read = stats.records.load(Ordering::Relaxed);
    Ok(IngestBench {
        rows: read,
        mean_event_bytes: bytes as f64 / rows.max(1) as f64,
        workers,
        produce_seconds,
        seconds,
        events_per_sec: read as f64 / seconds,
        epochs: (rows / 10).div_ceil(epoch_ms.max(1)),
        checkpoints: figures.written,
        checkpoint_bytes: figures.last_bytes,
        checkpoint_seconds: figures.last_seconds,
    })
}

/// The figures `millrace bench featurize` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeaturizeBench {
    /// Events parsed, fitted and transformed.
    pub rows: u64,
    /// Seconds of the whole dataflow: parse, fit (with the merge of every epoch) and transform.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// Timely workers.
    pub workers: usize,
    /// Values holding a vocabulary id in the final FeatureMap, over all categorical fields.
    pub vocab_size: u64,
    /// Seconds of the same dataflow without the transform: parse and fit only.
    pub fit_seconds: f64,
    /// Rows per second of the transform alone with the final FeatureMap, on `workers` threads,
    /// over events parsed beforehand.
    pub transform_rows_per_sec: f64,
    /// The final FeatureMap version (one per epoch).
    pub version: u64,
    /// Lines that were not events (bad label or field count).
    pub malformed: u64,
}

/// Lines of events handed to a worker at once; one [`millrace_models::EventBatch`] each.
const FEATURIZE_CHUNK: usize = 4096;

/// The lines of chunk `c`.
fn chunk_lines<'a>(
    text: &'a [u8],
    spans: &'a [std::ops::Range<usize>],
    c: usize,
) -> impl Iterator<Item = &'a [u8]> {
    let end = ((c + 1) * FEATURIZE_CHUNK).min(spans.len());
    spans[c * FEATURIZE_CHUNK..end]
        .iter()
        .map(move |span| &text[span.clone()])
}

/// Fits and transforms every record of `input` with `layout` (its schema and FeatureMap spec)
/// on `workers` timely workers, the file cut into `epochs` epochs (a FeatureMap version each).
///
/// The file is read into memory first (its header line left out when the schema declares
/// one). Lines are dealt to workers in chunks of 4096, each worker parsing its own; the clock
/// runs from the dataflow's start until every row is out.
///
/// # Errors
///
/// When the file cannot be read, `workers` or `epochs` is 0, or a worker fails.
pub fn featurize(
    input: &Path,
    layout: millrace_models::fmap::Layout,
    workers: usize,
    epochs: u64,
) -> Result<FeaturizeBench> {
    use millrace_models::fmap::Parser;
    use millrace_models::{EventBatch, FeatureMap};
    use millrace_operators::{Featurize, FeaturizeStats, FitFeatureMap};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let mut problems = Vec::new();
    if workers == 0 {
        problems.push("`--workers` must be at least 1".to_owned());
    }
    if epochs == 0 {
        problems.push("`--epochs` must be at least 1".to_owned());
    }
    if !problems.is_empty() {
        return Err(Error::Config { problems });
    }
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    // Each record's place in the text (the header line checked and left out).
    let spans = layout
        .schema
        .record_spans(&text)
        .map_err(|why| Error::Config {
            problems: vec![format!("[schema] {}: {why}", input.display())],
        })?;
    let (text, spans) = (Arc::new(text), Arc::new(spans));

    let chunks = spans.len().div_ceil(FEATURIZE_CHUNK);

    // One run of the dataflow; with `transform`, rows are made and counted too.
    let dataflow = |transform: bool| -> Result<(f64, u64, u64, Option<Arc<FeatureMap>>)> {
        let made = Arc::new(AtomicU64::new(0));
        let malformed = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(None));
        let (text, spans, layout) = (text.clone(), spans.clone(), layout.clone());
        let (made_, malformed_, last_) = (made.clone(), malformed.clone(), last.clone());
        let started = Instant::now();
        timely::execute(timely::Config::process(workers), move |worker| {
            use timely::container::CapacityContainerBuilder;
            use timely::dataflow::operators::{Input, Inspect, Probe};
            use timely::dataflow::{InputHandle, ProbeHandle};
            let (index, peers) = (worker.index(), worker.peers());
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<EventBatch>>>::new();
            let probe = ProbeHandle::new();
            let (made, last) = (made_.clone(), last_.clone());
            worker.dataflow::<u64, _, _>(|scope| {
                let events = scope.input_from(&mut input);
                if transform {
                    let stats = Arc::new(FeaturizeStats::default());
                    let map = FeatureMap::new(layout.clone());
                    let (rows, _updates) = events.featurize(map, stats, move |map, _| {
                        if index == 0 {
                            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(map.clone());
                        }
                    });
                    rows.inspect(move |rows| {
                        made.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    })
                    .probe_with(&probe);
                } else {
                    events.fit_feature_map(layout.clone()).probe_with(&probe);
                }
            });
            let mut parser = Parser::new(&layout);
            for chunk in (index..chunks).step_by(peers) {
                let epoch = chunk as u64 * epochs / chunks as u64;
                if *input.time() < epoch {
                    input.advance_to(epoch);
                }
                let mut batch =
                    EventBatch::with_capacity(layout.schema.fields.len(), FEATURIZE_CHUNK);
                for line in chunk_lines(&text, &spans, chunk) {
                    if parser.parse_record(line, 0, &mut batch).is_err() {
                        malformed_.fetch_add(1, Ordering::Relaxed);
                    }
                }
                input.send(batch);
                worker.step();
            }
            drop(input);
            while !probe.done() {
                worker.step();
            }
        })
        .map_err(Error::Dataflow)?
        .join()
        .into_iter()
        .collect::<std::result::Result<Vec<()>, String>>()
        .map_err(Error::Dataflow)?;
        let seconds = started.elapsed().as_secs_f64();
        let last = last.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok((
            seconds,
            made.load(Ordering::Relaxed),
            malformed.load(Ordering::Relaxed),
            last,
        ))
    };

    let (fit_seconds, _, _, _) = dataflow(false)?;
    let (seconds, rows, malformed, map) = dataflow(true)?;
    let map = map.unwrap_or_else(|| Arc::new(FeatureMap::new(layout.clone())));

    // The transform alone: parse first, then time `workers` threads transforming their shares.
    let shares: Vec<Vec<EventBatch>> = (0..workers)
        .map(|w| {
            let mut parser = Parser::new(&layout);
            (w..chunks)
                .step_by(workers)
                .map(|chunk| {
                    let mut batch =
                        EventBatch::with_capacity(layout.schema.fields.len(), FEATURIZE_CHUNK);
                    for line in chunk_lines(&text, &spans, chunk) {
                        // Malformed lines were counted by the dataflow runs.
                        let _ = parser.parse_record(line, 0, &mut batch);
                    }
                    batch
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let transformed: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|share| {
                let map = &map;
                s.spawn(move || {
                    let mut counts = Default::default();
                    share
                        .iter()
                        .map(|batch| map.transform(batch, &mut counts).len() as u64)
                        .sum::<u64>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join())
            .sum::<std::thread::Result<u64>>()
    })
    .map_err(|_| Error::Dataflow("a transform thread panicked".into()))?;
    let transform_seconds = started.elapsed().as_secs_f64();
    Ok(FeaturizeBench {
        rows,
        seconds,
        rows_per_sec: rows as f64 / seconds,
        workers,
        vocab_size: map.vocab_sizes().into_iter().flatten().sum::<usize>() as u64,
        fit_seconds,
        transform_rows_per_sec: transformed as f64 / transform_seconds,
        version: map.version,
        malformed,
    })
}
