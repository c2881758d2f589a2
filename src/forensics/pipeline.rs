//! Reading conf.db at hashing speed: this thread reads the file into a few large buffers and
//! frames the records in them; a second thread verifies each record's SHA-1 and runs the record
//! scanner over the batch (`prepare`), while this one applies the records of the batch before. A batch's records are used only after the hasher has
//! verified them, in file order, so what is reported is exactly what [`super::log::LogReader`]
//! would give: the same records, damage, offsets and messages.
//!
//! Memory: `IN_FLIGHT` buffers of `BUF` bytes (a buffer grows only for a record larger than it),
//! zero-filled once and reused. A record cut by the end of a buffer is carried to the start of the
//! next one; the tail it leaves is wiped. After use, a buffer is wiped where key bytes were (the
//! spans the scanner reports, or whole records the full decoder read); a batch that is not used
//! (after damage) is wiped whole, and every buffer is wiped on drop.

use std::io::Read;
use std::sync::mpsc;

use sha1::{Digest, Sha1};
use zeroize::{Zeroize, Zeroizing};

use super::log::{parse_header, Damage, FormatError, ReadError, MAX_HEADER};

/// 256 KiB: three of them are most of `check`'s history-scan memory (the file is read once; bigger
/// buffers made no measurable difference in speed).
const BUF: usize = 1 << 18;
const IN_FLIGHT: usize = 3;

/// One framed record in a batch's buffer.
pub(crate) struct Rec {
    pub index: usize,
    /// Offset of its header in the file.
    pub offset: u64,
    /// Offset just past its body.
    pub next_offset: u64,
    pub start: usize,
    pub end: usize,
    sha: [u8; 20],
}

/// Why framing stopped: the end of the file, or damage (with the reader's offset at that point).
pub(crate) enum Stop {
    End { offset: u64 },
    Damage { damage: Damage, offset: u64 },
}

pub(crate) struct Batch {
    pub buf: Vec<u8>,
    filled: usize,
    pub records: Vec<Rec>,
    /// Set by the hasher: the position in `records` of the first whose SHA-1 does not match.
    pub bad: Option<usize>,
    pub stop: Option<Stop>,
    /// Spans of `buf` that held key bytes, wiped before the buffer is reused.
    pub keys: Vec<(usize, usize)>,
    /// What the hasher thread's `prepare` found in the records (spans, no key bytes).
    pub scans: super::fast::Scans,
}

impl Batch {
    fn new() -> Self {
        Batch {
            buf: Vec::new(),
            filled: 0,
            records: Vec::new(),
            bad: None,
            stop: None,
            keys: Vec::new(),
            scans: super::fast::Scans::default(),
        }
    }

