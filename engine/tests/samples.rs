//! The sample buffer in a running job: the same rows with 1, 2 and 4 workers, the rows of an
//! uninterrupted run after a stop and a restore, and its configuration's problems all at once.

use millrace_engine::spec::JobSpec;
use millrace_engine::{Job, RunOptions};
use millrace_samples::{read_buffer, SampleRows};
use std::path::Path;
use std::time::Duration;

/// A job of `source` over a small declared schema, checkpointed into `state` when given, its
/// sample buffer in `samples`.
fn job_text(source: &str, registry: &Path, state: Option<&Path>, samples: &Path) -> String {
    let checkpoint = state.map_or(String::new(), |state| {
        format!("[checkpoint]\nstate_dir = {state:?}\ninterval_ms = 0\n")
    });
    format!(
        r#"
name = "samples"

[source]
{source}

[schema]
format = "csv"
event_time_format = "s"
fields = [
  {{ name = "clicked", type = "label" }},
  {{ name = "at", type = "time" }},
  {{ name = "site", type = "category" }},
  {{ name = "price", type = "number" }},
]

[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["site"]
[[features.transform]]
kind = "bucketize"
fields = ["price"]
buckets = 4

[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.1
l2 = 1.0

[publish]
registry = {registry:?}
every_events = 1000
every_seconds = 1

[progress]
epoch_ms = 60000
interval_ms = 0

{checkpoint}

[samples]
dir = {samples:?}
segment_bytes = 8192
"#
    )
}

/// Every row of every worker's buffer under `dir`, one comparable line each, sorted.
fn held(dir: &Path) -> Vec<String> {
    let mut all = SampleRows::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let (_, rows) = read_buffer(&entry.unwrap().path()).unwrap();
        all.extend(&rows);
    }
    let mut lines: Vec<String> = (0..all.len())
        .map(|i| {
            format!(
                "{} {:?} {} {} {:?}",
                all.epochs[i],
                all.event_times[i],
                all.versions[i],
                all.labels[i],
                all.entries(i)
            )
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_buffer_holds_the_same_rows_with_1_2_and_4_workers() {
    let mut first = None;
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let samples = dir.path().join("samples");
        let source = "type = \"generator\"\npartitions = 3\nrows = 6000\nseed = 3";
        let spec =
            JobSpec::from_toml(&job_text(source, &dir.path().join("r"), None, &samples)).unwrap();
        let report = Job::start(spec, RunOptions::local(workers))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(report.learned, 6000, "{workers} workers: {report:?}");
        let rows = held(&samples);
        assert_eq!(rows.len(), 6000, "{workers} workers: a row per event");
        match &first {
            None => first = Some(rows),
            Some(one) => assert!(*one == rows, "{workers} workers hold other rows than 1"),
        }
    }
}

/// Writes `rows` events a second apart.
fn write_events(path: &Path, rows: u64) {
    let mut text = String::new();
    for i in 0..rows {
        let site = i * 7 % 5;
        let clicked = u8::from((i * 13 % 10) < if site == 1 { 7 } else { 2 });
        text += &format!("{clicked},{},s{site},{}\n", 1_700_000_000 + i, i % 90);
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_restored_job_buffers_what_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("events.csv");
    write_events(&data, 6000);
    let fast = format!("type = \"file\"\npath = {data:?}");

    let whole = dir.path().join("whole");
    let spec = JobSpec::from_toml(&job_text(
        &fast,
        &whole.join("registry"),
        Some(&whole.join("state")),
        &whole.join("samples"),
    ))
    .unwrap();
    Job::start(spec, RunOptions::local(2))
        .unwrap()
        .wait()
        .unwrap();
    let want = held(&whole.join("samples"));
    assert_eq!(want.len(), 6000);

    let cut = dir.path().join("cut");
    let text = |source: &str| {
        job_text(
            source,
            &cut.join("registry"),
            Some(&cut.join("state")),
            &cut.join("samples"),
        )
    };
    let slow = format!("{fast}\nrows_per_sec = 2000.0");
    let job = Job::start(
        JobSpec::from_toml(&text(&slow)).unwrap(),
        RunOptions::local(2),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    job.stop();
    let first = job.wait().unwrap();
    assert!(
        first.checkpoints_written > 0 && first.source_records < 6000,
        "interrupted in the middle: {first:?}"
    );
    let second = Job::start(
        JobSpec::from_toml(&text(&fast)).unwrap(),
        RunOptions::local(2),
    )
    .unwrap()
    .wait()
    .unwrap();
    assert!(second.restored_epoch.is_some(), "{second:?}");
    assert!(
        held(&cut.join("samples")) == want,
        "the restored buffer's rows differ"
    );
}

#[test]
fn bad_sample_settings_are_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(
        "type = \"generator\"\npartitions = 1\nrows = 10",
        &dir.path().join("r"),
        None,
        &dir.path().join("s"),
    )
    .replace(
        "[samples]\n",
        "[samples]\nmax_age_seconds = 0\nmax_bytes = 300\n",
    )
    .replace("segment_bytes = 8192", "segment_bytes = 100");
    let problems = JobSpec::from_toml(&text).unwrap_err().to_string();
    for key in ["max_age_seconds", "segment_bytes", "max_bytes"] {
        assert!(
            problems.contains(&format!("[samples] `{key}`")),
            "{problems}"
        );
    }
    let no_dir = job_text(
        "type = \"generator\"\npartitions = 1\nrows = 10",
        &dir.path().join("r"),
        None,
        &dir.path().join("s"),
    )
    .replace(&format!("dir = {:?}\n", dir.path().join("s")), "");
    let problems = JobSpec::from_toml(&no_dir).unwrap_err().to_string();
    assert!(problems.contains("[samples] `dir` is needed"), "{problems}");
}
