use shadowcat_policy_sdk::{
    ARRIVALS, Arriving, Choice, Config, Policy, RemovalCause, Session, Table,
};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::{answer, assert_matches_model};

use crate::TwoQ;

fn twoq(capacity: u64, config: &[(&str, &str)]) -> Result<OnTable<TwoQ>, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    OnTable::<TwoQ>::create(&Table::new(capacity), &Config::new(config))
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

fn victim(p: &mut OnTable<TwoQ>, arriving_key: u64) -> u64 {
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
fn twoq_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(|c| twoq(c, &[]).unwrap(), "twoq", &[], false);
}

#[test]
fn twoq_variants_match_the_reference_model() {
    for config in [
        &[("ain-ratio", "0.5"), ("aout-ratio", "1.5")][..],
        &[("ain-ratio", "0"), ("aout-ratio", "0")],
        &[("ain-ratio", "1")],
    ] {
        assert_matches_model(|c| twoq(c, config).unwrap(), "twoq", config, false);
    }
}

/// First-timers wait in Ain and leave a ghost in Aout; a client that
/// returns under a new session id goes to Am, where requests keep it.
#[test]
fn twoq_a_returning_client_enters_am() {
    // 8 sessions: Kin 2, Km 6, Kout 4.
    let mut p = twoq(8, &[]).unwrap();
    for id in 1..=8 {
        p.on_insert(&session(id, 100 + id));
    }
    assert_eq!(victim(&mut p, 109), 1, "Ain's tail, key 101 to Aout");
    p.on_insert(&session(9, 109));
    assert_eq!(victim(&mut p, 101), 2, "Ain still holds more than Kin");
    p.on_insert(&session(10, 101));
    assert_eq!(p.policy().sizes(), [7, 1, 1]);
    // A request in Ain changes nothing.
    p.on_access(&session(3, 103));
    assert_eq!(victim(&mut p, 111), 3);
}

#[test]
fn twoq_rejects_bad_settings_naming_the_key() {
    for (config, needle) in [
        (&[("ain-ratio", "1.01")][..], "`ain-ratio`"),
        (&[("ain-ratio", "x")], "`ain-ratio`"),
        (&[("aout-ratio", "-0.5")], "`aout-ratio`"),
        (&[("kin", "0.25")], "`kin`"),
    ] {
        let err = twoq(10, config).err().expect("refused");
        assert!(err.contains(needle), "{config:?}: {err}");
    }
}

/// Victims listed ahead after a returning client: it enters Am, so Ain
/// stays as long and its sessions are still the next victims, but the
/// arrivals do not follow them (the first, the returning client, is not in
/// Ain). A stranger's answer ends in the arrivals.
#[test]
fn twoq_plans_past_a_returning_client() {
    let setup = || {
        // Kin 2, Km 6, Kout 4.
        let mut p = twoq(8, &[]).unwrap();
        for id in 1..=8 {
            p.on_insert(&session(id, 100 + id));
        }
        assert_eq!(victim(&mut p, 109), 1, "key 101 to Aout");
        p.on_insert(&session(9, 109));
        p
    };
    assert_eq!(answer(&mut setup(), 4, 101), [2, 3, 4, 5]);
    assert_eq!(answer(&mut setup(), 10, 101), [2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        answer(&mut setup(), 10, 150),
        [2, 3, 4, 5, 6, 7, 8, 9, ARRIVALS]
    );
    // Returning clients fill Am to Km: Ain 8 and 9, Am 10 to 15, Aout 107.
    let mut p = setup();
    for key in 101..=106 {
        let out = answer(&mut p, 1, key);
        p.on_remove(out[0], 0, RemovalCause::Evicted);
        p.on_insert(&session(key - 91, key));
    }
    assert_eq!(p.policy().sizes(), [2, 6, 1]);
    // With Am full (in a table over the policy's capacity: two strangers
    // more), admitting a returning client evicts from Am: nothing is
    // listed past its own victim.
    p.on_insert(&session(20, 120));
    p.on_insert(&session(21, 121));
    assert_eq!(answer(&mut p, 4, 107), [8]);
}
