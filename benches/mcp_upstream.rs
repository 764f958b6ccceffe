//! An in-process upstream that answers like an MCP server over streamable
//! HTTP and stores nothing per session: the proxy benches' fixed far end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};

/// Answers like an MCP server and stores nothing per session.
async fn upstream(State(next): State<Arc<AtomicU64>>, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(id) = message.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let result = if message["method"] == "initialize" {
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "serverInfo": {"name": "bench-upstream", "version": "1"}})
    } else {
        json!({"content": [{"type": "text", "text": "ok"}]})
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let mut response = ([("content-type", "application/json")], body).into_response();
    if message["method"] == "initialize" {
        let session = format!("s{}", next.fetch_add(1, Ordering::Relaxed));
        if let Ok(value) = session.parse() {
            response.headers_mut().insert("mcp-session-id", value);
        }
    }
    response
}

/// Serves `/mcp` on a loopback port of the current runtime.
pub async fn start_upstream() -> SocketAddr {
    let app = axum::Router::new()
        .route("/mcp", post(upstream).delete(|| async { StatusCode::OK }))
        .with_state(Arc::new(AtomicU64::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
