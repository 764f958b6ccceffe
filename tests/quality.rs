//! The W-TinyLFU guests, `fair-quota` and the C policy through the host:
//! libCacheSim's W-TinyLFU figure reproduced, every decision of a shipped
//! W-TinyLFU equal to its model's (on the reference trace, and through a
//! table with pins, expiry and closes), fair-share quotas moving the right way
//! within the host's bounds, and the C `lru` deciding exactly as the Rust one.
//!
//! How much less the tuned W-TinyLFU misses than `moka` and `quick_cache` is
//! measured, not asserted: `cargo bench --bench caches` prints it.

mod common;
#[path = "reference/mod.rs"]
mod reference;
#[path = "library/side_by_side.rs"]
mod side_by_side;
#[path = "library/twin.rs"]
#[allow(dead_code)]
mod twin;

mod quality {
    use std::sync::Arc;
    use std::time::Duration;

    use shadowcat::eviction::{EvictionPolicy, RemovalCause};
    use shadowcat::replay::{replay, CapacityMode, ReplayOutcome};
    use shadowcat::session::{Clock, FallbackReason, NewSession, SessionId, SessionTable};
    use shadowcat::wasm::PolicyTable;
    use shadowcat::{QuotaBounds, RateLimit, TableConfig};

    use crate::common::{policy_file, reference_trace, shadowcat_cli, text};

    use crate::reference::SplitMix64;
    use crate::side_by_side::{engine, load, load_with, model_misses, SideBySide};

    const REQUESTS: u64 = 113_872;

    fn replay_reference(policy: Arc<dyn EvictionPolicy>, capacity: u64) -> ReplayOutcome {
        replay(
            &reference_trace(),
            policy,
            capacity,
            CapacityMode::Objects,
            &mut |_| {},
        )
        .expect("replay")
    }

    /// The reference figure: libCacheSim's `wtinylfu` misses 88,374
    /// of 113,872 (0.7761) at 4,897. The variant evicts exactly as its model
    /// does, and both are within the 0.005 of it. Not exactly on it:
    /// the host's keys are object ids plus one (0 means no key), which
    /// libCacheSim's hash takes for other ids (`tests/reference.rs` replays
    /// the ids themselves and gets 88,374); and a session libCacheSim evicts
    /// on a hit leaves the table only at the next arrival, so a request in
    /// between is a hit for the table.
    #[test]
    fn quality_wtinylfu_libcachesim_variant_is_within_0005_of_libcachesim_at_4897() {
        let config = [("variant", "libcachesim")];
        let policy =
            SideBySide::with_model("wtinylfu", "wtinylfu", PolicyTable::from(4_897), &config);
        let outcome = replay_reference(policy.clone(), 4_897);
        policy.assert_no_faults();
        assert_eq!(outcome.fallback_victims, 0, "{outcome:?}");
        let (table_misses, simulator_misses) = model_misses("wtinylfu", &config, 4_897);
        assert_eq!(outcome.misses, table_misses, "the host misses as the model");
        for misses in [outcome.misses, simulator_misses] {
            let ratio = misses as f64 / REQUESTS as f64;
            assert!((ratio - 0.7761).abs() <= 0.005, "miss ratio {ratio:.4}");
        }
    }

    /// Caffeine's variant (the default) and the tuned one decide exactly as
    /// their models on the reference trace, so the figures `benches/caches.rs`
    /// prints for the models are the shipped policies' too.
    #[test]
    fn quality_wtinylfu_guests_decide_as_their_models_on_the_reference_trace() {
        for (name, config) in [
            ("wtinylfu", &[][..]),
            ("wtinylfu-tuned", &[][..]),
            ("wtinylfu", &[("variant", "tuned")][..]),
        ] {
            let policy = SideBySide::with_model(name, name, PolicyTable::from(4_897), config);
            let outcome = replay_reference(policy.clone(), 4_897);
            policy.assert_no_faults();
            let (decisions, _) = policy.decisions();
            assert_eq!(
                decisions, outcome.evictions,
                "{name}: one call per eviction"
            );
            assert_eq!(outcome.fallback_victims, 0, "{name}: {outcome:?}");
            let (model, _) = model_misses(name, config, 4_897);
            assert_eq!(outcome.misses, model, "{name} {config:?}");
        }
    }

