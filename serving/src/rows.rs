//! Instances to sparse rows under a FeatureMap: the same parser and the same
//! [`FeatureMap::transform`] that the dataflow runs, so a model is served with exactly the
//! features it was trained on.

use millrace_models::fmap::{Parser, TransformCounts};
use millrace_models::{CsrBatch, DecodeError, EventBatch, FeatureMap};

/// An instance of a request that is not an event of the map's schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("instance {index}: {error}")]
pub struct InstanceError {
    /// The instance's position in the request.
    pub index: usize,
    /// Why it is not an event.
    pub error: DecodeError,
}

/// The rows of JSON `instances` (the texts of objects of field name to value) under `map`, one
/// per instance, in order, read by `parser` (made for `map`'s layout). Malformed values (a word
/// in a numeric field, an overlong value) follow the spec's policy, as in the dataflow; the
/// counts of vocabulary lookups and misses are added to `counts`.
///
/// # Errors
///
/// The first instance that is not an object, names a field the schema does not have or holds
/// a value of a JSON type its field cannot hold.
pub fn instance_rows(
    map: &FeatureMap,
    mut parser: Parser,
    instances: &[&str],
    counts: &mut TransformCounts,
) -> Result<CsrBatch, InstanceError> {
    let mut batch = EventBatch::with_capacity(map.layout.schema.fields.len(), instances.len());
    for (index, instance) in instances.iter().enumerate() {
        parser
            .parse_json_text(instance, 0, &mut batch)
            .map_err(|error| InstanceError { index, error })?;
    }
    Ok(map.transform(&batch, counts))
}
