//! The retraining stage (`[retrain]`): a thread beside the dataflow that periodically trains a
//! deep model on the sample buffer and publishes it behind the evaluation gate. It reads only
//! whole segments from disk, so the dataflow never waits on it.

use crate::metrics::{JobStats, RetrainStats};
use crate::spec::{JobSpec, RetrainSpec};
use millrace_deep::{parse_device, DeepSpec, Gate, Quality, Trainer, Verdict};
use millrace_models::{FeatureSpec, ModelArtifact, Registry};
use millrace_samples::{read_buffer, SampleFields, SampleRows};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the thread looks at the buffered rows' count and the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What one run needs.
struct Stage {
    spec: RetrainSpec,
    /// The online model's name (its FeatureMap versions are the rows').
    online: String,
    /// The name deep versions go under.
    published: String,
    features: FeatureSpec,
    registry: Registry,
    /// This process's workers' buffer directories.
    dirs: Vec<PathBuf>,
    stats: Arc<JobStats>,
    /// Set when the job is stopped: a run in progress ends at its next step.
    cancel: Arc<AtomicBool>,
}

/// The running stage.
pub(super) struct Retrainer {
    thread: JoinHandle<()>,
    /// Set to end the thread; with `true` beside it, after one last run.
    end: Arc<(Mutex<Option<bool>>, Condvar)>,
    /// Ends a run in progress.
    cancel: Arc<AtomicBool>,
}

impl Retrainer {
    /// Starts the stage of `spec` on process 0 (`None` elsewhere, or without `[retrain]`),
    /// training on the buffers of this process's workers `local`.
    pub(super) fn start(
        spec: &JobSpec,
        registry: &Registry,
        local: &[usize],
        process: usize,
        stats: &Arc<JobStats>,
    ) -> Option<Retrainer> {
        let retrain = spec.retrain.clone().filter(|_| process == 0)?;
        let samples = spec.samples.as_ref()?;
        let dir = samples.directory(spec.checkpoint.as_ref())?;
        let stage = Stage {
            published: retrain.published_name(&spec.name),
            spec: retrain,
            online: spec.name.clone(),
            features: spec.features.clone(),
            registry: registry.clone(),
            dirs: local
                .iter()
                .map(|w| dir.join(format!("worker-{w}")))
                .collect(),
            stats: stats.clone(),
            cancel: Arc::default(),
        };
        let cancel = stage.cancel.clone();
        stats.retrain.enabled.store(true, Ordering::Relaxed);
        let end = Arc::new((Mutex::new(None), Condvar::new()));
        let signal = end.clone();
        let thread = std::thread::Builder::new()
            .name("millrace-retrain".to_owned())
            .spawn(move || stage.run(&signal))
            .map_err(|error| tracing::error!(%error, "the retraining stage cannot start"))
            .ok()?;
        Some(Retrainer {
            thread,
            end,
            cancel,
        })
    }

    /// Ends the stage and waits for it: after one last run when `last_run` (the input ended),
    /// else at once, a run in progress ending at its next training step.
    pub(super) fn finish(self, last_run: bool) {
        if !last_run {
            self.cancel.store(true, Ordering::Relaxed);
        }
        let (lock, wake) = &*self.end;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(last_run);
        wake.notify_all();
        if self.thread.join().is_err() {
            tracing::error!("the retraining stage panicked");
        }
    }
}

impl Stage {
    /// Runs every `every_seconds` or `every_rows` new rows until ended.
    fn run(&self, end: &(Mutex<Option<bool>>, Condvar)) {
        millrace_deep::set_threads(self.spec.threads);
        let every = Duration::from_secs(self.spec.every_seconds);
        let mut last = Instant::now();
        let mut rows_then = self.stats.samples.appended.load(Ordering::Relaxed);
        loop {
            let (lock, wake) = end;
            let ended = {
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = wake
                    .wait_timeout(guard, POLL)
                    .unwrap_or_else(|e| e.into_inner());
                *guard
            };
            let rows_now = self.stats.samples.appended.load(Ordering::Relaxed);
            let by_rows = self.spec.every_rows > 0
                && rows_now.saturating_sub(rows_then) >= self.spec.every_rows;
            match ended {
                Some(true) => {
                    self.run_once();
                    return;
                }
                Some(false) => return,
                None if by_rows || last.elapsed() >= every => {
                    self.run_once();
                    last = Instant::now();
                    rows_then = rows_now;
                }
                None => {}
            }
        }
    }

