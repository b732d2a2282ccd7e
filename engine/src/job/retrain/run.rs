//! One run of the retraining stage: rank 0 reads the registry and plans, every rank reads its
//! own workers' buffers, the ranks train together (one rank in a job of one process), and rank
//! 0 scores the candidate on every rank's held-out rows, judges it and publishes it.

use super::agree::{from_rank_zero, numbers, to_rank_zero};
use super::Stage;
use millrace_deep::collective::AllReduce;
use millrace_deep::{parse_device, DeepSpec, Gate, Quality, Trainer, Verdict};
use millrace_models::fmap::FeatureMap;
use millrace_models::ModelArtifact;
use millrace_samples::{decode_rows, encode_rows, read_buffer, SampleFields, SampleRows};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The most bytes of held-out rows the ranks send rank 0 in one run: half of what one
/// exchange of the ring carries, the rest left for its framing.
const MAX_HOLDOUT_BYTES: u64 = 512 << 20;

/// What a run came to, the same on every rank.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Outcome {
    /// The candidate passed the gate and was published as `version`.
    Published {
        version: u64,
        quality: Quality,
        current: Quality,
    },
    /// The gate refused the candidate.
    Refused { reasons: Vec<String> },
    /// Nothing to train yet.
    Skipped(String),
    /// The run failed in a way every rank knows of (rank 0 could not plan or publish, a rank
    /// could not read its buffer); the stage goes on.
    Failed(String),
}

/// What rank 0 reads from the registry before a run.
struct Prepared {
    fields: SampleFields,
    map: Arc<FeatureMap>,
    /// The newest deep version, which the candidate warm-starts from and is judged against.
    current: Option<ModelArtifact>,
    /// The online model's progressive validation, the yardstick before the first deep version.
    online: Quality,
}

/// What rank 0 tells the other ranks before they read their rows.
#[derive(Debug, Serialize, Deserialize)]
enum Plan {
    Go(SampleFields),
    Skip(String),
    Fail(String),
}

/// This rank's rows of the window, and how many of them it trains on (the rest, its newest,
/// are held out).
struct Window {
    rows: SampleRows,
    split: usize,
    /// The rows the ranks train on, in all.
    trained: usize,
}

