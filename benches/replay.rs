//! Trace replay throughput and memory, native against WebAssembly policies.
//!
//! `cargo bench --bench replay` replays one synthetic Zipf trace (alpha 1.0,
//! seed 42; 10,000,000 requests over 1,000,000 ids) through the session table at
//! capacities of 1% and 10% of its distinct ids, with the native `lru` and `fifo`
//! and every WebAssembly policy of `Kind::ALL` (`benches/lib.rs`). The trace is generated once,
//! outside every measurement; each iteration makes a fresh policy (untimed) and
//! replays the whole trace (timed: table construction, the replay, dropping the
//! table). Criterion reports requests/s (`Throughput::Elements`), 10 flat samples
//! of one replay each, under `replay_zipf_<size>/<policy>/cap_<1|10>pct`
//! (e.g. `replay_zipf_10M/lru.wasm/cap_10pct`).
//!
//! The full grid takes a long time: every benchmark needs at least 14 replays
//! (warm-up, 10 samples, 3 hand-timed), and at 10M requests a replay takes
//! seconds natively and tens of seconds with a wasm policy, so expect half an
//! hour or more on a small machine; select with a filter, e.g.
//! `cargo bench --bench replay -- 'lru.wasm/cap_10pct'`.
//! `SHADOWCAT_BENCH_REQUESTS` sets the trace length (default 10,000,000; the id
//! space is always a tenth of it), e.g.
//! `SHADOWCAT_BENCH_REQUESTS=1000000 cargo bench --bench replay`. Under
//! `cargo test --benches` the default is 100,000 so the check stays quick.
//!
//! In benchmark mode, after each selected benchmark, 3 more replays are timed by
//! hand and their heap is watched by a counting global allocator: the printed
//! peak is the most live heap above the level just before the replay (the trace
//! itself excluded, its size is printed once). A WebAssembly guest's linear
//! memory is mapped by wasmtime, not allocated on the Rust heap, so the peak
//! resident set size growth during the replay (Linux: `VmHWM` after resetting it
//! via `/proc/self/clear_refs`) is printed too; it counts only pages newly made
//! resident, so heap that an earlier replay freed and this one reuses does not
//! show (which is why the native policies read ~0). A summary table closes the run:
//! policy, capacity, M requests/s (median of the 3 hand-timed replays), misses,
//! miss ratio, peak heap and peak RSS growth.
//!
//! A second group, `replay_prefetch_<size>/<policy>/cap_<1|10>pct/<depth>`,
//! replays the same trace through the policies that choose victims ahead,
//! twice in the same run: with `--policy-prefetch 32` (`fixed_32`: 32 victims
//! per call, what the host asked before it adapted the depth) and with the
//! default (`adaptive`: from 32, doubling while answers are used up, to 128).
//! Select it with `cargo bench --bench replay -- replay_prefetch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use shadowcat::trace::{generate, SyntheticSpec, Trace};
use shadowcat::wasm::{PolicyEngine, PolicyLimits};
use shadowcat_benches::{
    benchmarking, live_bytes, peak_bytes, reset_heap_peak, timed_replay, CountingAllocator, Kind,
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A `/proc/self/status` field in bytes (Linux only).
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resets the kernel's peak RSS to the current RSS, which it returns.
fn reset_rss_peak() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    proc_status_bytes("VmRSS:")
}

const MIB: f64 = (1 << 20) as f64;
const DEFAULT_REQUESTS: usize = 10_000_000;
const TEST_MODE_REQUESTS: usize = 100_000;
const OWN_RUNS: usize = 3;

fn requests() -> usize {
    match std::env::var("SHADOWCAT_BENCH_REQUESTS") {
        Ok(text) => text
            .replace('_', "")
            .parse()
            .ok()
            .filter(|&n: &usize| n >= 10)
            .unwrap_or_else(|| panic!("SHADOWCAT_BENCH_REQUESTS={text:?}: want a number >= 10")),
        Err(_) if benchmarking() => DEFAULT_REQUESTS,
        Err(_) => TEST_MODE_REQUESTS,
    }
}

