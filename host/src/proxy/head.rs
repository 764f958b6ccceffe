//! Whose message it was, for a message too long to be parsed: a line over the
//! stdio limit is skipped, but the request waiting for it, or the peer that
//! sent it, is still owed an answer by its id.
//!
//! The envelope is read by a scanner fed the message piece by piece as it
//! goes by, keeping only the top-level keys it meets and the id's few bytes:
//! memory stays bounded however long the message, and the id is found wherever
//! it comes. The TypeScript SDK writes it last (`{"result":…,"jsonrpc":"2.0",
//! "id":7}`, `{"method":…,"params":…,"jsonrpc":"2.0","id":7}`), after the
//! part that made the message too long.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::jsonrpc::answerable_id;

/// What a message, or the part of it read so far, shows of its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A response (a result or an error came), with the compact id of the
    /// request it answers when that id was read whole.
    Response { id: Option<String> },
    /// A request or a notification (a method or params came), with the
    /// compact id of a request when that id was read whole.
    Call { id: Option<String> },
    /// Nothing read tells.
    Unknown,
}

impl Head {
    /// The envelope of `start`, which may be cut anywhere: an id the cut
    /// ends (`12` of `123`) is not taken.
    pub fn peek(start: &[u8]) -> Self {
        let mut scan = HeadScan::default();
        scan.feed(start);
        scan.head()
    }
}

/// Raw bytes kept of a key: the longest key looked for, escaped (`"\u0069d"`
/// is `"id"`), fits.
const KEY_BYTES: usize = 48;
/// Raw bytes kept of an id; a longer id cannot be answered by.
const ID_BYTES: usize = 1024;

/// The bytes that change the scanner's state inside a value.
const MOVES_IN_VALUE: [bool; 256] = {
    let mut moves = [false; 256];
    let mut at = 0;
    let bytes = *b"\"{}[],";
    while at < bytes.len() {
        moves[bytes[at] as usize] = true;
        at += 1;
    }
    moves
};

/// The top-level key whose value is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Key {
    Id,
    Call,
    Response,
    #[default]
    Other,
}

impl Key {
    fn of(raw: &[u8]) -> Self {
        let name: Cow<'_, [u8]> = if raw.contains(&b'\\') {
            // Escaped: JSON's own decoding, on the few bytes kept.
            match std::str::from_utf8(raw)
                .ok()
                .and_then(|raw| serde_json::from_str::<String>(&format!("\"{raw}\"")).ok())
            {
                Some(name) => Cow::Owned(name.into_bytes()),
                None => return Key::Other,
            }
        } else {
            Cow::Borrowed(raw)
        };
        match &*name {
            b"id" => Key::Id,
            b"method" | b"params" => Key::Call,
            b"result" | b"error" => Key::Response,
            _ => Key::Other,
        }
    }
}

/// Where the scanner stands, outside the strings it skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum At {
    /// Before the opening brace.
    #[default]
    Start,
    /// In the top-level object, before a key (or its end).
    BeforeKey,
    /// In a top-level key's string.
    InKey,
    /// Between a key and its value.
    BeforeValue,
    /// In a top-level value (nested ones included).
    InValue,
    /// The object ended, or the message is not one: the rest tells nothing.
    Done,
}

/// A streaming reader of a JSON-RPC message's top-level keys. Everything
/// nested, and the inside of every string, is skipped over without being
/// kept, so a key or an id named inside a value is not taken for the
/// envelope's.
#[derive(Debug, Clone, Default)]
pub struct HeadScan {
    at: At,
    /// Nesting inside the current top-level value.
    depth: u32,
    in_string: bool,
    /// The last byte in a string was an unescaped backslash.
    escaped: bool,
    key: Vec<u8>,
    /// The key whose value is being read.
    value_of: Key,
    /// The id's raw bytes, while they are read.
    id_bytes: Vec<u8>,
    id_too_long: bool,
    ids: u32,
    id: Option<String>,
    call: bool,
    response: bool,
}

