//! The evaluation gate: whether a retrained candidate may replace the version being served,
//! judged on the newest held-out rows both were scored on.

use crate::train::Quality;
use serde::{Deserialize, Serialize};

/// How much worse than the current version a candidate may score and still be published.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gate {
    /// The candidate's AUC may be at most this much below the current version's.
    pub auc_tolerance: f64,
    /// The candidate's log-loss may be at most this much above the current version's.
    pub logloss_tolerance: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            auc_tolerance: 0.002,
            logloss_tolerance: 0.005,
        }
    }
}

/// What the gate decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Publish the candidate.
    Publish,
    /// Keep serving the current version, for these reasons (each a sentence for the log).
    Refuse(Vec<String>),
}

impl Gate {
    /// Judges `candidate` against `current` (none before the first version), both scored on
    /// the same rows; `finite`: whether every weight of the candidate is a finite number.
    pub fn judge(&self, candidate: &Quality, current: Option<&Quality>, finite: bool) -> Verdict {
        let mut reasons = Vec::new();
        if !finite {
            reasons.push("a weight of the candidate is not finite".to_owned());
        }
        let (Some(auc), Some(logloss)) = (candidate.auc, candidate.logloss) else {
            reasons.push(format!(
                "the candidate cannot be scored on {} held-out rows (one class only, or none)",
                candidate.rows
            ));
            return Verdict::Refuse(reasons);
        };
        if !(auc.is_finite() && logloss.is_finite()) {
            reasons.push(format!(
                "the candidate's scores are not finite (AUC {auc}, log-loss {logloss})"
            ));
        }
        if let Some(current) = current {
            if let Some(now) = current.auc.filter(|&now| auc < now - self.auc_tolerance) {
                reasons.push(format!(
                    "AUC {auc:.4} is below the current version's {now:.4} less {}",
                    self.auc_tolerance
                ));
            }
            if let Some(now) = current
                .logloss
                .filter(|&now| logloss > now + self.logloss_tolerance)
            {
                reasons.push(format!(
                    "log-loss {logloss:.4} is above the current version's {now:.4} plus {}",
                    self.logloss_tolerance
                ));
            }
        }
        if reasons.is_empty() {
            Verdict::Publish
        } else {
            Verdict::Refuse(reasons)
        }
    }

    /// Problems of the tolerances, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("auc_tolerance", self.auc_tolerance),
            ("logloss_tolerance", self.logloss_tolerance),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                problems.push(format!("`{key}` must be a number >= 0 (got {value})"));
            }
        }
        problems
    }
}
