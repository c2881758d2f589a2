//! The one place a pre-shared key lives.
//!
//! [`Psk`] owns the bytes of a key in a buffer that is wiped when dropped. It has no `Deref`, no
//! `Clone`, no `Serialize`, and its `Debug` prints a redaction: the only way to the bytes is
//! [`Psk::expose_secret`], so `grep expose_secret` lists every use. Everything that has to talk about
//! a key outside this module does so through a [`Fingerprint`] (a truncated HMAC-SHA256 keyed by a
//! [`FingerprintKey`]), or through the non-secret verdict of [`assess`].

use std::fmt;

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// A pre-shared key. Wiped on drop; never printed.
pub struct Psk {
    inner: Zeroizing<String>,
}

impl Psk {
    /// Takes ownership of `value` without copying its bytes.
    pub fn new(value: String) -> Self {
        Psk {
            inner: Zeroizing::new(value),
        }
    }

    /// Moves the bytes out of a string the caller owns, leaving it empty.
    pub fn take_from(value: &mut String) -> Self {
        Psk::new(std::mem::take(value))
    }

    /// The key's bytes. Every call site is a place where the key is used; keep them few.
    pub fn expose_secret(&self) -> &str {
        self.inner.as_str()
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// An explicit copy (the type is deliberately not `Clone`); the copy is wiped on drop too.
    pub fn duplicate(&self) -> Psk {
        let mut s = String::with_capacity(self.inner.len());
        s.push_str(self.expose_secret());
        Psk::new(s)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk([REDACTED {} bytes])", self.inner.len())
    }
}

/// Length of a fingerprint in bytes before hex encoding (64 bits).
pub const FINGERPRINT_BYTES: usize = 8;

/// The HMAC key under which fingerprints are computed. Random per run unless the user gives one, so
/// that two runs can be compared only when they share it.
#[derive(Clone)]
pub struct FingerprintKey {
    // Shared, not copied, when the key moves into a blocking task.
    key: std::sync::Arc<Zeroizing<Vec<u8>>>,
    origin: SaltOrigin,
}

/// Where the fingerprint key came from (reported in outputs; the key itself never is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaltOrigin {
    RandomPerRun,
    Given,
}

impl SaltOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            SaltOrigin::RandomPerRun => "random-per-run",
            SaltOrigin::Given => "given",
        }
    }
}

impl FingerprintKey {
    /// 32 bytes from the operating system's CSPRNG.
    pub fn random() -> Result<Self, rand::rand_core::OsError> {
        let mut key = Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.try_fill_bytes(&mut key)?;
        Ok(FingerprintKey {
            key: std::sync::Arc::new(key),
            origin: SaltOrigin::RandomPerRun,
        })
    }

    /// A salt the user chose (`--fingerprint-salt`), taken as its UTF-8 bytes.
    pub fn given(salt: &str) -> Self {
        FingerprintKey {
            key: std::sync::Arc::new(Zeroizing::new(salt.as_bytes().to_vec())),
            origin: SaltOrigin::Given,
        }
    }

    pub fn origin(&self) -> SaltOrigin {
        self.origin
    }

    /// Fingerprint of a key.
    pub fn fingerprint(&self, psk: &Psk) -> Fingerprint {
        self.fingerprint_bytes(psk.expose_secret().as_bytes())
    }

    /// Fingerprint of raw key bytes that are not (yet) held in a [`Psk`], such as a slice of a
    /// log record being scanned in place.
    pub fn fingerprint_bytes(&self, bytes: &[u8]) -> Fingerprint {
        let fp = self.hmac(bytes);
        // The HMAC state (with the key's bytes in its block buffer) lived in `hmac`'s frame.
        crate::hardening::scrub_stack();
        fp
    }

    #[inline(never)]
    fn hmac(&self, bytes: &[u8]) -> Fingerprint {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(bytes);
        let out = mac.finalize().into_bytes();
        let mut fp = [0u8; FINGERPRINT_BYTES];
        fp.copy_from_slice(&out[..FINGERPRINT_BYTES]);
        Fingerprint(fp)
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FingerprintKey({})", self.origin.as_str())
    }
}

/// A keyed, truncated digest of a key: safe to print, compare and store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; FINGERPRINT_BYTES]);

