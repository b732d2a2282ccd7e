//! The Open Inference Protocol (v2) over REST, as Triton, KServe and Seldon speak it: health,
//! server and model metadata, model readiness and `infer`. Each field of the served model's
//! schema is an input tensor of that name (`BYTES` for categories and tokens, a number type for
//! numbers, shape `[N]` or `[N, 1]`); the one output is `probability` (`FP32`, `[N]`). Tensors
//! come as JSON `data` or, with Triton's binary tensor extension, as raw bytes after the JSON
//! header (`Inference-Header-Content-Length`); outputs go back either way, as asked.

use crate::columns::Column;
use crate::predict::{Pick, Scored};
use crate::reply::{bad_request, not_served, Refusal};
use crate::store::ModelStore;
use crate::version::LoadedVersion;
use millrace_models::schema::FieldType;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashSet;
use warp::http::StatusCode;

/// The header that gives the length of the JSON part of a body with binary tensors.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// The one output of every model.
const OUTPUT: &str = "probability";

/// What a path under `/v2` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum V2Path {
    /// `GET /v2`: the server's metadata.
    Server,
    /// `GET /v2/health/live`.
    Live,
    /// `GET /v2/health/ready`: some model is served.
    Ready,
    /// `GET /v2/models/{name}[/versions/{v}]`: the model's metadata.
    Model(String, Option<u64>),
    /// `GET /v2/models/{name}[/versions/{v}]/ready`.
    ModelReady(String, Option<u64>),
    /// `POST /v2/models/{name}[/versions/{v}]/infer`.
    Infer(String, Option<u64>),
}

impl V2Path {
    /// The path that `tail` (after `/v2`) is; `None` for none.
    pub(crate) fn parse(tail: &str) -> Option<V2Path> {
        let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
        let (model, rest) = match segments.as_slice() {
            [] => return Some(V2Path::Server),
            ["health", "live"] => return Some(V2Path::Live),
            ["health", "ready"] => return Some(V2Path::Ready),
            ["models", name, "versions", version, rest @ ..] => {
                ((*name, Some(version.parse().ok()?)), rest)
            }
            ["models", name, rest @ ..] => ((*name, None), rest),
            _ => return None,
        };
        let (name, version) = (model.0.to_owned(), model.1);
        match rest {
            [] => Some(V2Path::Model(name, version)),
            ["ready"] => Some(V2Path::ModelReady(name, version)),
            ["infer"] => Some(V2Path::Infer(name, version)),
            _ => None,
        }
    }

    /// The method the path takes.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            V2Path::Infer(..) => "POST",
            _ => "GET",
        }
    }
}

/// The version that answers a request for `version` (`None`: the model's traffic).
pub(crate) fn pick(version: Option<u64>) -> Pick {
    version.map_or(Pick::Traffic, Pick::Version)
}

/// `GET /v2`.
pub(crate) fn server_metadata() -> Value {
    json!({
        "name": "millrace",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    })
}

/// `GET /v2/models/{name}[/versions/{v}]`: the versions in memory, an input per schema field
/// of the version asked (else the primary), and the output.
///
/// # Errors
///
/// A 404 when the model, or the version asked, is not served.
pub(crate) fn model_metadata(
    store: &ModelStore,
    name: &str,
    version: &LoadedVersion,
) -> Result<Value, Refusal> {
    let entry = store.entry(name).ok_or_else(|| not_served(name))?;
    let versions: Vec<String> = entry.versions.keys().rev().map(u64::to_string).collect();
    let inputs: Vec<Value> = version
        .fields()
        .into_iter()
        .map(|(field, kind)| json!({"name": field, "datatype": datatype(kind), "shape": [-1]}))
        .collect();
    Ok(json!({
        "name": name,
        "versions": versions,
        "platform": "millrace",
        "inputs": inputs,
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1]}],
    }))
}

/// The datatype a field's tensor is listed with.
fn datatype(kind: FieldType) -> &'static str {
    match kind {
        FieldType::Number => "FP32",
        FieldType::Category | FieldType::Tokens { .. } => "BYTES",
    }
}

