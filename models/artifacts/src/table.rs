//! Copy-on-write parameter tables for serving.
//!
//! A served model's weights (or factors) are cut into chunks of [`CHUNK_ROWS`] rows. A chunk is a
//! dense block shared by reference between model versions, plus a sorted *patch* of the values
//! that differ from it. Loading a new version compares it, chunk by chunk as it streams from
//! disk, with the version being served ([`TableBuilder`]): an unchanged chunk is shared, a chunk
//! with few changes shares the old block and carries them as a patch, and only chunks with many
//! changes get a new block. The sparse updates that online training publishes every epoch thus
//! cost memory in proportion to what changed, not a second copy of the model, and in-flight
//! requests keep the old version alive only through the chunks it does not share.
//!
//! At most [`TableBuilder::new`]'s `new_blocks` chunks get a new block per load (those with the
//! largest patches); the rest keep patches over the limit until a later load, which bounds how
//! much one swap adds to the resident memory.

use std::sync::Arc;

/// Rows per chunk.
pub const CHUNK_ROWS: usize = 1 << 14;

/// A patch is at most this fraction (1/`PATCH_DIVISOR`) of its chunk's values before the chunk
/// should get a new block: a patch entry takes twice the bytes of a dense value.
const PATCH_DIVISOR: usize = 8;

/// A chunk's dense values: `f32`, q2.13 fixed point ([`crate::fixed`]) at half the bytes, or
/// 8-bit codes with a scale per group ([`crate::int8`]) at about a quarter.
#[derive(Clone, Debug)]
enum Block {
    Float(Arc<[f32]>),
    Fixed(Arc<[i16]>),
    Int8 {
        codes: Arc<[i8]>,
        scales: Arc<[f32]>,
    },
}

impl Block {
    fn len(&self) -> usize {
        match self {
            Block::Float(values) => values.len(),
            Block::Fixed(codes) => codes.len(),
            Block::Int8 { codes, .. } => codes.len(),
        }
    }

    #[inline]
    fn at(&self, offset: usize) -> f32 {
        match self {
            Block::Float(values) => values[offset],
            Block::Fixed(codes) => crate::fixed::decode(codes[offset]),
            Block::Int8 { codes, scales } => {
                crate::int8::decode(codes[offset], scales[offset / crate::int8::GROUP])
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Block::Float(values) => std::mem::size_of_val(&**values),
            Block::Fixed(codes) => std::mem::size_of_val(&**codes),
            Block::Int8 { codes, scales } => {
                std::mem::size_of_val(&**codes) + std::mem::size_of_val(&**scales)
            }
        }
    }

    fn same(&self, other: &Block) -> bool {
        match (self, other) {
            (Block::Float(a), Block::Float(b)) => Arc::ptr_eq(a, b),
            (Block::Fixed(a), Block::Fixed(b)) => Arc::ptr_eq(a, b),
            (Block::Int8 { codes: a, .. }, Block::Int8 { codes: b, .. }) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct Chunk {
    block: Block,
    /// `(offset in the chunk, value)` of the values that differ from `block`, by offset.
    patch: Arc<[(u32, f32)]>,
}

impl Chunk {
    fn dense(values: &[f32]) -> Self {
        Chunk {
            block: Block::Float(values.into()),
            patch: Arc::new([]),
        }
    }

    /// Every value, the patch laid over the block.
    fn values(&self) -> Vec<f32> {
        let mut values: Vec<f32> = (0..self.block.len()).map(|k| self.block.at(k)).collect();
        for &(offset, value) in self.patch.iter() {
            values[offset as usize] = value;
        }
        values
    }

    #[inline]
    fn get(&self, offset: usize) -> f32 {
        if !self.patch.is_empty() {
            if let Ok(k) = self
                .patch
                .binary_search_by_key(&(offset as u32), |&(o, _)| o)
            {
                return self.patch[k].1;
            }
        }
        self.block.at(offset)
    }
}

/// A read-only table of `rows × width` values in shared chunks (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Table {
    width: usize,
    rows: usize,
    chunks: Vec<Chunk>,
}

/// Blocks that are not the chunks of a table ([`Table::from_blocks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlocksError {
    /// A width of zero.
    #[error("rows of no values")]
    NoWidth,
    /// Another number of blocks than the rows take.
    #[error("{blocks} blocks for {rows} rows (want {want})")]
    Count {
        /// Blocks given.
        blocks: usize,
        /// Rows of the table.
        rows: usize,
        /// Blocks those rows take.
        want: usize,
    },
    /// A block of another length than its rows take.
    #[error("block {block} holds {values} values, not {want}")]
    Length {
        /// The block's position.
        block: usize,
        /// Values it holds.
        values: usize,
        /// Values its rows take.
        want: usize,
    },
}

/// What a table holds in memory, and how much of it another table shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableMemory {
    /// Bytes of the dense blocks.
    pub block_bytes: usize,
    /// Bytes of the patches.
    pub patch_bytes: usize,
    /// Of [`TableMemory::block_bytes`] and [`TableMemory::patch_bytes`], the bytes held in
    /// blocks and patches shared with the other table.
    pub shared_bytes: usize,
}

impl Table {
    /// A table of `values`, `width` per row, all in fresh blocks.
    ///
    /// # Panics
    ///
    /// If `width` is zero or does not divide `values.len()`.
    pub fn from_values(values: &[f32], width: usize) -> Self {
        assert!(
            width > 0 && values.len() % width == 0,
            "rows of {width} values"
        );
        Table {
            width,
            rows: values.len() / width,
            chunks: values
                .chunks(CHUNK_ROWS * width)
                .map(Chunk::dense)
                .collect(),
        }
    }

