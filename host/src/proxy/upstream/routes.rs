//! Where a stdio server's messages go: a request's response and progress to
//! that request's stream, what it sends on its own to the session's newest
//! GET stream (or, with none open, the stream of the latest request still in
//! flight, or a backlog for the next GET stream). Every stream's events are numbered and the latest kept,
//! so a client whose connection broke resumes the stream with
//! `Last-Event-ID`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{Event, UpstreamError};
use crate::proxy::jsonrpc::{code, Kind, Message};

/// Server messages kept while nobody listens (no GET stream, no request in
/// flight); the oldest go first beyond this.
const BACKLOG: usize = 256;
/// GET streams kept open per session; opening one more ends the oldest (a
/// client that reconnects without closing leaks no streams).
const MAX_LISTENERS: usize = 4;
/// Bytes of sent messages kept per session for clients that resume a stream
/// whose connection broke (`Last-Event-ID`); the oldest go first beyond this.
const KEPT_BYTES: usize = 256 << 10;
/// Answered requests' streams remembered per session for a resumption; the
/// least recently used go first.
const KEPT_REPLY_STREAMS: usize = 16;
/// GET streams without a connection remembered per session: those a client
/// resumes stay, those it replaced with new ones go.
const KEPT_GET_STREAMS: usize = 8;

/// One stream of the session's messages to its client: a GET stream, or a
/// request's reply stream. Its events are numbered (`STREAM-SEQ`, the SSE
/// event id), and the latest are kept, so a client whose connection broke
/// resumes the stream where it stopped reading, with `Last-Event-ID`: a
/// message written into a connection that then broke is not lost.
struct ClientStream {
    /// The connection it goes out on, while there is one.
    to: Option<mpsc::Sender<Event>>,
    next_seq: u64,
    /// Sent messages, oldest first, by sequence number.
    kept: VecDeque<(u64, Message)>,
    /// A request's stream, not a GET stream.
    reply: bool,
    /// A reply stream whose request is in flight: it stays remembered.
    awaiting: bool,
    /// A reply stream whose response went out: it ends after its events.
    answered: bool,
    /// When it last sent or was resumed, on the session's own clock: what
    /// is forgotten and trimmed first is what is least recently used.
    used: u64,
}

impl ClientStream {
    fn is_open(&self) -> bool {
        self.to.as_ref().is_some_and(|to| !to.is_closed())
    }
}

/// Where the server's messages go.
#[derive(Default)]
pub(super) struct Routes {
    /// Reply stream of each request in flight, by its compact id.
    pending: HashMap<String, u64>,
    /// The request in flight that asked for progress under each token: its
    /// progress goes to it, whichever request is the latest.
    progress: HashMap<String, String>,
    /// The session's GET streams, oldest first. A client may hold several
    /// (the transport allows it); each server message goes to one of them,
    /// the newest still open, never to all.
    listeners: Vec<u64>,
    /// Every stream remembered, by number (oldest first).
    streams: BTreeMap<u64, ClientStream>,
    last_stream: u64,
    /// Counts stream uses, for [`ClientStream::used`].
    uses: u64,
    /// Bytes of the messages the streams keep.
    kept_bytes: usize,
    /// Everything the server writes, in its order (see [`super::StdioUpstream::tap`]).
    tap: Option<mpsc::Sender<Event>>,
    backlog: VecDeque<Message>,
    failed: Option<String>,
}

impl Routes {
    /// Every message from now on goes to `tap`, in the server's order.
    pub(super) fn tap(&mut self, tap: mpsc::Sender<Event>) -> Result<(), UpstreamError> {
        self.refuse_if_failed()?;
        self.tap = Some(tap);
        Ok(())
    }

    pub(super) fn is_tapped(&self) -> bool {
        self.tap.is_some()
    }

