//! What a Rust user would reach for instead of a Shadowcat policy: `moka` 0.12
//! (`sync::Cache`, TinyLFU admission) and `quick_cache` 0.6 (`sync::Cache`,
//! CLOCK-PRO-like), used as caches (get; on a miss, insert), against the
//! reference models of `tests/reference/` replayed under the session table's
//! protocol.
//!
//! Workloads: the reference trace (`tests/fixtures/traces/`, libCacheSim's
//! CloudPhysics sample) at 489, 4,897 and 9,794 entries, and the synthetic
//! default (Zipf alpha 1.0, 1,000,000 requests over 100,000 ids, seed 42) at 1%,
//! 5% and 10% of its distinct ids.
//!
//! `cargo bench --bench caches` first prints a table of miss ratios: moka's
//! best and spread over 5 runs (its maintenance runs on its own schedule, so
//! its misses vary from run to run), quick_cache's (deterministic), and the
//! best reference model, followed by every model's miss ratio, then every
//! shipped policy (`policies/*.wasm`, default settings) replayed through the
//! host's session table next to moka's best and quick_cache, with the best of
//! them and whether it misses less than both. Then criterion
//! measures the replay time of each crate (`caches_<workload>/<crate>/<capacity>`,
//! requests/s; a fresh cache per replay, built outside the timing). The table
//! takes about a minute; a criterion filter does not skip it.
//!
//! Under `cargo test --benches` everything runs once on the first 20,000
//! requests of each workload, as a smoke test.

#[path = "../tests/reference/mod.rs"]
mod reference;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use shadowcat::bench::CapacitySpec;
use shadowcat::replay::{replay, CapacityMode};
use shadowcat::trace::{read_trace, try_generate, SyntheticSpec, Trace, TraceFormat};
use shadowcat::wasm::{PolicyEngine, PolicyLimits, WasmPolicy};
use shadowcat_benches::{benchmarking, fixture};

use reference::driver::Driver;
use reference::{build, Table};

const SYNTHETIC: &str = "zipf:alpha=1.0,requests=1000000,ids=100000,seed=42";
const MOKA_RUNS: usize = 5;
const TEST_MODE_REQUESTS: usize = 20_000;

/// A reference model to run: display name, policy name, config.
type ModelSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Every reference model with its default settings, under a display name.
const MODELS: &[ModelSpec] = &[
    ("lru", "lru", &[]),
    ("fifo", "fifo", &[]),
    ("lfu", "lfu", &[]),
    ("clock", "clock", &[]),
    ("sieve", "sieve", &[]),
    ("arc", "arc", &[]),
    ("s3fifo", "s3fifo", &[]),
    ("twoq", "twoq", &[]),
    (
        "wtinylfu (libCacheSim)",
        "wtinylfu",
        &[("variant", "libcachesim")],
    ),
    ("wtinylfu (Caffeine)", "wtinylfu", &[]),
    ("wtinylfu (tuned)", "wtinylfu-tuned", &[]),
    ("lfu-decay", "lfu-decay", &[]),
];

struct Workload {
    name: &'static str,
    /// (time in microseconds, key)
    requests: Vec<(u64, u64)>,
    /// The same requests as the host replays them (keys are ids plus one
    /// there too).
    trace: Trace,
    /// (label, capacity in entries)
    capacities: Vec<(String, usize)>,
}

fn workloads() -> Vec<Workload> {
    let limit = if benchmarking() {
        usize::MAX
    } else {
        TEST_MODE_REQUESTS
    };
    let reference = read_trace(
        &fixture("traces/cloudPhysicsIO.oracleGeneral.bin.zst"),
        &TraceFormat::OracleGeneral,
        &mut |_, _| {},
    )
    .expect("the reference trace reads");
    let spec: SyntheticSpec = SYNTHETIC.parse().expect("valid spec");
    let synthetic = try_generate(&spec).expect("the synthetic trace generates");
    let distinct = synthetic.distinct_ids() as u64;
    vec![
        Workload {
            name: "reference",
            requests: keyed(&reference, limit),
            trace: truncated(&reference, limit),
            capacities: [489, 4_897, 9_794]
                .into_iter()
                .map(|c| (c.to_string(), c))
                .collect(),
        },
        Workload {
            name: "zipf_1M",
            requests: keyed(&synthetic, limit),
            trace: truncated(&synthetic, limit),
            capacities: [1, 5, 10]
                .into_iter()
                // Resolved as `shadowcat bench --capacity 10%` resolves it, so
                // that both give the same figures.
                .map(|pct| {
                    let capacity = CapacitySpec::Fraction(pct as f64 / 100.0).resolve(distinct);
                    (format!("{pct}pct"), capacity as usize)
                })
                .collect(),
        },
    ]
}

/// The synthetic trace numbers its objects from 0, which the policy
/// interface reserves for "no key"; every key is shifted by one so that each
/// object keeps a key of its own.
fn keyed(trace: &Trace, limit: usize) -> Vec<(u64, u64)> {
    trace
        .requests
        .iter()
        .take(limit)
        .map(|r| (r.time, r.id + 1))
        .collect()
}

