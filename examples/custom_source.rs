//! A source type, a record format and a sink type of one's own, registered in the catalog and
//! named from the job's TOML.
//!
//! `ratings` makes a user × item stream of `key=value;…` records whose clicks follow a planted taste (each user and
//! each item more or less likely to be clicked), spread over `partitions`, with every
//! `bad_every`-th record malformed. A record is a function of its partition and offset, so the
//! source seeks exactly and a checkpointed job resumes where it was. The `kv` decoder turns a
//! record into the JSON object the schema's fields are read from. The job learns the stream
//! with a factorization machine, sends the malformed records to the dead letters (the decoder
//! refuses them), which go to the `tally` sink (counted by their error type, in memory), and
//! ends after `rows` records.
//!
//! `cargo run -p millrace-examples --example custom_source` runs it and prints the report;
//! `cargo test -p millrace-examples --example custom_source` checks what it learned.

use millrace_engine::catalog::{
    BoxError, Catalog, Decoder, Output, OutputWriter, PartitionReader, Polled, RawRecord,
    ReaderContext, SinkContext, SinkFactory, Source, SourceContext, SourceFactory,
};
use millrace_engine::{Job, JobReport, JobSpec, RunOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The job: the `ratings` source's own keys in `[source]`, the `kv` decoder in `[schema]`,
/// then features as for any source.
const JOB: &str = r#"
name = "ratings"

[source]
type = "ratings"
partitions = 3
rows = 60000
bad_every = 1000

[schema]
format = "json"
decoder = "kv"
fields = [
  { name = "clicked", type = "label" },
  { name = "user", type = "category" },
  { name = "item", type = "category" },
]

[features]
type = "map"

[[features.transform]]
kind = "one_hot"
fields = ["user", "item"]
capacity = 1024

[learner]
type = "fm"
factors = 4
alpha = 0.5
l1 = 0.0
l2 = 1.0
factor_learning_rate = 0.1
factor_l2 = 0.001

[publish]
registry = "REGISTRY"
every_events = 20000
every_seconds = 5

[progress]
interval_ms = 0

[sinks]
dead_letters_sink = { type = "tally", header = "error_type" }
"#;

/// The `ratings` source's keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RatingsSpec {
    partitions: i32,
    rows: u64,
    bad_every: u64,
}

/// The `ratings` source type.
struct RatingsFactory;

impl RatingsFactory {
    fn read(config: &toml::Table) -> Result<RatingsSpec, String> {
        RatingsSpec::deserialize(toml::Value::Table(config.clone())).map_err(|e| e.to_string())
    }
}

impl SourceFactory for RatingsFactory {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        let spec = match Self::read(config) {
            Ok(spec) => spec,
            Err(problem) => return vec![problem],
        };
        let mut problems = Vec::new();
        if spec.partitions < 1 {
            problems.push(format!(
                "`partitions` must be >= 1 (got {})",
                spec.partitions
            ));
        }
        if spec.bad_every == 0 {
            problems.push("`bad_every` must be >= 1 (got 0)".to_owned());
        }
        problems
    }

    fn open(
        &self,
        config: &toml::Table,
        _context: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, BoxError> {
        Ok(Arc::new(Ratings(Self::read(config)?)))
    }
}

/// The source, opened.
struct Ratings(RatingsSpec);

impl Source for Ratings {
    fn partitions(&self) -> i32 {
        self.0.partitions
    }

    fn stop_after_records(&self) -> Option<u64> {
        Some(self.0.rows)
    }

    fn reader(&self, worker: &ReaderContext) -> Result<Box<dyn PartitionReader>, BoxError> {
        // An equal share of the rows each, the first partitions one more while some are left.
        let partitions = self.0.partitions as u64;
        let end =
            |p: i32| self.0.rows / partitions + u64::from((p as u64) < self.0.rows % partitions);
        Ok(Box::new(RatingsReader {
            next: worker
                .share(self.0.partitions)
                .into_iter()
                .map(|p| (p, 0, end(p)))
                .collect(),
            spec: self.0.clone(),
        }))
    }
}

/// One worker's partitions, each with its next offset and its end.
struct RatingsReader {
    next: Vec<(i32, u64, u64)>,
    spec: RatingsSpec,
}

/// The event time of every partition's first record.
const START_MS: u64 = 1_700_000_000_000;

