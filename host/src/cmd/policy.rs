//! `shadowcat policy list` and `shadowcat policy check`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use shadowcat::cli::PolicyArgs;
use shadowcat::session::{NewSession, Rejected, SessionTable};
use shadowcat::wasm::{self, locate, policy_files, PolicySource, WasmPolicy, BUILTIN_POLICIES};
use shadowcat::TableConfig;

use super::common::engine;

pub fn list(args: &PolicyArgs) -> Result<()> {
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

pub fn check(args: &PolicyArgs, spec: &str) -> Result<()> {
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
        let created = table
            .create(NewSession::new(()))
            .map_err(Rejected::into_error)?;
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
