//! A WebAssembly policy as the session table sees it: batching, validation,
//! fallback, recovery with backoff, quarantine and hot reload.
//!
//! # Why the instance is checked out rather than locked
//!
//! A Store cannot be used from two threads at once, and no lock may be held
//! across a call into WebAssembly. So the instance lives in a slot that a caller
//! *takes* (the slot then reads "checked out"), calls without any lock held,
//! and puts back. A concurrent caller waits on a condition variable (holding
//! nothing) at most one call timeout, then serves its decision from the host's
//! LRU order instead. Events are drained from the buffer only by the holder of
//! the instance, so they reach the guest in table order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

use super::engine::{LoadedComponent, PolicyEngine};
use super::error::PolicyError;
use super::instance::{EventNeeds, Fault, Instance, PolicyInfo};
use super::metrics::{PolicyMetrics, PolicyMetricsSnapshot};
use crate::eviction::{
    EvictionPolicy, FlushHint, LiveSessions, PolicyEvent, QuotaAdjustment, QuotaUsage,
    RemovalCause, Unavailable, VictimRequest,
};
use crate::session::{Micros, SessionId};

/// Largest slice of events handed to one `observe` call, bounding guest memory.
const MAX_EVENTS_PER_CALL: usize = 65_536;
const WORDS_PER_EVENT: usize = 3;
const NEED_INSERTED: u8 = 1;
const NEED_ACCESSED: u8 = 2;
const NEED_REMOVED: u8 = 4;

enum Slot {
    Ready(Box<Instance>),
    CheckedOut,
    Faulted { retry_at: Instant },
    Quarantined,
}

struct Runtime {
    slot: Slot,
    component: LoadedComponent,
    info: PolicyInfo,
    consecutive_faults: u32,
}

/// The 0.1 interface's code for a removal cause; causes it predates map to
/// the nearest one it has.
fn cause_code_0_1(cause: RemovalCause) -> u64 {
    match cause {
        RemovalCause::Shutdown => RemovalCause::Deleted as u64,
        RemovalCause::UpstreamFailed => RemovalCause::Closed as u64,
        other => other as u64,
    }
}

/// Packs an event as the WIT's three words; `false` for events the 0.1
/// interface has no word for.
fn pack(event: PolicyEvent, out: &mut Vec<u64>) -> bool {
    let (kind, cause, weight, id, time) = match event {
        PolicyEvent::Inserted {
            id, time, weight, ..
        } => (0u64, 0u64, weight, id, time),
        PolicyEvent::Accessed { id, time, weight } => (1, 0, weight, id, time),
        PolicyEvent::Removed { id, time, cause } => (2, cause_code_0_1(cause), 0, id, time),
        PolicyEvent::Refused { .. } => return false,
    };
    out.extend_from_slice(&[
        kind | (cause << 8) | (u64::from(weight) << 32),
        id.to_bits(),
        time,
    ]);
    true
}

fn needs_bits(needs: EventNeeds) -> u8 {
    (if needs.inserted { NEED_INSERTED } else { 0 })
        | (if needs.accessed { NEED_ACCESSED } else { 0 })
        | (if needs.removed { NEED_REMOVED } else { 0 })
}

pub struct WasmPolicy {
    engine: Arc<PolicyEngine>,
    name: String,
    capacity: u64,
    config: Vec<(String, String)>,
    runtime: Mutex<Runtime>,
    returned: Condvar,
    /// Packed events waiting for the next `observe`; a leaf lock.
    buffer: Mutex<Vec<u64>>,
    needs: AtomicU8,
    batch_words: AtomicUsize,
    quarantined: AtomicBool,
    /// No live instance (faulted or quarantined): events are not buffered.
    faulted: AtomicBool,
    live_sessions: OnceLock<LiveSessions>,
    metrics: PolicyMetrics,
}

