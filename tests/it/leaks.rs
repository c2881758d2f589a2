//! The node's other leak channels (issue 11): IPsec downgrades in OVSDB, OVSDB remotes on the
//! network, certificate-mode private keys, and keys in log files. Real ovsdb-server throughout.

use std::collections::BTreeMap;

use crate::harness::{check_json, codes, finding, findings, Node};

const STRONG: &str = "q8Zr2LkVn0xWf7TyPb3Hs9Jd1Mc6Ge4A";

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
    assert_eq!(
        fs.len(),
        1,
        "one finding, however many sources saw it: {r:#}"
    );
    assert_eq!(fs[0]["severity"], "critical");
    assert_eq!(
        fs[0]["details"]["sources"],
        serde_json::json!(["ovsdb-server/list-remotes", "ovsdb-server command line"])
    );
    assert_eq!(fs[0]["details"]["pid"], node.pid.unwrap());
    assert_eq!(fs[0]["details"]["remote"], "ptcp:0:127.0.0.1");
    assert_eq!(code, 1);
    // A pidfile naming a process that is not ovsdb-server: said, not trusted (neither its
    // command line nor the control socket its pid names).
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
            .contains("remotes ovsdb-server serves"),
        "{r:#}"
    );
}

/// Issue 11, without /proc (a node Job has no hostPID): ovsdb-server is asked over its control
/// socket (`ovsdb-server/list-remotes`), which also knows remotes added at run time.
#[test]
fn ovsdb_server_listening_on_tcp_is_found_without_proc() {
    let mut node = three_tunnels();
    node.stop();
    node.start_server_args(&["--remote=ptcp:0:127.0.0.1"]);
    let (r, code) = check_json(&node, &["--no-proc"]);
    let fs = findings(&r, "ovsdb-network-remote");
    assert_eq!(fs.len(), 1, "{r:#}");
    assert_eq!(fs[0]["severity"], "critical");
    assert_eq!(fs[0]["details"]["source"], "ovsdb-server/list-remotes");
    assert_eq!(
        fs[0]["details"]["sources"],
        serde_json::json!(["ovsdb-server/list-remotes"])
    );
    assert!(fs[0]["details"]["pid"].is_null(), "/proc was not read");
    assert_eq!(code, 1);
    assert!(!r["incomplete"].to_string().contains("remotes"), "{r:#}");
    // Added at run time (never on any command line): only the server knows it.
    node.stop();
    node.start_server();
    let out = std::process::Command::new("ovs-appctl")
        .arg("-t")
        .arg(node.ctl())
        .args(["ovsdb-server/add-remote", "pssl:0:127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (r, _) = check_json(&node, &[]);
    let f = finding(&r, "ovsdb-network-remote").expect("found");
    assert_eq!(f["details"]["remote"], "pssl:0:127.0.0.1");
    assert_eq!(
        f["details"]["sources"],
        serde_json::json!(["ovsdb-server/list-remotes"])
    );
    // A Manager row the server serves through a db: remote it lists: one finding, both sources,
    // critical, served now.
    node.stop();
    node.start_server_args(&["--remote=db:Open_vSwitch,Open_vSwitch,manager_options"]);
    node.vsctl(&["set-manager", "tcp:127.0.0.1:1"]);
    let (r, _) = check_json(&node, &["--no-proc"]);
    let f = finding(&r, "ovsdb-network-remote").expect("found");
    assert_eq!(f["details"]["served_now"], true, "{r:#}");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["details"]["sources"], serde_json::json!(["Manager row"]));
}

/// Replaces the node's control socket with a root listener that answers every request with
/// `reply` (the result of a JSON-RPC reply); returns when `check` has run once.
fn check_with_ctl_reply(node: &Node, reply: serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let ctl = node.ctl();
    let _ = std::fs::remove_file(&ctl);
    let l = std::os::unix::net::UnixListener::bind(&ctl).unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        if let Some(id) = crate::harness::read_request(&mut r) {
            let msg = serde_json::json!({"id": id, "result": reply, "error": null});
            let _ = (&s).write_all(msg.to_string().as_bytes());
        }
    });
    let (r, _) = check_json(node, &["--no-proc"]);
    server.join().unwrap();
    r
}

