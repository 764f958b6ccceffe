//! Test fixture for the host's sandboxing: one guest whose misbehaviour is chosen
//! by the config key `mode` at create time. Built to `tests/fixtures/hostile.wasm`,
//! outside `policies/`, so that it is never offered as a real policy.
//!
//! Between faults it is a correct LRU, so a test can check that the host keeps
//! working (and recovers state by replay) around a fault.
//!
//! Modes (all faults happen in `victims` unless said otherwise):
//! - absent or `lru`: no fault.
//! - `loop`: spins forever; the host must stop it with fuel or an epoch deadline.
//! - `bomb`: allocates and touches memory until the host's memory cap makes the
//!   allocation fail, which aborts (a trap).
//! - `panic`: panics, which with `panic=abort` is a trap.
//! - `bad-victims`: returns an id that never existed, then every known id twice
//!   (so pinned and repeated ids come back), ignoring `count`.
//! - `million`: returns 1,000,000 ids (known ones first, then ids that never
//!   existed), ignoring `count`.
//! - `error`: returns `Err("hostile policy: refusing to choose")`.
//! - `create-fail`: `create` returns an error.
//! - `quota`: `adjust-quotas` proposes an absurd rate (a million per admitted
//!   request) and a zero burst for every session, for the host to clamp.
//! - `trap-at`: every export call (including `create` and `info`) counts, and
//!   call number `at` (config key, default 1000) traps. The count lives in the
//!   instance, so the fresh instance the host makes afterwards starts over.
//! - `trap-every`: counted the same way, every `every`-th call (config key,
//!   default 7) traps: an intermittent fault that never makes a streak.
//! - `empty`: `victims` proposes nothing.
//! - `garbage`: `victims` proposes `count` ids that never existed.
//! - `trap-maintain`, `trap-quotas`: `maintain`, or `adjust-quotas`, traps.
//! - `huge-name`: `info` reports a 1 MiB name and version full of line breaks
//!   and escape sequences that imitate host log lines.
//! - `huge-error`: `victims` and `maintain` return a 1 MiB such error.
//! - `huge-log`: every `victims` call logs a 1 MiB such line (at warn), then
//!   answers correctly.
//! - `huge-create-error`: `create` fails with a 1 MiB such message.
//! - `create-loop`: `create` spins forever.
//! - `ghost-flood`: `victims` answers as LRU, then follows the victims with a
//!   ghost section (interface 0.3) of 1,000,000 keys, every other call as
//!   changes and as a replacement in turn, for a host that keeps a bounded
//!   mirror of a `ghost-conditional` policy's ghosts.
//! - `mru`: `victims` answers most recently used first (ignoring candidates),
//!   a policy whose order any touch changes: with `traits=stable-order` it
//!   breaks the promise it declares.
//! - `repeat`: `victims` answers the LRU victims each twice, within `count`
//!   (so only with several asked, as under `traits=stable-order`).
//!
//! Config keys for any mode:
//! - `min-capacity`: `create` refuses a smaller capacity, as a policy with a
//!   minimum table size would.
//! - `max-observe`: an `observe` call with more events than this traps, as a
//!   slow guest handed too much in one call would miss its deadline.
//! - `traits`: what `info` declares, comma separated: `stable-order`,
//!   `sampled`, `ghost-conditional` (default none), so a test can hand the
//!   host a policy that claims a stable order and then breaks it, or one that
//!   asks for samples.
//! - `sample-size`: what `info` declares as its sample size (default 64).

// Natively only the unit tests call into the fixture.
#![cfg_attr(not(any(target_arch = "wasm32", test)), allow(dead_code))]

#[path = "../../lru/src/lru.rs"]
mod lru;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::Lru;
use shadowcat_policy_sdk::bindings::shadowcat::policy::types::Table as WitTable;
use shadowcat_policy_sdk::{
    Adapter, Choice, Config, EVENT_WORDS, GHOSTS, GHOSTS_REPLACED, Guest, Info, Level, Needs,
    Policy, RemovalCause, Session, Table, Traits, USAGE_WORDS, apply_victims_input, choose_victims,
    log, with_policy,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Lru,
    Loop,
    Bomb,
    Panic,
    BadVictims,
    Million,
    Error,
    CreateFail,
    TrapAt,
    TrapEvery,
    Quota,
    Empty,
    Garbage,
    TrapMaintain,
    TrapQuotas,
    HugeName,
    HugeError,
    HugeLog,
    HugeCreateError,
    CreateLoop,
    GhostFlood,
    Mru,
    Repeat,
}

const MODES: &[(&str, Mode)] = &[
    ("lru", Mode::Lru),
    ("loop", Mode::Loop),
    ("bomb", Mode::Bomb),
    ("panic", Mode::Panic),
    ("bad-victims", Mode::BadVictims),
    ("million", Mode::Million),
    ("error", Mode::Error),
    ("create-fail", Mode::CreateFail),
    ("trap-at", Mode::TrapAt),
    ("trap-every", Mode::TrapEvery),
    ("quota", Mode::Quota),
    ("empty", Mode::Empty),
    ("garbage", Mode::Garbage),
    ("trap-maintain", Mode::TrapMaintain),
    ("trap-quotas", Mode::TrapQuotas),
    ("huge-name", Mode::HugeName),
    ("huge-error", Mode::HugeError),
    ("huge-log", Mode::HugeLog),
    ("huge-create-error", Mode::HugeCreateError),
    ("create-loop", Mode::CreateLoop),
    ("ghost-flood", Mode::GhostFlood),
    ("mru", Mode::Mru),
    ("repeat", Mode::Repeat),
];

