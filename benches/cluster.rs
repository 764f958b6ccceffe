//! The cluster's cost, measured in one run against a real `redis-server`
//! (started here on a free loopback port; the bench says so and does
//! nothing when it is not installed):
//!
//! - the added latency of one forwarding hop (p50, p99): the same session
//!   called directly at its owner and through another instance, interleaved;
//!   with and without the global rate limit (a Redis round trip per request
//!   at the receiving instance, paid by both paths);
//! - requests per second through three instances, each request sent to the
//!   next instance in turn (two in three then take a hop), against one.
//!
//! Instances run in this process on one runtime, in front of an in-process
//! HTTP MCP server that keeps nothing per session, as in `benches/proxy.rs`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use shadowcat::cluster::{ClusterConfig, ClusterKeys, ClusterTiming, InstanceId, RedisDownMode};
use shadowcat::config::RateLimit;
use shadowcat::proxy::client_key::ClientKeySource;
use shadowcat::proxy::server::{ReverseConfig, RunningProxy};
use shadowcat::proxy::upstream::{HttpUpstreamConfig, UpstreamSpec};
use shadowcat::proxy::ProxyOptions;
use shadowcat::wasm::OpenedPolicy;
use shadowcat::TableConfig;
use shadowcat_benches::mcp_upstream::start_upstream;

const TIMED_CALLS: usize = 10_000;
const CLIENTS: usize = 32;
const SECRET: &[u8] = b"shadowcat cluster bench: a secret of 32 bytes or more";

