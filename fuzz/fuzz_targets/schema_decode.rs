//! Fuzzes declared schemas and their decoders: the first byte picks either a `[schema]` section
//! read from the rest (any TOML compiles to a schema or a list of problems), or one of four
//! schemas (csv with quotes and tokens, tsv with a rating label and a time field, nested JSON,
//! libFM) whose parser and event-time reader take the rest as a record. Nothing may panic; a
//! record is either one event or an error that leaves the batch as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_models::fmap::{FeatureMapSpec, Parser};
use millrace_models::schema::{FieldType, SchemaSpec};
use millrace_models::EventBatch;

const SCHEMAS: [&str; 4] = [
    r#"format = "csv"
       header = true
       fields = [
         { name = "id", type = "skip" },
         { name = "site", type = "category" },
         { name = "click", type = "label" },
         { name = "price", type = "number" },
         { name = "tags", type = "tokens", separator = "|" },
       ]"#,
    r#"format = "tsv"
       label_at_least = 4.0
       event_time_format = "%y%m%d%H"
       fields = [
         { name = "user", type = "category" },
         { name = "rating", type = "label" },
         { name = "hour", type = "time" },
         { name = "age", type = "number" },
       ]"#,
    r#"format = "json"
       event_time_format = "s"
       fields = [
         { name = "y", type = "label" },
         { name = "ts", type = "time" },
         { name = "user.id", type = "category" },
         { name = "user.score", type = "number" },
         { name = "tags", type = "tokens", separator = "," },
       ]"#,
    r#"format = "libfm""#,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick >= 0xf0 {
        if let Ok(spec) = std::str::from_utf8(rest).map(toml::from_str::<SchemaSpec>) {
            if let Ok(Ok(schema)) = spec.map(|s| s.compile()) {
                let _ = schema.event_time(b"1,2,3");
                let _ = schema.check_header(b"a,b");
            }
        }
        return;
    }
    let spec: SchemaSpec = toml::from_str(SCHEMAS[usize::from(pick) % SCHEMAS.len()]).expect("a schema");
    let schema = spec.compile().expect("the schema compiles");
    let mut text = String::new();
    for (i, name) in schema.fields.iter().enumerate() {
        let kind = match schema.field_type(i) {
            Some(FieldType::Number) => "standardize",
            _ => "one_hot",
        };
        text += &format!("[[transform]]\nkind = \"{kind}\"\nfields = [{name:?}]\n");
    }
    let layout = toml::from_str::<FeatureMapSpec>(&text)
        .expect("a spec")
        .compile(&schema)
        .expect("the spec compiles");
    let mut parser = Parser::new(&layout);
    let mut batch = EventBatch::new(schema.fields.len());
    let _ = schema.event_time(rest);
    let _ = schema.check_header(rest);
    match parser.parse_record(rest, 0, &mut batch) {
        Ok(()) => assert_eq!(batch.len(), 1),
        Err(_) => assert_eq!(batch, EventBatch::new(schema.fields.len())),
    }
});
