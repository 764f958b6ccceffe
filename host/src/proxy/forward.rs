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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

use super::client_key::ClientKey;
use super::jsonrpc::{code, error_response, Head, Incoming, Kind, Message};
use super::mcp_headers::Era;
use super::session::ProxySession;
use super::upstream::{
    BoundedLines, Event, Events, Forwarded, HttpUpstream, HttpUpstreamConfig, Line, Reply,
    StdioCommand, StdioUpstream, Upstream, UpstreamError,
};
use crate::eviction::RemovalCause;
use crate::session::{NewSession, SessionId, SessionTable, TableError};

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
    let (server, from_server, max_line, limit) = match target {
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
        } => {
            let limit =
                format!("the limit of {max_message} bytes per message (--max-message raises it)");
            let (to_relay, replies) = mpsc::channel(256);
            let server = Server::Http(Arc::new(HttpSide {
                upstream: Arc::new(HttpUpstream::new(config)),
                headers: parking_lot::Mutex::new(Forwarded::default()),
                to_relay: parking_lot::Mutex::new(Some(to_relay)),
                tasks: parking_lot::Mutex::new(tokio::task::JoinSet::new()),
                listening: std::sync::atomic::AtomicBool::new(false),
            }));
            let from_server = tokio_stream::wrappers::ReceiverStream::new(replies).boxed();
            (server, from_server, max_message, limit)
        }
    };
    let mut from_server: Events = from_server;
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
                refuse_too_long(&head, &limit, &lines, &server).await;
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

