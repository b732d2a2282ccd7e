//! The declared schema of a job's events (`[schema]` in a job file): which fields a record holds,
//! how its bytes hold them (delimited lines, JSON objects, libFM lines), which field is the label
//! and which the event time, and the type of every feature field.
//!
//! [`SchemaSpec`] is the section as written; [`SchemaSpec::compile`] checks it (every problem at
//! once) and gives a [`Schema`], which the FeatureMap's layout, the parser, the source's event
//! time and serving all read. The Criteo schema is a preset ([`Schema::criteo`]).

pub mod infer;
pub mod label;
pub mod spec;
pub mod synth;
pub mod text;
pub mod time;

pub use label::LabelRule;
pub use spec::{FieldSpec, SchemaSpec};
pub use time::TimeFormat;

use serde::{Deserialize, Serialize};

/// The type of a feature field: how its raw value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// One categorical value (any text).
    Category,
    /// A number.
    Number,
    /// Several categorical values separated by one byte (a libFM line's indices are tokens too).
    Tokens {
        /// The separator.
        separator: u8,
    },
}

/// How a record's bytes hold its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One line, its columns separated by `delimiter` (CSV: a column may be quoted).
    Delimited {
        /// The column separator.
        delimiter: u8,
    },
    /// One JSON object; fields are read by name (dotted paths reach into nested objects) and
    /// other keys are ignored.
    Json,
    /// A libFM line: the label, then `index:value` pairs, every index a token of the one field.
    Libfm,
}

/// What a column of a record is to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not read.
    Skip,
    /// The label.
    Label,
    /// The event time (read by the source, which puts the record in its epoch).
    Time,
    /// Feature field `i` of [`Schema::fields`].
    Feature(u32),
}

/// One column of a record: a delimited line's column, or a JSON record's field path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name (a dotted path in JSON).
    pub name: String,
    /// What it is.
    pub role: Role,
}

/// How records are read: their encoding, their columns, the label and the event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordLayout {
    /// The encoding.
    pub encoding: Encoding,
    /// Delimited: every column in line order; JSON: the fields read; libFM: none.
    pub columns: Vec<Column>,
    /// Whether files of these records start with a header line naming the columns.
    pub header: bool,
    /// Which label values are clicks.
    pub label: LabelRule,
    /// How the time field's values are read.
    pub time_format: TimeFormat,
    /// The registered decoder that turns a record's bytes into the JSON object its fields are
    /// read from (`[schema] decoder`), when the bytes are not JSON themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
}

/// A compiled schema: the feature fields, with their types, and how records hold them.
///
/// Artifacts written before declared schemas hold only `fields` (Criteo's names); the other
/// parts then read as the Criteo preset's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The feature fields' names, in the order of a parsed event's values.
    pub fields: Vec<String>,
    /// One type per field; empty in artifacts written before declared schemas (then every
    /// field's type is what its transforms read).
    #[serde(default)]
    pub types: Vec<FieldType>,
    /// How records hold the fields (the Criteo line's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordLayout>,
}

/// A file's header line that does not name the schema's columns in order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the header does not name the `fields` in order: {}", .differences.join("; "))]
pub struct HeaderMismatch {
    /// Each column that differs, as `column N: the header has …, `fields` has …`.
    pub differences: Vec<String>,
}

impl Schema {
    /// The Criteo schema: a tab-separated line of `label` (`0` or `1`), `I1`…`I13` (numbers)
    /// and `C1`…`C26` (categories).
    pub fn criteo() -> Self {
        SchemaSpec::preset_criteo()
            .compile()
            .expect("the Criteo preset is a valid schema")
    }

