//! `millrace bench bare`: the least work any reader of a delimited file must do, on one
//! thread, as the yardstick `bench featurize` is measured against in the same run: split each
//! line at the schema's delimiter, parse the numbers, hash the categories and tokens (XXH3,
//! the FeatureMap's fingerprint), read the label, nothing else. Nothing is kept but a checksum,
//! printed so that no step can be left out by the compiler.

use crate::error::{Error, Result};
use millrace_models::fmap::value::fingerprint;
use millrace_models::schema::text::parse_number;
use millrace_models::schema::{Encoding, FieldType, Role};
use millrace_models::Schema;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The figures `millrace bench bare` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BareBench {
    /// Lines read.
    pub rows: u64,
    /// Seconds of the pass.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// The sum of every hash and number, so that nothing is optimized away.
    pub checksum: u64,
}

/// What the bare pass does with a column.
#[derive(Clone, Copy)]
enum Cell {
    Skip,
    Label,
    Number,
    Category,
    Tokens(u8),
}

/// One pass over the delimited lines of `input` by `schema`.
///
/// # Errors
///
/// When the file cannot be read or the schema's records are not delimited lines.
pub fn bare(input: &Path, schema: &Schema) -> Result<BareBench> {
    let record = schema.record();
    let Encoding::Delimited { delimiter } = record.encoding else {
        return Err(Error::Config {
            problems: vec!["`bench bare` reads csv and tsv schemas".to_owned()],
        });
    };
    let text = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_owned(),
        source,
    })?;
    let kinds: Vec<Cell> = record
        .columns
        .iter()
        .map(|c| match c.role {
            Role::Skip | Role::Time => Cell::Skip,
            Role::Label => Cell::Label,
            Role::Feature(f) => match schema.field_type(f as usize) {
                Some(FieldType::Number) => Cell::Number,
                Some(FieldType::Tokens { separator }) => Cell::Tokens(separator),
                _ => Cell::Category,
            },
        })
        .collect();
    let lines = schema.records(&text).map_err(|why| Error::Config {
        problems: vec![format!("[schema] {}: {why}", input.display())],
    })?;
    let started = Instant::now();
    let (mut rows, mut checksum) = (0u64, 0u64);
    for line in lines {
        rows += 1;
        for (column, kind) in line.split(|&b| b == delimiter).zip(&kinds) {
            checksum = checksum.wrapping_add(match *kind {
                Cell::Skip => 0,
                Cell::Label => u64::from(column == b"1"),
                Cell::Number => parse_number(column).map_or(0, f64::to_bits),
                Cell::Category => fingerprint(column),
                Cell::Tokens(separator) => column
                    .split(|&b| b == separator)
                    .fold(0, |sum, t| sum ^ fingerprint(t)),
            });
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BareBench {
        rows,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(1e-9),
        checksum,
    })
}
