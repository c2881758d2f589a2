//! The manifests in docs/deploy/, parsed into typed k8s-openapi objects and checked: RBAC grants
//! exactly the permissions the code declares (and the e2e tests prove the code uses only those),
//! name-scoped where Kubernetes allows, hardened security contexts, read-only host paths, and the
//! Job/CronJob conventions.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use psk_guard::cluster::Permission;
use serde_json::json;

pub(crate) fn docs(file: &str) -> Vec<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(file: &str, kind: &str, name: &str) -> T {
    let d = docs(file)
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in {file}"));
    serde_json::from_value(d)
        .unwrap_or_else(|e| panic!("{kind} {name} in {file} is not a valid {kind}: {e}"))
}

type Grant = (String, String, String); // (group, resource[/sub], verb)

fn granted(rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn declared(perms: &[Permission]) -> BTreeSet<Grant> {
    perms
        .iter()
        .map(|p| {
            let res = if p.subresource.is_empty() {
                p.resource.to_owned()
            } else {
                format!("{}/{}", p.resource, p.subresource)
            };
            (p.group.to_owned(), res, p.verb.to_owned())
        })
        .collect()
}

/// Every rule that grants a name-scoped permission names exactly that object; others name none.
fn check_names(rules: &[PolicyRule], perms: &[Permission], name_of: impl Fn(&str) -> &'static str) {
    for r in rules {
        let names = r.resource_names.clone().unwrap_or_default();
        for res in r.resources.clone().unwrap_or_default() {
            for v in &r.verbs {
                let p = perms
                    .iter()
                    .find(|p| {
                        p.verb == v
                            && (p.resource == res
                                || format!("{}/{}", p.resource, p.subresource) == res)
                    })
                    .unwrap();
                // Only create cannot be name-scoped: a list or watch is, when its field selector
                // names the object (k8s.io/apiserver pkg/endpoints/request/requestinfo.go).
                if p.name_scoped && p.verb != "create" {
                    assert_eq!(
                        names,
                        vec![name_of(p.resource).to_owned()],
                        "{v} {res} must be scoped by resourceNames"
                    );
                } else {
                    assert!(
                        names.is_empty(),
                        "{v} {res} cannot be name-scoped (or the code does not treat it so)"
                    );
                }
            }
        }
    }
}

fn names(resource: &str) -> &'static str {
    match resource {
        "secrets" => "antrea-ipsec",
        "configmaps" => "antrea-config",
        "daemonsets" => "antrea-agent",
        "leases" => "psk-guard-rotation",
        "namespaces" => "kube-system",
        "serviceaccounts" => "psk-guard-node",
        other => panic!("no name for {other}"),
    }
}

