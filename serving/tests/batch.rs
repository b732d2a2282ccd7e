//! The dynamic batcher: concurrent requests are scored in one batch, each request gets exactly
//! the answer it gets unbatched, and a bad request in a batch fails alone.

use futures_util::future::join_all;
use millrace_models::{FeatureSpec, ModelArtifact, Registry};
use millrace_serving::{routes, Arm, BatchOptions, ModelStore, ServeOptions, TrafficChange};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use warp::Filter;

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };

/// Publishes a version whose weights differ from slot to slot and from version to version.
fn publish(registry: &Registry, shift: usize) -> u64 {
    let weights = (0..SPEC.dimension(&millrace_models::Schema::criteo()))
        .map(|i| (((i + shift) % 37) as f32 - 18.0) / 300.0)
        .collect();
    let mut artifact = ModelArtifact::logistic_regression("ctr", SPEC, weights);
    registry.publish(&mut artifact).unwrap()
}

fn instance(n: usize) -> Value {
    serde_json::json!({"I1": n % 7, "I2": n, "C1": format!("{:08x}", n * 7919), "C2": "68fd1e64"})
}

fn body(instances: &[Value]) -> String {
    serde_json::json!({ "instances": instances }).to_string()
}

async fn call(
    filter: &(impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
    path: &str,
    key: &str,
    body: String,
) -> (u16, Value) {
    let reply = warp::test::request()
        .method(if body.is_empty() { "GET" } else { "POST" })
        .path(path)
        .header("x-millrace-key", key)
        .body(body)
        .reply(filter)
        .await;
    let json = serde_json::from_slice(reply.body()).unwrap_or(Value::Null);
    (reply.status().as_u16(), json)
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

async fn metrics(
    filter: &(impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible>
          + Clone
          + 'static),
) -> String {
    let reply = warp::test::request().path("/metrics").reply(filter).await;
    String::from_utf8(reply.body().to_vec()).unwrap()
}

fn batching(max_instances: usize, timeout: Duration) -> ServeOptions {
    ServeOptions {
        batching: Some(BatchOptions {
            max_instances,
            timeout,
            threads: 1,
            max_queue: millrace_serving::DEFAULT_MAX_QUEUE,
        }),
        ..ServeOptions::default()
    }
}

#[tokio::test]
async fn concurrent_requests_share_a_batch_and_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0);
    let store = Arc::new(ModelStore::new(registry));
    store.refresh();
    let unbatched = routes(store.clone(), ServeOptions::default());
    // A long timeout: the batch closes when its 12 instances are in, not on time.
    let batched = routes(store.clone(), batching(12, Duration::from_secs(30)));

    // Eight requests of one or two instances each, 12 instances in all.
    let requests: Vec<Vec<Value>> = (0..8)
        .map(|r| (0..1 + r % 2).map(|k| instance(10 * r + k)).collect())
        .collect();
    let path = "/v1/models/ctr:predict";
    let answers = join_all(
        requests
            .iter()
            .map(|instances| call(&batched, path, "u", body(instances))),
    )
    .await;
    for (instances, (status, answer)) in requests.iter().zip(&answers) {
        assert_eq!(*status, 200, "{answer}");
        let (_, want) = call(&unbatched, path, "u", body(instances)).await;
        assert_eq!(answer, &want, "a request's answer is its own, as unbatched");
    }
    let text = metrics(&batched).await;
    assert_eq!(counter(&text, "millrace_serving_batches_total"), 1);
    assert_eq!(counter(&text, "millrace_serving_batch_requests_total"), 8);
    assert_eq!(counter(&text, "millrace_serving_batch_instances_total"), 12);
    assert_eq!(counter(&text, "millrace_serving_batch_splits_total"), 0);

    // A lone request does not wait for company past the timeout.
    let lone = routes(store, batching(64, Duration::from_millis(5)));
    let (status, answer) = call(&lone, path, "u", body(&requests[1])).await;
    assert_eq!(status, 200);
    assert_eq!(answer, answers[1].1);
    assert_eq!(
        counter(&metrics(&lone).await, "millrace_serving_batches_total"),
        2,
        "the counters are the store's"
    );
}

#[tokio::test]
async fn a_bad_request_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0);
    let store = Arc::new(ModelStore::new(registry).with_row_cache(0));
    store.refresh();
    let unbatched = routes(store.clone(), ServeOptions::default());
    let batched = routes(store.clone(), batching(4, Duration::from_secs(30)));
    let path = "/v1/models/ctr:predict";
    let bodies = [
        body(&[instance(1)]),
        body(&[instance(2), serde_json::json!({"I1": ["three"]})]),
        body(&[instance(3)]),
    ];
    let answers = join_all(bodies.iter().map(|b| call(&batched, path, "u", b.clone()))).await;
    assert_eq!(answers[1].0, 400);
    let error = answers[1].1["error"].as_str().unwrap();
    assert!(error.starts_with("instance 1: "), "{error}");
    for k in [0, 2] {
        assert_eq!(
            answers[k],
            call(&unbatched, path, "u", bodies[k].clone()).await
        );
    }
    let text = metrics(&batched).await;
    assert_eq!(counter(&text, "millrace_serving_batches_total"), 1);
    assert_eq!(counter(&text, "millrace_serving_batch_splits_total"), 1);
    assert_eq!(counter(&text, "millrace_serving_client_errors_total"), 1);
}

#[tokio::test]
async fn a_batch_split_between_versions_answers_each_from_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0);
    publish(&registry, 5);
    let store = Arc::new(ModelStore::new(registry));
    store.refresh();
    let split = vec![
        Arm {
            model: None,
            version: 1,
            weight: 1,
        },
        Arm {
            model: None,
            version: 2,
            weight: 1,
        },
    ];
    store
        .change_traffic(
            "ctr",
            TrafficChange::Split {
                split,
                shadow: None,
            },
        )
        .unwrap();
    let unbatched = routes(store.clone(), ServeOptions::default());
    let batched = routes(store.clone(), batching(16, Duration::from_secs(30)));
    let path = "/v1/models/ctr:predict";
    let keys: Vec<String> = (0..16).map(|k| format!("user-{k}")).collect();
    let answers = join_all(
        keys.iter()
            .map(|key| call(&batched, path, key, body(&[instance(4)]))),
    )
    .await;
    let mut versions = std::collections::BTreeSet::new();
    for (key, (status, answer)) in keys.iter().zip(&answers) {
        assert_eq!(*status, 200, "{answer}");
        versions.insert(answer["model_version"].as_u64().unwrap());
        let (_, want) = call(&unbatched, path, key, body(&[instance(4)])).await;
        assert_eq!(answer, &want, "{key} is answered by its arm");
    }
    assert_eq!(versions.len(), 2, "both arms in the batch: {versions:?}");
    assert_eq!(
        counter(&metrics(&batched).await, "millrace_serving_batches_total"),
        1
    );
}
