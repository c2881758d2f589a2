//! Question: who can obtain the key through RBAC, and how?
//!
//! [`KEY_PATHS`] is the one table of verb paths to the key (house-style rule 8: a new path is a
//! new row); [`paths_of`] applies it to every binding, with the RBAC authorizer's matching
//! ([`authz`](super::authz)): wildcards, subresources, resourceNames, Roles and ClusterRoles
//! (aggregated ones included), RoleBindings (their namespace only) and ClusterRoleBindings.
//!
//! Decisions, stated once:
//! - `list`/`watch` with `resourceNames` naming the Secret count as reading it: the API server
//!   authorizes a list or watch with the field selector `metadata.name=<secret>` as a request for
//!   that name (k8s.io/apiserver RequestInfoFactory), so `kubectl get secret X --watch` works.
//! - `create` never carries a name at authorization time, so a rule with `resourceNames` never
//!   grants a `create` path.
//! - Service-account hops are followed one level deep: a subject that can get a token for, run a
//!   Pod as, or impersonate a service account that itself has a direct path gets that path
//!   through the account; an account that only has hops is not followed further.
//! - Impersonation of users and groups is a path when unrestricted, or when its resourceNames
//!   name `system:masters` or a user/group that itself has a direct path (the impersonation
//!   filter authorizes `impersonate` on `users`/`groups` with the impersonated name:
//!   k8s.io/apiserver pkg/endpoints/filters/impersonation.go); the one hopped to is named.
//! - One subject is one finding, with every path, verb and binding in its details. Groups that
//!   hold every user or every service account (`system:authenticated`, `system:unauthenticated`,
//!   `system:serviceaccounts[:ns]`, user `system:anonymous`) are critical; only the control-plane
//!   identities listed in [`CONTROL_PLANE`], which must reach the key, are info, saying why.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Subject as RbacSubject};
use serde_json::json;

use super::authz::{allows, Request};
use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

/// Where a binding must grant a rule for the path to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In Antrea's namespace (a RoleBinding there, or a ClusterRoleBinding).
    AntreaNamespace,
    /// Cluster-wide (only a ClusterRoleBinding grants cluster-scoped resources).
    Cluster,
    /// In the namespace of a service account that has a direct path (a one-level hop).
    AccountNamespace,
}

/// Which object name a request of the path carries (what `resourceNames` must include).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// No name: create, or a name we cannot know (a rule with resourceNames does not match).
    Unnamed,
    /// The Secret.
    Secret,
    /// The agent DaemonSet, `antrea-agent`.
    AgentDaemonSet,
    /// Any Pod in Antrea's namespace.
    AntreaPods,
    /// Any Node.
    Nodes,
    /// The service account hopped to.
    Account,
    /// Impersonation of a named user (or group) that has a direct path to the key, or of the
    /// superuser group `system:masters`: a rule restricted by resourceNames to such a name is a
    /// path (`kubectl --as=x --as-group=system:masters`).
    Identity(&'static str),
}

/// One verb path to the key.
#[derive(Debug, Clone, Copy)]
pub struct KeyPath {
    pub id: &'static str,
    /// Any one of these verbs opens the path.
    pub verbs: &'static [&'static str],
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub scope: Scope,
    pub names: Names,
    pub severity: Severity,
    pub explanation: &'static str,
}

const fn row(
    id: &'static str,
    verbs: &'static [&'static str],
    (group, resource, subresource): (&'static str, &'static str, &'static str),
    scope: Scope,
    names: Names,
    severity: Severity,
    explanation: &'static str,
) -> KeyPath {
    KeyPath {
        id,
        verbs,
        group,
        resource,
        subresource,
        scope,
        names,
        severity,
        explanation,
    }
}

use Names::*;
use Scope::*;
use Severity::{High, Medium};

const WORKLOAD: &str = "creates a workload in Antrea's namespace whose Pods mount the Secret or take the key as an environment variable";

