//! For any event and any FeatureMap version, the dataflow's parse + transform of the event's
//! delimited line and serving's transform of the same event as a JSON instance give the same
//! row.

use millrace_models::fmap::{FeatureMapSpec, FeatureUpdate, Parser, Schema, TransformCounts};
use millrace_models::{CsrBatch, EventBatch, FeatureMap, RawRecord};
use millrace_operators::{Checkpoints, FeaturizeStats, ParseEvents, TransformRows};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::{Inspect, ToStream};

/// One field's value: absent, an integer, or a short word from a small alphabet (so that
/// vocabularies hit as well as miss).
#[derive(Clone, Debug)]
enum Field {
    Absent,
    Int(i64),
    Word(String),
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Absent),
        (-5i64..2_000).prop_map(Field::Int),
        "[a-c]{1,2}".prop_map(Field::Word),
    ]
}

fn line(fields: &[Field]) -> String {
    let mut line = String::from("0");
    for f in fields {
        line.push('\t');
        match f {
            Field::Absent => {}
            Field::Int(x) => line.push_str(&x.to_string()),
            Field::Word(w) => line.push_str(w),
        }
    }
    line
}

fn instance(fields: &[Field], schema: &Schema) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (f, name) in fields.iter().zip(&schema.fields) {
        match f {
            Field::Absent => {}
            Field::Int(x) => {
                object.insert(name.clone(), (*x).into());
            }
            Field::Word(w) => {
                object.insert(name.clone(), w.clone().into());
            }
        }
    }
    serde_json::Value::Object(object)
}

/// A FeatureMap version fitted on `history`, `epochs` epochs of it.
fn fitted(spec: &FeatureMapSpec, history: &[Vec<Field>], epochs: usize) -> FeatureMap {
    let layout = spec.compile(&Schema::criteo()).unwrap();
    let mut parser = Parser::new(&layout);
    let per_epoch = history.len().div_ceil(epochs.max(1)).max(1);
    let batches: Vec<EventBatch> = history
        .chunks(per_epoch)
        .take(epochs)
        .map(|chunk| {
            let mut batch = EventBatch::new(39);
            for fields in chunk {
                parser
                    .parse_record(line(fields).as_bytes(), 0, &mut batch)
                    .unwrap();
            }
            batch
        })
        .collect();
    FeatureMap::fit(layout, &batches)
}

/// The dataflow's row of `line` under `map`: ParseEvents, then TransformRows starting from
/// `map` with no further updates.
fn dataflow_row(map: &FeatureMap, line: String) -> CsrBatch {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let (out, map, layout) = (rows.clone(), map.clone(), map.layout.clone());
    timely::example(move |scope| {
        let record = RawRecord {
            partition: 0,
            offset: 0,
            payload: line.into_bytes(),
            timestamp_ms: None,
        };
        let stats = Arc::new(FeaturizeStats::default());
        let (events, _dead) =
            vec![record]
                .to_stream(scope)
                .parse_events(layout, stats.clone(), &Checkpoints::none());
        let updates = Vec::<FeatureUpdate>::new().to_stream(scope);
        events
            .transform_rows(updates, map, stats, &Checkpoints::none(), |_, _| {})
            .inspect(move |rows: &CsrBatch| out.lock().unwrap().push(rows.clone()));
    });
    let mut rows = rows.lock().unwrap();
    assert_eq!(rows.len(), 1);
    rows.pop().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn dataflow_and_serving_make_the_same_row(
        event in proptest::collection::vec(field(), 39),
        history in proptest::collection::vec(proptest::collection::vec(field(), 39), 0..60),
        epochs in 0usize..4,
        min_count in 1u64..4,
    ) {
        let mut spec = FeatureMapSpec::criteo_default();
        for t in &mut spec.transforms {
            if let millrace_models::fmap::TransformSpec::OneHot { min_count: m, .. } = t {
                *m = min_count;
            }
        }
        let schema = Schema::criteo();
        let map = fitted(&spec, &history, epochs);
        let from_dataflow = dataflow_row(&map, line(&event));
        let text = instance(&event, &schema).to_string();
        let from_serving = millrace_serving::instance_rows(
            &map,
            millrace_models::fmap::Parser::new(&map.layout),
            &[text.as_str()],
            &mut TransformCounts::default(),
        )
        .unwrap();
        prop_assert_eq!(from_serving.version, map.version);
        prop_assert_eq!(from_dataflow.row(0), from_serving.row(0));
    }
}