    /// The index of a feature field.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f == name)
    }

    /// The type of feature field `i`, when the schema declares it.
    pub fn field_type(&self, i: usize) -> Option<FieldType> {
        self.types.get(i).copied()
    }

    /// How records hold the fields: the declared layout, or a Criteo line's (the label, then
    /// every field, tab-separated) for a schema written before layouts were declared.
    pub fn record(&self) -> RecordLayout {
        self.record.clone().unwrap_or_else(|| RecordLayout {
            encoding: Encoding::Delimited { delimiter: b'\t' },
            columns: std::iter::once(Column {
                name: "label".to_owned(),
                role: Role::Label,
            })
            .chain(self.fields.iter().enumerate().map(|(i, name)| Column {
                name: name.clone(),
                role: Role::Feature(i as u32),
            }))
            .collect(),
            header: false,
            label: LabelRule::zero_one(),
            time_format: TimeFormat::Millis,
            decoder: None,
        })
    }

    /// Whether records have a time field, which gives their event times.
    pub fn has_time_field(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.columns.iter().any(|c| c.role == Role::Time))
    }

    /// The event time of a record from its time field, in milliseconds since the Unix epoch:
    /// `None` when the schema has no time field, or the record lacks it or holds something
    /// that is not a time in the schema's format.
    pub fn event_time(&self, payload: &[u8]) -> Option<u64> {
        let record = self.record.as_ref()?;
        let at = record.columns.iter().position(|c| c.role == Role::Time)?;
        let raw = match record.encoding {
            Encoding::Delimited { delimiter } => {
                crate::schema::text::nth_column(payload, delimiter, at)?
            }
            Encoding::Json => return json_time(payload, &record.columns[at].name, record),
            Encoding::Libfm => return None,
        };
        record.time_format.parse(&raw)
    }

    /// The event time of a record already decoded into a JSON object (by the schema's
    /// decoder), from its time field: `None` as for [`Schema::event_time`].
    pub fn event_time_of_object(&self, object: &serde_json::Value) -> Option<u64> {
        let record = self.record.as_ref()?;
        let column = record.columns.iter().find(|c| c.role == Role::Time)?;
        let text = json_scalar_text(json_path(object, &column.name)?)?;
        record.time_format.parse(text.as_bytes())
    }

    /// Checks a file's header line against the declared columns.
    ///
    /// # Errors
    ///
    /// [`HeaderMismatch`], naming the columns that differ, in order.
    pub fn check_header(&self, line: &[u8]) -> Result<(), HeaderMismatch> {
        let record = self.record();
        let Encoding::Delimited { delimiter } = record.encoding else {
            return Ok(());
        };
        let line = strip_newline(line);
        let got: Vec<String> = crate::schema::text::split_columns(line, delimiter)
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
            .collect();
        let want: Vec<&str> = record.columns.iter().map(|c| c.name.as_str()).collect();
        if got.iter().map(String::as_str).eq(want.iter().copied()) {
            return Ok(());
        }
        let mut differ = Vec::new();
        for i in 0..got.len().max(want.len()) {
            let (g, w) = (got.get(i).map(String::as_str), want.get(i).copied());
            if g != w {
                differ.push(format!(
                    "column {}: the header has {}, `fields` has {}",
                    i + 1,
                    g.map_or("nothing".to_owned(), |g| format!("`{g}`")),
                    w.map_or("nothing".to_owned(), |w| format!("`{w}`"))
                ));
            }
        }
        Err(HeaderMismatch {
            differences: differ,
        })
    }

    /// The records of a file of these records: its non-blank lines, after the header line
    /// (the first non-blank one) when the schema declares one, which must name the columns.
    ///
    /// # Errors
    ///
    /// [`HeaderMismatch`], when the header does not name the fields.
    pub fn records<'t>(&self, text: &'t [u8]) -> Result<Vec<&'t [u8]>, HeaderMismatch> {
        Ok(self
            .record_spans(text)?
            .into_iter()
            .map(|span| &text[span])
            .collect())
    }

    /// As [`Schema::records`], each record as its place in `text`.
    ///
    /// # Errors
    ///
    /// As [`Schema::records`].
    pub fn record_spans(&self, text: &[u8]) -> Result<Vec<std::ops::Range<usize>>, HeaderMismatch> {
        let mut from = 0;
        let mut lines = text.split(|&b| b == b'\n').filter_map(|line| {
            let span = from..from + line.len();
            from = span.end + 1;
            (!line.iter().all(u8::is_ascii_whitespace)).then_some(span)
        });
        if self.record().header {
            if let Some(header) = lines.next() {
                self.check_header(&text[header])?;
            }
        }
        Ok(lines.collect())
    }

    /// The feature fields `names` stand for (a name ending in `*` stands for every field that
    /// starts with what comes before it), and the names that match none.
    pub(crate) fn resolve(&self, names: &[String]) -> (Vec<usize>, Vec<String>) {
        let (mut found, mut unknown) = (Vec::new(), Vec::new());
        for name in names {
            let matched: Vec<usize> = match name.strip_suffix('*') {
                Some(prefix) => (0..self.fields.len())
                    .filter(|&i| self.fields[i].starts_with(prefix))
                    .collect(),
                None => self.index(name).into_iter().collect(),
            };
            if matched.is_empty() {
                unknown.push(name.clone());
            }
            for i in matched {
                if !found.contains(&i) {
                    found.push(i);
                }
            }
        }
        (found, unknown)
    }
}

