//! The environment's overrides of a job file's keys.

/// Applies `MILLRACE__KEY=value`, `MILLRACE__SECTION__KEY=value`, and deeper
/// (`MILLRACE__SINKS__DEAD_LETTERS_SINK__PATH` is `[sinks] dead_letters_sink.path`): each part
/// a table, created when absent, the last the key; names are lowercased, and the value is read
/// as TOML, or taken as a string when it is not. Returns the overrides that cannot apply, as
/// problems.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, raw) in env {
        let Some(path) = key.strip_prefix("MILLRACE__") else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            problems.push(format!("`{key}`: an empty name between `__`"));
            continue;
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        if let Err(problem) = set(table, &parts, value) {
            problems.push(format!("`{key}`: {problem}"));
        }
    }
    problems
}

/// Sets the key at `path` (tables, then the key) to `value`, creating the tables missing.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (key, tables) = path.split_last().ok_or("no key")?;
    let mut current = table;
    for (depth, name) in tables.iter().enumerate() {
        let entry = current
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", path[..=depth].join(".")))?;
    }
    current.insert(key.clone(), value);
    Ok(())
}
