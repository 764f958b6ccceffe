//! Backpressure: a token bucket per session and a global bound on requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::clock::Micros;
use crate::config::RateLimit;

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// One session's token bucket, as the generic cell rate algorithm (GCRA): the
/// whole state is the theoretical arrival time of the next request.
///
/// Written here rather than taken from `governor` (which the policy log gate
/// uses) for two reasons. The table needs the quota of a live bucket to change
/// without refilling it (a policy adjusts quotas every cleanup round, and a
/// refill on each adjustment would hand every session a fresh burst), and
/// `governor` fixes the quota at construction. And the bucket must run on the
/// table's clock, which a trace replay or a paused-time test drives, with no
/// clock reads of its own. Under the table lock, `governor`'s lock-free state
/// buys nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gcra {
    limit: RateLimit,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of real time the arrival time may run: `interval` times
    /// `burst - 1`.
    tolerance: u64,
    /// Theoretical arrival time of the next request, in table nanoseconds.
    tat: u64,
}

impl Gcra {
    pub fn new(limit: RateLimit) -> Self {
        let (interval, tolerance) = Self::spacing(limit);
        Self {
            limit,
            interval,
            tolerance,
            tat: 0,
        }
    }

    fn spacing(limit: RateLimit) -> (u64, u64) {
        let interval = NANOS_PER_SECOND.div_ceil(u64::from(limit.per_second.get()));
        (
            interval,
            interval.saturating_mul(u64::from(limit.burst.get()) - 1),
        )
    }

    /// Admits a request at `now`, or says how long until one would be admitted.
    pub fn check(&mut self, now: Micros) -> Result<(), Duration> {
        let now = now.saturating_mul(NANOS_PER_MICRO);
        let tat = self.tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(Duration::from_nanos(ahead - self.tolerance));
        }
        self.tat = tat.saturating_add(self.interval);
        Ok(())
    }

    /// Changes the quota in place at `now`: the requests the bucket still
    /// holds against the session stay counted (as requests, re-spaced at the
    /// new rate), so a new quota neither refills an emptied bucket nor forgets
    /// a burst.
    pub fn set_limit(&mut self, limit: RateLimit, now: Micros) {
        let now = now.saturating_mul(NANOS_PER_MICRO);
        let outstanding = self.tat.saturating_sub(now);
        let (interval, tolerance) = Self::spacing(limit);
        let respaced = u128::from(outstanding) * u128::from(interval) / u128::from(self.interval);
        self.tat = now.saturating_add(u64::try_from(respaced).unwrap_or(u64::MAX));
        self.limit = limit;
        self.interval = interval;
        self.tolerance = tolerance;
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

    pub fn release(&self, slots: usize) {
        // A release without an acquire would be a table bug; saturating keeps the
        // gauge meaningful rather than wrapping.
        let _ = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(slots))
            });
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: NonZeroU32::new(per_second).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
        }
    }

    const SECOND: Micros = 1_000_000;

    #[test]
    fn session_limiter_admits_a_burst_then_the_rate() {
        let mut bucket = Gcra::new(limit(10, 5));
        let start = 7 * SECOND;
        for i in 0..5 {
            assert_eq!(bucket.check(start), Ok(()), "burst request {i}");
        }
        let wait = bucket.check(start).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(bucket.check(start + 99_999).map_err(|_| ()), Err(()));
        assert_eq!(bucket.check(start + 100_000), Ok(()));
        // A second later, ten more have been earned, capped by the burst.
        let later = start + 2 * SECOND;
        let admitted = (0..20).filter(|_| bucket.check(later).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn session_limiter_quota_change_keeps_what_was_spent() {
        let mut bucket = Gcra::new(limit(1, 10));
        for _ in 0..10 {
            bucket.check(0).expect("burst");
        }
        assert!(bucket.check(0).is_err());
        // A larger quota must not hand out a fresh burst of 20.
        bucket.set_limit(limit(1, 20), 0);
        let admitted = (0..30).filter(|_| bucket.check(0).is_ok()).count();
        assert_eq!(admitted, 10, "only the headroom the larger burst adds");
        assert_eq!(bucket.limit(), limit(1, 20));
        // A smaller quota over a full bucket makes the next request wait.
        let mut bucket = Gcra::new(limit(100, 50));
        for _ in 0..40 {
            bucket.check(0).expect("burst");
        }
        bucket.set_limit(limit(100, 10), 0);
        assert!(bucket.check(0).is_err(), "40 spent exceeds the new burst");
        // A faster rate over an emptied bucket: what was spent is re-spaced at
        // the new rate, so requests come back sooner, not all at once.
        let mut bucket = Gcra::new(limit(1, 2));
        bucket.check(0).expect("burst");
        bucket.check(0).expect("burst");
        bucket.set_limit(limit(1_000, 100), 0);
        let admitted = (0..200).filter(|_| bucket.check(0).is_ok()).count();
        assert_eq!(admitted, 98, "a burst of 100 minus the 2 already spent");
    }
}
