//! The WebAssembly policy host.
//!
//! Policies are components of the versioned WIT package `shadowcat:policy@0.1.0`
//! (see `wit/`). One [`PolicyEngine`] (wasmtime engine, epoch ticker, artefact
//! cache) serves every policy; each [`WasmPolicy`] owns one Store. The session
//! table calls a `WasmPolicy` through [`crate::eviction::EvictionPolicy`] like
//! any native policy; everything a guest answers is validated by the table.
//!
//! # Layout
//!
//! - `engine`: the wasmtime engine, sandbox limits, loading and validating a
//!   component; `cache`: the compiled-artefact cache.
//! - `instance`: one Store, calls into it, the guest's log import.
//! - `policy`: the [`WasmPolicy`] front the table calls, and event batching.
//! - `checkout`: taking the instance out for a call, faults, recovery;
//!   `health`: the fault history that decides retry or quarantine.
//! - `reload`: hot reload (file watch, SIGHUP).
//! - `guest_text`: bounding and escaping every string a guest hands over.
//! - [`config`]: which `--policy-config` setting goes to which policy.
//! - [`conformance`]: `shadowcat policy check`.
//!
//! # What a guest can and cannot do
//!
//! A guest computes and nothing else: no WASI, no clock, one rate-limited log
//! import. A call is bounded in time (`--policy-timeout`) and memory
//! (`--policy-memory`). A trap, timeout or memory fault costs the instance (a
//! fresh one is made after a backoff, warmed with the live sessions);
//! repeated faults, in a streak or spread over a window of calls, quarantine
//! the policy. An `Err` answer costs only the call it answers. Every string a
//! guest returns (name, version, errors, log lines) is cut to a bound and has
//! its control characters escaped before it is stored or printed.
//!
//! # What the artefact cache trusts
//!
//! Compiled policies are cached on disk and loaded with wasmtime's `unsafe`
//! deserialisation, which runs the artefact's machine code as is. The cache
//! therefore trusts its directory, and checks that trust: the directory must
//! be owned by the current user and writable by no one else (it is created
//! `0700`; anything else is refused with a WARN line and policies are compiled
//! on every load). Each artefact carries the sha256 of its source component and
//! of its own bytes, recorded when it was compiled and verified before loading,
//! so a corrupted, truncated or swapped artefact is recompiled instead. This
//! detects accidents, not a malicious user who can already write the directory
//! as you. See the `cache` module.

mod bindings;
mod cache;
mod checkout;
pub mod config;
pub mod conformance;
mod engine;
mod error;
mod guest_text;
mod health;
mod instance;
mod locate;
mod metrics;
mod names;
mod policy;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::eviction::LiveSessions;
use crate::eviction::{EvictionPolicy, Fifo, HostLru};
pub use bindings::InterfaceVersion;
pub use config::{ConfigArgError, ConfigPairs, ConfiguredPolicy};
pub use engine::{LoadedComponent, PolicyEngine, PolicyLimits, EPOCH_TICK, PERF_MAP_ENV};
pub use error::{PolicyError, HOST_IMPORT, POLICY_EXPORT, TYPES_IMPORT};
pub use guest_text::{MAX_ERROR, MAX_LOG_LINE, MAX_NAME, MAX_VERSION};
pub use instance::{EventNeeds, PolicyInfo, PolicyTable, PolicyTraits};
pub use locate::{
    available_policies, default_policy_dirs, locate, policy_files, PolicySource, BUILTIN_POLICIES,
};
pub use metrics::{FaultKind, PolicyMetricsSnapshot};
pub use policy::{WasmPolicy, ARRIVALS, ARRIVALS_WHILE_QUEUED, EVENTS_PER_CALL, PREFETCH};

/// A policy ready for a table: native, or a loaded WebAssembly component.
#[derive(Clone)]
pub enum OpenedPolicy {
    Native(Arc<dyn EvictionPolicy>),
    Wasm(Arc<WasmPolicy>),
}

impl OpenedPolicy {
    pub fn eviction(&self) -> Arc<dyn EvictionPolicy> {
        match self {
            OpenedPolicy::Native(p) => p.clone(),
            OpenedPolicy::Wasm(p) => p.clone(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            OpenedPolicy::Native(p) => p.name().to_owned(),
            OpenedPolicy::Wasm(p) => EvictionPolicy::name(p.as_ref()).to_owned(),
        }
    }

    /// Answers SIGHUP for as long as the process runs: a WebAssembly policy
    /// is reloaded from its file; a built-in one has nothing to reload, and
    /// says so. Either way the signal must not end the process, its default:
    /// operators send it routinely (`systemctl reload`, log rotation).
    #[cfg(unix)]
    pub fn reload_on_sighup(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        match self {
            OpenedPolicy::Wasm(p) => p.reload_on_sighup(),
            OpenedPolicy::Native(p) => {
                let mut hangups = signal(SignalKind::hangup())?;
                let name = p.name().to_owned();
                Ok(tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!(
                            policy = %name,
                            "SIGHUP: the eviction policy is built in; nothing to reload"
                        );
                    }
                }))
            }
        }
    }

    /// The WebAssembly policy's own metrics (`None` for a native one).
    pub fn wasm_metrics(&self) -> Option<PolicyMetricsSnapshot> {
        match self {
            OpenedPolicy::Native(_) => None,
            OpenedPolicy::Wasm(p) => Some(p.metrics()),
        }
    }
}

/// A native policy by name, refusing configuration (built-ins take none).
pub fn open_builtin(name: &'static str, config: &ConfigPairs) -> Result<OpenedPolicy, PolicyError> {
    if let Some((key, _)) = config.first() {
        return Err(ConfigArgError::Builtin {
            policy: name.to_owned(),
            key: key.clone(),
        }
        .into());
    }
    let policy: Arc<dyn EvictionPolicy> = match name {
        "fifo" => Arc::new(Fifo::default()),
        _ => Arc::new(HostLru),
    };
    Ok(OpenedPolicy::Native(policy))
}

/// Opens `spec` (`lru`, `fifo`, `lfu`, `lfu.wasm`, a path) for `table` (a
/// plain capacity converts: sessions, no expiry). The engine is only created when a WebAssembly policy is named.
pub fn open_policy(
    spec: &str,
    dirs: &[PathBuf],
    engine: impl FnOnce() -> Result<Arc<PolicyEngine>, PolicyError>,
    table: impl Into<PolicyTable>,
    config: ConfigPairs,
) -> Result<OpenedPolicy, PolicyError> {
    match locate(spec, dirs)? {
        PolicySource::Builtin(name) => open_builtin(name, &config),
        PolicySource::File(path) => {
            let engine = engine()?;
            Ok(OpenedPolicy::Wasm(WasmPolicy::load(
                engine, &path, table, config,
            )?))
        }
    }
}
