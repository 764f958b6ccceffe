//! A session of its own on an upstream streamable-HTTP MCP server.
//!
//! Each proxy session opens one upstream session: the client's `initialize`
//! goes through, and the `MCP-Session-Id` the upstream answers with is kept
//! here and sent on every later request (clients only ever see Shadowcat's
//! own id). Teardown DELETEs the upstream session. In the 2026-07-28 era there
//! is no upstream session: requests go through with their headers, and the
//! proxy's session only carries the client's limits and eviction state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use parking_lot::Mutex;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, StatusCode};
use tokio::sync::watch;

use super::{Event, Events, Forwarded, HttpUpstreamConfig, Reply, Upstream, UpstreamError};
use crate::proxy::jsonrpc::{code, Incoming, Message};
use crate::proxy::mcp_headers::{
    LAST_EVENT_ID, MCP_METHOD, MCP_NAME, PROTOCOL_VERSION, SESSION_ID,
};
use crate::proxy::oauth;

pub struct HttpUpstream {
    config: Arc<HttpUpstreamConfig>,
    /// The upstream's own session id, once its `initialize` answered.
    session: Mutex<Option<String>>,
    /// The client's latest credentials, for the teardown's DELETE, which no
    /// request of the client's carries.
    credentials: Mutex<Option<HeaderValue>>,
    /// The revision the client's latest request named, which the DELETE
    /// names too (MCP wants it on every request after `initialize`).
    protocol_version: Mutex<Option<HeaderValue>>,
    /// `Some(reason)` once the upstream session is gone.
    ended: watch::Sender<Option<String>>,
    closed: AtomicBool,
    /// Its owner starts a new session when the server ends one (see
    /// [`Self::renewing`]).
    renews: bool,
}

impl HttpUpstream {
    pub fn new(config: Arc<HttpUpstreamConfig>) -> Self {
        Self {
            config,
            session: Mutex::new(None),
            credentials: Mutex::new(None),
            protocol_version: Mutex::new(None),
            ended: watch::Sender::new(None),
            closed: AtomicBool::new(false),
            renews: false,
        }
    }

    /// An upstream whose owner starts a new session when the server ends
    /// its own (`forward http`, whose stdio client cannot): a 404 is
    /// `SessionGone` without ending the upstream, and an `initialize` goes
    /// without the session id (as MCP wants of a new session), its answer's
    /// id then replacing the old one. Until it does, requests go with the
    /// old id, so that each finds the session gone rather than none named.
    pub fn renewing(config: Arc<HttpUpstreamConfig>) -> Self {
        Self {
            renews: true,
            ..Self::new(config)
        }
    }

    fn end(&self, reason: &str) {
        self.ended.send_if_modified(|ended| {
            let first = ended.is_none();
            if first {
                *ended = Some(reason.to_owned());
            }
            first
        });
    }

    fn with_headers(&self, request: RequestBuilder, headers: &Forwarded) -> RequestBuilder {
        if let Some(credentials) = &headers.authorization {
            *self.credentials.lock() = Some(credentials.clone());
        }
        if let Some(version) = headers
            .protocol_version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            *self.protocol_version.lock() = Some(version);
        }
        let mut map = self.own_headers();
        let mut put = |name: &'static str, value: Option<&str>| {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                map.insert(name, value);
            }
        };
        put(MCP_METHOD, headers.mcp_method.as_deref());
        put(MCP_NAME, headers.mcp_name.as_deref());
        put(LAST_EVENT_ID, headers.last_event_id.as_deref());
        request.headers(map)
    }

    /// What every request of this session carries: the configured headers,
    /// the client's credentials unless those name their own, the upstream
    /// session's id and the revision last named.
    fn own_headers(&self) -> HeaderMap {
        let mut map = self.config.headers.clone();
        if !map.contains_key(AUTHORIZATION) {
            if let Some(credentials) = self.credentials.lock().clone() {
                map.insert(AUTHORIZATION, credentials);
            }
        }
        if let Some(session) = self.session.lock().as_deref() {
            if let Ok(session) = HeaderValue::from_str(session) {
                map.insert(SESSION_ID, session);
            }
        }
        if let Some(version) = self.protocol_version.lock().clone() {
            map.insert(PROTOCOL_VERSION, version);
        }
        map
    }

    fn unreachable(&self, e: reqwest::Error) -> UpstreamError {
        UpstreamError::Unreachable(format!("{}: {e}", self.config.url))
    }

    /// An upstream 404 on a request that carried its session id: the upstream
    /// session expired or was deleted behind the proxy's back.
    fn gone(&self, status: StatusCode) -> bool {
        status == StatusCode::NOT_FOUND && self.session.lock().is_some()
    }

    /// The server ended the session: so does this upstream, unless its
    /// owner starts another.
    fn session_gone(&self) -> UpstreamError {
        if !self.renews {
            self.end("the upstream session ended (404)");
        }
        UpstreamError::SessionGone
    }

    /// A refusal's `WWW-Authenticate`; where it says the server's metadata
    /// is, the proxy's own metadata is taken from next.
    fn challenge(&self, response: &reqwest::Response) -> Option<HeaderValue> {
        let challenge = response.headers().get(WWW_AUTHENTICATE).cloned()?;
        if let Some(location) = oauth::challenge_metadata(&challenge) {
            *self.config.resource_metadata.lock() = Some(location);
        }
        Some(challenge)
    }
}

