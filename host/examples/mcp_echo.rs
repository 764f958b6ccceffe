//! A minimal MCP server over stdio, for trying the proxy without Node or
//! Python, and for its tests:
//!
//! ```sh
//! cargo build --release --examples
//! shadowcat reverse --upstream-stdio target/release/examples/mcp_echo
//! ```
//!
//! It answers `initialize`, `ping`, `tools/list` and `tools/call` for these
//! tools: `echo {message}` (answers `Echo: <message>`), `sleep {ms}` (answers
//! after a delay, to hold a request in flight; a request that gives a
//! `progressToken` gets a progress notification as it starts and another
//! half-way), `notify {message}` (sends a
//! log notification, then answers), `spawn {seconds}` (starts a `sleep`
//! grandchild, to check process-group teardown), `crash` (exits at once,
//! leaving the request unanswered), `big {bytes}` (answers a text of that
//! many bytes, to go over a line limit), `ask {bytes}` (sends the client a
//! `roots/list` request padded to that many bytes, and answers with the
//! client's response as text, or `no answer` after 10 s; with `idLast`
//! set, `big`'s answer and `ask`'s request name their id last, after what
//! makes them long, as the TypeScript SDK writes messages), `batched
//! {message}` (writes a log notification and its answer as one JSON-RPC
//! batch, as a 2025-03-26 server may). Any other method gets -32601.
//!
//! With `--stubborn` it behaves like a badly written server: it ignores
//! SIGTERM and keeps running after its stdin closes, so only SIGKILL ends it.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

