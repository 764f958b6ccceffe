//! Streamable HTTP for MCP clients at `/mcp`, in both protocol eras.
//!
//! Sessions era (2025-11-25 and earlier): `initialize` opens a session and the
//! proxy mints its `MCP-Session-Id` (128 random bits); POST, GET (the
//! server-to-client stream) and DELETE name it. An unknown, expired or evicted
//! id gets 404, which tells the client to initialize again.
//!
//! In a cluster the id is sealed and names the instance holding the session
//! (see [`crate::cluster`]).
//!
//! A 2025-03-26 client may post a JSON-RPC batch, served element by element
//! (see `proxy::batch`).
//!
//! Stateless era (2026-07-28): no protocol session. The proxy keys its own
//! session by the client key, creating it on the client's first request; the
//! table, its limits and eviction work exactly as in the other era.
//!
//! Answers the proxy gives itself: 400 for a missing session id or an
//! unsupported protocol revision, 404 for an unknown session, 406 for a POST
//! that accepts neither JSON nor an event stream, 413 for a body over
//! `--max-body`, 415 for a body that is not JSON, 429 with `Retry-After` for
//! the per-session rate limit or a client opening sessions too fast, 503 with
//! `Retry-After` when the table is full of busy sessions or requests are at
//! their global bound, 502 when the upstream cannot be started, reached or
//! given the request, or ends without a word. A request the upstream has
//! taken but cannot answer (its server failed, its stream broke, its response
//! was invalid or over the stdio line limit) gets a -32031 error as its
//! JSON-RPC answer: with 200, or on its event stream. Invalid JSON gets a
//! -32700 error and leaves the session as it was.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::header::{
    ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::client_key::ClientKey;
use super::jsonrpc::{code, error_response, Incoming, Message};
use super::mcp_headers::{
    era_of, supported_versions, Era, LAST_EVENT_ID, MCP_METHOD, MCP_NAME, PROTOCOL_VERSION,
    SESSION_ID,
};
use super::oauth::ResourceMetadata;
use super::upstream::{Event, Events, Forwarded, Reply, Upstream, UpstreamError, UpstreamSpec};
use super::{sse, OpenError, Opened, Pinned, Proxy};
use crate::cluster::route::HopClient;
use crate::eviction::RemovalCause;
use crate::session::{ExternalId, RequestGuard, SessionId, TableError};

/// The router serving `/mcp`; serve it with `ConnectInfo<SocketAddr>`. In a
/// cluster, [`crate::cluster::route`] decides first where a request is served.
pub fn router(proxy: Arc<Proxy>) -> Router {
    let max_body = proxy.options.max_body;
    let router = Router::new()
        .route(
            "/mcp",
            post(handle_post).get(handle_get).delete(handle_delete),
        )
        .layer(DefaultBodyLimit::max(max_body));
    let router = match proxy.cluster {
        Some(_) => router.layer(axum::middleware::from_fn_with_state(
            Arc::clone(&proxy),
            crate::cluster::route::route,
        )),
        None => router,
    };
    // An upstream's challenges name this proxy's metadata, here and after a
    // hop alike, and the metadata is served.
    let router = match &proxy.upstreams {
        UpstreamSpec::Http(upstream) => {
            let metadata = Arc::new(ResourceMetadata::new(
                Arc::clone(upstream),
                proxy.options.public_url.clone(),
                proxy.options.https,
            ));
            router
                .layer(axum::middleware::from_fn_with_state(
                    Arc::clone(&metadata),
                    super::oauth::name_ourselves,
                ))
                .merge(super::oauth::router(metadata))
        }
        UpstreamSpec::Stdio(_) => router,
    };
    // Outermost: a page that may not use the proxy reaches nothing, not
    // even another instance; one that may gets CORS, here where a hop's
    // answer comes back through too.
    router
        .layer(super::origin::cors(&proxy.options.origins))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&proxy),
            super::origin::check,
        ))
        .with_state(proxy)
}

