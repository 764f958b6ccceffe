//! Opening a trace file: optional zstd decompression and progress reporting.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::TraceError;

/// How often (in file bytes) the progress callback is called.
const PROGRESS_EVERY: u64 = 1 << 20;

/// True if the file is zstd-compressed, judged by name only (see the module
/// docs of `trace` for why we do not sniff).
pub(super) fn is_zstd(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".zst"))
        .unwrap_or(false)
}

/// Opens `path` (decompressing if it is `.zst`) and hands the byte stream to
/// `parse` together with the length of the data if known without reading it
/// (the file size for uncompressed files, `None` for compressed ones).
///
/// Returns what `parse` returned, the number of file bytes read and the file
/// size. The final progress call is left to the caller so that it comes after
/// all the work.
pub(super) fn with_input<T>(
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
    parse: impl FnOnce(&mut dyn Read, Option<u64>) -> Result<T, TraceError>,
) -> Result<(T, u64, u64), TraceError> {
    let io_error = |op: &'static str| {
        move |error: io::Error| TraceError::Io {
            path: path.to_path_buf(),
            op,
            error,
        }
    };
    let file = File::open(path).map_err(io_error("open"))?;
    let total = file.metadata().map_err(io_error("stat"))?.len();
    // The count outlives the reader (which the zstd decoder swallows) so the
    // caller can report the final figure.
    let bytes_read = Cell::new(0u64);
    let parsed = {
        let mut counting = CountingReader {
            inner: file,
            bytes_read: &bytes_read,
            last_report: 0,
            total,
            progress: &mut *progress,
        };
        if is_zstd(path) {
            let mut decoder =
                zstd::stream::read::Decoder::new(counting).map_err(io_error("zstd init"))?;
            parse(&mut decoder, None)?
        } else {
            parse(&mut counting, Some(total))?
        }
    };
    Ok((parsed, bytes_read.get(), total))
}

/// Counts bytes pulled from the file and reports progress every
/// [`PROGRESS_EVERY`] bytes.
struct CountingReader<'a, R> {
    inner: R,
    bytes_read: &'a Cell<u64>,
    last_report: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.bytes_read.get() + n as u64;
        self.bytes_read.set(read);
        if read - self.last_report >= PROGRESS_EVERY {
            self.last_report = read;
            (self.progress)(read, self.total);
        }
        Ok(n)
    }
}

/// Calls `each` with the 1-based number and the bytes (newline included) of
/// every line of `reader`, stopping at the first error.
pub(super) fn for_each_line(
    reader: &mut dyn Read,
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), TraceError>,
) -> Result<(), TraceError> {
    let mut reader = io::BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = io::BufRead::read_until(&mut reader, b'\n', &mut line).map_err(|error| {
            TraceError::Io {
                path: path.to_path_buf(),
                op: "read",
                error,
            }
        })?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        each(number, &line)?;
    }
}
