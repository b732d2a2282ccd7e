//! A partitioned source in event time: records go into epochs by their timestamps, per-partition
//! watermarks drive the frontier, and the read positions are checkpointed with the dataflow.
//!
//! Each partition's watermark is the largest event time it has shown so far. A record belongs
//! to the epoch of its partition's watermark after it (`max(watermark, timestamp) / span`):
//! in order within a partition, a record that comes late (with an older time than one before
//! it) joins the partition's current epoch. So a record's epoch depends on nothing but its own
//! partition's records before it: a replay from a checkpoint puts every record in the same epoch
//! as the first run did. The worker's frontier is the least watermark epoch over its active
//! partitions; a partition that has been read to its end and has shown no record for `idle` of
//! processing time stops holding it back. A partition not read to its end (a reader still
//! starting, records already in the topic and not read yet) holds it however long it is silent,
//! so that a slow start does not move the frontier past a backlog's event times; one silent so
//! for long is warned about. Records written after a partition's end are subject to `idle`
//! again. When every partition is idle (or the worker has none) the frontier moves past
//! everything read and then follows the wall clock, less `idle`, so that an idle worker does
//! not hold back the epochs of the others. A record of an idle partition that comes back behind
//! the frontier joins the frontier's epoch (counted as late).
//!
//! A record whose time is more than [`MAX_FUTURE`] ahead of the wall clock when it is read (a
//! producer's clock gone wrong) would move its partition's watermark, and with it every later
//! record of the partition, into an epoch the frontier does not reach for that long: it takes
//! its partition's watermark as its time instead (the wall clock's for a partition's first
//! record), joins the current epoch, and is counted.
//!
//! Records past the frontier wait in memory. Once a worker holds [`EventTime::hold_bytes`] of
//! them, its partitions ahead of the frontier are paused until the frontier's progress has
//! handed on half of that (watermark alignment), so that a partition holding the frontier (no
//! leader, a broker gone) does not let the others fill the memory.
//!
//! Pausing cannot bound what a partition holds in the frontier's own epoch when its event time
//! stops advancing (one constant timestamp, a clock stepped back, seconds sent as
//! milliseconds): its epoch never ends. So an epoch takes at most a share of the budget from
//! each partition ([`EventTime::hold_bytes`] over twice the worker's partitions): a record that
//! would pass it moves its partition's watermark to the start of the next epoch, which it joins
//! (counted in [`SourceStats::overflows`]), and the epoch it filled can end. Which records move
//! depends only on the partition's records before them, so a replay moves the same ones.
//!
//! Records are held until the frontier passes their epoch and then handed on in the order of
//! (partition, offset): what a worker sends of an epoch does not depend on how the reads of its
//! partitions interleaved. With a checkpoint after epoch `c`, each partition resumes at its first
//! record of an epoch after `c` (with the watermark it had just before that record).

use crate::checkpoint::{Collector, Part, PartError, FINAL};
use crate::part_spec::{Checkpoints, PartSpec};
use millrace_models::RawRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator;
use timely::dataflow::{Scope, StreamVec};

/// What one poll of a source found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Records were appended (possibly fewer than asked for); poll again soon.
    Records,
    /// Nothing was available now; poll again after a short pause.
    Idle,
    /// The source is exhausted: no more records will come.
    Done,
}

/// A reader of some partitions that can be polled without blocking.
pub trait PartitionReader {
    /// The partitions this reader owns.
    fn partitions(&self) -> Vec<i32>;
    /// Appends up to `max` records that are ready now to `out`.
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled;
    /// Moves partitions to the given next offsets (restoring a checkpoint).
    ///
    /// # Errors
    ///
    /// When the reader cannot be repositioned.
    fn seek(&mut self, positions: &[(i32, i64)]) -> Result<(), crate::BoxError>;
    /// Tells the broker the positions a written checkpoint holds (a consumer group's commit),
    /// so that standard tooling shows the job's lag. Best effort.
    fn commit(&mut self, positions: &[(i32, i64)]);
    /// Whether everything `partition` held when last asked has been read: only such a
    /// partition may go idle.
    fn at_end(&self, partition: i32) -> bool;
    /// Stops (`paused`) or resumes reading `partition`, which must then go on with its next
    /// record: the source pauses the partitions ahead of the frontier while it holds too much
    /// (see the module's documentation). Returns whether the partition is now as asked; the
    /// source asks again later when it is not. A reader that cannot pause reads on, holding
    /// more in memory.
    fn pause(&mut self, partition: i32, paused: bool) -> bool {
        let _ = partition;
        !paused
    }
}

