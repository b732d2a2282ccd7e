//! The checks of a job's values: ranges, emptiness and consistency across sections, each problem
//! naming its section and key.

use super::{
    CheckpointSpec, GeneratorSpec, LabelsSpec, LearnerSpec, ProgressSpec, PublishSpec, RetrainSpec,
    SamplesSpec, ServeSpec, SinksSpec, SourceSpec,
};
use crate::catalog::Catalog;
use millrace_connectors::kafka::{KafkaSourceConfig, EMBEDDED};
use millrace_models::architecture::Architecture;
use millrace_models::embeddings::MAX_LEARNING_RATE;
use millrace_models::{FeatureSpec, Schema, SchemaSpec};

/// The sections whose values can be checked: `None` where a section could not be read, so
/// that only the checks that need it are skipped.
pub(super) struct Sections<'a> {
    /// The source types there are.
    pub(super) catalog: &'a Catalog,
    pub(super) name: Option<&'a String>,
    pub(super) source: Option<&'a SourceSpec>,
    pub(super) generator: Option<Option<&'a GeneratorSpec>>,
    pub(super) schema: Option<SchemaSpec>,
    pub(super) labels: Option<Option<&'a LabelsSpec>>,
    pub(super) features: Option<&'a FeatureSpec>,
    pub(super) learner: Option<&'a LearnerSpec>,
    pub(super) publish: Option<&'a PublishSpec>,
    pub(super) serve: Option<Option<&'a ServeSpec>>,
    pub(super) progress: Option<ProgressSpec>,
    pub(super) checkpoint: Option<Option<&'a CheckpointSpec>>,
    pub(super) sinks: Option<Option<&'a SinksSpec>>,
    pub(super) samples: Option<Option<&'a SamplesSpec>>,
    pub(super) retrain: Option<Option<&'a RetrainSpec>>,
}

