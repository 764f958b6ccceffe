//! The table itself.
//!
//! # Lock order
//!
//! 1. A policy's own heavy lock (the WebAssembly store) is taken only by
//!    `EvictionPolicy::{victims, flush, maintain}`, which the table calls with
//!    no lock held.
//! 2. `SessionTable::inner` (one `parking_lot::Mutex`).
//! 3. Leaf locks taken by `EvictionPolicy::record` under `inner` (event buffers,
//!    native policy state). Nothing is locked under a leaf lock.
//!
//! Nothing is held across an `.await`, a WebAssembly call or an upstream
//! teardown. Every operation that removes sessions collects the owned entries
//! under the lock and hands them to the teardown runner after releasing it; an
//! eviction never calls back into a function that takes `inner` while holding it,
//! which is what deadlocked the design this replaces.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use governor::clock::DefaultClock;
use hashlink::LinkedHashSet;
use parking_lot::Mutex;

use super::clock::{duration_to_micros, Clock, Micros};
use super::error::TableError;
use super::expiry::DeadlineHeap;
use super::id::SessionId;
use super::limiter::{InFlight, SessionLimiter};
use super::metrics::{Metrics, MetricsSnapshot};
use super::teardown::{Teardown, TeardownRunner};
use super::{RemovedSession, SessionInfo, SessionState};
use crate::config::{ConfigError, RateLimit, TableConfig};
use crate::eviction::{EvictionPolicy, FlushHint, HostLru, PolicyEvent, QuotaUsage, RemovalCause};

/// How many times a create asks the policy again after it proposed valid victims
/// that did not yet make room (byte mode). A policy that proposes nothing valid
/// is not asked again: the LRU fallback takes over at once.
const MAX_POLICY_ROUNDS: usize = 64;

struct Entry<U> {
    external_id: Arc<str>,
    state: SessionState,
    created_at: Micros,
    last_access: Micros,
    /// The max-age deadline while it sits in the deadline heap.
    deadline: Option<Micros>,
    /// Removal requested while requests were in flight; applied at the last unpin.
    pending_removal: Option<RemovalCause>,
    requests: u64,
    bytes: u64,
    /// Requests admitted and refused since the last quota round.
    window_admitted: u32,
    window_rejected: u32,
    pins: u32,
    weight: u32,
    limiter: Option<Box<SessionLimiter>>,
    upstream: U,
}

struct Slot<U> {
    generation: u32,
    entry: Option<Entry<U>>,
}

struct Inner<U> {
    slots: Vec<Slot<U>>,
    free_slots: Vec<u32>,
    live: usize,
    live_weight: u64,
    pinned: usize,
    by_external: HashMap<Arc<str>, SessionId>,
    /// Every live session exactly once, least recently used first.
    lru: LinkedHashSet<SessionId>,
    deadlines: DeadlineHeap,
    last_quota_round: Micros,
}

impl<U> Inner<U> {
    fn entry(&self, id: SessionId) -> Option<&Entry<U>> {
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

    fn allocate_slot(&mut self, entry: Entry<U>) -> SessionId {
        if let Some(slot) = self.free_slots.pop() {
            let s = &mut self.slots[slot as usize];
            s.entry = Some(entry);
            SessionId::new(slot, s.generation)
        } else {
            let slot =
                u32::try_from(self.slots.len()).expect("max_sessions is validated below u32");
            self.slots.push(Slot {
                generation: 0,
                entry: Some(entry),
            });
            SessionId::new(slot, 0)
        }
    }
}

fn info_of<U>(id: SessionId, entry: &Entry<U>) -> SessionInfo {
    SessionInfo {
        id,
        external_id: Arc::clone(&entry.external_id),
        state: entry.state,
        created_at: entry.created_at,
        last_access: entry.last_access,
        requests: entry.requests,
        bytes: entry.bytes,
        in_flight: entry.pins,
        weight: entry.weight,
    }
}

/// How a new session is named outside the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalId {
    /// A random 128-bit id, as the proxy hands out in `MCP-Session-Id`.
    Generate,
    /// A caller-chosen key (e.g. a configured client identity).
    Given(String),
    /// None: the session is reached only by its compact handle (trace replay).
    Anonymous,
}

