//! Helpers shared by the engine's integration tests (each test file uses some of them).
#![allow(dead_code)]

use millrace_connectors::kafka::{
    create_topics, text_headers, Brokers, LineProducer, EPOCH_HEADER,
};
use millrace_engine::spec::{CheckpointSpec, JobSpec, LearnerSpec, ProgressSpec, PublishSpec};
use millrace_engine::{Job, JobBuilder, KafkaSourceConfig, RunOptions};
use millrace_models::synth::CriteoGenerator;
use millrace_models::{FeatureSpec, FtrlParams};
use millrace_models::{ModelArtifact, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The test broker `make test` starts.
pub(crate) fn broker() -> String {
    std::env::var("MILLRACE_TEST_BROKER").expect(
        "MILLRACE_TEST_BROKER is unset: run the tests with `make test`, which starts the broker",
    )
}

/// The test broker, as the clients reach it.
pub(crate) fn brokers() -> Brokers {
    Brokers::new(broker())
}

/// A name no other test run uses.
pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Polls `done` until it holds; panics naming `what` after `timeout`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Produces `events` lines to a fresh 4-partition `topic` (and its `-dead` topic) on the test
/// broker, round robin over the partitions, 1 ms of event time apart: generated events from
/// `seed`, with a malformed line every `bad_every`.
pub(crate) fn produce_stream(topic: &str, events: u64, bad_every: u64, seed: u64) {
    produce_stream_over(topic, 4, (events, bad_every, seed));
}

/// As [`produce_stream`], over `partitions` partitions.
pub(crate) fn produce_stream_over(
    topic: &str,
    partitions: i32,
    (events, bad_every, seed): (u64, u64, u64),
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(create_topics(
            &brokers(),
            &[topic, &format!("{topic}-dead")],
            partitions,
        ))
        .unwrap();
    let mut producer = LineProducer::new(&brokers(), topic, partitions).unwrap();
    let mut generator = CriteoGenerator::new(seed);
    for i in 0..events {
        let line = if i % bad_every == 0 {
            format!("not an event {i}")
        } else {
            generator.next_event().to_tsv()
        };
        producer
            .send_at(line.as_bytes(), Some(1_700_000_000_000 + i as i64))
            .unwrap();
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// Queues `count` events of `events` to `producer`, numbered from `from` and stamped 1 ms of event
/// time apart by their numbers.
pub(crate) fn send_events(
    producer: &mut LineProducer,
    events: &mut CriteoGenerator,
    from: u64,
    count: u64,
) {
    for i in from..from + count {
        let line = events.next_event().to_tsv();
        producer
            .send_at(line.as_bytes(), Some(1_700_000_000_000 + i as i64))
            .unwrap();
    }
}

/// Events before and after a broker goes away in [`ride_out_broker_loss`].
const HALF: u64 = 10_000;

/// A two-worker job learns from the 4-partition `topic` (and `{topic}-dead`) on `servers` while
/// the broker goes away: it learns 10k events; `down` takes the broker away and 10k more are
/// produced meanwhile (the producer queues them); 3 s later the job must still run, having
/// learned only the first 10k; `up` brings the broker back (what it returns lives to the end).
/// The job must then learn exactly the 20k events, none of them dead letters. `seed` picks the
/// events.
pub(crate) fn ride_out_broker_loss<R>(
    servers: &str,
    topic: &str,
    seed: u64,
    down: impl FnOnce(),
    up: impl FnOnce() -> R,
) {
    let registry = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder(topic)
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: servers.to_owned(),
            topic: topic.to_owned(),
            group_id: topic.to_owned(),
            dead_letter_topic: format!("{topic}-dead"),
            partitions: 4,
            idle_ms: 300,
            stop_after_records: None,
            event_time_field: None,
            on_missing_offsets: Default::default(),
            kafka: Default::default(),
            kafka_file: None,
        })
        .features(FeatureSpec::Hashed { hash_bits: 16 });
    let spec = learn_quietly(spec, registry.path(), 100);
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    let mut producer = LineProducer::new(&Brokers::new(servers), topic, 4).unwrap();
    let mut events = CriteoGenerator::new(seed);

    send_events(&mut producer, &mut events, 0, HALF);
    producer.flush(Duration::from_secs(60)).unwrap();
    let learned = || stats.trainer.learned.load(Ordering::Relaxed);
    wait_for("the first half", Duration::from_secs(120), || {
        learned() == HALF
    });

    down();
    send_events(&mut producer, &mut events, HALF, HALF);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !job.is_finished(),
        "the job ended while the broker was away"
    );
    assert_eq!(learned(), HALF);
    let _back = up();
    producer.flush(Duration::from_secs(120)).unwrap();

    wait_for("the second half", Duration::from_secs(180), || {
        learned() == 2 * HALF
    });
    job.stop();
    let report = job.wait().unwrap();
    assert_eq!(report.source_records, 2 * HALF);
    assert_eq!(report.decoded, 2 * HALF);
    assert_eq!(report.learned, 2 * HALF);
    assert_eq!(report.dead_letters, 0);
}

