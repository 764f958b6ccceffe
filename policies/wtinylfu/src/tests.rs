use shadowcat_policy_sdk::{Arriving, Choice, Config, Policy, RemovalCause, Session, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

use crate::{Caffeine, WTinyLfu};

type Guest = OnTable<WTinyLfu<Caffeine>>;

fn create(capacity: u64, config: &[(&str, &str)]) -> Result<Guest, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Guest::create(&Table::new(capacity), &Config::new(config))
}

fn maker(config: &'static [(&'static str, &'static str)]) -> impl Fn(u64) -> Guest {
    move |capacity| create(capacity, config).expect("valid config")
}

#[test]
fn wtinylfu_caffeine_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(maker(&[]), "wtinylfu", &[], false);
}

/// A small table reaches the climber's sample often, so the window moves
/// both ways during the run.
#[test]
fn wtinylfu_climbing_matches_the_reference_model_on_a_small_table() {
    assert_matches_model(
        maker(&[("window", "0.2"), ("protected", "0.5")]),
        "wtinylfu",
        &[("window", "0.2"), ("protected", "0.5")],
        false,
    );
}

#[test]
fn wtinylfu_tuned_variant_matches_the_reference_model() {
    assert_matches_model(
        maker(&[("variant", "tuned")]),
        "wtinylfu",
        &[("variant", "tuned")],
        false,
    );
}

#[test]
fn wtinylfu_libcachesim_variant_matches_the_reference_model() {
    assert_matches_model(
        maker(&[("variant", "libcachesim")]),
        "wtinylfu",
        &[("variant", "libcachesim")],
        false,
    );
}

#[test]
fn wtinylfu_every_setting_overrides_the_variant() {
    let config: &'static [(&'static str, &'static str)] = &[
        ("variant", "tuned"),
        ("window", "0.1"),
        ("protected", "0.6"),
        ("adaptive", "true"),
        ("sketch-width", "2"),
        ("sample", "5"),
        ("doorkeeper", "false"),
        ("victim-sample", "3"),
    ];
    assert_matches_model(maker(config), "wtinylfu", config, false);
}

#[test]
fn wtinylfu_bad_values_are_refused_naming_the_key() {
    for (key, value) in [
        ("variant", "lru"),
        ("window", "0"),
        ("window", "1"),
        ("window", "x"),
        ("protected", "1.5"),
        ("adaptive", "maybe"),
        ("sketch-width", "3"),
        ("sketch-width", "512"),
        ("sample", "0"),
        ("doorkeeper", "2"),
        ("victim-sample", "0"),
        ("victim-sample", "2000"),
    ] {
        let err = create(100, &[(key, value)])
            .err()
            .unwrap_or_else(|| panic!("{key}={value} accepted"));
        assert!(err.contains(&format!("`{key}`")), "{key}={value}: {err}");
    }
    let err = create(100, &[("windw", "0.1")]).err().expect("a typo");
    assert!(err.contains("`windw`"), "{err}");
    let err = create(100, &[("variant", "libcachesim"), ("window", "0.1")])
        .err()
        .expect("libCacheSim's sizes are fixed");
    assert!(
        err.contains("`window`") && err.contains("libcachesim"),
        "{err}"
    );
    let bytes = Table {
        byte_mode: true,
        ..Table::new(1 << 20)
    };
    assert!(Guest::create(&bytes, &Config::default()).is_err());
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

fn victim(p: &mut Guest, arriving_key: u64) -> u64 {
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

/// The sketch counts stable keys: a client requested often comes back under
/// a new session id and wins admission over residents requested twice, where
/// a new client loses.
#[test]
fn wtinylfu_frequency_follows_the_key_across_sessions() {
    // A window of one session: every arrival makes its predecessor compete.
    let mut p = create(10, &[("adaptive", "false")]).unwrap();
    for id in 1..=10 {
        p.on_insert(&session(id, id));
    }
    // The sketch exists from the fifth insert on (half full).
    for id in 2..=10 {
        p.on_access(&session(id, id));
        p.on_access(&session(id, id));
    }
    for _ in 0..5 {
        p.on_access(&session(1, 1));
    }
    p.on_remove(1, 0, RemovalCause::ExpiredIdle);
    p.on_insert(&session(11, 1));
    let gone = victim(&mut p, 300);
    assert_ne!(gone, 11, "the returning client lost admission");
    p.on_insert(&session(12, 300));
    assert_eq!(victim(&mut p, 400), 12, "a new client wins admission");
}