fn truncated(trace: &Trace, limit: usize) -> Trace {
    if trace.len() <= limit {
        return trace.clone();
    }
    Trace::new(trace.name.clone(), trace.requests[..limit].to_vec())
}

fn moka_misses(requests: &[(u64, u64)], capacity: usize) -> u64 {
    let cache = moka::sync::Cache::<u64, ()>::new(capacity as u64);
    replay_moka(&cache, requests)
}

fn replay_moka(cache: &moka::sync::Cache<u64, ()>, requests: &[(u64, u64)]) -> u64 {
    let mut misses = 0;
    for &(_, key) in requests {
        if cache.get(&key).is_none() {
            misses += 1;
            cache.insert(key, ());
        }
    }
    misses
}

fn quick_cache_misses(requests: &[(u64, u64)], capacity: usize) -> u64 {
    let cache = quick_cache::sync::Cache::<u64, ()>::new(capacity);
    replay_quick_cache(&cache, requests)
}

fn replay_quick_cache(cache: &quick_cache::sync::Cache<u64, ()>, requests: &[(u64, u64)]) -> u64 {
    let mut misses = 0;
    for &(_, key) in requests {
        if cache.get(&key).is_none() {
            misses += 1;
            cache.insert(key, ());
        }
    }
    misses
}

/// One model's replay: misses, and how long the replay took.
fn model_misses(
    name: &str,
    config: &[(&str, &str)],
    requests: &[(u64, u64)],
    capacity: usize,
) -> (u64, Duration) {
    let mut model = build(name, &Table::with_capacity(capacity), config).expect("model builds");
    let started = Instant::now();
    let replay = Driver::new(capacity)
        .replay(&mut *model, requests.iter().copied())
        .expect("the model keeps the protocol");
    (replay.misses, started.elapsed())
}

/// "4897", or "1% (807)" where the capacity is a share of the ids.
fn capacity_label(label: &str, capacity: usize) -> String {
    if label == capacity.to_string() {
        label.to_owned()
    } else {
        format!("{label} ({capacity})")
    }
}

fn mrps(requests: usize, elapsed: Duration) -> f64 {
    requests as f64 / elapsed.as_secs_f64() / 1e6
}

/// moka's best and quick_cache's miss ratio at one workload and capacity.
struct Baseline {
    workload: &'static str,
    label: String,
    capacity: usize,
    moka_best: f64,
    quick_cache: f64,
}

/// Miss ratios of everything at every capacity, printed as two tables;
/// returns moka's and quick_cache's for the table of shipped policies.
fn print_miss_ratios(workloads: &[Workload]) -> Vec<Baseline> {
    let runs = if benchmarking() { MOKA_RUNS } else { 1 };
    println!(
        "\nmiss ratios (moka: best of {runs} runs and max - min; M req/s: one replay, \
         the reference models are written for clarity, not speed)\n"
    );
    println!(
        "| workload | capacity | moka best | moka spread | quick_cache | best reference model | moka M req/s | quick_cache M req/s |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|");
    let mut per_model = Vec::new();
    let mut baselines = Vec::new();
    for w in workloads {
        let n = w.requests.len();
        let ratio = |misses: u64| misses as f64 / n as f64;
        for (label, capacity) in &w.capacities {
            let capacity = *capacity;
            let mut moka = Vec::new();
            let mut moka_time = Duration::MAX;
            for _ in 0..runs {
                let started = Instant::now();
                moka.push(ratio(moka_misses(&w.requests, capacity)));
                moka_time = moka_time.min(started.elapsed());
            }
            let best = moka.iter().copied().fold(f64::INFINITY, f64::min);
            let worst = moka.iter().copied().fold(0.0, f64::max);
            let started = Instant::now();
            let quick = ratio(quick_cache_misses(&w.requests, capacity));
            let quick_time = started.elapsed();
            let models = run_models(&w.requests, capacity);
            let (best_model, best_misses, _) = models
                .iter()
                .min_by_key(|(_, misses, _)| *misses)
                .expect("at least one model");
            println!(
                "| {} | {} | {best:.4} | {:.4} | {quick:.4} | {best_model} {:.4} | {:.2} | {:.2} |",
                w.name,
                capacity_label(label, capacity),
                worst - best,
                ratio(*best_misses),
                mrps(n, moka_time),
                mrps(n, quick_time),
            );
            per_model.push((w.name, label.clone(), n, models));
            baselines.push(Baseline {
                workload: w.name,
                label: capacity_label(label, capacity),
                capacity,
                moka_best: best,
                quick_cache: quick,
            });
        }
    }
    println!("\nreference models (miss ratio, M req/s)\n");
    let mut header = String::from("| workload | capacity |");
    for (name, _, _) in MODELS {
        header.push_str(&format!(" {name} |"));
    }
    println!("{header}");
    println!("|---|---|{}", "---:|".repeat(MODELS.len()));
    for (workload, label, n, models) in per_model {
        let mut row = format!("| {workload} | {label} |");
        for (_, misses, elapsed) in models {
            row.push_str(&format!(
                " {:.4} ({:.1}) |",
                misses as f64 / n as f64,
                mrps(n, elapsed)
            ));
        }
        println!("{row}");
    }
    println!();
    baselines
}