/// A boxed reader reads as the reader in it does: how a job holds a source whose type it
/// learns from its catalog.
impl<R: PartitionReader + ?Sized> PartitionReader for Box<R> {
    fn partitions(&self) -> Vec<i32> {
        (**self).partitions()
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        (**self).poll(out, max)
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> Result<(), crate::BoxError> {
        (**self).seek(positions)
    }

    fn commit(&mut self, positions: &[(i32, i64)]) {
        (**self).commit(positions);
    }

    fn at_end(&self, partition: i32) -> bool {
        (**self).at_end(partition)
    }

    fn pause(&mut self, partition: i32, paused: bool) -> bool {
        (**self).pause(partition, paused)
    }
}

/// The default [`EventTime::hold_bytes`]: 256 MiB of records per worker.
pub const HOLD_BYTES: usize = 256 << 20;

/// How the source turns event time into epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTime {
    /// The span of one epoch, in milliseconds of event time.
    pub epoch_ms: u64,
    /// How long a partition read to its end may show no record before it stops holding the
    /// frontier back.
    pub idle: Duration,
    /// How many bytes of records past the frontier a worker may hold before it pauses its
    /// partitions ahead of the frontier ([`HOLD_BYTES`] in a job).
    pub hold_bytes: usize,
}

/// Live figures of a source, shared by the workers of a process.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Records handed on.
    pub records: AtomicU64,
    /// Records that came behind the frontier and joined a later epoch.
    pub late: AtomicU64,
    /// Records whose time was more than [`MAX_FUTURE`] ahead of the wall clock.
    pub future: AtomicU64,
    /// The least frontier epoch over the workers' sources, as last reported by worker 0.
    pub frontier: AtomicU64,
    /// Records that moved their partition into the next epoch because the epoch held its share
    /// of the budget (see the module's documentation).
    pub overflows: AtomicU64,
    /// The bytes of records the workers' sources hold, as each last reported, summed.
    pub held_bytes: AtomicU64,
    /// Per partition: records read and the event-time watermark (ms), by partition index.
    pub partitions: Vec<PartitionStats>,
    /// Why a worker's reader could not resume where the restored checkpoint says, when one
    /// could not: the job then stops, and fails with it.
    resume_failure: Mutex<Option<String>>,
}

/// Live figures of one partition.
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Records read.
    pub records: AtomicU64,
    /// The largest event time seen (ms since the Unix epoch).
    pub watermark_ms: AtomicU64,
    /// The next offset to read.
    pub next_offset: AtomicU64,
    /// 1 when the partition has been read to its end, else 0: a partition silent at 0 holds
    /// the event-time frontier.
    pub at_end: AtomicU64,
    /// 1 while the partition is paused, ahead of a frontier that holds too much back, else 0.
    pub paused: AtomicU64,
}

impl SourceStats {
    /// Figures for `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        SourceStats {
            partitions: (0..partitions).map(|_| PartitionStats::default()).collect(),
            ..SourceStats::default()
        }
    }

    /// Why a reader could not resume where the restored checkpoint says (the first reason),
    /// if one could not.
    pub fn resume_failure(&self) -> Option<String> {
        self.resume_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn fail_resume(&self, reason: String) {
        self.resume_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
    }
}

/// The source's checkpoint part: its partitions' positions and counters.
pub(crate) const SOURCE: PartSpec<SourceState> = PartSpec::new("source");

/// What a source checkpoints: where each partition resumes, and its counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceState {
    partitions: Vec<Resume>,
    records: u64,
    late: u64,
    #[serde(default)]
    future: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Resume {
    partition: i32,
    offset: i64,
    watermark_ms: Option<u64>,
}

/// One partition's clock.
#[derive(Debug)]
struct Clock {
    partition: i32,
    watermark_ms: Option<u64>,
    next_offset: i64,
    last_seen: Instant,
    /// For each held epoch, its first record's offset and the watermark before it.
    firsts: BTreeMap<u64, (i64, Option<u64>)>,
    /// Records read since the partition's figures were last reported.
    unreported: u64,
    /// Whether the reader has read the partition to its end, as of the last activation.
    at_end: bool,
    /// Whether a warning says that the partition holds the frontier (until its next record).
    stalled: bool,
    /// Whether the reader was told to pause the partition.
    paused: bool,
    /// The epoch the partition's last record joined, and the bytes of its records in it.
    filling: (u64, usize),
}

