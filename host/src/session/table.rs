//! The concurrent front of the table: one lock around [`Core`], policy calls
//! outside it, teardowns and close signals after it.
//!
//! # Lock order
//!
//! 1. A policy's own heavy lock (the WebAssembly store) is taken only by
//!    `EvictionPolicy::{victims, flush, maintain, adjust_quotas}`, which the
//!    table calls with no lock held.
//! 2. `SessionTable::core` (one `parking_lot::Mutex`).
//! 3. Leaf locks taken by `EvictionPolicy::record` (or `record_batch`) under
//!    `core` (event buffers, native policy state). Nothing is locked under a
//!    leaf lock.
//!
//! A policy that takes batches (`EvictionPolicy::takes_batches`, every
//! WebAssembly policy) costs a request no lock but `core`: its events wait in
//! the core, in order, and are handed over under the lock when
//! `HELD_EVENTS` have gathered and before any question to the policy.
//!
//! Nothing is held across an `.await`, a WebAssembly call or an upstream
//! teardown. Every operation that removes sessions collects the owned entries
//! under the lock and hands them to the teardown runner after releasing it; an
//! eviction never calls back into a function that takes `core` while holding it,
//! which is what deadlocked the design this replaces.
//!
//! # What may block, and where it runs
//!
//! [`SessionTable::create`] and [`SessionTable::evict`] may ask the policy for
//! victims, a WebAssembly call of up to the policy timeout: async callers run
//! them on tokio's blocking pool (`spawn_blocking`). So does the cleanup task
//! for each round ([`super::CleanupTask`]). Request-path operations
//! (`touch`, `begin_request`, `end_request`, `attach`, `remove`) only take the
//! table lock; with [`FlushMode::Thread`] the event deliveries they trigger run
//! on a dedicated thread, never on the caller's.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Duration;

use parking_lot::Mutex;

use super::clock::{Clock, Micros};
use super::core::{Core, Effects, Insert, Proposed, RemoveOutcome, Room, TableStats};
use super::error::TableError;
pub use super::flusher::FlushMode;
use super::flusher::Flusher;
use super::id::SessionId;
use super::limiter::InFlight;
use super::metrics::{FallbackReason, Metrics, MetricsSnapshot};
use super::signal::Attachment;
use super::teardown::{Teardown, TeardownRunner};
use super::SessionInfo;
use crate::config::{ConfigError, RateLimit, TableConfig};
use crate::eviction::{
    Arriving, Candidate, EvictionPolicy, HostLru, LiveSession, RemovalCause, VictimRequest,
};

/// Times a create asks the policy again after every proposal it made was
/// refused (pinned): it was told which, and may do better.
const MAX_REASKS: usize = 4;

/// How a new session is named outside the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalId {
    /// 128 random bits from the operating system's CSPRNG, as 32 hex digits:
    /// what the proxy hands out in `MCP-Session-Id`.
    Generate,
    /// A caller-chosen name (e.g. a configured client identity).
    Given(String),
    /// None: the session is reached only by its compact handle (trace replay).
    Anonymous,
}

/// What [`SessionTable::create`] needs besides the configuration.
pub struct NewSession<U> {
    pub external_id: ExternalId,
    /// Stable across re-creations for the same client: the hash of the client
    /// key in the proxy, the object id in a replay. Policies use it to
    /// recognise a returning client (ghost lists, frequency sketches).
    pub key: u64,
    /// Fair-share group (0: the default tenant).
    pub tenant: u32,
    /// Counts toward the table's weight capacity (1 unless in byte mode).
    pub weight: u32,
    /// Keep it from eviction until [`SessionTable::activate`], while fewer
    /// than half the table's sessions are so kept: an MCP session between
    /// its `initialize` and its `notifications/initialized`. A removal or an
    /// expiry still takes it at once.
    pub shield_handshake: bool,
    pub upstream: U,
}

