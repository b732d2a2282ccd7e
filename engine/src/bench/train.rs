//! `millrace bench train`: train a deep model (DeepFM or DCN-v2) on the first part of a file's
//! events, score the held-out rest, and report one JSON line.
//!
//! The file is read with a job file's `[schema]` and `[features]` (a FeatureMap): one version is
//! fitted on the training lines, and every line is transformed with it into sample rows, the
//! rows the sample buffer holds. With `--samples DIR` they are written as `train.arrow` and
//! `holdout.arrow` there, and the model's initial weights as `init.npz` (by PyTorch's names), so
//! that `perf/train_pytorch.py` trains the same model from the same start on the same rows.
//! The clock covers training only (batches made from the rows, forward, backward, Adam).

use crate::error::{Error, Result};
use crate::spec::JobSpec;
use millrace_deep::{
    device_name, DeepSpec, Device, EmbeddingSpec, Placement, SparseOptimizer, Trainer,
};
use millrace_models::fmap::{BatchFitter, Parser, TransformCounts};
use millrace_models::{CsrBatch, EventBatch, FeatureSpec};
use millrace_samples::{write_segment, SampleFields, SampleRows};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The figures `millrace bench train` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainBench {
    /// Training rows per second (rows × passes over the training seconds).
    pub samples_per_sec: f64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The model trained.
    pub model: &'static str,
    /// Rows per step.
    pub batch: usize,
    /// AUC on the held-out rows.
    pub holdout_auc: Option<f64>,
    /// Mean log-loss on the held-out rows.
    pub holdout_logloss: Option<f64>,
    /// Rows trained on (each pass).
    pub train_rows: usize,
    /// Rows held out.
    pub holdout_rows: usize,
    /// Lines that were not events.
    pub malformed: u64,
    /// Seconds of training.
    pub seconds: f64,
    /// `device` or `host`: where the embedding rows lived.
    pub embeddings: &'static str,
    /// Host table: rows gathered onto the device per second of training.
    pub gathered_rows_per_sec: Option<f64>,
    /// Host table: bytes a gathered row moves.
    pub bytes_per_row: Option<usize>,
    /// Host table: bytes of host memory per row held (rows, optimizer state, index, filter).
    pub table_bytes_per_row: Option<f64>,
    /// Whether the forward pass ran in mixed precision (asked for, on CUDA).
    pub mixed_precision: bool,
}

/// The embedding settings `--embeddings` and `--embedding-lr` name: `device` (Adam, as the
/// dense weights) or `host` (row-wise AdaGrad at `rate`).
///
/// # Errors
///
/// [`Error::Config`] for another placement.
pub fn embeddings(placement: &str, rate: f64) -> Result<EmbeddingSpec> {
    let (placement, optimizer) = match placement {
        "device" => (Placement::Device, SparseOptimizer::Adam),
        "host" => (Placement::Host, SparseOptimizer::RowwiseAdagrad),
        other => {
            return Err(Error::Config {
                problems: vec![format!(
                    "`--embeddings` must be device or host (got {other:?})"
                )],
            })
        }
    };
    Ok(EmbeddingSpec {
        placement,
        optimizer,
        learning_rate: rate,
        ..EmbeddingSpec::default()
    })
}

/// Lines parsed and transformed at a time.
const CHUNK: usize = 4096;