/// What [`SessionTable::create`] needs besides the configuration.
pub struct NewSession<U> {
    pub external_id: ExternalId,
    /// Counts toward the table's weight capacity (1 unless in byte mode).
    pub weight: u32,
    pub upstream: U,
}

impl<U> NewSession<U> {
    /// A session with a generated external id.
    pub fn new(upstream: U) -> Self {
        Self {
            external_id: ExternalId::Generate,
            weight: 1,
            upstream,
        }
    }

    /// A session without an external id, reached only by its handle.
    pub fn anonymous(upstream: U) -> Self {
        Self {
            external_id: ExternalId::Anonymous,
            ..Self::new(upstream)
        }
    }

    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = ExternalId::Given(external_id.into());
        self
    }

    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// A created session's handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: SessionId,
    pub external_id: Arc<str>,
    /// Sessions evicted to make room for this one.
    pub evicted: usize,
}

/// Whether a removal happened now or waits for in-flight requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    Removed,
    /// The session is `Closing`; it leaves the table when its last request ends.
    Deferred,
}

/// Sizes of the internal structures, for tests and the admin view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub live: usize,
    pub live_weight: u64,
    pub pinned: usize,
    pub in_flight: usize,
    pub lru_len: usize,
    pub deadline_heap_len: usize,
    pub deadline_heap_stale: usize,
    pub external_ids: usize,
    pub limiters: usize,
    pub slots: usize,
    pub free_slots: usize,
}

/// Whether an eviction loop must go on, given how many it has evicted so far.
type Shortfall<'a, U> = dyn Fn(&SessionTable<U>, &Inner<U>, usize) -> bool + 'a;

/// Removed sessions waiting for the lock to be released, plus whether the policy
/// asked to be flushed.
struct Aftermath<U> {
    removed: Vec<RemovedSession<U>>,
    flush: bool,
}

impl<U> Aftermath<U> {
    fn new() -> Self {
        Self {
            removed: Vec::new(),
            flush: false,
        }
    }

    fn note(&mut self, hint: FlushHint) {
        self.flush |= hint == FlushHint::FlushSoon;
    }
}

/// The bounded table of sessions. `U` is whatever a session holds upstream
/// (a child process, an HTTP client); it is torn down outside the lock.
pub struct SessionTable<U = ()> {
    inner: Mutex<Inner<U>>,
    config: TableConfig,
    weight_capacity: u64,
    policy: Arc<dyn EvictionPolicy>,
    /// The policy proposes nothing and lets the LRU index decide (native LRU).
    defers_to_host: bool,
    metrics: Arc<Metrics>,
    clock: Clock,
    limiter_clock: DefaultClock,
    in_flight: InFlight,
    teardown: Option<TeardownRunner<U>>,
}

