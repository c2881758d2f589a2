//! The IPsec tunnel interfaces of a node, read from OVSDB in one transaction, and what is wrong
//! with their keys.
//!
//! A tunnel is an interface whose Port carries `external_ids:antrea-type=ipsec-tunnel`, or a
//! geneve/gre/vxlan/stt interface with `options:psk` or `options:remote_name`.
//!
//! The reply is decoded where it arrived, in the client's frame buffer (see
//! [`crate::ovsdb::types::RowSink`]): each row goes straight into a compact [`Tunnel`] or is
//! dropped, and each key is fingerprinted and judged from the frame bytes it is in, which the
//! buffer wipes right after. No key is copied out (only a key written with JSON escapes is decoded
//! into a buffer that is wiped on drop), and only the columns used are asked for.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;
use zeroize::{Zeroize, Zeroizing};

use crate::ovsdb::types::{decode_transact, RowSink};
use crate::ovsdb::{Client, Condition, Operation, Value, VSWITCH_DB};
use crate::report::{Code, Finding, Report, Severity, Subject};
use crate::secret::{assess_bytes, Fingerprint, FingerprintKey, Strength};

pub const TUNNEL_TYPES: &[&str] = &["geneve", "gre", "vxlan", "stt"];

/// What is known of a tunnel's key: no key bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFacts {
    pub fingerprint: Fingerprint,
    pub strength: Strength,
    /// How to find the key in log files without holding it (see [`crate::keysearch`]); shared
    /// by every tunnel carrying the key.
    pub probes: Arc<[crate::keysearch::Probe]>,
}

/// One IPsec tunnel interface. Holds no key, only facts about it.
///
/// Its texts (uuid, name, type, remote IP, peer node) are kept end to end in one allocation: a
/// node can have tens of thousands of tunnels, and five strings apiece doubled their memory.
#[derive(Debug)]
pub struct Tunnel {
    /// uuid, name, kind, remote_ip, peer_node, one after the other.
    text: Box<str>,
    /// Where each of the first four texts ends in `text` (the last ends with it).
    ends: [u32; 4],
    has_remote_ip: bool,
    has_peer_node: bool,
    /// `options:remote_name` is set (certificate authentication).
    pub remote_name: bool,
    /// The Port carries `external_ids:antrea-type=ipsec-tunnel`.
    pub marked: bool,
    /// `options:psk`, fingerprinted and judged.
    pub key: Option<KeyFacts>,
}

