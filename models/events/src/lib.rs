//! Events as millrace reads them: raw records and dead letters, declared schemas and their
//! parser, FeatureMaps (fitted per epoch, transforming events into sparse rows, hashed features
//! among them), the Criteo preset, and the generators of synthetic events.
//!
//! Nothing here learns or serves: the learners (`millrace-learners`) and the artifacts
//! (`millrace-artifacts`) build on these rows, and `millrace-models` gathers all three.
#![warn(missing_docs)]

pub mod criteo;
pub mod decode;
pub mod features;
pub mod fmap;
pub mod hash;
pub mod labels;
pub mod logistic;
pub mod record;
pub mod schema;
pub mod synth;

pub use criteo::{CriteoEvent, CriteoFeatures};
pub use decode::{DecodeError, Decoder};
pub use features::FeatureSpec;
pub use fmap::{CsrBatch, EventBatch, FeatureMap, FeatureMapSpec};
pub use record::{event_time_ms, DeadLetter, Position, RawRecord};
pub use schema::{Schema, SchemaSpec};
