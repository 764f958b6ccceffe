//! Hot reload: a new policy file replaces the running policy without a restart.
//!
//! The new component is loaded, created and warmed off the request path; only
//! the swap itself waits for the instance to be returned. Any failure leaves
//! the running policy in place, so a broken file can never take eviction down.
//! Triggers: a poll of the file's size and modification time, or SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::checkout::Slot;
use super::error::PolicyError;
use super::health::FaultHistory;
use super::instance::Instance;
use super::policy::WasmPolicy;

impl WasmPolicy {
    /// Loads the policy file again (it was replaced, or SIGHUP arrived).
    pub fn reload(&self) -> Result<(), PolicyError> {
        let path = self.path();
        self.reload_from(&path)
    }

    /// Loads, validates and warms a new policy off the request path, then swaps
    /// it in. On any error the running policy stays, and the reason is returned,
    /// logged and counted.
    pub fn reload_from(&self, path: &Path) -> Result<(), PolicyError> {
        let before = self.names.current().to_owned();
        let result = self.try_reload(path);
        match &result {
            Ok(()) => {
                self.metrics.hot_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(policy = %self.names.current(), previous = %before, path = %path.display(), "policy reloaded");
            }
            Err(e) => {
                self.metrics
                    .hot_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(policy = %before, path = %path.display(), "policy reload failed, keeping the running policy: {e}");
            }
        }
        result
    }

    fn try_reload(&self, path: &Path) -> Result<(), PolicyError> {
        let component = self.engine.load(path)?;
        let mut fresh = Instance::start(&self.engine, &component, self.table, &self.config)
            .map_err(|e| e.into_policy_error(self.engine.limits()))?;
        // Take the running instance out (waiting for a caller to return it) so
        // no decision runs during the swap.
        let mut old = {
            let mut rt = self.runtime.lock();
            while matches!(rt.slot, Slot::CheckedOut) {
                self.returned.wait(&mut rt);
            }
            std::mem::replace(&mut rt.slot, Slot::CheckedOut)
        };
        // The old instance takes the events it is owed; the new one learns the
        // same state from the snapshot (guests treat repeats idempotently).
        if let Slot::Ready(instance) = &mut old {
            if let Err(fault) = self.deliver(instance) {
                old = Slot::Faulted {
                    retry_at: Instant::now(),
                };
                self.metrics.count_fault(fault.kind);
            }
        }
        // Events must be buffered from before the snapshot the warm-up takes.
        let was_stopped = self.events.resume();
        // Buffered up to the snapshot: owed to the old instance should this
        // fail, covered by the snapshot for the new one.
        let mut before_snapshot = 0;
        let warmed = self.warm(&mut fresh, &mut || before_snapshot = self.events.words());
        let mut rt = self.runtime.lock();
        let result = match warmed {
            Ok(()) => {
                fresh.take_calls();
                rt.info = fresh.info.clone();
                rt.component = component;
                rt.slot = Slot::Ready(Box::new(fresh));
                self.events.drop_oldest(before_snapshot);
                rt.health = FaultHistory::default();
                self.events.configure(&rt.info);
                self.names.set(&rt.info.name);
                self.quarantined.store(false, Ordering::Release);
                Ok(())
            }
            Err(fault) => {
                rt.slot = old;
                if was_stopped {
                    self.events.stop();
                }
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
        let path: PathBuf = self.path();
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

    /// Reloads the policy file on every SIGHUP, on the current tokio runtime.
    /// The reload itself (compile, instantiate, warm) runs on a blocking thread,
    /// off the runtime's workers. Holds the policy weakly: dropping the last
    /// handle drops the policy, and the task ends at the next signal.
    #[cfg(unix)]
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let weak = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(policy) = weak.upgrade() else { return };
                tracing::info!(policy = %policy.names.current(), "SIGHUP: reloading the policy");
                let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
            }
        }))
    }
}
