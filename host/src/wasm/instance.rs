//! One sandboxed policy instance: its Store, its limits, and calls into it.

use governor::{DefaultDirectRateLimiter, Quota};
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::{v0_1, v0_2, v0_3, InterfaceVersion};
use super::engine::{LoadedComponent, PolicyEngine, PolicyLimits, Prelinked};
use super::error::PolicyError;
use super::guest_text::{self, MAX_DETAIL, MAX_ERROR, MAX_LOG_LINE, MAX_NAME, MAX_VERSION};
use super::metrics::FaultKind;

const MAX_TABLE_ELEMENTS: usize = 100_000;
pub(crate) const MAX_BATCH_SIZE: u32 = 65_536;
/// Most candidates the host samples for one decision.
pub(crate) const MAX_SAMPLE_SIZE: u32 = 1_024;

/// Caps linear memory and remembers that it refused, so the trap that follows
/// (a Rust guest aborts when allocation fails) is reported as a memory fault.
/// A guest may instead carry on without the memory (the SDK's policies stop
/// tracking what they cannot fit): `survived` counts those calls, since their
/// answers are no longer the policy's design and nothing else would say so.
struct MemoryCap {
    max_bytes: usize,
    refused: bool,
    survived: u64,
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
    /// The last error-level line the guest logged in the current call,
    /// bounded and escaped, kept even when the rate limit dropped it: the
    /// SDK logs a panic's message so, just before the trap, and the fault's
    /// reason carries it.
    last_error: Option<String>,
}

/// A guest log line's level, whatever interface version sent it.
#[derive(Debug, Clone, Copy)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl GuestState {
    fn log_line(&mut self, level: LogLevel, message: &str) {
        if let LogLevel::Error = level {
            self.last_error = Some(guest_text::bounded(message, MAX_LOG_LINE));
        }
        if self.log_gate.check().is_err() {
            self.log_dropped += 1;
            return;
        }
        // Escaped so that a `\n` in the message cannot start a line that looks
        // like the host's own, and cut so one call cannot flood the log.
        let message = guest_text::bounded(message, MAX_LOG_LINE);
        let policy = self.policy.as_str();
        match level {
            LogLevel::Error => {
                tracing::error!(target: "shadowcat::policy_log", policy, "{message}")
            }
            LogLevel::Warn => tracing::warn!(target: "shadowcat::policy_log", policy, "{message}"),
            LogLevel::Info => tracing::info!(target: "shadowcat::policy_log", policy, "{message}"),
            LogLevel::Debug => {
                tracing::debug!(target: "shadowcat::policy_log", policy, "{message}")
            }
        }
    }
}

