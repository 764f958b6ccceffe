//! The frequency sketch: a count-min sketch of 4-bit counters (Caffeine's
//! `FrequencySketch`), optionally behind a doorkeeper (TinyLFU, section 3.4.2).
//!
//! Four rows of `width` counters, sixteen to a `u64` as Caffeine packs them, so
//! halving is a shift and a mask per word. A key's counter in row r is
//! `mix(key ^ SEEDS[r]) mod width`. An addition increments the key's four
//! counters that are below 15; its estimate is the least of them.
//!
//! The doorkeeper is a Bloom filter with as many bits as the sketch has
//! counters and three probes. A key's first addition only sets its bits, so
//! the one-hit wonders that make up most of a scan never reach the counters;
//! the estimate is the counters' plus the key's doorkeeper bit.
//!
//! After `sample_size` additions (one that changed nothing is not counted)
//! every counter halves and the doorkeeper clears. Halving drops the low bit
//! of the odd counters, a quarter of an addition each, which Caffeine takes off
//! the running count before halving it; so does this.

const DEPTH: usize = 4;
const MAX_COUNT: u64 = 15;
const SEEDS: [u64; DEPTH] = [
    0x97CB_3127_8F5C_5A51,
    0xC3A5_C85C_97CB_3127,
    0xB492_B66F_BE98_F273,
    0x9AE1_6A3B_2F90_404F,
];
const DOOR_SEED: u64 = 0xCBF2_9CE4_8422_2325;
const DOOR_PROBES: u64 = 3;
const COUNTERS_PER_WORD: usize = 16;
/// The low bit of every counter in a word.
const ONE_MASK: u64 = 0x1111_1111_1111_1111;
/// Every counter's bits but its top one: what survives a right shift by one.
const RESET_MASK: u64 = 0x7777_7777_7777_7777;
/// Widest row, in counters: 16 MiB of counters in all.
pub const MAX_WIDTH: usize = 1 << 23;

pub struct Sketch {
    width: usize,
    table: Vec<u64>,
    /// Doorkeeper bits; empty without a doorkeeper.
    door: Vec<u64>,
    door_mask: u64,
    sample_size: u64,
    size: u64,
}

impl Sketch {
    /// Rows of `width_factor x ceilPow2(max(capacity, 8))` counters (at most
    /// [`MAX_WIDTH`]); `None` when the memory cannot be had, and the policy
    /// then runs without frequencies rather than trapping.
    pub fn new(capacity: u64, width_factor: u32, sample: u32, doorkeeper: bool) -> Option<Self> {
        let rounded = usize::try_from(capacity.max(8))
            .ok()
            .and_then(usize::checked_next_power_of_two)
            .unwrap_or(MAX_WIDTH);
        let width = rounded.saturating_mul(width_factor as usize).min(MAX_WIDTH);
        let counters = DEPTH * width;
        let table = zeroed(counters / COUNTERS_PER_WORD)?;
        let door_bits = if doorkeeper { counters } else { 0 };
        let door = zeroed(door_bits.div_ceil(64))?;
        Some(Self {
            width,
            table,
            door,
            door_mask: (door_bits as u64).saturating_sub(1),
            sample_size: u64::from(sample).saturating_mul(capacity.max(1)),
            size: 0,
        })
    }

    #[inline]
    fn counter(&self, row: usize, key: u64) -> (usize, u32) {
        let index = row * self.width + (mix(key ^ SEEDS[row]) as usize & (self.width - 1));
        (
            index / COUNTERS_PER_WORD,
            (index % COUNTERS_PER_WORD) as u32 * 4,
        )
    }

    /// Double hashing from one digest: probe i is bit `h + i (h >> 32 | 1)`.
    #[inline]
    fn door_probes(&self, key: u64) -> impl Iterator<Item = (usize, u64)> + use<> {
        let h = mix(key ^ DOOR_SEED);
        let step = (h >> 32) | 1;
        let mask = self.door_mask;
        (0..DOOR_PROBES).map(move |i| {
            let bit = h.wrapping_add(i.wrapping_mul(step)) & mask;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    #[inline]
    fn in_door(&self, key: u64) -> bool {
        !self.door.is_empty() && self.door_probes(key).all(|(w, b)| self.door[w] & b != 0)
    }

    pub fn frequency(&self, key: u64) -> u32 {
        let mut estimate = MAX_COUNT;
        for row in 0..DEPTH {
            let (word, shift) = self.counter(row, key);
            estimate = estimate.min((self.table[word] >> shift) & 0xF);
        }
        estimate as u32 + u32::from(self.in_door(key))
    }

    pub fn increment(&mut self, key: u64) {
        let added = if !self.door.is_empty() && !self.in_door(key) {
            for (w, b) in self.door_probes(key) {
                self.door[w] |= b;
            }
            true
        } else {
            let mut added = false;
            for row in 0..DEPTH {
                let (word, shift) = self.counter(row, key);
                if (self.table[word] >> shift) & 0xF < MAX_COUNT {
                    self.table[word] += 1 << shift;
                    added = true;
                }
            }
            added
        };
        if added {
            self.size += 1;
            if self.size == self.sample_size {
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        let mut odd = 0u64;
        for word in &mut self.table {
            odd += u64::from((*word & ONE_MASK).count_ones());
            *word = (*word >> 1) & RESET_MASK;
        }
        self.door.fill(0);
        self.size = self.size.saturating_sub(odd >> 2) >> 1;
    }
}

fn zeroed(words: usize) -> Option<Vec<u64>> {
    let mut v = Vec::new();
    v.try_reserve_exact(words).ok()?;
    v.resize(words, 0);
    Some(v)
}

/// splitmix64's finaliser: every input bit reaches every output bit.
#[inline]
pub fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}
