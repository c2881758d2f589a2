//! `psk-guard audit` against the API test server seeded with compliant and non-compliant objects,
//! and `audit --nodes` across simulated nodes (one NotReady, one whose Job fails).

use std::time::Duration;

use serde_json::{json, Value};

use crate::output::assert_no_key;
use crate::sim::{Cluster, Options2, Shape, NS, WINDOWS_NODE};

const STRONG: &str = "Hq3vZ8mR1xT5wK9bN2cF7jL4pY6sD0gAx1";

fn cluster(n: usize, key: &str) -> Cluster {
    Cluster::new(Options2 {
        nodes: n,
        key: key.into(),
        on_delete: false,
        restart_delay: Duration::from_millis(10),
    })
}

fn put(c: &Cluster, res: &str, ns: &str, obj: Value) {
    c.state.lock().unwrap().put(res, ns, obj);
}

fn node(name: &str, ready: bool, control_plane: bool) -> Value {
    // Every kubelet sets kubernetes.io/os on registration (pkg/kubelet/kubelet_node_status.go).
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
           "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn pod(ns: &str, name: &str, labels: Value, node: &str, host_paths: &[&str]) -> Value {
    let vols: Vec<Value> = host_paths
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"name": format!("v{i}"), "hostPath": {"path": p}}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}], "volumes": vols}})
}

fn agent_cluster_role() -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "antrea-agent"},
           "rules": [{"apiGroups": [""], "resources": ["pods/status", "nodes/status"], "verbs": ["patch", "update"]}]})
}

fn audit(c: &Cluster, extra: &[&str]) -> (Value, i32, String) {
    let mut args = vec!["audit", "-o", "json"];
    if !extra.contains(&"--job-timeout") {
        args.extend_from_slice(&["--job-timeout", "60"]);
    }
    args.extend_from_slice(extra);
    let out = c.psk_guard(&args, &[]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    crate::formats::assert_valid_report("audit", &v);
    (
        v,
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn findings<'a>(r: &'a Value, code: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

#[test]
fn non_compliant_cluster() {
    let c = cluster(1, "changeme");
    put(&c, "nodes", "", node("worker-00", true, false));
    put(
        &c,
        "pods",
        NS,
        pod(
            NS,
            "antrea-controller-abc",
            json!({"app": "antrea", "component": "antrea-controller"}),
            "worker-00",
            &[],
        ),
    );
    put(&c, "clusterroles", "", agent_cluster_role());
    put(
        &c,
        "validatingwebhookconfigurations",
        "",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "gatekeeper-validating-webhook-configuration"},
        "webhooks": [{"name": "validation.gatekeeper.sh", "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": {},
                      "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}]}]}),
    );
    put(
        &c,
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-a"}}),
    );
    put(
        &c,
        "pods",
        "tenant-a",
        pod(
            "tenant-a",
            "debug",
            json!({"app": "debug"}),
            "worker-00",
            &["/var/run"],
        ),
    );
    put(
        &c,
        "pods",
        "tenant-a",
        pod(
            "tenant-a",
            "logs",
            json!({"app": "logs"}),
            "worker-00",
            &["/var/log"],
        ),
    );
    put(
        &c,
        "roles",
        NS,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "secret-reader", "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
    );
    put(
        &c,
        "rolebindings",
        NS,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "alice-reads", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]}),
    );
    put(
        &c,
        "clusterroles",
        "",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "other-secret"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["not-antrea"], "verbs": ["get"]}]}),
    );
    put(
        &c,
        "clusterrolebindings",
        "",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "bob-other"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "other-secret"},
        "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]}),
    );
    let (r, code, stderr) = audit(&c, &[]);
    assert_eq!(code, 1, "{r:#}");
    assert_no_key("audit", r.to_string().as_bytes(), &["changeme"]);
    assert_no_key("audit stderr", stderr.as_bytes(), &["changeme"]);
    assert_eq!(
        findings(&r, "psk-default-key")[0]["subject"]["name"],
        format!("{NS}/antrea-ipsec")
    );
    assert_eq!(findings(&r, "ipsec-auth-psk").len(), 1);
    assert_eq!(
        findings(&r, "gatekeeper-policy-missing")[0]["severity"],
        "high"
    );
    assert_eq!(
        findings(&r, "gatekeeper-webhook-skips-subresources").len(),
        1
    );
    assert_eq!(
        findings(&r, "agent-can-patch-status")[0]["severity"],
        "medium",
        "gatekeeper missing"
    );
    assert_eq!(
        findings(&r, "controller-not-on-secure-node")[0]["observed"],
        "runs on worker-00, not a control-plane node"
    );
    let hp = findings(&r, "hostpath-exposes-antrea");
    assert_eq!(hp.len(), 1, "only the /var/run pod: {hp:?}");
    assert_eq!(hp[0]["subject"]["name"], "tenant-a/debug");
    assert_eq!(
        findings(&r, "namespace-allows-hostpath")[0]["subject"]["name"],
        "tenant-a"
    );
    let readers: Vec<&str> = findings(&r, "secret-readable-by")
        .iter()
        .map(|f| f["subject"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        readers,
        vec!["User alice"],
        "bob's role is scoped to another Secret"
    );
    // --secure-node accepts the controller's node.
    let (r, _, _) = audit(&c, &["--secure-node", "worker-00"]);
    assert!(findings(&r, "controller-not-on-secure-node").is_empty());
}

