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
//! The blocks that need a cluster (`kubectl apply`, `kubectl logs`) run in the second half of
//! this file, against the API test server.

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

// ---------------------------------------------------------------------------------------------
// The cluster side: every `kubectl` command of docs/guides/*.md, run verbatim by the real kubectl
// against the API test server (kube_api, kube_discovery) and the simulated cluster (sim), whose
// Jobs run the real psk-guard. Each block runs as written under `bash -e -o pipefail` in a
// scratch directory where `docs/` is the repository's (the guides are followed from a checkout),
// with KUBECONFIG pointing at the test server and psk-guard on PATH. A command that fails fails
// the block; every kubectl command of a guide must be run or listed as not runnable here, with
// the reason, so a guide edit cannot add an untested command.

use crate::sim::{Cluster, Options2, Shape};

const KEY: &str = "Hq3vZ8mR1xT5wK9bN2cF7jL4pY6sD0gAx1";

/// Inline code spans outside fenced blocks that are commands (`kubectl …`).
fn inline_commands(md: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("kubectl "))
        .map(str::to_owned)
        .collect()
}

fn kubectl_bin() -> PathBuf {
    let p = PathBuf::from("/usr/bin/kubectl");
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    found.or(p.is_file().then_some(p)).expect(
        "kubectl is needed to run the guides' cluster commands: scripts/test installs it \
         (scripts/lib/ensure.sh ensure_kubectl)",
    )
}

