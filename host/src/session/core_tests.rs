//! The core against a reference model: random operation sequences, with every
//! invariant and the whole observable state compared after each step.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;

use super::*;
use crate::eviction::{Unavailable, VictimRequest};

const IDLE: Micros = 100;
const MAX_AGE: Micros = 250;

/// Records every event the core emits.
#[derive(Default)]
struct Recorder(Mutex<Vec<PolicyEvent>>);

impl EvictionPolicy for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn record(&self, event: PolicyEvent) -> FlushHint {
        self.0.lock().push(event);
        FlushHint::Idle
    }
    fn victims(&self, _: VictimRequest, _: &mut Vec<SessionId>) -> Result<(), Unavailable> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        weight: u32,
        named: bool,
        shield: bool,
    },
    Touch(usize),
    Pin(usize),
    Unpin(usize),
    Remove(usize, bool),
    Activate(usize),
    /// Proposals by index into the model's sessions (out of range: a stale id).
    EvictProposed(Vec<usize>, usize),
    EvictLru(usize),
    Advance(Micros),
    Expire,
    Attach(usize),
    RemoveAll(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..4, any::<bool>(), any::<bool>())
            .prop_map(|(weight, named, shield)| Op::Insert { weight, named, shield }),
        5 => (0usize..16).prop_map(Op::Touch),
        2 => (0usize..16).prop_map(Op::Pin),
        2 => (0usize..16).prop_map(Op::Unpin),
        2 => (0usize..16, any::<bool>()).prop_map(|(i, c)| Op::Remove(i, c)),
        2 => (0usize..16).prop_map(Op::Activate),
        2 => (prop::collection::vec(0usize..20, 0..5), 0usize..4)
            .prop_map(|(p, n)| Op::EvictProposed(p, n)),
        1 => (0usize..4).prop_map(Op::EvictLru),
        3 => (0u64..60).prop_map(Op::Advance),
        2 => Just(Op::Expire),
        1 => (0usize..16).prop_map(Op::Attach),
        1 => any::<bool>().prop_map(Op::RemoveAll),
    ]
}

#[derive(Debug, Clone)]
struct ModelSession {
    id: SessionId,
    named: bool,
    weight: u32,
    pins: u32,
    /// Kept from eviction until activated (see `Core::shield`).
    shielded: bool,
    state: SessionState,
    pending: Option<RemovalCause>,
    created_at: Micros,
    last_access: Micros,
    requests: u64,
    has_deadline: bool,
    attached: bool,
}

/// The obviously-correct table: a vector in LRU order.
#[derive(Default)]
struct Model {
    lru: Vec<ModelSession>,
    removed: HashMap<RemovalCause, u64>,
    created: u64,
}

impl Model {
    fn position(&self, id: SessionId) -> Option<usize> {
        self.lru.iter().position(|s| s.id == id)
    }

    fn evictable(s: &ModelSession) -> bool {
        s.pins == 0 && !s.shielded
    }

    fn live_weight(&self) -> u64 {
        self.lru.iter().map(|s| u64::from(s.weight)).sum()
    }

    fn take(&mut self, at: usize, cause: RemovalCause) -> ModelSession {
        *self.removed.entry(cause).or_default() += 1;
        self.lru.remove(at)
    }

    fn remove(&mut self, at: usize, cause: RemovalCause) {
        let s = &mut self.lru[at];
        if s.pins > 0 {
            s.pending.get_or_insert(cause);
            s.state = SessionState::Closing;
        } else {
            self.take(at, cause);
        }
    }
}

struct Harness {
    core: Core<()>,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    model: Model,
    now: Micros,
    ids_ever: Vec<SessionId>,
    max: usize,
    capacity: u64,
}

impl Harness {
    fn new(max: usize, capacity: u64) -> Self {
        let metrics = Arc::new(Metrics::default());
        let config = TableConfig {
            max_sessions: max,
            weight_capacity: Some(capacity),
            idle_timeout: Some(Duration::from_micros(IDLE)),
            max_age: Some(Duration::from_micros(MAX_AGE)),
            rate_limit: None,
            ..TableConfig::default()
        };
        Self {
            core: Core::new(&config, Arc::clone(&metrics)),
            recorder: Arc::new(Recorder::default()),
            metrics,
            model: Model::default(),
            now: 0,
            ids_ever: Vec::new(),
            max,
            capacity,
        }
    }

