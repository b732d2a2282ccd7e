//! The set of served models and their atomic replacement.

use arc_swap::ArcSwap;
use millrace_models::{ModelArtifact, Registry};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters of the serving side.
#[derive(Debug, Default)]
pub struct ServingStats {
    /// Predict requests answered with 200.
    pub predict_requests: AtomicU64,
    /// Instances scored.
    pub predictions: AtomicU64,
    /// Requests answered with a 4xx.
    pub client_errors: AtomicU64,
    /// Versions swapped in.
    pub swaps: AtomicU64,
    /// Versions rejected by validation.
    pub rejected_versions: AtomicU64,
}

/// What one [`ModelStore::refresh`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// `(model, version)` pairs swapped in.
    pub swapped: Vec<(String, u64)>,
    /// `(model, version, reason)` of versions that failed to load; the old version still serves.
    pub rejected: Vec<(String, u64, String)>,
}

/// The models being served, each at one version, replaced atomically.
#[derive(Debug)]
pub struct ModelStore {
    registry: Registry,
    models: ArcSwap<BTreeMap<String, Arc<ModelArtifact>>>,
    /// Versions already rejected, so that a bad version is reported once, not on every poll.
    rejected: std::sync::Mutex<BTreeMap<String, u64>>,
    stats: ServingStats,
}

impl ModelStore {
    /// A store that follows `registry`; empty until the first [`ModelStore::refresh`].
    pub fn new(registry: Registry) -> Self {
        ModelStore {
            registry,
            models: ArcSwap::from_pointee(BTreeMap::new()),
            rejected: std::sync::Mutex::new(BTreeMap::new()),
            stats: ServingStats::default(),
        }
    }

    /// The serving counters.
    pub fn stats(&self) -> &ServingStats {
        &self.stats
    }

    /// The served version of a model.
    pub fn get(&self, name: &str) -> Option<Arc<ModelArtifact>> {
        self.models.load().get(name).cloned()
    }

    /// Every served model.
    pub fn all(&self) -> Vec<Arc<ModelArtifact>> {
        self.models.load().values().cloned().collect()
    }

    /// Loads every model version newer than the served one, validates it and swaps it in.
    /// Blocking (file i/o): run it off the async executor.
    pub fn refresh(&self) -> RefreshOutcome {
        let mut outcome = RefreshOutcome::default();
        let names = match self.registry.models() {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(%error, "cannot list the registry");
                return outcome;
            }
        };
        for name in names {
            let served = self.get(&name).map_or(0, |m| m.meta.version);
            let Ok(Some(latest)) = self.registry.latest(&name) else {
                continue;
            };
            let already_rejected = self.rejected.lock().map(|r| r.get(&name) == Some(&latest));
            if latest <= served || already_rejected.unwrap_or(false) {
                continue;
            }
            match self.registry.load(&name, latest) {
                Ok(artifact) => {
                    let artifact = Arc::new(artifact);
                    self.models.rcu(|current| {
                        let mut next = BTreeMap::clone(current);
                        next.insert(name.clone(), artifact.clone());
                        next
                    });
                    self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(model = %name, version = latest, "serving new model version");
                    outcome.swapped.push((name, latest));
                }
                Err(error) => {
                    self.stats.rejected_versions.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(model = %name, version = latest, %error, "rejected model version; the previous one keeps serving");
                    if let Ok(mut rejected) = self.rejected.lock() {
                        rejected.insert(name.clone(), latest);
                    }
                    outcome.rejected.push((name, latest, error.to_string()));
                }
            }
        }
        outcome
    }
}
