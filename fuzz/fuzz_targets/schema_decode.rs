//! Fuzzes declared schemas and their decoders: the first byte picks either a `[schema]` section
//! read from the rest (any TOML compiles to a schema or a list of problems), or one of the four
//! schemas of `models/events/src/schema/testdata` (csv, tsv, json, libfm) with the default FeatureMap,
//! or the Criteo preset with hashed features, whose parser and event-time readers take the rest
//! as a record. Nothing may panic; a record is either one event, whose row has its slots below
//! the dimension, or an error that leaves the batch as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::fmap::{FeatureMapSpec, Parser, TransformCounts};
use millrace_models::schema::SchemaSpec;
use millrace_models::{event_time_ms, EventBatch, FeatureMap, FeatureSpec, Schema};

const SCHEMAS: [&str; 4] = [
    include_str!("../../models/events/src/schema/testdata/csv.toml"),
    include_str!("../../models/events/src/schema/testdata/tsv.toml"),
    include_str!("../../models/events/src/schema/testdata/json.toml"),
    include_str!("../../models/events/src/schema/testdata/libfm.toml"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick >= 0xf0 {
        if let Ok(spec) = std::str::from_utf8(rest).map(toml::from_str::<SchemaSpec>) {
            if let Ok(Ok(schema)) = spec.map(|s| s.compile()) {
                let _ = schema.event_time(b"1,2,3");
                let _ = schema.check_header(b"a,b");
            }
        }
        return;
    }
    let layout = match SCHEMAS.get(usize::from(pick) % (SCHEMAS.len() + 1)) {
        Some(text) => {
            let spec: SchemaSpec = toml::from_str(text).expect("a schema");
            let schema = spec.compile().expect("the schema compiles");
            FeatureMapSpec::default_for(&schema)
                .compile(&schema)
                .expect("the spec compiles")
        }
        None => {
            let _ = event_time_ms(rest, "ts");
            FeatureSpec::Hashed { hash_bits: 20 }
                .compile(&Schema::criteo())
                .expect("the hashed spec compiles")
        }
    };
    let schema = layout.schema.clone();
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(schema.fields.len());
    let _ = schema.event_time(rest);
    let _ = schema.check_header(rest);
    match parser.parse_record(rest, 0, &mut batch) {
        Ok(()) => {
            assert_eq!(batch.len(), 1);
            let map = FeatureMap::new(layout);
            let rows = map.transform(&batch, &mut TransformCounts::default());
            assert!(rows.indices.iter().all(|&i| (i as usize) < map.dimension()));
        }
        Err(_) => assert_eq!(batch, EventBatch::new(schema.fields.len())),
    }
});