/// An id the host never hands out in practice (generation and slot all ones).
const NEVER_EXISTED: u64 = u64::MAX - 1;

// Atomics rather than a RefCell: they are plain loads and stores on wasm32 and
// need no borrow bookkeeping around the adapter's own state.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Call number that traps; 0 means never.
static TRAP_AT: AtomicU64 = AtomicU64::new(0);
/// Every call whose number is a multiple of this traps; 0 means never.
static TRAP_EVERY: AtomicU64 = AtomicU64::new(0);
/// Most events one `observe` call may carry before it traps; 0 means any.
static MAX_OBSERVE: AtomicU64 = AtomicU64::new(0);
static SPIN: AtomicU64 = AtomicU64::new(0);

fn count_call() {
    let call = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let every = TRAP_EVERY.load(Ordering::Relaxed);
    if call == TRAP_AT.load(Ordering::Relaxed) || (every > 0 && call.is_multiple_of(every)) {
        trap();
    }
}

/// Exactly 1 MiB of text that, printed raw, would start lines looking like the
/// host's own and drive the terminal.
fn huge_text() -> String {
    const SIZE: usize = 1 << 20;
    const FORGED: &str = "hostile\nERROR shadowcat: forged line\r\x1b[2K";
    let mut text = String::with_capacity(SIZE);
    while text.len() + FORGED.len() <= SIZE {
        text.push_str(FORGED);
    }
    while text.len() < SIZE {
        text.push('x');
    }
    text
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

const TRAITS: &[(&str, Traits)] = &[
    ("stable-order", Traits::STABLE_ORDER),
    ("sampled", Traits::SAMPLED),
    ("ghost-conditional", Traits::GHOST_CONDITIONAL),
];

fn parse_traits(list: &str) -> Result<Traits, String> {
    let mut traits = Traits::empty();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(&(_, t)) = TRAITS.iter().find(|(n, _)| *n == name) else {
            return Err(format!(
                "hostile policy: unknown trait `{name}` in `traits`; traits: stable-order, sampled, ghost-conditional"
            ));
        };
        traits |= t;
    }
    Ok(traits)
}

pub struct Hostile {
    mode: Mode,
    traits: Traits,
    sample_size: u32,
    lru: Lru,
}

impl Policy for Hostile {
    const NAME: &'static str = "hostile";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::ACCESSED).union(Needs::REMOVED);

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(
            Self::NAME,
            &[
                "mode",
                "at",
                "every",
                "min-capacity",
                "max-observe",
                "traits",
                "sample-size",
            ],
        )?;
        let capacity = table.capacity;
        let name = config.str_or("mode", "lru");
        let Some(&(_, mode)) = MODES.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = MODES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "hostile policy: unknown mode `{name}`; modes: {}",
                names.join(", ")
            ));
        };
        let at = config.u64_or("at", 1000)?;
        let every = config.u64_or("every", 7)?;
        let min_capacity = config.u64_or("min-capacity", 0)?;
        let traits = parse_traits(config.str_or("traits", ""))?;
        let sample_size = config.u32_or("sample-size", Self::SAMPLE_SIZE)?;
        if capacity < min_capacity {
            return Err(format!(
                "hostile policy: capacity {capacity} is below the minimum of {min_capacity}"
            ));
        }
        MAX_OBSERVE.store(config.u64_or("max-observe", 0)?, Ordering::Relaxed);
        TRAP_AT.store(0, Ordering::Relaxed);
        TRAP_EVERY.store(0, Ordering::Relaxed);
        match mode {
            Mode::CreateFail => {
                return Err(
                    "hostile policy: create refused by configuration (mode=create-fail)".into(),
                );
            }
            Mode::HugeCreateError => return Err(huge_text()),
            Mode::CreateLoop => spin(),
            Mode::TrapAt => TRAP_AT.store(at, Ordering::Relaxed),
            Mode::TrapEvery => TRAP_EVERY.store(every, Ordering::Relaxed),
            _ => {}
        }
        Ok(Self {
            mode,
            traits,
            sample_size,
            lru: Lru::new(),
        })
    }

    fn on_insert(&mut self, session: &Session) {
        self.lru.touch(session.id, session.time);
    }

    fn on_access(&mut self, session: &Session) {
        self.lru.touch(session.id, session.time);
    }

    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        self.lru.remove(id);
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        self.lru.pick(count, choice.candidates, out);
    }
}

type Correct = Adapter<Hostile>;

/// Wraps the SDK adapter to count calls and to answer `victims` in ways the SDK
/// would not allow (more than `count` ids).
struct Export;

