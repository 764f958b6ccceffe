//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

pub mod http_server;
pub mod peers;
pub mod proxy;

use parking_lot::Mutex;
use shadowcat::eviction::RemovalCause;
use shadowcat::session::{Micros, RemovedSession, Teardown};

/// Runs `body` on its own thread and fails the test if it has not finished within
/// `limit`, reporting any lock cycle `parking_lot` detected: a hang becomes a
/// failure with a diagnosis instead of a stuck CI run.
pub fn with_watchdog(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    let deadline = std::time::Instant::now() + limit;
    loop {
        match done_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let deadlocks = parking_lot::deadlock::check_deadlock();
                if !deadlocks.is_empty() {
                    let report: Vec<String> = deadlocks
                        .iter()
                        .flatten()
                        .map(|t| format!("thread {:?}:\n{:?}", t.thread_id(), t.backtrace()))
                        .collect();
                    panic!("deadlock detected:\n{}", report.join("\n"));
                }
                if std::time::Instant::now() > deadline {
                    panic!("watchdog: test did not finish within {limit:?} (hang)");
                }
            }
        }
    }
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

/// What the table handed to teardown, for checking against the metrics.
#[derive(Debug, Clone, Copy)]
pub struct RemovedRecord {
    pub cause: RemovalCause,
    pub removed_at: Micros,
    pub last_access: Micros,
    pub created_at: Micros,
}

#[derive(Clone, Default)]
pub struct TeardownLog {
    records: Arc<Mutex<Vec<RemovedRecord>>>,
}

impl TeardownLog {
    pub fn teardown<U: Send + 'static>(&self) -> Arc<dyn Teardown<U>> {
        let records = Arc::clone(&self.records);
        Arc::new(move |s: RemovedSession<U>| {
            let record = RemovedRecord {
                cause: s.cause,
                removed_at: s.removed_at,
                last_access: s.info.last_access,
                created_at: s.info.created_at,
            };
            let records = Arc::clone(&records);
            async move {
                records.lock().push(record);
            }
        })
    }

    /// Waits (bounded) until `n` teardowns have run.
    pub async fn wait_for(&self, n: usize) {
        for _ in 0..5_000 {
            if self.records.lock().len() >= n {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("only {} of {n} teardowns ran", self.records.lock().len());
    }

    pub fn sessions(&self) -> Vec<RemovedRecord> {
        self.records.lock().clone()
    }

    pub fn causes(&self) -> Vec<RemovalCause> {
        self.records.lock().iter().map(|r| r.cause).collect()
    }

    pub fn count_by_cause(&self) -> HashMap<RemovalCause, u64> {
        let mut counts = HashMap::new();
        for r in self.records.lock().iter() {
            *counts.entry(r.cause).or_insert(0) += 1;
        }
        counts
    }
}

/// A built policy shipped in `policies/`.
pub fn policy_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(format!("{name}.wasm"))
}

/// A test fixture in `tests/fixtures/`.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The reference trace (libCacheSim's CloudPhysics sample), committed
/// zstd-compressed in `tests/fixtures/traces/` (see the README there).
pub fn reference_trace_path() -> std::path::PathBuf {
    fixture("traces/cloudPhysicsIO.oracleGeneral.bin.zst")
}

/// The reference trace, read from the committed fixture.
pub fn reference_trace() -> shadowcat::trace::Trace {
    let path = reference_trace_path();
    shadowcat::trace::read_trace(
        &path,
        &shadowcat::trace::TraceFormat::OracleGeneral,
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("reading the reference trace {}: {e}", path.display()))
}

/// Runs the `shadowcat` binary on the shipped policies, with no artefact cache
/// and a generous call deadline (these tests are about answers, not deadlines).
pub fn shadowcat_cli(args: &[&str]) -> std::process::Output {
    shadowcat_command(args).output().expect("binary runs")
}

/// [`shadowcat_cli`]'s command, for a test that needs the process itself.
pub fn shadowcat_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shadowcat"));
    command
        .args([
            "--policy-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"),
        ])
        .args([
            "--policy-cache",
            "off",
            "--log",
            "warn",
            "--policy-timeout",
            "10s",
        ])
        .args(args);
    command
}

/// Runs `command` with its stdout a pipe nobody reads any more, as under
/// `| head -1` once `head` has its line, and checks that it ends without a
/// panic: successfully, or killed by SIGPIPE as `cat` would be.
pub fn assert_ends_quietly_on_a_closed_stdout(command: &mut std::process::Command) {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = command
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("binary runs");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success()
            || out.status.signal() == Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "{command:?} ended with {:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{command:?}: {stderr}");
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
