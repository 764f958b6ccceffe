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
    pub rpc_params: Option<Value>,
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
    /// It is its own OAuth authorisation server (see [`Authorizer`]),
    /// rather than naming [`AUTHORIZATION_SERVER`].
    pub oauth: Mutex<Option<Authorizer>>,
    /// A scope the token must have been granted: without it, 403
    /// `insufficient_scope` naming it.
    pub step_up: Mutex<Option<String>>,
    /// How long a POST waits before it is refused for its credentials, so
    /// that requests sent together are refused together.
    pub refusal_delay: Mutex<std::time::Duration>,
    /// `initialize` is answered 503, as by a server down for maintenance.
    pub refuse_initialize: Mutex<bool>,
    /// The revision `initialize` agrees to, when not 2025-11-25.
    pub agrees_to: Mutex<Option<String>>,
    /// The GET stream is answered 404 whatever the session, as by a server
    /// that ends a session once it is listened to.
    pub streams_end_sessions: Mutex<bool>,
}

/// A minimal OAuth authorisation server: dynamic registration, an
/// authorisation endpoint that approves at once (redirecting with a code),
/// and a token endpoint that checks PKCE and issues `t1`, `t2`... with
/// refresh tokens `r1`, `r2`..., each new access token the only one
/// [`ServerState::require`] then accepts.
#[derive(Default)]
pub struct Authorizer {
    pub registrations: usize,
    /// Grant types of the token requests served, in order.
    pub grants: Vec<String>,
    /// Refresh grants are refused (as for a revoked refresh token).
    pub refuse_refresh: bool,
    /// Registers confidential clients (secret `s-N`, sent with HTTP Basic),
    /// whatever the registration asked for.
    pub confidential: bool,
    /// Takes no dynamic registration: its metadata names no endpoint for it.
    pub no_registration: bool,
    /// Per code: its PKCE challenge, resource and scope.
    codes: std::collections::HashMap<String, (String, String, String)>,
    issued: usize,
    /// The scope each token `tN` was granted, at N - 1.
    scopes: Vec<String>,
}

impl Authorizer {
    pub fn confidential() -> Self {
        Self {
            confidential: true,
            ..Self::default()
        }
    }

    pub fn without_registration() -> Self {
        Self {
            no_registration: true,
            ..Self::default()
        }
    }
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
            .route(
                "/.well-known/oauth-authorization-server",
                get(authorization_metadata),
            )
            .route("/register", post(register))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
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
        rpc_params: rpc.and_then(|m| m.get("params")).cloned(),
        authorization: header(headers, "authorization"),
    });
}

