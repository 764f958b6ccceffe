//! One wasmtime engine for every policy, with its epoch ticker and artefact cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{v0_1, v0_2, v0_3, InterfaceVersion};
use super::cache::ArtefactCache;
use super::error::PolicyError;
use super::guest_text;
use super::instance::GuestState;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Set to 1 to have the engine write `/tmp/perf-<pid>.map`, naming every
/// compiled policy function for `perf report`.
pub const PERF_MAP_ENV: &str = "SHADOWCAT_PERF_MAP";

fn perf_map_requested() -> bool {
    std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1")
}

/// Per-call sandbox limits and fault handling.
#[derive(Debug, Clone)]
pub struct PolicyLimits {
    /// Longest a single call into a policy may run.
    pub call_timeout: Duration,
    /// Most linear memory a policy instance may have.
    pub memory_bytes: usize,
    /// Consecutive faults after which the policy is quarantined.
    pub max_consecutive_faults: u32,
    /// Calls over which faults are counted for [`Self::max_window_faults`].
    pub fault_window: u32,
    /// Faults within the last [`Self::fault_window`] calls that quarantine the
    /// policy, however they are spread (an intermittent fault never makes a
    /// streak, but still costs an instance and a warm-up every time).
    pub max_window_faults: u32,
    /// First wait before re-instantiating after a fault; doubles per fault.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Victims asked of a `stable-order` or `ghost-conditional` policy per
    /// call at most, handed out one eviction at a time; 1 turns prefetching
    /// off. The depth adapts below it (see `WasmPolicy`'s victims).
    pub prefetch: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(20),
            memory_bytes: 64 << 20,
            max_consecutive_faults: 5,
            fault_window: 200,
            max_window_faults: 10,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(10),
            prefetch: super::policy::PREFETCH,
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The engine, the linker with the host import, the epoch ticker and the on-disk
/// cache of compiled components. Cheap to share: policies hold an `Arc` of it.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: PolicyLimits,
    cache: Option<ArtefactCache>,
    _ticker: Ticker,
}

/// A component pre-linked against the interface version it exports.
#[derive(Clone)]
pub enum Prelinked {
    V0_1(v0_1::EvictionPolicyPre<GuestState>),
    V0_2(v0_2::EvictionPolicyPre<GuestState>),
    V0_3(v0_3::EvictionPolicyPre<GuestState>),
}

impl Prelinked {
    pub fn version(&self) -> InterfaceVersion {
        match self {
            Prelinked::V0_1(_) => InterfaceVersion::V0_1,
            Prelinked::V0_2(_) => InterfaceVersion::V0_2,
            Prelinked::V0_3(_) => InterfaceVersion::V0_3,
        }
    }
}

/// A validated, compiled, pre-linked policy component.
#[derive(Clone)]
pub struct LoadedComponent {
    pub path: PathBuf,
    pub sha256: String,
    pub pre: Prelinked,
    pub size: u64,
    /// Whether the compiled artefact came from the cache.
    pub from_cache: bool,
}

