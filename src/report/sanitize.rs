//! Bounded, escaped text: every string that comes from outside psk-guard (OVSDB rows, a conf.db,
//! the Kubernetes API, an OVSDB server's error text, a path on the node) passes through here
//! where it enters the report model, so that no output format (text, JSON, SARIF) can carry
//! terminal control sequences or unbounded text.
//!
//! - **Escaped**: C0 controls and DEL (`\x1b`), C1 controls, which include the 8-bit CSI and OSC
//!   introducers 0x9b and 0x9d (`\u{9b}`), and the Unicode bidirectional controls that can make
//!   text display in another order than it reads (U+061C, U+200E/F, U+202A–U+202E,
//!   U+2066–U+2069) and the line/paragraph separators U+2028/9 (`\u{202e}`).
//! - **Capped**: names at [`MAX_NAME`] characters, messages at [`MAX_TEXT`] characters; what is
//!   cut is replaced by `…(N bytes more)`.
//!
//! A string that needs neither is returned unchanged.

use std::borrow::Cow;

/// Longest name kept (interface, path, database, node), in characters.
pub const MAX_NAME: usize = 256;
/// Longest message kept (observed text, reasons, server errors), in characters.
pub const MAX_TEXT: usize = 1024;

/// Whether `c` must not reach an output raw.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `s` with unsafe characters escaped and at most `max` characters of it kept.
pub fn bounded(s: &str, max: usize) -> Cow<'_, str> {
    // Fast path (the common case, and hot in scan-db): at most `max` bytes, so at most `max`
    // characters, all printable ASCII, none of which is unsafe.
    if s.len() <= max && s.bytes().fold(true, |ok, b| ok & (0x20..0x7f).contains(&b)) {
        return Cow::Borrowed(s);
    }
    let cut = s.char_indices().nth(max).map(|(i, _)| i);
    let kept = &s[..cut.unwrap_or(s.len())];
    if cut.is_none() && !kept.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(kept.len() + 24);
    for c in kept.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    if let Some(i) = cut {
        out.push_str(&format!("…({} bytes more)", s.len() - i));
    }
    Cow::Owned(out)
}

/// A name (interface, path, database, node, object): escaped, at most [`MAX_NAME`] characters.
pub fn name(s: &str) -> String {
    bounded(s, MAX_NAME).into_owned()
}

/// A message: escaped, at most [`MAX_TEXT`] characters.
pub fn text(s: &str) -> String {
    bounded(s, MAX_TEXT).into_owned()
}

/// Like [`text`], reusing `s` when it needs no change.
pub fn text_owned(s: String) -> String {
    match bounded(&s, MAX_TEXT) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

/// Every string in a JSON tree (values and object keys) made safe with [`text`].
pub fn json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(text_owned(s)),
        Value::Array(a) => Value::Array(a.into_iter().map(json).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (text_owned(k), json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_ansi_osc_and_bidi() {
        assert_eq!(bounded("plain name-1.é", 10), "plain name…(5 bytes more)");
        assert!(matches!(bounded("plain", 10), Cow::Borrowed(_)));
        assert_eq!(
            bounded("a\x1b[2Kb\x07c\x7fd\u{9b}e\u{9d}f", 100),
            "a\\x1b[2Kb\\x07c\\x7fd\\u{9b}e\\u{9d}f"
        );
        assert_eq!(bounded("x\n\t\r\0", 100), "x\\x0a\\x09\\x0d\\x00");
        assert_eq!(
            bounded("evil\u{202e}txt.exe\u{2066}\u{2069}", 100),
            "evil\\u{202e}txt.exe\\u{2066}\\u{2069}"
        );
        for c in ['\u{202a}', '\u{202d}', '\u{2067}', '\u{2068}', '\u{200f}'] {
            assert!(is_unsafe(c), "{c:?}");
        }
        for c in ['a', 'é', '✓', '\u{a0}', '\u{2070}'] {
            assert!(!is_unsafe(c), "{c:?}");
        }
    }

    #[test]
    fn caps_by_characters_and_says_how_much_was_cut() {
        let long = "é".repeat(MAX_NAME + 10);
        let n = name(&long);
        assert!(n.starts_with(&"é".repeat(MAX_NAME)));
        assert!(n.ends_with("…(20 bytes more)"), "{n}");
        let huge = "y".repeat(60 << 20);
        assert!(text(&huge).len() < MAX_TEXT + 40);
    }

    #[test]
    fn json_trees() {
        let v = serde_json::json!({"k\u{1b}": ["\u{9d}8;;x", 1, {"n": "ok"}]});
        assert_eq!(
            json(v),
            serde_json::json!({"k\\x1b": ["\\u{9d}8;;x", 1, {"n": "ok"}]})
        );
    }
}
