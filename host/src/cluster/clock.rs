//! Cluster time: this host's wall clock corrected by its offset from Redis's
//! `TIME`, learned at every heartbeat. Hop timestamps are checked in cluster
//! time, so instances whose clocks disagree still accept each other's hops.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
pub struct ClusterClock {
    offset_ms: AtomicI64,
    synced: AtomicBool,
}

/// This host's wall clock, in milliseconds since the Unix epoch.
pub fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ClusterClock {
    /// Cluster time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        local_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Records one reading of Redis's clock, `redis_ms`, taken between the
    /// local readings `sent_ms` and `received_ms` (the midpoint is the best
    /// guess of when Redis read it).
    pub fn observe(&self, sent_ms: i64, redis_ms: i64, received_ms: i64) {
        let midpoint = sent_ms + (received_ms - sent_ms) / 2;
        self.offset_ms.store(redis_ms - midpoint, Ordering::Relaxed);
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Milliseconds to add to this host's clock to get cluster time.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Whether Redis has been read at least once (before that, cluster time
    /// is the local clock).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_clock_takes_the_offset_from_the_midpoint() {
        let clock = ClusterClock::default();
        assert!(!clock.synced());
        clock.observe(1_000, 3_600_000 + 1_010, 1_020);
        assert_eq!(clock.offset_ms(), 3_600_000);
        assert!(clock.synced());
        let skewed = clock.now_ms() - local_ms();
        assert!((3_599_000..=3_601_000).contains(&skewed), "{skewed}");
    }
}
