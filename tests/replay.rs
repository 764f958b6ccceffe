//! Trace replay and `shadowcat bench`: exact reference figures, a hand-worked
//! trace for every policy, and clear errors on bad input (through the binary).

mod common;

mod replay {
    use std::path::Path;
    use std::sync::Arc;

    use shadowcat::bench::{self, BenchPlan, CapacitySpec, Quiet};
    use shadowcat::eviction::{EvictionPolicy, Fifo, HostLru};
    use shadowcat::replay::{replay, CapacityMode, ReplayOutcome};
    use shadowcat::session::FallbackReason;
    use shadowcat::trace::{Request, Trace};
    use shadowcat::wasm::{
        open_policy, ConfiguredPolicy, OpenedPolicy, PolicyEngine, PolicyLimits, PolicyTable,
    };

    use crate::common::{
        assert_ends_quietly_on_a_closed_stdout, fixture, reference_trace, reference_trace_path,
        shadowcat_cli, shadowcat_command, text,
    };

    fn misses(trace: &Trace, policy: Arc<dyn EvictionPolicy>, capacity: u64) -> u64 {
        replay(trace, policy, capacity, CapacityMode::Objects, &mut |_| {})
            .expect("replay")
            .misses
    }

    fn policies_dir() -> Vec<std::path::PathBuf> {
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")]
    }

    fn open_configured(
        policy: &ConfiguredPolicy,
        table: PolicyTable,
    ) -> Result<OpenedPolicy, shadowcat::wasm::PolicyError> {
        open_policy(
            &policy.spec,
            &policies_dir(),
            || {
                let limits = PolicyLimits {
                    call_timeout: std::time::Duration::from_secs(10),
                    backoff_base: std::time::Duration::ZERO,
                    ..PolicyLimits::default()
                };
                PolicyEngine::new(limits, None)
            },
            table,
            policy.config.clone(),
        )
    }

    fn open(name: &str, capacity: u64) -> Arc<dyn EvictionPolicy> {
        open_configured(&ConfiguredPolicy::named(name), capacity.into())
            .expect("policy opens")
            .eviction()
    }

    fn hostile_path() -> String {
        fixture("hostile.wasm").display().to_string()
    }

    /// The hostile fixture with settings, as `bench` labels it.
    fn hostile_with(config: &[(&str, &str)]) -> ConfiguredPolicy {
        let spec = hostile_path();
        let config: Vec<(String, String)> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pairs: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ConfiguredPolicy {
            label: format!("{spec}:{}", pairs.join(",")),
            spec,
            config,
        }
    }

    #[test]
    fn replay_reference_trace_gives_the_reference_lru_and_fifo_misses() {
        let trace = reference_trace();
        assert_eq!(trace.len(), 113_872);
        assert_eq!(misses(&trace, Arc::new(HostLru), 4_897), 91_657);
        assert_eq!(misses(&trace, Arc::new(Fifo::default()), 4_897), 91_716);
        assert_eq!(misses(&trace, open("lru.wasm", 4_897), 4_897), 91_657);
        assert_eq!(misses(&trace, open("fifo.wasm", 4_897), 4_897), 91_716);
    }

    /// ids 1 2 3 1 4 1 2 5 2 3 at capacity 3, worked out by hand:
    /// - LRU: misses at 1 2 3 _ 4 _ 2 5 _ 3 = 7 (4 evicts 2, 2 evicts 3, 5 evicts 4, 3 evicts 1)
    /// - FIFO: misses at 1 2 3 _ 4 1 2 5 _ 3 = 8 (evicting 1, 2, 3, 4, 1 in turn)
    /// - LFU (ties to least recent): 1 2 3 _ 4 _ 2 5 _ 3 = 7 (4 evicts 2 (count 1,
    ///   older than 3), 2 evicts 3, 5 evicts 4, 3 evicts 5)
    /// - Belady: 1 2 3 _ 4 _ _ 5 _ 3 = 6 (4 evicts 3, next used farthest)
    fn hand_trace() -> Trace {
        let ids = [1u64, 2, 3, 1, 4, 1, 2, 5, 2, 3];
        trace_of("hand", &ids.map(|id| (id, 1)))
    }

    /// One request per microsecond: `(object id, size)` in order.
    fn trace_of(name: &str, requests: &[(u64, u32)]) -> Trace {
        let requests = requests
            .iter()
            .enumerate()
            .map(|(time, &(id, size))| Request::new(time as u64, id, size))
            .collect();
        Trace::new(name, requests)
    }

    fn native_lru_in_bytes(trace: &Trace, capacity: u64) -> ReplayOutcome {
        replay(
            trace,
            Arc::new(HostLru),
            capacity,
            CapacityMode::Bytes,
            &mut |_| {},
        )
        .expect("replay")
    }

