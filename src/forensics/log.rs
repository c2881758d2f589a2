//! Reader of Open vSwitch's standalone database log (`conf.db`): records of
//! `OVSDB JSON <length> <sha1>\n` followed by `<length>` bytes of JSON (the first is the schema).
//!
//! Streaming with bounded memory: one chunk buffer and one record buffer, both wiped after each
//! use and on drop because records hold keys. A record's declared length is checked against the
//! cap and against what the file still holds before anything is allocated, every record's SHA-1 is
//! verified, and a truncated or corrupt tail stops the reader cleanly with the offset and reason.

use std::io::Read;

use sha1::{Digest, Sha1};
use zeroize::Zeroize;

/// Default cap on one record (a compacted snapshot of 10,000 tunnels is a few MiB).
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
pub(crate) const MAX_HEADER: usize = 128;

/// Why a file cannot be read as a standalone OVSDB log at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("the file is empty: not an OVSDB database")]
    Empty,
    #[error("this is a clustered OVSDB database (\"CLUSTER\" records); psk-guard reads only the standalone format so far: run `ovsdb-tool cluster-to-standalone` on a copy first")]
    Clustered,
    #[error("the file does not start with an \"OVSDB JSON\" record header: not an OVSDB database")]
    WrongMagic,
}

/// Where and why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the record (its header) that could not be read.
    pub offset: u64,
    /// Index of that record (0 = schema).
    pub record: usize,
    pub reason: String,
}

/// One record, borrowed from the reader's buffer until the next call.
pub struct Record<'a> {
    pub index: usize,
    pub offset: u64,
    pub body: &'a [u8],
}

pub enum Next<'a> {
    Record(Record<'a>),
    End,
    Damaged(Damage),
}

pub struct LogReader<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    eof: bool,
    record: Vec<u8>,
    index: usize,
    max_record: usize,
    /// Bytes the source still holds past the buffer, when known (file size).
    remaining: Option<u64>,
    stopped: bool,
    /// Where the last record's body lies in `buf`, when it was served from there.
    last_in_buf: Option<(usize, usize)>,
}

fn grow_wiping(v: &mut Vec<u8>, want: usize) {
    if v.capacity() < want {
        let mut n = Vec::with_capacity(want);
        n.extend_from_slice(v);
        v.zeroize();
        *v = n;
    }
}

impl<R: Read> LogReader<R> {
    /// `size` is the source's total length, when known: declared record lengths beyond it are
    /// reported as truncation without allocating.
    pub fn new(src: R, size: Option<u64>, max_record: usize) -> Self {
        LogReader {
            src,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            offset: 0,
            eof: false,
            record: Vec::new(),
            index: 0,
            max_record,
            remaining: size,
            stopped: false,
            last_in_buf: None,
        }
    }

