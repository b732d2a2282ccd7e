//! Training a deep model on sample rows with Adam, in their order, and scoring it.

use crate::batch::Batch;
use crate::error::DeepError;
use crate::model::DeepModel;
use crate::spec::DeepSpec;
use millrace_artifacts::artifact::Tensor;
use millrace_artifacts::ModelArtifact;
use millrace_events::{FeatureMap, FeatureSpec};
use millrace_learners::architecture::element_count;
use millrace_learners::{exact_auc, LogLoss};
use millrace_samples::{SampleFields, SampleRows};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Reduction};

/// How a model scores on some rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    /// Rows scored.
    pub rows: usize,
    /// Their AUC (`None` without both labels).
    pub auc: Option<f64>,
    /// Their mean log-loss.
    pub logloss: Option<f64>,
}

impl Quality {
    /// The AUC and log-loss of `predictions` of rows labeled `labels`; neither when a
    /// prediction is not a finite number (a model gone wrong).
    pub fn of(predictions: &[f32], labels: &[bool]) -> Self {
        if predictions.iter().any(|p| !p.is_finite()) {
            return Quality {
                rows: labels.len(),
                auc: None,
                logloss: None,
            };
        }
        let mut logloss = LogLoss::default();
        for (&p, &l) in predictions.iter().zip(labels) {
            logloss.add(p, l);
        }
        Quality {
            rows: labels.len(),
            auc: exact_auc(predictions, labels),
            logloss: logloss.mean(),
        }
    }
}

