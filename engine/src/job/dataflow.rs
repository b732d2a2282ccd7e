//! The job's timely dataflow: what every worker needs (a [`Plan`]), how each worker opens its
//! clients and builds its operators, and running the workers to their end.

use super::checkpointing::{agree, checkpointing, gather, Agreed, Checkpointing};
use super::sinks::{OutputPlace, OutputSinks, Outputs};
use super::RunOptions;
use crate::catalog::{Catalog, ReaderContext, Source};
use crate::error::{chain, worker_results, CheckpointError, Error, Result, WorkerError};
use crate::metrics::JobStats;
use crate::spec::JobSpec;
use millrace_connectors::kafka::Brokers;
use millrace_models::fmap::{Layout, Parser};
use millrace_models::{DeadLetter, Decoder, FeatureMap, Registry};
use millrace_operators::checkpoint::Collector;
use millrace_operators::restored_positions;
use millrace_operators::{
    ingest_partitions, BufferSamples, Checkpoints, Deliver, EventTime, Featurize, JoinLabels,
    LabelJoinConfig, Mirror, Outlet, ParseEvents, PartitionReader, PublishPolicy, SampleConfig,
    ShareCheckpoints, Stop, TrainRows, TrainerConfig,
};
use millrace_samples::{Retention, SampleFields};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use timely::dataflow::operators::Concat;
use timely::dataflow::{Scope, StreamVec};

/// Everything a worker needs to build its part of the dataflow, made once per process.
#[derive(Clone)]
struct Plan {
    trainer: TrainerConfig,
    time: EventTime,
    labels: Option<LabelJoinConfig>,
    layout: Layout,
    /// The sample buffer, if the job keeps one.
    samples: Option<SampleConfig>,
    /// The decoder the schema names, if it names one.
    decoder: Option<Arc<dyn Decoder>>,
    outputs: OutputSinks,
    /// The sink types the outputs are opened with.
    catalog: Catalog,
    source: Arc<dyn Source>,
    bootstrap: Brokers,
    /// This process's workers (their indices in the job).
    local: Vec<usize>,
    processes: usize,
    checkpointing: Option<Checkpointing>,
    /// Whether to start afresh when the processes have no checkpoint in common.
    allow_fresh_start: bool,
    /// The collector of this process, made by its first worker once the processes agreed on
    /// the checkpoint to restore.
    collector: Arc<OnceLock<std::result::Result<Collector, Arc<CheckpointError>>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<JobStats>,
}

/// Runs the dataflow to its end; returns the epoch of the checkpoint it restored, if any.
/// `ready` is set once the workers can start: at once for one process, once every peer has
/// connected in a cluster.
pub(super) fn run_dataflow(
    spec: &JobSpec,
    (source, decoder): (Arc<dyn Source>, Option<Arc<dyn Decoder>>),
    (bootstrap, outputs): (&Brokers, OutputSinks),
    (registry, mirror): (Registry, Option<Mirror>),
    options: &RunOptions,
    (stop, ready): (&Arc<AtomicBool>, &AtomicBool),
    stats: &Arc<JobStats>,
) -> Result<Option<u64>> {
    let workers = options.workers.max(1);
    let (process, processes) = options
        .cluster
        .as_ref()
        .map_or((0, 1), |c| (c.process, c.hosts.len().max(1)));
    let local: Vec<usize> = (process * workers..(process + 1) * workers).collect();
    let schema = Arc::new(spec.event_schema()?);
    // Checked when the spec was loaded.
    let layout = spec
        .features
        .compile(&schema)
        .map_err(|problems| Error::Config { problems })?;
    let plan = Plan {
        trainer: trainer_config(spec, registry, mirror),
        time: EventTime {
            epoch_ms: spec.progress.epoch_ms,
            idle: source.idle(),
            hold_bytes: millrace_operators::HOLD_BYTES,
        },
        labels: spec.labels.map(|labels| LabelJoinConfig {
            window: labels.window_epochs(spec.progress.epoch_ms),
            late: labels.late,
            max_pending: labels.max_pending,
        }),
        samples: sample_config(spec, &layout, workers)?,
        layout,
        decoder,
        outputs,
        catalog: options.catalog.clone(),
        source,
        bootstrap: bootstrap.clone(),
        checkpointing: checkpointing(
            spec,
            &local,
            options.cluster.as_ref(),
            options.allow_fresh_start,
            stats,
        )?,
        allow_fresh_start: options.allow_fresh_start,
        local: local.clone(),
        processes,
        collector: Arc::default(),
        stop: stop.clone(),
        stats: stats.clone(),
    };
    let (allocators, connections) = match options.cluster.as_ref() {
        Some(cluster) => {
            super::peers::allocators(cluster, workers, (options.peer_timeout, options.peer_wait))?
        }
        None => timely::CommunicationConfig::Process(workers)
            .try_build()
            .map_err(Error::Start)?,
    };
    ready.store(true, Ordering::SeqCst);
    let guards = timely::execute::execute_from(
        allocators,
        connections,
        timely::WorkerConfig::default(),
        move |worker| plan.run_worker(worker),
    )
    .map_err(Error::Start)?;
    // Every worker agreed on the same epoch.
    let restored = worker_results(guards.join(), local[0])?;
    Ok(restored.into_iter().next().flatten())
}

