//! Decoding raw records into Criteo events; what does not decode becomes a dead letter.

use millrace_models::{CriteoEvent, DeadLetter, DecodeError, RawRecord};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::dataflow::operators::core::OkErr;
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
    /// Decodes each record as a Criteo TSV line: well-formed lines become events on the first
    /// stream, the others dead letters (with the reason) on the second. Each kind of error is
    /// logged once per worker; all are counted in `stats`.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::RawRecord;
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
    ///         .decode_criteo(shared);
    /// });
    /// assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    /// ```
    fn decode_criteo(
        self,
        stats: Arc<DecodeStats>,
    ) -> (
        StreamVec<'scope, u64, CriteoEvent>,
        StreamVec<'scope, u64, DeadLetter>,
    );
}

impl<'scope> Decode<'scope> for StreamVec<'scope, u64, RawRecord> {
    fn decode_criteo(
        self,
        stats: Arc<DecodeStats>,
    ) -> (
        StreamVec<'scope, u64, CriteoEvent>,
        StreamVec<'scope, u64, DeadLetter>,
    ) {
        let mut logged = HashSet::new();
        self.ok_err(
            move |record: RawRecord| match CriteoEvent::decode_tsv(&record.payload) {
                Ok(event) => {
                    stats.decoded.fetch_add(1, Ordering::Relaxed);
                    Ok(event)
                }
                Err(error) => {
                    stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                    Err(dead_letter(&mut logged, &error, record))
                }
            },
        )
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
