//! A record scanner for conf.db transactions that finds the key-bearing fields (`Interface` rows'
//! `name` and `options:psk`, `_comment`, `_date`, `_is_diff`) in one pass over the bytes, without
//! a general JSON decode and without allocating (spans into the record, vectors reused).
//!
//! It accepts a strict subset of JSON and reads it exactly as the full decoder (`TxnRecord` in
//! the parent module) would: plain strings (printable ASCII, no escapes), integers for `_date`,
//! every other value validated by a small recursive skipper. Anything outside the subset (an
//! escape, a non-ASCII byte, a `null` where the decoder expects a value, a duplicate field, an
//! unexpected shape, deep nesting) makes [`scan`] return `false`, and the caller falls back to
//! the full decoder, which then decides, with its own error if the record is bad. The
//! differential test in tests/it/fuzz.rs holds the two to the same results.

/// `[start, end)` within the record body.
pub(crate) type Span = (usize, usize);

/// One `Interface` row of a transaction: deleted (`null`) or the columns the replay reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub uuid: Span,
    pub deleted: bool,
    pub name: Option<Span>,
    /// `options` present (a map).
    pub options: bool,
    /// The first `psk` value of `options`, unquoted.
    pub psk: Option<Span>,
}

/// What a transaction record says about keys. Reused from record to record.
#[derive(Debug, Default)]
pub(crate) struct Txn {
    pub date: Option<i64>,
    pub is_diff: bool,
    /// The `_comment` text, unquoted.
    pub comment: Option<Span>,
    pub rows: Vec<Row>,
    /// Row uuids sorted (for the duplicate check), reused.
    sorted: Vec<Span>,
}

/// Deepest nesting the skipper follows (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 64;

/// Not in the subset: fall back to the full decoder.
struct Unsure;

type R<T> = Result<T, Unsure>;

