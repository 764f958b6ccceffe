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
//! - the table lost sessions.

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
    /// Why the policy fails the check; empty when it passes.
    pub failures: Vec<String>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
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
    let policy =
        WasmPolicy::from_component(Arc::clone(engine), loaded, plan.capacity as u64, config)?;
    let instantiate_time = started.elapsed();
    let info = policy.info();

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
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ids: Vec<SessionId> = Vec::with_capacity(plan.creates);
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
        // The sessions named below may be gone already (evicted, removed);
        // the table refusing is part of the sequence, not a finding.
        if i % 3 == 0 {
            let _ = table.touch(ids[i / 2], 1);
        }
        // Sessions also leave by a client's close and an operator's delete,
        // not only by eviction.
        if i % 11 == 10 {
            let _ = table.remove(ids[i - 5], RemovalCause::Closed);
        }
        if i % 23 == 22 {
            let _ = table.remove(ids[i - 7], RemovalCause::Deleted);
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
    let run_time = started.elapsed();

    let t = table.metrics();
    let m = policy.metrics();
    let last_problem = policy.last_problem();
    let problem = || {
        last_problem
            .as_deref()
            .map(|p| format!("; last: {p}"))
            .unwrap_or_default()
    };
    if m.faults() > 0 {
        failures.push(format!(
            "the policy faulted (traps: {}, timeouts: {}, memory faults: {}){}",
            m.traps,
            m.timeouts,
            m.memory_faults,
            problem()
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
            problem()
        ));
    }
    let over = |part: u64, whole: u64| part * 100 > whole.max(1) * TOLERANCE_PERCENT;
    if over(t.invalid_victims, m.proposed_victims) {
        failures.push(format!(
            "{} of {} proposed victims were invalid (not a live session, or proposed twice)",
            t.invalid_victims, m.proposed_victims
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
    if live_after_churn != plan.capacity && failures.is_empty() {
        failures.push(format!(
            "the table held {live_after_churn} sessions after the churn, expected {}",
            plan.capacity
        ));
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
        live_after_churn,
        maintenance_rounds: rounds,
        last_problem,
        failures,
    })
}
