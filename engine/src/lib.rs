//! The millrace engine: the job spec (TOML) and its authoring API, assembling and running the
//! dataflow, the metrics, the online benchmark, and the `millrace` binary.
//!
//! A job is `source → schema → features → learner → publish → serve`. The TOML file and the
//! Rust builder map one to one:
//!
//! ```
//! use millrace_engine::spec::{JobSpec, LearnerSpec, PublishSpec};
//! use millrace_engine::KafkaSourceConfig;
//! use millrace_models::{FeatureSpec, FtrlParams};
//!
//! let spec = JobSpec::builder("ctr")
//!     .kafka_source(KafkaSourceConfig {
//!         bootstrap_servers: "embedded".into(),
//!         topic: "criteo".into(),
//!         group_id: "millrace-ctr".into(),
//!         dead_letter_topic: "criteo-dead-letters".into(),
//!         partitions: 4,
//!         idle_ms: 1000,
//!         stop_after_records: None,
//!         event_time_field: None,
//!         on_missing_offsets: Default::default(),
//!         kafka: Default::default(),
//!         kafka_file: None,
//!     })
//!     .features(FeatureSpec::Hashed { hash_bits: 20 })
//!     .learner(LearnerSpec::Ftrl(FtrlParams::default()))
//!     .publish(PublishSpec { registry: "target/registry".into(), ..PublishSpec::default() })
//!     .build()
//!     .unwrap();
//! assert_eq!(JobSpec::from_toml(&spec.to_toml()).unwrap(), spec);
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod brokers;
pub mod builder;
pub mod catalog;
pub mod checkpoint;
pub mod error;
pub mod job;
pub mod logs;
pub mod metrics;
pub mod secret;
mod section;
pub mod spec;

pub use builder::JobBuilder;
pub use error::{CheckpointError, Error, Result, WorkerError};
pub use job::{peers, Cluster, Job, JobReport, RunOptions, RunningJob, StopHandle};
pub use millrace_connectors::kafka::KafkaSourceConfig;
pub use spec::JobSpec;
