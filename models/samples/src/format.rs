//! The Arrow shape of sample rows: one row per transformed event, with its epoch, event time,
//! FeatureMap version and label, and its entries as three lists sharing one offsets buffer:
//! `fields` (the layout feature each entry belongs to), `ids` (the entry's id within that
//! feature: its slot less the feature's first slot) and `values`. A deep model looks up
//! `ids` in the embedding of `fields`; the schema's metadata names the features, so a reader
//! such as PyArrow knows them without the job's spec.
//!
//! | column | Arrow type |
//! | --- | --- |
//! | `epoch` | uint64 |
//! | `event_time` | timestamp (ms, UTC), null when the source gave none |
//! | `featuremap_version` | uint64 |
//! | `label` | bool |
//! | `fields` | list of uint16 |
//! | `ids` | list of uint32 |
//! | `values` | list of float32 |
//!
//! The bias slot that every row of a layout with a bias holds is not stored.

use crate::error::SampleError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, Float32Array, ListArray, RecordBatch,
    TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use millrace_events::fmap::arrow::list_column;
use millrace_events::fmap::Layout;
use millrace_events::CsrBatch;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Schema metadata key of the features, a JSON array of [`FieldInfo`].
pub const FIELDS_KEY: &str = "millrace.fields";

/// One feature of the layout, as the sample files name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldInfo {
    /// The feature's name (`kind:field`, as in the layout).
    pub name: String,
    /// Its first slot in a row.
    pub offset: u32,
    /// Its slots: the ids an entry of it may have are `0..width`.
    pub width: u32,
}

/// The features of a layout, in row order: how a slot maps to a field and an id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleFields {
    fields: Vec<FieldInfo>,
}

impl SampleFields {
    /// The features of `layout`.
    ///
    /// # Errors
    ///
    /// [`SampleError::Layout`] when the layout has more features than a `uint16` numbers.
    pub fn of_layout(layout: &Layout) -> Result<Self, SampleError> {
        if layout.features.len() > usize::from(u16::MAX) {
            return Err(SampleError::Layout(format!(
                "{} features, more than the {} a sample file numbers",
                layout.features.len(),
                u16::MAX
            )));
        }
        Ok(SampleFields {
            fields: layout
                .features
                .iter()
                .map(|f| FieldInfo {
                    name: f.name.clone(),
                    offset: f.offset,
                    width: f.width,
                })
                .collect(),
        })
    }

    /// Features given one by one, in row order.
    ///
    /// # Errors
    ///
    /// [`SampleError::Layout`] naming every problem: more than a `uint16` numbers, a feature
    /// without slots, or one that does not start after the one before it ends.
    pub fn new(fields: Vec<FieldInfo>) -> Result<Self, SampleError> {
        let mut problems = Vec::new();
        if fields.len() > usize::from(u16::MAX) {
            problems.push(format!("{} features, more than {}", fields.len(), u16::MAX));
        }
        for f in fields.iter().filter(|f| f.width == 0) {
            problems.push(format!("`{}` has no slots", f.name));
        }
        for pair in fields.windows(2) {
            if u64::from(pair[1].offset) < u64::from(pair[0].offset) + u64::from(pair[0].width) {
                problems.push(format!(
                    "`{}` starts inside `{}`",
                    pair[1].name, pair[0].name
                ));
            }
        }
        if problems.is_empty() {
            Ok(SampleFields { fields })
        } else {
            Err(SampleError::Layout(problems.join("; ")))
        }
    }

    /// The features, in row order.
    pub fn fields(&self) -> &[FieldInfo] {
        &self.fields
    }

    /// The feature and id of `slot`; `None` for a slot before the first feature (the bias)
    /// or past the last.
    pub fn locate(&self, slot: u32) -> Option<(u16, u32)> {
        let at = self
            .fields
            .partition_point(|f| f.offset <= slot)
            .checked_sub(1)?;
        let field = &self.fields[at];
        let id = slot - field.offset;
        (id < field.width).then_some((at as u16, id))
    }

