//! Artifact format versions: a registry written before format versions (by commit 3831231,
//! `testdata/registry-format-1.0`) still loads and scores; a new artifact records the format it
//! was written in; one of a newer major version is refused with a message that says so.

use millrace_models::artifact::FORMAT_VERSION;
use millrace_models::fmap::{Parser, TransformCounts};
use millrace_models::{EventBatch, Registry};
use std::path::Path;

fn old_registry() -> Registry {
    Registry::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/registry-format-1.0"))
        .unwrap()
}

#[test]
fn an_artifact_written_before_format_versions_loads_and_scores() {
    let artifact = old_registry().load("ctr", 1).unwrap();
    assert_eq!(artifact.meta.format_version, "1.0");
    assert_eq!(artifact.weights.len(), 1024);
    assert_eq!(artifact.factors.len(), 8 * 1024);
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
    let mut artifact =
        millrace_models::ModelArtifact::new("ctr", old.meta.features.clone(), old.weights.clone());
    let version = registry.publish(&mut artifact).unwrap();
    let meta_path = dir.path().join(format!("ctr/v{version:010}/meta.json"));
    let text = std::fs::read_to_string(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(meta["format_version"], FORMAT_VERSION);
    assert_eq!(registry.load("ctr", version).unwrap().meta, artifact.meta);

    // A newer minor version loads; a newer major one, with a key this reader does not know,
    // is refused for its version, not for the key.
    meta["format_version"] = "2.9".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    assert!(registry.load("ctr", version).is_ok());
    meta["format_version"] = "3.0".into();
    meta["architecture"] = "dcn-v3".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(
        error.contains("format version \"3.0\" is newer than this reader's 2.0"),
        "{error}"
    );
    meta["format_version"] = "three".into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let error = registry.load("ctr", version).unwrap_err().to_string();
    assert!(error.contains("must be MAJOR.MINOR"), "{error}");
}
