//! Decoding raw records into Criteo events; what does not decode becomes a dead letter.

use crate::checkpoint::Tally;
use millrace_models::{CriteoEvent, DeadLetter, DecodeError, Position, RawRecord, RecordFormat};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

/// Counters of a decode operator, shared by all its workers.
#[derive(Debug, Default)]
pub struct DecodeStats {
    /// Records that decoded into events.
    pub decoded: AtomicU64,
    /// Records that did not, and went to the dead letters.
    pub dead_letters: AtomicU64,
}

/// Decodes raw records.
pub trait Decode<'scope> {
    /// Decodes each record as a Criteo event in `format`: well-formed records become events
    /// (with the position they were read at) on the first stream, the others dead letters (with the reason) on the second. Each kind of error is
    /// logged once per worker; all are counted in `stats`.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::{RawRecord, RecordFormat};
    /// use millrace_operators::{Decode, DecodeStats};
    /// use std::sync::{atomic::Ordering, Arc};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let stats = Arc::new(DecodeStats::default());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let record = |payload: &str| RawRecord { partition: 0, offset: 0, payload: payload.into(), timestamp_ms: None };
    ///     let (_events, _dead) = vec![record("not a criteo line")]
    ///         .to_stream(scope)
    ///         .decode_criteo(RecordFormat::Tsv, shared);
    /// });
    /// assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    /// ```
    fn decode_criteo(
        self,
        format: RecordFormat,
        stats: Arc<DecodeStats>,
    ) -> (
        StreamVec<'scope, u64, (Position, CriteoEvent)>,
        StreamVec<'scope, u64, DeadLetter>,
    );
}

impl<'scope> Decode<'scope> for StreamVec<'scope, u64, RawRecord> {
    fn decode_criteo(
        self,
        format: RecordFormat,
        stats: Arc<DecodeStats>,
    ) -> (
        StreamVec<'scope, u64, (Position, CriteoEvent)>,
        StreamVec<'scope, u64, DeadLetter>,
    ) {
        let worker = self.scope().index();
        let mut builder = OperatorBuilder::new("DecodeCriteo".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (events_out, events) = builder.new_output::<Vec<(Position, CriteoEvent)>>();
        let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
        let mut events_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(events_out);
        let mut dead_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(dead_out);
        builder.build(move |_capabilities| {
            let mut logged = HashSet::new();
            // Checkpointed counts: decoded, dead letters.
            let (mut tally, restored) = Tally::<2>::new(worker, "decode");
            stats.decoded.fetch_add(restored[0], Ordering::Relaxed);
            stats.dead_letters.fetch_add(restored[1], Ordering::Relaxed);
            move |frontiers| {
                let mut events_out = events_out.activate();
                let mut dead_out = dead_out.activate();
                input.for_each_stamp(|cap, data| {
                    let (mut decoded, mut letters) = (Vec::new(), Vec::new());
                    for record in data.flat_map(|d| d.drain(..)) {
                        match format.decode(&record.payload) {
                            Ok(event) => decoded.push((record.position(), event)),
                            Err(error) => letters.push(dead_letter(&mut logged, &error, record)),
                        }
                    }
                    let counts = [decoded.len() as u64, letters.len() as u64];
                    stats.decoded.fetch_add(counts[0], Ordering::Relaxed);
                    stats.dead_letters.fetch_add(counts[1], Ordering::Relaxed);
                    if let Some(&time) = cap.least() {
                        tally.add(time, counts);
                    }
                    if let Some(events_cap) = cap.retain_least(0).filter(|_| !decoded.is_empty()) {
                        events_out
                            .session(&events_cap)
                            .give_iterator(decoded.into_iter());
                    }
                    if let Some(dead_cap) = cap.retain_least(1).filter(|_| !letters.is_empty()) {
                        dead_out
                            .session(&dead_cap)
                            .give_iterator(letters.into_iter());
                    }
                });
                tally.settle(frontiers[0].frontier());
            }
        });
        (events, dead)
    }
}

/// The dead letter of a record that failed with `error`; logs the first of each kind of error
/// (`logged` holds the kinds already logged).
pub(crate) fn dead_letter(
    logged: &mut HashSet<&'static str>,
    error: &DecodeError,
    record: RawRecord,
) -> DeadLetter {
    if logged.insert(error.kind()) {
        tracing::warn!(
            error_type = error.kind(),
            %error,
            partition = record.partition,
            offset = record.offset,
            "malformed record sent to the dead letters (logged once per kind)"
        );
    }
    DeadLetter {
        error_kind: error.kind().to_owned(),
        error: error.to_string(),
        record,
    }
}
