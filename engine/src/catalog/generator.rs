//! The `generator` source (`[source] type = "generator"`): synthetic events of the job's schema
//! with a planted signal ([`SchemaGenerator`]), in `partitions` seeded streams, for demos,
//! tests and benchmarks with no data at hand.
//!
//! Partition `p`'s records are the stream of seed `seed + p`, so a record is the same in every
//! run: a restored job regenerates its partitions up to the checkpoint's offsets (a cost linear
//! in them) and goes on with the same records. `rows` records in all (spread over the
//! partitions) end the job; 0 is no end. A record's event time is the schema's time field when
//! it has one (generated at a fixed step from a fixed start), else the wall clock.

use super::config::read_config;
use super::cursor::Cursor;
use super::source::{
    paced_idle, EventTimeReader, ReaderContext, Source, SourceContext, SourceFactory,
};
use millrace_models::schema::synth::SchemaGenerator;
use millrace_models::{RawRecord, Schema};
use millrace_operators::{now_ms, BoxError, PartitionReader, Polled};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The `generator` source's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorSourceSpec {
    /// How many partitions (seeded streams) to spread the records over.
    pub partitions: i32,
    /// Records in all; 0 for no end.
    pub rows: u64,
    /// Records per second in all; as fast as the job takes them when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_sec: Option<f64>,
    /// The seed of partition 0 (partition `p`'s is `seed + p`).
    pub seed: u64,
    /// Preferences planted between the first three category fields of at most 5,000 values:
    /// latent vectors of this many numbers per value (the same in every partition) whose dot
    /// products enter the log-odds; 0 for none.
    pub interactions: usize,
    /// The log-odds scale of those preferences.
    pub interaction_strength: f32,
}

impl Default for GeneratorSourceSpec {
    fn default() -> Self {
        GeneratorSourceSpec {
            partitions: 1,
            rows: 0,
            rows_per_sec: None,
            seed: 7,
            interactions: 0,
            interaction_strength: 2.0,
        }
    }
}

impl GeneratorSourceSpec {
    /// Problems of the values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=1024).contains(&self.partitions) {
            problems.push(format!(
                "`partitions` must be 1 to 1024 (got {})",
                self.partitions
            ));
        }
        if let Some(rate) = self.rows_per_sec {
            if !(rate > 0.0 && rate.is_finite()) {
                problems.push(format!("`rows_per_sec` must be > 0 (got {rate})"));
            }
        }
        problems.extend(interaction_problems(
            self.interactions,
            self.interaction_strength,
        ));
        problems
    }

    /// The records of `partition`: an equal share of `rows`, the first partitions one more
    /// while some are left over; `None` for no end.
    fn rows_of(&self, partition: i32) -> Option<u64> {
        let partitions = self.partitions.max(1) as u64;
        let p = partition as u64;
        (self.rows > 0).then(|| self.rows / partitions + u64::from(p < self.rows % partitions))
    }
}

/// The `generator` source type.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeneratorFactory;

impl SourceFactory for GeneratorFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match read_config::<GeneratorSourceSpec>(config) {
            Ok(generator) => generator.problems(),
            Err(problems) => problems,
        }
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <GeneratorSourceSpec as schemars::JsonSchema>::json_schema(generator)
    }

    fn open(
        &self,
        config: &toml::Table,
        context: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, BoxError> {
        let spec = read_config::<GeneratorSourceSpec>(config).map_err(|p| p.join("; "))?;
        Ok(Arc::new(GeneratorSource {
            spec,
            schema: context.schema.clone(),
            event_time: context.event_time.clone(),
        }))
    }
}

/// A generator opened for a job.
struct GeneratorSource {
    spec: GeneratorSourceSpec,
    schema: Arc<Schema>,
    /// The reader of the records' event times, when the schema has a time field.
    event_time: Option<EventTimeReader>,
}

impl Source for GeneratorSource {
    fn partitions(&self) -> i32 {
        self.spec.partitions
    }