/// `10M`, `1M`, `500k` or the plain number.
fn size_label(n: usize) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// One measured replay.
struct Run {
    elapsed: Duration,
    misses: u64,
    /// Most live heap above the level before the replay.
    peak_heap: usize,
    /// Peak RSS growth during the replay, where the kernel reports it.
    peak_rss: Option<u64>,
}

/// Replays `trace` with a fresh policy, made and dropped outside the timing.
fn run(engine: &Arc<PolicyEngine>, kind: Kind, trace: &Trace, capacity: u64) -> Run {
    let policy = kind.make(engine, capacity);
    let rss_before = reset_rss_peak();
    let heap_before = reset_heap_peak();
    let (elapsed, outcome) = timed_replay(trace, &policy, capacity);
    let peak_heap = peak_bytes().saturating_sub(heap_before);
    let peak_rss = rss_before
        .zip(proc_status_bytes("VmHWM:"))
        .map(|(before, peak)| peak.saturating_sub(before));
    drop(policy);
    Run {
        elapsed,
        misses: outcome.misses,
        peak_heap,
        peak_rss,
    }
}

struct Row {
    kind: Kind,
    percent: u64,
    capacity: u64,
    mrps: f64,
    misses: u64,
    requests: usize,
    peak_heap: usize,
    peak_rss: Option<u64>,
}

/// The benches' trace of `requests` requests: Zipf, alpha 1.0, over a tenth
/// as many ids, seed 42.
fn trace_spec(requests: usize) -> (SyntheticSpec, usize) {
    let ids = (requests / 10).max(1);
    let spec = format!("zipf:alpha=1.0,requests={requests},ids={ids},seed=42")
        .parse()
        .expect("valid spec");
    (spec, ids)
}

fn bench_replay(c: &mut Criterion) {
    let requests = requests();
    let (spec, ids) = trace_spec(requests);
    let heap_before = live_bytes();
    let started = Instant::now();
    let trace = generate(&spec);
    let generated_in = started.elapsed();
    let trace_heap = live_bytes().saturating_sub(heap_before);
    let distinct = trace.distinct_ids() as u64;
    println!(
        "replay trace: zipf alpha 1.0, {} requests over {ids} ids ({distinct} distinct), \
         generated in {generated_in:.2?}; trace heap {:.1} MiB",
        trace.len(),
        trace_heap as f64 / MIB
    );

    let cache = tempfile::tempdir().expect("tempdir");
    let engine =
        PolicyEngine::new(PolicyLimits::default(), Some(cache.path().to_owned())).expect("engine");

    // The trace size is part of the id, so baselines of different sizes are
    // never compared with each other.
    let group_name = format!("replay_zipf_{}", size_label(requests));
    let mut group = c.benchmark_group(&group_name);
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(trace.len() as u64));
    let mut rows = Vec::new();
    for percent in [1u64, 10] {
        let capacity = (distinct * percent / 100).max(1);
        for kind in Kind::ALL {
            let bench_id = format!("{}/cap_{percent}pct", kind.label());
            let mut matched = false;
            group.bench_function(&bench_id, |b| {
                matched = true;
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run(&engine, kind, &trace, capacity).elapsed)
                        .sum()
                })
            });
            if !matched || !benchmarking() {
                continue;
            }
            let runs: Vec<Run> = (0..OWN_RUNS)
                .map(|_| run(&engine, kind, &trace, capacity))
                .collect();
            let mut secs: Vec<f64> = runs.iter().map(|r| r.elapsed.as_secs_f64()).collect();
            secs.sort_by(f64::total_cmp);
            assert!(
                runs.iter().all(|r| r.misses == runs[0].misses),
                "{bench_id}: replays are deterministic"
            );
            let row = Row {
                kind,
                percent,
                capacity,
                mrps: trace.len() as f64 / secs[OWN_RUNS / 2] / 1e6,
                misses: runs[0].misses,
                requests: trace.len(),
                peak_heap: runs.iter().map(|r| r.peak_heap).max().unwrap_or(0),
                peak_rss: runs.iter().filter_map(|r| r.peak_rss).max(),
            };
            println!(
                "{group_name}/{bench_id}: peak heap during one replay {:.1} MiB \
                 (above {:.1} MiB live, of which the trace {:.1} MiB); peak RSS growth {}",
                row.peak_heap as f64 / MIB,
                live_bytes() as f64 / MIB,
                trace_heap as f64 / MIB,
                row.peak_rss
                    .map(|b| format!("{:.1} MiB", b as f64 / MIB))
                    .unwrap_or_else(|| "n/a".into())
            );
            rows.push(row);
        }
    }
    group.finish();
    if rows.is_empty() {
        return;
    }
    println!(
        "\nreplay summary: {} requests, {distinct} distinct ids; M req/s is the median of \
         {OWN_RUNS} hand-timed replays; peak heap excludes the {:.1} MiB trace",
        trace.len(),
        trace_heap as f64 / MIB
    );
    let width = Kind::label_width();
    println!(
        "{:<width$} {:>14} {:>9} {:>12} {:>10} {:>14} {:>14}",
        "policy", "capacity", "M req/s", "misses", "miss ratio", "peak heap MiB", "peak RSS+ MiB"
    );
    for r in &rows {
        println!(
            "{:<width$} {:>8} ({:>2}%) {:>9.2} {:>12} {:>10.4} {:>14.1} {:>14}",
            r.kind.label(),
            r.capacity,
            r.percent,
            r.mrps,
            r.misses,
            r.misses as f64 / r.requests as f64,
            r.peak_heap as f64 / MIB,
            r.peak_rss
                .map(|b| format!("{:.1}", b as f64 / MIB))
                .unwrap_or_else(|| "n/a".into())
        );
    }
}

