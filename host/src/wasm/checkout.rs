//! Taking the policy instance out for a call, and what a failed call costs.
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
//!
//! # Faults and soft failures
//!
//! A *fault* (a trap, the call deadline, the memory cap) poisons the Store: the
//! instance is dropped, the decision falls back to the host's LRU order, and
//! after a backoff a fresh instance is created and warmed with the live
//! sessions. [`super::health`] decides between that and quarantine, from the
//! streak and from the fault rate over a window of calls.
//!
//! A guest's `Err` answer is a *soft failure*: the guest is alive and said it
//! could not answer this call. It costs that call only (a decision falls back
//! for that one decision, an `observe` batch is lost); the instance stays, no
//! backoff starts, and it never counts toward quarantine. It is counted in
//! `guest_errors` and logged like a fault (one WARN line, rate-limited).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::engine::LoadedComponent;
use super::health::{FaultHistory, Verdict};
use super::instance::{CallError, Fault, Instance, PolicyInfo};
use super::policy::{WasmPolicy, EVENTS_PER_CALL, WORDS_PER_EVENT};
use crate::eviction::{packed, PolicyEvent, Unavailable};

pub(super) enum Slot {
    Ready(Box<Instance>),
    CheckedOut,
    Faulted { retry_at: Instant },
    Quarantined,
}

/// The instance slot and what goes with the instance in it.
pub(super) struct Runtime {
    pub slot: Slot,
    pub component: LoadedComponent,
    pub info: PolicyInfo,
    pub health: FaultHistory,
}