#[test]
fn rotation_rbac_is_exactly_what_the_code_uses() {
    let role: Role = typed("rbac.yaml", "Role", "psk-guard-rotate");
    let rules = role.rules.unwrap();
    assert_eq!(
        granted(&rules),
        declared(psk_guard::rotation::PERMISSIONS),
        "Role psk-guard-rotate vs rotation::PERMISSIONS"
    );
    check_names(&rules, psk_guard::rotation::PERMISSIONS, names);
    let rb: RoleBinding = typed("rbac.yaml", "RoleBinding", "psk-guard-rotate");
    assert_eq!(rb.role_ref.name, "psk-guard-rotate");
    assert_eq!(rb.subjects.unwrap()[0].name, "psk-guard-rotate");
    // Evicting pods only in the extra Role for OnDelete DaemonSets.
    let od: Role = typed("rbac.yaml", "Role", "psk-guard-rotate-ondelete");
    assert_eq!(
        granted(&od.rules.unwrap()),
        declared(psk_guard::rotation::ON_DELETE_PERMISSIONS),
        "Role psk-guard-rotate-ondelete vs rotation::ON_DELETE_PERMISSIONS"
    );
    let odb: RoleBinding = typed("rbac.yaml", "RoleBinding", "psk-guard-rotate-ondelete");
    assert_eq!(odb.role_ref.name, "psk-guard-rotate-ondelete");
    assert_eq!(odb.subjects.unwrap()[0].name, "psk-guard-rotate");
    assert!(
        !granted(&rules)
            .iter()
            .any(|(_, r, v)| r == "pods" && v == "delete"),
        "no pod deletion for RollingUpdate DaemonSets"
    );
    let cr: ClusterRole = typed("rbac.yaml", "ClusterRole", "psk-guard-rotate-cluster");
    let rules = cr.rules.unwrap();
    assert_eq!(
        granted(&rules),
        declared(psk_guard::rotation::CLUSTER_PERMISSIONS),
        "ClusterRole psk-guard-rotate-cluster vs rotation::CLUSTER_PERMISSIONS"
    );
    check_names(&rules, psk_guard::rotation::CLUSTER_PERMISSIONS, names);
    let crb: ClusterRoleBinding = typed(
        "rbac.yaml",
        "ClusterRoleBinding",
        "psk-guard-rotate-cluster",
    );
    assert_eq!(crb.role_ref.name, "psk-guard-rotate-cluster");
    assert_eq!(crb.subjects.unwrap()[0].name, "psk-guard-rotate");
    // The push pods (service account psk-guard-node) watch the rotation Lease, by name only.
    let lease: Role = typed("rbac.yaml", "Role", "psk-guard-node-lease");
    let rules = lease.rules.unwrap();
    assert_eq!(
        granted(&rules),
        declared(psk_guard::rotation::node::PERMISSIONS),
        "Role psk-guard-node-lease vs rotation::node::PERMISSIONS"
    );
    check_names(&rules, psk_guard::rotation::node::PERMISSIONS, names);
    let lb: RoleBinding = typed("rbac.yaml", "RoleBinding", "psk-guard-node-lease");
    assert_eq!(lb.role_ref.name, "psk-guard-node-lease");
    assert_eq!(lb.subjects.unwrap()[0].name, "psk-guard-node");
}

/// Every ClusterRole in rbac.yaml: a name-scoped rule on a namespaced object in a ClusterRole
/// would grant that name in every namespace.
#[test]
fn no_cluster_role_grants_a_secret_or_configmap() {
    for d in docs("rbac.yaml") {
        if d["kind"] != "ClusterRole" {
            continue;
        }
        let cr: ClusterRole = serde_json::from_value(d).unwrap();
        for (_, res, verb) in granted(&cr.rules.unwrap_or_default()) {
            assert!(
                res != "secrets" && res != "configmaps",
                "ClusterRole {:?} grants {verb} {res}: use a Role in Antrea's namespace",
                cr.metadata.name
            );
        }
    }
}

#[test]
fn audit_rbac_is_exactly_what_the_code_uses() {
    let cr: ClusterRole = typed("rbac.yaml", "ClusterRole", "psk-guard-audit");
    let role: Role = typed("rbac.yaml", "Role", "psk-guard-audit");
    let mut rules = cr.rules.unwrap();
    let ns_rules = role.rules.unwrap();
    assert!(
        granted(&ns_rules)
            .iter()
            .all(|(_, r, _)| r == "secrets" || r == "configmaps"),
        "the audit Role holds the name-scoped namespaced reads only"
    );
    rules.extend(ns_rules);
    assert_eq!(
        granted(&rules),
        declared(psk_guard::audit::PERMISSIONS),
        "Role + ClusterRole psk-guard-audit vs audit::PERMISSIONS"
    );
    check_names(&rules, psk_guard::audit::PERMISSIONS, names);
    let nodes: Role = typed("rbac.yaml", "Role", "psk-guard-audit-nodes");
    assert_eq!(
        granted(&nodes.rules.unwrap()),
        declared(psk_guard::audit::NODE_PERMISSIONS)
    );
    let crb: ClusterRoleBinding = typed("rbac.yaml", "ClusterRoleBinding", "psk-guard-audit");
    assert_eq!(crb.role_ref.name, "psk-guard-audit");
    assert_eq!(crb.subjects.unwrap()[0].name, "psk-guard-audit");
    for rb in ["psk-guard-audit", "psk-guard-audit-nodes"] {
        let b: RoleBinding = typed("rbac.yaml", "RoleBinding", rb);
        assert_eq!(b.subjects.unwrap()[0].name, "psk-guard-audit", "{rb}");
    }
    let node_sa: ServiceAccount = typed("serviceaccounts.yaml", "ServiceAccount", "psk-guard-node");
    assert_eq!(
        node_sa.automount_service_account_token,
        Some(false),
        "node Jobs get no API token"
    );
    let _: ServiceAccount = typed("serviceaccounts.yaml", "ServiceAccount", "psk-guard-rotate");
    let _: ServiceAccount = typed("serviceaccounts.yaml", "ServiceAccount", "psk-guard-audit");
}

