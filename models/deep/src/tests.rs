use super::*;
use millrace_learners::exact_auc;
use millrace_samples::{FieldInfo, SampleFields, SampleRows};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tch::Device;

/// Three one-hot fields: `user` (40 ids), `item` (40 ids) and `noise` (10 ids), from slot 1.
fn fields() -> SampleFields {
    let field = |name: &str, offset, width| FieldInfo {
        name: name.to_owned(),
        offset,
        width,
    };
    SampleFields::new(vec![
        field("one_hot:user", 1, 40),
        field("one_hot:item", 41, 40),
        field("one_hot:noise", 81, 10),
    ])
    .unwrap()
}

/// Rows whose click probability is `sigmoid(4·u_user·v_item − 1)` with latent vectors of two
/// dimensions per value: a preference no per-value weight explains. Returns the rows and each
/// row's true probability.
fn planted(rows: usize, seed: u64) -> (SampleRows, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let latent = |rng: &mut ChaCha8Rng| -> Vec<[f32; 2]> {
        (0..40)
            .map(|_| [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)])
            .collect()
    };
    let (users, items) = (latent(&mut rng), latent(&mut rng));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = SampleRows::new();
    let mut truth = Vec::new();
    for _ in 0..rows {
        let (u, i, n) = (
            rng.random_range(0..40usize),
            rng.random_range(0..40usize),
            rng.random_range(0..10u32),
        );
        let dot = users[u][0] * items[i][0] + users[u][1] * items[i][1];
        let p = 1.0 / (1.0 + (-(4.0 * dot - 1.0)).exp());
        truth.push(p);
        out.epochs.push(0);
        out.event_times.push(None);
        out.versions.push(1);
        out.labels.push(rng.random::<f32>() < p);
        out.fields.extend([0, 1, 2]);
        out.ids.extend([u as u32, i as u32, n]);
        out.values.extend([1.0, 1.0, 1.0]);
        out.offsets.push(out.ids.len() as u32);
    }
    (out, truth)
}

fn spec(model: DeepKind) -> DeepSpec {
    DeepSpec {
        model,
        embedding_dim: 4,
        mlp: vec![16],
        learning_rate: 0.01,
        batch_size: 256,
        passes: 4,
        ..DeepSpec::default()
    }
}

#[test]
fn deepfm_and_dcnv2_learn_a_preference_no_per_value_weight_explains() {
    let (rows, truth) = planted(24_000, 1);
    let (train, holdout) = (0..20_000, 20_000..24_000);
    let labels = &rows.labels[holdout.clone()];
    let bayes = exact_auc(&truth[holdout.clone()], labels).unwrap();
    // The best per-value additive score: each value's click rate in the training rows.
    let mut rate = vec![(0.0f32, 0.0f32); 90];
    for r in train.clone() {
        let (_, ids, _) = rows.entries(r);
        for (f, &id) in ids.iter().enumerate() {
            let slot = &mut rate[f * 40 + id as usize];
            slot.0 += f32::from(u8::from(rows.labels[r]));
            slot.1 += 1.0;
        }
    }
    let additive: Vec<f32> = holdout
        .clone()
        .map(|r| {
            let (_, ids, _) = rows.entries(r);
            ids.iter()
                .enumerate()
                .map(|(f, &id)| {
                    let (c, n) = rate[f * 40 + id as usize];
                    (c + 1.0) / (n + 2.0)
                })
                .map(|p| (p / (1.0 - p)).ln())
                .sum()
        })
        .collect();
    let additive = exact_auc(&additive, labels).unwrap();
    for kind in [DeepKind::DeepFm, DeepKind::DcnV2] {
        let mut trainer = Trainer::new(&spec(kind), &fields(), Device::Cpu).unwrap();
        trainer.train(&rows, train.clone()).unwrap();
        let quality = trainer.evaluate(&rows, holdout.clone()).unwrap();
        let auc = quality.auc.unwrap();
        eprintln!(
            "{}: holdout auc {auc:.4}, additive {additive:.4}, bayes {bayes:.4}",
            kind.name()
        );
        assert!(
            auc > additive + 0.05 && auc > bayes - 0.03,
            "{}: auc {auc:.4}, additive {additive:.4}, bayes {bayes:.4}",
            kind.name()
        );
        assert!(quality.logloss.unwrap().is_finite());
    }
}

#[test]
fn a_rows_score_does_not_depend_on_the_batch_it_is_in() {
    let (rows, _) = planted(64, 2);
    for kind in [DeepKind::DeepFm, DeepKind::DcnV2] {
        let mut trainer = Trainer::new(&spec(kind), &fields(), Device::Cpu).unwrap();
        trainer.train(&rows, 0..64).unwrap();
        let together = trainer.predict(&rows, 0..64).unwrap();
        for r in [0, 17, 63] {
            let alone = trainer.predict(&rows, r..r + 1).unwrap();
            assert!(
                (alone[0] - together[r]).abs() < 1e-6,
                "{}: row {r}",
                kind.name()
            );
        }
    }
}

