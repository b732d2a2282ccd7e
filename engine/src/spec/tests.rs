//! Tests of reading and checking job files.

use super::*;
use crate::catalog::Catalog;
use std::path::Path;

const GOOD: &str = r#"
name = "ctr"

[source]
type = "kafka"
bootstrap_servers = "embedded"
topic = "criteo"
dead_letter_topic = "criteo-dead-letters"

[features]
type = "hashed"
hash_bits = 20

[learner]
type = "ftrl"
alpha = 0.05
beta = 1.0
l1 = 0.5
l2 = 1.0

[publish]
registry = "target/registry"
"#;

fn problems(text: &str) -> Vec<String> {
    match JobSpec::from_toml(text) {
        Err(Error::Config { problems }) => problems,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn reads_a_good_job_with_defaults() {
    let spec = JobSpec::from_toml(GOOD).unwrap();
    assert_eq!(spec.name, "ctr");
    assert_eq!(spec.publish.every_events, 100_000);
    assert_eq!(spec.progress, ProgressSpec::default());
    assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
}

#[test]
fn lists_every_problem_at_once() {
    let bad = GOOD
        .replace("topic = \"criteo\"\n", "")
        .replace("hash_bits = 20", "hash_bits = \"twenty\"")
        .replace("alpha = 0.05", "alpha = 0.05\nalpah = 1")
        .replace("[publish]", "[publish]\nevery_events = 0\nflush_ms = 3")
        + "\n[serve]\nbind = 8080\n";
    let found = problems(&bad);
    let text = found.join("\n");
    assert!(text.contains("[features] `hash_bits`"), "{text}");
    assert!(text.contains("[learner] `alpah`: unknown field"), "{text}");
    assert!(
        text.contains("[publish] `flush_ms`: unknown field"),
        "{text}"
    );
    assert!(text.contains("[serve] `bind`"), "{text}");
    assert!(text.contains("[source] missing field `topic`"), "{text}");
    // The values of a section are checked once its bad keys are left out.
    assert!(
        text.contains("[publish] `every_events` must be > 0"),
        "{text}"
    );
    assert_eq!(found.len(), 6, "{text}");

    // With the types fixed, the semantic problems all show together.
    let semantic = GOOD
        .replace("topic = \"criteo\"", "topic = \"\"")
        .replace("[publish]", "[publish]\nevery_events = 0")
        .replace("alpha = 0.05", "alpha = -1.0");
    let text = problems(&semantic).join("\n");
    assert!(
        text.contains("[source] `topic` must not be empty"),
        "{text}"
    );
    assert!(
        text.contains("[publish] `every_events` must be > 0"),
        "{text}"
    );
    assert!(text.contains("[learner] `alpha`"), "{text}");
}

#[test]
fn every_missing_key_and_every_bad_element_is_named() {
    let source = "[source]\ntype = \"kafka\"\nbootstrap_servers = \"embedded\"\ntopic = \"criteo\"\ndead_letter_topic = \"criteo-dead-letters\"\n";
    // Only the tag: each required key is reported, not only the first.
    let text = problems(&GOOD.replace(source, "[source]\ntype = \"kafka\"\n")).join("\n");
    for key in ["bootstrap_servers", "topic", "dead_letter_topic"] {
        assert!(
            text.contains(&format!("[source] missing field `{key}`")),
            "{text}"
        );
    }
    // No tag: it is reported, and the keys are still checked against every tag there is.
    let text = problems(&GOOD.replace(
        source,
        "[source]\nbootstrap_servers = \"embedded\"\ntopc = \"x\"\n",
    ))
    .join("\n");
    assert!(
        text.contains("[source] missing field `type` (one of `kafka`, `file`, `generator`)"),
        "{text}"
    );
    assert!(text.contains("[source] `topc`: unknown field"), "{text}");
    // Each bad element of an array of tables, by its index.
    let features = "[features]\ntype = \"hashed\"\nhash_bits = 20\n";
    let map = "[features]\ntype = \"map\"\n\
               [[features.transform]]\nkind = \"bucketize\"\nfields = [\"I1\"]\nbukets = 4\n\
               [[features.transform]]\nkind = \"hash\"\nfields = [\"C1\"]\nbuckets = 8\n\
               [[features.transform]]\nkind = \"nope\"\nfields = [\"C2\"]\n";
    let text = problems(&GOOD.replace(features, map)).join("\n");
    assert!(text.contains("[features] `transform[0]`"), "{text}");
    assert!(!text.contains("`transform[1]`"), "{text}");
    assert!(text.contains("[features] `transform[2]`"), "{text}");
}

#[test]
fn topics_and_formats_that_contradict_each_other() {
    let text = problems(&GOOD.replace(
        "registry = \"target/registry\"",
        "registry = \"target/registry\"\nregistry_topic = \"criteo\"",
    ))
    .join("\n");
    assert!(
        text.contains("[publish] `registry_topic` must differ"),
        "{text}"
    );
    let text = problems(&format!(
        "{GOOD}\n[generator]\nrows_per_sec = 10.0\ninteractions = 65\ninteraction_strength = nan\n"
    ))
    .join("\n");
    assert!(
        text.contains("[generator] `interactions` must be at most 64")
            && text.contains("`interaction_strength` must be a number"),
        "{text}"
    );
}

#[test]
fn missing_sections_and_unknown_keys() {
    let text = problems("name = 3\nsorce = 1\n").join("\n");
    assert!(text.contains("unknown key `sorce`"), "{text}");
    assert!(text.contains("`name` must be a string"), "{text}");
    for section in ["source", "features", "learner", "publish"] {
        assert!(
            text.contains(&format!("missing section [{section}]")),
            "{text}"
        );
    }
    let text = problems(&GOOD.replace("type = \"kafka\"", "type = \"kafak\"")).join("\n");
    assert!(
        text.contains("[source]") && text.contains("kafak"),
        "{text}"
    );
}

#[test]
fn a_factorization_machine_is_a_learner_type() {
    let text = GOOD.replace(
        "type = \"ftrl\"\nalpha = 0.05\nbeta = 1.0\nl1 = 0.5\nl2 = 1.0",
        "type = \"fm\"\nfactors = 4",
    );
    let spec = JobSpec::from_toml(&text).unwrap();
    assert!(matches!(spec.learner, LearnerSpec::Fm(p) if p.factors == 4));
    let found = problems(&text.replace("factors = 4", "factors = 0\nfactor_lr = 1")).join("\n");
    assert!(
        found.contains("[learner] `factor_lr`: unknown field"),
        "{found}"
    );
}

#[test]
fn a_label_join_is_read_and_checked() {
    let text = format!("{GOOD}\n[labels]\nwindow_ms = 1000\nlate = \"correct\"\n");
    let spec = JobSpec::from_toml(&text).unwrap();
    let labels = spec.labels.unwrap();
    assert_eq!(labels.late, LatePolicy::Correct);
    assert_eq!(labels.window_epochs(spec.progress.epoch_ms), 5);
    assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);

    let bad = format!("{GOOD}\n[labels]\nwindow_ms = 0\nlate = \"keep\"\nspan = 1\n");
    let text = problems(&bad).join("\n");
    assert!(
        text.contains("[labels] `late`: unknown variant `keep`"),
        "{text}"
    );
    assert!(text.contains("[labels] `span`"), "{text}");
    let zero = format!("{GOOD}\n[labels]\nwindow_ms = 0\n");
    assert_eq!(
        problems(&zero),
        ["[labels] `window_ms` must be > 0 (got 0)"]
    );
}

#[test]
fn output_sinks_are_read_and_checked() {
    let text = format!("{GOOD}\n[sinks]\nmetrics_topic = \"ctr-metrics\"\n");
    let spec = JobSpec::from_toml(&text).unwrap();
    let sinks = spec.sinks.as_ref().unwrap();
    assert_eq!(sinks.metrics_topic.as_deref(), Some("ctr-metrics"));
    assert_eq!(sinks.metrics_interval_ms, 1000);
    assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);

    let bad = format!("{GOOD}\n[sinks]\nmetrics_topic = \"criteo\"\nmetrics_interval_ms = 0\npredictions_topic = \" \"\n");
    assert_eq!(
        problems(&bad),
        [
            "[sinks] `predictions_topic` must not be empty",
            "[sinks] `metrics_topic` must differ from the source's topics (got \"criteo\")",
            "[sinks] `metrics_interval_ms` must be > 0 (got 0)"
        ]
    );
    let same = format!("{GOOD}\n[sinks]\nmetrics_topic = \"out\"\npredictions_topic = \"out\"\n");
    assert_eq!(
        problems(&same),
        ["[sinks] `predictions_topic` and `metrics_topic` must differ"]
    );
    let unknown = format!("{GOOD}\n[sinks]\npredictions = \"p\"\n");
    assert!(problems(&unknown)[0].contains("[sinks] `predictions`: unknown field"));
}