/// The client a request comes from: named by the hop header when another
/// instance of the cluster forwarded it, else from the request itself.
fn client_of(
    proxy: &Proxy,
    hop: Option<Extension<HopClient>>,
    headers: &HeaderMap,
    remote: SocketAddr,
) -> ClientKey {
    match hop {
        Some(Extension(HopClient(client))) => client,
        None => proxy.options.client_key.key(headers, remote.ip()),
    }
}

/// A response with a JSON-RPC error body.
pub(crate) fn refuse(status: StatusCode, id: Option<&str>, code: i64, message: &str) -> Response {
    let body = error_response(id, code, message, None);
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn retry_after(mut response: Response, wait: Duration) -> Response {
    response.headers_mut().insert(
        RETRY_AFTER,
        HeaderValue::from(super::retry_after_seconds(wait)),
    );
    response
}

pub(super) fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn forwarded(headers: &HeaderMap) -> Forwarded {
    let get = |name| header(headers, name).map(str::to_owned);
    Forwarded {
        protocol_version: get(PROTOCOL_VERSION),
        mcp_method: get(MCP_METHOD),
        mcp_name: get(MCP_NAME),
        last_event_id: get(LAST_EVENT_ID),
        authorization: headers.get(AUTHORIZATION).map(|value| {
            let mut value = value.clone();
            value.set_sensitive(true);
            value
        }),
    }
}

/// Whether the client takes `media` (`type/subtype`). Without an Accept
/// header it takes anything (RFC 9110, 12.5.1); with one, the most specific
/// range matching `media` decides (`a/b` over `a/*` over `*/*`), and `q=0`
/// there means "not this".
pub(super) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    let mut ranges = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter(|range| !range.trim().is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return true;
    }
    // (specificity, q > 0) of the most specific matching range so far.
    let mut decided: Option<(u8, bool)> = None;
    for range in ranges {
        let mut parts = range.split(';');
        let range_media = parts.next().unwrap_or_default().trim();
        let specificity = match range_media.split_once('/') {
            _ if range_media.eq_ignore_ascii_case(media) => 2,
            Some((range_kind, "*")) if range_kind.eq_ignore_ascii_case(kind) => 1,
            Some(("*", "*")) => 0,
            _ => continue,
        };
        if decided.is_some_and(|(best, _)| best >= specificity) {
            continue;
        }
        let refused = parts.any(|param| {
            param.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("q")
                    && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        });
        decided = Some((specificity, !refused));
    }
    decided.is_some_and(|(_, taken)| taken)
}

/// Maps a table refusal to what the client is told.
fn table_refusal(error: &TableError, id: Option<&str>) -> Response {
    match error {
        TableError::RateLimited {
            retry_after: wait, ..
        } => retry_after(
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                code::RATE_LIMITED,
                &format!("rate limited: this session's quota is spent; retry after {wait:?}"),
            ),
            *wait,
        ),
        TableError::Overloaded { .. } => retry_after(
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                code::OVERLOADED,
                "the proxy has too many requests in flight; retry shortly",
            ),
            Duration::from_secs(1),
        ),
        TableError::Capacity { .. } => retry_after(
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                code::OVERLOADED,
                "the session table is full and every session is busy; retry shortly",
            ),
            Duration::from_secs(1),
        ),
        TableError::UnknownSession(_)
        | TableError::UnknownExternalId(_)
        | TableError::NotAcceptingRequests { .. } => session_not_found(id),
        other => {
            tracing::error!("session table: {other}");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                id,
                code::INTERNAL_ERROR,
                "internal error",
            )
        }
    }
}

pub(crate) fn session_not_found(id: Option<&str>) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        id,
        code::SESSION_CLOSED,
        "session not found: it expired, was evicted or was closed; send initialize again",
    )
}

fn open_refusal(error: &OpenError, id: Option<&str>) -> Response {
    match error {
        OpenError::TooFast(wait) => retry_after(
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                code::RATE_LIMITED,
                &format!("this client opens sessions too fast; retry after {wait:?}"),
            ),
            *wait,
        ),
        OpenError::Table(table) => table_refusal(table, id),
        OpenError::Upstream(upstream) => upstream_refusal(upstream, id),
        OpenError::ShuttingDown => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            id,
            code::OVERLOADED,
            "the proxy is shutting down",
        ),
    }
}