    /// Wipes the key spans (after use) and readies the batch for the next fill.
    fn recycle(&mut self, used: bool) {
        if used {
            for &(s, e) in &self.keys {
                self.buf[s..e].zeroize();
            }
        } else {
            self.buf[..self.filled].zeroize();
        }
        self.keys.clear();
        self.scans.clear();
        self.records.clear();
        self.bad = None;
        self.stop = None;
        self.filled = 0;
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Frames records from the source into batches, with the same checks, offsets and messages as
/// [`super::log::LogReader`].
struct Framer<R> {
    src: R,
    remaining: Option<u64>,
    eof: bool,
    /// File offset of the next record's header.
    offset: u64,
    index: usize,
    max_record: usize,
    /// The start of a record cut by the end of the last buffer.
    carry: Zeroizing<Vec<u8>>,
    /// Bytes the next buffer must hold (the carried record whole).
    need: usize,
}

impl<R: Read> Framer<R> {
    fn read_into(&mut self, b: &mut Batch) -> Result<(), ReadError> {
        let want = BUF.max(self.need);
        if b.buf.len() < want {
            b.buf.zeroize();
            b.buf = vec![0; want];
        }
        b.buf[..self.carry.len()].copy_from_slice(&self.carry);
        b.filled = self.carry.len();
        self.carry.zeroize();
        self.need = 0;
        while b.filled < b.buf.len() && !self.eof {
            match self.src.read(&mut b.buf[b.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    b.filled += n;
                    if let Some(r) = self.remaining.as_mut() {
                        *r = r.saturating_sub(n as u64);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn damage(&mut self, at: u64, offset: u64, reason: String) -> Stop {
        Stop::Damage {
            damage: Damage {
                offset: at,
                record: self.index,
                reason,
            },
            offset,
        }
    }

    fn magic_error(head: &[u8]) -> ReadError {
        if head.starts_with(b"CLUSTER") {
            FormatError::Clustered.into()
        } else {
            FormatError::WrongMagic.into()
        }
    }

    /// Fills `b` and frames the whole records in it; sets `b.stop` when framing is over.
    fn fill(&mut self, b: &mut Batch) -> Result<(), ReadError> {
        self.read_into(b)?;
        let mut p = 0;
        loop {
            let rest = &b.buf[p..b.filled];
            let rest_len = rest.len();
            let at = self.offset;
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                if rest_len > MAX_HEADER {
                    if self.index == 0 {
                        return Err(Self::magic_error(rest));
                    }
                    let why = "record header too long or missing newline".into();
                    b.stop = Some(self.damage(at, at, why));
                } else if self.eof {
                    if rest_len == 0 {
                        if self.index == 0 {
                            return Err(FormatError::Empty.into());
                        }
                        b.stop = Some(Stop::End { offset: at });
                    } else if self.index == 0 {
                        return Err(Self::magic_error(rest));
                    } else {
                        let why =
                            format!("truncated record header ({rest_len} bytes at end of file)");
                        b.stop = Some(self.damage(at, at, why));
                    }
                } else {
                    self.carry_from(b, p, rest_len + 1);
                }
                return Ok(());
            };
            let (len, sha) = match parse_header(&rest[..nl]) {
                Ok(h) => h,
                Err(_) if self.index == 0 => return Err(Self::magic_error(rest)),
                Err(reason) => {
                    b.stop = Some(self.damage(at, at, reason.into()));
                    return Ok(());
                }
            };
            let body_at = at + nl as u64 + 1;
            if len > self.max_record as u64 {
                let why = format!(
                    "record declares {len} bytes, more than the {}-byte limit (--max-record)",
                    self.max_record
                );
                b.stop = Some(self.damage(at, body_at, why));
                return Ok(());
            }
            let len = len as usize;
            let buffered = rest_len - nl - 1;
            let available = (buffered as u64).saturating_add(self.remaining.unwrap_or(u64::MAX));
            if len as u64 > available {
                let why = format!(
                    "truncated: record declares {len} bytes but the file ends after {available}"
                );
                b.stop = Some(self.damage(at, body_at, why));
                return Ok(());
            }
            if buffered < len {
                if self.eof {
                    let why = format!(
                        "truncated: record declares {len} bytes but the file ends after {buffered}"
                    );
                    b.stop = Some(self.damage(at, body_at, why));
                } else {
                    self.carry_from(b, p, nl + 1 + len);
                }
                return Ok(());
            }
            let start = p + nl + 1;
            b.records.push(Rec {
                index: self.index,
                offset: at,
                next_offset: body_at + len as u64,
                start,
                end: start + len,
                sha,
            });
            self.index += 1;
            self.offset = body_at + len as u64;
            p = start + len;
        }
    }

    /// Moves `b.buf[from..filled]` (an unfinished record) to the carry and wipes it there.
    fn carry_from(&mut self, b: &mut Batch, from: usize, need: usize) {
        self.carry.extend_from_slice(&b.buf[from..b.filled]);
        b.buf[from..b.filled].zeroize();
        b.filled = from;
        self.need = need;
    }
}

/// The hasher's side: verifies every record of each batch until the first mismatch.
fn verify(b: &mut Batch) {
    b.bad = b
        .records
        .iter()
        .position(|r| Sha1::digest(&b.buf[r.start..r.end]).as_slice() != r.sha);
}

/// Reads the whole source through the pipeline; `use_batch` gets each batch, in order, once the
/// hasher has checked its records (`bad`) and then run `prepare` on it (on the hasher's thread),
/// and returns false to stop (damage found while using it). It must add the spans of key bytes
/// it saw to `batch.keys`.
pub(crate) fn run<R: Read>(
    src: R,
    size: Option<u64>,
    max_record: usize,
    prepare: fn(&mut Batch),
    mut use_batch: impl FnMut(&mut Batch) -> bool,
) -> Result<(), ReadError> {
    let mut framer = Framer {
        src,
        remaining: size,
        eof: false,
        offset: 0,
        index: 0,
        max_record,
        carry: Zeroizing::new(Vec::new()),
        need: 0,
    };
    let (to_hasher, hasher_in) = mpsc::sync_channel::<Batch>(IN_FLIGHT);
    let (hasher_out, from_hasher) = mpsc::sync_channel::<Batch>(IN_FLIGHT);
    std::thread::scope(|s| {
        s.spawn(move || {
            for mut b in hasher_in {
                verify(&mut b);
                prepare(&mut b);
                if hasher_out.send(b).is_err() {
                    break;
                }
            }
            // The last SHA-1 block buffer and the scanner's words (record bytes) lived in this
            // thread's stack.
            crate::hardening::scrub_stack();
        });
        let mut free: Vec<Batch> = (0..IN_FLIGHT).map(|_| Batch::new()).collect();
        let (mut in_flight, mut framing, mut using) = (0, true, true);
        let mut result = Ok(());
        loop {
            while framing {
                let Some(mut b) = free.pop() else { break };
                if let Err(e) = framer.fill(&mut b) {
                    b.recycle(false);
                    result = Err(e);
                    framing = false;
                    using = false;
                    break;
                }
                framing = b.stop.is_none();
                // The channel holds IN_FLIGHT batches, so this never blocks.
                if to_hasher.send(b).is_err() {
                    framing = false;
                    break;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let Ok(mut b) = from_hasher.recv() else { break };
            in_flight -= 1;
            // A batch used whole is wiped where its keys were; one that ended the scan (damage, the
            // end, or an error) or was not used is wiped whole.
            let used = using && use_batch(&mut b);
            let clean = used && b.stop.is_none() && b.bad.is_none();
            if !clean {
                using = false;
                framing = false;
            }
            b.recycle(clean);
            free.push(b);
        }
        drop(to_hasher);
        result
    })
}