    /// The slot of the entry of feature `field` with `id`, as the FeatureMap's rows number it;
    /// `None` for a feature it does not have.
    pub fn slot(&self, field: u16, id: u32) -> Option<u32> {
        self.fields
            .get(usize::from(field))
            .and_then(|f| f.offset.checked_add(id))
    }

    /// The Arrow schema of sample rows of these features.
    pub fn schema(&self) -> SchemaRef {
        let metadata = HashMap::from([(
            FIELDS_KEY.to_owned(),
            serde_json::to_string(&self.fields).unwrap_or_default(),
        )]);
        Arc::new(Schema::new_with_metadata(
            vec![
                Field::new("epoch", DataType::UInt64, false),
                Field::new(
                    "event_time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                Field::new("featuremap_version", DataType::UInt64, false),
                Field::new("label", DataType::Boolean, false),
                Field::new_list("fields", item(DataType::UInt16), false),
                Field::new_list("ids", item(DataType::UInt32), false),
                Field::new_list("values", item(DataType::Float32), false),
            ],
            metadata,
        ))
    }

    /// The features a sample file's schema names.
    ///
    /// # Errors
    ///
    /// [`SampleError::Format`] when the metadata is missing or not such a list.
    pub fn of_schema(schema: &Schema) -> Result<Self, SampleError> {
        let json = schema
            .metadata()
            .get(FIELDS_KEY)
            .ok_or_else(|| SampleError::Format(format!("no `{FIELDS_KEY}` in the schema")))?;
        let fields = serde_json::from_str(json)
            .map_err(|e| SampleError::Format(format!("`{FIELDS_KEY}` is not a field list: {e}")))?;
        Self::new(fields).map_err(|e| SampleError::Format(format!("`{FIELDS_KEY}`: {e}")))
    }
}

fn item(data_type: DataType) -> Field {
    Field::new_list_field(data_type, false)
}

/// Sample rows in columns: what a sample file holds, read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleRows {
    /// Each row's epoch.
    pub epochs: Vec<u64>,
    /// Each row's event time in milliseconds since the Unix epoch, if known.
    pub event_times: Vec<Option<i64>>,
    /// The FeatureMap version each row was made with.
    pub versions: Vec<u64>,
    /// Each row's label.
    pub labels: Vec<bool>,
    /// Row `i`'s entries are `offsets[i]..offsets[i + 1]`; starts with 0.
    pub offsets: Vec<u32>,
    /// Each entry's feature.
    pub fields: Vec<u16>,
    /// Each entry's id within its feature.
    pub ids: Vec<u32>,
    /// Each entry's value.
    pub values: Vec<f32>,
}

impl SampleRows {
    /// No rows.
    pub fn new() -> Self {
        SampleRows {
            offsets: vec![0],
            ..SampleRows::default()
        }
    }

    /// The rows of `batch`, transformed in `epoch`, with their entries located in `fields`.
    ///
    /// # Errors
    ///
    /// [`SampleError::Rows`] when the batch is inconsistent (offsets, lengths) or has a slot
    /// that no feature holds (other than the bias).
    pub fn of_batch(
        fields: &SampleFields,
        epoch: u64,
        batch: &CsrBatch,
    ) -> Result<Self, SampleError> {
        let mut out = SampleRows::new();
        out.push_batch(fields, epoch, batch)?;
        Ok(out)
    }

