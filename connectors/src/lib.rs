//! Connectors of millrace: sources and sinks outside the dataflow.
//!
//! [`kafka`] holds the Kafka source reader, the dead-letter sink, the replay producer, topic
//! administration and the embedded broker that the one-command demo uses. Connectors know the
//! event schema (`millrace-models`) but not timely: the engine wraps them into operators.
//! [`registry`] names the connectors a job file can ask for by `type`.
#![warn(missing_docs)]

pub mod error;
pub mod kafka;
pub mod registry;

pub use error::{Error, Result};