/// The service accounts that may create Jobs (by the RBAC bindings), as admission sees them.
fn job_creators() -> BTreeSet<String> {
    let mut roles = BTreeSet::new();
    for d in docs("rbac.yaml") {
        if d["kind"] == "Role" || d["kind"] == "ClusterRole" {
            let rules: Vec<PolicyRule> =
                serde_json::from_value(d["rules"].clone()).unwrap_or_default();
            if granted(&rules).contains(&("batch".into(), "jobs".into(), "create".into())) {
                roles.insert(d["metadata"]["name"].as_str().unwrap().to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    for d in docs("rbac.yaml") {
        if (d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
            && roles.contains(d["roleRef"]["name"].as_str().unwrap())
        {
            for s in d["subjects"].as_array().unwrap() {
                out.insert(format!(
                    "system:serviceaccount:{}:{}",
                    s["namespace"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                ));
            }
        }
    }
    out
}

/// What each validation of the admission policy demands, as a check on a Job's pod spec (JSON):
/// (a fragment of its message, a fragment its CEL must contain, the check). The CEL itself is not
/// evaluated here; the table ties each rule's meaning to the code's Jobs and to hostile ones.
type Rule = (&'static str, &'static str, fn(&serde_json::Value) -> bool);

/// A change a stolen token would make to a Job's pod spec.
type Tamper = fn(&mut serde_json::Value);

const POLICY: &[Rule] = &[
    ("psk-guard-node service account", "'psk-guard-node'", |p| {
        let push_key = p["containers"].as_array().unwrap().iter().all(|c| {
            c["command"].is_null() && c["args"][0] == "push-key"
        });
        p["serviceAccountName"] == "psk-guard-node"
            && (p["automountServiceAccountToken"] == false || push_key)
    }),
    ("exactly one container", "size() == 1", |p| {
        p["containers"].as_array().map(Vec::len) == Some(1)
            && p["initContainers"].is_null()
            && p["ephemeralContainers"].is_null()
    }),
    ("psk-guard image", "'ghcr.io/psk-guard/psk-guard:'", |p| {
        p["containers"].as_array().unwrap().iter().all(|c| {
            let i = c["image"].as_str().unwrap_or("");
            i.starts_with("ghcr.io/psk-guard/psk-guard:")
                || i.starts_with("ghcr.io/psk-guard/psk-guard@sha256:")
        })
    }),
    (
        "/var/run/antrea (audit's also /var/log/antrea, push-key's an emptyDir psk-guard-ready) and no other volume",
        "'/var/log/antrea'",
        |p| {
            p["volumes"].as_array().is_some_and(|v| {
                v.len() <= 3
                    && v.iter().filter(|v| v["hostPath"].is_object()).count() <= 2
                    && v.iter().all(|v| {
                        if v["name"] == "psk-guard-ready" {
                            v["emptyDir"].is_object() && v["hostPath"].is_null()
                        } else {
                            v["hostPath"]["path"] == "/var/run/antrea"
                                || v["hostPath"]["path"] == "/var/log/antrea"
                        }
                    })
                    && v.iter().any(|v| v["hostPath"]["path"] == "/var/run/antrea")
            })
        },
    ),
    ("read-only", "m.readOnly", |p| {
        p["containers"].as_array().unwrap().iter().all(|c| {
            c["volumeMounts"].as_array().is_none_or(|m| {
                m.iter()
                    .all(|m| m["readOnly"] == true || m["name"] == "psk-guard-ready")
            })
        })
    }),
    ("only the antrea-ipsec Secret", "'antrea-ipsec'", |p| {
        p["containers"].as_array().unwrap().iter().all(|c| {
            c["envFrom"].is_null()
                && c["env"].as_array().is_none_or(|e| {
                    e.iter()
                        .all(|e| e["valueFrom"]["secretKeyRef"]["name"] == "antrea-ipsec")
                })
        })
    }),
    ("not privileged", "allowPrivilegeEscalation", |p| {
        p["containers"].as_array().unwrap().iter().all(|c| {
            let sc = &c["securityContext"];
            sc.is_object()
                && sc["privileged"] != true
                && sc["allowPrivilegeEscalation"] == false
                && sc["capabilities"]["add"].is_null()
        })
    }),
    ("no host namespace", "hostPID", |p| {
        p["hostNetwork"] != true && p["hostPID"] != true && p["hostIPC"] != true
    }),
];

#[test]
fn admission_policy_pins_the_jobs_of_psk_guards_accounts() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let vap: ValidatingAdmissionPolicy = typed(
        "admission-policy.yaml",
        "ValidatingAdmissionPolicy",
        "psk-guard-jobs",
    );
    let binding: ValidatingAdmissionPolicyBinding = typed(
        "admission-policy.yaml",
        "ValidatingAdmissionPolicyBinding",
        "psk-guard-jobs",
    );
    let bspec = binding.spec.unwrap();
    assert_eq!(bspec.policy_name.as_deref(), Some("psk-guard-jobs"));
    assert_eq!(bspec.validation_actions, Some(vec!["Deny".to_owned()]));
    assert!(bspec.match_resources.is_none(), "every namespace");
    let spec = vap.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let rules = spec.match_constraints.unwrap().resource_rules.unwrap();
    assert!(rules
        .iter()
        .any(|r| r.resources == Some(vec!["jobs".to_owned()])
            && r.api_groups == Some(vec!["batch".to_owned()])
            && r.operations
                .as_ref()
                .unwrap()
                .contains(&"CREATE".to_owned())));
    // It applies to exactly the accounts RBAC lets create Jobs.
    let cond = &spec.match_conditions.unwrap()[0].expression;
    let named: BTreeSet<String> = cond
        .split('\'')
        .filter(|s| s.starts_with("system:serviceaccount:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        named,
        job_creators(),
        "matchConditions vs the RBAC bindings"
    );
    // One validation per rule of the table, saying and checking the same thing.
    let validations = spec.validations.unwrap();
    assert_eq!(validations.len(), POLICY.len());
    for (msg, cel, _) in POLICY {
        let v = validations
            .iter()
            .find(|v| v.message.as_deref().is_some_and(|m| m.contains(msg)))
            .unwrap_or_else(|| panic!("no validation says {msg:?}"));
        assert!(v.expression.contains(cel), "{msg}: {}", v.expression);
    }
    // The code's Jobs pass every rule, with the default image and Secret.
    let default_image = format!("ghcr.io/psk-guard/psk-guard:{}", env!("CARGO_PKG_VERSION"));
    let job = psk_guard::cluster::jobs::NodeJob {
        namespace: "kube-system".into(),
        image: default_image,
        purpose: "push",
        run_id: "0123abcd".into(),
        args: vec!["push-key".into()],
        env_from_secret: Some((
            "ANTREA_IPSEC_PSK".into(),
            "antrea-ipsec".into(),
            "psk".into(),
        )),
        service_account: "psk-guard-node".into(),
        timeout: std::time::Duration::from_secs(60),
        logs: false,
        barrier: false,
    };
    let pod =
        psk_guard::cluster::jobs::manifest(&job, "node-a")["spec"]["template"]["spec"].clone();
    for (msg, _, check) in POLICY {
        assert!(check(&pod), "the code's Job breaks {msg:?}");
    }
    // rotate's push Jobs: push-key in barrier mode, with a token, an emptyDir and a probe.
    let push_job = psk_guard::cluster::jobs::NodeJob {
        barrier: true,
        ..job.clone()
    };
    let push_pod =
        psk_guard::cluster::jobs::manifest(&push_job, "node-a")["spec"]["template"]["spec"].clone();
    assert_eq!(push_pod["automountServiceAccountToken"], true);
    assert_eq!(push_pod["volumes"][1]["name"], "psk-guard-ready");
    for (msg, _, check) in POLICY {
        assert!(check(&push_pod), "the code's push Job breaks {msg:?}");
    }
    let push_hostile: [(&str, Tamper); 3] = [
        ("a token for another command", |p| {
            p["containers"][0]["args"][0] = "check".into()
        }),
        ("a token with another entrypoint", |p| {
            p["containers"][0]["command"] = json!(["/bin/sh"])
        }),
        (
            "a writable host path named like the readiness volume",
            |p| {
                p["volumes"][1] =
                    json!({"name": "psk-guard-ready", "hostPath": {"path": "/var/run/antrea"}})
            },
        ),
    ];
    for (what, change) in push_hostile {
        let mut p = push_pod.clone();
        change(&mut p);
        assert!(
            POLICY.iter().any(|(_, _, check)| !check(&p)),
            "{what} is admitted"
        );
    }
    // audit's check Jobs also mount the log directory, read-only.
    let audit_job = psk_guard::cluster::jobs::NodeJob {
        logs: true,
        ..job.clone()
    };
    let audit_pod = psk_guard::cluster::jobs::manifest(&audit_job, "node-a")["spec"]["template"]
        ["spec"]
        .clone();
    assert_eq!(
        audit_pod["volumes"][1]["hostPath"]["path"],
        "/var/log/antrea"
    );
    for (msg, _, check) in POLICY {
        assert!(check(&audit_pod), "the code's audit Job breaks {msg:?}");
    }
    // Jobs a stolen token would create are each refused by some rule.
    let hostile: [(&str, Tamper); 10] = [
        ("another service account", |p| {
            p["serviceAccountName"] = "antrea-controller".into()
        }),
        ("another image", |p| {
            p["containers"][0]["image"] = "busybox".into()
        }),
        ("the host's root", |p| {
            p["volumes"][0]["hostPath"]["path"] = "/".into()
        }),
        ("a writable mount", |p| {
            p["containers"][0]["volumeMounts"][0]["readOnly"] = false.into()
        }),
        ("another Secret", |p| {
            p["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] =
                "kube-root-ca".into()
        }),
        ("privileged", |p| {
            p["containers"][0]["securityContext"]["privileged"] = true.into()
        }),
        ("host PID", |p| p["hostPID"] = true.into()),
        ("a writable log mount", |p| {
            p["containers"][0]["volumeMounts"][1]["readOnly"] = false.into()
        }),
        ("the log volume elsewhere", |p| {
            p["volumes"][1]["hostPath"]["path"] = "/var/log".into()
        }),
        ("a third volume", |p| {
            let v = p["volumes"][1].clone();
            p["volumes"].as_array_mut().unwrap().push(v)
        }),
    ];
    for (what, change) in hostile {
        let mut p = audit_pod.clone();
        change(&mut p);
        assert!(
            POLICY.iter().any(|(_, _, check)| !check(&p)),
            "{what} is admitted"
        );
    }
}

fn assert_hardened(what: &str, spec: &PodSpec) {
    for c in &spec.containers {
        let sc = c
            .security_context
            .clone()
            .unwrap_or_else(|| panic!("{what}: no securityContext"));
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
        assert_eq!(
            sc.capabilities.unwrap().drop,
            Some(vec!["ALL".to_owned()]),
            "{what}"
        );
        assert_eq!(
            sc.seccomp_profile.unwrap().type_,
            "RuntimeDefault",
            "{what}"
        );
        assert!(sc.privileged != Some(true), "{what}");
        for m in c.volume_mounts.clone().unwrap_or_default() {
            assert_eq!(
                m.read_only,
                Some(true),
                "{what}: host paths are mounted read-only"
            );
        }
    }
}

#[test]
fn jobs_and_cronjob_are_hardened_and_follow_the_conventions() {
    let node: Job = typed("node-check-job.yaml", "Job", "psk-guard-check-NODE_NAME");
    let spec = node.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_hardened("node check Job", &pod);
    let terms = pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    assert_eq!(
        terms[0].match_fields.as_ref().unwrap()[0].key,
        "metadata.name",
        "pinned like the DaemonSet controller pins"
    );
    assert_eq!(
        pod.volumes.unwrap()[0].host_path.as_ref().unwrap().path,
        "/var/run/antrea"
    );
    // The Jobs the code creates carry the same hardening as the template.
    let code_job = psk_guard::cluster::jobs::manifest(
        &psk_guard::cluster::jobs::NodeJob {
            namespace: "kube-system".into(),
            image: "x".into(),
            purpose: "verify",
            run_id: "0123abcd".into(),
            args: vec!["check".into()],
            env_from_secret: Some((
                "ANTREA_IPSEC_PSK".into(),
                "antrea-ipsec".into(),
                "psk".into(),
            )),
            service_account: "psk-guard-node".into(),
            timeout: std::time::Duration::from_secs(60),
            logs: false,
            barrier: false,
        },
        "node-a",
    );
    let code_job: Job = serde_json::from_value(code_job).expect("the code's Job is a valid Job");
    assert_hardened(
        "the code's per-node Job",
        code_job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap(),
    );
    assert!(
        !serde_json::to_string(&code_job)
            .unwrap()
            .contains("\"value\""),
        "the key reaches a Job only through secretKeyRef"
    );

    let audit: Job = typed("audit-job.yaml", "Job", "psk-guard-audit");
    let aspec = audit.spec.unwrap();
    assert_hardened("audit Job", aspec.template.spec.as_ref().unwrap());
    assert_eq!(
        aspec.template.spec.unwrap().service_account_name.as_deref(),
        Some("psk-guard-audit")
    );

    let cron: CronJob = typed("rotation-cronjob.yaml", "CronJob", "psk-guard-rotate");
    let cspec = cron.spec.unwrap();
    assert_eq!(cspec.concurrency_policy.as_deref(), Some("Forbid"));
    let jspec = cspec.job_template.spec.unwrap();
    assert!(jspec.backoff_limit.unwrap() <= 3);
    assert!(jspec.active_deadline_seconds.is_some() && jspec.ttl_seconds_after_finished.is_some());
    let rules = jspec.pod_failure_policy.unwrap().rules;
    assert!(
        rules.iter().any(|r| r.action == "FailJob"
            && r.on_exit_codes
                .as_ref()
                .is_some_and(|e| e.operator == "In" && e.values.contains(&1))),
        "exit 1 (findings/unconverged) is not retried"
    );
    let pod = jspec.template.spec.unwrap();
    assert_hardened("rotation CronJob", &pod);
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("psk-guard-rotate")
    );
    let args = pod.containers[0].args.clone().unwrap();
    assert_eq!(&args[..1], &["rotate".to_owned()]);
}

/// `kubectl logs` (the pod log endpoint) merges stdout and stderr: every Job in docs/deploy that
/// prints a report runs with `--quiet`, so its log is the report when nothing fails
/// (audit::the_audit_jobs_log_is_the_report runs the audit Job's args with the streams merged).
#[test]
fn deployed_jobs_keep_stderr_to_errors() {
    for (file, kind) in [
        ("audit-job.yaml", "Job"),
        ("node-check-job.yaml", "Job"),
        ("rotation-cronjob.yaml", "CronJob"),
    ] {
        let d = docs(file).into_iter().find(|d| d["kind"] == kind).unwrap();
        let pod = if kind == "CronJob" {
            &d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        } else {
            &d["spec"]["template"]["spec"]
        };
        let args = pod["containers"][0]["args"].as_array().unwrap();
        assert!(args.iter().any(|a| a == "--quiet"), "{file}: {args:?}");
    }
}