fn upstream_refusal(error: &UpstreamError, id: Option<&str>) -> Response {
    match error {
        UpstreamError::Busy(_) => retry_after(
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                code::OVERLOADED,
                &error.to_string(),
            ),
            Duration::from_secs(1),
        ),
        UpstreamError::SessionGone => session_not_found(id),
        UpstreamError::Unsupported(_) | UpstreamError::DuplicateId(_) => refuse(
            StatusCode::BAD_REQUEST,
            id,
            code::INVALID_REQUEST,
            &error.to_string(),
        ),
        UpstreamError::StreamConflict => refuse(
            StatusCode::CONFLICT,
            id,
            code::INVALID_REQUEST,
            &error.to_string(),
        ),
        UpstreamError::Failed(_) | UpstreamError::Unreachable(_) => refuse(
            StatusCode::BAD_GATEWAY,
            id,
            code::UPSTREAM_FAILED,
            &error.to_string(),
        ),
        UpstreamError::Denied { status, challenge } => with_challenge(
            refuse(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN),
                id,
                code::INVALID_REQUEST,
                &error.to_string(),
            ),
            challenge.clone(),
        ),
    }
}

/// An upstream's refusal of the client's credentials goes back with its
/// `WWW-Authenticate`: an MCP client finds out from it how to authorise.
fn with_challenge(mut response: Response, challenge: Option<HeaderValue>) -> Response {
    if let Some(challenge) = challenge {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// Counts a finished request and its time to first byte.
pub(crate) fn finish(
    proxy: &Proxy,
    method: &'static str,
    started: Instant,
    response: Response,
) -> Response {
    proxy
        .metrics
        .count_request(method, response.status().as_u16());
    proxy
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn handle_post(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    hop: Option<Extension<HopClient>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match body {
        Ok(body) => {
            let client = client_of(&proxy, hop, &headers, remote);
            post_message(&proxy, client, &headers, body).await
        }
        // Answered in JSON-RPC like every other refusal, so a client's error
        // path need not parse axum's plain text.
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the request body is larger than the proxy accepts (--max-body {} bytes)",
                    proxy.options.max_body
                )
            } else {
                format!(
                    "the request body could not be read: {}",
                    rejection.body_text()
                )
            };
            refuse(status, None, code::INVALID_REQUEST, &message)
        }
    };
    finish(&proxy, "POST", started, response)
}

async fn post_message(
    proxy: &Arc<Proxy>,
    client: ClientKey,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let json = header(headers, CONTENT_TYPE.as_str()).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            code::INVALID_REQUEST,
            "the body must be JSON (Content-Type: application/json)",
        );
    }
    // Parsed before the headers are checked, so that their refusals too
    // reach the caller waiting on the request's id.
    let parsed = Incoming::parse(body);
    let id = match &parsed {
        Ok(Incoming::One(message)) => message.id(),
        Ok(Incoming::Batch(_)) => None,
        Err(e) => e.id(),
    };
    let version = header(headers, PROTOCOL_VERSION);
    let Some(era) = era_of(version) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            id,
            code::INVALID_REQUEST,
            &format!(
                "unsupported MCP-Protocol-Version `{}`; supported: {}",
                version.unwrap_or_default(),
                supported_versions()
            ),
        );
    };
    // The transport has the client take both; one of them is enough to be
    // answered (see `answer`), neither leaves no way to answer at all.
    if !accepts(headers, "application/json") && !accepts(headers, "text/event-stream") {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            id,
            code::INVALID_REQUEST,
            "a POST is answered with application/json or text/event-stream: accept them \
             (Accept: application/json, text/event-stream)",
        );
    }
    let message = match parsed {
        Ok(Incoming::One(message)) => message,
        Ok(Incoming::Batch(batch)) => {
            return super::batch::post(proxy, client, headers, batch).await
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.id(), e.code(), &e.to_string()),
    };
    match era {
        Era::Sessions => post_in_session(proxy, client, headers, message).await,
        Era::Stateless => post_stateless(proxy, client, headers, message).await,
    }
}

