//! Parsed events: the values of a batch of events, parsed once by the field's [`ParseMode`],
//! with malformed values kept as [`Value::Bad`] and counted instead of failing the event.

use super::spec::{Layout, ParseMode};
use crate::decode::{DecodeError, Decoder};
use crate::schema::text::{parse_integer, parse_number, split_columns};
use crate::schema::{json_path, json_scalar_text, strip_newline, Encoding, RecordLayout, Role};
use crate::Position;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// Why a value is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BadKind {
    /// Not a number where a number was asked for, or one beyond the range of `f32` (the rows'
    /// values), infinities and NaN included; for hashed features, a category that is not eight
    /// hex digits.
    NotNumeric,
    /// A categorical value longer than the spec's `max_value_len`.
    Overlong,
    /// A categorical value that is not UTF-8.
    InvalidUtf8,
    /// A JSON value of a type the field cannot hold (an object, a boolean, …).
    WrongType,
}

impl BadKind {
    /// Every kind, in the order of [`BadCounts`] columns.
    pub const ALL: [BadKind; 4] = [
        BadKind::NotNumeric,
        BadKind::Overlong,
        BadKind::InvalidUtf8,
        BadKind::WrongType,
    ];

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            BadKind::NotNumeric => "not_numeric",
            BadKind::Overlong => "overlong",
            BadKind::InvalidUtf8 => "invalid_utf8",
            BadKind::WrongType => "wrong_type",
        }
    }
}

/// One field's parsed value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Empty, absent or not parsed (no transform reads the field).
    Missing,
    /// Malformed; the transform's policy decides what it becomes.
    Bad(BadKind),
    /// A finite number.
    Num(f64),
    /// A categorical value's 64-bit fingerprint (XXH3 of its bytes).
    Cat(u64),
    /// Several categorical values: `len` fingerprints from `start` in [`EventBatch::tokens`].
    Multi {
        /// First token.
        start: u32,
        /// Number of tokens.
        len: u32,
    },
}

/// The fingerprint of a categorical value: XXH3-64 of its bytes, a stable published hash.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// A batch of parsed events, row-major: `fields` values per event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Values per event (the schema's field count).
    pub fields: usize,
    /// One label per event.
    pub labels: Vec<bool>,
    /// Event time per event, milliseconds since the Unix epoch.
    pub times: Vec<u64>,
    /// `fields` values per event.
    pub values: Vec<Value>,
    /// The tokens of multi-valued fields.
    pub tokens: Vec<u64>,
    /// One weight per token (a libFM pair's value; 1 for tokens of a delimited field); empty
    /// in batches written before weights, where every token weighs 1.
    #[serde(default)]
    pub weights: Vec<f32>,
    /// Where each event was read: one per event, or empty when the events did not come from a
    /// source (see [`EventBatch::position`]).
    #[serde(default)]
    pub sources: Vec<Position>,
}

impl EventBatch {
    /// An empty batch for events of `fields` fields.
    pub fn new(fields: usize) -> Self {
        EventBatch {
            fields,
            ..EventBatch::default()
        }
    }

    /// An empty batch for events of `fields` fields with room for `rows` events.
    pub fn with_capacity(fields: usize, rows: usize) -> Self {
        EventBatch {
            fields,
            labels: Vec::with_capacity(rows),
            times: Vec::with_capacity(rows),
            values: Vec::with_capacity(rows * fields),
            tokens: Vec::new(),
            weights: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Removes every event, keeping the room they took for the next ones.
    pub fn clear(&mut self) {
        self.labels.clear();
        self.times.clear();
        self.values.clear();
        self.tokens.clear();
        self.weights.clear();
        self.sources.clear();
    }

    /// Whether the batch has no events.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The values of event `i`.
    pub fn row(&self, i: usize) -> &[Value] {
        &self.values[i * self.fields..(i + 1) * self.fields]
    }

    /// The tokens a [`Value::Multi`] stands for (empty for other values).
    pub fn multi(&self, value: &Value) -> &[u64] {
        match *value {
            Value::Multi { start, len } => &self.tokens[start as usize..(start + len) as usize],
            _ => &[],
        }
    }

    /// The weights of the tokens a [`Value::Multi`] stands for, one per token of
    /// [`EventBatch::multi`] (1 where the batch has none).
    pub fn multi_weights(&self, value: &Value) -> impl Iterator<Item = f32> + '_ {
        let range = match *value {
            Value::Multi { start, len } => start as usize..(start + len) as usize,
            _ => 0..0,
        };
        range.map(|i| self.weights.get(i).copied().unwrap_or(1.0))
    }

    /// Where event `i` was read, when the batch knows.
    pub fn position(&self, i: usize) -> Option<Position> {
        self.sources.get(i).copied()
    }

    /// Appends event `i` of `other` (with its position only when both batches keep them).
    pub fn push_from(&mut self, other: &EventBatch, i: usize) {
        if self.sources.len() == self.labels.len() {
            if let Some(position) = other.position(i) {
                self.sources.push(position);
            }
        }
        self.labels.push(other.labels[i]);
        self.times.push(other.times[i]);
        for value in other.row(i) {
            let value = match value {
                Value::Multi { .. } => {
                    let start = self.tokens.len() as u32;
                    self.tokens.extend_from_slice(other.multi(value));
                    self.weights.resize(start as usize, 1.0);
                    self.weights.extend(other.multi_weights(value));
                    Value::Multi {
                        start,
                        len: self.tokens.len() as u32 - start,
                    }
                }
                v => *v,
            };
            self.values.push(value);
        }
    }
}

/// Malformed values seen by a parser, per field and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadCounts {
    /// `counts[field][kind]`, kinds in the order of [`BadKind::ALL`].
    pub counts: Vec<[u64; 4]>,
}

