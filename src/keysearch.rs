//! Finding a key in bytes without holding the key.
//!
//! A multi-pattern matcher such as aho-corasick or `memchr::memmem::Finder` copies its patterns
//! into its own tables, which cannot be wiped. So the log scan never hands key bytes to a matcher.
//! Instead each key is turned, once and while it is still held in its wiped buffer, into
//! [`Probe`]s: for each form the key may take in a log (raw, JSON-escaped, Go-JSON-escaped and
//! JSON-escaped twice), the form's length, a Rabin–Karp hash of it (polynomial over the Mersenne
//! prime 2^61-1 with a secret base derived from the run's fingerprint key) and its keyed
//! fingerprint. The scan rolls the hash over the data (one multiply per byte and distinct length),
//! and only where the hash matches computes the fingerprint of that window and compares it with
//! the probe's: a hit is an exact match (up to an HMAC collision), a hash collision costs one HMAC.
//! Neither the hash nor the fingerprint is a copy of the key. The escaped forms are built in
//! buffers reserved large enough never to reallocate, and wiped when dropped.

use std::fmt;

use zeroize::Zeroizing;

use crate::secret::{Fingerprint, FingerprintKey};

const P: u64 = (1 << 61) - 1;

/// Keys shorter than this are not searched for: they would match ordinary text.
pub const MIN_SEARCH_LEN: usize = 6;

fn reduce(x: u128) -> u64 {
    let r = ((x >> 61) as u64) + ((x as u64) & P);
    let r = (r >> 61) + (r & P);
    if r >= P {
        r - P
    } else {
        r
    }
}

fn mulmod(a: u64, b: u64) -> u64 {
    reduce(a as u128 * b as u128)
}

/// The secret base of the rolling hash, derived from the fingerprint key so that the history
/// scan and the log scan of one run agree without sharing anything else.
fn base(fp_key: &FingerprintKey) -> u64 {
    let fp = fp_key.fingerprint_bytes(b"psk-guard keysearch rolling-hash base v1");
    (1 << 32) + fp.to_u64() % (P - (1 << 33))
}

/// The way a key is written in a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Form {
    Raw,
    /// `"` `\` and control characters escaped (OVS's JSON writer, serde_json, klog's quoting).
    Json,
    /// Also `<` `>` `&` as `\u003c`... (Go's encoding/json default).
    GoJson,
    /// JSON-escaped twice (a JSON request logged inside a JSON log line).
    JsonTwice,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Raw => "raw",
            Form::Json => "json-escaped",
            Form::GoJson => "go-json-escaped",
            Form::JsonTwice => "json-escaped-twice",
        }
    }
}

/// One searchable form of one key. Holds no key bytes.
#[derive(Clone, PartialEq)]
pub struct Probe {
    /// The fingerprint of the key itself (what reports name).
    pub key: Fingerprint,
    pub form: Form,
    len: usize,
    hash: u64,
    /// The fingerprint of the form's bytes, compared with a window's on a hash match.
    verify: Fingerprint,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Probe({} {} {}B)",
            self.key,
            self.form.as_str(),
            self.len
        )
    }
}

fn escape(src: &[u8], go_html: bool) -> Zeroizing<Vec<u8>> {
    // Worst case 6 bytes out per byte in (\u00XX): reserved up front so the buffer never moves
    // (a reallocation would leave an unwiped copy behind).
    let mut out = Zeroizing::new(Vec::with_capacity(src.len() * 6 + 8));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in src {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'<' | b'>' | b'&' if go_html => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out
}

fn hash(base: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |h, &b| reduce(h as u128 * base as u128 + b as u128))
}

/// The probes of one key (its distinct forms). `key` is the key's fingerprint; `bytes` its value,
/// read but not kept. Keys shorter than [`MIN_SEARCH_LEN`] give none.
pub fn probes(fp_key: &FingerprintKey, key: Fingerprint, bytes: &[u8]) -> Vec<Probe> {
    if bytes.len() < MIN_SEARCH_LEN {
        return vec![];
    }
    let b = base(fp_key);
    let json = escape(bytes, false);
    let go = escape(bytes, true);
    let twice = escape(&json, false);
    let mut out: Vec<Probe> = vec![];
    let forms: [(Form, &[u8]); 4] = [
        (Form::Raw, bytes),
        (Form::Json, &json),
        (Form::GoJson, &go),
        (Form::JsonTwice, &twice),
    ];
    for (i, (form, f)) in forms.iter().enumerate() {
        if forms[..i].iter().any(|(_, g)| g == f) {
            continue;
        }
        out.push(Probe {
            key,
            form: *form,
            len: f.len(),
            hash: hash(b, f),
            verify: fp_key.fingerprint_bytes(f),
        });
    }
    crate::hardening::scrub_stack();
    out
}

/// Probes of one length, with the rolling hash's table for the byte leaving the window.
struct Group {
    len: usize,
    /// `c * base^(len-1) mod P` for every byte value `c`.
    leaving: Box<[u64; 256]>,
    /// (hash, index into `Matcher::probes`), sorted.
    hashes: Vec<(u64, usize)>,
}

