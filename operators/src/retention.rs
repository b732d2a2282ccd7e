//! Checkpoint retention across a job's processes: every process keeps each checkpoint from
//! the oldest of the processes' newest ones on, so that whichever process is lost, the
//! processes still hold a checkpoint in common to restart from.
//!
//! The processes of a cluster checkpoint the same epochs ([`Choice::EveryNth`]), each into its
//! own store and at its own pace: replaying a backlog, whose event time is compressed, one can
//! be several checkpoints ahead of another. Keeping each store to its newest `keep` could then
//! leave no epoch that every process holds. [`ShareCheckpoints`] tells every worker each
//! process's newest written checkpoint; [`ClusterRetention::floor`] is the least of them, once
//! every process has said, and a store deletes none of that epoch or later. The process the
//! floor comes from holds it (it is its newest), and every other process wrote it on its way
//! past (unless its write failed: then its own newest is older, and the floor with it).
//!
//! What a worker hears is late, never ahead: the floor it computes is at most the cluster's
//! true one, so it errs towards keeping more.
//!
//! [`Choice::EveryNth`]: crate::checkpoint::Choice::EveryNth

use crate::Checkpoints;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::StreamVec;

/// How often a worker looks for a newer checkpoint of its process to tell the others of.
const POLL: Duration = Duration::from_millis(100);

/// What one process knows of the cluster's checkpoints: each process's newest written one,
/// and from it the epoch from which on its store keeps every checkpoint. Shared by the
/// process's workers and its store.
#[derive(Clone, Debug)]
pub struct ClusterRetention {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    newest: Mutex<Vec<Option<u64>>>,
    floor: AtomicU64,
}

impl ClusterRetention {
    /// The retention of a cluster of `processes` processes: every checkpoint is kept until
    /// the processes agree on one to restore ([`ClusterRetention::restored`]) or each has
    /// said which is its newest.
    pub fn new(processes: usize) -> Self {
        ClusterRetention {
            inner: Arc::new(Inner {
                newest: Mutex::new(vec![None; processes.max(1)]),
                floor: AtomicU64::new(0),
            }),
        }
    }

    /// Takes in that the processes restored the checkpoint of `epoch`: every one holds it.
    pub fn restored(&self, epoch: u64) {
        self.inner.floor.fetch_max(epoch, Ordering::AcqRel);
    }

    /// The epoch from which on every checkpoint is kept: no process's newest written
    /// checkpoint is older.
    pub fn floor(&self) -> u64 {
        self.inner.floor.load(Ordering::Acquire)
    }

    /// Takes in that `process` has written the checkpoint of `epoch`; raises the floor once
    /// every process has said. A process that is not one of the cluster's is ignored.
    pub fn heard(&self, process: usize, epoch: u64) {
        let mut newest = self.inner.newest.lock().unwrap_or_else(|e| e.into_inner());
        let Some(said) = newest.get_mut(process) else {
            tracing::warn!(
                process,
                epoch,
                "a checkpoint report from a process the job does not have; ignored"
            );
            return;
        };
        *said = Some(said.map_or(epoch, |s| s.max(epoch)));
        if let Some(least) = newest.iter().copied().collect::<Option<Vec<u64>>>() {
            if let Some(least) = least.into_iter().min() {
                self.inner.floor.fetch_max(least, Ordering::AcqRel);
            }
        }
    }
}

/// Tells every worker of the job the newest checkpoint this worker's process has written.
pub trait ShareCheckpoints {
    /// Shares the newest checkpoint of `checkpoints`' collector, as process `process`, with
    /// every worker, which takes in each process's into `retention`. The operator follows
    /// this stream's frontier, and ends with it; a job without checkpoints builds nothing.
    fn share_checkpoints(
        self,
        checkpoints: &Checkpoints,
        process: usize,
        retention: ClusterRetention,
    );
}

impl<D: 'static> ShareCheckpoints for StreamVec<'_, u64, D> {
    fn share_checkpoints(
        self,
        checkpoints: &Checkpoints,
        process: usize,
        retention: ClusterRetention,
    ) {
        let Some(collector) = checkpoints.collector().cloned() else {
            return;
        };
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("ShareCheckpoints".to_owned(), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let mut input = builder.new_input(self, Pipeline);
        let (output, reports) = builder.new_output::<Vec<(usize, u64)>>();
        let mut output = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(output);
        builder.build(move |mut capabilities| {
            let mut capability = capabilities.pop();
            let mut said = None;
            move |frontiers| {
                input.for_each(|_, _| {});
                let Some(&time) = frontiers[0].frontier().first() else {
                    capability = None;
                    return;
                };
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                if *cap.time() < time {
                    cap.downgrade(&time);
                }
                let newest = collector.figures().last_epoch;
                if let Some(newest) = newest.filter(|&n| said < Some(n)) {
                    output.activate().session(&*cap).give((process, newest));
                    said = Some(newest);
                }
                activator.activate_after(POLL);
            }
        });
        reports
            .broadcast()
            .inspect(move |&(process, epoch)| retention.heard(process, epoch));
    }
}
