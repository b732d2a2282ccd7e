//! The HTTP API and hot swap, through warp's test client.

mod common;

use millrace_models::fmap::{Parser, TransformCounts};
use millrace_models::{EventBatch, FeatureSpec, ModelArtifact, Registry};
use millrace_serving::{routes, ModelStore, Precision, ServeOptions};
use std::sync::Arc;

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };

fn publish(registry: &Registry, weight: f32) -> u64 {
    let mut artifact = ModelArtifact::logistic_regression(
        "ctr",
        SPEC,
        vec![weight; SPEC.dimension(&millrace_models::Schema::criteo())],
    );
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

/// A store serving `ctr` version 1: `weights` over `map`, fitted for `spec`, from a registry
/// in the returned folder.
fn serve_map_model(
    spec: millrace_models::FeatureMapSpec,
    map: millrace_models::FeatureMap,
    weights: Vec<f32>,
) -> (tempfile::TempDir, Arc<ModelStore>) {
    let mut artifact = ModelArtifact::logistic_regression("ctr", FeatureSpec::Map(spec), weights);
    artifact.feature_map = Some(Arc::new(map));
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    registry.publish(&mut artifact).unwrap();
    let store = Arc::new(ModelStore::new(registry));
    assert_eq!(store.refresh().swapped.len(), 1);
    (dir, store)
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
        (r#"{"instances":[]}"#, 400, "at least one instance"),
        (
            r#"{"instances":[{}],"extra":1}"#,
            400,
            "unknown field `extra`",
        ),
        (
            r#"{"instances":[{"I1":{"x":1}}]}"#,
            400,
            "instance 0: field `I1` cannot hold a JSON value of that type",
        ),
        (
            r#"{"instances":[{"I1":3},{"C99":"x"}]}"#,
            400,
            "instance 1: unknown field `C99`",
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
    // Malformed values are kept and counted, as a FeatureMap's are, and a training event is
    // scored as it is, its label passed over.
    let (got, json) = predict(
        &store,
        r#"{"instances":[{"I1":"x","C2":"123"},{"label":1,"I1":3}]}"#,
    )
    .await;
    assert_eq!(got, 200, "{json}");
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

    // A known path with the wrong method: 405 naming the method it takes.
    for (method, path, allow) in [
        ("GET", "/v1/models/ctr:predict", "POST"),
        ("POST", "/v1/models/ctr", "GET"),
    ] {
        let reply = warp::test::request()
            .method(method)
            .path(path)
            .body("{}")
            .reply(&filter)
            .await;
        assert_eq!(reply.status(), 405, "{method} {path}");
        assert_eq!(reply.headers()["allow"], allow, "{method} {path}");
    }
    // A header the predict route cannot read: 400 naming it, not a 405 from another route.
    let reply = warp::test::request()
        .method("POST")
        .path("/v1/models/ctr:predict")
        .header(
            "x-millrace-key",
            warp::http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .body(r#"{"instances":[{}]}"#)
        .reply(&filter)
        .await;
    assert_eq!(reply.status(), 400);
    let body = String::from_utf8_lossy(reply.body()).into_owned();
    assert!(body.contains("x-millrace-key"), "{body}");
}

/// Criteo-like lines whose label follows `C1`, so that a trained model's scores differ.
fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (label, c1) = if i % 3 == 0 {
                (1, "aaaa0001")
            } else {
                (0, "bbbb0002")
            };
            format!(
                "{label}\t{}{}\t{c1}{}",
                i % 50,
                "\t".repeat(12),
                "\t".repeat(25)
            )
        })
        .collect()
}

/// The Criteo default FeatureMap spec, the map fitted to `lines(300)`, and those lines parsed.
fn criteo_map_of_300_lines() -> (
    millrace_models::FeatureMapSpec,
    millrace_models::FeatureMap,
    EventBatch,
) {
    let spec = millrace_models::FeatureMapSpec::criteo_default();
    let layout = spec.compile(&millrace_models::Schema::criteo()).unwrap();
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(39);
    for line in lines(300) {
        parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
    }
    let map = millrace_models::FeatureMap::fit(layout, std::slice::from_ref(&batch));
    (spec, map, batch)
}

#[tokio::test]
async fn models_of_a_map_spec_score_instances_with_their_feature_map() {
    use millrace_models::{Ftrl, FtrlParams};

    let (spec, map, batch) = criteo_map_of_300_lines();
    let rows = map.transform(&batch, &mut Default::default());
    let mut ftrl = Ftrl::new(FtrlParams::default(), map.dimension());
    for _ in 0..5 {
        for i in 0..rows.len() {
            let (indices, values) = rows.row(i);
            ftrl.learn_weighted(indices, values, rows.labels[i]);
        }
    }
    let (_dir, store) = serve_map_model(spec, map, ftrl.weights());

    // The first three lines as instances: a click on `aaaa0001`, two without on `bbbb0002`,
    // and a value no vocabulary has.
    let body = r#"{"instances":[{"I1":0,"C1":"aaaa0001"},{"I1":1,"C1":"bbbb0002"},{"I1":2,"C1":"bbbb0002"},{"C1":"cccc0003"}]}"#;
    let (status, json) = predict(&store, body).await;
    assert_eq!(status, 200, "{json}");
    let got: Vec<f64> = json["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    for (i, p) in got.iter().take(3).enumerate() {
        let (indices, values) = rows.row(i);
        let want = f64::from(ftrl.predict_weighted(indices, values));
        assert!((p - want).abs() < 1e-6, "instance {i}: {p} vs {want}");
    }
    assert!(
        got[0] > got[1] + 0.2,
        "the learned signal is served: {got:?}"
    );
    let stats = store.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        stats.vocab_lookups.load(Relaxed),
        4,
        "one C1 lookup per instance"
    );
    assert_eq!(stats.vocab_oov.load(Relaxed), 1);

    let (status, json) = predict(&store, r#"{"instances":[{"nope":1}]}"#).await;
    assert_eq!(status, 400);
    assert!(
        json["error"].as_str().unwrap().contains("instance 0"),
        "{json}"
    );
}

/// A request of more instances than are scored inline goes to the blocking pool and answers as
/// the same instances do one request each: the same predictions, the same lookups counted, and
/// a bad instance among them still a 400 that names it.
#[tokio::test]
async fn a_large_request_is_scored_off_the_async_threads_alike() {
    use std::sync::atomic::Ordering::Relaxed;

    let (spec, map, _) = criteo_map_of_300_lines();
    let weights = (0..map.dimension())
        .map(|i| (i % 7) as f32 / 10.0 - 0.3)
        .collect();
    let (_dir, store) = serve_map_model(spec, map, weights);
    let instances: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({"I1": i % 9, "C1": format!("{:08x}", i % 5)}))
        .collect();
    let body = serde_json::json!({ "instances": instances }).to_string();
    let (status, json) = predict(&store, &body).await;
    assert_eq!(status, 200, "{json}");
    let large = json["predictions"].as_array().unwrap().clone();
    let lookups = store.stats().vocab_lookups.load(Relaxed);
    assert_eq!(
        lookups, 100,
        "one C1 lookup per instance, counted off the async threads"
    );
    for (i, instance) in instances.iter().enumerate() {
        let body = serde_json::json!({ "instances": [instance] }).to_string();
        let (status, json) = predict(&store, &body).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["predictions"][0], large[i], "instance {i}");
    }
    let mut bad = instances.clone();
    bad[40] = serde_json::json!({"nope": 1});
    let body = serde_json::json!({ "instances": bad }).to_string();
    let (status, json) = predict(&store, &body).await;
    assert_eq!(status, 400);
    assert!(
        json["error"].as_str().unwrap().contains("instance 40"),
        "{json}"
    );
}

