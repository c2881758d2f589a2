//! `psk-guard check` on real ovsdb-server nodes: each finding appears when its condition holds and
//! disappears when it is fixed.

use crate::harness::{check_json, codes, finding, Node};

const STRONG: &str = "q8Zr2LkVn0xWf7TyPb3Hs9Jd1Mc6Ge4A";
const STRONG2: &str = "Vb7Nq2Xr9Lm4Kc8Tz1Wp6Hd3Fs5Jg0Y";

/// The tunnels a key finding lists: (interface, peer node, remote IP).
fn tunnels_of(f: &serde_json::Value) -> Vec<(String, String, String)> {
    f["details"]["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or("").to_owned();
            (s("interface"), s("peer_node"), s("remote_ip"))
        })
        .collect()
}

#[test]
fn plaintext_psk_one_finding_per_key_listing_its_tunnels_and_no_key() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", STRONG);
    node.add_tunnel("n3-aaa111", "node3", "10.0.0.4", STRONG);
    let (r, code) = check_json(&node, &[]);
    let fs: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "psk-plaintext-in-ovsdb")
        .collect();
    assert_eq!(
        fs.len(),
        1,
        "one finding for the one key of 3 tunnels: {r:#}"
    );
    assert_eq!(fs[0]["subject"]["kind"], "key");
    assert_eq!(fs[0]["details"]["interfaces"], 3);
    assert_eq!(
        tunnels_of(fs[0]),
        [
            ("n1-abc123", "node1", "10.0.0.2"),
            ("n2-def456", "node2", "10.0.0.3"),
            ("n3-aaa111", "node3", "10.0.0.4"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert_eq!(
        fs[0]["location"]["path"].as_str().unwrap(),
        node.conf_db.display().to_string(),
        "a key lives in conf.db"
    );
    // tight modes: medium, and exit 0 at the default --fail-on high
    assert_eq!(fs[0]["severity"], "medium");
    assert_eq!(code, 0, "{r:#}");
    assert!(!r.to_string().contains(STRONG));

    // certificate mode: no PSK, remote_name set -> the good state
    for n in ["n1-abc123", "n2-def456", "n3-aaa111"] {
        node.vsctl(&["remove", "Interface", n, "options", "psk"]);
        node.vsctl(&["set", "Interface", n, "options:remote_name=peer"]);
    }
    let (r, _) = check_json(&node, &[]);
    assert!(!codes(&r).contains(&"psk-plaintext-in-ovsdb".to_string()));
    assert_eq!(finding(&r, "ipsec-cert-mode").unwrap()["severity"], "info");
}

#[test]
fn plaintext_is_critical_when_others_can_read_conf_db_or_reach_the_socket() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.chmod(&node.run_dir, 0o755);
    node.chmod(&node.conf_db, 0o644);
    let (r, code) = check_json(&node, &[]);
    let f = finding(&r, "psk-plaintext-in-ovsdb").unwrap();
    assert_eq!(f["severity"], "critical");
    assert!(f["details"]["exposed_to"]
        .to_string()
        .contains("conf.db is readable by all users"));
    assert_eq!(code, 1);
    // The run directory alone closing access is enough (Antrea's v0.13 fix).
    node.chmod(&node.run_dir, 0o750);
    let (r, _) = check_json(&node, &[]);
    assert_eq!(
        finding(&r, "psk-plaintext-in-ovsdb").unwrap()["severity"],
        "medium"
    );
    // A world-connectable socket with a traversable path is an exposure too.
    node.chmod(&node.run_dir, 0o755);
    node.chmod(&node.conf_db, 0o640);
    node.chmod(&node.sock, 0o777);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "psk-plaintext-in-ovsdb").unwrap();
    assert_eq!(f["severity"], "critical");
    assert!(f["details"]["exposed_to"].to_string().contains("db.sock"));
}

#[test]
fn default_short_and_low_entropy_keys() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", "changeme");
    let (r, code) = check_json(&node, &[]);
    assert_eq!(
        finding(&r, "psk-default-key").unwrap()["severity"],
        "critical"
    );
    assert_eq!(code, 1);
    node.set_psk("n1-abc123", "Xy7#kq");
    let (r, _) = check_json(&node, &[]);
    assert!(finding(&r, "psk-default-key").is_none());
    assert_eq!(finding(&r, "psk-too-short").unwrap()["severity"], "high");
    node.set_psk("n1-abc123", "abababababababababababab");
    let (r, _) = check_json(&node, &[]);
    assert!(finding(&r, "psk-too-short").is_none());
    assert!(finding(&r, "psk-low-entropy").is_some());
    node.set_psk("n1-abc123", STRONG);
    let (r, _) = check_json(&node, &["--no-history"]);
    for c in ["psk-default-key", "psk-too-short", "psk-low-entropy"] {
        assert!(finding(&r, c).is_none(), "{c} after a strong key");
    }
}

