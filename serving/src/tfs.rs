//! TF Serving's REST dialect under `/v1/models/{name}`: `:predict` with the row (`instances`)
//! or the columnar (`inputs`) form, by traffic, by version or by label; the model's version
//! status and its signature metadata. millrace's own status document rides along under the
//! `millrace` key, where TF Serving's clients do not look.

use crate::columns::Column;
use crate::predict::{self, Pick, Scored};
use crate::reply::{bad_request, not_served, Refusal};
use crate::status::ModelStatus;
use crate::store::ModelStore;
use crate::version::LoadedVersion;
use millrace_models::schema::FieldType;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What a path under `/v1/models/` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ModelPath {
    /// `POST {name}[/versions/{v}|/labels/{l}]:predict`.
    Predict {
        /// The model.
        name: String,
        /// The version that answers.
        pick: Pick,
    },
    /// `GET {name}[/versions/{v}|/labels/{l}]`: the version status.
    Status {
        /// The model.
        name: String,
        /// One version; `None` lists them all.
        pick: Option<Pick>,
    },
    /// `GET {name}[/versions/{v}|/labels/{l}]/metadata`: the signature.
    Metadata {
        /// The model.
        name: String,
        /// The version described; `None` for the primary.
        pick: Option<Pick>,
    },
}

impl ModelPath {
    /// The path under `/v1/models/` that `tail` is; `None` for none.
    pub(crate) fn parse(tail: &str) -> Option<ModelPath> {
        let mut segments: Vec<&str> = tail.split('/').collect();
        let mut predict = false;
        let mut metadata = false;
        if segments.len() > 1 && segments.last() == Some(&"metadata") {
            segments.pop();
            metadata = true;
        } else if let Some(last) = segments.last_mut() {
            if let Some(target) = last.strip_suffix(":predict") {
                *last = target;
                predict = true;
            }
        }
        let (name, pick) = match segments.as_slice() {
            [name] => (*name, None),
            [name, "versions", version] => (*name, Some(Pick::Version(version.parse().ok()?))),
            [name, "labels", label] if !label.is_empty() => {
                (*name, Some(Pick::Label((*label).to_owned())))
            }
            _ => return None,
        };
        if name.is_empty() || name.contains(':') {
            return None;
        }
        let name = name.to_owned();
        Some(if predict {
            ModelPath::Predict {
                name,
                pick: pick.unwrap_or(Pick::Traffic),
            }
        } else if metadata {
            ModelPath::Metadata { name, pick }
        } else {
            ModelPath::Status { name, pick }
        })
    }

    /// The method the path takes.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            ModelPath::Predict { .. } => "POST",
            ModelPath::Status { .. } | ModelPath::Metadata { .. } => "GET",
        }
    }
}

/// A `:predict` body: rows (`instances`) or columns (`inputs`), and a signature name, which a
/// millrace model (one signature) takes and ignores.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictBody {
    #[serde(default, rename = "signature_name")]
    _signature_name: Option<String>,
    #[serde(default)]
    instances: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    inputs: Option<Value>,
}

/// The form a `:predict` request came in, which its answer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// `instances`: answered with `predictions`.
    Rows,
    /// `inputs`: answered with `outputs`.
    Columns,
}

/// A `:predict` body, read: its instances, or its columns.
#[derive(Debug)]
pub(crate) enum Predict {
    /// The row form's instances.
    Rows(Vec<Box<RawValue>>),
    /// The columnar form's columns, whose instances are made once their fields are checked.
    Columns(Vec<Column<'static>>),
}

/// Reads a `:predict` body.
///
/// # Errors
///
/// A 400 for a body that is not one of the forms.
pub(crate) fn read(body: &[u8]) -> Result<Predict, Refusal> {
    let body: PredictBody = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("invalid request body: {e}")))?;
    match (body.instances, body.inputs) {
        (Some(instances), None) => Ok(Predict::Rows(instances)),
        (None, Some(inputs)) => Ok(Predict::Columns(input_columns(inputs)?)),
        (Some(_), Some(_)) => Err(bad_request(
            "a request holds `instances` (rows) or `inputs` (columns), not both",
        )),
        (None, None) => Err(bad_request(
            "a request holds `instances` (a list of objects of field values) or `inputs` (an object of a list of values per field)",
        )),
    }
}

/// The columns of TF Serving's columnar `inputs`: an object of one list of values per field.
fn input_columns(inputs: Value) -> Result<Vec<Column<'static>>, Refusal> {
    let Value::Object(inputs) = inputs else {
        return Err(bad_request(
            "`inputs` names each field: {\"inputs\": {\"field\": [a value per instance], …}}",
        ));
    };
    inputs
        .into_iter()
        .map(|(name, values)| match values {
            Value::Array(values) => Ok(Column {
                name: name.into(),
                values: values.iter().map(|v| v.to_string().into()).collect(),
            }),
            _ => Err(bad_request(format!(
                "input `{name}` must be a list of values, one per instance"
            ))),
        })
        .collect()
}

/// The answer to a scored `:predict` request, in the form it came in.
pub(crate) fn answer(scored: Scored, form: Form) -> Value {
    let mut answer = Map::new();
    let key = match form {
        Form::Rows => "predictions",
        Form::Columns => "outputs",
    };
    answer.insert(key.to_owned(), json!(scored.predictions));
    if scored.guest {
        answer.insert("model".to_owned(), json!(scored.model));
    }
    answer.insert("model_version".to_owned(), json!(scored.version));
    Value::Object(answer)
}

