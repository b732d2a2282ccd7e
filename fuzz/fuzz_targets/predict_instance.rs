//! Fuzzes the JSON instance reader that serving runs on every predict request, over the Criteo
//! preset with hashed features (the demo model's): no input may panic; an instance is read as
//! one event, whose row has its slots below the dimension, or refused, leaving the batch as it
//! was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::fmap::{Parser, TransformCounts};
use millrace_models::{EventBatch, FeatureMap, FeatureSpec, Schema};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let layout = FeatureSpec::Hashed { hash_bits: 20 }
        .compile(&Schema::criteo())
        .expect("the hashed spec compiles");
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(layout.schema.fields.len());
    match parser.parse_json(&value, 0, &mut batch) {
        Ok(()) => {
            assert_eq!(batch.len(), 1);
            let map = FeatureMap::new(layout);
            let rows = map.transform(&batch, &mut TransformCounts::default());
            assert!(rows.indices.iter().all(|&i| (i as usize) < map.dimension()));
        }
        Err(_) => assert_eq!(batch, EventBatch::new(layout.schema.fields.len())),
    }
});