impl BadCounts {
    fn add(&mut self, field: usize, kind: BadKind) {
        if self.counts.len() <= field {
            self.counts.resize(field + 1, [0; 4]);
        }
        let column = BadKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.counts[field][column] += 1;
    }

    /// All malformed values.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// All malformed values per kind, in the order of [`BadKind::ALL`].
    pub fn column_totals(&self) -> [u64; 4] {
        let mut totals = [0; 4];
        for row in &self.counts {
            for (total, n) in totals.iter_mut().zip(row) {
                *total += n;
            }
        }
        totals
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &BadCounts) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), [0; 4]);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }
}

/// What a parser reads by: made once per layout, shared by the parser's clones.
#[derive(Debug)]
struct Shape {
    modes: Vec<ParseMode>,
    names: Vec<String>,
    /// Each feature field's index by name.
    index: HashMap<String, usize>,
    max_value_len: usize,
    record: RecordLayout,
}

/// Parses events by a layout's schema and parse modes. A clone shares what it reads by, and
/// starts its own counts where the original's are.
#[derive(Clone, Debug)]
pub struct Parser {
    shape: Arc<Shape>,
    /// The schema's decoder, when it names one and the parser was given it.
    decoder: Option<DecoderHandle>,
    /// Malformed values seen so far.
    pub bad: BadCounts,
}

/// A [`Decoder`] a parser holds.
#[derive(Clone)]
struct DecoderHandle(Arc<dyn Decoder>);

impl std::fmt::Debug for DecoderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl From<&Layout> for Parser {
    fn from(layout: &Layout) -> Self {
        Parser::new(layout)
    }
}

impl From<Layout> for Parser {
    fn from(layout: Layout) -> Self {
        Parser::new(&layout)
    }
}

impl Parser {
    /// A parser for `layout`'s schema.
    pub fn new(layout: &Layout) -> Self {
        let names = layout.schema.fields.clone();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        Parser {
            shape: Arc::new(Shape {
                modes: layout.modes.clone(),
                names,
                index,
                max_value_len: layout.max_value_len,
                record: layout.schema.record(),
            }),
            decoder: None,
            bad: BadCounts::default(),
        }
    }

    /// The parser with `decoder` as the schema's decoder (`[schema] decoder`).
    pub fn with_decoder(mut self, decoder: Arc<dyn Decoder>) -> Self {
        self.decoder = Some(DecoderHandle(decoder));
        self
    }

    /// How many feature fields an event has.
    pub fn fields(&self) -> usize {
        self.shape.names.len()
    }

    /// Parses one record as the schema declares (a delimited line, a JSON object or a libFM
    /// line; a trailing newline is ignored) with event time `time_ms`, appending it to `batch`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::LabelValue`], [`DecodeError::ColumnCount`], [`DecodeError::NotJson`],
    /// [`DecodeError::NotAnObject`] or [`DecodeError::LibfmPair`]: the record cannot be used
    /// at all and belongs in the dead letters. Malformed values are not errors: they are
    /// counted and kept as [`Value::Bad`]. Nothing is appended on error.
    pub fn parse_record(
        &mut self,
        payload: &[u8],
        time_ms: u64,
        batch: &mut EventBatch,
    ) -> Result<(), DecodeError> {
        let (values_start, tokens_start) = (batch.values.len(), batch.tokens.len());
        let parsed = match self.shape.record.encoding {
            Encoding::Delimited { delimiter } => {
                let line = strip_newline(payload);
                if delimiter != b'\t' && line.contains(&b'"') {
                    self.parse_quoted(line, delimiter, batch)
                } else {
                    self.parse_delimited(line, delimiter, batch)
                }
            }
            Encoding::Json => match &self.shape.record.decoder {
                Some(name) => self.parse_decoded(name, payload, batch),
                None => self.parse_json_record(payload, batch),
            },
            Encoding::Libfm => self.parse_libfm(strip_newline(payload), batch),
        };
        match parsed {
            Ok(label) => {
                if batch.values[values_start..]
                    .iter()
                    .any(|v| matches!(v, Value::Bad(_)))
                {
                    self.count_bad(values_start, batch);
                }
                batch.labels.push(label);
                batch.times.push(time_ms);
                Ok(())
            }
            Err(error) => {
                batch.values.truncate(values_start);
                batch.tokens.truncate(tokens_start);
                batch.weights.truncate(tokens_start);
                Err(error)
            }
        }
    }

    /// The label of a record from its label column's raw value.
    fn label(&self, raw: Option<&[u8]>) -> Result<bool, DecodeError> {
        raw.and_then(|raw| self.shape.record.label.read(raw))
            .ok_or_else(|| DecodeError::LabelValue(self.label_name()))
    }

    fn label_name(&self) -> String {
        self.shape
            .record
            .columns
            .iter()
            .find(|c| c.role == Role::Label)
            .map_or_else(|| "label".to_owned(), |c| c.name.clone())
    }

    /// A delimited line without quotes: each column is handled as the delimiter after it is
    /// found. Feature columns come in field order, so their values are pushed as they come.
    fn parse_delimited(
        &self,
        line: &[u8],
        delimiter: u8,
        batch: &mut EventBatch,
    ) -> Result<bool, DecodeError> {
        let columns = &self.shape.record.columns;
        let mut label = None;
        let mut column = |at: usize, start: usize, end: usize, batch: &mut EventBatch| match columns
            .get(at)
            .map(|c| c.role)
        {
            Some(Role::Feature(f)) => {
                let value = self.parse_bytes(f as usize, &line[start..end], batch);
                batch.values.push(value);
            }
            Some(Role::Label) => label = Some((start, end)),
            _ => {}
        };
        let (mut at, mut from) = (0usize, 0usize);
        for_each_byte(line, delimiter, |end| {
            column(at, from, end, batch);
            at += 1;
            from = end + 1;
        });
        column(at, from, line.len(), batch);
        let label = self.label(label.map(|(a, b)| &line[a..b]))?;
        if at + 1 != columns.len() {
            return Err(DecodeError::ColumnCount {
                expected: columns.len(),
                got: at + 1,
            });
        }
        Ok(label)
    }

