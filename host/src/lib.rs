//! Shadowcat: an MCP proxy whose session table evicts by a WebAssembly-pluggable policy.
//!
//! # Layout
//!
//! - [`config`]: validated settings of the session table, duration parsing.
//! - [`session`]: the session table: slots with generations, the LRU index, the
//!   max-age deadline heap, per-session rate limiters, pins for requests in
//!   flight, metrics, teardown of removed sessions outside the lock, and the
//!   background cleanup task.
//! - [`eviction`]: the host-side policy interface the table calls, and the native
//!   `lru` and `fifo` policies.
//! - [`wasm`]: the WebAssembly policy host: engine, sandbox limits, batching,
//!   validation, fallback, recovery, hot reload.
//! - [`trace`]: reading access traces, generating synthetic ones, Belady.
//! - [`replay`]: driving a trace through the session table on virtual time.
//! - [`bench`]: comparing policies side by side (table, JSON, CSV, plot).
//! - [`proxy`]: the MCP proxy itself: streamable HTTP and stdio transports,
//!   one upstream per session, the admin API, metrics and the access log.
//! - [`cluster`]: several proxies behind one load balancer: sealed session ids
//!   naming their owner, forwarding, Redis for membership, the session index,
//!   global rate limits and owner records.
//! - [`cli`]: the command line of the `shadowcat` binary (and its config file).
//!
//! The main design decision: the table owns the truth and all locking; a policy
//! only proposes victims, and every proposal is validated, with the table's own
//! LRU order filling any shortfall. A policy can therefore be slow, wrong or
//! sandboxed in WebAssembly without being able to lose a session or wedge a lock.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod eviction;
pub mod proxy;
pub mod replay;
pub mod session;
pub mod text_table;
pub mod trace;
pub mod wasm;

pub use config::{ConfigError, QuotaBounds, RateLimit, TableConfig};
pub use session::{SessionId, SessionTable, TableError};
