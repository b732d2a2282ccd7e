//! Consistent checkpoints of a dataflow's state, epoch by epoch.
//!
//! Every stateful operator of a worker is a *part* of the checkpoint. A part's state is the
//! result of processing its input epoch by epoch, so at any moment it is "the state after
//! epoch `c`" for every `c` from the last epoch it processed data of (`lo`) up to the epoch
//! before its input frontier (`hi`): nothing in between changed it. A part tells its
//! [`Part`] handle that range each time it has processed what its frontier allows; when the
//! range reaches a checkpoint epoch the part serializes its state and offers it, valid for the
//! whole range. A checkpoint of epoch `c` is complete when every part of every worker of the
//! process has offered a state valid for `c`; the [`Collector`] then hands all of them to its
//! [`Persist`] at once (one RocksDB write batch in the engine).
//!
//! Which epochs are checkpoints is decided once per process ([`Choice`]): by the first part
//! that reaches them with data to process next, at least an interval of processing time apart,
//! or (for a cluster, whose processes must checkpoint the same epochs) every `n`-th epoch. A
//! part that moves on without data ([`Part::progress`], an idle source following the wall
//! clock) decides nothing, and offers for what the others chose. Every part's ranges together
//! cover every epoch it passes, so each part offers for every chosen epoch, whether its
//! frontier crossed it one epoch at a time or in one jump. The end of the input (an empty
//! frontier) is always one, [`FINAL`].
//!
//! On restart, each part reads back its own state ([`Part::take_restored`]) and the epoch it
//! is valid for, and goes on from the epoch after it.
//!
//! A checkpoint that cannot be written (a full disk) is not the end of checkpointing: the next
//! chosen epoch is tried, and the newest failed checkpoint is kept. Once `max_failures` writes
//! have failed in a row, the collector holds the sources back ([`Part::held_back`]: they read
//! nothing new) and tries that checkpoint again every [`RETRY_EVERY`] until it is written, so
//! a job never runs on far past its last checkpoint.
//!
//! Each stateful operator declares its part (its name and the state it holds) beside its code,
//! and [`crate::parts`] lists a job's parts; operators are given their parts explicitly,
//! through the [`crate::Checkpoints`] they are built with.

use crate::durations::Durations;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::progress::frontier::AntichainRef;

/// The epoch of the checkpoint taken when the input is complete.
pub const FINAL: u64 = u64::MAX - 1;

/// The most epochs [`Choice::EveryNth`] chooses in one jump of the frontier (the last ones).
const EVERY_NTH_MOST: usize = 64;

/// How often a collector holding the sources back tries its failed checkpoint again.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The checkpoint writes that may fail in a row before the sources are held back, unless the
/// collector is told otherwise.
pub const DEFAULT_MAX_FAILURES: u32 = 3;

/// One part's state in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartState {
    /// The worker the part belongs to.
    pub worker: usize,
    /// The part's name, the same on every worker.
    pub name: String,
    /// The last epoch the part processed data of.
    pub lo: u64,
    /// The serialized state.
    pub bytes: Vec<u8>,
}

/// A complete checkpoint: every part of every worker of the process, valid for one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The epoch the state is the result of (everything up to and including it), or [`FINAL`].
    pub epoch: u64,
    /// The first epoch the restored job goes on with: `epoch + 1`, or after a [`FINAL`]
    /// checkpoint the epoch after the last one any part processed.
    pub resume_epoch: u64,
    /// The parts, by worker and name.
    pub parts: Vec<PartState>,
}

impl Checkpoint {
    /// The state of part `name` of `worker`.
    pub fn part(&self, worker: usize, name: &str) -> Option<&PartState> {
        self.parts
            .iter()
            .find(|p| p.worker == worker && p.name == name)
    }
}

/// How a process chooses its checkpoint epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The epoch the first part reaches once this much processing time has passed since the
    /// last chosen one: as often as the interval allows, whatever the epochs' pace.
    Interval(Duration),
    /// Every epoch `e` with `e % n == n - 1`: the same epochs in every process of a cluster.
    EveryNth(u64),
}

