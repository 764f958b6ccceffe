//! The operator's API, on its own listener (loopback by default):
//!
//! - `GET /sessions`: every session with its state, age, idle time, requests,
//!   bytes, upstream and policy.
//! - `DELETE /sessions/{id}`: remove one (it leaves when its requests end).
//! - `POST /sessions/cleanup`: expire what is due now; `?all=true` removes
//!   every session.
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
}

/// What `POST /sessions/cleanup` and `DELETE /sessions/{id}` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Removed {
    pub removed: usize,
    /// Sessions whose removal waits for their requests in flight.
    pub deferred: usize,
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
    Router::new()
        .merge(guarded)
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(proxy)
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
            .and_then(|v| v.strip_prefix("Bearer "))
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

async fn list(State(proxy): State<Arc<Proxy>>) -> Json<Vec<SessionRow>> {
    let now = proxy.table.now();
    let seconds = |micros: u64| micros as f64 / 1e6;
    let policy = proxy.policy_name.clone();
    let rows = proxy.table.inspect(|info, session| SessionRow {
        id: info.external_id.as_deref().unwrap_or("-").to_owned(),
        state: info.state.to_string(),
        age_seconds: seconds(now.saturating_sub(info.created_at)),
        idle_seconds: seconds(now.saturating_sub(info.last_access)),
        requests: info.requests,
        bytes: info.bytes,
        in_flight: info.pins,
        upstream: session.upstream.describe(),
        pid: session.upstream.pid(),
        policy: policy.clone(),
    });
    Json(rows)
}

async fn remove(State(proxy): State<Arc<Proxy>>, Path(id): Path<String>) -> Response {
    let Ok(session) = proxy.table.lookup(&id) else {
        return (StatusCode::NOT_FOUND, format!("no session `{id}`\n")).into_response();
    };
    match proxy.table.remove(session, RemovalCause::Deleted) {
        Ok(outcome) => Json(Removed {
            removed: usize::from(outcome == RemoveOutcome::Removed),
            deferred: usize::from(outcome == RemoveOutcome::Deferred),
        })
        .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, format!("no session `{id}`\n")).into_response(),
    }
}

async fn cleanup(State(proxy): State<Arc<Proxy>>, Query(query): Query<CleanupQuery>) -> Response {
    let table = Arc::clone(&proxy.table);
    let work = tokio::task::spawn_blocking(move || {
        if query.all {
            let before = table.len();
            let removed = table.remove_all(RemovalCause::Deleted);
            Removed {
                removed,
                deferred: before.saturating_sub(removed),
            }
        } else {
            let removed = table.cleanup_expired(table.now());
            Removed {
                removed,
                deferred: 0,
            }
        }
    })
    .await;
    match work {
        Ok(done) => Json(done).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
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
