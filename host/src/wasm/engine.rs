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

use super::bindings::{self, EvictionPolicyPre};
use super::error::{PolicyError, HOST_IMPORT, POLICY_EXPORT, TYPES_IMPORT};
use super::instance::GuestState;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
const WASMTIME_VERSION: &str = "48.0.8";

/// Per-call sandbox limits and fault handling.
#[derive(Debug, Clone)]
pub struct PolicyLimits {
    /// Longest a single call into a policy may run.
    pub call_timeout: Duration,
    /// Most linear memory a policy instance may have.
    pub memory_bytes: usize,
    /// Consecutive faults after which the policy is quarantined.
    pub max_consecutive_faults: u32,
    /// First wait before re-instantiating after a fault; doubles per fault.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(20),
            memory_bytes: 64 << 20,
            max_consecutive_faults: 5,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(10),
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
    cache_dir: Option<PathBuf>,
    _ticker: Ticker,
}

/// A validated, compiled, pre-linked policy component.
#[derive(Clone)]
pub struct LoadedComponent {
    pub path: PathBuf,
    pub sha256: String,
    pub pre: EvictionPolicyPre<GuestState>,
    pub size: u64,
    /// Whether the compiled artefact came from the cache.
    pub from_cache: bool,
}

impl PolicyEngine {
    pub fn new(limits: PolicyLimits, cache_dir: Option<PathBuf>) -> Result<Arc<Self>, PolicyError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Policies are synchronous; without async support a call costs ~115 ns
        // instead of ~350 ns.
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        bindings::EvictionPolicy::add_to_linker::<GuestState, HasSelf<GuestState>>(
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
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            cache_dir,
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
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<LoadedComponent, PolicyError> {
        check_header(path, bytes)?;
        let sha256 = hex(&Sha256::digest(bytes));
        let (component, from_cache) = self.compile_cached(path, bytes, &sha256)?;
        check_interface(path, &self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PolicyError::Invalid {
                path: path.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let pre = EvictionPolicyPre::new(pre).map_err(|e| PolicyError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        Ok(LoadedComponent {
            path: path.to_owned(),
            sha256,
            pre,
            size: bytes.len() as u64,
            from_cache,
        })
    }

    fn cache_key(&self, sha256: &str) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        WASMTIME_VERSION.hash(&mut hasher);
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{sha256}-{:016x}.cwasm", hasher.finish())
    }

    fn compile_cached(
        &self,
        path: &Path,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, bool), PolicyError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(self.cache_key(sha256)));
        if let Some(cached) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the cache directory holds only artefacts this engine
            // configuration serialised (the file name carries the content hash and
            // the engine's compatibility hash); wasmtime checks the header too.
            match unsafe { Component::deserialize_file(&self.engine, cached) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %cached.display(), "ignoring unusable cached policy: {e:#}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PolicyError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        if let Some(cached) = cached {
            if let Err(e) = write_cache(&cached, &component) {
                tracing::debug!(path = %cached.display(), "policy cache not written: {e}");
            }
        }
        Ok((component, false))
    }
}

fn write_cache(path: &Path, component: &Component) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

fn check_interface(path: &Path, engine: &Engine, component: &Component) -> Result<(), PolicyError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if !exports.iter().any(|e| e == POLICY_EXPORT) {
        let prefix = POLICY_EXPORT.split('@').next().unwrap_or(POLICY_EXPORT);
        if let Some(found) = exports.iter().find(|e| e.starts_with(prefix)) {
            return Err(PolicyError::WrongVersion {
                path: path.to_owned(),
                found: found.clone(),
            });
        }
        return Err(PolicyError::WrongWorld {
            path: path.to_owned(),
            found: exports,
        });
    }
    if let Some((import, _)) = ty
        .imports(engine)
        .find(|(name, _)| *name != HOST_IMPORT && *name != TYPES_IMPORT)
    {
        return Err(PolicyError::ForbiddenImport {
            path: path.to_owned(),
            import: import.to_owned(),
        });
    }
    Ok(())
}
