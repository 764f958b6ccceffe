//! Cache access traces: reading real traces, generating synthetic ones, and the
//! offline optimum (Belady) that eviction policies are compared against.
//!
//! A [`Trace`] is a flat list of [`Request`]s. Every request carries the index of
//! the next request to the same object ([`Request::next_access`]); we always
//! compute that ourselves ([`fill_next_access`]) rather than trusting a file,
//! because skipping records (zero-size ones) shifts indices and because only the
//! oracleGeneral format carries the field at all.
//!
//! Supported inputs (see [`TraceFormat`] and [`detect_format`]):
//! - libCacheSim's *oracleGeneral* binary records (`.oracleGeneral.bin`, `.bin`),
//! - CSV with configurable columns ([`CsvOptions`]),
//! - plain text, one object id per line.
//!
//! Any of them may be zstd-compressed; that is decided by a trailing `.zst` in
//! the file name, never by sniffing, so a raw file is never misread as
//! compressed.

mod belady;
mod csv;
mod input;
mod oracle;
mod synthetic;
mod text;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use belady::belady_misses;
pub use csv::CsvOptions;
pub use oracle::{
    encode as encode_oracle_record, write_oracle_general, RECORD_SIZE as ORACLE_RECORD_SIZE,
};
pub use synthetic::{generate, try_generate, SpecError, SyntheticKind, SyntheticSpec};

/// `next_access` value of a request whose object is never requested again.
pub const NO_NEXT_ACCESS: u64 = u64::MAX;

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// Trace time in microseconds (oracleGeneral seconds * 1e6; the request
    /// index for synthetic traces; the line index for text traces).
    pub time: u64,
    /// Object id. Non-numeric ids from CSV/text are hashed with [`hash_id`].
    pub id: u64,
    /// Object size in bytes (never 0: zero-size records are skipped on read).
    pub size: u32,
    /// Index (0-based, into [`Trace::requests`]) of the next request to the
    /// same id, [`NO_NEXT_ACCESS`] (`u64::MAX`) if none.
    pub next_access: u64,
}

impl Request {
    /// A request whose `next_access` is still to be filled in by
    /// [`fill_next_access`].
    pub fn new(time: u64, id: u64, size: u32) -> Self {
        Self {
            time,
            id,
            size,
            next_access: NO_NEXT_ACCESS,
        }
    }
}

/// A whole trace, held in memory (32 bytes per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Human-readable name: the file name, or the synthetic spec.
    pub name: String,
    /// The requests in trace order, `next_access` filled in.
    pub requests: Vec<Request>,
    /// Records dropped on read because their size was 0 (the reference
    /// simulator neither replays nor counts them).
    pub skipped_zero_size: u64,
}

impl Trace {
    /// Builds a trace from requests in order, computing `next_access`.
    pub fn new(name: impl Into<String>, mut requests: Vec<Request>) -> Self {
        fill_next_access(&mut requests);
        Self {
            name: name.into(),
            requests,
            skipped_zero_size: 0,
        }
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// True if the trace has no request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Number of distinct object ids.
    ///
    /// Every id has exactly one last request, the one with no next access, so
    /// counting those needs no hash set (relies on `next_access` being filled,
    /// which every constructor in this module does).
    pub fn distinct_ids(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.next_access == NO_NEXT_ACCESS)
            .count()
    }

    /// Sum of the sizes of all requests, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.requests.iter().map(|r| u64::from(r.size)).sum()
    }

    /// Sum of the sizes of the distinct objects (each counted once, at the size
    /// of its last request): the byte capacity at which nothing is evicted.
    pub fn unique_bytes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.next_access == NO_NEXT_ACCESS)
            .map(|r| u64::from(r.size))
            .sum()
    }

    /// Number of requests whose object was seen before (the hits of an
    /// infinite cache): an upper bound on the hits of any policy.
    pub fn reuses(&self) -> usize {
        self.len() - self.distinct_ids()
    }
}

/// Fills [`Request::next_access`] for every request: O(n) backwards scan that
/// remembers, per id, the index of the closest later request.
pub fn fill_next_access(requests: &mut [Request]) {
    // Sized for the common case of a few requests per id; it grows if needed.
    let mut next: IdMap<u64> =
        HashMap::with_capacity_and_hasher(requests.len() / 4 + 16, Default::default());
    for (index, request) in requests.iter_mut().enumerate().rev() {
        // usize -> u64 is lossless on every platform Rust supports.
        let index = index as u64;
        request.next_access = next.insert(request.id, index).unwrap_or(NO_NEXT_ACCESS);
    }
}

/// A map keyed by object id with [`IdHasher`], for the passes over a trace.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hasher for `u64` ids in [`fill_next_access`]: one folded 64x64->128
/// multiply. std's SipHash made that pass ~3x slower (1.8 s of 2.8 s for a
/// 10M-request trace); its DoS resistance buys nothing for an offline replay of
/// the user's own file. The fold keeps high input bits in the low output bits,
/// which matters because block traces often use aligned ids (low bits zero).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this module never uses.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15; // 2^64 / golden ratio, odd
        let product = u128::from(self.0 ^ value) * u128::from(K);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 64-bit FNV-1a, used to turn non-numeric ids into `u64`.
