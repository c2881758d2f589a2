//! `rotate` and `audit --nodes` against the strict test world (issue 10): every fault a real
//! cluster has and the forgiving test double did not. Each case that must stop before the Secret
//! write asserts the Secret's data and resourceVersion unchanged.

use std::time::Duration;

use serde_json::{json, Value};

use crate::output::assert_no_key;
use crate::sim::{Cluster, Options2, Shape, NS, WINDOWS_NODE};

const OLD: &str = "changeme";

fn opts(n: usize, on_delete: bool) -> Options2 {
    Options2 {
        nodes: n,
        key: OLD.into(),
        on_delete,
        restart_delay: Duration::from_millis(20),
    }
}

fn rotate(c: &Cluster, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "rotate",
        "-o",
        "json",
        "--lease-duration",
        "3",
        "--push-lead-ms",
        "500",
        "--job-timeout",
        "30",
        "--rollout-timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    c.psk_guard(&args, &[])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The Secret's data and resourceVersion, to prove a refused run changed nothing.
fn secret_state(c: &Cluster) -> (Value, Value) {
    let s = c.secret();
    (s["data"].clone(), s["metadata"]["resourceVersion"].clone())
}

fn assert_refused_unchanged(c: &Cluster, before: &(Value, Value), out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    assert_eq!(&secret_state(c), before, "the Secret is unchanged");
    let writes = c.state.lock().unwrap().writes();
    assert!(writes.is_empty(), "nothing written: {writes:?}");
    assert_no_key("stderr", &out.stderr, &[OLD]);
}

fn assert_done(c: &Cluster, out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let new = c.secret_key();
    assert_ne!(new, OLD);
    for (node, keys) in c.node_keys() {
        assert_eq!(keys, vec![new.clone()], "node {node} tunnels");
    }
    assert_eq!(c.annotation("phase").as_deref(), Some("done"));
    assert_no_key("stdout", &out.stdout, &[OLD, &new]);
    assert_no_key("stderr", &out.stderr, &[OLD, &new]);
}

/// Item 1: cloud node names are longer than a label value (63) allows.
#[test]
fn long_cloud_node_names_get_their_jobs() {
    let names: Vec<String> = (1..=2)
        .map(|i| {
            format!(
                "ip-10-0-0-{i}.eu-west-1.compute.internal.cluster-blue-prod.example-corp.internal"
            )
        })
        .collect();
    assert!(names[0].len() > 63);
    let c = Cluster::with_shape(
        opts(2, false),
        Shape {
            names: Some(names.clone()),
            ..Shape::default()
        },
    );
    c.world.lock().unwrap().job_start_delay = Duration::from_millis(300);
    let out = rotate(&c, &["--strategy", "push"]);
    assert_done(&c, &out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = r["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, names.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Item 2: Antrea's Windows DaemonSet carries the same labels; a selector of matchExpressions
/// only; a stray pod with the agent's component label. Only the Linux agent's own pods count.
#[test]
fn windows_agents_and_stray_pods_are_left_alone() {
    let c = Cluster::with_shape(
        opts(2, true),
        Shape {
            windows: true,
            stray_pods: true,
            selector: Some(json!({"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["antrea"]},
                {"key": "component", "operator": "In", "values": ["antrea-agent"]}]})),
            ..Shape::default()
        },
    );
    let windows_before = c.pods_of("antrea-agent-windows");
    let out = rotate(&c, &["--strategy", "restart"]);
    assert_done(&c, &out);
    assert_eq!(
        c.pods_of("antrea-agent-windows"),
        windows_before,
        "the Windows agent was not restarted"
    );
    let st = c.state.lock().unwrap();
    for p in ["agent-debug", "coredns-6f8b9"] {
        assert!(st.get("pods", NS, p).is_some(), "{p} was deleted");
    }
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !r.to_string().contains(WINDOWS_NODE),
        "no Job for the Windows node: {r:#}"
    );
}

/// Item 3: a NotReady node, and an agent stuck Pending, are refused before any write; a node the
/// user excludes is skipped.
#[test]
fn unhealthy_nodes_and_agents_are_refused_before_any_write() {
    let c = Cluster::new(opts(3, true));
    c.set_ready("worker-01", false);
    c.wait_available(2);
    c.state.lock().unwrap().requests.clear();
    let before = secret_state(&c);
    let out = rotate(&c, &[]);
    assert_refused_unchanged(&c, &before, &out);
    let err = text(&out.stderr);
    assert!(
        err.contains("worker-01") && err.contains("NotReady") && err.contains("--exclude-node"),
        "{err}"
    );
    // The user excludes the node: the others rotate; the excluded node is named in the report.
    let out = rotate(&c, &["--exclude-node", "worker-01"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["excluded_nodes"], json!(["worker-01"]), "{r:#}");

    // An agent that does not come back (Pending): the DaemonSet is not fully available.
    let c = Cluster::new(opts(2, false));
    c.world.lock().unwrap().pending.insert("worker-00".into());
    let pod = c
        .pods_of("antrea-agent")
        .into_iter()
        .find(|p| p.1 == "worker-00")
        .unwrap();
    c.state
        .lock()
        .unwrap()
        .objects
        .remove(&("pods".into(), NS.into(), pod.0));
    c.wait_available(1);
    c.state.lock().unwrap().requests.clear();
    let before = secret_state(&c);
    let out = rotate(&c, &[]);
    assert_refused_unchanged(&c, &before, &out);
    let err = text(&out.stderr);
    assert!(
        err.contains("antrea-agent") && err.contains("1/2 available"),
        "{err}"
    );
}

/// Item 5: compaction recreates conf.db with ovsdb-server's default mode (0660 & ~umask); the
/// operator had tightened it to 0600. The Job's mount is read-only (the admission policy admits
/// nothing else): the node still counts as compacted, and the looser mode is reported for it.
#[test]
fn compaction_through_a_read_only_mount_counts_and_reports_a_loosened_mode() {
    let c = Cluster::new(opts(2, false));
    c.nodes[0].chmod(&c.nodes[0].conf_db, 0o600);
    let out = rotate(&c, &[]);
    assert_done(&c, &out);
    let bytes = std::fs::read(&c.nodes[0].conf_db).unwrap();
    assert!(!bytes.windows(OLD.len()).any(|w| w == OLD.as_bytes()));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "conf-db-mode-too-open")
        .collect();
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["subject"]["name"], "worker-00");
}

/// Item 5, node side: `fix --only-compact` through a read-only mount succeeds when compaction
/// did not loosen the mode (nothing to chmod).
#[test]
fn compact_only_through_a_read_only_mount() {
    let n = crate::harness::Node::start();
    n.add_tunnel("t1", "peer", "10.0.0.2", "old-key-aaaaaaaaaaaaaaaa");
    n.set_psk("t1", "new-key-bbbbbbbbbbbbbbbb");
    let mut args = vec!["fix".to_owned(), "--only-compact".into()];
    args.extend(n.node_args());
    let dir = n.run_dir.display().to_string();
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@""#,
        )
        .args(["sh", &dir])
        .arg(env!("CARGO_BIN_EXE_psk-guard"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let bytes = std::fs::read(&n.conf_db).unwrap();
    assert!(!bytes.windows(7).any(|w| w == b"old-key"), "compacted");
}

/// Item 6: a node whose OVSDB is down prints a warning on stderr, merged into the pod log with
/// its report; the report must still be read, and the node's reason shown.
#[test]
fn node_reports_survive_a_merged_log() {
    let mut c = Cluster::new(opts(2, false));
    c.nodes[1].stop();
    let out = c.psk_guard(
        &[
            "audit",
            "-o",
            "json",
            "--nodes",
            "--job-timeout",
            "30",
            "--fail-on",
            "critical",
        ],
        &[],
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["data"]["nodes"]["worker-01"]["status"],
        "checked",
        "{r:#}\n{}",
        text(&out.stderr)
    );
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "ovsdb-unreachable" && f["details"]["node"] == "worker-01"));
}

