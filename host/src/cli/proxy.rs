//! Options of the proxy commands: `reverse`, `forward`, `session`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::{parse_duration, parse_size};
use reqwest::header::{HeaderName, HeaderValue};

use crate::proxy::client_key::ClientKeySource;
use crate::proxy::mcp_headers::{
    HOP_BY_HOP, LAST_EVENT_ID, MCP_METHOD, MCP_NAME, PROTOCOL_VERSION, SESSION_ID,
};
use crate::proxy::origin::AllowedOrigins;

pub const REVERSE_ABOUT: &str = "Serve MCP clients over streamable HTTP at /mcp, one upstream per session.

Each session holds its own upstream: a child process started from --upstream-stdio, or a session of its own on the streamable-HTTP server at --upstream-http. Both protocol eras are served: with protocol sessions (2025-11-25 and earlier: `initialize` opens a session, Shadowcat mints its MCP-Session-Id), and without (2026-07-28: Shadowcat keys its own session by --client-key). A JSON-RPC batch (2025-03-26) is served element by element, each rate limited and answered as if it came alone. The session table's global options (--max-sessions, --idle-timeout, --max-age, --rate-limit, --eviction-policy, ...) bound the sessions; evicted or expired sessions answer 404, so clients initialize again.

The admin API (--admin-listen, loopback by default) lists, deletes and cleans up sessions, and serves /metrics (Prometheus) and /healthz; `shadowcat session ...` talks to it.

Examples:
  shadowcat --eviction-policy lfu.wasm --max-sessions 100 reverse --listen 127.0.0.1:8080 \\
      --upstream-stdio \"npx -y @modelcontextprotocol/server-everything stdio\"
  shadowcat reverse --upstream-http http://127.0.0.1:3001/mcp --client-key header:x-api-key
  shadowcat --config shadowcat.toml reverse

Several instances behind one load balancer share a Redis and a key (see --cluster-redis):
  shadowcat --rate-limit 10 reverse --listen 10.0.0.5:8080 --upstream-stdio \"CMD ARGS\" \\
      --cluster-redis redis://10.0.0.9:6379/0 --session-key-file cluster.key --instance-id a";

/// Where `reverse` serves its admin API unless --admin-listen says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

/// `shadowcat reverse`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("upstream").required(true).args(["upstream_stdio", "upstream_http"])))]
pub struct ReverseArgs {
    /// Address to serve MCP clients on (streamable HTTP at /mcp).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Serve /mcp over HTTPS with this PEM certificate chain (the server's
    /// certificate first), and --tls-key. Clients must trust it; its names
    /// are those they reach the proxy by. SIGHUP reads both files again
    /// (renewal without a restart, which would end every session); a pair
    /// that fails to load is logged and the one served stays.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Start one MCP server per session from this command line (split like a
    /// shell would, without running one), speaking MCP over its stdin/stdout.
    #[arg(long, value_name = "\"CMD ARGS\"")]
    pub upstream_stdio: Option<String>,

    /// Open one session per client session on this streamable-HTTP MCP server.
    /// A client's `Authorization` is passed on to it (a hop in a cluster
    /// carries it), and its 401 or 403 comes back with its
    /// `WWW-Authenticate`.
    #[arg(long, value_name = "URL")]
    pub upstream_http: Option<reqwest::Url>,

