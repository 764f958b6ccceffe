//! Trace replay and `shadowcat bench`: exact reference figures, a hand-worked
//! trace for every policy, and clear errors on bad input (through the binary).

mod common;

mod replay {
    use std::path::Path;
    use std::sync::Arc;

    use shadowcat::bench::{self, BenchPlan, CapacitySpec, Quiet};
    use shadowcat::eviction::{EvictionPolicy, Fifo, HostLru};
    use shadowcat::replay::{replay, CapacityMode};
    use shadowcat::trace::{Request, Trace};
    use shadowcat::wasm::{open_policy, PolicyEngine, PolicyLimits};

    use crate::common::{reference_trace, reference_trace_path, shadowcat_cli, text};

    fn misses(trace: &Trace, policy: Arc<dyn EvictionPolicy>, capacity: u64) -> u64 {
        replay(trace, policy, capacity, CapacityMode::Objects, &mut |_| {})
            .expect("replay")
            .misses
    }

    fn policies_dir() -> Vec<std::path::PathBuf> {
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")]
    }

    fn open(name: &str, capacity: u64) -> Arc<dyn EvictionPolicy> {
        open_policy(
            name,
            &policies_dir(),
            || {
                let limits = PolicyLimits {
                    call_timeout: std::time::Duration::from_secs(10),
                    ..PolicyLimits::default()
                };
                PolicyEngine::new(limits, None)
            },
            capacity,
            Vec::new(),
        )
        .expect("policy opens")
        .eviction()
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
        let requests = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Request::new(i as u64, id, 1))
            .collect();
        Trace::new("hand", requests)
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
            policies: expected.iter().map(|(n, _)| n.to_string()).collect(),
            mode: CapacityMode::Objects,
            belady: true,
        };
        let report =
            bench::run(&trace, &plan, &|name, cap| Ok(open(name, cap)), &mut Quiet).expect("bench");
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
        let requests = vec![
            Request::new(0, 1, 4),
            Request::new(1, 2, 4),
            Request::new(2, 3, 6),
            Request::new(3, 4, 20),
            Request::new(4, 3, 6),
        ];
        let trace = Trace::new("sizes", requests);
        let outcome = replay(
            &trace,
            Arc::new(HostLru),
            10,
            CapacityMode::Bytes,
            &mut |_| {},
        )
        .expect("replay");
        assert_eq!(outcome.misses, 4);
        assert_eq!(outcome.too_large, 1);
        assert_eq!(outcome.evictions, 1);
    }

    #[test]
    fn replay_cli_runs_on_the_reference_trace_and_writes_json_and_a_plot() {
        let trace = reference_trace_path();
        let dir = tempfile::tempdir().expect("tempdir");
        let plot = dir.path().join("plot.svg");
        let out = shadowcat_cli(&[
            "bench",
            "--trace",
            trace.to_str().expect("utf-8 path"),
            "--capacity",
            "4897",
            "--policy",
            "lru",
            "--policy",
            "fifo.wasm",
            "--format",
            "json",
            "--plot",
            plot.to_str().expect("utf-8 path"),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let rows = report["rows"].as_array().expect("rows");
        let find = |p: &str| rows.iter().find(|r| r["policy"] == p).expect(p);
        assert_eq!(find("lru")["misses"], 91_657);
        assert_eq!(find("fifo.wasm")["misses"], 91_716);
        assert_eq!(find("belady")["misses"], 71_620);
        let svg = std::fs::read_to_string(&plot).expect("plot written");
        assert!(svg.contains("<svg") && svg.contains("fifo.wasm") && svg.contains("belady"));
    }

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
        // belady + lru + fifo + the three shipped wasm policies, at two capacities.
        assert_eq!(lines.len(), 1 + 2 * 6, "{csv}");
        let out = shadowcat_cli(&[
            "bench",
            "--synthetic",
            "uniform:requests=5000,ids=500",
            "--capacity",
            "50",
            "--policy",
            "lfu",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        assert!(
            table.contains("miss ratio") && table.contains("cost vs lru"),
            "{table}"
        );
        assert!(table.lines().any(|l| l.starts_with("lfu")), "{table}");
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
                vec!["--policy".into(), "s3fifo".into()],
                "available: lru, fifo",
            ),
            (vec!["--synthetic".into(), "zipf:alpha=-1".into()], "alpha"),
            (vec!["--synthetic".into(), "pareto".into()], "pareto"),
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
        let help = text(&out.stdout);
        for phrase in [
            "cold misses included",
            "no warm-up",
            "size 0",
            "Belady",
            "--bytes",
        ] {
            assert!(
                help.contains(phrase),
                "`{phrase}` missing from bench --help"
            );
        }
    }
}