/// Finishes a job spec with FTRL that publishes only its final version to `registry`, in epochs of
/// `epoch_ms`, without a progress line.
pub(crate) fn learn_quietly(builder: JobBuilder, registry: &Path, epoch_ms: u64) -> JobSpec {
    builder
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry.to_owned(),
            every_events: 1_000_000,
            every_seconds: 3600,
            registry_topic: None,
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        })
        .progress(ProgressSpec {
            epoch_ms,
            interval_ms: 0,
        })
        .build()
        .unwrap()
}

/// Waits for a `millrace run` process to end by itself; the report it printed last.
pub(crate) fn report(child: Child) -> Value {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the job failed: {:?}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout.lines().last().expect("the job printed no report");
    serde_json::from_str(line).unwrap()
}

/// The newest version of `model` in the registry under `dir`.
pub(crate) fn latest_model(dir: &Path, model: &str) -> ModelArtifact {
    Registry::open(dir.join("registry"))
        .unwrap()
        .load_latest(model)
        .unwrap()
}

/// A minimal HTTP/1.1 exchange; returns the status code and the body.
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A Criteo line's features as a predict instance: `I1`…`I13` as numbers, `C1`…`C26` as
/// strings, empty fields left out.
pub(crate) fn criteo_instance(line: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(line).expect("a Criteo line is UTF-8");
    let mut object = serde_json::Map::new();
    for (i, value) in text.trim_end().split('\t').enumerate().skip(1) {
        if value.is_empty() {
            continue;
        }
        let (name, value) = if i <= 13 {
            (
                format!("I{i}"),
                value.parse::<i64>().expect("an integer").into(),
            )
        } else {
            (format!("C{}", i - 13), value.into())
        };
        object.insert(name, value);
    }
    serde_json::Value::Object(object)
}

/// A source of the 4-partition `topic` on the test broker (dead letters to `{topic}-dead`), in a
/// group of its own, that ends after `stop_after` records.
pub(crate) fn test_source(topic: &str, idle_ms: u64, stop_after: u64) -> KafkaSourceConfig {
    KafkaSourceConfig {
        bootstrap_servers: broker(),
        topic: topic.to_owned(),
        group_id: unique("g"),
        dead_letter_topic: format!("{topic}-dead"),
        partitions: 4,
        idle_ms,
        stop_after_records: Some(stop_after),
        event_time_field: None,
        on_missing_offsets: Default::default(),
        kafka: Default::default(),
        kafka_file: None,
    }
}

/// Finishes `builder` (its source and features given) as a job that learns with FTRL, publishes
/// to `dir/registry` every `every_events` events (and at its end), runs in epochs of 100 ms and
/// checkpoints into `dir/state` every `interval_ms`, keeping 3; writes it to `dir/job.toml` and
/// returns that path.
pub(crate) fn checkpointed_job_file(
    builder: JobBuilder,
    dir: &Path,
    every_events: u64,
    interval_ms: u64,
) -> PathBuf {
    let spec = builder
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: dir.join("registry"),
            every_events,
            every_seconds: 3600,
            registry_topic: None,
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        })
        .progress(ProgressSpec {
            epoch_ms: 100,
            interval_ms: 0,
        })
        .checkpoint(CheckpointSpec {
            state_dir: dir.join("state"),
            interval_ms,
            keep: 3,
            max_failures: CheckpointSpec::default_max_failures(),
        })
        .build()
        .unwrap();
    let path = dir.join("job.toml");
    std::fs::write(&path, spec.to_toml()).unwrap();
    path
}

/// A message read back from an output topic.
pub(crate) struct TopicMessage {
    pub(crate) key: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: std::collections::BTreeMap<String, String>,
}

