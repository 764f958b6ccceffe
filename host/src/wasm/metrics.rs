//! Metrics of a WebAssembly policy: calls, faults by kind, fallbacks, reloads and
//! a call-latency histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What went wrong in a policy call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A trap: a panic, `unreachable`, an out-of-bounds access.
    Trap,
    /// The epoch deadline passed (an infinite or too long loop).
    Timeout,
    /// The memory cap refused a `memory.grow` and the guest died of it.
    Memory,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
        }
    }
}

const BUCKETS: usize = 40;

/// Log2 buckets of nanoseconds: bucket i holds latencies in [2^i, 2^(i+1)).
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let bucket = (63 - nanos.leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(1u64 << (i + 1).min(63)));
            }
        }
        None
    }
}

#[derive(Debug, Default)]
pub struct PolicyMetrics {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory_faults: AtomicU64,
    /// Calls refused memory past the limit that answered anyway: the policy
    /// carried on without what it asked for (not a fault, but its choices may
    /// no longer be its design's).
    pub memory_refusals: AtomicU64,
    /// `Err` answers: soft failures that cost the one call they answer, not
    /// faults (the instance stays, nothing counts toward quarantine).
    pub guest_errors: AtomicU64,
    /// Victims proposed within the count asked for (the table still validates them).
    pub proposed_victims: AtomicU64,
    /// Victims beyond the count asked for (ignored).
    pub excess_victims: AtomicU64,
    /// Victims an answer had proposed already (dropped: invalid proposals
    /// that the table, which stops once it has room, would mostly not see).
    pub repeated_victims: AtomicU64,
    /// Decisions served from the host's LRU because the policy was faulted,
    /// quarantined, busy or answered with an error.
    pub fallbacks: AtomicU64,
    /// Fresh instances created after a fault.
    pub reinstantiations: AtomicU64,
    pub hot_reloads: AtomicU64,
    pub hot_reload_failures: AtomicU64,
    pub quarantines: AtomicU64,
    pub events_delivered: AtomicU64,
    pub quota_adjustments: AtomicU64,
    pub log_lines_dropped: AtomicU64,
    /// Every eighth call's duration (the first included).
    pub latency: LatencyHistogram,
}

impl PolicyMetrics {
    pub fn count_fault(&self, kind: FaultKind) {
        let counter = match kind {
            FaultKind::Trap => &self.traps,
            FaultKind::Timeout => &self.timeouts,
            FaultKind::Memory => &self.memory_faults,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PolicyMetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PolicyMetricsSnapshot {
            calls: load(&self.calls),
            traps: load(&self.traps),
            timeouts: load(&self.timeouts),
            memory_faults: load(&self.memory_faults),
            memory_refusals: load(&self.memory_refusals),
            guest_errors: load(&self.guest_errors),
            proposed_victims: load(&self.proposed_victims),
            excess_victims: load(&self.excess_victims),
            repeated_victims: load(&self.repeated_victims),
            fallbacks: load(&self.fallbacks),
            reinstantiations: load(&self.reinstantiations),
            hot_reloads: load(&self.hot_reloads),
            hot_reload_failures: load(&self.hot_reload_failures),
            quarantines: load(&self.quarantines),
            events_delivered: load(&self.events_delivered),
            quota_adjustments: load(&self.quota_adjustments),
            log_lines_dropped: load(&self.log_lines_dropped),
            call_p50: self.latency.quantile(0.5),
            call_p99: self.latency.quantile(0.99),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyMetricsSnapshot {
    pub calls: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_faults: u64,
    /// Calls refused memory that answered anyway (not in [`Self::faults`]).
    pub memory_refusals: u64,
    /// `Err` answers (soft failures; not in [`Self::faults`]).
    pub guest_errors: u64,
    pub proposed_victims: u64,
    pub excess_victims: u64,
    /// Repeats within one answer, in [`Self::proposed_victims`] (not in the
    /// table's invalid count).
    pub repeated_victims: u64,
    pub fallbacks: u64,
    pub reinstantiations: u64,
    pub hot_reloads: u64,
    pub hot_reload_failures: u64,
    pub quarantines: u64,
    pub events_delivered: u64,
    pub quota_adjustments: u64,
    pub log_lines_dropped: u64,
    /// Quantiles of a one-in-eight sample of the calls.
    pub call_p50: Option<Duration>,
    pub call_p99: Option<Duration>,
}

impl PolicyMetricsSnapshot {
    /// Calls that cost the instance: traps, timeouts and memory faults. A
    /// guest's `Err` is not one (see [`Self::guest_errors`]).
    pub fn faults(&self) -> u64 {
        self.traps + self.timeouts + self.memory_faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_latency_histogram_quantiles_bound_the_samples() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..99 {
            h.record(Duration::from_nanos(300));
        }
        h.record(Duration::from_micros(50));
        assert_eq!(h.quantile(0.5), Some(Duration::from_nanos(512)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_nanos(512)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_nanos(65_536)));
    }
}
