//! How the ranks of a retraining stage in a cluster (one per process) agree: each poll, every
//! rank shares its status and all decide the same from the same statuses; within a run, rank
//! 0's plan and outcome reach every rank, and the ranks' counts reach every rank.

use millrace_deep::collective::AllReduce;
use millrace_deep::DeepError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a rank says at a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Status {
    /// Rows its workers appended to their buffers since it started.
    pub(super) appended: u64,
    /// The rows appended in all when it last decided to run (only rank 0's counts, so that a
    /// rank that started again agrees with the others).
    pub(super) since: u64,
    /// Whether its job ended: `Some(true)` with a last run asked for (the input ended),
    /// `Some(false)` at once (stopped).
    pub(super) ended: Option<bool>,
    /// Whether its clock says a run is due (only rank 0's counts).
    pub(super) due: bool,
}

impl Status {
    fn to_bytes(self) -> Vec<u8> {
        let mut out = self.appended.to_le_bytes().to_vec();
        out.extend(self.since.to_le_bytes());
        out.push(match self.ended {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        out.push(u8::from(self.due));
        out
    }

    fn of_bytes(bytes: &[u8]) -> Result<Self, DeepError> {
        let malformed = || DeepError::Collective("a malformed status from a peer".to_owned());
        let (appended, rest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
        let (since, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        let ended = match rest.first() {
            Some(0) => None,
            Some(1) => Some(false),
            Some(2) => Some(true),
            _ => return Err(malformed()),
        };
        let due = match rest.get(1..) {
            Some([due]) => *due != 0,
            _ => return Err(malformed()),
        };
        Ok(Status {
            appended: u64::from_le_bytes(*appended),
            since: u64::from_le_bytes(*since),
            ended,
            due,
        })
    }
}

/// What the stage does after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing yet.
    Wait,
    /// A run, then on.
    Run,
    /// A last run, then the end (every rank's input ended).
    RunLast,
    /// The end at once (a rank was stopped).
    Stop,
}

/// The rows every rank appended, in all.
pub(super) fn appended(all: &[Status]) -> u64 {
    all.iter().map(|s| s.appended).sum()
}

/// What every rank does after a poll whose statuses were `all` (rank 0's first, whose `since`
/// and clock count), when a run is due every `every_rows` rows (0: never by rows).
pub(super) fn decide(all: &[Status], every_rows: u64) -> Next {
    let since = all.first().map_or(0, |s| s.since);
    if all.iter().any(|s| s.ended == Some(false)) {
        return Next::Stop;
    }
    if !all.is_empty() && all.iter().all(|s| s.ended == Some(true)) {
        return Next::RunLast;
    }
    let by_rows = every_rows > 0 && appended(all).saturating_sub(since) >= every_rows;
    if by_rows || all.first().is_some_and(|s| s.due) {
        Next::Run
    } else {
        Next::Wait
    }
}

/// Every rank's status, by rank, `mine` among them.
pub(super) fn statuses(comm: &mut dyn AllReduce, mine: Status) -> Result<Vec<Status>, DeepError> {
    let parts = vec![mine.to_bytes(); comm.ranks()];
    comm.exchange(parts)?
        .iter()
        .map(|part| Status::of_bytes(part))
        .collect()
}

/// Every rank's `mine`, by rank.
pub(super) fn numbers(comm: &mut dyn AllReduce, mine: &[u64]) -> Result<Vec<Vec<u64>>, DeepError> {
    let bytes: Vec<u8> = mine.iter().flat_map(|n| n.to_le_bytes()).collect();
    let got = comm.exchange(vec![bytes; comm.ranks()])?;
    got.iter()
        .map(|part| {
            if part.len() != mine.len() * 8 {
                return Err(DeepError::Collective(format!(
                    "a peer sent {} bytes for {} numbers",
                    part.len(),
                    mine.len()
                )));
            }
            Ok(part
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect())
        })
        .collect()
}

/// Rank 0's `value` on every rank (the others' `value` is not sent).
pub(super) fn from_rank_zero<T: Serialize + DeserializeOwned>(
    comm: &mut dyn AllReduce,
    value: Option<&T>,
) -> Result<T, DeepError> {
    let mine = match (comm.rank(), value) {
        (0, Some(value)) => serde_json::to_vec(value)
            .map_err(|e| DeepError::Collective(format!("encoding rank 0's message: {e}")))?,
        _ => Vec::new(),
    };
    let got = comm.exchange(vec![mine; comm.ranks()])?;
    let first = got.first().map_or(&[][..], Vec::as_slice);
    serde_json::from_slice(first)
        .map_err(|e| DeepError::Collective(format!("a malformed message from rank 0: {e}")))
}

/// Each rank's `part` on rank 0, by rank (empty elsewhere).
pub(super) fn to_rank_zero(
    comm: &mut dyn AllReduce,
    part: Vec<u8>,
) -> Result<Vec<Vec<u8>>, DeepError> {
    let mut parts = vec![Vec::new(); comm.ranks()];
    if let Some(first) = parts.first_mut() {
        *first = part;
    }
    let got = comm.exchange(parts)?;
    Ok(if comm.rank() == 0 { got } else { Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_deep::collective::Local;

    fn status(appended: u64, ended: Option<bool>, due: bool) -> Status {
        Status {
            appended,
            since: 0,
            ended,
            due,
        }
    }

    fn since(mut status: Status, since: u64) -> Status {
        status.since = since;
        status
    }

    #[test]
    fn every_rank_decides_the_same_from_the_same_statuses() {
        let waiting = [status(10, None, false), status(20, None, true)];
        assert_eq!(
            decide(&waiting, 0),
            Next::Wait,
            "only rank 0's clock counts"
        );
        assert_eq!(decide(&waiting, 30), Next::Run, "30 rows in all");
        let ran = [since(waiting[0], 1), waiting[1]];
        assert_eq!(decide(&ran, 30), Next::Wait);
        let restarted = [waiting[0], since(waiting[1], 1)];
        assert_eq!(
            decide(&restarted, 30),
            Next::Run,
            "only rank 0's count of the last run counts"
        );
        let due = [status(0, None, true), status(0, Some(true), false)];
        assert_eq!(decide(&due, 0), Next::Run);
        let ended = [status(0, Some(true), false), status(0, Some(true), false)];
        assert_eq!(decide(&ended, 0), Next::RunLast);
        let stopped = [status(0, Some(true), true), status(0, Some(false), false)];
        assert_eq!(decide(&stopped, 0), Next::Stop);
        assert_eq!(
            decide(&[status(5, None, true)], 0),
            Next::Run,
            "one rank alone"
        );
    }

    #[test]
    fn statuses_numbers_and_messages_reach_every_rank() {
        let handles: Vec<_> = Local::group(3)
            .into_iter()
            .map(|mut comm| {
                std::thread::spawn(move || {
                    let rank = comm.rank() as u64;
                    let mine = status(rank * 7, (rank == 2).then_some(true), rank == 0);
                    let all = statuses(&mut comm, mine).unwrap();
                    let counts = numbers(&mut comm, &[rank, u64::MAX - rank]).unwrap();
                    let plan = format!("from {rank}");
                    let got: String = from_rank_zero(&mut comm, Some(&plan)).unwrap();
                    let parts = to_rank_zero(&mut comm, vec![rank as u8; 2]).unwrap();
                    (all, counts, got, parts)
                })
            })
            .collect();
        for (rank, handle) in handles.into_iter().enumerate() {
            let (all, counts, got, parts) = handle.join().unwrap();
            assert_eq!(
                all,
                vec![
                    status(0, None, true),
                    status(7, None, false),
                    status(14, Some(true), false)
                ]
            );
            assert_eq!(counts[2], vec![2, u64::MAX - 2]);
            assert_eq!(got, "from 0");
            let want = if rank == 0 {
                vec![vec![0, 0], vec![1, 1], vec![2, 2]]
            } else {
                Vec::new()
            };
            assert_eq!(parts, want);
        }
    }

    #[test]
    fn malformed_statuses_are_errors() {
        let mut bad_end = vec![0; 18];
        bad_end[16] = 3;
        for bad in [&[][..], &[0; 9], &[0; 17], &bad_end, &[0; 19]] {
            assert!(Status::of_bytes(bad).is_err(), "{bad:?}");
        }
        let fine = since(status(u64::MAX, Some(false), true), 7);
        assert_eq!(Status::of_bytes(&fine.to_bytes()).unwrap(), fine);
    }
}
