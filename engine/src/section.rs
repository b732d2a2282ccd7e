//! Reading one section of a job file ([`section`]): as much of it as can be read ([`Read`]), and
//! every problem of it.

use serde::de::DeserializeOwned;

/// How far a section of the job file could be read.
pub(crate) enum Read<T> {
    /// Not in the file.
    Absent,
    /// In the file, but not readable as the section at all.
    Unreadable,
    /// Read once its bad keys were left out: its values can be checked, the job not run.
    Partial(T),
    /// Read whole.
    Whole(T),
}

impl<T> Read<T> {
    /// The values to check of a required section.
    pub(crate) fn known(&self) -> Option<&T> {
        match self {
            Read::Partial(t) | Read::Whole(t) => Some(t),
            Read::Absent | Read::Unreadable => None,
        }
    }

    /// The values to check of an optional section: `Some(None)` when it is absent.
    pub(crate) fn optional(&self) -> Option<Option<&T>> {
        match self {
            Read::Absent => Some(None),
            Read::Unreadable => None,
            Read::Partial(t) | Read::Whole(t) => Some(Some(t)),
        }
    }

    /// The section, when it was read whole.
    pub(crate) fn whole(self) -> Option<T> {
        match self {
            Read::Whole(t) => Some(t),
            _ => None,
        }
    }
}

impl<T: Clone + Default> Read<T> {
    /// The values to check of a section with a default.
    pub(crate) fn or_default(&self) -> Option<T> {
        self.optional().map(|t| t.cloned().unwrap_or_default())
    }
}

/// Deserializes one section, collecting every problem of it. The whole section is tried first;
/// when it fails, each key is tried on its own (with the section's `type` tag, or with each tag
/// there is when it has none), each element of an array of tables on its own, and every
/// missing required key is found, so that all of them are reported, not only the first. What
/// is left once the bad keys are taken out is read as [`Read::Partial`], for the value checks.
pub(crate) fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Read<T> {
    let Some(value) = table.get(name) else {
        if required {
            problems.push(format!("missing section [{name}]"));
        }
        return Read::Absent;
    };
    let Some(section) = value.as_table() else {
        problems.push(format!(
            "[{name}] must be a table (got {})",
            value.type_str()
        ));
        return Read::Unreadable;
    };
    let read = |table: &toml::Table| T::deserialize(toml::Value::Table(table.clone()));
    if let Ok(parsed) = read(section) {
        return Read::Whole(parsed);
    }
    // The tags to try each key with: the section's own, each one there is when a tagged
    // section has none (after reporting that), or none for an untagged section.
    let tags: Vec<Option<toml::Value>> = match section.get("type") {
        Some(tag) => {
            let only_tag = toml::Table::from_iter([("type".to_owned(), tag.clone())]);
            match read(&only_tag) {
                Err(error) if !error.message().starts_with("missing field") => {
                    problems.push(format!("[{name}] `type`: {}", error.message()));
                    return Read::Unreadable;
                }
                _ => vec![Some(tag.clone())],
            }
        }
        None => match read(&toml::Table::new()) {
            Err(error) if error.message() == "missing field `type`" => {
                let tags = variants(|tag| {
                    read(&toml::Table::from_iter([("type".to_owned(), tag)])).map(|_| ())
                });
                problems.push(format!(
                    "[{name}] missing field `type` (one of {})",
                    tags.iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                tags.into_iter()
                    .map(|t| Some(toml::Value::String(t)))
                    .collect()
            }
            _ => vec![None],
        },
    };
    // A key is bad when it fails with every tag; the first tag's reason is reported.
    let fails = |key: &str, value: &toml::Value| -> Option<String> {
        let mut reason = None;
        for tag in &tags {
            let mut single = toml::Table::new();
            if let Some(tag) = tag {
                single.insert("type".to_owned(), tag.clone());
            }
            single.insert(key.to_owned(), value.clone());
            match read(&single) {
                Err(error) if !error.message().starts_with("missing field") => {
                    reason.get_or_insert_with(|| error.message().to_owned());
                }
                _ => return None,
            }
        }
        reason
    };
    let mut rest = section.clone();
    let before = problems.len();
    for (key, value) in section {
        if key == "type" {
            continue;
        }
        let Some(reason) = fails(key, value) else {
            continue;
        };
        rest.remove(key);
        let elements: Vec<String> = match value.as_array() {
            Some(array) if array.iter().all(toml::Value::is_table) => array
                .iter()
                .enumerate()
                .filter_map(|(i, element)| {
                    let reason = fails(key, &toml::Value::Array(vec![element.clone()]))?;
                    Some(format!("[{name}] `{key}[{i}]`: {reason}"))
                })
                .collect(),
            _ => Vec::new(),
        };
        if elements.is_empty() {
            problems.push(format!("[{name}] `{key}`: {reason}"));
        } else {
            problems.extend(elements);
        }
    }
    if tags.len() > 1 {
        // Without a tag, nothing more can be read of the section.
        return Read::Unreadable;
    }
    // Every required key that is missing: each found is given a value of some type it takes
    // (which is then not checked), until the section reads or fails for another reason.
    let mut missing = Vec::new();
    let mut probe = rest.clone();
    loop {
        match read(&probe) {
            Ok(parsed) if missing.is_empty() => return Read::Partial(parsed),
            Ok(_) => break,
            Err(error) => {
                let message = error.message().to_owned();
                let Some(key) = missing_field(&message) else {
                    if missing.is_empty() && problems.len() == before {
                        problems.push(format!("[{name}] {message}"));
                    }
                    break;
                };
                if missing.contains(&key) || missing.len() > 64 {
                    break;
                }
                let stand_in = STAND_INS.iter().find(|stand_in| {
                    let mut with = probe.clone();
                    with.insert(key.clone(), (*stand_in)());
                    read(&with).map_or_else(
                        |e| missing_field(e.message()).is_some_and(|k| k != key),
                        |_| true,
                    )
                });
                // A key left out as bad was reported already.
                if !section.contains_key(&key) {
                    problems.push(format!("[{name}] missing field `{key}`"));
                }
                missing.push(key.clone());
                match stand_in {
                    Some(stand_in) => {
                        probe.insert(key, stand_in());
                    }
                    None => break,
                }
            }
        }
    }
    Read::Unreadable
}

/// Values of each TOML type, tried in place of a missing key to find the next one missing.
const STAND_INS: [fn() -> toml::Value; 6] = [
    || toml::Value::String(String::new()),
    || toml::Value::Integer(1),
    || toml::Value::Float(1.0),
    || toml::Value::Boolean(false),
    || toml::Value::Array(Vec::new()),
    || toml::Value::Table(toml::Table::new()),
];

/// The key a serde "missing field `key`" message names.
fn missing_field(message: &str) -> Option<String> {
    let key = message.strip_prefix("missing field `")?.strip_suffix('`')?;
    Some(key.to_owned())
}

/// The tags of a tagged enum, from serde's message for an unknown one.
fn variants(read: impl Fn(toml::Value) -> Result<(), toml::de::Error>) -> Vec<String> {
    let Err(error) = read(toml::Value::String("\u{1}".to_owned())) else {
        return Vec::new();
    };
    let Some((_, expected)) = error.message().split_once("expected") else {
        return Vec::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}
