//! The command line as containers and shells use it: completion scripts, every `serve` flag
//! from the environment with its range checked as it is parsed, and JSON logs whose progress
//! events carry their figures as fields.

use std::process::{Command, Stdio};
use std::time::Duration;

fn millrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
}

#[test]
fn completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = millrace().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["millrace", "serve", "produce", "log-format"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = millrace().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn serve_flags_come_from_the_environment_and_out_of_range_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = millrace();
        command
            .arg("serve")
            .args(args)
            .env("MILLRACE_REGISTRY", dir.path())
            .env("MILLRACE_BIND", "127.0.0.1:99999");
        for (key, value) in env {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The registry and the address come from the environment: it gets as far as binding.
    let stderr = serve(&[], &[]);
    assert!(stderr.contains("binding 127.0.0.1:99999"), "{stderr}");
    for (key, value, flag) in [
        ("MILLRACE_MAX_BATCH", "0", "--max-batch"),
        ("MILLRACE_LOAD_CPU_SHARE", "1.5", "--load-cpu-share"),
        ("MILLRACE_MAX_CONNECTIONS", "2000000", "--max-connections"),
        ("MILLRACE_HEADER_TIMEOUT_MS", "0", "--header-timeout-ms"),
    ] {
        let stderr = serve(&[(key, value)], &[]);
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{key}: {stderr}"
        );
    }
    let stderr = serve(&[], &["--max-in-flight", "0"]);
    assert!(stderr.contains("'--max-in-flight"), "{stderr}");
}

#[test]
fn json_logs_carry_the_progress_as_fields() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let registry = dir.path().join("registry");
    std::fs::write(
        &job,
        format!(
            r#"name = "ctr"
[source]
type = "generator"
rows_per_sec = 20000
[features]
type = "hashed"
hash_bits = 16
[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.5
l2 = 1.0
[publish]
registry = "{}"
every_seconds = 1
[progress]
interval_ms = 200
"#,
            registry.display()
        ),
    )
    .unwrap();
    let child = millrace()
        .args(["--log-format", "json", "run"])
        .arg(&job)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "millrace::progress")
        .collect();
    assert!(progress.len() >= 3, "{stderr}");
    let last = progress.last().unwrap();
    assert_eq!(last["message"], "progress");
    assert!(last["learned"].as_u64().unwrap() > 0, "{last}");
    assert!(last["events_per_sec"].is_number(), "{last}");
    assert!(last["model_version"].as_u64().unwrap() >= 1, "{last}");
    assert!(last["auc"].as_f64().is_some_and(|auc| auc > 0.5), "{last}");
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["timestamp"].is_string()));
}
