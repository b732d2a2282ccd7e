//! A job of 3 processes, each in its own network namespace (its own network stack, joined to the
//! others by veth pairs on a bridge the test makes and removes), against the real test broker
//! (reached through a forwarder on the bridge, as the namespaces cannot see the machine's
//! loopback). The cluster learns what one process of 3 workers learns from the same stream:
//! the same counts and the same model, bit for bit. Then one process's link is cut mid-stream
//! (`ip link set … down`): every process stops (killed by itself) within the peer timeout, and
//! restarted with the link back, the cluster ends as the uninterrupted one did.
//!
//! It needs root, socat and a kernel that lets it make namespaces; elsewhere it says why it
//! was skipped and passes, unless `MILLRACE_REQUIRE_NETNS=1` makes that a failure.

mod common;

use common::{
    checkpointed_job_file, ended_by_peer_loss, latest_model, produce_stream_over, report,
    start_cluster_process, test_source, unique, Children,
};
use millrace_engine::spec::JobSpec;
use millrace_models::{FeatureSpec, ModelArtifact};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Events in the stream: a third for each of 3 partitions.
const EVENTS: u64 = 15_000;
const PROCESSES: usize = 3;
/// The peer timeout the processes run with (`--peer-timeout-secs`).
const PEER_TIMEOUT_SECS: u64 = 3;

/// Runs `ip` with `args`; its error output when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, their links and the bridge, with the broker's forwarders; all removed on
/// drop.
struct Network {
    tag: String,
    subnet: String,
    forwarders: Vec<Child>,
}

impl Network {
    /// Makes the network, or says why it cannot be made here.
    fn make(broker_port: u16) -> Result<Network, String> {
        let n = std::process::id() % 200 + 20;
        let mut network = Network {
            tag: format!("mr{n}"),
            subnet: format!("10.213.{n}"),
            forwarders: Vec::new(),
        };
        network.build(broker_port)?;
        Ok(network)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn namespace(&self, process: usize) -> String {
        format!("{}ns{process}", self.tag)
    }

    fn link(&self, process: usize) -> String {
        format!("{}v{process}", self.tag)
    }

    fn address(&self, process: usize) -> String {
        format!("{}.{}", self.subnet, process + 2)
    }

    fn build(&mut self, broker_port: u16) -> Result<(), String> {
        let (bridge, gateway) = (self.bridge(), format!("{}.1", self.subnet));
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for process in 0..PROCESSES {
            let (ns, link) = (self.namespace(process), self.link(process));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &link, "master", &bridge, "up"])?;
            let address = format!("{}/24", self.address(process));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        // The broker listens on the machine's loopback: a forwarder on the bridge reaches it,
        // and one on each namespace's loopback reaches that, so the address the broker
        // advertises (127.0.0.1) works from every namespace.
        let port = broker_port.to_string();
        self.forward(
            None,
            &format!("TCP-LISTEN:{port},bind={gateway},fork,reuseaddr"),
            &format!("TCP:127.0.0.1:{port}"),
        )?;
        for process in 0..PROCESSES {
            let ns = self.namespace(process);
            self.forward(
                Some(&ns),
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                &format!("TCP:{gateway}:{port}"),
            )?;
        }
        self.check_reachable()
    }

