//! Running a job: broker and topics, the timely dataflow, the generator, serving and progress.
//!
//! The dataflow is `ParseEvents → Featurize → TrainRows` for every feature spec: a hashed one
//! is a FeatureMap that fits nothing.
//!
//! [`Job::start`] sets the broker, topics, registry and serving up on a job thread and returns
//! once they are up (or failed); the dataflow then starts on that thread, and an error of its
//! workers (a consumer that cannot be created, say) comes out of [`RunningJob::wait`].
//! [`RunningJob::stop`] asks the sources to finish, after which the dataflow drains, the trainer
//! publishes a final version if it learned anything since the last one, and
//! [`RunningJob::wait`] returns the report, or an error if that final version could not be
//! published.

use crate::checkpoint::CheckpointStore;
use crate::error::{Error, Result};
use crate::file_source::Replay;
use crate::metrics::JobStats;
use crate::spec::{JobSpec, SourceSpec};
use millrace_connectors::kafka::{
    create_registry_topic, create_topics, EmbeddedBroker, KafkaReader, KafkaSourceConfig,
    LineProducer, Output, OutputSink, RateLimit, RegistryPublisher, WatermarkProbe, EMBEDDED,
};
use millrace_models::synth::CriteoGenerator;
use millrace_models::{DeadLetter, FeatureMap, FeatureSpec, ModelArtifact, RawRecord, Registry};
use millrace_operators::checkpoint::{Choice, Collector};
use millrace_operators::{
    ingest_partitions, now_ms, BoxError, Deliver, EventTime, Featurize, JoinLabels,
    LabelJoinConfig, Mirror, ParseEvents, PartitionReader, Polled, Prediction, PublishPolicy,
    RecordSink, Stop, TrainRows, TrainerConfig,
};
use millrace_serving::{ModelStore, ServeOptions};
use serde::Serialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

/// Where and how a job runs: placement comes from flags or the environment, not the job file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Timely worker threads in this process.
    pub workers: usize,
    /// The cluster this process belongs to; `None` for a job of one process.
    pub cluster: Option<Cluster>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions::local(2)
    }
}

impl RunOptions {
    /// A job of one process with `workers` worker threads.
    pub fn local(workers: usize) -> Self {
        RunOptions {
            workers,
            cluster: None,
        }
    }
}

/// A job of several processes (timely's cluster mode), each with the same number of workers.
///
/// Worker `w` of process `p` is the job's worker `p * workers + w`; partitions are spread over
/// all the job's workers. Process 0 runs the generator, publishes and serves. Each process
/// checkpoints its own workers into `state_dir/process-{p}`, every `interval_ms / epoch_ms`-th
/// epoch (the same epochs in every process), and on start-up the processes agree on the newest
/// epoch every one of them can restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub hosts: Vec<String>,
}

/// What a finished job did (counted across restarts when the job checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobReport {
    /// Records read from the source.
    pub source_records: u64,
    /// Records decoded into events.
    pub decoded: u64,
    /// Records sent to the dead letters.
    pub dead_letters: u64,
    /// Events learned from.
    pub learned: u64,
    /// The last published model version.
    pub model_version: u64,
    /// Final progressive-validation AUC.
    pub progressive_auc: Option<f64>,
    /// Final progressive-validation log-loss.
    pub progressive_logloss: Option<f64>,
    /// The epoch of the checkpoint the job restored, when it restored one.
    pub restored_epoch: Option<u64>,
    /// Checkpoints written by this run.
    pub checkpoints_written: u64,
}

/// Starts jobs.
#[derive(Debug)]
pub struct Job;

/// A job that is running.
#[derive(Debug)]
pub struct RunningJob {
    stop: Arc<AtomicBool>,
    stats: Arc<JobStats>,
    bootstrap_servers: String,
    serve_addr: Option<SocketAddr>,
    thread: JoinHandle<Result<JobReport>>,
}

/// A handle that stops a running job from another thread (a signal handler, say).
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the job to stop: sources finish, the dataflow drains, a final version is published.
    /// A checkpointed job's sources stop where they are ([`Stop::Interrupt`]): the epochs still
    /// open are left to the job restarted from its newest checkpoint.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Started {
    bootstrap_servers: String,
    serve_addr: Option<SocketAddr>,
    stats: Arc<JobStats>,
}

