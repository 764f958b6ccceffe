//! Guest-side SDK for Shadowcat eviction policies.
//!
//! The WIT interface (`wit/0.1.0/policy.wit`) moves bulk data as packed `list<u64>`
//! because that is a memcpy across the component boundary. This crate owns the
//! bindings and the decoding of those packed layouts, so a policy is a plain Rust
//! type implementing [`Policy`] plus one [`export_policy!`] line:
//!
//! ```ignore
//! use shadowcat_policy_sdk::{Candidate, Config, Needs, Policy};
//!
//! struct Newest(Vec<u64>);
//!
//! impl Policy for Newest {
//!     const NAME: &'static str = "newest";
//!     const VERSION: &'static str = "0.1.0";
//!     const NEEDS: Needs = Needs::INSERTED.union(Needs::REMOVED);
//!
//!     fn create(_capacity: u64, config: &Config) -> Result<Self, String> {
//!         config.check_keys(Self::NAME, &[])?;
//!         Ok(Newest(Vec::new()))
//!     }
//!     fn on_insert(&mut self, id: u64, _time: u64, _size: u32) {
//!         self.0.push(id);
//!     }
//!     fn on_remove(&mut self, id: u64, _time: u64, _cause: shadowcat_policy_sdk::RemovalCause) {
//!         self.0.retain(|&x| x != id);
//!     }
//!     fn victims(&mut self, count: usize, _candidates: &[Candidate], out: &mut Vec<u64>) {
//!         out.extend(self.0.iter().rev().take(count));
//!     }
//! }
//!
//! shadowcat_policy_sdk::export_policy!(Newest);
//! ```
//!
//! Everything the host sends is validated here: a packed list whose length is not a
//! multiple of its stride, an unknown event kind or removal cause, or a call before
//! `create` becomes an `Err(String)` for the host, never a trap.
#![doc = include_str!("../FAILURES.md")]

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::str::FromStr;

/// Generated bindings for `shadowcat:policy@0.1.0`, world `eviction-policy`.
///
/// Exposed so that unusual guests (test fixtures) can implement [`Guest`] by hand;
/// ordinary policies never need it.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.1.0",
        world: "eviction-policy",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "shadowcat_policy_sdk::bindings",
    });
}

pub use bindings::exports::shadowcat::policy::policy::Guest;
pub use bindings::shadowcat::policy::host::Level;
pub use bindings::shadowcat::policy::types::{Info, Needs};

/// Stride of one event in `observe`: kind word, session id, time.
pub const EVENT_WORDS: usize = 3;
/// Stride of one candidate in `victims`: id, last access, accesses.
pub const CANDIDATE_WORDS: usize = 3;
/// Stride of one usage record in `adjust-quotas`: id, admitted, rejected, window.
pub const USAGE_WORDS: usize = 4;
/// Stride of one quota adjustment returned by `adjust-quotas`: id, rate, burst.
pub const ADJUSTMENT_WORDS: usize = 3;

/// Why the host removed a session (bits 8..16 of a `removed` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    ExpiredIdle,
    ExpiredAge,
    Evicted,
    Closed,
    Deleted,
}

impl RemovalCause {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::ExpiredIdle,
            1 => Self::ExpiredAge,
            2 => Self::Evicted,
            3 => Self::Closed,
            4 => Self::Deleted,
            _ => return None,
        })
    }
}

/// A host-sampled session offered as a possible victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    /// Host clock, microseconds.
    pub last_access: u64,
    /// Requests the host has seen for this session so far.
    pub accesses: u64,
}

/// Per-session request usage over the host's last limiter window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub id: u64,
    pub admitted: u64,
    pub rejected: u64,
    pub window_ms: u64,
}

/// A proposed quota; the host clamps it to its configured bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaAdjustment {
    pub id: u64,
    /// Requests per second.
    pub rate: u64,
    pub burst: u64,
}

