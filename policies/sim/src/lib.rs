//! What the simulator-defined policies (ARC, S3-FIFO, SIEVE, 2Q, CLOCK,
//! Redis's LFU, soonest-to-expire) share: the session table's protocol around a
//! policy that evicts on its own, and ghost lists of stable keys.
//!
//! A cache simulator evicts when *it* decides to, from its own structures,
//! recording ghosts as it goes. The table instead asks for victims before it
//! inserts an arriving session (with that session's stable key), and evicts only
//! what it accepts. A policy is written here the simulator's way, as a
//! [`Simulated`], and [`OnTable`] runs it under the table's protocol, exactly as
//! the reference models are run in `tests/reference/mod.rs` (its `Reference`
//! adapter), so that a guest decides victim for victim like its model:
//!
//! - `victims` runs the arrival's prologue once per arrival (ghost lookups and
//!   the adaptation they drive), then eviction steps of the policy. What a step
//!   evicts leaves the policy's structures at once, its ghost recorded as the
//!   simulator records it, and is *detached*: the table still holds it until it
//!   is removed. Detached sessions are proposed oldest eviction first, before
//!   any further step (a step can evict more than one session).
//! - `inserted` runs the prologue (unless `victims` ran it for the same key
//!   since the last request) and admits the session.
//! - A request for a detached session is the re-arrival it would have been in
//!   the simulator, which had no room for it: prologue and admission again.
//!
//! Two rules cover what a simulator never meets; `tests/library/twin.rs` wraps
//! the unchanged reference models in the same two:
//!
//! - A proposal stays the policy's choice until an event names it (a removal,
//!   or a request that re-admits it), so one the host did not need (room was
//!   made by the others, in byte mode) is proposed again first next time
//!   rather than forgotten.
//! - A proposal refused because it is pinned is held back while the table
//!   evicts others: one eviction after its first refusal, two after its
//!   second, doubling up to 256. The host's re-ask after a refusal thus gets
//!   the policy's next choice instead of the same pinned session, the next
//!   decision offers it first again, and one pinned for long (an open stream)
//!   costs a refusal ever more rarely rather than one per decision. A proposal
//!   refused as not live had its removal missed and is forgotten.
//!
//! A policy whose next evictions no arrival can change (SIEVE's hand, CLOCK's
//! queue, the soonest to expire under one bound) declares `stable-order` and
//! plans ([`Simulated::plan`]): `victims` takes the eviction step for the
//! first victim only and lists the sessions the next steps would evict
//! without taking them, so the host can hand them out one eviction at a time
//! with no call. Each planned step is taken when the table evicts (or refuses
//! as pinned) the session it names: the policy's state then moves exactly as
//! if `victims` had been called at that moment. The table drops what it
//! queued when it refuses a proposal, and an answer never reaches past the
//! eviction at which a refused proposal is due again, so the two rules above
//! still decide what comes next. A session the table evicts by its own choice
//! is a planned step only if it is the policy's next victim anyway; otherwise
//! it is forgotten.
//!
//! A policy whose next evictions only an arrival it remembers can change (2Q:
//! an arriving key in Aout enters Am and shifts the next victims; S3-FIFO:
//! one in its ghost enters main, which may make main evict first) declares
//! `ghost-conditional` instead and plans the same way, for arrivals that are
//! not ghosts, telling the host its ghosts ([`Simulated::ghost_changes`]).
//! The host asks again whenever an arrival may be a ghost, a session leaves
//! unasked, or an event names a planned victim. A planned step is taken
//! when the table evicts its victim, before the arrival it made room for is
//! admitted, where `victims` would have looked the arrival up first: the
//! same unless that arrival's key is the victim's own (a client whose live
//! session is evicted to make room for its next), which 2Q then finds in
//! Aout.
//!
//! Per event O(1) here (a slot-indexed lookup) on top of the policy's own cost.

use std::collections::VecDeque;

use shadowcat_policy_sdk::{
    Choice, Config, GhostChanges, Needs, PREFETCH_BATCH_SIZE, Policy, RefusalReason, RemovalCause,
    Session, SlotMap, Table, Traits, is_arrivals,
};

mod ghost;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use ghost::GhostList;

