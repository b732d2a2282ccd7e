//! The built-in `generator` and `file` sources and the `file` sink end to end: every record
//! learned once with 1, 2 and 4 workers, each prediction written once, and a checkpointed file
//! job interrupted and resumed where it was.

use millrace_engine::spec::JobSpec;
use millrace_engine::{Job, RunOptions};
use std::path::Path;
use std::time::Duration;

/// A job of `source` (a `[source]` table's body) over a small declared schema with a time
/// field, in epochs of `epoch_ms`, checkpointed into `state` when given.
fn job_text(source: &str, epoch_ms: u64, registry: &Path, state: Option<&Path>) -> String {
    let checkpoint = state.map_or(String::new(), |state| {
        format!("[checkpoint]\nstate_dir = {state:?}\ninterval_ms = 0\n")
    });
    let predictions = registry.with_extension("predictions");
    format!(
        r#"
name = "sources"

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
kind = "standardize"
fields = ["price"]

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
epoch_ms = {epoch_ms}
interval_ms = 0

{checkpoint}

[sinks]
predictions_sink = {{ type = "file", path = {predictions:?} }}
"#
    )
}

#[test]
fn a_generator_source_is_learned_whole_with_1_2_and_4_workers() {
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let source = "type = \"generator\"\npartitions = 3\nrows = 9001\nseed = 11";
        let spec =
            JobSpec::from_toml(&job_text(source, 5000, &dir.path().join("r"), None)).unwrap();
        let report = Job::start(spec, RunOptions::local(workers))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            (report.source_records, report.learned, report.dead_letters),
            (9001, 9001, 0),
            "{workers} workers: {report:?}"
        );
        // Each event's prediction, once, in the files of the workers that learned it.
        let mut positions = Vec::new();
        for worker in 0..workers {
            let file = dir
                .path()
                .join(format!("r.predictions/predictions-{worker}.jsonl"));
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                positions.push(line["key"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(
            positions.len(),
            9001,
            "{workers} workers: one line per event"
        );
        positions.sort();
        positions.dedup();
        assert_eq!(positions.len(), 9001, "{workers} workers: every event once");
    }
}

/// Writes `rows` events a second apart, clicks likelier on site `s1`.
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
fn a_checkpointed_file_job_resumes_at_its_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let (data, registry, state) = (
        dir.path().join("events.csv"),
        dir.path().join("registry"),
        dir.path().join("state"),
    );
    write_events(&data, 6000);
    let slow = format!("type = \"file\"\npath = {data:?}\nrows_per_sec = 2000.0");
    let spec = JobSpec::from_toml(&job_text(&slow, 60_000, &registry, Some(&state))).unwrap();
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    job.stop();
    let first = job.wait().unwrap();
    assert!(
        first.checkpoints_written > 0 && first.source_records < 6000,
        "interrupted in the middle: {first:?}"
    );
    let fast = format!("type = \"file\"\npath = {data:?}");
    let spec = JobSpec::from_toml(&job_text(&fast, 60_000, &registry, Some(&state))).unwrap();
    let second = Job::start(spec, RunOptions::local(2))
        .unwrap()
        .wait()
        .unwrap();
    assert!(second.restored_epoch.is_some(), "{second:?}");
    // Counted across the restart: every record once.
    assert_eq!(
        (second.source_records, second.learned, second.dead_letters),
        (6000, 6000, 0),
        "{second:?}"
    );
}

#[test]
fn a_bounded_file_job_without_kafka_is_refused_as_several_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("events.csv");
    write_events(&data, 10);
    let source = format!("type = \"file\"\npath = {data:?}");
    let out = dir.path().join("out");
    let text = job_text(&source, 60_000, &dir.path().join("registry"), None).replace(
        "[sinks]\n",
        &format!("[sinks]\ndead_letters_sink = {{ type = \"file\", path = {out:?} }}\n"),
    );
    let spec = JobSpec::from_toml(&text).unwrap();
    let cluster = millrace_engine::Cluster {
        process: 0,
        hosts: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
    };
    let options = RunOptions {
        cluster: Some(cluster),
        ..RunOptions::local(1)
    };
    let Err(millrace_engine::Error::Config { problems }) = Job::start(spec, options) else {
        panic!("refused");
    };
    assert_eq!(
        problems,
        ["[source] a bounded `file` source ends the job once every record is read, a count no process of several sees whole: run it as one process"]
    );
}