/// Where complete checkpoints go.
pub trait Persist: Send {
    /// Stores `checkpoint` durably, all parts at once. Returns the epoch of the oldest
    /// checkpoint the store keeps once it is written (its own when it keeps no older one): the
    /// state a restore can still go back to.
    ///
    /// # Errors
    ///
    /// Why it could not be stored; the collector logs it, counts it, and goes on (the next
    /// checkpoint may succeed).
    fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, crate::BoxError>;
}

/// Figures of the checkpoints, for the metrics endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CheckpointFigures {
    /// Checkpoints written.
    pub written: u64,
    /// Checkpoints that could not be written.
    pub failed: u64,
    /// The epoch of the newest written checkpoint.
    pub last_epoch: Option<u64>,
    /// The epoch of the oldest checkpoint the store kept after the newest write.
    pub oldest_kept: Option<u64>,
    /// Bytes of the newest written checkpoint's parts.
    pub last_bytes: u64,
    /// Seconds the newest write took.
    pub last_seconds: f64,
    /// Writes that failed since the last one that succeeded.
    pub failed_in_a_row: u32,
}

struct Offer {
    lo: u64,
    hi: u64,
    bytes: Arc<Vec<u8>>,
}

struct State {
    persist: Box<dyn Persist>,
    /// Checkpoint epochs decided so far, and the last epoch decided on.
    chosen: BTreeSet<u64>,
    decided_through: Option<u64>,
    last_chosen_at: Option<Instant>,
    offers: BTreeMap<(usize, String), Vec<Offer>>,
    /// The last epoch each part's state covers, as it last said.
    settled: BTreeMap<(usize, String), u64>,
    figures: CheckpointFigures,
    /// How long each checkpoint written took.
    durations: Durations,
    /// The newest checkpoint that could not be written, and when it was last tried.
    failed: Option<(Checkpoint, Instant)>,
    /// Failed writes in a row past which the sources are held back.
    max_failures: u32,
}