#[test]
fn mixed_keys_and_expected_fingerprint() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", STRONG2);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "psk-mixed-keys").unwrap();
    assert_eq!(f["severity"], "high");
    assert_eq!(
        f["details"]["tunnels_per_key"].as_object().unwrap().len(),
        2
    );
    // The fingerprint of STRONG under salt "test", taken from the report itself.
    let fp = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "psk-plaintext-in-ovsdb" && tunnels_of(f)[0].0 == "n1-abc123")
        .unwrap()["details"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let (r, _) = check_json(&node, &["--expect-fingerprint", &fp]);
    let unexpected: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "psk-unexpected-fingerprint")
        .collect();
    assert_eq!(unexpected.len(), 1);
    assert_eq!(tunnels_of(unexpected[0])[0].0, "n2-def456");
    node.set_psk("n2-def456", STRONG);
    let (r, _) = check_json(&node, &["--expect-fingerprint", &fp]);
    assert!(finding(&r, "psk-mixed-keys").is_none());
    assert!(finding(&r, "psk-unexpected-fingerprint").is_none());
}

#[test]
fn tunnel_found_by_port_marker_or_by_type() {
    let node = Node::start();
    // Marked by the Port's external_ids only (type vxlan, no remote_ip)
    node.vsctl(&[
        "add-port",
        "br-int",
        "m1",
        "--",
        "set",
        "Interface",
        "m1",
        "type=vxlan",
        &format!("options:psk={STRONG}"),
        "--",
        "set",
        "Port",
        "m1",
        "external_ids:antrea-type=ipsec-tunnel",
    ]);
    // Not marked, but a gre tunnel with a psk
    node.vsctl(&[
        "add-port",
        "br-int",
        "g1",
        "--",
        "set",
        "Interface",
        "g1",
        "type=gre",
        "options:remote_ip=10.9.9.9",
        &format!("options:psk={STRONG}"),
    ]);
    // An internal port with an unrelated option is not a tunnel
    node.vsctl(&[
        "add-port",
        "br-int",
        "i1",
        "--",
        "set",
        "Interface",
        "i1",
        "type=internal",
    ]);
    let (r, _) = check_json(&node, &[]);
    let subjects: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "psk-plaintext-in-ovsdb")
        .flat_map(tunnels_of)
        .map(|t| t.0)
        .collect();
    assert_eq!(subjects, vec!["g1", "m1"]);
}

#[test]
fn no_tunnels_is_reported() {
    let node = Node::start();
    let (r, code) = check_json(&node, &[]);
    assert!(finding(&r, "no-ipsec-tunnels").is_some());
    assert_eq!(code, 0);
}

#[test]
fn directory_file_and_socket_modes() {
    let node = Node::start();
    let (r, _) = check_json(&node, &[]);
    for c in [
        "run-dir-mode-too-open",
        "ovs-dir-mode-too-open",
        "conf-db-mode-too-open",
        "db-sock-mode-too-open",
        "ctl-sock-mode-too-open",
        "lock-file-mode-too-open",
    ] {
        assert!(
            finding(&r, c).is_none(),
            "{c} on a node with Antrea's modes: {r:#}"
        );
    }
    node.chmod(&node.run_dir, 0o755);
    node.chmod(&node.ovs_dir, 0o777);
    node.chmod(&node.conf_db, 0o644);
    node.chmod(&node.sock, 0o777);
    node.chmod(&node.ctl(), 0o777);
    node.chmod(&node.ovs_dir.join(".conf.db.~lock~"), 0o666);
    let (r, code) = check_json(&node, &[]);
    for (c, sev, observed) in [
        ("run-dir-mode-too-open", "high", "mode 0755"),
        ("ovs-dir-mode-too-open", "high", "mode 0777"),
        ("conf-db-mode-too-open", "high", "mode 0644"),
        ("db-sock-mode-too-open", "high", "mode 0777"),
        ("ctl-sock-mode-too-open", "high", "mode 0777"),
        ("lock-file-mode-too-open", "medium", "mode 0666"),
    ] {
        let f = finding(&r, c).unwrap_or_else(|| panic!("{c} missing: {r:#}"));
        assert_eq!(f["severity"], sev, "{c}");
        assert_eq!(f["observed"], observed, "{c}");
        assert!(!f["remediation"].as_str().unwrap().is_empty());
    }
    assert_eq!(code, 1);
    node.chmod(&node.run_dir, 0o700);
    node.chmod(&node.ovs_dir, 0o755);
    node.chmod(&node.conf_db, 0o600);
    node.chmod(&node.sock, 0o750);
    node.chmod(&node.ctl(), 0o750);
    node.chmod(&node.ovs_dir.join(".conf.db.~lock~"), 0o600);
    let (r, code) = check_json(&node, &[]);
    assert!(codes(&r).iter().all(|c| !c.ends_with("-too-open")), "{r:#}");
    assert_eq!(code, 0);
}

