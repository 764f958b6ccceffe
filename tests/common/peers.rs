//! The real MCP peers of `tests/peers/` (the official SDK clients,
//! server-everything, the dual-era Python server): finding them, running them
//! with bounded waits, and a recording TCP relay that shows what went over the
//! wire.
//!
//! A test that needs a peer calls [`require`] first: when a peer is missing it
//! fails if `CI` is set, and otherwise skips with a message saying how to
//! install the peers.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

/// How long one SDK client run may take before it is killed (its own
/// `--timeout` is shorter, so a slow run fails with the client's message).
pub const CLIENT_LIMIT: Duration = Duration::from_secs(90);
/// The `--timeout` handed to the client drivers, in seconds.
const CLIENT_TIMEOUT_SECONDS: &str = "60";

/// `tests/peers/`.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers")
}

/// A peer a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `@modelcontextprotocol/server-everything` (npm), on Node >= 20.
    ServerEverything,
    /// The TypeScript SDK clients (`@modelcontextprotocol/sdk` 1.x and
    /// `@modelcontextprotocol/client` 2.x) behind `ts_client.mjs`, on Node >= 20.
    TsSdk,
    /// The Python `mcp` SDK in `tests/peers/.venv` (the Python clients and
    /// `py_server.py`).
    Python,
    /// `redis-server` (Debian package `redis-server`), for the cluster tests.
    RedisServer,
    /// `nginx` (Debian package `nginx`), the cluster tests' load balancer.
    Nginx,
    /// libfaketime (Debian package `faketime`), to skew a process's clock.
    Faketime,
}

/// libfaketime's multi-threaded preload library, for `LD_PRELOAD`.
pub fn faketime_library() -> Option<PathBuf> {
    let lib = Path::new("/usr/lib");
    let arch_dirs = std::fs::read_dir(lib)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path());
    std::iter::once(lib.to_path_buf())
        .chain(arch_dirs)
        .map(|dir| dir.join("faketime/libfaketimeMT.so.1"))
        .find(|candidate| candidate.is_file())
}

/// A system program: on `PATH`, or in the sbin directories Debian installs
/// daemons into (not on every user's `PATH`).
pub fn system_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Why the system program `name` cannot run here (`version` prints its
/// version), or `None` when it can.
fn missing_program(name: &str, version: &str, package: &str) -> Option<String> {
    let Some(program) = system_program(name) else {
        return Some(format!(
            "{name} is not installed (Debian: apt-get install {package})"
        ));
    };
    let runs = Command::new(&program)
        .arg(version)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!runs).then(|| format!("{} does not run", program.display()))
}

