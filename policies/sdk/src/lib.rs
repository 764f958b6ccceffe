//! Guest-side SDK for Shadowcat eviction policies, interface `shadowcat:policy@0.3.0`.
//!
//! The WIT interface (`wit/0.3.0/policy.wit`) moves bulk data as packed `list<u64>`
//! because that is a memcpy across the component boundary. This crate owns the
//! bindings and the decoding of those packed layouts, so a policy is a plain Rust
//! type implementing [`Policy`] plus one [`export_policy!`] line:
//!
//! ```no_run
//! use shadowcat_policy_sdk::{Choice, Config, Needs, Policy, RemovalCause, Session, SlotList, Table};
//!
//! /// Evicts the newest session first.
//! struct Newest(SlotList<()>);
//!
//! impl Policy for Newest {
//!     const NAME: &'static str = "newest";
//!     const VERSION: &'static str = "0.1.0";
//!     const NEEDS: Needs = Needs::INSERTED.union(Needs::REMOVED);
//!
//!     fn create(_table: &Table, config: &Config) -> Result<Self, String> {
//!         config.check_keys(Self::NAME, &[])?;
//!         Ok(Newest(SlotList::new()))
//!     }
//!     fn on_insert(&mut self, session: &Session) {
//!         let _ = self.0.push_back(session.id, ());
//!     }
//!     fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
//!         self.0.remove(id);
//!     }
//!     fn victims(&mut self, count: usize, _choice: &Choice<'_>, out: &mut Vec<u64>) {
//!         out.extend(self.0.iter().rev().take(count).map(|(id, _)| id));
//!     }
//! }
//!
//! shadowcat_policy_sdk::export_policy!(Newest);
//! ```
//!
//! Everything the host sends is validated here: a packed list whose length is not a
//! multiple of its stride, an unknown event kind, removal cause or refusal reason,
//! a field wider than its type, or a call before `create` becomes an `Err(String)`
//! for the host, never a trap.
#![doc = include_str!("../FAILURES.md")]

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

pub mod alloc;
mod config;
mod layout;
mod panic_report;
mod slots;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use config::Config;
pub use layout::*;
pub use slots::{NO_SLOT, SlotList, SlotListIter, SlotMap, slot};

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::Reusing<std::alloc::System> = alloc::Reusing::new(std::alloc::System);

/// Generated bindings for `shadowcat:policy@0.3.0`, world `eviction-policy`.
///
/// Exposed so that unusual guests (test fixtures) can implement [`Guest`] by hand;
/// ordinary policies never need it.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.3.0",
        world: "eviction-policy",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "shadowcat_policy_sdk::bindings",
    });
}

pub use bindings::exports::shadowcat::policy::policy::Guest;
pub use bindings::shadowcat::policy::host::Level;
pub use bindings::shadowcat::policy::types::{Info, Needs, Traits};

/// The table a policy serves, as `create` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    /// Bound in sessions, or in bytes when `byte_mode` is set.
    pub capacity: u64,
    /// Event sizes are bytes (otherwise every session has size 1).
    pub byte_mode: bool,
    /// Microseconds without a request after which a session expires.
    pub idle_timeout: Option<u64>,
    /// Microseconds after its creation at which a session expires.
    pub max_age: Option<u64>,
}

impl Table {
    /// A table of `capacity` sessions without timeouts.
    pub const fn new(capacity: u64) -> Self {
        Self {
            capacity,
            byte_mode: false,
            idle_timeout: None,
            max_age: None,
        }
    }
}

impl From<bindings::shadowcat::policy::types::Table> for Table {
    fn from(t: bindings::shadowcat::policy::types::Table) -> Self {
        let nonzero = |us: u64| (us != 0).then_some(us);
        Self {
            capacity: t.capacity,
            byte_mode: t.byte_mode,
            idle_timeout: nonzero(t.idle_timeout),
            max_age: nonzero(t.max_age),
        }
    }
}

/// What a `victims` call offers to choose from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Choice<'a> {
    /// The session being created, for which room is made. It is admitted
    /// whatever the answer; a policy that would rather keep its residents (a
    /// W-TinyLFU window) proposes victims accordingly.
    pub arriving: Option<Arriving>,
    /// Host-sampled candidates (policies with [`Traits::SAMPLED`]); when not
    /// empty, choose among them.
    pub candidates: &'a [Candidate],
}

