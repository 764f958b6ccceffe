//! Tearing down the upstream of a removed session, outside every lock.
//!
//! Closing a stdio server or sending an HTTP DELETE can be slow, can hang and can
//! panic. The table therefore never runs a teardown itself: it removes the entry
//! under its lock, releases the lock, and hands the owned entry to a
//! [`TeardownRunner`], which runs it as a tokio task under a timeout. A teardown
//! that panics or times out is counted; nothing it does can block the table.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::metrics::Metrics;
use super::RemovedSession;

pub type TeardownFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Releases whatever a session held upstream. Implemented by the proxy.
pub trait Teardown<U>: Send + Sync + 'static {
    fn teardown(&self, session: RemovedSession<U>) -> TeardownFuture;
}

impl<U, F, Fut> Teardown<U> for F
where
    F: Fn(RemovedSession<U>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn teardown(&self, session: RemovedSession<U>) -> TeardownFuture {
        Box::pin(self(session))
    }
}

pub(crate) struct TeardownRunner<U> {
    teardown: Arc<dyn Teardown<U>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// Every teardown in progress, so a shutdown can wait for them all.
    running: TaskTracker,
}

impl<U: Send + 'static> TeardownRunner<U> {
    pub fn new(
        teardown: Arc<dyn Teardown<U>>,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        Self {
            teardown,
            runtime,
            timeout,
            running: TaskTracker::new(),
        }
    }

    /// Waits up to `deadline` for every teardown started so far; returns how
    /// many were still running when it passed.
    pub async fn wait(&self, deadline: Duration) -> usize {
        self.running.close();
        let finished = tokio::time::timeout(deadline, self.running.wait()).await;
        self.running.reopen();
        if finished.is_ok() {
            0
        } else {
            self.running.len()
        }
    }

    pub fn run(&self, session: RemovedSession<U>, metrics: &Arc<Metrics>) {
        let session_id = session.info.external_id.clone();
        let teardown = Arc::clone(&self.teardown);
        // Building the future runs plugin code too, so it belongs inside the task
        // where a panic is contained.
        let work = self.runtime.spawn(async move {
            teardown.teardown(session).await;
        });
        let timeout = self.timeout;
        let metrics = Arc::clone(metrics);
        self.running.spawn_on(
            async move {
                let abort = work.abort_handle();
                let failure = match tokio::time::timeout(timeout, work).await {
                    Ok(Ok(())) => None,
                    Ok(Err(join)) if join.is_panic() => Some("panicked"),
                    Ok(Err(_)) => Some("was cancelled"),
                    Err(_) => {
                        abort.abort();
                        Some("timed out")
                    }
                };
                if let Some(what) = failure {
                    metrics.teardown_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        session = session_id.as_deref().unwrap_or("-"),
                        ?timeout,
                        "upstream teardown {what}"
                    );
                }
            },
            &self.runtime,
        );
    }
}
