//! A job of 2 processes × 1 worker on localhost (timely's cluster mode), against the real test
//! broker (`make test` starts tansu and sets `MILLRACE_TEST_BROKER`).
//!
//! The partitions are spread over the workers of both processes (worker `w` of 2 reads the
//! partitions `p % 2 == w`), the trainer synchronizes across the processes, each process
//! checkpoints its own worker into its own state directory, the same epochs in both. One run goes
//! through; another is killed (both processes, SIGKILL) partway and restarted: the processes
//! agree on the newest checkpoint both have, resume from it, and end with the same counts and
//! the same model, bit for bit.

mod common;

use common::{checkpointed_job_file, latest_model, produce_stream, report, test_source, unique};
use millrace_engine::checkpoint::CheckpointStore;
use millrace_engine::spec::JobSpec;
use millrace_models::{FeatureSpec, ModelArtifact};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 40_000;

/// The job file and the hosts file of a 2-process job in `dir`.
fn files(dir: &Path, topic: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    // Each process reads two of the four partitions: half of the events.
    let builder = JobSpec::builder("cluster")
        .kafka_source(test_source(topic, 5000, EVENTS / 2))
        .features(FeatureSpec::Hashed { hash_bits: 18 });
    let job = checkpointed_job_file(builder, dir, 1_000_000, 500);
    let ports = free_ports();
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    (job, hosts)
}

/// Two ports free now.
fn free_ports() -> Vec<u16> {
    (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Starts both processes, each with its probe port at `metrics[process]` when given.
fn start(job: &Path, hosts: &Path, metrics: Option<&[u16]>) -> Vec<Child> {
    (0..2)
        .map(|process| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
            if let Some(ports) = metrics {
                command.env(
                    "MILLRACE_METRICS_BIND",
                    format!("127.0.0.1:{}", ports[process]),
                );
            }
            command
                .args(["run", "--workers", "1", "--process", &process.to_string()])
                .arg("--hosts")
                .arg(hosts)
                .arg(job)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Waits for both processes; their reports.
fn finish(children: Vec<Child>) -> Vec<Value> {
    children.into_iter().map(report).collect()
}

fn sum(reports: &[Value], counter: &str) -> u64 {
    reports.iter().map(|r| r[counter].as_u64().unwrap()).sum()
}

fn model(dir: &Path) -> ModelArtifact {
    latest_model(dir, "cluster")
}

#[test]
fn two_processes_share_the_partitions_and_resume_together_after_a_kill() {
    let topic = unique("cluster");
    produce_stream(&topic, EVENTS, 499, 3);
    let bad = EVENTS.div_ceil(499);

    let clean = tempfile::tempdir().unwrap();
    let (job, hosts) = files(clean.path(), &topic);
    let started = Instant::now();
    // Each process serves its own metrics, health and readiness while it runs.
    let metrics = free_ports();
    let children = start(&job, &hosts, Some(&metrics));
    let addrs: Vec<std::net::SocketAddr> = metrics
        .iter()
        .map(|port| ([127, 0, 0, 1], *port).into())
        .collect();
    common::wait_for(
        "both processes to be ready",
        Duration::from_secs(60),
        || {
            addrs.iter().all(|addr| {
                std::net::TcpStream::connect(addr).is_ok()
                    && common::http(*addr, "GET", "/readyz", "").0 == 200
            })
        },
    );
    for addr in &addrs {
        let health = common::http(*addr, "GET", "/healthz", "");
        assert_eq!(health, (200, "ok".to_owned()));
        common::check_metrics(*addr, false, &["millrace_build", "millrace_source_records"]);
    }
    let reports = finish(children);
    let seconds = started.elapsed().as_secs_f64();
    for report in &reports {
        assert_eq!(report["source_records"], EVENTS / 2, "{report}");
    }
    assert_eq!(sum(&reports, "dead_letters"), bad);
    assert_eq!(sum(&reports, "decoded"), EVENTS - bad);
    assert_eq!(sum(&reports, "learned"), EVENTS - bad);
    let clean_model = model(clean.path());
    assert_eq!(clean_model.meta.trained_events, EVENTS - bad);
    for process in 0..2 {
        let store =
            CheckpointStore::open(&clean.path().join(format!("state/process-{process}")), 3)
                .unwrap();
        assert!(
            !store.epochs().is_empty(),
            "process {process} checkpointed nothing"
        );
    }

    // Both processes killed halfway, then restarted.
    let crashed = tempfile::tempdir().unwrap();
    let (job, hosts) = files(crashed.path(), &topic);
    let mut children = start(&job, &hosts, None);
    std::thread::sleep(Duration::from_secs_f64((seconds * 0.6).max(1.0)));
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let checkpointed: Vec<Vec<u64>> = (0..2)
        .map(|process| {
            CheckpointStore::open(&crashed.path().join(format!("state/process-{process}")), 3)
                .unwrap()
                .epochs()
        })
        .collect();
    eprintln!("clean run {seconds:.1} s; checkpoints at the kill: {checkpointed:?}");
    let reports = finish(start(&job, &hosts, None));
    let restored: Vec<&Value> = reports.iter().map(|r| &r["restored_epoch"]).collect();
    assert_eq!(
        restored[0], restored[1],
        "the processes restored different epochs"
    );
    if checkpointed.iter().all(|c| !c.is_empty()) {
        assert!(
            restored[0].is_u64(),
            "nothing restored from {checkpointed:?}"
        );
    }
    for report in &reports {
        assert_eq!(report["source_records"], EVENTS / 2, "{report}");
    }
    assert_eq!(sum(&reports, "dead_letters"), bad);
    assert_eq!(sum(&reports, "learned"), EVENTS - bad);
    let crashed_model = model(crashed.path());
    assert_eq!(crashed_model.meta.trained_events, EVENTS - bad);
    assert!(
        crashed_model
            .values("weights")
            .iter()
            .zip(clean_model.values("weights"))
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the model differs from the uninterrupted run's"
    );
}