#[test]
fn the_same_seed_trains_the_same_weights() {
    let (rows, _) = planted(2_000, 3);
    let run = || {
        let mut trainer = Trainer::new(&spec(DeepKind::DeepFm), &fields(), Device::Cpu).unwrap();
        trainer.train(&rows, 0..2_000).unwrap();
        trainer.predict(&rows, 0..100).unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn rows_outside_the_layout_and_bad_settings_are_errors() {
    let (mut rows, _) = planted(10, 4);
    rows.ids[4] = 40;
    let trainer = Trainer::new(&spec(DeepKind::DeepFm), &fields(), Device::Cpu).unwrap();
    assert!(matches!(
        trainer.predict(&rows, 0..10),
        Err(DeepError::Rows(_))
    ));
    let bad = DeepSpec {
        embedding_dim: 0,
        batch_size: 0,
        learning_rate: f64::NAN,
        ..DeepSpec::default()
    };
    let Err(DeepError::Spec(problems)) = Trainer::new(&bad, &fields(), Device::Cpu) else {
        panic!("bad settings were taken");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// A layout of two vocabularies and a bucketized number (with a bias slot first), and its map.
fn small_map() -> (
    millrace_events::FeatureSpec,
    Arc<millrace_events::FeatureMap>,
) {
    let schema: millrace_events::SchemaSpec = toml::from_str(
        r#"
format = "csv"
fields = [
  { name = "click", type = "label" },
  { name = "user", type = "category" },
  { name = "item", type = "category" },
  { name = "price", type = "number" },
]
"#,
    )
    .unwrap();
    let features: millrace_events::FeatureSpec = toml::from_str(
        r#"
type = "map"
[[transform]]
kind = "one_hot"
fields = ["user", "item"]
capacity = 50
min_count = 1
[[transform]]
kind = "bucketize"
fields = ["price"]
buckets = 4
"#,
    )
    .unwrap();
    let layout = features.compile(&schema.compile().unwrap()).unwrap();
    let map = Arc::new(millrace_events::FeatureMap::new(layout));
    (features, map)
}

/// Seeded rows of `fields`: each feature an entry (or two) with a random id and value.
fn random_rows(fields: &SampleFields, rows: usize, seed: u64) -> SampleRows {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = SampleRows::new();
    for _ in 0..rows {
        for (f, field) in fields.fields().iter().enumerate() {
            for _ in 0..rng.random_range(1..=2) {
                out.fields.push(f as u16);
                out.ids.push(rng.random_range(0..field.width));
                out.values.push(rng.random_range(-2.0..2.0));
            }
        }
        out.offsets.push(out.ids.len() as u32);
        out.labels.push(rng.random::<f32>() < 0.3);
        out.epochs.push(0);
        out.event_times.push(None);
        out.versions.push(0);
    }
    out
}

#[test]
fn serving_scores_a_deep_artifact_as_libtorch_does_without_it() {
    let (features, map) = small_map();
    let fields = SampleFields::of_layout(&map.layout).unwrap();
    let rows = random_rows(&fields, 300, 8);
    for kind in [DeepKind::DeepFm, DeepKind::DcnV2] {
        let mut trainer = Trainer::new(&spec(kind), &fields, Device::Cpu).unwrap();
        trainer.train(&rows, 0..300).unwrap();
        let want = trainer.predict(&rows, 0..300).unwrap();
        let artifact = trainer
            .to_artifact("deep", features.clone(), map.clone())
            .unwrap();
        assert_eq!(artifact.problems(), Vec::<String>::new(), "{}", kind.name());
        let served = millrace_artifacts::ServedModel::from_artifact(&artifact);
        for (r, &want) in want.iter().enumerate() {
            let (fs, ids, values) = rows.entries(r);
            // As the transform makes them: the bias slot first, then global slots.
            let mut slots = vec![0u32];
            let mut vals = vec![1.0f32];
            for (&f, &id) in fs.iter().zip(ids) {
                slots.push(fields.fields()[usize::from(f)].offset + id);
            }
            vals.extend_from_slice(values);
            let from_artifact = artifact.predict_row(&slots, &vals);
            let from_served = served.predict_row(&slots, &vals);
            assert!(
                (from_artifact - want).abs() < 1e-5 && (from_served - want).abs() < 1e-5,
                "{} row {r}: libtorch {want}, artifact {from_artifact}, served {from_served}",
                kind.name()
            );
        }
    }
}

#[test]
fn a_deep_artifact_round_trips_the_registry() {
    let (features, map) = small_map();
    let fields = SampleFields::of_layout(&map.layout).unwrap();
    let rows = random_rows(&fields, 50, 9);
    let trainer = Trainer::new(&spec(DeepKind::DcnV2), &fields, Device::Cpu).unwrap();
    let mut artifact = trainer.to_artifact("deep", features, map).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = millrace_artifacts::Registry::open(dir.path()).unwrap();
    let version = registry.publish(&mut artifact).unwrap();
    let loaded = registry.load("deep", version).unwrap();
    assert_eq!(loaded.meta.architecture, artifact.meta.architecture);
    assert_eq!(loaded.tensors, artifact.tensors);
    let (fs, ids, values) = rows.entries(0);
    let slots: Vec<u32> = fs
        .iter()
        .zip(ids)
        .map(|(&f, &id)| fields.fields()[usize::from(f)].offset + id)
        .collect();
    assert_eq!(
        loaded.predict_row(&slots, values),
        artifact.predict_row(&slots, values)
    );
}

#[test]
fn a_warm_start_from_an_artifact_predicts_as_the_model_it_was_made_from() {
    let (features, map) = small_map();
    let fields = SampleFields::of_layout(&map.layout).unwrap();
    let rows = random_rows(&fields, 200, 10);
    let mut trained = Trainer::new(&spec(DeepKind::DeepFm), &fields, Device::Cpu).unwrap();
    trained.train(&rows, 0..200).unwrap();
    let artifact = trained
        .to_artifact("deep", features.clone(), map.clone())
        .unwrap();
    let fresh = DeepSpec {
        seed: 99,
        ..spec(DeepKind::DeepFm)
    };
    let mut warm = Trainer::new(&fresh, &fields, Device::Cpu).unwrap();
    assert_ne!(
        warm.predict(&rows, 0..20).unwrap(),
        trained.predict(&rows, 0..20).unwrap()
    );
    warm.warm_start(&artifact).unwrap();
    assert_eq!(
        warm.predict(&rows, 0..200).unwrap(),
        trained.predict(&rows, 0..200).unwrap()
    );
    let mut other = Trainer::new(&spec(DeepKind::DcnV2), &fields, Device::Cpu).unwrap();
    assert!(matches!(
        other.warm_start(&artifact),
        Err(DeepError::Rows(_))
    ));
}

#[test]
fn the_gate_refuses_a_worse_or_broken_candidate_and_says_why() {
    let quality = |auc: f64, logloss: f64| Quality {
        rows: 1000,
        auc: Some(auc),
        logloss: Some(logloss),
    };
    let gate = Gate::default();
    let current = quality(0.75, 0.45);
    assert_eq!(
        gate.judge(&quality(0.76, 0.44), Some(&current), true),
        Verdict::Publish
    );
    assert_eq!(
        gate.judge(&quality(0.749, 0.452), Some(&current), true),
        Verdict::Publish
    );
    assert_eq!(
        gate.judge(&quality(0.70, 0.60), None, true),
        Verdict::Publish
    );
    let Verdict::Refuse(reasons) = gate.judge(&quality(0.74, 0.47), Some(&current), true) else {
        panic!("a worse candidate passed");
    };
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("AUC") && reasons[1].contains("log-loss"));
    let Verdict::Refuse(reasons) = gate.judge(&quality(0.80, 0.40), Some(&current), false) else {
        panic!("a candidate with a non-finite weight passed");
    };
    assert!(reasons[0].contains("not finite"));
    let one_class = Quality {
        rows: 10,
        auc: None,
        logloss: Some(0.1),
    };
    assert!(matches!(
        gate.judge(&one_class, None, true),
        Verdict::Refuse(_)
    ));
    let nan = quality(f64::NAN, 0.4);
    assert!(matches!(gate.judge(&nan, None, true), Verdict::Refuse(_)));
    let bad = Gate {
        auc_tolerance: -1.0,
        logloss_tolerance: f64::NAN,
    };
    assert_eq!(bad.problems().len(), 2);
}

#[test]
fn a_trainer_says_whether_its_weights_are_finite() {
    let (features, map) = small_map();
    let fields = SampleFields::of_layout(&map.layout).unwrap();
    let rows = random_rows(&fields, 200, 11);
    let mut trainer = Trainer::new(&spec(DeepKind::DeepFm), &fields, Device::Cpu).unwrap();
    trainer.train(&rows, 0..200).unwrap();
    assert!(trainer.finite());
    // A weight every row reads (the output layer's bias) gone NaN.
    let mut broken = trainer.to_artifact("deep", features, map).unwrap();
    broken.tensor_mut("out.bias").unwrap().values[0] = f32::NAN;
    let mut warm = Trainer::new(&spec(DeepKind::DeepFm), &fields, Device::Cpu).unwrap();
    warm.warm_start(&broken).unwrap();
    assert!(!warm.finite());
    // Its scores are then no AUC at all, rather than a number.
    assert_eq!(warm.evaluate(&rows, 0..200).unwrap().auc, None);
}

/// `spec(kind)` with its embedding rows learning by row-wise AdaGrad, placed `placement`.
fn rowwise(kind: DeepKind, placement: Placement) -> DeepSpec {
    DeepSpec {
        embeddings: EmbeddingSpec {
            placement,
            optimizer: SparseOptimizer::RowwiseAdagrad,
            learning_rate: 0.05,
            ..EmbeddingSpec::default()
        },
        passes: 1,
        ..spec(kind)
    }
}

/// The largest difference between two trainers' weights of the same names, but for the rows
/// of slot 0, which no row of [`fields`] has (a plain table holds its initial row, a host table
/// none).
fn largest_difference(a: &Trainer, b: &Trainer) -> f64 {
    let (a, b) = (a.named_weights(), b.named_weights());
    assert_eq!(
        a.iter().map(|n| &n.0).collect::<Vec<_>>(),
        b.iter().map(|n| &n.0).collect::<Vec<_>>()
    );
    a.iter()
        .zip(&b)
        .map(|((name, x), (_, y))| {
            let (x, y) = if name.contains("embedding") {
                (
                    x.narrow(0, 1, x.size()[0] - 1),
                    y.narrow(0, 1, y.size()[0] - 1),
                )
            } else {
                (x.shallow_clone(), y.shallow_clone())
            };
            (x - y).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_host_table_trains_the_weights_a_plain_embedding_model_does() {
    let (rows, _) = planted(3_000, 12);
    for kind in [DeepKind::DeepFm, DeepKind::DcnV2] {
        let mut host =
            Trainer::new(&rowwise(kind, Placement::Host), &fields(), Device::Cpu).unwrap();
        let mut plain =
            Trainer::new(&rowwise(kind, Placement::Device), &fields(), Device::Cpu).unwrap();
        assert!(plain.table_stats().is_none());
        // Before any step the host table has no rows (zeros), the plain one every slot's.
        host.train(&rows, 0..3_000).unwrap();
        plain.train(&rows, 0..3_000).unwrap();
        let difference = largest_difference(&host, &plain);
        assert!(difference < 1e-5, "{}: {difference}", kind.name());
        let (p, q) = (
            host.predict(&rows, 0..500).unwrap(),
            plain.predict(&rows, 0..500).unwrap(),
        );
        assert!(p.iter().zip(&q).all(|(a, b)| (a - b).abs() < 1e-5));
        let stats = host.table_stats().unwrap();
        // Every one of the 90 values (slots 1..=90) was seen, and each step gathered its rows.
        assert_eq!((stats.rows, stats.created), (90, 90), "{stats:?}");
        assert!(stats.gathered >= 12 * 80, "{stats:?}");
        let width = 4 + usize::from(kind == DeepKind::DeepFm);
        assert_eq!(stats.row_bytes, width * 4);
        assert!(stats.bytes >= 90 * width * 4);
    }
}

#[test]
fn a_host_table_admits_frequent_ids_drops_unseen_ones_and_stays_bounded() {
    let mut spec = rowwise(DeepKind::DeepFm, Placement::Host);
    spec.embeddings.min_count = 3;
    let mut table = HostTable::new(&spec).unwrap();
    let once = Unique::of(&[5, 6, 6, 6]);
    let rows = table.gather(&once);
    // Slot 5 seen once: no row, zeros. Slot 6 seen three times: a row, its initial embedding.
    assert!(rows[..5].iter().all(|&x| x == 0.0));
    assert!(rows[5..9].iter().any(|&x| x != 0.0) && rows[9] == 0.0);
    table.apply(&once, &[1.0; 10]).unwrap();
    assert_eq!(table.stats().rows, 1);
    let twice = Unique::of(&[5, 5]);
    table.gather(&twice);
    table.apply(&twice, &[1.0; 5]).unwrap();
    assert_eq!(table.stats().rows, 2, "slot 5 is now seen three times");
    // A later pass over the same rows counts nothing: slot 8, seen once, stays out.
    let eight = Unique::of(&[8]);
    table.gather(&eight);
    table.apply(&eight, &[0.0; 5]).unwrap();
    table.set_counting(false);
    for _ in 0..3 {
        table.gather(&eight);
        table.apply(&eight, &[0.0; 5]).unwrap();
    }
    assert_eq!(table.stats().rows, 2);
    assert!(table.apply(&eight, &[0.0; 4]).is_err(), "a short gradient");

    let mut spec = rowwise(DeepKind::DcnV2, Placement::Host);
    spec.embeddings.evict_after_steps = 8;
    spec.embeddings.max_rows = 3;
    let mut table = HostTable::new(&spec).unwrap();
    let first = Unique::of(&[1, 2, 3, 4]);
    table.gather(&first);
    table.apply(&first, &[0.5; 16]).unwrap();
    let stats = table.stats();
    assert_eq!((stats.rows, stats.refused), (3, 1), "{stats:?}");
    // Slot 1 keeps being seen; 2 and 3 are not, and go after the span; 4 then gets a row.
    for _ in 0..10 {
        let step = Unique::of(&[1]);
        table.gather(&step);
        table.apply(&step, &[0.5; 4]).unwrap();
    }
    assert_eq!(table.stats().rows, 1);
    assert_eq!(table.stats().evicted, 2);
    let again = Unique::of(&[4]);
    let rows = table.gather(&again);
    assert!(rows.iter().any(|&x| x != 0.0));
    assert_eq!(table.stats().rows, 2);
}

#[test]
fn a_host_table_warm_starts_from_an_artifact_and_predicts_as_before() {
    let (features, map) = small_map();
    let fields = SampleFields::of_layout(&map.layout).unwrap();
    let rows = random_rows(&fields, 300, 13);
    let spec = rowwise(DeepKind::DeepFm, Placement::Host);
    let mut trained = Trainer::new(&spec, &fields, Device::Cpu).unwrap();
    trained.train(&rows, 0..300).unwrap();
    assert!(trained.finite());
    let artifact = trained.to_artifact("deep", features, map).unwrap();
    let served = millrace_artifacts::ServedModel::from_artifact(&artifact);
    let mut warm = Trainer::new(
        &DeepSpec {
            seed: 5,
            ..spec.clone()
        },
        &fields,
        Device::Cpu,
    )
    .unwrap();
    warm.warm_start(&artifact).unwrap();
    let (want, got) = (
        trained.predict(&rows, 0..300).unwrap(),
        warm.predict(&rows, 0..300).unwrap(),
    );
    assert_eq!(want, got);
    let (fs, ids, values) = rows.entries(0);
    let mut slots = vec![0u32];
    slots.extend(
        fs.iter()
            .zip(ids)
            .map(|(&f, &id)| fields.fields()[usize::from(f)].offset + id),
    );
    let mut vals = vec![1.0f32];
    vals.extend_from_slice(values);
    assert!((served.predict_row(&slots, &vals) - want[0]).abs() < 1e-5);
}

#[test]
fn a_host_table_needs_row_wise_adagrad_and_the_filters_need_a_host_table() {
    let mut bad = rowwise(DeepKind::DeepFm, Placement::Host);
    bad.embeddings.optimizer = SparseOptimizer::Adam;
    bad.embeddings.max_rows = 0;
    let Err(DeepError::Spec(problems)) = Trainer::new(&bad, &fields(), Device::Cpu) else {
        panic!("bad settings were taken");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    let mut bad = rowwise(DeepKind::DeepFm, Placement::Device);
    bad.embeddings.min_count = 2;
    assert_eq!(bad.problems().len(), 1);
}

proptest::proptest! {
    #[test]
    fn unique_slots_rebuild_their_entries(entries in proptest::collection::vec(0i64..50, 0..200)) {
        let unique = Unique::of(&entries);
        let rebuilt: Vec<i64> = unique.inverse.iter().map(|&i| unique.slots[i as usize]).collect();
        proptest::prop_assert_eq!(&rebuilt, &entries);
        let mut sorted = unique.slots.clone();
        sorted.sort_unstable();
        sorted.dedup();
        proptest::prop_assert_eq!(sorted.len(), unique.slots.len());
        proptest::prop_assert_eq!(unique.counts.iter().sum::<u32>() as usize, entries.len());
    }
}

/// The rows rank `rank` of `ranks` takes: its part of every step's `batch` rows.
fn rank_rows(rows: &SampleRows, batch: usize, rank: usize, ranks: usize) -> SampleRows {
    let per = batch / ranks;
    let picked: Vec<usize> = (0..rows.len())
        .filter(|&i| (i % batch) / per == rank)
        .collect();
    rows.select(&picked)
}

/// A rank's weights once the rows are collected, and its predictions of every row then.
type Ranked = (Vec<(String, tch::Tensor)>, Vec<f32>);

/// Trains `spec` as one rank per backend of `comms` (a thread each), each on its part of every
/// step's batch of `rows`, and returns every rank's weights and predictions once the rows are
/// collected.
fn train_ranks<C: collective::AllReduce + 'static>(
    spec: &DeepSpec,
    fields: &SampleFields,
    rows: &SampleRows,
    comms: Vec<C>,
) -> Vec<Ranked> {
    let ranks = comms.len();
    // Made one after another: libtorch's generator is the process's.
    let trainers: Vec<Trainer> = (0..ranks)
        .map(|_| Trainer::new(spec, fields, Device::Cpu).unwrap())
        .collect();
    let handles: Vec<_> = trainers
        .into_iter()
        .zip(comms)
        .enumerate()
        .map(|(rank, (mut trainer, mut comm))| {
            let mine = rank_rows(rows, spec.batch_size, rank, ranks);
            let all = rows.clone();
            std::thread::spawn(move || {
                let cancel = std::sync::atomic::AtomicBool::new(false);
                trainer
                    .train_ranked(&mine, 0..mine.len(), &cancel, &mut comm)
                    .unwrap();
                trainer.collect_rows(&mut comm).unwrap();
                let predicted = trainer.predict(&all, 0..all.len()).unwrap();
                (trainer.named_weights(), predicted)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn differences(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> f64 {
    assert_eq!(
        a.iter().map(|n| &n.0).collect::<Vec<_>>(),
        b.iter().map(|n| &n.0).collect::<Vec<_>>()
    );
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn one_two_and_four_ranks_train_the_weights_of_one_rank_on_the_whole_batch() {
    let (rows, _) = planted(3_000, 14);
    let mut host = rowwise(DeepKind::DeepFm, Placement::Host);
    host.embeddings.min_count = 2;
    let specs = [
        spec(DeepKind::DeepFm),
        spec(DeepKind::DcnV2),
        host,
        rowwise(DeepKind::DcnV2, Placement::Host),
        rowwise(DeepKind::DeepFm, Placement::Device),
    ];
    for spec in specs {
        let spec = DeepSpec { passes: 1, ..spec };
        let mut one = Trainer::new(&spec, &fields(), Device::Cpu).unwrap();
        one.train(&rows, 0..rows.len()).unwrap();
        let want = one.named_weights();
        for ranks in [1, 2, 4] {
            let got = train_ranks(&spec, &fields(), &rows, collective::Local::group(ranks));
            for (weights, predicted) in &got {
                assert_eq!(
                    differences(&got[0].0, weights),
                    0.0,
                    "{spec:?}: the ranks' replicas differ"
                );
                // Every rank predicts with the whole model, its shard or not.
                assert_eq!(predicted, &got[0].1, "{spec:?}");
            }
            let difference = differences(&got[0].0, &want);
            assert!(difference < 1e-4, "{spec:?}, {ranks} ranks: {difference}");
            let alone = one.predict(&rows, 0..rows.len()).unwrap();
            let off = alone
                .iter()
                .zip(&got[0].1)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(off < 1e-4, "{spec:?}, {ranks} ranks: predictions {off}");
        }
    }
}

/// `ranks` ring ranks on loopback ports this machine gave.
fn ring(ranks: usize) -> Vec<std::thread::JoinHandle<collective::Ring>> {
    let listeners: Vec<std::net::TcpListener> = (0..ranks)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<std::net::SocketAddr> =
        listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                collective::Ring::connect(rank, &peers, listener, Default::default()).unwrap()
            })
        })
        .collect()
}

/// Runs `each` on every rank of a ring of `ranks`, a thread each; their results by rank.
fn on_ring<T: Send + 'static>(ranks: usize, each: fn(collective::Ring) -> T) -> Vec<T> {
    let comms: Vec<collective::Ring> = ring(ranks).into_iter().map(|h| h.join().unwrap()).collect();
    let handles: Vec<_> = comms
        .into_iter()
        .map(|comm| std::thread::spawn(move || each(comm)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn the_tcp_ring_sums_and_exchanges_as_the_in_process_ranks_do() {
    use collective::AllReduce;
    for ranks in [1, 2, 3, 4] {
        let results = on_ring(ranks, |mut comm| {
            let rank = comm.rank();
            // Sizes that do and do not split evenly, and more than a receive piece.
            let mut sums = Vec::new();
            for len in [0usize, 1, 7, 1000, 300_001] {
                let mut data: Vec<f32> = (0..len).map(|i| (i * (rank + 1)) as f32 * 0.1).collect();
                comm.sum(&mut data).unwrap();
                sums.push(data);
            }
            let parts = (0..comm.ranks())
                .map(|to| format!("{rank}->{to}").into_bytes())
                .collect();
            let got = comm.exchange(parts).unwrap();
            (rank, sums, got)
        });
        let factor: usize = (1..=ranks).sum();
        for (rank, sums, got) in &results {
            assert_eq!(
                sums, &results[0].1,
                "rank {rank} of {ranks}: not bit-identical"
            );
            for data in sums {
                for (i, &x) in data.iter().enumerate() {
                    let exact = (i * factor) as f64 * 0.1;
                    assert!((f64::from(x) - exact).abs() <= 1e-6 * exact.max(1.0) * 4.0);
                }
            }
            let want: Vec<Vec<u8>> = (0..ranks)
                .map(|from| format!("{from}->{rank}").into_bytes())
                .collect();
            assert_eq!(got, &want);
        }
    }
}

#[test]
fn ranks_over_the_tcp_ring_train_as_one_rank_does() {
    let (rows, _) = planted(2_000, 15);
    let spec = DeepSpec {
        passes: 1,
        ..rowwise(DeepKind::DeepFm, Placement::Host)
    };
    let mut one = Trainer::new(&spec, &fields(), Device::Cpu).unwrap();
    one.train(&rows, 0..rows.len()).unwrap();
    let comms: Vec<collective::Ring> = ring(2).into_iter().map(|h| h.join().unwrap()).collect();
    let got = train_ranks(&spec, &fields(), &rows, comms);
    assert_eq!(differences(&got[0].0, &got[1].0), 0.0);
    assert_eq!(got[0].1, got[1].1);
    let difference = differences(&got[0].0, &one.named_weights());
    assert!(difference < 1e-4, "{difference}");
}

#[test]
fn a_peer_out_of_step_is_an_error_not_a_hang() {
    use collective::AllReduce;
    // Two ranks that disagree, and three where only the last does (its neighbours see the
    // mismatch; the rank between them sees their links close): every rank fails, then stays
    // failed.
    for ranks in [2, 3] {
        let results = on_ring(ranks, |mut comm| {
            let mut data = vec![1.0; 10 + comm.rank() / (comm.ranks() - 1)];
            let first = comm.sum(&mut data);
            (first, comm.sum(&mut [1.0]))
        });
        for (first, then) in results {
            assert!(
                matches!(first, Err(DeepError::Collective(_))),
                "{ranks}: {first:?}"
            );
            assert!(matches!(then, Err(DeepError::Collective(_))));
        }
    }
    let mut comms = ring(2).into_iter().map(|h| h.join().unwrap());
    let mut first = comms.next().unwrap();
    drop(comms);
    assert!(matches!(
        first.sum(&mut [1.0; 4]),
        Err(DeepError::Collective(_))
    ));
    assert!(matches!(
        first.exchange(vec![Vec::new()]),
        Err(DeepError::Collective(_))
    ));
}

#[test]
fn an_in_process_rank_gone_is_an_error_not_a_hang() {
    use collective::AllReduce;
    let mut group = collective::Local::group(2);
    let other = group.pop().unwrap();
    let mut first = group.pop().unwrap();
    let waiting = std::thread::spawn(move || first.sum(&mut [1.0]));
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(other);
    assert!(matches!(
        waiting.join().unwrap(),
        Err(DeepError::Collective(_))
    ));
}

/// A rank that is not on a CUDA device, or a machine without CUDA or NCCL, is an error that
/// says so (not a panic); where NCCL runs, one rank sums in place on the device and trains the
/// weights that training alone there gives.
#[cfg(feature = "nccl")]
#[test]
fn nccl_sums_on_a_cuda_device_or_says_what_is_missing() {
    let one =
        || -> Box<dyn collective::AllReduce> { Box::new(collective::Local::group(1).remove(0)) };
    let on_cpu = collective::Nccl::over(one(), Device::Cpu).unwrap_err();
    assert!(on_cpu.to_string().contains("CUDA device"), "{on_cpu}");
    let on_gpu = collective::Nccl::over(one(), Device::Cuda(0));
    let missing = match collective::Nccl::available() {
        Err(missing) => missing,
        Ok(()) => return nccl_trains_as_one_rank_alone(on_gpu.unwrap()),
    };
    assert_eq!(on_gpu.unwrap_err().to_string(), missing.to_string());
    assert!(
        missing.to_string().contains("libcuda.so")
            || missing.to_string().contains("libnccl.so")
            || missing.to_string().contains("has none"),
        "{missing}"
    );
}

#[cfg(feature = "nccl")]
fn nccl_trains_as_one_rank_alone(mut nccl: collective::Nccl) {
    use collective::AllReduce;
    let gpu = Device::Cuda(0);
    let mut numbers = tch::Tensor::from_slice(&[1.5f32, -2.0, 3.25]).to_device(gpu);
    nccl.sum_tensor(&mut numbers).unwrap();
    let back = Vec::<f32>::try_from(&numbers.to_device(Device::Cpu)).unwrap();
    assert_eq!(back, vec![1.5, -2.0, 3.25]);
    let (rows, _) = planted(3_000, 14);
    let spec = DeepSpec {
        passes: 1,
        ..spec(DeepKind::DeepFm)
    };
    let mut alone = Trainer::new(&spec, &fields(), gpu).unwrap();
    alone.train(&rows, 0..rows.len()).unwrap();
    let mut ranked = Trainer::new(&spec, &fields(), gpu).unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    ranked
        .train_ranked(&rows, 0..rows.len(), &cancel, &mut nccl)
        .unwrap();
    let difference = differences(&alone.named_weights(), &ranked.named_weights());
    assert!(difference < 1e-4, "{difference}");
}

/// Loss scaling by a power of two, undone before the optimizers, trains the weights that
/// training without it gives; a scale so large that the gradients overflow skips the steps
/// and halves, so the weights stay where they were. (The scaling of mixed precision, tested
/// on the CPU, where the forward pass stays f32; `mixed_precision` asked for there trains in
/// f32 as before.)
#[test]
fn loss_scaling_trains_the_same_weights_and_an_overflow_skips_the_step() {
    let (rows, _) = planted(2_000, 21);
    for kind in [DeepKind::DeepFm, DeepKind::DcnV2] {
        for placement in [Placement::Device, Placement::Host] {
            let spec = DeepSpec {
                passes: 1,
                ..rowwise(kind, placement)
            };
            let mut plain = Trainer::new(&spec, &fields(), Device::Cpu).unwrap();
            plain.train(&rows, 0..rows.len()).unwrap();
            let asked = DeepSpec {
                mixed_precision: true,
                ..spec.clone()
            };
            let mut on_cpu = Trainer::new(&asked, &fields(), Device::Cpu).unwrap();
            assert_eq!(on_cpu.loss_scale(), None, "f32 on the CPU");
            on_cpu.train(&rows, 0..rows.len()).unwrap();
            assert_eq!(
                differences(&plain.named_weights(), &on_cpu.named_weights()),
                0.0
            );

            let mut scaled = Trainer::new(&spec, &fields(), Device::Cpu).unwrap();
            scaled.scale_losses_from(65_536.0);
            scaled.train(&rows, 0..rows.len()).unwrap();
            let difference = differences(&plain.named_weights(), &scaled.named_weights());
            assert!(difference < 1e-6, "{kind:?} {placement:?}: {difference}");

            // A host table makes a row when a step first gathers it, whether the step
            // applies or not: compare from the second pass on, every row made.
            let mut overflowing = Trainer::new(&spec, &fields(), Device::Cpu).unwrap();
            overflowing.scale_losses_from(2f64.powi(200));
            overflowing.train(&rows, 0..rows.len()).unwrap();
            let before = overflowing.named_weights();
            let before: Vec<_> = before.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
            overflowing.train(&rows, 0..rows.len()).unwrap();
            let steps = 2 * rows.len().div_ceil(spec.batch_size) as i32;
            assert_eq!(overflowing.loss_scale(), Some(2f64.powi(200 - steps)));
            assert_eq!(differences(&before, &overflowing.named_weights()), 0.0);
        }
    }
}

/// Where libtorch sees a GPU (perf/gpu.sh runs this there; here it has nothing to compare):
/// training on it gives the CPU's predictions, with the embeddings on the device or on the
/// host, and mixed precision learns as well as f32.
#[test]
fn on_a_gpu_training_matches_the_cpu_and_mixed_precision_learns() {
    let Ok(gpu) = parse_device("cuda") else {
        return;
    };
    let (rows, _) = planted(24_000, 1);
    let (train, holdout) = (0..20_000, 20_000..24_000);
    for spec in [
        spec(DeepKind::DeepFm),
        rowwise(DeepKind::DeepFm, Placement::Host),
        rowwise(DeepKind::DcnV2, Placement::Host),
    ] {
        let trained = |spec: &DeepSpec, device| {
            let mut trainer = Trainer::new(spec, &fields(), device).unwrap();
            trainer.train(&rows, train.clone()).unwrap();
            trainer
        };
        let cpu = trained(&spec, Device::Cpu)
            .predict(&rows, holdout.clone())
            .unwrap();
        let on_gpu = trained(&spec, gpu);
        let largest = cpu
            .iter()
            .zip(on_gpu.predict(&rows, holdout.clone()).unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(largest < 1e-3, "{spec:?}: {largest}");
        let mixed = DeepSpec {
            mixed_precision: true,
            ..spec.clone()
        };
        let mixed = trained(&mixed, gpu);
        assert!(mixed.loss_scale().is_some());
        let f32_auc = on_gpu
            .evaluate(&rows, holdout.clone())
            .unwrap()
            .auc
            .unwrap();
        let mixed_auc = mixed.evaluate(&rows, holdout.clone()).unwrap().auc.unwrap();
        assert!(
            mixed_auc > f32_auc - 0.01,
            "{spec:?}: {mixed_auc} vs {f32_auc}"
        );
    }
}

/// Ranks that start apart (rank 0 warm started from a version, the others fresh from another
/// seed) hold rank 0's weights after a broadcast, each with its own shard of a host table: 1,
/// 2 and 4 ranks, both placements.
#[test]
fn a_broadcast_gives_every_rank_rank_zeros_weights() {
    let (features, map) = small_map();
    let fields = SampleFields::of_layout(&map.layout).unwrap();
    let rows = random_rows(&fields, 300, 17);
    for placement in [Placement::Host, Placement::Device] {
        let spec = rowwise(DeepKind::DeepFm, placement);
        let mut trained = Trainer::new(&spec, &fields, Device::Cpu).unwrap();
        trained.train(&rows, 0..300).unwrap();
        let artifact = trained
            .to_artifact("deep", features.clone(), map.clone())
            .unwrap();
        let want = trained.named_weights();
        for ranks in [1, 2, 4] {
            let handles: Vec<_> = collective::Local::group(ranks)
                .into_iter()
                .map(|mut comm| {
                    let rank = collective::AllReduce::rank(&comm);
                    let seed = 5 + rank as u64;
                    let mut trainer = Trainer::new(
                        &DeepSpec {
                            seed,
                            ..spec.clone()
                        },
                        &fields,
                        Device::Cpu,
                    )
                    .unwrap();
                    if rank == 0 {
                        trainer.warm_start(&artifact).unwrap();
                    }
                    std::thread::spawn(move || {
                        trainer.broadcast(&mut comm).unwrap();
                        trainer.collect_rows(&mut comm).unwrap();
                        trainer.named_weights()
                    })
                })
                .collect();
            for got in handles.into_iter().map(|h| h.join().unwrap()) {
                assert_eq!(
                    differences(&got, &want),
                    0.0,
                    "{placement:?}, {ranks} ranks"
                );
            }
        }
    }
}

/// The fused CPU Adam of the device table steps as libtorch's Adam does (to rounding), drops
/// the gradients between steps, and leaves a tensor without a gradient where it was.
#[test]
fn the_fused_adam_steps_as_libtorchs() {
    use tch::nn::OptimizerConfig;
    // Fixed numbers, not libtorch's process-wide generator, which other tests seed and draw.
    let wave = |phase: f64| {
        (tch::Tensor::arange(8_000, (tch::Kind::Float, Device::Cpu)) * 0.37 + phase)
            .sin()
            .reshape([1000, 8])
    };
    let init = wave(0.0);
    let make = || {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("embedding", &init);
        (vs, w)
    };
    let ((ours_vs, ours_w), (theirs_vs, theirs_w)) = (make(), make());
    let mut ours = crate::adam::Adam::new(&ours_vs, 0.01).unwrap();
    assert!(matches!(ours, crate::adam::Adam::Fused(_)));
    let mut theirs = tch::nn::Adam::default().build(&theirs_vs, 0.01).unwrap();
    for step in 0..30 {
        let target = wave(1.0 + f64::from(step));
        ours.zero_grad();
        theirs.zero_grad();
        assert!(!ours_w.grad().defined(), "dropped, not zeroed");
        (&ours_w - &target)
            .square()
            .sum(tch::Kind::Float)
            .backward();
        (&theirs_w - &target)
            .square()
            .sum(tch::Kind::Float)
            .backward();
        ours.step().unwrap();
        theirs.step();
    }
    let difference = (&ours_w - &theirs_w).abs().max().double_value(&[]);
    assert!(difference < 1e-5, "{difference}");
    assert!(
        (&ours_w - &init).abs().max().double_value(&[]) > 0.1,
        "it moved"
    );
    let before = ours_w.copy();
    ours.zero_grad();
    ours.step().unwrap();
    assert_eq!((&ours_w - &before).abs().max().double_value(&[]), 0.0);
}
