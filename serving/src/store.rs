//! The set of served models and their atomic replacement.

use arc_swap::ArcSwap;
use millrace_models::{ModelArtifact, Registry};
use std::collections::{BTreeMap, BTreeSet};
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
    /// Instance values looked up in a served FeatureMap's vocabularies.
    pub vocab_lookups: AtomicU64,
    /// Of those, values without an id (out of vocabulary or hashed fallback).
    pub vocab_oov: AtomicU64,
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
    rejected: std::sync::Mutex<BTreeSet<(String, u64)>>,
    stats: ServingStats,
}

impl ModelStore {
    /// A store that follows `registry`; empty until the first [`ModelStore::refresh`].
    pub fn new(registry: Registry) -> Self {
        ModelStore {
            registry,
            models: ArcSwap::from_pointee(BTreeMap::new()),
            rejected: std::sync::Mutex::new(BTreeSet::new()),
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

    /// For each model, loads the newest version that is newer than the served one and passes
    /// validation, and swaps it in; versions that fail are rejected (once) and older ones are
    /// tried, so a corrupt newest version never leaves a model unserved. Blocking (file i/o):
    /// run it off the async executor.
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
            let Ok(versions) = self.registry.versions(&name) else {
                continue;
            };
            for version in versions.into_iter().rev().take_while(|v| *v > served) {
                let key = (name.clone(), version);
                if self.rejected.lock().is_ok_and(|r| r.contains(&key)) {
                    continue;
                }
                match self.registry.load(&name, version) {
                    Ok(artifact) => {
                        let artifact = Arc::new(artifact);
                        self.models.rcu(|current| {
                            let mut next = BTreeMap::clone(current);
                            next.insert(name.clone(), artifact.clone());
                            next
                        });
                        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(model = %name, version, "serving new model version");
                        outcome.swapped.push(key);
                        break;
                    }
                    Err(error) => {
                        self.stats.rejected_versions.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(model = %name, version, %error, "rejected model version; an older one keeps serving");
                        outcome
                            .rejected
                            .push((name.clone(), version, error.to_string()));
                        if let Ok(mut rejected) = self.rejected.lock() {
                            rejected.insert(key);
                        }
                    }
                }
            }
        }
        outcome
    }
}
