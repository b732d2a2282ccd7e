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
//! request, so that each request gets its own answer and its own instance positions. A panic
//! while scoring is such an error too: it fails the request that caused it (a 500), and the
//! batching thread goes on.
//!
//! The queue holds at most `max_queue` requests, as Triton's `max_queue_size` does: a request
//! that finds it full is refused at once (a 429) rather than waiting behind work the server
//! cannot finish in time. A request whose client has gone while it waited is not scored.

use crate::score::{count_lookups, score, score_guarded, ScoreError, ScoreFn};
use crate::stats::{BatchStats, ServingStats};
use crate::store::ModelStore;
use crate::version::LoadedVersion;
use crossbeam_channel::TrySendError;
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
    /// Requests that may wait in the queue; one more is refused at once.
    pub max_queue: usize,
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
        if self.max_queue == 0 {
            problems.push("the batch queue must hold at least one request".to_owned());
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

/// The requests the batch queue holds unless told otherwise: half the predicts a server lets
/// be in flight by default (256), so that a full queue answers 429 before the server's cap
/// answers 503.
pub const DEFAULT_MAX_QUEUE: usize = 128;

/// A request's instances, scored: the instances come back for the shadow.
#[derive(Debug)]
pub(crate) struct Scored {
    pub(crate) instances: Vec<Box<RawValue>>,
    pub(crate) predictions: Result<Vec<f32>, ScoreError>,
}

/// Why the batcher did not score a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unscored {
    /// The queue held its limit of requests.
    Full(usize),
    /// The batching threads are gone.
    Stopped,
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
    max_queue: usize,
}

impl Batcher {
    /// Starts `options.threads` batching threads that count in `store`'s statistics.
    pub(crate) fn start(options: BatchOptions, store: &Arc<ModelStore>) -> std::io::Result<Self> {
        Batcher::start_scoring(options, store, score)
    }

    /// [`Batcher::start`], scoring with `score_fn`.
    fn start_scoring(
        options: BatchOptions,
        store: &Arc<ModelStore>,
        score_fn: ScoreFn,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::bounded(options.max_queue.max(1));
        for i in 0..options.threads.max(1) {
            let (queue, store) = (queue.clone(), store.clone());
            std::thread::Builder::new()
                .name(format!("millrace-batch-{i}"))
                .spawn(move || {
                    while let Some(batch) = next_batch(&queue, &options) {
                        score_batch(batch, store.stats(), score_fn);
                    }
                })?;
        }
        Ok(Batcher {
            jobs,
            max_queue: options.max_queue.max(1),
        })
    }

    /// Scores `instances` with `version` in a batch.
    ///
    /// # Errors
    ///
    /// At once when the queue is full, and when the batching threads are gone.
    pub(crate) async fn score(
        &self,
        version: Arc<LoadedVersion>,
        instances: Vec<Box<RawValue>>,
    ) -> Result<Scored, Unscored> {
        let answer = self.submit(version, instances)?;
        answer.await.map_err(|_| Unscored::Stopped)
    }

    /// Queues the job of scoring `instances` with `version`, without waiting for a place: the
    /// receiver of its answer, or why it was not queued.
    fn submit(
        &self,
        version: Arc<LoadedVersion>,
        instances: Vec<Box<RawValue>>,
    ) -> Result<oneshot::Receiver<Scored>, Unscored> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            version,
            instances,
            queued: Instant::now(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(Unscored::Full(self.max_queue)),
            Err(TrySendError::Disconnected(_)) => Err(Unscored::Stopped),
        }
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

/// Scores a batch, one call per version, and answers each job whose client still waits.
fn score_batch(mut batch: Vec<Job>, serving: &ServingStats, score_fn: ScoreFn) {
    let stats = &serving.batching;
    let waiting = batch.len();
    batch.retain(|job| !job.reply.is_closed());
    stats
        .abandoned
        .fetch_add((waiting - batch.len()) as u64, Ordering::Relaxed);
    if batch.is_empty() {
        return;
    }
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
        score_group(&version, group, serving, score_fn);
    }
}

/// Scores the jobs of one version together; when an instance fails (or scoring panics), each
/// job on its own.
fn score_group(
    version: &LoadedVersion,
    mut group: Vec<Job>,
    serving: &ServingStats,
    score_fn: ScoreFn,
) {
    let stats: &BatchStats = &serving.batching;
    let lens: Vec<usize> = group.iter().map(|job| job.instances.len()).collect();
    let mut all = Vec::with_capacity(lens.iter().sum());
    for job in &mut group {
        all.append(&mut job.instances);
    }
    let mut counts = TransformCounts::default();
    let scored = score_guarded(score_fn, version, &all, &mut counts, Some(serving));
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
                let predictions =
                    score_guarded(score_fn, version, &job.instances, &mut counts, None);
                if predictions.is_ok() {
                    count_lookups(serving, &counts);
                }
                answer(job, predictions);
            }
        }
    }
}

