//! Faults on the node side: `fix` on a read-only and on a full file system (it reports what failed,
//! exits 2, and leaves conf.db whole), and ovsdb-server killed in the middle of a push
//! write (the node keeps one consistent key: transactions are all-or-nothing).

use std::process::Command;
use std::time::Duration;

use crate::harness::{psk_guard, Node};

const OLD1: &str = "Fault-Old-Key-One-0123456789abcdef";
const CUR: &str = "Fault-Current-Key-fedcba9876543210";

/// A tmpfs mounted at the node's run directory, unmounted after the node is stopped.
struct Mounted {
    node: Node,
    mnt: std::path::PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.node.stop();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

fn on_tmpfs(size: &str) -> Mounted {
    let mut mnt = None;
    let node = Node::start_with(|run| {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(run)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "these tests mount a tmpfs and need root (scripts/test runs as root in CI)"
        );
        std::fs::create_dir_all(run.join("openvswitch")).unwrap();
        mnt = Some(run.to_owned());
    });
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD1);
    node.set_psk("n1-abc123", CUR);
    Mounted {
        node,
        mnt: mnt.unwrap(),
    }
}

/// Lays a read-only bind mount over the run directory: what is opened, renamed or chmod-ed
/// through the path now fails with EROFS (ovsdb-server keeps the descriptors it already has).
fn make_read_only(m: &Mounted) {
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("mount").arg("--bind").arg(&m.mnt).arg(&m.mnt));
    ok(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&m.mnt));
}

fn make_writable(m: &Mounted) {
    assert!(Command::new("umount")
        .arg(&m.mnt)
        .status()
        .unwrap()
        .success());
}

fn fix(node: &Node) -> std::process::Output {
    psk_guard(&[
        "fix",
        "--db",
        &node.db_arg(),
        "--run-dir",
        node.run_dir.to_str().unwrap(),
        "-o",
        "json",
    ])
}

#[test]
fn fix_on_a_read_only_file_system() {
    let m = on_tmpfs("16m");
    let node = &m.node;
    node.chmod(&node.conf_db, 0o644);
    let before = std::fs::read(&node.conf_db).unwrap();
    make_read_only(&m);
    let out = fix(node);
    // Compaction could not be done: exit 2 ("could not"), not 1 ("findings remain").
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = r["incomplete"].to_string();
    assert!(why.contains("compaction failed"), "{r:#}");
    assert!(
        why.contains("read-only") || why.contains("Read-only") || why.contains("ReadOnly"),
        "{why}"
    );
    assert_eq!(r["data"]["verified"], false);
    assert_eq!(
        std::fs::read(&node.conf_db).unwrap(),
        before,
        "conf.db untouched"
    );
    assert_eq!(node.mode(&node.conf_db), 0o644, "nothing half-changed");
    // Writable again: fix completes.
    make_writable(&m);
    let out = fix(node);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node.mode(&node.conf_db), 0o640);
}

#[test]
fn fix_on_a_full_file_system() {
    let m = on_tmpfs("4m");
    let node = &m.node;
    // Fill the file system so that compaction cannot write the new file.
    let filler = node.run_dir.join("filler");
    let free = nix::sys::statvfs::statvfs(&node.run_dir).unwrap();
    let avail = free.blocks_available() as u64 * free.fragment_size() as u64;
    std::fs::write(&filler, vec![0u8; avail.saturating_sub(4096) as usize]).ok();
    let _ = std::fs::write(node.run_dir.join("filler2"), vec![0u8; 64 * 1024]);
    let before = std::fs::read(&node.conf_db).unwrap();
    let out = fix(node);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["incomplete"].to_string().contains("compaction failed"),
        "{r:#}"
    );
    assert!(
        r["findings"].to_string().contains("psk-history-on-disk"),
        "the old key is still reported"
    );
    assert_eq!(
        std::fs::read(&node.conf_db).unwrap(),
        before,
        "conf.db left whole"
    );
    // The server still serves, and once there is room fix completes.
    let (c, _) = crate::harness::check_json(node, &["--no-history"]);
    assert!(c["findings"].to_string().contains("psk-plaintext-in-ovsdb"));
    std::fs::remove_file(&filler).unwrap();
    let _ = std::fs::remove_file(node.run_dir.join("filler2"));
    let out = fix(node);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ovsdb_killed_during_a_push_leaves_one_consistent_key() {
    // Many tunnels so the push transaction is large; the server is killed while it runs.
    let mut node = Node::start();
    let n = 400;
    let mut args: Vec<String> = vec![];
    for i in 0..n {
        let name = format!("t{i:03}");
        args.extend(
            [
                "--",
                "add-port",
                "br-int",
                &name,
                "--",
                "set",
                "Interface",
                &name,
                "type=geneve",
                "options:remote_ip=10.0.0.9",
                &format!("options:psk={OLD1}"),
            ]
            .map(String::from),
        );
        args.extend(
            [
                "--",
                "set",
                "Port",
                &name,
                "external_ids:antrea-type=ipsec-tunnel",
            ]
            .map(String::from),
        );
    }
    let a: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    node.vsctl(&a);
    for attempt in 0..5 {
        let mut push = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
            .args([
                "push-key",
                "--db",
                &node.db_arg(),
                "--run-dir",
                node.run_dir.to_str().unwrap(),
                "-o",
                "json",
            ])
            .env("ANTREA_IPSEC_PSK", CUR)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + attempt * 7));
        let pid = node.pid.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let out = push.wait().unwrap();
        let _ = out;
        std::thread::sleep(Duration::from_millis(50));
        let _ = std::fs::remove_file(&node.sock);
        node.start_server();
        // Every tunnel carries the same key: all old or all new.
        let (r, _) = crate::harness::check_json(&node, &["--no-history"]);
        assert!(
            crate::harness::finding(&r, "psk-mixed-keys").is_none(),
            "attempt {attempt}: the node has mixed keys after a crash: {r:#}"
        );
        let fps: std::collections::BTreeSet<String> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "psk-plaintext-in-ovsdb")
            .map(|f| f["details"]["fingerprint"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fps.len(), 1, "attempt {attempt}");
        // Reset to the old key for the next attempt.
        let reset: Vec<String> = (0..n)
            .flat_map(|i| {
                [
                    "--".to_owned(),
                    "set".into(),
                    "Interface".into(),
                    format!("t{i:03}"),
                    format!("options:psk={OLD1}"),
                ]
            })
            .collect();
        let a: Vec<&str> = reset.iter().skip(1).map(String::as_str).collect();
        node.vsctl(&a);
    }
    let _ = &mut node;
}
