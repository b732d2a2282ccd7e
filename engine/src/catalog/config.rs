//! Reading a source's or a sink's table as a built-in type's settings, with every problem of
//! it, and making its `path` absolute.

use crate::section::{section, Read};
use serde::de::DeserializeOwned;

/// A source's or a sink's table (its keys other than `type`) as `T`, or every problem of it (unknown
/// keys, wrong types, missing keys), each naming its key.
pub(crate) fn read_config<T: DeserializeOwned>(config: &toml::Table) -> Result<T, Vec<String>> {
    const NAME: &str = "settings";
    let wrapped = toml::Table::from_iter([(NAME.to_owned(), toml::Value::Table(config.clone()))]);
    let mut problems = Vec::new();
    let read = section::<T>(&wrapped, NAME, true, &mut problems);
    match read {
        Read::Whole(value) if problems.is_empty() => Ok(value),
        _ => {
            let prefix = format!("[{NAME}] ");
            Err(problems
                .into_iter()
                .map(|p| p.strip_prefix(&prefix).map(str::to_owned).unwrap_or(p))
                .collect())
        }
    }
}

/// Makes the table's `path`, when it is relative (and not empty), relative to `folder`.
pub(crate) fn resolve_path_key(config: &mut toml::Table, folder: &std::path::Path) {
    if let Some(toml::Value::String(path)) = config.get_mut("path") {
        if !path.is_empty() && std::path::Path::new(path.as_str()).is_relative() {
            *path = folder.join(&*path).to_string_lossy().into_owned();
        }
    }
}
