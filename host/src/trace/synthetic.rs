//! Synthetic traces: deterministic, seedable workloads for demos and tests.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::{Request, Trace};

/// The shape of a synthetic workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyntheticKind {
    /// Zipf popularity over `ids` objects: id `k - 1` is the k-th most popular,
    /// requested with probability proportional to `1 / k^alpha`. `alpha = 0`
    /// is uniform; ~1 is typical of web and key-value caches.
    Zipf { alpha: f64 },
    /// Every id in `0..ids` equally likely.
    Uniform,
    /// Zipf traffic interrupted by scans: after every `scan_every` Zipf
    /// requests come `scan_length` requests to consecutive, never-before-seen
    /// ids (starting at `ids` and continuing across scans), each requested
    /// once. Models table scans / crawlers that flush recency-based caches;
    /// distinct ids therefore exceed `ids`.
    ZipfWithScans {
        alpha: f64,
        scan_every: usize,
        scan_length: usize,
    },
    /// Ids `0, 1, .., length - 1, 0, 1, ..` in a cycle: LRU's worst case
    /// whenever the cache holds fewer than `length` objects.
    Loop { length: u64 },
}

/// A synthetic trace description; parse one with [`FromStr`] (see there for
/// the syntax) or start from [`Default`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSpec {
    pub kind: SyntheticKind,
    /// Number of requests in the trace (scan requests included).
    pub requests: usize,
    /// Size of the id space the popularity distribution draws from (for
    /// `Loop`, the parser sets it to the loop length).
    pub ids: u64,
    /// RNG seed: the same spec always yields the same trace (on a given
    /// platform and `rand` version; `SmallRng` promises no more).
    pub seed: u64,
}

impl Default for SyntheticSpec {
    /// The embedded demo workload: Zipf alpha 1.0, 1,000,000 requests over
    /// 100,000 ids, seed 42.
    fn default() -> Self {
        Self {
            kind: SyntheticKind::Zipf { alpha: 1.0 },
            requests: 1_000_000,
            ids: 100_000,
            seed: 42,
        }
    }
}

/// Kinds accepted by the parser, for error messages.
const KINDS: &str = "zipf, uniform, scan, loop";
/// Defaults of the `scan` kind when its keys are omitted.
const DEFAULT_SCAN_EVERY: usize = 10_000;
const DEFAULT_SCAN_LENGTH: usize = 2_000;

/// Why a synthetic spec was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown synthetic trace kind {kind:?}; accepted: {KINDS}")]
    UnknownKind { kind: String },
    #[error("unknown key {key:?} for synthetic kind {kind}; accepted: {accepted}")]
    UnknownKey {
        kind: &'static str,
        key: String,
        accepted: &'static str,
    },
    #[error("expected key=value in synthetic spec, got {item:?}")]
    MissingValue { item: String },
    #[error("key {key:?} given twice in synthetic spec")]
    DuplicateKey { key: String },
    #[error("bad value {value:?} for {key}: expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("invalid synthetic spec: {reason}")]
    Invalid { reason: String },
}

impl SyntheticSpec {
    /// Checks the values a generator needs (the fields are public, so specs
    /// built by hand can hold anything).
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |reason: String| Err(SpecError::Invalid { reason });
        let check_alpha = |alpha: f64| {
            if alpha.is_finite() && alpha >= 0.0 {
                Ok(())
            } else {
                invalid(format!("alpha must be a finite number >= 0, got {alpha}"))
            }
        };
        match self.kind {
            SyntheticKind::Zipf { alpha } => check_alpha(alpha)?,
            SyntheticKind::Uniform => {}
            SyntheticKind::ZipfWithScans {
                alpha, scan_every, ..
            } => {
                check_alpha(alpha)?;
                if scan_every == 0 {
                    return invalid("scan every must be >= 1".into());
                }
            }
            SyntheticKind::Loop { length } => {
                if length == 0 {
                    return invalid("loop length must be >= 1".into());
                }
            }
        }
        if self.ids == 0 && !matches!(self.kind, SyntheticKind::Loop { .. }) {
            return invalid("ids must be >= 1".into());
        }
        if self.requests == 0 {
            // As for a trace file: a replay of nothing would print a table of
            // zeros that looks like a result.
            return invalid("requests must be >= 1: the trace has no requests".into());
        }
        Ok(())
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            SyntheticKind::Zipf { .. } => "zipf",
            SyntheticKind::Uniform => "uniform",
            SyntheticKind::ZipfWithScans { .. } => "scan",
            SyntheticKind::Loop { .. } => "loop",
        }
    }
}

