//! Checkpoint retention across a job's processes: every process keeps each checkpoint from
//! the newest one that every process has written on, so that whichever process is lost, the
//! processes still hold a checkpoint in common to restart from.
//!
//! The processes of a cluster checkpoint the same epochs ([`Choice::EveryNth`]), each into its
//! own store and at its own pace: replaying a backlog, one can be several checkpoints ahead of
//! another, and a process whose write failed has a gap the others do not. Keeping each store to
//! its newest `keep` could then leave no epoch that every process holds. Each process's store
//! says what it wrote ([`ClusterRetention::wrote`]), [`ShareCheckpoints`] tells every worker of
//! the job, and [`ClusterRetention::floor`] is the newest epoch every process has written; a
//! store deletes none of that epoch or later. The floor only rises: a newer epoch becomes the
//! floor only once every process has written it, and none deletes an epoch at or above the floor
//! it knows.
//!
//! What a process hears of the others is late, never ahead: its floor is at most the cluster's,
//! so it errs towards keeping more. While a process lags, the others keep every checkpoint they
//! wrote since the floor (on disk, and their epochs here).
//!
//! # Examples
//!
//! ```
//! use millrace_operators::ClusterRetention;
//!
//! // Process 0 of two: it wrote 9, 19 and 29, the other 9 and 29 (its write of 19 failed).
//! let retention = ClusterRetention::new(0, 2);
//! for epoch in [9, 19, 29] {
//!     retention.wrote(epoch);
//! }
//! retention.heard(1, 9);
//! assert_eq!(retention.floor(), 9);
//! retention.heard(1, 29);
//! assert_eq!(retention.floor(), 29);
//! ```
//!
//! [`Choice::EveryNth`]: crate::checkpoint::Choice::EveryNth

use crate::checkpoint::FINAL;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

/// What one process knows of the cluster's checkpoints: the epochs each process has written
/// since the floor, and the floor, the newest epoch every process has written. Shared by the
/// process's workers and its store.
#[derive(Clone, Debug)]
pub struct ClusterRetention {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    process: usize,
    state: Mutex<Written>,
    floor: AtomicU64,
}

#[derive(Debug)]
struct Written {
    /// Per process, the epochs it wrote at or above the floor.
    epochs: Vec<BTreeSet<u64>>,
    /// What this process wrote and has not yet told the others.
    unsent: Vec<u64>,
    /// The operators that tell them, woken by each write.
    senders: Vec<SyncActivator>,
    /// Whether a report from a process the job does not have was logged.
    warned: bool,
}

impl ClusterRetention {
    /// The retention of process `process` of a cluster of `processes`: every checkpoint is
    /// kept until the processes agree on one to restore ([`ClusterRetention::restored`]) or
    /// every process has written one.
    pub fn new(process: usize, processes: usize) -> Self {
        ClusterRetention {
            inner: Arc::new(Inner {
                process,
                state: Mutex::new(Written {
                    epochs: vec![BTreeSet::new(); processes.max(process + 1)],
                    unsent: Vec::new(),
                    senders: Vec::new(),
                    warned: false,
                }),
                floor: AtomicU64::new(0),
            }),
        }
    }

    /// The epoch from which on every checkpoint is kept: the newest every process has written.
    pub fn floor(&self) -> u64 {
        self.inner.floor.load(Ordering::Acquire)
    }

    /// Takes in that the processes restored the checkpoint of `epoch`: every one holds it. The
    /// end-of-input checkpoint is not a floor: the first checkpoint after it replaces it.
    pub fn restored(&self, epoch: u64) {
        if epoch != FINAL {
            self.inner.floor.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    /// Takes in that this process has written the checkpoint of `epoch`, to be told to the
    /// others.
    pub fn wrote(&self, epoch: u64) {
        let mut state = self.lock();
        state.unsent.push(epoch);
        self.insert(&mut state, self.inner.process, epoch);
        for sender in &state.senders {
            // A sender whose worker has ended has nothing left to tell.
            let _ = sender.activate();
        }
    }

    /// Wakes `sender` whenever this process writes a checkpoint.
    fn wake_on_write(&self, sender: SyncActivator) {
        self.lock().senders.push(sender);
    }

    /// Takes in that `process` has written the checkpoint of `epoch`. A process that is not
    /// one of the cluster's is ignored (logged once).
    pub fn heard(&self, process: usize, epoch: u64) {
        let mut state = self.lock();
        if process >= state.epochs.len() {
            if !state.warned {
                tracing::warn!(process, epoch, "a checkpoint report from a process the job does not have; ignored (logged once)");
                state.warned = true;
            }
            return;
        }
        self.insert(&mut state, process, epoch);
    }

    /// What this process wrote since the last call.
    fn take_unsent(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().unsent)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `epoch` for `process` and raises the floor to the newest epoch every process
    /// has written, forgetting what lies below it.
    fn insert(&self, state: &mut Written, process: usize, epoch: u64) {
        let floor = self.floor();
        if epoch < floor {
            return;
        }
        state.epochs[process].insert(epoch);
        let common = state.epochs[0]
            .iter()
            .rev()
            .find(|e| state.epochs.iter().all(|written| written.contains(e)))
            .copied();
        if let Some(common) = common.filter(|&c| c > floor) {
            self.inner.floor.fetch_max(common, Ordering::AcqRel);
            for written in &mut state.epochs {
                *written = written.split_off(&common);
            }
        }
    }
}

/// Tells every worker of the job the checkpoints this worker's process writes.
pub trait ShareCheckpoints {
    /// Passes the stream through unchanged, and meanwhile sends what `retention`'s process
    /// writes to every worker, which takes it into its own process's retention. Each write
    /// wakes the operator; the reports follow the stream's frontier and end with it.
    fn share_checkpoints(self, retention: ClusterRetention) -> Self;
}

impl<'scope, D: 'static> ShareCheckpoints for StreamVec<'scope, u64, D> {
    fn share_checkpoints(self, retention: ClusterRetention) -> Self {
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("ShareCheckpoints".to_owned(), scope);
        let address = builder.operator_info().address.to_vec();
        retention.wake_on_write(scope.worker().sync_activator_for(address));
        let mut input = builder.new_input(self, Pipeline);
        let (passed_out, passed) = builder.new_output::<Vec<D>>();
        let (reports_out, reports) = builder.new_output::<Vec<(usize, u64)>>();
        let mut passed_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(passed_out);
        let mut reports_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(reports_out);
        let sender = retention.clone();
        builder.build(move |mut capabilities| {
            let mut reporting = capabilities.pop();
            move |frontiers| {
                let mut passed_out = passed_out.activate();
                input.for_each(|cap, data| {
                    if let Some(cap) = cap.retain_least(0) {
                        passed_out.session(&cap).give_container(data);
                    }
                });
                let Some(&time) = frontiers[0].frontier().first() else {
                    reporting = None;
                    return;
                };
                let Some(cap) = reporting.as_mut() else {
                    return;
                };
                if *cap.time() < time {
                    cap.downgrade(&time);
                }
                let unsent = sender.take_unsent();
                if !unsent.is_empty() {
                    let process = sender.inner.process;
                    reports_out
                        .activate()
                        .session(&*cap)
                        .give_iterator(unsent.into_iter().map(|epoch| (process, epoch)));
                }
            }
        });
        reports
            .broadcast()
            .inspect(move |&(process, epoch)| retention.heard(process, epoch));
        passed
    }
}
