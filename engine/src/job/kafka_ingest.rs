//! The Kafka consumer as the dataflow source's partition reader.

use millrace_connectors::kafka::KafkaReader;
use millrace_models::RawRecord;
use millrace_operators::{BoxError, PartitionReader, Polled};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The Kafka reader as the source's partition reader.
pub(crate) struct KafkaIngest {
    reader: KafkaReader,
    logged: HashSet<String>,
    /// Records without a usable event-time field, counted for the whole job.
    missing_event_times: Arc<AtomicU64>,
    reported: u64,
}

impl KafkaIngest {
    pub(crate) fn new(reader: KafkaReader, missing_event_times: Arc<AtomicU64>) -> Self {
        KafkaIngest {
            reader,
            logged: HashSet::new(),
            missing_event_times,
            reported: 0,
        }
    }

    fn log_once(&mut self, error: &millrace_connectors::Error, what: &str) {
        // The client reconnects by itself; each kind of error is logged once.
        if self.logged.insert(error.kind()) {
            tracing::warn!(%error, "kafka source: {what} (logged once per kind)");
        }
    }
}

impl PartitionReader for KafkaIngest {
    fn partitions(&self) -> Vec<i32> {
        self.reader.partitions().to_vec()
    }

    fn at_end(&self, partition: i32) -> bool {
        self.reader.at_end(partition)
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        let polled = self.reader.poll_into(out, max);
        let missing = self.reader.missing_event_times();
        if missing > self.reported {
            if self.reported == 0 {
                tracing::warn!(
                    "records without a usable event-time field: their Kafka timestamps are used (counted in {})",
                    crate::metrics::SOURCE_EVENT_TIME_MISSING
                );
            }
            self.missing_event_times
                .fetch_add(missing - self.reported, Ordering::Relaxed);
            self.reported = missing;
        }
        match polled {
            Ok(0) => Polled::Idle,
            Ok(_) => Polled::Records,
            Err(error) => {
                self.log_once(&error, "error; retrying");
                Polled::Idle
            }
        }
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> std::result::Result<(), BoxError> {
        Ok(self.reader.seek(positions)?)
    }

    fn pause(&mut self, partition: i32, paused: bool) -> bool {
        match self.reader.pause(partition, paused) {
            Ok(()) => true,
            Err(error) => {
                self.log_once(&error, "cannot pause or resume a partition");
                false
            }
        }
    }

    fn commit(&mut self, positions: &[(i32, i64)]) {
        if let Err(error) = self.reader.commit(positions) {
            self.log_once(
                &error,
                "committing a checkpoint's positions to the group failed",
            );
        }
    }
}
