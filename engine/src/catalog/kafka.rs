//! The `kafka` source: a topic on the job's brokers, read by a consumer per worker, its
//! positions committed to the group when a checkpoint is written.

use super::config::read_config;
use super::source::{ReaderContext, Source, SourceContext, SourceFactory};
use millrace_connectors::kafka::{
    Brokers, EventTimeReader, KafkaReader, KafkaSourceConfig, WatermarkProbe,
};
use millrace_models::RawRecord;
use millrace_operators::{BoxError, PartitionReader, Polled};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The `kafka` source type.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaFactory;

impl SourceFactory for KafkaFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match read_config::<KafkaSourceConfig>(config) {
            Ok(kafka) => kafka.problems(),
            Err(problems) => problems,
        }
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <KafkaSourceConfig as schemars::JsonSchema>::json_schema(generator)
    }

    fn is_kafka(&self) -> bool {
        true
    }

    fn open(
        &self,
        config: &toml::Table,
        context: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, BoxError> {
        let config = read_config::<KafkaSourceConfig>(config).map_err(|p| p.join("; "))?;
        let partitions = KafkaReader::topic_partitions(&config, context.bootstrap)?;
        let probe = WatermarkProbe::new(context.bootstrap, &config.topic, partitions).ok();
        Ok(Arc::new(KafkaSource {
            config,
            bootstrap: context.bootstrap.clone(),
            partitions,
            event_time: context.event_time.clone(),
            probe: Mutex::new(probe),
        }))
    }
}

/// A topic opened for a job.
struct KafkaSource {
    config: KafkaSourceConfig,
    bootstrap: Brokers,
    partitions: i32,
    /// The reader of the records' event times, when the schema has a time field.
    event_time: Option<EventTimeReader>,
    /// Asks the brokers for the partitions' ends.
    probe: Mutex<Option<WatermarkProbe>>,
}

impl Source for KafkaSource {
    fn partitions(&self) -> i32 {
        self.partitions
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.config.idle_ms)
    }

    fn stop_after_records(&self) -> Option<u64> {
        self.config.stop_after_records
    }

    fn reader(&self, worker: &ReaderContext) -> Result<Box<dyn PartitionReader>, BoxError> {
        let mut reader = KafkaReader::assign(
            &self.config,
            &self.bootstrap,
            worker.index,
            worker.peers,
            self.partitions,
        )?;
        if let Some(read) = self.event_time.clone() {
            reader = reader.with_event_time(read);
        }
        Ok(Box::new(KafkaIngest {
            reader,
            logged: HashSet::new(),
            missing_event_times: worker.event_time_missing.clone(),
            reported: 0,
            skipped: worker.skipped.clone(),
            sought: None,
        }))
    }

    fn ends(&self) -> Option<Vec<i64>> {
        let probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        probe.as_ref()?.high_watermarks().ok()
    }
}

/// The Kafka reader as the source's partition reader.
struct KafkaIngest {
    reader: KafkaReader,
    logged: HashSet<String>,
    /// Records without a usable event-time field, counted for the whole job.
    missing_event_times: Arc<AtomicU64>,
    reported: u64,
    /// Records skipped because the broker no longer had them, counted for the whole job.
    skipped: Arc<AtomicU64>,
    /// The positions of the last seek: the job seeks before it builds its dataflow and the
    /// source operator again as it restores, and the second, the same, is not made again
    /// (nothing was read between them; a second look at the broker could see other offsets).
    sought: Option<Vec<(i32, i64)>>,
}

impl KafkaIngest {
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
                    crate::metrics::SOURCE_EVENT_TIME_MISSING.name
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

    fn seek(&mut self, positions: &[(i32, i64)]) -> Result<(), BoxError> {
        if self.sought.as_deref() == Some(positions) {
            return Ok(());
        }
        self.sought = Some(positions.to_vec());
        let before = self.reader.skipped_records();
        self.reader.seek(positions)?;
        let skipped = self.reader.skipped_records().saturating_sub(before);
        self.skipped.fetch_add(skipped, Ordering::Relaxed);
        Ok(())
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