impl Job {
    /// Starts `spec`, returning once its broker, topics, registry and serving are up; the
    /// dataflow starts right after.
    ///
    /// # Errors
    ///
    /// When the broker, the topics, the registry or the serving address cannot be set up.
    pub fn start(spec: JobSpec, options: RunOptions) -> Result<RunningJob> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("millrace-job".into())
                .spawn(move || run(spec, options, stop, started_tx))
                .map_err(|e| Error::Dataflow(format!("cannot start the job thread: {e}")))?
        };
        match started_rx.recv() {
            Ok(started) => Ok(RunningJob {
                stop,
                stats: started.stats,
                bootstrap_servers: started.bootstrap_servers,
                serve_addr: started.serve_addr,
                thread,
            }),
            // The job thread ended before it started: its result says why.
            Err(_) => match thread.join() {
                Ok(Err(error)) => Err(error),
                Ok(Ok(_)) => Err(Error::Dataflow("the job ended before it started".into())),
                Err(_) => Err(Error::Dataflow("the job thread panicked".into())),
            },
        }
    }
}

impl RunningJob {
    /// The job's live figures.
    pub fn stats(&self) -> &Arc<JobStats> {
        &self.stats
    }

    /// The brokers the job reads from (the embedded broker's address when it runs one).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The address the in-process server listens on, when the job serves.
    pub fn serve_addr(&self) -> Option<SocketAddr> {
        self.serve_addr
    }

    /// A handle that stops the job.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Asks the job to stop (see [`StopHandle::stop`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the job has ended (stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the job to finish and returns its report.
    ///
    /// # Errors
    ///
    /// When a worker failed, or the final model version could not be published.
    pub fn wait(self) -> Result<JobReport> {
        self.thread
            .join()
            .map_err(|_| Error::Dataflow("the job thread panicked".into()))?
    }
}