#[test]
fn json_records_and_the_event_time_field_are_checked() {
    let named = GOOD.replace("[features]", "event_time_field = \"ts\"\n\n[features]");
    assert_eq!(
        problems(&named),
        ["[source] `event_time_field` needs the criteo preset's JSON records (`[schema] preset = \"criteo\"`, `format = \"json\"`); a declared schema names its `time` field"]
    );
    let json = format!("{named}\n[schema]\npreset = \"criteo\"\nformat = \"json\"\n");
    let spec = JobSpec::from_toml(&json).unwrap();
    // The schema's JSON reader takes the fields it names and passes over the time field.
    let layout = spec
        .features
        .compile(&spec.event_schema().unwrap())
        .unwrap();
    let mut batch = millrace_models::EventBatch::new(layout.schema.fields.len());
    millrace_models::fmap::Parser::new(&layout)
        .parse_record(
            br#"{"label": 1, "I1": 3, "ts": 1700000000000}"#,
            0,
            &mut batch,
        )
        .unwrap();
    assert_eq!(batch.labels, [true]);
    assert_eq!(batch.values[0], millrace_models::fmap::Value::Num(3.0));
    let joined = format!("{json}\n[labels]\nwindow_ms = 1000\n");
    assert_eq!(problems(&joined).len(), 1);
    assert!(problems(&named.replace("\"ts\"", "\" \""))
        .contains(&"[source] `event_time_field` must not be empty".to_owned()));
}

