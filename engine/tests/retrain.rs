//! The retraining stage in a running job: on generated events with planted preferences, the
//! deep candidate trained on the sample buffer passes the gate against the online model and is
//! published, servable without libtorch; an untrained candidate is refused; and `[retrain]`'s
//! problems are listed at once.
#![cfg(feature = "deep")]

use millrace_engine::spec::JobSpec;
use millrace_engine::{Job, RunOptions};
use millrace_models::{FeatureSpec, ModelArtifact, Registry, ServedModel};
use millrace_serving::{ModelStore, TrafficChange, VersionRef};
use std::path::Path;

/// A generated stream of six category fields with preferences planted between three of them,
/// FTRL online, the sample buffer, and `[retrain]` with `retrain` (its body) added.
fn job_text(dir: &Path, retrain: &str) -> String {
    format!(
        r#"
name = "stage"

[source]
type = "generator"
partitions = 2
rows = 40000
seed = 5
interactions = 4
interaction_strength = 4.0

[schema]
format = "csv"
fields = [
  {{ name = "click", type = "label" }},
  {{ name = "at", type = "time" }},
  {{ name = "a", type = "category" }},
  {{ name = "b", type = "category" }},
  {{ name = "c", type = "category" }},
  {{ name = "d", type = "category" }},
  {{ name = "e", type = "category" }},
  {{ name = "f", type = "category" }},
]

[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["a", "b", "c", "d", "e", "f"]
min_count = 1
capacity = 5000

[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.1
l2 = 1.0

[publish]
registry = {registry:?}
every_events = 10000
every_seconds = 60

[progress]
epoch_ms = 60000
interval_ms = 0

[samples]
dir = {samples:?}
segment_seconds = 1

[retrain]
every_seconds = 3600
model = "deepfm"
mlp = [32]
batch_size = 512
passes = 1
holdout = 0.2
{retrain}
"#,
        registry = dir.join("registry"),
        samples = dir.join("samples"),
    )
}

#[test]
fn a_candidate_that_beats_the_online_model_is_published_and_servable() {
    let dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::from_toml(&job_text(dir.path(), "learning_rate = 0.02")).unwrap();
    let report = Job::start(spec, RunOptions::local(2))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(report.learned, 40_000, "{report:?}");
    assert_eq!(
        (report.deep_published, report.deep_refused),
        (1, 0),
        "{report:?}"
    );
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    let artifact = registry.load_latest("stage-deep").unwrap();
    assert_eq!(artifact.problems(), Vec::<String>::new());
    assert!(
        artifact.meta.progressive_auc.unwrap() > 0.6,
        "{:?}",
        artifact.meta
    );
    // Served without libtorch: the served tables score a row as the artifact does.
    let served = ServedModel::from_artifact(&artifact);
    let map = artifact.feature_map.as_ref().unwrap();
    let row: Vec<u32> = map.layout.features.iter().map(|f| f.offset + 1).collect();
    let values = vec![1.0; row.len()];
    let p = served.predict_row(&row, &values);
    assert!(p > 0.0 && p < 1.0);
    assert_eq!(p, artifact.predict_row(&row, &values));
    a_deep_version_shadows_the_online_model(&registry, artifact.meta.version);
}

/// Serving follows the registry: the deep version shadows the online model (another kind of
/// model over the same fields), then answers all its traffic when promoted; a model over other
/// fields cannot take the online model's traffic.
fn a_deep_version_shadows_the_online_model(registry: &Registry, deep: u64) {
    let store = ModelStore::new(registry.clone());
    store.refresh();
    let guest = VersionRef::Of {
        model: "stage-deep".to_owned(),
        version: deep,
    };
    let shadow = TrafficChange::Split {
        split: Vec::new(),
        shadow: Some(guest.clone()),
    };
    store.change_traffic("stage", shadow).unwrap();
    let route = store.entry("stage").unwrap().route(0).unwrap();
    assert_eq!(route.answer.model.meta.name, "stage");
    assert_eq!(route.shadow.unwrap().model.meta.name, "stage-deep");
    store
        .change_traffic("stage", TrafficChange::Promote(guest))
        .unwrap();
    let route = store.entry("stage").unwrap().route(7).unwrap();
    assert!(route.guest && route.shadow.is_none());
    assert_eq!(route.answer.model.meta.version, deep);

    let slots = SPEC.dimension(&millrace_models::Schema::criteo());
    let mut hashed = ModelArtifact::logistic_regression("hashed", SPEC, vec![0.0; slots]);
    registry.publish(&mut hashed).unwrap();
    store.refresh();
    let other = TrafficChange::Split {
        split: Vec::new(),
        shadow: Some(VersionRef::Of {
            model: "hashed".to_owned(),
            version: 1,
        }),
    };
    let refused = store.change_traffic("stage", other).unwrap_err();
    assert!(
        refused.to_string().contains("reads other fields"),
        "{refused}"
    );
}

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };

#[test]
fn a_candidate_with_host_resident_embeddings_is_published_and_its_rows_counted() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(
        dir.path(),
        "learning_rate = 0.02\n[retrain.embeddings]\nplacement = \"host\"\n\
         optimizer = \"rowwise_adagrad\"\nlearning_rate = 0.05\nmin_count = 2",
    );
    let job = Job::start(JobSpec::from_toml(&text).unwrap(), RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    let report = job.wait().unwrap();
    assert_eq!(
        (report.deep_published, report.deep_refused),
        (1, 0),
        "{report:?}"
    );
    let retrain = &stats.retrain;
    // DeepFM's rows: 8 numbers of embedding and a first-order weight.
    assert_eq!(retrain.row_bytes.load(Ordering::Relaxed), 36);
    assert!(retrain.gathered.load(Ordering::Relaxed) > 0);
    assert!(retrain.table_rows.load(Ordering::Relaxed) > 0);
    let rate = f64::from_bits(retrain.gathered_rate.load(Ordering::Relaxed));
    assert!(rate > 0.0, "{rate}");
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    let artifact = registry.load_latest("stage-deep").unwrap();
    assert_eq!(artifact.problems(), Vec::<String>::new());
}

#[test]
fn the_gate_refuses_an_untrained_candidate_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::from_toml(&job_text(dir.path(), "learning_rate = 1e-9")).unwrap();
    let report = Job::start(spec, RunOptions::local(1))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        (report.deep_published, report.deep_refused),
        (0, 1),
        "{report:?}"
    );
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    assert_eq!(registry.latest("stage-deep").unwrap(), None);
}

