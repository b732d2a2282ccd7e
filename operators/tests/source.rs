//! The event-time source with 1, 2 and 4 workers against a plain computation of each record's
//! epoch: partitions spread over the workers, records out of order within their partitions,
//! and two partitions that never show a record, which must not stall the frontier. A reader
//! that takes longer than the idle span to start must not make its backlog late.

use millrace_models::RawRecord;
use millrace_operators::checkpoint::{Checkpoint, Choice, Collector, Persist};
use millrace_operators::{
    ingest_partitions, Checkpoints, EventTime, PartitionReader, Polled, SourceStats, Stop,
    HOLD_BYTES,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

const PARTITIONS: i32 = 8;
/// Partitions 6 and 7 stay empty.
const WITH_DATA: i32 = 6;
const PER_PARTITION: i64 = 300;
const EPOCH_MS: u64 = 50;

/// Record `i` of partition `p`: event times mostly rising, every fourth one 60 ms behind.
fn timestamp(p: i32, i: i64) -> u64 {
    let base = 1_000_000 + (p as u64) * 3 + (i as u64) * 7;
    if i % 4 == 3 {
        base - 60
    } else {
        base
    }
}

/// Each record's epoch, computed plainly: the epoch of its partition's largest time so far.
fn batch() -> Vec<(u64, i32, i64)> {
    let mut out = Vec::new();
    for p in 0..WITH_DATA {
        let mut watermark = 0;
        for i in 0..PER_PARTITION {
            watermark = watermark.max(timestamp(p, i));
            out.push((watermark / EPOCH_MS, p, i));
        }
    }
    out.sort_unstable();
    out
}

/// A worker's partitions, handing out nothing before `starts`, then one record of each per
/// poll, then nothing (never done).
struct Dribble {
    partitions: Vec<i32>,
    next: i64,
    starts: Instant,
}

impl PartitionReader for Dribble {
    fn partitions(&self) -> Vec<i32> {
        self.partitions.clone()
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, _max: usize) -> Polled {
        if self.next == PER_PARTITION || Instant::now() < self.starts {
            return Polled::Idle;
        }
        for &p in self.partitions.iter().filter(|p| **p < WITH_DATA) {
            out.push(RawRecord {
                partition: p,
                offset: self.next,
                payload: Vec::new(),
                timestamp_ms: Some(timestamp(p, self.next)),
            });
        }
        self.next += 1;
        Polled::Records
    }

    fn seek(&mut self, _: &[(i32, i64)]) -> Result<(), millrace_operators::BoxError> {
        Ok(())
    }

    fn commit(&mut self, _: &[(i32, i64)]) {}

    fn at_end(&self, partition: i32) -> bool {
        partition >= WITH_DATA || self.next == PER_PARTITION
    }
}

/// Steps `worker` until `probe` passes `last_epoch` (failing after a minute: the frontier
/// stalled), then tells the source to stop.
fn run_past(
    worker: &mut timely::worker::Worker,
    probe: &ProbeHandle<u64>,
    last_epoch: u64,
    stop: &AtomicBool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    worker.step_while(|| {
        assert!(Instant::now() < deadline, "the frontier stalled");
        probe.less_equal(&last_epoch)
    });
    stop.store(true, Ordering::Relaxed);
}

/// Every record with its epoch, and the count of late records, from `workers` workers whose
/// readers start after `start_delay`, with partitions going idle after `idle`.
fn dataflow(workers: usize, start_delay: Duration, idle: Duration) -> (Vec<(u64, i32, i64)>, u64) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(SourceStats::new(PARTITIONS as usize));
    let last_epoch = batch().last().unwrap().0;
    let (out, shared) = (seen.clone(), stats.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let reader = Dribble {
            partitions: (0..PARTITIONS)
                .filter(|p| *p as usize % peers == index)
                .collect(),
            next: 0,
            starts: Instant::now() + start_delay,
        };
        let time = EventTime {
            epoch_ms: EPOCH_MS,
            idle,
            hold_bytes: HOLD_BYTES,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (out, stats) = (out.clone(), shared.clone());
        let probe = worker.dataflow::<u64, _, _>(move |scope| {
            ingest_partitions(
                scope,
                "Dribble",
                reader,
                time,
                &Checkpoints::none(),
                stats,
                move || stopped.load(Ordering::Relaxed).then_some(Stop::End),
            )
            .inspect_core(move |event| {
                if let Ok((stamp, records)) = event {
                    let mut out = out.lock().unwrap();
                    for (epoch, r) in stamp
                        .iter()
                        .flat_map(|t| records.iter().map(move |r| (t, r)))
                    {
                        out.push((*epoch, r.partition, r.offset));
                    }
                }
            })
            .probe()
            .0
        });
        // The frontier passes the last epoch while the source is still running: the empty
        // partitions went idle instead of holding it back.
        run_past(worker, &probe, last_epoch, &stop);
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.sort_unstable();
    (seen, stats.late.load(Ordering::Relaxed))
}

#[test]
fn epochs_with_1_2_and_4_workers_match_the_plain_computation() {
    let want = batch();
    assert!(want.len() as i64 == i64::from(WITH_DATA) * PER_PARTITION);
    for workers in [1, 2, 4] {
        let (got, late) = dataflow(workers, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(late, 0, "{workers} workers: records behind the frontier");
        assert!(got == want, "{workers} workers: epochs differ");
    }
}

#[test]
fn a_reader_slower_to_start_than_the_idle_span_keeps_its_backlog_in_event_time() {
    // The partitions with data show nothing for ten idle spans, then a backlog whose event
    // times lie far behind the wall clock: they were not read to their end, so they were not
    // idle, and the frontier waited for them instead of following the wall clock.
    let want = batch();
    for workers in [1, 2, 4] {
        let (got, late) = dataflow(
            workers,
            Duration::from_millis(300),
            Duration::from_millis(30),
        );
        assert_eq!(late, 0, "{workers} workers: records behind the frontier");
        assert!(got == want, "{workers} workers: epochs differ");
    }
}

/// One partition's records, all in one poll, then done.
struct Once(Vec<RawRecord>);

impl PartitionReader for Once {
    fn partitions(&self) -> Vec<i32> {
        vec![0]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, _max: usize) -> Polled {
        if self.0.is_empty() {
            return Polled::Done;
        }
        out.append(&mut self.0);
        Polled::Records
    }

    fn seek(&mut self, _: &[(i32, i64)]) -> Result<(), millrace_operators::BoxError> {
        Ok(())
    }

    fn commit(&mut self, _: &[(i32, i64)]) {}

    fn at_end(&self, _: i32) -> bool {
        self.0.is_empty()
    }
}

#[test]
fn a_time_from_a_broken_clock_takes_its_partitions_time() {
    // Times a second apart from a minute ago, but the third a day ahead of the wall clock: it
    // joins the second's epoch with the second's time, and the fourth keeps its own.
    let base = millrace_operators::now_ms() - 60_000;
    let times = [base, base + 1000, base + 86_400_000, base + 2000];
    let records: Vec<RawRecord> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| RawRecord {
            partition: 0,
            offset: i as i64,
            payload: Vec::new(),
            timestamp_ms: Some(t),
        })
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(SourceStats::new(1));
    let (out, shared) = (seen.clone(), stats.clone());
    timely::execute(timely::Config::thread(), move |worker| {
        let (reader, out, stats) = (Once(records.clone()), out.clone(), shared.clone());
        let time = EventTime {
            epoch_ms: 1000,
            idle: Duration::from_secs(1),
            hold_bytes: HOLD_BYTES,
        };
        worker.dataflow::<u64, _, _>(move |scope| {
            ingest_partitions(
                scope,
                "Once",
                reader,
                time,
                &Checkpoints::none(),
                stats,
                || None,
            )
            .inspect_core(move |event| {
                if let Ok((stamp, records)) = event {
                    for r in records {
                        out.lock().unwrap().push((
                            stamp.iter().next().copied(),
                            r.offset,
                            r.timestamp_ms,
                        ));
                    }
                }
            });
        });
    })
    .unwrap();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.sort_unstable_by_key(|s| s.1);
    let want: Vec<(Option<u64>, i64, Option<u64>)> = [
        (0, base),
        (1, base + 1000),
        (2, base + 1000),
        (3, base + 2000),
    ]
    .into_iter()
    .map(|(offset, t)| (Some(t / 1000), offset, Some(t)))
    .collect();
    assert_eq!(seen, want);
    assert_eq!(stats.future.load(Ordering::Relaxed), 1);
    assert_eq!(stats.late.load(Ordering::Relaxed), 0);
}

struct Kept(Arc<Mutex<Vec<u64>>>);

impl Persist for Kept {
    fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, millrace_operators::BoxError> {
        let mut kept = self.0.lock().unwrap();
        kept.push(checkpoint.epoch);
        Ok(kept[0])
    }
}

#[test]
fn a_worker_without_partitions_does_not_hold_back_a_backlogs_checkpoints() {
    // Worker 1 reads nothing, so its frontier follows the wall clock, far past the backlog's
    // event times that worker 0 works through; the checkpoint epochs still fall in the backlog.
    let written = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::new(
        vec![0, 1],
        &["source"],
        Choice::Interval(Duration::ZERO),
        Box::new(Kept(written.clone())),
        None,
    );
    let last_epoch = batch().last().unwrap().0;
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let reader = Dribble {
            partitions: if index == 0 {
                (0..PARTITIONS).collect()
            } else {
                Vec::new()
            },
            next: 0,
            starts: Instant::now(),
        };
        let time = EventTime {
            epoch_ms: EPOCH_MS,
            idle: Duration::from_millis(50),
            hold_bytes: HOLD_BYTES,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let checkpoints = Checkpoints::from_collector(collector.clone());
        let probe = worker.dataflow::<u64, _, _>(move |scope| {
            let stats = Arc::new(SourceStats::new(PARTITIONS as usize));
            ingest_partitions(
                scope,
                "Dribble",
                reader,
                time,
                &checkpoints,
                stats,
                move || stopped.load(Ordering::Relaxed).then_some(Stop::End),
            )
            .probe()
            .0
        });
        run_past(worker, &probe, last_epoch, &stop);
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let written = written.lock().unwrap();
    let in_backlog = written.iter().filter(|&&e| e <= last_epoch).count();
    assert!(in_backlog > 0, "checkpoints written: {written:?}");
}

/// Partition 0 shows nothing and is never read to its end (no leader, say) until `behind` says
/// how many epochs behind partition 1 it is; partition 1 has records of [`PAYLOAD`] bytes without
/// end, two an epoch, read ten a poll unless paused. The first resume is refused (a client error), so the source
/// must ask again.
struct Stuck {
    next: i64,
    refused: bool,
    paused: Arc<AtomicBool>,
    pauses: Arc<Mutex<Vec<bool>>>,
    behind: Arc<AtomicU64>,
}

/// [`Stuck::behind`] while partition 0 shows nothing.
const SILENT: u64 = u64::MAX;

/// The payload of each record of [`Stuck`]'s partition 1.
const PAYLOAD: usize = 100;

/// What a record of [`Stuck`]'s partition 1 counts for against the source's budget.
const RECORD_BYTES: usize = PAYLOAD + std::mem::size_of::<RawRecord>();

impl PartitionReader for Stuck {
    fn partitions(&self) -> Vec<i32> {
        vec![0, 1]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, _max: usize) -> Polled {
        let time = |i: i64| 1_000_000 + i as u64 * EPOCH_MS / 2;
        let behind = self.behind.load(Ordering::Relaxed);
        if behind != SILENT {
            out.push(RawRecord {
                partition: 0,
                offset: 0,
                payload: Vec::new(),
                timestamp_ms: Some(time(self.next - 1) - behind * EPOCH_MS),
            });
        }
        if self.paused.load(Ordering::Relaxed) {
            return Polled::Idle;
        }
        for _ in 0..10 {
            out.push(RawRecord {
                partition: 1,
                offset: self.next,
                payload: vec![0; PAYLOAD],
                timestamp_ms: Some(time(self.next)),
            });
            self.next += 1;
        }
        Polled::Records
    }

    fn seek(&mut self, _: &[(i32, i64)]) -> Result<(), millrace_operators::BoxError> {
        Ok(())
    }

    fn commit(&mut self, _: &[(i32, i64)]) {}

    fn at_end(&self, _: i32) -> bool {
        false
    }

    fn pause(&mut self, partition: i32, paused: bool) -> bool {
        assert_eq!(
            partition, 1,
            "the partition holding the frontier was paused"
        );
        if !paused && !self.refused {
            self.refused = true;
            return false;
        }
        self.paused.store(paused, Ordering::Relaxed);
        self.pauses.lock().unwrap().push(paused);
        true
    }
}

/// A source over `reader`'s `partitions` with a budget of `hold_bytes`, partitions idle after
/// 50 ms, no checkpoints: its figures, and the flag that interrupts it.
fn aligned_source<R: PartitionReader + 'static>(
    worker: &mut timely::worker::Worker,
    reader: R,
    partitions: usize,
    hold_bytes: usize,
) -> (Arc<SourceStats>, Arc<AtomicBool>) {
    let time = EventTime {
        epoch_ms: EPOCH_MS,
        idle: Duration::from_millis(50),
        hold_bytes,
    };
    let stats = Arc::new(SourceStats::new(partitions));
    let shared = stats.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    worker.dataflow::<u64, _, _>(move |scope| {
        ingest_partitions(
            scope,
            "Aligned",
            reader,
            time,
            &Checkpoints::none(),
            shared,
            move || stopped.load(Ordering::Relaxed).then_some(Stop::Interrupt),
        );
    });
    (stats, stop)
}

/// Steps `worker` for `ms` milliseconds.
fn step_for(worker: &mut timely::worker::Worker, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        worker.step();
    }
}

#[test]
fn a_worker_holding_its_budget_pauses_the_partitions_ahead_until_half_is_handed_on() {
    let paused = Arc::new(AtomicBool::new(false));
    let pauses = Arc::new(Mutex::new(Vec::new()));
    let behind = Arc::new(AtomicU64::new(SILENT));
    let (p, ps, b) = (paused.clone(), pauses.clone(), behind.clone());
    timely::execute(timely::Config::thread(), move |worker| {
        let reader = Stuck {
            next: 0,
            refused: false,
            paused: p.clone(),
            pauses: ps.clone(),
            behind: b.clone(),
        };
        // Room for 80 records: 40 epochs of partition 1.
        let (stats, stop) = aligned_source(worker, reader, 2, 80 * RECORD_BYTES);
        let records = |s: &SourceStats| s.partitions[1].records.load(Ordering::Relaxed);
        let paused = |s: &SourceStats, i: usize| s.partitions[i].paused.load(Ordering::Relaxed);
        step_for(worker, 300);
        assert!(p.load(Ordering::Relaxed), "partition 1 was not paused");
        assert_eq!((paused(&stats, 0), paused(&stats, 1)), (0, 1));
        // The budget, and at most one poll more.
        let read = records(&stats);
        assert!(
            (80..=90).contains(&read),
            "{read} records read past a stuck frontier"
        );
        // The frontier moves to 30 epochs behind: 60 records still held, more than half.
        b.store(30, Ordering::Relaxed);
        step_for(worker, 300);
        assert_eq!((records(&stats), paused(&stats, 1)), (read, 1));
        // 10 epochs behind: 20 held; partition 1 reads on, and stays within the budget.
        b.store(10, Ordering::Relaxed);
        step_for(worker, 300);
        assert!(records(&stats) > read, "partition 1 was not resumed");
        assert_eq!(paused(&stats, 1), 0);
        stop.store(true, Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(*pauses.lock().unwrap(), [true, false]);
}

/// Partition 0 shows nothing until `a_time` is set (then one record of that time a poll);
/// partition 1 has records ten an epoch and has always been read to its end when asked,
/// partition 2 one record every ten epochs; each reads five a poll unless paused.
struct Spread {
    next: [u64; 3],
    a_time: Arc<AtomicU64>,
    paused: Arc<Mutex<[bool; 3]>>,
}

impl PartitionReader for Spread {
    fn partitions(&self) -> Vec<i32> {
        vec![0, 1, 2]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, _max: usize) -> Polled {
        let paused = *self.paused.lock().unwrap();
        let a_time = self.a_time.load(Ordering::Relaxed);
        if a_time > 0 && !paused[0] {
            out.push(RawRecord {
                partition: 0,
                offset: 0,
                payload: Vec::new(),
                timestamp_ms: Some(a_time),
            });
        }
        for (p, step) in [(1, EPOCH_MS / 10), (2, EPOCH_MS * 10)] {
            for _ in 0..5 {
                if paused[p] {
                    break;
                }
                let i = self.next[p];
                out.push(RawRecord {
                    partition: p as i32,
                    offset: i as i64,
                    payload: vec![0; PAYLOAD],
                    timestamp_ms: Some(1_000_000 + i * step),
                });
                self.next[p] += 1;
            }
        }
        Polled::Records
    }

    fn seek(&mut self, _: &[(i32, i64)]) -> Result<(), millrace_operators::BoxError> {
        Ok(())
    }

    fn commit(&mut self, _: &[(i32, i64)]) {}

    fn at_end(&self, partition: i32) -> bool {
        partition == 1
    }

    fn pause(&mut self, partition: i32, paused: bool) -> bool {
        self.paused.lock().unwrap()[partition as usize] = paused;
        true
    }
}

/// A partition paused ahead of the frontier that comes to hold it reads again, whatever is
/// held; and while paused it does not go idle, so the frontier does not pass what it has not
/// read.
#[test]
fn a_paused_partition_that_comes_to_hold_the_frontier_reads_again_and_never_goes_idle() {
    let a_time = Arc::new(AtomicU64::new(0));
    let paused = Arc::new(Mutex::new([false; 3]));
    let (a, p) = (a_time.clone(), paused.clone());
    timely::execute(timely::Config::thread(), move |worker| {
        let reader = Spread {
            next: [0; 3],
            a_time: a.clone(),
            paused: p.clone(),
        };
        // Room for 60 records of partitions 1 and 2.
        let (stats, stop) = aligned_source(worker, reader, 3, 60 * RECORD_BYTES);
        let records = |i: usize| stats.partitions[i].records.load(Ordering::Relaxed);
        step_for(worker, 300);
        // Partition 0 holds the frontier: 1 and 2 are paused, 30 records each.
        assert_eq!(*p.lock().unwrap(), [false, true, true]);
        let read = records(1);
        // Partition 0 shows a time 100 epochs on: partition 1 (3 epochs on) now holds the
        // frontier, with partition 2's records still more than half the budget.
        a.store(1_000_000 + 100 * EPOCH_MS, Ordering::Relaxed);
        step_for(worker, 300);
        assert!(records(1) > read, "partition 1 holds the frontier, paused");
        assert_eq!(stats.late.load(Ordering::Relaxed), 0, "records came late");
        stop.store(true, Ordering::Relaxed);
    })
    .unwrap();
}
