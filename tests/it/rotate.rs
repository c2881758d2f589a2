//! `psk-guard rotate` end to end on the simulated cluster (real binary, real kube client, API test
//! server, real ovsdb-servers), and its faults.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::kube_api::base64_encode;
use crate::output::assert_no_key;
use crate::sim::{Cluster, Options2, NS};

const OLD: &str = "changeme";

fn cluster(n: usize, on_delete: bool) -> Cluster {
    Cluster::new(Options2 {
        nodes: n,
        key: OLD.into(),
        on_delete,
        restart_delay: Duration::from_millis(20),
    })
}

const FAST: [&str; 6] = [
    "--lease-duration",
    "3",
    "--push-lead-ms",
    "500",
    "--job-timeout",
    "60",
];

fn rotate(c: &Cluster, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["rotate", "-o", "json"];
    // FAST's flags, unless the test gives its own value.
    for pair in FAST.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    if !extra.contains(&"--rollout-timeout") && !extra.contains(&"--progress-deadline") {
        args.extend_from_slice(&["--progress-deadline", "120"]);
    }
    args.extend_from_slice(extra);
    c.psk_guard(&args, &[])
}

/// Everything the tests assert after a complete rotation.
fn assert_rotated(c: &Cluster, out: &std::process::Output, old: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::formats::assert_valid_report("rotate", &report);
    let new = c.secret_key();
    assert_ne!(new, old);
    assert_eq!(new.len(), 43, "32 random bytes, base64url");
    assert!(new
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
    for (node, keys) in c.node_keys() {
        assert_eq!(keys, vec![new.clone()], "node {node} tunnels");
    }
    // No old key left in any conf.db file.
    for n in &c.nodes {
        let bytes = std::fs::read(&n.conf_db).unwrap();
        assert!(
            !bytes.windows(old.len()).any(|w| w == old.as_bytes()),
            "old key still in {}",
            n.conf_db.display()
        );
    }
    assert_eq!(c.annotation("phase").as_deref(), Some("done"));
    // No key bytes in any output or Event.
    for k in [old, new.as_str()] {
        assert_no_key("rotate stdout", &out.stdout, &[k]);
        assert_no_key("rotate stderr", &out.stderr, &[k]);
        let st = c.state.lock().unwrap();
        for ev in st.list("events", NS) {
            assert_no_key("an Event", ev.to_string().as_bytes(), &[k]);
        }
        let ann =
            st.get("secrets", NS, "antrea-ipsec").unwrap()["metadata"]["annotations"].to_string();
        assert_no_key("the Secret's annotations", ann.as_bytes(), &[k]);
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["data"]["phase"], "done");
    assert!(report["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["converged"] == true));
    // Every request the code made is one of the permissions it declares (and the manifests grant);
    // the push pods' Lease watch is psk-guard-node's (the test server sees one identity).
    crate::harness::assert_used_is_declared(
        &c.state.lock().unwrap().used,
        &[
            psk_guard::rotation::PERMISSIONS,
            psk_guard::rotation::ON_DELETE_PERMISSIONS,
            psk_guard::rotation::CLUSTER_PERMISSIONS,
            psk_guard::rotation::node::PERMISSIONS,
        ],
        "rotate",
    );
    let reasons: Vec<String> = c
        .state
        .lock()
        .unwrap()
        .list("events", NS)
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    for r in ["RotationStarted", "RolledOut", "Verified", "RotationDone"] {
        assert!(
            reasons.contains(&r.to_string()),
            "event {r} missing: {reasons:?}"
        );
    }
}

#[test]
fn restart_strategy_rotates_five_nodes() {
    let c = cluster(5, false);
    let out = rotate(&c, &["--strategy", "restart"]);
    assert_rotated(&c, &out, OLD);
    // The DaemonSet's template was annotated; its Jobs are cleaned up.
    let st = c.state.lock().unwrap();
    assert!(
        st.get("daemonsets", NS, "antrea-agent").unwrap()["spec"]["template"]["metadata"]
            ["annotations"]["psk-guard.io/rotation"]
            .is_string()
    );
    assert!(st.list("jobs", NS).is_empty(), "jobs left behind");
    assert!(
        st.get("leases", NS, "psk-guard-rotation").unwrap()["spec"]["holderIdentity"].is_null(),
        "lease released"
    );
}

#[test]
fn push_strategy_rotates_five_nodes_at_one_instant() {
    let c = cluster(5, false);
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
    let ch = c.changes.lock().unwrap().clone();
    assert_eq!(
        ch.iter()
            .map(|x| &x.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        5,
        "every node changed: {ch:?}"
    );
    // After the push, the restarted agents found the key they expected and recreated nothing.
    assert_eq!(ch.len(), 5, "one change per node: {ch:?}");
    // The measured window is reported: first node's write to the last, by the nodes' reports.
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let at: Vec<u64> = r["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["pushed_at_unix_ms"]
                .as_u64()
                .expect("each node's write time")
        })
        .collect();
    assert_eq!(at.len(), 5, "{r:#}");
    let window = at.iter().max().unwrap() - at.iter().min().unwrap();
    assert_eq!(r["data"]["timings"]["push_window_ms"], window, "{r:#}");
    assert!(r["data"]["timings"]["push_late_ms"].is_u64(), "{r:#}");
}

#[test]
fn on_delete_daemonset_gets_its_pods_deleted() {
    let c = cluster(3, true);
    let out = rotate(&c, &["--strategy", "restart"]);
    assert_rotated(&c, &out, OLD);
    let st = c.state.lock().unwrap();
    assert!(
        st.count("POST", "pods") >= 3,
        "evicted through pods/eviction"
    );
    assert_eq!(st.count("DELETE", "pods"), 0, "never deleted directly");
}

/// `--quiet` keeps stderr empty through the whole rotation: the rollout lines, the eviction
/// batches (OnDelete) and the Lease messages went to stderr directly and ignored it.
#[test]
fn quiet_rotation_prints_nothing_on_stderr() {
    let c = cluster(2, true);
    let out = rotate(&c, &["--strategy", "restart", "--quiet"]);
    assert_rotated(&c, &out, OLD);
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn operator_supplied_key_is_checked() {
    let c = cluster(2, false);
    let weak = c.dir.path().join("weak");
    std::fs::write(&weak, "password\n").unwrap();
    let out = rotate(&c, &["--psk-file", weak.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too weak"));
    assert_eq!(c.secret_key(), OLD, "nothing changed");
    // An endless file is refused after a bounded read (it was read to the end of memory).
    let out = rotate(&c, &["--psk-file", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("larger than 4096 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.secret_key(), OLD, "nothing changed");
    let good = c.dir.path().join("good");
    let key = "Hq3vZ8mR1xT5wK9bN2cF7jL4pY6sD0gA";
    std::fs::write(&good, format!("{key}\n")).unwrap();
    let out = rotate(&c, &["--psk-file", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.secret_key(), key);
    assert_no_key("stdout", &out.stdout, &[key]);
}

/// Runs rotate until it pauses after `phase`, then kills it (SIGKILL).
fn crash_after(c: &Cluster, phase: &str, strategy: &str) {
    let mut args = vec!["rotate", "-o", "json", "--strategy", strategy];
    args.extend_from_slice(&FAST);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psk-guard"));
    cmd.args(&args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PSK_GUARD_TEST_PAUSE_AFTER", phase);
    let (mut child, _) = crate::harness::spawn_until(&mut cmd, "psk-guard: paused after");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_after_each_phase_then_rerun_completes_the_same_rotation() {
    for (phase, strategy) in [
        ("secret-written", "push"),
        ("rolled-out", "restart"),
        ("verified", "restart"),
        ("compacted", "push"),
    ] {
        let c = cluster(3, false);
        crash_after(&c, phase, strategy);
        let id = c.annotation("rotation-id").expect("record written");
        let key = c.secret_key();
        assert_eq!(c.annotation("phase").as_deref(), Some(phase));
        // The dead run's lease expires (3 s here), then a rerun resumes.
        std::thread::sleep(Duration::from_millis(3500));
        let out = rotate(&c, &[]);
        assert_rotated(&c, &out, OLD);
        assert_eq!(
            c.annotation("rotation-id").as_deref(),
            Some(id.as_str()),
            "same rotation after a crash at {phase}"
        );
        assert_eq!(
            c.secret_key(),
            key,
            "the key written before the crash is kept"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    }
}

#[test]
fn conflict_on_the_secret_write_is_retried() {
    let c = cluster(2, false);
    c.state.lock().unwrap().race_secret_updates = 2;
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
    let st = c.state.lock().unwrap();
    assert!(st.count("PUT", "secrets") >= 3, "the 409s were retried");
    assert!(
        st.get("secrets", NS, "antrea-ipsec").unwrap()["metadata"]["annotations"]["someone-else"]
            .is_string(),
        "the other writer's change was kept"
    );
}

#[test]
fn someone_else_changing_the_key_aborts() {
    let c = cluster(2, false);
    c.state.lock().unwrap().foreign_key_change =
        Some(b"another-writers-key-0123456789abcdef".to_vec());
    let out = rotate(&c, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("changed by someone else"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.secret_key(),
        "another-writers-key-0123456789abcdef",
        "their key is left alone"
    );
}

#[test]
fn a_node_whose_ovsdb_is_down_is_named_and_the_rotation_resumes_later() {
    let mut c = cluster(3, false);
    c.nodes[1].stop();
    let out = rotate(&c, &["--rollout-timeout", "4"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not restarted on: worker-01"), "{err}");
    assert_eq!(
        c.annotation("phase").as_deref(),
        Some("secret-written"),
        "resumable"
    );
    // The node's OVSDB comes back: its agent starts, and the rerun completes the same rotation.
    let id = c.annotation("rotation-id");
    c.nodes[1].start_server();
    std::thread::sleep(Duration::from_millis(3500)); // the dead run's lease expires
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
    assert_eq!(c.annotation("rotation-id"), id);
}

#[test]
fn a_node_that_does_not_converge_is_named_and_the_rotation_resumes_later() {
    let c = cluster(3, false);
    c.stale.lock().unwrap().insert("worker-02".into());
    let out = rotate(&c, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["subject"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bad, vec!["worker-02"]);
    assert_eq!(c.annotation("phase").as_deref(), Some("rolled-out"));
    assert_eq!(c.annotation("unconverged").as_deref(), Some("worker-02"));
    assert!(c
        .state
        .lock()
        .unwrap()
        .list("events", NS)
        .iter()
        .any(|e| e["reason"] == "VerifyFailed" && e["type"] == "Warning"));
    // The agent is fixed and restarts with the Secret's key; the rerun completes.
    c.stale.lock().unwrap().clear();
    let (key, infos, changes) = (c.secret_key(), c.infos.clone(), c.changes.clone());
    c.rt.block_on(crate::sim::agent_start(&infos[2], &infos, &key, &changes))
        .unwrap();
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
}

fn assert_nothing_written(c: &Cluster) {
    let writes = c.state.lock().unwrap().writes();
    assert!(writes.is_empty(), "writes before the failure: {writes:?}");
    assert!(!c.secret_key().is_empty());
}

#[test]
fn preflight_failures_change_nothing() {
    // Missing key in the Secret.
    let c = cluster(1, false);
    {
        let mut st = c.state.lock().unwrap();
        let mut s = st.get("secrets", NS, "antrea-ipsec").cloned().unwrap();
        s["data"] = json!({"other": base64_encode(b"x")});
        st.put("secrets", NS, s);
        st.requests.clear();
    }
    let out = rotate(&c, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no key \"psk\""));
    assert!(c.state.lock().unwrap().writes().is_empty());
    // Not UTF-8.
    {
        let mut st = c.state.lock().unwrap();
        let mut s = st.get("secrets", NS, "antrea-ipsec").cloned().unwrap();
        s["data"] = json!({"psk": base64_encode(&[0xff, 0xfe, 0x00, 0x41])});
        st.put("secrets", NS, s);
        st.requests.clear();
    }
    let out = rotate(&c, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
    assert!(c.state.lock().unwrap().writes().is_empty());
    // Permission denied: named, nothing written.
    let c = cluster(1, false);
    {
        let mut st = c.state.lock().unwrap();
        st.denied.insert(("update".into(), "secrets".into()));
        st.denied.insert(("create".into(), "jobs".into()));
        st.requests.clear();
    }
    let out = rotate(&c, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("update secrets") && err.contains("create jobs.batch"),
        "{err}"
    );
    assert_nothing_written(&c);
    assert_eq!(c.secret_key(), OLD);
    // Certificate mode: nothing to rotate.
    let c = cluster(1, false);
    {
        let mut st = c.state.lock().unwrap();
        let mut cm = st.get("configmaps", NS, "antrea-config").cloned().unwrap();
        cm["data"]["antrea-agent.conf"] = json!("ipsec:\n  authenticationMode: cert\n");
        st.put("configmaps", NS, cm);
        st.requests.clear();
    }
    let out = rotate(&c, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate mode"));
    assert_nothing_written(&c);
    // No Secret at all.
    let c = cluster(1, false);
    {
        let mut st = c.state.lock().unwrap();
        st.objects
            .remove(&("secrets".into(), NS.into(), "antrea-ipsec".into()));
        st.requests.clear();
    }
    let out = rotate(&c, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(c.state.lock().unwrap().writes().is_empty());
}

/// A push whose lead cannot fit in the Job timeout (half of it to get Ready, the lead, the 1 s a
/// node may be late) is refused before anything is asked or written, naming both flags; so is
/// resuming a push rotation with such flags (the recorded strategy is push).
#[test]
fn push_lead_that_does_not_fit_the_job_timeout_is_refused() {
    let c = cluster(1, false);
    c.state.lock().unwrap().requests.clear();
    let bad = [
        "--strategy",
        "push",
        "--job-timeout",
        "9",
        "--push-lead-ms",
        "2000",
    ];
    let out = rotate(&c, &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--push-lead-ms 2000 does not fit in --job-timeout 9")
            && err.contains("at most 1500")
            && err.contains("at least 10 s")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert!(
        c.state.lock().unwrap().requests.is_empty(),
        "refused before any API request"
    );
    assert_eq!(c.secret_key(), OLD);
    // Resuming a push rotation (crashed after the Secret write) with --strategy restart but the
    // same lead and timeout: the recorded strategy is push, so the pair is refused, nothing written.
    crash_after(&c, "secret-written", "push");
    let key = c.secret_key();
    let writes = c.state.lock().unwrap().writes().len();
    let out = rotate(
        &c,
        &[
            "--strategy",
            "restart",
            "--job-timeout",
            "5",
            "--push-lead-ms",
            "2000",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--push-lead-ms 2000 does not fit in --job-timeout 5"),
        "{err}"
    );
    assert_eq!(
        c.state.lock().unwrap().writes().len(),
        writes,
        "nothing written"
    );
    assert_eq!(c.secret_key(), key);
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
}

#[test]
fn status_reads_the_record_back() {
    let c = cluster(2, false);
    let out = c.psk_guard(&["rotate", "--status", "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["data"]["rotation"].is_null());
    crash_after(&c, "rolled-out", "restart");
    let out = c.psk_guard(&["rotate", "--status", "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "unfinished");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["phase"], "rolled-out");
    crate::formats::assert_valid_report("rotate --status", &r);
    assert!(r["data"]["new_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    assert_no_key("status", &out.stdout, &[OLD, &c.secret_key()]);
    let _ = std::io::stdout().flush();
}

/// The benchmark of the rotation issue (run by `benches/rotation`, not by the suite): for each
/// node count in BENCH_NODES (comma-separated, default 50), each strategy's mixed-key window
/// (first node's key change to the last), end-to-end time, and the API requests the rotation made
/// (total and per node, counted by the test server), printed as JSON lines. No timed assertion.
#[test]
#[ignore]
fn bench_rotation() {
    let counts: Vec<usize> = std::env::var("BENCH_NODES")
        .unwrap_or_else(|_| "50".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let delay: u64 = std::env::var("BENCH_RESTART_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Pod start latency of the node Jobs (scheduling and image pull), comma-separated ms.
    let starts: Vec<u64> = std::env::var("BENCH_POD_START_MS")
        .unwrap_or_else(|_| "0".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    // Which strategies (comma-separated, default both).
    let strategies: Vec<String> = std::env::var("BENCH_STRATEGIES")
        .unwrap_or_else(|_| "restart,push".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    for n in counts {
        for &start in &starts {
            for strategy in &strategies {
                bench_one(n, delay, start, strategy);
            }
        }
    }
}

fn bench_one(n: usize, delay: u64, pod_start_ms: u64, strategy: &str) {
    let c = Cluster::new(Options2 {
        nodes: n,
        key: OLD.into(),
        on_delete: false,
        restart_delay: Duration::from_millis(delay),
    });
    c.world.lock().unwrap().job_start_delay = Duration::from_millis(pod_start_ms);
    // The push instant's lead after every pod is Ready (default 2000 ms, rotate's default).
    let lead = std::env::var("BENCH_PUSH_LEAD_MS").unwrap_or_else(|_| "2000".into());
    let before = c.state.lock().unwrap().requests.len();
    let cpu_before = (cpu_ticks(), self_cpu_ticks());
    let sampler = Sampler::start(&c);
    let t = std::time::Instant::now();
    let out = c.psk_guard(
        &[
            "rotate",
            "-o",
            "json",
            "--strategy",
            strategy,
            "--lease-duration",
            "30",
            "--push-lead-ms",
            &lead,
            "--progress-deadline",
            "600",
            "--job-timeout",
            "600",
        ],
        &[],
    );
    let total = t.elapsed();
    let samples = sampler.stop();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let requests = c.state.lock().unwrap().requests.len() - before - samples.len();
    let cpu = cpu_account(cpu_before, total);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let propagation = push_propagation(&c, &r, &stderr);
    let around = samples_around(&samples, &propagation);
    println!(
        "{}",
        json!({"strategy": strategy, "nodes": n, "agent_restart_ms": delay, "pod_start_ms": pod_start_ms,
               "mixed_key_window_ms": c.window_ms(), "reported_push_window_ms": r["data"]["timings"]["push_window_ms"], "key_changes": c.changes.lock().unwrap().len(),
               "push_lead_ms": lead, "push_ready_ms": r["data"]["timings"]["push_ready_ms"], "push_late_ms": r["data"]["timings"]["push_late_ms"], "push_failed_nodes": r["data"]["timings"]["push_failed_nodes"],
               "load_avg_1m": std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split(' ').next().map(str::to_owned)),
               "end_to_end_s": total.as_secs_f64(), "rollout_ms": r["data"]["timings"]["rollout_ms"],
               "api_requests": requests, "api_requests_per_node": requests as f64 / n as f64,
               "probe_execs": c.world.lock().unwrap().probe_execs, "cpu": cpu, "push_propagation": propagation,
               "push_announce_ms": r["data"]["timings"]["push_announce_ms"], "exit": out.status.code(),
               "around_the_instant": around})
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = c.secret_key();
    assert!(c.node_keys().iter().all(|(_, k)| k == &vec![new.clone()]));
}

/// Every 500 ms during a benchmark run: how long the API test server takes to answer a GET of
/// the rotation Lease, and the CPU of the test process (server and simulated cluster) and of the
/// machine since the previous sample.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<serde_json::Value>>,
}

impl Sampler {
    fn start(c: &Cluster) -> Sampler {
        let addr = crate::strict::api_addr(&c.kubeconfig);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = vec![];
            let (mut machine, mut own) = (cpu_ticks(), self_cpu_ticks().0);
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let t = std::time::Instant::now();
                let (code, _, _) = crate::strict::http_full(
                    &addr,
                    "GET",
                    &format!(
                        "/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/psk-guard-rotation"
                    ),
                    &serde_json::Value::Null,
                );
                let latency = t.elapsed().as_millis() as u64;
                let (m, o) = (cpu_ticks(), self_cpu_ticks().0);
                let busy = (m.0 - machine.0) as f64 / (m.1 - machine.1).max(1) as f64;
                out.push(json!({"unix_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
                                "get_ms": latency, "code": code, "machine_busy": (busy * 100.0).round() / 100.0, "test_process_jiffies": o - own}));
                (machine, own) = (m, o);
            }
            out
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Vec<serde_json::Value> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The samples from 10 s before the instant was fixed to 10 s after the instant.
fn samples_around(samples: &[serde_json::Value], p: &serde_json::Value) -> serde_json::Value {
    let (Some(a), Some(i)) = (
        p["announced_unix_ms"].as_u64(),
        p["instant_unix_ms"].as_u64(),
    ) else {
        return serde_json::Value::Null;
    };
    samples
        .iter()
        .filter(|s| {
            s["unix_ms"]
                .as_u64()
                .is_some_and(|t| t + 10_000 >= a && t <= i + 10_000)
        })
        .map(|s| {
            let mut s = s.clone();
            s["unix_ms"] = json!(s["unix_ms"].as_u64().unwrap_or(0) as i64 - a as i64);
            s
        })
        .collect()
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// (this process's user+system jiffies, its waited-for children's), from /proc/self/stat.
fn self_cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, a)| a).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14-17 of proc(5) (utime, stime, cutime, cstime) are 11-14 after the comm.
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    (g(11) + g(12), g(13) + g(14))
}

/// Where the run's CPU went, in CPU-seconds per second of the run (the machine has 2 cores):
/// the whole machine, the test process (API test server, simulated kubelets and agents) and the
/// processes it waited for (psk-guard rotate, the Jobs' psk-guard, the readiness probes).
fn cpu_account(before: ((u64, u64), (u64, u64)), took: Duration) -> serde_json::Value {
    let ((busy0, total0), (own0, kids0)) = before;
    let ((busy1, total1), (own1, kids1)) = (cpu_ticks(), self_cpu_ticks());
    let secs = took.as_secs_f64().max(0.001);
    let hz = 100.0; // USER_HZ
    json!({
        "machine_busy": (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
        "test_process_cores": (own1 - own0) as f64 / hz / secs,
        "children_cores": (kids1 - kids0) as f64 / hz / secs,
    })
}

/// For a push: when the announced instant reached each push pod, against when the rotator wrote
/// it (`push_announced_unix_ms`): from the pods' logs, the result (`instant_seen_unix_ms`) of a
/// pod that wrote, the refusal of a late one.
fn push_propagation(c: &Cluster, r: &serde_json::Value, stderr: &str) -> serde_json::Value {
    // A run that failed has no report: its progress line says the instant and the lead, and the
    // instant was fixed (lead before it) just before the announcement was sent.
    let from_stderr = || -> Option<(u64, u64)> {
        let rest = stderr.split("the nodes write at Unix ms ").nth(1)?;
        let instant: u64 = rest.split(' ').next()?.parse().ok()?;
        let lead: u64 = rest.split("(in ").nth(1)?.split(' ').next()?.parse().ok()?;
        Some((instant, instant - lead))
    };
    let (instant, announced) = match (
        r["data"]["timings"]["push_instant_unix_ms"].as_u64(),
        r["data"]["timings"]["push_announced_unix_ms"].as_u64(),
    ) {
        (Some(i), Some(a)) => (i, a),
        _ => match from_stderr() {
            Some(x) => x,
            None => return serde_json::Value::Null,
        },
    };
    let mut seen: Vec<i64> = vec![];
    let (mut refused_late, mut late_by) = (0, vec![]);
    for ((_, pod), log) in &c.state.lock().unwrap().logs {
        if !pod.starts_with("psk-guard-push-") {
            continue;
        }
        if let Some(t) =
            crate::sim::push_result(log).and_then(|v| v["instant_seen_unix_ms"].as_u64())
        {
            seen.push(t as i64 - announced as i64);
        } else if let Some(t) = log.split("reached this node at Unix ms ").nth(1) {
            refused_late += 1;
            // "... reached the instant <at> <late> ms too late ..."
            if let Some(ms) = log
                .split(" ms too late")
                .next()
                .and_then(|s| s.rsplit(' ').next())
                .and_then(|s| s.parse::<u64>().ok())
            {
                late_by.push(ms);
            }
            if let Some(t) = t.split(',').next().and_then(|t| t.parse::<i64>().ok()) {
                seen.push(t - announced as i64);
            }
        }
    }
    seen.sort_unstable();
    let pct = |p: usize| seen.get((seen.len().max(1) - 1) * p / 100).copied();
    let lead_left = instant as i64 - announced as i64;
    // From the last pod turning Ready (the kubelet's status write) to the rotator fixing the
    // instant (instant - lead): how long the rotator's watch of the pods took to see it.
    let last_ready = c.world.lock().unwrap().ready_times.iter().max().copied();
    late_by.sort_unstable();
    json!({"pods": seen.len(), "refused_late": refused_late, "refused_late_by_ms": {"min": late_by.first(), "max": late_by.last()},
           "instant_after_announced_ms": lead_left,
           "seen_after_announced_ms": {"min": seen.first(), "p50": pct(50), "p90": pct(90), "max": seen.last()},
           "seen_after_instant": seen.iter().filter(|s| **s > lead_left).count(),
           "last_ready_unix_ms": last_ready, "announced_unix_ms": announced, "instant_unix_ms": instant})
}

#[test]
fn no_key_in_trace_logs_of_rotate_and_audit() {
    let c = cluster(2, false);
    let mut args = vec!["rotate", "-o", "json", "--strategy", "push"];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(&["--rollout-timeout", "120"]);
    let out = c.psk_guard(&args, &[("RUST_LOG", "trace")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(2000)
            .collect::<String>()
    );
    let new = c.secret_key();
    assert!(out.stderr.len() > 1000, "trace logging is on");
    assert_no_key("rotate stderr at trace", &out.stderr, &[OLD, &new]);
    assert_no_key("rotate stdout", &out.stdout, &[OLD, &new]);
    let out = c.psk_guard(&["audit", "-o", "sarif"], &[("RUST_LOG", "trace")]);
    assert_no_key("audit stderr at trace", &out.stderr, &[OLD, &new]);
    assert_no_key("audit stdout", &out.stdout, &[OLD, &new]);
    let out = c.psk_guard(&["rotate", "--status"], &[("RUST_LOG", "trace")]);
    assert_no_key("status at trace", &out.stderr, &[OLD, &new]);
}

/// An API server that cannot be reached, and one that accepts connections but never answers:
/// each read is retried with backoff, then rotate and audit stop with a clear error, exit 2,
/// within a bounded time.
#[test]
fn api_server_unreachable_or_slow() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port (bound then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = crate::kube_api::kubeconfig(dir.path(), port);
    let t = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["rotate", "--timeout", "1"])
        .env("KUBECONFIG", &down)
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("attempt 1/4") && err.contains("attempt 3/4"),
        "retried with backoff: {err}"
    );
    assert!(err.contains("could not be reached"), "{err}");
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(30),
        "backoff 0.5+1+2 s: {took:?}"
    );
    // Accepts, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let mut conns = vec![];
        silent.set_nonblocking(true).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end {
            if let Ok((s, _)) = silent.accept() {
                conns.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let dir2 = tempfile::tempdir().unwrap();
    let slow = crate::kube_api::kubeconfig(dir2.path(), addr);
    let t = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["audit", "--timeout", "1", "-o", "json"])
        .env("KUBECONFIG", &slow)
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(60), "bounded: {took:?}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !r["incomplete"].as_array().unwrap().is_empty(),
        "what could not be read is listed: {r:#}"
    );
    drop(hold);
}

// ---- The Lease (client-go leader election rules) and the progress deadline ----

fn slow_cluster(n: usize, restart_delay_ms: u64) -> Cluster {
    Cluster::new(Options2 {
        nodes: n,
        key: OLD.into(),
        on_delete: false,
        restart_delay: Duration::from_millis(restart_delay_ms),
    })
}

fn micro(t: std::time::SystemTime) -> String {
    psk_guard::cluster::rfc3339(t).replace('Z', ".000000Z")
}

fn put_lease(
    c: &Cluster,
    holder: &str,
    duration: u64,
    renew: std::time::SystemTime,
    transitions: i64,
) {
    let t = micro(renew);
    c.state.lock().unwrap().put("leases", NS, json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "psk-guard-rotation"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": t, "renewTime": t, "leaseTransitions": transitions}}));
}

/// Another run that is alive and renews its Lease every 300 ms, but whose clock is an hour
/// behind: its renewTime is always "long expired" by this host's clock. Only a comparison of the
/// other host's renewTime with the local clock would take the Lease over.
#[test]
fn a_lease_held_by_another_run_stops_before_any_write() {
    let c = cluster(2, false);
    let skew = Duration::from_secs(3600);
    put_lease(
        &c,
        "cronjob-pod-7f9c",
        3,
        std::time::SystemTime::now() - skew,
        0,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (state, stop) = (c.state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
                let mut st = state.lock().unwrap();
                let mut l = st.get("leases", NS, "psk-guard-rotation").unwrap().clone();
                l["spec"]["renewTime"] = json!(micro(std::time::SystemTime::now() - skew));
                st.put("leases", NS, l);
            }
        })
    };
    let out = rotate(&c, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cronjob-pod-7f9c") && err.contains("another rotation is running"),
        "{err}"
    );
    assert_eq!(c.state.lock().unwrap().count("PUT", "secrets"), 0);
    assert_eq!(c.secret_key(), OLD);
    let st = c.state.lock().unwrap();
    let l = st.get("leases", NS, "psk-guard-rotation").unwrap();
    assert_eq!(
        l["spec"]["holderIdentity"], "cronjob-pod-7f9c",
        "not taken over"
    );
}

/// A dead run's Lease whose renewTime lies an hour in the future (its host's clock ran ahead):
/// by clock comparison it would never expire. Watched locally for its duration without a
/// change, it is taken over, and leaseTransitions counts the takeover.
#[test]
fn a_dead_runs_lease_is_taken_over_whatever_its_clock_and_transitions_are_counted() {
    let c = cluster(2, false);
    put_lease(
        &c,
        "dead-run",
        2,
        std::time::SystemTime::now() + Duration::from_secs(3600),
        4,
    );
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taking it over from \"dead-run\""), "{err}");
    let st = c.state.lock().unwrap();
    let l = &st.get("leases", NS, "psk-guard-rotation").unwrap()["spec"];
    assert_eq!(l["leaseTransitions"], 5, "{l}");
    assert!(l["holderIdentity"].is_null(), "released: {l}");
}

#[test]
fn lease_duration_zero_is_refused_before_any_write() {
    let c = cluster(2, false);
    let out = c.psk_guard(&["rotate", "-o", "json", "--lease-duration", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lease-duration"), "{err}");
    assert_nothing_written(&c);
    assert_eq!(c.secret_key(), OLD);
}

/// Runs rotate in the background; `during` runs on the cluster once the new key is stored.
fn rotate_and_meanwhile(
    c: &Cluster,
    extra: &[&str],
    during: impl FnOnce(&Cluster),
) -> std::process::Output {
    let mut args = vec!["rotate", "-o", "json", "--strategy", "restart"];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(&args)
        .env("KUBECONFIG", &c.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the new key is stored and its RotationStarted Event posted (the Event follows the
    // Secret write at once: acting between the two would count that Event as a late write).
    let started = |c: &Cluster| {
        c.state
            .lock()
            .unwrap()
            .list("events", NS)
            .iter()
            .any(|e| e["reason"] == "RotationStarted")
    };
    while c.annotation("phase").is_none() || !started(c) {
        std::thread::sleep(Duration::from_millis(20));
    }
    during(c);
    child.wait_with_output().unwrap()
}

/// The Lease is taken by another run while this one rolls out: the renewer sees it, every write
/// stops (the phase is never advanced, no verify Job is created, the thief's Lease is left
/// alone), and the run exits 2 saying so.
#[test]
fn a_lost_lease_stops_every_write() {
    let c = slow_cluster(3, 1500);
    let mut stolen_at = 0;
    let out = rotate_and_meanwhile(&c, &[], |c| {
        let mut st = c.state.lock().unwrap();
        let mut l = st.get("leases", NS, "psk-guard-rotation").unwrap().clone();
        l["spec"]["holderIdentity"] = json!("thief");
        st.put("leases", NS, l);
        stolen_at = st.requests.len();
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("lost the rotation lease") && err.contains("thief"),
        "{err}"
    );
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
    let st = c.state.lock().unwrap();
    let late: Vec<_> = st.requests[stolen_at..]
        .iter()
        .filter(|(m, _, _, r)| m != "GET" && r != "selfsubjectaccessreviews")
        .filter(|(_, _, _, r)| r != "leases" && r != "daemonsets" && r != "pods")
        .collect();
    assert!(late.is_empty(), "writes after the Lease was lost: {late:?}");
    assert_eq!(
        st.get("leases", NS, "psk-guard-rotation").unwrap()["spec"]["holderIdentity"],
        "thief"
    );
}

/// Renewals that fail with 5xx are retried with backoff (a few failures keep the Lease); when
/// they keep failing past the renew deadline the run stops writing and exits 2.
#[test]
fn lease_renewals_retry_5xx_and_stop_past_the_renew_deadline() {
    let c = slow_cluster(3, 700);
    let out = rotate_and_meanwhile(&c, &[], |c| c.state.lock().unwrap().fail_lease_updates = 2);
    assert_rotated(&c, &out, OLD);
    assert!(c.state.lock().unwrap().count("PUT", "leases") >= 3);

    let c = slow_cluster(3, 1500);
    let out = rotate_and_meanwhile(&c, &[], |c| {
        c.state.lock().unwrap().fail_lease_updates = usize::MAX
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("lost the rotation lease") && err.contains("could not renew"),
        "{err}"
    );
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
}

/// Five agents restarting one after the other take longer than the progress deadline in total,
/// but each advances well within it: the rollout completes (a fixed timeout would cut it off).
#[test]
fn a_rollout_longer_than_the_progress_deadline_completes_while_it_advances() {
    let c = slow_cluster(5, 1000);
    let out = rotate(&c, &["--progress-deadline", "4"]);
    assert_rotated(&c, &out, OLD);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["data"]["timings"]["rollout_ms"].as_u64().unwrap() > 4000,
        "{r:#}"
    );
}

// ---- OnDelete: evictions in batches of maxUnavailable, PodDisruptionBudgets, Terminating pods ----

fn on_delete_cluster(
    n: usize,
    restart_delay_ms: u64,
    max_unavailable: Option<serde_json::Value>,
) -> Cluster {
    let c = Cluster::new(Options2 {
        nodes: n,
        key: OLD.into(),
        on_delete: true,
        restart_delay: Duration::from_millis(restart_delay_ms),
    });
    if let Some(m) = max_unavailable {
        let mut st = c.state.lock().unwrap();
        let mut ds = st.get("daemonsets", NS, "antrea-agent").unwrap().clone();
        ds["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": m});
        st.put("daemonsets", NS, ds);
    }
    c
}

/// maxUnavailable 50% of 4 agents: batches of 2, each waited for (never more than 2 agents down);
/// with a PodDisruptionBudget allowing one disruption, the second eviction of a batch is refused
/// (429) and retried until the first agent is back, so never more than one is down.
#[test]
fn on_delete_rolls_in_batches_of_max_unavailable_honouring_disruption_budgets() {
    let c = on_delete_cluster(4, 500, Some(json!("50%")));
    let out = rotate(&c, &["--strategy", "restart"]);
    assert_rotated(&c, &out, OLD);
    {
        let st = c.state.lock().unwrap();
        assert_eq!(st.max_evicted_at_once, 2, "batches of maxUnavailable");
        assert_eq!(st.count("DELETE", "pods"), 0);
    }

    let c = on_delete_cluster(4, 300, Some(json!("50%")));
    c.state.lock().unwrap().put("poddisruptionbudgets", NS, json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "antrea-agent"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "antrea", "component": "antrea-agent"}}}}));
    let out = rotate(&c, &["--strategy", "restart"]);
    assert_rotated(&c, &out, OLD);
    let st = c.state.lock().unwrap();
    assert!(
        st.evictions_refused > 0,
        "the budget refused some evictions"
    );
    assert_eq!(st.max_evicted_at_once, 1, "the budget was honoured");
}

/// An agent whose node is unreachable stays Terminating after its eviction: the run does not wait
/// forever; once nothing progressed for the progress deadline it stops, naming the node.
#[test]
fn an_agent_stuck_terminating_on_an_unreachable_node_is_named() {
    let c = on_delete_cluster(3, 20, None);
    c.state
        .lock()
        .unwrap()
        .unreachable_nodes
        .insert("worker-01".into());
    let out = rotate(&c, &["--strategy", "restart", "--progress-deadline", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("worker-01 (pod antrea-agent-worker-01 is stuck Terminating"),
        "{err}"
    );
    assert_eq!(
        c.annotation("phase").as_deref(),
        Some("secret-written"),
        "resumable"
    );
}

/// Evicting agents is needed (and checked) only for an OnDelete DaemonSet.
#[test]
fn eviction_permission_is_required_only_for_on_delete() {
    let c = on_delete_cluster(2, 20, None);
    c.state
        .lock()
        .unwrap()
        .denied
        .insert(("create".into(), "pods/eviction".into()));
    let out = rotate(&c, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("create pods/eviction"), "{err}");
    assert_nothing_written(&c);
    assert_eq!(c.secret_key(), OLD);

    let c = cluster(2, false);
    c.state
        .lock()
        .unwrap()
        .denied
        .insert(("create".into(), "pods/eviction".into()));
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
}

/// Issue 10 item 11: waits watch instead of polling. The same rotation with Job pods that start
/// at once and with pods that take 2 s (and agents that take 1 s to restart) makes the same
/// number of API requests, apart from the Lease renewals (which are time-based by design); a
/// wait that polled every 100 ms would add about 20 requests per node and second of waiting.
#[test]
fn waiting_longer_costs_no_api_requests() {
    let count = |pod_start_ms: u64, restart_ms: u64| {
        let c = Cluster::new(Options2 {
            nodes: 2,
            key: OLD.into(),
            on_delete: false,
            restart_delay: Duration::from_millis(restart_ms),
        });
        c.world.lock().unwrap().job_start_delay = Duration::from_millis(pod_start_ms);
        let out = rotate(&c, &["--strategy", "restart"]);
        assert_rotated(&c, &out, OLD);
        let st = c.state.lock().unwrap();
        let counted: Vec<String> = st
            .requests
            .iter()
            .filter(|(_, _, _, r)| r != "leases")
            .map(|(m, p, v, r)| format!("{m} {v} {r} {p}"))
            .collect();
        let watches = st
            .requests
            .iter()
            .filter(|(_, _, v, _)| v == "watch")
            .count();
        (counted, watches)
    };
    let (fast, fast_watches) = count(0, 20);
    let (slow, slow_watches) = count(2000, 1000);
    assert!(
        fast_watches > 0 && slow_watches > 0,
        "the waits are watches"
    );
    assert_eq!(
        fast.len(),
        slow.len(),
        "requests with fast pods:\n{}\nwith slow pods:\n{}",
        fast.join("\n"),
        slow.join("\n")
    );
}

/// The report's node rows by name.
fn node_row(report: &serde_json::Value, node: &str) -> serde_json::Value {
    report["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .unwrap()
        .clone()
}

/// The value the rotator announced on its Lease for the push (`<barrier> <ms>` or `<barrier>
/// abort`).
fn announced(c: &Cluster) -> Option<String> {
    c.state
        .lock()
        .unwrap()
        .get("leases", NS, "psk-guard-rotation")?["metadata"]["annotations"]
        [psk_guard::rotation::node::INSTANT_ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

/// Every value the rotation Lease's instant annotation ever had, oldest first (from the test
/// server's change log).
fn announcements(c: &Cluster) -> Vec<String> {
    let st = c.state.lock().unwrap();
    let mut seen: Vec<String> = vec![];
    for ch in &st.events {
        if ch.key != ("leases".into(), NS.into(), "psk-guard-rotation".into()) {
            continue;
        }
        let a = ch.object.as_ref().and_then(|o| {
            o["metadata"]["annotations"][psk_guard::rotation::node::INSTANT_ANNOTATION]
                .as_str()
                .map(str::to_owned)
        });
        if let Some(a) = a {
            if seen.last() != Some(&a) {
                seen.push(a);
            }
        }
    }
    seen
}

/// The Lease update announcing the push instant is stored, but its answer is lost (the
/// connection closes before the response; kube-apiserver commits before it answers). The pods
/// already saw the instant and write at it; the rotator must not call the push off (that would
/// leave the nodes split until a rerun): it re-reads the Lease, finds its instant there and goes
/// on with the push's results. No abort is ever written, every node wrote, the rotation completes.
#[test]
fn an_instant_stored_whose_answer_was_lost_is_not_called_off() {
    let c = cluster(2, false);
    c.state.lock().unwrap().lose_instant_responses = 1;
    let out = rotate(&c, &["--strategy", "push", "--push-lead-ms", "3000"]);
    assert_eq!(
        c.state.lock().unwrap().lose_instant_responses,
        0,
        "the announcement's answer was lost"
    );
    let said = announcements(&c);
    assert!(
        said.iter().all(|a| !a.ends_with(" abort")),
        "never called off: {said:?}"
    );
    assert_eq!(said.len(), 1, "one instant announced: {said:?}");
    assert_rotated(&c, &out, OLD);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for i in &c.infos {
        assert_eq!(node_row(&report, &i.name)["pushed"], true, "{report:#}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("the rotation lease holds it"));
}

/// Issue 10 item 8: pods that start 2 to 5 s apart (scheduling, image pulls) still write at one
/// instant: the instant is announced only once every push pod is Ready (prepared, waiting), so
/// every node writes within the tolerance after it, whatever the spread of the starts.
#[test]
fn push_with_slowly_starting_pods_writes_at_the_instant_set_once_all_are_ready() {
    let c = cluster(4, false);
    {
        let mut w = c.world.lock().unwrap();
        for (i, info) in c.infos.iter().enumerate() {
            w.job_start_delays.insert(
                info.name.clone(),
                Duration::from_millis(2000 + 1000 * i as u64),
            );
        }
    }
    let out = rotate(&c, &["--strategy", "push", "--push-lead-ms", "2000"]);
    assert_rotated(&c, &out, OLD);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = r["data"]["timings"]["push_instant_unix_ms"]
        .as_u64()
        .expect("the announced instant is reported");
    assert!(r["data"]["timings"]["push_ready_ms"].is_u64(), "{r:#}");
    let tolerance = psk_guard::rotation::node::BARRIER_LATE_TOLERANCE_MS as u64;
    for info in &c.infos {
        let row = node_row(&r, &info.name);
        assert_eq!(row["pushed"], true, "{row}");
        let t = row["pushed_at_unix_ms"].as_u64().unwrap();
        assert!(
            (at..=at + tolerance).contains(&t),
            "{}: wrote at {t}, the instant was {at}",
            info.name
        );
    }
    // The sim saw the writes where the nodes said: one change per node, none before the instant.
    let ch = c.changes.lock().unwrap().clone();
    assert_eq!(ch.len(), 4, "{ch:?}");
    assert!(ch.iter().all(|(_, t, _)| *t >= at as u128), "{ch:?}");
    assert!(announced(&c).is_some_and(|a| a.ends_with(&format!(" {at}"))));
}

/// A push pod that never becomes Ready: no instant is announced, so NO node writes; the push is
/// called off on the Lease (the waiting pods exit without writing), the run stops with exit 2
/// naming the node, the Secret keeps the new key at phase secret-written, and once the node is
/// fixed the rerun resumes and finishes.
#[test]
fn a_push_pod_that_never_gets_ready_stops_the_rotation_before_any_node_writes() {
    let c = cluster(3, false);
    let stuck = c.infos[1].name.clone();
    c.world.lock().unwrap().unready.insert(stuck.clone());
    let out = rotate(&c, &["--strategy", "push", "--job-timeout", "10"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("push called off before any node wrote"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{stuck} (its pod was not ready")),
        "{stderr}"
    );
    for (node, keys) in c.node_keys() {
        assert_eq!(keys, vec![OLD.to_owned()], "node {node} keeps the old key");
    }
    assert!(c.changes.lock().unwrap().is_empty());
    assert!(
        announced(&c).is_some_and(|a| a.ends_with(" abort")),
        "{:?}",
        announced(&c)
    );
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
    assert_no_key("rotate stdout", &out.stdout, &[OLD, &c.secret_key()]);
    assert_no_key("rotate stderr", &out.stderr, &[OLD, &c.secret_key()]);
    assert!(event_message(&c, "PushNotReady").contains(&stuck));
    c.world.lock().unwrap().unready.clear();
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
}

/// A node that reaches the instant too late (its container stalled after it was Ready) refuses
/// to write and is named; the other nodes wrote, so the agents' restart that follows brings it
/// to the new key (never left split), and verification checks every node.
#[test]
fn a_push_pod_that_sees_the_instant_too_late_refuses_and_is_named() {
    let c = cluster(3, false);
    let late = c.infos[1].name.clone();
    c.world
        .lock()
        .unwrap()
        .stall_after_ready
        .insert(late.clone(), Duration::from_secs(10));
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = node_row(&report, &late);
    assert_eq!(row["pushed"], false, "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("nothing was written") && detail.contains("too late"),
        "{detail}"
    );
    assert_eq!(node_row(&report, &c.infos[0].name)["pushed"], true);
    assert_eq!(report["data"]["timings"]["push_failed_nodes"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pushing the key failed on {late}")),
        "{stderr}"
    );
    assert!(event_message(&c, "PushIncomplete").contains(&late));
}

/// A node that reaches the instant a little late (its container starved for CPU after it was
/// Ready, as 200 simulated nodes on 2 cores are) still writes: the others hold the new key by
/// then, and refusing would leave it on the old one until the agents' restart reached it. It
/// failed when a node more than 1 s late refused.
#[test]
fn a_push_pod_a_little_late_still_writes() {
    let c = cluster(3, false);
    let slow = c.infos[1].name.clone();
    // Stalled 4.5 s from turning Ready; the instant is announced once every pod is Ready, 2 s
    // ahead: this node wakes ~2.5 s late (less whatever its Ready came before the others').
    c.world
        .lock()
        .unwrap()
        .stall_after_ready
        .insert(slow.clone(), Duration::from_millis(4500));
    let out = rotate(&c, &["--strategy", "push", "--push-lead-ms", "2000"]);
    assert_rotated(&c, &out, OLD);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = r["data"]["timings"]["push_instant_unix_ms"]
        .as_u64()
        .unwrap();
    let row = node_row(&r, &slow);
    assert_eq!(row["pushed"], true, "{row}");
    let late = row["pushed_at_unix_ms"].as_u64().unwrap() - at;
    assert!(
        (1_000..=psk_guard::rotation::node::BARRIER_LATE_TOLERANCE_MS as u64).contains(&late),
        "{slow} wrote {late} ms after the instant"
    );
    assert!(r["data"]["timings"]["push_failed_nodes"].is_null(), "{r:#}");
    // No restart was needed: every node changed its key once, by the push.
    assert_eq!(c.changes.lock().unwrap().len(), 3);
}

/// The message of the Event with `reason` on the Secret (panics if there is none).
fn event_message(c: &Cluster, reason: &str) -> String {
    let st = c.state.lock().unwrap();
    st.list("events", NS)
        .into_iter()
        .find(|e| e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} Event"))["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A push whose pods fail before they are ready is called off: no node writes, every node keeps
/// the old key (none split from another), the failing node is named, and the rerun resumes and
/// finishes the rotation.
#[test]
fn a_push_no_node_wrote_stops_unsplit_and_the_rerun_resumes() {
    let c = cluster(2, false);
    for i in &c.infos {
        c.failing_jobs
            .lock()
            .unwrap()
            .insert(format!("push:{}", i.name));
    }
    let out = rotate(&c, &["--strategy", "push"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    // The pods failed before they were ready: called off before any write, naming every node.
    assert!(stderr.contains("before any node wrote"), "{stderr}");
    for i in &c.infos {
        assert!(
            stderr.contains(&format!("{} (its pod ended (Failed)", i.name)),
            "{stderr}"
        );
    }
    for (node, keys) in c.node_keys() {
        assert_eq!(keys, vec![OLD.to_owned()], "node {node} keeps the old key");
    }
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
    assert_no_key("rotate stderr", &out.stderr, &[OLD, &c.secret_key()]);
    c.failing_jobs.lock().unwrap().clear();
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
}

/// Several push pods fail before they are ready, at different times (one node's pod starts 2 s
/// after the others): the push is called off naming EVERY failed node, not only the first one
/// seen, in the error and the PushNotReady Event; the healthy node is not named; no node wrote.
/// (The barrier waits until every node is Ready or failed before calling off; no instant is
/// announced meanwhile, so waiting lets no node write.)
#[test]
fn every_push_pod_that_fails_before_ready_is_named() {
    let c = cluster(3, false);
    let (first, healthy, later) = (
        c.infos[0].name.clone(),
        c.infos[1].name.clone(),
        c.infos[2].name.clone(),
    );
    for n in [&first, &later] {
        c.failing_jobs.lock().unwrap().insert(format!("push:{n}"));
    }
    c.world
        .lock()
        .unwrap()
        .job_start_delays
        .insert(later.clone(), Duration::from_secs(2));
    let out = rotate(&c, &["--strategy", "push"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("before any node wrote"), "{stderr}");
    let event = event_message(&c, "PushNotReady");
    for n in [&first, &later] {
        let named = format!("{n} (its pod ended (Failed) before it was ready");
        assert!(stderr.contains(&named), "{n} named: {stderr}");
        assert!(event.contains(&named), "{n} in the Event: {event}");
    }
    assert!(!stderr.contains(&format!("{healthy} (")), "{stderr}");
    for (node, keys) in c.node_keys() {
        assert_eq!(keys, vec![OLD.to_owned()], "node {node} keeps the old key");
    }
    assert!(c.changes.lock().unwrap().is_empty());
    assert!(announced(&c).is_some_and(|a| a.ends_with(" abort")));
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
}

/// The Secret's data and resourceVersion, to prove a refused run changed nothing.
fn secret_state(c: &Cluster) -> (serde_json::Value, serde_json::Value) {
    let s = c.secret();
    (s["data"].clone(), s["metadata"]["resourceVersion"].clone())
}

/// A refused run: exit 2, the Secret unchanged, nothing written, no Job stored, and the node Jobs
/// were asked about with a server-side dry run. Returns stderr.
fn assert_refused_before_writing(
    c: &Cluster,
    before: &(serde_json::Value, serde_json::Value),
    out: &std::process::Output,
) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(&secret_state(c), before, "the Secret is unchanged");
    let st = c.state.lock().unwrap();
    assert!(st.writes().is_empty(), "nothing written: {:?}", st.writes());
    assert!(st.list("jobs", NS).is_empty(), "no Job stored");
    assert!(
        st.requests.iter().any(|(m, p, _, r)| m == "POST"
            && r == "jobs"
            && p.ends_with(crate::kube_api::DRY_RUN_MARK)),
        "the node Jobs were dry-run: {:?}",
        st.requests
    );
    assert_no_key("stderr", &out.stderr, &[OLD]);
    err
}

/// Sets every Pod Security default level (the AdmissionConfiguration) to `level`; returns the
/// Secret's state before the run.
fn default_pod_security_level(c: &Cluster, level: &str) -> (serde_json::Value, serde_json::Value) {
    let mut st = c.state.lock().unwrap();
    st.pod_security_defaults = crate::kube_api::PodSecurityDefaults::all(level);
    st.requests.clear();
    drop(st);
    secret_state(c)
}

/// Issue 10 item 9: a cluster-wide default Pod Security level (the AdmissionConfiguration, not
/// visible through the API) with the Job namespace unlabelled. The server-side dry run of the
/// node Jobs carries Pod Security's warning: refused before the Secret is written, naming Pod
/// Security and the fix. With the fix applied (an explicit enforce=privileged label), the same
/// warning is advice only and the rotation completes.
#[test]
fn a_cluster_default_pod_security_level_refuses_before_the_secret_write() {
    let c = cluster(2, false);
    let before = default_pod_security_level(&c, "baseline");
    let out = rotate(&c, &["--strategy", "push"]);
    let err = assert_refused_before_writing(&c, &before, &out);
    assert!(
        err.contains("Pod Security would refuse the pods of the node Job push")
            && err.contains(r#"would violate PodSecurity "baseline:latest": hostPath volumes (volume "antrea-run")"#)
            && err.contains("cluster's default level")
            && err.contains("kubectl label namespace kube-system pod-security.kubernetes.io/enforce=privileged --overwrite"),
        "{err}"
    );
    // The remedy: the namespace's own enforce label decides.
    {
        let mut st = c.state.lock().unwrap();
        let mut ns = st.get("namespaces", "", NS).cloned().unwrap();
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("privileged");
        st.put("namespaces", "", ns);
    }
    let out = rotate(&c, &["--strategy", "push", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["data"]["jobs_admitted"],
        json!(["push", "verify", "compact"])
    );
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
}

/// Issue 10 item 9: a ValidatingAdmissionPolicy that denies the node Jobs (422 Invalid by default,
/// 403 with reason Forbidden): refused before the Secret write, the policy's message shown
/// escaped; `rotate --dry-run` reports the same refusal.
#[test]
fn an_admission_policy_denying_the_node_jobs_refuses_before_the_secret_write() {
    let c = cluster(1, false);
    for (reason, code) in [("", "HTTP 422"), ("Forbidden", "HTTP 403")] {
        for dry in [false, true] {
            {
                let mut st = c.state.lock().unwrap();
                st.deny_jobs = Some(crate::kube_api::JobDeny {
                    policy: "no-host-paths".into(),
                    binding: "no-host-paths-binding".into(),
                    message: "hostPath is not allowed\u{1b}[2J".into(),
                    reason: reason.into(),
                });
                st.requests.clear();
            }
            let before = secret_state(&c);
            let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
            let out = rotate(&c, extra);
            let err = assert_refused_before_writing(&c, &before, &out);
            assert!(
                err.contains("the API server refuses the node Job verify")
                    && err.contains(code)
                    && err.contains("ValidatingAdmissionPolicy 'no-host-paths' with binding 'no-host-paths-binding' denied request: hostPath is not allowed\\x1b[2J")
                    && err.contains("docs/deploy/admission-policy.yaml"),
                "{err}"
            );
            assert!(!err.contains('\u{1b}'), "escaped: {err}");
        }
    }
}

/// A refusal whose body is huge (a webhook's message is the webhook's to shape) is read only up
/// to a bound: the run still refuses before writing and says the body was too large.
#[test]
fn a_refusal_with_a_huge_body_is_read_only_up_to_a_bound() {
    let c = cluster(1, false);
    c.state.lock().unwrap().deny_jobs = Some(crate::kube_api::JobDeny {
        policy: "chatty".into(),
        binding: "chatty-binding".into(),
        message: "x".repeat(1 << 20),
        reason: "Forbidden".into(),
    });
    let before = secret_state(&c);
    let out = rotate(&c, &["--dry-run"]);
    let err = assert_refused_before_writing(&c, &before, &out);
    assert!(
        err.contains("HTTP 403") && err.contains("a response body too large"),
        "{}",
        &err[..err.len().min(2000)]
    );
}

/// Issue 10 item 9: `rotate --dry-run` runs the same dry run of the node Jobs: a cluster default
/// Pod Security level is reported as a refusal, and nothing is written.
#[test]
fn rotate_dry_run_reports_the_pod_security_refusal() {
    let c = cluster(1, false);
    let before = default_pod_security_level(&c, "restricted");
    let out = rotate(&c, &["--dry-run"]);
    let err = assert_refused_before_writing(&c, &before, &out);
    assert!(
        err.contains("Pod Security would refuse the pods of the node Job verify")
            && err.contains(r#"would violate PodSecurity "restricted:latest""#),
        "{err}"
    );
}

/// The node Jobs' service account must exist in the Job namespace: the ServiceAccount admission
/// plugin refuses every pod naming a missing one (Forbidden, "error looking up service account"),
/// and a dry run of the Job cannot see it (the plugin admits pods, not Jobs). With `restart`, the
/// verify Jobs run only after the new key is stored and rolled out, so a missing account would
/// leave a rotation that cannot verify or purge. Refused before anything is written, for each
/// strategy and for `--dry-run`, naming the account and the fix; with the account created the
/// same run completes.
#[test]
fn a_missing_node_service_account_is_refused_before_any_write() {
    let c = cluster(2, false);
    for extra in [&[][..], &["--strategy", "push"][..], &["--dry-run"][..]] {
        let before = {
            let mut st = c.state.lock().unwrap();
            st.objects
                .remove(&("serviceaccounts".into(), NS.into(), "psk-guard-node".into()));
            st.requests.clear();
            drop(st);
            secret_state(&c)
        };
        let out = rotate(&c, extra);
        let err = assert_refused_before_writing(&c, &before, &out);
        assert!(
            err.contains("serviceaccount kube-system/psk-guard-node does not exist")
                && err.contains("docs/deploy/serviceaccounts.yaml")
                && err.contains("--service-account"),
            "{extra:?}: {err}"
        );
    }
    // A service account of another name, given with --service-account, is the one looked up.
    let out = rotate(&c, &["--service-account", "node-jobs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serviceaccount kube-system/node-jobs does not exist"),
        "{err}"
    );
    // Under the shipped Role (docs/deploy/rbac.yaml: get serviceaccounts, resourceNames
    // [psk-guard-node]) the API server answers that GET with 403 before it looks for the object
    // (authorization is a filter ahead of the registry): a missing permission, named as such,
    // not a missing account.
    c.state.lock().unwrap().scoped.push(crate::kube_api::Scope {
        verb: "get".into(),
        resource: "serviceaccounts".into(),
        namespaces: Some(vec![NS.into()]),
        names: Some(vec!["psk-guard-node".into()]),
    });
    let before = secret_state(&c);
    let out = rotate(&c, &["--service-account", "node-jobs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("get serviceaccounts") && !err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(secret_state(&c), before);
    c.state.lock().unwrap().put(
        "serviceaccounts",
        NS,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "psk-guard-node"}}),
    );
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
}

/// A mutating webhook injects a sidecar into the node Jobs' pods (a service mesh): the API server
/// then answers a log request without a container name with 400 (kube_api.rs `pod_log`), so the
/// push and verify results are read from the psk-guard container by name.
#[test]
fn node_jobs_with_an_injected_sidecar_are_read_by_container_name() {
    let c = cluster(2, false);
    c.state.lock().unwrap().inject_sidecar = true;
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
}

/// A mutating webhook (a sidecar injector) timed out on the first pod of a push Job and of a
/// verify Job: the Job controller tries again a second later (pkg/controller/job retries with
/// backoff) and the pod comes. Such a refusal may clear, so the rotation waits for the pod
/// instead of giving the node up, and completes (k8s-review8 D2).
#[test]
fn a_refusal_that_clears_on_the_job_controllers_retry_is_waited_out() {
    let c = cluster(2, false);
    {
        let mut w = c.world.lock().unwrap();
        for k in ["push:worker-01", "verify:worker-00"] {
            w.refuse_pods
                .insert(k.into(), (crate::sim::WEBHOOK_TIMEOUT.into(), 1));
        }
    }
    let out = rotate(&c, &["--strategy", "push"]);
    assert_rotated(&c, &out, OLD);
    let st = c.state.lock().unwrap();
    let refused = st
        .list("events", NS)
        .into_iter()
        .filter(|e| e["reason"] == "FailedCreate")
        .count();
    assert_eq!(refused, 2, "both refusals happened");
}

/// Issue 10 item 9, the backstop: Pod Security changes after the preflight (here the cluster's
/// default enforce level becomes baseline once the new key is stored; a default enforce level
/// without a warn level is also what no dry run can see). The push Jobs' pods are refused: the run
/// stops naming a refused node and Pod Security from the Jobs' FailedCreate Events, every node keeps
/// the old key, the record stays at `secret-written`; once fixed, the rerun resumes and completes
/// the same rotation.
#[test]
fn a_node_jobs_pod_refused_after_the_secret_write_is_named_and_the_rotation_resumes() {
    let c = cluster(2, false);
    let mut args = vec!["rotate", "-o", "json", "--strategy", "push"];
    args.extend_from_slice(&FAST);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psk-guard"));
    cmd.args(&args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("PSK_GUARD_TEST_PAUSE_AFTER", "secret-written");
    let (child, _) = crate::harness::spawn_until(&mut cmd, "psk-guard: paused after");
    let new = c.secret_key();
    assert_ne!(new, OLD);
    c.state.lock().unwrap().pod_security_defaults.enforce = "baseline".into();
    let mut child = child;
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let events: Vec<String> = c
        .state
        .lock()
        .unwrap()
        .list("events", NS)
        .iter()
        .filter(|e| e["reason"] == "PushFailed" || e["reason"] == "RotationFailed")
        .map(|e| e["message"].as_str().unwrap_or("").to_owned())
        .collect();
    let said = events.join("\n");
    // Both nodes' pods are refused; the push barrier waits until every node is Ready or failed
    // before calling the push off (no node has written), so it names both.
    assert!(
        ["worker-00", "worker-01"].iter().all(|n| said.contains(n)),
        "both nodes named: {said}"
    );
    assert!(
        said.contains("Pod Security admission refused its pod")
            && said.contains(r#"violates PodSecurity "baseline:latest""#)
            && said.contains("rerun psk-guard rotate"),
        "{said}"
    );
    assert_eq!(c.annotation("phase").as_deref(), Some("secret-written"));
    let id = c.annotation("rotation-id").expect("the record stays");
    for (node, keys) in c.node_keys() {
        assert!(keys.iter().all(|k| k == OLD), "{node} keeps the old key");
    }
    assert_eq!(c.secret_key(), new);
    c.state.lock().unwrap().pod_security_defaults.enforce = String::new();
    let out = rotate(&c, &[]);
    assert_rotated(&c, &out, OLD);
    assert_eq!(c.annotation("rotation-id").as_deref(), Some(id.as_str()));
    assert_eq!(c.secret_key(), new);
}

/// The test server as strict as kube-apiserver about dry runs and Pod Security on Jobs: a
/// `dryRun=All` create is validated and admitted but stores nothing (no resourceVersion, no
/// change a watch could see) and answers 201 with the object; any other `dryRun` value is a 422;
/// unknown query parameters are ignored. Pod Security never refuses a Job and warns (a `Warning:
/// 299 - "…"` header) only when the warn level forbids its pod template: an enforce level alone,
/// labelled or default, gives no warning (pod-security-admission admission.go
/// `ValidatePodController`). A ValidatingAdmissionPolicy's denial names the policy and binding.
#[test]
fn the_test_server_dry_runs_and_warns_as_kube_apiserver() {
    let c = cluster(1, false);
    let addr = crate::strict::api_addr(&c.kubeconfig);
    let job = psk_guard::cluster::jobs::NodeJob {
        namespace: NS.into(),
        image: "psk-guard:test".into(),
        purpose: "verify",
        run_id: "0123456789abcdef".into(),
        args: vec![],
        env_from_secret: None,
        service_account: "psk-guard-node".into(),
        timeout: Duration::from_secs(60),
        logs: false,
        barrier: false,
    };
    let manifest = psk_guard::cluster::jobs::manifest(&job, "worker-00");
    let path = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    let post =
        |query: &str| crate::strict::http_full(&addr, "POST", &format!("{path}{query}"), &manifest);
    let rv = |c: &Cluster| {
        let st = c.state.lock().unwrap();
        (st.rv, st.events.len())
    };
    let before = rv(&c);
    let (code, head, obj) = post("?dryRun=All");
    assert_eq!(code, 201);
    assert_eq!(obj["metadata"]["name"], manifest["metadata"]["name"]);
    assert!(obj["metadata"]["resourceVersion"].is_null());
    assert!(!head.to_ascii_lowercase().contains("warning:"), "{head}");
    assert_eq!(rv(&c), before, "nothing stored, no change");
    assert!(c.state.lock().unwrap().list("jobs", NS).is_empty());
    assert_eq!(post("?dryRun=Foo").0, 422);
    assert_eq!(post("?dryRun=All&dryRun=All").0, 422);
    let set_labels = |labels: serde_json::Value| {
        let mut st = c.state.lock().unwrap();
        let mut ns = st.get("namespaces", "", NS).cloned().unwrap();
        ns["metadata"]["labels"] = labels;
        st.put("namespaces", "", ns);
    };
    let warning = || {
        let (code, head, _) = post("?dryRun=All");
        assert_eq!(code, 201);
        head.lines()
            .filter_map(|l| l.strip_prefix("warning: "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Enforce alone (label or default): the Job gets no warning; its pods would be refused.
    set_labels(json!({"pod-security.kubernetes.io/enforce": "baseline"}));
    assert!(warning().is_empty());
    set_labels(json!({}));
    c.state.lock().unwrap().pod_security_defaults.enforce = "baseline".into();
    assert!(warning().is_empty());
    // The warn level (label or default) decides the warning.
    set_labels(json!({"pod-security.kubernetes.io/warn": "baseline"}));
    assert_eq!(
        warning(),
        vec![
            r#"299 - "would violate PodSecurity \"baseline:latest\": hostPath volumes (volume \"antrea-run\")""#
        ]
    );
    set_labels(json!({}));
    c.state.lock().unwrap().pod_security_defaults =
        crate::kube_api::PodSecurityDefaults::all("restricted");
    assert_eq!(warning().len(), 1);
    // An explicit privileged warn label and audit default: no evaluation at all.
    set_labels(
        json!({"pod-security.kubernetes.io/warn": "privileged", "pod-security.kubernetes.io/audit": "privileged"}),
    );
    assert!(warning().is_empty());
    // A policy's denial: no warning with it, nothing stored.
    c.state.lock().unwrap().deny_jobs = Some(crate::kube_api::JobDeny {
        policy: "p".into(),
        binding: "b".into(),
        message: "no".into(),
        reason: "Forbidden".into(),
    });
    let (code, head, status) = post("?dryRun=All");
    assert_eq!(code, 403);
    assert!(!head.to_ascii_lowercase().contains("warning:"));
    assert_eq!(
        status["message"],
        format!("jobs.batch {:?} is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no", manifest["metadata"]["name"].as_str().unwrap())
    );
    c.state.lock().unwrap().deny_jobs = None;
    // An unknown query parameter is ignored: a real create, stored.
    let (code, _, _) = post("?unknownParam=1");
    assert_eq!(code, 201);
    assert_eq!(c.state.lock().unwrap().list("jobs", NS).len(), 1);
    assert_eq!(post("?dryRun=All").0, 409, "a dry run checks the name too");
}

/// The push pods' readinessProbe, `push-key --probe-ready FILE` (answered before the command line
/// is parsed, as the kubelet execs it every second): 0 only for a regular file, 1 for none, a
/// symlink or a directory, nothing printed; the same answers through the parser (other forms).
#[test]
fn the_readiness_probe_answers_as_the_parser_does() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ready");
    std::fs::write(&file, b"").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let cases = [
        (file.clone(), 0),
        (dir.path().join("absent"), 1),
        (link, 1),
        (dir.path().to_path_buf(), 1),
    ];
    for (path, code) in cases {
        let p = path.to_str().unwrap();
        for args in [
            vec!["push-key", "--probe-ready", p],
            vec!["push-key", &format!("--probe-ready={p}")],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_psk-guard"))
                .args(&args)
                .env_clear()
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(code), "{args:?}");
            assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
        }
    }
}