/// Why `peer` cannot run here, or `None` when it can.
fn missing(peer: Peer) -> Option<String> {
    static NODE: OnceLock<Option<String>> = OnceLock::new();
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    let dir = peers_dir();
    let node = || {
        NODE.get_or_init(|| {
            let out = Command::new("node")
                .args(["-p", "process.versions.node.split('.')[0]"])
                .output();
            match out {
                Err(e) => Some(format!("node is not on PATH ({e})")),
                Ok(out) if !out.status.success() => Some("node does not run".into()),
                Ok(out) => {
                    let major: u32 = String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    (major < 20).then(|| format!("node >= 20 is needed, found major {major}"))
                }
            }
        })
        .clone()
    };
    let npm_package = |name: &str| {
        let path = dir.join("node_modules").join(name).join("package.json");
        (!path.is_file()).then(|| format!("the npm package {name} is not installed"))
    };
    match peer {
        Peer::ServerEverything => node()
            .or_else(|| npm_package("@modelcontextprotocol/server-everything"))
            .or_else(|| {
                let bin = dir.join("node_modules/.bin/mcp-server-everything");
                (!bin.exists()).then(|| format!("{} is missing", bin.display()))
            }),
        Peer::TsSdk => node()
            .or_else(|| npm_package("@modelcontextprotocol/sdk"))
            .or_else(|| npm_package("@modelcontextprotocol/client")),
        Peer::Python => PYTHON
            .get_or_init(|| {
                let python = dir.join(".venv/bin/python");
                if !python.exists() {
                    return Some(format!("{} is missing", python.display()));
                }
                let ok = Command::new(&python)
                    .args(["-c", "import mcp, httpx2, anyio"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                (!ok).then(|| "the Python `mcp` SDK does not import from tests/peers/.venv".into())
            })
            .clone(),
        Peer::RedisServer => missing_program("redis-server", "--version", "redis-server"),
        Peer::Nginx => missing_program("nginx", "-v", "nginx"),
        Peer::Faketime => faketime_library()
            .is_none()
            .then(|| "libfaketime is not installed (Debian: apt-get install faketime)".into()),
    }
}

/// Whether the environment says this is a CI run (then nothing may skip).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The peers, when every one `test` needs is installed. When one is missing:
/// under `CI` the test fails; otherwise it is skipped with a message (`None`).
pub fn require(test: &str, needed: &[Peer]) -> Option<Peers> {
    let problems: Vec<String> = needed
        .iter()
        .filter_map(|&peer| missing(peer).map(|why| format!("{peer:?}: {why}")))
        .collect();
    if problems.is_empty() {
        return Some(Peers { dir: peers_dir() });
    }
    let message = format!(
        "{test}: MCP peer missing: {}; install the peers with tests/peers/install.sh",
        problems.join("; ")
    );
    if in_ci() {
        panic!("{message} (CI is set, so a missing peer is a failure)");
    }
    eprintln!("SKIPPED {message}");
    None
}

/// A unique argument for a Python process to be found by
/// ([`super::proxy::processes_with`]); `-X` options are free-form, so the
/// interpreter accepts it where a script's own parser would not.
pub fn python_marker(test: &str) -> String {
    format!("-Xmarker=shadowcat-test-{test}-{}", std::process::id())
}

/// Which SDK client drives a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkClient {
    /// `py_client.py` (Python `mcp` 2.x).
    Python,
    /// `ts_client.mjs --sdk 1` (`@modelcontextprotocol/sdk` 1.x; handshake era only).
    Ts1,
    /// `ts_client.mjs --sdk 2` (`@modelcontextprotocol/client` 2.x).
    Ts2,
}

/// What a client driver printed on success.
#[derive(Debug, Clone)]
pub struct Report {
    pub tools: Vec<String>,
    pub echo: String,
    pub protocol_version: Option<String>,
    pub session_id: Option<String>,
    /// The error a call over the line limit got (`ts_stdio_client.mjs
    /// --too-long`).
    pub too_long: Option<Value>,
}

/// A finished client run.
#[derive(Debug)]
pub struct ClientRun {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The report of a successful run; fails the test with the client's
    /// stderr otherwise.
    pub fn report(&self) -> Report {
        assert!(
            self.status.success(),
            "{} failed ({:?}):\n{}",
            self.what,
            self.status,
            self.stderr
        );
        let line = self.stdout.lines().last().unwrap_or_default();
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: not one JSON line ({e}): {}", self.what, self.stdout));
        let text = |key: &str| json[key].as_str().map(str::to_owned);
        Report {
            tools: json["tools"]
                .as_array()
                .map(|tools| {
                    tools
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            echo: text("echo").unwrap_or_default(),
            protocol_version: text("protocol_version"),
            session_id: text("session_id"),
            too_long: Some(json["too_long"].clone()).filter(|refused| !refused.is_null()),
        }
    }
}

/// The installed peers.
#[derive(Debug, Clone)]
pub struct Peers {
    dir: PathBuf,
}

impl Peers {
    pub fn python(&self) -> PathBuf {
        self.dir.join(".venv/bin/python")
    }

    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn server_everything_bin(&self) -> PathBuf {
        self.dir.join("node_modules/.bin/mcp-server-everything")
    }

    /// server-everything on stdio, as words; `marker` rides along as an
    /// argument it ignores.
    pub fn server_everything_stdio(&self, marker: &str) -> Vec<String> {
        vec![
            path_str(&self.server_everything_bin()),
            "stdio".into(),
            marker.into(),
        ]
    }

    /// `py_server.py stdio`, as words; `marker` from [`python_marker`].
    pub fn py_server_stdio(&self, marker: &str) -> Vec<String> {
        vec![
            path_str(&self.python()),
            marker.into(),
            path_str(&self.script("py_server.py")),
            "stdio".into(),
        ]
    }

    /// A command for a client driver against `url`, in `era` (`legacy`,
    /// `auto` or `2026`), echoing `message`.
    pub fn client(&self, kind: SdkClient, url: &str, era: &str, message: &str) -> Command {
        let mut cmd = match kind {
            SdkClient::Python => {
                let mut cmd = Command::new(self.python());
                cmd.arg(self.script("py_client.py"));
                cmd
            }
            SdkClient::Ts1 | SdkClient::Ts2 => {
                let mut cmd = Command::new("node");
                cmd.arg(self.script("ts_client.mjs"))
                    .args(["--sdk", if kind == SdkClient::Ts1 { "1" } else { "2" }]);
                cmd
            }
        };
        cmd.arg(url)
            .args(["--era", era, "--message", message])
            .args(["--timeout", CLIENT_TIMEOUT_SECONDS]);
        cmd
    }

    /// Runs a client driver and waits (bounded) for it.
    pub fn run_client(&self, kind: SdkClient, url: &str, era: &str, message: &str) -> ClientRun {
        let what = format!("{kind:?} client --era {era} against {url}");
        run_bounded(&what, self.client(kind, url, era, message), CLIENT_LIMIT)
    }

    /// `py_stdio_client.py --era ERA -- COMMAND...`, waited for (bounded).
    pub fn run_stdio_client(&self, era: &str, message: &str, command: &[String]) -> ClientRun {
        let mut cmd = Command::new(self.python());
        cmd.arg(self.script("py_stdio_client.py"))
            .args(["--era", era, "--message", message])
            .args(["--timeout", CLIENT_TIMEOUT_SECONDS, "--"])
            .args(command);
        let what = format!("py_stdio_client --era {era} -- {}", command.join(" "));
        run_bounded(&what, cmd, CLIENT_LIMIT)
    }

    /// `ts_stdio_client.mjs -- COMMAND...` (SDK 1.x), waited for (bounded);
    /// `too_long`: the bytes of a call to make first, expecting it refused.
    pub fn run_ts_stdio_client(
        &self,
        message: &str,
        too_long: Option<usize>,
        command: &[String],
    ) -> ClientRun {
        let mut cmd = Command::new("node");
        cmd.arg(self.script("ts_stdio_client.mjs"))
            .args(["--message", message]);
        if let Some(bytes) = too_long {
            cmd.args(["--too-long", &bytes.to_string()]);
        }
        cmd.args(["--timeout", CLIENT_TIMEOUT_SECONDS, "--"])
            .args(command);
        let what = format!("ts_stdio_client -- {}", command.join(" "));
        run_bounded(&what, cmd, CLIENT_LIMIT)
    }

    /// server-everything on streamable HTTP, on a port of its own.
    pub fn start_server_everything_http(&self, marker: &str) -> HttpPeer {
        HttpPeer::start("server-everything", |port| {
            let mut cmd = Command::new(self.server_everything_bin());
            cmd.args(["streamableHttp", marker])
                .env("PORT", port.to_string());
            cmd
        })
    }

    /// The TypeScript SDK's example server (`simpleStreamableHttp.js`) with
    /// its demo OAuth authorisation server (`--oauth-strict`: tokens must be
    /// bound to the server's URL, `http://localhost:PORT/mcp`). Its demo
    /// provider approves every authorisation at once, as a user who clicks
    /// "allow" would; it issues no refresh tokens.
    pub fn start_ts_oauth_server(&self) -> HttpPeer {
        let example = self
            .dir
            .join("node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js");
        HttpPeer::start("ts-oauth-example", |port| {
            let mut cmd = Command::new("node");
            cmd.arg(&example)
                .args(["--oauth", "--oauth-strict"])
                .env("MCP_PORT", port.to_string())
                .env("MCP_AUTH_PORT", free_port().to_string());
            cmd
        })
    }

    /// `py_server.py http` on loopback, on a port of its own; `marker` from
    /// [`python_marker`].
    pub fn start_py_server_http(&self, marker: &str) -> HttpPeer {
        HttpPeer::start("py_server", |port| self.py_server_http(marker, port))
    }

    /// Stops `server` (from [`Self::start_py_server_http`]) and starts it
    /// again on its port, holding no session: a server restarted under
    /// its clients.
    pub fn restart_py_server_http(&self, server: &mut HttpPeer, marker: &str) {
        server.stop();
        *server = HttpPeer::start_on("py_server", server.port, &|port| {
            self.py_server_http(marker, port)
        })
        .unwrap_or_else(|e| panic!("py_server did not start again: {e}"));
    }

    fn py_server_http(&self, marker: &str, port: u16) -> Command {
        let mut cmd = Command::new(self.python());
        cmd.arg(marker).arg(self.script("py_server.py")).args([
            "http",
            "--port",
            &port.to_string(),
        ]);
        cmd
    }
}

pub fn path_str(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_owned()
}

/// One `--upstream-stdio` command line from words, quoted for its parser.
pub fn command_line(words: &[String]) -> String {
    shell_words::join(words)
}

/// Runs `cmd` in a process group of its own, collecting its output, and kills
/// the group if it has not exited within `limit`.
pub fn run_bounded(what: &str, mut cmd: Command, limit: Duration) -> ClientRun {
    let mut child = spawn_grouped(what, &mut cmd);
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            let err = stderr
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_default();
            panic!("{what}: still running after {limit:?}; killed. stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close when the last process holding them exits; a leftover
    // grandchild would hold them open, so this wait is bounded too.
    let collect = |rx: mpsc::Receiver<String>, name: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what}: its {name} stayed open after it exited"))
    };
    ClientRun {
        what: what.to_owned(),
        status,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    }
}

/// Starts `cmd`, its output piped, in a process group of its own, so that
/// whatever it starts stops with it ([`kill_group`]).
fn spawn_grouped(what: &str, cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"))
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        text.push_str(&String::from_utf8_lossy(&bytes));
        let _ = tx.send(text);
    });
    rx
}

