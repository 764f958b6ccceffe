//! OAuth protected-resource metadata (RFC 9728) for an `--upstream-http`
//! server that requires authorisation.
//!
//! An MCP client that gets a 401 follows the challenge's `resource_metadata`
//! to the server's metadata, checks that its `resource` is the URL it is
//! connected to, and asks the authorisation server named there for a token
//! for that resource. Passed through unchanged, the upstream's challenge and
//! metadata name the upstream, not the proxy the client is connected to, and
//! a client that checks (the TypeScript SDK does) refuses to go on.
//!
//! So the proxy names itself: challenges coming back from the upstream point
//! at the proxy's own metadata, which is the upstream's with `resource` set
//! to the proxy's `/mcp` URL (`--public-url`, or the URL the request came
//! to). Tokens are then issued for the proxy's URL, and passed to the
//! upstream with each request: the upstream must accept that audience, as a
//! server behind a gateway does.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::upstream::HttpUpstreamConfig;

/// Where RFC 9728 puts a resource's metadata: under this path on its origin,
/// followed by the resource's own path (`/mcp`).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The proxy's side of an upstream's authorisation.
pub struct ResourceMetadata {
    upstream: Arc<HttpUpstreamConfig>,
    /// The URL clients reach `/mcp` at (`--public-url`); otherwise told by
    /// each request's `Host`.
    public_url: Option<reqwest::Url>,
    /// The scheme `/mcp` is served with, for a URL the `Host` tells.
    scheme: &'static str,
}

impl ResourceMetadata {
    pub fn new(
        upstream: Arc<HttpUpstreamConfig>,
        public_url: Option<reqwest::Url>,
        https: bool,
    ) -> Self {
        Self {
            upstream,
            public_url,
            scheme: if https { "https" } else { "http" },
        }
    }

    /// The proxy's `/mcp` as the client of `headers` reaches it: the
    /// resource its tokens are for.
    fn resource(&self, headers: &HeaderMap) -> Option<reqwest::Url> {
        if let Some(url) = &self.public_url {
            return Some(url.clone());
        }
        let host = headers.get(HOST)?.to_str().ok()?;
        reqwest::Url::parse(&format!("{}://{host}/mcp", self.scheme)).ok()
    }

    /// Where the proxy serves the metadata of `resource`.
    fn metadata_url(resource: &reqwest::Url) -> String {
        let path = resource.path().trim_end_matches('/');
        format!(
            "{}{METADATA_PATH}{path}",
            resource.origin().ascii_serialization()
        )
    }

    /// Where the upstream's metadata may be: where its last challenge said,
    /// then RFC 9728's places for its URL.
    async fn upstream_locations(&self) -> Vec<reqwest::Url> {
        let url = &self.upstream.url;
        let origin = url.origin().ascii_serialization();
        let path = url.path().trim_end_matches('/');
        // Taken before the await: the lock is not held across it.
        let recorded = self.upstream.resource_metadata.lock().clone();
        let told = match recorded {
            Some(told) => Some(told),
            None => self.challenge_upstream().await,
        };
        told.into_iter()
            .chain(reqwest::Url::parse(&format!("{origin}{METADATA_PATH}{path}")).ok())
            .chain(reqwest::Url::parse(&format!("{origin}{METADATA_PATH}")).ok())
            .collect()
    }

    /// Where the upstream's challenge to a request without credentials says
    /// its metadata is. A client may ask this instance for the metadata
    /// before any of the upstream's challenges came through it (another
    /// instance of a cluster relayed the one it got).
    async fn challenge_upstream(&self) -> Option<reqwest::Url> {
        let response = self
            .upstream
            .client
            .get(self.upstream.url.clone())
            .header("accept", "text/event-stream")
            .timeout(self.upstream.timeout)
            .send()
            .await
            .ok()?;
        let location = challenge_metadata(response.headers().get(WWW_AUTHENTICATE)?)?;
        *self.upstream.resource_metadata.lock() = Some(location.clone());
        Some(location)
    }

