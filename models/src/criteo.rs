//! The Criteo display-advertising schema: `label`, `I1`…`I13` (integers), `C1`…`C26` (hashed
//! categoricals), and its two wire forms: the tab-separated line of the Kaggle DAC files and the
//! JSON object of a predict request.
//!
//! A line is well-formed when it has 40 tab-separated fields, the label is `0` or `1`, each integer
//! field is empty or a (possibly negative) integer, and each categorical field is empty or exactly
//! 8 hex digits. Anything else is a [`DecodeError`] that names the field; decoding never panics.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Number of integer fields (`I1`…`I13`).
pub const NUM_INTS: usize = 13;
/// Number of categorical fields (`C1`…`C26`).
pub const NUM_CATS: usize = 26;
/// Number of tab-separated fields in a line: the label, then the integers, then the categoricals.
pub const NUM_FIELDS: usize = 1 + NUM_INTS + NUM_CATS;

/// The names of the integer fields, in order.
pub const INT_NAMES: [&str; NUM_INTS] = [
    "I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "I10", "I11", "I12", "I13",
];
/// The names of the categorical fields, in order.
pub const CAT_NAMES: [&str; NUM_CATS] = [
    "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11", "C12", "C13", "C14", "C15",
    "C16", "C17", "C18", "C19", "C20", "C21", "C22", "C23", "C24", "C25", "C26",
];

/// The features of one Criteo event: everything but the label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CriteoFeatures {
    /// `I1`…`I13`; `None` where the field is empty.
    pub ints: [Option<i64>; NUM_INTS],
    /// `C1`…`C26` as the 32-bit values of their 8 hex digits; `None` where the field is empty.
    pub cats: [Option<u32>; NUM_CATS],
}

/// One labelled Criteo event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CriteoEvent {
    /// `true` for a click.
    pub label: bool,
    /// The event's features.
    pub features: CriteoFeatures,
}

/// Why a line or a JSON instance is not a well-formed Criteo event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line does not have 40 tab-separated fields.
    #[error("expected {NUM_FIELDS} tab-separated fields, got {0}")]
    FieldCount(usize),
    /// The label is not `0` or `1`.
    #[error("field `label` must be 0 or 1")]
    Label,
    /// An integer field holds something other than an optional `-` and decimal digits that fit
    /// in 64 bits.
    #[error("field `{0}` must be empty or an integer")]
    Integer(&'static str),
    /// A categorical field holds something other than exactly 8 hex digits.
    #[error("field `{0}` must be empty or 8 hex digits")]
    Categorical(&'static str),
    /// A JSON instance names a field the schema does not have.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// A JSON instance is not an object.
    #[error("an instance must be a JSON object of Criteo fields")]
    NotAnObject,
    /// A record is not valid JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// A declared schema's label field holds neither a positive nor a negative value (or is
    /// absent).
    #[error("field `{0}` is neither a positive nor a negative label")]
    LabelValue(String),
    /// A delimited line has another number of columns than its schema declares.
    #[error("expected {expected} columns, got {got}")]
    ColumnCount {
        /// The schema's columns.
        expected: usize,
        /// The line's.
        got: usize,
    },
    /// A JSON instance gives a field a value of a type it cannot hold (an object, a boolean, an
    /// array where one value goes).
    #[error("field `{0}` cannot hold a JSON value of that type")]
    WrongType(String),
    /// A libFM line holds something other than `index:value` after its label.
    #[error("field `features`: {0:?} is not index:value")]
    LibfmPair(String),
}

impl DecodeError {
    /// A short, fixed label for the kind of error, for metrics and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::FieldCount(_) => "field_count",
            DecodeError::Label => "label",
            DecodeError::Integer(_) => "integer",
            DecodeError::Categorical(_) => "categorical",
            DecodeError::UnknownField(_) => "unknown_field",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::LabelValue(_) => "label",
            DecodeError::ColumnCount { .. } => "field_count",
            DecodeError::LibfmPair(_) => "libfm_pair",
            DecodeError::WrongType(_) => "wrong_type",
        }
    }
}