/// Gathers the parts' offers of one process and persists each complete checkpoint.
#[derive(Clone)]
pub struct Collector {
    workers: Vec<usize>,
    parts: Vec<String>,
    choice: Choice,
    restored: Option<Arc<Checkpoint>>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("workers", &self.workers)
            .field("parts", &self.parts)
            .field("choice", &self.choice)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector for the parts named `parts` on each of `workers` (this process's worker
    /// indexes), choosing checkpoint epochs by `choice`, persisting to `persist`, restoring
    /// from `restored`.
    pub fn new(
        workers: Vec<usize>,
        parts: &[&str],
        choice: Choice,
        persist: Box<dyn Persist>,
        restored: Option<Checkpoint>,
    ) -> Self {
        Collector {
            workers,
            parts: parts.iter().map(|p| (*p).to_owned()).collect(),
            choice,
            restored: restored.map(Arc::new),
            state: Arc::new(Mutex::new(State {
                persist,
                chosen: BTreeSet::new(),
                decided_through: None,
                last_chosen_at: None,
                offers: BTreeMap::new(),
                settled: BTreeMap::new(),
                figures: CheckpointFigures::default(),
                durations: Durations::default(),
                failed: None,
                max_failures: DEFAULT_MAX_FAILURES,
            })),
        }
    }

    /// Holds the sources back once `max` checkpoint writes in a row have failed (0 is taken
    /// for 1).
    pub fn with_max_failures(self, max: u32) -> Self {
        self.lock().max_failures = max.max(1);
        self
    }

    /// Whether the sources are held back: the last writes failed, and the newest failed
    /// checkpoint is still not written. Tries it again first when it is due.
    pub fn held_back(&self) -> bool {
        let mut state = self.lock();
        if state.figures.failed_in_a_row < state.max_failures {
            return false;
        }
        let due = state
            .failed
            .as_ref()
            .is_some_and(|(_, tried)| tried.elapsed() >= RETRY_EVERY);
        if due {
            if let Some((checkpoint, _)) = state.failed.take() {
                Self::persist(&mut state, checkpoint);
            }
        }
        state.figures.failed_in_a_row >= state.max_failures
    }

    /// The handle of part `name` on `worker`.
    ///
    /// # Panics
    ///
    /// When `name` is not one of the collector's parts: the dataflow and the collector were
    /// built from different lists, a bug of the caller.
    pub fn part(&self, worker: usize, name: &str) -> Part {
        assert!(
            self.parts.iter().any(|p| p == name),
            "checkpoint part {name} was not declared"
        );
        let restored = self.restored.as_ref().and_then(|checkpoint| {
            checkpoint
                .part(worker, name)
                .map(|p| (checkpoint.epoch, checkpoint.resume_epoch, p.bytes.clone()))
        });
        Part {
            collector: self.clone(),
            worker,
            name: name.to_owned(),
            offered_through: restored.as_ref().map(|(_, resume, _)| resume - 1),
            progressed_for: None,
            restored,
        }
    }

    /// The epoch the job resumes with: 0 for a fresh start.
    pub fn resume_epoch(&self) -> u64 {
        self.restored.as_ref().map_or(0, |c| c.resume_epoch)
    }

    /// The epoch of the restored checkpoint, if the job restored one.
    pub fn restored_epoch(&self) -> Option<u64> {
        self.restored.as_ref().map(|c| c.epoch)
    }

    /// The figures so far.
    pub fn figures(&self) -> CheckpointFigures {
        self.lock().figures
    }

    /// How long each checkpoint written took.
    pub fn durations(&self) -> Durations {
        self.lock().durations.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The least epoch every part of every worker has settled, once all have said.
    pub fn slowest(&self) -> Option<u64> {
        let state = self.lock();
        if state.settled.len() < self.workers.len() * self.parts.len() {
            return None;
        }
        state.settled.values().min().copied()
    }

    fn settle(&self, worker: usize, name: &str, hi: u64) {
        let mut state = self.lock();
        let settled = state.settled.entry((worker, name.to_owned())).or_insert(hi);
        *settled = (*settled).max(hi);
    }

    /// Decides every epoch up to `hi` and returns whether one in `from..=hi` is a checkpoint.
    fn wanted(&self, from: u64, hi: u64) -> bool {
        let mut state = self.lock();
        if state.decided_through.is_none_or(|d| d < hi) {
            let start = state.decided_through.map_or(from, |d| d + 1);
            let chosen = match self.choice {
                _ if hi == FINAL => Some(FINAL),
                Choice::Interval(interval) => state
                    .last_chosen_at
                    .is_none_or(|at| at.elapsed() >= interval)
                    .then_some(hi),
                Choice::EveryNth(n) => {
                    // Every epoch `e` in `start..=hi` with `e % n == n - 1` (the last
                    // EVERY_NTH_MOST of a long jump), so that processes whose frontiers move in
                    // different steps choose the same epochs.
                    let n = n.max(1);
                    let mut e = (hi + 1) / n * n;
                    for _ in 0..EVERY_NTH_MOST {
                        match e.checked_sub(1).filter(|&e| e >= start) {
                            Some(epoch) => {
                                state.chosen.insert(epoch);
                            }
                            None => break,
                        }
                        e -= n;
                    }
                    None
                }
            };
            if let Some(epoch) = chosen {
                state.chosen.insert(epoch);
                state.last_chosen_at = Some(Instant::now());
            }
            state.decided_through = Some(hi);
        }
        state.chosen.range(from..=hi).next().is_some()
    }

    /// The newest epoch chosen in `lo..=hi` and not written yet.
    fn newest_chosen(&self, lo: u64, hi: u64) -> Option<u64> {
        self.lock().chosen.range(lo..=hi).next_back().copied()
    }

    fn offer(&self, worker: usize, name: &str, lo: u64, hi: u64, bytes: Vec<u8>) {
        let mut state = self.lock();
        state
            .offers
            .entry((worker, name.to_owned()))
            .or_default()
            .push(Offer {
                lo,
                hi,
                bytes: Arc::new(bytes),
            });
        // Every chosen epoch every part covers, oldest first: in a cluster, each process must
        // write each of them, so that they have epochs in common.
        while let Some(epoch) = state.chosen.iter().copied().find(|&epoch| {
            self.workers.iter().all(|&w| {
                self.parts.iter().all(|p| {
                    state
                        .offers
                        .get(&(w, p.clone()))
                        .is_some_and(|offers| offers.iter().any(|o| o.lo <= epoch && epoch <= o.hi))
                })
            })
        }) {
            self.write(&mut state, epoch);
        }
    }

    /// Persists the checkpoint of `epoch`, which every part covers.
    fn write(&self, state: &mut State, epoch: u64) {
        let mut parts = Vec::new();
        for &w in &self.workers {
            for p in &self.parts {
                if let Some(offer) = state
                    .offers
                    .get(&(w, p.clone()))
                    .and_then(|offers| offers.iter().find(|o| o.lo <= epoch && epoch <= o.hi))
                {
                    parts.push(PartState {
                        worker: w,
                        name: p.clone(),
                        lo: offer.lo,
                        bytes: offer.bytes.as_ref().clone(),
                    });
                }
            }
        }
        let resume_epoch = if epoch == FINAL {
            parts
                .iter()
                .map(|p| p.lo)
                .max()
                .unwrap_or(0)
                .saturating_add(1)
        } else {
            epoch + 1
        };
        let checkpoint = Checkpoint {
            epoch,
            resume_epoch,
            parts,
        };
        // What this checkpoint makes obsolete: earlier epochs, and offers that end before it.
        state.chosen.retain(|&c| c > epoch);
        for offers in state.offers.values_mut() {
            offers.retain(|o| o.hi > epoch || (o.lo <= epoch && epoch <= o.hi));
        }
        Self::persist(state, checkpoint);
    }

    /// Writes `checkpoint`, keeping it to try again when that fails.
    fn persist(state: &mut State, checkpoint: Checkpoint) {
        let started = Instant::now();
        let bytes: usize = checkpoint.parts.iter().map(|p| p.bytes.len()).sum();
        let epoch = checkpoint.epoch;
        match state.persist.persist(&checkpoint) {
            Ok(oldest_kept) => {
                let figures = &mut state.figures;
                if figures.failed_in_a_row > 0 {
                    tracing::info!(
                        epoch,
                        failed = figures.failed_in_a_row,
                        "a checkpoint was written again after failed writes"
                    );
                }
                figures.written += 1;
                figures.last_epoch = Some(epoch);
                figures.oldest_kept = Some(oldest_kept.min(epoch));
                figures.last_bytes = bytes as u64;
                figures.last_seconds = started.elapsed().as_secs_f64();
                state.durations.observe(started.elapsed());
                figures.failed_in_a_row = 0;
                state.failed = None;
                tracing::debug!(epoch, bytes, "checkpoint written");
            }
            Err(error) => {
                state.figures.failed += 1;
                state.figures.failed_in_a_row += 1;
                let (failed, max) = (state.figures.failed_in_a_row, state.max_failures);
                if failed >= max {
                    tracing::error!(epoch, %error, failed, "a checkpoint could not be written; the sources wait until it is");
                } else {
                    tracing::error!(epoch, %error, failed, "a checkpoint could not be written; the next one is tried at its epoch");
                }
                state.failed = Some((checkpoint, Instant::now()));
            }
        }
    }
}

/// One part's handle: what it restores from, and where it offers its state.
pub struct Part {
    collector: Collector,
    worker: usize,
    name: String,
    offered_through: Option<u64>,
    /// The newest chosen epoch offered for by [`Part::progress`].
    progressed_for: Option<u64>,
    restored: Option<(u64, u64, Vec<u8>)>,
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("worker", &self.worker)
            .field("name", &self.name)
            .field("offered_through", &self.offered_through)
            .finish_non_exhaustive()
    }
}

impl Part {
    /// The restored state: the checkpoint's epoch, the epoch to resume with, and the bytes
    /// this part offered; `None` on a fresh start. Taken once.
    pub fn take_restored(&mut self) -> Option<(u64, u64, Vec<u8>)> {
        self.restored.take()
    }

