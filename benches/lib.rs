//! Support shared by the benches: a counting allocator and the policy files.
//!
//! The benches live in their own package so that `cargo bench` builds
//! `shadowcat` without the test-only `parking_lot` deadlock detection (a
//! dev-dependency feature of the host crate), which would skew every figure.

pub mod mcp_upstream;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Tracks live heap bytes and their high-water mark; a bench declares it its
/// `#[global_allocator]`.
pub struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE_BYTES.fetch_add(by, Ordering::Relaxed) + by;
    PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` unchanged and only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE_BYTES.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

/// Heap bytes live now (as seen by [`CountingAllocator`]).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Heap high-water mark since the last [`reset_heap_peak`].
pub fn peak_bytes() -> usize {
    PEAK_BYTES.load(Ordering::Relaxed)
}

/// Restarts the high-water mark at the current level, which it returns.
pub fn reset_heap_peak() -> usize {
    let now = live_bytes();
    PEAK_BYTES.store(now, Ordering::Relaxed);
    now
}

/// A built policy shipped in `policies/`.
pub fn policy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(format!("{name}.wasm"))
}

/// A WebAssembly test fixture in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The policies every comparison bench runs: the native ones and each shipped
/// WebAssembly policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NativeLru,
    NativeFifo,
    Wasm(&'static str),
}

impl Kind {
    /// The native baselines, the policies the interface was first shipped
    /// with, the simulator-defined ones that list their victims ahead (2Q
    /// and S3-FIFO for arrivals they do not remember), and those called once
    /// per eviction (ARC, Redis's decaying LFU, W-TinyLFU with Caffeine's
    /// and tuned settings), whose cost is mostly the call.
    pub const ALL: [Kind; 14] = [
        Kind::NativeLru,
        Kind::NativeFifo,
        Kind::Wasm("lru"),
        Kind::Wasm("fifo"),
        Kind::Wasm("lfu"),
        Kind::Wasm("sieve"),
        Kind::Wasm("clock"),
        Kind::Wasm("ttl"),
        Kind::Wasm("twoq"),
        Kind::Wasm("s3fifo"),
        Kind::Wasm("arc"),
        Kind::Wasm("lfu-decay"),
        Kind::Wasm("wtinylfu"),
        Kind::Wasm("wtinylfu-tuned"),
    ];

    /// The longest label, for the columns of the benches' own tables.
    pub fn label_width() -> usize {
        Kind::ALL.iter().map(|k| k.label().len()).max().unwrap_or(0)
    }

    pub fn label(self) -> String {
        match self {
            Kind::NativeLru => "native_lru".into(),
            Kind::NativeFifo => "native_fifo".into(),
            Kind::Wasm(name) => format!("{name}.wasm"),
        }
    }

    /// A fresh policy for a table of `capacity`.
    pub fn make(
        self,
        engine: &Arc<shadowcat::wasm::PolicyEngine>,
        capacity: u64,
    ) -> Arc<dyn shadowcat::eviction::EvictionPolicy> {
        use shadowcat::eviction::{Fifo, HostLru};
        match self {
            Kind::NativeLru => Arc::new(HostLru),
            Kind::NativeFifo => Arc::new(Fifo::default()),
            Kind::Wasm(name) => shadowcat::wasm::WasmPolicy::load(
                Arc::clone(engine),
                &policy_file(name),
                capacity,
                Vec::new(),
            )
            .expect("policy loads"),
        }
    }

    /// The native policy a wasm one is compared with.
    pub fn native_counterpart(self) -> Kind {
        match self {
            Kind::Wasm("fifo") => Kind::NativeFifo,
            _ => Kind::NativeLru,
        }
    }
}

/// Replays `trace` in object mode with `policy`, timing only the replay; the
/// policy is kept alive (and dropped) by the caller, outside the timing.
pub fn timed_replay(
    trace: &shadowcat::trace::Trace,
    policy: &Arc<dyn shadowcat::eviction::EvictionPolicy>,
    capacity: u64,
) -> (std::time::Duration, shadowcat::replay::ReplayOutcome) {
    let start = std::time::Instant::now();
    let outcome = shadowcat::replay::replay(
        std::hint::black_box(trace),
        Arc::clone(policy),
        capacity,
        shadowcat::replay::CapacityMode::Objects,
        &mut |_| {},
    )
    .expect("replay");
    (start.elapsed(), outcome)
}

/// True under `cargo bench` (criterion's benchmark mode), false under
/// `cargo test --benches`, `--test` or `--list`.
pub fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}
