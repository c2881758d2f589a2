//! The `--nodes` fan-out: `psk-guard check` on every Ready node through one pinned Job per node,
//! the node reports merged into the audit's report (subjects `node:path`, `details.node`).

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use serde_json::json;

use super::AuditConfig;
use crate::cluster::jobs::{self, NodeJob, Outcome};
use crate::report::{Code, Finding, Report, Severity, Subject};

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One pinned `check` Job per Ready node (at most `parallelism` at a time), merged.
pub async fn fan_out(cfg: &AuditConfig, client: &Client, nodes: &[Node], report: &mut Report) {
    let mut sections = serde_json::Map::new();
    let (ready_nodes, not_ready): (Vec<&Node>, Vec<&Node>) = nodes.iter().partition(|n| ready(n));
    for n in not_ready {
        let name = n.metadata.name.clone().unwrap_or_default();
        report.push(Finding::new(Code::NodeNotChecked, Severity::Medium, Subject::named("node", name.clone())).observed("NotReady").expected("a Ready node that runs the check Job").remediation("bring the node back, then run psk-guard audit --nodes again (or psk-guard check on it)"));
        report.not_checked(format!("node {name}"), "NotReady");
        sections.insert(name, json!({"status": "not-ready"}));
    }
    let names: Vec<String> = ready_nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let run_id = hex::encode(rand::random::<[u8; 4]>());
    let mut args: Vec<String> = [
        "check",
        "-o",
        "json",
        "--fail-on",
        "never",
        // The node Job mounts only /var/run/antrea and runs in its own process namespace: the
        // log directory and ovsdb-server's /proc entry are out of its sight.
        "--no-logs",
        "--no-proc",
        "--db",
        "unix:/var/run/antrea/openvswitch/db.sock",
        "--run-dir",
        "/var/run/antrea",
    ]
    .map(String::from)
    .to_vec();
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
    };
    let total = names.len();
    let mut done = 0;
    for chunk in names.chunks(cfg.parallelism.max(1)) {
        for (node, outcome) in jobs::run_on_nodes(client, &job, chunk).await {
            done += 1;
            crate::report::progress("audit", &format!("{done}/{total} nodes checked"));
            let parsed = match &outcome {
                Outcome::Succeeded(log) | Outcome::Failed(log) => {
                    serde_json::from_str::<serde_json::Value>(log).ok()
                }
                _ => None,
            };
            match parsed {
                Some(r) => {
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
                        .detail("node", node.clone());
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
                        node.clone(),
                        json!({"status": "checked", "summary": r["summary"]}),
                    );
                }
                None => {
                    let why = match outcome {
                        Outcome::TimedOut => "the check Job timed out".to_owned(),
                        Outcome::NotCreated(e) => {
                            format!("the check Job could not be created: {e}")
                        }
                        _ => "the check Job failed without a report".to_owned(),
                    };
                    report.push(Finding::new(Code::NodeNotChecked, Severity::Medium, Subject::named("node", node.clone())).observed(why.clone()).expected("the node's check report").remediation("look at the Job's pod on that node, then run psk-guard audit --nodes again"));
                    report.not_checked(format!("node {node}"), why.clone());
                    sections.insert(node.clone(), json!({"status": "failed", "reason": why}));
                }
            }
        }
    }
    report.set_data(json!({"nodes": sections, "nodes_total": nodes.len()}));
}
