//! The job file's reference in Markdown (`docs/job-file.md`), rendered from its JSON Schema:
//! a section per table, a row per key with its type, default and documentation, and a part
//! per type of a table that has several (`[source]`, `[learner]`, the transforms).

use super::JobSpec;
use serde_json::{Map, Value};
use std::fmt::Write;

impl JobSpec {
    /// The job file's reference in Markdown, from [`JobSpec::job_file_schema`].
    pub fn reference() -> String {
        let schema = Self::job_file_schema();
        let mut out = String::from(
            "# The job file\n\n\
             Generated from the job file's types by `millrace validate --reference`; a test \
             keeps it in sync. The same in JSON Schema, for editors: `docs/job-file.schema.json` \
             (`millrace validate --json-schema`). `millrace validate JOB.toml` lists every \
             problem of a job file with its line and column. Any key may be overridden from the \
             environment: `MILLRACE__LEARNER__ALPHA=0.1`, \
             `MILLRACE__SINKS__DEAD_LETTERS_SINK__PATH=…`, \
             `MILLRACE__FEATURES__TRANSFORM__0__BUCKETS=32`.\n\n",
        );
        let root = Reader { root: &schema };
        root.table(&mut out, "", &schema, 2);
        out
    }
}

/// Renders schemas, resolving references against `root`.
struct Reader<'a> {
    root: &'a Value,
}

impl<'a> Reader<'a> {
    /// The schema `schema` refers to, or itself.
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(pointer) => self
                .root
                .pointer(pointer.trim_start_matches('#'))
                .map_or(schema, |target| self.resolve(target)),
            None => schema,
        }
    }

    /// The variants of a schema with several (`oneOf`, `anyOf`), `null` left out.
    fn variants(&self, schema: &'a Value) -> Vec<&'a Value> {
        let schema = self.resolve(schema);
        ["oneOf", "anyOf"]
            .iter()
            .filter_map(|key| schema.get(*key).and_then(Value::as_array))
            .flatten()
            .map(|variant| self.resolve(variant))
            .filter(|variant| variant.get("type") != Some(&Value::from("null")))
            .collect()
    }

    /// The tables of an array of tables (`[[features.transform]]`), when it is one.
    fn tables_of(&self, schema: &'a Value) -> Option<&'a Value> {
        let items = self.resolve(schema).get("items")?;
        self.is_table(items).then_some(items)
    }

    /// Whether a key of this schema is a table of its own (keys, or types of keys).
    fn is_table(&self, schema: &'a Value) -> bool {
        let schema = self.resolve(schema);
        schema.get("properties").is_some()
            || self
                .variants(schema)
                .iter()
                .any(|variant| variant.get("properties").is_some())
    }

    /// The rows of `schema`'s keys, then a section for each key that is a table; a table of
    /// several types gets a part per type.
    fn table(&self, out: &mut String, path: &str, schema: &'a Value, depth: usize) {
        let schema = self.resolve(schema);
        let variants = self.variants(schema);
        if let [only] = variants[..] {
            if schema.get("properties").is_none() {
                if only.get("description") != schema.get("description") {
                    write_description(out, only);
                }
                return self.table(out, path, only, depth);
            }
        }
        if schema.get("properties").is_none() && !variants.is_empty() {
            for variant in variants {
                let tag = tag_of(variant);
                heading(out, depth, &tag);
                write_description(out, variant);
                self.keys(out, path, variant, depth + 1);
            }
            return;
        }
        self.keys(out, path, schema, depth);
    }

    /// The table of `schema`'s keys (its tag left out), then its tables' sections.
    fn keys(&self, out: &mut String, path: &str, schema: &'a Value, depth: usize) {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required = required_of(schema);
        let (tables, rows): (Vec<_>, Vec<_>) = properties
            .iter()
            .filter(|(_, property)| property.get("const").is_none())
            .partition(|(_, property)| {
                self.is_table(property) || self.tables_of(property).is_some()
            });
        if !rows.is_empty() {
            out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
            for (key, property) in rows {
                let _ = writeln!(
                    out,
                    "| `{key}` | {} | {} | {} |",
                    self.type_of(property),
                    default_of(property, required.contains(&key.as_str())),
                    cell(
                        &description_of(property)
                            .or_else(|| description_of(self.resolve(property)))
                    ),
                );
            }
        }
        for (key, property) in tables {
            let name = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let needed = if required.contains(&key.as_str()) {
                " (required)"
            } else {
                ""
            };
            let (header, table) = match self.tables_of(property) {
                Some(items) => (format!("[[{name}]]"), items),
                None => (format!("[{name}]"), property),
            };
            heading(out, depth, &format!("`{header}`{needed}"));
            write_description(out, property);
            if property.get("description").is_none() {
                write_description(out, self.resolve(property));
            }
            self.table(out, &name, table, depth + 1);
        }
    }

    /// A key's type as written in TOML.
    fn type_of(&self, schema: &'a Value) -> String {
        let resolved = self.resolve(schema);
        if let Some(values) = resolved.get("enum").and_then(Value::as_array) {
            return values.iter().map(literal).collect::<Vec<_>>().join(" \\| ");
        }
        if let Some(value) = resolved.get("const") {
            return literal(value);
        }
        let variants = self.variants(resolved);
        if !variants.is_empty() {
            let mut types: Vec<String> = Vec::new();
            for variant in variants {
                let named = self.type_of(variant);
                if !types.contains(&named) {
                    types.push(named);
                }
            }
            return types.join(" \\| ");
        }
        let types: Vec<&str> = match resolved.get("type") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(several)) => several.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let named: Vec<String> = types
            .into_iter()
            .filter(|t| *t != "null")
            .map(|t| match t {
                "array" => match resolved.get("items") {
                    Some(items) => format!("array of {}", self.type_of(items)),
                    None => "array".to_owned(),
                },
                "object" => "table".to_owned(),
                "number" => "float".to_owned(),
                other => other.to_owned(),
            })
            .collect();
        if named.is_empty() {
            "any".to_owned()
        } else {
            named.join(" \\| ")
        }
    }
}

