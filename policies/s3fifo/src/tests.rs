use shadowcat_policy_sdk::{Arriving, Choice, Config, Policy, RemovalCause, Session, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

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
