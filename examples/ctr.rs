//! The demo job of `examples/ctr.toml`, built with the Rust authoring API instead of TOML.
//!
//! `cargo run -p millrace-examples --example ctr` runs it until Ctrl-C; with an argument
//! (`-- 100000`) it stops after that many events have been learned.

use millrace_engine::spec::{
    GeneratorSpec, JobSpec, LearnerSpec, ProgressSpec, PublishSpec, RetrainSpec, SamplesSpec,
    ServeSpec, SinksSpec,
};
use millrace_engine::{Job, KafkaSourceConfig, RunOptions};
use millrace_models::embeddings::{EmbeddingSpec, Placement, SparseOptimizer};
use millrace_models::{FeatureMapSpec, FeatureSpec, FtrlParams};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The same job as `examples/ctr.toml`.
fn ctr_job() -> anyhow::Result<JobSpec> {
    Ok(JobSpec::builder("ctr")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: "embedded".into(),
            topic: "criteo".into(),
            group_id: "millrace-ctr".into(),
            dead_letter_topic: "criteo-dead-letters".into(),
            partitions: 4,
            idle_ms: 1000,
            stop_after_records: None,
            event_time_field: None,
            on_missing_offsets: Default::default(),
            kafka: Default::default(),
            kafka_file: None,
        })
        .generator(GeneratorSpec {
            rows_per_sec: 20_000.0,
            rows: 0,
            seed: 7,
            interactions: 8,
            interaction_strength: 3.0,
        })
        .features(FeatureSpec::Map(FeatureMapSpec::criteo_default()))
        .learner(LearnerSpec::Ftrl(FtrlParams {
            alpha: 0.1,
            beta: 1.0,
            l1: 0.5,
            l2: 1.0,
        }))
        .publish(PublishSpec {
            registry: "target/registry".into(),
            every_events: 50_000,
            every_seconds: 5,
            registry_topic: None,
            registry_key_file: None,
            keep_versions: PublishSpec::default_keep_versions(),
        })
        .serve(ServeSpec {
            bind: "127.0.0.1:8080".into(),
        })
        .samples(SamplesSpec {
            dir: Some("target/samples".into()),
            max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            segment_seconds: 5,
            ..SamplesSpec::default()
        })
        .retrain(RetrainSpec {
            model: "deepfm".into(),
            every_seconds: 30,
            min_rows: 200_000,
            passes: 2,
            device: "auto".into(),
            mlp: vec![64, 32],
            batch_size: 1024,
            learning_rate: 0.002,
            embeddings: EmbeddingSpec {
                placement: Placement::Host,
                optimizer: SparseOptimizer::RowwiseAdagrad,
                learning_rate: 0.05,
                ..EmbeddingSpec::default()
            },
            ..RetrainSpec::default()
        })
        .sinks(SinksSpec {
            metrics_topic: Some("criteo-metrics".into()),
            ..SinksSpec::default()
        })
        .progress(ProgressSpec {
            epoch_ms: 200,
            interval_ms: 1000,
        })
        .build()?)
}

/// The job `examples/ctr.toml` describes.
fn toml_job() -> anyhow::Result<JobSpec> {
    Ok(JobSpec::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ctr.toml"
    )))?)
}

fn main() -> anyhow::Result<()> {
    let spec = ctr_job()?;
    let toml_spec = toml_job()?;
    anyhow::ensure!(
        spec == toml_spec,
        "ctr.rs and ctr.toml describe different jobs"
    );
    let stop_after: Option<u64> = std::env::args().nth(1).map(|a| a.parse()).transpose()?;
    let job = Job::start(spec, RunOptions::default())?;
    println!(
        "serving on {:?}, kafka at {}",
        job.serve_addr(),
        job.bootstrap_servers()
    );
    if let Some(limit) = stop_after {
        while job.stats().trainer.learned.load(Ordering::Relaxed) < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        job.stop();
    }
    let report = job.wait()?;
    println!("{report:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ctr_rs_and_ctr_toml_describe_the_same_job() {
        assert_eq!(super::ctr_job().unwrap(), super::toml_job().unwrap());
    }
}
