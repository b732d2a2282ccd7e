//! Ranks as processes over TCP, in a ring: each rank sends to the next and receives from the
//! previous. A sum is a reduce-scatter (n − 1 steps, after which each rank holds the whole sum
//! of one chunk) then an all-gather (n − 1 steps copying those sums around), so that each
//! number is added up on one rank and copied to the others: the same bits everywhere. Each step
//! sends on one thread while it receives (and adds, as the bytes arrive) on the other.

mod bag;
mod connect;

use super::{one_per_rank, AllReduce};
use crate::error::DeepError;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

/// Numbers received before they are added into the sums (8 MiB).
const PIECE: usize = 1 << 21;

/// How long a ring waits and how much it takes from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLimits {
    /// How long to wait for the peers to connect.
    pub connect: Duration,
    /// How long one read or write may wait on a peer before the ring fails (a peer stopped
    /// with its socket open would otherwise hold every rank forever).
    pub io: Duration,
    /// The largest exchange a peer may send in one step, in bytes.
    pub max_message: usize,
}

impl Default for RingLimits {
    fn default() -> Self {
        RingLimits {
            connect: Duration::from_secs(60),
            io: Duration::from_secs(600),
            max_message: 1 << 30,
        }
    }
}

/// The links of a rank.
#[derive(Debug)]
enum Links {
    /// The only rank.
    Alone,
    /// To the next rank, and from the previous one.
    Up(TcpStream, TcpStream),
    /// An operation failed: both links are shut, and every later one fails too (the peers
    /// see the links close rather than wait).
    Failed,
}

/// A rank of a ring over TCP.
#[derive(Debug)]
pub struct Ring {
    rank: usize,
    ranks: usize,
    links: Links,
    scratch: Vec<f32>,
    max_message: usize,
}

fn broken(what: &str, e: std::io::Error) -> DeepError {
    DeepError::Collective(format!("{what}: {e}"))
}

impl Ring {
    /// Rank `rank` of `peers.len()` ranks: listens on `listener` (at `peers[rank]`), connects
    /// to the next rank's address and accepts the previous rank, within `limits.connect`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when `rank` is not one of the peers, or the ring is not up
    /// within `limits.connect` (a peer that never connects, or never greets as the previous
    /// rank).
    pub fn connect(
        rank: usize,
        peers: &[SocketAddr],
        listener: TcpListener,
        limits: RingLimits,
    ) -> Result<Ring, DeepError> {
        let ranks = peers.len();
        if rank >= ranks {
            return Err(DeepError::Collective(format!(
                "rank {rank} of {ranks} peers"
            )));
        }
        let mut ring = Ring {
            rank,
            ranks,
            links: Links::Alone,
            scratch: Vec::new(),
            max_message: limits.max_message,
        };
        if ranks == 1 {
            return Ok(ring);
        }
        let deadline = Instant::now() + limits.connect;
        let next = peers[(rank + 1) % ranks];
        let (prev, next) = std::thread::scope(|scope| {
            let accepting =
                scope.spawn(|| connect::accept_previous(&listener, (rank, ranks), deadline));
            let next = connect::connect_next(next, (rank, ranks), deadline);
            let prev = accepting
                .join()
                .unwrap_or_else(|_| Err(DeepError::Collective("accepting panicked".into())));
            (prev, next)
        });
        let (next, prev) = (next?, prev?);
        for stream in [&next, &prev] {
            stream
                .set_read_timeout(Some(limits.io))
                .and_then(|()| stream.set_write_timeout(Some(limits.io)))
                .map_err(|e| broken("setting the links' timeouts", e))?;
        }
        ring.links = Links::Up(next, prev);
        ring.scratch = vec![0.0; PIECE];
        Ok(ring)
    }