fn run(
    spec: JobSpec,
    options: RunOptions,
    stop: Arc<AtomicBool>,
    started: mpsc::Sender<Started>,
) -> Result<JobReport> {
    if options.cluster.is_some() && matches!(spec.source, SourceSpec::File(_)) {
        return Err(Error::Config {
            problems: vec![
                "[source] a `file` source replays through an embedded broker: it cannot run as a job of several processes".to_owned(),
            ],
        });
    }
    let (kafka, replay) = source_topic(&spec)?;
    let process = options.cluster.as_ref().map_or(0, |c| c.process);
    if options.cluster.is_some() && kafka.bootstrap_servers == EMBEDDED {
        return Err(Error::Config {
            problems: vec![
                "[source] `bootstrap_servers` cannot be \"embedded\" for a job of several processes: each would run its own broker".to_owned(),
            ],
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("millrace-io")
        .enable_all()
        .build()
        .map_err(|e| Error::Dataflow(format!("cannot start the i/o runtime: {e}")))?;

    // The broker: in-process for `embedded`, otherwise the configured cluster.
    let embedded = if kafka.bootstrap_servers == EMBEDDED {
        let broker = EmbeddedBroker::start()?;
        broker.create_topic(&kafka.topic, kafka.partitions)?;
        broker.create_topic(&kafka.dead_letter_topic, kafka.partitions)?;
        for topic in output_topics(&spec) {
            broker.create_topic(topic, kafka.partitions)?;
        }
        tracing::info!(
            bootstrap_servers = %broker.bootstrap_servers(),
            topic = %kafka.topic,
            "embedded Kafka broker listening; any Kafka client can connect to it"
        );
        Some(broker)
    } else {
        let mut topics = vec![kafka.topic.as_str(), kafka.dead_letter_topic.as_str()];
        topics.extend(output_topics(&spec));
        if let Err(error) = runtime.block_on(create_topics(
            &kafka.bootstrap_servers,
            &topics,
            kafka.partitions,
        )) {
            // Topics made by whoever runs the brokers are fine: the source needs only to read.
            KafkaReader::topic_partitions(&kafka, &kafka.bootstrap_servers).map_err(|_| error)?;
            tracing::warn!("the topics could not be created but exist; going on");
        }
        None
    };
    let bootstrap = embedded.as_ref().map_or_else(
        || kafka.bootstrap_servers.clone(),
        EmbeddedBroker::bootstrap_servers,
    );
    let partitions = KafkaReader::topic_partitions(&kafka, &bootstrap)?;
    let stats = Arc::new(JobStats::new(&spec.name, partitions));
    let registry = Registry::open(&spec.publish.registry)?;
    let registry_mirror = match &spec.publish.registry_topic {
        Some(topic) => {
            match &embedded {
                Some(broker) => broker.create_topic(topic, 1)?,
                None => runtime.block_on(create_registry_topic(&bootstrap, topic))?,
            }
            let publisher = Mutex::new(RegistryPublisher::new(&bootstrap, topic)?);
            tracing::info!(topic = %topic, "model versions also go to the registry topic");
            Some(Mirror(Arc::new(move |artifact: &ModelArtifact| {
                let mut publisher = publisher
                    .lock()
                    .map_err(|_| "the registry publisher failed before")?;
                Ok(publisher.publish(artifact).map(drop)?)
            })))
        }
        None => None,
    };

    // Serving, in-process.
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let (serve_addr, server) = match spec.serve.as_ref().filter(|_| process == 0) {
        Some(serve) => {
            let listener =
                std::net::TcpListener::bind(&serve.bind).map_err(|source| Error::Bind {
                    addr: serve.bind.clone(),
                    source,
                })?;
            let bind_error = |source| Error::Bind {
                addr: serve.bind.clone(),
                source,
            };
            let addr = listener.local_addr().map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            let store = Arc::new(ModelStore::new(registry.clone()));
            let metrics = stats.clone();
            let options = ServeOptions {
                extra_metrics: Some(Arc::new(move || metrics.render_prometheus())),
                ..ServeOptions::default()
            };
            let server = runtime.spawn(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let shutdown = async {
                            let _ = shutdown_rx.await;
                        };
                        millrace_serving::serve(store, listener, options, shutdown).await;
                    }
                    Err(error) => tracing::error!(%error, "cannot serve"),
                }
            });
            tracing::info!(%addr, model = %spec.name, "serving POST /v1/models/{}:predict", spec.name);
            (Some(addr), Some(server))
        }
        None => (None, None),
    };

    let generator = spec
        .generator
        .clone()
        .filter(|_| process == 0)
        .map(|generator| {
            let (bootstrap, topic, stop, stats) = (
                bootstrap.clone(),
                kafka.topic.clone(),
                stop.clone(),
                stats.clone(),
            );
            std::thread::Builder::new()
                .name("millrace-generator".into())
                .spawn(move || generate(&bootstrap, &topic, partitions, &generator, &stop, &stats))
        });

    let replayer = match replay.filter(|_| process == 0) {
        Some(mut replay) => {
            replay.connect(&bootstrap, &kafka.topic)?;
            replay.prime()?;
            let (stop, stats) = (stop.clone(), stats.clone());
            Some(
                std::thread::Builder::new()
                    .name("millrace-replay".into())
                    .spawn(move || replay.run(&stats.source.partitions[0].records, &stop)),
            )
        }
        None => None,
    };

    let done = Arc::new(AtomicBool::new(false));
    let progress = (spec.progress.interval_ms > 0).then(|| {
        let (bootstrap, topic, done, stats) = (
            bootstrap.clone(),
            kafka.topic.clone(),
            done.clone(),
            stats.clone(),
        );
        let interval = Duration::from_millis(spec.progress.interval_ms);
        std::thread::Builder::new()
            .name("millrace-progress".into())
            .spawn(move || report_progress(&bootstrap, &topic, partitions, interval, &done, &stats))
    });

    let _ = started.send(Started {
        bootstrap_servers: bootstrap.clone(),
        serve_addr,
        stats: stats.clone(),
    });

    let result = run_dataflow(
        &spec,
        &kafka,
        &bootstrap,
        (registry, registry_mirror),
        options,
        &stop,
        &stats,
    );

    stop.store(true, Ordering::SeqCst);
    done.store(true, Ordering::SeqCst);
    // A replay that failed ended the job early: its error is the job's.
    let replay_failed = replayer
        .and_then(|handle| handle.ok())
        .and_then(|handle| handle.join().ok())
        .and_then(Result::err);
    for handle in [generator, progress].into_iter().flatten().flatten() {
        let _ = handle.join();
    }
    let _ = shutdown_tx.send(());
    if let Some(server) = server {
        let _ = runtime.block_on(server);
    }
    drop(embedded);
    if let Some(error) = replay_failed {
        return Err(error);
    }
    let restored_epoch = result?;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (learned, published) = (
        load(&stats.trainer.learned),
        load(&stats.trainer.published_events),
    );
    // Process 0 publishes; in a cluster its count of learned events is its own workers' share.
    if process == 0 && learned > published {
        return Err(Error::Dataflow(format!(
            "the final model version was not published: {learned} events learned, the newest version has {published} (see the publish errors above)"
        )));
    }
    Ok(JobReport::now(&stats, restored_epoch))
}

