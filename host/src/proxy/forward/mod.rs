//! `shadowcat forward stdio -- CMD ARGS...`: the client on our stdin and
//! stdout, the server spawned as our child, one session in between.
//! `shadowcat forward http URL`: the same client, and a session of its own on
//! a streamable-HTTP server (a stdio client, an IDE, reaching a remote
//! server).
//!
//! Messages pass through unchanged, byte for byte, in both directions (to a
//! stdio server in order; to an HTTP server each in a POST of its own, side
//! by side, as streamable HTTP has them). A JSON-RPC batch (MCP 2025-03-26)
//! passes as its elements, one per line. The session's rate limit applies to
//! the client's requests: a refused request is answered right here with a
//! JSON-RPC error carrying the retry hint (`error.data.retryAfterMs`), never
//! dropped silently. Notifications and responses always pass.
//!
//! No request is left waiting: when the client closes stdin, the server gets
//! up to the drain period to answer what is in flight before its own stdin is
//! closed (or its HTTP session deleted), and whatever it leaves unanswered
//! (it exits, closes its stdout, ends its session, or outlasts the drain
//! period) is answered here with an error by its id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

use super::client_key::ClientKey;
use super::head::Head;
use super::jsonrpc::{code, error_response, Incoming, Kind, Message};
use super::mcp_headers::Era;
use super::session::ProxySession;
use super::upstream::{
    limit_text, write_lines, BoundedLines, Forwarded, HttpUpstreamConfig, Line, StdioCommand,
    StdioUpstream, Upstream, UpstreamError,
};
use crate::eviction::RemovalCause;
use crate::session::{NewSession, SessionId, SessionTable, TableError};

mod http;
pub mod oauth;

use http::HttpSide;
use oauth::OAuthClient;

/// How a forward run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardEnd {
    /// The client closed our stdin, and every request it sent was answered.
    ClientClosed,
    /// The server exited or closed its stdout while the client was still
    /// connected, or before answering every request; each of the
    /// `unanswered` ones got an error response instead.
    ServerFailed { reason: String, unanswered: usize },
    /// The client closed our stdin and the server had still not answered
    /// `unanswered` requests after the drain period, so it was closed (and
    /// `reason` says how it ended); each got an error response.
    Abandoned {
        unanswered: usize,
        waited: Duration,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("cannot create the session: {0}")]
    Table(TableError),
}

/// Requests forwarded and not answered yet, by compact id; each holds a pin.
/// A watch channel, so the end of the run can wait for the set to empty.
#[derive(Clone)]
struct InFlight(Arc<watch::Sender<HashSet<String>>>);

impl InFlight {
    fn new() -> Self {
        Self(Arc::new(watch::channel(HashSet::new()).0))
    }

    fn insert(&self, id: &str) -> bool {
        self.0.send_if_modified(|ids| ids.insert(id.to_owned()))
    }

    fn remove(&self, id: &str) -> bool {
        self.0.send_if_modified(|ids| ids.remove(id))
    }

    fn take(&self) -> Vec<String> {
        let mut taken = Vec::new();
        self.0.send_modify(|ids| taken.extend(ids.drain()));
        taken
    }

    async fn emptied(&self) {
        let mut ids = self.0.subscribe();
        let _ = ids.wait_for(HashSet::is_empty).await;
    }
}

/// The server a forward run reaches.
pub enum ForwardServer {
    /// Started from a command, spoken to on its stdin and stdout.
    Stdio(Arc<StdioCommand>),
    /// A streamable-HTTP server, on which the run opens a session of its own;
    /// a client message longer than `max_message` bytes is not sent.
    Http {
        config: Arc<HttpUpstreamConfig>,
        max_message: usize,
        /// Authorises the run when the server answers 401 (MCP
        /// authorization); `None`: a 401 is the client's answer.
        oauth: Option<Arc<OAuthClient>>,
    },
}