async fn post_in_session(
    proxy: &Arc<Proxy>,
    client: ClientKey,
    headers: &HeaderMap,
    message: Message,
) -> Response {
    let request_id = message.id().map(str::to_owned);
    let rid = request_id.as_deref();
    if message.is_request("initialize") {
        let bytes = message.bytes().len() as u64;
        let opened = match proxy
            .open_session(client, Era::Sessions, ExternalId::Generate, bytes)
            .await
        {
            Ok(opened) => opened,
            Err(e) => return open_refusal(&e, rid),
        };
        let Opened { id, name, request } = opened;
        let (mut response, answered) = relay_and_tell(proxy, request, message, headers).await;
        if answered == Answered::Refused {
            // A session whose initialize failed is of no use to anyone: it
            // must not hold a place (and an upstream) until the handshake
            // times out, nor be named to a client that cannot use it.
            let _ = proxy.close_session(id, RemovalCause::Closed);
            return response;
        }
        if let Some(value) = name.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
            response.headers_mut().insert(SESSION_ID, value);
        }
        return response;
    }
    let id = match session_named(proxy, headers, rid) {
        Ok(id) => id,
        Err(refusal) => return refusal,
    };
    let request = match begin(proxy, id, client, &message) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if message.is_notification("notifications/initialized") {
        let _ = proxy.table.activate(id);
    }
    relay(proxy, request, message, headers).await
}

/// The session a sessions-era POST names, or its refusal (answering `rid`).
#[allow(clippy::result_large_err)]
pub(super) fn session_named(
    proxy: &Proxy,
    headers: &HeaderMap,
    rid: Option<&str>,
) -> Result<SessionId, Response> {
    let Some(name) = header(headers, SESSION_ID) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            rid,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id: send initialize first",
        ));
    };
    proxy.table.lookup(name).map_err(|_| session_not_found(rid))
}

async fn post_stateless(
    proxy: &Arc<Proxy>,
    client: ClientKey,
    headers: &HeaderMap,
    message: Message,
) -> Response {
    let rid = message.id().map(str::to_owned);
    let rid = rid.as_deref();
    let name = client.session_name();
    let id = match proxy.table.lookup(&name) {
        Ok(id) => id,
        Err(_) => match proxy
            .open_session(
                client,
                Era::Stateless,
                ExternalId::Given(name.clone()),
                message.bytes().len() as u64,
            )
            .await
        {
            Ok(opened) => {
                let probe = message.is_request("server/discover");
                let (response, answered) =
                    relay_and_tell(proxy, opened.request, message, headers).await;
                if probe && answered == Answered::Refused {
                    // A client probing for the 2026 era, refused by an upstream
                    // that only speaks the sessions era, falls back to
                    // `initialize`: nothing will use this session again, and it
                    // must not hold an upstream until it idles out.
                    let _ = proxy.table.remove(opened.id, RemovalCause::Closed);
                }
                return response;
            }
            // Another request of the same client created it meanwhile.
            Err(OpenError::Table(TableError::DuplicateExternalId(_))) => {
                match proxy.table.lookup(&name) {
                    Ok(id) => id,
                    Err(_) => return session_not_found(rid),
                }
            }
            Err(e) => return open_refusal(&e, rid),
        },
    };
    let request = match begin(proxy, id, client, &message) {
        Ok(request) => request,
        Err(response) => return response,
    };
    relay(proxy, request, message, headers).await
}