impl JobReport {
    /// The job's figures as of now.
    fn now(stats: &JobStats, restored_epoch: Option<u64>) -> Self {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        JobReport {
            source_records: load(&stats.source.records),
            decoded: stats.decoded(),
            dead_letters: stats.dead_letters(),
            learned: load(&stats.trainer.learned),
            model_version: load(&stats.trainer.model_version),
            progressive_auc: stats.trainer.auc(),
            progressive_logloss: stats.trainer.logloss(),
            restored_epoch,
            checkpoints_written: stats.checkpoints.get().map_or(0, |c| c.figures().written),
        }
    }
}

/// The checkpoint parts of the job's dataflow, in the order of the data. The output sinks are
/// parts too: a checkpoint covers an epoch only once its outputs are acknowledged.
fn checkpoint_parts(spec: &JobSpec) -> Vec<&'static str> {
    let mut parts = vec!["source"];
    if spec.labels.is_some() {
        parts.push("labels");
    }
    parts.extend(["parse", "fit", "transform", "dead_letters", "train"]);
    if spec
        .sinks
        .as_ref()
        .is_some_and(|s| s.predictions_topic.is_some())
    {
        parts.push("predictions");
    }
    parts
}

/// What a process needs to checkpoint: its store, its readable checkpoints, and how it chooses
/// checkpoint epochs.
#[derive(Clone)]
struct Checkpointing {
    store: CheckpointStore,
    parts: Vec<&'static str>,
    readable: Vec<u64>,
    choice: Choice,
}

/// Opens this process's checkpoint store, when the job checkpoints, and finds the checkpoints
/// that read back whole.
fn checkpointing(
    spec: &JobSpec,
    local: &[usize],
    cluster: Option<&Cluster>,
    stats: &JobStats,
) -> Result<Option<Checkpointing>> {
    let Some(checkpoint) = &spec.checkpoint else {
        return Ok(None);
    };
    let (dir, choice) = match cluster {
        Some(cluster) => (
            checkpoint
                .state_dir
                .join(format!("process-{}", cluster.process)),
            Choice::EveryNth((checkpoint.interval_ms / spec.progress.epoch_ms.max(1)).max(1)),
        ),
        None => (
            checkpoint.state_dir.clone(),
            Choice::Interval(Duration::from_millis(checkpoint.interval_ms)),
        ),
    };
    let replaced = match spec.features {
        FeatureSpec::Hashed { .. } => crate::checkpoint::HASHED_DECODE,
        FeatureSpec::Map(_) => &[],
    };
    let store = CheckpointStore::open(&dir, checkpoint.keep)?.replacing(replaced);
    let parts = checkpoint_parts(spec);
    let (readable, skipped) = store.readable(local, &parts);
    stats
        .checkpoints_skipped
        .store(skipped.len() as u64, Ordering::Relaxed);
    if !skipped.is_empty() && readable.is_empty() {
        return Err(Error::Checkpoint(format!(
            "no checkpoint in {} can be restored ({} skipped; see the log); move the directory aside to start afresh",
            dir.display(),
            skipped.len()
        )));
    }
    Ok(Some(Checkpointing {
        store,
        parts,
        readable,
        choice,
    }))
}

/// The newest epoch every process can restore, agreed on by all the job's workers: each
/// process's first worker sends its readable epochs to every worker.
fn agree(
    worker: &mut timely::worker::Worker,
    mine: Option<Vec<u64>>,
    processes: usize,
) -> Option<u64> {
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::vec::Broadcast;
    use timely::dataflow::operators::{Inspect, Probe, ToStream};

    let lists: Rc<RefCell<Vec<Vec<u64>>>> = Rc::default();
    let received = lists.clone();
    let probe = worker.dataflow::<u64, _, _>(move |scope| {
        mine.into_iter()
            .to_stream(scope)
            .broadcast()
            .inspect(move |list| received.borrow_mut().push(list.clone()))
            .probe()
            .0
    });
    worker.step_while(|| !probe.done());
    let lists = lists.borrow();
    if lists.len() < processes {
        return None;
    }
    let first = lists.first()?;
    first
        .iter()
        .rev()
        .find(|epoch| lists.iter().all(|list| list.contains(epoch)))
        .copied()
}