    fn refuse_if_failed(&self) -> Result<(), UpstreamError> {
        match &self.failed {
            Some(reason) => Err(UpstreamError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Request `id` is about to be written to the server: its response and
    /// its progress (under `progress_token`) go to `reply`. Returns the
    /// number of its stream.
    pub(super) fn begin_request(
        &mut self,
        id: &str,
        progress_token: Option<&str>,
        reply: mpsc::Sender<Event>,
        max_pending: usize,
    ) -> Result<u64, UpstreamError> {
        self.refuse_if_failed()?;
        if self.pending.len() >= max_pending {
            return Err(UpstreamError::Busy(self.pending.len()));
        }
        if self.pending.contains_key(id) {
            return Err(UpstreamError::DuplicateId(id.to_owned()));
        }
        let stream = self.open_stream(reply, true);
        self.pending.insert(id.to_owned(), stream);
        if let Some(token) = progress_token {
            self.progress.insert(token.to_owned(), id.to_owned());
        }
        Ok(stream)
    }

    /// Request `id` could not be written after all.
    pub(super) fn abandon_request(&mut self, id: &str, progress_token: Option<&str>) {
        if let Some(stream) = self.pending.remove(id) {
            self.forget(stream);
        }
        if let Some(token) = progress_token {
            self.progress.remove(token);
        }
    }

    /// A GET stream on connection `to`: the stream `last_event_id` names,
    /// resumed after that event, or a new one (which starts with a priming
    /// event if `prime`). Returns what the connection gets first (the events
    /// the client missed, or what the server sent while no stream was open),
    /// and whether the stream ends after them.
    pub(super) fn open_get_stream(
        &mut self,
        last_event_id: Option<&str>,
        to: mpsc::Sender<Event>,
        prime: bool,
        pid: u32,
    ) -> Result<(Vec<Event>, bool), UpstreamError> {
        self.refuse_if_failed()?;
        let resumed = last_event_id.and_then(|id| {
            let resumed = parse_event_id(id)
                .and_then(|(stream, seq)| self.resume(stream, seq, to.clone()));
            if resumed.is_none() {
                tracing::info!(
                    pid,
                    "cannot resume the stream of event `{}`: this session has no such stream; a new one opens",
                    id.escape_debug()
                );
            }
            resumed
        });
        Ok(match resumed {
            Some(resumed) => resumed,
            None => {
                let stream = self.listen(to);
                let first = prime.then(|| priming(stream));
                (
                    first.into_iter().chain(self.send_backlog(stream)).collect(),
                    false,
                )
            }
        })
    }

    fn open_stream(&mut self, to: mpsc::Sender<Event>, awaiting: bool) -> u64 {
        self.last_stream += 1;
        let number = self.last_stream;
        let used = self.tick();
        self.streams.insert(
            number,
            ClientStream {
                to: Some(to),
                next_seq: 1,
                kept: VecDeque::new(),
                reply: awaiting,
                awaiting,
                answered: false,
                used,
            },
        );
        self.forget_old_streams();
        number
    }

    fn tick(&mut self) -> u64 {
        self.uses += 1;
        self.uses
    }

    /// Forgets the least recently used streams that have neither a request
    /// in flight nor an open connection, beyond [`KEPT_REPLY_STREAMS`] of
    /// requests' and [`KEPT_GET_STREAMS`] GET streams. Kept apart, so that
    /// a busy session's answered requests never push out the GET stream its
    /// client is about to resume.
    fn forget_old_streams(&mut self) {
        for (reply, limit) in [(true, KEPT_REPLY_STREAMS), (false, KEPT_GET_STREAMS)] {
            let forgettable = |s: &ClientStream| s.reply == reply && !s.awaiting && !s.is_open();
            // Once per request: count before collecting, which is rarely needed.
            if self.streams.values().filter(|s| forgettable(s)).count() <= limit {
                continue;
            }
            let mut idle: Vec<(u64, u64)> = self
                .streams
                .iter()
                .filter(|(_, s)| forgettable(s))
                .map(|(&number, s)| (s.used, number))
                .collect();
            idle.sort_unstable();
            for &(_, number) in &idle[..idle.len() - limit] {
                self.forget(number);
            }
        }
    }

    fn forget(&mut self, number: u64) {
        if let Some(stream) = self.streams.remove(&number) {
            self.kept_bytes -= kept_size(&stream.kept);
        }
        self.listeners.retain(|&n| n != number);
    }

    /// Numbers `message` on stream `number` and keeps it; returns the event
    /// and the connection to send it on, if the stream has one.
    fn record(&mut self, number: u64, message: Message) -> (Option<mpsc::Sender<Event>>, Event) {
        let used = self.tick();
        let Some(stream) = self.streams.get_mut(&number) else {
            return (None, Event::message(message));
        };
        let seq = stream.next_seq;
        stream.next_seq += 1;
        let event = numbered(number, seq, &message);
        self.kept_bytes += message.bytes().len();
        stream.kept.push_back((seq, message));
        let to = stream.to.clone();
        stream.used = used;
        self.trim_kept();
        (to, event)
    }

    /// Drops the oldest kept messages down to [`KEPT_BYTES`]: answered
    /// requests' first (their client most likely read them whole), least
    /// recently used stream first.
    fn trim_kept(&mut self) {
        while self.kept_bytes > KEPT_BYTES {
            let Some(stream) = self
                .streams
                .values_mut()
                .filter(|s| !s.kept.is_empty())
                .min_by_key(|s| (!s.answered, s.used))
            else {
                return;
            };
            if let Some((_, message)) = stream.kept.pop_front() {
                self.kept_bytes -= message.bytes().len();
            }
        }
    }

    /// `response` on its request's stream, which then ends; `None` for a
    /// response to no request in flight. Kept even when the stream's
    /// connection is gone: the client may resume the stream to get it.
    fn respond(&mut self, response: Message) -> Option<(Option<mpsc::Sender<Event>>, Event)> {
        let id = response.id().unwrap_or_default();
        self.progress.retain(|_, asked_by| asked_by != id);
        let Some(stream) = self.pending.remove(id) else {
            tracing::debug!(id = response.id(), "response to no request in flight");
            return None;
        };
        let sent = self.record(stream, response);
        self.answered(stream);
        Some(sent)
    }

    /// The request of reply stream `number` is answered: the stream ends
    /// once its connection has what was sent.
    fn answered(&mut self, number: u64) {
        if let Some(stream) = self.streams.get_mut(&number) {
            stream.awaiting = false;
            stream.answered = true;
            stream.to = None;
        }
        self.forget_old_streams();
    }

    fn is_open(&self, number: u64) -> bool {
        self.streams.get(&number).is_some_and(ClientStream::is_open)
    }

    /// The reply stream of the most recent request still in flight, with its
    /// connection open: a server message sent while requests run most likely
    /// belongs to the latest of them (a log line, sampling), and when that
    /// one is answered, to the one before. Streams are numbered as opened.
    fn newest_request_open(&self) -> Option<u64> {
        self.pending
            .values()
            .copied()
            .filter(|&stream| self.is_open(stream))
            .max()
    }

    /// The newest GET stream still open, forgetting from the list those
    /// closed since (their streams stay remembered, for a resumption).
    fn newest_listener(&mut self) -> Option<u64> {
        while let Some(&newest) = self.listeners.last() {
            if self.is_open(newest) {
                return Some(newest);
            }
            self.listeners.pop();
        }
        None
    }

    /// A new GET stream; a fifth one ends the oldest still listed.
    fn listen(&mut self, to: mpsc::Sender<Event>) -> u64 {
        let open: Vec<u64> = self.listeners.drain(..).collect();
        self.listeners = open.into_iter().filter(|&n| self.is_open(n)).collect();
        if self.listeners.len() >= MAX_LISTENERS {
            let oldest = self.listeners.remove(0);
            if let Some(stream) = self.streams.get_mut(&oldest) {
                stream.to = None;
            }
        }
        let number = self.open_stream(to, false);
        self.listeners.push(number);
        number
    }

    /// Stream `number` continues on connection `to`, after the events it sent
    /// after `seq`, which this returns; `None` for a stream it does not know.
    /// The second value: the stream ends after them (a reply stream whose
    /// response is among them or was sent before).
    fn resume(
        &mut self,
        number: u64,
        seq: u64,
        to: mpsc::Sender<Event>,
    ) -> Option<(Vec<Event>, bool)> {
        let used = self.tick();
        let stream = self.streams.get_mut(&number)?;
        let mut missed: Vec<Event> = stream
            .kept
            .iter()
            .filter(|(kept, _)| *kept > seq)
            .map(|(kept, message)| numbered(number, *kept, message))
            .collect();
        let first_kept = stream
            .kept
            .front()
            .map_or(stream.next_seq, |(kept, _)| *kept);
        // `seq` is the client's word: any number may come.
        let lost = first_kept.saturating_sub(seq.saturating_add(1));
        if lost > 0 {
            tracing::warn!(
                stream = number,
                lost,
                "a resumed stream misses messages no longer kept"
            );
        }
        if stream.answered {
            return Some((missed, true));
        }
        // A connection still open on it ends: the stream has one reader.
        stream.to = Some(to);
        stream.used = used;
        if !stream.reply {
            self.listeners.retain(|&n| n != number);
            self.listeners.push(number);
            missed.extend(self.send_backlog(number));
        }
        Some((missed, false))
    }

    /// What the server sent while no GET stream was open, now on stream
    /// `number`.
    fn send_backlog(&mut self, number: u64) -> Vec<Event> {
        let backlog: Vec<Message> = self.backlog.drain(..).collect();
        backlog
            .into_iter()
            .map(|message| self.record(number, message).1)
            .collect()
    }
}

fn kept_size(kept: &VecDeque<(u64, Message)>) -> usize {
    kept.iter().map(|(_, message)| message.bytes().len()).sum()
}

/// Message `seq` of stream `stream`, as its event.
fn numbered(stream: u64, seq: u64, message: &Message) -> Event {
    Event {
        id: Some(event_id(stream, seq)),
        message: Some(message.clone()),
    }
}

fn event_id(stream: u64, seq: u64) -> String {
    format!("{stream}-{seq}")
}

/// An event with stream `stream`'s first id and no message: a client that
/// has it resumes the stream from its start, before any message came.
pub(super) fn priming(stream: u64) -> Event {
    Event {
        id: Some(event_id(stream, 0)),
        message: None,
    }
}

/// The stream and sequence number of an event id this upstream wrote.
fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.trim().split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}
/// Hands one server message to whoever waits for it.
pub(super) async fn route(routes: &Mutex<Routes>, message: Message) {
    let (target, event) = {
        let mut r = routes.lock();
        if let Some(tap) = r.tap.clone() {
            (Some(tap), Event::message(message))
        } else if message.kind() == Kind::Response {
            match r.respond(message) {
                Some(sent) => sent,
                None => return,
            }
        } else if let Some(stream) = message
            .progress_token()
            .and_then(|token| r.progress.get(&token))
            .and_then(|id| r.pending.get(id))
            .copied()
        {
            // Progress on a request goes with its answer, as the client
            // expects it: on that request's stream, not the latest's.
            r.record(stream, message)
        } else if let Some(stream) = r.newest_listener() {
            r.record(stream, message)
        } else if let Some(stream) = r.newest_request_open() {
            r.record(stream, message)
        } else {
            if r.backlog.len() >= BACKLOG {
                r.backlog.pop_front();
            }
            r.backlog.push_back(message);
            return;
        }
    };
    if let Some(target) = target {
        // Waiting here is backpressure: a client that does not read its
        // stream slows its own server, and nobody else's.
        let _ = target.send(event).await;
    }
}

/// Answers every request in flight with an error and refuses new ones.
pub(super) fn fail(routes: &Mutex<Routes>, reason: &str) {
    let mut r = routes.lock();
    if r.failed.is_none() {
        r.failed = Some(reason.to_owned());
    }
    for stream in std::mem::take(&mut r.listeners) {
        if let Some(stream) = r.streams.get_mut(&stream) {
            stream.to = None;
        }
    }
    r.tap = None;
    r.fail_in_flight(&format!("the MCP server failed: {reason}"));
}

impl Routes {
    /// Answers every request in flight with an error saying `why`; new ones
    /// are still taken.
    pub(super) fn fail_in_flight(&mut self, why: &str) {
        self.progress.clear();
        let pending: Vec<(String, u64)> = self.pending.drain().collect();
        for (id, stream) in pending {
            let error = Message::error(Some(&id), code::UPSTREAM_FAILED, why);
            let (to, event) = self.record(stream, error);
            if let Some(to) = to {
                let _ = to.try_send(event);
            }
            self.answered(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn notification(text: &str) -> Message {
        let body = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{text}"}}}}"#
        );
        Message::parse(body.into_bytes().into()).expect("parse")
    }

    /// A request of id `id` (a number, as the server writes it), begun and
    /// answered with `text`; its stream.
    fn answered_request(routes: &mut Routes, id: &str, text: &str) -> u64 {
        let (to, _rx) = mpsc::channel(1);
        let stream = routes.begin_request(id, None, to, 8).expect("room for it");
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"text":"{text}"}}}}"#);
        let response = Message::parse(body.into_bytes().into()).expect("a response");
        assert!(routes.respond(response).is_some(), "a request in flight");
        stream
    }