impl Tunnel {
    /// A tunnel with these texts; `None` for texts absent from its rows.
    pub fn new(
        uuid: &str,
        name: &str,
        kind: &str,
        remote_ip: Option<&str>,
        peer_node: Option<&str>,
    ) -> Tunnel {
        let parts = [
            uuid,
            name,
            kind,
            remote_ip.unwrap_or(""),
            peer_node.unwrap_or(""),
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 4];
        for (i, p) in parts.iter().enumerate() {
            text.push_str(p);
            if let Some(e) = ends.get_mut(i) {
                // A reply is at most max_message (well under 4 GiB), so every offset fits.
                *e = u32::try_from(text.len()).unwrap_or(u32::MAX);
            }
        }
        Tunnel {
            text: text.into_boxed_str(),
            ends,
            has_remote_ip: remote_ip.is_some(),
            has_peer_node: peer_node.is_some(),
            remote_name: false,
            marked: false,
            key: None,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    /// The Interface row's uuid.
    pub fn uuid(&self) -> &str {
        self.part(0)
    }

    /// Interface `name`.
    pub fn name(&self) -> &str {
        self.part(1)
    }

    /// Interface `type` (geneve, gre, ...).
    pub fn kind(&self) -> &str {
        self.part(2)
    }

    /// `options:remote_ip`.
    pub fn remote_ip(&self) -> Option<&str> {
        self.has_remote_ip.then(|| self.part(3))
    }

    /// Port `external_ids:node-name`.
    pub fn peer_node(&self) -> Option<&str> {
        self.has_peer_node.then(|| self.part(4))
    }
}

/// The operations: Ports marked as Antrea IPsec tunnels first (so the Interface rows after them
/// can be joined as they stream by), then every Interface, each with only the columns used.
fn ops() -> [Operation; 2] {
    [
        Operation::select(
            "Port",
            vec![Condition::new(
                "external_ids",
                "includes",
                Value::string_map(&[("antrea-type", "ipsec-tunnel")]),
            )],
            &["interfaces", "external_ids"],
        ),
        Operation::select("Interface", vec![], &["_uuid", "name", "type", "options"]),
    ]
}

/// The operations [`read`] sends (for the floor client of benches/node-check).
#[doc(hidden)]
pub fn read_ops() -> [Operation; 2] {
    ops()
}

const PORT_OP: usize = 0;
const IFACE_OP: usize = 1;

/// Reads every tunnel interface in one transaction (two selects), sorted by name; keys are
/// fingerprinted under `fp_key`.
pub async fn read(
    client: &Client,
    fp_key: &FingerprintKey,
) -> Result<Vec<Tunnel>, crate::ovsdb::Error> {
    Ok(read_inner(client, fp_key, false).await?.0)
}

/// [`read`], also keeping a copy of each distinct key (wiped on drop): `push-key` replaces
/// exactly those in one operation per key, a write ovsdb-server commits in about half the time of
/// one operation per tunnel (benches/push-floor).
pub async fn read_keeping_keys(
    client: &Client,
    fp_key: &FingerprintKey,
) -> Result<(Vec<Tunnel>, KeptKeys), crate::ovsdb::Error> {
    read_inner(client, fp_key, true).await
}

async fn read_inner(
    client: &Client,
    fp_key: &FingerprintKey,
    keep: bool,
) -> Result<(Vec<Tunnel>, KeptKeys), crate::ovsdb::Error> {
    let ops = ops();
    let names = crate::ovsdb::types::op_names(&ops);
    let fp_key = fp_key.clone();
    let (reply, mut tunnels, keys) = client
        .transact_with(VSWITCH_DB, &ops, move |bytes| {
            let mut sink = Sink::new(&fp_key);
            if keep {
                sink.keys = Some(KeptKeys::default());
            }
            let reply = decode_transact(&names, bytes, &mut sink)?;
            let keys = sink.keys.take().unwrap_or_default();
            Ok((reply, sink.into_tunnels(), keys))
        })
        .await?;
    reply.into_results(&ops)?;
    // Interface names are unique (the schema's index): an unstable sort gives the same order
    // without a scratch copy of every tunnel (1.7 MB at 10,000 tunnels).
    tunnels.sort_unstable_by(|a, b| a.name().cmp(b.name()));
    Ok((tunnels, keys))
}

/// Decodes the raw `result` bytes of a reply to [`read`]'s transaction (for tests and fuzzing).
#[doc(hidden)]
pub fn decode_reply(bytes: &[u8], fp_key: &FingerprintKey) -> Result<Vec<Tunnel>, String> {
    Ok(decode_reply_keeping_keys(bytes, fp_key)?.0)
}

/// [`decode_reply`] that also keeps the keys, as [`read_keeping_keys`] does (for tests).
#[doc(hidden)]
pub fn decode_reply_keeping_keys(
    bytes: &[u8],
    fp_key: &FingerprintKey,
) -> Result<(Vec<Tunnel>, KeptKeys), String> {
    let ops = ops();
    let names = crate::ovsdb::types::op_names(&ops);
    let mut sink = Sink::new(fp_key);
    sink.keys = Some(KeptKeys::default());
    let reply = decode_transact(&names, bytes, &mut sink).map_err(|e| e.to_string())?;
    reply.into_results(&ops).map_err(|e| e.to_string())?;
    let keys = sink.keys.take().unwrap_or_default();
    Ok((sink.into_tunnels(), keys))
}

/// Calls `f` with the bytes of JSON string literal `raw` (quotes included): borrowed when it has no
/// escapes, else unescaped into a buffer wiped after. None when `raw` is no string literal.
fn with_string_bytes<R>(raw: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        let unescaped = crate::secret::json_string_bytes(raw)?;
        Some(f(&unescaped))
    } else {
        Some(f(inner))
    }
}

/// Turns rows into tunnels while the reply is parsed.
struct Sink<'de, 'k> {
    fp_key: &'k FingerprintKey,
    /// Interface uuid -> peer node name, from the marked Ports (borrowed from the frame).
    marked: HashMap<Cow<'de, str>, Option<Cow<'de, str>>>,
    out: Vec<Tunnel>,
    /// The last key judged and what it is: tunnels mostly share one key, and an HMAC costs more
    /// than a comparison. The bytes are a copy, wiped on reuse and on drop.
    last: Option<(Zeroizing<Vec<u8>>, KeyFacts)>,
    /// With [`read_keeping_keys`]: every distinct key seen, wiped on drop.
    keys: Option<KeptKeys>,
}

/// The distinct keys the tunnels of a node carry (only the tunnels': a row the read does not
/// count as a tunnel keeps nothing), by fingerprint, for a write that must replace exactly them
/// ([`read_keeping_keys`]). Wiped on drop; `Debug` shows only how many.
#[derive(Default)]
pub struct KeptKeys {
    keys: HashMap<Fingerprint, Zeroizing<String>>,
    /// Fingerprints shared by two different keys (64 bits: possible under a salt an attacker
    /// knows): neither key is kept, so their tunnels are written one by one.
    collided: std::collections::HashSet<Fingerprint>,
}

impl KeptKeys {
    /// The key with this fingerprint, if it was seen (and is UTF-8, as a JSON string is) and no
    /// other key has the same fingerprint.
    pub fn get(&self, fp: Fingerprint) -> Option<&str> {
        self.keys.get(&fp).map(|k| k.as_str())
    }