/// Sessions a [`Simulated::plan`] looks at, at most: past a long run of
/// sessions that are not victims (visited, or with a counter above 0) the
/// list stops short rather than make the call that answers it slow.
pub const PLAN_WALK: usize = 64;

/// The key of a session whose client the host cannot identify. It never
/// enters a ghost list: two anonymous sessions are not the same client.
pub const NO_KEY: u64 = 0;

/// A policy as its simulator defines it: it evicts by itself, from its own
/// structures, one eviction step at a time (mirroring `tests/reference`'s
/// `Policy` trait, so a guest reads like its model).
///
/// Every method that can evict appends the evicted session ids to `evicted`;
/// those sessions must be gone from the policy's structures.
pub trait Simulated: Sized + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    const TRAITS: Traits = Traits::empty();
    const SAMPLE_SIZE: u32 = 64;

    /// The error names the config key, for the operator.
    fn create(table: &Table, config: &Config) -> Result<Self, String>;

    /// The miss prologue, before any eviction for this arrival: ghost lookups
    /// and the adaptation they drive. Called once per arrival, with [`NO_KEY`]
    /// when no session is arriving.
    fn arrive(&mut self, _key: u64) {}

    /// The miss epilogue: the session enters the policy.
    fn admit(&mut self, id: u64, key: u64, time: u64, evicted: &mut Vec<u64>);

    /// A request for a session; one the policy does not hold (an unknown or
    /// stale id) is ignored, with no effect on the policy's state.
    fn hit(&mut self, id: u64, time: u64, evicted: &mut Vec<u64>);

    /// One eviction step for a full cache: at least one session unless the
    /// policy holds none (or, with `candidates`, none of them).
    fn evict(&mut self, candidates: &[u64], evicted: &mut Vec<u64>);

    /// The table removed a session the policy still holds (it expired, was
    /// closed, or the table chose it): no ghost, since the policy did not
    /// choose it.
    fn forget(&mut self, id: u64);

    fn maintain(&mut self, _now: u64) {}

    /// For a policy declaring [`Traits::STABLE_ORDER`]: up to `count` of the
    /// sessions its next eviction steps would evict, in order, without taking
    /// those steps. A session must be listed only if every event that could
    /// come first either leaves it the next step's victim or names it: a
    /// request for it (the table then skips it), its removal, its refusal.
    /// The list stops where an arrival or anything else could go ahead, or
    /// after [`PLAN_WALK`] sessions looked at: a short list is fine. Only a policy whose eviction steps do not depend
    /// on the arriving session (no [`Simulated::arrive`]) can plan: a planned
    /// step is taken when the table evicts the session, before the arrival
    /// is known. Where the arrivals come next, in the order they arrive, each
    /// leaving that order only when an event names it, the list may end in
    /// [`shadowcat_policy_sdk::ARRIVALS`] or its `WHILE_QUEUED` form (counted
    /// in `count`); such a policy also overrides [`Simulated::next_victim`].
    fn plan(&self, _count: usize, _out: &mut Vec<u64>) {}

    /// The next eviction step's victim if [`Simulated::plan`] would list it
    /// first, appended to `out`. A policy whose plan can end in arrivals
    /// looks past [`PLAN_WALK`] sessions here: an arrival the table evicts as
    /// promised must be known as the planned step however many requested
    /// sessions lie before it (the step then walks as far).
    fn next_victim(&self, out: &mut Vec<u64>) {
        self.plan(1, out);
        if out.last().is_some_and(|&id| is_arrivals(id)) {
            out.pop();
        }
    }

    /// For a policy declaring [`Traits::GHOST_CONDITIONAL`], whose eviction
    /// steps depend on whether the arrival is a ghost: the changes to its
    /// ghosts since the last call (see [`GhostList::drain_changes`]). Its
    /// [`Simulated::plan`] is then asked only while an arrival is being made
    /// room for, and lists the steps that follow once that arrival is
    /// admitted, each taken for an arrival that is not a ghost; its
    /// [`Simulated::next_victim`] is the next step's victim as things stand.
    fn ghost_changes(&mut self, _changes: &mut GhostChanges) {}
}

/// Where a session the table holds stands with the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the policy's structures.
    Held,
    /// Evicted by the policy, not yet proposed.
    Pending,
    /// Proposed, and no event has named it since (see [`Offer`]).
    Offered,
}

