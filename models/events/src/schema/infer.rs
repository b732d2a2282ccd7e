//! `millrace schema infer`: a `[schema]` block guessed from a file's header and first rows, for
//! the user to read and edit.
//!
//! The guesses: the format from the first line (an object is JSON, `label idx:value …` is
//! libFM, a tab makes TSV, else CSV); a header when every cell of the first line is a name and
//! the file's later lines differ; per column, `label` for a column named like one (`click`,
//! `label`, `target`, `y`, `rating`) or else the first of 0/1 or ±1 values; `time` for a
//! column named like one (`hour`, `time`, `timestamp`, `ts`) with its format from its digits;
//! `skip` for a column named `id`; `number` for a column of numbers whose name does not end in
//! `id`; `category` for the rest.

use super::spec::{FieldSpec, SchemaSpec};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Why no schema could be guessed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    /// The file has no non-blank line.
    #[error("the file has no line")]
    Empty,
    /// The format asked for is not one [`infer`] knows.
    #[error("`--format` must be csv, tsv, json or libfm (got {0:?})")]
    Format(String),
}

/// Lines read to guess the types.
const SAMPLE_LINES: usize = 1000;

/// Guesses a schema from the start of a file; `format` forces the format.
///
/// # Errors
///
/// [`InferError`] when the file has no line, or `format` is not one of csv, tsv, json, libfm.
pub fn infer(text: &[u8], format: Option<&str>) -> Result<SchemaSpec, InferError> {
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .map(super::strip_newline)
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .take(SAMPLE_LINES + 1)
        .collect();
    let first = *lines.first().ok_or(InferError::Empty)?;
    let format = match format {
        Some(f @ ("csv" | "tsv" | "json" | "libfm")) => f,
        Some(other) => return Err(InferError::Format(other.to_owned())),
        None if first.trim_ascii_start().starts_with(b"{") => "json",
        None if looks_libfm(first) => "libfm",
        None if first.contains(&b'\t') => "tsv",
        None => "csv",
    };
    let mut spec = SchemaSpec {
        format: Some(format.to_owned()),
        ..SchemaSpec::default()
    };
    match format {
        "libfm" => {}
        "json" => spec.fields = Some(json_fields(&lines, &mut spec)),
        _ => {
            let delimiter = if format == "tsv" { b'\t' } else { b',' };
            let rows: Vec<Vec<String>> = lines
                .iter()
                .map(|l| {
                    crate::schema::text::split_columns(l, delimiter)
                        .into_iter()
                        .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
                        .collect()
                })
                .collect();
            spec.header = rows.len() > 1
                && rows[0].iter().all(|c| {
                    is_name(c) && crate::schema::text::parse_number(c.as_bytes()).is_none()
                })
                && rows[0] != rows[1];
            let (names, body) = if spec.header {
                (rows[0].clone(), &rows[1..])
            } else {
                let width = rows[0].len();
                ((1..=width).map(|i| format!("c{i}")).collect(), &rows[..])
            };
            let columns: Vec<Vec<&str>> = (0..names.len())
                .map(|i| {
                    body.iter()
                        .filter_map(|r| r.get(i).map(String::as_str))
                        .collect()
                })
                .collect();
            spec.fields = Some(guess_fields(&names, &columns, &mut spec));
        }
    }
    Ok(spec)
}

/// The spec as a `[schema]` block of TOML, one field per line.
pub fn to_toml(spec: &SchemaSpec) -> String {
    let mut out = String::from("[schema]\n");
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    if let Some(format) = &spec.format {
        let _ = writeln!(out, "format = {}", quoted(format));
    }
    if spec.header {
        out.push_str("header = true\n");
    }
    if let Some(at_least) = spec.label_at_least {
        let _ = writeln!(out, "label_at_least = {at_least:?}");
    }
    for (key, list) in [
        ("label_positive", &spec.label_positive),
        ("label_negative", &spec.label_negative),
    ] {
        if let Some(list) = list {
            let items: Vec<String> = list.iter().map(|v| quoted(v)).collect();
            let _ = writeln!(out, "{key} = [{}]", items.join(", "));
        }
    }
    if let Some(format) = &spec.event_time_format {
        let _ = writeln!(out, "event_time_format = {}", quoted(format));
    }
    if let Some(fields) = &spec.fields {
        out.push_str("fields = [\n");
        for field in fields {
            let _ = write!(
                out,
                "  {{ name = {}, type = {}",
                quoted(&field.name),
                quoted(&field.kind)
            );
            if let Some(separator) = &field.separator {
                let _ = write!(out, ", separator = {}", quoted(separator));
            }
            out.push_str(" },\n");
        }
        out.push_str("]\n");
    }
    out
}

