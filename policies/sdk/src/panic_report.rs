//! Tells the host why a policy panicked. With `panic = "abort"` a panic is a
//! trap, and all the host would see of it is wasm's `unreachable`: the hook
//! sends the message and where it was raised through the `log` import first,
//! at error level, so that `shadowcat policy check` and the proxy's log show
//! it next to the fault.
//!
//! Kept to string pushes: the formatting machinery (`format!` of the whole
//! `PanicHookInfo`) would add to every policy's size for a line that is
//! written at most once per instance.

// Natively (unit tests) the hook is not installed: the test harness's own
// reports panics there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

/// Most bytes of a panic message sent: the host cuts a log line to 1024 bytes
/// anyway, and a bound here keeps a huge message (a dump of state) from
/// costing a huge allocation in a guest about to trap.
pub(crate) const MAX_MESSAGE: usize = 512;
/// Most bytes of the file name: paths are remapped and short, but nothing
/// bounds them.
const MAX_FILE: usize = 256;
/// Ends a message cut at [`MAX_MESSAGE`].
const CUT: &str = " …";

/// Installs the hook once per instance; a later `create` keeps it.
#[cfg(target_arch = "wasm32")]
pub(crate) fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| (l.file(), l.line(), l.column()));
            crate::log(crate::Level::Error, &line(info.payload_as_str(), location));
        }));
    });
}

/// `panicked at FILE:LINE:COLUMN: MESSAGE`, as Rust's own hook words it, on
/// one line and bounded.
pub(crate) fn line(message: Option<&str>, location: Option<(&str, u32, u32)>) -> String {
    // A payload other than a string comes from `panic_any`, which policies
    // have no reason to use: the location is what there is to tell.
    let message = message.unwrap_or("(no message)");
    let mut out = String::with_capacity(64 + MAX_FILE + MAX_MESSAGE + CUT.len());
    out.push_str("panicked");
    if let Some((file, line, column)) = location {
        out.push_str(" at ");
        out.push_str(prefix(file, MAX_FILE));
        out.push(':');
        push_decimal(&mut out, line);
        out.push(':');
        push_decimal(&mut out, column);
    }
    out.push_str(": ");
    let kept = prefix(message, MAX_MESSAGE);
    out.push_str(kept);
    if kept.len() < message.len() {
        out.push_str(CUT);
    }
    out
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn push_decimal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_line_names_the_message_and_where_it_was_raised() {
        assert_eq!(
            line(
                Some("index out of bounds"),
                Some(("/shadowcat/policies/x/src/lib.rs", 42, 7))
            ),
            "panicked at /shadowcat/policies/x/src/lib.rs:42:7: index out of bounds"
        );
        assert_eq!(
            line(Some("boom"), Some(("a.rs", 0, u32::MAX))),
            "panicked at a.rs:0:4294967295: boom"
        );
        assert_eq!(line(None, None), "panicked: (no message)");
    }

    #[test]
    fn panic_line_is_bounded_and_cut_on_a_character_boundary() {
        // Three-byte characters: 512 is not a multiple of 3.
        let huge = "€".repeat(10_000);
        let file = "f".repeat(10_000);
        let out = line(Some(&huge), Some((&file, 1, 1)));
        assert!(
            out.len() <= 64 + MAX_FILE + MAX_MESSAGE + CUT.len(),
            "{}",
            out.len()
        );
        assert!(out.ends_with(&format!("{} …", "€".repeat(MAX_MESSAGE / 3))));
        assert!(out.contains(&format!(" at {}:1:1: ", "f".repeat(MAX_FILE))));
        let exact = "x".repeat(MAX_MESSAGE);
        assert!(line(Some(&exact), None).ends_with(&format!(": {exact}")));
    }
}
