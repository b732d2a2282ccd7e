//! Feature specs and the transform from an event to a sparse row.
//!
//! This first version hashes every field into one weight space of `2^hash_bits` slots: each
//! categorical value, each integer bucket and each missing value is a binary feature
//! `hash(field, token)`, plus one bias feature. Integers are bucketed as in the winning Criteo
//! solutions: values up to 2 stand for themselves, larger ones become `floor(ln(v)^2)`.
//! The same [`FeatureSpec::transform`] runs in the dataflow and in serving.
//!
//! A `map` spec instead names per-field transforms fitted on the stream into versioned
//! FeatureMaps ([`crate::fmap`]); its rows come from the fitted map, which travels with every
//! model artifact trained on it.

use crate::criteo::{CriteoFeatures, NUM_CATS, NUM_INTS};
use crate::fmap::{FeatureMapSpec, Layout, Schema};
use serde::{Deserialize, Serialize};

/// How events become sparse rows; recorded in every model artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// A labelled sparse row of binary features: the learner's input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseRow {
    /// Indices of the features that are 1 (the others are 0); may repeat after hashing.
    pub indices: Vec<u32>,
    /// `true` for a click.
    pub label: bool,
    /// Where the event was read, when it came from a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::Position>,
}

/// Number of features [`FeatureSpec::transform`] emits per event: one per field plus the bias.
pub const FEATURES_PER_EVENT: usize = NUM_INTS + NUM_CATS + 1;

/// The token of a missing value: no integer token can be it (small integers, negative ones cast
/// to at least 2^63, and buckets from 2^40 up to about 2^40 + 1900) and no 32-bit categorical.
const MISSING: u64 = 1 << 41;
const BUCKETED: u64 = 1 << 40;
const BIAS_FIELD: u64 = 255;

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

    /// Appends the event's feature indices to `out` (binary features: every value is 1).
    ///
    /// A hashed spec emits exactly [`FEATURES_PER_EVENT`] indices, each below
    /// [`FeatureSpec::dimension`]. A `map` spec emits nothing: its rows come from a fitted
    /// [`crate::FeatureMap`], which this spec alone does not have.
    pub fn transform(&self, features: &CriteoFeatures, out: &mut Vec<u32>) {
        match self {
            FeatureSpec::Map(_) => {}
            FeatureSpec::Hashed { hash_bits } => {
                let mask = (1u64 << hash_bits) - 1;
                let slot = |field: u64, token: u64| (mix(field, token) & mask) as u32;
                out.reserve(FEATURES_PER_EVENT);
                out.push(slot(BIAS_FIELD, 0));
                for (field, value) in features.ints.iter().enumerate() {
                    out.push(slot(field as u64, int_token(*value)));
                }
                for (field, value) in features.cats.iter().enumerate() {
                    let token = value.map_or(MISSING, u64::from);
                    out.push(slot((NUM_INTS + field) as u64, token));
                }
            }
        }
    }
}

fn int_token(value: Option<i64>) -> u64 {
    match value {
        None => MISSING,
        Some(v) if v <= 2 => v as u64,
        Some(v) => {
            let ln = (v as f64).ln();
            BUCKETED + (ln * ln) as u64
        }
    }
}

/// A 64-bit mix of a field id and a token (the splitmix64 finalizer over both): fast, with every
/// input bit affecting every output bit, and stable across platforms and releases.
fn mix(field: u64, token: u64) -> u64 {
    crate::hash::finalize(token ^ field.wrapping_mul(crate::hash::GOLDEN).rotate_left(32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integer_buckets() {
        assert_eq!(int_token(Some(-1)), u64::MAX);
        assert_ne!(
            int_token(Some(-1)),
            int_token(None),
            "-1 is a value, not a missing one"
        );
        assert_ne!(int_token(Some(i64::MAX)), int_token(None));
        assert_eq!(int_token(Some(2)), 2);
        assert_eq!(int_token(Some(3)), BUCKETED + 1);
        assert_eq!(int_token(Some(1000)), BUCKETED + 47);
        assert_eq!(int_token(None), MISSING);
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = FeatureSpec::Hashed { hash_bits: 18 };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"type":"hashed","hash_bits":18}"#);
        assert_eq!(serde_json::from_str::<FeatureSpec>(&json).unwrap(), spec);
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
        let mut row = Vec::new();
        spec.transform(&CriteoFeatures::default(), &mut row);
        assert!(row.is_empty());

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
        fn transform_is_in_range_and_deterministic(
            bits in 1u32..=30,
            ints in proptest::array::uniform13(proptest::option::of(any::<i64>())),
            cat in proptest::option::of(any::<u32>()),
        ) {
            let spec = FeatureSpec::Hashed { hash_bits: bits };
            let features = CriteoFeatures { ints, cats: [cat; NUM_CATS] };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            spec.transform(&features, &mut a);
            spec.transform(&features, &mut b);
            prop_assert_eq!(a.len(), FEATURES_PER_EVENT);
            prop_assert!(a.iter().all(|&i| (i as usize) < spec.dimension(&crate::Schema::criteo())));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn fields_hash_apart(value in any::<u32>()) {
            // The same value in two fields is two different features (collisions aside).
            let spec = FeatureSpec::Hashed { hash_bits: 30 };
            let mut features = CriteoFeatures::default();
            features.cats[0] = Some(value);
            features.cats[1] = Some(value);
            let mut row = Vec::new();
            spec.transform(&features, &mut row);
            prop_assert_ne!(row[1 + NUM_INTS], row[2 + NUM_INTS]);
        }
    }
}
