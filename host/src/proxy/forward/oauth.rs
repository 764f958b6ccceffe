//! `forward http`'s OAuth client: MCP authorization (2025-06-18 and later)
//! for a server that answers 401, as an MCP client does it, so that a stdio
//! client (an IDE) reaches a protected server through Shadowcat.
//!
//! On the first 401 the server's challenge names its protected-resource
//! metadata (RFC 9728; otherwise it is looked for at the well-known URL),
//! which names its authorisation server, whose metadata (RFC 8414, or
//! OpenID Connect discovery) gives the endpoints. Shadowcat registers itself
//! there (RFC 7591 dynamic registration) unless given `--oauth-client-id`,
//! then runs the authorisation code flow with PKCE (S256): the URL to open
//! is printed on stderr (and handed to `$BROWSER`, or the desktop's opener),
//! the browser comes back to a listener on loopback, and the code is
//! exchanged for tokens bound to the server (RFC 8707 `resource`).
//!
//! Tokens and the registration are kept in a file per server (mode 0600),
//! so the next run needs no browser; an access token the server refuses is
//! refreshed, and the flow runs again when that fails too, or when the
//! server wants scopes the token lacks (a 403 `insufficient_scope`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::http::body_excerpt;
use crate::proxy::oauth::{challenge_metadata, challenge_scope};
use crate::proxy::origin::is_this_machine;

/// How `forward http` authorises itself, when the server asks.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// A client registered beforehand; otherwise Shadowcat registers itself.
    pub client_id: Option<String>,
    /// That client's secret, for an authorisation server that issues only
    /// confidential clients.
    pub client_secret: Option<String>,
    /// The loopback port the browser comes back to; 0: any free one.
    pub callback_port: u16,
    /// Where tokens are kept between runs; `None`: for this run only.
    pub store: Option<PathBuf>,
    /// How long the browser step may take.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("cannot find the server's authorisation server: {0}")]
    Discovery(String),
    #[error(
        "the authorisation server {issuer} does not support PKCE with S256, which MCP requires"
    )]
    NoPkce { issuer: String },
    #[error(
        "the authorisation server {issuer} takes no dynamic client registration: register a client \
         there with the redirect URI http://127.0.0.1:PORT/callback (a port of your choice), then \
         give --oauth-client-id ID --oauth-callback-port PORT"
    )]
    NoRegistration { issuer: String },
    #[error("registering with the authorisation server failed: {0}")]
    Registration(String),
    #[error("cannot listen for the browser's return on {0}")]
    Callback(String),
    #[error("no authorisation came back within {0:?} (--oauth-timeout)")]
    TimedOut(Duration),
    #[error("the authorisation server refused: {0}")]
    Denied(String),
    #[error("the token exchange failed: {0}")]
    Token(String),
}

/// What is kept per server between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    server: String,
    client: Option<Registration>,
    tokens: Option<Tokens>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    /// The authorisation server it belongs to.
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    /// The secret goes in HTTP Basic authentication (`client_secret_basic`,
    /// the default of RFC 7591 and RFC 8414) rather than the form.
    #[serde(default)]
    secret_in_basic: bool,
    redirect_uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: Option<String>,
    token_endpoint: String,
    resource: String,
}

/// The endpoints and choices discovery arrived at.
#[derive(Debug, Clone)]
struct Discovered {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    registration_endpoint: Option<Url>,
    /// `token_endpoint_auth_methods_supported`.
    token_auth_methods: Vec<String>,
    scope: Option<String>,
    resource: String,
}

pub struct OAuthClient {
    server: Url,
    settings: OAuthSettings,
    http: reqwest::Client,
    /// One flow at a time; requests refused together wait for it.
    stored: tokio::sync::Mutex<Stored>,
    /// The bearer credentials to send now.
    current: parking_lot::Mutex<Option<HeaderValue>>,
}

