//! Checkpoints of a job: its parts, its process's store, the epoch the processes agree to
//! restore, and the collector that writes them.

use super::Cluster;
use crate::checkpoint::CheckpointStore;
use crate::error::{CheckpointError, Result};
use crate::metrics::JobStats;
use crate::spec::JobSpec;
use millrace_models::FeatureSpec;
use millrace_operators::checkpoint::{Choice, Collector};
use millrace_operators::{dataflow_parts, ClusterRetention};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The checkpoint parts of the job's dataflow (see [`dataflow_parts`]).
fn checkpoint_parts(spec: &JobSpec) -> Vec<&'static str> {
    let predictions = spec
        .sinks
        .as_ref()
        .is_some_and(|s| s.predictions().is_some());
    dataflow_parts(spec.labels.is_some(), spec.samples.is_some(), predictions)
}

/// What a process needs to checkpoint: its store, its readable checkpoints, and how it chooses
/// checkpoint epochs.
#[derive(Clone)]
pub(super) struct Checkpointing {
    store: CheckpointStore,
    parts: Vec<&'static str>,
    readable: Vec<u64>,
    choice: Choice,
    max_failures: u32,
    /// In a cluster: what the process knows of the others' checkpoints, which its store keeps.
    retention: Option<ClusterRetention>,
}

/// Opens this process's checkpoint store, when the job checkpoints, and finds the checkpoints
/// that read back whole.
pub(super) fn checkpointing(
    spec: &JobSpec,
    local: &[usize],
    cluster: Option<&Cluster>,
    allow_fresh_start: bool,
    stats: &JobStats,
) -> Result<Option<Checkpointing>> {
    let Some(checkpoint) = &spec.checkpoint else {
        return Ok(None);
    };
    let (dir, choice) = match cluster {
        Some(cluster) => (
            checkpoint
                .state_dir
                .join(format!("process-{}", cluster.process)),
            Choice::EveryNth((checkpoint.interval_ms / spec.progress.epoch_ms.max(1)).max(1)),
        ),
        None => (
            checkpoint.state_dir.clone(),
            Choice::Interval(Duration::from_millis(checkpoint.interval_ms)),
        ),
    };
    let replaced = match spec.features {
        FeatureSpec::Hashed { .. } => crate::checkpoint::HASHED_DECODE,
        FeatureSpec::Map(_) => &[],
    };
    refuse_other_layout(&checkpoint.state_dir, cluster.is_some(), allow_fresh_start)?;
    let job_workers = local.len() * cluster.map_or(1, |c| c.hosts.len().max(1));
    let retention = cluster.map(|c| ClusterRetention::new(c.process, c.hosts.len()));
    let mut store = CheckpointStore::open(&dir, checkpoint.keep)?
        .replacing(replaced)
        .of_job(job_workers);
    if let Some(retention) = &retention {
        store = store.in_cluster(retention.clone());
    }
    let parts = checkpoint_parts(spec);
    let (readable, skipped) = store.readable(local, &parts);
    stats
        .checkpoints_skipped
        .store(skipped.len() as u64, Ordering::Relaxed);
    if let (true, Some((_, newest))) = (readable.is_empty(), skipped.last()) {
        let refusal = CheckpointError::NoneReadable {
            dir,
            skipped: skipped.len(),
            newest: newest.to_string(),
        };
        if !allow_fresh_start {
            return Err(refusal.into());
        }
        tracing::warn!(%refusal, "starting afresh, as `--allow-fresh-start` asks");
    }
    Ok(Some(Checkpointing {
        store,
        parts,
        readable,
        choice,
        max_failures: spec.checkpoint.as_ref().map_or(1, |c| c.max_failures),
        retention,
    }))
}

/// Refuses (unless a fresh start is allowed) a state directory that holds the checkpoints of
/// the other layout: `process-N` directories for a job of one process, a store in the directory
/// itself for a job of several.
fn refuse_other_layout(
    state_dir: &std::path::Path,
    cluster: bool,
    allow_fresh_start: bool,
) -> Result<()> {
    let found = if cluster {
        state_dir.join("CURRENT").exists().then_some("one process")
    } else {
        std::fs::read_dir(state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with("process-"))
            .then_some("several processes")
    };
    let Some(found) = found else {
        return Ok(());
    };
    let refusal = CheckpointError::OtherLayout {
        dir: state_dir.to_owned(),
        found,
        runs: if cluster {
            "several processes"
        } else {
            "one process"
        },
    };
    if !allow_fresh_start {
        return Err(refusal.into());
    }
    tracing::warn!(%refusal, "starting afresh, as `--allow-fresh-start` asks");
    Ok(())
}

