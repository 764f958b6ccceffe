use shadowcat_policy_sdk::testing::{Reference, Workload, compare};
use shadowcat_policy_sdk::{Choice, Config, Policy, RemovalCause, Session, Table, Traits};

use crate::lru::Lru;

/// The textbook LRU: a vector in recency order, searched linearly.
#[derive(Default)]
struct Model {
    /// (id, time of last touch), least recent first.
    order: Vec<(u64, u64)>,
}

impl Model {
    fn touch(&mut self, s: &Session) {
        self.order.retain(|e| e.0 != s.id);
        self.order.push((s.id, s.time));
    }
}

impl Reference for Model {
    fn insert(&mut self, s: &Session) {
        self.touch(s);
    }
    fn access(&mut self, s: &Session) {
        self.touch(s);
    }
    fn remove(&mut self, id: u64, _: RemovalCause) {
        self.order.retain(|e| e.0 != id);
    }
    fn victims(&mut self, count: usize, choice: &Choice<'_>) -> Vec<u64> {
        if choice.candidates.is_empty() {
            return self.order.iter().take(count).map(|e| e.0).collect();
        }
        let mut ranked = Vec::new();
        for c in choice.candidates {
            if ranked.iter().any(|&(_, id)| id == c.id) {
                continue;
            }
            // Position in the order stands for the event sequence number.
            let rank = match self.order.iter().position(|e| e.0 == c.id) {
                Some(p) => (self.order[p].1, false, p),
                None => (c.last_access, true, 0),
            };
            ranked.push((rank, c.id));
        }
        ranked.sort();
        ranked.into_iter().take(count).map(|r| r.1).collect()
    }
}

fn lru() -> Lru {
    Lru::create(&Table::new(64), &Config::default()).unwrap()
}

#[test]
fn lru_matches_the_reference_and_keeps_its_order_stable() {
    for seed in 1..=5 {
        let workload = Workload {
            seed,
            ..Workload::default()
        };
        let report = compare(&mut lru(), &mut Model::default(), &workload);
        assert!(report.policy_evictions > 1000, "{report:?}");
        assert!(report.refusals > 10, "{report:?}");
        assert!(report.stable_checks > 100, "{report:?}");
    }
}

#[test]
fn lru_matches_the_reference_on_sampled_candidates() {
    for seed in 1..=5 {
        let workload = Workload {
            seed,
            sampled: true,
            ..Workload::default()
        };
        let report = compare(&mut lru(), &mut Model::default(), &workload);
        assert!(report.policy_evictions > 1000, "{report:?}");
    }
}

#[test]
fn lru_matches_the_reference_at_scale() {
    let workload = Workload {
        seed: 99,
        steps: 100_000,
        capacity: 1_000,
        keys: 10_000,
        max_count: 64,
        ..Workload::default()
    };
    compare(&mut lru(), &mut Model::default(), &workload);
}

#[test]
fn lru_declares_stable_order_and_rejects_config() {
    assert_eq!(Lru::TRAITS, Traits::STABLE_ORDER);
    let config = Config::new(vec![("size".into(), "1".into())]);
    assert!(Lru::create(&Table::new(1), &config).is_err());
}

#[test]
fn lru_adds_an_unknown_accessed_id_and_ignores_unknown_removals() {
    let mut lru = lru();
    let s = |id, time| Session {
        id,
        key: 0,
        tenant: 0,
        size: 1,
        time,
    };
    lru.on_access(&s(5, 1));
    lru.on_insert(&s(6, 2));
    lru.on_remove(7, 3, RemovalCause::Closed);
    lru.on_remove(5 | (1 << 32), 3, RemovalCause::Closed);
    assert_eq!(lru.ids().collect::<Vec<_>>(), [5, 6]);
    // A new session in a slot whose removal was missed replaces the stale one.
    lru.on_insert(&s(6 | (1 << 32), 4));
    assert_eq!(lru.ids().collect::<Vec<_>>(), [5, 6 | (1 << 32)]);
}
