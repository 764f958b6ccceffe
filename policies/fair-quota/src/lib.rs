//! Fair-share rate limits: a table-wide request budget split max-min fairly,
//! first across tenants, then across each tenant's sessions, with every
//! session's limit moving toward its share by AIMD (additive increase,
//! multiplicative decrease; Chiu and Jain, "Analysis of the Increase and
//! Decrease Algorithms for Congestion Avoidance in Computer Networks", 1989).
//! Eviction is plain LRU, so it is a complete policy.
//!
//! The point is that a tenant cannot take more of the budget by opening more
//! sessions, a heavy session cannot starve light ones, and a session that
//! needs more (its requests are being rejected) gets it as long as others
//! leave budget unused.
//!
//! # One `adjust-quotas` round
//!
//! The host reports each session used since the last round: requests admitted
//! and rejected over a window. A session's demand is `(admitted + rejected) /
//! window`: rejections are the signal that it wants more than its limit.
//!
//! 1. Allocation. `budget` is divided among the tenants in the round by
//!    max-min fairness (water-filling): a tenant demanding less than an equal
//!    split gets its demand, and what it leaves is shared by the others, until
//!    the budget is spent. Each tenant's allocation is divided among its
//!    sessions the same way.
//! 2. Target. A session that was rejected targets its allocation. One that was
//!    not targets at least its equal share (the tenant's equal share of the
//!    budget, split equally over the tenant's sessions in the round): a light
//!    session keeps room to burst to what it would get if everyone were busy.
//! 3. AIMD. A session's limit moves toward its target: up by `increase`
//!    requests per second per round, at most to the target, or down by the
//!    factor `decrease`, at least to the target. A session seen for the first
//!    time starts from its equal share.
//! 4. Every reported session gets `rate = round(limit)` (at least 1) and
//!    `burst = ceil(limit x burst)` (at least 1). The host clamps both to its
//!    bounds; sessions not reported keep their limits.
//!
//! # Settings
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `budget` | requests per second the whole table may admit, shared fairly | 1000 (the host's default per-session maximum, as a table-wide total) |
//! | `increase` | additive increase, requests per second per round | 10 |
//! | `decrease` | multiplicative decrease factor, above 0 and below 1 | 0.5 (TCP's halving, Jacobson 1988) |
//! | `burst` | a burst in seconds of the limit, above 0 | 1 |
//!
//! A bad value is refused at `create` with a message naming the key.
//!
//! # Eviction
//!
//! LRU (the `lru` policy's code, compiled by path), declaring `stable-order`.
//!
//! Costs: O(1) per event; a round O(n log n) for n reported sessions (the
//! water-filling sorts by demand).

#[path = "../../lru/src/lru.rs"]
#[allow(dead_code)]
mod lru;

use shadowcat_policy_sdk::{
    Choice, Config, Needs, Policy, QuotaAdjustment, RemovalCause, Session, SlotMap, Table, Traits,
    Usage, export_policy,
};

/// Settings, as the config names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub budget: f64,
    pub increase: f64,
    pub decrease: f64,
    pub burst: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            budget: 1000.0,
            increase: 10.0,
            decrease: 0.5,
            burst: 1.0,
        }
    }
}

impl Params {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        config.check_keys(
            FairQuota::NAME,
            &["budget", "increase", "decrease", "burst"],
        )?;
        let d = Self::default();
        let p = Self {
            budget: config.f64_or("budget", d.budget)?,
            increase: config.f64_or("increase", d.increase)?,
            decrease: config.f64_or("decrease", d.decrease)?,
            burst: config.f64_or("burst", d.burst)?,
        };
        let bad = |key: &str, expected: &str, got: f64| {
            Err(format!(
                "policy config `{key}`: expected {expected}, got `{got}`"
            ))
        };
        if p.budget < 1.0 {
            return bad("budget", "at least 1 request per second", p.budget);
        }
        if p.increase <= 0.0 {
            return bad("increase", "more than 0 requests per second", p.increase);
        }
        if !(p.decrease > 0.0 && p.decrease < 1.0) {
            return bad("decrease", "a factor above 0 and below 1", p.decrease);
        }
        if p.burst <= 0.0 {
            return bad("burst", "more than 0 seconds", p.burst);
        }
        Ok(p)
    }
}