/// The trainer's settings from the job's learner, features and publishing.
fn trainer_config(spec: &JobSpec, registry: Registry, mirror: Option<Mirror>) -> TrainerConfig {
    TrainerConfig {
        model: spec.name.clone(),
        features: spec.features.clone(),
        learner: spec.learner,
        publish: PublishPolicy {
            every_events: spec.publish.every_events,
            every: Duration::from_secs(spec.publish.every_seconds),
        },
        registry,
        mirror,
        predictions: spec
            .sinks
            .as_ref()
            .is_some_and(|s| s.predictions().is_some()),
    }
}

/// The sample buffer's settings, each of the process's `workers` keeping its share of the
/// bytes in segments of at most a quarter of it.
fn sample_config(spec: &JobSpec, layout: &Layout, workers: usize) -> Result<Option<SampleConfig>> {
    let Some(samples) = &spec.samples else {
        return Ok(None);
    };
    let dir = samples
        .directory(spec.checkpoint.as_ref())
        .ok_or_else(|| Error::Config {
            problems: vec!["[samples] `dir` is needed in a job without `[checkpoint]`".to_owned()],
        })?;
    let fields = SampleFields::of_layout(layout).map_err(|e| Error::Config {
        problems: vec![format!("[samples] {e}")],
    })?;
    let max_bytes = samples.max_bytes / workers.max(1) as u64;
    Ok(Some(SampleConfig {
        dir,
        retention: Retention {
            max_age_ms: samples.max_age_seconds.saturating_mul(1000),
            max_bytes,
            segment_bytes: samples.segment_bytes.min(max_bytes / 4).max(1),
            segment_ms: samples.segment_seconds.saturating_mul(1000),
        },
        fields,
    }))
}

/// Why `source` cannot resume where the checkpoint `collector` restores says for worker
/// `index`, if it cannot: its part unreadable, or the reader's seek refused.
fn resume_problem(
    collector: &Collector,
    index: usize,
    source: &mut dyn PartitionReader,
) -> Option<String> {
    match restored_positions(collector, index)? {
        Ok(positions) => source.seek(&positions).err().map(|e| e.to_string()),
        Err(error) => Some(format!("its checkpoint part is unreadable: {error}")),
    }
}

/// What a worker opened before its dataflow: the checkpoints' collector (when the job
/// checkpoints), its reader of the source, and its outputs' writers.
type Prepared = (Option<Collector>, Box<dyn PartitionReader>, Outputs);

impl Plan {
    /// One worker's life: agree on the checkpoint to restore, open the clients, build the
    /// dataflow (timely runs it once this returns).
    fn run_worker(
        &self,
        worker: &mut timely::worker::Worker,
    ) -> std::result::Result<Option<u64>, WorkerError> {
        let (index, peers) = (worker.index(), worker.peers());
        let agreed = self.checkpointing.as_ref().map(|c| {
            agree(
                worker,
                (index == self.local[0]).then(|| c.readable().to_vec()),
                self.processes,
            )
        });
        let restored_epoch = agreed.and_then(|a| a.epoch);
        // What a worker opens before the dataflow can fail on one worker and not another (its
        // own reader, a process's own state store or flags): every worker says whether it
        // could, and all stop alike when one could not, so that none waits in the dataflow
        // for one that stopped.
        let prepared = self.prepare((index, peers), agreed, restored_epoch);
        let failed = prepared.as_ref().err().map(|error| chain(error));
        let failures = gather(worker, failed);
        let (collector, source, outputs) = prepared?;
        if let Some(first) = failures.into_iter().next() {
            return Err(WorkerError::Peer(first));
        }
        // A bounded replay's end is the input's end; a stop asked for (SIGTERM) interrupts a
        // checkpointed job where it is, to be resumed from its newest checkpoint.
        let interrupt = if collector.is_some() {
            Stop::Interrupt
        } else {
            Stop::End
        };
        // The operators built below take their checkpoint parts from it.
        let checkpoints = collector.map_or_else(Checkpoints::none, Checkpoints::from_collector);
        let plan = self.clone();
        worker.dataflow::<u64, _, _>(move |scope| {
            plan.build(scope, source, outputs, (interrupt, &checkpoints))
        });
        Ok(restored_epoch)
    }

