//! The job's threads beside the dataflow: the generator and the progress line.

use crate::catalog::Source;
use crate::error::{Error, Result};
use crate::metrics::JobStats;
use crate::spec::GeneratorSpec;
use millrace_connectors::kafka::{Brokers, LineProducer, RateLimit};
use millrace_models::schema::synth::SchemaGenerator;
use millrace_models::Schema;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the background threads need to know of the job.
pub(super) struct Context<'a> {
    /// The brokers.
    pub(super) bootstrap: &'a Brokers,
    /// The job's source.
    pub(super) source: &'a Arc<dyn Source>,
    /// Set when the job stops.
    pub(super) stop: &'a Arc<AtomicBool>,
    /// The job's figures.
    pub(super) stats: &'a Arc<JobStats>,
}

/// What the generator produces, and where.
pub(super) struct Generate<'a> {
    /// Its settings.
    pub(super) spec: GeneratorSpec,
    /// The events' schema.
    pub(super) schema: Schema,
    /// The source's topic.
    pub(super) topic: &'a str,
    /// Its partitions.
    pub(super) partitions: i32,
}

/// The running background threads of a job.
pub(super) struct Background {
    generator: Option<JoinHandle<()>>,
    progress: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Background {
    /// Starts the generator (with `generator`: its topic and partitions) and the progress line
    /// (every `progress`, when not zero).
    ///
    /// # Errors
    ///
    /// When a thread cannot start; the threads already started are stopped first.
    pub(super) fn start(
        context: &Context<'_>,
        generator: Option<Generate<'_>>,
        progress: Duration,
    ) -> Result<Self> {
        let mut started = Background {
            generator: None,
            progress: None,
        };
        let result = started.spawn(context, generator, progress);
        match result {
            Ok(()) => Ok(started),
            Err(error) => {
                context.stop.store(true, Ordering::SeqCst);
                started.finish();
                Err(error)
            }
        }
    }

    fn spawn(
        &mut self,
        context: &Context<'_>,
        generator: Option<Generate<'_>>,
        progress: Duration,
    ) -> Result<()> {
        let spawn_error = |what| move |source| Error::Spawn { what, source };
        if let Some(Generate {
            spec,
            schema,
            topic,
            partitions,
        }) = generator
        {
            let (bootstrap, topic) = (context.bootstrap.clone(), topic.to_owned());
            let (stop, stats) = (context.stop.clone(), context.stats.clone());
            let events = SchemaGenerator::new(&schema, spec.seed).with_interactions(
                spec.interactions,
                spec.interaction_strength,
                spec.seed,
            );
            self.generator = Some(
                std::thread::Builder::new()
                    .name("millrace-generator".into())
                    .spawn(move || {
                        let target = (&bootstrap, topic.as_str(), partitions);
                        generate(target, events, &spec, &stop, &stats)
                    })
                    .map_err(spawn_error("the generator"))?,
            );
        }
        if !progress.is_zero() {
            let (source, stats) = (context.source.clone(), context.stats.clone());
            let done = Arc::new(AtomicBool::new(false));
            let until = done.clone();
            let handle = std::thread::Builder::new()
                .name("millrace-progress".into())
                .spawn(move || report_progress(&*source, progress, &until, &stats))
                .map_err(spawn_error("the progress line"))?;
            self.progress = Some((handle, done));
        }
        Ok(())
    }

    /// Waits for the threads once the job's stop flag is set (the progress line is told to end
    /// first, as the dataflow has).
    pub(super) fn finish(self) {
        if let Some((_, done)) = &self.progress {
            done.store(true, Ordering::SeqCst);
        }
        if let Some(generator) = self.generator {
            let _ = generator.join();
        }
        if let Some((handle, _)) = self.progress {
            let _ = handle.join();
        }
    }
}

/// Produces `events` to `topic` of `bootstrap` (its `partitions`) at the spec's rate until
/// `stop` or the spec's count.
fn generate(
    (bootstrap, topic, partitions): (&Brokers, &str, i32),
    mut events: SchemaGenerator,
    spec: &GeneratorSpec,
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
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && (spec.rows == 0 || sent < spec.rows) {
        let delay = limit.delay(sent);
        if !delay.is_zero() {
            // Sleep in slices, so that a slow rate does not delay a stop.
            std::thread::sleep(delay.min(Duration::from_millis(50)));
            continue;
        }
        if let Err(error) = producer.send(events.next_record().record.as_bytes()) {
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

/// Logs the progress line every `interval` until `done`, with the lag against the source's
/// partitions' ends when it knows them.
fn report_progress(source: &dyn Source, interval: Duration, done: &AtomicBool, stats: &JobStats) {
    let mut last = (Instant::now(), 0u64);
    while !done.load(Ordering::Relaxed) {
        let deadline = Instant::now() + interval;
        while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(high) = source.ends() {
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
        log_progress(stats, rate);
    }
}

/// Logs the progress: the human line in text logs, its figures as fields in JSON logs.
fn log_progress(stats: &JobStats, events_per_sec: f64) {
    if !crate::logs::structured() {
        tracing::info!(target: "millrace::progress", "{}", stats.progress_line(events_per_sec));
        return;
    }
    let quality = stats.trainer.summary();
    let lag = stats.lag.load(Ordering::Relaxed);
    let retrain = &stats.retrain;
    let deep = retrain.enabled.load(Ordering::Relaxed);
    tracing::info!(
        target: "millrace::progress",
        events_per_sec = events_per_sec.round(),
        learned = stats.trainer.learned.load(Ordering::Relaxed),
        dead_letters = stats.dead_letters(),
        lag = (lag >= 0).then_some(lag),
        auc = quality.auc,
        window_auc = quality.window_auc,
        logloss = quality.logloss,
        model_version = stats.trainer.model_version.load(Ordering::Relaxed),
        deep_version = deep.then(|| retrain.version.load(Ordering::Relaxed)),
        deep_training = deep.then(|| retrain.training.load(Ordering::Relaxed)),
        "progress"
    );
}