/// 401 for a request without the credentials [`ServerState::require`]s.
fn unauthorised(state: &ServerState, headers: &HeaderMap) -> Option<Response> {
    let required = state.require.lock().clone()?;
    let origin = state.origin.lock().clone();
    if header(headers, "authorization").as_deref() == Some(required.as_str()) {
        let wanted = state.step_up.lock().clone()?;
        let granted = required
            .strip_prefix("Bearer t")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| {
                let oauth = state.oauth.lock();
                oauth.as_ref()?.scopes.get(n.checked_sub(1)?).cloned()
            })
            .unwrap_or_default();
        if granted.split(' ').any(|scope| scope == wanted) {
            return None;
        }
        let challenge = format!(
            r#"Bearer error="insufficient_scope", scope="mcp {wanted}", resource_metadata="{origin}{METADATA_PATH}""#
        );
        return Some(
            (
                StatusCode::FORBIDDEN,
                [("www-authenticate", challenge.as_str())],
                "insufficient scope",
            )
                .into_response(),
        );
    }
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
        let delay = *state.refusal_delay.lock();
        tokio::time::sleep(delay).await;
        return refused;
    }
    let stateless = header(&headers, "mcp-protocol-version").as_deref() == Some("2026-07-28");
    let method = message["method"].as_str().unwrap_or_default().to_owned();
    let mut new_session = None;
    if method == "initialize" && *state.refuse_initialize.lock() {
        return (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response();
    }
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
    if method == "resources/subscribe" && message["params"]["uri"] == "file:///missing" {
        let refused = json!({"jsonrpc": "2.0", "id": id,
                             "error": {"code": -32002, "message": "Resource not found"}});
        return ([("content-type", "application/json")], refused.to_string()).into_response();
    }
    let result = match method.as_str() {
        "initialize" => {
            let agreed = state.agrees_to.lock().clone();
            json!({"protocolVersion": agreed.as_deref().unwrap_or("2025-11-25"),
                   "capabilities": {}, "serverInfo": {"name": "http-echo", "version": "1"}})
        }
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
    let issuer = if state.oauth.lock().is_some() {
        origin.clone()
    } else {
        AUTHORIZATION_SERVER.to_owned()
    };
    axum::Json(json!({
        "resource": format!("{origin}/mcp"),
        "authorization_servers": [issuer],
        "scopes_supported": ["mcp"],
    }))
    .into_response()
}

async fn handle_get(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    record(&state, "GET", &headers, None);
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    if *state.streams_end_sessions.lock() {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
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

async fn authorization_metadata(State(state): State<Arc<ServerState>>) -> Response {
    if state.oauth.lock().is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let origin = state.origin.lock().clone();
    let mut metadata = json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/authorize"),
        "token_endpoint": format!("{origin}/token"),
        "registration_endpoint": format!("{origin}/register"),
        "code_challenge_methods_supported": ["S256"],
    });
    if state
        .oauth
        .lock()
        .as_ref()
        .is_some_and(|o| o.no_registration)
    {
        metadata["registration_endpoint"] = Value::Null;
    }
    axum::Json(metadata).into_response()
}

async fn register(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let mut oauth = state.oauth.lock();
    let Some(oauth) = oauth.as_mut() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    oauth.registrations += 1;
    let mut registered = request.clone();
    registered["client_id"] = json!(format!("client-{}", oauth.registrations));
    if oauth.confidential {
        registered["client_secret"] = json!(format!("s-{}", oauth.registrations));
        registered["token_endpoint_auth_method"] = json!("client_secret_basic");
    }
    (StatusCode::CREATED, axum::Json(registered)).into_response()
}

async fn authorize(
    State(state): State<Arc<ServerState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let mut oauth = state.oauth.lock();
    let Some(oauth) = oauth.as_mut() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if query.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return (StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    }
    let (Some(challenge), Some(redirect), Some(state_param), Some(resource)) = (
        query.get("code_challenge"),
        query.get("redirect_uri"),
        query.get("state"),
        query.get("resource"),
    ) else {
        return (StatusCode::BAD_REQUEST, "missing parameters").into_response();
    };
    let code = format!("code-{}", oauth.codes.len() + 1);
    let scope = query.get("scope").cloned().unwrap_or_default();
    oauth
        .codes
        .insert(code.clone(), (challenge.clone(), resource.clone(), scope));
    let location = format!("{redirect}?code={code}&state={state_param}");
    (StatusCode::FOUND, [("location", location)]).into_response()
}

async fn token(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    use base64::Engine;
    use sha2::Digest;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let mut guard = state.oauth.lock();
    let Some(oauth) = guard.as_mut() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    oauth.grants.push(grant.clone());
    let refused = || {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
    };
    if oauth.confidential {
        let n = oauth.registrations;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("client-{n}:s-{n}"));
        if header(&headers, "authorization") != Some(format!("Basic {basic}")) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client"})),
            )
                .into_response();
        }
    }
    let scope = match grant.as_str() {
        "authorization_code" => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some((challenge, resource, scope)) = oauth.codes.remove(&code) else {
                return refused().into_response();
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            if computed != challenge || form.get("resource") != Some(&resource) {
                return refused().into_response();
            }
            scope
        }
        "refresh_token" if !oauth.refuse_refresh => {
            let expected = format!("r{}", oauth.issued);
            if form.get("refresh_token") != Some(&expected) {
                return refused().into_response();
            }
            oauth.scopes.last().cloned().unwrap_or_default()
        }
        _ => return refused().into_response(),
    };
    oauth.scopes.push(scope);
    oauth.issued += 1;
    let n = oauth.issued;
    drop(guard);
    *state.require.lock() = Some(format!("Bearer t{n}"));
    axum::Json(json!({
        "access_token": format!("t{n}"),
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": format!("r{n}"),
    }))
    .into_response()
}