///
/// Hand-written on purpose: the value must stay stable across Rust releases and
/// runs (std's `DefaultHasher` promises neither), and it is five lines.
pub fn hash_id(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Turns an id field into a `u64`: a decimal integer that fits is taken as is
/// (so numeric ids stay readable in reports), anything else is hashed with
/// [`hash_id`]. A string could in principle hash onto a numeric id; with 64-bit
/// hashes that is negligible for cache simulation.
pub fn parse_id(field: &[u8]) -> u64 {
    let all_digits = !field.is_empty() && field.iter().all(u8::is_ascii_digit);
    if all_digits {
        // All-ASCII, so from_utf8 cannot fail; parse fails only on overflow.
        if let Some(value) = std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            return value;
        }
    }
    hash_id(field)
}

/// How a trace file is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceFormat {
    /// libCacheSim oracleGeneral: packed 24-byte little-endian records
    /// `u32 time (s) | u64 id | u32 size | i64 next access`.
    OracleGeneral,
    /// Delimited text with configurable columns.
    Csv(CsvOptions),
    /// One id per line; blank lines and `#` comments skipped.
    Text,
}

impl TraceFormat {
    /// Short name for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            TraceFormat::OracleGeneral => "oracleGeneral",
            TraceFormat::Csv(_) => "csv",
            TraceFormat::Text => "text",
        }
    }
}

/// Guesses the format from the file name (case-insensitive):
/// `.oracleGeneral.bin`, `.bin` -> oracleGeneral; `.csv` -> CSV; `.tsv` -> CSV
/// with tab delimiter; `.txt`, `.log` -> text. A trailing `.zst` is looked
/// through (`x.csv.zst` is compressed CSV); a bare or unrecognised `.zst`
/// (e.g. `x.oracleGeneral.zst`) is taken as oracleGeneral, the form in which
/// libCacheSim ships its traces.
pub fn detect_format(path: &Path) -> Option<TraceFormat> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let (inner, compressed) = match name.strip_suffix(".zst") {
        Some(inner) => (inner, true),
        None => (name.as_str(), false),
    };
    let extension = Path::new(inner)
        .extension()
        .map(|e| e.to_string_lossy().into_owned());
    match extension.as_deref() {
        Some("bin") | Some("oraclegeneral") => Some(TraceFormat::OracleGeneral),
        Some("csv") => Some(TraceFormat::Csv(CsvOptions::default())),
        Some("tsv") => Some(TraceFormat::Csv(CsvOptions {
            delimiter: b'\t',
            ..CsvOptions::default()
        })),
        Some("txt") | Some("log") => Some(TraceFormat::Text),
        _ if compressed => Some(TraceFormat::OracleGeneral),
        _ => None,
    }
}

/// Everything that can go wrong reading a trace. Each message names the file
/// and, where it applies, the record or line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Opening, reading or decompressing failed.
    // The cause is in the message, not a `source`, so that a report of the
    // whole chain does not print it twice.
    #[error("{}: {op}: {error}", path.display())]
    Io {
        path: PathBuf,
        /// What we were doing, e.g. "open" or "read".
        op: &'static str,
        error: std::io::Error,
    },
    /// The (decompressed) oracleGeneral data ends inside a record.
    #[error(
        "{}: truncated oracleGeneral data: record {record} starts at byte {offset} but the data \
         is {len} bytes long ({} of {} bytes present; length must be a multiple of {})",
        path.display(), len - offset, oracle::RECORD_SIZE, oracle::RECORD_SIZE
    )]
    Truncated {
        path: PathBuf,
        /// 0-based index of the partial record in the file (zero-size records
        /// included).
        record: u64,
        /// Byte offset (in the decompressed data) where the partial record starts.
        offset: u64,
        /// Total length of the (decompressed) data in bytes.
        len: u64,
    },
    /// No request at all: the file is empty, or holds only zero-size records,
    /// blank lines, comments or a header.
    #[error("{}: trace has no requests ({skipped_zero_size} zero-size records skipped)", path.display())]
    Empty {
        path: PathBuf,
        skipped_zero_size: u64,
    },
    /// A CSV line could not be used.
    #[error("{}:{line}: {reason}", path.display())]
    Csv {
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        reason: String,
    },
    /// [`read_trace_auto`] could not tell the format from the file name.
    #[error(
        "{}: cannot tell the trace format from the file name; expected .oracleGeneral.bin, .bin, \
         .zst, .csv, .tsv, .txt or .log",
        path.display()
    )]
    UnknownFormat { path: PathBuf },
}

/// Reads a whole trace into memory.
///
/// `progress(bytes_read, total_bytes)` is called about every MiB of *file*
/// bytes (compressed bytes for `.zst`) and once at the end; `total_bytes` is
/// the file size, 0 if unknown. `next_access` is computed over the kept
/// requests; oracleGeneral's own next-access field is ignored.
pub fn read_trace(
    path: &Path,
    format: &TraceFormat,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Trace, TraceError> {
    let started = Instant::now();
    let ((requests, skipped_zero_size), bytes_read, total) =
        input::with_input(path, progress, |reader, data_len| match format {
            TraceFormat::OracleGeneral => oracle::parse(reader, path, data_len),
            TraceFormat::Csv(options) => csv::parse(reader, path, options),
            TraceFormat::Text => text::parse(reader, path),
        })?;
    progress(bytes_read, total);
    if requests.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
            skipped_zero_size,
        });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let mut trace = Trace::new(name, requests);
    trace.skipped_zero_size = skipped_zero_size;
    tracing::debug!(
        path = %path.display(),
        format = format.name(),
        requests = trace.len(),
        skipped_zero_size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "trace read"
    );
    Ok(trace)
}

/// [`read_trace`] with the format taken from the file name ([`detect_format`]).
pub fn read_trace_auto(
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Trace, TraceError> {
    let format = detect_format(path).ok_or_else(|| TraceError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    read_trace(path, &format, progress)
}

#[cfg(test)]
mod tests;
