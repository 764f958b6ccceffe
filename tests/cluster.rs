//! The cluster end to end, with real parts: `shadowcat reverse` instances
//! sharing a `redis-server` of the test's own on loopback, clients that
//! alternate instances or go through nginx (round robin, buffering off),
//! upstreams that are child processes (the `mcp_echo` example,
//! server-everything, `py_server.py`) or an HTTP server.
//!
//! `redis-server` and `nginx` come from Debian (`apt-get install redis-server
//! nginx`), the MCP peers from `tests/peers/install.sh`. A test whose parts
//! are missing skips with a message, except under `CI`, where it fails.

mod common;

mod cluster {
    use std::io::{BufReader, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;
    use serde_json::{json, Value};
    use shadowcat::cluster::hop::{HopPurpose, HOP_HEADER};
    use shadowcat::cluster::sealed_id::Owner;
    use shadowcat::cluster::{ClusterKeys, InstanceId};
    use shadowcat::proxy::client_key::ClientKey;

    use crate::common::peers::{
        command_line, faketime_library, free_port, python_marker, require, run_bounded,
        system_program, Peer, SdkClient, CLIENT_LIMIT,
    };
    use crate::common::proxy::{
        echo_server, last_response, marker, metric, next_event, processes_with, run_to_exit,
        wait_no_processes, Answer, McpClient, ProxyProcess,
    };
    use crate::common::with_watchdog;

    /// The cluster key every instance of these tests shares.
    const SECRET: &[u8] = b"shadowcat cluster tests: a shared secret of 32+ bytes";
    const LIMIT: Duration = Duration::from_secs(240);

    fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `redis-server` on a free loopback port, persisting nothing, in a
    /// temporary directory; killed when dropped.
    struct Redis {
        program: PathBuf,
        port: u16,
        dir: tempfile::TempDir,
        child: Option<Child>,
    }

    impl Redis {
        fn start() -> Self {
            let mut redis = Self {
                program: system_program("redis-server").expect("redis-server (checked)"),
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
            };
            redis.spawn();
            redis
        }

        fn spawn(&mut self) {
            let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log");
            let child = Command::new(&self.program)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("redis-server starts");
            self.child = Some(child);
            let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
            wait_until(
                "redis-server to answer PING",
                Duration::from_secs(20),
                || ping(addr),
            );
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }

        /// Dies as if it crashed: everything in it is lost.
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Up again on the same port, empty.
        fn restart(&mut self) {
            self.kill();
            self.spawn();
        }

        fn keys(&self, pattern: &str) -> Vec<String> {
            let mut connection = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .expect("a Redis connection");
            redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut connection)
                .expect("KEYS")
        }

        /// Everything lost, with no outage a client could notice.
        fn flushall(&self) {
            let mut connection = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .expect("a Redis connection");
            redis::cmd("FLUSHALL")
                .query::<()>(&mut connection)
                .expect("FLUSHALL");
        }

        fn get(&self, key: &str) -> Option<String> {
            let mut connection = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .expect("a Redis connection");
            redis::cmd("GET")
                .arg(key)
                .query(&mut connection)
                .expect("GET")
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn ping(addr: SocketAddr) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// nginx as a round-robin balancer in front of `backends`, with
    /// buffering off both ways (SSE streams pass as they come); stopped when
    /// dropped.
    struct Nginx {
        child: Option<Child>,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Nginx {
        fn start(backends: &[SocketAddr]) -> Self {
            Self::start_with_idle_timeout(backends, "300s")
        }

        /// With `idle_timeout` as the time a response may go without a
        /// byte before nginx cuts it (`proxy_read_timeout`).
        fn start_with_idle_timeout(backends: &[SocketAddr], idle_timeout: &str) -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let path = dir.path().display().to_string();
            let servers: String = backends
                .iter()
                .map(|b| format!("server {b} max_fails=0;\n"))
                .collect();
            // Workers of a root master run as `nobody` unless told otherwise,
            // and could not use the private temporary directory.
            let root = std::fs::metadata("/proc/self")
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
            let user = if root { "user root;" } else { "" };
            let config = format!(
                r#"{user}
worker_processes 1;
daemon off;
pid {path}/nginx.pid;
error_log {path}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {path}/body;
    proxy_temp_path {path}/proxy;
    fastcgi_temp_path {path}/fastcgi;
    uwsgi_temp_path {path}/uwsgi;
    scgi_temp_path {path}/scgi;
    upstream shadowcat {{
        {servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://shadowcat;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout {idle_timeout};
            proxy_next_upstream off;
        }}
    }}
}}
"#
            );
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config).expect("nginx.conf");
            let child = Command::new(system_program("nginx").expect("nginx (checked)"))
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("nginx starts");
            let nginx = Self {
                child: Some(child),
                port,
                _dir: dir,
            };
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            wait_until("nginx to listen", Duration::from_secs(20), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            nginx
        }

