//! The stdio framing as read from a server: one message per line, each at
//! most a given length.
//!
//! A line over the limit does not end the stream. JSON cannot hold a raw
//! line break (inside a string it is escaped), so the next newline is where
//! the over-long message ends, whatever it was: the rest of the line is
//! skipped there and the lines after it are read as usual. What is kept of
//! the over-long line is its start, enough to tell whose answer it was.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

/// Bytes kept of the start of a line over the limit: far more than any
/// envelope takes before its result (`{"jsonrpc":"2.0","id":...,"result":`).
const HEAD: usize = 8 << 10;

/// One item read from the server's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line, without its line break.
    Line(Bytes),
    /// A line over the limit: its first bytes. The rest is skipped up to
    /// its end.
    TooLong(Bytes),
}

/// Newline-delimited lines of at most `max` bytes.
#[derive(Debug)]
pub(crate) struct BoundedLines {
    max: usize,
    /// Where the search for a newline resumes in the buffer: what was
    /// searched before has none.
    searched: usize,
    /// Skipping the rest of a line over the limit.
    skipping: bool,
}

impl BoundedLines {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            searched: 0,
            skipping: false,
        }
    }
}

impl Decoder for BoundedLines {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        if self.skipping {
            match memchr::memchr(b'\n', buf) {
                Some(end) => {
                    buf.advance(end + 1);
                    self.skipping = false;
                }
                None => {
                    // Nothing of it is kept: memory stays bounded however
                    // long the line goes on.
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
                self.skipping = true;
                let head = Bytes::copy_from_slice(&buf[..buf.len().min(HEAD).min(self.max)]);
                // The newline ending it may already be in the buffer, past
                // the window: the next call skips up to it.
                buf.advance(window);
                Ok(Some(Line::TooLong(head)))
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
        if self.skipping || buf.is_empty() {
            buf.clear();
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

    fn too_long(head: &str) -> Line {
        Line::TooLong(Bytes::copy_from_slice(head.as_bytes()))
    }

    #[test]
    fn proxy_stdio_lines_over_the_limit_are_skipped_to_their_end() {
        // Whole, in pieces, and with the newline past the window.
        assert_eq!(
            read_all(4, &[b"ab\nabcd\nabcdefgh\nxy\n"]),
            [line("ab"), line("abcd"), too_long("abcd"), line("xy")]
        );
        assert_eq!(
            read_all(4, &[b"ab", b"cdef", b"ghij", b"kl\nx", b"y\nz"]),
            [too_long("abcd"), line("xy"), line("z")]
        );
        assert_eq!(
            read_all(4, &[b"abcde", b"\n", b"ok\n"]),
            [too_long("abcd"), line("ok")]
        );
        // Two over-long lines in a row, and one cut by the end of the stream.
        assert_eq!(
            read_all(3, &[b"abcdef\nghijkl\nmn\nopqrs"]),
            [
                too_long("abc"),
                too_long("ghi"),
                line("mn"),
                too_long("opq")
            ]
        );
        assert_eq!(read_all(3, &[b"", b"\n\n"]), [line(""), line("")]);
    }

    #[test]
    fn proxy_stdio_lines_keep_a_bounded_head_and_buffer() {
        let max = HEAD * 4;
        let mut codec = BoundedLines::new(max);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'x'; max + 1]);
        let Some(Line::TooLong(head)) = codec.decode(&mut buf).expect("decodes") else {
            panic!("a line over the limit");
        };
        assert_eq!(head.len(), HEAD);
        for _ in 0..8 {
            buf.extend_from_slice(&vec![b'y'; max]);
            assert_eq!(codec.decode(&mut buf).expect("decodes"), None);
            assert!(buf.is_empty(), "what is skipped is not kept");
        }
        buf.extend_from_slice(b"yyy\n{}\n");
        assert_eq!(codec.decode(&mut buf).expect("decodes"), Some(line("{}")));
    }
}