/// A job that publishes every 1000 events keeps the registry to `keep_versions`: the newest
/// two, plus what a server holds; what a publisher that died left behind goes at start.
#[test]
fn the_registry_keeps_its_newest_versions_and_the_held_ones() {
    let dir = tempfile::tempdir().unwrap();
    let registry_dir = dir.path().join("r");
    let registry = millrace_models::Registry::open(&registry_dir).unwrap();
    let orphan = registry_dir.join("sources").join(".tmp-v7-999999");
    std::fs::create_dir_all(&orphan).unwrap();
    // A server holds version 3 (a pin, say) while the job publishes.
    registry.hold("sources", "server-1", &[3]).unwrap();
    let source = "type = \"generator\"\npartitions = 1\nrows = 9000\nseed = 5";
    let text = job_text(source, 5000, &registry_dir, None).replace(
        "every_seconds = 1\n",
        "every_seconds = 3600\nkeep_versions = 2\n",
    );
    let spec = JobSpec::from_toml(&text).unwrap();
    assert_eq!(spec.publish.keep_versions, 2);
    let report = Job::start(spec, RunOptions::local(1))
        .unwrap()
        .wait()
        .unwrap();
    let newest = report.model_version;
    assert!(newest >= 6, "{report:?}");
    assert_eq!(
        registry.versions("sources").unwrap(),
        vec![3, newest - 1, newest]
    );
    assert!(!orphan.exists());
}

/// A file system of the test's own (a 256 MiB tmpfs, mounted here: the tests run as root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The job's checkpoints go to a file system that fills up: the writes fail (the store refuses
/// a write that would leave too little room, rather than let RocksDB meet a full disk), the
/// source stops reading after `max_failures` of them, the job goes on once there is room again,
/// and it ends with the counts and the model of a run that never lacked room.
#[test]
fn a_full_disk_holds_the_job_back_until_there_is_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("events.csv");
    write_events(&data, 6000);
    let source = format!("type = \"file\"\npath = {data:?}\nrows_per_sec = 3000.0");
    let run = |registry: &Path, state: &Path| {
        let text = job_text(&source, 60_000, registry, Some(state))
            .replace("[checkpoint]\n", "[checkpoint]\nmax_failures = 2\n");
        JobSpec::from_toml(&text).unwrap()
    };
    let spec = run(&dir.path().join("plain"), &dir.path().join("plain-state"));
    assert_eq!(spec.checkpoint.as_ref().unwrap().max_failures, 2);
    let plain = Job::start(spec, RunOptions::local(2))
        .unwrap()
        .wait()
        .unwrap();

    let fs = Tmpfs::mount(&dir.path().join("fs"));
    // Room for RocksDB to open, not for a checkpoint (16 MiB of headroom beside it).
    let ballast = fs.0.join("ballast");
    std::fs::write(&ballast, vec![0u8; 248 << 20]).unwrap();
    let spec = run(&dir.path().join("full"), &fs.0.join("state"));
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    let failed = || {
        stats
            .checkpoints
            .get()
            .map_or(0, |c| c.figures().failed_in_a_row)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while failed() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writes never failed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Held back: the source reads nothing more while no checkpoint can be written.
    std::thread::sleep(Duration::from_millis(300));
    let held = stats
        .source
        .records
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    let later = stats
        .source
        .records
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(held == later && held < 6000, "read {held}, then {later}");
    assert!(failed() >= 2);
    std::fs::remove_file(&ballast).unwrap();
    let full = job.wait().unwrap();
    assert_eq!(
        (full.source_records, full.learned, full.dead_letters),
        (plain.source_records, plain.learned, plain.dead_letters),
        "{full:?}"
    );
    assert!(full.checkpoints_written > 0, "{full:?}");
    let weights = |registry: &str| {
        millrace_models::Registry::open(dir.path().join(registry))
            .unwrap()
            .load_latest("sources")
            .unwrap()
            .values("weights")
            .to_vec()
    };
    assert!(weights("full") == weights("plain"), "the models differ");
    eprintln!(
        "held back at {held} of {} records; {} checkpoints written after the room came back",
        plain.source_records, full.checkpoints_written
    );
}