/// A variant's heading: its tag (`type = "kafka"`), or its title.
fn tag_of(variant: &Value) -> String {
    let tag = variant
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|properties| {
            properties
                .iter()
                .find_map(|(key, p)| Some(format!("`{key} = {}`", literal(p.get("const")?))))
        });
    tag.or_else(|| {
        variant
            .get("title")
            .and_then(Value::as_str)
            .map(|t| format!("`{t}`"))
    })
    .unwrap_or_else(|| "one form".to_owned())
}

/// The keys `schema` requires.
fn required_of(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A key's default: the schema's, "required" for a required key, or "—".
fn default_of(schema: &Value, required: bool) -> String {
    match schema.get("default") {
        Some(Value::Null) | None if required => "required".to_owned(),
        Some(Value::Null) | None => "—".to_owned(),
        Some(value) => format!("`{}`", literal(value).replace('|', "\\|")),
    }
}

/// A JSON value as TOML writes it.
fn literal(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => inline_table(map),
        other => other.to_string(),
    }
}

/// A JSON object as a TOML inline table.
fn inline_table(map: &Map<String, Value>) -> String {
    let entries: Vec<String> = map
        .iter()
        .map(|(key, value)| format!("{key} = {}", literal(value)))
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

/// A schema's documentation.
fn description_of(schema: &Value) -> Option<String> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The documentation as one table cell.
fn cell(description: &Option<String>) -> String {
    description
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The documentation as a paragraph, when there is some.
fn write_description(out: &mut String, schema: &Value) {
    if let Some(description) = description_of(schema) {
        let _ = write!(out, "{}\n\n", description.trim());
    }
}

/// A heading of `level` after one blank line.
fn heading(out: &mut String, level: usize, text: &str) {
    while out.ends_with("\n\n") {
        out.pop();
    }
    let _ = write!(out, "\n{} {text}\n\n", "#".repeat(level));
}
