//! `/openapi.json`: the static description of the API, with the instance object, the columns
//! and the tensor names of the served models' schemas: every model's FeatureMap lists its
//! schema's fields by name and type (the written document, the Criteo instance, stands when no
//! model is served).

use crate::store::ModelStore;
use millrace_models::fmap::spec::ParseMode;
use millrace_models::schema::FieldType;
use serde_json::{json, Map, Value};

/// The OpenAPI 3 document, as written: the Criteo instance.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The OpenAPI document with `Instance` made of the fields of every served model's schema
/// (their union when models differ); the written document when no model has a schema.
pub(crate) fn openapi_for(store: &ModelStore) -> String {
    let mut fields = Map::new();
    for entry in store.entries() {
        let Some(map) = entry.primary().and_then(|v| v.model.feature_map.clone()) else {
            continue;
        };
        let schema = &map.layout.schema;
        for (i, name) in schema.fields.iter().enumerate() {
            let hex = map.layout.modes.get(i) == Some(&ParseMode::Hex);
            fields.insert(name.clone(), field_schema(schema.field_type(i), hex));
        }
    }
    if fields.is_empty() {
        return OPENAPI.to_owned();
    }
    let Ok(mut document) = serde_json::from_str::<Value>(OPENAPI) else {
        return OPENAPI.to_owned();
    };
    let names: Vec<Value> = fields.keys().map(|name| json!(name)).collect();
    let columns: Map<String, Value> = fields
        .iter()
        .map(|(name, field)| {
            let column = json!({"type": "array", "minItems": 1, "items": field});
            (name.clone(), column)
        })
        .collect();
    let mut set = |pointer: &str, value: Value| {
        if let Some(place) = document.pointer_mut(pointer) {
            *place = value;
        }
    };
    set(
        "/components/schemas/Instance",
        json!({
            "type": "object",
            "description": "A raw event of the served model's schema: its fields by name, any of them missing or null",
            "additionalProperties": false,
            "properties": Value::Object(fields),
        }),
    );
    set(
        "/components/schemas/ColumnsRequest/properties/inputs",
        json!({
            "type": "object",
            "description": "A list of values per field of the served model's schema, one value per instance, every list as long",
            "minProperties": 1,
            "additionalProperties": false,
            "properties": Value::Object(columns),
        }),
    );
    set(
        "/components/schemas/InferInput/properties/name",
        json!({"type": "string", "description": "A field of the served model's schema", "enum": names}),
    );
    document.to_string()
}

/// The JSON schema of one field's value: what the parser reads for its type (`hex`: a
/// category that hashed features read as eight hex digits).
fn field_schema(field: Option<FieldType>, hex: bool) -> Value {
    let scalar = json!([{"type": "string"}, {"type": "number"}, {"type": "boolean"}]);
    match field {
        Some(FieldType::Category) if hex => json!({
            "nullable": true,
            "description": "a category of eight hex digits (a hashed id); other text is kept as a malformed value",
            "type": "string",
        }),
        Some(FieldType::Number) => json!({
            "nullable": true,
            "description": "a number, or its text (other text is kept as a malformed value)",
            "anyOf": [{"type": "number"}, {"type": "string"}],
        }),
        Some(FieldType::Tokens { separator }) => json!({
            "nullable": true,
            "description": format!("tokens: an array of strings, or one string of them separated by {:?}", char::from(separator)),
            "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
        }),
        _ => json!({
            "nullable": true,
            "description": "a category: its text (a number or a boolean stands for its text)",
            "anyOf": scalar,
        }),
    }
}
