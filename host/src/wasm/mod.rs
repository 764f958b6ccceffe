//! The WebAssembly policy host.
//!
//! Policies are components of the versioned WIT package `shadowcat:policy@0.1.0`
//! (see `wit/`). One [`PolicyEngine`] (wasmtime engine, epoch ticker, artefact
//! cache) serves every policy; each [`WasmPolicy`] owns one Store. The session
//! table calls a `WasmPolicy` through [`crate::eviction::EvictionPolicy`] like
//! any native policy; everything a guest answers is validated by the table.

mod bindings;
mod engine;
mod error;
mod instance;
mod locate;
mod metrics;
mod policy;

pub use crate::eviction::LiveSessions;
pub use engine::{LoadedComponent, PolicyEngine, PolicyLimits, EPOCH_TICK};
pub use error::{PolicyError, HOST_IMPORT, POLICY_EXPORT, TYPES_IMPORT};
pub use instance::{EventNeeds, PolicyInfo};
pub use locate::{
    available_policies, default_policy_dirs, locate, policy_files, PolicySource, BUILTIN_POLICIES,
};
pub use metrics::{FaultKind, PolicyMetricsSnapshot};
pub use policy::WasmPolicy;

/// Parses repeated `--policy-config key=value` arguments.
pub fn parse_config_pairs(pairs: &[String]) -> Result<Vec<(String, String)>, PolicyError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(PolicyError::BadConfigPair(pair.clone())),
        })
        .collect()
}

/// A policy ready for a table: native, or a loaded WebAssembly component.
#[derive(Clone)]
pub enum OpenedPolicy {
    Native(std::sync::Arc<dyn crate::eviction::EvictionPolicy>),
    Wasm(std::sync::Arc<WasmPolicy>),
}

impl OpenedPolicy {
    pub fn eviction(&self) -> std::sync::Arc<dyn crate::eviction::EvictionPolicy> {
        match self {
            OpenedPolicy::Native(p) => p.clone(),
            OpenedPolicy::Wasm(p) => p.clone(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            OpenedPolicy::Native(p) => p.name().to_owned(),
            OpenedPolicy::Wasm(p) => crate::eviction::EvictionPolicy::name(p.as_ref()).to_owned(),
        }
    }
}

/// Opens `spec` (`lru`, `fifo`, `lfu`, `lfu.wasm`, a path) for a table of
/// `capacity`. The engine is only created when a WebAssembly policy is named.
pub fn open_policy(
    spec: &str,
    dirs: &[std::path::PathBuf],
    engine: impl FnOnce() -> Result<std::sync::Arc<PolicyEngine>, PolicyError>,
    capacity: u64,
    config: Vec<(String, String)>,
) -> Result<OpenedPolicy, PolicyError> {
    use crate::eviction::{EvictionPolicy, Fifo, HostLru};
    match locate(spec, dirs)? {
        PolicySource::Builtin(name) => {
            if let Some((key, _)) = config.first() {
                return Err(PolicyError::CreateRejected {
                    policy: name.to_owned(),
                    message: format!(
                        "the built-in `{name}` policy takes no configuration (got `{key}`); \
                         use `{name}.wasm` for the WebAssembly one"
                    ),
                });
            }
            let policy: std::sync::Arc<dyn EvictionPolicy> = match name {
                "fifo" => std::sync::Arc::new(Fifo::default()),
                _ => std::sync::Arc::new(HostLru),
            };
            Ok(OpenedPolicy::Native(policy))
        }
        PolicySource::File(path) => {
            let engine = engine()?;
            Ok(OpenedPolicy::Wasm(WasmPolicy::load(
                engine, &path, capacity, config,
            )?))
        }
    }
}