    /// A table of `rows × width` values from whole blocks of [`CHUNK_ROWS`] rows each (the
    /// last one shorter), shared as they are: a table built this way from blocks another table
    /// also holds shares their memory.
    ///
    /// # Errors
    ///
    /// [`BlocksError`] when `width` is zero, or the blocks are not the chunks of such a table.
    pub fn from_blocks(
        rows: usize,
        width: usize,
        blocks: Vec<Arc<[f32]>>,
    ) -> Result<Self, BlocksError> {
        if width == 0 {
            return Err(BlocksError::NoWidth);
        }
        let chunks = rows.div_ceil(CHUNK_ROWS);
        if blocks.len() != chunks {
            return Err(BlocksError::Count {
                blocks: blocks.len(),
                rows,
                want: chunks,
            });
        }
        for (i, block) in blocks.iter().enumerate() {
            let want = (rows - i * CHUNK_ROWS).min(CHUNK_ROWS) * width;
            if block.len() != want {
                return Err(BlocksError::Length {
                    block: i,
                    values: block.len(),
                    want,
                });
            }
        }
        Ok(Table {
            width,
            rows,
            chunks: blocks
                .into_iter()
                .map(|block| Chunk {
                    block: Block::Float(block),
                    patch: Arc::new([]),
                })
                .collect(),
        })
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Value `index` (row-major), `None` past the end.
    #[inline]
    pub fn get(&self, index: usize) -> Option<f32> {
        let chunk_len = CHUNK_ROWS * self.width;
        self.chunks
            .get(index / chunk_len)
            .filter(|_| index < self.rows * self.width)
            .map(|chunk| chunk.get(index % chunk_len))
    }

    /// Calls `f` with the values of `row`.
    ///
    /// # Panics
    ///
    /// If `row` is not below [`Table::rows`].
    #[inline]
    pub fn with_row<R>(&self, row: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        let chunk = &self.chunks[row / CHUNK_ROWS];
        let start = (row % CHUNK_ROWS) * self.width;
        if let (Block::Float(values), true) = (&chunk.block, chunk.patch.is_empty()) {
            return f(&values[start..start + self.width]);
        }
        let mut scratch = [0.0f32; 32];
        let mut heap = Vec::new();
        let values: &mut [f32] = if self.width <= scratch.len() {
            &mut scratch[..self.width]
        } else {
            heap.resize(self.width, 0.0);
            &mut heap
        };
        for (k, value) in values.iter_mut().enumerate() {
            *value = chunk.get(start + k);
        }
        f(values)
    }

    /// The row-major index of the first value that is NaN or infinite, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        let chunk_len = CHUNK_ROWS * self.width;
        self.chunks.iter().enumerate().find_map(|(c, chunk)| {
            let in_block = (0..chunk.block.len())
                .filter(|&o| {
                    chunk
                        .patch
                        .binary_search_by_key(&(o as u32), |&(p, _)| p)
                        .is_err()
                })
                .find(|&o| !chunk.block.at(o).is_finite());
            let in_patch = chunk
                .patch
                .iter()
                .find(|(_, v)| !v.is_finite())
                .map(|&(o, _)| o as usize);
            in_block
                .into_iter()
                .chain(in_patch)
                .min()
                .map(|o| c * chunk_len + o)
        })
    }

