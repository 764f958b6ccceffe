//! The proxy end to end, as users run it: the `shadowcat` binary in front of
//! the `mcp_echo` example server (built by `cargo test`), driven over HTTP.
//! Tests with the official SDKs and real servers are in `tests/peers.rs`.

mod common;

mod proxy {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Value};

    use crate::common::proxy::{
        assert_rpc_error, echo_server, last_response, marker, metric, next_event, processes_with,
        read_answer, run_to_exit, wait_no_processes, wait_with_timeout, ForwardProcess, McpClient,
        ProxyProcess,
    };
    use crate::common::{assert_ends_quietly_on_a_closed_stdout, fixture, with_watchdog};

    fn upstream(marker: &str) -> String {
        format!("{} {marker}", echo_server().display())
    }

    fn start(test: &str, global: &[&str], extra: &[&str]) -> (ProxyProcess, String) {
        let mark = marker(test);
        let up = upstream(&mark);
        let mut reverse = vec!["--upstream-stdio", up.as_str()];
        reverse.extend_from_slice(extra);
        (ProxyProcess::start(global, &reverse), mark)
    }

    #[test]
    fn proxy_session_lifecycle_initialize_call_delete_then_404_and_reinitialize() {
        let (proxy, mark) = start("lifecycle", &[], &[]);
        let mut client = McpClient::new(&proxy.mcp);
        let init = client.initialize();
        assert_eq!(init.status, 200, "{:?}", init.body);
        assert_eq!(init.body["result"]["serverInfo"]["name"], "mcp-echo");
        let session = client.session.clone().expect("a session id");
        assert_eq!(session.len(), 32, "128 random bits as hex: {session}");
        assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
        let answer = client.echo("hi");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), "Echo: hi");
        assert_eq!(
            processes_with(&mark).len(),
            1,
            "one upstream process per session"
        );

        assert_eq!(client.delete(), 200);
        let gone = client.echo("again");
        assert_eq!(gone.status, 404, "a closed session answers 404");
        assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        assert_eq!(client.delete(), 404);

        let again = client.initialize();
        assert_eq!(again.status, 200);
        assert_ne!(client.session.as_deref(), Some(session.as_str()));
        assert_eq!(client.echo("back").text(), "Echo: back");
        let scrape = proxy.metrics();
        assert_eq!(
            metric(&scrape, "shadowcat_sessions_created_total", &[]),
            2.0
        );
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "closed")]
            ),
            1.0
        );
        assert!(proxy.terminate().success());
        assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn proxy_refusals_say_why_with_the_right_status() {
        let (proxy, _mark) = start("refusals", &[], &["--max-body", "64KiB"]);
        let mut client = McpClient::new(&proxy.mcp);
        // A request without a session id.
        let missing = client.echo("x");
        assert_eq!(missing.status, 400);
        assert!(missing.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Mcp-Session-Id"));
        // An unknown session id.
        client.session = Some("0123456789abcdef0123456789abcdef".into());
        assert_eq!(client.echo("x").status, 404);
        // A wrong content type.
        client.initialize();
        let form = client.post_raw(b"a=b".to_vec(), "application/x-www-form-urlencoded");
        assert_eq!(form.status, 415);
        // A body over --max-body.
        let big = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"message": "x".repeat(100_000)}}});
        assert_eq!(
            client
                .post_raw(big.to_string().into_bytes(), "application/json")
                .status,
            413
        );
        // Invalid JSON: a parse error, and the session lives on.
        let garbage = client.post_raw(b"{\"jsonrpc\": \"2.0\", oops".to_vec(), "application/json");
        assert_eq!(garbage.status, 400);
        assert_eq!(garbage.body["error"]["code"], -32700);
        assert!(garbage.body["id"].is_null());
        // Valid JSON but not a valid request: refused by the id it carries,
        // so the caller waiting on that id gets its answer.
        // A request whose id no server could answer by is refused too,
        // rather than left waiting for an answer that never comes.
        for (body, id) in [
            (r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#, json!(9)),
            (r#"{"jsonrpc":"2.0","id":"q"}"#, json!("q")),
            (
                r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                Value::Null,
            ),
            (r#"{"jsonrpc":"2.0","id":2.5,"method":"ping"}"#, json!(2.5)),
            (
                r#"{"jsonrpc":"2.0","id":3,"result":{},"error":{"code":1,"message":"x"}}"#,
                json!(3),
            ),
        ] {
            let invalid = client.post_raw(body.as_bytes().to_vec(), "application/json");
            assert_eq!(invalid.status, 400, "{body}");
            assert_eq!(invalid.body["error"]["code"], -32600, "{body}");
            assert_eq!(invalid.body["id"], id, "{body}");
        }
        assert_eq!(client.echo("still here").text(), "Echo: still here");
        // An unsupported protocol revision.
        let mut old = McpClient::new(&proxy.mcp).with_header("mcp-protocol-version", "1999-01-01");
        let refused = old.echo("x");
        assert_eq!(refused.status, 400);
        assert!(refused.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2025-11-25"));
    }

    #[test]
    fn proxy_rate_limit_answers_429_with_retry_after() {
        let (proxy, _mark) = start("ratelimit", &["--rate-limit", "1", "--burst", "3"], &[]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        let statuses: Vec<u16> = (0..6).map(|i| client.echo(&i.to_string()).status).collect();
        let limited = statuses.iter().filter(|&&s| s == 429).count();
        assert!(
            limited >= 2,
            "a burst of 3 at 1/s refuses the rest: {statuses:?}"
        );
        let answer = client.echo("once more");
        assert_eq!(answer.status, 429);
        let retry: u64 = answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in whole seconds");
        assert!((1..=2).contains(&retry), "retry after {retry}s");
        assert_eq!(answer.body["error"]["code"], -32029);
        assert!(
            metric(
                &proxy.metrics(),
                "shadowcat_requests_rejected_total",
                &[("reason", "rate-limited")]
            ) >= 3.0
        );
    }

    #[test]
    fn proxy_full_table_of_busy_sessions_answers_503_and_evicts_idle_ones() {
        let (proxy, mark) = start("capacity", &["--max-sessions", "2"], &[]);
        let mut a = McpClient::new(&proxy.mcp);
        let mut b = McpClient::new(&proxy.mcp);
        assert_eq!(a.initialize().status, 200);
        assert_eq!(b.initialize().status, 200);
        // Both sessions busy: a third has nowhere to go.
        let slow = |mut c: McpClient| {
            std::thread::spawn(move || {
                c.request(
                    "tools/call",
                    json!({"name": "sleep", "arguments": {"ms": 3000}}),
                )
                .status
            })
        };
        let (ta, tb) = (slow(a), slow(b));
        std::thread::sleep(Duration::from_millis(700));
        let mut c = McpClient::new(&proxy.mcp);
        let refused = c.initialize();
        assert_eq!(refused.status, 503, "{:?}", refused.body);
        assert!(refused.headers.contains_key("retry-after"));
        assert_eq!(ta.join().expect("a"), 200, "busy sessions were not evicted");
        assert_eq!(tb.join().expect("b"), 200);
        // Idle now: the newcomer evicts the least recently used.
        assert_eq!(c.initialize().status, 200);
        let scrape = proxy.metrics();
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "evicted")]
            ),
            1.0
        );
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_requests_rejected_total",
                &[("reason", "capacity")]
            ),
            1.0
        );
        // The refused create started no upstream: the table said it was
        // full before one was spawned.
        assert_eq!(
            metric(&scrape, "shadowcat_upstreams_started_total", &[]),
            3.0
        );
        // The refused create left no process behind; the evicted one is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with(&mark).len() != 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(processes_with(&mark).len(), 2);
    }

    #[test]
    fn proxy_unfinished_handshake_expires_after_init_timeout() {
        let (proxy, mark) = start("inittimeout", &[], &["--init-timeout", "300ms"]);
        let mut client = McpClient::new(&proxy.mcp);
        let init = client.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "half", "version": "1"}}),
        );
        assert_eq!(init.status, 200);
        client.session = init
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Never sends notifications/initialized.
        assert!(
            wait_no_processes(&mark, Duration::from_secs(15)).is_empty(),
            "the half-open session's upstream was torn down"
        );
        assert_eq!(client.echo("late").status, 404);
        let scrape = proxy.metrics();
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "expired-idle")]
            ),
            1.0
        );
        assert_eq!(
            metric(&scrape, "shadowcat_handshake_timeouts_total", &[]),
            1.0
        );
        assert_eq!(metric(&scrape, "shadowcat_sessions_shielded", &[]), 0.0);
        assert_eq!(metric(&scrape, "shadowcat_sessions_pinned", &[]), 0.0);
        // A session that finishes its handshake is not counted.
        assert_eq!(client.initialize().status, 200);
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(client.echo("on time").text(), "Echo: on time");
        assert_eq!(
            metric(&proxy.metrics(), "shadowcat_handshake_timeouts_total", &[]),
            1.0
        );
    }

    #[test]
    fn proxy_looping_initialize_from_one_client_is_limited() {
        let (proxy, _mark) = start(
            "loopinit",
            &[],
            &[
                "--init-rate",
                "1",
                "--init-burst",
                "3",
                "--client-key",
                "header:x-client",
            ],
        );
        let open = |who: &str| {
            McpClient::new(&proxy.mcp)
                .with_header("x-client", who)
                .initialize()
        };
        let statuses: Vec<u16> = (0..6).map(|_| open("looper").status).collect();
        assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
        assert!(statuses[3..].contains(&429), "{statuses:?}");
        let refused = open("looper");
        if refused.status == 429 {
            assert!(refused.headers.contains_key("retry-after"));
        }
        // Another client key has its own budget.
        assert_eq!(open("someone-else").status, 200);
    }

    #[test]
    fn proxy_stream_does_not_pin_and_ends_when_the_session_is_removed() {
        let (proxy, _mark) = start("stream", &["--max-sessions", "1"], &[]);
        let mut a = McpClient::new(&proxy.mcp);
        assert_eq!(a.initialize().status, 200);
        let stream = a.open_stream();
        assert_eq!(stream.status(), 200);
        assert_eq!(
            metric(&proxy.metrics(), "shadowcat_session_streams", &[]),
            1.0
        );
        let (ended_tx, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                line.clear();
            }
            let _ = ended_tx.send(());
        });
        // A newcomer evicts the session although its stream is open.
        let mut b = McpClient::new(&proxy.mcp);
        assert_eq!(
            b.initialize().status,
            200,
            "a stream does not pin its session"
        );
        ended
            .recv_timeout(Duration::from_secs(20))
            .expect("the evicted session's stream ended");
        assert_eq!(a.echo("x").status, 404);
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&proxy.metrics(), "shadowcat_session_streams", &[]) != 0.0 {
            assert!(
                Instant::now() < deadline,
                "a closed stream no longer counts"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client may hold several GET streams on one session (the transport
    /// allows it): opening another leaves the first open, each server
    /// message goes to one stream (the newest), and only a fifth stream ends
    /// the oldest, so a client that reconnects without closing leaks none.
    #[test]
    fn proxy_several_get_streams_stay_open_and_each_message_goes_to_one() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("streams", &["--rate-limit", "off"], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            // Each stream's data lines, then None at its end.
            let open = |client: &McpClient| {
                let stream = client.open_stream();
                assert_eq!(stream.status(), 200);
                let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        // Messages only, not the priming event's empty data.
                        let message = line.starts_with("data:") && !line[5..].trim().is_empty();
                        if message && tx.send(Some(line.clone())).is_err() {
                            return;
                        }
                        line.clear();
                    }
                    let _ = tx.send(None);
                });
                rx
            };
            let notify = |client: &mut McpClient, message: &str| {
                let answer = client.request(
                    "tools/call",
                    json!({"name": "notify", "arguments": {"message": message}}),
                );
                assert_eq!(answer.status, 200, "{}", answer.raw);
            };
            let first = open(&client);
            let second = open(&client);
            // Both are attached before the server speaks.
            let deadline = Instant::now() + Duration::from_secs(10);
            while metric(&proxy.metrics(), "shadowcat_session_streams", &[]) < 2.0 {
                assert!(Instant::now() < deadline, "two streams open");
                std::thread::sleep(Duration::from_millis(20));
            }
            notify(&mut client, "to the newest");
            let got = second
                .recv_timeout(Duration::from_secs(10))
                .expect("the newest stream gets it");
            assert!(got.is_some_and(|l| l.contains("to the newest")));
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                matches!(first.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)),
                "the first stream neither ended nor got a copy"
            );
            let later: Vec<_> = (0..3).map(|_| open(&client)).collect();
            assert_eq!(
                first
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the oldest ends"),
                None,
                "a fifth stream ends the oldest"
            );
            assert!(matches!(
                second.try_recv(),
                Err(std::sync::mpsc::TryRecvError::Empty)
            ));
            notify(&mut client, "again");
            let newest = later.last().expect("three");
            let got = newest
                .recv_timeout(Duration::from_secs(10))
                .expect("the newest stream gets it");
            assert!(got.is_some_and(|l| l.contains("again")));
        });
    }

    /// A GET stream whose connection broke is resumed with `Last-Event-ID`:
    /// what the proxy had written into the dead connection arrives once, in
    /// order, under the stream's own numbering, and the stream goes on.
    #[test]
    fn proxy_get_stream_resumes_after_its_connection_broke() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("resume-get", &["--rate-limit", "off"], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let notify = |client: &mut McpClient, message: &str| {
                let answer = client.request(
                    "tools/call",
                    json!({"name": "notify", "arguments": {"message": message}}),
                );
                assert_eq!(answer.text(), "notified", "{}", answer.raw);
            };
            let stream = client.open_stream();
            assert_eq!(stream.status(), 200);
            let mut stream = BufReader::new(stream);
            // A 2025-11-25 client's stream starts with a priming event: the
            // stream's cursor before any message.
            let (priming, data) = next_event(&mut stream).expect("priming");
            assert_eq!(data, "");
            assert!(priming.is_some_and(|id| id.ends_with("-0")));
            notify(&mut client, "one");
            let (id, data) = next_event(&mut stream).expect("one");
            assert!(data.contains("\"one\""), "{data}");
            let read = id.expect("events carry ids");
            // Sent into the stream, never read: the connection breaks.
            notify(&mut client, "two");
            drop(stream);
            let deadline = Instant::now() + Duration::from_secs(10);
            while metric(&proxy.metrics(), "shadowcat_session_streams", &[]) != 0.0 {
                assert!(Instant::now() < deadline, "the proxy saw the stream end");
                std::thread::sleep(Duration::from_millis(20));
            }
            // With no stream open, a message the server sends while a
            // request runs goes with that request's answer.
            let three = client.request(
                "tools/call",
                json!({"name": "notify", "arguments": {"message": "three"}}),
            );
            assert!(three.raw.contains("\"three\""), "{}", three.raw);
            let resumed = client.resume_stream(Some(&read));
            assert_eq!(resumed.status(), 200);
            let mut resumed = BufReader::new(resumed);
            let mut ids = vec![read.clone()];
            let (id, data) = next_event(&mut resumed).expect("two");
            assert!(data.contains("\"two\""), "{data}");
            ids.push(id.expect("an id"));
            notify(&mut client, "four");
            let (id, data) = next_event(&mut resumed).expect("four");
            assert!(data.contains("\"four\""), "{data}");
            ids.push(id.expect("an id"));
            // One stream, numbered on: `STREAM-SEQ` with SEQ 1, 2, 3.
            let stream_of = |id: &str| id.split_once('-').expect("STREAM-SEQ").0.to_owned();
            assert!(
                ids.iter().all(|id| stream_of(id) == stream_of(&read)),
                "{ids:?}"
            );
            let seqs: Vec<&str> = ids
                .iter()
                .map(|id| id.split_once('-').expect("").1)
                .collect();
            assert_eq!(seqs, ["1", "2", "3"], "{ids:?}");
            // An id the session never wrote opens a new stream, numbered anew.
            let fresh = client.resume_stream(Some("not-an-event"));
            assert_eq!(fresh.status(), 200);
            drop(resumed);
            let mut fresh = BufReader::new(fresh);
            let (_, data) = next_event(&mut fresh).expect("priming");
            assert_eq!(data, "");
            notify(&mut client, "five");
            let (id, data) = next_event(&mut fresh).expect("five");
            assert!(data.contains("\"five\""), "{data}");
            assert_ne!(stream_of(&id.expect("an id")), stream_of(&read));
            assert_eq!(
                metric(&proxy.metrics(), "shadowcat_stream_resumptions_total", &[]),
                2.0,
                "both GETs with Last-Event-ID count"
            );
        });
    }

    /// A request whose SSE answer lost its connection mid-way is resumed on a
    /// GET with the last event id read: the rest of its events, its response
    /// included, arrive there and the stream ends.
    #[test]
    fn proxy_request_stream_resumes_with_its_response_after_its_connection_broke() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("resume-post", &["--rate-limit", "off"], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            for resume_after_the_answer in [false, true] {
                let answer = client.request_unread(
                    "tools/call",
                    json!({"name": "sleep", "arguments": {"ms": 1_000},
                           "_meta": {"progressToken": "slow"}}),
                );
                assert_eq!(answer.status(), 200);
                let mut answer = BufReader::new(answer);
                let (_, priming) = next_event(&mut answer).expect("the priming event");
                assert_eq!(priming, "");
                let (id, data) = next_event(&mut answer).expect("the first progress");
                assert!(data.contains("\"progress\":0"), "{data}");
                drop(answer);
                if resume_after_the_answer {
                    std::thread::sleep(Duration::from_millis(1_500));
                }
                let resumed = client.resume_stream(Some(&id.expect("an id")));
                assert_eq!(resumed.status(), 200);
                let mut resumed = BufReader::new(resumed);
                let (_, data) = next_event(&mut resumed).expect("the second progress");
                assert!(data.contains("\"progress\":1"), "{data}");
                let response = last_response(&mut resumed);
                assert_eq!(response["result"]["content"][0]["text"], "slept 1000 ms");
            }
            assert_eq!(client.echo("after").text(), "Echo: after");
        });
    }

    /// A GET stream broken at random points while the server keeps writing,
    /// and resumed each time from the last event read: every message the
    /// server sent reaches the client exactly once, on the stream or, while
    /// no stream was open, with the request it was sent during.
    #[test]
    fn proxy_get_stream_broken_at_random_loses_and_repeats_nothing() {
        with_watchdog(Duration::from_secs(180), || {
            const MESSAGES: usize = 300;
            let (proxy, _mark) = start("resume-random", &["--rate-limit", "off"], &[]);
            let mut sender = McpClient::new(&proxy.mcp);
            assert_eq!(sender.initialize().status, 200);
            let mut reader = McpClient::new(&proxy.mcp);
            reader.session = sender.session.clone();
            let seen = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
            let note = |seen: &parking_lot::Mutex<Vec<String>>, data: &str| {
                let message: Value = serde_json::from_str(data).expect("JSON");
                if let Some(text) = message["params"]["data"].as_str() {
                    seen.lock().push(text.to_owned());
                }
            };
            let reading = {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(17);
                    let (mut last, mut resumptions) = (None::<String>, 0);
                    'connections: loop {
                        let mut stream = BufReader::new(reader.resume_stream(last.as_deref()));
                        while let Some((id, data)) = next_event(&mut stream) {
                            last = id.or(last);
                            if !data.is_empty() {
                                note(&seen, &data);
                            }
                            if seen.lock().len() >= MESSAGES {
                                break 'connections;
                            }
                            if rng.random_bool(0.15) {
                                resumptions += 1;
                                continue 'connections;
                            }
                        }
                        panic!("the stream ended");
                    }
                    resumptions
                })
            };
            for k in 0..MESSAGES {
                let answer = sender.request(
                    "tools/call",
                    json!({"name": "notify", "arguments": {"message": format!("m{k}")}}),
                );
                assert_eq!(answer.text(), "notified", "{}", answer.raw);
                for message in &answer.messages {
                    if message.get("method").is_some() {
                        note(&seen, &message.to_string());
                    }
                }
            }
            let resumptions = reading.join().expect("the reader");
            assert!(resumptions > 10, "{resumptions}");
            let mut seen = seen.lock().clone();
            seen.sort_by_key(|m| m[1..].parse::<usize>().expect("m<k>"));
            let sent: Vec<String> = (0..MESSAGES).map(|k| format!("m{k}")).collect();
            assert_eq!(seen, sent, "each message once");
        });
    }

    /// A 2025-11-25 client's request whose answer is slow gets a priming
    /// event (an id, empty data) a second in, so that a connection cut
    /// before the first message (an idle timeout on the way) can be resumed;
    /// a quick answer still goes as plain JSON.
    #[test]
    fn proxy_slow_answer_is_primed_and_resumable_before_its_first_message() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("priming", &["--rate-limit", "off"], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let quick = client.echo("quick");
            assert_eq!(quick.text(), "Echo: quick");
            assert_eq!(
                quick.headers["content-type"], "application/json",
                "{}",
                quick.raw
            );
            let slow = client.request_unread(
                "tools/call",
                json!({"name": "sleep", "arguments": {"ms": 2_500}}),
            );
            assert_eq!(slow.status(), 200);
            assert!(slow.headers()["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with("text/event-stream")));
            let mut slow = BufReader::new(slow);
            let (id, data) = next_event(&mut slow).expect("the priming event");
            assert_eq!(data, "", "no message yet");
            let id = id.expect("an id");
            assert!(id.ends_with("-0"), "{id}");
            drop(slow);
            let resumed = client.resume_stream(Some(&id));
            assert_eq!(resumed.status(), 200);
            let mut resumed = BufReader::new(resumed);
            let response = last_response(&mut resumed);
            assert_eq!(response["result"]["content"][0]["text"], "slept 2500 ms");
        });
    }

    #[test]
    fn proxy_upstream_crash_answers_pending_requests_and_closes_the_session() {
        let (proxy, mark) = start("crash", &[], &[]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        let crash = client.request("tools/call", json!({"name": "crash", "arguments": {}}));
        assert_eq!(crash.body["error"]["code"], -32031, "{:?}", crash.body);
        assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.echo("x").status != 404 {
            assert!(Instant::now() < deadline, "the crashed session is closed");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The session stops answering once it is closing; it is counted
        // removed when the request that saw the crash lets go of it, which
        // may be just after its answer went out.
        let counts = || {
            let scrape = proxy.metrics();
            let removed = metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "upstream-failed")],
            );
            (
                removed,
                metric(&scrape, "shadowcat_upstream_failures_total", &[]),
            )
        };
        let mut seen = counts();
        while seen.0 == 0.0 || seen.1 == 0.0 {
            assert!(Instant::now() < deadline, "the crash is counted: {seen:?}");
            std::thread::sleep(Duration::from_millis(20));
            seen = counts();
        }
        assert_eq!(seen, (1.0, 1.0));
    }

    #[test]
    fn proxy_teardown_kills_the_whole_process_group_and_shutdown_leaves_no_orphans() {
        let (proxy, mark) = start(
            "orphans",
            &["--max-sessions", "3"],
            &["--upstream-grace", "200ms"],
        );
        let grandchild = format!("77{}", std::process::id() % 10_000);
        let mut clients: Vec<McpClient> = (0..5).map(|_| McpClient::new(&proxy.mcp)).collect();
        for client in &mut clients {
            assert_eq!(client.initialize().status, 200);
            let spawned = client.request(
                "tools/call",
                json!({"name": "spawn", "arguments": {"seconds": grandchild.parse::<u64>().unwrap_or(7777)}}),
            );
            assert!(spawned.text().starts_with("spawned"), "{:?}", spawned.body);
        }
        let sleepers = grandchild.clone();
        // Two sessions were evicted, with their grandchildren.
        let deadline = Instant::now() + Duration::from_secs(15);
        while (processes_with(&mark).len(), processes_with(&sleepers).len()) != (3, 3) {
            assert!(
                Instant::now() < deadline,
                "evicted upstreams and their children are gone: {} servers, {} children",
                processes_with(&mark).len(),
                processes_with(&sleepers).len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = proxy.terminate();
        assert!(status.success(), "{status:?}");
        assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        assert!(wait_no_processes(&sleepers, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn proxy_killed_with_sigkill_takes_its_upstream_processes_with_it() {
        // Stubborn servers outlive a closed stdin: only the parent-death
        // signal ends them when the proxy cannot. Their own children (a
        // server behind a launcher such as npx) never get that signal: the
        // reaper kills their process groups once the proxy is gone.
        let mark = marker("sigkill");
        let grandchild = format!("78{}", std::process::id() % 10_000);
        let up = format!("{} {mark} --stubborn", echo_server().display());
        let proxy = ProxyProcess::start(&[], &["--upstream-stdio", &up]);
        let mut clients: Vec<McpClient> = (0..3).map(|_| McpClient::new(&proxy.mcp)).collect();
        for client in &mut clients {
            assert_eq!(client.initialize().status, 200);
            let spawned = client.request(
                "tools/call",
                json!({"name": "spawn", "arguments": {"seconds": grandchild.parse::<u64>().unwrap_or(7878)}}),
            );
            assert!(spawned.text().starts_with("spawned"), "{:?}", spawned.body);
        }
        assert_eq!(processes_with(&mark).len(), 3);
        assert_eq!(processes_with(&grandchild).len(), 3);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(proxy.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        drop(proxy);
        assert!(
            wait_no_processes(&mark, Duration::from_secs(10)).is_empty(),
            "the upstreams died with their parent"
        );
        assert!(
            wait_no_processes(&grandchild, Duration::from_secs(10)).is_empty(),
            "the upstreams' own children were reaped"
        );
    }

    #[test]
    fn proxy_shutdown_lets_requests_in_flight_finish() {
        let (proxy, mark) = start("shutdown", &[], &["--shutdown-grace", "20s"]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        let slow = std::thread::spawn(move || {
            client.request(
                "tools/call",
                json!({"name": "sleep", "arguments": {"ms": 1500}}),
            )
        });
        std::thread::sleep(Duration::from_millis(400));
        let status = proxy.terminate();
        let answer = slow.join().expect("client");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), "slept 1500 ms");
        assert!(status.success());
        assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn proxy_admin_api_and_cli_list_delete_and_clean_up_sessions() {
        let (proxy, _mark) = start("admin", &[], &[]);
        let mut clients: Vec<McpClient> = (0..3).map(|_| McpClient::new(&proxy.mcp)).collect();
        for c in &mut clients {
            assert_eq!(c.initialize().status, 200);
            assert_eq!(c.echo("x").status, 200);
        }
        let cli = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
                .args(["session", "--admin", &proxy.admin])
                .args(args)
                .output()
                .expect("cli runs");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, out, err) = cli(&["list", "--json"]);
        assert!(ok, "{err}");
        let rows: Vec<Value> = serde_json::from_str(&out).expect("json rows");
        assert_eq!(rows.len(), 3);
        let first = clients[0].session.clone().expect("id");
        let row = rows
            .iter()
            .find(|r| r["id"] == first.as_str())
            .expect("listed");
        assert_eq!(row["state"], "active");
        assert_eq!(row["requests"], 3, "initialize, initialized, echo");
        assert!(row["pid"].as_u64().is_some());
        assert_eq!(row["policy"], "lru");
        let (ok, out, _) = cli(&["list"]);
        assert!(
            ok && out.contains(&first) && out.contains("3 session(s)"),
            "{out}"
        );

        let (ok, out, err) = cli(&["delete", &first]);
        assert!(ok, "{err}");
        assert!(out.contains("removed"), "{out}");
        assert_eq!(clients[0].echo("x").status, 404);
        let (ok, _, err) = cli(&["delete", &first]);
        assert!(!ok && err.contains("no session"), "{err}");
        let (ok, out, _) = cli(&["cleanup"]);
        assert!(ok && out.contains("removed 0"), "nothing is due: {out}");
        let (ok, out, _) = cli(&["cleanup", "--all"]);
        assert!(ok && out.contains("removed 2"), "{out}");
        assert_eq!(clients[1].echo("x").status, 404);
        let (ok, out, _) = cli(&["list"]);
        assert!(ok, "{out}");
        assert_eq!(out.lines().last(), Some("0 session(s)"), "{out}");
        assert_ends_quietly_on_a_closed_stdout(
            Command::new(env!("CARGO_BIN_EXE_shadowcat")).args([
                "session",
                "--admin",
                &proxy.admin,
                "list",
            ]),
        );

        let scrape = proxy.metrics();
        assert_eq!(
            metric(&scrape, "shadowcat_sessions_created_total", &[]),
            3.0
        );
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_sessions_removed_total",
                &[("cause", "deleted")]
            ),
            3.0
        );
        assert_eq!(metric(&scrape, "shadowcat_sessions_live", &[]), 0.0);
        assert_eq!(
            metric(
                &scrape,
                "shadowcat_session_accesses_total",
                &[("result", "miss")]
            ),
            3.0
        );
        assert!(
            metric(
                &scrape,
                "shadowcat_http_requests_total",
                &[("status", "404")]
            ) >= 2.0
        );
        let health = reqwest::blocking::get(format!("{}/healthz", proxy.admin)).expect("health");
        assert_eq!(health.status(), 200);

        // Pointed at the MCP listener instead, the CLI says what it asked,
        // what came back and which address it wants.
        let mcp_base = proxy.mcp.trim_end_matches("/mcp");
        for (args, asked) in [
            (
                &["list"][..],
                format!("GET {mcp_base}/sessions answered 404 Not Found"),
            ),
            (
                &["cleanup"],
                format!("POST {mcp_base}/sessions/cleanup answered 404 Not Found"),
            ),
            (
                &["delete", &first],
                format!("DELETE {mcp_base}/sessions/{first} answered 404 Not Found"),
            ),
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
                .args(["session", "--admin", mcp_base])
                .args(args)
                .output()
                .expect("cli runs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            for said in [
                asked.as_str(),
                &format!("there is no admin API at {mcp_base}/"),
                "--admin-listen",
                "127.0.0.1:9464",
            ] {
                assert!(err.contains(said), "{args:?}: `{said}` missing from {err}");
            }
        }
    }

    #[test]
    fn proxy_admin_token_is_required_when_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "0123456789abcdef-secret\n").expect("write");
        let token_path = token_file.to_str().expect("utf-8").to_owned();
        let (proxy, _mark) = start("token", &[], &["--admin-token-file", &token_path]);
        let http = reqwest::blocking::Client::new();
        let no_token = http
            .get(format!("{}/sessions", proxy.admin))
            .send()
            .expect("answer");
        assert_eq!(no_token.status(), 401);
        let wrong = http
            .get(format!("{}/sessions", proxy.admin))
            .bearer_auth("0123456789abcdef-wrong!")
            .send()
            .expect("answer");
        assert_eq!(wrong.status(), 401);
        let right = http
            .get(format!("{}/sessions", proxy.admin))
            .bearer_auth("0123456789abcdef-secret")
            .send()
            .expect("answer");
        assert_eq!(right.status(), 200);
        // The scheme's name is case-insensitive.
        let lower = http
            .get(format!("{}/sessions", proxy.admin))
            .header("authorization", "bearer 0123456789abcdef-secret")
            .send()
            .expect("answer");
        assert_eq!(lower.status(), 200);
        assert_eq!(
            http.get(format!("{}/healthz", proxy.admin))
                .send()
                .expect("h")
                .status(),
            200
        );
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args(["session", "--admin", &proxy.admin, "list"])
            .output()
            .expect("cli");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token-file"));
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args([
                "session",
                "--admin",
                &proxy.admin,
                "--admin-token-file",
                &token_path,
                "list",
            ])
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// N+5 clients over a table of N, each re-initializing after a 404, then
    /// the access log replayed through `bench` with the same table and
    /// policy: the replay sees exactly the hits and misses the proxy saw.
    #[test]
    fn proxy_access_log_replays_through_bench_with_the_same_hits_and_misses() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("access.oracleGeneral.bin");
        let log_path = log.to_str().expect("utf-8").to_owned();
        let (proxy, _mark) = start(
            "accesslog",
            &["--max-sessions", "4", "--rate-limit", "off"],
            &[
                "--access-log",
                &log_path,
                "--client-key",
                "header:x-client",
                "--init-rate",
                "off",
            ],
        );
        let mut clients: Vec<McpClient> = (0..9)
            .map(|i| McpClient::new(&proxy.mcp).with_header("x-client", &format!("client-{i}")))
            .collect();
        let mut rng = SmallRng::seed_from_u64(5);
        let mut reinitialized = 0;
        for _ in 0..120 {
            // Skewed: low-numbered clients come back more often.
            let i = (rng.random_range(0..81u32) as f64).sqrt() as usize;
            let client = &mut clients[i];
            if client.session.is_none() || client.echo("x").status == 404 {
                if client.session.is_some() {
                    reinitialized += 1;
                }
                assert_eq!(client.initialize().status, 200);
                assert_eq!(client.echo("x").status, 200);
            }
        }
        assert!(
            reinitialized > 5,
            "evicted clients came back: {reinitialized}"
        );
        let scrape = proxy.metrics();
        let hits = metric(
            &scrape,
            "shadowcat_session_accesses_total",
            &[("result", "hit")],
        ) as u64;
        let misses = metric(
            &scrape,
            "shadowcat_session_accesses_total",
            &[("result", "miss")],
        ) as u64;
        assert!(proxy.terminate().success());
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args([
                "--log",
                "warn",
                "bench",
                "--trace",
                &log_path,
                "--capacity",
                "4",
            ])
            .args(["--policy", "lru", "--no-belady", "--format", "json"])
            .output()
            .expect("bench runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        let row = report["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["policy"] == "lru"))
            .expect("lru row");
        assert_eq!(row["requests"], hits + misses);
        assert_eq!(row["misses"], misses, "the replay evicts as the proxy did");
    }

    #[test]
    fn proxy_forward_stdio_passes_messages_unchanged_and_answers_rate_limits() {
        let mark = marker("forward");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args([
                "--log",
                "warn",
                "--rate-limit",
                "1",
                "--burst",
                "2",
                "forward",
                "stdio",
                "--",
            ])
            .arg(echo_server())
            .arg(&mark)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("forward starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut read = || {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("a line");
            line
        };
        // Spacing inside the message is kept byte for byte on the way in.
        writeln!(stdin, r#"{{"jsonrpc":"2.0", "id":1, "method":"initialize","params":{{"protocolVersion":"2025-11-25"}}}}"#).expect("write");
        let init: Value = serde_json::from_str(&read()).expect("json");
        assert_eq!(init["result"]["serverInfo"]["name"], "mcp-echo");
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .expect("write");
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"one"}}}}}}"#).expect("write");
        let echoed = read();
        assert_eq!(
            echoed.trim_end(),
            r#"{"id":2,"jsonrpc":"2.0","result":{"content":[{"text":"Echo: one","type":"text"}]}}"#,
            "the server's bytes, unchanged"
        );
        // The burst of 2 is spent: the third request is refused right here.
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":"r3","method":"ping"}}"#).expect("write");
        let refused: Value = serde_json::from_str(&read()).expect("json");
        assert_eq!(refused["id"], "r3");
        assert_eq!(refused["error"]["code"], -32029);
        assert!(refused["error"]["data"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0));
        std::thread::sleep(Duration::from_millis(1100));
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":4,"method":"ping"}}"#).expect("write");
        let pong: Value = serde_json::from_str(&read()).expect("json");
        assert_eq!(pong["id"], 4);
        assert_eq!(pong["result"], json!({}));
        drop(stdin);
        let status = wait_with_timeout(&mut child, Duration::from_secs(20));
        assert!(status.success(), "{status:?}");
        assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
    }

    /// `forward stdio` to mcp_echo, whose processes carry a marker named
    /// after `name` (returned, to find them).
    fn forward_to_echo(name: &str) -> (ForwardProcess, String) {
        let mark = marker(name);
        let echo = echo_server();
        let server = [echo.to_str().expect("utf-8 path"), mark.as_str()];
        (ForwardProcess::start(&[], &[], &server), mark)
    }

    /// The next line answers mcp_echo's `ask` called as request `id`: the
    /// response its own request got was an error with `code`.
    fn assert_server_got_error(proxy: &mut ForwardProcess, id: u64, code: i64) {
        let answered = proxy.read().expect("the tool's answer");
        assert_eq!(answered["id"], id, "{answered}");
        let text = answered["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        let got: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("the server got a response ({e}): {answered}"));
        assert_eq!(got["id"], format!("ask-{id}"), "{got}");
        assert_eq!(got["error"]["code"], code, "{got}");
    }

    /// The session lives on: a ping (`id`) is the next thing answered, and
    /// the proxy then ends cleanly with nothing else written.
    fn pings_then_ends_cleanly(mut proxy: ForwardProcess, id: u64) {
        proxy.send(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
        assert_eq!(
            proxy.read().expect("pong")["id"],
            id,
            "the session lives on"
        );
        let (status, rest, log) = proxy.finish(Duration::from_secs(20));
        assert!(status.success(), "{status:?}: {log}");
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn proxy_forward_stdio_answers_invalid_requests_by_their_id() {
        with_watchdog(Duration::from_secs(60), || {
            let (mut proxy, _mark) = forward_to_echo("forward-invalid");
            let cases = [
                (r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#, json!(9)),
                (r#"{"jsonrpc":"2.0","id":8}"#, json!(8)),
                (r#"{"jsonrpc":"2.0","id":"k","method":7}"#, json!("k")),
                (
                    r#"{"jsonrpc":"2.0","id":{"n":1},"result":5,"method":"x"}"#,
                    Value::Null,
                ),
                (r#"{"jsonrpc":"2.0","id":3,"method":"#, Value::Null),
                (
                    r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
                    Value::Null,
                ),
                (r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, Value::Null),
            ];
            for (line, id) in cases {
                proxy.send(line);
                let refused = proxy.read().expect("an answer");
                assert_eq!(refused["id"], id, "{line}: {refused}");
                assert!(refused["error"]["code"].as_i64().is_some(), "{refused}");
            }
            pings_then_ends_cleanly(proxy, 10);
        });
    }

    /// A 2025-03-26 client's batch reaches the server as its elements, an
    /// invalid one is answered on its own, and a server's batch reaches the
    /// client as its elements: every answer comes, one per line.
    #[test]
    fn proxy_forward_stdio_passes_batches_as_their_elements() {
        with_watchdog(Duration::from_secs(60), || {
            let (mut proxy, _mark) = forward_to_echo("forward-batch");
            proxy.send(
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},
                    {"jsonrpc":"2.0","method":"notifications/initialized"},
                    {"jsonrpc":"1.0","id":2,"method":"ping"},
                    {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"batched","arguments":{"message":"b"}}}]"#
                    .replace('\n', "")
                    .as_str(),
            );
            let mut lines: Vec<Value> = (0..4).map(|_| proxy.read().expect("an answer")).collect();
            lines.sort_by_key(|m| m["id"].as_i64().unwrap_or(-1));
            assert_eq!(lines[0]["params"]["data"], "b", "{lines:?}");
            assert_eq!(lines[1]["id"], 1, "{lines:?}");
            assert_eq!(lines[1]["result"], json!({}));
            assert_eq!(lines[2]["id"], 2, "{lines:?}");
            assert_eq!(lines[2]["error"]["code"], -32600);
            assert_eq!(lines[3]["result"]["content"][0]["text"], "batched");
            proxy.send("[]");
            let empty = proxy.read().expect("an answer");
            assert_eq!(empty["error"]["code"], -32600, "{empty}");
            pings_then_ends_cleanly(proxy, 10);
        });
    }

    #[test]
    fn proxy_forward_stdio_server_exit_answers_pending_requests_while_the_client_is_connected() {
        with_watchdog(Duration::from_secs(60), || {
            // Answers the first request, reads the second, then exits 7.
            let script = r#"read a; read b; echo '{"jsonrpc":"2.0","id":1,"result":{}}'; exit 7"#;
            let mut proxy = ForwardProcess::start(&[], &[], &["sh", "-c", script]);
            proxy.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
            proxy.send(r#"{"jsonrpc":"2.0","id":"two","method":"ping"}"#);
            let answered = proxy.read().expect("the answer the server wrote");
            assert_eq!(answered["id"], 1);
            assert_eq!(answered["result"], json!({}), "{answered}");
            let failed = proxy.read().expect("an error for the unanswered request");
            assert_eq!(failed["id"], "two");
            assert_eq!(failed["error"]["code"], -32031);
            let message = failed["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("exit status: 7"), "{message}");
            // The client's stdin is still open: the proxy exits on its own.
            let (status, rest, log) = proxy.ends_on_its_own(Duration::from_secs(20));
            assert!(!status.success(), "{status:?}");
            assert!(rest.is_empty(), "{rest:?}");
            assert!(
                log.contains("1 request unanswered") && log.contains("exit status: 7"),
                "{log}"
            );
        });
    }

    #[test]
    fn proxy_forward_stdio_server_exit_answers_pending_requests_after_the_client_closed() {
        with_watchdog(Duration::from_secs(60), || {
            // Exits without answering, as soon as it has read the request.
            let mut proxy = ForwardProcess::start(&[], &[], &["sh", "-c", "read a; exit 7"]);
            proxy.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
            proxy.close_stdin();
            let (status, rest, log) = proxy.finish(Duration::from_secs(20));
            assert!(!status.success(), "{status:?}");
            assert_eq!(rest.len(), 1, "{rest:?}");
            assert_eq!(rest[0]["id"], 1);
            assert_eq!(rest[0]["error"]["code"], -32031);
            let message = rest[0]["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("exit status: 7"), "{message}");
            assert!(log.contains("1 request unanswered"), "{log}");

            // Only exits once its stdin closes, which the proxy does after
            // --shutdown-grace.
            let mut proxy = ForwardProcess::start(
                &[],
                &["--shutdown-grace", "300ms"],
                &["sh", "-c", "cat >/dev/null; exit 7"],
            );
            proxy.send(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#);
            proxy.close_stdin();
            let (status, rest, log) = proxy.finish(Duration::from_secs(20));
            assert!(!status.success(), "{status:?}");
            assert_eq!(rest.len(), 1, "{rest:?}");
            assert_eq!(rest[0]["id"], "a");
            assert_eq!(rest[0]["error"]["code"], -32031);
            let message = rest[0]["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("exit status: 7"), "{message}");
            assert!(log.contains("1 request unanswered"), "{log}");
        });
    }

    #[test]
    fn proxy_forward_stdio_lets_requests_in_flight_finish_after_the_client_closed() {
        with_watchdog(Duration::from_secs(60), || {
            // mcp_echo exits as soon as its stdin closes, abandoning requests
            // still running: the proxy must not close it before they finish.
            let (mut proxy, mark) = forward_to_echo("forward-drain");
            proxy.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":400}}}"#);
            proxy.send(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
            proxy.close_stdin();
            let (status, rest, log) = proxy.finish(Duration::from_secs(20));
            assert!(status.success(), "{status:?}: {log}");
            let ids: Vec<&Value> = rest.iter().map(|m| &m["id"]).collect();
            assert_eq!(ids, [&json!(2), &json!(1)], "{rest:?}");
            assert_eq!(rest[1]["result"]["content"][0]["text"], "slept 400 ms");
            assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        });
    }

    /// A client's message over the line limit (16 MiB in forward mode) is
    /// skipped, and whoever waits for it is told: the client, for its
    /// request, by the request's id; the server, for its request the
    /// over-long response answered (mcp_echo's `ask` shows what it got).
    #[test]
    fn proxy_forward_stdio_over_long_client_messages_are_answered_by_their_id() {
        with_watchdog(Duration::from_secs(120), || {
            let (mut proxy, _mark) = forward_to_echo("forward-long");
            let pad = "x".repeat((16 << 20) + 10);
            proxy.send(&format!(
                r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"pad":"{pad}"}}}}"#
            ));
            let refused = proxy.read().expect("an answer");
            assert_eq!(refused["id"], 5, "{refused}");
            assert_eq!(refused["error"]["code"], -32600, "{refused}");
            let message = refused["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("16777216 bytes"), "{message}");

            proxy.send(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"ask","arguments":{"bytes":10}}}"#);
            let asked = proxy.read().expect("the server's request");
            assert_eq!(asked["method"], "roots/list", "{asked}");
            assert_eq!(asked["id"], "ask-6", "{asked}");
            proxy.send(&format!(
                r#"{{"jsonrpc":"2.0","id":"ask-6","result":{{"roots":[],"_meta":{{"pad":"{pad}"}}}}}}"#
            ));
            assert_server_got_error(&mut proxy, 6, -32603);

            // A notification gets no answer: the next line is the ping's.
            proxy.send(&format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"pad":"{pad}"}}}}"#
            ));
            pings_then_ends_cleanly(proxy, 7);
        });
    }

    /// `--max-message` sets the limit both ways, and names itself to those
    /// it refuses; a limit no message fits is refused at the start. A
    /// message whose id comes last, after what makes it long (the
    /// TypeScript SDK's order), is answered by that id too, either way, and
    /// the run goes on.
    #[test]
    fn proxy_forward_stdio_max_message_sets_the_limit_both_ways() {
        with_watchdog(Duration::from_secs(60), || {
            let echo = echo_server();
            let server = [echo.to_str().expect("utf-8 path")];
            let mut proxy = ForwardProcess::start(&[], &["--max-message", "64KiB"], &server);
            let pad = "x".repeat(70_000);
            proxy.send(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"pad":"{pad}"}}}}"#
            ));
            let refused = proxy.read().expect("an answer");
            assert_eq!(refused["id"], 1, "{refused}");
            let message = refused["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("65536 bytes") && message.contains("--max-message"),
                "{message}"
            );
            proxy.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"big","arguments":{"bytes":70000}}}"#);
            let failed = proxy.read().expect("an answer");
            assert_eq!(failed["id"], 2, "{failed}");
            let message = failed["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("--max-message"), "{message}");
            proxy.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"big","arguments":{"bytes":60000}}}"#);
            let fits = proxy.read().expect("an answer");
            assert_eq!(
                fits["result"]["content"][0]["text"].as_str().map(str::len),
                Some(60_000)
            );

            proxy.send(&format!(
                r#"{{"method":"tools/call","params":{{"pad":"{pad}"}},"jsonrpc":"2.0","id":"c-4"}}"#
            ));
            let refused = proxy.read().expect("an answer");
            assert_eq!(refused["id"], "c-4", "{refused}");
            assert_eq!(refused["error"]["code"], -32600, "{refused}");
            proxy.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"big","arguments":{"bytes":70000,"idLast":true}}}"#);
            let failed = proxy.read().expect("an answer");
            assert_eq!(failed["id"], 5, "{failed}");
            let message = failed["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("--max-message"), "{message}");
            proxy.send(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"ask","arguments":{"bytes":70000,"idLast":true}}}"#);
            assert_server_got_error(&mut proxy, 6, -32600);
            pings_then_ends_cleanly(proxy, 7);

            let (status, said) =
                run_to_exit(&["forward", "stdio", "--max-message", "100", "--", "true"]);
            assert!(!status.success());
            assert!(said.contains("at least 1KiB"), "{said}");
        });
    }

    /// A full queue to the server is load, as in `reverse`: the request is
    /// refused as overloaded with a retry hint, not as a failed server. The
    /// server here never reads: a first message larger than a pipe holds
    /// keeps the writer waiting, and the queue of one behind it fills.
    #[test]
    fn proxy_forward_stdio_full_queue_refuses_as_overloaded() {
        with_watchdog(Duration::from_secs(60), || {
            let forward = ["--upstream-max-pending", "1", "--shutdown-grace", "1s"];
            let mut proxy = ForwardProcess::start(&[], &forward, &["sleep", "30"]);
            let pad = "x".repeat(256 << 10);
            proxy.send(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{pad}"}}}}"#
            ));
            for id in 2..=6 {
                proxy.send(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            }
            let refused = proxy.read().expect("a refusal");
            assert_rpc_error(&refused, -32030, "waiting for the upstream to read them");
            assert_eq!(refused["error"]["data"]["retryAfterMs"], 1000, "{refused}");
            let (_status, rest, log) = proxy.finish(Duration::from_secs(30));
            // The rest are refused the same way, or left unanswered by the
            // server when the client closed (its failure, -32031).
            for message in &rest {
                let code = &message["error"]["code"];
                assert!(code == -32030 || code == -32031, "{message}: {log}");
            }
        });
    }

    #[test]
    fn proxy_config_file_sets_options_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("shadowcat.toml");
        std::fs::write(&file, "max-sessions = 17\nidle-timeout = \"5m\"\n").expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args(["--config", file.to_str().expect("utf-8"), "config"])
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("max sessions       17"), "{text}");
        assert!(text.contains("5m"), "{text}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("WARN"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Valid, but the idle timeout could never apply: said, not refused.
        std::fs::write(&file, "idle-timeout = \"2h\"\nmax-age = \"30m\"\n").expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args(["--config", file.to_str().expect("utf-8"), "config"])
            .output()
            .expect("runs");
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("WARN")
                && err.contains("the idle timeout (2h) never expires a session: the max age (30m)"),
            "{err}"
        );
        std::fs::write(&file, "max-sesions = 17\n").expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args(["--config", file.to_str().expect("utf-8"), "config"])
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unknown key `max-sesions`"), "{err}");
        std::fs::write(&file, "max-sessions = \"many\"\n").expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args(["--config", file.to_str().expect("utf-8"), "config"])
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("shadowcat.toml: max-sessions = \"many\": invalid value 'many'"),
            "names the file and the key: {err}"
        );
    }

    #[test]
    fn proxy_stateless_era_keys_sessions_by_client_and_has_no_stream() {
        let (proxy, mark) = start("stateless", &[], &["--client-key", "header:x-api-key"]);
        let client = |key: &str| {
            McpClient::new(&proxy.mcp)
                .with_header("mcp-protocol-version", "2026-07-28")
                .with_header("x-api-key", key)
        };
        let mut alice = client("alice-key");
        let answer = alice.echo("first");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(
            !answer.headers.contains_key("mcp-session-id"),
            "no protocol session"
        );
        assert_eq!(alice.echo("second").text(), "Echo: second");
        let mut bob = client("bob-key");
        assert_eq!(bob.echo("hi").status, 200);
        assert_eq!(
            processes_with(&mark).len(),
            2,
            "one upstream per client key"
        );
        let stream = reqwest::blocking::Client::new()
            .get(&proxy.mcp)
            .header("mcp-protocol-version", "2026-07-28")
            .send()
            .expect("answer");
        assert_eq!(stream.status(), 405);
        let rows: Vec<Value> = reqwest::blocking::get(format!("{}/sessions", proxy.admin))
            .and_then(|r| r.json())
            .expect("rows");
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|r| !r["id"].as_str().unwrap_or_default().contains("alice")),
            "the key is kept hashed"
        );
    }

    #[test]
    fn proxy_stateless_probe_refused_by_a_sessions_era_upstream_leaves_no_session() {
        let (proxy, mark) = start("probe", &[], &[]);
        let mut probe =
            McpClient::new(&proxy.mcp).with_header("mcp-protocol-version", "2026-07-28");
        let answer = probe.request("server/discover", json!({}));
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["error"]["code"], -32601, "{:?}", answer.body);
        assert!(
            wait_no_processes(&mark, Duration::from_secs(10)).is_empty(),
            "the probe's upstream was closed"
        );
        let rows: Vec<Value> = reqwest::blocking::get(format!("{}/sessions", proxy.admin))
            .and_then(|r| r.json())
            .expect("rows");
        assert!(rows.is_empty(), "{rows:?}");
        // The client then falls back to the sessions era, as SDK clients do.
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        assert_eq!(
            client.echo("after the probe").text(),
            "Echo: after the probe"
        );
    }

    /// Many clients at once, at random, against a small table: the proxy
    /// neither hangs nor loses count, and leaves no process behind.
    #[test]
    fn proxy_concurrent_clients_with_random_interleavings() {
        with_watchdog(Duration::from_secs(240), || {
            let (proxy, mark) = start(
                "concurrent",
                &["--max-sessions", "6", "--rate-limit", "off"],
                &[
                    "--client-key",
                    "header:x-client",
                    "--init-rate",
                    "off",
                    "--upstream-grace",
                    "200ms",
                ],
            );
            let ok = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..12)
                .map(|t| {
                    let (url, ok) = (proxy.mcp.clone(), Arc::clone(&ok));
                    std::thread::spawn(move || {
                        let mut rng = SmallRng::seed_from_u64(t);
                        let mut client = McpClient::new(&url).with_header("x-client", &t.to_string());
                        for _ in 0..25 {
                            match rng.random_range(0..10) {
                                0 => {
                                    client.delete();
                                    client.session = None;
                                }
                                1 => {
                                    let _ = client.request(
                                        "tools/call",
                                        json!({"name": "sleep", "arguments": {"ms": rng.random_range(1..50)}}),
                                    );
                                }
                                _ => {
                                    if client.session.is_none() || client.echo("x").status == 404 {
                                        // 503: every session busy; 404: evicted
                                        // between initialize and initialized.
                                        let status = client.initialize().status;
                                        assert!(matches!(status, 200 | 404 | 503), "initialize: {status}");
                                    } else {
                                        ok.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("client thread");
            }
            let scrape = proxy.metrics();
            let served = ok.load(Ordering::Relaxed);
            assert!(served > 12, "requests were served: {served}");
            assert!(
                metric(
                    &scrape,
                    "shadowcat_sessions_removed_total",
                    &[("cause", "evicted")]
                ) > 0.0,
                "the table was kept full enough to evict"
            );
            let created = metric(&scrape, "shadowcat_sessions_created_total", &[]);
            let removed = metric(&scrape, "shadowcat_sessions_removed_total", &[]);
            let live = metric(&scrape, "shadowcat_sessions_live", &[]);
            assert_eq!(created, removed + live, "no session lost from the count");
            assert!(live <= 6.0);
            assert_eq!(metric(&scrape, "shadowcat_requests_in_flight", &[]), 0.0);
            assert!(proxy.terminate().success());
            assert!(wait_no_processes(&mark, Duration::from_secs(10)).is_empty());
        });
    }

    /// Many clients initializing at once on a table of one: each either gets
    /// its session or is told the table is busy (503). A session is pinned
    /// by its initialize from the moment it exists, so no concurrent create
    /// can evict it before its client got it and answer "not found".
    #[test]
    fn proxy_concurrent_initializes_get_their_session_or_503_never_404() {
        with_watchdog(Duration::from_secs(180), || {
            let (proxy, _mark) = start(
                "initrace",
                &["--max-sessions", "1", "--rate-limit", "off"],
                &["--init-rate", "off"],
            );
            let mut statuses = Vec::new();
            for _round in 0..5 {
                let barrier = Arc::new(std::sync::Barrier::new(12));
                let threads: Vec<_> = (0..12)
                    .map(|_| {
                        let (url, barrier) = (proxy.mcp.clone(), Arc::clone(&barrier));
                        std::thread::spawn(move || {
                            let mut client = McpClient::new(&url);
                            barrier.wait();
                            let answer = client.request(
                                "initialize",
                                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                                       "clientInfo": {"name": "racer", "version": "1"}}),
                            );
                            let named = answer.headers.contains_key("mcp-session-id");
                            (answer.status, named, answer.body)
                        })
                    })
                    .collect();
                for thread in threads {
                    statuses.push(thread.join().expect("client thread"));
                }
            }
            for (status, named, body) in &statuses {
                assert!(
                    (*status == 200 && *named) || (*status == 503 && !*named),
                    "{status} (session id given: {named}): {body}"
                );
            }
            assert!(statuses.iter().any(|(s, _, _)| *s == 200));
            let scrape = proxy.metrics();
            assert!(metric(&scrape, "shadowcat_sessions_live", &[]) <= 1.0);
        });
    }

    /// A session between its `initialize` and its `notifications/initialized`
    /// is not evicted, however a policy ranks it: MRU proposes the newest
    /// session first, and without the shield every newcomer would be gone
    /// before its client finished the handshake (404 on the notification).
    /// At most half the table is so kept, so clients that never finish
    /// cannot make the table unevictable.
    #[test]
    fn proxy_half_open_sessions_are_not_evicted_before_their_handshake_completes() {
        with_watchdog(Duration::from_secs(120), || {
            let mru = crate::common::fixture("example-mru.wasm");
            let mru = mru.to_str().expect("utf-8");
            let (proxy, _mark) = start(
                "shield",
                &[
                    "--eviction-policy",
                    mru,
                    "--max-sessions",
                    "4",
                    "--rate-limit",
                    "off",
                ],
                &["--init-rate", "off"],
            );
            let begin = |client: &mut McpClient| {
                let answer = client.request(
                    "initialize",
                    json!({"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "half-open", "version": "1"}}),
                );
                assert_eq!(answer.status, 200, "{}", answer.raw);
                client.session = answer
                    .headers
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                assert!(client.session.is_some());
            };
            let mut settled: Vec<McpClient> = (0..3)
                .map(|_| {
                    let mut client = McpClient::new(&proxy.mcp);
                    assert_eq!(client.initialize().status, 200);
                    client
                })
                .collect();
            for round in 0..5 {
                // The table is full; a half-open session is the most recent.
                let mut half_open = McpClient::new(&proxy.mcp);
                begin(&mut half_open);
                // Another client's initialize needs a victim: MRU's first
                // choice is the half-open one.
                let mut next = McpClient::new(&proxy.mcp);
                assert_eq!(next.initialize().status, 200, "round {round}");
                let done = half_open.notify("notifications/initialized");
                assert_eq!(done.status, 202, "round {round}: {}", done.raw);
                assert_eq!(half_open.echo("made it").text(), "Echo: made it");
                let scrape = proxy.metrics();
                assert_eq!(metric(&scrape, "shadowcat_sessions_shielded", &[]), 0.0);
                assert_eq!(metric(&scrape, "shadowcat_sessions_live", &[]), 4.0);
                settled.push(half_open);
                settled.push(next);
            }
            // Three clients that never finish: two are kept (half of 4), the
            // third is not, and the table still makes room for newcomers.
            let mut stalled: Vec<McpClient> = (0..3)
                .map(|_| {
                    let mut client = McpClient::new(&proxy.mcp);
                    begin(&mut client);
                    client
                })
                .collect();
            let scrape = proxy.metrics();
            assert_eq!(metric(&scrape, "shadowcat_sessions_shielded", &[]), 2.0);
            assert_eq!(metric(&scrape, "shadowcat_sessions_pinned", &[]), 2.0);
            for _ in 0..3 {
                assert_eq!(McpClient::new(&proxy.mcp).initialize().status, 200);
            }
            let finished: Vec<u16> = stalled
                .iter_mut()
                .map(|c| c.notify("notifications/initialized").status)
                .collect();
            assert_eq!(
                finished.iter().filter(|&&s| s == 202).count(),
                2,
                "the two shielded half-open sessions outlive the newcomers: {finished:?}"
            );
            // A client's DELETE is not held up by the shield.
            let mut last = McpClient::new(&proxy.mcp);
            begin(&mut last);
            assert_eq!(last.delete(), 200);
            assert_eq!(last.echo("gone").status, 404);
        });
    }

    /// The policy is told the table's bounds: `ttl` evicts the session the
    /// table would expire first, which with a max age alone is the oldest
    /// created (FIFO), however recently it was used. Told no bounds, it
    /// would evict by request order instead.
    #[test]
    fn proxy_policy_is_told_the_tables_idle_timeout_and_max_age() {
        let (proxy, _mark) = start(
            "ttl",
            &[
                "--eviction-policy",
                "ttl.wasm",
                "--max-sessions",
                "2",
                "--idle-timeout",
                "off",
                "--max-age",
                "1h",
            ],
            &[],
        );
        let mut oldest = McpClient::new(&proxy.mcp);
        assert_eq!(oldest.initialize().status, 200);
        let mut younger = McpClient::new(&proxy.mcp);
        assert_eq!(younger.initialize().status, 200);
        // The oldest is now the most recently used.
        assert_eq!(oldest.echo("recent").status, 200);
        let mut newcomer = McpClient::new(&proxy.mcp);
        assert_eq!(newcomer.initialize().status, 200);
        assert_eq!(
            oldest.echo("still here?").status,
            404,
            "the first to reach its max age goes"
        );
        assert_eq!(younger.echo("kept").text(), "Echo: kept");
    }

    /// An initialize the upstream fails leaves nothing behind: no session
    /// id for the client, no session holding a place (evicting others) until
    /// the handshake times out.
    #[test]
    fn proxy_failed_initialize_leaves_no_session() {
        // Nothing listens on the discard port of the loopback.
        let proxy = ProxyProcess::start(
            &[],
            &[
                "--upstream-http",
                "http://127.0.0.1:9/mcp",
                "--init-timeout",
                "1h",
            ],
        );
        let mut client = McpClient::new(&proxy.mcp);
        for _ in 0..3 {
            let answer = client.request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "unlucky", "version": "1"}}),
            );
            assert_eq!(answer.status, 502, "{}", answer.raw);
            assert_eq!(answer.body["error"]["code"], -32031);
            assert!(!answer.headers.contains_key("mcp-session-id"));
        }
        let scrape = proxy.metrics();
        assert_eq!(metric(&scrape, "shadowcat_sessions_live", &[]), 0.0);
        assert_eq!(
            metric(&scrape, "shadowcat_sessions_created_total", &[]),
            metric(&scrape, "shadowcat_sessions_removed_total", &[]),
        );
    }

    /// A request waiting on an upstream that never answers does not hold
    /// its session past a DELETE, an operator's delete or the handshake's
    /// deadline: the request is answered (404, -32032) and the upstream is
    /// torn down, instead of both waiting as long as the upstream does.
    #[test]
    fn proxy_closing_a_session_ends_its_requests_stuck_upstream() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, mark) = start("stuck", &["--rate-limit", "off"], &[]);
            let admin = proxy.admin.clone();
            for closer in ["client", "operator"] {
                let mut client = McpClient::new(&proxy.mcp);
                assert_eq!(client.initialize().status, 200);
                let session = client.session.clone().expect("a session");
                let mut waiting = McpClient::new(&proxy.mcp);
                waiting.session = Some(session.clone());
                let started = Instant::now();
                let request = std::thread::spawn(move || {
                    let answer = waiting.request(
                        "tools/call",
                        json!({"name": "sleep", "arguments": {"ms": 600_000}}),
                    );
                    (answer, started.elapsed())
                });
                std::thread::sleep(Duration::from_millis(500));
                match closer {
                    "client" => assert_eq!(client.delete(), 200),
                    _ => {
                        let deleted = reqwest::blocking::Client::new()
                            .delete(format!("{admin}/sessions/{session}"))
                            .send()
                            .expect("admin answers");
                        assert_eq!(deleted.status().as_u16(), 200);
                    }
                }
                let (answer, waited) = request.join().expect("request thread");
                assert_eq!(answer.status, 404, "{closer}: {}", answer.raw);
                assert_eq!(answer.body["error"]["code"], -32032, "{closer}");
                assert!(
                    waited < Duration::from_secs(60),
                    "{closer}: answered when closed, not when the upstream finished"
                );
                assert_eq!(client.delete(), 404, "{closer}: gone, as a POST finds");
            }
            assert!(
                wait_no_processes(&mark, Duration::from_secs(20)).is_empty(),
                "the stuck upstreams were torn down"
            );
        });
        with_watchdog(Duration::from_secs(120), || {
            // An upstream that never answers initialize at all.
            let mark = marker("stuckinit");
            let proxy = ProxyProcess::start(
                &[],
                &[
                    "--upstream-stdio",
                    &format!("sh -c 'sleep 600' {mark}"),
                    "--init-timeout",
                    "1s",
                ],
            );
            let mut client = McpClient::new(&proxy.mcp);
            let started = Instant::now();
            let answer = client.request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "patient", "version": "1"}}),
            );
            assert_eq!(answer.status, 404, "{}", answer.raw);
            assert!(started.elapsed() < Duration::from_secs(30));
            assert!(!answer.headers.contains_key("mcp-session-id"));
            assert!(
                wait_no_processes(&mark, Duration::from_secs(20)).is_empty(),
                "the silent upstream was torn down"
            );
            assert_eq!(
                metric(&proxy.metrics(), "shadowcat_sessions_live", &[]),
                0.0
            );
        });
    }

    /// Two requests in flight on one session each get their own progress,
    /// on their own stream, though the second was sent while the first ran.
    #[test]
    fn proxy_progress_goes_to_the_request_that_asked_for_it() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("progress", &["--rate-limit", "off"], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let call = |id: u64, token: &str, ms: u64| {
                let mut caller = McpClient::new(&proxy.mcp);
                caller.session = client.session.clone();
                let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": {"name": "sleep", "arguments": {"ms": ms},
                               "_meta": {"progressToken": token}}});
                std::thread::spawn(move || caller.post(message))
            };
            let long = call(30, "long", 2_000);
            std::thread::sleep(Duration::from_millis(300));
            let short = call(31, "short", 400);
            for (answer, id, token) in [
                (long.join().expect("long"), 30, "long"),
                (short.join().expect("short"), 31, "short"),
            ] {
                assert_eq!(answer.status, 200, "{}", answer.raw);
                assert_eq!(answer.body["id"], id, "{}", answer.raw);
                let progress: Vec<&Value> = answer
                    .messages
                    .iter()
                    .filter(|m| m["method"] == "notifications/progress")
                    .collect();
                let tokens: Vec<&Value> = progress
                    .iter()
                    .map(|m| &m["params"]["progressToken"])
                    .collect();
                assert_eq!(tokens, [token, token], "request {id}: {}", answer.raw);
                assert_eq!(progress[1]["params"]["progress"], 1);
            }
        });
    }

    /// A client that accepts only JSON gets the response as JSON even when
    /// the server sends something before it; a body over --max-body is
    /// refused in JSON-RPC like every other refusal.
    #[test]
    fn proxy_answers_json_only_clients_in_json() {
        let (proxy, _mark) = start("jsononly", &[], &["--max-body", "16KiB"]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        let session = client.session.clone().expect("a session");
        let post = |body: String| {
            reqwest::blocking::Client::new()
                .post(&proxy.mcp)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-11-25")
                .body(body)
                .send()
                .expect("proxy answers")
        };
        let notified = post(
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                   "params": {"name": "notify", "arguments": {"message": "first"}}})
            .to_string(),
        );
        assert_eq!(notified.status().as_u16(), 200);
        let content_type = notified.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let body: Value = notified.json().expect("a JSON body");
        assert_eq!(body["id"], 5);
        assert_eq!(body["result"]["content"][0]["text"], "notified");

        let big = post(format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
            "x".repeat(20_000)
        ));
        assert_eq!(big.status().as_u16(), 413);
        let body: Value = big.json().expect("a JSON-RPC error body");
        assert_eq!(body["error"]["code"], -32600);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-body"));
    }

    /// `--tls-cert` and `--tls-key`: `/mcp` over HTTPS for a client that
    /// trusts the certificate; a client that does not, and plain HTTP, get
    /// no answer, and the proxy serves on. What cannot be served is refused
    /// at the start, saying why.
    #[test]
    fn proxy_serves_https_with_the_certificate_given() {
        let (cert, key) = (fixture("tls/localhost.pem"), fixture("tls/localhost.key"));
        let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
        let (proxy, _mark) = start(
            "tls",
            &[],
            &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
        );
        let port = proxy
            .mcp
            .strip_prefix("https://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("an https URL: {}", proxy.mcp))
            .to_owned();
        let pem = std::fs::read(&cert).expect("the certificate");
        let untrusting = reqwest::blocking::Client::new();
        let refused = untrusting.post(&proxy.mcp).body("{}").send();
        assert!(refused.is_err(), "an unknown certificate: {refused:?}");
        let plain = untrusting
            .post(format!("http://127.0.0.1:{port}/mcp"))
            .body("{}")
            .send();
        assert!(plain.is_err(), "plain HTTP on the TLS port: {plain:?}");
        let mut client = McpClient::new(&proxy.mcp).trusting(&pem);
        assert_eq!(client.initialize().status, 200);
        assert_eq!(client.echo("over TLS").text(), "Echo: over TLS");
        let localhost = format!("https://localhost:{port}/mcp");
        let mut by_name = McpClient::new(&localhost).trusting(&pem);
        assert_eq!(
            by_name.initialize().status,
            200,
            "the certificate's other name"
        );
        assert!(proxy.terminate().success());

        let up = upstream(&marker("tls-refused"));
        let missing = "/nonexistent/cert.pem";
        for (tls, says) in [
            (
                vec!["--tls-cert", &key_arg, "--tls-key", &key_arg],
                "holds no certificate",
            ),
            (
                vec!["--tls-cert", &cert_arg, "--tls-key", &cert_arg],
                "private key",
            ),
            (vec!["--tls-cert", missing, "--tls-key", &key_arg], missing),
            (vec!["--tls-cert", &cert_arg], "--tls-key"),
            (
                vec![
                    "--tls-cert",
                    &cert_arg,
                    "--tls-key",
                    &key_arg,
                    "--cluster-redis",
                    "redis://127.0.0.1:1/0",
                    "--session-key-file",
                    "/dev/null",
                ],
                "give --advertise https://",
            ),
        ] {
            let mut args = vec!["--upstream-stdio", up.as_str()];
            args.extend(tls.iter().copied());
            let said = reverse_refused(&args);
            assert!(said.contains(says), "{args:?}: {said}");
        }
    }

    /// SIGHUP reads the certificate and key again: new connections get the
    /// renewed certificate, the sessions opened before go on, and a pair
    /// that fails to load leaves the one served in place.
    #[test]
    fn proxy_reloads_its_tls_certificate_on_sighup() {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        with_watchdog(Duration::from_secs(120), || {
            let dir = tempfile::tempdir().expect("dir");
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let install = |pem: &str, private: &str| {
                std::fs::copy(fixture(pem), &cert).expect("copy the certificate");
                std::fs::copy(fixture(private), &key).expect("copy the key");
            };
            install("tls/localhost.pem", "tls/localhost.key");
            let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
            let (proxy, _mark) = start(
                "tlsreload",
                &[],
                &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
            );
            let first = std::fs::read(fixture("tls/localhost.pem")).expect("first certificate");
            let renewed = std::fs::read(fixture("tls/renewed.pem")).expect("renewed certificate");
            let both = [first.as_slice(), renewed.as_slice()].concat();
            let mut before = McpClient::new(&proxy.mcp).trusting(&both);
            assert_eq!(before.initialize().status, 200);
            let hup_until_logged = |says: &str| {
                kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("signal");
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut log = Vec::new();
                while !log.iter().any(|l: &String| l.contains(says)) {
                    assert!(Instant::now() < deadline, "no `{says}` in {log:?}");
                    std::thread::sleep(Duration::from_millis(50));
                    log.extend(proxy.log());
                }
            };
            let connects_trusting = |pem: &[u8]| {
                McpClient::new(&proxy.mcp)
                    .trusting(pem)
                    .post_raw(b"{}".to_vec(), "application/json")
                    .status
            };
            assert_eq!(connects_trusting(&first), 400, "the first certificate");

            install("tls/renewed.pem", "tls/renewed.key");
            hup_until_logged("TLS certificate reloaded");
            assert_eq!(connects_trusting(&renewed), 400, "the renewed certificate");
            let old_only = McpClient::new(&proxy.mcp)
                .trusting(&first)
                .try_post_raw(b"{}".to_vec(), "application/json");
            assert!(old_only.is_err(), "the replaced certificate: {old_only:?}");
            assert_eq!(before.echo("renewed").text(), "Echo: renewed");

            // A renewal caught half-way: the new certificate, the old key.
            install("tls/localhost.pem", "tls/renewed.key");
            hup_until_logged("keeping the TLS certificate served until now");
            assert_eq!(connects_trusting(&renewed), 400, "still the renewed one");
            assert_eq!(before.echo("kept").text(), "Echo: kept");
            assert!(proxy.terminate().success());
        });
    }

    /// What `reverse ARGS` says as it refuses to start (on any port, without
    /// an admin API).
    fn reverse_refused(args: &[&str]) -> String {
        let mut line = vec![
            "reverse",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
        ];
        line.extend(args);
        let (status, said) = run_to_exit(&line);
        assert!(!status.success(), "{args:?}: {said}");
        said
    }

    /// A batch POST as a 2025-03-26 client makes it (no MCP-Protocol-Version
    /// header, unless `version` is given): its status, whether it came as an
    /// event stream, and its messages (a JSON array's elements).
    fn post_batch(
        mcp: &str,
        session: &str,
        batch: &Value,
        accept: &str,
        version: Option<&str>,
    ) -> (u16, bool, Vec<Value>) {
        let mut request = reqwest::blocking::Client::new()
            .post(mcp)
            .header("content-type", "application/json")
            .header("accept", accept)
            .header("mcp-session-id", session)
            .body(batch.to_string());
        if let Some(version) = version {
            request = request.header("mcp-protocol-version", version);
        }
        let answer = read_answer(request.send().expect("proxy answers"), None);
        let streamed = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let messages = answer
            .messages
            .into_iter()
            .flat_map(|m| match m {
                Value::Array(elements) => elements,
                one => vec![one],
            })
            .collect();
        (answer.status, streamed, messages)
    }

    fn by_id<'m>(messages: &'m [Value], id: &Value) -> &'m Value {
        let found: Vec<&Value> = messages.iter().filter(|m| &m["id"] == id).collect();
        assert_eq!(found.len(), 1, "one answer for id {id}: {messages:?}");
        found[0]
    }

    /// MCP 2025-03-26 lets a client post a JSON-RPC batch. Each element is
    /// served as if it came alone (its own answer, its own refusal); the
    /// answers come back as one JSON array, or as one event stream when the
    /// server has more for the client on the way; the server's own batch
    /// reaches the client; later revisions are told batches are gone.
    #[test]
    fn proxy_serves_the_batches_of_2025_03_26_clients() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("batch", &["--rate-limit", "1", "--burst", "30"], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let session = client.session.clone().expect("a session");
            let both = "application/json, text/event-stream";
            let call = |id: Value, name: &str, arguments: Value| {
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments}})
            };

            // Requests, a notification and two invalid elements: every
            // request and invalid element answered, in one JSON array.
            let batch = json!([
                call(json!(1), "echo", json!({"message": "one"})),
                {"jsonrpc": "2.0", "id": "p", "method": "ping"},
                {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
                {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope"}},
                {"jsonrpc": "1.0", "id": 4, "method": "ping"},
                42,
            ]);
            let (status, streamed, messages) = post_batch(&proxy.mcp, &session, &batch, both, None);
            assert_eq!((status, streamed), (200, false), "{messages:?}");
            assert_eq!(messages.len(), 5, "{messages:?}");
            assert_eq!(
                by_id(&messages, &json!(1))["result"]["content"][0]["text"],
                "Echo: one"
            );
            assert_eq!(by_id(&messages, &json!("p"))["result"], json!({}));
            assert_eq!(by_id(&messages, &json!(3))["error"]["code"], -32602);
            assert_eq!(by_id(&messages, &json!(4))["error"]["code"], -32600);
            assert_eq!(by_id(&messages, &Value::Null)["error"]["code"], -32600);

            // The server reports progress before an answer: the client, which
            // takes a stream, gets everything on one; one that takes only JSON
            // gets the answers.
            let batch = json!([
                {"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                 "params": {"name": "sleep", "arguments": {"ms": 200},
                            "_meta": {"progressToken": "t10"}}},
                call(json!(11), "echo", json!({"message": "two"})),
            ]);
            let (status, streamed, messages) = post_batch(&proxy.mcp, &session, &batch, both, None);
            assert_eq!((status, streamed), (200, true), "{messages:?}");
            assert_eq!(messages.len(), 4, "{messages:?}");
            let progress: Vec<usize> = (0..messages.len())
                .filter(|&i| messages[i]["params"]["progressToken"] == "t10")
                .collect();
            let slept = messages.iter().position(|m| m["id"] == 10).expect("10");
            assert!(
                progress.len() == 2 && progress.iter().all(|&i| i < slept),
                "progress before its answer: {messages:?}"
            );
            assert_eq!(
                by_id(&messages, &json!(11))["result"]["content"][0]["text"],
                "Echo: two"
            );
            let (status, streamed, messages) =
                post_batch(&proxy.mcp, &session, &batch, "application/json", None);
            assert_eq!((status, streamed), (200, false), "{messages:?}");
            let ids: Vec<&Value> = messages.iter().map(|m| &m["id"]).collect();
            assert_eq!(ids.len(), 2, "answers only: {messages:?}");
            assert!(ids.contains(&&json!(10)) && ids.contains(&&json!(11)));

            // The elements run side by side: a quick answer is not held up by
            // a slow one (on a stream, it comes first).
            let batch = json!([
                call(json!(20), "sleep", json!({"ms": 1500})),
                call(json!(21), "echo", json!({"message": "quick"})),
            ]);
            let (status, streamed, messages) =
                post_batch(&proxy.mcp, &session, &batch, "text/event-stream", None);
            assert_eq!((status, streamed), (200, true), "{messages:?}");
            let ids: Vec<&Value> = messages.iter().map(|m| &m["id"]).collect();
            assert_eq!(ids, [&json!(21), &json!(20)], "{messages:?}");

            // A server's batch: its elements reach the client.
            let batch = json!([call(json!(30), "batched", json!({"message": "both"}))]);
            let (status, streamed, messages) = post_batch(&proxy.mcp, &session, &batch, both, None);
            assert_eq!((status, streamed), (200, true), "{messages:?}");
            assert_eq!(messages[0]["params"]["data"], "both", "{messages:?}");
            assert_eq!(messages[1]["result"]["content"][0]["text"], "batched");

            // Only notifications: nothing to answer.
            let batch = json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]);
            let (status, _, messages) = post_batch(&proxy.mcp, &session, &batch, both, None);
            assert_eq!(status, 202, "{messages:?}");

            // The rate limit counts every element (a bucket of 30, refilled
            // at 1 per second, half spent above): those over it are refused
            // by their id.
            let pings: Vec<Value> = (0..60)
                .map(|i| json!({"jsonrpc": "2.0", "id": 100 + i, "method": "ping"}))
                .collect();
            let (status, _, messages) = post_batch(&proxy.mcp, &session, &json!(pings), both, None);
            assert_eq!(status, 200, "{messages:?}");
            assert_eq!(messages.len(), 60, "{messages:?}");
            let limited = messages
                .iter()
                .filter(|m| m["error"]["code"] == -32029)
                .count();
            let answered = messages.iter().filter(|m| m["result"] == json!({})).count();
            assert_eq!(limited + answered, 60, "{messages:?}");
            assert!(
                limited >= 5 && answered >= 5,
                "{limited} of 60 limited: {messages:?}"
            );
            for ping in &pings {
                by_id(&messages, &ping["id"]);
            }
            // A refused notification has no answer of its own: with nothing
            // else to answer, the POST says it was refused.
            let batch = json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]);
            let (status, _, messages) = post_batch(&proxy.mcp, &session, &batch, both, None);
            assert_eq!(status, 429, "{messages:?}");
            assert_eq!(messages[0]["error"]["code"], -32029, "{messages:?}");

            // What is refused whole, with why.
            let refused = |batch: Value, version: Option<&str>, session: &str| {
                let (status, _, messages) = post_batch(&proxy.mcp, session, &batch, both, version);
                let message = messages[0]["error"]["message"].as_str().unwrap_or_default();
                (status, message.to_owned())
            };
            let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
            let (status, why) = refused(json!([ping]), Some("2025-06-18"), &session);
            assert_eq!(status, 400);
            assert!(why.contains("removed in MCP 2025-06-18"), "{why}");
            let initialize = json!({"jsonrpc": "2.0", "id": 2, "method": "initialize",
                "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}});
            let (status, why) = refused(json!([initialize]), None, &session);
            assert_eq!(status, 400);
            assert!(
                why.contains("initialize must not be part of a batch"),
                "{why}"
            );
            let (status, why) = refused(json!([]), None, &session);
            assert_eq!(status, 400);
            assert!(why.contains("empty batch"), "{why}");
            let (status, why) = refused(json!(vec![ping.clone(); 101]), None, &session);
            assert_eq!(status, 400);
            assert!(why.contains("at most 100"), "{why}");
            let (status, _) = refused(json!([ping]), None, "0123456789abcdef0123456789abcdef");
            assert_eq!(status, 404);
        });
    }

    /// A batch waiting on its upstream when its session is closed is
    /// answered then, each request with the error saying so, and its
    /// requests no longer pin the session.
    #[test]
    fn proxy_closing_a_session_answers_its_batch_in_flight() {
        with_watchdog(Duration::from_secs(120), || {
            let (proxy, _mark) = start("batchclosed", &[], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let session = client.session.clone().expect("a session");
            let sleep = |id: u64| {
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": "sleep", "arguments": {"ms": 600_000}}})
            };
            let batch = json!([sleep(1), sleep(2)]);
            let started = Instant::now();
            let mcp = proxy.mcp.clone();
            let (status, streamed, messages) = std::thread::scope(|scope| {
                let waiting = scope.spawn(|| {
                    post_batch(
                        &mcp,
                        &session,
                        &batch,
                        "application/json, text/event-stream",
                        None,
                    )
                });
                std::thread::sleep(Duration::from_millis(500));
                assert_eq!(client.delete(), 200);
                waiting.join().expect("the batch's thread")
            });
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "answered at the close"
            );
            assert_eq!((status, streamed), (200, false), "{messages:?}");
            for id in [1, 2] {
                assert_eq!(
                    by_id(&messages, &json!(id))["error"]["code"],
                    -32032,
                    "{messages:?}"
                );
            }
            assert_eq!(client.delete(), 404, "the session is gone");
        });
    }

    /// A server's response over the line limit (max(--max-body, 1 MiB))
    /// fails its own request, saying what the limit is and what raises it.
    /// A server's request over it never reaches the client, and the server
    /// is told so by its id rather than left waiting (mcp_echo's `ask`
    /// answers with the response its request got). The session and its
    /// server go on. With the id last, after the long part (the TypeScript
    /// SDK's order), the same: another request in flight waits on for its
    /// own answer.
    #[test]
    fn proxy_stdio_messages_over_the_line_limit_fail_only_what_waits_for_them() {
        let (proxy, mark) = start("longline", &[], &["--max-body", "1MiB"]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        let server = processes_with(&mark);
        assert_eq!(server.len(), 1);
        let call = |client: &mut McpClient, id: u64, tool: &str, bytes: u64, id_last: bool| {
            client.post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                               "params": {"name": tool,
                                          "arguments": {"bytes": bytes, "idLast": id_last}}}))
        };
        let names_the_limit = |message: &str| {
            assert!(
                message.contains("1048576 bytes") && message.contains("--max-body"),
                "{message}"
            );
        };
        let fits = call(&mut client, 100, "big", 1000, false);
        assert_eq!(fits.text().len(), 1000, "{}", fits.raw);
        for (id, id_last) in [(101, false), (102, true), (103, true)] {
            // Its answer streams once it takes a second: in flight, beside
            // the long answer, which must not be taken for its own.
            let beside = id_last.then(|| {
                client.request_unread(
                    "tools/call",
                    json!({"name": "sleep", "arguments": {"ms": 2_500}}),
                )
            });
            let over = call(&mut client, id, "big", 2 << 20, id_last);
            assert_eq!(over.status, 200, "{}", over.raw);
            assert_eq!(over.body["id"], id, "{}", over.raw);
            assert_eq!(over.body["error"]["code"], -32031, "{}", over.raw);
            names_the_limit(over.body["error"]["message"].as_str().unwrap_or_default());
            if let Some(beside) = beside {
                let beside = read_answer(beside, None);
                assert_eq!(beside.text(), "slept 2500 ms", "{}", beside.raw);
            }
            assert_eq!(client.echo("still here").text(), "Echo: still here");

            let asked = call(&mut client, id + 100, "ask", 2 << 20, id_last);
            assert_eq!(asked.status, 200, "{}", asked.raw);
            let got: Value = serde_json::from_str(&asked.text())
                .unwrap_or_else(|e| panic!("the server got a response ({e}): {}", asked.raw));
            assert_eq!(got["id"], format!("ask-{}", id + 100), "{got}");
            assert_eq!(got["error"]["code"], -32600, "{got}");
            names_the_limit(got["error"]["message"].as_str().unwrap_or_default());
        }
        assert_eq!(processes_with(&mark), server, "the same server process");
    }

    /// A refusal of the protocol revision still answers the request by its
    /// id, so the caller waiting on it gets it.
    #[test]
    fn proxy_unsupported_protocol_version_is_refused_by_the_request_id() {
        let (proxy, _mark) = start("badversion", &[], &[]);
        let client = McpClient::new(&proxy.mcp).with_header("mcp-protocol-version", "1999-01-01");
        let call = json!({"jsonrpc": "2.0", "id": 30, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"message": "x"}}});
        let refused = client.post_raw(call.to_string().into_bytes(), "application/json");
        assert_eq!(refused.status, 400, "{}", refused.raw);
        assert_eq!(refused.body["id"], 30, "{}", refused.raw);
        assert!(refused.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1999-01-01"));
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let refused = client.post_raw(note.to_string().into_bytes(), "application/json");
        assert_eq!(refused.status, 400);
        assert!(refused.body["id"].is_null(), "{}", refused.raw);
    }

    /// A browser page on another origin (DNS rebinding makes the proxy its
    /// own origin) gets 403 on every route, the admin API's too, and no
    /// session; this machine's pages, the origins given, and clients that
    /// send no `Origin` are served, browsers with CORS (a preflight
    /// answered, the session id exposed).
    #[test]
    fn proxy_serves_browser_origins_given_and_refuses_the_others() {
        let (proxy, _mark) = start(
            "origin",
            &[],
            &["--allowed-origin", "https://app.example.com"],
        );
        let from = |origin: &str| McpClient::new(&proxy.mcp).with_header("origin", origin);
        let mut served = 0;
        for origin in [
            "http://localhost:6274",
            "http://127.0.0.1:8080",
            "https://app.example.com",
        ] {
            let mut client = from(origin);
            assert_eq!(client.initialize().status, 200, "{origin}");
            assert_eq!(client.echo("hi").text(), "Echo: hi", "{origin}");
            served += 1;
        }
        let exposed = from("https://app.example.com").initialize();
        let header = |name: &str| {
            exposed
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            header("access-control-allow-origin"),
            "https://app.example.com"
        );
        assert!(header("access-control-expose-headers").contains("mcp-session-id"));
        served += 1;
        let preflight = |origin: &str| {
            reqwest::blocking::Client::new()
                .request(reqwest::Method::OPTIONS, &proxy.mcp)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type, mcp-session-id",
                )
                .send()
                .expect("answered")
        };
        let allowed = preflight("http://localhost:6274");
        assert_eq!(allowed.status().as_u16(), 200);
        let allows = |name: &str| {
            allowed
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            allows("access-control-allow-origin"),
            "http://localhost:6274"
        );
        assert!(allows("access-control-allow-methods").contains("POST"));
        assert!(allows("access-control-allow-headers").contains("mcp-session-id"));
        assert_eq!(preflight("http://evil.example").status().as_u16(), 403);

        let mut plain = McpClient::new(&proxy.mcp);
        assert_eq!(plain.initialize().status, 200, "no Origin: not a browser");
        served += 1;
        let session = plain.session.clone().expect("a session");

        for origin in [
            "http://evil.example:8080",
            "https://app.example.com:8443",
            "null",
        ] {
            let refused = from(origin).initialize();
            assert_eq!(refused.status, 403, "{origin}: {}", refused.raw);
            assert!(refused.body["id"].is_null(), "{}", refused.raw);
            assert_eq!(refused.body["error"]["code"], -32600, "{}", refused.raw);
            let message = refused.body["error"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(
                message.contains(origin) && message.contains("--allowed-origin"),
                "{message}"
            );
        }
        let http = reqwest::blocking::Client::new();
        let evil = "http://evil.example";
        let get = http
            .get(&proxy.mcp)
            .header("origin", evil)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .send()
            .expect("answered");
        assert_eq!(get.status().as_u16(), 403);
        let delete = http
            .delete(&proxy.mcp)
            .header("origin", evil)
            .header("mcp-session-id", &session)
            .send()
            .expect("answered");
        assert_eq!(delete.status().as_u16(), 403);
        let sessions = format!("{}/sessions", proxy.admin);
        let listed = http.get(&sessions).header("origin", evil).send();
        assert_eq!(listed.expect("answered").status().as_u16(), 403);
        let listed = http.get(&sessions).send().expect("answered");
        assert_eq!(listed.status().as_u16(), 200);
        let listed: Value = listed.json().expect("JSON");
        let count = listed.as_array().map_or(0, Vec::len);
        assert_eq!(count, served, "no session for a refused origin: {listed}");
        assert_eq!(
            plain.echo("still").text(),
            "Echo: still",
            "the DELETE was refused"
        );
        assert_eq!(
            metric(
                &proxy.metrics(),
                "shadowcat_http_requests_total",
                &[("status", "403")]
            ),
            6.0
        );
    }

    /// A POST must take application/json or text/event-stream: one that
    /// takes neither gets 406 saying so; wildcards and q=0 count.
    #[test]
    fn proxy_post_accepting_neither_json_nor_sse_gets_406() {
        let (proxy, _mark) = start("accept", &[], &[]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        let session = client.session.clone().expect("a session");
        let post = |id: u64, accept: &str| {
            reqwest::blocking::Client::new()
                .post(&proxy.mcp)
                .header("content-type", "application/json")
                .header("accept", accept)
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-11-25")
                .body(json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string())
                .send()
                .expect("proxy answers")
        };
        for (id, accept) in [
            (1, "text/plain"),
            (2, "text/html, image/*"),
            (3, "*/*;q=0"),
            (4, "application/json;q=0, text/event-stream; q=0.0"),
        ] {
            let refused = post(id, accept);
            assert_eq!(refused.status().as_u16(), 406, "{accept}");
            let body: Value = refused.json().expect("a JSON-RPC error body");
            assert_eq!(body["id"], id, "{accept}");
            assert_eq!(body["error"]["code"], -32600, "{accept}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("application/json") && message.contains("text/event-stream"),
                "{message}"
            );
        }
        for (id, accept, answered_as) in [
            (5, "application/*", "application/json"),
            (6, "text/*", "text/event-stream"),
            (7, "*/*", "application/json"),
            (8, "application/json;q=0, */*", "text/event-stream"),
        ] {
            let answer = post(id, accept);
            assert_eq!(answer.status().as_u16(), 200, "{accept}");
            let content_type = answer.headers()["content-type"]
                .to_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                content_type.starts_with(answered_as),
                "{accept}: {content_type}"
            );
        }
        assert_eq!(client.echo("still here").text(), "Echo: still here");
    }

    /// An upstream the proxy cannot use stops it at startup, instead of
    /// failing every session's `initialize` later: a command that cannot be
    /// found, or HTTP headers for a stdio server.
    #[test]
    fn proxy_reverse_refuses_to_start_with_an_upstream_it_cannot_use() {
        let cases: [(&[&str], &[&str]); 4] = [
            (
                &[
                    "--upstream-stdio",
                    "/nonexistent/server --flag 'an argument'",
                ],
                &["`/nonexistent/server`", "does not exist"],
            ),
            (
                &["--upstream-stdio", "shadowcat-no-such-server --flag"],
                &["`shadowcat-no-such-server`", "not found on PATH"],
            ),
            (
                &["--upstream-stdio", "true", "--upstream-header", "X-Key: k"],
                &["--upstream-header goes with --upstream-http"],
            ),
            (
                &[
                    "--upstream-stdio",
                    "true",
                    "--public-url",
                    "https://a.example/mcp",
                ],
                &["--public-url goes with --upstream-http"],
            ),
        ];
        for (upstream, says) in cases {
            let stderr = reverse_refused(upstream);
            for said in says {
                assert!(stderr.contains(said), "{upstream:?}: {stderr}");
            }
        }
    }

    /// An admin API other hosts can reach must have a token: it lists
    /// clients and deletes sessions.
    #[test]
    fn proxy_admin_api_off_loopback_without_a_token_is_refused() {
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args([
                "reverse",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "0.0.0.0:0",
            ])
            .args(["--upstream-stdio", "true"])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("0.0.0.0:0") && stderr.contains("--admin-token-file"),
            "{stderr}"
        );
    }

    /// SIGHUP reloads a WebAssembly policy, and with a built-in policy it is
    /// logged and nothing else: the signal's default would end the proxy and
    /// every session with it. With --policy-watch a new file is picked up on
    /// its own, and the sessions' listing names the policy now in use.
    #[test]
    fn proxy_sighup_and_policy_watch_reload_and_never_kill() {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        with_watchdog(Duration::from_secs(120), || {
            let hup = |proxy: &ProxyProcess| {
                kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGHUP).expect("signal");
            };
            let (proxy, _mark) = start("hupbuiltin", &[], &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            hup(&proxy);
            hup(&proxy);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut log = Vec::new();
            while !log.iter().any(|l: &String| l.contains("nothing to reload")) {
                assert!(Instant::now() < deadline, "no log line: {log:?}");
                std::thread::sleep(Duration::from_millis(50));
                log.extend(proxy.log());
            }
            assert_eq!(client.echo("still here").text(), "Echo: still here");
            assert!(proxy.terminate().success());

            let dir = tempfile::tempdir().expect("dir");
            let file = dir.path().join("current.wasm");
            let shipped = |name: &str| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../policies")
                    .join(name)
            };
            std::fs::copy(shipped("lfu.wasm"), &file).expect("copy");
            let file_arg = file.to_str().expect("utf-8").to_owned();
            let (proxy, _mark) = start(
                "hupwasm",
                &["--eviction-policy", &file_arg, "--policy-watch", "100ms"],
                &[],
            );
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            let listed_policy = || {
                let rows: Value = reqwest::blocking::get(format!("{}/sessions", proxy.admin))
                    .and_then(|r| r.json())
                    .expect("session rows");
                rows[0]["policy"].as_str().unwrap_or_default().to_owned()
            };
            assert_eq!(listed_policy(), "lfu");
            let reloads = || metric(&proxy.metrics(), "shadowcat_policy_hot_reloads_total", &[]);
            // A changed file, with no signal.
            std::fs::copy(shipped("sieve.wasm"), &file).expect("copy");
            let deadline = Instant::now() + Duration::from_secs(20);
            while reloads() < 1.0 {
                assert!(Instant::now() < deadline, "the new file was not picked up");
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(listed_policy(), "sieve");
            hup(&proxy);
            let deadline = Instant::now() + Duration::from_secs(20);
            while reloads() < 2.0 {
                assert!(Instant::now() < deadline, "SIGHUP did not reload");
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(client.echo("after reloads").text(), "Echo: after reloads");
            assert!(proxy.terminate().success());
        });
    }

    /// A restart continues the access log, with times that never go back,
    /// instead of wiping the traffic recorded so far; a file that is not an
    /// access log is refused rather than appended to.
    #[test]
    fn proxy_access_log_is_continued_across_restarts() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("access.bin");
        let log_arg = log.to_str().expect("utf-8").to_owned();
        let mut records_after = Vec::new();
        for run in 0..2 {
            let (proxy, _mark) = start("accessappend", &[], &["--access-log", &log_arg]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            assert_eq!(client.echo(&format!("run {run}")).status, 200);
            if run == 0 {
                // A later first record than the second run's clock would give.
                std::thread::sleep(Duration::from_millis(1_100));
                assert_eq!(client.echo("later").status, 200);
            }
            assert!(proxy.terminate().success());
            records_after.push(std::fs::metadata(&log).expect("log").len() / 24);
        }
        assert!(records_after[0] >= 3, "{records_after:?}");
        assert!(
            records_after[1] >= records_after[0] + 3,
            "the second run added to the first: {records_after:?}"
        );
        let bytes = std::fs::read(&log).expect("log");
        let times: Vec<u32> = bytes
            .chunks_exact(24)
            .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert!(times.last() >= Some(&1), "{times:?}");

        // A log whose last write was cut short: the torn record goes, the
        // rest is continued.
        let whole = std::fs::metadata(&log).expect("log").len();
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("log");
        std::io::Write::write_all(&mut torn, &[7u8; 10]).expect("append");
        drop(torn);
        let (proxy, _mark) = start("accesstorn", &[], &["--access-log", &log_arg]);
        let mut client = McpClient::new(&proxy.mcp);
        assert_eq!(client.initialize().status, 200);
        assert!(proxy.terminate().success());
        let bytes = std::fs::read(&log).expect("log");
        assert_eq!(bytes.len() % 24, 0, "{} bytes", bytes.len());
        assert!(bytes.len() as u64 > whole, "the third run added records");
        assert!(
            bytes[whole as usize..]
                .chunks_exact(24)
                .all(|r| r[12..16] == 1u32.to_le_bytes()),
            "records after the cut are whole and aligned"
        );

        // Not a log of the proxy's: refused, and left as it was.
        let odd = dir.path().join("odd.bin");
        std::fs::write(&odd, [0u8; 25]).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_shadowcat"))
            .args([
                "reverse",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "off",
            ])
            .args(["--upstream-stdio", "true", "--access-log"])
            .arg(&odd)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("not an access log"), "{stderr}");
        assert_eq!(
            std::fs::metadata(&odd).expect("odd").len(),
            25,
            "left as it was"
        );
    }

    mod http_upstream {
        use std::time::{Duration, Instant};

        use serde_json::json;

        use serde_json::Value;

        use crate::common::http_server::{Authorizer, HttpMcpServer, AUTHORIZATION_SERVER};
        use crate::common::peers::{free_port, path_str};
        use crate::common::proxy::{
            assert_rpc_error, metric, Answer, ForwardProcess, McpClient, ProxyProcess,
        };
        use crate::common::with_watchdog;

        fn proxy_for(server: &HttpMcpServer, global: &[&str]) -> ProxyProcess {
            ProxyProcess::start(global, &["--upstream-http", &server.url])
        }

        /// A proxy for `server`, and a client whose session it opened.
        fn proxy_and_session(server: &HttpMcpServer) -> (ProxyProcess, McpClient) {
            let proxy = proxy_for(server, &[]);
            let mut client = McpClient::new(&proxy.mcp);
            assert_eq!(client.initialize().status, 200);
            (proxy, client)
        }

        /// A proxy for `server` with these `reverse` options besides.
        fn proxy_with(server: &HttpMcpServer, reverse: &[&str]) -> ProxyProcess {
            let mut args = vec!["--upstream-http", server.url.as_str()];
            args.extend(reverse);
            ProxyProcess::start(&[], &args)
        }

        #[test]
        fn proxy_http_upstream_session_is_its_own_and_deleted_on_teardown() {
            let server = HttpMcpServer::start();
            let proxy = proxy_for(&server, &[]);
            let mut client = McpClient::new(&proxy.mcp);
            let init = client.initialize();
            assert_eq!(init.status, 200, "{:?}", init.body);
            assert_eq!(init.body["result"]["serverInfo"]["name"], "http-echo");
            let ours = client.session.clone().expect("our id");
            assert_eq!(client.echo("over http").text(), "Echo: over http");
            let seen = server.state.seen.lock().clone();
            let upstream_ids: Vec<Option<String>> =
                seen.iter().map(|s| s.session.clone()).collect();
            assert_eq!(upstream_ids[0], None, "initialize carries no session");
            assert!(
                upstream_ids[1..]
                    .iter()
                    .all(|s| s.as_deref() == Some("upstream-session-1")),
                "later requests carry the upstream's own id: {upstream_ids:?}"
            );
            assert!(
                seen.iter()
                    .all(|s| s.session.as_deref() != Some(ours.as_str())),
                "our id never goes upstream"
            );
            assert_eq!(client.delete(), 200);
            let deadline = Instant::now() + Duration::from_secs(10);
            while server.state.deleted.lock().is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the upstream session was deleted"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(
                server.state.deleted.lock().clone(),
                vec!["upstream-session-1"]
            );
            // MCP wants the revision on every request after initialize, the
            // teardown's DELETE included, which no client request carries.
            let seen = server.state.seen.lock().clone();
            let named = |method: &str| {
                seen.iter()
                    .rev()
                    .find(|s| s.method == method)
                    .and_then(|s| s.protocol_version.clone())
            };
            assert!(named("POST").is_some(), "{seen:?}");
            assert_eq!(named("DELETE"), named("POST"), "{seen:?}");
            assert_eq!(client.echo("x").status, 404);
        }

        /// Waits (bounded) for the upstream to have deleted `session`.
        fn wait_deleted(server: &HttpMcpServer, session: &str) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !server.state.deleted.lock().iter().any(|s| s == session) {
                assert!(
                    Instant::now() < deadline,
                    "the upstream session {session} was deleted"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Where a proxy whose `/mcp` is `mcp` serves its OAuth metadata.
        fn our_metadata(mcp: &str) -> String {
            let origin = mcp.strip_suffix("/mcp").expect("an /mcp URL");
            format!("{origin}/.well-known/oauth-protected-resource/mcp")
        }

        fn metadata_of(url: &str) -> (u16, serde_json::Value) {
            let answer = reqwest::blocking::get(url).expect("the proxy answers");
            let status = answer.status().as_u16();
            (status, answer.json().unwrap_or_default())
        }

        /// An upstream that requires OAuth: its challenges come back naming
        /// the proxy's metadata (the rest of them as they were), which is
        /// the upstream's (found where its challenge says, asked before any
        /// client was refused) for the proxy's URL, so that a client checking
        /// the resource it is given goes on; `--public-url` names the proxy
        /// as clients reach it. An upstream without metadata: 404.
        #[test]
        fn proxy_http_upstream_oauth_metadata_names_the_proxy() {
            let server = HttpMcpServer::start();
            *server.state.require.lock() = Some("Bearer good".into());
            for public in [None, Some("https://mcp.example.com/mcp")] {
                let reverse = match public {
                    Some(url) => vec!["--public-url", url],
                    None => vec![],
                };
                let proxy = proxy_with(&server, &reverse);
                let resource = public.unwrap_or(&proxy.mcp).to_owned();
                let served = our_metadata(&proxy.mcp);
                let root = served.strip_suffix("/mcp").expect("a path").to_owned();
                for url in [&served, &root] {
                    let (status, metadata) = metadata_of(url);
                    assert_eq!(status, 200, "{url}: {metadata}");
                    assert_eq!(metadata["resource"], resource.as_str(), "{metadata}");
                    assert_eq!(metadata["authorization_servers"][0], AUTHORIZATION_SERVER);
                    assert_eq!(metadata["scopes_supported"][0], "mcp");
                }
                let refused = McpClient::new(&proxy.mcp).initialize();
                assert_eq!(refused.status, 401, "{}", refused.raw);
                let expected = format!(
                    r#"Bearer realm="http-echo", resource_metadata="{}", scope="mcp""#,
                    our_metadata(&resource)
                );
                assert_eq!(challenge(&refused.headers), expected);
            }
            let open = HttpMcpServer::start();
            let proxy = proxy_for(&open, &[]);
            let answer = reqwest::blocking::get(our_metadata(&proxy.mcp)).expect("an answer");
            assert_eq!(
                answer.status().as_u16(),
                404,
                "an upstream without metadata"
            );
            let said = answer.text().unwrap_or_default();
            let upstream = open.url.strip_suffix("/mcp").unwrap_or(&open.url);
            assert!(
                !said.contains(upstream),
                "the upstream's address stays inside: {said}"
            );
        }

        fn challenge(answer: &reqwest::header::HeaderMap) -> String {
            answer
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }

        /// A client's `Authorization` reaches the upstream on every request,
        /// the teardown's DELETE included; the upstream's 401 comes back with
        /// its `WWW-Authenticate`, to a POST and to a GET stream.
        #[test]
        fn proxy_http_upstream_passes_credentials_and_their_refusal_on() {
            let server = HttpMcpServer::start();
            *server.state.require.lock() = Some("Bearer good".into());
            let proxy = proxy_for(&server, &[]);
            let refused = McpClient::new(&proxy.mcp).initialize();
            assert_eq!(refused.status, 401, "{}", refused.raw);
            assert!(challenge(&refused.headers).contains(&our_metadata(&proxy.mcp)));

            let mut client = McpClient::new(&proxy.mcp).with_header("authorization", "Bearer good");
            assert_eq!(client.initialize().status, 200);
            assert_eq!(client.echo("authorised").text(), "Echo: authorised");
            let stream = reqwest::blocking::Client::new()
                .get(&proxy.mcp)
                .header("accept", "text/event-stream")
                .header("authorization", "Bearer stale")
                .header("mcp-session-id", client.session.as_deref().expect("id"))
                .header("mcp-protocol-version", "2025-11-25")
                .send()
                .expect("the proxy answers");
            assert_eq!(stream.status().as_u16(), 401);
            assert!(challenge(stream.headers()).contains(&our_metadata(&proxy.mcp)));
            // The latest credentials are the ones the teardown uses.
            assert_eq!(client.echo("again").text(), "Echo: again");
            assert_eq!(client.delete(), 200);
            wait_deleted(&server, "upstream-session-1");
            let seen = server.state.seen.lock().clone();
            let sent: Vec<(&str, Option<&str>)> = seen
                .iter()
                .map(|s| (s.method.as_str(), s.authorization.as_deref()))
                .collect();
            assert_eq!(
                sent,
                [
                    ("POST", None),
                    ("POST", Some("Bearer good")),
                    ("POST", Some("Bearer good")),
                    ("POST", Some("Bearer good")),
                    ("GET", Some("Bearer stale")),
                    ("POST", Some("Bearer good")),
                    ("DELETE", Some("Bearer good")),
                ]
            );
        }

        /// `--upstream-header` goes with every request, in place of the
        /// client's header of the same name.
        #[test]
        fn proxy_http_upstream_headers_given_replace_the_clients() {
            let server = HttpMcpServer::start();
            *server.state.require.lock() = Some("Bearer key".into());
            let proxy = proxy_with(&server, &["--upstream-header", "Authorization: Bearer key"]);
            let mut client = McpClient::new(&proxy.mcp).with_header("authorization", "Bearer mine");
            assert_eq!(client.initialize().status, 200);
            assert_eq!(client.echo("keyed").text(), "Echo: keyed");
            assert_eq!(client.delete(), 200);
            wait_deleted(&server, "upstream-session-1");
            let seen = server.state.seen.lock().clone();
            assert_eq!(seen.len(), 4, "{seen:?}");
            assert!(
                seen.iter()
                    .all(|s| s.authorization.as_deref() == Some("Bearer key")),
                "{seen:?}"
            );
        }

        #[test]
        fn proxy_http_upstream_session_lost_upstream_closes_ours_with_404() {
            let server = HttpMcpServer::start();
            let (proxy, mut client) = proxy_and_session(&server);
            server.expire("upstream-session-1");
            assert_eq!(
                client.echo("x").status,
                404,
                "the upstream's 404 becomes ours"
            );
            assert_eq!(client.echo("x").status, 404, "and the session is gone");
            let scrape = proxy.metrics();
            assert_eq!(
                metric(
                    &scrape,
                    "shadowcat_sessions_removed_total",
                    &[("cause", "upstream-failed")]
                ),
                1.0
            );
            assert_eq!(client.initialize().status, 200, "a re-initialize works");
            assert_eq!(client.echo("y").text(), "Echo: y");
        }

        /// An echo through a proxy, answered by the test server with the
        /// events `how` asks for (`stream`, `batch`).
        fn echo_answered_as(how: &str, message: &str) -> Answer {
            let server = HttpMcpServer::start();
            let (_proxy, mut client) = proxy_and_session(&server);
            client.request(
                "tools/call",
                json!({"name": "echo", "arguments": {"message": message, how: true}}),
            )
        }

        #[test]
        fn proxy_http_upstream_sse_answers_pass_through_with_event_ids() {
            let answer = echo_answered_as("stream", "streamed");
            assert_eq!(answer.status, 200);
            assert_eq!(
                answer
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("text/event-stream")
            );
            assert_eq!(
                answer.messages.len(),
                2,
                "the notification, then the answer"
            );
            assert_eq!(answer.messages[0]["method"], "notifications/progress");
            assert_eq!(answer.text(), "Echo: streamed");
            for id in ["id: prime-1", "id: ev-2", "id: ev-3"] {
                assert!(
                    answer.raw.contains(id),
                    "event ids kept for resumption: {}",
                    answer.raw
                );
            }
        }

        /// An event holding a batch reaches the client as its messages,
        /// the event's id on the last of them.
        #[test]
        fn proxy_http_upstream_batch_in_an_event_reaches_the_client_as_its_messages() {
            let answer = echo_answered_as("batch", "batched");
            assert_eq!(answer.status, 200, "{}", answer.raw);
            assert_eq!(answer.messages.len(), 2, "{}", answer.raw);
            assert_eq!(answer.messages[0]["method"], "notifications/progress");
            assert_eq!(answer.text(), "Echo: batched");
            let events: Vec<&str> = answer.raw.split("\n\n").collect();
            assert!(
                !events[0].contains("id:") && events[1].contains("id: ev-b"),
                "the id on the last message: {}",
                answer.raw
            );
        }

        /// The elements of a batch go upstream as POSTs of their own, side
        /// by side: an answer the server gives at once comes before one it
        /// holds, though listed after it.
        #[test]
        fn proxy_http_upstream_batch_answers_come_as_they_are_given() {
            let server = HttpMcpServer::start();
            let (proxy, client) = proxy_and_session(&server);
            let echo = |id: u64, arguments: serde_json::Value| {
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                       "params": {"name": "echo", "arguments": arguments}})
            };
            let batch = json!([
                echo(1, json!({"message": "late", "delay_ms": 1500})),
                echo(2, json!({"message": "at once"})),
            ]);
            let answer = McpClient::new(&proxy.mcp)
                .with_header(
                    "mcp-session-id",
                    client.session.as_deref().unwrap_or_default(),
                )
                .post_raw(batch.to_string().into_bytes(), "application/json");
            assert_eq!(answer.status, 200, "{}", answer.raw);
            let answers = answer.messages.first().and_then(|m| m.as_array());
            let texts: Vec<&str> = answers
                .into_iter()
                .flatten()
                .filter_map(|m| m["result"]["content"][0]["text"].as_str())
                .collect();
            assert_eq!(texts, ["Echo: at once", "Echo: late"], "{}", answer.raw);
            let posts = server
                .state
                .seen
                .lock()
                .iter()
                .filter(|seen| seen.rpc_method.as_deref() == Some("tools/call"))
                .count();
            assert_eq!(posts, 2, "one POST per element");
        }

        #[test]
        fn proxy_http_upstream_stateless_era_forwards_its_headers_unchanged() {
            let server = HttpMcpServer::start();
            let proxy = proxy_with(&server, &["--client-key", "header:x-api-key"]);
            let mut client = McpClient::new(&proxy.mcp)
                .with_header("mcp-protocol-version", "2026-07-28")
                .with_header("mcp-method", "tools/call")
                .with_header("mcp-name", "echo")
                .with_header("x-api-key", "k1");
            assert_eq!(client.echo("new era").text(), "Echo: new era");
            let seen = server.state.seen.lock().clone();
            let last = seen.last().expect("a request");
            assert_eq!(last.protocol_version.as_deref(), Some("2026-07-28"));
            assert_eq!(last.mcp_method.as_deref(), Some("tools/call"));
            assert_eq!(last.mcp_name.as_deref(), Some("echo"));
            assert_eq!(last.session, None, "no protocol session upstream");
        }

        /// Reads what `forward` writes until every id of `ids` is answered;
        /// everything read, in order.
        fn read_until_answered(forward: &mut ForwardProcess, ids: &[u64]) -> Vec<Value> {
            let mut read = Vec::new();
            while !ids
                .iter()
                .all(|id| read.iter().any(|m: &Value| m["id"] == *id))
            {
                read.push(forward.read().expect("the proxy writes on"));
            }
            read
        }

        const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

        /// `forward http`: a stdio client reaches an HTTP server through a
        /// session of its own there, with the credentials given, the
        /// revision agreed on every later request, requests side by side,
        /// event streams relayed, the rate limit applied here, and the
        /// server's session deleted when the client is done.
        #[test]
        fn proxy_forward_http_bridges_a_stdio_client_to_an_http_server() {
            with_watchdog(Duration::from_secs(60), || {
                let server = HttpMcpServer::start();
                *server.state.require.lock() = Some("Bearer k1".into());
                let mut forward = ForwardProcess::http(
                    &["--rate-limit", "1", "--burst", "4"],
                    &[&server.url, "--upstream-header", "Authorization: Bearer k1"],
                );
                forward.send(INITIALIZE);
                let init = forward.read().expect("initialize answered");
                assert_eq!(init["result"]["serverInfo"]["name"], "http-echo", "{init}");
                forward.send(INITIALIZED);
                // A slow streamed answer, then a quick one: the quick one is
                // not held behind it.
                forward.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"slow","stream":true,"delay_ms":500}}}"#);
                forward.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"quick"}}}"#);
                let read = read_until_answered(&mut forward, &[2, 3]);
                let at = |id: u64| read.iter().position(|m| m["id"] == id).expect("answered");
                assert!(at(3) < at(2), "side by side: {read:?}");
                assert_eq!(read[at(2)]["result"]["content"][0]["text"], "Echo: slow");
                let progress = read
                    .iter()
                    .position(|m| m["method"] == "notifications/progress")
                    .expect("the stream's notification");
                assert!(progress < at(2), "{read:?}");
                // The burst of 4 is spent by the fourth request; the fifth is
                // refused here.
                forward.send(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
                assert_eq!(forward.read().expect("pong")["id"], 4);
                forward.send(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
                let refused = forward.read().expect("refused");
                assert_eq!(refused["id"], 5);
                assert_eq!(refused["error"]["code"], -32029, "{refused}");

                let (status, rest, log) = forward.finish(Duration::from_secs(20));
                assert!(status.success(), "{status:?}: {log}");
                assert!(rest.is_empty(), "{rest:?}");
                let seen = server.state.seen.lock().clone();
                let session = "upstream-session-1";
                assert_eq!(*server.state.deleted.lock(), vec![session.to_owned()]);
                assert!(
                    seen.iter()
                        .all(|r| r.authorization.as_deref() == Some("Bearer k1")),
                    "{seen:?}"
                );
                // The DELETE too: MCP asks for the header on every request
                // after initialize.
                for later in &seen[1..] {
                    assert_eq!(later.session.as_deref(), Some(session), "{later:?}");
                    assert_eq!(
                        later.protocol_version.as_deref(),
                        Some("2025-11-25"),
                        "{later:?}"
                    );
                }
                let at = |method: &str| {
                    seen.iter()
                        .position(|r| r.rpc_method.as_deref() == Some(method))
                };
                assert!(
                    at("notifications/initialized") < at("tools/call"),
                    "the notification first, as the client wrote it: {seen:?}"
                );
                let gets = seen.iter().filter(|r| r.method == "GET").count();
                assert_eq!(gets, 1, "one GET, which 405 ends: {seen:?}");
                assert_eq!(seen.iter().filter(|r| r.method == "DELETE").count(), 1);
            });
        }

        /// `forward http` authorises itself with OAuth when the server
        /// answers 401: it registers (as the confidential client this server
        /// makes of it, its secret sent with HTTP Basic), prints the URL to
        /// open (followed here as a browser would), and sends the token it
        /// gets. A token the
        /// server stops taking is refreshed without a browser; when the
        /// refresh is refused, the browser step runs again, with the same
        /// registration. A 403 for want of a scope runs the browser step
        /// for it. The session's DELETE carries the latest token.
        #[test]
        fn proxy_forward_http_authorises_with_oauth_and_refreshes() {
            with_watchdog(Duration::from_secs(60), || {
                let server = HttpMcpServer::start();
                *server.state.require.lock() = Some("Bearer none yet".into());
                *server.state.oauth.lock() = Some(Authorizer::confidential());
                let store = tempfile::tempdir().expect("a directory");
                let mut forward = ForwardProcess::http_with_env(
                    &[],
                    &[&server.url, "--oauth-store", &path_str(store.path())],
                    &[("BROWSER", "true")],
                );
                let grants = || {
                    let oauth = server.state.oauth.lock();
                    let oauth = oauth.as_ref().expect("the authoriser");
                    (oauth.registrations, oauth.grants.clone())
                };
                forward.send(INITIALIZE);
                forward.follow_authorisation(Duration::from_secs(20));
                assert!(forward.read().expect("initialized")["result"].is_object());
                forward.send(INITIALIZED);
                assert_eq!(grants(), (1, vec!["authorization_code".to_owned()]));

                // The server stops taking t1: refreshed, no browser. Requests
                // refused side by side share one refresh.
                *server.state.require.lock() = Some("Bearer revoked".into());
                *server.state.refusal_delay.lock() = Duration::from_millis(300);
                for id in [2, 20, 21, 22] {
                    forward.send(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
                }
                let answered = read_until_answered(&mut forward, &[2, 20, 21, 22]);
                assert!(
                    answered.iter().all(|m| m["result"].is_object()),
                    "{answered:?}"
                );
                assert_eq!(grants().1, ["authorization_code", "refresh_token"]);
                *server.state.refusal_delay.lock() = Duration::ZERO;

                // And t2, with refreshes refused: the browser again.
                server
                    .state
                    .oauth
                    .lock()
                    .as_mut()
                    .expect("the authoriser")
                    .refuse_refresh = true;
                *server.state.require.lock() = Some("Bearer revoked".into());
                forward.send(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#);
                forward.follow_authorisation(Duration::from_secs(20));
                assert_eq!(forward.read().expect("pong")["id"], 3);
                assert_eq!(
                    grants(),
                    (
                        1,
                        vec![
                            "authorization_code".to_owned(),
                            "refresh_token".to_owned(),
                            "refresh_token".to_owned(),
                            "authorization_code".to_owned(),
                        ]
                    ),
                    "one registration, kept"
                );

                // A scope t3 lacks (403 insufficient_scope): no refresh, the
                // browser, asked for the scopes the challenge names.
                *server.state.step_up.lock() = Some("admin".into());
                forward.send(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
                let asked = forward.follow_authorisation(Duration::from_secs(20));
                assert!(asked.as_str().contains("scope=mcp+admin"), "{asked}");
                assert_eq!(forward.read().expect("pong")["id"], 4);
                let (_, granted) = grants();
                assert_eq!(granted.len(), 5, "{granted:?}");
                assert_eq!(granted[4], "authorization_code");

                let (status, _, log) = forward.finish(Duration::from_secs(20));
                assert!(status.success(), "{status:?} {log}");
                let seen = server.state.seen.lock().clone();
                let delete = seen
                    .iter()
                    .rfind(|r| r.method == "DELETE")
                    .expect("a DELETE");
                assert_eq!(delete.authorization.as_deref(), Some("Bearer t4"));
            });
        }

        /// A client secret file that cannot be read, or holds nothing, stops
        /// the run before it starts, naming the file.
        #[test]
        fn proxy_forward_http_refuses_a_missing_or_empty_client_secret() {
            with_watchdog(Duration::from_secs(30), || {
                let dir = tempfile::tempdir().expect("a directory");
                let empty = dir.path().join("secret");
                std::fs::write(&empty, "\n").expect("written");
                let missing = dir.path().join("none");
                for (file, says) in [(&empty, "is empty"), (&missing, "cannot read")] {
                    let file = path_str(file);
                    let args = [
                        "http://127.0.0.1:1/mcp",
                        "--oauth-client-id",
                        "x",
                        "--oauth-client-secret-file",
                        &file,
                    ];
                    let (status, _, log) =
                        ForwardProcess::http(&[], &args).finish(Duration::from_secs(10));
                    assert!(!status.success(), "{log}");
                    assert!(log.contains(says) && log.contains(&file), "{log}");
                }
            });
        }

        /// A server that ends the session (404 for its id: it expired, or the
        /// server restarted) gets a new one, as MCP asks of its clients: the
        /// client's `initialize` and `initialized` go again, without the old
        /// id, then its log level and the subscriptions it still holds, and
        /// the request goes once more on the new session. The client, which
        /// on stdio has no session to start, sees only its answers.
        /// Requests that find the session gone together start one between
        /// them. A new session the server refuses is the request's error,
        /// and the run goes on: the next request tries again. A server
        /// stream that ends each session is given one new session, not one
        /// after another.
        #[test]
        fn proxy_forward_http_starts_a_new_session_when_the_server_ends_its_own() {
            with_watchdog(Duration::from_secs(60), || {
                let server = HttpMcpServer::start();
                let mut forward = ForwardProcess::http(&[], &[&server.url]);
                forward.send(INITIALIZE);
                assert!(forward.read().expect("initialized")["result"].is_object());
                forward.send(INITIALIZED);
                forward.send(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
                assert_eq!(forward.read().expect("pong")["id"], 2);
                // What the session is given again: the log level, and the
                // subscriptions still held.
                forward.send(r#"{"jsonrpc":"2.0","id":4,"method":"logging/setLevel","params":{"level":"debug"}}"#);
                for (id, method, uri) in [
                    (5, "subscribe", "file:///a"),
                    (6, "subscribe", "file:///b"),
                    (7, "unsubscribe", "file:///a"),
                    (8, "subscribe", "file:///missing"),
                ] {
                    forward.send(&format!(
                        r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/{method}","params":{{"uri":"{uri}"}}}}"#
                    ));
                }
                let set_up = read_until_answered(&mut forward, &[4, 5, 6, 7, 8]);
                let refused = set_up.iter().filter(|m| m["error"].is_object()).count();
                assert_eq!(refused, 1, "the missing resource's: {set_up:?}");

                server.expire("upstream-session-1");
                forward.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"again"}}}"#);
                let answer = forward.read().expect("an answer");
                assert_eq!(answer["id"], 3, "no second initialize answer: {answer}");
                assert_eq!(
                    answer["result"]["content"][0]["text"], "Echo: again",
                    "{answer}"
                );
                let initializes = |server: &HttpMcpServer| {
                    let seen = server.state.seen.lock();
                    seen.iter()
                        .filter(|r| r.rpc_method.as_deref() == Some("initialize"))
                        .cloned()
                        .collect::<Vec<_>>()
                };
                let again = initializes(&server);
                assert_eq!(again.len(), 2, "{again:?}");
                assert_eq!(again[1].session, None, "a new session names no old one");
                {
                    let seen = server.state.seen.lock();
                    let after: Vec<_> = seen
                        .iter()
                        .skip_while(|r| r.rpc_method.as_deref() != Some("tools/call"))
                        .map(|r| (r.rpc_method.clone(), r.session.clone()))
                        .collect();
                    let call = || Some("tools/call".to_owned());
                    let on = |n: u32| Some(format!("upstream-session-{n}"));
                    assert_eq!(
                        after,
                        [
                            (call(), on(1)),
                            (Some("initialize".into()), None),
                            (Some("notifications/initialized".into()), on(2)),
                            (Some("logging/setLevel".into()), on(2)),
                            (Some("resources/subscribe".into()), on(2)),
                            (Some("resources/subscribe".into()), on(2)),
                            (call(), on(2)),
                        ],
                        "{seen:?}"
                    );
                    let again = |method: &str| {
                        seen.iter()
                            .rfind(|r| r.rpc_method.as_deref() == Some(method))
                            .and_then(|r| r.rpc_params.clone())
                    };
                    assert_eq!(again("logging/setLevel"), Some(json!({"level": "debug"})));
                    let subscribed: Vec<_> = seen
                        .iter()
                        .filter(|r| r.session == on(2))
                        .filter(|r| r.rpc_method.as_deref() == Some("resources/subscribe"))
                        .map(|r| r.rpc_params.clone())
                        .collect();
                    assert_eq!(
                        subscribed,
                        [
                            Some(json!({"uri": "file:///b"})),
                            Some(json!({"uri": "file:///missing"}))
                        ]
                    );
                }

                // Four requests find it gone together: one new session,
                // which agrees to another revision, named from then on.
                server.expire("upstream-session-2");
                *server.state.agrees_to.lock() = Some("2025-06-18".into());
                for id in 10..14 {
                    forward.send(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
                }
                let read = read_until_answered(&mut forward, &[10, 11, 12, 13]);
                assert!(read.iter().all(|m| m["result"].is_object()), "{read:?}");
                assert_eq!(initializes(&server).len(), 3);
                {
                    let seen = server.state.seen.lock();
                    let last = seen.last().expect("the last ping");
                    assert_eq!(last.session.as_deref(), Some("upstream-session-3"));
                    assert_eq!(last.protocol_version.as_deref(), Some("2025-06-18"));
                }
                *server.state.agrees_to.lock() = None;

                // A new session refused: that request's error, then the next
                // request starts one.
                server.expire("upstream-session-3");
                *server.state.refuse_initialize.lock() = true;
                forward.send(r#"{"jsonrpc":"2.0","id":20,"method":"ping"}"#);
                let refused = forward.read().expect("an answer");
                assert_eq!(refused["id"], 20, "{refused}");
                assert_rpc_error(&refused, -32031, "ended the session");
                let said = refused["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    said.contains("HTTP 503") && said.contains("maintenance"),
                    "{said}"
                );
                *server.state.refuse_initialize.lock() = false;
                forward.send(r#"{"jsonrpc":"2.0","id":21,"method":"ping"}"#);
                assert_eq!(forward.read().expect("pong")["id"], 21);

                let (status, rest, log) = forward.finish(Duration::from_secs(20));
                assert!(status.success(), "{status:?}: {log}");
                assert!(rest.is_empty(), "{rest:?}");
                assert!(log.contains("the MCP server ended the session"), "{log}");
                assert!(
                    log.contains("agreed to revision 2025-06-18, not 2025-11-25"),
                    "{log}"
                );
                // The refused subscription, again on each new session; the
                // session stood without it.
                let refused_again = "resources/subscribe again: ";
                assert_eq!(log.matches(refused_again).count(), 3, "{log}");
                assert!(log.contains("Resource not found"), "{log}");
                assert_eq!(*server.state.deleted.lock(), ["upstream-session-4"]);

                // A server whose stream ends every session it is opened in:
                // the stream finds the session gone and starts one, which
                // its stream ends too. One new session, not one a second.
                let server = HttpMcpServer::start();
                *server.state.streams_end_sessions.lock() = true;
                let mut forward = ForwardProcess::http(&[], &[&server.url]);
                forward.send(INITIALIZE);
                assert!(forward.read().expect("initialized")["result"].is_object());
                forward.send(INITIALIZED);
                let gets = || {
                    let seen = server.state.seen.lock();
                    seen.iter().filter(|r| r.method == "GET").count()
                };
                while gets() < 2 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // The stream's retries wait a second, then two.
                std::thread::sleep(Duration::from_millis(2500));
                assert_eq!(gets(), 2);
                assert_eq!(initializes(&server).len(), 2);
                forward.send(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
                assert_eq!(forward.read().expect("pong")["id"], 2);
                let (status, _, log) = forward.finish(Duration::from_secs(20));
                assert!(status.success(), "{status:?}: {log}");
                assert!(log.contains("not listening"), "{log}");
            });
        }

        /// What goes wrong on the way to an HTTP server reaches the client
        /// as errors by its requests' ids: a refusal (naming the status and
        /// what to give, with OAuth failing and without it), an
        /// authorisation server that takes no registration (naming the
        /// options for a client registered by hand, which then works), and
        /// an unreachable server.
        #[test]
        fn proxy_forward_http_tells_the_client_what_the_server_refused() {
            with_watchdog(Duration::from_secs(60), || {
                let server = HttpMcpServer::start();
                *server.state.require.lock() = Some("Bearer k1".into());
                // OAuth first: the server's metadata names an authorisation
                // server that cannot be reached, so the flow fails.
                let store = tempfile::tempdir().expect("a directory");
                let store = path_str(store.path());
                for (oauth, said_also) in [(None, "OAuth failed"), (Some("--no-oauth"), "")] {
                    let mut args = vec![server.url.as_str(), "--oauth-store", &store];
                    args.extend(oauth);
                    let mut forward = ForwardProcess::http(&[], &args);
                    forward.send(INITIALIZE);
                    let refused = forward.read().expect("an answer");
                    let said = refused["error"]["message"].as_str().unwrap_or_default();
                    assert_eq!(refused["id"], 1, "{refused}");
                    assert!(
                        said.contains("HTTP 401")
                            && said.contains("--upstream-header")
                            && said.contains(said_also),
                        "{oauth:?}: {said}"
                    );
                    let (status, _, log) = forward.finish(Duration::from_secs(20));
                    assert!(status.success(), "no session was opened: {status:?} {log}");
                }

                // An authorisation server without dynamic registration: the
                // client registered by hand is given, with its port.
                let registered = HttpMcpServer::start();
                *registered.state.require.lock() = Some("Bearer none yet".into());
                *registered.state.oauth.lock() = Some(Authorizer::without_registration());
                let mut forward =
                    ForwardProcess::http(&[], &[&registered.url, "--oauth-store", "off"]);
                forward.send(INITIALIZE);
                let refused = forward.read().expect("an answer");
                let said = refused["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    said.contains("no dynamic client registration")
                        && said.contains("--oauth-client-id ID --oauth-callback-port PORT"),
                    "{said}"
                );
                drop(forward);
                let port = free_port().to_string();
                let mut forward = ForwardProcess::http_with_env(
                    &[],
                    &[
                        &registered.url,
                        "--oauth-store",
                        "off",
                        "--oauth-client-id",
                        "by-hand",
                        "--oauth-callback-port",
                        &port,
                    ],
                    &[("BROWSER", "true")],
                );
                forward.send(INITIALIZE);
                let url = forward.follow_authorisation(Duration::from_secs(20));
                assert!(
                    url.as_str().contains("client_id=by-hand")
                        && url
                            .as_str()
                            .contains(&format!("127.0.0.1%3A{port}%2Fcallback")),
                    "{url}"
                );
                assert!(forward.read().expect("initialized")["result"].is_object());
                drop(forward);

                let mut nowhere = ForwardProcess::http(&[], &["http://127.0.0.1:1/mcp"]);
                nowhere.send(INITIALIZE);
                let unreachable = nowhere.read().expect("an answer");
                assert_rpc_error(&unreachable, -32031, "cannot reach");
                drop(nowhere);
            });
        }
    }
}
