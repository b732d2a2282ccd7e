//! A registry topic's reader: versions round-trip, signatures are enforced, bad manifests are
//! refused before anything of them is kept, and no message makes loading or scoring panic.

use super::*;
use crate::{ModelArtifact, ServedModel};
use millrace_events::features::FeatureSpec;
use millrace_events::fmap::Schema;
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// A message of the topic: its key, its bytes and its signature header.
type Message = (String, Vec<u8>, Option<Vec<u8>>);

const SPEC: FeatureSpec = FeatureSpec::Hashed { hash_bits: 8 };

/// A factorization machine of `k` factors whose numbers depend on `seed`.
fn fm(version: u64, k: usize, seed: u32) -> ModelArtifact {
    let n = SPEC.dimension(&Schema::criteo());
    let value = |i: usize| ((i as u32 ^ seed) % 97) as f32 / 970.0 - 0.05;
    let weights = (0..n).map(value).collect();
    let factors = (0..n * k).map(|i| value(i + 7)).collect();
    let mut artifact = ModelArtifact::factorization_machine("ctr", SPEC, weights, k, factors);
    artifact.meta.version = version;
    artifact
}

/// The messages of a version in topic order, the manifest (signed with `key`) last.
fn messages(artifact: &ModelArtifact, key: Option<&RegistryKey>) -> Vec<Message> {
    let mut out = Vec::new();
    let json = feature_map_json(artifact).unwrap();
    let manifest = encode(artifact, json.as_deref(), |key, bytes, _| {
        out.push((key, bytes.to_vec(), None));
        Ok::<(), ()>(())
    })
    .unwrap();
    let signature = key.map(|key| key.sign(&manifest).into_bytes());
    out.push(("manifest/ctr".to_owned(), manifest, signature));
    out
}

fn feed(reader: &mut TopicReader, messages: &[Message]) -> Vec<Result<Taken, String>> {
    messages
        .iter()
        .map(|(key, bytes, signature)| reader.take(key, bytes, signature.as_deref()))
        .collect()
}

fn served(reader: &TopicReader, version: u64) -> crate::Result<ServedModel> {
    reader
        .snapshot("ctr", version)
        .expect("a complete version")
        .served(Path::new("kafka:test/ctr"))
}

fn key(byte: u8) -> RegistryKey {
    RegistryKey::new(vec![byte; KEY_MIN_BYTES]).unwrap()
}

#[test]
fn versions_round_trip_and_share_unchanged_chunks() {
    let mut reader = TopicReader::new(None);
    let first = fm(1, 4, 1);
    feed(&mut reader, &messages(&first, None));
    let mut second = first.clone();
    second.meta.version = 2;
    second.tensor_mut("weights").unwrap().values[3] += 1.0;
    let taken = feed(&mut reader, &messages(&second, None));
    assert_eq!(taken.last(), Some(&Ok(Taken::Version("ctr".to_owned(), 2))));
    assert_eq!(reader.versions("ctr"), vec![1, 2]);
    assert_eq!(
        served(&reader, 1).unwrap().to_artifact().tensors,
        first.tensors
    );
    assert_eq!(
        served(&reader, 2).unwrap().to_artifact().tensors,
        second.tensors
    );
    let (one, two) = (
        reader.snapshot("ctr", 1).unwrap(),
        reader.snapshot("ctr", 2).unwrap(),
    );
    let factors = |s: &Snapshot| {
        s.tensors
            .iter()
            .find(|t| t.name == "factors")
            .unwrap()
            .blocks[0]
            .clone()
    };
    assert!(
        Arc::ptr_eq(&factors(&one), &factors(&two)),
        "an unchanged chunk is shared"
    );
}