/// One eviction policy instance. The host creates exactly one per component
/// instance; after a trap it creates a fresh instance and replays live sessions.
pub trait Policy: Sized + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    /// Event kinds this policy wants; the host does not send the others.
    const NEEDS: Needs;
    /// [`Traits::STABLE_ORDER`] lets the host prefetch victims; only a policy
    /// that keeps all of its promises (see [`Policy::victims`]) may declare it.
    /// [`Traits::SAMPLED`] asks for host-sampled candidates in every `victims`
    /// call. The two exclude each other: an answer drawn from a fresh sample
    /// cannot stay the same between calls.
    const TRAITS: Traits = Traits::empty();
    /// Events the host buffers before calling `observe` (1 to 65536; see [`PREFETCH_BATCH_SIZE`]).
    const BATCH_SIZE: u32 = 256;
    /// Candidates per `victims` call with [`Traits::SAMPLED`] (1 to 1024);
    /// ignored otherwise.
    const SAMPLE_SIZE: u32 = 64;

    /// The error is shown to the operator as is, so name the key and say what
    /// to change.
    fn create(table: &Table, config: &Config) -> Result<Self, String>;

    fn on_insert(&mut self, _session: &Session) {}
    fn on_access(&mut self, _session: &Session) {}
    fn on_remove(&mut self, _id: u64, _time: u64, _cause: RemovalCause) {}
    /// A proposal the host did not evict (needs [`Needs::REFUSED`]). A pinned
    /// session is still live; a not-live id was stale or repeated.
    fn on_refused(&mut self, _id: u64, _time: u64, _reason: RefusalReason) {}

    /// Push up to `count` distinct ids onto `out` (which starts empty), best
    /// victim first. With candidates in `choice`, choose among them.
    ///
    /// It cannot fail: a policy that cannot choose (a state it does not
    /// expect, memory it cannot have) pushes fewer ids, or none, and the host
    /// fills the shortfall from its own LRU order for this decision only.
    /// That is the way to recover here; a panic is a trap (see the crate's
    /// failure notes).
    ///
    /// The policy may update its state while choosing: move a CLOCK hand, clear
    /// SIEVE's visited bits, demote or promote between queues. A proposal is not
    /// an eviction: only a `removed` event says a session is gone; the host may
    /// refuse a proposal (`refused` events, for policies that need them), and a
    /// refused session stays live. Any shortfall is filled by the host.
    ///
    /// With [`Traits::STABLE_ORDER`], the policy promises more, and the host
    /// relies on it to ask for several victims at once and hand them out one
    /// eviction at a time: `victims` changes no state; its answer depends only
    /// on the events seen (not on `choice`); and of an answer of k victims,
    /// the k - 1 after the first stay the policy's choice, in that order,
    /// until an event names one of them, whatever else arrives, is accessed or
    /// leaves (so a later call, after events naming none of them, answers
    /// them first, in that order, once the first victim is left aside). The
    /// first victim is only the choice for the eviction at hand: the host
    /// evicts it at once, and if it turns out not to need it, it drops the
    /// whole answer and asks again. LRU and FIFO keep this. `shadowcat policy
    /// check` tests the promise: it fails a policy whose victims differ when
    /// asked for one at a time (`--policy-prefetch 1`). A policy whose order an arrival could enter
    /// before the second victim answers fewer (LFU with nobody at count 1: the
    /// first alone), and the host asks again when it needs more.
    ///
    /// Ending the answer with [`ARRIVALS`] (counted in `count`) extends the
    /// promise to the sessions inserted after it: they follow the listed
    /// victims in the order they arrive, each until an event other than its
    /// insert names it. A policy whose order puts every new session behind
    /// the victims listed after the first and ahead of every other session it
    /// holds says so (LFU: with
    /// the whole count-1 group listed, or none at count 1, arrivals come
    /// next), and the host evicts them in turn without asking; the `removed`
    /// events say which. It needs [`Needs::INSERTED`]. Where the arrivals come
    /// next only until the policy has evicted every victim it chose ahead
    /// (SIEVE's hand, which wraps to the oldest sessions once it passes the
    /// newest), end it with [`ARRIVALS_WHILE_QUEUED`] instead: the host stops
    /// queueing arrivals once none of what it queued is left, and asks.
    ///
    /// [`Traits::GHOST_CONDITIONAL`] is the same promise, made for arrivals
    /// the policy does not remember only (2Q, whose next victim depends on
    /// whether the arriving key is in Aout), and for as long as nothing but
    /// the listed victims leaves and no event names one of them. The host
    /// knows what the policy remembers from [`Policy::ghost_changes`], called
    /// after each `victims`.
    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>);

    /// With [`Traits::GHOST_CONDITIONAL`]: each stable key that joined or left
    /// the policy's ghosts since the previous call, in order, as of the
    /// events applied (or all of its ghosts, with `replaced` set). The host
    /// hands out victims chosen ahead only to make room for a session whose
    /// key it does not find there, nor among the sessions it evicted since.
    fn ghost_changes(&mut self, _changes: &mut GhostChanges) {}

    /// Push quota proposals onto `out`; sessions not mentioned keep their quota.
    fn adjust_quotas(&mut self, _usage: &[Usage], _out: &mut Vec<QuotaAdjustment>) {}

    /// Periodic tick with the host clock (aging, sketch halving, adaptation); an
    /// `Err` costs only this tick.
    fn maintain(&mut self, _now: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Delivers one event to its [`Policy`] method; inlined: a call per event cost lru.wasm 7 %.
#[inline(always)]
pub fn deliver<P: Policy>(policy: &mut P, event: &Event) {
    match *event {
        Event::Inserted(ref s) => policy.on_insert(s),
        Event::Accessed(ref s) => policy.on_access(s),
        Event::Removed {
            id, time, cause, ..
        } => policy.on_remove(id, time, cause),
        Event::Refused {
            id, time, reason, ..
        } => policy.on_refused(id, time, reason),
    }
}

/// Sends a log line to the host, which rate-limits it (a burst of 20, then 10 a
/// second), cuts it to 1024 bytes and escapes its control characters.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::shadowcat::policy::host::log(level, message);
    // Natively (unit tests) there is no host to import from.
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?}: {message}");
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
        // out of dozens of candidates.
        ranked.select_nth_unstable(count);
        ranked.truncate(count);
    }
    ranked.sort_unstable();
    out.extend(ranked.into_iter().map(|r| r.1));
}