    /// A delimited line with quoted columns: split first, then read.
    fn parse_quoted(
        &self,
        line: &[u8],
        delimiter: u8,
        batch: &mut EventBatch,
    ) -> Result<bool, DecodeError> {
        let cells = split_columns(line, delimiter);
        let columns = &self.shape.record.columns;
        let label_at = columns.iter().position(|c| c.role == Role::Label);
        let label = self.label(label_at.and_then(|at| cells.get(at)).map(|c| &c[..]))?;
        if cells.len() != columns.len() {
            return Err(DecodeError::ColumnCount {
                expected: columns.len(),
                got: cells.len(),
            });
        }
        for (column, cell) in columns.iter().zip(&cells) {
            if let Role::Feature(f) = column.role {
                let value = self.parse_bytes(f as usize, cell, batch);
                batch.values.push(value);
            }
        }
        Ok(label)
    }

    /// A record of the schema's decoder: the JSON object it decodes to, read as a JSON
    /// record is.
    fn parse_decoded(
        &self,
        name: &str,
        payload: &[u8],
        batch: &mut EventBatch,
    ) -> Result<bool, DecodeError> {
        let refused = |reason: String| DecodeError::Decoder {
            decoder: name.to_owned(),
            reason,
        };
        let decoder = self
            .decoder
            .as_ref()
            .ok_or_else(|| refused("no decoder of that name was given to the job".to_owned()))?;
        let value = decoder.0.decode(payload).map_err(refused)?;
        self.read_json_object(&value, batch)
    }

