//! Question: which workloads outside Antrea's own can reach the key on a node (host paths that
//! reach `/var/run/antrea`), and which namespaces let them?

use std::collections::BTreeSet;

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

/// Host paths through which a Pod reaches /var/run/antrea (`/var/run` is a link to `/run`).
pub fn reaches_antrea_run(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    let targets = ["/var/run/antrea", "/run/antrea"];
    targets.iter().any(|t| {
        p == "/" || *t == p || t.starts_with(&format!("{p}/")) || p.starts_with(&format!("{t}/"))
    })
}

pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let Some(pods) = &snap.pods else {
        return vec![];
    };
    let mut out = vec![];
    let mut risky_namespaces: BTreeSet<String> = BTreeSet::new();
    for p in pods {
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
                // Without the namespaces their labels are unknown: nothing is said about them.
                let level = snap.namespaces.as_ref().map(|all| {
                    all.iter()
                        .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()))
                        .and_then(|n| n.metadata.labels.as_ref())
                        .and_then(|l| l.get("pod-security.kubernetes.io/enforce"))
                        .cloned()
                        .unwrap_or_else(|| "unset".into())
                });
                out.push(Finding::new(Code::HostpathExposesAntrea, Severity::High, Subject::named("pod", format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default())))
                    .observed(format!("hostPath volume {:?} mounts {}", v.name, hp.path))
                    .expected("no Pod outside Antrea's own mounts /var/run/antrea or a parent of it")
                    .remediation("remove the volume or narrow it; forbid hostPath in tenant namespaces (Pod Security baseline/restricted, or Gatekeeper)")
                    .detail("namespace_pod_security", level.clone().unwrap_or_else(|| "unknown (namespaces not read)".into()))
                    .detail("path", hp.path.clone()));
                if level.is_some_and(|l| !matches!(l.as_str(), "baseline" | "restricted")) {
                    risky_namespaces.insert(ns.clone());
                }
            }
        }
    }
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
