//! One sandboxed policy instance: its Store, its limits, and calls into it.

use governor::{DefaultDirectRateLimiter, Quota};
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::{self, Level, PolicyExports};
use super::engine::{LoadedComponent, PolicyEngine};
use super::error::PolicyError;
use super::metrics::FaultKind;

const MAX_LOG_LINE: usize = 1024;
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
    fn log(&mut self, level: Level, mut message: String) {
        if self.log_gate.check().is_err() {
            self.log_dropped += 1;
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
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

/// A fault with its kind and a readable reason.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub reason: String,
}

pub(crate) struct Instance {
    store: Store<GuestState>,
    bindings: bindings::EvictionPolicy,
    deadline_ticks: u64,
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
    ) -> Result<Self, PolicyError> {
        let label = component
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
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
        let fault = |phase: &'static str, reason: String| PolicyError::Fault {
            policy: label.clone(),
            phase,
            reason,
        };
        let bindings = component
            .pre
            .instantiate(&mut store)
            .map_err(|e| fault("instantiation", format!("{e:#}")))?;
        let mut instance = Self {
            store,
            bindings,
            deadline_ticks,
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
            Err(Fault {
                kind: FaultKind::Error,
                reason,
            }) => {
                return Err(PolicyError::CreateRejected {
                    policy: label,
                    message: reason,
                })
            }
            Err(f) => return Err(fault("create", f.reason)),
        }
        let info = instance
            .call(|g, s| g.call_info(s).map(Ok))
            .map_err(|f| fault("info", f.reason))?;
        if info.batch_size == 0 || info.batch_size > MAX_BATCH_SIZE {
            return Err(PolicyError::BadInfo {
                policy: info.name,
                batch_size: info.batch_size,
            });
        }
        instance.info = PolicyInfo {
            needs: EventNeeds {
                inserted: info.needs.contains(bindings::Needs::INSERTED),
                accessed: info.needs.contains(bindings::Needs::ACCESSED),
                removed: info.needs.contains(bindings::Needs::REMOVED),
            },
            name: info.name,
            version: info.version,
            batch_size: info.batch_size,
        };
        instance.store.data_mut().policy = instance.info.name.clone();
        Ok(instance)
    }

    /// One call into the guest under a fresh epoch deadline. A trap poisons the
    /// Store: the caller must drop this instance after any `Err` other than
    /// [`FaultKind::Error`]... and, by the host's rule, after that one too.
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&PolicyExports, &mut Store<GuestState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, Fault> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().memory.refused = false;
        let exports = self.bindings.shadowcat_policy_policy();
        match f(exports, &mut self.store) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(Fault {
                kind: FaultKind::Error,
                reason: message,
            }),
            Err(error) => {
                let kind = match error.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => FaultKind::Timeout,
                    _ if self.store.data().memory.refused => FaultKind::Memory,
                    _ => FaultKind::Trap,
                };
                Err(Fault {
                    kind,
                    reason: format!("{error:#}"),
                })
            }
        }
    }

    pub fn observe(&mut self, events: &[u64]) -> Result<(), Fault> {
        self.call(|g, s| g.call_observe(s, events))
    }

    /// `input` is packed as the WIT describes: event count, events, candidates.
    pub fn victims(&mut self, count: u32, input: &[u64]) -> Result<Vec<u64>, Fault> {
        self.call(|g, s| g.call_victims(s, count, input))
    }

    pub fn adjust_quotas(&mut self, usage: &[u64]) -> Result<Vec<u64>, Fault> {
        self.call(|g, s| g.call_adjust_quotas(s, usage))
    }

    pub fn maintain(&mut self, now: u64) -> Result<(), Fault> {
        self.call(|g, s| g.call_maintain(s, now))
    }

    pub fn log_lines_dropped(&self) -> u64 {
        self.store.data().log_dropped
    }
}