    /// The table in q2.13 fixed point (half the bytes), every value rounded by
    /// [`crate::fixed::Quantizer`] from `seed` in row-major order, as
    /// [`crate::fixed::quantize`] rounds the same values; with how many were clipped.
    pub fn to_q213(&self, seed: u64) -> (Table, usize) {
        let mut quantizer = crate::fixed::Quantizer::new(seed);
        let chunks = self
            .chunks
            .iter()
            .map(|chunk| {
                let codes: Arc<[i16]> = (0..chunk.block.len())
                    .map(|k| quantizer.encode(chunk.get(k)))
                    .collect();
                Chunk {
                    block: Block::Fixed(codes),
                    patch: Arc::new([]),
                }
            })
            .collect();
        let table = Table {
            width: self.width,
            rows: self.rows,
            chunks,
        };
        (table, quantizer.clipped)
    }

    /// The table in 8-bit codes with a scale per group of [`crate::int8::GROUP`] values (about a
    /// quarter of the bytes), rounded as [`crate::int8::quantize`] rounds the same values.
    pub fn to_int8(&self) -> Table {
        let chunks = self
            .chunks
            .iter()
            .map(|chunk| {
                let values: Vec<f32> = (0..chunk.block.len()).map(|k| chunk.get(k)).collect();
                let (codes, scales) = crate::int8::quantize(&values);
                Chunk {
                    block: Block::Int8 {
                        codes: codes.into(),
                        scales: scales.into(),
                    },
                    patch: Arc::new([]),
                }
            })
            .collect();
        Table {
            width: self.width,
            rows: self.rows,
            chunks,
        }
    }

    /// Every value, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        (0..self.rows * self.width)
            .map(|i| self.get(i).expect("in range"))
            .collect()
    }

    /// The table's memory, and what of it `other` shares.
    pub fn memory(&self, other: Option<&Table>) -> TableMemory {
        let mut memory = TableMemory::default();
        for (i, chunk) in self.chunks.iter().enumerate() {
            let block = chunk.block.bytes();
            let patch = std::mem::size_of_val(&*chunk.patch);
            memory.block_bytes += block;
            memory.patch_bytes += patch;
            if let Some(theirs) = other.and_then(|t| t.chunks.get(i)) {
                if chunk.block.same(&theirs.block) {
                    memory.shared_bytes += block;
                }
                if patch > 0 && Arc::ptr_eq(&chunk.patch, &theirs.patch) {
                    memory.shared_bytes += patch;
                }
            }
        }
        memory
    }
}

impl millrace_learners::fm::FactorRows for Table {
    #[inline]
    fn with_row<R>(&self, slot: usize, _k: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        Table::with_row(self, slot, f)
    }
}

/// A value that a table cannot hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("value {index} is not finite")]
pub struct NotFinite {
    /// The value's row-major index.
    pub index: usize,
}

/// Builds a [`Table`] chunk by chunk, sharing blocks with a base table (the version being
/// served) wherever the new values allow.
#[derive(Debug)]
pub struct TableBuilder<'a> {
    base: Option<&'a Table>,
    width: usize,
    rows: usize,
    new_blocks: usize,
    chunks: Vec<Chunk>,
}

impl<'a> TableBuilder<'a> {
    /// A builder of `rows × width` values that shares with `base` when it has the same shape,
    /// and gives at most `new_blocks` of the chunks that `base` also has a new block.
    ///
    /// # Panics
    ///
    /// If `width` is zero.
    pub fn new(rows: usize, width: usize, base: Option<&'a Table>, new_blocks: usize) -> Self {
        assert!(width > 0, "rows of at least one value");
        let base = base.filter(|b| b.rows == rows && b.width == width);
        TableBuilder {
            base,
            width,
            rows,
            new_blocks,
            chunks: Vec::with_capacity(rows.div_ceil(CHUNK_ROWS)),
        }
    }

    /// The number of values the next chunk takes (0 once the table is complete).
    pub fn next_len(&self) -> usize {
        let done = self.chunks.len() * CHUNK_ROWS;
        self.rows.saturating_sub(done).min(CHUNK_ROWS) * self.width
    }

    /// Takes the next chunk from the base as it is (its block and its patch), without its
    /// values: for a chunk known unchanged. False (and nothing added) when there is no base of
    /// this shape or the table is complete.
    pub fn keep(&mut self) -> bool {
        let Some(base) = self.base else {
            return false;
        };
        if self.next_len() == 0 {
            return false;
        }
        self.chunks.push(base.chunks[self.chunks.len()].clone());
        true
    }