/// Starts a request on a live session: pins it (rate limited) and takes a
/// handle on its upstream. A refusal answers the request by its id.
#[allow(clippy::result_large_err)]
pub(super) fn begin(
    proxy: &Arc<Proxy>,
    id: SessionId,
    client: ClientKey,
    message: &Message,
) -> Result<Pinned, Response> {
    let rid = message.id();
    let guard = proxy
        .table
        .request_guard(id, message.bytes().len() as u64)
        .map_err(|e| table_refusal(&e, rid))?;
    let (upstream, abort) = proxy
        .table
        .with_upstream(id, |s| (Arc::clone(&s.upstream), s.abort.clone()))
        .map_err(|e| table_refusal(&e, rid))?;
    proxy.count_access(client, true);
    Ok(Pinned {
        guard,
        upstream,
        abort,
    })
}

/// Sends one message upstream and relays the answer. The request stays pinned
/// until its response has gone out (the guard travels with the stream).
async fn relay(
    proxy: &Arc<Proxy>,
    request: Pinned,
    message: Message,
    headers: &HeaderMap,
) -> Response {
    relay_and_tell(proxy, request, message, headers).await.0
}

/// How the upstream answered, as far as the proxy saw before relaying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Fine,
    /// An error response, or a refusal at the HTTP level.
    Refused,
    /// A stream whose end the proxy does not wait for.
    Streaming,
}

/// How long an answer that a priming event precedes may take to go as plain
/// JSON; after that the client gets the stream, which it can resume.
const PRIMING_AFTER: Duration = Duration::from_secs(1);

/// What a request still waiting on its upstream is told when its session is
/// closed under it.
pub(super) const CLOSED_IN_FLIGHT: &str =
    "the session was closed while this request was in flight; send initialize again";

pub(super) fn closed_in_flight(id: Option<&str>) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        id,
        code::SESSION_CLOSED,
        CLOSED_IN_FLIGHT,
    )
}

/// The upstream's next event for request `id`, or what the client is told
/// instead: the session closed first, or the upstream ended unanswered.
async fn next_unless_closed(
    events: &mut Events,
    abort: &CancellationToken,
    id: Option<&str>,
) -> Result<Event, (Response, Answered)> {
    let next = tokio::select! {
        next = events.next() => next,
        () = abort.cancelled() => return Err((closed_in_flight(id), Answered::Refused)),
    };
    next.ok_or_else(|| {
        let response = refuse(
            StatusCode::BAD_GATEWAY,
            id,
            code::UPSTREAM_FAILED,
            "the upstream ended without answering",
        );
        (response, Answered::Refused)
    })
}

async fn relay_and_tell(
    proxy: &Arc<Proxy>,
    request: Pinned,
    message: Message,
    headers: &HeaderMap,
) -> (Response, Answered) {
    let Pinned {
        guard,
        upstream,
        abort,
    } = request;
    let request_id = message.id().map(str::to_owned);
    match dispatch(
        proxy,
        guard.id(),
        upstream.as_ref(),
        &abort,
        message,
        headers,
    )
    .await
    {
        Ok(Some(events)) => answer(events, request_id, headers, guard, abort).await,
        Ok(None) => (StatusCode::ACCEPTED.into_response(), Answered::Fine),
        Err(refusal) => (refusal, Answered::Refused),
    }
}

