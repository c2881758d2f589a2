//! `psk-guard audit` against the API test server seeded with compliant and non-compliant objects,
//! and `audit --nodes` across simulated nodes (one NotReady, one whose Job fails).

use std::time::Duration;

use serde_json::{json, Value};

use crate::output::assert_no_key;
use crate::sim::{Cluster, Options2, NS};

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
    let mut labels = json!({"kubernetes.io/hostname": name});
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
    put(
        &c,
        "pods",
        NS,
        pod(
            NS,
            "antrea-agent-x",
            json!({"app": "antrea", "component": "antrea-agent"}),
            "cp-0",
            &["/var/run/antrea"],
        ),
    );
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
                      "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*", "*/*"]}]}]}),
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
    assert!(
        c.state.lock().unwrap().list("jobs", NS).is_empty(),
        "jobs cleaned up"
    );
    crate::harness::assert_used_is_declared(
        &c.state.lock().unwrap().used,
        &[
            psk_guard::audit::PERMISSIONS,
            psk_guard::audit::NODE_PERMISSIONS,
        ],
        "audit",
    );
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