    /// Adds the next chunk's values ([`TableBuilder::next_len`] of them).
    ///
    /// # Errors
    ///
    /// When a value is NaN or infinite.
    ///
    /// # Panics
    ///
    /// If `values` is not [`TableBuilder::next_len`] long.
    pub fn push(&mut self, values: &[f32]) -> Result<(), NotFinite> {
        assert_eq!(values.len(), self.next_len(), "a chunk's values");
        let start = self.chunks.len() * CHUNK_ROWS * self.width;
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(NotFinite { index: start + k });
        }
        let Some(old) = self.base.map(|b| &b.chunks[self.chunks.len()]) else {
            self.chunks.push(Chunk::dense(values));
            return Ok(());
        };
        let patch: Vec<(u32, f32)> = values
            .iter()
            .enumerate()
            .filter(|&(k, new)| new.to_bits() != old.block.at(k).to_bits())
            .map(|(k, &new)| (k as u32, new))
            .collect();
        let same_patch = patch.len() == old.patch.len()
            && patch
                .iter()
                .zip(old.patch.iter())
                .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits());
        self.chunks.push(Chunk {
            block: old.block.clone(),
            patch: if same_patch {
                old.patch.clone()
            } else {
                patch.into()
            },
        });
        Ok(())
    }

    /// The table, once every chunk is in; the chunks whose patches outgrew the limit, largest
    /// first and at most `new_blocks` of them, get a new block. `rest` is called after each new
    /// block with the time it took, so that a paced load can rest between them.
    ///
    /// # Panics
    ///
    /// If a chunk is missing.
    pub fn finish(mut self, mut rest: impl FnMut(std::time::Duration)) -> Table {
        assert_eq!(self.next_len(), 0, "every chunk pushed");
        let mut oversized: Vec<usize> = (0..self.chunks.len())
            .filter(|&i| self.chunks[i].patch.len() > self.chunks[i].block.len() / PATCH_DIVISOR)
            .collect();
        oversized.sort_by_key(|&i| std::cmp::Reverse(self.chunks[i].patch.len()));
        for &i in oversized.iter().take(self.new_blocks) {
            let started = std::time::Instant::now();
            self.chunks[i] = Chunk::dense(&self.chunks[i].values());
            rest(started.elapsed());
        }
        Table {
            width: self.width,
            rows: self.rows,
            chunks: self.chunks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(values: &[f32], width: usize, base: Option<&Table>, new_blocks: usize) -> Table {
        let mut builder = TableBuilder::new(values.len() / width, width, base, new_blocks);
        let mut at = 0;
        while builder.next_len() > 0 {
            let len = builder.next_len();
            builder.push(&values[at..at + len]).unwrap();
            at += len;
        }
        builder.finish(|_| {})
    }

    #[test]
    fn kept_chunks_are_the_bases_and_new_blocks_rest_after_each() {
        let rows = 3 * CHUNK_ROWS;
        let old: Vec<f32> = (0..rows).map(|i| i as f32).collect();
        let first = build(&old, 1, None, 0);
        // The second version patches every chunk past the limit; only two get new blocks.
        let mut new = old.clone();
        for v in new.iter_mut().step_by(4) {
            *v += 0.5;
        }
        let second = build(&new, 1, Some(&first), 0);
        let mut builder = TableBuilder::new(rows, 1, Some(&second), 2);
        assert!(builder.keep());
        builder.push(&new[CHUNK_ROWS..2 * CHUNK_ROWS]).unwrap();
        assert!(builder.keep());
        assert!(!builder.keep(), "complete");
        let mut rests = 0;
        let third = builder.finish(|_| rests += 1);
        assert_eq!(rests, 2);
        assert_eq!(third.to_vec(), new);
        // Chunks 0 and 1 (the first two of equal patches) got new blocks; chunk 2 is the
        // base's block and patch.
        let memory = third.memory(Some(&second));
        let patch = CHUNK_ROWS / 4 * 8;
        assert_eq!(memory.shared_bytes, CHUNK_ROWS * 4 + patch, "{memory:?}");
        assert!(third.chunks[0].patch.is_empty() && third.chunks[1].patch.is_empty());
        assert!(Arc::ptr_eq(&third.chunks[2].patch, &second.chunks[2].patch));
        assert!(third.chunks[2].block.same(&second.chunks[2].block));
        // No base, or a base of another shape: nothing to keep.
        assert!(!TableBuilder::new(rows, 1, None, 0).keep());
        assert!(!TableBuilder::new(rows, 2, Some(&first), 0).keep());
        assert!(!TableBuilder::new(rows + 1, 1, Some(&first), 0).keep());
    }

    #[test]
    fn unchanged_chunks_are_shared_and_sparse_changes_are_patches() {
        let rows = 3 * CHUNK_ROWS + 5;
        let old: Vec<f32> = (0..rows).map(|i| i as f32).collect();
        let base = build(&old, 1, None, 0);
        assert_eq!(base.to_vec(), old);
        let mut new = old.clone();
        new[7] = -1.0;
        new[CHUNK_ROWS + 1] = -2.0;
        let next = build(&new, 1, Some(&base), 0);
        assert_eq!(next.to_vec(), new);
        let memory = next.memory(Some(&base));
        assert_eq!(memory.block_bytes, rows * 4);
        assert_eq!(memory.shared_bytes, rows * 4, "every block shared");
        assert_eq!(memory.patch_bytes, 2 * 8);

        // A chunk rewritten completely gets a new block when the budget allows.
        let mut rewritten = new.clone();
        for v in &mut rewritten[2 * CHUNK_ROWS..3 * CHUNK_ROWS] {
            *v += 0.5;
        }
        let kept = build(&rewritten, 1, Some(&next), 0);
        assert_eq!(kept.to_vec(), rewritten);
        assert_eq!(kept.memory(Some(&next)).patch_bytes, (CHUNK_ROWS + 2) * 8);
        let renewed = build(&rewritten, 1, Some(&next), 1);
        assert_eq!(renewed.to_vec(), rewritten);
        let memory = renewed.memory(Some(&next));
        assert_eq!(memory.shared_bytes, (rows - CHUNK_ROWS) * 4 + 2 * 8);
        assert_eq!(memory.patch_bytes, 2 * 8);
    }

    /// Values in `[-4.8, 4.8]` over two and a bit chunks, one changed in a patch over a base.
    fn patched_table() -> (Vec<f32>, Table) {
        let values: Vec<f32> = (0..2 * CHUNK_ROWS + 9)
            .map(|i| ((i % 97) as f32 - 48.0) / 10.0)
            .collect();
        let base = build(&values, 1, None, 0);
        let mut changed = values.clone();
        changed[3] = 0.125;
        let table = build(&changed, 1, Some(&base), 0);
        (changed, table)
    }

    #[test]
    fn fixed_point_tables_round_as_quantize_does_at_half_the_bytes() {
        let (changed, table) = patched_table();
        let (fixed, clipped) = table.to_q213(5);
        let (codes, want_clipped) = crate::fixed::quantize(&changed, 5);
        assert_eq!(clipped, want_clipped);
        assert!(clipped > 0, "values below -4 are clipped");
        let decoded: Vec<f32> = codes.into_iter().map(crate::fixed::decode).collect();
        assert_eq!(fixed.to_vec(), decoded);
        assert_eq!(
            fixed.memory(None).block_bytes * 2,
            table.memory(None).block_bytes
        );
        assert_eq!(fixed.memory(None).patch_bytes, 0);
        fixed.with_row(3, |row| assert_eq!(row, &decoded[3..4]));
    }

    #[test]
    fn int8_tables_round_as_quantize_does_at_a_quarter_of_the_bytes() {
        let (changed, table) = patched_table();
        let int8 = table.to_int8();
        assert_eq!(int8.to_vec(), crate::int8::round_trip(&changed));
        let groups = changed.len().div_ceil(crate::int8::GROUP);
        assert_eq!(int8.memory(None).block_bytes, changed.len() + groups * 4);
        assert_eq!(int8.first_non_finite(), None);
    }

    #[test]
    fn refuses_values_that_are_not_finite() {
        let mut builder = TableBuilder::new(CHUNK_ROWS + 1, 1, None, 0);
        builder.push(&vec![0.0; CHUNK_ROWS]).unwrap();
        assert_eq!(
            builder.push(&[f32::NAN]),
            Err(NotFinite { index: CHUNK_ROWS })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the base and the changes, the table built holds exactly the new values, and
        /// its rows read as the flat values do.
        #[test]
        fn a_table_holds_exactly_its_values(
            width in 1usize..40,
            rows in 1usize..(2 * CHUNK_ROWS + 3),
            changes in proptest::collection::vec((any::<u32>(), -4.0f32..4.0), 0..300),
            new_blocks in 0usize..3,
            seed in any::<u32>(),
        ) {
            let old: Vec<f32> = (0..rows * width).map(|i| (i as u32 ^ seed) as f32 * 1e-3).collect();
            let base = build(&old, width, None, 0);
            let mut new = old.clone();
            for (at, value) in changes {
                let at = at as usize % new.len();
                new[at] = value;
            }
            let table = build(&new, width, Some(&base), new_blocks);
            prop_assert_eq!(table.to_vec(), new.clone());
            prop_assert_eq!(table.get(new.len()), None);
            let row = rows / 2;
            table.with_row(row, |values| assert_eq!(values, &new[row * width..(row + 1) * width]));
        }
    }
}
