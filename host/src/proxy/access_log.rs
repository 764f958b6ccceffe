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

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client_key::ClientKey;
use crate::trace::encode_oracle_record;

const QUEUE: usize = 1 << 16;
const BATCH: usize = 4_096;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {}: {error}", path.display())]
pub struct AccessLogError {
    path: PathBuf,
    error: std::io::Error,
}

/// The sending side, cheap to clone into request handlers.
#[derive(Clone)]
pub struct AccessLog {
    records: mpsc::Sender<[u8; 24]>,
    started: Instant,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// Owns the writer task; [`AccessLogWriter::finish`] flushes what is queued.
pub struct AccessLogWriter {
    task: JoinHandle<std::io::Result<()>>,
}

impl AccessLog {
    /// Creates (or truncates) `path` and starts the writer task.
    pub async fn create(path: &Path) -> Result<(Self, AccessLogWriter), AccessLogError> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|error| AccessLogError {
                path: path.to_owned(),
                error,
            })?;
        let (records, queue) = mpsc::channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write_batches(file, queue, Arc::clone(&written)));
        Ok((
            Self {
                records,
                started: Instant::now(),
                written,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            AccessLogWriter { task },
        ))
    }

    /// Records one access by `client`; never waits.
    pub fn record(&self, client: ClientKey) {
        let seconds = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
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
