//! What a fault means for a policy: retry after a backoff, or quarantine.
//!
//! Counting only consecutive faults lets an intermittent fault escape: a guest
//! that traps on every 7th call answers a few calls after each recovery, which
//! resets any streak, and so it faults forever (dozens of times a second, each
//! fault costing a new instance and a full warm-up replay). So the history also
//! keeps the faults among the last [`PolicyLimits::fault_window`] calls, and
//! quarantines when they reach [`PolicyLimits::max_window_faults`]. The window
//! counts calls, not seconds, so the verdict for a given sequence of calls does
//! not depend on how fast the machine runs them.
//!
//! The rate-limited fault log lives here too: a fault is one WARN line (its
//! backtrace goes to DEBUG), and a policy that faults in a loop cannot flood
//! stderr.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

use super::engine::PolicyLimits;

/// What to do after a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Recreate the instance once `backoff` has passed.
    Retry { backoff: Duration },
    /// Give up until the policy is reloaded.
    Quarantine(QuarantineCause),
}

/// Why a policy was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineCause {
    Consecutive { faults: u32 },
    Rate { faults: usize, calls: u32 },
}

impl std::fmt::Display for QuarantineCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuarantineCause::Consecutive { faults } => {
                write!(f, "{faults} consecutive faults")
            }
            QuarantineCause::Rate { faults, calls } => {
                write!(f, "{faults} faults within its last {calls} calls")
            }
        }
    }
}

/// Faults of one policy: the current streak and the recent ones by call number.
#[derive(Debug, Default)]
pub struct FaultHistory {
    /// Calls made so far (every export call of every instance).
    calls: u64,
    /// Call numbers of the faults within the window, oldest first. Never longer
    /// than the quarantine threshold, since reaching it quarantines.
    recent: VecDeque<u64>,
    consecutive: u32,
}

impl FaultHistory {
    /// `calls` calls returned (an `Err` answer included: it is not a fault).
    pub fn succeeded(&mut self, calls: u64) {
        self.calls = self.calls.saturating_add(calls);
        if calls > 0 {
            self.consecutive = 0;
        }
    }

    /// An instance faulted on its last call, after `calls_before` that returned.
    pub fn faulted(&mut self, calls_before: u64, limits: &PolicyLimits) -> Verdict {
        self.calls = self.calls.saturating_add(calls_before).saturating_add(1);
        self.consecutive = self.consecutive.saturating_add(1);
        self.recent.push_back(self.calls);
        let window = u64::from(limits.fault_window.max(1));
        while self
            .recent
            .front()
            .is_some_and(|&at| at + window <= self.calls)
        {
            self.recent.pop_front();
        }
        if self.consecutive >= limits.max_consecutive_faults.max(1) {
            return Verdict::Quarantine(QuarantineCause::Consecutive {
                faults: self.consecutive,
            });
        }
        if self.recent.len() >= limits.max_window_faults.max(1) as usize {
            return Verdict::Quarantine(QuarantineCause::Rate {
                faults: self.recent.len(),
                calls: limits.fault_window,
            });
        }
        // A policy that keeps faulting, in a streak or on and off, waits longer
        // each time; one that recovered for a whole window starts over.
        let step = self
            .consecutive
            .max(u32::try_from(self.recent.len()).unwrap_or(u32::MAX))
            .saturating_sub(1)
            .min(20);
        let backoff = limits
            .backoff_base
            .saturating_mul(1u32 << step)
            .min(limits.backoff_max);
        Verdict::Retry { backoff }
    }

    /// Faults among the last `fault_window` calls, as of the last fault.
    #[cfg(test)]
    pub fn recent_faults(&self) -> usize {
        self.recent.len()
    }
}

/// Lines allowed in a burst, then one per second.
const FAULT_LOG_BURST: u32 = 5;

/// Rate-limits the WARN line of each fault (and guest error), counting what it
/// held back so the next line can say so.
pub struct FaultLog {
    gate: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

impl Default for FaultLog {
    fn default() -> Self {
        let quota = Quota::per_second(std::num::NonZeroU32::MIN).allow_burst(
            std::num::NonZeroU32::new(FAULT_LOG_BURST).unwrap_or(std::num::NonZeroU32::MIN),
        );
        Self {
            gate: DefaultDirectRateLimiter::direct(quota),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl FaultLog {
    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        if self.gate.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PolicyLimits {
        PolicyLimits {
            max_consecutive_faults: 5,
            fault_window: 200,
            max_window_faults: 10,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(10),
            ..PolicyLimits::default()
        }
    }

    #[test]
    fn policy_health_a_fault_every_seventh_call_is_quarantined_by_rate() {
        let limits = limits();
        let mut history = FaultHistory::default();
        let mut verdicts = Vec::new();
        for _ in 0..100 {
            // Six calls return (create, info, warm-up, three decisions, the
            // first of which checks the instance back in and so breaks the
            // streak), the seventh traps.
            history.succeeded(4);
            let verdict = history.faulted(2, &limits);
            verdicts.push(verdict);
            if matches!(verdict, Verdict::Quarantine(_)) {
                break;
            }
        }
        assert_eq!(
            verdicts.last(),
            Some(&Verdict::Quarantine(QuarantineCause::Rate {
                faults: 10,
                calls: 200
            }))
        );
        assert_eq!(verdicts.len(), 10);
        // Backoff grows with the faults in the window, not only with a streak.
        assert_eq!(
            verdicts[0],
            Verdict::Retry {
                backoff: Duration::from_millis(10)
            }
        );
        assert_eq!(
            verdicts[3],
            Verdict::Retry {
                backoff: Duration::from_millis(80)
            }
        );
    }

    #[test]
    fn policy_health_rare_faults_never_quarantine() {
        let limits = limits();
        let mut history = FaultHistory::default();
        for _ in 0..1_000 {
            let verdict = history.faulted(999, &limits);
            history.succeeded(5);
            assert_eq!(
                verdict,
                Verdict::Retry {
                    backoff: Duration::from_millis(10)
                }
            );
        }
        assert_eq!(history.recent_faults(), 1);
    }

    #[test]
    fn policy_health_a_streak_quarantines_by_count() {
        let limits = limits();
        let mut history = FaultHistory::default();
        for i in 1..5 {
            assert!(
                matches!(history.faulted(1_000, &limits), Verdict::Retry { .. }),
                "fault {i}"
            );
        }
        assert_eq!(
            history.faulted(1_000, &limits),
            Verdict::Quarantine(QuarantineCause::Consecutive { faults: 5 })
        );
    }

    #[test]
    fn policy_health_fault_log_admits_a_burst_then_counts_what_it_holds_back() {
        let log = FaultLog::default();
        for _ in 0..FAULT_LOG_BURST {
            assert_eq!(log.admit(), Some(0));
        }
        // The next lines are held back (a line per second refills; these
        // checks run far faster than that, but only the count is asserted
        // when one is admitted).
        let mut held = 0;
        for _ in 0..1_000 {
            match log.admit() {
                None => held += 1,
                Some(suppressed) => {
                    assert_eq!(suppressed, held);
                    held = 0;
                }
            }
        }
    }
}