/// A tensor's element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataType {
    Bool,
    /// A signed integer of this many bytes.
    Int(usize),
    /// An unsigned integer of this many bytes.
    Uint(usize),
    /// A float of this many bytes.
    Float(usize),
    Bytes,
}

impl DataType {
    fn parse(name: &str, input: &str) -> Result<DataType, Refusal> {
        Ok(match name {
            "BOOL" => DataType::Bool,
            "INT8" => DataType::Int(1),
            "INT16" => DataType::Int(2),
            "INT32" => DataType::Int(4),
            "INT64" => DataType::Int(8),
            "UINT8" => DataType::Uint(1),
            "UINT16" => DataType::Uint(2),
            "UINT32" => DataType::Uint(4),
            "UINT64" => DataType::Uint(8),
            "FP32" => DataType::Float(4),
            "FP64" => DataType::Float(8),
            "BYTES" => DataType::Bytes,
            "FP16" | "BF16" => {
                return Err(bad_request(format!(
                    "input `{input}`: {name} is not taken; send FP32 or FP64"
                )))
            }
            _ => {
                return Err(bad_request(format!(
                    "input `{input}`: no datatype `{name}` in the protocol"
                )))
            }
        })
    }

    /// The protocol's name of the type.
    fn name(self) -> String {
        match self {
            DataType::Bool => "BOOL".to_owned(),
            DataType::Int(n) => format!("INT{}", 8 * n),
            DataType::Uint(n) => format!("UINT{}", 8 * n),
            DataType::Float(n) => format!("FP{}", 8 * n),
            DataType::Bytes => "BYTES".to_owned(),
        }
    }

    /// Whether a field of `kind` takes tensors of this type: numbers take numbers; categories
    /// take text, integers and booleans (as their text); tokens take text.
    fn fits(self, kind: FieldType) -> bool {
        match kind {
            FieldType::Number => matches!(
                self,
                DataType::Int(_) | DataType::Uint(_) | DataType::Float(_)
            ),
            FieldType::Category => !matches!(self, DataType::Float(_)),
            FieldType::Tokens { .. } => self == DataType::Bytes,
        }
    }

    /// Whether the JSON text of an element of `data` is an element of this type.
    fn holds(self, text: &str) -> bool {
        match self {
            DataType::Bool => text == "true" || text == "false",
            DataType::Int(n) => text.parse::<i64>().is_ok_and(|v| fits_signed(v, n)),
            DataType::Uint(n) => text
                .parse::<u64>()
                .is_ok_and(|v| n >= 8 || v >> (8 * n) == 0),
            DataType::Float(_) => {
                text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
                    && text.parse::<f64>().is_ok()
            }
            DataType::Bytes => text.starts_with('"'),
        }
    }

    /// The elements of a binary tensor of `count` elements.
    fn binary_elements(
        self,
        bytes: &[u8],
        count: usize,
        input: &str,
    ) -> Result<Vec<Cow<'static, str>>, Refusal> {
        let wrong = |why: String| bad_request(format!("input `{input}`: {why}"));
        if self == DataType::Bytes {
            return bytes_elements(bytes, count).map_err(wrong);
        }
        let size = match self {
            DataType::Bool => 1,
            DataType::Int(n) | DataType::Uint(n) | DataType::Float(n) => n,
            DataType::Bytes => unreachable!("handled above"),
        };
        if count.checked_mul(size) != Some(bytes.len()) {
            return Err(wrong(format!(
                "{} bytes of binary data for {count} elements of {size} bytes",
                bytes.len()
            )));
        }
        // A NaN or an infinity has no JSON form, which `data` would send: refused alike.
        let finite = |b: &[u8]| match self {
            DataType::Float(4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite(),
            DataType::Float(_) => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])).is_finite(),
            _ => true,
        };
        if !bytes.chunks_exact(size).all(finite) {
            return Err(wrong("a NaN or an infinity is not a value".to_owned()));
        }
        Ok(bytes
            .chunks_exact(size)
            .map(|b| {
                let mut le = [0u8; 8];
                le[..size].copy_from_slice(b);
                let value = match self {
                    DataType::Bool => json!(b[0] != 0),
                    DataType::Int(n) => {
                        let shift = 64 - 8 * n as u32;
                        json!((i64::from_le_bytes(le) << shift) >> shift)
                    }
                    DataType::Uint(_) => json!(u64::from_le_bytes(le)),
                    DataType::Float(4) => json!(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    _ => json!(f64::from_le_bytes(le)),
                };
                Cow::Owned(value.to_string())
            })
            .collect())
    }
}