    /// The epoch to resume with (0 on a fresh start).
    pub fn resume_epoch(&self) -> u64 {
        self.collector.resume_epoch()
    }

    /// The least epoch every part has settled (see [`Collector::slowest`]): how far a source
    /// may run ahead of the slowest operator.
    pub fn slowest(&self) -> Option<u64> {
        self.collector.slowest()
    }

    /// The newest checkpoint epoch written, for parts that act on it (committing offsets).
    pub fn written_through(&self) -> Option<u64> {
        self.collector.figures().last_epoch
    }

    /// The epoch of the oldest checkpoint the store still keeps, once one was written: for
    /// parts whose state refers to files that only older checkpoints list (deleted once no
    /// kept checkpoint is older than that).
    pub fn kept_from(&self) -> Option<u64> {
        self.collector.figures().oldest_kept
    }

    /// Whether a source must read nothing new: checkpoints keep failing (see
    /// [`Collector::held_back`], which this tries again when it is due).
    pub fn held_back(&self) -> bool {
        self.collector.held_back()
    }

    /// Says that the part's state is the state after every epoch in `lo..=hi`; calls
    /// `snapshot` and offers its bytes when that range reaches a checkpoint epoch not offered
    /// for yet.
    pub fn covers(&mut self, lo: u64, hi: u64, snapshot: impl FnOnce() -> Vec<u8>) {
        if hi < lo || self.offered_through.is_some_and(|o| o >= hi) {
            return;
        }
        self.collector.settle(self.worker, &self.name, hi);
        tracing::trace!(worker = self.worker, part = %self.name, lo, hi, "covers");
        let from = self.offered_through.map_or(lo, |o| lo.max(o + 1));
        if self.collector.wanted(from, hi) {
            self.collector
                .offer(self.worker, &self.name, lo, hi, snapshot());
        }
        self.offered_through = Some(hi);
    }

