//! An MCP server as a child process speaking newline-delimited JSON-RPC on its
//! stdin and stdout, one process per session.
//!
//! The child leads a process group of its own, so teardown reaches everything
//! it started: stdin is closed first (the polite MCP way to say goodbye), then
//! the group gets SIGTERM, then SIGKILL after a grace period. When the child
//! exits on its own, its group is killed too and its pending requests are
//! answered with errors: nothing waits forever on a dead process.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::lines::{limit_text, write_lines, BoundedLines, Line};
use super::routes::{fail, priming, route, Routes};
use super::{Events, Forwarded, Reply, Upstream, UpstreamError};
use crate::proxy::head::Head;
use crate::proxy::jsonrpc::{code, error_response, Incoming, Kind, Message};
use crate::proxy::mcp_headers::takes_priming_events;

/// Events buffered per reply stream before the upstream's output waits.
const REPLY_BUFFER: usize = 64;

/// How to start the server of each session.
#[derive(Debug, Clone)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    /// Waited after closing stdin, and again after SIGTERM, before escalating.
    pub grace: Duration,
    /// Longest line (message) read from the server. A longer one is skipped
    /// to its end: its request is answered with an error, and the session
    /// goes on.
    pub max_line: usize,
    /// The command-line option that raises `max_line`, named in the error a
    /// longer message gets.
    pub max_line_option: Option<&'static str>,
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
            max_line_option: None,
            max_pending: 256,
        }
    }

    /// The line limit as a peer is told it (see [`limit_text`]).
    pub fn line_limit(&self) -> String {
        limit_text(self.max_line, self.max_line_option)
    }

    /// Where the program would be started from: a path (a name with a `/`)
    /// as it is, a bare name looked up on `PATH` as the spawn does. Checked
    /// at startup, so that a wrong command fails there once, rather than
    /// every session's `initialize` later.
    pub fn locate(&self) -> Result<PathBuf, ProgramError> {
        locate_in(&self.program, std::env::var_os("PATH").as_deref())
    }
}

/// Why the upstream program cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("the upstream command `{0}` does not exist")]
    Missing(String),
    #[error("the upstream command `{0}` is not an executable file")]
    NotExecutable(String),
    #[error("the upstream command `{0}` is not found on PATH")]
    NotOnPath(String),
}

/// [`StdioCommand::locate`] against the search path `path`.
fn locate_in(program: &str, path: Option<&OsStr>) -> Result<PathBuf, ProgramError> {
    if program.contains('/') {
        let candidate = PathBuf::from(program);
        return match std::fs::metadata(&candidate) {
            Err(_) => Err(ProgramError::Missing(program.to_owned())),
            Ok(meta) if is_executable(&meta) => Ok(candidate),
            Ok(_) => Err(ProgramError::NotExecutable(program.to_owned())),
        };
    }
    // The search `execvp` makes: an empty entry is the working directory,
    // and without PATH the C library's default applies.
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    std::env::split_paths(path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|meta| is_executable(&meta)))
        .ok_or_else(|| ProgramError::NotOnPath(program.to_owned()))
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

