//! Question: is the agent's power over `pods/status` and `nodes/status` limited by Gatekeeper, as
//! Antrea's security guide asks? That takes all of: the ConstraintTemplate
//! `antreaagentstatusupdates`; a Constraint of kind `AntreaAgentStatusUpdates` matching Pods and
//! Nodes that enforces (`enforcementAction: deny`, not `dryrun` or `warn`); Gatekeeper's
//! validating webhook seeing `UPDATE` of `pods/status` and `nodes/status` and failing closed; and
//! no exemption of Antrea's or the control plane's namespace (Gatekeeper's Config, the webhook's
//! namespaceSelector, the Constraint's own match).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use kube::api::DynamicObject;
use serde_json::Value;

use super::authz::{allows, Request};
use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

/// The namespaces whose exemption matters: the control plane's, and Antrea's.
fn guarded_namespaces(cfg: &AuditConfig) -> Vec<String> {
    let mut v = vec!["kube-system".to_owned()];
    if cfg.namespace != "kube-system" {
        v.push(cfg.namespace.clone());
    }
    v
}

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let mut out = vec![];
    let template = snap.constraint_templates.as_ref().map(|l| {
        l.iter()
            .any(|t| t.metadata.name.as_deref() == Some("antreaagentstatusupdates"))
    });
    let matching: Option<Vec<&DynamicObject>> = snap
        .constraints
        .as_ref()
        .map(|l| l.iter().filter(|c| matches_pods_and_nodes(c)).collect());
    if template == Some(false) || matching.as_ref().is_some_and(|m| m.is_empty()) {
        let mut missing = vec![];
        if template == Some(false) {
            missing.push("ConstraintTemplate antreaagentstatusupdates");
        }
        if matching.as_ref().is_some_and(|m| m.is_empty()) {
            missing.push("a Constraint of kind AntreaAgentStatusUpdates matching Pods and Nodes");
        }
        out.push(Finding::new(Code::GatekeeperPolicyMissing, Severity::High, Subject::named("cluster", "gatekeeper"))
            .observed(format!("missing: {}", missing.join("; ")))
            .expected("the ConstraintTemplate and Constraint from Antrea's security guide")
            .remediation("install Gatekeeper and apply the antreaagentstatusupdates ConstraintTemplate and its Constraint (docs/security-guide in Antrea)"));
    }
    let guarded = guarded_namespaces(cfg);
    let mut enforcing = false;
    for c in matching.iter().flatten() {
        let problems = constraint_problems(c, &guarded);
        enforcing |= problems.iter().all(|(sev, _)| *sev < Severity::High);
        out.extend(problems.into_iter().map(|(sev, why)| {
            not_enforced(
                sev,
                "constraint",
                c.metadata.name.clone().unwrap_or_default(),
                why,
            )
        }));
    }
    let policy_present = template == Some(true) && enforcing;
    let webhook_ok = match &snap.webhooks {
        Some(list) => {
            let (findings, ok) = webhooks(list, snap, &guarded, policy_present);
            out.extend(findings);
            ok
        }
        None => false,
    };
    if let Some(configs) = &snap.gatekeeper_configs {
        out.extend(config_exemptions(configs, &guarded));
    }
    out.extend(agent_role(snap, cfg, policy_present && webhook_ok));
    out
}

fn not_enforced(sev: Severity, kind: &'static str, name: String, why: String) -> Finding {
    Finding::new(Code::GatekeeperPolicyNotEnforced, sev, Subject::named(kind, name))
        .observed(why)
        .expected("a Constraint with enforcementAction deny, seen by Gatekeeper's webhook (rules covering UPDATE of pods/status and nodes/status, failurePolicy Fail) in every namespace")
        .remediation("set enforcementAction: deny on the Constraint, failurePolicy: Fail on validation.gatekeeper.sh, and do not exempt kube-system (or Antrea's namespace) in Gatekeeper's Config, the webhook's namespaceSelector or the Constraint")
}

fn matches_pods_and_nodes(c: &DynamicObject) -> bool {
    let kinds = c.data["spec"]["match"]["kinds"].to_string();
    kinds.contains("\"Pod\"") && kinds.contains("\"Node\"")
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Gatekeeper's namespace patterns: exact, or a prefix ending in `*`.
fn namespace_pattern_matches(pattern: &str, ns: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ns.starts_with(prefix),
        None => pattern == ns,
    }
}

