//! The node's other leak channels (issue 11): IPsec downgrades in OVSDB, OVSDB remotes on the
//! network, certificate-mode private keys, and keys in log files. Real ovsdb-server throughout.

use crate::harness::{check_json, codes, finding, Node};

const STRONG: &str = "q8Zr2LkVn0xWf7TyPb3Hs9Jd1Mc6Ge4A";

fn findings<'a>(r: &'a serde_json::Value, code: &str) -> Vec<&'a serde_json::Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

fn three_tunnels() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", STRONG);
    node.add_tunnel("n3-fed789", "node3", "10.0.0.4", STRONG);
    node
}

#[test]
fn ipsec_port_stripped_of_its_psk_is_unencrypted() {
    let node = three_tunnels();
    let (r, _) = check_json(&node, &[]);
    assert!(!codes(&r).contains(&"ipsec-tunnel-unencrypted".to_string()));
    node.vsctl(&["remove", "Interface", "n2-def456", "options", "psk"]);
    let (r, code) = check_json(&node, &[]);
    let fs = findings(&r, "ipsec-tunnel-unencrypted");
    assert_eq!(fs.len(), 1, "{r:#}");
    assert_eq!(fs[0]["subject"]["name"], "n2-def456");
    assert_eq!(fs[0]["severity"], "high");
    assert_eq!(fs[0]["details"]["peer_node"], "node2");
    assert_eq!(code, 1);
    // Certificate mode (remote_name instead of psk) is not a downgrade.
    node.vsctl(&["set", "Interface", "n2-def456", "options:remote_name=node2"]);
    let (r, _) = check_json(&node, &[]);
    assert!(findings(&r, "ipsec-tunnel-unencrypted").is_empty(), "{r:#}");
}

#[test]
fn tunnel_type_that_differs_from_its_peers() {
    let node = three_tunnels();
    node.vsctl(&["set", "Interface", "n3-fed789", "type=vxlan"]);
    let (r, code) = check_json(&node, &[]);
    let fs = findings(&r, "ipsec-tunnel-type-mismatch");
    assert_eq!(fs.len(), 1, "{r:#}");
    assert_eq!(fs[0]["subject"]["name"], "n3-fed789");
    assert_eq!(fs[0]["severity"], "high");
    assert_eq!(fs[0]["details"]["tunnel_type"], "vxlan");
    assert!(fs[0]["observed"].as_str().unwrap().contains("geneve"));
    assert_eq!(code, 1);
    // A marked port whose interface is no tunnel at all.
    node.vsctl(&["set", "Interface", "n3-fed789", "type=internal"]);
    let (r, _) = check_json(&node, &[]);
    let fs = findings(&r, "ipsec-tunnel-type-mismatch");
    assert_eq!(fs.len(), 1, "{r:#}");
    assert_eq!(fs[0]["details"]["tunnel_type"], "internal");
}

#[test]
fn manager_row_with_a_tcp_target_exposes_the_database() {
    let mut node = three_tunnels();
    let (r, _) = check_json(&node, &[]);
    assert!(findings(&r, "ovsdb-network-remote").is_empty(), "{r:#}");
    // set-manager creates the Manager row and references it from Open_vSwitch:manager_options.
    node.vsctl(&["set-manager", "ptcp:0:127.0.0.1"]);
    let (r, code) = check_json(&node, &[]);
    let fs = findings(&r, "ovsdb-network-remote");
    assert_eq!(fs.len(), 1, "{r:#}");
    let f = fs[0];
    assert_eq!(f["details"]["source"], "Manager row");
    assert_eq!(f["details"]["in_manager_options"], true);
    // This ovsdb-server was started without a db: remote: the row is not served yet.
    assert_eq!(f["details"]["served_now"], false);
    assert_eq!(f["severity"], "high");
    assert_eq!(code, 1);
    // ovs-ctl's default: the rows of manager_options are remotes. Now it is served: critical.
    node.stop();
    node.start_server_args(&["--remote=db:Open_vSwitch,Open_vSwitch,manager_options"]);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "ovsdb-network-remote").unwrap();
    assert_eq!(f["details"]["served_now"], true, "{r:#}");
    assert_eq!(f["severity"], "critical");
    // An active remote (ovsdb-server connects out) is the same exposure.
    node.vsctl(&["set-manager", "tcp:127.0.0.1:1"]);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "ovsdb-network-remote").unwrap();
    assert!(
        f["observed"].as_str().unwrap().contains("connects out"),
        "{f:#}"
    );
    // punix: managers are local and fine.
    node.vsctl(&["set-manager", "punix:/tmp/nowhere.sock"]);
    let (r, _) = check_json(&node, &[]);
    assert!(findings(&r, "ovsdb-network-remote").is_empty(), "{r:#}");
}