impl fmt::Display for StdioCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_words::join(
            std::iter::once(&self.program).chain(&self.args),
        ))
    }
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
            FramedRead::new(stdout, BoundedLines::new(command.max_line)),
            Server {
                routes: Arc::clone(&routes),
                // Weak, so that closing stdin still takes only dropping the
                // upstream's own sender.
                stdin: writer.downgrade(),
                pid,
                limit: command.line_limit(),
            },
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
        self.routes.lock().tap(tx)?;
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
    async fn send(&self, message: Message, headers: &Forwarded) -> Result<Reply, UpstreamError> {
        if message.kind() != Kind::Request || self.routes.lock().is_tapped() {
            self.write(message.line())?;
            return Ok(Reply::Accepted);
        }
        let id = message.id().unwrap_or_default().to_owned();
        let progress_token = message.progress_token();
        let (reply, replies) = mpsc::channel(REPLY_BUFFER);
        let stream = self.routes.lock().begin_request(
            &id,
            progress_token.as_deref(),
            reply,
            self.max_pending,
        )?;
        if let Err(e) = self.write(message.line()) {
            self.routes
                .lock()
                .abandon_request(&id, progress_token.as_deref());
            return Err(e);
        }
        let first = primes(headers).then(|| priming(stream));
        Ok(Reply::Events(
            futures::stream::iter(first)
                .chain(ReceiverStream::new(replies))
                .boxed(),
        ))
    }

    /// A new GET stream, which first gets what the server sent while nobody
    /// listened; or, with a `Last-Event-ID` this upstream wrote, the stream
    /// it names, resumed after that event.
    async fn listen(&self, headers: &Forwarded) -> Result<Events, UpstreamError> {
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let (first, ends) = self.routes.lock().open_get_stream(
            headers.last_event_id.as_deref(),
            tx,
            primes(headers),
            self.pid,
        )?;
        // What was sent before comes first; what the server sends from now on
        // queues behind it in the channel, so the order is the server's.
        let first = futures::stream::iter(first);
        if ends {
            return Ok(first.boxed());
        }
        Ok(first.chain(ReceiverStream::new(rx)).boxed())
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

/// Whether a stream for this client starts with a priming event, so that
/// one cut before its first message can still be resumed.
fn primes(headers: &Forwarded) -> bool {
    takes_priming_events(headers.protocol_version.as_deref())
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

/// What the reader of a server's stdout reaches: where its messages go,
/// and its stdin, for the answers the proxy gives it itself.
struct Server {
    routes: Arc<Mutex<Routes>>,
    stdin: mpsc::WeakSender<Bytes>,
    pid: u32,
    /// [`StdioCommand::line_limit`], as messages name it.
    limit: String,
}

/// Routes the server's messages until its stdout ends; returns why it ended.
/// Failing the routes is left to the supervisor, which knows the exit status
/// by then.
async fn read_messages<R>(mut lines: FramedRead<R, BoundedLines>, server: Server) -> StdoutEnd
where
    R: tokio::io::AsyncRead + Unpin,
{
    let Server { routes, pid, .. } = &server;
    loop {
        match lines.next().await {
            Some(Ok(Line::Line(line))) => {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                match Incoming::parse(line.clone()) {
                    Ok(Incoming::One(message)) => route(routes, message).await,
                    // A 2025-03-26 server may write a batch: its elements go
                    // their ways as if each had its own line.
                    Ok(Incoming::Batch(batch)) => {
                        for element in batch {
                            match element {
                                Ok(message) => route(routes, message).await,
                                Err(e) => tracing::warn!(
                                    pid,
                                    "upstream wrote a batch with an element that is not \
                                     JSON-RPC: {e}"
                                ),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pid, "upstream wrote a line that is not JSON-RPC: {e}");
                        // A response the client cannot be given still ends
                        // its request, rather than leave it waiting.
                        if let Head::Response { id: Some(id) } = Head::peek(&line) {
                            let why = format!("the MCP server's response is invalid: {e}");
                            answer_with_error(routes, &id, &why).await;
                        }
                    }
                }
            }
            Some(Ok(Line::TooLong(head))) => {
                if let Some(end) = skip_too_long(&server, head).await {
                    return end;
                }
            }
            Some(Err(e)) => return StdoutEnd::Broken(format!("reading the server's stdout: {e}")),
            None => return StdoutEnd::Closed,
        }
    }
}

/// Answers request `id` with an error saying `why`, in place of the
/// server's response.
async fn answer_with_error(routes: &Mutex<Routes>, id: &str, why: &str) {
    route(routes, Message::error(Some(id), code::UPSTREAM_FAILED, why)).await;
}

/// Settles a message over the line limit, of which only its envelope,
/// `head`, is known. A request of the server's is answered with an error,
/// to the server: the client never saw it. A response of the server's: the
/// request it answers gets an error instead. When that request cannot be
/// told, every request in flight gets it, since any of them may be waiting
/// for the lost answer; in one ordered stream (the forward proxy), which has
/// no requests in flight to fail, the stream ends. Returns how the stream
/// ends, if it does.
async fn skip_too_long(server: &Server, head: Head) -> Option<StdoutEnd> {
    let Server {
        routes,
        stdin,
        pid,
        limit,
    } = server;
    match head {
        Head::Call { id: Some(id) } => {
            tracing::warn!(
                pid,
                id,
                "upstream wrote a request longer than {limit}: answered with an error"
            );
            let why = format!(
                "the request is longer than {limit}; the proxy did not pass it on to the client"
            );
            let answer = error_response(Some(&id), code::INVALID_REQUEST, &why, None);
            // Behind the messages queued for it, in order; a server that
            // reads nothing while it writes has no room left for it.
            if let Some(stdin) = stdin.upgrade() {
                if stdin.try_send(answer).is_err() {
                    tracing::warn!(
                        pid,
                        id,
                        "the server's stdin is full or closed: not answered"
                    );
                }
            }
            None
        }
        Head::Call { id: None } => {
            tracing::warn!(
                pid,
                "upstream wrote a notification longer than {limit}: dropped"
            );
            None
        }
        Head::Response { id: Some(id) } => {
            tracing::warn!(pid, id, "upstream wrote a response longer than {limit}");
            let why =
                format!("the MCP server's response is longer than {limit}; the session goes on");
            answer_with_error(routes, &id, &why).await;
            None
        }
        Head::Response { id: None } | Head::Unknown => {
            let mut routes = routes.lock();
            if routes.is_tapped() {
                return Some(StdoutEnd::Broken(format!(
                    "the server wrote a message longer than {limit}, answering no request \
                     that can be told"
                )));
            }
            tracing::warn!(
                pid,
                "upstream wrote a message longer than {limit}, answering no request that can be told: every request in flight fails"
            );
            routes.fail_in_flight(&format!(
                "the MCP server wrote a message longer than {limit} that may have been the \
                 response to this request, so it fails (the server may still be working on \
                 it); the session goes on"
            ));
            None
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
    use super::super::Event;
    use super::*;

    const LIMIT: &str = "the limit of 64 bytes per message (--max-body raises it)";

    /// Requests `ids` in flight, each with the receiver of its stream.
    fn in_flight(routes: &Mutex<Routes>, ids: &[&str]) -> Vec<mpsc::Receiver<Event>> {
        ids.iter()
            .map(|id| {
                let (to, rx) = mpsc::channel(8);
                routes
                    .lock()
                    .begin_request(id, None, to, 8)
                    .expect("room for it");
                rx
            })
            .collect()
    }

    async fn read(routes: &Arc<Mutex<Routes>>, lines: &[String]) -> StdoutEnd {
        read_answering(routes, lines).await.0
    }

    /// [`read`], with what the reader wrote to the server's stdin.
    async fn read_answering(
        routes: &Arc<Mutex<Routes>>,
        lines: &[String],
    ) -> (StdoutEnd, Vec<serde_json::Value>) {
        let input = lines.join("\n") + "\n";
        let lines = FramedRead::new(input.as_bytes(), BoundedLines::new(64));
        let (stdin, mut written) = mpsc::channel(8);
        let server = Server {
            routes: Arc::clone(routes),
            stdin: stdin.downgrade(),
            pid: 0,
            limit: LIMIT.to_owned(),
        };
        let end = read_messages(lines, server).await;
        drop(stdin);
        let mut answers = Vec::new();
        while let Some(line) = written.recv().await {
            answers.push(serde_json::from_slice(&line).expect("JSON"));
        }
        (end, answers)
    }

    fn next(rx: &mut mpsc::Receiver<Event>) -> serde_json::Value {
        let event = rx.try_recv().expect("an answer");
        let message = event.message.expect("a message");
        serde_json::from_slice(message.bytes()).expect("JSON")
    }

    #[tokio::test]
    async fn proxy_stdio_lines_over_the_limit_fail_their_request_and_reading_goes_on() {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let mut rx = in_flight(&routes, &["1", "2", "3"]);
        let big = "x".repeat(200);
        let end = read(
            &routes,
            &[
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"text":"{big}"}}}}"#),
                format!(r#"{{"jsonrpc":"2.0","method":"notifications/message","params":"{big}"}}"#),
                r#"{"jsonrpc":"2.0","id":2,"result":{}}"#.to_owned(),
            ],
        )
        .await;
        assert!(matches!(end, StdoutEnd::Closed));
        let failed = next(&mut rx[0]);
        assert_eq!(failed["id"], 1);
        assert_eq!(failed["error"]["code"], code::UPSTREAM_FAILED);
        let message = failed["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(LIMIT), "{message}");
        assert!(next(&mut rx[1])["result"].is_object(), "read on after it");
        assert!(rx[2].try_recv().is_err(), "a notification fails nothing");

        // The id after the result (the TypeScript SDK's order) still tells
        // whose answer it was: that request fails, and the other waits on.
        let long_answer = |id: &str| {
            vec![format!(
                r#"{{"jsonrpc":"2.0","result":{{"text":"{big}"}},"id":{id}}}"#
            )]
        };
        let mut rx = in_flight(&routes, &["4", "5"]);
        let end = read(&routes, &long_answer("4")).await;
        assert!(matches!(end, StdoutEnd::Closed));
        let failed = next(&mut rx[0]);
        assert_eq!(failed["id"], 4);
        assert_eq!(failed["error"]["code"], code::UPSTREAM_FAILED);
        assert!(rx[1].try_recv().is_err(), "another request waits on");

        // An answer without an id that can be told: any request in flight
        // may be the one it answers, so each fails; the session does not.
        let mut rx = vec![rx.swap_remove(1)];
        rx.extend(in_flight(&routes, &["6"]));
        let end = read(&routes, &long_answer("null")).await;
        assert!(matches!(end, StdoutEnd::Closed));
        for (rx, id) in rx.iter_mut().zip([5, 6]) {
            let failed = next(rx);
            assert_eq!(failed["id"], id);
            assert_eq!(failed["error"]["code"], code::UPSTREAM_FAILED);
        }
        assert_eq!(
            in_flight(&routes, &["7"]).len(),
            1,
            "new requests are taken"
        );

        // One ordered stream has no requests to fail: it ends.
        let (tap, _taken) = mpsc::channel(8);
        routes.lock().tap(tap).expect("tapped");
        let end = read(&routes, &[format!(r#"{{"result":"{big}"}}"#)]).await;
        assert!(matches!(end, StdoutEnd::Broken(reason) if reason.contains(LIMIT)));
    }

    /// A request of the server's over the limit never reaches the client:
    /// the server gets an error for it, by its id wherever the id comes, and
    /// no request of the client's fails. A notification gets nothing.
    #[tokio::test]
    async fn proxy_stdio_a_request_over_the_limit_is_answered_to_the_server() {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let mut rx = in_flight(&routes, &["1"]);
        let big = "x".repeat(200);
        let (end, answers) = read_answering(
            &routes,
            &[
                format!(r#"{{"jsonrpc":"2.0","id":"s1","method":"roots/list","params":"{big}"}}"#),
                format!(r#"{{"method":"sampling/createMessage","id":7,"params":"{big}"}}"#),
                format!(r#"{{"jsonrpc":"2.0","method":"roots/list","params":"{big}","id":8}}"#),
                format!(r#"{{"jsonrpc":"2.0","method":"notifications/message","params":"{big}"}}"#),
            ],
        )
        .await;
        assert!(matches!(end, StdoutEnd::Closed));
        let ids: Vec<&serde_json::Value> = answers.iter().map(|a| &a["id"]).collect();
        assert_eq!(
            ids,
            [
                &serde_json::json!("s1"),
                &serde_json::json!(7),
                &serde_json::json!(8)
            ]
        );
        for answer in &answers {
            assert_eq!(answer["error"]["code"], code::INVALID_REQUEST, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(LIMIT), "{message}");
        }
        assert!(
            rx[0].try_recv().is_err(),
            "the client's request is untouched"
        );
    }

    /// A response that is not valid JSON-RPC cannot go to the client; its
    /// request is answered with an error instead of waiting for good.
    #[tokio::test]
    async fn proxy_stdio_an_invalid_response_answers_its_request_with_an_error() {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let mut rx = in_flight(&routes, &["1", "2", "3"]);
        let end = read(
            &routes,
            &[
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1}}"#,
                r#"{"jsonrpc":"1.0","id":2,"result":{}}"#,
                r#"{"jsonrpc":"2.0","id":3,"result":{},"method":"ping"}"#,
                "not JSON at all",
            ]
            .map(str::to_owned),
        )
        .await;
        assert!(matches!(end, StdoutEnd::Closed));
        for (rx, id) in rx.iter_mut().zip([1, 2, 3]) {
            let failed = next(rx);
            assert_eq!(failed["id"], id);
            assert_eq!(failed["error"]["code"], code::UPSTREAM_FAILED);
            let message = failed["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("response is invalid"), "{message}");
        }
    }

    #[test]
    fn proxy_stdio_program_is_located_as_the_spawn_would() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, mode: u32| {
            let file = dir.path().join(name);
            std::fs::write(&file, "#!/bin/sh\n").expect("written");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
            file
        };
        let server = write("server", 0o755);
        let plain = write("plain", 0o644);
        let dir_text = dir.path().to_str().expect("UTF-8").to_owned();
        let path = format!("/nonexistent:{dir_text}");
        let path = Some(OsStr::new(&path));

        let found = locate_in(server.to_str().expect("UTF-8"), None).expect("a path");
        assert_eq!(found, server);
        assert_eq!(locate_in("server", path), Ok(server));
        assert_eq!(
            locate_in("/nonexistent/server", path),
            Err(ProgramError::Missing("/nonexistent/server".into()))
        );
        let plain = plain.to_str().expect("UTF-8");
        assert_eq!(
            locate_in(plain, path),
            Err(ProgramError::NotExecutable(plain.into()))
        );
        assert_eq!(
            locate_in(&dir_text, path),
            Err(ProgramError::NotExecutable(dir_text.clone()))
        );
        // Not executable, so not what the search finds.
        assert_eq!(
            locate_in("plain", path),
            Err(ProgramError::NotOnPath("plain".into()))
        );
        assert_eq!(
            locate_in("server", Some(OsStr::new("/nonexistent"))),
            Err(ProgramError::NotOnPath("server".into()))
        );
        // Only the program is checked, whatever follows it.
        let command =
            StdioCommand::parse("/nonexistent/server --flag 'an argument'").expect("splits");
        assert_eq!(
            command.locate(),
            Err(ProgramError::Missing("/nonexistent/server".into()))
        );
        let command = StdioCommand::parse("sh -c 'sleep 1'").expect("splits");
        assert!(command.locate().is_ok(), "sh is on PATH");
    }
}
