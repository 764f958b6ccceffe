//! Running the `shadowcat` binary as a proxy, and a small MCP client for it.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use serde_json::{json, Value};

/// The MCP echo server example (`host/examples/mcp_echo.rs`), which
/// `cargo test` builds next to the test binaries.
pub fn echo_server() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join("mcp_echo");
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples; run it from the workspace",
        path.display()
    );
    path
}

/// A unique argument to find a test's processes by (see [`processes_with`]).
pub fn marker(test: &str) -> String {
    format!("--marker=shadowcat-test-{test}-{}", std::process::id())
}

/// Pids of live processes with `needle` as one whole argument (so a process
/// that merely mentions it inside a longer argument, like the proxy's own
/// `--upstream-stdio "server --marker=..."`, does not count).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A zombie has exited; only its parent's wait is missing.
            let zombie = state
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            !zombie
                && cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == needle.as_bytes())
        })
        .collect()
}

/// Waits (bounded) until no process carries `needle`; returns the survivors.
pub fn wait_no_processes(needle: &str, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_with(needle);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Echoes the child's log to the test's output (shown on failure) and
/// hands its lines over for assertions.
fn relay_stderr(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[shadowcat] {line}");
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// A running `shadowcat reverse`.
pub struct ProxyProcess {
    child: Option<Child>,
    pub mcp: String,
    pub admin: String,
    stderr: mpsc::Receiver<String>,
}

impl ProxyProcess {
    /// Starts `shadowcat GLOBAL... reverse REVERSE...` on ephemeral ports and
    /// waits until it serves.
    pub fn start(global: &[&str], reverse: &[&str]) -> Self {
        Self::start_with_env(global, reverse, &[])
    }

    /// As [`ProxyProcess::start`], with `env` added to its environment.
    pub fn start_with_env(global: &[&str], reverse: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .envs(env.iter().copied())
            .args([
                "--policy-dir",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"),
            ])
            .args(["--policy-cache", "off", "--log", "shadowcat=info"])
            .args(global)
            .args([
                "reverse",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(reverse)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shadowcat starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let stderr_lines = relay_stderr(stderr);
        let (addrs, found) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = addrs.send(line);
            }
        });
        let (mut mcp, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while mcp.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match found.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("mcp ") {
                        mcp = Some(url.to_owned());
                    } else if let Some(url) = line.strip_prefix("admin ") {
                        admin = Some(url.to_owned());
                    }
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let log: Vec<String> = stderr_lines.try_iter().collect();
                    panic!("shadowcat did not start ({status:?}):\n{}", log.join("\n"));
                }
            }
        }
        Self {
            child: Some(child),
            mcp: mcp.expect("mcp url"),
            admin: admin.expect("admin url"),
            stderr: stderr_lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_with_timeout(&mut child, Duration::from_secs(60))
    }

    /// Log lines written so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// The admin API's metrics, parsed as Prometheus text.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let text = reqwest::blocking::get(format!("{}/metrics", self.admin))
            .and_then(Response::text)
            .expect("metrics");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts that `message` is a JSON-RPC error of `code` whose message says
/// `says`.
pub fn assert_rpc_error(message: &Value, code: i64, says: &str) {
    assert_eq!(message["error"]["code"], code, "{message}");
    assert!(
        message["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(says)),
        "{message}"
    );
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `shadowcat ARGS`, which is expected to exit (killed, failing the
/// test, past 30 seconds): its status and what it wrote on stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadowcat"));
    command.args(args).stdin(Stdio::null());
    let mut child = command.stderr(Stdio::piped()).spawn().expect("runs");
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

/// One value of a scraped metric (summed over labels matching `labels`).
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A minimal streamable-HTTP MCP client (legacy era unless told otherwise).
pub struct McpClient {
    pub url: String,
    http: reqwest::blocking::Client,
    pub session: Option<String>,
    pub headers: Vec<(String, String)>,
    next_id: u64,
}

/// What one POST got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON-RPC message answering the request (from JSON or SSE), or the
    /// error body.
    pub body: Value,
    /// Every message of an SSE answer, in order.
    pub messages: Vec<Value>,
    /// The body as received.
    pub raw: String,
}

impl Answer {
    pub fn text(&self) -> String {
        self.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl McpClient {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            session: None,
            headers: Vec::new(),
            next_id: 0,
        }
    }

    /// The same client, trusting the PEM certificate `pem` besides the
    /// usual roots (a proxy serving HTTPS with a certificate of its own).
    /// Trusts every certificate of `pem` (one or several, concatenated).
    pub fn trusting(mut self, pem: &[u8]) -> Self {
        let certificates = reqwest::Certificate::from_pem_bundle(pem).expect("PEM certificates");
        assert!(!certificates.is_empty(), "no certificate to trust");
        let builder = certificates.into_iter().fold(
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)),
            reqwest::blocking::ClientBuilder::add_root_certificate,
        );
        self.http = builder.build().expect("client");
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn post_raw(&self, body: Vec<u8>, content_type: &str) -> Answer {
        read_answer(
            self.try_post_raw(body, content_type)
                .expect("proxy answers"),
            None,
        )
    }

    /// As [`McpClient::post_raw`], for a POST that may not get through
    /// (a certificate the client does not trust).
    pub fn try_post_raw(&self, body: Vec<u8>, content_type: &str) -> reqwest::Result<Response> {
        self.post_request(body, content_type).send()
    }

    /// Sends a request and returns the response unread, to read its SSE
    /// stream event by event.
    pub fn request_unread(&mut self, method: &str, params: Value) -> Response {
        self.next_id += 1;
        let message =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.post_request(message.to_string().into_bytes(), "application/json")
            .send()
            .expect("proxy answers")
    }

    fn post_request(&self, body: Vec<u8>, content_type: &str) -> reqwest::blocking::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", content_type)
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        request
    }

    pub fn post(&mut self, message: Value) -> Answer {
        let id = message.get("id").cloned();
        let mut answer = self.post_raw(message.to_string().into_bytes(), "application/json");
        if let Some(id) = id {
            if let Some(found) = answer.messages.iter().find(|m| m["id"] == id) {
                answer.body = found.clone();
            }
        }
        answer
    }

    pub fn request(&mut self, method: &str, params: Value) -> Answer {
        self.next_id += 1;
        self.post(json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}))
    }

    pub fn notify(&mut self, method: &str) -> Answer {
        self.post(json!({"jsonrpc": "2.0", "method": method}))
    }

    /// `initialize` plus `notifications/initialized`; keeps the session id.
    /// The answer is the notification's when the handshake failed half-way
    /// (the session was evicted in between), and the session is then dropped.
    pub fn initialize(&mut self) -> Answer {
        self.session = None;
        let answer = self.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "shadowcat-test", "version": "1"}}),
        );
        if answer.status != 200 {
            return answer;
        }
        self.session = answer
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let done = self.notify("notifications/initialized");
        if done.status != 202 {
            self.session = None;
            return done;
        }
        answer
    }

    pub fn echo(&mut self, message: &str) -> Answer {
        self.request(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": message}}),
        )
    }

    pub fn delete(&self) -> u16 {
        let mut request = self.http.delete(&self.url);
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        request.send().expect("proxy answers").status().as_u16()
    }

    /// Opens the GET stream; returns the response to read events from.
    pub fn open_stream(&self) -> Response {
        self.resume_stream(None)
    }

    /// Opens a GET stream that resumes the one `last_event_id` is from
    /// (`Last-Event-ID`), or a new one with `None`.
    pub fn resume_stream(&self, last_event_id: Option<&str>) -> Response {
        let mut request = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream");
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        self.http
            .execute(request.build().expect("request"))
            .expect("proxy answers")
    }
}

