//! A partition's place in a source that makes its records itself (a file, a generator): the
//! offset of its next record, its end if it has one, its pace, and whether it has shown a
//! readable time yet.

use super::source::{EventTimeReader, ReaderContext};
use millrace_connectors::kafka::RateLimit;
use millrace_models::RawRecord;

/// One partition's place, read by one worker.
pub(crate) struct Cursor {
    partition: i32,
    /// The offset of the next record.
    next: u64,
    /// The offset reading started at (the pace counts from there).
    from: u64,
    /// The offset after the last record; `None` for no end.
    end: Option<u64>,
    rate: Option<f64>,
    limit: RateLimit,
    /// Whether the partition has shown a readable time.
    timed: bool,
}

impl Cursor {
    /// At the start of `partition`, which ends before `end`, read at `rate` records a second.
    pub(crate) fn new(partition: i32, end: Option<u64>, rate: Option<f64>) -> Self {
        Cursor {
            partition,
            next: 0,
            from: 0,
            end,
            rate,
            limit: RateLimit::new(rate),
            timed: false,
        }
    }

    /// The partition.
    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the next record.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Whether every record has been read.
    pub(crate) fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }

    /// Whether the next record may be read now: there is one, and it is due at the pace.
    pub(crate) fn ready(&self) -> bool {
        !self.finished() && self.limit.delay(self.next - self.from).is_zero()
    }

    /// Whether everything there is now has been read: the partition may go idle.
    pub(crate) fn at_end(&self) -> bool {
        !self.ready()
    }

    /// The next record, `payload`, stamped by `worker` with its time read by `event_time` (or
    /// `wall_ms`); the cursor moves past it.
    pub(crate) fn take(
        &mut self,
        worker: &ReaderContext,
        payload: &[u8],
        event_time: Option<&EventTimeReader>,
        wall_ms: u64,
    ) -> RawRecord {
        let position = (self.partition, self.next as i64);
        let record = worker.stamped(position, payload, (event_time, &mut self.timed), wall_ms);
        self.next += 1;
        record
    }

    /// Moves to `offset`, the pace counted from there; a partition resumed past its start is
    /// taken to have shown times when the source reads them (`timed`).
    pub(crate) fn seek(&mut self, offset: u64, timed: bool) {
        (self.next, self.from) = (offset, offset);
        self.limit = RateLimit::new(self.rate);
        self.timed = timed && offset > 0;
    }
}
