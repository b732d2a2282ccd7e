//! A model version loaded for serving: the model, its counters, its cache of rows and its
//! instances' parser.

use crate::row_cache::RowCache;
use crate::stats::VersionStats;
use millrace_models::fmap::Parser;
use millrace_models::schema::FieldType;
use millrace_models::ServedModel;

/// A model version in memory, ready to answer.
#[derive(Debug)]
pub struct LoadedVersion {
    /// The model.
    pub model: ServedModel,
    /// Its counters.
    pub stats: VersionStats,
    /// When it was loaded, milliseconds since the Unix epoch.
    pub loaded_unix_ms: u64,
    /// Its rows by instance text.
    pub(crate) rows: Option<RowCache>,
    /// The parser of its FeatureMap's instances, made once: each request scores with a clone.
    pub(crate) parser: Option<Parser>,
}

impl LoadedVersion {
    /// Rows in its cache.
    pub fn cached_rows(&self) -> usize {
        self.rows.as_ref().map_or(0, RowCache::len)
    }

    /// The type of the field `name` of its FeatureMap's schema; `None` for a name that is not
    /// a field (or a model without a FeatureMap).
    pub fn field_type(&self, name: &str) -> Option<FieldType> {
        let schema = &self.model.feature_map.as_ref()?.layout.schema;
        schema.field_type(schema.index(name)?)
    }

    /// The fields an instance may hold, by name, with their types: its FeatureMap's schema
    /// (empty for a model without one).
    pub fn fields(&self) -> Vec<(&str, FieldType)> {
        let Some(map) = &self.model.feature_map else {
            return Vec::new();
        };
        let schema = &map.layout.schema;
        schema
            .fields
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((name.as_str(), schema.field_type(i)?)))
            .collect()
    }
}
