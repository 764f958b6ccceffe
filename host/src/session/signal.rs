//! Close signals: how a long-lived attachment to a session (a server-to-client
//! SSE stream) learns that the session is gone.
//!
//! A stream must not pin its session: pins are for requests in flight, and a
//! stream that pinned would make its session unevictable and unexpirable for
//! as long as the client keeps the connection open. So a stream *attaches*
//! instead: the table fires the session's signal when it removes the session,
//! whatever the cause (eviction, expiry, DELETE, shutdown), after releasing
//! its lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use crate::eviction::RemovalCause;

/// Fired once, with the removal cause, when its session leaves the table.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    cause: OnceLock<RemovalCause>,
    notify: Notify,
}

impl CloseSignal {
    pub fn fire(&self, cause: RemovalCause) {
        let _ = self.cause.set(cause);
        self.notify.notify_waiters();
    }
}

/// A non-pinning attachment to a session; see the module docs. It counts as
/// an open stream until it is dropped.
#[derive(Debug)]
pub struct Attachment {
    signal: Arc<CloseSignal>,
    open: Arc<AtomicUsize>,
}

impl Attachment {
    pub(crate) fn new(signal: Arc<CloseSignal>, open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self { signal, open }
    }

    /// Resolves when the session is removed, with the cause.
    pub async fn closed(&self) -> RemovalCause {
        loop {
            let notified = self.signal.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a fire in between is not missed.
            notified.as_mut().enable();
            if let Some(&cause) = self.signal.cause.get() {
                return cause;
            }
            notified.await;
        }
    }

    /// The cause, if the session has already been removed.
    pub fn cause(&self) -> Option<RemovalCause> {
        self.signal.cause.get().copied()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}
