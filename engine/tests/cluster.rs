//! Jobs of 2 and 3 processes × 1 worker on localhost (timely's cluster mode), against the real
//! test broker (`make test` starts tansu and sets `MILLRACE_TEST_BROKER`).
//!
//! The partitions are spread over the workers of every process (worker `w` of `n` reads the
//! partitions `p % n == w`), the trainer synchronizes across the processes, each process
//! checkpoints its own worker into its own state directory, the same epochs in all. One run goes
//! through; another is killed (every process, SIGKILL) partway and restarted: the processes
//! agree on the newest checkpoint they all have, resume from it, and end with the same counts and
//! the same model, bit for bit. In a cluster of three, one process killed makes the other two
//! stop by themselves (killed by themselves, within a bounded time); restarted, the cluster ends as
//! the uninterrupted one did.

mod common;

use common::{
    checkpointed_job_file, ended_by_peer_loss, latest_model, produce_stream_over, report,
    start_cluster_process, test_source, unique, Children,
};
use millrace_engine::checkpoint::CheckpointStore;
use millrace_engine::spec::JobSpec;
use millrace_models::{FeatureSpec, ModelArtifact};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const EVENTS: u64 = 40_000;

/// The job file and the hosts file of a job of `processes` processes in `dir`, each reading
/// `events / processes` records.
fn files(
    dir: &Path,
    topic: &str,
    (processes, events): (usize, u64),
) -> (std::path::PathBuf, std::path::PathBuf) {
    let builder = JobSpec::builder("cluster")
        .kafka_source(test_source(topic, 5000, events / processes as u64))
        .features(FeatureSpec::Hashed { hash_bits: 18 });
    let job = checkpointed_job_file(builder, dir, 1_000_000, 500);
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        free_ports(processes)
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    (job, hosts)
}

/// `n` ports free now.
fn free_ports(n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Starts every process of `hosts`, each with its probe port at `metrics[process]` when given,
/// and the job file's `[checkpoint] keep` overridden by `keep` when given.
fn start(job: &Path, hosts: &Path, metrics: Option<&[u16]>, keep: Option<usize>) -> Vec<Child> {
    let processes = std::fs::read_to_string(hosts).unwrap().lines().count();
    (0..processes)
        .map(|process| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
            if let Some(keep) = keep {
                command.env("MILLRACE__CHECKPOINT__KEEP", keep.to_string());
            }
            if let Some(ports) = metrics {
                command.env(
                    "MILLRACE_METRICS_BIND",
                    format!("127.0.0.1:{}", ports[process]),
                );
            }
            start_cluster_process(command, process, (hosts, job))
        })
        .collect()
}

/// Waits for every process; their reports.
fn finish(children: Vec<Child>) -> Vec<Value> {
    children.into_iter().map(report).collect()
}

fn sum(reports: &[Value], counter: &str) -> u64 {
    reports.iter().map(|r| r[counter].as_u64().unwrap()).sum()
}

fn model(dir: &Path) -> ModelArtifact {
    latest_model(dir, "cluster")
}

/// The checkpointed epochs of every process of the job in `dir`.
fn checkpoints(dir: &Path, processes: usize) -> Vec<Vec<u64>> {
    (0..processes)
        .map(|process| {
            CheckpointStore::open(&dir.join(format!("state/process-{process}")), 3)
                .unwrap()
                .epochs()
        })
        .collect()
}

/// Restarts the job of `dir` and checks that it ends as the uninterrupted run did: every
/// process restored the same epoch (one, when each had checkpointed), the same counts, and
/// the same model bit for bit.
fn resume_exactly(
    dir: &Path,
    (job, hosts): (&Path, &Path),
    (events, bad): (u64, u64),
    clean: &ModelArtifact,
) {
    let processes = std::fs::read_to_string(hosts).unwrap().lines().count();
    let checkpointed = checkpoints(dir, processes);
    let reports = finish(start(job, hosts, None, None));
    let restored: Vec<&Value> = reports.iter().map(|r| &r["restored_epoch"]).collect();
    assert!(
        restored.iter().all(|r| *r == restored[0]),
        "the processes restored different epochs: {restored:?}"
    );
    if checkpointed.iter().all(|c| !c.is_empty()) {
        assert!(
            restored[0].is_u64(),
            "nothing restored from {checkpointed:?}"
        );
    }
    for report in &reports {
        assert_eq!(
            report["source_records"],
            events / processes as u64,
            "{report}"
        );
    }
    assert_eq!(sum(&reports, "dead_letters"), bad);
    assert_eq!(sum(&reports, "learned"), events - bad);
    let resumed = model(dir);
    assert_eq!(resumed.meta.trained_events, events - bad);
    assert!(
        resumed
            .values("weights")
            .iter()
            .zip(clean.values("weights"))
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the model differs from the uninterrupted run's"
    );
}

