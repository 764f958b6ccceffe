//! The session table: a bounded, deadlock-free index of MCP client sessions.
//!
//! See [`SessionTable`] for the API and the lock order.

mod cleanup;
mod clock;
mod core;
mod error;
mod expiry;
mod flusher;
mod id;
mod limiter;
mod metrics;
mod names;
pub(crate) mod recency;
mod signal;
mod table;
mod teardown;

use std::fmt;
use std::sync::Arc;

pub use self::core::{RemoveOutcome, TableStats};
pub use cleanup::CleanupTask;
pub use clock::{Clock, Micros};
pub use error::TableError;
pub use id::SessionId;
pub use metrics::{FallbackReason, MetricsSnapshot};
pub use signal::Attachment;
pub use table::{
    Created, ExternalId, FlushMode, NewSession, Rejected, RequestGuard, SessionTable,
    ShutdownReport, TableBuilder,
};
pub use teardown::{Teardown, TeardownFuture};

use crate::eviction::RemovalCause;

/// Life cycle of a session. Only `Initializing -> Active`, `* -> Closing` (a
/// removal deferred until in-flight requests finish) and `* -> Closed` (removed)
/// happen; nothing returns to an earlier state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Created; the MCP initialize handshake has not completed.
    Initializing,
    Active,
    /// Removal requested while requests were in flight; refuses new requests.
    Closing,
    /// Removed from the table.
    Closed,
}

impl SessionState {
    pub fn accepts_requests(self) -> bool {
        matches!(self, SessionState::Initializing | SessionState::Active)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Initializing => "initializing",
            SessionState::Active => "active",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
        })
    }
}

/// A copy of one session's bookkeeping (no upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The compact handle; it never leaves the process.
    pub id: SessionId,
    /// The unguessable name clients and operators use; `None` for sessions
    /// reached only by their handle (trace replay).
    pub external_id: Option<Arc<str>>,
    /// Stable across re-creations for the same client (see [`NewSession::key`]).
    pub key: u64,
    pub tenant: u32,
    pub state: SessionState,
    pub created_at: Micros,
    pub last_access: Micros,
    pub requests: u64,
    pub bytes: u64,
    /// Pins: requests in flight on this session. A pinned session is never
    /// evicted or expired; its removal waits for the last pin.
    pub pins: u32,
    /// Kept from eviction until its handshake completes (see
    /// [`NewSession::shield_handshake`]).
    pub shielded: bool,
    pub weight: u32,
}

/// A session that has left the table, handed out (with its upstream) after the
/// table lock is released so that tearing it down blocks nobody.
#[derive(Debug)]
pub struct RemovedSession<U> {
    pub info: SessionInfo,
    pub cause: RemovalCause,
    /// Table time of the removal.
    pub removed_at: Micros,
    pub upstream: U,
}