fn looks_libfm(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_ascii_whitespace();
    parts
        .next()
        .is_some_and(|l| crate::schema::text::parse_number(l.as_bytes()).is_some())
        && parts.clone().next().is_some()
        && parts.all(|p| {
            p.split_once(':')
                .is_some_and(|(i, v)| i.parse::<u64>().is_ok() && v.parse::<f64>().is_ok())
        })
}

fn is_name(cell: &str) -> bool {
    !cell.is_empty()
        && cell
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | ' '))
}

fn label_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().split(':').next().unwrap_or(""),
        "click" | "clicked" | "label" | "target" | "y" | "rating" | "is_click"
    )
}

fn time_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().split(':').next().unwrap_or(""),
        "hour" | "time" | "timestamp" | "ts" | "event_time" | "event_ts"
    )
}

/// The format of a time column from its values' digits.
fn time_format(values: &[&str]) -> Option<String> {
    let digits = values
        .iter()
        .find(|v| !v.is_empty())?
        .trim_end_matches(".0");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        match digits.len() {
            8 => "%y%m%d%H",
            9 | 10 => "s",
            _ => "ms",
        }
        .to_owned(),
    )
}

fn guess_fields(names: &[String], columns: &[Vec<&str>], spec: &mut SchemaSpec) -> Vec<FieldSpec> {
    let numeric = |values: &[&str]| {
        let mut present = values.iter().filter(|v| !v.is_empty()).peekable();
        present.peek().is_some()
            && present.all(|v| crate::schema::text::parse_number(v.as_bytes()).is_some())
    };
    let binary = |values: &[&str]| {
        let set: HashSet<&str> = values.iter().copied().collect();
        !set.is_empty()
            && (set.iter().all(|v| matches!(*v, "0" | "1"))
                || set.iter().all(|v| matches!(*v, "-1" | "1" | "+1")))
    };
    let mut label = names.iter().position(|n| label_name(n));
    if label.is_none() {
        label = columns.iter().position(|c| binary(c));
    }
    // A time column must hold digits whose format can be told (a date in words is left to
    // the user, as a category).
    let time = names.iter().enumerate().position(|(i, n)| {
        time_name(n) && columns.get(i).is_some_and(|v| time_format(v).is_some())
    });
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let values = columns.get(i).map_or(&[][..], Vec::as_slice);
            // RecBole's headers name a column's type after a colon (`user_id:token`).
            let base = name.split(':').next().unwrap_or(name);
            let kind = if Some(i) == label {
                if !binary(values) && numeric(values) {
                    spec.label_at_least = Some(4.0);
                }
                "label"
            } else if Some(i) == time {
                spec.event_time_format = time_format(values).filter(|f| f != "ms");
                "time"
            } else if base.eq_ignore_ascii_case("id") {
                "skip"
            } else if numeric(values) && !base.to_ascii_lowercase().ends_with("id") {
                "number"
            } else {
                "category"
            };
            FieldSpec {
                name: name.clone(),
                kind: kind.to_owned(),
                separator: None,
            }
        })
        .collect()
}

/// The fields of the first JSON objects, nested objects flattened into dotted paths; a field
/// that holds arrays is `tokens`.
fn json_fields(lines: &[&[u8]], spec: &mut SchemaSpec) -> Vec<FieldSpec> {
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Vec<String>> = Vec::new();
    let mut arrays = HashSet::new();
    for line in lines {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(line) else {
            continue;
        };
        let mut flat = Vec::new();
        flatten("", &object, &mut flat, &mut arrays);
        for (name, value) in flat {
            let at = match names.iter().position(|n| *n == name) {
                Some(at) => at,
                None => {
                    names.push(name);
                    values.push(Vec::new());
                    names.len() - 1
                }
            };
            values[at].push(value);
        }
    }
    let columns: Vec<Vec<&str>> = values
        .iter()
        .map(|v| v.iter().map(String::as_str).collect())
        .collect();
    let mut fields = guess_fields(&names, &columns, spec);
    // A JSON schema reads fields by name: skipped ones need not be listed.
    fields.retain(|f| f.kind != "skip");
    for field in &mut fields {
        if arrays.contains(&field.name) && matches!(field.kind.as_str(), "category" | "number") {
            field.kind = "tokens".to_owned();
            field.separator = Some("|".to_owned());
        }
    }
    fields
}