    /// A header for every request to the --upstream-http server, as
    /// `NAME: VALUE` (repeat it for several), such as an API key:
    /// `Authorization: Bearer KEY`. It replaces a client's header of the
    /// same name.
    #[arg(
        long = "upstream-header",
        value_name = "\"NAME: VALUE\"",
        value_parser = parse_upstream_header
    )]
    pub upstream_headers: Vec<UpstreamHeader>,

    /// A browser origin whose pages may use the proxy, as
    /// `https://app.example.com` (repeat it for several; `*` admits any).
    /// A request with an `Origin` header is refused with 403 unless it is
    /// this machine's (localhost) or given here, so that a web page cannot
    /// drive the servers behind the proxy (DNS rebinding). Clients that are
    /// not browsers send no `Origin`; pages of the origins served get CORS.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = parse_allowed_origin)]
    pub allowed_origins: Vec<String>,

    /// The URL clients reach /mcp at, such as `https://mcp.example.com/mcp`
    /// behind a TLS terminator (default: the scheme served and the request's Host).
    /// For an --upstream-http server that requires OAuth, the proxy serves
    /// the server's protected-resource metadata as its own, for this URL, at
    /// /.well-known/oauth-protected-resource/mcp, and points the server's
    /// challenges there: clients get tokens for this URL, which the server
    /// must accept.
    #[arg(long, value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<reqwest::Url>,

    /// Who a client is, for per-client limits, eviction keys and the access
    /// log: `remote` (its IP address) or `header:NAME` (a header's value, only
    /// ever kept hashed). In the 2026-07-28 era it also names the session.
    #[arg(long, default_value = "remote", value_name = "remote|header:NAME")]
    pub client_key: ClientKeySource,

    /// A session whose MCP handshake has not finished this long after its
    /// `initialize` is removed. Until then it is not evicted (while fewer
    /// than half the sessions are in their handshake).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub init_timeout: Duration,

    /// Largest request body; larger ones get 413. With --upstream-stdio, also
    /// the longest message a server may write (at least 1MiB): a longer
    /// response is dropped and its request answered with an error.
    #[arg(long, default_value = "4MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_body: usize,

    /// Sessions one client key may open per second (`off`: unlimited), so
    /// looping `initialize` cannot escape the per-session rate limit.
    #[arg(long, default_value = "5", value_name = "PER_SECOND", value_parser = super::parse_rate)]
    pub init_rate: ::std::option::Option<NonZeroU32>,

    /// Most sessions one client key may open at once: the size of its bucket,
    /// which refills at --init-rate per second.
    #[arg(long, default_value = "20", value_name = "N", value_parser = super::parse_burst)]
    pub init_burst: NonZeroU32,

    /// Address of the admin API (`off` to disable). Keep it on loopback or
    /// behind --admin-token-file.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN, value_name = "ADDR|off", value_parser = parse_admin_listen)]
    pub admin_listen: ::std::option::Option<SocketAddr>,

    /// A file holding the bearer token the admin API requires.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Record every session access as an oracleGeneral trace (keyed by the
    /// client key's hash) for `shadowcat bench --trace FILE`. An existing log
    /// is appended to, its clock continued (a record cut short at its end, by
    /// a crash or a full disk, is dropped first).
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,

    /// On SIGINT/SIGTERM, how long requests in flight may take to finish
    /// before every upstream is torn down.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub upstream: UpstreamArgs,

    // Boxed: rarely given, and large (a URL among them).
    #[command(flatten)]
    pub cluster: Box<super::cluster::ClusterArgs>,
}

/// How `reverse` drives its upstreams and tears them down.
#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Teardown of a stdio upstream: after closing its stdin, wait this long
    /// before SIGTERM to its process group, and as long again before SIGKILL.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub upstream_grace: Duration,

    /// Connection and DELETE timeout for an --upstream-http server (a stdio
    /// upstream has none).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// Messages that may wait for a stdio server to read them, when it reads
    /// slower than they come; a request past them is refused with 503 and
    /// Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub upstream_max_pending: usize,
}

/// How `forward stdio` drives its server and tears it down: the options of
/// [`UpstreamArgs`] that a stdio server has, as they work without HTTP.
#[derive(Debug, Clone, Args)]
pub struct ForwardUpstreamArgs {
    /// Teardown of the server: after closing its stdin, wait this long before
    /// SIGTERM to its process group, and as long again before SIGKILL.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    pub upstream_grace: Duration,

    /// Messages that may wait for the server to read them, when it reads
    /// slower than they come; a request past them is answered by the proxy
    /// instead, as overloaded (-32030, with `error.data.retryAfterMs`).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub upstream_max_pending: usize,
}

