//! An MCP server as a child process speaking newline-delimited JSON-RPC on its
//! stdin and stdout, one process per session.
//!
//! The child leads a process group of its own, so teardown reaches everything
//! it started: stdin is closed first (the polite MCP way to say goodbye), then
//! the group gets SIGTERM, then SIGKILL after a grace period. When the child
//! exits on its own, its group is killed too and its pending requests are
//! answered with errors: nothing waits forever on a dead process.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::{Event, Events, Forwarded, Reply, Upstream, UpstreamError};
use crate::proxy::jsonrpc::{code, error_response, Kind, Message};

/// Server messages kept while nobody listens (no GET stream, no request in
/// flight); the oldest go first beyond this.
const BACKLOG: usize = 256;
/// Events buffered per reply stream before the upstream's output waits.
const REPLY_BUFFER: usize = 64;
/// GET streams kept open per session; opening one more ends the oldest (a
/// client that reconnects without closing leaks no streams).
const MAX_LISTENERS: usize = 4;

/// How to start the server of each session.
#[derive(Debug, Clone)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    /// Waited after closing stdin, and again after SIGTERM, before escalating.
    pub grace: Duration,
    /// Longest line read from the server; a longer one fails the session.
    pub max_line: usize,
    /// Requests in flight per session before new ones are refused.
    pub max_pending: usize,
}

impl StdioCommand {
    /// Splits `"CMD ARGS"` as a POSIX shell would (quotes, escapes), without
    /// running a shell.
    pub fn parse(command_line: &str) -> Result<Self, String> {
        let mut words = shell_words::split(command_line)
            .map_err(|e| format!("cannot split `{command_line}`: {e}"))?;
        if words.is_empty() {
            return Err("the upstream command is empty".into());
        }
        let program = words.remove(0);
        Ok(Self::new(program, words))
    }

    pub fn new(program: String, args: Vec<String>) -> Self {
        Self {
            program,
            args,
            grace: Duration::from_secs(2),
            max_line: 16 << 20,
            max_pending: 256,
        }
    }
}

impl fmt::Display for StdioCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_words::join(
            std::iter::once(&self.program).chain(&self.args),
        ))
    }
}

/// Where the server's messages go.
#[derive(Default)]
struct Routes {
    /// Reply channel of each request in flight, by its compact id.
    pending: HashMap<String, mpsc::Sender<Event>>,
    /// The request in flight that asked for progress under each token: its
    /// progress goes to it, whichever request is the latest.
    progress: HashMap<String, String>,
    /// The most recent request still in flight: server messages sent while a
    /// request runs most likely belong to it (progress, sampling).
    latest: Option<String>,
    /// The session's GET streams, oldest first. A client may hold several
    /// (the transport allows it); each server message goes to one of them,
    /// the newest still open, never to all.
    listeners: Vec<mpsc::Sender<Event>>,
    /// Everything the server writes, in its order (see [`StdioUpstream::tap`]).
    tap: Option<mpsc::Sender<Event>>,
    backlog: VecDeque<Message>,
    failed: Option<String>,
}

pub struct StdioUpstream {
    pid: u32,
    describe: String,
    max_pending: usize,
    writer: Mutex<Option<mpsc::Sender<Bytes>>>,
    routes: Arc<Mutex<Routes>>,
    close: Mutex<Option<oneshot::Sender<()>>>,
    /// `Some(reason)` once the process is gone.
    exited: watch::Receiver<Option<String>>,
}

