//! `psk-guard audit`: the cluster-level recommendations of Antrea's security guide, and with
//! `--nodes` the node check on every node through pinned Jobs, merged into one report.
//!
//! Everything is read-only except the `--nodes` Jobs (created, awaited, deleted). Each question is
//! its own finding code; an object that cannot be read is an `incomplete` entry, never a pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::Client;
use serde_json::json;
use zeroize::Zeroize;

use crate::cluster::jobs::{self, NodeJob, Outcome};
use crate::cluster::{self, ClusterError, Permission};
use crate::report::{Code, Finding, Report, Severity, Subject};
use crate::secret::{FingerprintKey, Psk};

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub namespace: String,
    pub secret: String,
    pub key: String,
    pub config_map: String,
    pub agent_cluster_role: String,
    pub controller_label: String,
    pub secure_nodes: Vec<String>,
    pub nodes: bool,
    pub image: String,
    pub service_account: String,
    pub job_namespace: String,
    pub job_timeout: Duration,
    pub parallelism: usize,
    pub api_timeout: Duration,
}

/// The permissions `audit` uses (and `audit --nodes` adds the Job ones).
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        verb: "get",
        group: "",
        resource: "secrets",
        subresource: "",
        name_scoped: true,
    },
    Permission {
        verb: "get",
        group: "",
        resource: "configmaps",
        subresource: "",
        name_scoped: true,
    },
    Permission {
        verb: "list",
        group: "",
        resource: "pods",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "",
        resource: "namespaces",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "",
        resource: "nodes",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "rbac.authorization.k8s.io",
        resource: "roles",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "rbac.authorization.k8s.io",
        resource: "clusterroles",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "rbac.authorization.k8s.io",
        resource: "clusterrolebindings",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "admissionregistration.k8s.io",
        resource: "validatingwebhookconfigurations",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "templates.gatekeeper.sh",
        resource: "constrainttemplates",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "list",
        group: "constraints.gatekeeper.sh",
        resource: "antreaagentstatusupdates",
        subresource: "",
        name_scoped: false,
    },
];

/// The extra permissions of `audit --nodes` (in the Job namespace).
pub const NODE_PERMISSIONS: &[Permission] = &[
    Permission {
        verb: "create",
        group: "batch",
        resource: "jobs",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "get",
        group: "batch",
        resource: "jobs",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "delete",
        group: "batch",
        resource: "jobs",
        subresource: "",
        name_scoped: false,
    },
    Permission {
        verb: "get",
        group: "",
        resource: "pods",
        subresource: "log",
        name_scoped: false,
    },
];

/// Host paths through which a Pod reaches /var/run/antrea (`/var/run` is a link to `/run`).
pub fn reaches_antrea_run(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    let targets = ["/var/run/antrea", "/run/antrea"];
    targets.iter().any(|t| {
        p == "/" || *t == p || t.starts_with(&format!("{p}/")) || p.starts_with(&format!("{t}/"))
    })
}

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

fn grants(rules: &[PolicyRule], verb: &str, resource: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .clone()
            .unwrap_or_default()
            .iter()
            .any(|g| g.is_empty() || g == "*")
            && r.resources
                .clone()
                .unwrap_or_default()
                .iter()
                .any(|x| x == resource || x == "*" || x == "*/status")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

macro_rules! try_list {
    ($report:expr, $what:expr, $e:expr) => {
        match $e {
            Ok(v) => Some(v),
            Err(e) => {
                $report.not_checked($what, ClusterError::api("list", $what, e).to_string());
                None
            }
        }
    };
}

fn dyn_api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::all_with(client.clone(), &ar)
}

