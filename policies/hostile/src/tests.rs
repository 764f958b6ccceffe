//! Natively only the modes that neither trap, spin nor exhaust memory can run;
//! the host's sandbox tests cover those against the built component.

use shadowcat_policy_sdk::bindings::shadowcat::policy::types::Table as WitTable;
use shadowcat_policy_sdk::{Event, Guest, Session, Traits};

use crate::{Export, MODES, NEVER_EXISTED};

fn create(config: &[(&str, &str)]) -> Result<(), String> {
    let table = WitTable {
        capacity: 100,
        byte_mode: false,
        idle_timeout: 0,
        max_age: 0,
    };
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Export::create(table, config)
}

fn insert(ids: &[u64]) -> Vec<u64> {
    let mut input = vec![ids.len() as u64, 0, 0];
    for (i, &id) in ids.iter().enumerate() {
        input.extend(
            Event::Inserted(Session {
                id,
                key: id,
                tenant: 0,
                size: 1,
                time: i as u64,
            })
            .encode(),
        );
    }
    input
}

#[test]
fn hostile_accepts_every_mode_and_names_them_on_a_typo() {
    // Only modes whose `create` returns; the rest fail or spin by design.
    for &(name, _) in MODES {
        if ![
            "create-fail",
            "huge-create-error",
            "create-loop",
            "trap-at",
            "trap-every",
        ]
        .contains(&name)
        {
            create(&[("mode", name)]).unwrap();
        }
    }
    let err = create(&[("mode", "lol")]).unwrap_err();
    assert!(
        err.starts_with("hostile policy: unknown mode `lol`; modes: lru, loop"),
        "{err}"
    );
    assert!(create(&[("mode", "create-fail")]).is_err());
    assert_eq!(
        create(&[("mode", "huge-create-error")]).unwrap_err().len(),
        1 << 20
    );
}

#[test]
fn hostile_enforces_its_minimum_capacity() {
    assert!(create(&[("min-capacity", "100")]).is_ok());
    let err = create(&[("min-capacity", "101")]).unwrap_err();
    assert_eq!(
        err,
        "hostile policy: capacity 100 is below the minimum of 101"
    );
}

#[test]
fn hostile_declares_the_traits_it_is_told() {
    create(&[]).unwrap();
    assert_eq!(Export::info().traits, Traits::empty());
    create(&[("traits", "stable-order, sampled"), ("sample-size", "9")]).unwrap();
    let info = Export::info();
    assert_eq!(info.traits, Traits::STABLE_ORDER | Traits::SAMPLED);
    assert_eq!(info.sample_size, 9);
    let err = create(&[("traits", "fast")]).unwrap_err();
    assert!(err.contains("unknown trait `fast`"), "{err}");
}

#[test]
fn hostile_is_a_correct_lru_between_faults() {
    create(&[]).unwrap();
    assert_eq!(Export::victims(2, insert(&[5, 6, 7])).unwrap(), [5, 6]);
    create(&[("mode", "huge-name")]).unwrap();
    assert_eq!(Export::info().name.len(), 1 << 20);
    assert_eq!(Export::victims(1, insert(&[8, 9])).unwrap(), [8]);
}

#[test]
fn hostile_misbehaves_in_victims_as_configured() {
    create(&[("mode", "error")]).unwrap();
    assert_eq!(
        Export::victims(1, insert(&[1])),
        Err("hostile policy: refusing to choose".into())
    );
    create(&[("mode", "empty")]).unwrap();
    assert_eq!(Export::victims(3, insert(&[1, 2])).unwrap(), []);
    create(&[("mode", "garbage")]).unwrap();
    let garbage = Export::victims(3, insert(&[1, 2])).unwrap();
    assert_eq!(
        garbage,
        [NEVER_EXISTED - 1, NEVER_EXISTED - 2, NEVER_EXISTED - 3]
    );
    create(&[("mode", "bad-victims")]).unwrap();
    assert_eq!(
        Export::victims(1, insert(&[1, 2])).unwrap(),
        [NEVER_EXISTED, 1, 1, 2, 2]
    );
    create(&[("mode", "million")]).unwrap();
    let million = Export::victims(1, insert(&[1, 2])).unwrap();
    assert_eq!(million.len(), 1_000_000);
    assert_eq!(million[..3], [1, 2, NEVER_EXISTED - 1]);
    create(&[("mode", "mru")]).unwrap();
    assert_eq!(Export::victims(2, insert(&[1, 2, 3])).unwrap(), [3, 2]);
    create(&[("mode", "repeat")]).unwrap();
    assert_eq!(
        Export::victims(5, insert(&[1, 2, 3, 4])).unwrap(),
        [1, 1, 2, 2, 3]
    );
    assert_eq!(Export::victims(1, vec![0, 0, 0]).unwrap(), [1]);
    create(&[("mode", "huge-error")]).unwrap();
    assert_eq!(Export::victims(1, insert(&[1])).unwrap_err().len(), 1 << 20);
    assert_eq!(Export::maintain(1).unwrap_err().len(), 1 << 20);
}

#[test]
fn hostile_quota_mode_reads_six_word_usage() {
    create(&[("mode", "quota")]).unwrap();
    let usage = vec![7, 3, 0, 1000, 42, 1, 8, 0, 5, 1000, 43, 2];
    assert_eq!(
        Export::adjust_quotas(usage).unwrap(),
        [7, 3_000_000, 0, 8, 0, 0]
    );
    create(&[]).unwrap();
    assert_eq!(
        Export::adjust_quotas(vec![7, 3, 0, 1000, 42, 1]).unwrap(),
        []
    );
}

#[test]
fn hostile_rejects_malformed_input_like_any_sdk_policy() {
    create(&[]).unwrap();
    assert!(Export::victims(1, vec![1, 0, 0, 0]).is_err());
    assert!(Export::observe(vec![0, 1, 2]).is_err());
}
