//! Restores never silently start over: a job restarted with another number of workers than
//! its checkpoints were written by refuses to start, says why and how to override, and leaves
//! the checkpoints as they are; with `--allow-fresh-start` it starts afresh.

mod common;

use common::{checkpointed_job_file, produce_stream, report, test_source, unique};
use millrace_engine::checkpoint::CheckpointStore;
use millrace_engine::spec::JobSpec;
use millrace_models::FeatureSpec;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const EVENTS: u64 = 5_000;

fn job_file(dir: &Path, topic: &str) -> std::path::PathBuf {
    let builder = JobSpec::builder("restore")
        .kafka_source(test_source(topic, 1000, EVENTS))
        .features(FeatureSpec::Hashed { hash_bits: 12 });
    checkpointed_job_file(builder, dir, 1_000_000, 300)
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

/// The records a checkpoint resumes from are gone from the broker (the embedded broker keeps
/// 5 MiB per partition, dropping the oldest record batches past it, as retention does): the
/// restarted job fails and says how to go on (with 2 workers and 1 partition, the worker
/// without a partition stops with the one that cannot resume rather than wait for it); with `on_missing_offsets = "skip"` it starts at
/// the first record left and counts exactly the records it skipped.
#[test]
fn records_gone_from_the_broker_fail_the_restore_or_are_skipped_and_counted() {
    use millrace_connectors::kafka::{EmbeddedBroker, LineProducer, MissingOffsets};
    use millrace_engine::KafkaSourceConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::time::Duration;

    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("gone", 1).unwrap();
    let mut producer = LineProducer::new(&broker.brokers(), "gone", 1).unwrap();
    let mut send = |n: usize| {
        for _ in 0..n {
            producer.send(&[b'x'; 100_000]).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let job = |stop_after: u64, on_missing: MissingOffsets| {
        let source = KafkaSourceConfig {
            bootstrap_servers: broker.bootstrap_servers(),
            topic: "gone".to_owned(),
            dead_letter_topic: "gone-dead".to_owned(),
            partitions: 1,
            on_missing_offsets: on_missing,
            ..test_source("gone", 300, stop_after)
        };
        let builder = JobSpec::builder("gone")
            .kafka_source(source)
            .features(FeatureSpec::Hashed { hash_bits: 12 });
        checkpointed_job_file(builder, dir.path(), 1_000_000, 300)
    };

    send(20);
    let first = report(run(&job(20, MissingOffsets::Fail), 2, &[]).spawn().unwrap());
    assert_eq!(first["source_records"], 20);
    send(110);
    let probe: BaseConsumer = broker.brokers().client_config().create().unwrap();
    let (low, high) = probe
        .fetch_watermarks("gone", 0, Duration::from_secs(10))
        .unwrap();
    assert!(low > 20 && high == 130, "{low}..{high}");

    let failed = run(&job(130, MissingOffsets::Fail), 2, &[])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    for says in [
        "cannot resume where the checkpoint says",
        "offset 20 is gone",
        "on_missing_offsets",
    ] {
        assert!(stderr.contains(says), "{says:?} in {stderr}");
    }

    let left = (high - low) as u64;
    let skipped = report(
        run(&job(20 + left, MissingOffsets::Skip), 2, &[])
            .spawn()
            .unwrap(),
    );
    assert_eq!(skipped["source_records"], 20 + left, "{skipped}");
    assert_eq!(skipped["dead_letters"], 20 + left, "{skipped}");
    assert_eq!(skipped["source_records_skipped"], low - 20, "{skipped}");
}