/// `shadowcat forward`.
#[derive(Debug, Clone, Subcommand)]
pub enum ForwardCommand {
    /// The client on our stdin/stdout; the server started from CMD ARGS.
    ///
    /// Messages pass through unchanged (a JSON-RPC batch as its elements, one
    /// per line). The session's --rate-limit applies to the client's requests:
    /// a refused one gets a JSON-RPC error with `error.data.retryAfterMs`,
    /// never silence.
    Stdio {
        #[command(flatten)]
        upstream: ForwardUpstreamArgs,

        /// After the client closes stdin, how long the server may take to
        /// answer the requests still in flight before it is stopped.
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
        shutdown_grace: Duration,

        /// Longest message, either way (at least 1KiB). A longer one is
        /// skipped, and whoever waits for it gets an error by its id: the
        /// sender of a request, the sender of the request a response answers.
        #[arg(long, default_value = "16MiB", value_name = "SIZE", value_parser = parse_message_limit)]
        max_message: usize,

        /// The MCP server to start, after `--`.
        #[arg(last = true, required = true, num_args = 1.., value_name = "CMD ARGS")]
        command: Vec<String>,
    },
    /// The client on our stdin/stdout; a session of its own on the
    /// streamable-HTTP MCP server at URL.
    ///
    /// For a client that speaks only stdio (an IDE, a desktop app) and a
    /// remote server. Each client message goes in a POST of its own, side by
    /// side; the server's answers (JSON or event streams, progress included)
    /// and what it sends on its own (its GET stream, opened once the client
    /// is initialized and opened again if it ends) come back one per line.
    /// The protocol revision `initialize` agreed to goes with every later
    /// request, and the server's session is deleted when the client closes
    /// its input. The session's --rate-limit applies, as with `stdio`. A
    /// request the server refuses (400, 500...) gets a JSON-RPC error naming
    /// the status.
    ///
    /// A session the server ends (404: it expired, or the server restarted)
    /// is replaced, as MCP asks of clients: the client's `initialize` and
    /// `initialized` go again, then its log level and resource
    /// subscriptions, then the request; the client sees only its answers,
    /// and a WARN line says that what else the server held for the old
    /// session starts afresh.
    ///
    /// A server that answers 401 is authorised with OAuth, as MCP clients
    /// do: its metadata names its authorisation server, Shadowcat registers
    /// there (or uses --oauth-client-id), prints the URL to open in a browser
    /// on stderr (and hands it to $BROWSER or the desktop's opener), and
    /// keeps the tokens in --oauth-store for the next run, refreshing them
    /// when they expire (and asking again for a scope a 403 names). Not with
    /// an `Authorization` --upstream-header, nor with --no-oauth.
    Http {
        /// The server's MCP endpoint, http:// or https://.
        #[arg(value_name = "URL", value_parser = parse_http_url)]
        url: reqwest::Url,

        /// A header for every request to the server, for credentials:
        /// `--upstream-header "Authorization: Bearer TOKEN"`. Repeat it for
        /// more.
        #[arg(
            long = "upstream-header",
            value_name = "\"NAME: VALUE\"",
            value_parser = parse_upstream_header
        )]
        upstream_headers: Vec<UpstreamHeader>,

        /// Connection timeout, and how long the session's DELETE may take at
        /// the end (a request may rightly take longer: none is bounded).
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
        upstream_timeout: Duration,

        /// After the client closes stdin, how long the server may take to
        /// answer the requests still in flight before its session is deleted.
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
        shutdown_grace: Duration,

        /// Longest client message (at least 1KiB). A longer one is not sent,
        /// and its sender gets an error by its id.
        #[arg(long, default_value = "16MiB", value_name = "SIZE", value_parser = parse_message_limit)]
        max_message: usize,

        /// Never run the OAuth flow: a 401 is answered to the client as an
        /// error naming it.
        #[arg(long)]
        no_oauth: bool,

        /// An OAuth client registered beforehand with the server's
        /// authorisation server, for one that takes no dynamic registration
        /// (its redirect URI: http://127.0.0.1:PORT/callback, with
        /// --oauth-callback-port).
        #[arg(long, value_name = "ID")]
        oauth_client_id: Option<String>,

        /// A file holding that client's secret, for an authorisation server
        /// that issues only confidential clients (a file, so that the secret
        /// shows in no process list).
        #[arg(long, value_name = "FILE", requires = "oauth_client_id")]
        oauth_client_secret_file: Option<PathBuf>,

        /// The loopback port the browser returns to; 0: any free port.
        #[arg(long, default_value_t = 0, value_name = "PORT")]
        oauth_callback_port: u16,

        /// Where OAuth tokens are kept between runs, a file per server
        /// readable by its owner only (default:
        /// $XDG_STATE_HOME/shadowcat/oauth or ~/.local/state/shadowcat/oauth);
        /// `off`: for this run only.
        #[arg(long, value_name = "DIR|off")]
        oauth_store: Option<PathBuf>,

        /// How long the browser step of the OAuth flow may take.
        #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
        oauth_timeout: Duration,
    },
}

