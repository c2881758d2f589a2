//! Old keys on disk: what conf.db's append-only log still holds.
//!
//! [`log`] reads the file record by record. [`scan`] replays the `Interface` table's `options`
//! through the records (full rows, and `_is_diff` records whose map diffs toggle keys) and reads
//! the `options:psk` arguments of the `ovs-vsctl` command lines recorded in `_comment`
//! ([`comment`]). Key-bearing strings are decoded from raw JSON by our own unescaper into wiping
//! buffers, never by serde_json. Keys are held only as fingerprints from the moment they are
//! read: a diff is applied by comparing fingerprints.

pub mod comment;
mod fast;
pub mod log;
mod pipeline;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use zeroize::{Zeroize, Zeroizing};

use crate::report::{sanitize, Code, Finding, Report, Severity, Subject};
use crate::secret::{Fingerprint, FingerprintKey};
use log::{Damage, LogReader, Next, ReadError};

/// Most interface names kept per key (bounds memory on a crafted file; the count of tunnels is
/// reported by `check`).
pub const MAX_INTERFACES_PER_KEY: usize = 100;

/// One distinct key found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHistory {
    pub fingerprint: Fingerprint,
    /// Interfaces whose rows carried the key (or that the command line carrying it named):
    /// at most [`MAX_INTERFACES_PER_KEY`], each name bounded and escaped.
    pub interfaces: BTreeSet<String>,
    /// More interfaces carried the key than `interfaces` keeps.
    pub interfaces_truncated: bool,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Records (transactions) that contain the key.
    pub records: usize,
    pub in_rows: bool,
    pub in_comments: bool,
    /// In use at the end of the log.
    pub current: bool,
    /// The last record that holds the key: (byte offset of its header, its length in bytes).
    pub last_record: Option<(u64, u64)>,
}

/// The result of scanning one file.
#[derive(Debug)]
pub struct Scan {
    pub records: usize,
    pub bytes: u64,
    pub schema: Option<String>,
    pub keys: Vec<KeyHistory>,
    pub damage: Option<Damage>,
    /// Every key seen, as search probes for the log scan (no key bytes; see `keysearch`).
    pub probes: Vec<crate::keysearch::Probe>,
}

impl Scan {
    pub fn old_keys(&self) -> impl Iterator<Item = &KeyHistory> {
        self.keys.iter().filter(|k| !k.current)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot open{}: {source} ({hint})", if source.to_string().contains(path.as_str()) { String::new() } else { format!(" {path}") })]
    Open {
        /// The path asked for (the error may name a directory on the way to it).
        path: String,
        #[source]
        source: crate::nodefs::FsError,
        hint: &'static str,
    },
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: ReadError,
    },
}

/// `["map", [[k, v], ...]]` keeping only the raw JSON text of the values of key `psk`: values
/// are decoded by [`crate::secret::json_unescape_into`] into a wiping buffer, never by serde_json,
/// whose scratch buffer would keep an escaped key after it is freed.
#[derive(Default)]
struct PskValues<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for PskValues<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PskValues<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an OVSDB map")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let tag: Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("empty"))?;
                if tag != "map" {
                    return Err(de::Error::custom("not a map"));
                }
                let pairs: Vec<(Cow<'de, str>, &'de RawValue)> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("no pairs"))?;
                Ok(PskValues(
                    pairs
                        .into_iter()
                        .filter(|(k, _)| k == "psk")
                        .map(|(_, v)| v)
                        .collect(),
                ))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct IfaceRow<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    options: Option<PskValues<'a>>,
}

#[derive(Deserialize)]
struct TxnRecord<'a> {
    #[serde(rename = "_date", default)]
    date: Option<i64>,
    /// Raw JSON text, decoded by our own unescaper (it carries keys).
    #[serde(rename = "_comment", borrow, default)]
    comment: Option<&'a RawValue>,
    #[serde(rename = "_is_diff", default)]
    is_diff: bool,
    #[serde(rename = "Interface", borrow, default)]
    interface: Option<HashMap<Cow<'a, str>, Option<IfaceRow<'a>>>>,
}