/// Trains `spec` on the first `1 - holdout` of `input`'s events, read with `job`'s schema and
/// FeatureMap, on `device`, and scores the rest; with `samples`, writes the rows there first.
///
/// # Errors
///
/// Every problem with the settings at once (the holdout outside (0, 1), features that are not
/// a FeatureMap, the model's settings); a file that cannot be read; rows that cannot be written.
pub fn train(
    input: &Path,
    job: &JobSpec,
    (spec, holdout, device): (&DeepSpec, f64, Device),
    samples: Option<&Path>,
) -> Result<TrainBench> {
    let mut problems = Vec::new();
    if !(holdout > 0.0 && holdout < 1.0) {
        problems.push(format!("`--holdout` must be in (0, 1) (got {holdout})"));
    }
    if !matches!(job.features, FeatureSpec::Map(_)) {
        problems.push("[features] `bench train` needs a FeatureMap (`type = \"map\"`): its fields are the model's".to_owned());
    }
    problems.extend(spec.problems());
    let schema = job.event_schema()?;
    let layout = job.features.compile(&schema);
    if let Err(features) = &layout {
        problems.extend(features.iter().map(|p| format!("[features] {p}")));
    }
    let layout = match layout {
        Ok(layout) if problems.is_empty() => layout,
        _ => return Err(Error::Config { problems }),
    };
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    let lines = schema.records(&text).map_err(|why| Error::Config {
        problems: vec![format!("[schema] {}: {why}", input.display())],
    })?;
    let split = ((lines.len() as f64) * (1.0 - holdout)).round() as usize;
    let (train_lines, test_lines) = lines.split_at(split);

    let fields = SampleFields::of_layout(&layout)?;
    let mut parser = Parser::new(&layout);
    let mut events = EventBatch::with_capacity(schema.fields.len(), CHUNK);
    let mut malformed = 0;
    let mut parse = |lines: &[&[u8]], events: &mut EventBatch| {
        events.clear();
        for line in lines {
            let time = schema.event_time(line).unwrap_or(0);
            if parser.parse_record(line, time, events).is_err() {
                malformed += 1;
            }
        }
    };
    let mut fitter = BatchFitter::new(layout);
    for lines in train_lines.chunks(CHUNK) {
        parse(lines, &mut events);
        fitter.observe(&events);
    }
    fitter.finish_epoch();
    let map = fitter.into_map();
    let mut rows_of = |lines: &[&[u8]]| -> Result<SampleRows> {
        let (mut all, mut csr, mut counts) = (
            SampleRows::new(),
            CsrBatch::default(),
            TransformCounts::default(),
        );
        for lines in lines.chunks(CHUNK) {
            parse(lines, &mut events);
            map.transform_into(&events, &mut counts, &mut csr);
            all.push_batch(&fields, 0, &csr)?;
        }
        Ok(all)
    };
    let train_rows = rows_of(train_lines)?;
    let test_rows = rows_of(test_lines)?;
    if let Some(dir) = samples {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        for (name, rows) in [("train.arrow", &train_rows), ("holdout.arrow", &test_rows)] {
            write_segment(&dir.join(name), &fields, std::slice::from_ref(rows))?;
        }
    }

    let mut trainer = Trainer::new(spec, &fields, device)?;
    if let Some(dir) = samples {
        trainer.write_weights(&dir.join("init.npz"))?;
    }
    let started = Instant::now();
    trainer.train(&train_rows, 0..train_rows.len())?;
    let seconds = started.elapsed().as_secs_f64();
    let quality = trainer.evaluate(&test_rows, 0..test_rows.len())?;
    let table = trainer.table_stats();
    Ok(TrainBench {
        samples_per_sec: (train_rows.len() * spec.passes) as f64 / seconds.max(1e-9),
        device: device_name(device),
        model: spec.model.name(),
        batch: spec.batch_size,
        holdout_auc: quality.auc,
        holdout_logloss: quality.logloss,
        train_rows: train_rows.len(),
        holdout_rows: test_rows.len(),
        malformed,
        seconds,
        embeddings: match spec.embeddings.placement {
            Placement::Device => "device",
            Placement::Host => "host",
        },
        gathered_rows_per_sec: table.map(|t| t.gathered as f64 / seconds.max(1e-9)),
        bytes_per_row: table.map(|t| t.row_bytes),
        table_bytes_per_row: table.map(|t| t.bytes as f64 / t.rows.max(1) as f64),
        mixed_precision: trainer.mixed_precision(),
    })
}
