//! Delivering buffered policy events off the request path.
//!
//! A table records events under its lock into the policy's buffer; when the
//! buffer fills, somebody must hand it to the policy, which for a WebAssembly
//! policy is a guest call. In a replay the caller does it inline (it is the
//! only thread). In the proxy the caller is a tokio worker, which must never
//! run guest code, so a dedicated thread does it: the worker only sends a
//! wake-up that never blocks.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::eviction::EvictionPolicy;

/// Where buffered policy events are delivered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// On the thread whose table operation filled the buffer (trace replay,
    /// single-threaded tools).
    #[default]
    Inline,
    /// On a dedicated `policy-flush` thread (the proxy: tokio workers never
    /// call into a policy).
    Thread,
}

pub(crate) struct Flusher {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn spawn(policy: Arc<dyn EvictionPolicy>) -> std::io::Result<Self> {
        // One pending wake-up is enough: a flush delivers everything buffered.
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("policy-flush".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    policy.flush();
                }
            })?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Asks for a flush without ever blocking.
    pub fn request(&self) {
        if let Some(wake) = &self.wake {
            match wake.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current flush.
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
