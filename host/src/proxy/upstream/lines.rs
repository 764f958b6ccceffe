//! The stdio framing as read from a server: one message per line, each at
//! most a given length.
//!
//! A line over the limit does not end the stream. JSON cannot hold a raw
//! line break (inside a string it is escaped), so the next newline is where
//! the over-long message ends, whatever it was: the rest of the line is
//! skipped there and the lines after it are read as usual. Nothing of the
//! over-long line is kept but its envelope, read as it goes by: whose
//! message it was, wherever its id comes.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::proxy::head::{Head, HeadScan};

/// One item read from the server's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line, without its line break.
    Line(Bytes),
    /// A line over the limit, skipped to its end (or to the end of the
    /// stream, which cut it): what it showed of its envelope.
    TooLong(Head),
}

/// Newline-delimited lines of at most `max` bytes.
#[derive(Debug)]
pub(crate) struct BoundedLines {
    max: usize,
    /// Where the search for a newline resumes in the buffer: what was
    /// searched before has none.
    searched: usize,
    /// Skipping the rest of a line over the limit, reading its envelope.
    skipping: Option<HeadScan>,
}

impl BoundedLines {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            searched: 0,
            skipping: None,
        }
    }
}

impl Decoder for BoundedLines {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        if let Some(scan) = &mut self.skipping {
            match memchr::memchr(b'\n', buf) {
                Some(end) => {
                    scan.feed(&buf[..end]);
                    let head = scan.head();
                    buf.advance(end + 1);
                    self.skipping = None;
                    return Ok(Some(Line::TooLong(head)));
                }
                None => {
                    // Nothing of it is kept: memory stays bounded however
                    // long the line goes on.
                    scan.feed(buf);
                    buf.clear();
                    return Ok(None);
                }
            }
        }
        // A line of `max` bytes may be followed by its newline.
        let window = buf.len().min(self.max.saturating_add(1));
        match memchr::memchr(b'\n', &buf[self.searched.min(window)..window]) {
            Some(offset) => {
                let end = self.searched + offset;
                self.searched = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                Ok(Some(Line::Line(line.freeze())))
            }
            None if buf.len() > self.max => {
                self.searched = 0;
                let mut scan = HeadScan::default();
                scan.feed(&buf[..window]);
                self.skipping = Some(scan);
                buf.advance(window);
                // The newline ending it may already be in the buffer, past
                // the window.
                self.decode(buf)
            }
            None => {
                self.searched = window;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if let Some(scan) = self.skipping.take() {
            // Cut by the end of the stream: what was read of it.
            buf.clear();
            return Ok(Some(Line::TooLong(scan.head())));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        // A last line without its newline.
        self.searched = 0;
        Ok(Some(Line::Line(buf.split().freeze())))
    }
}

/// A line limit as a peer is told it: `the limit of 4194304 bytes per
/// message (--max-body raises it)`, naming the option that sets it.
pub(crate) fn limit_text(max_line: usize, option: Option<&str>) -> String {
    let raise = option
        .map(|option| format!(" ({option} raises it)"))
        .unwrap_or_default();
    format!("the limit of {max_line} bytes per message{raise}")
}

/// Writes each of `lines` to `output` with its newline, flushed, until the
/// channel closes or `output` fails (the reader went away).
pub(crate) async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut lines: mpsc::Receiver<Bytes>,
) {
    while let Some(line) = lines.recv().await {
        let written = async {
            output.write_all(&line).await?;
            output.write_all(b"\n").await?;
            output.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut codec = BoundedLines::new(max);
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).expect("no I/O here") {
                lines.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).expect("no I/O here") {
            lines.push(line);
        }
        lines
    }

    fn line(text: &str) -> Line {
        Line::Line(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// A line over the limit that is not JSON.
    fn too_long() -> Line {
        Line::TooLong(Head::Unknown)
    }

    fn response(id: Option<&str>) -> Line {
        Line::TooLong(Head::Response {
            id: id.map(str::to_owned),
        })
    }

    #[test]
    fn proxy_stdio_lines_over_the_limit_are_skipped_to_their_end() {
        // Whole, in pieces, and with the newline past the window.
        assert_eq!(
            read_all(4, &[b"ab\nabcd\nabcdefgh\nxy\n"]),
            [line("ab"), line("abcd"), too_long(), line("xy")]
        );
        assert_eq!(
            read_all(4, &[b"ab", b"cdef", b"ghij", b"kl\nx", b"y\nz"]),
            [too_long(), line("xy"), line("z")]
        );
        assert_eq!(
            read_all(4, &[b"abcde", b"\n", b"ok\n"]),
            [too_long(), line("ok")]
        );
        // Two over-long lines in a row, and one cut by the end of the stream.
        assert_eq!(
            read_all(3, &[b"abcdef\nghijkl\nmn\nopqrs"]),
            [too_long(), too_long(), line("mn"), too_long()]
        );
        assert_eq!(read_all(3, &[b"", b"\n\n"]), [line(""), line("")]);
    }

    #[test]
    fn proxy_stdio_lines_over_the_limit_tell_whose_they_were_from_their_end() {
        // The id after the result, as the TypeScript SDK writes it, in
        // pieces that split the key and the id.
        assert_eq!(
            read_all(
                16,
                &[
                    br#"{"result":{"text":"xxxxxxxxxxxx"},"i"#,
                    br#"d":1"#,
                    b"2}\n{}\n"
                ]
            ),
            [response(Some("12")), line("{}")]
        );
        // Cut by the end of the stream before its id ended: no id.
        assert_eq!(
            read_all(16, &[br#"{"result":{"text":"xxxxxxxxxxxx"},"id":12"#]),
            [response(None)]
        );
    }

    #[test]
    fn proxy_stdio_lines_keep_a_bounded_buffer() {
        let max = 1 << 15;
        let mut codec = BoundedLines::new(max);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(br#"{"result":""#);
        buf.extend_from_slice(&vec![b'x'; max]);
        assert_eq!(codec.decode(&mut buf).expect("decodes"), None);
        assert!(buf.is_empty(), "what is skipped is not kept");
        for _ in 0..8 {
            buf.extend_from_slice(&vec![b'y'; max]);
            assert_eq!(codec.decode(&mut buf).expect("decodes"), None);
            assert!(buf.is_empty(), "what is skipped is not kept");
        }
        buf.extend_from_slice(b"yyy\",\"id\":\"late\"}\n{}\n");
        assert_eq!(
            codec.decode(&mut buf).expect("decodes"),
            Some(response(Some("\"late\"")))
        );
        assert_eq!(codec.decode(&mut buf).expect("decodes"), Some(line("{}")));
    }
}
