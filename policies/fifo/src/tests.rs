use shadowcat_policy_sdk::testing::{Reference, Workload, compare};
use shadowcat_policy_sdk::{Choice, Config, Needs, Policy, RemovalCause, Session, Table, Traits};

use crate::Fifo;

/// The textbook FIFO: a vector in insertion order, searched linearly.
#[derive(Default)]
struct Model {
    /// (id, insertion time), oldest first.
    queue: Vec<(u64, u64)>,
}

impl Reference for Model {
    fn insert(&mut self, s: &Session) {
        if !self.queue.iter().any(|e| e.0 == s.id) {
            self.queue.push((s.id, s.time));
        }
    }
    fn remove(&mut self, id: u64, _: RemovalCause) {
        self.queue.retain(|e| e.0 != id);
    }
    fn victims(&mut self, count: usize, choice: &Choice<'_>) -> Vec<u64> {
        if choice.candidates.is_empty() {
            return self.queue.iter().take(count).map(|e| e.0).collect();
        }
        let mut ranked = Vec::new();
        for c in choice.candidates {
            if ranked.iter().any(|&(_, id)| id == c.id) {
                continue;
            }
            let rank = match self.queue.iter().position(|e| e.0 == c.id) {
                Some(p) => (self.queue[p].1, false, p),
                None => (c.last_access, true, 0),
            };
            ranked.push((rank, c.id));
        }
        ranked.sort();
        ranked.into_iter().take(count).map(|r| r.1).collect()
    }
}

fn fifo() -> Fifo {
    Fifo::create(&Table::new(64), &Config::default()).unwrap()
}

#[test]
fn fifo_matches_the_reference_and_keeps_its_order_stable() {
    for seed in 1..=5 {
        let workload = Workload {
            seed,
            ..Workload::default()
        };
        let report = compare(&mut fifo(), &mut Model::default(), &workload);
        assert!(report.policy_evictions > 1000, "{report:?}");
        assert!(report.refusals > 10, "{report:?}");
        assert!(report.stable_checks > 100, "{report:?}");
    }
}

#[test]
fn fifo_matches_the_reference_on_sampled_candidates() {
    for seed in 1..=5 {
        let workload = Workload {
            seed,
            sampled: true,
            ..Workload::default()
        };
        let report = compare(&mut fifo(), &mut Model::default(), &workload);
        assert!(report.policy_evictions > 1000, "{report:?}");
    }
}

#[test]
fn fifo_matches_the_reference_at_scale() {
    let workload = Workload {
        seed: 99,
        steps: 100_000,
        capacity: 1_000,
        keys: 10_000,
        max_count: 64,
        ..Workload::default()
    };
    compare(&mut fifo(), &mut Model::default(), &workload);
}

#[test]
fn fifo_needs_no_accesses_and_declares_stable_order() {
    assert!(!Fifo::NEEDS.contains(Needs::ACCESSED));
    assert_eq!(Fifo::TRAITS, Traits::STABLE_ORDER);
}

#[test]
fn fifo_keeps_the_first_place_of_a_repeated_insert() {
    let mut fifo = fifo();
    let s = |id, time| Session {
        id,
        key: 0,
        tenant: 0,
        size: 1,
        time,
    };
    fifo.on_insert(&s(1, 1));
    fifo.on_insert(&s(2, 2));
    fifo.on_insert(&s(1, 3));
    fifo.on_access(&s(1, 4));
    let mut out = Vec::new();
    fifo.victims(5, &Choice::default(), &mut out);
    assert_eq!(out, [1, 2]);
}
