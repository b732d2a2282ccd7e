//! How the values of a schema's time field are read: milliseconds or seconds since the Unix
//! epoch, or a strftime pattern (read as UTC unless the pattern has an offset).

use serde::{Deserialize, Serialize};

/// The format of a time field's values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Whole milliseconds since the Unix epoch (`"ms"`, the default).
    #[default]
    Millis,
    /// Seconds since the Unix epoch, possibly with a fraction (`"s"`).
    Seconds,
    /// A strftime pattern such as `%y%m%d%H` (Avazu's hours) or `%Y-%m-%dT%H:%M:%S%z`; parts
    /// it leaves out (minutes, seconds) are 0.
    Pattern(String),
}

/// An `event_time_format` that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeFormatError {
    /// A pattern with a directive that is not strftime's.
    #[error("`event_time_format` {0:?} has a directive that is not strftime's")]
    Directive(String),
    /// Neither `ms`, `s` nor a pattern.
    #[error("`event_time_format` must be \"ms\", \"s\" or a strftime pattern such as \"%y%m%d%H\" (got {0:?})")]
    Unknown(String),
}

impl TimeFormat {
    /// Reads the format as written in a job file (`"ms"`, `"s"` or a pattern).
    ///
    /// # Errors
    ///
    /// [`TimeFormatError`] when a pattern has no `%` directive or one that chrono does not
    /// know.
    pub fn from_name(name: &str) -> Result<Self, TimeFormatError> {
        match name {
            "ms" => Ok(TimeFormat::Millis),
            "s" => Ok(TimeFormat::Seconds),
            pattern if pattern.contains('%') => {
                let known = chrono::format::StrftimeItems::new(pattern)
                    .all(|item| !matches!(item, chrono::format::Item::Error));
                if known {
                    Ok(TimeFormat::Pattern(pattern.to_owned()))
                } else {
                    Err(TimeFormatError::Directive(pattern.to_owned()))
                }
            }
            other => Err(TimeFormatError::Unknown(other.to_owned())),
        }
    }

    /// The time `raw` stands for, in milliseconds since the Unix epoch; `None` when it is not a
    /// time of this format or is before the epoch.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_events::schema::TimeFormat;
    ///
    /// assert_eq!(TimeFormat::Millis.parse(b"1700000000123"), Some(1_700_000_000_123));
    /// assert_eq!(TimeFormat::Seconds.parse(b"1700000000.5"), Some(1_700_000_000_500));
    /// let hours = TimeFormat::from_name("%y%m%d%H").unwrap();
    /// assert_eq!(hours.parse(b"14102100"), Some(1_413_849_600_000));
    /// assert_eq!(hours.parse(b"14102"), None);
    /// ```
    pub fn parse(&self, raw: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(raw).ok()?.trim();
        match self {
            TimeFormat::Millis => text.parse().ok(),
            TimeFormat::Seconds => match text.parse::<u64>() {
                Ok(s) => s.checked_mul(1000),
                Err(_) => {
                    let s: f64 = text.parse().ok()?;
                    (0.0..1.8e16)
                        .contains(&s)
                        .then(|| (s * 1000.0).round() as u64)
                }
            },
            TimeFormat::Pattern(pattern) => parse_pattern(text, pattern),
        }
    }
}

fn parse_pattern(text: &str, pattern: &str) -> Option<u64> {
    use chrono::format::{parse, Parsed, StrftimeItems};
    let mut parsed = Parsed::new();
    parse(&mut parsed, text, StrftimeItems::new(pattern)).ok()?;
    if parsed.timestamp().is_none() {
        if parsed.hour_div_12().is_none() && parsed.hour_mod_12().is_none() {
            parsed.set_hour(0).ok()?;
        }
        if parsed.minute().is_none() {
            parsed.set_minute(0).ok()?;
        }
    }
    let millis = if parsed.offset().is_some() || parsed.timestamp().is_some() {
        parsed.to_datetime().ok()?.timestamp_millis()
    } else {
        parsed
            .to_naive_datetime_with_offset(0)
            .ok()?
            .and_utc()
            .timestamp_millis()
    };
    u64::try_from(millis).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_read_as_utc_unless_they_carry_an_offset() {
        let day = TimeFormat::from_name("%Y-%m-%d").unwrap();
        assert_eq!(day.parse(b"1970-01-02"), Some(86_400_000));
        let zoned = TimeFormat::from_name("%Y-%m-%dT%H:%M:%S%z").unwrap();
        assert_eq!(zoned.parse(b"1970-01-01T01:00:00+0100"), Some(0));
        let epoch = TimeFormat::from_name("%s").unwrap();
        assert_eq!(epoch.parse(b"86400"), Some(86_400_000));
        assert_eq!(day.parse(b"1969-12-31"), None);
        assert_eq!(day.parse(b"\xff"), None);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(TimeFormat::from_name("ms"), Ok(TimeFormat::Millis));
        assert!(TimeFormat::from_name("minutes").is_err());
        assert!(TimeFormat::from_name("%Y-%Q").is_err());
    }

    #[test]
    fn seconds_and_millis_refuse_what_is_not_a_time() {
        assert_eq!(TimeFormat::Millis.parse(b"-5"), None);
        assert_eq!(TimeFormat::Seconds.parse(b"-5"), None);
        assert_eq!(TimeFormat::Seconds.parse(b"1e300"), None);
        assert_eq!(TimeFormat::Seconds.parse(b"NaN"), None);
        assert_eq!(TimeFormat::Seconds.parse(b" 12 "), Some(12_000));
    }
}
