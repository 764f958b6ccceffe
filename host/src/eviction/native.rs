//! Built-in native policies.

use parking_lot::Mutex;

use super::{
    packed, Arriving, EvictionPolicy, FlushHint, PackedEvent, PolicyEvent, Unavailable,
    VictimRequest,
};
use crate::session::recency::Recency;
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
///
/// The order is threaded through the table's slots like its LRU index
/// ([`Recency`]), so an arrival or a removal is a few array writes: no hashing
/// and no node allocated per session, which an ordered hash set would cost on
/// every miss.
#[derive(Debug, Default)]
pub struct Fifo {
    // A leaf lock: taken under the table lock in `record`, never the other way round.
    order: Mutex<FifoOrder>,
}

#[derive(Debug, Default)]
struct FifoOrder {
    slots: Recency,
    /// The session in each listed slot: a removal names the generation it
    /// removes, and a proposal must name the whole id.
    ids: Vec<SessionId>,
}

impl FifoOrder {
    fn insert(&mut self, id: SessionId) {
        let slot = id.slot();
        let index = slot as usize;
        if self.ids.get(index) == Some(&id) && self.slots.contains(slot) {
            // A repeated insert keeps the session where it arrived.
            return;
        }
        // A slot still listed under an older generation missed its removal.
        self.slots.remove(slot);
        if index >= self.ids.len() {
            self.ids.resize(index + 1, SessionId::from_bits(u64::MAX));
        }
        self.ids[index] = id;
        self.slots.push_back(slot);
    }

    fn remove(&mut self, id: SessionId) {
        if self.ids.get(id.slot() as usize) == Some(&id) {
            self.slots.remove(id.slot());
        }
    }

    fn oldest(&self, count: usize, out: &mut Vec<SessionId>) {
        out.extend(
            self.slots
                .iter()
                .take(count)
                .map(|slot| self.ids[slot as usize]),
        );
    }

    fn record(&mut self, event: &PackedEvent) {
        match packed::kind(event) {
            packed::KIND_INSERTED => self.insert(packed::id(event)),
            packed::KIND_REMOVED => self.remove(packed::id(event)),
            _ => {}
        }
    }
}

impl EvictionPolicy for Fifo {
    fn name(&self) -> &str {
        "fifo"
    }

    fn record(&self, event: PolicyEvent) -> FlushHint {
        match event {
            PolicyEvent::Inserted { id, .. } => self.order.lock().insert(id),
            PolicyEvent::Removed { id, .. } => self.order.lock().remove(id),
            PolicyEvent::Accessed { .. } | PolicyEvent::Refused { .. } => {}
        }
        FlushHint::Idle
    }

    fn takes_batches(&self) -> bool {
        true
    }

    fn record_batch(&self, events: &[PackedEvent]) -> FlushHint {
        // Requests are most events and change nothing here: no lock for them.
        let mut changes = events
            .iter()
            .filter(|event| packed::kind(event) != packed::KIND_ACCESSED)
            .peekable();
        if changes.peek().is_some() {
            let mut order = self.order.lock();
            changes.for_each(|event| order.record(event));
        }
        FlushHint::Idle
    }

    fn record_then_ready(
        &self,
        events: &[PackedEvent],
        _arriving: Option<Arriving>,
        count: usize,
        out: &mut Vec<SessionId>,
    ) -> FlushHint {
        let mut order = self.order.lock();
        events.iter().for_each(|event| order.record(event));
        order.oldest(count, out);
        FlushHint::Idle
    }

    /// The order never depends on the arrival, so the oldest are the
    /// victims at any time: handed out under the table lock, with no second
    /// lock round for a `victims` call.
    fn ready_victims(&self, _arriving: Option<Arriving>, count: usize, out: &mut Vec<SessionId>) {
        self.order.lock().oldest(count, out);
    }

    fn victims(
        &self,
        request: VictimRequest<'_>,
        out: &mut Vec<SessionId>,
    ) -> Result<(), Unavailable> {
        self.order.lock().oldest(request.count, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::RemovalCause;

    fn id(slot: u32, generation: u32) -> SessionId {
        SessionId::new(slot, generation)
    }

    fn inserted(id: SessionId) -> PackedEvent {
        packed::pack(PolicyEvent::Inserted {
            id,
            time: 0,
            weight: 1,
            key: 0,
            tenant: 0,
        })
    }

    fn removed(id: SessionId) -> PackedEvent {
        packed::pack(PolicyEvent::Removed {
            id,
            time: 0,
            cause: RemovalCause::Evicted,
            key: 0,
        })
    }

    fn accessed(id: SessionId) -> PackedEvent {
        packed::pack(PolicyEvent::Accessed {
            id,
            time: 0,
            weight: 1,
        })
    }

    fn ready(fifo: &Fifo, events: &[PackedEvent], count: usize) -> Vec<SessionId> {
        let mut out = Vec::new();
        fifo.record_then_ready(events, None, count, &mut out);
        out
    }

    #[test]
    fn fifo_proposes_in_arrival_order_whatever_is_requested() {
        let fifo = Fifo::default();
        let (a, b, c) = (id(4, 0), id(0, 0), id(9, 0));
        fifo.record_batch(&[
            inserted(a),
            inserted(b),
            accessed(a),
            inserted(c),
            accessed(b),
        ]);
        assert_eq!(ready(&fifo, &[], 2), [a, b]);
        let mut out = Vec::new();
        fifo.victims(VictimRequest::count(5), &mut out)
            .expect("victims");
        assert_eq!(out, [a, b, c]);
        // A repeated insert keeps its place.
        assert_eq!(ready(&fifo, &[inserted(a)], 3), [a, b, c]);
    }

    #[test]
    fn fifo_forgets_only_the_generation_that_left() {
        let fifo = Fifo::default();
        let (old, other) = (id(1, 0), id(2, 0));
        let new = id(1, 1);
        assert_eq!(
            ready(&fifo, &[inserted(old), inserted(other)], 3),
            [old, other]
        );
        // The slot's next session arrives last; a late removal of the session
        // that held it before leaves the new one listed.
        assert_eq!(
            ready(&fifo, &[removed(old), inserted(new), removed(old)], 3),
            [other, new]
        );
        // An insert over a slot whose removal was missed replaces it.
        let newer = id(1, 2);
        assert_eq!(ready(&fifo, &[inserted(newer)], 3), [other, newer]);
        // Unknown ids change nothing.
        assert_eq!(
            ready(&fifo, &[removed(id(7, 0)), removed(id(2, 5))], 3),
            [other, newer]
        );
        fifo.record(PolicyEvent::Removed {
            id: other,
            time: 0,
            cause: RemovalCause::Closed,
            key: 0,
        });
        assert_eq!(ready(&fifo, &[removed(newer)], 3), []);
    }
}
