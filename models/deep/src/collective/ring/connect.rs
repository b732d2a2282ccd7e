//! Setting a ring up: each rank connects to the next and accepts the previous, each side
//! saying who it is.

use super::broken;
use crate::error::DeepError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The time left until `deadline`, or an error naming `what` once it has passed.
fn left(deadline: Instant, what: &str) -> Result<Duration, DeepError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| DeepError::Collective(format!("{what}: timed out")))
}

/// Connects to the next rank (retrying until it listens, up to `deadline`) and says who this
/// is.
pub(super) fn connect_next(
    next: SocketAddr,
    (rank, ranks): (usize, usize),
    deadline: Instant,
) -> Result<TcpStream, DeepError> {
    let what = format!("connecting to the next rank at {next}");
    let stream = loop {
        match TcpStream::connect_timeout(&next, left(deadline, &what)?) {
            Ok(stream) => break stream,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let wait = left(deadline, &what)?;
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(wait)))
        .map_err(|e| broken("setting up the next rank's link", e))?;
    let hello = [rank as u32, ranks as u32].map(u32::to_le_bytes).concat();
    (&stream)
        .write_all(&hello)
        .map_err(|e| broken("greeting the next rank", e))?;
    Ok(stream)
}

/// Accepts connections until the previous rank's (up to `deadline`); a connection that does
/// not greet as the previous rank in time is dropped, and the wait goes on.
pub(super) fn accept_previous(
    listener: &TcpListener,
    (rank, ranks): (usize, usize),
    deadline: Instant,
) -> Result<TcpStream, DeepError> {
    let what = "waiting for the previous rank to connect";
    listener
        .set_nonblocking(true)
        .map_err(|e| broken("listening", e))?;
    let want = [((rank + ranks - 1) % ranks) as u32, ranks as u32];
    loop {
        match listener.accept() {
            Ok((stream, from)) => match greeted(&stream, want, left(deadline, what)?) {
                Ok(()) => return Ok(stream),
                Err(why) => {
                    tracing::warn!(%from, %why, "a connection to this rank was not the previous rank's")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                left(deadline, what)?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(broken("accepting the previous rank", e)),
        }
    }
}

/// Whether `stream` greets as rank `want[0]` of `want[1]` within `wait`.
fn greeted(stream: &TcpStream, want: [u32; 2], wait: Duration) -> Result<(), DeepError> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(wait)))
        .map_err(|e| broken("setting up the previous rank's link", e))?;
    let mut hello = [0u8; 8];
    (&*stream)
        .read_exact(&mut hello)
        .map_err(|e| broken("reading the greeting", e))?;
    let got = [0, 4]
        .map(|at| u32::from_le_bytes([hello[at], hello[at + 1], hello[at + 2], hello[at + 3]]));
    if got == want {
        Ok(())
    } else {
        Err(DeepError::Collective(format!(
            "expected rank {} of {} to connect, got rank {} of {}",
            want[0], want[1], got[0], got[1]
        )))
    }
}
