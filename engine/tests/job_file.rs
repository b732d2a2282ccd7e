//! The job file's schema: the JSON Schema and the reference in `docs/` are the ones the config
//! types generate, every key is documented, the examples are valid to both the reader and the
//! JSON Schema (checked by the `jsonschema` package, which also refuses a wrong job file), and
//! `millrace validate` places every problem at its line and column.

use millrace_engine::catalog::Catalog;
use millrace_engine::JobSpec;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const EXAMPLES: [&str; 5] = [
    "examples/ctr.toml",
    "examples/avazu.toml",
    "examples/frappe.toml",
    "examples/movielens.toml",
    "k8s/base/job/job.toml",
];

/// The `millrace` binary, without the environment's job-file overrides.
fn millrace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MILLRACE__") {
            command.env_remove(key);
        }
    }
    command
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `docs/<name>` equals `generated`; with `MILLRACE_BLESS=1`, it is written.
fn check_generated(name: &str, generated: &str) {
    let path = repo(&format!("docs/{name}"));
    if std::env::var("MILLRACE_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, generated).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == generated,
        "docs/{name} is not what the config types generate: write it again with \
         `MILLRACE_BLESS=1 cargo test -p millrace-engine --test job_file`"
    );
}

#[test]
fn the_reference_and_the_json_schema_in_docs_are_the_generated_ones() {
    check_generated("job-file.md", &JobSpec::reference());
    let schema = serde_json::to_string_pretty(&JobSpec::job_file_schema()).unwrap() + "\n";
    check_generated("job-file.schema.json", &schema);
}

/// The keys of `schema`'s tables without documentation (their own, or their definition's), as
/// JSON pointers; a type's tag (`type = "kafka"`, a constant) needs none.
fn undocumented(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(schema, schema, "", &mut found);
    found
}

fn walk(root: &Value, schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::Object(properties)) = object.get("properties") {
                for (key, property) in properties {
                    let documented = |p: &Value| {
                        p.get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty())
                    };
                    let target = property
                        .get("$ref")
                        .and_then(Value::as_str)
                        .and_then(|r| root.pointer(r.trim_start_matches('#')));
                    if property.get("const").is_none()
                        && !documented(property)
                        && !target.is_some_and(documented)
                    {
                        found.push(format!("{at}/properties/{key}"));
                    }
                }
            }
            for (key, value) in object {
                walk(root, value, &format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(root, item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_key_of_the_job_file_is_documented() {
    let missing = undocumented(&JobSpec::job_file_schema());
    assert!(
        missing.is_empty(),
        "keys without a doc comment: {missing:#?}"
    );
    // What the check finds: a key without documentation, at any depth, and not a
    // documented one, one whose definition is documented, or a tag.
    let schema = json!({
        "properties": {
            "a": { "type": "string" },
            "b": { "type": "string", "description": "B." },
            "c": { "$ref": "#/$defs/C" },
            "type": { "const": "x" },
        },
        "$defs": { "C": { "description": "C.", "properties": { "d": { "type": "integer" } } } },
    });
    assert_eq!(
        undocumented(&schema),
        ["/properties/a", "/$defs/C/properties/d"]
    );
}

#[test]
fn the_examples_are_valid_to_the_reader_and_to_the_json_schema() {
    let catalog = Catalog::builtin();
    for example in EXAMPLES {
        let problems = JobSpec::validate_file_in(&repo(example), &catalog).unwrap();
        assert!(problems.is_empty(), "{example}: {problems:?}");
    }
    let python = std::env::var("MILLRACE_INTEROP_PYTHON")
        .expect("MILLRACE_INTEROP_PYTHON is unset: run the tests with `make test`");
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("job-file.schema.json");
    std::fs::write(&schema, JobSpec::job_file_schema().to_string()).unwrap();
    let out = Command::new(python)
        .arg(repo("scripts/job_schema_check.py"))
        .arg(&schema)
        .args(EXAMPLES.map(repo))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job file with a problem of every kind: an unknown key, a missing one, a value out of
/// range in the source, an unknown field type, a bad sink path.
const WRONG: &str = r#"name = "wrong"
nmae = "typo"

[source]
type = "file"
path = "events.csv"
rows_per_sec = -3

[schema]
format = "csv"
fields = [
  { name = "click", type = "label" },
  { name = "site", type = "categroy" },
]

[features]
type = "map"
transform = []

[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 1.0

[publish]
registry = "registry"
every_events = 0

[sinks]
dead_letters_sink = { type = "file", path = "" }
"#;

fn validate(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, text).unwrap();
    JobSpec::validate_file_in(&job, &Catalog::builtin())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn validate_places_every_problem_at_its_line_and_column() {
    let problems = validate(WRONG);
    let at = |prefix: &str| {
        problems
            .iter()
            .find(|p| p.contains(prefix))
            .unwrap_or_else(|| panic!("no problem with {prefix:?} in {problems:#?}"))
            .split(": ")
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(at("unknown key `nmae`"), "2:1");
    assert_eq!(at("[source] `rows_per_sec`"), "7:1");
    assert_eq!(at("[schema] `fields[1]`"), "13:3");
    assert_eq!(at("[learner] missing field `l2`"), "20:2");
    assert_eq!(at("[publish] `every_events`"), "28:1");
    assert_eq!(at("[sinks] `dead_letters_sink`"), "31:38");

    // A bad name, at its key.
    let problems = validate(&WRONG.replace("name = \"wrong\"", "name = \"my job\""));
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("1:1: `name` must be letters")),
        "{problems:?}"
    );

    // TOML that does not parse: every error, each at its place.
    let problems = validate("name = \"x\"\n[source\nk = = 2\n");
    assert!(problems.len() >= 2, "{problems:?}");
    assert!(
        problems[0].starts_with("2:8: not valid TOML: unclosed table"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("3:5: not valid TOML"),
        "{problems:?}"
    );

    // An override from the environment is not in the file: its problem has no place.
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::copy(repo("examples/ctr.toml"), &job).unwrap();
    let out = millrace()
        .arg("validate")
        .arg(&job)
        .env("MILLRACE__PUBLISH__EVERY_EVENTS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = format!(
        "{}: [publish] `every_events` must be > 0 (got 0) (set by `MILLRACE__PUBLISH__EVERY_EVENTS`)",
        job.display()
    );
    assert!(stderr.lines().any(|l| l == line), "{stderr}");
}

#[test]
fn the_command_prints_each_problem_after_the_file_and_fails_or_says_valid() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("wrong.toml");
    std::fs::write(&job, WRONG).unwrap();
    let out = millrace().arg("validate").arg(&job).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:2:1: unknown key `nmae`", job.display())),
        "{stderr}"
    );
    let out = millrace()
        .arg("validate")
        .arg(repo("examples/movielens.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).ends_with("valid\n"));
}
