//! The whole job against the real test broker (`make test` starts tansu and sets
//! `MILLRACE_TEST_BROKER`): the Criteo sample plus injected malformed lines are produced to a
//! topic, the job learns from them, publishes and serves; every good row is learned exactly once,
//! every bad line is in the dead-letter topic, and the served version is the registry's latest.
//! The same with a FeatureMap (`map` features): there, a record with a malformed value is still
//! an event (the value follows the spec's policy and is counted); only records that cannot be
//! events are dead letters. Every version also goes to a registry topic, which a serving pod
//! follows.

mod common;

use common::{broker, brokers, read_topic, unique, wait_for};
use millrace_connectors::kafka::{create_topics, KafkaVersions, LineProducer};
use millrace_engine::spec::{
    JobSpec, LearnerSpec, ProgressSpec, PublishSpec, ServeSpec, SinksSpec,
};
use millrace_engine::{Job, KafkaSourceConfig, RunOptions};
use millrace_models::{FeatureMapSpec, FeatureSpec, FtrlParams, LoadPace, Registry, VersionSource};
use std::sync::atomic::Ordering;
use std::time::Duration;

const HASHED: FeatureSpec = FeatureSpec::Hashed { hash_bits: 20 };

#[test]
fn criteo_sample_end_to_end_with_1_worker() {
    criteo_sample_through_kafka_dataflow_registry_and_serving(1, HASHED);
}

#[test]
fn criteo_sample_end_to_end_with_2_workers() {
    criteo_sample_through_kafka_dataflow_registry_and_serving(2, HASHED);
}

#[test]
fn criteo_sample_end_to_end_with_4_workers() {
    criteo_sample_through_kafka_dataflow_registry_and_serving(4, HASHED);
}

#[test]
fn criteo_sample_end_to_end_with_a_feature_map_and_1_worker() {
    let features = FeatureSpec::Map(FeatureMapSpec::criteo_default());
    criteo_sample_through_kafka_dataflow_registry_and_serving(1, features);
}

#[test]
fn criteo_sample_end_to_end_with_a_feature_map_and_2_workers() {
    let features = FeatureSpec::Map(FeatureMapSpec::criteo_default());
    criteo_sample_through_kafka_dataflow_registry_and_serving(2, features);
}

