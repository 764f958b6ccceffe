//! A native stand-in for the host, for policy unit tests (feature `testing`):
//! it plays a random workload against a [`Policy`] and a reference model
//! written in the test, calling the policy directly, and fails on the first
//! `victims` answer where they differ.
//!
//! The workload keeps the host's invariants: ids are handed out like the host's
//! (a freed slot is reused with its generation bumped), events reach the policy
//! only if it needs them, room is made before an arriving session is inserted,
//! and the host refuses pinned or not-live proposals and fills a shortfall
//! itself.

use std::collections::HashMap;

use crate::{
    ARRIVALS, Arriving, Candidate, Choice, Event, Policy, RefusalReason, RemovalCause, Session,
    Traits, deliver, is_arrivals, slot,
};

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), up to a negligible bias.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// Session ids as the host hands them out: slot in the low 32 bits, generation
/// in the high 32; a removed session's slot is reused with the next generation.
#[derive(Clone, Debug, Default)]
pub struct Ids {
    generations: Vec<u32>,
    free: Vec<u32>,
    live: Vec<u64>,
    /// Position of each live id in `live`.
    index: HashMap<u64, usize>,
}

impl Ids {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new id, reusing a random free slot when there is one.
    pub fn insert(&mut self, rng: &mut Rng) -> u64 {
        let s = if self.free.is_empty() {
            self.generations.push(0);
            (self.generations.len() - 1) as u32
        } else {
            let i = rng.below(self.free.len() as u64) as usize;
            let s = self.free.swap_remove(i);
            self.generations[s as usize] += 1;
            s
        };
        let id = (u64::from(self.generations[s as usize]) << 32) | u64::from(s);
        self.index.insert(id, self.live.len());
        self.live.push(id);
        id
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let Some(i) = self.index.remove(&id) else {
            return false;
        };
        self.live.swap_remove(i);
        if let Some(&moved) = self.live.get(i) {
            self.index.insert(moved, i);
        }
        self.free.push(slot(id));
        true
    }

    pub fn live(&self) -> &[u64] {
        &self.live
    }

    pub fn is_live(&self, id: u64) -> bool {
        self.index.contains_key(&id)
    }
}

/// The model a policy is checked against, fed the same events the policy gets.
pub trait Reference {
    fn insert(&mut self, session: &Session);
    fn access(&mut self, _session: &Session) {}
    fn remove(&mut self, id: u64, cause: RemovalCause);
    fn refused(&mut self, _id: u64, _reason: RefusalReason) {}
    fn victims(&mut self, count: usize, choice: &Choice<'_>) -> Vec<u64>;
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub seed: u64,
    pub steps: usize,
    /// Live sessions at which arrivals start evicting.
    pub capacity: usize,
    /// Distinct stable keys: clients return with new session ids.
    pub keys: u64,
    /// Offer host-sampled candidates (some unknown or stale) in every call.
    pub sampled: bool,
    /// Most victims asked for per call.
    pub max_count: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            seed: 1,
            steps: 20_000,
            capacity: 64,
            keys: 200,
            sampled: false,
            max_count: 8,
        }
    }
}

/// What a run exercised, so a test can check it was not vacuous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub victims_calls: usize,
    pub evictions: usize,
    pub policy_evictions: usize,
    pub refusals: usize,
    pub stable_checks: usize,
    /// Stable-order answers that ended in [`ARRIVALS`] or
    /// [`crate::ARRIVALS_WHILE_QUEUED`] (the one-step promise checked here is
    /// the same: the host that asks after every eviction never runs dry).
    pub arrivals_followed: usize,
}

struct Run<'a, P, R> {
    policy: &'a mut P,
    reference: &'a mut R,
    rng: Rng,
    ids: Ids,
    pinned: Vec<u64>,
    time: u64,
    step: usize,
    /// Per id ever inserted: stable key, last access, requests.
    known: HashMap<u64, (u64, u64, u64)>,
    /// The last answer of a stable-order policy, without its [`ARRIVALS`], and the
    /// sessions inserted since if it ended in it; `None` once an event named
    /// one of them.
    stable: Option<Vec<u64>>,
    /// The last answer ended in [`ARRIVALS`] (or its `WHILE_QUEUED` form).
    follows_arrivals: bool,
    report: Report,
}

/// Stands for a stable-order answer's first victim once it has left: no
/// session has this id.
const GONE: u64 = ARRIVALS;

