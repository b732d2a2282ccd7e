//! Traffic among versions (A/B split, shadow, pin, promote, rollback), the admin API's token,
//! and hot swaps under concurrent requests.

use millrace_models::{FeatureSpec, ModelArtifact, Registry};
use millrace_serving::{routes, ModelStore, ServeOptions, KEY_HEADER, OPENAPI};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };
const TOKEN: &str = "s3cret-token";

/// Version `v` of the model has every weight `v / 100`, so an empty instance (40 features of
/// which the 39 empty fields and the bias all land on some slot) scores `σ(40·v/100)`: a
/// prediction names the version that made it.
fn publish(registry: &Registry) -> u64 {
    let next = registry.latest("ctr").unwrap().unwrap_or(0) + 1;
    let weight = next as f32 / 100.0;
    let mut artifact = ModelArtifact::logistic_regression(
        "ctr",
        SPEC,
        vec![weight; SPEC.dimension(&millrace_models::Schema::criteo())],
    );
    registry.publish(&mut artifact).unwrap()
}

fn score_of(version: u64) -> f64 {
    let weight = f64::from(version as f32 / 100.0);
    1.0 / (1.0 + (-40.0 * weight).exp())
}

struct Server {
    _dir: tempfile::TempDir,
    registry: Registry,
    store: Arc<ModelStore>,
    options: ServeOptions,
}

impl Server {
    fn new(versions: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        for _ in 0..versions {
            publish(&registry);
        }
        let store = Arc::new(ModelStore::new(registry.clone()));
        store.refresh();
        Server {
            _dir: dir,
            registry,
            store,
            options: ServeOptions {
                admin_token: Some(TOKEN.to_owned()),
                // These tests count every shadow scoring: none may be skipped for load.
                max_shadow_in_flight: usize::MAX,
                ..ServeOptions::default()
            },
        }
    }

    async fn call(&self, request: warp::test::RequestBuilder) -> (u16, Value) {
        let reply = request
            .reply(&routes(self.store.clone(), self.options.clone()))
            .await;
        let json = serde_json::from_slice(reply.body()).unwrap_or(Value::Null);
        (reply.status().as_u16(), json)
    }

    /// The version that answered, checked against the prediction.
    async fn predict(&self, key: Option<&str>) -> u64 {
        let json = self.predict_json(key).await;
        let version = json["model_version"].as_u64().unwrap();
        let p = json["predictions"][0].as_f64().unwrap();
        assert!((p - score_of(version)).abs() < 1e-6, "{json}");
        version
    }

