//! The checkpoint parts of a job's dataflow, listed in one place from the operators'
//! declarations (`PartSpec`, beside each operator): the engine reads the list before any operator
//! exists, so that a checkpoint can be checked whole before it is restored.

use crate::deliver::Outlet;
use crate::featurize::{FIT, PARSE, TRANSFORM};
use crate::labels::LABELS;
use crate::samples::SAMPLES;
use crate::source::SOURCE;
use crate::train::TRAIN;

/// The checkpoint parts of a job's dataflow, in the order of the data: the source, the label
/// join (with `labels`), parse, fit, transform, the dead letters, the sample buffer (with
/// `samples`), train, and the predictions' delivery (with `predictions`). The output sinks are
/// parts too: a checkpoint covers an epoch only once its outputs are acknowledged.
pub fn dataflow_parts(labels: bool, samples: bool, predictions: bool) -> Vec<&'static str> {
    let mut parts = vec![SOURCE.name()];
    if labels {
        parts.push(LABELS.name());
    }
    parts.extend([
        PARSE.name(),
        FIT.name(),
        TRANSFORM.name(),
        Outlet::DEAD_LETTERS.name(),
    ]);
    if samples {
        parts.push(SAMPLES.name());
    }
    parts.push(TRAIN.name());
    if predictions {
        parts.push(Outlet::PREDICTIONS.name());
    }
    parts
}

/// The checkpoint part of a dataflow that is only a source ([`crate::ingest_partitions`] and
/// nothing stateful after it).
pub fn source_parts() -> Vec<&'static str> {
    vec![SOURCE.name()]
}

/// The part that decoded events before hashed features were a FeatureMap: checkpoints of a
/// hashed job written then hold it in place of [`DECODE_REPLACED_BY`].
pub const LEGACY_DECODE: &str = "decode";

/// The parts that replaced [`LEGACY_DECODE`] (parse, fit and transform), started afresh when
/// such a checkpoint is restored.
pub const DECODE_REPLACED_BY: [&str; 3] = [PARSE.name(), FIT.name(), TRANSFORM.name()];