/// Runs the dataflow to its end; returns the epoch of the checkpoint it restored, if any.
fn run_dataflow(
    spec: &JobSpec,
    kafka: &KafkaSourceConfig,
    bootstrap: &str,
    (registry, registry_mirror): (Registry, Option<Mirror>),
    options: RunOptions,
    stop: &Arc<AtomicBool>,
    stats: &Arc<JobStats>,
) -> Result<Option<u64>> {
    let trainer = TrainerConfig {
        model: spec.name.clone(),
        features: spec.features.clone(),
        learner: spec.learner,
        publish: PublishPolicy {
            every_events: spec.publish.every_events,
            every: Duration::from_secs(spec.publish.every_seconds),
        },
        registry,
        mirror: registry_mirror,
        predictions: spec
            .sinks
            .as_ref()
            .is_some_and(|s| s.predictions_topic.is_some()),
    };
    let time = EventTime {
        epoch_ms: spec.progress.epoch_ms,
        idle: Duration::from_millis(kafka.idle_ms),
        hold_bytes: millrace_operators::HOLD_BYTES,
    };
    let labels = spec.labels.map(|labels| LabelJoinConfig {
        window: labels.window_epochs(spec.progress.epoch_ms),
        late: labels.late,
    });
    // The events' schema and the FeatureMap layout of the features (checked when the spec was
    // loaded). A schema with a time field gives the source its records' event times.
    let schema = Arc::new(spec.event_schema()?);
    let event_time = schema.record.as_ref().is_some_and(|r| {
        r.columns
            .iter()
            .any(|c| c.role == millrace_models::schema::Role::Time)
    });
    // A repeated replay cannot go back in event time: its records keep the replay's clock.
    let repeated = matches!(&spec.source, SourceSpec::File(file) if file.repeat);
    let time_schema = (event_time && !repeated).then(|| schema.clone());
    let layout = spec
        .features
        .compile(&schema)
        .map_err(|problems| Error::Config { problems })?;
    let workers = options.workers.max(1);
    let (process, processes) = options
        .cluster
        .as_ref()
        .map_or((0, 1), |c| (c.process, c.hosts.len().max(1)));
    let local: Vec<usize> = (process * workers..(process + 1) * workers).collect();
    let predictions_topic = spec
        .sinks
        .as_ref()
        .and_then(|sinks| sinks.predictions_topic.clone());
    let metrics_sink = spec.sinks.as_ref().and_then(|sinks| {
        let every = Duration::from_millis(sinks.metrics_interval_ms);
        sinks.metrics_topic.clone().map(|topic| (topic, every))
    });
    let checkpointing = checkpointing(spec, &local, options.cluster.as_ref(), stats)?;
    // The collector of this process, made by its first worker once the processes agreed on the
    // checkpoint to restore.
    let collector: Arc<OnceLock<std::result::Result<Collector, String>>> = Arc::default();
    let partitions = stats.source.partitions.len() as i32;
    let (kafka, bootstrap, stop, stats) = (
        kafka.clone(),
        bootstrap.to_owned(),
        stop.clone(),
        stats.clone(),
    );
    let config = match &options.cluster {
        Some(cluster) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: cluster.process,
                addresses: cluster.hosts.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
        None => timely::Config::process(workers),
    };
    let guards = timely::execute(config, move |worker| -> Result<Option<u64>, String> {
        let (index, peers) = (worker.index(), worker.peers());
        let restored_epoch = match &checkpointing {
            Some(c) => agree(
                worker,
                (index == local[0]).then(|| c.readable.clone()),
                processes,
            ),
            None => None,
        };
        let collector = collector
            .get_or_init(|| {
                let Some(c) = &checkpointing else {
                    return Err("no checkpoints".to_owned());
                };
                let restored = match restored_epoch {
                    Some(epoch) => Some(c.store.checkpoint(epoch, &local, &c.parts)?),
                    None => None,
                };
                match &restored {
                    Some(r) => tracing::info!(
                        epoch = r.epoch,
                        resume_epoch = r.resume_epoch,
                        state_dir = %c.store.dir().display(),
                        "restoring a checkpoint"
                    ),
                    None => tracing::info!(state_dir = %c.store.dir().display(), "no checkpoint to restore: starting afresh"),
                }
                let collector = Collector::new(
                    local.clone(),
                    &c.parts,
                    c.choice,
                    Box::new(c.store.clone()),
                    restored,
                );
                let _ = stats.checkpoints.set(collector.clone());
                Ok(collector)
            })
            .as_ref()
            .ok()
            .cloned();
        if checkpointing.is_some() && collector.is_none() {
            return Err("the agreed checkpoint cannot be read".to_owned());
        }
        let mut reader = KafkaReader::assign(&kafka, &bootstrap, index, peers, partitions)
            .map_err(|e| e.to_string())?;
        if let Some(schema) = time_schema.clone() {
            reader = reader.with_event_time(Arc::new(move |payload| schema.event_time(payload)));
        }
        let dead_letters = OutputSink::new(
            &bootstrap,
            &kafka.dead_letter_topic,
            "dead letters",
            stats.dead_letters_dropped.clone(),
        )
        .map_err(|e| e.to_string())?;
        let predictions = match &predictions_topic {
            Some(topic) => Some(PredictionDelivery {
                sink: OutputSink::new(
                    &bootstrap,
                    topic,
                    "predictions",
                    stats.predictions_dropped.clone(),
                )
                .map_err(|e| e.to_string())?,
            }),
            None => None,
        };
        // Process 0's first worker reports the job's figures at epoch ends.
        let mut metrics = match (&metrics_sink, index) {
            (Some((topic, every)), 0) => Some(MetricsSink {
                sink: OutputSink::new(&bootstrap, topic, "metrics", stats.metrics_dropped.clone())
                    .map_err(|e| e.to_string())?,
                every: *every,
                last: None,
                stats: stats.clone(),
                epoch_ms: time.epoch_ms,
            }),
            _ => None,
        };
        let source = KafkaIngest::new(reader, stats.event_time_missing.clone());
        let (trainer, trainer_stats, featurize_stats) = (
            trainer.clone(),
            stats.trainer.clone(),
            stats.featurize.clone(),
        );
        let layout = layout.clone();
        let label_stats = stats.labels.clone();
        let source_stats = stats.source.clone();
        let (stop, stop_after) = (stop.clone(), kafka.stop_after_records);
        // A bounded replay's end is the input's end; a stop asked for (SIGTERM) interrupts a
        // checkpointed job where it is, to be resumed from its newest checkpoint.
        let interrupt = if collector.is_some() {
            Stop::Interrupt
        } else {
            Stop::End
        };
        let stop_now = {
            let source_stats = source_stats.clone();
            move || {
                if stop_after.is_some_and(|n| source_stats.records.load(Ordering::Relaxed) >= n) {
                    Some(Stop::End)
                } else {
                    stop.load(Ordering::Relaxed).then_some(interrupt)
                }
            }
        };
        // The operators built below take their checkpoint parts from it.
        let _installed = collector.as_ref().map(Collector::install);
        worker.dataflow::<u64, _, _>(move |scope| {
            let part = millrace_operators::checkpoint::part(index, "source");
            let mut records = ingest_partitions(
                scope,
                "KafkaSource",
                source,
                time,
                part,
                source_stats,
                stop_now,
            );
            // Impressions and clicks: joined into labeled records first.
            let mut join_dead = None;
            if let Some(config) = labels {
                let (labeled, dead) = records.join_labels(config, label_stats);
                (records, join_dead) = (labeled, Some(dead));
            }
            let delivery = DeadLetterDelivery { sink: dead_letters };
            // Parse, fit and transform per epoch (a hashed spec fits nothing), learn across
            // the FeatureMap's versions.
            let (events, dead) = records.parse_events(layout.clone(), featurize_stats.clone());
            concat_dead(dead, join_dead).deliver("dead_letters", delivery);
            let map = FeatureMap::new(layout);
            let (rows, updates) = events.featurize(map.clone(), featurize_stats, |_, _| {});
            let predicted =
                rows.train_rows(updates, map, trainer, trainer_stats, move |epoch, _, _| {
                    if let Some(metrics) = metrics.as_mut() {
                        metrics.epoch_end(epoch);
                    }
                });
            if let Some(delivery) = predictions {
                predicted.deliver("predictions", delivery);
            }
        });
        Ok(restored_epoch)
    })
    .map_err(Error::Dataflow)?;
    let mut restored_epoch = None;
    for result in guards.join() {
        restored_epoch = result.map_err(Error::Dataflow)?.map_err(Error::Dataflow)?;
    }
    Ok(restored_epoch)
}