/// How a record's bytes hold a Criteo event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RecordFormat {
    /// A tab-separated line: the label, then `I1`…`I13`, `C1`…`C26`.
    #[default]
    Tsv,
    /// A JSON object of the fields by name, with `label` (`0`, `1`, `false` or `true`); absent
    /// fields are missing. `ignore` names one more key that is not a feature (the event-time
    /// field the source reads).
    Json {
        /// A key to skip.
        ignore: Option<String>,
    },
}

impl RecordFormat {
    /// Decodes one record.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a record that is not a well-formed event of the format.
    pub fn decode(&self, payload: &[u8]) -> Result<CriteoEvent, DecodeError> {
        match self {
            RecordFormat::Tsv => CriteoEvent::decode_tsv(payload),
            RecordFormat::Json { ignore } => CriteoEvent::decode_json(payload, ignore.as_deref()),
        }
    }
}

impl CriteoEvent {
    /// Decodes one JSON record (see [`RecordFormat::Json`]), skipping the key `ignore`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::NotJson`], [`DecodeError::NotAnObject`], [`DecodeError::Label`] for a
    /// missing or ill-typed label, or the first ill-typed or unknown field.
    pub fn decode_json(payload: &[u8], ignore: Option<&str>) -> Result<Self, DecodeError> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        if !value.is_object() {
            return Err(DecodeError::NotAnObject);
        }
        let label = json_label(value.get("label"))?;
        let features = CriteoFeatures::from_json_ignoring(&value, ignore)?;
        Ok(CriteoEvent { label, features })
    }

    /// Decodes one tab-separated line (a trailing `\n` or `\r\n` is ignored).
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the first field that is not well-formed.
    pub fn decode_tsv(line: &[u8]) -> Result<Self, DecodeError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let field_count = || DecodeError::FieldCount(line.split(|&b| b == b'\t').count());
        let mut fields = line.split(|&b| b == b'\t');
        let label = match fields.next() {
            Some(b"0") => false,
            Some(b"1") => true,
            _ => return Err(DecodeError::Label),
        };
        let mut features = CriteoFeatures::default();
        for (slot, name) in features.ints.iter_mut().zip(INT_NAMES) {
            let field = fields.next().ok_or_else(field_count)?;
            *slot = parse_int(field).ok_or(DecodeError::Integer(name))?;
        }
        for (slot, name) in features.cats.iter_mut().zip(CAT_NAMES) {
            let field = fields.next().ok_or_else(field_count)?;
            *slot = parse_cat(field).ok_or(DecodeError::Categorical(name))?;
        }
        if fields.next().is_some() {
            return Err(field_count());
        }
        Ok(CriteoEvent { label, features })
    }

    /// Encodes the event as one tab-separated line, without the trailing newline.
    pub fn to_tsv(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push(if self.label { '1' } else { '0' });
        for v in &self.features.ints {
            out.push('\t');
            if let Some(v) = v {
                let _ = write!(out, "{v}");
            }
        }
        for v in &self.features.cats {
            out.push('\t');
            if let Some(v) = v {
                let _ = write!(out, "{v:08x}");
            }
        }
        out
    }
}

