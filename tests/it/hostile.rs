//! A hostile OVSDB server: the real `psk-guard check` against a scripted socket that never answers,
//! drips, floods, sends invalid UTF-8 or closes mid-reply. Each ends in a clear error within the
//! timeout, exit code 2, the file checks still reported, and bounded memory.

use crate::harness::read_request;
use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Serves: `list_dbs` honestly, then `then` for the transact.
fn hostile(then: fn(&mut UnixStream, serde_json::Value)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("openvswitch")).unwrap();
    // Antrea's modes, so that only the server's behaviour decides the exit code.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    let sock = run.join("openvswitch/db.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let Some(id) = read_request(&mut r) else {
                return;
            };
            let _ = w.write_all(
                serde_json::json!({"id": id, "result": ["Open_vSwitch"], "error": null})
                    .to_string()
                    .as_bytes(),
            );
            let Some(id) = read_request(&mut r) else {
                return;
            };
            then(&mut w, id);
        }
    });
    (dir, run)
}

fn run_check(run: &std::path::Path, timeout: &str) -> (serde_json::Value, i32, Duration, u64) {
    let sock = run.join("openvswitch/db.sock");
    let t = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(run.join("rss"))
        .arg(env!("CARGO_BIN_EXE_psk-guard"))
        .args([
            "check",
            "--no-history",
            "-o",
            "json",
            "--timeout",
            timeout,
            "--run-dir",
        ])
        .arg(run)
        .arg("--db")
        .arg(format!("unix:{}", sock.display()))
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    let rss: u64 = std::fs::read_to_string(run.join("rss"))
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (v, out.status.code().unwrap(), elapsed, rss)
}

fn unreachable_reason(r: &serde_json::Value) -> String {
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "ovsdb-unreachable")
        .expect("ovsdb-unreachable finding");
    assert!(
        r["findings"].to_string().contains("path-absent")
            || r["findings"].to_string().contains("mode"),
        "file checks still ran"
    );
    f["observed"].as_str().unwrap().to_owned()
}

#[test]
fn never_answers() {
    let (_d, run) = hostile(|_, _| std::thread::sleep(Duration::from_secs(30)));
    let (r, code, took, _) = run_check(&run, "1");
    assert!(
        unreachable_reason(&r).contains("no reply within 1.0s"),
        "{r:#}"
    );
    assert_eq!(code, 2);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn drips_one_byte_at_a_time_forever() {
    let (_d, run) = hostile(|w, _| {
        let _ = w.write_all(b"{\"id\":2,\"result\":[{\"rows\":[");
        for _ in 0..300 {
            if w.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (r, code, took, _) = run_check(&run, "1");
    assert!(unreachable_reason(&r).contains("no reply within"));
    assert_eq!(code, 2);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn floods_endless_data_and_memory_stays_bounded() {
    let (_d, run) = hostile(|w, id| {
        let _ =
            w.write_all(format!("{{\"id\":{id},\"result\":[{{\"rows\":[{{\"name\":\"").as_bytes());
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..4096 {
            if w.write_all(&chunk).is_err() {
                return; // the client gave up: good
            }
        }
    });
    let (r, code, _, rss_kb) = run_check(&run, "20");
    assert!(unreachable_reason(&r).contains("larger than the"), "{r:#}");
    assert_eq!(code, 2);
    // The default cap is 64 MiB per message; the buffer may double once past it.
    assert!(rss_kb < 200 * 1024, "peak RSS {rss_kb} KiB");
}

#[test]
fn sends_invalid_utf8() {
    let (_d, run) = hostile(|w, id| {
        let mut msg = format!("{{\"id\":{id},\"result\":[{{\"rows\":[{{\"name\":\"").into_bytes();
        msg.extend_from_slice(&[0xff, 0xfe, 0xc3]);
        msg.extend_from_slice(b"\"}]}],\"error\":null}");
        let _ = w.write_all(&msg);
        std::thread::sleep(Duration::from_secs(2));
    });
    let (r, code, _, _) = run_check(&run, "5");
    assert!(unreachable_reason(&r).contains("unusable message"), "{r:#}");
    assert_eq!(code, 2);
}

#[test]
fn closes_in_the_middle_of_the_reply() {
    let (_d, run) = hostile(|w, id| {
        let _ = w.write_all(format!("{{\"id\":{id},\"result\":[{{\"rows\":[{{\"name\":\"t1\",\"options\":[\"map\",[[\"psk\",\"Zq").as_bytes());
        let _ = w.shutdown(std::net::Shutdown::Both);
    });
    let (r, code, _, _) = run_check(&run, "5");
    assert!(
        unreachable_reason(&r).contains("in the middle of a reply"),
        "{r:#}"
    );
    assert_eq!(code, 2);
}

#[test]
fn real_server_killed_during_check_leaves_its_database_consistent() {
    // A real server killed with SIGKILL while check runs: check reports it, the database file
    // still opens, and the keys in it are whole (OVSDB transactions are all-or-nothing on disk).
    let mut node = crate::harness::Node::start();
    for i in 0..20 {
        node.add_tunnel(
            &format!("t{i}"),
            &format!("n{i}"),
            "10.0.0.2",
            "Kq8-all-or-nothing-key-0123456789",
        );
    }
    let pid = node.pid.take().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args([
            "check",
            "-o",
            "json",
            "--no-history",
            "--db",
            &node.db_arg(),
            "--run-dir",
            node.run_dir.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Either check finished before the kill, or it reports the server as unreachable: never a
    // crash, never a silent pass.
    let codes = r["findings"].to_string();
    assert!(
        codes.contains("psk-plaintext-in-ovsdb") || codes.contains("ovsdb-unreachable"),
        "{r:#}"
    );
    // The file is a consistent database.
    let scan =
        crate::harness::psk_guard(&["scan-db", node.conf_db.to_str().unwrap(), "-o", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(s["data"]["complete"], true);
    assert_eq!(s["data"]["keys"].as_array().unwrap().len(), 1);
}
