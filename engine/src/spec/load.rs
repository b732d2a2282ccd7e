//! Reading a job file: the sections, the environment's overrides, then the checks of the values,
//! every problem reported at once.

use super::check::{check, Sections};
use super::env::apply_env;
use super::{
    CheckpointSpec, GeneratorSpec, JobSpec, LabelsSpec, LearnerSpec, ProgressSpec, PublishSpec,
    RetrainSpec, SamplesSpec, ServeSpec, SinksSpec, SourceSpec,
};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::section::{section, Read};
use millrace_models::{FeatureSpec, SchemaSpec};
use std::path::Path;

/// The top-level keys of a job file: `name` and the sections.
const SECTIONS: [&str; 14] = [
    "name",
    "source",
    "generator",
    "schema",
    "labels",
    "features",
    "learner",
    "publish",
    "serve",
    "progress",
    "checkpoint",
    "sinks",
    "samples",
    "retrain",
];

impl JobSpec {
    /// Reads, overrides from the environment and validates a job file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_in(path, &Catalog::builtin())
    }

    /// As [`JobSpec::from_file`], with the source types, decoders and sink types of `catalog`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_file_in(path: &Path, catalog: &Catalog) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        // Read without assuming the environment is UTF-8 (`env::vars` panics on a variable
        // that is not): only an override that is not is a problem.
        let mut problems = Vec::new();
        let mut overrides = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with("MILLRACE__")) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => overrides.push((key.to_owned(), value)),
                Err(_) => problems.push(format!("the value of `{key}` is not UTF-8")),
            }
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        match Self::from_toml_with_env_in(&text, overrides, (folder, catalog)) {
            Ok(_) if !problems.is_empty() => Err(Error::Config { problems }),
            Err(Error::Config { problems: more }) => {
                problems.extend(more);
                Err(Error::Config { problems })
            }
            other => other,
        }
    }

    /// Parses and validates a job from TOML text, without environment overrides.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_toml_in(text, &Catalog::builtin())
    }

    /// As [`JobSpec::from_toml`], with the source types, decoders and sink types of `catalog`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_toml_in(text: &str, catalog: &Catalog) -> Result<Self> {
        Self::from_toml_with_env_in(text, std::iter::empty(), (Path::new("."), catalog))
    }

    /// Parses a job from TOML text, applies `MILLRACE__SECTION__KEY` overrides from `env`, and
    /// validates it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        Self::from_toml_with_env_in(text, env, (Path::new("."), &Catalog::builtin()))
    }

    /// As [`JobSpec::from_toml_with_env`], with the source types, decoders and sink types of `catalog` and a source's
    /// relative paths read from `folder` (the job file's).
    pub(super) fn from_toml_with_env_in(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        (folder, catalog): (&Path, &Catalog),
    ) -> Result<Self> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            problems: vec![format!("not valid TOML: {}", e.message())],
        })?;
        let mut problems = apply_env(&mut table, env);
        for key in table.keys() {
            if key == "decode" {
                problems.push("`[decode]` is replaced by `[schema]`: `format = \"criteo\"` is `preset = \"criteo\"`, `format = \"json\"` is `preset = \"criteo\"` with `format = \"json\"`".to_owned());
            } else if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown key `{key}` (expected one of {})",
                    SECTIONS.join(", ")
                ));
            }
        }
        let name = match table.get("name") {
            Some(toml::Value::String(name)) => Some(name.clone()),
            Some(other) => {
                problems.push(format!(
                    "`name` must be a string (got {})",
                    other.type_str()
                ));
                None
            }
            None => {
                problems.push("missing `name`".to_owned());
                None
            }
        };
        let source = read_source(&table, (folder, catalog), &mut problems);
        let generator = section::<GeneratorSpec>(&table, "generator", false, &mut problems);
        let schema = section::<SchemaSpec>(&table, "schema", false, &mut problems);
        let labels = section::<LabelsSpec>(&table, "labels", false, &mut problems);
        let features = section::<FeatureSpec>(&table, "features", true, &mut problems);
        let learner = section::<LearnerSpec>(&table, "learner", true, &mut problems);
        let publish = section::<PublishSpec>(&table, "publish", true, &mut problems);
        let serve = section::<ServeSpec>(&table, "serve", false, &mut problems);
        let progress = section::<ProgressSpec>(&table, "progress", false, &mut problems);
        let checkpoint = section::<CheckpointSpec>(&table, "checkpoint", false, &mut problems);
        let samples = section::<SamplesSpec>(&table, "samples", false, &mut problems);
        let retrain = section::<RetrainSpec>(&table, "retrain", false, &mut problems);
        let sinks_table = untyped_sinks_left_out(&table, catalog, &mut problems);
        let sinks = match section::<SinksSpec>(&sinks_table, "sinks", false, &mut problems) {
            Read::Whole(mut sinks) => {
                resolve_sink_paths(&mut sinks, (folder, catalog));
                Read::Whole(sinks)
            }
            other => other,
        };
        // The values are checked wherever they could be read, so that a section with a bad key
        // does not hide another's value out of range.
        problems.extend(check(&Sections {
            catalog,
            name: name.as_ref(),
            source: source.known(),
            generator: generator.optional(),
            schema: schema
                .optional()
                .map(|s| s.cloned().unwrap_or_else(SchemaSpec::preset_criteo)),
            labels: labels.optional(),
            features: features.known(),
            learner: learner.known(),
            publish: publish.known(),
            serve: serve.optional(),
            progress: progress.or_default(),
            checkpoint: checkpoint.optional(),
            sinks: sinks.optional(),
            samples: samples.optional(),
            retrain: retrain.optional(),
        }));
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        match (name, source, features, learner, publish) {
            (
                Some(name),
                Read::Whole(source),
                Read::Whole(features),
                Read::Whole(learner),
                Read::Whole(publish),
            ) => Ok(JobSpec {
                name,
                source,
                generator: generator.whole(),
                schema: schema.whole().unwrap_or_else(SchemaSpec::preset_criteo),
                labels: labels.whole(),
                features,
                learner,
                publish,
                serve: serve.whole(),
                progress: progress.whole().unwrap_or_default(),
                checkpoint: checkpoint.whole(),
                sinks: sinks.whole(),
                samples: samples.whole(),
                retrain: retrain.whole(),
            }),
            _ => Err(Error::Config {
                problems: vec!["the job file is incomplete".to_owned()],
            }),
        }
    }

    /// Problems of the values (ranges, emptiness, consistency), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        self.problems_in(&Catalog::builtin())
    }

    /// As [`JobSpec::problems`], with the source types, decoders and sink types of `catalog`.
    pub fn problems_in(&self, catalog: &Catalog) -> Vec<String> {
        check(&Sections {
            catalog,
            name: Some(&self.name),
            source: Some(&self.source),
            generator: Some(self.generator.as_ref()),
            schema: Some(self.schema.clone()),
            labels: Some(self.labels.as_ref()),
            features: Some(&self.features),
            learner: Some(&self.learner),
            publish: Some(&self.publish),
            serve: Some(self.serve.as_ref()),
            progress: Some(self.progress.clone()),
            checkpoint: Some(self.checkpoint.as_ref()),
            sinks: Some(self.sinks.as_ref()),
            samples: Some(self.samples.as_ref()),
            retrain: Some(self.retrain.as_ref()),
        })
    }

    /// The job as TOML text, which [`JobSpec::from_toml`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a job spec serializes to TOML")
    }
}