impl WasmPolicy {
    /// Takes the instance, waiting (when `wait`) at most one call timeout for
    /// another caller to return it; recreates it after a fault once the backoff
    /// has passed.
    fn checkout(&self, wait: bool) -> Result<Box<Instance>, Unavailable> {
        let mut wait_until: Option<Instant> = None;
        let mut rt = self.runtime.lock();
        loop {
            match &rt.slot {
                Slot::Ready(_) => {
                    if let Slot::Ready(instance) = std::mem::replace(&mut rt.slot, Slot::CheckedOut)
                    {
                        return Ok(instance);
                    }
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

    fn checkin(&self, mut instance: Box<Instance>) {
        let refusals = instance.take_memory_refusals();
        if refusals > 0 {
            self.memory_refused(refusals);
        }
        let mut rt = self.runtime.lock();
        rt.health.succeeded(instance.take_calls());
        rt.slot = Slot::Ready(instance);
        drop(rt);
        self.returned.notify_one();
    }

    /// Runs `work` on the checked-out instance. On a fault the instance is
    /// dropped; on a guest `Err` it is put back. Either way the caller gets
    /// `Err` and falls back for this one answer. `work` delivers buffered
    /// events itself.
    pub(super) fn with_instance<R>(
        &self,
        phase: &'static str,
        wait: bool,
        work: impl FnOnce(&Self, &mut Instance) -> Result<R, CallError>,
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
            Err(CallError::Guest(message)) => {
                self.checkin(instance);
                self.guest_error(phase, &message);
                Err(Unavailable::Faulted)
            }
            Err(CallError::Fault(fault)) => {
                let calls = instance.take_calls();
                drop(instance);
                self.fault(phase, fault, calls);
                Err(Unavailable::Faulted)
            }
        }
    }

    /// Counts and logs calls that were refused memory and answered anyway.
    /// The guest lives on, so this is no fault, but a policy that drops what
    /// it cannot fit decides from part of the table: an operator must hear
    /// of it, or its choices pass for the design's.
    fn memory_refused(&self, calls: u64) {
        let before = self
            .metrics
            .memory_refusals
            .fetch_add(calls, Ordering::Relaxed);
        let total = before + calls;
        let limit_mib = self.engine.limits().memory_bytes >> 20;
        *self.last_problem.lock() = Some(format!(
            "refused memory past the {limit_mib} MiB limit and carried on without it"
        ));
        // Once refused, a policy usually is on every call that grows it: one
        // line at the first, then at each tenfold, says it and how often.
        if before == 0 || total.ilog10() > before.ilog10() {
            tracing::warn!(
                policy = %self.names.current(), limit_mib, calls = total,
                "policy was refused memory past --policy-memory and carried on without it; \
                 it may no longer track every session, so its choices are not its design's: \
                 raise --policy-memory"
            );
        }
    }

    /// Counts and logs (rate-limited) an `Err` answer.
    pub(super) fn guest_error(&self, phase: &'static str, message: &str) {
        self.metrics.guest_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_problem.lock() = Some(format!("{phase} returned an error: {message}"));
        if let Some(suppressed) = self.fault_log.admit() {
            tracing::warn!(
                policy = %self.names.current(), phase, suppressed,
                "policy returned an error: {message}; the host answers this call, the instance stays"
            );
        }
    }

    /// Drops the poisoned instance (already gone) and schedules a retry, or
    /// quarantines. `calls` were made into the instance, the last one faulted.
    pub(super) fn fault(&self, phase: &'static str, fault: Fault, calls: u64) {
        self.events.stop();
        self.metrics.count_fault(fault.kind);
        *self.last_problem.lock() = Some(format!(
            "{phase}: {}: {}",
            fault.kind.as_str(),
            fault.reason
        ));
        let verdict = {
            let mut rt = self.runtime.lock();
            let verdict = rt
                .health
                .faulted(calls.saturating_sub(1), self.engine.limits());
            rt.slot = match verdict {
                Verdict::Quarantine(_) => {
                    self.quarantined.store(true, Ordering::Release);
                    Slot::Quarantined
                }
                Verdict::Retry { backoff } => Slot::Faulted {
                    retry_at: Instant::now() + backoff,
                },
            };
            verdict
        };
        self.returned.notify_all();
        let policy = self.names.current();
        match verdict {
            Verdict::Quarantine(cause) => {
                self.metrics.quarantines.fetch_add(1, Ordering::Relaxed);
                // Once per quarantine, so never rate-limited.
                tracing::error!(
                    %policy, phase, kind = fault.kind.as_str(), reason = %fault.reason,
                    "policy quarantined after {cause}; evictions follow the host LRU order until it is reloaded"
                );
                tracing::debug!(%policy, phase, "policy fault detail: {}", fault.detail);
            }
            Verdict::Retry { backoff } => {
                if let Some(suppressed) = self.fault_log.admit() {
                    tracing::warn!(
                        %policy, phase, kind = fault.kind.as_str(), reason = %fault.reason,
                        ?backoff, suppressed,
                        "policy fault; decisions follow the host LRU until it is recreated"
                    );
                    tracing::debug!(%policy, phase, "policy fault detail: {}", fault.detail);
                }
            }
        }
    }

    /// A fresh Store and instance after a fault, warmed with the live sessions.
    fn reinstantiate(&self, component: &LoadedComponent) -> Option<Box<Instance>> {
        // Accept events again before the snapshot the warm-up takes, so none
        // falls between the two; what is buffered up to the snapshot (the
        // dead instance's pending events among it) is covered by it.
        self.events.resume();
        let started = Instant::now();
        let mut instance = match Instance::start(&self.engine, component, self.table, &self.config)
        {
            Ok(instance) => instance,
            Err(e) => {
                self.fault("re-instantiation", e.into_fault(), 1);
                return None;
            }
        };
        match self.warm(&mut instance, &mut || self.events.clear()) {
            Ok(()) => {
                self.metrics
                    .reinstantiations
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(policy = %self.names.current(), elapsed = ?started.elapsed(), "policy instance recreated");
                Some(Box::new(instance))
            }
            Err(fault) => {
                let calls = instance.take_calls();
                drop(instance);
                self.fault("warm-up", fault, calls);
                None
            }
        }
    }

    /// Replays the live sessions, least recent first, so a new instance knows
    /// every session the table holds. In chunks of [`EVENTS_PER_CALL`], each
    /// call under its own deadline: a big table must not make the recovery
    /// itself time out.
    /// `at_snapshot` runs at the moment of the snapshot, under the table
    /// lock (see [`crate::eviction::LiveSessions`]), or at once when there is no table to
    /// read.
    pub(super) fn warm(
        &self,
        instance: &mut Instance,
        at_snapshot: &mut dyn FnMut(),
    ) -> Result<(), Fault> {
        let Some(source) = self.live_sessions.get() else {
            at_snapshot();
            return Ok(());
        };
        let live = source(at_snapshot);
        let mut words = Vec::with_capacity(live.len().min(EVENTS_PER_CALL) * WORDS_PER_EVENT);
        for chunk in live.chunks(EVENTS_PER_CALL) {
            words.clear();
            for session in chunk {
                words.extend_from_slice(&packed::pack(PolicyEvent::Inserted {
                    id: session.id,
                    time: session.last_access,
                    weight: session.weight,
                    key: session.key,
                    tenant: session.tenant,
                }));
            }
            match self.timed(|| instance.observe(&words)) {
                Ok(()) => {}
                Err(CallError::Guest(message)) => self.guest_error("warm-up", &message),
                Err(CallError::Fault(fault)) => return Err(fault),
            }
        }
        Ok(())
    }
}
