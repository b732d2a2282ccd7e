//! A cluster that speaks only TLS: a job reaches it through `[source] kafka` and `kafka_file`
//! (reads, learns, publishes to the registry topic), and `serve` follows that topic through
//! `--kafka-property` and `--kafka-properties-file`.
//!
//! The cluster is a tansu process of the test's own that advertises a socat TLS listener in
//! front of it (certificate made here by openssl), so that every connection a client makes,
//! after the bootstrap too, is TLS. A plaintext client of the same address learns nothing.

mod common;

use common::{criteo_instance, http, report, unique, wait_for};
use millrace_connectors::kafka::{create_topics, Brokers, KafkaReader, LineProducer};
use millrace_engine::spec::{JobSpec, LearnerSpec, ProgressSpec, PublishSpec};
use millrace_engine::KafkaSourceConfig;
use millrace_models::synth::CriteoGenerator;
use millrace_models::{FeatureSpec, FtrlParams};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 2_000;

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, in `dir`.
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup.sh --with-broker installs it)");
    assert!(status.success());
    let text = |p: &Path| p.to_str().unwrap().to_owned();
    (text(&cert), text(&key))
}

/// tansu on a loopback port, advertising `tls`, where socat answers TLS and forwards to it.
fn tls_cluster(dir: &Path) -> (SocketAddr, String, [Process; 2]) {
    let (cert, key) = certificate(dir);
    let (inner, tls) = (free_addr(), free_addr());
    let tansu = std::env::var("MILLRACE_TANSU")
        .expect("MILLRACE_TANSU is unset: run the tests with `make test`");
    let broker = Process(
        Command::new(tansu)
            .args(["broker", "--listener-url", &format!("tcp://{inner}")])
            .args(["--advertised-listener-url", &format!("tcp://{tls}")])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu"),
    );
    listening(inner, "tansu");
    let terminator = Process(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0",
                tls.port()
            ))
            .arg(format!("TCP:{inner}"))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/setup.sh --with-broker installs it)"),
    );
    listening(tls, "socat");
    (tls, cert, [broker, terminator])
}

/// A file only its owner may read, holding `text`.
fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_job_and_a_server_work_through_a_tls_only_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert, _cluster) = tls_cluster(dir.path());
    let servers = addr.to_string();
    let topic = unique("tls");
    let registry_topic = format!("{topic}-registry");

    let plain = Brokers::new(servers.clone());
    let source = KafkaSourceConfig {
        bootstrap_servers: servers.clone(),
        topic: topic.clone(),
        group_id: unique("g"),
        dead_letter_topic: format!("{topic}-dead"),
        partitions: 2,
        idle_ms: 300,
        stop_after_records: Some(EVENTS),
        event_time_field: None,
        on_missing_offsets: Default::default(),
        kafka: BTreeMap::from([("security.protocol".to_owned(), "SSL".to_owned())]),
        kafka_file: Some(dir.path().join("client.properties")),
    };
    assert!(
        KafkaReader::topic_partitions(&source, &plain).is_err(),
        "a plaintext client reached the TLS listener"
    );

    // The events, produced through TLS.
    private_file(
        &dir.path().join("client.properties"),
        &format!("# the cluster's CA\nssl.ca.location={cert}\n"),
    );
    let tls = plain
        .with_properties(BTreeMap::from([
            ("security.protocol".to_owned(), "SSL".to_owned()),
            ("ssl.ca.location".to_owned(), cert.clone()),
        ]))
        .unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_topics(&tls, &[&topic, &source.dead_letter_topic], 2))
        .unwrap();
    let mut producer = LineProducer::new(&tls, &topic, 2).unwrap();
    for event in CriteoGenerator::new(7).take(EVENTS as usize) {
        producer.send(event.to_tsv().as_bytes()).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();

    // The job, from its file: reads, learns and publishes to the registry topic through TLS.
    let spec = JobSpec::builder("ctr")
        .kafka_source(source)
        .features(FeatureSpec::Hashed { hash_bits: 16 })
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: dir.path().join("registry"),
            every_events: 1_000_000,
            every_seconds: 3600,
            registry_topic: Some(registry_topic.clone()),
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        })
        .progress(ProgressSpec {
            epoch_ms: 100,
            interval_ms: 0,
        })
        .build()
        .unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, spec.to_toml()).unwrap();
    assert!(
        spec.to_toml().contains("[source.kafka]"),
        "{}",
        spec.to_toml()
    );
    let job = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .arg("run")
        .arg(&job_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let report = report(job);
    assert_eq!(report["learned"], EVENTS, "{report}");

    // A server follows the registry topic through TLS, given the settings on its command line.
    let secrets = dir.path().join("serve.properties");
    private_file(&secrets, &format!("ssl.ca.location={cert}\n"));
    let bind = free_addr();
    let _server = Process(
        Command::new(env!("CARGO_BIN_EXE_millrace"))
            .arg("serve")
            .arg("--registry")
            .arg(format!("kafka://{servers}/{registry_topic}"))
            .args(["--kafka-property", "security.protocol=SSL"])
            .arg("--kafka-properties-file")
            .arg(&secrets)
            .args(["--bind", &bind.to_string()])
            .spawn()
            .unwrap(),
    );
    let line = CriteoGenerator::new(8).next().unwrap().to_tsv();
    let body = serde_json::json!({ "instances": [criteo_instance(line.as_bytes())] }).to_string();
    wait_for("the job's version served", Duration::from_secs(60), || {
        TcpStream::connect(bind).is_ok() && {
            let (status, answer) = http(bind, "POST", "/v1/models/ctr:predict", &body);
            status == 200
                && answer.contains(&format!("\"model_version\":{}", report["model_version"]))
        }
    });
}
