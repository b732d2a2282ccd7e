//! Property tests of declared schemas: any schema and any bytes parse without panicking; a
//! line of a schema's columns is an event, and the same line with its label spoiled or a
//! column too many or too few is refused with an error that names the field or the count.

use millrace_models::fmap::{FeatureMapSpec, Parser};
use millrace_models::schema::{FieldSpec, SchemaSpec};
use millrace_models::DecodeError;
use millrace_models::{EventBatch, Schema};
use proptest::prelude::*;

/// A declared schema: one label column at `label`, the other columns of the given types.
fn schema_spec(format: &str, kinds: &[&str], label: usize) -> SchemaSpec {
    let mut fields: Vec<FieldSpec> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| FieldSpec {
            name: format!("f{i}"),
            kind: (*kind).to_owned(),
            separator: (*kind == "tokens").then(|| "|".to_owned()),
        })
        .collect();
    fields.insert(
        label.min(fields.len()),
        FieldSpec {
            name: "the_label".to_owned(),
            kind: "label".to_owned(),
            separator: None,
        },
    );
    SchemaSpec {
        format: Some(format.to_owned()),
        fields: (format != "libfm").then_some(fields),
        ..SchemaSpec::default()
    }
}

fn kinds() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(
        prop_oneof![
            Just("category"),
            Just("number"),
            Just("tokens"),
            Just("skip"),
            Just("time")
        ],
        1..8,
    )
    .prop_filter("at least one feature and one time at most", |k| {
        k.iter()
            .any(|k| matches!(*k, "category" | "number" | "tokens"))
            && k.iter().filter(|k| **k == "time").count() <= 1
    })
}

fn parser(spec: &SchemaSpec) -> (Schema, Parser) {
    let schema = spec.compile().unwrap();
    let layout = FeatureMapSpec::default_for(&schema)
        .compile(&schema)
        .unwrap();
    (schema, Parser::new(&layout))
}

proptest! {
    #[test]
    fn any_schema_parses_any_bytes_without_panicking(
        format in prop_oneof![Just("csv"), Just("tsv"), Just("json"), Just("libfm")],
        kinds in kinds(),
        label in 0usize..8,
        bytes in proptest::collection::vec(
            prop_oneof![Just(b','), Just(b'\t'), Just(b'"'), Just(b'|'), Just(b':'), Just(b' '), Just(b'{'), any::<u8>()],
            0..120,
        ),
    ) {
        let (schema, mut parser) = parser(&schema_spec(format, &kinds, label));
        let mut batch = EventBatch::new(schema.fields.len());
        let before = batch.clone();
        match parser.parse_record(&bytes, 0, &mut batch) {
            Ok(()) => prop_assert_eq!(batch.len(), 1),
            Err(_) => prop_assert_eq!(batch, before),
        }
    }

    #[test]
    fn a_line_of_the_columns_is_an_event_and_a_spoiled_one_names_why(
        delimited in prop_oneof![Just(("csv", ',')), Just(("tsv", '\t'))],
        kinds in kinds(),
        label in 0usize..8,
        cells in proptest::collection::vec("[a-z0-9|.\\-]{0,6}", 9),
        positive in any::<bool>(),
        spoil in 0usize..3,
    ) {
        let (format, delimiter) = delimited;
        let spec = schema_spec(format, &kinds, label);
        let (schema, mut parser) = parser(&spec);
        let columns = schema.record().columns;
        let at = label.min(kinds.len());
        let mut line: Vec<String> = (0..columns.len()).map(|i| cells[i].clone()).collect();
        line[at] = if positive { "1".into() } else { "0".into() };
        let mut batch = EventBatch::new(schema.fields.len());
        let text = line.join(&delimiter.to_string());
        prop_assert_eq!(parser.parse_record(text.as_bytes(), 0, &mut batch), Ok(()));
        prop_assert_eq!(batch.labels.clone(), vec![positive]);
        prop_assert_eq!(batch.row(0).len(), schema.fields.len());
        let (spoiled, want) = match spoil {
            0 => {
                line[at] = "2".into();
                (line.join(&delimiter.to_string()), DecodeError::LabelValue("the_label".into()))
            }
            1 => (
                format!("{text}{delimiter}x"),
                DecodeError::ColumnCount { expected: columns.len(), got: columns.len() + 1 },
            ),
            _ if at + 1 < columns.len() => {
                line.pop();
                (
                    line.join(&delimiter.to_string()),
                    DecodeError::ColumnCount { expected: columns.len(), got: columns.len() - 1 },
                )
            }
            _ => {
                line.remove(0);
                (line.join(&delimiter.to_string()), DecodeError::LabelValue("the_label".into()))
            }
        };
        let error = parser.parse_record(spoiled.as_bytes(), 0, &mut batch).unwrap_err();
        prop_assert!(error.to_string().contains("the_label") || error.kind() == "field_count", "{}", error);
        prop_assert_eq!(error, want);
        prop_assert_eq!(batch.len(), 1);
    }
}