        fn url(&self) -> String {
            format!("http://127.0.0.1:{}/mcp", self.port)
        }
    }

    impl Drop for Nginx {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                // SIGQUIT: a graceful stop of the master and its worker.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGQUIT,
                );
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Instances `node-0`..`node-N` on one Redis, each started with
    /// `global` options and `reverse` options plus the cluster's.
    struct Cluster {
        redis: Redis,
        nodes: Vec<Option<ProxyProcess>>,
        key: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Cluster {
        fn start(global: &[&str], reverse: &[&[&str]]) -> Self {
            Self::start_with_env(global, reverse, &[])
        }

        /// As [`Cluster::start`]; node `i` gets `env[i]` (if any) added to
        /// its environment.
        fn start_with_env(global: &[&str], reverse: &[&[&str]], env: &[&[(&str, &str)]]) -> Self {
            let redis = Redis::start();
            let dir = tempfile::tempdir().expect("temp dir");
            let key = dir.path().join("cluster.key");
            std::fs::write(&key, SECRET).expect("key file");
            let mut cluster = Self {
                redis,
                nodes: Vec::new(),
                key,
                _dir: dir,
            };
            for (i, extra) in reverse.iter().enumerate() {
                let env = env.get(i).copied().unwrap_or_default();
                let node = cluster.start_node(i, global, extra, env);
                cluster.nodes.push(Some(node));
            }
            cluster.wait_members(reverse.len());
            cluster
        }

        fn start_node(
            &self,
            i: usize,
            global: &[&str],
            extra: &[&str],
            env: &[(&str, &str)],
        ) -> ProxyProcess {
            self.start_node_with_keys(i, global, extra, env, &[&self.key])
        }

        /// As [`Cluster::start_node`], with these `--session-key-file`s in
        /// this order.
        fn start_node_with_keys(
            &self,
            i: usize,
            global: &[&str],
            extra: &[&str],
            env: &[(&str, &str)],
            keys: &[&std::path::Path],
        ) -> ProxyProcess {
            let url = self.redis.url();
            let id = format!("node-{i}");
            let keys: Vec<String> = keys.iter().map(|k| k.display().to_string()).collect();
            let mut reverse: Vec<&str> = extra.to_vec();
            reverse.extend(["--cluster-redis", &url, "--instance-id", &id]);
            for key in &keys {
                reverse.extend(["--session-key-file", key.as_str()]);
            }
            ProxyProcess::start_with_env(global, &reverse, env)
        }

        /// Stops node `i` cleanly (SIGTERM) and starts it again with `keys`,
        /// as a rolling restart does; waits until every node sees it.
        fn restart_with_keys(&mut self, i: usize, extra: &[&str], keys: &[&std::path::Path]) {
            let node = self.nodes[i].take().expect("a live node");
            assert!(node.terminate().success(), "node-{i} stops cleanly");
            let node = self.start_node_with_keys(i, &[], extra, &[], keys);
            self.nodes[i] = Some(node);
            self.wait_members(self.nodes.len());
        }

        fn node(&self, i: usize) -> &ProxyProcess {
            self.nodes[i].as_ref().expect("a live node")
        }

        fn mcp(&self, i: usize) -> String {
            self.node(i).mcp.clone()
        }

        /// Every live node's MCP address, for a balancer in front of them.
        fn backends(&self) -> Vec<SocketAddr> {
            self.live().map(|node| socket_addr(&node.mcp)).collect()
        }

        fn live(&self) -> impl Iterator<Item = &ProxyProcess> {
            self.nodes.iter().flatten()
        }

        /// Waits (bounded) until every live node sees `n` members.
        fn wait_members(&self, n: usize) {
            wait_until(
                &format!("every node to see {n} members"),
                Duration::from_secs(20),
                || {
                    self.live().all(|node| {
                        metric(&node.metrics(), "shadowcat_cluster_members", &[]) == n as f64
                    })
                },
            );
        }

        /// Sums a metric over the live nodes.
        fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            self.live()
                .map(|n| metric(&n.metrics(), name, labels))
                .sum()
        }

        /// SIGKILL, as a crash would.
        fn kill(&mut self, i: usize) {
            let node = self.nodes[i].take().expect("a live node");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(node.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            drop(node);
        }
    }

    fn echo_upstream(mark: &str) -> String {
        format!("{} {mark}", echo_server().display())
    }

    /// An instance's options: an echo server per session, clients told
    /// apart by their `x-api-key`.
    fn keyed_echo_node(upstream: &str) -> [&str; 4] {
        [
            "--upstream-stdio",
            upstream,
            "--client-key",
            "header:x-api-key",
        ]
    }

    /// The headers of a 2026-07-28 `echo` call by the client `key`.
    fn stateless_echo(key: &str) -> [(&'static str, &str); 4] {
        [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("x-api-key", key),
        ]
    }

    /// A client on each instance, keyed `{prefix}{i}`, past its handshake.
    fn one_client_per_node(cluster: &Cluster, prefix: &str) -> Vec<McpClient> {
        (0..3)
            .map(|i| {
                let mut client = McpClient::new(&cluster.mcp(i))
                    .with_header("x-api-key", &format!("{prefix}{i}"));
                assert_eq!(client.initialize().status, 200);
                client
            })
            .collect()
    }

    fn sessions(admin: &str) -> (Vec<Value>, bool) {
        let response = reqwest::blocking::get(format!("{admin}/sessions")).expect("GET /sessions");
        let partial = response.headers().contains_key("shadowcat-cluster-partial");
        (response.json().expect("a session list"), partial)
    }

    fn socket_addr(url: &str) -> SocketAddr {
        url.strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|authority| authority.parse().ok())
            .unwrap_or_else(|| panic!("not an http://ADDR/ URL: {url}"))
    }

    fn alive(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat.is_empty()
            && !stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
    }

    fn assert_session_gone(answer: &Answer, what: &str) {
        assert_eq!(answer.status, 404, "{what}: {}", answer.raw);
        assert_eq!(
            answer.body["error"]["code"], -32032,
            "{what}: {}",
            answer.raw
        );
    }

    /// A POST with the given headers, JSON body.
    fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
        let client = reqwest::blocking::Client::new();
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        crate::common::proxy::read_answer(request.send().expect("an answer"), None)
    }

    fn echo_body(id: u64, message: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"message": message}}})
    }

    /// One session of server-everything (over stdio) while its requests go
    /// to all three instances in turn: one upstream process, the same pid
    /// from start to end, most requests forwarded, and the session listed
    /// and ended through any instance.
    #[test]
    fn cluster_session_keeps_its_upstream_pid_while_requests_reach_every_instance() {
        let Some(peers) = require(
            "cluster: one upstream per session",
            &[Peer::RedisServer, Peer::ServerEverything],
        ) else {
            return;
        };
        with_watchdog(LIMIT, move || {
            let mark = marker("cluster-pid");
            let upstream = command_line(&peers.server_everything_stdio(&mark));
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node, node]);
            let mut client = McpClient::new(&cluster.mcp(0));
            assert_eq!(client.initialize().status, 200);
            let id = client.session.clone().expect("a session id");
            assert!(
                id.len() > 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)),
                "a sealed id, base64url: {id}"
            );
            let pids = processes_with(&mark);
            assert_eq!(pids.len(), 1, "one upstream process: {pids:?}");
            let stream_via_2 = {
                let mut via = McpClient::new(&cluster.mcp(2));
                via.session = Some(id.clone());
                via.open_stream()
            };
            assert_eq!(stream_via_2.status(), 200, "the GET stream through a hop");
            for i in 0..12 {
                client.url = cluster.mcp(i % 3);
                let message = format!("call {i} via node-{}", i % 3);
                let answer = client.echo(&message);
                assert_eq!(answer.status, 200, "{}", answer.raw);
                assert_eq!(answer.text(), format!("Echo: {message}"));
                if i % 4 == 0 {
                    let tools = client.request("tools/list", json!({}));
                    assert!(tools.raw.contains("\"echo\""), "{}", tools.raw);
                }
                assert_eq!(processes_with(&mark), pids, "the same upstream process");
            }
            // A 2025-03-26 client's batch goes to the session's instance whole.
            let batch = json!([echo_body(50, "batch a"), echo_body(51, "batch b")]);
            let answer = post(&cluster.mcp(1), &[("mcp-session-id", &id)], &batch);
            assert_eq!(answer.status, 200, "{}", answer.raw);
            let answers: Vec<&Value> = answer
                .messages
                .iter()
                .flat_map(|m| m.as_array().into_iter().flatten())
                .collect();
            assert_eq!(answers.len(), 2, "{}", answer.raw);
            for (id, text) in [(50, "Echo: batch a"), (51, "Echo: batch b")] {
                let found = answers.iter().find(|m| m["id"] == id).expect("answered");
                assert_eq!(found["result"]["content"][0]["text"], text, "{found}");
            }
            drop(stream_via_2);
            let (rows, partial) = sessions(&cluster.node(1).admin);
            assert!(!partial);
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0]["id"], id.as_str());
            assert_eq!(rows[0]["instance"], "node-0");
            assert_eq!(rows[0]["pid"], pids[0]);
            assert_eq!(cluster.total("shadowcat_upstreams_started_total", &[]), 1.0);
            for i in [1, 2] {
                let scrape = cluster.node(i).metrics();
                let forwarded = metric(
                    &scrape,
                    "shadowcat_cluster_forwarded_requests_total",
                    &[("outcome", "answered")],
                );
                assert!(forwarded >= 4.0, "node-{i} forwarded {forwarded}");
            }
            // Ended through an instance that does not hold it.
            client.url = cluster.mcp(1);
            assert_eq!(client.delete(), 200);
            assert!(wait_no_processes(&mark, Duration::from_secs(15)).is_empty());
            assert_session_gone(&client.echo("after delete"), "a deleted session");
        });
    }

    /// The official Python SDK through nginx (round robin over three
    /// instances): list tools and echo, in the handshake era and probing
    /// for 2026-07-28 first; the requests of each session land on every
    /// instance, and nothing is left behind.
    #[test]
    fn cluster_python_sdk_lists_tools_and_echoes_through_a_round_robin_balancer() {
        let Some(peers) = require(
            "cluster: Python SDK through nginx",
            &[
                Peer::RedisServer,
                Peer::Nginx,
                Peer::ServerEverything,
                Peer::Python,
            ],
        ) else {
            return;
        };
        with_watchdog(LIMIT, move || {
            let mark = marker("cluster-python");
            let upstream = command_line(&peers.server_everything_stdio(&mark));
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node, node]);
            let nginx = Nginx::start(&cluster.backends());
            for era in ["legacy", "auto"] {
                let message = format!("python {era} through nginx");
                let report = peers
                    .run_client(SdkClient::Python, &nginx.url(), era, &message)
                    .report();
                assert!(
                    report.tools.iter().any(|t| t == "echo"),
                    "{:?}",
                    report.tools
                );
                assert_eq!(report.echo, format!("Echo: {message}"));
                assert_eq!(report.protocol_version.as_deref(), Some("2025-11-25"));
                let id = report.session_id.expect("a session id");
                assert!(id.len() > 32, "a sealed id: {id}");
            }
            let forwarded = cluster.total(
                "shadowcat_cluster_forwarded_requests_total",
                &[("outcome", "answered")],
            );
            assert!(forwarded >= 4.0, "requests crossed instances: {forwarded}");
            // The Python client DELETEs its session on exit, through nginx.
            assert!(
                wait_no_processes(&mark, Duration::from_secs(20)).is_empty(),
                "every upstream ended"
            );
        });
    }

    /// A stdio server's stream resumed on the other instance: a slow call
    /// whose SSE answer is dropped after its priming event on its owner is
    /// resumed by a GET with that id sent to the other instance, which hands
    /// it over; the response arrives there and the stream ends.
    #[test]
    fn cluster_a_stdio_stream_resumes_through_a_hop() {
        if require(
            "cluster: a stdio stream resumed through a hop",
            &[Peer::RedisServer],
        )
        .is_none()
        {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-resume-hop");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node]);
            let mut client = McpClient::new(&cluster.mcp(0));
            assert_eq!(client.initialize().status, 200);
            let answer = client.request_unread(
                "tools/call",
                json!({"name": "sleep", "arguments": {"ms": 2_500}}),
            );
            assert_eq!(answer.status(), 200);
            let mut answer = BufReader::new(answer);
            let (id, data) = next_event(&mut answer).expect("the priming event");
            assert_eq!(data, "");
            drop(answer);
            client.url = cluster.mcp(1);
            let mut resumed = BufReader::new(client.resume_stream(id.as_deref()));
            let response = last_response(&mut resumed);
            assert_eq!(response["result"]["content"][0]["text"], "slept 2500 ms");
            let forwarded = metric(
                &cluster.node(1).metrics(),
                "shadowcat_cluster_forwarded_requests_total",
                &[("method", "GET"), ("outcome", "answered")],
            );
            assert_eq!(forwarded, 1.0, "the GET went to the owner");
            assert_eq!(client.delete(), 200);
            assert!(wait_no_processes(&mark, Duration::from_secs(15)).is_empty());
        });
    }

    /// A balancer that cuts responses idle for 2 s, in front of two
    /// instances: the TypeScript SDK's 5 s tool call is cut at least twice
    /// (once before its first message) and still answered, each cut
    /// resumed from the call's last event id (its priming event's, at
    /// first), whichever instance the resuming GET lands on.
    #[test]
    fn cluster_slow_call_outlives_the_balancers_idle_timeout() {
        let Some(peers) = require(
            "cluster: a slow call through a balancer's idle timeout",
            &[Peer::RedisServer, Peer::Nginx, Peer::TsSdk],
        ) else {
            return;
        };
        with_watchdog(LIMIT, move || {
            let mark = marker("cluster-idle-cut");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node]);
            let nginx = Nginx::start_with_idle_timeout(&cluster.backends(), "2s");
            let mut client = peers.client(SdkClient::Ts1, &nginx.url(), "legacy", "unused");
            client.args(["--sleep-ms", "5000"]);
            let run = run_bounded(
                "ts_client --sleep-ms 5000 through nginx",
                client,
                CLIENT_LIMIT,
            );
            // Answered after 5 s through a balancer that cuts every response
            // idle for 2: only a resumed stream can have carried the answer.
            assert_eq!(run.report().echo, "slept 5000 ms");
            drop(cluster);
            assert!(wait_no_processes(&mark, Duration::from_secs(20)).is_empty());
        });
    }

    /// The Python SDK pinned to 2026-07-28 (no session id) through nginx:
    /// its requests land on every instance, and all reach the one upstream
    /// its owner record names.
    #[test]
    fn cluster_python_sdk_2026_requests_reach_one_upstream_through_a_balancer() {
        let Some(peers) = require(
            "cluster: Python SDK 2026-07-28 through nginx",
            &[Peer::RedisServer, Peer::Nginx, Peer::Python],
        ) else {
            return;
        };
        with_watchdog(LIMIT, move || {
            let mark = python_marker("cluster-2026");
            let upstream = command_line(&peers.py_server_stdio(&mark));
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node, node]);
            let nginx = Nginx::start(&cluster.backends());
            for round in 0..2 {
                let message = format!("2026 round {round}");
                let report = peers
                    .run_client(SdkClient::Python, &nginx.url(), "2026", &message)
                    .report();
                assert_eq!(report.tools, ["echo"]);
                assert_eq!(report.echo, format!("Echo: {message}"));
                assert_eq!(report.protocol_version.as_deref(), Some("2026-07-28"));
                assert_eq!(
                    processes_with(&mark).len(),
                    1,
                    "one upstream for the client, whichever instance its requests reach"
                );
            }
            assert_eq!(cluster.total("shadowcat_upstreams_started_total", &[]), 1.0);
            assert!(cluster.total("shadowcat_cluster_forwarded_requests_total", &[]) >= 2.0);
            assert_eq!(cluster.redis.keys("shadowcat:owner:*").len(), 1);
        });
    }

    /// Two instances in front of the HTTP server at `upstream`, and a client
    /// whose session the first opened with the token `first`, now talking to
    /// the second (a hop away from its session) with the token `then`.
    fn session_through_a_hop(upstream: &str, first: &str, then: &str) -> (Cluster, McpClient) {
        let node: &[&str] = &["--upstream-http", upstream];
        let cluster = Cluster::start(&[], &[node, node]);
        let mut client = McpClient::new(&cluster.mcp(0))
            .with_header("authorization", &format!("Bearer {first}"));
        assert_eq!(client.initialize().status, 200);
        client.headers = vec![("authorization".into(), format!("Bearer {then}"))];
        client.url = cluster.mcp(1);
        (cluster, client)
    }

    /// An HTTP upstream's OAuth challenge, refused through a hop, names the
    /// metadata of the instance the client reached, which serves it though
    /// no challenge came to it from the upstream.
    #[test]
    fn cluster_oauth_challenges_through_a_hop_name_the_instance_reached() {
        if require("cluster: OAuth through a hop", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let server = crate::common::http_server::HttpMcpServer::start();
            *server.state.require.lock() = Some("Bearer good".into());
            let (cluster, mut client) = session_through_a_hop(&server.url, "good", "expired");
            let refused = client.echo("through a hop");
            assert_eq!(refused.status, 401, "{}", refused.raw);
            let origin = cluster
                .mcp(1)
                .strip_suffix("/mcp")
                .expect("an /mcp URL")
                .to_owned();
            let metadata = format!("{origin}/.well-known/oauth-protected-resource/mcp");
            let challenge = refused
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                challenge.contains(&format!(r#"resource_metadata="{metadata}""#)),
                "{challenge}"
            );
            let served: Value = reqwest::blocking::get(&metadata)
                .expect("the instance answers")
                .json()
                .expect("JSON metadata");
            assert_eq!(served["resource"], cluster.mcp(1).as_str(), "{served}");
        });
    }

    /// POST SSE answers, the GET stream with `Last-Event-ID`, and DELETE,
    /// all through a hop, against an HTTP upstream that shows what arrived.
    #[test]
    fn cluster_streams_and_last_event_id_pass_through_a_hop() {
        if require("cluster: streams through a hop", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let upstream = SseUpstream::start();
            // Renewed credentials, sent through the hop from now on.
            let (cluster, mut client) = session_through_a_hop(&upstream.url, "first", "hop");
            let answer = client.request(
                "tools/call",
                json!({"name": "echo", "arguments": {"message": "streamed", "stream": true}}),
            );
            assert_eq!(answer.status, 200, "{}", answer.raw);
            assert_eq!(
                answer
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("text/event-stream")
            );
            assert_eq!(answer.messages.len(), 2, "{}", answer.raw);
            assert_eq!(answer.text(), "Echo: streamed");
            for id in ["id: prime-1", "id: ev-2", "id: ev-3"] {
                assert!(answer.raw.contains(id), "{}", answer.raw);
            }
            let stream = reqwest::blocking::Client::new()
                .get(cluster.mcp(1))
                .header("accept", "text/event-stream")
                .header("mcp-session-id", client.session.as_deref().expect("id"))
                .header("mcp-protocol-version", "2025-11-25")
                .header("last-event-id", "ev-2")
                .header("authorization", "Bearer hop")
                .send()
                .expect("the GET stream");
            assert_eq!(stream.status(), 200);
            let text = stream.text().expect("the stream's events");
            assert!(text.contains("id: ev-4"), "{text}");
            assert!(text.contains("resumed after ev-2"), "{text}");
            assert_eq!(client.delete(), 200);
            // The upstream session is deleted by the teardown, just after.
            wait_until("the upstream DELETE", Duration::from_secs(10), || {
                upstream.seen.lock().iter().any(|(m, _, _)| m == "DELETE")
            });
            let seen = upstream.seen.lock().clone();
            assert!(
                seen.iter()
                    .any(|(m, leid, _)| m == "GET" && leid.as_deref() == Some("ev-2")),
                "{seen:?}"
            );
            // The client's credentials went with it through the hop, on to
            // the upstream; the teardown's DELETE used the latest.
            let sent: Vec<(&str, Option<&str>)> = seen
                .iter()
                .map(|(m, _, auth)| (m.as_str(), auth.as_deref()))
                .collect();
            assert_eq!(
                sent,
                [
                    ("POST", Some("Bearer first")),
                    ("POST", Some("Bearer first")),
                    ("POST", Some("Bearer hop")),
                    ("GET", Some("Bearer hop")),
                    ("DELETE", Some("Bearer hop")),
                ]
            );
            assert!(
                cluster.node(1).metrics().samples.iter().any(|s| {
                    s.metric == "shadowcat_cluster_forwarded_requests_total"
                        && s.labels.get("method") == Some("GET")
                }),
                "the GET was forwarded"
            );
        });
    }

    /// One client key holding two sessions on two instances, 30 rapid
    /// requests alternating sessions and instances, at 10/s with a burst
    /// of 10: about 10 are admitted in all, not 20.
    #[test]
    fn cluster_global_rate_limit_admits_one_budget_per_client_across_instances() {
        if require("cluster: global rate limit", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-rate");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &keyed_echo_node(&upstream);
            let global = ["--rate-limit", "10", "--burst", "10"];
            let cluster = Cluster::start(&global, &[node, node, node]);
            let mut a = McpClient::new(&cluster.mcp(0)).with_header("x-api-key", "k1");
            let mut b = McpClient::new(&cluster.mcp(1)).with_header("x-api-key", "k1");
            assert_eq!(a.initialize().status, 200);
            assert_eq!(b.initialize().status, 200);
            // A full bucket again after the handshakes.
            std::thread::sleep(Duration::from_millis(1_200));
            let (admitted, elapsed) = burst(&cluster, &mut a, &mut b, 30);
            let refill = (elapsed.as_secs_f64() * 10.0).ceil() as usize;
            assert!(
                (10..=10 + refill + 1).contains(&admitted) && admitted < 20,
                "{admitted} of 30 admitted in {elapsed:?}"
            );
            assert_eq!(
                cluster.total(
                    "shadowcat_cluster_global_rate_limit_total",
                    &[("result", "limited")]
                ),
                (30 - admitted) as f64
            );
            // Another client has its own budget.
            let mut other = McpClient::new(&cluster.mcp(2)).with_header("x-api-key", "k2");
            assert_eq!(other.initialize().status, 200);
            assert_eq!(other.echo("mine").text(), "Echo: mine");
        });
    }

    /// Many things at once, each request sent to the next instance: six
    /// clients keep one upstream process each; a 2026-07-28 client whose
    /// first requests reach all three instances at the same moment gets one
    /// upstream (its owner record is claimed once); and one client key's
    /// requests, fired together through every instance, share one budget.
    #[test]
    fn cluster_concurrent_clients_keep_their_upstreams_and_share_one_budget() {
        if require("cluster: concurrency", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-concurrent");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &keyed_echo_node(&upstream);
            let global = ["--rate-limit", "10", "--burst", "10"];
            let cluster = Cluster::start(&global, &[node, node, node]);
            let urls: Arc<Vec<String>> = Arc::new((0..3).map(|i| cluster.mcp(i)).collect());

            // Six sessions, two per instance, called all at once: 8 calls
            // each (within the budget of its own key), two in three forwarded.
            const CLIENTS: usize = 6;
            const CALLS: usize = 8;
            let start = Arc::new(Barrier::new(CLIENTS));
            let workers: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (urls, start) = (Arc::clone(&urls), Arc::clone(&start));
                    std::thread::spawn(move || {
                        let mut client =
                            McpClient::new(&urls[c % 3]).with_header("x-api-key", &format!("c{c}"));
                        assert_eq!(client.initialize().status, 200);
                        start.wait();
                        for r in 0..CALLS {
                            client.url = urls[(c + r) % 3].clone();
                            let message = format!("client {c} call {r}");
                            let answer = client.echo(&message);
                            assert_eq!(answer.status, 200, "{message}: {}", answer.raw);
                            assert_eq!(answer.text(), format!("Echo: {message}"));
                        }
                        client.session.expect("a session id")
                    })
                })
                .collect();
            let ids: Vec<String> = workers
                .into_iter()
                .map(|w| w.join().expect("a client thread"))
                .collect();
            // No session ever got a second upstream: one started per session.
            assert_eq!(
                cluster.total("shadowcat_upstreams_started_total", &[]),
                CLIENTS as f64
            );
            assert_eq!(processes_with(&mark).len(), CLIENTS);
            let forwarded = cluster.total(
                "shadowcat_cluster_forwarded_requests_total",
                &[("method", "POST"), ("outcome", "answered")],
            );
            let expected = CLIENTS * (0..CALLS).filter(|r| r % 3 != 0).count();
            assert_eq!(forwarded, expected as f64);
            wait_until("every session listed", Duration::from_secs(10), || {
                sessions(&cluster.node(2).admin).0.len() == CLIENTS
            });
            let (rows, _) = sessions(&cluster.node(2).admin);
            for (c, id) in ids.iter().enumerate() {
                let row = rows
                    .iter()
                    .find(|r| r["id"] == id.as_str())
                    .expect("listed");
                assert_eq!(row["instance"], format!("node-{}", c % 3));
                let pid = row["pid"].as_u64().expect("a pid") as u32;
                assert!(alive(pid), "session {c}'s upstream {pid}");
            }

            // 2026-07-28 clients whose first three requests race to the
            // three instances: each ends with one upstream, one owner record.
            const RACERS: usize = 4;
            for k in 0..RACERS {
                let start = Arc::new(Barrier::new(3));
                let racers: Vec<_> = (0..3)
                    .map(|via| {
                        let (urls, start) = (Arc::clone(&urls), Arc::clone(&start));
                        std::thread::spawn(move || {
                            let key = format!("racer-{k}");
                            let headers = stateless_echo(&key);
                            let message = format!("racer {k} via node-{via}");
                            start.wait();
                            let answer =
                                post(&urls[via], &headers, &echo_body(via as u64 + 1, &message));
                            assert_eq!(answer.status, 200, "{message}: {}", answer.raw);
                            assert_eq!(answer.text(), format!("Echo: {message}"));
                        })
                    })
                    .collect();
                for racer in racers {
                    racer.join().expect("a racing request");
                }
            }
            // A request that lost a race to open the same session inside its
            // instance may have started an upstream, which is then closed.
            let settled = wait_until_settled(&mark, CLIENTS + RACERS);
            assert_eq!(settled, CLIENTS + RACERS, "one upstream per racing client");
            assert_eq!(cluster.redis.keys("shadowcat:owner:*").len(), RACERS);

            // One key, two sessions on two instances, 30 requests fired by
            // six threads through all three instances together.
            let mut a = McpClient::new(&urls[0]).with_header("x-api-key", "shared");
            let mut b = McpClient::new(&urls[1]).with_header("x-api-key", "shared");
            assert_eq!(a.initialize().status, 200);
            assert_eq!(b.initialize().status, 200);
            let sessions_ab = Arc::new([a.session.expect("id"), b.session.expect("id")]);
            std::thread::sleep(Duration::from_millis(1_200));
            const SENDERS: usize = 6;
            let start = Arc::new(Barrier::new(SENDERS + 1));
            let senders: Vec<_> = (0..SENDERS)
                .map(|t| {
                    let (urls, start) = (Arc::clone(&urls), Arc::clone(&start));
                    let sessions_ab = Arc::clone(&sessions_ab);
                    std::thread::spawn(move || {
                        let mut client =
                            McpClient::new(&urls[t % 3]).with_header("x-api-key", "shared");
                        client.session = Some(sessions_ab[t % 2].clone());
                        start.wait();
                        let mut admitted = 0;
                        for i in 0..5 {
                            // Ids unique across the senders sharing a session.
                            let body = echo_body((t * 100 + i) as u64, &format!("{t}.{i}"));
                            let answer = client.post(body);
                            match answer.status {
                                200 => admitted += 1,
                                429 => assert_eq!(
                                    answer.body["error"]["code"], -32029,
                                    "{}",
                                    answer.raw
                                ),
                                other => panic!("sender {t}: {other} {}", answer.raw),
                            }
                        }
                        admitted
                    })
                })
                .collect();
            start.wait();
            let started = Instant::now();
            let admitted: usize = senders
                .into_iter()
                .map(|s| s.join().expect("a sender"))
                .sum();
            let refill = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
            assert!(
                (10..=10 + refill + 1).contains(&admitted) && admitted < 20,
                "{admitted} of 30 concurrent requests admitted, {refill} refilled meanwhile"
            );
        });
    }

    /// Waits (bounded) until the number of processes carrying `mark` is
    /// `expected`, and returns the last count seen.
    fn wait_until_settled(mark: &str, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let count = processes_with(mark).len();
            if count == expected || Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// 30 requests alternating sessions `a` and `b` and the three instances;
    /// returns how many were admitted, and how long it took. A refusal must
    /// be the rate limit's 429, by the request's id, with `Retry-After`.
    fn burst(
        cluster: &Cluster,
        a: &mut McpClient,
        b: &mut McpClient,
        n: usize,
    ) -> (usize, Duration) {
        let started = Instant::now();
        let mut admitted = 0;
        for i in 0..n {
            let client = if i % 2 == 0 { &mut *a } else { &mut *b };
            client.url = cluster.mcp(i % cluster.nodes.len());
            let answer = client.echo(&format!("burst {i}"));
            match answer.status {
                200 => admitted += 1,
                429 => {
                    assert_eq!(answer.body["error"]["code"], -32029, "{}", answer.raw);
                    assert!(answer.body["id"].is_number(), "{}", answer.raw);
                    assert!(answer.headers.contains_key("retry-after"));
                }
                other => panic!("request {i}: {other} {}", answer.raw),
            }
        }
        (admitted, started.elapsed())
    }

    /// SIGKILL one instance: its upstream processes die with it, its
    /// sessions get 404 from the survivors (at once and after its record
    /// expired), a re-initialize succeeds, and the others' sessions go on.
    #[test]
    fn cluster_sigkilled_instance_sessions_get_404_and_leave_no_orphans() {
        if require("cluster: SIGKILL", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            // Stubborn servers outlive a closed stdin: only the parent-death
            // signal ends them.
            let mark = marker("cluster-sigkill");
            let upstream = format!("{} {mark} --stubborn", echo_server().display());
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let mut cluster = Cluster::start(&[], &[node, node, node]);
            let mut a = McpClient::new(&cluster.mcp(0));
            let mut b = McpClient::new(&cluster.mcp(1));
            assert_eq!(a.initialize().status, 200);
            assert_eq!(b.initialize().status, 200);
            let (rows, _) = sessions(&cluster.node(1).admin);
            let b_row = rows
                .iter()
                .find(|r| r["instance"] == "node-1")
                .expect("node-1's session");
            let b_pid = b_row["pid"].as_u64().expect("a pid") as u32;
            assert!(alive(b_pid));

            cluster.kill(1);
            wait_until(
                "node-1's upstream to die with it",
                Duration::from_secs(10),
                || !alive(b_pid),
            );
            assert_eq!(processes_with(&mark).len(), 1, "node-0's upstream only");
            for via in [0, 2] {
                b.url = cluster.mcp(via);
                assert_session_gone(&b.echo("to the dead"), "a dead owner, at once");
            }
            a.url = cluster.mcp(2);
            assert_eq!(a.echo("still here").text(), "Echo: still here");

            // Once its record has expired, the survivors know it is gone.
            cluster.wait_members(2);
            b.url = cluster.mcp(0);
            assert_session_gone(&b.echo("to the dead"), "a dead owner, forgotten");
            let (rows, _) = sessions(&cluster.node(0).admin);
            assert!(
                rows.iter().all(|r| r["instance"] != "node-1"),
                "the dead instance's sessions are not listed: {rows:?}"
            );

            b.url = cluster.mcp(2);
            assert_eq!(b.initialize().status, 200, "a re-initialize works");
            b.url = cluster.mcp(0);
            assert_eq!(b.echo("again").text(), "Echo: again");
            assert_eq!(processes_with(&mark).len(), 2);
        });
    }

    /// Redis dies and comes back empty: requests keep reaching their
    /// sessions' owners meanwhile (instances in mode `open` admit them, the
    /// one in mode `closed` refuses with 503), the metrics say so, and once
    /// Redis is back everything is rewritten and the rate limit holds again.
    #[test]
    fn cluster_routing_survives_a_redis_restart_and_the_rate_limit_recovers() {
        if require("cluster: Redis restart", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-redis-restart");
            let upstream = echo_upstream(&mark);
            let open: &[&str] = &keyed_echo_node(&upstream);
            let closed: &[&str] = &[open, &["--cluster-redis-down", "closed"]].concat();
            let global = ["--rate-limit", "10", "--burst", "10"];
            let mut cluster = Cluster::start(&global, &[open, open, closed]);
            let mut a = McpClient::new(&cluster.mcp(0)).with_header("x-api-key", "k1");
            let mut b = McpClient::new(&cluster.mcp(2)).with_header("x-api-key", "k1");
            assert_eq!(a.initialize().status, 200);
            assert_eq!(b.initialize().status, 200);
            let a_id = a.session.clone().expect("id");

            cluster.redis.kill();
            for i in 0..6 {
                a.url = cluster.mcp(i % 2);
                let answer = a.echo(&format!("while Redis is down {i}"));
                assert_eq!(answer.status, 200, "{}", answer.raw);
            }
            a.url = cluster.mcp(2);
            let refused = a.echo("through the closed instance");
            assert_eq!(refused.status, 503, "{}", refused.raw);
            assert!(refused.headers.contains_key("retry-after"));
            let scrape = cluster.node(1).metrics();
            assert_eq!(metric(&scrape, "shadowcat_cluster_redis_up", &[]), 0.0);
            assert!(metric(&scrape, "shadowcat_cluster_redis_errors_total", &[]) > 0.0);
            assert!(
                metric(
                    &scrape,
                    "shadowcat_cluster_global_rate_limit_total",
                    &[("result", "unchecked")]
                ) > 0.0
            );
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_cluster_redis_down_mode",
                    &[("mode", "open")]
                ),
                1.0
            );
            let closed_scrape = cluster.node(2).metrics();
            assert_eq!(
                metric(
                    &closed_scrape,
                    "shadowcat_cluster_redis_down_mode",
                    &[("mode", "closed")]
                ),
                1.0
            );
            assert!(
                metric(
                    &closed_scrape,
                    "shadowcat_cluster_global_rate_limit_total",
                    &[("result", "refused")]
                ) >= 1.0
            );
            let (rows, partial) = sessions(&cluster.node(0).admin);
            assert!(partial, "a listing without Redis says it is partial");
            assert_eq!(rows.len(), 1, "node-0's own session: {rows:?}");

            cluster.redis.restart();
            wait_until("every node to reconnect", Duration::from_secs(20), || {
                cluster
                    .live()
                    .all(|n| metric(&n.metrics(), "shadowcat_cluster_redis_up", &[]) == 1.0)
            });
            cluster.wait_members(3);
            // The index is rewritten at once, not at the next renewal.
            wait_until(
                "the session index to be rewritten",
                Duration::from_secs(8),
                || {
                    let (rows, partial) = sessions(&cluster.node(1).admin);
                    !partial && rows.iter().any(|r| r["id"] == a_id.as_str())
                },
            );
            a.url = cluster.mcp(2);
            assert_eq!(a.echo("closed is open again").status, 200);

            std::thread::sleep(Duration::from_millis(1_200));
            let (admitted, elapsed) = burst(&cluster, &mut a, &mut b, 30);
            let refill = (elapsed.as_secs_f64() * 10.0).ceil() as usize;
            assert!(
                (10..=10 + refill + 1).contains(&admitted) && admitted < 20,
                "after the restart, {admitted} of 30 admitted in {elapsed:?}"
            );
        });
    }

    /// Redis loses every record (flushed, then restarted empty) while every
    /// instance lives: the first instance to read the empty Redis must not
    /// take the others for dead before they write their records back. Each
    /// session keeps answering through every other instance, with no 404,
    /// and a 2026-07-28 client keeps its one upstream.
    #[test]
    fn cluster_sessions_answer_through_other_instances_when_redis_loses_its_records() {
        if require("cluster: Redis losing its records", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-redis-lost");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &keyed_echo_node(&upstream);
            // As fast as they answer: the per-session limit is not on trial.
            let global = ["--rate-limit", "off"];
            let mut cluster = Cluster::start(&global, &[node, node, node]);
            let mut clients = one_client_per_node(&cluster, "s");
            let stateless = stateless_echo("stateless-on-node-1");
            let first = post(&cluster.mcp(1), &stateless, &echo_body(1, "claim"));
            assert_eq!(first.text(), "Echo: claim", "{}", first.raw);
            assert_eq!(processes_with(&mark).len(), 4);

            // Every session through both other instances, and the 2026-07-28
            // client through the two that do not hold it, for `span`.
            let mut call = 100;
            let mut hammer = |cluster: &Cluster, span: Duration, stateless_too: bool| {
                let until = Instant::now() + span;
                let mut failures = Vec::new();
                while Instant::now() < until {
                    for (i, client) in clients.iter_mut().enumerate() {
                        for via in (0..3).filter(|&v| v != i) {
                            client.url = cluster.mcp(via);
                            let answer = client.echo(&format!("node-{i} via node-{via}"));
                            if answer.status != 200 {
                                failures.push(format!("node-{i} via node-{via}: {}", answer.raw));
                            }
                        }
                    }
                    if stateless_too {
                        for via in [0, 2] {
                            call += 1;
                            let answer = post(&cluster.mcp(via), &stateless, &echo_body(call, "s"));
                            if answer.text() != "Echo: s" {
                                failures.push(format!("2026 via node-{via}: {}", answer.raw));
                            }
                        }
                    }
                }
                failures
            };

            cluster.redis.flushall();
            let failures = hammer(&cluster, Duration::from_secs(4), true);
            assert!(failures.is_empty(), "after FLUSHALL: {failures:#?}");
            assert_eq!(
                processes_with(&mark).len(),
                4,
                "no second upstream for the 2026-07-28 client after FLUSHALL"
            );

            cluster.redis.restart();
            // Session ids route from memory, whether or not an instance has
            // noticed the restart yet.
            let failures = hammer(&cluster, Duration::from_millis(500), false);
            assert!(failures.is_empty(), "just after the restart: {failures:#?}");
            // A 2026-07-28 client is served where it lands while an instance
            // cannot reach Redis; from its first heartbeat on, it asks.
            wait_until("every node to reconnect", Duration::from_secs(20), || {
                cluster
                    .live()
                    .all(|n| metric(&n.metrics(), "shadowcat_cluster_redis_up", &[]) == 1.0)
            });
            let failures = hammer(&cluster, Duration::from_secs(4), true);
            assert!(failures.is_empty(), "after the restart: {failures:#?}");
            assert_eq!(
                processes_with(&mark).len(),
                4,
                "no second upstream for the 2026-07-28 client after the restart"
            );
            assert_eq!(cluster.total("shadowcat_upstreams_started_total", &[]), 4.0);
            assert_eq!(
                cluster.redis.keys("shadowcat:owner:*").len(),
                1,
                "the owner record is written back"
            );

            // Really dead is still found out as fast as before.
            cluster.kill(2);
            let killed = Instant::now();
            cluster.wait_members(2);
            assert!(
                killed.elapsed() < Duration::from_secs(6),
                "node-2 forgotten after {:?}",
                killed.elapsed()
            );
            clients[2].url = cluster.mcp(0);
            assert_session_gone(&clients[2].echo("to the dead"), "a dead owner");
        });
    }

    /// A rolling key rotation in the README's three steps, one instance
    /// restarted at a time: the new key added as the second (accepted, not
    /// used), then made the first, then the old one dropped. At every step,
    /// every live session answers through either instance.
    #[test]
    fn cluster_rolling_key_rotation_never_answers_404() {
        if require("cluster: key rotation", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-rotation");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let mut cluster = Cluster::start(&[], &[node, node]);
            let dir = tempfile::tempdir().expect("temp dir");
            let new = dir.path().join("new.key");
            std::fs::write(&new, b"the next cluster key, also 32 bytes or more").expect("key");
            let old = cluster.key.clone();
            let mut clients: Vec<McpClient> =
                (0..2).map(|i| McpClient::new(&cluster.mcp(i))).collect();
            for client in &mut clients {
                assert_eq!(client.initialize().status, 200);
            }
            let check = |cluster: &Cluster, clients: &mut [McpClient], step: &str| {
                for (i, client) in clients.iter_mut().enumerate() {
                    for via in 0..2 {
                        client.url = cluster.mcp(via);
                        let answer = client.echo(&format!("{step}: node-{i} via node-{via}"));
                        assert_eq!(
                            answer.status, 200,
                            "{step}: node-{i}'s session via node-{via}: {}",
                            answer.raw
                        );
                    }
                }
            };
            check(&cluster, &mut clients, "before");
            let steps: [(&str, Vec<&std::path::Path>); 3] = [
                ("new key accepted", vec![&old, &new]),
                ("new key used", vec![&new, &old]),
                ("old key dropped", vec![&new]),
            ];
            for (step, keys) in &steps {
                for i in [1, 0] {
                    let other = 1 - i;
                    let kept = clients[other].session.clone();
                    cluster.restart_with_keys(i, node, keys);
                    // The restarted instance's sessions ended with it; the
                    // other's live on, and a new one opens at once.
                    clients[i].url = cluster.mcp(i);
                    assert_eq!(clients[i].initialize().status, 200, "{step}");
                    check(
                        &cluster,
                        &mut clients,
                        &format!("{step}, node-{i} restarted"),
                    );
                    assert_eq!(clients[other].session, kept, "{step}");
                }
            }
            assert_eq!(
                cluster.total(
                    "shadowcat_cluster_hops_received_total",
                    &[("result", "rejected")]
                ),
                0.0
            );
        });
    }

    /// `session cleanup --all` through one instance removes every session of
    /// the cluster, as `session list` lists them and `session delete`
    /// reaches them, and says how many instances it reached.
    #[test]
    fn cluster_cleanup_all_removes_every_instances_sessions() {
        if require("cluster: cleanup --all", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-cleanup");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &keyed_echo_node(&upstream);
            let cluster = Cluster::start(&[], &[node, node, node]);
            let mut clients = one_client_per_node(&cluster, "c");
            let stateless = stateless_echo("stateless");
            let answer = post(&cluster.mcp(2), &stateless, &echo_body(1, "here"));
            assert_eq!(answer.text(), "Echo: here", "{}", answer.raw);
            assert_eq!(processes_with(&mark).len(), 4);
            let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
                .args([
                    "session",
                    "cleanup",
                    "--all",
                    "--admin",
                    &cluster.node(0).admin,
                ])
                .output()
                .expect("the CLI runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("removed 4 session(s) on 3 instance(s)"),
                "{stdout}"
            );
            assert!(
                wait_no_processes(&mark, Duration::from_secs(15)).is_empty(),
                "every upstream ended"
            );
            wait_until("an empty listing", Duration::from_secs(10), || {
                sessions(&cluster.node(1).admin).0.is_empty()
            });
            for (i, client) in clients.iter_mut().enumerate() {
                client.url = cluster.mcp((i + 1) % 3);
                assert_session_gone(&client.echo("cleaned up"), &format!("node-{i}'s session"));
            }
        });
    }

    /// What a client cannot do: tamper with a session id, present an id
    /// sealed under another key or naming a dead or earlier instance, or
    /// forge, replay elsewhere or re-time a hop header. All get 404, never
    /// 400 or 503; a genuine hop gets through (the check is real).
    #[test]
    fn cluster_tampered_ids_and_forged_hop_headers_get_404() {
        if require("cluster: hostile hops", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-hostile");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node, node]);
            let mut client = McpClient::new(&cluster.mcp(0));
            assert_eq!(client.initialize().status, 200);
            let id = client.session.clone().expect("id");
            let version = ("mcp-protocol-version", "2025-11-25");

            let mut tampered = id.clone().into_bytes();
            let middle = tampered.len() / 2;
            tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).expect("ascii");
            let keys = ClusterKeys::from_secrets(&[SECRET]).expect("keys");
            let foreign = ClusterKeys::from_secrets(&[[7u8; 32]]).expect("keys");
            let node0 = Owner {
                instance: InstanceId::parse("node-0").expect("id"),
                boot: 42,
            };
            let stranger = Owner {
                instance: InstanceId::parse("node-9").expect("id"),
                boot: 42,
            };
            let bad_ids = [
                ("tampered", tampered),
                ("sealed under another key", foreign.seal(&node0)),
                ("an earlier life of node-0", keys.seal(&node0)),
                ("an instance never seen", keys.seal(&stranger)),
                (
                    "not sealed at all",
                    "0123456789abcdef0123456789abcdef".to_owned(),
                ),
            ];
            for (what, bad) in &bad_ids {
                for via in 0..3 {
                    let url = cluster.mcp(via);
                    let answer = post(
                        &url,
                        &[("mcp-session-id", bad), version],
                        &echo_body(7, "x"),
                    );
                    assert_session_gone(&answer, &format!("POST, {what}, via node-{via}"));
                    assert_eq!(answer.body["id"], 7, "answered by the request id");
                    let http = reqwest::blocking::Client::new();
                    let get = http
                        .get(&url)
                        .header("accept", "text/event-stream")
                        .header("mcp-session-id", bad)
                        .send()
                        .expect("answer");
                    assert_eq!(get.status(), 404, "GET, {what}, via node-{via}");
                    let delete = http
                        .delete(&url)
                        .header("mcp-session-id", bad)
                        .send()
                        .expect("answer");
                    assert_eq!(delete.status(), 404, "DELETE, {what}, via node-{via}");
                }
            }

            // Hops sent straight to the owner, as a client could.
            let owner = cluster.mcp(0);
            let now = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("time")
                    .as_millis() as i64
            };
            let client_key = ClientKey(1);
            let genuine = keys.sign_hop(HopPurpose::Post, &id, client_key, now());
            let answer = post(
                &owner,
                &[("mcp-session-id", &id), version, (HOP_HEADER, &genuine)],
                &echo_body(8, "a genuine hop"),
            );
            assert_eq!(answer.text(), "Echo: a genuine hop", "{}", answer.raw);
            let forged = [
                ("garbage", "1.post.0.0.AAAA".to_owned()),
                (
                    "signed under another key",
                    foreign.sign_hop(HopPurpose::Post, &id, client_key, now()),
                ),
                (
                    "for another session",
                    keys.sign_hop(HopPurpose::Post, "another", client_key, now()),
                ),
                (
                    "for another method",
                    keys.sign_hop(HopPurpose::Get, &id, client_key, now()),
                ),
                (
                    "ten minutes old",
                    keys.sign_hop(HopPurpose::Post, &id, client_key, now() - 600_000),
                ),
                (
                    "another client claimed",
                    genuine.replacen(".0000000000000001.", ".0000000000000002.", 1),
                ),
            ];
            for (what, hop) in &forged {
                let answer = post(
                    &owner,
                    &[("mcp-session-id", &id), version, (HOP_HEADER, hop)],
                    &echo_body(9, "x"),
                );
                assert_session_gone(&answer, &format!("a hop header {what}"));
                assert_eq!(answer.body["id"], 9, "a hop header {what}: {}", answer.raw);
            }
            let revoke = reqwest::blocking::Client::new()
                .delete(&owner)
                .header("mcp-session-id", &id)
                .header(HOP_HEADER, "1.revoke.0.0.AAAA")
                .send()
                .expect("answer");
            assert_eq!(revoke.status(), 404, "a forged revocation");
            let rejected = metric(
                &cluster.node(0).metrics(),
                "shadowcat_cluster_hops_received_total",
                &[("result", "rejected")],
            );
            assert_eq!(rejected, forged.len() as f64 + 1.0);
            client.url = cluster.mcp(1);
            assert_eq!(client.echo("unharmed").text(), "Echo: unharmed");
        });
    }

    /// The admin API of any instance lists the whole cluster, and deletes a
    /// session whichever instance holds it; so does the CLI.
    #[test]
    fn cluster_admin_lists_every_instance_and_deletes_through_any() {
        if require("cluster: admin", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-admin");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &["--upstream-stdio", &upstream];
            let cluster = Cluster::start(&[], &[node, node, node]);
            let mut ids = Vec::new();
            for i in 0..3 {
                let mut client = McpClient::new(&cluster.mcp(i));
                assert_eq!(client.initialize().status, 200);
                ids.push(client.session.clone().expect("id"));
            }
            wait_until("every session listed", Duration::from_secs(10), || {
                sessions(&cluster.node(0).admin).0.len() == 3
            });
            let (rows, _) = sessions(&cluster.node(0).admin);
            for (i, id) in ids.iter().enumerate() {
                let row = rows
                    .iter()
                    .find(|r| r["id"] == id.as_str())
                    .expect("listed");
                assert_eq!(row["instance"], format!("node-{i}"));
                assert!(row["pid"].as_u64().is_some());
            }
            let cli = |args: &[&str]| {
                let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
                    .args(args)
                    .output()
                    .expect("the CLI runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let admin1 = cluster.node(1).admin.clone();
            let table = cli(&["session", "list", "--admin", &admin1]);
            assert!(table.contains("3 session(s) on 3 instance(s)"), "{table}");
            for i in 0..3 {
                assert!(table.contains(&format!("node-{i}")), "{table}");
            }
            // node-2's session, deleted through node-0.
            let admin0 = cluster.node(0).admin.clone();
            let done = cli(&["session", "delete", &ids[2], "--admin", &admin0]);
            assert!(done.contains("removed"), "{done}");
            wait_until("node-2's upstream to end", Duration::from_secs(10), || {
                processes_with(&mark).len() == 2
            });
            let (rows, _) = sessions(&cluster.node(1).admin);
            assert!(rows.iter().all(|r| r["id"] != ids[2].as_str()), "{rows:?}");
            assert!(cluster
                .redis
                .keys(&format!("shadowcat:session:*{}", ids[2]))
                .is_empty());
            let gone = reqwest::blocking::Client::new()
                .delete(format!("{admin0}/sessions/{}", ids[2]))
                .send()
                .expect("answer");
            assert_eq!(gone.status(), 404);
            let mut client = McpClient::new(&cluster.mcp(1));
            client.session = Some(ids[2].clone());
            assert_session_gone(&client.echo("revoked"), "a revoked session");
        });
    }

    /// 2026-07-28 requests (no session id) from one client, sent to every
    /// instance in turn, reach the one upstream its owner record names;
    /// when that instance dies, a survivor takes the client over.
    #[test]
    fn cluster_2026_clients_reach_the_instance_holding_their_upstream() {
        if require("cluster: 2026-07-28 owners", &[Peer::RedisServer]).is_none() {
            return;
        }
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-stateless");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &keyed_echo_node(&upstream);
            let mut cluster = Cluster::start(&[], &[node, node, node]);
            let headers = stateless_echo("stateless-client");
            for i in 0..6 {
                let answer = post(&cluster.mcp(i % 3), &headers, &echo_body(i as u64, "hi"));
                assert_eq!(answer.text(), "Echo: hi", "{}", answer.raw);
            }
            assert_eq!(
                processes_with(&mark).len(),
                1,
                "one upstream for the client"
            );
            let owners = cluster.redis.keys("shadowcat:owner:*");
            assert_eq!(owners.len(), 1, "{owners:?}");
            let record = cluster.redis.get(&owners[0]).expect("an owner record");
            let holder: usize = record
                .rsplit("node-")
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{record}"));
            assert!(cluster.total("shadowcat_cluster_forwarded_requests_total", &[]) >= 4.0);

            cluster.kill(holder);
            let survivor = (holder + 1) % 3;
            wait_no_processes(&mark, Duration::from_secs(10));
            let answer = post(&cluster.mcp(survivor), &headers, &echo_body(10, "moved"));
            assert_eq!(answer.text(), "Echo: moved", "{}", answer.raw);
            let other = (holder + 2) % 3;
            let answer = post(&cluster.mcp(other), &headers, &echo_body(11, "moved"));
            assert_eq!(answer.text(), "Echo: moved", "{}", answer.raw);
            assert_eq!(processes_with(&mark).len(), 1, "taken over by one survivor");
        });
    }

    /// Instances whose clocks are hours apart (libfaketime) forward to each
    /// other, and share one global rate limit, as if they agreed.
    #[test]
    fn cluster_clock_skew_between_instances_changes_nothing() {
        let Some(_) = require("cluster: clock skew", &[Peer::RedisServer, Peer::Faketime]) else {
            return;
        };
        with_watchdog(LIMIT, || {
            let mark = marker("cluster-skew");
            let upstream = echo_upstream(&mark);
            let node: &[&str] = &keyed_echo_node(&upstream);
            let library = faketime_library().expect("libfaketime (checked)");
            let library = library.display().to_string();
            // The wall clock only: timers run on the monotonic one.
            let skewed = |offset| {
                [
                    ("LD_PRELOAD", library.as_str()),
                    ("FAKETIME", offset),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ]
            };
            let (ahead, behind) = (skewed("+2h"), skewed("-90m"));
            let global = ["--rate-limit", "10", "--burst", "10"];
            let cluster =
                Cluster::start_with_env(&global, &[node, node, node], &[&[], &ahead, &behind]);
            let mut clients = one_client_per_node(&cluster, "k");
            for (i, client) in clients.iter_mut().enumerate() {
                for via in (0..3).filter(|&v| v != i) {
                    client.url = cluster.mcp(via);
                    let answer = client.echo(&format!("node-{i} via node-{via}"));
                    assert_eq!(
                        answer.status, 200,
                        "node-{i} via node-{via}: {}",
                        answer.raw
                    );
                }
            }
            assert_eq!(
                cluster.total(
                    "shadowcat_cluster_hops_received_total",
                    &[("result", "rejected")]
                ),
                0.0
            );
            // One client, sessions on the two skewed instances: one budget.
            let mut a = McpClient::new(&cluster.mcp(1)).with_header("x-api-key", "shared");
            let mut b = McpClient::new(&cluster.mcp(2)).with_header("x-api-key", "shared");
            assert_eq!(a.initialize().status, 200);
            assert_eq!(b.initialize().status, 200);
            std::thread::sleep(Duration::from_millis(1_200));
            let (admitted, elapsed) = burst(&cluster, &mut a, &mut b, 30);
            let refill = (elapsed.as_secs_f64() * 10.0).ceil() as usize;
            assert!(
                (10..=10 + refill + 1).contains(&admitted) && admitted < 20,
                "{admitted} of 30 admitted in {elapsed:?}"
            );
        });
    }

    /// An instance refuses to start without a usable key, and needs
    /// `--advertise` when it listens on a wildcard address.
    #[test]
    fn cluster_flags_are_checked_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let short = dir.path().join("short.key");
        std::fs::write(&short, "short").expect("key");
        let good = dir.path().join("good.key");
        std::fs::write(&good, SECRET).expect("key");
        let run = |args: &[&str]| {
            let mut all = vec!["--log", "warn", "reverse", "--upstream-stdio", "true"];
            all.extend_from_slice(&["--admin-listen", "off"]);
            all.extend_from_slice(args);
            run_to_exit(&all)
        };
        let redis = "redis://127.0.0.1:1/0";
        let (status, err) = run(&["--cluster-redis", redis]);
        assert!(
            !status.success() && err.contains("--session-key-file"),
            "{err}"
        );
        let short = short.display().to_string();
        let (status, err) = run(&["--cluster-redis", redis, "--session-key-file", &short]);
        assert!(!status.success() && err.contains("at least 32"), "{err}");
        let good = good.display().to_string();
        let (status, err) = run(&[
            "--cluster-redis",
            redis,
            "--session-key-file",
            &good,
            "--listen",
            "0.0.0.0:0",
        ]);
        assert!(!status.success() && err.contains("--advertise"), "{err}");
        let (status, err) = run(&[
            "--cluster-redis",
            redis,
            "--session-key-file",
            &good,
            "--instance-id",
            "no spaces",
        ]);
        assert!(!status.success() && err.contains("instance id"), "{err}");
        let (status, err) = run(&["--instance-id", "a"]);
        assert!(
            !status.success() && err.contains("--cluster-redis"),
            "{err}"
        );
    }

    /// Each request's method and `Last-Event-ID`, as an upstream saw them.
    /// Each request's method, `Last-Event-ID` and `Authorization`.
    type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

    /// An HTTP upstream for the stream test: an SSE answer with event ids on
    /// request, a GET stream that says which `Last-Event-ID` it resumed
    /// after, DELETE; it records each request's method, `Last-Event-ID` and
    /// `Authorization`.
    struct SseUpstream {
        url: String,
        seen: Seen,
        _runtime: tokio::runtime::Runtime,
    }

    impl SseUpstream {
        fn start() -> Self {
            use axum::http::HeaderMap;
            use axum::response::IntoResponse;
            use axum::routing::post;

            fn note(seen: &Seen, method: &str, headers: &HeaderMap) {
                let get = |name| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let entry = (
                    method.to_owned(),
                    get("last-event-id"),
                    get("authorization"),
                );
                seen.lock().push(entry);
            }
            let seen: Seen = Arc::default();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let (on_post, on_get, on_delete) = (seen.clone(), seen.clone(), seen.clone());
            let app = axum::Router::new().route(
                "/mcp",
                post(move |headers: HeaderMap, body: String| {
                    let seen = on_post.clone();
                    async move {
                        note(&seen, "POST", &headers);
                        let message: Value = serde_json::from_str(&body).unwrap_or_default();
                        let Some(id) = message.get("id").cloned() else {
                            return axum::http::StatusCode::ACCEPTED.into_response();
                        };
                        if message["method"] == "initialize" {
                            let result = json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                                "serverInfo": {"name": "sse", "version": "1"}});
                            let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
                            return (
                                [("content-type", "application/json"), ("mcp-session-id", "up-1")],
                                body.to_string(),
                            )
                                .into_response();
                        }
                        let text = format!(
                            "Echo: {}",
                            message["params"]["arguments"]["message"].as_str().unwrap_or("")
                        );
                        let answer = json!({"jsonrpc": "2.0", "id": id,
                            "result": {"content": [{"type": "text", "text": text}]}});
                        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                              "params": {"progress": 1}});
                        let body = format!(
                            "id: prime-1\ndata: \n\nid: ev-2\ndata: {progress}\n\nid: ev-3\ndata: {answer}\n\n"
                        );
                        ([("content-type", "text/event-stream")], body).into_response()
                    }
                })
                .get(move |headers: HeaderMap| {
                    let seen = on_get.clone();
                    async move {
                        note(&seen, "GET", &headers);
                        let after = headers
                            .get("last-event-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("nothing")
                            .to_owned();
                        let message = json!({"jsonrpc": "2.0", "method": "notifications/message",
                            "params": {"level": "info", "data": format!("resumed after {after}")}});
                        let body = format!("id: ev-4\ndata: {message}\n\n");
                        ([("content-type", "text/event-stream")], body).into_response()
                    }
                })
                .delete(move |headers: HeaderMap| {
                    let seen = on_delete.clone();
                    async move {
                        note(&seen, "DELETE", &headers);
                        axum::http::StatusCode::OK
                    }
                }),
            );
            let addr = runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                addr
            });
            Self {
                url: format!("http://{addr}/mcp"),
                seen,
                _runtime: runtime,
            }
        }
    }
}