    fn keep(&mut self, fp: Fingerprint, bytes: &[u8]) {
        if self.collided.contains(&fp) {
            return;
        }
        match self.keys.get(&fp) {
            Some(k) if k.as_bytes() == bytes => {}
            Some(_) => {
                self.keys.remove(&fp);
                self.collided.insert(fp);
            }
            None => {
                if let Ok(s) = std::str::from_utf8(bytes) {
                    self.keys.insert(fp, Zeroizing::new(s.to_owned()));
                }
            }
        }
    }
}

impl std::fmt::Debug for KeptKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeptKeys({} keys)", self.keys.len())
    }
}

impl<'de, 'k> Sink<'de, 'k> {
    fn new(fp_key: &'k FingerprintKey) -> Self {
        Sink {
            fp_key,
            marked: HashMap::new(),
            out: Vec::new(),
            last: None,
            keys: None,
        }
    }

    fn into_tunnels(mut self) -> Vec<Tunnel> {
        std::mem::take(&mut self.out)
    }

    /// Fingerprints and judges a key given as a JSON string literal (quotes included).
    fn judge(&mut self, raw: &[u8]) -> Option<KeyFacts> {
        with_string_bytes(raw, |bytes| self.judge_bytes(bytes))
    }

    fn judge_bytes(&mut self, bytes: &[u8]) -> KeyFacts {
        if let Some((last, facts)) = &self.last {
            if last.as_slice() == bytes {
                return facts.clone();
            }
        }
        let fingerprint = self.fp_key.fingerprint_bytes(bytes);
        let facts = KeyFacts {
            fingerprint,
            strength: assess_bytes(bytes),
            probes: crate::keysearch::probes(self.fp_key, fingerprint, bytes).into(),
        };
        let (buf, f) = self
            .last
            .get_or_insert_with(|| (Zeroizing::new(Vec::new()), facts.clone()));
        buf.zeroize();
        buf.extend_from_slice(bytes);
        *f = facts.clone();
        facts
    }

