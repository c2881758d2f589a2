//! conf.db history (`scan-db`), its findings, and `fix` (compaction and modes) on real servers;
//! damaged files through the binary.

use std::time::Duration;

use psk_guard::ovsdb::client::Options;
use psk_guard::ovsdb::{Atom, Client, Condition, Operation, Row, Value};

use crate::harness::{psk_guard, record, Node};
use crate::output::assert_no_key;

const K1: &str = "First-Key-aa11bb22cc33dd44";
const K2: &str = "Second-Key-ee55ff66aa77bb88";
const K3: &str = "Third-Key-cc99dd00ee11ff22";

fn transact_set_psk(node: &Node, iface: &str, psk: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::connect(
            &node.sock,
            Options {
                timeout: Duration::from_secs(5),
                ..Options::default()
            },
        )
        .await
        .unwrap();
        let mut row = Row::new();
        row.insert(
            "options".into(),
            Value::string_map(&[("psk", psk), ("remote_ip", "10.0.0.2")]),
        );
        c.transact_ok(
            "Open_vSwitch",
            &[Operation::Update {
                table: "Interface".into(),
                conditions: vec![Condition::new(
                    "name",
                    "==",
                    Value::Atom(Atom::string(iface)),
                )],
                row,
            }],
        )
        .await
        .unwrap();
    });
}

fn scan_json(path: &std::path::Path) -> (serde_json::Value, i32) {
    let out = psk_guard(&[
        "scan-db",
        path.to_str().unwrap(),
        "-o",
        "json",
        "--fingerprint-salt",
        "t",
    ]);
    assert_no_key("scan-db", &out.stdout, &[K1, K2, K3]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (v, out.status.code().unwrap())
}

fn three_keys() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", K1); // ovs-vsctl: key also in _comment
    std::thread::sleep(Duration::from_millis(5));
    transact_set_psk(&node, "n1-abc123", K2); // direct transact: row data only
    std::thread::sleep(Duration::from_millis(5));
    node.set_psk("n1-abc123", K3); // ovs-vsctl again
    node
}