impl Clock {
    /// The clock of a partition that has shown nothing yet, as of `now`.
    fn new(partition: i32, now: Instant) -> Self {
        Clock {
            partition,
            watermark_ms: None,
            next_offset: 0,
            last_seen: now,
            firsts: BTreeMap::new(),
            unreported: 0,
            at_end: false,
            stalled: false,
            paused: false,
            filling: (0, 0),
        }
    }
}

/// The most records one activation reads, so that one source cannot starve the worker.
const MAX_PER_ACTIVATION: usize = 4096;
/// How many epochs a checkpointed source may run ahead of the slowest operator before it stops
/// reading: without it a catching-up job would read the whole backlog into memory, and every
/// checkpoint would wait for all of it to be processed.
const MAX_AHEAD: u64 = 32;
/// How long a source waits before polling again when nothing was ready.
const IDLE_BACKOFF: Duration = Duration::from_millis(2);
/// A partition silent this long (or ten idle spans, if longer) without being read to its end is
/// warned about: it holds the frontier.
const STALL_WARNING: Duration = Duration::from_secs(30);

/// The wall clock in milliseconds since the Unix epoch: the event time of records that carry
/// none.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The source's per-worker state machine, apart from timely.
struct Epochs {
    time: EventTime,
    clocks: Vec<Clock>,
    held: BTreeMap<u64, Vec<RawRecord>>,
    /// The bytes of the records in `held` (see [`held_bytes`]).
    held_bytes: usize,
    /// The bytes one partition may put into one epoch.
    epoch_share: usize,
    /// The `held_bytes` last added to [`SourceStats::held_bytes`].
    reported_held: usize,
    /// The least epoch that may still receive records.
    frontier: u64,
    records: u64,
    late: u64,
    future: u64,
}

/// What a held record counts for against [`EventTime::hold_bytes`]: its payload and the record.
fn held_bytes(record: &RawRecord) -> usize {
    record.payload.len() + std::mem::size_of::<RawRecord>()
}

/// How far ahead of the wall clock a record's time may be before it is taken for a broken
/// clock's (see the module's documentation).
pub const MAX_FUTURE: Duration = Duration::from_secs(3600);

impl Epochs {
    fn new(time: EventTime, partitions: Vec<i32>, frontier: u64) -> Self {
        let now = Instant::now();
        Epochs {
            time,
            epoch_share: time.hold_bytes / (2 * partitions.len().max(1)),
            reported_held: 0,
            clocks: partitions
                .into_iter()
                .map(|partition| Clock::new(partition, now))
                .collect(),
            held: BTreeMap::new(),
            held_bytes: 0,
            frontier,
            records: 0,
            late: 0,
            future: 0,
        }
    }

    fn epoch_of(&self, ms: u64) -> u64 {
        ms / self.time.epoch_ms.max(1)
    }