#[test]
fn owners_other_than_root() {
    let node = Node::start();
    nix::unistd::chown(&node.run_dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    nix::unistd::chown(&node.conf_db, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (r, _) = check_json(&node, &[]);
    assert_eq!(
        finding(&r, "run-dir-owner-not-root").unwrap()["observed"],
        "owner uid 65534"
    );
    assert!(finding(&r, "conf-db-owner-not-root").is_some());
    nix::unistd::chown(&node.run_dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    nix::unistd::chown(&node.conf_db, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    let (r, _) = check_json(&node, &[]);
    assert!(finding(&r, "run-dir-owner-not-root").is_none());
    assert!(finding(&r, "conf-db-owner-not-root").is_none());
}

#[test]
fn absent_and_uninspectable_paths_are_their_own_states() {
    let node = Node::start();
    // A run dir that does not exist.
    let missing = node.dir.path().join("nope");
    let out = crate::harness::psk_guard(&[
        "check",
        "--db",
        &node.db_arg(),
        "--run-dir",
        missing.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let absent: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "path-absent")
        .collect();
    assert!(absent
        .iter()
        .any(|f| f["subject"]["name"] == missing.display().to_string()));
    assert!(!r["incomplete"].as_array().unwrap().is_empty());
    // A run dir below a regular file cannot be inspected (ENOTDIR), distinct from absent.
    let file = node.dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("run");
    let out = crate::harness::psk_guard(&[
        "check",
        "--db",
        &node.db_arg(),
        "--run-dir",
        under.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = finding(&r, "path-unreadable").expect("path-unreadable");
    assert_eq!(f["subject"]["name"], under.display().to_string());
}

#[test]
fn ovsdb_down_still_checks_files_and_says_what_was_not_checked() {
    let mut node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.stop();
    // A clean stop removes the socket.
    let (r, code) = check_json(&node, &["--no-history"]);
    let f = finding(&r, "ovsdb-unreachable").unwrap();
    assert!(
        f["observed"].as_str().unwrap().contains("does not exist"),
        "{f}"
    );
    assert!(r["incomplete"].to_string().contains("tunnel keys"));
    assert_eq!(code, 2, "nothing at/above high, but a part was not checked");
    // A crashed server leaves a socket nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&node.sock).unwrap());
    node.chmod(&node.sock, 0o750);
    let (r, code) = check_json(&node, &["--no-history"]);
    assert!(finding(&r, "ovsdb-unreachable").unwrap()["observed"]
        .as_str()
        .unwrap()
        .contains("connection refused"));
    assert_eq!(code, 2);
    // File findings are still made, and they decide the exit code.
    node.chmod(&node.conf_db, 0o644);
    let (r, code) = check_json(&node, &["--no-history"]);
    assert!(finding(&r, "conf-db-mode-too-open").is_some());
    assert_eq!(code, 1);
}

#[test]
fn history_of_old_keys_is_part_of_check() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG2);
    node.set_psk("n1-abc123", STRONG);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "psk-history-on-disk").unwrap();
    assert_eq!(f["severity"], "high");
    assert_eq!(
        f["details"]["old_fingerprints"].as_array().unwrap().len(),
        1
    );
    let (r, _) = check_json(&node, &["--no-history"]);
    assert!(finding(&r, "psk-history-on-disk").is_none());
}

#[test]
fn fail_on_threshold_and_bad_arguments() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    let (_, code) = check_json(&node, &["--fail-on", "medium"]);
    assert_eq!(code, 1);
    let (_, code) = check_json(&node, &["--fail-on", "never"]);
    assert_eq!(code, 0);
    let out = crate::harness::psk_guard(&["check", "--db", "tcp:1.2.3.4:6640"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unix:PATH"));
    let out = crate::harness::psk_guard(&["check", "--expect-fingerprint", "hmac-sha256:00"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fingerprint-salt"));
}

/// A key's finding points at the newest conf.db record that holds the key (the region of its
/// SARIF result): the key lives in conf.db as much as behind db.sock.
#[test]
fn a_key_finding_is_located_at_its_newest_conf_db_record() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", STRONG);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "psk-plaintext-in-ovsdb").expect("the key reported");
    let (o, l) = (
        f["location"]["byte_offset"].as_u64().expect("an offset") as usize,
        f["location"]["byte_length"].as_u64().expect("a length") as usize,
    );
    let db = std::fs::read(&node.conf_db).unwrap();
    let record = &db[o..o + l];
    assert!(record.starts_with(b"OVSDB JSON "), "a record starts there");
    assert!(
        record.windows(STRONG.len()).any(|w| w == STRONG.as_bytes()),
        "the record at {o}..{} holds the key",
        o + l
    );
    assert!(
        !db[o + l..]
            .windows(STRONG.len())
            .any(|w| w == STRONG.as_bytes()),
        "no newer record holds it"
    );
    use crate::formats::{assert_valid_sarif, json_of, run, sarif_result};
    let sarif = json_of(&run(&node, "check", &["-o", "sarif"]));
    assert_valid_sarif(&sarif);
    let res = sarif_result(&sarif, "psk-plaintext-in-ovsdb");
    let region = &res["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["byteOffset"].as_u64(), Some(o as u64), "{region}");
    assert_eq!(region["byteLength"].as_u64(), Some(l as u64), "{region}");
}
