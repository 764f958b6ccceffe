use std::collections::{HashSet, VecDeque};

use shadowcat_policy_sdk::testing::{Rng, Workload, compare};
use shadowcat_policy_sdk::{
    Arriving, Choice, Config, GhostChanges, Policy, RefusalReason, RemovalCause, Session, SlotList,
    Table,
};

use crate::testing::reference::{self, Reference};
use crate::testing::{Twin, compare_with_reasks, workloads};
use crate::{GhostList, OnTable, Simulated};

/// Evicts its two oldest sessions per step, as libCacheSim's W-TinyLFU can,
/// so detached sessions queue up; written both ways, as a guest and as a
/// reference model.
#[derive(Default)]
struct EvictsTwo {
    order: SlotList<()>,
}

impl Simulated for EvictsTwo {
    const NAME: &'static str = "evicts-two";
    const VERSION: &'static str = "0";

    fn create(_table: &Table, _config: &Config) -> Result<Self, String> {
        Ok(Self::default())
    }
    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        let _ = self.order.push_back(id, ());
    }
    fn hit(&mut self, _id: u64, _time: u64, _evicted: &mut Vec<u64>) {}
    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        for _ in 0..2 {
            evicted.extend(self.order.pop_front().map(|(id, ())| id));
        }
    }
    fn forget(&mut self, id: u64) {
        self.order.remove(id);
    }
}

#[derive(Default)]
struct EvictsTwoModel {
    order: Vec<u64>,
}

impl reference::Policy for EvictsTwoModel {
    fn name(&self) -> String {
        "evicts-two".into()
    }
    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        self.order.push(id);
    }
    fn hit(&mut self, _id: u64, _time: u64, _evicted: &mut Vec<u64>) {}
    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        let n = self.order.len().min(2);
        evicted.extend(self.order.drain(..n));
    }
    fn forget(&mut self, id: u64) {
        self.order.retain(|&o| o != id);
    }
}

/// libCacheSim's FIFO as a guest, to check the protocol against the `fifo`
/// model.
#[derive(Default)]
struct Fifo {
    order: SlotList<()>,
}

impl Simulated for Fifo {
    const NAME: &'static str = "fifo";
    const VERSION: &'static str = "0";

    fn create(_table: &Table, _config: &Config) -> Result<Self, String> {
        Ok(Self::default())
    }
    fn admit(&mut self, id: u64, _key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        let _ = self.order.push_back(id, ());
    }
    fn hit(&mut self, _id: u64, _time: u64, _evicted: &mut Vec<u64>) {}
    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        evicted.extend(self.order.pop_front().map(|(id, ())| id));
    }
    fn forget(&mut self, id: u64) {
        self.order.remove(id);
    }
}

fn session(id: u64, key: u64) -> Session {
    Session {
        id,
        key,
        tenant: 0,
        size: 1,
        time: 0,
    }
}

fn ask<S: Simulated>(p: &mut OnTable<S>, count: usize, key: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let choice = Choice {
        arriving: Some(Arriving { key, size: 1 }),
        candidates: &[],
    };
    p.victims(count, &choice, &mut out);
    out
}

#[test]
fn sim_protocol_matches_the_twin_of_a_one_victim_model() {
    for workload in workloads() {
        let table = reference::Table::with_capacity(workload.capacity);
        let mut twin = Twin::build("fifo", &table, &[]).unwrap();
        let mut guest = OnTable::new(Fifo::default());
        let report = compare(&mut guest, &mut twin, &workload);
        assert!(report.refusals > 10, "{report:?}");
    }
}

#[test]
fn sim_protocol_matches_the_twin_when_a_step_evicts_two() {
    for workload in workloads() {
        let mut twin = Twin::new(Box::new(Reference::new(EvictsTwoModel::default())));
        let mut guest = OnTable::new(EvictsTwo::default());
        let report = compare(&mut guest, &mut twin, &workload);
        assert!(report.refusals > 10, "{report:?}");
    }
}

#[test]
fn sim_protocol_matches_the_twin_when_the_table_reasks() {
    let mut reasks = 0;
    for seed in 1..=4 {
        let table = reference::Table::with_capacity(64);
        let mut twin = Twin::build("fifo", &table, &[]).unwrap();
        reasks += compare_with_reasks(&mut OnTable::new(Fifo::default()), &mut twin, seed, 64);
        let mut twin = Twin::new(Box::new(Reference::new(EvictsTwoModel::default())));
        reasks += compare_with_reasks(&mut OnTable::new(EvictsTwo::default()), &mut twin, seed, 64);
    }
    assert!(reasks > 200, "{reasks} re-asks");
}