pub async fn run(cfg: &AuditConfig, fp_key: &FingerprintKey) -> Result<Report, ClusterError> {
    let client = cluster::client(cfg.api_timeout).await?;
    let mut report = Report::new("audit", fp_key.origin());
    report
        .target
        .insert("namespace".into(), cfg.namespace.clone());
    let lp = ListParams::default();

    // Secret: key strength, without printing it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    match cluster::retry("reading the Secret", || secrets.get_opt(&cfg.secret)).await {
        Ok(Some(mut s)) => {
            let subject = Subject::named("secret", format!("{}/{}", cfg.namespace, cfg.secret));
            match s.data.as_mut().and_then(|d| d.get_mut(&cfg.key)) {
                Some(b) => {
                    let raw = std::mem::take(&mut b.0);
                    match String::from_utf8(raw) {
                        Ok(text) => {
                            let psk = Psk::new(text);
                            let st = crate::secret::assess(&psk);
                            let fp = fp_key.fingerprint(&psk);
                            let base = |code, sev| {
                                Finding::new(code, sev, subject.clone())
                                    .detail("fingerprint", fp.to_string())
                                    .remediation("psk-guard rotate (a random 32-byte key)")
                            };
                            for f in crate::checks::tunnels::weak_key_findings(
                                &st,
                                base,
                                " in the Secret",
                            ) {
                                report.push(f);
                            }
                        }
                        Err(e) => {
                            e.into_bytes().zeroize();
                            report.not_checked(
                                "Secret key strength",
                                format!("key {:?} is not UTF-8", cfg.key),
                            );
                        }
                    }
                }
                None => report.not_checked(
                    "Secret key strength",
                    format!(
                        "secret {}/{} has no key {:?}",
                        cfg.namespace, cfg.secret, cfg.key
                    ),
                ),
            }
            if let Some(d) = s.data.as_mut() {
                d.values_mut().for_each(|b| b.0.zeroize());
            }
        }
        Ok(None) => report.not_checked(
            "Secret key strength",
            format!(
                "secret {}/{} not found (IPsec off, or another --secret)",
                cfg.namespace, cfg.secret
            ),
        ),
        Err(e) => report.not_checked(
            "Secret key strength",
            ClusterError::api("get", "secret", e).to_string(),
        ),
    }

    // Authentication mode.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &cfg.namespace);
    match cms.get_opt(&cfg.config_map).await {
        Ok(Some(cm)) => {
            let conf = cm
                .data
                .as_ref()
                .and_then(|d| d.get("antrea-agent.conf"))
                .cloned()
                .unwrap_or_default();
            let subject =
                Subject::named("configmap", format!("{}/{}", cfg.namespace, cfg.config_map));
            if crate::rotation::record::cert_mode(&conf) {
                report.push(
                    Finding::new(Code::IpsecCertMode, Severity::Info, subject)
                        .observed("ipsec.authenticationMode: cert")
                        .expected("certificate mode")
                        .remediation("nothing to do"),
                );
            } else {
                report.push(Finding::new(Code::IpsecAuthPsk, Severity::Medium, subject).observed("ipsec.authenticationMode: psk (or unset)").expected("ipsec.authenticationMode: cert").remediation("enable feature gate IPsecCertAuth and set ipsec.authenticationMode: cert in antrea-agent.conf; until then rotate the PSK regularly (psk-guard rotate)"));
            }
        }
        Ok(None) => report.not_checked(
            "IPsec authentication mode",
            format!("configmap {}/{} not found", cfg.namespace, cfg.config_map),
        ),
        Err(e) => report.not_checked(
            "IPsec authentication mode",
            ClusterError::api("get", "configmap", e).to_string(),
        ),
    }

    // Gatekeeper: template, constraint, webhook rules.
    let templates = dyn_api(
        &client,
        "templates.gatekeeper.sh",
        "v1",
        "ConstraintTemplate",
        "constrainttemplates",
    );
    let constraints = dyn_api(
        &client,
        "constraints.gatekeeper.sh",
        "v1beta1",
        "AntreaAgentStatusUpdates",
        "antreaagentstatusupdates",
    );
    let has_template = match templates.list(&lp).await {
        Ok(l) => Some(
            l.items
                .iter()
                .any(|t| t.metadata.name.as_deref() == Some("antreaagentstatusupdates")),
        ),
        Err(kube::Error::Api(s)) if s.is_not_found() => Some(false),
        Err(e) => {
            report.not_checked(
                "Gatekeeper ConstraintTemplate",
                ClusterError::api("list", "constrainttemplates", e).to_string(),
            );
            None
        }
    };
    let has_constraint = match constraints.list(&lp).await {
        Ok(l) => Some(l.items.iter().any(|c| {
            let kinds = c.data["spec"]["match"]["kinds"].to_string();
            kinds.contains("\"Pod\"") && kinds.contains("\"Node\"")
        })),
        Err(kube::Error::Api(s)) if s.is_not_found() => Some(false),
        Err(e) => {
            report.not_checked(
                "Gatekeeper Constraint",
                ClusterError::api("list", "antreaagentstatusupdates", e).to_string(),
            );
            None
        }
    };
    let gatekeeper_ok = has_template == Some(true) && has_constraint == Some(true);
    if has_template == Some(false) || has_constraint == Some(false) {
        let mut missing = vec![];
        if has_template == Some(false) {
            missing.push("ConstraintTemplate antreaagentstatusupdates");
        }
        if has_constraint == Some(false) {
            missing.push("a Constraint of kind AntreaAgentStatusUpdates matching Pods and Nodes");
        }
        report.push(Finding::new(Code::GatekeeperPolicyMissing, Severity::High, Subject::named("cluster", "gatekeeper"))
            .observed(format!("missing: {}", missing.join("; ")))
            .expected("the ConstraintTemplate and Constraint from Antrea's security guide")
            .remediation("install Gatekeeper and apply the antreaagentstatusupdates ConstraintTemplate and its Constraint (docs/security-guide in Antrea)"));
    }
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(list) = try_list!(
        report,
        "validatingwebhookconfigurations",
        webhooks.list(&lp).await
    ) {
        for w in list.items.iter().filter(|w| {
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
                report.push(Finding::new(Code::GatekeeperWebhookSkipsSubresources, Severity::High, Subject::named("validatingwebhookconfiguration", name))
                    .observed("no rule covers subresources (resources lists '*' but not '*/*')")
                    .expected("a rule with resources: ['*/*'] (or pods/status and nodes/status)")
                    .remediation("configure Gatekeeper's webhook to include subresources, e.g. helm value validatingWebhookCustomRules with resources ['*/*']"));
            }
        }
    }

    // The agent's ClusterRole.
    let croles: Api<ClusterRole> = Api::all(client.clone());
    let cluster_roles = try_list!(report, "clusterroles", croles.list(&lp).await)
        .map(|l| l.items)
        .unwrap_or_default();
    if let Some(agent) = cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(cfg.agent_cluster_role.as_str()))
    {
        let rules = agent.rules.clone().unwrap_or_default();
        let which: Vec<&str> = ["pods/status", "nodes/status"]
            .into_iter()
            .filter(|res| grants(&rules, "patch", res))
            .collect();
        if !which.is_empty() {
            report.push(Finding::new(Code::AgentCanPatchStatus, if gatekeeper_ok { Severity::Info } else { Severity::Medium }, Subject::named("clusterrole", cfg.agent_cluster_role.clone()))
                .observed(format!("patch on {}", which.join(", ")))
                .expected(if gatekeeper_ok { "the Gatekeeper policy limits it to annotations (present)" } else { "the Gatekeeper policy limiting it to annotations" })
                .remediation(if gatekeeper_ok { "nothing to do" } else { "apply Antrea's AntreaAgentStatusUpdates Gatekeeper policy (see gatekeeper-policy-missing)" }));
        }
    }

    // Pods: controller placement and hostPath exposure.
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes_api: Api<Node> = Api::all(client.clone());
    let nodes = try_list!(report, "nodes", nodes_api.list(&lp).await)
        .map(|l| l.items)
        .unwrap_or_default();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let namespaces = try_list!(report, "namespaces", ns_api.list(&lp).await)
        .map(|l| l.items)
        .unwrap_or_default();
    if let Some(all) = try_list!(report, "pods", pods.list(&lp).await) {
        let (label_k, label_v) = cfg
            .controller_label
            .split_once('=')
            .unwrap_or(("component", "antrea-controller"));
        for p in all.items.iter().filter(|p| {
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
                report.push(Finding::new(Code::ControllerNotOnSecureNode, Severity::Medium, Subject::named("pod", format!("{}/{}", p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default())))
                    .observed(format!("runs on {node}, not a control-plane node"))
                    .expected("a control-plane Node, or one named with --secure-node")
                    .remediation("add a nodeSelector/toleration for node-role.kubernetes.io/control-plane to the antrea-controller Deployment"));
            }
        }
        let mut risky_namespaces: BTreeSet<String> = BTreeSet::new();
        for p in &all.items {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let is_antrea = ns == cfg.namespace
                && p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app"))
                    .map(String::as_str)
                    == Some("antrea");
            if is_antrea {
                continue;
            }
            for v in p
                .spec
                .as_ref()
                .and_then(|s| s.volumes.clone())
                .unwrap_or_default()
            {
                let Some(hp) = v.host_path else { continue };
                if reaches_antrea_run(&hp.path) {
                    let level = namespaces
                        .iter()
                        .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()))
                        .and_then(|n| n.metadata.labels.as_ref())
                        .and_then(|l| l.get("pod-security.kubernetes.io/enforce"))
                        .cloned()
                        .unwrap_or_else(|| "unset".into());
                    report.push(Finding::new(Code::HostpathExposesAntrea, Severity::High, Subject::named("pod", format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default())))
                        .observed(format!("hostPath volume {:?} mounts {}", v.name, hp.path))
                        .expected("no Pod outside Antrea's own mounts /var/run/antrea or a parent of it")
                        .remediation("remove the volume or narrow it; forbid hostPath in tenant namespaces (Pod Security baseline/restricted, or Gatekeeper)")
                        .detail("namespace_pod_security", level.clone())
                        .detail("path", hp.path.clone()));
                    if !matches!(level.as_str(), "baseline" | "restricted") {
                        risky_namespaces.insert(ns.clone());
                    }
                }
            }
        }
        for ns in risky_namespaces {
            report.push(
                Finding::new(
                    Code::NamespaceAllowsHostpath,
                    Severity::Medium,
                    Subject::named("namespace", ns.clone()),
                )
                .observed("pod-security.kubernetes.io/enforce is privileged or unset")
                .expected("baseline or restricted for tenant namespaces")
                .remediation(format!(
                    "kubectl label namespace {ns} pod-security.kubernetes.io/enforce=baseline"
                )),
            );
        }
    }

    // Who can read the Secret.
    let roles_api: Api<Role> = Api::namespaced(client.clone(), &cfg.namespace);
    let rbs_api: Api<RoleBinding> = Api::namespaced(client.clone(), &cfg.namespace);
    let crbs_api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let roles = try_list!(report, "roles", roles_api.list(&lp).await)
        .map(|l| l.items)
        .unwrap_or_default();
    let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let role_verbs = |kind: &str, name: &str| -> Vec<String> {
        match kind {
            "ClusterRole" => cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .map(|r| rules_read_secret(&r.rules.clone().unwrap_or_default(), &cfg.secret))
                .unwrap_or_default(),
            _ => roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .map(|r| rules_read_secret(&r.rules.clone().unwrap_or_default(), &cfg.secret))
                .unwrap_or_default(),
        }
    };
    let mut add = |binding: String,
                   kind: &str,
                   role: &str,
                   subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        let verbs = role_verbs(kind, role);
        if verbs.is_empty() {
            return;
        }
        for s in subjects.unwrap_or_default() {
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
    if let Some(l) = try_list!(report, "rolebindings", rbs_api.list(&lp).await) {
        for b in l.items {
            add(
                format!(
                    "RoleBinding {}/{}",
                    cfg.namespace,
                    b.metadata.name.clone().unwrap_or_default()
                ),
                &b.role_ref.kind,
                &b.role_ref.name,
                b.subjects,
            );
        }
    }
    if let Some(l) = try_list!(report, "clusterrolebindings", crbs_api.list(&lp).await) {
        for b in l.items {
            add(
                format!(
                    "ClusterRoleBinding {}",
                    b.metadata.name.clone().unwrap_or_default()
                ),
                &b.role_ref.kind,
                &b.role_ref.name,
                b.subjects,
            );
        }
    }
    for (who, via) in readers {
        let system = who.contains("system:") || who == "Group system:masters";
        report.push(
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
            .detail("via", json!(via)),
        );
    }

    if cfg.nodes {
        fan_out(cfg, &client, &nodes, &mut report).await;
    }
    report.sort();
    Ok(report)
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One pinned `check` Job per Ready node (at most `parallelism` at a time), merged.
async fn fan_out(cfg: &AuditConfig, client: &Client, nodes: &[Node], report: &mut Report) {
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
            eprintln!("psk-guard audit: {done}/{total} nodes checked");
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
    report.data = Some(json!({"nodes": sections, "nodes_total": nodes.len()}));
}

#[cfg(test)]
mod tests {
    use super::reaches_antrea_run;

    #[test]
    fn host_paths_that_reach_the_run_dir() {
        for p in [
            "/",
            "/var",
            "/var/",
            "/var/run",
            "/run",
            "/var/run/antrea",
            "/run/antrea",
            "/var/run/antrea/openvswitch",
        ] {
            assert!(reaches_antrea_run(p), "{p}");
        }
        for p in [
            "/var/log",
            "/run/containerd",
            "/var/run/antrea-other",
            "/opt",
            "/etc",
        ] {
            assert!(!reaches_antrea_run(p), "{p}");
        }
    }
}