/// Links every version's imports to the one log function. The `types`
/// interfaces have no functions; their traits only mark them linked.
macro_rules! host_imports {
    ($($version:ident),+) => {$(
        impl $version::shadowcat::policy::types::Host for GuestState {}

        impl $version::shadowcat::policy::host::Host for GuestState {
            fn log(&mut self, level: $version::shadowcat::policy::host::Level, message: String) {
                use $version::shadowcat::policy::host::Level;
                let level = match level {
                    Level::Error => LogLevel::Error,
                    Level::Warn => LogLevel::Warn,
                    Level::Info => LogLevel::Info,
                    Level::Debug => LogLevel::Debug,
                };
                self.log_line(level, &message);
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);

/// What a policy is told about its table at `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTable {
    /// Sessions, or bytes in byte mode.
    pub capacity: u64,
    pub byte_mode: bool,
    /// Microseconds; 0: none.
    pub idle_timeout: u64,
    pub max_age: u64,
}

impl PolicyTable {
    pub fn of_config(config: &crate::config::TableConfig) -> Self {
        let micros = |d: Option<std::time::Duration>| {
            d.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        };
        Self {
            capacity: config.weight_capacity.unwrap_or(config.max_sessions as u64),
            byte_mode: config.weight_capacity.is_some(),
            idle_timeout: micros(config.idle_timeout),
            max_age: micros(config.max_age),
        }
    }
}

/// A table of `capacity` sessions with no expiry (what a replay or a check runs).
impl From<u64> for PolicyTable {
    fn from(capacity: u64) -> Self {
        Self {
            capacity,
            byte_mode: false,
            idle_timeout: 0,
            max_age: 0,
        }
    }
}

/// Which events a policy asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventNeeds {
    pub inserted: bool,
    pub accessed: bool,
    pub removed: bool,
    /// Proposals the host refused (0.2).
    pub refused: bool,
}

/// What a policy promises about itself (0.2 on; a 0.1 policy promises nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyTraits {
    /// Its victim order holds between events: the host may prefetch victims.
    pub stable_order: bool,
    /// It chooses among host-sampled candidates.
    pub sampled: bool,
    /// Its victim order holds between events while no arrival is one of its
    /// ghosts and no session leaves unasked (0.3): the host may prefetch
    /// victims and checks those conditions.
    pub ghost_conditional: bool,
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    /// The interface version the component was built against.
    pub interface: InterfaceVersion,
    pub needs: EventNeeds,
    pub traits: PolicyTraits,
    pub batch_size: u32,
    /// Candidates the host samples per decision (0 unless `sampled`).
    pub sample_size: u32,
}

impl PolicyInfo {
    pub fn needs_label(&self) -> String {
        let n = self.needs;
        flags_label(&[
            (n.inserted, "inserted"),
            (n.accessed, "accessed"),
            (n.removed, "removed"),
            (n.refused, "refused"),
        ])
    }

    /// The traits as the WIT names them, `+` between, or `none`.
    pub fn traits_label(&self) -> String {
        let t = self.traits;
        flags_label(&[
            (t.stable_order, "stable-order"),
            (t.ghost_conditional, "ghost-conditional"),
            (t.sampled, "sampled"),
        ])
    }
}

fn flags_label(flags: &[(bool, &str)]) -> String {
    let set: Vec<&str> = flags
        .iter()
        .filter_map(|&(on, name)| on.then_some(name))
        .collect();
    if set.is_empty() {
        "none".into()
    } else {
        set.join("+")
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
                crate::config::readable_duration(limits.call_timeout)
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

/// A policy instance's exports, of whichever interface version it has.
enum Bindings {
    V0_1(v0_1::EvictionPolicy),
    V0_2(v0_2::EvictionPolicy),
    V0_3(v0_3::EvictionPolicy),
}

/// Words per event, per candidate and per usage record in the current
/// interface, and in 0.1.
const EVENT_WORDS: usize = 4;
const CANDIDATE_WORDS: usize = 4;
const USAGE_WORDS: usize = 6;
const LEGACY_EVENT_WORDS: usize = 3;
/// The `victims` input header: event count, arriving key, arriving size.
const VICTIMS_HEADER: usize = 3;

/// A [`PolicyTable`] as a version with the current layouts takes it.
macro_rules! wit_table {
    ($version:ident, $table:expr) => {
        $version::shadowcat::policy::types::Table {
            capacity: $table.capacity,
            byte_mode: $table.byte_mode,
            idle_timeout: $table.idle_timeout,
            max_age: $table.max_age,
        }
    };
}

/// `info` of a version with the current layouts, normalised; `$ghost`, the
/// trait flag of versions that have it (0.3 on).
macro_rules! current_info {
    ($version:ident, $bindings:expr, $store:expr, $interface:expr $(, $ghost:ident)?) => {{
        use $version::shadowcat::policy::types::{Needs, Traits};
        let info = $bindings.shadowcat_policy_policy().call_info($store)?;
        let sampled = info.traits.contains(Traits::SAMPLED);
        PolicyInfo {
            name: info.name,
            version: info.version,
            interface: $interface,
            needs: EventNeeds {
                inserted: info.needs.contains(Needs::INSERTED),
                accessed: info.needs.contains(Needs::ACCESSED),
                removed: info.needs.contains(Needs::REMOVED),
                refused: info.needs.contains(Needs::REFUSED),
            },
            traits: PolicyTraits {
                stable_order: info.traits.contains(Traits::STABLE_ORDER),
                sampled,
                ghost_conditional: false $(|| info.traits.contains(Traits::$ghost))?,
            },
            batch_size: info.batch_size,
            sample_size: if sampled {
                info.sample_size.clamp(1, MAX_SAMPLE_SIZE)
            } else {
                0
            },
        }
    }};
}

pub(crate) struct Instance {
    store: Store<GuestState>,
    bindings: Bindings,
    deadline_ticks: u64,
    limits: PolicyLimits,
    /// Calls made into this instance, for the fault-rate window.
    calls: u64,
    pub info: PolicyInfo,
    /// The host's reusable event buffer, parked here between deliveries.
    pub spare_events: Vec<u64>,
    /// Where calls to a 0.1 policy are repacked into its layouts.
    legacy: Vec<u64>,
}

impl Instance {
    /// Instantiates, creates for `table` with `config`, and reads `info`.
    pub fn start(
        engine: &PolicyEngine,
        component: &LoadedComponent,
        table: PolicyTable,
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
                    survived: 0,
                },
                policy: label.clone(),
                log_gate: DefaultDirectRateLimiter::direct(log_quota),
                log_dropped: 0,
                last_error: None,
            },
        );
        store.limiter(|state| &mut state.memory);
        let deadline_ticks = engine.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let limits = engine.limits().clone();
        let instantiated = match &component.pre {
            Prelinked::V0_1(pre) => pre.instantiate(&mut store).map(Bindings::V0_1),
            Prelinked::V0_2(pre) => pre.instantiate(&mut store).map(Bindings::V0_2),
            Prelinked::V0_3(pre) => pre.instantiate(&mut store).map(Bindings::V0_3),
        };
        let bindings = match instantiated {
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
            legacy: Vec::new(),
            info: PolicyInfo {
                name: label.clone(),
                version: String::new(),
                interface: component.pre.version(),
                needs: EventNeeds {
                    inserted: true,
                    accessed: true,
                    removed: true,
                    refused: false,
                },
                traits: PolicyTraits::default(),
                batch_size: 256,
                sample_size: 0,
            },
        };
        let config: Vec<(String, String)> = config.to_vec();
        let created = instance.call(|store, bindings| match bindings {
            Bindings::V0_1(b) => {
                b.shadowcat_policy_policy()
                    .call_create(store, table.capacity, &config)
            }
            Bindings::V0_2(b) => {
                b.shadowcat_policy_policy()
                    .call_create(store, wit_table!(v0_2, table), &config)
            }
            Bindings::V0_3(b) => {
                b.shadowcat_policy_policy()
                    .call_create(store, wit_table!(v0_3, table), &config)
            }
        });
        match created {
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
        let info = match instance.read_info() {
            Ok(info) => info,
            Err(error) => {
                return Err(StartError::Fault {
                    policy: label,
                    phase: "info",
                    fault: error.into_fault(),
                })
            }
        };
        if info.batch_size == 0 || info.batch_size > MAX_BATCH_SIZE {
            return Err(StartError::BadInfo {
                policy: info.name,
                batch_size: info.batch_size,
            });
        }
        instance.info = info;
        instance.store.data_mut().policy = instance.info.name.clone();
        Ok(instance)
    }

    /// `info`, normalised across versions (strings bounded, sample size capped).
    fn read_info(&mut self) -> Result<PolicyInfo, CallError> {
        let interface = self.info.interface;
        let info = self.call(|store, bindings| {
            Ok(Ok(match bindings {
                Bindings::V0_1(b) => {
                    use v0_1::shadowcat::policy::types::Needs;
                    let info = b.shadowcat_policy_policy().call_info(store)?;
                    PolicyInfo {
                        name: info.name,
                        version: info.version,
                        interface,
                        needs: EventNeeds {
                            inserted: info.needs.contains(Needs::INSERTED),
                            accessed: info.needs.contains(Needs::ACCESSED),
                            removed: info.needs.contains(Needs::REMOVED),
                            refused: false,
                        },
                        traits: PolicyTraits::default(),
                        batch_size: info.batch_size,
                        sample_size: 0,
                    }
                }
                Bindings::V0_2(b) => current_info!(v0_2, b, store, interface),
                Bindings::V0_3(b) => current_info!(v0_3, b, store, interface, GHOST_CONDITIONAL),
            }))
        })?;
        Ok(PolicyInfo {
            name: guest_text::bounded(&info.name, MAX_NAME),
            version: guest_text::bounded(&info.version, MAX_VERSION),
            ..info
        })
    }

    /// One call into the guest under a fresh epoch deadline. After a
    /// [`CallError::Fault`] the Store is poisoned and the caller must drop this
    /// instance; after a [`CallError::Guest`] it is fine to keep using it.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<GuestState>, &Bindings) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().memory.refused = false;
        self.store.data_mut().last_error = None;
        self.calls += 1;
        let result = f(&mut self.store, &self.bindings);
        if result.is_ok() && self.store.data().memory.refused {
            self.survived_refusal();
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(CallError::Guest(guest_text::bounded(&message, MAX_ERROR))),
            Err(error) => {
                let kind = classify(&error, self.store.data().memory.refused);
                let mut fault = Fault::from_error(&error, kind, &self.limits);
                if let (FaultKind::Trap, Some(line)) =
                    (kind, self.store.data_mut().last_error.take())
                {
                    // Already bounded and escaped, as a log line.
                    fault.reason =
                        format!("{}; before it, the policy logged: {line}", fault.reason);
                }
                Err(CallError::Fault(fault))
            }
        }
    }

    /// Calls made since the last time this was asked.
    pub fn take_calls(&mut self) -> u64 {
        std::mem::take(&mut self.calls)
    }

    /// `events` in the current layout (four words each).
    pub fn observe(&mut self, events: &[u64]) -> Result<(), CallError> {
        if let Bindings::V0_1(_) = self.bindings {
            let mut legacy = std::mem::take(&mut self.legacy);
            legacy.clear();
            legacy_events(events, &mut legacy);
            let result = self.call(|store, bindings| match bindings {
                Bindings::V0_1(b) => b.shadowcat_policy_policy().call_observe(store, &legacy),
                Bindings::V0_2(_) | Bindings::V0_3(_) => unreachable!("matched V0_1 above"),
            });
            self.legacy = legacy;
            return result;
        }
        self.call(|store, bindings| match bindings {
            Bindings::V0_2(b) => b.shadowcat_policy_policy().call_observe(store, events),
            Bindings::V0_3(b) => b.shadowcat_policy_policy().call_observe(store, events),
            Bindings::V0_1(_) => unreachable!("handled above"),
        })
    }

    /// `input` packed as the current interface describes: the header (event
    /// count, arriving key, arriving size), events, candidates.
    pub fn victims(&mut self, count: u32, input: &[u64]) -> Result<Vec<u64>, CallError> {
        if let Bindings::V0_1(_) = self.bindings {
            let mut legacy = std::mem::take(&mut self.legacy);
            legacy.clear();
            legacy_victims_input(input, &mut legacy);
            let result = self.call(|store, bindings| match bindings {
                Bindings::V0_1(b) => b
                    .shadowcat_policy_policy()
                    .call_victims(store, count, &legacy),
                Bindings::V0_2(_) | Bindings::V0_3(_) => unreachable!("matched V0_1 above"),
            });
            self.legacy = legacy;
            return result;
        }
        self.call(|store, bindings| match bindings {
            Bindings::V0_2(b) => b
                .shadowcat_policy_policy()
                .call_victims(store, count, input),
            Bindings::V0_3(b) => b
                .shadowcat_policy_policy()
                .call_victims(store, count, input),
            Bindings::V0_1(_) => unreachable!("handled above"),
        })
    }

    /// `usage` in the current layout (six words per session).
    pub fn adjust_quotas(&mut self, usage: &[u64]) -> Result<Vec<u64>, CallError> {
        if let Bindings::V0_1(_) = self.bindings {
            let legacy: Vec<u64> = usage
                .chunks_exact(USAGE_WORDS)
                .flat_map(|u| [u[0], u[1], u[2], u[3]])
                .collect();
            return self.call(|store, bindings| match bindings {
                Bindings::V0_1(b) => b
                    .shadowcat_policy_policy()
                    .call_adjust_quotas(store, &legacy),
                Bindings::V0_2(_) | Bindings::V0_3(_) => unreachable!("matched V0_1 above"),
            });
        }
        self.call(|store, bindings| match bindings {
            Bindings::V0_2(b) => b.shadowcat_policy_policy().call_adjust_quotas(store, usage),
            Bindings::V0_3(b) => b.shadowcat_policy_policy().call_adjust_quotas(store, usage),
            Bindings::V0_1(_) => unreachable!("handled above"),
        })
    }

    pub fn maintain(&mut self, now: u64) -> Result<(), CallError> {
        self.call(|store, bindings| match bindings {
            Bindings::V0_1(b) => b.shadowcat_policy_policy().call_maintain(store, now),
            Bindings::V0_2(b) => b.shadowcat_policy_policy().call_maintain(store, now),
            Bindings::V0_3(b) => b.shadowcat_policy_policy().call_maintain(store, now),
        })
    }

    /// Log lines dropped since the last time this was asked.
    pub fn take_log_lines_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.store.data_mut().log_dropped)
    }

    /// Calls, since the last time this was asked, that were refused memory
    /// and returned anyway.
    pub fn take_memory_refusals(&mut self) -> u64 {
        // Read first: this runs after every call, and is almost always 0.
        if self.store.data().memory.survived == 0 {
            return 0;
        }
        std::mem::take(&mut self.store.data_mut().memory.survived)
    }

    #[cold]
    fn survived_refusal(&mut self) {
        self.store.data_mut().memory.survived += 1;
    }
}

