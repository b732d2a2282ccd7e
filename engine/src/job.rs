//! Running a job: broker and topics, the timely dataflow, the generator, serving and progress.
//!
//! The dataflow is `decode → hash → TrainOnline` for hashed features, and
//! `ParseEvents → Featurize → TrainRows` for a FeatureMap (`[features] type = "map"`).
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
use crate::metrics::JobStats;
use crate::spec::{JobSpec, SourceSpec};
use millrace_connectors::kafka::{
    create_topics, DeadLetterSink, EmbeddedBroker, KafkaReader, KafkaSourceConfig, LineProducer,
    RateLimit, WatermarkProbe, EMBEDDED,
};
use millrace_models::fmap::Schema;
use millrace_models::synth::CriteoGenerator;
use millrace_models::{DeadLetter, FeatureMap, FeatureSpec, RawRecord, Registry};
use millrace_operators::checkpoint::{Collector, Persist};
use millrace_operators::{
    ingest_partitions, Decode, Deliver, EventTime, Featurize, JoinLabels, LabelJoinConfig,
    ParseEvents, PartitionReader, Polled, PublishPolicy, RecordSink, TrainOnline, TrainRows,
    TrainerConfig,
};
use millrace_serving::{ModelStore, ServeOptions};
use serde::Serialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

