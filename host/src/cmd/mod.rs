//! One file per subcommand; `main.rs` only parses and dispatches.

pub mod bench;
mod common;
pub mod config;
pub mod forward;
pub mod policy;
pub mod reverse;
pub mod session;