    /// The upstream's metadata document, from the first of its locations
    /// that has one.
    async fn fetch_upstream(&self) -> Result<serde_json::Map<String, Value>, String> {
        let mut why = String::from("the upstream serves no protected-resource metadata");
        for location in self.upstream_locations().await {
            let answer = self
                .upstream
                .client
                .get(location.clone())
                .header("accept", "application/json")
                .timeout(self.upstream.timeout)
                .send()
                .await;
            let response = match answer {
                Ok(response) if response.status().is_success() => response,
                Ok(response) => {
                    why = format!("{location} answered {}", response.status());
                    continue;
                }
                Err(e) => {
                    why = format!("{location}: {e}");
                    continue;
                }
            };
            match response.json::<Value>().await {
                Ok(Value::Object(document)) => return Ok(document),
                Ok(_) => why = format!("{location} is not a JSON object"),
                Err(e) => why = format!("{location} is not JSON: {e}"),
            }
        }
        Err(why)
    }
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`.
pub fn router<S: Clone + Send + Sync + 'static>(metadata: Arc<ResourceMetadata>) -> Router<S> {
    Router::new()
        .route(METADATA_PATH, get(serve))
        .route(&format!("{METADATA_PATH}/mcp"), get(serve))
        .with_state(metadata)
}

async fn serve(State(metadata): State<Arc<ResourceMetadata>>, headers: HeaderMap) -> Response {
    let Some(resource) = metadata.resource(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "no Host header to name this resource by (see --public-url)",
        )
            .into_response();
    };
    match metadata.fetch_upstream().await {
        Ok(mut document) => {
            document.insert("resource".into(), Value::String(resource.to_string()));
            (
                [(CONTENT_TYPE, "application/json")],
                Value::Object(document).to_string(),
            )
                .into_response()
        }
        // Where the proxy looked (the upstream's addresses) is for its log,
        // not for whoever asks.
        Err(why) => {
            tracing::debug!("no protected-resource metadata to serve: {why}");
            (
                StatusCode::NOT_FOUND,
                "the server behind this proxy publishes no protected-resource metadata",
            )
                .into_response()
        }
    }
}

/// Points the `resource_metadata` of every challenge going out at the
/// proxy's own metadata. In a cluster each instance a response passes names
/// itself, so the client is told of the one it reached.
pub async fn name_ourselves(
    State(metadata): State<Arc<ResourceMetadata>>,
    request: Request,
    next: Next,
) -> Response {
    let resource = metadata.resource(request.headers());
    let mut response = next.run(request).await;
    let Some(resource) = resource else {
        return response;
    };
    let ours = ResourceMetadata::metadata_url(&resource);
    let challenges: Vec<HeaderValue> = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|challenge| rewrite_challenge(challenge, &ours).unwrap_or_else(|| challenge.clone()))
        .collect();
    if challenges.is_empty() {
        return response;
    }
    let headers = response.headers_mut();
    headers.remove(WWW_AUTHENTICATE);
    for challenge in challenges {
        headers.append(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// Where the value of a challenge's parameter `name` sits: its byte range,
/// quotes included. The name counts only as a parameter's: not inside
/// another's quoted value (`realm="x, resource_metadata=y"`), nor as the
/// tail of a longer name.
fn challenge_param(challenge: &str, name: &[u8]) -> Option<(usize, usize)> {
    let bytes = challenge.as_bytes();
    let mut at = 0;
    // The byte before `at` outside quoted strings; none at the start.
    let mut before: Option<u8> = None;
    while at < bytes.len() {
        if bytes[at] == b'"' {
            at = quoted_end(bytes, at)?;
            before = Some(b'"');
            continue;
        }
        let named = bytes[at..]
            .get(..name.len())
            .is_some_and(|found| found.eq_ignore_ascii_case(name))
            && before.is_none_or(|c| c == b',' || c.is_ascii_whitespace());
        if named {
            let rest = challenge[at + name.len()..].trim_start();
            if let Some(assigned) = rest.strip_prefix('=') {
                let value = challenge.len() - assigned.trim_start().len();
                let end = if bytes.get(value) == Some(&b'"') {
                    quoted_end(bytes, value)?
                } else {
                    challenge[value..]
                        .find(|c: char| c == ',' || c.is_ascii_whitespace())
                        .map_or(challenge.len(), |end| value + end)
                };
                return Some((value, end));
            }
        }
        before = Some(bytes[at]);
        at += 1;
    }
    None
}

/// Just past the closing quote of the quoted string opening at `open`
/// (RFC 9110: a backslash escapes the byte after it); `None` if unclosed.
fn quoted_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// The URL a challenge's `resource_metadata` gives.
pub fn challenge_metadata(challenge: &HeaderValue) -> Option<reqwest::Url> {
    reqwest::Url::parse(&challenge_value(challenge, b"resource_metadata")?).ok()
}

/// The scopes a challenge asks for (`scope="a b"`), unquoted.
pub fn challenge_scope(challenge: &HeaderValue) -> Option<String> {
    challenge_value(challenge, b"scope")
}

/// Whether a 403's challenge asks for more scopes than the token has
/// (`error="insufficient_scope"`, RFC 6750).
pub fn wants_more_scope(challenge: &HeaderValue) -> bool {
    challenge_value(challenge, b"error").as_deref() == Some("insufficient_scope")
}

/// The value of a challenge's parameter `name`, unquoted.
fn challenge_value(challenge: &HeaderValue, name: &[u8]) -> Option<String> {
    let text = challenge.to_str().ok()?;
    let (start, end) = challenge_param(text, name)?;
    let value = &text[start..end];
    let unquoted = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => {
            let mut unescaped = String::with_capacity(quoted.len());
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                unescaped.extend(if c == '\\' { chars.next() } else { Some(c) });
            }
            unescaped
        }
        None => value.to_owned(),
    };
    Some(unquoted).filter(|value| !value.trim().is_empty())
}

/// `challenge` with its `resource_metadata` set to `ours`; `None` when it
/// has none.
fn rewrite_challenge(challenge: &HeaderValue, ours: &str) -> Option<HeaderValue> {
    let text = challenge.to_str().ok()?;
    let (start, end) = challenge_param(text, b"resource_metadata")?;
    let rewritten = format!("{}\"{ours}\"{}", &text[..start], &text[end..]);
    HeaderValue::from_str(&rewritten).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).expect("a header value")
    }

    #[test]
    fn proxy_oauth_challenges_are_pointed_at_our_metadata_and_nothing_else_changes() {
        let ours = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp";
        let cases = [
            (
                r#"Bearer resource_metadata="https://up.example/.well-known/oauth-protected-resource""#,
                format!(r#"Bearer resource_metadata="{ours}""#),
            ),
            (
                r#"Bearer realm="mcp", Resource_Metadata = "https://up.example/m", scope="a b""#,
                format!(r#"Bearer realm="mcp", Resource_Metadata = "{ours}", scope="a b""#),
            ),
            (
                "Bearer resource_metadata=https://up.example/m, error=invalid_token",
                format!(r#"Bearer resource_metadata="{ours}", error=invalid_token"#),
            ),
            (
                r#"Bearer realm="a \"q\", resource_metadata=x", resource_metadata="https://up.example/m""#,
                format!(
                    r#"Bearer realm="a \"q\", resource_metadata=x", resource_metadata="{ours}""#
                ),
            ),
        ];
        for (given, expected) in cases {
            let rewritten = rewrite_challenge(&value(given), ours).expect(given);
            assert_eq!(rewritten.to_str().ok(), Some(expected.as_str()), "{given}");
        }
        let told = challenge_metadata(&value(
            r#"Bearer scope="x", resource_metadata="https://up.example/m""#,
        ));
        assert_eq!(
            told.map(String::from).as_deref(),
            Some("https://up.example/m")
        );
        for without in [
            r#"Bearer realm="mcp""#,
            r#"Bearer x_resource_metadata="https://up.example/m""#,
            r#"Bearer realm="resource_metadata""#,
            r#"Bearer realm="x, resource_metadata=y""#,
            r#"Bearer realm="x \", resource_metadata=y""#,
            r#"Bearer realm="unclosed, resource_metadata="#,
        ] {
            assert!(
                rewrite_challenge(&value(without), ours).is_none(),
                "{without}"
            );
        }
    }

    #[test]
    fn proxy_oauth_metadata_is_served_where_rfc_9728_puts_it_for_our_url() {
        let resource = reqwest::Url::parse("https://mcp.example.com/mcp").expect("a URL");
        assert_eq!(
            ResourceMetadata::metadata_url(&resource),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
    }
}