    /// The ring of `ranks` ranks on loopback ports `base..base + ranks`, as rank `rank`.
    ///
    /// # Errors
    ///
    /// As [`Ring::connect`]; [`DeepError::Collective`] when `rank` is not below `ranks`, the
    /// ports run past 65535, or this rank's port cannot be bound.
    pub fn loopback(
        rank: usize,
        ranks: usize,
        base: u16,
        limits: RingLimits,
    ) -> Result<Ring, DeepError> {
        let port = |r: usize| u16::try_from(r).ok().and_then(|r| base.checked_add(r));
        if rank >= ranks || port(ranks - 1).is_none() {
            return Err(DeepError::Collective(format!(
                "rank {rank} of {ranks} ranks on ports from {base}"
            )));
        }
        let peers: Vec<SocketAddr> = (0..ranks)
            .filter_map(port)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let listener =
            TcpListener::bind(peers[rank]).map_err(|e| broken("binding this rank's port", e))?;
        Ring::connect(rank, &peers, listener, limits)
    }

    /// Runs `op` on the links (`None` alone); a failure shuts both links, for good.
    fn on_links<T>(
        &mut self,
        alone: T,
        op: impl FnOnce(&TcpStream, &TcpStream, &mut Vec<f32>) -> Result<T, DeepError>,
    ) -> Result<T, DeepError> {
        let (next, prev) = match &self.links {
            Links::Alone => return Ok(alone),
            Links::Failed => {
                return Err(DeepError::Collective(
                    "the ring failed in an earlier operation".into(),
                ))
            }
            Links::Up(next, prev) => (next, prev),
        };
        let result = op(next, prev, &mut self.scratch);
        if result.is_err() {
            let _ = next.shutdown(Shutdown::Both);
            let _ = prev.shutdown(Shutdown::Both);
            self.links = Links::Failed;
        }
        result
    }

    /// The links' bare limit, for benchmarks: sends `out` to the next rank (when `send`) while
    /// filling `into` from the previous one (when `receive`), with no framing and no
    /// arithmetic. Every rank must agree on who sends.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when a peer is gone.
    pub fn pass(
        &mut self,
        out: &[u8],
        into: &mut [u8],
        (send, receive): (bool, bool),
    ) -> Result<(), DeepError> {
        self.on_links((), |next, prev, _| {
            let out = if send { out } else { &[] };
            send_while(next, out, || {
                if receive {
                    (&*prev).read_exact(into)
                } else {
                    Ok(())
                }
            })
        })
    }
}

/// The `i`th of `n` chunks of `len` numbers.
fn chunk(len: usize, n: usize, i: usize) -> Range<usize> {
    (i * len / n)..((i + 1) * len / n)
}

/// `data[send]` and `data[recv]`, two disjoint ranges, one to read and one to write.
fn two(data: &mut [f32], send: Range<usize>, recv: Range<usize>) -> (&[f32], &mut [f32]) {
    if send.end <= recv.start {
        let (a, b) = data.split_at_mut(recv.start);
        (&a[send], &mut b[..recv.len()])
    } else {
        let (a, b) = data.split_at_mut(send.start);
        (&b[..send.len()], &mut a[recv])
    }
}

/// Reads `into.len()` numbers from `from`, adding them to `into` (or replacing it).
fn receive(
    mut from: &TcpStream,
    into: &mut [f32],
    scratch: &mut [f32],
    add: bool,
) -> std::io::Result<()> {
    if !add {
        return from.read_exact(bytemuck::cast_slice_mut(into));
    }
    for part in into.chunks_mut(scratch.len()) {
        let piece = &mut scratch[..part.len()];
        from.read_exact(bytemuck::cast_slice_mut(piece))?;
        for (d, s) in part.iter_mut().zip(piece.iter()) {
            *d += s;
        }
    }
    Ok(())
}

/// Messages up to this size are written before receiving, on this thread, and no thread is
/// started: this assumes the peer's socket takes them whole before it reads (Linux's receive
/// buffers start at 128 KiB; were one smaller, the write would wait out the link's timeout and
/// fail, not hang).
const SMALL: usize = 32 << 10;

