//! The label join with 1, 2 and 4 workers against a plain batch join of the same stream.

use millrace_models::labels::{impressions_and_clicks, labeled_line, LabelEvent};
use millrace_models::{DeadLetter, RawRecord};
use millrace_operators::checkpoint::{Checkpoint, Choice, Collector, Persist};
use millrace_operators::{Checkpoints, JoinLabels, LabelJoinConfig, LabelJoinStats, LatePolicy};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::InputHandle;

const WINDOW: u64 = 6;

/// The generated stream as records, each with its epoch.
fn stream(seed: u64) -> Vec<(u64, RawRecord)> {
    impressions_and_clicks(seed, 5_000, WINDOW)
        .into_iter()
        .enumerate()
        .map(|(i, (epoch, payload))| {
            let record = RawRecord {
                partition: (i % 4) as i32,
                offset: (i / 4) as i64,
                payload,
                timestamp_ms: None,
            };
            (epoch, record)
        })
        .collect()
}

/// What a join produced: labeled records (sorted), dead letters' offsets (sorted), counters.
#[derive(Debug, PartialEq)]
struct Joined {
    labeled: Vec<(i32, i64, Vec<u8>)>,
    dead: Vec<(i32, i64)>,
    counts: Counts,
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    positives: u64,
    negatives: u64,
    late: u64,
    corrections: u64,
    duplicates: u64,
    unmatched: u64,
}

/// The join written plainly: for each impression, its clicks in epoch order.
fn batch_join(records: &[(u64, RawRecord)], late: LatePolicy) -> Joined {
    let mut impressions: Vec<(u64, &RawRecord, &[u8], &[u8])> = Vec::new();
    let mut clicks: HashMap<&[u8], Vec<u64>> = HashMap::new();
    let mut dead = Vec::new();
    for (epoch, record) in records {
        match LabelEvent::parse(&record.payload) {
            Ok(LabelEvent::Impression {
                request_id,
                features,
            }) => impressions.push((*epoch, record, request_id, features)),
            Ok(LabelEvent::Click { request_id }) => {
                clicks.entry(request_id).or_default().push(*epoch)
            }
            Err(_) => dead.push((record.partition, record.offset)),
        }
    }
    let mut counts = Counts::default();
    let mut labeled = Vec::new();
    for (t, record, id, features) in impressions {
        let mut out = |label| {
            labeled.push((
                record.partition,
                record.offset,
                labeled_line(label, features),
            ));
        };
        let mut theirs = clicks.remove(id).unwrap_or_default();
        theirs.sort_unstable();
        let (mut clicked, mut in_window) = (false, false);
        for c in theirs {
            if c < t || c > t + 2 * WINDOW {
                counts.unmatched += 1;
            } else if clicked {
                counts.duplicates += 1;
            } else if c <= t + WINDOW {
                (clicked, in_window) = (true, true);
                counts.positives += 1;
                out(true);
            } else {
                counts.late += 1;
                if late == LatePolicy::Correct {
                    clicked = true;
                    counts.corrections += 1;
                    out(true);
                }
            }
        }
        // Not clicked in the window: a negative when it closed, late clicks or not.
        if !in_window {
            counts.negatives += 1;
            out(false);
        }
    }
    counts.unmatched += clicks.values().map(|c| c.len() as u64).sum::<u64>();
    labeled.sort();
    dead.sort();
    Joined {
        labeled,
        dead,
        counts,
    }
}

/// What a dataflow join collected, sorted as [`Joined`] holds it.
fn joined(
    labeled: &Mutex<Vec<(i32, i64, Vec<u8>)>>,
    dead: &Mutex<Vec<DeadLetter>>,
    stats: &LabelJoinStats,
) -> Joined {
    let mut labeled = std::mem::take(&mut *labeled.lock().unwrap());
    labeled.sort();
    let mut dead: Vec<(i32, i64)> = dead
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.record.partition, d.record.offset))
        .collect();
    dead.sort();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(load(&stats.pending), 0, "every window closed at the end");
    Joined {
        labeled,
        dead,
        counts: Counts {
            positives: load(&stats.positives),
            negatives: load(&stats.negatives),
            late: load(&stats.late_clicks),
            corrections: load(&stats.corrections),
            duplicates: load(&stats.duplicate_clicks),
            unmatched: load(&stats.unmatched_clicks),
        },
    }
}