#[derive(Deserialize)]
struct SchemaRecord {
    name: Option<String>,
}

/// One `Interface` row change of a transaction, as either decoder found it.
struct RowChange<'a> {
    /// The uuid's text (both decoders give only valid UTF-8 here; compared as bytes).
    uuid: &'a [u8],
    /// `None`: the row was deleted.
    row: Option<RowCols<'a>>,
}

struct RowCols<'a> {
    name: Option<&'a str>,
    /// `options` present, with its first `psk` value as raw JSON text (quotes included).
    options: Option<Option<&'a [u8]>>,
}

impl<'a> RowChange<'a> {
    fn of_record(txn: &'a TxnRecord<'a>) -> impl Iterator<Item = RowChange<'a>> + 'a {
        txn.interface.iter().flatten().map(|(uuid, row)| RowChange {
            uuid: uuid.as_bytes(),
            row: row.as_ref().map(|r| RowCols {
                name: r.name.as_deref(),
                options: r
                    .options
                    .as_ref()
                    .map(|o| o.0.first().map(|v| v.get().as_bytes())),
            }),
        })
    }
}

/// A row's uuid as a map key: a canonical uuid (36 bytes, lowercase hex and dashes: what
/// ovsdb-server writes) as its 128 bits, any other string as itself. One string has one key and
/// two strings one key only if they are equal, so the map is keyed exactly by the uuid text.
/// The rows live in a `HashMap` with std's randomly keyed SipHash (`RandomState`): the file is
/// attacker-shaped and chooses the uuids, but cannot know the key, so it cannot make them collide.
/// Hashing 16 bytes costs less than a `BTreeMap`'s search among a few hundred random uuids
/// (a mispredicted comparison per step), which was ~11% of scan-db's time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RowKey {
    Uuid(u128),
    Other(Box<[u8]>),
}

impl RowKey {
    /// The canonical uuid's bits, if `b` is one: four groups of eight hex digits, each read
    /// by [`hex8`].
    fn canonical(b: &[u8]) -> Option<u128> {
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let two = |x: &[u8], y: &[u8]| {
            let mut w = [0u8; 8];
            w[..4].copy_from_slice(x);
            w[4..].copy_from_slice(y);
            w
        };
        let words = [
            b[..8].try_into().unwrap_or_default(),
            two(&b[9..13], &b[14..18]),
            two(&b[19..23], &b[24..28]),
            b[28..].try_into().unwrap_or_default(),
        ];
        words
            .into_iter()
            .try_fold(0u128, |v, w| Some((v << 32) | u128::from(hex8(w)?)))
    }

    fn of(s: &[u8]) -> RowKey {
        match Self::canonical(s) {
            Some(v) => RowKey::Uuid(v),
            None => RowKey::Other(s.into()),
        }
    }
}

/// Eight lowercase hex digits (what ovsdb-server writes in a uuid) as their 32 bits; `None` if
/// any byte is not one. One word at a time (SWAR, no `unsafe`): every byte is below 0x80 once the
/// first check passes, so adding at most 0x7f to each byte carries into no other byte, and a
/// byte's high bit then says whether it reached the bound.
fn hex8(w: [u8; 8]) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let x = u64::from_be_bytes(w);
    if x & HIGH != 0 {
        return None;
    }
    // '0'..='9' is 0x30..0x3a, 'a'..='f' is 0x61..0x67.
    let digit = x.wrapping_add(ONES * (0x80 - 0x30)) & !x.wrapping_add(ONES * (0x80 - 0x3a));
    let letter = x.wrapping_add(ONES * (0x80 - 0x61)) & !x.wrapping_add(ONES * (0x80 - 0x67));
    let (digit, letter) = (digit & HIGH, letter & HIGH);
    if digit | letter != HIGH {
        return None;
    }
    // Each byte's value (0..=15), then the eight nibbles packed, first digit highest.
    let mut v = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    u32::try_from(v).ok()
}