/// The parser's dead letters, with the label join's when there is one.
fn concat_dead<'scope>(
    dead: StreamVec<'scope, u64, DeadLetter>,
    join_dead: Option<StreamVec<'scope, u64, DeadLetter>>,
) -> StreamVec<'scope, u64, DeadLetter> {
    match join_dead {
        Some(join_dead) => dead.concat(join_dead),
        None => dead,
    }
}

/// The Kafka reader as the source's partition reader.
pub(crate) struct KafkaIngest {
    reader: KafkaReader,
    logged: HashSet<String>,
    /// Records without a usable event-time field, counted for the whole job.
    missing_event_times: Arc<AtomicU64>,
    reported: u64,
}

impl KafkaIngest {
    pub(crate) fn new(reader: KafkaReader, missing_event_times: Arc<AtomicU64>) -> Self {
        KafkaIngest {
            reader,
            logged: HashSet::new(),
            missing_event_times,
            reported: 0,
        }
    }

    fn log_once(&mut self, error: &millrace_connectors::Error, what: &str) {
        // The client reconnects by itself; each kind of error is logged once.
        if self.logged.insert(error.kind()) {
            tracing::warn!(%error, "kafka source: {what} (logged once per kind)");
        }
    }
}

impl PartitionReader for KafkaIngest {
    fn partitions(&self) -> Vec<i32> {
        self.reader.partitions().to_vec()
    }

