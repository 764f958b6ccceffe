//! Plain-text traces: one object id per line.

use std::io::Read;
use std::path::Path;

use super::input::for_each_line;
use super::{parse_id, Request, TraceError};

/// Parses one id per line (surrounding whitespace trimmed; integer ids kept,
/// others hashed). Blank lines and lines starting with `#` are skipped. The
/// time is the 0-based line index in the file, so skipped lines leave gaps but
/// time never goes backwards. Sizes are 1. Never skips zero-size records, so
/// the second value is always 0.
pub(super) fn parse(reader: &mut dyn Read, path: &Path) -> Result<(Vec<Request>, u64), TraceError> {
    let mut requests = Vec::new();
    for_each_line(reader, path, |number, line| {
        let id = line.trim_ascii();
        if !id.is_empty() && !id.starts_with(b"#") {
            requests.push(Request::new(number - 1, parse_id(id), 1));
        }
        Ok(())
    })?;
    Ok((requests, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::hash_id;

    #[test]
    fn ids_comments_and_blank_lines() {
        let text = "# header comment\n42\n\n  user:7  \r\n#x\n42";
        let (requests, skipped) = parse(&mut text.as_bytes(), Path::new("t.txt")).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(
            requests,
            [
                Request::new(1, 42, 1),
                Request::new(3, hash_id(b"user:7"), 1),
                Request::new(5, 42, 1),
            ]
        );
    }
}
