//! Where in a job file each problem is: `millrace validate`'s `FILE:LINE:COLUMN: problem`.
//!
//! Every problem names its place the same way: the section (`[learner]`), then the keys it is
//! under, each in backticks and followed by `: ` (`[sinks] `dead_letters_sink`: `path`: …`),
//! dotted or indexed within one pair of backticks (`[schema] `fields[2]`: …`). The deepest of
//! those keys the file holds is the place; a problem of a key that is not there (a missing
//! one) is placed at its section, and one of no section, or of a key an environment variable
//! overrides, nowhere (it names the variable).

use super::JobSpec;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A problem of a job file, and the line and column (from 1) of the key it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The line and column, when the problem is about something in the file.
    pub at: Option<(usize, usize)>,
    /// The problem.
    pub problem: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(f, "{line}:{column}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl JobSpec {
    /// Every problem of the job file at `path` read with `catalog` (its TOML, its keys, its
    /// values, the environment's overrides), each placed at its line and column; empty when
    /// the job would run.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read.
    pub fn validate_file_in(path: &Path, catalog: &Catalog) -> Result<Vec<Located>> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let (document, syntax) = DeTable::parse_recoverable(&text);
        if !syntax.is_empty() {
            return Ok(syntax
                .iter()
                .map(|error| Located {
                    at: error.span().map(|span| line_and_column(&text, span.start)),
                    problem: format!("not valid TOML: {}", error.message().trim_end()),
                })
                .collect());
        }
        let overrides = overridden();
        Ok(match Self::from_file_in(path, catalog) {
            Err(Error::Config { problems }) => problems
                .into_iter()
                .map(|problem| {
                    let path = path_of(&problem);
                    match overrides.iter().find(|(_, keys)| is_under(&path, keys)) {
                        Some((variable, _)) => Located {
                            at: None,
                            problem: format!("{problem} (set by `{variable}`)"),
                        },
                        None => Located {
                            at: place(document.get_ref(), &path)
                                .map(|at| line_and_column(&text, at)),
                            problem,
                        },
                    }
                })
                .collect(),
            Err(other) => vec![Located {
                at: None,
                problem: other.to_string(),
            }],
            Ok(_) => Vec::new(),
        })
    }
}

/// One step of a problem's path: a key or an element of an array.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Element(usize),
}

/// The environment's overrides: each variable and the keys it sets.
fn overridden() -> Vec<(String, Vec<String>)> {
    std::env::vars_os()
        .filter_map(|(key, _)| {
            let key = key.into_string().ok()?;
            let keys = key
                .strip_prefix("MILLRACE__")?
                .split("__")
                .map(str::to_lowercase)
                .collect();
            Some((key, keys))
        })
        .collect()
}

/// Whether `path` is at or under the keys `keys`.
fn is_under(path: &[Step], keys: &[String]) -> bool {
    keys.len() <= path.len()
        && keys.iter().zip(path).all(|(key, step)| match step {
            Step::Key(k) => k == key,
            Step::Element(i) => i.to_string() == *key,
        })
}

/// The byte offset of the deepest key of `path` that `document` holds.
fn place(document: &DeTable<'_>, path: &[Step]) -> Option<usize> {
    let mut table = document;
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    let mut found = None;
    for step in path {
        let next = match (step, value.map(Spanned::get_ref)) {
            (Step::Key(key), None) => entry(table, key),
            (Step::Key(key), Some(DeValue::Table(inner))) => {
                table = inner;
                entry(table, key)
            }
            (Step::Element(i), Some(DeValue::Array(array))) => {
                array.get(*i).map(|element| (element.span(), element))
            }
            _ => None,
        };
        let Some((span, next)) = next else { break };
        found = Some(span.start);
        value = Some(next);
    }
    found
}

/// The span of `key` in `table` and its value.
fn entry<'t, 'i>(
    table: &'t DeTable<'i>,
    key: &str,
) -> Option<(Range<usize>, &'t Spanned<DeValue<'i>>)> {
    table
        .iter()
        .find(|(name, _)| name.get_ref() == key)
        .map(|(name, value)| (name.span(), value))
}

/// The path a problem names: its section's keys, then each key in backticks that is followed
/// by `: ` (or that opens an `unknown key` problem).
fn path_of(problem: &str) -> Vec<Step> {
    let mut path = Vec::new();
    let mut rest = problem;
    if let Some(section) = rest.strip_prefix('[') {
        let Some((name, after)) = section.split_once(']') else {
            return path;
        };
        path.extend(steps(name));
        rest = after.trim_start();
    }
    rest = rest.strip_prefix("unknown key ").unwrap_or(rest);
    while let Some(quoted) = rest.strip_prefix('`') {
        let Some((name, after)) = quoted.split_once('`') else {
            break;
        };
        path.extend(steps(name));
        match after.strip_prefix(": ") {
            Some(next) => rest = next,
            None => break,
        }
    }
    path
}

/// The steps of a dotted, indexed name (`fields[2]`, `embeddings.placement`).
fn steps(name: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in name.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            steps.push(Step::Key(key.to_owned()));
        }
        for index in pieces {
            match index.strip_suffix(']').and_then(|i| i.parse().ok()) {
                Some(i) => steps.push(Step::Element(i)),
                None => return steps,
            }
        }
    }
    steps
}

/// The line and column (from 1, in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    // A byte-order mark opens the file but is no column of its first line.
    let line = before[line_start..].trim_start_matches('\u{feff}');
    (before.matches('\n').count() + 1, line.chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_names_its_section_and_keys() {
        let key = |k: &str| Step::Key(k.to_owned());
        assert_eq!(
            path_of("[sinks] `dead_letters_sink`: `path`: must not be empty"),
            [key("sinks"), key("dead_letters_sink"), key("path")]
        );
        assert_eq!(
            path_of("[schema] `fields[2]`: unknown field `typ`"),
            [key("schema"), key("fields"), Step::Element(2)]
        );
        assert_eq!(
            path_of("[retrain] `embeddings`: `min_count` must be >= 1 (got 0)"),
            [key("retrain"), key("embeddings"), key("min_count")]
        );
        assert_eq!(
            path_of("[features] `transform[1]` (bucketize): `site` is a category"),
            [key("features"), key("transform"), Step::Element(1)]
        );
        assert_eq!(
            path_of("unknown key `nmae` (expected one of name, source)"),
            [key("nmae")]
        );
        assert_eq!(path_of("missing section [features]"), []);
    }

    #[test]
    fn lines_and_columns_count_from_one_in_characters() {
        let text = "a = 1\n[é]\nkey = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, text.find("key").unwrap()), (3, 1));
        assert_eq!(line_and_column(text, text.find(']').unwrap()), (2, 3));
        assert_eq!(line_and_column(text, 1_000), (4, 1));
        let marked = "\u{feff}name = 1";
        assert_eq!(line_and_column(marked, marked.find("1").unwrap()), (1, 8));
    }
}