    fn at_end(&self, partition: i32) -> bool {
        self.reader.at_end(partition)
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        let polled = self.reader.poll_into(out, max);
        let missing = self.reader.missing_event_times();
        if missing > self.reported {
            if self.reported == 0 {
                tracing::warn!(
                    "records without a usable event-time field: their Kafka timestamps are used (counted in {})",
                    crate::metrics::SOURCE_EVENT_TIME_MISSING
                );
            }
            self.missing_event_times
                .fetch_add(missing - self.reported, Ordering::Relaxed);
            self.reported = missing;
        }
        match polled {
            Ok(0) => Polled::Idle,
            Ok(_) => Polled::Records,
            Err(error) => {
                self.log_once(&error, "error; retrying");
                Polled::Idle
            }
        }
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> std::result::Result<(), BoxError> {
        Ok(self.reader.seek(positions)?)
    }

    fn pause(&mut self, partition: i32, paused: bool) -> bool {
        match self.reader.pause(partition, paused) {
            Ok(()) => true,
            Err(error) => {
                self.log_once(&error, "cannot pause or resume a partition");
                false
            }
        }
    }

    fn commit(&mut self, positions: &[(i32, i64)]) {
        if let Err(error) = self.reader.commit(positions) {
            self.log_once(
                &error,
                "committing a checkpoint's positions to the group failed",
            );
        }
    }
}

/// The dead letters to their topic. The sinks here count and log what they lose themselves.
struct DeadLetterDelivery {
    sink: OutputSink,
}

impl RecordSink<DeadLetter> for DeadLetterDelivery {
    fn send(&mut self, epoch: u64, letter: DeadLetter) {
        let _ = self.sink.send_dead_letter(epoch, &letter);
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, "dead letters not acknowledged");
        }
    }

    fn unsettled_from(&self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// Each event's prediction to the predictions topic.
struct PredictionDelivery {
    sink: OutputSink,
}

/// One message of the predictions topic.
#[derive(Serialize)]
struct PredictionMessage {
    partition: Option<i32>,
    offset: Option<i64>,
    prediction: f32,
    label: u8,
}

impl RecordSink<Prediction> for PredictionDelivery {
    fn send(&mut self, epoch: u64, prediction: Prediction) {
        let (partition, offset) = prediction
            .source
            .map_or((None, None), |p| (Some(p.partition), Some(p.offset)));
        let message = PredictionMessage {
            partition,
            offset,
            prediction: prediction.prediction,
            label: u8::from(prediction.label),
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let key = prediction
            .source
            .map(|p| format!("{}:{}", p.partition, p.offset))
            .unwrap_or_default();
        let _ = self.sink.send(Output {
            epoch,
            key: Some(key.as_bytes()),
            payload: &payload,
            headers: &[],
        });
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, "predictions not acknowledged");
        }
    }

    fn unsettled_from(&self) -> Option<u64> {
        self.sink.unsettled_from()
    }
}

