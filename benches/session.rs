//! Session table costs: touch, create at capacity, cleanup, memory per session.
//!
//! `cargo bench --bench session` runs all; `cargo bench session_cleanup` only cleanup.
//! A bare `Mutex<LinkedHashSet>` move-to-back is measured in the same run as the
//! baseline the table's touch is compared with.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hashlink::LinkedHashSet;
use parking_lot::Mutex;
use shadowcat::eviction::{EvictionPolicy, Fifo, HostLru};
use shadowcat::session::{Clock, NewSession, SessionTable};
use shadowcat::TableConfig;
use shadowcat_benches::{live_bytes, CountingAllocator};

/// Counts live heap bytes so memory per session is measured, not estimated.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SECOND: u64 = 1_000_000;

fn table(config: TableConfig, policy: Arc<dyn EvictionPolicy>) -> SessionTable<()> {
    SessionTable::builder(config)
        .policy(policy)
        .clock(Clock::manual())
        .build()
        .expect("valid config")
}

fn bench_touch(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_touch");
    let config = TableConfig::unbounded_in_time(10_000);
    let t = Arc::new(table(config.clone(), Arc::new(HostLru)));
    let ids: Vec<_> = (0..10_000)
        .map(|_| t.create(NewSession::new(())).expect("create").id)
        .collect();
    let mut i = 0usize;
    group.bench_function("table/1_thread", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            t.touch(black_box(ids[i]), 64).expect("touch")
        })
    });
    let limited = Arc::new(table(
        TableConfig {
            rate_limit: Some(shadowcat::RateLimit {
                per_second: 1_000_000.try_into().expect("non-zero"),
                burst: 1_000_000.try_into().expect("non-zero"),
            }),
            ..config.clone()
        },
        Arc::new(HostLru),
    ));
    let limited_ids: Vec<_> = (0..10_000)
        .map(|_| limited.create(NewSession::new(())).expect("create").id)
        .collect();
    group.bench_function("table_rate_limited/1_thread", |b| {
        b.iter(|| {
            i = (i + 7919) % limited_ids.len();
            limited.touch(black_box(limited_ids[i]), 64).expect("touch")
        })
    });
    group.bench_function("table/2_threads", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters / 2 + 1;
            let start = Instant::now();
            std::thread::scope(|s| {
                for offset in 0..2usize {
                    let (t, ids) = (&t, &ids);
                    s.spawn(move || {
                        let mut i = offset * 5000;
                        for _ in 0..per_thread {
                            i = (i + 7919) % ids.len();
                            t.touch(black_box(ids[i]), 64).expect("touch");
                        }
                    });
                }
            });
            // Per operation across both threads: wall time over all operations.
            start.elapsed() / 2
        })
    });
    let baseline: Mutex<LinkedHashSet<u64>> = Mutex::new((0..10_000u64).collect());
    let mut k = 0u64;
    group.bench_function("baseline_mutex_linked_hash_set/1_thread", |b| {
        b.iter(|| {
            k = (k + 7919) % 10_000;
            baseline.lock().to_back(black_box(&k))
        })
    });
    group.finish();
}

fn bench_create_at_capacity(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_create_at_capacity");
    for (name, policy) in [
        ("lru", Arc::new(HostLru) as Arc<dyn EvictionPolicy>),
        ("fifo", Arc::new(Fifo::default())),
    ] {
        let t = table(TableConfig::unbounded_in_time(10_000), policy);
        for _ in 0..10_000 {
            t.create(NewSession::new(())).expect("fill");
        }
        group.bench_function(format!("{name}/create_and_evict_one"), |b| {
            b.iter(|| {
                let created = t.create(NewSession::new(())).expect("create");
                debug_assert_eq!(created.evicted, 1);
                black_box(created.id)
            })
        });
    }
    group.finish();
}

/// 100,000 live sessions whose expiry times are spread over 100 steps; each
/// measured cleanup advances one step (1,000 sessions due), untimed refills keep
/// the table at 100,000.
fn bench_cleanup(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_cleanup");
    group.sample_size(30);
    const LIVE: usize = 100_000;
    const DUE: usize = 1_000;
    const STEPS: u64 = (LIVE / DUE) as u64;
    for kind in ["idle", "age"] {
        let timeout = Duration::from_micros(STEPS * SECOND);
        let config = TableConfig {
            max_sessions: LIVE,
            idle_timeout: (kind == "idle").then_some(timeout),
            max_age: (kind == "age").then_some(timeout),
            ..TableConfig::unbounded_in_time(LIVE)
        };
        let t = table(config, Arc::new(HostLru));
        for step in 0..STEPS {
            t.clock().set(step * SECOND);
            for _ in 0..DUE {
                t.create(NewSession::new(())).expect("fill");
            }
        }
        group.bench_function(format!("{kind}_1000_of_100000"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let now = t.clock().advance(SECOND);
                    let start = Instant::now();
                    let expired = t.cleanup_expired(black_box(now));
                    total += start.elapsed();
                    assert_eq!(expired, DUE);
                    for _ in 0..DUE {
                        t.create(NewSession::new(())).expect("refill");
                    }
                }
                total
            })
        });
    }
    group.finish();
}

fn bench_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_memory");
    group.sample_size(10);
    const N: usize = 100_000;
    for (name, config) in [
        ("no_limiter", TableConfig::unbounded_in_time(N)),
        (
            "with_limiter_and_max_age",
            TableConfig {
                rate_limit: TableConfig::default().rate_limit,
                max_age: TableConfig::default().max_age,
                ..TableConfig::unbounded_in_time(N)
            },
        ),
    ] {
        let before = live_bytes();
        let t = table(config.clone(), Arc::new(HostLru));
        for _ in 0..N {
            t.create(NewSession::new(())).expect("create");
        }
        let per_session = (live_bytes() - before) as f64 / N as f64;
        println!("session_memory/{name}: {per_session:.0} bytes per live session at {N} sessions");
        drop(t);
        group.bench_function(format!("{name}/fill_100000"), |b| {
            b.iter_batched(
                || table(config.clone(), Arc::new(HostLru)),
                |t| {
                    for _ in 0..N {
                        t.create(NewSession::new(())).expect("create");
                    }
                    t
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_touch,
    bench_create_at_capacity,
    bench_cleanup,
    bench_memory
);
criterion_main!(benches);
