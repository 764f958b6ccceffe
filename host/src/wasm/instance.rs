//! One sandboxed policy instance: its Store, its limits, and calls into it.

use governor::{DefaultDirectRateLimiter, Quota};
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::{self, Level, PolicyExports};
use super::engine::{LoadedComponent, PolicyEngine, PolicyLimits};
use super::error::PolicyError;
use super::guest_text::{self, MAX_DETAIL, MAX_ERROR, MAX_LOG_LINE, MAX_NAME, MAX_VERSION};
use super::metrics::FaultKind;

const MAX_TABLE_ELEMENTS: usize = 100_000;
pub(crate) const MAX_BATCH_SIZE: u32 = 65_536;

/// Caps linear memory and remembers that it refused, so the trap that follows
/// (a Rust guest aborts when allocation fails) is reported as a memory fault.
struct MemoryCap {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Data of a policy's Store: the memory cap and the rate-limited log import.
pub struct GuestState {
    memory: MemoryCap,
    policy: String,
    log_gate: DefaultDirectRateLimiter,
    log_dropped: u64,
}

// The `types` interface has no functions; the trait only marks it linked.
impl bindings::shadowcat::policy::types::Host for GuestState {}

impl bindings::shadowcat::policy::host::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_gate.check().is_err() {
            self.log_dropped += 1;
            return;
        }
        // Escaped so that a `\n` in the message cannot start a line that looks
        // like the host's own, and cut so one call cannot flood the log.
        let message = guest_text::bounded(&message, MAX_LOG_LINE);
        let policy = self.policy.as_str();
        match level {
            Level::Error => tracing::error!(target: "shadowcat::policy_log", policy, "{message}"),
            Level::Warn => tracing::warn!(target: "shadowcat::policy_log", policy, "{message}"),
            Level::Info => tracing::info!(target: "shadowcat::policy_log", policy, "{message}"),
            Level::Debug => tracing::debug!(target: "shadowcat::policy_log", policy, "{message}"),
        }
    }
}

/// Which events a policy asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventNeeds {
    pub inserted: bool,
    pub accessed: bool,
    pub removed: bool,
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub needs: EventNeeds,
    pub batch_size: u32,
}

impl PolicyInfo {
    pub fn needs_label(&self) -> String {
        let n = self.needs;
        let parts: Vec<&str> = [
            (n.inserted, "inserted"),
            (n.accessed, "accessed"),
            (n.removed, "removed"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("+")
        }
    }
}

/// A fault: the instance is poisoned and must be dropped.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// One line for the operator: what happened, and which limit when one did.
    pub reason: String,
    /// Everything wasmtime said, backtrace included (bounded; logged at DEBUG).
    pub detail: String,
}

impl Fault {
    fn from_error(error: &wasmtime::Error, kind: FaultKind, limits: &PolicyLimits) -> Self {
        let reason = match kind {
            FaultKind::Timeout => format!(
                "timed out after {} (the --policy-timeout limit)",
                humantime::format_duration(limits.call_timeout)
            ),
            FaultKind::Memory => format!(
                "ran out of memory: its linear memory may not grow past {} bytes (--policy-memory)",
                limits.memory_bytes
            ),
            FaultKind::Trap => match error.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => error.root_cause().to_string(),
            },
        };
        Self {
            kind,
            reason: guest_text::bounded(&reason, MAX_ERROR),
            detail: guest_text::bounded(&format!("{error:?}"), MAX_DETAIL),
        }
    }
}

/// Why an instance could not be started.
#[derive(Debug)]
pub enum StartError {
    /// `create` answered `Err`: the configuration or capacity was refused.
    Rejected {
        policy: String,
        message: String,
    },
    Fault {
        policy: String,
        phase: &'static str,
        fault: Fault,
    },
    BadInfo {
        policy: String,
        batch_size: u32,
    },
}

impl StartError {
    /// The error for the operator: a timeout names the limit and the option.
    pub fn into_policy_error(self, limits: &PolicyLimits) -> PolicyError {
        match self {
            StartError::Rejected { policy, message } => {
                PolicyError::CreateRejected { policy, message }
            }
            StartError::Fault {
                policy,
                phase,
                fault,
            } if fault.kind == FaultKind::Timeout => PolicyError::Timeout {
                policy,
                phase,
                after: limits.call_timeout,
            },
            StartError::Fault {
                policy,
                phase,
                fault,
            } => PolicyError::Fault {
                policy,
                phase,
                reason: fault.reason,
            },
            StartError::BadInfo { policy, batch_size } => {
                PolicyError::BadInfo { policy, batch_size }
            }
        }
    }

    /// The same as a fault of a running policy (a recreated instance failing
    /// to start costs what any fault costs).
    pub fn into_fault(self) -> Fault {
        match self {
            StartError::Fault { fault, .. } => fault,
            StartError::Rejected { message, .. } => Fault {
                kind: FaultKind::Trap,
                reason: format!("create refused on re-instantiation: {message}"),
                detail: String::new(),
            },
            StartError::BadInfo { batch_size, .. } => Fault {
                kind: FaultKind::Trap,
                reason: format!("invalid batch size {batch_size} on re-instantiation"),
                detail: String::new(),
            },
        }
    }
}

/// How a call into the guest failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The guest answered `Err` (bounded, escaped): a soft failure that costs
    /// this one call; the instance is fine.
    Guest(String),
    /// A trap, a timeout or a memory fault: the instance is poisoned.
    Fault(Fault),
}

impl CallError {
    /// Where an `Err` answer cannot be taken softly (the export has no error
    /// channel, or the instance is not running yet), it counts as a fault.
    pub fn into_fault(self) -> Fault {
        match self {
            CallError::Fault(fault) => fault,
            CallError::Guest(reason) => Fault {
                kind: FaultKind::Trap,
                reason,
                detail: String::new(),
            },
        }
    }
}

