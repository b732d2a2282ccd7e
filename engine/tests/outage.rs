//! A broker outage in the middle of the stream: the job keeps running, reconnects when the
//! broker is back, and learns every event exactly once.
//!
//! The broker is librdkafka's mock cluster in this process (the embedded broker): a real
//! Kafka-protocol broker whose connections can be dropped and refused while it keeps its
//! records, which a stop and start of the memory-backed test broker (tansu) would lose.

mod common;

use common::{learn_quietly, send_events, wait_for};
use millrace_connectors::kafka::{EmbeddedBroker, LineProducer};
use millrace_engine::spec::JobSpec;
use millrace_engine::{Job, KafkaSourceConfig, RunOptions};
use millrace_models::synth::CriteoGenerator;
use millrace_models::FeatureSpec;
use std::sync::atomic::Ordering;
use std::time::Duration;

const HALF: u64 = 10_000;

#[test]
fn the_job_rides_out_a_broker_outage_and_loses_nothing() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("events", 4).unwrap();
    broker.create_topic("events-dead", 4).unwrap();
    let registry = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("outage")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: broker.bootstrap_servers(),
            topic: "events".into(),
            group_id: "outage".into(),
            dead_letter_topic: "events-dead".into(),
            partitions: 4,
            idle_ms: 300,
            stop_after_records: None,
            event_time_field: None,
        })
        .features(FeatureSpec::Hashed { hash_bits: 16 });
    let spec = learn_quietly(spec, registry.path(), 100);
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    let mut producer = LineProducer::new(&broker.bootstrap_servers(), "events", 4).unwrap();
    let mut events = CriteoGenerator::new(9);

    send_events(&mut producer, &mut events, 0, HALF);
    producer.flush(Duration::from_secs(30)).unwrap();
    let learned = || stats.trainer.learned.load(Ordering::Relaxed);
    wait_for("the first half", Duration::from_secs(60), || {
        learned() == HALF
    });

    // The broker goes away for 3 s; the second half is produced meanwhile (the producer
    // queues it) and the job must not stop.
    broker.set_reachable(false).unwrap();
    send_events(&mut producer, &mut events, HALF, HALF);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!job.is_finished(), "the job ended during the outage");
    assert_eq!(learned(), HALF);
    broker.set_reachable(true).unwrap();
    producer.flush(Duration::from_secs(60)).unwrap();

    wait_for("the second half", Duration::from_secs(120), || {
        learned() == 2 * HALF
    });
    job.stop();
    let report = job.wait().unwrap();
    assert_eq!(report.source_records, 2 * HALF);
    assert_eq!(report.decoded, 2 * HALF);
    assert_eq!(report.learned, 2 * HALF);
    assert_eq!(report.dead_letters, 0);
}
