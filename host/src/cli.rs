//! Command line of the `shadowcat` binary.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, parse_optional_duration, parse_size, RateLimit, TableConfig};
use crate::wasm::{default_policy_dirs, PolicyEngine, PolicyLimits};

const ABOUT: &str = "Shadowcat: an MCP proxy with a bounded session table whose eviction \
policy is a pluggable, sandboxed WebAssembly component.";

const LONG_ABOUT: &str = "Shadowcat: an MCP proxy with a bounded session table whose eviction \
policy is a pluggable, sandboxed WebAssembly component.

The session table holds at most --max-sessions client sessions. A session unused for \
--idle-timeout, or older than --max-age, is expired by a cleanup that runs every \
--cleanup-interval. When the table is full, creating a session evicts one chosen by \
--eviction-policy; sessions with a request in flight are never evicted. Each session may \
make --rate-limit requests per second, with bursts of --burst.

Durations take a unit: 250ms, 90s, 5m, 1h, 1h30m; `off` disables a timeout.";

#[derive(Debug, Parser)]
#[command(name = "shadowcat", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(flatten)]
    pub table: TableArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `shadowcat=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    pub log: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the options, load the eviction policy and print the effective
    /// session-table configuration.
    Config,
    /// Inspect WebAssembly eviction policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List built-in policies and the `.wasm` policies found in the policy directories.
    List,
    /// Validate a policy file (interface and version), instantiate it, run a smoke
    /// sequence of events and decisions, and print timings.
    Check {
        /// A `.wasm` component, or a policy name looked up like --eviction-policy.
        file: String,
    },
}

/// Options of the WebAssembly policy host.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Where `--eviction-policy NAME` looks for `NAME.wasm` first (then `policies/`
    /// next to the executable).
    #[arg(long, global = true, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,

    /// A `key=value` setting passed to the policy's `create`; repeat for more.
    #[arg(long = "policy-config", global = true, value_name = "KEY=VALUE")]
    pub policy_config: Vec<String>,

    /// Longest one call into a WebAssembly policy may run before it is interrupted
    /// (the decision then follows the host LRU order).
    #[arg(long, global = true, default_value = "20ms", value_name = "DURATION",
          value_parser = parse_duration)]
    pub policy_timeout: Duration,

    /// Most linear memory a WebAssembly policy instance may use.
    #[arg(long, global = true, default_value = "64MiB", value_name = "SIZE",
          value_parser = parse_size)]
    pub policy_memory: usize,

    /// Consecutive faults after which a policy is quarantined (the host LRU takes over).
    #[arg(long, global = true, default_value_t = 5, value_name = "N")]
    pub policy_max_faults: u32,

    /// Directory of compiled policy artefacts (default: $XDG_CACHE_HOME/shadowcat
    /// or ~/.cache/shadowcat); `off` disables the cache.
    #[arg(long, global = true, value_name = "DIR")]
    pub policy_cache: Option<String>,
}

impl PolicyArgs {
    pub fn limits(&self) -> PolicyLimits {
        PolicyLimits {
            call_timeout: self.policy_timeout,
            memory_bytes: self.policy_memory,
            max_consecutive_faults: self.policy_max_faults.max(1),
            ..PolicyLimits::default()
        }
    }

    pub fn cache_dir(&self) -> Option<PathBuf> {
        match self.policy_cache.as_deref() {
            Some("off") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => PolicyEngine::default_cache_dir(),
        }
    }

    pub fn dirs(&self) -> Vec<PathBuf> {
        default_policy_dirs(self.policy_dir.as_deref())
    }
}

/// Options of the session table, shared by every command.
#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Most sessions held at once; creating one more evicts one.
    #[arg(long, global = true, default_value_t = 1_000, value_name = "N")]
    pub max_sessions: usize,

    /// Expire a session unused for this long (`off`: never).
    #[arg(long, global = true, default_value = "1h", value_name = "DURATION",
          value_parser = parse_optional_duration)]
    // Spelled out so clap parses `off` to `None` instead of treating it as optional.
    pub idle_timeout: ::std::option::Option<Duration>,

    /// Expire a session this long after it was created, however busy (`off`: never).
    #[arg(long, global = true, default_value = "24h", value_name = "DURATION",
          value_parser = parse_optional_duration)]
    pub max_age: ::std::option::Option<Duration>,

    /// How often expired sessions are cleaned up.
    #[arg(long, global = true, default_value = "60s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub cleanup_interval: Duration,

    /// Requests per second allowed per session (`off`: unlimited).
    #[arg(long, global = true, default_value = "100", value_name = "PER_SECOND",
          value_parser = parse_rate)]
    pub rate_limit: ::std::option::Option<NonZeroU32>,

    /// Requests a session may make at once above its rate.
    #[arg(long, global = true, default_value = "50", value_name = "N")]
    pub burst: NonZeroU32,

    /// Most requests in flight across all sessions; more are refused as overloaded.
    #[arg(long, global = true, default_value_t = 10_000, value_name = "N")]
    pub max_in_flight: usize,

    /// Which session to evict when the table is full: built-in `lru` (least
    /// recently used) or `fifo` (oldest created), a WebAssembly policy by name
    /// (`lfu`, `lfu.wasm`: looked up in --policy-dir), or a path to a `.wasm` file.
    #[arg(long, global = true, default_value = "lru", value_name = "POLICY")]
    pub eviction_policy: String,
}

fn parse_rate(text: &str) -> Result<Option<NonZeroU32>, String> {
    match text.trim() {
        "off" | "unlimited" => Ok(None),
        other => other.parse::<NonZeroU32>().map(Some).map_err(|_| {
            format!("`{other}` is not a positive whole number of requests per second (or `off`)")
        }),
    }
}

impl TableArgs {
    /// The table configuration these options describe (validated by the table).
    pub fn table_config(&self) -> TableConfig {
        TableConfig {
            max_sessions: self.max_sessions,
            idle_timeout: self.idle_timeout,
            max_age: self.max_age,
            cleanup_interval: self.cleanup_interval,
            rate_limit: self.rate_limit.map(|per_second| RateLimit {
                per_second,
                burst: self.burst,
            }),
            max_in_flight: self.max_in_flight,
            ..TableConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cli_parses_durations_and_policies() {
        let cli = Cli::try_parse_from([
            "shadowcat",
            "--max-sessions",
            "5",
            "--idle-timeout",
            "90s",
            "--max-age",
            "off",
            "--cleanup-interval",
            "5m",
            "--rate-limit",
            "off",
            "--eviction-policy",
            "fifo",
            "config",
        ])
        .expect("valid command line");
        let config = cli.table.table_config();
        assert_eq!(config.max_sessions, 5);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(config.max_age, None);
        assert_eq!(config.cleanup_interval, Duration::from_secs(300));
        assert_eq!(config.rate_limit, None);
        assert_eq!(cli.table.eviction_policy, "fifo");
    }

    #[test]
    fn session_cli_rejects_bad_durations_with_a_hint() {
        let err = Cli::try_parse_from(["shadowcat", "--idle-timeout", "10", "config"])
            .expect_err("a bare number is ambiguous");
        assert!(err.to_string().contains("no unit"), "{err}");
        let err = Cli::try_parse_from(["shadowcat", "--cleanup-interval", "soon", "config"])
            .expect_err("not a duration");
        assert!(err.to_string().contains("90s"), "{err}");
        let err = Cli::try_parse_from(["shadowcat", "--rate-limit", "0", "config"])
            .expect_err("zero rate");
        assert!(err.to_string().contains("positive"), "{err}");
    }
}
