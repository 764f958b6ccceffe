//! Turns a policy's core WebAssembly module (built by `policies/build.sh` with
//! `wit-bindgen`) into a component, validates it, and checks that it exports the
//! expected policy interface.
//!
//! ```text
//! shadowcat-componentize --module IN.wasm --output OUT.wasm [--expect-export NAME] ...
//! ```
//!
//! Several `--module`/`--output` groups may be given so that one process handles
//! every policy. `--expect-export` may be repeated within a group: the component
//! must export one of the names given. Without it, any policy interface version
//! the host loads will do (`shadowcat:policy/policy@0.3.0`, `@0.2.0` or `@0.1.0`).
//! Prints `OUT: SIZE bytes` per written file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use wit_component::{ComponentEncoder, DecodedWasm};
use wit_parser::WorldItem;

/// The policy interface versions the host loads, newest first.
const DEFAULT_EXPORTS: &[&str] = &[
    "shadowcat:policy/policy@0.3.0",
    "shadowcat:policy/policy@0.2.0",
    "shadowcat:policy/policy@0.1.0",
];

#[derive(Debug, PartialEq)]
struct Job {
    module: PathBuf,
    output: PathBuf,
    /// The component must export one of these; empty means [`DEFAULT_EXPORTS`].
    expect_exports: Vec<String>,
}

impl Job {
    fn expected(&self) -> Vec<&str> {
        if self.expect_exports.is_empty() {
            DEFAULT_EXPORTS.to_vec()
        } else {
            self.expect_exports.iter().map(String::as_str).collect()
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowcat-componentize: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let jobs = parse_args(std::env::args().skip(1))?;
    for job in &jobs {
        componentize(job).with_context(|| format!("{}", job.module.display()))?;
    }
    Ok(())
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            bail!("`{flag}` needs a value");
        };
        match flag.as_str() {
            "--module" => jobs.push(Job {
                module: value.into(),
                output: PathBuf::new(),
                expect_exports: Vec::new(),
            }),
            "--output" | "--expect-export" => {
                let Some(job) = jobs.last_mut() else {
                    bail!("`{flag}` must follow a `--module`");
                };
                if flag == "--output" {
                    job.output = value.into();
                } else {
                    job.expect_exports.push(value);
                }
            }
            _ => bail!(
                "unknown argument `{flag}`; usage: --module IN.wasm --output OUT.wasm \
                 [--expect-export NAME] ..."
            ),
        }
    }
    if jobs.is_empty() {
        bail!(
            "nothing to do; usage: --module IN.wasm --output OUT.wasm [--expect-export NAME] ..."
        );
    }
    if let Some(job) = jobs.iter().find(|j| j.output.as_os_str().is_empty()) {
        bail!("`--module {}` has no `--output`", job.module.display());
    }
    Ok(jobs)
}

fn componentize(job: &Job) -> Result<()> {
    let module = std::fs::read(&job.module).context("reading the core module")?;
    // The guests import nothing but the host's log function, so no WASI adapter
    // is needed; a module that wants one is a mistake worth failing on.
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("reading the component-type metadata wit-bindgen embedded")?
        .encode()
        .context("encoding the component")?;
    check_export(&component, &job.expected())?;
    write_atomically(&job.output, &component)
        .with_context(|| format!("writing {}", job.output.display()))?;
    println!("{}: {} bytes", job.output.display(), component.len());
    Ok(())
}

/// A running host may load policies while they are rebuilt; a rename means it
/// sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Decodes the component again and looks for one of the expected exported
/// interfaces, so a guest built against the wrong WIT is caught here, not at
/// load time.
fn check_export(component: &[u8], expected: &[&str]) -> Result<()> {
    let DecodedWasm::Component(resolve, world) =
        wit_component::decode(component).context("decoding the encoded component")?
    else {
        bail!("the encoder did not produce a component");
    };
    let exports: Vec<String> = resolve.worlds[world]
        .exports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => resolve.id_of(*id),
            _ => None,
        })
        .collect();
    if !exports.iter().any(|e| expected.contains(&e.as_str())) {
        bail!(
            "the component does not export {} (it exports: {})",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Vec<Job>> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn expect_export_repeats_per_module_and_defaults_to_every_loaded_version() {
        let jobs = parse(&[
            "--module",
            "a.wasm",
            "--output",
            "a.out",
            "--module",
            "b.wasm",
            "--expect-export",
            "x@0.1.0",
            "--expect-export",
            "x@0.2.0",
            "--output",
            "b.out",
        ])
        .unwrap();
        assert_eq!(jobs[0].expected(), DEFAULT_EXPORTS);
        assert_eq!(jobs[1].expected(), ["x@0.1.0", "x@0.2.0"]);
        assert_eq!(jobs[1].output, PathBuf::from("b.out"));
    }

    #[test]
    fn malformed_arguments_are_errors() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--output", "a.out"]).is_err());
        assert!(parse(&["--expect-export", "x"]).is_err());
        assert!(parse(&["--module", "a.wasm"]).is_err());
        assert!(parse(&["--module"]).is_err());
        assert!(parse(&["--modules", "a"]).is_err());
    }
}
