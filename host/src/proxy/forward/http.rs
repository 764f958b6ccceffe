//! `forward http`: the run's session on a streamable-HTTP server. Each
//! client message is a POST of its own, whose answer (a JSON body or an
//! event stream) goes to the relay, as does the server's GET stream once the
//! client is initialized.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use reqwest::header::HeaderValue;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use super::oauth::{OAuthClient, OAuthError};
use crate::proxy::jsonrpc::{code, error_response, Kind, Message};
use crate::proxy::oauth::wants_more_scope;
use crate::proxy::upstream::{
    Event, Events, Forwarded, HttpUpstream, HttpUpstreamConfig, Reply, Upstream, UpstreamError,
};

/// A run's session on an HTTP server: each message a POST of its own on a
/// task, whose answer (a JSON body or an event stream) goes to the relay, as
/// does the server's GET stream once the client is initialized.
pub(super) struct HttpSide {
    upstream: Arc<HttpUpstream>,
    /// The protocol revision the server agreed to, which every request after
    /// `initialize` names (`MCP-Protocol-Version`).
    headers: Mutex<Forwarded>,
    /// Taken at the end, so that the relay ends once the tasks are stopped.
    to_relay: Mutex<Option<mpsc::Sender<Event>>>,
    tasks: Mutex<JoinSet<()>>,
    listening: AtomicBool,
    oauth: Option<Arc<OAuthClient>>,
    /// What the client set up in the session: what a new one is given
    /// when the server ends this one.
    setup: Mutex<Setup>,
    /// Held while a new session starts, so that requests that find the
    /// session gone together start one between them.
    renewal: tokio::sync::Mutex<()>,
    /// Sessions started after the first: a request that found the session
    /// gone before the count moved on starts the next one.
    renewals: AtomicU64,
}