impl<U> NewSession<U> {
    /// A session with a generated external id.
    pub fn new(upstream: U) -> Self {
        Self {
            external_id: ExternalId::Generate,
            key: 0,
            tenant: 0,
            weight: 1,
            shield_handshake: false,
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

    pub fn with_key(mut self, key: u64) -> Self {
        self.key = key;
        self
    }

    pub fn with_tenant(mut self, tenant: u32) -> Self {
        self.tenant = tenant;
        self
    }

    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// See [`NewSession::shield_handshake`].
    pub fn shielded_until_active(mut self) -> Self {
        self.shield_handshake = true;
        self
    }
}

/// A created session's handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: SessionId,
    pub external_id: Option<Arc<str>>,
    /// Sessions evicted to make room for this one.
    pub evicted: usize,
}

/// A refused create: why, and the upstream handed back so the caller can tear
/// it down (a failed create must never leak a child process).
#[derive(Debug)]
pub struct Rejected<U> {
    pub error: TableError,
    pub upstream: U,
}

impl<U> Rejected<U> {
    pub fn into_error(self) -> TableError {
        self.error
    }
}

impl<U> PartialEq<TableError> for Rejected<U> {
    fn eq(&self, other: &TableError) -> bool {
        self.error == *other
    }
}

/// What [`SessionTable::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Sessions removed with [`RemovalCause::Shutdown`].
    pub closed: usize,
    /// Requests still in flight whose sessions were closed under them.
    pub abandoned_requests: usize,
    /// Teardowns still running when the deadline passed (0: all finished).
    pub teardowns_unfinished: usize,
}

/// The bounded table of sessions. `U` is whatever a session holds upstream
/// (a child process, an HTTP client); it is torn down outside the lock.
pub struct SessionTable<U = ()> {
    core: Mutex<Core<U>>,
    config: TableConfig,
    policy: Arc<dyn EvictionPolicy>,
    /// The policy proposes nothing and lets the LRU index decide (native LRU).
    defers_to_host: bool,
    metrics: Arc<Metrics>,
    clock: Clock,
    in_flight: InFlight,
    teardown: Option<TeardownRunner<U>>,
    flusher: Option<Flusher>,
    keep_records: bool,
    /// Attachments (streams) alive now.
    open_streams: Arc<AtomicUsize>,
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
            flush: FlushMode::Inline,
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

