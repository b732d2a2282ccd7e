//! A server's holds on the versions it serves: a publisher that prunes a registry directory
//! keeps every version a fresh hold names (see `millrace_models::registry`). The store renews
//! them after each poll and each traffic change, writing a model's hold when its versions
//! changed or when it is due for a refresh, so that a hold lives as long as its server.

use crate::traffic::{ServedEntry, VersionRef};
use millrace_models::registry::HOLD_REFRESH;
use millrace_models::VersionSource;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The holds one server process keeps.
#[derive(Debug)]
pub(crate) struct Holds {
    /// The name of this process's hold files: unique per process (its id and start time).
    holder: String,
    /// What each model's hold file says, and when it was written.
    written: Mutex<BTreeMap<String, (BTreeSet<u64>, Instant)>>,
    /// When a failed write was last logged (they are tried at every renewal, logged a minute
    /// apart).
    warned: Mutex<Option<Instant>>,
}

impl Holds {
    pub(crate) fn new() -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Holds {
            holder: format!("serve-{}-{started}", std::process::id()),
            written: Mutex::default(),
            warned: Mutex::default(),
        }
    }

    /// Writes the holds of `models` (every version in memory, guests under their own model)
    /// that changed or are due; a hold that cannot be written is tried again at the next
    /// renewal, and logged at most once a minute.
    pub(crate) fn renew(
        &self,
        source: &dyn VersionSource,
        models: &BTreeMap<String, Arc<ServedEntry>>,
    ) {
        let mut wanted: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (name, entry) in models {
            wanted
                .entry(name.clone())
                .or_default()
                .extend(entry.versions.keys());
            for guest in entry.guests.keys() {
                if let VersionRef::Of { model, version } = guest {
                    wanted.entry(model.clone()).or_default().insert(*version);
                }
            }
        }
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, versions) in wanted {
            let due = written
                .get(&name)
                .is_none_or(|(held, at)| *held != versions || at.elapsed() >= HOLD_REFRESH);
            if !due {
                continue;
            }
            let list: Vec<u64> = versions.iter().copied().collect();
            match source.hold(&name, &self.holder, &list) {
                Ok(()) => {
                    written.insert(name, (versions, Instant::now()));
                }
                Err(error) => {
                    let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
                    if warned.is_none_or(|at| at.elapsed() >= HOLD_REFRESH) {
                        tracing::warn!(model = %name, %error, "cannot write the hold on the versions served; a publisher pruning the registry may remove them");
                        *warned = Some(Instant::now());
                    }
                }
            }
        }
    }
}
