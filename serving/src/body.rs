//! Request bodies, received within a size limit and a time limit.

use crate::options::ServeOptions;
use crate::reply::{error, Answer, Refusal};
use crate::store::ModelStore;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use std::sync::atomic::Ordering;
use warp::http::StatusCode;

/// Reads a request body of at most `limit` bytes.
async fn read_body(
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    limit: u64,
) -> Result<Vec<u8>, Refusal> {
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        if (bytes.len() + chunk.remaining()) as u64 > limit {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".to_owned(),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(bytes)
}

/// A request body, or the answer to give instead: 408 past the time limit.
pub(crate) async fn receive(
    store: &ModelStore,
    options: &ServeOptions,
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    limit: u64,
) -> Result<Vec<u8>, Answer> {
    let received = tokio::time::timeout(options.request_timeout, read_body(body, limit))
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    options.request_timeout.as_millis()
                ),
            ))
        });
    received.map_err(|(status, message)| {
        store.stats().client_errors.fetch_add(1, Ordering::Relaxed);
        error(status, message)
    })
}