/// A declared schema's problems and the FeatureMap's against it come in one list.
#[test]
fn a_declared_schema_lists_every_problem_with_the_features() {
    let declared = GOOD.replace(
        "[features]\ntype = \"hashed\"\nhash_bits = 20",
        r#"[schema]
format = "csv"
fields = [
  { name = "click", type = "label" },
  { name = "site", type = "category" },
  { name = "site", type = "number" },
  { name = "price", type = "float" },
]

[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["site", "country"]
[[features.transform]]
kind = "bucketize"
fields = ["site"]
buckets = 10"#,
    );
    assert_eq!(
        problems(&declared),
        [
            "[schema] `fields[2]` (`site`): the name is given twice",
            "[schema] `fields[3]` (`price`): unknown type \"float\" (expected one of skip, label, time, category, number, tokens)",
        ]
    );
    let fixed = declared
        .replace("{ name = \"site\", type = \"number\" },\n", "")
        .replace("\"float\"", "\"number\"");
    assert_eq!(
        problems(&fixed),
        [
            "[features] `transform[0]` (one_hot): no field `country`",
            "[features] `transform[1]` (bucketize): `site` is a category, not a number",
        ]
    );
    let good = fixed
        .replace(", \"country\"", "")
        .replace("[\"site\"]\nbuckets", "[\"price\"]\nbuckets");
    let spec = JobSpec::from_toml(&good).unwrap();
    assert_eq!(spec.event_schema().unwrap().fields, ["site", "price"]);
    assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    let features = good.find("[features]").unwrap()..good.find("[learner]").unwrap();
    let mut hashed = good.clone();
    hashed.replace_range(
        features,
        "[features]\ntype = \"hashed\"\nhash_bits = 20\n\n",
    );
    assert_eq!(
        problems(&hashed),
        ["[features] `type = \"hashed\"` reads the criteo preset only: hash another schema's fields with `type = \"map\"` and `hash` transforms"]
    );
}

#[test]
fn the_old_decode_section_says_what_replaces_it() {
    let old = format!("{GOOD}\n[decode]\nformat = \"criteo\"\n");
    assert_eq!(
        problems(&old),
        ["`[decode]` is replaced by `[schema]`: `format = \"criteo\"` is `preset = \"criteo\"`, `format = \"json\"` is `preset = \"criteo\"` with `format = \"json\"`"]
    );
}

#[test]
fn a_file_source_is_checked_and_its_path_resolved() {
    let source = GOOD.find("[source]").unwrap()..GOOD.find("[features]").unwrap();
    let mut file = GOOD.to_owned();
    file.replace_range(
        source,
        "[source]\ntype = \"file\"\npath = \"events.tsv\"\nrows_per_sec = -1.0\n\n",
    );
    let generated = format!("{file}\n[generator]\nrows_per_sec = 10.0\n");
    assert_eq!(
        problems(&generated),
        [
            "[source] `rows_per_sec` must be > 0 (got -1)",
            "[generator] it writes into a Kafka topic: a `file` source reads none (give the `generator` source's keys in `[source]` instead)",
        ]
    );
    let checkpointed = format!("{file}\n[checkpoint]\nstate_dir = \"state\"\n");
    let spec = JobSpec::from_toml_with_env_in(
        &checkpointed.replace("rows_per_sec = -1.0", "repeat = true"),
        std::iter::empty(),
        (Path::new("/jobs"), &Catalog::builtin()),
    )
    .unwrap();
    let file = spec.source.as_file().expect("a file source");
    assert_eq!(file.path, Path::new("/jobs/events.tsv"));
    assert!(file.repeat);
}

#[test]
fn the_shipped_demo_job_is_valid() {
    let spec = JobSpec::from_toml(include_str!("../../../examples/ctr.toml")).unwrap();
    assert_eq!(spec.name, "ctr");
    assert!(spec.generator.is_some() && spec.serve.is_some());
    assert!(spec.samples.is_some() && spec.retrain.is_some());
    assert_eq!(
        spec.features,
        FeatureSpec::Map(millrace_models::FeatureMapSpec::criteo_default())
    );
    assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
}

#[test]
fn a_feature_map_spec_lists_every_problem() {
    let bad = GOOD.replace(
        "type = \"hashed\"\nhash_bits = 20\n",
        "type = \"map\"\n[[features.transform]]\nkind = \"bucketize\"\nfields = [\"Z9\"]\nbuckets = 0\n[[features.transform]]\nkind = \"one_hot\"\nfields = [\"C1\"]\nmin_count = 0\n",
    );
    let found = problems(&bad);
    assert!(found.len() >= 3, "{found:?}");
    assert!(
        found.iter().all(|p| p.starts_with("[features]")),
        "{found:?}"
    );
}

#[test]
fn an_unbounded_generator_needs_a_real_broker() {
    let text = format!("{GOOD}\n[generator]\nrows_per_sec = 0.0\n");
    let found = problems(&text).join("\n");
    assert!(
        found.contains("[generator] `rows_per_sec` must be > 0 with the embedded broker"),
        "{found}"
    );
    let real = text.replace("\"embedded\"", "\"127.0.0.1:9092\"");
    assert!(JobSpec::from_toml(&real).is_ok());
}

#[test]
fn environment_overrides_the_file() {
    let env = [
        ("MILLRACE__SOURCE__TOPIC".to_owned(), "other".to_owned()),
        ("MILLRACE__PUBLISH__EVERY_EVENTS".to_owned(), "7".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let spec = JobSpec::from_toml_with_env(GOOD, env).unwrap();
    let kafka = spec.source.as_kafka().expect("a kafka source");
    assert_eq!(kafka.topic, "other");
    assert_eq!(spec.publish.every_events, 7);
    // Every nesting level: a key of an inline table inside a section.
    let sinks = "\n[sinks]\ndead_letters_sink = { type = \"file\", path = \"a.jsonl\" }\n";
    let deep = [(
        "MILLRACE__SINKS__DEAD_LETTERS_SINK__PATH".to_owned(),
        "/tmp/b.jsonl".to_owned(),
    )];
    let spec = JobSpec::from_toml_with_env(&format!("{GOOD}{sinks}"), deep).unwrap();
    let sinks = spec.sinks.expect("[sinks]");
    let sink = sinks.dead_letters_sink.expect("a dead-letter sink");
    assert_eq!(sink.config["path"].as_str(), Some("/tmp/b.jsonl"));
    // Through a value that is not a table: a problem naming the variable, not a silent no-op.
    let through = [("MILLRACE__NAME__X".to_owned(), "x".to_owned())];
    match JobSpec::from_toml_with_env(GOOD, through) {
        Err(Error::Config { problems }) => {
            assert!(
                problems[0].contains("MILLRACE__NAME__X") && problems[0].contains("not a table"),
                "{problems:?}"
            )
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn an_outputs_sink_is_read_checked_and_its_path_resolved() {
    let sinks = "\n[sinks]\npredictions_topic = \"p\"\npredictions_sink = { type = \"file\", path = \"\" }\ndead_letters_sink = { type = \"nowhere\" }\nmetrics_sink = { type = \"kafka\", topic = \"m\", partitions = 2 }\n";
    let text = problems(&format!("{GOOD}{sinks}")).join("\n");
    for expected in [
        "[sinks] `dead_letters_sink`: `type`: unknown variant `nowhere`, expected one of `kafka`, `file`",
        "[sinks] `predictions_sink`: `path` must name a directory",
        "[sinks] `predictions_sink` and `predictions_topic` both name the same output's sink: give one",
        "[sinks] `metrics_sink`: `partitions`: unknown field",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    let good =
        "\n[sinks]\ndead_letters_sink = { type = \"file\", path = \"out\" }\nmetrics_topic = \"m\"\n";
    let spec = JobSpec::from_toml_with_env_in(
        &format!("{GOOD}{good}"),
        std::iter::empty(),
        (Path::new("/jobs"), &Catalog::builtin()),
    )
    .unwrap();
    let sinks = spec.sinks.unwrap();
    let dead = sinks.dead_letters_sink.clone().unwrap();
    assert_eq!(
        (dead.kind.as_str(), dead.config["path"].as_str()),
        ("file", Some("/jobs/out"))
    );
    let metrics = sinks.metrics().unwrap();
    assert_eq!(
        (metrics.kind.as_str(), metrics.config["topic"].as_str()),
        ("kafka", Some("m"))
    );
    assert!(sinks.predictions().is_none());
}

#[test]
fn a_kafka_sink_table_is_checked_against_the_other_topics() {
    let sinks = "\n[sinks]\npredictions_sink = { type = \"kafka\", topic = \"criteo\" }\nmetrics_sink = { type = \"kafka\", topic = \"m\" }\npredictions = 1\n";
    let text = problems(&format!("{GOOD}{sinks}")).join("\n");
    assert!(
        text.contains(
            "[sinks] `predictions_sink` must differ from the source's topics (got \"criteo\")"
        ),
        "{text}"
    );
    let twice = "\n[sinks]\nmetrics_topic = \"m\"\npredictions_sink = { type = \"kafka\", topic = \"m\" }\n";
    assert_eq!(
        problems(&format!("{GOOD}{twice}")),
        ["[sinks] `predictions_sink` and `metrics_topic` must differ"]
    );
    let untyped = "\n[sinks]\nmetrics_sink = { topic = \"m\" }\n";
    assert_eq!(
        problems(&format!("{GOOD}{untyped}")),
        ["[sinks] `metrics_sink`: missing field `type` (one of `kafka`, `file`)"]
    );
}

#[test]
fn another_sources_dead_letter_topic_is_checked_too() {
    let source = GOOD.find("[source]").unwrap()..GOOD.find("[features]").unwrap();
    let mut file = GOOD.to_owned();
    file.replace_range(
        source,
        "[source]\ntype = \"file\"\npath = \"events.tsv\"\n\n",
    );
    let sinks = "\n[sinks]\npredictions_topic = \"ctr-dead-letters\"\n";
    assert_eq!(
        problems(&format!("{file}{sinks}")),
        ["[sinks] `predictions_topic` must differ from the source's topics (got \"ctr-dead-letters\")"]
    );
    let both = "\n[sinks]\npredictions_topic = \"p\"\npredictions_sink = { type = \"kafka\", topic = \"p\" }\n";
    assert_eq!(
        problems(&format!("{GOOD}{both}")),
        ["[sinks] `predictions_sink` and `predictions_topic` both name the same output's sink: give one"]
    );
}
