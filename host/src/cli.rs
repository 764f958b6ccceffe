//! Command line of the `shadowcat` binary.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};

use crate::bench::OutputFormat;

mod cluster;
pub mod config_file;
mod proxy;

use crate::config::{
    parse_duration, parse_optional_duration, parse_size, readable_duration, RateLimit, TableConfig,
    MAX_RATE,
};
use crate::wasm::{default_policy_dirs, PolicyEngine, PolicyLimits, EPOCH_TICK};
pub use cluster::ClusterArgs;
pub use proxy::{
    ForwardCommand, ForwardUpstreamArgs, ReverseArgs, SessionAction, SessionArgs, UpstreamArgs,
    DEFAULT_ADMIN_LISTEN,
};

const ABOUT: &str = "Shadowcat: an MCP proxy with a bounded session table whose eviction \
policy is a pluggable, sandboxed WebAssembly component.";

const LONG_ABOUT: &str = "Shadowcat: an MCP proxy with a bounded session table whose eviction \
policy is a pluggable, sandboxed WebAssembly component.

The session table holds at most --max-sessions client sessions. A session unused for \
--idle-timeout, or older than --max-age, is expired by a cleanup that runs every \
--cleanup-interval. When the table is full, creating a session evicts one chosen by \
--eviction-policy; sessions with a request in flight are never evicted. Each session may \
make --rate-limit requests per second, with bursts of --burst.

Durations take a unit: 250ms, 90s, 5m, 1h, 1h30m; `off` disables a timeout.

Start here:
  serve MCP clients        shadowcat --eviction-policy lfu.wasm reverse --upstream-stdio \"CMD ARGS\"
  proxy a stdio client     shadowcat forward stdio -- CMD ARGS
  ... to a remote server   shadowcat forward http https://mcp.example.com/mcp
  a proxy's sessions       shadowcat session list
  compare the policies     shadowcat bench
  policies found           shadowcat policy list";

#[derive(Debug, Parser)]
#[command(name = "shadowcat", version, about = ABOUT, long_about = LONG_ABOUT, args_override_self = true)]
pub struct Cli {
    /// Read options from a TOML file: top-level keys are global options,
    /// `[reverse]`, `[forward.stdio]`, `[bench]` hold a command's; keys are
    /// long option names (`max-sessions = 500`). Flags override the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `shadowcat=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER",
          value_parser = parse_log_filter)]
    pub log: String,

    #[command(flatten)]
    pub table: TableArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the options (every section of a --config file too), load the
    /// eviction policy and print the effective session-table configuration.
    Config,
    /// Inspect WebAssembly eviction policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Replay an access trace through the session table and compare eviction
    /// policies side by side.
    #[command(long_about = BENCH_ABOUT)]
    Bench(BenchArgs),
    /// Serve MCP clients over streamable HTTP, one upstream per session.
    #[command(long_about = proxy::REVERSE_ABOUT)]
    Reverse(Box<ReverseArgs>),
    /// Proxy one MCP client on stdin/stdout to a server it starts, or to one
    /// at a URL.
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// List, delete or clean up the sessions of a running proxy.
    Session(SessionArgs),
}

const BENCH_ABOUT: &str = "Replay an access trace through the session table and compare eviction policies side by side.

Each request names an object (a session). A request whose session is still in the table is a hit; otherwise it is a miss: the session is created again, evicting as the policy decides. The replay drives the same table and policy host the proxy uses, on the trace's own virtual time (nothing sleeps); the policy's maintenance tick runs every 60 s of trace time, as the proxy's cleanup does by default, and each session carries its object id as its stable key. Every request counts, cold misses included; there is no warm-up; records of size 0 are skipped. Capacity counts objects (every object 1) unless --bytes is given, then object sizes in bytes.

Without --trace, a synthetic trace is generated (see --synthetic), so the command needs no files. Belady's offline optimum is shown as the floor, and every policy's wall time is compared with the native LRU measured in the same run. With --rounds N every policy is replayed N times per capacity in a rotated order: wall times are medians, and the cost against the native LRU is the median of the ratios within each round, with their range.

Policies: the built-in lru and fifo and every .wasm policy found, unless --policy names some; the policy named by --eviction-policy is always included, and the command fails if it cannot be loaded. Every policy is opened at each capacity it runs at; a policy that refuses a capacity (a minimum table size) is skipped there with a warning. Settings go to one policy: inline (--policy lfu.wasm:k=v,k2=v2) or scoped (--policy-config lfu.wasm:k=v). A global --policy-config k=v goes to the --eviction-policy when that is a WebAssembly policy, else to the only WebAssembly policy compared; it is an error when several could take it, and never goes to a built-in (they take none). A configured policy is labelled with its settings (lfu.wasm:k=v), so one policy can be compared under several settings.

