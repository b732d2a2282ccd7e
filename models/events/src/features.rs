//! Feature specs (`[features]` in a job file), recorded in every model artifact. Both kinds
//! compile to a FeatureMap layout ([`crate::fmap`]), whose rows the dataflow and serving make
//! alike:
//!
//! - `hashed` hashes every field into one weight space of `2^hash_bits` slots: each
//!   categorical value, each integer bucket and each missing value is a binary feature
//!   `hash(field, token)`, plus one bias feature. Integers are bucketed as in the winning Criteo
//!   solutions: values up to 2 stand for themselves, larger ones become `floor(ln(v)^2)`
//!   ([`Layout::hashed`]).
//! - `map` names per-field transforms fitted on the stream into versioned FeatureMaps; the
//!   fitted map travels with every model artifact trained on it.

use crate::fmap::{FeatureMap, FeatureMapSpec, Layout, Schema};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How events become sparse rows; recorded in every model artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureSpec {
    /// Every field hashed into `2^hash_bits` slots.
    Hashed {
        /// log2 of the number of weight slots (1..=30).
        hash_bits: u32,
    },
    /// Per-field transforms of the Criteo schema, fitted into versioned FeatureMaps.
    Map(FeatureMapSpec),
}

impl FeatureSpec {
    /// The FeatureMap layout of the spec over events of `schema`: a hashed spec is one
    /// [`Layout::hashed`] feature, a map spec its transforms.
    ///
    /// # Errors
    ///
    /// Every problem with the spec over `schema`.
    pub fn compile(&self, schema: &Schema) -> Result<Layout, Vec<String>> {
        match self {
            FeatureSpec::Hashed { hash_bits } => Layout::hashed(schema, *hash_bits),
            FeatureSpec::Map(spec) => spec.compile(schema),
        }
    }

    /// Number of weight slots a model of this spec has over events of `schema` (0 for a spec
    /// that does not compile against it).
    pub fn dimension(&self, schema: &Schema) -> usize {
        self.compile(schema).map_or(0, |layout| layout.dimension)
    }

    /// Problems with the spec over events of `schema`, empty when it is valid.
    pub fn problems(&self, schema: &Schema) -> Vec<String> {
        self.compile(schema).err().unwrap_or_default()
    }

    /// The FeatureMap of a spec that fits nothing (a valid hashed one, over the Criteo preset
    /// it reads): its rows need no fitted state, so it is made where it is needed rather than
    /// stored with a model. `None` for a `map` spec, whose FeatureMap is fitted.
    pub fn unfitted_map(&self) -> Option<Arc<FeatureMap>> {
        match self {
            FeatureSpec::Hashed { hash_bits } => Layout::hashed(&Schema::criteo(), *hash_bits)
                .ok()
                .map(|layout| Arc::new(FeatureMap::new(layout))),
            FeatureSpec::Map(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criteo::{CriteoEvent, CriteoFeatures, NUM_CATS, NUM_INTS};
    use crate::fmap::{Parser, TransformCounts};
    use crate::EventBatch;
    use proptest::prelude::*;

    /// The hashed rows of the events' lines.
    fn hashed_rows(bits: u32, events: &[CriteoFeatures]) -> Vec<Vec<u32>> {
        let layout = FeatureSpec::Hashed { hash_bits: bits }
            .compile(&Schema::criteo())
            .unwrap();
        let mut parser = Parser::new(&layout);
        let mut batch = EventBatch::new(NUM_INTS + NUM_CATS);
        for features in events {
            let event = CriteoEvent {
                label: false,
                features: features.clone(),
            };
            parser
                .parse_record(event.to_tsv().as_bytes(), 0, &mut batch)
                .unwrap();
        }
        let rows = FeatureMap::new(layout).transform(&batch, &mut TransformCounts::default());
        (0..rows.len()).map(|i| rows.row(i).0.to_vec()).collect()
    }

    #[test]
    fn integer_buckets() {
        let with_i1 = |v: Option<i64>| {
            let mut features = CriteoFeatures::default();
            features.ints[0] = v;
            features
        };
        let rows = hashed_rows(
            30,
            &[None, Some(-1), Some(2), Some(3), Some(4), Some(8), Some(9)].map(with_i1),
        );
        let i1 = |r: usize| rows[r][1];
        assert_ne!(i1(1), i1(0), "-1 is a value, not a missing one");
        assert_ne!(i1(2), i1(3));
        // ⌊ln(3)²⌋ = ⌊ln(4)²⌋ = 1; ⌊ln(8)²⌋ = 4, ⌊ln(9)²⌋ = 4.
        assert_eq!(i1(3), i1(4));
        assert_eq!(i1(5), i1(6));
        assert_ne!(i1(4), i1(5));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = FeatureSpec::Hashed { hash_bits: 18 };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"type":"hashed","hash_bits":18}"#);
        assert_eq!(serde_json::from_str::<FeatureSpec>(&json).unwrap(), spec);
        assert_eq!(spec.dimension(&Schema::criteo()), 1 << 18);
        assert!(
            FeatureSpec::Hashed { hash_bits: 0 }
                .problems(&crate::Schema::criteo())
                .len()
                == 1
        );
    }

    #[test]
    fn a_map_spec_reads_from_toml_and_reports_its_problems() {
        let spec: FeatureSpec = toml::from_str(
            r#"
            type = "map"
            [[transform]]
            kind = "bucketize"
            fields = ["I1", "I2"]
            buckets = 4
            [[transform]]
            kind = "one_hot"
            fields = ["C1"]
            "#,
        )
        .unwrap();
        let FeatureSpec::Map(map) = &spec else {
            panic!("not a map spec: {spec:?}")
        };
        assert_eq!(map.transforms.len(), 2);
        assert!(
            spec.problems(&crate::Schema::criteo()).is_empty(),
            "{:?}",
            spec.problems(&crate::Schema::criteo())
        );
        assert!(spec.dimension(&crate::Schema::criteo()) > 2 * 4);

        let bad: FeatureSpec = toml::from_str(
            r#"
            type = "map"
            [[transform]]
            kind = "bucketize"
            fields = ["nope"]
            buckets = 0
            "#,
        )
        .unwrap();
        assert!(
            bad.problems(&crate::Schema::criteo()).len() >= 2,
            "{:?}",
            bad.problems(&crate::Schema::criteo())
        );
        assert_eq!(bad.dimension(&crate::Schema::criteo()), 0);
    }

    proptest! {
        #[test]
        fn hashed_rows_are_in_range_and_deterministic(
            bits in 1u32..=30,
            ints in proptest::array::uniform13(proptest::option::of(any::<i64>())),
            cat in proptest::option::of(any::<u32>()),
        ) {
            let features = CriteoFeatures { ints, cats: [cat; NUM_CATS] };
            let rows = hashed_rows(bits, &[features.clone(), features]);
            prop_assert_eq!(rows[0].len(), 1 + NUM_INTS + NUM_CATS);
            prop_assert!(rows[0].iter().all(|&i| i < 1 << bits));
            prop_assert_eq!(&rows[0], &rows[1]);
        }

        #[test]
        fn fields_hash_apart(value in any::<u32>()) {
            // The same value in two fields is two different features (collisions aside).
            let mut features = CriteoFeatures::default();
            features.cats[0] = Some(value);
            features.cats[1] = Some(value);
            let rows = hashed_rows(30, &[features]);
            prop_assert_ne!(rows[0][1 + NUM_INTS], rows[0][2 + NUM_INTS]);
        }
    }
}
