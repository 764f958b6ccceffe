use shadowcat_policy_sdk::{Choice, Config, Policy, RemovalCause, Session, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

use crate::Clock;

fn clock(capacity: u64, config: &[(&str, &str)]) -> Result<OnTable<Clock>, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    OnTable::<Clock>::create(&Table::new(capacity), &Config::new(config))
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
fn clock_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(|c| clock(c, &[]).unwrap(), "clock", &[], false);
}

#[test]
fn clock_n_bit_matches_the_reference_model() {
    for bits in ["2", "3", "8"] {
        let config = [("bits", bits)];
        assert_matches_model(|c| clock(c, &config).unwrap(), "clock", &config, false);
    }
}

/// A new session's bit is not set, and the hand clears a set bit by moving
/// the session back to the head: libCacheSim's CLOCK, not the textbook's
/// insert-with-bit-set variant.
#[test]
fn clock_hand_spares_used_sessions_once_per_pass() {
    let mut p = clock(3, &[]).unwrap();
    for id in 1..=3 {
        p.on_insert(&session(id));
    }
    p.on_access(&session(1));
    p.on_access(&session(1));
    assert_eq!(p.policy().counter(1), Some(1), "one bit saturates at 1");
    let mut out = Vec::new();
    p.victims(2, &Choice::default(), &mut out);
    assert_eq!(out, vec![2, 3], "1 was spared and cleared");
    assert_eq!(p.policy().counter(1), Some(0));
}

#[test]
fn clock_rejects_bad_settings_naming_the_key() {
    for (config, needle) in [
        (&[("bits", "0")][..], "`bits`"),
        (&[("bits", "9")], "`bits`"),
        (&[("bits", "one")], "`bits`"),
        (&[("bit", "1")], "`bit`"),
    ] {
        let err = clock(10, config).err().expect("refused");
        assert!(err.contains(needle), "{config:?}: {err}");
    }
    assert!(clock(10, &[("bits", "4")]).is_ok());
}

/// After the first victim (an eviction step) come the sessions at 0 from the
/// tail to the head, not yet evicted: the table evicting one later is the
/// step that would have chosen it, counters moving as they would have then.
#[test]
fn clock_plans_its_next_victims_and_takes_each_step_when_the_table_evicts() {
    let mut p = clock(64, &[]).unwrap();
    (1..=4).for_each(|id| p.on_insert(&session(id)));
    [1, 3].iter().for_each(|&id| p.on_access(&session(id)));
    let ask = |p: &mut OnTable<Clock>| {
        let mut out = Vec::new();
        p.victims(8, &Choice::default(), &mut out);
        out
    };
    // The step sent 1 to the head at 0 and evicted 2; 3 is still set.
    assert_eq!(ask(&mut p), vec![2, 4, 1]);
    assert_eq!(
        p.policy().counter(3),
        Some(1),
        "only the first step was taken"
    );
    p.on_remove(2, 0, RemovalCause::Evicted);
    // A request for a listed session: the table skips it, the step passes it.
    p.on_access(&session(4));
    p.on_remove(1, 0, RemovalCause::Evicted);
    assert_eq!(p.policy().counter(3), Some(0), "the step for 1 passed 3");
    assert_eq!(p.policy().counter(4), Some(0), "and 4");
    assert_eq!(ask(&mut p), vec![3, 4]);
}