impl CriteoFeatures {
    /// Reads the features from a JSON object such as `{"I1": 3, "C1": "68fd1e64"}`.
    ///
    /// Absent fields, `null` and `""` are missing values; integers may be JSON numbers or
    /// decimal strings. A `label` key is accepted and ignored, so a training event can be
    /// scored as it is.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for the first unknown or ill-typed field.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DecodeError> {
        Self::from_json_ignoring(value, None)
    }

    /// As [`CriteoFeatures::from_json`], reading the JSON text directly, without building a
    /// [`serde_json::Value`] first: the same features and the same errors, for the serving hot
    /// path.
    ///
    /// # Errors
    ///
    /// As [`CriteoFeatures::from_json`]; [`DecodeError::NotJson`] for text that is not JSON.
    pub fn from_json_str(text: &str) -> Result<Self, DecodeError> {
        use serde::de::DeserializeSeed;
        let mut found = None;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let parsed = FeaturesSeed { error: &mut found }
            .deserialize(&mut deserializer)
            .and_then(|features| deserializer.end().map(|()| features));
        match (parsed, found) {
            (Ok(features), _) => Ok(features),
            (Err(_), Some(error)) => Err(error),
            (Err(error), None) if error.is_syntax() || error.is_eof() => {
                Err(DecodeError::NotJson(error.to_string()))
            }
            (Err(_), None) => Err(DecodeError::NotAnObject),
        }
    }

    /// As [`CriteoFeatures::from_json`], also skipping the key `ignore`.
    ///
    /// # Errors
    ///
    /// As [`CriteoFeatures::from_json`].
    pub fn from_json_ignoring(
        value: &serde_json::Value,
        ignore: Option<&str>,
    ) -> Result<Self, DecodeError> {
        let object = value.as_object().ok_or(DecodeError::NotAnObject)?;
        let mut features = CriteoFeatures::default();
        for (key, value) in object {
            if key == "label" || Some(key.as_str()) == ignore {
                continue;
            }
            if let Some(i) = INT_NAMES.iter().position(|n| n == key) {
                features.ints[i] = json_int(value).ok_or(DecodeError::Integer(INT_NAMES[i]))?;
            } else if let Some(i) = CAT_NAMES.iter().position(|n| n == key) {
                features.cats[i] = match value {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => {
                        parse_cat(s.as_bytes()).ok_or(DecodeError::Categorical(CAT_NAMES[i]))?
                    }
                    _ => return Err(DecodeError::Categorical(CAT_NAMES[i])),
                };
            } else {
                return Err(DecodeError::UnknownField(key.clone()));
            }
        }
        Ok(features)
    }

    /// The features as a JSON object with the schema's field names; missing values are left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (v, name) in self.ints.iter().zip(INT_NAMES) {
            if let Some(v) = v {
                object.insert(name.to_owned(), (*v).into());
            }
        }
        for (v, name) in self.cats.iter().zip(CAT_NAMES) {
            if let Some(v) = v {
                object.insert(name.to_owned(), format!("{v:08x}").into());
            }
        }
        serde_json::Value::Object(object)
    }
}

/// Reads a JSON object of Criteo fields into [`CriteoFeatures`] as
/// [`CriteoFeatures::from_json`] does, leaving the first [`DecodeError`] in `error`.
struct FeaturesSeed<'a> {
    error: &'a mut Option<DecodeError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for FeaturesSeed<'_> {
    type Value = CriteoFeatures;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A key of a JSON instance.
enum Key {
    Int(usize),
    Cat(usize),
    Label,
    Unknown(String),
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(if key == "label" {
                    Key::Label
                } else if let Some(i) = INT_NAMES.iter().position(|n| *n == key) {
                    Key::Int(i)
                } else if let Some(i) = CAT_NAMES.iter().position(|n| *n == key) {
                    Key::Cat(i)
                } else {
                    Key::Unknown(key.to_owned())
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A JSON value as [`json_int`] (`Int`) or a categorical field (`Cat`) reads it: `None` when
/// it is not one.
struct Field<const INT: bool>(Option<Option<i64>>);

impl<'de, const INT: bool> serde::Deserialize<'de> for Field<INT> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor<const INT: bool>;
        impl<'de, const INT: bool> serde::de::Visitor<'de> for FieldVisitor<INT> {
            type Value = Field<INT>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field(Some(None)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field(INT.then_some(Some(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field(if INT {
                    i64::try_from(v).ok().map(Some)
                } else {
                    None
                }))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field(None))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field(if INT {
                    parse_int(v.as_bytes())
                } else {
                    parse_cat(v.as_bytes()).map(|c| c.map(i64::from))
                }))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field(None))
            }
        }
        deserializer.deserialize_any(FieldVisitor::<INT>)
    }
}

impl<'de> serde::de::Visitor<'de> for FeaturesSeed<'_> {
    type Value = CriteoFeatures;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of Criteo fields")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut features = CriteoFeatures::default();
        let mut fail = |error: DecodeError| {
            if self.error.is_none() {
                *self.error = Some(error);
            }
            serde::de::Error::custom("not a Criteo instance")
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Label => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Key::Int(i) => {
                    let Field(value) = map.next_value::<Field<true>>()?;
                    features.ints[i] =
                        value.ok_or_else(|| fail(DecodeError::Integer(INT_NAMES[i])))?;
                }
                Key::Cat(i) => {
                    let Field(value) = map.next_value::<Field<false>>()?;
                    let value =
                        value.ok_or_else(|| fail(DecodeError::Categorical(CAT_NAMES[i])))?;
                    features.cats[i] = value.map(|c| c as u32);
                }
                Key::Unknown(name) => return Err(fail(DecodeError::UnknownField(name))),
            }
        }
        Ok(features)
    }
}

