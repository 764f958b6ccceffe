//! What several commands share: opening the policy engine and a policy.

use std::sync::Arc;

use anyhow::{Context, Result};
use shadowcat::cli::{PolicyArgs, TableArgs};
use shadowcat::config::TableConfig;
use shadowcat::wasm::{self, open_policy, OpenedPolicy, PolicyEngine, PolicyTable};

pub fn engine(args: &PolicyArgs) -> Result<Arc<PolicyEngine>, wasm::PolicyError> {
    PolicyEngine::new(args.limits(), args.cache_dir())
}

/// The session table the options describe, validated, with a warning for
/// each setting that cannot do what it says.
pub fn table_config(args: &TableArgs) -> Result<TableConfig> {
    let config = args.table_config();
    config
        .validate()
        .context("invalid session table configuration")?;
    for oddity in config.oddities() {
        tracing::warn!("{oddity}");
    }
    Ok(config)
}

/// Opens the one policy a command runs for `table`, with the
/// `--policy-config` settings meant for it (a setting scoped to another
/// policy is an error). The policy is told the table's bounds: its capacity,
/// idle timeout and max age (what `ttl` evicts by).
pub fn open(args: &PolicyArgs, spec: &str, table: &TableConfig) -> Result<OpenedPolicy> {
    let dirs = args.dirs();
    let config = wasm::config::config_for(spec, &args.policy_config, &dirs)?;
    let told = PolicyTable::of_config(table);
    Ok(open_policy(spec, &dirs, || engine(args), told, config)?)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