/// The line without its trailing `\n` or `\r\n`.
pub(crate) fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The value at a dotted path of a JSON object.
pub(crate) fn json_path<'v>(
    value: &'v serde_json::Value,
    path: &str,
) -> Option<&'v serde_json::Value> {
    match value.get(path) {
        Some(found) => Some(found),
        None if path.contains('.') => path
            .split('.')
            .try_fold(value, |at, key| at.as_object()?.get(key)),
        None => None,
    }
}

/// The raw text of a JSON scalar as a delimited line would hold it: strings as they are,
/// numbers and booleans as JSON writes them; `None` for null, arrays and objects.
pub(crate) fn json_scalar_text(value: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        serde_json::Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(std::borrow::Cow::Borrowed(if *b {
            "true"
        } else {
            "false"
        })),
        _ => None,
    }
}

fn json_time(payload: &[u8], path: &str, record: &RecordLayout) -> Option<u64> {
    // The common case, a top-level key, is read without building the object.
    if !path.contains('.') && record.time_format == TimeFormat::Millis {
        return crate::record::event_time_ms(payload, path);
    }
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let text = json_scalar_text(json_path(&value, path)?)?;
    record.time_format.parse(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avazu_like() -> Schema {
        let spec: SchemaSpec = toml::from_str(
            r#"
            format = "csv"
            header = true
            event_time_format = "%y%m%d%H"
            fields = [
              { name = "id", type = "skip" },
              { name = "click", type = "label" },
              { name = "hour", type = "time" },
              { name = "site", type = "category" },
            ]
            "#,
        )
        .unwrap();
        spec.compile().unwrap()
    }

    #[test]
    fn event_times_come_from_the_time_column() {
        let schema = avazu_like();
        assert_eq!(
            schema.event_time(b"17,0,14102100,abc\n"),
            Some(1_413_849_600_000)
        );
        assert_eq!(
            schema.event_time(b"17,0,\"14102101\",abc"),
            Some(1_413_853_200_000)
        );
        assert_eq!(schema.event_time(b"17,0,x,abc"), None);
        assert_eq!(schema.event_time(b"17,0"), None);
        assert_eq!(Schema::criteo().event_time(b"0\t1"), None);
    }

    #[test]
    fn a_header_must_name_the_fields_in_order() {
        let schema = avazu_like();
        assert_eq!(schema.check_header(b"id,click,hour,site\r\n"), Ok(()));
        let error = schema
            .check_header(b"id,hour,click,site")
            .unwrap_err()
            .to_string();
        assert!(error.contains("column 2: the header has `hour`, `fields` has `click`"));
        assert!(error.contains("column 3: the header has `click`, `fields` has `hour`"));
        let short = schema
            .check_header(b"id,click,hour")
            .unwrap_err()
            .to_string();
        assert!(short.contains("column 4: the header has nothing, `fields` has `site`"));
    }

    #[test]
    fn a_files_records_follow_its_checked_header() {
        let schema = avazu_like();
        let text = b"\nid,click,hour,site\r\n1,0,14102100,a\n\n \n2,1,14102100,b";
        assert_eq!(
            schema.records(text),
            Ok(vec![&b"1,0,14102100,a"[..], b"2,1,14102100,b"])
        );
        assert!(schema.records(b"id,click\n1,0").is_err());
        assert_eq!(
            Schema::criteo().records(b"0\t1\n\n1\t2\n").unwrap().len(),
            2
        );
    }

    #[test]
    fn dotted_paths_reach_into_objects() {
        let value = serde_json::json!({"a": {"b": {"c": 3}}, "x.y": 1});
        assert_eq!(json_path(&value, "a.b.c"), Some(&serde_json::json!(3)));
        assert_eq!(json_path(&value, "x.y"), Some(&serde_json::json!(1)));
        assert_eq!(json_path(&value, "a.z"), None);
        assert_eq!(json_path(&value, "a.b.c.d"), None);
    }

    #[test]
    fn schemas_written_before_layouts_read_as_criteo_lines() {
        let old: Schema = serde_json::from_str(r#"{"fields": ["I1", "C1"]}"#).unwrap();
        let record = old.record();
        assert_eq!(record.columns.len(), 3);
        assert_eq!(record.columns[0].role, Role::Label);
        assert_eq!(record.columns[2].role, Role::Feature(1));
        let criteo = Schema::criteo();
        assert_eq!(criteo.fields.len(), 39);
        assert_eq!(criteo.field_type(0), Some(FieldType::Number));
        assert_eq!(criteo.field_type(13), Some(FieldType::Category));
    }
}
