//! A Kafka-protocol broker inside the process (librdkafka's mock cluster).
//!
//! It listens on loopback ports chosen by the system, speaks the Kafka protocol to any client
//! (Python's `confluent-kafka`, the JVM clients), supports consumer groups and commits, and lives
//! as long as this value. It is for the demo and for fault-injection tests, not for durability.

use crate::error::{kafka, Result};
use crate::kafka::config::Brokers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// An in-process Kafka broker.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster.
    ///
    /// # Errors
    ///
    /// When librdkafka cannot create the cluster.
    pub fn start() -> Result<Self> {
        let cluster = MockCluster::new(1).map_err(kafka("embedded broker"))?;
        Ok(EmbeddedBroker { cluster })
    }

    /// The `bootstrap.servers` value that reaches this broker.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The broker as its clients reach it.
    pub fn brokers(&self) -> Brokers {
        Brokers::new(self.bootstrap_servers())
    }

    /// Makes the broker unreachable (`false`: connections drop, new ones are refused) or
    /// reachable again (`true`), keeping its records: an outage, for fault-injection tests.
    ///
    /// # Errors
    ///
    /// When librdkafka refuses.
    pub fn set_reachable(&self, reachable: bool) -> Result<()> {
        let result = if reachable {
            self.cluster.broker_up(1)
        } else {
            self.cluster.broker_down(1)
        };
        result.map_err(kafka("embedded broker"))
    }

    /// Creates a topic (the mock broker does not implement the admin API).
    ///
    /// # Errors
    ///
    /// When the broker refuses.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(kafka("embedded broker"))
    }
}
