//! Question: which workloads outside Antrea's own can reach the key on a node, and which
//! namespaces let them?
//!
//! A Pod reaches the key through a host path that reaches the run directory (conf.db, db.sock) or
//! the container runtime's state (which holds the agent container's environment, and so
//! `ANTREA_IPSEC_PSK`), or by running privileged or in the host's PID namespace (the agent's
//! `/proc/<pid>/environ`). Host paths are compared after lexical normalization (`//`, `.`, `..`),
//! as the kubelet mounts them, against [`HOST_PATH_RULES`]. Pods, the Pod templates of every
//! workload kind (whose Pods may not exist yet) and hostPath/`local` PersistentVolumes are
//! looked at. Only objects owned (controller ownerReference, by uid) by Antrea's DaemonSet
//! `antrea-agent` or Deployment `antrea-controller` in Antrea's namespace are Antrea's own; a
//! label is not enough.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

/// A host path prefix that exposes the key: one row each.
pub struct HostPathRule {
    pub path: &'static str,
    pub code: Code,
    pub what: &'static str,
}

const RUN: &str = "Antrea's run directory (conf.db holds the PSK; db.sock reads and writes OVSDB)";
const RUNTIME: &str =
    "container runtime state, which holds the agent container's environment (ANTREA_IPSEC_PSK)";

/// Paths are in normalized form with `/var/run` written as `/run` (a link to it).
pub const HOST_PATH_RULES: &[HostPathRule] = &[
    HostPathRule {
        path: "/run/antrea",
        code: Code::HostpathExposesAntrea,
        what: RUN,
    },
    HostPathRule {
        path: "/run/containerd",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/run/crio",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/run/docker.sock",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/run/cri-dockerd.sock",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/run/k3s/containerd",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/var/lib/containerd",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/var/lib/docker",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/var/lib/containers",
        code: Code::HostpathExposesRuntimeState,
        what: RUNTIME,
    },
    HostPathRule {
        path: "/var/lib/kubelet/pods",
        code: Code::HostpathExposesRuntimeState,
        what: "the kubelet's Pod volumes, Secret volumes included",
    },
];

/// Lexical normalization of an absolute host path: `//` and `.` collapse, `..` drops the
/// previous component (never above `/`), and `/var/run` becomes `/run`.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = vec![];
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.len() >= 2 && parts[0] == "var" && parts[1] == "run" {
        parts.remove(0);
    }
    format!("/{}", parts.join("/"))
}

/// The rules a host path reaches: the path is the target, a parent of it, or inside it.
pub fn reached(path: &str) -> Vec<&'static HostPathRule> {
    let p = normalize(path);
    let within = |a: &str, b: &str| a == b || b == "/" || a.starts_with(&format!("{b}/"));
    HOST_PATH_RULES
        .iter()
        .filter(|r| {
            // /var/run is /run on most hosts, but a Pod mounting /var sees the /var/run a host
            // without that link has: the rule's /var/run form counts too.
            let var_form = format!("/var{}", r.path);
            within(r.path, &p)
                || within(&p, r.path)
                || (r.path.starts_with("/run/") && within(&var_form, &p))
        })
        .collect()
}

/// Host paths through which a Pod reaches /var/run/antrea.
pub fn reaches_antrea_run(path: &str) -> bool {
    reached(path)
        .iter()
        .any(|r| r.code == Code::HostpathExposesAntrea)
}

/// A Pod spec to judge: a Pod, or a workload's template.
struct Source<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    spec: &'a PodSpec,
}

fn controller(meta: &ObjectMeta) -> Option<(&str, &str)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.uid.as_str()))
}

/// Uids of the objects whose Pods are Antrea's own: the agent DaemonSet, the controller
/// Deployment, and the controller's ReplicaSets.
fn antrea_uids(snap: &Snapshot, cfg: &AuditConfig) -> BTreeSet<String> {
    let own = |m: &ObjectMeta, name: &str| {
        m.namespace.as_deref() == Some(cfg.namespace.as_str()) && m.name.as_deref() == Some(name)
    };
    let mut uids = BTreeSet::new();
    for d in snap
        .daemonsets
        .iter()
        .flatten()
        .filter(|d| own(&d.metadata, "antrea-agent"))
    {
        uids.extend(d.metadata.uid.clone());
    }
    for d in snap
        .deployments
        .iter()
        .flatten()
        .filter(|d| own(&d.metadata, "antrea-controller"))
    {
        uids.extend(d.metadata.uid.clone());
    }
    let deployments = uids.clone();
    for rs in snap.replicasets.iter().flatten() {
        if controller(&rs.metadata)
            .is_some_and(|(k, u)| k == "Deployment" && deployments.contains(u))
        {
            uids.extend(rs.metadata.uid.clone());
        }
    }
    uids
}

