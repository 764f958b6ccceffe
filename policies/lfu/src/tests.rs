use shadowcat_policy_sdk::testing::{Reference, Rng, Workload, compare};
use shadowcat_policy_sdk::{
    ARRIVALS, Choice, Config, Policy, RemovalCause, Session, Table, Traits, slot,
};

use crate::Lfu;

/// libCacheSim's LFU, spelled out: (id, count, sequence number of the last
/// touch), searched and sorted linearly.
#[derive(Default)]
struct Model {
    entries: Vec<(u64, u64, u64)>,
    seq: u64,
}

impl Model {
    fn touch(&mut self, id: u64) {
        self.seq += 1;
        match self.entries.iter_mut().find(|e| e.0 == id) {
            Some(e) => {
                e.1 += 1;
                e.2 = self.seq;
            }
            None => {
                self.entries.retain(|e| slot(e.0) != slot(id));
                self.entries.push((id, 1, self.seq));
            }
        }
    }

    fn ranked(&self) -> Vec<((u64, u64), u64)> {
        let mut ranked: Vec<_> = self.entries.iter().map(|e| ((e.1, e.2), e.0)).collect();
        ranked.sort();
        ranked
    }

    fn order(&self) -> Vec<u64> {
        self.ranked().into_iter().map(|r| r.1).collect()
    }
}

impl Reference for Model {
    fn insert(&mut self, s: &Session) {
        self.touch(s.id);
    }
    fn access(&mut self, s: &Session) {
        self.touch(s.id);
    }
    fn remove(&mut self, id: u64, _: RemovalCause) {
        self.entries.retain(|e| e.0 != id);
    }
    fn victims(&mut self, count: usize, choice: &Choice<'_>) -> Vec<u64> {
        if choice.candidates.is_empty() {
            // libCacheSim's first victim; the ones after it only while at
            // count 1, the promise `stable-order` can keep.
            // And the arrivals after them once no count-1 session is left
            // out, room permitting.
            let ranked = self.ranked();
            let limit = match ranked.first() {
                Some(((1, _), _)) => count,
                _ => count.min(1),
            };
            let mut answer: Vec<u64> = ranked
                .iter()
                .take(limit)
                .take_while(|((hits, _), _)| *hits == 1 || limit == 1)
                .map(|r| r.1)
                .collect();
            let ones = ranked.iter().filter(|((hits, _), _)| *hits == 1).count();
            if !ranked.is_empty() && answer.len() >= ones && answer.len() < count {
                answer.push(ARRIVALS);
            }
            return answer;
        }
        let mut ranked = Vec::new();
        for c in choice.candidates {
            if ranked.iter().any(|&(_, id)| id == c.id) {
                continue;
            }
            let rank = match self.entries.iter().find(|e| e.0 == c.id) {
                Some(e) => (e.1, 0, e.2),
                None => (0, c.last_access, 0),
            };
            ranked.push((rank, c.id));
        }
        ranked.sort();
        ranked.into_iter().take(count).map(|r| r.1).collect()
    }
}

fn lfu() -> Lfu {
    Lfu::create(&Table::new(64), &Config::default()).unwrap()
}

fn session(id: u64) -> Session {
    Session {
        id,
        key: 0,
        tenant: 0,
        size: 1,
        time: 0,
    }
}

#[test]
fn lfu_matches_the_reference_including_ties() {
    for seed in 1..=5 {
        let workload = Workload {
            seed,
            ..Workload::default()
        };
        let report = compare(&mut lfu(), &mut Model::default(), &workload);
        assert!(report.policy_evictions > 1000, "{report:?}");
        assert!(report.refusals > 10, "{report:?}");
        // Its promises, arrivals included, were checked along the way.
        assert!(report.stable_checks > 100, "{report:?}");
        assert!(report.arrivals_followed > 100, "{report:?}");
    }
}

#[test]
fn lfu_matches_the_reference_on_sampled_candidates() {
    for seed in 1..=5 {
        let workload = Workload {
            seed,
            sampled: true,
            ..Workload::default()
        };
        let report = compare(&mut lfu(), &mut Model::default(), &workload);
        assert!(report.policy_evictions > 1000, "{report:?}");
    }
}

#[test]
fn lfu_matches_the_reference_at_scale() {
    let workload = Workload {
        seed: 99,
        steps: 40_000,
        capacity: 1_000,
        keys: 10_000,
        max_count: 64,
        ..Workload::default()
    };
    compare(&mut lfu(), &mut Model::default(), &workload);
}