    /// Creates (clients coming back under new sessions), requests that pin
    /// while in flight, closes, expiry and maintenance on a small table with
    /// a manual clock, `policy` deciding throughout.
    fn churn(policy: Arc<SideBySide>, config: TableConfig, seed: u64) -> ChurnEnd {
        let table: Arc<SessionTable<()>> = SessionTable::builder(config)
            .policy(policy.clone())
            .clock(Clock::manual())
            .build_shared()
            .expect("table");
        let mut rng = SplitMix64(seed);
        let mut live: Vec<(SessionId, u64)> = Vec::new();
        let mut pinned: Vec<SessionId> = Vec::new();
        let mut now = 0u64;
        for _ in 0..6_000 {
            now += rng.below(4_000_000) as u64;
            table.clock().set(now);
            live.retain(|(id, _)| table.get(*id).is_some());
            pinned.retain(|id| table.get(*id).is_some());
            match rng.below(100) {
                // 150 clients for 48 places; a few popular ones.
                0..=39 => {
                    let key = if rng.below(3) == 0 {
                        1 + rng.below(10) as u64
                    } else {
                        1 + rng.below(150) as u64
                    };
                    if live.iter().any(|&(_, k)| k == key) {
                        continue;
                    }
                    let created = table
                        .create(NewSession::anonymous(()).with_key(key))
                        .expect("a table with unpinned sessions always makes room");
                    live.push((created.id, key));
                }
                40..=74 => {
                    if let Some(&(id, _)) = live.get(rng.below(live.len().max(1))) {
                        if !pinned.contains(&id) {
                            let _ = table.touch(id, 1);
                        }
                    }
                }
                75..=79 => {
                    if let Some(&(id, _)) = live.get(rng.below(live.len().max(1))) {
                        let _ = table.remove(id, RemovalCause::Closed);
                    }
                }
                80..=84 => {
                    table.run_maintenance();
                }
                _ => {
                    // Long requests outlast several evictions.
                    if let Some(&(id, _)) = live.get(rng.below(live.len().max(1))) {
                        match pinned.iter().position(|&p| p == id) {
                            Some(i) if rng.below(5) == 0 => {
                                pinned.swap_remove(i);
                                table.end_request(id).expect("pinned");
                            }
                            Some(_) => {}
                            None if pinned.len() < 4 => {
                                table.begin_request(id, 1).expect("begins");
                                pinned.push(id);
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        ChurnEnd { table, pinned }
    }

    struct ChurnEnd {
        table: Arc<SessionTable<()>>,
        pinned: Vec<SessionId>,
    }

    impl ChurnEnd {
        /// Nothing lost, nothing over the bound, pins held.
        fn assert_sound(&self, name: &str) {
            let stats = self.table.stats();
            let m = self.table.metrics();
            assert!(stats.live <= self.table.config().max_sessions);
            assert_eq!(stats.lru_len, stats.live);
            assert_eq!(m.created, stats.live as u64 + m.removed(), "{name}: {m:?}");
            for id in &self.pinned {
                assert!(
                    self.table.get(*id).is_some(),
                    "{name}: a pinned session was evicted"
                );
            }
        }

        /// Every victim was the policy's own: after a pinned refusal, the
        /// re-ask found an unpinned one.
        fn assert_policy_chose(&self, name: &str) {
            let m = self.table.metrics();
            assert_eq!(m.fallback_victims, 0, "{name}: {m:?}");
            assert_eq!(
                m.fallbacks_by(FallbackReason::Short),
                0,
                "{name}: every re-ask found an unpinned victim: {m:?}"
            );
        }
    }

    fn churn_table() -> TableConfig {
        TableConfig {
            idle_timeout: Some(Duration::from_secs(600)),
            max_age: Some(Duration::from_secs(3_600)),
            ..TableConfig::unbounded_in_time(48)
        }
    }

    /// The victim sequence of each W-TinyLFU guest through a real table,
    /// pinned refusals and re-asks included, equals its model's.
    #[test]
    fn quality_wtinylfu_victims_match_the_model_through_a_table_with_pins() {
        for (name, config) in [
            ("wtinylfu", &[][..]),
            ("wtinylfu", &[("variant", "libcachesim")][..]),
            ("wtinylfu", &[("window", "0.25"), ("protected", "0.5")][..]),
            ("wtinylfu-tuned", &[][..]),
        ] {
            let mut refusals = 0;
            for seed in 1..=3 {
                let config_table = churn_table();
                let policy = SideBySide::with_model(
                    name,
                    name,
                    PolicyTable::of_config(&config_table),
                    config,
                );
                let end = churn(policy.clone(), config_table, seed);
                end.assert_sound(name);
                end.assert_policy_chose(name);
                policy.assert_no_faults();
                let m = end.table.metrics();
                let (decisions, refused) = policy.decisions();
                assert!(m.evicted > 500 && decisions >= m.evicted, "{name}: {m:?}");
                refusals += refused;
            }
            assert!(
                refusals > 20,
                "{name} {config:?}: pins were refused: {refusals}"
            );
        }
    }

    /// The C `lru` (built from `policies/lru-c/` by `wit-bindgen c` and
    /// clang, loaded like any other policy) decides as the Rust `lru` on
    /// every call through a table with pins (neither learns from refusals, so
    /// the host takes over after a pinned one, alike), and reproduces
    /// libCacheSim's LRU count on the reference trace, prefetched or not.
    #[test]
    fn quality_c_lru_decides_as_the_rust_lru() {
        let c = load("lru-c", PolicyTable::from(48), &[]);
        let info = c.info();
        assert_eq!(info.name, "lru-c");
        assert!(info.traits.stable_order);
        for seed in 1..=3 {
            let config = churn_table();
            let policy = SideBySide::with_wasm("lru-c", "lru", PolicyTable::of_config(&config));
            let end = churn(policy.clone(), config, seed);
            end.assert_sound("lru-c");
            policy.assert_no_faults();
            let (decisions, refused) = policy.decisions();
            assert!(
                decisions > 500 && refused > 5,
                "{decisions} decisions, {refused} refusals"
            );
        }
        let policy = SideBySide::with_wasm("lru-c", "lru", PolicyTable::from(4_897));
        let outcome = replay_reference(policy.clone(), 4_897);
        policy.assert_no_faults();
        assert_eq!(outcome.misses, 91_657, "libCacheSim's LRU");
        // Its `stable-order` promise holds: prefetched, it misses the same.
        let prefetched = load_with(
            engine(shadowcat::wasm::PREFETCH),
            "lru-c",
            PolicyTable::from(4_897),
            &[],
        );
        assert_eq!(replay_reference(prefetched.clone(), 4_897).misses, 91_657);
        assert!(prefetched.metrics().calls * 4 < outcome.evictions);
    }

    /// The host asks a stable-order policy further ahead while its answers
    /// are used up (FIFO's always are: nothing but its own evictions names
    /// its victims), and keeps a ghost-conditional one (2Q) at the depth it
    /// starts from: fewer calls, the same decisions.
    #[test]
    fn quality_host_asks_further_ahead_while_answers_are_used_up() {
        let run = |name: &str, prefetch: usize| {
            let policy = load_with(engine(prefetch), name, PolicyTable::from(4_897), &[]);
            let outcome = replay_reference(policy.clone(), 4_897);
            (outcome, policy.metrics().calls)
        };
        let (fixed, fixed_calls) = run("fifo", 32);
        let (adaptive, adaptive_calls) = run("fifo", shadowcat::wasm::PREFETCH);
        assert_eq!(fixed.misses, 91_716);
        assert_eq!(adaptive.misses, 91_716);
        // 32 a call is a call per 31 evictions; from 64 on, half as many.
        assert!(fixed_calls * 40 > fixed.evictions, "{fixed_calls} calls");
        assert!(
            adaptive_calls * 64 < adaptive.evictions,
            "{adaptive_calls} calls for {} evictions",
            adaptive.evictions
        );
        let (fixed, fixed_calls) = run("twoq", 32);
        let (adaptive, adaptive_calls) = run("twoq", shadowcat::wasm::PREFETCH);
        assert_eq!(adaptive.misses, fixed.misses);
        assert_eq!(adaptive_calls, fixed_calls);
    }

    /// `policy check` (interface, imports, every export through a table)
    /// passes each policy of this file, C included: no special case.
    #[test]
    fn quality_policy_check_passes_the_new_policies() {
        for name in ["wtinylfu", "wtinylfu-tuned", "fair-quota", "lru-c"] {
            let path = policy_file(name);
            let out = shadowcat_cli(&["policy", "check", path.to_str().expect("utf-8 path")]);
            assert!(
                out.status.success(),
                "{name}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let out = shadowcat_cli(&[
            "policy",
            "check",
            policy_file("wtinylfu").to_str().expect("utf-8 path"),
            "--policy-config",
            "window=2",
        ]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("`window`"),
            "{}",
            text(&out.stderr)
        );
    }

    /// Two tenants on a table with a per-session limit: tenant 1 runs three
    /// busy sessions, tenant 2 one busy and one light. Round by round, each
    /// tenant's busy sessions get half the budget whatever their number, the
    /// light session keeps its share, and every limit stays within the
    /// host's bounds.
    #[test]
    fn quality_fair_quota_moves_quotas_toward_fair_shares_within_the_bounds() {
        let bounds = QuotaBounds {
            min_per_second: 15,
            max_per_second: 40,
            min_burst: 5,
            max_burst: 30,
        };
        let config = TableConfig {
            rate_limit: Some(RateLimit {
                per_second: 20.try_into().expect("non-zero"),
                burst: 20.try_into().expect("non-zero"),
            }),
            quota_bounds: bounds,
            ..TableConfig::unbounded_in_time(16)
        };
        let policy = load(
            "fair-quota",
            PolicyTable::of_config(&config),
            &[("budget", "120"), ("increase", "4")],
        );
        let table: SessionTable<()> = SessionTable::builder(config)
            .policy(policy.clone())
            .clock(Clock::manual())
            .build()
            .expect("table");
        let create = |tenant: u32, key: u64| {
            table
                .create(NewSession::anonymous(()).with_key(key).with_tenant(tenant))
                .expect("room")
                .id
        };
        let busy_1: Vec<SessionId> = (1..=3).map(|k| create(1, k)).collect();
        let busy_2 = create(2, 4);
        let light_2 = create(2, 5);
        let limit = |id: SessionId| {
            let l = table.rate_limit(id).expect("live").expect("limited");
            (l.per_second.get(), l.burst.get())
        };
        let mut history = Vec::new();
        for round in 1..=8u64 {
            table.clock().set(round * 1_000_000);
            // Busy sessions try 200 requests a second, the light one 3.
            for &id in busy_1.iter().chain([&busy_2]) {
                for _ in 0..200 {
                    let _ = table.touch(id, 1);
                }
            }
            for _ in 0..3 {
                let _ = table.touch(light_2, 1);
            }
            assert!(table.adjust_quotas(round * 1_000_000) >= 5, "round {round}");
            let limits: Vec<(u32, u32)> = busy_1
                .iter()
                .chain([&busy_2, &light_2])
                .map(|&id| limit(id))
                .collect();
            for &(rate, burst) in &limits {
                assert!(
                    (15..=40).contains(&rate) && (5..=30).contains(&burst),
                    "{limits:?}"
                );
            }
            history.push(limits);
        }
        let first = &history[0];
        let last = history.last().expect("rounds");
        // Tenant 1's 60 over three busy sessions: 20 each, down from the
        // host's 20 only by rounding, never below the bound of 15.
        for (s, limit) in last[..3].iter().enumerate() {
            assert_eq!(limit.0, 20, "tenant 1 session {s}: {history:?}");
        }
        // Tenant 2's busy session climbs by 4 a round toward the 57 its light
        // neighbour leaves it, then sits at the host's maximum of 40.
        assert_eq!(first[3].0, 34, "{history:?}");
        assert!(
            history.windows(2).all(|w| w[1][3].0 >= w[0][3].0),
            "{history:?}"
        );
        assert_eq!(last[3], (40, 30), "clamped to the bounds: {history:?}");
        // The light session keeps its equal share (30), not its usage (3).
        assert_eq!(last[4].0, 30, "{history:?}");
        assert!(
            last[3].0 > last[0].0,
            "a busy session of the tenant with fewer sessions gets more"
        );
        assert_eq!(policy.metrics().faults(), 0);
    }
}