/// Plays `workload` against `policy` and `reference`; panics, naming the step,
/// at the first `victims` answer where they differ, and for a policy declaring
/// [`Traits::STABLE_ORDER`], at the first answer that breaks that promise.
pub fn compare<P: Policy, R: Reference>(
    policy: &mut P,
    reference: &mut R,
    workload: &Workload,
) -> Report {
    let mut run = Run {
        policy,
        reference,
        rng: Rng::new(workload.seed),
        ids: Ids::new(),
        pinned: Vec::new(),
        time: 1,
        step: 0,
        known: HashMap::new(),
        stable: None,
        follows_arrivals: false,
        report: Report::default(),
    };
    for step in 0..workload.steps {
        run.step = step;
        run.time += run.rng.below(3);
        let live = run.ids.live().len();
        let roll = run.rng.below(100);
        if live == 0 || roll < 30 {
            run.arrive(workload);
        } else if roll < 70 {
            if let Some(id) = run.rng.pick(run.ids.live()) {
                run.access(id);
            }
        } else if roll < 78 {
            if let Some(id) = run.rng.pick(run.ids.live()) {
                const CAUSES: [RemovalCause; 6] = [
                    RemovalCause::ExpiredIdle,
                    RemovalCause::ExpiredAge,
                    RemovalCause::Closed,
                    RemovalCause::Deleted,
                    RemovalCause::Shutdown,
                    RemovalCause::UpstreamFailed,
                ];
                let cause = CAUSES[run.rng.below(CAUSES.len() as u64) as usize];
                run.remove(id, cause);
            }
        } else if roll < 93 {
            // A question without an eviction: the answer must still match.
            let count = 1 + run.rng.below(workload.max_count as u64) as usize;
            run.ask(count, None, workload);
        } else if let Some(id) = run.rng.pick(run.ids.live()) {
            match run.pinned.iter().position(|&p| p == id) {
                Some(i) => {
                    run.pinned.swap_remove(i);
                }
                // A few pins at a time, as requests in flight would hold.
                None if run.pinned.len() < 1 + live / 8 => run.pinned.push(id),
                None => {}
            }
        }
    }
    run.report
}

