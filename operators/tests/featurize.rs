//! Parse → fit → transform with 1, 2 and 4 workers against a plain batch computation, and a
//! drift test: after the stream shifts, boundaries and vocabularies follow.

use millrace_models::fmap::kll::error_for_k;
use millrace_models::fmap::map::FeatureState;
use millrace_models::fmap::signed_log1p;
use millrace_models::fmap::spec::Kind;
use millrace_models::fmap::value::fingerprint;
use millrace_models::fmap::Transition;
use millrace_models::fmap::{
    FeatureMapSpec, InvalidPolicy, Layout, Parser, Schema, TransformSpec, Value,
};
use millrace_models::{CsrBatch, EventBatch, FeatureMap};
use millrace_models::{FeatureSpec, FtrlParams, Learner, LearnerParams, Registry};
use millrace_operators::{
    Checkpoints, Featurize, FeaturizeStats, FitFeatureMap, PublishPolicy, TrainRows, TrainerConfig,
    TrainerStats, TransformRows,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

/// One event: a Criteo-like line, and its epoch.
struct Event {
    line: String,
    epoch: u64,
}

/// Seeded Criteo-like events: heavy-tailed integers with ties, Zipf-like categoricals, some
/// missing and some malformed values.
fn criteo_like(epochs: u64, per_epoch: usize, seed: u64) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    for epoch in 0..epochs {
        for _ in 0..per_epoch {
            let mut line = String::from(if rng.random::<f64>() < 0.25 { "1" } else { "0" });
            for field in 0..13 {
                line.push('\t');
                let u: f64 = rng.random();
                if u < 0.1 {
                } else if u < 0.105 {
                    line.push_str("x7");
                } else {
                    let scale = f64::from(field + 1);
                    let v = (rng.random::<f64>().powi(3) * 50.0 * scale).floor() as i64 - 1;
                    line.push_str(&v.to_string());
                }
            }
            for field in 0..26 {
                line.push('\t');
                if rng.random::<f64>() >= 0.05 {
                    let rank = (rng.random::<f64>().powi(4) * 3000.0) as u32;
                    line.push_str(&format!("{:08x}", rank.wrapping_mul(2654435761) ^ field));
                }
            }
            events.push(Event { line, epoch });
        }
    }
    events
}

/// Epoch `e`'s events carry event time `e · 10 s`.
fn time_of(epoch: u64) -> u64 {
    epoch * 10_000
}

struct Run {
    /// Per worker, every FeatureMap version in order.
    versions: Vec<Vec<Arc<FeatureMap>>>,
    /// Every row made, with the epoch it was made in.
    rows: Vec<(u64, CsrBatch)>,
    stats: Arc<FeaturizeStats>,
}

/// Runs parse → fit → transform over `events` (event `i` enters at worker `i % workers`, in
/// batches of 250, at its epoch): with `fused`, as [`Featurize::featurize`]; otherwise as
/// [`FitFeatureMap::fit_feature_map`] and [`TransformRows::transform_rows`] over one stream.
fn run(workers: usize, spec: &FeatureMapSpec, events: &[Event], fused: bool) -> Run {
    let layout = spec.compile(&Schema::criteo()).unwrap();
    let versions = Arc::new(Mutex::new(vec![Vec::new(); workers]));
    let rows = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(FeaturizeStats::default());
    let lines: Arc<Vec<(String, u64)>> =
        Arc::new(events.iter().map(|e| (e.line.clone(), e.epoch)).collect());
    let (v, r, s) = (versions.clone(), rows.clone(), stats.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<EventBatch>>>::new();
        let probe = ProbeHandle::new();
        let (layout, v, r, s) = (layout.clone(), v.clone(), r.clone(), s.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            let events = scope.input_from(&mut input);
            let map = FeatureMap::new(layout.clone());
            let on_version = move |map: &Arc<FeatureMap>, _: &_| {
                v.lock().unwrap()[index].push(map.clone());
            };
            let rows = if fused {
                events.featurize(map, s, &Checkpoints::none(), on_version).0
            } else {
                let updates = events
                    .clone()
                    .fit_feature_map(layout.clone(), &Checkpoints::none());
                events.transform_rows(updates, map, s, &Checkpoints::none(), on_version)
            };
            rows.inspect_core(move |event| {
                if let Ok((stamp, batches)) = event {
                    let time = *stamp.least().unwrap();
                    let mut rows = r.lock().unwrap();
                    rows.extend(batches.iter().map(|b| (time, b.clone())));
                }
            })
            .probe_with(&probe);
        });
        feed(worker, input, &probe, &lines, &layout);
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let versions = std::mem::take(&mut *versions.lock().unwrap());
    let rows = std::mem::take(&mut *rows.lock().unwrap());
    Run {
        versions,
        rows,
        stats,
    }
}

