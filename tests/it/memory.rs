//! Zeroization, proven on the real binary: run it to its test pause point (after its work is done
//! and every key it held has been dropped), read its whole memory through /proc/PID/maps and
//! /proc/PID/mem, and look for every key it saw. Also checks that core dumps are off.

use std::io::{Read, Seek, SeekFrom};
use std::process::Command;

use crate::harness::Node;

const CURRENT: &str = "Zq7CurrentKeyMaterial-5e1d9a3b7c";
const OLD: &str = "Wx4OldKeyMaterial-8f2b6c0d4e91a7";
const DEFAULT: &str = "changeme";

/// Every readable, private mapping of `pid` (heap, stacks, anonymous), concatenated.
fn read_memory(pid: u32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = vec![];
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        let path = line.split_whitespace().nth(5).unwrap_or("");
        // Skip read-only file mappings (the binary's own text and libraries) and kernel pages.
        if !perms.starts_with("rw") || path.starts_with("[v") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.extend_from_slice(&buf);
        }
    }
    out
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Runs psk-guard to its pause point and returns (memory image, /proc status text).
fn run_paused(args: &[&str]) -> (Vec<u8>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psk-guard"));
    cmd.args(args)
        .env("PSK_GUARD_TEST_PAUSE", "1")
        .env("RUST_LOG", "trace");
    let (child, _) = crate::harness::spawn_until(&mut cmd, "psk-guard: paused");
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let image = read_memory(pid);
    crate::harness::resume(child);
    (image, status)
}

fn node_with_keys() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD);
    node.set_psk("n1-abc123", CURRENT);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", DEFAULT);
    node
}

fn assert_clean(what: &str, image: &[u8]) {
    assert!(
        image.len() > 100_000,
        "{what}: memory image too small ({} bytes)",
        image.len()
    );
    for k in [CURRENT, OLD] {
        assert_eq!(
            count(image, k.as_bytes()),
            0,
            "{what}: a copy of a key is left in process memory"
        );
    }
}

