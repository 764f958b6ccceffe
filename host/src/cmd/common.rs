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

/// Lets a closed stdout end the process quietly, as it ends `cat` or `ls`
/// (`shadowcat config | head -1`): Rust ignores SIGPIPE, so the next print
/// would panic on the broken pipe instead. Only for the commands that print
/// a result and drive no upstream: a proxy writes to its servers' pipes, and
/// a server that exits must not take the proxy down with it.
pub fn end_quietly_when_stdout_closes() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: the default disposition installs no handler, so no code of
    // ours can run in signal context.
    if let Err(err) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!(%err, "SIGPIPE keeps Rust's disposition; a closed stdout fails the print");
    }
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