impl Stage {
    /// Plans, reads, trains and judges, as rank `comm.rank()` of the stage's ranks (`None`:
    /// the only one). Every rank returns rank 0's outcome.
    ///
    /// # Errors
    ///
    /// A failure of this rank alone (libtorch, a peer gone): with several ranks the stage
    /// then ends, since the others are out of step with it.
    pub(super) fn train_and_judge(
        &self,
        mut comm: Option<&mut (dyn AllReduce + '_)>,
    ) -> Result<Outcome, crate::Error> {
        let rank = comm.as_ref().map_or(0, |c| c.rank());
        let prepared = (rank == 0).then(|| self.prepare());
        let plan = match &prepared {
            Some(Ok(Ok(prepared))) => Some(Plan::Go(prepared.fields.clone())),
            Some(Ok(Err(why))) => Some(Plan::Skip(why.clone())),
            Some(Err(error)) => Some(Plan::Fail(error.to_string())),
            None => None,
        };
        let plan = match comm.as_deref_mut() {
            Some(comm) => from_rank_zero(comm, plan.as_ref())?,
            None => plan.ok_or_else(|| crate::Error::Retrain("no plan".to_owned()))?,
        };
        let fields = match plan {
            Plan::Go(fields) => fields,
            Plan::Skip(why) => return Ok(Outcome::Skipped(why)),
            Plan::Fail(why) => return Ok(Outcome::Failed(why)),
        };
        let window = match self.window(&fields, comm.as_deref_mut())? {
            Ok(window) => window,
            Err(outcome) => return Ok(outcome),
        };
        let mut trainer = self.trained(&fields, &window, prepared.as_ref(), comm.as_deref_mut())?;
        let holdout = window
            .rows
            .select(&(window.split..window.rows.len()).collect::<Vec<_>>());
        let holdout = match comm.as_deref_mut() {
            Some(comm) => {
                trainer.collect_rows(comm)?;
                let bytes = encode_rows(&fields, &holdout)?;
                let sizes = numbers(comm, &[bytes.len() as u64])?;
                let total: u64 = sizes.iter().map(|s| s[0]).sum();
                if total > MAX_HOLDOUT_BYTES {
                    return Ok(Outcome::Failed(format!(
                        "the ranks' held-out rows are {total} bytes, more than the {MAX_HOLDOUT_BYTES} rank 0 takes: lower `holdout` or `window_seconds`"
                    )));
                }
                let parts = to_rank_zero(comm, bytes)?;
                union(&fields, &parts)
            }
            None => Ok(holdout),
        };
        let outcome = match (prepared, holdout) {
            (Some(Ok(Ok(prepared))), Ok(holdout)) => self
                .judge(&trainer, &prepared, &holdout, window.trained)
                .unwrap_or_else(|error| Outcome::Failed(error.to_string())),
            (_, Err(error)) => Outcome::Failed(error.to_string()),
            _ => Outcome::Failed("not rank 0".to_owned()),
        };
        match comm {
            Some(comm) => Ok(from_rank_zero(comm, (rank == 0).then_some(&outcome))?),
            None => Ok(outcome),
        }
    }

    /// Rank 0's reading of the registry: the online model's FeatureMap (the rows' layout), the
    /// newest deep version, and whether there is anything to judge a candidate against; `Err`
    /// inside with why not to run.
    fn prepare(&self) -> Result<Result<Prepared, String>, crate::Error> {
        let Some(online) = self.registry.latest(&self.online)? else {
            return Ok(Err(
                "no online version (and FeatureMap) published yet".to_owned()
            ));
        };
        let online = self.registry.load(&self.online, online)?;
        let Some(map) = online.feature_map else {
            return Ok(Err("the online version has no FeatureMap".to_owned()));
        };
        let fields = SampleFields::of_layout(&map.layout)?;
        let current = match self.registry.latest(&self.published)? {
            Some(version) => Some(self.registry.load(&self.published, version)?),
            None => None,
        };
        let summary = self.stats.trainer.summary();
        if current.is_none() && summary.window_auc.is_none() {
            return Ok(Err("no deep version yet and no progressive validation of the online model to compare with (since the start)".to_owned()));
        }
        Ok(Ok(Prepared {
            fields,
            map,
            current,
            online: Quality {
                rows: summary.events as usize,
                auc: summary.window_auc,
                logloss: summary.logloss,
            },
        }))
    }

    /// This rank's rows of the window, oldest event first: the window ends at the newest event
    /// of any rank. `Err` inside with the outcome every rank comes to when a rank cannot read
    /// its buffer or the ranks have too few rows.
    fn window(
        &self,
        fields: &SampleFields,
        mut comm: Option<&mut (dyn AllReduce + '_)>,
    ) -> Result<Result<Window, Outcome>, crate::Error> {
        let read = self.read(fields);
        if let Err(error) = &read {
            tracing::error!(%error, "this rank cannot read its sample buffer");
        }
        let newest = read.as_ref().map_or(i64::MIN, newest);
        let mine = [newest as u64, u64::from(read.is_err())];
        let all = match comm.as_deref_mut() {
            Some(comm) => numbers(comm, &mine)?,
            None => vec![mine.to_vec()],
        };
        if let Some(rank) = all.iter().position(|r| r[1] != 0) {
            return Ok(Err(Outcome::Failed(format!(
                "rank {rank} cannot read its sample buffer (its log says why)"
            ))));
        }
        let newest = all.iter().map(|r| r[0] as i64).max().unwrap_or(i64::MIN);
        let rows = self.select(read?, newest);
        let held = match rows.len() {
            0 => 0,
            n => ((n as f64 * self.spec.holdout).ceil() as usize).clamp(1, n),
        };
        let split = rows.len() - held;
        let mine = [rows.len() as u64, split as u64];
        let all = match comm {
            Some(comm) => numbers(comm, &mine)?,
            None => vec![mine.to_vec()],
        };
        let total: u64 = all.iter().map(|r| r[0]).sum();
        if total < self.spec.min_rows.max(2) as u64 {
            return Ok(Err(Outcome::Skipped(
                "fewer rows in the window than `min_rows`".to_owned(),
            )));
        }
        Ok(Ok(Window {
            rows,
            split,
            trained: all.iter().map(|r| r[1] as usize).sum(),
        }))
    }

    /// A candidate trained on this rank's rows: warm-started by rank 0 from the newest deep
    /// version, every rank starting from rank 0's weights.
    fn trained(
        &self,
        fields: &SampleFields,
        window: &Window,
        prepared: Option<&Result<Result<Prepared, String>, crate::Error>>,
        comm: Option<&mut (dyn AllReduce + '_)>,
    ) -> Result<Trainer, crate::Error> {
        let deep = self.deep_spec()?;
        let device = parse_device(&self.spec.device)?;
        let mut trainer = Trainer::new(&deep, fields, device)?;
        if let Some(Ok(Ok(Prepared {
            current: Some(current),
            ..
        }))) = prepared
        {
            if trainer.warm_start(current).is_err() {
                tracing::info!(model = %self.published, "the newest deep version is of another architecture: training afresh");
            }
        }
        let started = std::time::Instant::now();
        let train = 0..window.split;
        match comm {
            Some(comm) => {
                trainer.broadcast(comm)?;
                trainer.train_ranked(&window.rows, train, &self.cancel, comm)?;
            }
            None => {
                trainer.train_until(&window.rows, train, &self.cancel)?;
            }
        }
        self.record_table(&trainer, started.elapsed().as_secs_f64());
        Ok(trainer)
    }

    /// Rank 0's judgement of the candidate on every rank's held-out rows, beside the current
    /// version; published when the gate lets it through.
    fn judge(
        &self,
        trainer: &Trainer,
        prepared: &Prepared,
        holdout: &SampleRows,
        trained: usize,
    ) -> Result<Outcome, crate::Error> {
        let all = 0..holdout.len();
        let candidate = trainer.evaluate(holdout, all.clone())?;
        self.stats.retrain.candidate_auc.store(
            candidate.auc.unwrap_or(f64::NAN).to_bits(),
            Ordering::Relaxed,
        );
        // The newest deep version, scored on the held-out rows (newer than its own window once
        // enough rows arrived); before the first, the online model's progressive validation on
        // the recent events, its quality as it served them: it has learned the held-out rows
        // themselves, so scoring it on them would flatter it.
        let now = match &prepared.current {
            Some(current) => score(current, &prepared.fields, holdout),
            None => prepared.online,
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
                let mut artifact = trainer.to_artifact(
                    &self.published,
                    self.features.clone(),
                    prepared.map.clone(),
                )?;
                artifact.meta.trained_events = trained as u64;
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

    /// Every row of this process's workers' buffers, checked against `fields`.
    fn read(&self, fields: &SampleFields) -> Result<SampleRows, crate::Error> {
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
        Ok(all)
    }

    /// The rows of `all` within the window that ends at event time `newest`, oldest first.
    fn select(&self, all: SampleRows, newest: i64) -> SampleRows {
        let from = match self.spec.window_seconds {
            0 => i64::MIN,
            s => newest.saturating_sub(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
        let mut order: Vec<usize> = (0..all.len()).filter(|&i| time(&all, i) >= from).collect();
        order.sort_by_key(|&i| (time(&all, i), all.epochs[i]));
        all.select(&order)
    }

    pub(super) fn deep_spec(&self) -> Result<DeepSpec, crate::Error> {
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

/// Row `i`'s event time (the oldest possible for a row without one).
fn time(rows: &SampleRows, i: usize) -> i64 {
    rows.event_times[i].unwrap_or(i64::MIN)
}

/// The newest event time of `rows`.
fn newest(rows: &SampleRows) -> i64 {
    (0..rows.len())
        .map(|i| time(rows, i))
        .max()
        .unwrap_or(i64::MIN)
}

/// Every rank's held-out rows (as rank 0 received them), in rank order, each checked against
/// `fields`.
fn union(fields: &SampleFields, parts: &[Vec<u8>]) -> Result<SampleRows, crate::Error> {
    let mut all = SampleRows::new();
    for (rank, part) in parts.iter().enumerate() {
        let (named, rows) = decode_rows(part)?;
        if named != *fields {
            return Err(crate::Error::Retrain(format!(
                "rank {rank} held out rows of another layout"
            )));
        }
        all.extend(&rows);
    }
    Ok(all)
}

/// The quality of `artifact` (any architecture) on `rows`, each row given to it as the
/// transform makes rows: the bias slot (when the layout has one), then the entries' slots.
fn score(artifact: &ModelArtifact, fields: &SampleFields, rows: &SampleRows) -> Quality {
    let bias = artifact
        .feature_map
        .as_ref()
        .is_some_and(|map| map.layout.bias);
    let mut predictions = Vec::with_capacity(rows.len());
    let (mut slots, mut values) = (Vec::new(), Vec::new());
    for i in 0..rows.len() {
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
    Quality::of(&predictions, &rows.labels)
}
