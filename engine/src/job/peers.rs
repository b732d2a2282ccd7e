//! The connections between the processes of a cluster, and what a process does when one fails.
//!
//! Timely connects the processes itself, with sockets that wait forever: a peer that vanishes
//! without closing its connection (a cut link, a frozen host) leaves the others waiting, and a
//! peer that dies makes a communication thread panic while the workers wait on. Here the
//! connections are made as timely makes them (process `p` connects to every lower index and
//! says its index; it accepts the higher ones), each with TCP keepalive and a user timeout of
//! `peer_timeout`, so that a silent peer is a failed connection within that time. The first
//! connection that fails makes the process log which peer it lost and end at once (by
//! [`PEER_LOST_SIGNAL`]): every process of the cluster stops, and restarted (by Kubernetes, or
//! by hand) they resume together from their newest common checkpoint.

use super::Cluster;
use crate::error::{Error, Result};
use rustix::net::sockopt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::{AllocatorBuilder, Hooks};

/// The signal a process that lost a peer ends by: SIGKILL, sent to itself once it has logged
/// the loss, so that nothing runs after it (shells and Kubernetes report the status as 137).
pub const PEER_LOST_SIGNAL: i32 = 9;

/// What timely's communication threads start their panics with.
const COMMUNICATION_ERROR: &str = "timely communication error";

/// How long a process waits between tries to reach a peer that is not listening yet.
const RETRY: Duration = Duration::from_millis(500);

/// Timely's allocators for this process's `workers` over connections to every peer, and the
/// guard of its communication threads; a peer lost later ends the process
/// ([`end_on_peer_loss`]).
///
/// # Errors
///
/// [`Error::Start`] when a peer cannot be reached within `connect_within`, or the sockets
/// cannot be set up.
pub(crate) fn allocators(
    cluster: &Cluster,
    workers: usize,
    (peer_timeout, connect_within): (Duration, Duration),
) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>)> {
    let sockets = connect(cluster, connect_within).map_err(|e| Error::Start(e.to_string()))?;
    for socket in sockets.iter().flatten() {
        keep_alive(socket, peer_timeout)
            .map_err(|e| Error::Start(format!("setting up the connection to a peer: {e}")))?;
    }
    end_on_peer_loss(cluster.process);
    let hooks = Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(local, sockets, cluster.process, workers, hooks)
            .map_err(|e| Error::Start(format!("starting the cluster's connections: {e}")))?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    Ok((builders, Box::new(guard)))
}

/// A connection to every other process of `cluster`, by index (`None` at this process's own):
/// to each lower index, connecting and sending this process's index; from each higher one,
/// accepting and reading its index. A connection that says nothing usable is dropped, and a
/// newer one from the same process replaces an older (its earlier life's).
fn connect(cluster: &Cluster, within: Duration) -> std::io::Result<Vec<Option<TcpStream>>> {
    let deadline = Instant::now() + within;
    let me = cluster.process;
    let own = cluster.hosts.get(me).ok_or_else(|| {
        std::io::Error::other(format!("no host for process {me} in the hosts list"))
    })?;
    let listener = listen(own, deadline)?;
    let mut sockets: Vec<Option<TcpStream>> = (0..cluster.hosts.len()).map(|_| None).collect();
    for (index, address) in cluster.hosts.iter().enumerate().take(me) {
        let mut stream = reach(address, deadline).map_err(|e| {
            std::io::Error::other(format!("reaching process {index} at {address}: {e}"))
        })?;
        stream.set_nodelay(true)?;
        stream.write_all(&(me as u64).to_be_bytes())?;
        sockets[index] = Some(stream);
    }
    listener.set_nonblocking(true)?;
    while sockets.iter().skip(me + 1).any(Option::is_none) {
        match listener.accept() {
            Ok((stream, from)) => match introduced(stream) {
                Ok((index, stream)) if index > me && index < sockets.len() => {
                    sockets[index] = Some(stream);
                }
                Ok((index, _)) => {
                    tracing::warn!(%from, index, "a connection that names no later process of the cluster: dropped");
                }
                Err(e) => {
                    tracing::warn!(%from, error = %e, "a connection that did not say its process: dropped")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let waiting: Vec<usize> = (me + 1..sockets.len())
                        .filter(|&i| sockets[i].is_none())
                        .collect();
                    return Err(std::io::Error::other(format!(
                        "processes {waiting:?} did not connect to {own} within {within:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(sockets)
}

/// A listener on `address`, tried until `deadline` (a pod's own name may not resolve yet).
fn listen(address: &str, deadline: Instant) -> std::io::Result<TcpListener> {
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(e) if Instant::now() > deadline => {
                return Err(std::io::Error::other(format!(
                    "listening on {address}: {e}"
                )))
            }
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// The process index an accepted connection says it is, read within a second.
fn introduced(mut stream: TcpStream) -> std::io::Result<(usize, TcpStream)> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut index = [0u8; 8];
    stream.read_exact(&mut index)?;
    stream.set_read_timeout(None)?;
    stream.set_nodelay(true)?;
    let index = usize::try_from(u64::from_be_bytes(index)).unwrap_or(usize::MAX);
    Ok((index, stream))
}

/// A connection to `address` (any of the addresses its name has), tried until `deadline`
/// while the peer is not listening yet.
fn reach(address: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    let mut logged = false;
    loop {
        let attempt = address.to_socket_addrs().and_then(|addrs| {
            let mut last = std::io::Error::other("the name has no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(e) => {
                if !logged {
                    tracing::info!(address, error = %e, "waiting for a peer to listen");
                    logged = true;
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// TCP keepalive probes a second apart after a second of silence, and a user timeout of
/// `timeout`: a peer that stops answering fails its connection within about `timeout`.
fn keep_alive(socket: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    let probes = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
    sockopt::set_socket_keepalive(socket, true)?;
    sockopt::set_tcp_keepidle(socket, Duration::from_secs(1))?;
    sockopt::set_tcp_keepintvl(socket, Duration::from_secs(1))?;
    sockopt::set_tcp_keepcnt(socket, probes)?;
    let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(socket, millis)?;
    Ok(())
}

/// Makes the first panic of a communication thread end the process by [`PEER_LOST_SIGNAL`],
/// after an error that names the connection and the cause; the threads of connections that
/// fail after it wait for the end (other panics go to the hook there was).
fn end_on_peer_loss(process: usize) {
    static INSTALLED: Once = Once::new();
    static ENDING: AtomicBool = AtomicBool::new(false);
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with(COMMUNICATION_ERROR) {
                return previous(info);
            }
            if ENDING.swap(true, Ordering::SeqCst) {
                // Another connection failed first and its thread is ending the process.
                loop {
                    std::thread::park();
                }
            }
            let thread = std::thread::current();
            let connection = thread.name().unwrap_or("a communication thread");
            tracing::error!(
                process,
                connection,
                cause = message,
                "lost a peer of the cluster: stopping, so that every process restarts from the newest common checkpoint"
            );
            // Not `exit`: its handlers would tear down the C and C++ libraries' statics
            // (RocksDB's) under the threads still using them, and crash.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            loop {
                std::thread::park();
            }
        }));
    });
}
