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
pub mod packed;

pub use native::{Fifo, HostLru};
pub use packed::PackedEvent;

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
    /// The proxy shut down.
    Shutdown = 5,
    /// Its upstream (child process, upstream HTTP session) failed.
    UpstreamFailed = 6,
}

impl RemovalCause {
    pub const ALL: [RemovalCause; 7] = [
        RemovalCause::ExpiredIdle,
        RemovalCause::ExpiredAge,
        RemovalCause::Evicted,
        RemovalCause::Closed,
        RemovalCause::Deleted,
        RemovalCause::Shutdown,
        RemovalCause::UpstreamFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemovalCause::ExpiredIdle => "expired-idle",
            RemovalCause::ExpiredAge => "expired-age",
            RemovalCause::Evicted => "evicted",
            RemovalCause::Closed => "closed",
            RemovalCause::Deleted => "deleted",
            RemovalCause::Shutdown => "shutdown",
            RemovalCause::UpstreamFailed => "upstream-failed",
        }
    }
}

/// Why the table refused a victim a policy proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Refusal {
    /// A request is in flight on it.
    Pinned = 0,
    /// No such live session (never existed, already removed, or proposed twice).
    NotLive = 1,
}

/// What happened to a session, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEvent {
    Inserted {
        id: SessionId,
        time: Micros,
        weight: u32,
        /// Stable across re-creations of the same client's session (the hash
        /// of the client key in the proxy, the object id in a trace replay), so
        /// a policy can recognise a returning client; 0 when unknown.
        key: u64,
        /// Fair-share group of the session; 0 is the default tenant.
        tenant: u32,
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
        /// The session's stable key, as its `Inserted` gave it: a policy
        /// that remembers the sessions it evicted (ghosts) keys them by it.
        key: u64,
    },
    /// A proposed victim the table did not evict.
    Refused {
        id: SessionId,
        time: Micros,
        reason: Refusal,
    },
}

/// One session's request counts over the last quota window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub id: SessionId,
    pub admitted: u64,
    pub rejected: u64,
    pub window_ms: u64,
    /// The session's stable key and tenant, for fair shares across sessions
    /// of one client or one tenant.
    pub key: u64,
    pub tenant: u32,
}

/// A policy's proposed rate limit for one session; the table clamps it to its
/// configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaAdjustment {
    pub id: SessionId,
    pub per_second: u32,
    pub burst: u32,
}

/// Live sessions in recency order (least recent first), to warm a fresh
/// policy instance. Under the table lock, the source first hands the policy
/// every event it held back, then calls its argument (the moment of the
/// snapshot: what the policy buffered so far is covered by it, and whatever
/// it buffers later happened after it), then takes the snapshot.
pub type LiveSessions = Box<dyn Fn(&mut dyn FnMut()) -> Vec<LiveSession> + Send + Sync>;

/// One live session as a warm-up replays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession {
    pub id: SessionId,
    pub last_access: Micros,
    pub weight: u32,
    pub key: u64,
    pub tenant: u32,
}

/// Whether a policy asks the table to call [`EvictionPolicy::flush`] once the
/// table lock is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushHint {
    Idle,
    FlushSoon,
}

/// What a victims call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VictimRequest<'a> {
    /// How many victims the table needs (more may be proposed; extra ones
    /// are ignored).
    pub count: usize,
    /// The session being created, when the table is making room for one.
    pub arriving: Option<Arriving>,
    /// Sessions the table sampled at random, for a policy that chooses among
    /// samples ([`EvictionPolicy::sample_size`]); empty otherwise.
    pub candidates: &'a [Candidate],
}

impl VictimRequest<'_> {
    pub fn count(count: usize) -> Self {
        Self {
            count,
            arriving: None,
            candidates: &[],
        }
    }
}

/// A live, unpinned session the table offers as a possible victim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: SessionId,
    pub last_access: Micros,
    /// Requests the session has made so far.
    pub requests: u64,
    pub key: u64,
}