impl StdioUpstream {
    /// Starts the server. Must run on a runtime worker.
    pub fn spawn(command: Arc<StdioCommand>) -> Result<Self, UpstreamError> {
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| UpstreamError::Unreachable(format!("cannot start `{command}`: {e}")))?;
        let pid = child.id().ok_or_else(|| {
            UpstreamError::Failed(format!("`{command}` exited before it could be watched"))
        })?;
        // Its group is its pid (process_group(0)).
        super::reaper::watch(i32::try_from(pid).unwrap_or(i32::MAX));
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Failed(
                "the child's pipes are missing".into(),
            ));
        };
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (writer, lines_out) = mpsc::channel::<Bytes>(command.max_pending);
        tokio::spawn(write_lines(stdin, lines_out));
        let reader = tokio::spawn(read_messages(
            FramedRead::new(stdout, LinesCodec::new_with_max_length(command.max_line)),
            Arc::clone(&routes),
            pid,
        ));
        tokio::spawn(log_stderr(stderr, pid));
        let (close_tx, close_rx) = oneshot::channel();
        let (exited_tx, exited) = watch::channel(None);
        tokio::spawn(supervise(
            Supervised {
                child,
                pid,
                grace: command.grace,
                reader,
            },
            close_rx,
            exited_tx,
            Arc::clone(&routes),
        ));
        Ok(Self {
            pid,
            describe: format!("pid {pid}"),
            max_pending: command.max_pending,
            writer: Mutex::new(Some(writer)),
            routes,
            close: Mutex::new(Some(close_tx)),
            exited,
        })
    }

    /// Every message the server writes, in the order it wrote them, responses
    /// included; requests sent afterwards are not paired with their responses
    /// here. For a single client that reads one ordered stream (the forward
    /// proxy), where pairing would reorder a response and a notification the
    /// server wrote in sequence.
    pub fn tap(&self) -> Result<Events, UpstreamError> {
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let mut routes = self.routes.lock();
        if let Some(reason) = &routes.failed {
            return Err(UpstreamError::Failed(reason.clone()));
        }
        routes.tap = Some(tx);
        Ok(ReceiverStream::new(rx).boxed())
    }

    fn write(&self, line: Bytes) -> Result<(), UpstreamError> {
        let writer = self.writer.lock().clone();
        let Some(writer) = writer else {
            return Err(UpstreamError::Failed("the upstream is closing".into()));
        };
        writer.try_send(line).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => UpstreamError::Busy(self.max_pending),
            mpsc::error::TrySendError::Closed(_) => {
                UpstreamError::Failed("the server's stdin is closed".into())
            }
        })
    }
}

#[async_trait]
impl Upstream for StdioUpstream {
    async fn send(&self, message: Message, _: &Forwarded) -> Result<Reply, UpstreamError> {
        if message.kind() != Kind::Request || self.routes.lock().tap.is_some() {
            self.write(message.line())?;
            return Ok(Reply::Accepted);
        }
        let id = message.id().unwrap_or_default().to_owned();
        let progress_token = message.progress_token();
        let (reply, replies) = mpsc::channel(REPLY_BUFFER);
        {
            let mut routes = self.routes.lock();
            if let Some(reason) = &routes.failed {
                return Err(UpstreamError::Failed(reason.clone()));
            }
            if routes.pending.len() >= self.max_pending {
                return Err(UpstreamError::Busy(routes.pending.len()));
            }
            if routes.pending.contains_key(&id) {
                return Err(UpstreamError::Unsupported(
                    "a request id that is still in flight on this session",
                ));
            }
            routes.pending.insert(id.clone(), reply);
            routes.latest = Some(id.clone());
            if let Some(token) = &progress_token {
                routes.progress.insert(token.clone(), id.clone());
            }
        }
        if let Err(e) = self.write(message.line()) {
            let mut routes = self.routes.lock();
            routes.pending.remove(&id);
            if let Some(token) = &progress_token {
                routes.progress.remove(token);
            }
            return Err(e);
        }
        Ok(Reply::Events(ReceiverStream::new(replies).boxed()))
    }

    async fn listen(&self, _: &Forwarded) -> Result<Events, UpstreamError> {
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let backlog: Vec<Message> = {
            let mut routes = self.routes.lock();
            if let Some(reason) = &routes.failed {
                return Err(UpstreamError::Failed(reason.clone()));
            }
            routes.listeners.retain(|l| !l.is_closed());
            if routes.listeners.len() >= MAX_LISTENERS {
                routes.listeners.remove(0);
            }
            routes.listeners.push(tx.clone());
            routes.backlog.drain(..).collect()
        };
        for message in backlog {
            if tx.send(Event::message(message)).await.is_err() {
                break;
            }
        }
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn close(&self) {
        // Dropping the writer ends the writer task, which closes stdin.
        self.writer.lock().take();
        if let Some(close) = self.close.lock().take() {
            let _ = close.send(());
        }
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
    }

    async fn failed(&self) -> String {
        let mut exited = self.exited.clone();
        let reason = match exited.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the supervisor ended".into(),
        };
        reason
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }
}

impl Drop for StdioUpstream {
    fn drop(&mut self) {
        // A session dropped without its teardown (a refused create whose
        // caller forgot it) still must not leave a process behind.
        if let Some(close) = self.close.lock().take() {
            let _ = close.send(());
        }
    }
}

