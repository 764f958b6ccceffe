//! The reference models of `tests/reference/` behind the SDK's stand-in host
//! (feature `testing`), so that a guest's unit tests play random workloads,
//! pinned refusals included, against the very model the host tests use.

use shadowcat_policy_sdk::testing::{self, Ids, Report, Rng, Workload};
use shadowcat_policy_sdk::{
    Arriving, Candidate, Choice, Policy, RefusalReason, RemovalCause, Session, Traits,
};

// These files belong to the root workspace, whose `cargo fmt` (edition 2021)
// formats them; this workspace's edition would order their imports otherwise.
#[path = "../../../tests/reference/mod.rs"]
#[allow(clippy::all)]
#[rustfmt::skip]
pub mod reference;
#[path = "../../../tests/library/twin.rs"]
#[rustfmt::skip]
pub mod twin;

pub use twin::Twin;

impl testing::Reference for Twin {
    fn insert(&mut self, s: &Session) {
        Twin::insert(self, s.id, s.key, s.time);
    }

    fn access(&mut self, s: &Session) {
        Twin::access(self, s.id, s.time);
    }

    fn remove(&mut self, id: u64, cause: RemovalCause) {
        Twin::remove(self, id, cause == RemovalCause::Evicted);
    }

    fn refused(&mut self, id: u64, reason: RefusalReason) {
        Twin::refused(self, id, reason == RefusalReason::Pinned);
    }

    fn victims(&mut self, count: usize, choice: &Choice<'_>) -> Vec<u64> {
        let candidates: Vec<u64> = choice.candidates.iter().map(|c| c.id).collect();
        let key = choice.arriving.map_or(crate::NO_KEY, |a| a.key);
        Twin::victims(self, count, key, &candidates)
    }
}

/// The victims `policy` lists, at most `count`, to make room for an arrival
/// with `key` (size 1, no candidates): its answer as the host gets it.
pub fn answer<P: Policy>(policy: &mut P, count: usize, key: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let choice = Choice {
        arriving: Some(Arriving { key, size: 1 }),
        candidates: &[],
    };
    policy.victims(count, &choice, &mut out);
    out
}

/// The workloads every guest is checked on: small tables where clients come
/// back often (ghost hits), and a larger one with many victims per call.
pub fn workloads() -> Vec<Workload> {
    let mut all: Vec<Workload> = (1..=4)
        .map(|seed| Workload {
            seed,
            ..Workload::default()
        })
        .collect();
    all.push(Workload {
        seed: 5,
        keys: 80,
        ..Workload::default()
    });
    all.push(Workload {
        seed: 6,
        steps: 40_000,
        capacity: 1_000,
        keys: 3_000,
        max_count: 64,
        ..Workload::default()
    });
    all
}

/// Plays `workload` against the guest `make()` creates and the model of
/// `name` with the same `config`, at the workload's capacity and with the
/// table's timeouts (microseconds, 0 for none); panics at the first
/// `victims` answer where they differ.
pub fn compare_with_model<P: Policy>(
    make: impl Fn(u64) -> P,
    name: &str,
    config: &[(&str, &str)],
    workload: &Workload,
    (idle_timeout, max_age): (u64, u64),
) -> Report {
    let table = reference::Table {
        capacity: workload.capacity,
        idle_timeout,
        max_age,
    };
    let mut twin = Twin::build(name, &table, config)
        .unwrap_or_else(|e| panic!("model {name} {config:?}: {e}"));
    let mut policy = make(workload.capacity as u64);
    testing::compare(&mut policy, &mut twin, workload)
}

/// [`compare_with_model`] over [`workloads`] for a table without timeouts,
/// checking that each run evicted and refused enough to mean something.
pub fn assert_matches_model<P: Policy>(
    make: impl Fn(u64) -> P,
    name: &str,
    config: &[(&str, &str)],
    sampled: bool,
) {
    assert_matches_model_with(make, name, config, sampled, 0, 0);
}

/// [`assert_matches_model`] for a table with an idle timeout and a max age
/// (microseconds, 0 for none).
pub fn assert_matches_model_with<P: Policy>(
    make: impl Fn(u64) -> P,
    name: &str,
    config: &[(&str, &str)],
    sampled: bool,
    idle_timeout: u64,
    max_age: u64,
) {
    for workload in workloads() {
        let workload = Workload {
            sampled,
            ..workload
        };
        let report = compare_with_model(&make, name, config, &workload, (idle_timeout, max_age));
        assert!(
            report.policy_evictions > 500,
            "{name} {config:?} seed {}: {report:?}",
            workload.seed
        );
        assert!(
            report.refusals > 10,
            "{name} {config:?} seed {}: {report:?}",
            workload.seed
        );
        if P::TRAITS.contains(Traits::STABLE_ORDER) && !sampled {
            assert!(
                report.stable_checks > 100,
                "{name} {config:?} seed {}: the promise was checked: {report:?}",
                workload.seed
            );
        }
    }
    let mut reasks = 0;
    for seed in 1..=4 {
        let table = reference::Table {
            capacity: 64,
            idle_timeout,
            max_age,
        };
        let mut twin = Twin::build(name, &table, config)
            .unwrap_or_else(|e| panic!("model {name} {config:?}: {e}"));
        reasks += compare_with_reasks(&mut make(64), &mut twin, seed, 64);
    }
    // Sampled candidates are never pinned, so such a policy is refused only
    // what it detached earlier, and rarely re-asked.
    if !P::TRAITS.contains(Traits::SAMPLED) {
        assert!(reasks > 50, "{name} {config:?}: {reasks} re-asks");
    }
}

