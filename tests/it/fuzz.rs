//! Property-based fuzzing of every decoder that reads untrusted bytes: JSON-RPC framing, the
//! message envelope, OVSDB values and transact replies, and the conf.db log reader. Properties:
//! no panic, no unbounded allocation, and valid input decodes exactly. The case count comes from
//! PROPTEST_CASES (scripts/fuzz runs 1,000,000 per target; the suite runs the default).

use proptest::prelude::*;
use psk_guard::checks::tunnels::decode_reply;
use psk_guard::forensics::scan_reader;
use psk_guard::ovsdb::client::fuzz_classify;
use psk_guard::ovsdb::frame::FrameBuf;
use psk_guard::ovsdb::types::TransactReply;
use psk_guard::ovsdb::{Operation, Value};
use psk_guard::secret::FingerprintKey;
use sha1::Digest;

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

fn record(body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "OVSDB JSON {} {}\n",
        body.len(),
        hex::encode(sha1::Sha1::digest(body))
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
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