    fn port<A: MapAccess<'de>>(&mut self, mut row: A) -> Result<(), A::Error> {
        let mut ifaces: Vec<Cow<'de, str>> = vec![];
        let mut node = None;
        while let Some(col) = row.next_key::<Text<'de>>()?.map(|t| t.0) {
            match col.as_ref() {
                "interfaces" => ifaces = row.next_value_seed(UuidSet)?,
                "external_ids" => {
                    node = row
                        .next_value_seed(StringMap(|k: &str| k == "node-name"))?
                        .into_iter()
                        .next()
                        .map(|(_, v)| v);
                }
                _ => {
                    row.next_value::<IgnoredAny>()?;
                }
            }
        }
        for u in ifaces {
            self.marked.insert(u, node.clone());
        }
        Ok(())
    }

    fn interface<A: MapAccess<'de>>(&mut self, mut row: A) -> Result<(), A::Error> {
        let mut uuid = None;
        let (mut name, mut kind) = (None, None);
        let (mut psk, mut remote_ip, mut remote_name) = (None, None, false);
        let mut psk_raw: Option<&'de RawValue> = None;
        while let Some(col) = row.next_key::<Text<'de>>()?.map(|t| t.0) {
            match col.as_ref() {
                "_uuid" => uuid = Some(row.next_value_seed(UuidAtom)?),
                "name" => name = Some(row.next_value::<Text<'de>>()?.0),
                "type" => kind = Some(row.next_value::<Text<'de>>()?.0),
                "options" => {
                    for (k, v) in row.next_value_seed(OptionsMap)? {
                        match k.as_ref() {
                            "psk" => {
                                psk = self.judge(v.get().as_bytes());
                                psk_raw = Some(v);
                            }
                            "remote_ip" => remote_ip = serde_json::from_str::<String>(v.get()).ok(),
                            "remote_name" => remote_name = true,
                            _ => {}
                        }
                    }
                }
                _ => {
                    row.next_value::<IgnoredAny>()?;
                }
            }
        }
        let uuid = uuid.unwrap_or_default();
        let kind = kind.unwrap_or_default();
        let marked = self.marked.get(&uuid);
        let is_tunnel_type = TUNNEL_TYPES.contains(&kind.as_ref());
        if marked.is_none() && !(is_tunnel_type && (psk.is_some() || remote_name)) {
            return Ok(());
        }
        // A tunnel's key only: keeping every row's key would let rows that are no tunnels fill
        // the set (and the write then looks keys up in it).
        if let (Some(keys), Some(facts), Some(raw)) = (&mut self.keys, &psk, psk_raw) {
            with_string_bytes(raw.get().as_bytes(), |bytes| {
                keys.keep(facts.fingerprint, bytes)
            });
        }
        if self.out.capacity() == 0 {
            // Most tunnels are marked Ports, all known by now: one allocation of the right size.
            self.out.reserve_exact(self.marked.len());
        }
        let mut t = Tunnel::new(
            &uuid,
            name.as_deref().unwrap_or_default(),
            &kind,
            remote_ip.as_deref(),
            marked.and_then(|m| m.as_deref()),
        );
        t.marked = marked.is_some();
        t.remote_name = remote_name;
        t.key = psk;
        self.out.push(t);
        Ok(())
    }
}

impl<'de> RowSink<'de> for Sink<'de, '_> {
    fn row<A: MapAccess<'de>>(&mut self, op: usize, row: A) -> Result<(), A::Error> {
        match op {
            PORT_OP => self.port(row),
            IFACE_OP => self.interface(row),
            _ => drain(row),
        }
    }
}

fn drain<'de, A: MapAccess<'de>>(mut row: A) -> Result<(), A::Error> {
    while row.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A string, borrowed from the frame unless it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `["uuid", "..."]`, borrowed.
struct UuidAtom;

impl<'de> DeserializeSeed<'de> for UuidAtom {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for UuidAtom {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a uuid atom")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag = seq
            .next_element::<Text<'de>>()?
            .ok_or_else(|| de::Error::custom("empty array"))?
            .0;
        let id = seq
            .next_element::<Text<'de>>()?
            .ok_or_else(|| de::Error::custom("no uuid"))?
            .0;
        if tag != "uuid" || seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("not a uuid atom"));
        }
        Ok(id)
    }
}

/// A set of uuids: `["set", [uuid, ...]]` or one bare uuid atom, borrowed.
struct UuidSet;

impl<'de> DeserializeSeed<'de> for UuidSet {
    type Value = Vec<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for UuidSet {
    type Value = Vec<Cow<'de, str>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a set of uuids")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag = seq
            .next_element::<Text<'de>>()?
            .ok_or_else(|| de::Error::custom("empty array"))?
            .0;
        let out = match tag.as_ref() {
            "set" => {
                let items: Vec<Uuid<'de>> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("no set elements"))?;
                items.into_iter().map(|u| u.0).collect()
            }
            "uuid" => vec![
                seq.next_element::<Text<'de>>()?
                    .ok_or_else(|| de::Error::custom("no uuid"))?
                    .0,
            ],
            _ => return Err(de::Error::custom("not a set of uuids")),
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a tagged value has two elements"));
        }
        Ok(out)
    }
}

struct Uuid<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Uuid<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        UuidAtom.deserialize(d).map(Uuid)
    }
}

/// A string-to-string map `["map", [[k, v], ...]]` keeping the pairs whose key passes the filter.
struct StringMap<F>(F);

