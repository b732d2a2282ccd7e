//! Which quantile sketch for `bucketize`: our KLL against the crates that do the job — a
//! t-digest (`tdigest`), DDSketch (`sketches-ddsketch`) and Greenwald–Khanna (`quantiles`) —
//! on the 13 Criteo integer fields, each stream split over `--parts` sketches that are then
//! merged, as the dataflow does with one sketch per worker and epoch.
//!
//! For each sketch: the largest and mean normalized rank error of the 19 boundaries of 20
//! buckets (checked against the exact ranks), nanoseconds per update, microseconds per merge
//! and values retained. One JSON line per sketch and input.
//!
//! Run: `cargo run --release -p millrace-models --example sketches -- [--rows N] [--parts P]
//! [--input FILE.tsv]` (or `perf/sketches.sh`).

use millrace_models::fmap::kll::{error_for_k, k_for_error, Kll};
use millrace_models::synth::CriteoGenerator;
use std::cmp::Ordering;
use std::time::Instant;

/// The boundary ranks of 20 buckets.
fn ranks() -> Vec<f64> {
    (1..20).map(|i| f64::from(i) / 20.0).collect()
}

/// A sketch under test: built from parts, merged, then asked for quantiles.
trait Sketch: Sized {
    fn name() -> &'static str;
    fn param() -> String;
    fn new() -> Self;
    fn add_all(&mut self, values: &[f64]);
    /// `None` when the sketch cannot merge.
    fn merge_from(&mut self, other: &Self) -> Option<()>;
    fn quantile(&self, q: f64) -> f64;
    fn retained(&self) -> usize;
}

const EPSILON: f64 = 0.01;

impl Sketch for Kll {
    fn name() -> &'static str {
        "kll (millrace)"
    }
    fn param() -> String {
        let k = k_for_error(EPSILON);
        format!("k={k} (stated rank error {:.4})", error_for_k(k))
    }
    fn new() -> Self {
        Kll::new(k_for_error(EPSILON), 1)
    }
    fn add_all(&mut self, values: &[f64]) {
        values.iter().for_each(|&x| self.update(x));
    }
    fn merge_from(&mut self, other: &Self) -> Option<()> {
        self.merge(other);
        Some(())
    }
    fn quantile(&self, q: f64) -> f64 {
        self.quantiles(&[q])[0]
    }
    fn retained(&self) -> usize {
        Kll::retained(self)
    }
}

struct TDigest(tdigest::TDigest);

impl Sketch for TDigest {
    fn name() -> &'static str {
        "t-digest (tdigest)"
    }
    fn param() -> String {
        "max_size=100, values added in batches of 4096".to_owned()
    }
    fn new() -> Self {
        TDigest(tdigest::TDigest::new_with_size(100))
    }
    fn add_all(&mut self, values: &[f64]) {
        for chunk in values.chunks(4096) {
            self.0 = self.0.merge_unsorted(chunk.to_vec());
        }
    }
    fn merge_from(&mut self, other: &Self) -> Option<()> {
        self.0 = tdigest::TDigest::merge_digests(vec![self.0.clone(), other.0.clone()]);
        Some(())
    }
    fn quantile(&self, q: f64) -> f64 {
        self.0.estimate_quantile(q).unwrap_or(f64::NAN)
    }
    fn retained(&self) -> usize {
        self.0.centroids().len()
    }
}

struct DdSketch(sketches_ddsketch::DDSketch);

impl Sketch for DdSketch {
    fn name() -> &'static str {
        "ddsketch (sketches-ddsketch)"
    }
    fn param() -> String {
        "relative value accuracy 0.01, 2048 bins".to_owned()
    }
    fn new() -> Self {
        DdSketch(sketches_ddsketch::DDSketch::new(
            sketches_ddsketch::Config::new(EPSILON, 2048, 1e-9),
        ))
    }
    fn add_all(&mut self, values: &[f64]) {
        values.iter().for_each(|&x| self.0.add(x));
    }
    fn merge_from(&mut self, other: &Self) -> Option<()> {
        self.0.merge(&other.0).ok()
    }
    fn quantile(&self, q: f64) -> f64 {
        self.0.quantile(q).ok().flatten().unwrap_or(f64::NAN)
    }
    fn retained(&self) -> usize {
        self.0.length()
    }
}