/// The index of the first byte of `b` at or after `j` that a plain string cannot hold unescaped
/// or that ends it: `"`, `\\`, a control byte, DEL or any non-ASCII byte (`b.len()` if none).
/// Eight bytes per step (SWAR, no `unsafe`): each term below sets the high bit of a byte that
/// matches; a borrow or carry can also flag bytes above a matching one, never below, so the
/// lowest flagged byte is exact.
#[inline]
fn plain_run_end(b: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(w) = b.get(j..j + 8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let quote = x ^ (ONES * u64::from(b'"'));
        let bslash = x ^ (ONES * u64::from(b'\\'));
        let hit = (quote.wrapping_sub(ONES) & !quote)
            | (bslash.wrapping_sub(ONES) & !bslash)
            // Below 0x20.
            | (x.wrapping_sub(ONES * 0x20) & !x)
            // 0x7f and above (x's own high bit: 0x80 and above).
            | x.wrapping_add(ONES)
            | x;
        let hit = hit & HIGH;
        if hit != 0 {
            return j + (hit.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while let Some(&c) = b.get(j) {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            break;
        }
        j += 1;
    }
    j
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl P<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or(Unsure)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// A plain string: printable ASCII without escapes. Returns its contents' span.
    #[inline]
    fn string(&mut self) -> R<Span> {
        self.eat(b'"')?;
        let start = self.i;
        let j = plain_run_end(self.b, start);
        if self.b.get(j) != Some(&b'"') {
            return Err(Unsure);
        }
        self.i = j + 1;
        Ok((start, j))
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    /// A JSON number, validated by its grammar and skipped.
    fn number(&mut self) -> R<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Unsure),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Unsure);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Unsure);
            }
        }
        Ok(())
    }

    /// An integer that fits an i64 (`_date`), written as serde_json reads one into an i64.
    fn integer(&mut self) -> R<i64> {
        self.ws();
        let neg = self.b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let n = self.digits();
        let d = &self.b[start..self.i];
        // No leading zero, no "-0" (serde_json reads that as a float), at most 18 digits (fits).
        if n == 0 || n > 18 || (d[0] == b'0' && (n > 1 || neg)) {
            return Err(Unsure);
        }
        if let Some(b'.' | b'e' | b'E') = self.b.get(self.i) {
            return Err(Unsure);
        }
        let v = d.iter().fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0'));
        Ok(if neg { -v } else { v })
    }

    /// Any JSON value in the subset, skipped.
    fn skip(&mut self, depth: u32) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.i += 1;
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.eat(b':')?;
                    self.skip(depth + 1)?;
                    if !self.comma_or(b'}')? {
                        return Ok(());
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if !self.comma_or(b']')? {
                        return Ok(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// After a member or element: `,` (true: another follows) or `close` (false: done).
    #[inline]
    fn comma_or(&mut self, close: u8) -> R<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Ok(true)
            }
            c if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Unsure),
        }
    }

    #[inline]
    fn is_null(&mut self) -> R<bool> {
        Ok(self.peek()? == b'n')
    }

    /// `["map", [[k, v], ...]]` of plain strings; the first `psk` value.
    fn options(&mut self) -> R<Option<Span>> {
        self.eat(b'[')?;
        let tag = self.string()?;
        if &self.b[tag.0..tag.1] != b"map" {
            return Err(Unsure);
        }
        self.eat(b',')?;
        self.eat(b'[')?;
        let mut psk = None;
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            loop {
                self.eat(b'[')?;
                let k = self.string()?;
                self.eat(b',')?;
                let v = self.string()?;
                self.eat(b']')?;
                if psk.is_none() && &self.b[k.0..k.1] == b"psk" {
                    psk = Some(v);
                }
                if !self.comma_or(b']')? {
                    break;
                }
            }
        }
        self.eat(b']')?;
        Ok(psk)
    }

    /// One `Interface` row object.
    fn row(&mut self, uuid: Span) -> R<Row> {
        let mut row = Row {
            uuid,
            deleted: false,
            name: None,
            options: false,
            psk: None,
        };
        let (mut seen_name, mut seen_options) = (false, false);
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(row);
        }
        loop {
            let k = self.string()?;
            self.eat(b':')?;
            match &self.b[k.0..k.1] {
                b"name" => {
                    if std::mem::replace(&mut seen_name, true) {
                        return Err(Unsure);
                    }
                    if self.is_null()? {
                        self.literal(b"null")?;
                    } else {
                        row.name = Some(self.string()?);
                    }
                }
                b"options" => {
                    if std::mem::replace(&mut seen_options, true) || self.is_null()? {
                        return Err(Unsure);
                    }
                    row.psk = self.options()?;
                    row.options = true;
                }
                _ => self.skip(2)?,
            }
            if !self.comma_or(b'}')? {
                return Ok(row);
            }
        }
    }

    /// The `Interface` table: `{uuid: row-or-null, ...}`.
    fn interface(&mut self, rows: &mut Vec<Row>) -> R<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let uuid = self.string()?;
            self.eat(b':')?;
            if self.is_null()? {
                self.literal(b"null")?;
                rows.push(Row {
                    uuid,
                    deleted: true,
                    name: None,
                    options: false,
                    psk: None,
                });
            } else {
                let row = self.row(uuid)?;
                rows.push(row);
            }
            if !self.comma_or(b'}')? {
                return Ok(());
            }
        }
    }

    fn txn(&mut self, t: &mut Txn) -> R<()> {
        let (mut date, mut diff, mut comment, mut iface) = (false, false, false, false);
        let once = |seen: &mut bool| {
            if std::mem::replace(seen, true) {
                Err(Unsure)
            } else {
                Ok(())
            }
        };
        self.eat(b'{')?;
        if self.peek()? != b'}' {
            loop {
                let k = self.string()?;
                self.eat(b':')?;
                match &self.b[k.0..k.1] {
                    b"_date" => {
                        once(&mut date)?;
                        t.date = Some(self.integer()?);
                    }
                    b"_is_diff" => {
                        once(&mut diff)?;
                        t.is_diff = match self.peek()? {
                            b't' => self.literal(b"true").map(|()| true)?,
                            _ => self.literal(b"false").map(|()| false)?,
                        };
                    }
                    b"_comment" => {
                        once(&mut comment)?;
                        t.comment = Some(self.string()?);
                    }
                    b"Interface" => {
                        once(&mut iface)?;
                        if self.is_null()? {
                            return Err(Unsure);
                        }
                        self.interface(&mut t.rows)?;
                    }
                    _ => self.skip(1)?,
                }
                if !self.comma_or(b'}')? {
                    break;
                }
            }
        } else {
            self.i += 1;
        }
        self.ws();
        if self.i != self.b.len() {
            return Err(Unsure);
        }
        Ok(())
    }
}

/// Scans one transaction record into `t`: its rows are appended to `t.rows` (the rows already
/// there are kept: a batch's records share the vector). `false`: not in the subset (or a row uuid
/// appears twice), so the caller must use the full decoder; `t.rows` is then as it was.
pub(crate) fn scan_into(body: &[u8], t: &mut Txn) -> bool {
    t.date = None;
    t.is_diff = false;
    t.comment = None;
    let first = t.rows.len();
    let mut p = P { b: body, i: 0 };
    if p.txn(t).is_err() || has_duplicate_uuid(body, &t.rows[first..], &mut t.sorted) {
        t.rows.truncate(first);
        return false;
    }
    true
}

/// Scans one transaction record into `t` (its rows cleared first); see [`scan_into`].
#[cfg(test)]
pub(crate) fn scan(body: &[u8], t: &mut Txn) -> bool {
    t.rows.clear();
    scan_into(body, t)
}

/// The decoder keeps the last of two rows with one uuid (a map): that case is left to it.
fn has_duplicate_uuid(body: &[u8], rows: &[Row], sorted: &mut Vec<Span>) -> bool {
    let text = |s: Span| &body[s.0..s.1];
    match rows {
        [] | [_] => false,
        // The common shapes (a row replaced: deleted and recreated) without sorting.
        [a, b] => text(a.uuid) == text(b.uuid),
        _ => {
            sorted.clear();
            sorted.extend(rows.iter().map(|r| r.uuid));
            sorted.sort_unstable_by(|a, b| text(*a).cmp(text(*b)));
            sorted.windows(2).any(|w| text(w[0]) == text(w[1]))
        }
    }
}

