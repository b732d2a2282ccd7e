//! The `[schema]` section of a job file as written, and its compilation into a [`Schema`] that
//! lists every problem at once.

use super::{Column, Encoding, FieldType, LabelRule, RecordLayout, Role, Schema, TimeFormat};
use crate::criteo::{CAT_NAMES, INT_NAMES};
use serde::{Deserialize, Serialize};

/// The `[schema]` section: the records' format and fields (or a preset).
///
/// # Examples
///
/// ```
/// use millrace_events::schema::SchemaSpec;
///
/// let spec: SchemaSpec = toml::from_str(r#"
///     format = "csv"
///     fields = [
///       { name = "click", type = "label" },
///       { name = "site", type = "category" },
///       { name = "price", type = "number" },
///       { name = "tags", type = "tokens", separator = "|" },
///     ]
/// "#).unwrap();
/// let schema = spec.compile().unwrap();
/// assert_eq!(schema.fields, ["site", "price", "tags"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// A built-in schema instead of `fields`: `"criteo"` (a label, `I1`…`I13` numbers and
    /// `C1`…`C26` categories; tab-separated lines, or JSON objects with `format = "json"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["criteo"]))]
    pub preset: Option<String>,
    /// `"csv"`, `"tsv"`, `"json"` or `"libfm"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["csv", "tsv", "json", "libfm"]))]
    pub format: Option<String>,
    /// The column separator of csv and tsv lines, one byte (default `,` and a tab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Files only: the first line is a header that names the `fields` in order.
    #[serde(default)]
    pub header: bool,
    /// Label values that are a click (default `1`, `true`, `+1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_positive: Option<Vec<String>>,
    /// Label values that are not (default `0`, `false`, `-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_negative: Option<Vec<String>>,
    /// Instead of the two lists: a numeric label is a click at or above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_at_least: Option<f64>,
    /// The `time` field's format: `"ms"` (default), `"s"`, or a strftime pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_format: Option<String>,
    /// csv/tsv: every column, in line order; json: the fields read, by name (dotted paths
    /// reach into nested objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldSpec>>,
    /// The name of a decoder registered in the job's catalog that turns each record's bytes
    /// into a JSON object, whose fields are then read as `format = "json"` reads a record's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
}

/// One field of `[schema] fields`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The field's name (a column of a header, or a JSON key or dotted path).
    pub name: String,
    /// `skip`, `label`, `time`, `category`, `number` or `tokens`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = TYPES))]
    pub kind: String,
    /// `tokens` only: the byte between tokens (default `|`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
}

/// The types a field may have, as written.
const TYPES: [&str; 6] = ["skip", "label", "time", "category", "number", "tokens"];

/// The name of a libFM line's one field.
pub const LIBFM_FIELD: &str = "features";

impl SchemaSpec {
    /// The Criteo preset, as tab-separated lines.
    pub fn preset_criteo() -> Self {
        SchemaSpec {
            preset: Some("criteo".to_owned()),
            ..SchemaSpec::default()
        }
    }

