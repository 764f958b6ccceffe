//! A running reverse proxy: the session table, the MCP endpoint, the admin
//! API and the background tasks, started and shut down as one.
//!
//! `shadowcat reverse` is this plus signal handling; benches and embedders
//! start it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, ListenerExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::access_log::{AccessLog, AccessLogError, AccessLogWriter};
use super::metrics::ProxyMetrics;
use super::session::{CloseUpstream, ProxySession};
use super::tls::{Certificate, TlsError, TlsListener};
use super::upstream::{ProgramError, UpstreamSpec};
use super::{admin, reverse, Proxy, ProxyOptions};
use crate::cluster::metrics::ClusterMetrics;
use crate::cluster::tasks::ClusterTeardown;
use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::config::{ConfigError, TableConfig};
use crate::session::{CleanupTask, FlushMode, SessionTable, ShutdownReport, Teardown};
use crate::wasm::OpenedPolicy;

/// Everything a reverse proxy is started from.
pub struct ReverseConfig {
    pub table: TableConfig,
    pub policy: OpenedPolicy,
    pub upstreams: UpstreamSpec,
    pub options: ProxyOptions,
    pub listen: SocketAddr,
    /// Serve `/mcp` over HTTPS (`--tls-cert`, `--tls-key`), reading the
    /// certificate again on SIGHUP.
    pub tls: Option<Arc<Certificate>>,
    /// `None`: no admin API.
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub access_log: Option<PathBuf>,
    /// How long requests in flight may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How often to look for a new WebAssembly policy file (`None`: only
    /// SIGHUP reloads it).
    pub policy_watch: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid session table configuration: {0}")]
    Config(ConfigError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    #[error("cannot watch the policy file: {0}")]
    Watch(std::io::Error),
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Upstream(#[from] ProgramError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

// Not `#[from]`: that would also make the error its `source`, and a report
// of the whole chain would print it twice.
impl From<ConfigError> for StartError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

/// A proxy serving; [`RunningProxy::shutdown`] stops it cleanly.
pub struct RunningProxy {
    pub mcp: SocketAddr,
    pub admin: Option<SocketAddr>,
    proxy: Arc<Proxy>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    cleanup: CleanupTask,
    access_writer: Option<AccessLogWriter>,
    shutdown_grace: Duration,
}

impl RunningProxy {
    /// Binds both listeners and starts serving. Must run inside a tokio
    /// runtime.
    pub async fn start(config: ReverseConfig) -> Result<Self, StartError> {
        Self::start_with(config, None).await
    }

    /// As [`RunningProxy::start`], as an instance of a cluster when
    /// `cluster` is given.
    pub async fn start_with(
        config: ReverseConfig,
        cluster: Option<ClusterConfig>,
    ) -> Result<Self, StartError> {
        let ReverseConfig {
            table: table_config,
            policy,
            upstreams,
            options,
            listen,
            tls,
            admin_listen,
            admin_token,
            access_log,
            shutdown_grace,
            policy_watch,
        } = config;
        if let UpstreamSpec::Stdio(command) = &upstreams {
            command.locate()?;
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| StartError::Listen { addr, error })
        };
        // Bound first: a cluster instance advertises where it listens.
        let listener = bind(listen).await?;
        let mcp = listener.local_addr().map_err(|error| StartError::Listen {
            addr: listen,
            error,
        })?;
        let cluster = match cluster {
            Some(config) => {
                let metrics = Arc::new(ClusterMetrics::new(config.redis_down));
                let rate = table_config.rate_limit;
                Some(Arc::new(Cluster::new(config, mcp, rate, metrics)?))
            }
            None => None,
        };
        let teardown: Arc<dyn Teardown<ProxySession>> = match &cluster {
            Some(cluster) => Arc::new(ClusterTeardown {
                cluster: Arc::clone(cluster),
            }),
            None => Arc::new(CloseUpstream),
        };
        let table = SessionTable::<ProxySession>::builder(table_config.clone())
            .policy(policy.eviction())
            .teardown(teardown, tokio::runtime::Handle::current())
            .flush(FlushMode::Thread)
            .build_shared()?;
        let (access_log, access_writer) = match &access_log {
            Some(path) => {
                let (log, writer) = AccessLog::create(path).await?;
                (Some(log), Some(writer))
            }
            None => (None, None),
        };
        let wasm = match &policy {
            OpenedPolicy::Wasm(p) => Some(Arc::clone(p)),
            OpenedPolicy::Native(_) => None,
        };
        let mut background = vec![policy.reload_on_sighup().map_err(StartError::Signal)?];
        if let (Some(policy), Some(interval)) = (&wasm, policy_watch) {
            policy.watch(interval).map_err(StartError::Watch)?;
        }
        let metrics = ProxyMetrics::with_more(&table, wasm, access_log.clone(), |registry| {
            if let Some(cluster) = &cluster {
                cluster.metrics.register(registry);
            }
        });
        let mut proxy = Proxy::new(Arc::clone(&table), upstreams, options, metrics, access_log);
        if let Some(cluster) = &cluster {
            proxy = proxy.with_cluster(Arc::clone(cluster));
        }
        let proxy = Arc::new(proxy);
        if let Some(cluster) = &cluster {
            cluster.join().await;
            background.push(cluster.spawn_heartbeat(cluster.timing.heartbeat));
            background
                .push(cluster.spawn_renewal(Arc::downgrade(&proxy), cluster.timing.index_refresh));
        }
        let (stop, stopped) = watch::channel(false);
        let mcp_router = reverse::router(Arc::clone(&proxy));
        let mut servers = vec![match tls {
            None => tokio::spawn(serve(listener, mcp_router, stopped.clone())),
            Some(certificate) => {
                background.push(certificate.reload_on_sighup().map_err(StartError::Signal)?);
                let listener = TlsListener::new(listener, certificate.server_config()?)
                    .map_err(|error| StartError::Listen { addr: mcp, error })?;
                // Tapped only for the remote address as connect info, which
                // axum gives tapped listeners of any kind.
                tokio::spawn(serve(listener.tap_io(|_| ()), mcp_router, stopped.clone()))
            }
        }];
        let mut admin = None;
        if let Some(addr) = admin_listen {
            let listener = bind(addr).await?;
            admin = Some(
                listener
                    .local_addr()
                    .map_err(|error| StartError::Listen { addr, error })?,
            );
            servers.push(tokio::spawn(serve(
                listener,
                admin::router(Arc::clone(&proxy), admin_token),
                stopped,
            )));
        }
        let cleanup = CleanupTask::spawn(Arc::clone(&table));
        background.push({
            let (proxy, every) = (Arc::downgrade(&proxy), table_config.cleanup_interval);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                loop {
                    ticker.tick().await;
                    let Some(proxy) = proxy.upgrade() else { return };
                    proxy.forget_idle_clients();
                }
            })
        });
        Ok(Self {
            mcp,
            admin,
            proxy,
            stop,
            servers,
            background,
            cleanup,
            access_writer,
            shutdown_grace,
        })
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Stops accepting, lets requests in flight finish within the grace
    /// period, closes every session (tearing every upstream down) and flushes
    /// the access log.
    pub async fn shutdown(self) -> std::io::Result<ShutdownReport> {
        let Self {
            proxy,
            stop,
            servers,
            background,
            cleanup,
            access_writer,
            shutdown_grace,
            ..
        } = self;
        let _ = stop.send(true);
        if let Some(cluster) = &proxy.cluster {
            cluster.leave().await;
        }
        let table = Arc::clone(&proxy.table);
        let deadline = Instant::now() + shutdown_grace;
        while table.stats().requests_in_flight > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in background {
            task.abort();
        }
        cleanup.shutdown().await;
        let report = table.shutdown(shutdown_grace).await;
        // Streams end once their sessions are closed; the servers follow.
        for server in servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        drop(table);
        drop(proxy);
        if let Some(writer) = access_writer {
            writer.finish().await?;
        }
        Ok(report)
    }
}

/// Serves `router` until `stop` turns true; then stops accepting and lets
/// open connections finish.
async fn serve<L>(listener: L, router: axum::Router, mut stop: watch::Receiver<bool>)
where
    L: Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: Connected<IncomingStream<'a, L>>,
{
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!("server error: {e}");
    }
}
