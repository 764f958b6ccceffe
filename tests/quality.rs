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
#[path = "library/twin.rs"]
#[allow(dead_code)]
mod twin;

mod quality {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;
    use shadowcat::eviction::{
        EvictionPolicy, FlushHint, LiveSessions, PolicyEvent, QuotaAdjustment, QuotaUsage, Refusal,
        RemovalCause, Unavailable, VictimRequest,
    };
    use shadowcat::replay::{replay, CapacityMode, ReplayOutcome};
    use shadowcat::session::{Clock, FallbackReason, NewSession, SessionId, SessionTable};
    use shadowcat::wasm::{PolicyEngine, PolicyLimits, PolicyTable, WasmPolicy};
    use shadowcat::{QuotaBounds, RateLimit, TableConfig};

    use crate::common::{policy_file, reference_trace, shadowcat_cli, text};
    use crate::reference::driver::Driver;
    use crate::reference::{SplitMix64, Table};
    use crate::twin::Twin;

    const REQUESTS: u64 = 113_872;

    /// Generous deadlines: these tests are about answers, not time. Without
    /// prefetching, every victim of a stable-order policy comes from a call
    /// that can be checked.
    fn engine(prefetch: usize) -> Arc<PolicyEngine> {
        PolicyEngine::new(
            PolicyLimits {
                call_timeout: Duration::from_secs(10),
                prefetch,
                ..PolicyLimits::default()
            },
            None,
        )
        .expect("engine")
    }

    fn load_with(
        engine: Arc<PolicyEngine>,
        name: &str,
        table: PolicyTable,
        config: &[(&str, &str)],
    ) -> Arc<WasmPolicy> {
        let config = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WasmPolicy::load(engine, &policy_file(name), table, config)
            .unwrap_or_else(|e| panic!("{name}.wasm: {e}"))
    }

    fn load(name: &str, table: PolicyTable, config: &[(&str, &str)]) -> Arc<WasmPolicy> {
        load_with(engine(1), name, table, config)
    }

    /// Who decides beside the wasm: its model (a reference model under the
    /// guests' protocol rules), or another wasm that must agree with it.
    enum Twin2 {
        Model(Twin),
        Wasm(Arc<WasmPolicy>),
    }

    /// A shipped policy and its twin, side by side: the table gets the
    /// wasm's answers, and each is checked against the twin's, fed the very
    /// same events.
    struct SideBySide {
        wasm: Arc<WasmPolicy>,
        twin: Mutex<Checked>,
    }

    struct Checked {
        twin: Twin2,
        /// Events the table recorded since the model last caught up.
        events: Vec<PolicyEvent>,
        decisions: u64,
        refusals: u64,
    }

    impl Checked {
        fn catch_up(&mut self) {
            for event in std::mem::take(&mut self.events) {
                if let PolicyEvent::Refused { .. } = event {
                    self.refusals += 1;
                }
                let Twin2::Model(twin) = &mut self.twin else {
                    continue;
                };
                match event {
                    PolicyEvent::Inserted { id, time, key, .. } => {
                        twin.insert(id.to_bits(), key, time)
                    }
                    PolicyEvent::Accessed { id, time, .. } => twin.access(id.to_bits(), time),
                    PolicyEvent::Removed { id, cause, .. } => {
                        twin.remove(id.to_bits(), cause == RemovalCause::Evicted)
                    }
                    PolicyEvent::Refused { id, reason, .. } => {
                        twin.refused(id.to_bits(), reason == Refusal::Pinned)
                    }
                }
            }
        }
    }

    impl SideBySide {
        /// `name` beside the model `reference::build` makes of `model`.
        fn with_model(
            name: &str,
            model: &str,
            table: PolicyTable,
            config: &[(&str, &str)],
        ) -> Arc<Self> {
            let model_table = Table {
                capacity: table.capacity as usize,
                idle_timeout: table.idle_timeout,
                max_age: table.max_age,
            };
            let twin = Twin::build(model, &model_table, config)
                .unwrap_or_else(|e| panic!("model {model} {config:?}: {e}"));
            Self::new(load(name, table, config), Twin2::Model(twin))
        }

        /// `name` beside another wasm, `twin`, with the same settings.
        fn with_wasm(name: &str, twin: &str, table: PolicyTable) -> Arc<Self> {
            Self::new(load(name, table, &[]), Twin2::Wasm(load(twin, table, &[])))
        }

        fn new(wasm: Arc<WasmPolicy>, twin: Twin2) -> Arc<Self> {
            Arc::new(Self {
                wasm,
                twin: Mutex::new(Checked {
                    twin,
                    events: Vec::new(),
                    decisions: 0,
                    refusals: 0,
                }),
            })
        }