impl OAuthClient {
    /// The client for `server`, with the tokens a previous run kept.
    pub fn new(server: Url, settings: OAuthSettings, http: reqwest::Client) -> Arc<Self> {
        let stored = settings
            .store
            .as_deref()
            .and_then(|dir| load(&store_file(dir, &server)))
            .filter(|stored| stored.server == server.as_str())
            .unwrap_or_else(|| Stored {
                server: server.to_string(),
                ..Stored::default()
            });
        let current = stored.tokens.as_ref().and_then(|t| bearer(&t.access_token));
        Arc::new(Self {
            server,
            settings,
            http,
            stored: tokio::sync::Mutex::new(stored),
            current: parking_lot::Mutex::new(current),
        })
    }

    /// The credentials to send, if any are known yet.
    pub fn credentials(&self) -> Option<HeaderValue> {
        self.current.lock().clone()
    }

    /// New credentials after the server refused `refused` (or none) with
    /// `challenge`: another request's if it got some since, else a
    /// refreshed token, else the browser flow. `more_scope`: the server
    /// wants scopes the token lacks (a 403 `insufficient_scope`), which only
    /// the browser flow, asking for the challenge's scopes, can grant.
    pub async fn reauthorize(
        &self,
        challenge: Option<&HeaderValue>,
        refused: Option<&HeaderValue>,
        more_scope: bool,
    ) -> Result<HeaderValue, OAuthError> {
        let mut stored = self.stored.lock().await;
        if let Some(current) = self.credentials() {
            if refused != Some(&current) {
                return Ok(current);
            }
        }
        let refreshed = if more_scope {
            None
        } else {
            self.refresh(&stored).await
        };
        let tokens = match refreshed {
            Some(tokens) => tokens,
            None => self.authorize(&mut stored, challenge).await?,
        };
        let credentials = bearer(&tokens.access_token)
            .ok_or_else(|| OAuthError::Token("the access token is not a header value".into()))?;
        stored.tokens = Some(tokens);
        self.save(&stored);
        *self.current.lock() = Some(credentials.clone());
        Ok(credentials)
    }