/// Feeds this worker's share of `lines` (line `i` goes to worker `i % peers`) in batches of
/// 250 at their epochs, then steps until `probe` is done.
fn feed(
    worker: &mut Worker,
    mut input: InputHandle<u64, CapacityContainerBuilder<Vec<EventBatch>>>,
    probe: &ProbeHandle<u64>,
    lines: &[(String, u64)],
    layout: &Layout,
) {
    let mut parser = Parser::new(layout);
    let mine: Vec<&(String, u64)> = lines
        .iter()
        .skip(worker.index())
        .step_by(worker.peers())
        .collect();
    for chunk in mine.chunks(250) {
        let epoch = chunk[0].1;
        if *input.time() < epoch {
            input.advance_to(epoch);
        }
        let mut batch = EventBatch::new(39);
        for (line, e) in chunk {
            if *e != epoch {
                input.send(std::mem::replace(&mut batch, EventBatch::new(39)));
                input.advance_to(*e);
            }
            parser
                .parse_record(line.as_bytes(), time_of(*e), &mut batch)
                .unwrap();
        }
        input.send(batch);
        worker.step();
    }
    drop(input);
    while !probe.done() {
        worker.step();
    }
}

/// The batch computation of one vocabulary feature, epoch by epoch, straight from the rule:
/// cumulative counts; values reaching `min_count` get the next ids, most counted first, ties by
/// fingerprint.
struct BatchVocab {
    counts: HashMap<u64, u64>,
    ids: HashMap<u64, u32>,
}

impl BatchVocab {
    fn epoch(&mut self, values: &[u64], min_count: u64) {
        let mut crossed = Vec::new();
        for v in values {
            let c = self.counts.entry(*v).or_default();
            *c += 1;
            if *c == min_count && !self.ids.contains_key(v) {
                crossed.push(*v);
            }
        }
        let mut crossed: Vec<(u64, u64)> = crossed.iter().map(|v| (self.counts[v], *v)).collect();
        crossed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, v) in crossed {
            let id = self.ids.len() as u32;
            self.ids.insert(v, id);
        }
    }
}

/// The normalized rank interval of `x` in `sorted`.
fn rank_interval(sorted: &[f64], x: f64) -> (f64, f64) {
    let n = sorted.len() as f64;
    let below = sorted.partition_point(|&v| v < x) as f64 / n;
    let at_or_below = sorted.partition_point(|&v| v <= x) as f64 / n;
    (below, at_or_below)
}

/// How far boundaries are from the exact quantiles of `sorted`, in normalized rank.
fn max_boundary_error(boundaries: &[f64], buckets: u32, sorted: &[f64]) -> f64 {
    let mut worst: f64 = 0.0;
    for (j, &b) in boundaries.iter().enumerate() {
        let (lo, hi) = rank_interval(sorted, b);
        // A boundary stands for some rank j/buckets; with ties fewer boundaries come out, so
        // check against the nearest target rank.
        let nearest = (1..buckets)
            .map(|i| f64::from(i) / f64::from(buckets))
            .map(|q| {
                if q < lo {
                    lo - q
                } else if q > hi {
                    q - hi
                } else {
                    0.0
                }
            })
            .fold(f64::INFINITY, f64::min);
        worst = worst.max(nearest);
        let _ = j;
    }
    worst
}

fn column(batch: &EventBatch, field: usize) -> impl Iterator<Item = &Value> {
    (0..batch.len()).map(move |i| &batch.row(i)[field])
}

