//! The guides' node commands, run as written. docs/guides/manual-node-run.md is taken apart into
//! its code blocks and each shell line that calls `psk-guard` runs verbatim (the guide's own
//! redirections and paths) against a real ovsdb-server seeded like an Antrea IPsec node.
//!
//! The guide runs on the node itself, as root, with the default paths: `/var/run/antrea`, which is
//! a link to `/run/antrea` on Debian and Ubuntu (as on this machine). Each block therefore runs in a
//! private mount namespace where the node's run directory is bind-mounted at `/run/antrea` (under a
//! fresh root-owned 0755 tmpfs on `/run`, as systemd mounts it), `/tmp` and `/var/lib` are this test's
//! scratch directories (so `/tmp/check.json` and node_exporter's textfile directory are real paths
//! and nothing of the host is written), and `psk-guard` is on `PATH`. The debug-pod block gets what
//! `kubectl debug node/…` gives a pod: the host's root at `/host`, where `/var/run` is an absolute
//! link to `/run`, and its own, empty `/run` (so without `--host-root` nothing would be found).
//!
//! The blocks that need a cluster (`kubectl apply`, `kubectl logs`) are not run here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::Node;

const GUIDE: &str = "docs/guides/manual-node-run.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced code blocks of a Markdown file, with their info string.
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut cur: Option<(String, String)> = None;
    for line in md.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => cur = Some((info.trim().to_owned(), String::new())),
            }
        } else if let Some((_, body)) = cur.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Shell command lines of a block: continuation lines joined, comment-only and empty lines out.
fn commands(block: &str) -> Vec<String> {
    let mut out = vec![];
    let mut acc = String::new();
    for line in block.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            acc.push_str(head);
            continue;
        }
        acc.push_str(line);
        let cmd = std::mem::take(&mut acc);
        let t = cmd.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(t.to_owned());
        }
    }
    out
}

fn seeded() -> Node {
    let node = Node::start_in("guide");
    node.add_tunnel("worker-a-1a2b3c", "worker-a", "192.0.2.11", "changeme");
    node.add_tunnel("worker-b-4d5e6f", "worker-b", "192.0.2.12", "changeme");
    node.set_psk("worker-b-4d5e6f", "an-older-key-from-last-year");
    node.set_psk("worker-b-4d5e6f", "changeme");
    node.chmod(&node.conf_db, 0o644);
    node.chmod(&node.run_dir, 0o755);
    node
}