/// Whether `v` fits a signed integer of `bytes` bytes.
fn fits_signed(v: i64, bytes: usize) -> bool {
    bytes >= 8 || {
        let bound = 1i64 << (8 * bytes - 1);
        (-bound..bound).contains(&v)
    }
}

/// The elements of a binary `BYTES` tensor: each a 4-byte little-endian length and that many
/// bytes of UTF-8.
fn bytes_elements(mut bytes: &[u8], count: usize) -> Result<Vec<Cow<'static, str>>, String> {
    let mut elements = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        let (length, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("a BYTES element's length is cut short")?;
        let length = u32::from_le_bytes(*length) as usize;
        let text = rest
            .get(..length)
            .ok_or("a BYTES element runs past the tensor's binary data")?;
        let text = std::str::from_utf8(text).map_err(|_| "a BYTES element is not UTF-8 text")?;
        elements.push(Cow::Owned(Value::String(text.to_owned()).to_string()));
        bytes = &rest[length..];
    }
    if elements.len() == count {
        Ok(elements)
    } else {
        Err(format!(
            "{} BYTES elements for a shape of {count}",
            elements.len()
        ))
    }
}

/// An `infer` body's JSON, its texts borrowed from the body where they hold no escapes.
#[derive(Deserialize)]
struct InferBody<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<RequestParameters>,
    #[serde(borrow)]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<OutputTensor<'a>>>,
}

/// The request parameters millrace reads (others are taken and ignored).
#[derive(Deserialize)]
struct RequestParameters {
    #[serde(default)]
    binary_data_output: Option<bool>,
}

#[derive(Deserialize)]
struct InputTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: Shape,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<InputParameters>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The input parameters millrace reads.
#[derive(Deserialize)]
struct InputParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
}

#[derive(Deserialize)]
struct OutputTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<OutputParameters>,
}

/// The output parameters millrace reads.
#[derive(Deserialize)]
struct OutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
}

/// An `infer` request, read.
#[derive(Debug)]
pub(crate) struct Infer<'a> {
    /// The request's `id`, given back.
    id: Option<Cow<'a, str>>,
    /// The columns of the instances.
    pub(crate) columns: Vec<Column<'a>>,
    /// Whether `probability` goes back as binary data.
    binary_output: bool,
}

/// The type of each field of the served model's schema, by name.
pub type Fields<'f> = &'f dyn Fn(&str) -> Option<FieldType>;

/// Reads an `infer` body: the JSON, then, when `header_length` is given, the binary tensors
/// after it. Each input is checked before its data is read: a field of the model's schema
/// (`fields`), once, of a datatype the field takes, of at most `max_rows` values.
///
/// # Errors
///
/// A 400 that says what is wrong with the body; a 413 for an input past `max_rows` values.
pub(crate) fn read_infer<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
    (fields, max_rows): (Fields<'_>, usize),
) -> Result<Infer<'a>, Refusal> {
    let (header, mut binary) = match header_length {
        None => (body, &[][..]),
        Some(length) => {
            let length: usize = length.trim().parse().map_err(|_| {
                bad_request(format!(
                    "`Inference-Header-Content-Length: {length}` is not a length"
                ))
            })?;
            if length > body.len() {
                return Err(bad_request(format!(
                    "`Inference-Header-Content-Length` is {length}, past the body's {} bytes",
                    body.len()
                )));
            }
            body.split_at(length)
        }
    };
    let request: InferBody = serde_json::from_slice(header)
        .map_err(|e| bad_request(format!("invalid request body: {e}")))?;
    let mut names = HashSet::with_capacity(request.inputs.len());
    let mut columns = Vec::with_capacity(request.inputs.len());
    for tensor in request.inputs {
        if !names.insert(tensor.name.clone()) {
            return Err(bad_request(format!("input `{}` comes twice", tensor.name)));
        }
        columns.push(read_input(tensor, &mut binary, (fields, max_rows))?);
    }
    if !binary.is_empty() {
        return Err(bad_request(format!(
            "{} bytes of binary data past the inputs' (their `binary_data_size` parameters)",
            binary.len()
        )));
    }
    let default = request
        .parameters
        .and_then(|p| p.binary_data_output)
        .unwrap_or(false);
    let mut binary_output = default;
    for output in request.outputs.unwrap_or_default() {
        if output.name != OUTPUT {
            return Err(bad_request(format!(
                "no output `{}`: the model's one output is `{OUTPUT}`",
                output.name
            )));
        }
        binary_output = output
            .parameters
            .and_then(|p| p.binary_data)
            .unwrap_or(default);
    }
    Ok(Infer {
        id: request.id,
        columns,
        binary_output,
    })
}

