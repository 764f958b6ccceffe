//! The `Origin` check of MCP's streamable HTTP transport. A web page whose
//! own host name is rebound in DNS to the proxy's address talks to the
//! proxy as its own origin, and could drive every session's server (read
//! files, run tools): the transport's security warning has servers validate
//! `Origin`, and answer one that is present and not allowed with 403.
//!
//! A request without `Origin` comes from no browser, and passes. One with
//! an `Origin` passes when that origin is on this machine (`localhost` or a
//! loopback address: a page of local software) or was given with
//! `--allowed-origin` (`*` there admits any). The `Host` header proves
//! nothing: a rebinding page's requests name the attacker's host there too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use reqwest::Url;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::jsonrpc::code;
use super::mcp_headers::{PROTOCOL_VERSION, SESSION_ID};
use super::reverse::refuse;
use super::Proxy;

/// The browser origins the proxy serves, besides this machine's own.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    any: bool,
    /// `Origin: null` (a sandboxed frame, a local file).
    null: bool,
    listed: Vec<Url>,
}

/// An `--allowed-origin` that names no origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an origin: give a scheme, a host and maybe a port, as in \
     `https://app.example.com` or `http://localhost:6274` (or `*` for any, `null` for `Origin: null`)"
)]
pub struct NotAnOrigin(pub String);

impl AllowedOrigins {
    pub fn new<S: AsRef<str>>(given: &[S]) -> Result<Self, NotAnOrigin> {
        let mut origins = Self::default();
        for text in given {
            match text.as_ref().trim() {
                "*" => origins.any = true,
                "null" => origins.null = true,
                text => {
                    let url = Url::parse(text).map_err(|_| NotAnOrigin(text.to_owned()))?;
                    let bare = matches!(url.path(), "" | "/")
                        && url.query().is_none()
                        && url.fragment().is_none()
                        && url.username().is_empty()
                        && url.password().is_none();
                    if !url.origin().is_tuple() || !bare {
                        return Err(NotAnOrigin(text.to_owned()));
                    }
                    origins.listed.push(url);
                }
            }
        }
        Ok(origins)
    }

    /// Whether any origin is admitted (`*`), which the operator is warned of.
    pub fn admits_any(&self) -> bool {
        self.any
    }

    /// Whether a request with this `Origin` header may be served.
    pub fn admits(&self, origin: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(text) = origin.to_str() else {
            return false;
        };
        if text.trim() == "null" {
            return self.null;
        }
        let Ok(url) = Url::parse(text.trim()) else {
            return false;
        };
        is_this_machine(&url)
            || self
                .listed
                .iter()
                .any(|allowed| allowed.origin() == url.origin())
    }
}

/// `localhost` or a loopback address.
pub(crate) fn is_this_machine(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// CORS for `/mcp`, for the origins admitted: a page of another origin
/// (a browser MCP client, such as an inspector on its own port) needs the
/// preflight answered, and the session id and the upstream's challenge
/// exposed, or the browser withholds them from it. Cookies are not used,
/// so no credentials are allowed.
pub fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let origins = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.admits(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static(SESSION_ID),
            HeaderName::from_static(PROTOCOL_VERSION),
            WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(3600))
}

/// Longest stretch of a refused `Origin` repeated in the answer and the log.
const SHOWN: usize = 200;

/// Middleware of `/mcp`: a request whose `Origin` is not admitted gets 403
/// before anything else happens (no session, no hop, no upstream), and
/// counts among the requests answered.
pub async fn check(State(proxy): State<Arc<Proxy>>, request: Request, next: Next) -> Response {
    let Some(refused) = refusal(&proxy, &request) else {
        return next.run(request).await;
    };
    let method = match *request.method() {
        Method::POST => "POST",
        Method::GET => "GET",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    proxy
        .metrics
        .count_request(method, StatusCode::FORBIDDEN.as_u16());
    refused
}

/// Middleware of the admin API, which lists session ids and deletes
/// sessions: the same check, whatever the token.
pub async fn check_admin(
    State(proxy): State<Arc<Proxy>>,
    request: Request,
    next: Next,
) -> Response {
    match refusal(&proxy, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

fn refusal(proxy: &Proxy, request: &Request) -> Option<Response> {
    let origin = request
        .headers()
        .get(ORIGIN)
        .filter(|origin| !proxy.options.origins.admits(origin))?;
    let shown: String = String::from_utf8_lossy(origin.as_bytes())
        .chars()
        .take(SHOWN)
        .collect();
    tracing::debug!(origin = %shown, "refused a request from a browser origin not allowed");
    Some(refuse(
        StatusCode::FORBIDDEN,
        None,
        code::INVALID_REQUEST,
        &format!(
            "Origin `{shown}` is not allowed: browser pages are served from this machine \
             (localhost) and from the origins given with --allowed-origin"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(allowed: &AllowedOrigins, origin: &str) -> bool {
        allowed.admits(&HeaderValue::from_str(origin).expect("a header value"))
    }

    #[test]
    fn proxy_origin_admits_this_machine_and_the_origins_given() {
        let none = AllowedOrigins::new::<&str>(&[]).expect("valid");
        let some =
            AllowedOrigins::new(&["https://app.example.com", "http://b.example:8080/", "null"])
                .expect("valid");
        let any = AllowedOrigins::new(&["*"]).expect("valid");
        assert!(any.admits_any() && !some.admits_any());
        // Origin, then whether none, some and any admit it.
        let cases = [
            ("http://localhost:6274", [true, true, true]),
            ("http://LOCALHOST", [true, true, true]),
            ("https://127.0.0.1:8443", [true, true, true]),
            ("http://127.8.9.10", [true, true, true]),
            ("http://[::1]:3000", [true, true, true]),
            ("https://app.example.com", [false, true, true]),
            ("https://APP.example.com:443", [false, true, true]),
            ("http://b.example:8080", [false, true, true]),
            ("null", [false, true, true]),
            ("http://app.example.com", [false, false, true]),
            ("https://app.example.com:8443", [false, false, true]),
            ("http://b.example", [false, false, true]),
            ("http://evil.example:8080", [false, false, true]),
            ("http://localhost.evil.example", [false, false, true]),
            ("http://10.0.0.5", [false, false, true]),
            ("not an origin", [false, false, true]),
            ("", [false, false, true]),
        ];
        for (origin, expected) in cases {
            let got = [&none, &some, &any].map(|allowed| admitted(allowed, origin));
            assert_eq!(got, expected, "{origin}");
        }
    }

    #[test]
    fn proxy_origin_refuses_what_names_no_origin() {
        for given in [
            "app.example.com",
            "https://app.example.com/mcp",
            "https://app.example.com/?a=1",
            "https://user@app.example.com",
            "file:///tmp/x",
            "",
        ] {
            assert_eq!(
                AllowedOrigins::new(&[given]).map(|_| ()),
                Err(NotAnOrigin(given.to_owned())),
                "{given}"
            );
        }
    }
}
