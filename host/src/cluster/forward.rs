//! The hop itself: a request sent on to the owner's MCP endpoint with the
//! hop header, and the owner's answer streamed back as it comes (a JSON
//! body, a POST's SSE answer, a GET stream) without being parsed.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method};
use axum::response::Response;

use super::hop::HOP_HEADER;
use crate::proxy::mcp_headers::{
    HOP_BY_HOP, LAST_EVENT_ID, MCP_METHOD, MCP_NAME, PROTOCOL_VERSION, SESSION_ID,
};

/// What the owner must see of the client's request: its credentials too,
/// which the owner passes on to an HTTP upstream. Anything else (cookies,
/// the client-key header) stays at the receiving instance: the hop header
/// names the client.
const REQUEST_HEADERS: [&str; 8] = [
    "content-type",
    "accept",
    "authorization",
    PROTOCOL_VERSION,
    SESSION_ID,
    MCP_METHOD,
    MCP_NAME,
    LAST_EVENT_ID,
];

pub struct Forwarder {
    http: reqwest::Client,
}

impl Forwarder {
    /// `connect_timeout` bounds reaching the owner, never its answer: a tool
    /// call or a stream may rightly take long.
    pub fn new(connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self { http })
    }

    /// Sends one request to `target` and returns the owner's answer with its
    /// body still streaming. An error means the owner could not be reached
    /// (or dropped the connection before answering).
    pub async fn send(
        &self,
        target: &reqwest::Url,
        method: Method,
        headers: &HeaderMap,
        extra: &[(&str, &str)],
        hop: &str,
        body: Bytes,
    ) -> Result<Response, reqwest::Error> {
        let mut request = self.http.request(method, target.clone());
        for name in REQUEST_HEADERS {
            for value in headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request = request.header(HOP_HEADER, hop);
        if !body.is_empty() {
            request = request.body(body);
        }
        let answer = request.send().await?;
        let status = answer.status();
        let mut relayed = HeaderMap::with_capacity(answer.headers().len());
        for (name, value) in answer.headers() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                relayed.append(HeaderName::clone(name), value.clone());
            }
        }
        let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
        *response.status_mut() = status;
        *response.headers_mut() = relayed;
        Ok(response)
    }
}