/// Settles a client message over the line limit, of which only `head` is
/// known, so that nobody waits for it: a request is answered with an error
/// by its id; a response (to a request of the server's) goes to the server
/// as an error for that request. A message that cannot be told is answered
/// with an error without an id, as JSON-RPC answers what it cannot read;
/// a notification is dropped.
async fn refuse_too_long(
    head: &[u8],
    limit: &str,
    to_client: &mpsc::Sender<Bytes>,
    server: &Server,
) {
    match Head::peek(head) {
        Head::Call { id: Some(id) } => {
            let why = format!("the request is longer than {limit}; it was not passed on");
            let _ = to_client
                .send(error_response(Some(&id), code::INVALID_REQUEST, &why, None))
                .await;
        }
        Head::Call { id: None } => {
            tracing::warn!(
                "the client wrote a notification (or a request whose id follows its params) \
                 longer than {limit}: dropped"
            );
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

/// A run's session on an HTTP server: each message a POST of its own on a
/// task, whose answer (a JSON body or an event stream) goes to the relay, as
/// does the server's GET stream once the client is initialized.
struct HttpSide {
    upstream: Arc<HttpUpstream>,
    /// The protocol revision the server agreed to, which every request after
    /// `initialize` names (`MCP-Protocol-Version`).
    headers: parking_lot::Mutex<Forwarded>,
    /// Taken at the end, so that the relay ends once the tasks are stopped.
    to_relay: parking_lot::Mutex<Option<mpsc::Sender<Event>>>,
    tasks: parking_lot::Mutex<tokio::task::JoinSet<()>>,
    listening: std::sync::atomic::AtomicBool,
}

/// Longest wait between two attempts to open the server's GET stream.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Server {
    fn upstream(&self) -> Arc<dyn Upstream> {
        match self {
            Server::Stdio(server) => Arc::clone(server) as Arc<dyn Upstream>,
            Server::Http(side) => Arc::clone(&side.upstream) as Arc<dyn Upstream>,
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
            // Notifications and responses are posted in turn (the server
            // answers them at once, with 202): `notifications/initialized`
            // reaches it before the requests after it. Requests go side by
            // side, as a slow one must not hold up the rest.
            Server::Http(side) if message.kind() != Kind::Request => {
                Arc::clone(side).post(message).await;
                Ok(())
            }
            Server::Http(side) => {
                let post = Arc::clone(side).post(message);
                side.tasks.lock().spawn(post);
                Ok(())
            }
        }
    }

    /// Ends what still relays an HTTP server's answers: after the session's
    /// end nothing more is read, and the relay ends with what it has.
    fn stop(&self) {
        if let Server::Http(side) = self {
            side.to_relay.lock().take();
            side.tasks.lock().abort_all();
        }
    }
}

impl HttpSide {
    async fn post(self: Arc<Self>, message: Message) {
        let Some(to_relay) = self.to_relay.lock().clone() else {
            return;
        };
        let request = message.kind() == Kind::Request;
        let rid = message.id().filter(|_| request).map(str::to_owned);
        let initialize = message.is_request("initialize");
        let initialized = message.is_notification("notifications/initialized");
        let mut headers = self.headers.lock().clone();
        if let Some(stated) = StatedRevision::of(&message) {
            // 2026-07-28: no initialize; each request names its revision in
            // `_meta`, and over HTTP in headers the server routes by.
            headers.protocol_version = Some(stated.version);
            headers.mcp_method = message.method().map(str::to_owned);
            headers.mcp_name = stated.name;
        }
        let mut answer = match self.upstream.send(message, &headers).await {
            Ok(Reply::Accepted) => {
                if initialized {
                    self.listen();
                }
                return;
            }
            Ok(Reply::Events(events)) => events,
            Ok(Reply::Refused {
                status,
                body,
                challenge,
                ..
            }) => {
                let Some(rid) = rid else {
                    tracing::warn!(status, "the server refused a notification or a response");
                    return;
                };
                let answer = refusal_answer(&rid, status, &body, challenge.is_some());
                let _ = to_relay.send(Event::message(answer)).await;
                return;
            }
            Err(e) => {
                // No queue of ours stands before an HTTP server: no `Busy`.
                match rid {
                    Some(rid) => {
                        let failed =
                            Message::error(Some(&rid), code::UPSTREAM_FAILED, &e.to_string());
                        let _ = to_relay.send(Event::message(failed)).await;
                    }
                    None => tracing::warn!("a message to the server was lost: {e}"),
                }
                return;
            }
        };
        while let Some(event) = answer.next().await {
            if initialize {
                if let Some(version) = event.message.as_ref().and_then(agreed_version) {
                    self.headers.lock().protocol_version = Some(version);
                }
            }
            if to_relay.send(event).await.is_err() {
                return;
            }
        }
    }

    /// Opens the server's GET stream (once), for what it sends on its own,
    /// and opens it again when it ends, resuming after the last event seen.
    /// A server without one (405), or with one open elsewhere (409), is let
    /// be.
    fn listen(self: &Arc<Self>) {
        if self
            .listening
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let Some(to_relay) = self.to_relay.lock().clone() else {
            return;
        };
        let side = Arc::clone(self);
        let listen = async move {
            let mut backoff = Duration::from_secs(1);
            let mut last_event_id = None;
            loop {
                let mut headers = side.headers.lock().clone();
                headers.last_event_id.clone_from(&last_event_id);
                match side.upstream.listen(&headers).await {
                    Ok(mut events) => {
                        backoff = Duration::from_secs(1);
                        while let Some(event) = events.next().await {
                            if event.id.is_some() {
                                last_event_id.clone_from(&event.id);
                            }
                            if event.message.is_some() && to_relay.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(
                        UpstreamError::Unsupported(_)
                        | UpstreamError::StreamConflict
                        | UpstreamError::SessionGone,
                    ) => return,
                    Err(e) => tracing::debug!("the server's stream: {e}; opening it again"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
            }
        };
        self.tasks.lock().spawn(listen);
    }
}

/// What a 2026-07-28 request says of itself in its body, which streamable
/// HTTP wants in headers: its revision (`_meta`), and the tool or prompt
/// (`params.name`) or resource (`params.uri`) it names.
struct StatedRevision {
    version: String,
    name: Option<String>,
}

impl StatedRevision {
    const META_KEY: &'static str = "io.modelcontextprotocol/protocolVersion";

    fn of(message: &Message) -> Option<Self> {
        let body: serde_json::Value = serde_json::from_slice(message.bytes()).ok()?;
        let params = body.get("params")?;
        let version = params
            .get("_meta")?
            .get(Self::META_KEY)?
            .as_str()?
            .to_owned();
        let name = match message.method() {
            Some("tools/call" | "prompts/get") => params.get("name"),
            Some("resources/read") => params.get("uri"),
            _ => None,
        };
        Some(Self {
            version,
            name: name.and_then(serde_json::Value::as_str).map(str::to_owned),
        })
    }
}

/// The revision an `initialize` response agreed to.
fn agreed_version(response: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Agreed {
        result: AgreedResult,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AgreedResult {
        protocol_version: String,
    }
    serde_json::from_slice::<Agreed>(response.bytes())
        .ok()
        .map(|agreed| agreed.result.protocol_version)
}

/// The answer to request `rid` that an HTTP server refused: the JSON-RPC
/// error its body holds (a server's refusal of a method it does not serve,
/// which a client may fall back from), by the request's id; otherwise an
/// error naming the status.
fn refusal_answer(rid: &str, status: u16, body: &[u8], challenged: bool) -> Message {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: RefusalError,
    }
    #[derive(serde::Deserialize)]
    struct RefusalError {
        code: i64,
        message: String,
        data: Option<serde_json::Value>,
    }
    if let Ok(Refusal { error }) = serde_json::from_slice::<Refusal>(body) {
        let answer = error_response(Some(rid), error.code, &error.message, error.data);
        if let Ok(answer) = Message::parse(answer) {
            return answer;
        }
    }
    let why = refusal_reason(status, body, challenged);
    Message::error(Some(rid), code::UPSTREAM_FAILED, &why)
}

/// What a client is told of an HTTP refusal of its request.
fn refusal_reason(status: u16, body: &[u8], challenged: bool) -> String {
    let said = String::from_utf8_lossy(&body[..body.len().min(512)])
        .trim()
        .to_owned();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    let hint = match status {
        401 | 403 if challenged => {
            " (the server wants credentials: give --upstream-header \"Authorization: Bearer TOKEN\")"
        }
        401 | 403 => " (give the server's credentials with --upstream-header)",
        _ => "",
    };
    format!("the server refused the request with HTTP {status}{hint}{said}")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_owned())).expect("a message")
    }

    #[test]
    fn proxy_forward_http_reads_a_2026_request_for_its_headers() {
        let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
        for (body, name) in [
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo",{meta}}}}}"#
                ),
                Some("echo"),
            ),
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"file:///a",{meta}}}}}"#
                ),
                Some("file:///a"),
            ),
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"name":"not a name here",{meta}}}}}"#
                ),
                None,
            ),
        ] {
            let stated = StatedRevision::of(&message(&body)).expect(&body);
            assert_eq!(stated.version, "2026-07-28");
            assert_eq!(stated.name.as_deref(), name, "{body}");
        }
        for older in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ] {
            assert!(StatedRevision::of(&message(older)).is_none(), "{older}");
        }
    }

    #[test]
    fn proxy_forward_http_refusals_keep_the_servers_json_rpc_error() {
        let body = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32601,"message":"Method not found","data":{"m":"server/discover"}}}"#;
        let answer = refusal_answer("7", 400, body, false);
        let value: serde_json::Value = serde_json::from_slice(answer.bytes()).expect("json");
        assert_eq!(value["id"], 7, "by the request's id");
        assert_eq!(value["error"]["code"], -32601);
        assert_eq!(value["error"]["data"]["m"], "server/discover");
        let answer = refusal_answer(r#""r""#, 401, b"unauthorised", true);
        let value: serde_json::Value = serde_json::from_slice(answer.bytes()).expect("json");
        assert_eq!(value["id"], "r");
        assert_eq!(value["error"]["code"], code::UPSTREAM_FAILED);
        let said = value["error"]["message"].as_str().unwrap_or_default();
        assert!(
            said.contains("HTTP 401")
                && said.contains("Authorization: Bearer")
                && said.contains("unauthorised"),
            "{said}"
        );
    }

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