When some evictions were not the policy's own choice (the host's LRU order stood in because the policy faulted, timed out, answered with an error, was quarantined or proposed no valid victim), a warning names the cause and counts.

The last column, calls/1k, counts the calls into a WebAssembly policy per 1,000 requests (- for the built-ins). Each crossing into the sandbox costs about as much as a few dozen evictions: a policy asked at every eviction (one choosing among sampled candidates, or one whose choice depends on the arriving session) shows about as many calls as evictions; one whose victims are chosen ahead (stable-order) a few per 1,000; one whose order holds only while no client it remembers returns (ghost-conditional) about one per such return.

Examples:
  shadowcat bench
  shadowcat bench --trace cloudPhysicsIO.bin --capacity 4897 --policy lru --policy fifo.wasm
  shadowcat bench --trace t.csv --csv-id-column 1 --capacity 0.01,0.1 --policy lfu --plot out.svg
  shadowcat bench --policy lfu-decay.wasm:samples=10 --policy lfu-decay.wasm --capacity 1%
  shadowcat bench --no-belady --capacity 1%,10% --rounds 5
  shadowcat --eviction-policy ./my-policy.wasm bench --capacity 4897
  shadowcat bench --synthetic zipf:alpha=0.8,requests=5000000,ids=500000 --format json";

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Trace file: oracleGeneral binary (`.bin`, `.oracleGeneral.bin`), CSV (`.csv`) or
    /// text with one id per line (`.txt`); any may end in `.zst`. Omit for a synthetic trace.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Trace format when the file name does not tell.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub trace_format: Option<TraceFormatArg>,

    /// CSV: 0-based column of the object id (default: 0).
    #[arg(long, value_name = "N")]
    pub csv_id_column: Option<usize>,
    /// CSV: 0-based column of the time in seconds (default: the row number).
    #[arg(long, value_name = "N")]
    pub csv_time_column: Option<usize>,
    /// CSV: 0-based column of the size in bytes (default: none, every object has size 1).
    #[arg(long, value_name = "N")]
    pub csv_size_column: Option<usize>,
    /// CSV: field delimiter (default: a tab for `.tsv`, else `,`).
    #[arg(long, value_name = "CHAR")]
    pub csv_delimiter: Option<char>,
    /// CSV: whether the first row is a header (default: detected).
    #[arg(long, value_name = "BOOL")]
    pub csv_header: Option<bool>,

    /// The synthetic trace used without --trace: `zipf`, `uniform`, `scan` (Zipf mixed
    /// with scans) or `loop`, with `key=value` settings: alpha, requests, ids, seed,
    /// every, length.
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "zipf:alpha=1.0,requests=1000000,ids=100000,seed=42"
    )]
    pub synthetic: String,

    /// Capacities, comma-separated or repeated: a whole number of objects (4897),
    /// or a share of the trace's distinct objects, as a fraction with a decimal
    /// point (0.01; 1.0 is all of them, while 1 is one object) or a percentage (1%).
    #[arg(long, value_name = "LIST", default_value = "0.01,0.05,0.1")]
    pub capacity: Vec<String>,

    /// A policy to compare, as --eviction-policy takes it, optionally with its
    /// settings: `lfu.wasm:k=v,k2=v2` (repeat for more). Default: the built-in lru
    /// and fifo, and every .wasm policy found; --eviction-policy's is always added.
    #[arg(long = "policy", value_name = "POLICY[:KEY=VALUE,...]")]
    pub policies: Vec<String>,

    /// Capacity counts bytes (object sizes) instead of objects. Policies are
    /// told so: those whose queues are sized in sessions (arc, s3fifo, twoq,
    /// wtinylfu) refuse it, and are left out of the default set with a
    /// warning.
    #[arg(long)]
    pub bytes: bool,

    /// Leave out Belady's offline optimum.
    #[arg(long)]
    pub no_belady: bool,

    /// Replay every policy N times at each capacity, starting each round one
    /// policy further along the list, and show the median wall time; cost vs lru
    /// is then the median of the ratios to the native LRU of the same round, with
    /// their range. On a busy machine a single replay's time can be off by tens
    /// of percent; miss counts do not change between rounds.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,

    /// Output format of the results.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,

    /// Also draw miss ratio against capacity for every policy (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormatArg {
    /// libCacheSim oracleGeneral: 24-byte binary records.
    Oracle,
    Csv,
    /// One object id per line.
    Text,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List built-in policies and the `.wasm` policies found in the policy directories.
    List,
    /// Check that a policy keeps the host's contract: validate the file (interface
    /// and version), instantiate it, drive it through a session table (inserts,
    /// accesses, removals, evictions, maintain and adjust-quotas rounds) and fail,
    /// with the reason, on any fault or error answer, on invalid or missing victims
    /// beyond 1%, or on more victims than asked for. Prints timings.
    Check {
        /// A `.wasm` component, or a policy name looked up like --eviction-policy.
        file: String,
    },
}

