//! `millrace bench online`: train FTRL in order on the first part of a file with progressive
//! validation, then evaluate on the held-out rest, and report one JSON line.
//!
//! The file is read into memory first; the timed part is decoding, featurizing, predicting and
//! learning (and scoring the holdout), on one thread.

use crate::error::{Error, Result};
use millrace_models::{
    exact_auc, CriteoEvent, FeatureSpec, FtrlParams, Learner, LearnerParams, LogLoss, Registry,
};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The figures `millrace bench online` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnlineBench {
    /// Well-formed rows (training plus holdout).
    pub rows: u64,
    /// Malformed lines skipped.
    pub malformed: u64,
    /// Seconds spent decoding, featurizing, learning and scoring.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// Progressive-validation AUC over the training rows.
    pub progressive_auc: Option<f64>,
    /// AUC on the held-out rows.
    pub holdout_auc: Option<f64>,
    /// Log-loss on the held-out rows.
    pub holdout_logloss: Option<f64>,
    /// The registry version the trained model was published as, with `--registry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_version: Option<u64>,
}

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct OnlineBenchConfig {
    /// Fraction of rows, at the end of the file, held out for evaluation.
    pub holdout: f64,
    /// The features.
    pub features: FeatureSpec,
    /// The learner and its parameters.
    pub learner: LearnerParams,
}

/// Runs the benchmark on the Criteo lines of `input`; publishes the model to `registry` under
/// `model` when given.
///
/// # Errors
///
/// When the file cannot be read, the holdout is not in (0, 1), or publication fails.
pub fn online(
    input: &Path,
    config: &OnlineBenchConfig,
    publish: Option<(&Registry, &str)>,
) -> Result<OnlineBench> {
    if !(config.holdout > 0.0 && config.holdout < 1.0) {
        return Err(Error::Config {
            problems: vec![format!(
                "`--holdout` must be in (0, 1) (got {})",
                config.holdout
            )],
        });
    }
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let split = ((lines.len() as f64) * (1.0 - config.holdout)).round() as usize;

    let started = Instant::now();
    let mut learner = Learner::new(&config.learner, config.features.dimension());
    let mut row = Vec::new();
    let (mut malformed, mut rows) = (0u64, 0u64);
    let (mut train_preds, mut train_labels) = (Vec::new(), Vec::new());
    let (mut test_preds, mut test_labels) = (Vec::new(), Vec::new());
    let mut test_loss = LogLoss::default();
    for (i, line) in lines.iter().enumerate() {
        let Ok(event) = CriteoEvent::decode_tsv(line) else {
            malformed += 1;
            continue;
        };
        rows += 1;
        row.clear();
        config.features.transform(&event.features, &mut row);
        if i < split {
            train_preds.push(learner.learn(&row, event.label));
            train_labels.push(event.label);
        } else {
            let p = learner.predict(&row);
            test_loss.add(p, event.label);
            test_preds.push(p);
            test_labels.push(event.label);
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let published_version = match publish {
        Some((registry, model)) => {
            let mut artifact = learner.to_artifact(model, config.features.clone());
            artifact.meta.trained_events = train_labels.len() as u64;
            artifact.meta.progressive_auc = exact_auc(&train_preds, &train_labels);
            Some(registry.publish(&mut artifact)?)
        }
        None => None,
    };
    Ok(OnlineBench {
        rows,
        malformed,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        progressive_auc: exact_auc(&train_preds, &train_labels),
        holdout_auc: exact_auc(&test_preds, &test_labels),
        holdout_logloss: test_loss.mean(),
        published_version,
    })
}

/// The figures `millrace bench job` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobBench {
    /// Events produced and learned.
    pub rows: u64,
    /// Timely workers.
    pub workers: usize,
    /// Seconds to produce the events to the broker (before the job starts).
    pub produce_seconds: f64,
    /// Seconds from the job's start until every event was learned.
    pub seconds: f64,
    /// `rows / seconds`: broker → source → decode → features → learner.
    pub events_per_sec: f64,
    /// Progressive-validation AUC at the end.
    pub progressive_auc: Option<f64>,
}

/// Produces `rows` generated events to a fresh topic on `bootstrap_servers`, then runs the job
/// on it and stops the clock when every event was learned.
///
/// # Errors
///
/// When the broker cannot be reached or the job fails.
pub fn job(
    bootstrap_servers: &str,
    rows: u64,
    workers: usize,
    registry: &Path,
) -> Result<JobBench> {
    use crate::spec::{JobSpec, LearnerSpec, ProgressSpec, PublishSpec};
    use millrace_connectors::kafka::{create_topics, KafkaSourceConfig, LineProducer};
    use millrace_models::synth::CriteoGenerator;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let topic = format!("bench-{}-{}", std::process::id(), rows);
    let dead_letter_topic = format!("{topic}-dead-letters");
    let partitions = 4;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Dataflow(e.to_string()))?;
    runtime.block_on(create_topics(
        bootstrap_servers,
        &[&topic, &dead_letter_topic],
        partitions,
    ))?;
    let lines: Vec<String> = CriteoGenerator::new(1)
        .take(rows as usize)
        .map(|e| e.to_tsv())
        .collect();
    let started = Instant::now();
    let mut producer = LineProducer::new(bootstrap_servers, &topic, partitions)?;
    for line in &lines {
        producer.send(line.as_bytes())?;
    }
    producer.flush(Duration::from_secs(120))?;
    let produce_seconds = started.elapsed().as_secs_f64();

    let spec = JobSpec::builder("bench")
        .kafka_source(KafkaSourceConfig {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic,
            group_id: format!("bench-{}", std::process::id()),
            dead_letter_topic,
            partitions,
        })
        .features(FeatureSpec::Hashed { hash_bits: 20 })
        .learner(LearnerSpec::Ftrl(FtrlParams::default()))
        .publish(PublishSpec {
            registry: registry.to_owned(),
            every_events: 1_000_000,
            every_seconds: 3600,
        })
        .progress(ProgressSpec {
            epoch_ms: 200,
            interval_ms: 0,
        })
        .build()?;
    let started = Instant::now();
    let running = crate::Job::start(spec, crate::RunOptions { workers })?;
    let learned = &running.stats().trainer.learned;
    while learned.load(Ordering::Relaxed) < rows {
        if running.is_finished() {
            // The job ended early: its error says why.
            running.wait()?;
            return Err(Error::Dataflow(
                "the job ended before it learned every event".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    running.stop();
    let report = running.wait()?;
    Ok(JobBench {
        rows,
        workers,
        produce_seconds,
        seconds,
        events_per_sec: rows as f64 / seconds,
        progressive_auc: report.progressive_auc,
    })
}