/// The next event of an SSE stream: its id and its data, or `None` at the
/// stream's end. Comments (keep-alives) are skipped.
pub fn next_event<R: BufRead>(stream: &mut R) -> Option<(Option<String>, String)> {
    let (mut id, mut data) = (None, Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if id.is_some() || !data.is_empty() {
                return Some((id, data.join("\n")));
            }
        } else if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim_start().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.trim_start().to_owned());
        }
    }
}

/// The next event of an SSE stream, which must be a JSON-RPC response and
/// the stream's last.
pub fn last_response<R: BufRead>(stream: &mut R) -> Value {
    let (_, data) = next_event(stream).expect("the response");
    let response: Value = serde_json::from_str(&data).expect("JSON");
    assert!(
        next_event(stream).is_none(),
        "the stream ends after its response: {data}"
    );
    response
}

/// Reads a JSON or SSE answer into its messages.
pub fn read_answer(response: Response, _: Option<&Value>) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let mut text = String::new();
    let mut body_reader = response;
    let _ = body_reader.read_to_string(&mut text);
    let messages: Vec<Value> = if sse {
        text.split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                (!data.is_empty() && !data.concat().is_empty())
                    .then(|| serde_json::from_str(&data.join("\n")).ok())
                    .flatten()
            })
            .collect()
    } else {
        serde_json::from_str(&text).into_iter().collect()
    };
    let body = messages.last().cloned().unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        messages,
        raw: text,
    }
}

