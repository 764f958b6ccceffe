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
//! it validates flags. A key whose option is also given on the command line is
//! left out, so the flag replaces the file's value, all of a list's values
//! included. An unknown key is an error that names it, and so is a value clap
//! refuses (see [`Expanded::blame`]).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::{ArgAction, Command};

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
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
    #[error("{}: unknown section `[{name}]`; sections: {known}", path.display())]
    UnknownSection {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error("{}: `{key}` in {section} must be {expected}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        section: String,
        expected: &'static str,
    },
    #[error("in {}: {key} = {value}: {message}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        /// As the file spells it.
        value: String,
        /// Why clap refused it.
        message: String,
    },
    /// A section whose options clap refused together, as a conflict.
    #[error("in {}: {section}: {message}", path.display())]
    Section {
        path: PathBuf,
        section: String,
        /// Why clap refused them.
        message: String,
    },
    #[error("--config needs a file name")]
    MissingPath,
}

/// The command line with the config file's options spliced in, and what the
/// file set.
#[derive(Debug, Default)]
pub struct Expanded {
    pub args: Vec<OsString>,
    path: Option<PathBuf>,
    entries: Vec<Entry>,
}

/// One option the file set.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    /// The value as handed to clap; `None` for a flag.
    value: Option<String>,
    /// The value as the file spells it.
    shown: String,
    /// Set by a top-level key, so a global option shared by every command.
    top_level: bool,
}

impl Expanded {
    /// Whether the option named `long` took its value from the file's
    /// top-level keys (rather than from a command's section or a flag).
    pub fn set_by_top_level(&self, long: &str) -> bool {
        // The last one set wins, a command's section coming after the top level.
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == long)
            .is_some_and(|e| e.top_level)
    }

    /// `error`, when the value clap refused came from the file, as an error
    /// naming the file and the key: the flag alone would send the user
    /// looking for it on a command line that does not have it.
    pub fn blame(&self, error: &clap::Error) -> Option<ConfigFileError> {
        let path = self.path.as_ref()?;
        let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
            return None;
        };
        let Some(ContextValue::String(value)) = error.get(ContextKind::InvalidValue) else {
            return None;
        };
        let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
        let entry = self
            .entries
            .iter()
            .find(|e| e.key == long && e.value.as_deref() == Some(value.as_str()))?;
        Some(ConfigFileError::Value {
            path: path.clone(),
            key: entry.key.clone(),
            value: entry.shown.clone(),
            message: first_line(error),
        })
    }
}

/// The line of a clap error that says what is wrong, without its `error: `.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
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

/// The long names of the options given on the command line.
fn given_options(args: &[OsString]) -> HashSet<String> {
    args.iter()
        .skip(1)
        .filter_map(|arg| arg.to_str())
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.strip_prefix("--"))
        .filter_map(|option| option.split('=').next())
        .map(str::to_owned)
        .collect()
}

