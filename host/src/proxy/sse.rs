//! Server-sent events as a response body. Written here rather than with
//! axum's `Sse`, whose writer leaves out an empty `data:` line: a priming
//! event (an id with empty data) is what MCP clients take as the cursor to
//! resume a stream from before its first message, and without the line they
//! never see it.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::upstream::Event;

/// What goes out after `keep_alive` without an event: a comment, which
/// clients ignore, so that intermediaries do not cut an idle stream and a
/// client that left is noticed.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// A `200` streaming `events`; with `keep_alive`, a comment after that long
/// without an event.
pub fn response<S>(events: S, keep_alive: Option<Duration>) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let frames = events.map(|event| encode(&event));
    let body = match keep_alive {
        None => Body::from_stream(frames.map(Ok::<_, Infallible>)),
        Some(every) => {
            let first = tokio::time::Instant::now() + every;
            let ticks = tokio::time::interval_at(first, every);
            let frames = tokio_stream::StreamExt::timeout_repeating(frames, ticks)
                .map(|frame| Ok::<_, Infallible>(frame.unwrap_or(Bytes::from_static(KEEP_ALIVE))));
            Body::from_stream(frames)
        }
    };
    (
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// One event: its id, its message as `data:` lines (a line break inside the
/// message starts another, which the client joins back with `\n`, still the
/// same JSON), or an empty `data:` line for a priming event.
fn encode(event: &Event) -> Bytes {
    let mut out =
        BytesMut::with_capacity(event.message.as_ref().map_or(0, |m| m.bytes().len()) + 32);
    if let Some(id) = &event.id {
        out.put_slice(b"id: ");
        // A line break would end the field early; ids never need one.
        out.extend(id.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.put_u8(b'\n');
    }
    match &event.message {
        Some(message) => {
            for line in message.bytes().split(|b| matches!(b, b'\r' | b'\n')) {
                out.put_slice(b"data: ");
                out.put_slice(line);
                out.put_u8(b'\n');
            }
        }
        None => out.put_slice(b"data: \n"),
    }
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::jsonrpc::Message;

    fn text(event: Event) -> String {
        String::from_utf8(encode(&event).to_vec()).expect("UTF-8")
    }

    #[test]
    fn proxy_sse_events_keep_their_id_and_a_priming_event_its_empty_data_line() {
        let message = Message::parse(Bytes::from_static(
            b"{\"jsonrpc\":\"2.0\",\r\n \"method\":\"ping\"}",
        ))
        .expect("JSON-RPC");
        assert_eq!(
            text(Event {
                id: Some("4-2".into()),
                message: Some(message),
            }),
            "id: 4-2\ndata: {\"jsonrpc\":\"2.0\",\ndata: \ndata:  \"method\":\"ping\"}\n\n"
        );
        assert_eq!(
            text(Event {
                id: Some("4-0".into()),
                message: None,
            }),
            "id: 4-0\ndata: \n\n"
        );
        assert_eq!(
            text(Event {
                id: Some("bad\nid".into()),
                message: None,
            }),
            "id: badid\ndata: \n\n"
        );
    }
}