/// Options of the WebAssembly policy host.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Policy host options")]
pub struct PolicyArgs {
    /// Where `--eviction-policy NAME` looks for `NAME.wasm` first (then `policies/`
    /// next to the executable).
    #[arg(long, global = true, value_name = "DIR", value_parser = parse_policy_dir)]
    pub policy_dir: Option<PathBuf>,

    /// A `key=value` setting passed to the policy's `create`; repeat for more.
    /// `POLICY:key=value` gives it to that policy only (in `bench`, where several
    /// policies run); a bare `key=value` goes to the WebAssembly policy in use.
    #[arg(
        long = "policy-config",
        global = true,
        value_name = "[POLICY:]KEY=VALUE"
    )]
    pub policy_config: Vec<String>,

    /// Longest one call into a WebAssembly policy may run before it is interrupted
    /// (`create` included; a decision then follows the host LRU order). At
    /// least 1ms, the step in which a call's deadline is kept.
    #[arg(long, global = true, default_value = "20ms", value_name = "DURATION",
          value_parser = parse_policy_timeout)]
    pub policy_timeout: Duration,

    /// Most linear memory a WebAssembly policy instance may use.
    #[arg(long, global = true, default_value = "64MiB", value_name = "SIZE",
          value_parser = parse_size)]
    pub policy_memory: usize,

    /// Consecutive faults (traps, timeouts, memory) after which a policy is
    /// quarantined (the host LRU takes over until it is reloaded). An `Err` answer
    /// is not a fault.
    #[arg(long, global = true, default_value_t = 5, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub policy_max_faults: u32,

    /// Quarantine a policy once N of its last CALLS calls faulted, however spread
    /// out (a policy that faults on and off never makes a streak).
    #[arg(long, global = true, default_value = "10/200", value_name = "N/CALLS",
          value_parser = parse_fault_rate)]
    pub policy_fault_rate: (u32, u32),

    /// Victims asked per call, at most, of a policy that declares a stable
    /// victim order, then handed out one eviction at a time without calling it
    /// again, until an event names one (or, for a policy whose order holds only
    /// for arrivals it does not remember, an arrival may be one of its ghosts).
    /// The host starts at 32 (or N, if lower) and asks twice as many after an
    /// answer handed out whole, half as many after one mostly wasted; a policy
    /// of the second kind stays at 32. The host trusts the declaration and
    /// cannot see it broken: a policy whose order does not hold decides
    /// differently with prefetch. `policy check` tests the promise by comparing
    /// its victims with and without. 1 turns prefetching off.
    #[arg(long, global = true, default_value_t = crate::wasm::PREFETCH, value_name = "N",
          value_parser = parse_prefetch)]
    pub policy_prefetch: usize,

    /// Directory of compiled policy artefacts (default: $XDG_CACHE_HOME/shadowcat
    /// or ~/.cache/shadowcat); `off` disables the cache.
    #[arg(long, global = true, value_name = "DIR")]
    pub policy_cache: Option<String>,

    /// Also reload a WebAssembly policy when its file changes, looking this
    /// often (its size and modification time); `off`: only on SIGHUP. A file
    /// caught half-copied fails to load and the running policy stays, until
    /// the copy completes and changes the file again.
    #[arg(long, global = true, default_value = "off", value_name = "DURATION",
          value_parser = parse_optional_duration)]
    // Spelled out so clap parses `off` to `None` instead of treating it as optional.
    pub policy_watch: ::std::option::Option<Duration>,
}

fn parse_fault_rate(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not N/CALLS (e.g. 10/200: ten faults within 200 calls)");
    let (faults, calls) = text.split_once('/').ok_or_else(bad)?;
    let faults: u32 = faults.trim().parse().map_err(|_| bad())?;
    let calls: u32 = calls.trim().parse().map_err(|_| bad())?;
    if faults == 0 || calls == 0 || faults > calls {
        return Err(format!("`{text}`: need 1 <= N <= CALLS"));
    }
    Ok((faults, calls))
}