#[test]
fn compliant_cluster() {
    let c = cluster(1, STRONG);
    {
        let mut st = c.state.lock().unwrap();
        let mut cm = st.get("configmaps", NS, "antrea-config").cloned().unwrap();
        cm["data"]["antrea-agent.conf"] =
            json!("featureGates:\n  IPsecCertAuth: true\nipsec:\n  authenticationMode: cert\n");
        st.put("configmaps", NS, cm);
    }
    put(&c, "nodes", "", node("cp-0", true, true));
    put(
        &c,
        "pods",
        NS,
        pod(
            NS,
            "antrea-controller-abc",
            json!({"app": "antrea", "component": "antrea-controller"}),
            "cp-0",
            &[],
        ),
    );
    let mut agent = pod(
        NS,
        "antrea-agent-x",
        json!({"app": "antrea", "component": "antrea-agent"}),
        "cp-0",
        &["/var/run/antrea"],
    );
    owned_by_agent_daemonset(&c, &mut agent);
    put(&c, "pods", NS, agent);
    put(&c, "clusterroles", "", agent_cluster_role());
    put(
        &c,
        "constrainttemplates",
        "",
        json!({"apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate", "metadata": {"name": "antreaagentstatusupdates"}, "spec": {}}),
    );
    put(
        &c,
        "antreaagentstatusupdates",
        "",
        json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "AntreaAgentStatusUpdates", "metadata": {"name": "antrea-agent-status-updates"},
        "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod", "Node"]}]}}}),
    );
    put(
        &c,
        "validatingwebhookconfigurations",
        "",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "gatekeeper-validating-webhook-configuration"},
        "webhooks": [{"name": "validation.gatekeeper.sh", "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": {},
                      "failurePolicy": "Fail", "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*", "*/*"]}]}]}),
    );
    put(
        &c,
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-a", "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
    );
    put(
        &c,
        "pods",
        "tenant-a",
        pod(
            "tenant-a",
            "logs",
            json!({"app": "logs"}),
            "cp-0",
            &["/var/log"],
        ),
    );
    let (r, code, _) = audit(&c, &[]);
    for code in [
        "psk-default-key",
        "psk-too-short",
        "psk-low-entropy",
        "ipsec-auth-psk",
        "gatekeeper-policy-missing",
        "gatekeeper-webhook-skips-subresources",
        "controller-not-on-secure-node",
        "hostpath-exposes-antrea",
        "namespace-allows-hostpath",
        "secret-readable-by",
    ] {
        assert!(
            findings(&r, code).is_empty(),
            "{code} on a compliant cluster: {r:#}"
        );
    }
    assert_eq!(
        findings(&r, "agent-can-patch-status")[0]["severity"],
        "info",
        "mitigated by Gatekeeper"
    );
    assert_eq!(findings(&r, "ipsec-cert-mode").len(), 1);
    assert_eq!(code, 0, "{r:#}");
}

#[test]
fn fan_out_to_five_nodes_with_one_not_ready_and_one_failing_job() {
    let c = cluster(5, STRONG);
    for (i, info) in c.infos.iter().enumerate() {
        put(&c, "nodes", "", node(&info.name, i != 3, false));
    }
    c.failing_jobs.lock().unwrap().insert("worker-04".into());
    let (r, code, stderr) = audit(
        &c,
        &["--nodes", "--parallelism", "2", "--fail-on", "critical"],
    );
    let sections = r["data"]["nodes"].as_object().unwrap();
    assert_eq!(sections.len(), 5, "{r:#}");
    assert_eq!(sections["worker-03"]["status"], "not-ready");
    assert_eq!(sections["worker-04"]["status"], "failed");
    for n in ["worker-00", "worker-01", "worker-02"] {
        assert_eq!(sections[n]["status"], "checked", "{n}");
    }
    let not_checked: Vec<&str> = findings(&r, "node-not-checked")
        .iter()
        .map(|f| f["subject"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(not_checked, vec!["worker-03", "worker-04"]);
    // The node reports are merged: each checked node's plaintext-PSK findings, tagged with the node.
    let merged = findings(&r, "psk-plaintext-in-ovsdb");
    assert_eq!(
        merged.len(),
        3,
        "one finding per key on each of 3 checked nodes (4 peers each)"
    );
    assert!(merged
        .iter()
        .all(|f| f["details"]["tunnels"].as_array().unwrap().len() == 4));
    assert!(merged.iter().all(|f| f["details"]["node"].is_string()
        && f["subject"]["name"].as_str().unwrap().contains(':')));
    assert!(stderr.contains("nodes checked"), "progress: {stderr}");
    jobs_deleted_and_permissions_declared(&c);
    assert_eq!(code, 2, "nothing critical, but two nodes were not checked");
    assert_no_key("audit --nodes", r.to_string().as_bytes(), &[STRONG]);
}

#[test]
fn fan_out_reports_a_job_that_times_out() {
    let c = cluster(2, STRONG);
    for info in &c.infos {
        put(&c, "nodes", "", node(&info.name, true, false));
    }
    c.failing_jobs
        .lock()
        .unwrap()
        .insert("hang:worker-01".into());
    // The Job controller's activeDeadlineSeconds ends the Job first (it deletes the pod and
    // counts it failed, reason DeadlineExceeded): still the node's timeout, not a failed check.
    c.world.lock().unwrap().deadline_lead = std::time::Duration::from_millis(1500);
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "2", "--fail-on", "critical"],
    );
    let f = findings(&r, "node-not-checked");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["subject"]["name"], "worker-01");
    assert_eq!(f[0]["observed"], "the check Job timed out");
    assert_eq!(r["data"]["nodes"]["worker-00"]["status"], "checked");
    assert_eq!(code, 2);
    assert!(
        c.state.lock().unwrap().list("jobs", NS).is_empty(),
        "the timed-out Job is deleted too"
    );
}

/// Issue 11 for audit --nodes: the check Job mounts the node's /var/log/antrea read-only, so a key
/// in a node's log file is found (by fingerprint, tagged with the node). tests/it/manifests.rs
/// checks the mount is read-only and admitted by the admission policy.
#[test]
fn fan_out_finds_a_key_in_a_node_log_file() {
    let c = cluster(2, STRONG);
    for info in &c.infos {
        put(&c, "nodes", "", node(&info.name, true, false));
    }
    let log = c.infos[1].log_dir.join("antrea-agent.log");
    std::fs::write(
        &log,
        format!("I1127 10:00:00.000 1 ipsec.go:80] Using PSK {STRONG} for tunnel\n"),
    )
    .unwrap();
    let (r, _, _) = audit(&c, &["--nodes", "--fail-on", "critical"]);
    let f = findings(&r, "psk-in-log-file");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["details"]["node"], "worker-01", "{r:#}");
    assert!(f[0]["subject"]["name"]
        .as_str()
        .unwrap()
        .ends_with("antrea-agent.log"));
    assert!(
        !r.to_string().contains("keys in log files"),
        "both nodes' logs were searched (the sim shows a Job only the host paths it mounts): {r:#}"
    );
    assert_no_key(
        "audit --nodes with logs",
        r.to_string().as_bytes(),
        &[STRONG],
    );
}

