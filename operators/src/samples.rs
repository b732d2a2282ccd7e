//! Keeping each epoch's transformed rows in the sample buffer, for the retraining stage.
//!
//! Every worker appends the rows it transformed to its own [`SampleBuffer`] (a directory
//! `worker-<index>` under the job's buffer directory), an epoch at a time once the frontier
//! passes it, in epoch order, and applies the retention after each. The operator is the
//! buffer's checkpoint part: a checkpoint closes the open segment and holds the list of whole
//! ones, and a restored job makes its directory what that list says before it appends the
//! epochs after the checkpoint again. Without checkpoints, a start clears what a former run
//! left. A buffer that cannot write (a full disk) logs once, counts, and loses those rows from
//! the buffer only: the rest of the job goes on.

use crate::checkpoint::{settled_through, Part};
use crate::part_spec::{Checkpoints, PartSpec};
use millrace_models::CsrBatch;
use millrace_samples::{
    BufferState, Retention, SampleBuffer, SampleError, SampleFields, SampleRows,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::StreamVec;

/// The sample buffer's checkpoint part: the worker's buffer state.
pub(crate) const SAMPLES: PartSpec<BufferState> = PartSpec::new("samples");

/// Where and how much the buffer keeps.
#[derive(Clone, Debug)]
pub struct SampleConfig {
    /// The process's buffer directory; each worker keeps `worker-<index>` in it.
    pub dir: PathBuf,
    /// Each worker's retention.
    pub retention: Retention,
    /// The features of the rows' layout.
    pub fields: SampleFields,
}

impl SampleConfig {
    /// The buffer directory of `worker`.
    pub fn worker_dir(&self, worker: usize) -> PathBuf {
        self.dir.join(format!("worker-{worker}"))
    }
}

/// Figures of the sample buffers of a process.
#[derive(Debug, Default)]
pub struct SampleStats {
    /// Rows appended since start.
    pub appended: AtomicU64,
    /// Segments retired since start.
    pub retired: AtomicU64,
    /// Appends, closes or deletions that failed (each logged, the first of a worker loudly).
    pub errors: AtomicU64,
    /// Per worker: rows and bytes held, and whole segments.
    held: Mutex<BTreeMap<usize, (u64, u64, usize)>>,
}

impl SampleStats {
    fn report(&self, worker: usize, buffer: &SampleBuffer) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(worker, (buffer.rows(), buffer.bytes(), buffer.live().len()));
    }

    fn sum<T: std::iter::Sum<T>>(&self, f: impl Fn(&(u64, u64, usize)) -> T) -> T {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(f)
            .sum()
    }

    /// Rows the process's buffers hold.
    pub fn rows(&self) -> u64 {
        self.sum(|h| h.0)
    }

    /// Bytes the process's buffers hold.
    pub fn bytes(&self) -> u64 {
        self.sum(|h| h.1)
    }

    /// Whole segments the process's buffers hold.
    pub fn segments(&self) -> usize {
        self.sum(|h| h.2)
    }
}

/// Keeps a stream of rows in the sample buffer.
pub trait BufferSamples {
    /// Appends every worker's rows to its buffer as the module describes; the operator is
    /// the buffer's checkpoint part when `checkpoints` are enabled.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::fmap::{FeatureMapSpec, Schema};
    /// use millrace_models::CsrBatch;
    /// use millrace_operators::{BufferSamples, Checkpoints, SampleConfig, SampleStats};
    /// use millrace_samples::{read_buffer, Retention, SampleFields};
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let layout = FeatureMapSpec::criteo_default().compile(&Schema::criteo()).unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = SampleConfig {
    ///     dir: dir.path().to_owned(),
    ///     retention: Retention { max_age_ms: 3_600_000, max_bytes: 1 << 20, segment_bytes: 1 << 16, segment_ms: 0 },
    ///     fields: SampleFields::of_layout(&layout).unwrap(),
    /// };
    /// let mut rows = CsrBatch::new(1, layout.dimension);
    /// rows.indices.push(layout.features[0].offset);
    /// rows.values.push(1.0);
    /// rows.indptr.push(1);
    /// rows.labels.push(true);
    /// rows.times.push(1_700_000_000_000);
    /// let stats = Arc::new(SampleStats::default());
    /// let (c, s) = (config.clone(), stats.clone());
    /// timely::example(move |scope| {
    ///     vec![rows].to_stream(scope).buffer_samples(c, s, &Checkpoints::none());
    /// });
    /// let (_, read) = read_buffer(&config.worker_dir(0)).unwrap();
    /// assert_eq!(read.labels, vec![true]);
    /// assert_eq!(stats.rows(), 1);
    /// ```
    fn buffer_samples(
        self,
        config: SampleConfig,
        stats: Arc<SampleStats>,
        checkpoints: &Checkpoints,
    );
}

impl BufferSamples for StreamVec<'_, u64, CsrBatch> {
    fn buffer_samples(
        self,
        config: SampleConfig,
        stats: Arc<SampleStats>,
        checkpoints: &Checkpoints,
    ) {
        let scope = self.scope();
        let worker = scope.index();
        let part = checkpoints.part(worker, &SAMPLES);
        let mut builder = OperatorBuilder::new("BufferSamples".to_owned(), scope);
        let mut input = builder.new_input(self, Pipeline);
        builder.build(move |_capabilities| {
            let mut keeper = Keeper::open(worker, &config, part, stats);
            let mut stash: BTreeMap<u64, Vec<CsrBatch>> = BTreeMap::new();
            move |frontiers| {
                input.for_each(|time, data| {
                    let epoch = time.least().copied().unwrap_or_default();
                    stash.entry(epoch).or_default().append(data);
                });
                let frontier = frontiers[0].frontier();
                let Some(through) = settled_through(&[frontier]) else {
                    return;
                };
                while let Some(entry) = stash.first_entry() {
                    let epoch = *entry.key();
                    if epoch > through {
                        break;
                    }
                    keeper.offer_through(epoch.checked_sub(1));
                    keeper.append(epoch, &entry.remove());
                }
                keeper.offer_through(Some(through));
                if frontier.is_empty() {
                    keeper.close();
                }
            }
        });
    }
}

