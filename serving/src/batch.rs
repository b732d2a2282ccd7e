//! The dynamic batcher: predict requests that arrive together are scored together.
//!
//! With batching on (`millrace serve --batch-max-instances N`), a predict request hands its
//! instances to a queue instead of scoring them on the thread that serves its connection. A
//! batching thread takes the first request in the queue and waits up to the batch timeout for
//! more, until the batch holds at least the maximum number of instances. It then scores each
//! version's share of the batch in one call (a traffic split may route the requests of one
//! batch to different versions) and answers every request with its own predictions. As in TF
//! Serving, the timeout bounds the latency a lone request pays; a FeatureMap model transforms
//! the whole batch at once, so its per-call costs (a parser, an event batch, the CSR rows) are
//! paid once per batch rather than once per request.
//!
//! Scoring runs on the batching threads, off the threads that serve connections. An instance
//! that fails makes only its own request fail: a batch with an error is scored again request by
//! request, so that each request gets its own answer and its own instance positions.

use crate::score::{count_lookups, score};
use crate::stats::{BatchStats, ServingStats};
use crate::store::ModelStore;
use crate::version::LoadedVersion;
use millrace_models::fmap::TransformCounts;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How requests are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// A batch stops waiting once it holds at least this many instances.
    pub max_instances: usize,
    /// The longest a batch waits for more requests after its first one.
    pub timeout: Duration,
    /// Threads that form and score batches.
    pub threads: usize,
}

impl BatchOptions {
    /// Problems with the options, empty when they can run.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_instances == 0 {
            problems.push("a batch must hold at least one instance".to_owned());
        }
        if self.threads == 0 {
            problems.push("batching needs at least one thread".to_owned());
        }
        if self.timeout > MAX_BATCH_TIMEOUT {
            problems.push(format!(
                "a batch may wait at most {} s for more requests (got {} s)",
                MAX_BATCH_TIMEOUT.as_secs(),
                self.timeout.as_secs_f64()
            ));
        }
        problems
    }
}

/// The longest a batch may wait for more requests: a lone request waits this long.
const MAX_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A request's instances, scored: the instances come back for the shadow.
#[derive(Debug)]
pub(crate) struct Scored {
    pub(crate) instances: Vec<Box<RawValue>>,
    pub(crate) predictions: Result<Vec<f32>, String>,
}

struct Job {
    version: Arc<LoadedVersion>,
    instances: Vec<Box<RawValue>>,
    queued: Instant,
    reply: oneshot::Sender<Scored>,
}

/// The queue of predict requests and the threads that batch and score them. The threads stop
/// once the batcher and every clone of it are dropped.
#[derive(Clone, Debug)]
pub(crate) struct Batcher {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Batcher {
    /// Starts `options.threads` batching threads that count in `store`'s statistics.
    pub(crate) fn start(options: BatchOptions, store: &Arc<ModelStore>) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded();
        for i in 0..options.threads.max(1) {
            let (queue, store) = (queue.clone(), store.clone());
            std::thread::Builder::new()
                .name(format!("millrace-batch-{i}"))
                .spawn(move || {
                    while let Some(batch) = next_batch(&queue, &options) {
                        score_batch(batch, store.stats());
                    }
                })?;
        }
        Ok(Batcher { jobs })
    }

    /// Scores `instances` with `version` in a batch; `None` when the batching threads are gone.
    pub(crate) async fn score(
        &self,
        version: Arc<LoadedVersion>,
        instances: Vec<Box<RawValue>>,
    ) -> Option<Scored> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            version,
            instances,
            queued: Instant::now(),
            reply,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

/// The next batch: the first job in the queue, then whatever arrives until the batch is full
/// or its time is up. `None` once the queue is closed and empty.
fn next_batch(
    queue: &crossbeam_channel::Receiver<Job>,
    options: &BatchOptions,
) -> Option<Vec<Job>> {
    let first = queue.recv().ok()?;
    let deadline = Instant::now() + options.timeout;
    let mut held = first.instances.len();
    let mut batch = vec![first];
    while held < options.max_instances {
        match queue.recv_deadline(deadline) {
            Ok(job) => {
                held += job.instances.len();
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Scores a batch, one call per version, and answers each job.
fn score_batch(mut batch: Vec<Job>, serving: &ServingStats) {
    let stats = &serving.batching;
    let now = Instant::now();
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let (mut instances, mut waited) = (0, 0);
    for job in &batch {
        instances += job.instances.len() as u64;
        waited += now.duration_since(job.queued).as_micros() as u64;
    }
    stats.instances.fetch_add(instances, Ordering::Relaxed);
    stats.wait_micros.fetch_add(waited, Ordering::Relaxed);
    while !batch.is_empty() {
        let version = batch[0].version.clone();
        let (group, rest): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| Arc::ptr_eq(&job.version, &version));
        batch = rest;
        score_group(&version, group, stats, serving);
    }
}

/// Scores the jobs of one version together; when an instance fails, each job on its own.
fn score_group(
    version: &LoadedVersion,
    mut group: Vec<Job>,
    stats: &BatchStats,
    serving: &ServingStats,
) {
    let lens: Vec<usize> = group.iter().map(|job| job.instances.len()).collect();
    let mut all = Vec::with_capacity(lens.iter().sum());
    for job in &mut group {
        all.append(&mut job.instances);
    }
    let mut counts = TransformCounts::default();
    let scored = score(version, &all, &mut counts, Some(serving));
    let mut all = all.into_iter();
    for (job, &len) in group.iter_mut().zip(&lens) {
        job.instances = all.by_ref().take(len).collect();
    }
    match scored {
        Ok(predictions) => {
            count_lookups(serving, &counts);
            let mut predictions = predictions.into_iter();
            for job in group {
                let mine = predictions.by_ref().take(job.instances.len()).collect();
                answer(job, Ok(mine));
            }
        }
        Err(_) => {
            stats.split_batches.fetch_add(1, Ordering::Relaxed);
            for job in group {
                let mut counts = TransformCounts::default();
                let predictions = score(version, &job.instances, &mut counts, None);
                count_lookups(serving, &counts);
                answer(job, predictions);
            }
        }
    }
}

fn answer(job: Job, predictions: Result<Vec<f32>, String>) {
    // A client that went away no longer waits for its answer.
    let _ = job.reply.send(Scored {
        instances: job.instances,
        predictions,
    });
}
