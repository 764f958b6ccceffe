use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shadowcat::bench::{parse_capacities, render, write_plot, BenchPlan, BenchRow, Progress};
use shadowcat::cli::{BenchArgs, Cli, Command, PolicyArgs, PolicyCommand, TraceFormatArg};
use shadowcat::replay::CapacityMode;
use shadowcat::session::{NewSession, SessionTable};
use shadowcat::trace::{read_trace, CsvOptions, SyntheticSpec, Trace, TraceFormat};
use shadowcat::wasm::{
    self, locate, open_policy, policy_files, OpenedPolicy, PolicyEngine, PolicySource, WasmPolicy,
    BUILTIN_POLICIES,
};
use shadowcat::TableConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn engine(args: &PolicyArgs) -> Result<Arc<PolicyEngine>, wasm::PolicyError> {
    PolicyEngine::new(args.limits(), args.cache_dir())
}

fn open(args: &PolicyArgs, spec: &str, capacity: u64) -> Result<OpenedPolicy> {
    let config = wasm::parse_config_pairs(&args.policy_config)?;
    Ok(open_policy(
        spec,
        &args.dirs(),
        || engine(args),
        capacity,
        config,
    )?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
        Some(Command::Config) => show_config(&cli),
        Some(Command::Policy(PolicyCommand::List)) => list_policies(&cli.policy),
        Some(Command::Policy(PolicyCommand::Check { file })) => check_policy(&cli.policy, &file),
        Some(Command::Bench(ref args)) => bench(&cli.policy, args),
    }
}

/// Progress bars on a terminal, nothing otherwise; a log line per finished replay.
struct Bars {
    bar: Option<ProgressBar>,
}

impl Bars {
    fn new_bar(len: u64, message: String) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg:<28} [{bar:30}] {percent:>3}% {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(message);
        bar
    }
}

impl Progress for Bars {
    fn replay_started(&mut self, policy: &str, capacity: &str, requests: u64) {
        self.bar = Some(Self::new_bar(requests, format!("{policy} @ {capacity}")));
    }

    fn replay_advanced(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn replay_finished(&mut self, row: &BenchRow) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!(
            policy = %row.policy,
            capacity = %row.capacity_label,
            miss_ratio = format_args!("{:.4}", row.miss_ratio),
            mrps = format_args!("{:.2}", row.throughput_mrps),
            "replayed"
        );
    }
}

fn load_trace(args: &BenchArgs) -> Result<Trace> {
    let Some(path) = &args.trace else {
        let spec: SyntheticSpec = args
            .synthetic
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid --synthetic `{}`: {e}", args.synthetic))?;
        let started = Instant::now();
        let trace = shadowcat::trace::try_generate(&spec)?;
        tracing::info!(spec = %spec, requests = trace.len(), distinct = trace.distinct_ids(), elapsed = ?started.elapsed(), "generated synthetic trace");
        return Ok(trace);
    };
    let csv = CsvOptions {
        id_column: args.csv_id_column,
        time_column: args.csv_time_column,
        size_column: args.csv_size_column,
        delimiter: u8::try_from(args.csv_delimiter)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| anyhow::anyhow!("--csv-delimiter must be one ASCII character"))?,
        has_header: args.csv_header,
    };
    let format = match args.trace_format {
        Some(TraceFormatArg::Oracle) => TraceFormat::OracleGeneral,
        Some(TraceFormatArg::Text) => TraceFormat::Text,
        Some(TraceFormatArg::Csv) => TraceFormat::Csv(csv),
        None => match shadowcat::trace::detect_format(path) {
            Some(TraceFormat::Csv(_)) => TraceFormat::Csv(csv),
            Some(other) => other,
            None => anyhow::bail!(
                "cannot tell the format of {} from its name; give --trace-format oracle|csv|text",
                path.display()
            ),
        },
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = Bars::new_bar(size, format!("reading {}", path.display()));
    let started = Instant::now();
    let trace = read_trace(path, &format, &mut |done, _| bar.set_position(done));
    bar.finish_and_clear();
    let trace = trace?;
    tracing::info!(requests = trace.len(), distinct = trace.distinct_ids(), skipped_zero_size = trace.skipped_zero_size, elapsed = ?started.elapsed(), "read trace");
    Ok(trace)
}

fn bench(policy_args: &PolicyArgs, args: &BenchArgs) -> Result<()> {
    let mut capacities = Vec::new();
    for list in &args.capacity {
        capacities.extend(parse_capacities(list).map_err(|e| anyhow::anyhow!("--capacity: {e}"))?);
    }
    let dirs = policy_args.dirs();
    let policies = if args.policies.is_empty() {
        let mut names: Vec<String> = BUILTIN_POLICIES.iter().map(|s| (*s).to_owned()).collect();
        names.extend(policy_files(&dirs).into_iter().map(|(name, _)| name));
        names
    } else {
        args.policies.clone()
    };
    let plan = BenchPlan {
        capacities,
        policies,
        mode: if args.bytes {
            CapacityMode::Bytes
        } else {
            CapacityMode::Objects
        },
        belady: !args.no_belady,
    };
    let trace = load_trace(args)?;
    let config = wasm::parse_config_pairs(&policy_args.policy_config)?;
    let shared_engine: OnceLock<Arc<PolicyEngine>> = OnceLock::new();
    let get_engine = || -> Result<Arc<PolicyEngine>, wasm::PolicyError> {
        if let Some(e) = shared_engine.get() {
            return Ok(Arc::clone(e));
        }
        let e = engine(policy_args)?;
        Ok(Arc::clone(shared_engine.get_or_init(|| e)))
    };
    let opener = |name: &str, capacity: u64| {
        open_policy(name, &dirs, get_engine, capacity, config.clone()).map(|p| p.eviction())
    };
    let report = shadowcat::bench::run(&trace, &plan, &opener, &mut Bars { bar: None })?;
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    print!("{}", render(&report, args.format)?);
    if let Some(path) = &args.plot {
        write_plot(&report, path)?;
        tracing::info!(path = %path.display(), "wrote plot");
    }
    Ok(())
}

