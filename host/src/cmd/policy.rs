//! `shadowcat policy list` and `shadowcat policy check`.

use std::sync::Arc;

use anyhow::Result;
use shadowcat::cli::PolicyArgs;
use shadowcat::text_table::{Align, TextTable};
use shadowcat::wasm::conformance::{self, CheckPlan};
use shadowcat::wasm::{self, locate, policy_files, PolicySource, WasmPolicy, BUILTIN_POLICIES};

use super::common::engine;

pub fn list(args: &PolicyArgs) -> Result<()> {
    let mut table = TextTable::new([
        ("NAME", Align::Left),
        ("VERSION", Align::Left),
        ("INTERFACE", Align::Left),
        ("NEEDS", Align::Left),
        ("TRAITS", Align::Left),
        ("SIZE", Align::Right),
        ("FILE", Align::Left),
    ]);
    for name in BUILTIN_POLICIES {
        let needs = if name == "fifo" {
            "inserted+removed"
        } else {
            "inserted+accessed+removed"
        };
        table.row([name, "native", "-", needs, "-", "-", "(built in)"]);
    }
    let files = policy_files(&args.dirs());
    if !files.is_empty() {
        let engine = engine(args)?;
        for (_, path) in &files {
            match WasmPolicy::load(Arc::clone(&engine), path, 1_000, Vec::new()) {
                Ok(policy) => {
                    let info = policy.info();
                    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    table.row([
                        info.name.clone(),
                        info.version.clone(),
                        info.interface.to_string(),
                        info.needs_label(),
                        info.traits_label(),
                        size.to_string(),
                        path.display().to_string(),
                    ]);
                }
                Err(e) => table.row([
                    "?".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    format!("{}: {e}", path.display()),
                ]),
            }
        }
    }
    print!("{}", table.render());
    if files.is_empty() {
        println!("(no .wasm policies in {})", display_dirs(args));
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
    let dirs = args.dirs();
    let path = match locate(spec, &dirs)? {
        PolicySource::File(path) => path,
        PolicySource::Builtin(name) => {
            println!("`{name}` is a built-in native policy; nothing to check.");
            return Ok(());
        }
    };
    let config = wasm::config::config_for(spec, &args.policy_config, &dirs)?;
    let engine = engine(args)?;
    let plan = CheckPlan::default();
    let r = conformance::check(&engine, &path, config, plan.clone())?;
    println!(
        "interface   ok: exports {} and imports nothing else ({} bytes, sha256 {})",
        wasm::POLICY_EXPORT,
        r.size,
        r.sha256.get(..16).unwrap_or(&r.sha256)
    );
    println!(
        "load        {:?} ({})",
        r.load_time,
        if r.from_cache {
            "from cache"
        } else {
            "compiled"
        }
    );
    println!(
        "instantiate {:?} (instantiate, create, info)",
        r.instantiate_time
    );
    println!(
        "info        {} {} (interface {}), needs {}, traits {}, batch size {}",
        r.info.name,
        r.info.version,
        r.info.interface,
        r.info.needs_label(),
        r.info.traits_label(),
        r.info.batch_size
    );
    let (t, m) = (&r.table, &r.policy);
    println!(
        "smoke       {} creates into {} sessions, {} evictions, {} closed, {} deleted, {} expired in {:?}",
        t.created,
        plan.capacity,
        t.evicted,
        t.closed,
        t.deleted_by_admin,
        t.expired_idle,
        r.run_time
    );
    println!(
        "victims     {} proposed, {} invalid, {} beyond the count; {} evictions chosen by the host",
        m.proposed_victims,
        t.invalid_victims + m.repeated_victims,
        m.excess_victims,
        t.fallback_victims
    );
    if let Some(order) = &r.order {
        let (reported, other) = order.prefetch;
        println!(
            "order       {} {} asked {} and {} at a time ({} evictions compared)",
            order.promise,
            if order.first_difference.is_none() {
                "kept: the same victims"
            } else {
                "broken: other victims"
            },
            conformance::asked_per_call(reported),
            conformance::asked_per_call(other),
            order.evictions
        );
    }
    println!(
        "maintenance {} rounds of maintain and adjust-quotas, {} quota adjustments",
        r.maintenance_rounds, m.quota_adjustments
    );
    println!(
        "calls       {} calls, {} events, {} faults, {} error answers",
        m.calls,
        m.events_delivered,
        m.faults(),
        m.guest_errors
    );
    println!(
        "call time   p50 <= {:?}, p99 <= {:?}",
        m.call_p50.unwrap_or_default(),
        m.call_p99.unwrap_or_default()
    );
    if r.passed() {
        println!("ok");
        return Ok(());
    }
    for failure in &r.failures {
        println!("FAILED      {failure}");
    }
    anyhow::bail!(
        "{} does not keep the policy contract: {}",
        path.display(),
        r.failures.join("; ")
    )
}
