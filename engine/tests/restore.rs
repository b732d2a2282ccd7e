//! Restores never silently start over: a job restarted with another number of workers than
//! its checkpoints were written by refuses to start, says why and how to override, and leaves
//! the checkpoints as they are; with `--allow-fresh-start` it starts afresh.

mod common;

use common::{broker, produce_stream, report, unique};
use millrace_engine::checkpoint::CheckpointStore;
use millrace_engine::spec::{CheckpointSpec, JobSpec, LearnerSpec, ProgressSpec, PublishSpec};
use millrace_engine::KafkaSourceConfig;
use millrace_models::{FeatureSpec, FtrlParams};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const EVENTS: u64 = 5_000;

fn job_file(dir: &Path, topic: &str) -> std::path::PathBuf {
    let spec = JobSpec::builder("restore")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: broker(),
            topic: topic.to_owned(),
            group_id: unique("g"),
            dead_letter_topic: format!("{topic}-dead"),
            partitions: 4,
            idle_ms: 1000,
            stop_after_records: Some(EVENTS),
            event_time_field: None,
        })
        .features(FeatureSpec::Hashed { hash_bits: 12 })
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: dir.join("registry"),
            every_events: 1_000_000,
            every_seconds: 3600,
            registry_topic: None,
            registry_key_file: None,
        })
        .progress(ProgressSpec {
            epoch_ms: 100,
            interval_ms: 0,
        })
        .checkpoint(CheckpointSpec {
            state_dir: dir.join("state"),
            interval_ms: 300,
            keep: 3,
        })
        .build()
        .unwrap();
    let path = dir.join("job.toml");
    std::fs::write(&path, spec.to_toml()).unwrap();
    path
}

fn run(job: &Path, workers: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    command
        .args(["run", "--workers", &workers.to_string()])
        .args(extra)
        .arg(job)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn epochs(dir: &Path) -> Vec<u64> {
    CheckpointStore::open(&dir.join("state"), 3)
        .unwrap()
        .epochs()
}

#[test]
fn another_worker_count_is_refused_unless_a_fresh_start_is_allowed() {
    let topic = unique("restore");
    produce_stream(&topic, EVENTS, 1_000_000, 5);
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), &topic);
    let first = report(run(&job, 2, &[]).spawn().unwrap());
    assert_eq!(first["source_records"], EVENTS);
    let kept = epochs(dir.path());
    assert!(!kept.is_empty());

    let refused = run(&job, 3, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for says in [
        "a job of 2 workers in all where this one has 3",
        "--allow-fresh-start",
    ] {
        assert!(stderr.contains(says), "{says:?} in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        epochs(dir.path()),
        kept,
        "the checkpoints are left as they were"
    );

    let fresh = report(run(&job, 3, &["--allow-fresh-start"]).spawn().unwrap());
    assert_eq!(fresh["restored_epoch"], Value::Null);
    assert_eq!(fresh["source_records"], EVENTS);
    let again = report(run(&job, 3, &[]).spawn().unwrap());
    assert_ne!(
        again["restored_epoch"],
        Value::Null,
        "its own checkpoints restore"
    );
}
