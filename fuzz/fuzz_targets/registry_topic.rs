//! Fuzzes what a registry topic's reader takes from the network: a valid version's messages,
//! patched by the input, then any messages the input spells. Every version the reader calls
//! complete loads into a model that scores any row to a probability, or fails to load with an
//! error; nothing panics, and the valid version before keeps loading.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::topic::{encode, TopicReader};
use millrace_models::{FeatureSpec, ModelArtifact, Schema};
use std::path::Path;

/// A factorization machine of two factors, as version `version`.
fn fm(version: u64, weight: f32) -> ModelArtifact {
    let spec = FeatureSpec::Hashed { hash_bits: 6 };
    let n = spec.dimension(&Schema::criteo());
    let mut artifact =
        ModelArtifact::factorization_machine("ctr", spec, vec![weight; n], 2, vec![0.01; 2 * n]);
    artifact.meta.version = version;
    artifact
}

/// A version's messages, its manifest last.
fn messages(artifact: &ModelArtifact) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let manifest = encode(artifact, None, |key, bytes, _| {
        out.push((key, bytes.to_vec()));
        Ok::<(), ()>(())
    })
    .expect("encodes");
    out.push(("manifest/ctr".to_owned(), manifest));
    out
}

/// Applies the input's patches to `messages`: a count, then per patch the message, an offset,
/// a byte and what to do (overwrite, truncate, insert). Returns the rest of the input.
fn patch<'a>(messages: &mut [(String, Vec<u8>)], data: &'a [u8]) -> &'a [u8] {
    let Some((&count, mut rest)) = data.split_first() else {
        return data;
    };
    for _ in 0..count {
        let [m, a, b, byte, op, tail @ ..] = rest else {
            return &[];
        };
        rest = tail;
        let bytes = &mut messages[usize::from(*m) % messages.len()].1;
        let at = usize::from(u16::from_le_bytes([*a, *b])) % (bytes.len() + 1);
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = *byte,
            1 => bytes.truncate(at),
            _ => bytes.insert(at, *byte),
        }
    }
    rest
}

/// Messages spelled by the input: a key kind, a length and the payload.
fn spelled(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let [kind, lo, hi, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        data = tail;
        let key = match kind % 5 {
            0 => "manifest/ctr".to_owned(),
            1 => format!("chunk/ctr/weights/{}", kind / 5),
            2 => format!("chunk/ctr/factors/{}", kind / 5),
            3 => format!("fmap/ctr/{}", kind / 5),
            _ => String::from_utf8_lossy(payload).into_owned(),
        };
        out.push((key, payload.to_vec()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut reader = TopicReader::new(None);
    for (key, bytes) in messages(&fm(1, 0.01)) {
        reader.take(&key, &bytes, None).expect("a valid version is taken");
    }
    let mut next = messages(&fm(2, 0.02));
    let rest = patch(&mut next, data);
    next.extend(spelled(rest));
    for (key, bytes) in &next {
        let _ = reader.take(key, bytes, None);
    }
    for version in reader.versions("ctr") {
        let Some(snapshot) = reader.snapshot("ctr", version) else {
            continue;
        };
        if let Ok(model) = snapshot.served(Path::new("kafka:fuzz/ctr")) {
            for row in [&[0u32, 5, 17][..], &[u32::MAX, 3], &[]] {
                let p = model.predict_row(row, &vec![1.0; row.len()]);
                // Finite numbers whose sums overflow `f32` may score NaN; never outside [0, 1].
                assert!(p.is_nan() || (0.0..=1.0).contains(&p), "a probability, got {p}");
            }
        }
    }
    if let Some(first) = reader.snapshot("ctr", 1) {
        first
            .served(Path::new("kafka:fuzz/ctr"))
            .expect("the valid version keeps loading");
    }
});
