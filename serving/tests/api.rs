//! The HTTP API and hot swap, through warp's test client.

use millrace_models::{FeatureSpec, ModelArtifact, Registry};
use millrace_serving::{routes, ModelStore, ServeOptions};
use std::sync::Arc;

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };

fn publish(registry: &Registry, weight: f32) -> u64 {
    let mut artifact = ModelArtifact::new("ctr", SPEC, vec![weight; SPEC.dimension()]);
    registry.publish(&mut artifact).unwrap()
}

async fn predict(store: &Arc<ModelStore>, body: &str) -> (u16, serde_json::Value) {
    let reply = warp::test::request()
        .method("POST")
        .path("/v1/models/ctr:predict")
        .body(body)
        .reply(&routes(store.clone(), ServeOptions::default()))
        .await;
    let json = serde_json::from_slice(reply.body()).unwrap_or(serde_json::Value::Null);
    (reply.status().as_u16(), json)
}

#[tokio::test]
async fn predicts_with_the_newest_valid_version_and_rejects_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let store = Arc::new(ModelStore::new(registry.clone()));
    let (status, _) = predict(&store, r#"{"instances":[{}]}"#).await;
    assert_eq!(status, 404, "nothing served before the first version");

    assert_eq!(publish(&registry, 0.0), 1);
    assert_eq!(store.refresh().swapped, vec![("ctr".to_owned(), 1)]);
    let (status, json) = predict(&store, r#"{"instances":[{"I1":3,"C1":"68fd1e64"},{}]}"#).await;
    assert_eq!(status, 200);
    assert_eq!(json["model_version"], 1);
    assert_eq!(
        json["predictions"],
        serde_json::json!([0.5, 0.5]),
        "all-zero weights"
    );

    // Version 2 is corrupt and must be rejected.
    assert_eq!(publish(&registry, 0.2), 2);
    let weights = dir.path().join("ctr/v0000000002/weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let outcome = store.refresh();
    assert_eq!(outcome.rejected.len(), 1, "{outcome:?}");
    assert!(outcome.rejected[0].2.contains("checksum"), "{outcome:?}");
    let (_, json) = predict(&store, r#"{"instances":[{}]}"#).await;
    assert_eq!(json["model_version"], 1, "the old version keeps serving");
    assert_eq!(
        store.refresh(),
        Default::default(),
        "a rejected version is reported once"
    );

    assert_eq!(publish(&registry, 0.1), 3);
    store.refresh();
    let (_, json) = predict(&store, r#"{"instances":[{}]}"#).await;
    assert_eq!(json["model_version"], 3);
    let p = json["predictions"][0].as_f64().unwrap();
    let expected = 1.0 / (1.0 + (-0.1f64 * 40.0).exp());
    assert!((p - expected).abs() < 1e-5, "{p} vs {expected}");
}

#[tokio::test]
async fn a_fresh_server_falls_back_past_a_corrupt_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0.1);
    publish(&registry, 0.2);
    std::fs::write(dir.path().join("ctr/v0000000002/meta.json"), b"{").unwrap();
    let store = Arc::new(ModelStore::new(registry));
    let outcome = store.refresh();
    assert_eq!(outcome.swapped, vec![("ctr".to_owned(), 1)]);
    assert_eq!(outcome.rejected.len(), 1);
    let (_, json) = predict(&store, r#"{"instances":[{}]}"#).await;
    assert_eq!(json["model_version"], 1);
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0.0);
    let store = Arc::new(ModelStore::new(registry));
    store.refresh();
    for (body, status, reason) in [
        ("{bad", 400, "invalid request body"),
        (r#"{"instances":[]}"#, 400, "must not be empty"),
        (
            r#"{"instances":[{}],"extra":1}"#,
            400,
            "unknown field `extra`",
        ),
        (
            r#"{"instances":[{"I1":"x"}]}"#,
            400,
            "instance 0: field `I1`",
        ),
        (
            r#"{"instances":[{"C2":"123"}]}"#,
            400,
            "field `C2` must be empty or 8 hex digits",
        ),
        (r#"{"instances":[1]}"#, 400, "must be a JSON object"),
    ] {
        let (got, json) = predict(&store, body).await;
        assert_eq!(got, status, "{body}");
        assert!(
            json["error"].as_str().unwrap().contains(reason),
            "{body}: {json}"
        );
    }
    let filter = routes(
        store.clone(),
        ServeOptions {
            max_batch: 2,
            ..ServeOptions::default()
        },
    );
    let reply = warp::test::request()
        .method("POST")
        .path("/v1/models/ctr:predict")
        .body(r#"{"instances":[{},{},{}]}"#)
        .reply(&filter)
        .await;
    assert_eq!(reply.status(), 413);
    let reply = warp::test::request().path("/nowhere").reply(&filter).await;
    assert_eq!(reply.status(), 404);
    let reply = warp::test::request()
        .path("/v1/models")
        .reply(&filter)
        .await;
    assert_eq!(
        reply.body().as_ref(),
        br#"{"models":[{"name":"ctr","version":1}]}"#
    );
    let reply = warp::test::request().path("/readyz").reply(&filter).await;
    assert_eq!(reply.status(), 200);
    let reply = warp::test::request().path("/metrics").reply(&filter).await;
    let text = String::from_utf8_lossy(reply.body()).into_owned();
    assert!(
        text.contains("millrace_serving_client_errors_total 8"),
        "{text}"
    );
}