#[test]
fn ovsdb_server_listening_on_tcp_is_found_from_its_command_line() {
    let mut node = three_tunnels();
    node.stop();
    // Loopback only, ephemeral port.
    node.start_server_args(&["--remote=ptcp:0:127.0.0.1"]);
    let (r, code) = check_json(&node, &[]);
    let fs = findings(&r, "ovsdb-network-remote");
    assert_eq!(fs.len(), 1, "{r:#}");
    assert_eq!(fs[0]["severity"], "critical");
    assert_eq!(fs[0]["details"]["source"], "ovsdb-server command line");
    assert_eq!(fs[0]["details"]["pid"], node.pid.unwrap());
    assert_eq!(fs[0]["details"]["remote"], "ptcp:0:127.0.0.1");
    assert_eq!(code, 1);
    // A pidfile naming a process that is not ovsdb-server: said, not trusted.
    node.stop();
    node.start_server();
    std::fs::write(
        node.ovs_dir.join("ovsdb-server.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let (r, _) = check_json(&node, &[]);
    assert!(findings(&r, "ovsdb-network-remote").is_empty(), "{r:#}");
    assert!(
        r["incomplete"]
            .to_string()
            .contains("ovsdb-server command line"),
        "{r:#}"
    );
}

#[test]
fn world_readable_private_key_in_certificate_mode() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.vsctl(&["remove", "Interface", "n1-abc123", "options", "psk"]);
    node.vsctl(&["set", "Interface", "n1-abc123", "options:remote_name=node1"]);
    // Certificate mode with no key file anywhere: said, never a pass.
    let (r, _) = check_json(&node, &[]);
    assert!(r["incomplete"].to_string().contains("*.key"), "{r:#}");
    // Antrea's key file as the agent writes it: 0600, root.
    let key = node.ovs_dir.join("node0-0123456789.key");
    std::fs::write(&key, "-----BEGIN RSA PRIVATE KEY-----\n").unwrap();
    node.chmod(&key, 0o600);
    let (r, _) = check_json(&node, &[]);
    assert!(findings(&r, "cert-key-too-open").is_empty(), "{r:#}");
    assert!(!r["incomplete"].to_string().contains("*.key"), "{r:#}");
    // World-readable, but the run directory (0750) stops others: high.
    node.chmod(&key, 0o644);
    let (r, code) = check_json(&node, &[]);
    let f = finding(&r, "cert-key-too-open").unwrap();
    assert_eq!(f["severity"], "high", "{r:#}");
    assert_eq!(f["details"]["mode"], "0644");
    assert_eq!(code, 1);
    // ... and with the run directory open too, anyone can read it: critical.
    node.chmod(&node.run_dir, 0o755);
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "cert-key-too-open").unwrap();
    assert_eq!(f["severity"], "critical", "{r:#}");
    assert!(f["details"]["exposed_to"].to_string().contains("all users"));
    // --cert-dir: a key elsewhere is found there.
    let other = node.dir.path().join("certs");
    std::fs::create_dir(&other).unwrap();
    node.chmod(&other, 0o755);
    let k2 = other.join("node0-abcdef.key");
    std::fs::write(&k2, "x").unwrap();
    node.chmod(&k2, 0o640);
    std::os::unix::fs::chown(&k2, Some(1234), None).unwrap();
    let (r, _) = check_json(&node, &["--cert-dir", other.to_str().unwrap()]);
    let f = finding(&r, "cert-key-owner-not-root").unwrap();
    assert_eq!(f["subject"]["name"], k2.display().to_string());
}