impl Fingerprint {
    /// The fingerprint as a number (for keyed hashing; see `keysearch`).
    pub fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    pub fn parse(s: &str) -> Option<Fingerprint> {
        let hex_part = s.strip_prefix("hmac-sha256:").unwrap_or(s);
        let bytes = hex::decode(hex_part).ok()?;
        let arr: [u8; FINGERPRINT_BYTES] = bytes.try_into().ok()?;
        Some(Fingerprint(arr))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hmac-sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Keys shipped as examples or defaults, compared case-insensitively. `changeme` is what Antrea's
/// Helm chart and sample manifest ship.
pub const KNOWN_DEFAULTS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "password",
    "passw0rd",
    "secret",
    "psk",
    "ipsec",
    "antrea",
    "antrea-ipsec",
    "test",
    "testing",
    "default",
    "admin",
    "example",
    "123456",
    "12345678",
    "1234567890",
    "qwerty",
];

/// Shortest key not reported as too short, in bytes.
pub const MIN_PSK_LEN: usize = 16;
/// Least estimated entropy not reported as low, in bits.
pub const MIN_ENTROPY_BITS: f64 = 64.0;

/// What is wrong with a key, if anything. Holds no key bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Strength {
    pub is_default: bool,
    pub len: usize,
    pub entropy_bits: f64,
}

impl Strength {
    pub fn too_short(&self) -> bool {
        self.len < MIN_PSK_LEN
    }
    pub fn low_entropy(&self) -> bool {
        self.entropy_bits < MIN_ENTROPY_BITS
    }
    pub fn is_weak(&self) -> bool {
        self.is_default || self.too_short() || self.low_entropy()
    }
}

/// Judges a key's strength: a known default, its length, and an entropy estimate (the Shannon
/// entropy of its characters times its length, a generous upper bound for human-chosen keys).
pub fn assess(psk: &Psk) -> Strength {
    assess_bytes(psk.expose_secret().as_bytes())
}

/// Shortest key psk-guard accepts from an operator as a NEW key (`rotate --psk-file`, and
/// `push-key`'s environment variable): what it generates itself is 43 characters.
pub const MIN_NEW_KEY_LEN: usize = 32;

/// The one rule for a key handed to psk-guard to install (`rotate --psk-file`, `push-key`): no
/// quote, backslash or control character (strongSwan's ipsec.secrets cannot carry them safely),
/// not a known default, not low in entropy, and at least [`MIN_NEW_KEY_LEN`] bytes. `Err` says
/// why, without any key byte; the caller names where the key came from.
pub fn check_new_key(psk: &Psk) -> Result<(), String> {
    if psk
        .expose_secret()
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err("the key contains a quote, backslash or control character, which strongSwan's ipsec.secrets cannot carry safely".into());
    }
    let s = assess(psk);
    if s.is_weak() || s.len < MIN_NEW_KEY_LEN {
        return Err(format!(
            "the key is too weak ({} bytes, about {:.0} bits of entropy{}); use at least {MIN_NEW_KEY_LEN} random characters, or let psk-guard generate one",
            s.len,
            s.entropy_bits,
            if s.is_default { ", a well-known default" } else { "" }
        ));
    }
    Ok(())
}

pub fn assess_bytes(key: &[u8]) -> Strength {
    let is_default = KNOWN_DEFAULTS
        .iter()
        .any(|d| d.as_bytes().eq_ignore_ascii_case(key));
    let mut counts = [0u32; 256];
    for &b in key {
        counts[b as usize] += 1;
    }
    let n = key.len() as f64;
    let per_char: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    counts.zeroize();
    Strength {
        is_default,
        len: key.len(),
        entropy_bits: if key.is_empty() { 0.0 } else { per_char * n },
    }
}

/// Why a JSON string literal was refused. Never carries any of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonStrError {
    #[error("not a JSON string literal")]
    NotAString,
    #[error("a JSON string holds a raw control character")]
    Control,
    #[error("a JSON string holds an invalid escape")]
    BadEscape,
    #[error("a JSON string holds an unpaired UTF-16 surrogate")]
    Surrogate,
    #[error("a JSON string is not valid UTF-8")]
    Utf8,
}

/// Grows `v` to hold at least `want` bytes in total, wiping the old buffer if it has to move.
pub fn reserve_wiping(v: &mut Vec<u8>, want: usize) {
    if v.capacity() < want {
        let mut n = Vec::with_capacity(want);
        n.extend_from_slice(v);
        v.zeroize();
        *v = n;
    }
}