/// `args` with the config file's options spliced in (unchanged without
/// `--config`). `command` is the CLI's clap command, for the known keys.
pub fn expand(command: &Command, args: Vec<OsString>) -> Result<Expanded, ConfigFileError> {
    let Some(path) = config_path(&args)? else {
        return Ok(Expanded {
            args,
            ..Expanded::default()
        });
    };
    let given = given_options(&args);
    let text = std::fs::read_to_string(&path).map_err(|error| ConfigFileError::Read {
        path: path.clone(),
        error,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let mut entries = Vec::new();
    let globals = to_args(
        &path,
        command,
        &table,
        "the top level",
        None,
        &given,
        &mut entries,
    )?;
    let mut expanded: Vec<OsString> = args.first().cloned().into_iter().collect();
    expanded.extend(globals);
    // Walk down the user's subcommands, inserting each one's section after it.
    let mut current = command.clone();
    let mut section: Option<&toml::Table> = Some(&table);
    let mut label = String::from("the top level");
    let mut first_command = None;
    for arg in args.into_iter().skip(1) {
        let sub = arg
            .to_str()
            .and_then(|name| current.find_subcommand(name).cloned());
        expanded.push(arg);
        if let Some(sub) = sub {
            let name = sub.get_name().to_owned();
            first_command.get_or_insert_with(|| name.clone());
            label = format!("[{}]", section_name(&label, &name));
            section = section
                .and_then(|s| s.get(&name))
                .and_then(toml::Value::as_table);
            if let Some(options) = section {
                expanded.extend(to_args(
                    &path,
                    &sub,
                    options,
                    &label,
                    Some(command),
                    &given,
                    &mut entries,
                )?);
            }
            current = sub;
        }
    }
    // `config` validates the file: every section, not only the top level it
    // uses, so a misspelt key under `[reverse]` shows before `reverse` runs.
    if first_command.as_deref() == Some("config") {
        let program = vec![expanded
            .first()
            .cloned()
            .unwrap_or_else(|| command.get_name().into())];
        check_sections(
            &path,
            command,
            command,
            &table,
            "the top level",
            &program,
            &[],
        )?;
    }
    Ok(Expanded {
        args: expanded,
        path: Some(path),
        entries,
    })
}

/// Checks each command's section in `table` (under `command`, at `section`)
/// as running that command would, keys and values, and the sections within
/// it. `command_line` is the command line that leads to `command`, with the
/// options of the sections on its way, which `entries` lists.
fn check_sections(
    path: &Path,
    root: &Command,
    command: &Command,
    table: &toml::Table,
    section: &str,
    command_line: &[OsString],
    entries: &[Entry],
) -> Result<(), ConfigFileError> {
    for (key, value) in table {
        let (Some(sub), Some(options)) = (command.find_subcommand(key), value.as_table()) else {
            continue;
        };
        let name = format!("[{}]", section_name(section, key));
        let mut sub_entries = entries.to_vec();
        let mut sub_line = command_line.to_vec();
        sub_line.push(key.into());
        sub_line.extend(to_args(
            path,
            sub,
            options,
            &name,
            Some(root),
            &HashSet::new(),
            &mut sub_entries,
        )?);
        check_values(path, root, &name, &sub_line, sub_entries.clone())?;
        check_sections(path, root, sub, options, &name, &sub_line, &sub_entries)?;
    }
    Ok(())
}

/// Parses `command_line`, a section's options after the command they belong
/// to, as running that command would, so that `config` refuses the values the
/// command would. What the section leaves to the command line, as
/// `reverse`'s upstream or `forward stdio`'s server, is not asked for.
fn check_values(
    path: &Path,
    root: &Command,
    section: &str,
    command_line: &[OsString],
    entries: Vec<Entry>,
) -> Result<(), ConfigFileError> {
    use clap::error::ErrorKind;
    let Err(error) = root.clone().try_get_matches_from(command_line) else {
        return Ok(());
    };
    if matches!(
        error.kind(),
        ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return Ok(());
    }
    let parsed = Expanded {
        args: Vec::new(),
        path: Some(path.to_owned()),
        entries,
    };
    Err(parsed
        .blame(&error)
        .unwrap_or_else(|| ConfigFileError::Section {
            path: path.to_owned(),
            section: section.to_owned(),
            message: first_line(&error),
        }))
}

/// Arguments for one section's keys, but those of options in `given`;
/// sub-tables must name subcommands. Each option set goes to `entries`.
/// `root` is the whole CLI for a command's section (whose keys may also be
/// global options, as its flags may), `None` for the top level.
fn to_args(
    path: &Path,
    command: &Command,
    options: &toml::Table,
    section: &str,
    root: Option<&Command>,
    given: &HashSet<String>,
    entries: &mut Vec<Entry>,
) -> Result<Vec<OsString>, ConfigFileError> {
    let top_level = root.is_none();
    let mut out = Vec::new();
    for (key, value) in options {
        if let toml::Value::Table(_) = value {
            if command.find_subcommand(key).is_some() {
                continue;
            }
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && (!top_level || a.is_global_set()))
            .or_else(|| {
                root?
                    .get_arguments()
                    .find(|a| a.get_long() == Some(key.as_str()) && a.is_global_set())
            });
        let Some(arg) = arg.filter(|_| key != "config") else {
            if let toml::Value::Table(_) = value {
                // `[revers]` is a misspelt section, not an option.
                return Err(ConfigFileError::UnknownSection {
                    path: path.to_owned(),
                    name: section_name(section, key),
                    known: known_sections(command, section)
                        .iter()
                        .map(|name| format!("[{name}]"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            return Err(ConfigFileError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
                section: section.to_owned(),
                known: known_keys(command, root),
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
        // Checked before leaving the key out, so a bad file fails whatever
        // the command line says.
        let mut texts = Vec::with_capacity(values.len());
        for value in values {
            let text = match (value, flag) {
                (toml::Value::Boolean(true), true) => None,
                (toml::Value::Boolean(false), true) => continue,
                (_, true) => return Err(bad("true or false")),
                (toml::Value::String(s), false) => Some(s.clone()),
                (toml::Value::Integer(n), false) => Some(n.to_string()),
                (toml::Value::Float(x), false) => Some(x.to_string()),
                (toml::Value::Boolean(b), false) => Some(b.to_string()),
                _ => return Err(bad("a string, a number, a boolean or a list of them")),
            };
            texts.push((text, value.to_string()));
        }
        if given.contains(key) {
            continue;
        }
        for (text, shown) in texts {
            // One argument, `--key=value`: a value starting with `-` given
            // apart would be taken for an option.
            out.push(match &text {
                Some(text) => format!("--{key}={text}").into(),
                None => format!("--{key}").into(),
            });
            entries.push(Entry {
                key: key.clone(),
                value: text,
                shown,
                top_level,
            });
        }
    }
    Ok(out)
}

/// `key` as a section's name under `section` (`the top level` or `[forward]`).
fn section_name(section: &str, key: &str) -> String {
    match section.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(parent) => format!("{parent}.{key}"),
        None => key.to_owned(),
    }
}

/// The sections a file may hold under `command`: its commands with options
/// of their own, as `reverse`, `session` or `forward.stdio`.
fn known_sections(command: &Command, section: &str) -> Vec<String> {
    let mut names = Vec::new();
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = section_name(section, sub.get_name());
        let has_options = sub.get_arguments().any(|a| {
            a.get_long()
                .is_some_and(|l| !matches!(l, "help" | "version"))
        });
        if has_options {
            names.push(name.clone());
        }
        names.extend(known_sections(sub, &format!("[{name}]")));
    }
    names
}

fn known_keys(command: &Command, root: Option<&Command>) -> String {
    let globals = root
        .into_iter()
        .flat_map(Command::get_arguments)
        .filter(|a| a.is_global_set());
    let mut keys: Vec<&str> = command
        .get_arguments()
        .filter(|a| root.is_some() || a.is_global_set())
        .chain(globals)
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
        Cli::try_parse_from(&expanded.args).map_err(|e| match expanded.blame(&e) {
            Some(blamed) => blamed.to_string(),
            None => e.to_string(),
        })
    }

    fn bench(cli: &Cli) -> &crate::cli::BenchArgs {
        match &cli.command {
            Some(Sub::Bench(args)) => args,
            other => panic!("bench expected, got {other:?}"),
        }
    }

    #[test]
    fn proxy_config_file_lists_are_replaced_by_the_flag_not_extended() {
        let file = r#"
            policy-config = ["a=1", "b=2"]
            [bench]
            capacity = "5%"
            policy = ["lru", "fifo"]
        "#;
        let cli = run(file, &["bench"]).expect("valid");
        assert_eq!(bench(&cli).capacity, vec!["5%"]);
        assert_eq!(bench(&cli).policies, vec!["lru", "fifo"]);
        assert_eq!(cli.policy.policy_config, vec!["a=1", "b=2"]);
        let cli = run(
            file,
            &[
                "bench",
                "--capacity",
                "10",
                "--policy",
                "sieve.wasm",
                "--policy-config=c=3",
            ],
        )
        .expect("valid");
        assert_eq!(bench(&cli).capacity, vec!["10"]);
        assert_eq!(bench(&cli).policies, vec!["sieve.wasm"]);
        assert_eq!(cli.policy.policy_config, vec!["c=3"]);
    }

    #[test]
    fn proxy_config_file_values_that_start_with_a_dash_are_values() {
        let cli = run("eviction-policy = \"-lfu\"", &["config"]).expect("a value");
        assert_eq!(cli.table.eviction_policy, "-lfu");
        let err = run("max-sessions = -3", &["config"]).expect_err("negative");
        assert!(err.contains("invalid value '-3'"), "{err}");
        assert!(!err.contains("unexpected argument"), "{err}");
    }

    #[test]
    fn proxy_config_file_bad_values_name_the_file_and_the_key() {
        let err = run("max-sessions = \"many\"", &["config"]).expect_err("not a number");
        assert!(
            err.starts_with("in ") && err.contains("shadowcat.toml: max-sessions = \"many\": "),
            "{err}"
        );
        assert!(err.contains("invalid value 'many'"), "{err}");
        let err = run("[bench]\nrounds = [2, 0]", &["bench"]).expect_err("zero rounds");
        assert!(err.contains("shadowcat.toml: rounds = 0: "), "{err}");
        // A bad value on the command line is the command line's.
        let err = run("", &["--max-sessions", "many", "config"]).expect_err("not a number");
        assert!(!err.contains("shadowcat.toml"), "{err}");
    }

    #[test]
    fn proxy_config_file_config_refuses_the_values_each_command_would() {
        let cases = [
            (
                "[reverse]\nlisten = \"nonsense\"",
                &["reverse", "--upstream-stdio", "x"][..],
                "listen = \"nonsense\": invalid value 'nonsense' for '--listen <ADDR>'",
            ),
            (
                "[reverse]\nlisten = 8080",
                &["reverse", "--upstream-stdio", "x"],
                "listen = 8080: invalid value '8080' for '--listen <ADDR>'",
            ),
            (
                "[reverse]\nmax-body = \"huge\"",
                &["reverse", "--upstream-stdio", "x"],
                "max-body = \"huge\": invalid value 'huge' for '--max-body <SIZE>'",
            ),
            (
                "[reverse]\nmax-sessions = \"many\"",
                &["reverse", "--upstream-stdio", "x"],
                "max-sessions = \"many\": invalid value 'many'",
            ),
            (
                "[forward.stdio]\nshutdown-grace = \"soon\"",
                &["forward", "stdio", "--", "x"],
                "shutdown-grace = \"soon\": invalid value 'soon'",
            ),
            (
                "[bench]\nrounds = 0",
                &["bench"],
                "rounds = 0: invalid value '0' for '--rounds <N>'",
            ),
            (
                "[session]\nadmin = \"not a url\"",
                &["session", "list"],
                "admin = \"not a url\": invalid value 'not a url'",
            ),
        ];
        for (file, command, said) in cases {
            let by_config = run(file, &["config"]).expect_err(file);
            assert!(
                by_config.starts_with("in ")
                    && by_config.contains(&format!("shadowcat.toml: {said}")),
                "{file}: {by_config}"
            );
            // Each run has a file of its own: the same but for its directory.
            let past_the_file = |err: &str| {
                err.split_once("shadowcat.toml")
                    .map(|(_, rest)| rest.to_owned())
            };
            let by_command = run(file, command).expect_err(file);
            assert_eq!(
                past_the_file(&by_config),
                past_the_file(&by_command),
                "{file}"
            );
        }
        // Options refused together are the section's fault, not one key's.
        let both = "[reverse]\nupstream-stdio = \"x\"\nupstream-http = \"http://127.0.0.1:1/mcp\"";
        let err = run(both, &["config"]).expect_err("conflicting upstreams");
        assert!(
            err.contains("shadowcat.toml: [reverse]: ") && err.contains("cannot be used with"),
            "{err}"
        );
        // What a section leaves to the command line is not asked for.
        let sound = r#"
            [reverse]
            listen = "127.0.0.1:9999"
            [forward.stdio]
            shutdown-grace = "5s"
            [bench]
            rounds = 2
            [session]
            admin = "http://127.0.0.1:9464"
        "#;
        run(sound, &["config"]).expect("every section parses");
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
        let err = run("[revers]\nlisten = \"x\"", &["reverse"]).expect_err("typo");
        assert!(
            err.contains("unknown section `[revers]`") && err.contains("[reverse]"),
            "{err}"
        );
        let err = run("[forward.stdo]\nx = 1", &["forward", "stdio", "--", "x"]).expect_err("typo");
        assert!(
            err.contains("unknown section `[forward.stdo]`; sections: [forward.stdio]"),
            "{err}"
        );
        // `config` checks every section; another command only its own.
        let (reverse_typo, forward_typo) = (
            "[reverse]\nlissen = \"x\"\n",
            "[forward.stdio]\nshutdown-grase = \"5s\"\n",
        );
        let err = run(reverse_typo, &["config"]).expect_err("typo");
        assert!(err.contains("unknown key `lissen` in [reverse]"), "{err}");
        let err = run(forward_typo, &["config"]).expect_err("typo");
        assert!(
            err.contains("unknown key `shutdown-grase` in [forward.stdio]"),
            "{err}"
        );
        let both = format!("{reverse_typo}{forward_typo}");
        run(
            &both,
            &["bench", "--synthetic", "uniform:requests=10,ids=5"],
        )
        .expect("bench's own");
        let err = run("idle-timeout = \"soon\"", &["config"]).expect_err("bad duration");
        assert!(err.contains("not a duration"), "{err}");
        let err = run("max-sessions = [", &["config"]).expect_err("bad toml");
        assert!(err.contains("shadowcat.toml"), "{err}");
    }
}