/// Whether an owner of `kind` with `uid` was read (then its template speaks for the object);
/// `None` when that kind could not be listed.
fn owner_read(snap: &Snapshot, kind: &str, uid: &str) -> Option<bool> {
    fn has<T: k8s_openapi::Metadata<Ty = ObjectMeta>>(
        l: &Option<Vec<T>>,
        uid: &str,
    ) -> Option<bool> {
        l.as_ref()
            .map(|l| l.iter().any(|o| o.metadata().uid.as_deref() == Some(uid)))
    }
    match kind {
        "DaemonSet" => has(&snap.daemonsets, uid),
        "Deployment" => has(&snap.deployments, uid),
        "StatefulSet" => has(&snap.statefulsets, uid),
        "ReplicaSet" => has(&snap.replicasets, uid),
        "Job" => has(&snap.jobs, uid),
        "CronJob" => has(&snap.cronjobs, uid),
        _ => Some(false),
    }
}

fn sources<'a>(snap: &'a Snapshot, cfg: &AuditConfig) -> Vec<Source<'a>> {
    let trusted = antrea_uids(snap, cfg);
    let mut out = vec![];
    let mut push = |kind: &'static str, meta: &'a ObjectMeta, spec: Option<&'a PodSpec>| {
        let Some(spec) = spec else { return };
        if meta.uid.as_ref().is_some_and(|u| trusted.contains(u)) {
            return;
        }
        if let Some((k, uid)) = controller(meta) {
            // Antrea's own, or judged through its owner's template; an owner whose kind could
            // not be listed is unknown, so the object is judged itself.
            if trusted.contains(uid) || owner_read(snap, k, uid) == Some(true) {
                return;
            }
        }
        out.push(Source { kind, meta, spec });
    };
    for p in snap.pods.iter().flatten() {
        push("pod", &p.metadata, p.spec.as_ref());
    }
    for d in snap.daemonsets.iter().flatten() {
        push(
            "daemonset",
            &d.metadata,
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for d in snap.deployments.iter().flatten() {
        push(
            "deployment",
            &d.metadata,
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for d in snap.statefulsets.iter().flatten() {
        push(
            "statefulset",
            &d.metadata,
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for d in snap.replicasets.iter().flatten() {
        push(
            "replicaset",
            &d.metadata,
            d.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref()),
        );
    }
    for d in snap.jobs.iter().flatten() {
        push(
            "job",
            &d.metadata,
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for d in snap.cronjobs.iter().flatten() {
        let spec = d
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|j| j.template.spec.as_ref());
        push("cronjob", &d.metadata, spec);
    }
    out
}

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let mut out = vec![];
    let mut risky_namespaces: BTreeSet<String> = BTreeSet::new();
    for s in sources(snap, cfg) {
        let ns = s.meta.namespace.clone().unwrap_or_default();
        let name = format!("{ns}/{}", s.meta.name.clone().unwrap_or_default());
        // Without the namespaces their labels are unknown: nothing is said about them.
        let level = snap.namespaces.as_ref().map(|all| {
            all.iter()
                .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()))
                .and_then(|n| n.metadata.labels.as_ref())
                .and_then(|l| l.get("pod-security.kubernetes.io/enforce"))
                .cloned()
                .unwrap_or_else(|| "unset".into())
        });
        let level_detail = level
            .clone()
            .unwrap_or_else(|| "unknown (namespaces not read)".into());
        let found = host_path_findings(&s, &name, &level_detail)
            .into_iter()
            .chain(escape_findings(&s, &name, &level_detail))
            .collect::<Vec<_>>();
        if !found.is_empty()
            && level.is_some_and(|l| !matches!(l.as_str(), "baseline" | "restricted"))
        {
            risky_namespaces.insert(ns.clone());
        }
        out.extend(found);
    }
    out.extend(persistent_volumes(snap));
    for ns in risky_namespaces {
        out.push(
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
    out
}

fn host_path_findings(s: &Source, name: &str, level: &str) -> Vec<Finding> {
    let mut out = vec![];
    for v in s.spec.volumes.iter().flatten() {
        let Some(hp) = &v.host_path else { continue };
        let mut seen = BTreeSet::new();
        for rule in reached(&hp.path) {
            if !seen.insert(rule.code) {
                continue;
            }
            out.push(Finding::new(rule.code, Severity::High, Subject::named(s.kind, name.to_owned()))
                .observed(format!("hostPath volume {:?} mounts {} (normalized {}), reaching {}", v.name, hp.path, normalize(&hp.path), rule.what))
                .expected("no workload outside Antrea's own mounts the run directory, the container runtime's state or a parent of them")
                .remediation("remove the volume or narrow it; forbid hostPath in tenant namespaces (Pod Security baseline/restricted, or Gatekeeper)")
                .detail("namespace_pod_security", level.to_owned())
                .detail("path", hp.path.clone())
                .detail("reaches", rule.path));
        }
    }
    out
}

fn escape_findings(s: &Source, name: &str, level: &str) -> Vec<Finding> {
    let mut how = vec![];
    if s.spec.host_pid == Some(true) {
        how.push("hostPID".to_owned());
    }
    let containers = s
        .spec
        .containers
        .iter()
        .chain(s.spec.init_containers.iter().flatten());
    for c in containers {
        if c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true) {
            how.push(format!("privileged container {:?}", c.name));
        }
    }
    if how.is_empty() {
        return vec![];
    }
    vec![Finding::new(
        Code::PodPrivilegedOrHostpid,
        Severity::High,
        Subject::named(s.kind, name.to_owned()),
    )
    .observed(format!(
        "{}: it can read the agent's environment (/proc/<pid>/environ) and the node's files",
        how.join(", ")
    ))
    .expected("no privileged or hostPID workload outside Antrea's own")
    .remediation("drop privileged and hostPID; enforce Pod Security baseline in tenant namespaces")
    .detail("namespace_pod_security", level.to_owned())
    .detail("how", how)]
}

fn persistent_volumes(snap: &Snapshot) -> Vec<Finding> {
    let mut out = vec![];
    for pv in snap.persistent_volumes.iter().flatten() {
        let spec = pv.spec.as_ref();
        let path = spec
            .and_then(|s| s.host_path.as_ref().map(|h| ("hostPath", h.path.clone())))
            .or_else(|| spec.and_then(|s| s.local.as_ref().map(|l| ("local", l.path.clone()))));
        let Some((kind, path)) = path else { continue };
        let mut seen = BTreeSet::new();
        for rule in reached(&path) {
            if !seen.insert(rule.code) {
                continue;
            }
            out.push(Finding::new(rule.code, Severity::High, Subject::named("persistentvolume", pv.metadata.name.clone().unwrap_or_default()))
                .observed(format!("{kind} PersistentVolume on {path} reaches {}", rule.what))
                .expected("no PersistentVolume on the run directory, the container runtime's state or a parent of them")
                .remediation("delete the PersistentVolume (and its claim); restrict who may create PersistentVolumes")
                .detail("path", path.clone())
                .detail("reaches", rule.path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "/var//run",
            "//var/run/antrea",
            "/var/run/./antrea",
            "/var/log/../run/antrea",
            "/../var/run",
        ] {
            assert!(reaches_antrea_run(p), "{p}");
        }
        for p in [
            "/var/log",
            "/run/containerd",
            "/var/run/antrea-other",
            "/opt",
            "/etc",
            "/var/run/antrea/../x",
        ] {
            assert!(!reaches_antrea_run(p), "{p}");
        }
    }

    #[test]
    fn runtime_state_is_reached() {
        for p in [
            "/var/run/containerd",
            "/run/containerd/io.containerd.runtime.v2.task",
            "/var/lib/docker",
            "/var/run/docker.sock",
            "/var/lib",
            "/var/lib/kubelet",
        ] {
            assert!(
                reached(p)
                    .iter()
                    .any(|r| r.code == Code::HostpathExposesRuntimeState),
                "{p}"
            );
        }
        assert!(reached("/var/lib/mysql").is_empty());
    }
}