/// What changed in a `ghost-conditional` policy's ghosts (see
/// [`Policy::ghost_changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GhostChanges {
    /// Each key that joined or left, in order (a key that joined and left
    /// again, twice), or, if `replaced`, every ghost.
    pub keys: Vec<u64>,
    pub replaced: bool,
}

impl GhostChanges {
    pub fn clear(&mut self) {
        self.keys.clear();
        self.replaced = false;
    }

    /// Appends the ghost section of a `victims` answer: [`GHOSTS`], a word
    /// with [`GHOSTS_REPLACED`] or 0, the keys.
    pub fn encode(&self, out: &mut Vec<u64>) {
        out.push(GHOSTS);
        out.push(if self.replaced { GHOSTS_REPLACED } else { 0 });
        out.extend_from_slice(&self.keys);
    }
}

/// The policy plus scratch buffers reused across calls.
struct Instance<P> {
    policy: P,
    candidates: Vec<Candidate>,
    ghosts: GhostChanges,
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

/// Validates `events` (packed as in `observe`) and applies them in order; a
/// malformed list is rejected whole.
pub fn apply_events<P: Policy>(events: &[u64]) -> Result<(), String> {
    let events = decode_events(events)?;
    with_instance::<P, _>(|i| {
        for event in events.iter() {
            deliver(&mut i.policy, &event);
        }
    })
}

/// What remains of a `victims` input once its events are applied.
#[derive(Clone, Copy, Debug)]
pub struct VictimsRequest<'a> {
    pub arriving: Option<Arriving>,
    candidates: &'a [[u64; CANDIDATE_WORDS]],
}

impl VictimsRequest<'_> {
    pub fn candidates(&self) -> impl Iterator<Item = Candidate> + '_ {
        self.candidates.iter().map(|c| Candidate::decode(*c))
    }
}

/// Validates the whole packed input of `victims` (header, events, candidates),
/// then applies its events. A malformed input applies nothing.
pub fn apply_victims_input<P: Policy>(input: &[u64]) -> Result<VictimsRequest<'_>, String> {
    let input = decode_victims_input(input)?;
    with_instance::<P, _>(|i| {
        for event in input.events.iter() {
            deliver(&mut i.policy, &event);
        }
    })?;
    Ok(VictimsRequest {
        arriving: input.arriving,
        candidates: input.candidates,
    })
}

/// Asks the policy for at most `count` victims.
pub fn choose_victims<P: Policy>(
    count: u32,
    request: &VictimsRequest<'_>,
) -> Result<Vec<u64>, String> {
    let count = count as usize;
    with_instance::<P, _>(|i| {
        decode_candidates(request.candidates, &mut i.candidates);
        let choice = Choice {
            arriving: request.arriving,
            candidates: &i.candidates,
        };
        let mut out = Vec::with_capacity(count.min(1024));
        i.policy.victims(count, &choice, &mut out);
        // The contract says at most `count`; enforce it here rather than
        // trusting every policy.
        out.truncate(count);
        if P::TRAITS.contains(Traits::GHOST_CONDITIONAL) {
            i.ghosts.clear();
            i.policy.ghost_changes(&mut i.ghosts);
            i.ghosts.encode(&mut out);
        }
        out
    })
}