    fn stop_after_records(&self) -> Option<u64> {
        (self.spec.rows > 0).then_some(self.spec.rows)
    }

    fn idle(&self) -> Duration {
        // A partition's rate is its share of the whole.
        let partitions = f64::from(self.spec.partitions.max(1));
        paced_idle(self.spec.rows_per_sec.map(|rate| rate / partitions))
    }

    fn reader(&self, worker: &ReaderContext) -> Result<Box<dyn PartitionReader>, BoxError> {
        let share = worker.share(self.spec.partitions);
        // The rate in all, shared by the partitions.
        let rate = self
            .spec
            .rows_per_sec
            .map(|r| r / f64::from(self.spec.partitions.max(1)));
        let streams = share
            .into_iter()
            .map(|partition| Stream::new(&self.schema, &self.spec, partition, rate))
            .collect();
        Ok(Box::new(GeneratorReader {
            streams,
            event_time: self.event_time.clone(),
            worker: worker.clone(),
        }))
    }

    fn ends(&self) -> Option<Vec<i64>> {
        (0..self.spec.partitions)
            .map(|p| self.spec.rows_of(p).map(|n| n as i64))
            .collect()
    }
}

/// One partition's records.
struct Stream {
    generator: SchemaGenerator,
    /// What it regenerates from after a seek: the schema, the seed, and the interactions'
    /// rank, strength and seed.
    start: (Schema, u64, (usize, f32, u64)),
    cursor: Cursor,
}

impl Stream {
    fn new(schema: &Schema, spec: &GeneratorSourceSpec, partition: i32, rate: Option<f64>) -> Self {
        let seed = spec.seed.wrapping_add(partition as u64);
        let interactions = (spec.interactions, spec.interaction_strength, spec.seed);
        Stream {
            generator: generate(schema, seed, interactions),
            start: (schema.clone(), seed, interactions),
            cursor: Cursor::new(partition, spec.rows_of(partition), rate),
        }
    }

    /// Goes to `offset`: regenerates the stream from its start up to there.
    fn seek(&mut self, offset: u64, timed: bool) {
        self.generator = generate(&self.start.0, self.start.1, self.start.2);
        for _ in 0..offset {
            self.generator.next_record();
        }
        self.cursor.seek(offset, timed);
    }
}

/// Problems of a generator's `interactions` and `interaction_strength`.
pub(crate) fn interaction_problems(interactions: usize, strength: f32) -> Vec<String> {
    let mut problems = Vec::new();
    if interactions > 64 {
        problems.push(format!(
            "`interactions` must be at most 64 (got {interactions})"
        ));
    }
    if !strength.is_finite() {
        problems.push("`interaction_strength` must be a number".to_owned());
    }
    problems
}

/// The records of `schema` for `seed`, with the `(rank, strength, seed)` interactions.
fn generate(
    schema: &Schema,
    seed: u64,
    (rank, strength, latent): (usize, f32, u64),
) -> SchemaGenerator {
    SchemaGenerator::new(schema, seed).with_interactions(rank, strength, latent)
}

/// One worker's streams.
struct GeneratorReader {
    streams: Vec<Stream>,
    event_time: Option<EventTimeReader>,
    worker: ReaderContext,
}

impl GeneratorReader {
    fn stream(&self, partition: i32) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.cursor.partition() == partition)
    }
}

