use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use shadowcat::cli::{Cli, Command, PolicyArgs, PolicyCommand};
use shadowcat::session::{NewSession, SessionTable};
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
    }
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
        .build()?;
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