pub struct FairQuota {
    params: Params,
    lru: lru::Lru,
    /// The limit last proposed for each session, requests per second.
    limits: SlotMap<f64>,
}

/// One reported session in a round.
struct Demand {
    id: u64,
    tenant: u16,
    rejected: bool,
    /// Requests per second attempted.
    demand: f64,
}

/// Max-min fair shares of `capacity` for `demands`: water-filling from the
/// smallest demand up; ties in the order given, so the result is deterministic.
pub fn water_fill(capacity: f64, demands: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]).then(a.cmp(&b)));
    let mut shares = vec![0.0; demands.len()];
    let mut left = capacity;
    for (i, &at) in order.iter().enumerate() {
        let share = left / (order.len() - i) as f64;
        shares[at] = demands[at].min(share);
        left -= shares[at];
    }
    shares
}

impl FairQuota {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            lru: lru::Lru::new(),
            limits: SlotMap::new(),
        }
    }

    /// The limit last proposed for `id`, if any.
    pub fn limit(&self, id: u64) -> Option<f64> {
        self.limits.get(id).copied()
    }

    fn round(&mut self, usage: &[Usage], out: &mut Vec<QuotaAdjustment>) {
        let sessions: Vec<Demand> = usage
            .iter()
            .map(|u| {
                let seconds = u.window_ms.max(1) as f64 / 1000.0;
                Demand {
                    id: u.id,
                    tenant: u.tenant,
                    rejected: u.rejected > 0,
                    demand: u.admitted.saturating_add(u.rejected) as f64 / seconds,
                }
            })
            .collect();
        let mut tenants: Vec<u16> = sessions.iter().map(|s| s.tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let tenant_demand: Vec<f64> = tenants
            .iter()
            .map(|&t| {
                sessions
                    .iter()
                    .filter(|s| s.tenant == t)
                    .map(|s| s.demand)
                    .sum()
            })
            .collect();
        let tenant_share = water_fill(self.params.budget, &tenant_demand);
        let equal_tenant = self.params.budget / tenants.len().max(1) as f64;
        for (t, &tenant) in tenants.iter().enumerate() {
            let members: Vec<&Demand> = sessions.iter().filter(|s| s.tenant == tenant).collect();
            let demands: Vec<f64> = members.iter().map(|s| s.demand).collect();
            let shares = water_fill(tenant_share[t], &demands);
            let equal = equal_tenant / members.len() as f64;
            for (s, share) in members.iter().zip(shares) {
                let target = if s.rejected { share } else { share.max(equal) };
                let limit = self.step(s.id, target, equal);
                out.push(QuotaAdjustment {
                    id: s.id,
                    rate: (limit.round() as u64).max(1),
                    burst: ((limit * self.params.burst).ceil() as u64).max(1),
                });
            }
        }
    }

    /// AIMD from the session's last limit (its equal share the first time)
    /// toward `target`.
    fn step(&mut self, id: u64, target: f64, equal: f64) -> f64 {
        let current = self.limits.get(id).copied().unwrap_or(equal);
        let next = if current < target {
            (current + self.params.increase).min(target)
        } else {
            (current * self.params.decrease).max(target)
        };
        // Untracked only without memory for the slot: it then starts from its
        // equal share again next round.
        let _ = self.limits.insert(id, next);
        next
    }
}

impl Policy for FairQuota {
    const NAME: &'static str = "fair-quota";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::ACCESSED).union(Needs::REMOVED);
    const TRAITS: Traits = Traits::STABLE_ORDER;

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        Ok(Self::new(Params::from_config(config)?))
    }

    fn on_insert(&mut self, session: &Session) {
        self.lru.touch(session.id, session.time);
    }

    fn on_access(&mut self, session: &Session) {
        self.lru.touch(session.id, session.time);
    }

    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        self.lru.remove(id);
        self.limits.remove(id);
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        self.lru.pick(count, choice.candidates, out);
    }

    fn adjust_quotas(&mut self, usage: &[Usage], out: &mut Vec<QuotaAdjustment>) {
        self.round(usage, out);
    }
}

export_policy!(FairQuota);

#[cfg(test)]
mod tests;