/// `Some(None)` for an empty field, `Some(Some(v))` for an integer, `None` for anything else.
fn parse_int(field: &[u8]) -> Option<Option<i64>> {
    if field.is_empty() {
        return Some(None);
    }
    let (negative, digits) = match field.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, field),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    let signed = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    i64::try_from(signed).ok().map(Some)
}

/// `Some(None)` for an empty field, `Some(Some(v))` for 8 hex digits, `None` for anything else.
fn parse_cat(field: &[u8]) -> Option<Option<u32>> {
    if field.is_empty() {
        return Some(None);
    }
    if field.len() != 8 {
        return None;
    }
    let mut value = 0u32;
    for &d in field {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u32::from(nibble);
    }
    Some(Some(value))
}

/// A JSON record's label: `0`, `1`, `"0"`, `"1"`, `false` or `true`.
fn json_label(value: Option<&serde_json::Value>) -> Result<bool, DecodeError> {
    match value {
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(serde_json::Value::String(s)) if s == "0" => Ok(false),
        Some(serde_json::Value::String(s)) if s == "1" => Ok(true),
        _ => Err(DecodeError::Label),
    }
}

fn json_int(value: &serde_json::Value) -> Option<Option<i64>> {
    match value {
        serde_json::Value::Null => Some(None),
        serde_json::Value::Number(n) => n.as_i64().map(Some),
        serde_json::Value::String(s) => parse_int(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Reading the JSON text directly gives the features and errors that reading it as a
        /// `Value` gives, for objects of good, bad and unknown fields and for non-objects.
        #[test]
        fn json_text_reads_as_json_values_do(
            entries in proptest::collection::vec((0usize..45, 0usize..9), 0..12),
            top in 0usize..6,
        ) {
            let names: Vec<String> = INT_NAMES.iter().chain(CAT_NAMES.iter()).map(|n| n.to_string())
                .chain(["label".to_owned(), "I99".to_owned(), "x".to_owned(), "C".to_owned(), "".to_owned(), "i1".to_owned()])
                .collect();
            let values = [
                serde_json::json!(null), serde_json::json!(3), serde_json::json!(-12),
                serde_json::json!(u64::MAX), serde_json::json!(1.5), serde_json::json!("68fd1e64"),
                serde_json::json!("42"), serde_json::json!(""), serde_json::json!([1, {"a": 2}]),
            ];
            let mut object = serde_json::Map::new();
            let mut text = String::from("{");
            for (name, value) in &entries {
                let (name, value) = (&names[*name], &values[*value]);
                if object.contains_key(name) {
                    // A repeated key: `Value` keeps the last, the text reader refuses a bad
                    // first one. Instances with repeated keys are a client's bug either way.
                    continue;
                }
                object.insert(name.clone(), value.clone());
                if text.len() > 1 {
                    text.push(',');
                }
                text.push_str(&format!("{}:{}", serde_json::Value::from(name.as_str()), value));
            }
            text.push('}');
            let (value, text) = match top {
                0 => (serde_json::json!([1]), "[1]".to_owned()),
                1 => (serde_json::json!("s"), "\"s\"".to_owned()),
                _ => (serde_json::Value::Object(object), text),
            };
            // With several bad fields the error named may differ (text order against key
            // order); the outcome may not.
            let (direct, via_value) = (CriteoFeatures::from_json_str(&text), CriteoFeatures::from_json(&value));
            prop_assert_eq!(direct.clone().ok(), via_value.clone().ok());
            if let (Err(a), Err(b)) = (&direct, &via_value) {
                let single = entries.len() <= 1;
                prop_assert!(!single || a == b, "{:?} vs {:?}", a, b);
            }
        }
    }

    #[test]
    fn json_text_that_is_not_json_is_refused() {
        for text in ["{", "{\"I1\":1} x", ""] {
            assert!(
                matches!(
                    CriteoFeatures::from_json_str(text),
                    Err(DecodeError::NotJson(_))
                ),
                "{text}"
            );
        }
    }

    const GOOD: &str = "0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t68fd1e64\t80e26c9b\tfb936136\t7b4723c4\t25c83c98\t7e0ccccf\tde7995b8\t1f89b562\ta73ee510\ta8cd5504\tb2cb9c98\t37c9c164\t2824a5f6\t1adce6ef\t8ba8b39a\t891b62e7\te5ba7672\tf54016b9\t21ddcdc9\tb1252a9d\t07b5194c\t\t3a171ecb\tc5c50484\te8b83407\t9727dd16";

    #[test]
    fn decodes_a_kaggle_line() {
        let event = CriteoEvent::decode_tsv(GOOD.as_bytes()).unwrap();
        assert!(!event.label);
        assert_eq!(event.features.ints[0], Some(1));
        assert_eq!(event.features.ints[11], None);
        assert_eq!(event.features.cats[0], Some(0x68fd1e64));
        assert_eq!(event.features.cats[21], None);
        assert_eq!(event.to_tsv(), GOOD);
    }

    #[test]
    fn names_the_bad_field() {
        let bad_label = GOOD.replacen('0', "2", 1);
        assert_eq!(
            CriteoEvent::decode_tsv(bad_label.as_bytes()),
            Err(DecodeError::Label)
        );
        let bad_int = GOOD.replacen("\t1382\t", "\t13x2\t", 1);
        assert_eq!(
            CriteoEvent::decode_tsv(bad_int.as_bytes()),
            Err(DecodeError::Integer("I5"))
        );
        let bad_cat = GOOD.replacen("68fd1e64", "68fd1e6", 1);
        assert_eq!(
            CriteoEvent::decode_tsv(bad_cat.as_bytes()),
            Err(DecodeError::Categorical("C1"))
        );
        let short = GOOD.rsplit_once('\t').unwrap().0;
        assert_eq!(
            CriteoEvent::decode_tsv(short.as_bytes()),
            Err(DecodeError::FieldCount(39))
        );
        let long = format!("{GOOD}\t");
        assert_eq!(
            CriteoEvent::decode_tsv(long.as_bytes()),
            Err(DecodeError::FieldCount(41))
        );
        assert_eq!(CriteoEvent::decode_tsv(b""), Err(DecodeError::Label));
        let overflow = GOOD.replacen("\t1382\t", "\t99999999999999999999\t", 1);
        assert_eq!(
            CriteoEvent::decode_tsv(overflow.as_bytes()),
            Err(DecodeError::Integer("I5"))
        );
    }

    #[test]
    fn accepts_negative_integers_and_crlf() {
        let line = format!("{}\r\n", GOOD.replacen("\t1382\t", "\t-3\t", 1));
        let event = CriteoEvent::decode_tsv(line.as_bytes()).unwrap();
        assert_eq!(event.features.ints[4], Some(-3));
    }

    #[test]
    fn json_round_trip_and_errors() {
        let event = CriteoEvent::decode_tsv(GOOD.as_bytes()).unwrap();
        let json = event.features.to_json();
        assert_eq!(CriteoFeatures::from_json(&json).unwrap(), event.features);
        let unknown = serde_json::json!({"I1": 1, "C99": "00000000"});
        assert_eq!(
            CriteoFeatures::from_json(&unknown),
            Err(DecodeError::UnknownField("C99".into()))
        );
        let wrong = serde_json::json!({"I1": "one"});
        assert_eq!(
            CriteoFeatures::from_json(&wrong),
            Err(DecodeError::Integer("I1"))
        );
        let float = serde_json::json!({"I1": 1.5});
        assert_eq!(
            CriteoFeatures::from_json(&float),
            Err(DecodeError::Integer("I1"))
        );
        assert_eq!(
            CriteoFeatures::from_json(&serde_json::json!([1])),
            Err(DecodeError::NotAnObject)
        );
    }

    #[test]
    fn json_records_decode_like_lines() {
        let event = CriteoEvent::decode_tsv(GOOD.as_bytes()).unwrap();
        let mut json = event.features.to_json();
        json["label"] = 0.into();
        json["ts"] = 1_700_000_000_000u64.into();
        let format = RecordFormat::Json {
            ignore: Some("ts".into()),
        };
        let bytes = json.to_string().into_bytes();
        assert_eq!(format.decode(&bytes), Ok(event));
        assert_eq!(
            RecordFormat::Json { ignore: None }.decode(&bytes),
            Err(DecodeError::UnknownField("ts".into()))
        );
        for (record, kind) in [
            (&b"{\"I1\": 1}"[..], "label"),
            (b"{\"label\": 2}", "label"),
            (b"[1, 2]", "not_an_object"),
            (b"{\"label\": true", "not_json"),
            (b"\xff", "not_json"),
            (b"{\"label\": \"1\", \"C1\": 7}", "categorical"),
        ] {
            assert_eq!(
                format.decode(record).unwrap_err().kind(),
                kind,
                "{record:?}"
            );
        }
        let positive = format.decode(b"{\"label\": true, \"I2\": \"-3\"}").unwrap();
        assert!(positive.label);
        assert_eq!(positive.features.ints[1], Some(-3));
    }

    fn arb_event() -> impl Strategy<Value = CriteoEvent> {
        (
            any::<bool>(),
            proptest::array::uniform13(proptest::option::of(any::<i64>())),
            proptest::collection::vec(proptest::option::of(any::<u32>()), NUM_CATS),
        )
            .prop_map(|(label, ints, cats)| {
                let mut features = CriteoFeatures {
                    ints,
                    ..Default::default()
                };
                features.cats.copy_from_slice(&cats);
                CriteoEvent { label, features }
            })
    }

    proptest! {
        #[test]
        fn tsv_round_trips(event in arb_event()) {
            let line = event.to_tsv();
            prop_assert_eq!(CriteoEvent::decode_tsv(line.as_bytes()).unwrap(), event);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = CriteoEvent::decode_tsv(&bytes);
        }

        #[test]
        fn decoding_mutated_lines_never_panics(pos in 0usize..GOOD.len(), byte in any::<u8>()) {
            let mut line = GOOD.as_bytes().to_vec();
            line[pos] = byte;
            if let Ok(event) = CriteoEvent::decode_tsv(&line) {
                prop_assert_eq!(CriteoEvent::decode_tsv(event.to_tsv().as_bytes()).unwrap(), event);
            }
        }
    }
}
