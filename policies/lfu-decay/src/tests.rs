use shadowcat_policy_sdk::bindings::shadowcat::policy::types::Table as WitTable;
use shadowcat_policy_sdk::{Candidate, Choice, Config, Guest, Policy, Session, Table, Traits};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

use crate::{Export, LFU_INIT_VAL, LfuDecay};

const MINUTE: u64 = 60_000_000;

fn config(pairs: &[(&str, &str)]) -> Config {
    Config::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn lfu(pairs: &[(&str, &str)]) -> Result<OnTable<LfuDecay>, String> {
    OnTable::<LfuDecay>::create(&Table::new(64), &config(pairs))
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

fn candidates(ids: &[u64]) -> Vec<Candidate> {
    ids.iter()
        .map(|&id| Candidate {
            id,
            last_access: 0,
            requests: 1,
            key: id + 1,
        })
        .collect()
}

fn victim(p: &mut OnTable<LfuDecay>, among: &[u64]) -> Vec<u64> {
    let candidates = candidates(among);
    let choice = Choice {
        arriving: None,
        candidates: &candidates,
    };
    let mut out = Vec::new();
    p.victims(1, &choice, &mut out);
    out
}

#[test]
fn lfu_decay_matches_the_reference_model_on_sampled_candidates() {
    assert_matches_model(|_| lfu(&[]).unwrap(), "lfu-decay", &[], true);
}

#[test]
fn lfu_decay_matches_the_reference_model_without_candidates() {
    assert_matches_model(|_| lfu(&[]).unwrap(), "lfu-decay", &[], false);
}

#[test]
fn lfu_decay_variants_match_the_reference_model() {
    for pairs in [
        &[("lfu-log-factor", "0"), ("seed", "7")][..],
        &[("lfu-log-factor", "1"), ("lfu-decay-time", "0")],
        &[("samples", "16"), ("lfu-log-factor", "100")],
    ] {
        assert_matches_model(|_| lfu(pairs).unwrap(), "lfu-decay", pairs, true);
    }
}

/// The counter decays on `maintain` alone, with no request: a tick moves the
/// policy's time on, and every counter is read at that time.
#[test]
fn lfu_decay_counters_decay_through_maintain() {
    // Factor 0 counts every request: 5 + requests.
    let mut p = lfu(&[("lfu-log-factor", "0")]).unwrap();
    p.on_insert(&at(1, 0));
    for _ in 0..10 {
        p.on_access(&at(1, 0));
    }
    p.on_insert(&at(2, 0));
    assert_eq!(p.policy().counter(1), Some(15));
    p.maintain(3 * MINUTE).unwrap();
    assert_eq!(p.policy().counter(1), Some(12));
    assert_eq!(p.policy().counter(2), Some(LFU_INIT_VAL - 3));
    p.maintain(30 * MINUTE).unwrap();
    assert_eq!(
        (p.policy().counter(1), p.policy().counter(2)),
        (Some(0), Some(0))
    );
}

/// Without the tick the hot session is safe; after it, the hot and the never
/// used session are both cold, and the first sampled goes.
#[test]
fn lfu_decay_a_tick_changes_the_victim() {
    let setup = || {
        let mut p = lfu(&[("lfu-log-factor", "0")]).unwrap();
        p.on_insert(&at(1, 0));
        for _ in 0..10 {
            p.on_access(&at(1, 0));
        }
        p.on_insert(&at(2, 0));
        p
    };
    assert_eq!(victim(&mut setup(), &[1, 2]), vec![2]);
    let mut ticked = setup();
    ticked.maintain(20 * MINUTE).unwrap();
    assert_eq!(victim(&mut ticked, &[1, 2]), vec![1]);
}

/// A request decays before it counts, and growth is logarithmic: about
/// redis.conf's table for factor 10 (a random process).
#[test]
fn lfu_decay_counter_grows_as_redis_conf_tabulates() {
    let mut p = lfu(&[]).unwrap();
    p.on_insert(&at(1, 0));
    let mut requests = 0u64;
    for (target, expected) in [(100u64, 10u8), (1_000, 18), (100_000, 142)] {
        while requests < target {
            p.on_access(&at(1, 0));
            requests += 1;
        }
        let got = p.policy().counter(1).unwrap();
        assert!(
            got.abs_diff(expected) <= expected / 5 + 1,
            "after {target}: {got}, redis.conf says {expected}"
        );
    }
    // Ten idle minutes, then one request: decayed by 10 first.
    let before = p.policy().counter(1).unwrap();
    p.on_access(&at(1, 10 * MINUTE));
    assert!(p.policy().counter(1).unwrap() <= before - 9);
}

#[test]
fn lfu_decay_declares_its_configured_sample_size() {
    let table = WitTable {
        capacity: 64,
        byte_mode: false,
        idle_timeout: 0,
        max_age: 0,
    };
    Export::create(table, Vec::new()).unwrap();
    assert_eq!(
        Export::info().sample_size,
        5,
        "redis.conf's maxmemory-samples"
    );
    Export::create(table, vec![("samples".into(), "12".into())]).unwrap();
    let info = Export::info();
    assert_eq!((info.name.as_str(), info.sample_size), ("lfu-decay", 12));
    assert!(info.traits.contains(Traits::SAMPLED));
}

#[test]
fn lfu_decay_rejects_bad_settings_naming_the_key() {
    for (pairs, needle) in [
        (&[("lfu-log-factor", "-1")][..], "`lfu-log-factor`"),
        (&[("lfu-log-factor", "2147483648")], "`lfu-log-factor`"),
        (&[("lfu-decay-time", "2147483648")], "`lfu-decay-time`"),
        (&[("lfu-decay-time", "1m")], "`lfu-decay-time`"),
        (&[("samples", "0")], "`samples`"),
        (&[("samples", "1025")], "`samples`"),
        (&[("seed", "x")], "`seed`"),
        (&[("maxmemory-samples", "5")], "`maxmemory-samples`"),
    ] {
        let err = lfu(pairs).err().expect("refused");
        assert!(err.contains(needle), "{pairs:?}: {err}");
    }
}