/// Reads an `infer` body ([`read_infer`]) and makes its columns the instances `:predict` takes,
/// each a JSON object: what the `infer` route does before it scores.
///
/// # Errors
///
/// As [`read_infer`] and [`crate::columns::instances`].
pub(crate) fn read_infer_instances<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
    (fields, max_rows): (Fields<'_>, usize),
) -> Result<(Infer<'a>, Vec<Box<RawValue>>), Refusal> {
    let infer = read_infer(body, header_length, (fields, max_rows))?;
    let instances = crate::columns::instances(&infer.columns, max_rows)?;
    Ok((infer, instances))
}

/// The instances an `infer` body holds for a model whose schema types its fields as `fields`
/// does, as the `infer` route reads them (the body's JSON and binary tensors, each checked
/// against the schema and `max_rows`, then its columns as rows); the fuzz target's way in.
///
/// # Errors
///
/// The status (400 or 413) and the reason the route answers with.
pub fn infer_instances(
    body: &[u8],
    header_length: Option<&str>,
    fields: Fields<'_>,
    max_rows: usize,
) -> Result<Vec<Box<RawValue>>, (u16, String)> {
    read_infer_instances(body, header_length, (fields, max_rows))
        .map(|(_, instances)| instances)
        .map_err(|(status, reason)| (status.as_u16(), reason))
}