/// The shipped policies, `policies/*.wasm`, by name.
fn shipped_policies() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("policies/ reads")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".wasm")?.to_owned())
        })
        .collect();
    names.sort();
    names
}

/// Every shipped policy through the host's table at every point of
/// `baselines`, next to moka's best and quick_cache: the quality goal is
/// that the best of them misses less than both at every point.
fn print_shipped(workloads: &[Workload], baselines: &[Baseline]) {
    let engine = PolicyEngine::new(
        PolicyLimits {
            call_timeout: Duration::from_secs(10),
            ..PolicyLimits::default()
        },
        None,
    )
    .expect("policy engine");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let names = shipped_policies();
    println!("shipped policies through the host (policies/*.wasm, default settings; miss ratio)\n");
    let mut header = String::from(
        "| workload | capacity | moka best | quick_cache | best shipped | beats both by |",
    );
    for name in &names {
        header.push_str(&format!(" {name} |"));
    }
    println!("{header}");
    println!(
        "|---|---|---:|---:|---|---:|{}",
        "---:|".repeat(names.len())
    );
    for b in baselines {
        let w = workloads
            .iter()
            .find(|w| w.name == b.workload)
            .expect("a baseline's workload");
        let ratios: Vec<f64> = names
            .iter()
            .map(|name| {
                let policy = WasmPolicy::load(
                    engine.clone(),
                    &dir.join(format!("{name}.wasm")),
                    b.capacity as u64,
                    Vec::new(),
                )
                .unwrap_or_else(|e| panic!("{name}.wasm: {e}"));
                replay(
                    &w.trace,
                    policy,
                    b.capacity as u64,
                    CapacityMode::Objects,
                    &mut |_| {},
                )
                .unwrap_or_else(|e| panic!("{name}.wasm replay: {e}"))
                .miss_ratio()
            })
            .collect();
        let (best_name, best) = names
            .iter()
            .zip(&ratios)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one shipped policy");
        let margin = b.moka_best.min(b.quick_cache) - best;
        let mut row = format!(
            "| {} | {} | {:.4} | {:.4} | {best_name} {best:.4} | {} |",
            b.workload,
            b.label,
            b.moka_best,
            b.quick_cache,
            if margin > 0.0 {
                format!("{margin:.4}")
            } else {
                format!("no ({margin:.4})")
            }
        );
        for r in &ratios {
            row.push_str(&format!(" {r:.4} |"));
        }
        println!("{row}");
    }
    println!();
}

/// Every model at one capacity, on two threads (the replays are independent).
fn run_models(requests: &[(u64, u64)], capacity: usize) -> Vec<(&'static str, u64, Duration)> {
    let run = |first: usize| {
        MODELS
            .iter()
            .skip(first)
            .step_by(2)
            .map(|(label, name, config)| {
                let (misses, elapsed) = model_misses(name, config, requests, capacity);
                (*label, misses, elapsed)
            })
            .collect::<Vec<_>>()
    };
    let (even, odd) = std::thread::scope(|s| {
        let odd = s.spawn(|| run(1));
        (run(0), odd.join().expect("model replay thread"))
    });
    // Back in table order: even and odd positions interleaved.
    let mut odd = odd.into_iter();
    even.into_iter()
        .flat_map(|e| std::iter::once(e).chain(odd.next()))
        .collect()
}

fn bench_caches(c: &mut Criterion, workloads: &[Workload]) {
    for w in workloads {
        let mut group = c.benchmark_group(format!("caches_{}", w.name));
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_secs(1));
        group.throughput(Throughput::Elements(w.requests.len() as u64));
        for (label, capacity) in &w.capacities {
            let capacity = *capacity;
            group.bench_function(format!("moka/{label}"), |b| {
                b.iter_batched(
                    || moka::sync::Cache::<u64, ()>::new(capacity as u64),
                    |cache| black_box(replay_moka(&cache, black_box(&w.requests))),
                    BatchSize::PerIteration,
                )
            });
            group.bench_function(format!("quick_cache/{label}"), |b| {
                b.iter_batched(
                    || quick_cache::sync::Cache::<u64, ()>::new(capacity),
                    |cache| black_box(replay_quick_cache(&cache, black_box(&w.requests))),
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

fn main() {
    let workloads = workloads();
    let baselines = print_miss_ratios(&workloads);
    print_shipped(&workloads, &baselines);
    let mut criterion = Criterion::default().configure_from_args();
    bench_caches(&mut criterion, &workloads);
    criterion.final_summary();
}
