use shadowcat_policy_sdk::{
    ARRIVALS, Arriving, Choice, Config, Policy, RemovalCause, Session, Table,
};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::{answer, assert_matches_model};

use crate::S3Fifo;

fn s3fifo(capacity: u64, config: &[(&str, &str)]) -> Result<OnTable<S3Fifo>, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    OnTable::<S3Fifo>::create(&Table::new(capacity), &Config::new(config))
}

fn session(id: u64, key: u64) -> Session {
    Session {
        id,
        key,
        tenant: 0,
        size: 1,
        time: 0,
    }
}

fn victim(p: &mut OnTable<S3Fifo>, arriving_key: u64) -> u64 {
    let mut out = Vec::new();
    let choice = Choice {
        arriving: Some(Arriving {
            key: arriving_key,
            size: 1,
        }),
        candidates: &[],
    };
    p.victims(1, &choice, &mut out);
    let [id] = out[..] else {
        panic!("one victim expected, got {out:?}")
    };
    p.on_remove(id, 0, RemovalCause::Evicted);
    id
}

#[test]
fn s3fifo_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(|c| s3fifo(c, &[]).unwrap(), "s3fifo", &[], false);
}

#[test]
fn s3fifo_variants_match_the_reference_model() {
    for config in [
        &[("move-to-main-threshold", "1")][..],
        &[("small-ratio", "0.25"), ("ghost-ratio", "0.5")],
        &[("small-ratio", "0"), ("ghost-ratio", "0")],
        &[("small-ratio", "1")],
    ] {
        assert_matches_model(|c| s3fifo(c, config).unwrap(), "s3fifo", config, false);
    }
}

/// A client evicted from small comes back under a new session id: its key
/// is in the ghost, so it goes straight to main.
#[test]
fn s3fifo_a_returning_client_skips_small() {
    // 10 sessions: small holds 1, main 9, the ghost 9 keys.
    let mut p = s3fifo(10, &[]).unwrap();
    for id in 1..=10 {
        p.on_insert(&session(id, 100 + id));
    }
    assert_eq!(victim(&mut p, 111), 1, "small's tail, key 101 to the ghost");
    p.on_insert(&session(11, 111));
    assert_eq!(p.policy().sizes(), [10, 0, 1]);
    // Key 101 returns: it is recognised although its session id is new.
    assert_eq!(victim(&mut p, 101), 2);
    p.on_insert(&session(12, 101));
    assert_eq!(p.policy().sizes(), [9, 1, 1]);
}

/// Promotion happens while choosing: a used session in small's tail moves
/// to main during `victims`, and the next one goes.
#[test]
fn s3fifo_promotes_while_choosing() {
    let mut p = s3fifo(10, &[]).unwrap();
    for id in 1..=10 {
        p.on_insert(&session(id, 100 + id));
    }
    p.on_access(&session(1, 101));
    p.on_access(&session(1, 101));
    assert_eq!(victim(&mut p, 111), 2);
    assert_eq!(p.policy().sizes(), [8, 1, 1], "1 promoted to main");
}

#[test]
fn s3fifo_rejects_bad_settings_naming_the_key() {
    for (config, needle) in [
        (&[("small-ratio", "1.5")][..], "`small-ratio`"),
        (&[("small-ratio", "-0.1")], "`small-ratio`"),
        (&[("ghost-ratio", "-1")], "`ghost-ratio`"),
        (&[("ghost-ratio", "inf")], "`ghost-ratio`"),
        (
            &[("move-to-main-threshold", "0")],
            "`move-to-main-threshold`",
        ),
        (
            &[("move-to-main-threshold", "two")],
            "`move-to-main-threshold`",
        ),
        (&[("small", "0.1")], "`small`"),
    ] {
        let err = s3fifo(10, config).err().expect("refused");
        assert!(err.contains(needle), "{config:?}: {err}");
    }
}

/// Requests `id` twice: enough to promote it from small.
fn used(p: &mut OnTable<S3Fifo>, id: u64) {
    p.on_access(&session(id, 100 + id));
    p.on_access(&session(id, 100 + id));
}

/// A table of 30 (small holds 3, main 27) whose sessions 1 to 27 were
/// promoted to main, at 0, on the way to evicting 28; 31 arrived in its
/// place: small holds 29, 30 and 31.
fn main_full_of_promoted() -> OnTable<S3Fifo> {
    let mut p = s3fifo(30, &[]).unwrap();
    for id in 1..=30 {
        p.on_insert(&session(id, 100 + id));
    }
    for id in 1..=27 {
        used(&mut p, id);
    }
    assert_eq!(victim(&mut p, 131), 28, "1 to 27 promoted on the way");
    p.on_insert(&session(31, 131));
    p
}

/// The step that walks past small's sessions to the first arrival may
/// promote enough to put main over its size: main evicts next, so the
/// arrivals after that first one are not promised.
#[test]
fn s3fifo_plans_no_arrivals_that_main_would_evict_before() {
    let mut p = main_full_of_promoted();
    used(&mut p, 30);
    used(&mut p, 31);
    assert_eq!(p.policy().sizes(), [3, 27, 1]);
    // 29 goes now. The next step promotes 30 and 31 (main at 29 of 27)
    // and then takes the first arrival; the one after is main's.
    assert_eq!(answer(&mut p, 4, 132), [29]);
    // A stranger arriving with main within its size is followed by the
    // arrivals.
    let mut q = s3fifo(30, &[]).unwrap();
    for id in 1..=30 {
        q.on_insert(&session(id, 100 + id));
    }
    assert_eq!(answer(&mut q, 4, 131), [1, 2, 3, 4]);
}

/// Victims listed ahead after a returning client: it enters main, so small's
/// tails are still the next victims, but the arrivals do not follow them
/// (the first, the returning client, is not in small).
#[test]
fn s3fifo_plans_past_a_returning_client() {
    let setup = || {
        // small holds 1, main 9.
        let mut p = s3fifo(10, &[]).unwrap();
        for id in 1..=10 {
            p.on_insert(&session(id, 100 + id));
        }
        assert_eq!(victim(&mut p, 111), 1, "key 101 to the ghost");
        p.on_insert(&session(11, 111));
        p
    };
    assert_eq!(answer(&mut setup(), 4, 101), [2, 3, 4, 5]);
    assert_eq!(
        answer(&mut setup(), 20, 101),
        [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    );
    assert_eq!(
        answer(&mut setup(), 20, 150),
        [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ARRIVALS]
    );
}

/// While main is over its size its walk's next sessions at 0 go, those
/// passed over (requested since they entered main) going behind the pass;
/// once main is back within its size, small's tails and then the arrivals.
#[test]
fn s3fifo_plans_main_walk_while_main_is_over_its_size() {
    let mut p = main_full_of_promoted();
    used(&mut p, 29);
    used(&mut p, 30);
    p.on_access(&session(1, 101));
    p.on_access(&session(3, 103));
    // 29 and 30 move to main (29 of 27) and 31 goes; main then passes 1
    // and 3 over, evicting 2 and 4, and small holds only arrivals.
    assert_eq!(answer(&mut p, 6, 132), [31, 2, 4, ARRIVALS]);
    // Each planned step is the one taken when the table evicts its victim:
    // the arrivals fill small, and the first of them goes next.
    for (id, arrival) in [(31, 32), (2, 33), (4, 34)] {
        p.on_remove(id, 0, RemovalCause::Evicted);
        p.on_insert(&session(arrival, 100 + arrival));
    }
    assert_eq!(p.policy().sizes(), [3, 27, 2]);
    assert_eq!(answer(&mut p, 1, 150), [32]);
}
