//! JSON-RPC batches: one POST carrying several messages, which MCP 2025-03-26
//! (and 2024-11-05) allows and 2025-06-18 removed.
//!
//! The proxy serves a batch as its elements: each is pinned, rate limited and
//! handed to the session's upstream on its own, as if it had come alone, so an
//! upstream of any revision takes it (a 2025-06-18 server refuses batches).
//! The answers go back together: a JSON array once every request of the batch
//! is answered, or, as soon as the upstream has something else for the client
//! on the way (progress, a request of its own), an event stream carrying all
//! of it. An element that is not a valid message is answered on its own and
//! the others are served; notifications and responses get no answer, as in
//! JSON-RPC.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::{self, FutureExt};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::client_key::ClientKey;
use super::jsonrpc::{code, Kind, Message, MessageError};
use super::mcp_headers::{takes_batches, PROTOCOL_VERSION};
use super::reverse::{accepts, begin, dispatch, header, refuse, session_named, CLOSED_IN_FLIGHT};
use super::session::ProxySession;
use super::upstream::{Event, Events};
use super::{sse, Pinned, Proxy};
use crate::session::RequestGuard;

/// Most messages one batch may carry: each is a request in flight, and one
/// POST should not take a session's whole burst unseen.
pub const MAX_BATCH: usize = 100;

/// The most of a refusal's body read back to answer a batch's element by it.
const REFUSAL_BODY_LIMIT: usize = 64 * 1024;

/// Serves a sessions-era POST whose body is a batch.
pub(super) async fn post(
    proxy: &Arc<Proxy>,
    client: ClientKey,
    headers: &HeaderMap,
    batch: Vec<Result<Message, MessageError>>,
) -> Response {
    let version = header(headers, PROTOCOL_VERSION);
    if !takes_batches(version) {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            &format!(
                "JSON-RPC batches were removed in MCP 2025-06-18: a client of {} posts one \
                 message at a time",
                version.unwrap_or_default()
            ),
        );
    }
    if batch.len() > MAX_BATCH {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            &format!(
                "a batch of {} messages; the proxy takes at most {MAX_BATCH} in one",
                batch.len()
            ),
        );
    }
    if batch
        .iter()
        .any(|element| matches!(element, Ok(m) if m.is_request("initialize")))
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            "initialize must not be part of a batch: send it alone",
        );
    }
    let session = match session_named(proxy, headers, None) {
        Ok(session) => session,
        Err(refusal) => return refusal,
    };
    // What gets an answer in a batch: its requests, and its elements that
    // are not messages. Notifications and responses get none (JSON-RPC).
    let answered = batch
        .iter()
        .filter(|element| element.as_ref().map_or(true, |m| m.kind() == Kind::Request))
        .count();
    let headers = Arc::new(headers.clone());
    let mut elements = Vec::with_capacity(batch.len());
    for element in batch {
        let message = match element {
            Ok(message) => message,
            Err(e) => {
                let error = Message::error(e.id(), e.code(), &e.to_string());
                let piece = stream::once(future::ready(Piece::answer(error))).boxed();
                elements.push(future::ready(Outcome::Answer(piece)).boxed());
                continue;
            }
        };
        let rid = match message.kind() {
            Kind::Request => message.id().map(str::to_owned),
            _ => None,
        };
        // Pinned and rate limited here, in the batch's order.
        let request = match begin(proxy, session, client, &message) {
            Ok(request) => request,
            Err(refusal) => {
                elements.push(future::ready(Outcome::refused(refusal, rid)).boxed());
                continue;
            }
        };
        if message.is_notification("notifications/initialized") {
            let _ = proxy.table.activate(session);
        }
        let (proxy, headers) = (Arc::clone(proxy), Arc::clone(&headers));
        elements.push(
            async move {
                let Pinned {
                    guard,
                    upstream,
                    abort,
                } = request;
                let sent = dispatch(
                    &proxy,
                    session,
                    upstream.as_ref(),
                    &abort,
                    message,
                    &headers,
                )
                .await;
                match sent {
                    Ok(Some(events)) => Outcome::Answer(answering(events, rid, guard, abort)),
                    Ok(None) => Outcome::Accepted,
                    Err(refusal) => Outcome::refused(refusal, rid),
                }
            }
            .boxed(),
        );
    }
    if answered == 0 {
        // Nothing will be answered: the POST says whether all was taken.
        let mut refusal = None;
        for outcome in futures::future::join_all(elements).await {
            if let Outcome::Refused(refused) = outcome {
                refusal.get_or_insert(refused);
            }
        }
        return refusal.unwrap_or_else(|| StatusCode::ACCEPTED.into_response());
    }
    // Handed to the upstream in the batch's order (each is first polled in
    // turn), and answered as each answer comes: an HTTP upstream holds a
    // POST until its response, and no element waits on another.
    let pieces = stream::iter(elements)
        .buffer_unordered(MAX_BATCH)
        .filter_map(|outcome| {
            future::ready(match outcome {
                Outcome::Answer(piece) => Some(piece),
                Outcome::Accepted | Outcome::Refused(_) => None,
            })
        })
        .flatten_unordered(None)
        .boxed();
    respond(pieces, &headers).await
}