fn flatten(
    prefix: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, String)>,
    arrays: &mut HashSet<String>,
) {
    for (key, value) in object {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            serde_json::Value::Object(inner) => flatten(&name, inner, out, arrays),
            serde_json::Value::Array(items) => {
                let text: Vec<String> = items
                    .iter()
                    .filter_map(|i| super::json_scalar_text(i).map(|t| t.into_owned()))
                    .collect();
                arrays.insert(name.clone());
                out.push((name, text.join("|")));
            }
            other => {
                let text =
                    super::json_scalar_text(other).map_or_else(String::new, |t| t.into_owned());
                out.push((name, text));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_avazu_like_csv_is_guessed_and_compiles() {
        let text = b"id,click,hour,site_id,banner_pos,price\n\
            1000,0,14102100,1fbe01fe,0,1.5\n\
            1001,1,14102100,85f751fd,1,2\n";
        let spec = infer(text, None).unwrap();
        let toml_text = to_toml(&spec);
        assert!(
            toml_text.contains("format = \"csv\"\nheader = true\n"),
            "{toml_text}"
        );
        assert!(toml_text.contains("event_time_format = \"%y%m%d%H\""));
        assert!(toml_text.contains("{ name = \"id\", type = \"skip\" }"));
        assert!(toml_text.contains("{ name = \"click\", type = \"label\" }"));
        assert!(toml_text.contains("{ name = \"site_id\", type = \"category\" }"));
        assert!(toml_text.contains("{ name = \"price\", type = \"number\" }"));
        let table: toml::Table = toml_text.parse().unwrap();
        let back: SchemaSpec = table["schema"].clone().try_into().unwrap();
        assert_eq!(back, spec);
        let schema = back.compile().unwrap();
        assert_eq!(schema.fields, ["site_id", "banner_pos", "price"]);
        assert_eq!(
            schema.check_header(b"id,click,hour,site_id,banner_pos,price"),
            Ok(())
        );
    }

    #[test]
    fn ratings_json_and_libfm_are_guessed() {
        let ratings = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t5\t891717742\n";
        let spec = infer(ratings, None).unwrap();
        assert_eq!(spec.format.as_deref(), Some("tsv"));
        assert_eq!(spec.label_at_least, Some(4.0));
        assert_eq!(spec.event_time_format.as_deref(), Some("s"));
        let kinds: Vec<&str> = spec
            .fields
            .as_ref()
            .unwrap()
            .iter()
            .map(|f| f.kind.as_str())
            .collect();
        assert_eq!(kinds, ["category", "category", "label", "time"]);

        let json = br#"{"label": 1, "ts": 1700000000000, "user": {"id": "u1", "age": 31}}"#;
        let spec = infer(json, None).unwrap();
        let fields = spec.fields.as_ref().unwrap();
        let named: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("label", "label"),
                ("ts", "time"),
                ("user.age", "number"),
                ("user.id", "category")
            ]
        );
        assert_eq!(spec.event_time_format, None);
        assert!(spec.compile().is_ok());

        let arrays = br#"{"click": 0, "tags": ["a", "b"], "when": "2024-01-01", "note": null}"#;
        let spec = infer(arrays, None).unwrap();
        let kinds: Vec<(&str, &str)> = spec
            .fields
            .as_ref()
            .unwrap()
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("click", "label"),
                ("note", "category"),
                ("tags", "tokens"),
                ("when", "category")
            ],
            "arrays are tokens, a column of nothing is no number, a date in words no time"
        );
        assert!(spec.compile().is_ok());

        let libfm = b"-1 204:1 4798:1\r\n1 42:1 1572:1\r\n";
        assert_eq!(infer(libfm, None).unwrap().format.as_deref(), Some("libfm"));
        assert!(infer(b"", None).is_err());
        assert!(infer(b"a", Some("xml")).is_err());
    }
}