/// Current events as 0.1 has them: three words, no key or tenant, no
/// `refused` kind, and causes it predates mapped to the nearest it has.
fn legacy_events(events: &[u64], out: &mut Vec<u64>) {
    for event in events.chunks_exact(EVENT_WORDS) {
        let kind = event[0] & 0xff;
        if kind == 3 {
            continue;
        }
        let cause = match (event[0] >> 8) & 0xff {
            5 => 4, // shutdown: deleted
            6 => 3, // upstream failed: closed
            other => other,
        };
        let size = event[0] >> 32;
        out.extend_from_slice(&[kind | (cause << 8) | (size << 32), event[1], event[2]]);
    }
}

/// A current `victims` input as 0.1 has it: the event count, three-word
/// events, three-word candidates (id, last access, requests).
fn legacy_victims_input(input: &[u64], out: &mut Vec<u64>) {
    let events = input.first().copied().unwrap_or(0) as usize;
    let body = input.get(VICTIMS_HEADER..).unwrap_or_default();
    let (events, candidates) = body.split_at((events * EVENT_WORDS).min(body.len()));
    out.push(0);
    legacy_events(events, out);
    out[0] = ((out.len() - 1) / LEGACY_EVENT_WORDS) as u64;
    for candidate in candidates.chunks_exact(CANDIDATE_WORDS) {
        out.extend_from_slice(&candidate[..3]);
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
