//! Memory is bounded by the hold budget, not by the input, when event time stops advancing: a
//! stream of 2 GiB whose records all carry one timestamp goes through a source with a 64 MiB
//! budget, and the process's peak resident memory stays a small multiple of the budget (its own
//! test binary, so that no other test's memory counts).

use millrace_models::RawRecord;
use millrace_operators::{
    ingest_partitions, Checkpoints, EventTime, PartitionReader, Polled, SourceStats,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use timely::dataflow::operators::Inspect;

const PAYLOAD: usize = 1024;
const RECORDS: i64 = 2 << 20;
const BUDGET: usize = 64 << 20;

/// `RECORDS` records of one partition, made as they are read, every one at the same time.
struct Constant {
    next: i64,
}

impl PartitionReader for Constant {
    fn partitions(&self) -> Vec<i32> {
        vec![0]
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        if self.next == RECORDS {
            return Polled::Done;
        }
        let end = (self.next + max as i64).min(RECORDS);
        out.extend((self.next..end).map(|offset| RawRecord {
            partition: 0,
            offset,
            payload: vec![b'x'; PAYLOAD],
            timestamp_ms: Some(1_700_000_000_000),
        }));
        self.next = end;
        Polled::Records
    }

    fn seek(&mut self, _: &[(i32, i64)]) -> Result<(), millrace_operators::BoxError> {
        Ok(())
    }

    fn commit(&mut self, _: &[(i32, i64)]) {}

    fn at_end(&self, _: i32) -> bool {
        self.next == RECORDS
    }
}

/// The process's peak resident memory, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_constant_timestamp_keeps_the_memory_to_the_budget() {
    let stats = Arc::new(SourceStats::new(1));
    let per_epoch = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let (shared, seen) = (stats.clone(), per_epoch.clone());
    timely::execute(timely::Config::thread(), move |worker| {
        let (stats, seen) = (shared.clone(), seen.clone());
        let time = EventTime {
            epoch_ms: 1000,
            idle: Duration::from_millis(100),
            hold_bytes: BUDGET,
        };
        worker.dataflow::<u64, _, _>(move |scope| {
            ingest_partitions(
                scope,
                "Constant",
                Constant { next: 0 },
                time,
                &Checkpoints::none(),
                stats,
                || None,
            )
            .inspect_core(move |event| {
                if let Ok((stamp, records)) = event {
                    let epoch = stamp.elements()[0];
                    *seen.lock().unwrap().entry(epoch).or_default() += records.len() as u64;
                }
            });
        });
    })
    .unwrap();
    let per_epoch = per_epoch.lock().unwrap();
    let read: u64 = per_epoch.values().sum();
    assert_eq!(read, RECORDS as u64, "every record handed on once");
    let largest = per_epoch.values().max().copied().unwrap_or(0);
    let peak = peak_rss();
    eprintln!(
        "{} MiB through a {} MiB budget: {} epochs, the largest {largest} records; {} overflows; peak RSS {} MiB",
        (RECORDS as usize * PAYLOAD) >> 20,
        BUDGET >> 20,
        per_epoch.len(),
        stats.overflows.load(Ordering::Relaxed),
        peak >> 20
    );
    // An epoch takes at most half the budget from its one partition.
    assert!(
        largest as usize * PAYLOAD <= BUDGET / 2,
        "{largest} records in one epoch"
    );
    assert!(peak < 4 * BUDGET as u64, "peak RSS {} MiB", peak >> 20);
}