/// Runs the forward proxy until the client or the server goes away. `input`
/// and `output` are our stdin and stdout in the binary, pipes in tests.
/// After the client closes `input`, the server gets up to `drain` to answer
/// the requests still in flight before it is stopped.
pub async fn run<R, W>(
    table: Arc<SessionTable<ProxySession>>,
    target: ForwardServer,
    drain: Duration,
    input: R,
    output: W,
) -> Result<ForwardEnd, ForwardError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (server, mut from_server, max_line, limit) = match target {
        ForwardServer::Stdio(command) => {
            let (max_line, limit) = (command.max_line, command.line_limit());
            let spawned = StdioUpstream::spawn(command)?;
            let from_server = spawned.tap()?;
            let server = Server::Stdio(Arc::new(spawned));
            (server, from_server, max_line, limit)
        }
        ForwardServer::Http {
            config,
            max_message,
            oauth,
        } => {
            let limit = limit_text(max_message, Some("--max-message"));
            let (side, from_server) = HttpSide::open(config, oauth);
            let server = Server::Http(side);
            (server, from_server, max_message, limit)
        }
    };
    let upstream = server.upstream();
    let session = ProxySession::new(Arc::clone(&upstream), ClientKey(0), Era::Sessions);
    let id = table
        .create(NewSession::anonymous(session))
        .map_err(|rejected| ForwardError::Table(rejected.error))?
        .id;
    let _ = table.activate(id);

    let (lines, to_client) = mpsc::channel::<Bytes>(256);
    let writer = tokio::spawn(write_lines(output, to_client));
    let in_flight = InFlight::new();
    let relay = {
        let (lines, table, in_flight) = (lines.clone(), Arc::clone(&table), in_flight.clone());
        tokio::spawn(async move {
            while let Some(event) = from_server.next().await {
                let Some(message) = event.message else {
                    continue;
                };
                if message.kind() == Kind::Response
                    && message.id().is_some_and(|rid| in_flight.remove(rid))
                {
                    let _ = table.end_request(id);
                }
                if lines.send(message.bytes().clone()).await.is_err() {
                    return;
                }
            }
        })
    };

    let mut requests = FramedRead::new(input, BoundedLines::new(max_line));
    let failure = loop {
        let line = tokio::select! {
            line = requests.next() => line,
            reason = upstream.failed() => break Some(reason),
        };
        let line = match line {
            Some(Ok(Line::Line(line))) => line,
            Some(Ok(Line::TooLong(head))) => {
                refuse_too_long(head, &limit, &lines, &server).await;
                continue;
            }
            Some(Err(_)) | None => break None,
        };
        if line.trim_ascii().is_empty() {
            continue;
        }
        // A 2025-03-26 client may send a batch: the server gets its elements
        // one per line, as if each had come alone, and its answers come back
        // the same way.
        let messages = match Incoming::parse(line) {
            Ok(Incoming::One(message)) => vec![Ok(message)],
            Ok(Incoming::Batch(batch)) => batch,
            Err(e) => vec![Err(e)],
        };
        for message in messages {
            let message = match message {
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
            let rid = message
                .id()
                .filter(|_| message.kind() == Kind::Request)
                .map(str::to_owned);
            if let Err(e) = server.send(message).await {
                if let Some(rid) = rid {
                    if in_flight.remove(&rid) {
                        let _ = table.end_request(id);
                    }
                    let _ = lines.send(failed_response(&rid, &e)).await;
                }
            }
        }
    };
    let client_closed = failure.is_none();
    // Closing the server's stdin is how an MCP client says goodbye, and many
    // servers exit on it at once: the requests in flight are answered first.
    let failure = match failure {
        Some(reason) => Some(reason),
        None => tokio::select! {
            () = in_flight.emptied() => None,
            reason = upstream.failed() => Some(reason),
            () = tokio::time::sleep(drain) => None,
        },
    };
    upstream.close().await;
    server.stop();
    // The relay ends once the server's output is all delivered, so what is
    // still in flight after it will never be answered.
    let _ = relay.await;
    let unanswered = in_flight.take();
    // The server is gone by now, so this is how it went (its exit status).
    let ended = upstream.failed().await;
    let why = match &failure {
        Some(reason) => format!("the MCP server ended before answering: {reason}"),
        None => format!(
            "the MCP server did not answer within {drain:?} of the client closing its input; \
             {ended}"
        ),
    };
    for rid in &unanswered {
        let _ = table.end_request(id);
        let _ = lines
            .send(error_response(Some(rid), code::UPSTREAM_FAILED, &why, None))
            .await;
    }
    drop(lines);
    let _ = writer.await;
    let _ = table.remove(id, RemovalCause::Closed);
    let unanswered = unanswered.len();
    Ok(match failure {
        _ if client_closed && unanswered == 0 => ForwardEnd::ClientClosed,
        Some(reason) => ForwardEnd::ServerFailed { reason, unanswered },
        None => ForwardEnd::Abandoned {
            unanswered,
            waited: drain,
            reason: ended,
        },
    })
}