/// Issue 11 for audit --nodes: the check Job has no hostPID (the admission policy forbids it), so
/// ovsdb-server's command line is out of its sight; the node check asks the server itself over
/// its control socket (`ovsdb-server/list-remotes`) and finds a TCP remote all the same.
#[test]
fn fan_out_finds_an_ovsdb_server_listening_on_tcp() {
    let mut c = cluster(2, STRONG);
    for info in &c.infos {
        put(&c, "nodes", "", node(&info.name, true, false));
    }
    c.nodes[1].stop();
    c.nodes[1].start_server_args(&["--remote=ptcp:0:127.0.0.1"]);
    let (r, code, _) = audit(&c, &["--nodes", "--fail-on", "critical"]);
    let f = findings(&r, "ovsdb-network-remote");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["details"]["node"], "worker-01");
    assert_eq!(f[0]["severity"], "critical");
    assert_eq!(f[0]["details"]["source"], "ovsdb-server/list-remotes");
    assert!(
        !incomplete(&r).iter().any(|i| i.contains("remotes")),
        "{:?}",
        incomplete(&r)
    );
    assert_eq!(code, 1);
}

/// Issue 11: a node without /var/log/antrea (no antrea-agent there, or logs elsewhere). The check
/// Job mounts it as a `Directory` hostPath, so the kubelet refuses the mount and the pod stays
/// Pending with a FailedMount Event (the sim models kubelet's type check). The audit notices it
/// from the Event instead of waiting out --job-timeout, names the cause and what to do, and
/// creates nothing on the node; with --no-logs the node is checked without its logs.
#[test]
fn fan_out_on_a_node_without_its_log_directory() {
    let c = cluster(2, STRONG);
    for info in &c.infos {
        put(&c, "nodes", "", node(&info.name, true, false));
    }
    std::fs::remove_dir_all(&c.infos[1].log_dir).unwrap();
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "600", "--fail-on", "critical"],
    );
    let f = findings(&r, "node-not-checked");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["subject"]["name"], "worker-01");
    let observed = f[0]["observed"].as_str().unwrap();
    assert!(
        observed.starts_with("/var/log/antrea does not exist on node worker-01")
            && observed.contains("MountVolume.SetUp failed for volume \"antrea-log\""),
        "{observed}"
    );
    assert!(
        f[0]["remediation"].as_str().unwrap().contains("--no-logs"),
        "{f:#?}"
    );
    assert_eq!(r["data"]["nodes"]["worker-01"]["reason"], "no-log-dir");
    assert_eq!(r["data"]["nodes"]["worker-00"]["status"], "checked");
    assert_eq!(code, 2);
    assert!(
        !c.infos[1].log_dir.exists(),
        "nothing was created on the node"
    );
    jobs_deleted_and_permissions_declared(&c);
    // --no-logs: the Jobs do not mount the log directory; both nodes are checked, and the
    // report says the logs were not searched.
    let (r, code, _) = audit(&c, &["--nodes", "--no-logs", "--fail-on", "critical"]);
    assert!(findings(&r, "node-not-checked").is_empty(), "{r:#}");
    assert_eq!(r["data"]["nodes"]["worker-01"]["status"], "checked");
    assert!(
        incomplete(&r).iter().any(|i| i.contains("--no-logs")),
        "{:?}",
        incomplete(&r)
    );
    assert_eq!(code, 2, "the logs were not searched");
}

/// Issue 11 item C: when the Pod Security level cannot be read beforehand (here the namespaces
/// cannot be listed; a cluster-wide default level is the same), the Jobs are created and Pod
/// Security admission refuses their pods (FailedCreate on the Job, retried for ever). The audit
/// says so from the Event, names Pod Security and the fix, without waiting out the timeout.
#[test]
fn fan_out_names_pod_security_when_it_refuses_the_jobs_pods() {
    let c = cluster(1, STRONG);
    {
        let mut st = c.state.lock().unwrap();
        let mut ns = st.get("namespaces", "", NS).cloned().unwrap();
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("baseline");
        st.put("namespaces", "", ns);
        st.denied.insert(("list".into(), "namespaces".into()));
    }
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "600", "--fail-on", "critical"],
    );
    assert_eq!(jobs_created(&c), 1);
    let f = findings(&r, "node-not-checked");
    assert_eq!(f.len(), 1, "{r:#}");
    let observed = f[0]["observed"].as_str().unwrap();
    assert!(
        observed.starts_with("Pod Security admission refused the check Job's pod")
            && observed.contains("violates PodSecurity"),
        "{observed}"
    );
    assert!(
        f[0]["remediation"]
            .as_str()
            .unwrap()
            .contains("pod-security.kubernetes.io/enforce=privileged"),
        "{f:#?}"
    );
    assert_eq!(r["data"]["nodes"]["worker-00"]["reason"], "pod-security");
    assert_eq!(code, 2);
}

