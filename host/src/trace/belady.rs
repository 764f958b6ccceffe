//! Belady's offline optimum (MIN) in object mode.

use std::collections::BTreeSet;

use super::Trace;

/// Misses of the offline-optimal policy with room for `capacity` objects
/// (every object counts 1, sizes ignored): on a miss with a full cache, evict
/// the cached object whose next access is farthest in the future (objects
/// never requested again first). The missed object is always admitted, as in
/// libCacheSim's Belady. Every request counts, cold misses included.
///
/// Relies on `next_access` being filled (every constructor of [`Trace`] does).
/// O(n log capacity).
pub fn belady_misses(trace: &Trace, capacity: usize) -> u64 {
    if capacity == 0 {
        return trace.requests.len() as u64;
    }
    // The cache as (next access index, id), ordered so the last element is the
    // eviction victim. Keying by next access also answers "is this id cached?"
    // without a map: a cached object's key is the index of its next request, so
    // at request `i` it is cached iff `(i, id)` is in the set. Finite keys are
    // unique (each index is the next access of at most one request); the
    // never-again ones all share u64::MAX and are told apart by id.
    let mut cache: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut misses = 0u64;
    for (index, request) in trace.requests.iter().enumerate() {
        let hit = cache.remove(&(index as u64, request.id));
        if !hit {
            misses += 1;
            if cache.len() >= capacity {
                cache.pop_last();
            }
        }
        cache.insert((request.next_access, request.id));
    }
    misses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Request;

    fn trace_of(ids: &[u64]) -> Trace {
        let requests = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Request::new(i as u64, id, 1))
            .collect();
        Trace::new("hand-made", requests)
    }

    /// ids 1 2 3 1 4 1 2 5 2 3 (indices 0..=9).
    ///
    /// Capacity 2 (cache contents after each request, victim in brackets):
    /// ```text
    ///  i id  next  result  cache after
    ///  0  1   3    miss    {1}
    ///  1  2   6    miss    {1,2}
    ///  2  3   9    miss    full: 1 next@3, 2 next@6 -> evict [2]      {1,3}
    ///  3  1   5    hit                                              {1,3}
    ///  4  4   -    miss    1 next@5, 3 next@9 -> evict [3]          {1,4}
    ///  5  1   -    hit                                              {1,4}
    ///  6  2   8    miss    1 never, 4 never -> evict one, say [1]   {4,2}
    ///  7  5   -    miss    4 never, 2 next@8 -> evict [4]           {2,5}
    ///  8  2   -    hit                                              {2,5}
    ///  9  3   -    miss    both never -> evict either               {., 3}
    /// ```
    /// Misses: 0,1,2,4,6,7,9 = 7.
    ///
    /// Capacity 3:
    /// ```text
    ///  0 1 miss {1}; 1 2 miss {1,2}; 2 3 miss {1,2,3}
    ///  3 1 hit (1 next@5)
    ///  4 4 miss: 1 next@5, 2 next@6, 3 next@9 -> evict [3]  {1,2,4}
    ///  5 1 hit (1 never again)
    ///  6 2 hit (2 next@8)
    ///  7 5 miss: 1 never, 4 never -> evict one             {2,5,x}
    ///  8 2 hit
    ///  9 3 miss
    /// ```
    /// Misses: 0,1,2,4,7,9 = 6.
    ///
    /// Capacity 1: no id follows itself, so all 10 miss. Capacity 5 (= distinct
    /// ids) leaves only the 5 cold misses.
    #[test]
    fn hand_worked_example() {
        let trace = trace_of(&[1, 2, 3, 1, 4, 1, 2, 5, 2, 3]);
        assert_eq!(belady_misses(&trace, 0), 10);
        assert_eq!(belady_misses(&trace, 1), 10);
        assert_eq!(belady_misses(&trace, 2), 7);
        assert_eq!(belady_misses(&trace, 3), 6);
        assert_eq!(belady_misses(&trace, 5), 5);
        assert_eq!(belady_misses(&trace, 100), 5);
    }

    /// Brute force: try every eviction choice, keep the best. Belady's greedy
    /// choice is provably optimal among policies that admit every miss, so the
    /// two must agree on small random traces.
    #[test]
    fn matches_exhaustive_search() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};

        fn best(ids: &[u64], capacity: usize, cache: &mut Vec<u64>) -> u64 {
            let Some((&id, rest)) = ids.split_first() else {
                return 0;
            };
            if cache.contains(&id) {
                return best(rest, capacity, cache);
            }
            if cache.len() < capacity {
                cache.push(id);
                let misses = 1 + best(rest, capacity, cache);
                cache.pop();
                return misses;
            }
            let mut fewest = u64::MAX;
            for slot in 0..cache.len() {
                let evicted = std::mem::replace(&mut cache[slot], id);
                fewest = fewest.min(1 + best(rest, capacity, cache));
                cache[slot] = evicted;
            }
            fewest
        }

        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..200 {
            let len = rng.random_range(1..10);
            let ids: Vec<u64> = (0..len).map(|_| rng.random_range(0..5)).collect();
            let capacity = rng.random_range(1..4);
            let expected = best(&ids, capacity, &mut Vec::new());
            assert_eq!(
                belady_misses(&trace_of(&ids), capacity),
                expected,
                "ids {ids:?} capacity {capacity}"
            );
        }
    }
}
