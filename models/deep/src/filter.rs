//! The frequency filter before a host-table row is created: a count-min sketch of how many
//! rows each id was seen in, of a fixed size whatever the ids.

/// Two rows of saturating counters; an id's count is the smaller of its two cells, never less
/// than the truth.
#[derive(Debug)]
pub(crate) struct FrequencyFilter {
    cells: Vec<u32>,
    mask: u64,
}

/// A 64-bit mix (SplitMix64's finalizer): neighbouring ids land far apart.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FrequencyFilter {
    /// A sketch of two rows of `width` cells (rounded up to a power of two, from 1024 to
    /// 2²⁴: at most 128 MiB).
    pub(crate) fn new(width: usize) -> Self {
        let width = width.clamp(1024, 1 << 24).next_power_of_two();
        FrequencyFilter {
            cells: vec![0; 2 * width],
            mask: width as u64 - 1,
        }
    }

    fn cells_of(&self, id: i64) -> [usize; 2] {
        let h = mix(id as u64);
        let width = self.mask as usize + 1;
        [
            (h & self.mask) as usize,
            width + ((h >> 32) & self.mask) as usize,
        ]
    }

    /// Counts `rows` more sightings of `id`; returns its count since the sketch began.
    pub(crate) fn add(&mut self, id: i64, rows: u32) -> u32 {
        let cells = self.cells_of(id);
        let mut count = u32::MAX;
        for c in cells {
            self.cells[c] = self.cells[c].saturating_add(rows);
            count = count.min(self.cells[c]);
        }
        count
    }

    /// `id`'s count so far, counting nothing.
    pub(crate) fn count(&self, id: i64) -> u32 {
        self.cells_of(id)
            .into_iter()
            .map(|c| self.cells[c])
            .min()
            .unwrap_or(0)
    }

    /// The bytes the sketch holds.
    pub(crate) fn bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<u32>()
    }
}
