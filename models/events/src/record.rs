//! The envelope of an event as it arrives from a source, and of one that could not be decoded.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

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

/// The partitions worker `worker` of `workers` reads of a source of `partitions`: every
/// partition whose number is the worker's index modulo the workers (Kafka's sources and every
/// other source share their partitions so).
pub fn partition_share(partitions: i32, worker: usize, workers: usize) -> Vec<i32> {
    (0..partitions)
        .filter(|p| *p as usize % workers.max(1) == worker)
        .collect()
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

impl DeadLetter {
    /// The dead letter of a record that could not be read for `error`.
    pub fn new(error: &crate::DecodeError, record: RawRecord) -> Self {
        DeadLetter {
            error_kind: error.kind().to_owned(),
            error: error.to_string(),
            record,
        }
    }
}

/// The event time a JSON record names in its top-level field `field`: a whole number of
/// milliseconds since the Unix epoch (a JSON number or a decimal string). `None` when the
/// record is not a JSON object, lacks the field, or holds something else there.
///
/// Only the top level is read; other values are skipped without being built.
///
/// # Examples
///
/// ```
/// use millrace_events::event_time_ms;
///
/// assert_eq!(event_time_ms(br#"{"I1": 3, "ts": 1700000000123}"#, "ts"), Some(1_700_000_000_123));
/// assert_eq!(event_time_ms(br#"{"ts": "1700000000123"}"#, "ts"), Some(1_700_000_000_123));
/// assert_eq!(event_time_ms(br#"{"ts": -1}"#, "ts"), None);
/// assert_eq!(event_time_ms(b"0\t1\t2", "ts"), None);
/// ```
pub fn event_time_ms(payload: &[u8], field: &str) -> Option<u64> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    FieldSeed(field)
        .deserialize(&mut deserializer)
        .ok()
        .flatten()
}

/// Reads one field of a JSON object as an event time.
struct FieldSeed<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.0 && found.is_none() {
                found = Some(match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                });
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_named_field_is_found_among_any_others(
            ts in any::<u64>(),
            before in proptest::collection::btree_map("[a-s]{1,6}", any::<i64>(), 0..5),
            after in proptest::collection::btree_map("[u-z]{1,6}", "[ -~]{0,8}", 0..5),
            nested in any::<bool>(),
        ) {
            let mut object = serde_json::Map::new();
            for (k, v) in &before {
                object.insert(k.clone(), (*v).into());
            }
            if nested {
                object.insert("nested".into(), serde_json::json!({"t": [1, {"t": 2}]}));
            }
            object.insert("t".into(), ts.into());
            for (k, v) in &after {
                object.insert(k.clone(), v.clone().into());
            }
            let text = serde_json::Value::Object(object).to_string();
            prop_assert_eq!(event_time_ms(text.as_bytes(), "t"), Some(ts));
            prop_assert_eq!(event_time_ms(text.as_bytes(), "absent"), None);
        }

        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = event_time_ms(&bytes, "t");
        }
    }
}