/// Item 6: a push Job that fails says why (its log's last lines), not "printed no report".
#[test]
fn a_failed_node_job_reports_the_reason_from_its_log() {
    let mut c = Cluster::new(opts(2, false));
    c.nodes[1].stop();
    let out = rotate(&c, &["--strategy", "push"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("worker-01") && err.contains("push-key to unix:"),
        "the node's own error is shown: {err}"
    );
    assert_no_key("stderr", &out.stderr, &[OLD, &c.secret_key()]);
}

/// Item 9: the Job namespace's Pod Security level forbids hostPath: refused before any write.
#[test]
fn pod_security_level_is_preflighted() {
    let c = Cluster::new(opts(1, false));
    {
        let mut st = c.state.lock().unwrap();
        let mut ns = st.get("namespaces", "", NS).cloned().unwrap();
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("baseline");
        st.put("namespaces", "", ns);
        st.requests.clear();
    }
    let before = secret_state(&c);
    let out = rotate(&c, &[]);
    assert_refused_unchanged(&c, &before, &out);
    let err = text(&out.stderr);
    assert!(
        err.contains("pod-security.kubernetes.io/enforce")
            && err.contains("baseline")
            && err.contains("privileged"),
        "{err}"
    );
}

/// Item 13: --kubeconfig/--context, the error without a config, an unreachable server named, and
/// `rotate --dry-run` running the whole preflight and writing nothing.
#[test]
fn kubeconfig_flags_and_dry_run() {
    let c = Cluster::new(opts(2, false));
    c.state.lock().unwrap().requests.clear();
    let before = secret_state(&c);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["rotate", "--dry-run", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args(["--context", "sim"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout) + &text(&out.stderr);
    assert!(
        plan.contains("dry run") && plan.contains("worker-00") && plan.contains("worker-01"),
        "{plan}"
    );
    assert_eq!(secret_state(&c), before);
    assert!(c.state.lock().unwrap().writes().is_empty());
    assert!(
        c.state
            .lock()
            .unwrap()
            .count("POST", "selfsubjectaccessreviews")
            > 0,
        "the preflight ran"
    );
    // A context that does not exist.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["rotate", "--dry-run", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args(["--context", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    // No configuration at all.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["audit"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--kubeconfig") && err.contains("KUBECONFIG"),
        "says how to give one: {err}"
    );
    // An unreachable server is named.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let down = crate::kube_api::kubeconfig(dir.path(), port);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(["rotate", "--dry-run", "--timeout", "1", "--kubeconfig"])
        .arg(&down)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("http://{port}")), "{err}");
}

