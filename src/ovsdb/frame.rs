//! JSON-RPC framing for OVSDB: messages are bare JSON objects one after another, with no length
//! prefix and no delimiter.
//!
//! Two questions are kept apart, as in mini-redis: [`Scanner::scan`] answers "is a whole message in
//! the buffer yet?" in one pass over the bytes that arrived since the last call (so a 50 MB reply
//! arriving in 64 KiB pieces is scanned once, not re-parsed on every read), and only then is the
//! exact slice handed to `serde_json`. "Not yet" is an expected state, not an error.
//!
//! [`FrameBuf`] owns the bytes. Replies carry keys, so the buffer never lets a copy escape: when it
//! grows it wipes the old allocation, and the bytes of a message it hands out are wiped as they are
//! consumed.
//!
//! Sized once: the buffer starts small (most messages are tiny) and, the first time a message does
//! not fit, reserves room for the largest message allowed in one step. The reservation is virtual
//! address space: the kernel backs a page only when a read writes to it (memory is locked with
//! `MCL_ONFAULT`, see `hardening`), so a 3 MiB reply costs 3 MiB, with no doubling, no copy of
//! the bytes already received, and no half-filled capacity. Only bytes that ever held data are
//! wiped, so the untouched reservation is never faulted in.

use zeroize::Zeroize;

/// Default cap on one message: a reply for 10,000 tunnel interfaces is a few MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Initial capacity: enough for every message but large select replies.
const INITIAL: usize = 16 * 1024;
/// The most address space reserved in one step; beyond it (a `max_message` raised past it) the
/// buffer doubles.
const MAX_RESERVE: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a message is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("malformed JSON at byte {offset} of the stream: {reason}")]
    Malformed { offset: u64, reason: &'static str },
}

/// Incremental scanner state for the message at the front of the buffer.
#[derive(Default, Debug, Clone)]
pub struct Scanner {
    /// Bytes of the current message already scanned.
    pos: usize,
    depth: u32,
    in_string: bool,
    escape: bool,
    started: bool,
}

/// Deepest nesting accepted; deeper input is rejected before serde_json's own recursion limit.
const MAX_DEPTH: u32 = 100;

