//! `shadowcat reverse`: serve MCP clients over streamable HTTP.

use std::sync::Arc;

use anyhow::{Context, Result};
use shadowcat::cli::{Cli, ReverseArgs};
use shadowcat::cluster::{ClusterConfig, ClusterKeys, ClusterTiming, InstanceId};
use shadowcat::config::RateLimit;
use shadowcat::proxy::origin::AllowedOrigins;
use shadowcat::proxy::server::{ReverseConfig, RunningProxy};
use shadowcat::proxy::tls;
use shadowcat::proxy::upstream::{HttpUpstreamConfig, StdioCommand, UpstreamSpec};
use shadowcat::proxy::ProxyOptions;

use super::common::{open, shutdown_signal, table_config};

pub async fn run(cli: &Cli, args: &ReverseArgs) -> Result<()> {
    let table = table_config(&cli.table)?;
    let policy = {
        let (policy_args, spec) = (cli.policy.clone(), cli.table.eviction_policy.clone());
        let told = table.clone();
        // Loading may compile a WebAssembly component: off the runtime workers.
        tokio::task::spawn_blocking(move || open(&policy_args, &spec, &told)).await??
    };
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    if let (Some(addr), None) = (args.admin_listen, &admin_token) {
        // The admin API lists clients and deletes sessions: open to other
        // hosts without a token, anyone who can reach it could do both.
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the admin API would listen on {addr}, reachable from other hosts, without a \
             token: give --admin-token-file FILE, or a loopback --admin-listen (127.0.0.1:9464), \
             or --admin-listen off"
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::Certificate::load(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let (Some(_), Some(_)) = (&tls, &args.cluster.cluster_redis) {
        // The other instances reach this one at --advertise: over HTTPS, by a
        // name its certificate has, which the default (an address) is not.
        anyhow::ensure!(
            args.cluster
                .advertise
                .as_ref()
                .is_some_and(|url| url.scheme() == "https"),
            "with --tls-cert, give --advertise https://NAME:PORT/mcp, a name of the \
             certificate the other instances of the cluster reach this one by"
        );
    }
    let origins = AllowedOrigins::new(&args.allowed_origins)?;
    if origins.admits_any() {
        tracing::warn!(
            "--allowed-origin *: any web page a user of this machine opens may use the proxy \
             and the servers behind it"
        );
    }
    let config = ReverseConfig {
        upstreams: upstream_spec(args)?,
        options: ProxyOptions {
            client_key: args.client_key.clone(),
            init_timeout: args.init_timeout,
            max_body: args.max_body,
            init_rate: args.init_rate.map(|per_second| RateLimit {
                per_second,
                burst: args.init_burst,
            }),
            origins,
            public_url: args.public_url.clone(),
            https: tls.is_some(),
        },
        listen: args.listen,
        tls,
        admin_listen: args.admin_listen,
        admin_token,
        access_log: args.access_log.clone(),
        shutdown_grace: args.shutdown_grace,
        policy_watch: cli.policy.policy_watch,
        policy,
        table: table.clone(),
    };
    let running = RunningProxy::start_with(config, cluster_config(args)?).await?;
    // One line per listener on stdout, so scripts (and tests binding port 0)
    // learn the addresses.
    if let Some(admin) = running.admin {
        println!("admin http://{admin}");
    }
    println!("mcp {scheme}://{}/mcp", running.mcp);
    let proxy = Arc::clone(running.proxy());
    tracing::info!(
        listen = %running.mcp,
        upstream = %proxy.upstreams.describe(),
        policy = %proxy.policy_name(),
        max_sessions = table.max_sessions,
        "serving MCP clients"
    );
    drop(proxy);
    shutdown_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: no new connections; requests in flight may finish");
    let report = running.shutdown().await.context("writing the access log")?;
    tracing::info!(
        closed = report.closed,
        abandoned_requests = report.abandoned_requests,
        teardowns_unfinished = report.teardowns_unfinished,
        "sessions closed"
    );
    Ok(())
}

/// The cluster this instance joins, if --cluster-redis is given.
fn cluster_config(args: &ReverseArgs) -> Result<Option<ClusterConfig>> {
    let cluster = &args.cluster;
    let Some(redis_url) = &cluster.cluster_redis else {
        return Ok(None);
    };
    let keys = ClusterKeys::read_files(&cluster.session_key_file)
        .context("the cluster's --session-key-file")?;
    let instance_id = match &cluster.instance_id {
        Some(id) => Some(InstanceId::parse(id).context("--instance-id")?),
        None => None,
    };
    Ok(Some(ClusterConfig {
        redis_url: redis_url.clone(),
        instance_id,
        advertise: cluster.advertise.clone(),
        keys,
        redis_down: cluster.cluster_redis_down,
        timing: ClusterTiming::default(),
    }))
}

fn upstream_spec(args: &ReverseArgs) -> Result<UpstreamSpec> {
    let up = &args.upstream;
    if let Some(line) = &args.upstream_stdio {
        anyhow::ensure!(
            args.upstream_headers.is_empty(),
            "--upstream-header goes with --upstream-http: a stdio server gets no HTTP headers"
        );
        anyhow::ensure!(
            args.public_url.is_none(),
            "--public-url goes with --upstream-http: it names the proxy in the OAuth metadata \
             of an HTTP server, and a stdio server has none"
        );
        let mut command = StdioCommand::parse(line).map_err(anyhow::Error::msg)?;
        command.grace = up.upstream_grace;
        command.max_line = args.max_body.max(1 << 20);
        command.max_line_option = Some("--max-body");
        command.max_pending = up.upstream_max_pending;
        return Ok(UpstreamSpec::Stdio(Arc::new(command)));
    }
    let Some(url) = &args.upstream_http else {
        anyhow::bail!("give --upstream-stdio \"CMD ARGS\" or --upstream-http URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--upstream-http must be an http:// or https:// URL, not `{url}`");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for header in &args.upstream_headers {
        headers.append(header.name.clone(), header.value.clone());
    }
    Ok(UpstreamSpec::Http(Arc::new(
        HttpUpstreamConfig::new(url.clone(), up.upstream_timeout)
            .context("cannot build the HTTP client")?
            .with_headers(headers),
    )))
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
