//! Per-node Jobs: one pinned Job per node (node affinity on `metadata.name`, as the DaemonSet
//! controller does), running psk-guard with the host's `/var/run/antrea` mounted read-only (a
//! unix socket can be connected through a read-only mount), hardened security context. Results
//! are read from the pod's log (JSON on stdout); the Jobs are deleted afterwards.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::Client;
use serde_json::json;
use sha2::Digest;

use super::ClusterError;

/// What one node's Job produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(String),
    /// The container exited non-zero (its log, when there is one).
    Failed(String),
    TimedOut,
    NotCreated(String),
}

/// A Job to run on each node.
#[derive(Debug, Clone)]
pub struct NodeJob {
    pub namespace: String,
    pub image: String,
    /// e.g. "verify"; part of the Job name and a label.
    pub purpose: &'static str,
    /// Label value tying the Jobs to one run.
    pub run_id: String,
    pub args: Vec<String>,
    /// Environment variable set from a Secret key: (env name, secret, key).
    pub env_from_secret: Option<(String, String, String)>,
    pub service_account: String,
    pub timeout: Duration,
}

pub fn job_name(purpose: &str, run_id: &str, node: &str) -> String {
    let h = hex::encode(&sha2::Sha256::digest(node.as_bytes())[..4]);
    let id: String = run_id.chars().take(8).collect();
    format!("psk-guard-{purpose}-{id}-{h}")
}

/// The Job manifest for `node`.
pub fn manifest(j: &NodeJob, node: &str) -> serde_json::Value {
    let mut container = json!({
        "name": "psk-guard",
        "image": j.image,
        "args": j.args,
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "antrea-run", "mountPath": "/var/run/antrea", "readOnly": true}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    });
    if let Some((env, secret, key)) = &j.env_from_secret {
        container["env"] =
            json!([{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]);
    }
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": job_name(j.purpose, &j.run_id, node),
            "namespace": j.namespace,
            "labels": {"app.kubernetes.io/name": "psk-guard", "psk-guard.io/run": j.run_id, "psk-guard.io/purpose": j.purpose, "psk-guard.io/node": node},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": j.timeout.as_secs().max(1),
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "psk-guard", "psk-guard.io/run": j.run_id}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": j.service_account,
                    "automountServiceAccountToken": false,
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [container],
                    "volumes": [{"name": "antrea-run", "hostPath": {"path": "/var/run/antrea", "type": "Directory"}}],
                },
            },
        },
    })
}

/// Runs `job` on every node in `nodes`, all created first (so they start together), then waits
/// for each, reads its log and deletes it. Never fails as a whole: each node gets an outcome.
pub async fn run_on_nodes(
    client: &Client,
    job: &NodeJob,
    nodes: &[String],
) -> Vec<(String, Outcome)> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &job.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &job.namespace);
    let mut created = vec![];
    let mut out = vec![];
    for node in nodes {
        let name = job_name(job.purpose, &job.run_id, node);
        let manifest: Result<Job, _> = serde_json::from_value(manifest(job, node));
        let res = match manifest {
            Ok(m) => jobs
                .create(&PostParams::default(), &m)
                .await
                .map_err(|e| ClusterError::api("create", format!("job {name}"), e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(_) => created.push((node.clone(), name)),
            Err(e) => out.push((node.clone(), Outcome::NotCreated(e))),
        }
    }
    let deadline = Instant::now() + job.timeout;
    for (node, name) in created {
        let outcome = loop {
            match jobs.get_opt(&name).await {
                Ok(Some(j)) => {
                    let st = j.status.unwrap_or_default();
                    if st.succeeded.unwrap_or(0) > 0 {
                        break Outcome::Succeeded(log_of(&pods, &name).await);
                    }
                    if st.failed.unwrap_or(0) > 0 {
                        break Outcome::Failed(log_of(&pods, &name).await);
                    }
                }
                Ok(None) => break Outcome::NotCreated(format!("job {name} disappeared")),
                Err(e) => tracing::debug!(error = %e, "polling a job"),
            }
            if Instant::now() >= deadline {
                break Outcome::TimedOut;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        if let Err(e) = jobs.delete(&name, &dp).await {
            tracing::warn!(error = %e, job = %name, "could not delete a finished job");
        }
        out.push((node, outcome));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn log_of(pods: &Api<Pod>, job: &str) -> String {
    let lp = ListParams::default().labels(&format!("job-name={job}"));
    match pods.list(&lp).await {
        Ok(list) => match list.items.first().and_then(|p| p.metadata.name.clone()) {
            Some(pod) => pods
                .logs(&pod, &LogParams::default())
                .await
                .unwrap_or_default(),
            None => String::new(),
        },
        Err(_) => String::new(),
    }
}
