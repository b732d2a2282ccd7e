//! Artifact format versions: a registry written before format versions (by commit 3831231,
//! `testdata/registry-format-1.0`) and one written in format 2.0, before architecture
//! descriptors (by commit 3486e1f, `testdata/registry-format-2.0`), still load and score as
//! they did; a new artifact records the format it was written in and its architecture; one of a
//! newer major version is refused with a message that says so.

use millrace_models::architecture::Architecture;
use millrace_models::artifact::FORMAT_VERSION;
use millrace_models::fmap::{Parser, TransformCounts};
use millrace_models::{EventBatch, LoadPace, Registry, ServedModel};
use std::path::Path;

fn old_registry() -> Registry {
    Registry::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/registry-format-1.0"))
        .unwrap()
}

#[test]
fn an_artifact_written_before_format_versions_loads_and_scores() {
    let artifact = old_registry().load("ctr", 1).unwrap();
    assert_eq!(artifact.meta.format_version, "1.0");
    assert_eq!(
        artifact.meta.architecture,
        Architecture::FactorizationMachine { factors: 8 }
    );
    assert_eq!(artifact.values("weights").len(), 1024);
    assert_eq!(artifact.values("factors").len(), 8 * 1024);
    // Its rows come from the hashed spec's FeatureMap, and score as the first generation's
    // code scored them (`scores.tsv`: the bits of each probability, then the event's line).
    let map = artifact
        .feature_map
        .clone()
        .expect("a hashed spec's FeatureMap");
    let scores = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/registry-format-1.0/scores.tsv"),
    )
    .unwrap();
    let mut parser = Parser::new(&map.layout);
    let mut batch = EventBatch::new(map.layout.schema.fields.len());
    let mut expected = Vec::new();
    for line in scores.lines() {
        let (bits, event) = line.split_once('\t').unwrap();
        expected.push(bits.parse::<u32>().unwrap());
        parser
            .parse_record(event.as_bytes(), 0, &mut batch)
            .unwrap();
    }
    let rows = map.transform(&batch, &mut TransformCounts::default());
    assert_eq!(expected.len(), 8);
    for (i, bits) in expected.into_iter().enumerate() {
        let (indices, values) = rows.row(i);
        assert_eq!(
            artifact.predict_row(indices, values).to_bits(),
            bits,
            "event {i}"
        );
    }
    assert_eq!(
        old_registry()
            .latest_meta("ctr")
            .unwrap()
            .unwrap()
            .format_version,
        "1.0"
    );
}

#[test]
fn new_artifacts_record_their_format_and_newer_majors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = old_registry().load("ctr", 1).unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let mut artifact = millrace_models::ModelArtifact::logistic_regression(
        "ctr",
        old.meta.features.clone(),
        old.values("weights").to_vec(),
    );
    let version = registry.publish(&mut artifact).unwrap();
    let meta_path = dir.path().join(format!("ctr/v{version:010}/meta.json"));
    let text = std::fs::read_to_string(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(meta["format_version"], FORMAT_VERSION);
    assert_eq!(
        meta["architecture"],
        serde_json::json!({"type": "logistic_regression"})
    );
    assert_eq!(registry.load("ctr", version).unwrap().meta, artifact.meta);

    // A format 3 artifact names its architecture, not a `kind`; formats 1 and 2 a `kind`, or
    // an architecture where a format 3 reader wrote their metadata back; never both.
    let write = |meta: &serde_json::Value| std::fs::write(&meta_path, meta.to_string()).unwrap();
    let mut both = meta.clone();
    both["kind"] = "logistic_regression".into();
    write(&both);
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(error.contains("), once"), "{error}");
    let mut kind_only = both.clone();
    kind_only.as_object_mut().unwrap().remove("architecture");
    write(&kind_only);
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(
        error.contains("names the model's `architecture`, not a `kind`"),
        "{error}"
    );
    kind_only["format_version"] = "2.0".into();
    write(&kind_only);
    assert_eq!(
        registry.load("ctr", version).unwrap().meta.format_version,
        "2.0"
    );
    let mut older_with_architecture = meta.clone();
    older_with_architecture["format_version"] = "2.0".into();
    write(&older_with_architecture);
    assert!(registry.load("ctr", version).is_ok());

    // An architecture is checked like a learner's hyper-parameters, keys included.
    let mut extra = meta.clone();
    extra["architecture"] = serde_json::json!({"type": "logistic_regression", "factors": 8});
    write(&extra);
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(error.contains("unknown field `factors`"), "{error}");
    write(&meta);

    // A newer minor version loads; a newer major one, with a key this reader does not know,
    // is refused for its version, not for the key.
    meta["format_version"] = "3.9".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    assert!(registry.load("ctr", version).is_ok());
    meta["format_version"] = "4.0".into();
    meta["graph"] = "dcn-v3".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "format version \"4.0\" is newer than this reader's {FORMAT_VERSION}"
        )),
        "{error}"
    );
    meta["format_version"] = "three".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(error.contains("must be MAJOR.MINOR"), "{error}");
}