/// A client that announces a body and never sends it gets a 408 once the time limit passes,
/// from a real server on a socket.
#[tokio::test]
async fn a_body_that_never_arrives_gets_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0.0);
    let store = Arc::new(ModelStore::new(registry));
    store.refresh();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions {
        request_timeout: std::time::Duration::from_millis(200),
        ..ServeOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(millrace_serving::serve(store, listener, options, async {
        let _ = stopped.await;
    }));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"POST /v1/models/ctr:predict HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n{\"inst",
        )
        .await
        .unwrap();
    let mut answer = vec![0; 1024];
    let n = client.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 200 ms"), "{answer}");
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap();
}

/// With q2.13 or int8 weights a model answers as its rounding does, in half or about a quarter
/// of the bytes.
#[tokio::test]
async fn rounded_weights_answer_as_the_rounded_model_in_less_memory() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let weights: Vec<f32> = (0..SPEC.dimension(&millrace_models::Schema::criteo()))
        .map(|i| ((i % 37) as f32 - 18.0) / 300.0)
        .collect();
    let mut artifact = ModelArtifact::logistic_regression("ctr", SPEC, weights);
    registry.publish(&mut artifact).unwrap();
    let store = |precision| {
        let store = Arc::new(ModelStore::new(registry.clone()).with_precision(precision));
        store.refresh();
        store
    };
    let bytes = |store: &Arc<ModelStore>| {
        store.entry("ctr").unwrap().versions[&1]
            .model
            .memory(None)
            .block_bytes
    };
    let float = store(Precision::F32);
    let body = r#"{"instances":[{"I1":3,"C1":"68fd1e64"},{"I2":11,"C3":"0000beef"},{}]}"#;
    let (_, exact) = predict(&float, body).await;
    let (q213, clipped) = artifact.to_q213(1);
    assert_eq!(clipped, 0);
    let numbers = SPEC.dimension(&millrace_models::Schema::criteo());
    for (precision, want, want_bytes) in [
        (Precision::Q213, q213, numbers * 2),
        (
            Precision::Int8,
            artifact.to_int8(),
            numbers + numbers.div_ceil(millrace_models::int8::GROUP) * 4,
        ),
    ] {
        let rounded_store = store(precision);
        let (status, rounded) = predict(&rounded_store, body).await;
        assert_eq!(status, 200, "{rounded}");
        for (i, instance) in [
            serde_json::json!({"I1": 3, "C1": "68fd1e64"}),
            serde_json::json!({"I2": 11, "C3": "0000beef"}),
            serde_json::json!({}),
        ]
        .iter()
        .enumerate()
        {
            let p = rounded["predictions"][i].as_f64().unwrap();
            assert_eq!(
                p as f32,
                score(&want, instance),
                "{precision:?} instance {i}"
            );
            assert_ne!(rounded["predictions"][i], exact["predictions"][i]);
        }
        assert_eq!(bytes(&rounded_store), want_bytes, "{precision:?}");
    }
    assert_eq!(bytes(&float), numbers * 4);
}