/// Problems of the values (ranges, emptiness, consistency), each naming its key: every check
/// whose sections could be read.
pub(super) fn check(job: &Sections<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(name) = job.name {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!(
                "`name` must be letters, digits, `-` or `_` (got {name:?})"
            ));
        }
    }
    let mut add = |section: &str, list: Vec<String>| {
        problems.extend(list.into_iter().map(|p| format!("[{section}] {p}")));
    };
    if let Some(source) = job.source {
        add("source", job.catalog.source_problems(source));
        if let (Some(Some(_)), false) = (job.generator, source.kind == "kafka") {
            add(
                "generator",
                vec![format!(
                    "it writes into a Kafka topic: a `{}` source reads none (give the `generator` source's keys in `[source]` instead)",
                    source.kind
                )],
            );
        }
    }
    let kafka_settings = job.source.and_then(SourceSpec::as_kafka);
    let kafka = kafka_settings.as_ref();
    let compiled = job.schema.as_ref().map(SchemaSpec::compile);
    if let Some(Err(list)) = &compiled {
        add("schema", list.clone());
    }
    if let Some(Err(problem)) = job.schema.as_ref().map(|s| job.catalog.decoder_of(s)) {
        add("schema", vec![problem]);
    }
    let schema = compiled.and_then(Result::ok);
    let preset = job.schema.as_ref().map(|s| s.preset.is_some());
    let json = job.schema.as_ref().map(|s| s.format() == Some("json"));
    if let (Some(kafka), Some(true), Some(false)) = (kafka, preset, json) {
        if kafka.event_time_field.is_some() {
            add(
                "source",
                vec![
                    "`event_time_field` needs the criteo preset's JSON records (`[schema] preset = \"criteo\"`, `format = \"json\"`); a declared schema names its `time` field"
                        .to_owned(),
                ],
            );
        }
    }
    if let (Some(kafka), Some(false)) = (kafka, preset) {
        if kafka.event_time_field.is_some() {
            add(
                "source",
                vec!["`event_time_field` is for the criteo preset; a declared schema names its `time` field".to_owned()],
            );
        }
    }
    let criteo_lines = preset == Some(true) && json == Some(false);
    if let (Some(Some(_)), Some(_)) = (job.labels, &job.schema) {
        if !criteo_lines {
            add(
                "schema",
                vec!["`[labels]` joins `imp` and `clk` lines of the criteo preset's tab-separated events only".to_owned()],
            );
        }
    }
    if let Some(Some(generator)) = job.generator {
        let mut list = Vec::new();
        if !(generator.rows_per_sec >= 0.0 && generator.rows_per_sec.is_finite()) {
            list.push(format!(
                "`rows_per_sec` must be >= 0 (got {})",
                generator.rows_per_sec
            ));
        } else if generator.rows_per_sec == 0.0
            && kafka.is_some_and(|k| k.bootstrap_servers == EMBEDDED)
        {
            // librdkafka's mock broker keeps a bounded window per partition: a generator that
            // outruns the job would have events deleted before they are read.
            list.push("`rows_per_sec` must be > 0 with the embedded broker, which keeps only a bounded window of records".to_owned());
        }
        list.extend(crate::catalog::generator::interaction_problems(
            generator.interactions,
            generator.interaction_strength,
        ));
        if let Some(Some(_)) = job.labels {
            list.push(
                "it writes labeled events of `[schema]`, not the `imp` and `clk` lines `[labels]` joins".to_owned(),
            );
        }
        add("generator", list);
    }
    if let Some(Some(labels)) = job.labels {
        if labels.max_pending == 0 {
            add(
                "labels",
                vec!["`max_pending` must be > 0 (got 0)".to_owned()],
            );
        }
        if labels.window_ms == 0 {
            add("labels", vec!["`window_ms` must be > 0 (got 0)".to_owned()]);
        }
    }
    if let Some(features) = job.features {
        match (features, &schema) {
            (FeatureSpec::Hashed { .. }, _) if preset == Some(false) => add(
                "features",
                vec!["`type = \"hashed\"` reads the criteo preset only: hash another schema's fields with `type = \"map\"` and `hash` transforms".to_owned()],
            ),
            (FeatureSpec::Hashed { .. }, _) => {
                add("features", features.problems(&Schema::criteo()))
            }
            (FeatureSpec::Map(_), Some(schema)) => add("features", features.problems(schema)),
            (FeatureSpec::Map(_), None) => {}
        }
    }
    if let Some(learner) = job.learner {
        add("learner", learner.problems());
    }
    if let Some(publish) = job.publish {
        let mut list = Vec::new();
        if publish.registry.as_os_str().is_empty() {
            list.push("`registry` must name a directory".to_owned());
        }
        if publish.every_events == 0 {
            list.push("`every_events` must be > 0 (got 0)".to_owned());
        }
        if publish.every_seconds == 0 {
            list.push("`every_seconds` must be > 0 (got 0)".to_owned());
        }
        match publish.registry_topic.as_deref() {
            Some(topic) if topic.trim().is_empty() => {
                list.push("`registry_topic` must not be empty".to_owned());
            }
            Some(topic) => {
                // Model versions sent into a topic of events (or events into the registry's)
                // would be read as what they are not.
                let sinks = job.sinks.flatten().map(|s| sink_topics(s, job.catalog));
                let mut taken = source_topics(job, kafka);
                taken.extend(sinks.into_iter().flatten().map(|(_, t)| t));
                if taken.iter().any(|t| t == topic) {
                    list.push(format!(
                        "`registry_topic` must differ from the source's and the sinks' topics (got {topic:?})"
                    ));
                }
            }
            None => {}
        }
        if publish.registry_key_file.is_some() && publish.registry_topic.is_none() {
            list.push(
                "`registry_key_file` signs the versions of `registry_topic`, which is not set"
                    .to_owned(),
            );
        }
        add("publish", list);
    }
    if let Some(Some(serve)) = job.serve {
        if serve.bind.parse::<std::net::SocketAddr>().is_err() {
            add(
                "serve",
                vec![format!(
                    "`bind` must be an address like 127.0.0.1:8080 (got {:?})",
                    serve.bind
                )],
            );
        }
    }
    if let Some(Some(samples)) = job.samples {
        add("samples", samples_problems(samples, job.checkpoint));
    }
    if let Some(Some(retrain)) = job.retrain {
        add("retrain", retrain_problems(retrain, job));
    }
    if let Some(Some(checkpoint)) = job.checkpoint {
        let mut list = Vec::new();
        if checkpoint.state_dir.as_os_str().is_empty() {
            list.push("`state_dir` must name a directory".to_owned());
        }
        if checkpoint.max_failures == 0 {
            list.push("`max_failures` must be >= 1 (got 0)".to_owned());
        }
        if checkpoint.keep == 0 {
            list.push("`keep` must be >= 1 (got 0)".to_owned());
        }
        add("checkpoint", list);
    }
    if let Some(Some(sinks)) = job.sinks {
        let mut list = Vec::new();
        let topics = sink_topics(sinks, job.catalog);
        let source = source_topics(job, kafka);
        for (key, topic) in &topics {
            if topic.trim().is_empty() {
                // A sink table's own check says so for its `topic`.
                if key.ends_with("_topic") {
                    list.push(format!("`{key}` must not be empty"));
                }
            } else if source.contains(topic) {
                // A dead-letter sink may name the dead letters' own topic.
                let own = *key == "dead_letters_sink" && source.last() == Some(topic);
                if !own {
                    list.push(format!(
                        "`{key}` must differ from the source's topics (got {topic:?})"
                    ));
                }
            }
        }
        for (i, (a, topic)) in topics.iter().enumerate() {
            for (b, other) in &topics[i + 1..] {
                // A table and its shorthand for one output are reported as both given.
                let one_output = a.split('_').next() == b.split('_').next();
                if topic == other && !topic.trim().is_empty() && !one_output {
                    list.push(format!("`{a}` and `{b}` must differ"));
                }
            }
        }
        // Each output's sink table, with the key that is short for a Kafka one.
        let tables = [
            ("dead_letters_sink", &sinks.dead_letters_sink, ("", &None)),
            (
                "predictions_sink",
                &sinks.predictions_sink,
                ("predictions_topic", &sinks.predictions_topic),
            ),
            (
                "metrics_sink",
                &sinks.metrics_sink,
                ("metrics_topic", &sinks.metrics_topic),
            ),
        ];
        for (key, table, (short_key, short)) in tables {
            let Some(table) = table else { continue };
            list.extend(
                job.catalog
                    .sink_problems(table)
                    .into_iter()
                    .map(|p| format!("`{key}`: {p}")),
            );
            if short.is_some() {
                list.push(format!(
                    "`{key}` and `{short_key}` both name the same output's sink: give one"
                ));
            }
        }
        if sinks.metrics_interval_ms == 0 {
            list.push("`metrics_interval_ms` must be > 0 (got 0)".to_owned());
        }
        add("sinks", list);
    }
    if job.progress.as_ref().is_some_and(|p| p.epoch_ms == 0) {
        add(
            "progress",
            vec!["`epoch_ms` must be > 0 (got 0)".to_owned()],
        );
    }
    problems
}