/// Runs `script` as root in a private mount namespace after `setup`, in `cwd`, with psk-guard on
/// PATH. Each command is followed by a check that it exited 0 or 1 (1: findings, as the guide
/// says); anything else stops the script with the command named.
fn run_in_namespace(setup: &str, cmds: &[String], cwd: &Path) -> std::process::Output {
    let mut script = String::from("set -u\n");
    script.push_str(setup);
    script.push('\n');
    for c in cmds {
        script.push_str(c);
        script.push_str(&format!(
            "\nrc=$?; if [ $rc -gt 1 ]; then echo \"GUIDE COMMAND FAILED ($rc): {}\" >&2; exit 9; fi\n",
            c.replace(['"', '`', '$'], "'")
        ));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_psk-guard"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .env_remove("PSK_GUARD_FINGERPRINT_SALT")
        .output()
        .expect("run unshare")
}

fn assert_ran(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn no_key(what: &str, bytes: &[u8]) {
    for k in ["changeme", "an-older-key-from-last-year"] {
        assert!(
            !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
            "{what} shows a key"
        );
    }
}

/// The node as the guide sees it: `/var/run/antrea` → `/run/antrea` is the node's run directory;
/// `/tmp` and `/var/lib` are scratch.
fn node_setup(node: &Node, scratch: &Path) -> String {
    for d in ["tmp", "varlib/node_exporter/textfile"] {
        std::fs::create_dir_all(scratch.join(d)).unwrap();
    }
    format!(
        "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/antrea && mount --bind '{run}' /run/antrea \
         && mount --bind '{s}/varlib' /var/lib && mount --bind '{s}/tmp' /tmp || exit 8",
        run = node.run_dir.display(),
        s = scratch.display()
    )
}

#[test]
fn manual_node_run_guide_commands_work_as_written() {
    let md = std::fs::read_to_string(root().join(GUIDE)).unwrap();
    let bs = blocks(&md);
    let on_node = bs
        .iter()
        .find(|(_, b)| b.contains("psk-guard fix --dry-run"))
        .expect("the on-node block");
    let files = bs
        .iter()
        .find(|(_, b)| b.contains("--output-file"))
        .expect("the report-files block");
    let node = seeded();
    let scratch = tempfile::tempdir().unwrap();
    // The example of docs/ignore-file.md is the guide's accepted.yaml.
    let ignore_doc = std::fs::read_to_string(root().join("docs/ignore-file.md")).unwrap();
    let (_, example) = blocks(&ignore_doc)
        .into_iter()
        .find(|(info, _)| info == "yaml")
        .expect("docs/ignore-file.md has a YAML example");
    std::fs::write(scratch.path().join("accepted.yaml"), example).unwrap();

    // 1. The report files first (before `fix` tightens the node).
    let cmds = commands(&files.1);
    assert!(cmds.iter().all(|c| c.starts_with("psk-guard ")), "{cmds:?}");
    let out = run_in_namespace(&node_setup(&node, scratch.path()), &cmds, scratch.path());
    assert_ran("report-files block", &out);
    no_key(
        "report-files block output",
        &[out.stdout, out.stderr].concat(),
    );
    let sarif: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path().join("check.sarif")).unwrap())
            .unwrap();
    assert!(
        sarif["runs"][0]["results"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "the node's findings are in check.sarif"
    );
    let xml = std::fs::read_to_string(scratch.path().join("check.xml")).unwrap();
    assert!(xml.contains("<testsuites") && xml.contains("psk-default-key"));
    let prom = std::fs::read_to_string(
        scratch
            .path()
            .join("varlib/node_exporter/textfile/psk_guard.prom"),
    )
    .unwrap();
    assert!(prom.contains("psk_guard_findings"), "{prom}");

    // 2. On the node: check, check -o json > /tmp/check.json, scan-db, fix --dry-run, fix.
    let cmds = commands(&on_node.1);
    assert!(cmds.iter().all(|c| c.starts_with("psk-guard ")), "{cmds:?}");
    let out = run_in_namespace(&node_setup(&node, scratch.path()), &cmds, scratch.path());
    assert_ran("on-node block", &out);
    no_key("on-node block output", &[out.stdout, out.stderr].concat());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path().join("tmp/check.json")).unwrap())
            .unwrap();
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    for want in [
        "psk-default-key",
        "psk-history-on-disk",
        "conf-db-mode-too-open",
        "run-dir-mode-too-open",
    ] {
        assert!(codes.contains(&want), "{want} in {codes:?}");
    }
    // The guide's `psk-guard fix` really fixed the node.
    assert_eq!(node.mode(&node.conf_db) & 0o077 & !0o040, 0);
    let db = std::fs::read(&node.conf_db).unwrap();
    let old = b"an-older-key-from-last-year";
    assert!(
        !db.windows(old.len()).any(|w| w == old),
        "the guide's fix compacted the old key away"
    );
}

#[test]
fn debug_pod_guide_command_finds_the_node_through_host_root() {
    let md = std::fs::read_to_string(root().join(GUIDE)).unwrap();
    let debug = blocks(&md)
        .into_iter()
        .flat_map(|(_, b)| commands(&b))
        .find(|c| c.starts_with("kubectl debug node/"))
        .expect("the debug-pod command");
    // What runs in the debug pod is what follows `--`.
    let (_, in_pod) = debug.split_once(" -- ").expect("kubectl debug ... -- CMD");
    let in_pod = in_pod.trim().to_owned();
    assert!(in_pod.starts_with("psk-guard check"), "{in_pod}");
    let node = seeded();
    let scratch = tempfile::tempdir().unwrap();
    let host = scratch.path().join("host");
    // The host's root as the pod sees it at /host: /var/run -> /run (absolute), /run/antrea the
    // node's run directory. The pod's own /run is empty.
    std::fs::create_dir_all(host.join("run/antrea")).unwrap();
    std::fs::create_dir_all(host.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", host.join("var/run")).unwrap();
    // The pod's mount point is /host; this test does not create /host on the machine's own root
    // file system, so the host root is mounted at /mnt/host (a tmpfs on /mnt in the namespace) and
    // the guide's `/host` is rewritten to it: the same layout under another name.
    let setup = format!(
        "mount --bind '{run}' '{h}/run/antrea' && mount -t tmpfs -o mode=0755 tmpfs /run \
         && mount -t tmpfs -o mode=0755 tmpfs /mnt && mkdir /mnt/host && mount --rbind '{h}' /mnt/host \
         || exit 8",
        run = node.run_dir.display(),
        h = host.display()
    );
    let cmd = format!("{in_pod} -o json > guide-report.json").replace("/host", "/mnt/host");
    let out = run_in_namespace(&setup, &[cmd], scratch.path());
    assert_ran("debug-pod command", &out);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path().join("guide-report.json")).unwrap())
            .unwrap();
    let text = report.to_string();
    assert!(text.contains("psk-default-key"), "{text}");
    assert!(
        !text.contains("path-absent"),
        "every node path was found: {text}"
    );
    no_key("debug-pod report", text.as_bytes());
}