#[test]
fn retrain_problems_are_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(
        dir.path(),
        "device = \"tpu\"\nauc_tolerance = -1.0\npublish_as = \"stage\"\nring_port_offset = 0\n\
         [retrain.embeddings]\nplacement = \"host\"\nmax_rows = 0",
    )
    .replace("model = \"deepfm\"", "model = \"wide\"")
    .replace("holdout = 0.2", "holdout = 1.5");
    let samples = format!("[samples]\ndir = {:?}\n", dir.path().join("samples"));
    let text = text.replace(&samples, "");
    let problems = JobSpec::from_toml(&text).unwrap_err().to_string();
    for key in [
        "`model`",
        "`holdout`",
        "`device`",
        "`auc_tolerance`",
        "`publish_as`",
        "`ring_port_offset`",
        "add `[samples]`",
        "`embeddings`: host-resident embeddings learn by row-wise AdaGrad",
        "`embeddings`: `max_rows`",
    ] {
        assert!(problems.contains(key), "{key}: {problems}");
    }
}

#[test]
fn a_running_job_retrains_every_so_many_rows_and_stops_when_asked() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(
        dir.path(),
        "learning_rate = 0.02\nevery_rows = 8000\nmin_rows = 4000",
    )
    .replace("rows = 40000", "rows = 0\nrows_per_sec = 20000.0")
    .replace("every_events = 10000", "every_events = 2000");
    let job = Job::start(JobSpec::from_toml(&text).unwrap(), RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    let retrain = &stats.retrain;
    // Until the stage, run every 8,000 new rows on the segments closed by then, has
    // published a version (or a bound far beyond what that takes, to fail rather than hang).
    let started = std::time::Instant::now();
    while retrain.published.load(Ordering::Relaxed) == 0
        && started.elapsed() < std::time::Duration::from_secs(300)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    job.stop();
    let report = job.wait().unwrap();
    assert!(report.deep_published >= 1, "{report:?}");
    assert!(!retrain.training.load(Ordering::Relaxed));
}

