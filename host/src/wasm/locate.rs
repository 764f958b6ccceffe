//! Finding a policy by name or path.

use std::path::{Path, PathBuf};

use super::error::PolicyError;

/// Native policies that need no file.
pub const BUILTIN_POLICIES: [&str; 2] = ["lru", "fifo"];

/// What `--eviction-policy` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Builtin(&'static str),
    File(PathBuf),
}

/// Where `lfu` or `lfu.wasm` is looked for, in order: the given directory (or
/// `./policies`), then `policies/` next to the executable, then the source tree's
/// `policies/` when running from `target/<profile>/`.
pub fn default_policy_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![explicit.map_or_else(|| PathBuf::from("policies"), Path::to_path_buf)];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("policies"));
        // target/release/shadowcat -> <workspace>/policies
        if let Some(workspace) = exe_dir.parent().and_then(Path::parent) {
            dirs.push(workspace.join("policies"));
        }
        // target/release/deps/<test binary> -> <workspace>/policies
        if let Some(workspace) = exe_dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
        {
            dirs.push(workspace.join("policies"));
        }
    }
    dirs.dedup();
    dirs
}

/// Resolves `lru`, `fifo` (built in), `lfu`, `lfu.wasm` (looked up in `dirs`) or
/// a path (anything with a `/`, or an existing file).
pub fn locate(spec: &str, dirs: &[PathBuf]) -> Result<PolicySource, PolicyError> {
    if let Some(builtin) = BUILTIN_POLICIES.iter().find(|b| **b == spec) {
        return Ok(PolicySource::Builtin(builtin));
    }
    let as_path = Path::new(spec);
    if spec.contains(std::path::MAIN_SEPARATOR) || as_path.is_file() {
        // Something there that is no file (a directory, a dangling link):
        // reading it says what it is, where "not found" would mislead.
        if as_path.is_file() || as_path.symlink_metadata().is_ok() {
            return Ok(PolicySource::File(as_path.to_path_buf()));
        }
        return Err(PolicyError::NotFound {
            name: spec.to_owned(),
            available: available_policies(dirs),
        });
    }
    let file = if spec.ends_with(".wasm") {
        spec.to_owned()
    } else {
        format!("{spec}.wasm")
    };
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .map(PolicySource::File)
        .ok_or_else(|| PolicyError::NotFound {
            name: spec.to_owned(),
            available: available_policies(dirs),
        })
}

/// Built-in names, then every `*.wasm` found in `dirs` (first directory wins).
pub fn available_policies(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_POLICIES.iter().map(|b| (*b).to_owned()).collect();
    for (_, path) in policy_files(dirs) {
        names.push(path.display().to_string());
    }
    names
}

/// `(file name, path)` of every policy file in `dirs`, first directory winning.
pub fn policy_files(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
            .collect();
        here.sort();
        for (name, path) in here {
            if !found.iter().any(|(n, _)| *n == name) {
                found.push((name, path));
            }
        }
    }
    found
}
