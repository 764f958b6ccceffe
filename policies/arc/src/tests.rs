use shadowcat_policy_sdk::{Arriving, Choice, Config, Policy, RemovalCause, Session, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

use crate::Arc;

fn arc(capacity: u64) -> OnTable<Arc> {
    OnTable::<Arc>::create(&Table::new(capacity), &Config::default()).unwrap()
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

fn victim(p: &mut OnTable<Arc>, arriving_key: u64) -> u64 {
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
fn arc_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(arc, "arc", &[], false);
}

/// Clients come back under new session ids and are recognised in B1 and B2
/// by their keys: the reference protocol test, against the guest.
#[test]
fn arc_ghosts_use_the_stable_key_not_the_session_id() {
    let mut p = arc(2);
    p.on_insert(&session(1, 100));
    p.on_access(&session(1, 100)); // to T2
    p.on_insert(&session(2, 200)); // T1
    assert_eq!(victim(&mut p, 300), 2, "T1's tail, key 200 to B1");
    p.on_insert(&session(3, 300));
    // Key 200 returns: a B1 hit raises p to 1, so T2's tail goes to B2.
    assert_eq!(victim(&mut p, 200), 1);
    assert_eq!(p.policy().p(), 1.0);
    p.on_insert(&session(4, 200)); // into T2, as a ghost hit
    // Key 100 returns: a B2 hit lowers p to 0, so T1's tail goes.
    assert_eq!(victim(&mut p, 100), 3);
    assert_eq!(p.policy().p(), 0.0);
    assert_eq!(p.policy().sizes(), [0, 1, 1, 0]);
}

#[test]
fn arc_refuses_settings_and_byte_mode() {
    let config = Config::new(vec![("p".into(), "0.5".into())]);
    let err = OnTable::<Arc>::create(&Table::new(10), &config)
        .err()
        .expect("refused");
    assert!(err.contains("`p`"), "{err}");
    let bytes = Table {
        byte_mode: true,
        ..Table::new(1 << 20)
    };
    let err = OnTable::<Arc>::create(&bytes, &Config::default())
        .err()
        .expect("refused");
    assert!(err.contains("bytes"), "{err}");
}
