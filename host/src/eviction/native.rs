//! Built-in native policies.

use hashlink::LinkedHashSet;
use parking_lot::Mutex;

use super::{EvictionPolicy, FlushHint, PolicyEvent, Unavailable, VictimRequest};
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

    fn victims(
        &self,
        _request: VictimRequest,
        _out: &mut Vec<SessionId>,
    ) -> Result<(), Unavailable> {
        Ok(())
    }

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
            PolicyEvent::Accessed { .. } | PolicyEvent::Refused { .. } => {}
        }
        FlushHint::Idle
    }

    fn victims(
        &self,
        request: VictimRequest<'_>,
        out: &mut Vec<SessionId>,
    ) -> Result<(), Unavailable> {
        out.extend(self.order.lock().iter().take(request.count).copied());
        Ok(())
    }
}
