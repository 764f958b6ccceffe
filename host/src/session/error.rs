//! Errors of the session table.

use std::time::Duration;

use super::{SessionId, SessionState};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TableError {
    #[error("unknown session {0}: it never existed or has been removed")]
    UnknownSession(SessionId),
    #[error("unknown session id `{0}`: it never existed or has been removed")]
    UnknownExternalId(String),
    #[error("session id `{0}` is already in use")]
    DuplicateExternalId(String),
    #[error("an external session id must not be empty")]
    EmptyExternalId,
    #[error("session {id} is {state}: it accepts no new requests")]
    NotAcceptingRequests { id: SessionId, state: SessionState },
    #[error("invalid state transition for session {id}: {from} -> {to}")]
    InvalidTransition {
        id: SessionId,
        from: SessionState,
        to: SessionState,
    },
    #[error(
        "session table full: {live} sessions live (bound {max_sessions}), none evictable \
         ({pinned} have requests in flight or a handshake under way)"
    )]
    Capacity {
        live: usize,
        max_sessions: usize,
        pinned: usize,
    },
    #[error("session weight {weight} exceeds the table's whole weight capacity {capacity}")]
    TooLarge { weight: u64, capacity: u64 },
    #[error("session {id} is rate limited: retry after {retry_after:?}")]
    RateLimited {
        id: SessionId,
        retry_after: Duration,
    },
    #[error("overloaded: {in_flight} requests in flight (bound {max_in_flight}); retry shortly")]
    Overloaded {
        in_flight: usize,
        max_in_flight: usize,
    },
    #[error("session {0} has no request in flight to end")]
    NotPinned(SessionId),
    #[error("no session slot left: every slot's generations are spent")]
    SlotsExhausted,
}
