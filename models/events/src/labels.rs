//! Impressions and clicks as separate events, to be joined into labeled examples.
//!
//! On the wire (one topic, two event types), an impression is `imp<TAB>request id<TAB>` followed
//! by the 39 Criteo feature fields, and a click is `clk<TAB>request id`. Joining gives the
//! impression's Criteo line with its label in front ([`labeled_line`]), which the parser of the
//! Criteo preset reads as it reads any labeled line.

use rand::{Rng, SeedableRng};
use std::fmt;

/// The longest request id accepted, in bytes.
pub const MAX_REQUEST_ID: usize = 128;

/// One parsed record of the impression/click stream, borrowing the record's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelEvent<'a> {
    /// An ad was shown: its request id and its feature fields (not yet checked).
    Impression {
        /// The id clicks refer to.
        request_id: &'a [u8],
        /// The 39 tab-separated feature fields.
        features: &'a [u8],
    },
    /// An ad was clicked.
    Click {
        /// The impression's request id.
        request_id: &'a [u8],
    },
}

/// Why a record is not an impression or a click.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelEventError {
    /// The record does not start with `imp<TAB>` or `clk<TAB>`.
    UnknownType,
    /// The request id is empty or longer than [`MAX_REQUEST_ID`].
    BadRequestId,
    /// An impression without feature fields after its request id.
    MissingFeatures,
    /// A click with more after its request id.
    TrailingFields,
}

impl LabelEventError {
    /// A fixed label for the dead letter's `error_kind`.
    pub fn kind(self) -> &'static str {
        match self {
            LabelEventError::UnknownType => "label_join_unknown_type",
            LabelEventError::BadRequestId => "label_join_bad_request_id",
            LabelEventError::MissingFeatures => "label_join_missing_features",
            LabelEventError::TrailingFields => "label_join_trailing_fields",
        }
    }
}

impl fmt::Display for LabelEventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LabelEventError::UnknownType => {
                "not an impression (`imp<TAB>id<TAB>features`) or a click (`clk<TAB>id`)"
            }
            LabelEventError::BadRequestId => "the request id is empty or longer than 128 bytes",
            LabelEventError::MissingFeatures => "an impression without feature fields",
            LabelEventError::TrailingFields => "a click with fields after its request id",
        })
    }
}

impl std::error::Error for LabelEventError {}

impl<'a> LabelEvent<'a> {
    /// Parses one record.
    ///
    /// # Errors
    ///
    /// When the record is neither an impression nor a click (see [`LabelEventError`]).
    pub fn parse(record: &'a [u8]) -> Result<Self, LabelEventError> {
        let (kind, rest) = split_tab(record).ok_or(LabelEventError::UnknownType)?;
        let check = |id: &[u8]| {
            if id.is_empty() || id.len() > MAX_REQUEST_ID {
                Err(LabelEventError::BadRequestId)
            } else {
                Ok(())
            }
        };
        match kind {
            b"imp" => {
                let (request_id, features) =
                    split_tab(rest).ok_or(LabelEventError::MissingFeatures)?;
                check(request_id)?;
                Ok(LabelEvent::Impression {
                    request_id,
                    features,
                })
            }
            b"clk" => {
                if rest.contains(&b'\t') {
                    return Err(LabelEventError::TrailingFields);
                }
                check(rest)?;
                Ok(LabelEvent::Click { request_id: rest })
            }
            _ => Err(LabelEventError::UnknownType),
        }
    }

    /// Where an event of this request id is joined: a stable hash of the id, so an
    /// impression and its clicks meet on one worker (of any process).
    pub fn route(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.request_id())
    }

    /// The request id of either kind.
    pub fn request_id(&self) -> &'a [u8] {
        match self {
            LabelEvent::Impression { request_id, .. } | LabelEvent::Click { request_id } => {
                request_id
            }
        }
    }
}