/// Two free loopback ports for timely, and an offset that gives two more for the stage's ring.
fn cluster_ports() -> ([u16; 2], u16) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    loop {
        let ports = [free(), free()];
        let offset = free().wrapping_sub(ports[0]);
        let ring = ports.map(|p| p.checked_add(offset));
        if ports[0] != ports[1]
            && offset != 0
            && ring.iter().all(|p| {
                p.is_some_and(|p| {
                    !ports.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                })
            })
        {
            return (ports, offset);
        }
    }
}

/// A job of two processes (one worker each, one generated partition each, unbounded) retrains
/// as two ranks, with the host-resident table sharded between them: each trains on its own
/// worker's buffer, rank 0 judges on both ranks' held-out rows (with every rank's rows) and
/// alone publishes, both processes count the publications, and a stop (SIGTERM) ends both
/// ranks cleanly.
#[test]
fn two_processes_retrain_as_two_ranks_and_rank_zero_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, offset) = cluster_ports();
    let text = job_text(
        dir.path(),
        &format!(
            "learning_rate = 0.02\nevery_rows = 8000\nmin_rows = 4000\n\
             ring_port_offset = {offset}\n\
             [retrain.embeddings]\nplacement = \"host\"\noptimizer = \"rowwise_adagrad\"\n\
             learning_rate = 0.05\n\
             [sinks]\ndead_letters_sink = {{ type = \"file\", path = {:?} }}",
            dir.path().join("dead-letters")
        ),
    )
    .replace("rows = 40000", "rows = 0\nrows_per_sec = 20000.0")
    .replace("every_events = 10000", "every_events = 2000");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, text).unwrap();
    let hosts = dir.path().join("hosts");
    let lines: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hosts, lines).unwrap();
    let children: Vec<_> = (0..2)
        .map(|process| {
            std::process::Command::new(env!("CARGO_BIN_EXE_millrace"))
                .args(["run", "--workers", "1", "--process", &process.to_string()])
                .arg("--hosts")
                .arg(&hosts)
                .arg(&job)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Until a deep version is published (or a bound far beyond what that takes, to fail
    // rather than hang), then a stop to both.
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    let started = std::time::Instant::now();
    while registry.latest("stage-deep").ok().flatten().is_none()
        && started.elapsed() < std::time::Duration::from_secs(300)
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for child in &children {
        let pid = child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "a process failed: {:?}", out.status);
            let stdout = String::from_utf8(out.stdout).unwrap();
            serde_json::from_str(stdout.lines().last().expect("a report")).unwrap()
        })
        .collect();
    let published = reports[0]["deep_published"].as_u64().unwrap();
    assert!(published >= 1, "{}", reports[0]);
    // Rank 1 learned of the publications from rank 0 (a stop may cut the last one short).
    let seen = reports[1]["deep_published"].as_u64().unwrap();
    assert!(seen >= 1 && published - seen <= 1, "{reports:?}");
    let versions = registry.versions("stage-deep").unwrap();
    assert_eq!(versions.len() as u64, published, "only rank 0 publishes");
    let artifact = registry.load_latest("stage-deep").unwrap();
    assert_eq!(artifact.problems(), Vec::<String>::new());
    assert!(artifact.meta.trained_events > 0, "{:?}", artifact.meta);
    assert!(
        artifact.meta.progressive_auc.unwrap() > 0.6,
        "{:?}",
        artifact.meta
    );
}