/// What keeps one Constraint from enforcing: its action, or its match leaving out a guarded
/// namespace.
fn constraint_problems(c: &DynamicObject, guarded: &[String]) -> Vec<(Severity, String)> {
    let spec = &c.data["spec"];
    let mut out = vec![];
    let action = spec["enforcementAction"].as_str().unwrap_or("deny");
    let denies = match action {
        "deny" => true,
        // Gatekeeper >= 3.16: per enforcement point; the webhook is validation.gatekeeper.sh.
        "scoped" => spec["scopedEnforcementActions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["action"] == "deny"
                    && s["enforcementPoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == "validation.gatekeeper.sh" || p["name"] == "*")
            }),
        _ => false,
    };
    if !denies {
        out.push((
            Severity::High,
            format!("enforcementAction {action}: violations are only recorded, nothing is denied"),
        ));
    }
    let excluded = strings(&spec["match"]["excludedNamespaces"]);
    let only = strings(&spec["match"]["namespaces"]);
    for ns in guarded {
        let left_out = excluded.iter().any(|p| namespace_pattern_matches(p, ns))
            || (!only.is_empty() && !only.iter().any(|p| namespace_pattern_matches(p, ns)));
        if left_out {
            out.push((Severity::Medium, format!("its match leaves out namespace {ns}: the agent may change the status of Pods there")));
        }
    }
    out
}

/// Gatekeeper's Config exempting a guarded namespace from the webhook (`processes` `*` or
/// `webhook`).
fn config_exemptions(configs: &[DynamicObject], guarded: &[String]) -> Vec<Finding> {
    let mut out = vec![];
    for c in configs {
        for m in c.data["spec"]["match"].as_array().into_iter().flatten() {
            let processes = strings(&m["processes"]);
            if !processes.iter().any(|p| *p == "*" || *p == "webhook") {
                continue;
            }
            let excluded = strings(&m["excludedNamespaces"]);
            for ns in guarded {
                if excluded.iter().any(|p| namespace_pattern_matches(p, ns)) {
                    let name = format!(
                        "{}/{}",
                        c.metadata.namespace.clone().unwrap_or_default(),
                        c.metadata.name.clone().unwrap_or_default()
                    );
                    out.push(not_enforced(
                        Severity::Medium,
                        "gatekeeper-config",
                        name,
                        format!("spec.match excludes namespace {ns} from the webhook (processes {processes:?}): the agent may change the status of Pods there"),
                    ));
                }
            }
        }
    }
    out
}

/// Gatekeeper's policy webhook: by its name, or by its service and path (`/v1/admit`; the
/// service's `/v1/admitlabel` webhook only guards namespace labels).
fn is_gatekeeper(h: &ValidatingWebhook) -> bool {
    h.name == "validation.gatekeeper.sh"
        || h.client_config.service.as_ref().is_some_and(|s| {
            s.name == "gatekeeper-webhook-service"
                && s.path.as_deref().is_none_or(|p| p == "/v1/admit")
        })
}

/// Whether `rule` sends `UPDATE` of `resource/status` (core group, v1) to the webhook. `*` covers
/// every resource but no subresource; `*/*` and `*/status` and `pods/*` cover the subresource.
fn covers(rule: &RuleWithOperations, resource: &str, namespaced: bool) -> bool {
    let ops = rule
        .operations
        .iter()
        .flatten()
        .any(|o| o == "UPDATE" || o == "*");
    let group = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g.is_empty() || g == "*");
    let version = rule
        .api_versions
        .iter()
        .flatten()
        .any(|v| v == "v1" || v == "*");
    let res = rule.resources.iter().flatten().any(|r| {
        let (base, sub) = r.split_once('/').unwrap_or((r, ""));
        (base == "*" || base == resource) && (sub == "*" || sub == "status")
    });
    let scope = match rule.scope.as_deref().unwrap_or("*") {
        "Namespaced" => namespaced,
        "Cluster" => !namespaced,
        _ => true,
    };
    ops && group && version && res && scope
}

