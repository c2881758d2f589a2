//! The node is hostile: a non-root user who controls part of the run directory tries to turn
//! `psk-guard fix` (run by root) against the node, and special files (FIFO, device, directory,
//! `/dev/zero`, a 1 GB sparse file) sit where conf.db or the pidfile should be. The real binary
//! against a real ovsdb-server; the unprivileged attacker is a forked child that dropped to uid
//! 65534 (nobody) and swaps names in a tight loop.
//!
//! Strictness modelled on the kernel: `chmod(2)` by path follows symbolic links, `rename(2)` of a
//! link over a file is atomic, a FIFO `open(2)` without `O_NONBLOCK` blocks until a writer comes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{check_json, finding, psk_guard, Node};

const NOBODY: u32 = 65534;
const OLD: &str = "Attacker-Test-Old-Key-0123456789ab";
const CUR: &str = "Attacker-Test-Cur-Key-ba9876543210";
const NEW: &str = "Attacker-Test-New-Key-5e5e5e5e5e5e";

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// A root-owned directory (0755) outside the node holding a root-owned file: what the attacker
/// wants root to chmod.
fn victim(name: &str, m: u32) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("pskg-victim")
        .tempdir_in("/tmp")
        .unwrap();
    set_mode(d.path(), 0o755);
    let f = d.path().join(name);
    std::fs::write(&f, b"#!/bin/sh\n").unwrap();
    set_mode(&f, m);
    (d, f)
}

/// The node's temp dir and run dir opened for traversal, so that nobody can reach
/// `openvswitch/` (as a user with a host path mount could).
fn open_up_for_nobody(node: &Node) {
    set_mode(node.dir.path(), 0o755);
    set_mode(&node.run_dir, 0o755);
}

/// A forked child running as nobody, killed on drop.
struct Attacker(libc::pid_t);

impl Drop for Attacker {
    fn drop(&mut self) {
        // SAFETY: plain syscalls on our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

impl Attacker {
    fn still_running(&self) -> bool {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::waitpid(self.0, std::ptr::null_mut(), libc::WNOHANG) == 0 }
    }
}

/// Forks; the child drops to nobody and calls `step` forever. Only raw syscalls run in the
/// child (the test process has threads), with every string prepared before the fork.
fn attacker(step: impl Fn()) -> Attacker {
    // SAFETY: the child only makes async-signal-safe syscalls and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls only.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                libc::_exit(1);
            }
        }
        loop {
            step();
        }
    }
    Attacker(pid)
}

