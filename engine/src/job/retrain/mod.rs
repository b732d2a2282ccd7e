//! The retraining stage (`[retrain]`): a thread beside the dataflow that periodically trains a
//! deep model on the sample buffer and publishes it behind the evaluation gate. It reads only
//! whole segments from disk, so the dataflow never waits on it.
//!
//! In a cluster every process runs the stage as one rank of a data-parallel group: the ranks
//! meet over a TCP ring (each process's timely port plus `ring_port_offset`), agree at every
//! poll on whether to run ([`agree`]), each trains on its own workers' rows, and rank 0 judges
//! and publishes ([`run`]).

mod agree;
mod run;

use crate::metrics::{JobStats, RetrainStats};
use crate::spec::{JobSpec, RetrainSpec};
use crate::Cluster;
use agree::{Next, Status};
use millrace_deep::collective::{AllReduce, Ring, RingLimits};
use millrace_deep::Trainer;
use millrace_models::{FeatureSpec, Registry};
use run::Outcome;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the thread looks at the buffered rows' count and the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What a run needs.
struct Stage {
    spec: RetrainSpec,
    /// The online model's name (its FeatureMap versions are the rows').
    online: String,
    /// The name deep versions go under.
    published: String,
    features: FeatureSpec,
    registry: Registry,
    /// This process's workers' buffer directories.
    dirs: Vec<PathBuf>,
    stats: Arc<JobStats>,
    /// Set when the job is stopped: a run in progress ends at its next step.
    cancel: Arc<AtomicBool>,
}

/// This process's rank of the stage's ring, and every rank's address (its own among them,
/// where it listens).
#[derive(Clone, Debug)]
struct RingPlan {
    rank: usize,
    peers: Vec<SocketAddr>,
}

/// The running stage.
pub(super) struct Retrainer {
    thread: JoinHandle<()>,
    /// Set to end the thread; with `true` beside it, after one last run.
    end: Arc<(Mutex<Option<bool>>, Condvar)>,
    /// Ends a run in progress.
    cancel: Arc<AtomicBool>,
}

impl Retrainer {
    /// Starts the stage of `spec` (`None` without `[retrain]` and `[samples]`), training on
    /// the buffers of this process's workers `local`: alone in a job of one process, as rank
    /// `cluster.process` of every process's stage in a cluster.
    pub(super) fn start(
        spec: &JobSpec,
        registry: &Registry,
        local: &[usize],
        cluster: Option<&Cluster>,
        stats: &Arc<JobStats>,
    ) -> Option<Retrainer> {
        let retrain = spec.retrain.clone()?;
        let samples = spec.samples.as_ref()?;
        let dir = samples.directory(spec.checkpoint.as_ref())?;
        let ring = match cluster.filter(|c| c.hosts.len() > 1) {
            Some(cluster) => Some(
                ring_plan(cluster, retrain.ring_port_offset)
                    .map_err(|why| tracing::error!(%why, "the retraining stage cannot start"))
                    .ok()?,
            ),
            None => None,
        };
        let stage = Stage {
            published: retrain.published_name(&spec.name),
            spec: retrain,
            online: spec.name.clone(),
            features: spec.features.clone(),
            registry: registry.clone(),
            dirs: local
                .iter()
                .map(|w| dir.join(format!("worker-{w}")))
                .collect(),
            stats: stats.clone(),
            cancel: Arc::default(),
        };
        let cancel = stage.cancel.clone();
        stats.retrain.enabled.store(true, Ordering::Relaxed);
        let end = Arc::new((Mutex::new(None), Condvar::new()));
        let signal = end.clone();
        let thread = std::thread::Builder::new()
            .name("millrace-retrain".to_owned())
            .spawn(move || stage.start(ring, &signal))
            .map_err(|error| tracing::error!(%error, "the retraining stage cannot start"))
            .ok()?;
        Some(Retrainer {
            thread,
            end,
            cancel,
        })
    }

    /// Ends the stage and waits for it: after one last run when `last_run` (the input ended),
    /// else at once, a run in progress ending at its next training step.
    pub(super) fn finish(self, last_run: bool) {
        if !last_run {
            self.cancel.store(true, Ordering::Relaxed);
        }
        let (lock, wake) = &*self.end;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(last_run);
        wake.notify_all();
        if self.thread.join().is_err() {
            tracing::error!("the retraining stage panicked");
        }
    }
}

