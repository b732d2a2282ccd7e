//! Reading a job file: the sections, the environment's overrides, then the checks of the values,
//! every problem reported at once.

use super::check::{check, Sections};
use super::env::apply_env;
use super::section::{section, Read};
use super::{
    CheckpointSpec, GeneratorSpec, JobSpec, LabelsSpec, LearnerSpec, ProgressSpec, PublishSpec,
    ServeSpec, SinksSpec, SourceSpec,
};
use crate::error::{Error, Result};
use millrace_models::{FeatureSpec, SchemaSpec};
use std::path::Path;

/// The top-level keys of a job file: `name` and the sections.
const SECTIONS: [&str; 12] = [
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
];

impl JobSpec {
    /// Reads, overrides from the environment and validates a job file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem found.
    pub fn from_file(path: &Path) -> Result<Self> {
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
        match Self::from_toml_with_env_in(&text, overrides, folder) {
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
        Self::from_toml_with_env(text, std::iter::empty())
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
        Self::from_toml_with_env_in(text, env, Path::new("."))
    }

    /// As [`JobSpec::from_toml_with_env`], with a `file` source's relative path read from
    /// `folder` (the job file's).
    pub(super) fn from_toml_with_env_in(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        folder: &Path,
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
        let source = match section::<SourceSpec>(&table, "source", true, &mut problems) {
            Read::Whole(SourceSpec::File(file)) => {
                Read::Whole(SourceSpec::File(file.resolved(folder)))
            }
            Read::Partial(SourceSpec::File(file)) => {
                Read::Partial(SourceSpec::File(file.resolved(folder)))
            }
            other => other,
        };
        let generator = section::<GeneratorSpec>(&table, "generator", false, &mut problems);
        let schema = section::<SchemaSpec>(&table, "schema", false, &mut problems);
        let labels = section::<LabelsSpec>(&table, "labels", false, &mut problems);
        let features = section::<FeatureSpec>(&table, "features", true, &mut problems);
        let learner = section::<LearnerSpec>(&table, "learner", true, &mut problems);
        let publish = section::<PublishSpec>(&table, "publish", true, &mut problems);
        let serve = section::<ServeSpec>(&table, "serve", false, &mut problems);
        let progress = section::<ProgressSpec>(&table, "progress", false, &mut problems);
        let checkpoint = section::<CheckpointSpec>(&table, "checkpoint", false, &mut problems);
        let sinks = section::<SinksSpec>(&table, "sinks", false, &mut problems);
        // The values are checked wherever they could be read, so that a section with a bad key
        // does not hide another's value out of range.
        problems.extend(check(&Sections {
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
            }),
            _ => Err(Error::Config {
                problems: vec!["the job file is incomplete".to_owned()],
            }),
        }
    }

    /// Problems of the values (ranges, emptiness, consistency), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        check(&Sections {
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
        })
    }

    /// The job as TOML text, which [`JobSpec::from_toml`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a job spec serializes to TOML")
    }
}