/// The join as a dataflow over `workers` workers, each fed its share of the records.
fn dataflow_join(workers: usize, records: &[(u64, RawRecord)], late: LatePolicy) -> Joined {
    let stats = Arc::new(LabelJoinStats::default());
    let labeled = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::<DeadLetter>::new()));
    let records = Arc::new(records.to_vec());
    let (st, out, letters) = (stats.clone(), labeled.clone(), dead.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<RawRecord>>>::new();
        let (st, out, letters) = (st.clone(), out.clone(), letters.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            let config = LabelJoinConfig {
                window: WINDOW,
                late,
                max_pending: usize::MAX,
            };
            let (joined, dead) =
                scope
                    .input_from(&mut input)
                    .join_labels(config, st, &Checkpoints::none());
            joined.inspect(move |r: &RawRecord| {
                out.lock()
                    .unwrap()
                    .push((r.partition, r.offset, r.payload.clone()))
            });
            dead.inspect(move |d: &DeadLetter| letters.lock().unwrap().push(d.clone()));
        });
        for (epoch, record) in records.iter().skip(index).step_by(peers) {
            input.advance_to(*epoch);
            input.send(record.clone());
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    joined(&labeled, &dead, &stats)
}

#[test]
fn the_join_with_1_2_and_4_workers_matches_the_batch_join() {
    let records = stream(7);
    for late in [LatePolicy::Drop, LatePolicy::Correct] {
        let want = batch_join(&records, late);
        // The stream exercises every case.
        let c = &want.counts;
        assert!(c.positives > 100 && c.negatives > 1000, "{c:?}");
        assert!(c.late > 10 && c.duplicates > 5 && c.unmatched > 10, "{c:?}");
        assert!(!want.dead.is_empty());
        for workers in [1, 2, 4] {
            let got = dataflow_join(workers, &records, late);
            assert_eq!(got.counts, want.counts, "{workers} workers, {late:?}");
            assert_eq!(got.dead, want.dead, "{workers} workers, {late:?}");
            assert!(
                got.labeled == want.labeled,
                "{workers} workers, {late:?}: labeled records differ"
            );
        }
    }
}

#[test]
fn joined_records_parse_as_labeled_criteo_events() {
    let records = stream(3);
    let joined = dataflow_join(2, &records, LatePolicy::Drop);
    let layout = millrace_models::FeatureSpec::Hashed { hash_bits: 10 }
        .compile(&millrace_models::Schema::criteo())
        .unwrap();
    let mut parser = millrace_models::fmap::Parser::new(&layout);
    for (_, _, line) in &joined.labeled {
        let mut batch = millrace_models::EventBatch::new(layout.schema.fields.len());
        parser.parse_record(line, 0, &mut batch).unwrap();
        assert_eq!(batch.labels, [line[0] == b'1']);
    }
    assert_eq!(parser.bad.total(), 0);
}

#[test]
fn arrival_order_within_an_epoch_does_not_matter() {
    // The click of an impression arrives before it, in the same epoch: still a positive.
    let features = "\t".repeat(38);
    let record = |offset, payload: String| {
        (
            0,
            RawRecord {
                partition: 0,
                offset,
                payload: payload.into_bytes(),
                timestamp_ms: None,
            },
        )
    };
    let records = vec![
        record(0, "clk\tr1".to_owned()),
        record(1, format!("imp\tr1\t{features}")),
        record(2, format!("imp\tr1\t{features}")),
    ];
    let joined = dataflow_join(1, &records, LatePolicy::Drop);
    assert_eq!(joined.counts.positives, 1);
    assert_eq!(joined.dead, vec![(0, 2)], "the second impression of r1");
}

/// Keeps the checkpoints a collector writes.
struct Kept(Arc<Mutex<Vec<Checkpoint>>>);

impl Persist for Kept {
    fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, millrace_operators::BoxError> {
        let mut kept = self.0.lock().unwrap();
        kept.push(checkpoint.clone());
        Ok(kept[0].epoch)
    }
}