/// The host re-asks after refusing every proposal as pinned: the answer must
/// be the next choice, and the pinned one comes back once the table evicted,
/// later each time it is refused again.
#[test]
fn sim_a_pinned_proposal_is_held_back_while_the_table_evicts_others() {
    let mut p = OnTable::new(Fifo::default());
    for id in 1..=6 {
        p.on_insert(&session(id, 100 + id));
    }
    assert_eq!(ask(&mut p, 1, 9), vec![1]);
    p.on_refused(1, 0, RefusalReason::Pinned);
    assert_eq!(
        ask(&mut p, 1, 9),
        vec![2],
        "the re-ask gets the next choice"
    );
    p.on_refused(2, 0, RefusalReason::Pinned);
    assert_eq!(ask(&mut p, 1, 9), vec![3]);
    p.on_remove(3, 0, RemovalCause::Evicted);
    p.on_insert(&session(7, 9));
    assert_eq!(ask(&mut p, 2, 10), vec![1, 2], "offered again, in order");
    // Refused a second time, 1 waits out two evictions.
    p.on_refused(1, 0, RefusalReason::Pinned);
    p.on_remove(2, 0, RemovalCause::Evicted);
    p.on_insert(&session(8, 10));
    assert_eq!(ask(&mut p, 1, 11), vec![4]);
    p.on_remove(4, 0, RemovalCause::Evicted);
    p.on_insert(&session(9, 11));
    assert_eq!(ask(&mut p, 1, 12), vec![1]);
    // A request re-admits a detached session: it is no longer proposed.
    p.on_access(&session(1, 101));
    assert_eq!(ask(&mut p, 2, 12), vec![5, 6]);
    assert_eq!(p.detached(), 2);
}

#[test]
fn sim_a_proposal_the_host_did_not_need_is_proposed_again() {
    let mut p = OnTable::new(Fifo::default());
    for id in 1..=4 {
        p.on_insert(&session(id, 100 + id));
    }
    assert_eq!(ask(&mut p, 3, 9), vec![1, 2, 3]);
    p.on_remove(1, 0, RemovalCause::Evicted);
    assert_eq!(ask(&mut p, 1, 9), vec![2]);
    // Not live after all: its removal was missed, so it is forgotten.
    p.on_refused(2, 0, RefusalReason::NotLive);
    assert_eq!(ask(&mut p, 2, 9), vec![3, 4]);
}

#[test]
fn sim_ghost_list_behaves_like_an_ordered_list_of_distinct_keys() {
    let mut rng = Rng::new(7);
    // Bound 8 with up to 64 keys listed: the index must grow.
    let mut ghost = GhostList::with_bound(8);
    ghost.track_changes();
    let mut model: VecDeque<u64> = VecDeque::new();
    // What a host knows from the changes drained: each key listed flips.
    let mut mirror: HashSet<u64> = HashSet::new();
    let mut changes = GhostChanges::default();
    for step in 0..200_000 {
        // Keys that collide in the index's low bits as well as random ones.
        let key = match rng.below(3) {
            0 => rng.below(96) << 20,
            _ => 1 + rng.below(96),
        };
        match rng.below(10) {
            0..=2 => {
                ghost.push_newest(key);
                model.retain(|&k| k != key);
                model.push_back(key);
            }
            3 if !model.contains(&key) => {
                ghost.push_new(key);
                model.push_back(key);
            }
            4..=6 => {
                let listed = model.contains(&key);
                model.retain(|&k| k != key);
                assert_eq!(ghost.remove(key), listed, "step {step}");
            }
            7 => assert_eq!(ghost.pop_oldest(), model.pop_front(), "step {step}"),
            _ => assert_eq!(ghost.contains(key), model.contains(&key), "step {step}"),
        }
        if model.len() > 64 {
            assert_eq!(ghost.pop_oldest(), model.pop_front());
        }
        assert_eq!(ghost.len(), model.len());
        if step % 97 == 0 {
            assert!(ghost.iter().eq(model.iter().copied()), "step {step}");
        }
        if step % 13 == 0 {
            changes.clear();
            ghost.drain_changes(&mut changes);
            if changes.replaced {
                mirror = changes.keys.iter().copied().collect();
            } else {
                for &key in &changes.keys {
                    if !mirror.remove(&key) {
                        mirror.insert(key);
                    }
                }
            }
            let listed: HashSet<u64> = model.iter().copied().collect();
            assert_eq!(mirror, listed, "step {step}: the changes drained");
        }
    }
}

#[test]
fn sim_workloads_reach_every_protocol_path() {
    // The workloads must refuse, evict for the host and leave proposals unused,
    // or the comparisons above prove little.
    let w = Workload::default();
    let mut twin = Twin::build("fifo", &reference::Table::with_capacity(w.capacity), &[]).unwrap();
    let report = compare(&mut OnTable::new(Fifo::default()), &mut twin, &w);
    assert!(report.refusals > 10 && report.evictions > report.policy_evictions);
    assert!(report.victims_calls > report.evictions);
}
