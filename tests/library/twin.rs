//! A reference model of `tests/reference/` as the shipped simulator-defined
//! guests run it (`policies/sim`): the model decides, unchanged, and this
//! wrapper adds the two rules the guests follow where the table asks more than
//! a simulator defines.
//!
//! - A proposal stays the policy's choice until an event names it (a removal,
//!   or a request that re-admits it): proposed again first, before anything
//!   the model has not proposed yet.
//! - A proposal refused as pinned is held back while the table evicts
//!   others: one eviction after its first refusal, two after its second,
//!   doubling up to 256. The host's re-ask gets the next choice rather than
//!   the same pinned session. One refused as not live had its removal missed
//!   and is forgotten.
//!
//! The model's own adapter is therefore never told of a refusal: this wrapper
//! alone decides what to propose again.
//!
//! A model that plans (SIEVE, CLOCK, soonest-to-expire; 2Q with an arrival
//! at hand) answers as the guests do: one eviction step for the first
//! victim, then the plan, up to the eviction at which a refused proposal is
//! due again. The table evicting or refusing the planned next victim takes
//! that victim's step.

use super::reference::{self, Model, Table};

pub struct Twin {
    model: Box<dyn Model>,
    /// Proposed and not named by an event since, first proposed first.
    offered: Vec<Offer>,
}

struct Offer {
    id: u64,
    /// Times refused as pinned.
    refusals: u32,
    /// Evictions to wait before it is proposed again.
    wait: u32,
}

impl Twin {
    pub fn new(model: Box<dyn Model>) -> Self {
        Self {
            model,
            offered: Vec::new(),
        }
    }

    /// The model `reference::build` makes of `name` with the guest's config.
    pub fn build(name: &str, table: &Table, config: &[(&str, &str)]) -> Result<Self, String> {
        reference::build(name, table, config).map(Self::new)
    }

    pub fn insert(&mut self, id: u64, key: u64, time: u64) {
        self.model.insert(id, key, time);
    }

    pub fn access(&mut self, id: u64, time: u64) {
        self.model.access(id, time);
        self.unoffer(id);
    }

    /// `evicted`: the table evicted it (otherwise it expired or was closed).
    pub fn remove(&mut self, id: u64, evicted: bool) {
        if evicted {
            self.take_planned_step(id);
        }
        self.model.remove(id, evicted);
        self.unoffer(id);
        if evicted {
            for offer in &mut self.offered {
                offer.wait = offer.wait.saturating_sub(1);
            }
        }
    }

    /// The table did not evict a proposal: it is pinned, or (`pinned` false)
    /// not live.
    pub fn refused(&mut self, id: u64, pinned: bool) {
        if pinned {
            self.take_planned_step(id);
        }
        let Some(i) = self.offered.iter().position(|o| o.id == id) else {
            return;
        };
        if pinned {
            let offer = &mut self.offered[i];
            offer.refusals += 1;
            offer.wait = (1u32 << (offer.refusals - 1).min(8)).min(256);
        } else {
            self.offered.remove(i);
            self.model.remove(id, false);
        }
    }

    pub fn victims(&mut self, count: usize, arriving_key: u64, candidates: &[u64]) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .offered
            .iter()
            .filter(|o| o.wait == 0)
            .map(|o| o.id)
            .take(count)
            .collect();
        // A plan for strangers follows an arrival; asked without one, the
        // table needs every victim now.
        let plans = self.model.plans()
            && (!self.model.plans_for_strangers() || arriving_key != reference::NO_KEY);
        let steps = if plans {
            usize::from(out.is_empty())
        } else {
            count - out.len()
        };
        // Asked even for none: the model runs the arrival's prologue here.
        let fresh = self.model.victims(steps, arriving_key, candidates);
        self.offered.extend(fresh.iter().map(|&id| Offer {
            id,
            refusals: 0,
            wait: 0,
        }));
        out.extend(fresh);
        // Not past the eviction at which a refused proposal is due again.
        let due = self.offered.iter().map(|o| o.wait).filter(|&w| w > 0).min();
        let reach = due.map_or(count, |w| count.min(w as usize));
        let planned = reach.saturating_sub(out.len());
        // With no victim now, nothing is promised after it either.
        if plans && planned > 0 && !out.is_empty() {
            out.extend(self.model.plan(planned));
            // The arrivals would reach past the refused proposal.
            if due.is_some() && out.last().is_some_and(|&id| reference::is_arrivals(id)) {
                out.pop();
            }
        }
        out
    }

    /// The table evicted or refused `id`: if the model still holds it as its
    /// planned next victim (a proposed one it already detached), the model
    /// takes that step now and `id` counts as proposed.
    fn take_planned_step(&mut self, id: u64) {
        if self.model.take_planned_step(id) {
            self.offered.push(Offer {
                id,
                refusals: 0,
                wait: 0,
            });
        }
    }

    pub fn maintain(&mut self, now: u64) {
        self.model.maintain(now);
    }

    fn unoffer(&mut self, id: u64) {
        self.offered.retain(|o| o.id != id);
    }
}
