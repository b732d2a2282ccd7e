//! The registry keeper of process 0: at start it removes what a publisher that died left in
//! the registry, then, while the job runs and once more at its end, it keeps every model's
//! versions to `[publish] keep_versions` (and those servers hold; see
//! `millrace_models::registry`).

use crate::error::{Error, Result};
use crate::metrics::JobStats;
use millrace_models::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the keeper prunes.
const EVERY: Duration = Duration::from_secs(10);

/// The running keeper; dropping it prunes once more (after the job's last version) and stops
/// it.
pub(super) struct Keeper {
    handle: Option<JoinHandle<()>>,
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Keeper {
    /// Cleans `registry` up, then starts pruning it to `keep` versions per model; none when
    /// `keep` is 0 (every version is kept).
    ///
    /// # Errors
    ///
    /// When the registry cannot be cleaned up or the thread cannot start.
    pub(super) fn start(
        registry: &Registry,
        keep: usize,
        stats: &Arc<JobStats>,
    ) -> Result<Option<Self>> {
        let removed = registry.remove_orphans()?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed what an earlier publisher left unfinished in the registry"
            );
        }
        if keep == 0 {
            return Ok(None);
        }
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let (registry, stats, until) = (registry.clone(), stats.clone(), done.clone());
        let handle = std::thread::Builder::new()
            .name("millrace-keeper".into())
            .spawn(move || {
                let (finished, wake) = &*until;
                let mut finished = finished.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    prune(&registry, keep, &stats);
                    if *finished {
                        return;
                    }
                    finished = wake
                        .wait_timeout(finished, EVERY)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            })
            .map_err(|source| Error::Spawn {
                what: "the registry keeper",
                source,
            })?;
        Ok(Some(Keeper {
            handle: Some(handle),
            done,
        }))
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let (finished, wake) = &*self.done;
        *finished.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Keeps each model of `registry` to `keep` versions and those held, counting what it removes
/// and the models it could not prune.
fn prune(registry: &Registry, keep: usize, stats: &JobStats) {
    let models = match registry.models() {
        Ok(models) => models,
        Err(error) => {
            stats.prune_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "cannot list the registry's models to prune them");
            return;
        }
    };
    for model in models {
        match registry.prune(&model, keep) {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::debug!(%model, ?removed, "old model versions removed");
                }
                stats
                    .versions_removed
                    .fetch_add(removed.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                stats.prune_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%model, %error, "cannot prune the model's old versions");
            }
        }
    }
}