    fn data(event: &Event) -> String {
        let message = event.message.as_ref().expect("a message");
        String::from_utf8_lossy(message.bytes()).into_owned()
    }

    #[test]
    fn proxy_stdio_a_request_id_in_flight_is_refused_until_answered() {
        let mut routes = Routes::default();
        let (to, _rx) = mpsc::channel(1);
        routes
            .begin_request("7", None, to.clone(), 8)
            .expect("room");
        let again = routes.begin_request("7", None, to.clone(), 8);
        assert_eq!(again, Err(UpstreamError::DuplicateId("7".into())));
        assert!(
            routes.begin_request(r#""7""#, None, to.clone(), 8).is_ok(),
            "the string \"7\" is another id"
        );
        let response = Message::parse(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#.to_vec().into())
            .expect("a response");
        assert!(routes.respond(response).is_some());
        assert!(
            routes.begin_request("7", None, to, 8).is_ok(),
            "answered: free again"
        );
    }

    #[test]
    fn proxy_stdio_server_messages_go_to_the_newest_open_stream_only() {
        let mut routes = Routes::default();
        let (oldest, mut oldest_rx) = mpsc::channel(1);
        let (middle, mut middle_rx) = mpsc::channel(1);
        let (newest, newest_rx) = mpsc::channel(1);
        let numbers: Vec<u64> = [oldest, middle, newest]
            .into_iter()
            .map(|to| routes.listen(to))
            .collect();
        let send = |routes: &mut Routes, text: &str| {
            let stream = routes.newest_listener().expect("an open stream");
            let (to, event) = routes.record(stream, notification(text));
            to.expect("connected").try_send(event).expect("sent");
        };
        send(&mut routes, "first");
        assert_eq!(routes.listeners, numbers);
        assert!(middle_rx.try_recv().is_err() && oldest_rx.try_recv().is_err());
        // The newest stream closed: the next one back takes over, and the
        // closed one leaves the list (but not the streams one may resume).
        drop(newest_rx);
        send(&mut routes, "second");
        assert_eq!(routes.listeners, numbers[..2]);
        let got = middle_rx.try_recv().expect("the middle one got it");
        assert_eq!(got.id.as_deref(), Some(event_id(numbers[1], 1).as_str()));
        assert!(oldest_rx.try_recv().is_err());
        drop((middle_rx, oldest_rx));
        assert!(routes.newest_listener().is_none());
        assert!(routes.listeners.is_empty());
        assert_eq!(routes.streams.len(), 3);
    }

    /// With no GET stream open, what the server sends on its own goes to the
    /// latest request still in flight, and once that one is answered, to
    /// the one before it; with none in flight, to the backlog.
    #[tokio::test]
    async fn proxy_stdio_server_messages_go_to_the_latest_request_in_flight() {
        let routes = Mutex::new(Routes::default());
        let (first, mut first_rx) = mpsc::channel(4);
        let (second, mut second_rx) = mpsc::channel(4);
        {
            let mut r = routes.lock();
            r.begin_request("1", None, first, 8).expect("room");
            r.begin_request("2", None, second, 8).expect("room");
        }
        route(&routes, notification("during both")).await;
        assert!(data(&second_rx.try_recv().expect("the latest")).contains("during both"));
        assert!(first_rx.try_recv().is_err());
        let answer = Message::parse(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":2,"result":{}}"#,
        ))
        .expect("a response");
        route(&routes, answer).await;
        assert!(second_rx.try_recv().is_ok(), "the answer");
        route(&routes, notification("after the latest")).await;
        assert!(data(&first_rx.try_recv().expect("the one before")).contains("after the latest"));
        drop(first_rx);
        route(&routes, notification("nobody")).await;
        assert_eq!(
            routes.lock().backlog.len(),
            1,
            "kept for the next GET stream"
        );
    }

    /// A client that lost its connection resumes the stream after the last
    /// event it read: it gets what it missed, in order, once, and the
    /// stream goes on where it was, under the same numbering.
    #[test]
    fn proxy_stdio_stream_resumes_after_the_last_event_read() {
        let mut routes = Routes::default();
        let (to, rx) = mpsc::channel(8);
        let stream = routes.listen(to);
        let mut ids = Vec::new();
        for text in ["a", "b", "c"] {
            let (to, event) = routes.record(stream, notification(text));
            ids.push(event.id.clone().expect("numbered"));
            to.expect("connected").try_send(event).expect("sent");
        }
        drop(rx);
        // Sent while no stream was open: a resumed GET stream gets it after
        // what it missed.
        routes.backlog.push_back(notification("waiting"));
        let (to, mut rx) = mpsc::channel(8);
        let (missed, ends) = routes
            .resume(stream, parse_event_id(&ids[0]).expect("ours").1, to)
            .expect("known");
        assert!(!ends);
        let missed: Vec<String> = missed.iter().map(data).collect();
        assert_eq!(missed.len(), 3);
        assert!(missed[0].contains("\"b\"") && missed[1].contains("\"c\""));
        assert!(missed[2].contains("\"waiting\""));
        assert!(routes.backlog.is_empty());
        assert_eq!(routes.newest_listener(), Some(stream));
        let (to, event) = routes.record(stream, notification("d"));
        assert_eq!(event.id.as_deref(), Some(event_id(stream, 5).as_str()));
        to.expect("the new connection")
            .try_send(event)
            .expect("sent");
        assert!(data(&rx.try_recv().expect("d")).contains("\"d\""));
        assert_eq!(parse_event_id("7-x"), None);
        // Any number a client may send: nothing to replay, no overflow.
        let last = format!("{stream}-{}", u64::MAX);
        let (_, seq) = parse_event_id(&last).expect("two numbers");
        let (to, _rx) = mpsc::channel(8);
        let (missed, _) = routes.resume(stream, seq, to).expect("known");
        assert!(missed.is_empty());
        assert_eq!(parse_event_id("12-5"), Some((12, 5)));
        assert!(routes.resume(99, 0, mpsc::channel(1).0).is_none());
    }

    /// A request's stream keeps its response after its connection broke; a
    /// resumption gets it and ends there.
    #[test]
    fn proxy_stdio_reply_stream_keeps_its_response_for_a_resumption() {
        let mut routes = Routes::default();
        let stream = answered_request(&mut routes, "1", "done");
        assert!(!routes.is_open(stream), "its connection is gone");
        let (missed, ends) = routes
            .resume(stream, 0, mpsc::channel(1).0)
            .expect("remembered");
        assert!(ends, "an answered stream ends after its response");
        assert_eq!(missed.len(), 1);
        assert!(data(&missed[0]).contains("\"result\""));
    }

    /// What is kept is bounded in bytes and in streams, however many
    /// messages, requests and streams a session sees.
    #[test]
    fn proxy_stdio_kept_messages_and_streams_are_bounded() {
        let mut routes = Routes::default();
        let big = "x".repeat(30_000);
        for round in 0..(KEPT_REPLY_STREAMS * 3) {
            let (to, rx) = mpsc::channel(1);
            let stream = routes.listen(to);
            for _ in 0..4 {
                let _ = routes.record(stream, notification(&big));
            }
            drop(rx);
            answered_request(&mut routes, &round.to_string(), &big);
        }
        assert!(routes.kept_bytes <= KEPT_BYTES, "{}", routes.kept_bytes);
        let kept: usize = routes.streams.values().map(|s| kept_size(&s.kept)).sum();
        assert_eq!(kept, routes.kept_bytes, "the count is exact");
        let count = |reply: bool| routes.streams.values().filter(|s| s.reply == reply).count();
        assert_eq!(count(true), KEPT_REPLY_STREAMS);
        assert_eq!(count(false), KEPT_GET_STREAMS);
        // The latest messages are the ones kept.
        let newest = *routes.streams.keys().last().expect("some");
        assert_eq!(routes.streams[&newest].kept.len(), 1);
        assert_eq!(routes.streams[&(newest - 1)].kept.len(), 4);
    }

    /// A GET stream whose connection broke stays resumable however many
    /// requests the session answers meanwhile, and keeps its messages while
    /// theirs are trimmed first.
    #[test]
    fn proxy_stdio_a_busy_session_keeps_the_get_stream_to_resume() {
        let mut routes = Routes::default();
        let (to, rx) = mpsc::channel(1);
        let get = routes.listen(to);
        let _ = routes.record(get, notification("waiting for you"));
        drop(rx);
        let answer = "y".repeat(20_000);
        for round in 0..(KEPT_REPLY_STREAMS * 4) {
            answered_request(&mut routes, &round.to_string(), &answer);
        }
        assert!(routes.kept_bytes <= KEPT_BYTES, "{}", routes.kept_bytes);
        assert!(
            KEPT_REPLY_STREAMS * answer.len() > KEPT_BYTES,
            "the answers alone overflow what is kept"
        );
        let (missed, ends) = routes
            .resume(get, 0, mpsc::channel(1).0)
            .expect("still remembered");
        assert!(!ends);
        assert_eq!(missed.len(), 1);
        assert!(data(&missed[0]).contains("waiting for you"));
    }
}