    /// A JSON record: the label and the features at their paths; other keys are ignored.
    fn parse_json_record(
        &self,
        payload: &[u8],
        batch: &mut EventBatch,
    ) -> Result<bool, DecodeError> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        self.read_json_object(&value, batch)
    }

    /// A JSON object's label and features at their paths; other keys are ignored.
    fn read_json_object(
        &self,
        value: &serde_json::Value,
        batch: &mut EventBatch,
    ) -> Result<bool, DecodeError> {
        if !value.is_object() {
            return Err(DecodeError::NotAnObject);
        }
        let mut label = None;
        let mut row = vec![None; self.shape.modes.len()];
        for column in &self.shape.record.columns {
            let found = json_path(value, &column.name);
            match column.role {
                Role::Label => label = found,
                Role::Feature(f) => row[f as usize] = found,
                Role::Skip | Role::Time => {}
            }
        }
        let text = label.and_then(json_scalar_text);
        let label = self.label(text.as_deref().map(str::as_bytes))?;
        for (field, value) in row.into_iter().enumerate() {
            let parsed = self.json_value(field, value, batch);
            batch.values.push(parsed);
        }
        Ok(label)
    }

    /// A libFM line: the label, then `index:value` pairs, each index a token of field 0 with
    /// the value as its weight.
    fn parse_libfm(&self, line: &[u8], batch: &mut EventBatch) -> Result<bool, DecodeError> {
        let mut parts = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|p| !p.is_empty());
        let label = self.label(parts.next())?;
        let start = batch.tokens.len();
        // Batches written before weights have none: every earlier token weighs 1.
        batch.weights.resize(start, 1.0);
        for pair in parts {
            let split = pair.iter().position(|&b| b == b':');
            let parsed = split.and_then(|at| {
                let (index, value) = (&pair[..at], &pair[at + 1..]);
                let weight = parse_number(value)? as f32;
                (!index.is_empty() && index.iter().all(u8::is_ascii_digit))
                    .then(|| (fingerprint(index), weight))
            });
            let Some((token, weight)) = parsed else {
                return Err(DecodeError::LibfmPair(
                    String::from_utf8_lossy(pair).into_owned(),
                ));
            };
            batch.tokens.push(token);
            batch.weights.push(weight);
        }
        let value = match self.shape.modes.first() {
            Some(ParseMode::Skip) | None => {
                batch.tokens.truncate(start);
                batch.weights.truncate(start);
                Value::Missing
            }
            Some(_) => multi(start, batch.tokens.len()),
        };
        batch.values.push(value);
        Ok(label)
    }

    /// Parses one JSON instance (an object of field name to value, a dotted field by its name
    /// or inside its objects; absent fields are missing) with label `false` and event time
    /// `time_ms`, appending it to `batch`.
    ///
    /// `"3"` and `3` are the same value in a numeric field, and a number or a boolean in a
    /// categorical field stands for its text, as in a delimited line; a numeric field does not
    /// take a boolean, nor a category of hashed features (eight hex digits) anything but a
    /// string. A multi-valued field also takes an array of strings.
    /// The record's other columns (the label, the time, skipped ones) are passed over, so that
    /// a training event can be scored as it is.
    ///
    /// # Errors
    ///
    /// [`DecodeError::NotAnObject`], [`DecodeError::UnknownField`] or
    /// [`DecodeError::WrongType`] (a value of a JSON type the field cannot hold); nothing is
    /// appended.
    pub fn parse_json(
        &mut self,
        instance: &serde_json::Value,
        time_ms: u64,
        batch: &mut EventBatch,
    ) -> Result<(), DecodeError> {
        let object = instance.as_object().ok_or(DecodeError::NotAnObject)?;
        let mut row = vec![None; self.shape.modes.len()];
        for (name, value) in object {
            match self.shape.index.get(name).copied() {
                Some(field) => row[field] = Some(value),
                // An object on the way to dotted fields (`{"user": {"id": …}}` for `user.id`),
                // or a column of the record that is not a feature (the label, the time, a
                // skipped one), which a training event sent as it is holds.
                None => {
                    let mut found = self.is_other_column(name);
                    for (field, full) in self.shape.names.iter().enumerate() {
                        let inner = full
                            .strip_prefix(name.as_str())
                            .and_then(|rest| rest.strip_prefix('.'));
                        if let Some(inner) = inner {
                            found = true;
                            if row[field].is_none() {
                                row[field] = json_path(value, inner);
                            }
                        }
                    }
                    if !found {
                        return Err(DecodeError::UnknownField(name.clone()));
                    }
                }
            }
        }
        self.push_instance(row, time_ms, batch, Self::json_value)
    }

    /// [`Parser::parse_json`] of an instance's JSON text, read without building the
    /// [`serde_json::Value`] when its keys are the fields' (or the record's other columns')
    /// names: the same event or the same error, with less allocation, for serving.
    ///
    /// # Errors
    ///
    /// As [`Parser::parse_json`]; [`DecodeError::NotJson`] for text that is not JSON.
    pub fn parse_json_text(
        &mut self,
        text: &str,
        time_ms: u64,
        batch: &mut EventBatch,
    ) -> Result<(), DecodeError> {
        let general = |parser: &mut Self, batch: &mut EventBatch| {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
            parser.parse_json(&value, time_ms, batch)
        };
        // Not an object (or not JSON): the general reader says which.
        let Ok(Entries(entries)) = serde_json::from_str::<Entries<'_>>(text) else {
            return general(self, batch);
        };
        let mut row: Vec<Option<&RawValue>> = vec![None; self.shape.modes.len()];
        let mut next = 0;
        for (key, raw) in entries {
            match self.field_named(&key, next) {
                Some(field) if reads_in_place(raw) => {
                    row[field] = Some(raw);
                    next = field + 1;
                }
                None if self.is_other_column(&key)
                    && !self.leads_to_field(&key)
                    && reads_in_place(raw) => {}
                // An object on the way to dotted fields, an unknown field, or a value that
                // `serde_json::Value` may refuse (a number beyond `f64`, a lone surrogate).
                _ => return general(self, batch),
            }
        }
        self.push_instance(row, time_ms, batch, Self::raw_value)
    }

    /// The feature field named `key`: `guess` when it is the one (instances mostly list their
    /// fields in the schema's order, so the field after the last one found is tried first),
    /// else through the index.
    fn field_named(&self, key: &str, guess: usize) -> Option<usize> {
        match self.shape.names.get(guess) {
            Some(name) if name == key => Some(guess),
            _ => self.shape.index.get(key).copied(),
        }
    }

    /// Whether `key` is an object on the way to a dotted feature field.
    fn leads_to_field(&self, key: &str) -> bool {
        self.shape.names.iter().any(|name| {
            name.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Appends an instance whose fields are `row` (read by `read`), with label `false` and
    /// event time `time_ms`; nothing when a field holds a JSON type it cannot hold.
    fn push_instance<T>(
        &mut self,
        row: Vec<Option<T>>,
        time_ms: u64,
        batch: &mut EventBatch,
        read: impl Fn(&Self, usize, Option<T>, &mut EventBatch) -> Value,
    ) -> Result<(), DecodeError> {
        let (start, tokens_start) = (batch.values.len(), batch.tokens.len());
        for (field, value) in row.into_iter().enumerate() {
            let parsed = read(self, field, value, batch);
            if parsed == Value::Bad(BadKind::WrongType) {
                batch.values.truncate(start);
                batch.tokens.truncate(tokens_start);
                batch.weights.truncate(tokens_start);
                return Err(DecodeError::WrongType(self.shape.names[field].clone()));
            }
            batch.values.push(parsed);
        }
        self.count_bad(start, batch);
        batch.labels.push(false);
        batch.times.push(time_ms);
        Ok(())
    }

    /// One field's value from its raw JSON text, as [`Parser::json_value`] reads the parsed
    /// value: a string without escapes and a number's text in a numeric field are read where
    /// they are.
    fn raw_value(&self, field: usize, raw: Option<&RawValue>, batch: &mut EventBatch) -> Value {
        let Some(raw) = raw else {
            return Value::Missing;
        };
        let text = raw.get();
        let mode = self.shape.modes[field];
        match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => {
                self.parse_bytes(field, &text.as_bytes()[1..text.len() - 1], batch)
            }
            Some(b'-' | b'0'..=b'9') if mode == ParseMode::Num => {
                self.parse_bytes(field, text.as_bytes(), batch)
            }
            Some(b'n') => Value::Missing,
            _ => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => self.json_value(field, Some(&value), batch),
                Err(_) => Value::Bad(BadKind::WrongType),
            },
        }
    }

    /// Whether `key` names a column of the record that is not a feature, or an object on the
    /// way to one.
    fn is_other_column(&self, key: &str) -> bool {
        self.shape.record.columns.iter().any(|column| {
            !matches!(column.role, Role::Feature(_))
                && (column.name == key
                    || column
                        .name
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.starts_with('.')))
        })
    }

    /// One field's value from JSON: strings and numbers as a line's text, arrays of strings
    /// as a multi-valued field's items, anything else of the wrong type.
    fn json_value(
        &self,
        field: usize,
        value: Option<&serde_json::Value>,
        batch: &mut EventBatch,
    ) -> Value {
        match value {
            None | Some(serde_json::Value::Null) => Value::Missing,
            Some(serde_json::Value::String(s)) => self.parse_bytes(field, s.as_bytes(), batch),
            // Hashed features' categories are hex digits, which only a string holds.
            Some(serde_json::Value::Number(_)) if self.shape.modes[field] == ParseMode::Hex => {
                Value::Bad(BadKind::WrongType)
            }
            Some(serde_json::Value::Number(n)) => {
                let text = n.to_string();
                self.parse_bytes(field, text.as_bytes(), batch)
            }
            // A boolean is a category's text, as a delimited line would hold it; a number field
            // cannot hold one.
            Some(serde_json::Value::Bool(_))
                if matches!(self.shape.modes[field], ParseMode::Num | ParseMode::Hex) =>
            {
                Value::Bad(BadKind::WrongType)
            }
            Some(serde_json::Value::Bool(b)) => {
                let text: &[u8] = if *b { b"true" } else { b"false" };
                self.parse_bytes(field, text, batch)
            }
            // An array is the field's items joined by its separator, as in a line: the same
            // tokens, and the same length limit on the whole.
            Some(serde_json::Value::Array(items)) => match self.shape.modes[field] {
                ParseMode::Multi(separator) => {
                    let items: Option<Vec<&[u8]>> = items
                        .iter()
                        .map(|i| i.as_str().map(str::as_bytes))
                        .collect();
                    match items {
                        Some(items) => {
                            let joined = items.join(&separator);
                            self.parse_bytes(field, &joined, batch)
                        }
                        None => Value::Bad(BadKind::WrongType),
                    }
                }
                ParseMode::Skip => Value::Missing,
                _ => Value::Bad(BadKind::WrongType),
            },
            Some(_) => match self.shape.modes[field] {
                ParseMode::Skip => Value::Missing,
                _ => Value::Bad(BadKind::WrongType),
            },
        }
    }

    /// Counts the malformed values of the event whose values start at `start`.
    fn count_bad(&mut self, start: usize, batch: &EventBatch) {
        for (field, value) in batch.values[start..].iter().enumerate() {
            if let Value::Bad(kind) = value {
                self.bad.add(field, *kind);
            }
        }
    }

    fn check_cat(&self, raw: &[u8]) -> Result<(), BadKind> {
        if raw.len() > self.shape.max_value_len {
            Err(BadKind::Overlong)
        } else if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
            Err(BadKind::InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Parses `raw` as field `field`. The common values (an ASCII categorical of an allowed
    /// length, an integer) are read here, small enough to inline into the line's loop; the
    /// rest in [`Parser::parse_other`].
    #[inline]
    fn parse_bytes(&self, field: usize, raw: &[u8], batch: &mut EventBatch) -> Value {
        if raw.is_empty() {
            return Value::Missing;
        }
        let Some(&mode) = self.shape.modes.get(field) else {
            return Value::Missing;
        };
        match mode {
            ParseMode::Cat if raw.len() <= self.shape.max_value_len && raw.is_ascii() => {
                Value::Cat(fingerprint(raw))
            }
            ParseMode::Num => match parse_integer(raw) {
                Some(x) => Value::Num(x),
                None => self.parse_other(mode, raw, batch),
            },
            ParseMode::Hex => match parse_hex32(raw) {
                Some(x) => Value::Cat(x),
                None => self.parse_other(mode, raw, batch),
            },
            _ => self.parse_other(mode, raw, batch),
        }
    }

    /// [`Parser::parse_bytes`] for any non-empty value of a field parsed by `mode`.
    #[inline(never)]
    fn parse_other(&self, mode: ParseMode, raw: &[u8], batch: &mut EventBatch) -> Value {
        match mode {
            ParseMode::Skip => Value::Missing,
            ParseMode::Num => match parse_number(raw) {
                Some(x) => Value::Num(x),
                None => Value::Bad(BadKind::NotNumeric),
            },
            ParseMode::Cat => match self.check_cat(raw) {
                Ok(()) => Value::Cat(fingerprint(raw)),
                Err(kind) => Value::Bad(kind),
            },
            // Not eight hex digits: malformed as text is (overlong, not UTF-8), or else as a
            // number.
            ParseMode::Hex => match (parse_hex32(raw), self.check_cat(raw)) {
                (Some(x), _) => Value::Cat(x),
                (None, Err(kind)) => Value::Bad(kind),
                (None, Ok(())) => Value::Bad(BadKind::NotNumeric),
            },
            ParseMode::Multi(separator) => {
                if let Err(kind) = self.check_cat(raw) {
                    return Value::Bad(kind);
                }
                let start = batch.tokens.len();
                batch.tokens.extend(
                    raw.split(|&b| b == separator)
                        .filter(|t| !t.is_empty())
                        .map(fingerprint),
                );
                batch.weights.resize(batch.tokens.len(), 1.0);
                multi(start, batch.tokens.len())
            }
        }
    }
}

/// Each byte's value as a hex digit, or `0x80` for a byte that is not one.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => 0x80,
        };
        b += 1;
    }
    table
};

