//! Errors of loading and running WebAssembly policies.

use std::path::PathBuf;
use std::time::Duration;

/// The interface a policy exports, in its newest version (older ones load too).
pub const POLICY_EXPORT: &str = "shadowcat:policy/policy@0.3.0";
/// The exports of every version the host loads, as error messages list them.
pub const POLICY_EXPORTS: &str =
    "`shadowcat:policy/policy@0.3.0`, `shadowcat:policy/policy@0.2.0` or `shadowcat:policy/policy@0.1.0`";
/// The only imports a policy may have: the log function, and the type-only
/// interface its exports refer to, of its own version.
pub const HOST_IMPORT: &str = "shadowcat:policy/host@0.3.0";
pub const TYPES_IMPORT: &str = "shadowcat:policy/types@0.3.0";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("eviction policy `{name}` not found; available: {}", available.join(", "))]
    NotFound {
        name: String,
        available: Vec<String>,
    },
    #[error("cannot read policy file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a WebAssembly file (no `\\0asm` header)", path.display())]
    NotWasm { path: PathBuf },
    #[error(
        "{} is a core WebAssembly module, not a component; build policies with \
         `policies/build.sh` (wit-bindgen + wit-component)", path.display()
    )]
    CoreModule { path: PathBuf },
    #[error("{} is not a valid WebAssembly component: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{} targets a policy interface version this host does not load: expected {POLICY_EXPORTS}, found `{found}`",
        path.display()
    )]
    WrongVersion { path: PathBuf, found: String },
    #[error(
        "{} is not a Shadowcat policy: expected an export {POLICY_EXPORTS}, found exports [{}]",
        path.display(), found.join(", ")
    )]
    WrongWorld { path: PathBuf, found: Vec<String> },
    #[error(
        "{} imports `{import}`; a policy may import only the `host` and `types` interfaces \
         of its own version, e.g. `{HOST_IMPORT}` and `{TYPES_IMPORT}` (no WASI, no clock, no I/O)",
        path.display()
    )]
    ForbiddenImport { path: PathBuf, import: String },
    #[error("policy `{policy}` refused its configuration: {message}")]
    CreateRejected { policy: String, message: String },
    #[error(
        "policy `{policy}` timed out during {phase} after {}: every call into a policy is \
         interrupted at the --policy-timeout limit; raise it to allow a slower policy",
        crate::config::readable_duration(*after)
    )]
    Timeout {
        policy: String,
        phase: &'static str,
        after: Duration,
    },
    #[error("policy `{policy}` failed during {phase}: {reason}")]
    Fault {
        policy: String,
        phase: &'static str,
        reason: String,
    },
    #[error("policy `{policy}` reported an invalid batch size {batch_size} (1 to 65536)")]
    BadInfo { policy: String, batch_size: u32 },
    #[error(transparent)]
    Config(#[from] super::config::ConfigArgError),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}