/// Many probes searched for in one pass per distinct length.
pub struct Matcher {
    base: u64,
    probes: Vec<Probe>,
    groups: Vec<Group>,
    fp_key: FingerprintKey,
}

impl Matcher {
    pub fn new(fp_key: &FingerprintKey, probes: Vec<Probe>) -> Matcher {
        let base = base(fp_key);
        let mut groups: Vec<Group> = vec![];
        for (i, p) in probes.iter().enumerate() {
            let g = match groups.iter_mut().position(|g| g.len == p.len) {
                Some(j) => &mut groups[j],
                None => {
                    let top = (1..p.len).fold(1u64, |acc, _| mulmod(acc, base));
                    let mut leaving = Box::new([0u64; 256]);
                    for (c, slot) in leaving.iter_mut().enumerate() {
                        *slot = mulmod(c as u64, top);
                    }
                    groups.push(Group {
                        len: p.len,
                        leaving,
                        hashes: vec![],
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            g.hashes.push((p.hash, i));
        }
        for g in &mut groups {
            g.hashes.sort_unstable();
        }
        Matcher {
            base,
            probes,
            groups,
            fp_key: fp_key.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// The longest form: how many bytes of the previous chunk a chunked scan keeps in front of
    /// the next one (minus one), so that a key across a chunk boundary is found.
    pub fn max_len(&self) -> usize {
        self.groups.iter().map(|g| g.len).max().unwrap_or(0)
    }

    /// Calls `hit(probe)` for every window of `buf` equal to a probe's form that ends after
    /// `new_from` (windows ending earlier were seen by the previous call).
    pub fn scan(&self, buf: &[u8], new_from: usize, mut hit: impl FnMut(&Probe)) {
        for g in &self.groups {
            if buf.len() < g.len {
                continue;
            }
            let mut h = hash(self.base, &buf[..g.len]);
            let mut end = g.len;
            loop {
                if end > new_from {
                    self.check(g, h, &buf[end - g.len..end], &mut hit);
                }
                if end == buf.len() {
                    break;
                }
                let out = g.leaving[buf[end - g.len] as usize];
                h = if h >= out { h - out } else { h + P - out };
                h = reduce(h as u128 * self.base as u128 + buf[end] as u128);
                end += 1;
            }
        }
    }

    fn check(&self, g: &Group, h: u64, window: &[u8], hit: &mut impl FnMut(&Probe)) {
        let mut i = g.hashes.partition_point(|(x, _)| *x < h);
        let mut fp = None;
        while i < g.hashes.len() && g.hashes[i].0 == h {
            let p = &self.probes[g.hashes[i].1];
            let f = *fp.get_or_insert_with(|| self.fp_key.fingerprint_bytes(window));
            if f == p.verify {
                hit(p);
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(m: &Matcher, data: &[u8]) -> Vec<(Fingerprint, Form)> {
        let mut out = vec![];
        m.scan(data, 0, |p| out.push((p.key, p.form)));
        out
    }

    #[test]
    fn finds_every_form_and_nothing_else() {
        let k = FingerprintKey::given("t");
        let key = b"ab\"cd\\ef<gh";
        let fp = k.fingerprint_bytes(key);
        let ps = probes(&k, fp, key);
        assert_eq!(ps.len(), 4);
        let m = Matcher::new(&k, ps);
        assert_eq!(find(&m, b"xx ab\"cd\\ef<gh yy"), vec![(fp, Form::Raw)]);
        assert_eq!(
            find(&m, br#"{"psk":"ab\"cd\\ef<gh"}"#),
            vec![(fp, Form::Json)]
        );
        assert_eq!(
            find(&m, br#"{"psk":"ab\"cd\\ef\u003cgh"}"#),
            vec![(fp, Form::GoJson)]
        );
        assert_eq!(
            find(&m, br#""{\"psk\":\"ab\\\"cd\\\\ef<gh\"}""#),
            vec![(fp, Form::JsonTwice)]
        );
        assert!(find(&m, b"ab\"cd\\ef<gX ab cd").is_empty());
        assert!(find(&m, b"").is_empty());
    }

    #[test]
    fn plain_keys_have_one_form_and_short_keys_none() {
        let k = FingerprintKey::given("t");
        let key = b"q8Zr2LkVn0xWf7TyPb3Hs9Jd1Mc6Ge4A";
        assert_eq!(probes(&k, k.fingerprint_bytes(key), key).len(), 1);
        assert!(probes(&k, k.fingerprint_bytes(b"abc"), b"abc").is_empty());
    }

    #[test]
    fn chunked_scans_with_overlap_find_a_key_across_the_boundary() {
        let k = FingerprintKey::given("t");
        let key = b"Kq8-boundary-key-0123456789";
        let fp = k.fingerprint_bytes(key);
        let m = Matcher::new(&k, probes(&k, fp, key));
        let mut data = vec![b'.'; 100];
        data.extend_from_slice(key);
        data.extend(vec![b'.'; 100]);
        for split in 90..140 {
            let keep = m.max_len() - 1;
            let mut n = 0;
            m.scan(&data[..split], 0, |_| n += 1);
            let from = split - keep.min(split);
            m.scan(&data[from..], split - from, |_| n += 1);
            assert_eq!(n, 1, "split at {split}");
        }
    }
}