fn show_config(cli: &Cli) -> Result<()> {
    let config = cli.table.table_config();
    config
        .validate()
        .context("invalid session table configuration")?;
    let policy = open(
        &cli.policy,
        &cli.table.eviction_policy,
        config.max_sessions as u64,
    )?;
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
        humantime::format_duration(config.cleanup_interval).to_string(),
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
    d.map_or_else(
        || "off".to_owned(),
        |d| humantime::format_duration(d).to_string(),
    )
}

fn list_policies(args: &PolicyArgs) -> Result<()> {
    println!(
        "{:<10} {:<9} {:<26} {:>9}  FILE",
        "NAME", "VERSION", "NEEDS", "SIZE"
    );
    for name in BUILTIN_POLICIES {
        let needs = if name == "fifo" {
            "inserted+removed"
        } else {
            "inserted+accessed+removed"
        };
        println!(
            "{name:<10} {:<9} {needs:<26} {:>9}  (built in)",
            "native", "-"
        );
    }
    let files = policy_files(&args.dirs());
    if files.is_empty() {
        println!("(no .wasm policies in {})", display_dirs(args));
        return Ok(());
    }
    let engine = engine(args)?;
    for (_, path) in files {
        match WasmPolicy::load(Arc::clone(&engine), &path, 1_000, Vec::new()) {
            Ok(policy) => {
                let info = policy.info();
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                println!(
                    "{:<10} {:<9} {:<26} {:>9}  {}",
                    info.name,
                    info.version,
                    info.needs_label(),
                    size,
                    path.display()
                );
            }
            Err(e) => println!(
                "{:<10} {:<9} {:<26} {:>9}  {}: {e}",
                "?",
                "-",
                "-",
                "-",
                path.display()
            ),
        }
    }
    Ok(())
}

fn display_dirs(args: &PolicyArgs) -> String {
    args.dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_policy(args: &PolicyArgs, spec: &str) -> Result<()> {
    let path = match locate(spec, &args.dirs())? {
        PolicySource::File(path) => path,
        PolicySource::Builtin(name) => {
            println!("`{name}` is a built-in native policy; nothing to check.");
            return Ok(());
        }
    };
    let engine = engine(args)?;
    let started = Instant::now();
    let loaded = engine.load(&path)?;
    let load_time = started.elapsed();
    println!(
        "interface   ok: exports {} and imports nothing else ({} bytes, sha256 {})",
        wasm::POLICY_EXPORT,
        loaded.size,
        &loaded.sha256[..16]
    );
    println!(
        "load        {:?} ({})",
        load_time,
        if loaded.from_cache {
            "from cache"
        } else {
            "compiled"
        }
    );
    let capacity = 1_000usize;
    let config = wasm::parse_config_pairs(&args.policy_config)?;
    let started = Instant::now();
    let policy = WasmPolicy::load(Arc::clone(&engine), &path, capacity as u64, config)?;
    println!(
        "instantiate {:?} (load, instantiate, create, info)",
        started.elapsed()
    );
    let info = policy.info();
    println!(
        "info        {} {}, needs {}, batch size {}",
        info.name,
        info.version,
        info.needs_label(),
        info.batch_size
    );
    // Smoke sequence: fill, touch, then churn past capacity so every create asks
    // the policy for a victim.
    let table = SessionTable::<()>::builder(TableConfig::unbounded_in_time(capacity))
        .policy(policy.clone())
        .clock(shadowcat::session::Clock::manual())
        .build_shared()?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..(3 * capacity) {
        table.clock().set(i as u64);
        let created = table.create(NewSession::new(()))?;
        ids.push(created.id);
        if i % 3 == 0 {
            let _ = table.touch(ids[i / 2], 1);
        }
    }
    table.run_maintenance();
    let smoke = started.elapsed();
    let m = policy.metrics();
    let t = table.metrics();
    println!(
        "smoke       {} creates, {} evictions in {:?}; {} calls, {} events, {} faults, {} invalid victims, {} fallback victims",
        3 * capacity,
        t.evicted,
        smoke,
        m.calls,
        m.events_delivered,
        m.faults(),
        t.invalid_victims,
        t.fallback_victims
    );
    println!(
        "call time   p50 <= {:?}, p99 <= {:?}",
        m.call_p50.unwrap_or_default(),
        m.call_p99.unwrap_or_default()
    );
    anyhow::ensure!(
        m.faults() == 0,
        "the policy faulted during the smoke sequence"
    );
    anyhow::ensure!(table.len() == capacity, "the table lost sessions");
    println!("ok");
    Ok(())
}
