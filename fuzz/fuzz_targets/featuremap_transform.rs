//! Fuzzes the FeatureMap path: parsing a delimited line or a JSON instance by a spec that uses
//! every transform kind, fitting a version on what parsed, and transforming with it. No input
//! may panic; every row's slots are below the dimension, its values finite, and the count of
//! malformed values matches the `Bad` values kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::fmap::{
    FeatureFitter, FeatureMapSpec, Parser, Partials, Schema, TransformCounts, Value,
};
use millrace_models::{EventBatch, FeatureMap};

const SPEC: &str = include_str!("../../models/events/src/fmap/testdata/every_kind.toml");

fuzz_target!(|data: &[u8]| {
    let spec: FeatureMapSpec = toml::from_str(SPEC).expect("the spec parses");
    let layout = spec.compile(&Schema::criteo()).expect("the spec compiles");
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(39);
    let (json, rest) = match data.split_first() {
        Some((b'{', _)) => (true, data),
        _ => (false, data),
    };
    if json {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) {
            let _ = parser.parse_json(&value, 0, &mut batch);
        }
    } else {
        for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
            let _ = parser.parse_record(line, i as u64 * 700, &mut batch);
        }
    }
    let bad = batch
        .values
        .iter()
        .filter(|v| matches!(v, Value::Bad(_)))
        .count() as u64;
    assert_eq!(parser.bad.total(), bad);

    let mut partials = Partials::new(&layout, 1);
    partials.observe(&batch);
    let mut map = FeatureMap::new(layout.clone());
    let mut updates = Vec::new();
    for partial in partials.finish(0) {
        if let Some(mut fitter) = FeatureFitter::new(&layout, partial.feature) {
            updates.push(fitter.merge(vec![partial]));
        }
    }
    map.apply(&updates);
    let rows = map.transform(&batch, &mut TransformCounts::default());
    assert_eq!(rows.len(), batch.len());
    assert!(rows.indices.iter().all(|&i| (i as usize) < map.dimension()));
    assert!(rows.values.iter().all(|v| v.is_finite()));
    assert!(rows.indptr.windows(2).all(|w| w[0] <= w[1]));
});
