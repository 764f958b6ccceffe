use shadowcat_policy_sdk::testing::{Reference, Workload, compare};
use shadowcat_policy_sdk::{Choice, Config, Policy, RemovalCause, Session, Table};

use crate::Mru;

/// Recency order in a plain vector, most recent last.
#[derive(Default)]
struct Model(Vec<u64>);

impl Reference for Model {
    fn insert(&mut self, s: &Session) {
        self.access(s);
    }
    fn access(&mut self, s: &Session) {
        self.0.retain(|&id| id != s.id);
        self.0.push(s.id);
    }
    fn remove(&mut self, id: u64, _: RemovalCause) {
        self.0.retain(|&x| x != id);
    }
    fn victims(&mut self, count: usize, _: &Choice<'_>) -> Vec<u64> {
        self.0.iter().rev().take(count).copied().collect()
    }
}

#[test]
fn mru_matches_the_reference() {
    let mut mru = Mru::create(&Table::new(64), &Config::default()).unwrap();
    let report = compare(&mut mru, &mut Model::default(), &Workload::default());
    assert!(report.policy_evictions > 1000, "{report:?}");
}