/// The check Jobs' service account does not exist: the ServiceAccount admission plugin refuses
/// their pods (FailedCreate on the Job, retried for ever; sim.rs `service_account_missing`). The
/// audit names the account and the fix from the Event, without waiting out the timeout, and not
/// as an admission policy's refusal.
#[test]
fn fan_out_names_a_missing_service_account() {
    let c = cluster(1, STRONG);
    c.state.lock().unwrap().objects.remove(&(
        "serviceaccounts".into(),
        NS.into(),
        "psk-guard-node".into(),
    ));
    let started = std::time::Instant::now();
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "600", "--fail-on", "critical"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(300));
    let f = findings(&r, "node-not-checked");
    assert_eq!(f.len(), 1, "{r:#}");
    let observed = f[0]["observed"].as_str().unwrap();
    assert!(
        observed.contains(r#"error looking up service account kube-system/psk-guard-node: serviceaccount \"psk-guard-node\" not found"#)
            || observed.contains(r#"error looking up service account kube-system/psk-guard-node: serviceaccount "psk-guard-node" not found"#),
        "{observed}"
    );
    let fix = f[0]["remediation"].as_str().unwrap();
    assert!(
        fix.contains("kube-system/psk-guard-node")
            && fix.contains("docs/deploy/serviceaccounts.yaml")
            && fix.contains("--service-account")
            && !fix.contains("admission policy"),
        "{fix}"
    );
    assert_eq!(
        r["data"]["nodes"]["worker-00"]["reason"],
        "no-service-account"
    );
    assert_eq!(code, 2);
    jobs_deleted_and_permissions_declared(&c);
}

/// A refusal that may clear (a quota used up) but never does: the audit waits the Job timeout
/// out, as the Job controller keeps trying, then names the refusal, not a bare timeout.
#[test]
fn fan_out_names_a_refusal_that_never_cleared_at_the_timeout() {
    let c = cluster(1, STRONG);
    c.world.lock().unwrap().refuse_pods.insert(
        "audit:worker-00".into(),
        (crate::sim::QUOTA_EXCEEDED.into(), u32::MAX),
    );
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "3", "--fail-on", "critical"],
    );
    let f = findings(&r, "node-not-checked");
    assert_eq!(f.len(), 1, "{r:#}");
    let observed = f[0]["observed"].as_str().unwrap();
    assert!(
        observed.starts_with("the check Job's pod was refused at creation")
            && observed.contains("exceeded quota"),
        "{observed}"
    );
    assert_eq!(code, 2);
    jobs_deleted_and_permissions_declared(&c);
}

/// A webhook refused the check Job's first pod; the Job controller's retry a second later
/// created it, and then the pod never ran (a node that stopped starting pods). At the deadline
/// the node timed out: the old refusal is not its reason (review8 finding 2), since a pod came.
#[test]
fn a_refusal_that_cleared_is_not_blamed_for_a_later_timeout() {
    let c = cluster(1, STRONG);
    c.world.lock().unwrap().refuse_pods.insert(
        "audit:worker-00".into(),
        (crate::sim::WEBHOOK_TIMEOUT.into(), 1),
    );
    c.failing_jobs
        .lock()
        .unwrap()
        .insert("hang:worker-00".into());
    c.world.lock().unwrap().deadline_lead = std::time::Duration::from_millis(1500);
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "4", "--fail-on", "critical"],
    );
    let f = findings(&r, "node-not-checked");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["observed"], "the check Job timed out", "{r:#}");
    assert_eq!(code, 2);
}

/// Every Job of the run is deleted (stuck ones too), and the audit used no permission beyond
/// `audit::PERMISSIONS` and `audit::NODE_PERMISSIONS`.
fn jobs_deleted_and_permissions_declared(c: &Cluster) {
    let st = c.state.lock().unwrap();
    assert!(st.list("jobs", NS).is_empty(), "jobs cleaned up");
    crate::harness::assert_used_is_declared(
        &st.used,
        &[
            psk_guard::audit::PERMISSIONS,
            psk_guard::audit::NODE_PERMISSIONS,
        ],
        "audit",
    );
}

/// The check Jobs this run created, by the node each was pinned to.
fn jobs_created(c: &Cluster) -> usize {
    c.state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(m, _, _, r)| m == "POST" && r == "jobs")
        .count()
}

/// Issue 10 item 2 for audit: Antrea's Windows agent carries the Linux agent's labels, and Antrea
/// has no IPsec on Windows nodes: a Windows node gets no (Linux, hostPath) check Job, which would
/// stay Pending there until it timed out; it is listed as not Linux.
#[test]
fn fan_out_leaves_windows_nodes_out() {
    let c = Cluster::with_shape(
        Options2 {
            nodes: 2,
            key: STRONG.into(),
            on_delete: false,
            restart_delay: Duration::from_millis(10),
        },
        Shape {
            windows: true,
            ..Shape::default()
        },
    );
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "5", "--fail-on", "critical"],
    );
    let sections = r["data"]["nodes"].as_object().unwrap();
    assert_eq!(sections[WINDOWS_NODE]["status"], "not-linux", "{r:#}");
    assert_eq!(sections[WINDOWS_NODE]["os"], "windows");
    for n in ["worker-00", "worker-01"] {
        assert_eq!(sections[n]["status"], "checked", "{n}: {r:#}");
    }
    assert!(findings(&r, "node-not-checked").is_empty(), "{r:#}");
    assert_eq!(jobs_created(&c), 2, "one Job per Linux node");
    assert!(incomplete(&r).is_empty(), "{:?}", incomplete(&r));
    assert_eq!(code, 0);
}

/// Issue 10 item 9 for audit: the Job namespace's Pod Security level rejects the hostPath of the
/// check Jobs' pods. No Job is created (each would never start); every node is not checked,
/// with the label and the fix named; the cluster questions are still answered.
#[test]
fn fan_out_preflights_the_pod_security_level() {
    let c = cluster(2, STRONG);
    {
        let mut st = c.state.lock().unwrap();
        let mut ns = st.get("namespaces", "", NS).cloned().unwrap();
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("baseline");
        st.put("namespaces", "", ns);
    }
    let (r, code, _) = audit(
        &c,
        &["--nodes", "--job-timeout", "5", "--fail-on", "critical"],
    );
    assert_eq!(jobs_created(&c), 0, "no Job was created");
    let why = incomplete(&r).join("\n");
    assert!(
        why.contains("pod-security.kubernetes.io/enforce=baseline")
            && why.contains("kubectl label namespace kube-system"),
        "{why}"
    );
    let not_checked: Vec<&str> = findings(&r, "node-not-checked")
        .iter()
        .map(|f| f["subject"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(not_checked, vec!["worker-00", "worker-01"]);
    assert_eq!(r["data"]["nodes"]["worker-00"]["reason"], "pod-security");
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] != "node-not-checked"),
        "the cluster questions were still asked: {r:#}"
    );
    assert_eq!(code, 2, "nodes were not checked");
}