    /// Starts socat from `listen` to `to`, in namespace `ns` when given.
    fn forward(&mut self, ns: Option<&str>, listen: &str, to: &str) -> Result<(), String> {
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "socat"]);
                c
            }
            None => Command::new("socat"),
        };
        let child = command
            .args([listen, to])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("socat: {e}"))?;
        self.forwarders.push(child);
        Ok(())
    }

    /// Whether process 1's namespace answers process 0's (bridged traffic may be filtered).
    fn check_reachable(&self) -> Result<(), String> {
        let target = self.address(1);
        let mut listener = Command::new("ip")
            .args(["netns", "exec", &self.namespace(1), "socat", "-u"])
            .arg(format!("TCP-LISTEN:2999,bind={target}"))
            .arg("OPEN:/dev/null")
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let reached = loop {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.namespace(0),
                    "socat",
                    "-u",
                    "OPEN:/dev/null",
                ])
                .arg(format!("TCP:{target}:2999,connect-timeout=1"))
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok || Instant::now() > deadline {
                break ok;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = listener.kill();
        let _ = listener.wait();
        if reached {
            Ok(())
        } else {
            Err("one namespace cannot reach another over the bridge (filtered?)".to_owned())
        }
    }

    /// Cuts (`up = false`) or restores process `process`'s link.
    fn set_link(&self, process: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.link(process),
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }

    /// The hosts file of the cluster in `dir`.
    fn hosts(&self, dir: &Path) -> PathBuf {
        let hosts = dir.join("hosts");
        let text: String = (0..PROCESSES)
            .map(|p| format!("{}:2101\n", self.address(p)))
            .collect();
        std::fs::write(&hosts, text).unwrap();
        hosts
    }

    /// Starts every process of the job `job`, each in its namespace.
    fn start(&self, job: &Path, hosts: &Path) -> Vec<Child> {
        (0..PROCESSES)
            .map(|process| {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &self.namespace(process)])
                    .arg(env!("CARGO_BIN_EXE_millrace"))
                    .env("MILLRACE_PEER_TIMEOUT_SECS", PEER_TIMEOUT_SECS.to_string())
                    .env("MILLRACE_PEER_WAIT_SECS", "60");
                start_cluster_process(command, process, (hosts, job))
            })
            .collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for child in &mut self.forwarders {
            let _ = child.kill();
            let _ = child.wait();
        }
        for process in 0..PROCESSES {
            let _ = ip(&["link", "del", &self.link(process)]);
            let _ = ip(&["netns", "del", &self.namespace(process)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Vocabularies of the categories and buckets of the numbers: a FeatureMap fitted on the
/// stream, which the cluster must fit as one process does.
fn features() -> FeatureSpec {
    toml::from_str(
        r#"
        type = "map"
        [[transform]]
        kind = "bucketize"
        fields = ["I*"]
        buckets = 10
        [[transform]]
        kind = "one_hot"
        fields = ["C*"]
        min_count = 2
        capacity = 20000
        "#,
    )
    .unwrap()
}

/// The job file of a job whose processes each read `records` records, in `dir`.
fn job_file(dir: &Path, topic: &str, records: u64) -> PathBuf {
    let builder = JobSpec::builder("netns")
        .kafka_source(test_source(topic, 5000, records))
        .features(features());
    checkpointed_job_file(builder, dir, 1_000_000, 500)
}

fn sum(reports: &[Value], counter: &str) -> u64 {
    reports.iter().map(|r| r[counter].as_u64().unwrap()).sum()
}

fn same_weights(a: &ModelArtifact, b: &ModelArtifact) -> bool {
    a.values("weights")
        .iter()
        .zip(b.values("weights"))
        .all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn three_processes_on_their_own_network_stacks_learn_as_one_and_a_cut_link_restarts_them_exact() {
    let broker_port: u16 = common::broker()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("MILLRACE_TEST_BROKER names a port");
    let network = match Network::make(broker_port) {
        Ok(network) => network,
        Err(why) if std::env::var("MILLRACE_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("MILLRACE_REQUIRE_NETNS=1, but no network namespaces here: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: no network namespaces here ({why})");
            return;
        }
    };
    let topic = unique("netns");
    produce_stream_over(&topic, PROCESSES as i32, (EVENTS, 499, 11));
    let bad = EVENTS.div_ceil(499);

    // One process of 3 workers, on the machine's own stack: what the cluster must learn.
    let alone = tempfile::tempdir().unwrap();
    let job = job_file(alone.path(), &topic, EVENTS);
    let alone_report = report(
        Command::new(env!("CARGO_BIN_EXE_millrace"))
            .args(["run", "--workers", "3"])
            .arg(&job)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(alone_report["learned"], EVENTS - bad);
    let alone_model = latest_model(alone.path(), "netns");

    // The cluster over the namespaced links.
    let clean = tempfile::tempdir().unwrap();
    let (job, hosts) = (
        job_file(clean.path(), &topic, EVENTS / PROCESSES as u64),
        network.hosts(clean.path()),
    );
    let started = Instant::now();
    let reports: Vec<Value> = network
        .start(&job, &hosts)
        .into_iter()
        .map(report)
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    for report in &reports {
        assert_eq!(
            report["source_records"],
            EVENTS / PROCESSES as u64,
            "{report}"
        );
    }
    for counter in ["dead_letters", "decoded", "learned"] {
        assert_eq!(
            sum(&reports, counter),
            alone_report[counter].as_u64().unwrap(),
            "{counter}"
        );
    }
    let clean_model = latest_model(clean.path(), "netns");
    assert_eq!(clean_model.meta.trained_events, EVENTS - bad);
    assert!(
        same_weights(&clean_model, &alone_model),
        "the cluster's model differs from one process's of as many workers"
    );
    assert!(clean_model.feature_map.is_some(), "no fitted FeatureMap");
    assert_eq!(clean_model.feature_map, alone_model.feature_map);

    // Process 1's link cut halfway: every process stops by itself.
    let cut = tempfile::tempdir().unwrap();
    let (job, hosts) = (
        job_file(cut.path(), &topic, EVENTS / PROCESSES as u64),
        network.hosts(cut.path()),
    );
    let mut children = Children(network.start(&job, &hosts));
    std::thread::sleep(Duration::from_secs_f64((seconds * 0.5).max(1.0)));
    network.set_link(1, false);
    let at = Instant::now();
    let stopped: Vec<Duration> = (0..PROCESSES)
        .map(|process| {
            let within = (at, Duration::from_secs(60));
            ended_by_peer_loss(&mut children.0[process], process, within)
        })
        .collect();
    eprintln!(
        "cluster over namespaces: {seconds:.1} s for {EVENTS} events; link cut at {:.1} s; processes stopped {stopped:?} after",
        seconds * 0.5
    );

    // The link back, the cluster restarted: it ends exact.
    network.set_link(1, true);
    let restarted = Instant::now();
    let reports: Vec<Value> = network
        .start(&job, &hosts)
        .into_iter()
        .map(report)
        .collect();
    eprintln!(
        "restarted cluster caught up and ended in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    let restored: Vec<&Value> = reports.iter().map(|r| &r["restored_epoch"]).collect();
    assert!(restored.iter().all(|r| *r == restored[0]), "{restored:?}");
    for report in &reports {
        assert_eq!(
            report["source_records"],
            EVENTS / PROCESSES as u64,
            "{report}"
        );
    }
    assert_eq!(sum(&reports, "learned"), EVENTS - bad);
    let resumed = latest_model(cut.path(), "netns");
    assert!(
        same_weights(&resumed, &clean_model),
        "the restarted cluster's model differs from the uninterrupted one's"
    );
}
