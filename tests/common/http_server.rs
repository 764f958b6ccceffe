//! A small streamable-HTTP MCP server to stand behind `--upstream-http` in
//! tests: sessions with ids of its own, 404 for unknown ones, DELETE, an SSE
//! answer on request (`"stream": true` among a tool call's arguments; with
//! `"batch": true`, one event holding a batch), a late answer (`"delay_ms"`),
//! and a record of every request it saw.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub session: Option<String>,
    pub protocol_version: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
    pub rpc_method: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub struct ServerState {
    pub sessions: Mutex<HashSet<String>>,
    pub issued: Mutex<u64>,
    pub deleted: Mutex<Vec<String>>,
    pub seen: Mutex<Vec<Seen>>,
    /// The `Authorization` every request must carry, when set: others get
    /// 401 with a `WWW-Authenticate` naming [`RESOURCE_METADATA`].
    pub require: Mutex<Option<String>>,
    /// `http://127.0.0.1:PORT`, once bound.
    pub origin: Mutex<String>,
}

/// Where the 401's challenge says this server's OAuth metadata is, on its
/// origin: not where RFC 9728 would look, so only the challenge tells.
pub const METADATA_PATH: &str = "/oauth/metadata";
/// The authorisation server its metadata names.
pub const AUTHORIZATION_SERVER: &str = "https://auth.example.com";

/// The running server; it stops with its runtime when dropped.
pub struct HttpMcpServer {
    pub url: String,
    pub state: Arc<ServerState>,
    _runtime: tokio::runtime::Runtime,
}

impl HttpMcpServer {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(ServerState::default());
        let app = Router::new()
            .route(
                "/mcp",
                post(handle_post).get(handle_get).delete(handle_delete),
            )
            .route(METADATA_PATH, get(metadata))
            .with_state(Arc::clone(&state));
        let addr: SocketAddr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        *state.origin.lock() = format!("http://{addr}");
        Self {
            url: format!("http://{addr}/mcp"),
            state,
            _runtime: runtime,
        }
    }

    /// Forgets a session as if it expired upstream.
    pub fn expire(&self, session: &str) {
        self.state.sessions.lock().remove(session);
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn record(state: &ServerState, method: &str, headers: &HeaderMap, rpc: Option<&Value>) {
    state.seen.lock().push(Seen {
        method: method.to_owned(),
        session: header(headers, "mcp-session-id"),
        protocol_version: header(headers, "mcp-protocol-version"),
        mcp_method: header(headers, "mcp-method"),
        mcp_name: header(headers, "mcp-name"),
        rpc_method: rpc.and_then(|m| m["method"].as_str()).map(str::to_owned),
        authorization: header(headers, "authorization"),
    });
}

/// 401 for a request without the credentials [`ServerState::require`]s.
fn unauthorised(state: &ServerState, headers: &HeaderMap) -> Option<Response> {
    let required = state.require.lock().clone()?;
    if header(headers, "authorization").as_deref() == Some(required.as_str()) {
        return None;
    }
    let origin = state.origin.lock().clone();
    let challenge = format!(
        r#"Bearer realm="http-echo", resource_metadata="{origin}{METADATA_PATH}", scope="mcp""#
    );
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge.as_str())],
            "unauthorised",
        )
            .into_response(),
    )
}

async fn handle_post(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    record(&state, "POST", &headers, Some(&message));
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    let stateless = header(&headers, "mcp-protocol-version").as_deref() == Some("2026-07-28");
    let method = message["method"].as_str().unwrap_or_default().to_owned();
    let mut new_session = None;
    if method == "initialize" {
        let mut issued = state.issued.lock();
        *issued += 1;
        let id = format!("upstream-session-{}", *issued);
        state.sessions.lock().insert(id.clone());
        new_session = Some(id);
    } else if !stateless {
        let known =
            header(&headers, "mcp-session-id").is_some_and(|s| state.sessions.lock().contains(&s));
        if !known {
            return (StatusCode::NOT_FOUND, "unknown session").into_response();
        }
    }
    let Some(id) = message.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = match method.as_str() {
        "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {},
                               "serverInfo": {"name": "http-echo", "version": "1"}}),
        "tools/call" => {
            let text = format!(
                "Echo: {}",
                message["params"]["arguments"]["message"]
                    .as_str()
                    .unwrap_or_default()
            );
            json!({"content": [{"type": "text", "text": text}]})
        }
        _ => json!({}),
    };
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let arguments = &message["params"]["arguments"];
    if let Some(ms) = arguments["delay_ms"].as_u64() {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let streamed = arguments["stream"].as_bool() == Some(true);
    let batched = arguments["batch"].as_bool() == Some(true);
    let mut response = if batched {
        // A 2025-03-26 server's batch in one event: a notification and the answer.
        let body = format!(
            "id: ev-b\ndata: [{}, {answer}]\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progress": 1}})
        );
        ([("content-type", "text/event-stream")], body).into_response()
    } else if streamed {
        // A priming event (an id, no data), a notification, then the answer.
        let body = format!(
            "id: prime-1\ndata: \n\nid: ev-2\ndata: {}\n\nid: ev-3\ndata: {answer}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progress": 1}})
        );
        ([("content-type", "text/event-stream")], body).into_response()
    } else {
        ([("content-type", "application/json")], answer).into_response()
    };
    if let Some(session) = new_session {
        response
            .headers_mut()
            .insert("mcp-session-id", session.parse().expect("header value"));
    }
    response
}

/// Its protected-resource metadata (RFC 9728), naming itself.
async fn metadata(State(state): State<Arc<ServerState>>) -> Response {
    let origin = state.origin.lock().clone();
    axum::Json(json!({
        "resource": format!("{origin}/mcp"),
        "authorization_servers": [AUTHORIZATION_SERVER],
        "scopes_supported": ["mcp"],
    }))
    .into_response()
}

async fn handle_get(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    record(&state, "GET", &headers, None);
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

async fn handle_delete(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    record(&state, "DELETE", &headers, None);
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    let Some(session) = header(&headers, "mcp-session-id") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if state.sessions.lock().remove(&session) {
        state.deleted.lock().push(session);
        StatusCode::OK.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
