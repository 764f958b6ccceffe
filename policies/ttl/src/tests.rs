use shadowcat_policy_sdk::{Choice, Config, Policy, RemovalCause, Session, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model_with;

use crate::Ttl;

fn table(capacity: u64, idle_timeout: u64, max_age: u64) -> Table {
    let bound = |us: u64| (us != 0).then_some(us);
    Table {
        idle_timeout: bound(idle_timeout),
        max_age: bound(max_age),
        ..Table::new(capacity)
    }
}

fn ttl(capacity: u64, idle_timeout: u64, max_age: u64) -> OnTable<Ttl> {
    OnTable::<Ttl>::create(&table(capacity, idle_timeout, max_age), &Config::default()).unwrap()
}

fn at(id: u64, time: u64) -> Session {
    Session {
        id,
        key: id + 1,
        tenant: 0,
        size: 1,
        time,
    }
}

fn order(p: &mut OnTable<Ttl>, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    p.victims(count, &Choice::default(), &mut out);
    out
}

/// The workload's clock moves 0 to 2 microseconds a step, so these bounds
/// bind in turn: idle sessions and old ones both go first.
#[test]
fn ttl_matches_the_reference_model_with_pinned_refusals() {
    for (idle_timeout, max_age) in [(0, 0), (300, 0), (0, 2_000), (300, 2_000), (40, 30)] {
        assert_matches_model_with(
            |c| ttl(c, idle_timeout, max_age),
            "ttl",
            &[],
            false,
            idle_timeout,
            max_age,
        );
    }
}

#[test]
fn ttl_evicts_whichever_bound_expires_first() {
    // Idle timeout 10, max age 25.
    let mut p = ttl(8, 10, 25);
    p.on_insert(&at(1, 0)); // expires at 10 idle, 25 by age
    p.on_insert(&at(2, 5)); // 15, 30
    p.on_access(&at(1, 12)); // 22 idle, still 25 by age
    p.on_insert(&at(3, 13)); // 23, 38
    p.on_access(&at(2, 16)); // 26 idle, 30 by age
    // With both bounds a new session could expire before 3 or 2: only the
    // first victim is listed, and each eviction asks again.
    assert_eq!(order(&mut p, 3), vec![1]);
    let mut evicted = Vec::new();
    for _ in 0..3 {
        let next = order(&mut p, 3);
        assert_eq!(next.len(), 1, "{next:?}");
        p.on_remove(next[0], 20, RemovalCause::Evicted);
        evicted.push(next[0]);
    }
    assert_eq!(evicted, vec![1, 3, 2]);
}

/// With one bound the order is that bound's alone, and an arrival expires
/// last: the victims after the first are listed ahead.
#[test]
fn ttl_with_one_bound_lists_its_order_ahead() {
    for (idle_timeout, max_age, expected) in [(10, 0, vec![2, 3, 1]), (0, 10, vec![1, 2, 3])] {
        let mut p = ttl(8, idle_timeout, max_age);
        p.on_insert(&at(1, 0));
        p.on_insert(&at(2, 1));
        p.on_insert(&at(3, 2));
        p.on_access(&at(1, 3));
        assert_eq!(order(&mut p, 8), expected);
    }
}

/// Times that go back (a host clock is not required to be monotonic across
/// threads) still give the exact order.
#[test]
fn ttl_places_an_earlier_time_where_it_belongs() {
    let mut p = ttl(8, 10, 0);
    p.on_insert(&at(1, 50));
    p.on_insert(&at(2, 40));
    p.on_insert(&at(3, 45));
    p.on_access(&at(1, 30));
    assert_eq!(order(&mut p, 3), vec![1, 2, 3]);
    // Not the last one, and still earlier than the last: between 2 and 3.
    p.on_access(&at(1, 42));
    assert_eq!(order(&mut p, 3), vec![2, 1, 3]);
    // Later than all: behind the last.
    p.on_access(&at(2, 60));
    assert_eq!(order(&mut p, 3), vec![1, 3, 2]);
    // The last one, gone back before its neighbour.
    p.on_access(&at(2, 44));
    assert_eq!(order(&mut p, 3), vec![1, 2, 3]);
}

#[test]
fn ttl_takes_its_bounds_from_the_table_not_from_config() {
    let config = Config::new(vec![("idle-timeout".into(), "1s".into())]);
    let err = OnTable::<Ttl>::create(&Table::new(4), &config)
        .err()
        .expect("refused");
    assert!(err.contains("`idle-timeout`"), "{err}");
}

#[test]
fn ttl_keeps_what_a_request_reads_at_the_front_of_its_entry() {
    use std::mem::offset_of;

    use crate::Entry;
    // A request reads its neighbours' idle links and its own times: with the
    // slot's id (the SDK's `SlotMap` puts it first) they fit in 40 bytes.
    assert_eq!(offset_of!(Entry, idle), 0);
    assert!(offset_of!(Entry, last_access) < 24);
    assert!(offset_of!(Entry, access_seq) < 24);
}
