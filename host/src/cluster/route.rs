//! The `/mcp` middleware of a clustered instance: every request is served
//! here, forwarded to the instance holding its session, or answered 404.
//!
//! - A request with a hop header comes from another instance: a valid
//!   header lets it through to the handlers with the client it names (never
//!   forwarded again); an invalid one gets 404.
//! - A POST first passes the global rate limit (here, once, whichever
//!   instance ends up serving it).
//! - With a session id: the sealed id names the owner; this instance serves
//!   its own, forwards the others' to live owners, and answers 404 for ids
//!   that do not open, owners that are gone, and owners that restarted.
//! - 2026-07-28 (no session id): served here when the client's session is
//!   here; otherwise its owner record decides (claimed for this instance if
//!   nobody live holds it).
//! - `initialize` always opens the session here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::hop::{HopError, HopPurpose, HOP_HEADER};
use super::{Admission, ClientRoute, Cluster, IdRoute};
use crate::proxy::client_key::ClientKey;
use crate::proxy::jsonrpc::{code, Incoming, Message};
use crate::proxy::mcp_headers::{era_of, Era, PROTOCOL_VERSION, SESSION_ID};
use crate::proxy::reverse::{finish, refuse, retry_after, session_not_found};
use crate::proxy::Proxy;

/// The client a verified hop names; the handlers take it instead of
/// deriving one from the forwarding instance's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopClient(pub ClientKey);

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::GET => "GET",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// The middleware; a no-op on an instance outside any cluster.
pub async fn route(State(proxy): State<Arc<Proxy>>, request: Request, next: Next) -> Response {
    let Some(cluster) = proxy.cluster.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(HOP_HEADER) {
        return receive_hop(&proxy, &cluster, request, next).await;
    }
    let Some(purpose) = HopPurpose::of_method(request.method()) else {
        return next.run(request).await;
    };
    let Some(remote) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return next.run(request).await;
    };
    let client = proxy.options.client_key.key(request.headers(), remote);
    let era = era_of(header(request.headers(), PROTOCOL_VERSION));
    if purpose == HopPurpose::Post {
        post(&proxy, &cluster, client, era, request, next).await
    } else {
        by_session_id(&proxy, &cluster, client, era, purpose, request, next).await
    }
}

async fn local(next: Next, parts: Parts, body: Bytes) -> Response {
    next.run(Request::from_parts(parts, Body::from(body))).await
}

async fn post(
    proxy: &Arc<Proxy>,
    cluster: &Arc<Cluster>,
    client: ClientKey,
    era: Option<Era>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, proxy.options.max_body).await else {
        let refusal = refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            code::INVALID_REQUEST,
            "the body is larger than --max-body",
        );
        return finish(proxy, "POST", started, refusal);
    };
    // What the handlers refuse (no era, not JSON-RPC) they refuse here too.
    let (Some(era), Ok(incoming)) = (era, Incoming::parse(body.clone())) else {
        return local(next, parts, body).await;
    };
    // A batch goes where its session is, whole; its refusals here answer no
    // one id (the holder answers each of its elements).
    let (rid, opens) = match &incoming {
        Incoming::One(message) => (
            message.id().map(str::to_owned),
            message.is_request("initialize"),
        ),
        Incoming::Batch(_) => (None, false),
    };
    let rid = rid.as_deref();
    match cluster.admit(client).await {
        Admission::Admit => {}
        Admission::Limited(wait) => {
            let refusal = retry_after(
                refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    rid,
                    code::RATE_LIMITED,
                    &format!("rate limited: this client's quota is spent; retry after {wait:?}"),
                ),
                wait,
            );
            return finish(proxy, "POST", started, refusal);
        }
        Admission::Unavailable => {
            let refusal = retry_after(
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    rid,
                    code::OVERLOADED,
                    "the cluster's rate limit cannot be checked (Redis is down); retry shortly",
                ),
                std::time::Duration::from_secs(1),
            );
            return finish(proxy, "POST", started, refusal);
        }
    }
    match era {
        Era::Sessions => {
            if opens {
                return local(next, parts, body).await;
            }
            let Some(id) = header(&parts.headers, SESSION_ID).map(str::to_owned) else {
                return local(next, parts, body).await;
            };
            match cluster.route_id(&id).await {
                IdRoute::Local => local(next, parts, body).await,
                IdRoute::Gone(why) => {
                    tracing::debug!("POST for an unknown session: {why}");
                    finish(proxy, "POST", started, session_not_found(rid))
                }
                IdRoute::Forward(owner) => {
                    let answer =
                        forward(cluster, &owner, &parts, body, HopPurpose::Post, &id, client).await;
                    let response = answer.unwrap_or_else(|| session_not_found(rid));
                    finish(proxy, "POST", started, response)
                }
            }
        }
        Era::Stateless => {
            if proxy.table.lookup(&client.session_name()).is_ok() {
                return local(next, parts, body).await;
            }
            match cluster.route_client(client).await {
                ClientRoute::Local => local(next, parts, body).await,
                ClientRoute::Forward(owner, holder) => {
                    let answer = forward(
                        cluster,
                        &owner,
                        &parts,
                        body.clone(),
                        HopPurpose::Post,
                        "",
                        client,
                    )
                    .await;
                    match answer {
                        Some(response) => finish(proxy, "POST", started, response),
                        // Its holder is unreachable: serve the client here.
                        None => match cluster.take_over(client, &holder).await {
                            ClientRoute::Local => local(next, parts, body).await,
                            ClientRoute::Forward(..) => finish(
                                proxy,
                                "POST",
                                started,
                                retry_after(
                                    refuse(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        rid,
                                        code::OVERLOADED,
                                        "this client's session is moving between instances; retry",
                                    ),
                                    std::time::Duration::from_secs(1),
                                ),
                            ),
                        },
                    }
                }
            }
        }
    }
}