/// One input tensor as a column, its binary data taken from the front of `binary`.
fn read_input<'a>(
    tensor: InputTensor<'a>,
    binary: &mut &[u8],
    (fields, max_rows): (Fields<'_>, usize),
) -> Result<Column<'a>, Refusal> {
    let name = tensor.name;
    let datatype = DataType::parse(&tensor.datatype, &name)?;
    check_field(&name, datatype, fields)?;
    let rows = match (tensor.shape.len, tensor.shape.dims()) {
        (1, [n]) | (2, [n, 1]) if *n >= 0 => *n as usize,
        _ => {
            return Err(bad_request(format!(
                "input `{name}` has shape {}: an input is [N] or [N, 1], a value per instance",
                tensor.shape
            )))
        }
    };
    if rows > max_rows {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "input `{name}` holds {rows} instances, past the {max_rows} a request may hold"
            ),
        ));
    }
    let binary_size = tensor
        .parameters
        .and_then(|p| p.binary_data_size)
        .map(|size| usize::try_from(size).unwrap_or(usize::MAX));
    let values = match (binary_size, tensor.data) {
        (Some(size), None) => {
            if size > binary.len() {
                return Err(bad_request(format!(
                    "input `{name}`: `binary_data_size` {size} runs past the body"
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            *binary = rest;
            datatype.binary_elements(bytes, rows, &name)?
        }
        (None, Some(data)) => {
            // Not sized by the shape, which the client chose: by the data, which the body
            // limit bounds.
            let mut flat = Vec::new();
            elements(data, &mut flat)
                .map_err(|e| bad_request(format!("input `{name}`: `data` is not JSON: {e}")))?;
            if flat.len() != rows {
                return Err(bad_request(format!(
                    "input `{name}` holds {} elements for a shape of {rows}",
                    flat.len()
                )));
            }
            if let Some(wrong) = flat.iter().find(|&&text| !datatype.holds(text)) {
                return Err(bad_request(format!(
                    "input `{name}`: {wrong} is not an element of {}",
                    datatype.name()
                )));
            }
            flat.into_iter().map(Cow::Borrowed).collect()
        }
        (Some(_), Some(_)) => {
            return Err(bad_request(format!(
                "input `{name}` has both `data` and binary data"
            )))
        }
        (None, None) => return Err(bad_request(format!("input `{name}` has no `data`"))),
    };
    Ok(Column { name, values })
}

/// Refuses an input that is not a field of the schema, or of a datatype its field cannot take.
fn check_field(name: &str, datatype: DataType, fields: Fields<'_>) -> Result<(), Refusal> {
    let Some(kind) = fields(name) else {
        return Err(bad_request(format!(
            "input `{name}` is not a field of the served model's schema"
        )));
    };
    if datatype.fits(kind) {
        return Ok(());
    }
    let field = match kind {
        FieldType::Number => "a number",
        FieldType::Category => "a category",
        FieldType::Tokens { .. } => "a tokens",
    };
    Err(bad_request(format!(
        "input `{name}` is {}, which {field} field does not take (its tensor is {})",
        datatype.name(),
        self::datatype(kind)
    )))
}

/// The JSON texts of the elements of a tensor's `data`, nested arrays read in row-major order.
fn elements<'a>(data: &'a RawValue, into: &mut Vec<&'a str>) -> Result<(), serde_json::Error> {
    let text = data.get();
    // The usual one element, `[x]` with x neither text nor an array, without a parse.
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let inner = inner.trim();
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.');
        if !inner.is_empty() && inner.chars().all(plain) {
            into.push(inner);
            return Ok(());
        }
    }
    flatten(data, into)
}

/// The JSON texts of the elements of `data`, nested arrays read in row-major order.
fn flatten<'a>(data: &'a RawValue, into: &mut Vec<&'a str>) -> Result<(), serde_json::Error> {
    let text = data.get();
    if text.starts_with('[') {
        for item in serde_json::from_str::<Vec<&'a RawValue>>(text)? {
            flatten(item, into)?;
        }
    } else {
        into.push(text);
    }
    Ok(())
}

/// A tensor's shape, read without allocating: its first two dimensions and how many it has.
#[derive(Debug)]
struct Shape {
    first: [i64; 2],
    len: usize,
}

impl Shape {
    /// The dimensions, the first two of them when there are more.
    fn dims(&self) -> &[i64] {
        &self.first[..self.len.min(2)]
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.dims().iter().map(i64::to_string).collect();
        let more = if self.len > 2 { ", …" } else { "" };
        write!(f, "[{}{more}] ({} dimensions)", dims.join(", "), self.len)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Dims;
        impl<'de> serde::de::Visitor<'de> for Dims {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of dimensions")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Shape, A::Error> {
                let mut shape = Shape {
                    first: [0; 2],
                    len: 0,
                };
                while let Some(dim) = seq.next_element::<i64>()? {
                    if let Some(slot) = shape.first.get_mut(shape.len) {
                        *slot = dim;
                    }
                    shape.len += 1;
                }
                Ok(shape)
            }
        }
        deserializer.deserialize_seq(Dims)
    }
}

