//! Fuzzes the JSON instance decoder that serving runs on every predict request: no input may
//! panic, and every instance that decodes round-trips through its JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::CriteoFeatures;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(features) = CriteoFeatures::from_json(&value) {
            assert_eq!(
                CriteoFeatures::from_json(&features.to_json()).unwrap(),
                features
            );
        }
    }
});