/// An upstream's URL: HTTP or HTTPS only.
fn parse_http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` is not an http:// or https:// URL"));
    }
    Ok(url)
}

/// A limit on one message: below 1 KiB not even an `initialize` fits.
fn parse_message_limit(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if size < 1 << 10 {
        return Err(format!(
            "`{}` is too small a message limit: at least 1KiB",
            text.trim()
        ));
    }
    Ok(size)
}

/// `shadowcat session`: talk to a running proxy's admin API.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// The admin API of the running proxy.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9464",
        value_name = "URL",
        global = true
    )]
    pub admin: reqwest::Url,

    /// A file holding the admin API's bearer token.
    #[arg(long, value_name = "FILE", global = true)]
    pub admin_token_file: Option<PathBuf>,

    #[command(subcommand)]
    pub action: SessionAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionAction {
    /// List every session: id, state, age, idle, requests, upstream (in a
    /// cluster, every instance's, with the instance holding each).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Expire what is due now; with --all, remove every session (in a
    /// cluster, on every instance).
    Cleanup {
        /// Remove every session, not only those due to expire; the requests
        /// in flight on busy ones are ended.
        #[arg(long)]
        all: bool,
    },
    /// Remove one session (its upstream is torn down); in a cluster, through
    /// any instance.
    Delete {
        /// The session's MCP-Session-Id.
        id: String,
    },
}

/// One `--upstream-header`. Its value is marked sensitive: it is likely a
/// secret, and no log or debug print shows it.
#[derive(Debug, Clone)]
pub struct UpstreamHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// Headers the proxy sets itself on the way to an upstream, for the MCP
/// transport or the request (besides [`HOP_BY_HOP`]): one given by hand
/// would contradict them.
const SET_BY_THE_PROXY: [&str; 9] = [
    "accept",
    "content-length",
    "content-type",
    "host",
    LAST_EVENT_ID,
    MCP_METHOD,
    MCP_NAME,
    PROTOCOL_VERSION,
    SESSION_ID,
];

fn parse_upstream_header(text: &str) -> Result<UpstreamHeader, String> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(format!(
            "`{text}` is not `NAME: VALUE` (as in `Authorization: Bearer KEY`)"
        ));
    };
    let name = name.trim();
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a header name"))?;
    if SET_BY_THE_PROXY.contains(&name.as_str()) || HOP_BY_HOP.contains(&name.as_str()) {
        return Err(format!(
            "`{name}` is set by the proxy itself on every request to the upstream"
        ));
    }
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of `{name}` holds a character no header may carry"))?;
    value.set_sensitive(true);
    Ok(UpstreamHeader { name, value })
}

fn parse_allowed_origin(text: &str) -> Result<String, String> {
    AllowedOrigins::new(&[text]).map_err(|e| e.to_string())?;
    Ok(text.trim().to_owned())
}

fn parse_public_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("`{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}`: a resource URL has no query or fragment"));
    }
    Ok(url)
}

fn parse_admin_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "off" => Ok(None),
        other => other
            .parse()
            .map(Some)
            .map_err(|_| format!("`{other}` is not an address like 127.0.0.1:9464 (or `off`)")),
    }
}
