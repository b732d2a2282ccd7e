//! A deep model against the online FTRL model on the same generated rows: with preferences
//! planted between category fields (latent vectors per value, as users and items have), DeepFM
//! and DCN-v2 trained by `bench train` beat FTRL trained by `bench online` on the same held-out
//! rows.
#![cfg(feature = "deep")]

use millrace_deep::{DeepKind, DeepSpec, Device};
use millrace_engine::bench::online::{online, OnlineBenchConfig, OnlineModel};
use millrace_engine::bench::train::train;
use millrace_engine::spec::JobSpec;
use millrace_models::schema::synth::SchemaGenerator;
use std::path::Path;

/// Six category fields, vocabularies of at most 5,000 ids, FTRL.
const JOB: &str = r#"
name = "deep"
[source]
type = "file"
path = "unused.csv"
[schema]
format = "csv"
fields = [
  { name = "click", type = "label" },
  { name = "a", type = "category" },
  { name = "b", type = "category" },
  { name = "c", type = "category" },
  { name = "d", type = "category" },
  { name = "e", type = "category" },
  { name = "f", type = "category" },
]
[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["a", "b", "c", "d", "e", "f"]
min_count = 1
capacity = 5000
[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.1
l2 = 1.0
[publish]
registry = "unused"
"#;

/// Writes `rows` generated events of the job's schema, with preferences of rank `rank`.
fn write(path: &Path, job: &JobSpec, rows: usize, rank: usize) -> f64 {
    let generator =
        SchemaGenerator::new(&job.event_schema().unwrap(), 5).with_interactions(rank, 2.5, 5);
    if rank > 0 {
        assert_eq!(generator.interacting_fields(), vec!["a", "c", "d"]);
    }
    let (mut text, mut probabilities, mut labels) = (String::new(), Vec::new(), Vec::new());
    for generated in generator.take(rows) {
        text += &generated.record;
        text.push('\n');
        probabilities.push(generated.probability);
        labels.push(generated.label);
    }
    std::fs::write(path, text).unwrap();
    millrace_models::exact_auc(&probabilities, &labels).unwrap()
}

/// Holdout AUCs of FTRL (one pass, in order) and of `kind` (three passes, Adam at
/// `learning_rate`) on `file`.
fn aucs(file: &Path, job: &JobSpec, kind: DeepKind, learning_rate: f64) -> (f64, f64) {
    let config = OnlineBenchConfig {
        holdout: 0.2,
        epoch_rows: 1000,
        workers: 1,
        sync_rows: 10_000,
        q213: false,
        int8: false,
        publish_every: None,
    };
    let ftrl = online(file, &OnlineModel::of_job(job).unwrap(), &config, None)
        .unwrap()
        .holdout_auc
        .unwrap();
    let spec = DeepSpec {
        model: kind,
        embedding_dim: 8,
        mlp: vec![32],
        learning_rate,
        batch_size: 512,
        passes: 3,
        ..DeepSpec::default()
    };
    let deep = train(file, job, (&spec, 0.2, Device::Cpu), None)
        .unwrap()
        .holdout_auc
        .unwrap();
    (ftrl, deep)
}

#[test]
fn deep_models_beat_ftrl_where_preferences_are_planted() {
    let job = JobSpec::from_toml(JOB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("planted.csv");
    let bayes = write(&planted, &job, 60_000, 4);
    // DCN-v2's cross layers take a smaller step than DeepFM's sums of embeddings.
    let runs = [
        (DeepKind::DeepFm, 1e-2, 0.01),
        (DeepKind::DcnV2, 3e-3, 0.005),
    ];
    for (kind, learning_rate, margin) in runs {
        let (ftrl, deep) = aucs(&planted, &job, kind, learning_rate);
        eprintln!(
            "planted, {}: ftrl {ftrl:.4}, deep {deep:.4}, bayes {bayes:.4}",
            kind.name()
        );
        assert!(
            deep >= ftrl + margin,
            "{}: deep {deep:.4} against ftrl {ftrl:.4}",
            kind.name()
        );
    }
}

/// The binary starts on a machine without CUDA or NCCL, and asking it for NCCL there says
/// which library is missing and exits non-zero, without a panic; where NCCL runs, it measures.
#[cfg(feature = "nccl")]
#[test]
fn asking_for_nccl_says_what_is_missing_or_measures() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["bench", "allreduce", "--backend", "nccl", "--ranks", "1"])
        .args(["--bytes", "4K"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    match millrace_deep::collective::Nccl::available() {
        Err(missing) => {
            assert!(!out.status.success());
            assert!(stderr.contains(&missing.to_string()), "{stderr}");
        }
        Ok(()) => {
            assert!(out.status.success(), "{stderr}");
            let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(figures["backend"], "nccl");
            assert_eq!(figures["sizes"][0]["bytes"], 4096);
        }
    }
}
