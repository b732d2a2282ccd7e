//! `[features] type = "hashed"` is a FeatureMap of one hashed feature: its rows are, slot for
//! slot, those of the formula the first generation hashed by (every field and a bias into one
//! space; numbers up to 2 as themselves, larger ones as `⌊ln(v)²⌋`; categories as the number of
//! their eight hex digits), reimplemented here line by line, on the Criteo sample, generated
//! events and edge cases.

use millrace_models::fmap::{Parser, TransformCounts};
use millrace_models::synth::CriteoGenerator;
use millrace_models::{EventBatch, FeatureMap, FeatureSpec, Schema};

const MISSING: u64 = 1 << 41;
const BUCKETED: u64 = 1 << 40;

fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn slot(field: u64, token: u64, bits: u32) -> u32 {
    let mixed = finalize(token ^ field.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32));
    (mixed & ((1 << bits) - 1)) as u32
}

/// The reference: a Criteo line's slots by the formula, `None` for a line it does not read.
fn reference(line: &str, bits: u32) -> Option<(bool, Vec<u32>)> {
    let columns: Vec<&str> = line.split('\t').collect();
    if columns.len() != 40 {
        return None;
    }
    let label = match columns[0] {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let mut row = vec![slot(255, 0, bits)];
    for (field, text) in columns[1..14].iter().enumerate() {
        let token = if text.is_empty() {
            MISSING
        } else {
            match text.parse::<i64>().ok()? {
                v if v <= 2 => v as u64,
                v => BUCKETED + ((v as f64).ln() * (v as f64).ln()) as u64,
            }
        };
        row.push(slot(field as u64, token, bits));
    }
    for (field, text) in columns[14..].iter().enumerate() {
        let token = if text.is_empty() {
            MISSING
        } else if text.len() == 8 {
            u64::from(u32::from_str_radix(text, 16).ok()?)
        } else {
            return None;
        };
        row.push(slot(13 + field as u64, token, bits));
    }
    Some((label, row))
}

/// Checks every line the reference reads against the FeatureMap's row; returns how many.
fn check(lines: &[String], bits: u32) -> usize {
    let layout = FeatureSpec::Hashed { hash_bits: bits }
        .compile(&Schema::criteo())
        .unwrap();
    assert_eq!(layout.dimension, 1 << bits);
    let map = FeatureMap::new(layout.clone());
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(layout.schema.fields.len());
    let mut expected = Vec::new();
    for line in lines {
        if let Some(row) = reference(line, bits) {
            parser.parse_record(line.as_bytes(), 0, &mut batch).unwrap();
            expected.push(row);
        }
    }
    let rows = map.transform(&batch, &mut TransformCounts::default());
    assert_eq!(rows.len(), expected.len());
    for (i, (label, slots)) in expected.iter().enumerate() {
        let (indices, values) = rows.row(i);
        assert_eq!(indices, slots.as_slice(), "row {i}");
        assert!(values.iter().all(|&v| v == 1.0));
        assert_eq!(rows.labels[i], *label);
    }
    expected.len()
}

#[test]
fn the_criteo_sample_hashes_as_the_formula_does() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/criteo-kaggle-dac-head8000/train.tsv"
    );
    let text = std::fs::read_to_string(path).expect("the Criteo sample in ../shared/data");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(check(&lines, 20), lines.len());
    assert_eq!(check(&lines[..500], 4), 500);
}

#[test]
fn generated_events_and_edge_values_hash_as_the_formula_does() {
    let mut lines: Vec<String> = CriteoGenerator::new(7)
        .take(5000)
        .map(|e| e.to_tsv())
        .collect();
    let mut edge = vec!["1".to_owned()];
    edge.extend(
        [
            "-1",
            "0",
            "2",
            "3",
            "9223372036854775807",
            "-9223372036854775808",
            "",
            "1000",
            "7",
            "-5",
            "1",
            "",
            "4",
        ]
        .map(str::to_owned),
    );
    edge.extend((0..26).map(|i| match i % 3 {
        0 => String::new(),
        1 => "ABCDEF01".to_owned(),
        _ => format!("{:08x}", 0x1234_5678u32.wrapping_mul(i)),
    }));
    lines.push(edge.join("\t"));
    assert_eq!(check(&lines, 20), lines.len());
}

/// A malformed value (not a number, not eight hex digits) is kept and counted: every one in a
/// field takes that field's one slot for malformed values, apart from its missing slot.
#[test]
fn malformed_values_take_one_slot_per_field() {
    let layout = FeatureSpec::Hashed { hash_bits: 30 }
        .compile(&Schema::criteo())
        .unwrap();
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(layout.schema.fields.len());
    let line = |i1: &str, c1: &str| format!("0\t{i1}{}\t{c1}{}", "\t".repeat(12), "\t".repeat(25));
    for (i1, c1) in [
        ("x", "zz"),
        ("1.5e", "0123456g"),
        ("", ""),
        ("3", "0000abcd"),
    ] {
        parser
            .parse_record(line(i1, c1).as_bytes(), 0, &mut batch)
            .unwrap();
    }
    assert_eq!(parser.bad.total(), 4);
    let rows = FeatureMap::new(layout).transform(&batch, &mut TransformCounts::default());
    let (i1, c1) = (|r: usize| rows.row(r).0[1], |r: usize| rows.row(r).0[14]);
    assert_eq!((i1(0), c1(0)), (i1(1), c1(1)));
    for good in [2, 3] {
        assert_ne!(i1(0), i1(good));
        assert_ne!(c1(0), c1(good));
    }
}

/// A predict instance of hashed features: numbers take numbers or their text, categories only
/// strings; another JSON type is refused, naming the field.
#[test]
fn instances_of_hashed_features_refuse_other_json_types() {
    let layout = FeatureSpec::Hashed { hash_bits: 20 }
        .compile(&Schema::criteo())
        .unwrap();
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(layout.schema.fields.len());
    let good = serde_json::json!({"I1": 3, "I2": "4", "C1": "68fd1e64", "C2": null, "label": 1});
    parser.parse_json(&good, 0, &mut batch).unwrap();
    for (bad, field) in [
        (serde_json::json!({"I9": false}), "I9"),
        (serde_json::json!({"C1": 12345678}), "C1"),
        (serde_json::json!({"C3": true}), "C3"),
        (serde_json::json!({"I1": [3]}), "I1"),
    ] {
        assert_eq!(
            parser.parse_json(&bad, 0, &mut batch),
            Err(millrace_models::DecodeError::WrongType(field.into())),
            "{bad}"
        );
    }
    assert_eq!(batch.len(), 1);
}