fn kill_group(child: &mut Child) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// A port nothing listens on right now (on every interface, since
/// server-everything binds them all).
pub fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls until something accepts TCP connections on `addr`.
fn wait_listening(addr: SocketAddr, child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A peer server on streamable HTTP, run by the test; stopped (its whole
/// process group) when dropped.
pub struct HttpPeer {
    name: &'static str,
    child: Option<Child>,
    pub port: u16,
    /// What it wrote, for diagnostics.
    output: Arc<Mutex<Vec<String>>>,
}

impl HttpPeer {
    /// Starts the server from `command(port)` on a free port and waits until
    /// it accepts connections; tries another port if that one was taken.
    fn start(name: &'static str, command: impl Fn(u16) -> Command) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_on(name, free_port(), &command) {
                Ok(peer) => return peer,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("{name} did not start:\n{}", failures.join("\n"));
    }

    /// Starts the server on `port`; `Err` says what it wrote if it did not
    /// come up.
    fn start_on(
        name: &'static str,
        port: u16,
        command: &impl Fn(u16) -> Command,
    ) -> Result<Self, String> {
        let mut child = spawn_grouped(name, &mut command(port));
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut lines = output.lock();
                    if lines.len() < 2_000 {
                        lines.push(line);
                    }
                }
            });
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if wait_listening(addr, &mut child, Duration::from_secs(60)) {
            return Ok(Self {
                name,
                child: Some(child),
                port,
                output,
            });
        }
        kill_group(&mut child);
        let written = output.lock().join("\n");
        Err(format!("port {port}: {written}"))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn output(&self) -> Vec<String> {
        self.output.lock().clone()
    }

    /// Stops the server: SIGTERM to its group, SIGKILL after a grace.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // Anything else it started goes with it.
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        kill_group(&mut child);
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 message seen by a [`Relay`].
#[derive(Debug, Clone)]
pub struct HttpMessage {
    /// The request line or the status line.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpMessage {
    /// A request's method.
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or_default()
    }

    /// A response's status.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC body of a request, when it has one.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The JSON-RPC method of a request body.
    pub fn rpc_method(&self) -> Option<String> {
        self.json()?["method"].as_str().map(str::to_owned)
    }
}