    fn pick(&self, i: usize) -> Option<SessionId> {
        (!self.model.lru.is_empty()).then(|| self.model.lru[i % self.model.lru.len()].id)
    }

    fn apply(&mut self, op: &Op) {
        let recorder = Arc::clone(&self.recorder);
        let mut fx = Effects::new(&*recorder, true);
        let now = self.now;
        match op {
            Op::Insert {
                weight,
                named,
                shield,
            } => {
                let fits = self.model.lru.len() < self.max
                    && self.model.live_weight() + u64::from(*weight) <= self.capacity;
                assert_eq!(self.core.fits(*weight), fits, "fits");
                if fits {
                    let external_id = named.then(|| Arc::from(format!("s{}", self.ids_ever.len())));
                    let id = self
                        .core
                        .insert(
                            Insert {
                                external_id,
                                key: 7,
                                tenant: 0,
                                weight: *weight,
                                upstream: (),
                            },
                            now,
                            &mut fx,
                        )
                        .map_err(|(e, _)| e)
                        .expect("a fitting insert succeeds");
                    if *shield {
                        self.core.shield(id);
                    }
                    assert!(!self.ids_ever.contains(&id), "an id is never reused");
                    self.ids_ever.push(id);
                    self.model.created += 1;
                    let shielded_now = self.model.lru.iter().filter(|s| s.shielded).count();
                    self.model.lru.push(ModelSession {
                        id,
                        named: *named,
                        weight: *weight,
                        pins: 0,
                        shielded: *shield && shielded_now < self.max / 2,
                        state: SessionState::Initializing,
                        pending: None,
                        created_at: now,
                        last_access: now,
                        requests: 0,
                        has_deadline: true,
                        attached: false,
                    });
                }
            }
            Op::Touch(i) => {
                let Some(id) = self.pick(*i) else { return };
                let at = self.model.position(id).expect("picked");
                let accepts = self.model.lru[at].state.accepts_requests();
                assert_eq!(self.core.touch(id, 1, now, &mut fx).is_ok(), accepts);
                if accepts {
                    let mut s = self.model.lru.remove(at);
                    s.last_access = now;
                    s.requests += 1;
                    self.model.lru.push(s);
                }
            }
            Op::Pin(i) => {
                let Some(id) = self.pick(*i) else { return };
                self.core.pin(id).expect("a live session pins");
                let at = self.model.position(id).expect("picked");
                self.model.lru[at].pins += 1;
            }
            Op::Unpin(i) => {
                let Some(id) = self.pick(*i) else { return };
                let at = self.model.position(id).expect("picked");
                let result = self.core.unpin(id, now, &mut fx);
                if self.model.lru[at].pins == 0 {
                    assert_eq!(result, Err(TableError::NotPinned(id)));
                } else {
                    result.expect("unpin");
                    let s = &mut self.model.lru[at];
                    s.pins -= 1;
                    if let (0, Some(cause)) = (s.pins, s.pending) {
                        self.model.take(at, cause);
                    }
                }
            }
            Op::Remove(i, closed) => {
                let Some(id) = self.pick(*i) else { return };
                let cause = if *closed {
                    RemovalCause::Closed
                } else {
                    RemovalCause::Deleted
                };
                let at = self.model.position(id).expect("picked");
                let expect = if self.model.lru[at].pins > 0 {
                    RemoveOutcome::Deferred
                } else {
                    RemoveOutcome::Removed
                };
                assert_eq!(self.core.remove(id, cause, now, &mut fx), Ok(expect));
                self.model.remove(at, cause);
            }
            Op::Activate(i) => {
                let Some(id) = self.pick(*i) else { return };
                let at = self.model.position(id).expect("picked");
                let result = self.core.activate(id);
                let s = &mut self.model.lru[at];
                match s.state {
                    SessionState::Initializing | SessionState::Active => {
                        result.expect("activate");
                        s.state = SessionState::Active;
                        s.shielded = false;
                    }
                    _ => assert!(result.is_err()),
                }
            }
            Op::EvictProposed(picks, count) => {
                let proposals: Vec<SessionId> = picks
                    .iter()
                    .map(|&p| {
                        if p < self.model.lru.len() {
                            self.model.lru[p].id
                        } else {
                            // Stale or never issued.
                            self.ids_ever
                                .get(p % self.ids_ever.len().max(1))
                                .copied()
                                .unwrap_or(SessionId::new(999, 9))
                        }
                    })
                    .collect();
                let evicted = self
                    .core
                    .evict_proposed(&proposals, Room::Sessions(*count), now, &mut fx)
                    .evicted;
                let mut expected = 0;
                for id in proposals {
                    if expected >= *count {
                        break;
                    }
                    if let Some(at) = self
                        .model
                        .position(id)
                        .filter(|&at| Model::evictable(&self.model.lru[at]))
                    {
                        self.model.take(at, RemovalCause::Evicted);
                        expected += 1;
                    }
                }
                assert_eq!(evicted, expected);
            }
            Op::EvictLru(count) => {
                let evicted = self
                    .core
                    .evict_lru(Room::Sessions(*count), 0, false, now, &mut fx);
                let mut expected = 0;
                while expected < *count {
                    let Some(at) = self.model.lru.iter().position(Model::evictable) else {
                        break;
                    };
                    self.model.take(at, RemovalCause::Evicted);
                    expected += 1;
                }
                assert_eq!(evicted, expected);
            }
            Op::Advance(by) => self.now += by,
            Op::Expire => {
                self.core.expire(now, &mut fx);
                // Idle: from the least recent, stopping at the first fresh one.
                while let Some(front) = self.model.lru.first() {
                    if now - front.last_access < IDLE {
                        break;
                    }
                    if front.pins > 0 {
                        let mut s = self.model.lru.remove(0);
                        s.last_access = now;
                        self.model.lru.push(s);
                        continue;
                    }
                    self.model.take(0, RemovalCause::ExpiredIdle);
                }
                // Age: every session past its deadline, oldest first.
                let mut due: Vec<(Micros, SessionId)> = self
                    .model
                    .lru
                    .iter()
                    .filter(|s| s.has_deadline && s.created_at + MAX_AGE <= now)
                    .map(|s| (s.created_at, s.id))
                    .collect();
                due.sort_by_key(|&(created, id)| {
                    (created, self.ids_ever.iter().position(|&x| x == id))
                });
                for (_, id) in due {
                    let at = self.model.position(id).expect("due is live");
                    self.model.lru[at].has_deadline = false;
                    self.model.remove(at, RemovalCause::ExpiredAge);
                }
            }
            Op::Attach(i) => {
                let Some(id) = self.pick(*i) else { return };
                let at = self.model.position(id).expect("picked");
                let result = self.core.attach(id);
                if self.model.lru[at].state.accepts_requests() {
                    result.expect("attach");
                    self.model.lru[at].attached = true;
                } else {
                    assert!(result.is_err());
                }
            }
            Op::RemoveAll(force) => {
                let (removed, released) =
                    self.core
                        .remove_all(RemovalCause::Shutdown, *force, now, &mut fx);
                let mut expect_removed = 0;
                let mut expect_released = 0;
                let ids: Vec<SessionId> = self.model.lru.iter().map(|s| s.id).collect();
                for id in ids {
                    let at = self.model.position(id).expect("live");
                    if *force {
                        expect_released += self.model.lru[at].pins as usize;
                        self.model.lru[at].pins = 0;
                    }
                    if self.model.lru[at].pins == 0 {
                        expect_removed += 1;
                    }
                    self.model.remove(at, RemovalCause::Shutdown);
                }
                assert_eq!((removed, released), (expect_removed, expect_released));
            }
        }
        // Every close signal fired belongs to a removed, attached session.
        for (signal, _) in &fx.signals {
            assert!(Arc::strong_count(signal) >= 1);
        }
        let removed_now: Vec<SessionId> = fx.removed.iter().map(|r| r.info.id).collect();
        for id in removed_now {
            assert!(
                self.model.position(id).is_none(),
                "handed out but still live"
            );
        }
        self.check();
    }