/// The session a create is making room for (not yet in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arriving {
    pub key: u64,
    pub weight: u32,
}

/// Why a policy gave no answer; the table then decides from its own LRU
/// order and counts the decision under this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Unavailable {
    #[error("another caller was using the policy instance")]
    Busy,
    #[error("the policy faulted (trap, timeout, memory or error)")]
    Faulted,
    #[error("the policy is recovering from a fault or quarantined")]
    Recovering,
}

/// Most events the table holds back for a policy that takes them in batches
/// ([`EvictionPolicy::takes_batches`]) before handing them over: bounds the
/// memory held and the work done at once under the table lock.
pub const HELD_EVENTS: usize = 256;

/// Host-side interface every eviction policy implements: the native ones here and
/// the WebAssembly policy host.
pub trait EvictionPolicy: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// Called under the table lock for every event; cheap, leaf locks only.
    fn record(&self, event: PolicyEvent) -> FlushHint;

    /// Whether the table may hold this policy's events back and hand them
    /// over in batches through [`Self::record_batch`], rather than calling
    /// [`Self::record`] for each. The table then appends events under its own
    /// lock alone, and hands them over, in order and still under that lock,
    /// once [`HELD_EVENTS`] are held and before it asks the policy anything
    /// (`victims`, `ready_victims`, `unused_victims`, `flush`, `maintain`,
    /// `adjust_quotas`). For a policy whose `record` takes a lock of its own,
    /// that is one lock round per batch instead of one per request.
    fn takes_batches(&self) -> bool {
        false
    }

    /// Several events, oldest first, packed ([`packed`]), under the table
    /// lock: leaf locks only.
    fn record_batch(&self, events: &[PackedEvent]) -> FlushHint {
        events
            .iter()
            .filter_map(|&event| packed::unpack(event))
            .fold(FlushHint::Idle, |hint, event| match self.record(event) {
                FlushHint::FlushSoon => FlushHint::FlushSoon,
                FlushHint::Idle => hint,
            })
    }

    /// [`Self::record_batch`] then [`Self::ready_victims`], in one call so
    /// that a policy can do both under one lock of its own.
    fn record_then_ready(
        &self,
        events: &[PackedEvent],
        arriving: Option<Arriving>,
        count: usize,
        out: &mut Vec<SessionId>,
    ) -> FlushHint {
        let hint = self.record_batch(events);
        self.ready_victims(arriving, count, out);
        hint
    }

    /// Proposes victims, best first, appended to `out`. Proposing nothing
    /// valid means "use the table's LRU order"; `Err` says why there was no
    /// answer at all.
    fn victims(
        &self,
        request: VictimRequest<'_>,
        out: &mut Vec<SessionId>,
    ) -> Result<(), Unavailable>;

    /// How many random candidates the table should sample for each decision
    /// (0: the policy knows its sessions and needs none).
    fn sample_size(&self) -> usize {
        0
    }

    /// Whether the policy is told of refused proposals and may propose better
    /// when asked again (otherwise asking again would only repeat them).
    fn learns_from_refusals(&self) -> bool {
        false
    }

    /// Victims the policy already chose (prefetched while its order holds),
    /// handed out under the table lock without a call into the policy: leaf
    /// locks only. Proposing nothing means "ask through `victims`", which a
    /// policy whose order depends on the arrival (`arriving`, when room is
    /// made for one) may want.
    fn ready_victims(&self, _arriving: Option<Arriving>, _count: usize, _out: &mut Vec<SessionId>) {
    }

    /// Proposals the table did not need, in proposal order: it made room
    /// before reaching them (byte mode asks for an estimated count). A policy
    /// that chose them ahead keeps them as its next victims, unless an event
    /// has named them since; called under the table lock, leaf locks only.
    fn unused_victims(&self, _unused: &[SessionId]) {}

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
