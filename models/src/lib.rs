//! The model side of millrace: declared schemas and their parser, FeatureMaps (hashed features
//! among them), the Criteo generator's events, the FTRL-Proximal learner and factorization machine, progressive-validation metrics, model artifacts and the registry, and the
//! all-reduce bookkeeping that keeps the workers' replicas of a learner equal.
//!
//! Nothing here knows about timely, Kafka or HTTP: the dataflow (`millrace-operators`), the
//! connectors and the serving crate all share this code, so the transform a model was trained
//! with is by construction the transform it is served with.
#![warn(missing_docs)]

pub mod allreduce;
pub mod architecture;
pub mod artifact;
pub mod criteo;
pub mod decode;
pub mod error;
pub mod eval;
pub mod features;
pub mod fixed;
pub mod fm;
pub mod fmap;
pub mod ftrl;
mod hash;
pub mod int8;
pub mod labels;
pub mod learner;
pub mod logistic;
pub mod record;
pub mod registry;
pub mod row_values;
pub mod schema;
pub mod synth;
pub mod table;

pub use artifact::{ModelArtifact, ModelMeta, ServedModel};
pub use criteo::{CriteoEvent, CriteoFeatures};
pub use decode::DecodeError;
pub use error::{Error, Result};
pub use eval::{exact_auc, AucAccumulator, LogLoss, WindowedAuc};
pub use features::FeatureSpec;
pub use fm::{Fm, FmParams};
pub use fmap::{CsrBatch, EventBatch, FeatureMap, FeatureMapSpec};
pub use ftrl::{Ftrl, FtrlParams};
pub use learner::{Learner, LearnerParams};
pub use record::{event_time_ms, DeadLetter, Position, RawRecord};
pub use registry::{LoadPace, Registry, VersionSource};
pub use schema::{Schema, SchemaSpec};