/// Findings on Gatekeeper's webhooks, and whether one of them fully guards status updates.
fn webhooks(
    list: &[ValidatingWebhookConfiguration],
    snap: &Snapshot,
    guarded: &[String],
    policy_present: bool,
) -> (Vec<Finding>, bool) {
    let mut out = vec![];
    let mut any_ok = false;
    let mut seen = false;
    for w in list {
        let config = w.metadata.name.clone().unwrap_or_default();
        for h in w.webhooks.iter().flatten().filter(|h| is_gatekeeper(h)) {
            seen = true;
            let subject = format!("{config}/{}", h.name);
            let rules = h.rules.as_deref().unwrap_or_default();
            let missing: Vec<&str> = [
                ("pods/status", "pods", true),
                ("nodes/status", "nodes", false),
            ]
            .into_iter()
            .filter(|(_, res, namespaced)| !rules.iter().any(|r| covers(r, res, *namespaced)))
            .map(|(what, _, _)| what)
            .collect();
            let mut ok = missing.is_empty();
            if !missing.is_empty() {
                out.push(Finding::new(Code::GatekeeperWebhookSkipsSubresources, Severity::High, Subject::named("validatingwebhookconfiguration", subject.clone()))
                    .observed(format!("no rule sends UPDATE of {} to Gatekeeper (resources '*' covers no subresource)", missing.join(" or ")))
                    .expected("a rule with operations [UPDATE] (or '*') and resources ['*/*'] (or pods/status and nodes/status)")
                    .remediation("configure Gatekeeper's webhook to include subresources, e.g. helm value validatingWebhookCustomRules with resources ['*/*'] and operations [CREATE, UPDATE]")
                    .detail("uncovered", missing.clone()));
            }
            if h.failure_policy.as_deref() == Some("Ignore") {
                ok = false;
                out.push(not_enforced(Severity::Medium, "validatingwebhookconfiguration", subject.clone(),
                    "failurePolicy Ignore: when Gatekeeper is down or slow, every status update is admitted (fails open)".into()));
            }
            for ns in exempted_by_selector(h, snap, guarded) {
                ok = false;
                out.push(not_enforced(Severity::Medium, "validatingwebhookconfiguration", subject.clone(),
                    format!("its namespaceSelector does not select namespace {ns}: the agent may change the status of Pods there")));
            }
            any_ok |= ok;
        }
    }
    if !seen && policy_present {
        out.push(not_enforced(Severity::High, "cluster", "gatekeeper".into(),
            "the policy exists but no ValidatingWebhookConfiguration sends requests to Gatekeeper (validation.gatekeeper.sh)".into()));
    }
    (out, any_ok)
}

/// The guarded namespaces the webhook's namespaceSelector leaves out (only when the namespaces
/// were read; the API server labels each with `kubernetes.io/metadata.name`).
fn exempted_by_selector(h: &ValidatingWebhook, snap: &Snapshot, guarded: &[String]) -> Vec<String> {
    let (Some(sel), Some(namespaces)) = (&h.namespace_selector, &snap.namespaces) else {
        return vec![];
    };
    guarded
        .iter()
        .filter(|ns| {
            let mut labels: BTreeMap<String, String> = namespaces
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()))
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| ns.to_string());
            !super::selector::matches(sel, &labels)
        })
        .cloned()
        .collect()
}

/// The agent's ClusterRole: `patch` or `update` on `pods/status` / `nodes/status`.
fn agent_role(snap: &Snapshot, cfg: &AuditConfig, mitigated: bool) -> Vec<Finding> {
    let Some(agent) = snap
        .cluster_roles
        .iter()
        .flatten()
        .find(|r| r.metadata.name.as_deref() == Some(cfg.agent_cluster_role.as_str()))
    else {
        return vec![];
    };
    let rules = agent.rules.as_deref().unwrap_or_default();
    let mut granted = vec![];
    for resource in ["pods", "nodes"] {
        for verb in ["patch", "update"] {
            let req = Request {
                verb,
                group: "",
                resource,
                subresource: "status",
                name: "",
            };
            if rules.iter().any(|r| allows(r, &req)) {
                granted.push(format!("{verb} {resource}/status"));
            }
        }
    }
    if granted.is_empty() {
        return vec![];
    }
    vec![Finding::new(Code::AgentCanPatchStatus, if mitigated { Severity::Info } else { Severity::Medium }, Subject::named("clusterrole", cfg.agent_cluster_role.clone()))
        .observed(granted.join(", "))
        .expected(if mitigated { "the Gatekeeper policy limits it to annotations (present and enforced)" } else { "the Gatekeeper policy limiting it to annotations, enforced" })
        .remediation(if mitigated { "nothing to do" } else { "apply and enforce Antrea's AntreaAgentStatusUpdates Gatekeeper policy (see gatekeeper-policy-missing and gatekeeper-policy-not-enforced)" })
        .detail("granted", granted)]
}
