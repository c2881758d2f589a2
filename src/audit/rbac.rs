//! Question: who can read the key through RBAC?

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject as RbacSubject};
use serde_json::json;

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

fn rule_reads_secret(r: &PolicyRule, secret: &str) -> Option<Vec<String>> {
    let groups = r.api_groups.clone().unwrap_or_default();
    let resources = r.resources.clone().unwrap_or_default();
    let names = r.resource_names.clone().unwrap_or_default();
    let g = groups.iter().any(|g| g.is_empty() || g == "*");
    let res = resources.iter().any(|x| x == "secrets" || x == "*");
    let n = names.is_empty() || names.iter().any(|x| x == secret);
    let verbs: Vec<String> = r
        .verbs
        .iter()
        .filter(|v| ["get", "list", "watch", "*"].contains(&v.as_str()))
        .cloned()
        .collect();
    (g && res && n && !verbs.is_empty()).then_some(verbs)
}

fn rules_read_secret(rules: &[PolicyRule], secret: &str) -> Vec<String> {
    let mut v: BTreeSet<String> = BTreeSet::new();
    for r in rules {
        if let Some(verbs) = rule_reads_secret(r, secret) {
            v.extend(verbs);
        }
    }
    v.into_iter().collect()
}

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let role_verbs = |kind: &str, name: &str| -> Vec<String> {
        let rules = match kind {
            "ClusterRole" => snap
                .cluster_roles
                .iter()
                .flatten()
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .and_then(|r| r.rules.clone()),
            _ => snap
                .roles
                .iter()
                .flatten()
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .and_then(|r| r.rules.clone()),
        };
        rules_read_secret(&rules.unwrap_or_default(), &cfg.secret)
    };
    let mut add = |binding: String, kind: &str, role: &str, subjects: &Option<Vec<RbacSubject>>| {
        let verbs = role_verbs(kind, role);
        if verbs.is_empty() {
            return;
        }
        for s in subjects.iter().flatten() {
            let who = match &s.namespace {
                Some(ns) if s.kind == "ServiceAccount" => format!("ServiceAccount {ns}/{}", s.name),
                _ => format!("{} {}", s.kind, s.name),
            };
            readers
                .entry(who)
                .or_default()
                .push(format!("{binding} -> {kind} {role} ({})", verbs.join(",")));
        }
    };
    for b in snap.role_bindings.iter().flatten() {
        let name = b.metadata.name.clone().unwrap_or_default();
        add(
            format!("RoleBinding {}/{name}", cfg.namespace),
            &b.role_ref.kind,
            &b.role_ref.name,
            &b.subjects,
        );
    }
    for b in snap.cluster_role_bindings.iter().flatten() {
        let name = b.metadata.name.clone().unwrap_or_default();
        add(
            format!("ClusterRoleBinding {name}"),
            &b.role_ref.kind,
            &b.role_ref.name,
            &b.subjects,
        );
    }
    readers
        .into_iter()
        .map(|(who, via)| {
            let system = who.contains("system:") || who == "Group system:masters";
            Finding::new(
                Code::SecretReadableBy,
                if system {
                    Severity::Info
                } else {
                    Severity::Medium
                },
                Subject::named("rbac-subject", who),
            )
            .observed(format!(
                "can read secret {}/{} through {}",
                cfg.namespace,
                cfg.secret,
                via.join("; ")
            ))
            .expected("only the subjects that need the key (Antrea's own and psk-guard's rotation)")
            .remediation(
                "remove the binding, or scope the Role to other Secrets with resourceNames",
            )
            .detail("via", json!(via))
        })
        .collect()
}