/// Whether [`Parser::raw_value`] reads a raw JSON value as the parsed value would be read: its
/// text parses as a `serde_json::Value`, numbers within `f64`'s range included.
fn reads_in_place(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => true,
        Some(b'n' | b't' | b'f') => true,
        // Integers (most numbers in events) without a float parse; others as `f64` takes them.
        Some(b'-' | b'0'..=b'9') => {
            parse_integer(text.as_bytes()).is_some()
                || text.parse::<f64>().is_ok_and(f64::is_finite)
        }
        _ => serde_json::from_str::<serde_json::Value>(text).is_ok(),
    }
}

/// A JSON object's entries in order, each value's text borrowed from the object's.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A key, borrowed unless it holds escapes.
        struct Key<'a>(Cow<'a, str>);
        impl<'de> Deserialize<'de> for Key<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl<'de> serde::de::Visitor<'de> for KeyVisitor {
                    type Value = Key<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                        Ok(Key(Cow::Borrowed(key)))
                    }
                    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                        Ok(Key(Cow::Owned(key.to_owned())))
                    }
                }
                d.deserialize_str(KeyVisitor)
            }
        }
        struct EntriesVisitor;
        impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// The number of exactly eight hex digits (either case).
#[inline]
fn parse_hex32(raw: &[u8]) -> Option<u64> {
    let digits: &[u8; 8] = raw.try_into().ok()?;
    let (mut value, mut bad) = (0u64, 0u8);
    for &d in digits {
        let nibble = HEX_DIGITS[usize::from(d)];
        bad |= nibble;
        value = (value << 4) | u64::from(nibble & 0xf);
    }
    (bad & 0x80 == 0).then_some(value)
}