/// Plays a random workload as the session table drives a policy, which the
/// SDK's stand-in host does not: when every proposal is refused as pinned,
/// the table asks again (up to four times) before choosing itself; sampled
/// candidates are never pinned. Every answer of `policy` must equal the
/// twin's. Returns how many re-asks there were.
pub fn compare_with_reasks<P: Policy>(
    policy: &mut P,
    twin: &mut Twin,
    seed: u64,
    capacity: usize,
) -> usize {
    let mut rng = Rng::new(seed);
    let mut ids = Ids::new();
    let mut keys: std::collections::HashMap<u64, u64> = Default::default();
    let mut pinned: Vec<u64> = Vec::new();
    let mut time = 0;
    let mut reasks = 0;
    let sampled = P::TRAITS.contains(Traits::SAMPLED);
    let session = |id: u64, key: u64, time: u64| Session {
        id,
        key,
        tenant: 0,
        size: 1,
        time,
    };
    for step in 0..20_000 {
        time += rng.below(2_000_000);
        let roll = rng.below(100);
        if ids.live().is_empty() || roll < 35 {
            let key = 1 + rng.below(capacity as u64 * 3);
            if ids.live().len() >= capacity {
                let mut done = false;
                for attempt in 0..5 {
                    let candidates: Vec<Candidate> = if sampled {
                        (0..8)
                            .filter_map(|_| rng.pick(ids.live()))
                            .filter(|id| !pinned.contains(id))
                            .map(|id| Candidate {
                                id,
                                last_access: time,
                                requests: 1,
                                key: keys[&id],
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let choice = Choice {
                        arriving: Some(Arriving { key, size: 1 }),
                        candidates: &candidates,
                    };
                    let mut answer = Vec::new();
                    policy.victims(1, &choice, &mut answer);
                    let expected = testing::Reference::victims(twin, 1, &choice);
                    assert_eq!(
                        answer, expected,
                        "step {step}, attempt {attempt}: the policy (left) and its twin differ"
                    );
                    if attempt > 0 {
                        reasks += 1;
                    }
                    for &id in &answer {
                        if pinned.contains(&id) {
                            policy.on_refused(id, time, RefusalReason::Pinned);
                            twin.refused(id, true);
                        } else {
                            ids.remove(id);
                            policy.on_remove(id, time, RemovalCause::Evicted);
                            twin.remove(id, true);
                            done = true;
                        }
                    }
                    if done || answer.is_empty() {
                        break;
                    }
                }
                if !done {
                    // The table's own choice.
                    let unpinned: Vec<u64> = ids
                        .live()
                        .iter()
                        .copied()
                        .filter(|id| !pinned.contains(id))
                        .collect();
                    if let Some(id) = rng.pick(&unpinned) {
                        ids.remove(id);
                        policy.on_remove(id, time, RemovalCause::Evicted);
                        twin.remove(id, true);
                    }
                }
            }
            let id = ids.insert(&mut rng);
            keys.insert(id, key);
            policy.on_insert(&session(id, key, time));
            twin.insert(id, key, time);
        } else if roll < 75 {
            // A client waits for its request in flight before the next.
            let Some(id) = rng.pick(ids.live()).filter(|id| !pinned.contains(id)) else {
                continue;
            };
            policy.on_access(&session(id, keys[&id], time));
            twin.access(id, time);
        } else if roll < 80 {
            let Some(id) = rng.pick(ids.live()).filter(|id| !pinned.contains(id)) else {
                continue;
            };
            ids.remove(id);
            policy.on_remove(id, time, RemovalCause::Closed);
            twin.remove(id, false);
        } else if roll < 85 {
            policy.maintain(time).expect("maintain");
            twin.maintain(time);
        } else if let Some(id) = rng.pick(ids.live()) {
            // Pins come and go as requests start and end; a request starts
            // with an access.
            match pinned.iter().position(|&p| p == id) {
                // Long requests and open streams: pins outlast a sweep of
                // CLOCK's or SIEVE's hand, so even sessions used at pinning
                // come up as victims.
                Some(i) if rng.percent(20) => {
                    pinned.swap_remove(i);
                }
                Some(_) => {}
                None if pinned.len() < 4 => {
                    policy.on_access(&session(id, keys[&id], time));
                    twin.access(id, time);
                    pinned.push(id);
                }
                None => {}
            }
        }
    }
    reasks
}