fn split_tab(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'\t')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The labeled Criteo line of an impression's feature fields.
pub fn labeled_line(label: bool, features: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(features.len() + 2);
    line.extend_from_slice(if label { b"1\t" } else { b"0\t" });
    line.extend_from_slice(features);
    line
}

/// A seeded stream of impressions and delayed clicks, each with the epoch it happens in, in
/// order of epoch: for tests and demos of the label join.
///
/// Every impression gets a fresh request id. A share of them is clicked after a random delay:
/// most within `window` epochs, some after it (late), a few twice (duplicates); some clicks
/// refer to no impression, and a few records are malformed.
pub fn impressions_and_clicks(seed: u64, impressions: usize, window: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut events = crate::synth::CriteoGenerator::new(seed);
    let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(impressions * 2);
    for n in 0..impressions {
        let epoch = n as u64 / 50;
        let event = events.next_event();
        let line = event.to_tsv();
        let features = line.split_once('\t').map_or("", |(_, f)| f);
        let id = format!("r{seed}-{n}");
        out.push((epoch, format!("imp\t{id}\t{features}").into_bytes()));
        // The generator's label says whether the ad is clicked at all.
        if event.label {
            let delay = if rng.random_bool(0.1) {
                rng.random_range(window + 1..=3 * window)
            } else {
                rng.random_range(0..=window)
            };
            out.push((epoch + delay, format!("clk\t{id}").into_bytes()));
            if rng.random_bool(0.05) {
                let again = rng.random_range(0..=window);
                out.push((epoch + again, format!("clk\t{id}").into_bytes()));
            }
        }
        if rng.random_bool(0.01) {
            out.push((epoch, format!("clk\tnobody-{n}").into_bytes()));
        }
        if rng.random_bool(0.005) {
            out.push((epoch, b"view\tsomething else".to_vec()));
        }
    }
    out.sort_by_key(|(epoch, _)| *epoch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_kinds_and_rejects_the_rest() {
        assert_eq!(
            LabelEvent::parse(b"imp\tr1\t1\t2"),
            Ok(LabelEvent::Impression {
                request_id: b"r1",
                features: b"1\t2"
            })
        );
        assert_eq!(
            LabelEvent::parse(b"clk\tr1"),
            Ok(LabelEvent::Click { request_id: b"r1" })
        );
        let bad: [(&[u8], LabelEventError); 6] = [
            (b"", LabelEventError::UnknownType),
            (b"view\tr1", LabelEventError::UnknownType),
            (b"imp\tr1", LabelEventError::MissingFeatures),
            (b"imp\t\t1", LabelEventError::BadRequestId),
            (b"clk\t", LabelEventError::BadRequestId),
            (b"clk\tr1\tx", LabelEventError::TrailingFields),
        ];
        for (record, error) in bad {
            assert_eq!(LabelEvent::parse(record), Err(error), "{record:?}");
        }
        let long = format!("clk\t{}", "x".repeat(MAX_REQUEST_ID + 1));
        assert_eq!(
            LabelEvent::parse(long.as_bytes()),
            Err(LabelEventError::BadRequestId)
        );
    }

    #[test]
    fn a_joined_impression_is_a_criteo_line() {
        let stream = impressions_and_clicks(1, 10, 3);
        let (_, first) = &stream[0];
        let Ok(LabelEvent::Impression { features, .. }) = LabelEvent::parse(first) else {
            panic!("the stream starts with an impression");
        };
        let layout = crate::FeatureSpec::Hashed { hash_bits: 10 }
            .compile(&crate::Schema::criteo())
            .unwrap();
        let mut batch = crate::EventBatch::new(layout.schema.fields.len());
        crate::fmap::Parser::new(&layout)
            .parse_record(&labeled_line(true, features), 0, &mut batch)
            .unwrap();
        assert_eq!(batch.labels, [true]);
        assert!(!batch
            .values
            .contains(&crate::fmap::Value::Bad(crate::fmap::BadKind::NotNumeric)));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(record in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LabelEvent::parse(&record);
        }
    }
}
