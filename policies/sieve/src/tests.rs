use shadowcat_policy_sdk::{Choice, Config, Policy, RemovalCause, Session, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

use crate::Sieve;

fn sieve(config: &[(&str, &str)]) -> Result<OnTable<Sieve>, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    OnTable::<Sieve>::create(&Table::new(64), &Config::new(config))
}

fn session(id: u64) -> Session {
    Session {
        id,
        key: id + 1,
        tenant: 0,
        size: 1,
        time: 0,
    }
}

#[test]
fn sieve_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(|_| sieve(&[]).unwrap(), "sieve", &[], false);
}

/// The hand clears marks on its way and stays just past its victim: the
/// next eviction resumes there instead of at the tail.
#[test]
fn sieve_hand_resumes_past_its_last_victim() {
    let mut p = sieve(&[]).unwrap();
    for id in 1..=4 {
        p.on_insert(&session(id));
    }
    p.on_access(&session(1));
    p.on_access(&session(3));
    let mut out = Vec::new();
    p.victims(1, &Choice::default(), &mut out);
    assert_eq!(out, vec![2], "1 was visited: cleared and passed");
    assert_eq!(p.policy().hand(), Some(3));
    p.on_remove(2, 0, RemovalCause::Evicted);
    p.on_access(&session(1));
    out.clear();
    p.victims(2, &Choice::default(), &mut out);
    // From 3 (visited: cleared), 4 goes; then past the head to the tail: 1
    // (visited again: cleared), 3 (cleared before) goes.
    assert_eq!(out, vec![4, 3]);
}

#[test]
fn sieve_takes_no_settings() {
    let err = sieve(&[("hand", "tail")]).err().expect("refused");
    assert!(err.contains("`hand`"), "{err}");
}