#[test]
fn scan_finds_three_keys_with_status_and_times() {
    let node = three_keys();
    let (r, code) = scan_json(&node.conf_db);
    let keys = r["data"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{r:#}");
    let current: Vec<bool> = keys
        .iter()
        .map(|k| k["current"].as_bool().unwrap())
        .collect();
    assert_eq!(
        current,
        vec![false, false, true],
        "oldest first; only the last is current"
    );
    for k in keys {
        assert!(k["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"));
        assert_eq!(k["interfaces"], serde_json::json!(["n1-abc123"]));
        assert!(k["first_seen_ms"].as_i64().unwrap() <= k["last_seen_ms"].as_i64().unwrap());
    }
    assert!(
        keys[0]["in_comments"].as_bool().unwrap(),
        "ovs-vsctl writes its command line into _comment"
    );
    assert!(
        !keys[1]["in_comments"].as_bool().unwrap(),
        "a direct transact leaves no comment"
    );
    assert!(keys[0]["first_seen_ms"].as_i64() < keys[1]["first_seen_ms"].as_i64());
    assert!(keys[1]["first_seen_ms"].as_i64() < keys[2]["first_seen_ms"].as_i64());
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "psk-history-on-disk")
        .unwrap();
    assert_eq!(f["severity"], "high");
    assert_eq!(
        f["details"]["old_fingerprints"].as_array().unwrap().len(),
        2
    );
    assert_eq!(code, 1);
    // The same salt gives the same fingerprints as check's.
    let out = psk_guard(&[
        "check",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
        "-o",
        "json",
        "--fingerprint-salt",
        "t",
    ]);
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = c["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "psk-plaintext-in-ovsdb")
        .unwrap()["details"]["fingerprint"]
        .clone();
    assert_eq!(live, keys[2]["fingerprint"]);
}

#[test]
fn fix_compacts_and_no_old_key_bytes_remain() {
    let node = three_keys();
    let before = std::fs::read(&node.conf_db).unwrap();
    assert!(contains(&before, K1.as_bytes()) && contains(&before, K2.as_bytes()));
    let out = psk_guard(&[
        "fix",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_no_key("fix", &out.stdout, &[K1, K2, K3]);
    assert_no_key("fix", &out.stderr, &[K1, K2, K3]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plan") && stderr.contains("ovsdb-server/compact"),
        "{stderr}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["verified"], true, "{r:#}");
    assert_eq!(out.status.code(), Some(0));
    let after = std::fs::read(&node.conf_db).unwrap();
    assert!(
        !contains(&after, K1.as_bytes()),
        "old key 1 still in conf.db"
    );
    assert!(
        !contains(&after, K2.as_bytes()),
        "old key 2 still in conf.db"
    );
    assert!(contains(&after, K3.as_bytes()), "the current key must stay");
    let (r, code) = scan_json(&node.conf_db);
    let keys = r["data"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["current"], true);
    assert_eq!(code, 0);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn fix_tightens_modes_and_never_loosens() {
    let node = three_keys();
    node.chmod(&node.run_dir, 0o755);
    node.chmod(&node.sock, 0o777);
    node.chmod(&node.conf_db, 0o600); // stricter than Antrea's: compaction must not loosen it
    let out = psk_guard(&[
        "fix",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node.mode(&node.run_dir), 0o750);
    assert_eq!(node.mode(&node.sock), 0o770);
    assert_eq!(
        node.mode(&node.conf_db),
        0o600,
        "compaction recreates conf.db as 0640; fix restores the stricter mode"
    );
}

#[test]
fn dry_run_changes_nothing() {
    let node = three_keys();
    node.chmod(&node.run_dir, 0o755);
    let before = std::fs::read(&node.conf_db).unwrap();
    let out = psk_guard(&[
        "fix",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1), "something to fix");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dry run"));
    assert_eq!(node.mode(&node.run_dir), 0o755);
    assert_eq!(std::fs::read(&node.conf_db).unwrap(), before);
}

#[test]
fn fix_without_a_running_server_changes_nothing() {
    let mut node = three_keys();
    node.chmod(&node.run_dir, 0o755);
    node.stop();
    let before = std::fs::read(&node.conf_db).unwrap();
    let out = psk_guard(&[
        "fix",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Changed nothing") && stderr.contains("ovsdb-server.pid"),
        "{stderr}"
    );
    assert_eq!(node.mode(&node.run_dir), 0o755);
    assert_eq!(std::fs::read(&node.conf_db).unwrap(), before);
}

// ---- damaged files, through the binary ----

fn scan_bytes(bytes: &[u8]) -> (std::process::Output, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conf.db");
    std::fs::write(&p, bytes).unwrap();
    let out = psk_guard(&["scan-db", p.to_str().unwrap(), "-o", "json"]);
    let v = serde_json::from_slice(&out.stdout).ok();
    (out, v)
}

fn real_db() -> Vec<u8> {
    let node = three_keys();
    std::fs::read(&node.conf_db).unwrap()
}

/// Where the damage starts is a SARIF region (`byteOffset`) on conf.db, the same offset the JSON
/// report gives, so code scanning points at it.
/// `scan-db FILE -o FORMAT`'s stdout, parsed.
fn scan_db(p: &std::path::Path, format: &str) -> serde_json::Value {
    crate::formats::json_of(&psk_guard(&["scan-db", p.to_str().unwrap(), "-o", format]))
}

#[test]
fn damage_offset_is_a_sarif_region() {
    let good = real_db();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conf.db");
    std::fs::write(&p, &good[..good.len() - 10]).unwrap();
    let json = scan_db(&p, "json");
    let f = crate::harness::finding(&json, "conf-db-log-damaged").expect("damage reported");
    let offset = f["details"]["offset"].as_u64().unwrap();
    assert_eq!(f["location"]["byte_offset"].as_u64(), Some(offset));
    let sarif = scan_db(&p, "sarif");
    let r = crate::formats::sarif_result(&sarif, "conf-db-log-damaged");
    let loc = &r["locations"][0]["physicalLocation"];
    assert_eq!(loc["region"]["byteOffset"].as_u64(), Some(offset), "{loc}");
    assert!(loc["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("conf.db"));
}

/// Old keys in conf.db's history are located: the finding's location (JSON) and SARIF region
/// (`byteOffset`, `byteLength`) are the newest record that still holds an old key, exactly that
/// record's bytes; each old key's own record is in the details. Valid SARIF 2.1.0.
#[test]
fn old_keys_in_history_are_a_sarif_region_of_their_record() {
    let db = real_db();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conf.db");
    std::fs::write(&p, &db).unwrap();
    let json = scan_db(&p, "json");
    let f = crate::harness::finding(&json, "psk-history-on-disk").expect("old keys reported");
    let offset = f["location"]["byte_offset"].as_u64().expect("an offset") as usize;
    let len = f["location"]["byte_length"].as_u64().expect("a length") as usize;
    // The span is one whole record: its header, its body, and then the next record or the end.
    let record = &db[offset..offset + len];
    assert!(
        record.starts_with(b"OVSDB JSON "),
        "{:?}",
        String::from_utf8_lossy(record)
    );
    assert!(
        offset + len == db.len() || db[offset + len..].starts_with(b"OVSDB JSON "),
        "the span ends at a record boundary"
    );
    // K2 is the newest old key (K3 replaced it): its record is the one located.
    assert!(record.windows(K2.len()).any(|w| w == K2.as_bytes()));
    let per_key = f["details"]["old_key_records"].as_array().unwrap();
    assert_eq!(per_key.len(), 2, "{f:#}");
    for k in per_key {
        let (o, l) = (
            k["byte_offset"].as_u64().unwrap() as usize,
            k["byte_length"].as_u64().unwrap() as usize,
        );
        assert!(db[o..o + l].starts_with(b"OVSDB JSON "));
        assert!(o + l <= offset + len);
    }
    let sarif = scan_db(&p, "sarif");
    crate::formats::assert_valid_sarif(&sarif);
    let r = crate::formats::sarif_result(&sarif, "psk-history-on-disk");
    let loc = &r["locations"][0]["physicalLocation"];
    assert_eq!(
        loc["region"]["byteOffset"].as_u64(),
        Some(offset as u64),
        "{loc}"
    );
    assert_eq!(
        loc["region"]["byteLength"].as_u64(),
        Some(len as u64),
        "{loc}"
    );
    assert!(loc["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("conf.db"));
    crate::output::assert_no_key("scan-db SARIF", sarif.to_string().as_bytes(), &[K1, K2, K3]);
}

#[test]
fn damaged_files_give_documented_errors_or_partial_results() {
    let good = real_db();
    // truncated: partial result, damage reported, exit 1 (old keys before the cut) or 2
    let (out, v) = scan_bytes(&good[..good.len() - 10]);
    let v = v.unwrap();
    assert_eq!(v["data"]["complete"], false);
    assert!(v["findings"].to_string().contains("conf-db-log-damaged"));
    assert!(v["findings"].to_string().contains("truncated"));
    assert!(out.status.code() == Some(1) || out.status.code() == Some(2));
    // bit flip in the last record: SHA-1 mismatch
    let mut flip = good.clone();
    let n = flip.len();
    flip[n - 5] ^= 0x01;
    let (_, v) = scan_bytes(&flip);
    assert!(v.unwrap()["findings"]
        .to_string()
        .contains("SHA-1 mismatch"));
    // wrong magic, empty file, clustered: clear errors, exit 2
    for (bytes, msg) in [
        (b"SQLite format 3\0".to_vec(), "not an OVSDB database"),
        (vec![], "empty"),
        (
            b"CLUSTER JSON 2 0000000000000000000000000000000000000000\n{}".to_vec(),
            "clustered",
        ),
    ] {
        let (out, _) = scan_bytes(&bytes);
        assert_eq!(out.status.code(), Some(2));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(msg), "{e}");
    }
    // a 0-byte record after the schema
    let mut zero = record(b"{\"name\":\"Open_vSwitch\",\"tables\":{}}\n");
    zero.extend(record(b""));
    let (_, v) = scan_bytes(&zero);
    assert!(v.unwrap()["findings"]
        .to_string()
        .contains("conf-db-log-damaged"));
    // a record with a huge declared length: no huge allocation, a clear reason
    let mut huge = record(b"{\"name\":\"Open_vSwitch\",\"tables\":{}}\n");
    huge.extend_from_slice(
        b"OVSDB JSON 18446744073709551 0000000000000000000000000000000000000000\n{}",
    );
    let (_, v) = scan_bytes(&huge);
    let v = v.unwrap();
    assert!(v["findings"].to_string().contains("limit"), "{v:#}");
    assert_eq!(v["data"]["records"], 1);
}

#[test]
fn missing_and_unreadable_files() {
    let out = psk_guard(&["scan-db", "/nonexistent/conf.db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/conf.db"));
    let dir = tempfile::tempdir().unwrap();
    let out = psk_guard(&["scan-db", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
