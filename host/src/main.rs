use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};
use shadowcat::cli::{replay_ignores, Cli, Command, ForwardCommand, PolicyCommand};
use shadowcat::proxy::upstream::reaper::{self, REAPER_ARG};

mod cmd;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == REAPER_ARG) {
        reaper::run();
        return ExitCode::SUCCESS;
    }
    let expanded =
        match shadowcat::cli::config_file::expand(&Cli::command(), std::env::args_os().collect()) {
            Ok(expanded) => expanded,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        };
    let parsed = shadowcat::cli::command()
        .try_get_matches_from(&expanded.args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => match expanded.blame(&err) {
            Some(blamed) => {
                eprintln!("error: {blamed}");
                return ExitCode::from(2);
            }
            None => shadowcat::cli::explain_misplaced_option(err).exit(),
        },
    };
    if cli.command.is_none() && std::env::args_os().len() > 1 {
        // Options alone would print the help and exit 0, as if they had done
        // something.
        let given: Vec<String> = std::env::args().skip(1).collect();
        eprintln!(
            "error: no command after the options: they apply to one of reverse, forward, bench, \
             config, policy or session, e.g.\n  shadowcat {} reverse --upstream-stdio \"CMD ARGS\"\n\n\
             For more information, try 'shadowcat --help'.",
            given.join(" ")
        );
        return ExitCode::from(2);
    }
    init_tracing(&cli.log);
    if matches!(cli.command, Some(Command::Bench(_))) {
        // Top-level keys of a config file are shared with the proxy, so they
        // say nothing about what the user expects of a replay.
        let ignored: Vec<String> = replay_ignores(&matches)
            .into_iter()
            .filter(|long| !expanded.set_by_top_level(long))
            .map(|long| format!("--{long}"))
            .collect();
        if !ignored.is_empty() {
            tracing::warn!(
                "{} {} no effect on bench: the replay bounds the session table by --capacity only, \
                 with no expiry, rate limit or in-flight bound",
                ignored.join(", "),
                if ignored.len() == 1 { "has" } else { "have" }
            );
        }
    }
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
    // Colour codes only for a terminal: in a file or a pipe they are noise.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let prints_only = matches!(
        cli.command,
        None | Some(Command::Config | Command::Policy(_) | Command::Bench(_) | Command::Session(_))
    );
    if prints_only {
        cmd::end_quietly_when_stdout_closes();
    }
    match cli.command {
        None => {
            shadowcat::cli::command().print_help()?;
            Ok(())
        }
        Some(Command::Config) => cmd::config::run(&cli),
        Some(Command::Policy(PolicyCommand::List)) => cmd::policy::list(&cli.policy),
        Some(Command::Policy(PolicyCommand::Check { file })) => {
            cmd::policy::check(&cli.policy, &file)
        }
        Some(Command::Bench(ref args)) => cmd::bench::run(&cli, args),
        Some(Command::Reverse(ref args)) => {
            // An HTTP upstream starts no process here: nothing to reap.
            if args.upstream_stdio.is_some() {
                enable_reaper();
            }
            runtime()?.block_on(cmd::reverse::run(&cli, args))
        }
        Some(Command::Forward(ref command)) => {
            // An HTTP server is no process of ours: nothing to reap.
            if matches!(command, ForwardCommand::Stdio { .. }) {
                enable_reaper();
            }
            let runtime = runtime()?;
            let ended = runtime.block_on(cmd::forward::run(&cli, command));
            // Tokio reads stdin on a blocking thread, which stays in its read
            // while the client keeps its end open: a run the server ended
            // must not wait for the client to close it.
            runtime.shutdown_background();
            ended
        }
        Some(Command::Session(ref args)) => runtime()?.block_on(cmd::session::run(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Upstream servers' own children must not outlive a killed proxy either
/// (see `proxy::upstream::reaper`); without the reaper the direct children
/// still die with the proxy.
fn enable_reaper() {
    if let Err(err) = reaper::enable() {
        tracing::warn!(%err, "cannot start the upstream reaper; a server's own children could outlive a killed proxy");
    }
}