/// The Kafka topic of each output that goes to one, by the key that names it: the
/// `*_topic` shorthands, and the `*_sink` tables whose type writes a topic.
fn sink_topics(sinks: &SinksSpec, catalog: &Catalog) -> Vec<(&'static str, String)> {
    let table_topic = |table: &Option<crate::spec::SinkSpec>| {
        let table = table.as_ref()?;
        catalog
            .sink_factory(&table.kind)?
            .kafka_topic(&table.config)
    };
    let outputs = [
        ("dead_letters_sink", table_topic(&sinks.dead_letters_sink)),
        ("predictions_topic", sinks.predictions_topic.clone()),
        ("predictions_sink", table_topic(&sinks.predictions_sink)),
        ("metrics_topic", sinks.metrics_topic.clone()),
        ("metrics_sink", table_topic(&sinks.metrics_sink)),
    ];
    outputs
        .into_iter()
        .filter_map(|(key, topic)| Some((key, topic?)))
        .collect()
}

/// The topics the source's side of the job writes or reads: a `kafka` source's topic and its
/// dead letters' (last), or for another source the dead letters' default topic (when
/// `[sinks]` names no dead-letter sink).
fn source_topics(job: &Sections<'_>, kafka: Option<&KafkaSourceConfig>) -> Vec<String> {
    match kafka {
        Some(k) => vec![k.topic.clone(), k.dead_letter_topic.clone()],
        None => {
            let own_sink = job
                .sinks
                .flatten()
                .is_some_and(|s| s.dead_letters_sink.is_some());
            match (job.name, own_sink) {
                (Some(name), false) => vec![format!("{name}-dead-letters")],
                _ => Vec::new(),
            }
        }
    }
}

/// Problems of `[samples]`: its sizes, and a directory to keep it in.
fn samples_problems(
    samples: &SamplesSpec,
    checkpoint: Option<Option<&CheckpointSpec>>,
) -> Vec<String> {
    let mut list = Vec::new();
    if samples.max_age_seconds == 0 {
        list.push("`max_age_seconds` must be >= 1 (got 0)".to_owned());
    }
    if samples.segment_bytes < 4096 {
        list.push(format!(
            "`segment_bytes` must be >= 4096 (got {})",
            samples.segment_bytes
        ));
    }
    let least = samples.segment_bytes.saturating_mul(4);
    if samples.max_bytes < least {
        list.push(format!(
            "`max_bytes` must be at least 4 × `segment_bytes` ({least}; got {})",
            samples.max_bytes
        ));
    }
    if samples
        .dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        list.push("`dir` must name a directory".to_owned());
    }
    // A `[checkpoint]` that could not be read says so itself.
    if samples.dir.is_none() && matches!(checkpoint, Some(None)) {
        list.push("`dir` is needed in a job without `[checkpoint]` (whose `state_dir` holds the buffer otherwise)".to_owned());
    }
    list
}

