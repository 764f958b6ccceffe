//! The proxy end to end with real MCP peers (see `tests/peers/README.md`): the
//! official Python and TypeScript SDK clients, `@modelcontextprotocol/server-everything`
//! and the dual-era `py_server.py`, through the `shadowcat` binary.
//!
//! The peers install with `tests/peers/install.sh`. Without them these tests
//! skip with a message, except under `CI`, where a missing peer fails.

mod common;

mod peers {
    use std::collections::{BTreeMap, HashSet};
    use std::net::SocketAddr;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::http_server::{HttpMcpServer, AUTHORIZATION_SERVER};
    use crate::common::peers::{
        command_line, path_str, python_marker, require, run_bounded, ClientRun, HttpMessage,
        HttpPeer, Peer, Peers, Relay, Report, SdkClient, CLIENT_LIMIT,
    };
    use crate::common::proxy::{
        echo_server, marker, metric, processes_with, wait_no_processes, ForwardProcess, McpClient,
        ProxyProcess,
    };
    use crate::common::{fixture, with_watchdog};

    const EVERY_PEER: &[Peer] = &[Peer::ServerEverything, Peer::TsSdk, Peer::Python];
    const HANDSHAKE_ERA: &str = "2025-11-25";
    const STATELESS_ERA: &str = "2026-07-28";

    /// Every client in the handshake era, then the probing clients that fall
    /// back to it from a server that cannot speak 2026-07-28.
    const HANDSHAKE_RUNS: [(SdkClient, &str); 5] = [
        (SdkClient::Python, "legacy"),
        (SdkClient::Ts1, "legacy"),
        (SdkClient::Ts2, "legacy"),
        (SdkClient::Python, "auto"),
        (SdkClient::Ts2, "auto"),
    ];

    /// The `auto` clients of [`HANDSHAKE_RUNS`], each probing once.
    const PROBES: usize = 2;

    /// Strict 2026-07-28 clients (Python pins the version without a probe, TS
    /// 2.x pins it through `server/discover`), then the probing ones.
    const STATELESS_RUNS: [(SdkClient, &str); 4] = [
        (SdkClient::Python, "2026"),
        (SdkClient::Ts2, "2026"),
        (SdkClient::Python, "auto"),
        (SdkClient::Ts2, "auto"),
    ];