impl<'de, F: Fn(&str) -> bool> DeserializeSeed<'de> for StringMap<F> {
    type Value = Vec<(Cow<'de, str>, Cow<'de, str>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let pairs = OptionsMap.deserialize(d)?;
        let mut out = vec![];
        for (k, v) in pairs {
            if (self.0)(&k) {
                let v: Text<'de> = serde_json::from_str(v.get())
                    .map_err(|_| de::Error::custom("a map value is not a string"))?;
                out.push((k, v.0));
            }
        }
        Ok(out)
    }
}

/// `["map", [[k, v], ...]]` with keys decoded and values left as raw JSON in the frame.
struct OptionsMap;

impl<'de> DeserializeSeed<'de> for OptionsMap {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OptionsMap {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an OVSDB map")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag = seq
            .next_element::<Text<'de>>()?
            .ok_or_else(|| de::Error::custom("empty array"))?
            .0;
        if tag != "map" {
            return Err(de::Error::custom("not a map"));
        }
        let pairs: Vec<(Text<'de>, &'de RawValue)> = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("no map pairs"))?;
        let pairs = pairs.into_iter().map(|(k, v)| (k.0, v)).collect();
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("a tagged value has two elements"));
        }
        Ok(pairs)
    }
}

/// Who besides root can reach the key material, as found by the file checks.
#[derive(Debug, Default, Clone)]
pub struct KeyExposure {
    /// e.g. "conf.db is readable by all users".
    pub reasons: Vec<String>,
}

/// The findings for a weak key: a known default (critical, and then nothing else), too short,
/// low entropy (high). `base` makes a finding with the subject and details; `place` ends the
/// observed text (e.g. " on 3 tunnel(s)"). Shared by `check` (tunnel keys) and `audit` (the Secret).
pub fn weak_key_findings(
    st: &crate::secret::Strength,
    base: impl Fn(Code, Severity) -> Finding,
    place: &str,
) -> Vec<Finding> {
    if st.is_default {
        return vec![base(Code::PskDefaultKey, Severity::Critical)
            .observed(format!("a well-known default key{place}"))
            .expected("a random key unique to this cluster")];
    }
    let mut out = vec![];
    if st.too_short() {
        out.push(
            base(Code::PskTooShort, Severity::High)
                .observed(format!("{}-byte key{place}", st.len))
                .expected(format!("at least {} bytes", crate::secret::MIN_PSK_LEN)),
        );
    }
    if st.low_entropy() {
        out.push(
            base(Code::PskLowEntropy, Severity::High)
                .observed(format!("about {:.0} bits of entropy", st.entropy_bits))
                .expected(format!(
                    "at least {:.0} bits",
                    crate::secret::MIN_ENTROPY_BITS
                )),
        );
    }
    out
}

/// The tunnels carrying one key, for a finding's details: kept as they are and written out one
/// by one with the report (shared by the findings about that key).
#[derive(Debug)]
struct TunnelList {
    /// Every tunnel with a key, ordered by key, then name.
    all: Arc<Vec<Tunnel>>,
    /// This key's part of `all`.
    part: std::ops::Range<usize>,
}

impl TunnelList {
    fn tunnels(&self) -> &[Tunnel] {
        &self.all[self.part.clone()]
    }
}

impl crate::report::DetailList for TunnelList {
    fn len(&self) -> usize {
        self.part.len()
    }
    fn item(&self, i: usize) -> serde_json::Value {
        let t = &self.tunnels()[i];
        let mut o = serde_json::Map::new();
        o.insert("interface".into(), json!(t.name()));
        o.insert("tunnel_type".into(), json!(t.kind()));
        if let Some(n) = t.peer_node() {
            o.insert("peer_node".into(), json!(n));
        }
        if let Some(ip) = t.remote_ip() {
            o.insert("remote_ip".into(), json!(ip));
        }
        serde_json::Value::Object(o)
    }
}