    /// Puts a record into its epoch; `now` is when it was read.
    /// Puts `record` into its epoch; `now` and `wall_ms` are the poll's monotonic and wall
    /// clocks.
    fn hold(&mut self, mut record: RawRecord, stats: &SourceStats, now: Instant, wall_ms: u64) {
        let index = match self
            .clocks
            .iter()
            .position(|c| c.partition == record.partition)
        {
            Some(index) => index,
            None => {
                self.clocks.push(Clock::new(record.partition, now));
                self.clocks.len() - 1
            }
        };
        let before = self.clocks[index].watermark_ms;
        let timestamp = match record.timestamp_ms {
            Some(t) if t > wall_ms.saturating_add(MAX_FUTURE.as_millis() as u64) => {
                if self.future == 0 {
                    tracing::warn!(
                        partition = record.partition,
                        offset = record.offset,
                        timestamp_ms = t,
                        "a record's time is more than an hour ahead of the wall clock: it takes its partition's current time (logged once per worker)"
                    );
                }
                self.future += 1;
                stats.future.fetch_add(1, Ordering::Relaxed);
                before.unwrap_or(wall_ms)
            }
            Some(t) => t,
            // A record without a time (its declared time field unreadable) takes its
            // partition's current time, so that it cannot carry a replay of historical times
            // into the wall clock's epoch.
            None => before.unwrap_or(wall_ms),
        };
        record.timestamp_ms = Some(timestamp);
        let mut watermark = before.map_or(timestamp, |w| w.max(timestamp));
        let mut epoch = self.epoch_of(watermark);
        if epoch < self.frontier {
            epoch = self.frontier;
            self.late += 1;
            stats.late.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = held_bytes(&record);
        let clock = &mut self.clocks[index];
        // The watermark a replay from this record starts with: the one before it, or the
        // start of the epoch it moves into.
        let mut resume_watermark = before;
        let (filling, filled) = clock.filling;
        if filling == epoch && filled > 0 && filled + bytes > self.epoch_share {
            epoch += 1;
            watermark = epoch.saturating_mul(self.time.epoch_ms.max(1));
            resume_watermark = Some(watermark);
            stats.overflows.fetch_add(1, Ordering::Relaxed);
        }
        clock.filling = if clock.filling.0 == epoch {
            (epoch, clock.filling.1 + bytes)
        } else {
            (epoch, bytes)
        };
        clock.watermark_ms = Some(watermark);
        clock.next_offset = record.offset + 1;
        clock.last_seen = now;
        clock.stalled = false;
        clock
            .firsts
            .entry(epoch)
            .or_insert((record.offset, resume_watermark));
        clock.unreported += 1;
        self.held_bytes += bytes;
        self.held.entry(epoch).or_default().push(record);
    }

    /// The frontier the partitions allow now (never behind the current one), by the ends
    /// [`Epochs::note_ends`] noted last.
    fn allowed(&self, idle: Duration) -> u64 {
        let active = self
            .clocks
            .iter()
            .filter(|c| !c.at_end || c.last_seen.elapsed() < idle);
        let mut least = None;
        for clock in active {
            match clock.watermark_ms {
                // An active partition that has shown no record yet holds everything.
                None => return self.frontier,
                Some(w) => least = Some(least.map_or(w, |l: u64| l.min(w))),
            }
        }
        let allowed = match least {
            Some(w) => self.epoch_of(w),
            // Every partition idle (or none at all): release what was read, and follow the
            // wall clock (less the idle span), so that a worker with nothing to read does not
            // hold back the others' epochs downstream.
            None => {
                let read = self
                    .clocks
                    .iter()
                    .filter_map(|c| c.watermark_ms)
                    .map(|w| self.epoch_of(w) + 1)
                    .max()
                    .unwrap_or(0);
                let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                read.max(self.epoch_of(now_ms().saturating_sub(idle_ms)))
            }
        };
        allowed.max(self.frontier)
    }

    /// Reports the partitions' figures (once per poll: the workers' partitions share cache
    /// lines, which per-record updates would pass back and forth).
    fn report(&mut self, stats: &SourceStats) {
        if self.held_bytes >= self.reported_held {
            let more = (self.held_bytes - self.reported_held) as u64;
            stats.held_bytes.fetch_add(more, Ordering::Relaxed);
        } else {
            let less = (self.reported_held - self.held_bytes) as u64;
            stats.held_bytes.fetch_sub(less, Ordering::Relaxed);
        }
        self.reported_held = self.held_bytes;
        for clock in self.clocks.iter_mut().filter(|c| c.unreported > 0) {
            if let Some(p) = stats.partitions.get(clock.partition as usize) {
                p.records.fetch_add(clock.unreported, Ordering::Relaxed);
                p.watermark_ms
                    .store(clock.watermark_ms.unwrap_or(0), Ordering::Relaxed);
                p.next_offset
                    .store(clock.next_offset as u64, Ordering::Relaxed);
            }
            clock.unreported = 0;
        }
    }

    /// Notes and publishes which partitions `at_end` says are read to their end, and warns
    /// once about each partition that has shown nothing for long without reaching its end: it
    /// holds the frontier.
    fn note_ends(&mut self, stats: &SourceStats, at_end: impl Fn(i32) -> bool) {
        let stall = (self.time.idle * 10).max(STALL_WARNING);
        for clock in &mut self.clocks {
            clock.at_end = at_end(clock.partition);
            if let Some(p) = stats.partitions.get(clock.partition as usize) {
                p.at_end.store(u64::from(clock.at_end), Ordering::Relaxed);
            }
            let silent = clock.last_seen.elapsed();
            if !clock.at_end && !clock.stalled && silent >= stall {
                clock.stalled = true;
                tracing::warn!(
                    partition = clock.partition,
                    silent_s = silent.as_secs(),
                    "a partition shows no record and has not been read to its end: it holds \
                     the event-time frontier until it does"
                );
            }
        }
    }

    /// The records held for `epoch`, no longer held.
    fn take(&mut self, epoch: u64) -> Vec<RawRecord> {
        let records = self.held.remove(&epoch).unwrap_or_default();
        self.held_bytes -= records.iter().map(held_bytes).sum::<usize>();
        records
    }

    /// Pauses the partitions ahead of the frontier once [`EventTime::hold_bytes`] are held, and
    /// resumes those paused once at most half of that is (a resume costs a fetch of what was
    /// dropped at the pause, so it should not follow every epoch), asking `pause` for each
    /// change (it answers whether the change was made). A partition at the frontier always
    /// reads, paused before or not: only such partitions can move it. A paused partition counts
    /// as just seen, so it cannot go idle and let the frontier pass what it has not read.
    fn align(&mut self, stats: &SourceStats, mut pause: impl FnMut(i32, bool) -> bool) {
        let span = self.time.epoch_ms.max(1);
        let full = self.held_bytes >= self.time.hold_bytes;
        let drained = self.held_bytes <= self.time.hold_bytes / 2;
        let now = Instant::now();
        for clock in &mut self.clocks {
            let ahead = clock.watermark_ms.is_some_and(|w| w / span > self.frontier);
            let want = ahead && if clock.paused { !drained } else { full };
            let changed = want != clock.paused && pause(clock.partition, want);
            if changed {
                tracing::debug!(
                    partition = clock.partition,
                    paused = want,
                    frontier = self.frontier,
                    held_bytes = self.held_bytes,
                    "watermark alignment"
                );
                clock.paused = want;
                if let Some(p) = stats.partitions.get(clock.partition as usize) {
                    p.paused.store(u64::from(want), Ordering::Relaxed);
                }
            }
            // Not reading is not idleness (nor cause for a stall warning); a resumed partition
            // has the idle span to show its records again.
            if changed || clock.paused {
                clock.last_seen = now;
            }
        }
    }

    /// Marks every partition as just seen.
    fn touch(&mut self) {
        let now = Instant::now();
        for clock in &mut self.clocks {
            clock.last_seen = now;
        }
    }

    /// The state after every epoch before `next` is handed on.
    fn state_before(&self, next: u64) -> SourceState {
        SourceState {
            partitions: self
                .clocks
                .iter()
                .map(|c| {
                    let (offset, watermark_ms) = c
                        .firsts
                        .range(next..)
                        .next()
                        .map_or((c.next_offset, c.watermark_ms), |(_, first)| *first);
                    Resume {
                        partition: c.partition,
                        offset,
                        watermark_ms,
                    }
                })
                .collect(),
            records: self.records,
            late: self.late,
            future: self.future,
        }
    }

    fn restore(&mut self, state: &SourceState) {
        self.records = state.records;
        self.late = state.late;
        self.future = state.future;
        for resume in &state.partitions {
            if let Some(clock) = self
                .clocks
                .iter_mut()
                .find(|c| c.partition == resume.partition)
            {
                clock.next_offset = resume.offset;
                clock.watermark_ms = resume.watermark_ms;
            }
        }
    }
}

/// Why a source stops, as its `stop` function says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The input is complete (a bounded replay's last record is read): everything read is
    /// handed on, and the final checkpoint holds the positions after it.
    End,
    /// The job is asked to stop (SIGTERM) and will be started again: the stream ends where it
    /// is, without handing on the records of epochs still open and without a final checkpoint.
    /// The restarted job resumes from the newest checkpoint and replays what came after it, so
    /// it makes the epochs an uninterrupted run makes; a final checkpoint would have closed the
    /// open epochs early, cutting each in two.
    Interrupt,
}