fn hex4(b: &[u8]) -> Result<u32, JsonStrError> {
    let d = b.get(..4).ok_or(JsonStrError::BadEscape)?;
    d.iter().try_fold(0u32, |acc, &c| {
        let v = (c as char).to_digit(16).ok_or(JsonStrError::BadEscape)?;
        Ok(acc * 16 + v)
    })
}

/// Decodes one `\uXXXX` escape (and the low half of a surrogate pair that must follow a high
/// half) starting after the `\u`; returns the character and how many input bytes it used.
fn unicode_escape(rest: &[u8]) -> Result<(char, usize), JsonStrError> {
    let hi = hex4(rest)?;
    match hi {
        0xD800..=0xDBFF => {
            if rest.get(4..6) != Some(b"\\u") {
                return Err(JsonStrError::Surrogate);
            }
            let lo = hex4(&rest[6..])?;
            if !(0xDC00..=0xDFFF).contains(&lo) {
                return Err(JsonStrError::Surrogate);
            }
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            Ok((char::from_u32(c).ok_or(JsonStrError::Surrogate)?, 10))
        }
        0xDC00..=0xDFFF => Err(JsonStrError::Surrogate),
        c => Ok((char::from_u32(c).ok_or(JsonStrError::BadEscape)?, 4)),
    }
}

/// Appends the decoded text of a JSON string body (the bytes between the quotes, RFC 8259 §7) to
/// `out`, the caller's wiping buffer. Decoding never makes text longer, so `out` is grown (with
/// the old buffer wiped) once, before anything is written, and no other copy of the text is
/// made: this is how key-bearing strings are read from raw JSON bytes instead of through a
/// JSON library's unwiped scratch buffer. On error `out` is restored to its old length and the
/// bytes written are wiped.
pub fn json_unescape_into(body: &[u8], out: &mut Vec<u8>) -> Result<(), JsonStrError> {
    let start = out.len();
    reserve_wiping(out, start + body.len());
    let r = unescape_body(body, out).and_then(|()| {
        std::str::from_utf8(&out[start..])
            .map(|_| ())
            .map_err(|_| JsonStrError::Utf8)
    });
    if r.is_err() {
        out[start..].zeroize();
        out.truncate(start);
    }
    r
}

fn unescape_body(body: &[u8], out: &mut Vec<u8>) -> Result<(), JsonStrError> {
    let mut i = 0;
    while i < body.len() {
        let run = body[i..]
            .iter()
            .position(|&b| b == b'\\' || b == b'"' || b < 0x20)
            .unwrap_or(body.len() - i);
        out.extend_from_slice(&body[i..i + run]);
        i += run;
        let Some(&b) = body.get(i) else { break };
        if b != b'\\' {
            return Err(if b == b'"' {
                JsonStrError::NotAString
            } else {
                JsonStrError::Control
            });
        }
        let esc = *body.get(i + 1).ok_or(JsonStrError::BadEscape)?;
        i += 2;
        let simple = match esc {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (c, used) = unicode_escape(&body[i..])?;
                let mut enc = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut enc).as_bytes());
                enc.zeroize();
                i += used;
                continue;
            }
            _ => return Err(JsonStrError::BadEscape),
        };
        out.push(simple);
    }
    Ok(())
}

/// Decodes a whole JSON string literal (with its quotes) into a wiping string.
pub fn json_string_literal(literal: &[u8]) -> Result<Zeroizing<String>, JsonStrError> {
    let body = literal
        .strip_prefix(b"\"")
        .and_then(|b| b.strip_suffix(b"\""))
        .ok_or(JsonStrError::NotAString)?;
    let mut buf = Zeroizing::new(Vec::new());
    json_unescape_into(body, &mut buf)?;
    let bytes = std::mem::take(&mut *buf);
    // Validated above: the conversion moves the buffer, it does not copy it.
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(JsonStrError::Utf8)
        }
    }
}

impl Psk {
    /// A key read straight from a JSON string literal (quotes included), with no unwiped copy.
    pub fn from_json_literal(literal: &[u8]) -> Result<Psk, JsonStrError> {
        let mut s = json_string_literal(literal)?;
        Ok(Psk::take_from(&mut s))
    }
}

