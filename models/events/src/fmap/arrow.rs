//! Sparse rows as Arrow: a [`CsrBatch`] is a `RecordBatch` of three columns, `label`
//! (boolean), `indices` (list of uint32) and `values` (list of float32), the two lists sharing
//! one offsets buffer (the CSR `indptr`). The FeatureMap version and the row dimension travel
//! in the schema's metadata. Indices and values are moved into Arrow buffers without a copy.
//!
//! Behind the `arrow` feature, so that crates which never hand rows to Arrow do not build it.

use super::map::CsrBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, ListArray, RecordBatch, UInt32Array,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

/// Schema metadata key of the FeatureMap version.
pub const VERSION_KEY: &str = "millrace.featuremap_version";
/// Schema metadata key of the row dimension.
pub const DIMENSION_KEY: &str = "millrace.dimension";

/// The schema of sparse rows of FeatureMap `version` with `dimension` slots.
pub fn rows_schema(version: u64, dimension: usize) -> SchemaRef {
    let metadata = HashMap::from([
        (VERSION_KEY.to_owned(), version.to_string()),
        (DIMENSION_KEY.to_owned(), dimension.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("label", DataType::Boolean, false),
            Field::new_list("indices", item(DataType::UInt32), false),
            Field::new_list("values", item(DataType::Float32), false),
        ],
        metadata,
    ))
}

fn item(data_type: DataType) -> Field {
    Field::new_list_field(data_type, false)
}

fn invalid(message: String) -> ArrowError {
    ArrowError::InvalidArgumentError(message)
}

impl CsrBatch {
    /// The rows as an Arrow `RecordBatch` (see the [module](self)); indices and values move
    /// without a copy.
    ///
    /// # Errors
    ///
    /// `InvalidArgumentError` when the batch is inconsistent (`indptr` not starting at 0, not
    /// increasing, not ending at the number of indices, or not one longer than the labels;
    /// indices and values of different lengths) or has more than `i32::MAX` entries.
    pub fn into_arrow(self) -> Result<RecordBatch, ArrowError> {
        let rows = self.labels.len();
        let entries = self.indices.len();
        let mut problems = Vec::new();
        if self.indptr.len() != rows + 1 {
            problems.push(format!(
                "{} offsets for {rows} rows (want one more than rows)",
                self.indptr.len()
            ));
        }
        if self.indptr.first() != Some(&0) {
            problems.push("the first offset is not 0".to_owned());
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1]) {
            problems.push("offsets decrease".to_owned());
        }
        if self.indptr.last().map(|&e| e as usize) != Some(entries) {
            problems.push(format!("the last offset is not the {entries} indices"));
        }
        if self.values.len() != entries {
            problems.push(format!(
                "{entries} indices but {} values",
                self.values.len()
            ));
        }
        let offsets: Result<Vec<i32>, _> = self.indptr.iter().map(|&o| i32::try_from(o)).collect();
        let Ok(offsets) = offsets else {
            problems.push(format!(
                "{entries} entries do not fit Arrow's 32-bit offsets"
            ));
            return Err(invalid(problems.join("; ")));
        };
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let indices = UInt32Array::new(ScalarBuffer::from(self.indices), None);
        let values = Float32Array::new(ScalarBuffer::from(self.values), None);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(self.labels)),
            Arc::new(ListArray::try_new(
                Arc::new(item(DataType::UInt32)),
                offsets.clone(),
                Arc::new(indices),
                None,
            )?),
            Arc::new(ListArray::try_new(
                Arc::new(item(DataType::Float32)),
                offsets,
                Arc::new(values),
                None,
            )?),
        ];
        RecordBatch::try_new(rows_schema(self.version, self.dimension), columns)
    }

    /// Sparse rows from a `RecordBatch` of the [module](self)'s shape (for example one read back
    /// from an Arrow IPC file); slices and extra columns are fine.
    ///
    /// # Errors
    ///
    /// `SchemaError` or `InvalidArgumentError` naming every problem: a missing or mistyped
    /// column, missing or unparsable metadata, nulls, lists of different lengths per row, or an
    /// index outside the dimension.
    pub fn from_arrow(batch: &RecordBatch) -> Result<CsrBatch, ArrowError> {
        let mut problems = Vec::new();
        let metadata = batch.schema_ref().metadata();
        let mut number = |key: &str| -> Option<u64> {
            match metadata.get(key).map(|v| v.parse::<u64>()) {
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    problems.push(format!("metadata `{key}` is not a whole number"));
                    None
                }
                None => {
                    problems.push(format!("metadata `{key}` is missing"));
                    None
                }
            }
        };
        let version = number(VERSION_KEY);
        let dimension = number(DIMENSION_KEY);
        let labels = batch
            .column_by_name("label")
            .and_then(|c| c.as_boolean_opt());
        let indices = list_column::<UInt32Type>(batch, "indices", &mut problems);
        let values = list_column::<Float32Type>(batch, "values", &mut problems);
        match labels {
            None => problems.push("column `label` (boolean) is missing".to_owned()),
            Some(l) if l.null_count() > 0 => problems.push("`label` has nulls".to_owned()),
            Some(_) => {}
        }
        let (Some(version), Some(dimension), Some(labels), Some(indices), Some(values)) =
            (version, dimension, labels, indices, values)
        else {
            return Err(ArrowError::SchemaError(problems.join("; ")));
        };
        if indices.0 != values.0 {
            problems.push("`indices` and `values` differ in length on some row".to_owned());
        }
        if let Some(&i) = indices.1.iter().find(|&&i| u64::from(i) >= dimension) {
            problems.push(format!("index {i} is outside the dimension {dimension}"));
        }
        let dimension = usize::try_from(dimension)
            .map_err(|_| invalid(format!("dimension {dimension} does not fit this machine")))?;
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(CsrBatch {
            version,
            dimension,
            indptr: indices.0,
            indices: indices.1,
            values: values.1,
            labels: labels.iter().map(|l| l.unwrap_or(false)).collect(),
            sources: Vec::new(),
            times: Vec::new(),
        })
    }
}