#[test]
fn an_artifact_of_format_2_loads_and_scores_as_it_did() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/registry-format-2.0");
    let registry = Registry::open(&dir).unwrap();
    let artifact = registry.load("ads", 1).unwrap();
    assert_eq!(artifact.meta.format_version, "2.0");
    assert_eq!(
        artifact.meta.architecture,
        Architecture::FactorizationMachine { factors: 4 }
    );
    let names: Vec<_> = artifact.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["weights", "factors"]);
    let served = registry
        .load_served("ads", 1, None, LoadPace::default())
        .unwrap();
    assert_eq!(served.meta, artifact.meta);

    // The schema travels with the artifact: serving reads instances by its field names.
    let map = artifact.feature_map.clone().expect("a fitted FeatureMap");
    let fields: Vec<_> = map
        .layout
        .schema
        .fields
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["site", "device", "price"]);

    // `scores.tsv`: the bits of each probability that commit's `serve` answered, then the
    // instance.
    let scores = std::fs::read_to_string(dir.join("scores.tsv")).unwrap();
    let mut parser = Parser::new(&map.layout);
    let mut batch = EventBatch::new(map.layout.schema.fields.len());
    let mut expected = Vec::new();
    for line in scores.lines() {
        let (bits, instance) = line.split_once('\t').unwrap();
        expected.push(bits.parse::<u32>().unwrap());
        parser.parse_json_text(instance, 0, &mut batch).unwrap();
    }
    let rows = map.transform(&batch, &mut TransformCounts::default());
    assert_eq!(expected.len(), 9);
    for (i, bits) in expected.into_iter().enumerate() {
        let (indices, values) = rows.row(i);
        assert_eq!(
            artifact.predict_row(indices, values).to_bits(),
            bits,
            "instance {i}"
        );
        assert_eq!(
            served.predict_row(indices, values).to_bits(),
            bits,
            "instance {i}"
        );
        let fresh = ServedModel::from_artifact(&artifact);
        assert_eq!(
            fresh.predict_row(indices, values).to_bits(),
            bits,
            "instance {i}"
        );
    }

    // Published again, it is written in this format with its architecture, and loads the same.
    let copy = tempfile::tempdir().unwrap();
    let mut again = artifact.clone();
    let version = Registry::open(copy.path())
        .unwrap()
        .publish(&mut again)
        .unwrap();
    let reloaded = Registry::open(copy.path())
        .unwrap()
        .load("ads", version)
        .unwrap();
    assert_eq!(reloaded.meta.format_version, FORMAT_VERSION);
    assert_eq!(reloaded.tensors, artifact.tensors);
}

#[test]
fn the_metadata_is_checked_before_the_tensors_and_sizes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let spec = millrace_models::FeatureSpec::Hashed { hash_bits: 4 };
    let mut fm = millrace_models::ModelArtifact::factorization_machine(
        "ctr",
        spec,
        vec![0.5; 16],
        2,
        vec![0.25; 32],
    );
    let version = registry.publish(&mut fm).unwrap();
    let meta_path = dir.path().join(format!("ctr/v{version:010}/meta.json"));
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();

    // Far more factors than any learner makes: refused for that, before a table sized by it
    // is made.
    meta["architecture"]["factors"] = (1u64 << 40).into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    for error in [
        registry.load("ctr", version).unwrap_err().to_string(),
        registry
            .load_served("ctr", version, None, LoadPace::default())
            .unwrap_err()
            .to_string(),
    ] {
        assert!(error.contains("1 to 256 factors per slot"), "{error}");
    }

    // A spec the tensors do not fit names the spec's problem, not the tensors' shapes; a
    // spec they fit, with tensors of other shapes, names those.
    meta["architecture"]["factors"] = 2.into();
    meta["features"]["hash_bits"] = 0.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(error.contains("hash_bits"), "{error}");
    assert!(
        !error.contains("where the architecture declares"),
        "{error}"
    );
    meta["features"]["hash_bits"] = 4.into();
    meta["architecture"]["factors"] = 4.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(
        error.contains("`factors` has shape [16, 2] where the architecture declares shape [16, 4]"),
        "{error}"
    );
}