impl PolicyArgs {
    pub fn limits(&self) -> PolicyLimits {
        let (max_window_faults, fault_window) = self.policy_fault_rate;
        PolicyLimits {
            call_timeout: self.policy_timeout,
            memory_bytes: self.policy_memory,
            max_consecutive_faults: self.policy_max_faults,
            max_window_faults,
            fault_window,
            prefetch: self.policy_prefetch,
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
#[command(next_help_heading = "Session table options")]
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

    /// Most requests a session may make at once: the size of its bucket, which
    /// refills at --rate-limit per second (with --burst 1 the requests are spaced
    /// out at exactly the rate).
    #[arg(long, global = true, default_value = "50", value_name = "N",
          value_parser = parse_burst)]
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

fn parse_prefetch(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a victim count from 1 (off) to 4096"
        )),
    }
}

/// The shortest `--policy-timeout`. A call's deadline is counted in whole
/// ticks of the engine's epoch ticker, so a shorter timeout cannot be kept as
/// written: every timeout under a tick interrupts a call wherever the tick
/// under way happens to end (`0s` fails `create` itself), and the wait for an
/// instance busy with another call, bounded by the same timeout, gives up at
/// once, handing most evictions to the host LRU order.
const SHORTEST_POLICY_TIMEOUT: Duration = EPOCH_TICK;

fn parse_policy_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < SHORTEST_POLICY_TIMEOUT {
        return Err(format!(
            "`{}` is under the shortest policy timeout, {} (a call's deadline is counted in \
             ticks of {})",
            text.trim(),
            readable_duration(SHORTEST_POLICY_TIMEOUT),
            readable_duration(EPOCH_TICK)
        ));
    }
    Ok(timeout)
}

/// A burst: a bucket of fewer than one request would admit nothing, and the
/// table refuses one above [`MAX_RATE`], so the range given is the one that
/// runs.
pub(crate) fn parse_burst(text: &str) -> Result<NonZeroU32, String> {
    text.trim()
        .parse::<NonZeroU32>()
        .ok()
        .filter(|burst| burst.get() <= MAX_RATE)
        .ok_or_else(|| format!("`{text}` is not a whole number of requests from 1 to {MAX_RATE}"))
}

/// Checked here, not where the policies are looked up: a directory that is
/// not there would otherwise be skipped, and the policies in it silently
/// replaced by those found elsewhere.
fn parse_policy_dir(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(format!("{} is not a directory", path.display())),
        Err(e) => Err(format!(
            "cannot read the policy directory {}: {e}",
            path.display()
        )),
    }
}

/// Checked here, not when logging starts: a filter that does not parse would
/// otherwise leave the default level in place without a word.
fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| {
            format!(
                "`{text}` is not a log filter ({e}); use error, warn, info, debug, trace or a \
                 directive such as shadowcat=debug"
            )
        })
}

/// A rate per second, or none: like [`parse_burst`], bounded by [`MAX_RATE`]
/// here, so that a rate the table would refuse is refused with its range.
pub(crate) fn parse_rate(text: &str) -> Result<Option<NonZeroU32>, String> {
    match text.trim() {
        "off" | "unlimited" => Ok(None),
        other => other
            .parse::<NonZeroU32>()
            .ok()
            .filter(|rate| rate.get() <= MAX_RATE)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "`{other}` is not a whole number per second from 1 to {MAX_RATE} (or `off`)"
                )
            }),
    }
}

/// The session-table options a replay does not use: it bounds the table by
/// its capacity alone, on virtual time, with no expiry, rate limit or
/// in-flight bound.
const IGNORED_BY_REPLAY: [&str; 7] = [
    "max-sessions",
    "idle-timeout",
    "max-age",
    "cleanup-interval",
    "rate-limit",
    "burst",
    "max-in-flight",
];