#[test]
fn a_reader_with_a_key_takes_only_manifests_signed_with_it() {
    let artifact = fm(1, 2, 3);
    for (signed_with, taken) in [(None, false), (Some(key(2)), false), (Some(key(1)), true)] {
        let mut reader = TopicReader::new(Some(key(1)));
        let results = feed(&mut reader, &messages(&artifact, signed_with.as_ref()));
        assert_eq!(results.last().unwrap().is_ok(), taken, "{results:?}");
        assert_eq!(reader.versions("ctr").len(), usize::from(taken));
    }
    // A signed manifest that names XXH3 digests (forgeable) is incomplete to a keyed reader.
    let mut reader = TopicReader::new(Some(key(1)));
    let mut messages = messages(&artifact, None);
    let mut manifest: Manifest = serde_json::from_slice(&messages.last().unwrap().1).unwrap();
    for tensor in &mut manifest.tensors {
        let key = format!("chunk/ctr/{}/0", tensor.name);
        let bytes = &messages.iter().find(|m| m.0 == key).unwrap().1;
        tensor.chunks = vec![format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))];
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let signature = key(1).sign(&bytes).into_bytes();
    *messages.last_mut().unwrap() = ("manifest/ctr".to_owned(), bytes, Some(signature));
    let taken = feed(&mut reader, &messages);
    assert!(
        matches!(taken.last(), Some(Ok(Taken::Incomplete { .. }))),
        "{taken:?}"
    );
    // Without a key the same manifest is taken: it is how versions before signing travel.
    let mut reader = TopicReader::new(None);
    let taken = feed(&mut reader, &messages);
    assert!(
        matches!(taken.last(), Some(Ok(Taken::Version(..)))),
        "{taken:?}"
    );
}

#[test]
fn bad_manifests_are_refused_and_the_versions_before_stay() {
    let mut reader = TopicReader::new(None);
    feed(&mut reader, &messages(&fm(1, 2, 5), None));
    let edit = |reader: &mut TopicReader, change: &dyn Fn(&mut serde_json::Value)| {
        let messages = messages(&fm(2, 2, 5), None);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&messages.last().unwrap().1).unwrap();
        change(&mut manifest);
        reader.take(
            "manifest/ctr",
            &serde_json::to_vec(&manifest).unwrap(),
            None,
        )
    };
    let refused = [
        edit(&mut reader, &|m| m["meta"]["version"] = u64::MAX.into()),
        edit(&mut reader, &|m| m["meta"]["version"] = 0.into()),
        edit(&mut reader, &|m| m["meta"]["name"] = "other".into()),
        edit(&mut reader, &|m| {
            m["tensors"][1]["rows"] = (usize::MAX / 2).into()
        }),
        edit(&mut reader, &|m| m["tensors"][0]["width"] = 0.into()),
        edit(&mut reader, &|m| {
            m["tensors"][0]["chunks"] = serde_json::json!([])
        }),
    ];
    for refusal in &refused {
        assert!(refusal.is_err(), "{refusal:?}");
    }
    assert!(reader.take("manifest/../etc", b"{}", None).is_err());
    assert!(reader.take("chunk/a b/weights/0", &[0; 4], None).is_err());
    assert_eq!(reader.versions("ctr"), vec![1]);
    // A factorization machine of no factors and no factor tensor is complete on the topic but
    // fails the whole-version check, and version 1 still serves.
    let taken = edit(&mut reader, &|m| {
        m["meta"]["architecture"] =
            serde_json::json!({"type": "factorization_machine", "factors": 0});
        m["tensors"].as_array_mut().unwrap().truncate(1);
    });
    assert_eq!(taken, Ok(Taken::Version("ctr".to_owned(), 2)));
    let err = served(&reader, 2).unwrap_err().to_string();
    assert!(err.contains("factors per slot"), "{err}");
    assert!(served(&reader, 1).is_ok());
}

#[test]
fn a_smaller_version_drops_the_chunks_it_no_longer_lists() {
    let mut reader = TopicReader::new(None);
    feed(&mut reader, &messages(&fm(1, 4, 1), None));
    reader.take("chunk/ctr2/factors/0", &[0; 8], None).unwrap();
    assert_eq!(reader.chunks.len(), 3);
    let mut lr = fm(2, 4, 1);
    lr.meta.architecture = millrace_learners::architecture::Architecture::LogisticRegression {};
    lr.tensors.truncate(1);
    feed(&mut reader, &messages(&lr, None));
    let mut kept: Vec<&str> = reader.chunks.keys().map(String::as_str).collect();
    kept.sort_unstable();
    assert_eq!(
        kept,
        ["chunk/ctr/weights/0", "chunk/ctr2/factors/0"],
        "another model's stay"
    );
    assert!(
        served(&reader, 1).is_ok(),
        "a kept version keeps its blocks"
    );
}

