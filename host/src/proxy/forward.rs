//! `shadowcat forward stdio -- CMD ARGS...`: the client on our stdin and
//! stdout, the server spawned as our child, one session in between.
//!
//! Messages pass through unchanged, byte for byte and in order, in both
//! directions. The session's rate limit applies to the client's requests: a
//! refused request is answered right here with a JSON-RPC error carrying the
//! retry hint (`error.data.retryAfterMs`), never dropped silently.
//! Notifications and responses always pass.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::client_key::ClientKey;
use super::jsonrpc::{code, error_response, Kind, Message};
use super::mcp_headers::Era;
use super::session::ProxySession;
use super::upstream::{Forwarded, StdioCommand, StdioUpstream, Upstream, UpstreamError};
use crate::eviction::RemovalCause;
use crate::session::{NewSession, SessionId, SessionTable, TableError};

/// How a forward run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardEnd {
    /// The client closed our stdin.
    ClientClosed,
    /// The server went away first.
    ServerFailed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("cannot create the session: {0}")]
    Table(TableError),
}

/// Runs the forward proxy until the client or the server goes away. `input`
/// and `output` are our stdin and stdout in the binary, pipes in tests.
pub async fn run<R, W>(
    table: Arc<SessionTable<ProxySession>>,
    command: Arc<StdioCommand>,
    input: R,
    output: W,
) -> Result<ForwardEnd, ForwardError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max_line = command.max_line;
    let spawned = StdioUpstream::spawn(command)?;
    let mut from_server = spawned.tap()?;
    let server: Arc<dyn Upstream> = Arc::new(spawned);
    let session = ProxySession {
        upstream: Arc::clone(&server),
        client: ClientKey(0),
        era: Era::Sessions,
    };
    let id = table
        .create(NewSession::anonymous(session))
        .map_err(|rejected| ForwardError::Table(rejected.error))?
        .id;
    let _ = table.activate(id);

    let (lines, to_client) = mpsc::channel::<Bytes>(256);
    let writer = tokio::spawn(write_lines(output, to_client));
    // Requests forwarded and not answered yet: each holds a pin.
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let relay = {
        let (lines, table, in_flight) = (lines.clone(), Arc::clone(&table), Arc::clone(&in_flight));
        tokio::spawn(async move {
            while let Some(event) = from_server.next().await {
                let Some(message) = event.message else {
                    continue;
                };
                if message.kind() == Kind::Response
                    && message.id().is_some_and(|rid| in_flight.lock().remove(rid))
                {
                    let _ = table.end_request(id);
                }
                if lines.send(message.bytes().clone()).await.is_err() {
                    return;
                }
            }
        })
    };

    let mut requests = FramedRead::new(input, LinesCodec::new_with_max_length(max_line));
    let end = loop {
        let line = tokio::select! {
            line = requests.next() => line,
            reason = server.failed() => break ForwardEnd::ServerFailed(reason),
        };
        let line = match line {
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                let body = error_response(None, code::INVALID_REQUEST, "message too long", None);
                let _ = lines.send(body).await;
                continue;
            }
            Some(Err(LinesCodecError::Io(_))) | None => break ForwardEnd::ClientClosed,
        };
        if line.trim().is_empty() {
            continue;
        }
        let message = match Message::parse(Bytes::from(line)) {
            Ok(message) => message,
            Err(e) => {
                let _ = lines
                    .send(error_response(e.id(), e.code(), &e.to_string(), None))
                    .await;
                continue;
            }
        };
        if let Some(refusal) = admit(&table, id, &message, &in_flight) {
            let _ = lines.send(refusal).await;
            continue;
        }
        if let Err(e) = server.send(message.clone(), &Forwarded::default()).await {
            if let Some(rid) = message.id().filter(|_| message.kind() == Kind::Request) {
                if in_flight.lock().remove(rid) {
                    let _ = table.end_request(id);
                }
                let body = error_response(Some(rid), code::UPSTREAM_FAILED, &e.to_string(), None);
                let _ = lines.send(body).await;
            }
        }
    };
    server.close().await;
    // The server is gone: its unanswered requests end here.
    for _ in in_flight.lock().drain() {
        let _ = table.end_request(id);
    }
    let _ = relay.await;
    drop(lines);
    let _ = writer.await;
    let _ = table.remove(id, RemovalCause::Closed);
    Ok(end)
}

/// Pins a request (rate limited); `Some(error response)` when refused.
/// Notifications and responses pass without a pin.
fn admit(
    table: &SessionTable<ProxySession>,
    id: SessionId,
    message: &Message,
    in_flight: &Mutex<HashSet<String>>,
) -> Option<Bytes> {
    if message.kind() != Kind::Request {
        return None;
    }
    match table.begin_request(id, message.bytes().len() as u64) {
        Ok(()) => {
            if let Some(rid) = message.id() {
                if !in_flight.lock().insert(rid.to_owned()) {
                    // A reused id: one pin per id is enough.
                    let _ = table.end_request(id);
                }
            }
            None
        }
        Err(refusal) => Some(refusal_response(message.id(), &refusal)),
    }
}

/// The error a rate-limited (or otherwise refused) request gets instead of
/// being forwarded.
fn refusal_response(id: Option<&str>, refusal: &TableError) -> Bytes {
    match refusal {
        TableError::RateLimited { retry_after, .. } => error_response(
            id,
            code::RATE_LIMITED,
            &format!("rate limited: retry after {retry_after:?}"),
            Some(json!({ "retryAfterMs": retry_after.as_millis().max(1) })),
        ),
        TableError::Overloaded { .. } => error_response(
            id,
            code::OVERLOADED,
            "too many requests in flight; retry shortly",
            Some(json!({ "retryAfterMs": 1000 })),
        ),
        other => error_response(id, code::INTERNAL_ERROR, &other.to_string(), None),
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(mut output: W, mut lines: mpsc::Receiver<Bytes>) {
    while let Some(line) = lines.recv().await {
        let written = async {
            output.write_all(&line).await?;
            output.write_all(b"\n").await?;
            output.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
}
