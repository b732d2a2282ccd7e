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

mod background;
mod checkpointing;
mod dataflow;
mod http_task;
mod keeper;
pub mod peers;
mod probes;
#[cfg(feature = "deep")]
mod retrain;
mod run;
mod sinks;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::metrics::JobStats;
use crate::spec::JobSpec;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where and how a job runs: placement comes from flags or the environment, not the job file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Timely worker threads in this process.
    pub workers: usize,
    /// The cluster this process belongs to; `None` for a job of one process.
    pub cluster: Option<Cluster>,
    /// The source types, decoders and sink types the job's `[source] type`, `[schema]
    /// decoder` and `[sinks]` tables are looked up in.
    pub catalog: Catalog,
    /// Start afresh when the job's checkpoints cannot be restored (none reads back whole, or
    /// the processes have none in common), as Flink's `--allowNonRestoredState`; without it
    /// the job refuses to start and leaves them as they are.
    pub allow_fresh_start: bool,
    /// Serve this process's metrics, `/healthz` and `/readyz` on this address (`run
    /// --metrics-bind`); every process of a cluster may have its own.
    pub metrics_bind: Option<SocketAddr>,
    /// In a cluster: how long a peer may stop answering before its connection fails, and the
    /// process ends (by [`peers::PEER_LOST_SIGNAL`]; so does every other).
    pub peer_timeout: Duration,
    /// In a cluster: how long a process waits at start for every peer to connect.
    pub peer_wait: Duration,
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
            catalog: Catalog::builtin(),
            allow_fresh_start: false,
            metrics_bind: None,
            peer_timeout: Duration::from_secs(10),
            peer_wait: Duration::from_secs(600),
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
    /// Records this run's source skipped because the broker no longer had them
    /// (`[source] on_missing_offsets = "skip"`).
    pub source_records_skipped: u64,
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
    /// Deep versions the retraining stage published.
    pub deep_published: u64,
    /// Retrained candidates the gate refused.
    pub deep_refused: u64,
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
    /// A checkpointed job's sources stop where they are ([`millrace_operators::Stop::Interrupt`]): the epochs still
    /// open are left to the job restarted from its newest checkpoint.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the job thread reports once everything but the dataflow is up.
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
        let problems = spec.problems_in(&options.catalog);
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("millrace-job".into())
                .spawn(move || run::run(spec, options, stop, started_tx))
                .map_err(|source| Error::Spawn {
                    what: "the job thread",
                    source,
                })?
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
                Ok(Ok(_)) => Err(Error::EndedEarly("the job ended before it started")),
                Err(_) => Err(Error::Panicked {
                    what: "the job thread",
                }),
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
        self.thread.join().map_err(|_| Error::Panicked {
            what: "the job thread",
        })?
    }
}

impl JobReport {
    /// The job's figures as of now.
    fn now(stats: &JobStats, restored_epoch: Option<u64>) -> Self {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        JobReport {
            source_records: load(&stats.source.records),
            source_records_skipped: load(&stats.source_skipped),
            decoded: stats.decoded(),
            dead_letters: stats.dead_letters(),
            learned: load(&stats.trainer.learned),
            model_version: load(&stats.trainer.model_version),
            progressive_auc: stats.trainer.auc(),
            progressive_logloss: stats.trainer.logloss(),
            restored_epoch,
            checkpoints_written: stats.checkpoints.get().map_or(0, |c| c.figures().written),
            deep_published: load(&stats.retrain.published),
            deep_refused: load(&stats.retrain.refused),
        }
    }
}
