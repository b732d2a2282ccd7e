//! Fuzzes the Open Inference Protocol `infer` reader that serving runs on every v2 request,
//! over the Criteo preset: no body may panic; one is read as at most `MAX_ROWS` instances, each
//! an object of schema fields that the instance parser reads as one event or refuses, or it is
//! refused with a 400 or a 413 and a reason. The first byte says whether the body carries
//! binary tensors, and the next two how long its JSON part is then.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::fmap::Parser;
use millrace_models::{EventBatch, FeatureSpec, Schema};

const MAX_ROWS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (header_length, body) = match (flags & 1, rest) {
        (1, [high, low, body @ ..]) => (Some(u16::from_be_bytes([*high, *low]).to_string()), body),
        _ => (None, rest),
    };
    let schema = Schema::criteo();
    let fields = |name: &str| {
        let i = schema.fields.iter().position(|f| f == name)?;
        schema.field_type(i)
    };
    match millrace_serving::infer_instances(body, header_length.as_deref(), &fields, MAX_ROWS) {
        Ok(instances) => {
            assert!(instances.len() <= MAX_ROWS);
            let layout = FeatureSpec::Hashed { hash_bits: 20 }
                .compile(&schema)
                .expect("the hashed spec compiles");
            let mut parser = Parser::new(&layout);
            for instance in instances {
                let value: serde_json::Value =
                    serde_json::from_str(instance.get()).expect("an instance is JSON");
                let object = value.as_object().expect("an instance is an object");
                assert!(object.keys().all(|key| fields(key).is_some()));
                let mut batch = EventBatch::new(schema.fields.len());
                let _ = parser.parse_json(&value, 0, &mut batch);
            }
        }
        Err((status, reason)) => {
            assert!(status == 400 || status == 413, "{status}: {reason}");
            assert!(!reason.is_empty());
        }
    }
});
