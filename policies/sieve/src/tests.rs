use shadowcat_policy_sdk::{
    ARRIVALS_WHILE_QUEUED, Choice, Config, Policy, RemovalCause, Session, Table,
};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::{assert_matches_model, compare_with_model, workloads};

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

/// Sessions 1 to `sessions` inserted in order, then `requested` each requested once.
fn used(sessions: u64, requested: &[u64]) -> OnTable<Sieve> {
    let mut p = sieve(&[]).unwrap();
    for id in 1..=sessions {
        p.on_insert(&session(id));
    }
    for &id in requested {
        p.on_access(&session(id));
    }
    p
}

fn ask(p: &mut OnTable<Sieve>, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    p.victims(count, &Choice::default(), &mut out);
    out
}

#[test]
fn sieve_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(|_| sieve(&[]).unwrap(), "sieve", &[], false);
    // The arrivals' promise was checked, not only stated.
    let followed: usize = workloads()
        .iter()
        .map(|w| compare_with_model(|_| sieve(&[]).unwrap(), "sieve", &[], w, (0, 0)))
        .map(|report| report.arrivals_followed)
        .sum();
    assert!(followed > 100, "{followed} answers ended in ARRIVALS");
}

/// The hand clears marks on its way and stays just past its victim: the
/// next eviction resumes there instead of at the tail.
#[test]
fn sieve_hand_resumes_past_its_last_victim() {
    let mut p = used(4, &[1, 3]);
    assert_eq!(ask(&mut p, 1), vec![2], "1 was visited: cleared and passed");
    assert_eq!(p.policy().hand(), Some(3));
    p.on_remove(2, 0, RemovalCause::Evicted);
    p.on_access(&session(1));
    // From 3 (visited: cleared), 4 goes; then past the head to the tail: 1
    // (visited again: cleared), 3 (cleared before) goes.
    assert_eq!(ask(&mut p, 2), vec![4, 3]);
}

#[test]
fn sieve_takes_no_settings() {
    let err = sieve(&[("hand", "tail")]).err().expect("refused");
    assert!(err.contains("`hand`"), "{err}");
}

/// After the first victim (an eviction step) come the unvisited sessions
/// from the hand to the head, not yet evicted: the table evicting one later
/// is the step that would have chosen it, hand and marks moving as then.
#[test]
fn sieve_plans_its_next_victims_and_takes_each_step_when_the_table_evicts() {
    let mut p = used(5, &[2, 4]);
    // 2 and 4 are visited; past the head come the arrivals, and only then
    // would the hand wrap to the marks it has yet to clear.
    assert_eq!(ask(&mut p, 8), vec![1, 3, 5, ARRIVALS_WHILE_QUEUED]);
    assert_eq!(p.policy().hand(), Some(2), "only the first step was taken");
    p.on_remove(1, 0, RemovalCause::Evicted);
    p.on_remove(3, 0, RemovalCause::Evicted);
    assert_eq!(
        p.policy().hand(),
        Some(4),
        "the step for 3 cleared 2 on its way"
    );
    p.on_insert(&session(6));
    // From 4 (visited: cleared), 5 goes; then 6, the arrival, at the head.
    assert_eq!(ask(&mut p, 8), vec![5, 6, ARRIVALS_WHILE_QUEUED]);
    p.on_remove(5, 0, RemovalCause::Evicted);
    // 2 and 4 were cleared by the hand: after the wrap they are victims.
    assert_eq!(ask(&mut p, 8), vec![6, 2, 4, ARRIVALS_WHILE_QUEUED]);
}

/// A session the table evicts by its own choice is not a planned step
/// unless it is the next victim anyway: the hand does not move for it.
#[test]
fn sieve_evictions_the_table_chose_are_not_taken_as_steps() {
    let mut p = used(4, &[1]);
    p.on_remove(3, 0, RemovalCause::Evicted);
    assert_eq!(p.policy().hand(), None, "3 was not the next victim");
    assert_eq!(
        ask(&mut p, 8),
        vec![2, 4, ARRIVALS_WHILE_QUEUED],
        "1 visited and passed, 3 gone"
    );
}

/// A plan looks at no more than `PLAN_WALK` sessions, so a call stays quick
/// past a long run of visited ones: the list stops short, and the next call
/// (whose step clears the run) goes on.
#[test]
fn sieve_plans_stop_after_a_bounded_walk() {
    let visited: Vec<u64> = (2..=99).collect();
    let mut p = used(100, &visited);
    assert_eq!(ask(&mut p, 8), vec![1], "100 lies past 98 visited sessions");
    p.on_remove(1, 0, RemovalCause::Evicted);
    assert_eq!(ask(&mut p, 4), vec![100, 2, 3, 4]);
}

/// With no room left, or a walk that stops before the head, the answer does
/// not promise the arrivals.
#[test]
fn sieve_promises_the_arrivals_only_when_its_list_reaches_the_head() {
    let mut p = used(4, &[2]);
    assert_eq!(
        ask(&mut p, 3),
        vec![1, 3, 4],
        "no room for ARRIVALS_WHILE_QUEUED"
    );
    let mut p = used(4, &[2]);
    assert_eq!(ask(&mut p, 4), vec![1, 3, 4, ARRIVALS_WHILE_QUEUED]);
    let mut p = used(100, &(2..=99).collect::<Vec<_>>());
    assert_eq!(
        ask(&mut p, 8),
        vec![1],
        "the walk stopped short of the head"
    );
}

/// The arrivals after an answer ending in ARRIVALS_WHILE_QUEUED are the next victims in
/// the order they came, a requested one passed: the table evicting each is
/// the eviction step that chooses it, however many requested arrivals the
/// hand passes first (more than a plan would look at).
#[test]
fn sieve_evicts_the_arrivals_in_order_past_requested_ones() {
    let mut p = used(3, &[2]);
    assert_eq!(ask(&mut p, 8), vec![1, 3, ARRIVALS_WHILE_QUEUED]);
    p.on_remove(1, 0, RemovalCause::Evicted);
    let arrivals: Vec<u64> = (10..100).collect();
    for &id in &arrivals {
        p.on_insert(&session(id));
    }
    p.on_remove(3, 0, RemovalCause::Evicted);
    // 10 is requested: passed; 11 goes.
    p.on_access(&session(10));
    p.on_remove(11, 0, RemovalCause::Evicted);
    assert_eq!(p.policy().hand(), Some(12), "the step for 11 was taken");
    // 12 to 89 requested (78 of them, more than a plan looks at): 90 goes.
    for id in 12..90 {
        p.on_access(&session(id));
    }
    p.on_remove(90, 0, RemovalCause::Evicted);
    assert_eq!(p.policy().hand(), Some(91), "the step for 90 was taken");
    // The steps cleared the marks they passed: after 91 to 99 and the wrap,
    // 2, 10 and 12 are unvisited again.
    let next = ask(&mut p, 12);
    assert_eq!(
        next[..],
        [91, 92, 93, 94, 95, 96, 97, 98, 99, ARRIVALS_WHILE_QUEUED]
    );
    p.on_remove(91, 0, RemovalCause::Evicted);
    for id in 92..100 {
        p.on_remove(id, 0, RemovalCause::Evicted);
    }
    assert_eq!(ask(&mut p, 4), vec![2, 10, 12, 13]);
}