    fn socket_addr(url: &str) -> SocketAddr {
        let authority = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not an http URL: {url}"));
        authority.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn shadowcat() -> String {
        env!("CARGO_BIN_EXE_shadowcat").to_owned()
    }

    fn sessions(proxy: &ProxyProcess) -> Vec<Value> {
        reqwest::blocking::get(format!("{}/sessions", proxy.admin))
            .and_then(|r| r.json())
            .expect("GET /sessions")
    }

    /// Waits (bounded) until exactly `n` processes carry `mark`.
    fn wait_processes(mark: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = processes_with(mark).len();
            if found == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{found} processes carry {mark}, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Terminates the proxy with SIGTERM: a clean exit, and no upstream
    /// process (those carrying `stdio_mark`) left.
    fn shut_down(proxy: ProxyProcess, stdio_mark: Option<&str>) {
        let status = proxy.terminate();
        assert!(status.success(), "shadowcat exited with {status:?}");
        if let Some(mark) = stdio_mark {
            let left = wait_no_processes(mark, Duration::from_secs(15));
            assert!(left.is_empty(), "upstream processes left: {left:?}");
        }
    }

    /// What every successful run against server-everything shows: its tools,
    /// the echo, the handshake era and a session id minted by the proxy
    /// (128 random bits as hex; server-everything's own ids are UUIDs).
    fn assert_server_everything_session(report: &Report, message: &str) -> String {
        assert!(
            report.tools.iter().any(|t| t == "echo") && report.tools.iter().any(|t| t == "get-sum"),
            "server-everything's tools: {:?}",
            report.tools
        );
        assert_eq!(report.echo, format!("Echo: {message}"));
        assert_eq!(report.protocol_version.as_deref(), Some(HANDSHAKE_ERA));
        let id = report.session_id.clone().expect("a session id");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "the proxy's own session id, not the upstream's: {id}"
        );
        id
    }

    fn assert_stateless_run(report: &Report, message: &str) {
        assert_eq!(report.tools, ["echo"]);
        assert_eq!(report.echo, format!("Echo: {message}"));
        assert_eq!(report.protocol_version.as_deref(), Some(STATELESS_ERA));
        assert_eq!(report.session_id, None, "no protocol session in 2026-07-28");
    }

    /// Runs the handshake-era clients one after the other; returns the
    /// session ids of the clients that DELETEd their session (Python) and of
    /// those that just left (TS), as the README describes.
    fn handshake_runs(peers: &Peers, url: &str, how: &str) -> (Vec<String>, Vec<String>) {
        let (mut deleted, mut kept) = (Vec::new(), Vec::new());
        for (kind, era) in HANDSHAKE_RUNS {
            let message = format!("{kind:?} --era {era} {how}");
            let report = peers.run_client(kind, url, era, &message).report();
            let id = assert_server_everything_session(&report, &message);
            assert!(
                !deleted.contains(&id) && !kept.contains(&id),
                "a fresh session per client"
            );
            if kind == SdkClient::Python {
                deleted.push(id);
            } else {
                kept.push(id);
            }
        }
        (deleted, kept)
    }

    /// After [`handshake_runs`]: the Python sessions are closed, the TS ones
    /// live on, and each of the two auto clients' `server/discover` probes
    /// opened a 2026-07-28 session that was closed when the upstream refused
    /// the probe (a client that falls back never uses it again).
    fn assert_sessions_after_handshake_runs(
        proxy: &ProxyProcess,
        deleted: &[String],
        kept: &[String],
    ) {
        let rows = sessions(proxy);
        let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
        for id in kept {
            assert!(ids.contains(&id.as_str()), "{id} is live: {ids:?}");
        }
        for id in deleted {
            assert!(!ids.contains(&id.as_str()), "{id} was DELETEd: {ids:?}");
        }
        assert_eq!(rows.len(), kept.len(), "the kept sessions only: {ids:?}");
        let scrape = proxy.metrics();
        let created = (deleted.len() + kept.len() + PROBES) as f64;
        assert_eq!(
            metric(&scrape, "shadowcat_sessions_created_total", &[]),
            created
        );
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "closed")]
            ),
            (deleted.len() + PROBES) as f64
        );
        assert_eq!(
            metric(&scrape, "shadowcat_sessions_live", &[]),
            kept.len() as f64
        );
    }

    /// The official SDK clients (Python, TS 1.x, TS 2.x) through
    /// `reverse --upstream-stdio` to server-everything: in the handshake era,
    /// and probing for 2026-07-28 (which server-everything cannot speak) and
    /// falling back. One upstream process per session, none after shutdown.
    #[test]
    fn peers_sdk_clients_through_reverse_stdio_to_server_everything() {
        let Some(peers) = require("reverse stdio to server-everything", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mark = marker("se-stdio");
            let upstream = command_line(&peers.server_everything_stdio(&mark));
            let proxy = ProxyProcess::start(&[], &["--upstream-stdio", &upstream]);
            let (deleted, kept) = handshake_runs(&peers, &proxy.mcp, "through stdio");
            assert_sessions_after_handshake_runs(&proxy, &deleted, &kept);
            wait_processes(&mark, kept.len());
            shut_down(proxy, Some(&mark));
        });
    }

    /// server-everything (TypeScript SDK) allows one GET stream per session
    /// and answers a second 409: the proxy says so (409, not a 502 that reads
    /// as a broken upstream), and the first stream stays open.
    #[test]
    fn peers_a_second_stream_refused_upstream_is_409_and_the_first_stays() {
        let Some(peers) = require("a second stream on server-everything", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(120), move || {
            let mark = marker("se-conflict");
            let mut server = peers.start_server_everything_http(&mark);
            let url = format!("http://{}/mcp", server.addr());
            let proxy = ProxyProcess::start(&[], &["--upstream-http", &url]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let first = client.open_stream();
            assert_eq!(first.status(), 200);
            let second = client.open_stream();
            assert_eq!(second.status(), 409);
            let body: Value = second.json().expect("a JSON-RPC error");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("one stream per session"), "{body}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while metric(&proxy.metrics(), "shadowcat_session_streams", &[]) != 1.0 {
                assert!(Instant::now() < deadline, "the first stream is still open");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(client.echo("still").status, 200);
            drop(first);
            shut_down(proxy, None);
            server.stop();
            assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        });
    }

    /// The TypeScript SDK's OAuth discovery through `reverse --upstream-http`
    /// to a server that requires a token: the challenge leads it to the
    /// proxy's metadata, whose resource is the URL it connected to, so it
    /// would go on to ask the server's authorisation server for a token for
    /// the proxy. Straight to the server, the same script finds the server.
    #[test]
    fn peers_ts_sdk_oauth_discovery_through_the_proxy_names_the_proxy() {
        let Some(peers) = require("OAuth discovery through the proxy", &[Peer::TsSdk]) else {
            return;
        };
        with_watchdog(Duration::from_secs(120), move || {
            let server = HttpMcpServer::start();
            *server.state.require.lock() = Some("Bearer good".into());
            let proxy = ProxyProcess::start(&[], &["--upstream-http", &server.url]);
            let discover = |url: &str| {
                let mut cmd = Command::new("node");
                cmd.arg(peers.script("ts_oauth_discovery.mjs")).arg(url);
                let run = run_bounded("ts_oauth_discovery.mjs", cmd, CLIENT_LIMIT);
                assert!(run.ok(), "{}: {}", run.what, run.stderr);
                serde_json::from_str::<Value>(run.stdout.trim())
                    .unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
            };
            for url in [&proxy.mcp, &server.url] {
                let found = discover(url);
                assert_eq!(found["resource"], url.as_str(), "{found}");
                assert_eq!(found["authorizationServers"][0], AUTHORIZATION_SERVER);
                let origin = url.strip_suffix("/mcp").expect("an /mcp URL");
                let metadata = found["resourceMetadataUrl"].as_str().unwrap_or_default();
                assert!(metadata.starts_with(origin), "{found}");
            }
            shut_down(proxy, None);
        });
    }

    /// The TypeScript and Python SDK clients over HTTPS (`--tls-cert`), each
    /// trusting the proxy's certificate the way its runtime is told to.
    #[test]
    fn peers_sdk_clients_over_https() {
        let Some(peers) = require("SDK clients over HTTPS", &[Peer::TsSdk, Peer::Python]) else {
            return;
        };
        with_watchdog(Duration::from_secs(180), move || {
            let cert = fixture("tls/localhost.pem").display().to_string();
            let key = fixture("tls/localhost.key").display().to_string();
            let upstream = format!("{} {}", echo_server().display(), marker("peers-tls"));
            let proxy = ProxyProcess::start(
                &[],
                &[
                    "--upstream-stdio",
                    &upstream,
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                ],
            );
            assert!(proxy.mcp.starts_with("https://"), "{}", proxy.mcp);
            for (kind, trust) in [
                (SdkClient::Ts2, "NODE_EXTRA_CA_CERTS"),
                (SdkClient::Python, "SSL_CERT_FILE"),
            ] {
                let message = format!("{kind:?} over TLS");
                let mut cmd = peers.client(kind, &proxy.mcp, "legacy", &message);
                cmd.env(trust, &cert);
                let report = run_bounded(&message, cmd, CLIENT_LIMIT).report();
                assert_eq!(report.echo, format!("Echo: {message}"), "{kind:?}");
            }
            shut_down(proxy, None);
        });
    }

    /// server-everything over streamable HTTP, a relay that records what
    /// reaches it, and `reverse --upstream-http` to the relay.
    fn proxy_to_relayed_server_everything(
        peers: &Peers,
        mark: &str,
    ) -> (HttpPeer, Relay, ProxyProcess) {
        let server = peers.start_server_everything_http(mark);
        let upstream = Relay::start(server.addr());
        let proxy = ProxyProcess::start(&[], &["--upstream-http", &upstream.url()]);
        (server, upstream, proxy)
    }

    /// A 2025-03-26 client's batch through `reverse --upstream-http` to
    /// server-everything (a 2025-11-25 server, which takes no batch): each
    /// element reaches it as a POST of its own, and the answers, with a
    /// long-running tool's progress, come back on one stream.
    #[test]
    fn peers_a_batch_reaches_server_everything_as_its_elements() {
        let Some(peers) = require("a batch to server-everything", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(120), move || {
            let mark = marker("se-batch");
            let (mut server, upstream, proxy) = proxy_to_relayed_server_everything(&peers, &mark);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let session = client.session.clone().expect("a session");
            let batch = serde_json::json!([
                {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"message": "in a batch"}}},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "trigger-long-running-operation",
                            "arguments": {"duration": 1, "steps": 2},
                            "_meta": {"progressToken": "batch-progress"}}},
            ]);
            let answer = reqwest::blocking::Client::new()
                .post(&proxy.mcp)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", &session)
                .body(batch.to_string())
                .send()
                .expect("the proxy answers");
            assert_eq!(answer.status().as_u16(), 200);
            let body = answer.text().expect("a body");
            let messages: Vec<Value> = body
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .filter_map(|data| serde_json::from_str(data).ok())
                .collect();
            let text = |id: i64| {
                messages
                    .iter()
                    .find(|m| m["id"] == id)
                    .map(|m| m["result"]["content"][0]["text"].to_string())
                    .unwrap_or_else(|| panic!("no answer {id}: {body}"))
            };
            assert!(text(1).contains("Echo: in a batch"), "{body}");
            assert!(text(2).contains("completed"), "{body}");
            let progress = messages
                .iter()
                .filter(|m| m["params"]["progressToken"] == "batch-progress")
                .count();
            assert_eq!(progress, 2, "{body}");
            let posted: Vec<Option<Value>> = upstream
                .requests()
                .iter()
                .filter(|request| request.method() == "POST")
                .map(HttpMessage::json)
                .collect();
            assert!(
                posted.iter().flatten().all(Value::is_object),
                "no batch upstream: {posted:?}"
            );
            let called = posted
                .iter()
                .flatten()
                .filter(|m| m["method"] == "tools/call")
                .count();
            assert_eq!(called, 2, "{posted:?}");
            shut_down(proxy, None);
            server.stop();
            assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        });
    }

    /// The same clients through `reverse --upstream-http` to server-everything's
    /// streamable HTTP, watched on the upstream side by a relay: each proxy
    /// session holds an upstream session of its own, whose id never reaches
    /// the client, and every upstream session is DELETEd by the time the proxy
    /// has shut down.
    #[test]
    fn peers_sdk_clients_through_reverse_http_to_server_everything() {
        let Some(peers) = require("reverse http to server-everything", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mark = marker("se-http");
            let (mut server, upstream, proxy) = proxy_to_relayed_server_everything(&peers, &mark);
            let (deleted, kept) = handshake_runs(&peers, &proxy.mcp, "through http");
            assert_sessions_after_handshake_runs(&proxy, &deleted, &kept);

            let exchanges = upstream.exchanges();
            let upstream_ids = upstream.sessions_opened();
            assert_eq!(
                upstream_ids.len(),
                deleted.len() + kept.len(),
                "one upstream session per proxy session"
            );
            for id in deleted.iter().chain(&kept) {
                assert!(
                    !upstream_ids.contains(id),
                    "the client sees the proxy's id only"
                );
            }
            // The probes reached server-everything, which refused them, and the
            // clients fell back (their reports above say 2025-11-25).
            let probes: Vec<u16> = exchanges
                .iter()
                .filter(|(request, _)| request.rpc_method().as_deref() == Some("server/discover"))
                .map(|(_, response)| response.as_ref().map_or(0, HttpMessage::status))
                .collect();
            assert_eq!(probes, [400, 400], "two probes, refused upstream");
            for (request, _) in &exchanges {
                if request.method() == "POST"
                    && request.rpc_method().as_deref() != Some("initialize")
                    && request.header("mcp-protocol-version") != Some(STATELESS_ERA)
                {
                    let id = request.header("mcp-session-id").unwrap_or_default();
                    assert!(
                        upstream_ids.contains(id),
                        "a request in a session carries its upstream session id: {:?}",
                        request.start
                    );
                }
            }

            shut_down(proxy, None);
            let deleted_upstream: HashSet<String> = upstream
                .requests()
                .iter()
                .filter(|r| r.method() == "DELETE")
                .filter_map(|r| r.header("mcp-session-id").map(str::to_owned))
                .collect();
            assert_eq!(
                deleted_upstream, upstream_ids,
                "every upstream session was DELETEd (closed by the client or at shutdown)"
            );
            server.stop();
            assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        });
    }

    /// What a 2026-07-28 client sent and got, seen by a relay in front of the
    /// proxy: no session id either way, no GET, no DELETE, no `initialize`,
    /// and the era's header on every request.
    fn assert_no_protocol_session(relay: &Relay, side: &str) -> Vec<HttpMessage> {
        let exchanges = relay.exchanges();
        assert!(!exchanges.is_empty(), "{side}: traffic was seen");
        for (request, response) in &exchanges {
            assert_eq!(request.method(), "POST", "{side}: {:?}", request.start);
            assert_eq!(
                request.header("mcp-protocol-version"),
                Some(STATELESS_ERA),
                "{side}: {:?}",
                request.json()
            );
            assert_eq!(request.header("mcp-session-id"), None, "{side}");
            assert_ne!(request.rpc_method().as_deref(), Some("initialize"));
            let response = response.as_ref().expect("answered");
            assert_eq!(response.status(), 200, "{side}: {:?}", request.json());
            assert_eq!(response.header("mcp-session-id"), None, "{side}");
        }
        exchanges.into_iter().map(|(request, _)| request).collect()
    }

    /// The JSON-RPC method, `Mcp-Method` and `Mcp-Name` of each request.
    fn method_headers(requests: &[HttpMessage]) -> Vec<(String, String, String)> {
        let mut seen: Vec<(String, String, String)> = requests
            .iter()
            .map(|r| {
                (
                    r.rpc_method().unwrap_or_default(),
                    r.header("mcp-method").unwrap_or_default().to_owned(),
                    r.header("mcp-name").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        seen.sort();
        seen
    }

    fn stateless_runs(peers: &Peers, url: &str, how: &str) {
        for (kind, era) in STATELESS_RUNS {
            let message = format!("{kind:?} --era {era} {how}");
            let report = peers.run_client(kind, url, era, &message).report();
            assert_stateless_run(&report, &message);
        }
    }

    /// The proxy holds one session for all these clients: in 2026-07-28 it
    /// keys sessions by client (`remote` by default), and they share an address.
    fn assert_one_stateless_session(proxy: &ProxyProcess) {
        let rows = sessions(proxy);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["state"], "active");
        let scrape = proxy.metrics();
        assert_eq!(
            metric(&scrape, "shadowcat_sessions_created_total", &[]),
            1.0
        );
        for method in ["GET", "DELETE"] {
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_http_requests_total",
                    &[("method", method)]
                ),
                0.0
            );
        }
    }

    /// Strict 2026-07-28 through `reverse --upstream-stdio` to the dual-era
    /// Python server: the clients report 2026-07-28 and no session id, and no
    /// `MCP-Session-Id` crossed the wire.
    #[test]
    fn peers_sdk_clients_in_2026_07_28_through_reverse_stdio_to_py_server() {
        let Some(peers) = require("2026-07-28 through stdio", &[Peer::TsSdk, Peer::Python]) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mark = python_marker("py-stdio-2026");
            let upstream = command_line(&peers.py_server_stdio(&mark));
            let proxy = ProxyProcess::start(&[], &["--upstream-stdio", &upstream]);
            let front = Relay::start(socket_addr(&proxy.mcp));
            stateless_runs(&peers, &front.url(), "through stdio");
            let requests = assert_no_protocol_session(&front, "client side");
            let discovers = requests
                .iter()
                .filter(|r| r.rpc_method().as_deref() == Some("server/discover"))
                .count();
            assert_eq!(
                discovers, 3,
                "TS pins through server/discover, both auto clients probe; Python's pin does not"
            );
            assert_one_stateless_session(&proxy);
            wait_processes(&mark, 1);
            shut_down(proxy, Some(&mark));
        });
    }

    /// Strict 2026-07-28 through `reverse --upstream-http` to the dual-era
    /// Python server, with a relay on both sides of the proxy: no session id
    /// on either leg, and the era's headers (`MCP-Protocol-Version`,
    /// `Mcp-Method`, `Mcp-Name`) reach the upstream unchanged.
    #[test]
    fn peers_sdk_clients_in_2026_07_28_through_reverse_http_to_py_server() {
        let Some(peers) = require("2026-07-28 through http", &[Peer::TsSdk, Peer::Python]) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mark = python_marker("py-http-2026");
            let mut server = peers.start_py_server_http(&mark);
            let back = Relay::start(server.addr());
            let proxy = ProxyProcess::start(&[], &["--upstream-http", &back.url()]);
            let front = Relay::start(socket_addr(&proxy.mcp));
            stateless_runs(&peers, &front.url(), "through http");
            let sent = assert_no_protocol_session(&front, "client side");
            let forwarded = assert_no_protocol_session(&back, "upstream side");
            assert_eq!(
                method_headers(&sent),
                method_headers(&forwarded),
                "every request reached the upstream with its MCP headers"
            );
            assert!(
                method_headers(&forwarded).contains(&(
                    "tools/call".into(),
                    "tools/call".into(),
                    "echo".into()
                )),
                "{:?}",
                method_headers(&forwarded)
            );
            assert_one_stateless_session(&proxy);
            shut_down(proxy, None);
            assert!(
                !back.requests().iter().any(|r| r.method() == "DELETE"),
                "no upstream session, nothing to DELETE"
            );
            server.stop();
            assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        });
    }

    /// The proxy's refusals that an SDK client in a crowd over a small table
    /// may meet: its session evicted between two of its requests (404), or
    /// every session busy when it initializes (503).
    const CROWD_REFUSALS: [&str; 2] = ["session not found", "the session table is full"];

    /// `--max-sessions 3` with 3 + 5 concurrent legacy SDK clients over
    /// server-everything on stdio, plus deterministic steps with a hand-driven
    /// client: an eviction answers 404, a re-initialize works, and a tight
    /// rate limit answers 429. Returns the final scrape (taken before the
    /// SIGTERM that ends the proxy, after which no upstream is left).
    fn crowd_over_a_small_table(
        peers: &Peers,
        test: &str,
        policy: &[&str],
    ) -> prometheus_parse::Scrape {
        const SLOTS: usize = 3;
        let mark = marker(test);
        let upstream = command_line(&peers.server_everything_stdio(&mark));
        let mut global = vec![
            "--max-sessions",
            "3",
            "--rate-limit",
            "1",
            "--burst",
            "8",
            // Answers, not deadlines: a loaded machine must not turn a slow
            // policy call into a fault.
            "--policy-timeout",
            "5s",
        ];
        global.extend_from_slice(policy);
        let proxy = ProxyProcess::start(
            &global,
            &[
                "--upstream-stdio",
                &upstream,
                "--init-rate",
                "off",
                "--upstream-grace",
                "200ms",
            ],
        );

        // A full table: the least used, least recent session is the victim
        // whatever the policy (LRU, LFU, or the host's LRU after a fault).
        let mut holder = McpClient::new(&proxy.mcp);
        assert_eq!(holder.initialize().status, 200);
        let mut others: Vec<McpClient> = (0..SLOTS).map(|_| McpClient::new(&proxy.mcp)).collect();
        for (i, client) in others.iter_mut().enumerate().take(SLOTS - 1) {
            assert_eq!(client.initialize().status, 200);
            for _ in 0..2 {
                assert_eq!(
                    client.echo(&format!("busy {i}")).text(),
                    format!("Echo: busy {i}")
                );
            }
        }
        wait_processes(&mark, SLOTS);
        let newcomer = others.last_mut().expect("one more");
        assert_eq!(newcomer.initialize().status, 200, "a full table evicts");
        let gone = holder.echo("evicted?");
        assert_eq!(
            gone.status, 404,
            "the evicted session answers 404: {:?}",
            gone.body
        );
        assert!(
            gone.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("initialize")),
            "{:?}",
            gone.body
        );
        assert_eq!(holder.initialize().status, 200, "re-initialize after 404");
        assert_eq!(holder.echo("back").text(), "Echo: back");
        wait_processes(&mark, SLOTS);

        // N + 5 SDK clients at once; one whose session is evicted under it
        // fails (SDKs never re-initialize), and a new client takes its place.
        let kinds = [
            SdkClient::Python,
            SdkClient::Ts1,
            SdkClient::Ts2,
            SdkClient::Python,
            SdkClient::Ts1,
            SdkClient::Ts2,
            SdkClient::Python,
            SdkClient::Ts1,
        ];
        assert_eq!(kinds.len(), SLOTS + 5);
        let threads: Vec<_> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let (peers, url) = (peers.clone(), proxy.mcp.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    for attempt in 1..=12u64 {
                        let message = format!("client {i} attempt {attempt}");
                        let run: ClientRun = peers.run_client(kind, &url, "legacy", &message);
                        if run.ok() {
                            let report = run.report();
                            assert_eq!(report.echo, format!("Echo: {message}"));
                            assert_eq!(report.protocol_version.as_deref(), Some(HANDSHAKE_ERA));
                            return failures;
                        }
                        failures.push(format!("{kind:?}: {}", run.stderr.trim()));
                        std::thread::sleep(Duration::from_millis(100 * attempt + 37 * i as u64));
                    }
                    panic!("client {i} ({kind:?}) never got through: {failures:#?}");
                })
            })
            .collect();
        let mut failures = Vec::new();
        for thread in threads {
            failures.extend(thread.join().expect("crowd client"));
        }
        for failure in &failures {
            assert!(
                CROWD_REFUSALS.iter().any(|r| failure.contains(r)),
                "a client failed for another reason than eviction or a full table: {failure}"
            );
        }

        // A tight per-session rate limit: a burst of 8 at 1/s, which an SDK
        // client's handshake, GET stream, list and call fit in, and 20 calls
        // in a row do not.
        let mut hasty = McpClient::new(&proxy.mcp);
        assert_eq!(hasty.initialize().status, 200);
        let answers: Vec<_> = (0..20).map(|i| hasty.echo(&format!("hasty {i}"))).collect();
        let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
        assert!(
            !limited.is_empty(),
            "{:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        for answer in &limited {
            assert_eq!(answer.body["error"]["code"], -32029);
            let wait: u64 = answer
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((1..=2).contains(&wait), "retry after {wait}s");
        }
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            hasty.echo("after waiting").text(),
            "Echo: after waiting",
            "the quota refills"
        );

        let scrape = proxy.metrics();
        let created = metric(&scrape, "shadowcat_sessions_created_total", &[]);
        let removed = metric(&scrape, "shadowcat_sessions_removed_total", &[]);
        let live = metric(&scrape, "shadowcat_sessions_live", &[]);
        assert_eq!(created, removed + live, "every session accounted for");
        assert!(live <= SLOTS as f64);
        assert!(
            created >= (SLOTS + 3 + kinds.len()) as f64,
            "created {created}"
        );
        assert!(
            metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "evicted")]
            ) >= 2.0
        );
        assert!(
            metric(
                &scrape,
                "shadowcat_requests_rejected_total",
                &[("reason", "rate-limited")]
            ) >= limited.len() as f64
        );
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_http_requests_total",
                &[("method", "POST"), ("status", "429")]
            ),
            metric(
                &scrape,
                "shadowcat_requests_rejected_total",
                &[("reason", "rate-limited")]
            ),
            "each rate-limited POST was answered 429 (no GET was refused)"
        );
        assert!(
            metric(&scrape, "shadowcat_upstreams_started_total", &[]) >= created,
            "an upstream per session"
        );
        assert_eq!(metric(&scrape, "shadowcat_requests_in_flight", &[]), 0.0);
        wait_processes(&mark, live as usize);
        shut_down(proxy, Some(&mark));
        // `+ 0.0`: a sum over no samples (no policy metrics with a built-in
        // policy) is -0.
        let sample = |name: &str, labels: &[(&str, &str)]| metric(&scrape, name, labels) + 0.0;
        eprintln!(
            "{test}: created {created}, evicted {}, rate-limited {}, capacity-refused {}, \
             policy faults {}, fallback decisions {:?}; {} failed SDK attempts:\n{}",
            sample("shadowcat_sessions_removed_total", &[("cause", "evicted")]),
            sample(
                "shadowcat_requests_rejected_total",
                &[("reason", "rate-limited")]
            ),
            sample(
                "shadowcat_requests_rejected_total",
                &[("reason", "capacity")]
            ),
            sample("shadowcat_policy_faults_total", &[]),
            ["busy", "faulted", "recovering", "short"].map(|reason| format!(
                "{reason} {}",
                sample(
                    "shadowcat_eviction_fallback_decisions_total",
                    &[("reason", reason)]
                )
            )),
            failures.len(),
            failures.join("\n")
        );
        scrape
    }

    /// `--max-sessions 3` with 8 concurrent legacy SDK clients (LRU).
    #[test]
    fn peers_max_sessions_crowd_evicts_reinitializes_rate_limits_and_leaves_no_process() {
        let Some(peers) = require("crowd (lru)", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(420), move || {
            let scrape = crowd_over_a_small_table(&peers, "crowd-lru", &[]);
            assert_eq!(
                metric(&scrape, "shadowcat_eviction_fallback_victims_total", &[]),
                0.0,
                "the built-in LRU chose every victim"
            );
        });
    }

    /// The same crowd with the LFU WebAssembly policy choosing the victims.
    #[test]
    fn peers_max_sessions_crowd_with_lfu_wasm() {
        let Some(peers) = require("crowd (lfu.wasm)", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(420), move || {
            let scrape =
                crowd_over_a_small_table(&peers, "crowd-lfu", &["--eviction-policy", "lfu.wasm"]);
            assert!(metric(&scrape, "shadowcat_policy_calls_total", &[]) > 0.0);
            assert!(metric(&scrape, "shadowcat_policy_events_delivered_total", &[]) > 0.0);
            assert_eq!(
                metric(&scrape, "shadowcat_policy_faults_total", &[]),
                0.0,
                "lfu.wasm never faults"
            );
            assert_eq!(metric(&scrape, "shadowcat_policy_quarantined", &[]), 0.0);
            let refusals: Vec<f64> = scrape
                .samples
                .iter()
                .filter(|s| s.metric == "shadowcat_policy_memory_refusals_total")
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
                .collect();
            assert_eq!(refusals, [0.0], "exported, and 64 MiB is plenty here");
            assert!(
                scrape
                    .samples
                    .iter()
                    .any(|s| s.metric == "shadowcat_policy_repeated_victims_total"),
                "repeated victims are exported"
            );
            assert_eq!(
                metric(&scrape, "shadowcat_policy_repeated_victims_total", &[]),
                0.0,
                "lfu.wasm never names a victim twice"
            );
            // The first eviction (an idle table) is the policy's own choice;
            // later ones may fall back when it proposes a session that is busy.
            assert!(
                metric(&scrape, "shadowcat_eviction_fallback_victims_total", &[])
                    < metric(
                        &scrape,
                        "shadowcat_sessions_removed_total",
                        &[("cause", "evicted")]
                    ),
                "lfu.wasm chose victims itself"
            );
        });
    }

    /// The same crowd with the hostile fixture panicking in every `victims`
    /// call: the proxy keeps serving every client, the host's LRU takes each
    /// decision over, and the faults show in /metrics.
    #[test]
    fn peers_max_sessions_crowd_with_a_panicking_policy_keeps_serving() {
        let Some(peers) = require("crowd (hostile policy)", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(420), move || {
            let hostile = path_str(&fixture("hostile.wasm"));
            let scrape = crowd_over_a_small_table(
                &peers,
                "crowd-hostile",
                &[
                    "--eviction-policy",
                    &hostile,
                    "--policy-config",
                    "mode=panic",
                ],
            );
            let evicted = metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "evicted")],
            );
            let traps = metric(
                &scrape,
                "shadowcat_policy_faults_total",
                &[("kind", "trap")],
            );
            assert!(traps >= 1.0, "the panics were caught as traps");
            let fallbacks = |reason| {
                metric(
                    &scrape,
                    "shadowcat_eviction_fallback_decisions_total",
                    &[("reason", reason)],
                )
            };
            assert!(fallbacks("faulted") >= 1.0, "the host took decisions over");
            assert_eq!(fallbacks("short"), 0.0, "the policy never answered");
            assert_eq!(
                metric(&scrape, "shadowcat_eviction_fallback_victims_total", &[]),
                evicted,
                "every victim came from the host's own LRU order"
            );
            if traps >= 5.0 {
                assert!(
                    metric(&scrape, "shadowcat_policy_quarantines_total", &[]) >= 1.0,
                    "5 faults in a row quarantine the policy (--policy-max-faults)"
                );
            }
        });
    }

    /// Real SDK clients under a spent quota get the proxy's 429 with its
    /// JSON-RPC error, which each SDK reports as the rate limit.
    #[test]
    fn peers_sdk_clients_report_the_rate_limit_refusal() {
        let Some(peers) = require("rate limit", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mark = marker("sdk-429");
            let upstream = command_line(&peers.server_everything_stdio(&mark));
            let proxy = ProxyProcess::start(
                &["--rate-limit", "1", "--burst", "2"],
                &["--upstream-stdio", &upstream],
            );
            for kind in [SdkClient::Python, SdkClient::Ts1, SdkClient::Ts2] {
                let run = peers.run_client(kind, &proxy.mcp, "legacy", "too much");
                assert!(
                    !run.ok(),
                    "{kind:?} got through a burst of 2: {}",
                    run.stdout
                );
                assert!(
                    run.stderr.contains("rate limited"),
                    "{kind:?} reports the refusal: {}",
                    run.stderr
                );
            }
            let scrape = proxy.metrics();
            let limited = metric(
                &scrape,
                "shadowcat_requests_rejected_total",
                &[("reason", "rate-limited")],
            );
            assert!(limited >= 3.0, "{limited}");
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_http_requests_total",
                    &[("status", "429")]
                ),
                limited
            );
            shut_down(proxy, Some(&mark));
        });
    }

    /// The TypeScript SDK's resumption, against a stdio server: a slow call
    /// whose connection drops after its first event is resumed by a second
    /// client on the same session with the SDK's resumption token
    /// (`Last-Event-ID`), and gets its result.
    #[test]
    fn peers_ts_sdk_resumes_a_call_whose_connection_dropped() {
        let Some(peers) = require("stream resumption", &[Peer::TsSdk]) else {
            return;
        };
        with_watchdog(Duration::from_secs(120), move || {
            let mark = marker("sdk-resume");
            let upstream = format!("{} {mark}", echo_server().display());
            let proxy = ProxyProcess::start(&[], &["--upstream-stdio", &upstream]);
            let mut cmd = peers.client(SdkClient::Ts1, &proxy.mcp, "legacy", "unused");
            cmd.arg("--resume");
            let run = run_bounded("ts_client --resume", cmd, CLIENT_LIMIT);
            assert!(run.ok(), "{}", run.stderr);
            let out: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
            assert_eq!(out["resumed"], "slept 1500 ms", "{out}");
            // The token it resumed with: the call's stream before its first
            // message (the priming event a 2025-11-25 client gets).
            let token = out["tokens"][0].as_str().expect("a token");
            assert!(
                token
                    .split_once('-')
                    .is_some_and(|(stream, seq)| stream.parse::<u64>().is_ok() && seq == "0"),
                "{out}"
            );
            let sessions = sessions(&proxy);
            assert_eq!(sessions.len(), 1, "one session throughout: {sessions:?}");
            shut_down(proxy, Some(&mark));
        });
    }

    /// `forward stdio` driven by the Python SDK's stdio client: the handshake
    /// era to server-everything (probing first, and pinned to legacy), and
    /// 2026-07-28 to the Python server; nothing is left running afterwards.
    #[test]
    fn peers_forward_stdio_driven_by_the_python_sdk_stdio_client() {
        let Some(peers) = require("forward stdio", &[Peer::ServerEverything, Peer::Python]) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let forward = |server: Vec<String>| {
                let mut command = vec![shadowcat(), "--log".into(), "warn".into()];
                command.extend(["forward".into(), "stdio".into(), "--".into()]);
                command.extend(server);
                command
            };
            let mark = marker("forward-se");
            for era in ["auto", "legacy"] {
                let message = format!("forward stdio --era {era}");
                let command = forward(peers.server_everything_stdio(&mark));
                let report = peers.run_stdio_client(era, &message, &command).report();
                assert!(
                    report.tools.iter().any(|t| t == "echo"),
                    "{:?}",
                    report.tools
                );
                assert!(report.tools.len() > 5, "{:?}", report.tools);
                assert_eq!(report.echo, format!("Echo: {message}"));
                assert_eq!(report.protocol_version.as_deref(), Some(HANDSHAKE_ERA));
                assert_eq!(report.session_id, None);
                let left = wait_no_processes(&mark, Duration::from_secs(15));
                assert!(
                    left.is_empty(),
                    "the proxy and its server are gone: {left:?}"
                );
            }
            let mark = python_marker("forward-py");
            let message = "forward stdio --era 2026";
            let report = peers
                .run_stdio_client("2026", message, &forward(peers.py_server_stdio(&mark)))
                .report();
            assert_eq!(report.tools, ["echo"]);
            assert_eq!(report.echo, format!("Echo: {message}"));
            assert_eq!(report.protocol_version.as_deref(), Some(STATELESS_ERA));
            let left = wait_no_processes(&mark, Duration::from_secs(15));
            assert!(
                left.is_empty(),
                "the proxy and its server are gone: {left:?}"
            );
        });
    }

    /// A request over `forward stdio`'s line limit from the TypeScript SDK's
    /// stdio client, which writes the id last, after the params that made it
    /// long: the client is answered by that id at once (not after its own
    /// request timeout), and its session with server-everything goes on.
    #[test]
    fn peers_forward_stdio_refuses_an_over_long_ts_sdk_request_by_its_id() {
        let Some(peers) = require(
            "forward stdio over-long requests",
            &[Peer::ServerEverything, Peer::TsSdk],
        ) else {
            return;
        };
        with_watchdog(Duration::from_secs(120), move || {
            let mark = marker("forward-long-ts");
            let mut command = vec![shadowcat(), "--log".into(), "warn".into()];
            command.extend(["forward", "stdio", "--max-message", "64KiB", "--"].map(String::from));
            command.extend(peers.server_everything_stdio(&mark));
            let message = "after an over-long request";
            let report = peers
                .run_ts_stdio_client(message, Some(100_000), &command)
                .report();
            let refused = report.too_long.expect("the long call was refused");
            assert_eq!(refused["code"], -32600, "{refused}");
            let said = refused["message"].as_str().unwrap_or_default();
            assert!(
                said.contains("65536 bytes") && said.contains("--max-message"),
                "{said}"
            );
            assert_eq!(report.echo, format!("Echo: {message}"));
            let left = wait_no_processes(&mark, Duration::from_secs(15));
            assert!(
                left.is_empty(),
                "the proxy and its server are gone: {left:?}"
            );
        });
    }

    /// `forward http` driven by the SDKs' stdio clients: to
    /// server-everything's streamable HTTP in the handshake era (the Python
    /// client probing first, whose refusal it falls back from, and pinned to
    /// legacy; the TypeScript SDK 1.x client), each run's session there
    /// deleted at its end; and the Python client to the Python server in
    /// 2026-07-28, whose requests state their revision in `_meta` only.
    #[test]
    fn peers_forward_http_driven_by_sdk_stdio_clients() {
        let Some(peers) = require("forward http", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let forward = |url: String| {
                let mut command = vec![shadowcat(), "--log".into(), "warn".into()];
                command.extend(["forward".into(), "http".into(), url]);
                command
            };
            let mark = marker("forward-http-se");
            let mut server = peers.start_server_everything_http(&mark);
            let upstream = Relay::start(server.addr());
            for era in ["auto", "legacy"] {
                let message = format!("forward http --era {era}");
                let report = peers
                    .run_stdio_client(era, &message, &forward(upstream.url()))
                    .report();
                assert!(report.tools.len() > 5, "{:?}", report.tools);
                assert_eq!(report.echo, format!("Echo: {message}"));
                assert_eq!(report.protocol_version.as_deref(), Some(HANDSHAKE_ERA));
            }
            let message = "forward http from the TypeScript SDK";
            let report = peers
                .run_ts_stdio_client(message, None, &forward(upstream.url()))
                .report();
            assert!(report.tools.len() > 5, "{:?}", report.tools);
            assert_eq!(report.echo, format!("Echo: {message}"));
            let opened = upstream.sessions_opened();
            let deleted: HashSet<String> = upstream
                .exchanges()
                .iter()
                .filter(|(request, response)| {
                    request.method() == "DELETE"
                        && response.as_ref().is_some_and(|r| r.status() == 200)
                })
                .filter_map(|(request, _)| request.header("mcp-session-id"))
                .map(str::to_owned)
                .collect();
            assert_eq!(opened.len(), 3, "{opened:?}");
            assert_eq!(opened, deleted, "every session opened is deleted");
            server.stop();

            let mark = python_marker("forward-http-py");
            let mut server = peers.start_py_server_http(&mark);
            let message = "forward http --era 2026";
            let report = peers
                .run_stdio_client("2026", message, &forward(server.url()))
                .report();
            assert_eq!(report.tools, ["echo"]);
            assert_eq!(report.echo, format!("Echo: {message}"));
            assert_eq!(report.protocol_version.as_deref(), Some(STATELESS_ERA));
            server.stop();
        });
    }

    /// `forward http` to the Python SDK's server, restarted under it: once
    /// the server is back, the proxy finds its session gone (404, on the
    /// client's next call or on reopening the server's stream, whichever
    /// comes first) and starts a new one with the client's `initialize` and
    /// `initialized`, sent without the old id, which this server would
    /// refuse. The client's call is answered as if nothing had happened.
    #[test]
    fn peers_forward_http_starts_a_new_session_after_the_server_restarts() {
        let Some(peers) = require("forward http over a server restart", &[Peer::Python]) else {
            return;
        };
        with_watchdog(Duration::from_secs(120), move || {
            let mark = python_marker("forward-http-restart");
            let mut server = peers.start_py_server_http(&mark);
            let mut forward = ForwardProcess::http(&[], &[&server.url()]);
            forward.send(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{HANDSHAKE_ERA}","capabilities":{{}},"clientInfo":{{"name":"restart-test","version":"1"}}}}}}"#
            ));
            let answer = forward.read().expect("the initialize answer");
            assert_eq!(
                answer["result"]["protocolVersion"], HANDSHAKE_ERA,
                "{answer}"
            );
            forward.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
            let mut call = |id: u64, message: &str| {
                forward.send(&format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{message}"}}}}}}"#
                ));
                let answer = forward.read().expect("the tool's answer");
                assert_eq!(answer["id"], id, "{answer}");
                assert_eq!(
                    answer["result"]["content"][0]["text"],
                    format!("Echo: {message}"),
                    "{answer}"
                );
            };
            call(2, "before");
            peers.restart_py_server_http(&mut server, &mark);
            call(3, "after");
            call(4, "and on");
            let (status, rest, log) = forward.finish(Duration::from_secs(30));
            assert!(status.success(), "{status:?}: {rest:?}\n{log}");
            assert!(rest.is_empty(), "{rest:?}");
            assert_eq!(
                log.matches("the MCP server ended the session").count(),
                1,
                "{log}"
            );
            server.stop();
        });
    }

    /// `forward http` to a server that wants OAuth (the TypeScript SDK's
    /// example, its tokens bound to the server's URL): the first run prints
    /// the URL to open, the test follows it as a browser would (the demo
    /// server approves at once and redirects to the proxy's loopback
    /// listener), and the client's requests go through with the token. The
    /// token is kept, for its owner only, and a second run uses it without
    /// asking anyone.
    #[test]
    fn peers_forward_http_authorises_with_oauth_and_keeps_the_token() {
        let Some(peers) = require("forward http with OAuth", &[Peer::TsSdk]) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mut server = peers.start_ts_oauth_server();
            let url = format!("http://localhost:{}/mcp", server.port);
            let store = tempfile::tempdir().expect("a directory");
            let store_path = path_str(store.path());
            let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"oauth-test","version":"1"}}}"#;
            let session = |forward: &mut ForwardProcess, name: &str| {
                forward.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
                forward.send(&format!(
                    r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"greet","arguments":{{"name":"{name}"}}}}}}"#
                ));
                let answer = forward.read().expect("the tool's answer");
                assert_eq!(answer["id"], 2, "{answer}");
                assert_eq!(
                    answer["result"]["content"][0]["text"],
                    format!("Hello, {name}!"),
                    "{answer}"
                );
            };
            // `true` stands in for the desktop's browser opener.
            let env = [("BROWSER", "true")];
            let args = [url.as_str(), "--oauth-store", store_path.as_str()];

            let mut forward = ForwardProcess::http_with_env(&[], &args, &env);
            forward.send(initialize);
            let authorize = forward.follow_authorisation(Duration::from_secs(60));
            assert!(
                authorize.as_str().starts_with("http://localhost:"),
                "{authorize}"
            );
            let query: BTreeMap<String, String> = authorize.query_pairs().into_owned().collect();
            assert_eq!(query["code_challenge_method"], "S256");
            assert_eq!(query["resource"], url, "the token is asked for the server");
            let answer = forward.read().expect("the initialize answer");
            assert_eq!(answer["id"], 1, "{answer}");
            assert!(answer["result"]["protocolVersion"].is_string(), "{answer}");
            session(&mut forward, "first run");
            let (status, rest, log) = forward.finish(Duration::from_secs(30));
            assert!(status.success(), "{status:?}: {rest:?}\n{log}");

            let kept: Vec<_> = std::fs::read_dir(store.path())
                .expect("the store")
                .map(|entry| entry.expect("an entry").path())
                .collect();
            assert_eq!(kept.len(), 1, "one file for the one server: {kept:?}");
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&kept[0])
                    .expect("kept")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            let text = std::fs::read_to_string(&kept[0]).expect("readable");
            assert!(
                text.contains("access_token") && text.contains(&url),
                "{text}"
            );

            let mut forward = ForwardProcess::http_with_env(&[], &args, &env);
            forward.send(initialize);
            let answer = forward.read().expect("the initialize answer");
            assert_eq!(answer["id"], 1, "{answer}");
            session(&mut forward, "second run");
            let (status, rest, log) = forward.finish(Duration::from_secs(30));
            assert!(status.success(), "{status:?}: {rest:?}\n{log}");
            assert!(
                !log.contains("asks for authorisation"),
                "the kept token needs no browser:\n{log}"
            );
            server.stop();
        });
    }

    /// `/metrics` after a run of real clients (watched by a relay in front of
    /// the proxy) parses as Prometheus text, and its values are what the relay
    /// saw: sessions created per `initialize`, requests by method and status,
    /// sessions closed per DELETE, live sessions per upstream process. The
    /// admin CLI then lists and cleans up those sessions.
    #[test]
    fn peers_metrics_match_what_real_clients_did() {
        let Some(peers) = require("metrics", EVERY_PEER) else {
            return;
        };
        with_watchdog(Duration::from_secs(300), move || {
            let mark = marker("metrics");
            let upstream = command_line(&peers.server_everything_stdio(&mark));
            let proxy = ProxyProcess::start(&[], &["--upstream-stdio", &upstream]);
            let front = Relay::start(socket_addr(&proxy.mcp));
            let runs = [
                (SdkClient::Python, "legacy"),
                (SdkClient::Ts1, "legacy"),
                (SdkClient::Python, "auto"),
                (SdkClient::Ts2, "legacy"),
                (SdkClient::Ts2, "auto"),
                (SdkClient::Python, "legacy"),
            ];
            for (kind, era) in runs {
                let message = format!("{kind:?} {era} counted");
                let report = peers.run_client(kind, &front.url(), era, &message).report();
                assert_server_everything_session(&report, &message);
            }
            let scrape = proxy.metrics();
            let exchanges = front.exchanges();

            let posts: Vec<_> = exchanges
                .iter()
                .filter(|(r, _)| r.method() == "POST")
                .collect();
            let initializes = posts
                .iter()
                .filter(|(r, _)| r.rpc_method().as_deref() == Some("initialize"))
                .count();
            assert_eq!(initializes, runs.len());
            let probes = posts
                .iter()
                .filter(|(r, _)| r.header("mcp-protocol-version") == Some(STATELESS_ERA))
                .count();
            assert_eq!(probes, 2, "the auto clients probed once each");
            // Each refused probe opened a 2026-07-28 session, closed at once.
            let created = initializes + probes;
            assert_eq!(
                metric(&scrape, "shadowcat_sessions_created_total", &[]),
                created as f64
            );
            assert_eq!(
                metric(&scrape, "shadowcat_upstreams_started_total", &[]),
                created as f64
            );
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_session_accesses_total",
                    &[("result", "miss")]
                ),
                created as f64
            );

            // Requests by method and status, as answered.
            let mut answered: BTreeMap<(String, u16), usize> = BTreeMap::new();
            for (request, response) in &exchanges {
                if let Some(response) = response {
                    *answered
                        .entry((request.method().to_owned(), response.status()))
                        .or_default() += 1;
                }
            }
            for ((method, status), count) in &answered {
                let counted = metric(
                    &scrape,
                    "shadowcat_http_requests_total",
                    &[("method", method), ("status", &status.to_string())],
                );
                if method == "GET" {
                    // A GET stream a client dropped at once may be counted
                    // before its answer reached the wire.
                    assert!(
                        counted >= *count as f64,
                        "GET {status}: {counted} < {count}"
                    );
                } else {
                    assert_eq!(counted, *count as f64, "{method} {status}");
                }
            }
            let count_of = |method: &str| {
                exchanges
                    .iter()
                    .filter(|(r, _)| r.method() == method)
                    .count() as f64
            };
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_http_requests_total",
                    &[("method", "POST")]
                ),
                count_of("POST")
            );
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_http_requests_total",
                    &[("method", "DELETE")]
                ),
                count_of("DELETE")
            );
            assert!(
                metric(
                    &scrape,
                    "shadowcat_http_requests_total",
                    &[("method", "GET")]
                ) <= count_of("GET")
            );
            let total = metric(&scrape, "shadowcat_http_requests_total", &[]);
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_http_request_duration_seconds_count",
                    &[]
                ),
                total,
                "every request timed"
            );
            // Every POST but the ones that created a session found its session.
            let gets_answered: usize = answered
                .iter()
                .filter(|((m, s), _)| m == "GET" && *s == 200)
                .map(|(_, n)| n)
                .sum();
            let hits = metric(
                &scrape,
                "shadowcat_session_accesses_total",
                &[("result", "hit")],
            );
            let post_hits = (posts.len() - created) as f64;
            assert!(
                hits >= post_hits + gets_answered as f64 && hits <= post_hits + count_of("GET"),
                "hits {hits}: {post_hits} POSTs and {gets_answered}..{} GETs",
                count_of("GET")
            );

            // Python DELETEs its session; the TS clients just leave.
            let closed = answered
                .get(&("DELETE".to_owned(), 200))
                .copied()
                .unwrap_or(0);
            assert_eq!(closed, 3, "one DELETE per Python client");
            // The refused probes' sessions are closed too.
            let closed = closed + probes;
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_sessions_removed_total",
                    &[("cause", "closed")]
                ),
                closed as f64
            );
            assert_eq!(
                metric(&scrape, "shadowcat_sessions_removed_total", &[]),
                closed as f64,
                "nothing else removed a session"
            );
            let live = created - closed;
            assert_eq!(metric(&scrape, "shadowcat_sessions_live", &[]), live as f64);
            assert_eq!(
                metric(&scrape, "shadowcat_sessions_active", &[]),
                live as f64
            );
            assert_eq!(metric(&scrape, "shadowcat_requests_in_flight", &[]), 0.0);
            assert_eq!(metric(&scrape, "shadowcat_sessions_pinned", &[]), 0.0);
            assert_eq!(
                metric(&scrape, "shadowcat_requests_rejected_total", &[]),
                0.0
            );
            wait_processes(&mark, live);

            // The admin CLI sees the same sessions, and cleans them all up.
            let cli = |args: &[&str]| {
                let out = Command::new(shadowcat())
                    .args(["session", "--admin", &proxy.admin])
                    .args(args)
                    .output()
                    .expect("cli runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let rows: Vec<Value> =
                serde_json::from_str(&cli(&["list", "--json"])).expect("json rows");
            assert_eq!(rows.len(), live);
            let out = cli(&["cleanup", "--all"]);
            assert!(out.contains(&format!("removed {live}")), "{out}");
            wait_processes(&mark, 0);
            let scrape = proxy.metrics();
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_sessions_removed_total",
                    &[("cause", "deleted")]
                ),
                live as f64
            );
            assert_eq!(metric(&scrape, "shadowcat_sessions_live", &[]), 0.0);
            shut_down(proxy, Some(&mark));
        });
    }
}