    /// Appends the rows of `batch`, as [`SampleRows::of_batch`] reads them, without a copy
    /// in between; on an error nothing is appended.
    ///
    /// # Errors
    ///
    /// As [`SampleRows::of_batch`].
    pub fn push_batch(
        &mut self,
        fields: &SampleFields,
        epoch: u64,
        batch: &CsrBatch,
    ) -> Result<(), SampleError> {
        let rows = batch.len();
        if batch.indptr.len() != rows + 1
            || batch.indptr.first() != Some(&0)
            || batch.indptr.windows(2).any(|w| w[0] > w[1])
            || batch.indptr.last().map(|&e| e as usize) != Some(batch.indices.len())
            || batch.values.len() != batch.indices.len()
        {
            return Err(SampleError::Rows(format!(
                "{rows} rows, {} offsets, {} indices and {} values do not fit together",
                batch.indptr.len(),
                batch.indices.len(),
                batch.values.len()
            )));
        }
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let (kept_rows, kept_entries) = (self.len(), self.ids.len());
        let first = fields.fields.first().map_or(u32::MAX, |f| f.offset);
        for i in 0..rows {
            let (indices, values) = batch.row(i);
            for (&slot, &value) in indices.iter().zip(values) {
                match fields.locate(slot) {
                    Some((field, id)) => {
                        self.fields.push(field);
                        self.ids.push(id);
                        self.values.push(value);
                    }
                    None if slot < first => {}
                    None => {
                        self.offsets.truncate(kept_rows + 1);
                        self.fields.truncate(kept_entries);
                        self.ids.truncate(kept_entries);
                        self.values.truncate(kept_entries);
                        return Err(SampleError::Rows(format!(
                            "slot {slot} is in no feature of the layout"
                        )));
                    }
                }
            }
            self.offsets.push(self.ids.len() as u32);
        }
        self.epochs.extend(std::iter::repeat_n(epoch, rows));
        self.event_times
            .extend((0..rows).map(|i| batch.times.get(i).and_then(|&t| i64::try_from(t).ok())));
        self.versions
            .extend(std::iter::repeat_n(batch.version, rows));
        self.labels.extend_from_slice(&batch.labels);
        Ok(())
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`'s entries: features, ids and values.
    pub fn entries(&self, i: usize) -> (&[u16], &[u32], &[f32]) {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        (&self.fields[a..b], &self.ids[a..b], &self.values[a..b])
    }

    /// Rows `rows` (in that order) as rows of their own.
    ///
    /// # Panics
    ///
    /// If a row is not below [`SampleRows::len`].
    pub fn select(&self, rows: &[usize]) -> SampleRows {
        let mut out = SampleRows::new();
        for &i in rows {
            let (fields, ids, values) = self.entries(i);
            out.epochs.push(self.epochs[i]);
            out.event_times.push(self.event_times[i]);
            out.versions.push(self.versions[i]);
            out.labels.push(self.labels[i]);
            out.fields.extend_from_slice(fields);
            out.ids.extend_from_slice(ids);
            out.values.extend_from_slice(values);
            out.offsets.push(out.ids.len() as u32);
        }
        out
    }

    /// Appends `other`'s rows.
    pub fn extend(&mut self, other: &SampleRows) {
        let base = self.offsets.last().copied().unwrap_or(0);
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.epochs.extend_from_slice(&other.epochs);
        self.event_times.extend_from_slice(&other.event_times);
        self.versions.extend_from_slice(&other.versions);
        self.labels.extend_from_slice(&other.labels);
        self.offsets
            .extend(other.offsets.iter().skip(1).map(|&o| base + o));
        self.fields.extend_from_slice(&other.fields);
        self.ids.extend_from_slice(&other.ids);
        self.values.extend_from_slice(&other.values);
    }

    /// The rows as a `RecordBatch` of `fields`' schema.
    ///
    /// # Errors
    ///
    /// [`SampleError::Format`] when the rows hold more entries than Arrow's 32-bit offsets.
    pub fn to_record_batch(&self, fields: &SampleFields) -> Result<RecordBatch, SampleError> {
        let offsets: Vec<i32> = self
            .offsets
            .iter()
            .map(|&o| i32::try_from(o))
            .collect::<Result<_, _>>()
            .map_err(|_| SampleError::Format("more entries than 32-bit offsets hold".into()))?;
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let list = |data_type: DataType, values: ArrayRef| -> Result<ArrayRef, SampleError> {
            Ok(Arc::new(ListArray::try_new(
                Arc::new(item(data_type)),
                offsets.clone(),
                values,
                None,
            )?))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.epochs.clone())),
            Arc::new(
                TimestampMillisecondArray::from(self.event_times.clone()).with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from(self.versions.clone())),
            Arc::new(BooleanArray::from(self.labels.clone())),
            list(
                DataType::UInt16,
                Arc::new(UInt16Array::from(self.fields.clone())),
            )?,
            list(
                DataType::UInt32,
                Arc::new(UInt32Array::from(self.ids.clone())),
            )?,
            list(
                DataType::Float32,
                Arc::new(Float32Array::from(self.values.clone())),
            )?,
        ];
        Ok(RecordBatch::try_new(fields.schema(), columns)?)
    }

    /// The rows of a `RecordBatch` of the [module](self)'s shape, checked against `fields`.
    ///
    /// # Errors
    ///
    /// [`SampleError::Format`] naming every problem: a missing or mistyped column, nulls
    /// where there may be none, lists of different lengths on a row, an entry of a feature
    /// the file does not have or an id outside its feature's width.
    pub fn of_record_batch(
        batch: &RecordBatch,
        fields: &SampleFields,
    ) -> Result<Self, SampleError> {
        let mut problems = Vec::new();
        let epochs = primitive::<UInt64Type>(batch, "epoch", &mut problems);
        let versions = primitive::<UInt64Type>(batch, "featuremap_version", &mut problems);
        let event_times = batch
            .column_by_name("event_time")
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
            .map(|a| a.iter().collect::<Vec<_>>());
        if event_times.is_none() {
            problems.push("column `event_time` (timestamp[ms]) is missing".to_owned());
        }
        let labels = batch
            .column_by_name("label")
            .and_then(|c| c.as_boolean_opt());
        if labels.is_none() {
            problems.push("column `label` (bool) is missing".to_owned());
        }
        if labels.is_some_and(|l| l.null_count() > 0) {
            problems.push("`label` has nulls".to_owned());
        }
        let field_list = list_column::<UInt16Type>(batch, "fields", &mut problems);
        let ids = list_column::<UInt32Type>(batch, "ids", &mut problems);
        let values = list_column::<Float32Type>(batch, "values", &mut problems);
        let (
            Some(epochs),
            Some(versions),
            Some(event_times),
            Some(labels),
            Some(field_list),
            Some(ids),
            Some(values),
        ) = (
            epochs,
            versions,
            event_times,
            labels,
            field_list,
            ids,
            values,
        )
        else {
            return Err(SampleError::Format(problems.join("; ")));
        };
        if field_list.0 != ids.0 || ids.0 != values.0 {
            problems.push("`fields`, `ids` and `values` differ in length on some row".to_owned());
        }
        for (&field, &id) in field_list.1.iter().zip(&ids.1) {
            match fields.fields.get(usize::from(field)) {
                None => {
                    problems.push(format!(
                        "an entry of feature {field}, which the file does not name"
                    ));
                    break;
                }
                Some(f) if id >= f.width => {
                    problems.push(format!(
                        "id {id} is outside feature `{}` of width {}",
                        f.name, f.width
                    ));
                    break;
                }
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(SampleError::Format(problems.join("; ")));
        }
        Ok(SampleRows {
            epochs,
            event_times,
            versions,
            labels: labels.iter().map(|l| l.unwrap_or(false)).collect(),
            offsets: ids.0,
            fields: field_list.1,
            ids: ids.1,
            values: values.1,
        })
    }
}

/// The values of a primitive column without nulls.
fn primitive<T: ArrowPrimitiveType>(
    batch: &RecordBatch,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<T::Native>> {
    let Some(array) = batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
    else {
        problems.push(format!("column `{name}` ({}) is missing", T::DATA_TYPE));
        return None;
    };
    if array.null_count() > 0 {
        problems.push(format!("`{name}` has nulls"));
        return None;
    }
    Some(array.values().to_vec())
}
