//! Data-parallel steps: dense gradients summed through an [`AllReduce`], and the host table
//! sharded by id, each rank owning the rows of its ids (`slot mod ranks`): a step asks each
//! row of its owner, and sends the row's gradient back to it, as the online learners'
//! all-reduce deals coordinates to owners.

use crate::collective::{numbers, owner, AllReduce};
use crate::error::DeepError;
use crate::host::{HostTable, Unique};
use std::collections::HashMap;

/// Where a step's rows came from, to send their gradients back.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Per owner, the indices into the step's distinct slots asked of it, in order.
    asked_of: Vec<Vec<usize>>,
    /// As owner: the distinct slots every rank asked of this one, their counts summed.
    combined: Unique,
    /// As owner: per rank, the index into `combined` of each slot it asked, in its order.
    from: Vec<Vec<usize>>,
}

fn malformed(what: &str) -> DeepError {
    DeepError::Collective(format!("a malformed {what} from a peer"))
}

/// Rows `indices` of `data` (`width` numbers each), one after another, as bytes for a peer.
fn pack(data: &[f32], indices: &[usize], width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(indices.len() * width * 4);
    for &i in indices {
        out.extend_from_slice(bytemuck::cast_slice(&data[i * width..(i + 1) * width]));
    }
    out
}

/// The rows of `unique`'s slots (`width` numbers each, as [`HostTable::gather`] lays them out),
/// each from the rank that owns it; `table` is this rank's shard, and serves the others.
pub(crate) fn gather_sharded(
    table: &mut HostTable,
    unique: &Unique,
    comm: &mut dyn AllReduce,
) -> Result<(Vec<f32>, Shard), DeepError> {
    let ranks = comm.ranks();
    let mut asked_of = vec![Vec::new(); ranks];
    let mut requests = vec![Vec::new(); ranks];
    for (i, (&slot, &count)) in unique.slots.iter().zip(&unique.counts).enumerate() {
        let o = owner(slot, ranks);
        asked_of[o].push(i);
        requests[o].extend_from_slice(&slot.to_le_bytes());
        requests[o].extend_from_slice(&count.to_le_bytes());
    }
    let asked = comm.exchange(requests)?;
    let mut combined = Unique::default();
    let mut at: HashMap<i64, usize> = HashMap::new();
    let mut from = Vec::with_capacity(ranks);
    for part in &asked {
        if part.len() % 12 != 0 {
            return Err(malformed("request for rows"));
        }
        let mut theirs = Vec::with_capacity(part.len() / 12);
        for entry in part.chunks_exact(12) {
            let slot = i64::from_le_bytes(entry[..8].try_into().map_err(|_| malformed("slot"))?);
            let count = u32::from_le_bytes(entry[8..].try_into().map_err(|_| malformed("count"))?);
            if slot < 0 || owner(slot, ranks) != comm.rank() {
                return Err(malformed("request for a row this rank does not own"));
            }
            let i = *at.entry(slot).or_insert_with(|| {
                combined.slots.push(slot);
                combined.counts.push(0);
                combined.slots.len() - 1
            });
            combined.counts[i] = combined.counts[i].saturating_add(count);
            theirs.push(i);
        }
        from.push(theirs);
    }
    let width = table.width();
    let rows = table.gather(&combined);
    let answers = from
        .iter()
        .map(|theirs| pack(&rows, theirs, width))
        .collect();
    let answered = comm.exchange(answers)?;
    let mut out = vec![0.0; unique.slots.len() * width];
    for (o, part) in answered.iter().enumerate() {
        let got = numbers(part, asked_of[o].len() * width, "answer of rows")?;
        for (k, &i) in asked_of[o].iter().enumerate() {
            out[i * width..(i + 1) * width].copy_from_slice(&got[k * width..(k + 1) * width]);
        }
    }
    Ok((
        out,
        Shard {
            asked_of,
            combined,
            from,
        },
    ))
}

/// Sends the gradients of a step's rows (laid out as [`gather_sharded`] returned them) to
/// their owners, which sum every rank's in rank order and apply them to their shard.
pub(crate) fn apply_sharded(
    table: &mut HostTable,
    shard: &Shard,
    grads: &[f32],
    comm: &mut dyn AllReduce,
) -> Result<(), DeepError> {
    let width = table.width();
    let parts = shard
        .asked_of
        .iter()
        .map(|indices| pack(grads, indices, width))
        .collect();
    let got = comm.exchange(parts)?;
    let mut summed = vec![0.0; shard.combined.slots.len() * width];
    for (theirs, part) in shard.from.iter().zip(&got) {
        let numbers = numbers(part, theirs.len() * width, "gradient")?;
        for (k, &i) in theirs.iter().enumerate() {
            for (s, g) in summed[i * width..(i + 1) * width]
                .iter_mut()
                .zip(&numbers[k * width..(k + 1) * width])
            {
                *s += g;
            }
        }
    }
    table.apply(&shard.combined, &summed)
}

/// Replaces every tensor's gradient by its sum over the ranks (all of them in one call, on
/// their device when the backend reaches it).
pub(crate) fn sum_grads(vars: &[tch::Tensor], comm: &mut dyn AllReduce) -> Result<(), DeepError> {
    let grads: Vec<tch::Tensor> = vars.iter().map(tch::Tensor::grad).collect();
    let mut flat = tch::Tensor::cat(
        &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
        0,
    );
    comm.sum_tensor(&mut flat)?;
    let mut at = 0;
    tch::no_grad(|| {
        for mut g in grads {
            let n = g.numel() as i64;
            g.copy_(&flat.narrow(0, at, n).view(g.size().as_slice()));
            at += n;
        }
    });
    Ok(())
}

/// Gives every rank rank 0's values of `vars` (all of them in one call): the others' are
/// zeroed, then summed.
pub(crate) fn broadcast_vars(
    vars: &[tch::Tensor],
    comm: &mut dyn AllReduce,
) -> Result<(), DeepError> {
    let mut flat = tch::no_grad(|| {
        tch::Tensor::cat(
            &vars.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(),
            0,
        )
    });
    if comm.rank() != 0 {
        let _ = flat.zero_();
    }
    comm.sum_tensor(&mut flat)?;
    let mut at = 0;
    tch::no_grad(|| {
        for v in vars {
            let n = v.numel() as i64;
            let mut v = v.shallow_clone();
            v.copy_(&flat.narrow(0, at, n).view(v.size().as_slice()));
            at += n;
        }
    });
    Ok(())
}

/// Gives every tensor a zero gradient, so that a rank without rows in a step has one to sum.
pub(crate) fn define_grads(vars: &[tch::Tensor]) {
    if let Some(zero) = vars
        .iter()
        .map(|v| v.sum(tch::Kind::Float) * 0.0)
        .reduce(|a, b| a + b)
    {
        zero.backward();
    }
}