    /// Says, as [`Part::covers`], that the part's state is the state after every epoch in
    /// `lo..=hi`, but decides no checkpoint epochs: for progress with no data to process next
    /// (a source whose partitions are all idle, its frontier following the wall clock), which
    /// must not choose epochs far ahead of the parts still working through data. It offers
    /// whenever the range holds a chosen epoch it has not offered for; as the part processed
    /// nothing since `lo`, it can offer for epochs chosen after it passed them.
    pub fn progress(&mut self, lo: u64, hi: u64, snapshot: impl FnOnce() -> Vec<u8>) {
        if hi < lo {
            return;
        }
        self.collector.settle(self.worker, &self.name, hi);
        let newest = self.collector.newest_chosen(lo, hi);
        if let Some(epoch) = newest.filter(|&e| self.progressed_for.is_none_or(|p| p < e)) {
            self.collector
                .offer(self.worker, &self.name, lo, hi, snapshot());
            self.progressed_for = Some(epoch);
        }
    }
}

/// The last epoch every input is past, given their frontiers: the epoch before the least
/// frontier element, [`FINAL`] when every frontier is empty, `None` before epoch 0 is done.
pub fn settled_through(frontiers: &[AntichainRef<'_, u64>]) -> Option<u64> {
    let least = frontiers
        .iter()
        .filter_map(|f| f.iter().min().copied())
        .min();
    match least {
        None => Some(FINAL),
        Some(0) => None,
        Some(t) => Some(t - 1),
    }
}

/// The last epoch a part's state covers, given the epoch its frontiers settled and the first
/// epoch it holds unprocessed input of: `None` when that is not after epoch 0.
pub(crate) fn before_waiting(settled: u64, waiting: Option<u64>) -> Option<u64> {
    match waiting {
        Some(w) if w <= settled => w.checked_sub(1),
        _ => Some(settled),
    }
}

/// Serializes a part's state (JSON: the FeatureMap's types are internally tagged, which only a
/// self-describing format reads back; large numeric state goes in raw bytes, see
/// [`encode_with_floats`]).
pub fn encode<T: serde::Serialize + ?Sized>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// Reads back a part's state.
///
/// # Errors
///
/// [`PartError::State`] when the bytes are not a `T`: the checkpoint was made by another
/// version of the job.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PartError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// A checkpoint part that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// Its state is not the operator's.
    #[error("checkpoint part cannot be read: {0}")]
    State(#[from] serde_json::Error),
    /// It ends before its floats do.
    #[error("checkpoint part is truncated")]
    Truncated,
}

/// Serializes `state` followed by `floats` as raw little-endian numbers.
pub fn encode_with_floats<T: serde::Serialize + ?Sized>(state: &T, floats: &[f32]) -> Vec<u8> {
    let header = encode(state);
    let mut bytes = Vec::with_capacity(8 + header.len() + 4 * floats.len());
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for x in floats {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes
}

/// Reads back what [`encode_with_floats`] wrote.
///
/// # Errors
///
/// [`PartError`] when the bytes are not a `T` and whole floats.
pub fn decode_with_floats<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, Vec<f32>), PartError> {
    let (len, rest) = bytes.split_first_chunk::<8>().ok_or(PartError::Truncated)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| PartError::Truncated)?;
    if rest.len() < len || (rest.len() - len) % 4 != 0 {
        return Err(PartError::Truncated);
    }
    let (header, floats) = rest.split_at(len);
    let state = decode(header)?;
    let floats = floats
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((state, floats))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Memory(Arc<Mutex<Vec<Checkpoint>>>);

    impl Persist for Memory {
        fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, crate::BoxError> {
            let mut kept = self.0.lock().unwrap();
            kept.push(checkpoint.clone());
            Ok(kept[0].epoch)
        }
    }

    fn collector(min_interval: Duration) -> (Collector, Arc<Mutex<Vec<Checkpoint>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let collector = Collector::new(
            vec![0, 1],
            &["a", "b"],
            Choice::Interval(min_interval),
            Box::new(Memory(written.clone())),
            None,
        );
        (collector, written)
    }

    /// Fails while `full` is set, as a full disk does.
    struct Disk(
        Arc<Mutex<Vec<Checkpoint>>>,
        Arc<std::sync::atomic::AtomicBool>,
    );

    impl Persist for Disk {
        fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, crate::BoxError> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("no space left on device".into());
            }
            let mut kept = self.0.lock().unwrap();
            kept.push(checkpoint.clone());
            Ok(kept[0].epoch)
        }
    }

    #[test]
    fn failed_writes_hold_the_sources_back_until_one_is_written() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let full = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let collector = Collector::new(
            vec![0],
            &["a"],
            Choice::Interval(Duration::ZERO),
            Box::new(Disk(written.clone(), full.clone())),
            None,
        )
        .with_max_failures(2);
        let mut part = collector.part(0, "a");
        part.covers(0, 1, || b"@1".to_vec());
        assert!(!part.held_back(), "one failure is not two");
        part.covers(2, 3, || b"@3".to_vec());
        assert!(part.held_back());
        assert_eq!(collector.figures().failed_in_a_row, 2);
        // The disk has room again: the newest failed checkpoint is written at its next try.
        full.store(false, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(RETRY_EVERY);
        assert!(!part.held_back());
        let written = written.lock().unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(
            (written[0].epoch, &written[0].parts[0].bytes),
            (3, &b"@3".to_vec())
        );
        let figures = collector.figures();
        assert_eq!(
            (figures.written, figures.failed, figures.failed_in_a_row),
            (1, 2, 0)
        );
    }

    #[test]
    fn a_checkpoint_needs_every_part_of_every_worker() {
        let (collector, written) = collector(Duration::ZERO);
        let mut parts: Vec<Part> = [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
            .into_iter()
            .map(|(w, n)| collector.part(w, n))
            .collect();
        // Part (0, a) decides epoch 4; the others reach it in steps or in one jump.
        parts[0].covers(2, 4, || b"a0@4".to_vec());
        parts[1].covers(0, 1, || b"b0@1".to_vec());
        parts[2].covers(3, 9, || b"a1@3..9".to_vec());
        assert!(written.lock().unwrap().is_empty());
        parts[1].covers(1, 7, || b"b0@1..7".to_vec());
        assert!(written.lock().unwrap().is_empty());
        parts[3].covers(4, 4, || b"b1@4".to_vec());
        let written = written.lock().unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].epoch, 4);
        assert_eq!(written[0].resume_epoch, 5);
        assert_eq!(written[0].part(1, "a").unwrap().bytes, b"a1@3..9");
        assert_eq!(written[0].part(0, "b").unwrap().bytes, b"b0@1..7");
    }

    #[test]
    fn the_interval_spaces_checkpoints_and_the_end_is_always_one() {
        let (collector, written) = collector(Duration::from_secs(3600));
        let mut parts: Vec<Part> = [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
            .into_iter()
            .map(|(w, n)| collector.part(w, n))
            .collect();
        for (i, part) in parts.iter_mut().enumerate() {
            part.covers(0, 3, || vec![i as u8]);
        }
        for (i, part) in parts.iter_mut().enumerate() {
            part.covers(5, 8, || vec![i as u8 + 10]);
        }
        assert_eq!(written.lock().unwrap().len(), 1, "epoch 8 is too soon");
        for (i, part) in parts.iter_mut().enumerate() {
            part.covers(5 + i as u64, FINAL, || vec![i as u8 + 20]);
        }
        let written = written.lock().unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(written[1].epoch, FINAL);
        assert_eq!(written[1].resume_epoch, 9);
    }

    #[test]
    fn every_nth_chooses_the_same_epochs_however_the_frontier_moves() {
        let chosen = |steps: &[u64]| {
            let written = Arc::new(Mutex::new(Vec::new()));
            let collector = Collector::new(
                vec![0],
                &["a"],
                Choice::EveryNth(10),
                Box::new(Memory(written.clone())),
                None,
            );
            let mut part = collector.part(0, "a");
            let mut lo = 0;
            for &hi in steps {
                part.covers(lo, hi, Vec::new);
                lo = hi + 1;
            }
            let epochs: Vec<u64> = written.lock().unwrap().iter().map(|c| c.epoch).collect();
            epochs
        };
        assert_eq!(chosen(&[3, 9, 15, 29, 31]), vec![9, 19, 29]);
        assert_eq!(chosen(&[31]), vec![9, 19, 29]);
        assert_eq!(chosen(&[5, 8]), Vec::<u64>::new());
        // A long jump chooses its last EVERY_NTH_MOST.
        let jumped = chosen(&[10_000]);
        assert_eq!(jumped.len(), EVERY_NTH_MOST);
        assert_eq!(jumped.last(), Some(&9_999));
    }

    /// An idle worker's source moves on with the wall clock, far past the epochs the others
    /// are working through: that progress chooses nothing, and it offers for the epoch the
    /// others choose, which is then written.
    #[test]
    fn progress_without_data_decides_nothing() {
        let (collector, written) = collector(Duration::ZERO);
        let mut busy: Vec<Part> = ["a", "b"].map(|n| collector.part(0, n)).into();
        let mut idle: Vec<Part> = ["a", "b"].map(|n| collector.part(1, n)).into();
        for part in &mut idle {
            part.progress(0, 1_000_000, || b"idle".to_vec());
        }
        for part in &mut busy {
            part.covers(0, 4, || b"busy@4".to_vec());
        }
        assert!(written.lock().unwrap().is_empty());
        for part in &mut idle {
            part.progress(0, 1_000_001, || b"idle".to_vec());
        }
        let written = written.lock().unwrap();
        let epochs: Vec<u64> = written.iter().map(|c| c.epoch).collect();
        assert_eq!(epochs, vec![4]);
        assert_eq!(written[0].part(1, "a").unwrap().bytes, b"idle");
    }

    #[test]
    fn restored_parts_resume_after_their_epoch() {
        let restored = Checkpoint {
            epoch: 6,
            resume_epoch: 7,
            parts: vec![PartState {
                worker: 0,
                name: "a".into(),
                lo: 5,
                bytes: vec![1, 2],
            }],
        };
        let collector = Collector::new(
            vec![0],
            &["a"],
            Choice::Interval(Duration::ZERO),
            Box::new(Memory(Arc::default())),
            Some(restored),
        );
        let mut part = collector.part(0, "a");
        assert_eq!(part.resume_epoch(), 7);
        assert_eq!(part.take_restored(), Some((6, 7, vec![1, 2])));
        assert_eq!(part.take_restored(), None);
    }
}