/// Makes the child die with the proxy even when the proxy cannot tear it
/// down (SIGKILL, a crash): Linux sends it SIGKILL when its parent thread
/// exits. The spawning thread is a runtime worker, which lives as long as the
/// proxy, so this fires only when the proxy itself is gone.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // the prctl system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::Receiver<Bytes>) {
    while let Some(line) = lines.recv().await {
        let written = async {
            stdin.write_all(&line).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Routes the server's messages until its stdout ends; returns why it ended.
/// Failing the routes is left to the supervisor, which knows the exit status
/// by then.
async fn read_messages<R>(
    mut lines: FramedRead<R, LinesCodec>,
    routes: Arc<Mutex<Routes>>,
    pid: u32,
) -> StdoutEnd
where
    R: tokio::io::AsyncRead + Unpin,
{
    loop {
        match lines.next().await {
            Some(Ok(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                match Message::parse(Bytes::from(line)) {
                    Ok(message) => route(&routes, message).await,
                    Err(e) => {
                        tracing::warn!(pid, "upstream wrote a line that is not JSON-RPC: {e}")
                    }
                }
            }
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                return StdoutEnd::Broken("the server wrote a line longer than the limit".into())
            }
            Some(Err(LinesCodecError::Io(e))) => {
                return StdoutEnd::Broken(format!("reading the server's stdout: {e}"))
            }
            None => return StdoutEnd::Closed,
        }
    }
}

/// How the server's stdout stopped delivering messages.
enum StdoutEnd {
    /// End of file: the server exited, or closed its stdout.
    Closed,
    /// Unreadable from here on.
    Broken(String),
}

/// Hands one server message to whoever waits for it.
async fn route(routes: &Mutex<Routes>, message: Message) {
    let target = {
        let mut r = routes.lock();
        if let Some(tap) = r.tap.clone() {
            Some(tap)
        } else if message.kind() == Kind::Response {
            let id = message.id().unwrap_or_default();
            r.progress.retain(|_, asked_by| asked_by != id);
            match r.pending.remove(id) {
                Some(reply) => Some(reply),
                None => {
                    tracing::debug!(id = message.id(), "response to no request in flight");
                    return;
                }
            }
        } else if let Some(reply) = message
            .progress_token()
            .and_then(|token| r.progress.get(&token))
            .and_then(|id| r.pending.get(id))
            .filter(|reply| !reply.is_closed())
            .cloned()
        {
            // Progress on a request goes with its answer, as the client
            // expects it: on that request's stream, not the latest's.
            Some(reply)
        } else if let Some(listener) = newest_listener(&mut r.listeners) {
            Some(listener)
        } else if let Some(reply) = r.latest.as_ref().and_then(|id| r.pending.get(id)).cloned() {
            Some(reply)
        } else {
            if r.backlog.len() >= BACKLOG {
                r.backlog.pop_front();
            }
            r.backlog.push_back(message);
            return;
        }
    };
    if let Some(target) = target {
        // Waiting here is backpressure: a client that does not read its
        // stream slows its own server, and nobody else's.
        let _ = target.send(Event::message(message)).await;
    }
}

/// The newest GET stream still open, forgetting those closed since.
fn newest_listener(listeners: &mut Vec<mpsc::Sender<Event>>) -> Option<mpsc::Sender<Event>> {
    while let Some(newest) = listeners.last() {
        if !newest.is_closed() {
            return Some(newest.clone());
        }
        listeners.pop();
    }
    None
}

/// Answers every request in flight with an error and refuses new ones.
fn fail(routes: &Mutex<Routes>, reason: &str) {
    let pending: Vec<(String, mpsc::Sender<Event>)> = {
        let mut r = routes.lock();
        if r.failed.is_none() {
            r.failed = Some(reason.to_owned());
        }
        r.listeners.clear();
        r.tap = None;
        r.latest = None;
        r.progress.clear();
        r.pending.drain().collect()
    };
    for (id, reply) in pending {
        let body = error_response(
            Some(&id),
            code::UPSTREAM_FAILED,
            &format!("the MCP server failed: {reason}"),
            None,
        );
        if let Ok(message) = Message::parse(body) {
            let _ = reply.try_send(Event::message(message));
        }
    }
}

async fn log_stderr(stderr: tokio::process::ChildStderr, pid: u32) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(8 << 10));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => tracing::debug!(pid, "upstream stderr: {}", line.escape_debug()),
            Err(LinesCodecError::MaxLineLengthExceeded) => {}
            Err(LinesCodecError::Io(_)) => return,
        }
    }
}

