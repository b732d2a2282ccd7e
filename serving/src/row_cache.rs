//! A loaded version's cache of rows: an instance's JSON text (hashed, 128 bits) to the sparse
//! row the version's transform makes of it, so a repeated instance (the same user and item
//! asked again) skips JSON parsing, vocabulary lookups and hashing. Rows belong to one version
//! (its FeatureMap), so each loaded version has its own cache, and a swap starts a new one.

use std::sync::Arc;

/// A transformed instance: a row of the model's FeatureMap.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) indices: Box<[u32]>,
    pub(crate) values: Box<[f32]>,
}

/// Rows by instance text, for one version.
pub(crate) struct RowCache(pub(crate) quick_cache::sync::Cache<u128, Arc<Row>>);

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("entries", &self.0.len())
            .field("capacity", &self.0.capacity())
            .finish()
    }
}

impl RowCache {
    /// A cache of at most `entries` rows; `None` for no cache.
    pub(crate) fn new(entries: usize) -> Option<Self> {
        (entries > 0).then(|| RowCache(quick_cache::sync::Cache::new(entries)))
    }

    /// Rows cached now.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