/// Distinct keys whose fingerprint is remembered (a log holds few; a hostile one many).
const FP_CACHE: usize = 16;

#[derive(Default)]
struct Replay {
    /// Interface uuid -> (name, key fingerprint in options:psk).
    rows: HashMap<RowKey, (Option<String>, Option<Fingerprint>)>,
    keys: BTreeMap<Fingerprint, KeyHistory>,
    /// Keys fingerprinted and their fingerprints: a log repeats few keys many times, and an HMAC
    /// costs more than a comparison. The copies are wiped on reuse and on drop.
    cache: Vec<(zeroize::Zeroizing<Vec<u8>>, Fingerprint)>,
    /// Next cache slot to reuse once it is full.
    evict: usize,
    /// The cache slot of the last key found there.
    hit: usize,
    /// Keys already counted in the current record.
    counted: Vec<Fingerprint>,
    /// Search probes of every distinct key (up to [`MAX_PROBED_KEYS`]), made the first time its
    /// bytes are fingerprinted.
    probes: BTreeMap<Fingerprint, Vec<crate::keysearch::Probe>>,
}

/// Distinct keys of one file that the log scan looks for (a hostile file may hold many).
const MAX_PROBED_KEYS: usize = 4096;

/// Records that `fp` was seen (in a row or a comment) in the current record.
fn seen(
    keys: &mut BTreeMap<Fingerprint, KeyHistory>,
    counted: &mut Vec<Fingerprint>,
    fp: Fingerprint,
    iface: Option<&str>,
    date: Option<i64>,
    row: bool,
) {
    let k = keys.entry(fp).or_insert_with(|| KeyHistory {
        fingerprint: fp,
        interfaces: BTreeSet::new(),
        interfaces_truncated: false,
        first_ms: None,
        last_ms: None,
        records: 0,
        in_rows: false,
        in_comments: false,
        current: false,
        last_record: None,
    });
    // Once the set is full and marked truncated, another name changes nothing: not looked up.
    let full = k.interfaces_truncated && k.interfaces.len() >= MAX_INTERFACES_PER_KEY;
    if let Some(i) = iface.filter(|_| !full) {
        // A crafted file can name millions of interfaces of any length: keep a bounded few.
        let i = sanitize::bounded(i, sanitize::MAX_NAME);
        if !k.interfaces.contains(i.as_ref()) {
            if k.interfaces.len() < MAX_INTERFACES_PER_KEY {
                k.interfaces.insert(i.into_owned());
            } else {
                k.interfaces_truncated = true;
            }
        }
    }
    if let Some(d) = date {
        k.first_ms = Some(k.first_ms.map_or(d, |f| f.min(d)));
        k.last_ms = Some(k.last_ms.map_or(d, |l| l.max(d)));
    }
    if row {
        k.in_rows = true;
    } else {
        k.in_comments = true;
    }
    if !counted.contains(&fp) {
        counted.push(fp);
        k.records += 1;
    }
}

impl Replay {
    fn fingerprint(&mut self, fp_key: &FingerprintKey, value: &[u8]) -> Fingerprint {
        // The key found last is the likeliest to come again: compared first.
        if let Some((b, fp)) = self.cache.get(self.hit) {
            if b.as_slice() == value {
                return *fp;
            }
        }
        if let Some(i) = self.cache.iter().position(|(b, _)| b.as_slice() == value) {
            self.hit = i;
            return self.cache[i].1;
        }
        let fp = fp_key.fingerprint_bytes(value);
        if self.probes.len() < MAX_PROBED_KEYS {
            self.probes
                .entry(fp)
                .or_insert_with(|| crate::keysearch::probes(fp_key, fp, value));
        }
        if self.cache.len() < FP_CACHE {
            self.cache
                .push((zeroize::Zeroizing::new(value.to_vec()), fp));
        } else {
            let (bytes, slot) = &mut self.cache[self.evict];
            bytes.zeroize();
            bytes.extend_from_slice(value);
            *slot = fp;
            self.evict = (self.evict + 1) % FP_CACHE;
        }
        fp
    }

