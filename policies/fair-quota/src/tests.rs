use shadowcat_policy_sdk::testing::{Reference, Workload, compare};
use shadowcat_policy_sdk::{
    Choice, Config, Policy, QuotaAdjustment, RemovalCause, Session, Table, Usage, slot,
};

use crate::{FairQuota, water_fill};

fn create(config: &[(&str, &str)]) -> Result<FairQuota, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    FairQuota::create(&Table::new(64), &Config::new(config))
}

/// LRU spelled out: ids, least recently touched first.
#[derive(Default)]
struct Lru(Vec<u64>);

impl Reference for Lru {
    fn insert(&mut self, s: &Session) {
        self.access(s);
    }
    fn access(&mut self, s: &Session) {
        self.0.retain(|&id| id != s.id && slot(id) != slot(s.id));
        self.0.push(s.id);
    }
    fn remove(&mut self, id: u64, _: RemovalCause) {
        self.0.retain(|&x| x != id);
    }
    fn victims(&mut self, count: usize, choice: &Choice<'_>) -> Vec<u64> {
        assert!(choice.candidates.is_empty());
        self.0.iter().take(count).copied().collect()
    }
}

#[test]
fn fair_quota_evicts_least_recently_used_first() {
    for seed in 1..=3 {
        let mut policy = create(&[]).unwrap();
        let report = compare(
            &mut policy,
            &mut Lru::default(),
            &Workload {
                seed,
                ..Workload::default()
            },
        );
        assert!(
            report.policy_evictions > 500 && report.stable_checks > 500,
            "{report:?}"
        );
    }
}

#[test]
fn fair_quota_water_filling_is_max_min_fair() {
    assert_eq!(
        water_fill(90.0, &[10.0, 100.0, 100.0]),
        vec![10.0, 40.0, 40.0]
    );
    assert_eq!(
        water_fill(90.0, &[10.0, 20.0, 30.0]),
        vec![10.0, 20.0, 30.0]
    );
    assert_eq!(
        water_fill(30.0, &[50.0, 50.0, 50.0]),
        vec![10.0, 10.0, 10.0]
    );
    assert!(water_fill(10.0, &[]).is_empty());
}

fn usage(id: u64, tenant: u16, admitted: u64, rejected: u64) -> Usage {
    Usage {
        id,
        admitted,
        rejected,
        window_ms: 1_000,
        key: id,
        tenant,
    }
}

fn rates(out: &[QuotaAdjustment]) -> Vec<u64> {
    out.iter().map(|a| a.rate).collect()
}

/// Tenant 1 opens three busy sessions, tenant 2 one busy and one light: each
/// tenant gets half the budget whatever its number of sessions, the light
/// session keeps its equal share, and the limits get there by AIMD.
#[test]
fn fair_quota_shares_the_budget_by_tenant_then_session() {
    let mut p = create(&[("budget", "120"), ("increase", "5")]).unwrap();
    let round = |p: &mut FairQuota| {
        let mut out = Vec::new();
        p.adjust_quotas(
            &[
                usage(1, 1, 20, 200),
                usage(2, 1, 20, 200),
                usage(3, 1, 20, 200),
                usage(4, 2, 20, 200),
                usage(5, 2, 2, 0),
            ],
            &mut out,
        );
        out
    };
    // Equal shares first: 60 per tenant, 20 per tenant-1 session, 30 per
    // tenant-2 session; the busy tenant-2 session climbs by 5 a round toward
    // the 58 its light neighbour leaves it.
    assert_eq!(rates(&round(&mut p)), vec![20, 20, 20, 35, 30]);
    assert_eq!(rates(&round(&mut p)), vec![20, 20, 20, 40, 30]);
    for _ in 0..10 {
        round(&mut p);
    }
    assert_eq!(rates(&round(&mut p)), vec![20, 20, 20, 58, 30]);
    // Bursts follow the limits (one second's worth).
    assert_eq!(round(&mut p)[3].burst, 58);
}

/// A session over its share halves toward it; one rejected with budget to
/// spare climbs additively.
#[test]
fn fair_quota_decreases_multiplicatively_and_increases_additively() {
    let mut p = create(&[("budget", "100"), ("increase", "10")]).unwrap();
    let mut out = Vec::new();
    p.adjust_quotas(&[usage(1, 0, 10, 500)], &mut out);
    assert_eq!(
        rates(&out),
        vec![100],
        "alone, its equal share is the budget"
    );
    // Three more busy sessions arrive: its share drops to 25.
    let busy: Vec<Usage> = (1..=4).map(|id| usage(id, 0, 10, 500)).collect();
    let mut out = Vec::new();
    p.adjust_quotas(&busy, &mut out);
    assert_eq!(rates(&out), vec![50, 25, 25, 25]);
    let mut out = Vec::new();
    p.adjust_quotas(&busy, &mut out);
    assert_eq!(rates(&out), vec![25, 25, 25, 25]);
    // The others go quiet: session 1 may take what they leave, 10 a round.
    let mut out = Vec::new();
    p.adjust_quotas(
        &[
            usage(1, 0, 10, 500),
            usage(2, 0, 1, 0),
            usage(3, 0, 1, 0),
            usage(4, 0, 1, 0),
        ],
        &mut out,
    );
    assert_eq!(rates(&out), vec![35, 25, 25, 25]);
}

#[test]
fn fair_quota_bad_values_are_refused_naming_the_key() {
    for (key, value) in [
        ("budget", "0"),
        ("budget", "lots"),
        ("increase", "0"),
        ("decrease", "1"),
        ("decrease", "0"),
        ("burst", "-1"),
    ] {
        let err = create(&[(key, value)])
            .err()
            .unwrap_or_else(|| panic!("{key}={value} accepted"));
        assert!(err.contains(&format!("`{key}`")), "{key}={value}: {err}");
    }
    let err = create(&[("budgt", "10")]).err().expect("a typo");
    assert!(err.contains("`budgt`"), "{err}");
}

#[test]
fn fair_quota_forgets_a_removed_session() {
    let mut p = create(&[]).unwrap();
    let s = Session {
        id: 7,
        key: 7,
        tenant: 0,
        size: 1,
        time: 0,
    };
    p.on_insert(&s);
    let mut out = Vec::new();
    p.adjust_quotas(&[usage(7, 0, 5, 0)], &mut out);
    assert!(p.limit(7).is_some());
    p.on_remove(7, 0, RemovalCause::Closed);
    assert!(p.limit(7).is_none());
}
