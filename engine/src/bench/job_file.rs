//! `millrace bench online --job JOB.toml --input FILE`: a job file's schema, FeatureMap and
//! learner on a file, as one worker of the job runs them, with the usual JSON line.
//!
//! The file is read into memory first (a header line, when the schema declares one, is checked
//! and skipped). The training lines are cut into epochs of `epoch_rows`: each epoch is parsed,
//! transformed with the FeatureMap version before it, predicted and learned row by row
//! (progressive validation), then fitted into the next version, across which the learner's
//! weights are carried, as the job's `Featurize` and `TrainRows` do. The held-out lines are
//! scored by the final model with the final version. The clock covers parsing, fitting,
//! transforming, learning and scoring.

use super::OnlineBench;
use crate::error::{Error, Result};
use crate::spec::JobSpec;
use millrace_models::fmap::{BatchFitter, Layout, Parser, TransformCounts};
use millrace_models::{exact_auc, CsrBatch, EventBatch, FeatureMap, Learner, LogLoss, Schema};
use std::path::Path;
use std::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct JobFileBench {
    /// Fraction of lines, at the end of the file, held out for evaluation.
    pub holdout: f64,
    /// Training lines per epoch (one FeatureMap version each).
    pub epoch_rows: usize,
}

/// Runs `job`'s schema, FeatureMap and learner on `input`.
///
/// # Errors
///
/// When the file cannot be read, its header does not match, or the holdout or epoch size is
/// out of range.
pub fn online(input: &Path, job: &JobSpec, config: &JobFileBench) -> Result<OnlineBench> {
    let mut problems = Vec::new();
    if !(config.holdout > 0.0 && config.holdout < 1.0) {
        problems.push(format!(
            "`--holdout` must be in (0, 1) (got {})",
            config.holdout
        ));
    }
    if config.epoch_rows == 0 {
        problems.push("`--epoch-rows` must be at least 1".to_owned());
    }
    if !problems.is_empty() {
        return Err(Error::Config { problems });
    }
    let schema = job.event_schema()?;
    let layout = job
        .features
        .compile(&schema)
        .map_err(|problems| Error::Config { problems })?;
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    let lines = schema.records(&text).map_err(|why| Error::Config {
        problems: vec![format!("[schema] {}: {why}", input.display())],
    })?;
    let split = ((lines.len() as f64) * (1.0 - config.holdout)).round() as usize;
    let (train, test) = lines.split_at(split);

    let started = Instant::now();
    let mut parser = Parser::new(&layout);
    let mut fitter = BatchFitter::new(layout.clone());
    let mut learner = Learner::new(&job.learner, layout.dimension);
    let mut malformed = 0u64;
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    let mut chunks = Chunks::new(&layout);
    for epoch in train.chunks(config.epoch_rows) {
        for lines in epoch.chunks(CHUNK_ROWS) {
            let rows = chunks.rows(&mut parser, fitter.map(), lines, &schema, &mut malformed);
            for i in 0..rows.len() {
                let (indices, values) = rows.row(i);
                preds.push(learner.learn_weighted(indices, values, rows.labels[i]));
                labels.push(rows.labels[i]);
            }
            fitter.observe(&chunks.events);
        }
        if let Some(transition) = fitter.finish_epoch() {
            learner.carry(&transition);
        }
    }
    let mut loss = LogLoss::default();
    let (mut test_preds, mut test_labels) = (Vec::new(), Vec::new());
    for lines in test.chunks(CHUNK_ROWS) {
        let rows = chunks.rows(&mut parser, fitter.map(), lines, &schema, &mut malformed);
        for i in 0..rows.len() {
            let (indices, values) = rows.row(i);
            let p = learner.predict_weighted(indices, values);
            loss.add(p, rows.labels[i]);
            test_preds.push(p);
            test_labels.push(rows.labels[i]);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows_seen = (labels.len() + test_preds.len()) as u64;
    Ok(OnlineBench {
        rows: rows_seen,
        malformed,
        seconds,
        rows_per_sec: rows_seen as f64 / seconds.max(1e-9),
        workers: 1,
        sync_rows: None,
        progressive_auc: exact_auc(&preds, &labels),
        holdout_auc: exact_auc(&test_preds, &test_labels),
        holdout_logloss: loss.mean(),
        published_version: None,
        q213: None,
        int8: None,
    })
}

/// Lines parsed and transformed at a time: a chunk's events and rows stay in the cache, as a
/// message's do in the dataflow.
const CHUNK_ROWS: usize = 1024;

/// The buffers a chunk of lines is parsed and transformed in, reused chunk after chunk.
struct Chunks {
    events: EventBatch,
    rows: CsrBatch,
    counts: TransformCounts,
}

impl Chunks {
    fn new(layout: &Layout) -> Self {
        Chunks {
            events: EventBatch::with_capacity(layout.schema.fields.len(), CHUNK_ROWS),
            rows: CsrBatch::default(),
            counts: TransformCounts::default(),
        }
    }

    /// Parses `lines` (a malformed one is counted and skipped) and transforms them with `map`.
    fn rows(
        &mut self,
        parser: &mut Parser,
        map: &FeatureMap,
        lines: &[&[u8]],
        schema: &Schema,
        malformed: &mut u64,
    ) -> &CsrBatch {
        self.events.clear();
        for line in lines {
            let time = schema.event_time(line).unwrap_or(0);
            if parser.parse_record(line, time, &mut self.events).is_err() {
                *malformed += 1;
            }
        }
        map.transform_into(&self.events, &mut self.counts, &mut self.rows);
        &self.rows
    }
}
