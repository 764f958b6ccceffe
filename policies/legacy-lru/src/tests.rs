use crate::{Guest, LegacyLru};

fn event(kind: u64, id: u64, time: u64) -> [u64; 3] {
    [kind, id, time]
}

fn victims(count: u32, events: &[[u64; 3]], candidates: &[[u64; 3]]) -> Result<Vec<u64>, String> {
    let mut input = vec![events.len() as u64];
    input.extend(events.iter().flatten());
    input.extend(candidates.iter().flatten());
    LegacyLru::victims(count, input)
}

/// Against a vector in recency order, on random events over reused ids.
#[test]
fn legacy_lru_is_an_exact_lru() {
    LegacyLru::create(10, Vec::new()).unwrap();
    let mut model: Vec<u64> = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for time in 0..20_000 {
        let id = next(50);
        let kind = next(3);
        let mut batch = vec![event(kind, id, time)];
        if kind == 2 {
            batch[0][0] |= next(5) << 8;
            model.retain(|&x| x != id);
        } else {
            model.retain(|&x| x != id);
            model.push(id);
        }
        if next(2) == 0 {
            LegacyLru::observe(batch.concat()).unwrap();
            batch.clear();
        }
        let count = 1 + next(6) as u32;
        let got = victims(count, &batch, &[]).unwrap();
        assert_eq!(
            got,
            model
                .iter()
                .take(count as usize)
                .copied()
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn legacy_lru_ranks_candidates_by_last_touch() {
    LegacyLru::create(10, Vec::new()).unwrap();
    let events = [
        event(0, 1, 10),
        event(0, 2, 10),
        event(1, 1, 10),
        event(0, 3, 20),
    ];
    // 2 and 1 were touched at 10 (2 first); 9 is unknown, last accessed at 10.
    let candidates = [[3, 20, 1], [9, 10, 1], [1, 10, 2], [2, 10, 1], [1, 10, 2]];
    assert_eq!(victims(10, &events, &candidates).unwrap(), [2, 1, 9, 3]);
}

#[test]
fn legacy_lru_rejects_malformed_input() {
    LegacyLru::create(10, Vec::new()).unwrap();
    assert!(LegacyLru::observe(vec![0, 1]).is_err());
    assert!(LegacyLru::observe(vec![3, 1, 1]).is_err());
    assert!(LegacyLru::observe(vec![2 | (5 << 8), 1, 1]).is_err());
    assert!(LegacyLru::victims(1, vec![]).is_err());
    assert!(LegacyLru::victims(1, vec![2, 0, 1, 1]).is_err());
    assert!(LegacyLru::victims(1, vec![u64::MAX]).is_err());
    assert!(LegacyLru::victims(1, vec![0, 1, 2]).is_err());
    assert!(LegacyLru::adjust_quotas(vec![1, 2, 3]).is_err());
    assert_eq!(LegacyLru::adjust_quotas(vec![1, 2, 3, 4]), Ok(vec![]));
    assert!(LegacyLru::create(10, vec![("x".into(), "1".into())]).is_err());
}
