//! HTTPS for the MCP endpoint (`--tls-cert`, `--tls-key`): a listener whose
//! connections are TLS, for a proxy that faces clients without a terminator
//! in front of it.
//!
//! Handshakes run on their own tasks, each bounded in time: a client that
//! opens a connection and says nothing holds no one else's.
//!
//! The certificate is read again on SIGHUP: certificates are renewed every
//! few weeks, and a restart would end every session the table holds.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections through their handshake, waiting to be served.
const READY_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("{path} holds no certificate (PEM, `BEGIN CERTIFICATE`)")]
    NoCertificate { path: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and the key do not go together: {0}")]
    Mismatch(String),
}

/// The certificate chain and key the proxy presents, from their PEM files,
/// and read from them again by [`Certificate::reload`].
#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads a PEM certificate chain (the server's first) and its PEM
    /// private key, which must go together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read_pair(cert, key, &provider)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads both files again. On an error the certificate served stays as
    /// it was: a renewal caught half-written must not take HTTPS down.
    pub fn reload(&self) -> Result<(), TlsError> {
        let renewed = read_pair(&self.cert, &self.key, &self.provider)?;
        *self.current.write() = Arc::new(renewed);
        Ok(())
    }

    /// The server side of TLS, presenting whatever this holds at each
    /// handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        // The server speaks HTTP/1.1 (streams are long responses, not h2 ones).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads on every SIGHUP, on the current tokio runtime, for as long as
    /// the process runs.
    #[cfg(unix)]
    pub fn reload_on_sighup(self: &Arc<Self>) -> io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let this = Arc::clone(self);
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let (cert, key) = (this.cert.clone(), this.key.clone());
                let reloading = Arc::clone(&this);
                // File reads and key parsing: off the runtime workers.
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(())) => tracing::info!(
                        cert = %cert.display(),
                        key = %key.display(),
                        "SIGHUP: TLS certificate reloaded; new connections get it"
                    ),
                    Ok(Err(e)) => {
                        tracing::error!("SIGHUP: keeping the TLS certificate served until now: {e}")
                    }
                    Err(e) => tracing::error!("SIGHUP: the TLS reload failed: {e}"),
                }
            }
        }))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.display().to_string(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: match e {
            pem::Error::NoItemsFound => "no private key (PEM, `BEGIN PRIVATE KEY`) in it".into(),
            e => e.to_string(),
        },
    })?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| TlsError::Mismatch(e.to_string()))
}

/// Accepts TCP connections and hands out those whose TLS handshake
/// succeeded.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (to_serve, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    // The server stopped: stop accepting.
                    () = to_serve.closed() => return,
                };
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, mostly: wait rather than spin.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, to_serve) = (acceptor.clone(), to_serve.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = to_serve.send((tls, remote)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (never while this listener lives):
            // nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
