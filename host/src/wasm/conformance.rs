//! `shadowcat policy check`: does a policy keep the contract the host relies on?
//!
//! The host survives any answer a policy gives (it validates every proposal
//! and falls back to its own LRU order), so a broken policy does not crash
//! anything: it quietly becomes LRU with extra cost. That is exactly what an
//! author needs to be told. The check drives the policy through a session
//! table the way the proxy does (inserts, accesses, removals of every cause,
//! evictions, maintenance ticks and quota rounds) and fails when:
//!
//! - any export faulted (trap, timeout, memory), `adjust-quotas` and
//!   `maintain` included, or answered with an error;
//! - more than [`TOLERANCE_PERCENT`] of the proposed victims were invalid (not
//!   live, or repeated), or of the evictions were chosen by the host because
//!   the policy proposed no valid victim (an empty answer);
//! - it proposed more victims than asked;
//! - the table lost sessions;
//! - it declares `stable-order` or `ghost-conditional`, and the same
//!   workload evicts differently with victims asked for one at a time (the
//!   host trusts that promise: it cannot tell in general whether it holds).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::PolicyEngine;
use super::error::PolicyError;
use super::instance::PolicyInfo;
use super::metrics::PolicyMetricsSnapshot;
use super::policy::WasmPolicy;
use super::ConfigPairs;
use crate::config::{RateLimit, TableConfig};
use crate::eviction::RemovalCause;
use crate::session::{Clock, FallbackReason, MetricsSnapshot, NewSession, SessionId, SessionTable};

/// Invalid proposals, or decisions the host had to take, tolerated before the
/// check fails (a per cent of proposals, or of evictions).
pub const TOLERANCE_PERCENT: u64 = 1;

/// What the check runs.
#[derive(Debug, Clone)]
pub struct CheckPlan {
    /// The table's capacity in sessions.
    pub capacity: usize,
    /// Sessions created in all, so `creates - capacity` need an eviction
    /// (fewer: some are removed by the client or an operator first).
    pub creates: usize,
}

impl Default for CheckPlan {
    fn default() -> Self {
        Self {
            capacity: 1_000,
            creates: 3_000,
        }
    }
}

/// What the check saw.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub info: PolicyInfo,
    pub size: u64,
    pub sha256: String,
    pub from_cache: bool,
    pub load_time: Duration,
    pub instantiate_time: Duration,
    pub run_time: Duration,
    pub plan: CheckPlan,
    pub table: MetricsSnapshot,
    pub policy: PolicyMetricsSnapshot,
    /// Live sessions once the churn was done (before the final expiry).
    pub live_after_churn: usize,
    /// Maintenance rounds run (each: flush, `maintain`, `adjust-quotas`).
    pub maintenance_rounds: u64,
    pub last_problem: Option<String>,
    /// For a policy that lets the host choose ahead: whether its victims
    /// were the same asked for several at a time and one at a time (absent
    /// when a fault in either run made the comparison moot).
    pub order: Option<OrderCheck>,
    /// Why the policy fails the check; empty when it passes.
    pub failures: Vec<String>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Victims a run asked per call, as the check reports them: a prefetch limit
/// is a ceiling (the host starts lower and asks deeper while its answers are
/// used up).
pub fn asked_per_call(prefetch: usize) -> String {
    if prefetch > 1 {
        format!("up to {prefetch}")
    } else {
        prefetch.to_string()
    }
}

/// How the policy's promise of a stable order held: the workload was run with
/// victims asked several at a time and one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCheck {
    /// The trait that makes the promise: `stable-order` or `ghost-conditional`.
    pub promise: &'static str,
    /// Victims asked per call in the run reported, and in the other one.
    pub prefetch: (usize, usize),
    /// Evictions compared (those of the run reported).
    pub evictions: usize,
    /// The first create whose evictions differed between the runs, with the
    /// sessions (by create number) each run evicted for it.
    pub first_difference: Option<OrderDifference>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDifference {
    pub create: usize,
    pub reported: Vec<usize>,
    pub other: Vec<usize>,
}

