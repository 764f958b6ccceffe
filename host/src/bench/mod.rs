//! `shadowcat bench`: replay one trace through the session table under several
//! policies and capacities, side by side, with Belady's optimum as the floor and
//! the native LRU as the cost baseline measured in the same run.

mod plot;
mod report;

use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::replay::{replay, CapacityMode, ReplayError, ReplayOutcome};
use crate::session::FallbackReason;
use crate::trace::{belady_misses, Trace, TraceError};
use crate::wasm::{
    ConfiguredPolicy, OpenedPolicy, PolicyError, PolicyMetricsSnapshot, PolicyTable,
};

pub use plot::{check_plot_path, write_plot, PlotError};
pub use report::{render, OutputFormat};

/// The name the offline optimum goes by in results.
pub const BELADY: &str = "belady";
/// The baseline every policy's cost is compared with.
pub const BASELINE: &str = "lru";

/// A capacity as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapacitySpec {
    /// Objects (or bytes in byte mode).
    Absolute(u64),
    /// A fraction of the distinct objects (or of their bytes).
    Fraction(f64),
}

impl FromStr for CapacitySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if let Some(percent) = t.strip_suffix('%') {
            let value: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("`{t}` is not a percentage"))?;
            return Self::fraction(value / 100.0, t);
        }
        if t.contains('.') || t.contains('e') {
            let value: f64 = t
                .parse()
                .map_err(|_| format!("`{t}` is not a capacity: {CAPACITY_FORMS}"))?;
            return Self::fraction(value, t);
        }
        match t.parse::<u64>() {
            Ok(0) => Err("capacity 0 holds nothing; use at least 1".into()),
            Ok(n) => Ok(CapacitySpec::Absolute(n)),
            Err(_) => Err(format!("`{t}` is not a capacity: {CAPACITY_FORMS}")),
        }
    }
}

/// The forms a capacity takes. `1` and `1.0` differ (one object, and all of
/// them), so the point that makes a fraction is spelled out.
const CAPACITY_FORMS: &str = "a capacity is a whole number of objects (4897), or a fraction \
     of the distinct objects in (0, 1] written with a decimal point (0.01, 1.0) or as a \
     percentage (1%, 100%); with --bytes, of their bytes";

impl CapacitySpec {
    fn fraction(value: f64, text: &str) -> Result<Self, String> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(format!("`{text}`: {CAPACITY_FORMS}"));
        }
        Ok(CapacitySpec::Fraction(value))
    }

    /// The capacity for a trace with `distinct` objects (or unique bytes).
    pub fn resolve(self, distinct: u64) -> u64 {
        match self {
            CapacitySpec::Absolute(n) => n,
            CapacitySpec::Fraction(f) => ((distinct as f64 * f).round() as u64).max(1),
        }
    }

    pub fn label(self) -> String {
        match self {
            CapacitySpec::Absolute(n) => n.to_string(),
            CapacitySpec::Fraction(f) => format!("{}%", trim_float(f * 100.0)),
        }
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Parses `0.01,0.1` or `4897` into capacities.
pub fn parse_capacities(text: &str) -> Result<Vec<CapacitySpec>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(CapacitySpec::from_str)
        .collect()
}

/// One cell of the comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchRow {
    pub policy: String,
    pub capacity: u64,
    pub capacity_label: String,
    /// Capacity as a fraction of distinct objects (or unique bytes), for plotting.
    pub capacity_fraction: f64,
    pub requests: u64,
    pub misses: u64,
    pub miss_ratio: f64,
    /// `None` for Belady, which is computed offline rather than replayed.
    pub evictions: Option<u64>,
    pub throughput_mrps: f64,
    pub wall_ms: f64,
    /// Replays this row's wall time is the median of.
    pub rounds: u32,
    /// Wall time relative to the native LRU at the same capacity: with several
    /// rounds, the median of the per-round ratios.
    pub cost_vs_lru: Option<f64>,
    /// The lowest and highest per-round ratio, with more than one round.
    pub cost_vs_lru_range: Option<[f64; 2]>,
    /// Miss ratio above Belady's at the same capacity (absolute difference).
    pub gap_vs_belady: Option<f64>,
    /// Calls into a WebAssembly policy during the replay (the first round's):
    /// each crossing into the sandbox costs about as much as a few dozen
    /// evictions, so this tells a slow policy's time apart from its
    /// algorithm's. `None` for a built-in policy and Belady.
    pub policy_calls: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub trace: String,
    pub requests: u64,
    pub distinct_objects: u64,
    pub unique_bytes: u64,
    pub mode: &'static str,
    pub rows: Vec<BenchRow>,
    /// Replays of every policy at every capacity (see [`BenchPlan::rounds`]).
    pub rounds: u32,
    pub warnings: Vec<String>,
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    // The cause is in the message, not a `source`, so that a report of the
    // whole chain does not print it twice.
    #[error("`{policy}` cannot be opened at capacity {capacity}: {error}")]
    Open {
        policy: String,
        capacity: u64,
        error: PolicyError,
    },
    #[error("`{policy}` refused to be created at every capacity asked for: {}", reasons.join("; "))]
    RefusedEveryCapacity {
        policy: String,
        reasons: Vec<String>,
    },
    #[error("replaying `{policy}` at capacity {capacity}: {error}")]
    Replay {
        policy: String,
        capacity: u64,
        error: ReplayError,
    },
    #[error("no capacity given")]
    NoCapacity,
    #[error("no round to run; use at least 1")]
    NoRounds,
}

