//! `--access-log FILE`: every session access the proxy serves, as an
//! oracleGeneral trace that `shadowcat bench --trace FILE` replays, so policies
//! can be compared on the proxy's own traffic.
//!
//! One record per access to the table: a session created (the client had no
//! live session: a miss) or a request on a live session (a hit). The object id
//! is the client key's hash, so a client that comes back after an eviction is
//! the same object. Records go through a bounded channel to a writer task that
//! writes them in batches, off the request path; if the writer falls behind,
//! records are dropped and counted rather than slowing requests down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client_key::ClientKey;
use crate::trace::encode_oracle_record;

/// One oracleGeneral record: time (u32), id (u64), size (u32), next access (i64).
const RECORD: u64 = 24;
const QUEUE: usize = 1 << 16;
const BATCH: usize = 4_096;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {}: {error}", path.display())]
pub struct AccessLogError {
    path: PathBuf,
    error: std::io::Error,
}

impl AccessLogError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |error| Self {
            path: path.to_owned(),
            error,
        }
    }
}

/// The sending side, cheap to clone into request handlers.
#[derive(Clone)]
pub struct AccessLog {
    records: mpsc::Sender<[u8; 24]>,
    started: Instant,
    /// Trace time at `started`: where an earlier run's log left off.
    resumed_at: u32,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// Owns the writer task; [`AccessLogWriter::finish`] flushes what is queued.
pub struct AccessLogWriter {
    task: JoinHandle<std::io::Result<()>>,
}

impl AccessLog {
    /// Appends to `path` (created if missing) and starts the writer task.
    /// A restart must not wipe the traffic recorded so far, so an existing
    /// log is continued, its clock too: the new records' times start where
    /// its last one stopped, and a replay never sees time go back. A record
    /// cut short at the end of a log is dropped; any other file that is not a
    /// whole number of records is refused, not appended to.
    pub async fn create(path: &Path) -> Result<(Self, AccessLogWriter), AccessLogError> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .await
            .map_err(AccessLogError::at(path))?;
        let len = file
            .metadata()
            .await
            .map_err(AccessLogError::at(path))?
            .len();
        let torn = len % RECORD;
        let len = len - torn;
        if torn != 0 {
            // A write cut short (the proxy killed mid-batch, a full disk)
            // leaves part of a record: dropped, so that a restart is not
            // refused and what follows is not misaligned. Only from a file
            // whose records are all the proxy's as far as one can tell: any
            // other is left as it was.
            if len == 0 || !written_by_a_proxy(&mut file, len).await {
                return Err(AccessLogError::at(path)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} bytes is not a whole number of {RECORD}-byte records, so not an \
                         access log to continue; move it away or choose another file",
                        len + torn
                    ),
                )));
            }
            file.set_len(len).await.map_err(AccessLogError::at(path))?;
            tracing::warn!(
                path = %path.display(),
                "the access log ended in {torn} bytes of a record cut short (an earlier run \
                 stopped mid-write); they were dropped, the {} whole records kept",
                len / RECORD
            );
        }
        let mut resumed_at = 0;
        if len > 0 {
            let mut time = [0; 4];
            file.seek(std::io::SeekFrom::Start(len - RECORD))
                .await
                .map_err(AccessLogError::at(path))?;
            file.read_exact(&mut time)
                .await
                .map_err(AccessLogError::at(path))?;
            resumed_at = u32::from_le_bytes(time);
        }
        let (records, queue) = mpsc::channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write_batches(file, queue, Arc::clone(&written)));
        Ok((
            Self {
                records,
                started: Instant::now(),
                resumed_at,
                written,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            AccessLogWriter { task },
        ))
    }

    /// Records one access by `client`; never waits.
    pub fn record(&self, client: ClientKey) {
        let elapsed = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
        let seconds = self.resumed_at.saturating_add(elapsed);
        // Next access is unknown while the trace is being written; readers
        // compute it themselves.
        let record = encode_oracle_record(seconds, client.0, 1, -1);
        if self.records.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Whether the first and the last of the `len / RECORD` whole records of
/// `file` are as the proxy writes them: size 1, next access unknown (-1).
async fn written_by_a_proxy(file: &mut tokio::fs::File, len: u64) -> bool {
    let mut ours = true;
    for at in [0, len - RECORD] {
        let mut record = [0u8; RECORD as usize];
        let read = async {
            file.seek(std::io::SeekFrom::Start(at)).await?;
            file.read_exact(&mut record).await
        };
        ours &= read.await.is_ok()
            && record[12..16] == 1u32.to_le_bytes()
            && record[16..24] == (-1i64).to_le_bytes();
    }
    ours
}

impl AccessLogWriter {
    /// Waits until every record sent so far is on disk. Every [`AccessLog`]
    /// handle must be dropped first, or this waits for them.
    pub async fn finish(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

async fn write_batches(
    file: tokio::fs::File,
    mut queue: mpsc::Receiver<[u8; 24]>,
    written: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut out = tokio::io::BufWriter::with_capacity(BATCH * 24, file);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::time::timeout(FLUSH_EVERY, queue.recv_many(&mut batch, BATCH)).await;
        match received {
            Ok(0) => break,
            Ok(n) => {
                for record in batch.drain(..) {
                    out.write_all(&record).await?;
                }
                out.flush().await?;
                written.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => out.flush().await?,
        }
    }
    out.flush().await?;
    out.into_inner().sync_all().await
}