/// One change to a version's messages.
#[derive(Clone, Debug)]
enum Change {
    /// The `n`-th number in the manifest becomes `to`.
    Number(usize, u64),
    /// The `n`-th string in the manifest becomes `to`.
    Text(usize, String),
    /// The `n`-th message's bytes become `to`.
    Bytes(usize, Vec<u8>),
    /// The `n`-th message is lost.
    Lost(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0usize..64, prop_oneof![0u64..40, any::<u64>()]).prop_map(|(n, to)| Change::Number(n, to)),
        (0usize..64, "[a-z0-9_/.]{0,12}").prop_map(|(n, to)| Change::Text(n, to)),
        (0usize..8, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(n, to)| Change::Bytes(n, to)),
        (0usize..8).prop_map(Change::Lost),
    ]
}

/// Visits the leaves of `value` that `pick` wants, counting them.
fn nth_leaf(
    value: &mut serde_json::Value,
    pick: &dyn Fn(&serde_json::Value) -> bool,
    n: &mut usize,
    set: &dyn Fn(&mut serde_json::Value),
) {
    match value {
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| nth_leaf(v, pick, n, set)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| nth_leaf(v, pick, n, set)),
        leaf if pick(leaf) => {
            if *n == 0 {
                set(leaf);
            }
            *n = n.wrapping_sub(1);
        }
        _ => {}
    }
}

fn apply(messages: &mut Vec<Message>, change: &Change) {
    if messages.is_empty() {
        return;
    }
    let last = messages.len() - 1;
    // An earlier change may have broken or lost the manifest: then only bytes change.
    let Ok(mut manifest) = serde_json::from_slice::<serde_json::Value>(&messages[last].1) else {
        if let Change::Bytes(n, to) = change {
            let i = n % messages.len();
            messages[i].1 = to.clone();
        }
        return;
    };
    match change {
        Change::Number(n, to) => {
            nth_leaf(&mut manifest, &|v| v.is_number(), &mut n.clone(), &|v| {
                *v = (*to).into()
            })
        }
        Change::Text(n, to) => nth_leaf(&mut manifest, &|v| v.is_string(), &mut n.clone(), &|v| {
            *v = to.clone().into()
        }),
        Change::Bytes(n, to) => {
            let i = n % messages.len();
            messages[i].1 = to.clone();
            return;
        }
        Change::Lost(n) => {
            messages.remove(n % messages.len());
            return;
        }
    }
    messages[last].1 = serde_json::to_vec(&manifest).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, every version the reader calls complete loads into a model that scores
    /// any row, or fails to load with an error: nothing panics.
    #[test]
    fn no_message_makes_loading_or_scoring_panic(
        k in 1usize..4,
        changes in proptest::collection::vec(change(), 1..4),
        rows in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..8), 1..4),
    ) {
        let mut reader = TopicReader::new(None);
        feed(&mut reader, &messages(&fm(1, k, 9), None));
        let mut next = messages(&fm(2, k, 10), None);
        for change in &changes {
            apply(&mut next, change);
        }
        let _ = feed(&mut reader, &next);
        for version in reader.versions("ctr") {
            if let Ok(model) = served(&reader, version) {
                for row in &rows {
                    let values = vec![1.0; row.len()];
                    let p = model.predict_row(row, &values);
                    // Finite numbers whose sums overflow `f32` may score NaN; never outside [0, 1].
                    prop_assert!(p.is_nan() || (0.0..=1.0).contains(&p), "{}", p);
                }
            }
        }
        prop_assert!(served(&reader, 1).is_ok(), "the version before keeps serving");
    }
}

#[test]
fn a_replayed_older_manifest_is_refused_and_forgets_nothing() {
    let mut reader = TopicReader::new(Some(key(1)));
    let first = messages(&fm(1, 2, 1), Some(&key(1)));
    feed(&mut reader, &first);
    let mut second = fm(2, 2, 1);
    second.tensor_mut("weights").unwrap().values[0] += 1.0;
    feed(&mut reader, &messages(&second, Some(&key(1))));
    let chunks = reader.chunks.len();
    let replayed = feed(&mut reader, &first);
    assert!(replayed.last().unwrap().is_err(), "{replayed:?}");
    assert_eq!(reader.versions("ctr"), vec![1, 2]);
    assert_eq!(reader.chunks.len(), chunks);
    assert_eq!(
        served(&reader, 2).unwrap().to_artifact().tensors,
        second.tensors
    );
}