/// A short sleep, so the attacker leaves CPU to `fix` on a small machine (it still swaps
/// thousands of times a second).
fn pause() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` lives across the call.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Swaps `at` between a regular 06777 file and a symbolic link to `target`.
fn file_link_swapper(at: &Path, target: &Path) -> Attacker {
    let dir = at.parent().unwrap();
    let (at, target) = (c(at), c(target));
    let (tmp_f, tmp_l) = (c(&dir.join(".swap-f")), c(&dir.join(".swap-l")));
    attacker(move || unsafe {
        let fd = libc::open(tmp_f.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
        if fd >= 0 {
            libc::fchmod(fd, 0o6777);
            libc::close(fd);
        }
        libc::rename(tmp_f.as_ptr(), at.as_ptr());
        libc::symlink(target.as_ptr(), tmp_l.as_ptr());
        libc::rename(tmp_l.as_ptr(), at.as_ptr());
        pause();
    })
}

/// Swaps the directory `at` for a symbolic link to `target` and back.
fn dir_link_swapper(at: &Path, target: &Path) -> Attacker {
    let real = c(&at.with_extension("real"));
    let (at, target) = (c(at), c(target));
    // Each state is held for a while (a few thousand syscalls) so that both are hit often.
    let hold = || {
        for _ in 0..2000 {
            unsafe { libc::getppid() };
        }
    };
    attacker(move || unsafe {
        libc::rename(at.as_ptr(), real.as_ptr());
        libc::symlink(target.as_ptr(), at.as_ptr());
        hold();
        libc::unlink(at.as_ptr());
        libc::rename(real.as_ptr(), at.as_ptr());
        hold();
        pause();
    })
}

fn fix_args(node: &Node) -> Vec<String> {
    let mut a = vec!["fix".to_owned()];
    a.extend(node.node_args());
    a.extend(["-o".into(), "json".into()]);
    a
}

fn run(args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    psk_guard(&a)
}

/// Runs `fix` `n` times while the attacker swaps; returns how often it exited 2.
fn fix_repeatedly(node: &Node, n: usize) -> usize {
    let args = fix_args(node);
    (0..n)
        .filter(|_| run(&args).status.code() == Some(2))
        .count()
}

#[test]
fn lock_file_swapped_for_a_link_never_changes_the_target() {
    let node = Node::start();
    open_up_for_nobody(&node);
    chown(&node.ovs_dir, NOBODY); // nobody may replace entries of openvswitch/
    let (_v, target) = victim("setuid-me", 0o755);
    let lock = node.ovs_dir.join(".conf.db.~lock~");
    let a = file_link_swapper(&lock, &target);
    // The attacker really swaps: both states are seen.
    let (mut file, mut link, t) = (false, false, Instant::now());
    while !(file && link) && t.elapsed() < Duration::from_secs(20) {
        match std::fs::symlink_metadata(&lock) {
            Ok(m) if m.file_type().is_symlink() => link = true,
            Ok(_) => file = true,
            Err(_) => {}
        }
    }
    assert!(file && link, "the attacker does not swap");
    let refused = fix_repeatedly(&node, 300);
    assert!(a.still_running(), "the attacker ran throughout");
    drop(a);
    assert_eq!(mode(&target), 0o755, "fix changed the target of the link");
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), 0);
    assert_eq!(
        refused, 300,
        "fix must refuse (exit 2) under an openvswitch/ nobody controls"
    );
}

#[test]
fn parent_directory_swapped_for_a_link_changes_nothing_elsewhere() {
    let node = Node::start();
    open_up_for_nobody(&node);
    chown(&node.run_dir, NOBODY); // nobody owns the run dir: may rename openvswitch/
    let (v, conf) = victim("conf.db", 0o644);
    let lock = v.path().join(".conf.db.~lock~");
    std::fs::write(&lock, b"").unwrap();
    set_mode(&lock, 0o6777);
    let sock = v.path().join("db.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    set_mode(&sock, 0o777);
    let a = dir_link_swapper(&node.ovs_dir, v.path());
    let refused = fix_repeatedly(&node, 300);
    assert!(a.still_running(), "the attacker ran throughout");
    drop(a);
    assert_eq!(mode(&conf), 0o644, "fix followed openvswitch -> elsewhere");
    assert_eq!(mode(&lock), 0o6777, "fix followed openvswitch -> elsewhere");
    assert_eq!(mode(&sock), 0o777, "fix followed openvswitch -> elsewhere");
    assert_eq!(refused, 300, "fix must refuse under a run dir nobody owns");
}

#[test]
fn non_root_run_dir_or_ovs_dir_fix_refuses_and_check_reports_it() {
    for which in ["run", "ovs"] {
        let node = Node::start();
        node.chmod(&node.conf_db, 0o644);
        let dir = if which == "run" {
            node.run_dir.clone()
        } else {
            node.ovs_dir.clone()
        };
        chown(&dir, NOBODY);
        let out = run(&fix_args(&node));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{which}: {stderr}");
        assert!(
            stderr.contains("refusing") && stderr.contains(&dir.display().to_string()),
            "{stderr}"
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["data"]["verified"], false);
        assert_eq!(mode(&node.conf_db), 0o644, "{which}: nothing changed");
        let (r, _) = check_json(&node, &["--no-history"]);
        let f = finding(&r, "path-chain-not-root-controlled").expect("chain finding");
        assert_eq!(f["subject"]["name"], dir.display().to_string(), "{r:#}");
        assert!(f["observed"].as_str().unwrap().contains("65534"), "{f:#}");
        let owner = if which == "run" {
            "run-dir-owner-not-root"
        } else {
            "ovs-dir-owner-not-root"
        };
        assert!(finding(&r, owner).is_some(), "{which}: {r:#}");
    }
}

#[test]
fn symlinked_conf_db_is_reported_as_a_link_and_never_followed() {
    let node = Node::start();
    let (_v, target) = victim("elsewhere.db", 0o777);
    std::fs::remove_file(&node.conf_db).unwrap();
    std::os::unix::fs::symlink(&target, &node.conf_db).unwrap();
    let (r, _) = check_json(&node, &["--no-history"]);
    let f = finding(&r, "path-is-symlink").expect("symlink finding");
    assert_eq!(f["subject"]["name"], node.conf_db.display().to_string());
    assert!(
        finding(&r, "conf-db-mode-too-open").is_none(),
        "a link is not 'mode 0777': {r:#}"
    );
    let out = run(&fix_args(&node));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(mode(&target), 0o777, "fix followed the link");
}

#[test]
fn fix_clears_setuid_and_setgid_when_it_tightens() {
    let node = Node::start();
    let lock = node.ovs_dir.join(".conf.db.~lock~");
    if !lock.exists() {
        std::fs::write(&lock, b"").unwrap();
    }
    set_mode(&lock, 0o6777);
    let out = run(&fix_args(&node));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        mode(&lock),
        0o755,
        "setuid/setgid cleared, write for others removed"
    );
}

/// `fix` exits 2 and claims nothing verified whenever something it set out to check could not be.
#[test]
fn fix_exit_code_2_for_each_could_not_check_case() {
    type Setup = fn(&Node);
    let cases: [(&str, Setup); 4] = [
        ("conf.db missing", |n| {
            std::fs::remove_file(&n.conf_db).unwrap()
        }),
        ("not a database", |n| {
            std::fs::remove_file(&n.conf_db).unwrap();
            std::fs::write(&n.conf_db, b"hello, not an OVSDB file\n").unwrap();
            set_mode(&n.conf_db, 0o640);
        }),
        ("clustered", |n| {
            std::fs::remove_file(&n.conf_db).unwrap();
            std::fs::write(&n.conf_db, b"CLUSTER JSON 2 0000\n{}\n").unwrap();
            set_mode(&n.conf_db, 0o640);
        }),
        ("conf.db unreadable (a directory)", |n| {
            std::fs::remove_file(&n.conf_db).unwrap();
            std::fs::create_dir(&n.conf_db).unwrap();
        }),
    ];
    for (what, setup) in cases {
        let node = Node::start();
        setup(&node);
        let out = run(&fix_args(&node));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{what}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(out.status.code(), Some(2), "{what}: {r:#}");
        assert_eq!(r["data"]["verified"], false, "{what}");
        assert!(!r["incomplete"].as_array().unwrap().is_empty(), "{what}");
    }
    // Not root, with work to do.
    let node = Node::start();
    open_up_for_nobody(&node);
    let out = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(fix_args(&node))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "non-root");
    assert_eq!(mode(&node.run_dir), 0o755, "non-root changed nothing");
}

/// A node with an old key in conf.db (so `fix` needs the unixctl socket).
fn node_with_old_key() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD);
    node.set_psk("n1-abc123", CUR);
    node
}

#[test]
fn unixctl_peer_is_verified() {
    // The pid in the pidfile is not ovsdb-server.
    let node = node_with_old_key();
    let pidfile = node.ovs_dir.join("ovsdb-server.pid");
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    let out = run(&fix_args(&node));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not ovsdb-server"), "{stderr}");

    // The .ctl is a link to the real socket: not followed.
    let node = node_with_old_key();
    let ctl = node.ctl();
    let real = ctl.with_extension("real");
    std::fs::rename(&ctl, &real).unwrap();
    std::os::unix::fs::symlink(&real, &ctl).unwrap();
    let before = std::fs::read(&node.conf_db).unwrap();
    let out = run(&fix_args(&node));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(
        std::fs::read(&node.conf_db).unwrap(),
        before,
        "not compacted"
    );

    // The .ctl socket is not root's.
    let node = node_with_old_key();
    chown(&node.ctl(), NOBODY);
    let out = run(&fix_args(&node));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not root"), "{stderr}");

    // The verified socket is used: compaction through it works.
    let node = node_with_old_key();
    let out = run(&fix_args(&node));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the binary under /usr/bin/time with a watchdog: (exit code, stdout, stderr, peak RSS kB).
/// The watchdog only proves "did not hang" (a generous bound, not a timing assertion).
fn run_bounded(args: &[String], stdin: Stdio) -> (i32, String, String, u64) {
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(rss_file.path())
        .arg(env!("CARGO_BIN_EXE_psk-guard"))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("psk-guard {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let rss = std::fs::read_to_string(rss_file.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        rss,
    )
}

const MAX_RSS_KB: u64 = 200 * 1024;

fn replace_conf_db(node: &Node, what: &str) {
    let p = &node.conf_db;
    std::fs::remove_file(p).unwrap();
    let ok = match what {
        "fifo" => Command::new("mkfifo").arg(p).status().unwrap().success(),
        "device" => Command::new("mknod")
            .arg(p)
            .args(["c", "1", "5"]) // /dev/zero's numbers
            .status()
            .unwrap()
            .success(),
        "directory" => std::fs::create_dir(p).is_ok(),
        "sparse" => {
            let f = std::fs::File::create(p).unwrap();
            set_mode(p, 0o640); // only the content is wrong
            f.set_len(1 << 30).is_ok()
        }
        _ => unreachable!(),
    };
    assert!(ok, "making conf.db a {what}");
}

#[test]
fn special_files_at_conf_db_give_a_clear_error_for_every_reader() {
    for what in ["fifo", "device", "directory", "sparse"] {
        let node = Node::start();
        replace_conf_db(&node, what);
        let node_args = node.node_args();
        let db = node.conf_db.display().to_string();
        let mut runs: Vec<(&str, Vec<String>)> = vec![("scan-db", vec!["scan-db".into(), db])];
        for cmd in ["check", "fix --dry-run", "fix"] {
            let mut a: Vec<String> = cmd.split(' ').map(String::from).collect();
            a.extend(node_args.iter().cloned());
            runs.push((cmd, a));
        }
        for (cmd, mut args) in runs {
            args.extend(["--timeout", "3", "-o", "json"].map(String::from));
            let (code, stdout, stderr, rss) = run_bounded(&args, Stdio::null());
            assert!(rss < MAX_RSS_KB, "{what}/{cmd}: {rss} kB");
            let all = format!("{stdout}{stderr}");
            if what == "sparse" {
                assert_eq!(code, 2, "{what}/{cmd}: {all}");
                assert!(all.contains("not an OVSDB database"), "{what}/{cmd}: {all}");
                continue;
            }
            let kind = match what {
                "fifo" => "FIFO",
                "device" => "character device",
                _ => "a directory",
            };
            assert!(all.contains(kind), "{what}/{cmd}: {all}");
            match cmd {
                // The finding (path-wrong-type, high) decides check's exit code.
                "check" => {
                    assert_eq!(code, 1, "{what}/{cmd}: {all}");
                    assert!(all.contains("path-wrong-type"), "{all}");
                }
                _ => assert_eq!(code, 2, "{what}/{cmd}: {all}"),
            }
        }
    }
}

#[test]
fn special_files_as_pidfile_give_a_clear_error() {
    for what in ["fifo", "dev-zero-bind", "dev-zero-link", "sparse"] {
        let node = node_with_old_key();
        let pidfile = node.ovs_dir.join("ovsdb-server.pid");
        std::fs::remove_file(&pidfile).unwrap();
        let mut bound = false;
        match what {
            "fifo" => assert!(Command::new("mkfifo")
                .arg(&pidfile)
                .status()
                .unwrap()
                .success()),
            "dev-zero-bind" => {
                std::fs::write(&pidfile, b"").unwrap();
                assert!(Command::new("mount")
                    .args(["--bind", "/dev/zero"])
                    .arg(&pidfile)
                    .status()
                    .unwrap()
                    .success());
                bound = true;
            }
            "dev-zero-link" => std::os::unix::fs::symlink("/dev/zero", &pidfile).unwrap(),
            _ => std::fs::File::create(&pidfile)
                .unwrap()
                .set_len(1 << 30)
                .unwrap(),
        }
        let mut results = vec![];
        for dry in [true, false] {
            let mut args = fix_args(&node);
            if dry {
                args.push("--dry-run".into());
            }
            args.extend(["--timeout", "3"].map(String::from));
            results.push((dry, run_bounded(&args, Stdio::null())));
        }
        if bound {
            let _ = Command::new("umount").arg(&pidfile).status();
        }
        for (dry, (code, _, stderr, rss)) in results {
            assert_eq!(code, 2, "{what} dry={dry}: {stderr}");
            assert!(stderr.contains("ovsdb-server.pid"), "{what}: {stderr}");
            assert!(rss < MAX_RSS_KB, "{what}: {rss} kB");
        }
    }
}

#[test]
fn scan_db_of_a_pipe_says_it_is_not_a_regular_file() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["scan-db", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        let _ = i.write_all(b"OVSDB JSON 10 0000\n");
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!stderr.contains("truncated"), "{stderr}");
}

/// POSIX ACLs are part of who can reach the key (setfacl from Debian's `acl` package).
#[test]
fn acl_grants_are_part_of_the_exposure() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", CUR);
    let setfacl = |spec: &str, p: &Path| {
        let ok = Command::new("setfacl")
            .args(["-m", spec])
            .arg(p)
            .status()
            .expect("setfacl (Debian package acl; scripts/test installs it)")
            .success();
        assert!(ok, "setfacl {spec} {}", p.display());
    };
    let plaintext = |r: &serde_json::Value| finding(r, "psk-plaintext-in-ovsdb").unwrap().clone();
    // Read for nobody on conf.db, but the run dir (0750) and the temp dir (0700) stop them.
    setfacl("u:65534:r", &node.conf_db);
    let (r, _) = check_json(&node, &["--no-history"]);
    assert_eq!(plaintext(&r)["severity"], "medium", "{r:#}");
    // Traverse for nobody on the directories above: now nobody reads the key.
    setfacl("u:65534:x", node.dir.path());
    setfacl("u:65534:x", &node.run_dir);
    let (r, _) = check_json(&node, &["--no-history"]);
    let f = plaintext(&r);
    assert_eq!(f["severity"], "critical", "{r:#}");
    let who = f["details"]["exposed_to"].to_string();
    assert!(who.contains("nobody") && who.contains("65534"), "{who}");

    // Only traverse by ACL on the run dir; conf.db readable by others through its mode.
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", CUR);
    node.chmod(&node.conf_db, 0o644);
    let (r, _) = check_json(&node, &["--no-history"]);
    assert_eq!(plaintext(&r)["severity"], "medium", "{r:#}");
    setfacl("u:65534:x", node.dir.path());
    setfacl("u:65534:x", &node.run_dir);
    let (r, _) = check_json(&node, &["--no-history"]);
    let f = plaintext(&r);
    assert_eq!(f["severity"], "critical", "{r:#}");
    assert!(f["details"]["exposed_to"].to_string().contains("65534"));

    // Write by ACL on openvswitch/: the chain is not root-controlled.
    setfacl("u:65534:rwx", &node.ovs_dir);
    let (r, _) = check_json(&node, &["--no-history"]);
    let f = finding(&r, "path-chain-not-root-controlled").expect("chain finding");
    assert!(f["observed"].as_str().unwrap().contains("nobody"), "{f:#}");
}

/// psk-guard reaches opened files through `/proc/self/fd`. In a bare chroot (no /proc: the image
/// test's first version) every file check failed as "No such file or directory" about the node's
/// own paths, and the history scan went missing without a word. Now each says /proc is missing,
/// and nothing is reported as checked that was not. Runs check in a private mount namespace with
/// /proc lazily unmounted (root only, as the rest of this file).
#[test]
fn without_proc_check_says_so_instead_of_blaming_the_node_paths() {
    let node = Node::start();
    node.add_tunnel("tun0", "peer-a", "192.0.2.7", CUR);
    let mut args = vec![
        "check".to_string(),
        "-o".into(),
        "json".into(),
        "--fingerprint-salt".into(),
        "test".into(),
    ];
    args.extend(node.node_args());
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("umount -l /proc && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_psk-guard"))
        .args(&args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run unshare");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let text = report.to_string();
    assert!(
        text.contains("/proc is not mounted"),
        "the cause is named: {text}"
    );
    assert!(
        !text.contains("No such file or directory"),
        "no node path is blamed: {text}"
    );
    assert!(
        finding(&report, "conf-db-mode-too-open").is_none()
            && finding(&report, "run-dir-mode-too-open").is_none(),
        "modes are not judged without their ACLs: {text}"
    );
}

/// A man in the middle planted at db.sock: accepts connections, relays them to the real server
/// (moved aside) and records every byte the client sent. Runs in this (root) process, so the
/// planted socket is root-owned and its listener is root: only the directory chain gives it away.
struct Relay {
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn plant(at: &Path, real: &Path) -> Relay {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let listener = UnixListener::bind(at).unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st, real) = (seen.clone(), stop.clone(), real.to_owned());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let mut server = UnixStream::connect(&real).unwrap();
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                });
                let mut buf = [0u8; 4096];
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 || server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        });
        Relay {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn push_key(node: &Node, key: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .arg("push-key")
        .args(node.node_args())
        .args(extra)
        .env("ANTREA_IPSEC_PSK", key)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn key_of(node: &Node, iface: &str) -> String {
    node.vsctl(&["get", "Interface", iface, "options:psk"])
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// Moves the real db.sock aside (ovsdb-server keeps listening on the inode) and returns its new
/// name; the tests then talk to the server through it.
fn move_db_sock_aside(node: &Node) -> PathBuf {
    let real = node.sock.with_extension("real");
    std::fs::rename(&node.sock, &real).unwrap();
    real
}

/// The exploit an attacker review found: `push-key` connected to db.sock by name, so whoever may
/// write in `openvswitch/` could put a listener there and receive the new key.
#[test]
fn push_key_never_sends_the_key_to_a_socket_planted_under_a_non_root_directory() {
    let mut node = node_with_old_key();
    open_up_for_nobody(&node);
    chown(&node.ovs_dir, NOBODY); // nobody may replace entries of openvswitch/
    let real = move_db_sock_aside(&node);
    let relay = Relay::plant(&node.sock, &real);
    let out = push_key(&node, NEW, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to connect to OVSDB")
            && stderr.contains(&node.ovs_dir.display().to_string())
            && stderr.contains("65534"),
        "{stderr}"
    );
    assert!(
        relay.seen().is_empty(),
        "the planted listener received bytes"
    );
    // check refuses the same server and says so.
    let (r, code) = check_json(&node, &["--no-history"]);
    let f = finding(&r, "ovsdb-server-untrusted").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(f["subject"]["name"], node.sock.display().to_string());
    assert_eq!(code, 1, "{r:#}");
    assert!(
        relay.seen().is_empty(),
        "check sent the planted listener bytes"
    );
    drop(relay);
    node.sock = real;
    assert_eq!(key_of(&node, "n1-abc123"), CUR, "nothing was written");
}

/// A listener running as nobody behind a root-owned socket file under root-controlled
/// directories (as if root had been tricked into moving it there): only the listening process
/// gives it away. It leaves a marker file when it receives any byte.
fn nobody_listener(dir: &Path) -> (Attacker, PathBuf, PathBuf) {
    set_mode(dir, 0o777);
    let sock = dir.join("listener.sock");
    let marker = dir.join("got-bytes");
    let (csock, cmarker) = (c(&sock), c(&marker));
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(csock.as_bytes()) {
        *d = *s as libc::c_char;
    }
    let bound = std::cell::Cell::new(-1);
    let a = attacker(move || unsafe {
        if bound.get() < 0 {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0
                || libc::bind(fd, (&raw const addr).cast(), len) != 0
                || libc::listen(fd, 8) != 0
            {
                libc::_exit(3);
            }
            bound.set(fd);
        }
        let conn = libc::accept(bound.get(), std::ptr::null_mut(), std::ptr::null_mut());
        if conn >= 0 {
            let mut b = [0u8; 64];
            if libc::read(conn, b.as_mut_ptr().cast(), b.len()) > 0 {
                let m = libc::open(cmarker.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                libc::close(m);
            }
            libc::close(conn);
        }
    });
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the listener did not bind"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (a, sock, marker)
}

#[test]
fn push_key_and_check_refuse_a_server_not_running_as_root() {
    let mut node = node_with_old_key();
    let real = move_db_sock_aside(&node);
    let spot = tempfile::Builder::new()
        .prefix("pskg-nobody")
        .tempdir_in("/tmp")
        .unwrap();
    let (listener, sock, marker) = nobody_listener(spot.path());
    // Root-owned, under root-controlled directories: the file looks like ovsdb-server's.
    std::fs::rename(&sock, &node.sock).unwrap();
    std::os::unix::fs::lchown(&node.sock, Some(0), Some(0)).unwrap();
    let out = push_key(&node, NEW, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("runs as uid {NOBODY} (pid {})", listener.0))
            && stderr.contains(&node.sock.display().to_string()),
        "{stderr}"
    );
    let (r, _) = check_json(&node, &["--no-history"]);
    let f = finding(&r, "ovsdb-server-untrusted").unwrap_or_else(|| panic!("{r:#}"));
    assert!(
        f["observed"].as_str().unwrap().contains("uid 65534"),
        "{f:#}"
    );
    assert!(listener.still_running(), "the listener ran throughout");
    drop(listener);
    assert!(!marker.exists(), "the non-root listener received bytes");
    node.sock = real;
    assert_eq!(key_of(&node, "n1-abc123"), CUR, "nothing was written");
}

/// `push-key` applies `rotate --psk-file`'s rule to the key from its environment, and refuses a
/// shared instant already past (beyond the tolerance) or absurdly far ahead, instead of writing
/// at once. Each refusal is exit 2 with the reason, no key byte printed, nothing written.
#[test]
fn push_key_refuses_a_weak_key_and_an_instant_out_of_bounds() {
    let node = node_with_old_key();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (past, ahead, seconds) = (
        (now - 60_000).to_string(),
        (now + 3_600_000).to_string(),
        (now / 1000).to_string(),
    );
    let cases: [(&str, &[&str], &str); 7] = [
        ("Xq7z9", &[], "too weak"),
        ("changeme", &[], "well-known default"),
        ("abababababababababababababababababababab", &[], "too weak"),
        ("Has-A-Quote\"-0123456789abcdefghijklmn", &[], "quote"),
        (NEW, &["--at-unix-ms", &past], "in the past"),
        (NEW, &["--at-unix-ms", &ahead], "ahead"),
        (NEW, &["--at-unix-ms", &seconds], "in the past"),
    ];
    for (key, extra, why) in cases {
        let out = push_key(&node, key, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(why) && stderr.contains("nothing was written"),
            "{stderr}"
        );
        assert!(!stderr.contains(key) && out.stdout.is_empty(), "{stderr}");
        assert_eq!(
            key_of(&node, "n1-abc123"),
            CUR,
            "{extra:?}: nothing written"
        );
    }
    // A strong key at an instant just ahead is written.
    let soon = (now + 300).to_string();
    let out = push_key(&node, NEW, &["--at-unix-ms", &soon]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(key_of(&node, "n1-abc123"), NEW);
}

/// A hard link is another name of the same inode: a lock file that is a second name of a setuid
/// binary (planted while someone could write in `openvswitch/`, or where `fs.protected_hardlinks`
/// is off) must not be chmodded through its node name, even when the directories are root's now.
#[test]
fn fix_never_chmods_a_hard_linked_file() {
    let node = Node::start();
    let (_v, target) = victim("setuid-binary", 0o6777);
    let lock = node.ovs_dir.join(".conf.db.~lock~");
    let _ = std::fs::remove_file(&lock);
    std::fs::hard_link(&target, &lock).unwrap();
    let out = run(&fix_args(&node));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.to_string().contains("hard links"), "{r:#}");
    assert_eq!(mode(&target), 0o6777, "fix changed the other name's inode");
}

/// `fix` prints its plan on stderr; the paths in it come from the node (socket names listed from
/// `openvswitch/`), so terminal control sequences in them are escaped as in every report.
#[test]
fn fix_plan_escapes_control_characters_in_node_names() {
    let node = Node::start();
    let evil = node.ovs_dir.join("x\x1b[2K\x1b]8;;e\x07y.ctl");
    let _l = std::os::unix::net::UnixListener::bind(&evil).unwrap();
    set_mode(&evil, 0o777);
    let mut args = fix_args(&node);
    args.push("--dry-run".into());
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chmod"),
        "the socket is in the plan: {stderr}"
    );
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\x07'),
        "raw control characters: {stderr:?}"
    );
}

/// `openvswitch/` is listed to find the control sockets; a directory someone filled is listed
/// only up to a bound, and the rest is said to be unchecked, never a silent pass.
#[test]
fn a_flooded_ovs_dir_is_listed_only_up_to_a_bound() {
    let node = Node::start();
    for i in 0..10_001 {
        std::fs::write(node.ovs_dir.join(format!("junk-{i}")), b"").unwrap();
    }
    let (r, code) = check_json(&node, &["--no-history"]);
    assert!(
        r.to_string().contains("more than 10000 entries"),
        "the bound is reported: {r:#}"
    );
    assert_eq!(code, 2, "{r:#}");
}

/// The conf.db history scan (check's, fix's and scan-db's) walks the path like every node path:
/// a directory link planted by a non-root user on the way is not followed, so root is never
/// steered to read another file as conf.db. Before, the scan opened the path by name (only its
/// last component unfollowed).
#[test]
fn history_scan_does_not_follow_a_non_root_directory_link() {
    let node = Node::start();
    node.add_tunnel("tun0", "peer-a", "192.0.2.7", CUR);
    let attic = tempfile::tempdir().unwrap();
    let link = attic.path().join("ovs");
    std::os::unix::fs::symlink(&node.ovs_dir, &link).unwrap();
    chown(attic.path(), NOBODY);
    chown(&link, NOBODY);
    let via = link.join("conf.db");
    let out = psk_guard(&["scan-db", via.to_str().unwrap(), "-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not follow"), "{stderr}");
    // The same file by its own path scans.
    let out = psk_guard(&["scan-db", node.conf_db.to_str().unwrap(), "-o", "json"]);
    assert!(
        out.status.code().is_some_and(|c| c < 2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces the node's schema online (`ovsdb-client convert`, which any client of db.sock may
/// send) with one whose `Interface.options` values must be one of `allowed`, so that a write of
/// any other value fails with a constraint violation.
fn constrain_options_values(node: &Node, allowed: &[&str]) {
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read("/usr/share/openvswitch/vswitch.ovsschema").unwrap())
            .unwrap();
    let mut schema = schema;
    schema["tables"]["Interface"]["columns"]["options"]["type"]["value"] =
        serde_json::json!({"type": "string", "enum": ["set", allowed]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("constrained.ovsschema");
    std::fs::write(&path, schema.to_string()).unwrap();
    let out = Command::new("ovsdb-client")
        .args(["convert", &node.db_arg(), path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OVSDB client changes the schema so that the new key breaks a constraint: ovsdb-server's
/// error details quote the value it rejects, the key (attack8 F1). push-key fails, writes
/// nothing, and neither the new key nor the old one appears in its output: the server's details
/// are withheld for a transaction that carries a key.
#[test]
fn a_constraint_violation_on_the_key_write_never_prints_the_key() {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", OLD);
    constrain_options_values(&node, &[OLD, "10.0.0.2", "10.0.0.3"]);
    for extra in [&[][..], &["--result-frame"][..]] {
        let out = push_key(&node, NEW, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("constraint violation") && stderr.contains("withheld"),
            "{stderr}"
        );
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains(NEW) && !text.contains(OLD),
                "a key in {what}: {text}"
            );
        }
        assert_eq!(key_of(&node, "n1-abc123"), OLD);
        assert_eq!(key_of(&node, "n2-def456"), OLD);
    }
}

/// Starts push-key writing `NEW` at an instant `lead_ms` ahead: it reads and prepares at once,
/// then sleeps until the instant.
fn push_key_at(node: &Node, lead_ms: u64) -> std::process::Child {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + lead_ms;
    Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .arg("push-key")
        .args(node.node_args())
        .args(["--at-unix-ms", &at.to_string()])
        .env("ANTREA_IPSEC_PSK", NEW)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Adds an interface `evil0` of `kind` (`type=...`) carrying the old key, unmarked.
fn add_row_with_old_key(node: &Node, kind: &str) {
    node.vsctl(&[
        "add-port",
        "br-int",
        "evil0",
        "--",
        "set",
        "Interface",
        "evil0",
        kind,
        "options:remote_ip=10.0.0.9",
        &format!("options:psk={OLD}"),
    ]);
}

/// Between push-key's read and its write (the wait for the instant), an OVSDB client gives one
/// tunnel another key, or adds an unmarked geneve interface with the old key (attack8 F2).
/// The write asserts that the rows carrying the old key are the ones read: the transaction
/// aborts, nothing is written, exit 2, and no key is printed. A row that is no tunnel (an
/// internal interface) given the old key meanwhile is not the write's business: the tunnels get
/// the new key, that row keeps its own, and the count is of the rows changed.
#[test]
fn tunnels_changed_between_read_and_write_abort_the_write() {
    type Change = fn(&Node);
    let cases: [(&str, Change, bool); 3] = [
        (
            "another key on n2",
            |n: &Node| n.set_psk("n2-def456", "Attacker-Chosen-Key-000000000000"),
            false,
        ),
        (
            "a geneve row with the old key",
            |n: &Node| add_row_with_old_key(n, "type=geneve"),
            false,
        ),
        (
            "an internal row with the old key",
            |n: &Node| add_row_with_old_key(n, "type=internal"),
            true,
        ),
    ];
    for (what, change, writes) in cases {
        let node = Node::start();
        node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD);
        node.add_tunnel("n2-def456", "node2", "10.0.0.3", OLD);
        let child = push_key_at(&node, 3000);
        std::thread::sleep(Duration::from_millis(1200));
        let n2_before = key_of(&node, "n2-def456");
        change(&node);
        let n2_changed = key_of(&node, "n2-def456");
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(n2_before, OLD, "{what}: the change came after the read");
        for text in [&stdout, &stderr] {
            assert!(
                !text.contains(NEW) && !text.contains(OLD),
                "{what}: a key in {text}"
            );
        }
        if writes {
            assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
            assert_eq!(key_of(&node, "n1-abc123"), NEW, "{what}");
            assert_eq!(key_of(&node, "n2-def456"), NEW, "{what}");
            assert_eq!(
                key_of(&node, "evil0"),
                OLD,
                "{what}: not a tunnel, not written"
            );
            let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(summary["tunnels_changed"], 2, "{what}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
            assert!(
                stderr.contains("changed between the read and the write"),
                "{what}: {stderr}"
            );
            assert_eq!(key_of(&node, "n1-abc123"), OLD, "{what}: nothing written");
            assert_eq!(
                key_of(&node, "n2-def456"),
                n2_changed,
                "{what}: nothing written"
            );
        }
    }
}

/// Some tunnels already carry the new key (a push resumed, a tunnel the agent added with it)
/// beside tunnels on the old key. Every wait of the write comes before any mutation, and the
/// rows already on the new key are not written again, whatever order the two keys' fingerprints
/// put their operations in (review8 finding 1: a mutation moving rows onto the new key broke
/// the wait of the group already on it, in one order of the two). Salts are picked to give both
/// orders.
#[test]
fn tunnels_already_on_the_new_key_do_not_fail_the_write() {
    let order = |salt: &str| {
        let fp = psk_guard::secret::FingerprintKey::given(salt);
        fp.fingerprint_bytes(OLD.as_bytes()) < fp.fingerprint_bytes(NEW.as_bytes())
    };
    let salts: Vec<String> = (0..64).map(|i| format!("salt-{i}")).collect();
    let first = salts.iter().find(|s| order(s)).unwrap();
    let second = salts.iter().find(|s| !order(s)).unwrap();
    for salt in [first, second] {
        let node = Node::start();
        node.add_tunnel("n1-abc123", "node1", "10.0.0.2", OLD);
        node.add_tunnel("n2-def456", "node2", "10.0.0.3", NEW);
        node.add_tunnel("n3-0a0b0c", "node3", "10.0.0.4", OLD);
        let out = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
            .arg("push-key")
            .args(node.node_args())
            .env("ANTREA_IPSEC_PSK", NEW)
            .env("PSK_GUARD_FINGERPRINT_SALT", salt)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "salt {salt}: {stderr}");
        for t in ["n1-abc123", "n2-def456", "n3-0a0b0c"] {
            assert_eq!(key_of(&node, t), NEW, "salt {salt}: {t}");
        }
        let summary: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert_eq!(
            summary["tunnels_changed"], 2,
            "salt {salt}: only the two on the old key"
        );
    }
}
