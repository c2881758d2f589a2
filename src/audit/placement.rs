//! Question: does antrea-controller run on a secure Node (a control-plane Node, or one named with
//! `--secure-node`), as Antrea's security guide recommends?

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    // Without the Nodes we cannot tell a control-plane Node from another: no finding.
    let (Some(pods), Some(nodes)) = (&snap.pods, &snap.nodes) else {
        return vec![];
    };
    let (label_k, label_v) = cfg
        .controller_label
        .split_once('=')
        .unwrap_or(("component", "antrea-controller"));
    let mut out = vec![];
    for p in pods.iter().filter(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(label_k))
            .map(String::as_str)
            == Some(label_v)
    }) {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let control_plane = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
            .and_then(|n| n.metadata.labels.as_ref())
            .is_some_and(|l| {
                l.contains_key("node-role.kubernetes.io/control-plane")
                    || l.contains_key("node-role.kubernetes.io/master")
            });
        if !control_plane && !cfg.secure_nodes.contains(&node) {
            let name = format!(
                "{}/{}",
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default()
            );
            out.push(Finding::new(Code::ControllerNotOnSecureNode, Severity::Medium, Subject::named("pod", name))
                .observed(format!("runs on {node}, not a control-plane node"))
                .expected("a control-plane Node, or one named with --secure-node")
                .remediation("add a nodeSelector/toleration for node-role.kubernetes.io/control-plane to the antrea-controller Deployment"));
        }
    }
    out
}