/// A running `shadowcat forward stdio`: the test is its client, on its stdin
/// and stdout.
pub struct ForwardProcess {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: mpsc::Receiver<String>,
}

impl ForwardProcess {
    /// Starts `shadowcat --log warn GLOBAL... forward stdio FORWARD... -- SERVER...`.
    pub fn start(global: &[&str], forward: &[&str], server: &[&str]) -> Self {
        let command = [&["stdio"], forward, &["--"], server].concat();
        Self::run(global, &command)
    }

    /// Starts `shadowcat --log warn GLOBAL... forward http FORWARD...`.
    pub fn http(global: &[&str], forward: &[&str]) -> Self {
        Self::run(global, &[&["http"], forward].concat())
    }

    /// As [`ForwardProcess::http`], with `env` set for the process.
    pub fn http_with_env(global: &[&str], forward: &[&str], env: &[(&str, &str)]) -> Self {
        Self::run_with_env(global, &[&["http"], forward].concat(), env)
    }

    fn run(global: &[&str], forward: &[&str]) -> Self {
        Self::run_with_env(global, forward, &[])
    }

    fn run_with_env(global: &[&str], forward: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args(["--log", "warn"])
            .args(global)
            .arg("forward")
            .args(forward)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shadowcat forward starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = child.stderr.take().expect("stderr");
        let stderr_lines = relay_stderr(stderr);
        Self {
            child,
            stdin,
            stdout,
            stderr: stderr_lines,
        }
    }

    /// Writes one line to the proxy, as the client.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        writeln!(stdin, "{line}").expect("write to the proxy");
    }

    /// The next message the proxy writes; `None` at end of output.
    pub fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .expect("read from the proxy");
        (read > 0).then(|| serde_json::from_str(&line).expect("the proxy writes JSON lines"))
    }

    /// Reads the proxy's stderr up to the first line `wanted` accepts, which
    /// it returns; fails with what it read if none comes within `limit`.
    pub fn stderr_until(&mut self, wanted: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no such line on the proxy's stderr within {limit:?}; it wrote:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Waits (up to `limit`) for the authorisation URL the proxy prints on
    /// stderr and follows it as a browser would, redirects included, to the
    /// proxy's own page saying it is authorised. Returns the URL.
    pub fn follow_authorisation(&mut self, limit: Duration) -> reqwest::Url {
        let line = self.stderr_until(|line| line.contains("/authorize?"), limit);
        let url = reqwest::Url::parse(line.trim()).expect("the URL to open");
        let page = reqwest::blocking::get(url.clone())
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("the browser's round trip");
        assert!(page.contains("Shadowcat is authorised"), "{page}");
        url
    }

    /// Closes the proxy's stdin: the client is done.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits (bounded) for the proxy to exit; returns its status, what it
    /// wrote after the last [`ForwardProcess::read`], and its stderr.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<Value>, String) {
        self.stdin.take();
        self.ends_on_its_own(limit)
    }

    /// As [`ForwardProcess::finish`], with the client still connected: for a
    /// run the server ends.
    pub fn ends_on_its_own(mut self, limit: Duration) -> (ExitStatus, Vec<Value>, String) {
        let status = wait_with_timeout(&mut self.child, limit);
        let mut rest = Vec::new();
        while let Some(message) = self.read() {
            rest.push(message);
        }
        // The stderr reader ends with the process; give it a moment to drain.
        let mut log = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            log.push(line);
        }
        (status, rest, log.join("\n"))
    }
}