/// Loads `path` with `config` and runs the check. `Err` is a policy that does
/// not even load (wrong interface, refused configuration, ...).
pub fn check(
    engine: &Arc<PolicyEngine>,
    path: &Path,
    config: ConfigPairs,
    plan: CheckPlan,
) -> Result<CheckReport, PolicyError> {
    let started = Instant::now();
    let loaded = engine.load(path)?;
    let load_time = started.elapsed();
    let (size, sha256, from_cache) = (loaded.size, loaded.sha256.clone(), loaded.from_cache);
    let started = Instant::now();
    let policy = WasmPolicy::from_component(
        Arc::clone(engine),
        loaded.clone(),
        plan.capacity as u64,
        config.clone(),
    )?;
    let instantiate_time = started.elapsed();
    let info = policy.info();
    let traits = info.traits;
    // Only these two let the host choose ahead; for any other policy the
    // prefetch changes nothing.
    let promise = if traits.stable_order {
        Some("stable-order")
    } else if traits.ghost_conditional {
        Some("ghost-conditional")
    } else {
        None
    };

    let started = Instant::now();
    let run = churn(&policy, &plan, promise.is_some())?;
    let run_time = started.elapsed();
    let mut failures = run.failures.clone();
    let (t, m) = (run.table, run.policy);
    let last_problem = run.last_problem.clone();
    let problem = |last: &Option<String>| {
        last.as_deref()
            .map(|p| format!("; last: {p}"))
            .unwrap_or_default()
    };
    if m.faults() > 0 {
        failures.push(format!(
            "the policy faulted (traps: {}, timeouts: {}, memory faults: {}){}",
            m.traps,
            m.timeouts,
            m.memory_faults,
            problem(&last_problem)
        ));
    }
    if m.memory_refusals > 0 {
        failures.push(format!(
            "the policy was refused memory past the limit and carried on without it \
             ({} of {} calls): raise --policy-memory, or its choices are not its design's",
            m.memory_refusals, m.calls,
        ));
    }
    if m.guest_errors > 0 {
        failures.push(format!(
            "the policy answered calls with an error ({} of {} calls){}",
            m.guest_errors,
            m.calls,
            problem(&last_problem)
        ));
    }
    let over = |part: u64, whole: u64| part * 100 > whole.max(1) * TOLERANCE_PERCENT;
    // Repeats are dropped before the table sees them: the two counts never
    // hold the same proposal.
    let invalid = t.invalid_victims + m.repeated_victims;
    if over(invalid, m.proposed_victims) {
        failures.push(format!(
            "{invalid} of {} proposed victims were invalid (not a live session, or proposed \
             twice: {} repeated within one answer)",
            m.proposed_victims, m.repeated_victims
        ));
    }
    // Decisions the host took because a call faulted are the faults' cost,
    // reported above; these are answers that came back without a usable victim.
    let short = t.fallbacks_by(FallbackReason::Short);
    if over(short, t.evicted) {
        failures.push(format!(
            "{short} of {} evictions were chosen by the host because the policy proposed no \
             valid victim (an empty answer, or only invalid ids)",
            t.evicted
        ));
    }
    if m.excess_victims > 0 {
        failures.push(format!(
            "the policy proposed {} victims beyond the count asked for",
            m.excess_victims
        ));
    }
    if run.live_after_churn != plan.capacity && failures.is_empty() {
        failures.push(format!(
            "the table held {} sessions after the churn, expected {}",
            run.live_after_churn, plan.capacity
        ));
    }

    let mut order = None;
    if let Some(promise) = promise {
        // The host trusts the promise and cannot watch it break: a queue of
        // victims chosen ahead is handed out as long as no event names one.
        // Asked one at a time, the policy answers from its current state, so
        // the same workload evicting differently is the promise broken. The
        // run reported keeps the engine's prefetch, as the proxy would.
        let reported = engine.limits().prefetch;
        let other = if reported > 1 { 1 } else { super::PREFETCH };
        let again =
            WasmPolicy::from_component(Arc::clone(engine), loaded, plan.capacity as u64, config)?;
        again.set_prefetch(other);
        let rerun = churn(&again, &plan, true)?;
        let clean = |m: &PolicyMetricsSnapshot| {
            m.faults() == 0 && m.guest_errors == 0 && m.memory_refusals == 0
        };
        let r = &rerun.policy;
        if !clean(r) && clean(&m) {
            failures.push(format!(
                "asked for {} victims per call (--policy-prefetch {other}) the policy \
                 faulted or answered with an error (traps: {}, timeouts: {}, memory faults: {}, \
                 errors: {}, refused memory: {}){}",
                asked_per_call(other),
                r.traps,
                r.timeouts,
                r.memory_faults,
                r.guest_errors,
                r.memory_refusals,
                problem(&rerun.last_problem)
            ));
        }
        // A fault's fallback decides from the host's order: the runs differ
        // for that reason, reported above, not for the promise.
        if clean(r) && clean(&m) {
            let check = compare(promise, (reported, other), &run.evictions, &rerun.evictions);
            if let Some(d) = &check.first_difference {
                failures.push(format!(
                    "the policy declares `{promise}`, but its victims change with how many the \
                     host asks for at a time: for create {}, asked for {} per call it \
                     evicted {}, asked for {} it evicted {}. Its order does not hold \
                     between events, as the trait promises; the host trusts the promise and \
                     would keep handing out victims it no longer chooses: declare no stable \
                     order (drop `{promise}` from the policy's traits) unless its order can \
                     keep the promise",
                    d.create,
                    asked_per_call(reported),
                    sessions(&d.reported),
                    asked_per_call(other),
                    sessions(&d.other),
                ));
            }
            order = Some(check);
        }
    }
    Ok(CheckReport {
        info,
        size,
        sha256,
        from_cache,
        load_time,
        instantiate_time,
        run_time,
        plan,
        table: t,
        policy: m,
        live_after_churn: run.live_after_churn,
        maintenance_rounds: run.rounds,
        last_problem,
        order,
        failures,
    })
}

