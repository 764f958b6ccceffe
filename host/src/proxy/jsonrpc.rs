//! JSON-RPC 2.0 messages as the proxy sees them: the bytes as they came, plus
//! just enough of the envelope to route them.
//!
//! The proxy forwards messages unchanged, so it never re-serialises a body it
//! can pass through: it keeps the original bytes and parses only the envelope
//! (`id`, `method`, whether it is a result or an error). The one exception is
//! the stdio transport, whose framing is one message per line: a body with a
//! line break in it (pretty-printed JSON) is compacted before it is written.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// JSON-RPC error codes the proxy answers with.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Server-defined range: the proxy's own refusals.
    pub const RATE_LIMITED: i64 = -32029;
    pub const OVERLOADED: i64 = -32030;
    pub const UPSTREAM_FAILED: i64 = -32031;
    pub const SESSION_CLOSED: i64 = -32032;
}

/// What a message is, by the fields it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects a response.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has an id and a result or an error.
    Response,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    jsonrpc: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    method: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// `Some` whenever the field is there, `null` included: an error response to
/// an unparseable request has `"id": null`, and a result may be `null`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// One JSON-RPC message: its original bytes and its routing envelope.
#[derive(Debug, Clone)]
pub struct Message {
    raw: Bytes,
    kind: Kind,
    /// The id as it was written (`1`, `"a"`), compact; the key that pairs a
    /// response with its request.
    id: Option<String>,
    method: Option<String>,
    /// A response carrying `error` rather than `result`.
    is_error: bool,
}

/// Why bytes are not a JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid JSON that is not a valid message. `id` is the compact id it
    /// carries when that id is usable (a string or a number), so the error
    /// reaches the caller waiting on it.
    #[error("invalid request: {reason}")]
    Invalid {
        reason: Cow<'static, str>,
        id: Option<String>,
    },
}

impl MessageError {
    pub fn code(&self) -> i64 {
        match self {
            MessageError::Parse(_) => code::PARSE_ERROR,
            MessageError::Invalid { .. } => code::INVALID_REQUEST,
        }
    }

    /// The id the error response must carry: `None` (answered as `null`)
    /// only when it cannot be determined.
    pub fn id(&self) -> Option<&str> {
        match self {
            MessageError::Parse(_) => None,
            MessageError::Invalid { id, .. } => id.as_deref(),
        }
    }

    fn invalid(reason: impl Into<Cow<'static, str>>, id: Option<String>) -> Self {
        MessageError::Invalid {
            reason: reason.into(),
            id,
        }
    }
}

/// What one body (a POST's, a stdio line) holds: a message, or a JSON-RPC
/// batch of them.
#[derive(Debug)]
pub enum Incoming {
    One(Message),
    /// The elements in order, each a message or why it is not one (JSON-RPC:
    /// an invalid element is answered on its own, the others are served).
    /// Never empty.
    Batch(Vec<Result<Message, MessageError>>),
}

impl Incoming {
    /// Parses a body that may be a batch (MCP 2025-03-26 and earlier allow
    /// them). A batch that is not JSON, or is empty, is one error.
    pub fn parse(raw: Bytes) -> Result<Self, MessageError> {
        let text = trim_ascii(&raw);
        if text.first() != Some(&b'[') {
            return Message::parse(raw).map(Incoming::One);
        }
        let elements: Vec<&RawValue> =
            serde_json::from_slice(text).map_err(|e| MessageError::Parse(e.to_string()))?;
        if elements.is_empty() {
            return Err(MessageError::invalid("an empty batch", None));
        }
        let batch = elements
            .into_iter()
            .map(|element| Message::parse(raw.slice_ref(element.get().as_bytes())))
            .collect();
        Ok(Incoming::Batch(batch))
    }
}