/// A small, stable mix of a record's partition and offset.
fn mix(partition: i32, offset: u64) -> u64 {
    let mut x = offset ^ ((partition as u64) << 40) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// The record at `offset` of `partition`.
fn rating(partition: i32, offset: u64, bad_every: u64) -> String {
    if offset % bad_every == bad_every - 1 {
        return "not a rating".to_owned();
    }
    let x = mix(partition, offset);
    let (user, item) = (x % 50, (x >> 8) % 40);
    let margin = (user % 10) as f64 * 0.4 - 1.8 + (item % 8) as f64 * 0.4 - 1.4;
    let probability = 1.0 / (1.0 + (-margin).exp());
    let draw = (x >> 32) as f64 / (1u64 << 32) as f64;
    format!(
        "clicked={};user=u{user};item=i{item}",
        u8::from(draw < probability)
    )
}

/// The `kv` record format: `key=value` pairs separated by `;`, every value a string.
struct KeyValues;

impl Decoder for KeyValues {
    fn decode(&self, payload: &[u8]) -> Result<serde_json::Value, String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let mut object = serde_json::Map::new();
        for pair in text.split(';') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            object.insert(key.to_owned(), serde_json::Value::from(value));
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// The `tally` sink type: counts an output's messages by the value of one header, in the
/// map every writer shares.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<BTreeMap<String, u64>>>);

/// The `tally` sink's keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TallySpec {
    header: String,
}

impl SinkFactory for Tally {
    fn problems(&self, config: &toml::Table) -> Vec<String> {
        match TallySpec::deserialize(toml::Value::Table(config.clone())) {
            Ok(_) => Vec::new(),
            Err(error) => vec![error.to_string()],
        }
    }

    fn open(
        &self,
        config: &toml::Table,
        _context: &SinkContext<'_>,
    ) -> Result<Box<dyn OutputWriter>, BoxError> {
        let spec = TallySpec::deserialize(toml::Value::Table(config.clone()))?;
        Ok(Box::new(TallyWriter {
            header: spec.header,
            counts: self.0.clone(),
        }))
    }
}

/// One worker's writer of a tally.
struct TallyWriter {
    header: String,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl OutputWriter for TallyWriter {
    fn send(&mut self, output: Output<'_>) {
        let value = output
            .headers
            .iter()
            .find(|(key, _)| *key == self.header)
            .map_or_else(String::new, |(_, v)| {
                String::from_utf8_lossy(v).into_owned()
            });
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(value).or_default() += 1;
    }

    fn flush(&mut self) {}
}

/// The catalog of the built-in types with `ratings`, `kv` and `tally` (into `tally`).
fn catalog(tally: &Tally) -> Catalog {
    Catalog::builtin()
        .source("ratings", RatingsFactory)
        .decoder("kv", KeyValues)
        .sink("tally", tally.clone())
}

impl PartitionReader for RatingsReader {
    fn partitions(&self) -> Vec<i32> {
        self.next.iter().map(|(p, _, _)| *p).collect()
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Polled {
        let before = out.len();
        for (partition, next, end) in &mut self.next {
            while *next < *end && out.len() - before < max {
                out.push(RawRecord {
                    partition: *partition,
                    offset: *next as i64,
                    payload: rating(*partition, *next, self.spec.bad_every).into_bytes(),
                    // A record every 10 ms of event time: the job's epochs (200 ms) each
                    // learn from some, with the FeatureMap fitted on the ones before.
                    timestamp_ms: Some(START_MS + *next * 10),
                });
                *next += 1;
            }
        }
        if out.len() > before {
            Polled::Records
        } else {
            Polled::Idle
        }
    }

    fn seek(&mut self, positions: &[(i32, i64)]) -> Result<(), BoxError> {
        for &(partition, offset) in positions {
            let slot = self.next.iter_mut().find(|(p, _, _)| *p == partition);
            let (_, next, _) = slot.ok_or_else(|| format!("partition {partition} is not mine"))?;
            *next = u64::try_from(offset)?;
        }
        Ok(())
    }

    fn commit(&mut self, _positions: &[(i32, i64)]) {}

    fn at_end(&self, partition: i32) -> bool {
        self.next
            .iter()
            .find(|(p, _, _)| *p == partition)
            .is_none_or(|(_, next, end)| next >= end)
    }
}

/// Runs the job with `registry` as its registry and its own types in its catalog, its dead
/// letters tallied into `tally`.
fn run(registry: &std::path::Path, workers: usize, tally: &Tally) -> anyhow::Result<JobReport> {
    let catalog = catalog(tally);
    let text = JOB.replace("REGISTRY", &registry.display().to_string());
    let spec = JobSpec::from_toml_in(&text, &catalog)?;
    let options = RunOptions {
        catalog,
        ..RunOptions::local(workers)
    };
    Ok(Job::start(spec, options)?.wait()?)
}

fn main() -> anyhow::Result<()> {
    let registry = std::env::temp_dir().join(format!("millrace-ratings-{}", std::process::id()));
    let tally = Tally::default();
    let report = run(&registry, 2, &tally)?;
    println!("{}", serde_json::to_string(&report)?);
    println!(
        "dead letters by error type: {:?}",
        tally.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_source_decoder_and_sink_carry_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let tally = Tally::default();
        let report = run(dir.path(), 2, &tally).unwrap();
        // 60 of the 60,000 records are malformed: every 1000th of each partition's 20,000.
        assert_eq!(report.source_records, 60_000);
        assert_eq!(report.dead_letters, 60);
        assert_eq!(report.learned, 59_940);
        assert!(report.model_version >= 1);
        // Every dead letter reached the registered sink, refused by the registered decoder.
        let counts = tally.0.lock().unwrap().clone();
        assert_eq!(counts, BTreeMap::from([("decoder".to_owned(), 60)]));
        // The planted taste is learned.
        let auc = report.progressive_auc.unwrap();
        assert!(auc > 0.7, "progressive AUC {auc}");
    }

    #[test]
    fn an_unknown_type_and_its_own_problems_are_reported() {
        let without = JobSpec::from_toml(&JOB.replace("REGISTRY", "r")).unwrap_err();
        assert!(
            without.to_string().contains("unknown variant `ratings`")
                || format!("{without:?}").contains("unknown variant `ratings`"),
            "{without:?}"
        );
        let bad = JOB
            .replace("REGISTRY", "r")
            .replace("bad_every = 1000", "bad_every = 0");
        let Err(millrace_engine::Error::Config { problems }) =
            JobSpec::from_toml_in(&bad, &catalog(&Tally::default()))
        else {
            panic!("a config error");
        };
        assert_eq!(problems, ["[source] `bad_every` must be >= 1 (got 0)"]);
        let sources_only = Catalog::builtin()
            .source("ratings", RatingsFactory)
            .sink("tally", Tally::default());
        let Err(millrace_engine::Error::Config { problems }) =
            JobSpec::from_toml_in(&JOB.replace("REGISTRY", "r"), &sources_only)
        else {
            panic!("a config error");
        };
        assert_eq!(
            problems,
            ["[schema] `decoder`: no decoder `kv` in the job's catalog (it has none)"]
        );
    }
}