impl Guest for Export {
    fn create(table: WitTable, config: Vec<(String, String)>) -> Result<(), String> {
        // Create first so that `at` is known, then count: `at=1` traps in create.
        let result = Correct::create(table, config);
        count_call();
        result
    }

    fn info() -> Info {
        count_call();
        let mut info = Correct::info();
        if let Ok((mode, traits, sample_size)) =
            with_policy::<Hostile, _>(|h| (h.mode, h.traits, h.sample_size))
        {
            info.traits = traits;
            info.sample_size = sample_size;
            if mode == Mode::HugeName {
                info.name = huge_text();
                info.version = huge_text();
            }
        }
        info
    }

    fn observe(events: Vec<u64>) -> Result<(), String> {
        count_call();
        let most = MAX_OBSERVE.load(Ordering::Relaxed);
        if most > 0 && (events.len() / EVENT_WORDS) as u64 > most {
            trap();
        }
        Correct::observe(events)
    }

    fn victims(count: u32, input: Vec<u64>) -> Result<Vec<u64>, String> {
        count_call();
        // Pending events first, so the misbehaviour below acts on current state.
        let request = apply_victims_input::<Hostile>(&input)?;
        match with_policy::<Hostile, _>(|h| h.mode)? {
            Mode::Loop => spin(),
            Mode::Bomb => bomb(),
            Mode::Panic => panic!("hostile policy: panicking as configured (mode=panic)"),
            Mode::Error => Err("hostile policy: refusing to choose".into()),
            Mode::HugeError => Err(huge_text()),
            Mode::Empty => Ok(Vec::new()),
            Mode::Garbage => Ok((0..u64::from(count))
                .map(|i| NEVER_EXISTED - 1 - i)
                .collect()),
            Mode::HugeLog => {
                log(Level::Warn, &huge_text());
                choose_victims::<Hostile>(count, &request)
            }
            Mode::BadVictims => with_policy::<Hostile, _>(|h| {
                let mut out = vec![NEVER_EXISTED];
                for id in h.lru.ids() {
                    out.extend([id, id]);
                }
                out
            }),
            Mode::GhostFlood => {
                const N: u64 = 1_000_000;
                let mut out = choose_victims::<Hostile>(count, &request)?;
                let replace = CALLS.load(Ordering::Relaxed).is_multiple_of(2);
                out.push(GHOSTS);
                out.push(if replace { GHOSTS_REPLACED } else { 0 });
                out.extend(1..=N);
                Ok(out)
            }
            Mode::Mru => with_policy::<Hostile, _>(|h| {
                let ids: Vec<u64> = h.lru.ids().collect();
                ids.into_iter().rev().take(count as usize).collect()
            }),
            Mode::Repeat => {
                let once = choose_victims::<Hostile>(count.div_ceil(2), &request)?;
                Ok(once
                    .into_iter()
                    .flat_map(|id| [id, id])
                    .take(count as usize)
                    .collect())
            }
            Mode::Million => with_policy::<Hostile, _>(|h| {
                const N: usize = 1_000_000;
                let mut out: Vec<u64> = h.lru.ids().take(N).collect();
                let missing = N - out.len();
                out.extend((0..missing as u64).map(|i| NEVER_EXISTED - 1 - i));
                out
            }),
            Mode::Lru
            | Mode::CreateFail
            | Mode::TrapAt
            | Mode::TrapEvery
            | Mode::Quota
            | Mode::TrapMaintain
            | Mode::TrapQuotas
            | Mode::HugeName
            | Mode::HugeCreateError
            | Mode::CreateLoop => choose_victims::<Hostile>(count, &request),
        }
    }

    fn adjust_quotas(usage: Vec<u64>) -> Result<Vec<u64>, String> {
        count_call();
        match with_policy::<Hostile, _>(|h| h.mode)? {
            Mode::Quota => {}
            Mode::TrapQuotas => trap(),
            _ => return Correct::adjust_quotas(usage),
        }
        Ok(usage
            .chunks_exact(USAGE_WORDS)
            .flat_map(|u| [u[0], u[1].saturating_mul(1_000_000), 0])
            .collect())
    }

    fn maintain(now: u64) -> Result<(), String> {
        count_call();
        match with_policy::<Hostile, _>(|h| h.mode)? {
            Mode::TrapMaintain => trap(),
            Mode::HugeError => Err(huge_text()),
            _ => Correct::maintain(now),
        }
    }
}

fn spin() -> ! {
    // Atomic stores and `black_box` are side effects the optimiser must keep, so
    // this stays a real loop rather than being folded away.
    loop {
        SPIN.fetch_add(1, Ordering::Relaxed);
        black_box(&SPIN);
    }
}

fn bomb() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Writing one byte per page makes the memory real even if the allocator
        // knows fresh pages are zero.
        let mut chunk = vec![0u8; CHUNK];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(black_box(chunk));
    }
}

// Natively the exports have no caller, and their names break the linker's
// version script (see `export_policy!`).
#[cfg(target_arch = "wasm32")]
shadowcat_policy_sdk::bindings::export!(Export with_types_in shadowcat_policy_sdk::bindings);

#[cfg(test)]
mod tests;