    /// A predict of one empty instance with `key`, its answer whole.
    async fn predict_json(&self, key: Option<&str>) -> Value {
        let mut request = warp::test::request()
            .method("POST")
            .path("/v1/models/ctr:predict")
            .body(r#"{"instances":[{}]}"#);
        if let Some(key) = key {
            request = request.header(KEY_HEADER, key);
        }
        let (status, json) = self.call(request).await;
        assert_eq!(status, 200, "{json}");
        json
    }

    async fn metrics(&self) -> String {
        let reply = warp::test::request()
            .path("/metrics")
            .reply(&routes(self.store.clone(), self.options.clone()))
            .await;
        String::from_utf8(reply.body().to_vec()).unwrap()
    }

    async fn admin(&self, method: &str, action: &str, body: Value) -> (u16, Value) {
        let request = warp::test::request()
            .method(method)
            .path(&format!("/v1/admin/models/ctr/{action}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body.to_string());
        self.call(request).await
    }

    async fn status(&self) -> Value {
        let (status, json) = self
            .call(warp::test::request().path("/v1/models/ctr"))
            .await;
        assert_eq!(status, 200);
        // TF Serving's shape: every own version in memory is available; millrace's own status
        // rides under `millrace`.
        let available: Vec<u64> = json["model_version_status"]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|v| assert_eq!(v["state"], "AVAILABLE", "{json}"))
            .map(|v| v["version"].as_str().unwrap().parse().unwrap())
            .collect();
        let own = &json["millrace"];
        let loaded: Vec<u64> = own["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.get("model").is_none())
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        assert_eq!(available, loaded, "{json}");
        own.clone()
    }
}

/// Waits (at most five seconds) for a version's shadow scorings, which run after the answers,
/// to reach `count`, and checks that they did.
async fn shadow_predictions(stats: &millrace_serving::VersionStats, count: u64) {
    for _ in 0..1000 {
        if stats.shadow_predictions.load(Relaxed) == count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(stats.shadow_predictions.load(Relaxed), count);
}

#[tokio::test]
async fn a_split_is_sticky_per_key_and_the_shadow_is_compared() {
    let server = Server::new(3);
    assert_eq!(server.predict(None).await, 3, "the newest answers");
    let (status, json) = server
        .admin(
            "PUT",
            "traffic",
            json!({"split": [{"version": 1, "weight": 1}, {"version": 3, "weight": 3}], "shadow": 2}),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["traffic"]["shadow"], 2);
    let shares: Vec<(u64, f64)> = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["share_percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shares, vec![(3, 75.0), (2, 0.0), (1, 25.0)]);

    let mut answered = [0u64; 4];
    for user in 0..400 {
        let key = format!("user-{user}");
        let first = server.predict(Some(&key)).await;
        assert_eq!(server.predict(Some(&key)).await, first, "sticky: {key}");
        answered[first as usize] += 2;
    }
    assert_eq!(answered[2], 0, "the shadow never answers");
    let users_on_1 = answered[1] / 2;
    assert!(
        (50..150).contains(&users_on_1) && answered[1] + answered[3] == 800,
        "the users split about 1:3 between the arms: {answered:?}"
    );

    // The per-version counters agree with what was answered, and the shadow scored every
    // instance (in the background: wait for it).
    let entry = server.store.entry("ctr").unwrap();
    for version in [1, 3] {
        // Version 3 also answered the first request, before the split.
        let before = u64::from(version == 3);
        let stats = &entry.versions[&version].stats;
        assert_eq!(
            stats.requests.load(Relaxed),
            answered[version as usize] + before
        );
        assert_eq!(
            stats.predictions.load(Relaxed),
            answered[version as usize] + before
        );
    }
    let shadow = &entry.versions[&2].stats;
    shadow_predictions(shadow, 800).await;
    let expected: f64 = [1u64, 3]
        .iter()
        .map(|&v| answered[v as usize] as f64 * (score_of(2) - score_of(v)).abs())
        .sum();
    let diff = shadow.shadow_abs_diff_micros.load(Relaxed) as f64 / 1e6;
    assert!(
        (diff - expected).abs() < 1e-3 * 800.0,
        "{diff} vs {expected}"
    );
    let reply = warp::test::request()
        .path("/metrics")
        .reply(&routes(server.store.clone(), server.options.clone()))
        .await;
    let metrics = String::from_utf8(reply.body().to_vec()).unwrap();
    assert!(
        metrics.contains(&format!(
            "millrace_serving_arm_requests_total{{model=\"ctr\",version=\"3\"}} {}",
            answered[3] + 1
        )),
        "{metrics}"
    );
    assert!(metrics
        .contains("millrace_serving_shadow_predictions_total{model=\"ctr\",version=\"2\"} 800"));
    assert!(
        metrics.contains("millrace_serving_traffic_share_ratio{model=\"ctr\",version=\"1\"} 0.25")
    );

    // Clearing the split sends everything to the primary again.
    let (status, _) = server.admin("PUT", "traffic", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(server.predict(Some("user-1")).await, 3);
}

/// A factorization machine named `ctr-fm`, another kind of model over the same fields, whose
/// every weight is `0.05` and every factor 0: it scores an empty instance `σ(2)`.
fn publish_fm(registry: &Registry) -> u64 {
    let slots = SPEC.dimension(&millrace_models::Schema::criteo());
    let mut artifact = ModelArtifact::factorization_machine(
        "ctr-fm",
        SPEC,
        vec![0.05; slots],
        2,
        vec![0.0; slots * 2],
    );
    registry.publish(&mut artifact).unwrap()
}

const FM_SCORE: f64 = 0.880_797_077_977_882_3;

/// A version of another model, of another kind, is shadowed against the served one, then given
/// a share of the traffic by a split, then promoted; answers name the model that gave them,
/// and the counters are the guest version's own, reported once.
#[tokio::test]
async fn another_models_version_is_shadowed_split_and_promoted() {
    let server = Server::new(2);
    publish_fm(&server.registry);
    server.store.refresh();
    let guest = json!({"model": "ctr-fm", "version": 1});
    let (status, json) = server
        .admin("PUT", "traffic", json!({"shadow": guest}))
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["traffic"]["shadow"], guest);
    let listed = json["versions"].as_array().unwrap();
    let fm = listed.iter().find(|v| v["model"] == "ctr-fm").unwrap();
    assert_eq!(
        (fm["version"].as_u64(), fm["shadow"].as_bool()),
        (Some(1), Some(true))
    );
    for _ in 0..10 {
        assert_eq!(server.predict(None).await, 2, "the shadow never answers");
    }
    let fm_entry = server.store.entry("ctr-fm").unwrap();
    let shadow = &fm_entry.versions[&1].stats;
    shadow_predictions(shadow, 10).await;
    let diff = shadow.shadow_abs_diff_micros.load(Relaxed) as f64 / 1e6;
    assert!(
        (diff - 10.0 * (FM_SCORE - score_of(2)).abs()).abs() < 1e-4,
        "{diff}"
    );
    let metrics = server.metrics().await;
    let line = "millrace_serving_shadow_predictions_total{model=\"ctr-fm\",version=\"1\"} 10";
    assert_eq!(metrics.matches(line).count(), 1, "{metrics}");

    // A split between the served model's version and the guest: answers name their model.
    let (status, json) = server
        .admin(
            "PUT",
            "traffic",
            json!({"split": [{"version": 2, "weight": 1}, {"model": "ctr-fm", "version": 1, "weight": 1}]}),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert!(server
        .metrics()
        .await
        .contains("millrace_serving_traffic_share_ratio{model=\"ctr\",version=\"ctr-fm/1\"} 0.5"));
    let mut by_fm = 0;
    for user in 0..200 {
        let json = server.predict_json(Some(&format!("user-{user}"))).await;
        let p = json["predictions"][0].as_f64().unwrap();
        if json["model"] == "ctr-fm" {
            assert_eq!(json["model_version"], 1);
            assert!((p - FM_SCORE).abs() < 1e-6, "{json}");
            by_fm += 1;
        } else {
            assert_eq!(
                (json.get("model"), json["model_version"].as_u64()),
                (None, Some(2))
            );
            assert!((p - score_of(2)).abs() < 1e-6, "{json}");
        }
    }
    assert!((60..140).contains(&by_fm), "about half: {by_fm}");

    // Promoted, the guest answers everything; promoting an own version brings it back.
    let (status, json) = server.admin("POST", "promote", guest.clone()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        json["traffic"]["split"],
        json!([{"model": "ctr-fm", "version": 1, "weight": 1}])
    );
    for user in 0..20 {
        let json = server.predict_json(Some(&format!("user-{user}"))).await;
        assert_eq!(json["model"], "ctr-fm", "{json}");
    }
    // A rollback from the promoted guest goes back to the served model's primary.
    let (status, json) = server.admin("POST", "rollback", json!({})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        json["traffic"],
        json!({"pinned": null, "split": [], "shadow": null})
    );
    assert_eq!(server.predict(Some("user-1")).await, 2);
    let (status, json) = server.admin("POST", "promote", guest.clone()).await;
    assert_eq!(status, 200, "{json}");
    let (status, json) = server.admin("POST", "promote", json!({"version": 2})).await;
    assert_eq!(status, 200, "{json}");
    assert!(server.store.entry("ctr").unwrap().guests.is_empty());
    assert_eq!(server.predict(Some("user-1")).await, 2);
}

/// A version in memory is there once: a guest of an older version, then its own model pinned
/// to it, share one copy (and its counters).
#[tokio::test]
async fn a_version_is_in_memory_once() {
    let server = Server::new(1);
    publish_fm(&server.registry);
    publish_fm(&server.registry);
    server.store.refresh();
    let old = json!({"model": "ctr-fm", "version": 1});
    let (status, json) = server.admin("PUT", "traffic", json!({"shadow": old})).await;
    assert_eq!(status, 200, "{json}");
    let pin = warp::test::request()
        .method("POST")
        .path("/v1/admin/models/ctr-fm/pin")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(r#"{"version": 1}"#);
    let (status, json) = server.call(pin).await;
    assert_eq!(status, 200, "{json}");
    let guest = server
        .store
        .entry("ctr")
        .unwrap()
        .guests
        .values()
        .next()
        .cloned()
        .unwrap();
    let home = server.store.entry("ctr-fm").unwrap().versions[&1].clone();
    assert!(std::sync::Arc::ptr_eq(&guest, &home));
    let metrics = server.metrics().await;
    let line = "millrace_serving_model_bytes{model=\"ctr-fm\",version=\"1\"}";
    assert_eq!(metrics.matches(line).count(), 1, "{metrics}");
}

/// A guest that is not served, or has no such version, is refused whole, as is a malformed
/// shadow or a pin of another model's version.
/// Publishes a `ctr` version over a fitted FeatureMap of another schema than Criteo's (the
/// csv test schema of the events crate): it reads other fields than the hashed versions.
fn publish_map_version(registry: &Registry) -> u64 {
    use millrace_models::fmap::{FeatureMapSpec, Parser};
    use millrace_models::schema::synth::SchemaGenerator;
    use millrace_models::schema::SchemaSpec;
    use millrace_models::{EventBatch, FeatureMap};
    let text = include_str!("../../models/events/src/schema/testdata/csv.toml");
    let schema = toml::from_str::<SchemaSpec>(text)
        .unwrap()
        .compile()
        .unwrap();
    let spec = FeatureMapSpec::default_for(&schema);
    let layout = spec.compile(&schema).unwrap();
    let mut parser = Parser::new(&layout);
    let mut generator = SchemaGenerator::new(&schema, 3);
    let mut batch = EventBatch::new(schema.fields.len());
    for _ in 0..50 {
        let record = generator.next_record().record;
        parser
            .parse_record(record.as_bytes(), 0, &mut batch)
            .unwrap();
    }
    let map = FeatureMap::fit(layout.clone(), std::slice::from_ref(&batch));
    let mut artifact = ModelArtifact::logistic_regression(
        "ctr",
        FeatureSpec::Map(spec),
        vec![0.01; layout.dimension],
    );
    artifact.feature_map = Some(Arc::new(map));
    registry.publish(&mut artifact).unwrap()
}

/// A guest stands beside the primary (the pinned version, else the newest): a newer version
/// over other fields leaves it in place while an older version that reads its fields is
/// pinned, and unpinning (the newer one answering) takes it out of the traffic.
#[tokio::test]
async fn a_guest_follows_the_primary_not_the_newest() {
    let server = Server::new(1);
    publish_fm(&server.registry);
    server.store.refresh();
    let (status, json) = server.admin("POST", "pin", json!({"version": 1})).await;
    assert_eq!(status, 200, "{json}");
    let shadow = json!({"split": [], "shadow": {"model": "ctr-fm", "version": 1}});
    let (status, json) = server.admin("PUT", "traffic", shadow).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(publish_map_version(&server.registry), 2);
    server.store.refresh();
    let status = server.status().await;
    assert_eq!(status["traffic"]["pinned"], 1, "{status}");
    assert_eq!(status["traffic"]["shadow"]["model"], "ctr-fm", "{status}");
    assert_eq!(server.predict(None).await, 1);
    let (status, json) = server.admin("POST", "unpin", json!({})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["traffic"]["shadow"], Value::Null, "{json}");
    assert_eq!(json["version"], 2, "{json}");
    // Pinned to version 2, the guest is refused: it reads other fields.
    let shadow = json!({"shadow": {"model": "ctr-fm", "version": 1}});
    let (status, json) = server.admin("PUT", "traffic", shadow).await;
    assert_eq!(status, 400, "{json}");
}

/// Shadow scoring is bounded: past `max_shadow_in_flight` running at once a request's shadow
/// scoring is skipped and counted, and the answers are as without a shadow.
#[tokio::test]
async fn shadow_scorings_past_the_bound_are_dropped_and_counted() {
    let mut server = Server::new(2);
    server.options.max_shadow_in_flight = 0;
    let (status, json) = server
        .admin("PUT", "traffic", json!({"split": [], "shadow": 1}))
        .await;
    assert_eq!(status, 200, "{json}");
    for _ in 0..5 {
        assert_eq!(server.predict(None).await, 2);
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("millrace_serving_shadow_dropped_total 5"),
        "{metrics}"
    );
    let entry = server.store.entry("ctr").unwrap();
    assert_eq!(entry.versions[&1].stats.shadow_predictions.load(Relaxed), 0);
}

#[tokio::test]
async fn a_bad_guest_is_refused_and_nothing_changes() {
    let server = Server::new(1);
    publish_fm(&server.registry);
    server.store.refresh();
    let refusals = [
        (
            "PUT",
            "traffic",
            json!({"shadow": {"model": "nope", "version": 1}}),
            404,
            "`nope` is not served",
        ),
        (
            "PUT",
            "traffic",
            json!({"shadow": {"model": "ctr-fm", "version": 9}}),
            404,
            "no version 9",
        ),
        (
            "PUT",
            "traffic",
            json!({"shadow": "ctr-fm"}),
            400,
            "invalid `shadow`",
        ),
        (
            "PUT",
            "traffic",
            json!({"split": [{"model": "ctr-fm", "version": 1, "weight": 0}]}),
            400,
            "positive weight",
        ),
        (
            "POST",
            "pin",
            json!({"model": "ctr-fm", "version": 1}),
            400,
            "`pin` takes a version of the model itself",
        ),
    ];
    for (method, action, body, code, why) in refusals {
        let (status, json) = server.admin(method, action, body.clone()).await;
        assert_eq!(status, code, "{body}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains(why),
            "{body}: {json}"
        );
    }
    let status = server.status().await;
    assert_eq!(
        status["traffic"],
        json!({"pinned": null, "split": [], "shadow": null})
    );
    assert_eq!(server.predict(None).await, 1);
}

#[tokio::test]
async fn pin_follow_promote_and_roll_back() {
    let server = Server::new(2);
    let (status, json) = server.admin("POST", "pin", json!({"version": 1})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(server.predict(None).await, 1);

    // A new version is loaded but the pin holds.
    assert_eq!(publish(&server.registry), 3);
    assert_eq!(server.store.refresh().swapped, vec![("ctr".to_owned(), 3)]);
    assert_eq!(server.predict(None).await, 1);
    let status = server.status().await;
    assert_eq!(status["version"], 1);
    let loaded: Vec<u64> = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(loaded, vec![3, 1], "the newest and the pinned one");

    let (status, _) = server.admin("POST", "unpin", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(server.predict(None).await, 3, "following the newest again");

    let (status, json) = server.admin("POST", "rollback", json!({})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["traffic"]["pinned"], 2);
    assert_eq!(server.predict(None).await, 2);
    let (status, _) = server.admin("POST", "rollback", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(server.predict(None).await, 1);
    let (status, json) = server.admin("POST", "rollback", json!({})).await;
    assert_eq!(status, 409, "nothing older than version 1: {json}");
    assert_eq!(
        server.predict(None).await,
        1,
        "a refused change changes nothing"
    );

    let (status, json) = server
        .admin("PUT", "traffic", json!({"split": [], "shadow": 3}))
        .await;
    assert_eq!(status, 200, "{json}");
    let (status, json) = server.admin("POST", "promote", json!({"version": 3})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        json["traffic"],
        json!({"pinned": 3, "split": [], "shadow": null})
    );
    assert_eq!(server.predict(None).await, 3);
}

#[tokio::test]
async fn admin_needs_the_token_and_refuses_bad_changes_whole() {
    let server = Server::new(2);
    let admin = |auth: Option<&str>| {
        let mut request = warp::test::request()
            .method("POST")
            .path("/v1/admin/models/ctr/pin")
            .body(r#"{"version":1}"#);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(TOKEN),
        Some("Basic czNjcmV0"),
    ] {
        let (status, json) = server.call(admin(auth)).await;
        assert_eq!(status, 401, "{auth:?}: {json}");
    }
    assert_eq!(server.store.stats().unauthorized.load(Relaxed), 4);
    let disabled = routes(server.store.clone(), ServeOptions::default());
    let reply = admin(Some("Bearer anything")).reply(&disabled).await;
    assert_eq!(reply.status(), 403, "no token configured: admin is off");
    assert_eq!(server.predict(None).await, 2, "nothing changed");

    // Version 3 is corrupt: a split naming it is refused and the traffic stays as it was.
    publish(&server.registry);
    let weights = server
        .registry
        .root()
        .join("ctr/v0000000003/weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    for (method, action, body, status, reason) in [
        (
            "PUT",
            "traffic",
            json!({"split": [{"version": 1, "weight": 1}, {"version": 3, "weight": 1}]}),
            422,
            "checksum mismatch",
        ),
        ("POST", "pin", json!({"version": 9}), 404, "no version 9"),
        (
            "POST",
            "pin",
            json!({"version": "1"}),
            400,
            "invalid request body",
        ),
        (
            "POST",
            "pin",
            json!({"version": 1, "x": 0}),
            400,
            "unknown field",
        ),
        ("PUT", "pin", json!({"version": 1}), 405, "takes POST"),
        ("POST", "traffic", json!({}), 405, "takes PUT"),
        ("POST", "unpin", json!({"version": 1}), 400, "takes no body"),
        ("POST", "explode", json!({}), 404, "no admin action"),
        (
            "PUT",
            "traffic",
            json!({"split": [{"version": 1, "weight": 0}]}),
            400,
            "positive weight",
        ),
    ] {
        let (got, json) = server.admin(method, action, body.clone()).await;
        assert_eq!(got, status, "{method} {action} {body}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains(reason),
            "{method} {action}: {json}"
        );
    }
    let request = warp::test::request()
        .method("POST")
        .path("/v1/admin/models/other/pin")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(r#"{"version":1}"#);
    assert_eq!(server.call(request).await.0, 404);
    assert_eq!(
        server.status().await["traffic"],
        json!({"pinned": null, "split": [], "shadow": null})
    );
    assert_eq!(server.predict(None).await, 2);
}

/// 100 versions swapped in while four clients keep asking: every request succeeds, is answered
/// entirely by one version (its prediction is that version's), and no client ever sees an older
/// version after a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_swaps_under_load_fail_no_request() {
    let server = Arc::new(Server::new(1));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let (mut last, mut requests) = (0, 0u64);
                while !done.load(Relaxed) {
                    let version = server.predict(None).await;
                    assert!(version >= last, "{version} after {last}");
                    last = version;
                    requests += 1;
                }
                (last, requests)
            })
        })
        .collect();
    for _ in 0..100 {
        publish(&server.registry);
        let store = server.store.clone();
        let outcome = tokio::task::spawn_blocking(move || store.refresh())
            .await
            .unwrap();
        assert_eq!(outcome.swapped.len(), 1, "{outcome:?}");
        tokio::task::yield_now().await;
    }
    done.store(true, Relaxed);
    for client in clients {
        let (last, requests) = client.await.expect("no client failed");
        assert!(requests > 0);
        assert!(last <= 101);
    }
    assert_eq!(server.predict(None).await, 101);
    assert_eq!(server.store.stats().client_errors.load(Relaxed), 0);
    assert_eq!(server.store.stats().swaps.load(Relaxed), 101);
    assert_eq!(server.store.entry("ctr").unwrap().versions.len(), 1);
}

/// Every path of the OpenAPI document is served (the placeholders become `ctr`, version 1 and
/// the label `stable`).
#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let server = Server::new(1);
    let (status, doc) = server
        .call(warp::test::request().path("/openapi.json"))
        .await;
    assert_eq!(status, 200);
    // The written routes, with the served hashed Criteo model's instance: its 39 fields, the
    // categories strings of eight hex digits.
    let written = serde_json::from_str::<Value>(OPENAPI).unwrap();
    assert_eq!(doc["paths"], written["paths"]);
    let instance = &doc["components"]["schemas"]["Instance"]["properties"];
    assert_eq!(instance.as_object().unwrap().len(), 39, "{instance}");
    assert_eq!(instance["C1"]["type"], "string");
    assert!(instance["C1"]["description"]
        .as_str()
        .unwrap()
        .contains("eight hex digits"));
    assert!(instance["I1"]["description"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 29);
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let path = path
                .replace("{name}", "ctr")
                .replace("{version}", "1")
                .replace("{label}", "stable");
            let mut request = warp::test::request()
                .method(&method.to_uppercase())
                .path(&path)
                .header("authorization", format!("Bearer {TOKEN}"));
            if method != "get" {
                request = request.body(r#"{"instances":[{}]}"#);
            }
            let (status, json) = server.call(request).await;
            let documented = operation["responses"]
                .as_object()
                .unwrap()
                .contains_key(&status.to_string());
            assert!(documented, "{method} {path}: {status} {json}");
            assert!(
                json.get("error")
                    .and_then(Value::as_str)
                    .is_none_or(|e| !e.contains("no such endpoint")),
                "{method} {path}: {json}"
            );
        }
    }
}

/// Repeated instances are answered from the version's cache of rows, with the same predictions;
/// a new version starts an empty cache, and an error names the instance's place in the request.
#[tokio::test]
async fn repeated_instances_come_from_the_row_cache() {
    let server = Server::new(1);
    let body = r#"{"instances":[{"I1":3,"C1":"68fd1e64"},{"I2":7},{"I1":3,"C1":"68fd1e64"}]}"#;
    let ask = |body: &'static str| {
        warp::test::request()
            .method("POST")
            .path("/v1/models/ctr:predict")
            .body(body)
    };
    let (status, first) = server.call(ask(body)).await;
    assert_eq!(status, 200, "{first}");
    let stats = server.store.stats();
    assert_eq!(
        stats.row_cache_misses.load(Relaxed),
        3,
        "all new in one request"
    );
    assert_eq!(stats.row_cache_hits.load(Relaxed), 0);
    let (_, again) = server.call(ask(body)).await;
    assert_eq!(again, first);
    assert_eq!(stats.row_cache_hits.load(Relaxed), 3);
    assert_eq!(
        server.store.entry("ctr").unwrap().versions[&1].cached_rows(),
        2
    );

    // Without a cache, the same answers.
    let uncached = Arc::new(ModelStore::new(server.registry.clone()).with_row_cache(0));
    uncached.refresh();
    let reply = ask(body)
        .reply(&routes(uncached.clone(), ServeOptions::default()))
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(reply.body()).unwrap(),
        first
    );
    assert_eq!(uncached.stats().row_cache_hits.load(Relaxed), 0);

    // A bad instance after a cached one is named by its place in the request.
    let (status, json) = server
        .call(ask(r#"{"instances":[{"I2":7},{"C1":{"hex":false}}]}"#))
        .await;
    assert_eq!(status, 400);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .starts_with("instance 1: field `C1`"),
        "{json}"
    );

    publish(&server.registry);
    server.store.refresh();
    assert_eq!(
        server.store.entry("ctr").unwrap().versions[&2].cached_rows(),
        0
    );
    let (_, json) = server.call(ask(body)).await;
    assert_eq!(json["model_version"], 2);
}

/// A server holds what it serves: pruning the registry down to its newest 2 versions keeps the
/// one pinned here, and the server answers with it after more versions come and go.
#[test]
fn a_pinned_version_survives_the_registry_pruning() {
    use millrace_serving::TrafficChange;
    let server = Server::new(3);
    server
        .store
        .change_traffic("ctr", TrafficChange::Pin(1))
        .unwrap();
    for _ in 0..4 {
        publish(&server.registry);
        server.store.refresh();
        server.registry.prune("ctr", 2).unwrap();
    }
    assert_eq!(server.registry.versions("ctr").unwrap(), vec![1, 6, 7]);
    assert_eq!(server.registry.held("ctr").unwrap().first(), Some(&1));
    server
        .store
        .change_traffic("ctr", TrafficChange::Unpin)
        .unwrap();
    server.store.refresh();
    server.registry.prune("ctr", 2).unwrap();
    assert!(!server.registry.versions("ctr").unwrap().contains(&1));
}
