//! The table's algorithm, single-threaded: slots with generations, the LRU
//! index, deadlines, weights, pins, limiters and external ids.
//!
//! [`Core`] knows nothing about locks, policies' internals or upstream
//! teardown: its `&mut self` methods perform one lifecycle transition each and
//! report what they removed through [`Effects`]. [`super::SessionTable`] is
//! the thin concurrent front that locks it, asks the policy outside the lock,
//! and finishes the effects after unlocking.
//!
//! Each counter changes in exactly one place: the active gauge in
//! [`Core::set_state`], the pinned count in [`Core::hold`] and
//! [`Core::unhold`], the shielded count in [`Core::shield`] and
//! [`Core::unshield`] (and [`Core::take`], for a session removed shielded),
//! the limiter count in [`Core::set_limiter`], and the live count and weight
//! in [`Core::insert`] and [`Core::take`].

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::clock::{duration_to_micros, Micros};
use super::error::TableError;
use super::expiry::Deadlines;
use super::id::SessionId;
use super::limiter::Gcra;
use super::metrics::Metrics;
use super::names::Names;
use super::recency::Recency;
use super::signal::CloseSignal;
use super::{RemovedSession, SessionInfo, SessionState};
use crate::config::{RateLimit, TableConfig};
use crate::eviction::{
    packed, Arriving, Candidate, EvictionPolicy, FlushHint, LiveSession, PackedEvent, PolicyEvent,
    QuotaUsage, Refusal, RemovalCause, HELD_EVENTS,
};

/// Seeds the candidate sampler: fixed, so a replay samples the same
/// candidates every run and sampled policies are measured deterministically.
const SAMPLER_SEED: u64 = 0x5eed_5ca7;

pub(crate) struct Entry<U> {
    external_id: Option<Arc<str>>,
    /// The external id's hash in the name index (see [`Names`]).
    name_hash: u64,
    key: u64,
    tenant: u32,
    state: SessionState,
    /// Removal requested while requests were in flight; applied at the last unpin.
    pending_removal: Option<RemovalCause>,
    /// Whether the deadline queue still holds this session's max-age deadline.
    has_deadline: bool,
    weight: u32,
    pins: u32,
    /// Kept from eviction until its handshake completes (see
    /// [`Core::shield`]); not a request, so it defers no removal or expiry.
    shielded: bool,
    created_at: Micros,
    last_access: Micros,
    requests: u64,
    bytes: u64,
    /// Requests admitted and refused since the last quota round.
    window_admitted: u32,
    window_rejected: u32,
    /// Boxed: most sessions of a replay have none, and a box keeps those small.
    limiter: Option<Box<Gcra>>,
    /// Created on the first attachment only.
    signal: Option<Arc<CloseSignal>>,
    upstream: U,
}

impl<U> Entry<U> {
    /// Whether eviction may take it: no request in flight, no handshake
    /// shield.
    #[inline(always)]
    fn evictable(&self) -> bool {
        self.pins == 0 && !self.shielded
    }

    fn info(&self, id: SessionId) -> SessionInfo {
        SessionInfo {
            id,
            external_id: self.external_id.clone(),
            key: self.key,
            tenant: self.tenant,
            state: self.state,
            created_at: self.created_at,
            last_access: self.last_access,
            requests: self.requests,
            bytes: self.bytes,
            pins: self.pins,
            shielded: self.shielded,
            weight: self.weight,
        }
    }

    pub fn upstream(&self) -> &U {
        &self.upstream
    }
}

struct Slot<U> {
    generation: u32,
    entry: Option<Entry<U>>,
}

/// A session to insert, with everything the table records about it.
pub(crate) struct Insert<U> {
    pub external_id: Option<Arc<str>>,
    pub key: u64,
    pub tenant: u32,
    pub weight: u32,
    pub upstream: U,
}

/// What a transition left to do once the lock is released: teardowns, close
/// signals to fire, and whether the policy asked to be flushed.
pub(crate) struct Effects<'p, U> {
    policy: &'p dyn EvictionPolicy,
    pub removed: Vec<RemovedSession<U>>,
    pub signals: Vec<(Arc<CloseSignal>, RemovalCause)>,
    /// Sessions removed, including those with nothing to hand out.
    pub count: usize,
    pub flush: bool,
    /// Whether removed sessions are handed out (a teardown runs, or the
    /// upstream owns something); otherwise building the record is skipped.
    keep_records: bool,
}

