//! A broker outage in the middle of the stream: the job keeps running, reconnects when the
//! broker is back, and learns every event exactly once.
//!
//! The broker is librdkafka's mock cluster in this process (the embedded broker): a real
//! Kafka-protocol broker whose connections can be dropped and refused while it keeps its
//! records, which a stop and start of the memory-backed test broker (tansu) would lose.

mod common;

use millrace_connectors::kafka::EmbeddedBroker;

#[test]
fn the_job_rides_out_a_broker_outage_and_loses_nothing() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("outage", 4).unwrap();
    broker.create_topic("outage-dead", 4).unwrap();
    // The broker refuses and drops connections for 3 s, keeping its records.
    common::ride_out_broker_loss(
        &broker.bootstrap_servers(),
        "outage",
        9,
        || broker.set_reachable(false).unwrap(),
        || broker.set_reachable(true).unwrap(),
    );
}