fn criteo_sample_through_kafka_dataflow_registry_and_serving(
    workers: usize,
    features: FeatureSpec,
) {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/criteo-kaggle-dac-head8000/train.tsv"
    );
    let text = std::fs::read(data).expect("the Criteo sample in ../shared/data");
    let good: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let first = String::from_utf8_lossy(good[0]).into_owned();
    let bad: Vec<Vec<u8>> = vec![
        b"this is not a criteo line".to_vec(),
        first.rsplit_once('\t').unwrap().0.as_bytes().to_vec(),
        format!("2{}", &first[1..]).into_bytes(),
        first.replacen('\t', "\tx", 1).into_bytes(),
        [
            &first.as_bytes()[..first.len() - 8],
            b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8",
        ]
        .concat(),
    ];
    // The word in I1 and the invalid UTF-8 in C26 are malformed values of otherwise good
    // events, kept and counted (hashed features are a FeatureMap too); the other three cannot
    // be events.
    let map = matches!(features, FeatureSpec::Map(_));
    let (events, dead) = (
        good.len() + 2,
        vec![bad[0].clone(), bad[1].clone(), bad[2].clone()],
    );

    let (topic, dead_letter_topic) = fresh_topics("e2e");
    let metrics_topic = format!("{topic}-metrics");
    let predictions_topic = format!("{topic}-predictions");
    let registry_topic = format!("{topic}-models");
    let mut producer = LineProducer::new(&brokers(), &topic, 4).unwrap();
    for (i, line) in good.iter().enumerate() {
        producer.send(line).unwrap();
        if i % 1500 == 700 {
            producer.send(&bad[i / 1500]).unwrap();
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(producer.sent() as usize, good.len() + bad.len());

    let registry_dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("ctr")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: broker(),
            topic: topic.clone(),
            group_id: unique("e2e-group"),
            dead_letter_topic: dead_letter_topic.clone(),
            partitions: 4,
            idle_ms: 200,
            stop_after_records: None,
            event_time_field: None,
            on_missing_offsets: Default::default(),
            kafka: Default::default(),
            kafka_file: None,
        })
        .features(features)
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry_dir.path().to_owned(),
            every_events: 2_000,
            every_seconds: 1,
            registry_topic: Some(registry_topic.clone()),
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        })
        .serve(ServeSpec {
            bind: "127.0.0.1:0".into(),
        })
        .progress(ProgressSpec {
            epoch_ms: 50,
            interval_ms: 0,
        })
        .sinks(SinksSpec {
            predictions_topic: Some(predictions_topic.clone()),
            metrics_topic: Some(metrics_topic.clone()),
            metrics_interval_ms: 100,
            ..SinksSpec::default()
        })
        .build()
        .unwrap();
    let job = Job::start(spec, RunOptions::local(workers)).unwrap();
    let stats = job.stats().clone();
    let addr = job.serve_addr().unwrap();

    wait_for("every record to be read", Duration::from_secs(120), || {
        stats.source.records.load(Ordering::Relaxed) as usize >= good.len() + bad.len()
    });
    wait_for("every event to be learned", Duration::from_secs(60), || {
        stats.trainer.learned.load(Ordering::Relaxed) as usize >= events
    });
    // The time-based publication picks up the tail; serving then swaps to it.
    let registry = Registry::open(registry_dir.path()).unwrap();
    wait_for(
        "a version that learned every event",
        Duration::from_secs(30),
        || {
            registry
                .load_latest("ctr")
                .is_ok_and(|m| m.meta.trained_events as usize == events)
        },
    );
    let latest = registry.latest("ctr").unwrap().unwrap();
    // One worker publishes every 2000 events, then the tail; several publish only between
    // synchronization rounds (one per 50 ms epoch), which may each bring more than 2000.
    assert!(
        workers > 1 || latest >= 4,
        "versions every 2000 events, then the tail: {latest}"
    );
    wait_for(
        "serving to swap to the latest version",
        Duration::from_secs(30),
        || {
            let (status, body) = common::http(addr, "GET", "/v1/models/ctr", "");
            status == 200 && body.contains(&format!("\"version\":{latest},"))
        },
    );

    let instance = serde_json::json!({ "instances": [
        common::criteo_instance(good[0]),
        { "I1": 3, "C1": "68fd1e64" },
    ]});
    let (status, body) = common::http(
        addr,
        "POST",
        "/v1/models/ctr:predict",
        &instance.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["model_version"], latest);
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    assert!(predictions
        .iter()
        .all(|p| (0.0..=1.0).contains(&p.as_f64().unwrap())));

    let (status, body) = common::http(
        addr,
        "POST",
        "/v1/models/ctr:predict",
        r#"{"instances":[{"C99":"x"}]}"#,
    );
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `C99`"), "{body}");
    // The served version carries the FeatureMap its rows were made with: a fitted one
    // (after the first epoch) where versions are published every 2000 events, though with
    // several workers all the sample may be learned in the first epoch's round; a hashed
    // spec's, which fits nothing and so stays at version 0, is made again on load.
    let served = registry.load("ctr", latest).unwrap();
    let map_version = served.feature_map.map(|m| m.version);
    if map {
        assert!(
            map_version.is_some_and(|v| v > 0 || workers > 1),
            "{map_version:?}"
        );
    } else {
        assert_eq!(map_version, Some(0));
    }
    let (status, _) = common::http(
        addr,
        "POST",
        "/v1/models/nope:predict",
        r#"{"instances":[{}]}"#,
    );
    assert_eq!(status, 404);
    let (status, body) = common::http(addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!(
            "millrace_learner_events_total{{model=\"ctr\"}} {events}"
        )),
        "{body}"
    );
    // Everything is read: every partition reports its end.
    wait_for(
        "every partition read to its end",
        Duration::from_secs(30),
        || {
            let (_, body) = common::http(addr, "GET", "/metrics", "");
            (0..4).all(|p| {
                body.contains(&format!(
                    "millrace_source_partition_at_end{{model=\"ctr\",partition=\"{p}\"}} 1\n"
                ))
            })
        },
    );
    for line in [
        "millrace_featurize_bad_values_total{model=\"ctr\",kind=\"not_numeric\"} 1",
        "millrace_featurize_bad_values_total{model=\"ctr\",kind=\"invalid_utf8\"} 1",
        &format!("millrace_featurize_rows_total{{model=\"ctr\"}} {events}"),
    ] {
        assert!(body.contains(line), "{line} in {body}");
    }
    assert_eq!(
        body.contains("millrace_featuremap_version{model=\"ctr\"} 0\n"),
        !map,
        "{body}"
    );
    // The job's metrics beside serving's pass the Prometheus client's parsers.
    common::check_metrics(
        addr,
        true,
        &[
            "millrace_build",
            "millrace_learner_events",
            "millrace_model_publish_duration_seconds",
            "millrace_source_partition_watermark_seconds",
            "millrace_serving_request_duration_seconds",
        ],
    );

    job.stop();
    let report = job.wait().unwrap();
    assert_eq!(
        report.learned as usize, events,
        "every event learned exactly once"
    );
    assert_eq!(report.decoded as usize, events);
    assert_eq!(report.dead_letters as usize, dead.len());
    assert_eq!(
        report.model_version,
        registry.latest("ctr").unwrap().unwrap()
    );
    let auc = report.progressive_auc.unwrap();
    assert!(auc > 0.65, "progressive auc {auc}");

    // A serving pod that follows the registry topic has the job's last version, to the bit.
    let follower = KafkaVersions::follow(&brokers(), &registry_topic, None).unwrap();
    let last = report.model_version;
    wait_for(
        "the last version on the registry topic",
        Duration::from_secs(60),
        || follower.versions("ctr").unwrap().contains(&last),
    );
    let served = follower
        .load_served("ctr", last, None, LoadPace::default())
        .unwrap();
    let published = registry.load("ctr", last).unwrap();
    assert_eq!(served.meta, published.meta);
    let served_tensors = served.tensors.iter().map(|t| (&t.name, t.values.to_vec()));
    let published_tensors = published
        .tensors
        .iter()
        .map(|t| (&t.name, t.values.clone()));
    assert!(served_tensors.eq(published_tensors));
    assert_eq!(served.feature_map, published.feature_map);

    // Every bad line is in the dead-letter topic, byte for byte, with its epoch.
    let mut want = dead;
    want.sort();
    assert_eq!(read_dead_letters(&dead_letter_topic, want.len()), want);

    // Every record is predicted or dead-lettered, once: the predictions name their records.
    let mut positions: Vec<(i64, i64)> = read_topic(&predictions_topic, events, false)
        .iter()
        .map(|message| {
            let p: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            assert!(
                (0.0..=1.0).contains(&p["prediction"].as_f64().unwrap()),
                "{p}"
            );
            let position = (
                p["partition"].as_i64().unwrap(),
                p["offset"].as_i64().unwrap(),
            );
            assert_eq!(
                message.key,
                format!("{}:{}", position.0, position.1).into_bytes()
            );
            position
        })
        .collect();
    positions.extend(
        read_topic(&dead_letter_topic, want.len(), false)
            .iter()
            .map(|message| {
                let header = |key: &str| message.headers[key].parse::<i64>().unwrap();
                (header("source_partition"), header("source_offset"))
            }),
    );
    positions.sort_unstable();
    let mut read: Vec<(i64, i64)> = (0..4)
        .flat_map(|p| {
            let n = stats.source.partitions[p]
                .next_offset
                .load(Ordering::Relaxed) as i64;
            (0..n).map(move |o| (p as i64, o))
        })
        .collect();
    read.sort_unstable();
    assert_eq!(read.len(), good.len() + bad.len());
    assert_eq!(positions, read);

    // The metrics topic: the job's figures at epoch ends, then the final report.
    let metrics: Vec<serde_json::Value> = read_topic(&metrics_topic, 1, true)
        .iter()
        .map(|message| serde_json::from_slice(&message.payload).unwrap())
        .collect();
    let (last, before) = metrics.split_last().unwrap();
    assert_eq!(last["epoch"], serde_json::Value::Null, "{last}");
    assert_eq!(last["job"], "ctr");
    assert_eq!(last["learned"], events);
    assert_eq!(last["dead_letters"], report.dead_letters);
    assert_eq!(last["model_version"], report.model_version);
    let epochs: Vec<u64> = before
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
    assert!(before
        .iter()
        .all(|m| m["learned"].as_u64().unwrap() <= events as u64));
}