/// Beyond what a well-behaved host sends: repeated inserts, accesses and
/// removals of unknown ids, new generations over sessions whose removal was
/// missed. The whole order is compared after every event, so every bucket
/// split, merge and reuse is checked.
#[test]
fn lfu_buckets_keep_the_exact_order_under_any_event_sequence() {
    let mut rng = Rng::new(3);
    let mut lfu = lfu();
    let mut model = Model::default();
    let mut generations = [0u64; 24];
    for _ in 0..40_000 {
        let s = rng.below(24);
        if rng.percent(3) {
            generations[s as usize] += 1;
        }
        let id = (generations[s as usize] << 32) | s;
        match rng.below(10) {
            0..=2 => {
                lfu.on_insert(&session(id));
                model.touch(id);
            }
            3..=7 => {
                lfu.on_access(&session(id));
                model.touch(id);
            }
            _ => {
                lfu.on_remove(id, 0, RemovalCause::Closed);
                Reference::remove(&mut model, id, RemovalCause::Closed);
            }
        }
        assert_eq!(lfu.ids().collect::<Vec<_>>(), model.order());
        assert_eq!(lfu.entries.len(), model.entries.len());
    }
    // Buckets are reused, not leaked: never more than one per live session.
    assert!(lfu.buckets.len() <= 24, "{} buckets", lfu.buckets.len());
}

/// An arrival starts at count 1 behind the sessions already there, so a
/// list of count-1 victims keeps its order; ahead of a higher count it would
/// go first, so a lowest count above 1 gives the first victim alone. Once no
/// count-1 session is left out, the arrivals come next: the answer ends in
/// ARRIVALS when there is room.
#[test]
fn lfu_lists_further_victims_only_where_no_arrival_can_go_ahead() {
    assert!(Lfu::TRAITS.contains(Traits::STABLE_ORDER));
    let mut lfu = lfu();
    let ask = |lfu: &mut Lfu, count: usize| {
        let mut out = Vec::new();
        lfu.victims(count, &Choice::default(), &mut out);
        out
    };
    assert_eq!(ask(&mut lfu, 8), Vec::<u64>::new(), "empty: nothing to say");
    for id in 1..=4 {
        lfu.on_insert(&session(id));
    }
    lfu.on_access(&session(2));
    assert_eq!(
        ask(&mut lfu, 8),
        vec![1, 3, 4, ARRIVALS],
        "count-1 sessions only, not 2, then the arrivals"
    );
    assert_eq!(ask(&mut lfu, 3), vec![1, 3, 4], "no room left for them");
    assert_eq!(ask(&mut lfu, 2), vec![1, 3], "a count-1 session left out");
    lfu.on_insert(&session(5));
    assert_eq!(
        ask(&mut lfu, 8),
        vec![1, 3, 4, 5, ARRIVALS],
        "the arrival goes behind"
    );
    for id in [1, 3, 4, 5] {
        lfu.on_access(&session(id));
    }
    assert_eq!(
        ask(&mut lfu, 8),
        vec![2, ARRIVALS],
        "all at count 2: the first, then the arrivals"
    );
    assert_eq!(ask(&mut lfu, 1), vec![2], "no room for them");
    lfu.on_insert(&session(6));
    assert_eq!(ask(&mut lfu, 8), vec![6, ARRIVALS], "an arrival goes first");
}

/// A session alone at its count, with none at the next, keeps its bucket and
/// raises the bucket's count: no bucket is made or dropped. Where another
/// session holds the next count it joins that bucket, behind it.
#[test]
fn lfu_raises_a_lone_sessions_count_in_place() {
    let mut lfu = lfu();
    let mut model = Model::default();
    for id in [1, 2] {
        lfu.on_insert(&session(id));
        model.touch(id);
    }
    for _ in 0..100 {
        lfu.on_access(&session(2));
        model.touch(2);
    }
    assert_eq!(
        lfu.buckets.len(),
        2,
        "one bucket per count held, none spare"
    );
    assert!(lfu.spare.is_empty());
    let counts = |lfu: &Lfu| {
        let mut counts = Vec::new();
        let mut b = lfu.lowest;
        while let Some(bucket) = lfu.buckets.get(b as usize) {
            counts.push(bucket.count);
            b = bucket.higher;
        }
        counts
    };
    assert_eq!(counts(&lfu), vec![1, 101]);
    for _ in 0..100 {
        lfu.on_access(&session(1));
        model.touch(1);
    }
    // Session 1 met session 2's count on the way up and joined its bucket.
    assert_eq!(counts(&lfu), vec![101]);
    assert_eq!(lfu.ids().collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(lfu.ids().collect::<Vec<_>>(), model.order());
}