impl WasmPolicy {
    /// Loads, validates, instantiates and creates a policy for a table of
    /// `capacity` sessions.
    pub fn load(
        engine: Arc<PolicyEngine>,
        path: &Path,
        capacity: u64,
        config: Vec<(String, String)>,
    ) -> Result<Arc<Self>, PolicyError> {
        let component = engine.load(path)?;
        let instance = Instance::start(&engine, &component, capacity, &config)?;
        let info = instance.info.clone();
        Ok(Arc::new(Self {
            name: info.name.clone(),
            needs: AtomicU8::new(needs_bits(info.needs)),
            batch_words: AtomicUsize::new(info.batch_size as usize * WORDS_PER_EVENT),
            runtime: Mutex::new(Runtime {
                slot: Slot::Ready(Box::new(instance)),
                component,
                info,
                consecutive_faults: 0,
            }),
            engine,
            capacity,
            config,
            returned: Condvar::new(),
            buffer: Mutex::new(Vec::new()),
            quarantined: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
            live_sessions: OnceLock::new(),
            metrics: PolicyMetrics::default(),
        }))
    }

    /// Where a fresh instance gets the live sessions to warm up from (after a
    /// fault or a hot reload). Without it, a new instance starts empty and the
    /// host fallback covers what it does not know.
    pub fn set_live_sessions(&self, source: LiveSessions) {
        let _ = self.live_sessions.set(source);
    }

    pub fn info(&self) -> PolicyInfo {
        self.runtime.lock().info.clone()
    }

    pub fn path(&self) -> PathBuf {
        self.runtime.lock().component.path.clone()
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> PolicyMetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Events buffered for the next delivery.
    pub fn pending_events(&self) -> usize {
        self.buffer.lock().len() / WORDS_PER_EVENT
    }

    /// Takes the instance, waiting (when `wait`) at most one call timeout for
    /// another caller to return it; recreates it after a fault once the backoff
    /// has passed.
    fn checkout(&self, wait: bool) -> Result<Box<Instance>, Unavailable> {
        let mut wait_until: Option<Instant> = None;
        let mut rt = self.runtime.lock();
        loop {
            match &rt.slot {
                Slot::Ready(_) => {
                    let Slot::Ready(instance) = std::mem::replace(&mut rt.slot, Slot::CheckedOut)
                    else {
                        unreachable!("matched Ready above");
                    };
                    return Ok(instance);
                }
                Slot::CheckedOut if !wait => return Err(Unavailable::Busy),
                Slot::CheckedOut => {
                    let until = *wait_until
                        .get_or_insert_with(|| Instant::now() + self.engine.limits().call_timeout);
                    if self.returned.wait_until(&mut rt, until).timed_out() {
                        return Err(Unavailable::Busy);
                    }
                }
                Slot::Faulted { retry_at } if Instant::now() >= *retry_at => {
                    rt.slot = Slot::CheckedOut;
                    let component = rt.component.clone();
                    drop(rt);
                    return self
                        .reinstantiate(&component)
                        .ok_or(Unavailable::Recovering);
                }
                Slot::Faulted { .. } | Slot::Quarantined => return Err(Unavailable::Recovering),
            }
        }
    }

    fn checkin(&self, instance: Box<Instance>) {
        let mut rt = self.runtime.lock();
        rt.consecutive_faults = 0;
        rt.slot = Slot::Ready(instance);
        drop(rt);
        self.returned.notify_one();
    }

    /// Drops the (poisoned) instance and schedules a retry, or quarantines.
    fn fault(&self, phase: &'static str, fault: Fault) {
        self.faulted.store(true, Ordering::Relaxed);
        self.buffer.lock().clear();
        self.metrics.count_fault(fault.kind);
        let mut rt = self.runtime.lock();
        rt.consecutive_faults += 1;
        let faults = rt.consecutive_faults;
        let limits = self.engine.limits();
        if faults >= limits.max_consecutive_faults {
            rt.slot = Slot::Quarantined;
            self.quarantined.store(true, Ordering::Release);
            self.metrics.quarantines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                policy = %self.name, faults, kind = fault.kind.as_str(), reason = %fault.reason,
                "policy quarantined after {faults} consecutive faults; evictions follow the host LRU order"
            );
        } else {
            let backoff = limits
                .backoff_base
                .saturating_mul(1u32 << (faults - 1).min(20))
                .min(limits.backoff_max);
            rt.slot = Slot::Faulted {
                retry_at: Instant::now() + backoff,
            };
            tracing::warn!(
                policy = %self.name, phase, kind = fault.kind.as_str(), reason = %fault.reason, ?backoff,
                "policy fault; serving decisions from the host LRU until it is recreated"
            );
        }
        drop(rt);
        self.returned.notify_all();
    }