/// The `[source]` section: its `type` looked up in `catalog` (every name it has listed when
/// the type is missing, with the keys no type takes), its relative paths made absolute from
/// `folder`. Its type's problems with its table are the checks'.
fn read_source(
    table: &toml::Table,
    (folder, catalog): (&Path, &Catalog),
    problems: &mut Vec<String>,
) -> Read<SourceSpec> {
    if let Some(toml::Value::Table(source)) = table.get("source") {
        if !source.contains_key("type") {
            problems.push(format!(
                "[source] missing field `type` (one of {})",
                catalog.quoted_source_names()
            ));
            problems.extend(keys_no_type_takes(source, catalog));
            return Read::Unreadable;
        }
    }
    match section::<SourceSpec>(table, "source", true, problems) {
        Read::Whole(mut source) => {
            if let Some(factory) = catalog.source_factory(&source.kind) {
                factory.resolve_paths(&mut source.config, folder);
            }
            Read::Whole(source)
        }
        other => other,
    }
}

/// The keys of a source table without a `type` that every type in `catalog` finds a problem
/// with, each with the first type's reason.
fn keys_no_type_takes(source: &toml::Table, catalog: &Catalog) -> Vec<String> {
    let mut found = Vec::new();
    for (key, value) in source {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        let prefix = format!("`{key}`: ");
        let reasons: Vec<Option<String>> = catalog
            .source_names()
            .into_iter()
            .filter_map(|name| catalog.source_factory(name))
            .map(|factory| {
                factory
                    .problems(&alone)
                    .into_iter()
                    .find(|p| p.starts_with(&prefix))
            })
            .collect();
        if let Some(Some(first)) = reasons
            .first()
            .filter(|_| reasons.iter().all(Option::is_some))
        {
            found.push(format!("[source] {first}"));
        }
    }
    found
}

/// Makes the relative paths of the outputs' sinks absolute from `folder`.
fn resolve_sink_paths(sinks: &mut SinksSpec, (folder, catalog): (&Path, &Catalog)) {
    let tables = [
        &mut sinks.dead_letters_sink,
        &mut sinks.predictions_sink,
        &mut sinks.metrics_sink,
    ];
    for sink in tables.into_iter().flatten() {
        if let Some(factory) = catalog.sink_factory(&sink.kind) {
            factory.resolve_paths(&mut sink.config, folder);
        }
    }
}

/// The `[sinks]` keys that take a sink table.
const SINK_KEYS: [&str; 3] = ["dead_letters_sink", "predictions_sink", "metrics_sink"];

/// `table` with each `[sinks]` table that has no `type` left out, and reported with the sink
/// types there are (serde would name neither the table nor the types).
fn untyped_sinks_left_out(
    table: &toml::Table,
    catalog: &Catalog,
    problems: &mut Vec<String>,
) -> toml::Table {
    let mut table = table.clone();
    if let Some(toml::Value::Table(sinks)) = table.get_mut("sinks") {
        let untyped: Vec<String> = sinks
            .iter()
            .filter(|(key, value)| {
                SINK_KEYS.contains(&key.as_str())
                    && value.as_table().is_some_and(|t| !t.contains_key("type"))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in untyped {
            sinks.remove(&key);
            problems.push(format!(
                "[sinks] `{key}`: missing field `type` (one of {})",
                catalog.quoted_sink_names()
            ));
        }
    }
    table
}