    fn check(&self) {
        let stats = self.core.stats();
        let model = &self.model;
        assert_eq!(stats.live, model.lru.len(), "live count");
        assert_eq!(
            stats.lru_len,
            model.lru.len(),
            "LRU holds each session once"
        );
        assert_eq!(stats.live_weight, model.live_weight(), "live weight");
        let order: Vec<SessionId> = self.core.snapshot().iter().map(|s| s.id).collect();
        let expected: Vec<SessionId> = model.lru.iter().map(|s| s.id).collect();
        assert_eq!(order, expected, "LRU order");
        for s in &model.lru {
            let info = self.core.info(s.id).expect("model session is live");
            assert_eq!(info.state, s.state, "state of {:?}", s.id);
            assert_eq!(info.pins, s.pins, "pins of {:?}", s.id);
            assert_eq!(info.shielded, s.shielded, "shield of {:?}", s.id);
            assert_eq!(info.last_access, s.last_access, "last access of {:?}", s.id);
            assert_eq!(info.requests, s.requests);
            assert_eq!(info.external_id.is_some(), s.named);
        }
        let pinned: Vec<&ModelSession> =
            model.lru.iter().filter(|s| !Model::evictable(s)).collect();
        assert_eq!(stats.pinned_sessions, pinned.len(), "pinned sessions");
        let shielded = model.lru.iter().filter(|s| s.shielded).count();
        assert_eq!(stats.shielded_sessions, shielded, "shielded sessions");
        assert!(shielded <= self.max / 2, "at most half the table shielded");
        assert_eq!(
            stats.pinned_weight,
            pinned.iter().map(|s| u64::from(s.weight)).sum::<u64>(),
            "pinned weight"
        );
        assert_eq!(
            stats.external_ids,
            model.lru.iter().filter(|s| s.named).count(),
            "external ids"
        );
        assert_eq!(
            stats.attachments,
            model.lru.iter().filter(|s| s.attached).count(),
            "attachments"
        );
        assert!(stats.deadline_queue_len <= 2 * stats.live + 64, "{stats:?}");
        let m = self.metrics.snapshot();
        assert_eq!(m.created, model.created);
        for cause in RemovalCause::ALL {
            assert_eq!(
                m.removed_by(cause),
                model.removed.get(&cause).copied().unwrap_or(0),
                "removals by {cause:?}"
            );
        }
        let active = model
            .lru
            .iter()
            .filter(|s| s.state == SessionState::Active)
            .count();
        assert_eq!(m.active, active as i64, "active gauge");
        assert!(stats.live <= self.max);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn session_core_matches_the_reference_model(ops in prop::collection::vec(op(), 1..160)) {
        let mut harness = Harness::new(8, 14);
        for op in &ops {
            harness.apply(op);
        }
        // Every event the policy saw names sessions in a consistent life:
        // inserted once, then accessed or refused, removed at most once.
        let mut life: HashMap<SessionId, u8> = HashMap::new();
        for event in harness.recorder.0.lock().iter() {
            match *event {
                PolicyEvent::Inserted { id, .. } => {
                    prop_assert!(life.insert(id, 1).is_none(), "inserted twice");
                }
                PolicyEvent::Accessed { id, .. } => {
                    prop_assert_eq!(life.get(&id), Some(&1), "access of a removed session");
                }
                PolicyEvent::Removed { id, .. } => {
                    prop_assert_eq!(life.insert(id, 2), Some(1), "removed twice or never inserted");
                }
                PolicyEvent::Refused { .. } => {}
            }
        }
    }
}

#[test]
fn session_handshake_shield_keeps_newcomers_from_eviction_not_from_removal() {
    let mut harness = Harness::new(4, 100);
    let insert = |shield| Op::Insert {
        weight: 1,
        named: true,
        shield,
    };
    for shield in [true, false, true, true] {
        harness.apply(&insert(shield));
    }
    let ids: Vec<SessionId> = harness.model.lru.iter().map(|s| s.id).collect();
    let stats = harness.core.stats();
    // Half the table at most: the third shield request was not granted.
    assert_eq!(stats.shielded_sessions, 2);
    assert_eq!(stats.pinned_sessions, 2);
    assert!(!harness.model.lru[3].shielded);
    // Eviction passes over the shielded least recent session, and a
    // policy's proposal of it is refused and reported.
    harness.apply(&Op::EvictProposed(vec![0], 1));
    assert_eq!(
        harness.core.stats().live,
        4,
        "a shielded proposal is refused"
    );
    assert!(harness
        .recorder
        .0
        .lock()
        .iter()
        .any(|e| matches!(e, PolicyEvent::Refused { id, .. } if *id == ids[0])));
    harness.apply(&Op::EvictLru(1));
    assert!(
        harness.model.position(ids[1]).is_none(),
        "the unshielded one went"
    );
    assert!(harness.model.position(ids[0]).is_some());
    // The handshake's end lifts the shield: it is the LRU victim again.
    harness.apply(&Op::Activate(0));
    assert_eq!(harness.core.stats().shielded_sessions, 1);
    harness.apply(&Op::EvictLru(1));
    assert!(harness.model.position(ids[0]).is_none());
    // A shield defers no removal: gone at once, and its place is free.
    let shielded = harness.model.position(ids[2]).expect("live");
    assert!(harness.model.lru[shielded].shielded);
    harness.apply(&Op::Remove(shielded, true));
    assert!(harness.model.position(ids[2]).is_none());
    let stats = harness.core.stats();
    assert_eq!((stats.shielded_sessions, stats.pinned_sessions), (0, 0));
    // Nor an idle expiry: a half-open session past the idle timeout goes.
    harness.apply(&insert(true));
    assert_eq!(harness.core.stats().shielded_sessions, 1);
    harness.apply(&Op::Advance(IDLE));
    harness.apply(&Op::Expire);
    let stats = harness.core.stats();
    assert_eq!(
        (stats.live, stats.shielded_sessions, stats.pinned_sessions),
        (0, 0, 0)
    );
}

#[test]
fn session_slots_retire_when_their_generations_are_spent() {
    let mut harness = Harness::new(2, 100);
    harness.apply(&Op::Insert {
        weight: 1,
        named: false,
        shield: false,
    });
    let first = harness.model.lru[0].id;
    harness.apply(&Op::Remove(0, true));
    harness.core.age_slot(first.slot(), u32::MAX);
    harness.apply(&Op::Insert {
        weight: 1,
        named: false,
        shield: false,
    });
    let last_generation = harness.model.lru[0].id;
    assert_eq!(last_generation.slot(), first.slot());
    assert_eq!(last_generation.generation(), u32::MAX);
    harness.apply(&Op::Remove(0, true));
    assert_eq!(harness.core.stats().retired_slots, 1);
    harness.apply(&Op::Insert {
        weight: 1,
        named: false,
        shield: false,
    });
    let next = harness.model.lru[0].id;
    assert_ne!(next.slot(), first.slot(), "a spent slot is never reused");
    assert_eq!(harness.core.stats().free_slots, 0);
}

#[test]
fn session_reclaimable_refuses_when_pinned_weight_blocks_the_newcomer() {
    let metrics = Arc::new(Metrics::default());
    let config = TableConfig {
        max_sessions: 10,
        weight_capacity: Some(10),
        rate_limit: Some(RateLimit {
            per_second: NonZeroU32::new(5).expect("non-zero"),
            burst: NonZeroU32::new(5).expect("non-zero"),
        }),
        ..TableConfig::default()
    };
    let mut core: Core<()> = Core::new(&config, metrics);
    let recorder = Recorder::default();
    let mut fx = Effects::new(&recorder, false);
    let insert = |weight| Insert {
        external_id: None,
        key: 0,
        tenant: 0,
        weight,
        upstream: (),
    };
    let big = core
        .insert(insert(6), 0, &mut fx)
        .map_err(|(e, _)| e)
        .expect("big");
    core.insert(insert(3), 0, &mut fx)
        .map_err(|(e, _)| e)
        .expect("small");
    core.pin(big).expect("pin");
    assert!(!core.fits(5));
    assert!(
        !core.reclaimable(5),
        "6 pinned + 5 > 10 whatever is evicted"
    );
    assert!(
        core.reclaimable(4),
        "evicting the small one makes room for 4"
    );
    assert_eq!(core.stats().limiters, 2);
    assert_eq!(core.victims_needed(4), 1);
}
