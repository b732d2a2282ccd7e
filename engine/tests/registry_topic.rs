//! `millrace serve` following a signed registry topic on the test broker: a version that
//! passes the topic's checks but not the whole-version ones (a factorization machine with no
//! factors, which once made every predict panic) is rejected, and the version before keeps
//! answering 200; a manifest not signed with the key is never served.

mod common;

use common::{broker, brokers, http, unique, wait_for};
use millrace_connectors::kafka::{create_registry_topic, RegistryPublisher};
use millrace_models::topic::{RegistryKey, SIGNATURE_HEADER};
use millrace_models::{FeatureSpec, ModelArtifact, Schema};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::Duration;

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };
const KEY: &str = "8b1f0c5e2d7a4f6093c1e5b7a9d2f4e6081a3c5e7b9d1f2a4c6e8b0d2f4a6c8e";

fn fm(version: u64, weight: f32) -> ModelArtifact {
    let n = SPEC.dimension(&Schema::criteo());
    let mut artifact =
        ModelArtifact::factorization_machine("ctr", SPEC, vec![weight; n], 2, vec![0.01; 2 * n]);
    artifact.meta.version = version;
    artifact
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn predict(addr: SocketAddr) -> (u16, Value) {
    let body = r#"{"instances": [{"I1": 3, "C1": "68fd1e64"}]}"#;
    let (status, body) = http(addr, "POST", "/v1/models/ctr:predict", body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn rejected(addr: SocketAddr) -> u64 {
    let (_, metrics) = http(addr, "GET", "/metrics", "");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("millrace_serving_rejected_versions_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_rejected_version_leaves_the_one_before_answering() {
    let topic = unique("registry-guarded");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_registry_topic(&brokers(), &topic))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("registry.key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = RegistryKey::new(KEY.as_bytes().to_vec()).unwrap();
    let mut publisher = RegistryPublisher::new(&brokers(), &topic, Some(key.clone())).unwrap();
    publisher.publish(&fm(1, 0.01)).unwrap();

    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_millrace"))
            .arg("serve")
            .arg("--registry")
            .arg(format!("kafka://{}/{topic}", broker()))
            .arg("--registry-key-file")
            .arg(&key_file)
            .args(["--bind", &addr.to_string()])
            .spawn()
            .unwrap(),
    );
    wait_for("version 1", Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr).is_ok() && predict(addr).1["model_version"] == 1
    });

    // Version 2, signed, complete on the topic: its manifest declares no factors and lists
    // only the weights.
    let producer: BaseProducer = brokers().client_config().create().unwrap();
    let send = |key: &str, payload: &[u8], signature: Option<String>| {
        let mut record = BaseRecord::to(&topic)
            .key(key)
            .payload(payload)
            .partition(0);
        if let Some(signature) = &signature {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: SIGNATURE_HEADER,
                value: Some(signature.as_bytes()),
            }));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    let mut bare = fm(2, 0.02);
    bare.meta.architecture =
        serde_json::from_value(serde_json::json!({"type": "factorization_machine", "factors": 0}))
            .unwrap();
    bare.tensors.truncate(1);
    let mut chunks = Vec::new();
    let manifest = millrace_models::topic::encode(&bare, None, |key, bytes, _| {
        chunks.push((key, bytes.to_vec()));
        Ok::<(), ()>(())
    })
    .unwrap();
    for (key, bytes) in &chunks {
        send(key, bytes, None);
    }
    send("manifest/ctr", &manifest, Some(key.sign(&manifest)));
    wait_for("version 2's rejection", Duration::from_secs(60), || {
        rejected(addr) >= 1
    });
    for _ in 0..20 {
        let (status, answer) = predict(addr);
        assert_eq!(
            (status, &answer["model_version"]),
            (200, &1.into()),
            "{answer}"
        );
    }

    // Version 3 as a good version would be, but unsigned: never served. Version 4, signed, is.
    let mut unsigned = RegistryPublisher::new(&brokers(), &topic, None).unwrap();
    unsigned.publish(&fm(3, 0.03)).unwrap();
    publisher.publish(&fm(4, 0.04)).unwrap();
    wait_for("version 4", Duration::from_secs(60), || {
        predict(addr).1["model_version"] == 4
    });
    let (_, status) = http(addr, "GET", "/v1/models/ctr", "");
    assert!(!status.contains("\"version\":3"), "{status}");
}
