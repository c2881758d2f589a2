//! Question: is the agent's power over `pods/status` and `nodes/status` limited by Gatekeeper, as
//! Antrea's security guide asks (ConstraintTemplate `antreaagentstatusupdates`, a Constraint of
//! kind `AntreaAgentStatusUpdates`, and a webhook that sees the status subresources)?

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let mut out = vec![];
    let has_template = snap.constraint_templates.as_ref().map(|l| {
        l.iter()
            .any(|t| t.metadata.name.as_deref() == Some("antreaagentstatusupdates"))
    });
    let has_constraint = snap.constraints.as_ref().map(|l| {
        l.iter().any(|c| {
            let kinds = c.data["spec"]["match"]["kinds"].to_string();
            kinds.contains("\"Pod\"") && kinds.contains("\"Node\"")
        })
    });
    let gatekeeper_ok = has_template == Some(true) && has_constraint == Some(true);
    if has_template == Some(false) || has_constraint == Some(false) {
        let mut missing = vec![];
        if has_template == Some(false) {
            missing.push("ConstraintTemplate antreaagentstatusupdates");
        }
        if has_constraint == Some(false) {
            missing.push("a Constraint of kind AntreaAgentStatusUpdates matching Pods and Nodes");
        }
        out.push(Finding::new(Code::GatekeeperPolicyMissing, Severity::High, Subject::named("cluster", "gatekeeper"))
            .observed(format!("missing: {}", missing.join("; ")))
            .expected("the ConstraintTemplate and Constraint from Antrea's security guide")
            .remediation("install Gatekeeper and apply the antreaagentstatusupdates ConstraintTemplate and its Constraint (docs/security-guide in Antrea)"));
    }
    out.extend(webhook(snap));
    out.extend(agent_role(snap, cfg, gatekeeper_ok));
    out
}

fn webhook(snap: &Snapshot) -> Vec<Finding> {
    let mut out = vec![];
    for w in snap.webhooks.iter().flatten().filter(|w| {
        w.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.contains("gatekeeper"))
    }) {
        let name = w.metadata.name.clone().unwrap_or_default();
        let covers = w.webhooks.iter().flatten().any(|h| {
            h.rules.iter().flatten().any(|r| {
                r.resources
                    .iter()
                    .flatten()
                    .any(|res| res == "*/*" || res == "pods/status")
            })
        });
        if !covers {
            out.push(Finding::new(Code::GatekeeperWebhookSkipsSubresources, Severity::High, Subject::named("validatingwebhookconfiguration", name))
                .observed("no rule covers subresources (resources lists '*' but not '*/*')")
                .expected("a rule with resources: ['*/*'] (or pods/status and nodes/status)")
                .remediation("configure Gatekeeper's webhook to include subresources, e.g. helm value validatingWebhookCustomRules with resources ['*/*']"));
        }
    }
    out
}

fn grants(rules: &[PolicyRule], verb: &str, resource: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .iter()
            .flatten()
            .any(|g| g.is_empty() || g == "*")
            && r.resources
                .iter()
                .flatten()
                .any(|x| x == resource || x == "*" || x == "*/status")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

fn agent_role(snap: &Snapshot, cfg: &AuditConfig, gatekeeper_ok: bool) -> Vec<Finding> {
    let Some(agent) = snap
        .cluster_roles
        .iter()
        .flatten()
        .find(|r| r.metadata.name.as_deref() == Some(cfg.agent_cluster_role.as_str()))
    else {
        return vec![];
    };
    let rules = agent.rules.clone().unwrap_or_default();
    let which: Vec<&str> = ["pods/status", "nodes/status"]
        .into_iter()
        .filter(|res| grants(&rules, "patch", res))
        .collect();
    if which.is_empty() {
        return vec![];
    }
    vec![Finding::new(
        Code::AgentCanPatchStatus,
        if gatekeeper_ok {
            Severity::Info
        } else {
            Severity::Medium
        },
        Subject::named("clusterrole", cfg.agent_cluster_role.clone()),
    )
    .observed(format!("patch on {}", which.join(", ")))
    .expected(if gatekeeper_ok {
        "the Gatekeeper policy limits it to annotations (present)"
    } else {
        "the Gatekeeper policy limiting it to annotations"
    })
    .remediation(if gatekeeper_ok {
        "nothing to do"
    } else {
        "apply Antrea's AntreaAgentStatusUpdates Gatekeeper policy (see gatekeeper-policy-missing)"
    })]
}
