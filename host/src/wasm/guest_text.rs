//! Text that comes from a guest: names, versions, error messages, log lines.
//!
//! A policy controls every byte of these strings, and they end up in log lines,
//! terminal output and metrics labels. So before the host stores or prints one,
//! it is cut to a bound (a 1 MiB name must not ride on every log line) and every
//! control character is escaped (a `\n` followed by `ERROR shadowcat: ...` must
//! not read as a line the host wrote, an ESC must not drive the terminal). The
//! cut is marked with the original length, so nobody mistakes it for the whole.

use std::fmt::Write as _;

/// Longest policy name kept, in bytes (after escaping).
pub const MAX_NAME: usize = 64;
/// Longest policy version kept.
pub const MAX_VERSION: usize = 32;
/// Longest error message kept (a guest's `Err`, a trap's reason).
pub const MAX_ERROR: usize = 512;
/// Longest guest log line kept.
pub const MAX_LOG_LINE: usize = 1024;
/// Longest fault detail kept (a trap with its backtrace, logged at DEBUG).
pub const MAX_DETAIL: usize = 4096;

/// Characters that are not control characters by Unicode's `Cc` category but
/// still break or disguise a log line: line and paragraph separators, and the
/// bidirectional overrides and isolates that reorder what a terminal shows.
fn is_disguising(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `c` to `out`, escaped if it could forge or disguise a line.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        c if c.is_control() || is_disguising(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// `text` with control characters escaped, cut to at most `max` bytes plus a
/// marker such as `… (cut, 1048576 bytes)` naming the original length.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    let mut piece = String::new();
    for (at, c) in text.char_indices() {
        piece.clear();
        push_escaped(&mut piece, c);
        if out.len() + piece.len() > max {
            // Cut on a whole (escaped) character, never inside an escape.
            let _ = write!(out, "… (cut, {} bytes)", text.len());
            debug_assert!(at < text.len());
            return out;
        }
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_guest_text_short_plain_text_is_unchanged() {
        assert_eq!(bounded("lfu 0.1.0 — naïve", 64), "lfu 0.1.0 — naïve");
    }

    #[test]
    fn policy_guest_text_control_characters_cannot_start_a_line() {
        let forged = "ok\nERROR shadowcat: forged\r\x1b[31mred\u{202e}";
        let shown = bounded(forged, 1024);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(
            shown,
            "ok\\nERROR shadowcat: forged\\r\\u{1b}[31mred\\u{202e}"
        );
        // A literal backslash is escaped too, so `\\n` in the output can only
        // come from a real newline.
        assert_eq!(bounded("a\\nb", 64), "a\\\\nb");
    }

    #[test]
    fn policy_guest_text_long_text_is_cut_with_a_marker() {
        let huge = "é".repeat(1 << 19); // 1 MiB of two-byte characters
        let shown = bounded(&huge, 64);
        assert!(shown.ends_with("… (cut, 1048576 bytes)"), "{shown}");
        assert!(shown.len() <= 64 + "… (cut, 1048576 bytes)".len());
        assert!(shown.starts_with("éé"));
        // The cut never splits an escape.
        let newlines = "\n".repeat(100);
        let shown = bounded(&newlines, 9);
        assert!(shown.starts_with("\\n\\n\\n\\n…"), "{shown}");
    }
}
