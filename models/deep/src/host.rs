//! The host-resident embedding table (HugeCTR's and Monolith's host-device scheme): a row per
//! id in host memory, created once the id has been seen often enough, dropped once unseen for a
//! span. Each step gathers its batch's distinct ids into one tensor for the device, and applies
//! the rows' gradients back here by row-wise AdaGrad.

use crate::error::DeepError;
use crate::filter::{mix, FrequencyFilter};
use crate::spec::{DeepKind, DeepSpec};
use std::collections::HashMap;
use std::ops::Range;

/// Row-wise AdaGrad's term that keeps a step finite before any gradient has been seen.
pub(crate) const ADAGRAD_EPSILON: f32 = 1e-8;

/// Appends the initial embedding of `slot` (`dim` numbers drawn from N(0, 0.01²), a function of
/// `seed` and `slot` alone, so that a row made on first sight equals one made up front).
fn push_initial_row(out: &mut Vec<f32>, seed: u64, slot: i64, dim: usize) {
    let base = mix(mix(seed).wrapping_add(slot as u64));
    for j in 0..dim as u64 {
        let a = mix(base.wrapping_add(2 * j));
        let b = mix(base.wrapping_add(2 * j + 1));
        let unit = |h: u64| ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let normal = (-2.0 * unit(a).ln()).sqrt() * (std::f64::consts::TAU * unit(b)).cos();
        out.push((0.01 * normal) as f32);
    }
}

/// The initial embeddings of `slots`, one row of `dim` after another.
pub(crate) fn initial_rows(seed: u64, slots: Range<i64>, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(slots.clone().count() * dim);
    for slot in slots {
        push_initial_row(&mut out, seed, slot, dim);
    }
    out
}

/// A batch's distinct slots in order of first appearance, each entry's index among them, and
/// each slot's number of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unique {
    /// The distinct slots.
    pub slots: Vec<i64>,
    /// Per entry, the index of its slot in `slots`.
    pub inverse: Vec<i64>,
    /// Per distinct slot, its entries.
    pub counts: Vec<u32>,
}

impl Unique {
    /// The distinct slots of `entries`.
    pub fn of(entries: &[i64]) -> Self {
        let mut at: HashMap<i64, usize> = HashMap::with_capacity(entries.len());
        let mut unique = Unique {
            inverse: Vec::with_capacity(entries.len()),
            ..Unique::default()
        };
        for &slot in entries {
            let i = *at.entry(slot).or_insert_with(|| {
                unique.slots.push(slot);
                unique.counts.push(0);
                unique.slots.len() - 1
            });
            unique.counts[i] += 1;
            unique.inverse.push(i as i64);
        }
        unique
    }
}

/// What a host table holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Rows held.
    pub rows: usize,
    /// Distinct ids gathered for steps, in all (those without a row, gathered as zeros,
    /// included).
    pub gathered: u64,
    /// Rows created.
    pub created: u64,
    /// Rows dropped as unseen for the span.
    pub evicted: u64,
    /// Times an id passed the frequency filter but found the table full.
    pub refused: u64,
    /// Bytes of host memory the table holds (rows, optimizer state, index and filter).
    pub bytes: usize,
    /// Bytes a gathered row moves to the device.
    pub row_bytes: usize,
}

/// Rows of embedding (and DeepFM's first-order weight) keyed by slot, with row-wise AdaGrad
/// state.
#[derive(Debug)]
pub struct HostTable {
    dim: usize,
    /// `dim`, plus one for DeepFM's first-order weight.
    width: usize,
    /// Accumulators per row: the embedding's, and the first-order weight's.
    accums: usize,
    seed: u64,
    learning_rate: f32,
    min_count: u32,
    evict_after: u64,
    max_rows: usize,
    index: HashMap<i64, u32>,
    /// Per row its slot, or -1 for a free row.
    slot_of: Vec<i64>,
    weights: Vec<f32>,
    accum: Vec<f32>,
    /// Per row, the step it was last gathered in.
    seen: Vec<u64>,
    free: Vec<u32>,
    filter: Option<FrequencyFilter>,
    /// Whether gathering counts sightings for the filter (the first pass over rows only, so
    /// that later passes do not count the same rows again).
    counting: bool,
    step: u64,
    stats: TableStats,
}