/// One eviction policy instance. The host creates exactly one per component
/// instance; after a trap it creates a fresh instance and replays live sessions.
pub trait Policy: Sized + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    /// Event kinds this policy wants; the host does not send the others.
    const NEEDS: Needs;
    /// Events the host buffers before calling `observe` (1 to 65536).
    const BATCH_SIZE: u32 = 256;

    /// `capacity` is in sessions, or in bytes when the host runs in byte mode.
    /// The error is shown to the operator as is, so say what to change.
    fn create(capacity: u64, config: &Config) -> Result<Self, String>;

    fn on_insert(&mut self, _id: u64, _time: u64, _size: u32) {}
    fn on_access(&mut self, _id: u64, _time: u64, _size: u32) {}
    fn on_remove(&mut self, _id: u64, _time: u64, _cause: RemovalCause) {}

    /// Push up to `count` distinct ids onto `out` (which starts empty), best
    /// victim first. When `candidates` is non-empty, choose among them only.
    ///
    /// Proposed victims stay in the policy's state: the host may refuse one (it is
    /// pinned by a request in flight), and only a `removed` event means it is gone.
    /// So this must not change the ranking, and two calls without events in
    /// between must give the same answer. `&mut self` is for scratch space only.
    fn victims(&mut self, count: usize, candidates: &[Candidate], out: &mut Vec<u64>);

    /// Push quota proposals onto `out`; sessions not mentioned keep their quota.
    fn adjust_quotas(&mut self, _usage: &[Usage], _out: &mut Vec<QuotaAdjustment>) {}

    /// Periodic tick with the host clock (aging, sketch halving, adaptation); an `Err` costs only this tick.
    fn maintain(&mut self, _now: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Sends a log line to the host, which rate-limits it (a burst of 20, then 10 a second), cuts it to 1024 bytes and escapes its control characters.
pub fn log(level: Level, message: &str) {
    bindings::shadowcat::policy::host::log(level, message);
}

/// Operator-supplied `key=value` settings, with typed getters whose errors read
/// well in an operator's terminal.
#[derive(Clone, Debug, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The value for `key`; when a key is repeated the last one wins, as with
    /// command-line flags.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, String> {
        self.parse_or(key, default, "a non-negative integer")
    }

    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32, String> {
        self.parse_or(key, default, "an integer from 0 to 4294967295")
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        let value: f64 = self.parse_or(key, default, "a number")?;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(format!(
                "policy config `{key}`: expected a finite number, got `{value}`"
            ))
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some("true" | "yes" | "on" | "1") => Ok(true),
            Some("false" | "no" | "off" | "0") => Ok(false),
            Some(other) => Err(format!(
                "policy config `{key}`: expected true or false, got `{other}`"
            )),
        }
    }

    fn parse_or<T: FromStr>(&self, key: &str, default: T, expected: &str) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| format!("policy config `{key}`: expected {expected}, got `{raw}`")),
        }
    }

    /// Rejects keys outside `accepted`, so that a typo is an error at load time
    /// rather than a silently ignored setting.
    pub fn check_keys(&self, policy: &str, accepted: &[&str]) -> Result<(), String> {
        match self
            .entries
            .iter()
            .find(|(k, _)| !accepted.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((key, _)) => Err(format!(
                "{policy} policy: unknown config key `{key}`; accepted keys: {}",
                list_or_none(accepted)
            )),
        }
    }
}

fn list_or_none(keys: &[&str]) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Pushes onto `out` the (at most) `count` candidates with the lowest `key`, lowest
/// first. Repeated candidate ids count once; ties fall back to the id so the answer
/// is deterministic.
pub fn pick_lowest<K: Ord>(
    count: usize,
    candidates: &[Candidate],
    mut key: impl FnMut(&Candidate) -> K,
    out: &mut Vec<u64>,
) {
    if count == 0 || candidates.is_empty() {
        return;
    }
    let mut ranked: Vec<(K, u64)> = candidates.iter().map(|c| (key(c), c.id)).collect();
    if ranked.len() > 1 {
        ranked.sort_unstable_by_key(|r| r.1);
        ranked.dedup_by_key(|r| r.1);
    }
    if count < ranked.len() {
        // Only the best `count` need ordering; the host usually asks for a few
        // out of hundreds of candidates.
        ranked.select_nth_unstable(count);
        ranked.truncate(count);
    }
    ranked.sort_unstable();
    out.extend(ranked.into_iter().map(|r| r.1));
}