fn main() {
    let stubborn = std::env::args().any(|a| a == "--stubborn");
    if stubborn {
        // SAFETY: installs the ignore disposition; no handler code runs.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::SigHandler::SigIgn,
            )
        };
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let asked: Asked = Arc::default();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(e) => {
                send(
                    &out,
                    json!({"jsonrpc": "2.0", "id": null,
                           "error": {"code": -32700, "message": e.to_string()}}),
                );
                continue;
            }
        };
        let Some(id) = message.get("id").cloned() else {
            continue; // a notification: nothing to answer
        };
        if message.get("method").is_none() {
            // A response to one of our requests (`ask`).
            let waiting = asked
                .lock()
                .ok()
                .and_then(|mut a| a.remove(&id.to_string()));
            if let Some(waiting) = waiting {
                let _ = waiting.send(message);
            }
            continue;
        }
        let method = message["method"].as_str().unwrap_or_default().to_owned();
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let (out, asked) = (Arc::clone(&out), Arc::clone(&asked));
        // Requests run concurrently, like a real server's: a slow one does
        // not hold up the others.
        std::thread::spawn(move || handle(&out, &asked, id, &method, &params));
    }
    if stubborn {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Our requests to the client awaiting its response, by id.
type Asked = Arc<Mutex<HashMap<String, mpsc::Sender<Value>>>>;

fn handle(out: &Mutex<std::io::Stdout>, asked: &Asked, id: Value, method: &str, params: &Value) {
    let result = match method {
        "initialize" => json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-11-25"),
            "capabilities": {"tools": {}, "logging": {}},
            "serverInfo": {"name": "mcp-echo", "version": "1.0.0"},
        }),
        "ping" => json!({}),
        "tools/list" => {
            let tools: Vec<Value> = [
                "echo", "sleep", "notify", "spawn", "crash", "big", "ask", "batched",
            ]
            .iter()
            .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}))
            .collect();
            json!({ "tools": tools })
        }
        "tools/call" => {
            let arguments = &params["arguments"];
            match params["name"].as_str().unwrap_or_default() {
                "echo" => text(&format!(
                    "Echo: {}",
                    arguments["message"].as_str().unwrap_or_default()
                )),
                "sleep" => {
                    let ms = arguments["ms"].as_u64().unwrap_or(1_000);
                    let token = &params["_meta"]["progressToken"];
                    let progress = |done: u64| {
                        if !token.is_null() {
                            send(
                                out,
                                json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                       "params": {"progressToken": token, "progress": done,
                                                  "total": 2}}),
                            );
                        }
                    };
                    progress(0);
                    std::thread::sleep(Duration::from_millis(ms / 2));
                    progress(1);
                    std::thread::sleep(Duration::from_millis(ms - ms / 2));
                    text(&format!("slept {ms} ms"))
                }
                "notify" => {
                    send(
                        out,
                        json!({"jsonrpc": "2.0", "method": "notifications/message",
                               "params": {"level": "info", "data": arguments["message"]}}),
                    );
                    text("notified")
                }
                "batched" => {
                    let log = json!({"jsonrpc": "2.0", "method": "notifications/message",
                                     "params": {"level": "info", "data": arguments["message"]}});
                    let answer = json!({"jsonrpc": "2.0", "id": id, "result": text("batched")});
                    return send(out, json!([log, answer]));
                }
                "spawn" => {
                    let seconds = arguments["seconds"].as_u64().unwrap_or(1_000).to_string();
                    match std::process::Command::new("sleep").arg(&seconds).spawn() {
                        Ok(child) => text(&format!("spawned {}", child.id())),
                        Err(e) => text(&format!("spawn failed: {e}")),
                    }
                }
                "crash" => std::process::exit(3),
                "big" => {
                    let bytes = arguments["bytes"].as_u64().unwrap_or(1 << 20);
                    let big = text(&"x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX)));
                    if arguments["idLast"] == true {
                        return send_id_last(out, ("result", &big), &id);
                    }
                    big
                }
                "ask" => {
                    let bytes = arguments["bytes"].as_u64().unwrap_or(0);
                    let pad = "x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX));
                    let ask_id = json!(format!("ask-{id}"));
                    let (answered, answer) = mpsc::channel();
                    if let Ok(mut asked) = asked.lock() {
                        asked.insert(ask_id.to_string(), answered);
                    }
                    let params = json!({"_meta": {"pad": pad}});
                    if arguments["idLast"] == true {
                        send_id_last(out, ("params", &params), &ask_id);
                    } else {
                        send(
                            out,
                            json!({"jsonrpc": "2.0", "id": ask_id, "method": "roots/list",
                                   "params": params}),
                        );
                    }
                    match answer.recv_timeout(Duration::from_secs(10)) {
                        Ok(response) => text(&response.to_string()),
                        Err(_) => text("no answer"),
                    }
                }
                other => {
                    return send(
                        out,
                        json!({"jsonrpc": "2.0", "id": id,
                               "error": {"code": -32602, "message": format!("no tool {other}")}}),
                    )
                }
            }
        }
        other => {
            return send(
                out,
                json!({"jsonrpc": "2.0", "id": id,
                       "error": {"code": -32601, "message": format!("no method {other}")}}),
            )
        }
    };
    send(out, json!({"jsonrpc": "2.0", "id": id, "result": result}));
}

fn text(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// Writes a message whose `id` comes last (`serde_json`'s maps sort their
/// keys, so it is put together by hand): `{"result":…,"jsonrpc":"2.0",
/// "id":…}` for a response, `{"method":"roots/list","params":…,…}` for a
/// request.
fn send_id_last(out: &Mutex<std::io::Stdout>, (key, body): (&str, &Value), id: &Value) {
    let method = if key == "params" {
        r#""method":"roots/list","#
    } else {
        ""
    };
    let Ok(mut out) = out.lock() else { return };
    let _ = writeln!(
        out,
        r#"{{{method}"{key}":{body},"jsonrpc":"2.0","id":{id}}}"#
    );
    let _ = out.flush();
}

fn send(out: &Mutex<std::io::Stdout>, message: Value) {
    let Ok(mut out) = out.lock() else { return };
    let _ = writeln!(out, "{message}");
    let _ = out.flush();
}
