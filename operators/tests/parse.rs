//! `ParseEvents` on records of every declared format (csv, tsv, json, libfm) with 1, 2 and 4
//! workers, against a plain reimplementation of each format that reads one record at a time:
//! the same events with the same values, and the same dead letters with the same reasons.

use millrace_models::fmap::value::fingerprint;
use millrace_models::fmap::{BadKind, FeatureMapSpec, Value};
use millrace_models::schema::text::parse_number;
use millrace_models::schema::SchemaSpec;
use millrace_models::{DeadLetter, EventBatch, Position, RawRecord, Schema};
use millrace_operators::{Checkpoints, FeaturizeStats, ParseEvents};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// A parsed event as the test compares it: the label and each field's value, a multi-valued
/// field as its tokens and weights.
#[derive(Clone, Debug, PartialEq)]
enum Parsed {
    Event(bool, Vec<Field>),
    Dead(String, String),
}

#[derive(Clone, Debug, PartialEq)]
enum Field {
    One(Value),
    Tokens(Vec<(u64, f32)>),
}

const SCHEMAS: [(&str, &str); 4] = [
    (
        "csv",
        r#"format = "csv"
           label_positive = ["yes"]
           label_negative = ["no"]
           fields = [
             { name = "id", type = "skip" },
             { name = "site", type = "category" },
             { name = "click", type = "label" },
             { name = "price", type = "number" },
             { name = "tags", type = "tokens", separator = "|" },
           ]"#,
    ),
    (
        "tsv",
        r#"format = "tsv"
           label_at_least = 4.0
           fields = [
             { name = "user", type = "category" },
             { name = "rating", type = "label" },
             { name = "ts", type = "time" },
             { name = "age", type = "number" },
           ]"#,
    ),
    (
        "json",
        r#"format = "json"
           fields = [
             { name = "y", type = "label" },
             { name = "user.id", type = "category" },
             { name = "user.score", type = "number" },
             { name = "tags", type = "tokens", separator = "," },
           ]"#,
    ),
    ("libfm", r#"format = "libfm""#),
];

fn pick<'a>(rng: &mut ChaCha8Rng, options: &[&'a str]) -> &'a str {
    options[rng.random_range(0..options.len())]
}

/// Seeded records of `format`, about one in eight malformed.
fn records(format: &str, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cats = ["a", "b", "site-7", "", "x y", "\u{e9}t\u{e9}", "17"];
    let nums = ["1", "-2.5", "", "3e2", "NaN", "x", "7"];
    (0..n)
        .map(|i| {
            let bad = rng.random::<f64>() < 0.125;
            let line = match format {
                "csv" => {
                    let label = if bad { "maybe" } else { pick(&mut rng, &["yes", "no"]) };
                    let site = pick(&mut rng, &cats);
                    let site = if rng.random::<f64>() < 0.2 {
                        format!("\"{site},\"\"q\"\"\"")
                    } else {
                        site.to_owned()
                    };
                    let tags = pick(&mut rng, &["a|b", "", "|c||d", "e"]);
                    let mut line = format!("{i},{site},{label},{},{tags}", pick(&mut rng, &nums));
                    if rng.random::<f64>() < 0.05 {
                        line.push_str(",extra");
                    }
                    line
                }
                "tsv" => {
                    let rating = if bad { "five" } else { pick(&mut rng, &["1", "3", "4", "5", "4.5"]) };
                    let mut line = format!(
                        "{}\t{rating}\t{}\t{}",
                        pick(&mut rng, &cats),
                        1_700_000_000 + i,
                        pick(&mut rng, &nums)
                    );
                    if rng.random::<f64>() < 0.05 {
                        line.truncate(line.rfind('\t').unwrap_or(0));
                    }
                    line
                }
                "json" => {
                    if bad && rng.random::<f64>() < 0.5 {
                        "{\"y\": 1, \"user\": ".to_owned()
                    } else {
                        let y = if bad { "\"2\"" } else { pick(&mut rng, &["1", "0", "true", "\"0\""]) };
                        let score = pick(&mut rng, &["3", "\"4.5\"", "null", "[1]", "\"x\""]);
                        let tags = pick(&mut rng, &["[\"a\",\"b\"]", "\"c,d\"", "[1]", "null"]);
                        format!(
                            "{{\"y\": {y}, \"user\": {{\"id\": {:?}, \"score\": {score}}}, \"tags\": {tags}, \"other\": {{\"k\": 1}}}}",
                            pick(&mut rng, &cats)
                        )
                    }
                }
                _ => {
                    let label = if bad { "2" } else { pick(&mut rng, &["1", "-1", "+1", "0"]) };
                    let mut line = label.to_owned();
                    for _ in 0..rng.random_range(0..5) {
                        line += &format!(" {}:{}", rng.random_range(0..50), pick(&mut rng, &["1", "0.5", "2"]));
                    }
                    if rng.random::<f64>() < 0.05 {
                        line.push_str(" 3:");
                    }
                    line + "\r"
                }
            };
            line.into_bytes()
        })
        .collect()
}

