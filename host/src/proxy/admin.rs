//! The operator's API, on its own listener (loopback by default):
//!
//! - `GET /sessions`: every session with its state, age, idle time, requests,
//!   bytes, upstream and policy. In a cluster, every instance's sessions
//!   (the others' from the session index; `shadowcat-cluster-partial: true`
//!   when Redis could not be read and only this instance's are listed).
//! - `DELETE /sessions/{id}`: remove one (it leaves when its requests end);
//!   in a cluster, whichever instance holds it.
//! - `POST /sessions/cleanup`: expire what is due now; `?all=true` removes
//!   every session. In a cluster, on every live instance.
//! - `GET /metrics`: Prometheus exposition.
//! - `GET /healthz`: liveness, never behind the token.
//!
//! With `--admin-token-file`, every route but `/healthz` wants
//! `Authorization: Bearer <token>`, compared in constant time.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Proxy;
use crate::eviction::RemovalCause;
use crate::session::RemoveOutcome;

/// One row of `GET /sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub state: String,
    pub age_seconds: f64,
    pub idle_seconds: f64,
    pub requests: u64,
    pub bytes: u64,
    pub in_flight: u32,
    pub upstream: String,
    pub pid: Option<u32>,
    pub policy: String,
    /// The instance holding the session (in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Header of a cluster listing that lacks the other instances' sessions.
pub const PARTIAL_LISTING: &str = "shadowcat-cluster-partial";

/// One session's row, as of table time `now`.
pub(crate) fn session_row(
    now: crate::session::Micros,
    info: crate::session::SessionInfo,
    session: &super::session::ProxySession,
    policy: &str,
) -> SessionRow {
    let seconds = |micros: u64| micros as f64 / 1e6;
    SessionRow {
        id: info.external_id.as_deref().unwrap_or("-").to_owned(),
        state: info.state.to_string(),
        age_seconds: seconds(now.saturating_sub(info.created_at)),
        idle_seconds: seconds(now.saturating_sub(info.last_access)),
        requests: info.requests,
        bytes: info.bytes,
        in_flight: info.pins,
        upstream: session.upstream.describe(),
        pid: session.upstream.pid(),
        policy: policy.to_owned(),
        instance: None,
    }
}

/// What `POST /sessions/cleanup` and `DELETE /sessions/{id}` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Removed {
    pub removed: usize,
    /// Sessions whose removal waits for their requests in flight.
    pub deferred: usize,
    /// A cluster's cleanup: how many instances did it, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    /// A cluster's cleanup: live instances that could not be reached, whose
    /// sessions are left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreached: Vec<String>,
}

#[derive(Deserialize)]
struct CleanupQuery {
    #[serde(default)]
    all: bool,
}

/// The admin router; `token` is the bearer token, if one is required.
pub fn router(proxy: Arc<Proxy>, token: Option<String>) -> Router {
    let guarded = Router::new()
        .route("/sessions", get(list))
        .route("/sessions/{id}", delete(remove))
        .route("/sessions/cleanup", post(cleanup))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ));
    // The admin API lists session ids and deletes sessions: no web page may
    // use it either, whatever its token.
    Router::new()
        .merge(guarded)
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&proxy),
            super::origin::check_admin,
        ))
        .with_state(proxy)
}

/// The token of an `Authorization: Bearer TOKEN` value. The scheme's name
/// is case-insensitive (RFC 9110, 11.1), and clients do send `bearer`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = token.as_deref() {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Bearer")],
                "a bearer token is required (see --admin-token-file)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn list(State(proxy): State<Arc<Proxy>>) -> Response {
    let now = proxy.table.now();
    let policy = proxy.policy_name();
    let rows = proxy
        .table
        .inspect(|info, session| session_row(now, info, session, &policy));
    let Some(cluster) = &proxy.cluster else {
        return Json(rows).into_response();
    };
    let listing = cluster.list(rows).await;
    let mut response = Json(listing.rows).into_response();
    if !listing.complete {
        response.headers_mut().insert(
            PARTIAL_LISTING,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

async fn remove(State(proxy): State<Arc<Proxy>>, Path(id): Path<String>) -> Response {
    if proxy.table.lookup(&id).is_err() {
        if let Some(cluster) = &proxy.cluster {
            if let Some(done) = cluster.revoke(&id).await {
                return Json(done).into_response();
            }
        }
    }
    remove_local(&proxy, &id)
}

/// Removes session `id` of this instance's table.
pub(crate) fn remove_local(proxy: &Proxy, id: &str) -> Response {
    let Ok(session) = proxy.table.lookup(id) else {
        return (StatusCode::NOT_FOUND, format!("no session `{id}`\n")).into_response();
    };
    match proxy.close_session(session, RemovalCause::Deleted) {
        Ok(outcome) => Json(Removed {
            removed: usize::from(outcome == RemoveOutcome::Removed),
            deferred: usize::from(outcome == RemoveOutcome::Deferred),
            ..Removed::default()
        })
        .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, format!("no session `{id}`\n")).into_response(),
    }
}

async fn cleanup(State(proxy): State<Arc<Proxy>>, Query(query): Query<CleanupQuery>) -> Response {
    let Some(mut done) = cleanup_local(&proxy, query.all).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // As the listing shows every instance's sessions and a deletion reaches
    // any of them, a cleanup acts on every instance.
    if let Some(cluster) = &proxy.cluster {
        let others = cluster.cleanup_others(query.all).await;
        done.removed += others.removed;
        done.deferred += others.deferred;
        done.instances = Some(1 + others.instances.unwrap_or(0));
        done.unreached = others.unreached;
    }
    Json(done).into_response()
}

/// Expires what is due in this instance's table, or with `all` removes every
/// session; `None` if the work panicked.
pub(crate) async fn cleanup_local(proxy: &Arc<Proxy>, all: bool) -> Option<Removed> {
    let table = Arc::clone(&proxy.table);
    tokio::task::spawn_blocking(move || {
        if all {
            let before = table.len();
            let removed = table.remove_all(RemovalCause::Deleted);
            // What is left is busy: end its requests, as `session delete`
            // does, so that "everything" does not wait on a stuck upstream.
            // Only those closing: a session created meanwhile is not ours.
            let closing = table.inspect(|info, s| {
                (info.state == crate::session::SessionState::Closing).then(|| s.abort.clone())
            });
            for abort in closing.into_iter().flatten() {
                abort.cancel();
            }
            Removed {
                removed,
                deferred: before.saturating_sub(removed),
                ..Removed::default()
            }
        } else {
            Removed {
                removed: table.cleanup_expired(table.now()),
                ..Removed::default()
            }
        }
    })
    .await
    .ok()
}

async fn metrics(State(proxy): State<Arc<Proxy>>) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        proxy.metrics.render(),
    )
        .into_response()
}
