//! Which values of the label field are clicks: lists of positive and negative values, or a
//! threshold on a numeric label (ratings).

use serde::{Deserialize, Serialize};

/// How a label value is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelRule {
    /// A value in `positive` is a click, one in `negative` is not; anything else is malformed.
    Values {
        /// Values that are clicks.
        positive: Vec<String>,
        /// Values that are not.
        negative: Vec<String>,
    },
    /// A number at or above the threshold is a click, one below is not; anything else is
    /// malformed.
    AtLeast(f64),
}

impl LabelRule {
    /// The default: `1`, `true` and `+1` are clicks; `0`, `false` and `-1` are not.
    pub fn default_values() -> Self {
        LabelRule::Values {
            positive: vec!["1".into(), "true".into(), "+1".into()],
            negative: vec!["0".into(), "false".into(), "-1".into()],
        }
    }

    /// Criteo's: `1` is a click, `0` is not.
    pub fn zero_one() -> Self {
        LabelRule::Values {
            positive: vec!["1".into()],
            negative: vec!["0".into()],
        }
    }

    /// Whether `raw` is a click; `None` when it is not a label value.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_events::schema::LabelRule;
    ///
    /// assert_eq!(LabelRule::default_values().read(b"+1"), Some(true));
    /// assert_eq!(LabelRule::default_values().read(b"-1"), Some(false));
    /// assert_eq!(LabelRule::default_values().read(b"2"), None);
    /// assert_eq!(LabelRule::AtLeast(4.0).read(b"4"), Some(true));
    /// assert_eq!(LabelRule::AtLeast(4.0).read(b"3.5"), Some(false));
    /// assert_eq!(LabelRule::AtLeast(4.0).read(b"five"), None);
    /// ```
    #[inline]
    pub fn read(&self, raw: &[u8]) -> Option<bool> {
        match self {
            LabelRule::Values { positive, negative } => {
                if positive.iter().any(|p| p.as_bytes() == raw) {
                    Some(true)
                } else if negative.iter().any(|n| n.as_bytes() == raw) {
                    Some(false)
                } else {
                    None
                }
            }
            LabelRule::AtLeast(threshold) => {
                let x = crate::schema::text::parse_number(raw)?;
                Some(x >= *threshold)
            }
        }
    }
}