    /// One run, its outcome counted and said. A panic inside libtorch is a failed run, not
    /// the end of the stage.
    fn run_once(&self) {
        let stats: &RetrainStats = &self.stats.retrain;
        stats.runs.fetch_add(1, Ordering::Relaxed);
        stats.training.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.train_and_judge()))
                .unwrap_or_else(|_| {
                    Err(crate::Error::Retrain(
                        "the run panicked (see the message above)".to_owned(),
                    ))
                });
        stats.training.store(false, Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Outcome::Published {
                version,
                quality,
                current,
            }) => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                stats.version.store(version, Ordering::Relaxed);
                tracing::info!(model = %self.published, version, auc = ?quality.auc, logloss = ?quality.logloss, current_auc = ?current.auc, current_logloss = ?current.logloss, seconds, "a retrained deep version passed the gate and is published");
                stats.say(format!("v{version} published"));
            }
            Ok(Outcome::Refused { reasons }) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(model = %self.published, reasons = %reasons.join("; "), seconds, "the gate refused a retrained candidate; the current version keeps serving");
                stats.say("refused".to_owned());
            }
            Ok(Outcome::Skipped(why)) => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = %self.published, why, "retraining skipped");
                stats.say("waiting".to_owned());
            }
            Err(error) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(model = %self.published, %error, "a retraining run failed");
                stats.say("failed".to_owned());
            }
        }
    }

    /// Reads the window, trains a candidate, scores it beside the current version and
    /// publishes it if the gate lets it through.
    fn train_and_judge(&self) -> Result<Outcome, crate::Error> {
        let Some(online) = self.registry.latest(&self.online)? else {
            return Ok(Outcome::Skipped(
                "no online version (and FeatureMap) published yet",
            ));
        };
        let online = self.registry.load(&self.online, online)?;
        let Some(map) = online.feature_map else {
            return Ok(Outcome::Skipped("the online version has no FeatureMap"));
        };
        let fields = SampleFields::of_layout(&map.layout)?;
        let rows = self.window(&fields)?;
        let current = match self.registry.latest(&self.published)? {
            Some(version) => Some(self.registry.load(&self.published, version)?),
            None => None,
        };
        let online_quality = self.stats.trainer.summary();
        if current.is_none() && online_quality.window_auc.is_none() {
            return Ok(Outcome::Skipped(
                "no deep version yet and no progressive validation of the online model to compare with (since the start)",
            ));
        }
        if rows.len() < self.spec.min_rows.max(2) {
            return Ok(Outcome::Skipped("fewer rows in the window than `min_rows`"));
        }
        let split = rows.len() - ((rows.len() as f64 * self.spec.holdout).ceil() as usize).max(1);
        let deep = self.deep_spec()?;
        let device = parse_device(&self.spec.device)?;
        let mut trainer = Trainer::new(&deep, &fields, device)?;
        if let Some(current) = &current {
            if trainer.warm_start(current).is_err() {
                tracing::info!(model = %self.published, "the newest deep version is of another architecture: training afresh");
            }
        }
        let started = std::time::Instant::now();
        trainer.train_until(&rows, 0..split, &self.cancel)?;
        self.record_table(&trainer, started.elapsed().as_secs_f64());
        let candidate = trainer.evaluate(&rows, split..rows.len())?;
        self.stats.retrain.candidate_auc.store(
            candidate.auc.unwrap_or(f64::NAN).to_bits(),
            Ordering::Relaxed,
        );
        // The newest deep version, scored on the held-out rows (newer than its own window once
        // enough rows arrived); before the first, the online model's progressive validation on
        // the recent events, its quality as it served them: it has learned the held-out rows
        // themselves, so scoring it on them would flatter it.
        let now = match &current {
            Some(current) => score(current, &fields, &rows, split..rows.len()),
            None => Quality {
                rows: online_quality.events as usize,
                auc: online_quality.window_auc,
                logloss: online_quality.logloss,
            },
        };
        let gate = Gate {
            auc_tolerance: self.spec.auc_tolerance,
            logloss_tolerance: self.spec.logloss_tolerance,
        };
        if self.cancel.load(Ordering::Relaxed) {
            return Err(millrace_deep::DeepError::Cancelled.into());
        }
        match gate.judge(&candidate, Some(&now), trainer.finite()) {
            Verdict::Refuse(reasons) => Ok(Outcome::Refused { reasons }),
            Verdict::Publish => {
                let mut artifact =
                    trainer.to_artifact(&self.published, self.features.clone(), map)?;
                artifact.meta.trained_events = split as u64;
                artifact.meta.progressive_auc = candidate.auc;
                artifact.meta.progressive_logloss = candidate.logloss;
                let version = self.registry.publish(&mut artifact)?;
                Ok(Outcome::Published {
                    version,
                    quality: candidate,
                    current: now,
                })
            }
        }
    }

    /// Records the host-resident table's figures of a run that trained for `seconds`.
    fn record_table(&self, trainer: &Trainer, seconds: f64) {
        let Some(table) = trainer.table_stats() else {
            return;
        };
        let stats = &self.stats.retrain;
        stats.gathered.fetch_add(table.gathered, Ordering::Relaxed);
        let rate = table.gathered as f64 / seconds.max(1e-9);
        stats.gathered_rate.store(rate.to_bits(), Ordering::Relaxed);
        stats
            .row_bytes
            .store(table.row_bytes as u64, Ordering::Relaxed);
        stats.table_rows.store(table.rows as u64, Ordering::Relaxed);
    }

    /// The buffered rows of the window, oldest event first.
    fn window(&self, fields: &SampleFields) -> Result<SampleRows, crate::Error> {
        let mut all = SampleRows::new();
        for dir in self.dirs.iter().filter(|d| d.exists()) {
            let (named, rows) = read_buffer(dir)?;
            if named.is_some_and(|n| n != *fields) {
                return Err(crate::Error::Retrain(format!(
                    "{} holds rows of another FeatureMap layout than the online model's",
                    dir.display()
                )));
            }
            all.extend(&rows);
        }
        let time = |i: usize| all.event_times[i].unwrap_or(i64::MIN);
        let newest = (0..all.len()).map(time).max().unwrap_or(i64::MIN);
        let from = match self.spec.window_seconds {
            0 => i64::MIN,
            s => newest.saturating_sub(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
        let mut order: Vec<usize> = (0..all.len()).filter(|&i| time(i) >= from).collect();
        order.sort_by_key(|&i| (time(i), all.epochs[i]));
        Ok(all.select(&order))
    }

    fn deep_spec(&self) -> Result<DeepSpec, crate::Error> {
        let model = self.spec.model.parse().map_err(crate::Error::Retrain)?;
        Ok(DeepSpec {
            model,
            embedding_dim: self.spec.embedding_dim,
            mlp: self.spec.mlp.clone(),
            cross_layers: self.spec.cross_layers,
            learning_rate: self.spec.learning_rate,
            batch_size: self.spec.batch_size,
            passes: self.spec.passes,
            seed: self.spec.seed,
            embeddings: self.spec.embeddings.clone(),
            mixed_precision: self.spec.mixed_precision,
        })
    }
}

/// What a run came to.
enum Outcome {
    Published {
        version: u64,
        quality: Quality,
        current: Quality,
    },
    Refused {
        reasons: Vec<String>,
    },
    Skipped(&'static str),
}

/// The quality of `artifact` (any architecture) on rows `range`, each row given to it as the
/// transform makes rows: the bias slot (when the layout has one), then the entries' slots.
fn score(
    artifact: &ModelArtifact,
    fields: &SampleFields,
    rows: &SampleRows,
    range: std::ops::Range<usize>,
) -> Quality {
    let bias = artifact
        .feature_map
        .as_ref()
        .is_some_and(|map| map.layout.bias);
    let mut predictions = Vec::with_capacity(range.len());
    let (mut slots, mut values) = (Vec::new(), Vec::new());
    for i in range.clone() {
        slots.clear();
        values.clear();
        if bias {
            slots.push(0);
            values.push(1.0);
        }
        let (fs, ids, vs) = rows.entries(i);
        for ((&f, &id), &v) in fs.iter().zip(ids).zip(vs) {
            if let Some(slot) = fields.slot(f, id) {
                slots.push(slot);
                values.push(v);
            }
        }
        predictions.push(artifact.predict_row(&slots, &values));
    }
    Quality::of(&predictions, &rows.labels[range])
}
