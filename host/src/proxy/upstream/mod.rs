//! What a session holds upstream: a child process speaking MCP over stdio, or a
//! session of its own on an upstream streamable-HTTP server. Both sit behind
//! [`Upstream`], so the transports facing clients never know which.

mod http;
mod lines;
pub mod reaper;
mod routes;
mod stdio;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderValue};

pub use self::http::HttpUpstream;
pub(crate) use self::lines::{limit_text, write_lines, BoundedLines, Line};
pub use self::stdio::{ProgramError, StdioCommand, StdioUpstream};
use super::jsonrpc::Message;

/// One server-sent event: a message, or a bare event id (a priming event an
/// upstream sends so a client can resume with `Last-Event-ID`).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub message: Option<Message>,
}

impl Event {
    pub fn message(message: Message) -> Self {
        Self {
            id: None,
            message: Some(message),
        }
    }

    /// An id without a message: the cursor a client resumes a stream from
    /// before the stream's first message.
    pub fn is_priming(&self) -> bool {
        self.id.is_some() && self.message.is_none()
    }
}

/// Messages for the client, in order.
pub type Events = BoxStream<'static, Event>;

/// What an upstream answered to one client message.
pub enum Reply {
    /// A notification or a response was delivered; nothing comes back.
    Accepted,
    /// The request's events: any messages the server sends first (progress,
    /// its own requests), then the response. The stream ends after the
    /// response, or with an error response if the upstream fails meanwhile.
    Events(Events),
    /// The upstream refused the message at the transport level (an HTTP
    /// error status); passed to the client as it is.
    Refused {
        status: u16,
        content_type: Option<String>,
        body: Bytes,
        /// The upstream's `WWW-Authenticate`, which a client needs to learn
        /// how to authorise (MCP authorization: where its metadata is).
        challenge: Option<HeaderValue>,
    },
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Accepted => f.write_str("Accepted"),
            Reply::Events(_) => f.write_str("Events(..)"),
            Reply::Refused { status, .. } => write!(f, "Refused({status})"),
        }
    }
}

/// The headers a client sent that an HTTP upstream must see unchanged.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    pub protocol_version: Option<String>,
    /// 2026-07-28: the method and tool, resource or prompt name of the body.
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
    pub last_event_id: Option<String>,
    /// The client's credentials for the upstream, marked sensitive so that
    /// no log shows them.
    pub authorization: Option<HeaderValue>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// Too many requests already queued to this upstream (backpressure).
    #[error("{0} messages are already waiting for the upstream to read them; retry shortly")]
    Busy(usize),
    /// The upstream is gone: the process exited, or its session ended.
    #[error("the upstream failed: {0}")]
    Failed(String),
    /// The upstream's own session expired or was deleted (HTTP 404).
    #[error("the upstream session ended")]
    SessionGone,
    #[error("the upstream does not support this: {0}")]
    Unsupported(&'static str),
    /// A request whose id (as JSON) another request of the session in flight
    /// has: its answer could not be told apart.
    #[error(
        "request id {0} is already in flight on this session: requests in flight need distinct ids"
    )]
    DuplicateId(String),
    /// The upstream allows one server-to-client stream per session, and its
    /// session has one open (HTTP 409).
    #[error(
        "the upstream allows one stream per session and this session has one open: close it first"
    )]
    StreamConflict,
    #[error("cannot reach the upstream: {0}")]
    Unreachable(String),
    /// The upstream refused the client's credentials (HTTP 401 or 403),
    /// with its `WWW-Authenticate` if it sent one.
    #[error("the upstream refused the client's credentials ({status})")]
    Denied {
        status: u16,
        challenge: Option<HeaderValue>,
    },
}

/// An upstream a session holds. Implementations never block: everything
/// slow is `async`, and teardown ([`Upstream::close`]) is bounded.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Delivers one client message.
    async fn send(&self, message: Message, headers: &Forwarded) -> Result<Reply, UpstreamError>;

    /// The stream of messages the server sends on its own (the GET stream).
    async fn listen(&self, headers: &Forwarded) -> Result<Events, UpstreamError>;

    /// Tears the upstream down; bounded by the grace periods it was built with.
    async fn close(&self);

    /// Resolves with a reason when the upstream fails on its own.
    async fn failed(&self) -> String;

    /// What the admin view shows: `pid 1234`, or the upstream URL.
    fn describe(&self) -> String;

    fn pid(&self) -> Option<u32> {
        None
    }
}

/// How to reach upstreams: one per session, of one kind.
#[derive(Clone)]
pub enum UpstreamSpec {
    Stdio(Arc<StdioCommand>),
    Http(Arc<HttpUpstreamConfig>),
}

/// Shared by every HTTP upstream: the URL and one connection pool.
pub struct HttpUpstreamConfig {
    pub url: reqwest::Url,
    pub client: reqwest::Client,
    pub timeout: Duration,
    /// Sent with every request (`--upstream-header`), in place of a
    /// client's header of the same name.
    pub headers: HeaderMap,
    /// Where the server's last challenge said its protected-resource
    /// metadata is (see [`crate::proxy::oauth`]).
    pub resource_metadata: parking_lot::Mutex<Option<reqwest::Url>>,
}

impl HttpUpstreamConfig {
    /// `timeout` bounds connecting and the teardown DELETE, never a request
    /// (a tool call or a stream may rightly take long).
    pub fn new(url: reqwest::Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            url,
            client,
            timeout,
            headers: HeaderMap::new(),
            resource_metadata: parking_lot::Mutex::new(None),
        })
    }

    /// The same upstream, with `headers` on every request.
    pub fn with_headers(self, headers: HeaderMap) -> Self {
        Self { headers, ..self }
    }
}

impl UpstreamSpec {
    /// A fresh upstream for one session.
    pub async fn open(&self) -> Result<Arc<dyn Upstream>, UpstreamError> {
        match self {
            UpstreamSpec::Stdio(command) => {
                Ok(Arc::new(StdioUpstream::spawn(Arc::clone(command))?))
            }
            UpstreamSpec::Http(config) => Ok(Arc::new(HttpUpstream::new(Arc::clone(config)))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            UpstreamSpec::Stdio(command) => command.to_string(),
            UpstreamSpec::Http(config) => config.url.to_string(),
        }
    }
}
