//! The sample buffer operator with 1, 2 and 4 workers against a plain reading of the rows it was
//! given, and its retention within a running dataflow.

use millrace_models::fmap::{FeatureMapSpec, Layout, Schema};
use millrace_models::CsrBatch;
use millrace_operators::{BufferSamples, Checkpoints, SampleConfig, SampleStats};
use millrace_samples::{read_buffer, Retention, SampleFields, SampleRows};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

fn layout() -> Layout {
    FeatureMapSpec::criteo_default()
        .compile(&Schema::criteo())
        .unwrap()
}

/// Seeded batches: `(epoch, rows)`, a few per epoch, each row a bias, one slot of each of some
/// features and an event time inside its epoch (a second each).
fn batches(layout: &Layout, epochs: u64, seed: u64) -> Vec<(u64, CsrBatch)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for epoch in 0..epochs {
        for _ in 0..3 {
            let mut batch = CsrBatch::new(epoch, layout.dimension);
            for _ in 0..rng.random_range(0..20) {
                batch.indices.push(0);
                batch.values.push(1.0);
                for f in &layout.features {
                    if rng.random::<f64>() < 0.7 {
                        batch.indices.push(f.offset + rng.random_range(0..f.width));
                        batch.values.push(rng.random_range(-3.0..3.0));
                    }
                }
                batch.indptr.push(batch.indices.len() as u32);
                batch.labels.push(rng.random::<f64>() < 0.3);
                batch.times.push(1_000 * epoch + rng.random_range(0..1_000));
            }
            out.push((epoch, batch));
        }
    }
    out
}

/// Runs the operator over `batches` with `workers` (batch `i` goes to worker `i % workers`).
fn run(workers: usize, batches: &[(u64, CsrBatch)], config: &SampleConfig) -> Arc<SampleStats> {
    let stats = Arc::new(SampleStats::default());
    let (batches, config, shared) = (Arc::new(batches.to_vec()), config.clone(), stats.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<CsrBatch>>>::new();
        let probe = ProbeHandle::new();
        let (config, shared) = (config.clone(), shared.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            let rows = scope.input_from(&mut input);
            rows.clone()
                .buffer_samples(config, shared, &Checkpoints::none());
            rows.probe_with(&probe);
        });
        for (i, (epoch, batch)) in batches.iter().enumerate() {
            if *epoch > *input.time() {
                input.advance_to(*epoch);
            }
            if i % peers == index {
                input.send(batch.clone());
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    stats
}

/// Every row as one comparable line, sorted: what the buffers hold, in any order.
fn lines(rows: &SampleRows) -> Vec<String> {
    let mut lines: Vec<String> = (0..rows.len())
        .map(|i| {
            format!(
                "{} {:?} {} {} {:?}",
                rows.epochs[i],
                rows.event_times[i],
                rows.versions[i],
                rows.labels[i],
                rows.entries(i)
            )
        })
        .collect();
    lines.sort();
    lines
}

fn config(dir: &Path, retention: Retention) -> SampleConfig {
    SampleConfig {
        dir: dir.to_owned(),
        retention,
        fields: SampleFields::of_layout(&layout()).unwrap(),
    }
}

fn read_all(config: &SampleConfig, workers: usize) -> SampleRows {
    let mut all = SampleRows::new();
    for w in 0..workers {
        let (_, rows) = read_buffer(&config.worker_dir(w)).unwrap();
        all.extend(&rows);
    }
    all
}

#[test]
fn the_buffers_of_1_2_and_4_workers_hold_every_row_as_a_plain_reading_does() {
    let layout = layout();
    let fields = SampleFields::of_layout(&layout).unwrap();
    let batches = batches(&layout, 12, 5);
    let mut plain = SampleRows::new();
    for (epoch, batch) in &batches {
        plain.extend(&SampleRows::of_batch(&fields, *epoch, batch).unwrap());
    }
    assert!(plain.len() > 100);
    let keep = Retention {
        max_age_ms: u64::MAX / 2,
        max_bytes: 1 << 30,
        segment_bytes: 32 << 10,
        segment_ms: 0,
    };
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), keep);
        let stats = run(workers, &batches, &config);
        let held = read_all(&config, workers);
        assert_eq!(lines(&held), lines(&plain), "{workers} workers");
        assert_eq!(stats.rows(), plain.len() as u64);
        assert_eq!(stats.appended.load(Ordering::Relaxed), plain.len() as u64);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
        // Each worker's file holds its epochs in order.
        for w in 0..workers {
            let (_, rows) = read_buffer(&config.worker_dir(w)).unwrap();
            assert!(rows.epochs.windows(2).all(|e| e[0] <= e[1]));
        }
    }
}

#[test]
fn retention_keeps_the_newest_epochs_within_a_dataflow() {
    let layout = layout();
    let fields = SampleFields::of_layout(&layout).unwrap();
    let batches = batches(&layout, 40, 9);
    let dir = tempfile::tempdir().unwrap();
    // Ten seconds of event time: epoch e's events lie in [1000·e, 1000·(e+1)).
    let config = config(
        dir.path(),
        Retention {
            max_age_ms: 10_000,
            max_bytes: 1 << 30,
            segment_bytes: 4096,
            segment_ms: 0,
        },
    );
    let stats = run(2, &batches, &config);
    let held = read_all(&config, 2);
    let oldest = *held.epochs.iter().min().unwrap();
    assert!(oldest >= 25, "epochs from {oldest} on are held");
    let mut plain = SampleRows::new();
    for (epoch, batch) in batches.iter().filter(|(e, _)| *e >= 33) {
        plain.extend(&SampleRows::of_batch(&fields, *epoch, batch).unwrap());
    }
    // The newest epochs are all there.
    let newest: Vec<String> = lines(&held)
        .into_iter()
        .filter(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap() >= 33)
        .collect();
    assert_eq!(newest, lines(&plain));
    assert!(stats.retired.load(Ordering::Relaxed) > 0);
}