/// Issue 10 item 6, the guides' side: the audit Job of docs/deploy/audit-job.yaml, run with its
/// own args and stdout and stderr merged as `kubectl logs` gives them, logs exactly the report.
#[test]
fn the_audit_jobs_log_is_the_report() {
    let c = cluster(2, STRONG);
    let job = crate::manifests::docs("audit-job.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Job")
        .unwrap();
    let args: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "exec \"$0\" \"$@\" 2>&1",
            env!("CARGO_BIN_EXE_psk-guard"),
        ])
        .args(&args)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(&log).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(
        r["data"]["nodes"]["worker-00"]["status"], "checked",
        "{r:#}"
    );
    assert_no_key("the audit Job's log", log.as_bytes(), &[STRONG]);
}

fn incomplete(r: &Value) -> Vec<String> {
    r["incomplete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}: {}", i["check"], i["reason"]))
        .collect()
}

/// Gatekeeper's own default webhook (its chart and deploy/gatekeeper.yaml): resources ['*'],
/// CREATE and UPDATE, failurePolicy Ignore, and a namespaceSelector that skips namespaces
/// labelled admission.gatekeeper.sh/ignore (which Gatekeeper puts on its exempt namespaces).
fn gatekeeper_default_webhook() -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
    "metadata": {"name": "gatekeeper-validating-webhook-configuration", "labels": {"gatekeeper.sh/system": "yes"}},
    "webhooks": [
        {"name": "validation.gatekeeper.sh", "admissionReviewVersions": ["v1", "v1beta1"], "sideEffects": "None",
         "failurePolicy": "Ignore", "matchPolicy": "Exact", "timeoutSeconds": 3,
         "clientConfig": {"service": {"name": "gatekeeper-webhook-service", "namespace": "gatekeeper-system", "path": "/v1/admit"}},
         "namespaceSelector": {"matchExpressions": [{"key": "admission.gatekeeper.sh/ignore", "operator": "DoesNotExist"}]},
         "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}]},
        {"name": "check-ignore-label.gatekeeper.sh", "admissionReviewVersions": ["v1", "v1beta1"], "sideEffects": "None",
         "failurePolicy": "Fail",
         "clientConfig": {"service": {"name": "gatekeeper-webhook-service", "namespace": "gatekeeper-system", "path": "/v1/admitlabel"}},
         "rules": [{"apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["namespaces"]}]}
    ]})
}

fn gatekeeper_policy(c: &Cluster, enforcement: Option<&str>) {
    put(
        c,
        "constrainttemplates",
        "",
        json!({"apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate", "metadata": {"name": "antreaagentstatusupdates"}, "spec": {}}),
    );
    let mut spec = json!({"match": {"kinds": [{"apiGroups": [""], "kinds": ["Pod", "Node"]}]}});
    if let Some(e) = enforcement {
        spec["enforcementAction"] = json!(e);
    }
    put(
        c,
        "antreaagentstatusupdates",
        "",
        json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "AntreaAgentStatusUpdates", "metadata": {"name": "antrea-agent-status-updates"}, "spec": spec}),
    );
}

#[test]
fn a_cluster_without_gatekeeper_lacks_the_policy() {
    // Gatekeeper's API groups are not installed: kube-apiserver answers 404 text/plain.
    let c = cluster(1, STRONG);
    put(&c, "clusterroles", "", agent_cluster_role());
    let (r, _, _) = audit(&c, &[]);
    let missing = findings(&r, "gatekeeper-policy-missing");
    assert_eq!(missing.len(), 1, "{r:#}");
    assert_eq!(missing[0]["severity"], "high");
    assert!(
        incomplete(&r).iter().all(|i| !i.contains("atekeeper")),
        "an absent API group is not a failed check: {:?}",
        incomplete(&r)
    );
    assert_eq!(
        findings(&r, "agent-can-patch-status")[0]["severity"],
        "medium"
    );
}

#[test]
fn a_failed_list_yields_no_findings_from_it() {
    let c = cluster(1, STRONG);
    c.state
        .lock()
        .unwrap()
        .denied
        .insert(("list".into(), "namespaces".into()));
    put(
        &c,
        "pods",
        "tenant-a",
        pod(
            "tenant-a",
            "debug",
            json!({"app": "debug"}),
            "worker-00",
            &["/var/run"],
        ),
    );
    let (r, code, _) = audit(&c, &[]);
    assert_eq!(findings(&r, "hostpath-exposes-antrea").len(), 1, "{r:#}");
    assert!(
        findings(&r, "namespace-allows-hostpath").is_empty(),
        "the namespaces were never read: {r:#}"
    );
    assert!(
        incomplete(&r).iter().any(|i| i.contains("namespaces")),
        "{:?}",
        incomplete(&r)
    );
    assert_eq!(code, 1);
}

/// A Pod owned by a kind that could not be listed is judged itself: its owner's template was
/// never read, so nothing else speaks for it.
#[test]
fn a_pod_whose_owner_could_not_be_listed_is_judged_itself() {
    let c = cluster(1, STRONG);
    c.state
        .lock()
        .unwrap()
        .denied
        .insert(("list".into(), "jobs".into()));
    let mut p = pod(
        "tenant-a",
        "batch-1",
        json!({"app": "batch"}),
        "worker-00",
        &["/var/run/antrea"],
    );
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "batch", "uid": "0000-job", "controller": true}]);
    // The owner exists (the sim's garbage collector, like the real one, deletes a pod whose
    // owners are all gone, which made this test race it); only listing it is denied.
    put(
        &c,
        "jobs",
        "tenant-a",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch", "namespace": "tenant-a", "uid": "0000-job"}}),
    );
    put(&c, "pods", "tenant-a", p);
    let (r, _, _) = audit(&c, &[]);
    let exposed = findings(&r, "hostpath-exposes-antrea");
    assert_eq!(exposed.len(), 1, "{r:#}");
    assert!(
        exposed[0]["subject"]["name"]
            .as_str()
            .unwrap()
            .contains("batch-1"),
        "{:#}",
        exposed[0]
    );
    assert!(
        incomplete(&r).iter().any(|i| i.contains("jobs")),
        "{:?}",
        incomplete(&r)
    );
}