impl<'p, U> Effects<'p, U> {
    pub fn new(policy: &'p dyn EvictionPolicy, keep_records: bool) -> Self {
        Self {
            policy,
            removed: Vec::new(),
            signals: Vec::new(),
            count: 0,
            flush: false,
            keep_records,
        }
    }

    fn event(&mut self, event: PolicyEvent) {
        self.flush |= self.policy.record(event) == FlushHint::FlushSoon;
    }

    fn events(&mut self, events: &[PackedEvent]) {
        self.flush |= self.policy.record_batch(events) == FlushHint::FlushSoon;
    }

    fn events_then_ready(
        &mut self,
        events: &[PackedEvent],
        arriving: Option<Arriving>,
        count: usize,
        out: &mut Vec<SessionId>,
    ) {
        self.flush |=
            self.policy.record_then_ready(events, arriving, count, out) == FlushHint::FlushSoon;
    }

    /// Moves the pending work out, leaving this empty and reusable.
    pub fn take(&mut self) -> Self {
        Self {
            policy: self.policy,
            removed: std::mem::take(&mut self.removed),
            signals: std::mem::take(&mut self.signals),
            count: std::mem::take(&mut self.count),
            flush: std::mem::take(&mut self.flush),
            keep_records: self.keep_records,
        }
    }
}

/// What [`Core::evict_proposed`] did with the policy's proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proposed {
    pub evicted: usize,
    pub refused: usize,
    /// Proposals looked at; the rest were not needed, because room was made
    /// before reaching them (in byte mode the count asked for is an estimate).
    pub used: usize,
}

/// How much an eviction loop must free.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Room {
    /// Until a session of this weight fits.
    For(u32),
    /// Exactly this many sessions (fewer if too few are evictable).
    Sessions(usize),
}

/// Whether a removal happened now or waits for in-flight requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    Removed,
    /// The session is `Closing`; it leaves the table when its last request ends.
    Deferred,
}

/// Sizes of the internal structures, for tests and the admin view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    pub live: usize,
    pub live_weight: u64,
    /// Sessions eviction may not take (a request in flight, or a handshake
    /// shield), and their weight.
    pub pinned_sessions: usize,
    pub pinned_weight: u64,
    /// Sessions shielded from eviction while their handshake is under way.
    pub shielded_sessions: usize,
    /// Requests in flight across the table (the global bound's count).
    pub requests_in_flight: usize,
    pub lru_len: usize,
    pub deadline_queue_len: usize,
    pub deadline_queue_stale: usize,
    pub external_ids: usize,
    pub limiters: usize,
    /// Sessions that have had a stream attached (their close signal exists).
    pub attachments: usize,
    /// Streams attached right now.
    pub open_streams: usize,
    pub slots: usize,
    pub free_slots: usize,
    pub retired_slots: usize,
}

pub(crate) struct Core<U> {
    slots: Vec<Slot<U>>,
    free_slots: Vec<u32>,
    /// Slots whose generation is spent: never reused, so an id never names
    /// two sessions.
    retired_slots: usize,
    live: usize,
    live_weight: u64,
    /// Sessions eviction may not take (a request in flight or a handshake
    /// shield), and their weight.
    pinned: usize,
    pinned_weight: u64,
    /// Sessions shielded while their handshake is under way: at most
    /// [`Self::shield_limit`].
    shielded: usize,
    limiters: usize,
    attachments: usize,
    by_external: Names,
    /// Names of sessions an expiry round removed, taken out of `by_external`
    /// together at its end (see [`Self::expire`]), while `batching_names`.
    expired_names: Vec<(u64, SessionId)>,
    batching_names: bool,
    /// Every live session exactly once, least recently used first.
    lru: Recency,
    deadlines: Deadlines,
    last_quota_round: Micros,
    max_sessions: usize,
    weight_capacity: u64,
    idle_timeout: Option<Micros>,
    max_age: Option<Micros>,
    rate_limit: Option<RateLimit>,
    metrics: Arc<Metrics>,
    sampler: SmallRng,
    /// Whether events are held back in `held` (the policy takes batches).
    holds_events: bool,
    /// Events not yet handed to the policy, oldest first (see
    /// [`EvictionPolicy::takes_batches`]).
    held: Vec<PackedEvent>,
}

/// Expired names' buffer kept between rounds, at most (16 bytes each).
const SPARE_NAMES: usize = 4096;