impl fmt::Display for SyntheticSpec {
    /// The canonical spec string; parses back to the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.kind_name())?;
        match self.kind {
            SyntheticKind::Zipf { alpha } => write!(f, "alpha={alpha},")?,
            SyntheticKind::Uniform => {}
            SyntheticKind::ZipfWithScans {
                alpha,
                scan_every,
                scan_length,
            } => write!(f, "alpha={alpha},every={scan_every},length={scan_length},")?,
            SyntheticKind::Loop { length } => write!(f, "length={length},")?,
        }
        write!(f, "requests={},", self.requests)?;
        if !matches!(self.kind, SyntheticKind::Loop { .. }) {
            write!(f, "ids={},", self.ids)?;
        }
        write!(f, "seed={}", self.seed)
    }
}

impl FromStr for SyntheticSpec {
    type Err = SpecError;

    /// Parses `kind[:key=value,...]`, e.g. `zipf`,
    /// `zipf:alpha=0.8,requests=1000000,ids=100000,seed=7`, `uniform:ids=1000`,
    /// `scan:alpha=1.0,every=10000,length=2000`, `loop:length=5000`.
    ///
    /// Kinds and their keys (all optional; `requests`, `ids`, `seed` default to
    /// [`SyntheticSpec::default`]):
    /// - `zipf`: alpha (1.0), requests, ids, seed
    /// - `uniform`: requests, ids, seed
    /// - `scan` (alias `zipf-scan`): alpha (1.0), every (10000), length (2000),
    ///   requests, ids, seed
    /// - `loop`: length (defaults to ids; `ids` is accepted as a synonym),
    ///   requests, seed
    ///
    /// Integers may contain `_` separators (`1_000_000`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, args) = match s.split_once(':') {
            Some((kind, args)) => (kind.trim(), args),
            None => (s.trim(), ""),
        };
        let (kind_name, accepted): (&'static str, &'static str) =
            match kind.to_ascii_lowercase().as_str() {
                "zipf" => ("zipf", "alpha, requests, ids, seed"),
                "uniform" => ("uniform", "requests, ids, seed"),
                "scan" | "zipf-scan" => ("scan", "alpha, every, length, requests, ids, seed"),
                "loop" => ("loop", "length, ids, requests, seed"),
                _ => {
                    return Err(SpecError::UnknownKind {
                        kind: kind.to_string(),
                    })
                }
            };

        let defaults = SyntheticSpec::default();
        let mut alpha = None;
        let mut every = None;
        let mut length: Option<u64> = None;
        let mut requests = None;
        let mut ids = None;
        let mut seed = None;
        for item in args.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| SpecError::MissingValue {
                    item: item.to_string(),
                })?;
            let key_lower = key.to_ascii_lowercase();
            let known = accepted.split(", ").any(|k| k == key_lower);
            if !known {
                return Err(SpecError::UnknownKey {
                    kind: kind_name,
                    key: key.to_string(),
                    accepted,
                });
            }
            // Loop's `ids` is a synonym of `length`, so both fill one slot.
            let slot_key = if kind_name == "loop" && key_lower == "ids" {
                "length"
            } else {
                key_lower.as_str()
            };
            let duplicate = match slot_key {
                "alpha" => alpha.replace(parse_f64(key, value)?).is_some(),
                "every" => every.replace(parse_int::<usize>(key, value)?).is_some(),
                "length" => length.replace(parse_int::<u64>(key, value)?).is_some(),
                "requests" => requests.replace(parse_int::<usize>(key, value)?).is_some(),
                "ids" => ids.replace(parse_int::<u64>(key, value)?).is_some(),
                "seed" => seed.replace(parse_int::<u64>(key, value)?).is_some(),
                // Every accepted key is matched above.
                _ => false,
            };
            if duplicate {
                return Err(SpecError::DuplicateKey {
                    key: key.to_string(),
                });
            }
        }

        let alpha = alpha.unwrap_or(1.0);
        let mut ids = ids.unwrap_or(defaults.ids);
        let kind = match kind_name {
            "zipf" => SyntheticKind::Zipf { alpha },
            "uniform" => SyntheticKind::Uniform,
            "scan" => SyntheticKind::ZipfWithScans {
                alpha,
                scan_every: every.unwrap_or(DEFAULT_SCAN_EVERY),
                scan_length: usize::try_from(length.unwrap_or(DEFAULT_SCAN_LENGTH as u64))
                    .map_err(|_| SpecError::Invalid {
                        reason: "scan length does not fit in memory".into(),
                    })?,
            },
            _ => {
                let length = length.unwrap_or(defaults.ids);
                ids = length;
                SyntheticKind::Loop { length }
            }
        };
        let spec = SyntheticSpec {
            kind,
            requests: requests.unwrap_or(defaults.requests),
            ids,
            seed: seed.unwrap_or(defaults.seed),
        };
        spec.validate()?;
        Ok(spec)
    }
}