/// Problems of `[retrain]`: its values, and what it needs of the other sections (a sample
/// buffer, a FeatureMap, a name to publish under that is not the online model's).
fn retrain_problems(retrain: &RetrainSpec, job: &Sections<'_>) -> Vec<String> {
    let mut list = Vec::new();
    if !cfg!(feature = "deep") {
        list.push(
            "this binary was built without the deep models (the engine's `deep` feature)"
                .to_owned(),
        );
    }
    if !matches!(retrain.model.as_str(), "deepfm" | "dcnv2") {
        list.push(format!(
            "`model` must be \"deepfm\" or \"dcnv2\" (got {:?})",
            retrain.model
        ));
    }
    if retrain.every_seconds == 0 {
        list.push("`every_seconds` must be >= 1 (got 0)".to_owned());
    }
    if !(retrain.holdout > 0.0 && retrain.holdout < 1.0) {
        list.push(format!(
            "`holdout` must be in (0, 1) (got {})",
            retrain.holdout
        ));
    }
    let sizes = [
        ("embedding_dim", retrain.embedding_dim),
        ("batch_size", retrain.batch_size),
        ("passes", retrain.passes),
        ("min_rows", retrain.min_rows),
        ("threads", retrain.threads),
    ];
    for (key, value) in sizes {
        if value == 0 {
            list.push(format!("`{key}` must be >= 1 (got 0)"));
        }
    }
    if retrain.mlp.contains(&0) {
        list.push(format!("`mlp` widths must be >= 1 (got {:?})", retrain.mlp));
    }
    if retrain.ring_port_offset == 0 {
        list.push(
            "`ring_port_offset` must be >= 1 (the ranks' ring cannot share timely's ports)"
                .to_owned(),
        );
    }
    if !(retrain.learning_rate > 0.0 && retrain.learning_rate <= MAX_LEARNING_RATE) {
        list.push(format!(
            "`learning_rate` must be in (0, {MAX_LEARNING_RATE}] (got {})",
            retrain.learning_rate
        ));
    }
    list.extend(
        retrain
            .embeddings
            .problems()
            .into_iter()
            .map(|p| format!("`embeddings`: {p}")),
    );
    for (key, value) in [
        ("auc_tolerance", retrain.auc_tolerance),
        ("logloss_tolerance", retrain.logloss_tolerance),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            list.push(format!("`{key}` must be a number >= 0 (got {value})"));
        }
    }
    if !matches!(retrain.device.as_str(), "auto" | "cpu" | "cuda")
        && !retrain.device.starts_with("cuda:")
    {
        list.push(format!(
            "`device` must be auto, cpu, cuda or cuda:N (got {:?})",
            retrain.device
        ));
    }
    if let Some(name) = job.name {
        let published = retrain.published_name(name);
        if published == *name
            || published.is_empty()
            || !published
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            list.push(format!("`publish_as` must be letters, digits, `-` or `_`, and not the job's name (got {published:?})"));
        }
    }
    if matches!(job.samples, Some(None)) {
        list.push("it trains on the sample buffer: add `[samples]`".to_owned());
    }
    // The model's sizes, within what an artifact may hold, over the FeatureMap's fields.
    let fields = job
        .schema
        .as_ref()
        .and_then(|schema| schema.compile().ok())
        .zip(job.features)
        .and_then(|(schema, features)| features.compile(&schema).ok())
        .map(|layout| layout.features.len());
    if let Some(fields) = fields {
        let architecture = match retrain.model.as_str() {
            "dcnv2" => Architecture::DcnV2 {
                fields,
                embedding_dim: retrain.embedding_dim,
                cross_layers: retrain.cross_layers,
                mlp: retrain.mlp.clone(),
            },
            _ => Architecture::DeepFm {
                fields,
                embedding_dim: retrain.embedding_dim,
                mlp: retrain.mlp.clone(),
            },
        };
        list.extend(architecture.problems());
    }
    if job
        .features
        .is_some_and(|f| !matches!(f, FeatureSpec::Map(_)))
    {
        list.push("its fields are a FeatureMap's: `[features] type = \"map\"`".to_owned());
    }
    list
}
