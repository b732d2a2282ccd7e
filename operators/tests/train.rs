//! The decode → train dataflow with 1, 2 and 4 workers against a plain batch computation.

use millrace_models::synth::CriteoGenerator;
use millrace_models::{
    artifact::ModelKind, exact_auc, CriteoEvent, DeadLetter, FeatureSpec, Fm, FmParams, Ftrl,
    FtrlParams, LearnerParams, RawRecord, Registry,
};
use millrace_operators::{
    ingest, Decode, DecodeStats, Deliver, PollSource, Polled, PublishPolicy, RecordSink,
    TrainOnline, TrainerConfig, TrainerStats,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Seeded records: generated events with a malformed line every 97th record.
fn records(n: usize) -> Vec<RawRecord> {
    let mut events = CriteoGenerator::new(5);
    (0..n)
        .map(|i| {
            let payload = if i % 97 == 13 {
                format!("broken line {i}\twith\ttoo few fields").into_bytes()
            } else {
                events.next_event().to_tsv().into_bytes()
            };
            RawRecord {
                partition: (i % 4) as i32,
                offset: (i / 4) as i64,
                payload,
                timestamp_ms: None,
            }
        })
        .collect()
}

/// Hands out one worker's share of the records (by partition), a few at a time.
struct Share {
    records: std::vec::IntoIter<RawRecord>,
}

impl PollSource<RawRecord> for Share {
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        let before = out.len();
        out.extend(self.records.by_ref().take(max.min(100)));
        if out.len() == before {
            Polled::Done
        } else {
            Polled::Records
        }
    }
}

struct Collect(Arc<Mutex<Vec<DeadLetter>>>);

impl RecordSink<DeadLetter> for Collect {
    fn send(&mut self, letter: DeadLetter) {
        self.0.lock().unwrap().push(letter);
    }
    fn flush(&mut self) {}
}

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 18 };

fn run_dataflow(
    workers: usize,
    records: &[RawRecord],
    registry: &Registry,
    learner: LearnerParams,
) -> (Arc<TrainerStats>, Arc<DecodeStats>, Vec<DeadLetter>) {
    let trainer_stats = Arc::new(TrainerStats::new());
    let decode_stats = Arc::new(DecodeStats::default());
    let dead = Arc::new(Mutex::new(Vec::new()));
    let config = TrainerConfig {
        model: "ctr".into(),
        features: SPEC,
        learner,
        publish: PublishPolicy {
            every_events: 5_000,
            every: Duration::from_secs(3600),
        },
        registry: registry.clone(),
    };
    let (records, t, d, dl) = (
        records.to_vec(),
        trainer_stats.clone(),
        decode_stats.clone(),
        dead.clone(),
    );
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mine: Vec<RawRecord> = records
            .iter()
            .filter(|r| r.partition as usize % peers == index)
            .cloned()
            .collect();
        let (config, t, d, dl) = (config.clone(), t.clone(), d.clone(), dl.clone());
        worker.dataflow::<u64, _, _>(move |scope| {
            let share = Share {
                records: mine.into_iter(),
            };
            let (events, dead) =
                ingest(scope, "Share", share, Duration::from_millis(1)).decode_criteo(d);
            dead.deliver("Collect", Collect(dl));
            events.train_online(config, t);
        });
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let dead = dead.lock().unwrap().clone();
    (trainer_stats, decode_stats, dead)
}

#[test]
fn decode_and_train_with_1_2_and_4_workers_match_the_batch_computation() {
    let records = records(20_000);

    // The batch computation: decode everything in order, learn in order.
    let mut batch_dead: Vec<(i32, i64)> = Vec::new();
    let mut events: Vec<CriteoEvent> = Vec::new();
    for r in &records {
        match CriteoEvent::decode_tsv(&r.payload) {
            Ok(event) => events.push(event),
            Err(_) => batch_dead.push((r.partition, r.offset)),
        }
    }
    let rows: Vec<Vec<u32>> = events
        .iter()
        .map(|e| {
            let mut row = Vec::new();
            SPEC.transform(&e.features, &mut row);
            row
        })
        .collect();
    let labels: Vec<bool> = events.iter().map(|e| e.label).collect();
    let mut batch = Ftrl::new(FtrlParams::default(), SPEC.dimension());
    for (row, label) in rows.iter().zip(&labels) {
        batch.learn(row, *label);
    }
    let score = |weights: &[f32]| {
        let preds: Vec<f32> = rows
            .iter()
            .map(|row| {
                millrace_models::ftrl::sigmoid(row.iter().map(|&i| weights[i as usize]).sum())
            })
            .collect();
        exact_auc(&preds, &labels).unwrap()
    };
    let batch_auc = score(&batch.weights());

    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let (trainer, decode, dead) = run_dataflow(
            workers,
            &records,
            &registry,
            LearnerParams::Ftrl(FtrlParams::default()),
        );

        let mut dead: Vec<(i32, i64)> = dead
            .iter()
            .map(|d| (d.record.partition, d.record.offset))
            .collect();
        dead.sort_unstable();
        let mut want = batch_dead.clone();
        want.sort_unstable();
        assert_eq!(dead, want, "{workers} workers: dead letters");
        assert_eq!(decode.decoded.load(Ordering::Relaxed), events.len() as u64);
        assert_eq!(trainer.learned.load(Ordering::Relaxed), events.len() as u64);

        // Versions every 5000 events plus the final one, which has learned everything.
        let versions = registry.versions("ctr").unwrap();
        assert_eq!(
            versions.len(),
            events.len().div_ceil(5_000),
            "{workers} workers"
        );
        let last = registry.load_latest("ctr").unwrap();
        assert_eq!(last.meta.trained_events, events.len() as u64);
        assert_eq!(
            trainer.model_version.load(Ordering::Relaxed),
            last.meta.version
        );
        if workers == 1 {
            // One worker learns in the batch order: the same model, bit for bit.
            assert_eq!(last.weights, batch.weights());
        } else {
            // Other orders give a model of the same quality.
            let auc = score(&last.weights);
            assert!(
                (auc - batch_auc).abs() < 0.01,
                "{workers} workers: auc {auc} vs batch {batch_auc}"
            );
        }
        assert!(trainer.auc().unwrap() > 0.65);
        // Fewer events than the window holds: the windowed AUC covers them all.
        assert!(trainer.learned.load(std::sync::atomic::Ordering::Relaxed) < 100_000);
        assert_eq!(trainer.window_auc(), trainer.auc());
    }
}

#[test]
fn a_factorization_machine_trains_through_the_dataflow_like_in_batch() {
    let records = records(6_000);
    let params = FmParams::default();
    let mut batch = Fm::new(params, SPEC.dimension());
    let mut row = Vec::new();
    for r in &records {
        if let Ok(event) = CriteoEvent::decode_tsv(&r.payload) {
            row.clear();
            SPEC.transform(&event.features, &mut row);
            batch.learn(&row, event.label);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let (trainer, _, _) = run_dataflow(1, &records, &registry, LearnerParams::Fm(params));
    let model = registry.load_latest("ctr").unwrap();
    assert_eq!(
        model.meta.kind,
        ModelKind::FactorizationMachine {
            factors: params.factors
        }
    );
    assert_eq!(
        model.meta.trained_events,
        trainer.learned.load(Ordering::Relaxed)
    );
    assert_eq!(model.weights, batch.weights());
    assert_eq!(model.factors, batch.factors());
}
