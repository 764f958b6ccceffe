//! Replays requests through a [`Model`] the way the session table drives a
//! policy, as a cache: a request for a held key is a hit (an access); any
//! other is a miss that, on a full table, asks for one victim before the
//! newcomer is inserted, removes it, then inserts the newcomer under a fresh
//! session id with the request's key.

use std::collections::HashMap;

use super::{Model, SplitMix64};

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    pub requests: u64,
    pub misses: u64,
    /// Every eviction in order: (request index, session id, key).
    pub evictions: Vec<(u64, u64, u64)>,
}

impl Replay {
    pub fn miss_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.misses as f64 / self.requests as f64
        }
    }
}

/// Table-side settings of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Driver {
    /// In sessions.
    pub capacity: usize,
    /// Calls `maintain` whenever trace time has moved on by this many
    /// microseconds since the last call; 0: never.
    pub maintain_every: u64,
    /// Seed of the candidate sampling for models that sample.
    pub sample_seed: u64,
}

impl Driver {
    /// `maintain` once per trace second, as the proxy ticks.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            maintain_every: 1_000_000,
            sample_seed: 42,
        }
    }

    /// `requests` are `(time in microseconds, key)`. An error names the request
    /// at which the model broke the protocol.
    pub fn replay(
        &self,
        model: &mut dyn Model,
        requests: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Replay, String> {
        let mut out = Replay::default();
        let mut table = Sessions::default();
        let mut next_id = 0u64;
        let mut last_maintain: Option<u64> = None;
        let mut rng = SplitMix64(self.sample_seed);
        for (index, (time, key)) in requests.into_iter().enumerate() {
            let index = index as u64;
            out.requests += 1;
            if self.maintain_every > 0 {
                match last_maintain {
                    None => last_maintain = Some(time),
                    Some(last) if time >= last.saturating_add(self.maintain_every) => {
                        model.maintain(time);
                        last_maintain = Some(time);
                    }
                    Some(_) => {}
                }
            }
            if let Some(&id) = table.id_of.get(&key) {
                model.access(id, time);
                continue;
            }
            out.misses += 1;
            if table.len() >= self.capacity {
                let candidates = table.sample(model.sample_size(), &mut rng);
                let victims = model.victims(1, key, &candidates);
                let &[victim] = victims.as_slice() else {
                    return Err(format!(
                        "request {index}: {} proposed {victims:?} for one victim",
                        model.name()
                    ));
                };
                let Some(victim_key) = table.remove(victim) else {
                    return Err(format!(
                        "request {index}: {} proposed session {victim}, which is not live",
                        model.name()
                    ));
                };
                model.remove(victim, true);
                out.evictions.push((index, victim, victim_key));
            }
            next_id += 1;
            table.insert(next_id, key);
            model.insert(next_id, key, time);
        }
        Ok(out)
    }
}

/// The table's own view: live sessions by key and by id, and a dense list of
/// ids to sample from.
#[derive(Debug, Default)]
struct Sessions {
    id_of: HashMap<u64, u64>,
    key_of: HashMap<u64, u64>,
    ids: Vec<u64>,
    slot_of: HashMap<u64, usize>,
}

impl Sessions {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn insert(&mut self, id: u64, key: u64) {
        self.id_of.insert(key, id);
        self.key_of.insert(id, key);
        self.slot_of.insert(id, self.ids.len());
        self.ids.push(id);
    }

    /// The session's key, if it was live.
    fn remove(&mut self, id: u64) -> Option<u64> {
        let key = self.key_of.remove(&id)?;
        self.id_of.remove(&key);
        let slot = self.slot_of.remove(&id).expect("every live id has a slot");
        self.ids.swap_remove(slot);
        if let Some(&moved) = self.ids.get(slot) {
            self.slot_of.insert(moved, slot);
        }
        Some(key)
    }

    /// `count` distinct live ids drawn uniformly (all of them if fewer).
    fn sample(&self, count: usize, rng: &mut SplitMix64) -> Vec<u64> {
        if count == 0 {
            return Vec::new();
        }
        if count >= self.ids.len() {
            return self.ids.clone();
        }
        let mut picked: Vec<u64> = Vec::with_capacity(count);
        while picked.len() < count {
            let id = self.ids[rng.below(self.ids.len())];
            if !picked.contains(&id) {
                picked.push(id);
            }
        }
        picked
    }
}