    #[test]
    fn replay_hand_worked_trace_for_every_policy() {
        let trace = hand_trace();
        let expected = [
            ("lru", 7),
            ("fifo", 8),
            ("lru.wasm", 7),
            ("fifo.wasm", 8),
            ("lfu.wasm", 7),
        ];
        for (name, want) in expected {
            assert_eq!(misses(&trace, open(name, 3), 3), want, "{name}");
        }
        assert_eq!(shadowcat::trace::belady_misses(&trace, 3), 6);
        // The same figures through the comparison, with Belady's row.
        let plan = BenchPlan {
            capacities: vec![CapacitySpec::Absolute(3)],
            policies: expected
                .iter()
                .map(|(n, _)| ConfiguredPolicy::named(n))
                .collect(),
            mode: CapacityMode::Objects,
            belady: true,
            named: true,
            rounds: 1,
        };
        let report = bench::run(&trace, &plan, &open_configured, &mut Quiet).expect("bench");
        let got: Vec<(&str, u64)> = report
            .rows
            .iter()
            .map(|r| (r.policy.as_str(), r.misses))
            .collect();
        assert_eq!(
            got,
            vec![
                ("belady", 6),
                ("lru", 7),
                ("fifo", 8),
                ("lru.wasm", 7),
                ("fifo.wasm", 8),
                ("lfu.wasm", 7)
            ]
        );
        let lru = &report.rows[1];
        assert_eq!(lru.cost_vs_lru, Some(1.0));
        assert!((lru.gap_vs_belady.expect("gap") - 0.1).abs() < 1e-9);
        assert_eq!(report.rows[0].cost_vs_lru, None);
    }

    #[test]
    fn replay_byte_mode_counts_sizes_and_refuses_oversized_objects() {
        // Sizes 4, 4, 6, 20 against 10 bytes: the third evicts one object, the
        // fourth can never fit and is a miss that is not admitted.
        let trace = trace_of("sizes", &[(1, 4), (2, 4), (3, 6), (4, 20), (3, 6)]);
        let outcome = native_lru_in_bytes(&trace, 10);
        assert_eq!(outcome.misses, 4);
        assert_eq!(outcome.too_large, 1);
        assert_eq!(outcome.evictions, 1);
    }

    /// The replay skips the touch of an object whose table slot a newer
    /// session took; a session evicted while its slot stays free is found
    /// out by its failing touch instead. Here one arrival evicts two objects,
    /// one slot is taken at once and the other only after the returning
    /// object was admitted elsewhere: the later taker must not make the
    /// replay forget that object, which is still cached (its request is a
    /// hit, no fourth eviction).
    #[test]
    fn replay_an_object_whose_old_slot_is_taken_later_is_still_a_hit() {
        let (a, b, c, d) = (1, 2, 3, 4);
        let requests = [(a, 4), (b, 4), (c, 10), (a, 4), (d, 4), (a, 4), (d, 4)];
        let outcome = native_lru_in_bytes(&trace_of("slots", &requests), 10);
        // a, b, c (evicting a and b), a (evicting c), d: five misses; then
        // a and d are cached together (8 of 10 bytes) and hit.
        assert_eq!(outcome.misses, 5);
        assert_eq!(outcome.evictions, 3);
    }

    /// Issue 10, item 4: byte mode asks the policy for as many victims as the
    /// bytes need, so a correct LRU guest reproduces the native LRU exactly,
    /// with no fallback and no warning about one.
    #[test]
    fn replay_byte_mode_lru_wasm_matches_native_lru_without_fallbacks_or_warnings() {
        let trace = reference_trace();
        let plan = BenchPlan {
            capacities: vec![CapacitySpec::Fraction(0.01), CapacitySpec::Fraction(0.1)],
            policies: vec![
                ConfiguredPolicy::named("lru"),
                ConfiguredPolicy::named("lru.wasm"),
            ],
            mode: CapacityMode::Bytes,
            belady: false,
            named: true,
            rounds: 1,
        };
        let report = bench::run(&trace, &plan, &open_configured, &mut Quiet).expect("bench");
        let misses: Vec<(&str, &str, u64)> = report
            .rows
            .iter()
            .map(|r| (r.policy.as_str(), r.capacity_label.as_str(), r.misses))
            .collect();
        assert_eq!(
            misses,
            vec![
                ("lru", "1%", 94_956),
                ("lru.wasm", "1%", 94_956),
                ("lru", "10%", 92_200),
                ("lru.wasm", "10%", 92_200),
            ]
        );
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let capacity = CapacitySpec::Fraction(0.01).resolve(trace.unique_bytes());
        let outcome = replay(
            &trace,
            open("lru.wasm", capacity),
            capacity,
            CapacityMode::Bytes,
            &mut |_| {},
        )
        .expect("replay");
        assert_eq!(outcome.fallback_victims, 0);
        for reason in FallbackReason::ALL {
            assert_eq!(outcome.table.fallbacks_by(reason), 0, "{reason:?}");
        }
        assert_eq!(outcome.table.invalid_victims, 0);
    }

    /// Issue 10, item 4: when evictions do fall back, the warning says why,
    /// from the table's fallback reasons and the policy's own fault counts.
    #[test]
    fn replay_bench_fallback_warnings_name_the_cause() {
        let requests = (0..3_000u64)
            .map(|i| Request::new(i, (i * 7_919) % 300, 1))
            .collect();
        let trace = Trace::new("cycle", requests);
        let faulty = hostile_with(&[("mode", "trap-every"), ("every", "7")]);
        let empty = hostile_with(&[("mode", "empty")]);
        let erring = hostile_with(&[("mode", "error")]);
        let plan = BenchPlan {
            capacities: vec![CapacitySpec::Absolute(50)],
            policies: vec![
                ConfiguredPolicy::named("lru.wasm"),
                faulty.clone(),
                empty.clone(),
                erring.clone(),
            ],
            mode: CapacityMode::Objects,
            belady: false,
            named: true,
            rounds: 1,
        };
        let report = bench::run(&trace, &plan, &open_configured, &mut Quiet).expect("bench");
        let warning = |label: &str| -> String {
            let found: Vec<&String> = report
                .warnings
                .iter()
                .filter(|w| w.starts_with(&format!("{label} at 50:")))
                .collect();
            assert_eq!(found.len(), 1, "{label}: {:?}", report.warnings);
            found[0].clone()
        };
        let w = warning(&faulty.label);
        assert!(
            w.contains("decisions failed in the policy (10 traps)"),
            "{w}"
        );
        assert!(w.contains("while the policy was quarantined"), "{w}");
        let w = warning(&empty.label);
        assert!(w.contains("answers without a valid victim"), "{w}");
        assert!(!w.contains("failed in the policy"), "{w}");
        let w = warning(&erring.label);
        assert!(w.contains("error answers"), "{w}");
        assert!(!w.contains("quarantined") && !w.contains("traps"), "{w}");
        assert!(
            !report.warnings.iter().any(|w| w.starts_with("lru.wasm")),
            "{:?}",
            report.warnings
        );
    }

