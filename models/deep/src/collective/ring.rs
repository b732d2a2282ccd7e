//! Ranks as processes over TCP, in a ring: each rank sends to the next and receives from the
//! previous. A sum is a reduce-scatter (n − 1 steps, after which each rank holds the whole sum
//! of one chunk) then an all-gather (n − 1 steps copying those sums around), so that each
//! number is added up on one rank and copied to the others: the same bits everywhere. Each step
//! sends on one thread while it receives (and adds, as the bytes arrive) on the other.

use super::{one_per_rank, AllReduce};
use crate::error::DeepError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

/// Numbers received before they are added into the sums (8 MiB).
const PIECE: usize = 1 << 21;

/// A rank of a ring over TCP.
#[derive(Debug)]
pub struct Ring {
    rank: usize,
    ranks: usize,
    /// To the next rank, and from the previous one (none alone).
    links: Option<(TcpStream, TcpStream)>,
    scratch: Vec<f32>,
}

fn broken(what: &str, e: std::io::Error) -> DeepError {
    DeepError::Collective(format!("{what}: {e}"))
}

impl Ring {
    /// Rank `rank` of `peers.len()` ranks: listens on `listener` (at `peers[rank]`), connects
    /// to the next rank's address and accepts the previous rank, within `timeout`.
    ///
    /// # Errors
    ///
    /// [`DeepError::Collective`] when `rank` is not one of the peers, a peer does not answer
    /// within `timeout`, or the one that connects is not the previous rank.
    pub fn connect(
        rank: usize,
        peers: &[SocketAddr],
        listener: TcpListener,
        timeout: Duration,
    ) -> Result<Ring, DeepError> {
        let ranks = peers.len();
        if rank >= ranks {
            return Err(DeepError::Collective(format!(
                "rank {rank} of {ranks} peers"
            )));
        }
        if ranks == 1 {
            return Ok(Ring {
                rank,
                ranks,
                links: None,
                scratch: Vec::new(),
            });
        }
        let next = peers[(rank + 1) % ranks];
        let (prev, next) = std::thread::scope(|scope| {
            let accepting = scope.spawn(|| accept_previous(&listener, rank, ranks, timeout));
            let next = connect_next(next, rank, ranks, timeout);
            let prev = accepting
                .join()
                .unwrap_or_else(|_| Err(DeepError::Collective("accepting panicked".into())));
            (prev, next)
        });
        Ok(Ring {
            rank,
            ranks,
            links: Some((next?, prev?)),
            scratch: vec![0.0; PIECE],
        })
    }

    /// The ring of `ranks` ranks on loopback ports from `base`, as rank `rank`.
    ///
    /// # Errors
    ///
    /// As [`Ring::connect`]; [`DeepError::Collective`] when this rank's port cannot be bound.
    pub fn loopback(
        rank: usize,
        ranks: usize,
        base: u16,
        timeout: Duration,
    ) -> Result<Ring, DeepError> {
        let peers: Vec<SocketAddr> = (0..ranks)
            .map(|r| SocketAddr::from(([127, 0, 0, 1], base + r as u16)))
            .collect();
        let listener = TcpListener::bind(peers.get(rank).copied().unwrap_or(peers[0]))
            .map_err(|e| broken("binding this rank's port", e))?;
        Ring::connect(rank, &peers, listener, timeout)
    }
}

impl Ring {
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
        let Some((next, prev)) = &self.links else {
            return Ok(());
        };
        let out = if send { out } else { &[] };
        send_while(next, out, || {
            if receive {
                (&*prev).read_exact(into)
            } else {
                Ok(())
            }
        })
    }
}

