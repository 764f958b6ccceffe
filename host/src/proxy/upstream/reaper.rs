//! Process groups that outlive a killed proxy. An upstream's direct child dies
//! with the proxy (the parent-death signal), but a server started through a
//! launcher (`npx`, `uvx`, a shell) runs as a grandchild, which that signal
//! never reaches: after a SIGKILL of the proxy it would be reparented to init
//! and run forever.
//!
//! The reaper is a second copy of the `shadowcat` executable, started once
//! (`enable`) with a pipe for its stdin and its own process group, so neither
//! a terminal's Ctrl-C nor the upstreams' teardown reaches it. The proxy
//! writes `+PGID` when it starts an upstream and `-PGID` once that group is
//! gone. The pipe's write end lives only in the proxy (close-on-exec keeps it
//! out of the upstreams), so the reaper reads end-of-file exactly when the
//! proxy has exited, however it died; it then sends SIGKILL to every group
//! still listed, and exits.
//!
//! Only the `shadowcat` binary enables it (its `main` dispatches the hidden
//! [`REAPER_ARG`] first); a library user keeps the parent-death signal alone.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;

/// The hidden first argument that runs `shadowcat` as the reaper.
pub const REAPER_ARG: &str = "__reap-upstream-groups";

static REAPER: OnceLock<mpsc::Sender<Change>> = OnceLock::new();

enum Change {
    Watch(i32),
    Release(i32),
}

/// Starts the reaper for this process, once; later calls do nothing. Fails
/// when the executable cannot be started again, and the proxy then runs with
/// the parent-death signal alone.
pub fn enable() -> std::io::Result<()> {
    if REAPER.get().is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg(REAPER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    let Some(mut pipe) = child.stdin.take() else {
        return Err(std::io::Error::other("the reaper's stdin is missing"));
    };
    let (changes, receive) = mpsc::channel::<Change>();
    // A thread of its own writes the pipe, so no runtime worker ever blocks
    // on it; it ends when the process does, which is what closes the pipe.
    std::thread::Builder::new()
        .name("shadowcat-reaper-pipe".into())
        .spawn(move || {
            for change in receive {
                let line = match change {
                    Change::Watch(group) => format!("+{group}\n"),
                    Change::Release(group) => format!("-{group}\n"),
                };
                if pipe.write_all(line.as_bytes()).is_err() {
                    tracing::warn!("the upstream reaper is gone; upstreams rely on the parent-death signal alone");
                    return;
                }
            }
        })?;
    // Dropping the handle neither waits nor kills: the reaper outlives us by
    // design, and init collects it.
    drop(child);
    let _ = REAPER.set(changes);
    Ok(())
}

/// Lists an upstream's process group for killing if the proxy dies.
pub fn watch(group: i32) {
    if let Some(changes) = REAPER.get() {
        let _ = changes.send(Change::Watch(group));
    }
}

/// The group is gone (torn down and waited for): the reaper forgets it, so a
/// later group reusing the number is never killed by mistake.
pub fn release(group: i32) {
    if let Some(changes) = REAPER.get() {
        let _ = changes.send(Change::Release(group));
    }
}

/// The reaper's whole life: collect groups from stdin until end-of-file,
/// then kill those still listed. Malformed lines are ignored: only the proxy
/// writes this pipe.
pub fn run() {
    let mut groups: HashSet<i32> = HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match parse(&line) {
            Some(Change::Watch(group)) => {
                groups.insert(group);
            }
            Some(Change::Release(group)) => {
                groups.remove(&group);
            }
            None => {}
        }
    }
    for group in groups {
        kill_group(group);
    }
}

/// `+PGID` or `-PGID`; never group 0 or 1 (ours, init's), which a kill
/// would turn into a disaster.
fn parse(line: &str) -> Option<Change> {
    let (sign, number) = line.split_at(line.len().min(1));
    let group = number.parse::<i32>().ok().filter(|&g| g > 1)?;
    match sign {
        "+" => Some(Change::Watch(group)),
        "-" => Some(Change::Release(group)),
        _ => None,
    }
}

#[cfg(unix)]
fn kill_group(group: i32) {
    use nix::sys::signal::{killpg, Signal};
    let _ = killpg(nix::unistd::Pid::from_raw(group), Signal::SIGKILL);
}

#[cfg(not(unix))]
fn kill_group(_: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_lines_name_a_group_and_never_init_or_ours() {
        assert!(matches!(parse("+1234"), Some(Change::Watch(1234))));
        assert!(matches!(parse("-1234"), Some(Change::Release(1234))));
        for bad in ["+1", "+0", "-1", "+-5", "", "+", "x123", "+12a", "1234"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
