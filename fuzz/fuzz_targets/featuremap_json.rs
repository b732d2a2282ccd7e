//! Fuzzes `featuremap.json`, the FeatureMap a model artifact carries: any bytes either fail to
//! parse, or parse into feature states that `FeatureMap::problems` refuses, or make a map whose
//! rows keep every feature inside its own slots with finite values. The layout is the one the
//! model's spec compiles to, as the registry requires; only the fitted state comes from the
//! input. The events are built from the map itself, so that every vocabulary id, every bucket
//! boundary and every scaler is exercised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::fmap::map::FeatureState;
use millrace_models::fmap::{FeatureMapSpec, Schema, TransformCounts, Value};
use millrace_models::{EventBatch, FeatureMap};

const SPEC: &str = include_str!("../../models/events/src/fmap/testdata/every_kind.toml");

fuzz_target!(|data: &[u8]| {
    let Ok(mut map) = serde_json::from_slice::<FeatureMap>(data) else {
        return;
    };
    let spec: FeatureMapSpec = toml::from_str(SPEC).expect("the spec parses");
    map.layout = spec.compile(&Schema::criteo()).expect("the spec compiles");
    if !map.problems().is_empty() {
        return;
    }
    // One event per probe: the probed field holds the value, every other field is missing.
    let fields = map.layout.schema.fields.len();
    let mut batch = EventBatch::new(fields);
    let mut push = |field: usize, value: Value| {
        batch.labels.push(false);
        batch.times.push(0);
        batch
            .values
            .extend((0..fields).map(|f| if f == field { value } else { Value::Missing }));
    };
    for (def, state) in map.layout.features.iter().zip(&map.features) {
        let field = def.fields[0];
        match state {
            FeatureState::Vocab(ids) => ids.keys().for_each(|&t| push(field, Value::Cat(t))),
            FeatureState::Buckets(bounds) => {
                for &b in bounds {
                    [b - 1.0, b, b + 1.0]
                        .into_iter()
                        .for_each(|x| push(field, Value::Num(x)));
                }
            }
            FeatureState::Scale { .. } => {
                [-1e300, 0.0, 1e300]
                    .into_iter()
                    .for_each(|x| push(field, Value::Num(x)));
            }
            FeatureState::Stateless => push(field, Value::Cat(7)),
        }
    }
    let rows = map.transform(&batch, &mut TransformCounts::default());
    assert_eq!(rows.len(), batch.len());
    for i in 0..rows.len() {
        let (indices, values) = rows.row(i);
        assert!(indices.iter().all(|&s| (s as usize) < map.dimension()));
        assert!(values.iter().all(|v| v.is_finite()));
        // Each feature's slots stay inside its own range: one per row, so an id past a
        // vocabulary's capacity cannot land in the next feature.
        for def in &map.layout.features {
            let n = indices
                .iter()
                .filter(|&&s| s >= def.offset && s < def.offset + def.width)
                .count();
            assert_eq!(n, 1, "{}: {n} slots in row {i}", def.name);
        }
    }
});