fn answer(job: Job, predictions: Result<Vec<f32>, ScoreError>) {
    // A client that went away no longer waits for its answer.
    let _ = job.reply.send(Scored {
        instances: job.instances,
        predictions,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_models::{FeatureSpec, ModelArtifact, Registry, Schema, ServedModel};
    use std::sync::Mutex;

    /// Held by a test while the scorer must not finish an instance that says `wait`.
    static GATE: Mutex<()> = Mutex::new(());

    /// A scorer for these tests: 0.5 per instance, a panic for an instance that says `panic`,
    /// an error for one that says `bad`, and a wait on [`GATE`] for one that says `wait`.
    fn scorer(
        _: &LoadedVersion,
        instances: &[Box<RawValue>],
        _: &mut TransformCounts,
        _: Option<&ServingStats>,
    ) -> Result<Vec<f32>, String> {
        for (i, instance) in instances.iter().enumerate() {
            match instance.get() {
                "\"panic\"" => panic!("instance {i} panics"),
                "\"bad\"" => return Err(format!("instance {i}: bad")),
                "\"wait\"" => drop(GATE.lock()),
                _ => {}
            }
        }
        Ok(vec![0.5; instances.len()])
    }

    fn instances(texts: &[&str]) -> Vec<Box<RawValue>> {
        texts
            .iter()
            .map(|t| RawValue::from_string(format!("\"{t}\"")).unwrap())
            .collect()
    }

    fn version() -> Arc<LoadedVersion> {
        let spec = FeatureSpec::Hashed { hash_bits: 4 };
        let weights = vec![0.0; spec.dimension(&Schema::criteo())];
        let artifact = ModelArtifact::logistic_regression("ctr", spec, weights);
        Arc::new(LoadedVersion {
            model: ServedModel::from_artifact(&artifact),
            stats: Default::default(),
            loaded_unix_ms: 0,
            rows: None,
            parser: None,
        })
    }

    /// A batcher of one thread over a store of an empty registry (kept while `TempDir` lives).
    fn start(
        max_instances: usize,
        max_queue: usize,
    ) -> (Batcher, Arc<ModelStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ModelStore::new(Registry::open(dir.path()).unwrap()));
        let options = BatchOptions {
            max_instances,
            timeout: Duration::from_secs(30),
            threads: 1,
            max_queue,
        };
        let batcher = Batcher::start_scoring(options, &store, scorer).unwrap();
        (batcher, store, dir)
    }

    /// Waits (at most ten seconds) until the batching thread has taken every queued job.
    fn until_taken(batcher: &Batcher) {
        for _ in 0..10_000 {
            if batcher.jobs.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the batching thread took no job in ten seconds");
    }

    #[tokio::test]
    async fn a_panic_fails_its_own_request_and_the_batcher_goes_on() {
        let (batcher, store, _dir) = start(3, 8);
        let answers: Vec<_> = [["one"], ["panic"], ["two"]]
            .iter()
            .map(|texts| batcher.submit(version(), instances(texts)).unwrap())
            .collect();
        let mut predictions = Vec::new();
        for answer in answers {
            predictions.push(answer.await.unwrap().predictions);
        }
        assert_eq!(predictions[0], Ok(vec![0.5]));
        assert!(
            matches!(&predictions[1], Err(ScoreError::Panicked(why)) if why == "instance 0 panics"),
            "{:?}",
            predictions[1]
        );
        assert_eq!(predictions[2], Ok(vec![0.5]));
        // Three instances fill a batch: no wait for the timeout.
        let next = batcher
            .score(version(), instances(&["three", "bad", "four"]))
            .await;
        assert_eq!(
            next.unwrap().predictions,
            Err(ScoreError::Instance("instance 1: bad".to_owned()))
        );
        let next = batcher
            .score(version(), instances(&["five", "six", "seven"]))
            .await;
        assert_eq!(next.unwrap().predictions, Ok(vec![0.5; 3]));
        assert_eq!(
            store.stats().batching.split_batches.load(Ordering::Relaxed),
            2
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_gone_client_is_not_scored() {
        let (batcher, store, _dir) = start(1, 2);
        let gate = GATE.lock().unwrap();
        let busy = batcher.submit(version(), instances(&["wait"])).unwrap();
        until_taken(&batcher);
        let queued = batcher.submit(version(), instances(&["one"])).unwrap();
        let gone = batcher.submit(version(), instances(&["two"])).unwrap();
        assert_eq!(
            batcher.submit(version(), instances(&["three"])).err(),
            Some(Unscored::Full(2))
        );
        drop(gone);
        drop(gate);
        assert_eq!(busy.await.unwrap().predictions, Ok(vec![0.5]));
        assert_eq!(queued.await.unwrap().predictions, Ok(vec![0.5]));
        let after = batcher.score(version(), instances(&["four"])).await;
        assert_eq!(after.unwrap().predictions, Ok(vec![0.5]));
        let stats = &store.stats().batching;
        assert_eq!(stats.abandoned.load(Ordering::Relaxed), 1);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 3);
    }
}
