//! Timely dataflow operators of millrace.
//!
//! Operators are verbs, each an extension trait or function in its own module:
//!
//! - [`ingest_partitions`] turns a partitioned source into a timely stream in event-time epochs,
//!   driven by per-partition watermarks;
//! - [`checkpoint`] gathers every stateful operator's state, epoch by epoch, into consistent
//!   checkpoints;
//! - [`Decode`] splits raw records into Criteo events and dead letters;
//! - [`ParseEvents`], [`FitFeatureMap`] and [`TransformRows`] parse events, fit a versioned
//!   FeatureMap across all workers and transform events into sparse rows with it ([`Featurize`]
//!   does the last two over one stream without copying it);
//! - [`TrainOnline`] featurizes events, learns an FTRL model or a factorization machine on every
//!   worker with progressive validation, keeps the workers' replicas one model by all-reduce,
//!   and publishes model versions to the registry; [`TrainRows`] does the same from FeatureMap
//!   rows, across FeatureMap versions;
//! - [`JoinLabels`] joins impressions and delayed clicks into labeled examples;
//! - [`Deliver`] hands a stream's records to a sink (dead letters to Kafka, for example).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod decode;
pub mod deliver;
pub mod featurize;
pub mod labels;
pub mod source;
pub mod train;

pub use decode::{Decode, DecodeStats};
pub use deliver::{Deliver, RecordSink};
pub use featurize::{
    Featurize, FeaturizeStats, Featurized, FitFeatureMap, ParseEvents, TransformRows,
};
pub use labels::{JoinLabels, LabelJoinConfig, LabelJoinStats, LatePolicy};
pub use source::{
    ingest_partitions, now_ms, EventTime, PartitionReader, PartitionStats, Polled, SourceStats,
    Stop, HOLD_BYTES, MAX_FUTURE,
};
pub use train::{
    Mirror, MirrorFn, Prediction, PublishPolicy, QualitySummary, TrainEvent, TrainOnline,
    TrainRows, TrainerConfig, TrainerStats, PROGRESSIVE_WINDOW,
};
