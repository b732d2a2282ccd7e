//! The model side of millrace as one crate, gathering three: events and FeatureMaps
//! (`millrace-events`: records, declared schemas and their parser, FeatureMaps, the Criteo
//! preset and the generators), learners (`millrace-learners`: FTRL-Proximal and the
//! factorization machine, their architectures, progressive-validation metrics, the all-reduce
//! bookkeeping), and artifacts (`millrace-artifacts`: model artifacts, their served tables and
//! the registry). Each module keeps its path here, so `millrace_models::fmap::Parser` is the
//! events crate's parser.
//!
//! Nothing here knows about timely, Kafka or HTTP: the dataflow (`millrace-operators`), the
//! connectors and the serving crate all share this code, so the transform a model was trained
//! with is by construction the transform it is served with.
#![warn(missing_docs)]

pub use millrace_artifacts::{artifact, error, fixed, int8, registry, table, topic};
pub use millrace_events::{
    criteo, decode, features, fmap, labels, logistic, record, schema, synth,
};
pub use millrace_learners::{
    allreduce, architecture, embeddings, eval, fm, ftrl, learner, row_values,
};

pub use millrace_artifacts::{
    Error, LoadPace, ModelArtifact, ModelMeta, Registry, Result, ServedModel, VersionSource,
};
pub use millrace_events::{
    event_time_ms, CriteoEvent, CriteoFeatures, CsrBatch, DeadLetter, DecodeError, Decoder,
    EventBatch, FeatureMap, FeatureMapSpec, FeatureSpec, Position, RawRecord, Schema, SchemaSpec,
};
pub use millrace_learners::{
    exact_auc, AucAccumulator, Fm, FmParams, Ftrl, FtrlParams, Learner, LearnerParams, LogLoss,
    WindowedAuc,
};