impl Infer<'_> {
    /// The answer to the request scored: the JSON, and the binary data to send after it (empty
    /// when the output goes back as JSON `data`).
    pub(crate) fn answer(&self, scored: &Scored) -> (Value, Vec<u8>) {
        let n = scored.predictions.len();
        let mut output = json!({"name": OUTPUT, "datatype": "FP32", "shape": [n]});
        let mut binary = Vec::new();
        if self.binary_output {
            binary = scored
                .predictions
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            output["parameters"] = json!({"binary_data_size": binary.len()});
        } else {
            output["data"] = json!(scored.predictions);
        }
        let mut answer = json!({
            "model_name": scored.model,
            "model_version": scored.version.to_string(),
            "outputs": [output],
        });
        if let Some(id) = &self.id {
            answer["id"] = json!(id);
        }
        (answer, binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of the tests' schema: `n` a number, `t` tokens, `missing` none, any other
    /// name a category.
    fn field(name: &str) -> Option<FieldType> {
        match name {
            "n" => Some(FieldType::Number),
            "t" => Some(FieldType::Tokens { separator: b'|' }),
            "missing" => None,
            _ => Some(FieldType::Category),
        }
    }

    /// The tests' schema, and 64 instances at most.
    const ANY: (Fields<'static>, usize) = (&field, 64);

    #[test]
    fn paths() {
        let model = |v| ("ctr".to_owned(), v);
        assert_eq!(V2Path::parse(""), Some(V2Path::Server));
        assert_eq!(V2Path::parse("/health/ready"), Some(V2Path::Ready));
        assert_eq!(
            V2Path::parse("/models/ctr"),
            Some(V2Path::Model(model(None).0, None))
        );
        assert_eq!(
            V2Path::parse("/models/ctr/versions/3/infer"),
            Some(V2Path::Infer(model(Some(3)).0, Some(3)))
        );
        assert_eq!(
            V2Path::parse("/models/ctr/ready"),
            Some(V2Path::ModelReady("ctr".to_owned(), None))
        );
        for bad in [
            "/models",
            "/models/ctr/versions/x",
            "/models/ctr/other",
            "/health",
        ] {
            assert_eq!(V2Path::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_and_binary_tensors_read_alike() {
        let json_body = br#"{"id": "a", "inputs": [
            {"name": "n", "shape": [2, 1], "datatype": "FP32", "data": [[1.5], [2]]},
            {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["x", "yz"]},
            {"name": "i", "shape": [2], "datatype": "INT16", "data": [-3, 4]}]}"#;
        let from_json = read_infer(json_body, None, ANY).unwrap();
        let header = br#"{"id": "a", "inputs": [
            {"name": "n", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "c", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
            {"name": "i", "shape": [2], "datatype": "INT16", "parameters": {"binary_data_size": 4}}],
            "parameters": {"binary_data_output": true}}"#;
        let mut body = header.to_vec();
        body.extend(1.5f32.to_le_bytes());
        body.extend(2f32.to_le_bytes());
        body.extend(1u32.to_le_bytes());
        body.extend(b"x");
        body.extend(2u32.to_le_bytes());
        body.extend(b"yz");
        body.extend((-3i16).to_le_bytes());
        body.extend(4i16.to_le_bytes());
        let from_binary = read_infer(&body, Some(&header.len().to_string()), ANY).unwrap();
        // The same numbers (`2` and `2.0` alike) and the same texts.
        let values = |infer: &Infer| -> Vec<Vec<Value>> {
            let same = |text: &Cow<'_, str>| {
                let v: Value = serde_json::from_str(text).unwrap();
                v.as_f64().map_or(v.clone(), |x| json!(x))
            };
            infer
                .columns
                .iter()
                .map(|c| c.values.iter().map(same).collect())
                .collect()
        };
        assert_eq!(values(&from_json), values(&from_binary));
        assert_eq!(from_binary.columns[2].values, ["-3", "4"]);
        assert!(!from_json.binary_output);
        assert!(from_binary.binary_output);
    }

    #[test]
    fn malformed_requests_say_why() {
        for (body, why) in [
            (&br#"{"inputs": [{"name": "n", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#[..], "[N] or [N, 1]"),
            (br#"{"inputs": [{"name": "n", "shape": [2, 1, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}"#, "(3 dimensions)"),
            (br#"{"inputs": [{"name": "missing", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}"#, "not a field"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}"#, "which a category field does not take"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [1000]}]}"#, "1000 is not an element of INT8"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [256]}]}"#, "256 is not an element of UINT8"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}, {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["y"]}]}"#, "comes twice"),
            (br#"{"inputs": [{"name": "n", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#, "2 elements for a shape of 3"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": [1]}]}"#, "1 is not an element of BYTES"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP16", "data": [1]}]}"#, "FP16 is not taken"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64"}]}"#, "no `data`"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1]}], "outputs": [{"name": "b"}]}"#, "no output `b`"),
            (br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}}]}"#, "runs past"),
            (br#"{"nothing": 1}"#, "invalid request body"),
        ] {
            let (status, message) = read_infer(body, None, ANY).unwrap_err();
            assert_eq!(status, 400);
            assert!(message.contains(why), "{message} lacks {why}");
        }
        assert!(read_infer(b"{}", Some("9"), ANY)
            .unwrap_err()
            .1
            .contains("past the body"));
        // A shape past the instances a request may hold, in JSON and in binary, is a 413 before
        // any data is read; within it, a shape past the data is a 400.
        let tensor = |rows: u64, data: &str| {
            format!(
                r#"{{"inputs": [{{"name": "a", "shape": [{rows}], "datatype": "INT64", {data}}}]}}"#
            )
        };
        for rows in [65, 9_000_000_000_000_000_000u64] {
            let body = tensor(rows, r#""data": [1]"#);
            let (status, why) = read_infer(body.as_bytes(), None, ANY).unwrap_err();
            assert_eq!(status, 413, "{why}");
            let body = tensor(rows, r#""parameters": {"binary_data_size": 8}"#);
            let length = body.len().to_string();
            let body = [body.into_bytes(), vec![0; 8]].concat();
            assert_eq!(read_infer(&body, Some(&length), ANY).unwrap_err().0, 413);
        }
        let body = tensor(2, r#""parameters": {"binary_data_size": 8}"#);
        let length = body.len().to_string();
        let body = [body.into_bytes(), vec![0; 8]].concat();
        let refused = read_infer(&body, Some(&length), ANY).unwrap_err().1;
        assert!(refused.contains("8 bytes"), "{refused}");
        // A NaN in binary data has no JSON form: refused, as `data` cannot send one.
        let header = r#"{"inputs": [{"name": "n", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}"#;
        let body = [header.as_bytes(), &f32::NAN.to_le_bytes()].concat();
        let refused = read_infer(&body, Some(&header.len().to_string()), ANY)
            .unwrap_err()
            .1;
        assert!(refused.contains("NaN"), "{refused}");
    }

    /// Any body, with any header length, is read or refused with a 400, never a panic; and
    /// tensors of any shape, datatype and data are too.
    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        fn element() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|x| json!(x).to_string()),
                "[a-z,\\[\\]\"]{0,6}".prop_map(|t| json!(t).to_string()),
                Just("true".to_owned()),
                Just("null".to_owned()),
                Just("[[1],[2]]".to_owned()),
                Just("{}".to_owned()),
            ]
        }

        fn tensor() -> impl Strategy<Value = String> {
            let datatypes = prop::sample::select(vec![
                "BOOL", "INT8", "INT64", "UINT16", "FP32", "FP64", "BYTES", "FP16", "X",
            ]);
            let shape = prop::collection::vec(-2i64..5, 0..4);
            let data = prop::collection::vec(element(), 0..4);
            (datatypes, shape, data, any::<Option<u8>>()).prop_map(|(t, shape, data, binary)| {
                let data = match binary {
                    Some(size) => format!(r#""parameters": {{"binary_data_size": {size}}}"#),
                    None => format!(r#""data": [{}]"#, data.join(",")),
                };
                format!(r#"{{"name": "f", "datatype": "{t}", "shape": {shape:?}, {data}}}"#)
            })
        }

        proptest! {
            #[test]
            fn any_bytes(body in prop::collection::vec(any::<u8>(), 0..200), length in any::<Option<u16>>()) {
                let length = length.map(|l| l.to_string());
                if let Err((status, _)) = read_infer(&body, length.as_deref(), super::ANY) {
                    prop_assert!(status == 400 || status == 413, "{}", status);
                }
            }

            #[test]
            fn any_tensors(tensors in prop::collection::vec(tensor(), 0..4), tail in prop::collection::vec(any::<u8>(), 0..16)) {
                let header = format!(r#"{{"inputs": [{}]}}"#, tensors.join(","));
                let body = [header.as_bytes(), &tail].concat();
                let length = header.len().to_string();
                for length in [None, Some(length.as_str())] {
                    if let Ok(infer) = read_infer(&body, length, super::ANY) {
                        let _ = crate::columns::instances(&infer.columns, 64);
                    }
                }
            }
        }
    }
}