    /// Runs `shadowcat bench` on a small synthetic trace; returns (exit code,
    /// the (policy, capacity) cells in order, stderr).
    fn bench_cells(
        before: &[&str],
        after: &[&str],
    ) -> (Option<i32>, Vec<(String, String)>, String) {
        let mut args: Vec<&str> = before.to_vec();
        args.extend([
            "bench",
            "--synthetic",
            "uniform:requests=2000,ids=200,seed=3",
            "--no-belady",
            "--format",
            "json",
        ]);
        args.extend(after);
        let out = shadowcat_cli(&args);
        let cells = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|report| report["rows"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|row| {
                let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
                (field("policy"), field("capacity_label"))
            })
            .collect();
        (out.status.code(), cells, text(&out.stderr))
    }

    fn cell(policy: &str, capacity: &str) -> (String, String) {
        (policy.to_owned(), capacity.to_owned())
    }

    /// Issue 10, item 1: settings go to the policy they are for, never to a
    /// built-in, and a global setting is refused where it is ambiguous.
    /// A comparison of `names` on the reference trace's capacity, in objects,
    /// without Belady.
    fn plan_at_4897(names: &[&str], rounds: u32) -> BenchPlan {
        BenchPlan {
            capacities: vec![CapacitySpec::Absolute(4_897)],
            policies: names.iter().map(|n| ConfiguredPolicy::named(n)).collect(),
            mode: CapacityMode::Objects,
            belady: false,
            named: true,
            rounds,
        }
    }

    /// Which replays a bench started and finished, in order, with the label
    /// shown.
    #[derive(Default)]
    struct Started {
        started: Vec<(String, String)>,
        finished: Vec<(String, String)>,
    }

    impl bench::Progress for Started {
        fn replay_started(&mut self, policy: &str, capacity: &str, _requests: u64) {
            self.started.push((policy.to_owned(), capacity.to_owned()));
        }

        fn replay_finished(&mut self, row: &bench::BenchRow) {
            self.finished
                .push((row.policy.clone(), row.capacity_label.clone()));
        }
    }