#[test]
fn gatekeepers_defaults_do_not_enforce_the_policy() {
    let c = cluster(1, STRONG);
    gatekeeper_policy(&c, Some("dryrun"));
    put(
        &c,
        "validatingwebhookconfigurations",
        "",
        gatekeeper_default_webhook(),
    );
    put(
        &c,
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system", "labels": {"kubernetes.io/metadata.name": "kube-system", "admission.gatekeeper.sh/ignore": "no-self-managing"}}}),
    );
    put(
        &c,
        "configs",
        "gatekeeper-system",
        json!({"apiVersion": "config.gatekeeper.sh/v1alpha1", "kind": "Config", "metadata": {"name": "config", "namespace": "gatekeeper-system"},
               "spec": {"match": [{"excludedNamespaces": ["kube-*"], "processes": ["*"]}]}}),
    );
    // The agent's role granting only update (not patch) on the status subresources.
    put(
        &c,
        "clusterroles",
        "",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "antrea-agent", "labels": {"app": "antrea"}},
               "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "watch", "list"]},
                         {"apiGroups": [""], "resources": ["pods/status", "nodes/status"], "verbs": ["update"]}]}),
    );
    let (r, _, _) = audit(&c, &[]);
    assert!(
        findings(&r, "gatekeeper-policy-missing").is_empty(),
        "{r:#}"
    );
    let skips = findings(&r, "gatekeeper-webhook-skips-subresources");
    assert_eq!(skips.len(), 1, "{r:#}");
    assert_eq!(
        skips[0]["subject"]["name"],
        "gatekeeper-validating-webhook-configuration/validation.gatekeeper.sh"
    );
    assert_eq!(
        skips[0]["details"]["uncovered"],
        json!(["pods/status", "nodes/status"])
    );
    let ne = findings(&r, "gatekeeper-policy-not-enforced");
    let said: Vec<String> = ne
        .iter()
        .map(|f| {
            let s = |v: &Value| v.as_str().unwrap().to_owned();
            format!(
                "{} {} {}",
                s(&f["severity"]),
                s(&f["subject"]["kind"]),
                s(&f["observed"])
            )
        })
        .collect();
    let has = |sev: &str, kind: &str, what: &str| {
        assert!(
            said.iter()
                .any(|s| s.starts_with(&format!("{sev} {kind} ")) && s.contains(what)),
            "{sev} {kind} {what}: {said:#?}"
        )
    };
    has("high", "constraint", "enforcementAction dryrun");
    has(
        "medium",
        "validatingwebhookconfiguration",
        "failurePolicy Ignore",
    );
    has(
        "medium",
        "validatingwebhookconfiguration",
        "namespaceSelector does not select namespace kube-system",
    );
    has(
        "medium",
        "gatekeeper-config",
        "excludes namespace kube-system",
    );
    assert_eq!(ne.len(), 4, "{said:#?}");
    let agent = findings(&r, "agent-can-patch-status");
    assert_eq!(agent[0]["severity"], "medium");
    assert_eq!(
        agent[0]["observed"],
        "update pods/status, update nodes/status"
    );
}