fn parse_int<T: FromStr>(key: &str, value: &str) -> Result<T, SpecError> {
    value
        .replace('_', "")
        .parse::<T>()
        .map_err(|_| SpecError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: "a non-negative integer (`_` separators allowed)",
        })
}

fn parse_f64(key: &str, value: &str) -> Result<f64, SpecError> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(SpecError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: "a finite number >= 0",
        }),
    }
}

/// Generates the trace described by `spec`: time = request index (µs),
/// size = 1, `next_access` filled.
///
/// # Panics
/// If `spec` fails [`SyntheticSpec::validate`]; specs from [`FromStr`] and
/// [`Default`] always pass. Use [`try_generate`] for hand-built specs.
pub fn generate(spec: &SyntheticSpec) -> Trace {
    match try_generate(spec) {
        Ok(trace) => trace,
        Err(e) => panic!("generate: {e}"),
    }
}

/// [`generate`] that reports an invalid spec instead of panicking.
pub fn try_generate(spec: &SyntheticSpec) -> Result<Trace, SpecError> {
    spec.validate()?;
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let zipf = |alpha: f64| {
        // ids as f64 is exact below 2^53, far beyond any in-memory trace.
        Zipf::new(spec.ids as f64, alpha).map_err(|e| SpecError::Invalid {
            reason: format!("Zipf over {} ids with alpha {alpha}: {e}", spec.ids),
        })
    };
    // Samples are integers in [1, ids]; rank 1 becomes id 0.
    let zipf_id = |sample: f64| (sample as u64).saturating_sub(1);

    let mut requests = Vec::with_capacity(spec.requests);
    match spec.kind {
        SyntheticKind::Zipf { alpha } => {
            let zipf = zipf(alpha)?;
            for i in 0..spec.requests {
                let id = zipf_id(zipf.sample(&mut rng));
                requests.push(Request::new(i as u64, id, 1));
            }
        }
        SyntheticKind::Uniform => {
            for i in 0..spec.requests {
                let id = rng.random_range(0..spec.ids);
                requests.push(Request::new(i as u64, id, 1));
            }
        }
        SyntheticKind::ZipfWithScans {
            alpha,
            scan_every,
            scan_length,
        } => {
            let zipf = zipf(alpha)?;
            let period = scan_every.saturating_add(scan_length);
            let mut next_scan_id = spec.ids;
            for i in 0..spec.requests {
                let id = if i % period < scan_every {
                    zipf_id(zipf.sample(&mut rng))
                } else {
                    next_scan_id += 1;
                    next_scan_id - 1
                };
                requests.push(Request::new(i as u64, id, 1));
            }
        }
        SyntheticKind::Loop { length } => {
            for i in 0..spec.requests {
                requests.push(Request::new(i as u64, i as u64 % length, 1));
            }
        }
    }
    Ok(Trace::new(spec.to_string(), requests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(s: &str) -> SyntheticSpec {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn default_is_the_embedded_demo() {
        let d = SyntheticSpec::default();
        assert_eq!(d.kind, SyntheticKind::Zipf { alpha: 1.0 });
        assert_eq!((d.requests, d.ids, d.seed), (1_000_000, 100_000, 42));
        assert_eq!(spec("zipf"), d);
        assert_eq!(
            d.to_string(),
            "zipf:alpha=1,requests=1000000,ids=100000,seed=42"
        );
    }

    #[test]
    fn parses_the_documented_examples() {
        let s = spec("zipf:alpha=0.8,requests=1000000,ids=100000,seed=7");
        assert_eq!(s.kind, SyntheticKind::Zipf { alpha: 0.8 });
        assert_eq!((s.requests, s.ids, s.seed), (1_000_000, 100_000, 7));

        let s = spec("uniform:ids=1000");
        assert_eq!(
            (s.kind, s.ids, s.requests),
            (SyntheticKind::Uniform, 1000, 1_000_000)
        );

        let s = spec("scan:alpha=1.0,every=10000,length=2000");
        assert_eq!(
            s.kind,
            SyntheticKind::ZipfWithScans {
                alpha: 1.0,
                scan_every: 10_000,
                scan_length: 2_000
            }
        );

        let s = spec("loop:length=5000");
        assert_eq!(
            (s.kind, s.ids),
            (SyntheticKind::Loop { length: 5000 }, 5000)
        );
        assert_eq!(spec("LOOP : ids = 7"), spec("loop:length=7"));
        assert_eq!(spec("zipf:requests=1_000").requests, 1000);

        for text in [
            "zipf:alpha=0.8,requests=10,ids=5,seed=7",
            "uniform:requests=3,ids=9,seed=1",
            "scan:alpha=1.2,every=3,length=4,requests=20,ids=5,seed=2",
            "loop:length=5,requests=20,seed=3",
        ] {
            assert_eq!(spec(text).to_string(), text, "Display round-trips");
        }
    }

    #[test]
    fn rejects_bad_specs_saying_what_is_accepted() {
        let err = |s: &str| s.parse::<SyntheticSpec>().unwrap_err();
        let e = err("zapf");
        assert!(matches!(e, SpecError::UnknownKind { .. }));
        assert!(e.to_string().contains("zipf, uniform, scan, loop"), "{e}");

        let e = err("uniform:alpha=1");
        assert!(matches!(e, SpecError::UnknownKey { .. }));
        assert!(
            e.to_string().contains("accepted: requests, ids, seed"),
            "{e}"
        );

        let e = err("zipf:ids=lots");
        assert!(matches!(e, SpecError::BadValue { .. }));
        assert!(e.to_string().contains("non-negative integer"), "{e}");

        assert!(matches!(err("zipf:alpha=-1"), SpecError::BadValue { .. }));
        assert!(matches!(err("zipf:alpha=nan"), SpecError::BadValue { .. }));
        assert!(matches!(err("zipf:alpha"), SpecError::MissingValue { .. }));
        assert!(matches!(
            err("zipf:seed=1,seed=2"),
            SpecError::DuplicateKey { .. }
        ));
        assert!(matches!(
            err("loop:length=3,ids=4"),
            SpecError::DuplicateKey { .. }
        ));
        assert!(matches!(err("zipf:ids=0"), SpecError::Invalid { .. }));
        assert!(matches!(err("loop:length=0"), SpecError::Invalid { .. }));
        assert!(matches!(err("scan:every=0"), SpecError::Invalid { .. }));
        for empty in ["zipf:requests=0", "loop:requests=0"] {
            let e = err(empty);
            assert!(e.to_string().contains("no requests"), "{empty}: {e}");
        }

        let hand_built = SyntheticSpec {
            kind: SyntheticKind::Zipf { alpha: f64::NAN },
            ..SyntheticSpec::default()
        };
        assert!(try_generate(&hand_built).is_err());
    }

    fn counts(trace: &Trace) -> HashMap<u64, u64> {
        let mut counts = HashMap::new();
        for r in &trace.requests {
            *counts.entry(r.id).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn zipf_frequencies_follow_one_over_rank() {
        let trace = generate(&spec("zipf:alpha=1.0,ids=1000,requests=200000,seed=3"));
        assert_eq!(trace.len(), 200_000);
        let counts = counts(&trace);
        assert!(counts.keys().all(|&id| id < 1000));
        let mut by_frequency: Vec<(u64, u64)> = counts.into_iter().collect();
        by_frequency.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(by_frequency[0].0, 0, "id 0 is the most popular");

        // Least-squares slope of ln(frequency) against ln(rank), ranks 1..=50.
        let points: Vec<(f64, f64)> = by_frequency[..50]
            .iter()
            .enumerate()
            .map(|(i, &(_, count))| (((i + 1) as f64).ln(), (count as f64).ln()))
            .collect();
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let slope = covariance / variance;
        assert!((-1.1..=-0.9).contains(&slope), "log-log slope {slope}");

        // And directly: rank 1 is ~k times as frequent as rank k.
        let ratio = by_frequency[0].1 as f64 / by_frequency[9].1 as f64;
        assert!((8.0..=12.5).contains(&ratio), "f(1)/f(10) = {ratio}");
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        for kind in ["zipf", "uniform", "scan:every=50,length=10"] {
            let base = spec(&format!(
                "{kind}{}requests=5000,ids=300,seed=11",
                if kind.contains(':') { "," } else { ":" }
            ));
            let again = generate(&base);
            assert_eq!(generate(&base), again, "{kind}");
            let other = generate(&SyntheticSpec { seed: 12, ..base });
            assert_ne!(other.requests, again.requests, "{kind}");
        }
    }

    #[test]
    fn uniform_covers_the_id_space_evenly() {
        let trace = generate(&spec("uniform:ids=100,requests=100000,seed=5"));
        let counts = counts(&trace);
        assert_eq!(counts.len(), 100);
        assert!(counts.keys().all(|&id| id < 100));
        // Expected 1000 each, standard deviation ~31: +-20% is > 6 sigma.
        assert!(
            counts.values().all(|&c| (800..=1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn scans_are_runs_of_fresh_consecutive_ids() {
        let trace = generate(&spec(
            "scan:alpha=1.0,every=100,length=20,ids=50,requests=1000,seed=1",
        ));
        let ids: Vec<u64> = trace.requests.iter().map(|r| r.id).collect();
        let mut next_scan_id = 50;
        for (block, chunk) in ids.chunks(120).enumerate() {
            let (zipf_part, scan_part) = chunk.split_at(chunk.len().min(100));
            assert!(
                zipf_part.iter().all(|&id| id < 50),
                "block {block}: Zipf part"
            );
            let expected: Vec<u64> = (next_scan_id..).take(scan_part.len()).collect();
            assert_eq!(scan_part, expected, "block {block}: scan");
            next_scan_id += scan_part.len() as u64;
        }
        // 1000 = 8 full periods + 40 Zipf requests: 8 scans of 20 ids, all once.
        assert_eq!(ids.iter().filter(|&&id| id >= 50).count(), 160);
        assert_eq!(trace.distinct_ids(), 160 + counts_below(&ids, 50));
    }

    fn counts_below(ids: &[u64], limit: u64) -> usize {
        let mut seen: Vec<u64> = ids.iter().copied().filter(|&id| id < limit).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    #[test]
    fn loop_cycles_through_its_ids() {
        let trace = generate(&spec("loop:length=7,requests=30"));
        for (i, r) in trace.requests.iter().enumerate() {
            assert_eq!(r.id, i as u64 % 7);
            assert_eq!(r.time, i as u64);
            let expected_next = if i + 7 < 30 { (i + 7) as u64 } else { u64::MAX };
            assert_eq!(r.next_access, expected_next);
        }
        assert_eq!(trace.distinct_ids(), 7);
    }
}