/// `kubectl create job --from=cronjob/…` posts the Job through client-go's typed client, which
/// since 1.32 encodes built-in kinds as Kubernetes protobuf (client-go rest/request.go
/// `UseProtobufAsDefault`, used by the generated clients' `PrefersProtobuf`); the test server
/// speaks JSON only and answers 415 as kube-apiserver does for a media type it does not decode.
/// So that command runs with `--dry-run=client -o json` (the same Job, built by the same kubectl
/// code from the CronJob it reads from the server) piped into `kubectl create -f -`, which posts
/// it as JSON: only the wire encoding differs from the guide.
fn json_wire(script: &str) -> String {
    script
        .lines()
        .map(|l| {
            if l.contains(" create job --from=cronjob/") {
                format!("{l} --dry-run=client -o json | kubectl -n kube-system create -f -")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct GuideRun {
    md: String,
    cluster: Cluster,
    scratch: tempfile::TempDir,
    /// The guide's kubectl commands that ran.
    ran: Vec<String>,
}

impl GuideRun {
    fn new(guide: &str, shape: Shape) -> GuideRun {
        kubectl_bin();
        let md = std::fs::read_to_string(root().join(guide)).unwrap();
        let cluster = Cluster::with_shape(
            Options2 {
                nodes: 2,
                key: KEY.into(),
                on_delete: false,
                restart_delay: std::time::Duration::from_millis(10),
            },
            shape,
        );
        let scratch = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(root().join("docs"), scratch.path().join("docs")).unwrap();
        GuideRun {
            md,
            cluster,
            scratch,
            ran: vec![],
        }
    }

    /// Runs `script` (guide text) with bash -e -o pipefail; panics with its output on failure.
    fn sh(&mut self, what: &str, script: &str) -> String {
        for c in commands(script) {
            self.ran.push(c);
        }
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_psk-guard"));
        let path = format!(
            "{}:{}:/usr/bin:/bin",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(self.scratch.path())
            .env("PATH", path)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("HOME", self.scratch.path())
            .env_remove("RUST_LOG")
            .env_remove("PSK_GUARD_FINGERPRINT_SALT")
            .output()
            .unwrap();
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        crate::output::assert_no_key(what, &all, &[KEY]);
        assert!(
            out.status.success(),
            "{what}: exit {:?}\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the guide's code block that contains `marker`, verbatim but for `subst`.
    fn block(&mut self, marker: &str, subst: &[(&str, &str)]) -> String {
        let (_, body) = blocks(&self.md)
            .into_iter()
            .find(|(_, b)| b.contains(marker))
            .unwrap_or_else(|| panic!("a code block with {marker:?}"));
        let mut script = body.clone();
        for (from, to) in subst {
            script = script.replace(from, to);
        }
        let script = json_wire(&script);
        let out = self.sh(marker, &script);
        // Recorded as the guide wrote them.
        self.ran.extend(commands(&body));
        out
    }

    /// Runs the guide's inline command that starts with `prefix`.
    fn inline(&mut self, prefix: &str) -> String {
        let cmd = inline_commands(&self.md)
            .into_iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("an inline command {prefix:?}"));
        self.ran.push(cmd.clone());
        let script = json_wire(&cmd);
        self.sh(prefix, &script)
    }

    /// Waits (up to 120 s) until the Job has finished, as the simulated cluster shows it.
    fn wait_job(&self, name: &str) -> Value {
        for _ in 0..1200 {
            let j = self
                .cluster
                .state
                .lock()
                .unwrap()
                .get("jobs", crate::sim::NS, name)
                .cloned();
            if let Some(j) = j {
                if j["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Complete" || c["type"] == "Failed")
                }) {
                    return j;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("job {name} did not finish");
    }

    /// Every kubectl command of the guide ran, or is in `not_here` (prefix, why not).
    fn all_ran(&self, not_here: &[(&str, &str)]) {
        let all = blocks(&self.md)
            .into_iter()
            .flat_map(|(_, b)| commands(&b))
            .chain(inline_commands(&self.md))
            .filter(|c| c.contains("kubectl "));
        for c in all {
            let ok =
                self.ran.iter().any(|r| r == &c) || not_here.iter().any(|(p, _)| c.starts_with(p));
            assert!(ok, "guide command not run by the test: {c}");
        }
    }

    fn has(&self, res: &str, ns: &str, name: &str) -> Value {
        self.cluster
            .state
            .lock()
            .unwrap()
            .get(res, ns, name)
            .cloned()
            .unwrap_or_else(|| panic!("{res} {ns}/{name} exists"))
    }
}

use serde_json::Value;

/// The JSON report a block's output ends with (after kubectl's own lines such as
/// `job.batch/x created`): from the first line that opens an object to the end.
fn report_in(out: &str) -> Value {
    let start = out
        .lines()
        .position(|l| l == "{")
        .unwrap_or_else(|| panic!("a JSON report in: {out}"));
    let text = out.lines().skip(start).collect::<Vec<_>>().join("\n");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The RBAC, admission policy and service accounts the guides apply exist as the manifests say,
/// with kubectl's last-applied-configuration (client-side apply).
fn assert_installed(g: &GuideRun) {
    for (res, ns, name) in [
        ("serviceaccounts", "kube-system", "psk-guard-audit"),
        ("serviceaccounts", "kube-system", "psk-guard-rotate"),
        ("roles", "kube-system", "psk-guard-rotate"),
        ("clusterroles", "", "psk-guard-audit"),
        ("clusterrolebindings", "", "psk-guard-audit"),
    ] {
        let o = g.has(res, ns, name);
        assert!(
            o["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string(),
            "{res} {name}: {o:#}"
        );
    }
    let policies = g
        .cluster
        .state
        .lock()
        .unwrap()
        .list("validatingadmissionpolicies", "")
        .len();
    assert_eq!(policies, 1, "the admission policy was applied");
}

#[test]
fn incident_response_guide_kubectl_commands_work_as_written() {
    let mut g = GuideRun::new("docs/guides/incident-response.md", Shape::default());
    // 1. Install.
    g.block("-f docs/deploy/admission-policy.yaml", &[]);
    assert_installed(&g);
    // 2. The audit Job, its wait, its log as audit.json, and jq over it.
    let jq = g.block("logs job/psk-guard-audit > audit.json", &[]);
    let report: Value =
        serde_json::from_slice(&std::fs::read(g.scratch.path().join("audit.json")).unwrap())
            .expect("audit.json is the JSON report alone");
    assert_eq!(
        report["data"]["nodes"]["worker-00"]["status"], "checked",
        "{report:#}"
    );
    assert!(jq.contains("\"code\""), "jq printed the findings: {jq}");
    let job = g.has("jobs", "kube-system", "psk-guard-audit");
    assert!(job["status"]["conditions"].is_array(), "{job:#}");
    // 4. Rotate now from the CronJob, wait, and read the report.
    let old = g.cluster.secret_key();
    let log = g.block("create job --from=cronjob/psk-guard-rotate", &[]);
    let r = report_in(&log);
    assert_eq!(r["command"], "rotate", "{r:#}");
    assert_ne!(
        g.cluster.secret_key(),
        old,
        "the rotation Job rotated the key"
    );
    let job = g.wait_job("psk-guard-rotate-now");
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual",
        "made by kubectl create job --from: {job:#}"
    );
    g.all_ran(&[]);
}

#[test]
fn scheduled_rotation_guide_kubectl_commands_work_as_written() {
    let mut g = GuideRun::new("docs/guides/scheduled-rotation.md", Shape::default());
    let out = g.block("-f docs/deploy/rotation-cronjob.yaml", &[]);
    assert!(out.contains("psk-guard-rotate"), "get cronjob: {out}");
    assert_installed(&g);
    let cron = g.has("cronjobs", "kube-system", "psk-guard-rotate");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    // Applied again (after incident-response.md, or a second time): kubectl compares with the
    // last-applied configuration and patches nothing that did not change.
    let again = g.block("-f docs/deploy/rotation-cronjob.yaml", &[]);
    assert!(again.contains("unchanged"), "{again}");
    // A run: the guide's own manual run stands in for the schedule firing.
    let old = g.cluster.secret_key();
    g.inline("kubectl -n kube-system create job --from=cronjob/psk-guard-rotate");
    let job = g.wait_job("psk-guard-rotate-manual");
    assert!(job["status"]["succeeded"] == 1, "{job:#}");
    assert_ne!(g.cluster.secret_key(), old);
    // Follow a run: `<job>` is the guide's placeholder for the Job's name.
    let out = g.block(
        "get jobs -l psk-guard.io/purpose=rotate",
        &[("<job>", "psk-guard-rotate-manual")],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("psk-guard-rotate-manual ")),
        "get jobs -l lists the run: {out}"
    );
    assert!(
        out.contains("antrea-ipsec."),
        "get events lists the rotation's Events: {out}"
    );
    assert!(
        out.contains("psk-guard.io/"),
        "the record's annotations: {out}"
    );
    g.all_ran(&[]);
}

#[test]
fn manual_node_run_guide_kubectl_commands_work_as_written() {
    let shape = Shape {
        names: Some(vec!["worker-1".into(), "worker-2".into()]),
        ..Shape::default()
    };
    let mut g = GuideRun::new(GUIDE, shape);
    let log = g.block("docs/deploy/node-check-job.yaml | kubectl apply -f -", &[]);
    let r = report_in(&log);
    assert_eq!(r["command"], "check", "the check report: {r:#}");
    let job = g.has("jobs", "kube-system", "psk-guard-check-worker-1");
    let pod = g
        .cluster
        .state
        .lock()
        .unwrap()
        .list("pods", "kube-system")
        .into_iter()
        .find(|p| p["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"])
        .cloned()
        .unwrap();
    assert_eq!(pod["spec"]["nodeName"], "worker-1", "pinned to the node");
    // The pod's service account exists (the sim does not run ServiceAccount admission, which
    // would refuse the pod otherwise: plugin/pkg/admission/serviceaccount).
    let sa = job["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    g.has("serviceaccounts", "kube-system", sa);
    g.all_ran(&[(
        "kubectl debug node/",
        "needs a kubelet to create the debug pod and an attach stream (SPDY/WebSocket) to its \
         terminal; the command it runs in the pod is run by \
         debug_pod_guide_command_finds_the_node_through_host_root",
    )]);
}