/// A proposal the table has not acted on.
#[derive(Clone, Copy, Debug)]
struct Offer {
    id: u64,
    /// Times refused as pinned.
    refusals: u32,
    /// Evictions to wait before it is proposed again (0: proposed now).
    wait: u32,
}

/// Longest wait, in evictions, of a proposal refused again and again.
const MAX_WAIT: u32 = 256;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u64,
    state: State,
}

/// A [`Simulated`] policy under the table's protocol (see the crate docs).
pub struct OnTable<S> {
    policy: S,
    /// Every session the table holds, as its `inserted` event named it.
    sessions: SlotMap<Entry>,
    /// Detached, not yet proposed, oldest eviction first.
    pending: VecDeque<u64>,
    /// Proposed and still live, in the order first proposed; a handful at
    /// most, since the host takes them.
    offered: Vec<Offer>,
    /// Offers waiting out a refusal.
    waiting: usize,
    /// The arrival whose prologue `victims` already ran.
    prepared: Option<u64>,
    evicted: Vec<u64>,
    candidates: Vec<u64>,
    /// The next planned victim, looked up when the table evicts or refuses
    /// a session the policy still holds.
    next: Vec<u64>,
}

impl<S: Simulated> OnTable<S> {
    pub fn new(policy: S) -> Self {
        Self {
            policy,
            sessions: SlotMap::new(),
            pending: VecDeque::new(),
            offered: Vec::new(),
            waiting: 0,
            prepared: None,
            evicted: Vec::new(),
            candidates: Vec::new(),
            next: Vec::new(),
        }
    }

    /// Whether victims after the first come from [`Simulated::plan`].
    const PLANS: bool =
        S::TRAITS.contains(Traits::STABLE_ORDER) || S::TRAITS.contains(Traits::GHOST_CONDITIONAL);
    /// Whether they hold only for arrivals that are not ghosts.
    const CONDITIONAL: bool = S::TRAITS.contains(Traits::GHOST_CONDITIONAL);

    pub fn policy(&self) -> &S {
        &self.policy
    }

    /// Sessions the policy evicted that the table still holds.
    pub fn detached(&self) -> usize {
        self.pending.len() + self.offered.len()
    }

    /// Detaches what the last policy call evicted.
    fn detach(&mut self) {
        for &id in &self.evicted {
            if let Some(entry) = self.sessions.get_mut(id)
                && entry.state == State::Held
            {
                entry.state = State::Pending;
                self.pending.push_back(id);
            }
        }
        self.evicted.clear();
    }

    /// Takes a detached session out of the lists that hold it.
    fn unlist(&mut self, id: u64, state: State) {
        match state {
            State::Held => {}
            State::Pending => {
                if let Some(i) = self.pending.iter().position(|&p| p == id) {
                    self.pending.remove(i);
                }
            }
            State::Offered => {
                if let Some(i) = self.offered.iter().position(|o| o.id == id)
                    && self.offered.remove(i).wait > 0
                {
                    self.waiting -= 1;
                }
            }
        }
    }

    /// Whether `id`, which the table evicted or refused, is the policy's next
    /// planned victim (so the policy's next eviction step is due now).
    // Inlined, as is the planned eviction below: nearly every eviction of a
    // planning policy is one (sieve.wasm 28 instructions per request fewer).
    #[inline(always)]
    fn is_planned_next(&mut self, id: u64) -> bool {
        if !Self::PLANS || self.sessions.get(id).map(|e| e.state) != Some(State::Held) {
            return false;
        }
        self.next.clear();
        self.policy.next_victim(&mut self.next);
        self.next.first() == Some(&id)
    }

    /// The table refused `id`, which the policy still holds: if it is the
    /// policy's next planned victim, this is the planned eviction step, taken
    /// now; `id` is then detached and proposed, as a `victims` call would have
    /// left it. Otherwise (the host's own choice) nothing.
    fn take_planned_step(&mut self, id: u64) {
        if !self.is_planned_next(id) {
            return;
        }
        self.policy.evict(&[], &mut self.evicted);
        self.detach();
        if let Some(entry) = self.sessions.get_mut(id)
            && entry.state == State::Pending
        {
            entry.state = State::Offered;
            self.unlist(id, State::Pending);
            self.offered.push(Offer {
                id,
                refusals: 0,
                wait: 0,
            });
        }
    }

