//! A job of a declared schema end to end: a CSV file with a header, a time field, numbers and
//! tokens, replayed by the `file` source, learned by a FeatureMap and FTRL, published with the
//! schema, and served by the schema's field names.

mod common;

use millrace_engine::spec::JobSpec;
use millrace_engine::{Job, RunOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Writes `rows` events (and `bad` lines whose label is neither value, and `bad` events whose
/// hour is not a time) to `path`: a click is
/// likely on site `s1` and with tag `hot`, and unlikely otherwise; hours run from 14102100 on,
/// `rows / 4` lines an hour.
fn write_events(path: &Path, rows: usize, bad: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut text = String::from("id,click,hour,site,price,tags\n");
    for i in 0..rows {
        let site = ["s1", "s2", "s3", "s4"][rng.random_range(0..4)];
        let hot = rng.random::<f64>() < 0.3;
        let tags = if hot { "hot|new" } else { "old" };
        let p = 0.05 + 0.5 * f64::from(u8::from(site == "s1")) + 0.3 * f64::from(u8::from(hot));
        let click = u8::from(rng.random::<f64>() < p);
        let hour = 14102100 + i / (rows / 4);
        let price = rng.random_range(1..100);
        text += &format!("{i},{click},{hour},{site},{price},{tags}\n");
        if i % (rows / bad.max(1)) == 0 && i / (rows / bad.max(1)) < bad {
            text += &format!("{i},maybe,{hour},{site},{price},{tags}\n");
            // An hour that is no time: the event stays at its partition's current time.
            text += &format!("{i},{click},soon,{site},{price},{tags}\n");
        }
    }
    std::fs::write(path, text).unwrap();
}

fn job_text(data: &Path, registry: &Path, repeat: bool) -> String {
    format!(
        r#"
name = "clicks"

[source]
type = "file"
path = {data:?}
repeat = {repeat}
{rate}

[schema]
format = "csv"
header = true
event_time_format = "%y%m%d%H"
fields = [
  {{ name = "id", type = "skip" }},
  {{ name = "click", type = "label" }},
  {{ name = "hour", type = "time" }},
  {{ name = "site", type = "category" }},
  {{ name = "price", type = "number" }},
  {{ name = "tags", type = "tokens", separator = "|" }},
]

[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["site", "tags"]
[[features.transform]]
kind = "standardize"
fields = ["price"]

[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.1
l2 = 1.0

[publish]
registry = {registry:?}
every_events = 500
every_seconds = 1

[serve]
bind = "127.0.0.1:0"

[progress]
epoch_ms = {epoch_ms}
interval_ms = 0
"#,
        // Replayed once at 800 a second, the primed records must not hold back the rest for
        // longer than the partition may stay silent (1 s), which would let the frontier take the
        // wall clock past the file's hours.
        rate = if repeat {
            "rows_per_sec = 5000.0"
        } else {
            "rows_per_sec = 800.0"
        },
        epoch_ms = if repeat { 200 } else { 3_600_000 },
    )
}

#[test]
fn a_csv_file_replayed_once_is_learned_in_its_hours_with_2_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (data, registry) = (dir.path().join("events.csv"), dir.path().join("registry"));
    write_events(&data, 4000, 8);
    let spec = JobSpec::from_toml(&job_text(&data, &registry, false)).unwrap();
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    let report = job.wait().unwrap();
    assert_eq!(report.source_records, 4016);
    assert_eq!(report.dead_letters, 8);
    assert_eq!(report.learned, 4008);
    // Four hours are four epochs: the first learned with FeatureMap version 0, the others
    // with the versions fitted on the hours before.
    assert!(report.progressive_auc.unwrap() > 0.7, "{report:?}");
    let model = common::latest_model(dir.path(), "clicks");
    let map = model.feature_map.as_ref().expect("a FeatureMap model");
    assert_eq!(map.layout.schema.fields, ["site", "price", "tags"]);
    // The last hour was learned with the version fitted on the three before it (in the
    // replay's clock, or had an unreadable hour taken the wall clock, the file would have been
    // fewer epochs).
    assert_eq!(map.version, 3, "one version per hour");
}

#[test]
fn a_repeated_replay_serves_the_schemas_fields_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (data, registry) = (dir.path().join("events.csv"), dir.path().join("registry"));
    write_events(&data, 2000, 0);
    let spec = JobSpec::from_toml(&job_text(&data, &registry, true)).unwrap();
    let job = Job::start(spec, RunOptions::local(1)).unwrap();
    let addr = job.serve_addr().unwrap();
    let stats = job.stats().clone();
    // Five passes over the file, and a version that learned them served.
    common::wait_for(
        "five passes over the file",
        Duration::from_secs(120),
        || {
            stats.trainer.learned.load(Ordering::Relaxed) > 10_000
                && stats.trainer.model_version.load(Ordering::Relaxed) >= 5
        },
    );
    let published = stats.trainer.model_version.load(Ordering::Relaxed);
    common::wait_for("the newest version served", Duration::from_secs(60), || {
        let (_, body) = common::http(addr, "GET", "/v1/models", "");
        let served: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        served["models"][0]["version"]
            .as_u64()
            .is_some_and(|v| v >= published)
    });
    let predict = |body: &str| common::http(addr, "POST", "/v1/models/clicks:predict", body);
    let (status, body) = predict(
        r#"{"instances": [{"site": "s1", "price": 20, "tags": ["hot", "new"]}, {"site": "s3", "tags": "old"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p: Vec<f64> = answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(p[0] > p[1] + 0.1, "the planted signal: {p:?}");
    let (status, body) = predict(r#"{"instances": [{"site": "s1", "country": "fr"}]}"#);
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `country`"), "{body}");
    let (status, body) = predict(r#"{"instances": [{"site": {"id": 1}}]}"#);
    assert_eq!(status, 400);
    assert!(body.contains("field `site` cannot hold"), "{body}");
    job.stop();
    let report = job.wait().unwrap();
    assert_eq!(report.dead_letters, 0);
}