/// Longest wait between two attempts to open the server's GET stream.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl HttpSide {
    /// A session (opened by the client's `initialize`) on the server of
    /// `config`, and the stream of everything it answers or sends.
    pub(super) fn open(
        config: Arc<HttpUpstreamConfig>,
        oauth: Option<Arc<OAuthClient>>,
    ) -> (Arc<Self>, Events) {
        let (to_relay, replies) = mpsc::channel(256);
        let headers = Forwarded {
            // A previous run's token, tried before the server asks.
            authorization: oauth.as_ref().and_then(|oauth| oauth.credentials()),
            ..Forwarded::default()
        };
        let side = Arc::new(Self {
            upstream: Arc::new(HttpUpstream::renewing(config)),
            headers: Mutex::new(headers),
            to_relay: Mutex::new(Some(to_relay)),
            tasks: Mutex::new(JoinSet::new()),
            listening: AtomicBool::new(false),
            oauth,
            setup: Mutex::new(Setup::default()),
            renewal: tokio::sync::Mutex::new(()),
            renewals: AtomicU64::new(0),
        });
        (side, ReceiverStream::new(replies).boxed())
    }

    pub(super) fn upstream(&self) -> &Arc<HttpUpstream> {
        &self.upstream
    }

    /// Sends a client message. Notifications and responses are posted in
    /// turn (the server answers them at once, with 202):
    /// `notifications/initialized` reaches it before the requests after
    /// it. Requests go side by side, each on a task of its own, as a slow
    /// one must not hold up the rest. What a message sets up is noted
    /// first, in the client's order, which the tasks do not keep.
    pub(super) async fn forward(self: &Arc<Self>, message: Message) {
        self.setup.lock().note(&message);
        if message.kind() == Kind::Request {
            let post = Arc::clone(self).post(message);
            self.tasks.lock().spawn(post);
        } else {
            Arc::clone(self).post(message).await;
        }
    }

    /// Ends what still relays the server's answers: after the session's end
    /// nothing more is read, and the relay ends with what it has.
    pub(super) fn stop(&self) {
        self.to_relay.lock().take();
        self.tasks.lock().abort_all();
    }

    pub(super) async fn post(self: Arc<Self>, message: Message) {
        let Some(to_relay) = self.to_relay.lock().clone() else {
            return;
        };
        let request = message.kind() == Kind::Request;
        let rid = message.id().filter(|_| request).map(str::to_owned);
        let initialize = message.is_request("initialize");
        let initialized = message.is_notification("notifications/initialized");
        let renewals = self.renewals.load(Ordering::Acquire);
        let mut headers = self.headers.lock().clone();
        if let Some(stated) = StatedRevision::of(&message) {
            // 2026-07-28: no initialize; each request names its revision in
            // `_meta`, and over HTTP in headers the server routes by.
            headers.protocol_version = Some(stated.version);
            headers.mcp_method = message.method().map(str::to_owned);
            headers.mcp_name = stated.name;
        }
        let mut reply = self.send_authorised(&message, headers).await;
        if matches!(reply, Ok(Err(UpstreamError::SessionGone))) {
            reply = match self.renew(renewals).await {
                // Headers as of the new session (sessions are not of the
                // 2026-07-28 era, whose requests state their own).
                Ok(()) => {
                    let headers = self.headers.lock().clone();
                    self.send_authorised(&message, headers).await
                }
                Err(e) => Ok(Err(UpstreamError::Failed(format!(
                    "the MCP server ended the session, and a new one could not be started: {e}"
                )))),
            };
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err((status, e)) => {
                tracing::error!("authorising with the MCP server failed: {e}");
                if let Some(rid) = rid {
                    let why = format!(
                        "the server refused the request with HTTP {status} and authorising with \
                         OAuth failed: {e} (give credentials with --upstream-header \
                         \"Authorization: Bearer TOKEN\" instead, or --no-oauth)"
                    );
                    let failed = Message::error(Some(&rid), code::UPSTREAM_FAILED, &why);
                    let _ = to_relay.send(Event::message(failed)).await;
                }
                return;
            }
        };
        let mut answer = match reply {
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

    /// Starts a new session with the client's `initialize`, its
    /// `initialized` once it said that, then its log level and resource
    /// subscriptions, after the server ended the session (MCP: a client
    /// that gets 404 for its session starts a new one), unless another
    /// request did since `renewals` was read. The answers are not relayed:
    /// the client has them. What else the server held for the old session
    /// starts afresh; the WARN line says so.
    async fn renew(&self, renewals: u64) -> Result<(), String> {
        let _renewing = self.renewal.lock().await;
        if self.renewals.load(Ordering::Acquire) != renewals {
            return Ok(());
        }
        let (initialize, initialized, rest) = self.setup.lock().to_send_again();
        let initialize = initialize.ok_or("the client had not sent initialize")?;
        tracing::warn!(
            "the MCP server ended the session; starting a new one with the client's initialize, \
             log level and resource subscriptions (what else the server held for the old \
             session starts afresh)"
        );
        let Reply::Events(answer) = self.send_renewing(initialize).await? else {
            return Err("the server answered initialize with nothing".into());
        };
        let response = self
            .response_on(answer)
            .await
            .ok_or("the server's stream ended before it answered initialize")?;
        let agreed = agreed_version(&response).ok_or_else(|| {
            format!(
                "the server answered initialize with {}",
                body_excerpt(response.bytes())
            )
        })?;
        let before = self.headers.lock().protocol_version.replace(agreed.clone());
        if let Some(before) = before.filter(|before| *before != agreed) {
            tracing::warn!(
                "the MCP server's new session agreed to revision {agreed}, not {before}: the \
                 client goes on speaking the one it agreed to"
            );
        }
        if let Some(initialized) = initialized {
            self.send_renewing(initialized).await?;
        }
        // The session stands without these: one refused is a WARN line.
        for message in rest {
            let method = message.method().unwrap_or_default().to_owned();
            let refused = match self.send_renewing(message).await {
                Ok(Reply::Events(answer)) => self
                    .response_on(answer)
                    .await
                    .filter(Message::is_error)
                    .map(|response| body_excerpt(response.bytes())),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if let Some(why) = refused {
                tracing::warn!("the MCP server's new session: {method} again: {why}");
            }
        }
        self.renewals.fetch_add(1, Ordering::AcqRel);
        tracing::info!("a new session with the MCP server started");
        Ok(())
    }

    /// The response on `answer`, relaying what else the server sends on it
    /// (its own messages are the client's to see); `None` if it ended
    /// first.
    async fn response_on(&self, mut answer: Events) -> Option<Message> {
        while let Some(event) = answer.next().await {
            let Some(message) = event.message else {
                continue;
            };
            if message.kind() == Kind::Response {
                return Some(message);
            }
            self.relay(Event::message(message)).await;
        }
        None
    }

    /// Sends one message of [`Self::renew`]; a refusal is an error naming
    /// the message's method.
    async fn send_renewing(&self, message: Message) -> Result<Reply, String> {
        let method = message.method().unwrap_or_default().to_owned();
        let headers = self.headers.lock().clone();
        match self.send_authorised(&message, headers).await {
            Ok(Ok(Reply::Refused { status, body, .. })) => Err(format!(
                "the server refused {method} with HTTP {status}: {}",
                body_excerpt(&body)
            )),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err((status, e)) => Err(format!(
                "the server refused {method} with HTTP {status}, and authorising failed: {e}"
            )),
        }
    }

    async fn relay(&self, event: Event) {
        let to_relay = self.to_relay.lock().clone();
        if let Some(to_relay) = to_relay {
            let _ = to_relay.send(event).await;
        }
    }

    /// Sends `message`. When the server refuses it for want of a token
    /// (401) or of scopes (403 `insufficient_scope`) and OAuth is on, the
    /// run authorises and sends it once more; the error is the refusal's
    /// status and why authorising failed. Borrowed: a caller that sends it
    /// again after a new session copies nothing more than a send does.
    async fn send_authorised(
        &self,
        message: &Message,
        mut headers: Forwarded,
    ) -> Result<Result<Reply, UpstreamError>, (u16, OAuthError)> {
        let reply = self.upstream.send(message.clone(), &headers).await;
        let (status, challenge, more_scope) = match &reply {
            Ok(Reply::Refused {
                status: 401,
                challenge,
                ..
            }) => (401, challenge.clone(), false),
            Ok(Reply::Refused {
                status: 403,
                challenge: Some(challenge),
                ..
            }) if wants_more_scope(challenge) => (403, Some(challenge.clone()), true),
            _ => return Ok(reply),
        };
        let refused = headers.authorization.as_ref();
        let authorised = self.authorise(challenge.as_ref(), refused, more_scope);
        let Some(credentials) = authorised.await else {
            return Ok(reply);
        };
        headers.authorization = Some(credentials.map_err(|e| (status, e))?);
        Ok(self.upstream.send(message.clone(), &headers).await)
    }

    /// New credentials after the server refused `refused` (see
    /// [`OAuthClient::reauthorize`]), sent with every message from now on;
    /// `None` without OAuth.
    async fn authorise(
        &self,
        challenge: Option<&HeaderValue>,
        refused: Option<&HeaderValue>,
        more_scope: bool,
    ) -> Option<Result<HeaderValue, OAuthError>> {
        let oauth = self.oauth.as_ref()?;
        let authorised = oauth.reauthorize(challenge, refused, more_scope).await;
        if let Ok(credentials) = &authorised {
            self.headers.lock().authorization = Some(credentials.clone());
        }
        Some(authorised)
    }

    /// Opens the server's GET stream (once), for what it sends on its own,
    /// and opens it again when it ends, resuming after the last event seen.
    /// A server without one (405), or with one open elsewhere (409), is let
    /// be.
    fn listen(self: &Arc<Self>) {
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(to_relay) = self.to_relay.lock().clone() else {
            return;
        };
        let side = Arc::clone(self);
        let listen = async move {
            let mut backoff = Duration::from_secs(1);
            let mut last_event_id = None;
            // This loop started the session its stream was then refused in:
            // a server that ends every session's stream is not answered with
            // session after session.
            let mut renewed_here = false;
            loop {
                let renewals = side.renewals.load(Ordering::Acquire);
                let mut headers = side.headers.lock().clone();
                headers.last_event_id.clone_from(&last_event_id);
                match side.upstream.listen(&headers).await {
                    Ok(mut events) => {
                        backoff = Duration::from_secs(1);
                        renewed_here = false;
                        while let Some(event) = events.next().await {
                            if event.id.is_some() {
                                last_event_id.clone_from(&event.id);
                            }
                            if event.message.is_some() && to_relay.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(UpstreamError::Unsupported(_) | UpstreamError::StreamConflict) => return,
                    // Found here first (a server restarted while the client
                    // was quiet): the next request finds a new session.
                    Err(UpstreamError::SessionGone) if renewed_here => {
                        tracing::warn!(
                            "the MCP server ends its stream's session at once; not listening"
                        );
                        return;
                    }
                    Err(UpstreamError::SessionGone) => match side.renew(renewals).await {
                        Ok(()) => {
                            renewed_here = true;
                            last_event_id = None;
                            continue;
                        }
                        Err(e) => tracing::warn!("starting a new session with the MCP server: {e}"),
                    },
                    // Its token expired while no request came to renew it.
                    Err(UpstreamError::Denied {
                        status: 401,
                        challenge,
                    }) if side.oauth.is_some() => {
                        let refused = headers.authorization.as_ref();
                        let authorised = side.authorise(challenge.as_ref(), refused, false);
                        if let Some(Err(e)) = authorised.await {
                            tracing::warn!("the server's stream wants authorisation: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("the server's stream: {e}; opening it again"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
            }
        };
        self.tasks.lock().spawn(listen);
    }
}

/// What the client set up in a session on the server, as the messages that
/// did it, for a new session to be given again.
#[derive(Default)]
struct Setup {
    initialize: Option<Message>,
    initialized: Option<Message>,
    log_level: Option<Message>,
    /// The latest `resources/subscribe` of each resource not unsubscribed
    /// since, by its URI.
    subscriptions: BTreeMap<String, Message>,
}

impl Setup {
    /// Keeps `message` if it sets something up. Whether the server took it
    /// is not waited for: one it refused is refused again, to no harm.
    fn note(&mut self, message: &Message) {
        let Some(method) = message.method() else {
            return;
        };
        let request = message.kind() == Kind::Request;
        match method {
            "initialize" if request => self.initialize = Some(message.clone()),
            "notifications/initialized" => self.initialized = Some(message.clone()),
            "logging/setLevel" if request => self.log_level = Some(message.clone()),
            "resources/subscribe" if request => {
                if let Some(uri) = resource_uri(message) {
                    self.subscriptions.insert(uri, message.clone());
                }
            }
            "resources/unsubscribe" if request => {
                if let Some(uri) = resource_uri(message) {
                    self.subscriptions.remove(&uri);
                }
            }
            _ => {}
        }
    }

    /// The `initialize`, the `initialized`, and what follows them.
    fn to_send_again(&self) -> (Option<Message>, Option<Message>, Vec<Message>) {
        let rest = self
            .log_level
            .iter()
            .chain(self.subscriptions.values())
            .cloned()
            .collect();
        (self.initialize.clone(), self.initialized.clone(), rest)
    }
}

/// The `uri` a `resources/subscribe` or `unsubscribe` names.
fn resource_uri(message: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        params: Params,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        uri: String,
    }
    serde_json::from_slice::<Body>(message.bytes())
        .ok()
        .map(|body| body.params.uri)
}

/// What a 2026-07-28 request says of itself in its body, which streamable
/// HTTP wants in headers: its revision (`_meta`), and the tool or prompt
/// (`params.name`) or resource (`params.uri`) it names.
struct StatedRevision {
    version: String,
    name: Option<String>,
}

impl StatedRevision {
    /// Read field by field, borrowing: a request's arguments, however
    /// large, are skipped rather than built into a tree.
    fn of(message: &Message) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            params: Option<Params<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Params<'a> {
            #[serde(rename = "_meta")]
            meta: Option<Meta>,
            #[serde(borrow)]
            name: Option<&'a RawValue>,
            #[serde(borrow)]
            uri: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
            version: Option<String>,
        }
        let body: Body<'_> = serde_json::from_slice(message.bytes()).ok()?;
        let params = body.params?;
        let version = params.meta?.version?;
        let name = match message.method() {
            Some("tools/call" | "prompts/get") => params.name,
            Some("resources/read") => params.uri,
            _ => None,
        };
        Some(Self {
            version,
            name: name.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()),
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

/// The start of an HTTP answer's body, as a message quotes it.
pub(super) fn body_excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(512)])
        .trim()
        .to_owned()
}

/// What a client is told of an HTTP refusal of its request.
fn refusal_reason(status: u16, body: &[u8], challenged: bool) -> String {
    let said = body_excerpt(body);
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

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
}