    /// Fingerprint of the string a raw JSON literal spells; None if it is not a valid string.
    /// Without escapes the bytes between the quotes are the key and are hashed in place;
    /// otherwise they are decoded by our own unescaper into a wiping buffer.
    fn fingerprint_literal(&mut self, fp_key: &FingerprintKey, raw: &[u8]) -> Option<Fingerprint> {
        let body = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if !body.contains(&b'\\') {
            return Some(self.fingerprint(fp_key, body));
        }
        let mut buf = Zeroizing::new(Vec::new());
        crate::secret::json_unescape_into(body, &mut buf).ok()?;
        Some(self.fingerprint(fp_key, &buf))
    }

    /// Applies one transaction: its `Interface` row changes, then the keys in its comment.
    fn apply<'a>(
        &mut self,
        fp_key: &FingerprintKey,
        date: Option<i64>,
        is_diff: bool,
        rows: impl Iterator<Item = RowChange<'a>>,
        comment: Option<&str>,
    ) {
        self.counted.clear();
        for change in rows {
            let uuid = RowKey::of(change.uuid);
            let Some(row) = change.row else {
                self.rows.remove(&uuid);
                continue;
            };
            let new = row
                .options
                .map(|first| first.and_then(|v| self.fingerprint_literal(fp_key, v)));
            let entry = self.rows.entry(uuid).or_insert((None, None));
            if let Some(n) = row.name {
                let n = sanitize::bounded(n, sanitize::MAX_NAME);
                if entry.0.as_deref() != Some(n.as_ref()) {
                    entry.0 = Some(n.into_owned());
                }
            }
            if let Some(new) = new {
                entry.1 = if is_diff {
                    // Map diff: the same pair again removes it, another value replaces it.
                    match (entry.1, new) {
                        (Some(old), Some(n)) if old == n => None,
                        (old, None) => old,
                        (_, Some(n)) => Some(n),
                    }
                } else {
                    new
                };
                if let Some(fp) = new {
                    let name = entry.0.as_deref();
                    seen(&mut self.keys, &mut self.counted, fp, name, date, true);
                }
            }
        }
        if let Some(c) = comment {
            for k in comment::comment_keys(c) {
                let fp = self.fingerprint(fp_key, k.value.as_bytes());
                let iface = k.interface.as_deref();
                seen(&mut self.keys, &mut self.counted, fp, iface, date, false);
            }
        }
    }

    /// The record just applied spans `offset..next`: it is the last record of the keys it held.
    fn mark(&mut self, offset: u64, next: u64) {
        for fp in self.counted.drain(..) {
            if let Some(k) = self.keys.get_mut(&fp) {
                k.last_record = Some((offset, next - offset));
            }
        }
    }

    fn finish(
        self,
        records: usize,
        bytes: u64,
        schema: Option<String>,
        damage: Option<Damage>,
    ) -> Scan {
        let current: BTreeSet<Fingerprint> = self.rows.values().filter_map(|(_, fp)| *fp).collect();
        let mut keys: Vec<KeyHistory> = self.keys.into_values().collect();
        for k in &mut keys {
            k.current = current.contains(&k.fingerprint);
        }
        keys.sort_by_key(|k| (k.first_ms, k.fingerprint));
        Scan {
            probes: self.probes.into_values().flatten().collect(),
            records,
            bytes,
            schema,
            keys,
            damage,
        }
    }
}

/// Why a record ends the scan although its SHA-1 is right.
fn record_damage(offset: u64, index: usize, reason: &str) -> Damage {
    Damage {
        offset,
        record: index,
        reason: reason.into(),
    }
}

/// The schema name of record 0.
fn schema_of(body: &[u8]) -> Result<Option<String>, &'static str> {
    serde_json::from_slice::<SchemaRecord>(body)
        .map(|s| s.name)
        .map_err(|_| "the first record is not a JSON schema")
}