/// The command line as parsed and as `--help` shows it. The table's and the
/// policy host's options are global, so that they may come before or after
/// the command, and a config file's top-level keys serve every command; but
/// `session` (a client of a running proxy) uses none of them, `policy` not the
/// table's and `bench` not those of [`IGNORED_BY_REPLAY`], so their help
/// leaves those out. They still parse there (`bench` warns that they do
/// nothing).
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    // Copies the global options into every command, where each copy can be
    // hidden on its own.
    command.build();
    let table = argument_ids::<TableArgs>();
    let policy_host = argument_ids::<PolicyArgs>();
    // `--max-sessions -1` and `--idle-timeout -1s` reach the value's parser,
    // which says what is wrong with them, rather than being taken for an
    // unknown flag. Hyphens are let through only where the help promises a
    // duration or a size: another option's missing value must still be
    // reported as missing, not as the next flag taken for it.
    let command = mut_args_everywhere(command, &|arg| {
        if !arg.get_action().takes_values() {
            return arg;
        }
        let duration_or_size = arg.get_value_names().is_some_and(|names| {
            names
                .iter()
                .any(|name| ["DURATION", "SIZE"].contains(&name.as_str()))
        });
        arg.allow_negative_numbers(true)
            .allow_hyphen_values(duration_or_size)
    });
    command.mut_subcommands(|sub| match sub.get_name() {
        "session" => mut_args_everywhere(
            sub,
            &hiding(&|arg| table.contains(arg.get_id()) || policy_host.contains(arg.get_id())),
        ),
        // A policy is checked on a table of its own making.
        "policy" => mut_args_everywhere(sub, &hiding(&|arg| table.contains(arg.get_id()))),
        "bench" => sub.mut_args(|arg| {
            let hidden = arg
                .get_long()
                .is_some_and(|long| IGNORED_BY_REPLAY.contains(&long));
            arg.hide(hidden)
        }),
        _ => sub,
    })
}

/// Hides the options `hidden` picks, shows the others.
fn hiding<'a>(hidden: &'a dyn Fn(&clap::Arg) -> bool) -> impl Fn(clap::Arg) -> clap::Arg + 'a {
    move |arg| {
        let hide = hidden(&arg);
        arg.hide(hide)
    }
}

/// `command` and every command under it (`build` copied the global options
/// into each) with `change` made to each of their options.
fn mut_args_everywhere(
    command: clap::Command,
    change: &dyn Fn(clap::Arg) -> clap::Arg,
) -> clap::Command {
    command
        .mut_args(change)
        .mut_subcommands(|sub| mut_args_everywhere(sub, change))
}

fn argument_ids<A: Args>() -> Vec<clap::Id> {
    A::augment_args(clap::Command::new("options"))
        .get_arguments()
        .map(|arg| arg.get_id().clone())
        .collect()
}

/// The options of [`IGNORED_BY_REPLAY`] that `matches` (of [`Cli`]) holds a
/// value for that was given rather than defaulted, by long name.
pub fn replay_ignores(matches: &ArgMatches) -> Vec<&'static str> {
    let command = Cli::command();
    IGNORED_BY_REPLAY
        .into_iter()
        .filter(|long| {
            command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long))
                .is_some_and(|arg| {
                    matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
                })
        })
        .collect()
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

/// Adds to clap's "unexpected argument" a tip naming the commands the
/// option belongs to, the usual slip being a command's option given before
/// the command or to another one (`shadowcat --upstream-stdio CMD`).
pub fn explain_misplaced_option(err: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    let Some(ContextValue::String(given)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let Some(long) = given
        .strip_prefix("--")
        .map(|rest| rest.split('=').next().unwrap_or(rest).to_owned())
    else {
        return err;
    };
    let root = command();
    let mut owners = Vec::new();
    commands_with_option(&root, "shadowcat", &long, &mut owners);
    let Some(last) = owners.pop() else {
        return err;
    };
    let owners = if owners.is_empty() {
        format!("`{last}`")
    } else {
        format!("`{}` and `{last}`", owners.join("`, `"))
    };
    let tip = format!("--{long} is an option of {owners}: give it after the command's name");
    // Rebuilt rather than added to: clap's "a similar argument exists"
    // (`--max-age` for `--max-message`) would point elsewhere.
    let mut explained = clap::Error::new(ErrorKind::UnknownArgument).with_cmd(&root);
    for kind in [ContextKind::InvalidArg, ContextKind::Usage] {
        if let Some(value) = err.get(kind).cloned() {
            explained.insert(kind, value);
        }
    }
    explained.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    explained
}

fn commands_with_option(command: &clap::Command, path: &str, long: &str, found: &mut Vec<String>) {
    for sub in command.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        let owns = sub
            .get_arguments()
            .any(|arg| !arg.is_global_set() && arg.get_long() == Some(long));
        if owns {
            found.push(sub_path.clone());
        }
        commands_with_option(sub, &sub_path, long, found);
    }
}

#[cfg(test)]
mod tests {
    use std::any::TypeId;
    use std::collections::HashSet;

    use super::*;