    fn effects(&self) -> Effects<'_, U> {
        Effects::new(&*self.policy, self.keep_records)
    }

    /// Creates a session, evicting as needed. Never blocks waiting for room: a
    /// table whose room is held by pinned sessions refuses with
    /// [`TableError::Capacity`] without evicting anything. On any refusal the
    /// upstream comes back in [`Rejected`].
    ///
    /// May call the policy for victims (see the module docs on blocking).
    pub fn create(&self, new: NewSession<U>) -> Result<Created, Rejected<U>> {
        self.create_then::<false>(new, 0)
    }

    /// [`create`](Self::create) with the session's first request begun in
    /// the same lock round (a [`begin_request`](Self::begin_request) of
    /// `bytes`). Between a plain create and a request guard taken after it, a
    /// concurrent create could evict the session nobody has used yet, and the
    /// client that asked for it would be told it is gone before it had it.
    /// Refused as [`TableError::Overloaded`] when the global in-flight bound is
    /// reached, before anything is evicted.
    pub fn create_pinned(
        self: &Arc<Self>,
        new: NewSession<U>,
        bytes: u64,
    ) -> Result<(Created, RequestGuard<U>), Rejected<U>> {
        if let Err(in_flight) = self.in_flight.try_acquire() {
            self.metrics.inc(|m| &m.rejected_overloaded);
            return Err(Rejected {
                error: TableError::Overloaded {
                    in_flight,
                    max_in_flight: self.in_flight.max(),
                },
                upstream: new.upstream,
            });
        }
        match self.create_then::<true>(new, bytes) {
            Ok(created) => {
                let guard = RequestGuard {
                    table: Arc::clone(self),
                    id: created.id,
                };
                Ok((created, guard))
            }
            Err(rejected) => {
                self.in_flight.release(1);
                Err(rejected)
            }
        }
    }

    /// Whether a session of `weight` could be created now, evicting as
    /// needed: refused as [`create`](Self::create) would refuse it when every
    /// session holding room is busy. Only a forecast (a concurrent create or
    /// request may change it), for a caller with something costly to start
    /// before creating, such as an upstream process.
    pub fn check_room(&self, weight: u32) -> Result<(), TableError> {
        let core = self.core.lock();
        if core.reclaimable(weight) {
            return Ok(());
        }
        self.metrics.inc(|m| &m.rejected_capacity);
        Err(TableError::Capacity {
            live: core.live(),
            max_sessions: core.max_sessions(),
            pinned: core.pinned(),
        })
    }

    /// `create`, and with `FIRST_REQUEST` a request of `bytes` begun under
    /// the lock that inserts it (the caller holds an in-flight slot for it).
    /// A constant, so that the plain create a replay makes per miss compiles
    /// without the branch.
    fn create_then<const FIRST_REQUEST: bool>(
        &self,
        new: NewSession<U>,
        bytes: u64,
    ) -> Result<Created, Rejected<U>> {
        let NewSession {
            external_id,
            key,
            tenant,
            weight,
            shield_handshake,
            upstream,
        } = new;
        let reject = |error: TableError, upstream: U| Err(Rejected { error, upstream });
        let capacity = self.config.weight_capacity.unwrap_or(u64::MAX);
        if u64::from(weight) > capacity {
            return reject(
                TableError::TooLarge {
                    weight: u64::from(weight),
                    capacity,
                },
                upstream,
            );
        }
        let external_id: Option<Arc<str>> = match external_id {
            ExternalId::Given(given) if given.is_empty() => {
                return reject(TableError::EmptyExternalId, upstream)
            }
            ExternalId::Given(given) => Some(Arc::from(given)),
            ExternalId::Generate => Some(Arc::from(generate_external_id())),
            ExternalId::Anonymous => None,
        };
        let room = Room::For(weight);
        let arriving = Some(Arriving { key, weight });
        let mut fx = self.effects();
        let mut proposals = PROPOSALS.take();
        let mut candidates = CANDIDATES.take();
        let mut evicted = 0;
        // Why the host takes over from the policy, once it must.
        let mut host_decides: Option<FallbackReason> = None;
        let mut asked = false;
        let mut reasks = 0;
        let result = loop {
            let mut core = self.core.lock();
            let now = self.clock.now();
            if let Some(name) = external_id.as_deref().filter(|n| core.contains_external(n)) {
                break reject(TableError::DuplicateExternalId(name.to_owned()), upstream);
            }
            let asked_for = core.evict_proposed(&proposals, room, now, &mut fx);
            self.return_unused(&mut core, &mut fx, &proposals, asked_for);
            let (mut valid, mut refused) = (asked_for.evicted, asked_for.refused);
            proposals.clear();
            if !core.fits(weight) && !self.defers_to_host && host_decides.is_none() {
                // Victims the policy chose ahead (its order holds between
                // events): evicted in this same lock round, with no call.
                let needed = core.victims_needed(weight);
                core.hand_over_then_ready(arriving, needed, &mut proposals, &mut fx);
                if !proposals.is_empty() {
                    let ready = core.evict_proposed(&proposals, room, now, &mut fx);
                    self.return_unused(&mut core, &mut fx, &proposals, ready);
                    valid += ready.evicted;
                    refused += ready.refused;
                    proposals.clear();
                }
            }
            evicted += valid;
            if !core.fits(weight) {
                if !core.reclaimable(weight) {
                    self.metrics.inc(|m| &m.rejected_capacity);
                    let error = TableError::Capacity {
                        live: core.live(),
                        max_sessions: core.max_sessions(),
                        pinned: core.pinned(),
                    };
                    break reject(error, upstream);
                }
                if asked && valid == 0 && host_decides.is_none() {
                    // A policy told of its refused proposals (pinned) gets a
                    // few more tries before the host takes over.
                    if refused > 0 && reasks < MAX_REASKS && self.policy.learns_from_refusals() {
                        reasks += 1;
                    } else {
                        host_decides = Some(FallbackReason::Short);
                    }
                }
                if !self.defers_to_host && host_decides.is_none() {
                    // Valid victims that did not make room yet (byte mode):
                    // ask again, never more rounds than sessions.
                    let count = core.victims_needed(weight);
                    candidates.clear();
                    core.sample(self.policy.sample_size(), &mut candidates);
                    core.hand_over(&mut fx);
                    drop(core);
                    self.finish(fx.take());
                    asked = true;
                    let request = VictimRequest {
                        count,
                        arriving,
                        candidates: &candidates,
                    };
                    if let Err(why) = self.policy.victims(request, &mut proposals) {
                        host_decides = Some(why.into());
                    }
                    continue;
                }
                if let Some(reason) = host_decides {
                    self.metrics.count_fallback(reason);
                }
                evicted += core.evict_lru(room, 0, !self.defers_to_host, now, &mut fx);
            }
            let insert = Insert {
                external_id: external_id.clone(),
                key,
                tenant,
                weight,
                upstream,
            };
            break match core.insert(insert, now, &mut fx) {
                Ok(id) => {
                    if shield_handshake {
                        core.shield(id);
                    }
                    if FIRST_REQUEST {
                        // A fresh session's limiter holds at least one token
                        // (bursts are non-zero), so this touch is admitted.
                        let _ = core.touch(id, bytes, now, &mut fx);
                        // Just inserted, so live: the pin cannot fail.
                        let _ = core.pin(id);
                    }
                    Ok(Created {
                        id,
                        external_id,
                        evicted,
                    })
                }
                Err((error, upstream)) => reject(error, upstream),
            };
        };
        lend_back(&PROPOSALS, proposals);
        lend_back(&CANDIDATES, candidates);
        self.finish(fx);
        result
    }

    /// Hands the policy back the proposals the table did not need, so that a
    /// policy that chose them ahead keeps them as its next victims. Called
    /// under the table lock, like `ready_victims`: leaf locks only.
    fn return_unused(
        &self,
        core: &mut Core<U>,
        fx: &mut Effects<'_, U>,
        proposals: &[SessionId],
        proposed: Proposed,
    ) {
        if let Some(unused) = proposals.get(proposed.used..).filter(|u| !u.is_empty()) {
            // It must know of the evictions just made before it takes back
            // the rest.
            core.hand_over(fx);
            self.policy.unused_victims(unused);
        }
    }

    /// Looks up a session by its compact id.
    pub fn get(&self, id: SessionId) -> Option<SessionInfo> {
        self.core.lock().info(id)
    }

    /// Resolves an external (MCP) session id.
    pub fn lookup(&self, external_id: &str) -> Result<SessionId, TableError> {
        self.core
            .lock()
            .lookup(external_id)
            .ok_or_else(|| TableError::UnknownExternalId(external_id.to_owned()))
    }

    /// Runs `f` on a session's upstream under the table lock: keep it short and
    /// never block or await in it (clone a handle out instead).
    pub fn with_upstream<R>(
        &self,
        id: SessionId,
        f: impl FnOnce(&U) -> R,
    ) -> Result<R, TableError> {
        let core = self.core.lock();
        let entry = core.entry(id).ok_or(TableError::UnknownSession(id))?;
        Ok(f(entry.upstream()))
    }

    /// Records a request on a session: rate limited, marks it most recently used.
    pub fn touch(&self, id: SessionId, bytes: u64) -> Result<(), TableError> {
        let mut fx = self.effects();
        let result = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.touch(id, bytes, now, &mut fx)
        };
        self.finish(fx);
        result
    }

    /// Starts a request: a [`touch`](Self::touch) plus a pin that keeps the
    /// session from being evicted or expired until
    /// [`end_request`](Self::end_request). Refused when the global in-flight
    /// bound is reached.
    pub fn begin_request(&self, id: SessionId, bytes: u64) -> Result<(), TableError> {
        if let Err(in_flight) = self.in_flight.try_acquire() {
            self.metrics.inc(|m| &m.rejected_overloaded);
            return Err(TableError::Overloaded {
                in_flight,
                max_in_flight: self.in_flight.max(),
            });
        }
        let mut fx = self.effects();
        let result = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.touch(id, bytes, now, &mut fx)
                .and_then(|()| core.pin(id))
        };
        if result.is_err() {
            self.in_flight.release(1);
        }
        self.finish(fx);
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

    /// Ends a request started by [`begin_request`](Self::begin_request). A
    /// session whose removal was deferred leaves the table when its last
    /// request ends.
    pub fn end_request(&self, id: SessionId) -> Result<(), TableError> {
        let mut fx = self.effects();
        let result = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.unpin(id, now, &mut fx)
        };
        if result.is_ok() {
            self.in_flight.release(1);
        }
        self.finish(fx);
        result
    }

    /// `Initializing -> Active` once the MCP handshake completes.
    pub fn activate(&self, id: SessionId) -> Result<(), TableError> {
        self.core.lock().activate(id)
    }

    /// Removes a session now, or when its in-flight requests end.
    /// `cause` is [`RemovalCause::Closed`] for a client's DELETE and
    /// [`RemovalCause::Deleted`] for an operator's.
    pub fn remove(&self, id: SessionId, cause: RemovalCause) -> Result<RemoveOutcome, TableError> {
        let mut fx = self.effects();
        let result = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.remove(id, cause, now, &mut fx)
        };
        self.finish(fx);
        result
    }

    /// A non-pinning attachment that resolves when the session is removed,
    /// whatever the cause: what a long-lived stream holds instead of a pin.
    pub fn attach(&self, id: SessionId) -> Result<Attachment, TableError> {
        let signal = self.core.lock().attach(id)?;
        Ok(Attachment::new(signal, Arc::clone(&self.open_streams)))
    }

    /// Evicts up to `count` unpinned sessions chosen by the policy (the host LRU
    /// order filling any shortfall); returns how many were evicted.
    ///
    /// May call the policy for victims (see the module docs on blocking).
    pub fn evict(&self, count: usize) -> usize {
        let mut proposals = Vec::new();
        let mut candidates = Vec::new();
        let mut host_decides = None;
        let mut fx = self.effects();
        let mut evicted = 0;
        // A policy may answer fewer than asked (a stable-order policy keeps
        // its promise that way): it is asked again for the rest while each
        // answer evicts something, so never more rounds than sessions.
        while !self.defers_to_host && evicted < count {
            let sample = self.policy.sample_size();
            candidates.clear();
            {
                let mut core = self.core.lock();
                core.hand_over(&mut fx);
                if sample > 0 {
                    core.sample(sample, &mut candidates);
                }
            }
            self.finish(fx.take());
            let request = VictimRequest {
                count: count - evicted,
                arriving: None,
                candidates: &candidates,
            };
            proposals.clear();
            if let Err(why) = self.policy.victims(request, &mut proposals) {
                host_decides = Some(FallbackReason::from(why));
                break;
            }
            let mut core = self.core.lock();
            let now = self.clock.now();
            let room = Room::Sessions(count - evicted);
            let proposed = core.evict_proposed(&proposals, room, now, &mut fx);
            self.return_unused(&mut core, &mut fx, &proposals, proposed);
            evicted += proposed.evicted;
            if proposed.evicted == 0 {
                break;
            }
        }
        let rest = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.evict_lru(
                Room::Sessions(count),
                evicted,
                !self.defers_to_host,
                now,
                &mut fx,
            )
        };
        if rest > 0 && !self.defers_to_host {
            self.metrics
                .count_fallback(host_decides.unwrap_or(FallbackReason::Short));
        }
        self.finish(fx);
        evicted + rest
    }

    /// Expires sessions idle past the idle timeout or older than the max age at
    /// `now`. Costs O(k) for k expired sessions (see [`Core::expire`]).
    pub fn cleanup_expired(&self, now: Micros) -> usize {
        let mut fx = self.effects();
        {
            let mut core = self.core.lock();
            core.expire(now, &mut fx);
            // A cleanup round is followed by the policy's tick: it should
            // know of the sessions gone.
            core.hand_over(&mut fx);
        }
        let expired = fx.count;
        self.finish(fx);
        expired
    }

    /// Hands the policy every event the table holds back for it, then has
    /// it deliver what it buffered: for callers that question the policy
    /// directly rather than through the table, which does this itself.
    ///
    /// Calls the policy (see the module docs on blocking).
    pub fn flush_policy(&self) {
        let mut fx = self.effects();
        self.core.lock().hand_over(&mut fx);
        self.finish(fx);
        self.policy.flush();
    }

    /// [`cleanup_expired`](Self::cleanup_expired) at the clock's current time,
    /// then the policy's maintenance tick and quota round.
    ///
    /// Calls the policy (see the module docs on blocking).
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
    /// applies its adjustments, clamped to the configured bounds; a new quota
    /// keeps what the session already spent. Returns how many were applied.
    pub fn adjust_quotas(&self, now: Micros) -> usize {
        if self.config.rate_limit.is_none() {
            return 0;
        }
        let mut fx = self.effects();
        let usage = {
            let mut core = self.core.lock();
            core.hand_over(&mut fx);
            core.take_usage(now)
        };
        self.finish(fx);
        let mut adjustments = Vec::new();
        self.policy.adjust_quotas(&usage, &mut adjustments);
        if adjustments.is_empty() {
            return 0;
        }
        let bounds = self.config.quota_bounds;
        let mut core = self.core.lock();
        let now = self.clock.now();
        adjustments
            .into_iter()
            .filter(|adj| {
                let limit = bounds.clamp(adj.per_second, adj.burst);
                core.set_rate_limit(adj.id, Some(limit), now).is_ok()
            })
            .count()
    }

    /// Replaces a session's rate limit, keeping what it already spent.
    pub fn set_rate_limit(
        &self,
        id: SessionId,
        limit: Option<RateLimit>,
    ) -> Result<(), TableError> {
        let mut core = self.core.lock();
        let now = self.clock.now();
        core.set_rate_limit(id, limit, now)
    }

    /// The current rate limit of a session.
    pub fn rate_limit(&self, id: SessionId) -> Result<Option<RateLimit>, TableError> {
        self.core.lock().rate_limit(id)
    }

    /// Removes every session with `cause`; sessions with requests in flight
    /// leave when their last request ends. Returns how many left now.
    pub fn remove_all(&self, cause: RemovalCause) -> usize {
        let mut fx = self.effects();
        let (removed, _) = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.remove_all(cause, false, now, &mut fx)
        };
        self.finish(fx);
        removed
    }

    /// Closes every session with [`RemovalCause::Shutdown`], those with
    /// requests in flight included (call it after the requests had their
    /// grace period), and waits up to `deadline` for every teardown.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let mut fx = self.effects();
        let (closed, abandoned) = {
            let mut core = self.core.lock();
            let now = self.clock.now();
            core.remove_all(RemovalCause::Shutdown, true, now, &mut fx)
        };
        self.in_flight.release(abandoned);
        self.finish(fx);
        let teardowns_unfinished = match &self.teardown {
            Some(runner) => runner.wait(deadline).await,
            None => 0,
        };
        ShutdownReport {
            closed,
            abandoned_requests: abandoned,
            teardowns_unfinished,
        }
    }

    /// Every live session, least recently used first. With
    /// [`recency_order`](Self::recency_order), the only operations that visit
    /// every session.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        self.core.lock().snapshot()
    }

    /// `f` over every live session and its upstream, least recently used
    /// first, under the table lock: keep `f` short (the admin view copies a
    /// few fields).
    pub fn inspect<R>(&self, f: impl FnMut(SessionInfo, &U) -> R) -> Vec<R> {
        self.core.lock().inspect(f)
    }

    /// Live sessions, least recently used first (used to warm a new policy).
    pub fn recency_order(&self) -> Vec<LiveSession> {
        self.core.lock().recency_order()
    }

    pub fn len(&self) -> usize {
        self.core.lock().live()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Sizes of the internal structures.
    pub fn stats(&self) -> TableStats {
        let mut stats = self.core.lock().stats();
        stats.requests_in_flight = self.in_flight.current();
        stats.open_streams = self.open_streams.load(Ordering::Relaxed);
        stats
    }

    /// Runs after the lock is released: close signals, teardowns, and a
    /// requested policy flush.
    fn finish(&self, fx: Effects<'_, U>) {
        // Checked first: on the hot path there is none, and an emptied
        // iterator still costs its drop (about 5 % of a replayed request).
        if !fx.signals.is_empty() {
            for (signal, cause) in fx.signals {
                signal.fire(cause);
            }
        }
        if !fx.removed.is_empty() {
            match &self.teardown {
                Some(runner) => {
                    for session in fx.removed {
                        runner.run(session, &self.metrics);
                    }
                }
                // Without a teardown the upstream is simply dropped, here,
                // outside the lock.
                None => drop(fx.removed),
            }
        }
        if fx.flush {
            match &self.flusher {
                Some(flusher) => flusher.request(),
                None => self.policy.flush(),
            }
        }
    }

    pub(crate) fn metrics_handle(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

thread_local! {
    /// Buffers `create` borrows for the policy's proposals and the sampled
    /// candidates, so that an eviction allocates nothing. Taken, not
    /// borrowed: a policy that calls back into the table from `victims`
    /// finds them empty and uses fresh ones.
    static PROPOSALS: Cell<Vec<SessionId>> = const { Cell::new(Vec::new()) };
    static CANDIDATES: Cell<Vec<Candidate>> = const { Cell::new(Vec::new()) };
}

/// Largest buffer kept for reuse: one a rare big eviction grew is freed.
const LENT_CAPACITY: usize = 1_024;

fn lend_back<T: 'static>(key: &'static LocalKey<Cell<Vec<T>>>, mut buffer: Vec<T>) {
    if buffer.capacity() <= LENT_CAPACITY {
        buffer.clear();
        key.set(buffer);
    }
}

fn generate_external_id() -> String {
    // `rand::random` draws from the thread-local ChaCha generator seeded by
    // the operating system: unguessable, which a session id must be.
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
        // Fails only when a shutdown closed the session under the request,
        // and the shutdown already released its in-flight slot.
        let _ = self.table.end_request(self.id);
    }
}

