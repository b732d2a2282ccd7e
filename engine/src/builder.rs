//! The authoring API: a Rust builder that makes the same [`JobSpec`] a TOML file does.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::spec::{
    CheckpointSpec, GeneratorSpec, JobSpec, LabelsSpec, LearnerSpec, ProgressSpec, PublishSpec,
    RetrainSpec, SamplesSpec, ServeSpec, SinksSpec, SourceSpec,
};
use millrace_connectors::kafka::KafkaSourceConfig;
use millrace_models::{FeatureSpec, SchemaSpec};

/// Builds a [`JobSpec`] step by step: source → schema → features → learner → publish → serve.
#[derive(Clone, Debug, Default)]
pub struct JobBuilder {
    name: String,
    /// The source, or why its settings are not a TOML table.
    source: Option<std::result::Result<SourceSpec, String>>,
    generator: Option<GeneratorSpec>,
    schema: Option<SchemaSpec>,
    features: Option<FeatureSpec>,
    learner: Option<LearnerSpec>,
    publish: Option<PublishSpec>,
    serve: Option<ServeSpec>,
    progress: ProgressSpec,
    labels: Option<LabelsSpec>,
    checkpoint: Option<CheckpointSpec>,
    sinks: Option<SinksSpec>,
    samples: Option<SamplesSpec>,
    retrain: Option<RetrainSpec>,
}

impl JobSpec {
    /// A builder for a job named `name` (`[name]` in TOML).
    pub fn builder(name: &str) -> JobBuilder {
        JobBuilder {
            name: name.to_owned(),
            ..JobBuilder::default()
        }
    }
}

impl JobBuilder {
    /// The source (`[source]`).
    pub fn source(mut self, source: SourceSpec) -> Self {
        self.source = Some(Ok(source));
        self
    }

    /// Checkpoints of the job's state (`[checkpoint]`).
    pub fn checkpoint(mut self, checkpoint: CheckpointSpec) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Output topics (`[sinks]`).
    pub fn sinks(mut self, sinks: SinksSpec) -> Self {
        self.sinks = Some(sinks);
        self
    }

    /// The sample buffer (`[samples]`).
    pub fn samples(mut self, samples: SamplesSpec) -> Self {
        self.samples = Some(samples);
        self
    }

    /// The retraining stage (`[retrain]`).
    pub fn retrain(mut self, retrain: RetrainSpec) -> Self {
        self.retrain = Some(retrain);
        self
    }

    /// A Kafka source (`[source] type = "kafka"`).
    pub fn kafka_source(mut self, config: KafkaSourceConfig) -> Self {
        self.source = Some(SourceSpec::kafka(&config).map_err(|e| e.to_string()));
        self
    }

    /// The demo generator (`[generator]`).
    pub fn generator(mut self, generator: GeneratorSpec) -> Self {
        self.generator = Some(generator);
        self
    }

    /// The events' schema (`[schema]`; the Criteo preset when not given).
    pub fn schema(mut self, schema: SchemaSpec) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The features (`[features]`).
    pub fn features(mut self, features: FeatureSpec) -> Self {
        self.features = Some(features);
        self
    }

    /// The learner (`[learner]`).
    pub fn learner(mut self, learner: LearnerSpec) -> Self {
        self.learner = Some(learner);
        self
    }

    /// Publication (`[publish]`).
    pub fn publish(mut self, publish: PublishSpec) -> Self {
        self.publish = Some(publish);
        self
    }

    /// In-process serving (`[serve]`).
    pub fn serve(mut self, serve: ServeSpec) -> Self {
        self.serve = Some(serve);
        self
    }

    /// Epochs and progress (`[progress]`).
    pub fn progress(mut self, progress: ProgressSpec) -> Self {
        self.progress = progress;
        self
    }

    /// The label join of impressions and clicks (`[labels]`).
    pub fn labels(mut self, labels: LabelsSpec) -> Self {
        self.labels = Some(labels);
        self
    }

    /// The job spec, validated as a job file is, with the built-in catalog.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every missing part and every problem.
    pub fn build(self) -> Result<JobSpec> {
        self.build_in(&Catalog::builtin())
    }

    /// The job spec, validated as a job file is, with the source types, decoders and sink
    /// types of `catalog`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every missing part and every problem.
    pub fn build_in(self, catalog: &Catalog) -> Result<JobSpec> {
        let mut problems = Vec::new();
        let mut missing = |what: &str| problems.push(format!("missing section [{what}]"));
        if self.source.is_none() {
            missing("source");
        }
        if self.features.is_none() {
            missing("features");
        }
        if self.learner.is_none() {
            missing("learner");
        }
        if self.publish.is_none() {
            missing("publish");
        }
        if let Some(Err(why)) = &self.source {
            problems.push(format!("[source] the settings are not a TOML table: {why}"));
        }
        let (Some(Ok(source)), Some(features), Some(learner), Some(publish)) =
            (self.source, self.features, self.learner, self.publish)
        else {
            return Err(Error::Config { problems });
        };
        let spec = JobSpec {
            name: self.name,
            source,
            generator: self.generator,
            schema: self.schema.unwrap_or_else(SchemaSpec::preset_criteo),
            labels: self.labels,
            features,
            learner,
            publish,
            serve: self.serve,
            progress: self.progress,
            checkpoint: self.checkpoint,
            sinks: self.sinks,
            samples: self.samples,
            retrain: self.retrain,
        };
        let problems = spec.problems_in(catalog);
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(Error::Config { problems })
        }
    }
}