const NOT_AN_OBJECT: &str = "a transaction record is not a JSON object";

/// Whether a transaction record can change a key at all; the others are only checked to be an
/// object (their SHA-1 was verified).
fn relevant(body: &[u8]) -> Result<bool, &'static str> {
    // Searchers built once: building one costs about as much as searching a small record.
    static PSK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"psk"));
    static IFACE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"Interface\""));
    let relevant = PSK.find(body).is_some() || IFACE.find(body).is_some();
    if !relevant && !looks_like_object(body) {
        return Err(NOT_AN_OBJECT);
    }
    Ok(relevant)
}

/// Applies a transaction record with the full decoder.
fn apply_decoded(
    replay: &mut Replay,
    body: &[u8],
    fp_key: &FingerprintKey,
) -> Result<(), &'static str> {
    match serde_json::from_slice::<TxnRecord>(body) {
        Ok(txn) => {
            // The comment is raw JSON text, decoded by our own unescaper (it carries keys).
            let comment = txn
                .comment
                .and_then(|c| crate::secret::json_string_literal(c.get().as_bytes()).ok());
            let rows = RowChange::of_record(&txn);
            let c = comment.as_ref().map(|c| c.as_str());
            replay.apply(fp_key, txn.date, txn.is_diff, rows, c);
            Ok(())
        }
        // serde's message could quote the input: report only its category.
        Err(e) => Err(match e.classify() {
            serde_json::error::Category::Data => "a transaction record has an unexpected shape",
            _ => "a transaction record is not valid JSON",
        }),
    }
}

/// Classifies the records of a batch (on the hasher's thread, after their SHA-1 is checked):
/// irrelevant, read by [`fast`]'s scanner, or left to the full decoder.
fn classify_batch(b: &mut pipeline::Batch) {
    let upto = b.bad.unwrap_or(b.records.len());
    for rec in &b.records[..upto] {
        let body = &b.buf[rec.start..rec.end];
        // Record 0 is the schema, read by the main thread: a placeholder keeps the order.
        let relevant = if rec.index == 0 {
            Ok(false)
        } else {
            relevant(body)
        };
        b.scans.push(body, relevant);
    }
}

/// Applies a transaction record as its class says: the fast way when the scanner read it, with
/// the full decoder otherwise. Adds the spans (within `body`) that held key bytes to `keys`.
fn apply_class(
    replay: &mut Replay,
    class: fast::Class,
    rows: &[fast::Row],
    body: &[u8],
    fp_key: &FingerprintKey,
    keys: &mut Vec<(usize, usize)>,
) -> Result<(), &'static str> {
    let (date, is_diff, comment, rows) = match class {
        fast::Class::Inert => return Ok(()),
        fast::Class::NotObject => return Err(NOT_AN_OBJECT),
        fast::Class::Full => {
            keys.push((0, body.len()));
            return apply_decoded(replay, body, fp_key);
        }
        fast::Class::Fast {
            date,
            is_diff,
            comment,
            rows: (first, end),
        } => (date, is_diff, comment, &rows[first..end]),
    };
    // The scanner accepted only printable ASCII, so every span is a str.
    let text = |(s, e): fast::Span| std::str::from_utf8(&body[s..e]).unwrap_or_default();
    let changes = rows.iter().map(|r| RowChange {
        uuid: &body[r.uuid.0..r.uuid.1],
        row: (!r.deleted).then(|| RowCols {
            name: r.name.map(text),
            // The value with its quotes: raw JSON text, as the full decoder gives it.
            options: r.options.then(|| r.psk.map(|(s, e)| &body[s - 1..e + 1])),
        }),
    });
    replay.apply(fp_key, date, is_diff, changes, comment.map(text));
    keys.extend(rows.iter().filter_map(|r| r.psk));
    keys.extend(comment);
    Ok(())
}