    /// What worker `index` opens before the dataflow: the checkpoint to restore (refused
    /// without a common one unless a fresh start is allowed), its reader, sought where the
    /// checkpoint says, and its outputs' writers.
    fn prepare(
        &self,
        (index, peers): (usize, usize),
        agreed: Option<Agreed>,
        restored_epoch: Option<u64>,
    ) -> std::result::Result<Prepared, WorkerError> {
        if let (Some(c), Some(agreed)) = (&self.checkpointing, agreed) {
            if agreed.epoch.is_none() && agreed.any {
                let refusal = CheckpointError::NoneInCommon {
                    readable: c.readable().to_vec(),
                };
                if !self.allow_fresh_start {
                    return Err(WorkerError::Restore(Arc::new(refusal)));
                }
                if index == self.local[0] {
                    tracing::warn!(%refusal, "starting afresh, as `--allow-fresh-start` asks");
                }
            }
        }
        let collector = match &self.checkpointing {
            Some(c) => Some(
                self.collector
                    .get_or_init(|| {
                        c.collector(restored_epoch, &self.local, &self.stats)
                            .map_err(Arc::new)
                    })
                    .clone()
                    .map_err(WorkerError::Restore)?,
            ),
            None => None,
        };
        let mut source = self.source(index, peers)?;
        if let Some(reason) = collector
            .as_ref()
            .and_then(|c| resume_problem(c, index, &mut *source))
        {
            return Err(WorkerError::Resume(reason));
        }
        let place = OutputPlace {
            catalog: &self.catalog,
            bootstrap: &self.bootstrap,
            worker: index,
        };
        let outputs = Outputs::open(&self.outputs, &place, &self.stats, self.time.epoch_ms)
            .map_err(WorkerError::Output)?;
        Ok((collector, source, outputs))
    }

    /// The worker's reader of its share of the source's partitions.
    fn source(
        &self,
        index: usize,
        peers: usize,
    ) -> std::result::Result<Box<dyn PartitionReader>, WorkerError> {
        self.source
            .reader(&ReaderContext {
                index,
                peers,
                event_time_missing: self.stats.event_time_missing.clone(),
                skipped: self.stats.source_skipped.clone(),
            })
            .map_err(WorkerError::Reader)
    }

    /// The operators: the source, the label join when there is one, parse, fit and transform
    /// per epoch (a hashed spec fits nothing), learning across the FeatureMap's versions, and
    /// the outputs; in a cluster, the processes' newest checkpoints shared for retention.
    fn build(
        self,
        scope: Scope<'_, u64>,
        source: Box<dyn PartitionReader>,
        outputs: Outputs,
        (interrupt, checkpoints): (Stop, &Checkpoints),
    ) {
        let Plan {
            trainer,
            time,
            labels,
            layout,
            samples,
            decoder,
            source: opened,
            stop,
            stats,
            checkpointing,
            ..
        } = self;
        let stop_after = opened.stop_after_records();
        let records_read = stats.source.clone();
        // A worker whose reader cannot resume stops the others (the job then fails).
        let stop_now = move || {
            if stop_after.is_some_and(|n| records_read.records.load(Ordering::Relaxed) >= n) {
                Some(Stop::End)
            } else {
                let failed = records_read.resume_failure().is_some();
                (failed || stop.load(Ordering::Relaxed)).then_some(interrupt)
            }
        };
        let mut records = ingest_partitions(
            scope,
            "Source",
            source,
            time,
            checkpoints,
            stats.source.clone(),
            stop_now,
        );
        if let Some(retention) = checkpointing.as_ref().and_then(Checkpointing::retention) {
            records = records.share_checkpoints(retention.clone());
        }
        // Impressions and clicks: joined into labeled records first.
        let mut join_dead = None;
        if let Some(config) = labels {
            let (labeled, dead) = records.join_labels(config, stats.labels.clone(), checkpoints);
            (records, join_dead) = (labeled, Some(dead));
        }
        let mut parser = Parser::new(&layout);
        if let Some(decoder) = decoder {
            parser = parser.with_decoder(decoder);
        }
        let (events, dead) = records.parse_events(parser, stats.featurize.clone(), checkpoints);
        concat_dead(dead, join_dead).deliver(
            Outlet::DEAD_LETTERS,
            outputs.dead_letters,
            checkpoints,
        );
        let map = FeatureMap::new(layout);
        let (rows, updates) =
            events.featurize(map.clone(), stats.featurize.clone(), checkpoints, |_, _| {});
        if let Some(config) = samples {
            rows.clone()
                .buffer_samples(config, stats.samples.clone(), checkpoints);
        }
        let mut metrics = outputs.metrics;
        let predicted = rows.train_rows(
            updates,
            map,
            trainer,
            stats.trainer.clone(),
            checkpoints,
            move |epoch, _, _| {
                if let Some(metrics) = metrics.as_mut() {
                    metrics.epoch_end(epoch);
                }
            },
        );
        if let Some(delivery) = outputs.predictions {
            predicted.deliver(Outlet::PREDICTIONS, delivery, checkpoints);
        }
    }
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