impl<U> Core<U> {
    pub fn new(config: &TableConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Vec::new(),
            free_slots: Vec::new(),
            retired_slots: 0,
            live: 0,
            live_weight: 0,
            pinned: 0,
            pinned_weight: 0,
            shielded: 0,
            limiters: 0,
            attachments: 0,
            by_external: Names::default(),
            expired_names: Vec::new(),
            batching_names: false,
            lru: Recency::default(),
            deadlines: Deadlines::default(),
            last_quota_round: 0,
            max_sessions: config.max_sessions,
            weight_capacity: config.weight_capacity.unwrap_or(u64::MAX),
            idle_timeout: config.idle_timeout.map(duration_to_micros),
            max_age: config.max_age.map(duration_to_micros),
            rate_limit: config.rate_limit,
            metrics,
            sampler: SmallRng::seed_from_u64(SAMPLER_SEED),
            holds_events: false,
            held: Vec::new(),
        }
    }

    /// Holds events back for a policy that takes them in batches.
    pub fn holding_events(mut self) -> Self {
        self.holds_events = true;
        self.held.reserve_exact(HELD_EVENTS);
        self
    }

    /// Tells the policy of a transition: at once, or held back and handed
    /// over with others once [`HELD_EVENTS`] are held. Inlined: each caller
    /// names one kind of event, so the packing folds to a few stores.
    #[inline]
    fn event(&mut self, event: PolicyEvent, fx: &mut Effects<'_, U>) {
        if !self.holds_events {
            fx.event(event);
            return;
        }
        self.held.push(packed::pack(event));
        if self.held.len() >= HELD_EVENTS {
            self.hand_over(fx);
        }
    }

    /// Hands the policy every event held back for it. The table calls it
    /// under its lock before asking the policy anything.
    pub fn hand_over(&mut self, fx: &mut Effects<'_, U>) {
        if !self.held.is_empty() {
            fx.events(&self.held);
            self.held.clear();
        }
    }

    /// [`Self::hand_over`], then up to `count` victims the policy chose ahead.
    pub fn hand_over_then_ready(
        &mut self,
        arriving: Option<Arriving>,
        count: usize,
        out: &mut Vec<SessionId>,
        fx: &mut Effects<'_, U>,
    ) {
        fx.events_then_ready(&self.held, arriving, count, out);
        self.held.clear();
    }

    // ---- lookups -------------------------------------------------------

    pub fn entry(&self, id: SessionId) -> Option<&Entry<U>> {
        let slot = self.slots.get(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.entry.as_ref()
    }

    fn entry_mut(&mut self, id: SessionId) -> Option<&mut Entry<U>> {
        let slot = self.slots.get_mut(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.entry.as_mut()
    }

    fn live_entry_mut(&mut self, id: SessionId) -> Result<&mut Entry<U>, TableError> {
        self.entry_mut(id).ok_or(TableError::UnknownSession(id))
    }

    pub fn info(&self, id: SessionId) -> Option<SessionInfo> {
        self.entry(id).map(|e| e.info(id))
    }

    pub fn lookup(&self, external_id: &str) -> Option<SessionId> {
        self.by_external
            .get(external_id, |id| self.entry(id)?.external_id.as_deref())
    }

    pub fn contains_external(&self, external_id: &str) -> bool {
        self.lookup(external_id).is_some()
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn pinned(&self) -> usize {
        self.pinned
    }

    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    pub fn fits(&self, weight: u32) -> bool {
        self.live < self.max_sessions
            && self.live_weight + u64::from(weight) <= self.weight_capacity
    }

    /// Whether evicting every unpinned session would make a session of
    /// `weight` fit: when it would not, nothing should be evicted at all.
    pub fn reclaimable(&self, weight: u32) -> bool {
        self.pinned < self.max_sessions
            && self.pinned_weight + u64::from(weight) <= self.weight_capacity
    }

    /// How many victims to ask a policy for so that a session of `weight`
    /// fits: exact when counting sessions, an estimate from the mean weight
    /// when counting bytes (the table asks again if it falls short).
    pub fn victims_needed(&self, weight: u32) -> usize {
        let by_count = (self.live + 1).saturating_sub(self.max_sessions);
        let excess = (self.live_weight + u64::from(weight)).saturating_sub(self.weight_capacity);
        let by_weight = if excess == 0 || self.live == 0 {
            0
        } else {
            let mean = (self.live_weight / self.live as u64).max(1);
            usize::try_from(excess.div_ceil(mean)).unwrap_or(usize::MAX)
        };
        by_count.max(by_weight).max(1)
    }

    // ---- lifecycle transitions -----------------------------------------

    /// Inserts a session known to fit. Hands the upstream back if the
    /// external id is taken or no slot is left.
    // Inlined by hand: LLVM's choice for these flips with unrelated changes
    // elsewhere in the crate, and a replay's miss path pays for each call
    // (about 5 % of a sandboxed LRU's instructions when all three stayed out).
    #[inline(always)]
    pub fn insert(
        &mut self,
        new: Insert<U>,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> Result<SessionId, (TableError, U)> {
        if let Some(external) = &new.external_id {
            if self.contains_external(external) {
                return Err((
                    TableError::DuplicateExternalId(external.to_string()),
                    new.upstream,
                ));
            }
        }
        let external_id = new.external_id.clone();
        let name_hash = external_id
            .as_deref()
            .map_or(0, |name| self.by_external.hash(name));
        let (key, tenant, weight) = (new.key, new.tenant, new.weight);
        let entry = Entry {
            external_id: new.external_id,
            name_hash,
            key,
            tenant,
            state: SessionState::Initializing,
            pending_removal: None,
            has_deadline: self.max_age.is_some(),
            weight,
            pins: 0,
            shielded: false,
            created_at: now,
            last_access: now,
            requests: 0,
            bytes: 0,
            window_admitted: 0,
            window_rejected: 0,
            limiter: None,
            signal: None,
            upstream: new.upstream,
        };
        let id = match self.free_slots.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.entry = Some(entry);
                SessionId::new(slot, s.generation)
            }
            None => {
                // Slot u32::MAX is never handed out: policies read it as "no
                // slot", and ids on it as `wasm::ARRIVALS` and
                // `wasm::ARRIVALS_WHILE_QUEUED`.
                let Some(slot) = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&slot| slot != u32::MAX)
                else {
                    return Err((TableError::SlotsExhausted, entry.upstream));
                };
                self.slots.push(Slot {
                    generation: 0,
                    entry: Some(entry),
                });
                SessionId::new(slot, 0)
            }
        };
        self.live += 1;
        self.live_weight += u64::from(weight);
        if let Some(limit) = self.rate_limit {
            self.set_limiter(id, Some(limit), now);
        }
        if let Some(external) = external_id {
            self.by_external.insert(&external, name_hash, id);
        }
        self.lru.push_back(id.slot());
        if let Some(age) = self.max_age {
            self.deadlines.push(now.saturating_add(age), id);
        }
        self.metrics.count_created();
        self.event(
            PolicyEvent::Inserted {
                id,
                time: now,
                weight,
                key,
                tenant,
            },
            fx,
        );
        Ok(id)
    }

    /// The only place the active gauge moves: every state change goes here.
    fn set_state(&mut self, id: SessionId, to: SessionState) {
        let Some(entry) = self.entry_mut(id) else {
            return;
        };
        let from = std::mem::replace(&mut entry.state, to);
        match (from == SessionState::Active, to == SessionState::Active) {
            (false, true) => {
                self.metrics.shift_active(1);
            }
            (true, false) => {
                self.metrics.shift_active(-1);
            }
            _ => {}
        }
    }

    /// The only place the limiter count moves.
    fn set_limiter(&mut self, id: SessionId, limit: Option<RateLimit>, now: Micros) {
        let Some(entry) = self.entry_mut(id) else {
            return;
        };
        let had = entry.limiter.is_some();
        match (&mut entry.limiter, limit) {
            (Some(bucket), Some(limit)) => bucket.set_limit(limit, now),
            (slot, limit) => *slot = limit.map(|l| Box::new(Gcra::new(l))),
        }
        match (had, limit.is_some()) {
            (false, true) => self.limiters += 1,
            (true, false) => self.limiters -= 1,
            _ => {}
        }
    }

    /// `Initializing -> Active` once the MCP handshake completes.
    pub fn activate(&mut self, id: SessionId) -> Result<(), TableError> {
        let entry = self.live_entry_mut(id)?;
        match entry.state {
            SessionState::Initializing => {
                self.set_state(id, SessionState::Active);
                self.unshield(id);
                Ok(())
            }
            SessionState::Active => Ok(()),
            from => Err(TableError::InvalidTransition {
                id,
                from,
                to: SessionState::Active,
            }),
        }
    }

    /// A request on a session: rate limited; marks it most recently used.
    #[inline(always)]
    pub fn touch(
        &mut self,
        id: SessionId,
        bytes: u64,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> Result<(), TableError> {
        let entry = self.live_entry_mut(id)?;
        if !entry.state.accepts_requests() {
            return Err(TableError::NotAcceptingRequests {
                id,
                state: entry.state,
            });
        }
        if let Some(bucket) = &mut entry.limiter {
            if let Err(retry_after) = bucket.check(now) {
                entry.window_rejected = entry.window_rejected.saturating_add(1);
                self.metrics.inc(|m| &m.rejected_rate_limited);
                return Err(TableError::RateLimited { id, retry_after });
            }
        }
        entry.last_access = now;
        entry.requests += 1;
        entry.window_admitted = entry.window_admitted.saturating_add(1);
        entry.bytes = entry.bytes.saturating_add(bytes);
        let weight = entry.weight;
        self.lru.move_to_back(id.slot());
        self.event(
            PolicyEvent::Accessed {
                id,
                time: now,
                weight,
            },
            fx,
        );
        Ok(())
    }

    /// The only place a pin is added: a request starts on a live session.
    pub fn pin(&mut self, id: SessionId) -> Result<(), TableError> {
        let entry = self.live_entry_mut(id)?;
        let was_evictable = entry.evictable();
        entry.pins += 1;
        let weight = entry.weight;
        if was_evictable {
            self.hold(weight);
        }
        Ok(())
    }

    /// Ends one request on a session. A removal deferred while the session
    /// was pinned happens at its last unpin. The session keeps its place in
    /// the LRU order: the request counted as an access when it began, and the
    /// policy was told so; moving it again here would reorder the host's
    /// index behind the policy's back.
    pub fn unpin(
        &mut self,
        id: SessionId,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> Result<(), TableError> {
        let entry = self.live_entry_mut(id)?;
        if entry.pins == 0 {
            return Err(TableError::NotPinned(id));
        }
        self.release_pins(id, 1);
        let entry = self.live_entry_mut(id)?;
        if let (0, Some(cause)) = (entry.pins, entry.pending_removal) {
            self.take(id, cause, now, fx);
        }
        Ok(())
    }

    /// The only place pins are removed; returns how many were released.
    fn release_pins(&mut self, id: SessionId, count: u32) -> u32 {
        let Some(entry) = self.entry_mut(id) else {
            return 0;
        };
        let released = count.min(entry.pins);
        entry.pins -= released;
        let weight = entry.weight;
        if released > 0 && entry.evictable() {
            self.unhold(weight);
        }
        released
    }

    /// Keeps a new session from eviction until [`Self::activate`] (the MCP
    /// handshake's end) or its removal: between a client's `initialize` and
    /// its `notifications/initialized` the session is as good as in use, and
    /// a policy that ranks newcomers first (LFU's count of one, MRU) would
    /// otherwise evict it before its client could finish. Not a pin: a
    /// removal or an expiry goes ahead at once. At most
    /// [`Self::shield_limit`] at a time, so that clients opening sessions
    /// they never finish cannot make the whole table unevictable.
    pub fn shield(&mut self, id: SessionId) {
        if self.shielded >= self.shield_limit() {
            return;
        }
        let Some(entry) = self.entry_mut(id) else {
            return;
        };
        if entry.shielded {
            return;
        }
        let was_evictable = entry.evictable();
        entry.shielded = true;
        let weight = entry.weight;
        self.shielded += 1;
        if was_evictable {
            self.hold(weight);
        }
    }

    fn unshield(&mut self, id: SessionId) {
        let Some(entry) = self.entry_mut(id).filter(|e| e.shielded) else {
            return;
        };
        entry.shielded = false;
        let (evictable, weight) = (entry.evictable(), entry.weight);
        self.shielded -= 1;
        if evictable {
            self.unhold(weight);
        }
    }

    /// Half the table: the rest stays evictable whatever clients leave
    /// half-open.
    pub fn shield_limit(&self) -> usize {
        self.max_sessions / 2
    }

    /// A session of `weight` just stopped being evictable.
    fn hold(&mut self, weight: u32) {
        self.pinned += 1;
        self.pinned_weight += u64::from(weight);
    }

    /// A session of `weight` just became evictable again (or left while
    /// held).
    fn unhold(&mut self, weight: u32) {
        self.pinned -= 1;
        self.pinned_weight -= u64::from(weight);
    }

    /// Removes a session now, or marks it `Closing` until its requests end.
    pub fn remove(
        &mut self,
        id: SessionId,
        cause: RemovalCause,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> Result<RemoveOutcome, TableError> {
        let entry = self.live_entry_mut(id)?;
        if entry.pins > 0 {
            entry.pending_removal.get_or_insert(cause);
            self.set_state(id, SessionState::Closing);
            return Ok(RemoveOutcome::Deferred);
        }
        self.take(id, cause, now, fx);
        Ok(RemoveOutcome::Removed)
    }

    /// Removes every session. With `force`, pinned ones go too (shutdown: their
    /// requests find the session gone) and the pins they held are returned so
    /// the caller can release their in-flight slots; otherwise pinned ones are
    /// deferred.
    pub fn remove_all(
        &mut self,
        cause: RemovalCause,
        force: bool,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> (usize, usize) {
        let ids: Vec<SessionId> = self.lru_ids().collect();
        let mut removed = 0;
        let mut released_pins = 0;
        for id in ids {
            if force {
                released_pins += self.release_pins(id, u32::MAX) as usize;
            }
            if let Ok(RemoveOutcome::Removed) = self.remove(id, cause, now, fx) {
                removed += 1;
            }
        }
        (removed, released_pins)
    }

    /// Takes an unpinned session out of every structure; the owned entry is
    /// handed out through `fx`. The only place the live count goes down.
    fn take(&mut self, id: SessionId, cause: RemovalCause, now: Micros, fx: &mut Effects<'_, U>) {
        debug_assert!(self.entry(id).is_some_and(|e| e.pins == 0));
        self.set_state(id, SessionState::Closed);
        self.set_limiter(id, None, now);
        let slot = &mut self.slots[id.slot() as usize];
        let Some(mut entry) = slot.entry.take() else {
            return;
        };
        match slot.generation.checked_add(1) {
            Some(next) => {
                slot.generation = next;
                self.free_slots.push(id.slot());
            }
            None => self.retired_slots += 1,
        }
        self.live -= 1;
        self.live_weight -= u64::from(entry.weight);
        if entry.shielded {
            // Without pins (a removal waits for those), held by the shield
            // alone.
            self.shielded -= 1;
            self.unhold(entry.weight);
        }
        if let Some(external) = &entry.external_id {
            if self.batching_names && !self.by_external.has_collided() {
                self.expired_names.push((entry.name_hash, id));
            } else {
                self.by_external.remove(external, entry.name_hash, id);
            }
        }
        self.lru.remove(id.slot());
        if entry.has_deadline {
            let slots = &self.slots;
            self.deadlines.forget_one(|id| live_in(slots, id));
        }
        self.metrics.count_removal(cause);
        self.event(
            PolicyEvent::Removed {
                id,
                time: now,
                cause,
                key: entry.key,
            },
            fx,
        );
        fx.count += 1;
        if let Some(signal) = entry.signal.take() {
            self.attachments -= 1;
            fx.signals.push((signal, cause));
        }
        if fx.keep_records {
            fx.removed.push(RemovedSession {
                info: entry.info(id),
                cause,
                removed_at: now,
                upstream: entry.upstream,
            });
        }
    }

    // ---- eviction and expiry -------------------------------------------

    fn short_of(&self, room: Room, evicted: usize) -> bool {
        match room {
            Room::For(weight) => !self.fits(weight),
            Room::Sessions(n) => evicted < n,
        }
    }

    /// Up to `count` distinct live, unpinned sessions drawn at random (by
    /// probing slots, so the cost is O(count) whatever the table's size).
    pub fn sample(&mut self, count: usize, out: &mut Vec<Candidate>) {
        if self.live == self.pinned || self.slots.is_empty() {
            return;
        }
        let probes = count.saturating_mul(8).max(16);
        for _ in 0..probes {
            if out.len() >= count {
                break;
            }
            let slot = self.sampler.random_range(0..self.slots.len());
            let s = &self.slots[slot];
            let Some(entry) = s.entry.as_ref().filter(|e| e.evictable()) else {
                continue;
            };
            let id = SessionId::new(slot as u32, s.generation);
            if out.iter().all(|c| c.id != id) {
                out.push(Candidate {
                    id,
                    last_access: entry.last_access,
                    requests: entry.requests,
                    key: entry.key,
                });
            }
        }
    }

    /// Evicts the policy's proposals in order while more room is needed.
    /// Proposals the table will not evict (pinned, not live, repeated) are
    /// counted and reported back to the policy.
    pub fn evict_proposed(
        &mut self,
        proposals: &[SessionId],
        room: Room,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> Proposed {
        let mut evicted = 0;
        let mut refused = 0;
        for (used, &id) in proposals.iter().enumerate() {
            if !self.short_of(room, evicted) {
                return Proposed {
                    evicted,
                    refused,
                    used,
                };
            }
            match self.entry(id).map(Entry::evictable) {
                Some(true) => {
                    self.take(id, RemovalCause::Evicted, now, fx);
                    evicted += 1;
                }
                found => {
                    refused += 1;
                    self.metrics.inc(|m| &m.invalid_victims);
                    let reason = if found.is_some() {
                        Refusal::Pinned
                    } else {
                        Refusal::NotLive
                    };
                    self.event(
                        PolicyEvent::Refused {
                            id,
                            time: now,
                            reason,
                        },
                        fx,
                    );
                }
            }
        }
        Proposed {
            evicted,
            refused,
            used: proposals.len(),
        }
    }

    /// Evicts from the front of the LRU index, skipping pinned sessions, while
    /// more room is needed (`already` evicted before this call). `fallback`
    /// counts the victims as the host's choice rather than the policy's.
    #[inline(always)]
    pub fn evict_lru(
        &mut self,
        room: Room,
        already: usize,
        fallback: bool,
        now: Micros,
        fx: &mut Effects<'_, U>,
    ) -> usize {
        let mut evicted = 0;
        while self.short_of(room, already + evicted) {
            let Some(victim) = self.first_unpinned() else {
                break;
            };
            if fallback {
                self.metrics.inc(|m| &m.fallback_victims);
            }
            self.take(victim, RemovalCause::Evicted, now, fx);
            evicted += 1;
        }
        evicted
    }

    fn first_unpinned(&self) -> Option<SessionId> {
        self.lru_ids()
            .find(|&id| self.entry(id).is_some_and(Entry::evictable))
    }

    /// The id of the session in `slot` (which the LRU index holds only while
    /// a session lives there).
    fn id_of(&self, slot: u32) -> SessionId {
        SessionId::new(slot, self.slots[slot as usize].generation)
    }

    /// Live session ids, least recently used first.
    fn lru_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.lru.iter().map(|slot| self.id_of(slot))
    }

    /// Expires sessions idle past the idle timeout or older than the max age at
    /// `now`. Costs O(k) for k expired sessions: idle ones are read off the
    /// front of the LRU index, aged ones off the deadline queue.
    pub fn expire(&mut self, now: Micros, fx: &mut Effects<'_, U>) {
        // Each name removal is a probe at a random place in a large index:
        // made back to back after the round, the probes overlap in the
        // processor instead of each waiting between the rest of a removal
        // (a fifth of an age round's time). The names of the sessions gone
        // stay indexed only within this call; a colliding name, which needs
        // its string to go, is removed at once.
        self.batching_names = true;
        self.expire_due(now, fx);
        self.batching_names = false;
        for (hash, id) in self.expired_names.drain(..) {
            self.by_external.remove_uncollided(hash, id);
        }
        // Kept for the next round unless a mass expiry grew it.
        self.expired_names.shrink_to(SPARE_NAMES);
    }

    fn expire_due(&mut self, now: Micros, fx: &mut Effects<'_, U>) {
        if let Some(idle) = self.idle_timeout {
            while let Some(slot) = self.lru.front() {
                let front = self.id_of(slot);
                let Some(entry) = self.entry_mut(front) else {
                    debug_assert!(false, "LRU index names a missing session");
                    self.lru.remove(slot);
                    continue;
                };
                if now.saturating_sub(entry.last_access) < idle {
                    break;
                }
                if entry.pins > 0 {
                    // A request in flight is activity: the session counts as
                    // accessed now, and the policy is told so, keeping its
                    // order and the host's the same.
                    entry.last_access = now;
                    let weight = entry.weight;
                    self.lru.move_to_back(slot);
                    self.event(
                        PolicyEvent::Accessed {
                            id: front,
                            time: now,
                            weight,
                        },
                        fx,
                    );
                    continue;
                }
                self.take(front, RemovalCause::ExpiredIdle, now, fx);
            }
        }
        loop {
            let slots = &self.slots;
            let Some(id) = self.deadlines.pop_due(now, |id| live_in(slots, id)) else {
                break;
            };
            if let Some(entry) = self.entry_mut(id) {
                entry.has_deadline = false;
            }
            if let Err(e) = self.remove(id, RemovalCause::ExpiredAge, now, fx) {
                debug_assert!(false, "a due deadline names a live session: {e}");
            }
        }
    }

    // ---- attachments and quotas ----------------------------------------

    /// The session's close signal, created on first use.
    pub fn attach(&mut self, id: SessionId) -> Result<Arc<CloseSignal>, TableError> {
        let entry = self.live_entry_mut(id)?;
        if !entry.state.accepts_requests() {
            return Err(TableError::NotAcceptingRequests {
                id,
                state: entry.state,
            });
        }
        let created = entry.signal.is_none();
        let signal = Arc::clone(entry.signal.get_or_insert_with(Default::default));
        if created {
            self.attachments += 1;
        }
        Ok(signal)
    }

    pub fn set_rate_limit(
        &mut self,
        id: SessionId,
        limit: Option<RateLimit>,
        now: Micros,
    ) -> Result<(), TableError> {
        self.live_entry_mut(id)?;
        self.set_limiter(id, limit, now);
        Ok(())
    }

    pub fn rate_limit(&self, id: SessionId) -> Result<Option<RateLimit>, TableError> {
        let entry = self.entry(id).ok_or(TableError::UnknownSession(id))?;
        Ok(entry.limiter.as_ref().map(|l| l.limit()))
    }

    /// Usage of every session used since the last quota round, which resets
    /// the window. Visits only those sessions: they are the tail of the LRU
    /// index.
    pub fn take_usage(&mut self, now: Micros) -> Vec<QuotaUsage> {
        let since = std::mem::replace(&mut self.last_quota_round, now);
        let window_ms = now.saturating_sub(since) / 1_000;
        let recent: Vec<SessionId> = self
            .lru
            .iter_rev()
            .map(|slot| self.id_of(slot))
            .take_while(|&id| self.entry(id).is_some_and(|e| e.last_access >= since))
            .collect();
        let mut usage = Vec::with_capacity(recent.len());
        for id in recent {
            // A session touched only by its creation has no usage to report.
            if let Some(entry) = self
                .entry_mut(id)
                .filter(|e| e.window_admitted > 0 || e.window_rejected > 0)
            {
                usage.push(QuotaUsage {
                    id,
                    admitted: u64::from(std::mem::take(&mut entry.window_admitted)),
                    rejected: u64::from(std::mem::take(&mut entry.window_rejected)),
                    window_ms,
                    key: entry.key,
                    tenant: entry.tenant,
                });
            }
        }
        usage
    }

    // ---- views -----------------------------------------------------------

    /// Every live session, least recently used first.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        self.lru_ids().filter_map(|id| self.info(id)).collect()
    }

    /// `f` over every live session and its upstream, least recently used first.
    pub fn inspect<R>(&self, mut f: impl FnMut(SessionInfo, &U) -> R) -> Vec<R> {
        self.lru_ids()
            .filter_map(|id| self.entry(id).map(|e| f(e.info(id), &e.upstream)))
            .collect()
    }

    /// Live sessions, least recently used first, as a warm-up replays them.
    pub fn recency_order(&self) -> Vec<LiveSession> {
        self.lru_ids()
            .filter_map(|id| {
                self.entry(id).map(|e| LiveSession {
                    id,
                    last_access: e.last_access,
                    weight: e.weight,
                    key: e.key,
                    tenant: e.tenant,
                })
            })
            .collect()
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            live: self.live,
            live_weight: self.live_weight,
            pinned_sessions: self.pinned,
            pinned_weight: self.pinned_weight,
            shielded_sessions: self.shielded,
            requests_in_flight: 0,
            lru_len: self.lru.len(),
            deadline_queue_len: self.deadlines.len(),
            deadline_queue_stale: self.deadlines.stale(),
            external_ids: self.by_external.len(),
            limiters: self.limiters,
            attachments: self.attachments,
            open_streams: 0,
            slots: self.slots.len(),
            free_slots: self.free_slots.len(),
            retired_slots: self.retired_slots,
        }
    }

    /// Spends a slot's generations so the next removal retires it (tests of
    /// the generation bound; four billion reuses take too long to run).
    #[cfg(test)]
    pub fn age_slot(&mut self, slot: u32, generation: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if s.entry.is_none() {
                s.generation = generation;
            }
        }
    }
}

fn live_in<U>(slots: &[Slot<U>], id: SessionId) -> bool {
    slots
        .get(id.slot() as usize)
        .is_some_and(|s| s.generation == id.generation() && s.entry.is_some())
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