/// Every RBAC path to the key, one row each.
pub const KEY_PATHS: &[KeyPath] = &[
    row("read-secret", &["get", "list", "watch"], ("", "secrets", ""), AntreaNamespace, Secret, High,
        "reads the Secret (list and watch too: with resourceNames through the field selector metadata.name)"),
    row("create-pods", &["create"], ("", "pods", ""), AntreaNamespace, Unnamed, High,
        "runs a Pod in Antrea's namespace that mounts the Secret or takes the key as an environment variable"),
    row("create-deployments", &["create"], ("apps", "deployments", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    row("create-daemonsets", &["create"], ("apps", "daemonsets", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    row("create-statefulsets", &["create"], ("apps", "statefulsets", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    row("create-replicasets", &["create"], ("apps", "replicasets", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    row("create-jobs", &["create"], ("batch", "jobs", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    row("create-cronjobs", &["create"], ("batch", "cronjobs", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    row("create-replicationcontrollers", &["create"], ("", "replicationcontrollers", ""), AntreaNamespace, Unnamed, High, WORKLOAD),
    // `get` on pods/exec is an exec path: a WebSocket exec starts as an HTTP GET, which the API
    // server authorizes as `get` (kubernetes/kubernetes#78741; kubectl >= 1.30 execs over WebSocket
    // with GET, #133515). KEP-4006's AuthorizePodWebsocketUpgradeCreatePermission gate (beta in
    // 1.35) also requires `create`, so on older servers `get` alone suffices. The same holds for
    // nodes/proxy GET at the kubelet's /exec (kubernetes/kubernetes#136550).
    row("exec-agent", &["create", "get"], ("", "pods", "exec"), AntreaNamespace, AntreaPods, High,
        "runs `printenv ANTREA_IPSEC_PSK` in the agent container (get suffices where the API server still authorizes WebSocket exec as get)"),
    row("attach-agent", &["create", "get"], ("", "pods", "attach"), AntreaNamespace, AntreaPods, Medium,
        "attaches to the agent container's output, which carries the key when the agent logs at verbosity 4 or more"),
    row("debug-agent", &["patch", "update"], ("", "pods", "ephemeralcontainers"), AntreaNamespace, AntreaPods, High,
        "adds an ephemeral container to the agent Pod (kubectl debug --target) that reads the agent's environment"),
    row("kubelet-proxy", &["get", "create"], ("", "nodes", "proxy"), Cluster, Nodes, High,
        "reaches the kubelet API through the API server and execs into the agent on any node"),
    row("patch-agent-daemonset", &["patch", "update"], ("apps", "daemonsets", ""), AntreaNamespace, AgentDaemonSet, High,
        "changes the agent's Pod template (a container or command that prints the key)"),
    row("impersonate-users", &["impersonate"], ("", "users", ""), Cluster, Identity("User"), High,
        "acts as a user that has a path to the key (any user, when not restricted by resourceNames)"),
    row("impersonate-groups", &["impersonate"], ("", "groups", ""), Cluster, Identity("Group"), High,
        "acts as a group that has a path to the key, system:masters included (any group, when not restricted by resourceNames)"),
    row("escalate-roles", &["escalate"], ("rbac.authorization.k8s.io", "roles", ""), AntreaNamespace, Unnamed, Medium,
        "grants itself any permission in Antrea's namespace by editing a Role (needs update on roles too)"),
    row("escalate-clusterroles", &["escalate"], ("rbac.authorization.k8s.io", "clusterroles", ""), AntreaNamespace, Unnamed, Medium,
        "grants itself any permission by editing a ClusterRole (needs update on clusterroles too)"),
    row("bind-roles", &["bind"], ("rbac.authorization.k8s.io", "roles", ""), AntreaNamespace, Unnamed, Medium,
        "binds any Role to itself in Antrea's namespace (needs create on rolebindings too)"),
    row("bind-clusterroles", &["bind"], ("rbac.authorization.k8s.io", "clusterroles", ""), AntreaNamespace, Unnamed, Medium,
        "binds any ClusterRole to itself, cluster-admin included (needs create on (cluster)rolebindings too)"),
    row("token-for-account", &["create"], ("", "serviceaccounts", "token"), AccountNamespace, Account, Medium,
        "gets a token for a service account that has a path to the key"),
    row("pod-as-account", &["create"], ("", "pods", ""), AccountNamespace, Unnamed, Medium,
        "runs a Pod as a service account (of that namespace) that has a path to the key"),
    row("impersonate-account", &["impersonate"], ("", "serviceaccounts", ""), AccountNamespace, Account, Medium,
        "acts as a service account that has a path to the key"),
];

/// Identities that must reach the key (the control plane, and psk-guard's rotation): info.
/// (kind, name with `{ns}` for Antrea's namespace, why).
pub const CONTROL_PLANE: &[(&str, &str, &str)] = &[
    (
        "Group",
        "system:masters",
        "the cluster's superusers (cluster-admin), by design",
    ),
    (
        "User",
        "system:kube-controller-manager",
        "kube-controller-manager, whose controllers create every workload's Pods",
    ),
    (
        "ServiceAccount",
        "kube-system/generic-garbage-collector",
        "the garbage collector, which reads every kind",
    ),
    (
        "ServiceAccount",
        "kube-system/namespace-controller",
        "the namespace controller, which reads and deletes every kind",
    ),
    (
        "ServiceAccount",
        "kube-system/resourcequota-controller",
        "the resource quota controller, which lists every kind",
    ),
    (
        "ServiceAccount",
        "kube-system/clusterrole-aggregation-controller",
        "fills aggregated ClusterRoles (escalate)",
    ),
    (
        "ServiceAccount",
        "kube-system/daemon-set-controller",
        "creates DaemonSet Pods, antrea-agent's among them",
    ),
    (
        "ServiceAccount",
        "kube-system/deployment-controller",
        "creates ReplicaSets for Deployments",
    ),
    (
        "ServiceAccount",
        "kube-system/replicaset-controller",
        "creates ReplicaSet Pods",
    ),
    (
        "ServiceAccount",
        "kube-system/replication-controller",
        "creates ReplicationController Pods",
    ),
    (
        "ServiceAccount",
        "kube-system/statefulset-controller",
        "creates StatefulSet Pods",
    ),
    (
        "ServiceAccount",
        "kube-system/job-controller",
        "creates Job Pods",
    ),
    (
        "ServiceAccount",
        "kube-system/cronjob-controller",
        "creates Jobs for CronJobs",
    ),
    (
        "ServiceAccount",
        "kube-system/persistent-volume-binder",
        "creates recycler Pods and reads volume Secrets",
    ),
    (
        "ServiceAccount",
        "kube-system/bootstrap-signer",
        "reads bootstrap token Secrets in kube-system",
    ),
    (
        "ServiceAccount",
        "kube-system/token-cleaner",
        "reads and deletes bootstrap token Secrets in kube-system",
    ),
    (
        "ServiceAccount",
        "{ns}/psk-guard-rotate",
        "psk-guard's rotation (docs/deploy/rbac.yaml): writes the Secret and runs the per-node Jobs",
    ),
    (
        "ServiceAccount",
        "{ns}/psk-guard-audit",
        "psk-guard's audit (docs/deploy/rbac.yaml): reads the Secret to judge the key and runs the --nodes Jobs",
    ),
];

/// Groups that hold every user or every service account.
fn broad(kind: &str, name: &str) -> bool {
    (kind == "Group"
        && (name == "system:authenticated"
            || name == "system:unauthenticated"
            || name == "system:serviceaccounts"
            || name.starts_with("system:serviceaccounts:")))
        || (kind == "User" && name == "system:anonymous")
}

/// An RBAC subject, normalized (a user `system:serviceaccount:ns:name` is that account).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Who {
    kind: String,
    /// `ns/name` for service accounts.
    name: String,
}

impl Who {
    fn of(s: &RbacSubject, binding_ns: Option<&str>) -> Who {
        if s.kind == "ServiceAccount" {
            let ns = s.namespace.as_deref().or(binding_ns).unwrap_or_default();
            return Who {
                kind: s.kind.clone(),
                name: format!("{ns}/{}", s.name),
            };
        }
        if let Some(rest) = s.name.strip_prefix("system:serviceaccount:") {
            if let Some((ns, name)) = rest.split_once(':') {
                return Who {
                    kind: "ServiceAccount".into(),
                    name: format!("{ns}/{name}"),
                };
            }
        }
        Who {
            kind: s.kind.clone(),
            name: s.name.clone(),
        }
    }
    fn label(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
    fn account_namespace(&self) -> Option<&str> {
        (self.kind == "ServiceAccount").then(|| self.name.split_once('/').map_or("", |(ns, _)| ns))
    }
}

/// One binding's grant: its rules, and where they apply (`None`: cluster-wide).
struct Grant {
    desc: String,
    namespace: Option<String>,
    rules: Vec<PolicyRule>,
    subjects: Vec<Who>,
}

/// A ClusterRole's rules with its aggregation applied (the server fills `rules` of aggregated
/// roles itself; this models it too, following aggregations of aggregations).
fn cluster_role_rules(
    all: &[ClusterRole],
    name: &str,
    seen: &mut BTreeSet<String>,
) -> Vec<PolicyRule> {
    if !seen.insert(name.to_owned()) {
        return vec![];
    }
    let Some(role) = all
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
    else {
        return vec![];
    };
    let mut rules = role.rules.clone().unwrap_or_default();
    let selectors = role
        .aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.clone())
        .unwrap_or_default();
    for other in all {
        let labels = other.metadata.labels.clone().unwrap_or_default();
        let other_name = other.metadata.name.clone().unwrap_or_default();
        if other_name != name
            && selectors
                .iter()
                .any(|s| super::selector::matches(s, &labels))
        {
            rules.extend(cluster_role_rules(all, &other_name, seen));
        }
    }
    rules
}

fn grants(snap: &Snapshot) -> Vec<Grant> {
    let cluster_roles = snap.cluster_roles.as_deref().unwrap_or_default();
    let role_rules = |kind: &str, name: &str, ns: Option<&str>| -> Vec<PolicyRule> {
        if kind == "ClusterRole" {
            return cluster_role_rules(cluster_roles, name, &mut BTreeSet::new());
        }
        snap.roles
            .iter()
            .flatten()
            .find(|r| {
                r.metadata.name.as_deref() == Some(name) && r.metadata.namespace.as_deref() == ns
            })
            .and_then(|r| r.rules.clone())
            .unwrap_or_default()
    };
    let mut out = vec![];
    for b in snap.role_bindings.iter().flatten() {
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let name = b.metadata.name.clone().unwrap_or_default();
        out.push(Grant {
            desc: format!(
                "RoleBinding {ns}/{name} -> {} {}",
                b.role_ref.kind, b.role_ref.name
            ),
            rules: role_rules(&b.role_ref.kind, &b.role_ref.name, Some(&ns)),
            subjects: b
                .subjects
                .iter()
                .flatten()
                .map(|s| Who::of(s, Some(&ns)))
                .collect(),
            namespace: Some(ns),
        });
    }
    for b in snap.cluster_role_bindings.iter().flatten() {
        let name = b.metadata.name.clone().unwrap_or_default();
        out.push(Grant {
            desc: format!(
                "ClusterRoleBinding {name} -> {} {}",
                b.role_ref.kind, b.role_ref.name
            ),
            rules: role_rules("ClusterRole", &b.role_ref.name, None),
            subjects: b
                .subjects
                .iter()
                .flatten()
                .map(|s| Who::of(s, None))
                .collect(),
            namespace: None,
        });
    }
    out
}

/// A path one subject has.
#[derive(Debug, Clone)]
struct Hit {
    path: &'static KeyPath,
    verbs: BTreeSet<&'static str>,
    via: BTreeSet<String>,
    /// Whom the path goes through, for a one-level hop.
    through: Option<Hop>,
}

/// The identity a one-level hop reaches the key as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hop {
    /// A service account (`ns/name`) that has a direct path.
    ServiceAccount(String),
    /// A user or group named by an impersonation rule's resourceNames (`Group system:masters`).
    Impersonated(String),
}

/// The verbs of `p` that `g`'s rules allow, with `name` as the request's object name.
fn verbs_allowed(p: &'static KeyPath, g: &Grant, names: &[String]) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for verb in p.verbs {
        let ok = names.iter().any(|name| {
            let req = Request {
                verb,
                group: p.group,
                resource: p.resource,
                subresource: p.subresource,
                name,
            };
            g.rules.iter().any(|r| allows(r, &req))
        });
        if ok {
            out.insert(*verb);
        }
    }
    out
}

/// The object names a request of `p` may carry (the empty name always: a rule without
/// resourceNames).
fn names_for(
    p: &KeyPath,
    snap: &Snapshot,
    cfg: &AuditConfig,
    account: Option<&str>,
) -> Vec<String> {
    let mut v = vec![String::new()];
    match p.names {
        Unnamed | Identity(_) => {}
        Secret => v.push(cfg.secret.clone()),
        AgentDaemonSet => v.push("antrea-agent".into()),
        AntreaPods => v.extend(
            snap.pods
                .iter()
                .flatten()
                .filter(|p| p.metadata.namespace.as_deref() == Some(cfg.namespace.as_str()))
                .filter_map(|p| p.metadata.name.clone()),
        ),
        Nodes => v.extend(
            snap.nodes
                .iter()
                .flatten()
                .filter_map(|n| n.metadata.name.clone()),
        ),
        Account => v.extend(account.map(|a| a.split_once('/').map_or(a, |(_, n)| n).to_owned())),
    }
    v
}

fn add(
    hits: &mut BTreeMap<Who, Vec<Hit>>,
    who: &Who,
    p: &'static KeyPath,
    verbs: BTreeSet<&'static str>,
    via: &str,
    through: Option<Hop>,
) {
    let list = hits.entry(who.clone()).or_default();
    match list
        .iter_mut()
        .find(|h| h.path.id == p.id && h.through == through)
    {
        Some(h) => {
            h.verbs.extend(verbs);
            h.via.insert(via.to_owned());
        }
        None => list.push(Hit {
            path: p,
            verbs,
            via: [via.to_owned()].into(),
            through,
        }),
    }
}

/// Every subject's paths to the key.
fn paths_of(snap: &Snapshot, cfg: &AuditConfig) -> BTreeMap<Who, Vec<Hit>> {
    let grants = grants(snap);
    let mut hits: BTreeMap<Who, Vec<Hit>> = BTreeMap::new();
    let direct = |p: &&KeyPath| p.scope != AccountNamespace && !matches!(p.names, Identity(_));
    for p in KEY_PATHS.iter().filter(direct) {
        let names = names_for(p, snap, cfg, None);
        for g in &grants {
            let in_scope = match p.scope {
                AntreaNamespace => g.namespace.as_deref().is_none_or(|ns| ns == cfg.namespace),
                Cluster => g.namespace.is_none(),
                AccountNamespace => false,
            };
            if !in_scope {
                continue;
            }
            let verbs = verbs_allowed(p, g, &names);
            if verbs.is_empty() {
                continue;
            }
            for who in &g.subjects {
                add(&mut hits, who, p, verbs.clone(), &g.desc, None);
            }
        }
    }
    impersonation(&grants, &mut hits);
    // One level of service-account hops.
    let accounts: Vec<Who> = hits
        .keys()
        .filter(|w| w.kind == "ServiceAccount")
        .cloned()
        .collect();
    for account in &accounts {
        let ns = account.account_namespace().unwrap_or_default();
        for p in KEY_PATHS.iter().filter(|p| p.scope == AccountNamespace) {
            let names = names_for(p, snap, cfg, Some(&account.name));
            for g in grants
                .iter()
                .filter(|g| g.namespace.as_deref().is_none_or(|n| n == ns))
            {
                let verbs = verbs_allowed(p, g, &names);
                if verbs.is_empty() {
                    continue;
                }
                for who in g.subjects.iter().filter(|w| *w != account) {
                    add(
                        &mut hits,
                        who,
                        p,
                        verbs.clone(),
                        &g.desc,
                        Some(Hop::ServiceAccount(account.name.clone())),
                    );
                }
            }
        }
    }
    hits
}

/// The impersonation paths (cluster-wide grants only): unrestricted, or restricted by
/// resourceNames to `system:masters` or to a user/group with a direct path in `hits`.
fn impersonation(grants: &[Grant], hits: &mut BTreeMap<Who, Vec<Hit>>) {
    // Only identities with a direct path are targets (one level, as for service accounts).
    let direct: Vec<Who> = hits.keys().cloned().collect();
    for p in KEY_PATHS {
        let Identity(kind) = p.names else { continue };
        let mut targets: Vec<String> = direct
            .iter()
            .filter(|w| w.kind == kind)
            .map(|w| w.name.clone())
            .collect();
        if kind == "Group" {
            targets.push("system:masters".into());
        }
        for g in grants.iter().filter(|g| g.namespace.is_none()) {
            let any = verbs_allowed(p, g, &[String::new()]);
            if !any.is_empty() {
                for who in &g.subjects {
                    add(hits, who, p, any.clone(), &g.desc, None);
                }
                continue;
            }
            for t in &targets {
                let verbs = verbs_allowed(p, g, std::slice::from_ref(t));
                if verbs.is_empty() {
                    continue;
                }
                let label = format!("{kind} {t}");
                for who in g.subjects.iter().filter(|w| w.label() != label) {
                    let hop = Hop::Impersonated(label.clone());
                    add(hits, who, p, verbs.clone(), &g.desc, Some(hop));
                }
            }
        }
    }
}

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    paths_of(snap, cfg)
        .into_iter()
        .map(|(who, hits)| finding(who, hits, cfg))
        .collect()
}

fn finding(who: Who, mut hits: Vec<Hit>, cfg: &AuditConfig) -> Finding {
    hits.sort_by(|a, b| {
        b.path
            .severity
            .cmp(&a.path.severity)
            .then(a.path.id.cmp(b.path.id))
    });
    let expected = CONTROL_PLANE
        .iter()
        .find(|(k, n, _)| *k == who.kind && n.replace("{ns}", &cfg.namespace) == who.name)
        .map(|(_, _, why)| *why);
    let worst = hits
        .iter()
        .map(|h| h.path.severity)
        .max()
        .unwrap_or(Severity::Info);
    let severity = match (broad(&who.kind, &who.name), expected) {
        (true, _) => Severity::Critical,
        (false, Some(_)) => Severity::Info,
        (false, None) => worst,
    };
    let reads = hits
        .iter()
        .any(|h| h.path.id == "read-secret" && h.through.is_none());
    let code = if reads {
        Code::SecretReadableBy
    } else {
        Code::KeyReachableViaRbac
    };
    let summary: Vec<String> = hits
        .iter()
        .map(|h| {
            let through = match &h.through {
                Some(Hop::ServiceAccount(a)) => format!(" as ServiceAccount {a}"),
                Some(Hop::Impersonated(i)) => format!(" as {i}"),
                None => String::new(),
            };
            format!(
                "{} ({}{through}) through {}",
                h.path.id,
                h.verbs.iter().copied().collect::<Vec<_>>().join(","),
                h.via.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let paths: Vec<serde_json::Value> = hits
        .iter()
        .map(|h| {
            let p = h.path;
            let (account, impersonated) = match &h.through {
                Some(Hop::ServiceAccount(a)) => (Some(a), None),
                Some(Hop::Impersonated(i)) => (None, Some(i)),
                None => (None, None),
            };
            json!({
                "path": p.id, "verbs": h.verbs, "group": p.group, "resource": p.resource,
                "subresource": p.subresource, "scope": format!("{:?}", p.scope),
                "severity": p.severity.as_str(), "explanation": p.explanation,
                "bindings": h.via, "service_account": account, "impersonates": impersonated,
            })
        })
        .collect();
    let bindings: BTreeSet<&String> = hits.iter().flat_map(|h| h.via.iter()).collect();
    let mut f = Finding::new(code, severity, Subject::named("rbac-subject", who.label()))
        .observed(format!(
            "can obtain the key in {}/{} via {}",
            cfg.namespace,
            cfg.secret,
            summary.join("; ")
        ))
        .expected("only the identities that need the key: the control plane, Antrea's own and psk-guard's rotation")
        .remediation("remove the binding(s) or narrow the role(s): scope secret access with resourceNames to other Secrets, and grant no pod creation, exec or DaemonSet changes in Antrea's namespace, no nodes/proxy and no impersonation")
        .detail("paths", paths)
        .detail("bindings", json!(bindings));
    if let Some(why) = expected {
        f = f.detail("expected_because", why);
    }
    if broad(&who.kind, &who.name) {
        f = f.detail(
            "broad_group",
            "every user or service account (or anonymous requests) holds it",
        );
    }
    f
}
