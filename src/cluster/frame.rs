//! The result channel of the per-node Jobs. A pod's log is the container's stdout and stderr
//! interleaved in one stream, so a report printed as plain JSON is unparseable as soon as
//! anything else is printed (a warning on a broken node, a retry line). Node commands run with
//! `--result-frame` print their result as frame lines
//!
//! ```text
//! PSK-GUARD-RESULT v2 <first 16 hex of the JSON's SHA-256> <i>/<n> <part i of the JSON's base64>
//! ```
//!
//! each at most [`CHUNK`] characters of base64: the container runtime writes a longer line as
//! several partial entries (containerd's `max_container_log_line_size`, 16 KiB), and a line of the
//! other stream, read concurrently, can land between them (the kubelet joins partial entries in
//! file order, pkg/kubelet/kuberuntime/logs/logs.go), which would break a single long frame line
//! of a large node report. Lines of other output may come between frame lines. The reader takes
//! the last intact frame of the log (its parts all present, the checksum matching), ignoring
//! every other line; it reads the single-line `v1` frame of earlier versions too. A log without
//! one yields the reason from its last lines: escaped, capped, and with anything shaped like a key
//! (a long run of base64/hex characters) redacted.

use std::collections::BTreeMap;

use base64::Engine;
use sha2::Digest;

pub const PREFIX: &str = "PSK-GUARD-RESULT";
pub const VERSION: &str = "v2";
/// The single-line frame of earlier versions.
const V1: &str = "v1";
/// Base64 characters per frame line (the line is ~40 more): half the runtime's line limit.
pub const CHUNK: usize = 8 * 1024;
/// Most parts a frame may have: the largest log read (16 MiB) holds no more.
const MAX_PARTS: usize = 4096;
/// Most distinct frames (checksums) kept while a log is read, the latest: a node prints one;
/// without a bound a log of one-part frames each with its own checksum would be held whole
/// several times over (16× the log in memory).
const MAX_FRAMES: usize = 16;
/// Lines of the log's tail quoted when there is no frame, and characters kept of each.
const TAIL_LINES: usize = 3;
const TAIL_CHARS: usize = 200;

fn checksum(json: &[u8]) -> String {
    hex::encode(&sha2::Sha256::digest(json)[..8])
}

/// The frame lines (joined by newlines, without a last one) for a JSON document.
pub fn encode(json: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(json);
    let sum = checksum(json);
    let parts: Vec<&str> = b64
        .as_bytes()
        .chunks(CHUNK)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let n = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| format!("{PREFIX} {VERSION} {sum} {}/{n} {part}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One frame's lines as found, by checksum (a `v1` line is a frame of one part).
#[derive(Default)]
struct Parts<'a> {
    n: usize,
    got: BTreeMap<usize, &'a str>,
    /// Index of its last line in the log (the last frame wins).
    last: usize,
    damaged: Option<&'static str>,
}

impl Parts<'_> {
    /// The frame's JSON bytes (checksum not yet checked), or why there are none.
    fn payload(&self) -> Result<Vec<u8>, &'static str> {
        if let Some(why) = self.damaged {
            return Err(why);
        }
        if self.got.len() != self.n {
            return Err("parts of it are missing");
        }
        let b64: String = self.got.values().copied().collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "its payload is not base64")
    }
}