/// A decoded `observe` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Inserted {
        id: u64,
        time: u64,
        size: u32,
    },
    Accessed {
        id: u64,
        time: u64,
        size: u32,
    },
    Removed {
        id: u64,
        time: u64,
        cause: RemovalCause,
    },
}

impl Event {
    /// Decodes one three-word event. Bits 16..32 of word 0 are reserved and
    /// ignored, as is the cause byte of non-removal events.
    pub fn decode(words: [u64; EVENT_WORDS]) -> Result<Self, String> {
        let [head, id, time] = words;
        let kind = head as u8;
        let cause = (head >> 8) as u8;
        let size = (head >> 32) as u32;
        Ok(match kind {
            0 => Event::Inserted { id, time, size },
            1 => Event::Accessed { id, time, size },
            2 => Event::Removed {
                id,
                time,
                cause: RemovalCause::from_code(cause)
                    .ok_or_else(|| format!("unknown removal cause {cause}"))?,
            },
            _ => return Err(format!("unknown event kind {kind}")),
        })
    }
}

fn chunks<'a, const N: usize>(what: &str, words: &'a [u64]) -> Result<&'a [[u64; N]], String> {
    match words.as_chunks::<N>() {
        (whole, []) => Ok(whole),
        _ => Err(format!(
            "{what}: {} words is not a multiple of {N} words per entry",
            words.len()
        )),
    }
}

/// Decodes a packed event list, rejecting it whole if any entry is malformed, so
/// the policy never applies half a batch.
pub fn decode_events(words: &[u64]) -> Result<impl Iterator<Item = Event> + '_, String> {
    let events = chunks::<EVENT_WORDS>("observe", words)?;
    for (i, e) in events.iter().enumerate() {
        Event::decode(*e).map_err(|m| format!("observe: event {i}: {m}"))?;
    }
    // Already validated, so the fallback is unreachable; it avoids a panic path.
    Ok(events.iter().filter_map(|e| Event::decode(*e).ok()))
}

pub fn decode_candidates(words: &[u64], out: &mut Vec<Candidate>) -> Result<(), String> {
    let entries = chunks::<CANDIDATE_WORDS>("victims candidates", words)?;
    out.clear();
    out.extend(
        entries
            .iter()
            .map(|&[id, last_access, accesses]| Candidate {
                id,
                last_access,
                accesses,
            }),
    );
    Ok(())
}

pub fn decode_usage(words: &[u64]) -> Result<Vec<Usage>, String> {
    let entries = chunks::<USAGE_WORDS>("adjust-quotas usage", words)?;
    Ok(entries
        .iter()
        .map(|&[id, admitted, rejected, window_ms]| Usage {
            id,
            admitted,
            rejected,
            window_ms,
        })
        .collect())
}

/// The policy plus scratch buffers reused across calls.
struct Instance<P> {
    policy: P,
    candidates: Vec<Candidate>,
}

thread_local! {
    // wasm32 guests are single threaded and the host never re-enters an instance,
    // so a RefCell is enough. Type-erased because statics cannot be generic; the
    // downcast is a type-id comparison per call.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

const NOT_CREATED: &str = "policy called before `create` succeeded";

fn with_instance<P: Policy, R>(f: impl FnOnce(&mut Instance<P>) -> R) -> Result<R, String> {
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        match slot.as_mut().and_then(|b| b.downcast_mut::<Instance<P>>()) {
            Some(instance) => Ok(f(instance)),
            None => Err(NOT_CREATED.to_owned()),
        }
    })
}