/// Hands one message to its session's upstream: the events that answer it
/// (none for a notification or a response), or what the client is told
/// instead.
pub(super) async fn dispatch(
    proxy: &Proxy,
    session: SessionId,
    upstream: &dyn Upstream,
    abort: &CancellationToken,
    message: Message,
    headers: &HeaderMap,
) -> Result<Option<Events>, Response> {
    let request_id = message.id().map(str::to_owned);
    let forwarded = forwarded(headers);
    let reply = tokio::select! {
        reply = upstream.send(message, &forwarded) => reply,
        () = abort.cancelled() => return Err(closed_in_flight(request_id.as_deref())),
    };
    match reply {
        Ok(Reply::Accepted) => Ok(None),
        Ok(Reply::Events(events)) => Ok(Some(events)),
        Ok(Reply::Refused {
            status,
            content_type,
            body,
            challenge,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = content_type.unwrap_or_else(|| "application/json".into());
            let response = (status, [(CONTENT_TYPE, content_type)], body).into_response();
            Err(with_challenge(response, challenge))
        }
        Err(e) => {
            if matches!(e, UpstreamError::SessionGone | UpstreamError::Failed(_)) {
                let _ = proxy.table.remove(session, RemovalCause::UpstreamFailed);
            }
            Err(upstream_refusal(&e, request_id.as_deref()))
        }
    }
}

/// Answers with plain JSON when the first message the upstream sends is the
/// response itself, after at most a priming event and within
/// [`PRIMING_AFTER`] of it (and the client takes JSON); with an SSE stream
/// otherwise.
/// A stream cut short by the session's close ends with an error for the
/// request, so the client is not left waiting for an answer that cannot come.
async fn answer(
    mut events: Events,
    request_id: Option<String>,
    headers: &HeaderMap,
    guard: RequestGuard<super::session::ProxySession>,
    abort: CancellationToken,
) -> (Response, Answered) {
    let rid = request_id.as_deref();
    let mut first = match next_unless_closed(&mut events, &abort, rid).await {
        Ok(first) => first,
        Err(refused) => return refused,
    };
    let wants_stream =
        !accepts(headers, "application/json") && accepts(headers, "text/event-stream");
    if !accepts(headers, "text/event-stream") {
        // A client that takes only JSON gets the response alone: what the
        // upstream sends before it (progress, log lines) has no way there.
        let mut event = first;
        loop {
            if answers(&event, rid) {
                if let Some(message) = event.message {
                    drop(guard);
                    return json_answer(message);
                }
            }
            event = match next_unless_closed(&mut events, &abort, rid).await {
                Ok(event) => event,
                Err(refused) => return refused,
            };
        }
    }
    // A priming event (an id, no message) lets the client resume the stream
    // before its first message. An answer that follows at once goes as
    // plain JSON instead; a slow one gets the stream, primed.
    let mut priming = None;
    if !wants_stream && first.is_priming() {
        let next =
            tokio::time::timeout(PRIMING_AFTER, next_unless_closed(&mut events, &abort, rid));
        match next.await {
            Ok(Ok(next)) => priming = Some(std::mem::replace(&mut first, next)),
            Ok(Err(refused)) => return refused,
            Err(_slow) => {}
        }
    }
    if answers(&first, rid) && !wants_stream {
        if let Some(message) = first.message {
            drop(guard);
            return json_answer(message);
        }
    }
    let mut answered = answers(&first, rid);
    let cut_short = abort.clone();
    let closing = request_id
        .as_deref()
        .map(|id| Message::error(Some(id), code::SESSION_CLOSED, CLOSED_IN_FLIGHT));
    let stream = futures::stream::iter(priming)
        .chain(futures::stream::once(async move { first }))
        .chain(events.take_until(abort.cancelled_owned()))
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |event| {
            let event = match event {
                Some(event) => {
                    answered |= answers(&event, request_id.as_deref());
                    Some(event)
                }
                // After the last event: an error only if the close cut the
                // stream before the request was answered.
                None if cut_short.is_cancelled() && !answered => {
                    closing.clone().map(Event::message)
                }
                None => None,
            };
            futures::future::ready(event)
        })
        .map(move |event| {
            // The pin lasts as long as the stream: dropped with it.
            let _pinned = &guard;
            event
        });
    (sse::response(stream, None), Answered::Streaming)
}

/// The upstream's response as a plain JSON body.
fn json_answer(message: Message) -> (Response, Answered) {
    let answered = if message.is_error() {
        Answered::Refused
    } else {
        Answered::Fine
    };
    let response = (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        message.bytes().clone(),
    )
        .into_response();
    (response, answered)
}

/// Whether `event` carries the response to request `id`.
fn answers(event: &Event, id: Option<&str>) -> bool {
    event
        .message
        .as_ref()
        .is_some_and(|m| m.id().is_some() && m.id() == id)
}

async fn handle_get(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    hop: Option<Extension<HopClient>>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let client = client_of(&proxy, hop, &headers, remote);
    let response = open_stream(&proxy, client, &headers).await;
    finish(&proxy, "GET", started, response)
}

