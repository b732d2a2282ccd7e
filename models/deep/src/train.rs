//! Training a deep model on sample rows with Adam, in their order, and scoring it.

use crate::batch::Batch;
use crate::collective::owner;
use crate::collective::AllReduce;
use crate::error::DeepError;
use crate::host::{TableStats, Unique};
use crate::model::{slots, DeepModel, EntryRows};
use crate::optim::Rows;
use crate::parallel::{apply_sharded, broadcast_vars, define_grads, gather_sharded, sum_grads};
use crate::scale::LossScale;
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
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// The embedding (`slots × dim`) and, for DeepFM, the first-order weights of every slot.
type Collected = (Vec<f32>, Option<Vec<f32>>);

/// A model and its optimizers: Adam for the dense weights, and the embedding rows' own
/// ([`crate::EmbeddingSpec`]).
pub struct Trainer {
    spec: DeepSpec,
    fields: SampleFields,
    model: DeepModel,
    dense: nn::Optimizer,
    rows: Rows,
    /// Every rank's host-table rows, summed by [`Trainer::collect_rows`] since the last step:
    /// the embedding and (DeepFM) first-order weights of every slot. What the model predicts
    /// with and writes out until the next step.
    collected: Option<Collected>,
    /// The loss scale of mixed precision, when it is in effect (asked for, on CUDA).
    scale: Option<LossScale>,
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
    /// A fresh model of `spec` over `fields`' layout on `device`, with its optimizers.
    ///
    /// # Errors
    ///
    /// [`DeepError::Spec`] with every problem of `spec`; [`DeepError::Torch`] when libtorch
    /// cannot make an optimizer.
    pub fn new(spec: &DeepSpec, fields: &SampleFields, device: Device) -> Result<Self, DeepError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(DeepError::Spec(problems));
        }
        if device.is_cuda() {
            crate::init_cuda();
        }
        let model = DeepModel::new(spec, fields, device);
        let dense = nn::Adam::default().build(model.dense(), spec.learning_rate)?;
        let rows = Rows::new(spec, &model)?;
        Ok(Trainer {
            spec: spec.clone(),
            fields: fields.clone(),
            model,
            dense,
            rows,
            collected: None,
            scale: (spec.mixed_precision && device.is_cuda()).then(LossScale::new),
        })
    }

    /// The model.
    pub fn model(&self) -> &DeepModel {
        &self.model
    }

    /// The host-resident table's figures, when the rows live on the host.
    pub fn table_stats(&self) -> Option<TableStats> {
        match &self.rows {
            Rows::Host(table) => Some(table.stats()),
            _ => None,
        }
    }

    /// Every weight, by [`DeepModel::named_weights`]' names, the host table's rows included
    /// (every slot, zero where it has no row); sorted by name.
    pub fn named_weights(&self) -> Vec<(String, tch::Tensor)> {
        let mut named = self.model.named_weights();
        if let Rows::Host(table) = &self.rows {
            let slots = slots(&self.fields).max(1);
            let (embedding, linear) = self
                .collected
                .clone()
                .unwrap_or_else(|| table.materialize(slots as usize));
            let dim = self.spec.embedding_dim as i64;
            named.push((
                "embedding.weight".to_owned(),
                tch::Tensor::from_slice(&embedding).view([slots, dim]),
            ));
            if let Some(linear) = linear {
                named.push((
                    "linear.weight".to_owned(),
                    tch::Tensor::from_slice(&linear).view([slots, 1]),
                ));
            }
            named.sort_by(|a, b| a.0.cmp(&b.0));
        }
        named
    }

    /// Whether every weight is a finite number (what the gate asks before a publication).
    pub fn finite(&self) -> bool {
        let table = match (&self.rows, &self.collected) {
            (Rows::Host(_), Some((embedding, linear))) => embedding
                .iter()
                .chain(linear.iter().flatten())
                .all(|x| x.is_finite()),
            (Rows::Host(table), None) => table.finite(),
            _ => true,
        };
        table
            && self
                .model
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
        let named = self.named_weights();
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
        let named = self.named_weights();
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
        // Every weight is found first, so that a mismatch leaves the model as it was; the
        // model's named weights share their storage with its variables.
        let model_names: Vec<String> = self
            .model
            .named_weights()
            .into_iter()
            .map(|n| n.0)
            .collect();
        let mut found = Vec::new();
        for (name, tensor) in self.named_weights() {
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
            found.push((name, tensor, stored));
        }
        let mut table_rows = (None, None);
        for (name, mut tensor, stored) in found {
            if !model_names.contains(&name) {
                match name.as_str() {
                    "embedding.weight" => table_rows.0 = Some(stored.values.as_slice()),
                    _ => table_rows.1 = Some(stored.values.as_slice()),
                }
                continue;
            }
            let source = tch::Tensor::from_slice(&stored.values)
                .view(tensor.size().as_slice())
                .to_device(tensor.device());
            tch::no_grad(|| tensor.copy_(&source));
        }
        if let (Rows::Host(table), (Some(embedding), linear)) = (&mut self.rows, table_rows) {
            table.load(embedding, linear);
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
        self.run(rows, range, cancel, None)
    }

    /// Trains as one rank of `comm.ranks()` in data parallel: each step takes this rank's next
    /// `batch_size / ranks` rows of `range`, the ranks' rows together being the step's batch;
    /// the dense gradients are summed through `comm`, and (host table) each row is asked of
    /// and updated by the rank that owns it. Every rank calls this with the same settings, and
    /// the steps go on until every rank's rows are done. Returns this rank's share of the last
    /// pass's mean loss.
    ///
    /// # Errors
    ///
    /// As [`Trainer::train_until`]; [`DeepError::Collective`] when a peer is gone.
    pub fn train_ranked(
        &mut self,
        rows: &SampleRows,
        range: Range<usize>,
        cancel: &AtomicBool,
        comm: &mut dyn AllReduce,
    ) -> Result<f64, DeepError> {
        self.run(rows, range, cancel, Some(comm))
    }

    fn run<'c>(
        &mut self,
        rows: &SampleRows,
        range: Range<usize>,
        cancel: &AtomicBool,
        mut comm: Option<&mut (dyn AllReduce + 'c)>,
    ) -> Result<f64, DeepError> {
        let device = self.model.device();
        let ranks = comm.as_ref().map_or(1, |c| c.ranks());
        let per_step = (self.spec.batch_size / ranks).max(1);
        self.collected = None;
        let mut mean = 0.0;
        for pass in 0..self.spec.passes {
            if let Rows::Host(table) = &mut self.rows {
                table.set_counting(pass == 0);
            }
            let (mut sum, mut steps) = (0.0, 0usize);
            let mut parts = chunks(range.clone(), per_step);
            loop {
                let cancelled = cancel.load(Ordering::Relaxed);
                if cancelled && comm.is_none() {
                    return Err(DeepError::Cancelled);
                }
                let part = parts.next().unwrap_or(range.end..range.end);
                let batch = Batch::of_rows(&self.fields, rows, part, device)?;
                let Some(loss) = self.step(&batch, cancelled, comm.as_deref_mut())? else {
                    break;
                };
                sum += loss;
                steps += 1;
            }
            mean = if steps == 0 { 0.0 } else { sum / steps as f64 };
        }
        Ok(mean)
    }

    /// The tensors whose gradients the ranks sum: the dense weights and a device table's.
    fn summed_vars(&self) -> Vec<tch::Tensor> {
        self.model
            .named_weights()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// One step on `batch` (this rank's part of the step's rows): the loss, the gradients
    /// (summed over the ranks), Adam on the dense weights and the rows' own update. Returns
    /// this rank's share of the step's mean loss; `None` once no rank has rows left. The ranks
    /// first agree on the step's rows and on whether any was `cancelled`, so that they stop
    /// together.
    fn step<'c>(
        &mut self,
        batch: &Batch,
        cancelled: bool,
        mut comm: Option<&mut (dyn AllReduce + 'c)>,
    ) -> Result<Option<f64>, DeepError> {
        let mut total = [batch.rows as f32, f32::from(u8::from(cancelled))];
        if let Some(comm) = comm.as_deref_mut() {
            comm.sum(&mut total)?;
        }
        if total[1] > 0.0 {
            return Err(DeepError::Cancelled);
        }
        if total[0] == 0.0 {
            return Ok(None);
        }
        let unique = match self.rows {
            Rows::DeviceAdam(_) => None,
            _ => Some(Unique::of(&batch.entry_slots)),
        };
        let mut shard = None;
        let (entries, gathered) = match (&mut self.rows, &unique) {
            (Rows::Host(table), Some(unique)) => {
                let found = match comm.as_deref_mut() {
                    Some(comm) => {
                        let (found, from) = gather_sharded(table, unique, comm)?;
                        shard = Some(from);
                        found
                    }
                    None => table.gather(unique),
                };
                let width = table.width();
                let gathered = self
                    .on_device(found, unique.slots.len(), width)
                    .set_requires_grad(true);
                (self.host_rows(&gathered, unique), Some(gathered))
            }
            _ => (self.device_rows(batch)?, None),
        };
        self.dense.zero_grad();
        if let Rows::DeviceAdam(rows) = &mut self.rows {
            rows.zero_grad();
        }
        let mut loss = 0.0;
        if batch.rows > 0 {
            let logits =
                tch::autocast(self.scale.is_some(), || self.model.forward(batch, &entries));
            let sum = logits
                .to_kind(tch::Kind::Float)
                .binary_cross_entropy_with_logits::<tch::Tensor>(
                    &batch.labels,
                    None,
                    None,
                    Reduction::Sum,
                );
            let mean = sum / f64::from(total[0]);
            match &self.scale {
                Some(scale) => (&mean * scale.factor()).backward(),
                None => mean.backward(),
            }
            loss = mean.double_value(&[]);
        } else if comm.is_some() {
            // No rows here this step: zero gradients to add to the others' (clearing them
            // above left none).
            define_grads(&self.summed_vars());
        }
        if let Some(comm) = comm.as_deref_mut() {
            sum_grads(&self.summed_vars(), comm)?;
        }
        if !self.unscale(gathered.as_ref(), comm.as_deref_mut())? {
            return Ok(Some(loss));
        }
        self.dense.step();
        match (&mut self.rows, unique, gathered) {
            (Rows::DeviceAdam(rows), ..) => rows.step()?,
            (Rows::DeviceAdagrad(rows), Some(unique), _) => match comm {
                Some(_) => rows.step_touched(),
                None => rows.step(&unique),
            },
            (Rows::Host(table), Some(unique), Some(gathered)) => {
                let grad = gathered.grad();
                let grads = if grad.defined() {
                    Vec::<f32>::try_from(&grad.flatten(0, -1).to_device(Device::Cpu))?
                } else {
                    vec![0.0; unique.slots.len() * table.width()]
                };
                match (comm, &shard) {
                    (Some(comm), Some(shard)) => apply_sharded(table, shard, &grads, comm)?,
                    _ => table.apply(&unique, &grads)?,
                }
            }
            _ => {}
        }
        Ok(Some(loss))
    }

    /// Whether the forward pass runs in mixed precision (asked for, on CUDA).
    pub fn mixed_precision(&self) -> bool {
        self.scale.is_some()
    }

    /// Scales the losses from `initial` on, as mixed precision does, on any device (on the CPU
    /// the forward pass stays f32): for the tests of the scaling itself.
    #[cfg(test)]
    pub(crate) fn scale_losses_from(&mut self, initial: f64) {
        self.scale = Some(LossScale::from(initial));
    }

    /// The loss scale in effect, if any.
    #[cfg(test)]
    pub(crate) fn loss_scale(&self) -> Option<f64> {
        self.scale.as_ref().map(LossScale::factor)
    }

    /// Under mixed precision, divides the step's gradients (the summed ones, and this rank's
    /// `gathered` rows') by the loss scale, and says whether the step applies: not when a
    /// gradient of any rank is not finite (the ranks agree), which shrinks the scale instead.
    fn unscale<'c>(
        &mut self,
        gathered: Option<&tch::Tensor>,
        comm: Option<&mut (dyn AllReduce + 'c)>,
    ) -> Result<bool, DeepError> {
        let Some(factor) = self.scale.as_ref().map(LossScale::factor) else {
            return Ok(true);
        };
        let mut grads: Vec<tch::Tensor> = self.summed_vars().iter().map(|v| v.grad()).collect();
        grads.extend(gathered.map(tch::Tensor::grad));
        grads.retain(tch::Tensor::defined);
        let finite = grads
            .iter()
            .all(|g| g.isfinite().all().int64_value(&[]) != 0);
        let mut overflowed = [f32::from(u8::from(!finite))];
        if let Some(comm) = comm {
            comm.sum(&mut overflowed)?;
        }
        let applies = self
            .scale
            .as_mut()
            .is_some_and(|scale| scale.update(overflowed[0] == 0.0));
        if applies {
            tch::no_grad(|| {
                grads
                    .iter_mut()
                    .try_for_each(|g| g.f_mul_scalar_(1.0 / factor).map(drop))
            })?;
        }
        Ok(applies)
    }

    /// Gives every rank rank 0's weights (the dense ones, a device table, and the host table's
    /// rows, each rank keeping those it owns), so that ranks that start apart (rank 0 warm
    /// started from the served version) train from the same point. Every rank calls it
    /// together; the optimizers' state is untouched.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when a peer is gone.
    pub fn broadcast(&mut self, comm: &mut dyn AllReduce) -> Result<(), DeepError> {
        let rank = comm.rank();
        broadcast_vars(&self.summed_vars(), comm)?;
        let Rows::Host(table) = &mut self.rows else {
            return Ok(());
        };
        let slots = slots(&self.fields).max(1) as usize;
        let (mut embedding, mut linear) = table.materialize(slots);
        if rank != 0 {
            embedding.fill(0.0);
            linear.iter_mut().for_each(|l| l.fill(0.0));
        }
        comm.sum(&mut embedding)?;
        if let Some(linear) = &mut linear {
            comm.sum(linear)?;
        }
        let ranks = comm.ranks();
        table.load_where(&embedding, linear.as_deref(), |slot| {
            owner(slot, ranks) == rank
        });
        Ok(())
    }

    /// Gathers every rank's host-table rows onto every rank (each rank's shard summed into
    /// all, the shards being disjoint), so that any rank predicts with and writes the whole
    /// model ([`Trainer::predict`], [`Trainer::named_weights`], [`Trainer::to_artifact`]) until
    /// the next training step;
    /// the tables themselves (their bounds and optimizer state) stay as they were. Nothing to
    /// do for a device table, which every rank holds whole.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when a peer is gone.
    pub fn collect_rows(&mut self, comm: &mut dyn AllReduce) -> Result<(), DeepError> {
        let Rows::Host(table) = &self.rows else {
            return Ok(());
        };
        let (mut embedding, linear) = table.materialize(slots(&self.fields).max(1) as usize);
        comm.sum(&mut embedding)?;
        let linear = match linear {
            Some(mut linear) => {
                comm.sum(&mut linear)?;
                Some(linear)
            }
            None => None,
        };
        self.collected = Some((embedding, linear));
        Ok(())
    }

    /// `values` (`rows × width`) as a tensor on the model's device.
    fn on_device(&self, values: Vec<f32>, rows: usize, width: usize) -> tch::Tensor {
        tch::Tensor::from_slice(&values)
            .view([rows as i64, width as i64])
            .to_device(self.model.device())
    }

    /// Each entry's rows out of the gathered rows of its batch's distinct slots.
    fn host_rows(&self, gathered: &tch::Tensor, unique: &Unique) -> EntryRows {
        let inverse = tch::Tensor::from_slice(&unique.inverse).to_device(self.model.device());
        let entries = gathered.index_select(0, &inverse);
        let dim = self.spec.embedding_dim as i64;
        EntryRows {
            embedding: entries.narrow(1, 0, dim),
            linear: (entries.size()[1] > dim).then(|| entries.select(1, dim)),
        }
    }

    /// Each entry's rows from the model's own table.
    fn device_rows(&self, batch: &Batch) -> Result<EntryRows, DeepError> {
        self.model.device_rows(batch).ok_or_else(|| {
            DeepError::Rows("the model's embedding rows live on the host".to_owned())
        })
    }

    /// The predicted probability of a click of each row of `range`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when the rows do not fit the layout.
    pub fn predict(&self, rows: &SampleRows, range: Range<usize>) -> Result<Vec<f32>, DeepError> {
        let device = self.model.device();
        let mut out = Vec::with_capacity(range.len());
        tch::no_grad(|| -> Result<(), DeepError> {
            for part in chunks(range.clone(), self.spec.batch_size.max(4096)) {
                let batch = Batch::of_rows(&self.fields, rows, part, device)?;
                let entries = match &self.rows {
                    Rows::Host(table) => {
                        let unique = Unique::of(&batch.entry_slots);
                        let found = match &self.collected {
                            Some(collected) => self.collected_rows(collected, &unique),
                            None => table.lookup(&unique),
                        };
                        let gathered = self.on_device(found, unique.slots.len(), table.width());
                        self.host_rows(&gathered, &unique)
                    }
                    _ => self.device_rows(&batch)?,
                };
                let p = self
                    .model
                    .forward(&batch, &entries)
                    .sigmoid()
                    .to_device(Device::Cpu);
                out.extend(Vec::<f32>::try_from(&p)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The rows of `unique`'s slots as [`HostTable::lookup`] lays them out, from every rank's
    /// rows that [`Trainer::collect_rows`] summed (zeros for a slot outside the layout).
    fn collected_rows(&self, (embedding, linear): &Collected, unique: &Unique) -> Vec<f32> {
        let dim = self.spec.embedding_dim;
        let width = dim + usize::from(linear.is_some());
        let mut out = vec![0.0; unique.slots.len() * width];
        for (row, &slot) in out.chunks_exact_mut(width).zip(&unique.slots) {
            let Ok(slot) = usize::try_from(slot) else {
                continue;
            };
            if let Some(values) = embedding.get(slot * dim..(slot + 1) * dim) {
                row[..dim].copy_from_slice(values);
            }
            if let Some(&weight) = linear.as_ref().and_then(|l| l.get(slot)) {
                row[dim] = weight;
            }
        }
        out
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