/// The test server itself: 422 with a Status body for invalid names, label values and Job names;
/// access reviews scoped by namespace and name; `status` ignored on PUT.
#[test]
fn the_test_server_is_as_strict_as_kube_apiserver() {
    use crate::kube_api::{dns1123_subdomain_error, label_value_error, matches_labels, Scope};
    assert!(dns1123_subdomain_error("ip-10-0-0-1.eu-west-1.compute.internal").is_none());
    assert!(dns1123_subdomain_error("Worker_1").is_some());
    assert!(dns1123_subdomain_error(&"a".repeat(254)).is_some());
    assert!(label_value_error(&"a".repeat(63)).is_none());
    assert!(label_value_error(&"a".repeat(64)).is_some());
    assert!(label_value_error("-a").is_some());
    assert!(label_value_error("").is_none());
    let pod = json!({"metadata": {"labels": {"app": "antrea", "component": "antrea-agent"}}});
    assert!(matches_labels(
        &pod,
        "app=antrea,component in (antrea-agent,x)"
    ));
    assert!(!matches_labels(&pod, "component notin (antrea-agent)"));
    assert!(matches_labels(&pod, "app,!other"));

    let c = Cluster::new(opts(1, false));
    c.state.lock().unwrap().scoped.push(Scope {
        verb: "get".into(),
        resource: "secrets".into(),
        namespaces: Some(vec![NS.into()]),
        names: Some(vec!["other".into()]),
    });
    let addr = api_addr(&c.kubeconfig);
    let long = "psk-guard-verify-".to_owned() + &"a".repeat(50);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": long},
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}}});
    let (code, status) = http(
        &addr,
        "POST",
        "/apis/batch/v1/namespaces/kube-system/jobs",
        &job,
    );
    assert_eq!(code, 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.template.labels",
        "{status:#}"
    );
    let ssar = |name: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": NS, "verb": "get", "resource": "secrets", "name": name}}})
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    assert_eq!(
        http(&addr, "POST", path, &ssar("other")).1["status"]["allowed"],
        true
    );
    assert_eq!(
        http(&addr, "POST", path, &ssar("antrea-ipsec")).1["status"]["allowed"],
        false
    );
    let (code, _) = http(
        &addr,
        "GET",
        "/api/v1/namespaces/kube-system/secrets/antrea-ipsec",
        &Value::Null,
    );
    assert_eq!(code, 403, "the request itself is denied as the review said");
    let ds_path = "/apis/apps/v1/namespaces/kube-system/daemonsets/antrea-agent";
    // The DaemonSet controller may write the status between the GET and the PUT (409): retry,
    // as a client does.
    let (code, back) = (0..20)
        .map(|_| {
            let (_, mut ds) = http(&addr, "GET", ds_path, &Value::Null);
            ds["status"]["numberAvailable"] = json!(99);
            http(&addr, "PUT", ds_path, &ds)
        })
        .find(|(code, _)| *code != 409)
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        back["status"]["numberAvailable"],
        json!(1),
        "status is not writable through PUT"
    );
}

/// The test server's `host:port`, from the kubeconfig pointing at it.
pub fn api_addr(kubeconfig: &std::path::Path) -> String {
    let server = std::fs::read_to_string(kubeconfig).unwrap();
    server
        .split("server: http://")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// One HTTP/1.1 request to the test server: (status code, JSON body).
fn http(addr: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (code, _, json) = http_full(addr, method, path, body);
    (code, json)
}

/// One HTTP/1.1 request to the test server: (status code, the header lines, JSON body).
pub fn http_full(addr: &str, method: &str, path: &str, body: &Value) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let body = if body.is_null() {
        vec![]
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    let (head, json) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let json = serde_json::from_str(json).unwrap_or(Value::Null);
    (code, head.to_owned(), json)
}