/// Reports progress of a run; the CLI draws progress bars, tests ignore it.
pub trait Progress {
    fn replay_started(&mut self, _policy: &str, _capacity: &str, _requests: u64) {}
    fn replay_advanced(&mut self, _done: u64) {}
    fn replay_finished(&mut self, _row: &BenchRow) {}
}

/// Ignores progress.
pub struct Quiet;

impl Progress for Quiet {}

/// What to compare.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub capacities: Vec<CapacitySpec>,
    /// Policies with their settings (see [`crate::wasm::config::configure`]);
    /// the native LRU baseline always comes first, added when missing.
    pub policies: Vec<ConfiguredPolicy>,
    pub mode: CapacityMode,
    pub belady: bool,
    /// Whether the user named the policies: then one that refuses every
    /// capacity fails the bench; otherwise (the default set) it is left out
    /// with a warning, so that one policy unfit for the table (byte mode)
    /// does not stop the comparison of the others.
    pub named: bool,
    /// Replays of every policy at every capacity, in a rotated order each
    /// round; wall times are the median over rounds. At least 1.
    pub rounds: u32,
}

/// One replay's counts and wall time.
#[derive(Debug, Clone)]
struct RoundResult {
    requests: u64,
    misses: u64,
    evictions: u64,
    wall: Duration,
    policy_calls: Option<u64>,
}

/// The middle value (the mean of the two middle ones for an even count);
/// `values` is left sorted.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Opens a fresh policy for a table (policies keep state, so every replay
/// gets its own instance), telling it whether the capacity counts sessions or
/// bytes, so that one sizing its queues in sessions can refuse bytes.
pub type PolicyOpener<'a> =
    dyn Fn(&ConfiguredPolicy, PolicyTable) -> Result<OpenedPolicy, PolicyError> + 'a;

