//! Built-in native policies.

use hashlink::LinkedHashSet;
use parking_lot::Mutex;

use super::{EvictionPolicy, FlushHint, PolicyEvent};
use crate::session::SessionId;

/// Least recently used, served straight from the table's own LRU index: it
/// proposes nothing, and the table's fallback order *is* LRU. Zero extra state.
#[derive(Debug, Default)]
pub struct HostLru;

impl EvictionPolicy for HostLru {
    fn name(&self) -> &str {
        "lru"
    }

    fn record(&self, _event: PolicyEvent) -> FlushHint {
        FlushHint::Idle
    }

    fn victims(&self, _count: usize, _out: &mut Vec<SessionId>) {}

    fn defers_to_host_order(&self) -> bool {
        true
    }
}

/// First in, first out: evicts in insertion order, ignoring accesses.
#[derive(Debug, Default)]
pub struct Fifo {
    // A leaf lock: taken under the table lock in `record`, never the other way round.
    order: Mutex<LinkedHashSet<SessionId>>,
}

impl EvictionPolicy for Fifo {
    fn name(&self) -> &str {
        "fifo"
    }

    fn record(&self, event: PolicyEvent) -> FlushHint {
        match event {
            PolicyEvent::Inserted { id, .. } => {
                self.order.lock().insert(id);
            }
            PolicyEvent::Removed { id, .. } => {
                self.order.lock().remove(&id);
            }
            PolicyEvent::Accessed { .. } => {}
        }
        FlushHint::Idle
    }

    fn victims(&self, count: usize, out: &mut Vec<SessionId>) {
        out.extend(self.order.lock().iter().take(count).copied());
    }
}