/// One run of the workload.
struct Run {
    table: MetricsSnapshot,
    policy: PolicyMetricsSnapshot,
    last_problem: Option<String>,
    live_after_churn: usize,
    rounds: u64,
    /// Creates the table refused (which ends the run).
    failures: Vec<String>,
    /// For each create that evicted, in order: its number and the sessions
    /// it evicted, by create number, in ascending order. Empty unless asked.
    evictions: Vec<(usize, Vec<usize>)>,
}

/// Drives `policy` through a session table the way the proxy does. With
/// `record`, notes which sessions each create evicted.
fn churn(policy: &Arc<WasmPolicy>, plan: &CheckPlan, record: bool) -> Result<Run, PolicyError> {
    let table_config = TableConfig {
        rate_limit: Some(RateLimit {
            per_second: 100.try_into().unwrap_or(std::num::NonZeroU32::MIN),
            burst: 50.try_into().unwrap_or(std::num::NonZeroU32::MIN),
        }),
        idle_timeout: Some(Duration::from_secs(3_600)),
        ..TableConfig::unbounded_in_time(plan.capacity)
    };
    let table = SessionTable::<()>::builder(table_config)
        .policy(policy.clone())
        .clock(Clock::manual())
        .build_shared()
        .map_err(|e| PolicyError::Engine(format!("check table: {e}")))?;
    let mut failures = Vec::new();
    let mut ids: Vec<SessionId> = Vec::with_capacity(plan.creates);
    // Create numbers of the sessions live as far as the run knows: only
    // creates evict, so whichever of these a create's eviction took is gone.
    let mut live: Vec<usize> = Vec::new();
    let mut evictions = Vec::new();
    let mut rounds = 0u64;
    // One millisecond of table time per create, so quota windows and the
    // policy's clock both move.
    let mut now = 0u64;
    for i in 0..plan.creates {
        now += 1_000;
        table.clock().set(now);
        let created = match table.create(NewSession::anonymous(()).with_key(i as u64)) {
            Ok(created) => created,
            Err(rejected) => {
                failures.push(format!("create {i} was refused: {}", rejected.into_error()));
                break;
            }
        };
        ids.push(created.id);
        if record {
            if created.evicted > 0 {
                let mut gone = Vec::with_capacity(created.evicted);
                live.retain(|&j| {
                    let kept = table.get(ids[j]).is_some();
                    if !kept {
                        gone.push(j);
                    }
                    kept
                });
                evictions.push((i, gone));
            }
            live.push(i);
        }
        // The sessions named below may be gone already (evicted, removed);
        // the table refusing is part of the sequence, not a finding.
        if i % 3 == 0 {
            let _ = table.touch(ids[i / 2], 1);
        }
        // Sessions also leave by a client's close and an operator's delete,
        // not only by eviction.
        let mut remove = |j: usize, cause| {
            if table.remove(ids[j], cause).is_ok() && record {
                live.retain(|&k| k != j);
            }
        };
        if i % 11 == 10 {
            remove(i - 5, RemovalCause::Closed);
        }
        if i % 23 == 22 {
            remove(i - 7, RemovalCause::Deleted);
        }
        if i % 500 == 499 {
            table.run_maintenance();
            rounds += 1;
        }
    }
    table.run_maintenance();
    rounds += 1;
    let live_after_churn = table.len();
    // Every session expires idle, then the policy is ticked once more.
    now += 2 * 3_600 * 1_000_000;
    table.clock().set(now);
    table.run_maintenance();
    rounds += 1;
    Ok(Run {
        table: table.metrics(),
        policy: policy.metrics(),
        last_problem: policy.last_problem(),
        live_after_churn,
        rounds,
        failures,
        evictions,
    })
}

