//! Helpers shared by the engine's integration tests (each test file uses some of them).
#![allow(dead_code)]

use millrace_connectors::kafka::{create_topics, LineProducer};
use millrace_engine::spec::{JobSpec, LearnerSpec, ProgressSpec, PublishSpec};
use millrace_engine::JobBuilder;
use millrace_models::synth::CriteoGenerator;
use millrace_models::FtrlParams;
use millrace_models::{ModelArtifact, Registry};
use serde_json::Value;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The test broker `make test` starts.
pub(crate) fn broker() -> String {
    std::env::var("MILLRACE_TEST_BROKER").expect(
        "MILLRACE_TEST_BROKER is unset: run the tests with `make test`, which starts the broker",
    )
}

/// A name no other test run uses.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Polls `done` until it holds; panics naming `what` after `timeout`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Produces `events` lines to a fresh 4-partition `topic` (and its `-dead` topic) on the test
/// broker, round robin over the partitions, 1 ms of event time apart: generated events from
/// `seed`, with a malformed line every `bad_every`.
pub(crate) fn produce_stream(topic: &str, events: u64, bad_every: u64, seed: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(create_topics(
            &broker(),
            &[topic, &format!("{topic}-dead")],
            4,
        ))
        .unwrap();
    let mut producer = LineProducer::new(&broker(), topic, 4).unwrap();
    let mut generator = CriteoGenerator::new(seed);
    for i in 0..events {
        let line = if i % bad_every == 0 {
            format!("not an event {i}")
        } else {
            generator.next_event().to_tsv()
        };
        producer
            .send_at(line.as_bytes(), Some(1_700_000_000_000 + i as i64))
            .unwrap();
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// Queues `count` events of `events` to `producer`, numbered from `from` and stamped 1 ms of event
/// time apart by their numbers.
pub(crate) fn send_events(
    producer: &mut LineProducer,
    events: &mut CriteoGenerator,
    from: u64,
    count: u64,
) {
    for i in from..from + count {
        let line = events.next_event().to_tsv();
        producer
            .send_at(line.as_bytes(), Some(1_700_000_000_000 + i as i64))
            .unwrap();
    }
}

/// Finishes a job spec with FTRL that publishes only its final version to `registry`, in epochs of
/// `epoch_ms`, without a progress line.
pub(crate) fn learn_quietly(builder: JobBuilder, registry: &Path, epoch_ms: u64) -> JobSpec {
    builder
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry.to_owned(),
            every_events: 1_000_000,
            every_seconds: 3600,
            registry_topic: None,
        })
        .progress(ProgressSpec {
            epoch_ms,
            interval_ms: 0,
        })
        .build()
        .unwrap()
}

/// Waits for a `millrace run` process to end by itself; the report it printed last.
pub(crate) fn report(child: Child) -> Value {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the job failed: {:?}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().last().expect("the job printed no report");
    serde_json::from_str(line).unwrap()
}

/// The newest version of `model` in the registry under `dir`.
pub(crate) fn latest_model(dir: &Path, model: &str) -> ModelArtifact {
    Registry::open(dir.join("registry"))
        .unwrap()
        .load_latest(model)
        .unwrap()
}