impl Message {
    /// Parses one message. A JSON array (a batch) is refused as invalid:
    /// where batches are served, [`Incoming::parse`] reads the body.
    pub fn parse(raw: Bytes) -> Result<Self, MessageError> {
        let text = trim_ascii(&raw);
        if text.first() == Some(&b'[') {
            // Still check it is JSON, so garbage reads as a parse error.
            serde_json::from_slice::<&RawValue>(text)
                .map_err(|e| MessageError::Parse(e.to_string()))?;
            return Err(MessageError::invalid(
                "a batch where one message is expected",
                None,
            ));
        }
        let envelope: Envelope<'_> = match serde_json::from_slice(text) {
            Ok(envelope) => envelope,
            Err(e) => return Err(not_an_envelope(text, &e)),
        };
        if envelope.jsonrpc != Some("2.0") {
            return Err(MessageError::invalid(
                "`jsonrpc` must be \"2.0\"",
                envelope.id.and_then(answerable_id),
            ));
        }
        let id = envelope.id.map(|id| compact_id(id.get()));
        let outcome = match (envelope.result, envelope.error) {
            (None, None) => None,
            (Some(outcome), None) | (None, Some(outcome)) => Some(outcome),
            // JSON-RPC 2.0: a response has exactly one of them. Forwarded,
            // its receiver would have to guess whether the call succeeded.
            (Some(_), Some(_)) => {
                return Err(MessageError::invalid(
                    "a response carries either a result or an error, not both",
                    envelope.id.and_then(answerable_id),
                ))
            }
        };
        let kind = match (&envelope.method, &id, outcome) {
            (Some(_), Some(_), None) => Kind::Request,
            (Some(_), None, None) => Kind::Notification,
            (None, Some(_), Some(_)) => Kind::Response,
            _ => {
                return Err(MessageError::invalid(
                    "a message needs a method (request, notification) or an id with a \
                     result or error (response)",
                    envelope.id.and_then(answerable_id),
                ))
            }
        };
        if kind == Kind::Request && !envelope.id.is_some_and(is_string_or_integer) {
            // A server that cannot read the id cannot answer by it (`1e400`
            // overflows most parsers, an object is no key): forwarded, the
            // request would wait for an answer that never comes.
            return Err(MessageError::invalid(
                "a request's id must be a string or an integer (MCP: not null, no fraction)",
                envelope.id.and_then(answerable_id),
            ));
        }
        let method = envelope.method;
        let is_error = kind == Kind::Response && envelope.error.is_some();
        Ok(Self {
            raw,
            kind,
            id,
            method,
            is_error,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// An error response.
    pub fn is_error(&self) -> bool {
        self.is_error
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.kind == Kind::Request && self.method() == Some(method)
    }

    pub fn is_notification(&self, method: &str) -> bool {
        self.kind == Kind::Notification && self.method() == Some(method)
    }

    /// An error response to request `id` (`"id": null` for none), as the
    /// proxy answers in place of a server.
    pub fn error(id: Option<&str>, code: i64, why: &str) -> Self {
        // `error_response` writes a valid response whatever `id` and `why`
        // are (an id that is not JSON is written as null).
        Self::parse(error_response(id, code, why, None))
            .expect("an error response is a valid JSON-RPC response")
    }

    /// The message exactly as received.
    pub fn bytes(&self) -> &Bytes {
        &self.raw
    }

    /// The message as one line for the stdio framing (no line break inside).
    pub fn line(&self) -> Bytes {
        let body = trim_ascii(&self.raw);
        if !body.contains(&b'\n') && !body.contains(&b'\r') {
            return self.raw.slice_ref(body);
        }
        // Pretty-printed: line breaks can only be whitespace between tokens
        // (JSON strings cannot hold raw ones), so compacting keeps the value.
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Bytes::from(value.to_string()),
            Err(_) => self.raw.clone(),
        }
    }
}

impl Message {
    /// The progress token a request asks for progress under
    /// (`params._meta.progressToken`), or the one a progress notification
    /// reports on (`params.progressToken`), in its compact spelling: what
    /// pairs a server's progress with the request it is about.
    pub fn progress_token(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Meta<'a> {
            #[serde(borrow, rename = "progressToken")]
            progress_token: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "_meta")]
            meta: Option<Meta<'a>>,
            #[serde(borrow, rename = "progressToken")]
            progress_token: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Carrier<'a> {
            #[serde(borrow)]
            params: Option<Params<'a>>,
        }
        let asks = self.kind == Kind::Request;
        let reports = self.is_notification("notifications/progress");
        // Every request to a stdio server comes here: most carry no token,
        // and a scan of the bytes spares them a second parse.
        if !asks && !reports || memchr::memmem::find(&self.raw, b"progressToken").is_none() {
            return None;
        }
        let carrier: Carrier<'_> = serde_json::from_slice(trim_ascii(&self.raw)).ok()?;
        let params = carrier.params?;
        let token = if asks {
            params.meta?.progress_token?
        } else {
            params.progress_token?
        };
        Some(compact_id(token.get()))
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// A body the envelope does not fit: a parse error when it is not JSON at
/// all, else an invalid request (a field of the wrong type, a duplicate
/// field), answered by its id when that can still be read.
fn not_an_envelope(text: &[u8], error: &serde_json::Error) -> MessageError {
    if serde_json::from_slice::<IgnoredAny>(text).is_err() {
        return MessageError::Parse(error.to_string());
    }
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    // Anything but an object with a single, well-formed id has no id to
    // answer by.
    let id = serde_json::from_slice::<IdOnly<'_>>(text)
        .ok()
        .and_then(|only| only.id)
        .and_then(answerable_id);
    MessageError::invalid(error.to_string(), id)
}