#[test]
fn fit_and_transform_with_1_2_and_4_workers_match_the_batch_computation() {
    let spec = FeatureMapSpec::criteo_default();
    let layout: Layout = spec.compile(&Schema::criteo()).unwrap();
    let events = criteo_like(4, 5_000, 11);

    // The batch computation, epoch by epoch over everything seen so far.
    let mut parser = Parser::new(&layout);
    let mut all = EventBatch::new(39);
    let mut epoch_of = Vec::new();
    for e in &events {
        parser
            .parse_record(e.line.as_bytes(), time_of(e.epoch), &mut all)
            .unwrap();
        epoch_of.push(e.epoch);
    }
    assert!(parser.bad.total() > 0, "the stream has malformed values");
    let mut vocabs: Vec<BatchVocab> = (0..26)
        .map(|_| BatchVocab {
            counts: HashMap::new(),
            ids: HashMap::new(),
        })
        .collect();
    // Per epoch: vocabulary ids per categorical, sorted numbers and (mean, std) per integer.
    let mut expected = Vec::new();
    for epoch in 0..4 {
        let in_epoch: Vec<usize> = (0..all.len()).filter(|&i| epoch_of[i] == epoch).collect();
        let upto: Vec<usize> = (0..all.len()).filter(|&i| epoch_of[i] <= epoch).collect();
        for (c, vocab) in vocabs.iter_mut().enumerate() {
            let values: Vec<u64> = in_epoch
                .iter()
                .filter_map(|&i| match all.row(i)[13 + c] {
                    Value::Cat(fp) => Some(fp),
                    _ => None,
                })
                .collect();
            vocab.epoch(&values, 5);
        }
        let numbers: Vec<Vec<f64>> = (0..13)
            .map(|f| {
                let mut xs: Vec<f64> = upto
                    .iter()
                    .filter_map(|&i| match all.row(i)[f] {
                        Value::Num(x) => Some(x),
                        _ => None,
                    })
                    .collect();
                xs.sort_by(f64::total_cmp);
                xs
            })
            .collect();
        let scales: Vec<(f64, f64)> = numbers
            .iter()
            .map(|xs| {
                let ys: Vec<f64> = xs.iter().map(|&x| signed_log1p(x)).collect();
                let mean = ys.iter().sum::<f64>() / ys.len() as f64;
                let var = ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / ys.len() as f64;
                (mean, var.sqrt())
            })
            .collect();
        let ids: Vec<HashMap<u64, u32>> = vocabs.iter().map(|v| v.ids.clone()).collect();
        expected.push((ids, numbers, scales));
    }
    let (last_ids, _, _) = &expected[3];
    let live: usize = last_ids.iter().map(HashMap::len).sum();
    let distinct: usize = vocabs.iter().map(|v| v.counts.len()).sum();
    assert!(live > 1_000 && distinct > live, "{live} live of {distinct}");

    for (workers, fused) in [1, 2, 4].into_iter().flat_map(|w| [(w, false), (w, true)]) {
        let run = run(workers, &spec, &events, fused);
        // Every worker holds the same versions, one per epoch.
        for versions in &run.versions {
            assert_eq!(versions.len(), 4, "{workers} workers (fused: {fused})");
            assert_eq!(
                versions, &run.versions[0],
                "{workers} workers (fused: {fused}): workers disagree"
            );
        }
        for (epoch, map) in run.versions[0].iter().enumerate() {
            assert_eq!(map.version, epoch as u64 + 1);
            let (ids, numbers, scales) = &expected[epoch];
            let (mut cat, mut int_b, mut int_s) = (0, 0, 0);
            for (def, state) in map.layout.features.iter().zip(&map.features) {
                match (&def.kind, state) {
                    (Kind::OneHot(_), FeatureState::Vocab(got)) => {
                        let want: HashMap<u64, u32> = ids[cat].clone();
                        let got: HashMap<u64, u32> = got.iter().map(|(k, v)| (*k, *v)).collect();
                        assert_eq!(
                            got, want,
                            "{workers} workers (fused: {fused}), epoch {epoch}, {}",
                            def.name
                        );
                        cat += 1;
                    }
                    (Kind::Bucketize { buckets, k }, FeatureState::Buckets(b)) => {
                        let error = max_boundary_error(b, *buckets, &numbers[int_b]);
                        assert!(
                            error <= error_for_k(*k),
                            "{workers} workers (fused: {fused}), epoch {epoch}, {}: rank error {error}",
                            def.name
                        );
                        assert!(b.windows(2).all(|w| w[0] < w[1]));
                        int_b += 1;
                    }
                    (Kind::Standardize { .. }, FeatureState::Scale { mean, std }) => {
                        let (m, s) = scales[int_s];
                        assert!((mean - m).abs() < 1e-9 && (std - s).abs() < 1e-9);
                        int_s += 1;
                    }
                    other => panic!("unexpected feature {other:?}"),
                }
            }
            assert_eq!((cat, int_b, int_s), (26, 13, 13));
        }
        // Counts: values with an id and values still below the minimum count, exactly.
        assert_eq!(run.stats.vocab_size.load(Ordering::Relaxed), live as u64);
        assert_eq!(
            run.stats.vocab_pending.load(Ordering::Relaxed),
            (distinct - live) as u64
        );
        assert_eq!(run.stats.rows.load(Ordering::Relaxed), all.len() as u64);

        // Rows of epoch t were made by the version fitted on epochs before t (version t).
        for epoch in 0..4u64 {
            let map = match epoch {
                0 => Arc::new(FeatureMap::new(layout.clone())),
                e => run.versions[0][e as usize - 1].clone(),
            };
            let mut want = Vec::new();
            let mut got = Vec::new();
            let mut counts = Default::default();
            for i in (0..all.len()).filter(|&i| epoch_of[i] == epoch) {
                let mut one = EventBatch::new(39);
                one.push_from(&all, i);
                want.push(row_key(&map.transform(&one, &mut counts), 0));
            }
            for (_, batch) in run.rows.iter().filter(|(t, _)| *t == epoch) {
                assert_eq!(batch.version, epoch);
                got.extend((0..batch.len()).map(|i| row_key(batch, i)));
            }
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(
                got, want,
                "{workers} workers (fused: {fused}), rows of epoch {epoch}"
            );
        }
    }
}