/// The join over `workers` workers in two runs: the first joins the epochs up to `split`,
/// checkpoints after it and is dropped; the second restores that checkpoint and joins the rest.
fn dataflow_join_resumed(
    workers: usize,
    records: &[(u64, RawRecord)],
    late: LatePolicy,
    split: u64,
) -> Joined {
    let stats = Arc::new(LabelJoinStats::default());
    let labeled = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::<DeadLetter>::new()));
    let records = Arc::new(records.to_vec());
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut restored = None;
    for run in 0..2 {
        // Only the second run's counters count: the restored checkpoint carries the first's.
        let run_stats = Arc::new(LabelJoinStats::default());
        let collector = Collector::new(
            (0..workers).collect(),
            &["labels"],
            Choice::EveryNth(1),
            Box::new(Kept(kept.clone())),
            restored.take(),
        );
        let (st, out, letters, records) = (
            run_stats.clone(),
            labeled.clone(),
            dead.clone(),
            records.clone(),
        );
        let shared = collector.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<RawRecord>>>::new();
            let (st, out, letters) = (st.clone(), out.clone(), letters.clone());
            let checkpoints = Checkpoints::from_collector(shared.clone());
            let probe = worker.dataflow::<u64, _, _>(|scope| {
                let config = LabelJoinConfig {
                    window: WINDOW,
                    late,
                    max_pending: usize::MAX,
                };
                let (joined, dead) =
                    scope
                        .input_from(&mut input)
                        .join_labels(config, st, &checkpoints);
                joined.inspect(move |r: &RawRecord| {
                    out.lock()
                        .unwrap()
                        .push((r.partition, r.offset, r.payload.clone()))
                });
                dead.inspect(move |d: &DeadLetter| letters.lock().unwrap().push(d.clone()))
                    .probe()
                    .0
            });
            let mine = records.iter().skip(index).step_by(peers);
            if run == 0 {
                for (epoch, record) in mine.filter(|(e, _)| *e <= split) {
                    input.advance_to(*epoch);
                    input.send(record.clone());
                }
                input.advance_to(split + 1);
                worker.step_while(|| {
                    shared.figures().last_epoch.is_none_or(|e| e < split)
                        || probe.less_than(&(split + 1))
                });
                for dataflow in worker.installed_dataflows() {
                    worker.drop_dataflow(dataflow);
                }
            } else {
                for (epoch, record) in mine.filter(|(e, _)| *e > split) {
                    input.advance_to(*epoch);
                    input.send(record.clone());
                }
            }
        })
        .unwrap()
        .join()
        .into_iter()
        .for_each(|r| r.unwrap());
        if run == 0 {
            let checkpoint = kept
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.epoch == split)
                .cloned()
                .expect("a checkpoint after the split");
            restored = Some(checkpoint);
        } else {
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            for (total, counter) in [
                (&stats.positives, &run_stats.positives),
                (&stats.negatives, &run_stats.negatives),
                (&stats.late_clicks, &run_stats.late_clicks),
                (&stats.corrections, &run_stats.corrections),
                (&stats.duplicate_clicks, &run_stats.duplicate_clicks),
                (&stats.unmatched_clicks, &run_stats.unmatched_clicks),
                (&stats.pending, &run_stats.pending),
            ] {
                total.store(load(counter), Ordering::Relaxed);
            }
        }
    }
    joined(&labeled, &dead, &stats)
}

#[test]
fn a_join_restored_from_a_checkpoint_ends_like_one_that_never_stopped() {
    let records = stream(11);
    let last = records.iter().map(|(e, _)| *e).max().unwrap();
    for late in [LatePolicy::Drop, LatePolicy::Correct] {
        let want = batch_join(&records, late);
        for (workers, split) in [(1, last / 3), (2, last / 2), (4, 2 * last / 3)] {
            let got = dataflow_join_resumed(workers, &records, late, split);
            assert_eq!(got.counts, want.counts, "{workers} workers, {late:?}");
            assert_eq!(got.dead, want.dead, "{workers} workers, {late:?}");
            assert!(
                got.labeled == want.labeled,
                "{workers} workers, {late:?}: labeled records differ"
            );
        }
    }
}

/// Past `max_pending` remembered impressions, a worker sends a new one to the dead letters
/// (and counts it) rather than grow: six impressions of one epoch against a limit of three.
#[test]
fn impressions_past_the_limit_go_to_the_dead_letters() {
    let stats = Arc::new(LabelJoinStats::default());
    let (dead, shared) = (
        Arc::new(Mutex::new(Vec::<DeadLetter>::new())),
        stats.clone(),
    );
    let letters = dead.clone();
    timely::example(move |scope| {
        use timely::dataflow::operators::ToStream;
        let features = "\t".repeat(38);
        let impression = |id: usize, offset: i64| RawRecord {
            partition: 0,
            offset,
            payload: format!("imp\tr{id}\t{features}").into_bytes(),
            timestamp_ms: None,
        };
        let config = LabelJoinConfig {
            window: 1,
            late: LatePolicy::Drop,
            max_pending: 3,
        };
        let records: Vec<RawRecord> = (0..6).map(|i| impression(i, i as i64)).collect();
        let (_joined, dead) =
            records
                .to_stream(scope)
                .join_labels(config, shared, &Checkpoints::none());
        dead.inspect(move |d: &DeadLetter| letters.lock().unwrap().push(d.clone()));
    });
    let dead = dead.lock().unwrap();
    let kinds: Vec<&str> = dead.iter().map(|d| d.error_kind.as_str()).collect();
    assert_eq!(kinds, ["label_join_full"; 3], "the 4th, 5th and 6th");
    assert!(dead[0].error.contains("limit of 3"), "{}", dead[0].error);
    assert_eq!(stats.overflowed.load(Ordering::Relaxed), 3);
    assert_eq!(stats.negatives.load(Ordering::Relaxed), 3);
}
