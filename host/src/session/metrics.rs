//! Session table metrics.
//!
//! Counters and gauges move only on real transitions and only under the table
//! lock that performs the transition, so at any quiescent point
//! `created == live + all removals` and `active` equals a recount of sessions in
//! the active state. The gauge is signed so that a bug shows up as a negative
//! value in a test instead of wrapping to a huge number.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::eviction::RemovalCause;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub created: AtomicU64,
    pub active: AtomicI64,
    pub expired_idle: AtomicU64,
    pub expired_age: AtomicU64,
    pub evicted: AtomicU64,
    pub closed: AtomicU64,
    pub deleted_by_admin: AtomicU64,
    pub rejected_rate_limited: AtomicU64,
    pub rejected_capacity: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    pub teardown_failures: AtomicU64,
    pub cleanup_rounds: AtomicU64,
    pub cleanup_panics: AtomicU64,
    pub invalid_victims: AtomicU64,
    pub fallback_victims: AtomicU64,
}

fn inc(counter: &AtomicU64) {
    // Release pairs with the snapshot's Acquire loads (see `snapshot`).
    counter.fetch_add(1, Ordering::Release);
}

impl Metrics {
    pub fn count_removal(&self, cause: RemovalCause) {
        inc(match cause {
            RemovalCause::ExpiredIdle => &self.expired_idle,
            RemovalCause::ExpiredAge => &self.expired_age,
            RemovalCause::Evicted => &self.evicted,
            RemovalCause::Closed => &self.closed,
            RemovalCause::Deleted => &self.deleted_by_admin,
        });
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
        let expired_idle = load(&self.expired_idle);
        let expired_age = load(&self.expired_age);
        let evicted = load(&self.evicted);
        let closed = load(&self.closed);
        let deleted_by_admin = load(&self.deleted_by_admin);
        let created = load(&self.created);
        MetricsSnapshot {
            active,
            created,
            expired_idle,
            expired_age,
            evicted,
            closed,
            deleted_by_admin,
            rejected_rate_limited: load(&self.rejected_rate_limited),
            rejected_capacity: load(&self.rejected_capacity),
            rejected_overloaded: load(&self.rejected_overloaded),
            teardown_failures: load(&self.teardown_failures),
            cleanup_rounds: load(&self.cleanup_rounds),
            cleanup_panics: load(&self.cleanup_panics),
            invalid_victims: load(&self.invalid_victims),
            fallback_victims: load(&self.fallback_victims),
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
}

impl MetricsSnapshot {
    pub fn removed(&self) -> u64 {
        self.expired_idle + self.expired_age + self.evicted + self.closed + self.deleted_by_admin
    }
}
