//! The registry topic against the real broker that `make test` starts.

use super::*;
use millrace_models::fmap::{FeatureMapSpec, Parser, Schema};
use millrace_models::table::CHUNK_ROWS;
use millrace_models::topic::{digest, le_bytes, Manifest, TensorManifest, KEY_MIN_BYTES};
use millrace_models::{
    EventBatch, FeatureMap, FeatureSpec, LoadPace, ModelArtifact, Registry, VersionSource,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn broker() -> Brokers {
    Brokers::new(std::env::var("MILLRACE_TEST_BROKER").expect(
        "MILLRACE_TEST_BROKER is unset: run the tests with `make test`, which starts the broker",
    ))
}

fn topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("{name}-{}-{nanos}", std::process::id());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(create_registry_topic(&broker(), &topic))
        .unwrap();
    topic
}

/// Waits until `source` has `version` of `name`.
fn wait_for(source: &KafkaVersions, name: &str, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !source.versions(name).unwrap().contains(&version) {
        assert!(Instant::now() < deadline, "version {version} never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Versions published to a directory registry (which numbers them) and to the topic.
struct Trainer {
    _dir: tempfile::TempDir,
    registry: Registry,
    publisher: RegistryPublisher,
}

impl Trainer {
    fn new(topic: &str) -> Self {
        Trainer::signing(topic, None)
    }

    fn signing(topic: &str, key: Option<RegistryKey>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Trainer {
            registry: Registry::open(dir.path()).unwrap(),
            _dir: dir,
            publisher: RegistryPublisher::new(&broker(), topic, key).unwrap(),
        }
    }

    fn publish(&mut self, artifact: &mut ModelArtifact) -> Published {
        self.registry.publish(artifact).unwrap();
        self.publisher.publish(artifact).unwrap()
    }
}

#[test]
fn serving_follows_the_topic_and_shares_unchanged_chunks() {
    let topic = topic("registry");
    let mut trainer = Trainer::new(&topic);
    let spec = FeatureSpec::Hashed { hash_bits: 16 };
    let weights: Vec<f32> = (0..spec.dimension(&millrace_models::Schema::criteo()))
        .map(|i| (i % 11) as f32 / 16.0)
        .collect();
    let factors = (0..2 * spec.dimension(&millrace_models::Schema::criteo()))
        .map(|i| (i % 5) as f32 / 8.0)
        .collect();
    let fm = ModelArtifact::factorization_machine("ctr", spec.clone(), weights, 2, factors);
    let first = trainer.publish(&mut fm.clone());
    assert_eq!((first.chunks_sent, first.chunks), (8, 8), "{first:?}");

    let source = KafkaVersions::follow(&broker(), &topic, None).unwrap();
    wait_for(&source, "ctr", 1);
    let v1 = source
        .load_served("ctr", 1, None, LoadPace::default())
        .unwrap();
    assert_eq!(v1.to_artifact().tensors, fm.tensors);

    // Version 2 changes one weight chunk: only that chunk travels, and the reader's version 2
    // shares every other block with version 1.
    let mut next = fm.clone();
    next.tensor_mut("weights").unwrap().values[2 * CHUNK_ROWS + 3] = -1.0;
    let sent = trainer.publish(&mut next);
    assert_eq!(sent.chunks_sent, 1, "{sent:?}");
    wait_for(&source, "ctr", 2);
    let v2 = source
        .load_served("ctr", 2, None, LoadPace::default())
        .unwrap();
    assert_eq!(v2.to_artifact().tensors, next.tensors);
    let memory = v2.memory(Some(&v1));
    assert_eq!(memory.block_bytes - memory.shared_bytes, CHUNK_ROWS * 4);
    // A hashed model's FeatureMap does not travel; the reader makes it again.
    let map = v2
        .feature_map
        .as_ref()
        .expect("a hashed model's FeatureMap");
    assert_eq!(Some(map), next.feature_map.as_ref());
    assert_eq!(map.version, 0);
    let (row, ones) = ([0, 7, 2 * CHUNK_ROWS as u32 + 3], [1.0; 3]);
    assert_eq!(
        v2.predict_row(&row, &ones).to_bits(),
        next.predict_row(&row, &ones).to_bits()
    );

    // A reader that starts later reads both versions from the topic.
    let late = KafkaVersions::follow(&broker(), &topic, None).unwrap();
    wait_for(&late, "ctr", 2);
    assert_eq!(late.versions("ctr").unwrap(), vec![1, 2]);
    assert_eq!(late.models().unwrap(), vec!["ctr".to_owned()]);
    let again = late
        .load_served("ctr", 2, None, LoadPace::default())
        .unwrap();
    assert_eq!(again.to_artifact().tensors, next.tensors);
}

/// A factorization machine of 32 factors: a chunk of 16384 rows would be 2.1 MB, past the
/// broker's default limit; it travels in chunks that fit, and serves as it was published.
#[test]
fn a_wide_model_travels_in_chunks_a_broker_accepts() {
    let topic = topic("wide");
    let mut trainer = Trainer::new(&topic);
    let spec = FeatureSpec::Hashed { hash_bits: 15 };
    let n = spec.dimension(&millrace_models::Schema::criteo());
    let weights: Vec<f32> = (0..n).map(|i| (i % 13) as f32 / 64.0).collect();
    let factors = (0..32 * n).map(|i| (i % 7) as f32 / 32.0).collect();
    let mut fm = ModelArtifact::factorization_machine("ctr", spec, weights, 32, factors);
    let sent = trainer.publish(&mut fm);
    assert_eq!(
        sent.chunks,
        n.div_ceil(CHUNK_ROWS) + n.div_ceil(4096),
        "{sent:?}"
    );
    let source = KafkaVersions::follow(&broker(), &topic, None).unwrap();
    wait_for(&source, "ctr", 1);
    let served = source
        .load_served("ctr", 1, None, LoadPace::default())
        .unwrap();
    assert_eq!(served.to_artifact().tensors, fm.tensors);
}

#[test]
fn incomplete_and_invalid_versions_are_not_served() {
    let topic = topic("registry-bad");
    let mut trainer = Trainer::new(&topic);
    let spec = FeatureSpec::Hashed { hash_bits: 8 };
    let mut good = ModelArtifact::logistic_regression(
        "ctr",
        spec.clone(),
        vec![0.5; spec.dimension(&millrace_models::Schema::criteo())],
    );
    trainer.publish(&mut good);

    // A manifest whose chunk the topic does not have (as after a publisher died mid-version
    // and compaction ran), and one naming a non-finite weight.
    let producer: BaseProducer = broker().client_config().create().unwrap();
    let mut manifest = Manifest {
        meta: good.meta.clone(),
        tensors: vec![TensorManifest {
            name: "weights".to_owned(),
            rows: spec.dimension(&millrace_models::Schema::criteo()),
            width: 1,
            chunk_rows: CHUNK_ROWS,
            chunks: vec![digest(b"not sent")],
        }],
        feature_map: Vec::new(),
    };
    manifest.meta.version = 2;
    let send = |key: &str, payload: &[u8]| {
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(key)
                    .payload(payload)
                    .partition(0),
            )
            .unwrap();
    };
    send("manifest/ctr", &serde_json::to_vec(&manifest).unwrap());
    let nan = le_bytes(&vec![
        f32::NAN;
        spec.dimension(&millrace_models::Schema::criteo())
    ]);
    send("chunk/ctr/weights/0", &nan);
    manifest.meta.version = 3;
    manifest.tensors[0].chunks = vec![digest(&nan)];
    send("manifest/ctr", &serde_json::to_vec(&manifest).unwrap());
    send("manifest/ctr", b"{not json");
    send("what/is/this", b"");
    // A version as a publisher of format 2.0 sent it: a `kind` where format 3 names an
    // architecture. It is served.
    let weights = le_bytes(good.values("weights"));
    send("chunk/ctr/weights/0", &weights);
    manifest.tensors[0].chunks = vec![digest(&weights)];
    let mut older = serde_json::to_value(&manifest).unwrap();
    older["meta"]["version"] = 4.into();
    older["meta"]["format_version"] = "2.0".into();
    older["meta"]
        .as_object_mut()
        .unwrap()
        .remove("architecture");
    older["meta"]["kind"] = "logistic_regression".into();
    send("manifest/ctr", &serde_json::to_vec(&older).unwrap());
    producer.flush(Duration::from_secs(30)).unwrap();

    let source = KafkaVersions::follow(&broker(), &topic, None).unwrap();
    wait_for(&source, "ctr", 4);
    assert_eq!(
        source.versions("ctr").unwrap(),
        vec![1, 3, 4],
        "2 is incomplete"
    );
    let older = source
        .load_served("ctr", 4, None, LoadPace::default())
        .unwrap();
    assert_eq!(older.meta.format_version, "2.0");
    assert_eq!(older.to_artifact().tensors, good.tensors);
    let err = source
        .load_served("ctr", 3, None, LoadPace::default())
        .unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    assert!(source
        .load_served("ctr", 1, None, LoadPace::default())
        .is_ok());
}

#[test]
fn models_of_a_map_spec_carry_their_feature_map_over_the_topic() {
    let spec = FeatureMapSpec::criteo_default();
    let layout = spec.compile(&Schema::criteo()).unwrap();
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(39);
    for i in 0..50 {
        let line = format!(
            "1\t{i}{}\tcafe{:04}{}",
            "\t".repeat(12),
            i % 7,
            "\t".repeat(25)
        );
        parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
    }
    let map = FeatureMap::fit(layout.clone(), std::slice::from_ref(&batch));
    let rows = map.transform(&batch, &mut Default::default());
    let weights: Vec<f32> = (0..layout.dimension)
        .map(|i| (i % 9) as f32 / 10.0)
        .collect();
    let mut model = ModelArtifact::logistic_regression("ctr", FeatureSpec::Map(spec), weights);
    model.feature_map = Some(Arc::new(map));

    let topic = topic("registry-map");
    let mut trainer = Trainer::new(&topic);
    trainer.publish(&mut model);
    let source = KafkaVersions::follow(&broker(), &topic, None).unwrap();
    wait_for(&source, "ctr", 1);
    let served = source
        .load_served("ctr", 1, None, LoadPace::default())
        .unwrap();
    assert_eq!(served.feature_map, model.feature_map);
    let (indices, values) = rows.row(3);
    assert_eq!(
        served.predict_row(indices, values).to_bits(),
        model.predict_row(indices, values).to_bits()
    );
}

fn key(byte: u8) -> RegistryKey {
    RegistryKey::new(vec![byte; KEY_MIN_BYTES]).unwrap()
}

#[test]
fn a_reader_with_a_key_serves_only_versions_signed_with_it() {
    let topic = topic("registry-signed");
    let spec = FeatureSpec::Hashed { hash_bits: 8 };
    let n = spec.dimension(&millrace_models::Schema::criteo());
    let artifact = |version: u64, weight: f32| {
        let mut artifact = ModelArtifact::logistic_regression("ctr", spec.clone(), vec![weight; n]);
        artifact.meta.version = version;
        artifact
    };
    // Versions 1 and 4 are signed with the reader's key; 2 with another, 3 with none.
    let (mut ours, mut theirs) = (
        RegistryPublisher::new(&broker(), &topic, Some(key(1))).unwrap(),
        RegistryPublisher::new(&broker(), &topic, Some(key(2))).unwrap(),
    );
    let mut unsigned = RegistryPublisher::new(&broker(), &topic, None).unwrap();
    ours.publish(&artifact(1, 0.1)).unwrap();
    theirs.publish(&artifact(2, 0.2)).unwrap();
    unsigned.publish(&artifact(3, 0.3)).unwrap();
    ours.publish(&artifact(4, 0.4)).unwrap();
    let keyed = KafkaVersions::follow(&broker(), &topic, Some(key(1))).unwrap();
    let open = KafkaVersions::follow(&broker(), &topic, None).unwrap();
    wait_for(&keyed, "ctr", 4);
    wait_for(&open, "ctr", 4);
    assert_eq!(keyed.versions("ctr").unwrap(), vec![1, 4]);
    assert_eq!(open.versions("ctr").unwrap(), vec![2, 3, 4]);
    let served = keyed
        .load_served("ctr", 4, None, LoadPace::default())
        .unwrap();
    assert_eq!(served.to_artifact().values("weights")[0], 0.4);
}
