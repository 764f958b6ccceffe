//! Options of `shadowcat reverse` that make it one instance of a cluster.

use std::path::PathBuf;

use clap::Args;

use crate::cluster::RedisDownMode;

/// `--cluster-redis` and what goes with it; without it, none apply.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster (several instances behind one load balancer)")]
pub struct ClusterArgs {
    /// Run as one instance of a cluster whose shared state lives in this
    /// Redis (`redis://HOST:PORT/DB`): membership, the session index, global
    /// per-client rate limits (--rate-limit, --burst) and the owners of
    /// 2026-07-28 clients. Session ids name the instance holding the session,
    /// and any instance forwards a request to it.
    #[arg(long, value_name = "URL", requires = "session_key_file")]
    pub cluster_redis: Option<String>,

    /// This instance's name in the cluster, unique among its instances
    /// (default: random at every start).
    #[arg(long, value_name = "ID", requires = "cluster_redis")]
    pub instance_id: Option<String>,

    /// This instance's MCP endpoint as the other instances reach it, e.g.
    /// http://10.0.0.5:8080/mcp (default: http://<--listen>/mcp, unless
    /// --listen is a wildcard address).
    #[arg(long, value_name = "URL", requires = "cluster_redis")]
    pub advertise: Option<reqwest::Url>,

    /// The cluster's shared secret: a file of at least 32 random bytes, the
    /// same on every instance. Given twice, the first seals new session ids
    /// and signs forwarded requests, and both are accepted. To rotate, on
    /// every instance in turn: add the new key second, then put it first,
    /// then drop the old one.
    #[arg(long, value_name = "FILE", requires = "cluster_redis")]
    pub session_key_file: Vec<PathBuf>,

    /// What the global rate limit does while Redis is unreachable: `open`
    /// admits (each instance's per-session limits still apply), `closed`
    /// answers 503. Routing by session id goes on either way.
    #[arg(long, default_value = "open", value_name = "open|closed")]
    pub cluster_redis_down: RedisDownMode,
}