/// `GET /v1/models/{name}[…]`: TF Serving's `model_version_status` of the versions in memory
/// (or the one picked), with millrace's status under `millrace`.
///
/// # Errors
///
/// A 404 when the model, or the version picked, is not served.
pub(crate) fn status(
    store: &ModelStore,
    name: &str,
    pick: Option<&Pick>,
) -> Result<Value, Refusal> {
    let entry = store.entry(name).ok_or_else(|| not_served(name))?;
    let own = ModelStatus::of(&entry).ok_or_else(|| not_served(name))?;
    let versions: Vec<u64> = match pick {
        Some(pick) => vec![
            predict::route(store, name, pick, None)?
                .answer
                .model
                .meta
                .version,
        ],
        None => entry.versions.keys().rev().copied().collect(),
    };
    let statuses: Vec<Value> = versions
        .iter()
        .map(|version| {
            json!({
                "version": version.to_string(),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            })
        })
        .collect();
    Ok(json!({ "model_version_status": statuses, "millrace": own }))
}

/// `GET /v1/models/{name}[…]/metadata`: the signature of the primary version (or the one
/// picked), TF Serving's way: an input per schema field, `probability` out.
///
/// # Errors
///
/// A 404 when the model, or the version picked, is not served.
pub(crate) fn metadata(
    store: &ModelStore,
    name: &str,
    pick: Option<&Pick>,
) -> Result<Value, Refusal> {
    let version = picked(store, name, pick)?;
    let tensor = |name: &str, dtype: &str| {
        json!({
            "dtype": dtype,
            "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": false},
            "name": name,
        })
    };
    let inputs: Map<String, Value> = version
        .fields()
        .into_iter()
        .map(|(field, kind)| (field.to_owned(), tensor(field, dtype(kind))))
        .collect();
    let meta = &version.model.meta;
    Ok(json!({
        "model_spec": {"name": name, "signature_name": "", "version": meta.version.to_string()},
        "metadata": {"signature_def": {
            "signature_def": {"serving_default": {
                "inputs": inputs,
                "outputs": {"probability": tensor("probability", "DT_FLOAT")},
                "method_name": "tensorflow/serving/predict",
            }},
        }},
    }))
}

/// The version `pick` names, or the primary without one.
pub(crate) fn picked(
    store: &ModelStore,
    name: &str,
    pick: Option<&Pick>,
) -> Result<Arc<LoadedVersion>, Refusal> {
    Ok(predict::route(
        store,
        name,
        pick.unwrap_or(&Pick::Label("stable".to_owned())),
        None,
    )?
    .answer)
}

/// The TensorFlow dtype of a field's values.
fn dtype(kind: FieldType) -> &'static str {
    match kind {
        FieldType::Number => "DT_FLOAT",
        FieldType::Category | FieldType::Tokens { .. } => "DT_STRING",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_model_version_and_action() {
        let predict = |name: &str, pick| ModelPath::Predict {
            name: name.to_owned(),
            pick,
        };
        assert_eq!(
            ModelPath::parse("ctr:predict"),
            Some(predict("ctr", Pick::Traffic))
        );
        assert_eq!(
            ModelPath::parse("ctr/versions/7:predict"),
            Some(predict("ctr", Pick::Version(7)))
        );
        assert_eq!(
            ModelPath::parse("ctr/labels/canary:predict"),
            Some(predict("ctr", Pick::Label("canary".to_owned())))
        );
        assert_eq!(
            ModelPath::parse("ctr"),
            Some(ModelPath::Status {
                name: "ctr".to_owned(),
                pick: None
            })
        );
        assert_eq!(
            ModelPath::parse("ctr/versions/3/metadata"),
            Some(ModelPath::Metadata {
                name: "ctr".to_owned(),
                pick: Some(Pick::Version(3))
            })
        );
        for bad in [
            "",
            ":predict",
            "ctr/versions/x:predict",
            "ctr/other/1",
            "a/b",
            "ctr/labels/",
        ] {
            assert_eq!(ModelPath::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn both_forms_give_the_same_instances() {
        let body = br#"{"signature_name": "serving_default", "instances": [{"a": 1, "b": "x"}, {"a": 2}]}"#;
        let Predict::Rows(rows) = read(body).unwrap() else {
            panic!("rows");
        };
        let body = br#"{"inputs": {"a": [1, 2], "b": ["x", null]}}"#;
        let Predict::Columns(columns) = read(body).unwrap() else {
            panic!("columns");
        };
        let columns = crate::columns::instances(&columns, 10).unwrap();
        let parsed = |v: &[Box<RawValue>]| {
            v.iter()
                .map(|r| serde_json::from_str::<Value>(r.get()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(parsed(&rows), parsed(&columns));
    }

    #[test]
    fn malformed_bodies_say_why() {
        for (body, why) in [
            (&br#"{"instances": [], "inputs": {}}"#[..], "not both"),
            (br#"{}"#, "holds `instances`"),
            (br#"{"inputs": [1, 2]}"#, "names each field"),
            (br#"{"inputs": {"a": 1}}"#, "input `a` must be a list"),
            (br#"{"instances": [], "other": 1}"#, "unknown field"),
        ] {
            let (status, message) = read(body).unwrap_err();
            assert_eq!(status, 400);
            assert!(message.contains(why), "{message}");
        }
    }
}