/// Connects to the next rank (retrying until it listens) and says who this is.
fn connect_next(
    next: SocketAddr,
    rank: usize,
    ranks: usize,
    timeout: Duration,
) -> Result<TcpStream, DeepError> {
    let started = Instant::now();
    let stream = loop {
        match TcpStream::connect_timeout(&next, timeout) {
            Ok(stream) => break stream,
            Err(e) if started.elapsed() >= timeout => {
                return Err(broken(&format!("connecting to the next rank at {next}"), e))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|e| broken("setting TCP_NODELAY", e))?;
    let hello = [rank as u32, ranks as u32];
    (&stream)
        .write_all(bytemuck::cast_slice(&hello))
        .map_err(|e| broken("greeting the next rank", e))?;
    Ok(stream)
}

/// Accepts the previous rank, and checks that it is.
fn accept_previous(
    listener: &TcpListener,
    rank: usize,
    ranks: usize,
    timeout: Duration,
) -> Result<TcpStream, DeepError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| broken("listening", e))?;
    let started = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() >= timeout {
                    return Err(DeepError::Collective(format!(
                        "the previous rank did not connect within {timeout:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(broken("accepting the previous rank", e)),
        }
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| broken("setting up the previous rank's link", e))?;
    let mut hello = [0u32; 2];
    (&stream)
        .read_exact(bytemuck::cast_slice_mut(&mut hello))
        .map_err(|e| broken("reading the previous rank's greeting", e))?;
    let want = [((rank + ranks - 1) % ranks) as u32, ranks as u32];
    if hello != want {
        return Err(DeepError::Collective(format!(
            "expected rank {} of {ranks} to connect, got rank {} of {}",
            want[0], hello[0], hello[1]
        )));
    }
    Ok(stream)
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

/// Messages up to this size are written before receiving, on this thread: the peer's receive
/// buffer (at least 128 KiB on Linux loopback) takes them whole, and no thread is started.
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
        let Some((next, prev)) = &self.links else {
            return Ok(());
        };
        let (n, rank, len) = (self.ranks, self.rank, data.len());
        // Both sides say how many numbers they sum: a mismatch is an error, not a hang.
        let mut theirs = [0u64];
        send_while(next, bytemuck::cast_slice(&[len as u64]), || {
            (&*prev).read_exact(bytemuck::cast_slice_mut(&mut theirs))
        })?;
        if theirs[0] != len as u64 {
            return Err(DeepError::Collective(format!(
                "a sum of {len} numbers met one of {}",
                theirs[0]
            )));
        }
        let scratch = &mut self.scratch;
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
    }

    fn exchange(&mut self, mut parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, DeepError> {
        one_per_rank(&parts, self.ranks)?;
        let Some((next, prev)) = &self.links else {
            return Ok(parts);
        };
        let (n, rank) = (self.ranks, self.rank);
        let mut mine = vec![Vec::new(); n];
        mine[rank] = std::mem::take(&mut parts[rank]);
        // A bag of (from, to, bytes) goes around the ring; each rank keeps what is its own.
        let mut bag: Vec<(u32, u32, Vec<u8>)> = parts
            .into_iter()
            .enumerate()
            .filter(|&(to, _)| to != rank)
            .map(|(to, bytes)| (rank as u32, to as u32, bytes))
            .collect();
        for _ in 0..n - 1 {
            let out = encode_bag(&bag);
            let mut got = Vec::new();
            send_while(next, &out, || read_bag(prev, &mut got))?;
            bag.clear();
            for (from, to, bytes) in decode_bag(&got)? {
                if to as usize == rank {
                    mine[from as usize % n] = bytes;
                } else {
                    bag.push((from, to, bytes));
                }
            }
        }
        Ok(mine)
    }
}

fn encode_bag(bag: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let body: usize = bag.iter().map(|(_, _, b)| 16 + b.len()).sum();
    let mut out = Vec::with_capacity(8 + body);
    out.extend_from_slice(&(body as u64).to_le_bytes());
    for (from, to, bytes) in bag {
        out.extend_from_slice(&from.to_le_bytes());
        out.extend_from_slice(&to.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn read_bag(mut from: &TcpStream, into: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 8];
    from.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_le_bytes(len))
        .map_err(|_| std::io::Error::other("a bag past this machine's memory"))?;
    into.resize(len, 0);
    from.read_exact(into)
}

fn decode_bag(mut bytes: &[u8]) -> Result<Vec<(u32, u32, Vec<u8>)>, DeepError> {
    let bad = || DeepError::Collective("a malformed exchange from the previous rank".into());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let head = bytes.get(..16).ok_or_else(bad)?;
        let from = u32::from_le_bytes(head[0..4].try_into().map_err(|_| bad())?);
        let to = u32::from_le_bytes(head[4..8].try_into().map_err(|_| bad())?);
        let len = u64::from_le_bytes(head[8..16].try_into().map_err(|_| bad())?);
        let len = usize::try_from(len).map_err(|_| bad())?;
        let body = bytes
            .get(16..16usize.checked_add(len).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        out.push((from, to, body.to_vec()));
        bytes = &bytes[16 + len..];
    }
    Ok(out)
}