/// The plain reimplementation: one record at a time, from the schema's text alone.
fn reference(format: &str, line: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .to_owned();
    let dead = |kind: &str, why: String| Parsed::Dead(kind.to_owned(), why);
    let cat = |raw: &str| {
        if raw.is_empty() {
            Value::Missing
        } else {
            Value::Cat(fingerprint(raw.as_bytes()))
        }
    };
    let num = |raw: &str| match raw {
        "" => Value::Missing,
        raw => parse_number(raw.as_bytes()).map_or(Value::Bad(BadKind::NotNumeric), Value::Num),
    };
    let tokens = |raw: &str, sep: char| {
        let t: Vec<(u64, f32)> = raw
            .split(sep)
            .filter(|t| !t.is_empty())
            .map(|t| (fingerprint(t.as_bytes()), 1.0))
            .collect();
        if t.is_empty() {
            Field::One(Value::Missing)
        } else {
            Field::Tokens(t)
        }
    };
    match format {
        "csv" => {
            let cells = split_csv(&text);
            let label = match cells.get(2).map(String::as_str) {
                Some("yes") => true,
                Some("no") => false,
                _ => {
                    return dead(
                        "label",
                        "field `click` is neither a positive nor a negative label".into(),
                    )
                }
            };
            if cells.len() != 5 {
                return dead(
                    "field_count",
                    format!("expected 5 columns, got {}", cells.len()),
                );
            }
            Parsed::Event(
                label,
                vec![
                    Field::One(cat(&cells[1])),
                    Field::One(num(&cells[3])),
                    tokens(&cells[4], '|'),
                ],
            )
        }
        "tsv" => {
            let cells: Vec<&str> = text.split('\t').collect();
            let label = match cells.get(1).and_then(|r| r.parse::<f64>().ok()) {
                Some(r) => r >= 4.0,
                None => {
                    return dead(
                        "label",
                        "field `rating` is neither a positive nor a negative label".into(),
                    )
                }
            };
            if cells.len() != 4 {
                return dead(
                    "field_count",
                    format!("expected 4 columns, got {}", cells.len()),
                );
            }
            Parsed::Event(
                label,
                vec![Field::One(cat(cells[0])), Field::One(num(cells[3]))],
            )
        }
        "json" => {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                return Parsed::Dead("not_json".into(), String::new());
            };
            let label = match &value["y"] {
                serde_json::Value::Number(n) if n.as_u64() == Some(1) => true,
                serde_json::Value::Number(n) if n.as_u64() == Some(0) => false,
                serde_json::Value::Bool(b) => *b,
                serde_json::Value::String(s) if s == "1" || s == "true" => true,
                serde_json::Value::String(s) if s == "0" || s == "false" => false,
                _ => {
                    return dead(
                        "label",
                        "field `y` is neither a positive nor a negative label".into(),
                    )
                }
            };
            let scalar = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let user = &value["user"];
            let one = |v: &serde_json::Value, f: &dyn Fn(&str) -> Value| match v {
                serde_json::Value::Null => Value::Missing,
                v => scalar(v).map_or(Value::Bad(BadKind::WrongType), |s| f(&s)),
            };
            let tags = match &value["tags"] {
                serde_json::Value::Null => Field::One(Value::Missing),
                serde_json::Value::Array(items) => {
                    match items.iter().map(|i| i.as_str()).collect::<Option<Vec<_>>>() {
                        Some(items) => tokens(&items.join(","), ','),
                        None => Field::One(Value::Bad(BadKind::WrongType)),
                    }
                }
                v => scalar(v).map_or(Field::One(Value::Bad(BadKind::WrongType)), |s| {
                    tokens(&s, ',')
                }),
            };
            Parsed::Event(
                label,
                vec![
                    Field::One(one(&user["id"], &cat)),
                    Field::One(one(&user["score"], &num)),
                    tags,
                ],
            )
        }
        _ => {
            let mut parts = text.split_ascii_whitespace();
            let label = match parts.next() {
                Some("1" | "+1" | "true") => true,
                Some("0" | "-1" | "false") => false,
                _ => {
                    return dead(
                        "label",
                        "field `label` is neither a positive nor a negative label".into(),
                    )
                }
            };
            let mut pairs = Vec::new();
            for pair in parts {
                match pair
                    .split_once(':')
                    .and_then(|(i, v)| Some((i.parse::<u64>().ok()?, i, v.parse::<f32>().ok()?)))
                {
                    Some((_, i, v)) => pairs.push((fingerprint(i.as_bytes()), v)),
                    None => {
                        return dead(
                            "libfm_pair",
                            format!("field `features`: {pair:?} is not index:value"),
                        )
                    }
                }
            }
            let field = if pairs.is_empty() {
                Field::One(Value::Missing)
            } else {
                Field::Tokens(pairs)
            };
            Parsed::Event(label, vec![field])
        }
    }
}