/// The policies whose calls the prefetch depth amortises: the two the
/// interface shipped with, LFU and SIEVE (arrivals may follow their
/// victims), and 2Q, whose ghost-conditional answers keep the fixed depth.
const PREFETCHING: [Kind; 5] = [
    Kind::Wasm("fifo"),
    Kind::Wasm("lru"),
    Kind::Wasm("lfu"),
    Kind::Wasm("sieve"),
    Kind::Wasm("twoq"),
];

/// The former fixed depth, the baseline of the adaptive one in the same run.
const FIXED_PREFETCH: usize = 32;

fn bench_prefetch(c: &mut Criterion) {
    let requests = requests();
    let trace = generate(&trace_spec(requests).0);
    let distinct = trace.distinct_ids() as u64;
    let cache = tempfile::tempdir().expect("tempdir");
    let engine = |prefetch| {
        let limits = PolicyLimits {
            prefetch,
            ..PolicyLimits::default()
        };
        PolicyEngine::new(limits, Some(cache.path().to_owned())).expect("engine")
    };
    let engines = [
        (format!("fixed_{FIXED_PREFETCH}"), engine(FIXED_PREFETCH)),
        (
            "adaptive".to_owned(),
            engine(PolicyLimits::default().prefetch),
        ),
    ];
    let mut group = c.benchmark_group(format!("replay_prefetch_{}", size_label(requests)));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(trace.len() as u64));
    for percent in [1u64, 10] {
        let capacity = (distinct * percent / 100).max(1);
        for kind in PREFETCHING {
            let mut misses = Vec::new();
            for (depth, engine) in &engines {
                group.bench_function(format!("{}/cap_{percent}pct/{depth}", kind.label()), |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| {
                                let run = run(engine, kind, &trace, capacity);
                                misses.push(run.misses);
                                run.elapsed
                            })
                            .sum()
                    })
                });
            }
            // The depth changes how often the policy is asked, never what it
            // decides (its order holds between events).
            assert!(
                misses.windows(2).all(|w| w[0] == w[1]),
                "{}: misses differ between depths: {misses:?}",
                kind.label()
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_replay, bench_prefetch);
criterion_main!(benches);
