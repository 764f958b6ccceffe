//! Backpressure: a token bucket per session and a global bound on requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::RateLimit;

/// One session's token bucket (GCRA, lock-free). Owned by the session's entry, so
/// it is freed with the session: there is no keyed limiter map that could outgrow
/// the table.
pub(crate) struct SessionLimiter {
    limiter: DefaultDirectRateLimiter,
    limit: RateLimit,
}

impl SessionLimiter {
    /// Every limiter shares the table's clock: creating a clock per limiter
    /// costs a calibration (microseconds) on every session create.
    pub fn new(limit: RateLimit, clock: &DefaultClock) -> Box<Self> {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Box::new(Self {
            limiter: DefaultDirectRateLimiter::direct_with_clock(quota, clock.clone()),
            limit,
        })
    }

    /// `Err(retry_after)` when the bucket is empty.
    pub fn check(&self, clock: &DefaultClock) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(clock.now()))
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }
}

/// Counts requests in flight across all sessions and refuses past a bound.
#[derive(Debug)]
pub(crate) struct InFlight {
    current: AtomicUsize,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self {
            current: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot, or returns how many are in flight when none is free.
    pub fn try_acquire(&self) -> Result<(), usize> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| ())
    }

    pub fn release(&self) {
        // A release without an acquire would be a table bug; saturating keeps the
        // gauge meaningful rather than wrapping.
        let _ = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}
