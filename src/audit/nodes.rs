//! The `--nodes` fan-out: `psk-guard check` on every Ready Linux node through one pinned Job per
//! node, the node reports merged into the audit's report (subjects `node:path`, `details.node`).
//!
//! As for `rotate`, only Linux nodes get a Job (the Job is a Linux image with a hostPath; Antrea's
//! Windows agents share the Linux agents' labels, and Antrea has no IPsec on Windows nodes), and
//! the Job namespace's Pod Security level is checked before any Job is created: a level that
//! rejects the hostPath would otherwise show as every node's Job never starting.

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Client;
use serde_json::json;

use super::AuditConfig;
use crate::cluster::health;
use crate::cluster::jobs::{self, NodeJob, NotStarted, Outcome, RefusedBy, LOG_DIR};
use crate::report::{Code, Finding, Report, Severity, Subject};

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node's `kubernetes.io/os` label (set by every kubelet on registration), if any.
fn os(n: &Node) -> Option<&str> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"))
        .map(String::as_str)
}

/// One pinned `check` Job per Ready Linux node (at most `parallelism` at a time), merged.
/// `namespaces` (from the snapshot, None when unreadable) gives the Job namespace's Pod Security
/// level.
pub async fn fan_out(
    cfg: &AuditConfig,
    client: &Client,
    nodes: &[Node],
    namespaces: Option<&[Namespace]>,
    report: &mut Report,
) {
    let mut sections = serde_json::Map::new();
    let names = targets(nodes, &mut sections, report);
    let job_ns = namespaces.and_then(|all| {
        all.iter()
            .find(|ns| ns.metadata.name.as_deref() == Some(&cfg.job_namespace))
    });
    match job_ns.and_then(health::rejecting_level) {
        Some(level) => refuse_pod_security(cfg, &level, names, &mut sections, report),
        None => run_jobs(cfg, client, &names, &mut sections, report).await,
    }
    report.set_data(json!({"nodes": sections, "nodes_total": nodes.len()}));
}

/// The names of the Ready Linux nodes; the others are recorded: a non-Linux node gets no Job
/// (status `not-linux`), a NotReady one is a `node-not-checked` finding.
fn targets(
    nodes: &[Node],
    sections: &mut serde_json::Map<String, serde_json::Value>,
    report: &mut Report,
) -> Vec<String> {
    let mut names = vec![];
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        if os(n) != Some("linux") {
            sections.insert(
                name,
                json!({"status": "not-linux", "os": os(n).unwrap_or("unset")}),
            );
        } else if !ready(n) {
            report.push(Finding::new(Code::NodeNotChecked, Severity::Medium, Subject::named("node", name.clone())).observed("NotReady").expected("a Ready node that runs the check Job").remediation("bring the node back, then run psk-guard audit --nodes again (or psk-guard check on it)"));
            report.not_checked(format!("node {name}"), "NotReady");
            sections.insert(name, json!({"status": "not-ready"}));
        } else {
            names.push(name);
        }
    }
    names
}

/// The Job namespace's Pod Security level rejects the check Jobs' hostPath: no Job is created,
/// and every target node is recorded as not checked, with the fix.
fn refuse_pod_security(
    cfg: &AuditConfig,
    level: &str,
    names: Vec<String>,
    sections: &mut serde_json::Map<String, serde_json::Value>,
    report: &mut Report,
) {
    let problem = health::pod_security_problem(&cfg.job_namespace, level);
    let fix = health::pod_security_fix(&cfg.job_namespace);
    report.not_checked(
        "nodes",
        format!("{problem}, so no check Job was created: {fix}"),
    );
    for node in names {
        report.push(
            Finding::new(
                Code::NodeNotChecked,
                Severity::Medium,
                Subject::named("node", node.clone()),
            )
            .observed(format!(
                "no check Job: Pod Security level {level} of namespace {} rejects its hostPath",
                cfg.job_namespace
            ))
            .expected("a Ready node that runs the check Job")
            .remediation(fix.clone()),
        );
        sections.insert(
            node,
            json!({"status": "not-checked", "reason": "pod-security"}),
        );
    }
}

/// Runs the check Jobs, `parallelism` at a time, and merges each node's result.
async fn run_jobs(
    cfg: &AuditConfig,
    client: &Client,
    names: &[String],
    sections: &mut serde_json::Map<String, serde_json::Value>,
    report: &mut Report,
) {
    let run_id = hex::encode(rand::random::<[u8; 4]>());
    let mut args: Vec<String> = [
        "check",
        "-o",
        "json",
        "--fail-on",
        "never",
        // The node Job mounts /var/run/antrea and the log directory (read-only), and runs in its
        // own process namespace: ovsdb-server's /proc entry is out of its sight (its remotes are
        // asked of ovsdb-server over its control socket).
        "--no-proc",
        "--db",
        "unix:/var/run/antrea/openvswitch/db.sock",
        "--run-dir",
        "/var/run/antrea",
    ]
    .map(String::from)
    .to_vec();
    match cfg.logs {
        true => args.extend(["--log-dir".to_owned(), LOG_DIR.to_owned()]),
        false => {
            args.push("--no-logs".to_owned());
            report.not_checked(
                "nodes: keys in log files",
                format!("--no-logs: the nodes' {LOG_DIR} was not searched"),
            );
        }
    }
    args.extend(["--fingerprint-salt".to_owned(), run_id.clone()]);
    let job = NodeJob {
        namespace: cfg.job_namespace.clone(),
        image: cfg.image.clone(),
        purpose: "audit",
        run_id,
        args,
        env_from_secret: None,
        service_account: cfg.service_account.clone(),
        timeout: cfg.job_timeout,
        logs: cfg.logs,
        barrier: false,
    };
    let total = names.len();
    let mut done = 0;
    for chunk in names.chunks(cfg.parallelism.max(1)) {
        for (node, outcome) in jobs::run_on_nodes(client, &job, chunk).await {
            done += 1;
            crate::report::progress("audit", &format!("{done}/{total} nodes checked"));
            merge(cfg, &node, &outcome, sections, report);
        }
    }
}