/// The compact id an error response can carry: JSON-RPC ids are strings or
/// numbers; anything else (`null`, an object, a number out of range) cannot
/// be echoed as the id of the request.
pub(crate) fn answerable_id(id: &RawValue) -> Option<String> {
    match id.get().trim_start().as_bytes().first() {
        Some(b'"' | b'-' | b'0'..=b'9') => readable_id(id.get()),
        _ => None,
    }
}

/// What MCP allows as a request id: a string, or a number without a fraction
/// or an exponent.
fn is_string_or_integer(id: &RawValue) -> bool {
    let text = id.get().trim();
    if text.starts_with('"') {
        return true;
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An id's compact spelling, so `1` and ` 1` pair up.
fn compact_id(raw: &str) -> String {
    readable_id(raw).unwrap_or_else(|| raw.trim().to_owned())
}

/// The compact spelling of an id this process can read back (`1e400` it
/// cannot).
fn readable_id(raw: &str) -> Option<String> {
    serde_json::from_str::<Value>(raw)
        .ok()
        .map(|value| value.to_string())
}

/// A JSON-RPC error response. `id` is the compact id of the request it
/// answers, or `None` when it is unknown (a parse error).
pub fn error_response(id: Option<&str>, code: i64, message: &str, data: Option<Value>) -> Bytes {
    let id: Value = id
        .and_then(|id| serde_json::from_str(id).ok())
        .unwrap_or(Value::Null);
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    Bytes::from(serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, MessageError> {
        Message::parse(Bytes::from(text.to_owned()))
    }

    #[test]
    fn proxy_jsonrpc_classifies_requests_notifications_and_responses() {
        for id in ["7", "-7", "0", "99999999999999999999999", r#""a""#, r#""""#] {
            let text = format!(r#"{{"jsonrpc":"2.0","id": {id},"method":"ping"}}"#);
            assert_eq!(parse(&text).expect(&text).kind(), Kind::Request, "{text}");
        }
        let request = parse(r#"{"jsonrpc":"2.0","id": 7,"method":"tools/list"}"#).expect("request");
        assert_eq!(request.kind(), Kind::Request);
        assert_eq!(request.id(), Some("7"));
        assert!(request.is_request("tools/list"));
        let notification =
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("note");
        assert_eq!(notification.kind(), Kind::Notification);
        assert!(notification.is_notification("notifications/initialized"));
        let response = parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).expect("response");
        assert_eq!(response.kind(), Kind::Response);
        assert_eq!(response.id(), Some("\"a\""));
        let error = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#)
            .expect("error response");
        assert_eq!(error.kind(), Kind::Response);
        assert!(error.is_error());
        assert!(!response.is_error());
    }

    #[test]
    fn proxy_jsonrpc_refuses_garbage_with_the_right_code() {
        let err = parse("{not json").expect_err("garbage");
        assert_eq!(err.code(), code::PARSE_ERROR);
        let err = parse(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).expect_err("old version");
        assert_eq!(err.code(), code::INVALID_REQUEST);
        let err = parse(r#"{"jsonrpc":"2.0","id":1}"#).expect_err("no method, no result");
        assert_eq!(err.code(), code::INVALID_REQUEST);
        let err = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#).expect_err("batch");
        assert_eq!(err.code(), code::INVALID_REQUEST);
        let err = parse("[oops").expect_err("bad batch");
        assert_eq!(err.code(), code::PARSE_ERROR);
    }

    /// A batch is its elements, each with its bytes as they came, each
    /// valid or not on its own; only a batch that is not JSON or is empty
    /// is one error.
    #[test]
    fn proxy_jsonrpc_batches_are_read_element_by_element() {
        let incoming = |text: &str| Incoming::parse(Bytes::from(text.to_owned()));
        let one = incoming(r#" {"jsonrpc":"2.0","id":1,"method":"x"} "#).expect("one message");
        assert!(matches!(one, Incoming::One(m) if m.id() == Some("1")));
        let text = r#" [ {"jsonrpc":"2.0", "id":1,"method":"x"},
            {"jsonrpc":"2.0","method":"n"}, {"jsonrpc":"1.0","id":"b","method":"x"}, 7,
            [{"jsonrpc":"2.0","id":2,"method":"x"}], {"jsonrpc":"2.0","id":3,"result":{}} ] "#;
        let Ok(Incoming::Batch(batch)) = incoming(text) else {
            panic!("a batch")
        };
        assert_eq!(batch.len(), 6);
        let request = batch[0].as_ref().expect("a request");
        assert_eq!(
            request.bytes(),
            &r#"{"jsonrpc":"2.0", "id":1,"method":"x"}"#
        );
        assert_eq!(request.kind(), Kind::Request);
        assert_eq!(batch[1].as_ref().map(Message::kind), Ok(Kind::Notification));
        let invalid = batch[2].as_ref().expect_err("an old version");
        assert_eq!(
            (invalid.code(), invalid.id()),
            (code::INVALID_REQUEST, Some("\"b\""))
        );
        for not_a_message in &batch[3..5] {
            let code = not_a_message
                .as_ref()
                .map(|_| ())
                .map_err(MessageError::code);
            assert_eq!(code, Err(code::INVALID_REQUEST));
        }
        assert_eq!(batch[5].as_ref().map(Message::kind), Ok(Kind::Response));
        let empty = incoming(" [ ] ").expect_err("an empty batch");
        assert_eq!((empty.code(), empty.id()), (code::INVALID_REQUEST, None));
        let cut = incoming(r#"[{"jsonrpc":"2.0","id":1,"method":"x"}"#).expect_err("cut");
        assert_eq!(cut.code(), code::PARSE_ERROR);
    }

    /// JSON-RPC 2.0: a response has a result or an error, never both.
    #[test]
    fn proxy_jsonrpc_refuses_a_response_with_both_result_and_error() {
        for text in [
            r#"{"jsonrpc":"2.0","id":4,"result":{},"error":{"code":1,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":1,"message":"x"},"result":null}"#,
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.code(), code::INVALID_REQUEST, "{text}: {err}");
            assert_eq!(err.id(), Some("4"), "{text}");
            assert!(err.to_string().contains("not both"), "{text}: {err}");
        }
        let err = parse(r#"{"jsonrpc":"2.0","id":null,"result":1,"error":{}}"#)
            .expect_err("both, with a null id");
        assert_eq!(err.id(), None);
    }

    #[test]
    fn proxy_jsonrpc_invalid_messages_keep_an_id_that_can_be_read() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#, Some("9")),
            (r#"{"jsonrpc":"2.0","id":8}"#, Some("8")),
            (r#"{"jsonrpc":"2.0", "id" : "a b" }"#, Some("\"a b\"")),
            (r#"{"id":-3,"method":"ping"}"#, Some("-3")),
            // The envelope does not fit, but the id is still there to read.
            (r#"{"jsonrpc":"2.0","id":"x","method":5}"#, Some("\"x\"")),
            (r#"{"jsonrpc":2.0,"id":4,"method":"ping"}"#, Some("4")),
            // No usable id: answered with `null`.
            (r#"{"jsonrpc":"2.0","id":null}"#, None),
            (r#"{"jsonrpc":"2.0","id":{"n":1}}"#, None),
            (r#"{"jsonrpc":"2.0","id":true,"method":1}"#, None),
            (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":1}"#, None),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#, None),
            ("7", None),
            // Requests whose id no server could answer by.
            (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":false,"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, Some("1.5")),
            (
                r#"{"jsonrpc":"2.0","id":-2e3,"method":"ping"}"#,
                Some("-2000.0"),
            ),
        ];
        for (text, id) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.code(), code::INVALID_REQUEST, "{text}: {err}");
            assert_eq!(err.id(), *id, "{text}");
            let body = error_response(err.id(), err.code(), &err.to_string(), None);
            let answer: Value = serde_json::from_slice(&body).expect("json");
            let expected: Value = id.map_or(Value::Null, |id| {
                serde_json::from_str(id).expect("a compact id is JSON")
            });
            assert_eq!(answer["id"], expected, "{text}");
        }
        let err = parse(r#"{"jsonrpc":"2.0","id":9,"method":"#).expect_err("cut short");
        assert_eq!(err.code(), code::PARSE_ERROR);
        assert_eq!(err.id(), None, "an id in unparseable bytes is not trusted");
    }

    #[test]
    fn proxy_jsonrpc_keeps_bytes_and_compacts_only_for_stdio() {
        let text = "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"method\": \"ping\"\n}";
        let message = parse(text).expect("pretty");
        assert_eq!(message.bytes().as_ref(), text.as_bytes());
        let line = message.line();
        assert!(!line.contains(&b'\n'));
        let value: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(value["method"], "ping");
        let compact = parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).expect("compact");
        assert_eq!(compact.line(), compact.bytes().clone());
    }

    #[test]
    fn proxy_jsonrpc_error_responses_echo_the_id() {
        let body = error_response(Some("\"abc\""), code::RATE_LIMITED, "slow down", None);
        let value: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["id"], "abc");
        assert_eq!(value["error"]["code"], code::RATE_LIMITED);
        let body = error_response(None, code::PARSE_ERROR, "bad", None);
        let value: Value = serde_json::from_slice(&body).expect("json");
        assert!(value["id"].is_null());
        let message = Message::parse(body).expect("an error with a null id is a response");
        assert_eq!(message.kind(), Kind::Response);
    }
}
