//! Ranks as threads of one process: each call deposits this rank's part and waits for the
//! others'; every rank then reads all of them.

use super::{one_per_rank, AllReduce};
use crate::error::DeepError;
use std::sync::{Arc, Condvar, Mutex};

/// One round's parts, by rank: for a sum, each rank's numbers; for an exchange, each rank's
/// parts for every rank.
type Parts = Arc<Vec<Vec<Vec<u8>>>>;

#[derive(Debug, Default)]
struct Round {
    /// Rounds completed.
    generation: u64,
    /// This round's parts so far.
    arrived: Vec<Option<Vec<Vec<u8>>>>,
    /// The last completed round's parts.
    done: Option<Parts>,
    /// Whether a rank is gone (dropped, as when its thread ended or panicked).
    gone: bool,
}

#[derive(Debug)]
struct Shared {
    ranks: usize,
    round: Mutex<Round>,
    complete: Condvar,
}

/// An in-process rank; [`Local::group`] makes all of them.
#[derive(Debug)]
pub struct Local {
    rank: usize,
    shared: Arc<Shared>,
}

impl Local {
    /// `ranks` ranks (at least one) that meet in this process, one for each thread.
    pub fn group(ranks: usize) -> Vec<Local> {
        let ranks = ranks.max(1);
        let shared = Arc::new(Shared {
            ranks,
            round: Mutex::new(Round {
                arrived: vec![None; ranks],
                ..Round::default()
            }),
            complete: Condvar::new(),
        });
        (0..ranks)
            .map(|rank| Local {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Deposits `mine` and returns every rank's deposit of this round.
    fn meet(&self, mine: Vec<Vec<u8>>) -> Result<Parts, DeepError> {
        let shared = &self.shared;
        let mut round = shared.round.lock().unwrap_or_else(|e| e.into_inner());
        let gone = || DeepError::Collective("a rank is gone".to_owned());
        if round.gone {
            return Err(gone());
        }
        round.arrived[self.rank] = Some(mine);
        if round.arrived.iter().all(Option::is_some) {
            let parts = round.arrived.iter_mut().filter_map(Option::take).collect();
            round.done = Some(Arc::new(parts));
            round.generation += 1;
            shared.complete.notify_all();
        } else {
            let generation = round.generation;
            while round.generation == generation {
                if round.gone {
                    return Err(gone());
                }
                round = shared
                    .complete
                    .wait(round)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        // A round completes only once every rank has deposited its next part, which each does
        // after reading this one: `done` is still this round's.
        Ok(round.done.clone().unwrap_or_default())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut round = self.shared.round.lock().unwrap_or_else(|e| e.into_inner());
        round.gone = true;
        self.shared.complete.notify_all();
    }
}

impl AllReduce for Local {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.shared.ranks
    }

    fn sum(&mut self, data: &mut [f32]) -> Result<(), DeepError> {
        let parts = self.meet(vec![bytemuck::cast_slice(data).to_vec()])?;
        data.fill(0.0);
        // Every rank adds the parts in rank order: the same sums everywhere.
        for part in parts.iter() {
            let numbers = super::numbers(&part[0], data.len(), "sum")?;
            for (d, x) in data.iter_mut().zip(numbers) {
                *d += x;
            }
        }
        Ok(())
    }

    fn exchange(&mut self, parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, DeepError> {
        one_per_rank(&parts, self.ranks())?;
        let all = self.meet(parts)?;
        Ok(all.iter().map(|from| from[self.rank].clone()).collect())
    }
}