impl PartitionReader for GeneratorReader {
    fn partitions(&self) -> Vec<i32> {
        self.streams.iter().map(|s| s.cursor.partition()).collect()
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        let (before, wall_ms) = (out.len(), now_ms());
        let per_stream = (max / self.streams.len().max(1)).max(1);
        for stream in &mut self.streams {
            for _ in 0..per_stream {
                if !stream.cursor.ready() {
                    break;
                }
                let generated = stream.generator.next_record();
                let payload = generated.record.as_bytes();
                let event_time = self.event_time.as_ref();
                out.push(
                    stream
                        .cursor
                        .take(&self.worker, payload, event_time, wall_ms),
                );
            }
        }
        if out.len() > before {
            Polled::Records
        } else {
            Polled::Idle
        }
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> Result<(), BoxError> {
        // Every position is checked before any stream moves: a seek is whole or not at all.
        let mut moves = Vec::with_capacity(positions.len());
        for &(partition, offset) in positions {
            let at = self
                .stream(partition)
                .ok_or_else(|| format!("this worker does not read partition {partition}"))?;
            let offset = u64::try_from(offset).map_err(|_| format!("no offset {offset}"))?;
            moves.push((at, offset));
        }
        let timed = self.event_time.is_some();
        for (at, offset) in moves {
            self.streams[at].seek(offset, timed);
        }
        Ok(())
    }

    fn commit(&mut self, _positions: &[(i32, i64)]) {}

    fn at_end(&self, partition: i32) -> bool {
        self.stream(partition)
            .is_none_or(|at| self.streams[at].cursor.at_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(spec: GeneratorSourceSpec) -> GeneratorSource {
        GeneratorSource {
            spec,
            schema: Arc::new(Schema::criteo()),
            event_time: None,
        }
    }

    fn worker(index: usize, peers: usize) -> ReaderContext {
        ReaderContext {
            index,
            peers,
            event_time_missing: Arc::default(),
            skipped: Arc::default(),
        }
    }

    fn drain(reader: &mut dyn PartitionReader) -> Vec<RawRecord> {
        let mut out = Vec::new();
        while reader.poll(&mut out, 7) == Polled::Records {}
        out
    }

    #[test]
    fn rows_are_spread_over_the_partitions_and_end() {
        let source = open(GeneratorSourceSpec {
            partitions: 3,
            rows: 10,
            ..GeneratorSourceSpec::default()
        });
        assert_eq!(source.ends(), Some(vec![4, 3, 3]));
        assert_eq!(source.stop_after_records(), Some(10));
        let mut first = source.reader(&worker(0, 2)).unwrap();
        let mut second = source.reader(&worker(1, 2)).unwrap();
        assert_eq!(
            (first.partitions(), second.partitions()),
            (vec![0, 2], vec![1])
        );
        let (a, b) = (drain(&mut *first), drain(&mut *second));
        assert_eq!((a.len(), b.len()), (7, 3));
        assert!(first.at_end(0) && first.at_end(2) && second.at_end(1));
        let problems = GeneratorSourceSpec {
            partitions: 0,
            rows_per_sec: Some(f64::NAN),
            ..GeneratorSourceSpec::default()
        }
        .problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn a_seek_goes_on_with_the_same_records() {
        let spec = GeneratorSourceSpec {
            partitions: 2,
            rows: 40,
            ..GeneratorSourceSpec::default()
        };
        let whole = drain(&mut *open(spec.clone()).reader(&worker(0, 1)).unwrap());
        let mut resumed = open(spec).reader(&worker(0, 1)).unwrap();
        resumed.seek(&[(0, 12), (1, 5)]).unwrap();
        let rest = drain(&mut *resumed);
        let key = |r: &RawRecord| (r.partition, r.offset, r.payload.clone());
        let mut expected: Vec<_> = whole
            .iter()
            .filter(|r| r.offset >= if r.partition == 0 { 12 } else { 5 })
            .map(key)
            .collect();
        let mut got: Vec<_> = rest.iter().map(key).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 40 - 12 - 5);
        let mut untouched = open(GeneratorSourceSpec {
            partitions: 2,
            rows: 40,
            ..GeneratorSourceSpec::default()
        })
        .reader(&worker(0, 1))
        .unwrap();
        assert!(untouched.seek(&[(0, 12), (9, 0)]).is_err());
        assert_eq!(
            drain(&mut *untouched).len(),
            40,
            "a failed seek moves nothing"
        );
    }
}