/// The `[sinks]` topics of a job.
fn output_topics(spec: &JobSpec) -> Vec<&str> {
    spec.sinks
        .iter()
        .flat_map(|s| [&s.predictions_topic, &s.metrics_topic])
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Process 0's reports of the job's figures to the metrics topic.
struct MetricsSink {
    sink: OutputSink,
    every: Duration,
    last: Option<Instant>,
    stats: Arc<JobStats>,
    epoch_ms: u64,
}

/// One message of the metrics topic.
#[derive(Serialize)]
struct MetricsMessage<'a> {
    job: &'a str,
    /// The epoch just finished (with its synchronization round), or `None` for the final
    /// report.
    epoch: Option<u64>,
    /// The event time the epoch ends at, in milliseconds since the Unix epoch.
    event_time_ms: Option<u64>,
    /// When the message was made, in milliseconds since the Unix epoch.
    time_ms: u64,
    #[serde(flatten)]
    report: JobReport,
}

impl MetricsSink {
    /// Called after each epoch and once more at the end (`None`).
    fn epoch_end(&mut self, epoch: Option<u64>) {
        if epoch.is_some() && self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        let message = MetricsMessage {
            job: &self.stats.model,
            epoch,
            event_time_ms: epoch.map(|e| (e + 1).saturating_mul(self.epoch_ms)),
            time_ms: now_ms(),
            report: JobReport::now(&self.stats, None),
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let _ = self.sink.send(Output {
            epoch: epoch.unwrap_or(u64::MAX),
            key: Some(self.stats.model.as_bytes()),
            payload: &payload,
            headers: &[],
        });
        if epoch.is_none() {
            if let Err(error) = self.sink.flush() {
                tracing::error!(%error, "metrics not acknowledged");
            }
        }
    }
}

/// The topic the dataflow reads, and for a `file` source the replay of its file into it.
fn source_topic(spec: &JobSpec) -> Result<(KafkaSourceConfig, Option<Replay>)> {
    match &spec.source {
        SourceSpec::Kafka(kafka) => Ok((kafka.clone(), None)),
        SourceSpec::File(file) => {
            let replay = Replay::read(file.clone(), &spec.event_schema()?)?;
            Ok((replay.kafka_config(&spec.name), Some(replay)))
        }
    }
}

fn generate(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    spec: &crate::spec::GeneratorSpec,
    stop: &AtomicBool,
    stats: &JobStats,
) {
    let mut producer = match LineProducer::new(bootstrap, topic, partitions) {
        Ok(producer) => producer,
        Err(error) => {
            tracing::error!(%error, "the generator cannot produce");
            return;
        }
    };
    let limit = RateLimit::new(Some(spec.rows_per_sec));
    let mut events = CriteoGenerator::new(spec.seed);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && (spec.rows == 0 || sent < spec.rows) {
        let delay = limit.delay(sent);
        if !delay.is_zero() {
            // Sleep in slices, so that a slow rate does not delay a stop.
            std::thread::sleep(delay.min(Duration::from_millis(50)));
            continue;
        }
        if let Err(error) = producer.send(events.next_event().to_tsv().as_bytes()) {
            tracing::error!(%error, "the generator stops");
            break;
        }
        sent += 1;
        stats.generated.store(sent, Ordering::Relaxed);
    }
    if let Err(error) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(%error, "generated events not all acknowledged");
    }
}

fn report_progress(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    interval: Duration,
    done: &AtomicBool,
    stats: &JobStats,
) {
    let probe = WatermarkProbe::new(bootstrap, topic, partitions).ok();
    let mut last = (Instant::now(), 0u64);
    while !done.load(Ordering::Relaxed) {
        let deadline = Instant::now() + interval;
        while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(Ok(high)) = probe.as_ref().map(WatermarkProbe::high_watermarks) {
            let lag: Vec<i64> = high
                .iter()
                .zip(&stats.source.partitions)
                .map(|(high, p)| (high - p.next_offset.load(Ordering::Relaxed) as i64).max(0))
                .collect();
            stats.lag.store(lag.iter().sum(), Ordering::Relaxed);
            *stats
                .partition_lag
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = lag;
        }
        let records = stats.source.records.load(Ordering::Relaxed);
        let rate = (records - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), records);
        tracing::info!(target: "millrace::progress", "{}", stats.progress_line(rate));
    }
}