/// The offsets (from 0) and items of the list column `name` of primitive items without nulls,
/// or `None` with the problem added to `problems` (missing, mistyped, nulls, offsets that do
/// not fit its items). For the readers of Arrow rows here and in the sample buffer.
pub fn list_column<T: arrow_array::ArrowPrimitiveType>(
    batch: &RecordBatch,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<(Vec<u32>, Vec<T::Native>)> {
    let Some(list) = batch
        .column_by_name(name)
        .and_then(|c| c.as_list_opt::<i32>())
    else {
        problems.push(format!(
            "column `{name}` (list of {}) is missing",
            T::DATA_TYPE
        ));
        return None;
    };
    let Some(items) = list.values().as_primitive_opt::<T>() else {
        problems.push(format!("`{name}` items are not {}", T::DATA_TYPE));
        return None;
    };
    if list.null_count() > 0 || items.null_count() > 0 {
        problems.push(format!("`{name}` has nulls"));
        return None;
    }
    let offsets = list.value_offsets();
    let start = offsets.first().copied().unwrap_or(0);
    let end = offsets.last().copied().unwrap_or(0);
    let (Ok(from), Ok(to)) = (usize::try_from(start), usize::try_from(end)) else {
        problems.push(format!("`{name}` has negative offsets"));
        return None;
    };
    let Some(items) = items.values().get(from..to) else {
        problems.push(format!("`{name}` offsets run past its items"));
        return None;
    };
    Some((
        offsets.iter().map(|&o| (o - start) as u32).collect(),
        items.to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn csr(rows: &[Vec<(u32, f32)>], labels: &[bool], dimension: usize) -> CsrBatch {
        let mut batch = CsrBatch::new(7, dimension);
        for (row, &label) in rows.iter().zip(labels) {
            for &(i, x) in row {
                batch.indices.push(i);
                batch.values.push(x);
            }
            batch.indptr.push(batch.indices.len() as u32);
            batch.labels.push(label);
        }
        batch
    }

    proptest! {
        /// Any batch goes to Arrow and back unchanged, whole or as any slice of its rows.
        #[test]
        fn round_trip(
            rows in proptest::collection::vec(
                proptest::collection::vec((0u32..1000, -1e6f32..1e6), 0..12),
                0..40,
            ),
            labels in proptest::collection::vec(any::<bool>(), 40),
            cut in (0usize..40, 0usize..40),
        ) {
            let batch = csr(&rows, &labels[..rows.len()], 1000);
            let arrow = batch.clone().into_arrow().unwrap();
            prop_assert_eq!(arrow.num_rows(), rows.len());
            prop_assert_eq!(&CsrBatch::from_arrow(&arrow).unwrap(), &batch);
            let (a, b) = (cut.0.min(rows.len()), cut.1.min(rows.len()));
            let (start, end) = (a.min(b), a.max(b));
            let sliced = CsrBatch::from_arrow(&arrow.slice(start, end - start)).unwrap();
            let expected = csr(&rows[start..end], &labels[start..end], 1000);
            prop_assert_eq!(sliced, expected);
        }
    }

    #[test]
    fn inconsistent_batches_are_errors() {
        let mut batch = csr(&[vec![(1, 1.0)], vec![(2, 2.0)]], &[true, false], 10);
        batch.values.pop();
        batch.indptr[1] = 3;
        let error = batch.into_arrow().unwrap_err().to_string();
        assert!(error.contains("offsets decrease"), "{error}");
        assert!(error.contains("2 indices but 1 values"), "{error}");
    }

    #[test]
    fn foreign_batches_are_errors_naming_every_problem() {
        let good = csr(&[vec![(1, 1.0), (9, 0.5)]], &[true], 10)
            .into_arrow()
            .unwrap();
        // No metadata, and `values` of the wrong item type.
        let schema = Arc::new(Schema::new(vec![
            Field::new("label", DataType::Boolean, false),
            Field::new_list("indices", item(DataType::UInt32), false),
            Field::new_list("values", item(DataType::UInt32), false),
        ]));
        let columns = vec![
            good.column(0).clone(),
            good.column(1).clone(),
            good.column(1).clone(),
        ];
        let foreign = RecordBatch::try_new(schema, columns).unwrap();
        let error = CsrBatch::from_arrow(&foreign).unwrap_err().to_string();
        for part in [VERSION_KEY, DIMENSION_KEY, "`values` items are not Float32"] {
            assert!(error.contains(part), "{error}");
        }
        // An index outside a smaller dimension.
        let mut metadata = good.schema_ref().metadata().clone();
        metadata.insert(DIMENSION_KEY.to_owned(), "5".to_owned());
        let schema = Schema::new_with_metadata(good.schema_ref().fields().clone(), metadata);
        let narrow = RecordBatch::try_new(Arc::new(schema), good.columns().to_vec()).unwrap();
        let error = CsrBatch::from_arrow(&narrow).unwrap_err().to_string();
        assert!(
            error.contains("index 9 is outside the dimension 5"),
            "{error}"
        );
    }
}