/// Implements the WIT exports for any [`Policy`]; [`export_policy!`] wires it up.
pub struct Adapter<P>(PhantomData<P>);

impl<P: Policy> Adapter<P> {
    /// Evaluated by [`export_policy!`], so a bad constant is a build error
    /// rather than an instance the host rejects at load time.
    #[doc(hidden)]
    pub const CHECKED: () = {
        assert!(
            P::BATCH_SIZE >= 1 && P::BATCH_SIZE <= 65536,
            "Policy::BATCH_SIZE must be 1 to 65536"
        );
        assert!(
            P::SAMPLE_SIZE >= 1 && P::SAMPLE_SIZE <= 1024,
            "Policy::SAMPLE_SIZE must be 1 to 1024"
        );
        assert!(
            !(P::TRAITS.contains(Traits::STABLE_ORDER) && P::TRAITS.contains(Traits::SAMPLED)),
            "Policy::TRAITS: a sampled policy's answer depends on the sample, so it cannot promise a stable order"
        );
        assert!(
            !(P::TRAITS.contains(Traits::GHOST_CONDITIONAL) && P::TRAITS.contains(Traits::SAMPLED)),
            "Policy::TRAITS: a sampled policy's answer depends on the sample, so it cannot promise an order"
        );
    };
}

impl<P: Policy> Guest for Adapter<P> {
    fn create(
        table: bindings::shadowcat::policy::types::Table,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        // Before any policy code runs, so that a panic in `create` is told too.
        #[cfg(target_arch = "wasm32")]
        panic_report::install();
        let policy = P::create(&Table::from(table), &Config::new(config))?;
        // A second `create` replaces the instance rather than failing: the WIT
        // promises one call, and starting over is the least surprising reading.
        INSTANCE.with(|slot| {
            *slot.borrow_mut() = Some(Box::new(Instance {
                policy,
                candidates: Vec::new(),
                ghosts: GhostChanges::default(),
            }))
        });
        Ok(())
    }

    fn info() -> Info {
        let () = Self::CHECKED;
        Info {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            needs: P::NEEDS,
            traits: P::TRAITS,
            batch_size: P::BATCH_SIZE,
            sample_size: P::SAMPLE_SIZE,
        }
    }

    fn observe(events: Vec<u64>) -> Result<(), String> {
        apply_events::<P>(&events)
    }

    fn victims(count: u32, input: Vec<u64>) -> Result<Vec<u64>, String> {
        let request = apply_victims_input::<P>(&input)?;
        choose_victims::<P>(count, &request)
    }

    fn adjust_quotas(usage: Vec<u64>) -> Result<Vec<u64>, String> {
        let usage = decode_usage(&usage)?;
        with_instance::<P, _>(|i| {
            let mut adjustments = Vec::new();
            i.policy.adjust_quotas(&usage, &mut adjustments);
            encode_adjustments(&adjustments)
        })
    }

    fn maintain(now: u64) -> Result<(), String> {
        with_instance::<P, _>(|i| i.policy.maintain(now))?
    }
}

/// Exports a [`Policy`] type as the component's `shadowcat:policy/policy`
/// interface.
///
/// Only on wasm32: natively (unit tests, `cargo build` of the workspace) the
/// export symbols have no caller, and their names, which contain `:`, break
/// the native linker's version script. The policy's constants are checked on
/// every target.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = $crate::Adapter::<$policy>::CHECKED;
        #[cfg(target_arch = "wasm32")]
        type __ShadowcatPolicyExport = $crate::Adapter<$policy>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__ShadowcatPolicyExport with_types_in $crate::bindings);
    };
}

/// A [`Policy::BATCH_SIZE`] for a policy the host asks far ahead
/// ([`Traits::STABLE_ORDER`]): the events between two of its calls at the
/// host's deepest prefetch (128 evictions, with their arrivals, removals and
/// the requests between) ride on the next `victims` call instead of an
/// `observe` call of their own. Measured per request: fifo.wasm and
/// lru.wasm about 55 instructions fewer with the deeper prefetch it came
/// with, sieve.wasm and ttl.wasm 14 fewer than at 256.
pub const PREFETCH_BATCH_SIZE: u32 = 1024;
