//! What several commands share: opening the policy engine and a policy.

use std::sync::Arc;

use anyhow::Result;
use shadowcat::cli::PolicyArgs;
use shadowcat::wasm::{self, open_policy, OpenedPolicy, PolicyEngine};

pub fn engine(args: &PolicyArgs) -> Result<Arc<PolicyEngine>, wasm::PolicyError> {
    PolicyEngine::new(args.limits(), args.cache_dir())
}

pub fn open(args: &PolicyArgs, spec: &str, capacity: u64) -> Result<OpenedPolicy> {
    let config = wasm::parse_config_pairs(&args.policy_config)?;
    Ok(open_policy(
        spec,
        &args.dirs(),
        || engine(args),
        capacity,
        config,
    )?)
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
