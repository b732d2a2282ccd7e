//! The status of a served model: millrace's own document (its versions, their shares of the
//! traffic, what they learned), the answer of the admin endpoints and the `millrace` part of
//! `GET /v1/models/{name}`.

use crate::traffic::{ServedEntry, Traffic};
use serde::Serialize;

/// One version in memory, as the status lists it.
#[derive(Serialize)]
pub(crate) struct VersionStatus {
    /// The model of a version that another model's traffic names; absent for its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    version: u64,
    state: &'static str,
    share_percent: f64,
    shadow: bool,
    trained_events: u64,
    progressive_auc: Option<f64>,
    created_unix_ms: u64,
    loaded_unix_ms: u64,
}

/// A served model's status.
#[derive(Serialize)]
pub(crate) struct ModelStatus {
    name: String,
    /// The primary version.
    version: u64,
    state: &'static str,
    trained_events: u64,
    progressive_auc: Option<f64>,
    created_unix_ms: u64,
    traffic: Traffic,
    versions: Vec<VersionStatus>,
}

impl ModelStatus {
    /// The status of `entry`; `None` before it has a version.
    pub(crate) fn of(entry: &ServedEntry) -> Option<Self> {
        let primary = &entry.primary()?.model.meta;
        let versions = entry
            .all()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|(target, loaded)| {
                let meta = &loaded.model.meta;
                let share_percent = entry.share_percent(&target);
                let shadow = entry.traffic.shadow.as_ref() == Some(&target);
                VersionStatus {
                    model: target.model().map(str::to_owned),
                    version: meta.version,
                    state: if share_percent > 0.0 || shadow {
                        "AVAILABLE"
                    } else {
                        "LOADED"
                    },
                    share_percent,
                    shadow,
                    trained_events: meta.trained_events,
                    progressive_auc: meta.progressive_auc,
                    created_unix_ms: meta.created_unix_ms,
                    loaded_unix_ms: loaded.loaded_unix_ms,
                }
            })
            .collect();
        Some(ModelStatus {
            name: entry.name.clone(),
            version: primary.version,
            state: "AVAILABLE",
            trained_events: primary.trained_events,
            progressive_auc: primary.progressive_auc,
            created_unix_ms: primary.created_unix_ms,
            traffic: entry.traffic.clone(),
            versions,
        })
    }
}
