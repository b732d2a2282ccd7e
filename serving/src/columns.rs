//! Columns of field values to instances: the columnar request forms (TF Serving's `inputs`,
//! the Open Inference Protocol's tensors) become the same instance objects that `instances`
//! sends, so every form is scored, cached and batched by one path.

use crate::reply::{bad_request, Refusal};
use crate::version::LoadedVersion;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashSet;
use warp::http::StatusCode;

/// One named column: a value per instance, as JSON text (`null` for a missing one), borrowed
/// from the request where it can be.
#[derive(Debug)]
pub(crate) struct Column<'a> {
    /// The field it holds.
    pub(crate) name: Cow<'a, str>,
    /// Its values, one per instance.
    pub(crate) values: Vec<Cow<'a, str>>,
}

/// Refuses columns whose names are not fields of `version`'s schema, before their rows are
/// made (TF Serving refuses unknown inputs too).
pub(crate) fn check_fields(columns: &[Column<'_>], version: &LoadedVersion) -> Result<(), Refusal> {
    match columns
        .iter()
        .find(|c| version.field_type(&c.name).is_none())
    {
        Some(column) => Err(bad_request(format!(
            "input `{}` is not a field of model `{}`'s schema",
            column.name, version.model.meta.name
        ))),
        None => Ok(()),
    }
}

/// The instances of `columns`, one object per row of the field values that are not `null`.
///
/// # Errors
///
/// A 400 when the columns hold different numbers of values or a field comes twice; a 413 past
/// `max_rows` rows, before any row is made.
pub(crate) fn instances(
    columns: &[Column<'_>],
    max_rows: usize,
) -> Result<Vec<Box<RawValue>>, Refusal> {
    let Some(first) = columns.first() else {
        return Err(bad_request("the request holds no input"));
    };
    let rows = first.values.len();
    if rows > max_rows {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {max_rows} instances per request (got {rows})"),
        ));
    }
    let mut names = HashSet::with_capacity(columns.len());
    for column in columns {
        if column.values.len() != rows {
            return Err(bad_request(format!(
                "input `{}` holds {} values but `{}` holds {rows}: every input needs one value per instance",
                column.name,
                column.values.len(),
                first.name
            )));
        }
        if !names.insert(&*column.name) {
            return Err(bad_request(format!("input `{}` comes twice", column.name)));
        }
    }
    let keys: Vec<String> = columns
        .iter()
        .map(|c| Value::String(c.name.to_string()).to_string())
        .collect();
    (0..rows)
        .map(|row| {
            let mut text = String::from("{");
            for (key, column) in keys.iter().zip(columns) {
                let value = &column.values[row];
                if value == "null" {
                    continue;
                }
                if text.len() > 1 {
                    text.push(',');
                }
                text.push_str(key);
                text.push(':');
                text.push_str(value);
            }
            text.push('}');
            RawValue::from_string(text).map_err(|e| bad_request(format!("instance {row}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(name: &str, values: Value) -> Column<'_> {
        let texts = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string().into());
        Column {
            name: name.into(),
            values: texts.collect(),
        }
    }

    #[test]
    fn rows_are_objects_of_the_columns_values_without_nulls() {
        let columns = [
            column("I1", json!([3, null, 2.5])),
            column("C\"1", json!(["a", "b", null])),
        ];
        let rows: Vec<Value> = instances(&columns, 10)
            .unwrap()
            .iter()
            .map(|raw| serde_json::from_str(raw.get()).unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                json!({"I1": 3, "C\"1": "a"}),
                json!({"C\"1": "b"}),
                json!({"I1": 2.5})
            ]
        );
    }

    #[test]
    fn uneven_or_repeated_columns_are_refused() {
        let uneven = [column("a", json!([1, 2])), column("b", json!([1]))];
        assert!(instances(&uneven, 10)
            .unwrap_err()
            .1
            .contains("`b` holds 1"));
        let twice = [column("a", json!([1])), column("a", json!([2]))];
        assert!(instances(&twice, 10).unwrap_err().1.contains("comes twice"));
        assert!(instances(&[], 10).is_err());
        let many = [column("a", json!([1, 2, 3]))];
        assert_eq!(instances(&many, 2).unwrap_err().0, 413);
    }
}
