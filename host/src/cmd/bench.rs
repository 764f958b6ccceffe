//! `shadowcat bench`: replay a trace under several policies and print the comparison.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use shadowcat::bench::{
    check_plot_path, parse_capacities, render, write_plot, BenchPlan, BenchRow, Progress,
};
use shadowcat::cli::{BenchArgs, Cli, TraceFormatArg};
use shadowcat::replay::CapacityMode;
use shadowcat::trace::{read_trace, CsvOptions, SyntheticSpec, Trace, TraceFormat};
use shadowcat::wasm::config::{configure, PolicyArg};
use shadowcat::wasm::{
    self, locate, policy_files, ConfiguredPolicy, LoadedComponent, OpenedPolicy, PolicyEngine,
    PolicySource, PolicyTable, WasmPolicy, BUILTIN_POLICIES,
};

use super::common::engine;

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
    // Before guessing a format from the name: "cannot tell the format" of a
    // file that is not there, or of a directory, sends the reader the wrong way.
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the trace {}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!(
            "the trace {} is a directory; give a trace file",
            path.display()
        );
    }
    let detected = shadowcat::trace::detect_format(path);
    let format = match args.trace_format {
        Some(TraceFormatArg::Oracle) => TraceFormat::OracleGeneral,
        Some(TraceFormatArg::Text) => TraceFormat::Text,
        Some(TraceFormatArg::Csv) => {
            let named = match detected {
                Some(TraceFormat::Csv(named)) => named,
                _ => CsvOptions::default(),
            };
            TraceFormat::Csv(csv_options(args, named)?)
        }
        None => match detected {
            Some(TraceFormat::Csv(named)) => TraceFormat::Csv(csv_options(args, named)?),
            Some(other) => other,
            None => anyhow::bail!(
                "cannot tell the format of {} from its name; give --trace-format oracle|csv|text",
                path.display()
            ),
        },
    };
    let bar = Bars::new_bar(meta.len(), format!("reading {}", path.display()));
    let started = Instant::now();
    let trace = read_trace(path, &format, &mut |done, _| bar.set_position(done));
    bar.finish_and_clear();
    let trace = trace?;
    tracing::info!(requests = trace.len(), distinct = trace.distinct_ids(), skipped_zero_size = trace.skipped_zero_size, elapsed = ?started.elapsed(), "read trace");
    Ok(trace)
}

/// The CSV options the file name implies (a tab for `.tsv`), with those given
/// on the command line in their place.
fn csv_options(args: &BenchArgs, named: CsvOptions) -> Result<CsvOptions> {
    let delimiter = match args.csv_delimiter {
        Some(given) => u8::try_from(given)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| anyhow::anyhow!("--csv-delimiter must be one ASCII character"))?,
        None => named.delimiter,
    };
    Ok(CsvOptions {
        id_column: args.csv_id_column.unwrap_or(named.id_column),
        time_column: args.csv_time_column.or(named.time_column),
        size_column: args.csv_size_column.or(named.size_column),
        delimiter,
        has_header: args.csv_header.or(named.has_header),
    })
}

/// The policies to compare with their settings: `--policy` (or the default
/// set), plus `--eviction-policy`'s, which must load. `load` loads a policy
/// file; in the default set, a file it refuses is skipped with a warning.
fn select_policies(
    cli: &Cli,
    args: &BenchArgs,
    load: &dyn Fn(&Path) -> Result<(), wasm::PolicyError>,
) -> Result<Vec<ConfiguredPolicy>> {
    let dirs = cli.policy.dirs();
    let mut requested: Vec<PolicyArg> = if args.policies.is_empty() {
        let mut names: Vec<String> = BUILTIN_POLICIES.iter().map(|s| (*s).to_owned()).collect();
        for (name, path) in policy_files(&dirs) {
            // Nobody asked for this one by name: a stray file in a policy
            // directory must not stop the comparison of the others.
            match load(&path) {
                Ok(()) => names.push(name),
                Err(e) => tracing::warn!("skipped, not a loadable policy: {e}"),
            }
        }
        names
            .into_iter()
            .map(|spec| PolicyArg {
                spec,
                config: Vec::new(),
            })
            .collect()
    } else {
        args.policies
            .iter()
            .map(|p| PolicyArg::parse(p))
            .collect::<Result<_, _>>()?
    };
    let chosen = cli.table.eviction_policy.as_str();
    let source = locate(chosen, &dirs).with_context(|| format!("--eviction-policy {chosen}"))?;
    // The same policy without inline settings counts as included already.
    let present = requested
        .iter()
        .position(|p| p.config.is_empty() && locate(&p.spec, &dirs).is_ok_and(|s| s == source));
    let index = present.unwrap_or_else(|| {
        requested.push(PolicyArg {
            spec: chosen.to_owned(),
            config: Vec::new(),
        });
        requested.len() - 1
    });
    let chosen_wasm = matches!(source, PolicySource::File(_)).then_some(index);
    Ok(configure(
        requested,
        chosen_wasm,
        &cli.policy.policy_config,
        &dirs,
    )?)
}

pub fn run(cli: &Cli, args: &BenchArgs) -> Result<()> {
    let policy_args = &cli.policy;
    let mut capacities = Vec::new();
    for list in &args.capacity {
        capacities.extend(parse_capacities(list).map_err(|e| anyhow::anyhow!("--capacity: {e}"))?);
    }
    if let Some(path) = &args.plot {
        check_plot_path(path)?;
    }
    let dirs = policy_args.dirs();
    let shared_engine: OnceLock<Arc<PolicyEngine>> = OnceLock::new();
    let get_engine = || -> Result<Arc<PolicyEngine>, wasm::PolicyError> {
        if let Some(e) = shared_engine.get() {
            return Ok(Arc::clone(e));
        }
        let e = engine(policy_args)?;
        Ok(Arc::clone(shared_engine.get_or_init(|| e)))
    };
    // Each file is compiled (or read from the cache) once, then instantiated
    // for every capacity it runs at.
    let components: Mutex<HashMap<PathBuf, LoadedComponent>> = Mutex::new(HashMap::new());
    let component = |path: &Path| -> Result<LoadedComponent, wasm::PolicyError> {
        if let Some(component) = components.lock().get(path).cloned() {
            return Ok(component);
        }
        let component = get_engine()?.load(path)?;
        components.lock().insert(path.to_owned(), component.clone());
        Ok(component)
    };
    if args.policies.is_empty() && !policy_files(&dirs).is_empty() {
        // Up front, so that an engine that cannot start fails the command
        // instead of passing for a fault of every file the default set skips.
        get_engine()?;
    }
    let policies = select_policies(cli, args, &|path| component(path).map(drop))?;
    let plan = BenchPlan {
        capacities,
        policies,
        mode: if args.bytes {
            CapacityMode::Bytes
        } else {
            CapacityMode::Objects
        },
        belady: !args.no_belady,
        named: !args.policies.is_empty(),
        rounds: args.rounds,
    };
    let trace = load_trace(args)?;
    let opener = |policy: &ConfiguredPolicy,
                  table: PolicyTable|
     -> Result<OpenedPolicy, wasm::PolicyError> {
        match locate(&policy.spec, &dirs)? {
            PolicySource::Builtin(name) => wasm::open_builtin(name, &policy.config),
            PolicySource::File(path) => {
                let engine = get_engine()?;
                let component = component(&path)?;
                let policy =
                    WasmPolicy::from_component(engine, component, table, policy.config.clone())?;
                Ok(OpenedPolicy::Wasm(policy))
            }
        }
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
