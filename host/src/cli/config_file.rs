//! `--config shadowcat.toml`: any option from a file, flags overriding it.
//!
//! Top-level keys are global options, a table per command holds that
//! command's options (`[reverse]`, `[forward.stdio]`, `[bench]`), and every
//! key is an option's long name without the dashes:
//!
//! ```toml
//! max-sessions = 500
//! eviction-policy = "lfu.wasm"
//! policy-config = ["k=8"]
//!
//! [reverse]
//! listen = "0.0.0.0:8080"
//! upstream-stdio = "mcp-server-everything stdio"
//! ```
//!
//! The file becomes command-line arguments placed before the user's own (each
//! command's right after its name), so clap validates file values exactly as
//! it validates flags, and a flag given on the command line wins because the
//! last occurrence of an option does. An unknown key is an error that names it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: unknown key `{key}` in {section}; known keys: {known}", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        section: String,
        known: String,
    },
    #[error("{}: `{key}` in {section} must be {expected}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        section: String,
        expected: &'static str,
    },
    #[error("--config needs a file name")]
    MissingPath,
}

/// The config file named by `--config` in `args`, if any.
fn config_path(args: &[OsString]) -> Result<Option<PathBuf>, ConfigFileError> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == "--config" {
            return iter
                .next()
                .map(|p| Some(PathBuf::from(p)))
                .ok_or(ConfigFileError::MissingPath);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Ok(Some(PathBuf::from(path)));
        }
    }
    Ok(None)
}

/// `args` with the config file's options spliced in (unchanged without
/// `--config`). `command` is the CLI's clap command, for the known keys.
pub fn expand(command: &Command, args: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(path) = config_path(&args)? else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let globals = to_args(&path, command, &table, "the top level", true)?;
    let mut expanded: Vec<OsString> = args.first().cloned().into_iter().collect();
    expanded.extend(globals);
    // Walk down the user's subcommands, inserting each one's section after it.
    let mut current = command.clone();
    let mut section: Option<&toml::Table> = Some(&table);
    let mut section_name = String::new();
    for arg in args.into_iter().skip(1) {
        let sub = arg
            .to_str()
            .and_then(|name| current.find_subcommand(name).cloned());
        expanded.push(arg);
        if let Some(sub) = sub {
            let name = sub.get_name().to_owned();
            section_name = if section_name.is_empty() {
                format!("[{name}]")
            } else {
                format!("{}.{name}]", section_name.trim_end_matches(']'))
            };
            section = section
                .and_then(|s| s.get(&name))
                .and_then(toml::Value::as_table);
            if let Some(options) = section {
                expanded.extend(to_args(&path, &sub, options, &section_name, false)?);
            }
            current = sub;
        }
    }
    Ok(expanded)
}

/// Arguments for one section's keys; sub-tables must name subcommands.
fn to_args(
    path: &Path,
    command: &Command,
    options: &toml::Table,
    section: &str,
    top_level: bool,
) -> Result<Vec<OsString>, ConfigFileError> {
    let mut out = Vec::new();
    for (key, value) in options {
        if let toml::Value::Table(_) = value {
            if command.find_subcommand(key).is_some() {
                continue;
            }
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && (!top_level || a.is_global_set()));
        let Some(arg) = arg.filter(|_| key != "config") else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
                section: section.to_owned(),
                known: known_keys(command, top_level),
            });
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let bad = |expected| ConfigFileError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
            section: section.to_owned(),
            expected,
        };
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for value in values {
            match (value, flag) {
                (toml::Value::Boolean(true), true) => out.push(format!("--{key}").into()),
                (toml::Value::Boolean(false), true) => {}
                (_, true) => return Err(bad("true or false")),
                (toml::Value::String(s), false) => {
                    out.push(format!("--{key}").into());
                    out.push(s.into());
                }
                (toml::Value::Integer(n), false) => {
                    out.push(format!("--{key}").into());
                    out.push(n.to_string().into());
                }
                (toml::Value::Float(x), false) => {
                    out.push(format!("--{key}").into());
                    out.push(x.to_string().into());
                }
                (toml::Value::Boolean(b), false) => {
                    out.push(format!("--{key}").into());
                    out.push(b.to_string().into());
                }
                _ => return Err(bad("a string, a number, a boolean or a list of them")),
            }
        }
    }
    Ok(out)
}

fn known_keys(command: &Command, top_level: bool) -> String {
    let mut keys: Vec<&str> = command
        .get_arguments()
        .filter(|a| !top_level || a.is_global_set())
        .filter_map(|a| a.get_long())
        .filter(|long| !matches!(*long, "config" | "help" | "version"))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.join(", ")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command as Sub};

    fn run(file: &str, args: &[&str]) -> Result<Cli, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("shadowcat.toml");
        std::fs::write(&path, file).map_err(|e| e.to_string())?;
        let mut argv: Vec<OsString> =
            vec!["shadowcat".into(), "--config".into(), path.clone().into()];
        argv.extend(args.iter().map(OsString::from));
        let expanded = expand(&Cli::command(), argv).map_err(|e| e.to_string())?;
        Cli::try_parse_from(expanded).map_err(|e| e.to_string())
    }

    #[test]
    fn proxy_config_file_sets_options_and_flags_override_it() {
        let file = r#"
            max-sessions = 7
            idle-timeout = "90s"
            policy-config = ["a=1", "b=2"]
            [reverse]
            listen = "127.0.0.1:9999"
            upstream-http = "http://127.0.0.1:3001/mcp"
            client-key = "header:x-api-key"
        "#;
        let cli = run(file, &["reverse"]).expect("valid");
        assert_eq!(cli.table.max_sessions, 7);
        assert_eq!(
            cli.table.idle_timeout,
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(cli.policy.policy_config, vec!["a=1", "b=2"]);
        let Some(Sub::Reverse(reverse)) = &cli.command else {
            panic!("reverse expected")
        };
        assert_eq!(reverse.listen.port(), 9999);
        assert_eq!(reverse.client_key.to_string(), "header:x-api-key");
        let cli = run(
            file,
            &[
                "--max-sessions",
                "9",
                "reverse",
                "--listen",
                "127.0.0.1:1234",
            ],
        )
        .expect("valid");
        assert_eq!(cli.table.max_sessions, 9, "the flag wins");
        let Some(Sub::Reverse(reverse)) = &cli.command else {
            panic!("reverse expected")
        };
        assert_eq!(reverse.listen.port(), 1234, "the flag wins");
    }

    #[test]
    fn proxy_config_file_names_unknown_keys_and_bad_values() {
        let err = run("max-sesions = 7", &["config"]).expect_err("typo");
        assert!(err.contains("unknown key `max-sesions`"), "{err}");
        assert!(err.contains("max-sessions"), "lists the known keys: {err}");
        let err = run("[reverse]\nlissen = \"x\"", &["reverse"]).expect_err("typo");
        assert!(err.contains("`lissen` in [reverse]"), "{err}");
        let err = run("listen = \"127.0.0.1:1\"", &["config"]).expect_err("not global");
        assert!(
            err.contains("unknown key `listen` in the top level"),
            "{err}"
        );
        let err = run("idle-timeout = \"soon\"", &["config"]).expect_err("bad duration");
        assert!(err.contains("not a duration"), "{err}");
        let err = run("max-sessions = [", &["config"]).expect_err("bad toml");
        assert!(err.contains("shadowcat.toml"), "{err}");
    }
}