/// `f64` ordered by `total_cmp`, for `quantiles`' `Ord` bound.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Total(f64);
impl Eq for Total {}
impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Total {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

struct Gk(quantiles::greenwald_khanna::Stream<Total>);

impl Sketch for Gk {
    fn name() -> &'static str {
        "greenwald-khanna (quantiles)"
    }
    fn param() -> String {
        format!("epsilon={EPSILON}")
    }
    fn new() -> Self {
        Gk(quantiles::greenwald_khanna::Stream::new(EPSILON))
    }
    fn add_all(&mut self, values: &[f64]) {
        values.iter().for_each(|&x| self.0.insert(Total(x)));
    }
    fn merge_from(&mut self, _: &Self) -> Option<()> {
        None
    }
    fn quantile(&self, q: f64) -> f64 {
        self.0.quantile(q).0
    }
    fn retained(&self) -> usize {
        self.0.s()
    }
}

/// The distance of `q` from the normalized rank interval of `x` in `sorted`.
fn rank_error(sorted: &[f64], q: f64, x: f64) -> f64 {
    let n = sorted.len() as f64;
    let below = sorted.partition_point(|&v| v < x) as f64 / n;
    let at_or_below = sorted.partition_point(|&v| v <= x) as f64 / n;
    if q < below {
        below - q
    } else if q > at_or_below {
        q - at_or_below
    } else {
        0.0
    }
}

fn measure<S: Sketch>(input: &str, columns: &[Vec<f64>], parts: usize) {
    let (mut update_ns, mut updates, mut merge_us, mut merges) = (0.0, 0usize, 0.0, 0usize);
    let (mut max_error, mut sum_error, mut queries, mut retained) = (0.0f64, 0.0, 0usize, 0usize);
    let mut mergeable = true;
    for column in columns.iter().filter(|c| !c.is_empty()) {
        let share = column.len().div_ceil(parts);
        let mut sketches: Vec<S> = (0..parts).map(|_| S::new()).collect();
        let started = Instant::now();
        for (sketch, chunk) in sketches.iter_mut().zip(column.chunks(share)) {
            sketch.add_all(chunk);
        }
        update_ns += started.elapsed().as_secs_f64() * 1e9;
        updates += column.len();
        // Without a merge, one sketch takes the whole column (GK).
        let mut merged = sketches.remove(0);
        for other in &sketches {
            let started = Instant::now();
            if merged.merge_from(other).is_none() {
                mergeable = false;
                break;
            }
            merge_us += started.elapsed().as_secs_f64() * 1e6;
            merges += 1;
        }
        if !mergeable {
            merged = S::new();
            merged.add_all(column);
        }
        let mut sorted = column.clone();
        sorted.sort_by(f64::total_cmp);
        for q in ranks() {
            let error = rank_error(&sorted, q, merged.quantile(q));
            max_error = max_error.max(error);
            sum_error += error;
            queries += 1;
        }
        retained = retained.max(merged.retained());
    }
    let line = serde_json::json!({
        "sketch": S::name(),
        "param": S::param(),
        "input": input,
        "values": updates,
        "parts": parts,
        "max_rank_error": max_error,
        "mean_rank_error": sum_error / queries.max(1) as f64,
        "update_ns": update_ns / updates.max(1) as f64,
        "merge_us": mergeable.then(|| merge_us / merges.max(1) as f64),
        "retained_max": retained,
    });
    println!("{line}");
}

/// The 13 integer columns of Criteo lines (label first, then I1–I13); empty fields skipped.
fn criteo_columns(lines: impl Iterator<Item = String>) -> Vec<Vec<f64>> {
    let mut columns = vec![Vec::new(); 13];
    for line in lines {
        for (column, field) in columns.iter_mut().zip(line.split('\t').skip(1)) {
            if let Ok(x) = field.parse::<f64>() {
                column.push(x);
            }
        }
    }
    columns
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = 1_000_000usize;
    let mut parts = 2usize;
    let mut input = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("`{arg}` needs a value"))?;
        match arg.as_str() {
            "--rows" => rows = value.parse()?,
            "--parts" => parts = value.parse::<usize>()?.max(1),
            "--input" => input = Some(value),
            _ => return Err(format!("unknown argument `{arg}`").into()),
        }
    }
    let (name, columns) = match input {
        Some(path) => {
            let text = std::fs::read_to_string(&path)?;
            (path, criteo_columns(text.lines().map(str::to_owned)))
        }
        None => {
            let lines = CriteoGenerator::new(1)
                .take(rows)
                .map(|event| event.to_tsv());
            (
                format!("millrace gen criteo --rows {rows} --seed 1"),
                criteo_columns(lines),
            )
        }
    };
    measure::<Kll>(&name, &columns, parts);
    measure::<TDigest>(&name, &columns, parts);
    measure::<DdSketch>(&name, &columns, parts);
    measure::<Gk>(&name, &columns, parts);
    Ok(())
}
