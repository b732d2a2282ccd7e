//! The served models: for each, the versions loaded and the traffic policy that routes requests
//! among them, replaced together atomically.

use crate::holds::Holds;
use crate::row_cache::RowCache;
use crate::stats::{ServingStats, VersionStats};
use crate::traffic::{Arm, ServedEntry, Traffic, TrafficChange, VersionRef};
use crate::version::LoadedVersion;
use arc_swap::ArcSwap;
use millrace_models::fmap::Parser;
use millrace_models::table::CHUNK_ROWS;
use millrace_models::{LoadPace, VersionSource};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one [`ModelStore::refresh`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// `(model, version)` pairs loaded.
    pub swapped: Vec<(String, u64)>,
    /// `(model, version, reason)` of versions that failed to load; the old version still serves.
    pub rejected: Vec<(String, u64, String)>,
}

/// Why an admin change was refused; the traffic is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The model is not served.
    #[error("model `{0}` is not served")]
    UnknownModel(String),
    /// The registry has no such version.
    #[error("model `{0}` has no version {1} in the registry")]
    UnknownVersion(String, u64),
    /// The version failed validation.
    #[error("version {0} cannot be served: {1}")]
    Rejected(u64, String),
    /// The change itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A rollback found no valid older version.
    #[error("no valid version older than {0} to roll back to")]
    NoOlderVersion(u64),
}

/// The seed of the randomized rounding to fixed point (as `bench online --q213`).
const Q213_SEED: u64 = 1;

/// How a served version holds its weights and factors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats, as trained and published; versions share unchanged chunks.
    #[default]
    F32,
    /// q2.13 fixed point, 16 bits a number: half the memory, and the predictions of
    /// [`millrace_models::ModelArtifact::to_q213`] (`bench online --q213` measures what that
    /// costs in AUC).
    Q213,
    /// 8-bit codes with a scale per 256 numbers: about a quarter of the memory, and the
    /// predictions of [`millrace_models::ModelArtifact::to_int8`] (`bench online --int8`).
    Int8,
}

/// Transformed instances cached per loaded version by default.
pub const DEFAULT_ROW_CACHE_ENTRIES: usize = 100_000;

/// The share of one core a version's load takes by default: half, so that a swap leaves the
/// serving threads their cores.
pub const DEFAULT_LOAD_CPU_SHARE: f64 = 0.5;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The models being served, each with its loaded versions and traffic, replaced atomically: a
/// request is answered entirely by the versions of one snapshot, and in-flight requests finish
/// on the snapshot they started with.
#[derive(Debug)]
pub struct ModelStore {
    registry: Arc<dyn VersionSource>,
    models: ArcSwap<BTreeMap<String, Arc<ServedEntry>>>,
    /// Serializes the writers (the registry poll and the admin API).
    writer: Mutex<()>,
    /// Versions already rejected, so that a bad version is reported once, not on every poll.
    rejected: Mutex<BTreeSet<(String, u64)>>,
    stats: ServingStats,
    load_cpu_share: f64,
    row_cache_entries: usize,
    precision: Precision,
    /// This server's holds on the versions it serves, for a registry directory's pruning.
    holds: Holds,
}

impl ModelStore {
    /// A store that follows `registry` (a directory, or a Kafka topic); empty until the first
    /// [`ModelStore::refresh`].
    pub fn new(registry: impl VersionSource + 'static) -> Self {
        ModelStore {
            registry: Arc::new(registry),
            models: ArcSwap::from_pointee(BTreeMap::new()),
            writer: Mutex::new(()),
            rejected: Mutex::new(BTreeSet::new()),
            stats: ServingStats::default(),
            load_cpu_share: DEFAULT_LOAD_CPU_SHARE,
            row_cache_entries: DEFAULT_ROW_CACHE_ENTRIES,
            precision: Precision::F32,
            holds: Holds::new(),
        }
    }

    /// Serves the weights and factors at `precision`. Below `f32`, versions load whole,
    /// without sharing blocks with the version before.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Caches up to `entries` transformed instances per loaded version (0: no cache).
    pub fn with_row_cache(mut self, entries: usize) -> Self {
        self.row_cache_entries = entries;
        self
    }