    /// A refreshed token, if a refresh token is kept and still works.
    async fn refresh(&self, stored: &Stored) -> Option<Tokens> {
        let tokens = stored.tokens.as_ref()?;
        let refresh_token = tokens.refresh_token.as_deref()?;
        let client = stored.client.as_ref()?;
        let endpoint = Url::parse(&tokens.token_endpoint).ok()?;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("resource", tokens.resource.as_str()),
        ];
        match self
            .token_request(&endpoint, client, &form, &tokens.resource)
            .await
        {
            Ok(mut refreshed) => {
                // A server that rotates none keeps the old one valid.
                if refreshed.refresh_token.is_none() {
                    refreshed.refresh_token = Some(refresh_token.to_owned());
                }
                tracing::info!(server = %self.server, "the access token was refreshed");
                Some(refreshed)
            }
            Err(e) => {
                tracing::info!(server = %self.server, "refreshing the access token failed ({e}): authorising again");
                None
            }
        }
    }

    /// The authorisation code flow, from discovery to tokens.
    async fn authorize(
        &self,
        stored: &mut Stored,
        challenge: Option<&HeaderValue>,
    ) -> Result<Tokens, OAuthError> {
        let found = self.discover(challenge).await?;
        let (listener, client) = self.client_for(stored, &found).await?;
        stored.client = Some(client.clone());
        self.save(stored);

        let verifier = random_token();
        let state = random_token();
        let mut url = found.authorization_endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &client.client_id)
                .append_pair("redirect_uri", &client.redirect_uri)
                .append_pair("code_challenge", &pkce_challenge(&verifier))
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", &state)
                .append_pair("resource", &found.resource);
            if let Some(scope) = &found.scope {
                query.append_pair("scope", scope);
            }
        }
        eprintln!(
            "shadowcat: the MCP server {} asks for authorisation. Open this URL in a browser to \
             grant it (waiting {}):\n  {url}",
            self.server,
            crate::config::readable_duration(self.settings.timeout),
        );
        open_browser(url.as_str());
        let code = await_code(listener, &state, self.settings.timeout).await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
            ("resource", found.resource.as_str()),
        ];
        let tokens = self
            .token_request(&found.token_endpoint, &client, &form, &found.resource)
            .await?;
        tracing::info!(server = %self.server, issuer = found.issuer, "authorised");
        Ok(tokens)
    }

    /// The server's authorisation server and what to ask it for.
    async fn discover(&self, challenge: Option<&HeaderValue>) -> Result<Discovered, OAuthError> {
        let mut candidates: Vec<Url> = challenge.and_then(challenge_metadata).into_iter().collect();
        candidates.extend(well_known(&self.server, "oauth-protected-resource"));
        let resource_metadata = self.first_json::<ResourceMetadata>(&candidates).await;
        let (issuer, scopes_supported, said_resource) = match resource_metadata {
            Some(metadata) => {
                let issuer = metadata
                    .authorization_servers
                    .first()
                    .and_then(|issuer| Url::parse(issuer).ok())
                    .ok_or_else(|| {
                        OAuthError::Discovery(
                            "the protected-resource metadata names no authorisation server".into(),
                        )
                    })?;
                (issuer, metadata.scopes_supported, metadata.resource)
            }
            None => {
                // MCP 2025-03-26, before protected-resource metadata: the
                // server's origin is its authorisation server.
                tracing::info!(
                    "no protected-resource metadata at {}: trying the server's origin as its \
                     authorisation server",
                    join_urls(&candidates)
                );
                let mut origin = self.server.clone();
                origin.set_path("/");
                origin.set_query(None);
                origin.set_fragment(None);
                (origin, Vec::new(), None)
            }
        };
        let mut candidates = well_known(&issuer, "oauth-authorization-server");
        candidates.extend(well_known(&issuer, "openid-configuration"));
        let metadata = self.first_json::<ServerMetadata>(&candidates).await;
        let metadata = metadata.ok_or_else(|| {
            OAuthError::Discovery(format!(
                "no authorisation server metadata at {}",
                join_urls(&candidates)
            ))
        })?;
        let issuer_name = metadata
            .issuer
            .clone()
            .unwrap_or_else(|| issuer.to_string());
        if !metadata
            .code_challenge_methods_supported
            .iter()
            .any(|method| method == "S256")
        {
            return Err(OAuthError::NoPkce {
                issuer: issuer_name,
            });
        }
        let scope = challenge
            .and_then(challenge_scope)
            .or_else(|| Some(scopes_supported.join(" ")).filter(|s| !s.is_empty()));
        Ok(Discovered {
            token_auth_methods: metadata.token_endpoint_auth_methods_supported,
            authorization_endpoint: secure_endpoint(
                "authorization_endpoint",
                &metadata.authorization_endpoint,
            )?,
            token_endpoint: secure_endpoint("token_endpoint", &metadata.token_endpoint)?,
            registration_endpoint: metadata
                .registration_endpoint
                .as_deref()
                .map(|value| secure_endpoint("registration_endpoint", value))
                .transpose()?,
            scope,
            resource: resource_for(&self.server, said_resource.as_deref()),
            issuer: issuer_name,
        })
    }

    /// The client to authorise as, and the listener its redirect URI names:
    /// `--oauth-client-id`, else the registration kept from a previous run
    /// (if its port can be had again), else a new registration.
    async fn client_for(
        &self,
        stored: &Stored,
        found: &Discovered,
    ) -> Result<(TcpListener, Registration), OAuthError> {
        if let Some(kept) = stored.client.as_ref().filter(|c| {
            c.issuer == found.issuer
                && self
                    .settings
                    .client_id
                    .as_ref()
                    .is_none_or(|id| *id == c.client_id)
        }) {
            if let Some(port) = redirect_port(&kept.redirect_uri) {
                if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                    return Ok((listener, kept.clone()));
                }
            }
        }
        let listener = TcpListener::bind(("127.0.0.1", self.settings.callback_port))
            .await
            .map_err(|e| {
                OAuthError::Callback(format!(
                    "127.0.0.1:{} ({e}; --oauth-callback-port chooses the port)",
                    self.settings.callback_port
                ))
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| OAuthError::Callback(e.to_string()))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        if let Some(client_id) = &self.settings.client_id {
            let methods = &found.token_auth_methods;
            let client = Registration {
                issuer: found.issuer.clone(),
                client_id: client_id.clone(),
                client_secret: self.settings.client_secret.clone(),
                secret_in_basic: methods.is_empty()
                    || methods.iter().any(|m| m == "client_secret_basic"),
                redirect_uri,
            };
            return Ok((listener, client));
        }
        let Some(endpoint) = &found.registration_endpoint else {
            return Err(OAuthError::NoRegistration {
                issuer: found.issuer.clone(),
            });
        };
        let mut request = serde_json::json!({
            "client_name": "Shadowcat",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        if let Some(scope) = &found.scope {
            request["scope"] = scope.clone().into();
        }
        #[derive(Deserialize)]
        struct Registered {
            client_id: String,
            client_secret: Option<String>,
            token_endpoint_auth_method: Option<String>,
        }
        let request = self.http.post(endpoint.clone()).json(&request);
        let registered: Registered = exchange(
            request,
            endpoint,
            "a registration",
            OAuthError::Registration,
        )
        .await?;
        tracing::info!(issuer = found.issuer, "registered as an OAuth client");
        Ok((
            listener,
            Registration {
                issuer: found.issuer.clone(),
                client_id: registered.client_id,
                client_secret: registered.client_secret,
                // What it says it registered; RFC 7591's default otherwise.
                secret_in_basic: registered
                    .token_endpoint_auth_method
                    .as_deref()
                    .is_none_or(|method| method == "client_secret_basic"),
                redirect_uri,
            },
        ))
    }

    /// A token request as `client`: a public client names itself in the
    /// form, a confidential one authenticates as it registered.
    async fn token_request(
        &self,
        endpoint: &Url,
        client: &Registration,
        form: &[(&str, &str)],
        resource: &str,
    ) -> Result<Tokens, OAuthError> {
        let mut form = form.to_vec();
        let mut request = self.http.post(endpoint.clone());
        match &client.client_secret {
            Some(secret) if client.secret_in_basic => {
                // RFC 6749 2.3.1: each form-encoded before Basic's encoding.
                let encode = |text: &str| {
                    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(encode(&client.client_id), Some(encode(secret)));
            }
            Some(secret) => {
                form.push(("client_id", &client.client_id));
                form.push(("client_secret", secret));
            }
            None => form.push(("client_id", &client.client_id)),
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            token_type: String,
            refresh_token: Option<String>,
        }
        let granted: Granted =
            exchange(request.form(&form), endpoint, "a token", OAuthError::Token).await?;
        if !granted.token_type.eq_ignore_ascii_case("bearer") {
            return Err(OAuthError::Token(format!(
                "{endpoint} issued a `{}` token; MCP uses bearer tokens",
                granted.token_type
            )));
        }
        Ok(Tokens {
            access_token: granted.access_token,
            refresh_token: granted.refresh_token,
            token_endpoint: endpoint.to_string(),
            resource: resource.to_owned(),
        })
    }

    /// The first of `candidates` that answers with a `T`, in order.
    async fn first_json<T: for<'de> Deserialize<'de>>(&self, candidates: &[Url]) -> Option<T> {
        for url in candidates {
            let request = self.http.get(url.clone());
            if let Ok(found) = exchange(request, url, "metadata", OAuthError::Discovery).await {
                return Some(found);
            }
        }
        None
    }

    fn save(&self, stored: &Stored) {
        let Some(dir) = &self.settings.store else {
            return;
        };
        let file = store_file(dir, &self.server);
        if let Err(e) = save(&file, stored) {
            tracing::warn!(
                file = %file.display(),
                "cannot keep the OAuth tokens for the next run: {e}"
            );
        }
    }
}

#[derive(Deserialize)]
struct ResourceMetadata {
    resource: Option<String>,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

#[derive(Deserialize)]
struct ServerMetadata {
    issuer: Option<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

/// Where RFC 8615 puts `name` for `url`: with its path inserted after the
/// well-known name (RFC 9728, RFC 8414), then at the root, then (OpenID
/// Connect discovery) appended to the path.
fn well_known(url: &Url, name: &str) -> Vec<Url> {
    let path = url.path().trim_end_matches('/');
    let mut at = vec![format!("/.well-known/{name}{path}")];
    if !path.is_empty() {
        at.push(format!("/.well-known/{name}"));
        if name == "openid-configuration" {
            at.push(format!("{path}/.well-known/{name}"));
        }
    }
    at.iter()
        .filter_map(|path| {
            let mut url = url.clone();
            url.set_query(None);
            url.set_fragment(None);
            url.set_path(path);
            Some(url).filter(|u| u.path() == path)
        })
        .collect()
}

/// The resource tokens are asked for: the metadata's when it is the server's
/// URL or a prefix of it, else the server's URL (RFC 8707: no fragment).
fn resource_for(server: &Url, said: Option<&str>) -> String {
    let mut own = server.clone();
    own.set_fragment(None);
    if let Some(said) = said.and_then(|s| Url::parse(s).ok()) {
        if said.origin() == own.origin()
            && own.path().starts_with(said.path().trim_end_matches('/'))
        {
            return said.to_string();
        }
    }
    own.to_string()
}

/// An endpoint named by the authorisation server's metadata, which the
/// server reached chose: HTTPS, or HTTP on loopback only. Codes, secrets and
/// tokens then cross no network in the clear, and the URL handed to the
/// desktop's opener cannot be a file or another program's scheme.
fn secure_endpoint(name: &str, value: &str) -> Result<Url, OAuthError> {
    let url = Url::parse(value)
        .map_err(|e| OAuthError::Discovery(format!("the {name} `{value}` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_this_machine(&url) => Ok(url),
        _ => Err(OAuthError::Discovery(format!(
            "the {name} `{value}` is not an https:// URL (http:// only on this machine)"
        ))),
    }
}

fn redirect_port(redirect_uri: &str) -> Option<u16> {
    Url::parse(redirect_uri).ok()?.port()
}

/// 32 random bytes, base64url: a PKCE verifier (43 characters) or a state.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// Sends `request` (to `endpoint`) and reads its JSON answer, `what` it
/// should be; a failure, an error status or another answer is `failed`.
async fn exchange<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    endpoint: &Url,
    what: &str,
    failed: fn(String) -> OAuthError,
) -> Result<T, OAuthError> {
    let response = request
        .header(ACCEPT, "application/json")
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(format!("{endpoint}: {e}")))?;
    let status = response.status();
    let body = bounded_body(response).await.ok_or_else(|| {
        failed(format!(
            "{endpoint} answered more than {BODY_LIMIT} bytes, or broke off"
        ))
    })?;
    if !status.is_success() {
        return Err(failed(format!(
            "{endpoint} answered HTTP {status}: {}",
            body_excerpt(&body)
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| failed(format!("{endpoint} answered what is not {what}: {e}")))
}

/// Longest any one call to a metadata, registration or token endpoint may
/// take: one that accepts and never answers must not hold the flow.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from one: metadata and tokens take a few kilobytes.
const BODY_LIMIT: usize = 1 << 20;

/// The body of `response`, unless it breaks off or grows past
/// [`BODY_LIMIT`] (read no further).
async fn bounded_body(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > BODY_LIMIT {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn join_urls(urls: &[Url]) -> String {
    urls.iter().map(Url::as_str).collect::<Vec<_>>().join(", ")
}

/// Hands `url` to `$BROWSER` (a command, the URL appended), or to the
/// desktop's opener. Quietly: the URL is printed anyway, and the opener's
/// output must not reach stdout, the client's channel.
fn open_browser(url: &str) {
    let command = match std::env::var("BROWSER") {
        Ok(browser) if !browser.trim().is_empty() => shell_words::split(&browser).ok(),
        _ if cfg!(target_os = "macos") => Some(vec!["open".to_owned()]),
        _ => Some(vec!["xdg-open".to_owned()]),
    };
    let Some((program, args)) = command.as_deref().and_then(<[String]>::split_first) else {
        return;
    };
    let spawned = std::process::Command::new(program)
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped on a thread of its own: an opener may outlive the flow.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => tracing::debug!("cannot start a browser ({program}): {e}"),
    }
}

/// Serves the redirect URI until the browser comes back with `state`, and
/// returns its code.
async fn await_code(
    listener: TcpListener,
    state: &str,
    timeout: Duration,
) -> Result<String, OAuthError> {
    let (returned, mut returns) = mpsc::channel::<HashMap<String, String>>(8);
    let app = Router::new()
        .route("/callback", get(callback))
        .with_state(returned);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let waited = tokio::time::timeout(timeout, async {
        while let Some(params) = returns.recv().await {
            // Another page's return (a stale tab) is not this flow's.
            if params.get("state").map(String::as_str) != Some(state) {
                continue;
            }
            if let Some(error) = params.get("error") {
                let description = params
                    .get("error_description")
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                return Err(OAuthError::Denied(format!("{error}{description}")));
            }
            return params
                .get("code")
                .cloned()
                .ok_or_else(|| OAuthError::Denied("the browser came back without a code".into()));
        }
        Err(OAuthError::Callback("the listener stopped".into()))
    })
    .await;
    server.abort();
    waited.unwrap_or(Err(OAuthError::TimedOut(timeout)))
}

async fn callback(
    State(returned): State<mpsc::Sender<HashMap<String, String>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Html<&'static str> {
    let denied = params.contains_key("error");
    let _ = returned.send(params).await;
    Html(if denied {
        "<p>Shadowcat was not authorised. You may close this window.</p>"
    } else {
        "<p>Shadowcat is authorised. You may close this window.</p>"
    })
}

/// The file of `server`'s tokens in `dir`: named by a hash of its URL.
fn store_file(dir: &Path, server: &Url) -> PathBuf {
    let digest = Sha256::digest(server.as_str().as_bytes());
    dir.join(format!("{}.json", hex::encode(&digest[..8])))
}

fn load(file: &Path) -> Option<Stored> {
    let text = std::fs::read(file).ok()?;
    match serde_json::from_slice(&text) {
        Ok(stored) => Some(stored),
        Err(e) => {
            tracing::warn!(file = %file.display(), "ignoring unreadable OAuth tokens: {e}");
            None
        }
    }
}

/// Written whole (a temporary file renamed over it), readable by its owner
/// only: it holds credentials.
fn save(file: &Path, stored: &Stored) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let temporary = file.with_extension("json.tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    out.write_all(&serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?)?;
    out.sync_all()?;
    std::fs::rename(&temporary, file)
}

/// Where tokens are kept by default: `$XDG_STATE_HOME/shadowcat/oauth`, or
/// `~/.local/state/shadowcat/oauth`.
pub fn default_store() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))?;
    Some(base.join("shadowcat").join("oauth"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_forward_oauth_pkce_follows_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        assert_ne!(a, b);
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn proxy_forward_oauth_looks_for_metadata_where_the_rfcs_put_it() {
        let strings = |urls: Vec<Url>| urls.iter().map(Url::to_string).collect::<Vec<_>>();
        assert_eq!(
            strings(well_known(
                &url("https://mcp.example.com/v1/mcp?x=1"),
                "oauth-protected-resource"
            )),
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource",
            ]
        );
        assert_eq!(
            strings(well_known(
                &url("https://auth.example.com"),
                "oauth-authorization-server"
            )),
            ["https://auth.example.com/.well-known/oauth-authorization-server"]
        );
        assert_eq!(
            strings(well_known(
                &url("https://auth.example.com/tenant/"),
                "openid-configuration"
            )),
            [
                "https://auth.example.com/.well-known/openid-configuration/tenant",
                "https://auth.example.com/.well-known/openid-configuration",
                "https://auth.example.com/tenant/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn proxy_forward_oauth_takes_endpoints_on_https_or_this_machine_only() {
        for good in [
            "https://auth.example.com/authorize",
            "http://localhost:3001/token",
            "http://127.0.0.1:9/register",
            "http://[::1]:9/token",
        ] {
            assert!(secure_endpoint("endpoint", good).is_ok(), "{good}");
        }
        for bad in [
            "http://auth.example.com/token",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "x-app://open",
            "http://localhost.example.com/token",
            "not a url",
        ] {
            let e = secure_endpoint("authorization_endpoint", bad).expect_err(bad);
            assert!(e.to_string().contains("authorization_endpoint"), "{e}");
        }
    }

    #[test]
    fn proxy_forward_oauth_asks_for_the_servers_own_resource() {
        let server = url("http://localhost:3000/mcp");
        assert_eq!(resource_for(&server, None), "http://localhost:3000/mcp");
        assert_eq!(
            resource_for(&server, Some("http://localhost:3000/mcp")),
            "http://localhost:3000/mcp"
        );
        assert_eq!(
            resource_for(&server, Some("http://localhost:3000/")),
            "http://localhost:3000/",
            "a prefix of the server's URL covers it"
        );
        assert_eq!(
            resource_for(&server, Some("https://elsewhere.example/mcp")),
            "http://localhost:3000/mcp",
            "another origin's resource is not ours"
        );
        let challenge = HeaderValue::from_static(
            r#"Bearer error="insufficient_scope", scope="files:read \"x\"", resource_metadata="https://a/b""#,
        );
        assert_eq!(
            challenge_scope(&challenge).as_deref(),
            Some(r#"files:read "x""#)
        );
        assert_eq!(challenge_scope(&HeaderValue::from_static("Bearer")), None);
    }

    /// The browser's return: another flow's (a stale tab) is ignored, a
    /// refusal ends the flow naming the server's error, and so does the
    /// wait's end.
    #[tokio::test]
    async fn proxy_forward_oauth_takes_only_its_own_flows_return() {
        let client = reqwest::Client::new();
        let back = |port: u16, query: &'static str| {
            let client = client.clone();
            async move {
                let url = format!("http://127.0.0.1:{port}/callback?{query}");
                client
                    .get(url)
                    .send()
                    .await
                    .expect("the listener answers")
                    .text()
                    .await
            }
        };
        let listen = || async {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("a port");
            let port = listener.local_addr().expect("bound").port();
            (listener, port)
        };

        let (listener, port) = listen().await;
        let flow = tokio::spawn(await_code(listener, "s1", Duration::from_secs(30)));
        back(port, "state=other&code=stale").await.expect("a page");
        let page = back(port, "state=s1&code=c1").await.expect("a page");
        assert!(page.contains("is authorised"), "{page}");
        assert_eq!(flow.await.expect("joins").expect("a code"), "c1");

        let (listener, port) = listen().await;
        let flow = tokio::spawn(await_code(listener, "s2", Duration::from_secs(30)));
        let page = back(
            port,
            "state=s2&error=access_denied&error_description=no%20thanks",
        )
        .await
        .expect("a page");
        assert!(page.contains("was not authorised"), "{page}");
        let denied = flow.await.expect("joins").expect_err("refused");
        assert!(
            denied.to_string().contains("access_denied: no thanks"),
            "{denied}"
        );

        let (listener, _) = listen().await;
        let waited = await_code(listener, "s3", Duration::from_millis(50)).await;
        assert!(matches!(waited, Err(OAuthError::TimedOut(_))), "{waited:?}");
    }

    /// A token endpoint answering without end is not read to its end.
    #[tokio::test]
    async fn proxy_forward_oauth_reads_a_bounded_answer() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("a port");
        let port = listener.local_addr().expect("bound").port();
        let app = Router::new().route(
            "/token",
            axum::routing::post(|| async { vec![b' '; BODY_LIMIT + 1] }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoint = url(&format!("http://127.0.0.1:{port}/token"));
        let request = reqwest::Client::new().post(endpoint.clone());
        let answered: Result<serde_json::Value, _> =
            exchange(request, &endpoint, "a token", OAuthError::Token).await;
        let e = answered.expect_err("too long");
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
    }

    #[test]
    fn proxy_forward_oauth_keeps_tokens_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a directory");
        let store = dir.path().join("nested").join("oauth");
        let server = url("https://mcp.example.com/mcp");
        let file = store_file(&store, &server);
        let stored = Stored {
            server: server.to_string(),
            client: None,
            tokens: Some(Tokens {
                access_token: "a".into(),
                refresh_token: Some("r".into()),
                token_endpoint: "https://auth.example.com/token".into(),
                resource: server.to_string(),
            }),
        };
        save(&file, &stored).expect("saved");
        let mode = std::fs::metadata(&file)
            .expect("the file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&store)
            .expect("the directory")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let loaded = load(&file).expect("loads");
        assert_eq!(
            loaded.tokens.expect("tokens").refresh_token.as_deref(),
            Some("r")
        );
        assert_ne!(
            store_file(&store, &url("https://other.example/mcp")),
            file,
            "a file per server"
        );
        std::fs::write(&file, b"not json").expect("written");
        assert!(load(&file).is_none(), "an unreadable file is ignored");
    }
}
