//! The `millrace bench` commands, each printing one JSON line: `online` (module [`online`]),
//! `bare` (module [`bare`]), `train` and `allreduce` (modules `train` and `allreduce`, with the
//! `deep` feature, and `nccl` with the `nccl` feature), `swap` (module [`swap`]), `job`,
//! `ingest` and `featurize`.

#[cfg(feature = "deep")]
pub mod allreduce;
pub mod bare;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod online;
pub mod swap;
#[cfg(feature = "deep")]
pub mod train;

use crate::error::{worker_results, Error, Result, WorkerError};
use millrace_connectors::kafka::Brokers;
use millrace_models::{FeatureSpec, FtrlParams};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

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
    use millrace_connectors::kafka::{KafkaSourceConfig, LineProducer};
    use millrace_models::synth::CriteoGenerator;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let brokers = Brokers::new(bootstrap_servers);
    let topic = format!("bench-{}-{}", std::process::id(), rows);
    let dead_letter_topic = format!("{topic}-dead-letters");
    let partitions = 4;
    create_bench_topics(&brokers, &[&topic, &dead_letter_topic], partitions)?;
    let lines: Vec<String> = CriteoGenerator::new(1)
        .take(rows as usize)
        .map(|e| e.to_tsv())
        .collect();
    let started = Instant::now();
    let mut producer = LineProducer::new(&brokers, &topic, partitions)?;
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
            on_missing_offsets: Default::default(),
            kafka: Default::default(),
            kafka_file: None,
        })
        .features(features.clone())
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry.to_owned(),
            every_events: 1_000_000,
            every_seconds: 3600,
            registry_topic: None,
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
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
            max_failures: CheckpointSpec::default_max_failures(),
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
            return Err(Error::EndedEarly(
                "the job ended before it learned every event",
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
    use crate::catalog::{KafkaFactory, ReaderContext, SourceContext, SourceFactory};
    use crate::checkpoint::CheckpointStore;
    use crate::spec::SourceSpec;
    use millrace_connectors::kafka::{KafkaSourceConfig, LineProducer};
    use millrace_models::synth::CriteoGenerator;
    use millrace_models::Schema;
    use millrace_operators::checkpoint::{Choice, Collector};
    use millrace_operators::{
        ingest_partitions, source_parts, Checkpoints, EventTime, SourceStats, Stop,
    };
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;
    use timely::dataflow::operators::Inspect;

    let brokers = Brokers::new(bootstrap_servers);
    let topic = format!("ingest-{}-{}", std::process::id(), rows);
    let partitions = 4;
    create_bench_topics(&brokers, &[&topic], partitions)?;
    let started = Instant::now();
    let mut producer = LineProducer::new(&brokers, &topic, partitions)?;
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
        on_missing_offsets: Default::default(),
        kafka: Default::default(),
        kafka_file: None,
    };
    let store = CheckpointStore::open(state_dir, 3)?;
    let collector = Collector::new(
        (0..workers).collect(),
        &source_parts(),
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
    let source = KafkaFactory
        .open(
            &SourceSpec::kafka(&config)
                .map_err(|e| Error::Config {
                    problems: vec![format!("[source] {e}")],
                })?
                .config,
            &SourceContext {
                job: "bench-ingest",
                schema: &Arc::new(Schema::criteo()),
                event_time: None,
                bootstrap: &brokers,
            },
        )
        .map_err(|source| Error::Source {
            kind: "kafka".to_owned(),
            source,
        })?;
    let started = Instant::now();
    let shared = (collector.clone(), stats.clone());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let reader = source
            .reader(&ReaderContext {
                index: worker.index(),
                peers: worker.peers(),
                event_time_missing: Arc::default(),
                skipped: Arc::default(),
            })
            .map_err(WorkerError::Reader)?;
        let (collector, stats) = shared.clone();
        let checkpoints = Checkpoints::from_collector(collector);
        let done = stats.clone();
        worker.dataflow::<u64, _, _>(move |scope| {
            let stop = move || (done.records.load(Ordering::Relaxed) >= rows).then_some(Stop::End);
            ingest_partitions(
                scope,
                "KafkaSource",
                reader,
                time,
                &checkpoints,
                stats,
                stop,
            )
            .inspect(|_| {});
        });
        Ok::<_, WorkerError>(())
    })
    .map_err(Error::Start)?;
    worker_results(guards.join(), 0)?;
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

/// Creates a bench's fresh `topics` with `partitions` each on `brokers`.
fn create_bench_topics(brokers: &Brokers, topics: &[&str], partitions: i32) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Spawn {
            what: "the i/o runtime",
            source,
        })?;
    Ok(runtime.block_on(millrace_connectors::kafka::create_topics(
        brokers, topics, partitions,
    ))?)
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
    use millrace_operators::{Checkpoints, Featurize, FeaturizeStats, FitFeatureMap};
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
        let joined: Vec<std::result::Result<Result<(), WorkerError>, String>> =
            timely::execute(timely::Config::process(workers), move |worker| {
                use timely::container::CapacityContainerBuilder;
                use timely::dataflow::operators::{Input, Inspect, Probe};
                use timely::dataflow::{InputHandle, ProbeHandle};
                let (index, peers) = (worker.index(), worker.peers());
                let mut input =
                    InputHandle::<u64, CapacityContainerBuilder<Vec<EventBatch>>>::new();
                let probe = ProbeHandle::new();
                let (made, last) = (made_.clone(), last_.clone());
                worker.dataflow::<u64, _, _>(|scope| {
                    let events = scope.input_from(&mut input);
                    if transform {
                        let stats = Arc::new(FeaturizeStats::default());
                        let map = FeatureMap::new(layout.clone());
                        let (rows, _updates) =
                            events.featurize(map, stats, &Checkpoints::none(), move |map, _| {
                                if index == 0 {
                                    *last.lock().unwrap_or_else(|e| e.into_inner()) =
                                        Some(map.clone());
                                }
                            });
                        rows.inspect(move |rows| {
                            made.fetch_add(rows.len() as u64, Ordering::Relaxed);
                        })
                        .probe_with(&probe);
                    } else {
                        events
                            .fit_feature_map(layout.clone(), &Checkpoints::none())
                            .probe_with(&probe);
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
            .map_err(Error::Start)?
            .join()
            .into_iter()
            .map(|result| result.map(Ok))
            .collect();
        worker_results(joined, 0)?;
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
    .map_err(|_| Error::Panicked {
        what: "a transform thread",
    })?;
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