async fn open_stream(proxy: &Arc<Proxy>, client: ClientKey, headers: &HeaderMap) -> Response {
    if let Some(response) = stateless_has_no(headers, "GET") {
        return response;
    }
    let Some(name) = header(headers, SESSION_ID) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id: a stream belongs to a session",
        );
    };
    let Ok(id) = proxy.table.lookup(name) else {
        return session_not_found(None);
    };
    if !accepts(headers, "text/event-stream") {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            None,
            code::INVALID_REQUEST,
            "a stream is text/event-stream: accept it",
        );
    }
    // A stream does not pin its session: it attaches, and ends when the
    // session is removed for any reason.
    let attachment = match proxy.table.attach(id) {
        Ok(attachment) => attachment,
        Err(e) => return table_refusal(&e, None),
    };
    if let Err(e) = proxy.table.touch(id, 0) {
        return table_refusal(&e, None);
    }
    proxy.count_access(client, true);
    let upstream = match proxy.table.with_upstream(id, |s| Arc::clone(&s.upstream)) {
        Ok(upstream) => upstream,
        Err(e) => return table_refusal(&e, None),
    };
    let events = match upstream.listen(&forwarded(headers)).await {
        Ok(events) => events,
        Err(UpstreamError::Unsupported(_)) => {
            let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, DELETE"));
            return response;
        }
        Err(e) => return upstream_refusal(&e, None),
    };
    if header(headers, LAST_EVENT_ID).is_some() {
        proxy.metrics.stream_resumptions.inc();
    }
    let closed = async move {
        attachment.closed().await;
    };
    sse::response(events.take_until(closed), Some(Duration::from_secs(15)))
}

async fn handle_delete(State(proxy): State<Arc<Proxy>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let response = delete_session(&proxy, &headers);
    finish(&proxy, "DELETE", started, response)
}

fn delete_session(proxy: &Proxy, headers: &HeaderMap) -> Response {
    if let Some(response) = stateless_has_no(headers, "DELETE") {
        return response;
    }
    let Some(name) = header(headers, SESSION_ID) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id: which session?",
        );
    };
    let Ok(id) = proxy.table.lookup(name) else {
        return session_not_found(None);
    };
    // A session already on its way out is gone for its client, as a POST to
    // it would find.
    if proxy
        .table
        .get(id)
        .is_none_or(|s| s.state == crate::session::SessionState::Closing)
    {
        return session_not_found(None);
    }
    match proxy.close_session(id, RemovalCause::Closed) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => table_refusal(&e, None),
    }
}

/// The stateless era has no stream and no session to delete.
fn stateless_has_no(headers: &HeaderMap, method: &str) -> Option<Response> {
    (era_of(header(headers, PROTOCOL_VERSION)) == Some(Era::Stateless)).then(|| {
        let mut response = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            code::INVALID_REQUEST,
            &format!("{method} has no meaning without protocol sessions (2026-07-28)"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                ACCEPT,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn proxy_accept_ranges_take_wildcards_specificity_and_q_into_account() {
        const JSON: &str = "application/json";
        const SSE: &str = "text/event-stream";
        let cases: &[(&[&str], bool, bool)] = &[
            // No Accept header, or an empty one: anything goes.
            (&[], true, true),
            (&[""], true, true),
            (&["text/plain"], false, false),
            (&["*/*"], true, true),
            (&["application/*"], true, false),
            (&["TEXT/*"], false, true),
            (&["Application/JSON; charset=utf-8"], true, false),
            (&["*/*;q=0"], false, false),
            (&["*/*, application/json;q=0.000"], false, true),
            (
                &["text/*;q=0, text/event-stream;q=0.1, application/json;q=0.5"],
                true,
                true,
            ),
            (&["text/plain", "application/json"], true, false),
        ];
        for (values, json, sse) in cases {
            let headers = accept(values);
            assert_eq!(accepts(&headers, JSON), *json, "{values:?} takes JSON");
            assert_eq!(accepts(&headers, SSE), *sse, "{values:?} takes SSE");
        }
    }
}