    /// A fresh Store and instance after a fault, warmed with the live sessions.
    fn reinstantiate(&self, component: &LoadedComponent) -> Option<Box<Instance>> {
        // Accept events again before the snapshot below, so none falls between
        // the two; the dead instance's pending events are covered by it.
        self.faulted.store(false, Ordering::Relaxed);
        self.buffer.lock().clear();
        let started = Instant::now();
        let result = Instance::start(&self.engine, component, self.capacity, &self.config)
            .map_err(|e| Fault {
                kind: super::metrics::FaultKind::Trap,
                reason: e.to_string(),
            })
            .and_then(|mut instance| {
                self.warm(&mut instance)?;
                Ok(instance)
            });
        match result {
            Ok(instance) => {
                self.metrics
                    .reinstantiations
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(policy = %self.name, elapsed = ?started.elapsed(), "policy instance recreated");
                Some(Box::new(instance))
            }
            Err(fault) => {
                self.fault("re-instantiation", fault);
                None
            }
        }
    }

    /// Replays the live sessions, least recent first, so the new instance knows
    /// every session the table holds.
    fn warm(&self, instance: &mut Instance) -> Result<(), Fault> {
        let Some(source) = self.live_sessions.get() else {
            return Ok(());
        };
        let live = source();
        let mut words = Vec::with_capacity(live.len().min(MAX_EVENTS_PER_CALL) * WORDS_PER_EVENT);
        for chunk in live.chunks(MAX_EVENTS_PER_CALL) {
            words.clear();
            for session in chunk {
                pack(
                    PolicyEvent::Inserted {
                        id: session.id,
                        time: session.last_access,
                        weight: session.weight,
                        key: session.key,
                        tenant: session.tenant,
                    },
                    &mut words,
                );
            }
            instance.observe(&words)?;
        }
        Ok(())
    }

    /// The packed input of `victims`: the event count, then the buffered events
    /// (no candidates). Rides on the victims call itself, saving an `observe`
    /// call and its allocations per decision; an oversized backlog goes through
    /// `observe` first.
    fn victims_input(&self, instance: &mut Instance) -> Result<Vec<u64>, Fault> {
        if self.buffer.lock().len() > MAX_EVENTS_PER_CALL * WORDS_PER_EVENT {
            self.deliver(instance)?;
        }
        let mut input = std::mem::take(&mut instance.spare_events);
        input.clear();
        input.push(0);
        {
            let mut buffer = self.buffer.lock();
            input.extend_from_slice(&buffer);
            buffer.clear();
        }
        let events = (input.len() - 1) / WORDS_PER_EVENT;
        input[0] = events as u64;
        self.metrics
            .events_delivered
            .fetch_add(events as u64, Ordering::Relaxed);
        Ok(input)
    }

    fn recycle(&self, instance: &mut Instance, mut words: Vec<u64>) {
        words.clear();
        instance.spare_events = words;
    }

    /// Delivers buffered events to the instance the caller holds.
    fn deliver(&self, instance: &mut Instance) -> Result<(), Fault> {
        // Swap in the instance's spare vector so neither side reallocates in the
        // steady state.
        let mut pending = std::mem::take(&mut instance.spare_events);
        std::mem::swap(&mut pending, &mut *self.buffer.lock());
        let mut result = Ok(());
        for chunk in pending.chunks(MAX_EVENTS_PER_CALL * WORDS_PER_EVENT) {
            result = self.timed(|| instance.observe(chunk));
            if result.is_err() {
                break;
            }
            self.metrics
                .events_delivered
                .fetch_add((chunk.len() / WORDS_PER_EVENT) as u64, Ordering::Relaxed);
        }
        pending.clear();
        instance.spare_events = pending;
        result
    }