    /// The table evicted `id`. If it was the policy's next planned victim,
    /// the planned step is taken now and `id` leaves with it, as if proposed
    /// and then removed (without the round through the proposal lists, on
    /// nearly every eviction of a planning policy); returns whether it was.
    #[inline(always)]
    fn take_planned_eviction(&mut self, id: u64) -> bool {
        if !self.is_planned_next(id) {
            return false;
        }
        self.policy.evict(&[], &mut self.evicted);
        let stepped = self.evicted.contains(&id);
        if stepped {
            self.sessions.remove(id);
        }
        // Anything else the step evicted waits to be proposed.
        self.detach();
        stepped
    }

    /// A request while the policy has detached sessions: one of them
    /// requested is the re-arrival it would have been in the simulator.
    #[inline(never)]
    fn access_detached(&mut self, session: &Session) {
        let Some(entry) = self.sessions.get_mut(session.id) else {
            return;
        };
        let Entry { key, state } = *entry;
        entry.state = State::Held;
        if state == State::Held {
            self.policy.hit(session.id, session.time, &mut self.evicted);
        } else {
            self.unlist(session.id, state);
            self.policy.arrive(key);
            self.policy
                .admit(session.id, key, session.time, &mut self.evicted);
        }
        self.detach();
    }

    /// The table no longer holds `id`.
    fn gone(&mut self, id: u64) {
        if let Some(entry) = self.sessions.remove(id) {
            match entry.state {
                State::Held => self.policy.forget(id),
                state => self.unlist(id, state),
            }
        }
    }
}