/// Creates a stream from `reader` in event-time epochs, as the module describes, checkpointed
/// as the `source` part of `checkpoints` when they are enabled. The stream ends when `stop` says so (see [`Stop`]), or as for
/// [`Stop::End`] when the reader is [`Polled::Done`].
///
/// # Examples
///
/// ```
/// use millrace_models::RawRecord;
/// use millrace_operators::{
///     ingest_partitions, Checkpoints, EventTime, PartitionReader, Polled, SourceStats, HOLD_BYTES,
/// };
/// use std::sync::{atomic::Ordering, Arc};
/// use std::time::Duration;
/// use timely::dataflow::operators::Inspect;
///
/// // Three records of partition 0, a second of event time apart.
/// struct Three(Vec<RawRecord>);
/// impl PartitionReader for Three {
///     fn partitions(&self) -> Vec<i32> { vec![0] }
///     fn poll(&mut self, out: &mut Vec<RawRecord>, _max: usize) -> Polled {
///         if self.0.is_empty() { return Polled::Done; }
///         out.append(&mut self.0);
///         Polled::Records
///     }
///     fn seek(&mut self, _: &[(i32, i64)]) -> Result<(), millrace_operators::BoxError> { Ok(()) }
///     fn commit(&mut self, _: &[(i32, i64)]) {}
///     fn at_end(&self, _: i32) -> bool { self.0.is_empty() }
/// }
/// let records = (0..3)
///     .map(|i| RawRecord { partition: 0, offset: i, payload: vec![], timestamp_ms: Some(1000 * i as u64) })
///     .collect();
/// let stats = Arc::new(SourceStats::new(1));
/// let shared = stats.clone();
/// timely::example(move |scope| {
///     let time = EventTime { epoch_ms: 1000, idle: Duration::from_secs(1), hold_bytes: HOLD_BYTES };
///     ingest_partitions(scope, "Three", Three(records), time, &Checkpoints::none(), shared, || None)
///         // Each record in the epoch of its second.
///         .inspect_core(|event| {
///             if let Ok((stamp, records)) = event {
///                 for r in records {
///                     assert_eq!(stamp.elements(), &[r.offset as u64]);
///                 }
///             }
///         });
/// });
/// assert_eq!(stats.records.load(Ordering::Relaxed), 3);
/// ```
pub fn ingest_partitions<'scope, R>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: R,
    time: EventTime,
    checkpoints: &Checkpoints,
    stats: Arc<SourceStats>,
    stop: impl Fn() -> Option<Stop> + 'static,
) -> StreamVec<'scope, u64, RawRecord>
where
    R: PartitionReader + 'static,
{
    let mut part = checkpoints.part(scope.index(), &SOURCE);
    operator::source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(
        scope,
        name,
        move |mut capability, info| {
            let activator = scope.activator_for(info.address);
            let resume = part.as_ref().map_or(0, Part::resume_epoch);
            let mut epochs = Epochs::new(time, reader.partitions(), resume);
            let mut resumed = true;
            if let Some((_, _, bytes)) = part.as_mut().and_then(Part::take_restored) {
                match SOURCE.decode(&bytes) {
                    Ok(state) => {
                        epochs.restore(&state);
                        stats.records.fetch_add(state.records, Ordering::Relaxed);
                        stats.late.fetch_add(state.late, Ordering::Relaxed);
                        stats.future.fetch_add(state.future, Ordering::Relaxed);
                        let positions = positions(&state);
                        tracing::debug!(?positions, records = state.records, "source restored");
                        if let Err(error) = reader.seek(&positions) {
                            // Reading from anywhere else would lose or repeat records: the
                            // job stops and says why.
                            tracing::error!(%error, "the source cannot resume where the checkpoint says");
                            stats.fail_resume(error.to_string());
                            resumed = false;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "the source's checkpoint part is unreadable");
                        stats.fail_resume(format!("its checkpoint part is unreadable: {error}"));
                        resumed = false;
                    }
                }
            }
            capability.downgrade(&resume);
            let mut capability = resumed.then_some(capability);
            // The last epoch the state is the result of.
            let mut lo = resume.saturating_sub(1);
            // Checkpoints whose positions were not committed to the group yet.
            let mut uncommitted: Vec<Offered> = Vec::new();
            let worker = scope.index();
            let mut buffer = Vec::with_capacity(MAX_PER_ACTIVATION);
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                let slowest = part.as_ref().and_then(Part::slowest);
                let throttled = part.as_ref().is_some_and(Part::held_back)
                    || slowest.is_some_and(|s| epochs.frontier > s.saturating_add(MAX_AHEAD));
                let polled = if throttled {
                    // Not reading is not idleness: no partition may go idle meanwhile.
                    epochs.touch();
                    Polled::Idle
                } else {
                    buffer.clear();
                    let polled = reader.poll(&mut buffer, MAX_PER_ACTIVATION);
                    // One clock read per poll, not per record.
                    let (now, wall_ms) = (Instant::now(), now_ms());
                    for record in buffer.drain(..) {
                        epochs.hold(record, &stats, now, wall_ms);
                    }
                    epochs.report(&stats);
                    polled
                };
                epochs.note_ends(&stats, |p| reader.at_end(p));
                let stop = stop();
                if stop == Some(Stop::Interrupt) {
                    capability = None;
                    return;
                }
                let stopping = polled == Polled::Done || stop == Some(Stop::End);
                let allowed = if stopping {
                    u64::MAX
                } else {
                    epochs.allowed(time.idle)
                };
                while let Some(entry) = epochs.held.first_entry() {
                    let epoch = *entry.key();
                    if epoch >= allowed {
                        break;
                    }
                    if let (Some(part), true) = (part.as_mut(), epoch > 0) {
                        part.covers(lo, epoch - 1, || {
                            let state = epochs.state_before(epoch);
                            uncommitted.push((lo, epoch - 1, positions(&state)));
                            SOURCE.encode(&state)
                        });
                    }
                    let mut records = epochs.take(epoch);
                    records.sort_by_key(|r| r.partition);
                    let n = records.len() as u64;
                    epochs.records += n;
                    stats.records.fetch_add(n, Ordering::Relaxed);
                    for clock in &mut epochs.clocks {
                        clock.firsts.remove(&epoch);
                    }
                    output
                        .session(&cap.delayed(&epoch))
                        .give_iterator(records.into_iter());
                    lo = epoch;
                }
                if stopping {
                    if let Some(part) = part.as_mut() {
                        let final_state = epochs.state_before(u64::MAX);
                        part.covers(lo, FINAL, || SOURCE.encode(&final_state));
                    }
                    capability = None;
                    return;
                }
                epochs.frontier = allowed;
                epochs.align(&stats, |partition, paused| reader.pause(partition, paused));
                if allowed > *cap.time() {
                    cap.downgrade(&allowed);
                }
                // No data is handed on until the next activation: this decides no epochs (an
                // idle worker's frontier follows the wall clock, far ahead of a backlog's).
                if let (Some(part), true) = (part.as_mut(), allowed > 0) {
                    part.progress(lo, allowed - 1, || {
                        let state = epochs.state_before(allowed);
                        uncommitted.push((lo, allowed - 1, positions(&state)));
                        SOURCE.encode(&state)
                    });
                }
                if worker == 0 {
                    stats.frontier.store(allowed, Ordering::Relaxed);
                }
                if let Some(written) = part.as_ref().and_then(Part::written_through) {
                    // The offer the written checkpoint took, and everything before it.
                    match uncommitted.iter().position(|(_, hi, _)| *hi >= written) {
                        Some(at) if uncommitted[at].0 <= written => {
                            reader.commit(&uncommitted[at].2);
                            uncommitted.drain(..=at);
                        }
                        Some(at) => {
                            uncommitted.drain(..at);
                        }
                        None => uncommitted.clear(),
                    }
                }
                match polled {
                    Polled::Records => activator.activate(),
                    _ => activator.activate_after(IDLE_BACKOFF),
                }
            }
        },
    )
}

/// The positions (each partition's next offset) that `worker`'s source resumes from in the
/// checkpoint `collector` restores: `None` on a fresh start, or when the worker has no source
/// part there.
///
/// # Errors
///
/// When the part does not read back.
pub fn restored_positions(
    collector: &Collector,
    worker: usize,
) -> Option<Result<Vec<(i32, i64)>, PartError>> {
    let (_, _, bytes) = collector.part(worker, SOURCE.name()).take_restored()?;
    Some(SOURCE.decode(&bytes).map(|state| positions(&state)))
}

/// The positions of an offered state, with the epochs it is valid for: committed to the group
/// once a checkpoint that took it is written.
type Offered = (u64, u64, Vec<(i32, i64)>);

fn positions(state: &SourceState) -> Vec<(i32, i64)> {
    state
        .partitions
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect()
}
