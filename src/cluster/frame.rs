//! The result channel of the per-node Jobs. A pod's log is the container's stdout and stderr
//! interleaved in one stream, so a report printed as plain JSON is unparseable as soon as
//! anything else is printed (a warning on a broken node, a retry line). Node commands run with
//! `--result-frame` print their result as ONE line
//!
//! ```text
//! PSK-GUARD-RESULT v1 <base64 of the JSON> <first 16 hex of the JSON's SHA-256>
//! ```
//!
//! and the reader takes the last intact frame of the log, ignoring every other line. A log
//! without one yields the reason from its last lines: escaped, capped, and with anything shaped
//! like a key (a long run of base64/hex characters) redacted.

use base64::Engine;
use sha2::Digest;

pub const PREFIX: &str = "PSK-GUARD-RESULT";
pub const VERSION: &str = "v1";
/// Lines of the log's tail quoted when there is no frame, and characters kept of each.
const TAIL_LINES: usize = 3;
const TAIL_CHARS: usize = 200;

fn checksum(json: &[u8]) -> String {
    hex::encode(&sha2::Sha256::digest(json)[..8])
}

/// The frame line (without newline) for a JSON document.
pub fn encode(json: &[u8]) -> String {
    format!(
        "{PREFIX} {VERSION} {} {}",
        base64::engine::general_purpose::STANDARD.encode(json),
        checksum(json)
    )
}

/// The JSON of the last intact frame in `log`, or why there is none.
pub fn decode(log: &str) -> Result<serde_json::Value, String> {
    let mut damaged = None;
    for line in log.lines().rev() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(VERSION), Some(b64), Some(sum)) => {
                let Ok(json) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                    damaged.get_or_insert("its payload is not base64");
                    continue;
                };
                if checksum(&json) != sum {
                    damaged.get_or_insert("its checksum does not match");
                    continue;
                }
                return serde_json::from_slice(&json)
                    .map_err(|_| "the node's result frame does not hold JSON".to_owned());
            }
            (Some(v), _, _) if v != VERSION => {
                damaged.get_or_insert("it has a version this psk-guard does not read (use the same version on the nodes)");
            }
            _ => {
                damaged.get_or_insert("it is truncated");
            }
        }
    }
    Err(match damaged {
        Some(why) => format!("the node's result line is unusable: {why}"),
        None => format!("no result in the Job's log; it ended with: {}", tail(log)),
    })
}

/// The last lines of a log, safe to print: control characters escaped, each line capped, and
/// long runs of base64/hex characters (the shape of a key) replaced by `[redacted]`.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(nothing)".into();
    }
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| sanitize_line(l))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn sanitize_line(line: &str) -> String {
    let mut out = String::new();
    for word in line.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        // A run of 20+ base64url/base64 characters (split at `/`, so paths survive) holding
        // letters and digits, or lower and upper case letters: a generated key of 43 base64url
        // characters has no digit once in about 1,500 keys, but both cases all but always.
        let keyish = word
            .split(|c: char| !(c.is_ascii_alphanumeric() || "+=_-".contains(c)))
            .any(|run| {
                let has = |f: fn(&char) -> bool| run.chars().any(|c| f(&c));
                run.len() >= 20
                    && has(char::is_ascii_alphabetic)
                    && (has(char::is_ascii_digit)
                        || has(char::is_ascii_lowercase) && has(char::is_ascii_uppercase))
            });
        if keyish {
            out.push_str("[redacted]");
        } else {
            out.extend(word.chars().flat_map(char::escape_default));
        }
        if out.chars().count() > TAIL_CHARS {
            let cut: String = out.chars().take(TAIL_CHARS).collect();
            return cut + "…";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_intact_frame_wins_and_other_lines_are_ignored() {
        let a = encode(br#"{"n":1}"#);
        let b = encode(br#"{"n":2}"#);
        let log = format!("WARN something\n{a}\nretrying\n{b}\r\nPSK-GUARD-RESULT v1 Zm9v 0000\n");
        assert_eq!(decode(&log).unwrap()["n"], 2);
    }

    #[test]
    fn no_frame_gives_a_sanitized_capped_tail() {
        let log = "one\ntwo\nthree \x1b[31m\nkey Hq3vZ8mR1xT5wK9bN2cF7jL4pY6sD0gA at unix:/tmp/pskg8f3k2a/run/db.sock\n";
        let e = decode(log).unwrap_err();
        assert!(e.contains("two") && e.contains("\\u{1b}[31m"), "{e}");
        assert!(!e.contains("one") && !e.contains("Hq3vZ8mR1xT5"), "{e}");
        assert!(e.contains("[redacted]"), "{e}");
        assert!(
            e.contains("unix:/tmp/pskg8f3k2a/run/db.sock"),
            "paths are kept: {e}"
        );
        // A generated key without a digit (base64url, both cases).
        let e = decode("failed: qwErTyUiOpAsDfGhJkLzXcVbNm_-QwErTyUiOpAsDfG\n").unwrap_err();
        assert!(!e.contains("qwErTyUiOp") && e.contains("[redacted]"), "{e}");
        let long = "x".repeat(5000);
        assert!(decode(&long).unwrap_err().chars().count() < 300);
        assert!(decode("").unwrap_err().contains("(nothing)"));
    }

    #[test]
    fn damaged_and_foreign_versions_are_named() {
        let good = encode(b"{}");
        let bad = good.replace(" v1 ", " v9 ");
        assert!(decode(&bad).unwrap_err().contains("version"));
        let cut = &good[..good.len() - 3];
        assert!(decode(cut).unwrap_err().contains("checksum"));
    }
}