/// Both directions of one relayed connection.
#[derive(Default)]
struct Recorded {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

/// A TCP relay in front of an HTTP server that records every byte both
/// ways, to check what a client or the proxy really sent.
pub struct Relay {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>> = Arc::default();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, socks, stopping) = (
            Arc::clone(&connections),
            Arc::clone(&sockets),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let record = Arc::new(Mutex::new(Recorded::default()));
                conns.lock().push(Arc::clone(&record));
                {
                    let mut socks = socks.lock();
                    socks.extend(client.try_clone().ok());
                    socks.extend(server.try_clone().ok());
                }
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let up = Arc::clone(&record);
                std::thread::spawn(move || pipe(client, server, up, true));
                std::thread::spawn(move || pipe(server2, client2, record, false));
            }
        });
        Self {
            addr,
            connections,
            sockets,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every request seen, connection by connection, in order.
    pub fn requests(&self) -> Vec<HttpMessage> {
        self.connections
            .lock()
            .iter()
            .flat_map(|c| parse_messages(&c.lock().to_server, false))
            .collect()
    }

    /// Every response seen (complete or not), connection by connection.
    pub fn responses(&self) -> Vec<HttpMessage> {
        self.connections
            .lock()
            .iter()
            .flat_map(|c| parse_messages(&c.lock().to_client, true))
            .collect()
    }

    /// The session ids the server gave in answer to `initialize`.
    pub fn sessions_opened(&self) -> HashSet<String> {
        self.exchanges()
            .iter()
            .filter(|(request, _)| request.rpc_method().as_deref() == Some("initialize"))
            .filter_map(|(_, response)| response.as_ref()?.header("mcp-session-id"))
            .map(str::to_owned)
            .collect()
    }

    /// Every request with its response (when one came), in order per connection.
    pub fn exchanges(&self) -> Vec<(HttpMessage, Option<HttpMessage>)> {
        self.connections
            .lock()
            .iter()
            .flat_map(|c| {
                let c = c.lock();
                let requests = parse_messages(&c.to_server, false);
                let mut responses = parse_messages(&c.to_client, true).into_iter();
                requests
                    .into_iter()
                    .map(|request| (request, responses.next()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for socket in self.sockets.lock().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, record: Arc<Mutex<Recorded>>, up: bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                {
                    let mut r = record.lock();
                    let side = if up {
                        &mut r.to_server
                    } else {
                        &mut r.to_client
                    };
                    side.extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits one direction of an HTTP/1.1 connection into messages (bodies by
/// Content-Length or chunked; a response with neither runs to the end).
/// A message cut short (a stream still open, a dropped connection) keeps what
/// arrived.
fn parse_messages(mut bytes: &[u8], responses: bool) -> Vec<HttpMessage> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some(end) = find(bytes, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        bytes = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut message = HttpMessage {
            start,
            headers,
            body: Vec::new(),
        };
        let status = message.status();
        let length = message
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = message
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if responses && (status / 100 == 1 || status == 204 || status == 304) {
            // No body.
        } else if chunked {
            loop {
                let Some(line_end) = find(bytes, b"\r\n") else {
                    bytes = &[];
                    break;
                };
                let size_text = String::from_utf8_lossy(&bytes[..line_end]);
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                bytes = &bytes[line_end + 2..];
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    let skip = find(bytes, b"\r\n").map_or(bytes.len(), |i| i + 2);
                    bytes = &bytes[skip..];
                    break;
                }
                let take = size.min(bytes.len());
                message.body.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if bytes.starts_with(b"\r\n") {
                    bytes = &bytes[2..];
                }
            }
        } else if let Some(length) = length {
            let take = length.min(bytes.len());
            message.body.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        } else if responses {
            message.body.extend_from_slice(bytes);
            bytes = &[];
        }
        out.push(message);
    }
    out
}

/// The JSON-RPC messages of a body: plain JSON, or the `data:` of SSE events.
pub fn rpc_messages(message: &HttpMessage) -> Vec<Value> {
    let sse = message
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let text = String::from_utf8_lossy(&message.body);
    if !sse {
        return serde_json::from_str(&text).into_iter().collect();
    }
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}