    /// The long options `--help` shows for the command at `path`.
    fn shown_options(path: &[&str]) -> Vec<String> {
        let mut root = command();
        let mut at = &mut root;
        for name in path {
            at = at.find_subcommand_mut(name).expect("a command");
        }
        at.get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| arg.get_long().map(str::to_owned))
            .collect()
    }

    #[test]
    fn each_command_shows_the_options_it_uses_and_parses_the_rest() {
        let has = |options: &[String], long: &str| options.iter().any(|o| o == long);
        for path in [
            &["session", "list"][..],
            &["session", "delete"],
            &["session"],
        ] {
            let shown = shown_options(path);
            assert!(has(&shown, "admin") && has(&shown, "config"), "{shown:?}");
            for ignored in [
                "max-sessions",
                "idle-timeout",
                "eviction-policy",
                "policy-dir",
            ] {
                assert!(!has(&shown, ignored), "{path:?} shows --{ignored}");
            }
        }
        for path in [&["policy", "check"][..], &["policy", "list"]] {
            let shown = shown_options(path);
            assert!(has(&shown, "policy-dir") && has(&shown, "policy-config"));
            assert!(!has(&shown, "max-sessions") && !has(&shown, "eviction-policy"));
        }
        let bench = shown_options(&["bench"]);
        assert!(has(&bench, "eviction-policy") && has(&bench, "policy-timeout"));
        for ignored in IGNORED_BY_REPLAY {
            assert!(!has(&bench, ignored), "bench shows --{ignored}");
        }
        let reverse = shown_options(&["reverse"]);
        for used in [
            "max-sessions",
            "idle-timeout",
            "eviction-policy",
            "policy-dir",
        ] {
            assert!(has(&reverse, used), "reverse hides --{used}");
        }
        // The shared options under their own headings, after the command's.
        let mut root = command();
        let reverse = root.find_subcommand_mut("reverse").expect("reverse");
        let heading = |long: &str| {
            reverse
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long))
                .and_then(|arg| arg.get_help_heading())
                .map(str::to_owned)
        };
        assert_eq!(heading("listen"), None);
        assert_eq!(heading("log"), None);
        assert_eq!(
            heading("max-sessions").as_deref(),
            Some("Session table options")
        );
        assert_eq!(
            heading("policy-dir").as_deref(),
            Some("Policy host options")
        );
        // A negative number is a value its parser refuses, not an unknown flag.
        for (argv, said) in [
            (
                &["shadowcat", "--max-sessions", "-1", "config"][..],
                "invalid value '-1' for '--max-sessions <N>'",
            ),
            (
                &["shadowcat", "bench", "--rounds", "-3"],
                "invalid value '-3' for '--rounds <N>'",
            ),
        ] {
            let refused = command().try_get_matches_from(argv).expect_err("refused");
            assert_eq!(refused.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(refused.to_string().contains(said), "{refused}");
        }
        // Hidden, not refused: one config file serves every command.
        for argv in [
            &["shadowcat", "session", "list", "--max-sessions", "3"][..],
            &["shadowcat", "bench", "--idle-timeout", "5m"],
        ] {
            let matches = command().try_get_matches_from(argv).expect("parses");
            <Cli as clap::FromArgMatches>::from_arg_matches(&matches).expect("a command line");
        }
    }

    /// Every command with its path from the root, with the global options
    /// `build` copied into each.
    fn every_command() -> Vec<(Vec<String>, clap::Command)> {
        fn walk(
            command: &clap::Command,
            path: Vec<String>,
            out: &mut Vec<(Vec<String>, clap::Command)>,
        ) {
            out.push((path.clone(), command.clone()));
            for sub in command.get_subcommands() {
                let mut sub_path = path.clone();
                sub_path.push(sub.get_name().to_owned());
                walk(sub, sub_path, out);
            }
        }
        let mut root = command();
        root.build();
        let mut commands = Vec::new();
        walk(&root, Vec::new(), &mut commands);
        commands
    }

    #[test]
    fn negative_durations_and_sizes_reach_their_parser_on_every_command() {
        let mut checked = HashSet::new();
        for (path, command) in &every_command() {
            for arg in command.get_arguments() {
                let parses = arg.get_value_parser().type_id();
                let value = if parses == TypeId::of::<Duration>()
                    || parses == TypeId::of::<Option<Duration>>()
                {
                    "-1s"
                } else if arg
                    .get_value_names()
                    .is_some_and(|names| names.iter().any(|n| n == "SIZE"))
                {
                    "-1MiB"
                } else {
                    continue;
                };
                let Some(long) = arg.get_long() else { continue };
                let mut argv = vec!["shadowcat".to_owned()];
                argv.extend(path.iter().cloned());
                argv.extend([format!("--{long}"), value.to_owned()]);
                let refused = super::command()
                    .try_get_matches_from(&argv)
                    .expect_err("a negative value");
                let said = refused.to_string();
                assert_eq!(
                    refused.kind(),
                    clap::error::ErrorKind::ValueValidation,
                    "{argv:?}: {said}"
                );
                assert!(said.contains("cannot be negative"), "{argv:?}: {said}");
                checked.insert(long.to_owned());
            }
        }
        for long in [
            "idle-timeout",
            "max-age",
            "cleanup-interval",
            "policy-timeout",
            "policy-memory",
            "policy-watch",
            "init-timeout",
            "max-body",
            "max-message",
            "shutdown-grace",
            "upstream-grace",
            "upstream-timeout",
        ] {
            assert!(
                checked.contains(long),
                "--{long} was not checked: {checked:?}"
            );
        }
        // A missing value is still missing, not the next option taken for it.
        let refused = command()
            .try_get_matches_from([
                "shadowcat",
                "--eviction-policy",
                "--max-sessions",
                "5",
                "config",
            ])
            .expect_err("no policy given");
        assert_eq!(
            refused.kind(),
            clap::error::ErrorKind::InvalidValue,
            "{refused}"
        );
    }

    #[test]
    fn every_shown_option_is_described_as_it_works_in_its_command() {
        for (path, command) in &every_command() {
            for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
                let described = arg
                    .get_help()
                    .is_some_and(|help| !help.to_string().trim().is_empty());
                assert!(described, "{path:?}: {} has no help", arg.get_id());
            }
        }
        // `forward stdio` has no HTTP, neither to its server nor to its client.
        let forward = shown_options(&["forward", "stdio"]);
        assert!(
            !forward.iter().any(|long| long == "upstream-timeout"),
            "{forward:?}"
        );
        let forward_help = command()
            .try_get_matches_from(["shadowcat", "forward", "stdio", "--help"])
            .expect_err("help")
            .to_string();
        assert!(
            forward_help.contains("--upstream-max-pending"),
            "{forward_help}"
        );
        assert!(!forward_help.contains("503"), "{forward_help}");
        let reverse = shown_options(&["reverse"]);
        assert!(
            reverse.iter().any(|long| long == "upstream-timeout"),
            "{reverse:?}"
        );
    }

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
    fn policy_cli_parses_the_fault_rate() {
        let cli = Cli::try_parse_from(["shadowcat", "--policy-fault-rate", "3/50", "config"])
            .expect("valid");
        let limits = cli.policy.limits();
        assert_eq!((limits.max_window_faults, limits.fault_window), (3, 50));
        let defaults = Cli::try_parse_from(["shadowcat", "config"]).expect("valid");
        let limits = defaults.policy.limits();
        assert_eq!((limits.max_window_faults, limits.fault_window), (10, 200));
        for bad in ["0/10", "11/10", "ten", "5/"] {
            assert!(
                Cli::try_parse_from(["shadowcat", "--policy-fault-rate", bad, "config"]).is_err(),
                "{bad}"
            );
        }
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
        assert!(err.to_string().contains("from 1 to"), "{err}");
    }

    #[test]
    fn cli_upstream_headers_and_origins_are_checked_and_headers_kept_out_of_logs() {
        let reverse = |headers: &[&str]| {
            let mut argv = vec!["shadowcat", "reverse", "--upstream-http", "http://h/mcp"];
            for header in headers {
                argv.extend(["--upstream-header", header]);
            }
            Cli::try_parse_from(argv)
        };
        let cli = reverse(&["Authorization: Bearer secret-key", "X-Team:  blue "]).expect("parsed");
        let Some(Command::Reverse(args)) = &cli.command else {
            panic!("reverse: {cli:?}");
        };
        let given: Vec<(&str, &[u8])> = args
            .upstream_headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_bytes()))
            .collect();
        assert_eq!(
            given,
            [
                ("authorization", &b"Bearer secret-key"[..]),
                ("x-team", &b"blue"[..])
            ]
        );
        assert!(
            !format!("{cli:?}").contains("secret-key"),
            "a debug print shows no header value"
        );
        let e = Cli::try_parse_from([
            "shadowcat",
            "reverse",
            "--upstream-stdio",
            "true",
            "--allowed-origin",
            "app.example.com",
        ])
        .expect_err("no scheme")
        .to_string();
        assert!(e.contains("`app.example.com` is not an origin"), "{e}");
        for (header, says) in [
            ("Content-Type: text/plain", "set by the proxy itself"),
            ("MCP-Session-Id: 1", "set by the proxy itself"),
            ("Host: example.com", "set by the proxy itself"),
            ("Authorization Bearer k", "is not `NAME: VALUE`"),
            ("bad name: x", "is not a header name"),
            ("X-Key: a\u{7f}b", "no header may carry"),
        ] {
            let e = reverse(&[header]).expect_err(header).to_string();
            assert!(e.contains(says), "{header}: {e}");
        }
    }

    #[test]
    fn cli_rejects_values_that_would_be_ignored_or_misread() {
        let err = |args: &[&str]| {
            let mut argv = vec!["shadowcat"];
            argv.extend(args);
            argv.push("config");
            Cli::try_parse_from(argv).expect_err("refused").to_string()
        };
        let e = err(&["--log", "bogus[[["]);
        assert!(e.contains("not a log filter"), "{e}");
        let e = err(&["--policy-max-faults", "0"]);
        assert!(e.contains("1..="), "{e}");
        // The range refused at parse time is the one the table accepts.
        for burst in ["0", "1000001", "4294967295"] {
            let e = err(&["--burst", burst]);
            assert!(
                e.contains("whole number of requests from 1 to 1000000"),
                "{e}"
            );
            assert!(!e.contains("zero for non-zero type"), "{e}");
        }
        for rate in ["0", "1000001", "4294967296"] {
            let e = err(&["--rate-limit", rate]);
            assert!(
                e.contains("whole number per second from 1 to 1000000"),
                "{e}"
            );
            let e = Cli::try_parse_from([
                "shadowcat",
                "reverse",
                "--upstream-stdio",
                "true",
                "--init-rate",
                rate,
            ])
            .expect_err("refused")
            .to_string();
            assert!(
                e.contains("whole number per second from 1 to 1000000"),
                "{e}"
            );
        }
        for largest in [["--burst", "1000000"], ["--rate-limit", "1000000"]] {
            let cli = Cli::try_parse_from(["shadowcat", largest[0], largest[1], "config"])
                .unwrap_or_else(|e| panic!("{largest:?}: {e}"));
            cli.table
                .table_config()
                .validate()
                .unwrap_or_else(|e| panic!("{largest:?}: the table refuses it: {e}"));
        }
        // Under one epoch tick a call's deadline is not the one given.
        for timeout in ["0s", "1ns", "999us"] {
            let e = err(&["--policy-timeout", timeout]);
            assert!(
                e.contains(&format!(
                    "`{timeout}` is under the shortest policy timeout, 1ms"
                )),
                "{e}"
            );
        }
        let cli = Cli::try_parse_from(["shadowcat", "--policy-timeout", "1ms", "config"])
            .expect("one tick");
        assert_eq!(cli.policy.limits().call_timeout, EPOCH_TICK);
        let e = err(&["--policy-dir", "/nonexistent/policies"]);
        assert!(e.contains("/nonexistent/policies"), "{e}");
        let cli = Cli::try_parse_from(["shadowcat", "--log", "shadowcat=debug,warn", "config"])
            .expect("a directive");
        assert_eq!(cli.log, "shadowcat=debug,warn");
    }

    /// The examples are what a newcomer copies: each must stay on one line
    /// in a help piped through `less` (clap wraps at 100 columns without a
    /// terminal) and be a command line the parser accepts.
    #[test]
    fn help_examples_fit_a_line_and_parse() {
        let examples: Vec<&str> = LONG_ABOUT
            .split_once("Start here:\n")
            .expect("LONG_ABOUT has its examples")
            .1
            .lines()
            .collect();
        assert!(examples.len() >= 5, "{examples:?}");
        for line in &examples {
            assert!(line.len() <= 100, "wraps in --help: {line}");
        }
        // The bench examples too must parse (running them is
        // `replay_cli_help_examples_with_policy_settings_run`'s part).
        let bench_examples = BENCH_ABOUT
            .split_once("Examples:\n")
            .expect("BENCH_ABOUT has its examples")
            .1
            .lines()
            .collect::<Vec<_>>();
        for line in &bench_examples {
            assert!(line.len() <= 100, "wraps in bench --help: {line}");
        }
        for line in examples.into_iter().chain(bench_examples) {
            let (_, command) = line.split_once("shadowcat ").expect("an example command");
            let mut args = vec!["shadowcat".to_owned()];
            // The only quoting the examples use: one double-quoted argument.
            for (i, part) in command.split('"').enumerate() {
                if i % 2 == 1 {
                    args.push(part.to_owned());
                } else {
                    args.extend(part.split_whitespace().map(str::to_owned));
                }
            }
            if let Err(err) = Cli::try_parse_from(&args) {
                panic!("`{line}` does not parse: {err}");
            }
        }
    }
}