/// Where and how a job runs: placement comes from flags or the environment, not the job file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Timely worker threads in this process.
    pub workers: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { workers: 2 }
    }
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
    let SourceSpec::Kafka(kafka) = spec.source.clone();
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
        tracing::info!(
            bootstrap_servers = %broker.bootstrap_servers(),
            topic = %kafka.topic,
            "embedded Kafka broker listening; any Kafka client can connect to it"
        );
        Some(broker)
    } else {
        let topics = [kafka.topic.as_str(), kafka.dead_letter_topic.as_str()];
        runtime.block_on(create_topics(
            &kafka.bootstrap_servers,
            &topics,
            kafka.partitions,
        ))?;
        None
    };
    let bootstrap = embedded.as_ref().map_or_else(
        || kafka.bootstrap_servers.clone(),
        EmbeddedBroker::bootstrap_servers,
    );
    let partitions = KafkaReader::topic_partitions(&kafka, &bootstrap)?;
    let stats = Arc::new(JobStats::new(&spec.name, partitions));
    let registry = Registry::open(&spec.publish.registry)?;

    // Serving, in-process.
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let (serve_addr, server) = match &spec.serve {
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

    let generator = spec.generator.clone().map(|generator| {
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

    let result = run_dataflow(&spec, &kafka, &bootstrap, registry, options, &stop, &stats);

    stop.store(true, Ordering::SeqCst);
    done.store(true, Ordering::SeqCst);
    for handle in [generator, progress].into_iter().flatten().flatten() {
        let _ = handle.join();
    }
    let _ = shutdown_tx.send(());
    if let Some(server) = server {
        let _ = runtime.block_on(server);
    }
    drop(embedded);
    let restored_epoch = result?;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (learned, published) = (
        load(&stats.trainer.learned),
        load(&stats.trainer.published_events),
    );
    if learned > published {
        return Err(Error::Dataflow(format!(
            "the final model version was not published: {learned} events learned, the newest version has {published} (see the publish errors above)"
        )));
    }
    Ok(JobReport {
        source_records: load(&stats.source.records),
        decoded: stats.decoded(),
        dead_letters: stats.dead_letters(),
        learned: load(&stats.trainer.learned),
        model_version: load(&stats.trainer.model_version),
        progressive_auc: stats.trainer.auc(),
        progressive_logloss: stats.trainer.logloss(),
        restored_epoch,
        checkpoints_written: stats.checkpoints.get().map_or(0, |c| c.figures().written),
    })
}

/// The checkpoint parts of the job's dataflow, in the order of the data.
fn checkpoint_parts(spec: &JobSpec) -> Vec<&'static str> {
    let mut parts = vec!["source"];
    if spec.labels.is_some() {
        parts.push("labels");
    }
    match spec.features {
        FeatureSpec::Hashed { .. } => parts.push("decode"),
        FeatureSpec::Map(_) => parts.extend(["parse", "fit", "transform"]),
    }
    parts.push("train");
    parts
}

/// The job's checkpoint collector, restored from its store, when it checkpoints.
fn checkpoints(spec: &JobSpec, workers: usize, stats: &JobStats) -> Result<Option<Collector>> {
    let Some(checkpoint) = &spec.checkpoint else {
        return Ok(None);
    };
    let store = CheckpointStore::open(&checkpoint.state_dir, checkpoint.keep)?;
    let parts = checkpoint_parts(spec);
    let workers: Vec<usize> = (0..workers).collect();
    let restored = store.restore(&workers, &parts);
    stats
        .checkpoints_skipped
        .store(restored.skipped.len() as u64, Ordering::Relaxed);
    if !restored.skipped.is_empty() && restored.checkpoint.is_none() {
        return Err(Error::Checkpoint(format!(
            "no checkpoint in {} can be restored ({} skipped; see the log); move the directory aside to start afresh",
            store.dir().display(),
            restored.skipped.len()
        )));
    }
    match &restored.checkpoint {
        Some(c) => tracing::info!(
            epoch = c.epoch,
            resume_epoch = c.resume_epoch,
            state_dir = %store.dir().display(),
            "restoring the newest checkpoint"
        ),
        None => {
            tracing::info!(state_dir = %store.dir().display(), "no checkpoint yet: starting afresh")
        }
    }
    let persist: Box<dyn Persist> = Box::new(store);
    Ok(Some(Collector::new(
        workers,
        &parts,
        Duration::from_millis(checkpoint.interval_ms),
        persist,
        restored.checkpoint,
    )))
}

/// Runs the dataflow to its end; returns the epoch of the checkpoint it restored, if any.
fn run_dataflow(
    spec: &JobSpec,
    kafka: &KafkaSourceConfig,
    bootstrap: &str,
    registry: Registry,
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
    };
    let time = EventTime {
        epoch_ms: spec.progress.epoch_ms,
        idle: Duration::from_millis(kafka.idle_ms),
    };
    let labels = spec.labels.map(|labels| LabelJoinConfig {
        window: labels.window_epochs(spec.progress.epoch_ms),
        late: labels.late,
    });
    // The FeatureMap layout of a `map` spec (checked when the spec was loaded).
    let layout = match &spec.features {
        FeatureSpec::Hashed { .. } => None,
        FeatureSpec::Map(map) => Some(
            map.compile(&Schema::criteo())
                .map_err(|problems| Error::Config { problems })?,
        ),
    };
    let workers = options.workers.max(1);
    let collector = checkpoints(spec, workers, stats)?;
    let restored_epoch = collector.as_ref().and_then(Collector::restored_epoch);
    let partitions = stats.source.partitions.len() as i32;
    let (kafka, bootstrap, stop, stats) = (
        kafka.clone(),
        bootstrap.to_owned(),
        stop.clone(),
        stats.clone(),
    );
    if let Some(collector) = &collector {
        let _ = stats.checkpoints.set(collector.clone());
    }
    let config = timely::Config::process(workers);
    let guards = timely::execute(config, move |worker| -> Result<(), String> {
        let (index, peers) = (worker.index(), worker.peers());
        let reader = KafkaReader::assign(&kafka, &bootstrap, index, peers, partitions)
            .map_err(|e| e.to_string())?;
        let dead_letters =
            DeadLetterSink::new(&bootstrap, &kafka.dead_letter_topic).map_err(|e| e.to_string())?;
        let source = KafkaIngest {
            reader,
            logged: HashSet::new(),
        };
        let (trainer, trainer_stats, decode_stats, featurize_stats, job_stats) = (
            trainer.clone(),
            stats.trainer.clone(),
            stats.decode.clone(),
            stats.featurize.clone(),
            stats.clone(),
        );
        let layout = layout.clone();
        let label_stats = stats.labels.clone();
        let source_stats = stats.source.clone();
        let (stop, stop_after) = (stop.clone(), kafka.stop_after_records);
        let stop_now = {
            let source_stats = source_stats.clone();
            move || {
                stop.load(Ordering::Relaxed)
                    || stop_after.is_some_and(|n| source_stats.records.load(Ordering::Relaxed) >= n)
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
            let delivery = DeadLetterDelivery {
                sink: dead_letters,
                stats: job_stats,
            };
            match layout {
                // Hashed features: decode Criteo events, hash, learn.
                None => {
                    let (events, dead) = records.decode_criteo(decode_stats);
                    concat_dead(dead, join_dead).deliver("DeadLetters", delivery);
                    events.train_online(trainer, trainer_stats, |_, _| {});
                }
                // A FeatureMap: parse, fit and transform per epoch, learn across versions.
                Some(layout) => {
                    let (events, dead) =
                        records.parse_events(layout.clone(), featurize_stats.clone());
                    concat_dead(dead, join_dead).deliver("DeadLetters", delivery);
                    let map = FeatureMap::new(layout);
                    let (rows, updates) = events.featurize(map.clone(), featurize_stats, |_, _| {});
                    rows.train_rows(updates, map, trainer, trainer_stats, |_, _, _| {});
                }
            }
        });
        Ok(())
    })
    .map_err(Error::Dataflow)?;
    for result in guards.join() {
        result.map_err(Error::Dataflow)?.map_err(Error::Dataflow)?;
    }
    Ok(restored_epoch)
}

/// The decoder's dead letters, with the label join's when there is one.
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
struct KafkaIngest {
    reader: KafkaReader,
    logged: HashSet<String>,
}

impl KafkaIngest {
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

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        match self.reader.poll_into(out, max) {
            Ok(0) => Polled::Idle,
            Ok(_) => Polled::Records,
            Err(error) => {
                self.log_once(&error, "error; retrying");
                Polled::Idle
            }
        }
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> std::result::Result<(), String> {
        self.reader.seek(positions).map_err(|e| e.to_string())
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

struct DeadLetterDelivery {
    sink: DeadLetterSink,
    stats: Arc<JobStats>,
}

impl RecordSink<DeadLetter> for DeadLetterDelivery {
    fn send(&mut self, letter: DeadLetter) {
        if let Err(error) = self.sink.send(&letter) {
            let dropped = self
                .stats
                .dead_letters_dropped
                .fetch_add(1, Ordering::Relaxed);
            if dropped == 0 {
                tracing::error!(%error, "a dead letter could not be delivered (counted in {})", crate::metrics::DEAD_LETTERS_DROPPED);
            }
        }
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::error!(%error, "dead letters not acknowledged");
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