/// What the hasher thread found in one record of a batch, for the main thread to apply.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Class {
    /// Cannot change a key (no `psk`, no `"Interface"` in it) and is an object: nothing to do.
    Inert,
    /// Neither relevant nor an object: the record ends the scan.
    NotObject,
    /// In the subset: its fields; its rows are `rows.0..rows.1` of [`Scans::txn`]'s rows.
    Fast {
        date: Option<i64>,
        is_diff: bool,
        comment: Option<Span>,
        rows: (usize, usize),
    },
    /// Outside the subset: the full decoder reads it.
    Full,
}

/// The classes of a batch's records (in order, from its first until the first bad one), and
/// the rows of those read the fast way. Reused from batch to batch; holds spans, no key bytes.
#[derive(Debug, Default)]
pub(crate) struct Scans {
    pub class: Vec<Class>,
    pub txn: Txn,
}

impl Scans {
    pub fn clear(&mut self) {
        self.class.clear();
        self.txn.rows.clear();
    }

    /// Classifies one record; `relevant` says whether it can change a key at all (`Err`: it
    /// cannot, and is not an object either).
    pub fn push(&mut self, body: &[u8], relevant: Result<bool, &'static str>) {
        let class = match relevant {
            Err(_) => Class::NotObject,
            Ok(false) => Class::Inert,
            Ok(true) => {
                let first = self.txn.rows.len();
                if scan_into(body, &mut self.txn) {
                    Class::Fast {
                        date: self.txn.date,
                        is_diff: self.txn.is_diff,
                        comment: self.txn.comment,
                        rows: (first, self.txn.rows.len()),
                    }
                } else {
                    Class::Full
                }
            }
        };
        self.class.push(class);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(body: &[u8], sp: Span) -> &str {
        std::str::from_utf8(&body[sp.0..sp.1]).unwrap()
    }

    #[test]
    fn finds_the_key_bearing_fields() {
        let body = br#"{"_date":1700000001000,"_is_diff":true,"_comment":"ovs-vsctl set Interface t1 options:psk=k2","Bridge":{"b":{"ports":["set",[["uuid","p"]]],"x":[1.5e3,-0,true,null,{}]}},"Interface":{"u0":null,"u1":{"name":"t1","type":"geneve","options":["map",[["remote_ip","10.0.0.2"],["psk","k2"],["psk","k3"]]]}}}
"#;
        let mut t = Txn::default();
        assert!(scan(body, &mut t));
        assert_eq!(t.date, Some(1_700_000_001_000));
        assert!(t.is_diff);
        assert!(s(body, t.comment.unwrap()).ends_with("psk=k2"));
        assert_eq!(t.rows.len(), 2);
        assert!(t.rows[0].deleted);
        assert_eq!(s(body, t.rows[1].name.unwrap()), "t1");
        assert_eq!(s(body, t.rows[1].psk.unwrap()), "k2");
    }

    #[test]
    fn plain_runs_end_where_a_byte_by_byte_check_ends_them() {
        let naive = |b: &[u8], j: usize| {
            (j..b.len())
                .find(|&k| b[k] == b'"' || b[k] == b'\\' || !(0x20..0x7f).contains(&b[k]))
                .unwrap_or(b.len())
        };
        // Every byte value at every position of a word and its neighbours, alone and followed by
        // bytes whose borrow or carry could flag a later byte.
        for len in 0..20 {
            for pos in 0..len {
                for c in 0..=255u8 {
                    for after in [
                        None,
                        Some(0u8),
                        Some(0x1f),
                        Some(0x7f),
                        Some(0xff),
                        Some(b'"'),
                    ] {
                        let mut b = vec![b'a'; len];
                        b[pos] = c;
                        if let Some(a) = after.filter(|_| pos + 1 < len) {
                            b[pos + 1] = a;
                        }
                        for j in 0..=len.min(3) {
                            assert_eq!(plain_run_end(&b, j), naive(&b, j), "{b:?} from {j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_everything_unusual_to_the_full_decoder() {
        let mut t = Txn::default();
        for body in [
            &br#"{"_comment":"a \"quoted\" psk=x"}"#[..],
            br#"{"Interface":{"u":{"options":["map",[["psk","k\u0041"]]]}}}"#,
            br#"{"Interface":{"u":{"options":["set",[]]}}}"#,
            br#"{"Interface":{"u":{"options":null}}}"#,
            br#"{"Interface":{"u":{"name":"a"},"u":{"name":"b"}}}"#,
            br#"{"_date":1,"_date":2}"#,
            br#"{"_date":1.5}"#,
            br#"{"_date":-0}"#,
            br#"{"_date":null}"#,
            br#"{"Interface":null}"#,
            br#"{"a":[1,2,]}"#,
            br#"{"a":01}"#,
            b"{\"a\":\"\xc3\xa9\"} ",
            br#"{} x"#,
            br#"{"psk":1"#,
        ] {
            assert!(!scan(body, &mut t), "{}", String::from_utf8_lossy(body));
        }
    }
}
