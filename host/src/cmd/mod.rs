//! One file per subcommand; `main.rs` only parses and dispatches.

pub mod bench;
mod common;
pub use common::end_quietly_when_stdout_closes;
pub mod config;
pub mod forward;
pub mod policy;
pub mod reverse;
pub mod session;
