//! Property-based fuzzing of every decoder that reads untrusted bytes: JSON-RPC framing, the
//! message envelope, OVSDB values and transact replies, and the conf.db log reader. Properties:
//! no panic, no unbounded allocation, and valid input decodes exactly. The case count comes from
//! PROPTEST_CASES (scripts/fuzz runs 1,000,000 per target; the suite runs the default).

use crate::harness::record;
use proptest::prelude::*;
use psk_guard::checks::tunnels::decode_reply;
use psk_guard::forensics::{scan_reader, scan_reader_reference};
use psk_guard::ovsdb::client::fuzz_classify;
use psk_guard::ovsdb::frame::FrameBuf;
use psk_guard::ovsdb::types::TransactReply;
use psk_guard::ovsdb::{Operation, Value};
use psk_guard::secret::FingerprintKey;

fn cases() -> ProptestConfig {
    // PROPTEST_CASES overrides; keep shrinking short so a failure reports fast.
    ProptestConfig {
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Feeds `bytes` in pieces cut at `cuts`; returns the messages decoded before an error, if any.
fn feed(bytes: &[u8], cuts: &[usize], cap: usize) -> (Vec<serde_json::Value>, bool) {
    let mut fb = FrameBuf::new(cap);
    let mut out = vec![];
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut at = 0;
    for p in points {
        fb.extend(&bytes[at..p]);
        at = p;
        loop {
            match fb.next_message() {
                Ok(Some(v)) => out.push(v),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ]
}

fn json_tree() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z\"\\\\{}]{0,6}", inner.clone(), 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            // OVSDB-shaped values
            (
                prop_oneof![Just("set"), Just("map"), Just("uuid"), Just("named-uuid")],
                inner
            )
                .prop_map(|(t, v)| serde_json::json!([t, v])),
        ]
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn framing_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let (msgs, _) = feed(&bytes, &cuts, 256);
        for m in msgs {
            prop_assert!(m.is_object());
        }
    }

    #[test]
    fn framing_reassembles_any_split_of_valid_messages(objs in prop::collection::vec(prop::collection::btree_map("[a-z]{1,4}", json_tree(), 0..4), 1..5), ws in prop::collection::vec("[ \t\r\n]{0,3}", 5), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let values: Vec<serde_json::Value> = objs.into_iter().map(|m| serde_json::Value::Object(m.into_iter().collect())).collect();
        let mut stream = String::new();
        for (i, v) in values.iter().enumerate() {
            stream.push_str(&ws[i % ws.len()]);
            stream.push_str(&v.to_string());
        }
        let (msgs, err) = feed(stream.as_bytes(), &cuts, 1 << 20);
        prop_assert!(!err);
        prop_assert_eq!(msgs, values);
    }

    #[test]
    fn envelope_and_value_decoding_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = fuzz_classify(&bytes);
        let _ = serde_json::from_slice::<Value>(&bytes);
        let ops = [Operation::Comment("x".into()), Operation::select("Interface", vec![], &["options"])];
        let _ = TransactReply::from_slice(&ops, &bytes);
        let _ = decode_reply(&bytes, &FingerprintKey::given("fuzz"));
    }

    #[test]
    fn value_decoders_agree_on_json_trees(tree in json_tree()) {
        let mut t = tree.clone();
        let a = Value::from_json(&mut t);
        // Values decode only from JSON text (strings are unescaped by psk-guard's own decoder).
        let b = serde_json::from_str::<Value>(&tree.to_string());
        match (a, b) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "decoders disagree on {}: {:?} vs {:?}", tree, a.is_ok(), b.is_ok()),
        }
        let envelope = serde_json::json!({"id": 1, "result": tree, "error": null}).to_string();
        prop_assert!(fuzz_classify(envelope.as_bytes()));
        let ops = [Operation::select("Interface", vec![], &["options"])];
        let reply = serde_json::json!([{"rows": [{"options": tree}]}]).to_string();
        let _ = TransactReply::from_slice(&ops, reply.as_bytes());
        // The tunnel read path's streaming decoder, on the same shapes in every column it reads.
        let key = FingerprintKey::given("fuzz");
        let reply = serde_json::json!([{"rows": [{"interfaces": tree, "external_ids": tree}]},
            {"rows": [{"_uuid": tree, "name": tree, "type": tree, "options": tree}]}]).to_string();
        let _ = decode_reply(reply.as_bytes(), &key);
    }

    #[test]
    fn log_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..800), header in any::<bool>()) {
        let mut data = if header { b"OVSDB JSON ".to_vec() } else { vec![] };
        data.extend_from_slice(&bytes);
        let key = FingerprintKey::given("fuzz");
        let _ = scan_reader(&data[..], Some(data.len() as u64), 1 << 16, &key);
        let _ = scan_reader(&data[..], None, 1 << 16, &key);
    }

    #[test]
    fn log_reader_survives_any_damage_to_a_valid_log(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>(), truncate in any::<bool>()) {
        let valid = valid_log();
        let mut data = valid.clone();
        for (pos, x) in &flips {
            let p = pos % data.len();
            data[p] ^= x;
        }
        if truncate {
            data.truncate(cut % (data.len() + 1));
        }
        let key = FingerprintKey::given("fuzz");
        if let Ok(scan) = scan_reader(&data[..], Some(data.len() as u64), 1 << 16, &key) {
            prop_assert!(scan.records <= 4);
            if flips.iter().all(|(_, x)| *x == 0) && !truncate {
                prop_assert!(scan.damage.is_none());
                prop_assert_eq!(scan.keys.len(), 2);
            }
        }
    }
}