/// The messages of `topic`: at least `count`, and with `to_end`, everything until nothing more
/// comes for a second. Every one must name its epoch.
pub(crate) fn read_topic(topic: &str, count: usize, to_end: bool) -> Vec<TopicMessage> {
    let consumer: BaseConsumer = brokers()
        .client_config()
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30 + count as u64 / 5_000);
    let mut quiet_since = Instant::now();
    while messages.len() < count || (to_end && quiet_since.elapsed() < Duration::from_secs(1)) {
        assert!(
            Instant::now() < deadline,
            "{} of {count} messages of {topic}",
            messages.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let headers = text_headers(&message);
            assert!(
                headers
                    .get(EPOCH_HEADER)
                    .is_some_and(|e| e.parse::<u64>().is_ok()),
                "a message of {topic} without its epoch: {headers:?}"
            );
            messages.push(TopicMessage {
                key: message.key().unwrap_or_default().to_vec(),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
            quiet_since = Instant::now();
        }
    }
    // Nothing more than expected (a record predicted twice would show here).
    if !to_end {
        while let Some(message) = consumer.poll(Duration::from_millis(500)) {
            message.unwrap();
            messages.push(TopicMessage {
                key: Vec::new(),
                payload: Vec::new(),
                headers: Default::default(),
            });
        }
    }
    messages
}

/// Every message of `topic` (its writers done): read partition by partition from the
/// beginning until the client reports each partition's end. (Not the ends the broker gives
/// when asked: tansu 0.6 answers a partition's last batch's first offset + 1 there.)
pub(crate) fn read_whole_topic(topic: &str) -> Vec<TopicMessage> {
    use rdkafka::error::KafkaError;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = brokers()
        .client_config()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let partitions = millrace_connectors::kafka::partition_count(&consumer, topic).unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut ended = std::collections::BTreeSet::new();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while ended.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "{topic}: {} messages, partitions {ended:?} at their end",
            messages.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(message) => {
                let message = message.unwrap();
                ended.remove(&message.partition());
                messages.push(TopicMessage {
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: text_headers(&message),
                });
            }
        }
    }
    messages
}

/// Checks the `/metrics` of the server at `addr` with the Prometheus Python client's parsers
/// (`scripts/metrics_check.py`, in the test venv): both exposition formats parse, every family
/// has its help, no name carries a unit other than a base unit, and `required` (OpenMetrics
/// family names) are there; with `dashboard`, every metric `perf/grafana/millrace.json` queries
/// is there too, and `docs/operations.md` lists every family.
pub(crate) fn check_metrics(addr: std::net::SocketAddr, dashboard: bool, required: &[&str]) {
    let python = std::env::var("MILLRACE_INTEROP_PYTHON")
        .expect("MILLRACE_INTEROP_PYTHON is unset: run the tests with `make test`");
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/metrics_check.py");
    let output = std::process::Command::new(&python)
        .arg(check)
        .arg(format!("http://{addr}/metrics"))
        .args(if dashboard {
            vec![
                "--dashboard",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../perf/grafana/millrace.json"),
                "--documented",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md"),
            ]
        } else {
            vec![]
        })
        .args(required)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `command` (the `millrace` binary, or a wrapper that runs it) as process `process`, of
/// one worker, of the cluster of `hosts` running `job`; its report comes on stdout.
pub(crate) fn start_cluster_process(
    mut command: Command,
    process: usize,
    (hosts, job): (&Path, &Path),
) -> Child {
    command
        .args(["run", "--workers", "1", "--process", &process.to_string()])
        .arg("--hosts")
        .arg(hosts)
        .arg(job);
    spawn_run(&mut command)
}

/// Spawns `command` (a `millrace run`, or a wrapper that runs one), logging only warnings to
/// the test's stderr; its report comes on stdout.
pub(crate) fn spawn_run(command: &mut Command) -> Child {
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Processes killed when dropped (a failed assertion leaves none running).
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child`, process `process` of a cluster, to end as a process that lost a peer does
/// (by its own SIGKILL), at most `within` after `since`; how long after `since` it ended.
pub(crate) fn ended_by_peer_loss(
    child: &mut Child,
    process: usize,
    (since, within): (Instant, Duration),
) -> Duration {
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            since.elapsed() < within,
            "process {process} still runs {within:?} after its peer was lost"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(millrace_engine::peers::PEER_LOST_SIGNAL),
        "process {process} ended with {status} when its peer was lost"
    );
    since.elapsed()
}