impl HostTable {
    /// An empty table for a model of `spec`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Spec`] with every problem of `spec`.
    pub fn new(spec: &DeepSpec) -> Result<Self, DeepError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(DeepError::Spec(problems));
        }
        let linear = usize::from(spec.model == DeepKind::DeepFm);
        let settings = &spec.embeddings;
        Ok(HostTable {
            dim: spec.embedding_dim,
            width: spec.embedding_dim + linear,
            accums: 1 + linear,
            seed: spec.seed,
            learning_rate: settings.learning_rate as f32,
            min_count: settings.min_count,
            evict_after: settings.evict_after_steps,
            max_rows: settings.max_rows,
            index: HashMap::new(),
            slot_of: Vec::new(),
            weights: Vec::new(),
            accum: Vec::new(),
            seen: Vec::new(),
            free: Vec::new(),
            filter: (settings.min_count > 1).then(|| FrequencyFilter::new(settings.max_rows)),
            counting: true,
            step: 0,
            stats: TableStats::default(),
        })
    }

    /// Whether gathering counts sightings for the frequency filter from now on.
    pub fn set_counting(&mut self, counting: bool) {
        self.counting = counting;
    }

    /// Numbers per gathered row: the embedding, then (DeepFM) the first-order weight.
    pub fn width(&self) -> usize {
        self.width
    }

    /// What the table holds and has done.
    pub fn stats(&self) -> TableStats {
        let words = self.weights.capacity() + self.accum.capacity();
        let index = self.index.capacity() * (std::mem::size_of::<(i64, u32)>() + 1);
        TableStats {
            rows: self.index.len(),
            bytes: words * 4
                + (self.slot_of.capacity() + self.seen.capacity()) * 8
                + self.free.capacity() * 4
                + index
                + self.filter.as_ref().map_or(0, FrequencyFilter::bytes),
            row_bytes: self.width * 4,
            ..self.stats
        }
    }

    /// Whether `count` more sightings of `slot` let it have a row.
    fn admit(&mut self, slot: i64, count: u32) -> bool {
        match &mut self.filter {
            Some(filter) if self.counting => filter.add(slot, count) >= self.min_count,
            Some(filter) => filter.count(slot) >= self.min_count,
            None => true,
        }
    }

    /// A new row for `slot`, initialized; `None` when the table is full.
    fn create(&mut self, slot: i64) -> Option<usize> {
        let row = match self.free.pop() {
            Some(row) => row as usize,
            None if self.slot_of.len() < self.max_rows => {
                self.slot_of.push(-1);
                self.seen.push(0);
                self.weights.resize(self.weights.len() + self.width, 0.0);
                self.accum.resize(self.accum.len() + self.accums, 0.0);
                self.slot_of.len() - 1
            }
            None => return None,
        };
        let mut init = Vec::with_capacity(self.width);
        push_initial_row(&mut init, self.seed, slot, self.dim);
        init.resize(self.width, 0.0);
        self.weights[row * self.width..(row + 1) * self.width].copy_from_slice(&init);
        self.accum[row * self.accums..(row + 1) * self.accums].fill(0.0);
        self.slot_of[row] = slot;
        self.seen[row] = self.step;
        self.index.insert(slot, row as u32);
        self.stats.created += 1;
        Some(row)
    }

    /// The rows of `unique`'s slots, one after another (`width` numbers each), creating those
    /// that pass the frequency filter; a slot without a row gathers zeros.
    pub fn gather(&mut self, unique: &Unique) -> Vec<f32> {
        let mut out = vec![0.0; unique.slots.len() * self.width];
        for (i, (&slot, &count)) in unique.slots.iter().zip(&unique.counts).enumerate() {
            let row = match self.index.get(&slot).copied() {
                Some(row) => Some(row as usize),
                None if self.admit(slot, count) => {
                    let row = self.create(slot);
                    self.stats.refused += u64::from(row.is_none());
                    row
                }
                None => None,
            };
            if let Some(row) = row {
                self.seen[row] = self.step;
                self.copy_row(row, &mut out[i * self.width..(i + 1) * self.width]);
            }
        }
        self.stats.gathered += unique.slots.len() as u64;
        out
    }

    /// The rows of `unique`'s slots as [`HostTable::gather`] lays them out, zero where the
    /// table has no row, creating and counting nothing (for prediction).
    pub fn lookup(&self, unique: &Unique) -> Vec<f32> {
        let mut out = vec![0.0; unique.slots.len() * self.width];
        for (i, slot) in unique.slots.iter().enumerate() {
            if let Some(&row) = self.index.get(slot) {
                self.copy_row(row as usize, &mut out[i * self.width..(i + 1) * self.width]);
            }
        }
        out
    }

    fn copy_row(&self, row: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.weights[row * self.width..(row + 1) * self.width]);
    }

    /// Applies `grads` (as [`HostTable::gather`] laid the rows out) to `unique`'s rows by
    /// row-wise AdaGrad, ending the step (and dropping rows unseen for the span when a sweep
    /// is due).
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when `grads` is not `width` numbers per slot of `unique`.
    pub fn apply(&mut self, unique: &Unique, grads: &[f32]) -> Result<(), DeepError> {
        if grads.len() != unique.slots.len() * self.width {
            return Err(DeepError::Rows(format!(
                "{} gradient numbers for {} rows of {}",
                grads.len(),
                unique.slots.len(),
                self.width
            )));
        }
        for (i, slot) in unique.slots.iter().enumerate() {
            let Some(&row) = self.index.get(slot) else {
                continue;
            };
            let row = row as usize;
            let grad = &grads[i * self.width..(i + 1) * self.width];
            let weights = &mut self.weights[row * self.width..(row + 1) * self.width];
            let accum = &mut self.accum[row * self.accums..(row + 1) * self.accums];
            let (embedding, linear) = weights.split_at_mut(self.dim);
            let (g_embedding, g_linear) = grad.split_at(self.dim);
            adagrad_row(embedding, g_embedding, &mut accum[0], self.learning_rate);
            if let (Some(w), Some(acc)) = (linear.first_mut(), accum.get_mut(1)) {
                adagrad_row(std::slice::from_mut(w), g_linear, acc, self.learning_rate);
            }
        }
        self.step += 1;
        if self.evict_after > 0 && self.step % (self.evict_after / 8).max(1) == 0 {
            self.evict();
        }
        Ok(())
    }

    /// Drops the rows unseen for more than the span (swept every span / 8 steps, so a row
    /// goes between the span and 9/8 of it after it was last gathered).
    fn evict(&mut self) {
        for row in 0..self.slot_of.len() {
            let slot = self.slot_of[row];
            if slot >= 0 && self.step - self.seen[row] > self.evict_after {
                self.index.remove(&slot);
                self.slot_of[row] = -1;
                self.free.push(row as u32);
                self.stats.evicted += 1;
            }
        }
    }

    /// Every slot of `0..slots`' embedding (`slots × dim`) and first-order weight (`slots`,
    /// DeepFM), zero where the table has no row: what serving reads.
    pub fn materialize(&self, slots: usize) -> (Vec<f32>, Option<Vec<f32>>) {
        let mut embedding = vec![0.0; slots * self.dim];
        let mut linear = (self.width > self.dim).then(|| vec![0.0; slots]);
        for (&slot, &row) in &self.index {
            let Ok(slot) = usize::try_from(slot) else {
                continue;
            };
            if slot >= slots {
                continue;
            }
            let row = &self.weights[row as usize * self.width..][..self.width];
            embedding[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&row[..self.dim]);
            if let Some(linear) = &mut linear {
                linear[slot] = row[self.dim];
            }
        }
        (embedding, linear)
    }

    /// Replaces the rows by those of `embedding` (`slots × dim`) and `linear`, a row for each
    /// slot with a number that is not zero (up to the table's bound); the optimizer's state
    /// starts afresh.
    pub fn load(&mut self, embedding: &[f32], linear: Option<&[f32]>) {
        self.load_where(embedding, linear, |_| true);
    }

    /// As [`HostTable::load`], keeping only the slots `keep` accepts (a rank's shard).
    pub fn load_where(
        &mut self,
        embedding: &[f32],
        linear: Option<&[f32]>,
        keep: impl Fn(i64) -> bool,
    ) {
        self.index.clear();
        self.slot_of.clear();
        self.weights.clear();
        self.accum.clear();
        self.seen.clear();
        self.free.clear();
        for (slot, row) in embedding.chunks_exact(self.dim).enumerate() {
            let lin = linear.and_then(|l| l.get(slot)).copied();
            if !keep(slot as i64) || row.iter().all(|&x| x == 0.0) && lin.unwrap_or(0.0) == 0.0 {
                continue;
            }
            let Some(r) = self.create(slot as i64) else {
                self.stats.refused += 1;
                continue;
            };
            let weights = &mut self.weights[r * self.width..(r + 1) * self.width];
            weights[..self.dim].copy_from_slice(row);
            if let Some(lin) = lin.filter(|_| self.width > self.dim) {
                weights[self.dim] = lin;
            }
        }
    }

    /// Whether every number of every row is finite.
    pub fn finite(&self) -> bool {
        self.index.values().all(|&row| {
            self.weights[row as usize * self.width..][..self.width]
                .iter()
                .all(|x| x.is_finite())
        })
    }
}

/// One row-wise AdaGrad step: the accumulator gains the mean squared gradient of the row, and
/// every weight steps by `rate · g / (√acc + ε)`.
fn adagrad_row(weights: &mut [f32], grad: &[f32], accum: &mut f32, rate: f32) {
    let mean = grad.iter().map(|g| g * g).sum::<f32>() / grad.len().max(1) as f32;
    *accum += mean;
    let scale = rate / (accum.sqrt() + ADAGRAD_EPSILON);
    for (w, g) in weights.iter_mut().zip(grad) {
        *w -= scale * g;
    }
}