/// Reads a whole log from `src`: framed and scanned on this thread, SHA-1 verified on a second
/// one (see [`pipeline`]), key-bearing fields found by [`fast`]'s scanner. Gives exactly what
/// [`scan_reader_reference`] gives.
pub fn scan_reader<R: std::io::Read>(
    src: R,
    size: Option<u64>,
    max_record: usize,
    fp_key: &FingerprintKey,
) -> Result<Scan, ReadError> {
    let mut replay = Replay::default();
    let (mut schema, mut records, mut bytes, mut damage) = (None, 0, 0, None);
    pipeline::run(src, size, max_record, classify_batch, |b| {
        for (i, rec) in b.records.iter().enumerate() {
            if b.bad == Some(i) {
                let why = "SHA-1 mismatch: the record is corrupt";
                damage = Some(record_damage(rec.offset, rec.index, why));
                bytes = rec.next_offset;
                return false;
            }
            records += 1;
            bytes = rec.next_offset;
            let body = &b.buf[rec.start..rec.end];
            let mut spans = std::mem::take(&mut b.keys);
            let from = spans.len();
            let used = if rec.index == 0 {
                schema_of(body).map(|s| schema = s)
            } else {
                let rows = &b.scans.txn.rows;
                apply_class(
                    &mut replay,
                    b.scans.class[i],
                    rows,
                    body,
                    fp_key,
                    &mut spans,
                )
            };
            replay.mark(rec.offset, rec.next_offset);
            for s in &mut spans[from..] {
                *s = (rec.start + s.0, rec.start + s.1);
            }
            b.keys = spans;
            if let Err(why) = used {
                damage = Some(record_damage(rec.offset, rec.index, why));
                return false;
            }
        }
        match &b.stop {
            Some(pipeline::Stop::End { offset }) => bytes = *offset,
            Some(pipeline::Stop::Damage { damage: d, offset }) => {
                damage = Some(d.clone());
                bytes = *offset;
            }
            None => {}
        }
        true
    })?;
    Ok(replay.finish(records, bytes, schema, damage))
}

/// Reads and verifies every record (framing and SHA-1, through the same pipeline as
/// [`scan_reader`]) without looking inside any: the floor of benches/scan-db. Returns the number
/// of records verified.
#[doc(hidden)]
pub fn verify_records<R: std::io::Read>(
    src: R,
    size: Option<u64>,
    max_record: usize,
) -> Result<usize, ReadError> {
    let mut n = 0;
    pipeline::run(
        src,
        size,
        max_record,
        |_| {},
        |b| {
            n += b.bad.unwrap_or(b.records.len());
            b.bad.is_none()
        },
    )?;
    Ok(n)
}