/// A JSON value's text, as written (so it can hold what serde_json would never write: duplicate
/// members, escapes, odd spacing).
fn key_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""k-one""#.to_owned()),
        Just(r#""k-two""#.to_owned()),
        Just(r#""changeme""#.to_owned()),
        Just(r#""k-\u006fne""#.to_owned()),
        Just(r#""k\"q""#.to_owned()),
        Just("\"k-\u{e9}\"".to_owned()),
        Just(r#""""#.to_owned()),
        Just(r#""k\x""#.to_owned()),
        Just("5".to_owned()),
        Just("null".to_owned()),
    ]
}

fn options_literal() -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![Just("psk"), Just("remote_ip"), Just("remote_name")],
        key_literal(),
    )
        .prop_map(|(k, v)| format!(r#"["{k}",{v}]"#));
    prop_oneof![
        8 => prop::collection::vec(pair, 0..3).prop_map(|p| format!(r#"["map",[{}]]"#, p.join(","))),
        1 => Just(r#"["set",[]]"#.to_owned()),
        1 => Just("null".to_owned()),
        1 => Just(r#"["map",[["psk","a","b"]]]"#.to_owned()),
        1 => Just(r#"["map",[],1]"#.to_owned()),
    ]
}

fn members(parts: Vec<Option<String>>, sep: &str) -> String {
    let m: Vec<String> = parts.into_iter().flatten().collect();
    format!("{{{}}}", m.join(sep))
}

fn row_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("null".to_owned()),
        6 => (
            prop::option::of(prop_oneof![Just(r#""t1""#), Just(r#""t2""#), Just("null"), Just(r#""t\u0031""#)]),
            prop::option::of(options_literal()),
            prop::option::of(json_tree()),
            any::<bool>(),
        )
            .prop_map(|(name, opts, other, dup)| {
                let name = name.map(|n| format!(r#""name":{n}"#));
                let dup = (dup && name.is_some()).then(|| name.clone().unwrap());
                members(vec![
                    name,
                    Some(r#""type":"geneve""#.to_owned()),
                    opts.map(|o| format!(r#""options":{o}"#)),
                    other.map(|t| format!(r#""other_config":{t}"#)),
                    dup,
                ], ",")
            }),
    ]
}

/// A transaction record's text: the fields the scan reads, in any order, sometimes twice or with
/// values of other shapes, other tables, and whitespace.
fn txn_literal() -> impl Strategy<Value = String> {
    let date = prop_oneof![
        any::<i64>().prop_map(|d| d.to_string()),
        (0i64..4_000_000_000_000).prop_map(|d| d.to_string()),
        Just("1.5".to_owned()),
        Just("-0".to_owned()),
        Just("null".to_owned()),
        Just("99999999999999999999".to_owned()),
    ];
    let comment = prop_oneof![
        key_literal().prop_map(|k| format!(
            r#""ovs-vsctl set Interface t1 options:psk={}""#,
            k.trim_matches('"')
        )),
        Just(r#""ovs-vsctl -- set Interface t2 options:psk=\"k q\"""#.to_owned()),
        Just(r#""a comment""#.to_owned()),
        Just("null".to_owned()),
    ];
    let uuid = prop_oneof![Just("u1"), Just("u2"), Just("u3")];
    let iface = prop_oneof![
        8 => prop::collection::vec((uuid, row_literal()), 0..4).prop_map(|rows| {
            let m: Vec<String> = rows.into_iter().map(|(u, r)| format!(r#""{u}":{r}"#)).collect();
            format!("{{{}}}", m.join(","))
        }),
        1 => Just("null".to_owned()),
        1 => Just("[]".to_owned()),
    ];
    (
        prop::option::of(date),
        prop::option::of(prop_oneof![Just("true"), Just("false"), Just("null")]),
        prop::option::of(comment),
        prop::option::of(iface),
        prop::option::of(json_tree()),
        prop::collection::vec(any::<bool>(), 5),
        prop_oneof![Just(","), Just(" , "), Just(",\n")],
    )
        .prop_map(|(date, diff, comment, iface, other, flags, sep)| {
            let iface = iface.map(|i| format!(r#""Interface":{i}"#));
            let date = date.map(|d| format!(r#""_date":{d}"#));
            let mut parts = vec![
                date.clone(),
                diff.map(|d| format!(r#""_is_diff":{d}"#)),
                comment.map(|c| format!(r#""_comment":{c}"#)),
                iface.clone(),
                other.map(|t| format!(r#""Bridge":{{"b":{t}}}"#)),
            ];
            if flags[0] {
                parts.reverse();
            }
            if flags[1] {
                parts.push(date);
            }
            if flags[2] {
                parts.push(iface);
            }
            let mut text = members(parts, sep);
            if flags[3] {
                text.push('\n');
            }
            if flags[4] {
                text = format!(" {text} ");
            }
            text
        })
}

/// Both readers on the same bytes, with the file size known and not.
fn same_scan(data: &[u8]) -> Result<(), TestCaseError> {
    let key = FingerprintKey::given("differential");
    for size in [Some(data.len() as u64), None] {
        let new = scan_reader(data, size, 1 << 16, &key).map_err(|e| e.to_string());
        let old = scan_reader_reference(data, size, 1 << 16, &key).map_err(|e| e.to_string());
        prop_assert_eq!(format!("{new:?}"), format!("{old:?}"));
    }
    Ok(())
}

/// The differential properties run 64 cases unless PROPTEST_CASES says otherwise (each case runs
/// both readers eight times).
fn differential_cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        ..cases()
    }
}

proptest! {
    #![proptest_config(differential_cases())]

    #[test]
    fn scanner_matches_the_full_decoder_on_generated_logs(txns in prop::collection::vec(txn_literal(), 0..6), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..2), cut in prop::option::of(any::<usize>())) {
        let mut data = record(b"{\"name\":\"Open_vSwitch\",\"tables\":{}}\n");
        for t in &txns {
            data.extend(record(t.as_bytes()));
        }
        same_scan(&data)?;
        for (pos, x) in &flips {
            let p = pos % data.len();
            data[p] ^= x;
        }
        if let Some(c) = cut {
            data.truncate(c % (data.len() + 1));
        }
        same_scan(&data)?;
    }

    #[test]
    fn scanner_matches_the_full_decoder_on_arbitrary_and_damaged_bytes(bytes in prop::collection::vec(any::<u8>(), 0..800), header in any::<bool>(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>()) {
        let mut data = if header { b"OVSDB JSON ".to_vec() } else { vec![] };
        data.extend_from_slice(&bytes);
        same_scan(&data)?;
        let mut valid = valid_log();
        for (pos, x) in &flips {
            let p = pos % valid.len();
            valid[p] ^= x;
        }
        same_scan(&valid)?;
        valid.truncate(cut % (valid.len() + 1));
        same_scan(&valid)?;
    }
}

fn valid_log() -> Vec<u8> {
    let mut v = record(b"{\"name\":\"Open_vSwitch\",\"version\":\"8.3.1\",\"tables\":{}}\n");
    v.extend(record(br#"{"_date":1,"_is_diff":true,"Interface":{"u1":{"name":"t1","type":"geneve","options":["map",[["psk","k-one"],["remote_ip","10.0.0.2"]]]}}}
"#));
    v.extend(record(br#"{"_date":2,"_is_diff":true,"_comment":"ovs-vsctl set Interface t1 options:psk=k-two","Interface":{"u1":{"options":["map",[["psk","k-two"]]]}}}
"#));
    v.extend(record(
        br#"{"_date":3,"_is_diff":true,"Bridge":{"b":{"name":"br-int"}}}
"#,
    ));
    v
}

/// A log of the benchmark's shape, larger than the scanner's buffers, with one record larger than
/// a buffer, read whole and in short pieces: both readers agree.
#[test]
fn scanner_matches_the_full_decoder_across_buffers() {
    struct Short<'a>(&'a [u8], usize);
    impl std::io::Read for Short<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut data = record(b"{\"name\":\"Open_vSwitch\",\"tables\":{}}\n");
    for k in 0..20_000u32 {
        let key = format!("key-{:09}", k / 3000);
        let body = if k % 3 == 0 {
            format!(
                r#"{{"_date":{k},"_is_diff":true,"_comment":"ovs-vsctl set Interface t{} options:psk={key}","Interface":{{"u{}":{{"options":["map",[["psk","{key}"]]]}}}}}}"#,
                k % 50,
                k % 50
            )
        } else if k % 3 == 1 {
            format!(
                r#"{{"_date":{k},"_is_diff":true,"Interface":{{"u{}":null,"v{k}":{{"name":"t{}","type":"geneve","options":["map",[["psk","{key}"],["remote_ip","10.0.0.1"]]]}}}}}}"#,
                k % 50,
                k % 50
            )
        } else {
            format!(r#"{{"_date":{k},"Bridge":{{"b":{{"name":"br-int"}}}}}}"#)
        };
        data.extend(record(format!("{body}\n").as_bytes()));
        if k == 10_000 {
            let big = format!(
                r#"{{"_date":{k},"Port":{{"p":{{"name":"{}"}}}}}}"#,
                "x".repeat(3 << 19)
            );
            data.extend(record(big.as_bytes()));
        }
    }
    assert!(data.len() > 3 << 20);
    let key = FingerprintKey::given("differential");
    let old = scan_reader_reference(&data[..], Some(data.len() as u64), 8 << 20, &key).unwrap();
    assert!(old.damage.is_none());
    assert!(old.keys.len() >= 5);
    for piece in [usize::MAX, 65_536] {
        for size in [Some(data.len() as u64), None] {
            let new = scan_reader(Short(&data, piece), size, 8 << 20, &key).unwrap();
            assert_eq!(format!("{new:?}"), format!("{old:?}"), "reads of {piece}");
        }
    }
    // Damage past the first buffer: a flipped byte and a truncation.
    let mut bad = data.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x20;
    for d in [&bad[..], &data[..data.len() - 100]] {
        let old = scan_reader_reference(d, Some(d.len() as u64), 8 << 20, &key).unwrap();
        let new = scan_reader(d, Some(d.len() as u64), 8 << 20, &key).unwrap();
        assert!(old.damage.is_some());
        assert_eq!(format!("{new:?}"), format!("{old:?}"));
    }
}