/// JSON records whose event time is a named field, on 2 workers: the source's watermarks are
/// the field's times (not the Kafka timestamps, which are the wall clock here), a record without
/// the field keeps its Kafka timestamp and is counted, and a record that is not JSON is a dead
/// letter.
#[test]
fn json_records_with_a_named_event_time_field_with_2_workers() {
    use millrace_models::synth::CriteoGenerator;
    use millrace_models::SchemaSpec;

    let (topic, dead_letter_topic) = fresh_topics("json");
    let mut producer = LineProducer::new(&brokers(), &topic, 4).unwrap();
    let mut generator = CriteoGenerator::new(21);
    let (events, base) = (4_000u64, 1_600_000_000_000u64);
    let mut max_time = [0u64; 4];
    for i in 0..events {
        let event = generator.next_event();
        let mut record = event.features.to_json();
        record["label"] = u8::from(event.label).into();
        // A record without its time every 1000th; the others 10 ms apart.
        if i % 1000 != 999 {
            record["event_ts"] = (base + 10 * i).into();
            max_time[(i % 4) as usize] = base + 10 * i;
        }
        producer.send(record.to_string().as_bytes()).unwrap();
    }
    producer.send(b"{\"label\": 1, \"I1\": ").unwrap();
    producer.flush(Duration::from_secs(60)).unwrap();

    let registry = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("json")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: broker(),
            topic,
            group_id: unique("json-group"),
            dead_letter_topic: dead_letter_topic.clone(),
            partitions: 4,
            idle_ms: 200,
            stop_after_records: None,
            event_time_field: Some("event_ts".into()),
            on_missing_offsets: Default::default(),
            kafka: Default::default(),
            kafka_file: None,
        })
        .schema(SchemaSpec {
            format: Some("json".into()),
            ..SchemaSpec::preset_criteo()
        })
        .features(HASHED);
    let spec = common::learn_quietly(spec, registry.path(), 1000);
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    wait_for(
        "every event to be learned",
        Duration::from_secs(120),
        || stats.trainer.learned.load(Ordering::Relaxed) == events,
    );
    wait_for("the dead letter", Duration::from_secs(60), || {
        stats.dead_letters() == 1
    });
    // Each partition's watermark is its largest field time, except where a record without one
    // took its Kafka timestamp (today, later than every field time): partition 3 (i = 999,
    // 1999, … are i % 4 == 3) and partition 0 (the record that is not JSON, the 4001st).
    for (p, max) in max_time.iter().enumerate() {
        let watermark = stats.source.partitions[p]
            .watermark_ms
            .load(Ordering::Relaxed);
        if p == 0 || p == 3 {
            assert!(watermark > *max, "partition {p}: {watermark}");
        } else {
            assert_eq!(watermark, *max, "partition {p}");
        }
    }
    assert_eq!(stats.event_time_missing.load(Ordering::Relaxed), 5);
    job.stop();
    let report = job.wait().unwrap();
    assert_eq!(report.learned, events);
    assert_eq!(report.dead_letters, 1);
    assert_eq!(
        read_dead_letters(&dead_letter_topic, 1),
        [b"{\"label\": 1, \"I1\": ".to_vec()]
    );
}

