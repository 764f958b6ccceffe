//! `shadowcat forward stdio -- CMD ARGS...` and `shadowcat forward http
//! URL`: one stdio client, one server.

use std::sync::Arc;

use anyhow::{Context, Result};
use shadowcat::cli::{Cli, ForwardCommand};
use shadowcat::proxy::forward::oauth::{self, OAuthClient, OAuthSettings};
use shadowcat::proxy::forward::{self, ForwardEnd, ForwardServer};
use shadowcat::proxy::session::{CloseUpstream, ProxySession};
use shadowcat::proxy::upstream::{HttpUpstreamConfig, StdioCommand};
use shadowcat::session::{FlushMode, SessionTable};
use shadowcat::wasm::OpenedPolicy;

use super::common::{open, table_config};

pub async fn run(cli: &Cli, command: &ForwardCommand) -> Result<()> {
    let (target, shutdown_grace) = match command {
        ForwardCommand::Stdio {
            upstream,
            shutdown_grace,
            max_message,
            command,
        } => {
            let mut server = StdioCommand::new(command[0].clone(), command[1..].to_vec());
            server.grace = upstream.upstream_grace;
            server.max_pending = upstream.upstream_max_pending;
            server.max_line = *max_message;
            server.max_line_option = Some("--max-message");
            (ForwardServer::Stdio(Arc::new(server)), *shutdown_grace)
        }
        ForwardCommand::Http {
            url,
            upstream_headers,
            upstream_timeout,
            shutdown_grace,
            max_message,
            no_oauth,
            oauth_client_id,
            oauth_client_secret_file,
            oauth_callback_port,
            oauth_store,
            oauth_timeout,
        } => {
            let mut headers = reqwest::header::HeaderMap::new();
            for header in upstream_headers {
                headers.append(header.name.clone(), header.value.clone());
            }
            // Credentials given by hand are the ones sent: a flow's tokens
            // would never be.
            let oauth = !*no_oauth && !headers.contains_key(reqwest::header::AUTHORIZATION);
            let config = HttpUpstreamConfig::new(url.clone(), *upstream_timeout)
                .context("cannot build the HTTP client")?
                .with_headers(headers);
            let client_secret = match oauth_client_secret_file {
                Some(file) => {
                    let secret = std::fs::read_to_string(file).with_context(|| {
                        format!("cannot read --oauth-client-secret-file {}", file.display())
                    })?;
                    let secret = secret.trim();
                    anyhow::ensure!(
                        !secret.is_empty(),
                        "--oauth-client-secret-file {} is empty",
                        file.display()
                    );
                    Some(secret.to_owned())
                }
                None => None,
            };
            let oauth = oauth.then(|| {
                let store = match oauth_store {
                    Some(dir) if dir.as_os_str() == "off" => None,
                    Some(dir) => Some(dir.clone()),
                    None => oauth::default_store(),
                };
                let settings = OAuthSettings {
                    client_id: oauth_client_id.clone(),
                    client_secret,
                    callback_port: *oauth_callback_port,
                    store,
                    timeout: *oauth_timeout,
                };
                OAuthClient::new(url.clone(), settings, config.client.clone())
            });
            let target = ForwardServer::Http {
                config: Arc::new(config),
                max_message: *max_message,
                oauth,
            };
            (target, *shutdown_grace)
        }
    };
    let config = table_config(&cli.table)?;
    let policy = {
        let (policy_args, spec) = (cli.policy.clone(), cli.table.eviction_policy.clone());
        let told = config.clone();
        tokio::task::spawn_blocking(move || open(&policy_args, &spec, &told)).await??
    };
    // The task outlives its handle, as long as the runtime runs.
    policy
        .reload_on_sighup()
        .context("cannot listen for SIGHUP")?;
    if let (OpenedPolicy::Wasm(wasm), Some(interval)) = (&policy, cli.policy.policy_watch) {
        wasm.watch(interval)
            .context("cannot watch the policy file")?;
    }
    let table = SessionTable::<ProxySession>::builder(config)
        .policy(policy.eviction())
        .teardown(Arc::new(CloseUpstream), tokio::runtime::Handle::current())
        .flush(FlushMode::Thread)
        .build_shared()
        .context("invalid session table configuration")?;
    let end = forward::run(
        table,
        target,
        shutdown_grace,
        tokio::io::stdin(),
        tokio::io::stdout(),
    )
    .await?;
    match end {
        ForwardEnd::ClientClosed => Ok(()),
        ForwardEnd::ServerFailed {
            reason,
            unanswered: 0,
        } => anyhow::bail!("the MCP server ended: {reason}"),
        ForwardEnd::ServerFailed { reason, unanswered } => anyhow::bail!(
            "the MCP server ended with {} unanswered: {reason}",
            requests(unanswered)
        ),
        ForwardEnd::Abandoned {
            unanswered,
            waited,
            reason,
        } => anyhow::bail!(
            "the client closed its input and the MCP server left {} unanswered for {} \
             (--shutdown-grace): {reason}",
            requests(unanswered),
            shadowcat::config::readable_duration(waited)
        ),
    }
}

fn requests(n: usize) -> String {
    match n {
        1 => "1 request".to_owned(),
        n => format!("{n} requests"),
    }
}
