//! The generators' signals are learnable: the Criteo generator's planted signal by FTRL, and
//! each declared schema's generated records by their Bayes probabilities. Here rather than
//! beside the generators because they need the learners and the metrics, which the events
//! crate does not depend on.

use millrace_models::fmap::{FeatureMapSpec, Parser, TransformCounts};
use millrace_models::schema::synth::{Generated, SchemaGenerator, START_MS};
use millrace_models::schema::{Role, SchemaSpec};
use millrace_models::synth::CriteoGenerator;
use millrace_models::{exact_auc, EventBatch, FeatureMap, FeatureSpec, Ftrl, FtrlParams, Schema};

#[test]
fn planted_signal_is_learnable() {
    let events: Vec<_> = CriteoGenerator::new(11).take(60_000).collect();
    let rate = events.iter().filter(|e| e.label).count() as f64 / events.len() as f64;
    assert!((0.1..0.4).contains(&rate), "click rate {rate}");
    let layout = FeatureSpec::Hashed { hash_bits: 20 }
        .compile(&Schema::criteo())
        .unwrap();
    let mut ftrl = Ftrl::new(FtrlParams::default(), layout.dimension);
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(layout.schema.fields.len());
    for e in &events {
        parser
            .parse_record(e.to_tsv().as_bytes(), 0, &mut batch)
            .unwrap();
    }
    let rows = FeatureMap::new(layout).transform(&batch, &mut TransformCounts::default());
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    for (i, e) in events.iter().enumerate() {
        let p = ftrl.learn(rows.row(i).0, e.label);
        if i >= 50_000 {
            preds.push(p);
            labels.push(e.label);
        }
    }
    let auc = exact_auc(&preds, &labels).unwrap();
    assert!(auc > 0.7, "auc {auc}");
}

/// The schemas of the events crate's `schema/testdata/`, one per format.
const SCHEMAS: [&str; 4] = [
    include_str!("../events/src/schema/testdata/csv.toml"),
    include_str!("../events/src/schema/testdata/tsv.toml"),
    include_str!("../events/src/schema/testdata/json.toml"),
    include_str!("../events/src/schema/testdata/libfm.toml"),
];

/// Every schema's records parse as events with the generated labels, and their Bayes AUC
/// shows a signal.
#[test]
fn records_parse_with_their_labels_and_carry_a_signal() {
    for text in SCHEMAS {
        let schema = toml::from_str::<SchemaSpec>(text)
            .unwrap()
            .compile()
            .unwrap();
        let layout = FeatureMapSpec::default_for(&schema)
            .compile(&schema)
            .unwrap();
        let mut parser = Parser::new(&layout);
        let mut generator = SchemaGenerator::new(&schema, 3);
        if let Some(header) = generator.header() {
            assert_eq!(schema.check_header(header.as_bytes()), Ok(()));
        }
        let mut batch = EventBatch::new(schema.fields.len());
        let (mut probabilities, mut labels) = (Vec::new(), Vec::new());
        for i in 0..5000 {
            let g = generator.next_record();
            parser
                .parse_record(g.record.as_bytes(), 0, &mut batch)
                .unwrap_or_else(|e| panic!("{text}: {e}: {}", g.record));
            assert_eq!(batch.labels[i], g.label);
            if schema.record().columns.iter().any(|c| c.role == Role::Time) {
                let t = schema.event_time(g.record.as_bytes()).unwrap();
                assert!(t >= START_MS as u64 - 3_600_000, "{t}");
            }
            probabilities.push(g.probability);
            labels.push(g.label);
        }
        assert_eq!(parser.bad.total(), 0, "{text}");
        let auc = exact_auc(&probabilities, &labels).unwrap();
        assert!(auc > 0.6, "{text}: Bayes AUC {auc}");
        let again: Vec<Generated> = SchemaGenerator::new(&schema, 3).take(5).collect();
        let first: Vec<Generated> = SchemaGenerator::new(&schema, 3).take(5).collect();
        assert_eq!(again, first);
    }
}
