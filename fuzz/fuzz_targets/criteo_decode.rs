//! Fuzzes the Criteo TSV and JSON decoders, the event-time field reader and the feature
//! transform: no input may panic, and every line that decodes re-encodes to a line that decodes
//! to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::{event_time_ms, CriteoEvent, FeatureSpec, RecordFormat};

fuzz_target!(|data: &[u8]| {
    let _ = event_time_ms(data, "ts");
    let _ = RecordFormat::Json {
        ignore: Some("ts".into()),
    }
    .decode(data);
    if let Ok(event) = CriteoEvent::decode_tsv(data) {
        let again =
            CriteoEvent::decode_tsv(event.to_tsv().as_bytes()).expect("re-encoded line decodes");
        assert_eq!(again, event);
        let spec = FeatureSpec::Hashed { hash_bits: 20 };
        let mut row = Vec::new();
        spec.transform(&event.features, &mut row);
        assert!(row.iter().all(|&i| (i as usize) < spec.dimension(&millrace_models::Schema::criteo())));
    }
});