/// The reference reader: one record at a time through [`LogReader`], every record that can
/// carry a key through the full decoder. Kept as the oracle of the differential test of
/// [`scan_reader`].
#[doc(hidden)]
pub fn scan_reader_reference<R: std::io::Read>(
    src: R,
    size: Option<u64>,
    max_record: usize,
    fp_key: &FingerprintKey,
) -> Result<Scan, ReadError> {
    let mut reader = LogReader::new(src, size, max_record);
    let mut replay = Replay::default();
    let mut schema = None;
    let mut records = 0;
    let damage = loop {
        let rec = match reader.next_record()? {
            Next::Record(r) => r,
            Next::End => break None,
            Next::Damaged(d) => break Some(d),
        };
        let (index, offset) = (rec.index, rec.offset);
        records += 1;
        let used = if index == 0 {
            schema_of(rec.body).map(|s| schema = s)
        } else {
            match relevant(rec.body) {
                Ok(true) => apply_decoded(&mut replay, rec.body, fp_key),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if let Err(why) = used {
            break Some(record_damage(offset, index, why));
        }
        replay.mark(offset, reader.offset());
        reader.wipe_last();
    };
    Ok(replay.finish(records, reader.offset(), schema, damage))
}

/// A cheap shape check for records that are not decoded: `{ ... }` with optional whitespace.
fn looks_like_object(body: &[u8]) -> bool {
    let t = body.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

/// Scans the file at `path` (read-only; safe on a live database and on a copy).
pub fn scan_file(
    path: &Path,
    max_record: usize,
    fp_key: &FingerprintKey,
) -> Result<Scan, ScanError> {
    // Not followed if it is a link, and only a regular file: a FIFO, device or directory is a
    // clear error, never a hang or an endless read.
    let (file, meta) = crate::nodefs::open_user_file(path).map_err(|e| ScanError::Open {
        path: path.display().to_string(),
        hint: match &e {
            crate::nodefs::FsError::Absent { .. } => {
                "check the path; on a node it is /var/run/antrea/openvswitch/conf.db"
            }
            crate::nodefs::FsError::WrongType { .. } => {
                "give the path of a conf.db file itself (copy a stream to a file first)"
            }
            e if e.is_permission_denied() => "run as root",
            _ => "check the path",
        },
        source: e,
    })?;
    let size = Some(meta.size);
    scan_reader(file, size, max_record, fp_key).map_err(|source| ScanError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn iso_ms(ms: Option<i64>) -> serde_json::Value {
    match ms {
        Some(ms) => json!(ms),
        None => serde_json::Value::Null,
    }
}

/// The `data` section of a scan-db report: one entry per key, field `fingerprint`.
pub fn scan_data(scan: &Scan) -> serde_json::Value {
    json!({
        "records": scan.records,
        "bytes_read": scan.bytes,
        "schema": scan.schema,
        "complete": scan.damage.is_none(),
        "keys": scan.keys.iter().map(|k| json!({
            "fingerprint": k.fingerprint.to_string(),
            "current": k.current,
            "interfaces": k.interfaces,
            "interfaces_truncated": k.interfaces_truncated,
            "first_seen_ms": iso_ms(k.first_ms),
            "last_seen_ms": iso_ms(k.last_ms),
            "records": k.records,
            "in_rows": k.in_rows,
            "in_comments": k.in_comments,
        })).collect::<Vec<_>>(),
    })
}

/// Turns a scan into findings.
pub fn findings(path: &Path, scan: &Scan, report: &mut Report) {
    let old: Vec<&KeyHistory> = scan.old_keys().collect();
    if !old.is_empty() {
        // Where: the newest record that still holds an old key (each key's own is in details).
        let newest = old.iter().filter_map(|k| k.last_record).max();
        let at = |k: &KeyHistory| {
            k.last_record.map(|(o, l)| json!({"fingerprint": k.fingerprint.to_string(), "byte_offset": o, "byte_length": l}))
        };
        report.push(
            Finding::new(Code::PskHistoryOnDisk, Severity::High, Subject::path(path))
                .located_span(path.display().to_string(), newest)
                .detail("old_key_records", json!(old.iter().filter_map(|k| at(k)).collect::<Vec<_>>()))
                .observed(format!("{} key(s) no longer in use are still in the file", old.len()))
                .expected("only the current key (after compaction)")
                .remediation("compact the database so the old records are rewritten away: psk-guard fix (runs ovsdb-server/compact and verifies); then treat the old keys as exposed if the file was readable")
                .detail("old_fingerprints", json!(old.iter().map(|k| k.fingerprint.to_string()).collect::<Vec<_>>()))
                .detail("records", scan.records),
        );
    }
    if let Some(d) = &scan.damage {
        report.push(
            Finding::new(Code::ConfDbLogDamaged, Severity::Medium, Subject::path(path))
                .located(path.display().to_string(), Some(d.offset))
                .observed(format!("record {} at byte {}: {}", d.record, d.offset, d.reason))
                .expected("every record intact")
                .remediation("work on a copy; records before the damage were scanned, the rest were not. ovsdb-server itself ignores a damaged tail and truncates it on the next write")
                .detail("offset", d.offset)
                .detail("record", d.record),
        );
        report.not_checked(
            format!("conf.db history after byte {}", d.offset),
            d.reason.clone(),
        );
    }
}

/// A key's findings (subject kind `key`, located in conf.db) get the span of the newest conf.db
/// record that holds the key, when the scan saw it there: the region a SARIF result points at.
fn locate_keys(scan: &Scan, report: &mut Report) {
    for f in report
        .findings
        .iter_mut()
        .filter(|f| f.subject.kind == "key")
    {
        let Some(loc) = f.location.as_mut().filter(|l| l.byte_offset.is_none()) else {
            continue;
        };
        let held = scan
            .keys
            .iter()
            .find(|k| k.fingerprint.to_string() == f.subject.name)
            .and_then(|k| k.last_record);
        if let Some((offset, length)) = held {
            loc.byte_offset = Some(offset);
            loc.byte_length = Some(length);
        }
    }
}

/// The history part of `check`, started: scans conf.db on a blocking thread (alongside the OVSDB
/// query); [`finish_history`] joins it.
pub fn start_history(
    path: &Path,
    fp_key: &FingerprintKey,
) -> tokio::task::JoinHandle<Result<Scan, ScanError>> {
    let (p, k) = (path.to_owned(), fp_key.clone());
    tokio::task::spawn_blocking(move || scan_file(&p, log::DEFAULT_MAX_RECORD, &k))
}

/// Joins the scan [`start_history`] started and adds its findings. Returns the search probes of
/// every key the file holds (for the log scan).
pub async fn finish_history(
    path: &Path,
    task: tokio::task::JoinHandle<Result<Scan, ScanError>>,
    report: &mut Report,
) -> Vec<crate::keysearch::Probe> {
    match task.await {
        Ok(Ok(mut scan)) => {
            findings(path, &scan, report);
            locate_keys(&scan, report);
            return std::mem::take(&mut scan.probes);
        }
        Ok(Err(ScanError::Open { source, .. })) if source.is_absent() => {
            report.not_checked("conf.db history", format!("{} is absent", path.display()));
        }
        Ok(Err(e)) => report.not_checked("conf.db history", e.to_string()),
        Err(_) => report.not_checked("conf.db history", "the scan task failed"),
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::RowKey;

    #[test]
    fn row_keys_equal_only_for_equal_uuid_text() {
        let u = "6e6312dd-8342-44ad-898e-37c0fe8a31f1";
        assert_eq!(
            RowKey::of(u.as_bytes()),
            RowKey::Uuid(0x6e6312dd_8342_44ad_898e_37c0fe8a31f1)
        );
        // Other spellings of the same bits are other strings, so other rows.
        for other in [
            "6E6312DD-8342-44AD-898E-37C0FE8A31F1",
            "6e6312dd834244ad898e37c0fe8a31f1",
            "6e6312dd-8342-44ad-898e-37c0fe8a31f",
            "6e6312dd-8342-44ad-898e-37c0fe8a31f1 ",
            "6e6312dd-8342-44ad-898e-37c0fe8a31fg",
            "6e6312dd-8342-44ad-898e-37c0fE8a31f1",
            "6e6312dd-8342-44ad-898e+37c0fe8a31f1",
            "6e6312dd-834244ad--898e-37c0fe8a31f1",
            "u1",
        ] {
            let k = RowKey::of(other.as_bytes());
            assert_eq!(k, RowKey::Other(other.as_bytes().into()), "{other}");
            assert_ne!(k, RowKey::of(u.as_bytes()));
        }
    }

    #[test]
    fn hex_words_read_as_digit_by_digit() {
        let naive = |w: [u8; 8]| {
            w.iter().try_fold(0u32, |v, &c| {
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => return None,
                };
                Some((v << 4) | u32::from(d))
            })
        };
        // Every byte value at every position, among digits and letters.
        for base in [*b"0123abcd", *b"fedc9876", *b"00000000", *b"ffffffff"] {
            for pos in 0..8 {
                for c in 0..=255u8 {
                    let mut w = base;
                    w[pos] = c;
                    assert_eq!(super::hex8(w), naive(w), "{w:?}");
                }
            }
        }
    }
}