/// Calls `found` with the position of every `byte` in `line`, in order, eight bytes at a
/// time: one pass over the line instead of a search per column (columns are a few bytes long,
/// so a search's set-up costs more than its scan).
#[inline]
fn for_each_byte(line: &[u8], byte: u8, mut found: impl FnMut(usize)) {
    let pattern = u64::from(byte) * 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut chunks = line.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The high bit of each byte is set exactly where that byte of `x` is zero.
        let mut zeros = !(((x & LOW7) + LOW7) | x | LOW7);
        while zeros != 0 {
            found(base + (zeros.trailing_zeros() / 8) as usize);
            zeros &= zeros - 1;
        }
        base += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == byte {
            found(base + i);
        }
    }
}

fn multi(start: usize, end: usize) -> Value {
    if start == end {
        Value::Missing
    } else {
        Value::Multi {
            start: start as u32,
            len: (end - start) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmap::spec::{FeatureMapSpec, Schema};
    use crate::schema::SchemaSpec;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time scan finds exactly the tabs a byte-by-byte scan finds, at every
        /// length and alignment (bytes near 0x09 and with the high bit set included).
        #[test]
        fn delimiter_positions_are_every_delimiter(
            line in proptest::collection::vec(
                prop_oneof![Just(b'\t'), Just(b','), Just(0x08u8), Just(0x0au8), Just(0x89u8), any::<u8>()],
                0..100,
            ),
            byte in prop_oneof![Just(b'\t'), Just(b','), any::<u8>()],
        ) {
            let mut got = Vec::new();
            for_each_byte(&line, byte, |at| got.push(at));
            let want: Vec<usize> = (0..line.len()).filter(|&i| line[i] == byte).collect();
            prop_assert_eq!(got, want);
        }

        /// Any line parses as splitting it at every tab and reading each field does: the same
        /// error (the label's first), or one more event with the same values and tokens; an
        /// error leaves the batch as it was.
        #[test]
        fn lines_parse_as_split_fields(
            first in prop_oneof![Just(b"0".to_vec()), Just(b"1".to_vec()), "[0-9a]{0,2}".prop_map(String::into_bytes)],
            fields in proptest::collection::vec(
                prop_oneof![
                    "-?[0-9]{0,6}".prop_map(String::into_bytes),
                    "[a-z|]{0,12}".prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 0..12),
                ],
                36..42,
            ),
        ) {
            let spec: FeatureMapSpec = toml::from_str(include_str!("testdata/every_kind.toml")).unwrap();
            let layout = spec.compile(&Schema::criteo()).unwrap();
            let mut line = first;
            for field in &fields {
                line.push(b'\t');
                line.extend(field.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
            }
            let parts: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
            let reference = Parser::new(&layout);
            let mut want = EventBatch::new(39);
            let want_result = match parts[0] {
                b"0" | b"1" if parts.len() == 40 => {
                    for (field, raw) in parts[1..].iter().enumerate() {
                        let value = reference.parse_bytes(field, raw, &mut want);
                        want.values.push(value);
                    }
                    want.labels.push(parts[0] == b"1");
                    want.times.push(3);
                    Ok(())
                }
                b"0" | b"1" => Err(DecodeError::ColumnCount { expected: 40, got: parts.len() }),
                _ => Err(DecodeError::LabelValue("label".into())),
            };
            let mut got = EventBatch::new(39);
            let mut parser = Parser::new(&layout);
            prop_assert_eq!(parser.parse_record(&line, 3, &mut got), want_result);
            prop_assert_eq!(got, want);
        }

        /// The integer fast path reads what the standard library reads, for digits, signs and
        /// anything else of up to 20 bytes.
        #[test]
        fn numbers_parse_as_the_standard_library_does(
            raw in prop_oneof![
                "-?[0-9]{1,19}".prop_map(String::into_bytes),
                proptest::collection::vec(prop_oneof![Just(b'-'), Just(b'.'), Just(b'/'), Just(b':'), 0x30u8..0x3a, any::<u8>()], 0..20),
            ],
        ) {
            let want = std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|x| x.abs() <= f64::from(f32::MAX));
            prop_assert_eq!(parse_number(&raw), want);
        }
    }

    fn parser() -> Parser {
        Parser::new(
            &FeatureMapSpec::criteo_default()
                .compile(&Schema::criteo())
                .unwrap(),
        )
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"12"), Some(12.0));
        assert_eq!(parse_number(b"-3"), Some(-3.0));
        assert_eq!(parse_number(b"2.5"), Some(2.5));
        assert_eq!(parse_number(b"1e3"), Some(1000.0));
        assert_eq!(parse_number(b"99999999999999999999"), Some(1e20));
        assert_eq!(parse_number(b"nan"), None);
        assert_eq!(parse_number(b"inf"), None);
        assert_eq!(parse_number(b"3.4e38"), Some(3.4e38));
        assert_eq!(parse_number(b"-3.5e38"), None);
        assert_eq!(parse_number(b"1e300"), None);
        assert_eq!(parse_number(b"x1"), None);
        assert_eq!(parse_number(b"-"), None);
        assert_eq!(parse_number(b"\xff"), None);
    }

    #[test]
    fn bad_values_are_kept_and_counted() {
        let mut p = parser();
        let mut batch = EventBatch::new(39);
        let mut line = b"1\tabc\t".to_vec();
        line.extend(std::iter::repeat_n(b'\t', 12));
        line.extend_from_slice(b"\xff\xfe\t");
        line.extend(std::iter::repeat_n(b'x', 300));
        line.extend(std::iter::repeat_n(b'\t', 24));
        p.parse_record(&line, 7, &mut batch).unwrap();
        let row = batch.row(0);
        assert_eq!(row[0], Value::Bad(BadKind::NotNumeric));
        assert_eq!(row[1], Value::Missing);
        assert_eq!(row[13], Value::Bad(BadKind::InvalidUtf8));
        assert_eq!(row[14], Value::Bad(BadKind::Overlong));
        assert_eq!(p.bad.total(), 3);
        assert_eq!(batch.times, vec![7]);
    }

    #[test]
    fn record_errors() {
        let mut p = parser();
        let mut batch = EventBatch::new(39);
        assert_eq!(
            p.parse_record(b"2\t", 0, &mut batch),
            Err(DecodeError::LabelValue("label".into()))
        );
        assert_eq!(
            p.parse_record(b"1\t2\t3", 0, &mut batch),
            Err(DecodeError::ColumnCount {
                expected: 40,
                got: 3
            })
        );
        // Too many fields, with malformed values before the surplus: nothing kept or counted.
        let mut long = b"1\tx".to_vec();
        long.extend(std::iter::repeat_n(b'\t', 40));
        assert_eq!(
            p.parse_record(&long, 0, &mut batch),
            Err(DecodeError::ColumnCount {
                expected: 40,
                got: 42
            })
        );
        assert!(batch.is_empty() && batch.values.is_empty() && batch.tokens.is_empty());
        assert_eq!(p.bad.total(), 0);
    }

    #[test]
    fn json_and_tsv_agree() {
        let mut p = parser();
        let mut a = EventBatch::new(39);
        let mut b = EventBatch::new(39);
        let mut line = b"0\t3\t-1".to_vec();
        line.extend(std::iter::repeat_n(b'\t', 12));
        line.extend_from_slice(b"68fd1e64");
        line.extend(std::iter::repeat_n(b'\t', 25));
        p.parse_record(&line, 0, &mut a).unwrap();
        let json = serde_json::json!({"I1": 3, "I2": "-1", "C1": "68fd1e64", "C2": null});
        p.parse_json(&json, 0, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            p.parse_json(&serde_json::json!({"C99": 1}), 0, &mut b),
            Err(DecodeError::UnknownField(_))
        ));

        // A JSON record of the preset: the same event with its label; keys the schema does
        // not read (the event time's) are ignored.
        let json_layout = FeatureMapSpec::criteo_default()
            .compile(
                &SchemaSpec {
                    format: Some("json".into()),
                    ..SchemaSpec::preset_criteo()
                }
                .compile()
                .unwrap(),
            )
            .unwrap();
        let mut p = Parser::new(&json_layout);
        let mut c = EventBatch::new(39);
        let record = br#"{"label": 1, "ts": 5, "I1": 3, "I2": "-1", "C1": "68fd1e64"}"#;
        p.parse_record(record, 0, &mut c).unwrap();
        a.labels[0] = true;
        assert_eq!(a, c);
        for (record, kind) in [
            (&br#"{"I1": 3}"#[..], "label"),
            (br#"{"label": 2, "ts": 5}"#, "label"),
            (b"[0]", "not_an_object"),
            (b"{", "not_json"),
        ] {
            let error = p.parse_record(record, 0, &mut c).unwrap_err();
            assert_eq!(error.kind(), kind);
        }
        assert_eq!(c.len(), 1);
    }

    /// A dotted field is read from an instance by its name or inside its objects, as a JSON
    /// record's is.
    #[test]
    fn instances_reach_dotted_fields_through_objects() {
        let schema: SchemaSpec =
            toml::from_str(include_str!("../schema/testdata/json.toml")).unwrap();
        let schema = schema.compile().unwrap();
        let layout = FeatureMapSpec::default_for(&schema)
            .compile(&schema)
            .unwrap();
        let mut p = Parser::new(&layout);
        let (mut nested, mut flat, mut record) =
            (EventBatch::new(3), EventBatch::new(3), EventBatch::new(3));
        p.parse_json(
            &serde_json::json!({"user": {"id": "u1", "score": 2}, "tags": ["a"]}),
            0,
            &mut nested,
        )
        .unwrap();
        p.parse_json(
            &serde_json::json!({"user.id": "u1", "user.score": "2", "tags": "a"}),
            0,
            &mut flat,
        )
        .unwrap();
        p.parse_record(
            br#"{"y": "no", "user": {"id": "u1", "score": 2}, "tags": ["a"]}"#,
            0,
            &mut record,
        )
        .unwrap();
        assert_eq!(nested, flat);
        assert_eq!(nested.values, record.values);
        assert_eq!(
            p.parse_json(&serde_json::json!({"account": {"id": 1}}), 0, &mut flat),
            Err(DecodeError::UnknownField("account".into()))
        );
        // A training event, its label included, is scored as it is.
        let event = serde_json::json!({"y": "no", "user": {"id": "u1", "score": 2}, "tags": ["a"]});
        let mut scored = EventBatch::new(3);
        p.parse_json(&event, 0, &mut scored).unwrap();
        assert_eq!(scored, flat);
    }

    /// An instance whose label and a feature share an object: the feature is read, the label
    /// passed over, by the text reader as by the value reader.
    #[test]
    fn a_label_beside_a_feature_in_one_object() {
        let schema: SchemaSpec = toml::from_str(
            "format = \"json\"\nfields = [{ name = \"user.y\", type = \"label\" }, { name = \"user.id\", type = \"category\" }]",
        )
        .unwrap();
        let schema = schema.compile().unwrap();
        let layout = FeatureMapSpec::default_for(&schema)
            .compile(&schema)
            .unwrap();
        let text = r#"{"user": {"y": "1", "id": "u7"}}"#;
        let mut p = Parser::new(&layout);
        let (mut a, mut b) = (EventBatch::new(1), EventBatch::new(1));
        p.parse_json_text(text, 0, &mut a).unwrap();
        p.parse_json(&serde_json::from_str(text).unwrap(), 0, &mut b)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.values, [Value::Cat(fingerprint(b"u7"))]);
    }

    proptest::proptest! {
        /// An instance's text read where it is gives the event or the error that reading its
        /// parsed value gives, for the Criteo preset's hashed features and a schema of dotted
        /// and token fields: any keys (fields, other columns, objects on the way to dotted
        /// fields, unknown ones) and any values (scalars, escaped strings, arrays, objects).
        #[test]
        fn instance_text_reads_as_its_value(
            entries in proptest::collection::vec((0usize..12, 0usize..14), 0..10),
            which in 0usize..3,
        ) {
            let schema = |text: &str| {
                let schema: SchemaSpec = toml::from_str(text).unwrap();
                let schema = schema.compile().unwrap();
                FeatureMapSpec::default_for(&schema).compile(&schema).unwrap()
            };
            let layout = match which {
                0 => crate::FeatureSpec::Hashed { hash_bits: 12 }.compile(&Schema::criteo()).unwrap(),
                1 => schema(include_str!("../schema/testdata/json.toml")),
                // The label and a feature under one object.
                _ => schema(
                    "format = \"json\"\nfields = [{ name = \"user.y\", type = \"label\" }, { name = \"user.id\", type = \"category\" }, { name = \"I1\", type = \"number\" }]",
                ),
            };
            let keys = ["I1", "C1", "label", "user.id", "user", "tags", "y", "zzz", "I2", "C2", "user.score", "C\\u0031"];
            let values = [
                "null", "3", "-2.5e3", "true", "\"68fd1e64\"", "\"a\\\"b\"", "\"\"", "[\"x\",\"y\"]",
                "[1]", "{\"id\":\"u\",\"score\":2,\"y\":\"1\"}", "{}", "\"12\"", "1e400", "\"\\ud800\"",
            ];
            let text = format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|&(k, v)| format!("\"{}\":{}", keys[k], values[v]))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let (mut a, mut b) = (Parser::new(&layout), Parser::new(&layout));
            let fields = layout.schema.fields.len();
            // Text that is not JSON to `serde_json::Value` (a number beyond `f64`, a lone
            // surrogate) is not JSON to the text reader either.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                let mut batch = EventBatch::new(fields);
                let result = a.parse_json_text(&text, 0, &mut batch);
                proptest::prop_assert!(matches!(result, Err(DecodeError::NotJson(_))), "{}: {:?}", text, result);
                proptest::prop_assert_eq!(batch, EventBatch::new(fields));
                return Ok(());
            };
            let (mut from_text, mut from_value) = (EventBatch::new(fields), EventBatch::new(fields));
            let text_result = a.parse_json_text(&text, 0, &mut from_text);
            let value_result = b.parse_json(&value, 0, &mut from_value);
            proptest::prop_assert_eq!(text_result, value_result, "{}", text);
            proptest::prop_assert_eq!(from_text, from_value, "{}", text);
            proptest::prop_assert_eq!(a.bad.total(), b.bad.total());
        }
    }

    /// A multi-valued field as a JSON array is its items joined by the separator: the same
    /// tokens as the line's field, and the same length limit on the whole field.
    #[test]
    fn json_arrays_are_the_joined_field() {
        let spec: FeatureMapSpec =
            toml::from_str(include_str!("testdata/every_kind.toml")).unwrap();
        let mut p = Parser::new(&spec.compile(&Schema::criteo()).unwrap());
        let tsv = |p: &mut Parser, c4: &str| {
            let mut batch = EventBatch::new(39);
            let mut line = b"0".to_vec();
            line.extend(std::iter::repeat_n(b'\t', 17));
            line.extend_from_slice(c4.as_bytes());
            line.extend(std::iter::repeat_n(b'\t', 22));
            p.parse_record(&line, 0, &mut batch).unwrap();
            batch
        };
        let json = |p: &mut Parser, c4: serde_json::Value| {
            let mut batch = EventBatch::new(39);
            p.parse_json(&serde_json::json!({ "C4": c4 }), 0, &mut batch)
                .unwrap();
            batch
        };
        let want = tsv(&mut p, "a|b||c");
        assert_eq!(want.tokens.len(), 3);
        assert_eq!(json(&mut p, serde_json::json!(["a|b", "", "c"])), want);
        assert_eq!(json(&mut p, serde_json::json!(["a", "b", "c"])), want);
        let long = tsv(&mut p, "aaaaaaaa|bbbbbbbbb");
        assert_eq!(long.values[16], Value::Bad(BadKind::Overlong));
        assert_eq!(
            json(&mut p, serde_json::json!(["aaaaaaaa", "bbbbbbbbb"])),
            long
        );
        let mut batch = EventBatch::new(39);
        assert_eq!(
            p.parse_json(
                &serde_json::json!({"C1": "x", "C4": ["a", 1]}),
                0,
                &mut batch
            ),
            Err(DecodeError::WrongType("C4".into()))
        );
        assert_eq!(batch, EventBatch::new(39));
    }
}
