//! libCacheSim's oracleGeneral binary format.
//!
//! No header; packed 24-byte little-endian records
//! `u32 time (seconds) | u64 object id | u32 object size | i64 next access`.
//! The file's next-access field (1-based, -1 for none) is ignored: it counts
//! zero-size records, which we drop, so its indices would be off; the caller
//! recomputes next access over the kept requests.

use std::io::{self, Read, Write};
use std::path::Path;

use super::{Request, Trace, TraceError, NO_NEXT_ACCESS};

/// Size of one oracleGeneral record in bytes.
pub const RECORD_SIZE: usize = 24;

/// Records decoded per read; a few hundred KiB keeps syscalls rare without
/// holding much memory.
const RECORDS_PER_CHUNK: usize = 8192;

/// Parses oracleGeneral records from `reader`, returning the kept requests
/// (`next_access` not filled) and the number of zero-size records skipped.
///
/// `data_len`, when known up front (uncompressed files), lets a truncated file
/// fail before anything is read; otherwise truncation is found at the end of
/// the stream. Either way a partial last record is an error, never dropped.
pub(super) fn parse(
    reader: &mut dyn Read,
    path: &Path,
    data_len: Option<u64>,
) -> Result<(Vec<Request>, u64), TraceError> {
    let record_size = RECORD_SIZE as u64;
    let truncated = |len: u64| {
        let record = len / record_size;
        TraceError::Truncated {
            path: path.to_path_buf(),
            record,
            offset: record * record_size,
            len,
        }
    };
    let mut requests = Vec::new();
    if let Some(len) = data_len {
        if len % record_size != 0 {
            return Err(truncated(len));
        }
        // Exact for files without zero-size records; saves regrowing.
        requests.reserve(usize::try_from(len / record_size).unwrap_or(0));
    }

    let mut skipped_zero_size = 0u64;
    let mut data_read = 0u64;
    let mut buffer = vec![0u8; RECORD_SIZE * RECORDS_PER_CHUNK];
    loop {
        let filled = fill(reader, &mut buffer).map_err(|error| TraceError::Io {
            path: path.to_path_buf(),
            op: "read",
            error,
        })?;
        data_read += filled as u64;
        let records = buffer[..filled].chunks_exact(RECORD_SIZE);
        if !records.remainder().is_empty() {
            // `fill` only returns a short buffer at end of stream, so a
            // remainder here is a partial last record.
            return Err(truncated(data_read));
        }
        for record in records {
            let (time, id, size) = decode(record);
            if size == 0 {
                skipped_zero_size += 1;
                continue;
            }
            requests.push(Request::new(u64::from(time) * 1_000_000, id, size));
        }
        if filled < buffer.len() {
            return Ok((requests, skipped_zero_size));
        }
    }
}

/// Decodes `(time s, id, size)` from one 24-byte record.
fn decode(record: &[u8]) -> (u32, u64, u32) {
    // The callers pass chunks_exact(RECORD_SIZE) slices, so these fixed-size
    // conversions cannot fail; fall back to zeros rather than panic anyway.
    let time = record[0..4].try_into().map(u32::from_le_bytes).unwrap_or(0);
    let id = record[4..12]
        .try_into()
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let size = record[12..16]
        .try_into()
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    (time, id, size)
}

/// Writes `trace` as oracleGeneral records, e.g. to save a synthetic trace for
/// other simulators. Times are truncated to whole seconds (saturating at
/// `u32::MAX`); next access is written 1-based with -1 for none, as
/// libCacheSim writes it. Wrap `out` in a `BufWriter` (or a zstd encoder).
pub fn write_oracle_general(trace: &Trace, out: &mut dyn Write) -> io::Result<()> {
    for request in &trace.requests {
        let seconds = u32::try_from(request.time / 1_000_000).unwrap_or(u32::MAX);
        let next = match request.next_access {
            NO_NEXT_ACCESS => -1,
            index => i64::try_from(index + 1).unwrap_or(i64::MAX),
        };
        out.write_all(&encode(seconds, request.id, request.size, next))?;
    }
    Ok(())
}

/// Encodes one record.
pub fn encode(time_s: u32, id: u64, size: u32, next_access: i64) -> [u8; RECORD_SIZE] {
    let mut record = [0u8; RECORD_SIZE];
    record[0..4].copy_from_slice(&time_s.to_le_bytes());
    record[4..12].copy_from_slice(&id.to_le_bytes());
    record[12..16].copy_from_slice(&size.to_le_bytes());
    record[16..24].copy_from_slice(&next_access.to_le_bytes());
    record
}

/// Reads until `buffer` is full or the stream ends; returns the bytes read.
/// A plain `read` may return short counts mid-stream (zstd does), which
/// would otherwise look like a partial record.
fn fill(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_encode() {
        let record = encode(7, 0x0102_0304_0506_0708, 4096, -1);
        assert_eq!(decode(&record), (7, 0x0102_0304_0506_0708, 4096));
    }

    #[test]
    fn zero_size_records_are_skipped_and_counted() {
        let mut data = Vec::new();
        data.extend_from_slice(&encode(1, 10, 5, -1));
        data.extend_from_slice(&encode(2, 11, 0, -1));
        data.extend_from_slice(&encode(3, 12, 6, -1));
        let (requests, skipped) = parse(
            &mut data.as_slice(),
            Path::new("mem"),
            Some(data.len() as u64),
        )
        .expect("valid records");
        assert_eq!(skipped, 1);
        let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
        assert_eq!(ids, [10, 12]);
        assert_eq!(requests[1].time, 3_000_000);
    }

    #[test]
    fn partial_record_found_at_end_of_stream() {
        // No length known up front (as for .zst): must still be detected.
        let mut data = Vec::new();
        for i in 0..3 {
            data.extend_from_slice(&encode(i, u64::from(i), 1, -1));
        }
        data.extend_from_slice(&[1, 2, 3, 4, 5]);
        let err = parse(&mut data.as_slice(), Path::new("mem"), None).unwrap_err();
        match err {
            TraceError::Truncated {
                record,
                offset,
                len,
                ..
            } => assert_eq!((record, offset, len), (3, 72, 77)),
            other => panic!("expected Truncated, got {other}"),
        }
    }
}