/// The bytes a JSON string literal spells (`raw`, quotes included, as serde_json's `RawValue`
/// or a scanner found it), decoded by [`json_unescape_into`] into a buffer that is wiped on drop;
/// `None` when `raw` is not a valid JSON string.
pub fn json_string_bytes(raw: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut out = Zeroizing::new(Vec::new());
    json_unescape_into(inner, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Result<String, JsonStrError> {
        json_string_literal(s.as_bytes()).map(|z| z.as_str().to_owned())
    }

    #[test]
    fn json_unescape_matches_serde_json() {
        for s in [
            r#""""#,
            r#""plain""#,
            r#""k\"ey with space""#,
            r#""a\\b\/c\b\f\n\r\t""#,
            r#""\u00e9\u2713 \u0000""#,
            r#""\ud83d\ude00 pair""#,
            r#""\uD83D\uDE00 upper""#,
            "\"raw utf-8 \u{e9}\u{1F600}\"",
        ] {
            let ours = lit(s).unwrap();
            let theirs: String = serde_json::from_str(s).unwrap();
            assert_eq!(ours, theirs, "{s}");
        }
    }

    #[test]
    fn json_unescape_rejects_what_json_rejects() {
        for (s, e) in [
            ("plain", JsonStrError::NotAString),
            (r#""a"b""#, JsonStrError::NotAString),
            ("\"tab\there\"", JsonStrError::Control),
            (r#""\x41""#, JsonStrError::BadEscape),
            (r#""\u12""#, JsonStrError::BadEscape),
            (r#""\u12G4""#, JsonStrError::BadEscape),
            (r#""end\""#, JsonStrError::BadEscape),
            (r#""\ud83d alone""#, JsonStrError::Surrogate),
            (r#""\ude00 low first""#, JsonStrError::Surrogate),
            (r#""\ud83d\u0041""#, JsonStrError::Surrogate),
        ] {
            assert_eq!(lit(s), Err(e), "{s}");
            assert!(serde_json::from_str::<String>(s).is_err(), "{s}");
        }
        assert!(matches!(
            json_string_literal(b"\"\xff\""),
            Err(JsonStrError::Utf8)
        ));
    }

    #[test]
    fn json_unescape_into_appends_and_restores_on_error() {
        let mut out = b"ab".to_vec();
        json_unescape_into(br"c\nd", &mut out).unwrap();
        assert_eq!(out, b"abc\nd");
        assert!(json_unescape_into(br"xyz\q", &mut out).is_err());
        assert_eq!(out, b"abc\nd");
        let p = Psk::from_json_literal(br#""k\u0065y""#).unwrap();
        assert_eq!(p.expose_secret(), "key");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = Psk::new("s3cr3t-value-xyz".to_string());
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cr3t"));
        assert!(dbg.contains("REDACTED"));
    }

    #[test]
    fn fingerprints_are_keyed() {
        let p = Psk::new("some-key".into());
        let a = FingerprintKey::given("salt-a");
        let b = FingerprintKey::given("salt-b");
        assert_eq!(a.fingerprint(&p), a.fingerprint(&p));
        assert_ne!(a.fingerprint(&p), b.fingerprint(&p));
        let s = a.fingerprint(&p).to_string();
        assert_eq!(s.len(), "hmac-sha256:".len() + 16);
        assert_eq!(Fingerprint::parse(&s), Some(a.fingerprint(&p)));
    }

    #[test]
    fn json_strings_decode_like_serde_json() {
        for lit in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u0041\u00e9\u20ac\ud83d\ude00""#,
            r#""""#,
        ] {
            let want: String = serde_json::from_str(lit).unwrap();
            let got = json_string_bytes(lit.as_bytes()).unwrap();
            assert_eq!(got.as_slice(), want.as_bytes(), "{lit}");
        }
        for bad in [
            r#""\ud83d""#,
            r#""\x""#,
            r#""\u12""#,
            "x",
            r#""a"b""#,
            "\"\u{1}\"",
        ] {
            assert!(json_string_bytes(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn strength() {
        assert!(assess_bytes(b"changeme").is_default);
        assert!(assess_bytes(b"CHANGEME").is_default);
        assert!(assess_bytes(b"short").too_short());
        assert!(assess_bytes(b"aaaaaaaaaaaaaaaaaaaaaaaa").low_entropy());
        let good = assess_bytes(b"q8Zr2LkVn0xWf7TyPb3Hs9Jd1Mc6Ge4A");
        assert!(!good.is_weak(), "{good:?}");
    }
}