/// What became of one element of a batch.
enum Outcome {
    /// Its answer (a request's, or an invalid element's), with whatever the
    /// upstream sends for the client before it.
    Answer(BoxStream<'static, Piece>),
    /// A notification or response the upstream took.
    Accepted,
    /// A notification or response refused, which has no answer of its own.
    Refused(Response),
}

impl Outcome {
    fn refused(refusal: Response, rid: Option<String>) -> Self {
        match rid {
            Some(rid) => Outcome::Answer(refused(refusal, rid)),
            None => {
                tracing::debug!(
                    status = %refusal.status(),
                    "a notification or response of a batch was refused"
                );
                Outcome::Refused(refusal)
            }
        }
    }
}

/// A message for the client, and whether it answers one of the batch's
/// requests (or elements).
struct Piece {
    message: Message,
    answer: bool,
}

impl Piece {
    fn answer(message: Message) -> Self {
        Self {
            message,
            answer: true,
        }
    }
}

/// What a refused request's caller is told: the refusal's JSON-RPC error (a
/// rate limit, a full table, an upstream refusing or failing), or one saying
/// what the upstream answered when its body is none.
fn refused(refusal: Response, rid: String) -> BoxStream<'static, Piece> {
    stream::once(async move {
        let status = refusal.status();
        let body = axum::body::to_bytes(refusal.into_body(), REFUSAL_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let message = match Message::parse(body) {
            Ok(message) if message.kind() == Kind::Response => message,
            _ => Message::error(
                Some(&rid),
                code::UPSTREAM_FAILED,
                &format!("the upstream refused the request ({status})"),
            ),
        };
        Piece::answer(message)
    })
    .boxed()
}

/// One request's events, ending with its answer: the response, or an error
/// when the session closes or the upstream ends first. The request stays
/// pinned while they last.
fn answering(
    events: Events,
    rid: Option<String>,
    guard: RequestGuard<ProxySession>,
    abort: CancellationToken,
) -> BoxStream<'static, Piece> {
    let cut_short = abort.clone();
    let mut answered = rid.is_none();
    events
        .take_until(abort.cancelled_owned())
        // The batch's stream is one of its own: an upstream's event ids
        // (priming ones too) resume streams it does not stand for.
        .filter_map(|event| future::ready(event.message))
        .map(Some)
        .chain(stream::once(async { None }))
        .filter_map(move |message| {
            let _pinned = &guard;
            let piece = match message {
                Some(message) => {
                    let answer = !answered
                        && message.kind() == Kind::Response
                        && message.id() == rid.as_deref();
                    answered |= answer;
                    Some(Piece { message, answer })
                }
                None if !answered => {
                    let (code, why) = if cut_short.is_cancelled() {
                        (code::SESSION_CLOSED, CLOSED_IN_FLIGHT)
                    } else {
                        (
                            code::UPSTREAM_FAILED,
                            "the upstream ended without answering",
                        )
                    };
                    Some(Piece::answer(Message::error(rid.as_deref(), code, why)))
                }
                None => None,
            };
            future::ready(piece)
        })
        .boxed()
}

/// The batch's answers as one JSON array, unless something else for the
/// client comes first and it takes an event stream; then all of it as one.
async fn respond(mut pieces: BoxStream<'static, Piece>, headers: &HeaderMap) -> Response {
    let takes_json = accepts(headers, "application/json");
    let takes_stream = accepts(headers, "text/event-stream");
    if !takes_json {
        return sse::response(pieces.map(|piece| Event::message(piece.message)), None);
    }
    let mut answers = Vec::new();
    while let Some(piece) = pieces.next().await {
        if piece.answer {
            answers.push(piece.message);
        } else if takes_stream {
            let so_far = answers.into_iter().chain(Some(piece.message));
            let events = stream::iter(so_far)
                .chain(pieces.map(|piece| piece.message))
                .map(Event::message);
            return sse::response(events, None);
        }
        // A client that takes only JSON gets the answers alone: what the
        // upstream sends besides has no way there.
    }
    let mut body = BytesMut::new();
    body.put_u8(b'[');
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(answer.bytes());
    }
    body.put_u8(b']');
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        Bytes::from(body),
    )
        .into_response()
}