async fn by_session_id(
    proxy: &Arc<Proxy>,
    cluster: &Arc<Cluster>,
    client: ClientKey,
    era: Option<Era>,
    purpose: HopPurpose,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_name(request.method());
    let id = header(request.headers(), SESSION_ID).map(str::to_owned);
    // The handlers answer what has no session to route (405 in 2026-07-28,
    // 400 without an id); they serve a GET or DELETE whatever its version.
    let Some(id) = id.filter(|_| era != Some(Era::Stateless)) else {
        return next.run(request).await;
    };
    match cluster.route_id(&id).await {
        IdRoute::Local => next.run(request).await,
        IdRoute::Gone(why) => {
            tracing::debug!("{method} for an unknown session: {why}");
            finish(proxy, method, started, session_not_found(None))
        }
        IdRoute::Forward(owner) => {
            let (parts, _) = request.into_parts();
            let answer = forward(cluster, &owner, &parts, Bytes::new(), purpose, &id, client).await;
            let response = answer.unwrap_or_else(|| session_not_found(None));
            finish(proxy, method, started, response)
        }
    }
}

/// Sends the request on to `owner`; `None` when it cannot be reached.
async fn forward(
    cluster: &Cluster,
    owner: &reqwest::Url,
    parts: &Parts,
    body: Bytes,
    purpose: HopPurpose,
    session: &str,
    client: ClientKey,
) -> Option<Response> {
    let method = method_name(&parts.method);
    let hop = cluster
        .keys
        .sign_hop(purpose, session, client, cluster.now_ms());
    let started = Instant::now();
    let sent = cluster
        .forwarder
        .send(owner, parts.method.clone(), &parts.headers, &[], &hop, body)
        .await;
    match sent {
        Ok(response) => {
            cluster
                .metrics
                .forward_latency
                .observe(started.elapsed().as_secs_f64());
            cluster.metrics.count_forward(method, "answered");
            Some(response)
        }
        Err(e) => {
            cluster.metrics.count_forward(method, "owner_gone");
            tracing::info!(%owner, "the session's instance cannot be reached: {e}");
            None
        }
    }
}

async fn receive_hop(
    proxy: &Arc<Proxy>,
    cluster: &Cluster,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_name(request.method());
    let headers = request.headers();
    let session = header(headers, SESSION_ID).unwrap_or("");
    let verdict = header(headers, HOP_HEADER)
        .ok_or(HopError::Malformed)
        .and_then(|value| {
            cluster.keys.verify_hop(
                value,
                request.method(),
                session,
                cluster.now_ms(),
                cluster.timing.hop_window,
            )
        });
    let hop = match verdict {
        Ok(hop) => hop,
        Err(e) => {
            cluster.metrics.count_hop("rejected");
            tracing::info!("refused a request with a hop header: {e}");
            let id = request_id(proxy, request).await;
            return finish(proxy, method, started, session_not_found(id.as_deref()));
        }
    };
    cluster.metrics.count_hop("accepted");
    match hop.purpose {
        HopPurpose::Revoke => {
            let session = session.to_owned();
            return crate::proxy::admin::remove_local(proxy, &session);
        }
        HopPurpose::Purge | HopPurpose::Expire => {
            let all = hop.purpose == HopPurpose::Purge;
            return match crate::proxy::admin::cleanup_local(proxy, all).await {
                Some(done) => axum::Json(done).into_response(),
                None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            };
        }
        HopPurpose::Post | HopPurpose::Get | HopPurpose::Delete => {}
    }
    request.extensions_mut().insert(HopClient(hop.client));
    next.run(request).await
}

/// The JSON-RPC id of a POST's body, for a refusal to answer by; `None` for
/// other methods and for a body too large or not JSON-RPC with an id.
async fn request_id(proxy: &Proxy, request: Request) -> Option<String> {
    if request.method() != Method::POST {
        return None;
    }
    let body = axum::body::to_bytes(request.into_body(), proxy.options.max_body)
        .await
        .ok()?;
    match Message::parse(body) {
        Ok(message) => message.id().map(str::to_owned),
        Err(e) => e.id().map(str::to_owned),
    }
}
