//! The forward pass of the deep architectures (DeepFM, DCN-v2) in plain Rust, over an
//! artifact's tensors or a served model's tables: serving scores a deep model without libtorch.
//! It computes what `millrace-deep`'s libtorch model does: each entry of a row adds its slot's
//! embedding times its value to its field's (the FeatureMap feature the slot belongs to;
//! slots of no feature, the bias, add nothing), then the FM and MLP (DeepFM) or the cross
//! layers and MLP (DCN-v2).

use millrace_events::FeatureMap;
use millrace_learners::architecture::{DeepShape, EMBEDDING, LINEAR};
use millrace_learners::fm::FactorRows;
use millrace_learners::row_values::RowValues;

/// A tensor as the forward pass reads it: its rows, the numbers per row, and the rows.
pub(crate) type Rows<'t, T> = (usize, usize, &'t T);

/// The tensor `name` with rows of `width` numbers, or `None`.
fn tensor<'t, T: ?Sized>(
    rows_of: &impl Fn(&str) -> Option<Rows<'t, T>>,
    name: &str,
    width: usize,
) -> Option<(usize, &'t T)> {
    rows_of(name)
        .filter(|&(_, w, _)| w == width)
        .map(|(rows, _, t)| (rows, t))
}

/// The logit of a row, or `None` when a tensor the shape declares is missing, of another
/// width, or short of a row the input needs (an inconsistent model, which its checks report).
pub(crate) fn deep_logit<'t, T: FactorRows + ?Sized + 't>(
    shape: &DeepShape<'_>,
    map: &FeatureMap,
    (row, values): (&[u32], impl RowValues),
    rows_of: impl Fn(&str) -> Option<Rows<'t, T>>,
) -> Option<f32> {
    let k = shape.embedding_dim;
    let features = &map.layout.features;
    let (embedding_rows, embedding) = tensor(&rows_of, EMBEDDING, k)?;
    let linear = if shape.deepfm {
        Some(tensor(&rows_of, LINEAR, 1)?)
    } else {
        None
    };
    let mut x0 = vec![0.0f32; shape.width()];
    let mut first = 0.0f32;
    for (entry, &slot) in row.iter().enumerate() {
        let at = features
            .partition_point(|f| f.offset <= slot)
            .checked_sub(1);
        let Some(field) = at.filter(|&f| slot - features[f].offset < features[f].width) else {
            continue;
        };
        let (slot, value) = (slot as usize, values.at(entry));
        if field >= shape.fields || slot >= embedding_rows {
            return None;
        }
        embedding.with_row(slot, k, |e| {
            for (x, e) in x0[field * k..(field + 1) * k].iter_mut().zip(e) {
                *x += e * value;
            }
        });
        if let Some((linear_rows, linear)) = linear {
            if slot >= linear_rows {
                return None;
            }
            first += linear.with_row(slot, 1, |w| w[0]) * value;
        }
    }
    let mut x = x0.clone();
    for l in 0..shape.cross_layers {
        let y = dense(&x, &format!("cross.{l}"), x0.len(), &rows_of)?;
        for ((x, x0), y) in x.iter_mut().zip(&x0).zip(y) {
            *x += x0 * y;
        }
    }
    for (l, &out) in shape.mlp.iter().enumerate() {
        x = dense(&x, &format!("mlp.{}", 2 * l), out, &rows_of)?;
        x.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    let deep = dense(&x, "out", 1, &rows_of)?[0];
    let fm = if shape.deepfm {
        (0..k)
            .map(|j| {
                let (sum, squares) = (0..shape.fields)
                    .map(|f| x0[f * k + j])
                    .fold((0.0f32, 0.0f32), |(s, q), v| (s + v, q + v * v));
                sum * sum - squares
            })
            .sum::<f32>()
            * 0.5
    } else {
        0.0
    };
    Some(first + fm + deep).filter(|logit| logit.is_finite())
}

/// `W·x + b` of the layer `name` (`name.weight`, `outputs` rows of `x.len()`; `name.bias`).
fn dense<'t, T: FactorRows + ?Sized + 't>(
    x: &[f32],
    name: &str,
    outputs: usize,
    rows_of: &impl Fn(&str) -> Option<Rows<'t, T>>,
) -> Option<Vec<f32>> {
    let (weight_rows, weight) = tensor(rows_of, &format!("{name}.weight"), x.len())?;
    let (bias_rows, bias) = tensor(rows_of, &format!("{name}.bias"), 1)?;
    if weight_rows < outputs || bias_rows < outputs {
        return None;
    }
    Some(
        (0..outputs)
            .map(|o| {
                let w: f32 =
                    weight.with_row(o, x.len(), |w| w.iter().zip(x).map(|(w, x)| w * x).sum());
                w + bias.with_row(o, 1, |b| b[0])
            })
            .collect(),
    )
}
