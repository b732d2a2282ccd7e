//! An exchange's messages in flight around the ring: a bag of (from, to, bytes), each rank
//! keeping what is addressed to it and passing the rest on.

use crate::error::DeepError;
use std::io::Read;
use std::net::TcpStream;

/// One message: from a rank, to a rank, its bytes.
pub(super) type Message = (u32, u32, Vec<u8>);

/// The bag as bytes: its body's length, then per message its sender, receiver, length and
/// bytes, all little-endian.
pub(super) fn encode(bag: &[Message]) -> Vec<u8> {
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

/// Reads a bag's body from `from` into `into`: at most `max` bytes, memory growing only as
/// they arrive.
pub(super) fn read(from: &TcpStream, into: &mut Vec<u8>, max: usize) -> std::io::Result<()> {
    let mut len = [0u8; 8];
    (&*from).read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > max as u64 {
        return Err(std::io::Error::other(format!(
            "a peer sent an exchange of {len} bytes, more than the {max} allowed"
        )));
    }
    into.clear();
    from.take(len).read_to_end(into)?;
    if into.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The messages of a bag's body, each sender and receiver one of `ranks`.
pub(super) fn decode(mut bytes: &[u8], ranks: usize) -> Result<Vec<Message>, DeepError> {
    let bad = || DeepError::Collective("a malformed exchange from the previous rank".into());
    let word = |b: &[u8]| -> u32 { u32::from_le_bytes([b[0], b[1], b[2], b[3]]) };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let head = bytes.get(..16).ok_or_else(bad)?;
        let (from, to) = (word(&head[0..4]), word(&head[4..8]));
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[8..16]);
        let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| bad())?;
        let end = 16usize.checked_add(len).ok_or_else(bad)?;
        let body = bytes.get(16..end).ok_or_else(bad)?;
        if from as usize >= ranks || to as usize >= ranks {
            return Err(bad());
        }
        out.push((from, to, body.to_vec()));
        bytes = &bytes[end..];
    }
    Ok(out)
}