/// A new topic named after `prefix` and its dead-letter topic, 4 partitions each.
fn fresh_topics(prefix: &str) -> (String, String) {
    let topic = unique(prefix);
    let dead_letter_topic = format!("{topic}-dead-letters");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(create_topics(&brokers(), &[&topic, &dead_letter_topic], 4))
        .unwrap();
    (topic, dead_letter_topic)
}

/// The first `count` records of a dead-letter topic, sorted.
fn read_dead_letters(topic: &str, count: usize) -> Vec<Vec<u8>> {
    let mut letters: Vec<Vec<u8>> = read_topic(topic, count, false)
        .into_iter()
        .map(|message| message.payload)
        .collect();
    letters.sort();
    letters
}

/// Impressions and delayed clicks on one topic, joined by the job (`[labels]`) on 2 workers:
/// every impression is learned once, as a positive or a negative, and the malformed records
/// are dead letters, byte for byte.
#[test]
fn impressions_and_clicks_are_joined_learned_and_dead_lettered_with_2_workers() {
    use millrace_engine::spec::LabelsSpec;
    use millrace_models::labels::{impressions_and_clicks, LabelEvent};
    use millrace_operators::LatePolicy;

    let stream = impressions_and_clicks(11, 3_000, 4);
    let count = |want: fn(&Result<LabelEvent<'_>, _>) -> bool| {
        stream
            .iter()
            .filter(|(_, r)| want(&LabelEvent::parse(r)))
            .count()
    };
    let impressions = count(|e| matches!(e, Ok(LabelEvent::Impression { .. })));
    let clicks = count(|e| matches!(e, Ok(LabelEvent::Click { .. })));
    let mut dead: Vec<Vec<u8>> = stream
        .iter()
        .filter(|(_, r)| LabelEvent::parse(r).is_err())
        .map(|(_, r)| r.clone())
        .collect();
    assert!(!dead.is_empty());

    let (topic, dead_letter_topic) = fresh_topics("labels");
    let mut producer = LineProducer::new(&brokers(), &topic, 4).unwrap();
    for (_, record) in &stream {
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();

    let registry_dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("ctr")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: broker(),
            topic: topic.clone(),
            group_id: unique("labels-group"),
            dead_letter_topic: dead_letter_topic.clone(),
            partitions: 4,
            idle_ms: 200,
            stop_after_records: None,
            event_time_field: None,
            on_missing_offsets: Default::default(),
            kafka: Default::default(),
            kafka_file: None,
        })
        .labels(LabelsSpec {
            window_ms: 200,
            late: LatePolicy::Drop,
            max_pending: LabelsSpec::default_max_pending(),
        })
        .features(HASHED)
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry_dir.path().to_owned(),
            every_events: 1_000,
            every_seconds: 1,
            registry_topic: None,
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        })
        .progress(ProgressSpec {
            epoch_ms: 50,
            interval_ms: 0,
        })
        .build()
        .unwrap();
    let job = Job::start(spec, RunOptions::local(2)).unwrap();
    let stats = job.stats().clone();
    wait_for("every record to be read", Duration::from_secs(120), || {
        stats.source.records.load(Ordering::Relaxed) as usize >= stream.len()
    });
    job.stop();
    let report = job.wait().unwrap();

    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as usize;
    let labels = &stats.labels;
    assert_eq!(load(&labels.impressions), impressions);
    assert_eq!(load(&labels.clicks), clicks);
    assert_eq!(load(&labels.pending), 0, "every window closed at the stop");
    // Every impression is labeled exactly once; how many clicks were in time depends on when
    // the records were read (the window is in processing-time epochs).
    let (positives, negatives) = (load(&labels.positives), load(&labels.negatives));
    assert_eq!(positives + negatives, impressions);
    assert!(positives > 0 && negatives > 0, "{positives} {negatives}");
    assert_eq!(
        report.learned as usize, impressions,
        "every impression learned once"
    );
    assert_eq!(report.dead_letters as usize, dead.len());
    assert!(report.model_version > 0, "a model was published");

    dead.sort();
    assert_eq!(read_dead_letters(&dead_letter_topic, dead.len()), dead);
}
