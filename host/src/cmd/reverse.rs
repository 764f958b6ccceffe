//! `shadowcat reverse`: serve MCP clients over streamable HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shadowcat::cli::{Cli, ReverseArgs};
use shadowcat::config::RateLimit;
use shadowcat::proxy::access_log::AccessLog;
use shadowcat::proxy::metrics::ProxyMetrics;
use shadowcat::proxy::session::{CloseUpstream, ProxySession};
use shadowcat::proxy::upstream::{HttpUpstreamConfig, StdioCommand, UpstreamSpec};
use shadowcat::proxy::{admin, reverse, Proxy, ProxyOptions};
use shadowcat::session::{CleanupTask, FlushMode, SessionTable};
use shadowcat::wasm::OpenedPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::common::{open, shutdown_signal};

pub async fn run(cli: &Cli, args: &ReverseArgs) -> Result<()> {
    let config = cli.table.table_config();
    config
        .validate()
        .context("invalid session table configuration")?;
    let policy = {
        let (policy_args, spec) = (cli.policy.clone(), cli.table.eviction_policy.clone());
        let capacity = config.max_sessions as u64;
        // Loading may compile a WebAssembly component: off the runtime workers.
        tokio::task::spawn_blocking(move || open(&policy_args, &spec, capacity)).await??
    };
    let upstreams = upstream_spec(args)?;
    let table = SessionTable::<ProxySession>::builder(config.clone())
        .policy(policy.eviction())
        .teardown(Arc::new(CloseUpstream), tokio::runtime::Handle::current())
        .flush(FlushMode::Thread)
        .build_shared()
        .context("invalid session table configuration")?;
    let cleanup = CleanupTask::spawn(Arc::clone(&table));
    let (access_log, access_writer) = match &args.access_log {
        Some(path) => {
            let (log, writer) = AccessLog::create(path).await?;
            (Some(log), Some(writer))
        }
        None => (None, None),
    };
    let wasm = match &policy {
        OpenedPolicy::Wasm(p) => Some(Arc::clone(p)),
        OpenedPolicy::Native(_) => None,
    };
    if let Some(policy) = &wasm {
        policy
            .reload_on_sighup()
            .context("cannot listen for SIGHUP")?;
    }
    let metrics = ProxyMetrics::new(&table, wasm, access_log.clone());
    let options = ProxyOptions {
        client_key: args.client_key.clone(),
        init_timeout: args.init_timeout,
        max_body: args.max_body,
        init_rate: args.init_rate.map(|per_second| RateLimit {
            per_second,
            burst: args.init_burst,
        }),
    };
    let proxy = Arc::new(Proxy::new(
        Arc::clone(&table),
        upstreams,
        options,
        metrics,
        access_log,
        policy.name(),
    ));

    let (stop_tx, stop) = watch::channel(false);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mcp_addr = listener.local_addr()?;
    let mcp = tokio::spawn(serve(
        listener,
        reverse::router(Arc::clone(&proxy)),
        stop.clone(),
    ));
    let admin = match args.admin_listen {
        Some(addr) => {
            let token = match &args.admin_token_file {
                Some(path) => Some(read_token(path)?),
                None => None,
            };
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?;
            let admin_addr = listener.local_addr()?;
            println!("admin http://{admin_addr}");
            Some(tokio::spawn(serve(
                listener,
                admin::router(Arc::clone(&proxy), token),
                stop.clone(),
            )))
        }
        None => None,
    };
    // One line per listener on stdout, so scripts (and tests binding port 0)
    // learn the addresses.
    println!("mcp http://{mcp_addr}/mcp");
    tracing::info!(
        listen = %mcp_addr,
        upstream = %proxy.upstreams.describe(),
        policy = %proxy.policy_name,
        max_sessions = config.max_sessions,
        "serving MCP clients"
    );
    let forget = {
        let (proxy, every) = (Arc::clone(&proxy), config.cleanup_interval);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                proxy.forget_idle_clients();
            }
        })
    };

    shutdown_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: no new connections; requests in flight may finish");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + args.shutdown_grace;
    while table.stats().requests_in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    forget.abort();
    cleanup.shutdown().await;
    let report = table.shutdown(args.shutdown_grace).await;
    tracing::info!(
        closed = report.closed,
        abandoned_requests = report.abandoned_requests,
        teardowns_unfinished = report.teardowns_unfinished,
        "sessions closed"
    );
    // Streams end once their sessions are closed; the servers follow.
    for server in [Some(mcp), admin].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    drop(proxy);
    if let Some(writer) = access_writer {
        writer.finish().await.context("writing the access log")?;
    }
    Ok(())
}

fn upstream_spec(args: &ReverseArgs) -> Result<UpstreamSpec> {
    let up = &args.upstream;
    if let Some(line) = &args.upstream_stdio {
        let mut command = StdioCommand::parse(line).map_err(anyhow::Error::msg)?;
        command.grace = up.upstream_grace;
        command.max_line = args.max_body.max(1 << 20);
        command.max_pending = up.upstream_max_pending;
        return Ok(UpstreamSpec::Stdio(Arc::new(command)));
    }
    let Some(url) = &args.upstream_http else {
        anyhow::bail!("give --upstream-stdio \"CMD ARGS\" or --upstream-http URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--upstream-http must be an http:// or https:// URL, not `{url}`");
    }
    let client = reqwest::Client::builder()
        .connect_timeout(up.upstream_timeout)
        .pool_max_idle_per_host(64)
        .build()
        .context("cannot build the HTTP client")?;
    Ok(UpstreamSpec::Http(Arc::new(HttpUpstreamConfig {
        url: url.clone(),
        client,
        timeout: up.upstream_timeout,
    })))
}

fn read_token(path: &std::path::Path) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = token.trim().to_owned();
    anyhow::ensure!(
        token.len() >= 16,
        "the admin token in {} is shorter than 16 characters",
        path.display()
    );
    Ok(token)
}

/// Serves `router` until `stop` turns true; then stops accepting and lets
/// open connections finish.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!("server error: {e}");
        }
    }
}
