//! The Criteo display-advertising schema's names (`label`, `I1`…`I13` integers, `C1`…`C26`
//! hashed categoricals, the `preset = "criteo"` schema), and the events the Criteo generator
//! ([`crate::synth::CriteoGenerator`]) makes, with their two wire forms: the tab-separated line
//! of the Kaggle DAC files and the JSON object of a predict request. Reading either is the
//! schema's parser's work ([`crate::fmap::Parser`]), as for any other schema.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Number of integer fields (`I1`…`I13`).
pub const NUM_INTS: usize = 13;
/// Number of categorical fields (`C1`…`C26`).
pub const NUM_CATS: usize = 26;

/// The names of the integer fields, in order.
pub const INT_NAMES: [&str; NUM_INTS] = [
    "I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "I10", "I11", "I12", "I13",
];
/// The names of the categorical fields, in order.
pub const CAT_NAMES: [&str; NUM_CATS] = [
    "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11", "C12", "C13", "C14", "C15",
    "C16", "C17", "C18", "C19", "C20", "C21", "C22", "C23", "C24", "C25", "C26",
];

/// The features of one Criteo event: everything but the label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CriteoFeatures {
    /// `I1`…`I13`; `None` where the field is empty.
    pub ints: [Option<i64>; NUM_INTS],
    /// `C1`…`C26` as the 32-bit values of their 8 hex digits; `None` where the field is empty.
    pub cats: [Option<u32>; NUM_CATS],
}

/// One labelled Criteo event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CriteoEvent {
    /// `true` for a click.
    pub label: bool,
    /// The event's features.
    pub features: CriteoFeatures,
}

impl CriteoEvent {
    /// Encodes the event as one tab-separated line, without the trailing newline.
    pub fn to_tsv(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push(if self.label { '1' } else { '0' });
        for v in &self.features.ints {
            out.push('\t');
            if let Some(v) = v {
                let _ = write!(out, "{v}");
            }
        }
        for v in &self.features.cats {
            out.push('\t');
            if let Some(v) = v {
                let _ = write!(out, "{v:08x}");
            }
        }
        out
    }
}

impl CriteoFeatures {
    /// The features as a JSON object with the schema's field names; missing values are left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (v, name) in self.ints.iter().zip(INT_NAMES) {
            if let Some(v) = v {
                object.insert(name.to_owned(), (*v).into());
            }
        }
        for (v, name) in self.cats.iter().zip(CAT_NAMES) {
            if let Some(v) = v {
                object.insert(name.to_owned(), format!("{v:08x}").into());
            }
        }
        serde_json::Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmap::{Parser, Value};
    use crate::{EventBatch, FeatureSpec, Schema};
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = CriteoEvent> {
        (
            any::<bool>(),
            proptest::array::uniform13(proptest::option::of(-(1i64 << 53)..(1i64 << 53))),
            proptest::collection::vec(proptest::option::of(any::<u32>()), NUM_CATS),
        )
            .prop_map(|(label, ints, cats)| {
                let mut features = CriteoFeatures {
                    ints,
                    ..Default::default()
                };
                features.cats.copy_from_slice(&cats);
                CriteoEvent { label, features }
            })
    }

    /// The values the Criteo preset's parser reads for the hashed features: numbers, and
    /// categories as their hex digits' number.
    fn expected(features: &CriteoFeatures) -> Vec<Value> {
        let ints = features
            .ints
            .iter()
            .map(|v| v.map_or(Value::Missing, |v| Value::Num(v as f64)));
        let cats = features
            .cats
            .iter()
            .map(|v| v.map_or(Value::Missing, |v| Value::Cat(u64::from(v))));
        ints.chain(cats).collect()
    }

    proptest! {
        /// A generated event's line and its JSON instance both read back as the event.
        #[test]
        fn lines_and_instances_read_back(event in arb_event()) {
            let layout = FeatureSpec::Hashed { hash_bits: 10 }.compile(&Schema::criteo()).unwrap();
            let mut parser = Parser::new(&layout);
            let mut batch = EventBatch::new(NUM_INTS + NUM_CATS);
            parser.parse_record(event.to_tsv().as_bytes(), 0, &mut batch).unwrap();
            parser.parse_json(&event.features.to_json(), 0, &mut batch).unwrap();
            prop_assert_eq!(batch.labels[0], event.label);
            let want = expected(&event.features);
            prop_assert_eq!(batch.row(0), want.as_slice());
            prop_assert_eq!(batch.row(1), batch.row(0));
        }
    }
}