/// The control socket's reply is attacker-shaped: bounded, a string, one printable remote a
/// line, at most 1024; anything else is not taken and said so.
#[test]
fn a_list_remotes_reply_that_is_not_ovsdb_servers_is_not_taken() {
    let node = three_tunnels();
    let cases = [
        (
            serde_json::json!("ptcp:6640\n\u{1b}[2Jptcp:1\n"),
            "control characters",
        ),
        (serde_json::json!(["ptcp:6640"]), "not a string"),
        (
            serde_json::json!("ptcp:1\n".repeat(1025)),
            "more than 1024 remotes",
        ),
        (serde_json::json!("a".repeat(70_000)), "list-remotes"),
    ];
    for (reply, why) in cases {
        let r = check_with_ctl_reply(&node, reply);
        assert!(findings(&r, "ovsdb-network-remote").is_empty(), "{r:#}");
        let incomplete = r["incomplete"].to_string();
        assert!(
            incomplete.contains("remotes ovsdb-server serves") && incomplete.contains(why),
            "{why}: {r:#}"
        );
        assert!(!incomplete.contains('\u{1b}'), "{r:#}");
    }
    // A well-formed reply is taken.
    let r = check_with_ctl_reply(&node, serde_json::json!("ptcp:6640\npunix:/x\n"));
    assert_eq!(findings(&r, "ovsdb-network-remote").len(), 1, "{r:#}");
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

// ------------------------------------------------------------------------------------------
// Keys in log files.

/// A key with the characters JSON escapes, so its escaped form differs from the raw one.
const QUOTED: &str = r#"Zq7"Log\Key-5e1d9a3b7c0f2e4d"#;
const OLD: &str = "Wx4OldLogKey-8f2b6c0d4e91a7c3";

/// `options:psk=` value in ovs-vsctl's quoted-string syntax.
fn vsctl_quoted(k: &str) -> String {
    format!(
        "options:psk=\"{}\"",
        k.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn write(path: &std::path::Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// gzip(1) from a stream, as logrotate compresses.
fn gzip_to(path: &std::path::Path, feed: impl FnOnce(&mut dyn std::io::Write)) {
    let out = std::fs::File::create(path).unwrap();
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .spawn()
        .expect("gzip");
    feed(child.stdin.as_mut().unwrap());
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

fn log_findings(r: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    findings(r, "psk-in-log-file")
        .into_iter()
        .map(|f| {
            let name = f["subject"]["name"].as_str().unwrap();
            let file = name.rsplit('/').next().unwrap().to_owned();
            (file, f.clone())
        })
        .collect()
}

fn node_with_quoted_key() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", STRONG);
    node.vsctl(&["set", "Interface", "n1-abc123", &vsctl_quoted(QUOTED)]);
    node
}

#[test]
fn log_files_holding_a_key_raw_json_escaped_and_gzip() {
    let node = node_with_quoted_key();
    let d = &node.log_dir;
    node.chmod(d, 0o755);
    // klog line of the agent at -v=4: the raw key.
    write(
        &d.join("antrea-agent.log"),
        format!("I1127 10:00:00.000 1 ipsec.go:80] Using PSK {QUOTED} for tunnel\n").as_bytes(),
        0o600,
    );
    // ovsdb-server with jsonrpc debug logging: the request, JSON-escaped.
    let req = serde_json::json!({"method": "transact", "params": ["Open_vSwitch",
        {"op": "update", "table": "Interface", "row": {"options": ["map", [["psk", QUOTED]]]}}], "id": 3});
    let line = format!("2026-11-27T10:00:00Z|00042|jsonrpc|DBG|unix#3: received request, {req}\n");
    assert!(
        !line.contains(QUOTED),
        "the test needs the escaped form only"
    );
    std::fs::create_dir(d.join("openvswitch")).unwrap();
    write(
        &d.join("openvswitch/ovsdb-server.log"),
        line.as_bytes(),
        0o644,
    );
    // A rotated, compressed agent log.
    gzip_to(&d.join("antrea-agent.log.1.gz"), |w| {
        for i in 0..2000 {
            writeln!(w, "I1127 09:{:02}:00.000 1 noise.go:1] line {i}", i % 60).unwrap();
        }
        writeln!(w, "I1127 09:59:59.000 1 ipsec.go:80] Using PSK {QUOTED}").unwrap();
    });
    write(&d.join("clean.log"), b"nothing to see\n", 0o644);
    // A symlink to a file outside holding the key: not followed.
    let outside = node.dir.path().join("outside.log");
    write(&outside, QUOTED.as_bytes(), 0o644);
    std::os::unix::fs::symlink(&outside, d.join("linked.log")).unwrap();

    let (r, code) = check_json(&node, &[]);
    let fs = log_findings(&r);
    assert_eq!(
        fs.keys().collect::<Vec<_>>(),
        vec![
            "antrea-agent.log",
            "antrea-agent.log.1.gz",
            "ovsdb-server.log"
        ],
        "{r:#}"
    );
    let live = finding(&r, "psk-plaintext-in-ovsdb").unwrap()["details"]["fingerprint"].clone();
    for (file, form, gzip) in [
        ("antrea-agent.log", "raw", false),
        ("antrea-agent.log.1.gz", "raw", true),
        ("ovsdb-server.log", "json-escaped", false),
    ] {
        let f = &fs[file];
        let k = &f["details"]["keys"][0];
        assert_eq!(k["fingerprint"], live, "{file}");
        assert_eq!(k["current"], true, "{file}");
        assert_eq!(k["forms"], serde_json::json!([form]), "{file}");
        assert_eq!(f["details"]["gzip"], gzip, "{file}");
    }
    // Who can read it: 0600 is root's only; 0644 under a traversable directory is everyone's.
    assert_eq!(fs["antrea-agent.log"]["severity"], "high");
    assert_eq!(fs["antrea-agent.log"]["details"]["mode"], "0600");
    assert_eq!(fs["ovsdb-server.log"]["severity"], "critical");
    assert!(fs["ovsdb-server.log"]["details"]["exposed_to"]
        .to_string()
        .contains("all users"));
    assert_eq!(code, 1);
    assert!(
        !r.to_string().contains("Log\\\\Key"),
        "no key in the report"
    );
    crate::output::assert_no_key("check with logs", r.to_string().as_bytes(), &[QUOTED]);

    // --no-logs skips the search.
    let (r, _) = check_json(&node, &["--no-logs"]);
    assert!(log_findings(&r).is_empty());
}

#[test]
fn a_key_across_a_chunk_boundary_is_found() {
    let node = node_with_quoted_key();
    // The scanner reads 64 KiB chunks: put the key across the first boundary, and across the
    // first boundary of the decompressed stream of a gzip file.
    let mut bytes = vec![b'.'; 65536 - 9];
    bytes.extend_from_slice(QUOTED.as_bytes());
    bytes.extend(vec![b'.'; 1000]);
    write(&node.log_dir.join("straddle.log"), &bytes, 0o600);
    gzip_to(&node.log_dir.join("straddle.log.2.gz"), |w| {
        w.write_all(&bytes).unwrap()
    });
    let (r, _) = check_json(&node, &[]);
    let fs = log_findings(&r);
    assert_eq!(fs.len(), 2, "{r:#}");
    for f in fs.values() {
        assert_eq!(f["details"]["keys"][0]["occurrences"], 1);
    }
}

#[test]
fn a_gzip_bomb_is_read_only_up_to_the_bound() {
    let node = node_with_quoted_key();
    // 4 MiB of zeros compress to about 4 KiB (a bomb in miniature: the bound, not the size, is
    // what is tested); the key is at its start and after 2 MiB.
    gzip_to(&node.log_dir.join("bomb.log.gz"), |w| {
        w.write_all(QUOTED.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for i in 0..4 {
            if i == 2 {
                w.write_all(QUOTED.as_bytes()).unwrap();
            }
            w.write_all(&zeros).unwrap();
        }
    });
    assert!(
        std::fs::metadata(node.log_dir.join("bomb.log.gz"))
            .unwrap()
            .len()
            < 16 << 10
    );
    let (r, code) = check_json(&node, &["--log-max-bytes", "1048576"]);
    let f = &log_findings(&r)["bomb.log.gz"];
    assert_eq!(f["details"]["keys"][0]["occurrences"], 1, "{r:#}");
    let inc = r["incomplete"].to_string();
    assert!(
        inc.contains("bomb.log.gz") && inc.contains("only the first 1048576 bytes"),
        "{r:#}"
    );
    assert_eq!(code, 1);
    // Without the bound (the default is 256 MiB) both are found and nothing is left unread.
    let (r, _) = check_json(&node, &[]);
    assert_eq!(
        log_findings(&r)["bomb.log.gz"]["details"]["keys"][0]["occurrences"],
        2,
        "{r:#}"
    );
    assert!(!r["incomplete"].to_string().contains("bomb.log.gz"));
}

#[test]
fn an_old_key_known_only_from_conf_db_history_is_found_in_a_log() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD);
    node.set_psk("n1-abc123", STRONG);
    write(
        &node.log_dir.join("antrea-agent.log.3"),
        format!("I1120 08:00:00.000 1 ipsec.go:80] Using PSK {OLD}\n").as_bytes(),
        0o640,
    );
    let (r, _) = check_json(&node, &[]);
    let old_fp =
        finding(&r, "psk-history-on-disk").unwrap()["details"]["old_fingerprints"][0].clone();
    let f = &log_findings(&r)["antrea-agent.log.3"];
    let k = &f["details"]["keys"][0];
    assert_eq!(k["fingerprint"], old_fp, "{r:#}");
    assert_eq!(k["current"], false);
    // The old key is known only from the history scan.
    let (r, _) = check_json(&node, &["--no-history"]);
    assert!(log_findings(&r).is_empty(), "{r:#}");
}

#[test]
fn an_absent_log_directory_is_not_a_pass() {
    let node = node_with_quoted_key();
    let missing = node.dir.path().join("no-such-dir");
    let (r, code) = check_json(
        &node,
        &[
            "--log-dir",
            missing.to_str().unwrap(),
            "--fail-on",
            "critical",
        ],
    );
    let inc = r["incomplete"].to_string();
    assert!(
        inc.contains("no-such-dir") && inc.contains("absent"),
        "{r:#}"
    );
    assert_eq!(code, 2);
    // A symlinked log directory is not followed either.
    let link = node.dir.path().join("log-link");
    std::os::unix::fs::symlink(&node.log_dir, &link).unwrap();
    let (r, _) = check_json(&node, &["--log-dir", link.to_str().unwrap()]);
    assert!(r["incomplete"].to_string().contains("log-link"), "{r:#}");
}

/// uid of `nobody`: a non-root user who controls part of the log directory.
const NOBODY: u32 = 65534;

#[test]
fn a_log_directory_the_attacker_controls_cannot_redirect_or_block_the_scan() {
    use std::os::unix::fs::{lchown, symlink};
    let node = node_with_quoted_key();
    let d = &node.log_dir;
    // A file only root may read outside the log directory (as /etc/shadow is), holding the key.
    let secret = node.dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    node.chmod(&secret, 0o700);
    write(&secret.join("shadow"), QUOTED.as_bytes(), 0o600);
    // The log directory belongs to nobody, who plants a link to it and a FIFO.
    std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    symlink(secret.join("shadow"), d.join("shadow.log")).unwrap();
    lchown(d.join("shadow.log"), Some(NOBODY), Some(NOBODY)).unwrap();
    nix::unistd::mkfifo(
        &d.join("pipe\x1b[2K.log"), // a terminal control sequence in its name, escaped in the report
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // klog's link to the current file of the same directory: the file is scanned, the link is
    // not worth a word.
    write(
        &d.join("antrea-agent.node1.root.log.INFO.20261127-100000.1"),
        format!("I1127 10:00:00.000 1 ipsec.go:80] Using PSK {QUOTED}\n").as_bytes(),
        0o600,
    );
    symlink(
        "antrea-agent.node1.root.log.INFO.20261127-100000.1",
        d.join("antrea-agent.INFO"),
    )
    .unwrap();
    let (r, _) = check_json(&node, &[]);
    let fs = log_findings(&r);
    assert_eq!(
        fs.keys().collect::<Vec<_>>(),
        vec!["antrea-agent.node1.root.log.INFO.20261127-100000.1"],
        "only the real log file is read: {r:#}"
    );
    let inc: Vec<String> = r["incomplete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reason"].as_str().unwrap().to_owned())
        .collect();
    let said = |needle: &str| inc.iter().any(|i| i.contains(needle));
    assert!(
        said("shadow.log is a symbolic link") && said("not followed"),
        "the link out of the directory is reported, not followed: {inc:#?}"
    );
    assert!(said("pipe\\x1b[2K.log is a FIFO"), "{inc:#?}");
    assert!(!inc.iter().any(|i| i.contains('\x1b')), "{inc:#?}");
    assert!(!said("antrea-agent.INFO"), "{inc:#?}");
    let chain = findings(&r, "path-chain-not-root-controlled");
    assert_eq!(chain.len(), 1, "{r:#}");
    assert_eq!(chain[0]["subject"]["name"], d.display().to_string());
    assert!(chain[0]["observed"].as_str().unwrap().contains("65534"));

    // A link on the way to the log directory that a non-root user owns is not followed: it
    // would make root scan (and report on) whatever the user points it at.
    let attic = node.dir.path().join("attic");
    std::fs::create_dir(&attic).unwrap();
    std::os::unix::fs::chown(&attic, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::create_dir(secret.join("antrea")).unwrap();
    write(&secret.join("antrea/keys.log"), QUOTED.as_bytes(), 0o600);
    symlink(&secret, attic.join("logs")).unwrap();
    lchown(attic.join("logs"), Some(NOBODY), Some(NOBODY)).unwrap();
    let via = attic.join("logs/antrea");
    let (r, _) = check_json(&node, &["--log-dir", via.to_str().unwrap()]);
    assert!(log_findings(&r).is_empty(), "{r:#}");
    let inc = r["incomplete"].to_string();
    assert!(
        inc.contains("attic/logs") && inc.contains("does not follow"),
        "the log directory is not scanned, and the report says why: {r:#}"
    );
}