impl HeadScan {
    /// Reads the next piece of the message.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.at != At::Done {
            if self.in_string {
                let used = self.skip_string(bytes);
                bytes = &bytes[used..];
                continue;
            }
            if self.at == At::InValue {
                // Numbers, literals and spaces between the bytes that open,
                // close or separate (a long array of numbers is all of them):
                // passed over in a run.
                let run = bytes
                    .iter()
                    .position(|&b| MOVES_IN_VALUE[usize::from(b)])
                    .unwrap_or(bytes.len());
                if run > 0 {
                    self.keep(&bytes[..run]);
                    bytes = &bytes[run..];
                    continue;
                }
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            self.structural(byte);
        }
    }

    /// What the bytes fed so far show. Several top-level ids leave the one
    /// to answer unknown. A message with a result (or an error) and a
    /// method too, which is no valid message, counts as a response: a
    /// request may be waiting for it.
    pub fn head(&self) -> Head {
        let id = if self.ids == 1 { self.id.clone() } else { None };
        match (self.call, self.response) {
            (_, true) => Head::Response { id },
            (true, false) => Head::Call { id },
            (false, false) => Head::Unknown,
        }
    }

    /// Moves through a string up to its closing quote, keeping the bytes a
    /// key or an id needs; returns how many bytes it used.
    fn skip_string(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if self.escaped {
                self.escaped = false;
                at += 1;
                continue;
            }
            // Long strings (a base64 blob, a file's text) are most of a long
            // message: jump to the next quote or backslash.
            let Some(offset) = memchr::memchr2(b'"', b'\\', &bytes[at..]) else {
                at = bytes.len();
                break;
            };
            at += offset;
            if bytes[at] == b'\\' {
                self.escaped = true;
                at += 1;
            } else {
                self.in_string = false;
                at += 1;
                break;
            }
        }
        self.keep(&bytes[..at]);
        if !self.in_string && self.at == At::InKey {
            // The closing quote is not part of the key.
            self.key.pop();
            let key = Key::of(&self.key);
            self.call |= key == Key::Call;
            self.response |= key == Key::Response;
            self.value_of = key;
            self.at = At::BeforeValue;
        }
        at
    }

    fn structural(&mut self, byte: u8) {
        if self.at != At::InValue && byte.is_ascii_whitespace() {
            return;
        }
        match self.at {
            At::Start => {
                self.at = if byte == b'{' {
                    At::BeforeKey
                } else {
                    At::Done
                };
            }
            At::BeforeKey => match byte {
                b'"' => {
                    self.key.clear();
                    self.in_string = true;
                    self.at = At::InKey;
                }
                b'}' => self.at = At::Done,
                // A separator; anything else is not JSON, and the message
                // fails to parse where it is whole.
                _ => {}
            },
            At::BeforeValue => {
                if byte != b':' {
                    self.at = At::InValue;
                    self.id_bytes.clear();
                    self.id_too_long = false;
                    self.value(byte);
                }
            }
            At::InValue => self.value(byte),
            At::InKey | At::Done => {}
        }
    }

    /// A byte of a top-level value, outside its strings.
    fn value(&mut self, byte: u8) {
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth > 0 => self.depth -= 1,
            b',' | b'}' if self.depth == 0 => {
                self.end_value();
                self.at = if byte == b',' {
                    At::BeforeKey
                } else {
                    At::Done
                };
                return;
            }
            _ => {}
        }
        self.keep(&[byte]);
    }

    /// Keeps what a key or an id needs of `bytes`, up to their bounds.
    fn keep(&mut self, bytes: &[u8]) {
        match self.at {
            At::InKey => {
                let room = KEY_BYTES.saturating_sub(self.key.len());
                self.key.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            At::InValue if self.value_of == Key::Id && !self.id_too_long => {
                if self.id_bytes.len() + bytes.len() > ID_BYTES {
                    self.id_too_long = true;
                    self.id_bytes = Vec::new();
                } else {
                    self.id_bytes.extend_from_slice(bytes);
                }
            }
            _ => {}
        }
    }

    fn end_value(&mut self) {
        if self.value_of != Key::Id {
            return;
        }
        self.ids += 1;
        self.id = if self.id_too_long {
            None
        } else {
            std::str::from_utf8(&self.id_bytes)
                .ok()
                .and_then(|text| serde_json::from_str::<&RawValue>(text.trim()).ok())
                .and_then(answerable_id)
        };
        self.id_bytes = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn response(id: Option<&str>) -> Head {
        Head::Response {
            id: id.map(str::to_owned),
        }
    }

    fn call(id: Option<&str>) -> Head {
        Head::Call {
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn proxy_head_of_a_cut_message_tells_whose_answer_it_is() {
        let cases: &[(&str, Head)] = &[
            (
                r#"{"jsonrpc":"2.0","id":10,"result":{"content":[{"te"#,
                response(Some("10")),
            ),
            (
                r#"{"id" : "a\"b", "jsonrpc":"2.0", "error":{"co"#,
                response(Some(r#""a\"b""#)),
            ),
            (r#" {"result":{"id":3,"x":"#, response(None)),
            (r#"{"result":{"text":"a"},"id":12"#, response(None)),
            (r#"{"result":{},"id":12,"#, response(Some("12"))),
            (r#"{"jsonrpc":"2.0","id":null,"result":"#, response(None)),
            (
                r#"{"jsonrpc":"2.0","id":1,"id":2,"result":"#,
                response(None),
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{"#,
                call(Some("4")),
            ),
            (
                r#"{"method":"elicitation/create","id":"e1","jsonrpc":"2.0","params":{"#,
                call(Some(r#""e1""#)),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"id":5,"#,
                call(None),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","params":{"a":1},"id":6"#,
                call(None),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","params":{"a":1},"id":6,"#,
                call(Some("6")),
            ),
            (r#"{"jsonrpc":"2.0","method":"sampling/crea"#, call(None)),
            (r#"{"jsonrpc":"2.0","params":{"result":"#, call(None)),
            (
                r#"{"jsonrpc":"2.0","id":4,"_meta":{"result":"#,
                Head::Unknown,
            ),
            (r#"{"jsonrpc":"2.0","id":"#, Head::Unknown),
            (r#"[{"jsonrpc":"2.0","id":1,"result":"#, Head::Unknown),
            ("garbage", Head::Unknown),
            // Whole messages, the id after what made them long.
            (
                r#"{"result":{"content":[{"type":"text","text":"}\",\"id\":9"}]},"jsonrpc":"2.0","id":7}"#,
                response(Some("7")),
            ),
            (
                r#"{"method":"tools/call","params":{"id":1,"x":[{"id":2}]},"jsonrpc":"2.0","id":"c-8"}"#,
                call(Some(r#""c-8""#)),
            ),
            (r#"{"\u0069d":3,"result":{}}"#, response(Some("3"))),
            (r#"{"result":{},"id":{"a":1}}"#, response(None)),
            (
                r#"{"method":"ping","id":2,"result":{}}"#,
                response(Some("2")),
            ),
        ];
        for (start, head) in cases {
            assert_eq!(Head::peek(start.as_bytes()), *head, "{start}");
        }
        // A string id cut short is not taken either.
        assert_eq!(
            Head::peek(br#"{"result":1,"id":"ab"#),
            Head::Response { id: None }
        );
    }

    #[test]
    fn proxy_head_of_a_long_message_keeps_bounded_memory() {
        let mut scan = HeadScan::default();
        scan.feed(br#"{"result":{"text":""#);
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..64 {
            scan.feed(&chunk);
        }
        scan.feed(br#""},"id":"#);
        let long_id = format!("\"{}\"", "i".repeat(ID_BYTES + 1));
        scan.feed(long_id.as_bytes());
        scan.feed(b"}");
        assert!(scan.key.capacity() <= KEY_BYTES.next_power_of_two().max(64));
        assert!(scan.id_bytes.capacity() <= ID_BYTES);
        assert_eq!(
            scan.head(),
            response(None),
            "an id too long to keep cannot be answered by"
        );
    }

    /// The envelope as JSON's own parser reads it in the whole message.
    fn parsed_head(text: &str) -> Head {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
            return Head::Unknown;
        };
        let id = fields.get("id").and_then(|id| {
            let raw = serde_json::value::to_raw_value(id).ok()?;
            answerable_id(&raw)
        });
        if fields.contains_key("result") || fields.contains_key("error") {
            Head::Response { id }
        } else if fields.contains_key("method") || fields.contains_key("params") {
            Head::Call { id }
        } else {
            Head::Unknown
        }
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // Quotes, backslashes, braces and key names inside strings.
            "[a-z{}\\[\\]\":,\\\\ ]{0,12}|id|result|method".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("id|result|error|method|params|[a-z]{1,6}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A message's text, its fields in any order (`serde_json`'s maps sort
    /// theirs), spaced out or not.
    fn any_message() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            Just(None),
            any::<u32>().prop_map(|n| Some(json!(n))),
            "[a-z\"\\\\-]{0,8}".prop_map(|s| Some(json!(s))),
            Just(Some(Value::Null)),
        ];
        let envelope = prop::sample::subsequence(vec!["method", "params", "result", "error"], 0..3);
        (id, envelope, any_value(), any::<u64>(), any::<bool>()).prop_map(
            |(id, keys, body, order, spaced)| {
                let mut fields: Vec<(&str, Value)> =
                    keys.into_iter().map(|key| (key, body.clone())).collect();
                fields.push(("jsonrpc", json!("2.0")));
                if let Some(id) = id {
                    let at = usize::try_from(order).unwrap_or(0) % (fields.len() + 1);
                    fields.insert(at, ("id", id));
                }
                let gap = if spaced { " \n\t" } else { "" };
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(key, value)| format!("{gap}\"{key}\"{gap}:{gap}{value}{gap}"))
                    .collect();
                format!("{gap}{{{}}}{gap}", fields.join(","))
            },
        )
    }

    proptest! {
        /// Fed whole or in any pieces, the scanner reads the envelope JSON's
        /// parser reads, whatever the strings and nested values hold.
        #[test]
        fn proxy_head_scan_agrees_with_the_parser(
            text in any_message(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let bytes = text.as_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut scan = HeadScan::default();
            let mut from = 0;
            for cut in at.into_iter().chain([bytes.len()]) {
                scan.feed(&bytes[from..cut]);
                from = cut;
            }
            prop_assert_eq!(scan.head(), parsed_head(&text), "{}", text);
        }
    }
}