impl PolicyEngine {
    /// An engine whose compiled policies are cached in `cache_dir` (the `wasm`
    /// module docs say what the cache trusts). A directory that fails the
    /// ownership or permission check is not used, with a WARN line saying why.
    pub fn new(limits: PolicyLimits, cache_dir: Option<PathBuf>) -> Result<Arc<Self>, PolicyError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Policies are synchronous; without async support a call costs ~115 ns
        // instead of ~350 ns.
        config.concurrency_support(false);
        if perf_map_requested() {
            // perf cannot name JIT code on its own; the map file lets
            // `perf report` attribute samples to the policy's functions.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // Every version's imports in one linker: their names differ by version.
        v0_1::EvictionPolicy::add_to_linker::<GuestState, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        v0_2::EvictionPolicy::add_to_linker::<GuestState, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        v0_3::EvictionPolicy::add_to_linker::<GuestState, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, stop) = (engine.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("policy-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        let cache = cache_dir.and_then(|dir| match ArtefactCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(refused) => {
                tracing::warn!(
                    "policy cache not used, policies are compiled on every load: {refused}"
                );
                None
            }
        });
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            cache,
            _ticker: Ticker {
                stop,
                thread: Some(thread),
            },
        }))
    }

    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The artefact cache in use, if any (`None` when disabled or refused).
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(ArtefactCache::dir)
    }

    /// Epoch ticks to allow one call: the timeout rounded up, plus the tick
    /// already under way.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let ticks = self
            .limits
            .call_timeout
            .as_micros()
            .div_ceil(EPOCH_TICK.as_micros());
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// The default cache location: `$XDG_CACHE_HOME/shadowcat` or `~/.cache/shadowcat`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|base| base.join("shadowcat").join("policies"))
    }

    /// Reads, validates and compiles (or loads from cache) a policy component.
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, PolicyError> {
        let bytes = std::fs::read(path).map_err(|error| PolicyError::Read {
            path: path.to_owned(),
            error,
        })?;
        self.load_bytes(path, &bytes)
    }

    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<LoadedComponent, PolicyError> {
        check_header(path, bytes)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let sha256 = hex::encode(digest);
        let (component, from_cache) = self.compile_cached(path, bytes, &digest, &sha256)?;
        let version = check_interface(path, &self.engine, &component)?;
        let invalid = |e: wasmtime::Error| PolicyError::Invalid {
            path: path.to_owned(),
            reason: guest_text::bounded(&format!("{e:#}"), guest_text::MAX_DETAIL),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = match version {
            InterfaceVersion::V0_1 => {
                Prelinked::V0_1(v0_1::EvictionPolicyPre::new(pre).map_err(invalid)?)
            }
            InterfaceVersion::V0_2 => {
                Prelinked::V0_2(v0_2::EvictionPolicyPre::new(pre).map_err(invalid)?)
            }
            InterfaceVersion::V0_3 => {
                Prelinked::V0_3(v0_3::EvictionPolicyPre::new(pre).map_err(invalid)?)
            }
        };
        Ok(LoadedComponent {
            path: path.to_owned(),
            sha256,
            pre,
            size: bytes.len() as u64,
            from_cache,
        })
    }

    /// The component's digest and the engine's compatibility hash, which
    /// covers wasmtime's own version as well as every compiler setting.
    fn cache_key(&self, sha256: &str) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{sha256}-{:016x}.cwasm", hasher.finish())
    }

    fn compile_cached(
        &self,
        path: &Path,
        bytes: &[u8],
        digest: &[u8; 32],
        sha256: &str,
    ) -> Result<(Component, bool), PolicyError> {
        let key = self.cache_key(sha256);
        if let Some(cache) = &self.cache {
            match cache.read(&key, digest) {
                Ok(Some(artefact)) => {
                    // SAFETY: the artefact comes from a directory only this user
                    // can write, its digest matches the one recorded when this
                    // engine configuration compiled it from these very component
                    // bytes (see the `cache` module for the trust model), and
                    // wasmtime checks its own header and compatibility hash too.
                    match unsafe { Component::deserialize(&self.engine, &artefact) } {
                        Ok(component) => return Ok((component, true)),
                        Err(e) => {
                            tracing::warn!(key, "ignoring unusable cached policy: {e:#}")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("recompiling policy {}: {e}", path.display()),
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PolicyError::Invalid {
            path: path.to_owned(),
            reason: guest_text::bounded(&format!("{e:#}"), guest_text::MAX_DETAIL),
        })?;
        if let Some(cache) = &self.cache {
            let written = component
                .serialize()
                .map_err(|e| format!("{e:#}"))
                .and_then(|artefact| {
                    cache
                        .write(&key, digest, &artefact)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = written {
                tracing::debug!(key, "policy cache not written: {e}");
            }
        }
        Ok((component, false))
    }
}

/// Tells a core module, a component and something else apart by the header,
/// so the error says which.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), PolicyError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PolicyError::NotWasm {
            path: path.to_owned(),
        });
    }
    // Version 1, layer 0 is a core module; components use layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PolicyError::CoreModule {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The interface version the component exports (the newest when several),
/// and that it imports nothing but that version's host and types.
fn check_interface(
    path: &Path,
    engine: &Engine,
    component: &Component,
) -> Result<InterfaceVersion, PolicyError> {
    let ty = component.component_type();
    // Names come from the component: cut them before they reach an error message.
    let bound = |name: &str| guest_text::bounded(name, guest_text::MAX_ERROR);
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let version = InterfaceVersion::SUPPORTED
        .into_iter()
        .find(|v| exports.iter().any(|e| e == v.export()));
    let Some(version) = version else {
        let prefix = "shadowcat:policy/policy@";
        if let Some(found) = exports.iter().find(|e| e.starts_with(prefix)) {
            return Err(PolicyError::WrongVersion {
                path: path.to_owned(),
                found: bound(found),
            });
        }
        return Err(PolicyError::WrongWorld {
            path: path.to_owned(),
            found: exports.iter().take(16).map(|e| bound(e)).collect(),
        });
    };
    let allowed = version.allowed_imports();
    if let Some((import, _)) = ty.imports(engine).find(|(name, _)| !allowed.contains(name)) {
        return Err(PolicyError::ForbiddenImport {
            path: path.to_owned(),
            import: bound(import),
        });
    }
    Ok(version)
}
