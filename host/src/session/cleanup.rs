//! The background cleanup task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::SessionTable;

/// Owns the periodic cleanup task: expiry plus the policy's maintenance tick
/// and quota round ([`SessionTable::run_maintenance`]).
///
/// Each round runs on tokio's blocking pool (it may call into a WebAssembly
/// policy). Dropping the task stops it; [`CleanupTask::shutdown`] stops it and
/// waits. A panic inside one round (a policy's `maintain`, a bug) is logged and
/// counted and the next round runs as scheduled.
pub struct CleanupTask {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
}

impl CleanupTask {
    /// Spawns the task on the current tokio runtime, ticking every
    /// `config().cleanup_interval`.
    pub fn spawn<U: Send + 'static>(table: Arc<SessionTable<U>>) -> Self {
        let interval = table.config().cleanup_interval;
        Self::spawn_every(table, interval)
    }

    pub fn spawn_every<U: Send + 'static>(table: Arc<SessionTable<U>>, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                // A round may call into the policy (WebAssembly), so it runs on
                // the blocking pool, never on a runtime worker.
                let round = {
                    let table = Arc::clone(&table);
                    tokio::task::spawn_blocking(move || table.run_maintenance()).await
                };
                match round {
                    Ok(expired) if expired > 0 => {
                        tracing::debug!(expired, live = table.len(), "cleanup round")
                    }
                    Ok(_) => {}
                    Err(join) if !join.is_panic() => break,
                    Err(join) => {
                        let panic = join.into_panic();
                        table
                            .metrics_handle()
                            .cleanup_panics
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            reason = panic_message(&panic),
                            "cleanup round panicked; the next round runs as scheduled"
                        );
                    }
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the task and waits for a round in progress to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