/// Settles a client message over the line limit, of which only its
/// envelope, `head`, is known, so that nobody waits for it: a request is
/// answered with an error by its id; a response (to a request of the
/// server's) goes to the server as an error for that request. A message
/// that cannot be told is answered with an error without an id, as JSON-RPC
/// answers what it cannot read; a notification is dropped.
async fn refuse_too_long(
    head: Head,
    limit: &str,
    to_client: &mpsc::Sender<Bytes>,
    server: &Server,
) {
    match head {
        Head::Call { id: Some(id) } => {
            let why = format!("the request is longer than {limit}; it was not passed on");
            let _ = to_client
                .send(error_response(Some(&id), code::INVALID_REQUEST, &why, None))
                .await;
        }
        Head::Call { id: None } => {
            tracing::warn!("the client wrote a notification longer than {limit}: dropped");
        }
        Head::Response { id: Some(id) } => {
            tracing::warn!(id, "the client wrote a response longer than {limit}");
            let why = format!("the client's response is longer than {limit}; it was not passed on");
            let error = error_response(Some(&id), code::INTERNAL_ERROR, &why, None);
            if let Ok(error) = Message::parse(error) {
                let _ = server.send(error).await;
            }
        }
        Head::Response { id: None } | Head::Unknown => {
            let why = format!("the message is longer than {limit}; it was not passed on");
            let _ = to_client
                .send(error_response(None, code::INVALID_REQUEST, &why, None))
                .await;
        }
    }
}

/// The server of a run, and how a client message reaches it.
enum Server {
    /// Written to the server's stdin in order; everything it writes comes
    /// back on the tap.
    Stdio(Arc<StdioUpstream>),
    Http(Arc<HttpSide>),
}

impl Server {
    fn upstream(&self) -> Arc<dyn Upstream> {
        match self {
            Server::Stdio(server) => Arc::clone(server) as Arc<dyn Upstream>,
            Server::Http(side) => Arc::clone(side.upstream()) as Arc<dyn Upstream>,
        }
    }

    /// Hands `message` on. To a stdio server the error is the delivery's;
    /// an HTTP server's answer, refusal or failure of a request reaches the
    /// client through the relay.
    async fn send(&self, message: Message) -> Result<(), UpstreamError> {
        match self {
            Server::Stdio(server) => server
                .send(message, &Forwarded::default())
                .await
                .map(|_| ()),
            Server::Http(side) => {
                side.forward(message).await;
                Ok(())
            }
        }
    }

    /// Ends what still relays an HTTP server's answers: after the session's
    /// end nothing more is read, and the relay ends with what it has.
    fn stop(&self) {
        if let Server::Http(side) = self {
            side.stop();
        }
    }
}

/// The error a request gets when it could not be handed on.
fn failed_response(rid: &str, e: &UpstreamError) -> Bytes {
    match e {
        // A full queue is backpressure, as in `reverse`: the server is fine,
        // and the request may be sent again.
        UpstreamError::Busy(_) => error_response(
            Some(rid),
            code::OVERLOADED,
            &e.to_string(),
            Some(json!({ "retryAfterMs": RETRY_OVERLOADED_MS })),
        ),
        _ => error_response(Some(rid), code::UPSTREAM_FAILED, &e.to_string(), None),
    }
}

/// Pins a request (rate limited); `Some(error response)` when refused.
/// Notifications and responses pass without a pin.
fn admit(
    table: &SessionTable<ProxySession>,
    id: SessionId,
    message: &Message,
    in_flight: &InFlight,
) -> Option<Bytes> {
    if message.kind() != Kind::Request {
        return None;
    }
    match table.begin_request(id, message.bytes().len() as u64) {
        Ok(()) => {
            if let Some(rid) = message.id() {
                if !in_flight.insert(rid) {
                    // A reused id: one pin per id is enough.
                    let _ = table.end_request(id);
                }
            }
            None
        }
        Err(refusal) => Some(refusal_response(message.id(), &refusal)),
    }
}

/// The retry hint of a request refused for load (too many in flight, or a
/// full queue to the server), which lasts no known time: the `Retry-After`
/// that `reverse` gives the same refusals.
const RETRY_OVERLOADED_MS: u64 = 1000;

/// The error a rate-limited (or otherwise refused) request gets instead of
/// being forwarded.
fn refusal_response(id: Option<&str>, refusal: &TableError) -> Bytes {
    match refusal {
        TableError::RateLimited { retry_after, .. } => error_response(
            id,
            code::RATE_LIMITED,
            &format!("rate limited: retry after {retry_after:?}"),
            Some(json!({ "retryAfterMs": super::retry_after_millis(*retry_after) })),
        ),
        TableError::Overloaded { .. } => error_response(
            id,
            code::OVERLOADED,
            "too many requests in flight; retry shortly",
            Some(json!({ "retryAfterMs": RETRY_OVERLOADED_MS })),
        ),
        other => error_response(id, code::INTERNAL_ERROR, &other.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_forward_rate_limit_hint_is_never_early() {
        let refusal = TableError::RateLimited {
            id: SessionId::new(0, 1),
            retry_after: Duration::from_micros(999_990),
        };
        let body = refusal_response(Some("7"), &refusal);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["id"], 7);
        assert_eq!(value["error"]["code"], code::RATE_LIMITED);
        assert_eq!(value["error"]["data"]["retryAfterMs"], 1_000);
    }
}