/// The first create whose evictions differ between two runs.
fn compare(
    promise: &'static str,
    prefetch: (usize, usize),
    reported: &[(usize, Vec<usize>)],
    other: &[(usize, Vec<usize>)],
) -> OrderCheck {
    let differs = |a: Option<&(usize, Vec<usize>)>, b: Option<&(usize, Vec<usize>)>| {
        let create = match (a, b) {
            (Some(a), Some(b)) if a == b => return None,
            (Some(a), Some(b)) => a.0.min(b.0),
            (Some(only), None) | (None, Some(only)) => only.0,
            (None, None) => return None,
        };
        let at = |run: Option<&(usize, Vec<usize>)>| {
            run.filter(|(c, _)| *c == create)
                .map(|(_, gone)| gone.clone())
                .unwrap_or_default()
        };
        Some(OrderDifference {
            create,
            reported: at(a),
            other: at(b),
        })
    };
    let longest = reported.len().max(other.len());
    let first_difference = (0..longest).find_map(|k| differs(reported.get(k), other.get(k)));
    OrderCheck {
        promise,
        prefetch,
        evictions: reported.iter().map(|(_, gone)| gone.len()).sum(),
        first_difference,
    }
}

/// "session 12", "sessions 12 and 40", or "no session", by create number.
fn sessions(list: &[usize]) -> String {
    let numbers: Vec<String> = list.iter().map(ToString::to_string).collect();
    match numbers.as_slice() {
        [] => "no session".to_owned(),
        [one] => format!("session {one}"),
        [rest @ .., last] => format!("sessions {} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_the_first_create_whose_evictions_differ() {
        let a = vec![(5, vec![1]), (6, vec![2]), (9, vec![3, 4])];
        let same = compare("stable-order", (32, 1), &a, &a.clone());
        assert_eq!((same.evictions, same.first_difference), (4, None));
        let b = vec![(5, vec![1]), (6, vec![5]), (9, vec![3, 4])];
        let d = compare("stable-order", (32, 1), &a, &b).first_difference;
        assert_eq!(
            d,
            Some(OrderDifference {
                create: 6,
                reported: vec![2],
                other: vec![5]
            })
        );
        // One run evicting at a create the other does not.
        let c = vec![(5, vec![1]), (7, vec![2]), (9, vec![3, 4])];
        let d = compare("stable-order", (32, 1), &a, &c).first_difference;
        assert_eq!(
            d,
            Some(OrderDifference {
                create: 6,
                reported: vec![2],
                other: vec![]
            })
        );
        let d = compare("ghost-conditional", (1, 32), &a, &a[..2]).first_difference;
        assert_eq!(d.map(|d| (d.create, d.other)), Some((9, vec![])));
        assert_eq!(sessions(&[]), "no session");
        assert_eq!(sessions(&[3]), "session 3");
        assert_eq!(sessions(&[3, 4, 9]), "sessions 3, 4 and 9");
    }
}
