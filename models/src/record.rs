//! The envelope of an event as it arrives from a source, and of one that could not be decoded.

use serde::{Deserialize, Serialize};

/// Where a record was read: its source partition and offset. Predictions and dead letters name
/// the record they come from by it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The source partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

/// One raw record read from a source partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The source partition it was read from.
    pub partition: i32,
    /// Its offset within the partition.
    pub offset: i64,
    /// The record's bytes, as produced.
    pub payload: Vec<u8>,
    /// The record's timestamp (Kafka's create or log-append time), milliseconds since the Unix
    /// epoch, when the source gives one: the event time of a FeatureMap's statistics.
    #[serde(default)]
    pub timestamp_ms: Option<u64>,
}

impl RawRecord {
    /// Where the record was read.
    pub fn position(&self) -> Position {
        Position {
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A record that could not be decoded, with the reason, on its way to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The record, unchanged.
    pub record: RawRecord,
    /// A fixed label for the kind of error (see [`crate::DecodeError::kind`]).
    pub error_kind: String,
    /// The full error message.
    pub error: String,
}