/// Sends `data` to `to` (on another thread, unless it is small) while `receiving` runs on this
/// one.
fn send_while(
    to: &TcpStream,
    data: &[u8],
    receiving: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), DeepError> {
    if data.len() <= SMALL {
        let mut to = to;
        to.write_all(data)
            .map_err(|e| broken("sending to the next rank", e))?;
        return receiving().map_err(|e| broken("receiving from the previous rank", e));
    }
    std::thread::scope(|scope| {
        let sending = scope.spawn(move || {
            let mut to = to;
            to.write_all(data)
        });
        let received = receiving();
        if received.is_err() {
            // The sender may be blocked on a peer that no longer reads.
            let _ = to.shutdown(Shutdown::Both);
        }
        let sent = sending
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sender panicked")));
        sent.map_err(|e| broken("sending to the next rank", e))?;
        received.map_err(|e| broken("receiving from the previous rank", e))
    })
}

impl AllReduce for Ring {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.ranks
    }

    fn sum(&mut self, data: &mut [f32]) -> Result<(), DeepError> {
        let (n, rank) = (self.ranks, self.rank);
        self.on_links((), |next, prev, scratch| {
            check_lengths(next, prev, data.len())?;
            let len = data.len();
            for step in 0..n - 1 {
                let send = chunk(len, n, (rank + n - step) % n);
                let recv = chunk(len, n, (rank + 2 * n - step - 1) % n);
                let (out, into) = two(data, send, recv);
                send_while(next, bytemuck::cast_slice(out), || {
                    receive(prev, into, scratch, true)
                })?;
            }
            for step in 0..n - 1 {
                let send = chunk(len, n, (rank + 1 + n - step) % n);
                let recv = chunk(len, n, (rank + n - step) % n);
                let (out, into) = two(data, send, recv);
                send_while(next, bytemuck::cast_slice(out), || {
                    receive(prev, into, scratch, false)
                })?;
            }
            Ok(())
        })
    }

    fn exchange(&mut self, mut parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, DeepError> {
        one_per_rank(&parts, self.ranks)?;
        let (n, rank, max) = (self.ranks, self.rank, self.max_message);
        let mut mine: Vec<Option<Vec<u8>>> = vec![None; n];
        mine[rank] = Some(std::mem::take(&mut parts[rank]));
        let alone = mine.clone();
        let mine = self.on_links(alone, |next, prev, _| {
            let mut bag: Vec<bag::Message> = parts
                .into_iter()
                .enumerate()
                .filter(|&(to, _)| to != rank)
                .map(|(to, bytes)| (rank as u32, to as u32, bytes))
                .collect();
            let mut got = Vec::new();
            for _ in 0..n - 1 {
                let out = bag::encode(&bag);
                send_while(next, &out, || bag::read(prev, &mut got, max))?;
                bag.clear();
                for (from, to, bytes) in bag::decode(&got, n)? {
                    if to as usize != rank {
                        bag.push((from, to, bytes));
                    } else if mine[from as usize].replace(bytes).is_some() {
                        return Err(DeepError::Collective(format!(
                            "rank {from} sent this rank two parts in one exchange"
                        )));
                    }
                }
            }
            if !bag.is_empty() || mine.iter().any(Option::is_none) {
                return Err(DeepError::Collective(
                    "an exchange ended with parts undelivered".into(),
                ));
            }
            Ok(mine)
        })?;
        Ok(mine.into_iter().map(Option::unwrap_or_default).collect())
    }
}

/// Both neighbours say how many numbers they sum: a mismatch is an error on some rank, whose
/// failure closes its links and so fails the others, rather than a hang.
fn check_lengths(next: &TcpStream, prev: &TcpStream, len: usize) -> Result<(), DeepError> {
    let mut theirs = [0u8; 8];
    send_while(next, &(len as u64).to_le_bytes(), || {
        (&*prev).read_exact(&mut theirs)
    })?;
    let theirs = u64::from_le_bytes(theirs);
    if theirs != len as u64 {
        return Err(DeepError::Collective(format!(
            "a sum of {len} numbers met one of {theirs}"
        )));
    }
    Ok(())
}