#[test]
fn a_subresource_rule_for_create_only_covers_nothing() {
    let c = cluster(1, STRONG);
    gatekeeper_policy(&c, None);
    put(
        &c,
        "validatingwebhookconfigurations",
        "",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "gatekeeper-validating-webhook-configuration"},
        "webhooks": [{"name": "validation.gatekeeper.sh", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                      "clientConfig": {"service": {"name": "gatekeeper-webhook-service", "namespace": "gatekeeper-system"}},
                      "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["*/*"]},
                                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods/status"]}]}]}),
    );
    put(&c, "clusterroles", "", agent_cluster_role());
    let (r, _, _) = audit(&c, &[]);
    let skips = findings(&r, "gatekeeper-webhook-skips-subresources");
    assert_eq!(skips.len(), 1, "{r:#}");
    assert_eq!(skips[0]["details"]["uncovered"], json!(["nodes/status"]));
    assert!(
        findings(&r, "gatekeeper-policy-not-enforced").is_empty(),
        "{r:#}"
    );
    assert_eq!(
        findings(&r, "agent-can-patch-status")[0]["severity"],
        "medium"
    );
}

#[test]
fn an_unused_default_key_in_certificate_mode_is_reported_lower() {
    let c = cluster(1, "changeme");
    {
        let mut st = c.state.lock().unwrap();
        let mut cm = st.get("configmaps", NS, "antrea-config").cloned().unwrap();
        cm["data"]["antrea-agent.conf"] =
            json!("featureGates:\n  IPsecCertAuth: true\nipsec:\n  authenticationMode: cert\n");
        st.put("configmaps", NS, cm);
    }
    let (r, _, _) = audit(&c, &[]);
    let d = findings(&r, "psk-default-key");
    assert_eq!(d.len(), 1, "{r:#}");
    assert_eq!(d[0]["severity"], "medium");
    assert_eq!(d[0]["details"]["in_use"], false);
    let observed = d[0]["observed"].as_str().unwrap();
    assert!(
        observed.contains("unused") && observed.contains("switched back to PSK mode"),
        "{observed}"
    );
    assert_no_key("audit", r.to_string().as_bytes(), &["changeme"]);
}

fn cluster_role(name: &str, labels: Value, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name, "labels": labels}, "rules": rules})
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn subject(who: &str) -> Value {
    let (kind, name) = who.split_once(' ').unwrap();
    match kind {
        "ServiceAccount" => {
            let (ns, n) = name.split_once('/').unwrap();
            json!({"kind": "ServiceAccount", "name": n, "namespace": ns})
        }
        _ => json!({"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"}),
    }
}

fn bind(c: &Cluster, ns: Option<&str>, name: &str, role_kind: &str, role: &str, who: &str) {
    let role_ref =
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role});
    match ns {
        Some(ns) => put(
            c,
            "rolebindings",
            ns,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
                   "roleRef": role_ref, "subjects": [subject(who)]}),
        ),
        None => put(
            c,
            "clusterrolebindings",
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                   "roleRef": role_ref, "subjects": [subject(who)]}),
        ),
    }
}

/// A Role in Antrea's namespace with `rules`, bound to `who`.
fn grant_in_antrea_ns(c: &Cluster, name: &str, rules: Value, who: &str) {
    put(c, "roles", NS, role(NS, name, rules));
    bind(c, Some(NS), name, "Role", name, who);
}

/// Antrea's real antrea-agent ClusterRole (build/charts/antrea/templates/agent/clusterrole.yaml),
/// trimmed to the rules that touch core resources: no path to the key.
fn antrea_agent_role() -> Value {
    cluster_role(
        "antrea-agent",
        json!({"app": "antrea"}),
        json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "watch", "list"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]},
            {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["endpoints", "services", "namespaces"], "verbs": ["get", "watch", "list"]},
            {"apiGroups": [""], "resourceNames": ["extension-apiserver-authentication"], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["antrea-ca"], "verbs": ["get", "watch", "list"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "watch", "list", "create"]}
        ]),
    )
}

#[test]
fn every_rbac_path_to_the_key_is_found_one_finding_per_subject() {
    let c = cluster(1, STRONG);
    put(&c, "clusterroles", "", antrea_agent_role());
    bind(
        &c,
        None,
        "antrea-agent",
        "ClusterRole",
        "antrea-agent",
        "ServiceAccount kube-system/antrea-agent",
    );
    // Everyone authenticated can read Secrets: the worst case.
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "read-secrets",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        ),
    );
    bind(
        &c,
        None,
        "everyone-reads",
        "ClusterRole",
        "read-secrets",
        "Group system:authenticated",
    );
    // The control plane's superusers: info, saying why.
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "cluster-admin",
            json!({}),
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        ),
    );
    bind(
        &c,
        None,
        "cluster-admin",
        "ClusterRole",
        "cluster-admin",
        "Group system:masters",
    );
    // list with resourceNames (through the metadata.name field selector).
    grant_in_antrea_ns(
        &c,
        "list-ipsec",
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["antrea-ipsec"], "verbs": ["list"]}]),
        "User gina",
    );
    // create of a workload in Antrea's namespace.
    grant_in_antrea_ns(
        &c,
        "deployer",
        json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create", "get"]}]),
        "User dave",
    );
    // exec through a */exec wildcard, granted by a ClusterRole in a RoleBinding of Antrea's namespace.
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "debugger",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["*/exec"], "verbs": ["create"]}]),
        ),
    );
    bind(&c, Some(NS), "erin", "ClusterRole", "debugger", "User erin");
    // nodes/proxy (kubelet exec), cluster-wide.
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "node-proxy",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]),
        ),
    );
    bind(
        &c,
        None,
        "prometheus",
        "ClusterRole",
        "node-proxy",
        "ServiceAccount monitoring/prometheus",
    );
    // An aggregated ClusterRole whose rules the test server does not fill in.
    put(
        &c,
        "clusterroles",
        "",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ops"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-ops": "true"}}]}, "rules": []}),
    );
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "ops-impersonate",
            json!({"example.com/aggregate-to-ops": "true"}),
            json!([{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]),
        ),
    );
    bind(&c, None, "ivan-ops", "ClusterRole", "ops", "User ivan");
    // A service account that can create Pods in Antrea's namespace, and someone who can get its token.
    grant_in_antrea_ns(
        &c,
        "pod-maker",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
        "ServiceAccount kube-system/ci",
    );
    grant_in_antrea_ns(
        &c,
        "ci-token",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["ci"], "verbs": ["create"]}]),
        "User jack",
    );
    // Impersonation restricted by resourceNames (the impersonation filter authorizes the
    // impersonated name): the superuser group, and a user who can read the Secret, are paths;
    // a user without one is not.
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "as-masters",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["groups"], "resourceNames": ["system:masters"], "verbs": ["impersonate"]},
                   {"apiGroups": [""], "resources": ["users"], "resourceNames": ["nobody"], "verbs": ["impersonate"]}]),
        ),
    );
    bind(&c, None, "kim", "ClusterRole", "as-masters", "User kim");
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "as-gina",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["users"], "resourceNames": ["gina"], "verbs": ["impersonate"]}]),
        ),
    );
    bind(&c, None, "lee", "ClusterRole", "as-gina", "User lee");
    put(
        &c,
        "clusterroles",
        "",
        cluster_role(
            "as-frank",
            json!({}),
            json!([{"apiGroups": [""], "resources": ["users"], "resourceNames": ["frank"], "verbs": ["impersonate"]}]),
        ),
    );
    bind(&c, None, "mo", "ClusterRole", "as-frank", "User mo");
    // No path: Secrets of another namespace; create with resourceNames; reading another Secret.
    bind(
        &c,
        Some("tenant-a"),
        "frank",
        "ClusterRole",
        "read-secrets",
        "User frank",
    );
    grant_in_antrea_ns(
        &c,
        "named-create",
        json!([{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"], "verbs": ["create"]}]),
        "User hank",
    );

    let (r, _, _) = audit(&c, &[]);
    let mut by_subject: std::collections::BTreeMap<String, &Value> = Default::default();
    for code in ["secret-readable-by", "key-reachable-via-rbac"] {
        for f in findings(&r, code) {
            let name = f["subject"]["name"].as_str().unwrap().to_owned();
            assert!(
                by_subject.insert(name.clone(), f).is_none(),
                "one finding per subject: {name}"
            );
        }
    }
    let paths = |who: &str| -> Vec<String> {
        by_subject[who]["details"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let expect = |who: &str, code: &str, sev: &str, path: &str| {
        let f = by_subject
            .get(who)
            .unwrap_or_else(|| panic!("no finding for {who}: {r:#}"));
        assert_eq!(f["code"], code, "{who}");
        assert_eq!(f["severity"], sev, "{who}: {f:#}");
        assert!(
            paths(who).contains(&path.to_owned()),
            "{who}: {:?}",
            paths(who)
        );
    };
    expect(
        "Group system:authenticated",
        "secret-readable-by",
        "critical",
        "read-secret",
    );
    expect(
        "Group system:masters",
        "secret-readable-by",
        "info",
        "read-secret",
    );
    assert!(by_subject["Group system:masters"]["details"]["expected_because"].is_string());
    expect("User gina", "secret-readable-by", "high", "read-secret");
    expect(
        "User dave",
        "key-reachable-via-rbac",
        "high",
        "create-deployments",
    );
    expect("User erin", "key-reachable-via-rbac", "high", "exec-agent");
    expect(
        "ServiceAccount monitoring/prometheus",
        "key-reachable-via-rbac",
        "high",
        "kubelet-proxy",
    );
    expect(
        "User ivan",
        "key-reachable-via-rbac",
        "high",
        "impersonate-users",
    );
    assert!(paths("User ivan").contains(&"impersonate-groups".to_owned()));
    expect(
        "ServiceAccount kube-system/ci",
        "key-reachable-via-rbac",
        "high",
        "create-pods",
    );
    expect(
        "User jack",
        "key-reachable-via-rbac",
        "medium",
        "token-for-account",
    );
    let hop = &by_subject["User jack"]["details"]["paths"][0];
    assert_eq!(hop["service_account"], "kube-system/ci");
    assert_eq!(
        hop["bindings"][0],
        format!("RoleBinding {NS}/ci-token -> Role ci-token")
    );
    expect(
        "User kim",
        "key-reachable-via-rbac",
        "high",
        "impersonate-groups",
    );
    assert_eq!(
        by_subject["User kim"]["details"]["paths"][0]["impersonates"],
        "Group system:masters"
    );
    assert_eq!(
        paths("User kim"),
        ["impersonate-groups"],
        "not as user nobody"
    );
    expect(
        "User lee",
        "key-reachable-via-rbac",
        "high",
        "impersonate-users",
    );
    assert_eq!(
        by_subject["User lee"]["details"]["paths"][0]["impersonates"],
        "User gina"
    );
    let admins = paths("Group system:masters");
    for p in [
        "read-secret",
        "create-pods",
        "exec-agent",
        "kubelet-proxy",
        "patch-agent-daemonset",
        "impersonate-users",
        "escalate-roles",
        "bind-clusterroles",
    ] {
        assert!(
            admins.contains(&p.to_owned()),
            "cluster-admin has {p}: {admins:?}"
        );
    }
    for nobody in [
        "User frank",
        "User hank",
        "User mo",
        "ServiceAccount kube-system/antrea-agent",
    ] {
        assert!(
            !by_subject.contains_key(nobody),
            "{nobody} has no path: {:#}",
            by_subject[nobody]
        );
    }
    assert_no_key("audit", r.to_string().as_bytes(), &[STRONG]);
}

/// Makes `pod` a Pod of the simulated cluster's antrea-agent DaemonSet (controller ownerReference
/// with the DaemonSet's uid), as the DaemonSet controller does.
fn owned_by_agent_daemonset(c: &Cluster, pod: &mut Value) {
    let uid = c
        .state
        .lock()
        .unwrap()
        .get("daemonsets", NS, "antrea-agent")
        .unwrap()["metadata"]["uid"]
        .clone();
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "antrea-agent", "uid": uid, "controller": true}]);
}

fn template(spec: Value) -> Value {
    json!({"metadata": {"labels": {"app": "x"}}, "spec": spec})
}

#[test]
fn workloads_that_reach_the_key_on_a_node() {
    let c = cluster(1, STRONG);
    let ns = "tenant-a";
    // Spellings of the run directory the API accepts.
    put(
        &c,
        "pods",
        ns,
        pod(ns, "slashes", json!({}), "worker-00", &["/var//run"]),
    );
    put(
        &c,
        "pods",
        ns,
        pod(ns, "dot", json!({}), "worker-00", &["/var/run/./antrea"]),
    );
    put(
        &c,
        "pods",
        ns,
        pod(
            ns,
            "dotdot",
            json!({}),
            "worker-00",
            &["/var/log/../run/antrea"],
        ),
    );
    // Labelled like Antrea in Antrea's namespace, but not owned by its DaemonSet.
    put(
        &c,
        "pods",
        NS,
        pod(
            NS,
            "antrea-agent-fake",
            json!({"app": "antrea", "component": "antrea-agent"}),
            "worker-00",
            &["/var/run/antrea"],
        ),
    );
    // Owned by Antrea's DaemonSet: Antrea's own.
    let mut real = pod(
        NS,
        "antrea-agent-real",
        json!({"app": "antrea", "component": "antrea-agent"}),
        "worker-00",
        &["/var/run/antrea"],
    );
    owned_by_agent_daemonset(&c, &mut real);
    put(&c, "pods", NS, real);
    // hostPID.
    let mut pid = pod(ns, "pid", json!({}), "worker-00", &[]);
    pid["spec"]["hostPID"] = json!(true);
    put(&c, "pods", ns, pid);
    // A Deployment whose Pods do not exist yet, mounting containerd's state.
    put(
        &c,
        "deployments",
        ns,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "scraper", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "ctr", "hostPath": {"path": "/run/containerd"}}]}))}}),
    );
    // A CronJob with a privileged container.
    put(
        &c,
        "cronjobs",
        ns,
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": ns},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": template(json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}))}}}}),
    );
    // A local PersistentVolume on the Docker state.
    put(
        &c,
        "persistentvolumes",
        "",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-docker"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/var/lib/docker"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-00"]}]}]}}}}),
    );
    put(
        &c,
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );

    let (r, _, _) = audit(&c, &[]);
    let subjects = |code: &str| -> Vec<String> {
        findings(&r, code)
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f["subject"]["kind"].as_str().unwrap(),
                    f["subject"]["name"].as_str().unwrap()
                )
            })
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        subjects("hostpath-exposes-antrea"),
        vec![
            format!("pod {NS}/antrea-agent-fake"),
            format!("pod {ns}/dot"),
            format!("pod {ns}/dotdot"),
            format!("pod {ns}/slashes"),
        ],
        "{r:#}"
    );
    assert_eq!(
        subjects("hostpath-exposes-runtime-state"),
        vec![
            format!("deployment {ns}/scraper"),
            "persistentvolume pv-docker".to_owned(),
            format!("pod {ns}/slashes"),
        ],
        "/var//run is /run, a parent of /run/containerd too"
    );
    assert_eq!(
        subjects("pod-privileged-or-hostpid"),
        vec![format!("cronjob {ns}/nightly"), format!("pod {ns}/pid")]
    );
    assert!(subjects("namespace-allows-hostpath").contains(&format!("namespace {ns}")));
    assert!(incomplete(&r).is_empty(), "{:?}", incomplete(&r));
}