pub(crate) struct Instance {
    store: Store<GuestState>,
    bindings: bindings::EvictionPolicy,
    deadline_ticks: u64,
    limits: PolicyLimits,
    /// Calls made into this instance, for the fault-rate window.
    calls: u64,
    pub info: PolicyInfo,
    /// The host's reusable event buffer, parked here between deliveries.
    pub spare_events: Vec<u64>,
}

impl Instance {
    /// Instantiates, creates with `capacity` and `config`, and reads `info`.
    pub fn start(
        engine: &PolicyEngine,
        component: &LoadedComponent,
        capacity: u64,
        config: &[(String, String)],
    ) -> Result<Self, StartError> {
        let label = component
            .path
            .file_stem()
            .map(|s| guest_text::bounded(&s.to_string_lossy(), MAX_NAME))
            .unwrap_or_else(|| "policy".into());
        let log_quota = Quota::per_second(10.try_into().expect("non-zero"))
            .allow_burst(20.try_into().expect("non-zero"));
        let mut store = Store::new(
            engine.engine(),
            GuestState {
                memory: MemoryCap {
                    max_bytes: engine.limits().memory_bytes,
                    refused: false,
                },
                policy: label.clone(),
                log_gate: DefaultDirectRateLimiter::direct(log_quota),
                log_dropped: 0,
            },
        );
        store.limiter(|state| &mut state.memory);
        let deadline_ticks = engine.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let limits = engine.limits().clone();
        let bindings = match component.pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(error) => {
                let kind = classify(&error, store.data().memory.refused);
                return Err(StartError::Fault {
                    policy: label,
                    phase: "instantiation",
                    fault: Fault::from_error(&error, kind, &limits),
                });
            }
        };
        let mut instance = Self {
            store,
            bindings,
            deadline_ticks,
            limits: limits.clone(),
            calls: 0,
            spare_events: Vec::new(),
            info: PolicyInfo {
                name: label.clone(),
                version: String::new(),
                needs: EventNeeds {
                    inserted: true,
                    accessed: true,
                    removed: true,
                },
                batch_size: 256,
            },
        };
        let config: Vec<(String, String)> = config.to_vec();
        match instance.call(|g, s| g.call_create(s, capacity, &config)) {
            Ok(()) => {}
            Err(CallError::Guest(message)) => {
                return Err(StartError::Rejected {
                    policy: label,
                    message,
                })
            }
            Err(CallError::Fault(fault)) => {
                return Err(StartError::Fault {
                    policy: label,
                    phase: "create",
                    fault,
                })
            }
        }
        let info = match instance.call(|g, s| g.call_info(s).map(Ok)) {
            Ok(info) => info,
            Err(error) => {
                return Err(StartError::Fault {
                    policy: label,
                    phase: "info",
                    fault: error.into_fault(),
                })
            }
        };
        let name = guest_text::bounded(&info.name, MAX_NAME);
        if info.batch_size == 0 || info.batch_size > MAX_BATCH_SIZE {
            return Err(StartError::BadInfo {
                policy: name,
                batch_size: info.batch_size,
            });
        }
        instance.info = PolicyInfo {
            needs: EventNeeds {
                inserted: info.needs.contains(bindings::Needs::INSERTED),
                accessed: info.needs.contains(bindings::Needs::ACCESSED),
                removed: info.needs.contains(bindings::Needs::REMOVED),
            },
            name,
            version: guest_text::bounded(&info.version, MAX_VERSION),
            batch_size: info.batch_size,
        };
        instance.store.data_mut().policy = instance.info.name.clone();
        Ok(instance)
    }

    /// One call into the guest under a fresh epoch deadline. After a
    /// [`CallError::Fault`] the Store is poisoned and the caller must drop this
    /// instance; after a [`CallError::Guest`] it is fine to keep using it.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&PolicyExports, &mut Store<GuestState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().memory.refused = false;
        self.calls += 1;
        let exports = self.bindings.shadowcat_policy_policy();
        match f(exports, &mut self.store) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(CallError::Guest(guest_text::bounded(&message, MAX_ERROR))),
            Err(error) => {
                let kind = classify(&error, self.store.data().memory.refused);
                Err(CallError::Fault(Fault::from_error(
                    &error,
                    kind,
                    &self.limits,
                )))
            }
        }
    }

    /// Calls made since the last time this was asked.
    pub fn take_calls(&mut self) -> u64 {
        std::mem::take(&mut self.calls)
    }

    pub fn observe(&mut self, events: &[u64]) -> Result<(), CallError> {
        self.call(|g, s| g.call_observe(s, events))
    }

    /// `input` is packed as the WIT describes: event count, events, candidates.
    pub fn victims(&mut self, count: u32, input: &[u64]) -> Result<Vec<u64>, CallError> {
        self.call(|g, s| g.call_victims(s, count, input))
    }

    pub fn adjust_quotas(&mut self, usage: &[u64]) -> Result<Vec<u64>, CallError> {
        self.call(|g, s| g.call_adjust_quotas(s, usage))
    }

    pub fn maintain(&mut self, now: u64) -> Result<(), CallError> {
        self.call(|g, s| g.call_maintain(s, now))
    }

    pub fn log_lines_dropped(&self) -> u64 {
        self.store.data().log_dropped
    }
}

/// Which fault a wasmtime error is: the epoch deadline, the memory cap (the
/// guest aborts right after a refused `memory.grow`), or any other trap.
fn classify(error: &wasmtime::Error, memory_refused: bool) -> FaultKind {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FaultKind::Timeout,
        _ if memory_refused => FaultKind::Memory,
        _ => FaultKind::Trap,
    }
}
