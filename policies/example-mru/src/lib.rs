//! Most recently used: evicts the session touched last. It suits a client
//! population that cycles through more sessions than the table holds, where LRU
//! always evicts the one that comes back next.

use shadowcat_policy_sdk::{
    Choice, Config, Needs, Policy, RemovalCause, Session, SlotList, Table, export_policy,
};

pub struct Mru {
    /// Live sessions, least recently touched first.
    order: SlotList<()>,
}

impl Policy for Mru {
    const NAME: &'static str = "example-mru";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const NEEDS: Needs = Needs::INSERTED.union(Needs::ACCESSED).union(Needs::REMOVED);
    // No `stable-order`: touching any session makes it the next victim.

    fn create(_table: &Table, config: &Config) -> Result<Self, String> {
        config.check_keys(Self::NAME, &[])?;
        Ok(Self {
            order: SlotList::new(),
        })
    }

    fn on_insert(&mut self, session: &Session) {
        self.on_access(session);
    }

    fn on_access(&mut self, session: &Session) {
        if self.order.move_to_back(session.id).is_none() {
            // Fails only without memory for the slot; the host then chooses.
            let _ = self.order.push_back(session.id, ());
        }
    }

    fn on_remove(&mut self, id: u64, _time: u64, _cause: RemovalCause) {
        self.order.remove(id);
    }

    fn victims(&mut self, count: usize, _choice: &Choice<'_>, out: &mut Vec<u64>) {
        out.extend(self.order.iter().rev().take(count).map(|(id, _)| id));
    }
}

export_policy!(Mru);

#[cfg(test)]
mod tests;