#[test]
fn parts_under_keys_no_publisher_writes_or_past_the_limit_are_refused() {
    let mut reader = TopicReader::new(None).with_unlisted_limit(64);
    for key in [
        "chunk/ctr/weights/+0",
        "chunk/ctr/weights/00",
        "chunk/ctr/weights",
        "chunk/ctr//0",
        "chunk/ctr",
        "fmap/ctr/01",
        "fmap/c tr/0",
    ] {
        assert!(reader.take(key, &[0; 4], None).is_err(), "{key}");
    }
    reader.take("chunk/a/weights/0", &[0; 48], None).unwrap();
    let past = reader.take("chunk/b/weights/0", &[0; 48], None);
    assert!(past.unwrap_err().contains("limit of 64 bytes"));
    // The same key again replaces its bytes rather than adding to them.
    reader.take("chunk/a/weights/0", &[1; 60], None).unwrap();
}

/// A factorization machine of 32 factors over more rows than one chunk holds: every chunk
/// fits the broker's limit, and the reader puts the version together as it was.
#[test]
fn wide_tensors_travel_in_chunks_that_fit_a_message() {
    let wide = fm(1, 32, 3);
    let width = 33;
    assert_eq!(chunk_rows(width), 4096);
    assert_eq!(chunk_rows(9), crate::table::CHUNK_ROWS);
    let mut rows = wide.clone();
    let n = 3 * crate::table::CHUNK_ROWS + 5;
    rows.tensors = wide
        .tensors
        .iter()
        .map(|t| {
            let mut t = t.clone();
            let w = t.values.len() / t.shape[0];
            t.shape[0] = n;
            t.values = (0..n * w).map(|i| (i % 89) as f32 / 890.0).collect();
            t
        })
        .collect();
    rows.meta.features = FeatureSpec::Hashed { hash_bits: 0 };
    let sent = messages(&rows, None);
    let largest = sent.iter().map(|(_, bytes, _)| bytes.len()).max().unwrap();
    assert!(largest <= MAX_CHUNK_BYTES, "{largest} bytes in one message");
    let manifest: Manifest = serde_json::from_slice(&sent.last().unwrap().1).unwrap();
    let factors = manifest
        .tensors
        .iter()
        .find(|t| t.name == "factors")
        .unwrap();
    assert_eq!((factors.chunk_rows, factors.chunks.len()), (4096, 13));
    let mut reader = TopicReader::new(None);
    let taken = feed(&mut reader, &sent);
    assert_eq!(taken.last(), Some(&Ok(Taken::Version("ctr".to_owned(), 1))));
    let snapshot = reader.snapshot("ctr", 1).unwrap();
    let blocks: Vec<_> = snapshot.tensors.iter().map(|t| t.blocks.len()).collect();
    assert_eq!(blocks, [4, 4]);
    let joined: Vec<f32> = snapshot.tensors[1]
        .blocks
        .iter()
        .flat_map(|b| b.iter().copied())
        .collect();
    assert_eq!(joined, rows.tensors[1].values);
}

#[test]
fn chunk_sizes_a_manifest_cannot_have_are_refused() {
    let sent = messages(&fm(1, 2, 1), None);
    let manifest: Manifest = serde_json::from_slice(&sent.last().unwrap().1).unwrap();
    for (chunk_rows, why) in [
        (0, "power of two"),
        (3, "power of two"),
        (1 << 15, "power of two"),
        (2, "chunks of 2"),
    ] {
        let mut bad = manifest.clone();
        bad.tensors[0].chunk_rows = chunk_rows;
        let mut reader = TopicReader::new(None);
        feed(&mut reader, &sent[..sent.len() - 1]);
        let refused = reader
            .take("manifest/ctr", &serde_json::to_vec(&bad).unwrap(), None)
            .unwrap_err();
        assert!(refused.contains(why), "{chunk_rows}: {refused}");
    }
}