/// One worker's buffer, its checkpoint part and its figures.
struct Keeper {
    worker: usize,
    fields: SampleFields,
    buffer: Option<SampleBuffer>,
    part: Option<Part>,
    /// The last epoch appended (or restored).
    lo: u64,
    stats: Arc<SampleStats>,
    retired: u64,
    logged: bool,
}

impl Keeper {
    /// The worker's buffer: restored from its checkpoint part, or fresh.
    fn open(
        worker: usize,
        config: &SampleConfig,
        mut part: Option<Part>,
        stats: Arc<SampleStats>,
    ) -> Self {
        let dir = config.worker_dir(worker);
        let checkpointed = part.is_some();
        let lo = part
            .as_ref()
            .map_or(0, |p| p.resume_epoch().saturating_sub(1));
        let restored = part.as_mut().and_then(Part::take_restored).and_then(|(_, _, bytes)| {
            SAMPLES
                .decode(&bytes)
                .inspect_err(|error| {
                    tracing::error!(%error, worker, "the checkpointed sample buffer is unreadable; starting it empty");
                })
                .ok()
        });
        let opened = match restored {
            Some(state) => SampleBuffer::restore(
                &dir,
                config.fields.clone(),
                config.retention,
                checkpointed,
                state,
            )
            .map(|(buffer, missing)| {
                if !missing.is_empty() {
                    stats
                        .errors
                        .fetch_add(missing.len() as u64, Ordering::Relaxed);
                }
                buffer
            }),
            None => {
                SampleBuffer::create(&dir, config.fields.clone(), config.retention, checkpointed)
            }
        };
        let mut keeper = Keeper {
            worker,
            fields: config.fields.clone(),
            buffer: None,
            part,
            lo,
            stats,
            retired: 0,
            logged: false,
        };
        match opened {
            Ok(buffer) => {
                keeper.stats.report(worker, &buffer);
                keeper.buffer = Some(buffer);
            }
            Err(error) => keeper.failed(&error),
        }
        keeper
    }

    fn failed(&mut self, error: &SampleError) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if self.logged {
            tracing::debug!(worker = self.worker, %error, "sample buffer");
        } else {
            tracing::error!(worker = self.worker, %error, "the sample buffer failed; its rows are lost from the buffer (logged once per worker, counted)");
            self.logged = true;
        }
    }

    /// Appends the rows of `epoch` and applies the retention.
    fn append(&mut self, epoch: u64, batches: &[CsrBatch]) {
        self.lo = epoch;
        let mut rows = SampleRows::new();
        for batch in batches {
            if let Err(error) = rows.push_batch(&self.fields, epoch, batch) {
                self.failed(&error);
            }
        }
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        let appended = rows.len() as u64;
        let result = buffer
            .append(epoch, &rows)
            .and_then(|()| buffer.retain(epoch));
        let retired = buffer.retired();
        self.stats.report(self.worker, buffer);
        if let Err(error) = result {
            self.failed(&error);
        } else {
            self.stats.appended.fetch_add(appended, Ordering::Relaxed);
        }
        self.stats
            .retired
            .fetch_add(retired - self.retired, Ordering::Relaxed);
        self.retired = retired;
    }

    /// Says the buffer holds every epoch through `through`; a checkpoint there closes the open
    /// segment and takes the state. Deletes what the written checkpoints no longer list.
    fn offer_through(&mut self, through: Option<u64>) {
        let (Some(through), Some(part)) = (through, self.part.as_mut()) else {
            return;
        };
        let mut error = None;
        if let Some(buffer) = self.buffer.as_mut() {
            part.covers(self.lo, through, || {
                let state = buffer.checkpoint().unwrap_or_else(|e| {
                    error = Some(e);
                    buffer.state().clone()
                });
                SAMPLES.encode(&state)
            });
            if let Some(kept) = part.kept_from() {
                if let Err(e) = buffer.kept_from(kept) {
                    error = Some(e);
                }
            }
        } else {
            part.covers(self.lo, through, || SAMPLES.encode(&BufferState::default()));
        }
        if let Some(error) = error {
            self.failed(&error);
        }
    }

    /// Closes the open segment: the input is complete.
    fn close(&mut self) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        let result = buffer.close();
        self.stats.report(self.worker, buffer);
        if let Err(error) = result {
            self.failed(&error);
        }
    }
}
