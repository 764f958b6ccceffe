//! Eviction policies as the session table sees them.
//!
//! The table owns the truth (which sessions exist, which are pinned) and keeps an
//! LRU index of its own; a policy only *proposes* victims. Every proposal is
//! validated by the table, and any shortfall is filled from the table's LRU order,
//! so a wrong or absent answer costs accuracy, never correctness.
//!
//! Lock discipline (the reason this trait is split the way it is):
//! - [`EvictionPolicy::record`] runs *under* the table lock, so events reach the
//!   policy in exactly the order the table applied them. It must be cheap and may
//!   take only leaf locks (locks under which nothing else is locked).
//! - [`EvictionPolicy::victims`], [`EvictionPolicy::flush`] and
//!   [`EvictionPolicy::maintain`] run with *no* table lock held: they may be slow
//!   (a WebAssembly call) and must never call back into the table.

mod native;

pub use native::{Fifo, HostLru};

use crate::session::{Micros, SessionId};

/// Why a session left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RemovalCause {
    ExpiredIdle = 0,
    ExpiredAge = 1,
    Evicted = 2,
    /// The client ended it (e.g. an HTTP DELETE).
    Closed = 3,
    /// An operator removed it.
    Deleted = 4,
}

impl RemovalCause {
    pub const ALL: [RemovalCause; 5] = [
        RemovalCause::ExpiredIdle,
        RemovalCause::ExpiredAge,
        RemovalCause::Evicted,
        RemovalCause::Closed,
        RemovalCause::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemovalCause::ExpiredIdle => "expired-idle",
            RemovalCause::ExpiredAge => "expired-age",
            RemovalCause::Evicted => "evicted",
            RemovalCause::Closed => "closed",
            RemovalCause::Deleted => "deleted",
        }
    }
}

/// What happened to a session, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEvent {
    Inserted {
        id: SessionId,
        time: Micros,
        weight: u32,
    },
    Accessed {
        id: SessionId,
        time: Micros,
        weight: u32,
    },
    Removed {
        id: SessionId,
        time: Micros,
        cause: RemovalCause,
    },
}

/// One session's request counts over the last quota window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub id: SessionId,
    pub admitted: u64,
    pub rejected: u64,
    pub window_ms: u64,
}

/// A policy's proposed rate limit for one session; the table clamps it to its
/// configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaAdjustment {
    pub id: SessionId,
    pub per_second: u32,
    pub burst: u32,
}

/// Live sessions in recency order (least recent first): id, last access, weight.
pub type LiveSessions = Box<dyn Fn() -> Vec<(SessionId, Micros, u32)> + Send + Sync>;

/// Whether a policy asks the table to call [`EvictionPolicy::flush`] once the
/// table lock is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushHint {
    Idle,
    FlushSoon,
}

/// Host-side interface every eviction policy implements: the native ones here and
/// the WebAssembly policy host.
pub trait EvictionPolicy: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// Called under the table lock for every event; cheap, leaf locks only.
    fn record(&self, event: PolicyEvent) -> FlushHint;

    /// Proposes up to `count` sessions to evict, best first, appended to `out`.
    /// Proposing nothing means "use the table's LRU order".
    fn victims(&self, count: usize, out: &mut Vec<SessionId>);

    /// Delivers buffered events; called without the table lock.
    fn flush(&self) {}

    /// Periodic tick from the table's cleanup task.
    fn maintain(&self, _now: Micros) {}

    /// Proposes rate limits given recent usage; proposing nothing keeps them.
    fn adjust_quotas(&self, _usage: &[QuotaUsage], _out: &mut Vec<QuotaAdjustment>) {}

    /// Gives the policy a way to list the table's live sessions (least recent
    /// first), to rebuild its state in a fresh instance. Called once by
    /// [`crate::session::TableBuilder::build_shared`].
    fn attach_live_sessions(&self, _source: LiveSessions) {}

    /// True when the policy's choice *is* the table's LRU order, so the table can
    /// skip asking it (and the second lock round trip that asking costs).
    fn defers_to_host_order(&self) -> bool {
        false
    }
}
