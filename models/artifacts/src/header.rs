//! The `__metadata__` of a version's `weights.safetensors`: what the file holds, readable by
//! any safetensors reader (`safetensors.safe_open(…).metadata()` in Python) without millrace's
//! `meta.json` beside it.

use crate::artifact::{ModelArtifact, FORMAT_VERSION};
use crate::digests::hex_digest;
use millrace_events::fmap::Schema;
use std::collections::{BTreeMap, HashMap};

/// The header metadata of `artifact` published as `version`: `format` (`millrace`),
/// `format_version`, `model`, `version`, `model_kind` (the architecture's type), `features`
/// (`map` or `hashed`), `dimension` (the row width) and `schema_sha256` (SHA-256 of the schema's
/// JSON, so that two versions can be told to read the same fields).
pub(crate) fn header_metadata(artifact: &ModelArtifact, version: u64) -> HashMap<String, String> {
    let meta = &artifact.meta;
    let criteo = Schema::criteo();
    let map = artifact.fitted_feature_map();
    let schema = map.map_or(&criteo, |map| &map.layout.schema);
    let schema_json = serde_json::to_vec(schema).expect("a schema serializes");
    let dimension = meta.features.dimension(schema);
    [
        ("format", Some("millrace".to_owned())),
        ("format_version", Some(FORMAT_VERSION.to_owned())),
        ("model", Some(meta.name.clone())),
        ("version", Some(version.to_string())),
        ("model_kind", tag(&meta.architecture)),
        ("features", tag(&meta.features)),
        ("dimension", Some(dimension.to_string())),
        ("schema_sha256", Some(hex_digest(&schema_json))),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}

/// The `type` a value serializes with (the architecture's, the feature spec's).
fn tag(value: &impl serde::Serialize) -> Option<String> {
    match serde_json::to_value(value).ok()?.get("type")? {
        serde_json::Value::String(tag) => Some(tag.clone()),
        _ => None,
    }
}

/// Rewrites the JSON header of an encoded safetensors file with its keys in order: the
/// `safetensors` crate writes `__metadata__` from a `HashMap`, whose order changes from one
/// process to the next, and the same version must be the same bytes (its checksum, the crash
/// tests). The header keeps its length, so nothing after it moves.
///
/// # Errors
///
/// When the header is not the JSON `safetensors` writes.
pub(crate) fn sort_header(encoded: &mut [u8]) -> Result<(), String> {
    let length = encoded
        .first_chunk::<8>()
        .map(|n| u64::from_le_bytes(*n) as usize)
        .ok_or("no header length")?;
    let header = encoded
        .get(8..8 + length)
        .ok_or("the header runs past the file")?;
    let text = std::str::from_utf8(header).map_err(|e| e.to_string())?;
    let padded = text.len() - text.trim_end().len();
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut sorted = String::from("{");
    let metadata = entries.remove("__metadata__");
    if let Some(metadata) = metadata {
        let metadata: BTreeMap<String, String> =
            serde_json::from_value(metadata).map_err(|e| e.to_string())?;
        let metadata = serde_json::to_string(&metadata).map_err(|e| e.to_string())?;
        sorted.push_str(&format!("\"__metadata__\":{metadata}"));
    }
    for (name, info) in entries {
        if sorted.len() > 1 {
            sorted.push(',');
        }
        let name = serde_json::to_string(&name).map_err(|e| e.to_string())?;
        sorted.push_str(&format!("{name}:{info}"));
    }
    sorted.push('}');
    if sorted.len() + padded != length {
        return Err(format!(
            "the sorted header is {} bytes, not {}",
            sorted.len(),
            length - padded
        ));
    }
    encoded[8..8 + sorted.len()].copy_from_slice(sorted.as_bytes());
    Ok(())
}
