//! The ecosystem's request forms against the in-process scorer: TF Serving's `:predict` rows
//! and columns, by version and by label, its status and metadata; and the Open Inference
//! Protocol (v2), in Rust and through Triton's stock Python client (`tritonclient`, from the
//! test venv that `make test` installs).

mod common;

use millrace_models::fmap::{FeatureMapSpec, Parser, TransformCounts};
use millrace_models::{EventBatch, FeatureMap, FeatureSpec, ModelArtifact, Registry};
use millrace_serving::{routes, Arm, ModelStore, ServeOptions, TrafficChange};
use serde_json::{json, Value};
use std::sync::Arc;

/// A FeatureMap over a category, a number and tokens, fitted on a few lines.
fn fitted_map() -> (FeatureMapSpec, FeatureMap) {
    let lines = ["1,a,3,x|y", "0,b,5,z", "0,a,,", "1,c,9,y|z", "0,b,1,x"];
    common::declared_schema_map(&lines)
}

/// Publishes version `seed` of `ctr`: weights that differ by slot and by version.
fn publish(
    registry: &Registry,
    spec: &FeatureMapSpec,
    map: &FeatureMap,
    seed: u64,
) -> ModelArtifact {
    let weights = (0..map.dimension() as u64)
        .map(|i| ((i * 7 + seed * 3) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let mut artifact =
        ModelArtifact::logistic_regression("ctr", FeatureSpec::Map(spec.clone()), weights);
    artifact.feature_map = Some(Arc::new(map.clone()));
    assert_eq!(registry.publish(&mut artifact).unwrap(), seed);
    artifact
}

/// A registry with versions 1 and 2 of `ctr`, served; the artifacts by version.
fn two_versions() -> (tempfile::TempDir, Arc<ModelStore>, Vec<ModelArtifact>) {
    let (spec, map) = fitted_map();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let artifacts = vec![
        publish(&registry, &spec, &map, 1),
        publish(&registry, &spec, &map, 2),
    ];
    let store = Arc::new(ModelStore::new(registry));
    store.refresh();
    (dir, store, artifacts)
}

/// The in-process scorer: the probability `model` gives each instance, through its own map.
fn scores(model: &ModelArtifact, instances: &[Value]) -> Vec<f32> {
    let map = model.feature_map.as_ref().unwrap();
    let mut parser = Parser::new(&map.layout);
    let mut batch = EventBatch::new(map.layout.schema.fields.len());
    for instance in instances {
        parser.parse_json(instance, 0, &mut batch).unwrap();
    }
    let rows = map.transform(&batch, &mut TransformCounts::default());
    (0..rows.len())
        .map(|i| {
            let (indices, values) = rows.row(i);
            model.predict_row(indices, values)
        })
        .collect()
}

/// The instances every test sends, as rows.
fn instances() -> Vec<Value> {
    vec![
        json!({"site": "a", "price": 4.0, "tags": "x|y"}),
        json!({"site": "b", "price": 1.5, "tags": "z"}),
        json!({"site": "c", "price": 9.0, "tags": "y|z"}),
        json!({"site": "new", "price": 0.0, "tags": "x"}),
    ]
}

/// The same instances as columns.
fn columns() -> Value {
    let rows = instances();
    let column = |field: &str| -> Value { rows.iter().map(|r| r[field].clone()).collect() };
    json!({"site": column("site"), "price": column("price"), "tags": column("tags")})
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect()
}

async fn call(store: &Arc<ModelStore>, method: &str, path: &str, body: Value) -> (u16, Value) {
    let reply = warp::test::request()
        .method(method)
        .path(path)
        .body(body.to_string())
        .reply(&routes(store.clone(), ServeOptions::default()))
        .await;
    let json = serde_json::from_slice(reply.body()).unwrap_or(Value::Null);
    (reply.status().as_u16(), json)
}

/// Sends a tenth of `ctr`'s traffic to version 1, which loads it.
fn split(store: &ModelStore) {
    let arm = |version, weight| Arm {
        model: None,
        version,
        weight,
    };
    let split = vec![arm(1, 10), arm(2, 90)];
    let change = TrafficChange::Split {
        split,
        shadow: None,
    };
    store.change_traffic("ctr", change).unwrap();
}

/// The predictions (or outputs) of a `:predict` at `path` and the version that made them; a
/// status other than 200 fails with the answer.
async fn predicted(store: &Arc<ModelStore>, path: &str, body: &Value) -> (Vec<f32>, u64) {
    let (status, answer) = call(store, "POST", path, body.clone()).await;
    assert_eq!(status, 200, "{path}: {answer}");
    let predictions = answer.get("predictions").unwrap_or(&answer["outputs"]);
    (
        floats(predictions),
        answer["model_version"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn tf_serving_forms_score_as_the_scorer_does() {
    let (_dir, store, artifacts) = two_versions();
    let want = |version: usize| {
        (
            scores(&artifacts[version - 1], &instances()),
            version as u64,
        )
    };
    let rows = json!({"signature_name": "serving_default", "instances": instances()});
    let columnar = json!({"signature_name": "serving_default", "inputs": columns()});
    let (predict, stable, canary, first) = (
        "/v1/models/ctr:predict",
        "/v1/models/ctr/labels/stable:predict",
        "/v1/models/ctr/labels/canary:predict",
        "/v1/models/ctr/versions/1:predict",
    );
    assert_eq!(predicted(&store, predict, &rows).await, want(2));
    assert_eq!(
        predicted(&store, predict, &columnar).await,
        want(2),
        "columns score as rows"
    );
    let (_, answer) = call(&store, "POST", predict, columnar.clone()).await;
    assert!(
        answer.get("outputs").is_some(),
        "columns answer `outputs`: {answer}"
    );
    assert_eq!(predicted(&store, stable, &rows).await, want(2));
    let (status, answer) = call(&store, "POST", canary, rows.clone()).await;
    assert_eq!(status, 404, "no split, no canary: {answer}");
    // Only the newest version and those the traffic names are in memory, as TF Serving's
    // default version policy serves only the latest.
    let (status, answer) = call(&store, "POST", first, rows.clone()).await;
    assert_eq!(status, 404);
    assert!(
        answer["error"].as_str().unwrap().contains("(loaded: 2)"),
        "{answer}"
    );

    // A split of 10% to version 1 loads it: the canary is version 1, stable stays the primary.
    split(&store);
    assert_eq!(predicted(&store, first, &rows).await, want(1));
    assert_eq!(predicted(&store, first, &columnar).await, want(1));
    assert_eq!(predicted(&store, canary, &rows).await, want(1));
    assert_eq!(predicted(&store, stable, &rows).await, want(2));
    let (status, answer) = call(&store, "POST", "/v1/models/ctr/versions/9:predict", rows).await;
    assert_eq!(status, 404);
    assert!(
        answer["error"].as_str().unwrap().contains("(loaded: 1, 2)"),
        "{answer}"
    );

    let (status, answer) = call(&store, "GET", "/v1/models/ctr", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(answer["model_version_status"][0]["version"], "2");
    assert_eq!(answer["model_version_status"][1]["state"], "AVAILABLE");
    assert_eq!(answer["millrace"]["traffic"]["split"][0]["version"], 1);
    let (_, answer) = call(&store, "GET", "/v1/models/ctr/versions/1", Value::Null).await;
    assert_eq!(answer["model_version_status"].as_array().unwrap().len(), 1);
    assert_eq!(answer["model_version_status"][0]["version"], "1");
    let (status, answer) = call(&store, "GET", "/v1/models/ctr/metadata", Value::Null).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_spec"]["version"], "2");
    let signature = &answer["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(signature["inputs"]["price"]["dtype"], "DT_FLOAT");
    assert_eq!(signature["inputs"]["site"]["dtype"], "DT_STRING");
    assert_eq!(signature["outputs"]["probability"]["dtype"], "DT_FLOAT");
    let (status, _) = call(&store, "GET", first, Value::Null).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn v2_infer_scores_as_the_scorer_does_and_refuses_what_it_cannot_take() {
    let (_dir, store, artifacts) = two_versions();
    split(&store);
    let want = |version: usize| scores(&artifacts[version - 1], &instances());
    let columns = columns();
    let n = instances().len();
    let tensor = |name: &str, datatype: &str| json!({"name": name, "datatype": datatype, "shape": [n, 1], "data": columns[name]});
    let body = json!({"id": "7", "inputs": [
        tensor("site", "BYTES"), tensor("price", "FP64"), tensor("tags", "BYTES")
    ]});
    let (status, answer) = call(&store, "POST", "/v2/models/ctr/infer", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "7");
    assert_eq!(answer["model_name"], "ctr");
    // The split answers with either version, each with its own weights.
    let version: usize = answer["model_version"].as_str().unwrap().parse().unwrap();
    let output = &answer["outputs"][0];
    assert_eq!(
        (&output["name"], &output["datatype"]),
        (&json!("probability"), &json!("FP32"))
    );
    assert_eq!(output["shape"], json!([n]));
    assert_eq!(floats(&output["data"]), want(version));
    let (_, answer) = call(&store, "POST", "/v2/models/ctr/versions/1/infer", body).await;
    assert_eq!(floats(&answer["outputs"][0]["data"]), want(1));

    for (inputs, why) in [
        (
            json!([{"name": "site", "datatype": "FP32", "shape": [1], "data": [1.5]}]),
            "input `site` is FP32",
        ),
        (
            json!([{"name": "I1", "datatype": "INT64", "shape": [1], "data": [3]}]),
            "`I1` is not a field",
        ),
        (
            json!([tensor("site", "BYTES"), {"name": "price", "datatype": "FP32", "shape": [1], "data": [1]}]),
            "every input needs one value per instance",
        ),
    ] {
        let (status, answer) = call(
            &store,
            "POST",
            "/v2/models/ctr/infer",
            json!({"inputs": inputs}),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(why),
            "{answer} lacks {why}"
        );
    }
    let (status, answer) = call(&store, "GET", "/v2/models/ctr", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(answer["versions"], json!(["2", "1"]));
    assert_eq!(
        answer["inputs"],
        json!([
            {"name": "site", "datatype": "BYTES", "shape": [-1]},
            {"name": "price", "datatype": "FP32", "shape": [-1]},
            {"name": "tags", "datatype": "BYTES", "shape": [-1]},
        ])
    );
    for (path, status) in [
        ("/v2/health/live", 200),
        ("/v2/health/ready", 200),
        ("/v2/models/ctr/ready", 200),
        ("/v2/models/ctr/versions/1/ready", 200),
        ("/v2/models/ctr/versions/5/ready", 404),
        ("/v2/models/other/ready", 404),
    ] {
        assert_eq!(
            call(&store, "GET", path, Value::Null).await.0,
            status,
            "{path}"
        );
    }
    assert_eq!(
        call(&store, "GET", "/v2/models/ctr/infer", Value::Null)
            .await
            .0,
        405
    );
}

#[test]
fn a_stock_oip_client_gets_the_scorers_probabilities() {
    let python = std::env::var("MILLRACE_INTEROP_PYTHON")
        .expect("MILLRACE_INTEROP_PYTHON is unset: run the tests with `make test`");
    let (dir, store, artifacts) = two_versions();
    split(&store);
    let server = common::Server::serve(store, ServeOptions::default(), dir);
    let columns = columns();
    let tensor = |name: &str, datatype: &str| json!({"name": name, "datatype": datatype, "values": columns[name]});
    let spec = json!({"version": "1", "inputs": [
        tensor("site", "BYTES"), tensor("price", "FP32"), tensor("tags", "BYTES")
    ]});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), spec.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oip_client.py");
    let output = std::process::Command::new(&python)
        .args([script, &server.addr.to_string(), "ctr"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    let want = |version: usize| scores(&artifacts[version - 1], &instances());
    // Without a version, the split answers with either, each with its own weights.
    for way in ["json", "binary", "versioned"] {
        let answered = &got[way];
        let version: usize = answered[1].as_str().unwrap().parse().unwrap();
        assert_eq!(floats(&answered[0]), want(version), "{way}: {got}");
        assert_eq!(answered[2], "ctr", "{way}");
    }
    assert_eq!(got["versioned"][1], "1");
    assert_eq!(got["metadata"]["inputs"][1]["datatype"], "FP32", "{got}");
    assert_eq!(got["metadata"]["outputs"][0]["name"], "probability");
    assert_eq!(got["version_metadata"]["versions"], json!(["2", "1"]));
    assert_eq!(got["server"]["name"], "millrace");
    let reason = |key: &str| got[key].as_str().unwrap_or_default().to_owned();
    assert!(
        reason("unknown_input").contains("`nope` is not a field"),
        "{got}"
    );
    assert!(
        reason("wrong_datatype").contains("input `price` is BYTES"),
        "{got}"
    );

    // The server's metrics, after those requests, pass the Prometheus client's parsers, and
    // the operations guide lists every family.
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/metrics_check.py");
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    let url = format!("http://{}/metrics", server.addr);
    let required = [
        "millrace_build",
        "millrace_serving_predict_requests",
        "millrace_serving_request_duration_seconds",
        "millrace_serving_traffic_share_ratio",
    ];
    let output = std::process::Command::new(&python)
        .args([check, &url, "--documented", guide])
        .args(required)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
