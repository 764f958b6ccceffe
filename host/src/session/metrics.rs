//! Session table metrics.
//!
//! Counters and gauges move only on real transitions and only under the table
//! lock that performs the transition, so at any quiescent point
//! `created == live + all removals` and `active` equals a recount of sessions in
//! the active state. The gauge is signed so that a bug shows up as a negative
//! value in a test instead of wrapping to a huge number.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::eviction::{RemovalCause, Unavailable};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub created: AtomicU64,
    pub active: AtomicI64,
    removals: [AtomicU64; RemovalCause::ALL.len()],
    pub rejected_rate_limited: AtomicU64,
    pub rejected_capacity: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    pub teardown_failures: AtomicU64,
    pub cleanup_rounds: AtomicU64,
    pub cleanup_panics: AtomicU64,
    pub invalid_victims: AtomicU64,
    pub fallback_victims: AtomicU64,
    /// Decisions taken from the host's order, by why the policy had no say.
    fallback_decisions: [AtomicU64; FallbackReason::ALL.len()],
}

/// Why the table chose a victim from its own LRU order instead of the policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// Another caller held the policy instance past the wait bound.
    Busy,
    /// The call faulted (trap, timeout, memory, or an error the policy returned).
    Faulted,
    /// The policy is being recreated after a fault, or is quarantined.
    Recovering,
    /// The policy answered, but with too few valid victims.
    Short,
}

impl FallbackReason {
    pub const ALL: [FallbackReason; 4] = [
        FallbackReason::Busy,
        FallbackReason::Faulted,
        FallbackReason::Recovering,
        FallbackReason::Short,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Busy => "busy",
            FallbackReason::Faulted => "faulted",
            FallbackReason::Recovering => "recovering",
            FallbackReason::Short => "short",
        }
    }
}

impl From<Unavailable> for FallbackReason {
    fn from(why: Unavailable) -> Self {
        match why {
            Unavailable::Busy => FallbackReason::Busy,
            Unavailable::Faulted => FallbackReason::Faulted,
            Unavailable::Recovering => FallbackReason::Recovering,
        }
    }
}

fn inc(counter: &AtomicU64) {
    // Release pairs with the snapshot's Acquire loads (see `snapshot`).
    counter.fetch_add(1, Ordering::Release);
}

/// The increment for counters that only the holder of the table lock writes:
/// a plain load and store instead of a locked read-modify-write. With one
/// writer at a time it is exact, and readers still see whole values. On the
/// table's hot path a locked instruction costs as much as a cache miss and
/// stalls the misses around it, and a replay's create pays for two of them.
fn bump_under_lock(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
}

impl Metrics {
    /// Under the table lock only (see [`bump_under_lock`]).
    pub fn count_created(&self) {
        bump_under_lock(&self.created);
    }

    /// Under the table lock only (see [`bump_under_lock`]).
    pub fn count_removal(&self, cause: RemovalCause) {
        bump_under_lock(&self.removals[cause as usize]);
    }

    /// Moves the active gauge; under the table lock only, as
    /// [`bump_under_lock`] explains.
    pub fn shift_active(&self, delta: i64) {
        let active = self.active.load(Ordering::Relaxed);
        self.active.store(active + delta, Ordering::Release);
    }

    pub fn count_fallback(&self, reason: FallbackReason) {
        inc(&self.fallback_decisions[reason as usize]);
    }

    pub fn inc(&self, pick: impl FnOnce(&Self) -> &AtomicU64) {
        inc(pick(self));
    }

    /// Reads in an order that keeps the snapshot's invariants even while other
    /// threads write (the reads are not one atomic step): the active gauge and
    /// the removal counters first, `created` last. Every counter only grows and
    /// each is bounded by `created` at every instant, so a later read of
    /// `created` is at least as large: the snapshot never shows more active or
    /// removed sessions than created.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Acquire);
        let active = self.active.load(Ordering::Acquire);
        let removals = self.removals.each_ref().map(load);
        let created = load(&self.created);
        let removed = |cause: RemovalCause| removals[cause as usize];
        let fallbacks = self.fallback_decisions.each_ref().map(load);
        MetricsSnapshot {
            active,
            created,
            expired_idle: removed(RemovalCause::ExpiredIdle),
            expired_age: removed(RemovalCause::ExpiredAge),
            evicted: removed(RemovalCause::Evicted),
            closed: removed(RemovalCause::Closed),
            deleted_by_admin: removed(RemovalCause::Deleted),
            shutdown: removed(RemovalCause::Shutdown),
            upstream_failed: removed(RemovalCause::UpstreamFailed),
            rejected_rate_limited: load(&self.rejected_rate_limited),
            rejected_capacity: load(&self.rejected_capacity),
            rejected_overloaded: load(&self.rejected_overloaded),
            teardown_failures: load(&self.teardown_failures),
            cleanup_rounds: load(&self.cleanup_rounds),
            cleanup_panics: load(&self.cleanup_panics),
            invalid_victims: load(&self.invalid_victims),
            fallback_victims: load(&self.fallback_victims),
            fallback_busy: fallbacks[FallbackReason::Busy as usize],
            fallback_faulted: fallbacks[FallbackReason::Faulted as usize],
            fallback_recovering: fallbacks[FallbackReason::Recovering as usize],
            fallback_short: fallbacks[FallbackReason::Short as usize],
        }
    }
}

/// A point-in-time copy of the table's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub created: u64,
    /// Sessions currently in the active state.
    pub active: i64,
    pub expired_idle: u64,
    pub expired_age: u64,
    pub evicted: u64,
    pub closed: u64,
    pub deleted_by_admin: u64,
    pub shutdown: u64,
    pub upstream_failed: u64,
    pub rejected_rate_limited: u64,
    pub rejected_capacity: u64,
    pub rejected_overloaded: u64,
    pub teardown_failures: u64,
    pub cleanup_rounds: u64,
    pub cleanup_panics: u64,
    /// Victims proposed by the policy that were not live, pinned or repeated.
    pub invalid_victims: u64,
    /// Victims the host chose from its own LRU order because the policy fell short.
    pub fallback_victims: u64,
    /// Eviction decisions the host took over, by reason (see [`FallbackReason`]).
    pub fallback_busy: u64,
    pub fallback_faulted: u64,
    pub fallback_recovering: u64,
    pub fallback_short: u64,
}

impl MetricsSnapshot {
    pub fn removed(&self) -> u64 {
        self.expired_idle
            + self.expired_age
            + self.evicted
            + self.closed
            + self.deleted_by_admin
            + self.shutdown
            + self.upstream_failed
    }

    /// Sessions removed for `cause`.
    pub fn removed_by(&self, cause: RemovalCause) -> u64 {
        match cause {
            RemovalCause::ExpiredIdle => self.expired_idle,
            RemovalCause::ExpiredAge => self.expired_age,
            RemovalCause::Evicted => self.evicted,
            RemovalCause::Closed => self.closed,
            RemovalCause::Deleted => self.deleted_by_admin,
            RemovalCause::Shutdown => self.shutdown,
            RemovalCause::UpstreamFailed => self.upstream_failed,
        }
    }

    /// Decisions taken over from the policy for `reason`.
    pub fn fallbacks_by(&self, reason: FallbackReason) -> u64 {
        match reason {
            FallbackReason::Busy => self.fallback_busy,
            FallbackReason::Faulted => self.fallback_faulted,
            FallbackReason::Recovering => self.fallback_recovering,
            FallbackReason::Short => self.fallback_short,
        }
    }
}
