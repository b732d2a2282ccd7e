//! Counters checkpointed as a part ([`Tally`]).

use crate::checkpoint::{encode, settled_through, Part};
use crate::part_spec::PartSpec;
use std::collections::BTreeMap;
use timely::progress::frontier::AntichainRef;

/// Counters of an operator that counts records as they arrive, checkpointed as a part: the
/// counts of each epoch are kept apart until the frontier passes it, so a checkpoint holds the
/// counts of exactly the epochs it covers.
pub(crate) struct Tally<const N: usize> {
    part: Option<Part>,
    totals: [u64; N],
    open: BTreeMap<u64, [u64; N]>,
    lo: u64,
}

impl<const N: usize> Tally<N> {
    /// The tally kept in `part` (`spec`'s, when checkpointing), and the restored totals to add
    /// to the live counters.
    pub(crate) fn new(mut part: Option<Part>, spec: &PartSpec<Vec<u64>>) -> (Self, [u64; N]) {
        let mut tally = Tally {
            lo: part
                .as_ref()
                .map_or(0, |p| p.resume_epoch().saturating_sub(1)),
            part: None,
            totals: [0; N],
            open: BTreeMap::new(),
        };
        if let Some((_, _, bytes)) = part.as_mut().and_then(Part::take_restored) {
            match spec.decode(&bytes) {
                Ok(totals) if totals.len() == N => tally.totals.copy_from_slice(&totals),
                Ok(_) | Err(_) => tracing::error!(
                    part = spec.name(),
                    "a checkpointed tally is unreadable; counting from zero"
                ),
            }
        }
        tally.part = part;
        let restored = tally.totals;
        (tally, restored)
    }

    /// Counts `counts` for `epoch`.
    pub(crate) fn add(&mut self, epoch: u64, counts: [u64; N]) {
        if self.part.is_none() {
            return;
        }
        let open = self.open.entry(epoch).or_insert([0; N]);
        for (o, c) in open.iter_mut().zip(counts) {
            *o += c;
        }
    }

    /// Settles every epoch the frontier has passed.
    pub(crate) fn settle(&mut self, frontier: AntichainRef<'_, u64>) {
        let Some(part) = self.part.as_mut() else {
            return;
        };
        let Some(through) = settled_through(&[frontier]) else {
            return;
        };
        while let Some(entry) = self.open.first_entry() {
            let epoch = *entry.key();
            if epoch > through {
                break;
            }
            if epoch > 0 {
                let totals = self.totals;
                part.covers(self.lo, epoch - 1, || encode(&totals[..]));
            }
            for (t, c) in self.totals.iter_mut().zip(entry.remove()) {
                *t += c;
            }
            self.lo = epoch;
        }
        let totals = self.totals;
        part.covers(self.lo, through, || encode(&totals[..]));
    }
}