    fn timed<R>(&self, call: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let result = call();
        self.metrics.latency.record(start.elapsed());
        self.metrics.calls.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Runs `work` on the checked-out instance; on any fault the instance is
    /// dropped and `None` returned (the caller falls back). `work` delivers
    /// buffered events itself ([`Self::deliver`] or inside `victims`' input).
    fn with_instance<R>(
        &self,
        phase: &'static str,
        wait: bool,
        work: impl FnOnce(&Self, &mut Instance) -> Result<R, Fault>,
    ) -> Result<R, Unavailable> {
        if self.is_quarantined() {
            return Err(Unavailable::Recovering);
        }
        let mut instance = self.checkout(wait)?;
        match work(self, &mut instance) {
            Ok(value) => {
                self.checkin(instance);
                Ok(value)
            }
            Err(fault) => {
                drop(instance);
                self.fault(phase, fault);
                Err(Unavailable::Faulted)
            }
        }
    }

    /// Loads the policy file again (it was replaced, or SIGHUP arrived).
    pub fn reload(&self) -> Result<(), PolicyError> {
        let path = self.path();
        self.reload_from(&path)
    }

    /// Loads, validates and warms a new policy off the request path, then swaps
    /// it in. On any error the running policy stays, and the reason is returned,
    /// logged and counted.
    pub fn reload_from(&self, path: &Path) -> Result<(), PolicyError> {
        let result = self.try_reload(path);
        match &result {
            Ok(()) => {
                self.metrics.hot_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(policy = %self.name, path = %path.display(), "policy reloaded");
            }
            Err(e) => {
                self.metrics
                    .hot_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(policy = %self.name, path = %path.display(), "policy reload failed, keeping the running policy: {e}");
            }
        }
        result
    }

    fn try_reload(&self, path: &Path) -> Result<(), PolicyError> {
        let component = self.engine.load(path)?;
        let mut fresh = Instance::start(&self.engine, &component, self.capacity, &self.config)?;
        // Take the running instance out (waiting for a caller to return it) so
        // no decision runs during the swap.
        let old = {
            let mut rt = self.runtime.lock();
            while matches!(rt.slot, Slot::CheckedOut) {
                self.returned.wait(&mut rt);
            }
            std::mem::replace(&mut rt.slot, Slot::CheckedOut)
        };
        // The old instance takes the events it is owed; the new one learns the
        // same state from the snapshot (guests treat repeats idempotently).
        let mut old = old;
        if let Slot::Ready(instance) = &mut old {
            if let Err(fault) = self.deliver(instance) {
                old = Slot::Faulted {
                    retry_at: Instant::now(),
                };
                self.metrics.count_fault(fault.kind);
            }
        }
        // Events must be buffered from before the snapshot the warm-up takes.
        let was_faulted = self.faulted.swap(false, Ordering::AcqRel);
        let warmed = self.warm(&mut fresh);
        let mut rt = self.runtime.lock();
        let result = match warmed {
            Ok(()) => {
                rt.info = fresh.info.clone();
                rt.component = component;
                rt.slot = Slot::Ready(Box::new(fresh));
                rt.consecutive_faults = 0;
                self.needs
                    .store(needs_bits(rt.info.needs), Ordering::Release);
                self.batch_words.store(
                    rt.info.batch_size as usize * WORDS_PER_EVENT,
                    Ordering::Release,
                );
                self.quarantined.store(false, Ordering::Release);
                self.faulted.store(false, Ordering::Release);
                Ok(())
            }
            Err(fault) => {
                rt.slot = old;
                self.faulted.store(was_faulted, Ordering::Release);
                Err(PolicyError::Fault {
                    policy: fresh.info.name.clone(),
                    phase: "warm-up",
                    reason: fault.reason,
                })
            }
        };
        drop(rt);
        self.returned.notify_all();
        result
    }

    /// Watches the policy file and reloads it when it changes (polling its size
    /// and modification time every `interval`). Stops when the policy is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> std::io::Result<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let path = self.path();
        let stamp = |p: &Path| -> Option<(u64, SystemTime)> {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.len(), meta.modified().ok()?))
        };
        let mut last = stamp(&path);
        std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(policy) = weak.upgrade() else { return };
                let now = stamp(&path);
                if now.is_some() && now != last {
                    last = now;
                    let _ = policy.reload_from(&path);
                }
            })
            .map(|_| ())
    }
}

impl WasmPolicy {
    /// Reloads the policy file on every SIGHUP, on the current tokio runtime.
    /// The reload itself (compile, instantiate, warm) runs on a blocking thread,
    /// off the runtime's workers.
    #[cfg(unix)]
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let weak = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(policy) = weak.upgrade() else { return };
                tracing::info!(policy = %policy.name, "SIGHUP: reloading the policy");
                let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
            }
        }))
    }
}