/// Runs `f` on the live policy instance, or fails if `create` has not succeeded.
/// For guests that implement [`Guest`] by hand around an [`Adapter`].
pub fn with_policy<P: Policy, R>(f: impl FnOnce(&mut P) -> R) -> Result<R, String> {
    with_instance::<P, R>(|i| f(&mut i.policy))
}

/// Validates `events` (packed as in `observe`) and applies them in order.
pub fn apply_events<P: Policy>(events: &[u64]) -> Result<(), String> {
    let events = decode_events(events)?;
    with_instance::<P, _>(|i| {
        for event in events {
            match event {
                Event::Inserted { id, time, size } => i.policy.on_insert(id, time, size),
                Event::Accessed { id, time, size } => i.policy.on_access(id, time, size),
                Event::Removed { id, time, cause } => i.policy.on_remove(id, time, cause),
            }
        }
    })
}

/// Splits the packed input of `victims` (event count, events, candidates),
/// applies the events and returns the candidate words.
pub fn apply_victims_input<P: Policy>(input: &[u64]) -> Result<&[u64], String> {
    let Some((&count, rest)) = input.split_first() else {
        return Err("victims: empty input (word 0 must be the event count)".to_owned());
    };
    let words = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(EVENT_WORDS))
        .filter(|&w| w <= rest.len())
        .ok_or_else(|| {
            format!(
                "victims: input announces {count} events but holds only {} words after the count",
                rest.len()
            )
        })?;
    let (events, candidates) = rest.split_at(words);
    apply_events::<P>(events)?;
    Ok(candidates)
}

/// Implements the WIT exports for any [`Policy`]; [`export_policy!`] wires it up.
pub struct Adapter<P>(PhantomData<P>);

impl<P: Policy> Guest for Adapter<P> {
    fn create(capacity: u64, config: Vec<(String, String)>) -> Result<(), String> {
        let policy = P::create(capacity, &Config::new(config))?;
        // A second `create` replaces the instance rather than failing: the WIT
        // promises one call, and starting over is the least surprising reading.
        INSTANCE.with(|slot| {
            *slot.borrow_mut() = Some(Box::new(Instance {
                policy,
                candidates: Vec::new(),
            }))
        });
        Ok(())
    }

    fn info() -> Info {
        Info {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            needs: P::NEEDS,
            batch_size: P::BATCH_SIZE,
        }
    }

    fn observe(events: Vec<u64>) -> Result<(), String> {
        apply_events::<P>(&events)
    }

    fn victims(count: u32, input: Vec<u64>) -> Result<Vec<u64>, String> {
        let count = count as usize;
        let candidates = apply_victims_input::<P>(&input)?;
        with_instance::<P, _>(|i| {
            decode_candidates(candidates, &mut i.candidates)?;
            let mut out = Vec::with_capacity(count.min(1024));
            i.policy.victims(count, &i.candidates, &mut out);
            // The contract says at most `count`; enforce it here rather than
            // trusting every policy.
            out.truncate(count);
            Ok(out)
        })?
    }

    fn adjust_quotas(usage: Vec<u64>) -> Result<Vec<u64>, String> {
        let usage = decode_usage(&usage)?;
        with_instance::<P, _>(|i| {
            let mut adjustments = Vec::new();
            i.policy.adjust_quotas(&usage, &mut adjustments);
            let mut out = Vec::with_capacity(adjustments.len() * ADJUSTMENT_WORDS);
            for a in adjustments {
                out.extend([a.id, a.rate, a.burst]);
            }
            out
        })
    }

    fn maintain(now: u64) -> Result<(), String> {
        with_instance::<P, _>(|i| i.policy.maintain(now))?
    }
}

/// Exports a [`Policy`] type as the component's `shadowcat:policy/policy` interface.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        type __ShadowcatPolicyExport = $crate::Adapter<$policy>;
        $crate::bindings::export!(__ShadowcatPolicyExport with_types_in $crate::bindings);
    };
}
