//! The proxy's cost, against a local upstream measured in the same run:
//! added latency per request (p50, p99) over a direct connection, requests
//! per second through the proxy, and memory per idle session held on an HTTP
//! upstream.
//!
//! The upstream is an in-process streamable-HTTP MCP server that keeps
//! nothing per session, so the memory measured is the proxy's own.
//!
//! And the price of reading the envelope of a stdio message over the line
//! limit as it is skipped (to answer it by its id, wherever it comes),
//! against finding its end alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use shadowcat::proxy::client_key::ClientKeySource;
use shadowcat::proxy::head::{Head, HeadScan};
use shadowcat::proxy::server::{ReverseConfig, RunningProxy};
use shadowcat::proxy::upstream::{HttpUpstreamConfig, UpstreamSpec};
use shadowcat::proxy::ProxyOptions;
use shadowcat::wasm::OpenedPolicy;
use shadowcat::TableConfig;
use shadowcat_benches::mcp_upstream::start_upstream;
use shadowcat_benches::{live_bytes, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const TIMED_CALLS: usize = 20_000;
const IDLE_SESSIONS: usize = 10_000;

async fn start_proxy(upstream: SocketAddr) -> RunningProxy {
    let url: reqwest::Url = format!("http://{upstream}/mcp").parse().expect("url");
    let config = ReverseConfig {
        table: TableConfig {
            max_sessions: IDLE_SESSIONS * 2,
            rate_limit: None,
            ..TableConfig::default()
        },
        policy: OpenedPolicy::Native(Arc::new(shadowcat::eviction::HostLru)),
        upstreams: UpstreamSpec::Http(Arc::new(
            HttpUpstreamConfig::new(url, Duration::from_secs(10)).expect("client"),
        )),
        options: ProxyOptions {
            client_key: ClientKeySource::Remote,
            init_timeout: Duration::from_millis(200),
            max_body: 4 << 20,
            init_rate: None,
            ..ProxyOptions::default()
        },
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls: None,
        admin_listen: None,
        admin_token: None,
        access_log: None,
        shutdown_grace: Duration::from_secs(5),
        policy_watch: None,
    };
    RunningProxy::start(config).await.expect("proxy starts")
}

/// A client holding one session (legacy era), or none for the direct path.
struct Client {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    id: u64,
}

impl Client {
    fn new(http: &reqwest::Client, url: String) -> Self {
        Self {
            http: http.clone(),
            url,
            session: None,
            id: 0,
        }
    }

    async fn post(&mut self, method: &str, params: Value) -> reqwest::Response {
        self.id += 1;
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params})
                    .to_string(),
            );
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send().await.expect("answer")
    }

    async fn initialize(&mut self) {
        let response = self
            .post("initialize", json!({"protocolVersion": "2025-11-25"}))
            .await;
        assert!(response.status().is_success(), "{}", response.status());
        self.session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let _ = response.bytes().await;
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        let done = request.send().await.expect("answer");
        assert_eq!(done.status(), 202);
    }

    async fn call(&mut self) {
        let response = self
            .post(
                "tools/call",
                json!({"name": "echo", "arguments": {"message": "x"}}),
            )
            .await;
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.bytes().await.expect("body");
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn timed(client: &mut Client, calls: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        client.call().await;
        times.push(start.elapsed());
    }
    times.sort_unstable();
    times
}

fn bench_latency(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (upstream_addr, proxy) = runtime.block_on(async {
        let upstream = start_upstream().await;
        (upstream, start_proxy(upstream).await)
    });
    let http = reqwest::Client::new();
    let mut direct = Client::new(&http, format!("http://{upstream_addr}/mcp"));
    let mut proxied = Client::new(&http, format!("http://{}/mcp", proxy.mcp));
    runtime.block_on(async {
        direct.initialize().await;
        proxied.initialize().await;
        // Warm both paths (connections, allocations) before timing.
        timed(&mut direct, 2_000).await;
        timed(&mut proxied, 2_000).await;
        // Interleaved halves, so load on the machine hits both alike.
        let mut d = Vec::new();
        let mut p = Vec::new();
        for _ in 0..4 {
            d.extend(timed(&mut direct, TIMED_CALLS / 4).await);
            p.extend(timed(&mut proxied, TIMED_CALLS / 4).await);
        }
        d.sort_unstable();
        p.sort_unstable();
        let (d50, d99, p50, p99) = (
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            percentile(&p, 0.5),
            percentile(&p, 0.99),
        );
        println!(
            "proxy_latency ({} calls each): direct p50 {:?} p99 {:?}; through the proxy p50 {:?} p99 {:?}; added p50 {:?} p99 {:?}",
            d.len(),
            d50,
            d99,
            p50,
            p99,
            p50.saturating_sub(d50),
            p99.saturating_sub(d99)
        );
    });
    let mut group = c.benchmark_group("proxy_call");
    group.bench_function("direct", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = Client {
                http: direct.http.clone(),
                url: direct.url.clone(),
                session: direct.session.clone(),
                id: 0,
            };
            async move { client.call().await }
        })
    });
    group.bench_function("through_proxy", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = Client {
                http: proxied.http.clone(),
                url: proxied.url.clone(),
                session: proxied.session.clone(),
                id: 0,
            };
            async move { client.call().await }
        })
    });
    group.finish();
    runtime.block_on(async {
        let _ = proxy.shutdown().await;
    });
}

