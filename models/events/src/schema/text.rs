//! Reading a record's text: the columns of a delimited line and the numbers in them.

use super::strip_newline;

/// Column `n` of a delimited line (quotes removed), when the line has that many; borrowed from
/// the line unless it was quoted.
pub(crate) fn nth_column(
    line: &[u8],
    delimiter: u8,
    n: usize,
) -> Option<std::borrow::Cow<'_, [u8]>> {
    let line = strip_newline(line);
    if delimiter != b'\t' && line.contains(&b'"') {
        return split_columns(line, delimiter)
            .into_iter()
            .nth(n)
            .map(std::borrow::Cow::Owned);
    }
    line.split(|&b| b == delimiter)
        .nth(n)
        .map(std::borrow::Cow::Borrowed)
}

/// The columns of a delimited line, a column in double quotes read as CSV does (RFC 4180: the
/// delimiter inside is text, `""` is one quote). Quoted columns are rare in event streams, so
/// this is the slow path beside [`crate::fmap::Parser`]'s scan.
pub(crate) fn split_columns(line: &[u8], delimiter: u8) -> Vec<Vec<u8>> {
    let mut cells = vec![Vec::new()];
    let (mut quoted, mut i) = (false, 0);
    while i < line.len() {
        let b = line[i];
        let cell = cells.last_mut().expect("cells starts with one");
        if quoted {
            match (b, line.get(i + 1)) {
                (b'"', Some(b'"')) => {
                    cell.push(b'"');
                    i += 1;
                }
                (b'"', _) => quoted = false,
                _ => cell.push(b),
            }
        } else if b == b'"' && cell.is_empty() {
            quoted = true;
        } else if b == delimiter {
            cells.push(Vec::new());
        } else {
            cell.push(b);
        }
        i += 1;
    }
    cells
}

/// Parses a decimal number within the range of `f32` (the rows' values, so that no number
/// becomes an infinity in a row, nor overflows a scaler's moments): a fast path for integers of
/// up to 18 digits, the standard library's float parser otherwise.
pub fn parse_number(raw: &[u8]) -> Option<f64> {
    parse_integer(raw).or_else(|| {
        let x: f64 = std::str::from_utf8(raw).ok()?.trim().parse().ok()?;
        (x.abs() <= f64::from(f32::MAX)).then_some(x)
    })
}

/// An optional `-` and 1 to 18 digits, as a float; `None` for anything else.
#[inline]
pub(crate) fn parse_integer(raw: &[u8]) -> Option<f64> {
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    // One pass: accumulate while checking; a non-digit spoils `v`, which is then unused.
    let (mut v, mut digits_only) = (0i64, true);
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        digits_only &= d < 10;
        v = v.wrapping_mul(10).wrapping_add(i64::from(d));
    }
    digits_only.then_some(if negative { -v } else { v } as f64)
}