    /// Loads versions taking at most this share of one core (see [`LoadPace::cpu_share`]; 1
    /// loads at full speed).
    pub fn with_load_cpu_share(mut self, share: f64) -> Self {
        self.load_cpu_share = share.clamp(0.01, 1.0);
        self
    }

    /// The serving counters.
    pub fn stats(&self) -> &ServingStats {
        &self.stats
    }

    /// A served model.
    pub fn entry(&self, name: &str) -> Option<Arc<ServedEntry>> {
        self.models.load().get(name).cloned()
    }

    /// Every served model, by name.
    pub fn entries(&self) -> Vec<Arc<ServedEntry>> {
        self.models.load().values().cloned().collect()
    }

    fn write<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }

    fn publish(&self, entry: ServedEntry) {
        let name = entry.name.clone();
        let entry = Arc::new(entry);
        self.models.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.insert(name.clone(), entry.clone());
            next
        });
    }

    fn is_rejected(&self, key: &(String, u64)) -> bool {
        self.rejected.lock().is_ok_and(|r| r.contains(key))
    }

    /// Loads `version` of `entry`'s model, sharing with its newest loaded version; a failure is
    /// counted and remembered.
    fn load(
        &self,
        name: &str,
        entry: Option<&ServedEntry>,
        version: u64,
    ) -> Result<Arc<LoadedVersion>, String> {
        if let Some(loaded) = self.in_memory(name, version) {
            return Ok(loaded);
        }
        let base = entry
            .and_then(|e| e.newest())
            .map(|v| &v.model)
            .filter(|_| self.precision == Precision::F32);
        let pace = LoadPace {
            new_blocks: base.map_or(0, |b| {
                let rows = b.tensors.iter().map(|t| t.values.rows()).max();
                rows.unwrap_or(0).div_ceil(CHUNK_ROWS).div_ceil(8)
            }),
            cpu_share: self.load_cpu_share,
        };
        let loaded = self
            .registry
            .load_served(name, version, base, pace)
            .map(|model| match self.precision {
                Precision::F32 => model,
                Precision::Q213 => {
                    let (fixed, clipped) = model.to_q213(Q213_SEED);
                    if clipped > 0 {
                        tracing::warn!(model = %name, version, clipped, "weights outside [-4, 4) clipped to fixed point");
                    }
                    fixed
                }
                Precision::Int8 => model.to_int8(),
            });
        match loaded {
            Ok(model) => Ok(Arc::new(LoadedVersion {
                parser: model
                    .feature_map
                    .as_ref()
                    .map(|map| Parser::new(&map.layout)),
                model,
                stats: VersionStats::default(),
                loaded_unix_ms: now_ms(),
                rows: RowCache::new(self.row_cache_entries),
            })),
            Err(error) if error.is_transient() => {
                // Not remembered: the next poll tries it again.
                self.stats.load_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(model = %name, version, %error, "loading a model version failed for now; it is tried again at the next poll");
                Err(error.to_string())
            }
            Err(error) => {
                self.stats.rejected_versions.fetch_add(1, Ordering::Relaxed);
                tracing::error!(model = %name, version, %error, "rejected model version; the served ones keep serving");
                if let Ok(mut rejected) = self.rejected.lock() {
                    rejected.insert((name.to_owned(), version));
                }
                Err(error.to_string())
            }
        }
    }

    /// For each model, loads the newest version that is newer than the ones in memory and
    /// passes validation; versions that fail are rejected (once) and older ones are tried, so a
    /// corrupt newest version never leaves a model unserved. A model that follows the newest
    /// version then serves it. Blocking (file i/o): run it off the async executor.
    pub fn refresh(&self) -> RefreshOutcome {
        self.write(|| self.refresh_locked())
    }

    fn refresh_locked(&self) -> RefreshOutcome {
        let mut outcome = RefreshOutcome::default();
        let names = match self.registry.models() {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(%error, "cannot list the registry");
                return outcome;
            }
        };
        for name in names {
            let current = self.entry(&name);
            let newest = current
                .as_deref()
                .and_then(ServedEntry::newest)
                .map_or(0, |v| v.model.meta.version);
            let Ok(versions) = self.registry.versions(&name) else {
                continue;
            };
            for version in versions.into_iter().rev().take_while(|v| *v > newest) {
                let key = (name.clone(), version);
                if self.is_rejected(&key) {
                    continue;
                }
                match self.load(&name, current.as_deref(), version) {
                    Ok(loaded) => {
                        let mut entry = current
                            .as_deref()
                            .cloned()
                            .unwrap_or_else(|| ServedEntry::empty(&name));
                        entry.versions.insert(version, loaded);
                        drop_strangers(&mut entry);
                        entry.retain();
                        self.publish(entry);
                        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(model = %name, version, "loaded new model version");
                        outcome.swapped.push(key);
                        break;
                    }
                    Err(reason) => outcome.rejected.push((name.clone(), version, reason)),
                }
            }
        }
        self.holds
            .renew(self.registry.as_ref(), &self.models.load());
        outcome
    }

    /// Changes a model's traffic, loading the versions it names first; on any error nothing
    /// changes. Blocking (it may load versions): run it off the async executor.
    ///
    /// # Errors
    ///
    /// When the model is not served, a version does not exist, fails validation or (of another
    /// model) reads other fields, the split is malformed, or a rollback has no valid older
    /// version.
    pub fn change_traffic(&self, name: &str, change: TrafficChange) -> Result<Traffic, AdminError> {
        self.write(|| {
            let current = self
                .entry(name)
                .ok_or_else(|| AdminError::UnknownModel(name.to_owned()))?;
            let mut entry = ServedEntry::clone(&current);
            let traffic = self.changed(&mut entry, change)?;
            entry.traffic = traffic.clone();
            // Own versions first: a guest is checked against the primary the new traffic has.
            let (own, guests): (Vec<VersionRef>, Vec<VersionRef>) = traffic
                .named(name)
                .into_iter()
                .partition(|target| matches!(target, VersionRef::Own(_)));
            for target in own.into_iter().chain(guests) {
                if entry.get(&target).is_none() {
                    self.bring(&mut entry, target)?;
                }
            }
            drop_strangers(&mut entry);
            entry.retain();
            self.publish(entry);
            self.holds
                .renew(self.registry.as_ref(), &self.models.load());
            self.stats.admin_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(model = %name, ?traffic, "traffic changed");
            Ok(traffic)
        })
    }

    /// `entry`'s traffic after `change` (a rollback loads its version into `entry`).
    fn changed(
        &self,
        entry: &mut ServedEntry,
        change: TrafficChange,
    ) -> Result<Traffic, AdminError> {
        let name = entry.name.clone();
        let mut traffic = entry.traffic.clone();
        match change {
            TrafficChange::Pin(version) => {
                traffic.pinned = Some(version);
                traffic.split.clear();
            }
            TrafficChange::Unpin => traffic.pinned = None,
            TrafficChange::Split { split, shadow } => {
                if split.iter().any(|arm| arm.weight == 0) {
                    return Err(AdminError::Invalid(
                        "every arm of a split needs a positive weight".to_owned(),
                    ));
                }
                traffic.split = split
                    .into_iter()
                    .map(|arm| Arm {
                        model: arm.target(&name).model().map(str::to_owned),
                        ..arm
                    })
                    .collect();
                traffic.shadow = shadow.map(|s| s.seen_from(&name));
            }
            TrafficChange::Promote(target) => {
                let target = target.seen_from(&name);
                traffic.split.clear();
                match &target {
                    VersionRef::Own(version) => traffic.pinned = Some(*version),
                    VersionRef::Of { model, version } => traffic.split.push(Arm {
                        model: Some(model.clone()),
                        version: *version,
                        weight: 1,
                    }),
                }
                if traffic.shadow.as_ref() == Some(&target) {
                    traffic.shadow = None;
                }
            }
            TrafficChange::Rollback if traffic.split.iter().any(|a| a.model.is_some()) => {
                // Back from another model's version (promoted, or given a share): the
                // primary answers again.
                traffic.split.clear();
            }
            TrafficChange::Rollback => {
                let primary = entry
                    .primary()
                    .map(|p| p.model.meta.version)
                    .ok_or_else(|| AdminError::UnknownModel(name.clone()))?;
                let version = self
                    .rollback_target(entry, primary)
                    .ok_or(AdminError::NoOlderVersion(primary))?;
                traffic.pinned = Some(version);
                traffic.split.clear();
            }
        }
        Ok(traffic)
    }

    /// `version` of `model` where it is in memory already: in its model's entry, or a guest of
    /// any entry (so that a version is in memory once).
    fn in_memory(&self, model: &str, version: u64) -> Option<Arc<LoadedVersion>> {
        let models = self.models.load();
        if let Some(loaded) = models.get(model).and_then(|e| e.versions.get(&version)) {
            return Some(loaded.clone());
        }
        let guest = VersionRef::Of {
            model: model.to_owned(),
            version,
        };
        models.values().find_map(|e| e.guests.get(&guest).cloned())
    }

    /// Loads the version `target` names into `entry`: an own version from the registry, a
    /// guest shared with its model's entry when that has it in memory, else from the registry;
    /// a guest must read the fields `entry`'s model reads.
    fn bring(&self, entry: &mut ServedEntry, target: VersionRef) -> Result<(), AdminError> {
        let (model, version) = match &target {
            VersionRef::Own(version) => (entry.name.clone(), *version),
            VersionRef::Of { model, version } => (model.clone(), *version),
        };
        let home = match &target {
            VersionRef::Own(_) => None,
            VersionRef::Of { .. } => Some(
                self.entry(&model)
                    .ok_or_else(|| AdminError::UnknownModel(model.clone()))?,
            ),
        };
        let loaded = match self.in_memory(&model, version) {
            Some(loaded) => loaded,
            None => {
                if !self
                    .registry
                    .versions(&model)
                    .is_ok_and(|all| all.contains(&version))
                {
                    return Err(AdminError::UnknownVersion(model, version));
                }
                let base = home.as_deref().unwrap_or(entry);
                self.load(&model, Some(base), version)
                    .map_err(|reason| AdminError::Rejected(version, reason))?
            }
        };
        match target {
            VersionRef::Own(version) => {
                entry.versions.insert(version, loaded);
            }
            guest @ VersionRef::Of { .. } => {
                if let Some(ours) = entry.primary() {
                    if inputs(ours) != inputs(&loaded) {
                        return Err(AdminError::Invalid(format!(
                            "`{model}` version {version} reads other fields than `{}`: a version of another model can take `{}`'s traffic only when it answers the same requests",
                            entry.name, entry.name
                        )));
                    }
                }
                entry.guests.insert(guest, loaded);
            }
        }
        Ok(())
    }

    /// The newest version below `primary` that is in memory or loads, loading it into `entry`.
    fn rollback_target(&self, entry: &mut ServedEntry, primary: u64) -> Option<u64> {
        let mut candidates: BTreeSet<u64> = entry.versions.keys().copied().collect();
        candidates.extend(self.registry.versions(&entry.name).unwrap_or_default());
        for version in candidates.into_iter().rev().filter(|&v| v < primary) {
            if entry.versions.contains_key(&version) {
                return Some(version);
            }
            if self.is_rejected(&(entry.name.clone(), version)) {
                continue;
            }
            if let Ok(loaded) = self.load(&entry.name, Some(entry), version) {
                entry.versions.insert(version, loaded);
                return Some(version);
            }
        }
        None
    }
}

/// Drops from `entry`'s traffic the guests that read other fields than its primary version
/// (the pinned one, or the newest), as when the model was republished over a new schema and
/// is not pinned: the primary answers their requests.
fn drop_strangers(entry: &mut ServedEntry) {
    let Some(primary) = entry.primary().cloned() else {
        return;
    };
    let strangers: Vec<VersionRef> = entry
        .guests
        .iter()
        .filter(|(_, guest)| inputs(guest) != inputs(&primary))
        .map(|(target, _)| target.clone())
        .collect();
    for target in strangers {
        tracing::warn!(model = %entry.name, guest = %target.label(), "a version of another model no longer reads this model's fields: it leaves the traffic");
        let name = entry.name.clone();
        entry
            .traffic
            .split
            .retain(|arm| arm.target(&name) != target);
        if entry.traffic.shadow.as_ref() == Some(&target) {
            entry.traffic.shadow = None;
        }
    }
}

/// The fields a version reads from an instance: its FeatureMap schema's, or the hashed
/// Criteo fields (`None`) for a version without one.
fn inputs(version: &LoadedVersion) -> Option<&[String]> {
    let map = version.model.feature_map.as_ref()?;
    Some(&map.layout.schema.fields)
}
