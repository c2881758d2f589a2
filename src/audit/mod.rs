//! `psk-guard audit`: the cluster-level recommendations of Antrea's security guide, and with
//! `--nodes` the node check on every node through pinned Jobs, merged into one report.
//!
//! Everything is read-only except the `--nodes` Jobs (created, awaited, deleted). The cluster is
//! read once ([`snapshot`]); each question is a module that takes the snapshot and returns
//! findings, so a new check is one new module and one row of [`QUESTIONS`]. An object that cannot
//! be read is an `incomplete` entry, never a pass, and nothing is concluded from it.
//!
//! - [`snapshot`]: lists the cluster once, paginated; records what could not be read.
//! - [`mode`]: the IPsec authentication mode and the strength of the key in the Secret.
//! - [`gatekeeper`]: the Gatekeeper policy on the agent's status updates, and its webhook.
//! - [`workloads`]: workloads that reach the key on a node (host paths, privileged, hostPID,
//!   Pod templates, PersistentVolumes).
//! - [`placement`]: where antrea-controller runs.
//! - [`rbac`]: who can read the key through RBAC.
//! - [`nodes`]: `--nodes`, the node check on every node, merged.

use std::time::Duration;

use crate::cluster::{self, ClusterError, Permission};
use crate::report::{Finding, Report};
use crate::secret::FingerprintKey;

pub mod authz;
pub mod gatekeeper;
pub mod mode;
pub mod nodes;
pub mod placement;
pub mod rbac;
pub mod selector;
pub mod snapshot;
pub mod workloads;

pub use snapshot::Snapshot;
pub use workloads::reaches_antrea_run;

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
    /// `--nodes` searches the nodes' logs (off with `--no-logs`).
    pub logs: bool,
    pub image: String,
    pub service_account: String,
    pub job_namespace: String,
    pub job_timeout: Duration,
    pub parallelism: usize,
    pub api_timeout: Duration,
}

/// The permissions `audit` uses (and `audit --nodes` adds the Job ones).
pub const PERMISSIONS: &[Permission] = &[
    Permission::named("get", "", "secrets"),
    Permission::named("get", "", "configmaps"),
    Permission::any("list", "", "pods"),
    Permission::any("list", "", "namespaces"),
    Permission::any("list", "", "nodes"),
    Permission::any("list", "rbac.authorization.k8s.io", "roles"),
    Permission::any("list", "rbac.authorization.k8s.io", "rolebindings"),
    Permission::any("list", "rbac.authorization.k8s.io", "clusterroles"),
    Permission::any("list", "rbac.authorization.k8s.io", "clusterrolebindings"),
    Permission::any(
        "list",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    Permission::any("list", "templates.gatekeeper.sh", "constrainttemplates"),
    Permission::any(
        "list",
        "constraints.gatekeeper.sh",
        "antreaagentstatusupdates",
    ),
    Permission::any("list", "config.gatekeeper.sh", "configs"),
    Permission::any("list", "apps", "daemonsets"),
    Permission::any("list", "apps", "deployments"),
    Permission::any("list", "apps", "statefulsets"),
    Permission::any("list", "apps", "replicasets"),
    Permission::any("list", "batch", "jobs"),
    Permission::any("list", "batch", "cronjobs"),
    Permission::any("list", "", "persistentvolumes"),
];

/// The extra permissions of `audit --nodes` (in the Job namespace).
pub const NODE_PERMISSIONS: &[Permission] = &[
    Permission::any("create", "batch", "jobs"),
    Permission::any("list", "batch", "jobs"),
    Permission::any("watch", "batch", "jobs"),
    Permission::any("delete", "batch", "jobs"),
    Permission::sub("get", "", "pods", "log"),
    // A Job whose pod cannot start says why only in Events (FailedCreate, FailedMount).
    cluster::jobs::EVENT_PERMISSIONS[0],
    cluster::jobs::EVENT_PERMISSIONS[1],
];

/// One audit question: the snapshot in, findings out.
pub type Question = fn(&Snapshot, &AuditConfig) -> Vec<Finding>;

/// The questions, in the order their findings are gathered (the report is sorted afterwards).
pub const QUESTIONS: &[(&str, Question)] = &[
    ("mode", mode::check),
    ("gatekeeper", gatekeeper::check),
    ("workloads", workloads::check),
    ("placement", placement::check),
    ("rbac", rbac::check),
];

/// Reads the cluster once, asks every question, and with `--nodes` runs the node check.
pub async fn run(cfg: &AuditConfig, fp_key: &FingerprintKey) -> Result<Report, ClusterError> {
    let client = cluster::client(cfg.api_timeout).await?;
    let mut report = Report::new("audit", fp_key.origin());
    report
        .target
        .insert("namespace".into(), cfg.namespace.clone());
    let mut snap = snapshot::load(&client, cfg, fp_key).await;
    report.incomplete.append(&mut snap.incomplete);
    for (_, question) in QUESTIONS {
        for f in question(&snap, cfg) {
            report.push(f);
        }
    }
    if cfg.nodes {
        let nodes = snap.nodes.as_deref().unwrap_or_default();
        let namespaces = snap.namespaces.as_deref();
        nodes::fan_out(cfg, &client, nodes, namespaces, &mut report).await;
    }
    report.sort();
    Ok(report)
}