/// The ring of a cluster's stage: every process's timely host, at its port plus `offset`
/// (none of them a timely port).
fn ring_plan(cluster: &Cluster, offset: u16) -> Result<RingPlan, String> {
    let timely = cluster
        .hosts
        .iter()
        .map(|host| {
            host.to_socket_addrs()
                .map_err(|e| format!("{host}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host} has no address"))
        })
        .collect::<Result<Vec<SocketAddr>, String>>()?;
    let peers = timely
        .iter()
        .map(|addr| {
            let port = addr.port().checked_add(offset).ok_or_else(|| {
                format!("{addr}: its port plus `ring_port_offset` {offset} is past 65535")
            })?;
            let ring = SocketAddr::new(addr.ip(), port);
            if timely.contains(&ring) {
                return Err(format!(
                    "{addr}: its port plus `ring_port_offset` {offset} is another process's timely port"
                ));
            }
            Ok(ring)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let rank = cluster.process;
    if rank >= peers.len() {
        return Err(format!("process {rank} of {} hosts", peers.len()));
    }
    Ok(RingPlan { rank, peers })
}

impl Stage {
    /// Runs until ended: alone, or as a rank of the ring `ring` names, joining it again
    /// whenever it breaks (a peer gone, or a failure of one rank alone, which leaves the
    /// ranks out of step).
    fn start(self, ring: Option<RingPlan>, end: &(Mutex<Option<bool>>, Condvar)) {
        millrace_deep::set_threads(self.spec.threads);
        let Some(plan) = ring else {
            if let Err(error) = self.run(None, &mut Schedule::new(), end) {
                tracing::error!(%error, "the retraining stage stopped; the online models go on");
            }
            return;
        };
        // Kept across rejoins: a rank that joins again runs on the same schedule, and a run
        // that failed is not tried again before it is due again.
        let mut schedule = Schedule::new();
        while let Some(mut ring) = self.join(&plan, end) {
            let comm: &mut dyn AllReduce = &mut ring;
            match self.run(Some(comm), &mut schedule, end) {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(%error, "the retraining stage is out of step with its peers; joining them again");
                    self.stats.retrain.say("rejoining".to_owned());
                }
            }
        }
    }

    /// This rank of the ring `plan` names, once every rank has joined: tried again (each try
    /// waits [`JOIN_TRY`] for the peers, so that the job's end is seen that soon) until it
    /// forms or the job ends, so that processes started apart still train together.
    fn join(&self, plan: &RingPlan, end: &(Mutex<Option<bool>>, Condvar)) -> Option<Ring> {
        let ended = || {
            let (lock, wake) = end;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = wake
                .wait_timeout(guard, POLL)
                .unwrap_or_else(|e| e.into_inner());
            guard.is_some()
        };
        let mut said = String::new();
        while !ended() {
            match connect(plan) {
                Ok(ring) => return Some(ring),
                Err(error) => {
                    // Once per kind of failure, not once per try.
                    let error = error.to_string();
                    if error != said {
                        tracing::warn!(%error, "the retraining stage is waiting for its peers");
                        said = error;
                    }
                    self.stats.retrain.say("waiting for peers".to_owned());
                }
            }
        }
        None
    }

    /// Runs every `every_seconds` or `every_rows` new rows (of every rank) until ended, the
    /// ranks deciding together at every poll.
    fn run(
        &self,
        mut comm: Option<&mut (dyn AllReduce + '_)>,
        schedule: &mut Schedule,
        end: &(Mutex<Option<bool>>, Condvar),
    ) -> Result<(), crate::Error> {
        let every = Duration::from_secs(self.spec.every_seconds);
        loop {
            let (lock, wake) = end;
            let ended = {
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = wake
                    .wait_timeout(guard, POLL)
                    .unwrap_or_else(|e| e.into_inner());
                *guard
            };
            let mine = Status {
                appended: self.stats.samples.appended.load(Ordering::Relaxed),
                since: schedule.since,
                ended,
                due: schedule.last.elapsed() >= every,
            };
            let all = match comm.as_deref_mut() {
                Some(comm) => agree::statuses(comm, mine)?,
                None => vec![mine],
            };
            match agree::decide(&all, self.spec.every_rows) {
                Next::Wait => {}
                Next::Stop => return Ok(()),
                Next::RunLast => return self.run_once(comm),
                Next::Run => {
                    // Before the run, so that one that fails waits for its turn again.
                    schedule.last = Instant::now();
                    schedule.since = agree::appended(&all);
                    self.run_once(comm.as_deref_mut())?;
                }
            }
        }
    }

    /// One run, its outcome counted and said. A panic inside libtorch is a failed run, not
    /// the end of the stage; with several ranks, a failure of this rank alone (which leaves it
    /// out of step with the others) is returned.
    fn run_once(&self, comm: Option<&mut (dyn AllReduce + '_)>) -> Result<(), crate::Error> {
        let stats: &RetrainStats = &self.stats.retrain;
        stats.runs.fetch_add(1, Ordering::Relaxed);
        stats.training.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let ranked = comm.is_some();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.train_and_judge(comm)))
                .unwrap_or_else(|_| {
                    Err(crate::Error::Retrain(
                        "the run panicked (see the message above)".to_owned(),
                    ))
                });
        stats.training.store(false, Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Every rank agrees on a cancellation, step by step: the ranks stay in step.
            Err(crate::Error::Deep(millrace_deep::DeepError::Cancelled)) => {
                Outcome::Failed("cancelled".to_owned())
            }
            Err(error) if ranked => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.say("failed".to_owned());
                return Err(error);
            }
            Err(error) => Outcome::Failed(error.to_string()),
        };
        match outcome {
            Outcome::Published {
                version,
                quality,
                current,
            } => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                stats.version.store(version, Ordering::Relaxed);
                tracing::info!(model = %self.published, version, auc = ?quality.auc, logloss = ?quality.logloss, current_auc = ?current.auc, current_logloss = ?current.logloss, seconds, "a retrained deep version passed the gate and is published");
                stats.say(format!("v{version} published"));
            }
            Outcome::Refused { reasons } => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(model = %self.published, reasons = %reasons.join("; "), seconds, "the gate refused a retrained candidate; the current version keeps serving");
                stats.say("refused".to_owned());
            }
            Outcome::Skipped(why) => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = %self.published, why, "retraining skipped");
                stats.say("waiting".to_owned());
            }
            Outcome::Failed(error) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(model = %self.published, %error, "a retraining run failed");
                stats.say("failed".to_owned());
            }
        }
        Ok(())
    }

    /// Records the host-resident table's figures of a run that trained for `seconds`.
    fn record_table(&self, trainer: &Trainer, seconds: f64) {
        let Some(table) = trainer.table_stats() else {
            return;
        };
        let stats = &self.stats.retrain;
        stats.gathered.fetch_add(table.gathered, Ordering::Relaxed);
        let rate = table.gathered as f64 / seconds.max(1e-9);
        stats.gathered_rate.store(rate.to_bits(), Ordering::Relaxed);
        stats
            .row_bytes
            .store(table.row_bytes as u64, Ordering::Relaxed);
        stats.table_rows.store(table.rows as u64, Ordering::Relaxed);
    }
}

/// When the stage last decided to run.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    /// When.
    last: Instant,
    /// The rows appended in all then.
    since: u64,
}

impl Schedule {
    fn new() -> Self {
        Schedule {
            last: Instant::now(),
            since: 0,
        }
    }
}

/// How long one try to form the ring waits for the peers.
const JOIN_TRY: Duration = Duration::from_secs(10);

/// This process's rank of the ring `plan` names, once every rank has joined (listening on its
/// own address, the one the others dial), waiting at most [`JOIN_TRY`].
fn connect(plan: &RingPlan) -> Result<Ring, millrace_deep::DeepError> {
    let own = plan.peers[plan.rank];
    let listener = TcpListener::bind(own)
        .map_err(|e| millrace_deep::DeepError::Collective(format!("listening on {own}: {e}")))?;
    let limits = RingLimits {
        connect: JOIN_TRY,
        ..RingLimits::default()
    };
    Ring::connect(plan.rank, &plan.peers, listener, limits)
}