type RowKey = (bool, Vec<u32>, Vec<u32>);

fn row_key(batch: &CsrBatch, i: usize) -> RowKey {
    let (indices, values) = batch.row(i);
    (
        batch.labels[i],
        indices.to_vec(),
        values.iter().map(|v| v.to_bits()).collect(),
    )
}

/// Every vocabulary of `map`: value to id.
fn vocabularies(map: &FeatureMap) -> Vec<HashMap<u64, u32>> {
    map.features
        .iter()
        .filter_map(|state| match state {
            FeatureState::Vocab(ids) => Some(ids.iter().map(|(k, v)| (*k, *v)).collect()),
            _ => None,
        })
        .collect()
}

/// With `max_pending`, the vocabularies forget the same values on 1, 2 and 4 workers as the
/// batch fit does, and so give the same ids: the bound applies to the merged counts.
#[test]
fn bounded_pending_values_are_forgotten_alike_with_1_2_and_4_workers() {
    let mut spec = FeatureMapSpec::criteo_default();
    for transform in &mut spec.transforms {
        if let TransformSpec::OneHot { max_pending, .. } = transform {
            *max_pending = Some(300);
        }
    }
    let layout = spec.compile(&Schema::criteo()).unwrap();
    let events = criteo_like(4, 5_000, 13);
    let mut parser = Parser::new(&layout);
    let mut epochs = vec![EventBatch::new(39); 4];
    for e in &events {
        let batch = &mut epochs[e.epoch as usize];
        parser
            .parse_record(e.line.as_bytes(), time_of(e.epoch), batch)
            .unwrap();
    }
    let bounded = FeatureMap::fit(layout, &epochs);
    let unbounded = FeatureMap::fit(
        FeatureMapSpec::criteo_default()
            .compile(&Schema::criteo())
            .unwrap(),
        &epochs,
    );
    assert_ne!(
        vocabularies(&bounded),
        vocabularies(&unbounded),
        "the bound changed no id"
    );
    for workers in [1, 2, 4] {
        let run = run(workers, &spec, &events, true);
        let last = run.versions[0].last().unwrap();
        assert_eq!(
            vocabularies(last),
            vocabularies(&bounded),
            "{workers} workers"
        );
        assert!(run.stats.evicted.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn boundaries_and_vocabularies_follow_a_shifting_stream() {
    let spec = FeatureMapSpec {
        bias: true,
        window_epochs: Some(2),
        max_value_len: 64,
        transforms: vec![
            TransformSpec::Bucketize {
                fields: vec!["I1".into()],
                buckets: 10,
                relative_error: 0.01,
            },
            TransformSpec::OneHot {
                fields: vec!["C1".into()],
                min_count: 1,
                capacity: 50,
                expire_after_secs: Some(15.0),
                hash_fallback: 0,
                invalid: InvalidPolicy::Oov,
                reuse_after_versions: 1,
                max_pending: None,
            },
        ],
    };
    // Epochs 0–3: I1 in [0, 100), C1 in a0…a39. From epoch 4 on: I1 in [1000, 2000), C1 in
    // b0…b39. The vocabulary's capacity (50) cannot hold both sets.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut events = Vec::new();
    for epoch in 0..9u64 {
        let shifted = epoch >= 4;
        for _ in 0..2_000 {
            let (x, c) = if shifted {
                (
                    rng.random_range(1000..2000),
                    format!("b{}", rng.random_range(0..40)),
                )
            } else {
                (
                    rng.random_range(0..100),
                    format!("a{}", rng.random_range(0..40)),
                )
            };
            let line = format!("0\t{x}{}\t{c}{}", "\t".repeat(12), "\t".repeat(25));
            events.push(Event { line, epoch });
        }
    }
    let run = run(2, &spec, &events, true);
    let versions = &run.versions[0];
    assert_eq!(versions.len(), 9);
    assert_eq!(versions, &run.versions[1]);
    let a: Vec<u64> = (0..40)
        .map(|i| fingerprint(format!("a{i}").as_bytes()))
        .collect();
    let b: Vec<u64> = (0..40)
        .map(|i| fingerprint(format!("b{i}").as_bytes()))
        .collect();
    let vocab = |v: usize| match &versions[v].features[1] {
        FeatureState::Vocab(ids) => ids.clone(),
        other => panic!("{other:?}"),
    };
    let boundaries = |v: usize| match &versions[v].features[0] {
        FeatureState::Buckets(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    // Before the shift: the a's hold ids, boundaries lie in [0, 100).
    assert!(a.iter().all(|t| vocab(3).contains_key(t)));
    assert!(boundaries(3).iter().all(|&x| x < 100.0));
    // The shift's epoch (4): only 10 b's fit beside the a's, which are not expired yet.
    assert_eq!(vocab(4).len(), 50);
    // Epoch 5: the a's, unseen for 15 s of event time, are evicted; their ids wait one version.
    assert!(a.iter().all(|t| !vocab(5).contains_key(t)));
    // Epoch 6, two epochs after the shift: every b holds an id, within the capacity.
    let ids = vocab(6);
    assert_eq!(ids.len(), 40);
    assert!(b.iter().all(|t| ids.contains_key(t)));
    assert!(ids.values().all(|&id| id < 50));
    assert_eq!(run.stats.evicted.load(Ordering::Relaxed), 40);
    // Boundaries: once the two-epoch window holds shifted data only (epoch 5), they are the
    // quantiles of [1000, 2000) within the sketch's error.
    let mut window: Vec<f64> = Vec::new();
    let mut parser = Parser::new(&spec.compile(&Schema::criteo()).unwrap());
    let mut batch = EventBatch::new(39);
    for e in events.iter().filter(|e| e.epoch == 4 || e.epoch == 5) {
        parser
            .parse_record(e.line.as_bytes(), 0, &mut batch)
            .unwrap();
    }
    window.extend(column(&batch, 0).filter_map(|v| match v {
        Value::Num(x) => Some(*x),
        _ => None,
    }));
    window.sort_by(f64::total_cmp);
    let b5 = boundaries(5);
    assert_eq!(b5.len(), 9);
    assert!(b5.iter().all(|&x| (1000.0..2000.0).contains(&x)));
    assert!(
        max_boundary_error(&b5, 10, &window)
            <= error_for_k(millrace_models::fmap::kll::k_for_error(0.01))
    );
    assert!(run.stats.boundary_shifts_total.load(Ordering::Relaxed) >= 9);
}

/// What the trainer handed out after each epoch (`None`: at the end): the epoch, the
/// FeatureMap version its weights belong to, and the weights.
type Trained = Vec<(Option<u64>, u64, Vec<f32>)>;

/// Every new FeatureMap version worker 0 made, with the transition to it.
type Versions = Vec<(Arc<FeatureMap>, Transition)>;

/// Parse → featurize → train over `events`, publishing every 2000 events into `registry`.
fn train(
    workers: usize,
    spec: &FeatureMapSpec,
    events: &[Event],
    registry: &Registry,
) -> (Trained, Versions, Arc<TrainerStats>) {
    let layout = spec.compile(&Schema::criteo()).unwrap();
    let trained = Arc::new(Mutex::new(Vec::new()));
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(TrainerStats::new());
    let lines: Arc<Vec<(String, u64)>> =
        Arc::new(events.iter().map(|e| (e.line.clone(), e.epoch)).collect());
    let config = TrainerConfig {
        model: "ctr".into(),
        features: FeatureSpec::Map(spec.clone()),
        learner: LearnerParams::Ftrl(FtrlParams::default()),
        publish: PublishPolicy {
            every_events: 2000,
            every: Duration::from_secs(3600),
        },
        registry: registry.clone(),
        mirror: None,
        predictions: false,
    };
    let (tr, tx, st) = (trained.clone(), transitions.clone(), stats.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<EventBatch>>>::new();
        let probe = ProbeHandle::new();
        let (layout, tr, tx, st) = (layout.clone(), tr.clone(), tx.clone(), st.clone());
        let config = config.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let map = FeatureMap::new(layout.clone());
            let (rows, updates) = scope.input_from(&mut input).featurize(
                map.clone(),
                Arc::new(FeaturizeStats::default()),
                &Checkpoints::none(),
                move |map, transition| {
                    if index == 0 {
                        tx.lock().unwrap().push((map.clone(), transition.clone()));
                    }
                },
            );
            rows.probe_with(&probe).train_rows(
                updates,
                map,
                config,
                st,
                &Checkpoints::none(),
                move |epoch, learner, map| {
                    let Learner::Ftrl(ftrl) = learner else {
                        unreachable!("an FTRL learner was asked for")
                    };
                    tr.lock()
                        .unwrap()
                        .push((epoch, map.version, ftrl.weights()));
                },
            );
        });
        feed(worker, input, &probe, &lines, &layout);
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let trained = std::mem::take(&mut *trained.lock().unwrap());
    let transitions = std::mem::take(&mut *transitions.lock().unwrap());
    (trained, transitions, stats)
}

#[test]
fn the_trainer_follows_featuremap_versions_with_1_2_and_4_workers() {
    let spec = FeatureMapSpec::criteo_default();
    let events = criteo_like(4, 1500, 11);
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let (one, made, stats) = train(1, &spec, &events, &registry);
    assert_eq!(stats.learned.load(Ordering::Relaxed), events.len() as u64);
    assert_eq!(stats.skipped_rows.load(Ordering::Relaxed), 0);
    assert!(
        made.iter().any(|(_, t)| !t.moved.is_empty()),
        "boundaries should move between versions, or carrying is not tested"
    );

    // The batch computation: each epoch's events, in input order, transformed by the version
    // fitted on the epochs before (the run's own versions, which the test above checks against
    // a batch computation), learned in input order, then carried to the next version.
    let layout = spec.compile(&Schema::criteo()).unwrap();
    let mut parser = Parser::new(&layout);
    let mut map = FeatureMap::new(layout.clone());
    let mut learner = millrace_models::Ftrl::new(FtrlParams::default(), map.dimension());
    let mut versions = Vec::new();
    // (events learned, FeatureMap version, weights) every 2000 events: what is published.
    let mut every_2000 = Vec::new();
    let mut learned = 0;
    for epoch in 0..4u64 {
        let mut batch = EventBatch::new(39);
        for event in events.iter().filter(|e| e.epoch == epoch) {
            parser
                .parse_record(event.line.as_bytes(), time_of(epoch), &mut batch)
                .unwrap();
        }
        let rows = map.transform(&batch, &mut Default::default());
        for i in 0..rows.len() {
            let (indices, values) = rows.row(i);
            learner.learn_weighted(indices, values, rows.labels[i]);
            learned += 1;
            if learned % 2000 == 0 {
                every_2000.push((learned, map.version, learner.weights()));
            }
        }
        versions.push((Some(epoch), map.version, learner.weights()));
        if let Some((next, transition)) = made.get(epoch as usize) {
            map = FeatureMap::clone(next);
            learner.carry(transition);
        }
    }
    versions.push((None, map.version, learner.weights()));
    assert_eq!(one, versions, "1 worker against the batch computation");

    // Published every 2000 events (batches of 250 end there), each version with the FeatureMap
    // version its weights belong to; the end had nothing new to publish.
    assert_eq!(registry.versions("ctr").unwrap(), [1, 2, 3]);
    for (version, (learned, map_version, weights)) in (1..).zip(&every_2000) {
        let model = registry.load("ctr", version).unwrap();
        assert_eq!(model.meta.trained_events, *learned);
        let stored = model.feature_map.as_ref().unwrap();
        assert_eq!(stored.version, *map_version, "model version {version}");
        assert_eq!(model.values("weights"), weights, "model version {version}");
    }
    assert_eq!(
        registry.load("ctr", 1).unwrap().feature_map.as_deref(),
        Some(made[0].0.as_ref())
    );

    for workers in [2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let (trained, _, stats) = train(workers, &spec, &events, &registry);
        assert_eq!(stats.learned.load(Ordering::Relaxed), events.len() as u64);
        assert_eq!(stats.skipped_rows.load(Ordering::Relaxed), 0);
        let epochs: Vec<(Option<u64>, u64)> = trained.iter().map(|(e, v, _)| (*e, *v)).collect();
        assert_eq!(
            epochs,
            [
                (Some(0), 0),
                (Some(1), 1),
                (Some(2), 2),
                (Some(3), 3),
                (None, 4)
            ],
            "{workers} workers"
        );
        // Several workers publish only between rounds, one per epoch of 1500 events: at the
        // first round that brings 2000 new events.
        let published: Vec<u64> = registry
            .versions("ctr")
            .unwrap()
            .into_iter()
            .map(|v| registry.load("ctr", v).unwrap().meta.trained_events)
            .collect();
        assert_eq!(published, [3000, 6000], "{workers} workers");
        assert!(trained
            .iter()
            .all(|(_, _, w)| w.iter().all(|x| x.is_finite())));
    }
}

#[test]
fn parsed_events_take_their_records_timestamps() {
    use millrace_models::RawRecord;
    use millrace_operators::ParseEvents;
    use timely::dataflow::operators::ToStream;

    let layout = FeatureMapSpec::criteo_default()
        .compile(&Schema::criteo())
        .unwrap();
    let line = format!("1\t5{}", "\t".repeat(38));
    let times = Arc::new(Mutex::new(Vec::<u64>::new()));
    let out = times.clone();
    timely::example(move |scope| {
        let record = |offset, timestamp_ms| RawRecord {
            partition: 0,
            offset,
            payload: line.clone().into_bytes(),
            timestamp_ms,
        };
        let records = vec![record(0, Some(1_700_000_000_123)), record(1, None)];
        let (events, _dead) = records.to_stream(scope).parse_events(
            layout,
            Arc::new(FeaturizeStats::default()),
            &Checkpoints::none(),
        );
        events.inspect(move |batch: &EventBatch| out.lock().unwrap().extend(&batch.times));
    });
    let times = times.lock().unwrap();
    assert_eq!(times[0], 1_700_000_000_123);
    assert!(
        times[1] > 1_700_000_000_123,
        "the wall clock for a record without a timestamp: {}",
        times[1]
    );
}
