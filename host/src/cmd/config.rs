//! `shadowcat config`: validate the options, load the policy, print the settings.

use std::time::Duration;

use anyhow::{Context, Result};
use shadowcat::cli::Cli;
use shadowcat::config::readable_duration;
use shadowcat::session::SessionTable;
use shadowcat::wasm::OpenedPolicy;

use super::common::{open, table_config};

pub fn run(cli: &Cli) -> Result<()> {
    let config = table_config(&cli.table)?;
    let policy = open(&cli.policy, &cli.table.eviction_policy, &config)?;
    let table = SessionTable::<()>::builder(config.clone())
        .policy(policy.eviction())
        .build()
        .context("invalid session table configuration")?;
    let row = |k: &str, v: String| println!("{k:<18} {v}");
    match &policy {
        OpenedPolicy::Native(_) => row(
            "eviction policy",
            format!("{} (built in)", table.policy().name()),
        ),
        OpenedPolicy::Wasm(p) => {
            let info = p.info();
            row(
                "eviction policy",
                format!(
                    "{} {} ({}), needs {}",
                    info.name,
                    info.version,
                    p.path().display(),
                    info.needs_label()
                ),
            );
        }
    }
    row("max sessions", config.max_sessions.to_string());
    row("idle timeout", show(config.idle_timeout));
    row("max age", show(config.max_age));
    row(
        "cleanup interval",
        readable_duration(config.cleanup_interval),
    );
    row(
        "rate limit",
        config.rate_limit.map_or_else(
            || "off".to_owned(),
            |l| format!("{}/s per session, burst {}", l.per_second, l.burst),
        ),
    );
    row("max in flight", config.max_in_flight.to_string());
    Ok(())
}

fn show(d: Option<Duration>) -> String {
    d.map_or_else(|| "off".to_owned(), readable_duration)
}