impl Checkpointing {
    /// The epochs of the checkpoints that read back whole.
    pub(super) fn readable(&self) -> &[u64] {
        &self.readable
    }

    /// In a cluster, what the process knows of the others' checkpoints.
    pub(super) fn retention(&self) -> Option<&ClusterRetention> {
        self.retention.as_ref()
    }

    /// The collector of the process whose workers are `local`, restoring the checkpoint of
    /// `restored_epoch` (the one the processes agreed on) or starting afresh; installed in
    /// `stats` for the figures.
    ///
    /// # Errors
    ///
    /// When the agreed checkpoint does not read back whole.
    pub(super) fn collector(
        &self,
        restored_epoch: Option<u64>,
        local: &[usize],
        stats: &JobStats,
    ) -> std::result::Result<Collector, CheckpointError> {
        let restored = match restored_epoch {
            Some(epoch) => Some(self.store.checkpoint(epoch, local, &self.parts)?),
            None => None,
        };
        if let (Some(retention), Some(epoch)) = (&self.retention, restored_epoch) {
            retention.restored(epoch);
        }
        match &restored {
            Some(r) => tracing::info!(
                epoch = r.epoch,
                resume_epoch = r.resume_epoch,
                state_dir = %self.store.dir().display(),
                "restoring a checkpoint"
            ),
            None => {
                tracing::info!(state_dir = %self.store.dir().display(), "no checkpoint to restore: starting afresh")
            }
        }
        let collector = Collector::new(
            local.to_vec(),
            &self.parts,
            self.choice,
            Box::new(self.store.clone()),
            restored,
        )
        .with_max_failures(self.max_failures);
        let _ = stats.checkpoints.set(collector.clone());
        Ok(collector)
    }
}

/// What the job's processes agreed to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Agreed {
    /// The newest epoch every process can restore.
    pub(super) epoch: Option<u64>,
    /// Whether any process can restore a checkpoint at all (so that, without a common one,
    /// every process refuses alike).
    pub(super) any: bool,
}

/// The newest epoch every process can restore, agreed on by all the job's workers: each
/// process's first worker sends its readable epochs to every worker.
pub(super) fn agree(
    worker: &mut timely::worker::Worker,
    mine: Option<Vec<u64>>,
    processes: usize,
) -> Agreed {
    let lists = gather(worker, mine);
    let any = lists.iter().any(|list| !list.is_empty());
    let epoch = match lists.first() {
        Some(first) if lists.len() >= processes => first
            .iter()
            .rev()
            .find(|epoch| lists.iter().all(|list| list.contains(epoch)))
            .copied(),
        _ => None,
    };
    Agreed { epoch, any }
}

/// What every worker of the job said (`mine` is this worker's say, if any), in the order they
/// arrived: a round every worker takes part in, before the job's dataflow is built.
pub(super) fn gather<T>(worker: &mut timely::worker::Worker, mine: Option<T>) -> Vec<T>
where
    T: timely::ExchangeData + Clone,
{
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::vec::Broadcast;
    use timely::dataflow::operators::{Inspect, Probe, ToStream};

    let said: Rc<RefCell<Vec<T>>> = Rc::default();
    let received = said.clone();
    let probe = worker.dataflow::<u64, _, _>(move |scope| {
        mine.into_iter()
            .to_stream(scope)
            .broadcast()
            .inspect(move |item| received.borrow_mut().push(item.clone()))
            .probe()
            .0
    });
    worker.step_while(|| !probe.done());
    let said = said.borrow().clone();
    said
}

#[cfg(test)]
mod tests {
    use super::refuse_other_layout;

    /// A job switched between one process and several finds the other layout's checkpoints
    /// and refuses, unless a fresh start is allowed; a fresh directory is fine either way.
    #[test]
    fn the_other_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_other_layout(dir.path(), false, false).is_ok());
        assert!(refuse_other_layout(dir.path(), true, false).is_ok());
        std::fs::create_dir(dir.path().join("process-0")).unwrap();
        let refused = refuse_other_layout(dir.path(), false, false).unwrap_err();
        assert!(
            refused.to_string().contains("a job of several processes"),
            "{refused}"
        );
        assert!(refuse_other_layout(dir.path(), false, true).is_ok());
        assert!(refuse_other_layout(dir.path(), true, false).is_ok());
        std::fs::write(dir.path().join("CURRENT"), "MANIFEST-000001\n").unwrap();
        let refused = refuse_other_layout(dir.path(), true, false).unwrap_err();
        assert!(
            refused.to_string().contains("a job of one process"),
            "{refused}"
        );
    }
}