/// A model of a declared schema is served by its fields' names: `/openapi.json` lists them
/// with their types, a known field of the wrong JSON type and an unknown field are 400s that
/// name the field.
#[tokio::test]
async fn a_declared_schema_is_served_and_described_by_its_fields() {
    let (spec, map) = common::declared_schema_map(&["1,a,3,x|y", "0,b,5,z", "0,a,,"]);
    let weights = vec![0.25; map.dimension()];
    let (_dir, store) = serve_map_model(spec, map, weights);

    let (status, json) = predict(
        &store,
        r#"{"instances":[{"site":"a","price":"4","tags":["x","y"]},{"tags":"z|x"},{}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["predictions"].as_array().unwrap().len(), 3);
    let (status, json) = predict(&store, r#"{"instances":[{"site":"a"},{"site":["a"]}]}"#).await;
    assert_eq!(status, 400);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("instance 1: field `site` cannot hold"),
        "{json}"
    );
    let (status, json) = predict(&store, r#"{"instances":[{"I1":3}]}"#).await;
    assert_eq!(status, 400);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `I1`"),
        "{json}"
    );

    let reply = warp::test::request()
        .path("/openapi.json")
        .reply(&routes(store.clone(), ServeOptions::default()))
        .await;
    let doc: serde_json::Value = serde_json::from_slice(reply.body()).unwrap();
    let instance = &doc["components"]["schemas"]["Instance"];
    let fields: Vec<&String> = instance["properties"].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["price", "site", "tags"]);
    assert_eq!(instance["properties"]["tags"]["anyOf"][0]["type"], "array");
    assert_eq!(
        instance["properties"]["price"]["anyOf"][0]["type"],
        "number"
    );
    assert_eq!(
        doc["paths"],
        serde_json::from_str::<serde_json::Value>(millrace_serving::OPENAPI).unwrap()["paths"]
    );
}

/// The probability `model` gives a JSON instance, through its own FeatureMap.
fn score(model: &ModelArtifact, instance: &serde_json::Value) -> f32 {
    let map = model.feature_map.as_ref().expect("a model's FeatureMap");
    let mut batch = EventBatch::new(map.layout.schema.fields.len());
    Parser::new(&map.layout)
        .parse_json(instance, 0, &mut batch)
        .unwrap();
    let rows = map.transform(&batch, &mut TransformCounts::default());
    let (indices, values) = rows.row(0);
    model.predict_row(indices, values)
}