        fn decisions(&self) -> (u64, u64) {
            let t = self.twin.lock();
            (t.decisions, t.refusals)
        }

        fn assert_no_faults(&self) {
            for w in [Some(&self.wasm), self.twin_wasm().as_ref()]
                .into_iter()
                .flatten()
            {
                let m = w.metrics();
                assert_eq!(m.faults() + m.guest_errors, 0, "{}: {m:?}", w.name());
            }
        }

        fn twin_wasm(&self) -> Option<Arc<WasmPolicy>> {
            match &self.twin.lock().twin {
                Twin2::Wasm(w) => Some(w.clone()),
                Twin2::Model(_) => None,
            }
        }
    }

    impl EvictionPolicy for SideBySide {
        fn name(&self) -> &str {
            self.wasm.name()
        }

        fn record(&self, event: PolicyEvent) -> FlushHint {
            let mut twin = self.twin.lock();
            if let Twin2::Wasm(w) = &twin.twin {
                if w.record(event) == FlushHint::FlushSoon {
                    w.flush();
                }
            }
            twin.events.push(event);
            self.wasm.record(event)
        }

        fn victims(
            &self,
            request: VictimRequest<'_>,
            out: &mut Vec<SessionId>,
        ) -> Result<(), Unavailable> {
            let start = out.len();
            let answered = self.wasm.victims(request, out);
            assert_eq!(
                answered,
                Ok(()),
                "{}: {:?}",
                self.name(),
                self.wasm.metrics()
            );
            let got: Vec<u64> = out[start..].iter().map(|id| id.to_bits()).collect();
            let key = request.arriving.map_or(0, |a| a.key);
            let mut twin = self.twin.lock();
            twin.catch_up();
            let expected: Vec<u64> = match &mut twin.twin {
                Twin2::Model(model) => {
                    let candidates: Vec<u64> =
                        request.candidates.iter().map(|c| c.id.to_bits()).collect();
                    model.victims(request.count, key, &candidates)
                }
                Twin2::Wasm(w) => {
                    let mut theirs = Vec::new();
                    assert_eq!(w.victims(request, &mut theirs), Ok(()));
                    theirs.iter().map(|id| id.to_bits()).collect()
                }
            };
            assert_eq!(
                got,
                expected,
                "{}: decision {} (count {}, arriving key {key}): the wasm (left) and its twin \
                 (right) differ",
                self.name(),
                twin.decisions,
                request.count
            );
            twin.decisions += 1;
            answered
        }

        fn sample_size(&self) -> usize {
            self.wasm.sample_size()
        }

        fn learns_from_refusals(&self) -> bool {
            self.wasm.learns_from_refusals()
        }

        fn ready_victims(&self, count: usize, out: &mut Vec<SessionId>) {
            // Prefetching would hand out victims without a call to check;
            // the engine here prefetches nothing.
            self.wasm.ready_victims(count, out);
            assert!(
                out.is_empty(),
                "{}: no prefetch in these tests",
                self.name()
            );
        }

        fn flush(&self) {
            self.wasm.flush();
        }

        fn maintain(&self, now: u64) {
            let mut twin = self.twin.lock();
            twin.catch_up();
            match &mut twin.twin {
                Twin2::Model(model) => model.maintain(now),
                Twin2::Wasm(w) => w.maintain(now),
            }
            drop(twin);
            self.wasm.maintain(now);
        }

        fn adjust_quotas(&self, usage: &[QuotaUsage], out: &mut Vec<QuotaAdjustment>) {
            self.wasm.adjust_quotas(usage, out);
        }

        fn attach_live_sessions(&self, source: LiveSessions) {
            self.wasm.attach_live_sessions(source);
        }
    }

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

    /// The reference trace as the models' driver replays it: (misses, misses
    /// plus re-arrivals, which is what the simulator counts).
    fn model_misses(name: &str, config: &[(&str, &str)], capacity: u64) -> (u64, u64) {
        let trace = reference_trace();
        let mut model =
            crate::reference::build(name, &Table::with_capacity(capacity as usize), config)
                .expect("model");
        // Keys as the host's replay makes them: object ids plus one.
        let requests = trace
            .requests
            .iter()
            .map(|r| (r.time, r.id.wrapping_add(1)));
        let replayed = Driver::new(capacity as usize)
            .replay(&mut *model, requests)
            .expect("model replay");
        (replayed.misses, replayed.misses + model.rearrivals())
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