/// Log files holding both keys: plain, and gzip-compressed (through the inflater's window).
fn logs_with_keys(node: &Node) {
    let text = format!("I1127 1 ipsec.go:80] PSK {CURRENT}\nI1120 1 ipsec.go:80] PSK {OLD}\n");
    std::fs::write(node.log_dir.join("antrea-agent.log"), &text).unwrap();
    let gz = std::fs::File::create(node.log_dir.join("antrea-agent.log.1.gz")).unwrap();
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(gz)
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.repeat(100).as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn check_leaves_no_key_in_memory() {
    let node = node_with_keys();
    logs_with_keys(&node);
    for fmt in ["text", "json", "sarif"] {
        let (image, status) = run_paused(&[
            "check",
            "--db",
            &node.db_arg(),
            "--run-dir",
            node.run_dir.to_str().unwrap(),
            "--log-dir",
            node.log_dir.to_str().unwrap(),
            "-o",
            fmt,
        ]);
        assert_clean(&format!("check -o {fmt}"), &image);
        // The default key is a literal in the binary's read-only data, never in writable memory.
        assert_eq!(
            count(&image, b"changeme"),
            0,
            "check -o {fmt}: the default key's bytes from OVSDB remain"
        );
        assert!(status.contains("CoreDumping:\t0"));
    }
}

#[test]
fn scan_db_and_fix_leave_no_key_in_memory() {
    let node = node_with_keys();
    let (image, _) = run_paused(&["scan-db", node.conf_db.to_str().unwrap(), "-o", "json"]);
    assert_clean("scan-db", &image);
    let (image, _) = run_paused(&[
        "fix",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_clean("fix --dry-run", &image);
}

/// Keys that need a quoted `ovs-vsctl` argument: one with spaces (its `_comment` in conf.db then
/// carries JSON escapes around the key) and one with a quote (its rows in conf.db and in OVSDB
/// replies carry an escape inside the key).
const OLD_Q: &str = "Wx4Old Key With Spaces 8f2b6c0d4e91a7";
const CURRENT_Q: &str = "Zq7Cur\"rent-Key-Mat-5e1d9a3b7c";

fn quoted_psk(k: &str) -> String {
    format!("options:psk={}", serde_json::to_string(k).unwrap())
}

#[test]
fn keys_set_with_quoted_arguments_leave_no_copy() {
    let node = Node::start();
    node.vsctl(&[
        "add-port",
        "br-int",
        "q-tun0",
        "--",
        "set",
        "Interface",
        "q-tun0",
        "type=geneve",
        "options:remote_ip=10.0.0.9",
        &quoted_psk(OLD_Q),
        "--",
        "set",
        "Port",
        "q-tun0",
        "external_ids:antrea-type=ipsec-tunnel",
    ]);
    node.vsctl(&["set", "Interface", "q-tun0", &quoted_psk(CURRENT_Q)]);
    // The comments really hold escapes (else this test would prove nothing).
    let db = std::fs::read_to_string(&node.conf_db).unwrap();
    assert!(db.contains(r#"\"options:psk=\\\"Wx4Old Key"#), "{db}");
    assert!(db.contains(r#"["psk","Zq7Cur\"rent"#), "{db}");
    let (run_dir, db_arg) = (node.run_dir.to_str().unwrap(), node.db_arg());
    let runs: [(&str, Vec<&str>); 3] = [
        (
            "check",
            vec!["check", "--db", &db_arg, "--run-dir", run_dir, "-o", "json"],
        ),
        (
            "scan-db",
            vec!["scan-db", node.conf_db.to_str().unwrap(), "-o", "json"],
        ),
        (
            "fix --dry-run",
            vec!["fix", "--db", &db_arg, "--run-dir", run_dir, "--dry-run"],
        ),
    ];
    for (what, args) in runs {
        let (image, _) = run_paused(&args);
        assert!(image.len() > 100_000, "{what}: memory image too small");
        for k in [CURRENT_Q, OLD_Q] {
            assert_eq!(
                count(&image, k.as_bytes()),
                0,
                "{what}: a copy of a key set with a quoted argument is left in memory"
            );
        }
    }
}

#[test]
fn the_memory_scan_finds_a_key_that_is_not_wiped() {
    // Control: the same scan on a process that keeps a key (its own argv) must find it, or the
    // tests above would prove nothing.
    let (image, _) = run_paused(&["scan-db", "/nonexistent", "--fingerprint-salt", CURRENT]);
    assert!(
        count(&image, CURRENT.as_bytes()) > 0,
        "the scan cannot see memory"
    );
}

#[test]
fn core_dumps_are_disabled() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psk-guard"));
    cmd.args(["scan-db", "/nonexistent"])
        .env("PSK_GUARD_TEST_PAUSE", "1");
    let (child, line) = crate::harness::spawn_until(&mut cmd, "psk-guard: paused");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    // The process reports PR_GET_DUMPABLE and its locked memory at the pause point.
    assert!(line.contains("dumpable=0"), "{line}");
    let locked: u64 = line
        .split("locked_kb=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        locked > 0,
        "running as root, memory must be locked against swap: {line}"
    );
    crate::harness::resume(child);
}

/// Runs rotate on a simulated cluster to its final pause point and counts, in its memory, copies
/// of the old and new key in raw, base64 and base64url forms.
pub fn rotate_memory_copies() -> Vec<(String, usize)> {
    use base64::Engine;
    let c = crate::sim::Cluster::new(crate::sim::Options2 {
        nodes: 2,
        key: "Old-Key-For-Memory-Scan-0123456789".into(),
        on_delete: false,
        restart_delay: std::time::Duration::from_millis(10),
    });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psk-guard"));
    cmd.args([
        "rotate",
        "-o",
        "json",
        "--lease-duration",
        "3",
        "--push-lead-ms",
        "300",
        "--strategy",
        "push",
    ])
    .env("KUBECONFIG", &c.kubeconfig)
    .env("PSK_GUARD_TEST_PAUSE", "1");
    let (child, _) = crate::harness::spawn_until(&mut cmd, "psk-guard: paused");
    let image = read_memory(child.id());
    assert!(crate::harness::resume(child).success());
    let new = c.secret_key();
    let mut out = vec![];
    for (name, k) in [
        ("old", "Old-Key-For-Memory-Scan-0123456789".to_owned()),
        ("new", new),
    ] {
        out.push((format!("{name} raw"), count(&image, k.as_bytes())));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&k);
        // A base64 copy may sit at any alignment; its middle is what any copy contains.
        let core = &b64[4..b64.len() - 4];
        out.push((format!("{name} base64"), count(&image, core.as_bytes())));
    }
    out
}

#[test]
fn rotate_leaves_no_raw_key_in_memory() {
    let copies = rotate_memory_copies();
    eprintln!("rotate memory scan: {copies:?}");
    for (what, n) in &copies {
        if what.ends_with("raw") {
            assert_eq!(
                *n, 0,
                "{what}: a decoded copy of a key is left in rotate's memory"
            );
        }
    }
}