/// Turns tunnels into findings: one finding per key exposure (all tunnels sharing a key in one
/// finding, listed in `details.tunnels`), not one per tunnel.
pub fn analyze(
    tunnels: Vec<Tunnel>,
    exposure: &KeyExposure,
    expect: Option<Fingerprint>,
    report: &mut Report,
) {
    if tunnels.is_empty() {
        report.push(
            Finding::new(
                Code::NoIpsecTunnels,
                Severity::Info,
                Subject::ovsdb("Interface"),
            )
            .observed("no IPsec tunnel interfaces")
            .expected("one tunnel per peer node when IPsec is on")
            .remediation("nothing to do if IPsec is off or this is a single-node cluster"),
        );
        return;
    }
    let plaintext_sev = if exposure.reasons.is_empty() {
        Severity::Medium
    } else {
        Severity::Critical
    };
    let cert = tunnels
        .iter()
        .filter(|t| t.key.is_none() && t.remote_name)
        .count();
    // Distinct keys by fingerprint: the tunnels that carry each, as one run of the tunnels sorted
    // in place by key, then name (no copy of the tunnels, no map per key).
    let mut keyed = tunnels;
    keyed.retain(|t| t.key.is_some());
    let fp_of = |t: &Tunnel| t.key.as_ref().map(|k| k.fingerprint);
    keyed.sort_unstable_by(|a, b| fp_of(a).cmp(&fp_of(b)).then_with(|| a.name().cmp(b.name())));
    let all = Arc::new(keyed);
    let mut groups: Vec<(Fingerprint, Arc<TunnelList>, crate::secret::Strength)> = vec![];
    let mut start = 0;
    while let Some(first) = all.get(start).and_then(|t| t.key.as_ref()) {
        let len = all[start..]
            .iter()
            .take_while(|t| fp_of(t) == Some(first.fingerprint))
            .count();
        let list = TunnelList {
            all: all.clone(),
            part: start..start + len,
        };
        groups.push((first.fingerprint, Arc::new(list), first.strength.clone()));
        start += len;
    }
    let conf_db = report.target.get("conf_db").cloned();
    // One finding per key exposure: every tunnel sharing the key is listed in its details.
    for (fp, list, strength) in &groups {
        let ts = list.tunnels();
        let subject = Subject::key(fp);
        let stable = format!("key of {}", ts.first().map_or("", |t| t.name()));
        let base = |code, sev| {
            let f = Finding::new(code, sev, subject.clone())
                .stable_name(stable.clone())
                .detail("fingerprint", fp.to_string())
                .detail("interfaces", ts.len())
                .detail_list(
                    "tunnels",
                    list.clone() as Arc<dyn crate::report::DetailList>,
                );
            match &conf_db {
                Some(p) => f.located(p.clone(), None),
                None => f,
            }
        };
        let peers: Vec<&str> = ts
            .iter()
            .take(3)
            .map(|t| t.peer_node().or(t.remote_ip()).unwrap_or("an unknown peer"))
            .collect();
        let mut f = base(Code::PskPlaintextInOvsdb, plaintext_sev)
            .observed(format!(
                "plaintext PSK on {} tunnel(s) (to {}{})",
                ts.len(),
                peers.join(", "),
                if ts.len() > peers.len() { ", …" } else { "" }
            ))
            .expected(if exposure.reasons.is_empty() {
                "no PSK in OVSDB (certificate mode); at least conf.db, db.sock and the run directory closed to non-root users".to_owned()
            } else {
                "conf.db, db.sock and the run directory closed to non-root users".to_owned()
            })
            .remediation(if exposure.reasons.is_empty() {
                "switch Antrea to certificate mode (ipsec.authenticationMode: cert, feature gate IPsecCertAuth) so no PSK is stored; until then keep the file modes tight and rotate the key regularly (psk-guard rotate)"
            } else {
                "close access now (psk-guard fix tightens the modes), then rotate the key (psk-guard rotate): whoever could read it may have it; the lasting fix is certificate mode"
            });
        if !exposure.reasons.is_empty() {
            f = f.detail("exposed_to", json!(exposure.reasons));
        }
        report.push(f);
        if let Some(want) = expect {
            if *fp != want {
                report.push(
                    base(Code::PskUnexpectedFingerprint, Severity::High)
                        .observed(format!("key {fp} on {} tunnel(s)", ts.len()))
                        .expected(format!("key {want}"))
                        .remediation("the node has not converged on the new key: restart its antrea-agent pod or re-run the rotation (psk-guard rotate resumes)")
                        .detail("expected_fingerprint", want.to_string()),
                );
            }
        }
        let base = |code, sev| {
            base(code, sev).remediation("rotate to a random 32-byte key: psk-guard rotate (or set a strong value in the antrea-ipsec Secret and restart antrea-agent)")
        };
        for f in weak_key_findings(strength, base, &format!(" on {} tunnel(s)", ts.len())) {
            report.push(f);
        }
    }
    if groups.len() > 1 {
        let counts: BTreeMap<String, usize> = groups
            .iter()
            .map(|(fp, list, _)| (fp.to_string(), list.part.len()))
            .collect();
        report.push(
            Finding::new(Code::PskMixedKeys, Severity::High, Subject::ovsdb("Interface"))
                .observed(format!("{} different keys across {} tunnels", groups.len(), counts.values().sum::<usize>()))
                .expected("one key on every tunnel")
                .remediation("finish the rotation: restart the antrea-agent pods still on the old key (or re-run psk-guard rotate, which resumes)")
                .detail("tunnels_per_key", json!(counts)),
        );
    }
    if cert > 0 && groups.is_empty() {
        report.push(
            Finding::new(
                Code::IpsecCertMode,
                Severity::Info,
                Subject::ovsdb("Interface"),
            )
            .observed(format!(
                "{cert} tunnel(s) authenticate with certificates; no PSK stored"
            ))
            .expected("certificate mode")
            .remediation("nothing to do"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_tunnels_straight_from_the_reply_bytes() {
        let key = FingerprintKey::given("t");
        // Ports first (as asked), then Interfaces; an escaped key, a marked port without a key, a
        // certificate-mode tunnel, and rows that are not tunnels.
        let reply = br#"[{"rows":[
              {"interfaces":["uuid","u1"],"external_ids":["map",[["antrea-type","ipsec-tunnel"],["node-name","node1"]]]},
              {"interfaces":["set",[["uuid","u4"]]],"external_ids":["map",[["antrea-type","ipsec-tunnel"]]]}]},
            {"rows":[
              {"_uuid":["uuid","u1"],"name":"t1","type":"geneve","options":["map",[["psk","k\u0065y-\"one\""],["remote_ip","10.0.0.2"]]]},
              {"_uuid":["uuid","u2"],"name":"t2","type":"gre","options":["map",[["remote_name","node2"]]]},
              {"_uuid":["uuid","u3"],"name":"veth","type":"","options":["map",[]]},
              {"_uuid":["uuid","u4"],"name":"t4","type":"geneve","options":["map",[]]},
              {"_uuid":["uuid","u5"],"name":"t5","type":"vxlan","options":["map",[["psk","key-\"one\""]]],"extra":[1,{"a":null}]}]}]"#;
        let mut ts = decode_reply(reply, &key).unwrap();
        ts.sort_by(|a, b| a.name().cmp(b.name()));
        let names: Vec<&str> = ts.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["t1", "t2", "t4", "t5"]);
        let want = key.fingerprint_bytes(br#"key-"one""#);
        assert_eq!(ts[0].key.as_ref().unwrap().fingerprint, want);
        assert_eq!(ts[0].key.as_ref().unwrap().strength.len, 9);
        assert_eq!(ts[3].key.as_ref().unwrap().fingerprint, want);
        assert_eq!(ts[0].peer_node(), Some("node1"));
        assert_eq!(ts[0].remote_ip(), Some("10.0.0.2"));
        assert!(ts[0].marked && ts[2].marked && !ts[3].marked);
        assert!(ts[1].remote_name && ts[1].key.is_none());
        assert_eq!(ts[2].peer_node(), None);
        assert_eq!(
            (ts[0].uuid(), ts[1].kind(), ts[3].kind()),
            ("u1", "gre", "vxlan")
        );
        assert_eq!((ts[1].remote_ip(), ts[3].uuid()), (None, "u5"));
        // An operation error is an error, not an empty node.
        let failed = br#"[{"error":"unknown column","details":"x"},null]"#;
        assert!(decode_reply(failed, &key).is_err());
        assert!(decode_reply(b"[{\"rows\":[]}]", &key).is_err());
    }

    /// A tunnel's texts come back as given from its one allocation: empty ones, absent ones,
    /// and multi-byte characters at the seams.
    #[test]
    fn tunnel_texts_round_trip() {
        let t = Tunnel::new("", "tün-é", "", Some(""), None);
        assert_eq!(
            (t.uuid(), t.name(), t.kind(), t.remote_ip(), t.peer_node()),
            ("", "tün-é", "", Some(""), None)
        );
        let t = Tunnel::new("u", "n", "geneve", None, Some("nœud-2"));
        assert_eq!(
            (t.uuid(), t.name(), t.kind(), t.remote_ip(), t.peer_node()),
            ("u", "n", "geneve", None, Some("nœud-2"))
        );
        assert_eq!(&*t.text, "ungenevenœud-2");
    }
}
