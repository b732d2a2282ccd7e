//! The job file's JSON Schema: derived from the spec's types (their serde attributes and doc
//! comments), with `[source]` and the sinks' tables described by the catalog's types.

use super::JobSpec;
use crate::catalog::{Catalog, SINK_DEFINITION, SOURCE_DEFINITION};
use schemars::{generate::SchemaSettings, Schema, SchemaGenerator};
use serde_json::{json, Value};

impl JobSpec {
    /// The JSON Schema (draft 2020-12) of a job file read with the built-in catalog.
    pub fn job_file_schema() -> Value {
        Self::job_file_schema_in(&Catalog::builtin())
    }

    /// The JSON Schema (draft 2020-12) of a job file read with `catalog`: `[source]` is one of
    /// its source types, each sink table one of its sink types, each with the keys its factory
    /// describes.
    pub fn job_file_schema_in(catalog: &Catalog) -> Value {
        let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
        let mut types =
            |names: Vec<&str>, schema: &dyn Fn(&str, &mut SchemaGenerator) -> Option<Schema>| {
                names
                    .into_iter()
                    .filter_map(|name| Some(tagged(name, schema(name, &mut generator)?)))
                    .collect::<Vec<Value>>()
            };
        let sources = types(catalog.source_names(), &|name, generator| {
            Some(catalog.source_factory(name)?.settings_schema(generator))
        });
        let sinks = types(catalog.sink_names(), &|name, generator| {
            Some(catalog.sink_factory(name)?.settings_schema(generator))
        });
        let definitions = generator.definitions_mut();
        definitions.insert(
            SOURCE_DEFINITION.to_owned(),
            json!({ "description": "A source type of the job's catalog and its keys.", "oneOf": sources }),
        );
        definitions.insert(
            SINK_DEFINITION.to_owned(),
            json!({ "description": "A sink type of the job's catalog and its keys.", "oneOf": sinks }),
        );
        let mut schema = generator.into_root_schema_for::<JobSpec>().to_value();
        unlink_descriptions(&mut schema);
        narrow_defaults(&mut schema);
        schema
    }
}

/// Every `description` in `schema` without rustdoc's links, which name Rust items a job
/// file's reader has no use for: `[`A`](path::A)` and `[`A`]` become `` `A` ``.
fn unlink_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match value {
                    Value::String(text) if key == "description" => *text = unlinked(text),
                    other => unlink_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unlink_descriptions),
        _ => {}
    }
}

/// Every `default` in `schema` that is an `f32` widened to `f64` (`0.10000000149011612`) as
/// the `f32` was written (`0.1`), which is what reads back to it.
fn narrow_defaults(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                if key == "default" {
                    narrow(value);
                } else {
                    narrow_defaults(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(narrow_defaults),
        _ => {}
    }
}

/// `value`, and each number in it, as the shortest number that reads back to the same `f32`
/// when it is one.
fn narrow(value: &mut Value) {
    match value {
        Value::Number(number) if number.is_f64() => {
            if let Some(x) = number.as_f64() {
                let single = x as f32;
                if f64::from(single) == x {
                    if let Ok(shorter) = single.to_string().parse::<f64>() {
                        *value = json!(shorter);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(narrow),
        Value::Object(object) => object.values_mut().for_each(narrow),
        _ => {}
    }
}

/// `text` with each `[label](target)` or `[label]` whose label is code reduced to the label.
fn unlinked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find("`]") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&after[..end + 1]);
        rest = &after[end + 2..];
        if let Some(target) = rest.strip_prefix('(') {
            if let Some(close) = target.find(')') {
                rest = &target[close + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A type's table: its settings' schema with `type` set to `name`.
fn tagged(name: &str, settings: Schema) -> Value {
    let mut schema = settings.to_value();
    if let Some(object) = schema.as_object_mut() {
        let properties = object
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(properties) = properties {
            properties.insert(
                "type".to_owned(),
                json!({ "const": name, "description": "The type's name in the job's catalog." }),
            );
        }
        let required = object.entry("required").or_insert_with(|| json!([]));
        if let Some(required) = required.as_array_mut() {
            if !required.contains(&json!("type")) {
                required.insert(0, json!("type"));
            }
        }
        object.insert("title".to_owned(), json!(name));
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::{narrow_defaults, unlinked};
    use serde_json::json;

    #[test]
    fn rustdoc_links_become_their_code() {
        assert_eq!(
            unlinked("absent: [`DEFAULT`](super::fit::DEFAULT), see [`Layout`] and [x](y)."),
            "absent: `DEFAULT`, see `Layout` and [x](y)."
        );
        assert_eq!(unlinked("a [`b"), "a [`b");
    }

    #[test]
    fn an_f32_default_reads_as_it_was_written() {
        let mut schema = json!({ "default": f64::from(0.1f32), "x": { "default": [f64::from(1e-4f32), 0.3, 7] } });
        narrow_defaults(&mut schema);
        assert_eq!(
            schema,
            json!({ "default": 0.1, "x": { "default": [0.0001, 0.3, 7] } })
        );
    }
}