impl EvictionPolicy for WasmPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn record(&self, event: PolicyEvent) -> FlushHint {
        let needs = self.needs.load(Ordering::Relaxed);
        let wanted = match event {
            PolicyEvent::Inserted { .. } => needs & NEED_INSERTED != 0,
            PolicyEvent::Accessed { .. } => needs & NEED_ACCESSED != 0,
            PolicyEvent::Removed { .. } => needs & NEED_REMOVED != 0,
            PolicyEvent::Refused { .. } => false,
        };
        // While faulted or quarantined nothing could take the events, and a
        // recreated instance is rebuilt from the table anyway: buffering them
        // would only grow without bound.
        if !wanted || self.faulted.load(Ordering::Relaxed) {
            return FlushHint::Idle;
        }
        let mut buffer = self.buffer.lock();
        if !pack(event, &mut buffer) {
            return FlushHint::Idle;
        }
        if buffer.len() >= self.batch_words.load(Ordering::Relaxed) {
            FlushHint::FlushSoon
        } else {
            FlushHint::Idle
        }
    }

    fn victims(&self, request: VictimRequest, out: &mut Vec<SessionId>) -> Result<(), Unavailable> {
        let count = request.count;
        let count32 = u32::try_from(count).unwrap_or(u32::MAX);
        let chosen = self.with_instance("victims", true, |me, instance| {
            let input = me.victims_input(instance)?;
            let result = me.timed(|| instance.victims(count32, &input));
            me.recycle(instance, input);
            result
        });
        match chosen {
            Ok(ids) => {
                if ids.len() > count {
                    self.metrics
                        .excess_victims
                        .fetch_add((ids.len() - count) as u64, Ordering::Relaxed);
                }
                out.extend(ids.into_iter().take(count).map(SessionId::from_bits));
                Ok(())
            }
            Err(why) => {
                self.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
        }
    }

    fn flush(&self) {
        if self.buffer.lock().is_empty() {
            return;
        }
        // Never waits: a busy instance's holder delivers the backlog with its
        // own call, and the request path must not queue behind it.
        let _ = self.with_instance("observe", false, |me, instance| me.deliver(instance));
    }

    fn maintain(&self, now: Micros) {
        let _ = self.with_instance("maintain", true, |me, instance| {
            me.deliver(instance)?;
            me.timed(|| instance.maintain(now))?;
            let dropped = instance.log_lines_dropped();
            me.metrics
                .log_lines_dropped
                .store(dropped, Ordering::Relaxed);
            Ok(())
        });
    }

    fn attach_live_sessions(&self, source: LiveSessions) {
        self.set_live_sessions(source);
    }

    fn adjust_quotas(&self, usage: &[QuotaUsage], out: &mut Vec<QuotaAdjustment>) {
        if usage.is_empty() {
            return;
        }
        let packed: Vec<u64> = usage
            .iter()
            .flat_map(|u| [u.id.to_bits(), u.admitted, u.rejected, u.window_ms])
            .collect();
        let Ok(answer) = self.with_instance("adjust-quotas", true, |me, instance| {
            me.deliver(instance)?;
            me.timed(|| instance.adjust_quotas(&packed))
        }) else {
            return;
        };
        // A ragged tail (not three words) is ignored rather than trusted.
        for triple in answer.chunks_exact(3).take(usage.len()) {
            out.push(QuotaAdjustment {
                id: SessionId::from_bits(triple[0]),
                per_second: u32::try_from(triple[1]).unwrap_or(u32::MAX),
                burst: u32::try_from(triple[2]).unwrap_or(u32::MAX),
            });
        }
        self.metrics
            .quota_adjustments
            .fetch_add(out.len() as u64, Ordering::Relaxed);
    }
}

/// Causes as the WIT numbers them (checked here so a reordering of the enum
/// cannot silently change the wire format).
const _: () = {
    assert!(RemovalCause::ExpiredIdle as u8 == 0);
    assert!(RemovalCause::ExpiredAge as u8 == 1);
    assert!(RemovalCause::Evicted as u8 == 2);
    assert!(RemovalCause::Closed as u8 == 3);
    assert!(RemovalCause::Deleted as u8 == 4);
};