/// Replays `trace` for every policy and capacity of `plan`.
pub fn run(
    trace: &Trace,
    plan: &BenchPlan,
    open: &PolicyOpener<'_>,
    progress: &mut dyn Progress,
) -> Result<BenchReport, BenchError> {
    if plan.capacities.is_empty() {
        return Err(BenchError::NoCapacity);
    }
    if plan.rounds == 0 {
        return Err(BenchError::NoRounds);
    }
    let distinct = trace.distinct_ids() as u64;
    let unique_bytes = trace.unique_bytes();
    let universe = match plan.mode {
        CapacityMode::Objects => distinct,
        CapacityMode::Bytes => unique_bytes,
    };
    let mut warnings = Vec::new();
    let table = |capacity: u64| PolicyTable {
        byte_mode: plan.mode == CapacityMode::Bytes,
        ..PolicyTable::from(capacity)
    };
    // The baseline first, whether the plan names it or not.
    let mut policies: Vec<ConfiguredPolicy> = vec![ConfiguredPolicy::named(BASELINE)];
    for p in &plan.policies {
        if !policies.iter().any(|q| q.label == p.label) {
            policies.push(p.clone());
        }
    }
    // Open every policy at every capacity it will run at, up front, so a typo
    // or a refused setting fails before minutes of replay. A policy may refuse
    // a capacity (a minimum table size): that cell is skipped with a warning,
    // the others still run.
    let capacities: Vec<u64> = plan
        .capacities
        .iter()
        .map(|s| s.resolve(universe))
        .collect();
    let mut refused: Vec<(String, u64)> = Vec::new();
    for policy in &policies {
        let mut refusals = Vec::new();
        for &capacity in &capacities {
            match open(policy, table(capacity)) {
                Ok(_) => {}
                Err(PolicyError::CreateRejected { message, .. }) => {
                    refused.push((policy.label.clone(), capacity));
                    refusals.push((capacity, message));
                }
                Err(error) => {
                    return Err(BenchError::Open {
                        policy: policy.label.clone(),
                        capacity,
                        error,
                    })
                }
            }
        }
        if refusals.len() == capacities.len() {
            if plan.named {
                return Err(BenchError::RefusedEveryCapacity {
                    policy: policy.label.clone(),
                    reasons: refusals
                        .iter()
                        .map(|(capacity, message)| format!("{capacity}: {message}"))
                        .collect(),
                });
            }
            if let Some((_, message)) = refusals.first() {
                warnings.push(format!(
                    "{} refused every capacity, left out: {message}",
                    policy.label
                ));
            }
            continue;
        }
        for (capacity, message) in refusals {
            warnings.push(format!(
                "{} refused capacity {capacity}, skipped there: {message}",
                policy.label
            ));
        }
    }
    let mut rows = Vec::new();
    for spec in &plan.capacities {
        let capacity = spec.resolve(universe);
        let label = spec.label();
        if capacity >= universe {
            warnings.push(format!(
                "capacity {label} ({capacity}) holds every {} of the trace ({universe}): only cold misses remain",
                if plan.mode == CapacityMode::Objects { "object" } else { "byte" }
            ));
        }
        let fraction = capacity as f64 / universe.max(1) as f64;
        let mut group: Vec<BenchRow> = Vec::new();
        if plan.belady && plan.mode == CapacityMode::Objects {
            progress.replay_started(BELADY, &label, trace.len() as u64);
            let started = Instant::now();
            let misses = belady_misses(trace, usize::try_from(capacity).unwrap_or(usize::MAX));
            let row = make_row(
                BELADY,
                capacity,
                &label,
                fraction,
                trace.len() as u64,
                misses,
                None,
                started.elapsed(),
            );
            progress.replay_finished(&row);
            group.push(row);
        }
        // Each round replays every policy once, starting one further along
        // the list, so no policy always runs right after the same others (a
        // replay leaves the allocator and caches in a state the next one pays
        // for) and the baseline is measured at every position in turn.
        let runnable: Vec<usize> = (0..policies.len())
            .filter(|&i| !refused.contains(&(policies[i].label.clone(), capacity)))
            .collect();
        let mut runs: Vec<Vec<RoundResult>> = vec![Vec::new(); policies.len()];
        for round in 0..plan.rounds {
            let shown = if plan.rounds > 1 {
                format!("{label} round {}/{}", round + 1, plan.rounds)
            } else {
                label.clone()
            };
            let start = round as usize % runnable.len().max(1);
            for &i in runnable[start..].iter().chain(&runnable[..start]) {
                let name = &policies[i].label;
                let opened =
                    open(&policies[i], table(capacity)).map_err(|error| BenchError::Open {
                        policy: name.clone(),
                        capacity,
                        error,
                    })?;
                progress.replay_started(name, &shown, trace.len() as u64);
                let calls_before = opened.wasm_metrics().map(|m| m.calls);
                let outcome = replay(trace, opened.eviction(), capacity, plan.mode, &mut |done| {
                    progress.replay_advanced(done)
                })
                .map_err(|error| BenchError::Replay {
                    policy: name.clone(),
                    capacity,
                    error,
                })?;
                let wasm = opened.wasm_metrics();
                let policy_calls = wasm
                    .zip(calls_before)
                    .map(|(after, before)| after.calls.saturating_sub(before));
                if let Some(warning) = fallback_warning(name, &shown, &outcome, wasm) {
                    warnings.push(warning);
                }
                if let Some(warning) = wasm.and_then(|m| memory_warning(name, &shown, m)) {
                    warnings.push(warning);
                }
                // This round's own figures, under the label it was started with.
                progress.replay_finished(&make_row(
                    name,
                    capacity,
                    &shown,
                    fraction,
                    outcome.requests,
                    outcome.misses,
                    Some(outcome.evictions),
                    outcome.wall,
                ));
                runs[i].push(RoundResult {
                    requests: outcome.requests,
                    misses: outcome.misses,
                    evictions: outcome.evictions,
                    wall: outcome.wall,
                    policy_calls,
                });
            }
        }
        let baseline_runs = policies
            .iter()
            .position(|p| p.label == BASELINE)
            .map(|i| &runs[i]);
        for (policy, rounds) in policies.iter().zip(&runs) {
            let Some(first) = rounds.first() else {
                continue;
            };
            if let Some(other) = rounds
                .iter()
                .find(|r| (r.misses, r.evictions) != (first.misses, first.evictions))
            {
                warnings.push(format!(
                    "{} at {label}: rounds disagree ({} misses and {} evictions, then {} and {}); \
                     the first round's counts are shown",
                    policy.label, first.misses, first.evictions, other.misses, other.evictions
                ));
            }
            let mut walls: Vec<f64> = rounds.iter().map(|r| r.wall.as_secs_f64()).collect();
            let wall = median(&mut walls).map_or(Duration::ZERO, Duration::from_secs_f64);
            let mut row = make_row(
                &policy.label,
                capacity,
                &label,
                fraction,
                first.requests,
                first.misses,
                Some(first.evictions),
                wall,
            );
            row.rounds = plan.rounds;
            row.policy_calls = first.policy_calls;
            if let Some(baseline) = baseline_runs {
                // The ratio is taken within each round, against the baseline
                // of that round, before the median: a disturbance that slows
                // a whole round cancels out.
                let mut ratios: Vec<f64> = rounds
                    .iter()
                    .zip(baseline)
                    .filter(|(_, b)| !b.wall.is_zero())
                    .map(|(r, b)| r.wall.as_secs_f64() / b.wall.as_secs_f64())
                    .collect();
                row.cost_vs_lru = median(&mut ratios);
                // `median` left the ratios sorted.
                if let (Some(&lo), Some(&hi), true) =
                    (ratios.first(), ratios.last(), plan.rounds > 1)
                {
                    row.cost_vs_lru_range = Some([lo, hi]);
                }
            }
            group.push(row);
        }
        let belady_ratio = group
            .iter()
            .find(|r| r.policy == BELADY)
            .map(|r| r.miss_ratio);
        for row in &mut group {
            row.gap_vs_belady = belady_ratio.map(|b| row.miss_ratio - b);
        }
        rows.extend(group);
    }
    if plan.belady && plan.mode == CapacityMode::Bytes {
        warnings.push("Belady is computed in object mode only; omitted in byte mode".into());
    }
    Ok(BenchReport {
        trace: trace.name.clone(),
        requests: trace.len() as u64,
        distinct_objects: distinct,
        unique_bytes,
        mode: match plan.mode {
            CapacityMode::Objects => "objects",
            CapacityMode::Bytes => "bytes",
        },
        rows,
        rounds: plan.rounds,
        warnings,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Why some of a replay's evictions were not the policy's own choice, when
/// any were not: from the table's fallback reasons and, for a WebAssembly
/// policy, its own fault and error counts. `None` when every eviction was the
/// policy's (always so for the native LRU, whose choice *is* the host order).
fn fallback_warning(
    name: &str,
    label: &str,
    outcome: &ReplayOutcome,
    wasm: Option<PolicyMetricsSnapshot>,
) -> Option<String> {
    let t = &outcome.table;
    let decisions: u64 = FallbackReason::ALL.iter().map(|r| t.fallbacks_by(*r)).sum();
    if outcome.fallback_victims == 0 && decisions == 0 {
        return None;
    }
    let mut causes = Vec::new();
    let faulted = t.fallbacks_by(FallbackReason::Faulted);
    if faulted > 0 {
        let detail = match wasm {
            Some(m) => {
                let mut kinds = Vec::new();
                for (n, what) in [
                    (m.traps, "traps"),
                    (m.timeouts, "timeouts (raise --policy-timeout)"),
                    (m.memory_faults, "memory faults (raise --policy-memory)"),
                    (m.guest_errors, "error answers"),
                ] {
                    if n > 0 {
                        kinds.push(format!("{n} {what}"));
                    }
                }
                format!(" ({})", kinds.join(", "))
            }
            None => String::new(),
        };
        causes.push(format!("{faulted} decisions failed in the policy{detail}"));
    }
    let recovering = t.fallbacks_by(FallbackReason::Recovering);
    if recovering > 0 {
        let state = match wasm {
            Some(m) if m.quarantines > 0 => "the policy was quarantined",
            _ => "the policy was being recreated after a fault",
        };
        causes.push(format!("{recovering} decisions while {state}"));
    }
    let busy = t.fallbacks_by(FallbackReason::Busy);
    if busy > 0 {
        causes.push(format!(
            "{busy} decisions while another caller held the policy instance"
        ));
    }
    let short = t.fallbacks_by(FallbackReason::Short);
    if short > 0 {
        causes.push(format!(
            "{short} answers without a valid victim ({} invalid proposals)",
            t.invalid_victims
        ));
    }
    if causes.is_empty() {
        causes.push(format!(
            "the policy proposed fewer valid victims than needed ({} invalid proposals)",
            t.invalid_victims
        ));
    }
    Some(format!(
        "{name} at {label}: {} of {} evictions were the host's LRU choice, not the policy's: {}; \
         its figures are not the policy's alone",
        outcome.fallback_victims,
        outcome.evictions,
        causes.join("; ")
    ))
}

/// A policy that was refused memory and answered anyway has decided from
/// what it could fit: its figures look like a policy's but are not its
/// design's, and no eviction shows it (the victims are still its own).
fn memory_warning(name: &str, label: &str, m: PolicyMetricsSnapshot) -> Option<String> {
    (m.memory_refusals > 0).then(|| {
        format!(
            "{name} at {label}: {} of {} calls were refused memory past --policy-memory and the \
             policy carried on without it, so it may not track every session and its figures \
             are not its design's: raise --policy-memory",
            m.memory_refusals, m.calls
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn make_row(
    policy: &str,
    capacity: u64,
    label: &str,
    fraction: f64,
    requests: u64,
    misses: u64,
    evictions: Option<u64>,
    wall: Duration,
) -> BenchRow {
    let secs = wall.as_secs_f64();
    BenchRow {
        policy: policy.to_owned(),
        capacity,
        capacity_label: label.to_owned(),
        capacity_fraction: fraction,
        requests,
        misses,
        miss_ratio: if requests == 0 {
            0.0
        } else {
            misses as f64 / requests as f64
        },
        evictions,
        throughput_mrps: if secs > 0.0 {
            requests as f64 / secs / 1e6
        } else {
            0.0
        },
        wall_ms: secs * 1e3,
        rounds: 1,
        cost_vs_lru: None,
        cost_vs_lru_range: None,
        gap_vs_belady: None,
        policy_calls: None,
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_capacities_parse_counts_fractions_and_percentages() {
        assert_eq!(
            parse_capacities("0.01, 10%,4897"),
            Ok(vec![
                CapacitySpec::Fraction(0.01),
                CapacitySpec::Fraction(0.1),
                CapacitySpec::Absolute(4897)
            ])
        );
        assert!(parse_capacities("0").unwrap_err().contains("holds nothing"));
        // The refusal of a fraction out of range tells `1.0` (all the
        // objects) from `1` (one object).
        for over in ["1.5", "150%", "0.0"] {
            let refused = parse_capacities(over).expect_err("out of range");
            assert!(
                refused.starts_with(&format!("`{over}`: "))
                    && refused.contains("(0.01, 1.0)")
                    && refused.contains("whole number of objects"),
                "{refused}"
            );
        }
        assert_eq!(parse_capacities("1"), Ok(vec![CapacitySpec::Absolute(1)]));
        assert_eq!(
            parse_capacities("1.0"),
            Ok(vec![CapacitySpec::Fraction(1.0)])
        );
        assert!(parse_capacities("lots").is_err());
        assert_eq!(CapacitySpec::Fraction(0.01).resolve(48_974), 490);
        assert_eq!(CapacitySpec::Fraction(0.01).label(), "1%");
        assert_eq!(CapacitySpec::Fraction(0.005).label(), "0.5%");
    }

    #[test]
    fn bench_median_takes_the_middle_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [4.0]), Some(4.0));
        assert_eq!(median(&mut [9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&mut [8.0, 2.0, 6.0, 4.0]), Some(5.0));
        assert_eq!(median(&mut [3.0, 100.0, 2.0, 1.0, 2.5]), Some(2.5));
    }
}