/// A `redis-server` of the bench's own; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn program() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    }

    fn start(program: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` instances of one cluster (or, with `redis` `None`, one plain proxy).
async fn start_instances(
    upstream: SocketAddr,
    redis: Option<&Redis>,
    n: usize,
    global_limit: bool,
) -> Vec<RunningProxy> {
    let url: reqwest::Url = format!("http://{upstream}/mcp").parse().expect("url");
    let spec = UpstreamSpec::Http(Arc::new(
        HttpUpstreamConfig::new(url, Duration::from_secs(10)).expect("client"),
    ));
    let mut instances = Vec::new();
    for i in 0..n {
        let config = ReverseConfig {
            table: TableConfig {
                max_sessions: 10_000,
                // High enough never to refuse: what is measured is its cost.
                rate_limit: global_limit.then(|| RateLimit {
                    per_second: NonZeroU32::new(1_000_000).expect("non-zero"),
                    burst: NonZeroU32::new(1_000_000).expect("non-zero"),
                }),
                ..TableConfig::default()
            },
            policy: OpenedPolicy::Native(Arc::new(shadowcat::eviction::HostLru)),
            upstreams: spec.clone(),
            options: ProxyOptions {
                client_key: ClientKeySource::Remote,
                init_timeout: Duration::from_secs(30),
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
        let cluster = redis.map(|redis| ClusterConfig {
            redis_url: redis.url(),
            instance_id: Some(InstanceId::parse(&format!("bench-{i}")).expect("id")),
            advertise: None,
            keys: ClusterKeys::from_secrets(&[SECRET]).expect("keys"),
            redis_down: RedisDownMode::Open,
            timing: ClusterTiming::default(),
        });
        instances.push(
            RunningProxy::start_with(config, cluster)
                .await
                .expect("instance starts"),
        );
    }
    // Every instance knows the others after its next heartbeat.
    if redis.is_some() && n > 1 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while instances.iter().any(|i| {
            i.proxy()
                .cluster
                .as_ref()
                .is_some_and(|c| c.members.len() < n)
        }) {
            assert!(
                Instant::now() < deadline,
                "instances did not see each other"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    instances
}

/// A client holding one session, sending each call to the next of `urls`.
struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    next: usize,
    session: Option<String>,
    id: u64,
}

impl Client {
    fn new(http: &reqwest::Client, urls: Vec<String>) -> Self {
        Self {
            http: http.clone(),
            urls,
            next: 0,
            session: None,
            id: 0,
        }
    }

    fn url(&mut self) -> String {
        let url = self.urls[self.next % self.urls.len()].clone();
        self.next += 1;
        url
    }

    async fn post(&mut self, url: &str, method: &str, params: Value) -> reqwest::Response {
        self.id += 1;
        let mut request = self
            .http
            .post(url)
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

    /// Opens the session at `url`.
    async fn initialize(&mut self, url: &str) {
        let response = self
            .post(url, "initialize", json!({"protocolVersion": "2025-11-25"}))
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
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        let done = request.send().await.expect("answer");
        assert_eq!(done.status(), 202);
    }

    async fn call(&mut self) {
        let url = self.url();
        let response = self
            .post(
                &url,
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
    times
}

fn mcp_url(instance: &RunningProxy) -> String {
    format!("http://{}/mcp", instance.mcp)
}

/// The hop's added latency, against a direct call to the owner in the same
/// run, for one session.
fn bench_hop_latency(c: &mut Criterion, redis: &Redis) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for global_limit in [false, true] {
        let instances = runtime.block_on(async {
            let upstream = start_upstream().await;
            start_instances(upstream, Some(redis), 2, global_limit).await
        });
        let http = reqwest::Client::new();
        let (owner, other) = (mcp_url(&instances[0]), mcp_url(&instances[1]));
        let mut direct = Client::new(&http, vec![owner.clone()]);
        let (d, h) = runtime.block_on(async {
            direct.initialize(&owner).await;
            let mut hop = Client::new(&http, vec![other.clone()]);
            hop.session = direct.session.clone();
            timed(&mut direct, 2_000).await;
            timed(&mut hop, 2_000).await;
            // Interleaved blocks, so load on the machine hits both alike.
            let (mut d, mut h) = (Vec::new(), Vec::new());
            for _ in 0..8 {
                d.extend(timed(&mut direct, TIMED_CALLS / 8).await);
                h.extend(timed(&mut hop, TIMED_CALLS / 8).await);
            }
            d.sort_unstable();
            h.sort_unstable();
            (d, h)
        });
        let (d50, d99, h50, h99) = (
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            percentile(&h, 0.5),
            percentile(&h, 0.99),
        );
        let limit = if global_limit {
            "with the global rate limit"
        } else {
            "without a rate limit"
        };
        println!(
            "cluster_hop_latency ({limit}, {} calls each): direct to the owner p50 {d50:?} p99 {d99:?}; \
             through another instance p50 {h50:?} p99 {h99:?}; one hop adds p50 {:?} p99 {:?}",
            d.len(),
            h50.saturating_sub(d50),
            h99.saturating_sub(d99)
        );
        if !global_limit {
            let mut group = c.benchmark_group("cluster_call");
            for (label, url) in [
                ("direct_to_owner", owner.clone()),
                ("one_hop", other.clone()),
            ] {
                let session = direct.session.clone();
                let http = http.clone();
                group.bench_function(label, |b| {
                    b.to_async(&runtime).iter(|| {
                        let mut client = Client::new(&http, vec![url.clone()]);
                        client.session = session.clone();
                        async move { client.call().await }
                    })
                });
            }
            group.finish();
        }
        runtime.block_on(async {
            for instance in instances {
                let _ = instance.shutdown().await;
            }
        });
    }
}

/// Requests per second from 32 clients calling back to back: through three
/// instances (sessions opened round robin, each call to the next instance)
/// and through one.
fn bench_throughput(c: &mut Criterion, redis: &Redis) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("cluster_throughput");
    group.sample_size(10);
    for (label, n, clustered) in [
        ("three_instances", 3, true),
        ("one_instance", 1, true),
        ("one_plain_proxy", 1, false),
    ] {
        let instances = runtime.block_on(async {
            let upstream = start_upstream().await;
            start_instances(upstream, clustered.then_some(redis), n, false).await
        });
        let urls: Vec<String> = instances.iter().map(mcp_url).collect();
        let http = reqwest::Client::new();
        let clients: Vec<Client> = runtime.block_on(async {
            let mut clients = Vec::new();
            for i in 0..CLIENTS {
                let mut client = Client::new(&http, urls.clone());
                client.next = i;
                client.initialize(&urls[i % urls.len()]).await;
                clients.push(client);
            }
            clients
        });
        let clients = Arc::new(tokio::sync::Mutex::new(clients));
        let rate = runtime.block_on(async {
            let mut clients = clients.lock().await;
            let per_client = 300;
            let start = Instant::now();
            let calls = clients.iter_mut().map(|client| async move {
                for _ in 0..per_client {
                    client.call().await;
                }
            });
            futures::future::join_all(calls).await;
            (per_client * CLIENTS) as f64 / start.elapsed().as_secs_f64()
        });
        println!("cluster_throughput {label}: {rate:.0} requests/s ({CLIENTS} clients)");
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
                    start.elapsed() * (iters as u32) / ((per_client * CLIENTS) as u32).max(1)
                }
            })
        });
        runtime.block_on(async {
            for instance in instances {
                let _ = instance.shutdown().await;
            }
        });
    }
    group.finish();
}

fn bench_cluster(c: &mut Criterion) {
    let Some(program) = Redis::program() else {
        println!(
            "cluster bench skipped: redis-server is not installed (Debian: apt-get install redis-server)"
        );
        return;
    };
    let redis = Redis::start(program);
    bench_hop_latency(c, &redis);
    bench_throughput(c, &redis);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_cluster
}
criterion_main!(benches);