/// A model and its optimizer.
pub struct Trainer {
    spec: DeepSpec,
    fields: SampleFields,
    model: DeepModel,
    optimizer: nn::Optimizer,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("spec", &self.spec)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A fresh model of `spec` over `fields`' layout on `device`, with Adam.
    ///
    /// # Errors
    ///
    /// [`DeepError::Spec`] with every problem of `spec`; [`DeepError::Torch`] when libtorch
    /// cannot make the optimizer.
    pub fn new(spec: &DeepSpec, fields: &SampleFields, device: Device) -> Result<Self, DeepError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(DeepError::Spec(problems));
        }
        let model = DeepModel::new(spec, fields, device);
        let optimizer = nn::Adam::default().build(model.var_store(), spec.learning_rate)?;
        Ok(Trainer {
            spec: spec.clone(),
            fields: fields.clone(),
            model,
            optimizer,
        })
    }

    /// The model.
    pub fn model(&self) -> &DeepModel {
        &self.model
    }

    /// Whether every weight is a finite number (what the gate asks before a publication).
    pub fn finite(&self) -> bool {
        self.model
            .named_weights()
            .iter()
            .all(|(_, t)| t.isfinite().all().int64_value(&[]) != 0)
    }

    /// Writes the weights to the NumPy archive `path` by PyTorch's names
    /// ([`DeepModel::named_weights`]): `numpy.load` reads it, `load_state_dict` takes it.
    ///
    /// # Errors
    ///
    /// [`DeepError::Torch`] when the file cannot be written.
    pub fn write_weights(&self, path: &std::path::Path) -> Result<(), DeepError> {
        let named = self.model.named_weights();
        let cpu: Vec<(String, tch::Tensor)> = named
            .iter()
            .map(|(name, t)| (name.clone(), t.to_device(Device::Cpu)))
            .collect();
        tch::Tensor::write_npz(&cpu, path)?;
        Ok(())
    }

    /// The model as an artifact named `name` (not yet published), for rows made by `features`
    /// with the FeatureMap version `map`: its architecture descriptor and its weights by the
    /// names the descriptor declares, which serving scores without libtorch.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when `map` is not the layout the model was made for (another number
    /// of features or of slots).
    pub fn to_artifact(
        &self,
        name: &str,
        features: FeatureSpec,
        map: Arc<FeatureMap>,
    ) -> Result<ModelArtifact, DeepError> {
        let architecture = self.spec.architecture(self.fields.fields().len());
        let named = self.model.named_weights();
        let mut tensors = Vec::new();
        for declared in architecture.tensors(map.dimension()) {
            let values = named
                .iter()
                .find(|(name, _)| *name == declared.name)
                .map(|(_, t)| Vec::<f32>::try_from(&t.flatten(0, -1).to_device(Device::Cpu)))
                .transpose()?
                .filter(|v| Some(v.len()) == element_count(&declared.shape))
                .ok_or_else(|| {
                    DeepError::Rows(format!(
                        "the model has no `{}` of shape {:?} for the FeatureMap's {} slots",
                        declared.name,
                        declared.shape,
                        map.dimension()
                    ))
                })?;
            tensors.push(Tensor::new(declared, values));
        }
        let mut artifact = ModelArtifact::new(name, features, architecture, tensors);
        artifact.feature_map = Some(map);
        Ok(artifact)
    }

    /// Starts from the weights of `artifact` (a version this model's architecture over the same
    /// FeatureMap layout made): a warm start. Adam's moments start afresh.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when the artifact is of another architecture or layout, or lacks a
    /// weight of the model's shape.
    pub fn warm_start(&mut self, artifact: &ModelArtifact) -> Result<(), DeepError> {
        let want = self.spec.architecture(self.fields.fields().len());
        if artifact.meta.architecture != want {
            return Err(DeepError::Rows(format!(
                "a warm start from a {:?} into a {want:?}",
                artifact.meta.architecture
            )));
        }
        // Every weight is found first, so that a mismatch leaves the model as it was; the named
        // weights share their storage with the model's variables.
        let mut found = Vec::new();
        for (name, tensor) in self.model.named_weights() {
            let stored = artifact
                .tensors
                .iter()
                .find(|t| t.name == name)
                .filter(|t| i64::try_from(t.values.len()).ok() == Some(tensor.numel() as i64))
                .ok_or_else(|| {
                    DeepError::Rows(format!(
                        "the artifact has no `{name}` of {} numbers",
                        tensor.numel()
                    ))
                })?;
            found.push((tensor, stored));
        }
        for (mut tensor, stored) in found {
            let source = tch::Tensor::from_slice(&stored.values)
                .view(tensor.size().as_slice())
                .to_device(tensor.device());
            tch::no_grad(|| tensor.copy_(&source));
        }
        Ok(())
    }

    /// Trains `spec.passes` passes over rows `range` of `rows`, `batch_size` rows a step, in
    /// their order; returns the mean training loss of the last pass.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when the rows do not fit the layout.
    pub fn train(&mut self, rows: &SampleRows, range: Range<usize>) -> Result<f64, DeepError> {
        self.train_until(rows, range, &AtomicBool::new(false))
    }

    /// As [`Trainer::train`], looking at `cancel` before every step.
    ///
    /// # Errors
    ///
    /// [`DeepError::Cancelled`] once `cancel` is set (the weights are then those of the steps
    /// taken); [`DeepError::Rows`] when the rows do not fit the layout.
    pub fn train_until(
        &mut self,
        rows: &SampleRows,
        range: Range<usize>,
        cancel: &AtomicBool,
    ) -> Result<f64, DeepError> {
        let device = self.model.var_store().device();
        let mut mean = 0.0;
        for _ in 0..self.spec.passes {
            let (mut sum, mut n) = (0.0, 0usize);
            for part in chunks(range.clone(), self.spec.batch_size) {
                if cancel.load(Ordering::Relaxed) {
                    return Err(DeepError::Cancelled);
                }
                let batch = Batch::of_rows(&self.fields, rows, part, device)?;
                let loss = self
                    .model
                    .forward(&batch)
                    .binary_cross_entropy_with_logits::<tch::Tensor>(
                        &batch.labels,
                        None,
                        None,
                        Reduction::Mean,
                    );
                self.optimizer.backward_step(&loss);
                sum += loss.double_value(&[]) * batch.rows as f64;
                n += batch.rows;
            }
            mean = if n == 0 { 0.0 } else { sum / n as f64 };
        }
        Ok(mean)
    }

    /// The predicted probability of a click of each row of `range`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when the rows do not fit the layout.
    pub fn predict(&self, rows: &SampleRows, range: Range<usize>) -> Result<Vec<f32>, DeepError> {
        let device = self.model.var_store().device();
        let mut out = Vec::with_capacity(range.len());
        tch::no_grad(|| -> Result<(), DeepError> {
            for part in chunks(range.clone(), self.spec.batch_size.max(4096)) {
                let batch = Batch::of_rows(&self.fields, rows, part, device)?;
                let p = self.model.forward(&batch).sigmoid().to_device(Device::Cpu);
                out.extend(Vec::<f32>::try_from(&p)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The model's AUC and log-loss on rows `range`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when the rows do not fit the layout.
    pub fn evaluate(&self, rows: &SampleRows, range: Range<usize>) -> Result<Quality, DeepError> {
        let predictions = self.predict(rows, range.clone())?;
        Ok(Quality::of(&predictions, &rows.labels[range]))
    }
}

/// `range` cut into consecutive parts of at most `size`.
fn chunks(range: Range<usize>, size: usize) -> impl Iterator<Item = Range<usize>> {
    let size = size.max(1);
    range
        .clone()
        .step_by(size)
        .map(move |s| s..(s + size).min(range.end))
}