impl Scanner {
    /// Scans `buf` (which starts with the current message and only grows between calls) and returns
    /// `Ok(Some(end))` when `buf[..end]` holds one whole top-level object (leading whitespace
    /// included), `Ok(None)` when more bytes are needed.
    pub fn scan(&mut self, buf: &[u8], stream_offset: u64) -> Result<Option<usize>, FrameError> {
        let malformed = |at: usize, reason| FrameError::Malformed {
            offset: stream_offset + at as u64,
            reason,
        };
        while self.pos < buf.len() {
            let b = buf[self.pos];
            let at = self.pos;
            self.pos += 1;
            if !self.started {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' => {
                        self.started = true;
                        self.depth = 1;
                        continue;
                    }
                    _ => return Err(malformed(at, "a message must be a JSON object")),
                }
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                } else if b < 0x20 {
                    return Err(malformed(at, "control character inside a string"));
                } else {
                    // The rest of a plain run of string bytes in one step: up to the next quote
                    // or backslash (memchr), checked for control characters in a loop the
                    // compiler vectorizes. Same verdict as byte by byte (see the test).
                    let rest = &buf[self.pos..];
                    let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                    if rest[..run].iter().fold(false, |c, &x| c | (x < 0x20)) {
                        let i = rest[..run].iter().position(|&x| x < 0x20).unwrap_or(0);
                        return Err(malformed(self.pos + i, "control character inside a string"));
                    }
                    self.pos += run;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(malformed(at, "nesting too deep"));
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let end = self.pos;
                        *self = Scanner::default();
                        return Ok(Some(end));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// The receive buffer: grows on demand up to a cap, wipes what it releases.
pub struct FrameBuf {
    data: Vec<u8>,
    /// Bytes of `data` consumed (and already wiped) at the front.
    start: usize,
    scanner: Scanner,
    /// Offset in the whole stream of `data[start]`, for error messages.
    consumed: u64,
    max_message: usize,
}

/// Wipes the bytes that hold data and empties the vector, leaving its spare capacity untouched
/// (bytes past `len` are always zero or never written: everything truncated is wiped first).
fn wipe_len(v: &mut Vec<u8>) {
    v.as_mut_slice().zeroize();
    v.clear();
}

impl FrameBuf {
    pub fn new(max_message: usize) -> Self {
        FrameBuf {
            data: Vec::with_capacity(INITIAL),
            start: 0,
            scanner: Scanner::default(),
            consumed: 0,
            max_message,
        }
    }

    /// Bytes received but not yet handed out.
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// True when bytes of an unfinished message are waiting (used to tell a clean EOF from a
    /// connection closed mid-reply).
    pub fn has_partial(&self) -> bool {
        self.pending()
            .iter()
            .any(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    }

    /// Makes room for at least `want` more bytes and returns the spare capacity to read into.
    /// Growing copies into a fresh allocation and wipes the old one, so no stale copy is left; the
    /// first growth reserves room for a whole `max_message` (plus one read), so it is the only one.
    pub fn spare(&mut self, want: usize) -> &mut Vec<u8> {
        if self.start > 0 && (self.start >= self.data.len() / 2 || self.data.len() == self.start) {
            // Compact: move the pending bytes to the front and wipe what they leave behind.
            let len = self.data.len() - self.start;
            self.data.copy_within(self.start.., 0);
            self.data[len..].zeroize();
            self.data.truncate(len);
            self.start = 0;
        }
        if self.data.capacity() - self.data.len() < want {
            let reserve = self.max_message.saturating_add(want).min(MAX_RESERVE);
            let new_cap = (self.data.len() + want).max(if self.data.capacity() < reserve {
                reserve
            } else {
                self.data.capacity() * 2
            });
            let mut grown = Vec::with_capacity(new_cap);
            grown.extend_from_slice(&self.data);
            wipe_len(&mut self.data);
            self.data = grown;
        }
        &mut self.data
    }

    /// Appends bytes (used by tests and by readers that do not read in place).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len()).extend_from_slice(bytes);
    }

    /// Calls `f` with the bytes of the next whole message, if one is here, then wipes them from
    /// the buffer. `f` must copy out whatever it keeps.
    pub fn with_next<T>(
        &mut self,
        f: impl FnOnce(&[u8], u64) -> T,
    ) -> Result<Option<T>, FrameError> {
        let pending = &self.data[self.start..];
        let found = self.scanner.scan(pending, self.consumed)?;
        let Some(end) = found else {
            if pending.len() > self.max_message {
                return Err(FrameError::TooLarge {
                    limit: self.max_message,
                });
            }
            return Ok(None);
        };
        if end > self.max_message {
            return Err(FrameError::TooLarge {
                limit: self.max_message,
            });
        }
        let offset = self.consumed;
        let out = f(&self.data[self.start..self.start + end], offset);
        self.data[self.start..self.start + end].zeroize();
        self.start += end;
        self.consumed += end as u64;
        Ok(Some(out))
    }

    /// Returns the next whole message, if one is here, parsed as a JSON tree.
    pub fn next_message(&mut self) -> Result<Option<serde_json::Value>, FrameError> {
        match self.with_next(|bytes, offset| {
            serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| json_error(&e, offset))
        })? {
            None => Ok(None),
            Some(r) => r.map(Some),
        }
    }
}

/// A serde_json error as a [`FrameError`]: its category and position only, since serde's message
/// can quote the input.
pub fn json_error(e: &serde_json::Error, offset: u64) -> FrameError {
    FrameError::Malformed {
        offset: offset + e.column() as u64,
        reason: match e.classify() {
            serde_json::error::Category::Syntax => "invalid JSON syntax",
            serde_json::error::Category::Data => "a JSON value of an unexpected shape",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Io => "I/O error",
        },
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        wipe_len(&mut self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(buf: &mut FrameBuf) -> Vec<serde_json::Value> {
        let mut out = vec![];
        while let Some(v) = buf.next_message().unwrap() {
            out.push(v);
        }
        out
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut b = FrameBuf::new(1024);
        b.extend(br#"{"id":1,"result":[]}{"id":2,"result":{"a":"}{"}}"#);
        let v = all(&mut b);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["result"]["a"], "}{");
    }

    #[test]
    fn message_split_at_every_byte() {
        let msg = br#"{"id":7,"result":["x\"]}", {"k":[1,2,{"z":null}]}],"error":null}"#;
        for cut in 0..msg.len() {
            let mut b = FrameBuf::new(1024);
            b.extend(&msg[..cut]);
            assert!(b.next_message().unwrap().is_none(), "cut {cut}");
            b.extend(&msg[cut..]);
            let v = b.next_message().unwrap().unwrap();
            assert_eq!(v["id"], 7);
        }
    }

    #[test]
    fn rejects_non_objects_and_oversize() {
        let mut b = FrameBuf::new(1024);
        b.extend(b"[1,2]");
        assert!(matches!(
            b.next_message(),
            Err(FrameError::Malformed { .. })
        ));
        let mut b = FrameBuf::new(16);
        b.extend(br#"{"a":"0123456789012345678901234567890"#);
        assert_eq!(b.next_message(), Err(FrameError::TooLarge { limit: 16 }));
    }

    #[test]
    fn grows_once_and_wipes_what_it_releases() {
        let mut b = FrameBuf::new(1 << 20);
        let big = format!(r#"{{"id":1,"result":"{}"}}"#, "k".repeat(100_000));
        for piece in big.as_bytes().chunks(4096) {
            b.extend(piece);
        }
        let cap = b.data.capacity();
        assert!(
            cap >= 1 << 20,
            "the first growth reserves a whole message: {cap}"
        );
        let v = b.next_message().unwrap().unwrap();
        assert_eq!(v["id"], 1);
        assert!(b.data.iter().all(|&x| x == 0), "consumed bytes are wiped");
        b.extend(br#"{"id":2}"#);
        assert_eq!(b.data.capacity(), cap, "no second growth");
        assert_eq!(b.next_message().unwrap().unwrap()["id"], 2);
    }

    /// The byte-at-a-time scanner `Scanner::scan` skips string runs of: the same verdicts.
    fn reference(buf: &[u8]) -> Result<Option<usize>, usize> {
        let (mut depth, mut in_string, mut escape, mut started) = (0u32, false, false, false);
        for (at, &b) in buf.iter().enumerate() {
            if !started {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' => (started, depth) = (true, 1),
                    _ => return Err(at),
                }
                continue;
            }
            if in_string {
                if escape {
                    escape = false;
                } else if b == b'\\' {
                    escape = true;
                } else if b == b'"' {
                    in_string = false;
                } else if b < 0x20 {
                    return Err(at);
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' if depth == MAX_DEPTH => return Err(at),
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(Some(at + 1));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    #[test]
    fn string_runs_scan_as_byte_by_byte() {
        let cases: &[&[u8]] = &[
            br#"{"a":"plain text","b":["x\"y","\\",""],"c":"tab in"}"#,
            b"{\"a\":\"new\nline\"}",
            br#"{"k":"\u0041\"}\"{","l":[{"m":"]"}]} trailing"#,
            br#"{"s":"unterminated"#,
            br#"{"e":"ends with a backslash\"#,
            b"{\"c\":\"\x01\"}",
            b"{\"c\":\"esc\\\x02\"}",
            br#"  {"x":1}"#,
        ];
        for msg in cases {
            for cut in 0..=msg.len() {
                let mut sc = Scanner::default();
                let first = sc.scan(&msg[..cut], 0);
                let got = match first {
                    Ok(None) => sc.scan(msg, 0),
                    other => other,
                };
                let got = got.map_err(|e| match e {
                    FrameError::Malformed { offset, .. } => offset as usize,
                    FrameError::TooLarge { .. } => usize::MAX,
                });
                let want = match reference(&msg[..cut]) {
                    Ok(None) => reference(msg),
                    other => other,
                };
                assert_eq!(got, want, "{:?} cut at {cut}", String::from_utf8_lossy(msg));
            }
        }
    }

    #[test]
    fn malformed_inside_object() {
        let mut b = FrameBuf::new(1024);
        b.extend(br#"{"a":tru}"#);
        assert!(matches!(
            b.next_message(),
            Err(FrameError::Malformed { .. })
        ));
    }
}