/// A CSV line's cells, quotes read as RFC 4180 reads them.
fn split_csv(line: &str) -> Vec<String> {
    let (mut cells, mut cell, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            (_, c) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// What the dataflow made of the records, by position.
fn parse_with(
    workers: usize,
    format: &str,
    schema: &Schema,
    lines: &[Vec<u8>],
) -> BTreeMap<Position, Parsed> {
    let layout = FeatureMapSpec::default_for(schema).compile(schema).unwrap();
    let out = Arc::new(Mutex::new(BTreeMap::new()));
    let (lines, shared) = (Arc::new(lines.to_vec()), out.clone());
    let format = format.to_owned();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<RawRecord>>>::new();
        let probe = ProbeHandle::new();
        let (events_out, dead_out) = (shared.clone(), shared.clone());
        let layout = layout.clone();
        let json = format == "json";
        worker.dataflow::<u64, _, _>(|scope| {
            let (events, dead) = scope.input_from(&mut input).parse_events(
                layout,
                Arc::new(FeaturizeStats::default()),
                &Checkpoints::none(),
            );
            events
                .inspect(move |batch: &EventBatch| {
                    let mut out = events_out.lock().unwrap();
                    for i in 0..batch.len() {
                        let fields = batch
                            .row(i)
                            .iter()
                            .map(|v| match v {
                                Value::Multi { .. } => Field::Tokens(
                                    batch
                                        .multi(v)
                                        .iter()
                                        .copied()
                                        .zip(batch.multi_weights(v))
                                        .collect(),
                                ),
                                v => Field::One(*v),
                            })
                            .collect();
                        out.insert(batch.sources[i], Parsed::Event(batch.labels[i], fields));
                    }
                })
                .probe_with(&probe);
            dead.inspect(move |letter: &DeadLetter| {
                // serde_json's messages for text that is not JSON are its own.
                let why = if json && letter.error_kind == "not_json" {
                    String::new()
                } else {
                    letter.error.clone()
                };
                dead_out.lock().unwrap().insert(
                    letter.record.position(),
                    Parsed::Dead(letter.error_kind.clone(), why),
                );
            })
            .probe_with(&probe);
        });
        for (i, line) in lines.iter().enumerate().skip(index).step_by(peers) {
            input.send(RawRecord {
                partition: (i % 3) as i32,
                offset: i as i64,
                payload: line.clone(),
                timestamp_ms: Some(5),
            });
        }
        drop(input);
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

#[test]
fn every_format_parses_as_a_plain_reader_with_1_2_and_4_workers() {
    for (format, text) in SCHEMAS {
        let schema = toml::from_str::<SchemaSpec>(text)
            .unwrap()
            .compile()
            .unwrap();
        let lines = records(format, 600, 11);
        let want: BTreeMap<Position, Parsed> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                (
                    Position {
                        partition: (i % 3) as i32,
                        offset: i as i64,
                    },
                    reference(format, line),
                )
            })
            .collect();
        let dead = want
            .values()
            .filter(|p| matches!(p, Parsed::Dead(..)))
            .count();
        assert!(dead > 20 && dead < 200, "{format}: {dead} dead letters");
        for workers in [1, 2, 4] {
            let got = parse_with(workers, format, &schema, &lines);
            assert_eq!(got.len(), want.len(), "{format}, {workers} workers");
            for (position, parsed) in &want {
                assert_eq!(
                    got.get(position),
                    Some(parsed),
                    "{format}, {workers} workers, {position:?}: {:?}",
                    String::from_utf8_lossy(&lines[position.offset as usize])
                );
            }
        }
    }
}