impl<S: Simulated> Policy for OnTable<S> {
    const NAME: &'static str = S::NAME;
    const VERSION: &'static str = S::VERSION;
    const NEEDS: Needs = Needs::INSERTED
        .union(Needs::ACCESSED)
        .union(Needs::REMOVED)
        .union(Needs::REFUSED);
    const TRAITS: Traits = S::TRAITS;
    const SAMPLE_SIZE: u32 = S::SAMPLE_SIZE;
    const BATCH_SIZE: u32 = PREFETCH_BATCH_SIZE;

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        S::create(table, config).map(Self::new)
    }

    // The three event handlers are inlined into the SDK's event loop: in
    // the sandbox a call's entry and exit cost as much as a request's work
    // (42 to 102 instructions per request fewer, sieve.wasm to lfu-decay.wasm).
    #[inline(always)]
    fn on_insert(&mut self, session: &Session) {
        let entry = Entry {
            key: session.key,
            state: State::Held,
        };
        match self.sessions.get(session.id) {
            // A repeated insert carries nothing new.
            Some(_) => return,
            None => match self.sessions.insert(session.id, entry) {
                Ok(None) => {}
                // A session whose removal was missed held the slot.
                Ok(Some((stale, old))) => match old.state {
                    State::Held => self.policy.forget(stale),
                    state => self.unlist(stale, state),
                },
                // No memory for the slot: untracked, the host fills in.
                Err(_) => return,
            },
        }
        if self.prepared.take() != Some(session.key) {
            self.policy.arrive(session.key);
        }
        self.policy
            .admit(session.id, session.key, session.time, &mut self.evicted);
        self.detach();
    }

    // A request while sessions are detached is rare, and stays out of line.
    #[inline(always)]
    fn on_access(&mut self, session: &Session) {
        self.prepared = None;
        if self.detached() == 0 {
            // Nothing detached: a session the table holds is either held by
            // the policy or untracked, and `hit` ignores an id it does not
            // hold. Skipping the lookup here saves a cache line per request.
            self.policy.hit(session.id, session.time, &mut self.evicted);
            if !self.evicted.is_empty() {
                self.detach();
            }
            return;
        }
        self.access_detached(session);
    }

    #[inline(always)]
    fn on_remove(&mut self, id: u64, _time: u64, cause: RemovalCause) {
        if !(cause == RemovalCause::Evicted && self.take_planned_eviction(id)) {
            self.gone(id);
        }
        if cause == RemovalCause::Evicted && self.waiting > 0 {
            for offer in self.offered.iter_mut().filter(|o| o.wait > 0) {
                offer.wait -= 1;
                if offer.wait == 0 {
                    self.waiting -= 1;
                }
            }
        }
    }

    fn on_refused(&mut self, id: u64, _time: u64, reason: RefusalReason) {
        if reason == RefusalReason::Pinned {
            self.take_planned_step(id);
        }
        if self.sessions.get(id).map(|e| e.state) != Some(State::Offered) {
            return;
        }
        match reason {
            RefusalReason::Pinned => {
                if let Some(offer) = self.offered.iter_mut().find(|o| o.id == id) {
                    offer.refusals = offer.refusals.saturating_add(1);
                    if offer.wait == 0 {
                        self.waiting += 1;
                    }
                    offer.wait = 1u32
                        .checked_shl(offer.refusals - 1)
                        .map_or(MAX_WAIT, |w| w.min(MAX_WAIT));
                }
            }
            RefusalReason::NotLive => self.gone(id),
        }
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>, out: &mut Vec<u64>) {
        // A conditional plan follows an arrival: asked without one, the host
        // needs every victim now.
        let plans = Self::PLANS && (!Self::CONDITIONAL || choice.arriving.is_some());
        let key = choice.arriving.map_or(NO_KEY, |a| a.key);
        if self.prepared != Some(key) {
            self.policy.arrive(key);
            self.prepared = Some(key);
        }
        for offer in &self.offered {
            if out.len() >= count {
                break;
            }
            if offer.wait == 0 {
                out.push(offer.id);
            }
        }
        self.candidates.clear();
        for c in choice.candidates {
            if self
                .sessions
                .get(c.id)
                .is_some_and(|e| e.state == State::Held)
            {
                self.candidates.push(c.id);
            }
        }
        while out.len() < count {
            if let Some(id) = self.pending.pop_front() {
                if let Some(entry) = self.sessions.get_mut(id) {
                    entry.state = State::Offered;
                }
                self.offered.push(Offer {
                    id,
                    refusals: 0,
                    wait: 0,
                });
                out.push(id);
                continue;
            }
            if plans && !out.is_empty() {
                // The eviction at hand has its victim; later ones are planned,
                // not taken.
                break;
            }
            self.policy.evict(&self.candidates, &mut self.evicted);
            if self.evicted.is_empty() {
                break;
            }
            self.detach();
        }
        if plans && self.pending.is_empty() {
            // A proposal waiting out a refusal comes back first once that many
            // evictions are made: the answer may not reach past them.
            let horizon = self
                .offered
                .iter()
                .filter(|o| o.wait > 0)
                .map(|o| o.wait as usize)
                .min()
                .unwrap_or(usize::MAX);
            let planned = count.min(horizon).saturating_sub(out.len());
            // With no victim now, nothing is promised after it either.
            if planned > 0 && !out.is_empty() {
                self.policy.plan(planned, out);
                // The arrivals would reach past the refused proposal.
                if horizon != usize::MAX && out.last().is_some_and(|&id| is_arrivals(id)) {
                    out.pop();
                }
            }
        }
    }

    fn maintain(&mut self, now: u64) -> Result<(), String> {
        self.policy.maintain(now);
        Ok(())
    }

    fn ghost_changes(&mut self, changes: &mut GhostChanges) {
        self.policy.ghost_changes(changes);
    }
}

/// `policy config `key`: expected ..., got ...`, the SDK's wording for a bad
/// value, for checks beyond what a getter parses.
pub fn bad_value(key: &str, expected: &str, got: impl std::fmt::Display) -> String {
    format!("policy config `{key}`: expected {expected}, got `{got}`")
}

/// Refuses a table bounded in bytes, for a policy whose queue sizes count
/// sessions (a fraction of a byte capacity would bound nothing).
pub fn sessions_only(policy: &str, table: &Table) -> Result<(), String> {
    if table.byte_mode {
        return Err(format!(
            "{policy} policy: its queue sizes count sessions, and this table is bounded in bytes; \
             use it on a table bounded in sessions"
        ));
    }
    Ok(())
}

/// `(C * ratio)` truncated, as libCacheSim sizes its queues (C's `(int64_t)`
/// cast of a double).
pub fn fraction(capacity: u64, ratio: f64) -> u64 {
    (capacity as f64 * ratio) as u64
}

#[cfg(test)]
mod tests;