#[async_trait]
impl Upstream for HttpUpstream {
    async fn send(&self, message: Message, headers: &Forwarded) -> Result<Reply, UpstreamError> {
        if let Some(reason) = self.ended.borrow().clone() {
            return Err(UpstreamError::Failed(reason));
        }
        let renewal = self.renews && message.is_request("initialize");
        let request = self
            .config
            .client
            .post(self.config.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(message.bytes().clone());
        let mut request = self
            .with_headers(request, headers)
            .build()
            .map_err(|e| self.unreachable(e))?;
        if renewal {
            request.headers_mut().remove(SESSION_ID);
        }
        let response = self
            .config
            .client
            .execute(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if let Some(id) = response
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
        {
            let mut session = self.session.lock();
            if session.is_none() || renewal {
                *session = Some(id.to_owned());
            }
        }
        if !renewal && self.gone(status) {
            return Err(self.session_gone());
        }
        if status == StatusCode::ACCEPTED {
            return Ok(Reply::Accepted);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            let challenge = self.challenge(&response);
            let body = response.bytes().await.unwrap_or_default();
            return Ok(Reply::Refused {
                status: status.as_u16(),
                content_type,
                body,
                challenge,
            });
        }
        let request_id = message.id().map(str::to_owned);
        if content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream"))
        {
            return Ok(Reply::Events(events(response, request_id)));
        }
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if body.trim_ascii().is_empty() {
            return Ok(Reply::Accepted);
        }
        let message = Message::parse(body)
            .unwrap_or_else(|e| upstream_error(request_id.as_deref(), &e.to_string()));
        Ok(Reply::Events(
            futures::stream::once(async move { Event::message(message) }).boxed(),
        ))
    }

    async fn listen(&self, headers: &Forwarded) -> Result<Events, UpstreamError> {
        let request = self
            .config
            .client
            .get(self.config.url.clone())
            .header(ACCEPT, "text/event-stream");
        let response = self
            .with_headers(request, headers)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if self.gone(status) {
            return Err(self.session_gone());
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(UpstreamError::Unsupported("a server-to-client stream"));
        }
        if status == StatusCode::CONFLICT {
            return Err(UpstreamError::StreamConflict);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(UpstreamError::Denied {
                status: status.as_u16(),
                challenge: self.challenge(&response),
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Failed(format!(
                "the upstream refused the stream: {status}"
            )));
        }
        Ok(events(response, None))
    }

    async fn close(&self) {
        // Once: a second close (the table's teardown after the owner's) has
        // nothing left to delete. The id stays, for a 404 still on its way
        // to tell a session ended from one never had.
        let first = !self.closed.swap(true, Ordering::AcqRel);
        if first && self.session.lock().is_some() {
            let deleted = self
                .config
                .client
                .delete(self.config.url.clone())
                .headers(self.own_headers())
                .timeout(self.config.timeout)
                .send()
                .await;
            if let Err(e) = deleted {
                tracing::debug!(url = %self.config.url, "deleting the upstream session: {e}");
            }
        }
        self.end("the session was closed");
    }

    async fn failed(&self) -> String {
        let mut ended = self.ended.subscribe();
        let reason = match ended.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the upstream ended".into(),
        };
        reason
    }

    fn describe(&self) -> String {
        self.config.url.to_string()
    }
}

/// The server-sent events of a response, as messages; a broken stream ends
/// with an error response to the request it was answering. An event holding
/// a batch (a 2025-03-26 server may send one) is its messages, the event's id
/// on the last: resuming from it is resuming after all of them.
fn events(response: reqwest::Response, request_id: Option<String>) -> Events {
    let mut answered = false;
    response
        .bytes_stream()
        .eventsource()
        .map(move |event| match event {
            Ok(event) => {
                let id = Some(event.id).filter(|id| !id.is_empty());
                let messages = if event.data.trim().is_empty() {
                    Vec::new()
                } else {
                    event_messages(Bytes::from(event.data), request_id.as_deref())
                };
                answered |= messages
                    .iter()
                    .any(|m| m.id().is_some() && m.id() == request_id.as_deref());
                let mut events: Vec<Event> = messages.into_iter().map(Event::message).collect();
                match events.last_mut() {
                    Some(last) => last.id = id,
                    None => events.push(Event { id, message: None }),
                }
                Some(events)
            }
            Err(e) if !answered && request_id.is_some() => {
                Some(vec![Event::message(upstream_error(
                    request_id.as_deref(),
                    &format!("the upstream stream broke: {e}"),
                ))])
            }
            Err(_) => None,
        })
        .take_while(|events| futures::future::ready(events.is_some()))
        .flat_map(|events| futures::stream::iter(events.unwrap_or_default()))
        .boxed()
}

/// The messages of one event's data: one, a batch's valid elements, or an
/// error answering the request when the data is no message at all.
fn event_messages(data: Bytes, request_id: Option<&str>) -> Vec<Message> {
    match Incoming::parse(data) {
        Ok(Incoming::One(message)) => vec![message],
        Ok(Incoming::Batch(batch)) => batch
            .into_iter()
            .filter_map(|element| {
                element
                    .map_err(|e| tracing::warn!("the upstream sent a batch with {e}"))
                    .ok()
            })
            .collect(),
        Err(e) => vec![upstream_error(request_id, &format!("invalid message: {e}"))],
    }
}

fn upstream_error(id: Option<&str>, reason: &str) -> Message {
    Message::error(id, code::UPSTREAM_FAILED, reason)
}
