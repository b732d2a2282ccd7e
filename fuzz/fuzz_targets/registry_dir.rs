//! Fuzzes what serving reads from a registry directory: a valid version, then a second one
//! whose `weights.safetensors` and `chunks.json` the input patches, loaded as serving loads it
//! (sharing with the first, and alone). It loads into the tensors that were published, which
//! score any row to a probability, or fails with an error; nothing panics, and the first
//! version keeps loading.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::{FeatureSpec, LoadPace, ModelArtifact, Registry};
use std::fs;

/// A factorization machine of two factors over 2^15 slots (two chunks of each tensor).
fn fm(weight: f32) -> ModelArtifact {
    let spec = FeatureSpec::Hashed { hash_bits: 15 };
    let n = spec.dimension(&millrace_models::Schema::criteo());
    ModelArtifact::factorization_machine("ctr", spec, vec![weight; n], 2, vec![0.01; 2 * n])
}

/// Applies the input's patches to the two files: a count, then per patch the file, an offset,
/// a byte and what to do (overwrite, truncate, insert).
fn patch(files: &mut [Vec<u8>; 2], data: &[u8]) {
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    for _ in 0..count {
        let [f, a, b, c, byte, op, tail @ ..] = rest else {
            return;
        };
        rest = tail;
        let bytes = &mut files[usize::from(*f) % 2];
        let at = (usize::from(*a) | usize::from(*b) << 8 | usize::from(*c) << 16) % (bytes.len() + 1);
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = *byte,
            1 => bytes.truncate(at),
            _ => bytes.insert(at, *byte),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let registry = Registry::open(dir.path()).expect("opens");
    registry.publish(&mut fm(0.01)).expect("publishes");
    let mut second = fm(0.02);
    second.tensor_mut("factors").expect("an FM has factors").values[7] = 0.5;
    registry.publish(&mut second).expect("publishes");
    let version = dir.path().join("ctr/v0000000002");
    let names = ["weights.safetensors", "chunks.json"];
    let mut files = names.map(|name| fs::read(version.join(name)).expect("reads"));
    patch(&mut files, data);
    for (name, bytes) in names.iter().zip(&files) {
        fs::write(version.join(name), bytes).expect("writes");
    }
    let first = registry
        .load_served("ctr", 1, None, LoadPace::default())
        .expect("the valid version loads");
    for base in [Some(&first), None] {
        if let Ok(model) = registry.load_served("ctr", 2, base, LoadPace::default()) {
            // Digests cannot be forged by chance: what loads is what was published.
            assert_eq!(model.to_artifact().tensors, second.tensors);
            for row in [&[0u32, 5, 17][..], &[u32::MAX, 3], &[]] {
                let p = model.predict_row(row, &vec![1.0; row.len()]);
                assert!(p.is_nan() || (0.0..=1.0).contains(&p), "a probability, got {p}");
            }
        }
    }
});