impl<U: Send + 'static> SessionTable<U> {
    /// A table on tokio's clock with the host LRU policy and no teardown.
    pub fn new(config: TableConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    pub fn builder(config: TableConfig) -> TableBuilder<U> {
        TableBuilder {
            config,
            policy: Arc::new(HostLru),
            clock: None,
            teardown: None,
        }
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn policy(&self) -> &Arc<dyn EvictionPolicy> {
        &self.policy
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Creates a session, evicting as needed. Fails with [`TableError::Capacity`]
    /// when every session is pinned; never blocks waiting for room.
    pub fn create(&self, new: NewSession<U>) -> Result<Created, TableError> {
        let NewSession {
            external_id,
            weight,
            upstream,
        } = new;
        if u64::from(weight) > self.weight_capacity {
            return Err(TableError::TooLarge {
                weight: u64::from(weight),
                capacity: self.weight_capacity,
            });
        }
        let external_id: Arc<str> = match external_id {
            ExternalId::Given(given) => Arc::from(given),
            ExternalId::Generate => Arc::from(generate_external_id()),
            ExternalId::Anonymous => Arc::clone(&ANONYMOUS),
        };
        let mut proposals: Vec<SessionId> = Vec::new();
        let mut after = Aftermath::new();
        let mut evicted = 0;
        let mut round = 0;
        let result = loop {
            let mut inner = self.inner.lock();
            if !external_id.is_empty() && inner.by_external.contains_key(&external_id) {
                break Err(TableError::DuplicateExternalId(external_id.to_string()));
            }
            let now = self.clock.now();
            let short = |t: &Self, inner: &Inner<U>, _: usize| !t.fits(inner, weight);
            let valid =
                self.evict_proposed(&mut inner, proposals.drain(..), &short, now, &mut after);
            evicted += valid;
            let ask_policy = !self.fits(&inner, weight)
                && !self.policy_defers_to_host()
                && round < MAX_POLICY_ROUNDS
                && (round == 0 || valid > 0);
            if !ask_policy {
                evicted += self.evict_in_lru_order(&mut inner, &short, 0, now, &mut after);
                if !self.fits(&inner, weight) {
                    self.metrics.inc(|m| &m.rejected_capacity);
                    break Err(TableError::Capacity {
                        live: inner.live,
                        max_sessions: self.config.max_sessions,
                        pinned: inner.pinned,
                    });
                }
                let id =
                    self.insert_locked(&mut inner, &external_id, weight, upstream, now, &mut after);
                break Ok(Created {
                    id,
                    external_id,
                    evicted,
                });
            }
            let needed = self.evictions_needed(&inner);
            drop(inner);
            round += 1;
            self.finish(std::mem::replace(&mut after, Aftermath::new()));
            self.policy.victims(needed, &mut proposals);
        };
        self.finish(after);
        result
    }

    /// Looks up a session by its compact id.
    pub fn get(&self, id: SessionId) -> Option<SessionInfo> {
        let inner = self.inner.lock();
        inner.entry(id).map(|e| info_of(id, e))
    }

    /// Resolves an external (MCP) session id.
    pub fn lookup(&self, external_id: &str) -> Result<SessionId, TableError> {
        self.inner
            .lock()
            .by_external
            .get(external_id)
            .copied()
            .ok_or_else(|| TableError::UnknownExternalId(external_id.to_owned()))
    }

    /// Runs `f` on a session's upstream under the table lock: keep it short and
    /// never block or await in it.
    pub fn with_upstream<R>(
        &self,
        id: SessionId,
        f: impl FnOnce(&U) -> R,
    ) -> Result<R, TableError> {
        let inner = self.inner.lock();
        let entry = inner.entry(id).ok_or(TableError::UnknownSession(id))?;
        Ok(f(&entry.upstream))
    }

    /// Records a request on a session: rate limited, marks it most recently used.
    pub fn touch(&self, id: SessionId, bytes: u64) -> Result<(), TableError> {
        let mut after = Aftermath::new();
        let result = {
            let mut inner = self.inner.lock();
            let now = self.clock.now();
            self.touch_locked(&mut inner, id, bytes, now, &mut after)
        };
        self.finish(after);
        result
    }

    fn touch_locked(
        &self,
        inner: &mut Inner<U>,
        id: SessionId,
        bytes: u64,
        now: Micros,
        after: &mut Aftermath<U>,
    ) -> Result<(), TableError> {
        let entry = inner.entry_mut(id).ok_or(TableError::UnknownSession(id))?;
        if !entry.state.accepts_requests() {
            return Err(TableError::NotAcceptingRequests {
                id,
                state: entry.state,
            });
        }
        if let Some(limiter) = &entry.limiter {
            if let Err(retry_after) = limiter.check(&self.limiter_clock) {
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
        inner.lru.to_back(&id);
        after.note(self.policy.record(PolicyEvent::Accessed {
            id,
            time: now,
            weight,
        }));
        Ok(())
    }

    /// Starts a request: a [`touch`](Self::touch) plus a pin that keeps the session
    /// from being evicted or expired until [`end_request`](Self::end_request).
    /// Refused when the global in-flight bound is reached.
    pub fn begin_request(&self, id: SessionId, bytes: u64) -> Result<(), TableError> {
        if let Err(in_flight) = self.in_flight.try_acquire() {
            self.metrics.inc(|m| &m.rejected_overloaded);
            return Err(TableError::Overloaded {
                in_flight,
                max_in_flight: self.in_flight.max(),
            });
        }
        let mut after = Aftermath::new();
        let result = {
            let mut inner = self.inner.lock();
            let now = self.clock.now();
            let touched = self.touch_locked(&mut inner, id, bytes, now, &mut after);
            if touched.is_ok() {
                self.pin_locked(&mut inner, id);
            }
            touched
        };
        if result.is_err() {
            self.in_flight.release();
        }
        self.finish(after);
        result
    }

    /// [`begin_request`](Self::begin_request) with a guard that ends the request when dropped.
    pub fn request_guard(
        self: &Arc<Self>,
        id: SessionId,
        bytes: u64,
    ) -> Result<RequestGuard<U>, TableError> {
        self.begin_request(id, bytes)?;
        Ok(RequestGuard {
            table: Arc::clone(self),
            id,
        })
    }

    fn pin_locked(&self, inner: &mut Inner<U>, id: SessionId) {
        if let Some(entry) = inner.entry_mut(id) {
            entry.pins += 1;
            if entry.pins == 1 {
                inner.pinned += 1;
            }
        }
    }

    /// Ends a request started by [`begin_request`](Self::begin_request). A session whose
    /// removal was deferred leaves the table when its last request ends.
    pub fn end_request(&self, id: SessionId) -> Result<(), TableError> {
        let mut after = Aftermath::new();
        let result = {
            let mut inner = self.inner.lock();
            let now = self.clock.now();
            let entry = inner.entry_mut(id).ok_or(TableError::UnknownSession(id))?;
            if entry.pins == 0 {
                Err(TableError::NotPinned(id))
            } else {
                entry.pins -= 1;
                entry.last_access = now;
                let unpinned = entry.pins == 0;
                let pending = entry.pending_removal.filter(|_| unpinned);
                if unpinned {
                    inner.pinned -= 1;
                }
                inner.lru.to_back(&id);
                if let Some(cause) = pending {
                    self.remove_locked(&mut inner, id, cause, now, &mut after);
                }
                Ok(())
            }
        };
        if result.is_ok() {
            self.in_flight.release();
        }
        self.finish(after);
        result
    }

    /// `Initializing -> Active` once the MCP handshake completes.
    pub fn activate(&self, id: SessionId) -> Result<(), TableError> {
        let mut inner = self.inner.lock();
        let entry = inner.entry_mut(id).ok_or(TableError::UnknownSession(id))?;
        match entry.state {
            SessionState::Initializing => {
                entry.state = SessionState::Active;
                self.metrics.active.fetch_add(1, Ordering::Release);
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

    /// Removes a session now, or when its in-flight requests end.
    /// `cause` is [`RemovalCause::Closed`] for a client's DELETE and
    /// [`RemovalCause::Deleted`] for an operator's.
    pub fn remove(&self, id: SessionId, cause: RemovalCause) -> Result<RemoveOutcome, TableError> {
        let mut after = Aftermath::new();
        let result = {
            let mut inner = self.inner.lock();
            let now = self.clock.now();
            let entry = inner.entry_mut(id).ok_or(TableError::UnknownSession(id))?;
            if entry.pins > 0 {
                self.defer_removal(entry, cause);
                Ok(RemoveOutcome::Deferred)
            } else {
                self.remove_locked(&mut inner, id, cause, now, &mut after);
                Ok(RemoveOutcome::Removed)
            }
        };
        self.finish(after);
        result
    }

    fn defer_removal(&self, entry: &mut Entry<U>, cause: RemovalCause) {
        if entry.pending_removal.is_none() {
            entry.pending_removal = Some(cause);
        }
        if entry.state == SessionState::Active {
            self.metrics.active.fetch_sub(1, Ordering::Release);
        }
        entry.state = SessionState::Closing;
    }

    /// Evicts up to `count` unpinned sessions chosen by the policy (the host LRU
    /// order filling any shortfall); returns how many were evicted.
    pub fn evict(&self, count: usize) -> usize {
        let mut proposals = Vec::new();
        if !self.policy_defers_to_host() {
            self.policy.victims(count, &mut proposals);
        }
        let mut after = Aftermath::new();
        let evicted = {
            let mut inner = self.inner.lock();
            let now = self.clock.now();
            let short = |_: &Self, _: &Inner<U>, evicted: usize| evicted < count;
            let valid = self.evict_proposed(&mut inner, proposals, &short, now, &mut after);
            valid + self.evict_in_lru_order(&mut inner, &short, valid, now, &mut after)
        };
        self.finish(after);
        evicted
    }

    /// Expires sessions idle past the idle timeout or older than the max age at
    /// `now`. Costs O(k log n) for k expired sessions: idle ones are read off the
    /// front of the LRU index, aged ones off the deadline heap.
    pub fn cleanup_expired(&self, now: Micros) -> usize {
        let mut after = Aftermath::new();
        {
            let mut inner = self.inner.lock();
            if let Some(idle) = self.config.idle_timeout.map(duration_to_micros) {
                while let Some(&front) = inner.lru.front() {
                    let Some(entry) = inner.entry_mut(front) else {
                        debug_assert!(false, "LRU index names a missing session");
                        inner.lru.pop_front();
                        continue;
                    };
                    if now.saturating_sub(entry.last_access) < idle {
                        break;
                    }
                    if entry.pins > 0 {
                        // A request in flight is activity: not idle.
                        entry.last_access = now;
                        inner.lru.to_back(&front);
                        continue;
                    }
                    self.remove_locked(
                        &mut inner,
                        front,
                        RemovalCause::ExpiredIdle,
                        now,
                        &mut after,
                    );
                }
            }
            loop {
                let Inner {
                    slots, deadlines, ..
                } = &mut *inner;
                let due =
                    deadlines.pop_due(now, |id, deadline| deadline_is_current(slots, id, deadline));
                let Some(id) = due else { break };
                let Some(entry) = inner.entry_mut(id) else {
                    break;
                };
                entry.deadline = None;
                if entry.pins > 0 {
                    self.defer_removal(entry, RemovalCause::ExpiredAge);
                } else {
                    self.remove_locked(&mut inner, id, RemovalCause::ExpiredAge, now, &mut after);
                }
            }
        }
        let expired = after.removed.len();
        self.finish(after);
        expired
    }

    /// [`cleanup_expired`](Self::cleanup_expired) at the clock's current time, then the
    /// policy's maintenance tick and quota round.
    pub fn run_maintenance(&self) -> usize {
        let now = self.clock.now();
        let expired = self.cleanup_expired(now);
        self.policy.flush();
        self.policy.maintain(now);
        self.adjust_quotas(now);
        self.metrics.inc(|m| &m.cleanup_rounds);
        expired
    }

    /// Reports usage of the sessions used since the last round to the policy and
    /// applies its adjustments, clamped to the configured bounds. Visits only
    /// those sessions: they are the tail of the LRU index.
    pub fn adjust_quotas(&self, now: Micros) -> usize {
        if self.config.rate_limit.is_none() {
            return 0;
        }
        let usage = {
            let mut inner = self.inner.lock();
            let since = std::mem::replace(&mut inner.last_quota_round, now);
            let window_ms = now.saturating_sub(since) / 1_000;
            let recent: Vec<SessionId> = inner
                .lru
                .iter()
                .rev()
                .copied()
                .take_while(|&id| inner.entry(id).is_some_and(|e| e.last_access >= since))
                .collect();
            let mut usage = Vec::with_capacity(recent.len());
            for id in recent {
                // A session touched only by its creation has no usage to report.
                if let Some(entry) = inner
                    .entry_mut(id)
                    .filter(|e| e.window_admitted > 0 || e.window_rejected > 0)
                {
                    usage.push(QuotaUsage {
                        id,
                        admitted: u64::from(std::mem::take(&mut entry.window_admitted)),
                        rejected: u64::from(std::mem::take(&mut entry.window_rejected)),
                        window_ms,
                    });
                }
            }
            usage
        };
        let mut adjustments = Vec::new();
        self.policy.adjust_quotas(&usage, &mut adjustments);
        if adjustments.is_empty() {
            return 0;
        }
        let bounds = self.config.quota_bounds;
        let mut inner = self.inner.lock();
        let mut applied = 0;
        for adj in adjustments {
            let limit = bounds.clamp(adj.per_second, adj.burst);
            if let Some(entry) = inner.entry_mut(adj.id) {
                if entry.limiter.as_ref().map(|l| l.limit()) != Some(limit) {
                    entry.limiter = Some(SessionLimiter::new(limit));
                }
                applied += 1;
            }
        }
        applied
    }

    /// Replaces a session's rate limit (quota adjustments from a policy land here).
    pub fn set_rate_limit(
        &self,
        id: SessionId,
        limit: Option<RateLimit>,
    ) -> Result<(), TableError> {
        let mut inner = self.inner.lock();
        let entry = inner.entry_mut(id).ok_or(TableError::UnknownSession(id))?;
        if entry.limiter.as_ref().map(|l| l.limit()) != limit {
            entry.limiter = limit.map(SessionLimiter::new);
        }
        Ok(())
    }

    /// The current rate limit of a session.
    pub fn rate_limit(&self, id: SessionId) -> Result<Option<RateLimit>, TableError> {
        let inner = self.inner.lock();
        let entry = inner.entry(id).ok_or(TableError::UnknownSession(id))?;
        Ok(entry.limiter.as_ref().map(|l| l.limit()))
    }

    /// Every live session, least recently used first. The only operation (with
    /// [`stats`](Self::stats)' limiter count) that visits every session.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        let inner = self.inner.lock();
        inner
            .lru
            .iter()
            .filter_map(|&id| inner.entry(id).map(|e| info_of(id, e)))
            .collect()
    }

    /// Live session ids, least recently used first (used to warm a new policy).
    pub fn recency_order(&self) -> Vec<(SessionId, Micros, u32)> {
        let inner = self.inner.lock();
        inner
            .lru
            .iter()
            .filter_map(|&id| inner.entry(id).map(|e| (id, e.last_access, e.weight)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().live
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Sizes of the internal structures. Counting limiters visits every session.
    pub fn stats(&self) -> TableStats {
        let inner = self.inner.lock();
        let limiters = inner
            .slots
            .iter()
            .filter(|s| s.entry.as_ref().is_some_and(|e| e.limiter.is_some()))
            .count();
        TableStats {
            live: inner.live,
            live_weight: inner.live_weight,
            pinned: inner.pinned,
            in_flight: self.in_flight.current(),
            lru_len: inner.lru.len(),
            deadline_heap_len: inner.deadlines.len(),
            deadline_heap_stale: inner.deadlines.stale(),
            external_ids: inner.by_external.len(),
            limiters,
            slots: inner.slots.len(),
            free_slots: inner.free_slots.len(),
        }
    }

    fn fits(&self, inner: &Inner<U>, weight: u32) -> bool {
        inner.live < self.config.max_sessions
            && inner.live_weight + u64::from(weight) <= self.weight_capacity
    }

    fn evictions_needed(&self, inner: &Inner<U>) -> usize {
        if self.config.weight_capacity.is_some() {
            // Sizes vary: ask for one at a time so the policy sees each removal.
            1
        } else {
            (inner.live + 1)
                .saturating_sub(self.config.max_sessions)
                .max(1)
        }
    }

    fn policy_defers_to_host(&self) -> bool {
        self.defers_to_host
    }

    fn is_evictable(&self, inner: &Inner<U>, id: SessionId) -> bool {
        inner.entry(id).is_some_and(|e| e.pins == 0)
    }

    /// Evicts the policy's valid proposals, in order, while `short` says more
    /// room is needed; counts the invalid ones. Returns how many were evicted.
    fn evict_proposed(
        &self,
        inner: &mut Inner<U>,
        proposals: impl IntoIterator<Item = SessionId>,
        short: &Shortfall<'_, U>,
        now: Micros,
        after: &mut Aftermath<U>,
    ) -> usize {
        let mut evicted = 0;
        for id in proposals {
            if !short(self, inner, evicted) {
                break;
            }
            if self.is_evictable(inner, id) {
                self.remove_locked(inner, id, RemovalCause::Evicted, now, after);
                evicted += 1;
            } else {
                self.metrics.inc(|m| &m.invalid_victims);
            }
        }
        evicted
    }

    /// Evicts from the front of the LRU index, skipping pinned sessions, while
    /// `short` says more room is needed (`already` evicted before this call).
    fn evict_in_lru_order(
        &self,
        inner: &mut Inner<U>,
        short: &Shortfall<'_, U>,
        already: usize,
        now: Micros,
        after: &mut Aftermath<U>,
    ) -> usize {
        let mut evicted = 0;
        while short(self, inner, already + evicted) {
            let Some(victim) = first_unpinned(inner) else {
                break;
            };
            if !self.policy_defers_to_host() {
                self.metrics.inc(|m| &m.fallback_victims);
            }
            self.remove_locked(inner, victim, RemovalCause::Evicted, now, after);
            evicted += 1;
        }
        evicted
    }

    fn insert_locked(
        &self,
        inner: &mut Inner<U>,
        external_id: &Arc<str>,
        weight: u32,
        upstream: U,
        now: Micros,
        after: &mut Aftermath<U>,
    ) -> SessionId {
        let deadline = self
            .config
            .max_age
            .map(|age| now.saturating_add(duration_to_micros(age)));
        let id = inner.allocate_slot(Entry {
            external_id: Arc::clone(external_id),
            state: SessionState::Initializing,
            created_at: now,
            last_access: now,
            deadline,
            pending_removal: None,
            requests: 0,
            bytes: 0,
            window_admitted: 0,
            window_rejected: 0,
            pins: 0,
            weight,
            limiter: self.config.rate_limit.map(SessionLimiter::new),
            upstream,
        });
        inner.live += 1;
        inner.live_weight += u64::from(weight);
        if !external_id.is_empty() {
            inner.by_external.insert(Arc::clone(external_id), id);
        }
        inner.lru.insert(id);
        if let Some(deadline) = deadline {
            inner.deadlines.push(deadline, id);
        }
        self.metrics.inc(|m| &m.created);
        after.note(self.policy.record(PolicyEvent::Inserted {
            id,
            time: now,
            weight,
        }));
        id
    }

    /// Takes a session out of every structure; the owned entry is queued for
    /// teardown after the lock is released. The caller has checked it exists.
    fn remove_locked(
        &self,
        inner: &mut Inner<U>,
        id: SessionId,
        cause: RemovalCause,
        now: Micros,
        after: &mut Aftermath<U>,
    ) {
        let slot = &mut inner.slots[id.slot() as usize];
        let Some(mut entry) = slot.entry.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        inner.free_slots.push(id.slot());
        inner.live -= 1;
        inner.live_weight -= u64::from(entry.weight);
        if entry.pins > 0 {
            inner.pinned -= 1;
        }
        if !entry.external_id.is_empty() {
            inner.by_external.remove(&entry.external_id);
        }
        inner.lru.remove(&id);
        if entry.deadline.is_some() {
            inner.deadlines.forget_one();
            let Inner {
                slots, deadlines, ..
            } = &mut *inner;
            deadlines.compact_if_needed(|id, deadline| deadline_is_current(slots, id, deadline));
        }
        if entry.state == SessionState::Active {
            self.metrics.active.fetch_sub(1, Ordering::Release);
        }
        entry.state = SessionState::Closed;
        self.metrics.count_removal(cause);
        after.note(self.policy.record(PolicyEvent::Removed {
            id,
            time: now,
            cause,
        }));
        after.removed.push(RemovedSession {
            info: info_of(id, &entry),
            id,
            cause,
            removed_at: now,
            upstream: entry.upstream,
        });
    }

    /// Runs after the lock is released: teardowns and a requested policy flush.
    fn finish(&self, after: Aftermath<U>) {
        if !after.removed.is_empty() {
            match &self.teardown {
                Some(runner) => {
                    for session in after.removed {
                        runner.run(session, &self.metrics);
                    }
                }
                // Without a teardown the upstream is simply dropped, here,
                // outside the lock.
                None => drop(after.removed),
            }
        }
        if after.flush {
            self.policy.flush();
        }
    }

    pub(crate) fn metrics_handle(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

fn deadline_is_current<U>(slots: &[Slot<U>], id: SessionId, deadline: Micros) -> bool {
    slots.get(id.slot() as usize).is_some_and(|slot| {
        slot.generation == id.generation()
            && slot
                .entry
                .as_ref()
                .is_some_and(|e| e.deadline == Some(deadline))
    })
}

fn first_unpinned<U>(inner: &Inner<U>) -> Option<SessionId> {
    inner
        .lru
        .iter()
        .copied()
        .find(|&id| inner.entry(id).is_some_and(|e| e.pins == 0))
}

/// The shared empty name of anonymous sessions (one allocation for all).
static ANONYMOUS: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));

fn generate_external_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Ends its request when dropped, so an early return or a panic in a handler
/// cannot leak a pin (which would make a session unevictable forever).
pub struct RequestGuard<U: Send + 'static> {
    table: Arc<SessionTable<U>>,
    id: SessionId,
}

impl<U: Send + 'static> RequestGuard<U> {
    pub fn id(&self) -> SessionId {
        self.id
    }
}

impl<U: Send + 'static> Drop for RequestGuard<U> {
    fn drop(&mut self) {
        // The session cannot have left the table while pinned.
        let _ = self.table.end_request(self.id);
    }
}

pub struct TableBuilder<U> {
    config: TableConfig,
    policy: Arc<dyn EvictionPolicy>,
    clock: Option<Clock>,
    teardown: Option<(Arc<dyn Teardown<U>>, tokio::runtime::Handle)>,
}

impl<U: Send + 'static> TableBuilder<U> {
    pub fn policy(mut self, policy: Arc<dyn EvictionPolicy>) -> Self {
        self.policy = policy;
        self
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Tears down removed sessions' upstreams as tasks on `runtime`.
    pub fn teardown(
        mut self,
        teardown: Arc<dyn Teardown<U>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        self.teardown = Some((teardown, runtime));
        self
    }

    /// Builds the table behind an `Arc` and attaches the policy to it, so a
    /// policy that loses its state (a WebAssembly fault) can rebuild it from the
    /// live sessions.
    pub fn build_shared(self) -> Result<Arc<SessionTable<U>>, ConfigError> {
        let table = Arc::new(self.build()?);
        let weak = Arc::downgrade(&table);
        table.policy.attach_live_sessions(Box::new(move || {
            weak.upgrade()
                .map(|t| t.recency_order())
                .unwrap_or_default()
        }));
        Ok(table)
    }

    pub fn build(self) -> Result<SessionTable<U>, ConfigError> {
        self.config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let teardown = self
            .teardown
            .map(|(t, rt)| TeardownRunner::new(t, rt, self.config.teardown_timeout));
        Ok(SessionTable {
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                free_slots: Vec::new(),
                live: 0,
                live_weight: 0,
                pinned: 0,
                by_external: HashMap::new(),
                lru: LinkedHashSet::new(),
                deadlines: DeadlineHeap::default(),
                last_quota_round: 0,
            }),
            weight_capacity: self.config.weight_capacity.unwrap_or(u64::MAX),
            in_flight: InFlight::new(self.config.max_in_flight),
            config: self.config,
            defers_to_host: self.policy.defers_to_host_order(),
            policy: self.policy,
            metrics,
            clock: self.clock.unwrap_or_default(),
            limiter_clock: DefaultClock::default(),
            teardown,
        })
    }
}