/// Why a node has no report, what to do about it, and the short reason in `data.nodes`.
fn no_report(cfg: &AuditConfig, node: &str, outcome: &Outcome, why: String) -> [String; 3] {
    const LOOK: &str = "look at the Job's pod on that node, then run psk-guard audit --nodes again";
    let again = "then run psk-guard audit --nodes again";
    let plain = |observed: String| [observed.clone(), LOOK.into(), observed];
    match outcome {
        Outcome::TimedOut => plain("the check Job timed out".into()),
        Outcome::NotCreated(e) => plain(format!("the check Job could not be created: {e}")),
        Outcome::NotStarted(NotStarted::Refused { message, by: RefusedBy::PodSecurity }) => [
            format!("Pod Security admission refused the check Job's pod: {message}"),
            format!("{}; without an enforce label on the namespace, the cluster's default level (the PodSecurity admission configuration) applies: label it as shown, or exempt the namespace there; {again}", health::pod_security_fix(&cfg.job_namespace)),
            "pod-security".into(),
        ],
        Outcome::NotStarted(NotStarted::Refused {
            message,
            by: RefusedBy::MissingServiceAccount,
        }) => [
            format!("the check Job's pod was refused at creation: {message}"),
            format!("the check Jobs run as service account {}/{}: create it (kubectl apply -f docs/deploy/serviceaccounts.yaml creates psk-guard-node), or name an existing one with --service-account; {again}", cfg.job_namespace, cfg.service_account),
            "no-service-account".into(),
        ],
        Outcome::NotStarted(NotStarted::Refused { message, .. }) => [
            format!("the check Job's pod was refused at creation: {message}"),
            format!("an admission policy or webhook refuses it: admit psk-guard's node Jobs (docs/deploy/admission-policy.yaml describes them), {again}"),
            "refused".into(),
        ],
        Outcome::NotStarted(NotStarted::HostPath { path, message }) if path == LOG_DIR => [
            format!("{LOG_DIR} does not exist on node {node} (or is not a directory), so the kubelet cannot start the check Job's pod: {message}"),
            format!("antrea-agent creates {LOG_DIR} on every node it runs on: it does not run on {node}, or logs elsewhere there. psk-guard creates nothing on a node: rerun with --no-logs (the nodes are checked without their logs), or run psk-guard check on {node} with --log-dir pointing at its logs"),
            "no-log-dir".into(),
        ],
        Outcome::NotStarted(NotStarted::HostPath { path, message }) => [
            format!("{path} does not exist on node {node} (or is not a directory), so the kubelet cannot start the check Job's pod: {message}"),
            format!("antrea-agent creates {path} on every node it runs on: check that it runs on {node}, {again}"),
            "no-run-dir".into(),
        ],
        _ => plain(format!("the check Job failed without a report: {why}")),
    }
}

/// Merges one node's result into the report, or records why there is none.
fn merge(
    cfg: &AuditConfig,
    node: &str,
    outcome: &Outcome,
    sections: &mut serde_json::Map<String, serde_json::Value>,
    report: &mut Report,
) {
    let r = match outcome.result() {
        Ok(r) => r,
        Err(why) => {
            let [observed, fix, reason] = no_report(cfg, node, outcome, why);
            report.push(
                Finding::new(
                    Code::NodeNotChecked,
                    Severity::Medium,
                    Subject::named("node", node),
                )
                .observed(observed.clone())
                .expected("the node's check report")
                .remediation(fix),
            );
            report.not_checked(format!("node {node}"), observed);
            sections.insert(
                node.to_owned(),
                json!({"status": "failed", "reason": reason}),
            );
            return;
        }
    };
    for f in r["findings"].as_array().cloned().unwrap_or_default() {
        let code = Code::ALL.iter().copied().find(|c| f["code"] == c.id());
        let (Some(code), Some(sev)) = (
            code,
            serde_json::from_value::<Severity>(f["severity"].clone()).ok(),
        ) else {
            continue;
        };
        let mut merged = Finding::new(
            code,
            sev,
            Subject::named(
                "node-path",
                format!("{node}:{}", f["subject"]["name"].as_str().unwrap_or("")),
            ),
        )
        .observed(f["observed"].as_str().unwrap_or("").to_owned())
        .expected(f["expected"].as_str().unwrap_or("").to_owned())
        .remediation(f["remediation"].as_str().unwrap_or("").to_owned())
        .detail("node", node.to_owned());
        if let Some(d) = f["details"].as_object() {
            for (k, v) in d {
                merged = merged.detail(k, v.clone());
            }
        }
        report.push(merged);
    }
    for i in r["incomplete"].as_array().cloned().unwrap_or_default() {
        report.not_checked(
            format!("node {node}: {}", i["check"].as_str().unwrap_or("")),
            i["reason"].as_str().unwrap_or("").to_owned(),
        );
    }
    sections.insert(
        node.to_owned(),
        json!({"status": "checked", "summary": r["summary"]}),
    );
}