impl<P: Policy, R: Reference> Run<'_, P, R> {
    fn send(&mut self, event: Event) {
        let needed = match event {
            Event::Inserted(_) => P::NEEDS.contains(crate::Needs::INSERTED),
            Event::Accessed(_) => P::NEEDS.contains(crate::Needs::ACCESSED),
            Event::Removed { .. } => P::NEEDS.contains(crate::Needs::REMOVED),
            Event::Refused { .. } => P::NEEDS.contains(crate::Needs::REFUSED),
        };
        if !needed {
            return;
        }
        if let Some(stable) = &mut self.stable {
            match event {
                Event::Inserted(s) if self.follows_arrivals => stable.push(s.id),
                // The host evicting the first victim is what the promise
                // about the arrivals is for: they are checked past it.
                Event::Removed {
                    id,
                    cause: RemovalCause::Evicted,
                    ..
                } if self.follows_arrivals && stable.first() == Some(&id) => stable[0] = GONE,
                _ if stable.contains(&event.id()) => self.stable = None,
                _ => {}
            }
        }
        deliver(self.policy, &event);
        match event {
            Event::Inserted(s) => self.reference.insert(&s),
            Event::Accessed(s) => self.reference.access(&s),
            Event::Removed { id, cause, .. } => self.reference.remove(id, cause),
            Event::Refused { id, reason, .. } => self.reference.refused(id, reason),
        }
    }

    fn key_of(&self, id: u64) -> u64 {
        self.known.get(&id).map_or(0, |k| k.0)
    }

    fn session(&self, id: u64) -> Session {
        Session {
            id,
            key: self.key_of(id),
            tenant: (self.key_of(id) % 3) as u16,
            size: 1,
            time: self.time,
        }
    }

    fn arrive(&mut self, workload: &Workload) {
        let key = 1 + self.rng.below(workload.keys);
        if self.ids.live().len() >= workload.capacity {
            // A host asks a ghost-conditional policy for one victim per
            // arrival now: any more would be chosen for later arrivals.
            let count = if P::TRAITS.contains(Traits::GHOST_CONDITIONAL) {
                1
            } else {
                1 + self.rng.below(workload.max_count as u64) as usize
            };
            let answer = self.ask(count, Some(Arriving { key, size: 1 }), workload);
            self.evict(&answer);
        }
        let id = self.ids.insert(&mut self.rng);
        self.known.insert(id, (key, self.time, 1));
        self.send(Event::Inserted(self.session(id)));
    }

    fn access(&mut self, id: u64) {
        if let Some(entry) = self.known.get_mut(&id) {
            entry.1 = self.time;
            entry.2 += 1;
        }
        self.send(Event::Accessed(self.session(id)));
    }

    fn remove(&mut self, id: u64, cause: RemovalCause) {
        self.ids.remove(id);
        self.pinned.retain(|&p| p != id);
        let key = self.key_of(id);
        self.send(Event::Removed {
            id,
            key,
            tenant: (key % 3) as u16,
            time: self.time,
            cause,
        });
    }

    fn candidates(&mut self) -> Vec<Candidate> {
        let mut out = Vec::new();
        for _ in 0..1 + self.rng.below(12) {
            let Some(id) = self.rng.pick(self.ids.live()) else {
                break;
            };
            let (last_access, requests) = self
                .known
                .get(&id)
                .map_or((self.time, 1), |&(_, t, n)| (t, n));
            out.push(Candidate {
                id,
                last_access,
                requests,
                key: self.key_of(id),
            });
        }
        if self.rng.percent(20) {
            // One the policy has no record of: its insert not flushed yet, as far
            // as the policy can tell.
            out.push(Candidate {
                id: (0xffff_u64 << 32) | self.rng.below(1 << 20),
                last_access: self.time.saturating_sub(self.rng.below(5)),
                requests: self.rng.below(4),
                key: 0,
            });
        }
        out
    }

    fn ask(&mut self, count: usize, arriving: Option<Arriving>, workload: &Workload) -> Vec<u64> {
        let candidates = if workload.sampled {
            self.candidates()
        } else {
            Vec::new()
        };
        let choice = Choice {
            arriving,
            candidates: &candidates,
        };
        let mut answer = Vec::new();
        self.policy.victims(count, &choice, &mut answer);
        let expected = self.reference.victims(count, &choice);
        assert_eq!(
            answer, expected,
            "step {}: victims(count {count}, {choice:?}): the policy (left) and the reference (right) differ",
            self.step
        );
        assert!(
            answer.len() <= count,
            "step {}: more than {count} victims",
            self.step
        );
        self.report.victims_calls += 1;
        if P::TRAITS.contains(Traits::STABLE_ORDER) && !workload.sampled {
            let listed = match answer.split_last() {
                Some((&last, listed)) if is_arrivals(last) => listed,
                _ => &answer[..],
            };
            if let Some(previous) = &self.stable {
                // The promise covers the victims after the first: those a
                // host keeps queued once it evicted the first, and the
                // arrivals since if they follow.
                let promised = previous.get(1..).unwrap_or_default();
                let rest: Vec<u64> = listed
                    .iter()
                    .copied()
                    .filter(|&id| Some(&id) != previous.first())
                    .collect();
                let n = promised.len().min(rest.len());
                assert_eq!(
                    rest[..n],
                    promised[..n],
                    "step {}: stable-order broken: no event named a victim since the last call",
                    self.step
                );
                assert!(
                    rest.len() >= promised.len() || answer.len() == count,
                    "step {}: stable-order broken: fewer victims than before",
                    self.step
                );
                self.report.stable_checks += 1;
            }
            assert!(
                !listed.iter().any(|&id| is_arrivals(id)),
                "step {}: ARRIVALS only ends an answer",
                self.step
            );
            self.follows_arrivals = listed.len() < answer.len();
            self.report.arrivals_followed += usize::from(self.follows_arrivals);
            self.stable = Some(listed.to_vec());
        }
        answer
    }

    /// The host's side of a proposal: refuse what is pinned, not live or
    /// repeated, evict the first acceptable one, or choose itself.
    fn evict(&mut self, answer: &[u64]) {
        let answer = match answer.split_last() {
            Some((&last, listed))
                if is_arrivals(last) && P::TRAITS.contains(Traits::STABLE_ORDER) =>
            {
                listed
            }
            _ => answer,
        };
        let mut seen = Vec::new();
        for &id in answer {
            let reason = if seen.contains(&id) || !self.ids.is_live(id) {
                Some(RefusalReason::NotLive)
            } else if self.pinned.contains(&id) {
                Some(RefusalReason::Pinned)
            } else {
                None
            };
            seen.push(id);
            match reason {
                Some(reason) => {
                    self.report.refusals += 1;
                    let key = self.key_of(id);
                    self.send(Event::Refused {
                        id,
                        key,
                        tenant: (key % 3) as u16,
                        time: self.time,
                        reason,
                    });
                }
                None => {
                    self.report.evictions += 1;
                    self.report.policy_evictions += 1;
                    self.remove(id, RemovalCause::Evicted);
                    return;
                }
            }
        }
        // The host's own choice: any live session not pinned.
        for _ in 0..16 {
            let Some(id) = self.rng.pick(self.ids.live()) else {
                return;
            };
            if !self.pinned.contains(&id) {
                self.report.evictions += 1;
                self.remove(id, RemovalCause::Evicted);
                return;
            }
        }
    }
}