    /// `--rounds`: every policy replays once per round, each round starting one
    /// policy further along, and the row gives the first round's counts, the
    /// median wall time and the median of the per-round cost ratios with
    /// their range.
    #[test]
    fn replay_bench_rounds_rotate_the_order_and_report_medians() {
        let trace = reference_trace();
        let names = ["lru", "fifo", "lru.wasm", "fifo.wasm"];
        let plan = |rounds| plan_at_4897(&names, rounds);
        let single = bench::run(&trace, &plan(1), &open_configured, &mut Quiet).expect("bench");
        let mut started = Started::default();
        let report = bench::run(&trace, &plan(3), &open_configured, &mut started).expect("bench");
        let expected: Vec<(String, String)> = (0..3)
            .flat_map(|round| {
                (0..names.len()).map(move |k| {
                    (
                        names[(round + k) % names.len()].to_owned(),
                        format!("4897 round {}/3", round + 1),
                    )
                })
            })
            .collect();
        assert_eq!(started.started, expected);
        assert_eq!(started.finished, expected);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.rounds, 3);
        let counts = |r: &bench::BenchRow| (r.policy.clone(), r.misses, r.evictions);
        assert_eq!(
            report.rows.iter().map(counts).collect::<Vec<_>>(),
            single.rows.iter().map(counts).collect::<Vec<_>>()
        );
        assert_eq!(report.rows[0].misses, 91_657);
        assert_eq!(report.rows[1].misses, 91_716);
        for row in &report.rows {
            assert_eq!(row.rounds, 3, "{}", row.policy);
            let cost = row.cost_vs_lru.expect("cost");
            let [lo, hi] = row.cost_vs_lru_range.expect("range");
            assert!(lo <= cost && cost <= hi, "{}: {lo} {cost} {hi}", row.policy);
            assert!(row.wall_ms > 0.0);
        }
        assert_eq!(report.rows[0].cost_vs_lru, Some(1.0));
        assert_eq!(report.rows[0].cost_vs_lru_range, Some([1.0, 1.0]));
        assert!(single
            .rows
            .iter()
            .all(|r| r.rounds == 1 && r.cost_vs_lru_range.is_none()));
    }

    /// The calls into each WebAssembly policy during its replay, which set
    /// its cost apart from its algorithm's: rare for a policy whose victims
    /// are chosen ahead (FIFO's order holds until the victims leave), at
    /// least one per eviction for one choosing among candidates the host
    /// samples afresh each time (Redis's LFU). The count is one replay's,
    /// whatever the rounds; none for a built-in.
    #[test]
    fn replay_bench_counts_the_calls_into_each_webassembly_policy() {
        let trace = reference_trace();
        let names = ["lru", "fifo.wasm", "lfu-decay.wasm"];
        let compare = |rounds| {
            bench::run(
                &trace,
                &plan_at_4897(&names, rounds),
                &open_configured,
                &mut Quiet,
            )
            .expect("bench")
        };
        let report = compare(1);
        let calls = |r: &bench::BenchRow| (r.policy.clone(), r.policy_calls);
        let [lru, fifo, lfu_decay] = &report.rows[..] else {
            panic!("{:?}", report.rows.iter().map(calls).collect::<Vec<_>>());
        };
        assert_eq!(lru.policy_calls, None);
        let evictions = |r: &bench::BenchRow| r.evictions.expect("evictions");
        let fifo_calls = fifo.policy_calls.expect("fifo.wasm calls");
        assert!(
            fifo_calls > 0 && fifo_calls * 10 < evictions(fifo),
            "{fifo_calls} calls for {} evictions",
            evictions(fifo)
        );
        let sampled_calls = lfu_decay.policy_calls.expect("lfu-decay.wasm calls");
        assert!(
            sampled_calls >= evictions(lfu_decay),
            "{sampled_calls} calls for {} evictions",
            evictions(lfu_decay)
        );
        let rounds = compare(2);
        assert_eq!(
            rounds.rows.iter().map(calls).collect::<Vec<_>>(),
            report.rows.iter().map(calls).collect::<Vec<_>>()
        );
        // The table's last column, per 1,000 requests.
        let table = bench::render(&report, bench::OutputFormat::Table).expect("table");
        let header = table.lines().nth(1).unwrap_or_default();
        assert!(header.trim_end().ends_with("calls/1k"), "{table}");
        let last_cell = |policy: &str| {
            let line = table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(policy))
                .unwrap_or_else(|| panic!("{policy}: {table}"));
            line.split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(last_cell("lru"), "-");
        let per_thousand = fifo_calls as f64 * 1000.0 / fifo.requests as f64;
        assert_eq!(last_cell("fifo.wasm"), format!("{per_thousand:.1}"));
    }

    /// A policy whose rounds count differently (here one label opening lru
    /// and fifo in turn) is reported, not silently averaged.
    #[test]
    fn replay_bench_rounds_that_disagree_are_reported() {
        let trace = reference_trace();
        let opened = std::cell::Cell::new(0u32);
        let flipping = |policy: &ConfiguredPolicy, table: PolicyTable| {
            if policy.label != "flip" {
                return open_configured(policy, table);
            }
            opened.set(opened.get() + 1);
            let name = if opened.get().is_multiple_of(2) {
                "lru"
            } else {
                "fifo"
            };
            open_configured(&ConfiguredPolicy::named(name), table)
        };
        let plan = plan_at_4897(&["lru", "flip"], 2);
        let report = bench::run(&trace, &plan, &flipping, &mut Quiet).expect("bench");
        // The up-front check opened fifo, round 1 lru, round 2 fifo.
        assert_eq!(opened.get(), 3);
        assert_eq!(report.rows[1].misses, 91_657);
        assert_eq!(
            report.warnings,
            vec![
                "flip at 4897: rounds disagree (91657 misses and 86760 evictions, then \
                  91716 and 86819); the first round's counts are shown"
                    .to_owned()
            ]
        );
        let zero = BenchPlan { rounds: 0, ..plan };
        let error = bench::run(&trace, &zero, &flipping, &mut Quiet).expect_err("no rounds");
        assert!(error.to_string().contains("at least 1"), "{error}");
    }

    #[test]
    fn replay_cli_bench_gives_each_policy_its_own_settings() {
        let hostile = hostile_path();
        let labelled = |config: &str| format!("{hostile}:{config}");
        // Global: the only WebAssembly policy takes it; lru takes none.
        let (code, cells, stderr) = bench_cells(
            &["--policy-config", "mode=lru"],
            &["--capacity", "50", "--policy", "lru", "--policy", &hostile],
        );
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(
            cells,
            vec![cell("lru", "50"), cell(&labelled("mode=lru"), "50")]
        );
        // Inline and scoped, two settings of one policy side by side.
        let inline = format!("{hostile}:mode=trap-at,at=100000");
        let (code, cells, stderr) = bench_cells(
            &["--policy-config", &format!("{hostile}:at=5000000")],
            &[
                "--capacity",
                "50",
                "--policy",
                &inline,
                "--policy",
                "lru.wasm",
            ],
        );
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(
            cells,
            vec![
                cell("lru", "50"),
                cell(&labelled("at=5000000,mode=trap-at,at=100000"), "50"),
                cell("lru.wasm", "50"),
            ]
        );
        // Ambiguous: two WebAssembly policies could take it.
        let (code, _, stderr) = bench_cells(
            &["--policy-config", "mode=lru"],
            &[
                "--capacity",
                "50",
                "--policy",
                "lru.wasm",
                "--policy",
                &hostile,
            ],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("could go to any of"), "{stderr}");
        assert!(stderr.contains("POLICY:mode=lru"), "{stderr}");
        // Only built-ins: nothing can take it.
        let (code, _, stderr) = bench_cells(
            &["--policy-config", "mode=lru"],
            &["--capacity", "50", "--policy", "lru", "--policy", "fifo"],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("built-in policies take no configuration"),
            "{stderr}"
        );
    }

    /// Issue 10, item 2: `--eviction-policy` is part of what `bench` compares,
    /// and a policy that cannot be loaded is an error, not silently dropped.
    #[test]
    fn replay_cli_bench_includes_the_eviction_policy_and_fails_if_it_is_missing() {
        let hostile = hostile_path();
        let (code, cells, stderr) = bench_cells(
            &["--eviction-policy", &hostile],
            &["--capacity", "50", "--policy", "lru"],
        );
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(cells, vec![cell("lru", "50"), cell(&hostile, "50")]);
        // It takes the global settings, as it would in the proxy.
        let (code, cells, stderr) = bench_cells(
            &["--eviction-policy", "lfu", "--policy-config", "x=1"],
            &["--capacity", "50", "--policy", "lru.wasm"],
        );
        assert_eq!(code, Some(1), "lfu refuses the key: {cells:?}");
        assert!(stderr.contains("lfu") && stderr.contains("`x`"), "{stderr}");
        // Also when it is compared under another spelling (lfu.wasm).
        let (code, _, stderr) = bench_cells(
            &["--eviction-policy", "lfu", "--policy-config", "x=1"],
            &[
                "--capacity",
                "50",
                "--policy",
                "lfu.wasm",
                "--policy",
                "fifo.wasm",
            ],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("`lfu.wasm:x=1`"), "{stderr}");
        assert!(stderr.contains("unknown config key `x`"), "{stderr}");
        let (code, _, stderr) = bench_cells(&["--eviction-policy", "nope"], &["--capacity", "50"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("--eviction-policy nope"), "{stderr}");
        assert!(stderr.contains("not found"), "{stderr}");
    }

    /// In byte mode a policy is told its capacity counts bytes, so one whose
    /// queues are sized in sessions (2Q, ARC, S3-FIFO) refuses it rather than
    /// take bytes for sessions: left out of the default set with one warning,
    /// an error when named.
    #[test]
    fn replay_cli_bench_byte_mode_leaves_out_policies_sized_in_sessions() {
        let (code, cells, stderr) = bench_cells(&[], &["--bytes", "--capacity", "10%,20%"]);
        assert_eq!(code, Some(0), "{stderr}");
        for left_out in ["arc.wasm", "s3fifo.wasm", "twoq.wasm"] {
            assert!(
                !cells.iter().any(|(policy, _)| policy.ends_with(left_out)),
                "{left_out} ran in byte mode: {cells:?}"
            );
            let warning = format!("{left_out} refused every capacity, left out");
            assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
        }
        assert!(stderr.contains("bounded in bytes"), "{stderr}");
        for ran in ["lru", "lru.wasm", "lfu.wasm", "sieve.wasm"] {
            assert!(
                cells.iter().any(|(policy, _)| policy.ends_with(ran)),
                "{ran} missing: {cells:?}"
            );
        }
        let (code, _, stderr) = bench_cells(
            &[],
            &["--bytes", "--capacity", "10%", "--policy", "twoq.wasm"],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("refused to be created at every capacity"),
            "{stderr}"
        );
        assert!(stderr.contains("bounded in bytes"), "{stderr}");
        // Counted in objects, it runs.
        let (code, cells, stderr) =
            bench_cells(&[], &["--capacity", "10%", "--policy", "twoq.wasm"]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(cells.contains(&cell("twoq.wasm", "10%")), "{cells:?}");
    }

    /// Issue 10, item 3: a policy is opened at the capacities actually run, so
    /// one with a minimum table size is benchmarked above it, and skipped
    /// (with a warning) below it.
    #[test]
    fn replay_cli_bench_opens_policies_at_the_capacities_run() {
        let minimum = format!("{}:min-capacity=100", hostile_path());
        let (code, cells, stderr) = bench_cells(&[], &["--capacity", "200", "--policy", &minimum]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(cells, vec![cell("lru", "200"), cell(&minimum, "200")]);
        let (code, cells, stderr) =
            bench_cells(&[], &["--capacity", "50,200", "--policy", &minimum]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(
            cells,
            vec![cell("lru", "50"), cell("lru", "200"), cell(&minimum, "200")]
        );
        assert!(
            stderr.contains("refused capacity 50, skipped there"),
            "{stderr}"
        );
        assert!(stderr.contains("below the minimum of 100"), "{stderr}");
        let (code, _, stderr) = bench_cells(&[], &["--capacity", "50", "--policy", &minimum]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("refused to be created at every capacity"),
            "{stderr}"
        );
    }

    /// `bench` on the reference trace with `args` and a plot: its output and
    /// the SVG it drew.
    fn bench_reference_with_plot(args: &[&str]) -> (std::process::Output, String) {
        let trace = reference_trace_path();
        let dir = tempfile::tempdir().expect("tempdir");
        let plot = dir.path().join("plot.svg");
        let mut all = vec!["bench", "--trace", trace.to_str().expect("utf-8 path")];
        all.extend(args);
        all.extend(["--plot", plot.to_str().expect("utf-8 path")]);
        let out = shadowcat_cli(&all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let svg = std::fs::read_to_string(&plot).expect("plot written");
        (out, svg)
    }

    #[test]
    fn replay_cli_runs_on_the_reference_trace_and_writes_json_and_a_plot() {
        let (out, svg) = bench_reference_with_plot(&[
            "--capacity",
            "4897",
            "--policy",
            "lru",
            "--policy",
            "fifo.wasm",
            "--format",
            "json",
        ]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let rows = report["rows"].as_array().expect("rows");
        let find = |p: &str| rows.iter().find(|r| r["policy"] == p).expect(p);
        assert_eq!(find("lru")["misses"], 91_657);
        assert_eq!(find("fifo.wasm")["misses"], 91_716);
        assert_eq!(find("belady")["misses"], 71_620);
        assert!(svg.contains("<svg") && svg.contains("fifo.wasm") && svg.contains("belady"));
    }

    /// The texts of an SVG, in drawing order.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn replay_cli_plot_ranks_policies_and_marks_the_capacities_run() {
        let (_, svg) = bench_reference_with_plot(&[
            "--capacity",
            "4897,1%",
            "--policy",
            "lru",
            "--policy",
            "fifo.wasm",
            "--policy",
            "lfu.wasm",
        ]);
        let texts = svg_texts(&svg);
        // The legend ranks by miss ratio at the largest capacity (4,897 is
        // 10 % of the trace's objects), each with that ratio: the reference
        // simulator's 71,620, 90,040, 91,657 and 91,716 of 113,872 misses.
        let legend = texts
            .iter()
            .position(|t| t == "miss ratio at the largest capacity")
            .expect("legend title");
        assert_eq!(
            texts[legend + 1..],
            [
                "belady",
                "0.6290",
                "lfu.wasm",
                "0.7907",
                "lru",
                "0.8049",
                "fifo.wasm",
                "0.8054"
            ],
            "{texts:?}"
        );
        // Ticks where the capacities were run, not a log scale's own.
        assert!(texts.iter().any(|t| t == "1%") && texts.iter().any(|t| t == "10%"));
        let ticks: Vec<f64> = texts[..legend]
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        // The miss ratio axis spans the data (0.63 to 0.87), not 0 to 1, so
        // policies a point apart are lines apart.
        assert!(ticks.len() >= 3, "{texts:?}");
        assert!(
            ticks.iter().all(|&y| (0.55..=0.95).contains(&y)),
            "{ticks:?}"
        );
    }

    /// A bench that takes well under a second: 5,000 requests, 50 sessions.
    const SMALL_BENCH: [&str; 5] = [
        "bench",
        "--synthetic",
        "uniform:requests=5000,ids=500",
        "--capacity",
        "50",
    ];

    #[test]
    fn replay_cli_table_and_csv_on_the_embedded_default() {
        let out = shadowcat_cli(&[
            "bench",
            "--synthetic",
            "zipf:alpha=1.0,requests=20000,ids=2000,seed=7",
            "--capacity",
            "0.05,10%",
            "--format",
            "csv",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let csv = text(&out.stdout);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("policy,capacity,requests,misses,miss_ratio"));
        // belady + lru + fifo + every shipped wasm policy, at two capacities.
        let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"))
            .expect("policies/")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wasm"))
            })
            .count();
        assert!(shipped >= 14, "{shipped} shipped policies");
        assert_eq!(lines.len(), 1 + 2 * (3 + shipped), "{csv}");
        for line in &lines[1..] {
            let policy = line.split(',').next().unwrap_or_default();
            assert!(
                ["belady", "lru", "fifo"].contains(&policy) || policy.ends_with(".wasm"),
                "{line}"
            );
        }
        let out = shadowcat_cli(&[&SMALL_BENCH[..], &["--policy", "lfu"]].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        assert!(
            table.contains("miss ratio") && table.contains("cost vs lru"),
            "{table}"
        );
        assert!(table.lines().any(|l| l.starts_with("lfu")), "{table}");
    }

    /// `shadowcat config | head -1` and the like: every command that prints
    /// a result ends quietly when its reader has gone.
    #[test]
    fn replay_cli_and_the_other_printing_commands_end_quietly_on_a_closed_stdout() {
        for args in [
            &["--eviction-policy", "lfu", "config"][..],
            &["policy", "list"],
            &["policy", "check", "fifo.wasm"],
            &SMALL_BENCH[..],
            &["--help"][..],
            &["bench", "--help"],
        ] {
            assert_ends_quietly_on_a_closed_stdout(&mut shadowcat_command(args));
        }
        // No argument at all: the help.
        assert_ends_quietly_on_a_closed_stdout(&mut std::process::Command::new(env!(
            "CARGO_BIN_EXE_shadowcat"
        )));
    }

    /// Options without a command do nothing, which says so (rather than
    /// printing the help and exiting 0), and a command's option given before
    /// the command, or to another one, is named with the command it is for.
    #[test]
    fn replay_cli_misplaced_options_say_where_they_belong() {
        let no_command = shadowcat_cli(&["--eviction-policy", "lfu.wasm"]);
        let said = text(&no_command.stderr);
        assert_eq!(no_command.status.code(), Some(2), "{said}");
        assert!(
            said.contains("no command after the options")
                && said.contains("--eviction-policy lfu.wasm reverse --upstream-stdio"),
            "{said}"
        );
        for (args, says) in [
            (
                &["--eviction-policy", "lfu.wasm", "--upstream-stdio", "x"][..],
                "--upstream-stdio is an option of `shadowcat reverse`",
            ),
            (
                &["bench", "--upstream-stdio=x"],
                "--upstream-stdio is an option of `shadowcat reverse`",
            ),
            (
                &["reverse", "--max-message", "1MiB"],
                "--max-message is an option of `shadowcat forward stdio` and `shadowcat forward http`",
            ),
        ] {
            let out = shadowcat_cli(args);
            let said = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
            assert!(said.contains(says), "{args:?}: {said}");
            assert!(!said.contains("similar argument"), "{args:?}: {said}");
        }
        let unknown = text(&shadowcat_cli(&["bench", "--no-such-option"]).stderr);
        assert!(
            unknown.contains("unexpected argument") && !unknown.contains("is an option of"),
            "{unknown}"
        );
    }

    #[test]
    fn replay_cli_rounds_show_medians_and_the_spread_of_ratios() {
        let args = |rounds: &'static str, format: &'static str| {
            let rest = [
                "--policy",
                "fifo",
                "--no-belady",
                "--rounds",
                rounds,
                "--format",
                format,
            ];
            shadowcat_cli(&[&SMALL_BENCH[..], &rest].concat())
        };
        let out = args("3", "table");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        assert!(
            table.contains("wall times are medians of 3 rounds"),
            "{table}"
        );
        assert!(table.contains("cost range"), "{table}");
        let lru = table
            .lines()
            .find(|l| l.starts_with("lru "))
            .unwrap_or_else(|| panic!("{table}"));
        // Column widths follow the widest cell, so compare cells, not spacing.
        let cells: Vec<&str> = lru.split_whitespace().collect();
        assert_eq!(
            cells[cells.len() - 3..],
            ["1.00x", "1.00-1.00x", "-"],
            "{lru}"
        );
        let csv_header = |rounds| {
            let out = args(rounds, "csv");
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        assert!(csv_header("2").ends_with(",cost_vs_lru,cost_range,calls/1k"));
        assert!(csv_header("1").ends_with(",cost_vs_lru,calls/1k"));
        let out = args("0", "table");
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("--rounds") && err.contains("1..=1000"),
            "{err}"
        );
    }

    #[test]
    fn replay_cli_reports_malformed_input_without_panicking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let truncated = dir.path().join("cut.oracleGeneral.bin");
        let mut bytes = vec![0u8; 24 * 3 + 10];
        for (i, record) in bytes.chunks_mut(24).enumerate() {
            if record.len() == 24 {
                record[4..12].copy_from_slice(&(i as u64).to_le_bytes());
                record[12..16].copy_from_slice(&1u32.to_le_bytes());
            }
        }
        std::fs::write(&truncated, &bytes).expect("write");
        let empty = dir.path().join("empty.bin");
        std::fs::write(&empty, b"").expect("write");
        let unknown = dir.path().join("trace.parquet");
        std::fs::write(&unknown, b"x").expect("write");
        let cases: Vec<(Vec<String>, &str)> = vec![
            (
                vec!["--trace".into(), truncated.display().to_string()],
                "record 3 starts at byte 72",
            ),
            (
                vec!["--trace".into(), empty.display().to_string()],
                "no requests",
            ),
            (
                vec![
                    "--trace".into(),
                    dir.path().join("absent.bin").display().to_string(),
                ],
                "absent.bin",
            ),
            (
                vec!["--trace".into(), unknown.display().to_string()],
                "--trace-format",
            ),
            (vec!["--capacity".into(), "0".into()], "holds nothing"),
            (
                vec!["--policy".into(), "no-such-policy".into()],
                "available: lru, fifo",
            ),
            (vec!["--synthetic".into(), "zipf:alpha=-1".into()], "alpha"),
            (vec!["--synthetic".into(), "pareto".into()], "pareto"),
            (
                vec!["--synthetic".into(), "zipf:requests=0".into()],
                "trace has no requests",
            ),
        ];
        for (args, expected) in cases {
            let mut all = vec!["bench".to_string()];
            all.extend(args.clone());
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = shadowcat_cli(&refs);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{args:?}: expected `{expected}` in: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        }
    }

    #[test]
    fn replay_cli_warns_when_the_capacity_holds_every_object() {
        let out = shadowcat_cli(&[
            "bench",
            "--synthetic",
            "uniform:requests=2000,ids=100",
            "--capacity",
            "500",
            "--policy",
            "lru",
        ]);
        assert!(out.status.success());
        assert!(
            text(&out.stderr).contains("only cold misses remain"),
            "{}",
            text(&out.stderr)
        );
    }

    #[test]
    fn replay_cli_help_documents_the_semantics() {
        let out = shadowcat_cli(&["bench", "--help"]);
        // Words, not lines: clap wraps the text to the terminal's width.
        let help = text(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for phrase in [
            "cold misses included",
            "no warm-up",
            "size 0",
            "Belady",
            "--bytes",
            "median of the ratios within each round",
            "1.0 is all of them, while 1 is one object",
        ] {
            assert!(
                help.contains(phrase),
                "`{phrase}` missing from bench --help"
            );
        }
    }

    /// `bench --format json` on `args`: (exit code, the report, stderr).
    fn bench_json(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
        let mut all = vec!["bench", "--no-belady", "--format", "json"];
        all.extend(args);
        let out = shadowcat_cli(&all);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code(), report, text(&out.stderr))
    }

    #[test]
    fn replay_cli_reads_a_tsv_with_tabs_as_the_csv_with_commas() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Read with the wrong delimiter, each whole line would be an id of its
        // own (the first, not an integer, taken for a header): 11 distinct
        // objects instead of 4.
        let rows: Vec<[u32; 2]> = (0..12).map(|i| [i % 4, 100 + i]).collect();
        let write = |name: &str, delimiter: &str| {
            let path = dir.path().join(name);
            let body: String = rows
                .iter()
                .map(|[id, time]| format!("{id}{delimiter}{time}\n"))
                .collect();
            std::fs::write(&path, body).expect("write");
            path.display().to_string()
        };
        let csv = write("t.csv", ",");
        let tsv = write("t.tsv", "\t");
        let summary = |trace: &str, extra: &[&str]| {
            let mut args = vec!["--trace", trace, "--capacity", "2", "--policy", "lru"];
            args.extend(extra);
            let (code, report, stderr) = bench_json(&args);
            assert_eq!(code, Some(0), "{stderr}");
            (
                report["requests"].clone(),
                report["distinct_objects"].clone(),
                report["rows"][0]["misses"].clone(),
            )
        };
        let from_csv = summary(&csv, &[]);
        assert_eq!(from_csv.0, 12);
        assert_eq!(from_csv.1, 4);
        assert_eq!(summary(&tsv, &[]), from_csv);
        // An explicit delimiter still wins over the file name's.
        let forced = summary(&tsv, &["--csv-delimiter", ","]);
        assert_eq!(forced.1, 11, "{forced:?}");
    }

    #[test]
    fn replay_cli_warns_of_table_options_the_replay_ignores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let warning = "no effect on bench: the replay bounds the session table by --capacity only";
        let run = |before: &[&str], after: &[&str]| {
            let (code, _, stderr) = bench_cells(before, &[&["--capacity", "20"], after].concat());
            assert_eq!(code, Some(0), "{stderr}");
            stderr
        };
        assert!(!run(&[], &[]).contains(warning));
        let stderr = run(&["--max-sessions", "5"], &[]);
        assert!(
            stderr.contains(&format!("--max-sessions has {warning}")),
            "{stderr}"
        );
        let stderr = run(
            &[],
            &["--rate-limit", "2", "--burst", "1", "--idle-timeout", "off"],
        );
        assert!(
            stderr.contains(&format!(
                "--idle-timeout, --rate-limit, --burst have {warning}"
            )),
            "{stderr}"
        );
        // A config file's top-level keys are the proxy's too: no warning; its
        // [bench] section is for the replay.
        let shared = dir.path().join("shared.toml");
        std::fs::write(&shared, "max-sessions = 5\nrate-limit = 2\n").expect("write");
        let config = ["--config", shared.to_str().expect("utf-8 path")];
        assert!(!run(&config, &[]).contains(warning));
        let own = dir.path().join("bench.toml");
        std::fs::write(&own, "max-sessions = 5\n[bench]\nmax-in-flight = 3\n").expect("write");
        let config = ["--config", own.to_str().expect("utf-8 path")];
        let stderr = run(&config, &[]);
        assert!(
            stderr.contains(&format!("--max-in-flight has {warning}")),
            "{stderr}"
        );
    }

    #[test]
    fn replay_cli_policy_dirs_must_exist_and_stray_files_are_skipped() {
        for command in [
            &["policy", "list"][..],
            &["config"],
            &["bench", "--policy", "lru"],
        ] {
            let out =
                shadowcat_cli(&[&["--policy-dir", "/nonexistent/policies"], command].concat());
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{command:?}: {stderr}");
            assert!(
                stderr.contains("/nonexistent/policies"),
                "{command:?}: {stderr}"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            fixture("core-module.wasm"),
            dir.path().join("core-module.wasm"),
        )
        .expect("copy");
        std::fs::copy(
            crate::common::policy_file("sieve"),
            dir.path().join("sieve-copy.wasm"),
        )
        .expect("copy");
        let policy_dir = ["--policy-dir", dir.path().to_str().expect("utf-8 path")];
        let (code, cells, stderr) = bench_cells(&policy_dir, &["--capacity", "20"]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(cells.contains(&cell("sieve-copy.wasm", "20")), "{cells:?}");
        assert!(
            !cells.iter().any(|(p, _)| p.contains("core-module")),
            "{cells:?}"
        );
        assert!(
            stderr.contains("core-module.wasm is a core WebAssembly module"),
            "{stderr}"
        );
        // Named, it must load.
        let (code, _, stderr) = bench_cells(
            &policy_dir,
            &["--capacity", "20", "--policy", "core-module.wasm"],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("core WebAssembly module"), "{stderr}");
    }

    #[test]
    fn replay_cli_checks_the_plot_file_before_replaying() {
        let out =
            shadowcat_cli(&[&SMALL_BENCH[..], &["--plot", "/nonexistent/dir/x.svg"]].concat());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("/nonexistent/dir/x.svg"), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "replayed first: {}",
            text(&out.stdout)
        );
    }

    #[test]
    fn replay_cli_reports_an_os_error_once() {
        let out = shadowcat_cli(&["bench", "--trace", "/nonexistent/trace.bin"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("/nonexistent/trace.bin"), "{stderr}");
        assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    }

    /// A missing file or a directory is named as such, whatever its name
    /// says of a format (not "cannot tell the format").
    #[test]
    fn replay_cli_names_a_missing_trace_or_a_directory_before_its_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("trace");
        let out = shadowcat_cli(&["bench", "--trace", missing.to_str().expect("utf-8")]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("No such file") && !stderr.contains("format"),
            "{stderr}"
        );
        let out = shadowcat_cli(&["bench", "--trace", dir.path().to_str().expect("utf-8")]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("is a directory"), "{stderr}");
    }

    /// Every `bench --help` example that sets a policy's configuration runs.
    #[test]
    fn replay_cli_help_examples_with_policy_settings_run() {
        let help = text(&shadowcat_cli(&["bench", "--help"]).stdout);
        let examples: Vec<&str> = help
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("shadowcat bench") && l.contains(".wasm:"))
            .collect();
        assert!(!examples.is_empty(), "{help}");
        for example in examples {
            let mut args: Vec<&str> = example.split_whitespace().skip(1).collect();
            args.extend([
                "--synthetic",
                "uniform:requests=5000,ids=500",
                "--no-belady",
            ]);
            let out = shadowcat_cli(&args);
            assert!(out.status.success(), "`{example}`: {}", text(&out.stderr));
        }
    }
}