#[test]
fn two_processes_share_the_partitions_and_resume_together_after_a_kill() {
    let topic = unique("cluster");
    produce_stream_over(&topic, 4, (EVENTS, 499, 3));
    let bad = EVENTS.div_ceil(499);

    let clean = tempfile::tempdir().unwrap();
    let (job, hosts) = files(clean.path(), &topic, (2, EVENTS));
    let started = Instant::now();
    // Each process serves its own metrics, health and readiness while it runs.
    let metrics = free_ports(2);
    // Killed if an assertion fails before they end.
    let mut children = Children(start(&job, &hosts, Some(&metrics), None));
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
    let reports = finish(std::mem::take(&mut children.0));
    let seconds = started.elapsed().as_secs_f64();
    for report in &reports {
        assert_eq!(report["source_records"], EVENTS / 2, "{report}");
    }
    assert_eq!(sum(&reports, "dead_letters"), bad);
    assert_eq!(sum(&reports, "decoded"), EVENTS - bad);
    assert_eq!(sum(&reports, "learned"), EVENTS - bad);
    let clean_model = model(clean.path());
    assert_eq!(clean_model.meta.trained_events, EVENTS - bad);
    for (process, epochs) in checkpoints(clean.path(), 2).iter().enumerate() {
        assert!(!epochs.is_empty(), "process {process} checkpointed nothing");
    }

    // Both processes killed halfway, then restarted.
    let crashed = tempfile::tempdir().unwrap();
    let (job, hosts) = files(crashed.path(), &topic, (2, EVENTS));
    let mut children = start(&job, &hosts, None, None);
    std::thread::sleep(Duration::from_secs_f64((seconds * 0.6).max(1.0)));
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    eprintln!(
        "clean run {seconds:.1} s; checkpoints at the kill: {:?}",
        checkpoints(crashed.path(), 2)
    );
    resume_exactly(crashed.path(), (&job, &hosts), (EVENTS, bad), &clean_model);
}

/// How long the other processes of a cluster may take to stop once one is killed (the target
/// is under 10 s; a dead peer's connection closes at once, so they stop in far less).
const STOP_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn one_process_of_three_killed_stops_the_others_and_the_restarted_cluster_ends_exact() {
    // Spread round-robin over 3 partitions, one per process: a third each.
    const EVENTS: u64 = 21_000;
    let topic = unique("cluster3");
    produce_stream_over(&topic, 3, (EVENTS, 499, 5));
    let bad = EVENTS.div_ceil(499);

    let clean = tempfile::tempdir().unwrap();
    let (job, hosts) = files(clean.path(), &topic, (3, EVENTS));
    let started = Instant::now();
    let reports = finish(start(&job, &hosts, None, None));
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(sum(&reports, "learned"), EVENTS - bad);
    let clean_model = model(clean.path());

    let crashed = tempfile::tempdir().unwrap();
    let (job, hosts) = files(crashed.path(), &topic, (3, EVENTS));
    // Each process keeps its newest checkpoint and those the others may still need: whatever
    // the processes' paces, they hold one in common after the loss.
    let mut children = Children(start(&job, &hosts, None, Some(1)));
    std::thread::sleep(Duration::from_secs_f64((seconds * 0.5).max(1.0)));
    children.0[1].kill().unwrap();
    let killed = Instant::now();
    children.0[1].wait().unwrap();
    let stopped: Vec<Duration> = [0, 2]
        .map(|process| ended_by_peer_loss(&mut children.0[process], process, (killed, STOP_WITHIN)))
        .to_vec();
    let checkpointed = checkpoints(crashed.path(), 3);
    eprintln!(
        "clean run of 3 processes {seconds:.1} s; process 1 killed at {:.1} s; processes 0 and 2 stopped {:?} after; checkpoints: {checkpointed:?}",
        seconds * 0.5,
        stopped,
    );
    assert!(
        checkpointed[0]
            .iter()
            .any(|e| checkpointed.iter().all(|c| c.contains(e))),
        "no checkpoint in common: {checkpointed:?}"
    );
    resume_exactly(crashed.path(), (&job, &hosts), (EVENTS, bad), &clean_model);
}