fn bench_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (upstream_addr, proxy) = runtime.block_on(async {
        let upstream = start_upstream().await;
        (upstream, start_proxy(upstream).await)
    });
    let http = reqwest::Client::new();
    let mut group = c.benchmark_group("proxy_throughput");
    group.sample_size(10);
    for (label, url, sessions) in [
        ("direct", format!("http://{upstream_addr}/mcp"), false),
        ("through_proxy", format!("http://{}/mcp", proxy.mcp), true),
    ] {
        // 32 clients, each on its own session, calling back to back.
        let clients: Vec<Client> = runtime.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..32 {
                let mut client = Client::new(&http, url.clone());
                if sessions {
                    client.initialize().await;
                }
                clients.push(client);
            }
            clients
        });
        let clients = Arc::new(tokio::sync::Mutex::new(clients));
        group.bench_function(label, |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let clients = Arc::clone(&clients);
                async move {
                    let mut clients = clients.lock().await;
                    let per_client = (iters as usize).div_ceil(clients.len()).max(1);
                    let start = Instant::now();
                    let calls = clients.iter_mut().map(|client| async move {
                        for _ in 0..per_client {
                            client.call().await;
                        }
                    });
                    futures::future::join_all(calls).await;
                    // Per request: criterion reports time per iteration.
                    start.elapsed() * (iters as u32) / ((per_client * 32) as u32).max(1)
                }
            })
        });
    }
    group.finish();
    runtime.block_on(async {
        let _ = proxy.shutdown().await;
    });
}

/// Reported, not timed: memory is a count, and criterion measures time.
fn bench_memory(_: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = runtime.block_on(async {
        let upstream = start_upstream().await;
        let proxy = start_proxy(upstream).await;
        let http = reqwest::Client::new();
        let url = format!("http://{}/mcp", proxy.mcp);
        // One session first, so lazily built state (pools, buffers) is not
        // charged to the sessions measured.
        Client::new(&http, url.clone()).initialize().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let before = live_bytes();
        for _ in 0..IDLE_SESSIONS {
            Client::new(&http, url.clone()).initialize().await;
        }
        // Past the handshake timeout, whose timers are then gone.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let after = live_bytes();
        assert_eq!(proxy.proxy().table.len(), IDLE_SESSIONS + 1);
        let per_session = after.saturating_sub(before) as f64 / IDLE_SESSIONS as f64;
        println!(
            "proxy_memory: {IDLE_SESSIONS} idle sessions on an HTTP upstream hold {:.1} MiB, {per_session:.0} bytes each",
            after.saturating_sub(before) as f64 / (1 << 20) as f64
        );
        proxy
    });
    runtime.block_on(async {
        let _ = proxy.shutdown().await;
    });
}

/// A 16 MiB response, its id last as the TypeScript SDK writes it: one long
/// string with an escaped quote every 6 bytes (the string's worst case: each
/// escape stops the search for its end), and a long array of numbers, where
/// every byte is outside a string.
fn bench_over_long_envelope(c: &mut Criterion) {
    const BYTES: usize = 16 << 20;
    let text = format!(
        r#"{{"result":{{"content":[{{"type":"text","text":"{}"}}]}},"jsonrpc":"2.0","id":7}}"#,
        "ab\\\"cd".repeat(BYTES / 6)
    );
    let numbers = format!(
        r#"{{"result":{{"values":[{}0]}},"jsonrpc":"2.0","id":7}}"#,
        "12345,".repeat(BYTES / 6)
    );
    let mut group = c.benchmark_group("over_long_16MiB");
    group.sample_size(20);
    for (name, message) in [("text", &text), ("numbers", &numbers)] {
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_function(format!("{name}/end_only"), |b| {
            b.iter(|| memchr::memchr(b'\n', message.as_bytes()))
        });
        group.bench_function(format!("{name}/envelope"), |b| {
            b.iter(|| {
                let mut scan = HeadScan::default();
                // In the reader's pieces.
                for piece in message.as_bytes().chunks(64 << 10) {
                    scan.feed(piece);
                }
                let head = scan.head();
                assert_eq!(
                    head,
                    Head::Response {
                        id: Some("7".into())
                    }
                );
                head
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_latency, bench_throughput, bench_memory, bench_over_long_envelope
}
criterion_main!(benches);