    /// The record format as written (`None` when absent).
    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }

    /// Compiles the section into a [`Schema`].
    ///
    /// # Errors
    ///
    /// Every problem found, each naming its key or field.
    pub fn compile(&self) -> Result<Schema, Vec<String>> {
        let mut problems = Vec::new();
        let schema = match self.preset.as_deref() {
            Some(preset) => self.compile_preset(preset, &mut problems),
            None => self.compile_declared(&mut problems),
        };
        match schema {
            Some(schema) if problems.is_empty() => Ok(schema),
            _ => Err(problems),
        }
    }

    fn compile_preset(&self, preset: &str, problems: &mut Vec<String>) -> Option<Schema> {
        if preset != "criteo" {
            problems.push(format!("`preset` must be \"criteo\" (got {preset:?})"));
        }
        let given = [
            ("fields", self.fields.is_some()),
            ("delimiter", self.delimiter.is_some()),
            ("header", self.header),
            ("label_positive", self.label_positive.is_some()),
            ("label_negative", self.label_negative.is_some()),
            ("label_at_least", self.label_at_least.is_some()),
            ("event_time_format", self.event_time_format.is_some()),
            ("decoder", self.decoder.is_some()),
        ];
        for (key, _) in given.iter().filter(|(_, given)| *given) {
            problems.push(format!("`{key}` cannot be given with `preset`"));
        }
        let encoding = match self.format() {
            None | Some("tsv") => Encoding::Delimited { delimiter: b'\t' },
            Some("json") => Encoding::Json,
            Some(other) => {
                problems.push(format!(
                    "`format` must be \"tsv\" or \"json\" with the criteo preset (got {other:?})"
                ));
                return None;
            }
        };
        let names: Vec<&str> = INT_NAMES.iter().chain(CAT_NAMES.iter()).copied().collect();
        Some(Schema {
            fields: names.iter().map(|n| (*n).to_owned()).collect(),
            types: (0..names.len())
                .map(|i| {
                    if i < INT_NAMES.len() {
                        FieldType::Number
                    } else {
                        FieldType::Category
                    }
                })
                .collect(),
            record: Some(RecordLayout {
                encoding,
                columns: std::iter::once(Column {
                    name: "label".to_owned(),
                    role: Role::Label,
                })
                .chain(names.iter().enumerate().map(|(i, n)| Column {
                    name: (*n).to_owned(),
                    role: Role::Feature(i as u32),
                }))
                .collect(),
                header: false,
                label: match encoding {
                    Encoding::Json => LabelRule::Values {
                        positive: vec!["1".into(), "true".into()],
                        negative: vec!["0".into(), "false".into()],
                    },
                    _ => LabelRule::zero_one(),
                },
                time_format: TimeFormat::Millis,
                decoder: None,
            }),
        })
    }

    fn compile_declared(&self, problems: &mut Vec<String>) -> Option<Schema> {
        let encoding = match self.format() {
            Some("csv") | Some("tsv") => {
                let default = if self.format() == Some("csv") {
                    b','
                } else {
                    b'\t'
                };
                match self.delimiter.as_deref().map(str::as_bytes) {
                    None => Some(Encoding::Delimited { delimiter: default }),
                    Some([b]) if !matches!(b, b'\n' | b'\r' | b'"') => {
                        Some(Encoding::Delimited { delimiter: *b })
                    }
                    Some(_) => {
                        problems.push(format!(
                            "`delimiter` must be one byte other than a newline or `\"` (got {:?})",
                            self.delimiter.as_deref().unwrap_or_default()
                        ));
                        None
                    }
                }
            }
            Some(format @ ("json" | "libfm")) => {
                if self.delimiter.is_some() {
                    problems.push(format!("`delimiter` is for csv and tsv, not {format}"));
                }
                if self.header {
                    problems.push(format!("`header` is for csv and tsv, not {format}"));
                }
                Some(if format == "json" {
                    Encoding::Json
                } else {
                    Encoding::Libfm
                })
            }
            Some(other) => {
                problems.push(format!(
                    "`format` must be \"csv\", \"tsv\", \"json\" or \"libfm\" (got {other:?})"
                ));
                None
            }
            None => {
                problems.push(
                    "`format` is missing (\"csv\", \"tsv\", \"json\" or \"libfm\"), or give `preset`"
                        .to_owned(),
                );
                None
            }
        };
        if self.decoder.is_some() && encoding != Some(Encoding::Json) {
            problems.push(
                "`decoder` turns each record into a JSON object: it needs `format = \"json\"`"
                    .to_owned(),
            );
        }
        let label = self.label_rule(problems);
        let time_format = match self.event_time_format.as_deref() {
            None => TimeFormat::Millis,
            Some(name) => TimeFormat::from_name(name).unwrap_or_else(|why| {
                problems.push(why.to_string());
                TimeFormat::Millis
            }),
        };
        let (fields, types, columns) = match encoding {
            Some(Encoding::Libfm) => {
                if self.fields.is_some() {
                    problems.push(format!(
                        "libfm lines need no `fields`: every index is a token of the one field `{LIBFM_FIELD}`"
                    ));
                }
                if self.event_time_format.is_some() {
                    problems.push(
                        "`event_time_format` needs a `time` field, which libfm lines do not have"
                            .to_owned(),
                    );
                }
                (
                    vec![LIBFM_FIELD.to_owned()],
                    vec![FieldType::Tokens { separator: b' ' }],
                    Vec::new(),
                )
            }
            _ => self.compile_fields(encoding, problems),
        };
        Some(Schema {
            fields,
            types,
            record: Some(RecordLayout {
                encoding: encoding?,
                columns,
                header: self.header,
                label: label?,
                time_format,
                decoder: self.decoder.clone(),
            }),
        })
    }

    fn label_rule(&self, problems: &mut Vec<String>) -> Option<LabelRule> {
        if let Some(threshold) = self.label_at_least {
            if self.label_positive.is_some() || self.label_negative.is_some() {
                problems.push(
                    "`label_at_least` cannot be given with `label_positive` or `label_negative`"
                        .to_owned(),
                );
            }
            if !threshold.is_finite() {
                problems.push(format!(
                    "`label_at_least` must be a finite number (got {threshold})"
                ));
            }
            return Some(LabelRule::AtLeast(threshold));
        }
        let LabelRule::Values {
            positive: default_positive,
            negative: default_negative,
        } = LabelRule::default_values()
        else {
            return None;
        };
        let positive = self.label_positive.clone().unwrap_or(default_positive);
        let negative = self.label_negative.clone().unwrap_or(default_negative);
        for (key, list) in [("label_positive", &positive), ("label_negative", &negative)] {
            if list.is_empty() {
                problems.push(format!("`{key}` must name at least one value"));
            }
        }
        for both in positive.iter().filter(|p| negative.contains(p)) {
            problems.push(format!(
                "label value {both:?} is both in `label_positive` and in `label_negative`"
            ));
        }
        Some(LabelRule::Values { positive, negative })
    }

    /// The feature fields, their types and the record's columns of a csv, tsv or json schema.
    fn compile_fields(
        &self,
        encoding: Option<Encoding>,
        problems: &mut Vec<String>,
    ) -> (Vec<String>, Vec<FieldType>, Vec<Column>) {
        let Some(specs) = &self.fields else {
            problems.push("`fields` is missing: name every column (or give `preset`)".to_owned());
            return Default::default();
        };
        let (mut fields, mut types, mut columns) = (Vec::new(), Vec::new(), Vec::new());
        let (mut labels, mut times) = (0, 0);
        for (i, field) in specs.iter().enumerate() {
            let at = |why: String| format!("`fields[{i}]` (`{}`): {why}", field.name);
            if field.name.trim().is_empty() {
                problems.push(format!("`fields[{i}]`: `name` must not be empty"));
            } else if specs[..i].iter().any(|f| f.name == field.name) {
                problems.push(at("the name is given twice".to_owned()));
            }
            if field.separator.is_some() && field.kind != "tokens" {
                problems.push(at("`separator` is for `tokens` fields".to_owned()));
            }
            let role = match field.kind.as_str() {
                "skip" => Role::Skip,
                "label" => {
                    labels += 1;
                    Role::Label
                }
                "time" => {
                    times += 1;
                    Role::Time
                }
                kind @ ("category" | "number" | "tokens") => {
                    let field_type = match kind {
                        "category" => FieldType::Category,
                        "number" => FieldType::Number,
                        _ => FieldType::Tokens {
                            separator: self.separator(field, encoding, &at, problems),
                        },
                    };
                    fields.push(field.name.clone());
                    types.push(field_type);
                    Role::Feature(fields.len() as u32 - 1)
                }
                other => {
                    problems.push(at(format!(
                        "unknown type {other:?} (expected one of {})",
                        TYPES.join(", ")
                    )));
                    Role::Skip
                }
            };
            columns.push(Column {
                name: field.name.clone(),
                role,
            });
        }
        if labels != 1 {
            problems.push(format!(
                "`fields` must have exactly one field of type \"label\" (got {labels})"
            ));
        }
        if times > 1 {
            problems.push(format!(
                "`fields` may have at most one field of type \"time\" (got {times})"
            ));
        }
        if times == 0 && self.event_time_format.is_some() {
            problems.push("`event_time_format` needs a field of type \"time\"".to_owned());
        }
        if fields.is_empty() {
            problems.push(
                "`fields` must have at least one feature field (category, number or tokens)"
                    .to_owned(),
            );
        }
        (fields, types, columns)
    }

    fn separator(
        &self,
        field: &FieldSpec,
        encoding: Option<Encoding>,
        at: &dyn Fn(String) -> String,
        problems: &mut Vec<String>,
    ) -> u8 {
        let separator = match field.separator.as_deref().map(str::as_bytes) {
            None => b'|',
            Some([b]) => *b,
            Some(_) => {
                problems.push(at(format!(
                    "`separator` must be one byte (got {:?})",
                    field.separator.as_deref().unwrap_or_default()
                )));
                b'|'
            }
        };
        if encoding
            == Some(Encoding::Delimited {
                delimiter: separator,
            })
        {
            problems.push(at(
                "`separator` must differ from the line's `delimiter`".to_owned()
            ));
        }
        separator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Schema, Vec<String>> {
        toml::from_str::<SchemaSpec>(text).unwrap().compile()
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let problems = compile(
            r#"
            format = "csv"
            label_at_least = 4.0
            label_positive = ["y"]
            fields = [
              { name = "a", type = "category" },
              { name = "a", type = "number" },
              { name = "b", type = "integer" },
              { name = "c", type = "number", separator = "," },
              { name = "d", type = "tokens", separator = "," },
            ]
            "#,
        )
        .unwrap_err();
        let want = [
            "`label_at_least` cannot be given with `label_positive` or `label_negative`",
            "`fields[1]` (`a`): the name is given twice",
            "`fields[2]` (`b`): unknown type \"integer\" (expected one of skip, label, time, category, number, tokens)",
            "`fields[3]` (`c`): `separator` is for `tokens` fields",
            "`fields[4]` (`d`): `separator` must differ from the line's `delimiter`",
            "`fields` must have exactly one field of type \"label\" (got 0)",
        ];
        assert_eq!(problems, want);
    }

    #[test]
    fn formats_and_keys_are_checked() {
        let problems = compile("format = \"xml\"\ndelimiter = \";;\"").unwrap_err();
        assert_eq!(
            problems,
            [
                "`format` must be \"csv\", \"tsv\", \"json\" or \"libfm\" (got \"xml\")",
                "`fields` is missing: name every column (or give `preset`)",
            ]
        );
        let problems = compile("format = \"json\"\nheader = true\nevent_time_format = \"%Q\"\nfields = [{ name = \"l\", type = \"label\" }, { name = \"t\", type = \"time\" }, { name = \"u\", type = \"time\" }]").unwrap_err();
        assert_eq!(
            problems,
            [
                "`header` is for csv and tsv, not json",
                "`event_time_format` \"%Q\" has a directive that is not strftime's",
                "`fields` may have at most one field of type \"time\" (got 2)",
                "`fields` must have at least one feature field (category, number or tokens)",
            ]
        );
        let problems = compile("preset = \"criteo\"\nformat = \"csv\"\nheader = true").unwrap_err();
        assert_eq!(
            problems,
            [
                "`header` cannot be given with `preset`",
                "`format` must be \"tsv\" or \"json\" with the criteo preset (got \"csv\")",
            ]
        );
        let problems = compile("format = \"libfm\"\nlabel_positive = []\nlabel_negative = [\"1\"]")
            .unwrap_err();
        assert_eq!(problems, ["`label_positive` must name at least one value"]);
        let problems = compile("format = \"tsv\"\nlabel_positive = [\"1\"]\nlabel_negative = [\"1\"]\nfields = [{ name = \"l\", type = \"label\" }, { name = \"x\", type = \"number\" }]").unwrap_err();
        assert_eq!(
            problems,
            ["label value \"1\" is both in `label_positive` and in `label_negative`"]
        );
    }

    #[test]
    fn libfm_has_one_token_field() {
        let schema = compile("format = \"libfm\"").unwrap();
        assert_eq!(schema.fields, [LIBFM_FIELD]);
        assert_eq!(
            schema.record().label,
            LabelRule::default_values(),
            "labels ±1 and 0/1 are both read"
        );
    }

    #[test]
    fn the_criteo_preset_is_the_criteo_line() {
        let schema = compile("preset = \"criteo\"").unwrap();
        assert_eq!(schema, Schema::criteo());
        let record = schema.record();
        assert_eq!(record.encoding, Encoding::Delimited { delimiter: b'\t' });
        assert_eq!(record.columns.len(), 40);
        assert_eq!(record.label, LabelRule::zero_one());
        let json = compile("preset = \"criteo\"\nformat = \"json\"").unwrap();
        assert_eq!(json.record().encoding, Encoding::Json);
        assert_eq!(json.fields, schema.fields);
    }
}