    /// Reads more bytes into the chunk buffer, keeping the unread ones. Returns false at EOF.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.last_in_buf = None;
        if self.pos > 0 {
            let left = self.buf.len() - self.pos;
            self.buf.copy_within(self.pos.., 0);
            self.buf[left..].zeroize();
            self.buf.truncate(left);
            self.pos = 0;
        }
        let want = CHUNK.max(self.buf.len() + 1);
        grow_wiping(&mut self.buf, want);
        let start = self.buf.len();
        let cap = self.buf.capacity();
        self.buf.resize(cap, 0);
        let n = loop {
            match self.src.read(&mut self.buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(start + n);
        if let Some(r) = self.remaining.as_mut() {
            *r = r.saturating_sub(n as u64);
        }
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    fn damaged(&mut self, offset: u64, reason: String) -> Next<'_> {
        self.stopped = true;
        Next::Damaged(Damage {
            offset,
            record: self.index,
            reason,
        })
    }

    /// The next record; `Err` only for a file that is not a standalone log at all or an I/O error.
    pub fn next_record(&mut self) -> Result<Next<'_>, ReadError> {
        if self.stopped {
            return Ok(Next::End);
        }
        self.record.zeroize();
        let rec_offset = self.offset;
        // Header line.
        let nl = loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                break i;
            }
            if self.buf.len() - self.pos > MAX_HEADER {
                if self.index == 0 {
                    return Err(self.magic_error().into());
                }
                return Ok(self.damaged(
                    rec_offset,
                    "record header too long or missing newline".into(),
                ));
            }
            if !self.fill()? {
                let left = self.buf.len() - self.pos;
                if left == 0 {
                    if self.index == 0 {
                        return Err(FormatError::Empty.into());
                    }
                    return Ok(Next::End);
                }
                if self.index == 0 {
                    return Err(self.magic_error().into());
                }
                return Ok(self.damaged(
                    rec_offset,
                    format!("truncated record header ({left} bytes at end of file)"),
                ));
            }
        };
        let header = &self.buf[self.pos..self.pos + nl];
        let parsed = parse_header(header);
        let (len, sha) = match parsed {
            Ok(h) => h,
            Err(reason) => {
                if self.index == 0 {
                    return Err(self.magic_error().into());
                }
                return Ok(self.damaged(rec_offset, reason.into()));
            }
        };
        self.pos += nl + 1;
        self.offset += nl as u64 + 1;
        if len > self.max_record as u64 {
            return Ok(self.damaged(
                rec_offset,
                format!(
                    "record declares {len} bytes, more than the {}-byte limit (--max-record)",
                    self.max_record
                ),
            ));
        }
        let len = len as usize;
        let buffered = self.buf.len() - self.pos;
        let available = (buffered as u64).saturating_add(self.remaining.unwrap_or(u64::MAX));
        if (len as u64) > available {
            return Ok(self.damaged(
                rec_offset,
                format!(
                    "truncated: record declares {len} bytes but the file ends after {available}"
                ),
            ));
        }
        // Body: from the chunk buffer, then straight from the source.
        let body: &[u8] = if buffered >= len {
            let b = &self.buf[self.pos..self.pos + len];
            self.pos += len;
            b
        } else {
            self.record.clear();
            grow_wiping(&mut self.record, len);
            self.record.extend_from_slice(&self.buf[self.pos..]);
            self.buf[self.pos..].zeroize();
            self.pos = self.buf.len();
            let mut got = buffered;
            self.record.resize(len, 0);
            while got < len {
                let n = match self.src.read(&mut self.record[got..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    self.eof = true;
                    break;
                }
                if let Some(r) = self.remaining.as_mut() {
                    *r = r.saturating_sub(n as u64);
                }
                got += n;
            }
            if got < len {
                return Ok(self.damaged(
                    rec_offset,
                    format!("truncated: record declares {len} bytes but the file ends after {got}"),
                ));
            }
            &self.record[..]
        };
        self.offset += len as u64;
        let digest = Sha1::digest(body);
        if digest.as_slice() != sha {
            return Ok(self.damaged(rec_offset, "SHA-1 mismatch: the record is corrupt".into()));
        }
        let index = self.index;
        self.index += 1;
        // Re-borrow: the body lives in either buffer.
        let body = if len <= buffered {
            self.last_in_buf = Some((self.pos - len, self.pos));
            &self.buf[self.pos - len..self.pos]
        } else {
            &self.record[..]
        };
        Ok(Next::Record(Record {
            index,
            offset: rec_offset,
            body,
        }))
    }

    fn magic_error(&self) -> FormatError {
        let head = &self.buf[self.pos..];
        if head.starts_with(b"CLUSTER") {
            FormatError::Clustered
        } else {
            FormatError::WrongMagic
        }
    }

    /// Wipes the bytes of the record just returned (the caller is done with it).
    pub fn wipe_last(&mut self) {
        if let Some((start, end)) = self.last_in_buf.take() {
            self.buf[start..end].zeroize();
        }
        self.record.zeroize();
    }

    /// Offset of the next byte to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<R> Drop for LogReader<R> {
    fn drop(&mut self) {
        self.buf.zeroize();
        self.record.zeroize();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses `OVSDB JSON <len> <40 hex>` into the length and the SHA-1's bytes.
pub(crate) fn parse_header(h: &[u8]) -> Result<(u64, [u8; 20]), &'static str> {
    let rest = h
        .strip_prefix(b"OVSDB JSON ")
        .ok_or("record header does not start with \"OVSDB JSON\"")?;
    let sp = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or("record header has no SHA-1")?;
    let (len, sha) = (&rest[..sp], &rest[sp + 1..]);
    if len.is_empty() || len.len() > 19 || !len.iter().all(u8::is_ascii_digit) {
        return Err("record header has an invalid length");
    }
    let len = len
        .iter()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or("record header has an invalid length")?;
    let bad_sha = "record header has an invalid SHA-1";
    if sha.len() != 40 {
        return Err(bad_sha);
    }
    // One table lookup per hex digit (the header of every record is parsed): 0xff is not a digit.
    const HEX: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = match i as u8 {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'a'..=b'f' => c - b'a' + 10,
                c @ b'A'..=b'F' => c - b'A' + 10,
                _ => 0xff,
            };
            i += 1;
        }
        t
    };
    let mut out = [0u8; 20];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(sha.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0xf);
    }
    if bad & 0xf0 != 0 {
        return Err(bad_sha);
    }
    Ok((len, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(body: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "OVSDB JSON {} {}\n",
            body.len(),
            hex::encode(Sha1::digest(body))
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    fn read_all(data: &[u8], max: usize) -> (usize, Option<Damage>) {
        let mut r = LogReader::new(data, Some(data.len() as u64), max);
        let mut n = 0;
        loop {
            match r.next_record().unwrap() {
                Next::Record(_) => n += 1,
                Next::End => return (n, None),
                Next::Damaged(d) => return (n, Some(d)),
            }
        }
    }

    #[test]
    fn reads_records_and_stops_at_damage() {
        let mut f = record(b"{\"name\":\"x\"}\n");
        f.extend(record(b"{\"_date\":1}\n"));
        assert_eq!(read_all(&f, 1 << 20), (2, None));
        let mut t = f.clone();
        t.truncate(f.len() - 3);
        let (n, d) = read_all(&t, 1 << 20);
        assert_eq!(n, 1);
        assert!(d.unwrap().reason.contains("truncated"));
        let mut flip = f.clone();
        let last = flip.len() - 3;
        flip[last] ^= 0x01;
        let (n, d) = read_all(&flip, 1 << 20);
        assert_eq!(n, 1);
        assert!(d.unwrap().reason.contains("SHA-1"));
    }

    #[test]
    fn format_errors() {
        let mut r = LogReader::new(&b""[..], Some(0), 1024);
        assert!(matches!(
            r.next_record(),
            Err(ReadError::Format(FormatError::Empty))
        ));
        let mut r = LogReader::new(&b"CLUSTER JSON 2 abc\n{}"[..], None, 1024);
        assert!(matches!(
            r.next_record(),
            Err(ReadError::Format(FormatError::Clustered))
        ));
        let mut r = LogReader::new(&b"hello world\n"[..], None, 1024);
        assert!(matches!(
            r.next_record(),
            Err(ReadError::Format(FormatError::WrongMagic))
        ));
    }

    #[test]
    fn huge_declared_length_allocates_nothing() {
        let mut f = record(b"{}\n");
        f.extend_from_slice(b"OVSDB JSON 99999999999 0000000000000000000000000000000000000000\n{}");
        let (n, d) = read_all(&f, 1 << 20);
        assert_eq!(n, 1);
        assert!(d.unwrap().reason.contains("limit"));
        let (n, d) = read_all(&f, usize::MAX);
        assert_eq!(n, 1);
        assert!(d.unwrap().reason.contains("truncated"));
    }

    #[test]
    fn records_larger_than_a_chunk() {
        let big = format!("{{\"a\":\"{}\"}}\n", "x".repeat(3 * CHUNK));
        let mut f = record(b"{}\n");
        f.extend(record(big.as_bytes()));
        f.extend(record(b"{}\n"));
        assert_eq!(read_all(&f, 1 << 24), (3, None));
    }
}