/// The child and the task reading its stdout.
struct Supervised {
    child: Child,
    pid: u32,
    grace: Duration,
    reader: tokio::task::JoinHandle<StdoutEnd>,
}

/// Owns the child: reaps it when it exits on its own, or tears it down when
/// asked or when its stdout ends, and kills what is left of its process group
/// either way.
async fn supervise(
    supervised: Supervised,
    close: oneshot::Receiver<()>,
    exited: watch::Sender<Option<String>>,
    routes: Arc<Mutex<Routes>>,
) {
    let Supervised {
        mut child,
        pid,
        grace,
        mut reader,
    } = supervised;
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    // Biased towards the exit: when the child is already gone, its status is
    // the reason, whatever else happened at the same time.
    let (reason, on_its_own) = tokio::select! {
        biased;
        status = child.wait() => (exit_reason(status), true),
        end = &mut reader => {
            // A server that cannot be read can answer nothing more. Its
            // stdout usually ends because it is exiting: give it the grace
            // period, so the reason is its exit status.
            let broken = match end {
                Ok(StdoutEnd::Closed) => None,
                Ok(StdoutEnd::Broken(reason)) => Some(reason),
                Err(e) => Some(format!("reading the server's stdout: {e}")),
            };
            let reason = match broken {
                None => match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => exit_reason(status),
                    Err(_) => {
                        let _ = stop(&mut child, group, grace).await;
                        "the server closed its stdout".to_owned()
                    }
                },
                Some(reason) => {
                    let _ = stop(&mut child, group, grace).await;
                    reason
                }
            };
            (reason, true)
        }
        _ = close => {
            // Stdin is closed by now; a well-behaved server exits on its own.
            let status = match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => stop(&mut child, group, grace).await,
            };
            let reason = match status {
                Ok(status) => format!("the session was closed (server {status})"),
                Err(_) => "the session was closed".to_owned(),
            };
            (reason, false)
        }
    };
    if on_its_own {
        tracing::info!(pid, "{reason}");
    }
    // Whatever the server started in its group goes with it.
    let _ = killpg(group, Signal::SIGKILL);
    super::reaper::release(group.as_raw());
    // What the server wrote before it went is still in the pipe: it reaches
    // its requests before the rest are failed. Bounded, since a process that
    // left the group may hold the pipe open.
    if !reader.is_finished() && tokio::time::timeout(grace, &mut reader).await.is_err() {
        reader.abort();
    }
    fail(&routes, &reason);
    let _ = exited.send(Some(reason));
}

fn exit_reason(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => format!("the server exited ({status})"),
        Err(e) => format!("waiting for the server: {e}"),
    }
}

/// SIGTERM to the group, then SIGKILL after the grace period.
async fn stop(
    child: &mut Child,
    group: Pid,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let _ = killpg(group, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = killpg(group, Signal::SIGKILL);
            child.wait().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_stdio_server_messages_go_to_the_newest_open_stream_only() {
        let (oldest, mut oldest_rx) = mpsc::channel(1);
        let (middle, mut middle_rx) = mpsc::channel(1);
        let (newest, newest_rx) = mpsc::channel(1);
        let mut listeners = vec![oldest, middle, newest];
        let ping = || {
            Event::message(
                Message::parse(br#"{"jsonrpc":"2.0","method":"ping"}"#.to_vec().into())
                    .expect("parse"),
            )
        };
        newest_listener(&mut listeners)
            .expect("open")
            .try_send(ping())
            .expect("sent");
        assert_eq!(listeners.len(), 3);
        assert!(middle_rx.try_recv().is_err() && oldest_rx.try_recv().is_err());
        // The newest stream closed: the next one back takes over, and the
        // closed one is forgotten.
        drop(newest_rx);
        newest_listener(&mut listeners)
            .expect("open")
            .try_send(ping())
            .expect("sent");
        assert_eq!(listeners.len(), 2);
        assert!(middle_rx.try_recv().is_ok());
        assert!(oldest_rx.try_recv().is_err());
        drop((middle_rx, oldest_rx));
        assert!(newest_listener(&mut listeners).is_none());
        assert!(listeners.is_empty());
    }
}