pub struct TableBuilder<U> {
    config: TableConfig,
    policy: Arc<dyn EvictionPolicy>,
    clock: Option<Clock>,
    teardown: Option<(Arc<dyn Teardown<U>>, tokio::runtime::Handle)>,
    flush: FlushMode,
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

    /// Where buffered policy events are delivered from (default: inline).
    pub fn flush(mut self, mode: FlushMode) -> Self {
        self.flush = mode;
        self
    }

    /// Builds the table behind an `Arc` and attaches the policy to it, so a
    /// policy that loses its state (a WebAssembly fault) can rebuild it from the
    /// live sessions.
    pub fn build_shared(self) -> Result<Arc<SessionTable<U>>, ConfigError> {
        let table = Arc::new(self.build()?);
        let weak = Arc::downgrade(&table);
        table
            .policy
            .attach_live_sessions(Box::new(move |at_snapshot: &mut dyn FnMut()| {
                let Some(table) = weak.upgrade() else {
                    at_snapshot();
                    return Vec::new();
                };
                let mut core = table.core.lock();
                // Its flush hint is moot: the caller, warming an instance,
                // delivers or drops the buffer itself.
                let mut fx = table.effects();
                core.hand_over(&mut fx);
                at_snapshot();
                core.recency_order()
            }));
        Ok(table)
    }

    pub fn build(self) -> Result<SessionTable<U>, ConfigError> {
        self.config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let teardown = self
            .teardown
            .map(|(t, rt)| TeardownRunner::new(t, rt, self.config.teardown_timeout));
        let flusher = match self.flush {
            FlushMode::Inline => None,
            FlushMode::Thread => Some(
                Flusher::spawn(Arc::clone(&self.policy))
                    .map_err(|e| ConfigError::new("policy flush thread", "spawn", e.to_string()))?,
            ),
        };
        Ok(SessionTable {
            core: Mutex::new(if self.policy.takes_batches() {
                Core::new(&self.config, Arc::clone(&metrics)).holding_events()
            } else {
                Core::new(&self.config, Arc::clone(&metrics))
            }),
            in_flight: InFlight::new(self.config.max_in_flight),
            defers_to_host: self.policy.defers_to_host_order(),
            keep_records: teardown.is_some() || std::mem::needs_drop::<U>(),
            config: self.config,
            policy: self.policy,
            metrics,
            clock: self.clock.unwrap_or_default(),
            teardown,
            flusher,
            open_streams: Arc::default(),
        })
    }
}