/// The JSON of the last intact frame in `log`, or why there is none.
pub fn decode(log: &str) -> Result<serde_json::Value, String> {
    let mut frames: BTreeMap<&str, Parts> = BTreeMap::new();
    let mut damaged = None;
    for (index, line) in log.lines().enumerate() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix(PREFIX) else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        // (checksum, "i/n", part) of a v2 line; a v1 line is part 1 of 1.
        let (sum, pos, part) = match fields.next() {
            Some(VERSION) => match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some(sum), Some(pos), Some(part), None) => (sum, pos, part),
                _ => {
                    damaged.get_or_insert("it is truncated");
                    continue;
                }
            },
            Some(V1) => match (fields.next(), fields.next()) {
                (Some(part), Some(sum)) => (sum, "1/1", part),
                _ => {
                    damaged.get_or_insert("it is truncated");
                    continue;
                }
            },
            Some(_) => {
                damaged.get_or_insert("it has a version this psk-guard does not read (use the same version on the nodes)");
                continue;
            }
            None => {
                damaged.get_or_insert("it is truncated");
                continue;
            }
        };
        if sum.len() != 16 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            damaged.get_or_insert("its checksum is not 16 hex digits");
            continue;
        }
        if !frames.contains_key(sum) && frames.len() >= MAX_FRAMES {
            // Keep the latest: drop the frame whose last line came first.
            if let Some(oldest) = frames.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                frames.remove(oldest);
            }
        }
        let f = frames.entry(sum).or_default();
        f.last = index;
        let pos = pos
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
        match pos {
            Some((i, n)) if (1..=n).contains(&i) && n <= MAX_PARTS && (f.n == 0 || f.n == n) => {
                f.n = n;
                // A part seen twice must be the same (a result printed twice); two different
                // ones cannot both be right.
                if f.got.insert(i, part).is_some_and(|was| was != part) {
                    f.damaged
                        .get_or_insert("a part of it appears twice, different");
                }
            }
            _ => {
                f.damaged.get_or_insert("its part numbers do not add up");
            }
        }
    }
    // The last frame in the log first; each decoded only when its turn comes.
    let mut candidates: Vec<(&str, &Parts)> = frames.iter().map(|(s, f)| (*s, f)).collect();
    candidates.sort_by_key(|(_, f)| std::cmp::Reverse(f.last));
    for (sum, f) in candidates {
        match f.payload() {
            Ok(json) if checksum(&json) == sum => {
                return serde_json::from_slice(&json)
                    .map_err(|_| "the node's result frame does not hold JSON".to_owned());
            }
            Ok(_) => {
                damaged.get_or_insert("its checksum does not match");
            }
            Err(why) => {
                damaged.get_or_insert(why);
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
        let good = encode(br#"{"a":"bcdefg"}"#);
        let bad = good.replace(" v2 ", " v9 ");
        assert!(decode(&bad).unwrap_err().contains("version"));
        let cut = &good[..good.len() - 4];
        assert!(decode(cut).unwrap_err().contains("checksum"), "{cut}");
        // The single-line frame of earlier versions is still read.
        let json = br#"{"n":7}"#;
        let v1 = format!(
            "PSK-GUARD-RESULT v1 {} {}",
            base64::engine::general_purpose::STANDARD.encode(json),
            checksum(json)
        );
        assert_eq!(decode(&v1).unwrap()["n"], 7);
    }

    /// What the kubelet serves as a container's log when the runtime (containerd, whose
    /// `max_container_log_line_size` is 16 KiB) wrote a stdout line longer than that as partial
    /// entries and a stderr line was read between two of them: the kubelet joins partial entries
    /// in file order (pkg/kubelet/kuberuntime/logs/logs.go), so the stderr text lands inside the
    /// stdout line. The worst case: every stderr line after the first partial entry.
    fn cri_log(stdout: &str, stderr: &str) -> String {
        const MAX: usize = 16 * 1024;
        let mut entries: Vec<(String, bool)> = vec![]; // (content, partial)
        for line in stdout.lines() {
            let bytes = line.as_bytes();
            let mut chunks = bytes.chunks(MAX).peekable();
            while let Some(c) = chunks.next() {
                entries.push((
                    String::from_utf8_lossy(c).into_owned(),
                    chunks.peek().is_some(),
                ));
            }
        }
        let err: Vec<(String, bool)> = stderr.lines().map(|l| (l.to_owned(), false)).collect();
        let at = entries.iter().position(|e| e.1).map_or(0, |i| i + 1);
        entries.splice(at..at, err);
        entries
            .into_iter()
            .map(|(c, partial)| if partial { c } else { c + "\n" })
            .collect()
    }

    #[test]
    fn a_large_frame_survives_the_runtimes_line_splitting() {
        let json = serde_json::json!({"tunnels": (0..3000).map(|i| format!("tunnel-{i}")).collect::<Vec<_>>()})
            .to_string();
        assert!(json.len() > 32 * 1024);
        let stderr = "psk-guard: warning: something\n";
        let frame = encode(json.as_bytes());
        assert!(frame.lines().count() > 2 && frame.lines().all(|l| l.len() < 16 * 1024));
        let log = cri_log(&format!("{frame}\n"), stderr);
        assert_eq!(decode(&log).unwrap()["tunnels"][2999], "tunnel-2999");
        // The single-line frame of earlier versions did not.
        let v1 = format!(
            "PSK-GUARD-RESULT v1 {} {}\n",
            base64::engine::general_purpose::STANDARD.encode(json.as_bytes()),
            checksum(json.as_bytes())
        );
        assert!(decode(&cri_log(&v1, stderr)).is_err());
        let lines: Vec<&str> = frame.lines().collect();
        // Noise: many frames of their own checksums stop being collected (bounded), a part
        // seen twice with different content makes its frame unusable, not half-read.
        let noise: String = (0..10_000)
            .map(|i| format!("PSK-GUARD-RESULT v2 {i:016x} 1/1 e30=\n"))
            .collect();
        let log = format!("{noise}{frame}\n");
        assert_eq!(
            decode(&log).unwrap()["tunnels"][0],
            "tunnel-0",
            "the last frame wins"
        );
        let changed = format!("{}x", &lines[1][..lines[1].len() - 1]);
        let twice = format!("{frame}\n{changed}\n");
        assert!(
            decode(&twice).unwrap_err().contains("twice"),
            "{}",
            decode(&twice).unwrap_err()
        );
        // A part lost: named, not misread.
        let without = [lines[0], lines[2]].join("\n");
        assert!(decode(&without).unwrap_err().contains("missing"));
    }
}
