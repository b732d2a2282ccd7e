//! The environment's overrides of a job file's keys.

/// Applies `MILLRACE__SECTION__KEY=value` (or `MILLRACE__KEY=value` for top-level keys).
/// Returns the overrides that cannot apply, as problems.
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
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        match parts.as_slice() {
            [name] => {
                table.insert(name.clone(), value);
            }
            [section, name] => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(section) => {
                        section.insert(name.clone(), value);
                    }
                    None => problems.push(format!("`{key}`: `{section}` is not a section")),
                }
            }
            _ => problems.push(format!(
                "`{key}`: an override names a top-level key or a section and a key (`MILLRACE__SECTION__KEY`)"
            )),
        }
    }
    problems
}
