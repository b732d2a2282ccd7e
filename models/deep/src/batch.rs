//! Sample rows as the tensors a deep model reads: per entry its global slot (the feature's first
//! slot plus the entry's id), its value, its row, and its cell (row × fields + field), so that a
//! model sums the entries of one field of one row into that field's embedding.

use crate::error::DeepError;
use millrace_samples::{SampleFields, SampleRows};
use tch::{Device, Kind, Tensor};

/// A batch of rows on a device.
#[derive(Debug)]
pub struct Batch {
    /// Rows.
    pub rows: usize,
    /// Per entry: its slot in the layout, `i64`.
    pub slots: Tensor,
    /// The same slots in host memory (what a host-resident table gathers by).
    pub entry_slots: Vec<i64>,
    /// Per entry: its value, `f32`.
    pub values: Tensor,
    /// Per entry: its row, `i64`.
    pub row: Tensor,
    /// Per entry: `row * fields + field`, `i64`.
    pub cell: Tensor,
    /// Per row: 1 for a click, else 0, `f32`.
    pub labels: Tensor,
}

impl Batch {
    /// Rows `range` of `rows`, of a file naming `fields`, on `device`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Rows`] when an entry names a feature `fields` does not have, or an id
    /// outside its width.
    pub fn of_rows(
        fields: &SampleFields,
        rows: &SampleRows,
        range: std::ops::Range<usize>,
        device: Device,
    ) -> Result<Self, DeepError> {
        let layout = fields.fields();
        let per_row = layout.len() as i64;
        let (from, to) = (
            rows.offsets[range.start] as usize,
            rows.offsets[range.end] as usize,
        );
        let mut slots = Vec::with_capacity(to - from);
        let mut row = Vec::with_capacity(to - from);
        let mut cell = Vec::with_capacity(to - from);
        for (r, i) in range.clone().enumerate() {
            let (fs, ids, _) = rows.entries(i);
            for (&f, &id) in fs.iter().zip(ids) {
                let field = layout
                    .get(usize::from(f))
                    .filter(|field| id < field.width)
                    .ok_or_else(|| {
                        DeepError::Rows(format!(
                            "entry of feature {f} with id {id} is outside the layout"
                        ))
                    })?;
                slots.push(i64::from(field.offset) + i64::from(id));
                row.push(r as i64);
                cell.push(r as i64 * per_row + i64::from(f));
            }
        }
        let labels: Vec<f32> = rows.labels[range.clone()]
            .iter()
            .map(|&l| f32::from(u8::from(l)))
            .collect();
        Ok(Batch {
            rows: range.len(),
            slots: Tensor::from_slice(&slots).to(device),
            entry_slots: slots,
            values: Tensor::from_slice(&rows.values[from..to]).to(device),
            row: Tensor::from_slice(&row).to(device),
            cell: Tensor::from_slice(&cell).to(device),
            labels: Tensor::from_slice(&labels).to_kind(Kind::Float).to(device),
        })
    }
}
