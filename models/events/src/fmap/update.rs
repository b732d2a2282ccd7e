//! What an epoch's fit changes in a FeatureMap: made by merging the epoch's partials
//! ([`super::fit`]), applied by every worker's map ([`super::map`]).

use serde::{Deserialize, Serialize};

/// A change to one feature, made by merging an epoch's partials: part of the next version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Values that got an id, and values evicted with the ids they had.
    Vocab {
        /// `(fingerprint, id)` newly given.
        added: Vec<(u64, u32)>,
        /// `(fingerprint, id)` evicted.
        removed: Vec<(u64, u32)>,
    },
    /// The new bucket boundaries.
    Boundaries(Vec<f64>),
    /// The new scaler.
    Scale {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

/// Figures about a feature after an epoch's merge, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitFigures {
    /// Values holding an id.
    pub vocab_size: u64,
    /// Values counted but without an id (below `min_count`, or no capacity left).
    pub pending: u64,
    /// Values evicted in this epoch: expired, or forgotten beyond `max_pending`.
    pub evicted: u64,
    /// Boundaries that moved in this epoch.
    pub boundary_shifts: u64,
}

/// An update to one feature at one epoch's end, broadcast to every worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureUpdate {
    /// The feature's index in the layout.
    pub feature: u32,
    /// What changed.
    pub change: Change,
    /// Figures for metrics.
    pub figures: FitFigures,
}
