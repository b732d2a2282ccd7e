//! Timely dataflow operators of millrace.
//!
//! Operators are verbs, each an extension trait or function in its own module:
//!
//! - [`ingest_partitions`] turns a partitioned source into a timely stream in event-time epochs,
//!   driven by per-partition watermarks;
//! - [`checkpoint`] gathers every stateful operator's state, epoch by epoch, into consistent
//!   checkpoints; each stateful operator declares its part beside its code, [`parts`] lists
//!   a job's parts, and operators are given theirs through [`Checkpoints`];
//! - [`ParseEvents`], [`FitFeatureMap`] and [`TransformRows`] parse events, fit a versioned
//!   FeatureMap across all workers and transform events into sparse rows with it ([`Featurize`]
//!   does the last two over one stream without copying it);
//! - [`TrainRows`] learns an FTRL model or a factorization machine from FeatureMap rows on
//!   every worker with progressive validation, across FeatureMap versions, keeps the workers'
//!   replicas one model by all-reduce, and publishes model versions to the registry;
//! - [`JoinLabels`] joins impressions and delayed clicks into labeled examples;
//! - [`BufferSamples`] keeps each epoch's rows in the sample buffer (Arrow IPC segments on
//!   disk) for the retraining stage;
//! - [`Deliver`] hands a stream's records to a sink (dead letters to Kafka, for example);
//! - [`ShareCheckpoints`] tells a cluster's workers the checkpoints each process writes, so
//!   that every process keeps those the cluster may restart from ([`retention`]).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod deliver;
pub mod durations;
pub mod error;
pub mod featurize;
pub mod labels;
mod part_spec;
pub mod parts;
pub mod retention;
pub mod samples;
pub mod source;
mod tally;
pub mod train;

pub use deliver::{Deliver, Outlet, RecordSink};
pub use error::BoxError;
pub use featurize::{
    Featurize, FeaturizeStats, Featurized, FitFeatureMap, ParseEvents, TransformRows,
};
pub use labels::{JoinLabels, LabelJoinConfig, LabelJoinStats, LatePolicy};
pub use part_spec::Checkpoints;
pub use parts::{dataflow_parts, source_parts};
pub use retention::{ClusterRetention, ShareCheckpoints};
pub use samples::{BufferSamples, SampleConfig, SampleStats};
pub use source::{
    ingest_partitions, now_ms, restored_positions, EventTime, PartitionReader, PartitionStats,
    Polled, SourceStats, Stop, HOLD_BYTES, MAX_FUTURE,
};
pub use train::{
    Mirror, MirrorFn, Prediction, PublishPolicy, QualitySummary, TrainRows, TrainerConfig,
    TrainerStats, PROGRESSIVE_WINDOW,
};
