//! The engine's error types: [`Error`] for everything a job or a bench can fail with, and the
//! typed causes it carries ([`CheckpointError`], [`WorkerError`]).

use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the engine: configuration, start-up and the job's components.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job spec has problems; all of them are listed.
    #[error("invalid job spec:\n  - {}", problems.join("\n  - "))]
    Config {
        /// Every problem found, each naming its section and key.
        problems: Vec<String>,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A connector failed.
    #[error(transparent)]
    Connector(#[from] millrace_connectors::Error),
    /// The model registry failed.
    #[error(transparent)]
    Model(#[from] millrace_models::Error),
    /// The serving address could not be bound.
    #[error("binding the serving address {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint store could not be opened, or none of its checkpoints restored.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A thread or runtime of the job could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// What was being started.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A thread of the job panicked (the panic hook printed its message).
    #[error("{what} panicked")]
    Panicked {
        /// The thread.
        what: &'static str,
    },
    /// Timely could not start the dataflow's workers: its communication set-up failed. Timely
    /// reports the cause as text; this is all of it.
    #[error("the dataflow could not start: {0}")]
    Start(String),
    /// A worker of the dataflow failed.
    #[error("worker {worker} failed")]
    Worker {
        /// The worker's index in the job.
        worker: usize,
        /// Why.
        source: WorkerError,
    },
    /// A job or a bench ended before it did what it was started for; the message says what.
    #[error("{0}")]
    EndedEarly(&'static str),
    /// The final model version could not be published.
    #[error("the final model version was not published: {learned} events learned, the newest version has {published} (see the publish errors above)")]
    NotPublished {
        /// Events the job learned from.
        learned: u64,
        /// Events the newest published version learned from.
        published: u64,
    },
    /// The sample buffer's files could not be written or read.
    #[error("sample buffer: {0}")]
    Samples(#[from] millrace_samples::SampleError),
    /// A deep model could not be made or trained.
    #[cfg(feature = "deep")]
    #[error("deep model: {0}")]
    Deep(#[from] millrace_deep::DeepError),
    /// A retraining run could not read its rows or its settings.
    #[error("retraining: {0}")]
    Retrain(String),
    /// The job's source could not be opened.
    #[error("the `{kind}` source cannot be opened")]
    Source {
        /// The source's type.
        kind: String,
        /// Why.
        source: millrace_operators::BoxError,
    },
    /// The source could not resume where the restored checkpoint says (its records are gone
    /// from the broker, say): reading from anywhere else would lose or repeat records.
    #[error("the source cannot resume where the checkpoint says: {0}")]
    Resume(String),
}

/// Why a worker of the dataflow failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker's writer of an output could not be made.
    #[error("its writer of an output cannot be made")]
    Output(#[source] millrace_operators::BoxError),
    /// The source's reader for the worker could not be made.
    #[error("its reader of the source cannot be made")]
    Reader(#[source] millrace_operators::BoxError),
    /// The checkpoint the processes agreed to restore cannot be read (the same error for every
    /// worker of the process).
    #[error("the agreed checkpoint cannot be read")]
    Restore(#[source] Arc<CheckpointError>),
    /// A worker's source cannot resume where the restored checkpoint says (the same message
    /// for every worker of the job): reading from anywhere else would lose or repeat records.
    #[error("the source cannot resume where the checkpoint says: {0}")]
    Resume(String),
    /// Another worker of the job could not start (its error, whole): this one stops with it
    /// rather than wait for it in the dataflow.
    #[error("another worker could not start: {0}")]
    Peer(String),
    /// The worker's thread panicked. Timely hands on only the payload's type, so the message is
    /// the one the panic hook printed.
    #[error("its thread panicked (the panic's message is printed above)")]
    Panicked,
}

/// Why a checkpoint store cannot be used, or one of its checkpoints cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// RocksDB cannot open the state directory.
    #[error("cannot open the state directory {}", dir.display())]
    Open {
        /// The state directory.
        dir: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// RocksDB failed reading.
    #[error("reading the store")]
    Read(#[from] rocksdb::Error),
    /// The checkpoint has no meta record.
    #[error("no meta record")]
    NoMeta,
    /// The meta record is not what this version writes.
    #[error("unreadable meta record")]
    Meta(#[from] serde_json::Error),
    /// The checkpoint lacks a part this job has (the job's dataflow changed since).
    #[error("no part {name} of worker {worker} (was the job changed?)")]
    NoPart {
        /// The part.
        name: String,
        /// Its worker.
        worker: usize,
    },
    /// The meta record names a part whose bytes are gone.
    #[error("part {name} of worker {worker} is missing")]
    PartMissing {
        /// The part.
        name: String,
        /// Its worker.
        worker: usize,
    },
    /// A part's bytes do not match the length and checksum in the meta record.
    #[error("part {name} of worker {worker} does not match its checksum")]
    Checksum {
        /// The part.
        name: String,
        /// Its worker.
        worker: usize,
    },
    /// The checkpoint holds more parts than this job has.
    #[error("it has {stored} parts where this job has {expected} (was the job changed?)")]
    PartCount {
        /// Parts in the checkpoint.
        stored: usize,
        /// Parts of this job.
        expected: usize,
    },
    /// Checkpoints exist, but none reads back whole.
    #[error("no checkpoint in {} can be restored ({skipped} skipped; the newest because {newest}); the job refuses to start over silently and leaves them as they are: run it as it was, or start with `--allow-fresh-start` to begin afresh (its first checkpoint then replaces them)", dir.display())]
    NoneReadable {
        /// The state directory.
        dir: PathBuf,
        /// The checkpoints skipped.
        skipped: usize,
        /// Why the newest cannot be restored.
        newest: String,
    },
    /// The checkpoint was written by other workers than this process has: the job's number of
    /// workers (or processes) changed, and rescaling a checkpoint is not supported.
    #[error("it was written by {} workers ({stored:?}) where this process has {} ({have:?}): restoring with another number of workers is not supported", stored.len(), have.len())]
    Workers {
        /// The workers whose parts it holds.
        stored: Vec<usize>,
        /// This process's workers.
        have: Vec<usize>,
    },
    /// The checkpoint was written by a job of another number of workers over all its processes
    /// (processes added or removed): rescaling a checkpoint is not supported.
    #[error("it was written by a job of {stored} workers in all where this one has {have}: restoring with another number of workers or processes is not supported")]
    JobWorkers {
        /// The workers of the job that wrote it.
        stored: usize,
        /// The workers of this job.
        have: usize,
    },
    /// The state directory holds the checkpoints of the other layout: a job of several
    /// processes keeps them in `process-N` directories, a job of one process in the directory
    /// itself; a job switched between the two would find none of its own and start afresh.
    #[error("{} holds the checkpoints of a job of {found}; this one runs as {runs}: the job refuses to start over silently: run it as it was, or start with `--allow-fresh-start` to begin afresh", dir.display())]
    OtherLayout {
        /// The state directory.
        dir: PathBuf,
        /// What its checkpoints belong to.
        found: &'static str,
        /// What this job runs as.
        runs: &'static str,
    },
    /// Some process has checkpoints, but not one that every process of the job can restore.
    #[error("the job's processes have checkpoints but none that every process can restore (this process: epochs {readable:?}); the job refuses to start over silently: restore the processes' state directories together, or start with `--allow-fresh-start` to begin afresh")]
    NoneInCommon {
        /// The epochs this process can restore.
        readable: Vec<u64>,
    },
}

/// The values of timely's workers (what `guards.join()` gives), or the first failure as an
/// [`Error::Worker`]; `first` is the job's index of this process's first worker.
pub(crate) fn worker_results<T>(
    joined: Vec<std::result::Result<std::result::Result<T, WorkerError>, String>>,
    first: usize,
) -> Result<Vec<T>> {
    joined
        .into_iter()
        .enumerate()
        .map(|(i, result)| {
            let failed = |source| Error::Worker {
                worker: first + i,
                source,
            };
            result
                .map_err(|_| failed(WorkerError::Panicked))?
                .map_err(failed)
        })
        .collect()
}

/// `error` and every cause under it, joined by `: `: for a log line, which shows only what it is
/// given.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_worker_is_named_by_its_index_in_the_job() {
        let joined: Vec<std::result::Result<std::result::Result<u8, WorkerError>, String>> = vec![
            Ok(Ok(1)),
            Ok(Err(WorkerError::Restore(Arc::new(CheckpointError::NoMeta)))),
            Err("Any { .. }".to_owned()),
        ];
        match worker_results(joined, 4) {
            Err(Error::Worker {
                worker: 5,
                source: WorkerError::Restore(_),
            }) => {}
            other => panic!("expected worker 5's restore error, got {other:?}"),
        }
        let panicked = vec![Ok(Ok(1)), Ok(Ok(2)), Err("Any { .. }".to_owned())];
        match worker_results(panicked, 4) {
            Err(error @ Error::Worker { worker: 6, .. }) => assert_eq!(
                chain(&error),
                "worker 6 failed: its thread panicked (the panic's message is printed above)"
            ),
            other => panic!("expected worker 6's panic, got {other:?}"),
        }
        assert_eq!(
            worker_results(vec![Ok(Ok(1)), Ok(Ok(2))], 0).unwrap(),
            [1, 2]
        );
    }

    #[test]
    fn each_cause_is_printed_once() {
        let error = Error::Worker {
            worker: 0,
            source: WorkerError::Restore(Arc::new(CheckpointError::Checksum {
                name: "train".into(),
                worker: 0,
            })),
        };
        assert_eq!(
            chain(&error),
            "worker 0 failed: the agreed checkpoint cannot be read: part train of worker 0 does not match its checksum"
        );
    }
}
