//! The environment's overrides of a job file's keys.

/// Applies `MILLRACE__KEY=value`, `MILLRACE__SECTION__KEY=value`, and deeper
/// (`MILLRACE__SINKS__DEAD_LETTERS_SINK__PATH` is `[sinks] dead_letters_sink.path`,
/// `MILLRACE__FEATURES__TRANSFORM__0__BUCKETS` the first transform's `buckets`): each part a
/// table, created when absent, or an element of an array of tables by its index, the last the
/// key; names are lowercased, and the value is read
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

/// Sets the key at `path` (tables, or elements of arrays of tables by their index from 0, then
/// the key) to `value`, creating the tables missing.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (key, tables) = path.split_last().ok_or("no key")?;
    let mut current = table;
    let mut depth = 0;
    while depth < tables.len() {
        let entry = current
            .entry(tables[depth].clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let entry = match entry {
            toml::Value::Array(elements) => {
                depth += 1;
                let index = tables.get(depth).and_then(|i| i.parse::<usize>().ok());
                let len = elements.len();
                index.and_then(|i| elements.get_mut(i)).ok_or_else(|| {
                    format!(
                        "`{}` is an array of {len}: name an element by its index from 0",
                        path[..depth].join(".")
                    )
                })?
            }
            other => other,
        };
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", path[..=depth].join(".")))?;
        depth += 1;
    }
    current.insert(key.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::apply_env;

    fn applied(text: &str, key: &str, value: &str) -> (toml::Table, Vec<String>) {
        let mut table: toml::Table = text.parse().unwrap();
        let problems = apply_env(&mut table, [(key.to_owned(), value.to_owned())]);
        (table, problems)
    }

    #[test]
    fn an_override_reaches_into_nested_tables_and_arrays_of_tables() {
        let text = "[features]\n[[features.transform]]\nbuckets = 8\n[[features.transform]]\nbuckets = 9\n";
        let (table, problems) = applied(text, "MILLRACE__FEATURES__TRANSFORM__1__BUCKETS", "32");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            table["features"]["transform"][1]["buckets"].as_integer(),
            Some(32)
        );
        assert_eq!(
            table["features"]["transform"][0]["buckets"].as_integer(),
            Some(8)
        );
        let (table, problems) = applied("", "MILLRACE__SINKS__DEAD_LETTERS_SINK__PATH", "/d");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            table["sinks"]["dead_letters_sink"]["path"].as_str(),
            Some("/d")
        );
    }

    #[test]
    fn an_override_past_an_array_or_through_a_value_is_a_problem() {
        let text = "[features]\n[[features.transform]]\nbuckets = 8\n";
        let (_, problems) = applied(text, "MILLRACE__FEATURES__TRANSFORM__3__BUCKETS", "32");
        assert_eq!(
            problems,
            ["`MILLRACE__FEATURES__TRANSFORM__3__BUCKETS`: `features.transform` is an array of 1: name an element by its index from 0"]
        );
        let (_, problems) = applied("name = \"x\"", "MILLRACE__NAME__INNER", "1");
        assert_eq!(problems, ["`MILLRACE__NAME__INNER`: `name` is not a table"]);
    }
}
